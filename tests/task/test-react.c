/* react: the exit status from main's deferred (value 0, failure 1 and logged,
 * tw_react_exit(n)), the reactor stopped once main is done (also when the
 * deferred fired before the reactor ran), a reactor stopped by something
 * else, a deferred firing during the shutdown, a given reactor, errors. */
#include <signal.h>

#include <twine/task.h>

#include "twtest.h"

struct mainst {
    int calls;
    bool running_in_main;
    tw_reactor *r;
    tw_deferred *d; /* main's deferred, our reference */
    int cancelled;  /* its canceller ran */
    int mode;
    int exit_status;
    bool stop_seen; /* a during-shutdown trigger ran */
};

enum {
    M_VALUE_LATER,
    M_FAIL_LATER,
    M_EXIT_LATER,
    M_ERRBACK_TO_EXIT,
    M_FIRED_AT_ONCE,
    M_NULL,
    M_STOPPED_ELSEWHERE,
    M_SIGNAL,
    M_FIRES_IN_SHUTDOWN,
    M_PENDING,
};

static void canceller(tw_deferred *d, void *arg)
{
    struct mainst *m = arg;
    m->cancelled++;
}

static void fire_value(void *arg)
{
    struct mainst *m = arg;
    cr_assert(tw_reactor_running(m->r));
    tw_deferred_callback(m->d, tw_result_from_int(5));
}

static void fire_failure(void *arg)
{
    struct mainst *m = arg;
    tw_deferred_errback(m->d, tw_failure_new(TW_EUSER, NULL, "main went wrong"));
}

static void fire_exit(void *arg)
{
    struct mainst *m = arg;
    tw_deferred_callback(m->d, tw_react_exit(m->exit_status));
}

static tw_result to_exit(tw_result r, void *arg)
{
    cr_assert(r.failure);
    tw_result_release(&r);
    return tw_react_exit(3);
}

static void stop_it(void *arg)
{
    struct mainst *m = arg;
    tw_reactor_stop(m->r);
}

static void send_term(void *arg)
{
    raise(SIGTERM);
}

static tw_deferred *shutdown_fires_main(void *arg)
{
    struct mainst *m = arg;
    tw_deferred_errback(m->d, tw_failure_new(TW_EUSER, NULL, "failed while shutting down"));
    return NULL;
}

static tw_deferred *during_shutdown(void *arg)
{
    struct mainst *m = arg;
    m->stop_seen = true;
    return NULL;
}

static tw_deferred *main_fn(tw_reactor *r, void *arg)
{
    struct mainst *m = arg;
    m->calls++;
    m->r = r;
    m->running_in_main = tw_reactor_running(r);
    tw_reactor_add_trigger(r, TW_PHASE_DURING, TW_EVENT_SHUTDOWN, during_shutdown, m, NULL);
    tw_clock *c = tw_reactor_clock(r);
    if (m->mode == M_NULL)
        return NULL;
    m->d = tw_deferred_new(canceller, m);
    switch (m->mode) {
    case M_VALUE_LATER:
        tw_call_later(c, 0.01, fire_value, m, NULL);
        break;
    case M_FAIL_LATER:
        tw_call_later(c, 0.01, fire_failure, m, NULL);
        break;
    case M_EXIT_LATER:
        tw_call_later(c, 0.01, fire_exit, m, NULL);
        break;
    case M_ERRBACK_TO_EXIT:
        tw_deferred_add_errback(m->d, to_exit, NULL);
        tw_call_later(c, 0, fire_failure, m, NULL);
        break;
    case M_FIRED_AT_ONCE:
        tw_deferred_callback(m->d, tw_result_borrowed(NULL));
        break;
    case M_STOPPED_ELSEWHERE:
        tw_call_later(c, 0.01, stop_it, m, NULL);
        break;
    case M_SIGNAL:
        tw_call_later(c, 0.01, send_term, m, NULL);
        break;
    case M_PENDING:
        break;
    case M_FIRES_IN_SHUTDOWN:
        tw_reactor_add_trigger(r, TW_PHASE_BEFORE, TW_EVENT_SHUTDOWN, shutdown_fires_main, m, NULL);
        tw_call_later(c, 0.01, stop_it, m, NULL);
        break;
    }
    return tw_deferred_ref(m->d);
}

static int react_mode(struct mainst *m, int mode)
{
    m->mode = mode;
    int status = tw_react(main_fn, m, NULL);
    cr_assert_eq(m->calls, 1);
    cr_assert_not(m->running_in_main, "main runs before the reactor does");
    if (mode != M_NULL)
        cr_assert(m->stop_seen, "the reactor was stopped (shutdown event)");
    tw_deferred_unref(m->d);
    return status;
}

TW_TEST(react, a_value_exits_0)
{
    struct mainst m = {0};
    cr_assert_eq(react_mode(&m, M_VALUE_LATER), 0);
    cr_assert_eq(m.cancelled, 0);
}

TW_TEST(react, a_failure_exits_1_and_is_logged)
{
    struct mainst m = {0};
    tw_testing_log_capture_start();
    cr_assert_eq(react_mode(&m, M_FAIL_LATER), 1);
    cr_assert_eq(tw_testing_log_count("main function encountered error"), 1);
    cr_assert_eq(tw_testing_log_count("main went wrong"), 1);
    tw_testing_log_capture_stop();
}

TW_TEST(react, an_exit_status_is_returned)
{
    struct mainst m = {.exit_status = 7};
    cr_assert_eq(react_mode(&m, M_EXIT_LATER), 7);
    struct mainst m2 = {.exit_status = 0};
    cr_assert_eq(react_mode(&m2, M_EXIT_LATER), 0);
    struct mainst m3 = {0};
    tw_testing_log_capture_start();
    cr_assert_eq(react_mode(&m3, M_ERRBACK_TO_EXIT), 3);
    cr_assert_eq(tw_testing_log_count("encountered error"), 0, "handled: not logged");
    tw_testing_log_capture_stop();
}

TW_TEST(react, a_deferred_fired_before_run_still_runs_and_stops)
{
    struct mainst m = {0};
    cr_assert_eq(react_mode(&m, M_FIRED_AT_ONCE), 0);
}

TW_TEST(react, main_returning_null_exits_1)
{
    struct mainst m = {0};
    tw_testing_log_capture_start();
    cr_assert_eq(react_mode(&m, M_NULL), 1);
    cr_assert_eq(tw_testing_log_count("returned NULL"), 1);
    tw_testing_log_capture_stop();
}

TW_TEST(react, stopped_elsewhere_exits_0_and_cancels_main)
{
    struct mainst m = {0};
    cr_assert_eq(react_mode(&m, M_STOPPED_ELSEWHERE), 0);
    cr_assert_eq(m.cancelled, 1, "main's deferred was cancelled after run returned");
}

TW_TEST(react, a_signal_stops_it_with_0)
{
    struct mainst m = {0};
    cr_assert_eq(react_mode(&m, M_SIGNAL), 0);
    cr_assert_eq(m.cancelled, 1);
}

TW_TEST(react, a_failure_during_the_shutdown_is_recorded)
{
    struct mainst m = {0};
    tw_testing_log_capture_start();
    cr_assert_eq(react_mode(&m, M_FIRES_IN_SHUTDOWN), 1);
    cr_assert_eq(tw_testing_log_count("failed while shutting down"), 1);
    cr_assert_eq(m.cancelled, 0, "it fired: nothing to cancel");
    tw_testing_log_capture_stop();
}

TW_REACTOR_TEST(react, on_a_given_reactor)
{
    struct mainst m = {.mode = M_VALUE_LATER};
    tw_react_options opts = {.reactor = r};
    cr_assert_eq(tw_react(main_fn, &m, &opts), 0);
    cr_assert_eq(m.r, r);
    tw_deferred_unref(m.d);
    /* A stopped reactor cannot run again: react says so. */
    struct mainst m2 = {.mode = M_PENDING};
    tw_testing_log_capture_start();
    cr_assert_eq(tw_react(main_fn, &m2, &opts), 1);
    cr_assert_eq(tw_testing_log_count("cannot run the reactor"), 1);
    tw_testing_log_capture_stop();
    cr_assert_eq(m2.cancelled, 1);
    tw_deferred_unref(m2.d);
}

TW_TEST(react, bad_arguments)
{
    tw_testing_log_capture_start();
    cr_assert_eq(tw_react(NULL, NULL, NULL), 1);
    tw_reactor_options ro = {.backend = "no-such-backend"};
    tw_react_options opts = {.reactor_options = &ro};
    struct mainst m = {0};
    cr_assert_eq(tw_react(main_fn, &m, &opts), 1);
    cr_assert_eq(m.calls, 0);
    cr_assert_eq(tw_testing_log_count("cannot make a reactor"), 1);
    tw_testing_log_capture_stop();
}
