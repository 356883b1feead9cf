/* Shutting down while pool work waits on the reactor: a worker blocked in
 * tw_blocking_call_from_thread must be answered, not deadlocked against the
 * join of its pool. */
#include "twtest.h"

#include <stdatomic.h>
#include <time.h>

static tw_result answer(void *arg)
{
    return tw_result_from_int(42);
}

struct job {
    tw_reactor *r;
    atomic_int answered; /* what the blocking call returned, 0 until then */
};

static tw_result blocking_job(void *arg)
{
    struct job *job = arg;
    nanosleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL); /* let the loop stop first */
    tw_result got = tw_blocking_call_from_thread(job->r, answer, NULL);
    atomic_store(&job->answered, got.failure ? -1 : (int)tw_result_int(got));
    tw_result_release(&got);
    return tw_result_from_int(1);
}

static void start_and_stop(void *arg)
{
    struct job *job = arg;
    tw_deferred *d = tw_defer_to_thread(job->r, blocking_job, job);
    cr_assert_not_null(d);
    tw_deferred_unref(d);
    tw_reactor_stop(job->r);
}

TW_TEST(shutdown_pool, stop_answers_a_blocked_worker, .timeout = 20)
{
    tw_reactor *r;
    cr_assert_eq(tw_reactor_new(&r, &(tw_reactor_options){.no_signal_handlers = true}), 0);
    struct job job = {.r = r};
    tw_reactor_call_when_running(r, start_and_stop, &job);
    cr_assert_eq(tw_reactor_run(r), 0); /* returned: the pool was joined */
    cr_assert_eq(atomic_load(&job.answered), 42);
    cr_assert_eq(tw_reactor_free(r), 0);
}

TW_TEST(shutdown_pool, free_answers_a_blocked_worker, .timeout = 20)
{
    tw_reactor *r;
    cr_assert_eq(tw_reactor_new(&r, NULL), 0);
    struct job job = {.r = r};
    tw_deferred *d = tw_defer_to_thread(r, blocking_job, &job);
    cr_assert_not_null(d);
    tw_deferred_unref(d);
    cr_assert_eq(tw_reactor_free(r), 0); /* never ran: free turns the loop to answer */
    cr_assert_eq(atomic_load(&job.answered), 42);
}
