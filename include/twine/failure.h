/* Failures (twisted.python.failure): an error that happened later, carried
 * through errbacks and connection_lost.
 *
 * A failure has a code (a negative TW_E* or -errno, see error.h), a message,
 * an optional cause (the failure that led to it: a chain), and where it was
 * made (file, line, function; a backtrace too when backtraces are on).
 *
 * Failures are reference counted, single-threaded: whoever holds a reference
 * drops it with tw_failure_unref. A failure may be handed to another thread
 * together with its only reference.
 *
 * Making a failure never fails: when memory runs out, tw_failure_new returns a
 * static "out of memory" failure (code TW_ENOMEM) whose ref/unref do nothing,
 * and it drops the cause it was given. */
#ifndef TWINE_FAILURE_H
#define TWINE_FAILURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef struct tw_failure tw_failure;

/* Makes a failure. code must be negative (a positive or zero code becomes
 * TW_EUSER). cause, if not NULL,
 * is taken over (its reference now belongs to the new failure). fmt may be NULL:
 * the message is then tw_strerror(code). */
#define tw_failure_new(code, cause, ...)                                                           \
    tw_failure_new_at((code), (cause), __FILE__, __LINE__, __func__, __VA_ARGS__)
tw_failure *tw_failure_new_at(int code, tw_failure *cause, const char *file, int line,
                              const char *func, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

tw_failure *tw_failure_ref(tw_failure *f);
void tw_failure_unref(tw_failure *f); /* NULL is ignored */

int tw_failure_code(const tw_failure *f);
const char *tw_failure_message(const tw_failure *f);
const tw_failure *tw_failure_cause(const tw_failure *f); /* borrowed; NULL at the end */
const char *tw_failure_file(const tw_failure *f);
int tw_failure_line(const tw_failure *f);
const char *tw_failure_func(const tw_failure *f);
/* The backtrace captured when the failure was made: frames as text, or NULL
 * when backtraces were off. Borrowed. */
const char *const *tw_failure_backtrace(const tw_failure *f, size_t *count);

/* Backtraces cost a stack walk per failure, so they are off unless turned on
 * here or with TWINE_BACKTRACE=1 in the environment. Process-wide. */
void tw_failure_capture_backtraces(bool on);

/* check (Twisted's check and trap): returns the first of the given codes that
 * equals the failure's code, or 0 when none does. In an errback, Twisted's
 * f.trap(E) is: if (!tw_failure_check(f, E)) return tw_result_fail(f); */
#define tw_failure_check(f, ...) tw__failure_check((f), (const int[]){__VA_ARGS__, 0})
int tw__failure_check(const tw_failure *f, const int *codes_zero_terminated);

/* Writes the failure and its causes, one per line:
 *   ETIMEDOUT: connect timed out (at src/net/tcp.c:120 in tcp_connect)
 *   caused by: ECONNREFUSED: ... (at ...)
 * and the backtrace if there is one. Returns the length it needed (as
 * snprintf), so a short buffer can be retried. */
size_t tw_failure_format(const tw_failure *f, char *buf, size_t size);
void tw_failure_print(const tw_failure *f, FILE *out);

#endif
