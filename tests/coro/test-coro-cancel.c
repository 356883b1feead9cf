/* Cancelling a coroutine's deferred (Twisted's inlineCallbacks semantics):
 * what it waits on is cancelled, it sees TW_ECANCELED where it waited, its
 * cleanup runs, and its deferred fires with whatever it then returns. */
#include <math.h>

#include "coro-test.h"

static int canceller_calls, cleanups;

static void count_cancel(tw_deferred *d, void *arg)
{
    (void)d;
    (void)arg;
    canceller_calls++;
}

struct victim {
    tw_deferred *waits_on; /* a deferred with a canceller */
    void *resource;        /* what the cleanup frees */
    int saw;               /* the code tw_await returned */
    bool swallow;          /* return a value instead of the failure */
};

static tw_result cleans_up(void *arg)
{
    struct victim *v = arg;
    v->resource = tw_malloc(128);
    tw_result r = tw_await(tw_deferred_ref(v->waits_on));
    v->saw = coro_code(r);
    tw_free(v->resource); /* the cleanup, whatever happened */
    v->resource = NULL;
    cleanups++;
    if (v->swallow && r.failure) {
        tw_result_release(&r);
        return coro_counted(77);
    }
    return r;
}

CORO_TEST(cancel, cancels_what_it_awaits_and_runs_its_cleanup)
{
    struct victim v = {.waits_on = tw_deferred_new(count_cancel, NULL)};
    tw_deferred *d = tw_coro_start(r, cleans_up, &v, NULL);
    cr_assert_not(tw_deferred_called(d));
    cr_assert_eq(cleanups, 0);
    tw_deferred_cancel(d);
    cr_assert_eq(canceller_calls, 1, "the awaited deferred's canceller ran");
    cr_assert(tw_deferred_called(v.waits_on));
    cr_assert_eq(v.saw, TW_ECANCELED, "the coroutine saw the cancellation where it waited");
    cr_assert_eq(cleanups, 1);
    cr_assert_null(v.resource);
    tw_result res = twtest_wait(r, d);
    cr_assert_eq(coro_code(res), TW_ECANCELED);
    tw_result_release(&res);
    tw_deferred_unref(d);
    tw_deferred_unref(v.waits_on);
}

CORO_TEST(cancel, a_coroutine_that_swallows_it_fires_with_its_value)
{
    struct victim v = {.waits_on = tw_deferred_new(count_cancel, NULL), .swallow = true};
    tw_deferred *d = tw_coro_start(r, cleans_up, &v, NULL);
    tw_deferred_cancel(d);
    cr_assert_eq(v.saw, TW_ECANCELED);
    tw_result res = twtest_wait(r, d);
    cr_assert_eq(coro_int_of(res), 77, "as in Twisted: the generator's return value");
    tw_result_release(&res);
    tw_deferred_unref(d);
    tw_deferred_unref(v.waits_on);
}

/* A canceller that fires the deferred with a value: the coroutine gets it. */
static void cancel_with_value(tw_deferred *d, void *arg)
{
    (void)arg;
    tw_deferred_callback(d, coro_counted(5));
}

static tw_result returns_awaited(void *arg)
{
    return tw_await(tw_deferred_ref(arg));
}

CORO_TEST(cancel, what_the_canceller_fires_with_is_what_the_coroutine_gets)
{
    tw_deferred *x = tw_deferred_new(cancel_with_value, NULL);
    tw_deferred *d = tw_coro_start(r, returns_awaited, x, NULL);
    tw_deferred_cancel(d);
    tw_result res = twtest_wait(r, d);
    cr_assert_eq(coro_int_of(res), 5);
    tw_result_release(&res);
    tw_deferred_unref(d);
    tw_deferred_unref(x);
}

/* After the cancellation the coroutine goes on waiting (a cleanup that takes
 * time): its deferred waits too, and a second cancel reaches the new wait. */
struct slow_cleanup {
    tw_deferred *first, *second;
    int codes[2];
};

static tw_result slow_cleanup(void *arg)
{
    struct slow_cleanup *s = arg;
    tw_result a = tw_await(tw_deferred_ref(s->first));
    s->codes[0] = coro_code(a);
    tw_result_release(&a);
    tw_result b = tw_await(tw_deferred_ref(s->second));
    s->codes[1] = coro_code(b);
    if (b.failure) {
        tw_result_release(&b);
        return coro_counted(2);
    }
    return b;
}

static tw_result record_int(tw_result result, void *arg)
{
    *(int *)arg = coro_int_of(result);
    return result;
}

CORO_TEST(cancel, the_deferred_waits_for_the_coroutine_to_end_after_a_cancel)
{
    tw_testing_log_capture_start();
    struct slow_cleanup s = {.first = tw_deferred_new(NULL, NULL),
                             .second = tw_deferred_new(count_cancel, NULL)};
    tw_deferred *d = tw_coro_start(r, slow_cleanup, &s, NULL);
    tw_deferred_cancel(d);
    cr_assert_eq(s.codes[0], TW_ECANCELED);
    tw_coro_stats st;
    tw_coro_get_stats(&st);
    cr_assert_eq(st.live, 1, "still running its cleanup");
    cr_assert_eq(canceller_calls, 0, "the second wait was not cancelled by the first cancel");

    /* d has not failed with ECANCELED behind the coroutine's back: a callback
     * added now waits for the coroutine. */
    int seen = -1;
    tw_deferred_add_callback(d, record_int, &seen);
    cr_assert_eq(seen, -1);
    tw_deferred_cancel(d); /* a second cancel cancels the second wait */
    cr_assert_eq(canceller_calls, 1);
    cr_assert_eq(s.codes[1], TW_ECANCELED);
    cr_assert_eq(seen, 2, "the coroutine's value, once it returned");
    tw_result res = twtest_wait(r, d);
    tw_result_release(&res);
    cr_assert_eq(tw_testing_log_count("already called"), 0, "no double firing");
    tw_testing_log_capture_stop();
    tw_deferred_unref(d);
    tw_deferred_unref(s.first);
    tw_deferred_unref(s.second);
}

CORO_TEST(cancel, the_value_after_a_cancel_arrives_when_the_coroutine_ends)
{
    struct slow_cleanup s = {.first = tw_deferred_new(NULL, NULL),
                             .second = tw_deferred_new(NULL, NULL)};
    tw_deferred *d = tw_coro_start(r, slow_cleanup, &s, NULL);
    tw_deferred_cancel(d);
    cr_assert_not(tw_deferred_called(s.second));
    /* d's result is not there yet: running the chain gives nothing. */
    tw_result out = {0};
    cr_assert_eq(tw_testing_run_until_fired(r, d, 0.05, &out), TW_ETIMEDOUT);
    /* run_until_fired cancelled d on its time-out: that reached the second
     * wait, which had no canceller, so the coroutine saw ECANCELED there too
     * and returned 2, which is what d fired with (and was discarded). */
    cr_assert_eq(s.codes[1], TW_ECANCELED);
    tw_deferred_unref(d);
    tw_deferred_unref(s.first);
    tw_deferred_unref(s.second);
}

/* ---- Sleeping and timeouts */

static tw_result sleeps(void *arg)
{
    int *code = arg;
    *code = tw_await_sleep(tw_reactor_clock(tw_coro_reactor(tw_coro_current())), 30.0);
    cleanups++;
    return *code ? tw_result_fail(tw_failure_new(*code, NULL, "sleep interrupted"))
                 : tw_result_from_int(0);
}

CORO_TEST(cancel, a_cancelled_sleep_returns_ecanceled_and_its_timer_goes)
{
    int code = 1;
    tw_deferred *d = tw_coro_start(r, sleeps, &code, NULL);
    tw_reactor_state st;
    tw_reactor_get_state(r, &st);
    cr_assert_eq(st.delayed_calls, 1);
    tw_deferred_cancel(d);
    cr_assert_eq(code, TW_ECANCELED);
    tw_reactor_get_state(r, &st);
    cr_assert_eq(st.delayed_calls, 0, "the sleep's timer was cancelled");
    tw_result res = twtest_wait(r, d);
    cr_assert_eq(coro_code(res), TW_ECANCELED);
    tw_result_release(&res);
    tw_deferred_unref(d);
}

CORO_TEST(cancel, add_timeout_on_a_coroutine_cancels_it_and_reports_etimedout)
{
    int code = 1;
    tw_deferred *d = tw_coro_start(r, sleeps, &code, NULL);
    cr_assert_eq(tw_deferred_add_timeout(d, tw_reactor_clock(r), 0.02), 0);
    tw_result res = twtest_wait(r, d);
    cr_assert_eq(code, TW_ECANCELED, "the timeout cancelled the coroutine's sleep");
    cr_assert_eq(coro_code(res), TW_ETIMEDOUT, "the coroutine's ECANCELED became ETIMEDOUT");
    cr_assert_eq(tw_failure_code(tw_failure_cause(res.failure)), TW_ECANCELED);
    tw_result_release(&res);
    tw_deferred_unref(d);
}

static tw_result sleeps_briefly(void *arg)
{
    (void)arg;
    tw_clock *clock = tw_reactor_clock(tw_coro_reactor(tw_coro_current()));
    double t0 = tw_reactor_seconds(tw_coro_reactor(tw_coro_current()));
    int rc = tw_await_sleep(clock, 0.03);
    double t1 = tw_reactor_seconds(tw_coro_reactor(tw_coro_current()));
    cr_assert_eq(rc, 0);
    cr_assert_geq(t1 - t0, 0.025, "slept %g s", t1 - t0);
    return tw_result_from_int(1);
}

CORO_TEST(cancel, sleep_waits_the_time)
{
    tw_deferred *d = tw_coro_start(r, sleeps_briefly, NULL, NULL);
    tw_result res = twtest_wait(r, d);
    cr_assert_eq(tw_result_int(res), 1);
    tw_deferred_unref(d);
}

/* ---- Cancelled while running */

struct self_cancel {
    tw_deferred *me;   /* its own deferred, published by a first wait */
    tw_deferred *gate; /* the first wait */
    tw_deferred *next; /* what it awaits after cancelling itself */
    int code;
};

static tw_result cancels_itself(void *arg)
{
    struct self_cancel *s = arg;
    tw_result g = tw_await(tw_deferred_ref(s->gate));
    tw_result_release(&g);
    tw_deferred_cancel(s->me); /* running: nothing awaited to cancel yet */
    tw_result n = tw_await(tw_deferred_ref(s->next));
    s->code = coro_code(n);
    tw_result_release(&n);
    return tw_result_from_int(11);
}

CORO_TEST(cancel, cancelled_while_running_its_next_await_is_cancelled)
{
    struct self_cancel s = {.gate = tw_deferred_new(NULL, NULL),
                            .next = tw_deferred_new(count_cancel, NULL)};
    s.me = tw_coro_start(r, cancels_itself, &s, NULL);
    tw_deferred_callback(s.gate, tw_result_from_int(0));
    cr_assert_eq(canceller_calls, 1, "the next await was cancelled at once");
    cr_assert_eq(s.code, TW_ECANCELED);
    tw_result res = twtest_wait(r, s.me);
    cr_assert_eq(tw_result_int(res), 11);
    tw_deferred_unref(s.me);
    tw_deferred_unref(s.gate);
    tw_deferred_unref(s.next);
}

/* ---- Cancelling a paused or finished one */

CORO_TEST(cancel, a_paused_deferred_gets_the_value_when_unpaused)
{
    struct victim v = {.waits_on = tw_deferred_new(NULL, NULL), .swallow = true};
    tw_deferred *d = tw_coro_start(r, cleans_up, &v, NULL);
    tw_deferred_pause(d);
    tw_deferred_cancel(d);
    cr_assert_eq(v.saw, TW_ECANCELED);
    cr_assert_eq(cleanups, 1);
    tw_deferred_unpause(d);
    tw_result res = twtest_wait(r, d);
    cr_assert_eq(coro_int_of(res), 77);
    tw_result_release(&res);
    tw_deferred_unref(d);
    tw_deferred_unref(v.waits_on);
}

static tw_result quick(void *arg)
{
    (void)arg;
    return tw_result_from_int(4);
}

CORO_TEST(cancel, cancelling_an_ended_coroutine_does_nothing)
{
    tw_deferred *d = tw_coro_start(r, quick, NULL, NULL);
    tw_deferred_cancel(d);
    tw_result res = twtest_wait(r, d);
    cr_assert_eq(tw_result_int(res), 4);
    tw_deferred_unref(d);
}

static void cancel_restoring_alloc(tw_deferred *d, void *arg)
{
    (void)d;
    (void)arg;
    canceller_calls++;
    tw_testing_fail_alloc_off();
}

CORO_TEST(cancel, cancelling_with_no_memory_still_ends_cleanly)
{
    tw_testing_log_capture_start();
    struct victim v = {.waits_on = tw_deferred_new(cancel_restoring_alloc, NULL), .swallow = true};
    tw_deferred *d = tw_coro_start(r, cleans_up, &v, NULL);
    tw_testing_fail_alloc_after(0); /* the replacement deferred cannot be made */
    tw_deferred_cancel(d);          /* the awaited one's canceller turns failing off */
    cr_assert_not(tw_testing_fail_alloc_armed());
    cr_assert_eq(canceller_calls, 1);
    cr_assert_eq(cleanups, 1);
    tw_result res = twtest_wait(r, d);
    /* No room for the replacement: d failed with ECANCELED and the 77 the
     * coroutine returned was dropped. */
    cr_assert_eq(coro_code(res), TW_ECANCELED);
    tw_result_release(&res);
    cr_assert_eq(coro_released, 1, "the dropped value was released");
    tw_testing_log_capture_stop();
    tw_deferred_unref(d);
    tw_deferred_unref(v.waits_on);
}

/* ---- A tree: cancelling the outer coroutine reaches the inner one */

struct tree {
    tw_reactor *r;
    tw_deferred *leaf; /* what the inner coroutine waits on */
    int inner_saw, outer_saw;
    char order[8];
    size_t n;
};

static tw_result inner_coro(void *arg)
{
    struct tree *t = arg;
    tw_result res = tw_await(tw_deferred_ref(t->leaf));
    t->inner_saw = coro_code(res);
    t->order[t->n++] = 'i'; /* the inner cleans up first */
    return res;
}

static tw_result outer_coro(void *arg)
{
    struct tree *t = arg;
    tw_result res = tw_await(tw_coro_start(t->r, inner_coro, t, NULL));
    t->outer_saw = coro_code(res);
    t->order[t->n++] = 'o';
    return res;
}

CORO_TEST(cancel, cancelling_an_outer_coroutine_cancels_the_inner_one_it_awaits)
{
    struct tree t = {.r = r, .leaf = tw_deferred_new(count_cancel, NULL)};
    tw_deferred *d = tw_coro_start(r, outer_coro, &t, NULL);
    tw_coro_stats st;
    tw_coro_get_stats(&st);
    cr_assert_eq(st.live, 2);
    tw_deferred_cancel(d);
    cr_assert_eq(canceller_calls, 1, "the leaf's canceller ran");
    cr_assert_eq(t.inner_saw, TW_ECANCELED);
    cr_assert_eq(t.outer_saw, TW_ECANCELED);
    cr_assert_str_eq(t.order, "io");
    tw_result res = twtest_wait(r, d);
    cr_assert_eq(coro_code(res), TW_ECANCELED);
    tw_result_release(&res);
    tw_deferred_unref(d);
    tw_deferred_unref(t.leaf);
}
