/* tw_reactor_call_from_thread: a lock-free queue of calls and an eventfd.
 *
 * Sending (any thread):
 *   1. take a node from the reactor's pool (a lock-free free list; a node is
 *      malloc'd only when the pool is empty),
 *   2. push it onto a Treiber stack (one CAS),
 *   3. if `wake_pending` reads 0, set it and write the eventfd.
 * The loop clears `wake_pending` before it takes the queue, so at most one
 * eventfd write happens per batch of calls the loop takes: calls sent while
 * the loop is busy cost no syscall at all.
 *
 * Receiving (the loop): clear wake_pending, take the whole stack with one
 * exchange, reverse it (so calls run in the order pushed, which keeps every
 * sender's own order), run, and give the nodes back to the pool.
 *
 * The free list is indexed, not linked by pointer: its head packs a node
 * index with a counter that changes on every update, so a sender that was
 * preempted between reading the head and its CAS cannot succeed on a stale
 * head (the ABA problem of lock-free stacks with several poppers). Pool
 * nodes live in chunks that are only added, never freed before the reactor,
 * so a stale index always points at valid memory. */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/eventfd.h>
#endif

#include <twine/alloc.h>
#include <twine/error.h>
#include <twine/log.h>

#include "reactor/reactor-internal.h"

/* The pool grows (on the loop thread) to cover what senders had to allocate,
 * up to MAX_CHUNKS * CHUNK_NODES nodes (2 MiB), and keeps its high-water mark:
 * a burst allocates once, and the next burst of that size allocates nothing. */
#define CHUNK_NODES 256
#define MAX_CHUNKS  256
#define NOT_POOLED  UINT32_MAX

struct call_node {
    tw_call_fn fn;
    void *arg;
    struct call_node *next;     /* in the call stack */
    _Atomic uint32_t free_next; /* in the free list: index + 1, or 0 */
    uint32_t index;             /* pool index, or NOT_POOLED */
};

struct tw__wakeup {
    _Atomic(struct call_node *) calls; /* Treiber stack, newest first */
    atomic_int wake_pending;
    atomic_bool closed;
    _Atomic uint64_t free_head; /* counter << 32 | (index + 1) */
    _Atomic(struct call_node *) chunks[MAX_CHUNKS];
    unsigned nchunks; /* loop thread only */
    int fds[2];
    tw_io io;
    tw_reactor *r;
};

/* ---- The wake fd */

int tw__wakefd_open(int fds[2])
{
#ifdef __linux__
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0)
        return -errno;
    fds[0] = fds[1] = fd;
    return 0;
#else
    if (pipe(fds) < 0)
        return -errno;
    for (int i = 0; i < 2; i++) {
        fcntl(fds[i], F_SETFD, FD_CLOEXEC);
        fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
    }
    return 0;
#endif
}

void tw__wakefd_close(int fds[2])
{
    if (fds[0] >= 0)
        close(fds[0]);
    if (fds[1] >= 0 && fds[1] != fds[0])
        close(fds[1]);
    fds[0] = fds[1] = -1;
}

void tw__wakefd_write(int wfd)
{
    int saved = errno;
    uint64_t one = 1;
    ssize_t n;
    do {
        n = write(wfd, &one, sizeof one);
    } while (n < 0 && errno == EINTR);
    /* EAGAIN: the counter (or pipe) is full, so the reader wakes anyway. */
    errno = saved;
}

void tw__wakefd_drain(int rfd)
{
    uint64_t buf[16];
    for (;;) {
        ssize_t n = read(rfd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
#ifdef __linux__
        break; /* one read empties an eventfd */
#else
        if (n <= 0)
            break;
#endif
    }
}

/* ---- The node pool */

static struct call_node *node_at(struct tw__wakeup *w, uint32_t index)
{
    struct call_node *chunk =
        atomic_load_explicit(&w->chunks[index / CHUNK_NODES], memory_order_acquire);
    return &chunk[index % CHUNK_NODES];
}

/* Pushes the chain first..last (linked by free_next) onto the free list. */
static void free_list_push(struct tw__wakeup *w, struct call_node *first, struct call_node *last)
{
    uint64_t head = atomic_load_explicit(&w->free_head, memory_order_relaxed);
    uint64_t next;
    do {
        atomic_store_explicit(&last->free_next, (uint32_t)head, memory_order_relaxed);
        next = ((head >> 32) + 1) << 32 | (uint64_t)(first->index + 1);
    } while (!atomic_compare_exchange_weak_explicit(&w->free_head, &head, next,
                                                    memory_order_release, memory_order_relaxed));
}

static struct call_node *free_list_pop(struct tw__wakeup *w)
{
    uint64_t head = atomic_load_explicit(&w->free_head, memory_order_acquire);
    for (;;) {
        uint32_t top = (uint32_t)head;
        if (top == 0)
            return NULL;
        struct call_node *n = node_at(w, top - 1);
        /* May read a node another sender just took: then the CAS fails. */
        uint32_t below = atomic_load_explicit(&n->free_next, memory_order_relaxed);
        uint64_t next = ((head >> 32) + 1) << 32 | below;
        if (atomic_compare_exchange_weak_explicit(&w->free_head, &head, next, memory_order_acquire,
                                                  memory_order_acquire))
            return n;
    }
}

/* Loop thread (or init): adds a chunk of nodes to the pool. */
static int add_chunk(struct tw__wakeup *w)
{
    if (w->nchunks == MAX_CHUNKS)
        return TW_ENOMEM;
    struct call_node *chunk = tw_malloc(CHUNK_NODES * sizeof *chunk);
    if (!chunk)
        return TW_ENOMEM;
    uint32_t base = w->nchunks * CHUNK_NODES;
    for (uint32_t i = 0; i < CHUNK_NODES; i++) {
        chunk[i].index = base + i;
        atomic_init(&chunk[i].free_next, i + 1 < CHUNK_NODES ? base + i + 2 : 0);
    }
    atomic_store_explicit(&w->chunks[w->nchunks], chunk, memory_order_release);
    w->nchunks++;
    free_list_push(w, &chunk[0], &chunk[CHUNK_NODES - 1]);
    return 0;
}

/* ---- Sending */

int tw_reactor_call_from_thread(tw_reactor *r, tw_call_fn fn, void *arg)
{
    if (!fn)
        return TW_EINVAL;
    struct tw__wakeup *w = r->wakeup;
    if (atomic_load_explicit(&w->closed, memory_order_acquire))
        return TW_ESHUTDOWN;
    struct call_node *n = free_list_pop(w);
    if (!n) {
        n = tw_malloc(sizeof *n);
        if (!n)
            return TW_ENOMEM;
        n->index = NOT_POOLED;
    }
    n->fn = fn;
    n->arg = arg;
    struct call_node *top = atomic_load_explicit(&w->calls, memory_order_relaxed);
    do {
        n->next = top;
    } while (!atomic_compare_exchange_weak_explicit(&w->calls, &top, n, memory_order_seq_cst,
                                                    memory_order_relaxed));
    /* Seq-cst against the loop's clear-then-take (see tw__wakeup_run): if we
     * read 1 here, the loop has not cleared it yet and will see our node. */
    if (atomic_load(&w->wake_pending) == 0 && atomic_exchange(&w->wake_pending, 1) == 0)
        tw__wakefd_write(w->fds[1]);
    return 0;
}

void tw__wakeup_poke(struct tw__wakeup *w)
{
    tw__wakefd_write(w->fds[1]);
}

/* ---- Receiving */

static void on_wakeup(tw_io *io, unsigned events)
{
    struct tw__wakeup *w = io->data;
    (void)events;
    tw__wakefd_drain(w->fds[0]);
}

int tw__wakeup_init(tw_reactor *r, struct tw__wakeup **out)
{
    struct tw__wakeup *w = tw_malloc(sizeof *w);
    if (!w)
        return TW_ENOMEM;
    atomic_init(&w->calls, NULL);
    atomic_init(&w->wake_pending, 0);
    atomic_init(&w->closed, false);
    atomic_init(&w->free_head, 0);
    for (int i = 0; i < MAX_CHUNKS; i++)
        atomic_init(&w->chunks[i], NULL);
    w->nchunks = 0;
    w->r = r;
    int rc = add_chunk(w);
    if (rc < 0) {
        tw_free(w);
        return rc;
    }
    rc = tw__wakefd_open(w->fds);
    if (rc < 0)
        goto fail;
    tw_io_init(&w->io, w->fds[0], on_wakeup, w);
    rc = tw__reactor_watch_internal(r, &w->io, TW_IO_READ);
    if (rc < 0) {
        tw__wakefd_close(w->fds);
        goto fail;
    }
    *out = w;
    return 0;
fail:
    tw_free(atomic_load(&w->chunks[0]));
    tw_free(w);
    return rc;
}

static void recycle(struct tw__wakeup *w, struct call_node *first, struct call_node *last)
{
    if (first)
        free_list_push(w, first, last);
}

size_t tw__wakeup_run(struct tw__wakeup *w)
{
    /* Cleared whenever set, even with nothing queued: a sender may have set it
     * just after the previous take, with its call taken already; left set, it
     * would keep every later sender from waking the loop. (Reading 0 here while
     * a sender is setting it is fine: that sender writes the eventfd, and the
     * next iteration clears it.) Only written when set, so an idle flag stays
     * shared in the senders' caches. */
    if (atomic_load(&w->wake_pending))
        atomic_store(&w->wake_pending, 0);
    if (!atomic_load(&w->calls))
        return 0;
    struct call_node *n = atomic_exchange(&w->calls, NULL);

    struct call_node *fifo = NULL;
    while (n) {
        struct call_node *next = n->next;
        n->next = fifo;
        fifo = n;
        n = next;
    }

    /* Give pool nodes back in one push per batch; free the others, and grow
     * the pool when senders had to allocate. */
    struct call_node *pool_first = NULL, *pool_last = NULL;
    size_t ran = 0, allocated = 0;
    for (n = fifo; n;) {
        struct call_node *next = n->next;
        tw_call_fn fn = n->fn;
        void *arg = n->arg;
        if (n->index == NOT_POOLED) {
            tw_free(n);
            allocated++;
        } else {
            atomic_store_explicit(&n->free_next, pool_first ? pool_first->index + 1 : 0,
                                  memory_order_relaxed);
            if (!pool_first)
                pool_last = n;
            pool_first = n;
        }
        fn(arg);
        ran++;
        n = next;
    }
    recycle(w, pool_first, pool_last);
    for (size_t grow = (allocated + CHUNK_NODES - 1) / CHUNK_NODES; grow > 0; grow--) {
        if (add_chunk(w) < 0)
            break; /* at the cap, or out of memory: senders go on allocating */
    }
    return ran;
}

bool tw__wakeup_has_calls(struct tw__wakeup *w)
{
    return atomic_load_explicit(&w->calls, memory_order_relaxed) != NULL;
}

size_t tw__wakeup_pending(struct tw__wakeup *w)
{
    size_t count = 0;
    for (struct call_node *n = atomic_load_explicit(&w->calls, memory_order_acquire); n;
         n = n->next)
        count++;
    return count;
}

void tw__wakeup_close(struct tw__wakeup *w)
{
    if (w)
        atomic_store(&w->closed, true);
}

void tw__wakeup_destroy(tw_reactor *r, struct tw__wakeup *w)
{
    if (!w)
        return;
    atomic_store(&w->closed, true);
    struct call_node *n = atomic_exchange(&w->calls, NULL);
    while (n) {
        struct call_node *next = n->next;
        if (n->index == NOT_POOLED)
            tw_free(n);
        n = next;
    }
    tw__reactor_watch_internal(r, &w->io, 0);
    tw__wakefd_close(w->fds);
    for (unsigned i = 0; i < w->nchunks; i++)
        tw_free(atomic_load(&w->chunks[i]));
    tw_free(w);
}
