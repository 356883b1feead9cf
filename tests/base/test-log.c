#include "twtest.h"
#include <twine/error.h>
#include <twine/failure.h>
#include <twine/log.h>
#include <twine/testing.h>

#include <stdlib.h>
#include <string.h>

static char *read_all(FILE *f)
{
    fflush(f);
    long n = ftell(f);
    rewind(f);
    char *s = calloc(1, (size_t)n + 1);
    cr_assert_eq(fread(s, 1, (size_t)n, f), (size_t)n);
    return s;
}

TW_TEST(log, text_observer_line_with_failure_chain)
{
    FILE *f = tmpfile();
    tw_log_add_observer(tw_log_text_observer, f);
    tw_failure *fl =
        tw_failure_new(TW_ETIMEDOUT, tw_failure_new(-ECONNREFUSED, NULL, "no"), "gave up");
    tw_log_failure(TW_LOG_ERROR, "twine.test", fl, "lost %d", 3);
    tw_failure_unref(fl);
    tw_log_remove_observer(tw_log_text_observer, f);
    char *s = read_all(f);
    cr_assert(strstr(s, "[twine.test#error] lost 3\n"), "%s", s);
    cr_assert(strstr(s, "ETIMEDOUT: gave up"), "%s", s);
    cr_assert(strstr(s, "caused by: ECONNREFUSED: no"), "%s", s);
    cr_assert_eq(s[4], '-'); /* starts with an ISO date */
    free(s);
    fclose(f);
}

TW_TEST(log, json_observer_escapes_and_nests_causes)
{
    FILE *f = tmpfile();
    tw_log_add_observer(tw_log_json_observer, f);
    tw_failure *fl =
        tw_failure_new(TW_ETIMEDOUT, tw_failure_new(TW_EINVAL, NULL, "inner"), "outer");
    tw_log_failure(TW_LOG_WARN, "twine.test", fl, "quote \" and\nnewline");
    tw_failure_unref(fl);
    tw_log_remove_observer(tw_log_json_observer, f);
    char *s = read_all(f);
    cr_assert(strstr(s, "\"level\":\"warn\""), "%s", s);
    cr_assert(strstr(s, "\"namespace\":\"twine.test\""), "%s", s);
    cr_assert(strstr(s, "\"message\":\"quote \\\" and\\nnewline\""), "%s", s);
    cr_assert(strstr(s, "\"failure\":{\"code\":"), "%s", s);
    cr_assert(strstr(s, "\"causes\":[{\"code\":"), "%s", s);
    cr_assert_eq(strchr(s, '\n'), s + strlen(s) - 1, "one line: %s", s);
    free(s);
    fclose(f);
}

TW_TEST(log, level_filter_drops_below)
{
    tw_testing_log_capture_start();
    tw_log_set_level(TW_LOG_WARN);
    tw_log_info("twine.test", "quiet");
    tw_log_warn("twine.test", "loud");
    tw_log_set_level(TW_LOG_INFO);
    cr_assert_eq(tw_testing_log_count("quiet"), 0);
    cr_assert_eq(tw_testing_log_count("loud"), 1);
    tw_testing_log_capture_stop();
}

TW_TEST(log, observers_add_remove)
{
    cr_assert_eq(tw_log_add_observer(tw_log_text_observer, NULL), 0);
    cr_assert_eq(tw_log_add_observer(tw_log_text_observer, NULL), TW_EEXIST);
    cr_assert_eq(tw_log_remove_observer(tw_log_text_observer, NULL), 0);
    cr_assert_eq(tw_log_remove_observer(tw_log_text_observer, NULL), TW_ENOENT);
}

TW_TEST(log, level_names_parse)
{
    tw_log_level l;
    cr_assert_eq(tw_log_level_parse("error", &l), 0);
    cr_assert_eq(l, TW_LOG_ERROR);
    cr_assert_eq(tw_log_level_parse("loud", &l), TW_EINVAL);
    cr_assert_str_eq(tw_log_level_name(TW_LOG_CRITICAL), "critical");
}

TW_TEST(log, long_message_is_not_truncated)
{
    tw_testing_log_capture_start();
    char text[2000];
    memset(text, 'y', sizeof text - 1);
    text[sizeof text - 1] = '\0';
    tw_log_info("twine.test", "%s!", text);
    char want[2002];
    snprintf(want, sizeof want, "%s!", text);
    cr_assert_eq(tw_testing_log_count(want), 1);
    tw_testing_log_capture_stop();
}

static void logging_observer(const tw_log_event *e, void *arg)
{
    (*(int *)arg)++;
    tw_log_error("twine.test", "from inside an observer"); /* dropped, not a deadlock */
}

TW_TEST(log, observer_that_logs_does_not_deadlock, .timeout = 5)
{
    int calls = 0;
    tw_log_add_observer(logging_observer, &calls);
    tw_log_info("twine.test", "outer");
    tw_log_remove_observer(logging_observer, &calls);
    cr_assert_eq(calls, 1);
}
