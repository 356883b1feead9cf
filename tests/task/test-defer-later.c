/* deferLater: fires after the delay with the function's result (a value, a
 * failure, a deferred it waits for), cancellable before then, bad delays,
 * allocation failure; and once on a real reactor. */
#include <math.h>

#include <twine/task.h>

#include "twtest.h"

static int fn_calls;
static double fn_called_at;
static tw_clock *the_clock;

static tw_result answer(void *arg)
{
    fn_calls++;
    fn_called_at = tw_clock_seconds(the_clock);
    return tw_result_from_int((intptr_t)arg);
}

static tw_result failing(void *arg)
{
    fn_calls++;
    return tw_result_fail(tw_failure_new(TW_EUSER, NULL, "fn failed"));
}

static tw_deferred *inner;

static tw_result deferring(void *arg)
{
    fn_calls++;
    inner = tw_deferred_new(NULL, NULL);
    return tw_result_deferred(tw_deferred_ref(inner));
}

struct outcome {
    int fired;
    int code;
    intptr_t value;
};

static tw_result keep(tw_result r, void *arg)
{
    struct outcome *o = arg;
    o->fired++;
    o->code = r.failure ? tw_failure_code(r.failure) : 0;
    o->value = r.failure ? -1 : tw_result_int(r);
    tw_result_release(&r);
    return tw_result_borrowed(NULL);
}

static tw_clock *clock_new(void)
{
    the_clock = tw_clock_new_manual();
    cr_assert(the_clock);
    return the_clock;
}

static void clock_done(tw_clock *c)
{
    cr_assert_eq(tw_clock_pending(c), 0);
    tw_clock_free(c);
}

TW_TEST(later, fires_after_the_delay_with_the_functions_value)
{
    tw_clock *c = clock_new();
    tw_clock_advance(c, 1.0);
    tw_deferred *d = tw_defer_later(c, 2.5, answer, (void *)42);
    cr_assert(d);
    struct outcome o = {0};
    tw_deferred_add_both(d, keep, &o);
    tw_clock_advance(c, 2.4);
    cr_assert_eq(fn_calls, 0);
    cr_assert_eq(o.fired, 0);
    tw_clock_advance(c, 0.1);
    cr_assert_eq(fn_calls, 1);
    cr_assert_eq(fn_called_at, 3.5);
    cr_assert_eq(o.fired, 1);
    cr_assert_eq(o.value, 42);
    tw_clock_advance(c, 10);
    cr_assert_eq(fn_calls, 1, "once");
    tw_deferred_unref(d);
    clock_done(c);
}

TW_TEST(later, no_function_fires_with_null)
{
    tw_clock *c = clock_new();
    tw_deferred *d = tw_defer_later(c, 0, NULL, NULL);
    struct outcome o = {.value = -5};
    tw_deferred_add_both(d, keep, &o);
    cr_assert_eq(o.fired, 0, "not before the clock runs it");
    tw_clock_advance(c, 0);
    cr_assert_eq(o.fired, 1);
    cr_assert_eq(o.code, 0);
    cr_assert_eq(o.value, 0);
    tw_deferred_unref(d);
    clock_done(c);
}

TW_TEST(later, a_failing_function_fails_the_deferred)
{
    tw_clock *c = clock_new();
    tw_deferred *d = tw_defer_later(c, 1, failing, NULL);
    struct outcome o = {0};
    tw_deferred_add_both(d, keep, &o);
    tw_clock_advance(c, 1);
    cr_assert_eq(o.code, TW_EUSER);
    tw_deferred_unref(d);
    clock_done(c);
}

TW_TEST(later, a_returned_deferred_is_waited_for)
{
    tw_clock *c = clock_new();
    tw_deferred *d = tw_defer_later(c, 1, deferring, NULL);
    struct outcome o = {0};
    tw_deferred_add_both(d, keep, &o);
    tw_clock_advance(c, 1);
    cr_assert_eq(fn_calls, 1);
    cr_assert_eq(o.fired, 0);
    tw_deferred_callback(inner, tw_result_from_int(9));
    cr_assert_eq(o.fired, 1);
    cr_assert_eq(o.value, 9);
    tw_deferred_unref(inner);
    tw_deferred_unref(d);
    clock_done(c);
}

TW_TEST(later, cancelling_before_the_delay_drops_the_call)
{
    tw_clock *c = clock_new();
    tw_deferred *d = tw_defer_later(c, 5, answer, (void *)1);
    struct outcome o = {0};
    tw_deferred_add_both(d, keep, &o);
    cr_assert_eq(tw_clock_pending(c), 1);
    tw_clock_advance(c, 2);
    tw_deferred_cancel(d);
    cr_assert_eq(o.fired, 1);
    cr_assert_eq(o.code, TW_ECANCELED);
    cr_assert_eq(tw_clock_pending(c), 0, "the delayed call is gone");
    tw_clock_advance(c, 10);
    cr_assert_eq(fn_calls, 0, "fn never runs");
    tw_deferred_cancel(d); /* again: nothing */
    cr_assert_eq(o.fired, 1);
    tw_deferred_unref(d);
    clock_done(c);
}

TW_TEST(later, cancelling_while_waiting_for_the_functions_deferred_forwards)
{
    tw_clock *c = clock_new();
    tw_deferred *d = tw_defer_later(c, 1, deferring, NULL);
    struct outcome o = {0};
    tw_deferred_add_both(d, keep, &o);
    tw_clock_advance(c, 1);
    tw_deferred_cancel(d);
    cr_assert(tw_deferred_called(inner), "the inner deferred was cancelled");
    cr_assert_eq(o.code, TW_ECANCELED);
    tw_deferred_unref(inner);
    tw_deferred_unref(d);
    clock_done(c);
}

TW_TEST(later, dropping_the_reference_still_runs_the_function)
{
    tw_clock *c = clock_new();
    tw_deferred *d = tw_defer_later(c, 1, answer, (void *)3);
    tw_deferred_unref(d);
    tw_clock_advance(c, 1);
    cr_assert_eq(fn_calls, 1);
    clock_done(c);
}

TW_TEST(later, bad_delays_fail_with_einval)
{
    tw_clock *c = clock_new();
    double bad[] = {-1, NAN, INFINITY};
    for (size_t i = 0; i < 3; i++) {
        tw_deferred *d = tw_defer_later(c, bad[i], answer, NULL);
        cr_assert(d);
        struct outcome o = {0};
        tw_deferred_add_both(d, keep, &o);
        cr_assert_eq(o.code, TW_EINVAL);
        tw_deferred_unref(d);
    }
    tw_deferred *d = tw_defer_later(NULL, 1, answer, NULL);
    struct outcome o = {0};
    tw_deferred_add_both(d, keep, &o);
    cr_assert_eq(o.code, TW_EINVAL);
    tw_deferred_unref(d);
    cr_assert_eq(fn_calls, 0);
    clock_done(c);
}

TW_TEST(later, allocation_failure_is_clean)
{
    tw_clock *c = clock_new();
    for (long n = 0;; n++) {
        tw_testing_fail_alloc_after(n);
        tw_deferred *d = tw_defer_later(c, 1, answer, (void *)5);
        tw_testing_fail_alloc_off();
        if (d) {
            cr_assert_gt(n, 0);
            struct outcome o = {0};
            tw_deferred_add_both(d, keep, &o);
            tw_clock_advance(c, 1);
            cr_assert_eq(o.value, 5);
            cr_assert_eq(fn_calls, 1);
            tw_deferred_unref(d);
            break;
        }
        cr_assert_eq(tw_clock_pending(c), 0, "n=%ld: nothing scheduled", n);
    }
    clock_done(c);
}

TW_REACTOR_TEST(later, on_the_reactor)
{
    the_clock = tw_reactor_clock(r);
    double t0 = tw_reactor_seconds(r);
    tw_deferred *d = tw_defer_later(tw_reactor_clock(r), 0.02, answer, (void *)11);
    tw_result res = twtest_wait(r, d);
    cr_assert_eq(tw_result_int(res), 11);
    cr_assert_geq(fn_called_at - t0, 0.02 - 1e-6);
    tw_deferred_unref(d);
}
