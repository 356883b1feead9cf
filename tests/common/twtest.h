/* Criterion glue for Twine's tests.
 *
 * TW_REACTOR_TEST(suite, name) { ... } gives the body a fresh reactor `r`
 * (backend from TWINE_REACTOR: CTest runs reactor-level test files once per
 * backend) and, after the body, fails the test if the reactor is dirty
 * (pending timers, handles, unhandled failures) and frees it.
 *
 * TW_TEST(suite, name) { ... } is a plain test with the unhandled-failure
 * check only. */
#ifndef TWTEST_H
#define TWTEST_H

#include <criterion/criterion.h>
#include <twine/testing.h>
#include <twine/twine.h>

extern tw_reactor *twtest_reactor;

void twtest_setup_reactor(void);
void twtest_teardown_reactor(void);
void twtest_setup_plain(void);
void twtest_teardown_plain(void);

#define TW_REACTOR_TEST(suite, name, ...)                                                          \
    static void suite##_##name##_body(tw_reactor *r);                                              \
    Test(suite, name, .init = twtest_setup_reactor, .fini = twtest_teardown_reactor,               \
         .timeout = 60, ##__VA_ARGS__)                                                             \
    {                                                                                              \
        suite##_##name##_body(twtest_reactor);                                                     \
    }                                                                                              \
    static void suite##_##name##_body(tw_reactor *r)

#define TW_TEST(suite, name, ...)                                                                  \
    Test(suite, name, .init = twtest_setup_plain, .fini = twtest_teardown_plain, .timeout = 60,    \
         ##__VA_ARGS__)

/* Runs the reactor until d fires (10 s bound) and returns the result; fails
 * the test on timeout. d is borrowed. */
tw_result twtest_wait(tw_reactor *r, tw_deferred *d);

#endif
