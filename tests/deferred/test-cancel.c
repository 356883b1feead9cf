/* Cancellation (the canceller, TW_ECANCELED, forwarding to the deferred being
 * waited on, the one swallowed late firing) and addTimeout on a manual clock. */
#include "helpers.h"

#include <math.h>

static int canceller_calls;

static void canceller_silent(tw_deferred *d, void *arg)
{
    (void)d;
    (void)arg;
    canceller_calls++;
}

static void canceller_fires(tw_deferred *d, void *arg)
{
    canceller_calls++;
    tw_deferred_callback(d, tw_result_from_int((intptr_t)arg));
}

TW_TEST(cancel, without_canceller_fails_with_ecanceled)
{
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    tw_deferred_add_errback(d, keep, NULL);
    tw_deferred_cancel(d);
    cr_assert(tw_deferred_called(d));
    cr_assert_eq(tw_failure_code(kept.failure), TW_ECANCELED);
    tw_result_release(&kept);
    tw_deferred_unref(d);
}

TW_TEST(cancel, without_canceller_swallows_exactly_one_later_firing)
{
    tw_testing_log_capture_start();
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    tw_deferred_add_errback(d, keep, NULL);
    tw_deferred_cancel(d);
    cr_assert_eq(tw_deferred_callback(d, tracked(1)), 0, "the producer's firing is eaten");
    cr_assert_eq(released, 1);
    cr_assert_eq(tw_testing_log_count("already called"), 0, "silently");
    cr_assert_eq(tw_deferred_errback(d, failure(TW_EUSER)), TW_EALREADYCALLED, "only once");
    cr_assert_eq(tw_testing_log_count("already called"), 1);
    cr_assert_eq(kept_calls, 1);
    tw_result_release(&kept);
    tw_deferred_unref(d);
    tw_testing_log_capture_stop();
}

TW_TEST(cancel, canceller_that_does_not_fire_then_ecanceled_and_no_swallowing)
{
    tw_testing_log_capture_start();
    tw_deferred *d = tw_deferred_new(canceller_silent, NULL);
    tw_deferred_add_errback(d, keep, NULL);
    tw_deferred_cancel(d);
    cr_assert_eq(canceller_calls, 1);
    cr_assert_eq(tw_failure_code(kept.failure), TW_ECANCELED);
    /* As Twisted: with a canceller, the producer was told, so a later firing
     * is a real misuse. */
    cr_assert_eq(tw_deferred_callback(d, tw_result_from_int(1)), TW_EALREADYCALLED);
    cr_assert_eq(tw_testing_log_count("already called"), 1);
    tw_result_release(&kept);
    tw_deferred_unref(d);
    tw_testing_log_capture_stop();
}

TW_TEST(cancel, canceller_that_fires_sets_the_result)
{
    tw_deferred *d = tw_deferred_new(canceller_fires, ARG(77));
    tw_deferred_add_callback(d, keep, NULL);
    tw_deferred_cancel(d);
    cr_assert_eq(canceller_calls, 1);
    cr_assert_eq(kept_calls, 1);
    cr_assert_null(kept.failure, "no ECANCELED: the canceller's result stands");
    cr_assert_eq(tw_result_int(kept), 77);
    tw_deferred_unref(d);
}

TW_TEST(cancel, cancelling_a_fired_deferred_does_nothing)
{
    tw_deferred *d = tw_deferred_new(canceller_silent, NULL);
    tw_deferred_callback(d, tw_result_from_int(5));
    tw_deferred_cancel(d);
    cr_assert_eq(canceller_calls, 0);
    tw_deferred_add_callback(d, keep, NULL);
    cr_assert_eq(tw_result_int(kept), 5);
    tw_deferred_cancel(d); /* twice */
    tw_deferred_cancel(NULL);
    tw_deferred_unref(d);
}

TW_TEST(cancel, cancelling_a_paused_fired_deferred_does_nothing)
{
    tw_deferred *d = tw_deferred_new(canceller_silent, NULL);
    tw_deferred_pause(d);
    tw_deferred_callback(d, tw_result_from_int(5));
    tw_deferred_cancel(d);
    cr_assert_eq(canceller_calls, 0);
    tw_deferred_add_callback(d, keep, NULL);
    tw_deferred_unpause(d);
    cr_assert_eq(tw_result_int(kept), 5);
    tw_deferred_unref(d);
}

static tw_result return_deferred(tw_result r, void *arg)
{
    tw_result_release(&r);
    return tw_result_deferred(tw_deferred_ref(arg));
}

TW_TEST(cancel, cancelling_a_waiting_deferred_cancels_the_one_it_waits_on)
{
    tw_deferred *inner = tw_deferred_new(canceller_silent, NULL);
    tw_deferred_add_both(inner, pass, ARG('i'));
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    tw_deferred_add_callback(d, return_deferred, inner);
    tw_deferred_add_errback(d, keep, NULL);
    tw_deferred_callback(d, tw_result_from_int(0));
    tw_deferred_cancel(d);
    cr_assert_eq(canceller_calls, 1, "the inner's canceller ran");
    cr_assert(tw_deferred_called(inner));
    cr_assert_str_eq(trace, "i");
    cr_assert_eq(tw_failure_code(kept.failure), TW_ECANCELED, "and its failure reached d");
    tw_result_release(&kept);
    tw_deferred_unref(inner);
    tw_deferred_unref(d);
}

TW_TEST(cancel, forwarding_follows_a_nest_to_the_innermost)
{
    enum { N = 5 };
    tw_deferred *ds[N];
    for (int i = 0; i < N; i++)
        ds[i] = tw_deferred_new(i == N - 1 ? canceller_fires : NULL, ARG(31));
    for (int i = 0; i + 1 < N; i++)
        tw_deferred_add_callback(ds[i], return_deferred, ds[i + 1]);
    tw_deferred_add_callback(ds[0], keep, NULL);
    for (int i = 0; i + 1 < N; i++)
        tw_deferred_callback(ds[i], tw_result_from_int(0));
    tw_deferred_cancel(ds[0]);
    cr_assert_eq(canceller_calls, 1);
    cr_assert_eq(tw_result_int(kept), 31, "the innermost's canceller's result came out");
    for (int i = 0; i < N; i++)
        tw_deferred_unref(ds[i]);
}

static void canceller_drops(tw_deferred *d, void *arg)
{
    (void)arg;
    canceller_calls++;
    tw_deferred_unref(d); /* the producer's reference */
}

TW_TEST(cancel, canceller_may_drop_the_producers_reference)
{
    tw_deferred *d = tw_deferred_new(canceller_drops, NULL);
    tw_deferred_ref(d); /* the producer's */
    tw_deferred_add_errback(d, keep, NULL);
    tw_deferred_cancel(d);
    cr_assert_eq(canceller_calls, 1);
    cr_assert_eq(tw_failure_code(kept.failure), TW_ECANCELED);
    tw_result_release(&kept);
    tw_deferred_unref(d);
}

static tw_result cancel_self(tw_result r, void *arg)
{
    mark('c');
    tw_deferred_cancel(arg);
    return r;
}

TW_TEST(cancel, cancelling_from_its_own_callback_does_nothing)
{
    tw_deferred *d = tw_deferred_new(canceller_silent, NULL);
    tw_deferred_add_callback(d, cancel_self, d);
    tw_deferred_add_callback(d, keep, NULL);
    tw_deferred_callback(d, tw_result_from_int(2));
    cr_assert_eq(canceller_calls, 0);
    cr_assert_str_eq(trace, "c");
    cr_assert_eq(tw_result_int(kept), 2);
    tw_deferred_unref(d);
}

static void canceller_recurses(tw_deferred *d, void *arg)
{
    (void)arg;
    canceller_calls++;
    tw_deferred_cancel(d); /* already being cancelled: nothing more */
}

TW_TEST(cancel, a_canceller_cancelling_its_own_deferred_does_not_recurse)
{
    tw_deferred *d = tw_deferred_new(canceller_recurses, NULL);
    tw_deferred_add_errback(d, keep, NULL);
    tw_deferred_cancel(d);
    cr_assert_eq(canceller_calls, 1);
    cr_assert_eq(tw_failure_code(kept.failure), TW_ECANCELED);
    tw_result_release(&kept);
    tw_deferred_unref(d);
}

/* ---- addTimeout */

TW_TEST(timeout, fired_in_time_keeps_its_result_and_removes_the_timer)
{
    tw_clock *clock = tw_clock_new_manual();
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    cr_assert_eq(tw_deferred_add_timeout(d, clock, 5.0), 0);
    cr_assert_eq(tw_clock_pending(clock), 1);
    tw_deferred_add_callback(d, keep, NULL);
    tw_clock_advance(clock, 4.0);
    cr_assert_eq(kept_calls, 0);
    tw_deferred_callback(d, tw_result_from_int(3));
    cr_assert_eq(tw_result_int(kept), 3);
    cr_assert_eq(tw_clock_pending(clock), 0, "the timer went when d fired");
    tw_clock_advance(clock, 10.0);
    cr_assert_eq(kept_calls, 1);
    tw_deferred_unref(d);
    tw_clock_free(clock);
}

TW_TEST(timeout, timing_out_fails_with_etimedout_caused_by_the_cancellation)
{
    tw_clock *clock = tw_clock_new_manual();
    tw_deferred *d = tw_deferred_new(canceller_silent, NULL);
    cr_assert_eq(tw_deferred_add_timeout(d, clock, 2.5), 0);
    tw_deferred_add_errback(d, keep, NULL);
    tw_clock_advance(clock, 2.0);
    cr_assert_eq(kept_calls, 0);
    tw_clock_advance(clock, 0.5);
    cr_assert_eq(canceller_calls, 1);
    cr_assert_eq(kept_calls, 1);
    cr_assert_eq(tw_failure_code(kept.failure), TW_ETIMEDOUT);
    const tw_failure *cause = tw_failure_cause(kept.failure);
    cr_assert_not_null(cause);
    cr_assert_eq(tw_failure_code(cause), TW_ECANCELED);
    cr_assert_eq(tw_clock_pending(clock), 0);
    tw_result_release(&kept);
    tw_deferred_unref(d);
    tw_clock_free(clock);
}

TW_TEST(timeout, a_canceller_that_fires_with_a_value_is_not_converted)
{
    tw_clock *clock = tw_clock_new_manual();
    tw_deferred *d = tw_deferred_new(canceller_fires, ARG(12));
    tw_deferred_add_timeout(d, clock, 1.0);
    tw_deferred_add_callback(d, keep, NULL);
    tw_clock_advance(clock, 1.0);
    cr_assert_null(kept.failure);
    cr_assert_eq(tw_result_int(kept), 12);
    tw_deferred_unref(d);
    tw_clock_free(clock);
}

TW_TEST(timeout, only_a_timeout_converts_ecanceled)
{
    tw_clock *clock = tw_clock_new_manual();
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    tw_deferred_add_timeout(d, clock, 1.0);
    tw_deferred_add_errback(d, keep, NULL);
    tw_deferred_cancel(d); /* cancelled by hand, before the timeout */
    cr_assert_eq(tw_failure_code(kept.failure), TW_ECANCELED);
    cr_assert_eq(tw_clock_pending(clock), 0);
    tw_result_release(&kept);
    tw_deferred_unref(d);
    tw_clock_free(clock);
}

TW_TEST(timeout, covers_a_deferred_waiting_on_another)
{
    tw_clock *clock = tw_clock_new_manual();
    tw_deferred *inner = tw_deferred_new(NULL, NULL);
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    tw_deferred_add_callback(d, return_deferred, inner);
    tw_deferred_add_timeout(d, clock, 1.0);
    tw_deferred_add_errback(d, keep, NULL);
    tw_deferred_callback(d, tw_result_from_int(0)); /* now waits on inner */
    tw_clock_advance(clock, 1.0);
    cr_assert(tw_deferred_called(inner), "the cancellation was forwarded");
    cr_assert_eq(tw_failure_code(kept.failure), TW_ETIMEDOUT);
    tw_result_release(&kept);
    tw_deferred_unref(inner);
    tw_deferred_unref(d);
    tw_clock_free(clock);
}

TW_TEST(timeout, on_a_fired_deferred_removes_its_timer_at_once)
{
    tw_clock *clock = tw_clock_new_manual();
    tw_deferred *d = tw_succeed(tw_result_from_int(1));
    cr_assert_eq(tw_deferred_add_timeout(d, clock, 1.0), 0);
    cr_assert_eq(tw_clock_pending(clock), 0);
    tw_deferred_unref(d);
    tw_clock_free(clock);
}

TW_TEST(timeout, releasing_the_deferred_unfired_removes_the_timer)
{
    tw_clock *clock = tw_clock_new_manual();
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    tw_deferred_add_timeout(d, clock, 1.0);
    tw_deferred_unref(d);
    cr_assert_eq(tw_clock_pending(clock), 0);
    cr_assert_eq(tw_clock_advance(clock, 2.0), 0, "nothing ran");
    tw_clock_free(clock);
}

TW_TEST(timeout, bad_delays_are_einval)
{
    tw_clock *clock = tw_clock_new_manual();
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    cr_assert_eq(tw_deferred_add_timeout(d, clock, -1.0), TW_EINVAL);
    cr_assert_eq(tw_deferred_add_timeout(d, clock, NAN), TW_EINVAL);
    cr_assert_eq(tw_deferred_add_timeout(d, clock, INFINITY), TW_EINVAL);
    cr_assert_eq(tw_deferred_add_timeout(d, NULL, 1.0), TW_EINVAL);
    cr_assert_eq(tw_clock_pending(clock), 0);
    tw_deferred_unref(d);
    tw_clock_free(clock);
}

TW_TEST(timeout, fails_cleanly_at_every_allocation)
{
    tw_clock *clock = tw_clock_new_manual();
    for (long n = 0;; n++) {
        tw_deferred *d = tw_deferred_new(NULL, NULL);
        for (int i = 0; i < 4; i++) /* full inline room: adding the pair must allocate */
            tw_deferred_add_callback(d, pass, ARG('p'));
        tw_testing_fail_alloc_after(n);
        int rc = tw_deferred_add_timeout(d, clock, 1.0);
        tw_testing_fail_alloc_off();
        tw_deferred_add_errback(d, keep, NULL);
        if (rc < 0) {
            cr_assert_eq(rc, TW_ENOMEM);
            cr_assert_eq(tw_clock_pending(clock), 0, "n=%ld: no timer left behind", n);
            tw_deferred_unref(d);
            continue;
        }
        cr_assert_eq(tw_clock_pending(clock), 1);
        tw_clock_advance(clock, 1.0);
        cr_assert_eq(tw_failure_code(kept.failure), TW_ETIMEDOUT);
        tw_result_release(&kept);
        tw_deferred_unref(d);
        break;
    }
    tw_clock_free(clock);
}
