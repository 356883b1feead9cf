/* Log filters (log.h): levels per namespace, the --log-level spec, the
 * filtering observer, and log files reopened for rotation. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <twine/error.h>
#include <twine/failure.h>
#include <twine/log.h>

#include "twtest.h"

static size_t seen;
static char last_ns[64];
static void counting(const tw_log_event *e, void *arg)
{
    seen++;
    snprintf(last_ns, sizeof last_ns, "%s", e->ns);
}

static void reset(void)
{
    tw_log_clear_namespace_levels();
    tw_log_set_level(TW_LOG_INFO);
}

TW_TEST(logfilter, namespace_levels_follow_the_longest_prefix)
{
    tw_testing_log_capture_start();
    cr_assert_eq(tw_log_set_namespace_level("twine.net", TW_LOG_DEBUG), 0);
    cr_assert_eq(tw_log_set_namespace_level("twine.net.tls", TW_LOG_ERROR), 0);
    cr_assert_eq(tw_log_level_for("twine.net"), TW_LOG_DEBUG);
    cr_assert_eq(tw_log_level_for("twine.net.tcp"), TW_LOG_DEBUG);
    cr_assert_eq(tw_log_level_for("twine.net.tls"), TW_LOG_ERROR);
    cr_assert_eq(tw_log_level_for("twine.net.tls.x"), TW_LOG_ERROR);
    cr_assert_eq(tw_log_level_for("twine.network"), TW_LOG_INFO, "a prefix of a word is not one");
    cr_assert_eq(tw_log_level_for("twine"), TW_LOG_INFO);
    tw_log_debug("twine.net.tcp", "debug in net");
    tw_log_debug("twine.reactor", "debug in reactor");
    tw_log_warn("twine.net.tls", "warn in tls");
    tw_log_error("twine.net.tls", "error in tls");
    tw_log_debug("twine.network", "debug in network");
    cr_assert_eq(tw_testing_log_count("debug in net"), 1);
    cr_assert_eq(tw_testing_log_count("debug in reactor"), 0);
    cr_assert_eq(tw_testing_log_count("warn in tls"), 0);
    cr_assert_eq(tw_testing_log_count("error in tls"), 1);
    cr_assert_eq(tw_testing_log_count("debug in network"), 0);
    cr_assert(tw_log_namespace_enabled("twine.net", TW_LOG_DEBUG));
    cr_assert(!tw_log_namespace_enabled("twine.app", TW_LOG_DEBUG));
    /* Replacing a level, then forgetting them all. */
    cr_assert_eq(tw_log_set_namespace_level("twine.net", TW_LOG_WARN), 0);
    cr_assert_eq(tw_log_level_for("twine.net.tcp"), TW_LOG_WARN);
    tw_log_clear_namespace_levels();
    cr_assert_eq(tw_log_level_for("twine.net.tls"), TW_LOG_INFO);
    tw_log_debug("twine.net.tcp", "debug again");
    cr_assert_eq(tw_testing_log_count("debug again"), 0);
    tw_testing_log_capture_stop();
    cr_assert_eq(tw_log_set_namespace_level("", TW_LOG_WARN), TW_EINVAL);
    cr_assert_eq(tw_log_set_namespace_level(NULL, TW_LOG_WARN), TW_EINVAL);
    cr_assert_eq(tw_log_set_namespace_level("x", (tw_log_level)42), TW_EINVAL);
}

TW_TEST(logfilter, a_quiet_namespace_under_a_loud_default)
{
    tw_testing_log_capture_start();
    tw_log_set_level(TW_LOG_DEBUG);
    cr_assert_eq(tw_log_set_namespace_level("twine.chatty", TW_LOG_ERROR), 0);
    tw_log_info("twine.chatty.sub", "chatter");
    tw_log_debug("twine.other", "other debug");
    cr_assert_eq(tw_testing_log_count("chatter"), 0);
    cr_assert_eq(tw_testing_log_count("other debug"), 1);
    tw_testing_log_capture_stop();
    reset();
}

TW_TEST(logfilter, level_spec)
{
    tw_failure *f = NULL;
    cr_assert_eq(tw_log_set_levels("warn,twine.net=debug,twined.echo=error", &f), 0);
    cr_assert_null(f);
    cr_assert_eq(tw_log_get_level(), TW_LOG_WARN);
    cr_assert_eq(tw_log_level_for("twine.net.tcp"), TW_LOG_DEBUG);
    cr_assert_eq(tw_log_level_for("twined.echo"), TW_LOG_ERROR);
    reset();
    static const char *const bad[] = {"loud", "info,twine.net=loud", "=debug", "info,,warn", ""};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        cr_assert_eq(tw_log_set_levels(bad[i], &f), TW_EINVAL, "%s", bad[i]);
        cr_assert_not_null(f);
        tw_failure_unref(f);
    }
    cr_assert_eq(tw_log_set_levels(NULL, NULL), TW_EINVAL);
    /* A bad item changes nothing, not even the good items before it. */
    cr_assert_eq(tw_log_set_levels("debug,twine.x=debug,oops", NULL), TW_EINVAL);
    cr_assert_eq(tw_log_get_level(), TW_LOG_INFO);
    cr_assert_eq(tw_log_level_for("twine.x"), TW_LOG_INFO);
    cr_assert_eq(tw_log_set_levels("warning", NULL), 0, "Twisted's spelling");
    cr_assert_eq(tw_log_get_level(), TW_LOG_WARN);
    reset();
}

TW_TEST(logfilter, level_spec_allocation_failure)
{
    for (long n = 0;; n++) {
        tw_failure *f = NULL;
        tw_testing_fail_alloc_after(n);
        int rc = tw_log_set_levels("info,a.b=debug,c=warn", &f);
        tw_testing_fail_alloc_off();
        tw_failure_unref(f);
        if (rc == 0)
            break;
        cr_assert_eq(rc, TW_ENOMEM);
        tw_log_clear_namespace_levels();
        cr_assert_lt(n, 100);
    }
    cr_assert_eq(tw_log_level_for("c.d"), TW_LOG_WARN);
    reset();
}

TW_TEST(logfilter, filtering_observer)
{
    tw_log_filter filter = {.observer = counting, .level = TW_LOG_WARN, .ns = "twine.app"};
    seen = 0;
    cr_assert_eq(tw_log_add_observer(tw_log_filter_observer, &filter), 0);
    tw_log_info("twine.app", "too low");
    tw_log_warn("twine.net", "elsewhere");
    tw_log_warn("twine.application", "a longer word");
    tw_log_error("twine.app.x", "passes");
    cr_assert_eq(seen, 1);
    cr_assert_str_eq(last_ns, "twine.app.x");
    filter.ns = NULL;
    tw_log_warn("twine.net", "any namespace now");
    cr_assert_eq(seen, 2);
    tw_log_remove_observer(tw_log_filter_observer, &filter);
    cr_assert(tw_log_namespace_within("a.b", "a"));
    cr_assert(tw_log_namespace_within("a", "a"));
    cr_assert(!tw_log_namespace_within("ab", "a"));
    cr_assert(!tw_log_namespace_within(NULL, "a"));
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char *buf = calloc(1, 65536);
    size_t n = fread(buf, 1, 65535, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

TW_TEST(logfilter, log_file_reopens_after_rotation)
{
    char dir[] = "/tmp/twine-logXXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[128], rotated[128];
    snprintf(path, sizeof path, "%s/app.log", dir);
    snprintf(rotated, sizeof rotated, "%s/app.log.1", dir);
    tw_log_file *lf;
    cr_assert_eq(tw_log_file_open(path, TW_LOG_FORMAT_TEXT, &lf), 0);
    cr_assert(!tw_log_file_isatty(lf));
    cr_assert_eq(tw_log_add_observer(tw_log_file_observer, lf), 0);
    tw_log_info("twine.test", "before rotation");
    cr_assert_eq(rename(path, rotated), 0);
    tw_log_info("twine.test", "still the old file");
    cr_assert_eq(tw_log_file_reopen(lf), 0);
    tw_log_file_set_format(lf, TW_LOG_FORMAT_JSON);
    tw_log_info("twine.test", "in the new file");
    tw_log_remove_observer(tw_log_file_observer, lf);
    tw_log_file_close(lf);
    char *old = slurp(rotated), *new = slurp(path);
    cr_assert_not_null(old);
    cr_assert_not_null(new);
    cr_assert(strstr(old, "[twine.test#info] before rotation\n"), "%s", old);
    cr_assert(strstr(old, "still the old file"));
    cr_assert(!strstr(old, "in the new file"));
    cr_assert(strstr(new, "\"message\":\"in the new file\""), "%s", new);
    cr_assert(!strstr(new, "before rotation"));
    free(old);
    free(new);
    /* Reopening a path that cannot be opened keeps the file in use. */
    cr_assert_eq(tw_log_file_open(path, TW_LOG_FORMAT_TEXT, &lf), 0);
    unlink(path);
    unlink(rotated);
    cr_assert_eq(rmdir(dir), 0);
    cr_assert_eq(tw_log_file_reopen(lf), -ENOENT);
    tw_log_file_close(lf);
}

TW_TEST(logfilter, log_file_errors_and_standard_streams)
{
    tw_log_file *lf;
    cr_assert_eq(tw_log_file_open("/nonexistent-dir/x.log", TW_LOG_FORMAT_TEXT, &lf), -ENOENT);
    cr_assert_eq(tw_log_file_open("", TW_LOG_FORMAT_TEXT, &lf), TW_EINVAL);
    cr_assert_eq(tw_log_file_open("x", (tw_log_format)9, &lf), TW_EINVAL);
    cr_assert_eq(tw_log_file_open("x", TW_LOG_FORMAT_TEXT, NULL), TW_EINVAL);
    cr_assert_eq(tw_log_file_open("+", TW_LOG_FORMAT_TEXT, &lf), 0);
    cr_assert_eq(tw_log_file_reopen(lf), 0, "standard error is never reopened");
    tw_log_file_close(lf);
    cr_assert_eq(tw_log_file_open("-", TW_LOG_FORMAT_JSON, &lf), 0);
    tw_log_file_close(lf);
    tw_log_file_close(NULL);
    cr_assert_eq(tw_log_file_reopen(NULL), TW_EINVAL);
}
