/* Deferreds across threads: deferToThread and blockingCallFromThread.
 *
 * Deferreds are single-threaded, so every touch of one happens on the
 * reactor's thread; the pool's workers only run the user's function and hand
 * its result back with tw_reactor_call_from_thread. */
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <time.h>

#include <twine/alloc.h>
#include <twine/deferred.h>
#include <twine/error.h>
#include <twine/failure.h>
#include <twine/log.h>
#include <twine/thread.h>

#include "reactor/reactor-internal.h"
#include "reactor/threadpool-internal.h"

#define LOG_NS                          "twine.thread"

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* How long a worker keeps retrying a result delivery that fails for lack of
 * memory before it gives up and logs. Giving up leaves the deferred unfired
 * until the reactor is freed, so it tries hard. */
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
 * the job's reference to it dropped. The post is tracked: if the reactor is
 * freed before it runs (or refuses it, being freed), the free delivers the job
 * on the reactor thread instead, so no result is lost or leaked. */

enum { JOB_QUEUED, JOB_RUNNING, JOB_CANCELLED };

struct job {
    tw_reactor *r;
    tw_deferred *d; /* the job's own reference; reactor thread only */
    tw_thread_fn fn;
    void *arg;
    atomic_int state;
    bool late_cancel; /* reactor thread only: cancelled while running */
    tw_result result; /* written by the worker before it posts the job */
    tw__tracked tracked;
};

/* On the reactor thread: fires the deferred (unless it was cancelled) and
 * frees the job. */
static void job_finish(struct job *job)
{
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
    tw_result_release(&job->result);
    tw_deferred_unref(job->d);
    tw_free(job);
}

static void job_deliver(void *arg)
{
    struct job *job = arg;
    tw__tracked_remove(&job->tracked);
    job_finish(job);
}

static void job_swept(tw__tracked *t)
{
    job_finish(container_of(t, struct job, tracked));
}

/* On a worker. */
static void job_run(void *arg)
{
    struct job *job = arg;
    int expected = JOB_QUEUED;
    if (atomic_compare_exchange_strong(&job->state, &expected, JOB_RUNNING))
        job->result = job->fn(job->arg);
    tw_reactor *r = job->r;
    tw__tracked_add(r, &job->tracked, job_swept);
    /* From here the job may be delivered and freed at any moment. */
    int rc = post_to_reactor(r, job_deliver, job);
    if (rc < 0 && rc != TW_ESHUTDOWN)
        tw_log_error(LOG_NS,
                     "could not hand a tw_defer_to_thread result to the reactor (%s): it "
                     "will be delivered when the reactor is freed",
                     tw_strerror(rc));
    /* TW_ESHUTDOWN: the reactor is being freed, and its sweep delivers it. */
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
 * the caller (the callback pair's arg_release runs after the caller woke).
 * While queued, and while waiting for a deferred, the call is tracked, so a
 * reactor freed meanwhile wakes the caller with TW_ESHUTDOWN. */

struct bcall {
    pthread_mutex_t lock;
    pthread_cond_t cv;
    atomic_int refs;
    bool done;
    bool waiting; /* reactor thread only: fn returned a deferred */
    tw_result result;
    tw_thread_fn fn;
    void *arg;
    tw_reactor *r;
    tw__tracked tracked;
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

/* Hands a result to the blocked caller, unless it has one already. If
 * result is NULL, makes a failure with code and message. */
static void bcall_complete(struct bcall *bc, tw_result *result, int code, const char *message)
{
    pthread_mutex_lock(&bc->lock);
    if (!bc->done) {
        bc->result = result ? *result : tw_result_fail(tw_failure_new(code, NULL, "%s", message));
        bc->done = true;
        pthread_cond_signal(&bc->cv);
    } else if (result) {
        tw_result_release(result);
    }
    pthread_mutex_unlock(&bc->lock);
}

static tw_result bcall_fired(tw_result result, void *arg)
{
    struct bcall *bc = arg;
    tw__tracked_remove(&bc->tracked);
    bcall_complete(bc, &result, 0, NULL);
    return tw_result_borrowed(NULL);
}

/* The callback pair is done with: if the deferred was released without firing,
 * the caller must not wait forever. */
static void bcall_pair_done(void *arg)
{
    struct bcall *bc = arg;
    tw__tracked_remove(&bc->tracked);
    bcall_complete(bc, NULL, TW_ECANCELED,
                   "the deferred returned to tw_blocking_call_from_thread was released "
                   "without firing");
    bcall_unref(bc);
}

/* The reactor is being freed: bcall_run will never run, or the deferred it
 * waits on will not fire in this reactor's life. */
static void bcall_swept(tw__tracked *t)
{
    struct bcall *bc = container_of(t, struct bcall, tracked);
    bcall_complete(bc, NULL, TW_ESHUTDOWN,
                   "tw_blocking_call_from_thread: the reactor was freed first");
    if (!bc->waiting)
        bcall_unref(bc); /* the queued call's reference: it is dropped unrun */
}

/* On the reactor thread. */
static void bcall_run(void *arg)
{
    struct bcall *bc = arg;
    tw__tracked_remove(&bc->tracked);
    tw_result result = bc->fn(bc->arg);
    if (!tw_result_is_deferred(result)) {
        bcall_complete(bc, &result, 0, NULL);
        bcall_unref(bc);
        return;
    }
    tw_deferred *d = result.value;
    bc->waiting = true;
    tw__tracked_add(bc->r, &bc->tracked, bcall_swept);
    int rc = tw_deferred_add_callbacks(d, bcall_fired, bcall_fired, bc, bcall_pair_done);
    if (rc < 0) {
        tw__tracked_remove(&bc->tracked);
        bcall_complete(bc, NULL, rc, "tw_blocking_call_from_thread: cannot wait for the deferred");
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
    bc->r = r;

    tw__tracked_add(r, &bc->tracked, bcall_swept);
    rc = tw_reactor_call_from_thread(r, bcall_run, bc);
    /* A sweep that took the entry first has answered the caller already. */
    if (rc < 0 && tw__tracked_remove(&bc->tracked)) {
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
