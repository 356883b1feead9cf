/* The epoll backend (the default without io_uring, and its fall back).
 *
 * Each registration carries the watcher's fd and the low 32 bits of its
 * sequence number (given anew each time a watcher enters the reactor). An
 * event is dispatched only if the watcher registered for that fd now carries
 * the same sequence number: a watcher removed (and perhaps freed, or replaced
 * by a new one on the same fd) by an earlier callback of the same batch is
 * never touched, at no cost per removal. */
#include <errno.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <twine/alloc.h>
#include <twine/error.h>

#include "reactor/reactor-internal.h"

#define BATCH 1024

struct epoll_state {
    int epfd;
    struct epoll_event events[BATCH];
};

static int ep_init(tw_reactor *r)
{
    struct epoll_state *s = tw_malloc(sizeof *s);
    if (!s)
        return TW_ENOMEM;
    s->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (s->epfd < 0) {
        int rc = -errno;
        tw_free(s);
        return rc;
    }
    r->backend_state = s;
    return 0;
}

static void ep_destroy(tw_reactor *r)
{
    struct epoll_state *s = r->backend_state;
    if (!s)
        return;
    close(s->epfd);
    tw_free(s);
    r->backend_state = NULL;
}

static uint64_t tag(const tw_io *io)
{
    return (uint64_t)(uint32_t)io->seq << 32 | (uint32_t)io->fd;
}

static int ep_update(tw_reactor *r, tw_io *io, unsigned events)
{
    struct epoll_state *s = r->backend_state;
    if (events == io->backend)
        return 0;
    struct epoll_event ev = {
        .events = ((events & TW_IO_READ) ? EPOLLIN : 0u) | ((events & TW_IO_WRITE) ? EPOLLOUT : 0u),
        .data.u64 = tag(io),
    };
    int rc;
    if (events == 0) {
        /* A closed fd has left the epoll set by itself (ENOENT/EBADF). */
        epoll_ctl(s->epfd, EPOLL_CTL_DEL, io->fd, &ev);
        io->backend = 0;
        return 0;
    }
    if (io->backend == 0) {
        rc = epoll_ctl(s->epfd, EPOLL_CTL_ADD, io->fd, &ev);
        /* A registration the kernel kept for an earlier watcher on this fd. */
        if (rc < 0 && errno == EEXIST)
            rc = epoll_ctl(s->epfd, EPOLL_CTL_MOD, io->fd, &ev);
    } else {
        rc = epoll_ctl(s->epfd, EPOLL_CTL_MOD, io->fd, &ev);
        /* The fd was closed and its number reused: register it afresh. */
        if (rc < 0 && errno == ENOENT)
            rc = epoll_ctl(s->epfd, EPOLL_CTL_ADD, io->fd, &ev);
    }
    if (rc < 0)
        return -errno;
    io->backend = events;
    return 0;
}

static int ep_poll(tw_reactor *r, int64_t timeout_ns)
{
    struct epoll_state *s = r->backend_state;
    int ms;
    if (timeout_ns < 0)
        ms = -1;
    else if (timeout_ns >= (int64_t)INT32_MAX * 1000000)
        ms = INT32_MAX;
    else /* round up: waking before a timer is due would only spin */
        ms = (int)((timeout_ns + 999999) / 1000000);

    int n = epoll_wait(s->epfd, s->events, BATCH, ms);
    int err = n < 0 ? errno : 0;
    tw__reactor_woke(r);
    if (n < 0)
        return err == EINTR ? 0 : -err;
    int dispatched = 0;
    for (int i = 0; i < n; i++) {
        uint64_t data = s->events[i].data.u64;
        uint32_t got = s->events[i].events;
        tw_io *io = tw__reactor_io_for_fd(r, (int)(uint32_t)data);
        if (!io || (uint32_t)io->seq != (uint32_t)(data >> 32))
            continue;
        unsigned ready = 0;
        if (got & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP))
            ready |= TW_IO_READ;
        if (got & (EPOLLOUT | EPOLLERR | EPOLLHUP))
            ready |= TW_IO_WRITE;
        dispatched += tw__reactor_dispatch_io(r, io, ready);
    }
    return dispatched;
}

static void ep_forget(tw_reactor *r, tw_io *io)
{
    /* Nothing to do: the sequence tag above already keeps any event of the
     * batch from reaching a watcher that has left. */
    (void)r;
    (void)io;
}

const struct tw__backend tw__backend_epoll = {
    .name = "epoll",
    .init = ep_init,
    .destroy = ep_destroy,
    .update = ep_update,
    .poll = ep_poll,
    .forget = ep_forget,
};
