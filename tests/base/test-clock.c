/* tw_clock: ordering, delayed-call handles, intrusive timers, manual-clock
 * advance semantics, bad input and allocation failure. Everything runs on a
 * manual clock except the last few tests, which drive a reactor clock through
 * its internal interface with the cached time held still. */
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "reactor/clock-internal.h"
#include "twtest.h"

/* ---- A log of which calls ran, in order. */

#define LOG_MAX 64

static int ran[LOG_MAX];
static size_t nran;

static void reset_log(void)
{
    nran = 0;
    memset(ran, 0, sizeof ran);
}

static void record(void *arg)
{
    cr_assert_lt(nran, LOG_MAX);
    ran[nran++] = (int)(intptr_t)arg;
}

#define TAG(n) ((void *)(intptr_t)(n))

static void expect_log(const int *want, size_t n)
{
    cr_assert_eq(nran, n, "ran %zu calls, expected %zu", nran, n);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(ran[i], want[i], "call %zu was %d, expected %d", i, ran[i], want[i]);
}

static tw_delayed_call later(tw_clock *c, double delay, int tag)
{
    tw_delayed_call h;
    int rc = tw_call_later(c, delay, record, TAG(tag), &h);
    cr_assert_eq(rc, 0, "tw_call_later: %s", tw_strerror(rc));
    return h;
}

static tw_clock *cb_clock;
static tw_delayed_call cb_self, cb_other;
static int cb_result;

static tw_clock *manual(void)
{
    reset_log();
    tw_clock *c = tw_clock_new_manual();
    cr_assert_not_null(c);
    return c;
}

/* ---- Ordering */

TW_TEST(clock, starts_at_zero)
{
    tw_clock *c = manual();
    cr_assert_eq(tw_clock_seconds(c), 0.0);
    cr_assert_eq(tw_clock_pending(c), 0);
    cr_assert_eq(tw_clock_advance(c, 2.5), 0);
    cr_assert_float_eq(tw_clock_seconds(c), 2.5, 1e-12);
    tw_clock_free(c);
}

TW_TEST(clock, runs_in_deadline_order)
{
    tw_clock *c = manual();
    later(c, 3.0, 3);
    later(c, 1.0, 1);
    later(c, 2.0, 2);
    later(c, 0.5, 0);
    cr_assert_eq(tw_clock_pending(c), 4);

    cr_assert_eq(tw_clock_advance(c, 0.4), 0);
    cr_assert_eq(nran, 0);
    cr_assert_eq(tw_clock_advance(c, 0.1), 1); /* exactly at 0.5: due */
    cr_assert_eq(tw_clock_advance(c, 5.0), 3);
    expect_log((int[]){0, 1, 2, 3}, 4);
    cr_assert_eq(tw_clock_pending(c), 0);
    tw_clock_free(c);
}

TW_TEST(clock, equal_deadlines_run_in_scheduling_order)
{
    tw_clock *c = manual();
    for (int i = 0; i < 20; i++)
        later(c, i % 2 ? 1.0 : 2.0, i);
    cr_assert_eq(tw_clock_advance(c, 2.0), 20);
    expect_log((int[]){1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18}, 20);
    tw_clock_free(c);
}

static int timer_tags[16];
static tw_timer timers[16];

static void timer_record(tw_timer *t)
{
    record(TAG(timer_tags[t - timers]));
}

TW_TEST(clock, timers_and_calls_share_one_order)
{
    tw_clock *c = manual();
    for (int i = 0; i < 4; i++) {
        tw_timer_init(&timers[i], c, timer_record);
        timer_tags[i] = 100 + i;
    }
    later(c, 1.0, 1);
    cr_assert_eq(tw_timer_start(&timers[0], 1.0), 0);
    later(c, 1.0, 2);
    cr_assert_eq(tw_timer_start(&timers[1], 0.5), 0);
    cr_assert_eq(tw_timer_start(&timers[2], 1.0), 0);
    cr_assert_eq(tw_clock_pending(c), 5);
    cr_assert(tw_timer_active(&timers[2]));
    cr_assert_not(tw_timer_active(&timers[3]));
    cr_assert_eq(tw_clock_advance(c, 1.0), 5);
    expect_log((int[]){101, 1, 100, 2, 102}, 5);
    cr_assert_not(tw_timer_active(&timers[0]));
    tw_clock_free(c);
}

TW_TEST(clock, reset_and_delay_reorder)
{
    tw_clock *c = manual();
    tw_delayed_call a = later(c, 1.0, 1);
    tw_delayed_call b = later(c, 2.0, 2);
    tw_delayed_call d = later(c, 3.0, 3);
    tw_delayed_call e = later(c, 4.0, 4);

    cr_assert_eq(tw_delayed_call_reset(a, 3.5), 0);  /* later: after d */
    cr_assert_eq(tw_delayed_call_delay(e, -3.5), 0); /* sooner: first */
    cr_assert_eq(tw_delayed_call_delay(b, 1.0), 0);  /* 3.0: after d (rescheduled) */
    cr_assert_float_eq(tw_delayed_call_time(a), 3.5, 1e-9);
    cr_assert_float_eq(tw_delayed_call_time(b), 3.0, 1e-9);
    cr_assert_float_eq(tw_delayed_call_time(e), 0.5, 1e-9);
    cr_assert_eq(tw_clock_advance(c, 10.0), 4);
    expect_log((int[]){4, 3, 2, 1}, 4);
    (void)d;
    tw_clock_free(c);
}

TW_TEST(clock, reset_to_same_deadline_counts_as_rescheduling)
{
    tw_clock *c = manual();
    tw_delayed_call a = later(c, 1.0, 1);
    later(c, 1.0, 2);
    cr_assert_eq(tw_delayed_call_reset(a, 1.0), 0);
    tw_timer_init(&timers[0], c, timer_record);
    timer_tags[0] = 100;
    cr_assert_eq(tw_timer_start(&timers[0], 1.0), 0);
    later(c, 1.0, 3);
    cr_assert_eq(tw_timer_start(&timers[0], 1.0), 0); /* re-arm: after 3 now */
    cr_assert_eq(tw_clock_advance(c, 1.0), 4);
    expect_log((int[]){2, 1, 3, 100}, 4);
    tw_clock_free(c);
}

TW_TEST(clock, negative_delay_stops_at_now)
{
    tw_clock *c = manual();
    cr_assert_eq(tw_clock_advance(c, 10.0), 0);
    tw_delayed_call a = later(c, 5.0, 1);
    cr_assert_eq(tw_delayed_call_delay(a, -100.0), 0);
    cr_assert_float_eq(tw_delayed_call_time(a), 10.0, 1e-9);
    cr_assert_eq(tw_clock_advance(c, 0.0), 1);
    expect_log((int[]){1}, 1);
    tw_clock_free(c);
}

static void move_overdue(void *arg)
{
    record(arg);
    /* At 5.0: pulling in a call due at 2.0 leaves it where it is... */
    cr_assert_eq(tw_delayed_call_delay(cb_other, -1.0), 0);
    cr_assert_float_eq(tw_delayed_call_time(cb_other), 2.0, 1e-9);
    /* ...and postponing one due at 2.5 by one second makes it due now. */
    cr_assert_eq(tw_delayed_call_delay(cb_self, 1.0), 0);
    cr_assert_float_eq(tw_delayed_call_time(cb_self), 5.0, 1e-9);
}

TW_TEST(clock, delaying_an_overdue_call_never_schedules_it_in_the_past)
{
    tw_clock *c = manual();
    cr_assert_eq(tw_call_later(c, 1.0, move_overdue, TAG(1), NULL), 0);
    cb_other = later(c, 2.0, 2);
    cb_self = later(c, 2.5, 25);
    later(c, 3.0, 3);
    cr_assert_eq(tw_clock_advance(c, 5.0), 4);
    expect_log((int[]){1, 2, 3, 25}, 4);
    tw_clock_free(c);
}

TW_TEST(clock, lazy_rearm_runs_at_the_new_deadline_not_the_old)
{
    tw_clock *c = manual();
    tw_timer_init(&timers[0], c, timer_record);
    timer_tags[0] = 7;
    cr_assert_eq(tw_timer_start(&timers[0], 1.0), 0);
    for (int i = 2; i <= 5; i++)
        cr_assert_eq(tw_timer_start(&timers[0], (double)i), 0);
    later(c, 3.0, 3);
    cr_assert_eq(tw_clock_advance(c, 4.9), 1); /* only the call at 3 */
    cr_assert(tw_timer_active(&timers[0]));
    cr_assert_eq(tw_clock_advance(c, 0.1), 1);
    expect_log((int[]){3, 7}, 2);
    cr_assert_not(tw_timer_active(&timers[0]));
    tw_clock_free(c);
}

/* ---- Delayed-call handles */

static int hits;
static void hit(void *arg)
{
    hits++;
}

TW_TEST(clock, cancel_before_and_after_running)
{
    tw_clock *c = manual();
    hits = 0;
    tw_delayed_call a, b;
    cr_assert_eq(tw_call_later(c, 1.0, hit, NULL, &a), 0);
    cr_assert_eq(tw_call_later(c, 1.0, hit, NULL, &b), 0);
    cr_assert(tw_delayed_call_active(a));
    cr_assert_float_eq(tw_delayed_call_time(a), 1.0, 1e-12);

    cr_assert_eq(tw_delayed_call_cancel(a), 0);
    cr_assert_eq(tw_clock_pending(c), 1);
    cr_assert_not(tw_delayed_call_active(a));
    cr_assert(isnan(tw_delayed_call_time(a)));
    cr_assert_eq(tw_delayed_call_cancel(a), TW_EALREADYCANCELLED);
    cr_assert_eq(tw_delayed_call_reset(a, 1.0), TW_EALREADYCANCELLED);
    cr_assert_eq(tw_delayed_call_delay(a, 1.0), TW_EALREADYCANCELLED);

    cr_assert_eq(tw_clock_advance(c, 1.0), 1);
    cr_assert_eq(hits, 1);
    cr_assert_not(tw_delayed_call_active(b));
    cr_assert(isnan(tw_delayed_call_time(b)));
    cr_assert_eq(tw_delayed_call_cancel(b), TW_EALREADYCALLED);
    cr_assert_eq(tw_delayed_call_reset(b, 1.0), TW_EALREADYCALLED);
    cr_assert_eq(tw_delayed_call_delay(b, 1.0), TW_EALREADYCALLED);
    /* The handle is checked before the argument. */
    cr_assert_eq(tw_delayed_call_reset(b, NAN), TW_EALREADYCALLED);
    cr_assert_eq(tw_delayed_call_cancel(a), TW_EALREADYCANCELLED);

    cr_assert_eq(tw_clock_advance(c, 10.0), 0);
    cr_assert_eq(hits, 1);
    tw_clock_free(c);
}

TW_TEST(clock, stale_handle_after_slot_reuse)
{
    tw_clock *c = manual();
    hits = 0;
    tw_delayed_call old, fresh = {0};
    cr_assert_eq(tw_call_later(c, 1.0, hit, NULL, &old), 0);
    cr_assert_eq(tw_delayed_call_cancel(old), 0);

    /* Schedule until the cancelled call's slot is handed out again. */
    int scheduled = 0;
    while (fresh.slot != old.slot) {
        cr_assert_lt(scheduled, 100000, "slot never reused");
        cr_assert_eq(tw_call_later(c, 2.0, hit, NULL, &fresh), 0);
        scheduled++;
    }
    cr_assert_neq(fresh.id, old.id);
    cr_assert_eq(tw_delayed_call_cancel(old), TW_EALREADYCALLED);
    cr_assert_eq(tw_delayed_call_reset(old, 5.0), TW_EALREADYCALLED);
    cr_assert_not(tw_delayed_call_active(old));
    cr_assert(isnan(tw_delayed_call_time(old)));
    /* The stale handle did not touch the new call. */
    cr_assert(tw_delayed_call_active(fresh));
    cr_assert_float_eq(tw_delayed_call_time(fresh), 2.0, 1e-12);
    cr_assert_eq(tw_clock_advance(c, 2.0), scheduled);
    cr_assert_eq(hits, scheduled);
    tw_clock_free(c);
}

TW_TEST(clock, released_slots_are_reused_oldest_first)
{
    tw_clock *c = manual();
    hits = 0;
    tw_delayed_call a, b;
    cr_assert_eq(tw_call_later(c, 1.0, hit, NULL, &a), 0);
    cr_assert_eq(tw_delayed_call_cancel(a), 0);
    /* A few more schedules must not reuse a's slot while older free ones
     * exist, so a keeps its exact answer. */
    for (int i = 0; i < 8; i++) {
        cr_assert_eq(tw_call_later(c, 1.0, hit, NULL, &b), 0);
        cr_assert_neq(b.slot, a.slot);
    }
    cr_assert_eq(tw_delayed_call_cancel(a), TW_EALREADYCANCELLED);
    cr_assert_eq(tw_clock_advance(c, 1.0), 8);
    tw_clock_free(c);
}

TW_TEST(clock, zeroed_handle_is_inactive)
{
    tw_delayed_call z = {0};
    cr_assert_eq(tw_delayed_call_cancel(z), TW_EALREADYCALLED);
    cr_assert_eq(tw_delayed_call_reset(z, 1.0), TW_EALREADYCALLED);
    cr_assert_eq(tw_delayed_call_delay(z, 1.0), TW_EALREADYCALLED);
    cr_assert_not(tw_delayed_call_active(z));
    cr_assert(isnan(tw_delayed_call_time(z)));
}

/* ---- Bad input */

TW_TEST(clock, bad_delays_are_rejected_and_schedule_nothing)
{
    tw_clock *c = manual();
    hits = 0;
    const double bad[] = {NAN, -NAN, -1.0, -1e-9, INFINITY, -INFINITY};
    tw_timer_init(&timers[0], c, timer_record);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tw_delayed_call h = {0};
        cr_assert_eq(tw_call_later(c, bad[i], hit, NULL, &h), TW_EINVAL, "delay %g", bad[i]);
        cr_assert_null(h.slot);
        cr_assert_eq(tw_timer_start(&timers[0], bad[i]), TW_EINVAL);
        cr_assert_not(tw_timer_active(&timers[0]));
    }
    cr_assert_eq(tw_call_later(c, 1.0, NULL, NULL, NULL), TW_EINVAL);
    cr_assert_eq(tw_call_later(NULL, 1.0, hit, NULL, NULL), TW_EINVAL);
    cr_assert_eq(tw_clock_pending(c), 0);

    /* A pending call or armed timer is left as it was. */
    tw_delayed_call h;
    cr_assert_eq(tw_call_later(c, 2.0, hit, NULL, &h), 0);
    cr_assert_eq(tw_timer_start(&timers[0], 3.0), 0);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(tw_delayed_call_reset(h, bad[i]), TW_EINVAL);
        cr_assert_eq(tw_timer_start(&timers[0], bad[i]), TW_EINVAL);
    }
    cr_assert_eq(tw_delayed_call_delay(h, NAN), TW_EINVAL);
    cr_assert_eq(tw_delayed_call_delay(h, INFINITY), TW_EINVAL);
    cr_assert_eq(tw_delayed_call_delay(h, -INFINITY), TW_EINVAL);
    cr_assert_float_eq(tw_delayed_call_time(h), 2.0, 1e-12);
    cr_assert_eq(tw_clock_pending(c), 2);

    /* Advance and pump refuse bad amounts without moving time. */
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(tw_clock_advance(c, bad[i]), TW_EINVAL);
    cr_assert_eq(tw_clock_pump(c, (double[]){1.0, 1.0, NAN}, 3), TW_EINVAL);
    cr_assert_eq(tw_clock_seconds(c), 0.0);
    cr_assert_eq(hits, 0);

    cr_assert_eq(tw_clock_advance(c, 3.0), 2);
    cr_assert_eq(hits, 1);
    cr_assert_eq(tw_clock_pending(c), 0);
    tw_clock_free(c);
}

TW_TEST(clock, huge_delays_clamp_to_the_far_future)
{
    tw_clock *c = manual();
    hits = 0;
    tw_delayed_call a, b;
    cr_assert_eq(tw_call_later(c, 1e300, hit, NULL, &a), 0);
    cr_assert_eq(tw_call_later(c, DBL_MAX, hit, NULL, &b), 0);
    double far = tw_delayed_call_time(a);
    cr_assert_gt(far, 9.2e9);
    cr_assert_lt(far, 9.3e9);
    cr_assert_eq(tw_delayed_call_time(b), far);
    cr_assert_eq(tw_delayed_call_delay(a, 1e300), 0);
    cr_assert_eq(tw_delayed_call_time(a), far);

    tw_timer_init(&timers[0], c, timer_record);
    timer_tags[0] = 1;
    cr_assert_eq(tw_timer_start(&timers[0], 1e18), 0);

    cr_assert_eq(tw_clock_advance(c, 1e9), 0);
    cr_assert_eq(tw_delayed_call_time(a), far); /* did not wrap */
    cr_assert_eq(tw_clock_advance(c, 1e300), 3);
    cr_assert_eq(tw_clock_seconds(c), far);
    cr_assert_eq(hits, 2);
    cr_assert_eq(nran, 1);

    /* At the end of time, everything is due at once. */
    cr_assert_eq(tw_call_later(c, 1e300, hit, NULL, &a), 0);
    cr_assert_eq(tw_clock_advance(c, 0), 1);
    cr_assert_eq(hits, 3);
    tw_clock_free(c);
}

/* ---- Callbacks that act on the clock */

static void cancel_self(void *arg)
{
    hits++;
    cb_result = tw_delayed_call_cancel(cb_self);
}

static void cancel_other(void *arg)
{
    hits++;
    cb_result = tw_delayed_call_cancel(cb_other);
}

TW_TEST(clock, callback_cancels_itself_or_a_later_due_call)
{
    tw_clock *c = manual();
    hits = 0;
    cr_assert_eq(tw_call_later(c, 1.0, cancel_self, NULL, &cb_self), 0);
    cr_assert_eq(tw_clock_advance(c, 1.0), 1);
    cr_assert_eq(cb_result, TW_EALREADYCALLED); /* running counts as called */

    hits = 0;
    cr_assert_eq(tw_call_later(c, 1.0, cancel_other, NULL, NULL), 0);
    cr_assert_eq(tw_call_later(c, 1.0, hit, NULL, &cb_other), 0); /* due in the same advance */
    cr_assert_eq(tw_clock_advance(c, 1.0), 1);
    cr_assert_eq(cb_result, 0);
    cr_assert_eq(hits, 1);
    cr_assert_eq(tw_delayed_call_cancel(cb_other), TW_EALREADYCANCELLED);
    cr_assert_eq(tw_clock_pending(c), 0);
    tw_clock_free(c);
}

static int reschedules;
static void reschedule_self(void *arg)
{
    record(arg);
    if (++reschedules < 5)
        cr_assert_eq(tw_call_later(cb_clock, 1.0, reschedule_self, arg, &cb_self), 0);
}

TW_TEST(clock, callback_reschedules_itself)
{
    tw_clock *c = manual();
    cb_clock = c;
    reschedules = 0;
    cr_assert_eq(tw_call_later(c, 1.0, reschedule_self, TAG(9), &cb_self), 0);
    cr_assert_eq(tw_clock_advance(c, 1.0), 1);
    cr_assert(tw_delayed_call_active(cb_self));
    cr_assert_float_eq(tw_delayed_call_time(cb_self), 2.0, 1e-9);
    /* task.Clock semantics: time moves first, then the due calls run, so a
     * call rescheduled by one second lands after the advance's end... */
    cr_assert_eq(tw_clock_advance(c, 3.0), 1);
    cr_assert_eq(reschedules, 2);
    cr_assert_float_eq(tw_delayed_call_time(cb_self), 5.0, 1e-9);
    /* ...while pumping steps through each second. */
    cr_assert_eq(tw_clock_pump(c, (double[]){1.0, 1.0}, 2), 2);
    cr_assert_eq(reschedules, 4);
    cr_assert_eq(tw_clock_advance(c, 100.0), 1);
    cr_assert_eq(reschedules, 5);
    cr_assert_eq(tw_clock_pending(c), 0);
    tw_clock_free(c);
}

static void schedule_zero(void *arg)
{
    record(arg);
    int n = (int)(intptr_t)arg;
    if (n < 3)
        cr_assert_eq(tw_call_later(cb_clock, 0.0, schedule_zero, TAG(n + 1), NULL), 0);
}

TW_TEST(clock, zero_delay_calls_from_callbacks_run_in_the_same_advance)
{
    tw_clock *c = manual();
    cb_clock = c;
    later(c, 1.0, 10);
    cr_assert_eq(tw_call_later(c, 1.0, schedule_zero, TAG(0), NULL), 0);
    later(c, 1.0, 11);
    later(c, 2.0, 12);
    cr_assert_eq(tw_clock_advance(c, 1.0), 6);
    /* The zero-delay calls are due at 1.0 but scheduled later than 11. */
    expect_log((int[]){10, 0, 11, 1, 2, 3}, 6);
    cr_assert_eq(tw_clock_pending(c), 1);
    cr_assert_eq(tw_clock_advance(c, 1.0), 1);
    tw_clock_free(c);
}

static void advance_inside(void *arg)
{
    hits++;
    cb_result = tw_clock_advance(cb_clock, 1.0);
    cr_assert_eq(tw_clock_pump(cb_clock, (double[]){1.0}, 1), TW_EBUSY);
}

TW_TEST(clock, advance_from_a_callback_is_busy)
{
    tw_clock *c = manual();
    cb_clock = c;
    hits = 0;
    cr_assert_eq(tw_call_later(c, 1.0, advance_inside, NULL, NULL), 0);
    cr_assert_eq(tw_clock_advance(c, 1.0), 1);
    cr_assert_eq(cb_result, TW_EBUSY);
    cr_assert_float_eq(tw_clock_seconds(c), 1.0, 1e-12);
    tw_clock_free(c);
}

struct conn {
    tw_timer idle;
    int *closed;
};

static void conn_idle(tw_timer *t)
{
    struct conn *conn = (struct conn *)t;
    (*conn->closed)++;
    tw_free(conn); /* the container goes away inside its own timer */
}

static tw_timer *stop_target;
static void stop_other(tw_timer *t)
{
    hits++;
    tw_timer_stop(stop_target);
    tw_timer_stop(t); /* not armed: does nothing */
}

static void restart_self(tw_timer *t)
{
    hits++;
    if (hits < 3)
        cr_assert_eq(tw_timer_start(t, 0.5), 0);
}

TW_TEST(clock, timer_callbacks_free_stop_and_rearm)
{
    tw_clock *c = manual();
    int closed = 0;
    struct conn *conn = tw_malloc(sizeof *conn);
    cr_assert_not_null(conn);
    conn->closed = &closed;
    tw_timer_init(&conn->idle, c, conn_idle);
    cr_assert_eq(tw_timer_start(&conn->idle, 1.0), 0);
    cr_assert_eq(tw_clock_advance(c, 1.0), 1);
    cr_assert_eq(closed, 1);

    hits = 0;
    tw_timer_init(&timers[0], c, stop_other);
    tw_timer_init(&timers[1], c, timer_record);
    stop_target = &timers[1];
    cr_assert_eq(tw_timer_start(&timers[0], 1.0), 0);
    cr_assert_eq(tw_timer_start(&timers[1], 1.0), 0);
    cr_assert_eq(tw_clock_advance(c, 1.0), 1);
    cr_assert_eq(hits, 1);
    cr_assert_eq(nran, 0);
    cr_assert_not(tw_timer_active(&timers[1]));

    hits = 0;
    tw_timer_init(&timers[2], c, restart_self);
    cr_assert_eq(tw_timer_start(&timers[2], 0.5), 0);
    cr_assert_eq(tw_clock_pump(c, (double[]){0.5, 0.5, 0.5, 0.5}, 4), 3);
    cr_assert_eq(hits, 3);
    cr_assert_eq(tw_clock_pending(c), 0);
    tw_clock_free(c);
}

static void free_clock(void *arg)
{
    hits++;
    tw_clock_free(cb_clock);
}

TW_TEST(clock, freeing_the_clock_from_its_callback)
{
    tw_clock *c = manual();
    cb_clock = c;
    hits = 0;
    cr_assert_eq(tw_call_later(c, 1.0, free_clock, NULL, NULL), 0);
    cr_assert_eq(tw_call_later(c, 1.0, hit, NULL, NULL), 0);
    tw_timer_init(&timers[0], c, timer_record);
    cr_assert_eq(tw_timer_start(&timers[0], 2.0), 0);
    /* Frees the clock once the callback returns; nothing else runs. */
    cr_assert_eq(tw_clock_advance(c, 5.0), 1);
    cr_assert_eq(hits, 1);
    cr_assert_eq(nran, 0);
    cr_assert_not(tw_timer_active(&timers[0]));
    tw_timer_stop(&timers[0]); /* safe: it is unarmed */
}

TW_TEST(clock, free_drops_pending_and_disarms_timers)
{
    tw_clock *c = manual();
    hits = 0;
    for (int i = 0; i < 100; i++)
        cr_assert_eq(tw_call_later(c, 1.0 + i, hit, NULL, NULL), 0);
    tw_timer_init(&timers[0], c, timer_record);
    cr_assert_eq(tw_timer_start(&timers[0], 1.0), 0);
    tw_clock_free(c);
    cr_assert_eq(hits, 0);
    cr_assert_not(tw_timer_active(&timers[0]));
    tw_clock_free(NULL);
}

/* ---- Pump and pending counts */

TW_TEST(clock, pump_advances_step_by_step)
{
    tw_clock *c = manual();
    later(c, 0.5, 1);
    later(c, 1.5, 2);
    later(c, 2.5, 3);
    later(c, 3.5, 4);
    cr_assert_eq(tw_clock_pump(c, (double[]){1.0, 1.0, 1.0}, 3), 3);
    expect_log((int[]){1, 2, 3}, 3);
    cr_assert_float_eq(tw_clock_seconds(c), 3.0, 1e-12);
    cr_assert_eq(tw_clock_pending(c), 1);
    cr_assert_eq(tw_clock_pump(c, NULL, 0), 0);
    cr_assert_eq(tw_clock_pump(c, (double[]){0.25, 0.25}, 2), 1);
    tw_clock_free(c);
}

TW_TEST(clock, pending_counts_calls_and_timers)
{
    tw_clock *c = manual();
    hits = 0;
    tw_delayed_call h[10];
    for (int i = 0; i < 10; i++) {
        cr_assert_eq(tw_call_later(c, 1.0 + i, hit, NULL, &h[i]), 0);
        cr_assert_eq(tw_clock_pending(c), (size_t)i + 1);
    }
    tw_timer_init(&timers[0], c, timer_record);
    tw_timer_init(&timers[1], c, timer_record);
    cr_assert_eq(tw_timer_start(&timers[0], 1.0), 0);
    cr_assert_eq(tw_timer_start(&timers[0], 2.0), 0); /* re-arm: still one */
    cr_assert_eq(tw_timer_start(&timers[1], 100.0), 0);
    cr_assert_eq(tw_clock_pending(c), 12);
    cr_assert_eq(tw_delayed_call_cancel(h[9]), 0);
    cr_assert_eq(tw_delayed_call_reset(h[8], 0.5), 0);
    cr_assert_eq(tw_clock_pending(c), 11);
    tw_timer_stop(&timers[1]);
    tw_timer_stop(&timers[1]);
    cr_assert_eq(tw_clock_pending(c), 10);
    cr_assert_eq(tw_clock_advance(c, 2.0), 4); /* h[8] at 0.5, h[0], h[1], timer 0 */
    cr_assert_eq(tw_clock_pending(c), 6);
    cr_assert_eq(tw_clock_advance(c, 100.0), 6);
    cr_assert_eq(tw_clock_pending(c), 0);
    tw_clock_free(c);
}

/* ---- Allocation */

#define MANY 100000

static size_t fired_many;
static uint64_t last_due;
static void many_fired(tw_timer *t)
{
    /* Runs in deadline order: each at least as late as the one before. */
    cr_assert_geq(t->due_ns, last_due);
    last_due = t->due_ns;
    fired_many++;
}

TW_TEST(clock, rearming_armed_timers_never_allocates)
{
    tw_clock *c = manual();
    tw_timer *many = tw_calloc(MANY, sizeof *many);
    cr_assert_not_null(many);
    for (size_t i = 0; i < MANY; i++) {
        tw_timer_init(&many[i], c, many_fired);
        cr_assert_eq(tw_timer_start(&many[i], 1.0 + (double)(i % 1000) / 1000.0), 0);
    }
    cr_assert_eq(tw_clock_pending(c), MANY);

    tw_testing_fail_alloc_after(LONG_MAX); /* counting from here */
    long before = tw_testing_alloc_count();
    for (int round = 1; round <= 10; round++) {
        for (size_t i = 0; i < MANY; i++)
            cr_assert_eq(tw_timer_start(&many[i], 1.0 + round + (double)(i % 997) / 997.0), 0);
    }
    /* Earlier deadlines move up the heap: no allocation either. */
    for (size_t i = 0; i < MANY; i += 10)
        cr_assert_eq(tw_timer_start(&many[i], 0.5), 0);
    cr_assert_eq(tw_testing_alloc_count(), before, "re-arming allocated");
    tw_testing_fail_alloc_off();
    cr_assert_eq(tw_clock_pending(c), MANY);

    fired_many = 0;
    last_due = 0;
    cr_assert_eq(tw_clock_advance(c, 0.5), MANY / 10);
    cr_assert_eq(tw_clock_advance(c, 10.0), 0); /* the rest moved to [11, 12) */
    cr_assert_eq(tw_clock_advance(c, 100.0), MANY - MANY / 10);
    cr_assert_eq(fired_many, MANY);
    cr_assert_eq(tw_clock_pending(c), 0);
    tw_free(many);
    tw_clock_free(c);
}

TW_TEST(clock, new_manual_fails_cleanly)
{
    tw_clock *c = NULL;
    for (long n = 0; c == NULL; n++) {
        cr_assert_lt(n, 100);
        tw_testing_fail_alloc_after(n);
        c = tw_clock_new_manual();
        tw_testing_fail_alloc_off();
    }
    tw_clock_free(c);
}

/* Schedules calls one by one with allocation failing after n successes, over
 * the points where the heap and the slab must grow: every failure must be a
 * clean TW_ENOMEM that schedules nothing. */
TW_TEST(clock, call_later_allocation_failure)
{
    tw_clock *c = manual();
    hits = 0;
    size_t scheduled = 0;
    int failures = 0;
    while (scheduled < 300) {
        for (long n = 0;; n++) {
            cr_assert_lt(n, 10);
            tw_testing_fail_alloc_after(n);
            tw_delayed_call h = {0};
            int rc = tw_call_later(c, 1.0 + (double)scheduled, hit, NULL, &h);
            tw_testing_fail_alloc_off();
            if (rc == 0) {
                cr_assert(tw_delayed_call_active(h));
                scheduled++;
                break;
            }
            cr_assert_eq(rc, TW_ENOMEM, "%s", tw_strerror(rc));
            cr_assert_null(h.slot);
            cr_assert_eq(tw_clock_pending(c), scheduled);
            failures++;
        }
    }
    cr_assert_geq(failures, 4, "the heap and the slab should have had to grow");
    cr_assert_eq(tw_clock_advance(c, 1000.0), (int)scheduled);
    cr_assert_eq(hits, (int)scheduled);
    tw_clock_free(c);
}

/* The slab alone: the heap has room (timers armed then stopped), only the
 * slot chunk must be allocated. */
TW_TEST(clock, slab_growth_failure)
{
    tw_clock *c = manual();
    hits = 0;
    tw_timer *t = tw_calloc(1000, sizeof *t);
    cr_assert_not_null(t);
    for (int i = 0; i < 1000; i++) {
        tw_timer_init(&t[i], c, timer_record);
        cr_assert_eq(tw_timer_start(&t[i], 1.0), 0);
    }
    for (int i = 0; i < 1000; i++)
        tw_timer_stop(&t[i]);
    cr_assert_eq(tw_clock_pending(c), 0);

    tw_testing_fail_alloc_after(0);
    int rc = tw_call_later(c, 1.0, hit, NULL, NULL);
    tw_testing_fail_alloc_off();
    cr_assert_eq(rc, TW_ENOMEM);
    cr_assert_eq(tw_clock_pending(c), 0);

    /* One chunk serves many calls: after it, no allocation for a while. */
    cr_assert_eq(tw_call_later(c, 1.0, hit, NULL, NULL), 0);
    tw_testing_fail_alloc_after(0);
    for (int i = 1; i < 64; i++)
        cr_assert_eq(tw_call_later(c, 1.0, hit, NULL, NULL), 0);
    tw_testing_fail_alloc_off();
    cr_assert_eq(tw_clock_advance(c, 1.0), 64);
    cr_assert_eq(hits, 64);
    /* Ran calls give their slots back: reusing them allocates nothing. */
    tw_testing_fail_alloc_after(0);
    for (int i = 0; i < 64; i++)
        cr_assert_eq(tw_call_later(c, 1.0, hit, NULL, NULL), 0);
    tw_testing_fail_alloc_off();
    cr_assert_eq(tw_clock_advance(c, 1.0), 64);
    tw_clock_free(c);
    tw_free(t);
}

TW_TEST(clock, timer_start_heap_growth_failure)
{
    tw_clock *c = manual();
    tw_timer *t = tw_calloc(200, sizeof *t);
    cr_assert_not_null(t);
    int failures = 0;
    for (int i = 0; i < 200; i++) {
        tw_timer_init(&t[i], c, timer_record);
        for (long n = 0;; n++) {
            cr_assert_lt(n, 10);
            tw_testing_fail_alloc_after(n);
            int rc = tw_timer_start(&t[i], 1.0);
            tw_testing_fail_alloc_off();
            if (rc == 0)
                break;
            cr_assert_eq(rc, TW_ENOMEM);
            cr_assert_not(tw_timer_active(&t[i]));
            cr_assert_eq(tw_clock_pending(c), (size_t)i);
            failures++;
        }
        /* An armed timer re-arms even when memory is gone. */
        tw_testing_fail_alloc_after(0);
        cr_assert_eq(tw_timer_start(&t[i], 2.0), 0);
        tw_testing_fail_alloc_off();
    }
    cr_assert_geq(failures, 2);
    cr_assert_eq(tw_clock_pending(c), 200);
    tw_clock_free(c); /* disarms them: free the timers after */
    cr_assert_not(tw_timer_active(&t[199]));
    tw_free(t);
}

/* ---- A reactor's clock, with the cached time held still. */

static void zero_again(void *arg)
{
    hits++;
    if (hits < 3)
        cr_assert_eq(tw_call_later(cb_clock, 0.0, zero_again, NULL, NULL), 0);
}

TW_TEST(clock, reactor_clock_defers_zero_delay_calls_to_the_next_pass)
{
    tw_clock *c = tw__clock_new_reactor();
    cr_assert_not_null(c);
    cb_clock = c;
    hits = 0;
    cr_assert_eq(tw__clock_timeout_ns(c), -1);
    cr_assert_eq(tw_call_later(c, 0.0, zero_again, NULL, NULL), 0);
    cr_assert_eq(tw__clock_timeout_ns(c), 0);
    cr_assert_eq(tw__clock_run_due(c), 1);
    cr_assert_eq(hits, 1);
    cr_assert_eq(tw__clock_timeout_ns(c), 0); /* the new one is due: no wait */
    cr_assert_eq(tw__clock_run_due(c), 1);
    cr_assert_eq(tw__clock_run_due(c), 1);
    cr_assert_eq(tw__clock_run_due(c), 0);
    cr_assert_eq(hits, 3);
    cr_assert_eq(tw_clock_advance(c, 1.0), TW_EINVAL);
    tw__clock_destroy(c);
}

static uint64_t wait_for_time_to_pass(tw_clock *c, uint64_t after)
{
    uint64_t now;
    while ((now = tw__clock_update(c)) <= after)
        ;
    return now;
}

static void postpone_other(void *arg)
{
    hits++;
    cr_assert_eq(tw_delayed_call_delay(cb_other, 1e-9), 0);
}

/* A call rescheduled during a pass waits for the next pass, and does not hold
 * back the calls due behind it, even when it was overdue. */
TW_TEST(clock, reactor_clock_rescheduled_overdue_call_waits_without_blocking)
{
    tw_clock *c = tw__clock_new_reactor();
    cr_assert_not_null(c);
    hits = 0;
    uint64_t t0 = tw__clock_update(c);
    cr_assert_eq(tw_call_later(c, 0.0, postpone_other, NULL, NULL), 0);
    cr_assert_eq(tw_call_later(c, 0.0, hit, NULL, &cb_other), 0);
    uint64_t t1 = wait_for_time_to_pass(c, t0 + 1000);
    cr_assert_eq(tw_call_later(c, 0.0, hit, NULL, NULL), 0); /* due at t1 */
    wait_for_time_to_pass(c, t1);
    cr_assert_eq(tw__clock_run_due(c), 2);
    cr_assert_eq(hits, 2);
    cr_assert(tw_delayed_call_active(cb_other));
    cr_assert_eq(tw__clock_run_due(c), 1);
    cr_assert_eq(hits, 3);
    tw__clock_destroy(c);
}

TW_TEST(clock, reactor_clock_timeout)
{
    tw_clock *c = tw__clock_new_reactor();
    cr_assert_not_null(c);
    hits = 0;
    uint64_t first = tw__clock_update(c);
    uint64_t now = tw__clock_update(c);
    cr_assert_geq(now, first);
    cr_assert_float_eq(tw_clock_seconds(c), (double)now / 1e9, 1e-6);
    /* From here the cached time stays `now`: deadlines are exact. */

    tw_timer t;
    tw_timer_init(&t, c, timer_record);
    tw_delayed_call h;
    cr_assert_eq(tw_call_later(c, 2.0, hit, NULL, &h), 0);
    cr_assert_eq(tw__clock_timeout_ns(c), 2000000000);
    cr_assert_eq(tw_timer_start(&t, 0.5), 0);
    cr_assert_eq(tw__clock_timeout_ns(c), 500000000);
    /* Re-armed later: the timeout may stay early until the next run... */
    cr_assert_eq(tw_timer_start(&t, 1.0), 0);
    cr_assert_leq(tw__clock_timeout_ns(c), 1000000000);
    /* ...which re-sorts without running anything. */
    cr_assert_eq(tw__clock_run_due(c), 0);
    cr_assert_eq(tw__clock_timeout_ns(c), 1000000000);
    tw_timer_stop(&t);
    cr_assert_eq(tw__clock_timeout_ns(c), 2000000000);
    cr_assert_eq(tw_delayed_call_delay(h, 1e300), 0);
    cr_assert_eq(tw__clock_run_due(c), 0);
    cr_assert_eq(tw__clock_timeout_ns(c), INT64_MAX - (int64_t)now); /* capped */
    cr_assert_eq(tw_delayed_call_cancel(h), 0);
    cr_assert_eq(tw__clock_timeout_ns(c), -1);
    tw__clock_destroy(c);
}

TW_TEST(clock, clock_free_refuses_a_reactor_clock)
{
    tw_clock *c = tw__clock_new_reactor();
    cr_assert_not_null(c);
    cr_assert_eq(tw_call_later(c, 1.0, hit, NULL, NULL), 0);
    tw_testing_log_capture_start();
    tw_clock_free(c);
    size_t logged = tw_testing_log_count("reactor's clock");
    tw_testing_log_capture_stop();
    cr_assert_eq(logged, 1);
    cr_assert_eq(tw_clock_pending(c), 1); /* still alive */
    tw__clock_destroy(c);
}
