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

#include "process/process-internal.h"

#define NS                              TW__PROCESS_NS

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

#define READS_PER_WAKEUP                4
#define WRITES_PER_WAKEUP               4
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

enum {
    F_PAUSED = 1u << 0,
    F_READ_CLOSED = 1u << 1,
    F_WRITE_SHUTTING = 1u << 2, /* lose_write_connection: flush, then shut */
    F_WRITE_CLOSED = 1u << 3,
    F_DISCONNECTING = 1u << 4, /* lose_connection (or end of file): flush, then end */
    F_LOST_PENDING = 1u << 5,
    F_LOST = 1u << 6,
    F_PULL_PENDING = 1u << 7,  /* a file took a pull producer's write: ask it for more */
    F_WLOST_PENDING = 1u << 8, /* the output failed inside a write: tell from `later` */
};

#define F_NO_WRITE (F_WRITE_SHUTTING | F_WRITE_CLOSED | F_DISCONNECTING | F_LOST_PENDING | F_LOST)
#define F_CLOSING  (F_DISCONNECTING | F_LOST_PENDING | F_LOST)

struct stdio {
    tw_transport base;
    tw_handle handle;
    tw_timer later;
    struct end in, out;
    tw_wqueue queue;
    uint32_t flags;
    int reason;
    tw_producer *producer;
    bool streaming, producer_paused;
    size_t high, low;
};

static struct stdio *S(const tw_transport *t)
{
    return (struct stdio *)t;
}

/* ---- Interest */

static bool want_read(const struct stdio *s)
{
    return !(s->flags & (F_PAUSED | F_READ_CLOSED | F_CLOSING));
}

/* Writable interest while something is queued, or while a half-close
 * waits (the shutdown then comes from the reactor). */
static bool want_write(const struct stdio *s)
{
    if (s->flags & (F_LOST | F_LOST_PENDING | F_WRITE_CLOSED))
        return false;
    return !tw_wqueue_is_empty(&s->queue) || (s->flags & F_WRITE_SHUTTING);
}

static int update_interest(struct stdio *s)
{
    tw_reactor *r = s->base.reactor;
    int rc = 0;
    if (s->in.mode == M_WATCH)
        rc = want_read(s) ? tw_reactor_add_reader(r, &s->in.io)
                          : tw_reactor_remove_reader(r, &s->in.io);
    if (rc == 0 && s->out.mode == M_WATCH) {
        bool out_open = !(s->flags & (F_LOST | F_LOST_PENDING | F_WRITE_CLOSED));
        rc = (out_open && s->out.fifo) ? tw_reactor_add_reader(r, &s->out.io)
                                       : tw_reactor_remove_reader(r, &s->out.io);
        if (rc == 0)
            rc = want_write(s) ? tw_reactor_add_writer(r, &s->out.io)
                               : tw_reactor_remove_writer(r, &s->out.io);
    }
    /* A file is read from `later`, one chunk per iteration. */
    if (rc == 0 && s->in.mode == M_FILE && want_read(s))
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
    if (s->flags & F_LOST)
        return;
    tw_transport_ref(&s->base);
    s->flags = (s->flags | F_LOST) & ~(uint32_t)F_LOST_PENDING;
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
    tw_producer *prod = s->producer;
    s->producer = NULL;
    if (prod && prod->ops->stop_producing)
        prod->ops->stop_producing(prod);
    tw_failure *reason = tw_failure_new(code, NULL, "standard I/O: %s", tw_strerror(code));
    tw_protocol *p = s->base.protocol;
    tw_protocol_connection_lost(p, reason);
    tw_failure_unref(reason);
    s->base.protocol = NULL;
    tw_protocol_release(p);
    tw_transport_unref(&s->base); /* the connection's own */
    tw_transport_unref(&s->base);
}

/* From inside a call of the application: delivered by `later`. */
static void schedule_loss(struct stdio *s, int code)
{
    if (s->flags & (F_LOST | F_LOST_PENDING))
        return;
    s->flags |= F_LOST_PENDING;
    s->reason = code;
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

/* Sends what is queued. Returns 0 or -errno. */
static int flush(struct stdio *s)
{
    for (int round = 0; round < WRITES_PER_WAKEUP; round++) {
        if (tw_wqueue_is_empty(&s->queue) || (s->flags & (F_LOST | F_LOST_PENDING)))
            return 0;
        struct iovec iov[IOV_MAX];
        int cnt = tw_wqueue_fill_iov(&s->queue, iov, IOV_MAX);
        size_t offered = 0;
        for (int i = 0; i < cnt; i++)
            offered += iov[i].iov_len;
        ssize_t n = tw__pipe_writev(s->out.io.fd, iov, cnt);
        if (n < 0)
            return (int)n;
        if (n > 0)
            tw_wqueue_consume(&s->queue, (size_t)n);
        if ((size_t)n < offered)
            return 0;
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

static void stop_producer(struct stdio *s)
{
    tw_producer *prod = s->producer;
    s->producer = NULL;
    if (prod && prod->ops->stop_producing)
        prod->ops->stop_producing(prod);
}

/* write_connection_lost for an output that failed, from the reactor; the
 * end when the input is done too. */
static void tell_output_lost(struct stdio *s)
{
    s->flags &= ~(uint32_t)F_WLOST_PENDING;
    stop_producer(s);
    if (s->flags & (F_LOST | F_LOST_PENDING))
        return;
    tw_protocol *p = s->base.protocol;
    p->ops->write_connection_lost(p);
    if (!(s->flags & (F_LOST | F_LOST_PENDING)) && (s->flags & F_READ_CLOSED))
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
    if (s->flags & (F_LOST | F_LOST_PENDING | F_WRITE_CLOSED))
        return;
    tw_protocol *p = s->base.protocol;
    if ((s->flags & F_DISCONNECTING) || !p->ops || !p->ops->write_connection_lost) {
        if (inside)
            schedule_loss(s, code);
        else
            finish(s, code);
        return;
    }
    tw_log_debug(NS, "standard I/O: the output is gone (%s); reading goes on", tw_strerror(code));
    s->flags = (s->flags | F_WRITE_CLOSED) & ~(uint32_t)F_WRITE_SHUTTING;
    tw_wqueue_clear(&s->queue);
    update_interest(s); /* removals only */
    if (inside) {
        s->flags |= F_WLOST_PENDING;
        tw_timer_start(&s->later, 0); /* armed: moves without allocating */
        return;
    }
    tell_output_lost(s);
}

static void after_drain(struct stdio *s)
{
    if (s->flags & (F_LOST | F_LOST_PENDING))
        return;
    bool empty = tw_wqueue_is_empty(&s->queue);
    if (empty && (s->flags & F_DISCONNECTING)) {
        finish(s, TW_ECONNDONE);
        return;
    }
    if (empty && (s->flags & F_WRITE_SHUTTING)) {
        s->flags = (s->flags | F_WRITE_CLOSED) & ~(uint32_t)F_WRITE_SHUTTING;
        int rc = shut_output(s);
        if (rc < 0) {
            finish(s, rc);
            return;
        }
        tw_protocol *p = s->base.protocol;
        if (p->ops && p->ops->write_connection_lost)
            p->ops->write_connection_lost(p);
        if (!(s->flags & (F_LOST | F_LOST_PENDING)) && (s->flags & F_READ_CLOSED))
            finish(s, TW_ECONNDONE);
        return;
    }
    if (s->producer && !(s->flags & F_NO_WRITE) && tw_wqueue_size(&s->queue) <= s->low) {
        tw_producer *prod = s->producer;
        if (!s->streaming) {
            prod->ops->resume_producing(prod);
        } else if (s->producer_paused) {
            s->producer_paused = false;
            prod->ops->resume_producing(prod);
        }
        if (s->flags & (F_LOST | F_LOST_PENDING))
            return;
    }
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
    if (s->producer && s->streaming && !s->producer_paused && tw_wqueue_size(&s->queue) > s->high) {
        s->producer_paused = true;
        s->producer->ops->pause_producing(s->producer);
    }
    return 0;
}

static int stdio_write_iov(tw_transport *t, const struct iovec *iov, int iovcnt)
{
    struct stdio *s = S(t);
    if (s->flags & F_NO_WRITE)
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
        if (s->producer && !s->streaming) {
            s->flags |= F_PULL_PENDING;
            tw_timer_start(&s->later, 0); /* armed: moves without allocating */
        }
        return 0;
    }
    size_t done = 0;
    bool pull = s->producer && !s->streaming;
    if (tw_wqueue_is_empty(&s->queue) && !pull && iovcnt <= IOV_MAX) {
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
    if (s->flags & F_NO_WRITE)
        return TW_ENOTCONN;
    if (s->out.mode == M_FILE || len == 0 || (tw_wqueue_is_empty(&s->queue) && !s->producer)) {
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
    s->flags |= F_READ_CLOSED;
    tw_protocol *p = s->base.protocol;
    if (!(p->ops && p->ops->read_connection_lost)) {
        /* Not half-closeable: what is queued still goes out (a pipeline
         * reading `prog < file` wants every answer), then the end. */
        s->flags |= F_DISCONNECTING;
        after_drain(s);
        if (!(s->flags & (F_LOST | F_LOST_PENDING)))
            update_interest(s);
        return;
    }
    update_interest(s);
    p->ops->read_connection_lost(p);
    if (!(s->flags & (F_LOST | F_LOST_PENDING)) && (s->flags & F_WRITE_CLOSED))
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
    if ((events & TW_IO_WRITE) && !(s->flags & (F_LOST | F_LOST_PENDING | F_WRITE_CLOSED))) {
        int rc = flush(s);
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
    if (s->flags & F_LOST_PENDING) {
        finish(s, s->reason);
    } else if (s->out.mode == M_FILE && (s->flags & F_WRITE_SHUTTING)) {
        after_drain(s); /* nothing is ever queued for a file */
    }
    if ((s->flags & F_WLOST_PENDING) && !(s->flags & F_LOST))
        tell_output_lost(s);
    if (s->flags & F_PULL_PENDING) {
        s->flags &= ~(uint32_t)F_PULL_PENDING;
        tw_producer *prod = s->producer;
        if (prod && !s->streaming && !(s->flags & F_NO_WRITE))
            prod->ops->resume_producing(prod);
    }
    if (!(s->flags & (F_LOST | F_LOST_PENDING)) && s->in.mode == M_FILE && want_read(s)) {
        do_read(s, 1);
        if (s->in.mode == M_FILE && want_read(s))
            tw_timer_start(&s->later, 0);
    }
    if (!(s->flags & F_LOST) && !tw_timer_active(&s->later))
        tw_timer_start(&s->later, FAR_AWAY);
    tw_transport_unref(&s->base);
}

static void on_handle_close(tw_handle *h)
{
    struct stdio *s = container_of(h, struct stdio, handle);
    finish(s, (s->flags & F_LOST_PENDING) ? s->reason : TW_ECONNLOST);
}

/* ---- Closing, flow control, addresses */

static int stdio_lose_connection(tw_transport *t)
{
    struct stdio *s = S(t);
    if (s->flags & F_CLOSING)
        return 0;
    s->flags |= F_DISCONNECTING;
    if (tw_wqueue_is_empty(&s->queue)) {
        schedule_loss(s, TW_ECONNDONE);
        return 0;
    }
    if (update_interest(s) < 0)
        schedule_loss(s, TW_ECONNLOST);
    return 0;
}

static int stdio_abort_connection(tw_transport *t)
{
    schedule_loss(S(t), TW_ECONNABORTED);
    return 0;
}

static int stdio_lose_write_connection(tw_transport *t)
{
    struct stdio *s = S(t);
    if (s->flags & F_LOST)
        return TW_ENOTCONN;
    if (s->flags & (F_CLOSING | F_WRITE_SHUTTING | F_WRITE_CLOSED))
        return 0;
    s->flags |= F_WRITE_SHUTTING;
    /* The shutdown and write_connection_lost come from the reactor: through
     * the writer once the queue has drained, or, for a file, `later`. */
    if (s->out.mode == M_FILE)
        tw_timer_start(&s->later, 0);
    else if (update_interest(s) < 0)
        schedule_loss(s, TW_ECONNLOST);
    return 0;
}

static int stdio_get_address(const tw_transport *t, tw_address *out)
{
    if (S(t)->flags & F_LOST)
        return TW_ENOTCONN;
    tw_address_pipe(out);
    return 0;
}

static int stdio_pause(tw_transport *t)
{
    struct stdio *s = S(t);
    if (s->flags & F_LOST)
        return TW_ENOTCONN;
    s->flags |= F_PAUSED;
    update_interest(s);
    return 0;
}

static int stdio_resume(tw_transport *t)
{
    struct stdio *s = S(t);
    if (s->flags & F_LOST)
        return TW_ENOTCONN;
    s->flags &= ~(uint32_t)F_PAUSED;
    if (update_interest(s) < 0)
        schedule_loss(s, TW_ECONNLOST);
    return 0;
}

static int stdio_register_producer(tw_transport *t, tw_producer *producer, bool streaming)
{
    struct stdio *s = S(t);
    if (s->flags & F_NO_WRITE)
        return TW_ENOTCONN;
    if (s->producer)
        return TW_EBUSY;
    s->producer = producer;
    s->streaming = streaming;
    s->producer_paused = false;
    tw_transport_ref(t);
    if (!streaming) {
        producer->ops->resume_producing(producer);
    } else if (tw_wqueue_size(&s->queue) > s->high) {
        s->producer_paused = true;
        producer->ops->pause_producing(producer);
    }
    tw_transport_unref(t);
    return 0;
}

static int stdio_unregister_producer(tw_transport *t)
{
    struct stdio *s = S(t);
    if (s->flags & F_LOST)
        return TW_ENOTCONN;
    s->producer = NULL;
    return 0;
}

static size_t stdio_write_buffer_size(const tw_transport *t)
{
    const struct stdio *s = S(t);
    return (s->flags & F_LOST) ? 0 : tw_wqueue_size(&s->queue);
}

static int stdio_set_limits(tw_transport *t, size_t high, size_t low)
{
    struct stdio *s = S(t);
    if (s->flags & F_LOST)
        return TW_ENOTCONN;
    s->high = high;
    s->low = low;
    return 0;
}

static void stdio_destroy(tw_transport *t)
{
    tw_free(S(t));
}

static const tw_transport_ops stdio_ops = {
    .name = "stdio",
    .write = stdio_write,
    .write_iov = stdio_write_iov,
    .write_zerocopy = stdio_write_zerocopy,
    .lose_connection = stdio_lose_connection,
    .abort_connection = stdio_abort_connection,
    .lose_write_connection = stdio_lose_write_connection,
    .get_peer = stdio_get_address,
    .get_host = stdio_get_address,
    .pause_producing = stdio_pause,
    .resume_producing = stdio_resume,
    .register_producer = stdio_register_producer,
    .unregister_producer = stdio_unregister_producer,
    .write_buffer_size = stdio_write_buffer_size,
    .set_write_buffer_limits = stdio_set_limits,
    .set_option = NULL,
    .send_fds = NULL,
    .destroy = stdio_destroy,
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
    tw_transport_init(&s->base, &stdio_ops, r);
    tw_wqueue_init(&s->queue);
    s->high = TW_TRANSPORT_HIGH_WATER;
    s->low = TW_TRANSPORT_LOW_WATER;
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
    tw_reactor_add_handle(r, &s->handle, on_handle_close);
    s->base.protocol = p;
    if (out)
        *out = &s->base;
    tw_transport_ref(&s->base);
    tw_protocol_make_connection(p, &s->base);
    tw_transport_unref(&s->base);
    return 0;
}
