/* LoopingCall on a manual clock: immediate and delayed starts, alignment to
 * the start time (no float drift over a thousand ticks), counts of skipped
 * intervals, waiting for a returned deferred, stop/reset/free from anywhere,
 * failures, cancellation, allocation failure; and once on a real reactor. */
#include <math.h>
#include <stdint.h>

#include <twine/task.h>

#include "twtest.h"

#define MAXREC 2048

/* What the function saw, and what it is told to do. */
struct rec {
    tw_clock *clock;
    tw_looping_call *lc;
    size_t calls;
    uint64_t counts[MAXREC];
    uint64_t at_ns[MAXREC];
    /* behaviour */
    size_t stop_at;       /* stop from inside call number stop_at (1-based); 0: never */
    size_t free_at;       /* free from inside that call */
    size_t fail_at;       /* return a failure from that call */
    size_t defer_at;      /* return `pending` (made here) from that call */
    size_t ready_at;      /* return a deferred that has fired already */
    tw_deferred *pending; /* the deferred handed out, our reference */
    int start_inside_rc;  /* what start returned from inside the function */
};

static uint64_t ns_of(tw_clock *c)
{
    return (uint64_t)llround(tw_clock_seconds(c) * 1e9);
}

static tw_result record(tw_looping_call *lc, uint64_t count, void *arg)
{
    struct rec *r = arg;
    cr_assert_eq(lc, r->lc);
    cr_assert_lt(r->calls, MAXREC);
    r->counts[r->calls] = count;
    r->at_ns[r->calls] = ns_of(r->clock);
    size_t n = ++r->calls;
    r->start_inside_rc = tw_looping_call_start(lc, 1.0, true, NULL);
    if (n == r->stop_at)
        cr_assert_eq(tw_looping_call_stop(lc), 0);
    if (n == r->free_at) {
        tw_looping_call_free(lc);
        r->lc = NULL;
    }
    if (n == r->fail_at)
        return tw_result_fail(tw_failure_new(TW_EUSER, NULL, "call %zu failed", n));
    if (n == r->ready_at)
        return tw_result_deferred(tw_succeed(tw_result_from_int(1)));
    if (n == r->defer_at) {
        r->pending = tw_deferred_new(NULL, NULL);
        return tw_result_deferred(tw_deferred_ref(r->pending));
    }
    return tw_result_from_int(42); /* ignored */
}

static struct rec *rec_new(void)
{
    struct rec *r = calloc(1, sizeof *r);
    cr_assert(r);
    r->clock = tw_clock_new_manual();
    cr_assert(r->clock);
    cr_assert_eq(tw_looping_call_new(r->clock, record, r, &r->lc), 0);
    return r;
}

static void rec_free(struct rec *r)
{
    tw_looping_call_free(r->lc);
    tw_deferred_unref(r->pending);
    cr_assert_eq(tw_clock_pending(r->clock), 0, "nothing left scheduled");
    tw_clock_free(r->clock);
    free(r);
}

/* The start deferred's outcome, kept by a callback. */
struct outcome {
    int fired;
    bool failed;
    int code;
    void *value;
};

static tw_result keep_outcome(tw_result res, void *arg)
{
    struct outcome *o = arg;
    o->fired++;
    o->failed = res.failure != NULL;
    o->code = res.failure ? tw_failure_code(res.failure) : 0;
    o->value = res.failure ? NULL : res.value;
    tw_result_release(&res);
    return tw_result_borrowed(NULL);
}

static tw_deferred *start_watched(struct rec *r, double interval, bool now, struct outcome *o)
{
    tw_deferred *d = NULL;
    cr_assert_eq(tw_looping_call_start(r->lc, interval, now, &d), 0);
    cr_assert(d);
    cr_assert_eq(tw_deferred_add_both(d, keep_outcome, o), 0);
    return d;
}

TW_TEST(looping, now_calls_at_once_then_every_interval)
{
    struct rec *r = rec_new();
    struct outcome o = {0};
    tw_deferred *d = start_watched(r, 2.0, true, &o);
    cr_assert_eq(r->calls, 1, "now: called before start returned");
    cr_assert_eq(r->counts[0], 1);
    cr_assert_eq(r->at_ns[0], 0);
    cr_assert_eq(r->start_inside_rc, TW_EBUSY, "start while running is refused");
    cr_assert(tw_looping_call_running(r->lc));
    cr_assert_eq(tw_looping_call_interval(r->lc), 2.0);
    tw_clock_advance(r->clock, 1.999);
    cr_assert_eq(r->calls, 1);
    tw_clock_advance(r->clock, 0.001);
    cr_assert_eq(r->calls, 2);
    cr_assert_eq(r->at_ns[1], 2000000000u);
    tw_clock_advance(r->clock, 2.0);
    cr_assert_eq(r->calls, 3);
    cr_assert_eq(r->counts[2], 1);
    cr_assert_eq(o.fired, 0, "running: the start deferred waits");
    cr_assert_eq(tw_looping_call_stop(r->lc), 0);
    cr_assert_eq(o.fired, 1);
    cr_assert_not(o.failed);
    cr_assert_eq(o.value, r->lc, "fires with the looping call");
    cr_assert_not(tw_looping_call_running(r->lc));
    tw_clock_advance(r->clock, 10.0);
    cr_assert_eq(r->calls, 3, "no call after stop");
    cr_assert_eq(tw_looping_call_stop(r->lc), TW_EINVAL, "stop when stopped");
    cr_assert_eq(tw_looping_call_reset(r->lc), TW_EINVAL, "reset when stopped");
    tw_deferred_unref(d);
    rec_free(r);
}

TW_TEST(looping, without_now_the_first_call_waits_one_interval)
{
    struct rec *r = rec_new();
    tw_clock_advance(r->clock, 5.25); /* start at an odd time */
    struct outcome o = {0};
    tw_deferred *d = start_watched(r, 0.5, false, &o);
    cr_assert_eq(r->calls, 0);
    tw_clock_advance(r->clock, 0.49);
    cr_assert_eq(r->calls, 0);
    tw_clock_advance(r->clock, 0.01);
    cr_assert_eq(r->calls, 1);
    cr_assert_eq(r->counts[0], 1);
    cr_assert_eq(r->at_ns[0], 5750000000u);
    tw_clock_advance(r->clock, 0.5);
    cr_assert_eq(r->calls, 2);
    cr_assert_eq(r->at_ns[1], 6250000000u);
    tw_looping_call_stop(r->lc);
    cr_assert_eq(o.fired, 1);
    tw_deferred_unref(d);
    rec_free(r);
}

TW_TEST(looping, thousand_ticks_of_a_tenth_stay_aligned)
{
    struct rec *r = rec_new();
    struct outcome o = {0};
    tw_deferred *d = start_watched(r, 0.1, true, &o);
    for (int i = 0; i < 1000; i++)
        tw_clock_advance(r->clock, 0.1);
    cr_assert_eq(r->calls, 1001);
    uint64_t sum = 0;
    for (size_t i = 0; i < r->calls; i++) {
        cr_assert_eq(r->counts[i], 1, "call %zu counted %llu", i, (unsigned long long)r->counts[i]);
        cr_assert_eq(r->at_ns[i], (uint64_t)i * 100000000u, "call %zu at %llu ns", i,
                     (unsigned long long)r->at_ns[i]);
        sum += r->counts[i];
    }
    cr_assert_eq(sum, 1001);
    cr_assert_eq(ns_of(r->clock), 100000000000u, "exactly 100 s");
    tw_looping_call_stop(r->lc);
    tw_deferred_unref(d);
    rec_free(r);
}

TW_TEST(looping, uneven_advances_keep_the_grid)
{
    /* Advancing by 0.07 and 0.03 in turn (and odd starting time) never moves
     * a call off start + n * 0.1. */
    struct rec *r = rec_new();
    tw_clock_advance(r->clock, 0.013);
    struct outcome o = {0};
    tw_deferred *d = start_watched(r, 0.1, false, &o);
    for (int i = 0; i < 300; i++) {
        tw_clock_advance(r->clock, 0.07);
        tw_clock_advance(r->clock, 0.03);
    }
    cr_assert_eq(r->calls, 300);
    for (size_t i = 0; i < r->calls; i++) {
        cr_assert_eq(r->counts[i], 1);
        cr_assert_eq(r->at_ns[i], 13000000u + (uint64_t)(i + 1) * 100000000u);
    }
    tw_looping_call_stop(r->lc);
    tw_deferred_unref(d);
    rec_free(r);
}

TW_TEST(looping, a_clock_jump_counts_the_skipped_intervals)
{
    struct rec *r = rec_new();
    struct outcome o = {0};
    tw_deferred *d = start_watched(r, 1.0, true, &o);
    tw_clock_advance(r->clock, 3.5); /* calls due at 1, 2, 3: one call */
    cr_assert_eq(r->calls, 2);
    cr_assert_eq(r->counts[1], 3);
    tw_clock_advance(r->clock, 0.4);
    cr_assert_eq(r->calls, 2);
    tw_clock_advance(r->clock, 0.1); /* 4.0: back on the grid */
    cr_assert_eq(r->calls, 3);
    cr_assert_eq(r->counts[2], 1);
    cr_assert_eq(r->at_ns[2], 4000000000u);
    tw_clock_advance(r->clock, 10.0); /* 14.0: exactly on a boundary */
    cr_assert_eq(r->calls, 4);
    cr_assert_eq(r->counts[3], 10);
    uint64_t sum = 0;
    for (size_t i = 0; i < r->calls; i++)
        sum += r->counts[i];
    cr_assert_eq(sum, 15, "counts add up to the intervals passed (+1 for now)");
    tw_looping_call_stop(r->lc);
    tw_deferred_unref(d);
    rec_free(r);
}

TW_TEST(looping, waits_for_a_returned_deferred_then_realigns)
{
    struct rec *r = rec_new();
    r->defer_at = 1;
    struct outcome o = {0};
    tw_deferred *d = start_watched(r, 1.0, true, &o);
    cr_assert_eq(r->calls, 1);
    cr_assert(r->pending);
    cr_assert_eq(tw_clock_pending(r->clock), 0, "nothing scheduled while waiting");
    tw_clock_advance(r->clock, 2.5);
    cr_assert_eq(r->calls, 1, "no call while the deferred is pending");
    tw_deferred_callback(r->pending, tw_result_from_int(7));
    cr_assert_eq(r->calls, 1);
    cr_assert_eq(tw_clock_pending(r->clock), 1);
    tw_clock_advance(r->clock, 0.4);
    cr_assert_eq(r->calls, 1);
    tw_clock_advance(r->clock, 0.1); /* 3.0, the next aligned time */
    cr_assert_eq(r->calls, 2);
    cr_assert_eq(r->counts[1], 3, "intervals 1, 2 and 3 passed since the call at 0");
    cr_assert_eq(r->at_ns[1], 3000000000u);
    tw_looping_call_stop(r->lc);
    cr_assert_eq(o.fired, 1);
    tw_deferred_unref(d);
    rec_free(r);
}

TW_TEST(looping, a_deferred_that_fires_at_once_does_not_block)
{
    struct rec *r = rec_new();
    r->ready_at = 1;
    struct outcome o = {0};
    tw_deferred *d = start_watched(r, 1.0, true, &o);
    cr_assert_eq(tw_clock_pending(r->clock), 1, "scheduled at once");
    tw_clock_advance(r->clock, 1.0);
    cr_assert_eq(r->calls, 2);
    cr_assert_eq(r->counts[1], 1);
    tw_looping_call_stop(r->lc);
    tw_deferred_unref(d);
    rec_free(r);
}

TW_TEST(looping, stop_from_inside_the_function)
{
    struct rec *r = rec_new();
    r->stop_at = 3;
    struct outcome o = {0};
    tw_deferred *d = start_watched(r, 1.0, true, &o);
    tw_clock_advance(r->clock, 1.0);
    cr_assert_eq(o.fired, 0);
    tw_clock_advance(r->clock, 1.0);
    cr_assert_eq(r->calls, 3);
    cr_assert_eq(o.fired, 1, "fires once the stopping call returned");
    cr_assert_eq(o.value, r->lc);
    cr_assert_eq(tw_clock_pending(r->clock), 0);
    tw_deferred_unref(d);
    rec_free(r);
}

TW_TEST(looping, stop_while_waiting_fires_when_the_deferred_does)
{
    struct rec *r = rec_new();
    r->defer_at = 2;
    struct outcome o = {0};
    tw_deferred *d = start_watched(r, 1.0, true, &o);
    tw_clock_advance(r->clock, 1.0);
    cr_assert(r->pending);
    cr_assert_eq(tw_looping_call_stop(r->lc), 0);
    cr_assert_not(tw_looping_call_running(r->lc));
    cr_assert_eq(o.fired, 0, "still waiting for the call's deferred");
    cr_assert_eq(tw_looping_call_start(r->lc, 1.0, true, NULL), TW_EBUSY,
                 "a stopped loop that has not finished cannot start again");
    tw_deferred_callback(r->pending, tw_result_borrowed(NULL));
    cr_assert_eq(o.fired, 1);
    cr_assert_not(o.failed);
    tw_clock_advance(r->clock, 5.0);
    cr_assert_eq(r->calls, 2);
    tw_deferred_unref(d);
    rec_free(r);
}

TW_TEST(looping, stop_while_waiting_then_the_deferred_fails)
{
    struct rec *r = rec_new();
    r->defer_at = 1;
    struct outcome o = {0};
    tw_deferred *d = start_watched(r, 1.0, true, &o);
    tw_looping_call_stop(r->lc);
    tw_deferred_errback(r->pending, tw_failure_new(TW_ETIMEDOUT, NULL, "late"));
    cr_assert_eq(o.fired, 1);
    cr_assert(o.failed);
    cr_assert_eq(o.code, TW_ETIMEDOUT);
    tw_deferred_unref(d);
    rec_free(r);
}

TW_TEST(looping, a_failure_stops_the_loop_and_fails_the_start_deferred)
{
    struct rec *r = rec_new();
    r->fail_at = 2;
    struct outcome o = {0};
    tw_deferred *d = start_watched(r, 1.0, true, &o);
    tw_clock_advance(r->clock, 1.0);
    cr_assert_eq(o.fired, 1);
    cr_assert(o.failed);
    cr_assert_eq(o.code, TW_EUSER);
    cr_assert_not(tw_looping_call_running(r->lc));
    tw_clock_advance(r->clock, 5.0);
    cr_assert_eq(r->calls, 2);
    tw_deferred_unref(d);
    rec_free(r);
}

TW_TEST(looping, a_failure_on_the_first_call_fails_before_start_returns)
{
    struct rec *r = rec_new();
    r->fail_at = 1;
    tw_deferred *d = NULL;
    cr_assert_eq(tw_looping_call_start(r->lc, 1.0, true, &d), 0);
    cr_assert(tw_deferred_called(d));
    struct outcome o = {0};
    tw_deferred_add_both(d, keep_outcome, &o);
    cr_assert(o.failed);
    cr_assert_eq(o.code, TW_EUSER);
    tw_deferred_unref(d);
    rec_free(r);
}

TW_TEST(looping, the_functions_deferred_failing_fails_the_loop)
{
    struct rec *r = rec_new();
    r->defer_at = 2;
    struct outcome o = {0};
    tw_deferred *d = start_watched(r, 1.0, true, &o);
    tw_clock_advance(r->clock, 1.0);
    tw_deferred_errback(r->pending, tw_failure_new(-EIO, NULL, "disk"));
    cr_assert_eq(o.fired, 1);
    cr_assert_eq(o.code, -EIO);
    cr_assert_not(tw_looping_call_running(r->lc));
    cr_assert_eq(tw_clock_pending(r->clock), 0);
    tw_deferred_unref(d);
    rec_free(r);
}

TW_TEST(looping, a_deferred_released_unfired_fails_the_loop)
{
    struct rec *r = rec_new();
    r->defer_at = 1;
    struct outcome o = {0};
    tw_deferred *d = start_watched(r, 1.0, true, &o);
    cr_assert_eq(o.fired, 0);
    tw_deferred_unref(r->pending); /* nobody can fire it any more */
    r->pending = NULL;
    cr_assert_eq(o.fired, 1);
    cr_assert_eq(o.code, TW_ECANCELED);
    tw_deferred_unref(d);
    rec_free(r);
}

TW_TEST(looping, restart_after_stop_and_from_the_start_deferred)
{
    struct rec *r = rec_new();
    struct outcome o = {0};
    tw_deferred *d = start_watched(r, 1.0, true, &o);
    tw_looping_call_stop(r->lc);
    tw_deferred_unref(d);
    cr_assert_eq(o.fired, 1);
    /* Again, now without `now`, at another time, another interval. */
    tw_clock_advance(r->clock, 0.3);
    struct outcome o2 = {0};
    d = start_watched(r, 0.25, false, &o2);
    tw_clock_advance(r->clock, 0.25);
    cr_assert_eq(r->calls, 2);
    cr_assert_eq(r->counts[1], 1, "counts start afresh with each start");
    cr_assert_eq(r->at_ns[1], 550000000u);
    tw_looping_call_stop(r->lc);
    tw_deferred_unref(d);
    cr_assert_eq(o2.fired, 1);
    rec_free(r);
}

static tw_result restart_from_callback(tw_result res, void *arg)
{
    struct rec *r = arg;
    tw_result_release(&res);
    cr_assert_not(tw_looping_call_running(r->lc));
    tw_deferred *d = NULL;
    cr_assert_eq(tw_looping_call_start(r->lc, 1.0, false, &d), 0);
    tw_deferred_unref(d);
    return tw_result_borrowed(NULL);
}

TW_TEST(looping, restart_from_the_start_deferreds_callback)
{
    struct rec *r = rec_new();
    r->stop_at = 1;
    tw_deferred *d = NULL;
    cr_assert_eq(tw_looping_call_start(r->lc, 1.0, false, &d), 0);
    tw_deferred_add_callback(d, restart_from_callback, r);
    tw_clock_advance(r->clock, 1.0); /* call 1 stops; the callback restarts */
    cr_assert(tw_looping_call_running(r->lc));
    tw_clock_advance(r->clock, 1.0);
    cr_assert_eq(r->calls, 2);
    tw_looping_call_stop(r->lc);
    tw_deferred_unref(d);
    rec_free(r);
}

TW_TEST(looping, reset_restarts_the_interval)
{
    struct rec *r = rec_new();
    struct outcome o = {0};
    tw_deferred *d = start_watched(r, 1.0, true, &o);
    tw_clock_advance(r->clock, 0.6);
    cr_assert_eq(tw_looping_call_reset(r->lc), 0);
    tw_clock_advance(r->clock, 0.4); /* 1.0: the old time, skipped */
    cr_assert_eq(r->calls, 1);
    tw_clock_advance(r->clock, 0.6); /* 1.6: one interval after the reset */
    cr_assert_eq(r->calls, 2);
    cr_assert_eq(r->counts[1], 1);
    cr_assert_eq(r->at_ns[1], 1600000000u);
    tw_clock_advance(r->clock, 1.0);
    cr_assert_eq(r->calls, 3);
    cr_assert_eq(r->at_ns[2], 2600000000u, "aligned to the reset time from then on");
    tw_looping_call_stop(r->lc);
    tw_deferred_unref(d);
    rec_free(r);
}

TW_TEST(looping, reset_while_waiting_does_nothing)
{
    struct rec *r = rec_new();
    r->defer_at = 1;
    struct outcome o = {0};
    tw_deferred *d = start_watched(r, 1.0, true, &o);
    tw_clock_advance(r->clock, 0.5);
    cr_assert_eq(tw_looping_call_reset(r->lc), 0);
    cr_assert_eq(tw_clock_pending(r->clock), 0);
    tw_deferred_callback(r->pending, tw_result_borrowed(NULL));
    tw_clock_advance(r->clock, 0.5);
    cr_assert_eq(r->calls, 2, "still aligned to the start");
    cr_assert_eq(r->at_ns[1], 1000000000u);
    tw_looping_call_stop(r->lc);
    tw_deferred_unref(d);
    rec_free(r);
}

TW_TEST(looping, interval_zero_runs_within_one_advance_until_stopped)
{
    /* Twisted's test_withCountIntervalZero: task.Clock runs zero-delay calls
     * scheduled by calls in the same advance. */
    struct rec *r = rec_new();
    r->stop_at = 5;
    struct outcome o = {0};
    tw_deferred *d = start_watched(r, 0, false, &o);
    cr_assert_eq(r->calls, 0);
    tw_clock_advance(r->clock, 0);
    cr_assert_eq(r->calls, 5);
    for (size_t i = 0; i < 5; i++)
        cr_assert_eq(r->counts[i], 1);
    cr_assert_eq(o.fired, 1);
    tw_deferred_unref(d);
    rec_free(r);
}

TW_TEST(looping, interval_zero_waits_for_a_deferred)
{
    /* Twisted's test_withCountIntervalZeroDelay. */
    struct rec *r = rec_new();
    r->defer_at = 2;
    r->stop_at = 4;
    struct outcome o = {0};
    tw_deferred *d = start_watched(r, 0, false, &o);
    tw_clock_advance(r->clock, 0);
    cr_assert_eq(r->calls, 2, "blocked at the deferred");
    tw_clock_advance(r->clock, 2.0);
    cr_assert_eq(r->calls, 2);
    tw_deferred_callback(r->pending, tw_result_borrowed(NULL));
    tw_clock_advance(r->clock, 0);
    cr_assert_eq(r->calls, 4);
    for (size_t i = 0; i < 4; i++)
        cr_assert_eq(r->counts[i], 1, "with interval 0 the count is always 1");
    cr_assert_eq(o.fired, 1);
    tw_deferred_unref(d);
    rec_free(r);
}

TW_TEST(looping, bad_intervals_and_arguments)
{
    struct rec *r = rec_new();
    tw_deferred *d = NULL;
    cr_assert_eq(tw_looping_call_start(r->lc, -0.1, true, &d), TW_EINVAL);
    cr_assert_eq(tw_looping_call_start(r->lc, NAN, true, &d), TW_EINVAL);
    cr_assert_eq(tw_looping_call_start(r->lc, INFINITY, true, &d), TW_EINVAL);
    cr_assert_null(d);
    cr_assert_eq(r->calls, 0, "nothing called on error");
    cr_assert_eq(tw_looping_call_start(NULL, 1.0, true, &d), TW_EINVAL);
    tw_looping_call *lc = NULL;
    cr_assert_eq(tw_looping_call_new(NULL, record, r, &lc), TW_EINVAL);
    cr_assert_eq(tw_looping_call_new(r->clock, NULL, r, &lc), TW_EINVAL);
    cr_assert_eq(tw_looping_call_new(r->clock, record, r, NULL), TW_EINVAL);
    cr_assert_not(tw_looping_call_running(NULL));
    tw_looping_call_free(NULL);
    /* A huge interval is the far future, not an overflow. */
    cr_assert_eq(tw_looping_call_start(r->lc, 1e300, true, &d), 0);
    cr_assert_eq(r->calls, 1);
    tw_clock_advance(r->clock, 1e6);
    cr_assert_eq(r->calls, 1);
    tw_looping_call_stop(r->lc);
    tw_deferred_unref(d);
    rec_free(r);
}

TW_TEST(looping, free_while_scheduled_fires_with_null)
{
    struct rec *r = rec_new();
    struct outcome o = {0};
    tw_deferred *d = start_watched(r, 1.0, true, &o);
    tw_looping_call_free(r->lc);
    r->lc = NULL;
    cr_assert_eq(o.fired, 1);
    cr_assert_not(o.failed);
    cr_assert_null(o.value, "the looping call is gone");
    tw_deferred_unref(d);
    rec_free(r);
}

TW_TEST(looping, free_while_waiting_fires_when_the_deferred_does)
{
    struct rec *r = rec_new();
    r->defer_at = 1;
    struct outcome o = {0};
    tw_deferred *d = start_watched(r, 1.0, true, &o);
    tw_looping_call_free(r->lc);
    r->lc = NULL;
    cr_assert_eq(o.fired, 0);
    tw_deferred_callback(r->pending, tw_result_borrowed(NULL));
    cr_assert_eq(o.fired, 1);
    cr_assert_null(o.value);
    tw_clock_advance(r->clock, 3.0);
    cr_assert_eq(r->calls, 1);
    tw_deferred_unref(d);
    rec_free(r);
}

TW_TEST(looping, free_from_inside_the_function)
{
    struct rec *r = rec_new();
    r->free_at = 2;
    struct outcome o = {0};
    tw_deferred *d = start_watched(r, 1.0, true, &o);
    tw_clock_advance(r->clock, 1.0);
    cr_assert_eq(r->calls, 2);
    cr_assert_eq(o.fired, 1);
    cr_assert_null(o.value);
    tw_clock_advance(r->clock, 3.0);
    cr_assert_eq(r->calls, 2);
    tw_deferred_unref(d);
    rec_free(r);
}

static tw_result free_in_callback(tw_result res, void *arg)
{
    struct rec *r = arg;
    tw_result_release(&res);
    tw_looping_call_free(r->lc);
    r->lc = NULL;
    return tw_result_borrowed(NULL);
}

TW_TEST(looping, free_from_the_start_deferreds_callback)
{
    struct rec *r = rec_new();
    tw_deferred *d = NULL;
    cr_assert_eq(tw_looping_call_start(r->lc, 1.0, true, &d), 0);
    tw_deferred_add_callback(d, free_in_callback, r);
    tw_looping_call_stop(r->lc);
    cr_assert_null(r->lc);
    tw_deferred_unref(d);
    rec_free(r);
}

TW_TEST(looping, cancelling_the_start_deferred_stops_the_loop)
{
    struct rec *r = rec_new();
    struct outcome o = {0};
    tw_deferred *d = start_watched(r, 1.0, true, &o);
    tw_deferred_cancel(d);
    cr_assert_eq(o.fired, 1);
    cr_assert_eq(o.code, TW_ECANCELED);
    cr_assert_not(tw_looping_call_running(r->lc));
    cr_assert_eq(tw_clock_pending(r->clock), 0);
    tw_clock_advance(r->clock, 5.0);
    cr_assert_eq(r->calls, 1);
    tw_deferred_unref(d);
    /* It can start again. */
    struct outcome o2 = {0};
    d = start_watched(r, 1.0, false, &o2);
    tw_clock_advance(r->clock, 1.0);
    cr_assert_eq(r->calls, 2);
    tw_looping_call_stop(r->lc);
    cr_assert_eq(o2.fired, 1);
    tw_deferred_unref(d);
    rec_free(r);
}

TW_TEST(looping, cancelling_while_waiting_cancels_the_awaited_deferred)
{
    struct rec *r = rec_new();
    r->defer_at = 1;
    struct outcome o = {0};
    tw_deferred *d = start_watched(r, 1.0, true, &o);
    struct outcome inner = {0};
    tw_deferred_add_both(r->pending, keep_outcome, &inner);
    tw_deferred_cancel(d);
    cr_assert(tw_deferred_called(r->pending), "the awaited deferred was cancelled");
    cr_assert_eq(inner.fired, 1);
    cr_assert_not(inner.failed, "the loop took its TW_ECANCELED failure");
    cr_assert_eq(o.fired, 1);
    cr_assert_eq(o.code, TW_ECANCELED);
    cr_assert_eq(tw_clock_pending(r->clock), 0);
    tw_deferred_unref(d);
    rec_free(r);
}

TW_TEST(looping, no_out_deferred_is_fine)
{
    struct rec *r = rec_new();
    cr_assert_eq(tw_looping_call_start(r->lc, 1.0, true, NULL), 0);
    tw_clock_advance(r->clock, 1.0);
    cr_assert_eq(r->calls, 2);
    tw_looping_call_stop(r->lc);
    rec_free(r);
}

TW_TEST(looping, allocation_failure_is_clean)
{
    for (long n = 0;; n++) {
        tw_clock *clock = tw_clock_new_manual();
        cr_assert(clock);
        struct rec *r = calloc(1, sizeof *r);
        r->clock = clock;
        tw_testing_fail_alloc_after(n);
        int rc = tw_looping_call_new(clock, record, r, &r->lc);
        tw_deferred *d = NULL;
        if (rc == 0)
            rc = tw_looping_call_start(r->lc, 1.0, false, &d);
        tw_testing_fail_alloc_off();
        if (rc == 0) {
            cr_assert_gt(n, 0);
            tw_clock_advance(clock, 1.0);
            cr_assert_eq(r->calls, 1);
            tw_looping_call_stop(r->lc);
            cr_assert(tw_deferred_called(d));
            tw_deferred_unref(d);
            rec_free(r);
            break;
        }
        cr_assert_eq(rc, TW_ENOMEM, "n=%ld: %s", n, tw_strerror(rc));
        cr_assert_null(d);
        cr_assert_eq(r->calls, 0);
        cr_assert_eq(tw_clock_pending(clock), 0);
        rec_free(r);
    }
}

/* ---- On a real reactor */

struct real {
    tw_reactor *r;
    size_t calls;
    uint64_t total;
};

static tw_result real_tick(tw_looping_call *lc, uint64_t count, void *arg)
{
    struct real *st = arg;
    st->calls++;
    st->total += count;
    if (st->calls == 3)
        tw_looping_call_stop(lc);
    return tw_iter_more(); /* a NULL value */
}

TW_REACTOR_TEST(looping, runs_on_the_reactor_clock)
{
    struct real st = {.r = r};
    tw_looping_call *lc;
    cr_assert_eq(tw_looping_call_new(tw_reactor_clock(r), real_tick, &st, &lc), 0);
    tw_deferred *d = NULL;
    double t0 = tw_reactor_seconds(r);
    cr_assert_eq(tw_looping_call_start(lc, 0.01, true, &d), 0);
    tw_result res = twtest_wait(r, d);
    cr_assert_null(res.failure);
    cr_assert_eq(res.value, lc);
    cr_assert_eq(st.calls, 3);
    cr_assert_geq(st.total, 3);
    cr_assert_geq(tw_reactor_seconds(r) - t0, 0.02 - 1e-9, "two intervals passed");
    tw_result_release(&res);
    tw_deferred_unref(d);
    tw_looping_call_free(lc);
}
