/* Stream connections: the "tcp" and "unix" transports behind tw__stream_open
 * (ports and connectors) and tw_connection_adopt. Contracts: transport.h,
 * protocol.h, net.h, net-internal.h.
 *
 * ---- The steady path allocates nothing
 * Reads land in one buffer per thread (one reactor per thread, so one
 * connection reads at a time; data_received gets a slice of it). A write
 * goes straight to the kernel when nothing is queued and only what the
 * kernel leaves is copied into the write queue, whose blocks come from a
 * per-thread cache; the queue is flushed with one sendmsg of up to IOV_MAX
 * entries. Writer interest is on only while something is queued (or a
 * half-close waits for the queue to drain), so an idle connection costs no
 * wakeups.
 *
 * ---- Delivering a loss from the reactor
 * connection_lost must never run inside the call that closed (the protocol
 * may close from any callback and go on using its state). A loss decided
 * inside such a call (lose_connection with nothing queued, abort, a write
 * error) shuts the socket down both ways and keeps reader interest on:
 * a socket shut down for reading is readable from then on, on every backend,
 * so the reactor calls us back on its next iteration, where the loss is
 * delivered. This allocates nothing and cannot fail for want of memory, unlike
 * a zero-delay tw_call_later (which is the fallback should re-adding the
 * reader fail). The writer would not do: a full send buffer never gets
 * writable while the peer does not read. A loss found by the reactor itself
 * (read error, end of file, flush done) is delivered at once.
 *
 * ---- Re-entrancy
 * Every callback into the protocol runs with a reference held on the
 * transport, and the state is checked again after each, so a protocol may
 * close, abort, pause or write from any callback, and any other code may
 * close this connection from its own callbacks. The protocol itself is
 * released only after connection_lost and the lost hook have returned. */
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <twine/error.h>
#include <twine/failure.h>
#include <twine/log.h>
#include <twine/net.h>

#include "net/net-internal.h"
#include "net/stream.h"
#include "reactor/completion.h"

#define LOG_NS                          "twine.net"

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* Reads per wakeup while each fills the buffer: a fast peer cannot starve
 * the other connections of the reactor. */
#define READS_PER_WAKEUP 4
/* sendmsg calls per wakeup while each is taken whole. */
#define WRITES_PER_WAKEUP 4
/* Linux's SCM_MAX_FD: descriptors per message. */
#define MAX_FDS 253

/* The shared closing state's flags (fdtransport.h), and these. */
enum {
    F_UNIX = TW__FD_OWN << 0,
    /* Completion mode (see "Completions" below). */
    F_CQ = TW__FD_OWN << 1,              /* reads and writes through the reactor's completions */
    F_RECV_ON = TW__FD_OWN << 2,         /* a multishot receive is in flight */
    F_RECV_CANCELLING = TW__FD_OWN << 3, /* ... and its cancellation asked for */
    F_SEND_ON = TW__FD_OWN << 4,      /* a send is in flight (zero copy: until its notification) */
    F_SEND_ZC = TW__FD_OWN << 5,      /* ... a zero-copy one */
    F_FLUSH_QUEUED = TW__FD_OWN << 6, /* on the reactor's flush list */
    F_NOP_ON = TW__FD_OWN << 7,       /* a wakeup is in flight */
    F_STASHED = TW__FD_OWN << 8,      /* bytes or an end read while paused wait in the extra */
    F_COUNTED = TW__FD_OWN << 9,      /* counted as a reader in the reactor's state */
    F_SEND_SLOT = TW__FD_OWN << 10,   /* the send in flight is the slot's */
    F_ZC_KNOWN = TW__FD_OWN << 11,    /* whether zero copy may pay is known: */
    F_ZC_OK = TW__FD_OWN << 12,       /* ... the peer is not on loopback */
    F_ZC_NEVER = TW__FD_OWN << 13,    /* the kernel could not pin pages for one: copy */
};

/* Completion ops (the target's op numbers). */
enum { OP_RECV = 1, OP_SEND = 2, OP_NOP = 3 };

/* Descriptors to send with the byte at queue offset `at` (counted from the
 * queue's current head). */
struct fd_batch {
    struct fd_batch *next;
    size_t at;
    size_t n;
    int fds[];
};

/* What few connections need: allocated on first use, freed with the
 * transport. */
struct stream_extra {
    struct tw__flow flow;
    void (*lost_hook)(void *arg, tw_failure *reason);
    void *lost_arg;
    struct fd_batch *batches; /* in queue order */
    /* Completion mode: what a receive brought after a pause (delivered on
     * resume), and the bytes a zero-copy send took (consumed at its
     * notification). */
    char *stash;
    size_t stash_len;
    int stash_end; /* 0; 1: end of file; < 0: an error */
    int zc_res;    /* the zero-copy send's result, until its notification */
};

static struct tw__stream *S(const tw_transport *t)
{
    return (struct tw__stream *)t;
}

static struct stream_extra *X(const struct tw__stream *s)
{
    return s->io.data;
}

static struct stream_extra *extra_get(struct tw__stream *s)
{
    if (!s->io.data) {
        struct stream_extra *x = tw_calloc(1, sizeof *x);
        if (!x)
            return NULL;
        tw__flow_init(&x->flow);
        s->io.data = x;
    }
    return s->io.data;
}

/* ---- The per-thread read buffer */

static _Thread_local char *read_buf;
static pthread_key_t read_key;
static pthread_once_t read_key_once = PTHREAD_ONCE_INIT;
static bool read_key_ok;

/* Runs at thread exit, while the thread's TLS is still there. */
static void read_buf_exit(void *buf)
{
    tw_free(buf);
    read_buf = NULL;
}

static void read_key_create(void)
{
    read_key_ok = pthread_key_create(&read_key, read_buf_exit) == 0;
}

/* Made when the thread opens its first connection, so that reading never
 * needs memory. */
static int read_buf_ensure(void)
{
    if (read_buf)
        return 0;
    pthread_once(&read_key_once, read_key_create);
    char *b = tw_malloc(TW_NET_READ_SIZE);
    if (!b)
        return TW_ENOMEM;
    if (read_key_ok)
        pthread_setspecific(read_key, b);
    read_buf = b;
    return 0;
}

/* ---- The per-thread send slots (completion mode)
 *
 * A small write to a connection with nothing queued and nothing in flight
 * is copied into a slot of a per-thread slab instead of the write queue,
 * and sent from there. The queue's blocks are 16 KiB each: with hundreds of
 * connections each holding one until its send completes, they would churn
 * through the allocator (and the heap's top through brk) every iteration;
 * slots are taken and given back last in first out, so the few in use stay
 * warm. A slot holds at most SLOT_SIZE bytes (a reply, a pipelined batch of
 * small ones; small, because every send in flight keeps its slot touched);
 * whatever comes while its send is in flight queues behind it. */
#define SLOT_SIZE 2048
#define SLOTS     512

struct slab {
    char *mem;
    unsigned nfree;
    uint16_t free[SLOTS];
};

static _Thread_local struct slab *slab;
static pthread_key_t slab_key;
static pthread_once_t slab_key_once = PTHREAD_ONCE_INIT;
static bool slab_key_ok;

static void slab_exit(void *p)
{
    struct slab *b = p;
    tw_free(b->mem);
    tw_free(b);
    slab = NULL;
}

static void slab_key_create(void)
{
    slab_key_ok = pthread_key_create(&slab_key, slab_exit) == 0;
}

/* Without memory for it, writes just queue. */
static void slab_ensure(void)
{
    if (slab)
        return;
    pthread_once(&slab_key_once, slab_key_create);
    struct slab *b = tw_malloc(sizeof *b);
    char *mem = b ? tw_malloc((size_t)SLOTS * SLOT_SIZE) : NULL;
    if (!mem) {
        tw_free(b);
        return;
    }
    b->mem = mem;
    b->nfree = SLOTS;
    for (unsigned i = 0; i < SLOTS; i++)
        b->free[i] = (uint16_t)(SLOTS - 1 - i);
    if (slab_key_ok)
        pthread_setspecific(slab_key, b);
    slab = b;
}

static char *slot_mem(int32_t slot)
{
    return slab->mem + (size_t)slot * SLOT_SIZE;
}

/* ---- Interest */

static bool want_read(const struct tw__stream *s)
{
    if (s->fd.flags & TW__FD_LOST)
        return false;
    if (s->fd.flags & TW__FD_LOST_PENDING)
        return true; /* the wakeup that delivers the loss */
    return !(s->fd.flags & (TW__FD_PAUSED | TW__FD_READ_CLOSED | TW__FD_DISCONNECTING));
}

/* Bytes in a slot, not yet sent. */
static size_t slot_pending(const struct tw__stream *s)
{
    return ((s->fd.flags & F_CQ) && s->cq.slot >= 0) ? s->cq.slot_len - s->cq.slot_off : 0;
}

/* What is waiting to go: the slot's bytes, then the queue's. */
static size_t out_size(const struct tw__stream *s)
{
    return tw_wqueue_size(&s->queue) + slot_pending(s);
}

static void slot_drop(struct tw__stream *s)
{
    if (!(s->fd.flags & F_CQ) || s->cq.slot < 0)
        return;
    slab->free[slab->nfree++] = (uint16_t)s->cq.slot;
    s->cq.slot = -1;
    s->cq.slot_len = s->cq.slot_off = 0;
}

static bool want_write(const struct tw__stream *s)
{
    if (s->fd.flags & TW__FD_GOING)
        return false;
    return out_size(s) > 0 || (s->fd.flags & TW__FD_WRITE_SHUTTING);
}

static int cq_update(struct tw__stream *s);

/* Brings the watcher in line with the state; the reactor makes no syscall
 * for what is already so. Returns 0 or the error of adding. */
static int update_interest(struct tw__stream *s)
{
    if (s->fd.flags & F_CQ)
        return cq_update(s);
    tw_reactor *r = s->base.reactor;
    int rc = want_read(s) ? tw_reactor_add_reader(r, &s->io) : tw_reactor_remove_reader(r, &s->io);
    if (rc < 0)
        return rc;
    return want_write(s) ? tw_reactor_add_writer(r, &s->io) : tw_reactor_remove_writer(r, &s->io);
}

/* ---- Losing the connection */

static void drop_batches(struct tw__stream *s)
{
    struct stream_extra *x = X(s);
    while (x && x->batches) {
        struct fd_batch *b = x->batches;
        x->batches = b->next;
        for (size_t i = 0; i < b->n; i++)
            close(b->fds[i]);
        tw_free(b);
    }
}

/* The peer's address, also after a reset: getpeername refuses a TCP socket
 * that has gone to CLOSE, SO_PEERNAME does not. */
static int peer_address(const struct tw__stream *s, tw_address *out)
{
    memset(out, 0, sizeof *out);
    out->len = sizeof out->u;
    if (getpeername(s->io.fd, &out->u.sa, &out->len) == 0)
        return 0;
    int err = -errno;
    /* SO_PEERNAME wants a length no larger than the address: the family's. */
    tw_address host;
    host.len = sizeof host.u;
    if (!(s->fd.flags & F_UNIX) && getsockname(s->io.fd, &host.u.sa, &host.len) == 0) {
        out->len = host.u.sa.sa_family == AF_INET6 ? sizeof out->u.in6 : sizeof out->u.in;
        if (getsockopt(s->io.fd, SOL_SOCKET, SO_PEERNAME, &out->u, &out->len) == 0)
            return 0;
    }
    out->len = 0;
    return err;
}

static tw_failure *make_reason(const struct tw__stream *s, int code)
{
    tw_address a;
    char peer[TW_ADDRESS_STRLEN];
    if (s->io.fd < 0 || peer_address(s, &a) < 0)
        snprintf(peer, sizeof peer, "an unknown peer");
    else
        tw_address_format(&a, peer, sizeof peer);
    return tw_failure_new(code, NULL, "%s connection to %s: %s", s->base.ops->name, peer,
                          tw_strerror(code));
}

/* Before a clean close: unread input would make the kernel answer with a
 * reset, which can destroy what we sent and the peer has not read yet. */
static void discard_input(struct tw__stream *s)
{
    for (int i = 0; i < READS_PER_WAKEUP; i++) {
        ssize_t n = recv(s->io.fd, read_buf, TW_NET_READ_SIZE, MSG_DONTWAIT);
        if (n <= 0 && !(n < 0 && errno == EINTR))
            break;
    }
}

/* Tears the connection down and tells everyone, now. Only from the reactor
 * (an fd callback, the handle's close, the fallback delayed call). */
static void cq_close(struct tw__stream *s);

static void finish(struct tw__stream *s, int code)
{
    if (!tw__fd_mark_lost(&s->fd))
        return;
    tw_transport_ref(&s->base);
    tw_reactor *r = s->base.reactor;
    if (!(s->fd.flags & F_CQ)) {
        tw_reactor_remove_reader(r, &s->io);
        tw_reactor_remove_writer(r, &s->io);
    }
    tw_reactor_remove_handle(r, &s->handle);
    tw_failure *reason = make_reason(s, code);
    if (code == TW_ECONNDONE)
        discard_input(s);
    if (s->fd.flags & F_CQ)
        cq_close(s);
    else
        close(s->io.fd);
    s->io.fd = -1;
    /* Release callbacks that write now get TW_ENOTCONN. A send in flight
     * still uses the queue's bytes: its completion clears it. */
    if (!(s->fd.flags & F_SEND_ON)) {
        tw_wqueue_clear(&s->queue);
        drop_batches(s);
        slot_drop(s);
    }

    struct stream_extra *x = X(s);
    if (x) {
        void (*hook)(void *, tw_failure *) = x->lost_hook;
        x->lost_hook = NULL; /* once */
        tw__fd_tell_lost(&s->base, &x->flow, reason, hook, x->lost_arg);
    } else {
        tw__fd_tell_lost(&s->base, NULL, reason, NULL, NULL);
    }
    tw_transport_unref(&s->base);
}

static void deliver_later(void *arg)
{
    struct tw__stream *s = arg;
    finish(s, s->fd.reason);
    tw_transport_unref(&s->base);
}

/* Decides the loss from inside a call that must not deliver it, and makes
 * the reactor deliver it on its next iteration (see the top of the file). */
static void schedule_loss(struct tw__stream *s, int code)
{
    if (!tw__fd_decide_loss(&s->fd, code))
        return;
    /* Set before: a release callback run by the clear that writes is refused. */
    if (code != TW_ECONNDONE && !(s->fd.flags & F_SEND_ON)) {
        tw_wqueue_clear(&s->queue);
        drop_batches(s);
        slot_drop(s);
    }
    shutdown(s->io.fd, SHUT_RDWR);
    int rc = update_interest(s);
    if (rc == 0 && (s->fd.flags & F_CQ))
        rc = (s->fd.flags & F_NOP_ON) ? 0 : TW_EAGAIN; /* cq_update made no wakeup */
    if (rc == 0)
        return;
    tw_transport_ref(&s->base);
    rc = tw_call_later(tw_reactor_clock(s->base.reactor), 0, deliver_later, s, NULL);
    if (rc < 0) {
        tw_transport_unref(&s->base);
        tw_log_error(LOG_NS,
                     "%s connection: cannot schedule the delivery of its loss (%s); it is "
                     "delivered when the reactor shuts down",
                     s->base.ops->name, tw_strerror(rc));
    }
}

/* ---- Writing */

static ssize_t sys_send(int fd, const void *data, size_t len)
{
    for (;;) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
    }
}

/* Cuts iov[0..*cnt) to its first `limit` bytes. */
static size_t iov_limit(struct iovec *iov, int *cnt, size_t limit)
{
    size_t total = 0;
    for (int i = 0; i < *cnt; i++) {
        if (iov[i].iov_len >= limit - total) {
            iov[i].iov_len = limit - total;
            *cnt = i + 1;
            return limit;
        }
        total += iov[i].iov_len;
    }
    return total;
}

/* One sendmsg of iov[0..cnt), with the first pending descriptors when they
 * ride on its first byte, and never past the byte the next ones ride on.
 * Returns the bytes taken (0: the kernel is full) or -errno. Adjusts the
 * batches; the caller consumes the queue. */
static ssize_t send_iov(struct tw__stream *s, struct iovec *iov, int cnt, size_t *offered)
{
    struct stream_extra *x = X(s);
    struct fd_batch *b = x ? x->batches : NULL;
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * MAX_FDS)];
    } cbuf;
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)cnt};
    size_t total = iov_limit(iov, &cnt, SIZE_MAX);
    bool with_fds = false;
    if (b) {
        if (b->at > 0) {
            total = iov_limit(iov, &cnt, b->at);
        } else {
            with_fds = true;
            if (b->next)
                total = iov_limit(iov, &cnt, b->next->at);
            size_t fl = sizeof(int) * b->n;
            memset(cbuf.buf, 0, sizeof cbuf.buf);
            msg.msg_control = cbuf.buf;
            msg.msg_controllen = CMSG_SPACE(fl);
            struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(fl);
            memcpy(CMSG_DATA(c), b->fds, fl);
        }
        msg.msg_iovlen = (size_t)cnt;
    }
    *offered = total;
    ssize_t n;
    do {
        n = sendmsg(s->io.fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
    if (n > 0 && x) {
        if (with_fds) {
            /* The kernel holds its own references now. */
            x->batches = b->next;
            for (size_t i = 0; i < b->n; i++)
                close(b->fds[i]);
            tw_free(b);
        }
        for (struct fd_batch *o = x->batches; o; o = o->next)
            o->at -= (size_t)n;
    }
    return n;
}

/* Sends what is queued until the kernel is full, the queue empty, or the
 * per-wakeup bound reached. Returns 0 or -errno. */
static int write_out(struct tw__stream *s)
{
    size_t slot = slot_pending(s); /* completion mode: the slot's bytes go first */
    if (slot > 0 && !(s->fd.flags & (TW__FD_LOST | TW__FD_LOST_PENDING | F_SEND_ON))) {
        struct iovec iov = {.iov_base = slot_mem(s->cq.slot) + s->cq.slot_off, .iov_len = slot};
        size_t offered;
        ssize_t n = send_iov(s, &iov, 1, &offered);
        if (n < 0)
            return (int)n;
        s->cq.slot_off += (uint32_t)n;
        if ((size_t)n < slot)
            return 0;
        slot_drop(s);
    }
    for (int round = 0; round < WRITES_PER_WAKEUP; round++) {
        if (tw_wqueue_is_empty(&s->queue) || (s->fd.flags & TW__FD_GOING))
            return 0;
        struct iovec iov[IOV_MAX];
        int cnt = tw_wqueue_fill_iov(&s->queue, iov, IOV_MAX);
        size_t offered;
        ssize_t n = send_iov(s, iov, cnt, &offered);
        if (n < 0)
            return (int)n;
        if (n > 0)
            tw_wqueue_consume(&s->queue, (size_t)n); /* may run release callbacks */
        if ((size_t)n < offered)
            return 0;
    }
    return 0;
}

/* After the queue shrank, in the reactor: finish a close or half-close
 * waiting for it, ask producers for more, and drop writer interest. */
static void after_drain(struct tw__stream *s)
{
    if (s->fd.flags & TW__FD_GOING)
        return;
    bool empty = out_size(s) == 0;
    if (empty && (s->fd.flags & TW__FD_DISCONNECTING)) {
        finish(s, TW_ECONNDONE);
        return;
    }
    if (empty && (s->fd.flags & TW__FD_WRITE_SHUTTING)) {
        s->fd.flags = (s->fd.flags | TW__FD_WRITE_CLOSED) & ~(uint32_t)TW__FD_WRITE_SHUTTING;
        drop_batches(s); /* descriptors with no byte left to ride on */
        int rc = shutdown(s->io.fd, SHUT_WR) < 0 ? -errno : 0;
        if (rc < 0) {
            finish(s, rc);
            return;
        }
        update_interest(s);
        if (tw__fd_side_closed(&s->base, &s->fd, false))
            finish(s, TW_ECONNDONE);
        return;
    }
    struct stream_extra *x = X(s);
    if (x && !(s->fd.flags & TW__FD_NO_WRITE) && tw__flow_drained(&x->flow, out_size(s)) &&
        (s->fd.flags & TW__FD_GOING))
        return;
    int rc = update_interest(s);
    if (rc < 0)
        finish(s, rc);
}

/* Whether a write may go to the kernel before the queue: not when something
 * is queued (order), descriptors wait for a byte, or a pull producer is
 * registered (its writes must queue, so that the drain asks it for more). */
static bool direct_ok(const struct tw__stream *s)
{
    /* Completions: every write goes through the queue and out with the
     * iteration's other sends, in the one submission. */
    if (!tw_wqueue_is_empty(&s->queue) || (s->fd.flags & F_CQ))
        return false;
    const struct stream_extra *x = X(s);
    return !x || (!x->batches && !tw__flow_pull(&x->flow));
}

/* Something was queued: watch for writability, and pause a streaming
 * producer above the high-water mark. */
static int queued(struct tw__stream *s)
{
    int rc = update_interest(s);
    if (rc < 0) {
        schedule_loss(s, rc);
        return 0; /* accepted; the loss says why it went nowhere */
    }
    struct stream_extra *x = X(s);
    if (x)
        tw__flow_queued(&x->flow, out_size(s));
    return 0;
}

/* Queuing failed (out of memory). Nothing sent: a clean error. Part of it
 * sent already: the byte stream has a hole, so the connection is lost. */
static int queue_failed(struct tw__stream *s, size_t sent, int rc)
{
    if (sent > 0)
        schedule_loss(s, rc);
    return rc;
}

/* Completion mode: copies iov[0..cnt) (len bytes) into the connection's
 * slot when the write may go there (see the slab above). Returns true if
 * it did. */
static bool slot_write(struct tw__stream *s, const struct iovec *iov, int cnt, size_t len)
{
    if (!(s->fd.flags & F_CQ) || !slab || !tw_wqueue_is_empty(&s->queue))
        return false;
    const struct stream_extra *x = X(s);
    if (x && tw__flow_pull(&x->flow))
        return false; /* its writes queue, so that the drain asks for more */
    if (s->cq.slot >= 0) {
        /* Filling a slot whose send has not left yet. */
        if ((s->fd.flags & F_SEND_SLOT) || s->cq.slot_len + len > SLOT_SIZE)
            return false;
    } else {
        if ((s->fd.flags & F_SEND_ON) || len > SLOT_SIZE || slab->nfree == 0)
            return false;
        s->cq.slot = slab->free[--slab->nfree];
        s->cq.slot_len = s->cq.slot_off = 0;
    }
    char *to = slot_mem(s->cq.slot) + s->cq.slot_len;
    for (int i = 0; i < cnt; i++) {
        memcpy(to, iov[i].iov_base, iov[i].iov_len);
        to += iov[i].iov_len;
    }
    s->cq.slot_len += (uint32_t)len;
    return true;
}

static int stream_write(tw_transport *t, const void *data, size_t len)
{
    struct tw__stream *s = S(t);
    if (s->fd.flags & TW__FD_NO_WRITE)
        return TW_ENOTCONN;
    if (len == 0)
        return 0;
    struct iovec one = {.iov_base = (void *)data, .iov_len = len};
    if (slot_write(s, &one, 1, len))
        return queued(s);
    size_t done = 0;
    if (direct_ok(s)) {
        ssize_t n = sys_send(s->io.fd, data, len);
        if (n < 0) {
            schedule_loss(s, (int)n);
            return 0;
        }
        if ((size_t)n == len)
            return 0;
        done = (size_t)n;
    }
    int rc = tw_wqueue_append(&s->queue, (const char *)data + done, len - done);
    if (rc < 0)
        return queue_failed(s, done, rc);
    return queued(s);
}

static int stream_write_iov(tw_transport *t, const struct iovec *iov, int iovcnt)
{
    struct tw__stream *s = S(t);
    if (s->fd.flags & TW__FD_NO_WRITE)
        return TW_ENOTCONN;
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++)
        total += iov[i].iov_len;
    if (total == 0)
        return 0;
    if (slot_write(s, iov, iovcnt, total))
        return queued(s);
    size_t done = 0;
    if (direct_ok(s) && iovcnt <= IOV_MAX) {
        struct msghdr msg = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt};
        ssize_t n;
        do {
            n = sendmsg(s->io.fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        } while (n < 0 && errno == EINTR);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            schedule_loss(s, -errno);
            return 0;
        }
        if (n > 0)
            done = (size_t)n;
        if (done == total)
            return 0;
    }
    size_t put = 0;
    int rc = tw_wqueue_append_iov(&s->queue, iov, iovcnt, done, &put);
    if (rc < 0)
        return queue_failed(s, done + put, rc);
    return queued(s);
}

static int stream_write_zerocopy(tw_transport *t, const void *data, size_t len,
                                 tw_release_fn release, void *arg)
{
    struct tw__stream *s = S(t);
    if (s->fd.flags & TW__FD_NO_WRITE)
        return TW_ENOTCONN;
    size_t done = 0;
    if (len > 0 && direct_ok(s)) {
        ssize_t n = sys_send(s->io.fd, data, len);
        if (n < 0)
            schedule_loss(s, (int)n);
        if (n < 0 || (size_t)n == len) {
            if (release)
                release(arg);
            return 0;
        }
        done = (size_t)n;
    }
    int rc =
        tw_wqueue_append_zerocopy(&s->queue, (const char *)data + done, len - done, release, arg);
    if (rc < 0)
        return queue_failed(s, done, rc);
    return len > 0 ? queued(s) : 0;
}

/* ---- Reading */

/* recvmsg for Unix sockets: descriptors that came with the bytes go to the
 * protocol (or are closed) before the bytes do. */
static ssize_t recv_unix(struct tw__stream *s)
{
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * MAX_FDS)];
    } cbuf;
    struct iovec iov = {.iov_base = read_buf, .iov_len = TW_NET_READ_SIZE};
    struct msghdr msg = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.buf, .msg_controllen = sizeof cbuf};
    ssize_t n = recvmsg(s->io.fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (n < 0)
        return -errno;
    if (msg.msg_flags & MSG_CTRUNC)
        tw_log_warn(LOG_NS, "unix connection: descriptors received were cut short by the kernel");
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            tw_protocol *p = s->base.protocol;
            if (!(s->fd.flags & TW__FD_CLOSING) && p->ops && p->ops->fd_received)
                p->ops->fd_received(p, fd);
            else
                close(fd);
        }
    }
    return n;
}

static void on_eof(struct tw__stream *s)
{
    s->fd.flags |= TW__FD_READ_CLOSED;
    tw_protocol *p = s->base.protocol;
    if (!(p->ops && p->ops->read_connection_lost)) {
        /* Not half-closeable: what the kernel takes now still goes. */
        if (!(s->fd.flags & F_SEND_ON))
            write_out(s);
        finish(s, TW_ECONNDONE);
        return;
    }
    int rc = update_interest(s);
    if (rc < 0) {
        finish(s, rc);
        return;
    }
    if (tw__fd_side_closed(&s->base, &s->fd, true))
        finish(s, TW_ECONNDONE);
}

static void do_read(struct tw__stream *s)
{
    for (int i = 0; i < READS_PER_WAKEUP; i++) {
        ssize_t n;
        if (s->fd.flags & F_UNIX) {
            n = recv_unix(s);
        } else {
            n = recv(s->io.fd, read_buf, TW_NET_READ_SIZE, MSG_DONTWAIT);
            if (n < 0)
                n = -errno;
        }
        if (n == -EINTR)
            continue;
        if (n == -EAGAIN || n == -EWOULDBLOCK)
            return;
        if (n < 0) {
            finish(s, (int)n);
            return;
        }
        if (n == 0) {
            on_eof(s);
            return;
        }
        if (s->fd.flags & TW__FD_CLOSING)
            return; /* closed by fd_received: the bytes go nowhere */
        tw_protocol_data_received(s->base.protocol, read_buf, (size_t)n);
        if ((s->fd.flags & (TW__FD_CLOSING | TW__FD_PAUSED | TW__FD_READ_CLOSED)) ||
            n < TW_NET_READ_SIZE)
            return;
    }
}

/* ---- Completions
 *
 * A TCP connection on a reactor whose backend has completion operations
 * (io_uring, completion.h) reads and writes through them instead of
 * readiness (F_CQ); Unix connections keep readiness, for their descriptor
 * passing. What changes:
 * - Reading: one multishot receive stays armed while the connection reads;
 *   its bytes land in the reactor's shared buffers and data_received gets
 *   them in place (no copy; the buffer goes back when it returns). Pausing
 *   cancels the receive and resuming arms it again; bytes that were already
 *   on their way when the pause came are kept in the extra block and
 *   delivered on resume, before reading starts again. A receive that ends
 *   for want of buffers (-ENOBUFS) is armed again: the bytes wait in the
 *   socket.
 * - Writing: writes only queue; the connection puts itself on the reactor's
 *   flush list, and just before the iteration's submission one send takes
 *   whatever the iteration queued. One send is in flight at a time, and the
 *   queue's bytes stay put until its completion (the kernel reads them
 *   then), so a loss decided meanwhile clears the queue at that completion.
 * - A loss decided inside a call is delivered by a no-op request, which
 *   completes on the next iteration (no memory needed).
 * - Closing cancels what is in flight and closes the fd through the ring, in
 *   one submission made at once (a request holds the socket open).
 * Every request in flight holds a reference on the transport, dropped at its
 * last completion, so user_data never outlives the connection. */

static const struct tw__cq_ops *CQ(const struct tw__stream *s)
{
    return tw__reactor_cq(s->base.reactor);
}

static bool want_recv(const struct tw__stream *s)
{
    return !(s->fd.flags & (TW__FD_LOST | TW__FD_LOST_PENDING | TW__FD_PAUSED | TW__FD_READ_CLOSED |
                            TW__FD_DISCONNECTING | F_STASHED));
}

static void cq_count(struct tw__stream *s, bool reading)
{
    if (reading == !!(s->fd.flags & F_COUNTED))
        return;
    s->fd.flags ^= F_COUNTED;
    tw__reactor_count_io(s->base.reactor, reading ? 1 : -1, 0);
}

static int cq_request(struct tw__stream *s, uint32_t flag, int rc)
{
    if (rc < 0) {
        tw_transport_unref(&s->base);
        return rc;
    }
    s->fd.flags |= flag;
    return 0;
}

static int cq_update(struct tw__stream *s)
{
    const struct tw__cq_ops *cq = CQ(s);
    tw_reactor *r = s->base.reactor;
    cq_count(s, want_read(s));
    int rc = 0;
    if (want_recv(s)) {
        if (!(s->fd.flags & F_RECV_ON)) {
            tw_transport_ref(&s->base);
            rc = cq_request(s, F_RECV_ON, cq->recv(r, &s->cq.target, OP_RECV, s->io.fd));
        }
    } else if ((s->fd.flags & (F_RECV_ON | F_RECV_CANCELLING)) == F_RECV_ON) {
        if (cq->cancel(r, &s->cq.target, OP_RECV, false) == 0)
            s->fd.flags |= F_RECV_CANCELLING;
    }
    bool wake = (s->fd.flags & TW__FD_LOST_PENDING) ||
                ((s->fd.flags & F_STASHED) && !(s->fd.flags & (TW__FD_PAUSED | TW__FD_LOST)));
    if (wake && !(s->fd.flags & F_NOP_ON)) {
        tw_transport_ref(&s->base);
        int nrc = cq_request(s, F_NOP_ON, cq->nop(r, &s->cq.target, OP_NOP));
        if (rc == 0)
            rc = nrc;
    }
    if (want_write(s) && !(s->fd.flags & (F_SEND_ON | F_FLUSH_QUEUED))) {
        tw_transport_ref(&s->base);
        s->fd.flags |= F_FLUSH_QUEUED;
        cq->flush_later(r, &s->cq.target);
    }
    return rc;
}

/* From finish: cancel what is in flight and close, in one submission. */
static void cq_close(struct tw__stream *s)
{
    const struct tw__cq_ops *cq = CQ(s);
    tw_reactor *r = s->base.reactor;
    cq_count(s, false);
    if ((s->fd.flags & (F_RECV_ON | F_RECV_CANCELLING)) == F_RECV_ON &&
        cq->cancel(r, &s->cq.target, OP_RECV, false) == 0)
        s->fd.flags |= F_RECV_CANCELLING;
    if (s->fd.flags & F_SEND_ON)
        cq->cancel(r, &s->cq.target, OP_SEND, false);
    if (cq->close(r, s->io.fd) < 0)
        close(s->io.fd);
}

static bool zc_may_pay(struct tw__stream *s)
{
    if (!(s->fd.flags & F_ZC_KNOWN)) {
        tw_address a;
        bool loop = true;
        if (peer_address(s, &a) == 0) {
            if (a.u.sa.sa_family == AF_INET)
                loop = (ntohl(a.u.in.sin_addr.s_addr) >> 24) == 127;
            else if (a.u.sa.sa_family == AF_INET6)
                loop = IN6_IS_ADDR_LOOPBACK(&a.u.in6.sin6_addr) ||
                       (IN6_IS_ADDR_V4MAPPED(&a.u.in6.sin6_addr) &&
                        a.u.in6.sin6_addr.s6_addr[12] == 127);
        }
        s->fd.flags |= F_ZC_KNOWN | (loop ? 0u : (uint32_t)F_ZC_OK);
    }
    return s->fd.flags & F_ZC_OK;
}

/* One send of what is queued. Returns 0 or an error (nothing in flight). */
static int cq_send(struct tw__stream *s)
{
    const struct tw__cq_ops *cq = CQ(s);
    struct iovec iov[64];
    int cnt = tw_wqueue_fill_iov(&s->queue, iov, 64);
    size_t total = 0;
    for (int i = 0; i < cnt; i++)
        total += iov[i].iov_len;
    /* Zero copy pays only for large sends (see zerocopy_min), and never to a
     * peer on loopback, where the kernel copies the bytes for the receiver
     * anyway (bench/sendzc.c: half the throughput). It needs the extra block,
     * to remember what the send took until its notification. */
    bool zc = total >= cq->zerocopy_min && !(s->fd.flags & F_ZC_NEVER) &&
              (cq->zerocopy_loopback || zc_may_pay(s)) && extra_get(s) != NULL;
    tw_transport_ref(&s->base);
    int rc = cq->send(s->base.reactor, &s->cq.target, OP_SEND, s->io.fd, iov, cnt, zc);
    return cq_request(s, F_SEND_ON | (zc ? F_SEND_ZC : 0), rc);
}

/* A send of the slot's unsent bytes. */
static int cq_send_slot(struct tw__stream *s)
{
    struct iovec iov = {.iov_base = slot_mem(s->cq.slot) + s->cq.slot_off,
                        .iov_len = s->cq.slot_len - s->cq.slot_off};
    tw_transport_ref(&s->base);
    int rc = CQ(s)->send(s->base.reactor, &s->cq.target, OP_SEND, s->io.fd, &iov, 1, false);
    return cq_request(s, F_SEND_ON | F_SEND_SLOT, rc);
}

/* The next send: the slot's bytes first, then the queue's. */
static int cq_send_next(struct tw__stream *s)
{
    if (slot_pending(s) > 0)
        return cq_send_slot(s);
    if (!tw_wqueue_is_empty(&s->queue))
        return cq_send(s);
    return 0;
}

static void cq_flush(struct tw__stream *s)
{
    s->fd.flags &= ~(uint32_t)F_FLUSH_QUEUED;
    if (!(s->fd.flags & (TW__FD_LOST | TW__FD_LOST_PENDING | F_SEND_ON))) {
        if (out_size(s) > 0) {
            int rc = cq_send_next(s);
            if (rc < 0)
                finish(s, rc);
        } else {
            after_drain(s); /* a half-close or close waiting for the queue */
        }
    }
}

static void cq_sent(struct tw__stream *s, int res, unsigned flags)
{
    if (flags & TW__CQ_MORE) {
        X(s)->zc_res = res; /* the notification follows */
        return;
    }
    if ((s->fd.flags & F_SEND_ZC) && (flags & TW__CQ_NOTIF)) {
        res = X(s)->zc_res;
        if (res == -ENOMEM || res == -ENOBUFS) {
            /* Pinning the pages failed (RLIMIT_MEMLOCK, memory): the same
             * bytes go again, copied, and so does every later send. */
            s->fd.flags |= F_ZC_NEVER;
            res = 0;
        }
    }
    bool from_slot = s->fd.flags & F_SEND_SLOT;
    s->fd.flags &= ~(uint32_t)(F_SEND_ON | F_SEND_ZC | F_SEND_SLOT);
    if (s->fd.flags & TW__FD_GOING) {
        /* The clear the loss put off while the kernel had the bytes. */
        if ((s->fd.flags & TW__FD_LOST) || s->fd.reason != TW_ECONNDONE) {
            tw_wqueue_clear(&s->queue);
            drop_batches(s);
            slot_drop(s);
        }
        return;
    }
    if (res < 0) {
        finish(s, res);
        return;
    }
    if (from_slot) {
        s->cq.slot_off += (uint32_t)res;
        if (s->cq.slot_off == s->cq.slot_len)
            slot_drop(s);
    } else if (res > 0) {
        tw_wqueue_consume(&s->queue, (size_t)res); /* may run release callbacks */
    }
    if (!(s->fd.flags & (TW__FD_LOST | TW__FD_LOST_PENDING | F_SEND_ON)) && out_size(s) > 0) {
        int rc = cq_send_next(s);
        if (rc < 0) {
            finish(s, rc);
            return;
        }
    }
    after_drain(s);
}

/* Keeps what a receive brought while paused, for the resume. */
static void stash(struct tw__stream *s, const char *data, size_t len, int end)
{
    struct stream_extra *x = extra_get(s);
    if (!x) {
        finish(s, TW_ENOMEM);
        return;
    }
    if (len > 0) {
        char *b = tw_realloc(x->stash, x->stash_len + len);
        if (!b) {
            finish(s, TW_ENOMEM);
            return;
        }
        memcpy(b + x->stash_len, data, len);
        x->stash = b;
        x->stash_len += len;
    }
    if (end && !x->stash_end)
        x->stash_end = end;
    s->fd.flags |= F_STASHED;
}

/* Hands the stash over as reading would: at most TW_NET_READ_SIZE bytes a
 * call, stopping if the protocol pauses again (the rest waits). */
static void deliver_stash(struct tw__stream *s)
{
    struct stream_extra *x = X(s);
    size_t off = 0;
    while (off < x->stash_len &&
           !(s->fd.flags & (TW__FD_CLOSING | TW__FD_READ_CLOSED | TW__FD_PAUSED))) {
        size_t n = x->stash_len - off;
        if (n > TW_NET_READ_SIZE)
            n = TW_NET_READ_SIZE;
        tw_protocol_data_received(s->base.protocol, x->stash + off, n);
        off += n;
    }
    if (s->fd.flags & (TW__FD_CLOSING | TW__FD_READ_CLOSED))
        off = x->stash_len; /* goes nowhere */
    if (off < x->stash_len) {
        memmove(x->stash, x->stash + off, x->stash_len - off);
        x->stash_len -= off;
        return; /* paused again: the rest, and any end, wait for the resume */
    }
    int end = x->stash_end;
    tw_free(x->stash);
    x->stash = NULL;
    x->stash_len = 0;
    x->stash_end = 0;
    s->fd.flags &= ~(uint32_t)F_STASHED;
    if (s->fd.flags & (TW__FD_CLOSING | TW__FD_READ_CLOSED))
        return;
    if (end == 1)
        on_eof(s);
    else if (end < 0)
        finish(s, end);
}

static void cq_received(struct tw__stream *s, int res, const char *data)
{
    if (s->fd.flags & TW__FD_LOST_PENDING) {
        finish(s, s->fd.reason);
        return;
    }
    if (res == -ENOBUFS || res == -ECANCELED)
        return; /* armed again below if still wanted */
    if (s->fd.flags & (TW__FD_CLOSING | TW__FD_READ_CLOSED))
        return; /* on its way before the close: goes nowhere */
    if (s->fd.flags & (TW__FD_PAUSED | F_STASHED)) {
        stash(s, data, res > 0 ? (size_t)res : 0, res == 0 ? 1 : res < 0 ? res : 0);
        return;
    }
    if (res > 0)
        tw_protocol_data_received(s->base.protocol, data, (size_t)res);
    else if (res == 0)
        on_eof(s);
    else
        finish(s, res);
}

static void cq_complete(struct tw__cq_target *t, unsigned op, int res, unsigned flags,
                        const char *data)
{
    struct tw__stream *s = container_of(t, struct tw__stream, cq.target);
    bool last = !(flags & TW__CQ_MORE);
    if (flags & TW__CQ_DYING) {
        /* The reactor is being freed: only let go. */
        switch (op) {
        case OP_RECV:
            s->fd.flags &= ~(uint32_t)(F_RECV_ON | F_RECV_CANCELLING);
            break;
        case OP_SEND:
            if (!last)
                break; /* a zero-copy send's notification is still to come */
            s->fd.flags &= ~(uint32_t)(F_SEND_ON | F_SEND_ZC | F_SEND_SLOT);
            if (s->fd.flags & TW__FD_LOST) {
                /* The clear finish() put off while the kernel had the
                 * bytes: zero-copy writes hear their release. */
                tw_wqueue_clear(&s->queue);
                drop_batches(s);
                slot_drop(s);
            }
            break;
        case OP_NOP:
            s->fd.flags &= ~(uint32_t)F_NOP_ON;
            break;
        default:
            s->fd.flags &= ~(uint32_t)F_FLUSH_QUEUED;
            break;
        }
        if (last)
            tw_transport_unref(&s->base);
        return;
    }
    tw_transport_ref(&s->base);
    switch (op) {
    case TW__CQ_FLUSH:
        cq_flush(s);
        break;
    case OP_RECV:
        if (last)
            s->fd.flags &= ~(uint32_t)(F_RECV_ON | F_RECV_CANCELLING);
        if (!(s->fd.flags & TW__FD_LOST))
            cq_received(s, res, data);
        if (last && !(s->fd.flags & (TW__FD_LOST | F_RECV_ON))) {
            int rc = cq_update(s);
            if (rc < 0)
                finish(s, rc);
        }
        break;
    case OP_SEND:
        cq_sent(s, res, flags);
        break;
    case OP_NOP:
        s->fd.flags &= ~(uint32_t)F_NOP_ON;
        if (s->fd.flags & TW__FD_LOST)
            break;
        if (s->fd.flags & TW__FD_LOST_PENDING) {
            finish(s, s->fd.reason);
        } else if ((s->fd.flags & F_STASHED) && !(s->fd.flags & TW__FD_PAUSED)) {
            deliver_stash(s);
            if (!(s->fd.flags & TW__FD_LOST)) {
                int rc = cq_update(s);
                if (rc < 0)
                    finish(s, rc);
            }
        }
        break;
    }
    tw_transport_unref(&s->base);
    if (last)
        tw_transport_unref(&s->base); /* the request's reference */
}

static void on_io(tw_io *io, unsigned events)
{
    struct tw__stream *s = container_of(io, struct tw__stream, io);
    if (s->fd.flags & TW__FD_LOST_PENDING) {
        finish(s, s->fd.reason);
        return;
    }
    tw_transport_ref(&s->base);
    if (events & TW_IO_WRITE) {
        int rc = write_out(s);
        if (rc < 0)
            finish(s, rc);
        else
            after_drain(s);
    }
    if ((events & TW_IO_READ) && want_read(s) && !(s->fd.flags & TW__FD_CLOSING))
        do_read(s);
    tw_transport_unref(&s->base);
}

static void on_handle_close(tw_handle *h)
{
    struct tw__stream *s = container_of(h, struct tw__stream, handle);
    finish(s, tw__fd_shutdown_code(&s->fd));
}

/* ---- Addresses, options */

static int stream_get_peer(const tw_transport *t, tw_address *out)
{
    const struct tw__stream *s = S(t);
    if (s->fd.flags & TW__FD_LOST)
        return TW_ENOTCONN;
    return peer_address(s, out);
}

static int stream_get_host(const tw_transport *t, tw_address *out)
{
    const struct tw__stream *s = S(t);
    if (s->fd.flags & TW__FD_LOST)
        return TW_ENOTCONN;
    memset(out, 0, sizeof *out);
    out->len = sizeof out->u;
    if (getsockname(s->io.fd, &out->u.sa, &out->len) < 0) {
        out->len = 0;
        return -errno;
    }
    return 0;
}

/* Nagle stays on unless asked (as in Twisted and libuv): small writes from
 * a chatty protocol coalesce; latency-bound protocols set TW_OPT_TCP_NODELAY. */
static int tcp_set_option(tw_transport *t, tw_transport_option option, int value)
{
    struct tw__stream *s = S(t);
    if (s->fd.flags & TW__FD_LOST)
        return TW_ENOTCONN;
    if (value != 0 && value != 1)
        return TW_EINVAL;
    int rc;
    switch (option) {
    case TW_OPT_TCP_NODELAY:
        rc = setsockopt(s->io.fd, IPPROTO_TCP, TCP_NODELAY, &value, sizeof value);
        break;
    case TW_OPT_TCP_KEEPALIVE:
        rc = setsockopt(s->io.fd, SOL_SOCKET, SO_KEEPALIVE, &value, sizeof value);
        break;
    default:
        return TW_EINVAL;
    }
    return rc < 0 ? -errno : 0;
}

static int unix_send_fds(tw_transport *t, const int *fds, size_t n)
{
    struct tw__stream *s = S(t);
    if (s->fd.flags & TW__FD_NO_WRITE)
        return TW_ENOTCONN;
    struct stream_extra *x = extra_get(s);
    if (!x)
        return TW_ENOMEM;
    size_t at = tw_wqueue_size(&s->queue);
    struct fd_batch **tail = &x->batches, *last = NULL;
    while (*tail) {
        last = *tail;
        tail = &(*tail)->next;
    }
    /* Two batches on one byte would need a message without data: merge. */
    size_t have = (last && last->at == at) ? last->n : 0;
    if (have + n > MAX_FDS)
        return TW_EINVAL;
    struct fd_batch *b = tw_malloc(sizeof *b + (have + n) * sizeof(int));
    if (!b)
        return TW_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        b->fds[have + i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 0);
        if (b->fds[have + i] < 0) {
            int err = -errno;
            while (i-- > 0)
                close(b->fds[have + i]);
            tw_free(b);
            return err;
        }
    }
    b->next = NULL;
    b->at = at;
    b->n = have + n;
    if (have) {
        memcpy(b->fds, last->fds, have * sizeof(int));
        struct fd_batch **pp = &x->batches;
        while (*pp != last)
            pp = &(*pp)->next;
        *pp = b;
        tw_free(last);
    } else {
        *tail = b;
    }
    return 0;
}

/* ---- The transport: closing and flow control are fdtransport.c's */

/* Its own rather than tw__fd_write_buffer_size, which reaches out_size
 * through the kind: protocols ask it on every write (a port forwarder, TLS). */
static size_t stream_write_buffer_size(const tw_transport *t)
{
    const struct tw__stream *s = S(t);
    return (s->fd.flags & TW__FD_LOST) ? 0 : out_size(s);
}

static void stream_destroy(tw_transport *t)
{
    struct tw__stream *s = S(t);
    tw_wqueue_clear(&s->queue); /* empty unless a reactor was freed under it */
    drop_batches(s);
    slot_drop(s);
    if (X(s))
        tw_free(X(s)->stash);
    tw_free(s->io.data);
    tw_free(s);
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
    return out_size(S(t));
}

static struct tw__flow *kind_flow(tw_transport *t, bool create)
{
    struct stream_extra *x = create ? extra_get(S(t)) : X(S(t));
    return x ? &x->flow : NULL;
}

#define STREAM_KIND(NAME, SET_OPTION, SEND_FDS)                                                    \
    {                                                                                              \
        .ops =                                                                                     \
            {                                                                                      \
                .name = NAME,                                                                      \
                .write = stream_write,                                                             \
                .write_iov = stream_write_iov,                                                     \
                .write_zerocopy = stream_write_zerocopy,                                           \
                .lose_connection = tw__fd_lose_connection,                                         \
                .abort_connection = tw__fd_abort_connection,                                       \
                .lose_write_connection = tw__fd_lose_write_connection,                             \
                .get_peer = stream_get_peer,                                                       \
                .get_host = stream_get_host,                                                       \
                .pause_producing = tw__fd_pause_producing,                                         \
                .resume_producing = tw__fd_resume_producing,                                       \
                .register_producer = tw__fd_register_producer,                                     \
                .unregister_producer = tw__fd_unregister_producer,                                 \
                .write_buffer_size = stream_write_buffer_size,                                     \
                .set_write_buffer_limits = tw__fd_set_write_buffer_limits,                         \
                .set_option = SET_OPTION,                                                          \
                .send_fds = SEND_FDS,                                                              \
                .destroy = stream_destroy,                                                         \
            },                                                                                     \
        .state_at = offsetof(struct tw__stream, fd), .update_interest = kind_update_interest,      \
        .schedule_loss = kind_schedule_loss, .out_size = kind_out_size, .flow = kind_flow,         \
    }

static const struct tw__fd_kind tcp_kind = STREAM_KIND("tcp", tcp_set_option, NULL);
static const struct tw__fd_kind unix_kind = STREAM_KIND("unix", NULL, unix_send_fds);

static bool is_stream(const tw_transport *t)
{
    return t && (t->ops == &tcp_kind.ops || t->ops == &unix_kind.ops);
}

/* ---- Opening */

int tw__stream_open(tw_reactor *r, int fd, tw_protocol *p, tw_transport **out)
{
    int rc = 0;
    struct tw__stream *s = NULL;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
        rc = -errno;
    else if (ss.ss_family != AF_INET && ss.ss_family != AF_INET6 && ss.ss_family != AF_UNIX)
        rc = TW_EINVAL;
    int fl = rc == 0 ? fcntl(fd, F_GETFL) : 0;
    if (rc == 0 &&
        (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0))
        rc = -errno;
    if (rc == 0)
        rc = read_buf_ensure();
    if (rc == 0 && !(s = tw_calloc(1, sizeof *s)))
        rc = TW_ENOMEM;
    if (rc == 0) {
        bool is_unix = ss.ss_family == AF_UNIX;
        tw_transport_init(&s->base, is_unix ? &unix_kind.ops : &tcp_kind.ops, r);
        tw_io_init(&s->io, fd, on_io, NULL);
        tw_wqueue_init(&s->queue);
        s->fd.flags = is_unix ? F_UNIX : 0;
        rc = TW_ENOTSUP;
        if (!is_unix && tw__reactor_cq(r)) {
            s->fd.flags |= F_CQ;
            s->cq.target = (struct tw__cq_target){.complete = cq_complete};
            s->cq.slot = -1;
            s->cq.slot_len = s->cq.slot_off = 0;
            slab_ensure();
            tw_transport_ref(&s->base); /* cq_update's failure path drops one */
            rc = cq_update(s);
            tw_transport_unref(&s->base);
            if (rc < 0) {
                /* No completions for this one (no buffer ring): readiness. */
                cq_count(s, false);
                tw_io_init(&s->io, fd, on_io, NULL);
                s->fd.flags = 0;
            }
        }
        if (rc < 0)
            rc = tw_reactor_add_reader(r, &s->io);
    }
    if (rc < 0) {
        close(fd);
        tw_free(s);
        tw_protocol_release(p);
        return rc;
    }
    tw__fd_start(&s->base, &s->handle, on_handle_close, p, out);
    return 0;
}

int tw__stream_set_lost_hook(tw_transport *t, void (*fn)(void *arg, tw_failure *reason), void *arg)
{
    if (!is_stream(t) || (S(t)->fd.flags & TW__FD_LOST))
        return TW_EINVAL;
    struct stream_extra *x = extra_get(S(t));
    if (!x)
        return TW_ENOMEM;
    x->lost_hook = fn;
    x->lost_arg = arg;
    return 0;
}

/* The default builder fails only for want of memory (given protocol ops). */
static bool builds_by_default(const tw_factory *f)
{
    return (!f->ops || !f->ops->build_protocol) && f->protocol_ops;
}

int tw_connection_adopt(tw_reactor *r, int fd, tw_factory *factory, tw_protocol **out)
{
    if (!r || fd < 0 || !factory)
        return TW_EINVAL;
    int type;
    socklen_t tl = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0)
        return errno == ENOTSOCK ? TW_EINVAL : -errno;
    if (type != SOCK_STREAM)
        return TW_EINVAL;
    tw_address peer;
    memset(&peer, 0, sizeof peer);
    peer.len = sizeof peer.u;
    if (getpeername(fd, &peer.u.sa, &peer.len) < 0)
        return errno == ENOTCONN ? TW_EINVAL : -errno;
    int family = peer.u.sa.sa_family;
    if (family != AF_INET && family != AF_INET6 && family != AF_UNIX)
        return TW_EINVAL;
    int dup = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dup < 0)
        return -errno;
    tw_protocol *p = tw_factory_build_protocol(factory, &peer);
    if (!p) {
        close(dup);
        return builds_by_default(factory) ? TW_ENOMEM : TW_ECONNABORTED;
    }
    int rc = tw__stream_open(r, dup, p, NULL);
    if (rc < 0)
        return rc;
    if (out)
        *out = p;
    return 0;
}
