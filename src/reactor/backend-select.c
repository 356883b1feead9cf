/* The select(2) backend: fds below FD_SETSIZE only (TW_EINVAL above).
 *
 * The interest sets are kept as watchers change and copied per poll. The
 * result sets live in the backend state so that forget() can clear the bits
 * of a watcher that leaves while its batch is being dispatched. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/select.h>

#include <twine/alloc.h>
#include <twine/error.h>

#include "reactor/reactor-internal.h"

struct select_state {
    fd_set want_read, want_write; /* interest */
    fd_set got_read, got_write;   /* the batch being dispatched */
    int maxfd;                    /* highest fd with interest, or -1 */
};

static int sl_init(tw_reactor *r)
{
    struct select_state *s = tw_malloc(sizeof *s);
    if (!s)
        return TW_ENOMEM;
    FD_ZERO(&s->want_read);
    FD_ZERO(&s->want_write);
    FD_ZERO(&s->got_read);
    FD_ZERO(&s->got_write);
    s->maxfd = -1;
    r->backend_state = s;
    return 0;
}

static void sl_destroy(tw_reactor *r)
{
    tw_free(r->backend_state);
    r->backend_state = NULL;
}

static int sl_update(tw_reactor *r, tw_io *io, unsigned events)
{
    struct select_state *s = r->backend_state;
    int fd = io->fd;
    if (fd >= FD_SETSIZE)
        return TW_EINVAL;
    if (events == io->backend)
        return 0;
    if (io->backend == 0 && fcntl(fd, F_GETFD) < 0)
        return -errno; /* select would fail as a whole later */

    if (events & TW_IO_READ)
        FD_SET(fd, &s->want_read);
    else
        FD_CLR(fd, &s->want_read);
    if (events & TW_IO_WRITE)
        FD_SET(fd, &s->want_write);
    else
        FD_CLR(fd, &s->want_write);

    if (events && fd > s->maxfd)
        s->maxfd = fd;
    if (!events && fd == s->maxfd) {
        while (s->maxfd >= 0 && !FD_ISSET(s->maxfd, &s->want_read) &&
               !FD_ISSET(s->maxfd, &s->want_write))
            s->maxfd--;
    }
    io->backend = events;
    return 0;
}

/* select failed with EBADF: some watched fd was closed without being
 * removed. Report each such fd as ready for what it asks, so its owner's
 * read or write sees the error (as poll's POLLNVAL). */
static void mark_bad_fds(struct select_state *s)
{
    FD_ZERO(&s->got_read);
    FD_ZERO(&s->got_write);
    for (int fd = 0; fd <= s->maxfd; fd++) {
        bool r = FD_ISSET(fd, &s->want_read), w = FD_ISSET(fd, &s->want_write);
        if ((r || w) && fcntl(fd, F_GETFD) < 0 && errno == EBADF) {
            if (r)
                FD_SET(fd, &s->got_read);
            if (w)
                FD_SET(fd, &s->got_write);
        }
    }
}

static int sl_poll(tw_reactor *r, int64_t timeout_ns)
{
    struct select_state *s = r->backend_state;
    struct timeval tv, *tvp = NULL;
    if (timeout_ns >= 0) {
        int64_t us = (timeout_ns + 999) / 1000; /* round up */
        tv.tv_sec = (time_t)(us / 1000000);
        tv.tv_usec = (suseconds_t)(us % 1000000);
        tvp = &tv;
    }
    int maxfd = s->maxfd;
    s->got_read = s->want_read;
    s->got_write = s->want_write;
    int n = select(maxfd + 1, &s->got_read, &s->got_write, NULL, tvp);
    int err = n < 0 ? errno : 0;
    tw__reactor_woke(r);
    if (n < 0) {
        if (err == EINTR)
            return 0;
        if (err != EBADF)
            return -err;
        mark_bad_fds(s);
    } else if (n == 0) {
        return 0;
    }

    int dispatched = 0;
    for (int fd = 0; fd <= maxfd; fd++) {
        unsigned ready = 0;
        if (FD_ISSET(fd, &s->got_read))
            ready |= TW_IO_READ;
        if (FD_ISSET(fd, &s->got_write))
            ready |= TW_IO_WRITE;
        if (!ready)
            continue;
        tw_io *io = tw__reactor_io_for_fd(r, fd);
        if (!io)
            continue;
        dispatched += tw__reactor_dispatch_io(r, io, ready);
    }
    return dispatched;
}

static void sl_forget(tw_reactor *r, tw_io *io)
{
    struct select_state *s = r->backend_state;
    if (io->fd < FD_SETSIZE) {
        FD_CLR(io->fd, &s->got_read);
        FD_CLR(io->fd, &s->got_write);
    }
}

const struct tw__backend tw__backend_select = {
    .name = "select",
    .init = sl_init,
    .destroy = sl_destroy,
    .update = sl_update,
    .poll = sl_poll,
    .forget = sl_forget,
};
