/* Deferreds across threads: deferToThread and blockingCallFromThread.
 *
 * Deferreds are single-threaded, so every touch of one happens on the
 * reactor's thread; the pool's workers only run the user's function and hand
 * its result back with tw_reactor_call_from_thread. */
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include <twine/alloc.h>
#include <twine/deferred.h>
#include <twine/error.h>
#include <twine/failure.h>
#include <twine/log.h>
#include <twine/thread.h>

#include "reactor/reactor-internal.h"

#define LOG_NS "twine.thread"

/* How long a worker keeps retrying a result delivery that fails for lack of
 * memory before it gives up, logs, and drops the result. Giving up leaves the
 * deferred unfired, so it tries hard. */
#define DELIVERY_RETRY_NS (5 * 1000000000ull)

static void sleep_ns(long ns)
{
    struct timespec ts = {.tv_sec = 0, .tv_nsec = ns};
    nanosleep(&ts, NULL);
}

/* Posts fn(arg) to the reactor, retrying while memory is short.
 * Returns 0 or the error that ended the attempts. */
static int post_to_reactor(tw_reactor *r, tw_call_fn fn, void *arg)
{
    uint64_t start = tw_monotonic_ns();
    long pause = 100000; /* 0.1 ms, doubling to 10 ms */
    for (;;) {
        int rc = tw_reactor_call_from_thread(r, fn, arg);
        if (rc != TW_ENOMEM || tw_monotonic_ns() - start > DELIVERY_RETRY_NS)
            return rc;
        sleep_ns(pause);
        if (pause < 10000000)
            pause *= 2;
    }
}

/* ---- tw_defer_to_thread
 *
 * A job goes QUEUED -> RUNNING when a worker picks it up, or QUEUED ->
 * CANCELLED when its deferred is cancelled first; the compare-and-swap
 * decides which side won. Either way the worker then posts the job back to
 * the reactor thread exactly once, where the deferred is fired (or not) and
 * the job's reference to it dropped. */

enum { JOB_QUEUED, JOB_RUNNING, JOB_CANCELLED };

struct job {
    tw_reactor *r;
    tw_deferred *d; /* the job's own reference; reactor thread only */
    tw_thread_fn fn;
    void *arg;
    atomic_int state;
    bool late_cancel; /* reactor thread only: cancelled while running */
    tw_result result; /* written by the worker before it posts the job */
};

static void job_free(struct job *job)
{
    tw_result_release(&job->result);
    tw_deferred_unref(job->d);
    tw_free(job);
}

/* On the reactor thread. */
static void job_deliver(void *arg)
{
    struct job *job = arg;
    if (atomic_load_explicit(&job->state, memory_order_relaxed) == JOB_RUNNING &&
        !job->late_cancel) {
        tw_result result = job->result;
        job->result = (tw_result){0};
        if (tw_result_is_deferred(result)) {
            tw_result_release(&result);
            result = tw_result_fail(tw_failure_new(
                TW_EINVAL, NULL, "a function run by tw_defer_to_thread returned a deferred"));
        }
        tw_deferred_callback(job->d, result);
    }
    /* Else the deferred has already failed with TW_ECANCELED: what fn
     * returned late is released here, with the job. */
    job_free(job);
}

/* On a worker. */
static void job_run(void *arg)
{
    struct job *job = arg;
    int expected = JOB_QUEUED;
    if (atomic_compare_exchange_strong(&job->state, &expected, JOB_RUNNING))
        job->result = job->fn(job->arg);
    int rc = post_to_reactor(job->r, job_deliver, job);
    if (rc < 0) {
        /* The reactor is being freed: its thread is blocked joining this
         * pool, so dropping the references here cannot race with it. */
        if (rc != TW_ESHUTDOWN)
            tw_log_error(LOG_NS, "could not deliver a tw_defer_to_thread result: %s",
                         tw_strerror(rc));
        job_free(job);
    }
}

/* On the reactor thread, from tw_deferred_cancel. Not firing d makes it fail
 * with TW_ECANCELED. */
static void job_cancel(tw_deferred *d, void *arg)
{
    struct job *job = arg;
    int expected = JOB_QUEUED;
    if (!atomic_compare_exchange_strong(&job->state, &expected, JOB_CANCELLED))
        job->late_cancel = true;
}

tw_deferred *tw_defer_to_thread(tw_reactor *r, tw_thread_fn fn, void *arg)
{
    if (!r || !fn)
        return tw_fail(tw_failure_new(TW_EINVAL, NULL, "tw_defer_to_thread: %s is NULL",
                                      r ? "fn" : "the reactor"));
    if (!tw__reactor_on_owner_thread(r))
        return tw_fail(tw_failure_new(TW_EWRONGTHREAD, NULL,
                                      "tw_defer_to_thread called off the reactor's thread"));
    struct job *job = tw_calloc(1, sizeof *job);
    if (!job)
        return NULL;
    job->r = r;
    job->fn = fn;
    job->arg = arg;
    atomic_init(&job->state, JOB_QUEUED);
    tw_deferred *d = tw_deferred_new(job_cancel, job);
    if (!d) {
        tw_free(job);
        return NULL;
    }
    job->d = tw_deferred_ref(d);

    tw_threadpool *pool = tw_reactor_thread_pool(r);
    int rc = pool ? tw_threadpool_call(pool, job_run, job) : TW_ENOMEM;
    if (rc == 0)
        return d;

    /* fn will not run. */
    tw_deferred_unref(job->d);
    tw_free(job);
    if (rc == TW_ENOMEM) {
        tw_deferred_unref(d);
        return NULL;
    }
    tw_deferred_errback(d, tw_failure_new(rc, NULL, "tw_defer_to_thread: no pool worker"));
    return d;
}

/* ---- tw_blocking_call_from_thread
 *
 * The call lives on the heap with two references, the blocked caller's and
 * the reactor side's: when fn returns a deferred the reactor side outlives
 * the caller (the callback pair's arg_release runs after the caller woke). */

struct bcall {
    pthread_mutex_t lock;
    pthread_cond_t cv;
    atomic_int refs;
    bool done;
    tw_result result;
    tw_thread_fn fn;
    void *arg;
};

static void bcall_unref(void *arg)
{
    struct bcall *bc = arg;
    if (atomic_fetch_sub(&bc->refs, 1) != 1)
        return;
    tw_result_release(&bc->result); /* only if the caller never took it */
    pthread_mutex_destroy(&bc->lock);
    pthread_cond_destroy(&bc->cv);
    tw_free(bc);
}

/* Hands the result to the blocked caller (at most once; a second is released). */
static void bcall_complete(struct bcall *bc, tw_result result)
{
    pthread_mutex_lock(&bc->lock);
    if (bc->done) {
        pthread_mutex_unlock(&bc->lock);
        tw_result_release(&result);
        return;
    }
    bc->result = result;
    bc->done = true;
    pthread_cond_signal(&bc->cv);
    pthread_mutex_unlock(&bc->lock);
}

static tw_result bcall_fired(tw_result result, void *arg)
{
    bcall_complete(arg, result);
    return tw_result_borrowed(NULL);
}

/* The callback pair is done with: if the deferred was released without firing,
 * the caller must not wait forever. */
static void bcall_pair_done(void *arg)
{
    struct bcall *bc = arg;
    pthread_mutex_lock(&bc->lock);
    if (!bc->done) {
        bc->result = tw_result_fail(
            tw_failure_new(TW_ECANCELED, NULL,
                           "the deferred returned to tw_blocking_call_from_thread was "
                           "released without firing"));
        bc->done = true;
        pthread_cond_signal(&bc->cv);
    }
    pthread_mutex_unlock(&bc->lock);
    bcall_unref(bc);
}

/* On the reactor thread. */
static void bcall_run(void *arg)
{
    struct bcall *bc = arg;
    tw_result result = bc->fn(bc->arg);
    if (!tw_result_is_deferred(result)) {
        bcall_complete(bc, result);
        bcall_unref(bc);
        return;
    }
    tw_deferred *d = result.value;
    int rc = tw_deferred_add_callbacks(d, bcall_fired, bcall_fired, bc, bcall_pair_done);
    if (rc < 0) {
        bcall_complete(
            bc, tw_result_fail(tw_failure_new(rc, NULL,
                                              "tw_blocking_call_from_thread: cannot wait for the "
                                              "deferred")));
        bcall_unref(bc);
    }
    /* The chain keeps running without our reference. */
    tw_result_release(&result);
}

tw_result tw_blocking_call_from_thread(tw_reactor *r, tw_thread_fn fn, void *arg)
{
    if (!r || !fn)
        return tw_result_fail(tw_failure_new(
            TW_EINVAL, NULL, "tw_blocking_call_from_thread: %s is NULL", r ? "fn" : "the reactor"));
    if (tw__reactor_on_owner_thread(r))
        return tw_result_fail(tw_failure_new(
            TW_EWRONGTHREAD, NULL,
            "tw_blocking_call_from_thread called on the reactor's thread (it would deadlock)"));
    struct bcall *bc = tw_calloc(1, sizeof *bc);
    if (!bc)
        return tw_result_fail(tw_failure_new(TW_ENOMEM, NULL, NULL));
    int rc = pthread_mutex_init(&bc->lock, NULL);
    if (rc != 0) {
        tw_free(bc);
        return tw_result_fail(tw_failure_new(-rc, NULL, "pthread_mutex_init"));
    }
    rc = pthread_cond_init(&bc->cv, NULL);
    if (rc != 0) {
        pthread_mutex_destroy(&bc->lock);
        tw_free(bc);
        return tw_result_fail(tw_failure_new(-rc, NULL, "pthread_cond_init"));
    }
    atomic_init(&bc->refs, 2);
    bc->fn = fn;
    bc->arg = arg;

    rc = tw_reactor_call_from_thread(r, bcall_run, bc);
    if (rc < 0) {
        atomic_store(&bc->refs, 1);
        bcall_unref(bc);
        return tw_result_fail(tw_failure_new(rc, NULL, "tw_blocking_call_from_thread"));
    }

    pthread_mutex_lock(&bc->lock);
    while (!bc->done)
        pthread_cond_wait(&bc->cv, &bc->lock);
    tw_result result = bc->result;
    bc->result = (tw_result){0};
    pthread_mutex_unlock(&bc->lock);
    bcall_unref(bc);
    return result;
}
