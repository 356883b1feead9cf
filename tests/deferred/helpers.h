/* Small helpers shared by the deferred tests: values that count their
 * releases, a trace of what ran, and callbacks that record what they saw. */
#ifndef TWINE_TESTS_DEFERRED_HELPERS_H
#define TWINE_TESTS_DEFERRED_HELPERS_H

#include <string.h>

#include "twtest.h"

/* A heap value that counts its release (and leaks, which ASan sees, if it is
 * never released). */
#define TW_UNUSED __attribute__((unused))
static int released TW_UNUSED;
static int arg_releases TW_UNUSED;

static inline void tracked_free(void *p)
{
    released++;
    tw_free(p);
}

static inline tw_result tracked(int v)
{
    int *p = tw_malloc(sizeof *p);
    cr_assert(p);
    *p = v;
    return tw_result_ok(p, tracked_free);
}

static inline int tracked_value(tw_result r)
{
    cr_assert_null(r.failure);
    cr_assert_eq(r.release, tracked_free, "not a tracked value");
    return *(int *)r.value;
}

static inline void count_arg_release(void *arg)
{
    (void)arg;
    arg_releases++;
}

/* The trace: each callback appends its letter. */
static char trace[4096] TW_UNUSED;
static size_t trace_len TW_UNUSED;

static inline void mark(char c)
{
    if (trace_len + 1 < sizeof trace) {
        trace[trace_len++] = c;
        trace[trace_len] = '\0';
    }
}

/* Marks its arg (a char) and passes the result on. */
static inline tw_result pass(tw_result r, void *arg)
{
    mark((char)(intptr_t)arg);
    return r;
}

/* Marks and adds 1 to an integer result. */
static inline tw_result add_one(tw_result r, void *arg)
{
    mark((char)(intptr_t)arg);
    return tw_result_from_int(tw_result_int(r) + 1);
}

/* What `keep` saw last: it takes the result over, and returns NULL. */
static tw_result kept TW_UNUSED;
static int kept_calls TW_UNUSED;

static inline tw_result keep(tw_result r, void *arg)
{
    (void)arg;
    tw_result_release(&kept);
    kept = r;
    kept_calls++;
    return tw_result_borrowed(NULL);
}

static inline tw_failure *failure(int code)
{
    return tw_failure_new(code, NULL, "test failure %d", code);
}

#define ARG(c) ((void *)(intptr_t)(c))

#endif
