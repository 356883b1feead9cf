#include "twtest.h"
#include <twine/error.h>
#include <twine/failure.h>
#include <twine/testing.h>

#include <stdlib.h>
#include <string.h>

TW_TEST(failure, carries_code_message_and_origin)
{
    int line = __LINE__ + 1;
    tw_failure *f = tw_failure_new(TW_ETIMEDOUT, NULL, "connect to %s timed out", "example");
    cr_assert_eq(tw_failure_code(f), TW_ETIMEDOUT);
    cr_assert_str_eq(tw_failure_message(f), "connect to example timed out");
    cr_assert_str_eq(tw_failure_file(f), __FILE__);
    cr_assert_eq(tw_failure_line(f), line);
    cr_assert_str_eq(tw_failure_func(f), __func__);
    cr_assert_null(tw_failure_cause(f));
    tw_failure_unref(f);
}

TW_TEST(failure, null_format_uses_the_code_s_text)
{
    tw_failure *f = tw_failure_new(-ECONNREFUSED, NULL, NULL);
    cr_assert_str_eq(tw_failure_message(f), tw_strerror(-ECONNREFUSED));
    tw_failure_unref(f);
    f = tw_failure_new(-EROFS, NULL, NULL); /* not in Twine's map: libc names it */
    cr_assert_str_eq(tw_failure_message(f), strerror(EROFS));
    tw_failure_unref(f);
}

TW_TEST(failure, non_negative_code_becomes_euser)
{
    tw_failure *f = tw_failure_new(42, NULL, "bad code");
    cr_assert_eq(tw_failure_code(f), TW_EUSER);
    tw_failure_unref(f);
}

TW_TEST(failure, cause_chain_and_format)
{
    tw_failure *root = tw_failure_new(-ECONNREFUSED, NULL, "refused");
    tw_failure *top = tw_failure_new(TW_ETIMEDOUT, root, "gave up");
    cr_assert_eq(tw_failure_cause(top), root);
    char buf[512];
    size_t n = tw_failure_format(top, buf, sizeof buf);
    cr_assert_eq(n, strlen(buf));
    cr_assert(strstr(buf, "ETIMEDOUT: gave up (at "));
    cr_assert(strstr(buf, "caused by: ECONNREFUSED: refused"));
    cr_assert(strstr(buf, "ETIMEDOUT") < strstr(buf, "ECONNREFUSED"));
    tw_failure_unref(top); /* drops the cause too (ASan would report a leak) */
}

TW_TEST(failure, format_reports_needed_length_when_truncated)
{
    tw_failure *f = tw_failure_new(TW_EINVAL, NULL, "%s", "a fairly long message for a buffer");
    char small[8];
    size_t need = tw_failure_format(f, small, sizeof small);
    cr_assert_gt(need, sizeof small);
    cr_assert_eq(strlen(small), sizeof small - 1);
    char *big = malloc(need + 1);
    cr_assert_eq(tw_failure_format(f, big, need + 1), need);
    cr_assert_eq(strlen(big), need);
    free(big);
    tw_failure_unref(f);
}

TW_TEST(failure, long_message_is_kept_whole)
{
    char text[1000];
    memset(text, 'x', sizeof text - 1);
    text[sizeof text - 1] = '\0';
    tw_failure *f = tw_failure_new(TW_EINVAL, NULL, "%s", text);
    cr_assert_str_eq(tw_failure_message(f), text);
    tw_failure_unref(f);
}

TW_TEST(failure, refcount)
{
    tw_failure *f = tw_failure_new(TW_EINVAL, NULL, "x");
    cr_assert_eq(tw_failure_ref(f), f);
    tw_failure_unref(f);
    cr_assert_eq(tw_failure_code(f), TW_EINVAL); /* still alive: one reference left */
    tw_failure_unref(f);
    tw_failure_unref(NULL);
}

TW_TEST(failure, check_matches_codes)
{
    tw_failure *f = tw_failure_new(TW_ECANCELED, NULL, NULL);
    cr_assert_eq(tw_failure_check(f, TW_ETIMEDOUT, TW_ECANCELED), TW_ECANCELED);
    cr_assert_eq(tw_failure_check(f, TW_ECANCELED), TW_ECANCELED);
    cr_assert_eq(tw_failure_check(f, TW_ETIMEDOUT, TW_EINVAL), 0);
    tw_failure_unref(f);
}

TW_TEST(failure, backtrace_when_asked)
{
    tw_failure_capture_backtraces(true);
    tw_failure *f = tw_failure_new(TW_EINVAL, NULL, "with frames");
    size_t frames = 0;
    const char *const *bt = tw_failure_backtrace(f, &frames);
    cr_assert_gt(frames, 0);
    cr_assert_not_null(bt[0]);
    char buf[8192];
    tw_failure_format(f, buf, sizeof buf);
    cr_assert(strstr(buf, "\n    "), "format shows the frames: %s", buf);
    tw_failure_unref(f);
    tw_failure_capture_backtraces(false);
    f = tw_failure_new(TW_EINVAL, NULL, "without");
    cr_assert_null(tw_failure_backtrace(f, &frames));
    cr_assert_eq(frames, 0);
    tw_failure_unref(f);
}

TW_TEST(failure, out_of_memory_gives_static_failure_and_drops_cause)
{
    tw_failure *cause = tw_failure_new(TW_EINVAL, NULL, "cause");
    tw_testing_fail_alloc_after(0);
    tw_failure *f = tw_failure_new(TW_ETIMEDOUT, cause, "cannot be allocated");
    tw_testing_fail_alloc_off();
    cr_assert_eq(tw_failure_code(f), TW_ENOMEM);
    cr_assert_null(tw_failure_cause(f));
    tw_failure_ref(f); /* no-ops on the static failure */
    tw_failure_unref(f);
    tw_failure_unref(f);
    cr_assert_eq(tw_failure_code(f), TW_ENOMEM);
}

TW_TEST(failure, long_cause_chain_is_freed_iteratively)
{
    tw_failure *f = NULL;
    for (int i = 0; i < 200000; i++)
        f = tw_failure_new(TW_EINVAL, f, NULL);
    tw_failure_unref(f);
}
