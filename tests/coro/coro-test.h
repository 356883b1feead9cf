/* Shared by the coroutine tests: CORO_TEST is TW_REACTOR_TEST plus a check
 * that every coroutine the test started has ended (so none is left holding a
 * stack), and small deferred helpers. Header-only: each test file is its own
 * executable. */
#ifndef CORO_TEST_H
#define CORO_TEST_H

#include <string.h>

#include <twine/coro.h>

#include "twtest.h"

static inline void coro_check_ended(void)
{
    tw_coro_stats st;
    tw_coro_get_stats(&st);
    cr_assert_eq(st.live, 0, "%zu coroutines still alive at the end of the test", st.live);
    cr_assert_eq(st.stacks_mapped, st.stacks_pooled, "stacks in use: %zu mapped, %zu pooled",
                 st.stacks_mapped, st.stacks_pooled);
    cr_assert_null(tw_coro_current());
}

#define CORO_TEST(suite, name, ...)                                                                \
    static void suite##_##name##_coro(tw_reactor *r);                                              \
    TW_REACTOR_TEST(suite, name, ##__VA_ARGS__)                                                    \
    {                                                                                              \
        suite##_##name##_coro(r);                                                                  \
        coro_check_ended();                                                                        \
    }                                                                                              \
    static void suite##_##name##_coro(tw_reactor *r)

/* A heap int that counts its release. */
static int coro_released __attribute__((unused));

static inline void coro_counted_free(void *p)
{
    coro_released++;
    tw_free(p);
}

static inline tw_result coro_counted(int v)
{
    int *p = tw_malloc(sizeof *p);
    cr_assert(p);
    *p = v;
    return tw_result_ok(p, coro_counted_free);
}

static inline int coro_int_of(tw_result r)
{
    cr_assert_null(r.failure, "expected a value, got %s",
                   r.failure ? tw_failure_message(r.failure) : "");
    cr_assert_eq(r.release, coro_counted_free);
    return *(int *)r.value;
}

/* The code of a failure result, 0 for a value. */
static inline int coro_code(tw_result r)
{
    return r.failure ? tw_failure_code(r.failure) : 0;
}

#endif
