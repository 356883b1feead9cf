#include <twine/alloc.h>
#include <twine/error.h>
#include <twine/failure.h>

#include <execinfo.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FRAMES 32

struct tw_failure {
    int refs; /* < 0: the static out-of-memory failure, never freed */
    int code;
    tw_failure *cause;
    const char *file;
    int line;
    const char *func;
    char **frames; /* from backtrace_symbols (libc's malloc), or NULL */
    size_t frame_count;
    const char *message; /* points at text[], or at a static string */
    char text[];
};

/* What tw_failure_new hands out when it cannot allocate: a failure must always
 * be makeable, or error paths would need error paths. */
static tw_failure oom_failure = {.refs = -1,
                                 .code = TW_ENOMEM,
                                 .file = __FILE__,
                                 .func = "tw_failure_new",
                                 .message = "out of memory"};

static atomic_int backtraces = -1; /* -1: not decided yet; read TWINE_BACKTRACE once */

void tw_failure_capture_backtraces(bool on)
{
    atomic_store(&backtraces, on ? 1 : 0);
}

static bool backtraces_on(void)
{
    int on = atomic_load(&backtraces);
    if (on < 0) {
        const char *env = getenv("TWINE_BACKTRACE");
        on = env && *env && strcmp(env, "0") != 0;
        atomic_store(&backtraces, on);
    }
    return on;
}

tw_failure *tw_failure_new_at(int code, tw_failure *cause, const char *file, int line,
                              const char *func, const char *fmt, ...)
{
    if (code >= 0)
        code = TW_EUSER;
    char stack_text[256];
    const char *text = tw_strerror(code);
    size_t len = strlen(text);
    char *heap_text = NULL;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(stack_text, sizeof stack_text, fmt, ap);
        va_end(ap);
        if (n < 0)
            n = 0;
        len = (size_t)n;
        text = stack_text;
        if ((size_t)n >= sizeof stack_text) {
            heap_text = tw_malloc((size_t)n + 1);
            if (heap_text) {
                va_start(ap, fmt);
                vsnprintf(heap_text, (size_t)n + 1, fmt, ap);
                va_end(ap);
                text = heap_text;
            } else {
                len = sizeof stack_text - 1; /* keep the truncated text */
            }
        }
    }
    tw_failure *f = tw_malloc(sizeof *f + len + 1);
    if (!f) {
        tw_free(heap_text);
        tw_failure_unref(cause);
        return &oom_failure;
    }
    *f = (tw_failure){
        .refs = 1, .code = code, .cause = cause, .file = file, .line = line, .func = func};
    memcpy(f->text, text, len);
    f->text[len] = '\0';
    f->message = f->text;
    tw_free(heap_text);
    if (backtraces_on()) {
        void *addrs[MAX_FRAMES];
        int n = backtrace(addrs, MAX_FRAMES);
        /* Frame 0 is this function: skip it. */
        if (n > 1) {
            f->frames = backtrace_symbols(addrs + 1, n - 1);
            f->frame_count = f->frames ? (size_t)(n - 1) : 0;
        }
    }
    return f;
}

tw_failure *tw_failure_ref(tw_failure *f)
{
    if (f && f->refs > 0)
        f->refs++;
    return f;
}

void tw_failure_unref(tw_failure *f)
{
    /* Iterative over the cause chain, so a long chain cannot exhaust the stack. */
    while (f && f->refs > 0 && --f->refs == 0) {
        tw_failure *cause = f->cause;
        free(f->frames);
        tw_free(f);
        f = cause;
    }
}

int tw_failure_code(const tw_failure *f)
{
    return f->code;
}
const char *tw_failure_message(const tw_failure *f)
{
    return f->message;
}
const tw_failure *tw_failure_cause(const tw_failure *f)
{
    return f->cause;
}
const char *tw_failure_file(const tw_failure *f)
{
    return f->file;
}
int tw_failure_line(const tw_failure *f)
{
    return f->line;
}
const char *tw_failure_func(const tw_failure *f)
{
    return f->func;
}

const char *const *tw_failure_backtrace(const tw_failure *f, size_t *count)
{
    if (count)
        *count = f->frame_count;
    return (const char *const *)f->frames;
}

int tw__failure_check(const tw_failure *f, const int *codes)
{
    for (; *codes; codes++)
        if (*codes == f->code)
            return *codes;
    return 0;
}

/* Appends to buf like snprintf, tracking the length needed. */
static void append(char *buf, size_t size, size_t *used, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void append(char *buf, size_t size, size_t *used, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *at = *used < size ? buf + *used : NULL;
    int n = vsnprintf(at, at ? size - *used : 0, fmt, ap);
    va_end(ap);
    if (n > 0)
        *used += (size_t)n;
}

size_t tw_failure_format(const tw_failure *f, char *buf, size_t size)
{
    size_t used = 0;
    if (size)
        buf[0] = '\0';
    for (const tw_failure *it = f; it; it = it->cause) {
        append(buf, size, &used, "%s%s: %s (at %s:%d in %s)\n",
               it == f ? "" : "caused by: ", tw_err_name(it->code), it->message,
               it->file ? it->file : "?", it->line, it->func ? it->func : "?");
        for (size_t i = 0; i < it->frame_count; i++)
            append(buf, size, &used, "    %s\n", it->frames[i]);
    }
    return used;
}

void tw_failure_print(const tw_failure *f, FILE *out)
{
    char small[1024];
    size_t n = tw_failure_format(f, small, sizeof small);
    if (n < sizeof small) {
        fputs(small, out);
        return;
    }
    char *big = tw_malloc(n + 1);
    if (big) {
        tw_failure_format(f, big, n + 1);
        fputs(big, out);
        tw_free(big);
    } else {
        fputs(small, out); /* truncated, but something */
    }
}
