/* Coroutines: starting, awaiting fired and pending deferreds, results and
 * failures (with their cause chains) going up through nested coroutines,
 * resuming one coroutine from another, misuse, and allocation failure. */
#include <pthread.h>

#include "coro-test.h"

#include "coro/stack.h"

static char trace[256];
static size_t trace_len;

static void mark(char ch)
{
    if (trace_len + 1 < sizeof trace) {
        trace[trace_len++] = ch;
        trace[trace_len] = '\0';
    }
}

/* ---- Starting and ending */

static tw_result returns_at_once(void *arg)
{
    mark('a');
    cr_assert_not_null(tw_coro_current(), "inside a coroutine, there is a current one");
    return coro_counted(*(int *)arg);
}

CORO_TEST(coro, runs_at_once_and_fires_with_its_result)
{
    int v = 42;
    cr_assert_null(tw_coro_current());
    tw_deferred *d = tw_coro_start(r, returns_at_once, &v, NULL);
    cr_assert_not_null(d);
    cr_assert_str_eq(trace, "a", "the body ran before tw_coro_start returned");
    cr_assert(tw_deferred_called(d));
    cr_assert_null(tw_coro_current(), "back on the thread's stack");
    tw_result res = twtest_wait(r, d);
    cr_assert_eq(coro_int_of(res), 42);
    tw_result_release(&res);
    cr_assert_eq(coro_released, 1);
    tw_deferred_unref(d);
}

static tw_result awaits_fired(void *arg)
{
    (void)arg;
    mark('1');
    tw_result got = tw_await(tw_succeed(coro_counted(7)));
    mark('2');
    int v = coro_int_of(got);
    tw_result_release(&got);
    return tw_result_from_int(v * 2);
}

CORO_TEST(coro, awaiting_a_fired_deferred_does_not_suspend)
{
    tw_deferred *d = tw_coro_start(r, awaits_fired, NULL, NULL);
    cr_assert_str_eq(trace, "12");
    cr_assert(tw_deferred_called(d), "nothing waited, so it has ended already");
    tw_result res = twtest_wait(r, d);
    cr_assert_eq(tw_result_int(res), 14);
    cr_assert_eq(coro_released, 1, "the awaited value went to the coroutine, which released it");
    tw_deferred_unref(d);
}

struct two_waits {
    tw_deferred *first, *second;
    int sum;
};

static tw_result awaits_two(void *arg)
{
    struct two_waits *w = arg;
    mark('s');
    tw_result a = tw_await(tw_deferred_ref(w->first));
    mark('A');
    tw_result b = tw_await(tw_deferred_ref(w->second));
    mark('B');
    w->sum = coro_int_of(a) + coro_int_of(b);
    tw_result_release(&a);
    tw_result_release(&b);
    return tw_result_from_int(w->sum);
}

static tw_result after_first(tw_result result, void *arg)
{
    (void)arg;
    mark('n');
    cr_assert_null(result.failure);
    cr_assert_null(result.value, "the awaited chain goes on with NULL, as after Twisted's yield");
    return result;
}

CORO_TEST(coro, suspends_until_the_deferred_fires_and_resumes_in_its_callback)
{
    struct two_waits w = {tw_deferred_new(NULL, NULL), tw_deferred_new(NULL, NULL), 0};
    tw_deferred *d = tw_coro_start(r, awaits_two, &w, NULL);
    cr_assert_str_eq(trace, "s", "it ran until the first wait");
    cr_assert_not(tw_deferred_called(d));
    cr_assert_null(tw_coro_current());
    tw_coro_stats st;
    tw_coro_get_stats(&st);
    cr_assert_eq(st.live, 1);

    tw_deferred_add_callback(w.first, after_first, NULL);
    tw_deferred_callback(w.first, coro_counted(3));
    cr_assert_str_eq(trace, "sAn", "resumed inside the firing, before the next callback");
    cr_assert_not(tw_deferred_called(d));

    tw_deferred_callback(w.second, coro_counted(4));
    cr_assert_str_eq(trace, "sAnB");
    cr_assert(tw_deferred_called(d));
    tw_result res = twtest_wait(r, d);
    cr_assert_eq(tw_result_int(res), 7);
    cr_assert_eq(coro_released, 2);
    tw_deferred_unref(d);
    tw_deferred_unref(w.first);
    tw_deferred_unref(w.second);
}

/* ---- Failures deep down reach the top with their causes */

static tw_deferred *bottom; /* what the innermost coroutine waits on */

static tw_result level3(void *arg)
{
    (void)arg;
    bottom = tw_deferred_new(NULL, NULL);
    tw_result r = tw_await(tw_deferred_ref(bottom));
    mark('3');
    return r; /* passes the failure up unchanged */
}

static tw_result level2(void *arg)
{
    tw_result r = tw_await(tw_coro_start(arg, level3, NULL, NULL));
    mark('2');
    if (r.failure) /* adds context, keeping the original as the cause */
        return tw_result_fail(tw_failure_new(TW_EPROTOCOL, r.failure, "level 2 gave up"));
    return r;
}

static tw_result level1(void *arg)
{
    tw_result r = tw_await(tw_coro_start(arg, level2, arg, NULL));
    mark('1');
    return r;
}

CORO_TEST(coro, a_failure_deep_down_reaches_the_top_with_its_cause_chain)
{
    tw_deferred *d = tw_coro_start(r, level1, r, NULL);
    cr_assert_not_null(bottom);
    cr_assert_eq(trace_len, 0, "all three wait");
    tw_coro_stats st;
    tw_coro_get_stats(&st);
    cr_assert_eq(st.live, 3);
    tw_deferred_errback(bottom, tw_failure_new(-ECONNRESET, NULL, "the peer went away"));
    cr_assert_str_eq(trace, "321", "each level resumed in turn, innermost first");
    tw_result res = twtest_wait(r, d);
    cr_assert_eq(coro_code(res), TW_EPROTOCOL);
    cr_assert_str_eq(tw_failure_message(res.failure), "level 2 gave up");
    const tw_failure *cause = tw_failure_cause(res.failure);
    cr_assert_not_null(cause);
    cr_assert_eq(tw_failure_code(cause), -ECONNRESET);
    cr_assert_str_eq(tw_failure_message(cause), "the peer went away");
    cr_assert_null(tw_failure_cause(cause));
    char text[1024];
    tw_failure_format(res.failure, text, sizeof text);
    cr_assert(strstr(text, "caused by: ECONNRESET: the peer went away"), "%s", text);
    tw_result_release(&res);
    tw_deferred_unref(d);
    tw_deferred_unref(bottom);
}

/* ---- One coroutine resumes another */

struct pingpong {
    tw_deferred *to_b; /* b waits on it; a fires it */
    tw_deferred *to_a; /* a waits on it; b fires it */
};

static tw_result coro_b(void *arg)
{
    struct pingpong *p = arg;
    mark('b');
    tw_result x = tw_await(tw_deferred_ref(p->to_b));
    mark('B');
    cr_assert_not_null(tw_coro_current());
    /* Fires what a waits on; a is running (it resumed us), so this only
     * stores the result, and a's await finds it fired. */
    tw_deferred_callback(p->to_a, tw_result_from_int(tw_result_int(x) + 1));
    mark('F');
    return tw_result_from_int(100);
}

static tw_result coro_a(void *arg)
{
    struct pingpong *p = arg;
    mark('a');
    tw_coro *me = tw_coro_current();
    tw_deferred_callback(p->to_b, tw_result_from_int(1)); /* resumes b, on b's stack */
    mark('A');
    cr_assert_eq(tw_coro_current(), me, "current is a again once b suspended");
    tw_result y = tw_await(tw_deferred_ref(p->to_a));
    mark('Y');
    return y;
}

CORO_TEST(coro, a_coroutine_firing_a_deferred_resumes_the_one_waiting_on_it)
{
    struct pingpong p = {tw_deferred_new(NULL, NULL), tw_deferred_new(NULL, NULL)};
    tw_deferred *db = tw_coro_start(r, coro_b, &p, NULL);
    cr_assert_str_eq(trace, "b");
    tw_deferred *da = tw_coro_start(r, coro_a, &p, NULL);
    cr_assert_str_eq(trace, "baBFAY", "a resumed b, which ended, then a went on without waiting");
    tw_result ra = twtest_wait(r, da), rb = twtest_wait(r, db);
    cr_assert_eq(tw_result_int(ra), 2);
    cr_assert_eq(tw_result_int(rb), 100);
    tw_deferred_unref(da);
    tw_deferred_unref(db);
    tw_deferred_unref(p.to_a);
    tw_deferred_unref(p.to_b);
}

/* ---- A body returning a deferred */

static tw_deferred *later;

static tw_result returns_deferred(void *arg)
{
    (void)arg;
    later = tw_deferred_new(NULL, NULL);
    return tw_result_deferred(tw_deferred_ref(later));
}

CORO_TEST(coro, a_returned_deferred_is_waited_for)
{
    tw_deferred *d = tw_coro_start(r, returns_deferred, NULL, NULL);
    cr_assert_not(tw_deferred_called(d));
    tw_deferred_callback(later, coro_counted(5));
    tw_result res = twtest_wait(r, d);
    cr_assert_eq(coro_int_of(res), 5);
    tw_result_release(&res);
    tw_deferred_unref(d);
    tw_deferred_unref(later);
}

/* ---- A deferred nobody can fire any more */

static int cleanups;

static tw_result awaits_orphan(void *arg)
{
    (void)arg;
    void *held = tw_malloc(64);                          /* something to clean up */
    tw_result r = tw_await(tw_deferred_new(NULL, NULL)); /* nobody else holds it */
    tw_free(held);
    cleanups++;
    return r;
}

CORO_TEST(coro, an_awaited_deferred_released_unfired_resumes_with_ecanceled)
{
    tw_deferred *d = tw_coro_start(r, awaits_orphan, NULL, NULL);
    cr_assert_eq(cleanups, 1, "released at once: the coroutine never suspended");
    tw_result res = twtest_wait(r, d);
    cr_assert_eq(coro_code(res), TW_ECANCELED);
    cr_assert(strstr(tw_failure_message(res.failure), "released without firing"));
    tw_result_release(&res);
    tw_deferred_unref(d);
}

static tw_deferred *dropped;

static tw_result awaits_dropped(void *arg)
{
    (void)arg;
    dropped = tw_deferred_new(NULL, NULL);
    tw_result r = tw_await(tw_deferred_ref(dropped));
    cleanups++;
    return r;
}

CORO_TEST(coro, the_last_reference_going_later_resumes_it)
{
    tw_deferred *d = tw_coro_start(r, awaits_dropped, NULL, NULL);
    cr_assert_eq(cleanups, 0);
    tw_deferred_unref(dropped); /* the producer gives up without firing */
    cr_assert_eq(cleanups, 1);
    tw_result res = twtest_wait(r, d);
    cr_assert_eq(coro_code(res), TW_ECANCELED);
    tw_result_release(&res);
    tw_deferred_unref(d);
}

/* ---- Misuse */

CORO_TEST(coro, await_outside_a_coroutine_fails_cleanly)
{
    tw_testing_log_capture_start();
    tw_deferred *x = tw_deferred_new(NULL, NULL);
    tw_result res = tw_await(x); /* takes x over: releases it */
    cr_assert_eq(coro_code(res), TW_EINVAL);
    cr_assert(strstr(tw_failure_message(res.failure), "outside a coroutine"));
    tw_result_release(&res);
    cr_assert_eq(tw_testing_log_count("outside a coroutine"), 1);
    cr_assert_eq(tw_await_sleep(tw_reactor_clock(r), 0.0), TW_EINVAL);
    tw_testing_log_capture_stop();
}

static tw_result awaits_null_and_self(void *arg)
{
    (void)arg;
    tw_result n = tw_await(NULL);
    cr_assert_eq(coro_code(n), TW_ENOMEM);
    tw_result_release(&n);
    cr_assert_eq(tw_await_sleep(NULL, 1), TW_EINVAL);
    cr_assert_eq(tw_await_sleep(tw_reactor_clock(tw_coro_reactor(tw_coro_current())), -1),
                 TW_EINVAL);
    return tw_result_from_int(1);
}

CORO_TEST(coro, await_null_is_enomem_and_bad_sleeps_are_einval)
{
    tw_deferred *d = tw_coro_start(r, awaits_null_and_self, NULL, NULL);
    tw_result res = twtest_wait(r, d);
    cr_assert_eq(tw_result_int(res), 1);
    tw_deferred_unref(d);
}

static tw_deferred *own;

static tw_result awaits_itself(void *arg)
{
    (void)arg;
    tw_result res = tw_await(tw_deferred_ref(own));
    return res; /* the EINVAL failure */
}

static tw_result start_self_waiter(void *arg)
{
    /* A coroutine cannot know its own deferred before start returns, so the
     * test lets a first await give the outer code time to publish it. */
    tw_deferred *gate = arg;
    tw_result g = tw_await(tw_deferred_ref(gate));
    tw_result_release(&g);
    return awaits_itself(NULL);
}

CORO_TEST(coro, awaiting_its_own_deferred_is_refused)
{
    tw_testing_log_capture_start();
    tw_deferred *gate = tw_deferred_new(NULL, NULL);
    own = tw_coro_start(r, start_self_waiter, gate, NULL);
    tw_deferred_callback(gate, tw_result_from_int(0));
    tw_result res = twtest_wait(r, own);
    cr_assert_eq(coro_code(res), TW_EINVAL);
    cr_assert(strstr(tw_failure_message(res.failure), "own deferred"));
    tw_result_release(&res);
    cr_assert_eq(tw_testing_log_count("its own deferred"), 1);
    tw_testing_log_capture_stop();
    tw_deferred_unref(own);
    tw_deferred_unref(gate);
}

static tw_result never_runs(void *arg)
{
    (void)arg;
    cr_assert_fail("this body must not run");
    return tw_result_from_int(0);
}

CORO_TEST(coro, bad_arguments_give_a_failed_deferred)
{
    tw_deferred *d = tw_coro_start(NULL, never_runs, NULL, NULL);
    tw_result res = twtest_wait(r, d);
    cr_assert_eq(coro_code(res), TW_EINVAL);
    tw_result_release(&res);
    tw_deferred_unref(d);

    d = tw_coro_start(r, NULL, NULL, NULL);
    res = twtest_wait(r, d);
    cr_assert_eq(coro_code(res), TW_EINVAL);
    tw_result_release(&res);
    tw_deferred_unref(d);

    tw_coro_options huge = {.stack_size = (size_t)TW_CORO_STACK_MAX + 1};
    d = tw_coro_start(r, never_runs, NULL, &huge);
    res = twtest_wait(r, d);
    cr_assert_eq(coro_code(res), TW_EINVAL);
    cr_assert(strstr(tw_failure_message(res.failure), "above the maximum"));
    tw_result_release(&res);
    tw_deferred_unref(d);
}

static void *start_elsewhere(void *arg)
{
    return tw_coro_start(arg, never_runs, NULL, NULL);
}

CORO_TEST(coro, starting_off_the_reactor_thread_is_refused)
{
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, start_elsewhere, r), 0);
    void *out;
    pthread_join(t, &out);
    tw_deferred *d = out;
    tw_result res = twtest_wait(r, d);
    cr_assert_eq(coro_code(res), TW_EWRONGTHREAD);
    tw_result_release(&res);
    tw_deferred_unref(d);
}

/* ---- Out of memory */

static int oom_runs;

static tw_result oom_body(void *arg)
{
    (void)arg;
    oom_runs++;
    return tw_result_from_int(3);
}

CORO_TEST(coro, allocation_failure_is_a_clean_null)
{
    for (long n = 0;; n++) {
        tw_testing_fail_alloc_after(n);
        tw_deferred *d = tw_coro_start(r, oom_body, NULL, NULL);
        tw_testing_fail_alloc_off();
        if (!d) {
            cr_assert_eq(oom_runs, 0, "the body does not run when start fails");
            coro_check_ended();
            continue;
        }
        cr_assert_eq(oom_runs, 1);
        tw_result res = twtest_wait(r, d);
        cr_assert_eq(tw_result_int(res), 3);
        tw_deferred_unref(d);
        break;
    }
    /* The stack: mmap refusing is out of memory too. */
    oom_runs = 0;
    tw__coro_stack_fail_after(0);
    tw_coro_options own_size = {.stack_size = 3 * TW_CORO_STACK_MIN}; /* not in the pool */
    tw_deferred *d = tw_coro_start(r, oom_body, NULL, &own_size);
    tw__coro_stack_fail_after(-1);
    cr_assert_null(d);
    cr_assert_eq(oom_runs, 0);
}

static tw_result awaits_under_oom(void *arg)
{
    tw_deferred *x = arg;
    tw_testing_fail_alloc_after(0);
    /* The pair fits inside the deferred, and resuming allocates nothing. */
    tw_result res = tw_await(tw_deferred_ref(x));
    tw_testing_fail_alloc_off();
    return res;
}

CORO_TEST(coro, awaiting_and_resuming_allocate_nothing)
{
    tw_deferred *x = tw_deferred_new(NULL, NULL);
    tw_deferred *d = tw_coro_start(r, awaits_under_oom, x, NULL);
    long before = tw_testing_alloc_count();
    tw_deferred_callback(x, tw_result_from_int(9));
    cr_assert_eq(tw_testing_alloc_count(), before, "no allocation between firing and the end");
    tw_result res = twtest_wait(r, d);
    cr_assert_eq(tw_result_int(res), 9);
    tw_deferred_unref(d);
    tw_deferred_unref(x);
}
