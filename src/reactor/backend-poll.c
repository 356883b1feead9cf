/* The poll(2) backend.
 *
 * The pollfd array is kept in step with the watchers as they change (never
 * rebuilt per iteration); index[fd] is where fd's entry is. While a batch is
 * dispatched, an entry that leaves is only blanked (fd = -1, which poll
 * ignores) so that positions do not move under the loop; the blanks are
 * compacted after the batch. Entries added meanwhile go to the end and wait
 * for the next poll. Watchers are looked up by fd at dispatch time. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>

#include <twine/alloc.h>
#include <twine/error.h>

#include "reactor/reactor-internal.h"

struct poll_state {
    struct pollfd *pfds;
    size_t n, cap;
    int *index; /* by fd: position in pfds, or -1 */
    size_t index_cap;
    size_t blanks;
    bool dispatching;
};

static int pl_init(tw_reactor *r)
{
    struct poll_state *s = tw_calloc(1, sizeof *s);
    if (!s)
        return TW_ENOMEM;
    r->backend_state = s;
    return 0;
}

static void pl_destroy(tw_reactor *r)
{
    struct poll_state *s = r->backend_state;
    if (!s)
        return;
    tw_free(s->pfds);
    tw_free(s->index);
    tw_free(s);
    r->backend_state = NULL;
}

static short poll_mask(unsigned events)
{
    return (short)(((events & TW_IO_READ) ? POLLIN : 0) | ((events & TW_IO_WRITE) ? POLLOUT : 0));
}

static int reserve(struct poll_state *s, int fd)
{
    if ((size_t)fd >= s->index_cap) {
        size_t cap = s->index_cap ? s->index_cap : 64;
        while (cap <= (size_t)fd)
            cap *= 2;
        int *index = tw_realloc(s->index, cap * sizeof *index);
        if (!index)
            return TW_ENOMEM;
        for (size_t i = s->index_cap; i < cap; i++)
            index[i] = -1;
        s->index = index;
        s->index_cap = cap;
    }
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        struct pollfd *pfds = tw_realloc(s->pfds, cap * sizeof *pfds);
        if (!pfds)
            return TW_ENOMEM;
        s->pfds = pfds;
        s->cap = cap;
    }
    return 0;
}

/* Moves the last entry into slot i (which is being vacated). */
static void fill_from_last(struct poll_state *s, size_t i)
{
    s->n--;
    if (i != s->n) {
        s->pfds[i] = s->pfds[s->n];
        if (s->pfds[i].fd >= 0)
            s->index[s->pfds[i].fd] = (int)i;
    }
}

static int pl_update(tw_reactor *r, tw_io *io, unsigned events)
{
    struct poll_state *s = r->backend_state;
    int fd = io->fd;
    if (events == io->backend)
        return 0;
    if (io->backend == 0) {
        /* poll would only report POLLNVAL later: refuse a bad fd now. */
        if (fcntl(fd, F_GETFD) < 0)
            return -errno;
        int rc = reserve(s, fd);
        if (rc < 0)
            return rc;
        s->pfds[s->n] = (struct pollfd){.fd = fd, .events = poll_mask(events)};
        s->index[fd] = (int)s->n++;
    } else {
        size_t i = (size_t)s->index[fd];
        if (events == 0) {
            s->index[fd] = -1;
            if (s->dispatching) {
                s->pfds[i].fd = -1;
                s->pfds[i].revents = 0;
                s->blanks++;
            } else {
                fill_from_last(s, i);
            }
        } else {
            s->pfds[i].events = poll_mask(events);
        }
    }
    io->backend = events;
    return 0;
}

static void compact(struct poll_state *s)
{
    for (size_t i = 0; s->blanks > 0 && i < s->n;) {
        if (s->pfds[i].fd < 0) {
            fill_from_last(s, i);
            s->blanks--;
        } else {
            i++;
        }
    }
}

static int pl_poll(tw_reactor *r, int64_t timeout_ns)
{
    struct poll_state *s = r->backend_state;
    int ms;
    if (timeout_ns < 0)
        ms = -1;
    else if (timeout_ns >= (int64_t)INT_MAX * 1000000)
        ms = INT_MAX;
    else
        ms = (int)((timeout_ns + 999999) / 1000000);

    int n = poll(s->pfds, (nfds_t)s->n, ms);
    int err = n < 0 ? errno : 0;
    tw__reactor_woke(r);
    if (n < 0)
        return err == EINTR ? 0 : -err;
    if (n == 0)
        return 0;

    size_t polled = s->n;
    int dispatched = 0;
    s->dispatching = true;
    for (size_t i = 0; i < polled && n > 0; i++) {
        struct pollfd p = s->pfds[i];
        if (!p.revents || p.fd < 0)
            continue;
        n--;
        s->pfds[i].revents = 0;
        tw_io *io = tw__reactor_io_for_fd(r, p.fd);
        if (!io)
            continue;
        unsigned ready = 0;
        if (p.revents & (POLLIN | POLLERR | POLLHUP | POLLNVAL))
            ready |= TW_IO_READ;
        if (p.revents & (POLLOUT | POLLERR | POLLHUP | POLLNVAL))
            ready |= TW_IO_WRITE;
        dispatched += tw__reactor_dispatch_io(r, io, ready);
    }
    s->dispatching = false;
    compact(s);
    return dispatched;
}

static void pl_forget(tw_reactor *r, tw_io *io)
{
    /* Nothing to do: the entry was blanked when the watcher left, and an
     * entry for a new watcher on the same fd is added past the batch. */
    (void)r;
    (void)io;
}

const struct tw__backend tw__backend_poll = {
    .name = "poll",
    .init = pl_init,
    .destroy = pl_destroy,
    .update = pl_update,
    .poll = pl_poll,
    .forget = pl_forget,
};
