/* tw_threadpool on its own, without a reactor. */
#include "twtest-gate.h"
#include "twtest.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <twine/thread.h>

#include "reactor/threadpool-internal.h"

/* ---- Helpers */

/* Polls the pool's stats until threads == want (5 s bound). */
static bool await_threads(tw_threadpool *pool, size_t want)
{
    tw__threadpool_stats st;
    for (int i = 0; i < 5000; i++) {
        tw__threadpool_get_stats(pool, &st);
        if (st.threads == want)
            return true;
        sleep_ms(1);
    }
    return false;
}

static atomic_int counter;

static void count_job(void *arg)
{
    atomic_fetch_add(&counter, 1);
}

/* ---- Argument checks */

TW_TEST(threadpool, rejects_bad_bounds)
{
    tw_threadpool *pool = NULL;
    cr_assert_eq(tw_threadpool_new(&pool, 0, 0), TW_EINVAL);
    cr_assert_eq(tw_threadpool_new(&pool, 3, 2), TW_EINVAL);
    cr_assert_null(pool);
    cr_assert_eq(tw_threadpool_new(&pool, 2, 2), 0);
    cr_assert_eq(tw_threadpool_set_size(pool, 0, 0), TW_EINVAL);
    cr_assert_eq(tw_threadpool_set_size(pool, 5, 4), TW_EINVAL);
    cr_assert_eq(tw_threadpool_call(pool, NULL, NULL), TW_EINVAL);
    tw__threadpool_stats st;
    tw__threadpool_get_stats(pool, &st);
    cr_assert_eq(st.started, 0, "a worker started with no work");
    tw_threadpool_free(pool);
}

/* ---- Running work */

/* Rendezvous: each job waits until `want` jobs run at once (or gives up). */
typedef struct rendezvous {
    pthread_mutex_t lock;
    pthread_cond_t cv;
    int arrived, want, met;
    pthread_t tids[16];
} rendezvous;

static void rendezvous_job(void *arg)
{
    rendezvous *rv = arg;
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 5;
    pthread_mutex_lock(&rv->lock);
    rv->tids[rv->arrived++] = pthread_self();
    pthread_cond_broadcast(&rv->cv);
    int rc = 0;
    while (rv->arrived < rv->want && rc == 0)
        rc = pthread_cond_timedwait(&rv->cv, &rv->lock, &deadline);
    if (rv->arrived >= rv->want)
        rv->met++;
    pthread_mutex_unlock(&rv->lock);
}

TW_TEST(threadpool, runs_jobs_on_several_threads)
{
    tw_threadpool *pool;
    cr_assert_eq(tw_threadpool_new(&pool, 0, 4), 0);
    rendezvous rv = {.lock = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .want = 4};
    for (int i = 0; i < 4; i++)
        cr_assert_eq(tw_threadpool_call(pool, rendezvous_job, &rv), 0);
    atomic_store(&counter, 0);
    for (int i = 0; i < 100; i++)
        cr_assert_eq(tw_threadpool_call(pool, count_job, NULL), 0);
    cr_assert_eq(tw_threadpool_stop(pool), 0);

    /* Four jobs met only if four workers ran them at once. */
    cr_assert_eq(rv.met, 4, "only %d of 4 jobs saw the others running", rv.met);
    for (int i = 0; i < 4; i++) {
        cr_assert(!pthread_equal(rv.tids[i], pthread_self()));
        for (int j = 0; j < i; j++)
            cr_assert(!pthread_equal(rv.tids[i], rv.tids[j]), "jobs %d and %d shared a thread", i,
                      j);
    }
    cr_assert_eq(atomic_load(&counter), 100);
    tw__threadpool_stats st;
    tw__threadpool_get_stats(pool, &st);
    cr_assert_eq(st.threads, 0);
    cr_assert_eq(st.started, 4, "started %zu workers, max is 4", st.started);
    tw_threadpool_free(pool);
}

static int order[200];
static int order_len;

static void record_order(void *arg)
{
    order[order_len++] = (int)(intptr_t)arg; /* one worker: no race */
}

TW_TEST(threadpool, one_thread_runs_in_fifo_order)
{
    tw_threadpool *pool;
    cr_assert_eq(tw_threadpool_new(&pool, 0, 1), 0);
    gate g;
    gate_init(&g);
    cr_assert_eq(tw_threadpool_call(pool, gate_job, &g), 0);
    cr_assert(gate_await_waiting(&g, 1));
    order_len = 0;
    for (intptr_t i = 0; i < 200; i++)
        cr_assert_eq(tw_threadpool_call(pool, record_order, (void *)i), 0);
    tw__threadpool_stats st;
    tw__threadpool_get_stats(pool, &st);
    cr_assert_eq(st.queued, 200);
    cr_assert_eq(st.threads, 1);
    gate_open(&g);
    cr_assert_eq(tw_threadpool_stop(pool), 0);
    cr_assert_eq(order_len, 200);
    for (int i = 0; i < 200; i++)
        cr_assert_eq(order[i], i, "position %d ran job %d", i, order[i]);
    tw_threadpool_free(pool);
    gate_destroy(&g);
}

TW_TEST(threadpool, set_size_grows_and_shrinks)
{
    tw_threadpool *pool;
    cr_assert_eq(tw_threadpool_new(&pool, 0, 1), 0);
    gate g;
    gate_init(&g);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(tw_threadpool_call(pool, gate_job, &g), 0);
    cr_assert(gate_await_waiting(&g, 1));
    sleep_ms(20);
    tw__threadpool_stats st;
    tw__threadpool_get_stats(pool, &st);
    cr_assert_eq(st.threads, 1);
    cr_assert_eq(st.queued, 2);
    cr_assert_eq(g.waiting, 1, "max 1 but %d jobs ran at once", g.waiting);

    /* Growing starts workers for the queued jobs at once. */
    cr_assert_eq(tw_threadpool_set_size(pool, 0, 3), 0);
    cr_assert(gate_await_waiting(&g, 3), "growing did not run the queued jobs");
    tw__threadpool_get_stats(pool, &st);
    cr_assert_eq(st.threads, 3);

    /* Shrinking: workers beyond the new max leave as they finish. */
    cr_assert_eq(tw_threadpool_set_size(pool, 0, 1), 0);
    gate_open(&g);
    cr_assert(await_threads(pool, 1), "pool did not shrink to 1");
    atomic_store(&counter, 0);
    for (int i = 0; i < 10; i++)
        cr_assert_eq(tw_threadpool_call(pool, count_job, NULL), 0);
    cr_assert_eq(tw_threadpool_stop(pool), 0);
    cr_assert_eq(atomic_load(&counter), 10);
    tw__threadpool_get_stats(pool, &st);
    cr_assert_eq(st.started, 3, "a shrunk pool started %zu workers", st.started);
    tw_threadpool_free(pool);
    gate_destroy(&g);
}

static void slow_count_job(void *arg)
{
    sleep_ms(1);
    atomic_fetch_add(&counter, 1);
}

TW_TEST(threadpool, stop_runs_queued_work_then_joins)
{
    tw_threadpool *pool;
    cr_assert_eq(tw_threadpool_new(&pool, 0, 2), 0);
    atomic_store(&counter, 0);
    for (int i = 0; i < 100; i++)
        cr_assert_eq(tw_threadpool_call(pool, slow_count_job, NULL), 0);
    cr_assert_lt(atomic_load(&counter), 100, "work finished before stop: test proves nothing");
    cr_assert_eq(tw_threadpool_stop(pool), 0);
    cr_assert_eq(atomic_load(&counter), 100);
    tw__threadpool_stats st;
    tw__threadpool_get_stats(pool, &st);
    cr_assert_eq(st.threads, 0);
    cr_assert_eq(st.queued, 0);
    tw_threadpool_free(pool);
}

TW_TEST(threadpool, calls_after_stop_are_refused)
{
    tw_threadpool *pool;
    cr_assert_eq(tw_threadpool_new(&pool, 0, 2), 0);
    atomic_store(&counter, 0);
    cr_assert_eq(tw_threadpool_call(pool, count_job, NULL), 0);
    cr_assert_eq(tw_threadpool_stop(pool), 0);
    cr_assert_eq(tw_threadpool_call(pool, count_job, NULL), TW_ESHUTDOWN);
    cr_assert_eq(tw_threadpool_stop(pool), 0, "stopping twice");
    cr_assert_eq(tw_threadpool_call(pool, count_job, NULL), TW_ESHUTDOWN);
    sleep_ms(10);
    cr_assert_eq(atomic_load(&counter), 1);
    tw_threadpool_free(pool);
}

TW_TEST(threadpool, free_without_stop_drains)
{
    tw_threadpool *pool;
    cr_assert_eq(tw_threadpool_new(&pool, 1, 3), 0);
    atomic_store(&counter, 0);
    for (int i = 0; i < 20; i++)
        cr_assert_eq(tw_threadpool_call(pool, slow_count_job, NULL), 0);
    tw_threadpool_free(pool);
    cr_assert_eq(atomic_load(&counter), 20);
}

typedef struct from_worker {
    tw_threadpool *pool;
    int stop_rc;
    int call_rc;
    bool on_worker;
    atomic_bool done;
} from_worker;

static void stop_from_worker_job(void *arg)
{
    from_worker *fw = arg;
    fw->on_worker = tw__threadpool_on_worker(fw->pool);
    fw->stop_rc = tw_threadpool_stop(fw->pool);
    /* Queuing from a worker is fine (the pool is not stopping). */
    fw->call_rc = tw_threadpool_call(fw->pool, count_job, NULL);
    atomic_store(&fw->done, true);
}

TW_TEST(threadpool, stop_from_a_worker_is_refused)
{
    from_worker fw = {0};
    cr_assert_eq(tw_threadpool_new(&fw.pool, 0, 1), 0);
    cr_assert_not(tw__threadpool_on_worker(fw.pool));
    atomic_store(&counter, 0);
    cr_assert_eq(tw_threadpool_call(fw.pool, stop_from_worker_job, &fw), 0);
    for (int i = 0; i < 5000 && !atomic_load(&fw.done); i++)
        sleep_ms(1);
    cr_assert(atomic_load(&fw.done));
    cr_assert_eq(tw_threadpool_stop(fw.pool), 0);
    cr_assert(fw.on_worker);
    cr_assert_eq(fw.stop_rc, TW_EWRONGTHREAD);
    cr_assert_eq(fw.call_rc, 0);
    cr_assert_eq(atomic_load(&counter), 1, "the job queued by a worker did not run");
    tw_threadpool_free(fw.pool);
}

TW_TEST(threadpool, idle_workers_beyond_min_exit)
{
    tw_threadpool *pool;
    cr_assert_eq(tw_threadpool_new(&pool, 1, 4), 0);
    cr_assert_eq(tw__threadpool_set_idle_timeout(pool, 0), TW_EINVAL);
    cr_assert_eq(tw__threadpool_set_idle_timeout(pool, 0.05), 0);
    rendezvous rv = {.lock = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .want = 4};
    for (int i = 0; i < 4; i++)
        cr_assert_eq(tw_threadpool_call(pool, rendezvous_job, &rv), 0);
    cr_assert(await_threads(pool, 1), "idle workers did not exit down to min");
    cr_assert_eq(rv.met, 4);
    /* The one kept (min) stays, idle, well past the timeout. */
    sleep_ms(150);
    tw__threadpool_stats st;
    tw__threadpool_get_stats(pool, &st);
    cr_assert_eq(st.threads, 1);
    cr_assert_eq(st.idle, 1);
    /* It takes the next job without a new worker starting. */
    atomic_store(&counter, 0);
    cr_assert_eq(tw_threadpool_call(pool, count_job, NULL), 0);
    cr_assert_eq(tw_threadpool_stop(pool), 0);
    cr_assert_eq(atomic_load(&counter), 1);
    tw__threadpool_get_stats(pool, &st);
    cr_assert_eq(st.started, 4);
    tw_threadpool_free(pool);
}

TW_TEST(threadpool, lowering_min_lets_idle_workers_exit)
{
    tw_threadpool *pool;
    cr_assert_eq(tw_threadpool_new(&pool, 2, 2), 0);
    cr_assert_eq(tw__threadpool_set_idle_timeout(pool, 0.05), 0);
    rendezvous rv = {.lock = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .want = 2};
    for (int i = 0; i < 2; i++)
        cr_assert_eq(tw_threadpool_call(pool, rendezvous_job, &rv), 0);
    sleep_ms(150);
    cr_assert_eq(rv.met, 2);
    tw__threadpool_stats st;
    tw__threadpool_get_stats(pool, &st);
    cr_assert_eq(st.threads, 2, "workers within min exited");
    cr_assert_eq(st.idle, 2);
    cr_assert_eq(tw_threadpool_set_size(pool, 0, 2), 0);
    cr_assert(await_threads(pool, 0), "idle workers stayed after min dropped to 0");
    /* With no worker left, a call starts one again. */
    atomic_store(&counter, 0);
    cr_assert_eq(tw_threadpool_call(pool, count_job, NULL), 0);
    cr_assert_eq(tw_threadpool_stop(pool), 0);
    cr_assert_eq(atomic_load(&counter), 1);
    tw__threadpool_get_stats(pool, &st);
    cr_assert_eq(st.started, 3);
    tw_threadpool_free(pool);
}

static void check_mask_job(void *arg)
{
    sigset_t set;
    pthread_sigmask(SIG_BLOCK, NULL, &set);
    *(int *)arg = sigismember(&set, SIGINT) + sigismember(&set, SIGTERM) +
                  sigismember(&set, SIGCHLD) + sigismember(&set, SIGUSR1);
}

TW_TEST(threadpool, workers_block_signals)
{
    tw_threadpool *pool;
    cr_assert_eq(tw_threadpool_new(&pool, 0, 1), 0);
    int blocked = -1;
    cr_assert_eq(tw_threadpool_call(pool, check_mask_job, &blocked), 0);
    tw_threadpool_free(pool);
    cr_assert_eq(blocked, 4);
    /* The caller's own mask is left as it was. */
    sigset_t set;
    pthread_sigmask(SIG_BLOCK, NULL, &set);
    cr_assert_not(sigismember(&set, SIGINT));
}

/* Many threads queue at once while workers come and go. */
static tw_threadpool *shared_pool;

static void *spammer(void *arg)
{
    for (int i = 0; i < 500; i++)
        if (tw_threadpool_call(shared_pool, count_job, NULL) != 0)
            return (void *)1;
    return NULL;
}

TW_TEST(threadpool, concurrent_callers)
{
    cr_assert_eq(tw_threadpool_new(&shared_pool, 0, 3), 0);
    cr_assert_eq(tw__threadpool_set_idle_timeout(shared_pool, 0.001), 0);
    atomic_store(&counter, 0);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, spammer, NULL), 0);
    for (int i = 0; i < 4; i++) {
        void *res;
        pthread_join(t[i], &res);
        cr_assert_null(res);
    }
    cr_assert_eq(tw_threadpool_stop(shared_pool), 0);
    cr_assert_eq(atomic_load(&counter), 2000);
    tw_threadpool_free(shared_pool);
}

/* ---- Allocation failure */

TW_TEST(threadpool, new_survives_allocation_failure)
{
    tw_threadpool *pool = NULL;
    int rc;
    long n = 0;
    for (;; n++) {
        tw_testing_fail_alloc_after(n);
        rc = tw_threadpool_new(&pool, 0, 2);
        tw_testing_fail_alloc_off();
        if (rc == 0)
            break;
        cr_assert_eq(rc, TW_ENOMEM, "n=%ld: %s", n, tw_strerror(rc));
    }
    cr_assert_gt(n, 0, "new never allocated");
    tw_threadpool_free(pool);
}

TW_TEST(threadpool, call_survives_allocation_failure)
{
    tw_threadpool *pool;
    cr_assert_eq(tw_threadpool_new(&pool, 0, 1), 0);
    atomic_store(&counter, 0);
    int rc;
    long n = 0;
    for (;; n++) {
        tw_testing_fail_alloc_after(n);
        rc = tw_threadpool_call(pool, count_job, NULL);
        tw_testing_fail_alloc_off();
        if (rc == 0)
            break;
        cr_assert_eq(rc, TW_ENOMEM, "n=%ld: %s", n, tw_strerror(rc));
        tw__threadpool_stats st;
        tw__threadpool_get_stats(pool, &st);
        cr_assert_eq(st.threads, 0, "n=%ld: failed call left a worker", n);
        cr_assert_eq(st.queued, 0, "n=%ld: failed call left work queued", n);
    }
    cr_assert_eq(n, 2, "the first call allocates the work node and the worker: %ld", n);
    cr_assert_eq(tw_threadpool_stop(pool), 0);
    cr_assert_eq(atomic_load(&counter), 1, "a failed call ran, or the good one did not");
    tw_threadpool_free(pool);
}

TW_TEST(threadpool, worker_allocation_failure_with_workers_running)
{
    /* With a worker running, failing to start another still queues the job. */
    tw_threadpool *pool;
    cr_assert_eq(tw_threadpool_new(&pool, 0, 2), 0);
    gate g;
    gate_init(&g);
    cr_assert_eq(tw_threadpool_call(pool, gate_job, &g), 0);
    cr_assert(gate_await_waiting(&g, 1));
    atomic_store(&counter, 0);
    tw_testing_log_capture_start();
    tw_testing_fail_alloc_after(1); /* the node succeeds, the worker fails */
    int rc = tw_threadpool_call(pool, count_job, NULL);
    tw_testing_fail_alloc_off();
    size_t logged = tw_testing_log_count("could not start a pool worker");
    tw_testing_log_capture_stop();
    cr_assert_eq(rc, 0);
    cr_assert_eq(logged, 1);
    tw__threadpool_stats st;
    tw__threadpool_get_stats(pool, &st);
    cr_assert_eq(st.threads, 1);
    cr_assert_eq(st.queued, 1);
    gate_open(&g);
    cr_assert_eq(tw_threadpool_stop(pool), 0);
    cr_assert_eq(atomic_load(&counter), 1);
    tw_threadpool_free(pool);
    gate_destroy(&g);
}

/* ---- Failing to start a thread */

/* Makes every new thread ask for an impossible stack, so pthread_create fails. */
static pthread_attr_t saved_default;

static void threads_fail(void)
{
    cr_assert_eq(pthread_getattr_default_np(&saved_default), 0);
    pthread_attr_t huge;
    pthread_attr_init(&huge);
    cr_assert_eq(pthread_attr_setstacksize(&huge, (size_t)1 << 46), 0);
    cr_assert_eq(pthread_setattr_default_np(&huge), 0);
    pthread_attr_destroy(&huge);
}

static void threads_work(void)
{
    cr_assert_eq(pthread_setattr_default_np(&saved_default), 0);
    pthread_attr_destroy(&saved_default);
}

TW_TEST(threadpool, no_thread_at_all_is_an_errno)
{
    tw_threadpool *pool;
    cr_assert_eq(tw_threadpool_new(&pool, 0, 2), 0);
    atomic_store(&counter, 0);
    threads_fail();
    int rc = tw_threadpool_call(pool, count_job, NULL);
    threads_work();
    cr_assert_lt(rc, 0);
    cr_assert_neq(rc, TW_ENOMEM, "a thread that cannot start is -errno, not TW_ENOMEM");
    cr_assert_gt(rc, TW__ERRNO_LIMIT, "%d is not -errno", rc);
    tw__threadpool_stats st;
    tw__threadpool_get_stats(pool, &st);
    cr_assert_eq(st.threads, 0);
    cr_assert_eq(st.queued, 0);
    /* Threads work again: so does the pool. */
    cr_assert_eq(tw_threadpool_call(pool, count_job, NULL), 0);
    cr_assert_eq(tw_threadpool_stop(pool), 0);
    cr_assert_eq(atomic_load(&counter), 1, "the refused call ran");
    tw_threadpool_free(pool);
}

TW_TEST(threadpool, a_thread_that_cannot_start_with_workers_running)
{
    tw_threadpool *pool;
    cr_assert_eq(tw_threadpool_new(&pool, 0, 2), 0);
    gate g;
    gate_init(&g);
    cr_assert_eq(tw_threadpool_call(pool, gate_job, &g), 0);
    cr_assert(gate_await_waiting(&g, 1));
    atomic_store(&counter, 0);
    tw_testing_log_capture_start();
    threads_fail();
    int rc = tw_threadpool_call(pool, count_job, NULL);
    threads_work();
    size_t logged = tw_testing_log_count("could not start a pool worker");
    tw_testing_log_capture_stop();
    cr_assert_eq(rc, 0, "the running worker will take it");
    cr_assert_eq(logged, 1);
    gate_open(&g);
    cr_assert_eq(tw_threadpool_stop(pool), 0);
    cr_assert_eq(atomic_load(&counter), 1);
    tw_threadpool_free(pool);
    gate_destroy(&g);
}
