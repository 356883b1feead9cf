/* The io_uring backend.
 *
 * ---- Design
 * One ring per reactor, entered once per loop iteration: everything the
 * iteration prepared (poll requests, sends, receives, cancellations, closes)
 * is submitted by the same io_uring_enter that waits for the next
 * completions, with the wait's bound passed along (IORING_ENTER_EXT_ARG), so
 * timers cost no SQE and no extra syscall. The ring is single-issuer with
 * deferred task work where the kernel has them (6.1+): completions are
 * produced only while this thread is in io_uring_enter, never by interrupting
 * it.
 *
 * Readiness (the seam every backend implements): each watched fd has one
 * one-shot IORING_OP_POLL_ADD in flight with the mask its watcher asks for.
 * One-shot, not multishot: the reactor promises level-triggered readiness,
 * and a multishot poll only reports new wakeups (edge-triggered), so a
 * watcher that leaves data unread would hang. A completed poll is re-armed on
 * the next iteration (batched, no extra syscall); a still-ready fd completes
 * again at once. Interest changes are not sent when made but reconciled
 * before the next submission, so a watcher added and removed within one
 * iteration (a write queued and flushed in one callback) costs nothing.
 * Completions carry the fd and a generation number; a completion whose
 * generation is not the slot's current one (the watcher left, or was
 * replaced by another on the same fd number) is dropped.
 *
 * Completions (what transports use when present, completion.h): multishot
 * receives into one buffer ring shared by every connection of the reactor,
 * sends (from the connection's send slot or write queue, batched: one
 * io_uring_enter per iteration carries them all), connects, no-ops (a
 * wakeup on the next iteration), cancels and closes. No multishot accept:
 * listening ports watch readiness (src/net/listen.c says why). The shared
 * buffers start few and double when receives run short; where the kernel
 * consumes them incrementally (6.12+) a 64-byte message costs 64 bytes of a
 * buffer, not a buffer. Sends of 4 MiB and more to peers off loopback go
 * zero copy (SEND_ZC), where bench/sendzc.c found it no worse. user_data is the target's address
 * with the operation in its low three bits; the backend's own requests have bit 63 set (polls) or
 * are 0 (cancellations and closes whose results nobody needs).
 *
 * Lifetime: the backend holds no reference to a target; each owner keeps
 * itself alive while it has requests in flight and cancels them when it goes
 * (see stream.c). At reactor free every request still in flight is
 * cancelled and the final completions delivered, so owners drop what they
 * held.
 *
 * Availability: init fails with TW_ENOTSUP (after logging why) when the
 * kernel refuses io_uring (disabled by sysctl, seccomp, too old for the
 * opcodes used); the reactor then falls back to epoll. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <twine/alloc.h>
#include <twine/error.h>
#include <twine/log.h>

#include "reactor/completion.h"
#include "reactor/reactor-internal.h"

#ifdef TWINE_HAVE_LIBURING
#include <liburing.h>

#define NS         "twine.reactor"
#define SQ_ENTRIES 256
#define CQ_ENTRIES 4096
#define CQE_BATCH  256
/* Completions a busy loop waits for at once (see enter()). */
#define COALESCE_EVENTS 8

/* user_data of the backend's own requests. */
#define UD_IGNORE   0ull
#define UD_INTERNAL (1ull << 63)
#define UD_FD_BITS  31

/* liburing 2.3 predates these (kernel 6.12's incremental buffer rings). */
#ifndef IOU_PBUF_RING_INC
#define IOU_PBUF_RING_INC 2
#endif
#ifndef IORING_CQE_F_BUF_MORE
#define IORING_CQE_F_BUF_MORE (1u << 4)
#endif

/* The shared receive buffers: one buffer ring per reactor, made at the first
 * receive. Where the kernel consumes buffers incrementally (6.12+), a
 * receive takes only the bytes it got from the current buffer, so a 64-byte
 * message costs 64 bytes of it and the buffers are few and large; elsewhere
 * each receive takes a whole buffer, so there are more, smaller ones.
 *
 * The ring starts with few buffers and doubles them each time receives run
 * short (ENOBUFS), up to its size: the kernel walks the ring's buffers in
 * turn, so every buffer in it ends up touched (resident), and a quiet
 * server should not pay for the buffers of a busy one. The mapping is made
 * whole at once but pages are only touched as buffers fill. */
#define BGID          0
#define INC_BUFS      32
#define INC_BUF_SIZE  (32 * 1024)
#define FULL_BUFS     256
#define FULL_BUF_SIZE (16 * 1024)
#define START_BUFS    2

/* Sends of at least this many bytes go zero copy (to peers off loopback,
 * stream.c): where bench/sendzc.c measured the sender's CPU to drop below
 * copying's (0.85x at 4 MiB; 1.2x at 1 MiB, 2x at 64-256 KiB).
 * TWINE_IO_URING_ZC_MIN overrides it. */
#define ZC_MIN (4u << 20)

/* Messages and iovecs of the sends prepared since the last submission: the
 * kernel copies them when it takes the SQE (IORING_FEAT_SUBMIT_STABLE). */
#define ARENA_MSGS 128
#define ARENA_IOVS 2048
#define SEND_IOVS  64 /* iovecs per send at most */

/* One slot per fd number: the poll request in flight for it, if any. */
struct pslot {
    uint64_t seq;  /* the watcher the request was made for */
    uint32_t gen;  /* the request's generation, in its user_data */
    uint8_t armed; /* mask in flight (TW_IO_*), 0: none */
    uint8_t dirty; /* on the dirty list */
};

struct uring_state {
    struct io_uring ring;
    struct pslot *slots;
    int *dirty; /* fds whose request must be reconciled; as long as slots */
    size_t slot_cap, ndirty;
    uint32_t gen;

    /* Completions. */
    struct tw__cq_ops ops;
    tw_reactor *r;
    struct tw__cq_target *flush; /* flush_later's list, last in first */
    size_t inflight;             /* target requests whose last completion is to come */
    bool dying;                  /* being freed: no new request */
    unsigned last_batch;         /* completions of the last poll */
    int64_t coalesce_ns;         /* see enter() */
    bool no_bufs;                /* the buffer ring could not be made: no receives */
    struct io_uring_buf_ring *br;
    char *bufs;
    size_t map_len;
    unsigned nbufs, buf_size;
    unsigned nadded; /* buffers given to the ring so far (grown on ENOBUFS) */
    bool inc;
    uint32_t *buf_off; /* incremental: bytes of each buffer consumed so far */
    size_t nmsgs, niovs;
    struct msghdr msgs[ARENA_MSGS];
    struct iovec iovs[ARENA_IOVS];
};

static struct uring_state *ST(tw_reactor *r)
{
    return r->backend_state;
}

/* The arena may be reused once the kernel has taken every SQE. */
static void submitted(struct uring_state *s)
{
    if (io_uring_sq_ready(&s->ring) == 0)
        s->nmsgs = s->niovs = 0;
}

static void submit_now(struct uring_state *s)
{
    io_uring_submit_and_get_events(&s->ring);
    submitted(s);
}

/* An SQE, submitting what is queued first if the ring is full. */
static struct io_uring_sqe *get_sqe(struct uring_state *s)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&s->ring);
    if (!sqe) {
        io_uring_submit(&s->ring);
        submitted(s);
        sqe = io_uring_get_sqe(&s->ring);
    }
    return sqe;
}

/* ---- Availability */

static atomic_bool unavailable_logged;

static int unavailable(const char *why, int err)
{
    /* Once per process at info level: a disabled kernel stays disabled. */
    bool first = !atomic_exchange(&unavailable_logged, true);
    tw_log_level level = first ? TW_LOG_INFO : TW_LOG_DEBUG;
    if (err)
        tw_log_emit(level, NS, NULL, __FILE__, __LINE__, __func__,
                    "io_uring unavailable (%s: %s): using epoll", why, tw_strerror(err));
    else
        tw_log_emit(level, NS, NULL, __FILE__, __LINE__, __func__,
                    "io_uring unavailable (%s): using epoll", why);
    return TW_ENOTSUP;
}

static bool sysctl_disabled(void)
{
    FILE *f = fopen("/proc/sys/kernel/io_uring_disabled", "re");
    if (!f)
        return false;
    int v = 0;
    bool disabled = fscanf(f, "%d", &v) == 1 && v == 2;
    fclose(f);
    return disabled;
}

static int ring_init(struct io_uring *ring)
{
    struct io_uring_params p;
    /* The best set first; older kernels refuse newer flags with EINVAL. */
    static const unsigned tries[] = {
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL,
        IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL,
        0,
    };
    /* Rings that fit a small RLIMIT_MEMLOCK (64 KiB is a common default for
     * users, and the kernel refuses bigger rings with ENOMEM). */
    static const unsigned sizes[][2] = {{SQ_ENTRIES, CQ_ENTRIES},
                                        {SQ_ENTRIES / 4, CQ_ENTRIES / 16}};
    int rc = -EINVAL;
    for (size_t z = 0; z < sizeof sizes / sizeof sizes[0]; z++) {
        for (size_t i = 0; i < sizeof tries / sizeof tries[0]; i++) {
            memset(&p, 0, sizeof p);
            p.flags = tries[i] | IORING_SETUP_CQSIZE;
            p.cq_entries = sizes[z][1];
            rc = io_uring_queue_init_params(sizes[z][0], ring, &p);
            if (rc != -EINVAL)
                break;
        }
        if (rc != -ENOMEM)
            break;
    }
    if (rc == 0 && !(p.features & IORING_FEAT_EXT_ARG)) {
        io_uring_queue_exit(ring);
        return -ENOSYS;
    }
    return rc;
}

/* ---- Init and destroy */

static void ops_init(tw_reactor *r, struct uring_state *s);
static void drain(tw_reactor *r, struct uring_state *s);

static int ur_init(tw_reactor *r)
{
    if (sysctl_disabled())
        return unavailable("disabled by kernel.io_uring_disabled", 0);
    struct uring_state *s = tw_calloc(1, sizeof *s);
    if (!s)
        return TW_ENOMEM;
    int rc = ring_init(&s->ring);
    if (rc < 0) {
        tw_free(s);
        if (rc == -ENOMEM)
            return unavailable("no memory for the rings: RLIMIT_MEMLOCK too small?", rc);
        if (rc == -ENOSYS)
            return unavailable("the kernel lacks io_uring or IORING_FEAT_EXT_ARG", rc);
        if (rc == -EPERM)
            return unavailable("not permitted (seccomp or kernel.io_uring_disabled)", rc);
        return unavailable("io_uring_setup failed", rc);
    }
    struct io_uring_probe *probe = io_uring_get_probe_ring(&s->ring);
    static const int needed[] = {IORING_OP_POLL_ADD, IORING_OP_POLL_REMOVE, IORING_OP_NOP};
    for (size_t i = 0; probe && i < sizeof needed / sizeof needed[0]; i++) {
        if (!io_uring_opcode_supported(probe, needed[i])) {
            io_uring_free_probe(probe);
            io_uring_queue_exit(&s->ring);
            tw_free(s);
            return unavailable("the kernel lacks an opcode the backend needs", 0);
        }
    }
    if (probe)
        io_uring_free_probe(probe);
    /* The rings are cycled through whole (the kernel writes each CQE one
     * slot on): touch them now, so that they are a fixed cost of the reactor
     * (about 80 KiB) rather than memory that grows with its first thousands
     * of events and looks like a cost per connection. */
    volatile const char *cq = (const char *)s->ring.cq.cqes;
    for (size_t off = 0; off < s->ring.cq.ring_entries * sizeof(struct io_uring_cqe); off += 4096)
        (void)cq[off];
    volatile const char *sq = (const char *)s->ring.sq.sqes;
    for (size_t off = 0; off < s->ring.sq.ring_entries * sizeof(struct io_uring_sqe); off += 4096)
        (void)sq[off];
    /* Each enter then names the ring by index, not by fd: no file lookup.
     * Not possible (old kernel, or no slot left): plain enters. */
    (void)io_uring_register_ring_fd(&s->ring);
    r->backend_state = s;
    ops_init(r, s);
    return 0;
}

static void ur_destroy(tw_reactor *r)
{
    struct uring_state *s = ST(r);
    if (!s)
        return;
    drain(r, s);
    io_uring_queue_exit(&s->ring);
    if (s->br)
        munmap((char *)s->br, s->map_len);
    tw_free(s->buf_off);
    tw_free(s->slots);
    tw_free(s->dirty);
    tw_free(s);
    r->backend_state = NULL;
}

/* ---- Readiness */

static int reserve_slot(struct uring_state *s, int fd)
{
    if ((size_t)fd < s->slot_cap)
        return 0;
    size_t cap = s->slot_cap ? s->slot_cap : 64;
    while (cap <= (size_t)fd)
        cap *= 2;
    struct pslot *slots = tw_realloc(s->slots, cap * sizeof *slots);
    if (!slots)
        return TW_ENOMEM;
    s->slots = slots;
    memset(slots + s->slot_cap, 0, (cap - s->slot_cap) * sizeof *slots);
    int *dirty = tw_realloc(s->dirty, cap * sizeof *dirty);
    if (!dirty)
        return TW_ENOMEM; /* slots grown: harmless, retried next time */
    s->dirty = dirty;
    s->slot_cap = cap;
    return 0;
}

static uint64_t poll_tag(int fd, uint32_t gen)
{
    return UD_INTERNAL | (uint64_t)gen << UD_FD_BITS | (uint64_t)(uint32_t)fd;
}

static void mark_dirty(struct uring_state *s, int fd)
{
    struct pslot *sl = &s->slots[fd];
    if (!sl->dirty) {
        sl->dirty = 1;
        s->dirty[s->ndirty++] = fd;
    }
}

static int ur_update(tw_reactor *r, tw_io *io, unsigned events)
{
    struct uring_state *s = ST(r);
    if (events == io->backend)
        return 0;
    if (io->backend == 0 && events != 0) {
        /* A poll request on a bad fd would only fail later: refuse it now. */
        if (fcntl(io->fd, F_GETFD) < 0)
            return -errno;
        int rc = reserve_slot(s, io->fd);
        if (rc < 0)
            return rc;
    }
    io->backend = events;
    if ((size_t)io->fd >= s->slot_cap)
        return 0;
    struct pslot *sl = &s->slots[io->fd];
    if (events == 0 && sl->armed && sl->seq == io->seq) {
        /* The watcher leaves, and its fd is usually closed next: a poll
         * request holds the file open, so the request goes now (with the
         * kernel's task work run, which drops its reference) rather than
         * at the next iteration, which may never come. */
        struct io_uring_sqe *sqe = get_sqe(s);
        if (sqe) {
            io_uring_prep_poll_remove(sqe, poll_tag(io->fd, sl->gen));
            io_uring_sqe_set_data64(sqe, UD_IGNORE);
            sl->armed = 0;
            submit_now(s);
        }
    }
    mark_dirty(s, io->fd);
    return 0;
}

static unsigned poll_mask(unsigned events)
{
    return ((events & TW_IO_READ) ? POLLIN | POLLRDHUP : 0u) |
           ((events & TW_IO_WRITE) ? POLLOUT : 0u);
}

/* Makes the request in flight for each dirty fd match its watcher. */
static void reconcile(tw_reactor *r, struct uring_state *s)
{
    size_t kept = 0; /* fds whose request could not be made: tried again next time */
    for (size_t i = 0; i < s->ndirty; i++) {
        int fd = s->dirty[i];
        struct pslot *sl = &s->slots[fd];
        sl->dirty = 0;
        tw_io *io = tw__reactor_io_for_fd(r, fd);
        unsigned want = io ? io->backend : 0;
        if (sl->armed && (!io || io->seq != sl->seq || sl->armed != want)) {
            struct io_uring_sqe *sqe = get_sqe(s);
            if (!sqe) {
                sl->dirty = 1;
                s->dirty[kept++] = fd;
                continue;
            }
            io_uring_prep_poll_remove(sqe, poll_tag(fd, sl->gen));
            io_uring_sqe_set_data64(sqe, UD_IGNORE);
            sl->armed = 0;
        }
        if (want && !sl->armed) {
            struct io_uring_sqe *sqe = get_sqe(s);
            if (!sqe) {
                sl->dirty = 1;
                s->dirty[kept++] = fd;
                continue;
            }
            sl->gen = ++s->gen;
            sl->seq = io->seq;
            sl->armed = (uint8_t)want;
            io_uring_prep_poll_add(sqe, fd, poll_mask(want));
            io_uring_sqe_set_data64(sqe, poll_tag(fd, sl->gen));
        }
    }
    s->ndirty = kept;
}

/* A poll request completed: it is spent (one-shot), so the fd is re-armed on
 * the next iteration if its watcher still wants events. */
static int poll_done(tw_reactor *r, struct uring_state *s, uint64_t data, int res)
{
    int fd = (int)(data & ((1ull << UD_FD_BITS) - 1));
    uint32_t gen = (uint32_t)(data >> UD_FD_BITS);
    if ((size_t)fd >= s->slot_cap)
        return 0;
    struct pslot *sl = &s->slots[fd];
    if (!sl->armed || sl->gen != gen)
        return 0; /* removed or replaced since */
    sl->armed = 0;
    tw_io *io = tw__reactor_io_for_fd(r, fd);
    if (!io || io->seq != sl->seq)
        return 0;
    if (res < 0) {
        /* The fd was closed under its watcher (EBADF): as with epoll, it just
         * stops reporting; re-arming would only fail again. */
        return 0;
    }
    mark_dirty(s, fd);
    unsigned got = (unsigned)res, ready = 0;
    if (got & (POLLIN | POLLRDHUP | POLLERR | POLLHUP | POLLNVAL))
        ready |= TW_IO_READ;
    if (got & (POLLOUT | POLLERR | POLLHUP | POLLNVAL))
        ready |= TW_IO_WRITE;
    return tw__reactor_dispatch_io(r, io, ready);
}

/* ---- Completions */

static uint64_t target_tag(struct tw__cq_target *t, unsigned op)
{
    return (uint64_t)(uintptr_t)t | (op & 7u);
}

static struct uring_state *OPS_ST(tw_reactor *r)
{
    struct uring_state *s = ST(r);
    return s->dying ? NULL : s;
}

/* An SQE for a request of t's, counted in flight. */
static struct io_uring_sqe *target_sqe(struct uring_state *s, struct tw__cq_target *t, unsigned op)
{
    struct io_uring_sqe *sqe = get_sqe(s);
    if (!sqe)
        return NULL;
    io_uring_sqe_set_data64(sqe, target_tag(t, op));
    s->inflight++;
    return sqe;
}

/* Gives the ring up to n more buffers. */
static void grow_bufs(struct uring_state *s, unsigned n)
{
    if (n > s->nbufs - s->nadded)
        n = s->nbufs - s->nadded;
    for (unsigned i = 0; i < n; i++) {
        unsigned bid = s->nadded + i;
        io_uring_buf_ring_add(s->br, s->bufs + (size_t)bid * s->buf_size, s->buf_size,
                              (unsigned short)bid, io_uring_buf_ring_mask(s->nbufs), (int)i);
    }
    io_uring_buf_ring_advance(s->br, (int)n);
    s->nadded += n;
}

static int setup_bufs(struct uring_state *s, bool inc)
{
    unsigned n = inc ? INC_BUFS : FULL_BUFS, size = inc ? INC_BUF_SIZE : FULL_BUF_SIZE;
    size_t ring_len = (n * sizeof(struct io_uring_buf) + 4095) & ~(size_t)4095;
    size_t len = ring_len + (size_t)n * size;
    /* Shared with the kernel, page-aligned: a mapping of its own rather than
     * the allocator's memory. Pages are touched only as buffers fill. */
    void *map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED)
        return -errno;
    uint32_t *off = tw_calloc(n, sizeof *off);
    if (!off) {
        munmap(map, len);
        return TW_ENOMEM;
    }
    struct io_uring_buf_ring *br = map;
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof reg);
    reg.ring_addr = (uint64_t)(uintptr_t)br;
    reg.ring_entries = n;
    reg.bgid = BGID;
    reg.pad = inc ? IOU_PBUF_RING_INC : 0; /* the flags member in newer headers */
    int rc = io_uring_register_buf_ring(&s->ring, &reg, 0);
    if (rc < 0) {
        tw_free(off);
        munmap(map, len);
        return rc;
    }
    io_uring_buf_ring_init(br);
    s->br = br;
    s->bufs = (char *)map + ring_len;
    s->map_len = len;
    s->nbufs = n;
    s->buf_size = size;
    s->inc = inc;
    s->buf_off = off;
    s->nadded = 0;
    grow_bufs(s, START_BUFS);
    return 0;
}

static int ensure_bufs(struct uring_state *s)
{
    if (s->br)
        return 0;
    if (s->no_bufs)
        return TW_ENOTSUP;
    int rc = setup_bufs(s, true);
    if (rc == -EINVAL)
        rc = setup_bufs(s, false); /* a kernel without incremental consumption */
    if (rc == TW_ENOMEM)
        return rc;
    if (rc < 0) {
        s->no_bufs = true;
        tw_log_info(NS, "io_uring: no provided buffer ring (%s): connections use readiness",
                    tw_strerror(rc));
    }
    return rc;
}

/* The receive that used buffer bid is done with res bytes of it. */
static void buf_done(struct uring_state *s, unsigned bid, int res, unsigned cflags)
{
    if (s->inc && (cflags & IORING_CQE_F_BUF_MORE)) {
        s->buf_off[bid] += (uint32_t)res;
        return;
    }
    s->buf_off[bid] = 0;
    io_uring_buf_ring_add(s->br, s->bufs + (size_t)bid * s->buf_size, s->buf_size,
                          (unsigned short)bid, io_uring_buf_ring_mask(s->nbufs), 0);
    io_uring_buf_ring_advance(s->br, 1);
}

static int cq_recv(tw_reactor *r, struct tw__cq_target *t, unsigned op, int fd)
{
    struct uring_state *s = OPS_ST(r);
    if (!s)
        return TW_ESHUTDOWN;
    int rc = ensure_bufs(s);
    if (rc < 0)
        return rc;
    struct io_uring_sqe *sqe = target_sqe(s, t, op);
    if (!sqe)
        return TW_EBUSY;
    io_uring_prep_recv_multishot(sqe, fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = BGID;
    return 0;
}

static int cq_send(tw_reactor *r, struct tw__cq_target *t, unsigned op, int fd,
                   const struct iovec *iov, int cnt, bool zerocopy)
{
    struct uring_state *s = OPS_ST(r);
    if (!s)
        return TW_ESHUTDOWN;
    if (cnt > SEND_IOVS)
        cnt = SEND_IOVS;
    if (cnt > 1 && (s->nmsgs == ARENA_MSGS || s->niovs + (size_t)cnt > ARENA_IOVS)) {
        io_uring_submit(&s->ring);
        submitted(s);
        if (s->nmsgs == ARENA_MSGS || s->niovs + (size_t)cnt > ARENA_IOVS)
            cnt = 1; /* the kernel has not taken the arena's SQEs yet */
    }
    struct io_uring_sqe *sqe = target_sqe(s, t, op);
    if (!sqe)
        return TW_EBUSY;
    if (cnt == 1) {
        if (zerocopy)
            io_uring_prep_send_zc(sqe, fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL, 0);
        else
            io_uring_prep_send(sqe, fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL);
        return 0;
    }
    struct iovec *v = &s->iovs[s->niovs];
    memcpy(v, iov, (size_t)cnt * sizeof *v);
    s->niovs += (size_t)cnt;
    struct msghdr *m = &s->msgs[s->nmsgs++];
    *m = (struct msghdr){.msg_iov = v, .msg_iovlen = (size_t)cnt};
    if (zerocopy)
        io_uring_prep_sendmsg_zc(sqe, fd, m, MSG_NOSIGNAL);
    else
        io_uring_prep_sendmsg(sqe, fd, m, MSG_NOSIGNAL);
    return 0;
}

/* The SQE of a request of t's (counted in flight), or NULL with *rc:
 * TW_ESHUTDOWN while the reactor is being freed, TW_EBUSY when the ring is
 * full. */
static struct io_uring_sqe *request_sqe(tw_reactor *r, struct tw__cq_target *t, unsigned op,
                                        int *rc)
{
    struct uring_state *s = OPS_ST(r);
    struct io_uring_sqe *sqe = s ? target_sqe(s, t, op) : NULL;
    if (!sqe)
        *rc = s ? TW_EBUSY : TW_ESHUTDOWN;
    return sqe;
}

static int cq_connect(tw_reactor *r, struct tw__cq_target *t, unsigned op, int fd,
                      const struct sockaddr *addr, socklen_t len)
{
    int rc;
    struct io_uring_sqe *sqe = request_sqe(r, t, op, &rc);
    if (!sqe)
        return rc;
    io_uring_prep_connect(sqe, fd, addr, len);
    return 0;
}

static int cq_nop(tw_reactor *r, struct tw__cq_target *t, unsigned op)
{
    int rc;
    struct io_uring_sqe *sqe = request_sqe(r, t, op, &rc);
    if (!sqe)
        return rc;
    io_uring_prep_nop(sqe);
    return 0;
}

/* An SQE for a request whose result nobody needs, or NULL with *rc as in
 * request_sqe. */
static struct io_uring_sqe *ignored_sqe(tw_reactor *r, int *rc)
{
    struct uring_state *s = OPS_ST(r);
    struct io_uring_sqe *sqe = s ? get_sqe(s) : NULL;
    if (sqe)
        io_uring_sqe_set_data64(sqe, UD_IGNORE);
    else
        *rc = s ? TW_EBUSY : TW_ESHUTDOWN;
    return sqe;
}

static int cq_cancel(tw_reactor *r, struct tw__cq_target *t, unsigned op, bool now)
{
    int rc;
    struct io_uring_sqe *sqe = ignored_sqe(r, &rc);
    if (!sqe)
        return rc;
    io_uring_prep_cancel64(sqe, target_tag(t, op), IORING_ASYNC_CANCEL_ALL);
    if (now)
        submit_now(ST(r));
    return 0;
}

static int cq_close(tw_reactor *r, int fd)
{
    int rc;
    struct io_uring_sqe *sqe = ignored_sqe(r, &rc);
    if (!sqe)
        return rc;
    io_uring_prep_close(sqe, fd);
    submit_now(ST(r));
    return 0;
}

static void cq_flush_later(tw_reactor *r, struct tw__cq_target *t)
{
    struct uring_state *s = ST(r);
    t->next = s->flush;
    s->flush = t;
}

static void run_flushes(struct uring_state *s)
{
    while (s->flush) {
        struct tw__cq_target *list = s->flush;
        s->flush = NULL;
        while (list) {
            struct tw__cq_target *t = list;
            list = t->next;
            t->next = NULL;
            /* At free, the owner only lets go (completion.h): no send, no
             * loss reported from inside tw_reactor_free. */
            t->complete(t, TW__CQ_FLUSH, 0, s->dying ? TW__CQ_DYING : 0u, NULL);
        }
    }
}

/* Delivers one completion of a target's request. */
static void target_done(tw_reactor *r, struct uring_state *s, uint64_t data, int res,
                        unsigned cflags)
{
    struct tw__cq_target *t = (struct tw__cq_target *)(uintptr_t)(data & ~7ull);
    unsigned op = (unsigned)(data & 7u), flags = 0;
    bool notif = cflags & IORING_CQE_F_NOTIF;
    if (cflags & IORING_CQE_F_MORE)
        flags |= TW__CQ_MORE;
    else
        s->inflight--;
    if (notif)
        flags |= TW__CQ_NOTIF;
    const char *buf = NULL;
    unsigned bid = 0;
    bool has_buf = (cflags & IORING_CQE_F_BUFFER) && s->br;
    if (has_buf) {
        bid = cflags >> IORING_CQE_BUFFER_SHIFT;
        buf = s->bufs + (size_t)bid * s->buf_size + s->buf_off[bid];
    }
    if (s->dying)
        flags |= TW__CQ_DYING;
    if (res == -ENOBUFS && s->br)
        grow_bufs(s, s->nadded); /* doubles, up to the ring's size */
    r->iter_events++;
    t->complete(t, op, res, flags, res > 0 ? buf : NULL);
    if (has_buf)
        buf_done(s, bid, res, cflags);
}

static void ops_init(tw_reactor *r, struct uring_state *s)
{
    struct io_uring_probe *probe = io_uring_get_probe_ring(&s->ring);
    static const int needed[] = {IORING_OP_RECV,      IORING_OP_SEND,    IORING_OP_SENDMSG,
                                 IORING_OP_ACCEPT,    IORING_OP_CONNECT, IORING_OP_ASYNC_CANCEL,
                                 IORING_OP_CLOSE,     IORING_OP_NOP,     IORING_OP_SEND_ZC,
                                 IORING_OP_SENDMSG_ZC};
    bool ok = probe != NULL;
    for (size_t i = 0; ok && i < sizeof needed / sizeof needed[0]; i++)
        ok = io_uring_opcode_supported(probe, needed[i]);
    if (probe)
        io_uring_free_probe(probe);
    const char *env = getenv("TWINE_IO_URING_COMPLETIONS");
    if (env && strcmp(env, "0") == 0)
        ok = false; /* readiness only: to compare the two paths */
    if (!ok)
        return;
    s->r = r;
    s->ops = (struct tw__cq_ops){
        .recv = cq_recv,
        .send = cq_send,
        .connect = cq_connect,
        .nop = cq_nop,
        .cancel = cq_cancel,
        .close = cq_close,
        .flush_later = cq_flush_later,
        .zerocopy_min = ZC_MIN,
    };
    const char *co = getenv("TWINE_IO_URING_COALESCE_US");
    if (co && *co)
        s->coalesce_ns = (int64_t)strtoll(co, NULL, 10) * 1000;
    const char *zc = getenv("TWINE_IO_URING_ZC_MIN");
    if (zc && *zc) {
        s->ops.zerocopy_min = (size_t)strtoull(zc, NULL, 10);
        s->ops.zerocopy_loopback = true;
    }
    r->cq = &s->ops;
}

/* At free: every request still in flight is cancelled, and its completions
 * delivered (marked TW__CQ_DYING) so that owners let go of what they held. */
static void drain(tw_reactor *r, struct uring_state *s)
{
    s->dying = true;
    run_flushes(s);
    if (s->inflight > 0) {
        struct io_uring_sqe *sqe = get_sqe(s);
        if (sqe) {
            io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
            io_uring_sqe_set_data64(sqe, UD_IGNORE);
        }
    }
    io_uring_submit_and_get_events(&s->ring);
    for (int rounds = 0; rounds < 100 && s->inflight > 0; rounds++) {
        struct io_uring_cqe *cqe;
        struct __kernel_timespec ts = {.tv_sec = 0, .tv_nsec = 10000000};
        int rc = io_uring_wait_cqe_timeout(&s->ring, &cqe, &ts);
        tw__reactor_woke(r);
        if (rc < 0 && rc != -ETIME && rc != -EINTR)
            break;
        while (io_uring_peek_cqe(&s->ring, &cqe) == 0) {
            uint64_t data = cqe->user_data;
            int res = cqe->res;
            unsigned flags = cqe->flags;
            io_uring_cqe_seen(&s->ring, cqe);
            if (data != UD_IGNORE && !(data & UD_INTERNAL))
                target_done(r, s, data, res, flags);
        }
    }
    run_flushes(s); /* any asked for while letting go */
    if (s->inflight > 0)
        tw_log_warn(NS, "io_uring: %zu request(s) still in flight at reactor free", s->inflight);
}

/* ---- Waiting and dispatching */

static int enter(struct uring_state *s, int64_t timeout_ns)
{
    if (timeout_ns == 0)
        return io_uring_submit_and_get_events(&s->ring);
    struct io_uring_cqe *cqe;
    struct __kernel_timespec ts, *tsp = NULL;
    unsigned wait_nr = 1;
    if (s->coalesce_ns > 0 && s->last_batch >= COALESCE_EVENTS) {
        /* Busy: wait for a batch, a little while at most, rather than wake
         * for each completion (the kernel then wakes us once per batch). */
        wait_nr = COALESCE_EVENTS;
        if (timeout_ns < 0 || timeout_ns > s->coalesce_ns)
            timeout_ns = s->coalesce_ns;
    }
    if (timeout_ns > 0) {
        ts.tv_sec = timeout_ns / 1000000000;
        ts.tv_nsec = timeout_ns % 1000000000;
        tsp = &ts;
    }
    return io_uring_submit_and_wait_timeout(&s->ring, &cqe, wait_nr, tsp, NULL);
}

static int ur_poll(tw_reactor *r, int64_t timeout_ns)
{
    struct uring_state *s = ST(r);
    run_flushes(s);
    reconcile(r, s);
    int rc = enter(s, timeout_ns);
    tw__reactor_woke(r); /* before the completions below, and their callbacks */
    submitted(s);
    if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY)
        return rc;
    int dispatched = 0;
    struct io_uring_cqe *batch[CQE_BATCH];
    struct {
        uint64_t data;
        int32_t res;
        uint32_t flags;
    } got[CQE_BATCH];
    /* Copied out and consumed before dispatching: callbacks may submit (a
     * full SQ), which may post completions behind these. One batch per
     * iteration at most, so a flood cannot starve timers. */
    unsigned n = io_uring_peek_batch_cqe(&s->ring, batch, CQE_BATCH);
    for (unsigned i = 0; i < n; i++) {
        got[i].data = batch[i]->user_data;
        got[i].res = batch[i]->res;
        got[i].flags = batch[i]->flags;
    }
    io_uring_cq_advance(&s->ring, n);
    for (unsigned i = 0; i < n; i++) {
        uint64_t data = got[i].data;
        if (data == UD_IGNORE)
            continue;
        if (data & UD_INTERNAL) {
            dispatched += poll_done(r, s, data, got[i].res);
        } else {
            target_done(r, s, data, got[i].res, got[i].flags);
            dispatched++;
        }
    }
    s->last_batch = n;
    return dispatched;
}

static void ur_forget(tw_reactor *r, tw_io *io)
{
    /* The generation check in poll_done already drops events for a watcher
     * that left; its request is removed at the next reconcile. */
    (void)r;
    (void)io;
}

const struct tw__backend tw__backend_uring = {
    .name = "io_uring",
    .init = ur_init,
    .destroy = ur_destroy,
    .update = ur_update,
    .poll = ur_poll,
    .forget = ur_forget,
};

#endif /* TWINE_HAVE_LIBURING */
