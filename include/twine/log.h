/* Logging (twisted.logger): events with a level and a namespace go to
 * observers. With no observer added, events go to the default observer, which
 * writes text lines to stderr. Emitting is thread-safe; observers are called
 * under a lock, one event at a time, and must not log themselves.
 *
 * Text line:  2026-11-23T00:40:01.123Z [twine.reactor#warn] message
 *             followed, for a failure, by its cause chain (one line each).
 * JSON line:  {"time":1795394401.123,"level":"warn","namespace":"twine.reactor",
 *              "message":"...","failure":{"code":..,"name":..,"message":..,
 *              "where":..,"causes":[...]}} */
#ifndef TWINE_LOG_H
#define TWINE_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef struct tw_failure tw_failure;

typedef enum tw_log_level {
    TW_LOG_DEBUG,
    TW_LOG_INFO,
    TW_LOG_WARN,
    TW_LOG_ERROR,
    TW_LOG_CRITICAL,
} tw_log_level;

typedef struct tw_log_event {
    tw_log_level level;
    const char *ns;            /* namespace, "twine.reactor"; never NULL */
    const char *message;       /* the formatted text; never NULL */
    const tw_failure *failure; /* attached failure, or NULL */
    double time;               /* wall clock, seconds since the epoch */
    const char *file;          /* where the event was emitted */
    int line;
    const char *func;
} tw_log_event;

/* An observer sees each event that passes the level filter. The event and all
 * it points to are borrowed for the call. */
typedef void (*tw_log_observer_fn)(const tw_log_event *event, void *arg);

/* Adds an observer; the first one added replaces the default stderr observer.
 * Returns 0, TW_ENOMEM, or TW_EEXIST if (fn, arg) is already added. */
int tw_log_add_observer(tw_log_observer_fn fn, void *arg);
/* Removes (fn, arg); returns 0 or TW_ENOENT. With none left, the default
 * stderr observer is back. */
int tw_log_remove_observer(tw_log_observer_fn fn, void *arg);

/* Events below this level are dropped before they are formatted. Default: INFO,
 * or the TWINE_LOG_LEVEL environment variable (debug|info|warn|error|critical).
 * This is the default level of the namespace filter below: namespaces given
 * a level of their own follow that one instead. */
void tw_log_set_level(tw_log_level level);
tw_log_level tw_log_get_level(void);

/* ---- Levels per namespace (Twisted's LogLevelFilterPredicate)
 *
 * A namespace's level applies to it and to every namespace below it:
 * "twine.net" covers "twine.net" and "twine.net.tcp", not "twine.network".
 * An event's level is compared with the level of the longest namespace set
 * that covers its namespace, else with the default level (tw_log_set_level).
 * Events that do not pass are dropped before they are formatted, and no
 * observer sees them. Thread-safe; set levels at startup or any time. */

/* Sets ns's level (replacing a level set before). Returns 0, TW_EINVAL for a
 * NULL or empty namespace, or TW_ENOMEM. */
int tw_log_set_namespace_level(const char *ns, tw_log_level level);
/* Forgets every namespace level (the default level stays). */
void tw_log_clear_namespace_levels(void);
/* The level in force for ns (its own, an enclosing namespace's, or the
 * default). */
tw_log_level tw_log_level_for(const char *ns);
/* Whether an event of this level and namespace would reach the observers. */
bool tw_log_namespace_enabled(const char *ns, tw_log_level level);
/* Applies a filter written as twined's --log-level takes it: a comma-separated
 * list of LEVEL (the default level) and NAMESPACE=LEVEL items, e.g.
 * "warn,twine.net=debug,twined.echo=info". The whole spec is checked before
 * anything is applied. Returns 0; TW_EINVAL with *failure (may be NULL)
 * naming the bad item; TW_ENOMEM. */
int tw_log_set_levels(const char *spec, tw_failure **failure);

/* "debug", "info", "warn", "error", "critical". */
const char *tw_log_level_name(tw_log_level level);
/* Parses a level name; returns 0 and sets *out, or TW_EINVAL. */
int tw_log_level_parse(const char *name, tw_log_level *out);

/* Built-in observers; arg is the FILE * to write to (stderr if NULL). */
void tw_log_text_observer(const tw_log_event *event, void *file);
void tw_log_json_observer(const tw_log_event *event, void *file);

/* ---- Filtering observer (FilteringLogObserver): passes on to `observer`
 * only the events of at least `level` and, when ns is not NULL, of ns or a
 * namespace below it (as above). Add it with
 * tw_log_add_observer(tw_log_filter_observer, &filter); the filter is the
 * caller's and must stay put while added. The global levels above still
 * apply first: an event they drop reaches no filter. */
typedef struct tw_log_filter {
    tw_log_observer_fn observer;
    void *arg;
    tw_log_level level;
    const char *ns; /* NULL: every namespace */
} tw_log_filter;
void tw_log_filter_observer(const tw_log_event *event, void *filter);

/* True when ns is `prefix` or a namespace below it ("a.b" is below "a"). */
bool tw_log_namespace_within(const char *ns, const char *prefix);

/* ---- Log files that can be reopened (for log rotation: logrotate moves the
 * file, then SIGHUP makes the program reopen it, as twistd's log files).
 *
 *     tw_log_file *lf;
 *     tw_log_file_open("/var/log/app.log", TW_LOG_FORMAT_JSON, &lf);
 *     tw_log_add_observer(tw_log_file_observer, lf);
 *     ...  on SIGHUP: tw_log_file_reopen(lf);
 *     tw_log_remove_observer(tw_log_file_observer, lf);
 *     tw_log_file_close(lf);                                                */
typedef enum tw_log_format { TW_LOG_FORMAT_TEXT, TW_LOG_FORMAT_JSON } tw_log_format;
typedef struct tw_log_file tw_log_file;

/* Opens path for appending (created with mode 0666 less the umask); "-" is
 * standard output and "+" standard error (Twisted's twist spellings), which
 * are written as they are and never reopened or closed. The file's
 * descriptor is close-on-exec. Returns 0 and *out; TW_EINVAL; TW_ENOMEM;
 * -errno from open (-ENOENT, -EACCES...). */
int tw_log_file_open(const char *path, tw_log_format format, tw_log_file **out);
/* Closes the file and opens its path again, under the log's lock, so no
 * event is half written to either. On failure the old file stays in use and
 * -errno is returned. Does nothing (returns 0) for "-" and "+". Must not be
 * called from an observer. */
int tw_log_file_reopen(tw_log_file *lf);
/* Closes the file and frees lf; remove its observer first. NULL is ignored. */
void tw_log_file_close(tw_log_file *lf);
/* Writes the event in the file's format (one line of text, or one JSON line). */
void tw_log_file_observer(const tw_log_event *event, void *log_file);
/* True when the file is a terminal (twist picks text for a terminal and JSON
 * otherwise). */
bool tw_log_file_isatty(const tw_log_file *lf);
void tw_log_file_set_format(tw_log_file *lf, tw_log_format format);

/* ---- Reading a JSON log back (eventsFromJSONLogFile)
 *
 * tw_log_read_json parses one line as tw_log_json_observer writes it (the
 * trailing newline may be there or not) and gives back the event: level,
 * namespace, message, time, file and line, and the failure with its causes
 * rebuilt as a tw_failure chain (code, message, and the file, line and
 * function of "where"). Keys it does not know are skipped, so lines from a
 * newer writer still read. Strict JSON otherwise: one object, nothing after
 * it but white space; strings are valid JSON strings (\u escapes, surrogate
 * pairs included, become UTF-8; a NUL is refused); nesting is bounded (32).
 * "level", "namespace" and "message" are required.
 *
 * The record owns everything its event points to, the failure included:
 * the event is valid until tw_log_record_free (hand it to observers, which
 * borrow it; do not keep a reference to its failure past the record). */
typedef struct tw_log_record {
    tw_log_event event; /* event.func is NULL: the JSON line does not carry it */
    /* Private. */
    tw_failure *failure;
    char *strings;
} tw_log_record;

/* Returns 0 and *out; TW_EINVAL with *failure (may be NULL) saying what is
 * wrong and at which byte ("byte 17: expected ':'"); TW_ENOMEM. */
int tw_log_read_json(const char *line, size_t len, tw_log_record **out, tw_failure **failure);
void tw_log_record_free(tw_log_record *rec);

/* Reads every line of f and hands each event to fn(event, arg) (borrowed for
 * the call). Lines that do not parse are skipped and counted in *skipped
 * (may be NULL), as Twisted's reader skips them. Returns the number of events
 * delivered, TW_ENOMEM or -errno from reading. */
long tw_log_read_json_file(FILE *f, tw_log_observer_fn fn, void *arg, size_t *skipped);

/* Emits an event. Use the macros below, which record where it came from. */
void tw_log_emit(tw_log_level level, const char *ns, const tw_failure *failure, const char *file,
                 int line, const char *func, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));

#define tw_log_debug(ns, ...)                                                                      \
    tw_log_emit(TW_LOG_DEBUG, ns, NULL, __FILE__, __LINE__, __func__, __VA_ARGS__)
#define tw_log_info(ns, ...)                                                                       \
    tw_log_emit(TW_LOG_INFO, ns, NULL, __FILE__, __LINE__, __func__, __VA_ARGS__)
#define tw_log_warn(ns, ...)                                                                       \
    tw_log_emit(TW_LOG_WARN, ns, NULL, __FILE__, __LINE__, __func__, __VA_ARGS__)
#define tw_log_error(ns, ...)                                                                      \
    tw_log_emit(TW_LOG_ERROR, ns, NULL, __FILE__, __LINE__, __func__, __VA_ARGS__)
#define tw_log_critical(ns, ...)                                                                   \
    tw_log_emit(TW_LOG_CRITICAL, ns, NULL, __FILE__, __LINE__, __func__, __VA_ARGS__)
/* Logs a failure with its cause chain (borrowed). */
#define tw_log_failure(level, ns, failure, ...)                                                    \
    tw_log_emit(level, ns, failure, __FILE__, __LINE__, __func__, __VA_ARGS__)

#endif
