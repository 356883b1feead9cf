/* Log capture: keeps every event's text so tests can look for lines. */
#include <twine/alloc.h>
#include <twine/failure.h>
#include <twine/testing.h>

#include <stdlib.h>
#include <string.h>

static char *captured; /* lines joined by '\n'; libc memory, so failing allocators spare it */
static size_t captured_len;

static void append(const char *s, size_t n)
{
    char *grown = realloc(captured, captured_len + n + 1);
    if (!grown)
        return;
    captured = grown;
    memcpy(captured + captured_len, s, n);
    captured_len += n;
    captured[captured_len] = '\0';
}

static void capture_observer(const tw_log_event *event, void *arg)
{
    (void)arg;
    const char *level = tw_log_level_name(event->level);
    append(level, strlen(level));
    append(": ", 2);
    append(event->message, strlen(event->message));
    append("\n", 1);
    if (event->failure) {
        char text[2048];
        size_t n = tw_failure_format(event->failure, text, sizeof text);
        append(text, n < sizeof text ? n : sizeof text - 1);
    }
    /* An event ends with a NUL-free separator line so counting can split on it. */
    append("\x1e\n", 2);
}

void tw_testing_log_capture_start(void)
{
    tw_testing_log_capture_stop();
    tw_log_add_observer(capture_observer, NULL);
}

void tw_testing_log_capture_stop(void)
{
    tw_log_remove_observer(capture_observer, NULL);
    free(captured);
    captured = NULL;
    captured_len = 0;
}

size_t tw_testing_log_count(const char *needle)
{
    size_t count = 0;
    const char *event = captured;
    while (event && *event) {
        const char *end = strstr(event, "\x1e\n");
        size_t len = end ? (size_t)(end - event) : strlen(event);
        /* Search within this event only. */
        for (const char *p = event; p + strlen(needle) <= event + len; p++) {
            if (strncmp(p, needle, strlen(needle)) == 0) {
                count++;
                break;
            }
        }
        event = end ? end + 2 : event + len;
    }
    return count;
}

const char *tw_testing_log_text(void)
{
    return captured ? captured : "";
}
