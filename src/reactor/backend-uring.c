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
 * sends from the write queue, multishot accepts, connects, no-ops (a wakeup
 * on the next iteration) and closes. user_data is the target's address with
 * the operation in its low three bits; the backend's own requests have bit 63
 * set (polls) or are 0 (cancellations and closes whose results nobody needs).
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
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <twine/alloc.h>
#include <twine/error.h>
#include <twine/log.h>

#include "reactor/reactor-internal.h"

#ifdef TWINE_HAVE_LIBURING
#include <liburing.h>

#define NS         "twine.reactor"
#define SQ_ENTRIES 1024
#define CQ_ENTRIES 8192
#define CQE_BATCH  256

/* user_data of the backend's own requests. */
#define UD_IGNORE   0ull
#define UD_INTERNAL (1ull << 63)
#define UD_FD_BITS  31

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
};

static struct uring_state *ST(tw_reactor *r)
{
    return r->backend_state;
}

/* An SQE, submitting what is queued first if the ring is full. */
static struct io_uring_sqe *get_sqe(struct uring_state *s)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&s->ring);
    if (!sqe) {
        io_uring_submit(&s->ring);
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
    int rc = -EINVAL;
    for (size_t i = 0; i < sizeof tries / sizeof tries[0]; i++) {
        memset(&p, 0, sizeof p);
        p.flags = tries[i] | IORING_SETUP_CQSIZE;
        p.cq_entries = CQ_ENTRIES;
        rc = io_uring_queue_init_params(SQ_ENTRIES, ring, &p);
        if (rc != -EINVAL)
            break;
    }
    if (rc == 0 && !(p.features & IORING_FEAT_EXT_ARG)) {
        io_uring_queue_exit(ring);
        return -ENOSYS;
    }
    return rc;
}

/* ---- Init and destroy */

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
            return TW_ENOMEM;
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
    r->backend_state = s;
    return 0;
}

static void ur_destroy(tw_reactor *r)
{
    struct uring_state *s = ST(r);
    if (!s)
        return;
    io_uring_queue_exit(&s->ring);
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
            io_uring_submit_and_get_events(&s->ring);
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
    for (size_t i = 0; i < s->ndirty; i++) {
        int fd = s->dirty[i];
        struct pslot *sl = &s->slots[fd];
        sl->dirty = 0;
        tw_io *io = tw__reactor_io_for_fd(r, fd);
        unsigned want = io ? io->backend : 0;
        if (sl->armed && (!io || io->seq != sl->seq || sl->armed != want)) {
            struct io_uring_sqe *sqe = get_sqe(s);
            if (!sqe)
                continue; /* cannot happen after a submit; retried when dirty again */
            io_uring_prep_poll_remove(sqe, poll_tag(fd, sl->gen));
            io_uring_sqe_set_data64(sqe, UD_IGNORE);
            sl->armed = 0;
        }
        if (want && !sl->armed) {
            struct io_uring_sqe *sqe = get_sqe(s);
            if (!sqe)
                continue;
            sl->gen = ++s->gen;
            sl->seq = io->seq;
            sl->armed = (uint8_t)want;
            io_uring_prep_poll_add(sqe, fd, poll_mask(want));
            io_uring_sqe_set_data64(sqe, poll_tag(fd, sl->gen));
        }
    }
    s->ndirty = 0;
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

/* ---- Waiting and dispatching */

static int enter(struct uring_state *s, int64_t timeout_ns)
{
    if (timeout_ns == 0)
        return io_uring_submit_and_get_events(&s->ring);
    struct io_uring_cqe *cqe;
    struct __kernel_timespec ts, *tsp = NULL;
    if (timeout_ns > 0) {
        ts.tv_sec = timeout_ns / 1000000000;
        ts.tv_nsec = timeout_ns % 1000000000;
        tsp = &ts;
    }
    return io_uring_submit_and_wait_timeout(&s->ring, &cqe, 1, tsp, NULL);
}

static int ur_poll(tw_reactor *r, int64_t timeout_ns)
{
    struct uring_state *s = ST(r);
    reconcile(r, s);
    int rc = enter(s, timeout_ns);
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
        if (data & UD_INTERNAL)
            dispatched += poll_done(r, s, data, got[i].res);
    }
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
