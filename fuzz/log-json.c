/* Fuzzes the JSON log reader (tw_log_read_json): any input is refused
 * cleanly or read; what is read, written again by the JSON observer, reads
 * back as the same event (level, namespace, message, file, line, and the
 * failure chain's codes and messages); nothing leaks either way. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <twine/error.h>
#include <twine/failure.h>
#include <twine/log.h>
#include <twine/testing.h>

#include "fuzz.h"

static bool same_string(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    long live = tw_testing_alloc_live();
    tw_log_record *rec;
    tw_failure *f = NULL;
    int rc = tw_log_read_json((const char *)data, size, &rec, &f);
    if (rc < 0) {
        CHECK(rc == TW_EINVAL || rc == TW_ENOMEM);
        CHECK(f != NULL);
        tw_failure_unref(f);
        CHECK(tw_testing_alloc_live() == live);
        return 0;
    }
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    CHECK(out != NULL);
    tw_log_json_observer(&rec->event, out);
    fclose(out);
    tw_log_record *again;
    CHECK(tw_log_read_json(text, len, &again, NULL) == 0);
    const tw_log_event *a = &rec->event, *b = &again->event;
    CHECK(a->level == b->level);
    CHECK(same_string(a->ns, b->ns));
    CHECK(same_string(a->message, b->message));
    CHECK(same_string(b->file, a->file ? a->file : "?"));
    CHECK(a->line == b->line);
    const tw_failure *fa = a->failure, *fb = b->failure;
    for (; fa && fb; fa = tw_failure_cause(fa), fb = tw_failure_cause(fb)) {
        CHECK(tw_failure_code(fa) == tw_failure_code(fb));
        CHECK(same_string(tw_failure_message(fa), tw_failure_message(fb)));
    }
    CHECK(!fa && !fb);
    free(text);
    tw_log_record_free(again);
    tw_log_record_free(rec);
    CHECK(tw_testing_alloc_live() == live);
    return 0;
}
