/* Criterion glue for Twine's tests.
 *
 * TW_REACTOR_TEST(suite, name) { ... } gives the body a fresh reactor `r`
 * (backend from TWINE_REACTOR: CTest runs reactor-level test files once per
 * backend) and, after the body, fails the test if the reactor is dirty
 * (pending timers, handles, unhandled failures) or memory leaked, and frees it.
 *
 * TW_TEST(suite, name) { ... } is a plain test with the unhandled-failure and
 * leak checks. Extra Criterion options may follow the name (.timeout = 5). */
#ifndef TWTEST_H
#define TWTEST_H

#include <criterion/criterion.h>
#include <twine/testing.h>
#include <twine/twine.h>

/* The checks run inside the test body, not in Criterion's .fini: a failed
 * assertion there does not fail the test. Under ASan, twtest_end also runs
 * LeakSanitizer, because Criterion's forked children exit without failing on
 * the leak report printed at exit. */
tw_reactor *twtest_begin_reactor(void);
void twtest_end_reactor(tw_reactor *r);
void twtest_begin(void);
void twtest_end(void);

#define TW_REACTOR_TEST(suite, name, ...)                                                          \
    static void suite##_##name##_body(tw_reactor *r);                                              \
    Test(suite, name, .timeout = 60, ##__VA_ARGS__)                                                \
    {                                                                                              \
        tw_reactor *r = twtest_begin_reactor();                                                    \
        suite##_##name##_body(r);                                                                  \
        twtest_end_reactor(r);                                                                     \
    }                                                                                              \
    static void suite##_##name##_body(tw_reactor *r)

#define TW_TEST(suite, name, ...)                                                                  \
    static void suite##_##name##_body(void);                                                       \
    Test(suite, name, .timeout = 60, ##__VA_ARGS__)                                                \
    {                                                                                              \
        twtest_begin();                                                                            \
        suite##_##name##_body();                                                                   \
        twtest_end();                                                                              \
    }                                                                                              \
    static void suite##_##name##_body(void)

/* Runs the reactor until d fires (10 s bound) and returns the result; fails
 * the test on timeout. d is borrowed. */
tw_result twtest_wait(tw_reactor *r, tw_deferred *d);

#endif
