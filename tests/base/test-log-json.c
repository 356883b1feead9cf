/* Reading JSON logs back (tw_log_read_json): what the JSON observer writes
 * comes back as the same event, failures and causes included; bad lines are
 * refused with where and why; every split of a line is refused cleanly. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <twine/error.h>
#include <twine/failure.h>
#include <twine/log.h>

#include "twtest.h"

static char *read_all(FILE *f)
{
    fflush(f);
    long n = ftell(f);
    rewind(f);
    char *s = calloc(1, (size_t)n + 1);
    cr_assert_eq(fread(s, 1, (size_t)n, f), (size_t)n);
    return s;
}

/* Writes one event through the JSON observer and returns the line. */
static char *write_event(tw_log_level level, const char *ns, tw_failure *fl, const char *msg)
{
    FILE *f = tmpfile();
    tw_log_add_observer(tw_log_json_observer, f);
    tw_log_failure(level, ns, fl, "%s", msg);
    tw_log_remove_observer(tw_log_json_observer, f);
    char *s = read_all(f);
    fclose(f);
    return s;
}

/* The JSON observer's line for an event, past its "time" member. */
static char *rewrite(const tw_log_event *e)
{
    FILE *f = tmpfile();
    tw_log_json_observer(e, f);
    char *s = read_all(f);
    fclose(f);
    return s;
}

TW_TEST(logjson, round_trip_with_a_failure_chain)
{
    tw_failure *fl = tw_failure_new(TW_ETIMEDOUT, tw_failure_new(-ECONNREFUSED, NULL, "refused"),
                                    "gave up after \"3\" tries\n");
    char *line = write_event(TW_LOG_ERROR, "twine.test.\xc3\xa9", fl, "tab\there, \\ and \x01");
    tw_failure_unref(fl);
    tw_log_record *rec;
    tw_failure *err = NULL;
    cr_assert_eq(tw_log_read_json(line, strlen(line), &rec, &err), 0, "%s: %s", line,
                 err ? tw_failure_message(err) : "");
    const tw_log_event *e = &rec->event;
    cr_assert_eq(e->level, TW_LOG_ERROR);
    cr_assert_str_eq(e->ns, "twine.test.\xc3\xa9");
    cr_assert_str_eq(e->message, "tab\there, \\ and \x01");
    cr_assert_gt(e->time, 1e9);
    cr_assert(strstr(e->file, "test-log-json.c"));
    cr_assert_gt(e->line, 0);
    cr_assert_not_null(e->failure);
    cr_assert_eq(tw_failure_code(e->failure), TW_ETIMEDOUT);
    cr_assert_str_eq(tw_failure_message(e->failure), "gave up after \"3\" tries\n");
    cr_assert(strstr(tw_failure_file(e->failure), "test-log-json.c"));
    cr_assert_str_eq(tw_failure_func(e->failure), "logjson_round_trip_with_a_failure_chain_body");
    const tw_failure *cause = tw_failure_cause(e->failure);
    cr_assert_not_null(cause);
    cr_assert_eq(tw_failure_code(cause), -ECONNREFUSED);
    cr_assert_str_eq(tw_failure_message(cause), "refused");
    cr_assert_null(tw_failure_cause(cause));
    /* Written again, the line is the same (the time's digits aside). */
    char *again = rewrite(e);
    cr_assert_str_eq(strchr(again, ','), strchr(line, ','), "%s\n%s", again, line);
    free(again);
    free(line);
    tw_log_record_free(rec);
}

TW_TEST(logjson, plain_event_and_unknown_keys)
{
    static const char line[] =
        " {\"future\":[1,{\"x\":null},true,false,-2.5e+3,\"\\u00e9\\ud83d\\ude00\"],"
        "\"level\":\"warn\",\"namespace\":\"a.b\",\"message\":\"\\u00e9\\ud83d\\ude00\\/\","
        "\"time\":12.5,\"line\":-3} \n";
    tw_log_record *rec;
    cr_assert_eq(tw_log_read_json(line, strlen(line), &rec, NULL), 0);
    cr_assert_eq(rec->event.level, TW_LOG_WARN);
    cr_assert_str_eq(rec->event.ns, "a.b");
    cr_assert_str_eq(rec->event.message, "\xc3\xa9\xf0\x9f\x98\x80/");
    cr_assert_eq(rec->event.time, 12.5);
    cr_assert_eq(rec->event.line, -3);
    cr_assert_null(rec->event.failure);
    cr_assert_null(rec->event.file);
    cr_assert_null(rec->event.func);
    tw_log_record_free(rec);
}

static void refused(const char *line, const char *why)
{
    tw_log_record *rec = (void *)1;
    tw_failure *f = NULL;
    cr_assert_eq(tw_log_read_json(line, strlen(line), &rec, &f), TW_EINVAL, "%s", line);
    cr_assert_null(rec);
    cr_assert_not_null(f);
    cr_assert(strstr(tw_failure_message(f), why), "%s: %s", line, tw_failure_message(f));
    tw_failure_unref(f);
}

TW_TEST(logjson, bad_lines_say_where_and_why)
{
    refused("", "byte 0: expected '{'");
    refused("[]", "expected '{'");
    refused("{\"level\":\"info\",\"namespace\":\"a\"}", "no \"message\"");
    refused("{\"message\":\"m\",\"namespace\":\"a\"}", "no \"level\"");
    refused("{\"message\":\"m\",\"level\":\"info\"}", "no \"namespace\"");
    refused("{\"level\":\"loud\",\"namespace\":\"a\",\"message\":\"m\"}", "unknown level");
    refused("{\"level\":\"info\" \"namespace\":\"a\"}", "expected '}'");
    refused("{\"level\" \"info\"}", "expected ':'");
    refused("{\"level\":\"info\",\"namespace\":\"a\",\"message\":\"m\"} x", "text after");
    refused("{\"message\":\"a\\u0000b\"}", "NUL");
    refused("{\"message\":\"\\ud800\"}", "surrogate");
    refused("{\"message\":\"\\udc00x\"}", "surrogate");
    refused("{\"message\":\"\\x\"}", "bad escape");
    refused("{\"message\":\"\\u12g4\"}", "bad \\u escape");
    refused("{\"message\":\"a\nb\"}", "control character");
    refused("{\"message\":\"abc", "unterminated");
    refused("{\"time\":01}", "expected '}'");
    refused("{\"time\":1.}", "bad number");
    refused("{\"time\":-}", "bad number");
    refused("{\"time\":1e}", "bad number");
    refused("{\"line\":1.5}", "out of range");
    refused("{\"line\":99999999999}", "out of range");
    refused("{\"x\":tru}", "unexpected character");
    refused("{\"causes\":[{}]}", "\"causes\" before \"failure\"");
    refused("{\"failure\":{},\"failure\":{}}", "given twice");
    char deep[200] = "{\"x\":";
    for (int i = 0; i < 40; i++)
        strcat(deep, "[");
    refused(deep, "nested too deeply");
    cr_assert_eq(tw_log_read_json(NULL, 3, NULL, NULL), TW_EINVAL);
}

TW_TEST(logjson, every_prefix_of_a_line_is_refused_cleanly)
{
    tw_failure *fl = tw_failure_new(TW_EPROTOCOL, tw_failure_new(TW_EINVAL, NULL, "x"), "y");
    char *line = write_event(TW_LOG_WARN, "twine.split", fl, "message \xe2\x82\xac \"quoted\"");
    tw_failure_unref(fl);
    size_t len = strlen(line) - 1; /* without its newline */
    for (size_t cut = 0; cut < len; cut++) {
        tw_log_record *rec;
        tw_failure *f = NULL;
        cr_assert_eq(tw_log_read_json(line, cut, &rec, &f), TW_EINVAL, "cut at %zu", cut);
        tw_failure_unref(f);
    }
    tw_log_record *rec;
    cr_assert_eq(tw_log_read_json(line, len, &rec, NULL), 0);
    tw_log_record_free(rec);
    free(line);
}

TW_TEST(logjson, allocation_failure)
{
    tw_failure *fl = tw_failure_new(TW_EPROTOCOL, tw_failure_new(TW_EINVAL, NULL, "x"), "y");
    char *line = write_event(TW_LOG_WARN, "twine.alloc", fl, "m");
    tw_failure_unref(fl);
    for (long n = 0;; n++) {
        tw_log_record *rec;
        tw_failure *f = NULL;
        tw_testing_fail_alloc_after(n);
        int rc = tw_log_read_json(line, strlen(line), &rec, &f);
        tw_testing_fail_alloc_off();
        if (rc == 0) {
            cr_assert_not_null(tw_failure_cause(rec->event.failure));
            tw_log_record_free(rec);
            break;
        }
        cr_assert_eq(rc, TW_ENOMEM, "n=%ld", n);
        cr_assert_eq(tw_failure_code(f), TW_ENOMEM);
        tw_failure_unref(f);
        cr_assert_lt(n, 100);
    }
    free(line);
}

static size_t delivered;
static void count_event(const tw_log_event *e, void *arg)
{
    delivered++;
    cr_assert_str_eq(e->ns, "twine.file");
}

TW_TEST(logjson, reading_a_file_skips_bad_lines)
{
    FILE *f = tmpfile();
    tw_log_add_observer(tw_log_json_observer, f);
    tw_log_info("twine.file", "one");
    tw_log_info("twine.file", "two");
    tw_log_remove_observer(tw_log_json_observer, f);
    fputs("not json\n\n", f);
    tw_log_add_observer(tw_log_json_observer, f);
    tw_log_warn("twine.file", "three, last line without newline");
    tw_log_remove_observer(tw_log_json_observer, f);
    fflush(f);
    long end = ftell(f);
    cr_assert_eq(ftruncate(fileno(f), end - 1), 0); /* drop the last newline */
    rewind(f);
    size_t skipped;
    delivered = 0;
    cr_assert_eq(tw_log_read_json_file(f, count_event, NULL, &skipped), 3);
    cr_assert_eq(delivered, 3);
    cr_assert_eq(skipped, 1, "the empty line is not counted");
    fclose(f);
    cr_assert_eq(tw_log_read_json_file(NULL, count_event, NULL, NULL), TW_EINVAL);
}
