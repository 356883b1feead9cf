#include <twine/alloc.h>
#include <twine/error.h>
#include <twine/failure.h>
#include <twine/log.h>

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct observer {
    tw_log_observer_fn fn;
    void *arg;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct observer *observers; /* guarded by lock */
static size_t observer_count, observer_cap;
static atomic_int min_level = -1; /* -1: not decided yet; read TWINE_LOG_LEVEL once */
/* An observer that logs would deadlock on `lock`; such events are dropped. */
static _Thread_local bool emitting;

static const char *const level_names[] = {"debug", "info", "warn", "error", "critical"};

const char *tw_log_level_name(tw_log_level level)
{
    if ((unsigned)level > TW_LOG_CRITICAL)
        return "unknown";
    return level_names[level];
}

int tw_log_level_parse(const char *name, tw_log_level *out)
{
    for (int i = TW_LOG_DEBUG; i <= TW_LOG_CRITICAL; i++) {
        if (name && strcmp(name, level_names[i]) == 0) {
            *out = (tw_log_level)i;
            return 0;
        }
    }
    if (name && strcmp(name, "warning") == 0) {
        *out = TW_LOG_WARN;
        return 0;
    }
    return TW_EINVAL;
}

void tw_log_set_level(tw_log_level level)
{
    atomic_store(&min_level, (int)level);
}

tw_log_level tw_log_get_level(void)
{
    int level = atomic_load(&min_level);
    if (level < 0) {
        tw_log_level parsed = TW_LOG_INFO;
        tw_log_level_parse(getenv("TWINE_LOG_LEVEL"), &parsed);
        level = (int)parsed;
        atomic_store(&min_level, level);
    }
    return (tw_log_level)level;
}

int tw_log_add_observer(tw_log_observer_fn fn, void *arg)
{
    if (!fn)
        return TW_EINVAL;
    int rc = 0;
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < observer_count; i++) {
        if (observers[i].fn == fn && observers[i].arg == arg) {
            rc = TW_EEXIST;
            goto out;
        }
    }
    if (observer_count == observer_cap) {
        size_t cap = observer_cap ? observer_cap * 2 : 4;
        struct observer *grown = tw_realloc(observers, cap * sizeof *grown);
        if (!grown) {
            rc = TW_ENOMEM;
            goto out;
        }
        observers = grown;
        observer_cap = cap;
    }
    observers[observer_count++] = (struct observer){fn, arg};
out:
    pthread_mutex_unlock(&lock);
    return rc;
}

int tw_log_remove_observer(tw_log_observer_fn fn, void *arg)
{
    int rc = TW_ENOENT;
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < observer_count; i++) {
        if (observers[i].fn == fn && observers[i].arg == arg) {
            memmove(&observers[i], &observers[i + 1], (observer_count - i - 1) * sizeof *observers);
            observer_count--;
            rc = 0;
            break;
        }
    }
    if (observer_count == 0) {
        tw_free(observers); /* leave nothing behind for leak checkers */
        observers = NULL;
        observer_cap = 0;
    }
    pthread_mutex_unlock(&lock);
    return rc;
}

/* ISO 8601 in UTC with milliseconds: 2026-11-23T00:40:01.123Z */
static void format_time(double t, char buf[static 32])
{
    time_t secs = (time_t)t;
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(buf, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    unsigned ms = (unsigned)((t - (double)secs) * 1000.0) % 1000u;
    snprintf(buf + n, 32 - n, ".%03uZ", ms);
}

void tw_log_text_observer(const tw_log_event *event, void *file)
{
    FILE *out = file ? file : stderr;
    char when[32];
    format_time(event->time, when);
    flockfile(out);
    fprintf(out, "%s [%s#%s] %s\n", when, event->ns, tw_log_level_name(event->level),
            event->message);
    if (event->failure)
        tw_failure_print(event->failure, out);
    funlockfile(out);
    fflush(out);
}

static void json_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"':
            fputs("\\\"", out);
            break;
        case '\\':
            fputs("\\\\", out);
            break;
        case '\n':
            fputs("\\n", out);
            break;
        case '\r':
            fputs("\\r", out);
            break;
        case '\t':
            fputs("\\t", out);
            break;
        default:
            if (*p < 0x20)
                fprintf(out, "\\u%04x", *p);
            else
                fputc(*p, out);
        }
    }
    fputc('"', out);
}

static void json_failure(FILE *out, const tw_failure *f)
{
    fprintf(out, "{\"code\":%d,\"name\":", tw_failure_code(f));
    json_string(out, tw_err_name(tw_failure_code(f)));
    fputs(",\"message\":", out);
    json_string(out, tw_failure_message(f));
    fprintf(out, ",\"where\":");
    char where[512];
    snprintf(where, sizeof where, "%s:%d in %s", tw_failure_file(f) ? tw_failure_file(f) : "?",
             tw_failure_line(f), tw_failure_func(f) ? tw_failure_func(f) : "?");
    json_string(out, where);
    size_t frames = 0;
    const char *const *bt = tw_failure_backtrace(f, &frames);
    if (frames) {
        fputs(",\"backtrace\":[", out);
        for (size_t i = 0; i < frames; i++) {
            if (i)
                fputc(',', out);
            json_string(out, bt[i]);
        }
        fputc(']', out);
    }
    fputc('}', out);
}

void tw_log_json_observer(const tw_log_event *event, void *file)
{
    FILE *out = file ? file : stderr;
    flockfile(out);
    fprintf(out, "{\"time\":%.6f,\"level\":\"%s\",\"namespace\":", event->time,
            tw_log_level_name(event->level));
    json_string(out, event->ns);
    fputs(",\"message\":", out);
    json_string(out, event->message);
    fprintf(out, ",\"file\":");
    json_string(out, event->file ? event->file : "?");
    fprintf(out, ",\"line\":%d", event->line);
    if (event->failure) {
        fputs(",\"failure\":", out);
        json_failure(out, event->failure);
        const tw_failure *cause = tw_failure_cause(event->failure);
        if (cause) {
            fputs(",\"causes\":[", out);
            for (const tw_failure *c = cause; c; c = tw_failure_cause(c)) {
                if (c != cause)
                    fputc(',', out);
                json_failure(out, c);
            }
            fputc(']', out);
        }
    }
    fputs("}\n", out);
    funlockfile(out);
    fflush(out);
}

void tw_log_emit(tw_log_level level, const char *ns, const tw_failure *failure, const char *file,
                 int line, const char *func, const char *fmt, ...)
{
    if (level < tw_log_get_level() || emitting)
        return;
    char small[512];
    char *text = small;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) {
        small[0] = '\0';
    } else if ((size_t)n >= sizeof small) {
        char *big = tw_malloc((size_t)n + 1);
        if (big) { /* else: log the truncated text rather than nothing */
            va_start(ap, fmt);
            vsnprintf(big, (size_t)n + 1, fmt, ap);
            va_end(ap);
            text = big;
        }
    }
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    tw_log_event event = {
        .level = level,
        .ns = ns ? ns : "twine",
        .message = text,
        .failure = failure,
        .time = (double)now.tv_sec + (double)now.tv_nsec / 1e9,
        .file = file,
        .line = line,
        .func = func,
    };
    emitting = true;
    pthread_mutex_lock(&lock);
    if (observer_count == 0)
        tw_log_text_observer(&event, stderr);
    for (size_t i = 0; i < observer_count; i++)
        observers[i].fn(&event, observers[i].arg);
    pthread_mutex_unlock(&lock);
    emitting = false;
    if (text != small)
        tw_free(text);
}
