/* The deferred helpers: getProcessOutput, getProcessValue,
 * getProcessOutputAndValue. */
#include "proc-test.h"

TW_REACTOR_TEST(utils, output_of_a_command)
{
    char *argv[] = {"echo", "hello", "world", NULL};
    tw_deferred *d = tw_get_process_output(r, "echo", argv, NULL, NULL, false);
    tw_result res = twtest_wait(r, d);
    cr_assert(!tw_result_is_failure(res));
    tw_process_output *o = tw_result_take(&res);
    cr_assert_str_eq(o->out, "hello world\n");
    cr_assert_eq(o->out_len, 12);
    cr_assert_str_eq(o->err, "");
    cr_assert_gt(o->pid, 0);
    cr_assert_eq(o->status.exit_code, 0);
    tw_process_output_free(o);
    tw_deferred_unref(d);
}

TW_REACTOR_TEST(utils, stderr_fails_get_process_output_unless_errortoo)
{
    char *argv[] = {"sh", "-c", "echo out; echo bad >&2; sleep 0.1; echo more", NULL};
    tw_deferred *d = tw_get_process_output(r, "/bin/sh", argv, NULL, NULL, false);
    tw_result res = twtest_wait(r, d);
    cr_assert(tw_result_is_failure(res));
    cr_assert_eq(tw_failure_code(res.failure), TW_EPROTOCOL);
    cr_assert(strstr(tw_failure_message(res.failure), "got stderr: 'bad"), "%s",
              tw_failure_message(res.failure));
    tw_result_release(&res);
    tw_deferred_unref(d);
    /* The child goes on to its end, reaped with nobody waiting. */
    for (int i = 0; i < 100; i++) {
        tw_reactor_state st;
        tw_reactor_get_state(r, &st);
        if (st.handles == 0)
            break;
        tw_reactor_iterate(r, 0.05);
    }

    d = tw_get_process_output(r, "/bin/sh", argv, NULL, NULL, true);
    res = twtest_wait(r, d);
    tw_process_output *o = tw_result_take(&res);
    cr_assert(o);
    cr_assert_str_eq(o->out, "out\nbad\nmore\n");
    tw_process_output_free(o);
    tw_deferred_unref(d);
}

TW_REACTOR_TEST(utils, value_is_the_exit_code)
{
    char *argv[] = {"sh", "-c", "exit 42", NULL};
    tw_deferred *d = tw_get_process_value(r, "/bin/sh", argv, NULL, NULL);
    tw_result res = twtest_wait(r, d);
    cr_assert(!tw_result_is_failure(res));
    cr_assert_eq(tw_result_int(res), 42);
    tw_deferred_unref(d);

    char *argv2[] = {"sh", "-c", "kill -TERM $$", NULL};
    d = tw_get_process_value(r, "/bin/sh", argv2, NULL, NULL);
    res = twtest_wait(r, d);
    cr_assert(tw_result_is_failure(res));
    cr_assert_eq(tw_failure_code(res.failure), TW_EPROCESSTERMINATED);
    cr_assert(strstr(tw_failure_message(res.failure), "signal 15"));
    tw_result_release(&res);
    tw_deferred_unref(d);
}

TW_REACTOR_TEST(utils, output_and_value_with_stdin)
{
    char *argv[] = {"sh", "-c", "tr a-z A-Z; echo err >&2; exit 5", NULL};
    tw_deferred *d = tw_get_process_output_and_value(r, "/bin/sh", argv, NULL, NULL, "shout\n", 6);
    tw_result res = twtest_wait(r, d);
    tw_process_output *o = tw_result_take(&res);
    cr_assert(o);
    cr_assert_str_eq(o->out, "SHOUT\n");
    cr_assert_str_eq(o->err, "err\n");
    cr_assert_eq(o->status.how, TW_PROCESS_EXITED);
    cr_assert_eq(o->status.exit_code, 5);
    tw_process_output_free(o);
    tw_deferred_unref(d);

    /* A child that reads stdin gets end of file at once. */
    char *argv2[] = {"cat", NULL};
    d = tw_get_process_output_and_value(r, "/bin/cat", argv2, NULL, NULL, NULL, 0);
    res = twtest_wait(r, d);
    o = tw_result_take(&res);
    cr_assert_eq(o->out_len, 0);
    cr_assert_eq(o->status.exit_code, 0);
    tw_process_output_free(o);
    tw_deferred_unref(d);
}

TW_REACTOR_TEST(utils, missing_executable_fails_the_deferred)
{
    tw_deferred *d = tw_get_process_output(r, "/no/such/program", NULL, NULL, NULL, false);
    cr_assert(d);
    cr_assert(tw_deferred_called(d), "failed at once");
    tw_result res = twtest_wait(r, d);
    cr_assert(tw_result_is_failure(res));
    cr_assert_eq(tw_failure_code(res.failure), TW_ENOENT);
    cr_assert(strstr(tw_failure_message(res.failure), "/no/such/program"));
    tw_result_release(&res);
    tw_deferred_unref(d);
    d = tw_get_process_value(r, NULL, NULL, NULL, NULL);
    res = twtest_wait(r, d);
    cr_assert_eq(tw_failure_code(res.failure), TW_EINVAL);
    tw_result_release(&res);
    tw_deferred_unref(d);
}

TW_REACTOR_TEST(utils, cancelling_kills_the_child)
{
    char *argv[] = {"sleep", "10", NULL};
    tw_deferred *d = tw_get_process_value(r, "sleep", argv, NULL, NULL);
    cr_assert(!tw_deferred_called(d));
    tw_deferred_cancel(d);
    tw_result res = twtest_wait(r, d);
    cr_assert_eq(tw_failure_code(res.failure), TW_ECANCELED);
    tw_result_release(&res);
    tw_deferred_unref(d);
    /* The killed child is reaped from the loop: nothing is left. */
    for (int i = 0; i < 40; i++) {
        tw_reactor_state st;
        tw_reactor_get_state(r, &st);
        if (st.handles == 0)
            break;
        tw_reactor_iterate(r, 0.05);
    }
    cr_assert_eq(waitpid(-1, NULL, WNOHANG), -1);
}

static void stop_now(void *r)
{
    tw_reactor_stop(r);
}

TW_REACTOR_TEST(utils, shutdown_before_the_end_fails_with_connlost)
{
    char *argv[] = {"sleep", "2", NULL};
    tw_deferred *d = tw_get_process_output(r, "sleep", argv, NULL, NULL, false);
    tw_reactor_call_when_running(r, stop_now, r);
    tw_reactor_run(r);
    cr_assert(tw_deferred_called(d));
    tw_result res = twtest_wait(r, d);
    cr_assert_eq(tw_failure_code(res.failure), TW_ECONNLOST);
    tw_result_release(&res);
    tw_deferred_unref(d);
}

TW_REACTOR_TEST(utils, allocation_failure_is_clean)
{
    /* Warm up the thread's buffer. */
    tw_deferred *d = tw_get_process_value(r, "/bin/true", NULL, NULL, NULL);
    tw_result res = twtest_wait(r, d);
    tw_deferred_unref(d);
    for (long n = 0;; n++) {
        tw_testing_fail_alloc_after(n);
        d = tw_get_process_output(r, "/bin/echo", NULL, NULL, NULL, false);
        tw_testing_fail_alloc_off();
        if (!d)
            continue; /* out of memory for the failed deferred itself */
        res = twtest_wait(r, d);
        tw_deferred_unref(d);
        if (!tw_result_is_failure(res)) {
            tw_result_release(&res);
            break;
        }
        cr_assert_eq(tw_failure_code(res.failure), TW_ENOMEM, "n=%ld: %s", n,
                     tw_failure_message(res.failure));
        tw_result_release(&res);
        cr_assert_lt(n, 100);
    }
}
