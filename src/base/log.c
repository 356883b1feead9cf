#include <twine/alloc.h>
#include <twine/error.h>
#include <twine/failure.h>
#include <twine/log.h>

#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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

/* Namespace levels: their own lock, so that the filter can be asked from
 * anywhere (tw_log_emit asks it before it takes `lock`). min_any is the
 * lowest level in force anywhere: what the first, lock-free check of
 * tw_log_emit compares with. */
struct ns_level {
    char *ns;
    tw_log_level level;
};
static pthread_mutex_t levels_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ns_level *ns_levels; /* guarded by levels_lock */
static size_t ns_level_count, ns_level_cap;
static atomic_int min_any = -1; /* -1: no namespace level set */
static atomic_bool have_ns_levels;

/* Under levels_lock. */
static void update_min_any(void)
{
    if (ns_level_count == 0) {
        atomic_store(&have_ns_levels, false);
        atomic_store(&min_any, -1);
        return;
    }
    int min = (int)tw_log_get_level();
    for (size_t i = 0; i < ns_level_count; i++)
        if ((int)ns_levels[i].level < min)
            min = (int)ns_levels[i].level;
    atomic_store(&min_any, min);
    atomic_store(&have_ns_levels, true);
}

void tw_log_set_level(tw_log_level level)
{
    atomic_store(&min_level, (int)level);
    pthread_mutex_lock(&levels_lock);
    update_min_any();
    pthread_mutex_unlock(&levels_lock);
}

bool tw_log_namespace_within(const char *ns, const char *prefix)
{
    if (!ns || !prefix)
        return false;
    size_t n = strlen(prefix);
    return strncmp(ns, prefix, n) == 0 && (ns[n] == '\0' || ns[n] == '.');
}

int tw_log_set_namespace_level(const char *ns, tw_log_level level)
{
    if (!ns || !ns[0] || (unsigned)level > TW_LOG_CRITICAL)
        return TW_EINVAL;
    int rc = 0;
    pthread_mutex_lock(&levels_lock);
    for (size_t i = 0; i < ns_level_count; i++) {
        if (strcmp(ns_levels[i].ns, ns) == 0) {
            ns_levels[i].level = level;
            goto out;
        }
    }
    char *copy = tw_strdup(ns);
    if (!copy) {
        rc = TW_ENOMEM;
        goto out;
    }
    if (ns_level_count == ns_level_cap) {
        size_t cap = ns_level_cap ? ns_level_cap * 2 : 4;
        struct ns_level *grown = tw_realloc(ns_levels, cap * sizeof *grown);
        if (!grown) {
            tw_free(copy);
            rc = TW_ENOMEM;
            goto out;
        }
        ns_levels = grown;
        ns_level_cap = cap;
    }
    ns_levels[ns_level_count++] = (struct ns_level){copy, level};
out:
    update_min_any();
    pthread_mutex_unlock(&levels_lock);
    return rc;
}

void tw_log_clear_namespace_levels(void)
{
    pthread_mutex_lock(&levels_lock);
    for (size_t i = 0; i < ns_level_count; i++)
        tw_free(ns_levels[i].ns);
    tw_free(ns_levels); /* leave nothing behind for leak checkers */
    ns_levels = NULL;
    ns_level_count = ns_level_cap = 0;
    update_min_any();
    pthread_mutex_unlock(&levels_lock);
}

tw_log_level tw_log_level_for(const char *ns)
{
    tw_log_level level = tw_log_get_level();
    if (!atomic_load(&have_ns_levels) || !ns)
        return level;
    size_t best = 0;
    pthread_mutex_lock(&levels_lock);
    for (size_t i = 0; i < ns_level_count; i++) {
        size_t n = strlen(ns_levels[i].ns);
        if (n > best && tw_log_namespace_within(ns, ns_levels[i].ns)) {
            best = n;
            level = ns_levels[i].level;
        }
    }
    pthread_mutex_unlock(&levels_lock);
    return level;
}

bool tw_log_namespace_enabled(const char *ns, tw_log_level level)
{
    if (!atomic_load(&have_ns_levels))
        return level >= tw_log_get_level();
    if ((int)level < atomic_load(&min_any))
        return false;
    return level >= tw_log_level_for(ns ? ns : "twine");
}

int tw_log_set_levels(const char *spec, tw_failure **failure)
{
    if (failure)
        *failure = NULL;
    if (!spec || !spec[0]) {
        if (failure)
            *failure = tw_failure_new(TW_EINVAL, NULL, "no log level given");
        return TW_EINVAL;
    }
    /* Check every item first, so a bad one changes nothing. */
    size_t items = 1;
    for (const char *p = spec; *p; p++)
        items += *p == ',';
    struct ns_level *parsed = tw_calloc(items, sizeof *parsed);
    char *copy = tw_strdup(spec);
    int rc = 0;
    if (!parsed || !copy) {
        rc = TW_ENOMEM;
        if (failure)
            *failure = tw_failure_new(TW_ENOMEM, NULL, NULL);
        goto out;
    }
    size_t n = 0;
    for (char *item = copy, *next; item; item = next) {
        next = strchr(item, ',');
        if (next)
            *next++ = '\0';
        char *eq = strchr(item, '=');
        const char *level_name = eq ? eq + 1 : item;
        if (eq)
            *eq = '\0';
        tw_log_level level;
        if ((eq && !item[0]) || tw_log_level_parse(level_name, &level) < 0) {
            rc = TW_EINVAL;
            if (failure) {
                if (eq && !item[0])
                    *failure = tw_failure_new(TW_EINVAL, NULL, "log level '=%s': no namespace",
                                              level_name);
                else
                    *failure = tw_failure_new(TW_EINVAL, NULL,
                                              "unknown log level '%s' (debug, info, warn, error "
                                              "or critical)",
                                              level_name);
            }
            goto out;
        }
        parsed[n++] = (struct ns_level){eq ? item : NULL, level};
    }
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (parsed[i].ns)
            rc = tw_log_set_namespace_level(parsed[i].ns, parsed[i].level);
        else
            tw_log_set_level(parsed[i].level);
    }
    if (rc < 0 && failure)
        *failure = tw_failure_new(rc, NULL, NULL);
out:
    tw_free(parsed);
    tw_free(copy);
    return rc;
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
    if (emitting)
        return;
    if (!atomic_load(&have_ns_levels)) {
        if (level < tw_log_get_level())
            return;
    } else if (!tw_log_namespace_enabled(ns, level)) {
        return;
    }
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

/* ---- Filtering observer */

void tw_log_filter_observer(const tw_log_event *event, void *arg)
{
    const tw_log_filter *f = arg;
    if (!f || !f->observer || event->level < f->level)
        return;
    if (f->ns && !tw_log_namespace_within(event->ns, f->ns))
        return;
    f->observer(event, f->arg);
}

/* ---- Reopenable log files */

struct tw_log_file {
    FILE *fp;
    char *path; /* NULL for standard output and error */
    tw_log_format format;
};

static FILE *open_append(const char *path, int *err)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0) {
        *err = -errno;
        return NULL;
    }
    FILE *fp = fdopen(fd, "a");
    if (!fp) {
        *err = -errno;
        close(fd);
    }
    return fp;
}

int tw_log_file_open(const char *path, tw_log_format format, tw_log_file **out)
{
    if (!out)
        return TW_EINVAL;
    *out = NULL;
    if (!path || !path[0] || (format != TW_LOG_FORMAT_TEXT && format != TW_LOG_FORMAT_JSON))
        return TW_EINVAL;
    tw_log_file *lf = tw_calloc(1, sizeof *lf);
    if (!lf)
        return TW_ENOMEM;
    lf->format = format;
    if (strcmp(path, "-") == 0) {
        lf->fp = stdout;
    } else if (strcmp(path, "+") == 0) {
        lf->fp = stderr;
    } else {
        lf->path = tw_strdup(path);
        if (!lf->path) {
            tw_free(lf);
            return TW_ENOMEM;
        }
        int err = 0;
        lf->fp = open_append(path, &err);
        if (!lf->fp) {
            tw_free(lf->path);
            tw_free(lf);
            return err;
        }
    }
    *out = lf;
    return 0;
}

int tw_log_file_reopen(tw_log_file *lf)
{
    if (!lf)
        return TW_EINVAL;
    if (!lf->path)
        return 0;
    int err = 0;
    FILE *fp = open_append(lf->path, &err);
    if (!fp)
        return err;
    pthread_mutex_lock(&lock);
    FILE *old = lf->fp;
    lf->fp = fp;
    pthread_mutex_unlock(&lock);
    fclose(old);
    return 0;
}

void tw_log_file_close(tw_log_file *lf)
{
    if (!lf)
        return;
    if (lf->path)
        fclose(lf->fp);
    else
        fflush(lf->fp);
    tw_free(lf->path);
    tw_free(lf);
}

void tw_log_file_observer(const tw_log_event *event, void *arg)
{
    tw_log_file *lf = arg;
    if (lf->format == TW_LOG_FORMAT_JSON)
        tw_log_json_observer(event, lf->fp);
    else
        tw_log_text_observer(event, lf->fp);
}

bool tw_log_file_isatty(const tw_log_file *lf)
{
    return lf && isatty(fileno(lf->fp));
}

void tw_log_file_set_format(tw_log_file *lf, tw_log_format format)
{
    if (lf && (format == TW_LOG_FORMAT_TEXT || format == TW_LOG_FORMAT_JSON))
        lf->format = format;
}
