/* The standard I/O transport (StandardIO). Contract: process.h.
 *
 * Each of the two descriptors is either watched by the reactor (pipes,
 * FIFOs, sockets, terminals) or, when the reactor cannot watch it (a regular
 * file, /dev/null: epoll refuses them), used synchronously: reading one chunk
 * per reactor iteration from `later`, writing at once.
 *
 * `later` is a timer embedded in the transport, armed for the far future
 * from the start so that moving it to 0 never allocates. It delivers a loss
 * decided inside a call of the application (connection_lost never runs
 * inside the call that closed), and reads files.
 *
 * Terminals are reopened through /proc/self/fd so that O_NONBLOCK lands on a
 * file description of our own: the shell that started the program shares
 * the original one, and would find it non-blocking after we exit. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <twine/alloc.h>
#include <twine/buffer.h>
#include <twine/error.h>
#include <twine/log.h>
#include <twine/net.h>

#include "net/fdtransport.h"
#include "process/process-internal.h"

#define NS                              TW__PROCESS_NS

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

#define READS_PER_WAKEUP                4
#define FAR_AWAY                        1e9

enum { M_WATCH, M_FILE };

struct end {
    tw_io io;        /* io.fd: the descriptor used (the reopened one for a terminal) */
    int given;       /* the descriptor the application gave */
    int mode;        /* M_WATCH or M_FILE */
    int saved_flags; /* flags to restore on `given`; -1: untouched */
    bool fifo;       /* out: a pipe, whose reader going away we watch for */
    bool socket;     /* out: a socket, shut down for writing by a half-close */
};

/* The shared closing state's flags (fdtransport.h), and these. */
enum {
    F_PULL_PENDING = TW__FD_OWN << 0,  /* a file took a pull producer's write: ask it for more */
    F_WLOST_PENDING = TW__FD_OWN << 1, /* the output failed inside a write: tell from `later` */
};

struct stdio {
    tw_transport base;
    tw_handle handle;
    tw_timer later;
    struct end in, out;
    tw_wqueue queue;
    struct tw__fd_state fd;
    struct tw__flow flow;
};

static struct stdio *S(const tw_transport *t)
{
    return (struct stdio *)t;
}

/* ---- Interest */

static bool want_read(const struct stdio *s)
{
    return !(s->fd.flags & (TW__FD_PAUSED | TW__FD_READ_CLOSED | TW__FD_CLOSING));
}

/* Writable interest while something is queued, or while a half-close
 * waits (the shutdown then comes from the reactor). */
static bool want_write(const struct stdio *s)
{
    if (s->fd.flags & (TW__FD_GOING | TW__FD_WRITE_CLOSED))
        return false;
    return !tw_wqueue_is_empty(&s->queue) || (s->fd.flags & TW__FD_WRITE_SHUTTING);
}

static int update_interest(struct stdio *s)
{
    tw_reactor *r = s->base.reactor;
    int rc = 0;
    if (s->in.mode == M_WATCH)
        rc = want_read(s) ? tw_reactor_add_reader(r, &s->in.io)
                          : tw_reactor_remove_reader(r, &s->in.io);
    if (rc == 0 && s->out.mode == M_WATCH) {
        bool out_open = !(s->fd.flags & (TW__FD_GOING | TW__FD_WRITE_CLOSED));
        rc = (out_open && s->out.fifo) ? tw_reactor_add_reader(r, &s->out.io)
                                       : tw_reactor_remove_reader(r, &s->out.io);
        if (rc == 0)
            rc = want_write(s) ? tw_reactor_add_writer(r, &s->out.io)
                               : tw_reactor_remove_writer(r, &s->out.io);
    }
    /* A file is read from `later`, one chunk per iteration; and a half-close
     * of a file, to which nothing is ever queued, is done there too. */
    if (rc == 0 &&
        ((s->in.mode == M_FILE && want_read(s)) || (s->out.mode == M_FILE && want_write(s))))
        tw_timer_start(&s->later, 0);
    return rc;
}

/* ---- Ending */

static void release_end(struct end *e)
{
    if (e->io.fd != e->given && e->io.fd >= 0)
        close(e->io.fd); /* a terminal we reopened */
    else if (e->saved_flags >= 0)
        fcntl(e->given, F_SETFL, e->saved_flags);
    e->io.fd = -1;
    e->saved_flags = -1;
}

static void finish(struct stdio *s, int code)
{
    if (!tw__fd_mark_lost(&s->fd))
        return;
    tw_transport_ref(&s->base);
    tw_reactor *r = s->base.reactor;
    if (s->in.mode == M_WATCH)
        tw_reactor_remove_reader(r, &s->in.io);
    if (s->out.mode == M_WATCH) {
        tw_reactor_remove_reader(r, &s->out.io);
        tw_reactor_remove_writer(r, &s->out.io);
    }
    tw_reactor_remove_handle(r, &s->handle);
    tw_timer_stop(&s->later);
    release_end(&s->in);
    release_end(&s->out);
    tw_wqueue_clear(&s->queue);
    tw_failure *reason = tw_failure_new(code, NULL, "standard I/O: %s", tw_strerror(code));
    tw__fd_tell_lost(&s->base, &s->flow, reason, NULL, NULL);
    tw_transport_unref(&s->base);
}

/* From inside a call of the application: delivered by `later`. */
static void schedule_loss(struct stdio *s, int code)
{
    if (!tw__fd_decide_loss(&s->fd, code))
        return;
    if (code != TW_ECONNDONE)
        tw_wqueue_clear(&s->queue);
    update_interest(s); /* removals only */
    if (tw_timer_start(&s->later, 0) < 0)
        tw_log_error(NS, "standard I/O: cannot schedule the delivery of its loss");
}

/* ---- Writing */

/* Synchronous write of everything (a file). Returns 0 or -errno. */
static int write_all(int fd, const struct iovec *iov, int cnt)
{
    struct iovec local[IOV_MAX];
    if (cnt > IOV_MAX)
        cnt = IOV_MAX;
    memcpy(local, iov, (size_t)cnt * sizeof *iov);
    struct iovec *v = local;
    while (cnt > 0) {
        ssize_t n = tw__pipe_writev(fd, v, cnt);
        if (n < 0)
            return (int)n;
        if (n == 0)
            return -EAGAIN; /* a descriptor that was not a file after all */
        size_t left = (size_t)n;
        while (cnt > 0 && left >= v->iov_len) {
            left -= v->iov_len;
            v++;
            cnt--;
        }
        if (cnt > 0) {
            v->iov_base = (char *)v->iov_base + left;
            v->iov_len -= left;
        }
    }
    return 0;
}

/* Shuts the write side down so that whoever reads the output sees end of
 * file, while the descriptor number stays taken: a socket is shut down for
 * writing (inetd's programs go on reading the same socket); a pipe or FIFO
 * is pointed at /dev/null (the pipe closes once nobody else holds it); a
 * terminal we reopened is closed (the program's own descriptor was never
 * ours to change); a file or any other device, which has no reader to
 * tell, is simply no longer written. */
static int shut_output(struct stdio *s)
{
    int rc = 0;
    if (s->out.mode == M_WATCH) {
        tw_reactor_remove_reader(s->base.reactor, &s->out.io);
        tw_reactor_remove_writer(s->base.reactor, &s->out.io);
    }
    bool reopened = s->out.io.fd >= 0 && s->out.io.fd != s->out.given;
    if (s->out.socket && !reopened) {
        if (shutdown(s->out.given, SHUT_WR) < 0 && errno != ENOTCONN)
            rc = -errno;
        release_end(&s->out);
    } else if (s->out.fifo && !reopened) {
        int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
        if (null < 0)
            return -errno;
        release_end(&s->out);
        if (dup2(null, s->out.given) < 0)
            rc = -errno;
        close(null);
    } else {
        release_end(&s->out);
    }
    s->out.mode = M_FILE; /* nothing left to watch */
    s->out.io.fd = -1;
    s->out.fifo = false;
    return rc;
}

/* write_connection_lost for an output that failed, from the reactor; the
 * end when the input is done too. */
static void tell_output_lost(struct stdio *s)
{
    s->fd.flags &= ~(uint32_t)F_WLOST_PENDING;
    tw__flow_stop(&s->flow);
    if (s->fd.flags & TW__FD_GOING)
        return;
    if (tw__fd_side_closed(&s->base, &s->fd, false))
        finish(s, TW_ECONNDONE);
}

/* The output failed: its reader went away, or a write failed. A protocol
 * that can be told of a lost write side (write_connection_lost) keeps
 * reading, as Twisted's StandardIO calls writeConnectionLost; any other,
 * or one already closing, loses the connection with the error. `inside`:
 * called from inside a call of the application, so the telling waits for
 * `later`. */
static void output_lost(struct stdio *s, int code, bool inside)
{
    if (s->fd.flags & (TW__FD_GOING | TW__FD_WRITE_CLOSED))
        return;
    tw_protocol *p = s->base.protocol;
    if ((s->fd.flags & TW__FD_DISCONNECTING) || !p->ops || !p->ops->write_connection_lost) {
        if (inside)
            schedule_loss(s, code);
        else
            finish(s, code);
        return;
    }
    tw_log_debug(NS, "standard I/O: the output is gone (%s); reading goes on", tw_strerror(code));
    s->fd.flags = (s->fd.flags | TW__FD_WRITE_CLOSED) & ~(uint32_t)TW__FD_WRITE_SHUTTING;
    tw_wqueue_clear(&s->queue);
    update_interest(s); /* removals only */
    if (inside) {
        s->fd.flags |= F_WLOST_PENDING;
        tw_timer_start(&s->later, 0); /* armed: moves without allocating */
        return;
    }
    tell_output_lost(s);
}

static void after_drain(struct stdio *s)
{
    if (s->fd.flags & TW__FD_GOING)
        return;
    bool empty = tw_wqueue_is_empty(&s->queue);
    if (empty && (s->fd.flags & TW__FD_DISCONNECTING)) {
        finish(s, TW_ECONNDONE);
        return;
    }
    if (empty && (s->fd.flags & TW__FD_WRITE_SHUTTING)) {
        s->fd.flags = (s->fd.flags | TW__FD_WRITE_CLOSED) & ~(uint32_t)TW__FD_WRITE_SHUTTING;
        int rc = shut_output(s);
        if (rc < 0) {
            finish(s, rc);
            return;
        }
        if (tw__fd_side_closed(&s->base, &s->fd, false))
            finish(s, TW_ECONNDONE);
        return;
    }
    if (!(s->fd.flags & TW__FD_NO_WRITE) && tw__flow_drained(&s->flow, tw_wqueue_size(&s->queue)) &&
        (s->fd.flags & TW__FD_GOING))
        return;
    int rc = update_interest(s);
    if (rc < 0)
        finish(s, rc);
}

static int queued(struct stdio *s)
{
    int rc = update_interest(s);
    if (rc < 0) {
        schedule_loss(s, rc);
        return 0;
    }
    tw__flow_queued(&s->flow, tw_wqueue_size(&s->queue));
    return 0;
}

static int stdio_write_iov(tw_transport *t, const struct iovec *iov, int iovcnt)
{
    struct stdio *s = S(t);
    if (s->fd.flags & TW__FD_NO_WRITE)
        return TW_ENOTCONN;
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++)
        total += iov[i].iov_len;
    if (total == 0)
        return 0;
    if (s->out.mode == M_FILE) {
        for (int i = 0; i < iovcnt; i += IOV_MAX) {
            int rc = write_all(s->out.io.fd, iov + i, iovcnt - i);
            if (rc < 0) {
                output_lost(s, rc, true);
                return 0;
            }
        }
        /* Nothing is ever queued for a file, so no drain will ask a pull
         * producer for more: `later` does, once this call has returned. */
        if (tw__flow_pull(&s->flow)) {
            s->fd.flags |= F_PULL_PENDING;
            tw_timer_start(&s->later, 0); /* armed: moves without allocating */
        }
        return 0;
    }
    size_t done = 0;
    if (tw_wqueue_is_empty(&s->queue) && !tw__flow_pull(&s->flow) && iovcnt <= IOV_MAX) {
        ssize_t n = tw__pipe_writev(s->out.io.fd, iov, iovcnt);
        if (n < 0) {
            output_lost(s, (int)n, true);
            return 0;
        }
        done = (size_t)n;
        if (done == total)
            return 0;
    }
    size_t put = 0;
    int rc = tw_wqueue_append_iov(&s->queue, iov, iovcnt, done, &put);
    if (rc < 0) {
        if (done + put > 0)
            schedule_loss(s, rc); /* a hole in the byte stream */
        return rc;
    }
    return queued(s);
}

static int stdio_write(tw_transport *t, const void *data, size_t len)
{
    struct iovec iov = {(void *)data, len};
    return stdio_write_iov(t, &iov, 1);
}

static int stdio_write_zerocopy(tw_transport *t, const void *data, size_t len,
                                tw_release_fn release, void *arg)
{
    struct stdio *s = S(t);
    if (s->fd.flags & TW__FD_NO_WRITE)
        return TW_ENOTCONN;
    if (s->out.mode == M_FILE || len == 0 || (tw_wqueue_is_empty(&s->queue) && !s->flow.producer)) {
        /* Written now (or as far as the kernel takes it, the rest copied). */
        int rc = stdio_write(t, data, len);
        if (rc == 0 && release)
            release(arg);
        return rc;
    }
    int rc = tw_wqueue_append_zerocopy(&s->queue, data, len, release, arg);
    return rc < 0 ? rc : queued(s);
}

/* ---- Reading */

static void on_eof(struct stdio *s)
{
    s->fd.flags |= TW__FD_READ_CLOSED;
    tw_protocol *p = s->base.protocol;
    if (!(p->ops && p->ops->read_connection_lost)) {
        /* Not half-closeable: what is queued still goes out (a pipeline
         * reading `prog < file` wants every answer), then the end. */
        s->fd.flags |= TW__FD_DISCONNECTING;
        after_drain(s);
        if (!(s->fd.flags & TW__FD_GOING))
            update_interest(s);
        return;
    }
    update_interest(s);
    if (tw__fd_side_closed(&s->base, &s->fd, true))
        finish(s, TW_ECONNDONE);
}

/* Reads up to `rounds` chunks. */
static void do_read(struct stdio *s, int rounds)
{
    char *buf = tw__process_read_buffer(); /* made at tw_stdio_new */
    for (int i = 0; i < rounds; i++) {
        ssize_t n = tw__pipe_read(s->in.io.fd, buf, TW_NET_READ_SIZE);
        if (n == -EAGAIN)
            return;
        if (n == 0 || n == -EIO) { /* EIO: the terminal hung up */
            on_eof(s);
            return;
        }
        if (n < 0) {
            finish(s, (int)n);
            return;
        }
        tw_protocol_data_received(s->base.protocol, buf, (size_t)n);
        if (!want_read(s) || n < TW_NET_READ_SIZE)
            return;
    }
}

static void on_in(tw_io *io, unsigned events)
{
    struct stdio *s = io->data;
    (void)events;
    tw_transport_ref(&s->base);
    if (want_read(s))
        do_read(s, READS_PER_WAKEUP);
    tw_transport_unref(&s->base);
}

static void on_out(tw_io *io, unsigned events)
{
    struct stdio *s = io->data;
    tw_transport_ref(&s->base);
    if ((events & TW_IO_WRITE) && !(s->fd.flags & (TW__FD_GOING | TW__FD_WRITE_CLOSED))) {
        int rc = tw__pipe_flush(&s->out.io, &s->queue);
        if (rc < 0)
            output_lost(s, rc, false);
        else
            after_drain(s);
    }
    if ((events & TW_IO_READ) && s->out.fifo)
        output_lost(s, -EPIPE, false); /* the pipe's reader has gone */
    tw_transport_unref(&s->base);
}

static void on_later(tw_timer *t)
{
    struct stdio *s = container_of(t, struct stdio, later);
    tw_transport_ref(&s->base);
    if (s->fd.flags & TW__FD_LOST_PENDING) {
        finish(s, s->fd.reason);
    } else if (s->out.mode == M_FILE && (s->fd.flags & TW__FD_WRITE_SHUTTING)) {
        after_drain(s); /* nothing is ever queued for a file */
    }
    if ((s->fd.flags & F_WLOST_PENDING) && !(s->fd.flags & TW__FD_LOST))
        tell_output_lost(s);
    if (s->fd.flags & F_PULL_PENDING) {
        s->fd.flags &= ~(uint32_t)F_PULL_PENDING;
        if (tw__flow_pull(&s->flow) && !(s->fd.flags & TW__FD_NO_WRITE))
            s->flow.producer->ops->resume_producing(s->flow.producer);
    }
    if (!(s->fd.flags & TW__FD_GOING) && s->in.mode == M_FILE && want_read(s)) {
        do_read(s, 1);
        if (s->in.mode == M_FILE && want_read(s))
            tw_timer_start(&s->later, 0);
    }
    if (!(s->fd.flags & TW__FD_LOST) && !tw_timer_active(&s->later))
        tw_timer_start(&s->later, FAR_AWAY);
    tw_transport_unref(&s->base);
}

static void on_handle_close(tw_handle *h)
{
    struct stdio *s = container_of(h, struct stdio, handle);
    finish(s, tw__fd_shutdown_code(&s->fd));
}

/* ---- The transport: closing and flow control are fdtransport.c's */

static int stdio_get_address(const tw_transport *t, tw_address *out)
{
    if (S(t)->fd.flags & TW__FD_LOST)
        return TW_ENOTCONN;
    tw_address_pipe(out);
    return 0;
}

static void stdio_destroy(tw_transport *t)
{
    tw_free(S(t));
}

/* What fdtransport.c's operations need. */

static int kind_update_interest(tw_transport *t)
{
    return update_interest(S(t));
}

static void kind_schedule_loss(tw_transport *t, int code)
{
    schedule_loss(S(t), code);
}

static size_t kind_out_size(const tw_transport *t)
{
    return tw_wqueue_size(&S(t)->queue);
}

static struct tw__flow *kind_flow(tw_transport *t, bool create)
{
    (void)create; /* always there */
    return &S(t)->flow;
}

static const struct tw__fd_kind stdio_kind = {
    .ops =
        {
            .name = "stdio",
            .write = stdio_write,
            .write_iov = stdio_write_iov,
            .write_zerocopy = stdio_write_zerocopy,
            .lose_connection = tw__fd_lose_connection,
            .abort_connection = tw__fd_abort_connection,
            .lose_write_connection = tw__fd_lose_write_connection,
            .get_peer = stdio_get_address,
            .get_host = stdio_get_address,
            .pause_producing = tw__fd_pause_producing,
            .resume_producing = tw__fd_resume_producing,
            .register_producer = tw__fd_register_producer,
            .unregister_producer = tw__fd_unregister_producer,
            .write_buffer_size = tw__fd_write_buffer_size,
            .set_write_buffer_limits = tw__fd_set_write_buffer_limits,
            .set_option = NULL,
            .send_fds = NULL,
            .destroy = stdio_destroy,
        },
    .state_at = offsetof(struct stdio, fd),
    .update_interest = kind_update_interest,
    .schedule_loss = kind_schedule_loss,
    .out_size = kind_out_size,
    .flow = kind_flow,
};

/* ---- Opening */

/* Decides how fd is used and makes it non-blocking where it is watched.
 * `writing` says which way it goes. */
static int prepare_end(struct end *e, int fd, bool writing, tw_io_fn fn, void *data)
{
    e->given = fd;
    e->saved_flags = -1;
    tw_io_init(&e->io, fd, fn, data);
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return TW_EINVAL;
    int acc = fl & O_ACCMODE;
    if (writing ? acc == O_RDONLY : acc == O_WRONLY)
        return TW_EINVAL;
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    if (isatty(fd)) {
        char path[64];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        int own = open(path, acc | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
        if (own >= 0) {
            e->io.fd = own;
            e->mode = M_WATCH;
            return 0;
        }
    } else if (!S_ISFIFO(st.st_mode) && !S_ISSOCK(st.st_mode)) {
        e->mode = M_FILE; /* a file, /dev/null...: the reactor cannot watch it */
        return 0;
    }
    e->mode = M_WATCH;
    e->fifo = writing && S_ISFIFO(st.st_mode);
    e->socket = writing && S_ISSOCK(st.st_mode);
    if (!(fl & O_NONBLOCK)) {
        if (fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
            return -errno;
        e->saved_flags = fl;
    }
    return 0;
}

int tw_stdio_new(tw_reactor *r, tw_protocol *p, const tw_stdio_options *opts, tw_transport **out)
{
    if (out)
        *out = NULL;
    if (!r || !p) {
        tw_protocol_release(p);
        return TW_EINVAL;
    }
    int in_fd = opts ? opts->in_fd : 0;
    int out_fd = opts && opts->out_fd ? opts->out_fd : 1;
    if (in_fd < 0 || out_fd < 0 || in_fd == out_fd) {
        tw_protocol_release(p);
        return TW_EINVAL;
    }
    struct stdio *s = NULL;
    int rc = tw__process_read_buffer() ? 0 : TW_ENOMEM;
    if (rc == 0 && !(s = tw_calloc(1, sizeof *s)))
        rc = TW_ENOMEM;
    if (rc < 0) {
        tw_protocol_release(p);
        return rc;
    }
    tw_transport_init(&s->base, &stdio_kind.ops, r);
    tw_wqueue_init(&s->queue);
    tw__flow_init(&s->flow);
    tw_timer_init(&s->later, tw_reactor_clock(r), on_later);
    s->in.io.fd = s->out.io.fd = -1;
    s->in.saved_flags = s->out.saved_flags = -1;
    s->in.given = in_fd;
    s->out.given = out_fd;
    rc = prepare_end(&s->in, in_fd, false, on_in, s);
    if (rc == 0)
        rc = prepare_end(&s->out, out_fd, true, on_out, s);
    if (rc == 0)
        rc = tw_timer_start(&s->later, FAR_AWAY);
    if (rc == 0)
        rc = update_interest(s);
    if (rc == TW_EEXIST)
        rc = TW_EBUSY;
    if (rc < 0) {
        tw_reactor_remove_reader(r, &s->in.io);
        tw_reactor_remove_reader(r, &s->out.io);
        tw_reactor_remove_writer(r, &s->out.io);
        tw_timer_stop(&s->later);
        release_end(&s->in);
        release_end(&s->out);
        tw_free(s);
        tw_protocol_release(p);
        return rc;
    }
    tw__fd_start(&s->base, &s->handle, on_handle_close, p, out);
    return 0;
}
