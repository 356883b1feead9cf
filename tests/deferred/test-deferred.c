/* The callback chain: order, values and failures, passthrough, adding after
 * firing, deferreds returned from callbacks, pause, chain, ownership, misuse
 * and allocation failure. */
#include "helpers.h"

/* ---- Callbacks and errbacks */

TW_TEST(deferred, callbacks_run_in_order_each_result_feeding_the_next)
{
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    cr_assert_eq(tw_deferred_add_callback(d, add_one, ARG('a')), 0);
    cr_assert_eq(tw_deferred_add_callback(d, add_one, ARG('b')), 0);
    cr_assert_eq(tw_deferred_add_callback(d, add_one, ARG('c')), 0);
    cr_assert_eq(tw_deferred_add_callback(d, keep, NULL), 0);
    cr_assert_str_eq(trace, "", "nothing runs before the deferred fires");
    cr_assert_not(tw_deferred_called(d));
    cr_assert_eq(tw_deferred_callback(d, tw_result_from_int(10)), 0);
    cr_assert(tw_deferred_called(d));
    cr_assert_str_eq(trace, "abc");
    cr_assert_eq(tw_result_int(kept), 13);
    tw_deferred_unref(d);
}

static tw_result fail_with(tw_result r, void *arg)
{
    mark('F');
    tw_result_release(&r);
    return tw_result_fail(failure((int)(intptr_t)arg));
}

static tw_result recover(tw_result r, void *arg)
{
    mark('R');
    cr_assert(tw_result_is_failure(r));
    tw_result_release(&r);
    return tw_result_from_int((intptr_t)arg);
}

TW_TEST(deferred, failure_skips_callbacks_to_the_next_errback)
{
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    tw_deferred_add_callback(d, pass, ARG('x'));               /* skipped */
    tw_deferred_add_callbacks(d, pass, recover, ARG(7), NULL); /* R: back to callbacks */
    tw_deferred_add_errback(d, pass, ARG('y'));                /* skipped: a value now */
    tw_deferred_add_callback(d, add_one, ARG('a'));            /* a */
    tw_deferred_add_callback(d, fail_with, ARG(TW_EUSER));     /* F: to the errbacks */
    tw_deferred_add_callback(d, pass, ARG('z'));               /* skipped */
    tw_deferred_add_callbacks(d, pass, keep, ARG('w'), NULL);  /* keep the failure */
    tw_deferred_errback(d, failure(TW_EINVAL));
    cr_assert_str_eq(trace, "RaF");
    cr_assert(tw_result_is_failure(kept));
    cr_assert_eq(tw_failure_code(kept.failure), TW_EUSER);
    tw_result_release(&kept);
    tw_deferred_unref(d);
}

TW_TEST(deferred, add_both_sees_values_and_failures)
{
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    tw_deferred_add_both(d, pass, ARG('1'));
    tw_deferred_add_callback(d, fail_with, ARG(TW_EUSER));
    tw_deferred_add_both(d, pass, ARG('2'));
    tw_deferred_add_errback(d, keep, NULL);
    tw_deferred_callback(d, tw_result_from_int(1));
    cr_assert_str_eq(trace, "1F2");
    cr_assert_eq(tw_failure_code(kept.failure), TW_EUSER);
    tw_result_release(&kept);
    tw_deferred_unref(d);
}

TW_TEST(deferred, null_side_passes_the_result_through_unchanged)
{
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    tw_deferred_add_callbacks(d, NULL, recover, ARG(0), count_arg_release); /* value passes */
    tw_deferred_add_callback(d, keep, NULL);
    tw_result v = tracked(42);
    void *p = v.value;
    tw_deferred_callback(d, v);
    cr_assert_eq(kept.value, p, "the very same value arrives");
    cr_assert_eq(arg_releases, 1, "a pair passed through is done with");
    cr_assert_str_eq(trace, "");
    tw_result_release(&kept);
    cr_assert_eq(released, 1);
    tw_deferred_unref(d);

    tw_deferred *e = tw_deferred_new(NULL, NULL);
    tw_deferred_add_callbacks(e, pass, NULL, ARG('x'), count_arg_release); /* failure passes */
    tw_deferred_add_errback(e, keep, NULL);
    tw_failure *f = failure(TW_EUSER);
    tw_deferred_errback(e, f);
    cr_assert_eq(kept.failure, f, "the very same failure arrives");
    cr_assert_eq(arg_releases, 2);
    cr_assert_str_eq(trace, "");
    tw_result_release(&kept);
    tw_deferred_unref(e);
}

TW_TEST(deferred, callbacks_added_after_firing_run_at_once)
{
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    tw_deferred_callback(d, tw_result_from_int(1));
    tw_deferred_add_callback(d, add_one, ARG('a'));
    cr_assert_str_eq(trace, "a", "ran inside add_callback");
    tw_deferred_add_callback(d, add_one, ARG('b'));
    cr_assert_str_eq(trace, "ab");
    tw_deferred_add_callback(d, keep, NULL);
    cr_assert_eq(tw_result_int(kept), 3, "each late callback got the previous one's result");
    tw_deferred_unref(d);
}

static tw_result add_more(tw_result r, void *arg)
{
    mark('M');
    tw_deferred_add_callback(arg, pass, ARG('n'));
    cr_assert_str_eq(trace, "M", "a callback added from a running callback waits its turn");
    return r;
}

TW_TEST(deferred, callback_added_by_a_running_callback_runs_after_it)
{
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    tw_deferred_add_callback(d, add_more, d);
    tw_deferred_callback(d, tw_result_from_int(0));
    cr_assert_str_eq(trace, "Mn");
    tw_deferred_unref(d);
}

/* ---- Ownership of results and arguments */

static tw_result replace_tracked(tw_result r, void *arg)
{
    int v = tracked_value(r);
    tw_result_release(&r);
    return tracked(v + (int)(intptr_t)arg);
}

TW_TEST(deferred, every_result_is_released_exactly_once)
{
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    tw_deferred_add_callbacks(d, replace_tracked, NULL, ARG(1), count_arg_release);
    tw_deferred_add_callbacks(d, replace_tracked, NULL, ARG(2), count_arg_release);
    tw_deferred_add_callbacks(d, NULL, recover, ARG(0), count_arg_release);
    tw_deferred_callback(d, tracked(1));
    cr_assert_eq(released, 2, "two values replaced");
    cr_assert_eq(arg_releases, 3);
    tw_deferred_unref(d);
    cr_assert_eq(released, 3, "the last one went with the deferred");
}

TW_TEST(deferred, release_without_firing_releases_every_pair_argument)
{
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    for (int i = 0; i < 10; i++) /* past the inline room */
        cr_assert_eq(tw_deferred_add_callbacks(d, pass, pass, ARG('x'), count_arg_release), 0);
    tw_deferred_unref(d);
    cr_assert_eq(arg_releases, 10);
    cr_assert_str_eq(trace, "");
}

TW_TEST(deferred, release_while_paused_releases_result_and_pairs)
{
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    tw_deferred_pause(d);
    tw_deferred_add_callbacks(d, pass, pass, ARG('x'), count_arg_release);
    tw_deferred_callback(d, tracked(5));
    tw_deferred_add_callbacks(d, pass, pass, ARG('y'), count_arg_release);
    cr_assert_str_eq(trace, "");
    tw_deferred_unref(d);
    cr_assert_eq(released, 1);
    cr_assert_eq(arg_releases, 2);
}

static tw_result drop_deferred(tw_result r, void *arg)
{
    mark('D');
    tw_deferred_unref(arg);
    return r;
}

TW_TEST(deferred, callbacks_keep_running_after_a_callback_drops_the_last_reference)
{
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    tw_deferred_add_callback(d, drop_deferred, d);
    tw_deferred_add_callback(d, replace_tracked, ARG(1));
    tw_deferred_add_callbacks(d, pass, NULL, ARG('z'), count_arg_release);
    tw_deferred_callback(d, tracked(1));
    cr_assert_str_eq(trace, "Dz");
    cr_assert_eq(arg_releases, 1);
    cr_assert_eq(released, 2, "the deferred went once its chain ended");
}

TW_TEST(deferred, ref_and_unref)
{
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    cr_assert_eq(tw_deferred_ref(d), d);
    tw_deferred_add_callbacks(d, pass, pass, ARG('x'), count_arg_release);
    tw_deferred_unref(d);
    cr_assert_eq(arg_releases, 0, "one reference is left");
    tw_deferred_unref(d);
    cr_assert_eq(arg_releases, 1);
    tw_deferred_unref(NULL);
    cr_assert_null(tw_deferred_ref(NULL));
}

/* ---- Deferreds returned from callbacks */

static tw_result return_deferred(tw_result r, void *arg)
{
    mark('r');
    tw_result_release(&r);
    return tw_result_deferred(tw_deferred_ref(arg));
}

TW_TEST(deferred, returning_a_fired_deferred_continues_with_its_result)
{
    tw_deferred *inner = tw_succeed(tracked(5));
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    tw_deferred_add_callback(d, return_deferred, inner);
    tw_deferred_add_callback(d, keep, NULL);
    tw_deferred_callback(d, tw_result_from_int(0));
    cr_assert_str_eq(trace, "r");
    cr_assert_eq(tracked_value(kept), 5);
    /* The inner's own chain goes on with NULL (the value moved). */
    tw_deferred_add_callback(inner, pass, ARG('i'));
    tw_deferred_add_callback(inner, keep, NULL);
    cr_assert_null(kept.value);
    cr_assert_eq(released, 1);
    tw_deferred_unref(inner);
    tw_deferred_unref(d);
}

TW_TEST(deferred, returning_an_unfired_deferred_pauses_until_it_fires)
{
    tw_deferred *inner = tw_deferred_new(NULL, NULL);
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    tw_deferred_add_callback(d, return_deferred, inner);
    tw_deferred_add_callback(d, add_one, ARG('a'));
    tw_deferred_add_callback(d, keep, NULL);
    tw_deferred_callback(d, tw_result_from_int(0));
    cr_assert_str_eq(trace, "r");
    cr_assert_eq(kept_calls, 0, "waiting for inner");
    tw_deferred_add_callback(d, pass, ARG('b')); /* added while waiting: waits too */
    cr_assert_str_eq(trace, "r");
    tw_deferred_add_callback(inner, pass, ARG('i')); /* before the continuation? no: after */
    tw_deferred_callback(inner, tw_result_from_int(41));
    cr_assert_str_eq(trace, "rabi", "the outer chain goes on first, then the inner's rest");
    cr_assert_eq(tw_result_int(kept), 42);
    tw_deferred_unref(inner);
    tw_deferred_unref(d);
}

TW_TEST(deferred, a_failure_from_the_returned_deferred_goes_to_the_errbacks)
{
    tw_deferred *inner = tw_deferred_new(NULL, NULL);
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    tw_deferred_add_callback(d, return_deferred, inner);
    tw_deferred_add_callback(d, pass, ARG('x'));
    tw_deferred_add_errback(d, keep, NULL);
    tw_deferred_callback(d, tw_result_from_int(0));
    tw_deferred_errback(inner, failure(TW_EUSER));
    cr_assert_str_eq(trace, "r");
    cr_assert_eq(tw_failure_code(kept.failure), TW_EUSER);
    tw_result_release(&kept);
    tw_deferred_unref(inner);
    tw_deferred_unref(d);
}

TW_TEST(deferred, returning_a_fired_but_paused_deferred_waits_for_its_unpause)
{
    tw_deferred *inner = tw_succeed(tw_result_from_int(3));
    tw_deferred_pause(inner);
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    tw_deferred_add_callback(d, return_deferred, inner);
    tw_deferred_add_callback(d, keep, NULL);
    tw_deferred_callback(d, tw_result_from_int(0));
    cr_assert_eq(kept_calls, 0);
    cr_assert_eq(tw_deferred_unpause(inner), 0);
    cr_assert_eq(kept_calls, 1);
    cr_assert_eq(tw_result_int(kept), 3);
    tw_deferred_unref(inner);
    tw_deferred_unref(d);
}

TW_TEST(deferred, nested_returns_resume_in_order)
{
    /* a's callback returns b, b's returns c; c fires last. */
    tw_deferred *a = tw_deferred_new(NULL, NULL);
    tw_deferred *b = tw_deferred_new(NULL, NULL);
    tw_deferred *c = tw_deferred_new(NULL, NULL);
    tw_deferred_add_callback(a, return_deferred, b);
    tw_deferred_add_callback(a, add_one, ARG('A'));
    tw_deferred_add_callback(a, keep, NULL);
    tw_deferred_add_callback(b, return_deferred, c);
    tw_deferred_add_callback(b, add_one, ARG('B'));
    tw_deferred_callback(a, tw_result_from_int(0));
    tw_deferred_callback(b, tw_result_from_int(0));
    cr_assert_str_eq(trace, "rr");
    tw_deferred_callback(c, tw_result_from_int(100));
    cr_assert_str_eq(trace, "rrBA");
    cr_assert_eq(tw_result_int(kept), 102);
    tw_deferred_unref(a);
    tw_deferred_unref(b);
    tw_deferred_unref(c);
}

TW_TEST(deferred, outer_dropped_while_waiting_still_runs_its_callbacks)
{
    tw_deferred *inner = tw_deferred_new(NULL, NULL); /* the producer's reference */
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    tw_deferred_add_callback(d, return_deferred, inner);
    tw_deferred_add_callbacks(d, keep, keep, NULL, count_arg_release);
    tw_deferred_callback(d, tw_result_from_int(0));
    tw_deferred_unref(d); /* the caller is not interested any more */
    cr_assert_eq(arg_releases, 0, "kept alive by the deferred it waits on");
    tw_deferred_callback(inner, tracked(9));
    cr_assert_eq(kept_calls, 1, "the rest of its chain ran");
    cr_assert_eq(tracked_value(kept), 9);
    cr_assert_eq(arg_releases, 1);
    tw_result_release(&kept);
    tw_deferred_unref(inner);
    cr_assert_eq(released, 1);
}

TW_TEST(deferred, outer_and_inner_dropped_unfired_release_everything)
{
    tw_deferred *inner = tw_deferred_new(NULL, NULL);
    tw_deferred_add_callbacks(inner, pass, pass, ARG('i'), count_arg_release);
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    tw_deferred_add_callback(d, return_deferred, inner);
    tw_deferred_add_callbacks(d, pass, pass, ARG('o'), count_arg_release);
    tw_deferred_callback(d, tw_result_from_int(0));
    tw_deferred_unref(inner); /* d still holds it: d can still cancel it */
    cr_assert_eq(arg_releases, 0);
    tw_deferred_unref(d); /* nobody can fire either now */
    cr_assert_eq(arg_releases, 2, "both chains released (ASan checks the memory)");
    cr_assert_str_eq(trace, "r");
}

TW_TEST(deferred, outer_holding_the_only_reference_to_its_inner_can_cancel_it)
{
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    tw_deferred *inner = tw_deferred_new(NULL, NULL);
    tw_deferred_add_callback(d, return_deferred, inner);
    tw_deferred_add_callbacks(d, pass, pass, ARG('o'), count_arg_release);
    tw_deferred_add_errback(d, keep, NULL);
    tw_deferred_callback(d, tw_result_from_int(0));
    tw_deferred_unref(inner); /* d holds the only reference to it now */
    tw_deferred_cancel(d);    /* so d can still cancel it: the cancellation arrives */
    cr_assert_str_eq(trace, "ro");
    cr_assert_eq(arg_releases, 1);
    cr_assert_eq(tw_failure_code(kept.failure), TW_ECANCELED);
    tw_result_release(&kept);
    tw_deferred_unref(d);
}

TW_TEST(deferred, two_deferreds_waiting_on_one_first_takes_the_result)
{
    tw_deferred *inner = tw_deferred_new(NULL, NULL);
    tw_deferred *a = tw_deferred_new(NULL, NULL);
    tw_deferred *b = tw_deferred_new(NULL, NULL);
    tw_result got[2] = {{0}, {0}};
    tw_deferred_add_callback(a, return_deferred, inner);
    tw_deferred_add_callback(b, return_deferred, inner);
    tw_deferred_add_callback(a, keep, NULL);
    tw_deferred_callback(a, tw_result_from_int(0));
    tw_deferred_callback(b, tw_result_from_int(0));
    tw_deferred_callback(inner, tracked(3)); /* a waited first */
    got[0] = kept;
    kept = (tw_result){0};
    tw_deferred_add_callback(b, keep, NULL);
    got[1] = kept;
    cr_assert_eq(tracked_value(got[0]), 3);
    cr_assert_null(got[1].value, "as Twisted: the second gets what the first left (None)");
    tw_result_release(&got[0]);
    cr_assert_eq(released, 1);
    tw_deferred_unref(a);
    tw_deferred_unref(b);
    tw_deferred_unref(inner);
}

TW_TEST(deferred, a_failure_handed_to_the_waiting_deferred_is_unhandled_there_only)
{
    tw_testing_log_capture_start();
    size_t before = tw_deferred_unhandled_count();
    tw_deferred *inner = tw_deferred_new(NULL, NULL);
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    tw_deferred_add_callback(d, return_deferred, inner);
    tw_deferred_callback(d, tw_result_from_int(0));
    tw_deferred_errback(inner, tw_failure_new(TW_EUSER, NULL, "moved on"));
    tw_deferred_unref(inner);
    cr_assert_eq(tw_deferred_unhandled_count(), before, "the inner has no failure left");
    tw_deferred_unref(d);
    cr_assert_eq(tw_deferred_unhandled_count(), before + 1);
    cr_assert_eq(tw_testing_log_count("moved on"), 1);
    tw_testing_log_capture_stop();
    tw_testing_begin();
}

static tw_result add_to_inner(tw_result r, void *arg)
{
    mark('O');
    tw_deferred_add_callback(arg, pass, ARG('j'));
    return r;
}

TW_TEST(deferred, callbacks_added_to_a_deferred_handing_its_result_up_run_after)
{
    /* inner hands its result to d (d is pushed on inner's loop); d's callback
     * adds to inner, which is still in that loop: it runs when the loop gets
     * back to inner, after d's chain, not in a nested run. */
    tw_deferred *inner = tw_deferred_new(NULL, NULL);
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    tw_deferred_add_callback(d, return_deferred, inner);
    tw_deferred_add_callback(d, add_to_inner, inner);
    tw_deferred_add_callback(d, pass, ARG('P'));
    tw_deferred_callback(d, tw_result_from_int(0));
    tw_deferred_callback(inner, tw_result_from_int(0));
    cr_assert_str_eq(trace, "rOPj");
    tw_deferred_unref(inner);
    tw_deferred_unref(d);
}

/* ---- Pause */

TW_TEST(deferred, pause_holds_results_until_the_matching_unpause)
{
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    tw_deferred_add_callback(d, add_one, ARG('a'));
    tw_deferred_pause(d);
    tw_deferred_pause(d);
    tw_deferred_callback(d, tw_result_from_int(0));
    tw_deferred_add_callback(d, add_one, ARG('b'));
    cr_assert_str_eq(trace, "", "paused: nothing runs, not even late callbacks");
    cr_assert_eq(tw_deferred_unpause(d), 0);
    cr_assert_str_eq(trace, "", "pauses nest");
    cr_assert_eq(tw_deferred_unpause(d), 0);
    cr_assert_str_eq(trace, "ab");
    cr_assert_eq(tw_deferred_unpause(d), TW_EPAUSED);
    tw_deferred_add_callback(d, keep, NULL);
    cr_assert_eq(tw_result_int(kept), 2);
    tw_deferred_unref(d);
}

TW_TEST(deferred, unpause_before_firing_runs_nothing)
{
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    tw_deferred_add_callback(d, pass, ARG('a'));
    tw_deferred_pause(d);
    cr_assert_eq(tw_deferred_unpause(d), 0);
    cr_assert_str_eq(trace, "");
    tw_deferred_callback(d, tw_result_from_int(0));
    cr_assert_str_eq(trace, "a");
    tw_deferred_unref(d);
}

static tw_result pause_own(tw_result r, void *arg)
{
    mark('P');
    tw_deferred_pause(arg);
    return r;
}

TW_TEST(deferred, pausing_from_a_callback_stops_the_rest_of_the_chain)
{
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    tw_deferred_add_callback(d, pause_own, d);
    tw_deferred_add_callback(d, pass, ARG('a'));
    tw_deferred_callback(d, tw_result_from_int(0));
    cr_assert_str_eq(trace, "P");
    tw_deferred_unpause(d);
    cr_assert_str_eq(trace, "Pa");
    tw_deferred_unref(d);
}

TW_TEST(deferred, waiting_is_not_a_pause_the_user_can_undo)
{
    tw_deferred *inner = tw_deferred_new(NULL, NULL);
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    tw_deferred_add_callback(d, return_deferred, inner);
    tw_deferred_add_callback(d, pass, ARG('a'));
    tw_deferred_callback(d, tw_result_from_int(0));
    cr_assert_eq(tw_deferred_unpause(d), TW_EPAUSED);
    cr_assert_str_eq(trace, "r");
    tw_deferred_callback(inner, tw_result_from_int(0));
    cr_assert_str_eq(trace, "ra");
    tw_deferred_unref(inner);
    tw_deferred_unref(d);
}

TW_TEST(deferred, paused_outer_resumed_by_its_inner_waits_for_its_own_unpause)
{
    tw_deferred *inner = tw_deferred_new(NULL, NULL);
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    tw_deferred_add_callback(d, return_deferred, inner);
    tw_deferred_add_callback(d, pass, ARG('a'));
    tw_deferred_callback(d, tw_result_from_int(0));
    tw_deferred_pause(d);
    tw_deferred_add_callback(inner, pass, ARG('i'));
    tw_deferred_callback(inner, tw_result_from_int(0));
    cr_assert_str_eq(trace, "ri", "the inner's chain is not held up by the paused outer");
    tw_deferred_unpause(d);
    cr_assert_str_eq(trace, "ria");
    tw_deferred_unref(inner);
    tw_deferred_unref(d);
}

/* ---- chainDeferred */

TW_TEST(deferred, chain_fires_the_other_and_goes_on_with_null)
{
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    tw_deferred *other = tw_deferred_new(NULL, NULL);
    tw_deferred_add_callback(other, keep, NULL);
    cr_assert_eq(tw_deferred_chain(d, other), 0);
    tw_deferred_unref(other); /* chain took its own reference */
    tw_deferred_add_callback(d, add_one, ARG('a'));
    tw_deferred_callback(d, tracked(8));
    cr_assert_eq(tracked_value(kept), 8, "other got the value");
    cr_assert_str_eq(trace, "a");
    tw_deferred_add_callback(d, add_one, ARG('b'));
    tw_deferred_add_callback(d, keep, NULL);
    cr_assert_eq(tw_result_int(kept), 2, "d went on with NULL (0), then +1 twice");
    cr_assert_eq(released, 1);
    tw_deferred_unref(d);
}

TW_TEST(deferred, chain_passes_a_failure_and_d_goes_on_with_null)
{
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    tw_deferred *other = tw_deferred_new(NULL, NULL);
    tw_deferred_add_errback(other, keep, NULL);
    tw_deferred_chain(d, other);
    tw_deferred_add_callbacks(d, pass, pass, ARG('c'), NULL);
    tw_deferred_errback(d, failure(TW_EUSER));
    cr_assert_eq(tw_failure_code(kept.failure), TW_EUSER);
    cr_assert_str_eq(trace, "c");
    tw_result_release(&kept);
    tw_deferred_unref(other);
    tw_deferred_unref(d); /* no unhandled failure: d's went to other */
}

TW_TEST(deferred, chain_rejects_itself)
{
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    cr_assert_eq(tw_deferred_chain(d, d), TW_EINVAL);
    cr_assert_eq(tw_deferred_chain(d, NULL), TW_EINVAL);
    tw_deferred_unref(d);
}

TW_TEST(deferred, chain_to_a_fired_deferred_fails_d_with_already_called)
{
    tw_testing_log_capture_start();
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    tw_deferred *other = tw_succeed(tw_result_from_int(1));
    tw_deferred_chain(d, other);
    tw_deferred_add_errback(d, keep, NULL);
    tw_deferred_callback(d, tracked(3));
    cr_assert_eq(released, 1, "the value other refused is released");
    cr_assert_eq(tw_failure_code(kept.failure), TW_EALREADYCALLED);
    cr_assert_eq(tw_testing_log_count("already called"), 1);
    tw_result_release(&kept);
    tw_deferred_unref(other);
    tw_deferred_unref(d);
    tw_testing_log_capture_stop();
}

/* ---- Ready-made deferreds */

TW_TEST(deferred, succeed_fail_and_maybe_deferred)
{
    tw_deferred *d = tw_succeed(tw_result_from_int(4));
    cr_assert(tw_deferred_called(d));
    tw_deferred_add_callback(d, keep, NULL);
    cr_assert_eq(tw_result_int(kept), 4);
    tw_deferred_unref(d);

    d = tw_fail(failure(TW_EUSER));
    cr_assert(tw_deferred_called(d));
    tw_deferred_add_errback(d, keep, NULL);
    cr_assert_eq(tw_failure_code(kept.failure), TW_EUSER);
    tw_result_release(&kept);
    tw_deferred_unref(d);
}

static tw_result produce(void *arg)
{
    mark('p');
    return *(tw_result *)arg;
}

TW_TEST(deferred, maybe_deferred_wraps_values_failures_and_deferreds)
{
    tw_result v = tw_result_from_int(6);
    tw_deferred *d = tw_maybe_deferred(produce, &v);
    tw_deferred_add_callback(d, keep, NULL);
    cr_assert_eq(tw_result_int(kept), 6);
    tw_deferred_unref(d);

    tw_result f = tw_result_fail(failure(TW_EUSER));
    d = tw_maybe_deferred(produce, &f);
    tw_deferred_add_errback(d, keep, NULL);
    cr_assert_eq(tw_failure_code(kept.failure), TW_EUSER);
    tw_result_release(&kept);
    tw_deferred_unref(d);

    tw_deferred *same = tw_deferred_new(NULL, NULL);
    tw_result r = tw_result_deferred(tw_deferred_ref(same));
    d = tw_maybe_deferred(produce, &r);
    cr_assert_eq(d, same, "a returned deferred is passed on as it is");
    cr_assert_str_eq(trace, "ppp");
    tw_deferred_unref(d);
    tw_deferred_unref(same);
}

/* ---- Unhandled failures and misuse */

TW_TEST(deferred, unhandled_failure_is_logged_and_counted_at_release)
{
    tw_testing_log_capture_start();
    size_t before = tw_deferred_unhandled_count();
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    tw_deferred_add_callback(d, pass, ARG('x'));
    tw_deferred_errback(d, tw_failure_new(TW_EUSER, NULL, "nobody handled me"));
    cr_assert_eq(tw_deferred_unhandled_count(), before, "not before the release");
    tw_deferred_unref(d);
    cr_assert_eq(tw_deferred_unhandled_count(), before + 1);
    cr_assert_eq(tw_testing_log_count("Unhandled error in Deferred"), 1);
    cr_assert_eq(tw_testing_log_count("nobody handled me"), 1, "with the failure");
    cr_assert(strstr(tw_testing_log_text(), "error: Unhandled error in Deferred"),
              "at error level: %s", tw_testing_log_text());
    tw_testing_log_capture_stop();
    tw_testing_begin(); /* that one was on purpose */
}

TW_TEST(deferred, handled_failure_is_not_logged)
{
    tw_testing_log_capture_start();
    size_t before = tw_deferred_unhandled_count();
    tw_deferred *d = tw_fail(failure(TW_EUSER));
    tw_deferred_add_errback(d, recover, ARG(0));
    tw_deferred_unref(d);
    cr_assert_eq(tw_deferred_unhandled_count(), before);
    cr_assert_eq(tw_testing_log_count("Unhandled"), 0);
    tw_testing_log_capture_stop();
}

TW_TEST(deferred, unhandled_failure_of_a_paused_deferred_is_logged_too)
{
    tw_testing_log_capture_start();
    size_t before = tw_deferred_unhandled_count();
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    tw_deferred_pause(d);
    tw_deferred_add_errback(d, recover, ARG(0)); /* never gets to run */
    tw_deferred_errback(d, failure(TW_EUSER));
    tw_deferred_unref(d);
    cr_assert_eq(tw_deferred_unhandled_count(), before + 1);
    cr_assert_eq(tw_testing_log_count("Unhandled error in Deferred"), 1);
    tw_testing_log_capture_stop();
    tw_testing_begin();
}

TW_TEST(deferred, firing_twice_is_an_error_logged_and_the_result_released)
{
    tw_testing_log_capture_start();
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    tw_deferred_add_callback(d, keep, NULL);
    cr_assert_eq(tw_deferred_callback(d, tw_result_from_int(1)), 0);
    cr_assert_eq(tw_deferred_callback(d, tracked(2)), TW_EALREADYCALLED);
    cr_assert_eq(released, 1);
    cr_assert_eq(tw_deferred_errback(d, failure(TW_EUSER)), TW_EALREADYCALLED);
    cr_assert_eq(kept_calls, 1, "the chain did not run again");
    cr_assert_eq(tw_result_int(kept), 1);
    cr_assert_eq(tw_testing_log_count("already called"), 2);
    cr_assert_eq(tw_deferred_unhandled_count(), tw_deferred_unhandled_count());
    tw_deferred_unref(d);
    tw_testing_log_capture_stop();
}

static int destroyed;
static void count_destroyed(void *arg)
{
    (void)arg;
    destroyed++;
}

TW_TEST(deferred, firing_with_a_deferred_is_einval_and_releases_it)
{
    tw_testing_log_capture_start();
    tw_deferred *x = tw_deferred_new(NULL, NULL);
    tw_deferred_add_callbacks(x, NULL, NULL, NULL, count_destroyed);
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    cr_assert_eq(tw_deferred_callback(d, tw_result_deferred(x)), TW_EINVAL);
    cr_assert_eq(destroyed, 1, "its reference was dropped");
    cr_assert_not(tw_deferred_called(d));
    cr_assert_eq(tw_testing_log_count("fired with a deferred"), 1);
    cr_assert_eq(tw_deferred_callback(d, tw_result_from_int(1)), 0, "still fireable");
    tw_deferred_unref(d);
    tw_testing_log_capture_stop();
}

static tw_result return_own(tw_result r, void *arg)
{
    tw_result_release(&r);
    return tw_result_deferred(tw_deferred_ref(arg));
}

TW_TEST(deferred, a_callback_returning_its_own_deferred_fails_it)
{
    tw_testing_log_capture_start();
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    tw_deferred_add_callback(d, return_own, d);
    tw_deferred_add_errback(d, keep, NULL);
    tw_deferred_callback(d, tw_result_from_int(0));
    cr_assert_eq(tw_failure_code(kept.failure), TW_EINVAL);
    cr_assert_eq(tw_testing_log_count("returned the deferred it was added to"), 1);
    tw_result_release(&kept);
    tw_deferred_unref(d);
    tw_testing_log_capture_stop();
}

TW_TEST(deferred, errback_without_a_failure_is_einval)
{
    tw_testing_log_capture_start();
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    cr_assert_eq(tw_deferred_errback(d, NULL), TW_EINVAL);
    cr_assert_not(tw_deferred_called(d));
    tw_deferred_unref(d);
    cr_assert_eq(tw_deferred_add_callback(NULL, pass, NULL), TW_EINVAL);
    tw_testing_log_capture_stop();
}

/* ---- Allocation failure */

TW_TEST(deferred, new_succeed_and_fail_fail_cleanly_without_memory)
{
    tw_result v = tracked(1);
    tw_failure *f = failure(TW_EUSER);
    tw_testing_fail_alloc_after(0);
    cr_assert_null(tw_deferred_new(NULL, NULL));
    cr_assert_null(tw_succeed(v));
    cr_assert_null(tw_fail(f)); /* f released: ASan would see it leak */
    tw_testing_fail_alloc_off();
    cr_assert_eq(released, 1, "what they were given is released");
}

TW_TEST(deferred, add_callbacks_fails_cleanly_at_every_allocation)
{
    for (long n = 0;; n++) {
        tw_testing_fail_alloc_after(n);
        tw_deferred *d = tw_deferred_new(NULL, NULL);
        int added = 0;
        int rc = 0;
        for (int i = 0; d && i < 40; i++) {
            rc = tw_deferred_add_callbacks(d, add_one, NULL, ARG('a'), count_arg_release);
            if (rc < 0)
                break;
            added++;
        }
        tw_testing_fail_alloc_off();
        if (!d)
            continue;
        cr_assert(rc == 0 || rc == TW_ENOMEM, "n=%ld: %d", n, rc);
        arg_releases = 0;
        cr_assert_eq(tw_deferred_add_callback(d, keep, NULL), 0, "usable after a failure");
        tw_deferred_callback(d, tw_result_from_int(0));
        cr_assert_eq(tw_result_int(kept), added, "n=%ld: a failed add added nothing", n);
        cr_assert_eq(arg_releases, added, "arg_release only for pairs added");
        tw_deferred_unref(d);
        if (rc == 0)
            break;
    }
}

TW_TEST(deferred, waiting_without_memory_fails_the_chain_with_enomem)
{
    tw_deferred *inner = tw_deferred_new(NULL, NULL);
    for (int i = 0; i < 4; i++) /* fill its inline room: the continuation must allocate */
        tw_deferred_add_callback(inner, pass, ARG('i'));
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    tw_deferred_add_callback(d, return_deferred, inner);
    tw_deferred_add_callback(d, pass, ARG('x'));
    tw_deferred_add_errback(d, keep, NULL);
    tw_testing_fail_alloc_after(0);
    tw_deferred_callback(d, tw_result_from_int(0));
    tw_testing_fail_alloc_off();
    cr_assert_eq(tw_failure_code(kept.failure), TW_ENOMEM);
    tw_result_release(&kept);
    tw_deferred_callback(inner, tw_result_from_int(0));
    cr_assert_str_eq(trace, "riiii", "inner unaffected, d no longer waits for it");
    tw_deferred_unref(d);
    tw_deferred_unref(inner);
}

TW_TEST(deferred, chain_fails_cleanly_without_memory)
{
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    tw_deferred *other = tw_deferred_new(NULL, NULL);
    for (int i = 0; i < 4; i++)
        tw_deferred_add_callback(d, pass, ARG('d'));
    tw_testing_fail_alloc_after(0);
    cr_assert_eq(tw_deferred_chain(d, other), TW_ENOMEM);
    tw_testing_fail_alloc_off();
    tw_deferred_unref(other); /* no reference was taken: this frees it */
    tw_deferred_callback(d, tw_result_from_int(0));
    cr_assert_str_eq(trace, "dddd");
    tw_deferred_unref(d);
}
