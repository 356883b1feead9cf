/* DeferredList (every flag combination), gatherResults and race. */
#include "helpers.h"

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
    tw_deferred_callback(d, tracked((int)(intptr_t)arg));
}

/* n fresh inputs; *hold gets the test's own references (the combinator takes
 * over the ones in ds). */
static void make_inputs(tw_deferred **ds, tw_deferred **hold, size_t n, tw_canceller_fn canceller)
{
    for (size_t i = 0; i < n; i++) {
        ds[i] = tw_deferred_new(canceller, ARG(100 + i));
        hold[i] = tw_deferred_ref(ds[i]);
    }
}

static void drop_all(tw_deferred **ds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        tw_deferred_unref(ds[i]);
}

static const tw_deferred_list_result *as_list(tw_result r)
{
    cr_assert_null(r.failure, "expected a list, got a failure");
    cr_assert_not_null(r.value);
    return r.value;
}

static const tw_deferred_first_result *as_first(tw_result r)
{
    cr_assert_null(r.failure, "expected a first_result, got a failure");
    cr_assert_not_null(r.value);
    return r.value;
}

/* ---- DeferredList */

TW_TEST(list, fires_when_all_have_fired_with_results_in_input_order)
{
    tw_deferred *ds[3], *in[3];
    make_inputs(ds, in, 3, NULL);
    tw_deferred *dl = tw_deferred_list(ds, 3, TW_DL_CONSUME_ERRORS);
    tw_deferred_add_callback(dl, keep, NULL);
    tw_deferred_callback(in[2], tracked(2));
    tw_deferred_errback(in[0], failure(TW_EUSER));
    cr_assert_eq(kept_calls, 0, "one input still out");
    tw_deferred_callback(in[1], tracked(1));
    cr_assert_eq(kept_calls, 1);
    const tw_deferred_list_result *list = as_list(kept);
    cr_assert_eq(list->count, 3);
    cr_assert_not(list->items[0].success);
    cr_assert_eq(tw_failure_code(list->items[0].result.failure), TW_EUSER);
    cr_assert(list->items[1].success);
    cr_assert_eq(tracked_value(list->items[1].result), 1);
    cr_assert(list->items[2].success);
    cr_assert_eq(tracked_value(list->items[2].result), 2);
    cr_assert_eq(released, 0, "values moved into the list, not copied");
    tw_result_release(&kept);
    cr_assert_eq(released, 2, "releasing the list releases its items");
    drop_all(in, 3);
    tw_deferred_unref(dl);
}

TW_TEST(list, values_move_out_of_the_inputs)
{
    tw_deferred *ds[1], *in[1];
    make_inputs(ds, in, 1, NULL);
    tw_deferred *dl = tw_deferred_list(ds, 1, 0);
    tw_deferred_add_callback(in[0], keep, NULL); /* after the list's pair */
    tw_deferred_callback(in[0], tracked(4));
    cr_assert_eq(kept_calls, 1);
    cr_assert_null(kept.value, "the input's chain goes on with NULL");
    tw_deferred_add_callback(dl, keep, NULL);
    cr_assert_eq(tracked_value(as_list(kept)->items[0].result), 4);
    tw_result_release(&kept);
    drop_all(in, 1);
    tw_deferred_unref(dl);
}

TW_TEST(list, without_consume_errors_the_failure_stays_in_the_input_too)
{
    tw_testing_log_capture_start();
    size_t before = tw_deferred_unhandled_count();
    tw_deferred *ds[1], *in[1];
    make_inputs(ds, in, 1, NULL);
    tw_deferred *dl = tw_deferred_list(ds, 1, 0);
    tw_failure *f = failure(TW_EUSER);
    tw_deferred_errback(in[0], f);
    tw_deferred_add_callback(dl, keep, NULL);
    cr_assert_eq(as_list(kept)->items[0].result.failure, f, "the same failure, shared");
    tw_result_release(&kept);
    tw_deferred_unref(dl);
    tw_deferred_unref(in[0]); /* as Twisted: unhandled in the input */
    cr_assert_eq(tw_deferred_unhandled_count(), before + 1);
    cr_assert_eq(tw_testing_log_count("Unhandled error in Deferred"), 1);
    tw_testing_log_capture_stop();
    tw_testing_begin();
}

/* One scenario under every flag combination: input 1 fails first, then input
 * 0 and input 2 succeed. What the list fires with, and what each input's own
 * chain goes on with, follows from the flags. */
TW_TEST(list, every_flag_combination)
{
    for (unsigned flags = 0; flags < 8; flags++) {
        bool fooc = flags & TW_DL_FIRE_ON_ONE_CALLBACK;
        bool fooe = flags & TW_DL_FIRE_ON_ONE_ERRBACK;
        bool consume = flags & TW_DL_CONSUME_ERRORS;
        released = 0;
        tw_deferred *ds[3], *in[3];
        make_inputs(ds, in, 3, NULL);
        tw_deferred *dl = tw_deferred_list(ds, 3, flags);
        tw_result out = {0};
        tw_deferred_add_both(dl, keep, NULL);
        tw_result after[3];
        for (int i = 0; i < 3; i++) {
            kept_calls = 0;
            kept = (tw_result){0};
            if (i == 0)
                tw_deferred_errback(in[1], failure(TW_EUSER));
            else
                tw_deferred_callback(in[i == 1 ? 0 : 2], tracked(i == 1 ? 10 : 12));
            if (kept_calls) {
                cr_assert(out.value == NULL && out.failure == NULL, "flags %u: fired twice", flags);
                out = kept;
            }
        }
        kept = (tw_result){0};
        for (int i = 0; i < 3; i++) {
            tw_deferred_add_both(in[i], keep, NULL);
            after[i] = kept;
            kept = (tw_result){0};
        }
        if (fooe) {
            cr_assert_eq(tw_failure_code(out.failure), TW_EFIRSTERROR, "flags %u", flags);
            cr_assert_eq(tw_failure_code(tw_failure_cause(out.failure)), TW_EUSER);
            cr_assert(strstr(tw_failure_message(out.failure), "1"), "names the index: %s",
                      tw_failure_message(out.failure));
            /* The list was done before inputs 0 and 2 fired: their values stay. */
            cr_assert_eq(tracked_value(after[0]), 10, "flags %u", flags);
            cr_assert_eq(tracked_value(after[2]), 12, "flags %u", flags);
        } else if (fooc) {
            const tw_deferred_first_result *first = as_first(out);
            cr_assert_eq(first->index, 0, "flags %u", flags);
            cr_assert_eq(tracked_value(first->result), 10);
            cr_assert_null(after[0].value, "flags %u: moved into the first_result", flags);
            cr_assert_eq(tracked_value(after[2]), 12, "flags %u: list done, stays", flags);
        } else {
            const tw_deferred_list_result *list = as_list(out);
            cr_assert_eq(list->count, 3);
            cr_assert(list->items[0].success && list->items[2].success);
            cr_assert_not(list->items[1].success);
            cr_assert_eq(tracked_value(list->items[0].result), 10);
            cr_assert_eq(tracked_value(list->items[2].result), 12);
            cr_assert_eq(tw_failure_code(list->items[1].result.failure), TW_EUSER);
            cr_assert_null(after[0].value, "flags %u", flags);
            cr_assert_null(after[2].value, "flags %u", flags);
        }
        if (consume)
            cr_assert_null(after[1].failure, "flags %u: the failure stopped in the list", flags);
        else
            cr_assert_eq(tw_failure_code(after[1].failure), TW_EUSER, "flags %u", flags);
        tw_result_release(&out);
        for (int i = 0; i < 3; i++)
            tw_result_release(&after[i]);
        drop_all(in, 3);
        tw_deferred_unref(dl);
        cr_assert_eq(released, 2, "flags %u: each value released once", flags);
    }
}

TW_TEST(list, empty_fires_at_once_unless_fire_on_one_callback)
{
    for (unsigned flags = 0; flags < 8; flags++) {
        kept_calls = 0;
        tw_deferred *dl = tw_deferred_list(NULL, 0, flags);
        cr_assert_not_null(dl);
        tw_deferred_add_both(dl, keep, NULL);
        if (flags & TW_DL_FIRE_ON_ONE_CALLBACK) {
            cr_assert_eq(kept_calls, 0, "flags %u: never fires", flags);
            tw_deferred_cancel(dl);
            cr_assert_eq(tw_failure_code(kept.failure), TW_ECANCELED);
        } else {
            cr_assert_eq(kept_calls, 1, "flags %u", flags);
            cr_assert_eq(as_list(kept)->count, 0);
        }
        tw_result_release(&kept);
        tw_deferred_unref(dl);
    }
}

TW_TEST(list, fire_on_one_callback_when_all_fail_fires_with_the_list_of_failures)
{
    tw_deferred *ds[2], *in[2];
    make_inputs(ds, in, 2, NULL);
    tw_deferred *dl = tw_deferred_list(ds, 2, TW_DL_FIRE_ON_ONE_CALLBACK | TW_DL_CONSUME_ERRORS);
    tw_deferred_add_callback(dl, keep, NULL);
    tw_deferred_errback(in[0], failure(TW_EUSER));
    tw_deferred_errback(in[1], failure(TW_EINVAL));
    const tw_deferred_list_result *list = as_list(kept);
    cr_assert_eq(list->count, 2);
    cr_assert_not(list->items[0].success || list->items[1].success);
    cr_assert_eq(tw_failure_code(list->items[1].result.failure), TW_EINVAL);
    tw_result_release(&kept);
    drop_all(in, 2);
    tw_deferred_unref(dl);
}

TW_TEST(list, inputs_fired_before_the_list_is_made_count)
{
    tw_deferred *ds[2] = {tw_succeed(tracked(1)), tw_succeed(tracked(2))};
    tw_deferred *dl = tw_deferred_list(ds, 2, 0);
    cr_assert(tw_deferred_called(dl), "fired while it was being made");
    tw_deferred_add_callback(dl, keep, NULL);
    cr_assert_eq(tracked_value(as_list(kept)->items[1].result), 2);
    tw_result_release(&kept);
    tw_deferred_unref(dl);
    cr_assert_eq(released, 2);
}

TW_TEST(list, the_same_input_twice)
{
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    tw_deferred *ds[2] = {tw_deferred_ref(d), tw_deferred_ref(d)};
    tw_deferred *dl = tw_deferred_list(ds, 2, 0);
    tw_deferred_callback(d, tracked(5));
    tw_deferred_add_callback(dl, keep, NULL);
    const tw_deferred_list_result *list = as_list(kept);
    cr_assert_eq(tracked_value(list->items[0].result), 5);
    cr_assert_null(list->items[1].result.value, "the first pair took the value");
    cr_assert(list->items[1].success);
    tw_result_release(&kept);
    tw_deferred_unref(d);
    tw_deferred_unref(dl);
}

TW_TEST(list, cancelling_the_list_cancels_the_inputs_not_yet_fired)
{
    tw_deferred *ds[3], *in[3];
    make_inputs(ds, in, 3, canceller_silent);
    tw_deferred *dl = tw_deferred_list(ds, 3, TW_DL_CONSUME_ERRORS);
    tw_deferred_add_callback(dl, keep, NULL);
    tw_deferred_callback(in[1], tw_result_from_int(1));
    tw_deferred_cancel(dl);
    cr_assert_eq(canceller_calls, 2, "inputs 0 and 2, not the fired one");
    const tw_deferred_list_result *list = as_list(kept);
    cr_assert_eq(tw_failure_code(list->items[0].result.failure), TW_ECANCELED);
    cr_assert(list->items[1].success);
    cr_assert_eq(tw_failure_code(list->items[2].result.failure), TW_ECANCELED);
    tw_result_release(&kept);
    drop_all(in, 3);
    tw_deferred_unref(dl);
}

TW_TEST(list, released_unfired_lets_go_of_its_inputs)
{
    tw_deferred *ds[2], *in[2];
    make_inputs(ds, in, 2, NULL);
    tw_deferred *dl = tw_deferred_list(ds, 2, 0);
    tw_deferred_add_callbacks(dl, pass, pass, ARG('l'), count_arg_release);
    tw_deferred_unref(dl);
    cr_assert_eq(arg_releases, 1);
    /* The producers fire later: nothing to deliver to, nothing breaks. */
    tw_deferred_callback(in[0], tracked(1));
    tw_deferred_add_callback(in[0], keep, NULL);
    cr_assert_eq(tracked_value(kept), 1, "the value stayed with its input");
    tw_result_release(&kept);
    drop_all(in, 2);
    cr_assert_str_eq(trace, "");
}

TW_TEST(list, inputs_nobody_else_holds_go_with_the_list)
{
    tw_deferred *ds[2] = {tw_deferred_new(NULL, NULL), tw_deferred_new(NULL, NULL)};
    for (int i = 0; i < 2; i++)
        tw_deferred_add_callbacks(ds[i], pass, pass, ARG('x'), count_arg_release);
    tw_deferred *dl = tw_deferred_list(ds, 2, 0);
    tw_deferred_unref(dl);
    cr_assert_eq(arg_releases, 2, "both inputs released (and the group: ASan checks)");
}

TW_TEST(list, a_null_input_releases_the_others_and_returns_null)
{
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    tw_deferred_add_callbacks(d, pass, pass, ARG('x'), count_arg_release);
    tw_deferred *ds[2] = {d, NULL};
    cr_assert_null(tw_deferred_list(ds, 2, 0));
    cr_assert_eq(arg_releases, 1, "the reference it was given is released");
    cr_assert_null(tw_gather(NULL, 3, false));
}

/* Each of the three makers under failing allocations: every failure is a
 * clean NULL, with the inputs released and untouched. */
static tw_deferred *make(int which, tw_deferred **ds, size_t n)
{
    switch (which) {
    case 0:
        return tw_deferred_list(ds, n, 0);
    case 1:
        return tw_gather(ds, n, true);
    default:
        return tw_race(ds, n);
    }
}

TW_TEST(list, makers_fail_cleanly_at_every_allocation)
{
    for (int which = 0; which < 3; which++) {
        for (long n = 0;; n++) {
            tw_deferred *ds[3], *in[3];
            make_inputs(ds, in, 3, NULL);
            for (int i = 0; i < 4; i++) /* full inline room: reserving must allocate */
                tw_deferred_add_callback(in[2], add_one, ARG('+'));
            tw_testing_fail_alloc_after(n);
            tw_deferred *out = make(which, ds, 3);
            tw_testing_fail_alloc_off();
            if (!out) {
                kept = (tw_result){0};
                tw_deferred_add_callback(in[2], keep, NULL);
                tw_deferred_callback(in[2], tw_result_from_int(0));
                cr_assert_eq(tw_result_int(kept), 4, "which %d n %ld: input untouched", which, n);
                drop_all(in, 3);
                continue;
            }
            kept_calls = 0;
            tw_deferred_add_both(out, keep, NULL);
            for (int i = 0; i < 3; i++)
                tw_deferred_callback(in[i], tw_result_from_int(i));
            cr_assert_eq(kept_calls, 1, "which %d", which);
            tw_result_release(&kept);
            drop_all(in, 3);
            tw_deferred_unref(out);
            break;
        }
    }
}

/* ---- gatherResults */

TW_TEST(gather, all_values_in_input_order)
{
    tw_deferred *ds[3], *in[3];
    make_inputs(ds, in, 3, NULL);
    tw_deferred *g = tw_gather(ds, 3, false);
    tw_deferred_add_callback(g, keep, NULL);
    for (int i = 2; i >= 0; i--)
        tw_deferred_callback(in[i], tracked(i));
    const tw_deferred_list_result *list = as_list(kept);
    cr_assert_eq(list->count, 3);
    for (int i = 0; i < 3; i++) {
        cr_assert(list->items[i].success);
        cr_assert_eq(tracked_value(list->items[i].result), i);
    }
    tw_result_release(&kept);
    cr_assert_eq(released, 3);
    drop_all(in, 3);
    tw_deferred_unref(g);
}

TW_TEST(gather, the_first_failure_fails_it_with_efirsterror)
{
    for (int consume = 0; consume < 2; consume++) {
        kept_calls = 0;
        tw_deferred *ds[3], *in[3];
        make_inputs(ds, in, 3, NULL);
        tw_deferred *g = tw_gather(ds, 3, consume);
        tw_deferred_add_both(g, keep, NULL);
        tw_deferred_callback(in[0], tw_result_from_int(0));
        tw_deferred_errback(in[2], tw_failure_new(TW_EUSER, NULL, "two broke"));
        cr_assert_eq(kept_calls, 1, "at the first failure, not waiting for input 1");
        cr_assert_eq(tw_failure_code(kept.failure), TW_EFIRSTERROR);
        const tw_failure *cause = tw_failure_cause(kept.failure);
        cr_assert_str_eq(tw_failure_message(cause), "two broke");
        cr_assert(strstr(tw_failure_message(kept.failure), "2"));
        tw_result_release(&kept);
        tw_deferred_errback(in[1], failure(TW_EINVAL));
        cr_assert_eq(kept_calls, 1);
        for (int i = 1; i < 3; i++) {
            kept = (tw_result){0};
            tw_deferred_add_errback(in[i], keep, NULL);
            if (consume)
                cr_assert_null(kept.failure, "consumed");
            else
                cr_assert_not_null(kept.failure, "stays in the input");
            tw_result_release(&kept);
        }
        drop_all(in, 3);
        tw_deferred_unref(g);
    }
}

TW_TEST(gather, empty_fires_at_once)
{
    tw_deferred *g = tw_gather(NULL, 0, false);
    tw_deferred_add_callback(g, keep, NULL);
    cr_assert_eq(as_list(kept)->count, 0);
    tw_result_release(&kept);
    tw_deferred_unref(g);
}

/* ---- race */

TW_TEST(race, the_first_value_wins_and_the_others_are_cancelled)
{
    tw_deferred *ds[3], *in[3];
    make_inputs(ds, in, 3, canceller_silent);
    tw_deferred *r = tw_race(ds, 3);
    tw_deferred_add_callback(r, keep, NULL);
    tw_deferred_callback(in[1], tracked(7));
    cr_assert_eq(canceller_calls, 2);
    cr_assert(tw_deferred_called(in[0]) && tw_deferred_called(in[2]));
    const tw_deferred_first_result *first = as_first(kept);
    cr_assert_eq(first->index, 1);
    cr_assert_eq(tracked_value(first->result), 7);
    tw_result_release(&kept);
    cr_assert_eq(released, 1);
    /* The losers' ECANCELED failures were consumed: nothing unhandled. */
    for (int i = 0; i < 3; i++) {
        kept = (tw_result){0};
        tw_deferred_add_both(in[i], keep, NULL);
        cr_assert_null(kept.failure);
        cr_assert_null(kept.value);
    }
    drop_all(in, 3);
    tw_deferred_unref(r);
}

TW_TEST(race, a_late_value_stays_with_its_input)
{
    tw_deferred *ds[2], *in[2];
    make_inputs(ds, in, 2, canceller_fires);
    tw_deferred *r = tw_race(ds, 2);
    tw_deferred_add_callback(r, keep, NULL);
    tw_deferred_callback(in[0], tracked(1)); /* in[1]'s canceller fires with a value */
    cr_assert_eq(canceller_calls, 1);
    cr_assert_eq(as_first(kept)->index, 0);
    tw_result_release(&kept);
    tw_deferred_add_callback(in[1], keep, NULL);
    cr_assert_eq(tracked_value(kept), 101);
    tw_result_release(&kept);
    drop_all(in, 2);
    tw_deferred_unref(r);
    cr_assert_eq(released, 2);
}

TW_TEST(race, all_failing_fails_with_eallfailed_caused_by_the_first_inputs_failure)
{
    tw_deferred *ds[3], *in[3];
    make_inputs(ds, in, 3, NULL);
    tw_deferred *r = tw_race(ds, 3);
    tw_deferred_add_errback(r, keep, NULL);
    tw_deferred_errback(in[2], tw_failure_new(TW_EUSER, NULL, "two"));
    tw_deferred_errback(in[0], tw_failure_new(TW_EUSER, NULL, "zero"));
    cr_assert_eq(kept_calls, 0);
    tw_deferred_errback(in[1], tw_failure_new(TW_EUSER, NULL, "one"));
    cr_assert_eq(kept_calls, 1);
    cr_assert_eq(tw_failure_code(kept.failure), TW_EALLFAILED);
    cr_assert_str_eq(tw_failure_message(tw_failure_cause(kept.failure)), "zero",
                     "input order, as Twisted's FailureGroup");
    tw_result_release(&kept);
    drop_all(in, 3); /* failures consumed: nothing unhandled */
    tw_deferred_unref(r);
}

TW_TEST(race, empty_fails_at_once)
{
    tw_deferred *r = tw_race(NULL, 0);
    tw_deferred_add_errback(r, keep, NULL);
    cr_assert_eq(tw_failure_code(kept.failure), TW_EALLFAILED);
    tw_result_release(&kept);
    tw_deferred_unref(r);
}

TW_TEST(race, an_input_fired_before_the_race_wins_at_once)
{
    tw_deferred *pending = tw_deferred_new(canceller_silent, NULL);
    tw_deferred *ds[2] = {tw_deferred_ref(pending), tw_succeed(tracked(3))};
    tw_deferred *r = tw_race(ds, 2);
    cr_assert(tw_deferred_called(r));
    cr_assert_eq(canceller_calls, 1, "the pending one was cancelled");
    tw_deferred_add_callback(r, keep, NULL);
    cr_assert_eq(as_first(kept)->index, 1);
    tw_result_release(&kept);
    tw_deferred_unref(pending);
    tw_deferred_unref(r);
}

TW_TEST(race, cancelling_the_race_cancels_every_input)
{
    tw_deferred *ds[2], *in[2];
    make_inputs(ds, in, 2, canceller_silent);
    tw_deferred *r = tw_race(ds, 2);
    tw_deferred_add_errback(r, keep, NULL);
    tw_deferred_cancel(r);
    cr_assert_eq(canceller_calls, 2);
    /* As Twisted: every input failed, so the race fails with all-failed. */
    cr_assert_eq(tw_failure_code(kept.failure), TW_EALLFAILED);
    cr_assert_eq(tw_failure_code(tw_failure_cause(kept.failure)), TW_ECANCELED);
    tw_result_release(&kept);
    drop_all(in, 2);
    tw_deferred_unref(r);
}

/* ---- Cancelling: every input is cancelled, even after the first
 * cancellation fired the output (as Twisted's DeferredList.cancel, which
 * goes through its whole list). The operations behind the other inputs
 * would otherwise run on with nobody to deliver to. */

enum maker { MAKE_LIST, MAKE_GATHER, MAKE_RACE };

struct cancel_case {
    enum maker maker;
    unsigned flags;            /* the list's; for gather, CONSUME_ERRORS only */
    tw_canceller_fn canceller; /* canceller_silent or canceller_fires */
};

static tw_deferred *make_case(const struct cancel_case *c, tw_deferred **ds, size_t n)
{
    switch (c->maker) {
    case MAKE_LIST:
        return tw_deferred_list(ds, n, c->flags);
    case MAKE_GATHER:
        return tw_gather(ds, n, c->flags & TW_DL_CONSUME_ERRORS);
    default:
        return tw_race(ds, n);
    }
}

/* Cancels the combinator over three unfired inputs; checks every canceller
 * ran once, and what the output and each input's chain end with, as the
 * same scenario gives under Twisted 22.4 (race: as its later releases). */
static void check_cancel_case(const struct cancel_case *c)
{
    bool fooc = c->maker == MAKE_LIST && (c->flags & TW_DL_FIRE_ON_ONE_CALLBACK);
    bool fooe = c->maker == MAKE_GATHER ||
                (c->maker == MAKE_LIST && (c->flags & TW_DL_FIRE_ON_ONE_ERRBACK));
    bool consume = c->maker == MAKE_RACE || (c->flags & TW_DL_CONSUME_ERRORS);
    bool values = c->canceller == canceller_fires;
    canceller_calls = 0;
    released = 0;
    kept_calls = 0;
    kept = (tw_result){0};
    tw_deferred *ds[3], *in[3];
    make_inputs(ds, in, 3, c->canceller);
    tw_deferred *out = make_case(c, ds, 3);
    tw_deferred_add_both(out, keep, NULL);
    tw_deferred_cancel(out);
    cr_assert_eq(canceller_calls, 3, "maker %d flags %u %s: every input cancelled", c->maker,
                 c->flags, values ? "values" : "silent");
    cr_assert_eq(kept_calls, 1);
    tw_result got = kept;
    kept = (tw_result){0};
    tw_result after[3];
    for (int i = 0; i < 3; i++) {
        tw_deferred_add_both(in[i], keep, NULL);
        after[i] = kept;
        kept = (tw_result){0};
    }
    if (c->maker == MAKE_RACE) {
        if (values) {
            /* Input 0's canceller won; the others' values came too late. */
            cr_assert_eq(as_first(got)->index, 0);
            cr_assert_eq(tracked_value(as_first(got)->result), 100);
            cr_assert_null(after[0].value);
            cr_assert_eq(tracked_value(after[1]), 101);
            cr_assert_eq(tracked_value(after[2]), 102);
        } else {
            cr_assert_eq(tw_failure_code(got.failure), TW_EALLFAILED);
        }
    } else if (values && fooc) {
        /* The first value fired the list; the others stay with their input. */
        cr_assert_eq(as_first(got)->index, 0, "flags %u", c->flags);
        cr_assert_eq(tracked_value(as_first(got)->result), 100);
        cr_assert_null(after[0].value);
        cr_assert_eq(tracked_value(after[1]), 101, "flags %u", c->flags);
        cr_assert_eq(tracked_value(after[2]), 102, "flags %u", c->flags);
    } else if (values) {
        const tw_deferred_list_result *list = as_list(got);
        for (int i = 0; i < 3; i++) {
            cr_assert(list->items[i].success);
            cr_assert_eq(tracked_value(list->items[i].result), 100 + i);
            cr_assert_null(after[i].value, "flags %u: moved into the list", c->flags);
        }
    } else if (fooe) {
        /* The first cancellation fired it, with input 0's failure. */
        cr_assert_eq(tw_failure_code(got.failure), TW_EFIRSTERROR, "flags %u", c->flags);
        cr_assert_eq(tw_failure_code(tw_failure_cause(got.failure)), TW_ECANCELED);
        cr_assert(strstr(tw_failure_message(got.failure), "0"));
    } else {
        /* Every input failed: the list of their failures (fooc too). */
        const tw_deferred_list_result *list = as_list(got);
        for (int i = 0; i < 3; i++) {
            cr_assert_not(list->items[i].success, "flags %u", c->flags);
            cr_assert_eq(tw_failure_code(list->items[i].result.failure), TW_ECANCELED);
        }
    }
    if (!values) {
        for (int i = 0; i < 3; i++) {
            if (consume)
                cr_assert_null(after[i].failure, "maker %d flags %u: consumed", c->maker, c->flags);
            else
                cr_assert_eq(tw_failure_code(after[i].failure), TW_ECANCELED,
                             "flags %u: stays in input %d", c->flags, i);
        }
    }
    tw_result_release(&got);
    for (int i = 0; i < 3; i++)
        tw_result_release(&after[i]);
    drop_all(in, 3);
    tw_deferred_unref(out);
    cr_assert_eq(released, values ? 3 : 0, "each value released once");
}

TW_TEST(list, cancelling_cancels_every_input_under_every_flag_combination)
{
    for (int v = 0; v < 2; v++)
        for (unsigned flags = 0; flags < 8; flags++)
            check_cancel_case(
                &(struct cancel_case){MAKE_LIST, flags, v ? canceller_fires : canceller_silent});
}

TW_TEST(gather, cancelling_cancels_every_input)
{
    for (int v = 0; v < 2; v++)
        for (int consume = 0; consume < 2; consume++)
            check_cancel_case(&(struct cancel_case){MAKE_GATHER, consume ? TW_DL_CONSUME_ERRORS : 0,
                                                    v ? canceller_fires : canceller_silent});
}

TW_TEST(race, cancelling_cancels_every_input_even_when_a_canceller_supplies_a_value)
{
    for (int v = 0; v < 2; v++)
        check_cancel_case(
            &(struct cancel_case){MAKE_RACE, 0, v ? canceller_fires : canceller_silent});
}

/* The order Twisted gives: the output fires inside the first cancellation,
 * and the other inputs are cancelled after its callbacks ran. */
static char order[16];
static size_t order_len;

static void canceller_logs(tw_deferred *d, void *arg)
{
    (void)d;
    order[order_len++] = (char)('0' + (intptr_t)arg - 100);
}

static tw_result out_logs(tw_result r, void *arg)
{
    (void)arg;
    order[order_len++] = 'o';
    tw_result_release(&r);
    return tw_result_borrowed(NULL);
}

TW_TEST(gather, cancelling_fires_it_at_the_first_input_and_then_cancels_the_rest)
{
    tw_deferred *ds[3], *in[3];
    make_inputs(ds, in, 3, canceller_logs);
    tw_deferred *g = tw_gather(ds, 3, true);
    tw_deferred_add_both(g, out_logs, NULL);
    tw_deferred_cancel(g);
    cr_assert_str_eq(order, "0o12");
    drop_all(in, 3);
    tw_deferred_unref(g);
}
