/* The testing kit itself: run-until-fired and the dirty-reactor check. */
#include "twtest.h"

#include <math.h>
#include <string.h>
#include <unistd.h>

static void fire_42(void *arg)
{
    tw_deferred_callback(arg, tw_result_from_int(42));
}

TW_REACTOR_TEST(testing_kit, run_until_fired_hands_back_the_result)
{
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    cr_assert_eq(tw_call_later(tw_reactor_clock(r), 0.01, fire_42, d, NULL), 0);
    tw_result out = {0};
    cr_assert_eq(tw_testing_run_until_fired(r, d, 5.0, &out), 0);
    cr_assert_null(out.failure);
    cr_assert_eq(tw_result_int(out), 42);
    tw_deferred_unref(d);
}

static int cancelled;

static void count_cancel(tw_deferred *d, void *arg)
{
    cancelled++;
}

TW_REACTOR_TEST(testing_kit, run_until_fired_times_out_and_cancels)
{
    cancelled = 0;
    tw_deferred *d = tw_deferred_new(count_cancel, NULL);
    tw_result out = {0};
    double t0 = tw_reactor_seconds(r);
    cr_assert_eq(tw_testing_run_until_fired(r, d, 0.05, &out), TW_ETIMEDOUT);
    cr_assert_geq(tw_reactor_seconds(r) - t0, 0.05);
    cr_assert_eq(cancelled, 1);
    cr_assert(tw_deferred_called(d), "the cancellation fired it");
    tw_deferred_unref(d);
}

TW_REACTOR_TEST(testing_kit, a_result_arriving_after_the_timeout_is_released)
{
    /* Paused, the deferred cannot hand its cancellation to the waiter before
     * run_until_fired returns: the waiter must outlive the call (ASan checks
     * that nothing is written into freed memory and nothing leaks). */
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    tw_deferred_pause(d);
    tw_result out = {0};
    cr_assert_eq(tw_testing_run_until_fired(r, d, 0.02, &out), TW_ETIMEDOUT);
    cr_assert_eq(tw_deferred_unpause(d), 0); /* the waiter's callback runs now */
    tw_deferred_unref(d);
}

TW_REACTOR_TEST(testing_kit, run_until_fired_rejects_a_bad_timeout)
{
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    tw_result out = {0};
    cr_assert_eq(tw_testing_run_until_fired(r, d, -1.0, &out), TW_EINVAL);
    cr_assert_eq(tw_testing_run_until_fired(r, d, NAN, &out), TW_EINVAL);
    cr_assert(!tw_deferred_called(d));
    tw_deferred_unref(d);
}

static void nothing(void *arg) {}

static void on_io(tw_io *io, unsigned events) {}

TW_REACTOR_TEST(testing_kit, check_clean_says_what_was_left)
{
    tw_delayed_call call;
    cr_assert_eq(tw_call_later(tw_reactor_clock(r), 60.0, nothing, NULL, &call), 0);
    int p[2];
    cr_assert_eq(pipe(p), 0);
    tw_io io;
    tw_io_init(&io, p[0], on_io, NULL);
    cr_assert_eq(tw_reactor_add_reader(r, &io), 0);

    char why[256];
    cr_assert_eq(tw_testing_check_clean(r, why, sizeof why), TW_EBUSY);
    cr_assert(strstr(why, "1 pending delayed call"), "%s", why);
    cr_assert(strstr(why, "1 reader"), "%s", why);

    tw_delayed_call_cancel(call);
    tw_reactor_remove_reader(r, &io);
    close(p[0]);
    close(p[1]);
    cr_assert_eq(tw_testing_check_clean(r, why, sizeof why), 0);
    cr_assert_str_eq(why, "");
}

static tw_result fail_it(tw_result result, void *arg)
{
    tw_result_release(&result);
    return tw_result_fail(tw_failure_new(TW_EINVAL, NULL, "left unhandled on purpose"));
}

TW_REACTOR_TEST(testing_kit, check_clean_reports_unhandled_failures)
{
    tw_testing_log_capture_start(); /* keep the expected error line out of the output */
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    tw_deferred_add_callback(d, fail_it, NULL);
    tw_deferred_callback(d, tw_result_from_int(1));
    tw_deferred_unref(d);
    tw_testing_log_capture_stop();
    char why[256];
    cr_assert_eq(tw_testing_check_clean(r, why, sizeof why), TW_EBUSY);
    cr_assert(strstr(why, "1 unhandled failure"), "%s", why);
    tw_testing_begin(); /* seen and intended: the teardown check starts afresh */
}
