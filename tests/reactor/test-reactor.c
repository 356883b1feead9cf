/* The loop: run, stop, crash, iterate, call_when_running, backends, free. */
#include "twtest.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *expected_backend(void)
{
    const char *env = getenv("TWINE_REACTOR");
#ifdef TWINE_HAVE_LIBURING
    return env && *env ? env : "io_uring";
#else
    return env && *env ? env : "epoll";
#endif
}

/* ---- Backends and creation */

TW_REACTOR_TEST(reactor, backend_from_environment)
{
    cr_assert_str_eq(tw_reactor_backend_name(r), expected_backend());
}

TW_TEST(reactor, backend_list)
{
    const char *const *names = tw_reactor_backends();
    const char *want[] = {"epoll", "poll", "select", "io_uring"};
    size_t n = 0;
    while (names[n])
        n++;
#ifdef TWINE_HAVE_LIBURING
    cr_assert_eq(n, 4);
#else
    cr_assert_eq(n, 3);
#endif
    for (size_t i = 0; i < n; i++)
        cr_assert_str_eq(names[i], want[i]);
}

TW_TEST(reactor, each_backend_by_option)
{
    for (const char *const *name = tw_reactor_backends(); *name; name++) {
        tw_reactor *r;
        tw_reactor_options opts = {.backend = *name};
        cr_assert_eq(tw_reactor_new(&r, &opts), 0, "%s", *name);
        cr_assert_str_eq(tw_reactor_backend_name(r), *name);
        cr_assert_eq(tw_reactor_iterate(r, 0), 0);
        cr_assert_eq(tw_reactor_free(r), 0);
    }
}

TW_TEST(reactor, unknown_backend_option)
{
    tw_testing_log_capture_start();
    tw_reactor *r = NULL;
    tw_reactor_options opts = {.backend = "kqueue-on-linux"};
    cr_assert_eq(tw_reactor_new(&r, &opts), TW_EUNKNOWNBACKEND);
    cr_assert_null(r);
    cr_assert_eq(tw_testing_log_count("kqueue-on-linux"), 1, "log: %s", tw_testing_log_text());
    tw_testing_log_capture_stop();
}

TW_TEST(reactor, unknown_backend_environment)
{
    char *saved = getenv("TWINE_REACTOR") ? strdup(getenv("TWINE_REACTOR")) : NULL;
    setenv("TWINE_REACTOR", "bogus", 1);
    tw_testing_log_capture_start();
    tw_reactor *r = NULL;
    int rc = tw_reactor_new(&r, NULL);
    size_t logged = tw_testing_log_count("bogus");
    tw_testing_log_capture_stop();
    if (saved) {
        setenv("TWINE_REACTOR", saved, 1);
        free(saved);
    } else {
        unsetenv("TWINE_REACTOR");
    }
    cr_assert_eq(rc, TW_EUNKNOWNBACKEND);
    cr_assert_eq(logged, 1);
}

TW_TEST(reactor, bad_shutdown_timeout)
{
    tw_reactor *r;
    tw_reactor_options opts = {.shutdown_timeout = -1};
    cr_assert_eq(tw_reactor_new(&r, &opts), TW_EINVAL);
    opts.shutdown_timeout = NAN;
    cr_assert_eq(tw_reactor_new(&r, &opts), TW_EINVAL);
}

TW_TEST(reactor, new_out_of_memory)
{
    for (long n = 0;; n++) {
        tw_reactor *r = NULL;
        tw_testing_fail_alloc_after(n);
        int rc = tw_reactor_new(&r, NULL);
        tw_testing_fail_alloc_off();
        if (rc == 0) {
            cr_assert_gt(n, 0);
            cr_assert_eq(tw_reactor_free(r), 0);
            break;
        }
        cr_assert_eq(rc, TW_ENOMEM, "n=%ld: %s", n, tw_strerror(rc));
        cr_assert_null(r);
        cr_assert_lt(n, 100);
    }
}

TW_TEST(reactor, free_null)
{
    cr_assert_eq(tw_reactor_free(NULL), 0);
}

TW_REACTOR_TEST(reactor, seconds_move_forward)
{
    double a = tw_reactor_seconds(r);
    double b = tw_reactor_seconds(r);
    cr_assert_geq(b, a);
    cr_assert_eq(tw_clock_seconds(tw_reactor_clock(r)), b);
}

/* ---- run and stop */

struct log_ {
    int n;
    int codes[16];
    bool running[16];
};

static void record(struct log_ *l, int code, bool running)
{
    if (l->n < 16) {
        l->codes[l->n] = code;
        l->running[l->n] = running;
    }
    l->n++;
}

struct ctx {
    tw_reactor *r;
    struct log_ log;
    int calls;
};

static void stop_now(void *arg)
{
    struct ctx *c = arg;
    c->calls++;
    int rc = tw_reactor_stop(c->r);
    /* Still running (Twisted's reactor.running) until during-shutdown. */
    record(&c->log, rc, tw_reactor_running(c->r));
}

TW_REACTOR_TEST(reactor, stop_from_callback)
{
    struct ctx c = {.r = r};
    cr_assert_not(tw_reactor_running(r));
    cr_assert_eq(tw_call_later(tw_reactor_clock(r), 0, stop_now, &c, NULL), 0);
    cr_assert_eq(tw_reactor_run(r), 0);
    cr_assert_eq(c.calls, 1);
    cr_assert_eq(c.log.codes[0], 0);
    cr_assert(c.log.running[0], "running inside the loop");
    cr_assert_not(tw_reactor_running(r));
}

TW_REACTOR_TEST(reactor, stop_when_not_running)
{
    cr_assert_eq(tw_reactor_stop(r), TW_ENOTRUNNING);
    cr_assert_eq(tw_reactor_crash(r), TW_ENOTRUNNING);
}

static void stop_twice(void *arg)
{
    struct ctx *c = arg;
    record(&c->log, tw_reactor_stop(c->r), true);
    record(&c->log, tw_reactor_stop(c->r), true);
    record(&c->log, tw_reactor_crash(c->r), true);
}

TW_REACTOR_TEST(reactor, stop_twice)
{
    struct ctx c = {.r = r};
    tw_call_later(tw_reactor_clock(r), 0, stop_twice, &c, NULL);
    cr_assert_eq(tw_reactor_run(r), 0);
    cr_assert_eq(c.log.n, 3);
    cr_assert_eq(c.log.codes[0], 0);
    cr_assert_eq(c.log.codes[1], TW_ENOTRUNNING);
    cr_assert_eq(c.log.codes[2], 0, "crash still works while stopping");
    cr_assert_eq(tw_reactor_stop(r), TW_ENOTRUNNING);
}

static void misuse_inside(void *arg)
{
    struct ctx *c = arg;
    record(&c->log, tw_reactor_run(c->r), true);
    record(&c->log, tw_reactor_iterate(c->r, 0), true);
    record(&c->log, tw_reactor_free(c->r), true);
    tw_reactor_stop(c->r);
}

TW_REACTOR_TEST(reactor, run_while_running)
{
    struct ctx c = {.r = r};
    tw_call_later(tw_reactor_clock(r), 0, misuse_inside, &c, NULL);
    cr_assert_eq(tw_reactor_run(r), 0);
    cr_assert_eq(c.log.n, 3);
    cr_assert_eq(c.log.codes[0], TW_EALREADYRUNNING);
    cr_assert_eq(c.log.codes[1], TW_EBUSY);
    cr_assert_eq(c.log.codes[2], TW_EBUSY);
}

static void misuse_inside_iterate(void *arg)
{
    struct ctx *c = arg;
    c->calls++;
    record(&c->log, tw_reactor_run(c->r), false);
    record(&c->log, tw_reactor_iterate(c->r, 0), false);
    record(&c->log, tw_reactor_free(c->r), false);
    record(&c->log, tw_reactor_stop(c->r), false);
}

TW_REACTOR_TEST(reactor, misuse_inside_iterate)
{
    struct ctx c = {.r = r};
    tw_call_later(tw_reactor_clock(r), 0, misuse_inside_iterate, &c, NULL);
    cr_assert_eq(tw_reactor_iterate(r, 0), 1);
    cr_assert_eq(c.calls, 1);
    cr_assert_eq(c.log.codes[0], TW_EALREADYRUNNING);
    cr_assert_eq(c.log.codes[1], TW_EBUSY);
    cr_assert_eq(c.log.codes[2], TW_EBUSY);
    cr_assert_eq(c.log.codes[3], TW_ENOTRUNNING);
}

TW_REACTOR_TEST(reactor, run_after_stop_is_not_restartable)
{
    struct ctx c = {.r = r};
    tw_call_later(tw_reactor_clock(r), 0, stop_now, &c, NULL);
    cr_assert_eq(tw_reactor_run(r), 0);
    cr_assert_eq(tw_reactor_run(r), TW_ENOTRESTARTABLE);
    cr_assert_eq(c.calls, 1);
    /* The loop can still be iterated by hand. */
    cr_assert_eq(tw_reactor_iterate(r, 0), 0);
}

static int shutdown_triggers;
static tw_deferred *count_shutdown(void *arg)
{
    (void)arg;
    shutdown_triggers++;
    return NULL;
}

static void crash_now(void *arg)
{
    struct ctx *c = arg;
    c->calls++;
    int rc = tw_reactor_crash(c->r);
    record(&c->log, rc, tw_reactor_running(c->r));
    rc = tw_reactor_crash(c->r);
    record(&c->log, rc, tw_reactor_running(c->r));
}

TW_REACTOR_TEST(reactor, crash_then_run_again)
{
    struct ctx c = {.r = r};
    shutdown_triggers = 0;
    tw_reactor_add_trigger(r, TW_PHASE_DURING, TW_EVENT_SHUTDOWN, count_shutdown, NULL, NULL);
    tw_call_later(tw_reactor_clock(r), 0, crash_now, &c, NULL);
    cr_assert_eq(tw_reactor_run(r), 0);
    cr_assert_eq(c.calls, 1);
    cr_assert_eq(c.log.codes[0], 0);
    cr_assert_eq(c.log.codes[1], TW_ENOTRUNNING, "crash twice");
    cr_assert_not(c.log.running[0], "not running once crashed");
    cr_assert_eq(shutdown_triggers, 0, "crash fires no shutdown");
    cr_assert_not(tw_reactor_running(r));

    /* Restartable after a crash; this time stop. */
    tw_call_later(tw_reactor_clock(r), 0, stop_now, &c, NULL);
    cr_assert_eq(tw_reactor_run(r), 0);
    cr_assert_eq(c.calls, 2);
    cr_assert_eq(shutdown_triggers, 1);
    cr_assert_eq(tw_reactor_run(r), TW_ENOTRESTARTABLE);
}

static void crash_after_stop(void *arg)
{
    struct ctx *c = arg;
    record(&c->log, tw_reactor_stop(c->r), true);
    record(&c->log, tw_reactor_crash(c->r), true);
}

TW_REACTOR_TEST(reactor, crash_while_stopping_is_still_stopped)
{
    struct ctx c = {.r = r};
    shutdown_triggers = 0;
    tw_reactor_add_trigger(r, TW_PHASE_DURING, TW_EVENT_SHUTDOWN, count_shutdown, NULL, NULL);
    tw_call_later(tw_reactor_clock(r), 0, crash_after_stop, &c, NULL);
    cr_assert_eq(tw_reactor_run(r), 0);
    cr_assert_eq(shutdown_triggers, 0);
    cr_assert_eq(tw_reactor_run(r), TW_ENOTRESTARTABLE);
    /* The unfired trigger is still registered; remove it to leave clean. */
    tw_reactor_state st;
    tw_reactor_get_state(r, &st);
    cr_assert_eq(st.triggers, 1);
}

/* ---- iterate */

static void count_call(void *arg)
{
    (*(int *)arg)++;
}

TW_REACTOR_TEST(reactor, iterate_bad_timeout)
{
    cr_assert_eq(tw_reactor_iterate(r, -1), TW_EINVAL);
    cr_assert_eq(tw_reactor_iterate(r, NAN), TW_EINVAL);
}

TW_REACTOR_TEST(reactor, iterate_counts_what_it_dispatched)
{
    int n = 0;
    cr_assert_eq(tw_reactor_iterate(r, 0), 0);
    tw_call_later(tw_reactor_clock(r), 0, count_call, &n, NULL);
    tw_call_later(tw_reactor_clock(r), 0, count_call, &n, NULL);
    tw_reactor_call_from_thread(r, count_call, &n);
    cr_assert_eq(tw_reactor_iterate(r, 0), 3);
    cr_assert_eq(n, 3);
    cr_assert_eq(tw_reactor_iterate(r, 0), 0);
}

TW_REACTOR_TEST(reactor, iterate_waits_up_to_timeout)
{
    uint64_t t0 = tw_monotonic_ns();
    cr_assert_eq(tw_reactor_iterate(r, 0.03), 0);
    double took = (double)(tw_monotonic_ns() - t0) / 1e9;
    cr_assert_geq(took, 0.029, "took %f", took);
    cr_assert_lt(took, 1.0, "took %f", took);
}

TW_REACTOR_TEST(reactor, iterate_infinite_timeout_ends_at_next_timer)
{
    int n = 0;
    tw_call_later(tw_reactor_clock(r), 0.02, count_call, &n, NULL);
    uint64_t t0 = tw_monotonic_ns();
    int rc = 0;
    while (n == 0 && rc >= 0)
        rc = tw_reactor_iterate(r, INFINITY);
    double took = (double)(tw_monotonic_ns() - t0) / 1e9;
    cr_assert_eq(n, 1);
    cr_assert_lt(took, 1.0);
}

/* ---- call_when_running */

struct cwr {
    tw_reactor *r;
    int order[8];
    bool running[8];
    int n;
};

static void cwr_note(struct cwr *c, int tag)
{
    c->running[c->n] = tw_reactor_running(c->r);
    c->order[c->n++] = tag;
}

static void cwr_one(void *arg)
{
    cwr_note(arg, 1);
}
static tw_deferred *cwr_after_trigger(void *arg)
{
    cwr_note(arg, 2);
    return NULL;
}
static void cwr_three(void *arg)
{
    cwr_note(arg, 3);
}
static void cwr_later(void *arg)
{
    struct cwr *c = arg;
    cwr_note(c, 5);
    tw_reactor_stop(c->r);
}
static void cwr_during(void *arg)
{
    struct cwr *c = arg;
    cwr_note(c, 4);
    /* Already running: not now, on the next iteration. */
    cr_assert_eq(tw_reactor_call_when_running(c->r, cwr_later, c), 0);
    cr_assert_eq(c->n, 4);
}

TW_REACTOR_TEST(reactor, call_when_running)
{
    struct cwr c = {.r = r};
    cr_assert_eq(tw_reactor_call_when_running(r, cwr_one, &c), 0);
    cr_assert_eq(
        tw_reactor_add_trigger(r, TW_PHASE_AFTER, TW_EVENT_STARTUP, cwr_after_trigger, &c, NULL),
        0);
    cr_assert_eq(tw_reactor_call_when_running(r, cwr_three, &c), 0);
    cr_assert_eq(tw_reactor_call_when_running(r, NULL, &c), TW_EINVAL);
    tw_call_later(tw_reactor_clock(r), 0, cwr_during, &c, NULL);
    cr_assert_eq(c.n, 0);
    cr_assert_eq(tw_reactor_run(r), 0);
    cr_assert_eq(c.n, 5);
    /* After-startup callers and triggers together, in the order added; then
     * the timer; then the call added while running. */
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(c.order[i], i + 1, "position %d: %d", i, c.order[i]);
        cr_assert(c.running[i]);
    }
}

TW_REACTOR_TEST(reactor, call_when_running_out_of_memory)
{
    struct cwr c = {.r = r};
    tw_testing_fail_alloc_after(0);
    int rc = tw_reactor_call_when_running(r, cwr_one, &c);
    tw_testing_fail_alloc_off();
    cr_assert_eq(rc, TW_ENOMEM);
    tw_reactor_state st;
    tw_reactor_get_state(r, &st);
    cr_assert_eq(st.triggers, 0);
}

/* Stop asked while the startup event fires: shutdown follows it. */
static tw_deferred *stop_in_startup(void *arg)
{
    struct ctx *c = arg;
    int rc = tw_reactor_stop(c->r);
    record(&c->log, rc, tw_reactor_running(c->r));
    return NULL;
}

TW_REACTOR_TEST(reactor, stop_during_startup)
{
    struct ctx c = {.r = r};
    shutdown_triggers = 0;
    tw_reactor_add_trigger(r, TW_PHASE_BEFORE, TW_EVENT_STARTUP, stop_in_startup, &c, NULL);
    tw_reactor_add_trigger(r, TW_PHASE_AFTER, TW_EVENT_SHUTDOWN, count_shutdown, NULL, NULL);
    cr_assert_eq(tw_reactor_run(r), 0);
    cr_assert_eq(c.log.n, 1);
    cr_assert_eq(c.log.codes[0], 0);
    cr_assert_not(c.log.running[0], "not running before during-startup");
    cr_assert_eq(shutdown_triggers, 1);
}

/* ---- free */

TW_TEST(reactor, free_drops_pending_calls)
{
    tw_reactor *r;
    int n = 0;
    cr_assert_eq(tw_reactor_new(&r, NULL), 0);
    tw_call_later(tw_reactor_clock(r), 0, count_call, &n, NULL);
    tw_call_later(tw_reactor_clock(r), 10, count_call, &n, NULL);
    tw_reactor_call_from_thread(r, count_call, &n);
    tw_reactor_call_when_running(r, count_call, &n);
    tw_reactor_state st;
    tw_reactor_get_state(r, &st);
    cr_assert_eq(st.delayed_calls, 2);
    cr_assert_eq(st.thread_calls, 1);
    cr_assert_eq(st.triggers, 1);
    cr_assert_eq(tw_reactor_free(r), 0);
    cr_assert_eq(n, 0);
}

static void stop_pool_user(void *arg)
{
    tw_reactor *r = arg;
    tw_reactor_stop(r);
}

static void pool_work(void *arg)
{
    (*(int *)arg)++;
}

TW_TEST(reactor, stop_stops_thread_pool)
{
    tw_reactor *r;
    int ran = 0;
    cr_assert_eq(tw_reactor_new(&r, NULL), 0);
    tw_threadpool *pool = tw_reactor_thread_pool(r);
    cr_assert_not_null(pool);
    tw_reactor_state st;
    tw_reactor_get_state(r, &st);
    cr_assert(st.thread_pool_started);
    cr_assert_eq(tw_threadpool_call(pool, pool_work, &ran), 0);
    tw_call_later(tw_reactor_clock(r), 0, stop_pool_user, r, NULL);
    cr_assert_eq(tw_reactor_run(r), 0);
    tw_reactor_get_state(r, &st);
    cr_assert_not(st.thread_pool_started);
    cr_assert_eq(ran, 1, "queued work ran before the pool stopped");
    cr_assert_eq(tw_reactor_free(r), 0);
}
