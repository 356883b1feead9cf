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
 * or the TWINE_LOG_LEVEL environment variable (debug|info|warn|error|critical). */
void tw_log_set_level(tw_log_level level);
tw_log_level tw_log_get_level(void);

/* "debug", "info", "warn", "error", "critical". */
const char *tw_log_level_name(tw_log_level level);
/* Parses a level name; returns 0 and sets *out, or TW_EINVAL. */
int tw_log_level_parse(const char *name, tw_log_level *out);

/* Built-in observers; arg is the FILE * to write to (stderr if NULL). */
void tw_log_text_observer(const tw_log_event *event, void *file);
void tw_log_json_observer(const tw_log_event *event, void *file);

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
