/* Thread pools (twisted.python.threadpool) and the reactor's own pool.
 *
 * One mutex guards everything: the FIFO work queue, the counters and the
 * list of workers. Workers wait on `work_cv`; stop waits on `done_cv` for the
 * last worker to leave. A worker that exits (idle too long, or beyond
 * max_threads after a shrink) cannot join itself, so it parks its record on
 * `exited` and whoever next calls into the pool joins it; stop joins the rest.
 *
 * When the reactor's pool stops at shutdown, the reactor thread keeps
 * running the reactor's cross-thread calls while it waits for workers: a
 * worker may be blocked in tw_blocking_call_from_thread, and joining it
 * without serving would deadlock. When the reactor is freed, queued calls are
 * dropped instead, so the calls that someone waits on are tracked
 * (tw__tracked_add) and swept: told they will never run.
 *
 * Invariant: while the queue is non-empty at least one worker runs. A call
 * only queues once a worker exists (or was just started); a worker leaves on
 * an idle timeout only with the queue empty, and on a shrink only while more
 * than max_threads (>= 1) remain. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <time.h>

#include <twine/alloc.h>
#include <twine/error.h>
#include <twine/log.h>
#include <twine/thread.h>

#include "reactor/reactor-internal.h"
#include "reactor/threadpool-internal.h"

#define LOG_NS "twine.thread"

struct work {
    struct work *next;
    tw_call_fn fn;
    void *arg;
};

struct worker {
    struct worker *next;
    pthread_t tid;
    tw_threadpool *pool;
};

struct tw_threadpool {
    pthread_mutex_t lock;
    pthread_cond_t work_cv; /* work queued, bounds changed, or stopping */
    pthread_cond_t done_cv; /* the last worker has left */

    struct work *head;
    struct work **tail;
    size_t queued;

    size_t min_threads, max_threads;
    size_t threads;  /* running workers */
    size_t idle;     /* of those, waiting on work_cv */
    size_t starting; /* of those, started but not yet looking for work */
    size_t started;  /* ever */
    uint64_t idle_ns;

    struct worker *exited; /* left, not yet joined */
    bool stopping;
};

/* The pool whose worker this thread is (stop from a worker would deadlock). */
static _Thread_local tw_threadpool *current_pool;

static struct worker *take_exited(tw_threadpool *pool)
{
    struct worker *list = pool->exited;
    pool->exited = NULL;
    return list;
}

/* Joins workers that have left; call without the lock. */
static void join_exited(struct worker *list)
{
    while (list) {
        struct worker *next = list->next;
        pthread_join(list->tid, NULL);
        tw_free(list);
        list = next;
    }
}

static void deadline_after(struct timespec *ts, uint64_t ns)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    uint64_t sum = (uint64_t)ts->tv_nsec + ns % 1000000000u;
    ts->tv_sec += (time_t)(ns / 1000000000u + sum / 1000000000u);
    ts->tv_nsec = (long)(sum % 1000000000u);
}

static void *worker_main(void *arg)
{
    struct worker *self = arg;
    tw_threadpool *pool = self->pool;
    current_pool = pool;

    pthread_mutex_lock(&pool->lock);
    pool->starting--;
    for (;;) {
        /* Wait for work. The idle deadline is fixed when the worker becomes
         * idle, so broadcasts (set_size) do not extend it. */
        bool have_deadline = false;
        struct timespec deadline;
        while (!pool->head) {
            if (pool->stopping || pool->threads > pool->max_threads)
                goto leave;
            int rc;
            pool->idle++;
            if (pool->threads > pool->min_threads) {
                if (!have_deadline) {
                    deadline_after(&deadline, pool->idle_ns);
                    have_deadline = true;
                }
                rc = pthread_cond_timedwait(&pool->work_cv, &pool->lock, &deadline);
            } else {
                have_deadline = false;
                rc = pthread_cond_wait(&pool->work_cv, &pool->lock);
            }
            pool->idle--;
            if (rc == ETIMEDOUT && !pool->head && pool->threads > pool->min_threads)
                goto leave;
        }

        struct work *w = pool->head;
        pool->head = w->next;
        if (!pool->head)
            pool->tail = &pool->head;
        pool->queued--;
        pthread_mutex_unlock(&pool->lock);

        w->fn(w->arg);
        tw_free(w);

        pthread_mutex_lock(&pool->lock);
        if (pool->threads > pool->max_threads)
            goto leave;
    }

leave:
    pool->threads--;
    self->next = pool->exited;
    pool->exited = self;
    if (pool->threads == 0)
        pthread_cond_broadcast(&pool->done_cv);
    /* Nothing of the pool may be touched after this unlock: stop may free it. */
    pthread_mutex_unlock(&pool->lock);
    current_pool = NULL;
    return NULL;
}

/* Starts one worker; lock held. Workers block every signal so that signals
 * reach the reactor's thread. Returns 0, TW_ENOMEM or -errno. */
static int start_worker(tw_threadpool *pool)
{
    struct worker *wk = tw_malloc(sizeof *wk);
    if (!wk)
        return TW_ENOMEM;
    wk->next = NULL;
    wk->pool = pool;

    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&wk->tid, NULL, worker_main, wk);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        tw_free(wk);
        return -rc;
    }
    pool->threads++;
    pool->starting++;
    pool->started++;
    return 0;
}

/* True when `queued` calls would wait for a busy worker: each idle worker,
 * and each one just started, will take one. */
static bool needs_worker(const tw_threadpool *pool, size_t queued)
{
    return queued > pool->idle + pool->starting && pool->threads < pool->max_threads;
}

/* Starts workers for queued calls no idle worker will take, up to max; lock
 * held. Returns 0 or the error of the first start that failed. */
static int grow_for_queue(tw_threadpool *pool)
{
    while (needs_worker(pool, pool->queued)) {
        int rc = start_worker(pool);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int tw_threadpool_new(tw_threadpool **out, size_t min_threads, size_t max_threads)
{
    if (!out || max_threads == 0 || min_threads > max_threads)
        return TW_EINVAL;
    tw_threadpool *pool = tw_calloc(1, sizeof *pool);
    if (!pool)
        return TW_ENOMEM;

    pthread_condattr_t attr;
    int rc = pthread_condattr_init(&attr);
    if (rc != 0)
        goto fail_free;
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    rc = pthread_cond_init(&pool->work_cv, &attr);
    pthread_condattr_destroy(&attr);
    if (rc != 0)
        goto fail_free;
    rc = pthread_condattr_init(&attr);
    if (rc != 0)
        goto fail_work_cv;
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    rc = pthread_cond_init(&pool->done_cv, &attr);
    pthread_condattr_destroy(&attr);
    if (rc != 0)
        goto fail_work_cv;
    rc = pthread_mutex_init(&pool->lock, NULL);
    if (rc != 0)
        goto fail_done_cv;

    pool->tail = &pool->head;
    pool->min_threads = min_threads;
    pool->max_threads = max_threads;
    pool->idle_ns = (uint64_t)(TW__THREADPOOL_IDLE_DEFAULT * 1e9);
    *out = pool;
    return 0;

fail_done_cv:
    pthread_cond_destroy(&pool->done_cv);
fail_work_cv:
    pthread_cond_destroy(&pool->work_cv);
fail_free:
    tw_free(pool);
    return rc == ENOMEM ? TW_ENOMEM : -rc;
}

int tw_threadpool_set_size(tw_threadpool *pool, size_t min_threads, size_t max_threads)
{
    if (!pool || max_threads == 0 || min_threads > max_threads)
        return TW_EINVAL;
    pthread_mutex_lock(&pool->lock);
    pool->min_threads = min_threads;
    pool->max_threads = max_threads;
    int rc = 0;
    if (!pool->stopping) {
        /* Idle workers re-check the bounds: leave if beyond max, start an
         * idle timeout if beyond min. */
        pthread_cond_broadcast(&pool->work_cv);
        rc = grow_for_queue(pool);
        if (rc < 0) {
            /* Work keeps running on the workers there are. */
            tw_log_warn(LOG_NS, "could not start a pool worker: %s", tw_strerror(rc));
            rc = 0;
        }
    }
    struct worker *exited = take_exited(pool);
    pthread_mutex_unlock(&pool->lock);
    join_exited(exited);
    return rc;
}

int tw_threadpool_call(tw_threadpool *pool, tw_call_fn fn, void *arg)
{
    if (!pool || !fn)
        return TW_EINVAL;
    struct work *w = tw_malloc(sizeof *w);
    if (!w)
        return TW_ENOMEM;
    w->next = NULL;
    w->fn = fn;
    w->arg = arg;

    pthread_mutex_lock(&pool->lock);
    if (pool->stopping) {
        pthread_mutex_unlock(&pool->lock);
        tw_free(w);
        return TW_ESHUTDOWN;
    }
    /* Each idle worker will take one queued call; start one more worker if
     * this call would otherwise wait for a busy one. */
    if (needs_worker(pool, pool->queued + 1)) {
        int rc = start_worker(pool);
        if (rc < 0) {
            if (pool->threads == 0) {
                pthread_mutex_unlock(&pool->lock);
                tw_free(w);
                return rc;
            }
            tw_log_warn(LOG_NS, "could not start a pool worker (%zu running): %s", pool->threads,
                        tw_strerror(rc));
        }
    }
    *pool->tail = w;
    pool->tail = &w->next;
    pool->queued++;
    if (pool->idle > 0)
        pthread_cond_signal(&pool->work_cv);
    struct worker *exited = take_exited(pool);
    pthread_mutex_unlock(&pool->lock);
    join_exited(exited);
    return 0;
}

/* Stops the pool; while workers remain, calls serve(arg) (if not NULL) about
 * every millisecond, without the lock. */
static int stop_serving(tw_threadpool *pool, tw_call_fn serve, void *arg)
{
    if (!pool)
        return TW_EINVAL;
    if (current_pool == pool)
        return TW_EWRONGTHREAD;
    pthread_mutex_lock(&pool->lock);
    pool->stopping = true;
    pthread_cond_broadcast(&pool->work_cv);
    while (pool->threads > 0) {
        if (!serve) {
            pthread_cond_wait(&pool->done_cv, &pool->lock);
            continue;
        }
        pthread_mutex_unlock(&pool->lock);
        serve(arg);
        pthread_mutex_lock(&pool->lock);
        if (pool->threads > 0) {
            struct timespec deadline;
            deadline_after(&deadline, 1000000);
            pthread_cond_timedwait(&pool->done_cv, &pool->lock, &deadline);
        }
    }
    struct worker *exited = take_exited(pool);
    pthread_mutex_unlock(&pool->lock);
    join_exited(exited);
    return 0;
}

int tw_threadpool_stop(tw_threadpool *pool)
{
    return stop_serving(pool, NULL, NULL);
}

void tw_threadpool_free(tw_threadpool *pool)
{
    if (!pool)
        return;
    int rc = tw_threadpool_stop(pool);
    if (rc < 0) {
        /* Freeing it under the worker's feet would be worse than the leak. */
        tw_log_error(LOG_NS, "tw_threadpool_free from one of its workers: pool leaked");
        return;
    }
    pthread_mutex_destroy(&pool->lock);
    pthread_cond_destroy(&pool->work_cv);
    pthread_cond_destroy(&pool->done_cv);
    tw_free(pool);
}

/* ---- Internal hooks (threadpool-internal.h) */

int tw__threadpool_set_idle_timeout(tw_threadpool *pool, double seconds)
{
    if (!pool || !(seconds > 0) || !isfinite(seconds) || seconds > 1e9)
        return TW_EINVAL;
    pthread_mutex_lock(&pool->lock);
    pool->idle_ns = (uint64_t)(seconds * 1e9);
    pthread_mutex_unlock(&pool->lock);
    return 0;
}

void tw__threadpool_get_stats(tw_threadpool *pool, tw__threadpool_stats *out)
{
    pthread_mutex_lock(&pool->lock);
    out->threads = pool->threads;
    out->idle = pool->idle;
    out->queued = pool->queued;
    out->started = pool->started;
    pthread_mutex_unlock(&pool->lock);
}

bool tw__threadpool_on_worker(const tw_threadpool *pool)
{
    return pool && current_pool == pool;
}

/* ---- The reactor's pool */

tw_threadpool *tw_reactor_thread_pool(tw_reactor *r)
{
    pthread_mutex_lock(&r->pool_lock);
    if (!r->pool) {
        tw_threadpool *pool;
        if (tw_threadpool_new(&pool, 0, r->pool_max ? r->pool_max : 1) == 0)
            r->pool = pool;
    }
    tw_threadpool *pool = r->pool;
    pthread_mutex_unlock(&r->pool_lock);
    return pool;
}

int tw_reactor_suggest_thread_pool_size(tw_reactor *r, size_t max_threads)
{
    if (max_threads == 0)
        return TW_EINVAL;
    pthread_mutex_lock(&r->pool_lock);
    r->pool_max = max_threads;
    int rc = r->pool ? tw_threadpool_set_size(r->pool, 0, max_threads) : 0;
    pthread_mutex_unlock(&r->pool_lock);
    return rc;
}

/* ---- Tracked calls */

static pthread_mutex_t tracked_lock = PTHREAD_MUTEX_INITIALIZER;
static tw__tracked tracked_head = {&tracked_head, &tracked_head, NULL, NULL};

void tw__tracked_add(tw_reactor *r, tw__tracked *t, void (*swept)(tw__tracked *t))
{
    t->r = r;
    t->swept = swept;
    pthread_mutex_lock(&tracked_lock);
    t->next = &tracked_head;
    t->prev = tracked_head.prev;
    tracked_head.prev->next = t;
    tracked_head.prev = t;
    pthread_mutex_unlock(&tracked_lock);
}

static void tracked_unlink(tw__tracked *t)
{
    t->prev->next = t->next;
    t->next->prev = t->prev;
    t->prev = t->next = NULL;
    t->r = NULL;
}

bool tw__tracked_remove(tw__tracked *t)
{
    pthread_mutex_lock(&tracked_lock);
    bool tracked = t->r != NULL;
    if (tracked)
        tracked_unlink(t);
    pthread_mutex_unlock(&tracked_lock);
    return tracked;
}

/* Calls swept for every entry of r, oldest first. Entries tracked meanwhile
 * (by what the swept functions run) wait for the next sweep. */
static void sweep_tracked(tw_reactor *r)
{
    tw__tracked list = {&list, &list, NULL, NULL};
    pthread_mutex_lock(&tracked_lock);
    for (tw__tracked *t = tracked_head.next, *next; t != &tracked_head; t = next) {
        next = t->next;
        if (t->r != r)
            continue;
        t->prev->next = t->next;
        t->next->prev = t->prev;
        t->next = &list;
        t->prev = list.prev;
        list.prev->next = t;
        list.prev = t;
    }
    pthread_mutex_unlock(&tracked_lock);
    while (list.next != &list) {
        tw__tracked *t = list.next;
        list.next = t->next;
        t->next->prev = &list;
        t->prev = t->next = NULL;
        t->r = NULL;
        t->swept(t); /* may free t */
    }
}

/* ---- Stopping the reactor's pool */

/* The reactor thread, stopping its pool at the end of run: while workers
 * finish, the loop goes on (without blocking) so that a worker waiting on the
 * reactor, even on a deferred that a timer or I/O will fire, gets its answer. */
static void serve_loop(void *arg)
{
    tw_reactor *r = arg;
    if (tw_reactor_iterate(r, 0) == TW_EBUSY)
        tw__wakeup_run(r->wakeup); /* inside a callback: the calls at least */
}

/* The calls the last workers queued as they finished. */
static void serve_calls(tw_reactor *r)
{
    r->dispatch_depth++;
    tw__wakeup_run(r->wakeup);
    r->dispatch_depth--;
}

/* Two callers: the end of tw_reactor_run (the reactor lives on, so it goes
 * on iterating while workers finish), and tw_reactor_free (never while
 * running; the wakeup queue is closed and what it holds will be dropped
 * unrun, so tracked calls are swept instead). */
void tw__reactor_pool_shutdown(tw_reactor *r, bool freeing)
{
    if (freeing)
        sweep_tracked(r);
    /* What the served or swept calls run may make a new pool: stop it too. */
    for (;;) {
        pthread_mutex_lock(&r->pool_lock);
        tw_threadpool *pool = r->pool;
        r->pool = NULL;
        pthread_mutex_unlock(&r->pool_lock);
        if (!pool)
            break;
        /* Outside pool_lock: what runs meanwhile may ask for the pool. */
        if (freeing) {
            stop_serving(pool, NULL, NULL);
            sweep_tracked(r);
        } else {
            stop_serving(pool, serve_loop, r);
            serve_calls(r);
        }
        tw_threadpool_free(pool);
    }
}
