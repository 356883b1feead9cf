/* Signal watches and the default SIGINT/SIGTERM handling of run. */
#include "twtest.h"

#include <signal.h>
#include <string.h>

struct got {
    tw_reactor *r;
    int calls;
    int signo;
    void *arg;
    tw_reactor *seen_r;
    tw_signal_watch **stop_this; /* stops *stop_this from the callback */
};

static void on_sig(tw_reactor *r, int signo, void *arg)
{
    struct got *g = arg;
    g->calls++;
    g->signo = signo;
    g->arg = arg;
    g->seen_r = r;
    if (g->stop_this && *g->stop_this) {
        tw_signal_watch_stop(*g->stop_this);
        *g->stop_this = NULL;
    }
}

/* Iterates until cond or a 2 s bound. */
static void iterate_until(tw_reactor *r, const int *counter, int want)
{
    uint64_t deadline = tw_monotonic_ns() + 2000000000u;
    while (*counter < want && tw_monotonic_ns() < deadline)
        tw_reactor_iterate(r, 0.05);
}

static void (*handler_of(int signo))(int)
{
    struct sigaction sa;
    cr_assert_eq(sigaction(signo, NULL, &sa), 0);
    return sa.sa_handler;
}

TW_REACTOR_TEST(signals, raise_is_delivered_on_the_loop)
{
    struct got g = {.r = r};
    tw_signal_watch *w = NULL;
    cr_assert_eq(tw_reactor_watch_signal(r, SIGUSR1, on_sig, &g, &w), 0);
    cr_assert_not_null(w);
    tw_reactor_state st;
    tw_reactor_get_state(r, &st);
    cr_assert_eq(st.signal_watches, 1);

    cr_assert_eq(raise(SIGUSR1), 0);
    cr_assert_eq(g.calls, 0, "not inside the handler");
    int n = tw_reactor_iterate(r, 1.0);
    cr_assert_eq(g.calls, 1);
    cr_assert_eq(n, 1);
    cr_assert_eq(g.signo, SIGUSR1);
    cr_assert_eq(g.arg, &g);
    cr_assert_eq(g.seen_r, r);

    /* Again: still watched. */
    raise(SIGUSR1);
    iterate_until(r, &g.calls, 2);
    cr_assert_eq(g.calls, 2);
    tw_signal_watch_stop(w);
    tw_reactor_get_state(r, &st);
    cr_assert_eq(st.signal_watches, 0);
}

TW_REACTOR_TEST(signals, deliveries_between_iterations_may_merge)
{
    struct got g = {.r = r};
    tw_signal_watch *w;
    tw_reactor_watch_signal(r, SIGUSR2, on_sig, &g, &w);
    raise(SIGUSR2);
    raise(SIGUSR2);
    raise(SIGUSR2);
    iterate_until(r, &g.calls, 1);
    tw_reactor_iterate(r, 0);
    cr_assert_geq(g.calls, 1);
    cr_assert_leq(g.calls, 3);
    tw_signal_watch_stop(w);
}

TW_REACTOR_TEST(signals, two_watches_of_one_signal)
{
    struct got a = {.r = r}, b = {.r = r};
    tw_signal_watch *wa, *wb;
    cr_assert_eq(tw_reactor_watch_signal(r, SIGUSR1, on_sig, &a, &wa), 0);
    cr_assert_eq(tw_reactor_watch_signal(r, SIGUSR1, on_sig, &b, &wb), 0);
    raise(SIGUSR1);
    iterate_until(r, &b.calls, 1);
    cr_assert_eq(a.calls, 1);
    cr_assert_eq(b.calls, 1);

    /* Stopping one leaves the other watching. */
    tw_signal_watch_stop(wa);
    raise(SIGUSR1);
    iterate_until(r, &b.calls, 2);
    cr_assert_eq(a.calls, 1);
    cr_assert_eq(b.calls, 2);
    tw_signal_watch_stop(wb);
}

TW_REACTOR_TEST(signals, stop_inside_callback)
{
    struct got a = {.r = r}, b = {.r = r};
    tw_signal_watch *wa, *wb;
    tw_reactor_watch_signal(r, SIGUSR1, on_sig, &a, &wa);
    tw_reactor_watch_signal(r, SIGUSR1, on_sig, &b, &wb);
    a.stop_this = &wb; /* the first stops the second before it runs */
    raise(SIGUSR1);
    iterate_until(r, &a.calls, 1);
    cr_assert_eq(a.calls, 1);
    cr_assert_eq(b.calls, 0);
    cr_assert_null(wb);
    a.stop_this = &wa; /* and then itself */
    raise(SIGUSR1);
    iterate_until(r, &a.calls, 2);
    cr_assert_null(wa);
    tw_reactor_state st;
    tw_reactor_get_state(r, &st);
    cr_assert_eq(st.signal_watches, 0);
}

static void custom_handler(int signo)
{
    (void)signo;
}

TW_REACTOR_TEST(signals, stop_restores_the_disposition)
{
    struct sigaction sa = {0}, old;
    sa.sa_handler = custom_handler;
    cr_assert_eq(sigaction(SIGUSR1, &sa, &old), 0);

    struct got g = {.r = r};
    tw_signal_watch *w1, *w2;
    tw_reactor_watch_signal(r, SIGUSR1, on_sig, &g, &w1);
    tw_reactor_watch_signal(r, SIGUSR1, on_sig, &g, &w2);
    cr_assert_neq((void *)handler_of(SIGUSR1), (void *)custom_handler);
    tw_signal_watch_stop(w1);
    cr_assert_neq((void *)handler_of(SIGUSR1), (void *)custom_handler, "one watch left");
    tw_signal_watch_stop(w2);
    cr_assert_eq((void *)handler_of(SIGUSR1), (void *)custom_handler);
    tw_signal_watch_stop(NULL);

    sigaction(SIGUSR1, &old, NULL);
}

TW_TEST(signals, two_reactors)
{
    tw_reactor *r1, *r2;
    cr_assert_eq(tw_reactor_new(&r1, NULL), 0);
    cr_assert_eq(tw_reactor_new(&r2, NULL), 0);
    struct got g1 = {.r = r1}, g2 = {.r = r2};
    tw_signal_watch *w1, *w2;
    cr_assert_eq(tw_reactor_watch_signal(r1, SIGUSR1, on_sig, &g1, &w1), 0);
    cr_assert_eq(tw_reactor_watch_signal(r2, SIGUSR1, on_sig, &g2, &w2), 0);
    raise(SIGUSR1);
    iterate_until(r1, &g1.calls, 1);
    iterate_until(r2, &g2.calls, 1);
    cr_assert_eq(g1.calls, 1);
    cr_assert_eq(g2.calls, 1);
    cr_assert_eq(g1.seen_r, r1);
    cr_assert_eq(g2.seen_r, r2);

    /* The first reactor lets go; the signal stays caught for the second. */
    tw_signal_watch_stop(w1);
    cr_assert_eq(tw_reactor_free(r1), 0);
    raise(SIGUSR1);
    iterate_until(r2, &g2.calls, 2);
    cr_assert_eq(g2.calls, 2);
    tw_signal_watch_stop(w2);
    cr_assert_eq((void *)handler_of(SIGUSR1), (void *)SIG_DFL);
    cr_assert_eq(tw_reactor_free(r2), 0);
}

TW_REACTOR_TEST(signals, unwatchable_signals)
{
    struct got g = {.r = r};
    tw_signal_watch *w = NULL;
    int bad[] = {0, -1, SIGKILL, SIGSTOP, SIGSEGV, NSIG, 32, 33};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(tw_reactor_watch_signal(r, bad[i], on_sig, &g, &w), TW_EINVAL, "%d", bad[i]);
    cr_assert_eq(tw_reactor_watch_signal(r, SIGUSR1, NULL, &g, &w), TW_EINVAL);
    cr_assert_eq(tw_reactor_watch_signal(r, SIGUSR1, on_sig, &g, NULL), TW_EINVAL);
    cr_assert_null(w);
    /* A real-time signal is fine. */
    cr_assert_eq(tw_reactor_watch_signal(r, SIGRTMIN + 1, on_sig, &g, &w), 0);
    raise(SIGRTMIN + 1);
    iterate_until(r, &g.calls, 1);
    cr_assert_eq(g.signo, SIGRTMIN + 1);
    tw_signal_watch_stop(w);
}

TW_REACTOR_TEST(signals, watch_out_of_memory)
{
    struct got g = {.r = r};
    for (long n = 0;; n++) {
        tw_signal_watch *w = NULL;
        tw_testing_fail_alloc_after(n);
        int rc = tw_reactor_watch_signal(r, SIGUSR1, on_sig, &g, &w);
        tw_testing_fail_alloc_off();
        if (rc == 0) {
            raise(SIGUSR1);
            iterate_until(r, &g.calls, 1);
            cr_assert_eq(g.calls, 1);
            tw_signal_watch_stop(w);
            break;
        }
        cr_assert_eq(rc, TW_ENOMEM);
        cr_assert_null(w);
        cr_assert_eq((void *)handler_of(SIGUSR1), (void *)SIG_DFL);
        cr_assert_lt(n, 10);
    }
}

TW_TEST(signals, free_stops_forgotten_watches)
{
    tw_reactor *r;
    cr_assert_eq(tw_reactor_new(&r, NULL), 0);
    struct got g = {.r = r};
    tw_signal_watch *w;
    tw_reactor_watch_signal(r, SIGUSR2, on_sig, &g, &w);
    tw_testing_log_capture_start();
    cr_assert_eq(tw_reactor_free(r), 0);
    size_t logged = tw_testing_log_count("signal watch");
    tw_testing_log_capture_stop();
    cr_assert_eq(logged, 1);
    cr_assert_eq((void *)handler_of(SIGUSR2), (void *)SIG_DFL);
}

/* ---- run's default handlers */

static int shutdowns;
static tw_deferred *count_shutdown(void *arg)
{
    (void)arg;
    shutdowns++;
    return NULL;
}

static void raise_it(void *arg)
{
    raise(*(int *)arg);
}

static void (*during_run)(int);
static void look_at_sigint(void *arg)
{
    (void)arg;
    during_run = handler_of(SIGINT);
}

TW_REACTOR_TEST(signals, sigterm_during_run_stops_it)
{
    shutdowns = 0;
    static int signo = SIGTERM;
    tw_reactor_add_trigger(r, TW_PHASE_DURING, TW_EVENT_SHUTDOWN, count_shutdown, NULL, NULL);
    tw_call_later(tw_reactor_clock(r), 0.01, raise_it, &signo, NULL);
    tw_testing_log_capture_start();
    cr_assert_eq(tw_reactor_run(r), 0);
    size_t logged = tw_testing_log_count("SIGTERM");
    tw_testing_log_capture_stop();
    cr_assert_eq(shutdowns, 1, "a clean stop: shutdown fired");
    cr_assert_eq(logged, 1);
    cr_assert_eq(tw_reactor_run(r), TW_ENOTRESTARTABLE);
    cr_assert_eq((void *)handler_of(SIGTERM), (void *)SIG_DFL, "restored after run");
    cr_assert_eq((void *)handler_of(SIGINT), (void *)SIG_DFL);
}

TW_REACTOR_TEST(signals, sigint_during_run_stops_it)
{
    shutdowns = 0;
    static int signo = SIGINT;
    tw_reactor_add_trigger(r, TW_PHASE_AFTER, TW_EVENT_SHUTDOWN, count_shutdown, NULL, NULL);
    tw_reactor_call_when_running(r, look_at_sigint, NULL);
    tw_call_later(tw_reactor_clock(r), 0.01, raise_it, &signo, NULL);
    tw_testing_log_capture_start();
    cr_assert_eq(tw_reactor_run(r), 0);
    tw_testing_log_capture_stop();
    cr_assert_eq(shutdowns, 1);
    cr_assert_neq((void *)during_run, (void *)SIG_DFL, "installed while running");
    cr_assert_eq((void *)handler_of(SIGINT), (void *)SIG_DFL, "restored after run");
}

static bool stopped_by_timer;

static void stop_by_timer(void *arg)
{
    stopped_by_timer = true;
    tw_reactor_stop(arg);
}

TW_TEST(signals, no_signal_handlers_honoured)
{
    tw_reactor *r;
    tw_reactor_options opts = {.no_signal_handlers = true};
    cr_assert_eq(tw_reactor_new(&r, &opts), 0);
    struct sigaction ign = {0}, old;
    ign.sa_handler = SIG_IGN;
    sigaction(SIGINT, &ign, &old);

    static int signo = SIGINT;
    shutdowns = 0;
    during_run = NULL;
    tw_reactor_add_trigger(r, TW_PHASE_DURING, TW_EVENT_SHUTDOWN, count_shutdown, NULL, NULL);
    tw_reactor_call_when_running(r, look_at_sigint, NULL);
    tw_call_later(tw_reactor_clock(r), 0.01, raise_it, &signo, NULL);
    stopped_by_timer = false;
    tw_call_later(tw_reactor_clock(r), 0.1, stop_by_timer, r, NULL);
    cr_assert_eq(tw_reactor_run(r), 0);
    cr_assert_eq((void *)during_run, (void *)SIG_IGN, "left alone while running");
    cr_assert(stopped_by_timer, "SIGINT did not stop it; the timer did");
    cr_assert_eq(shutdowns, 1);
    sigaction(SIGINT, &old, NULL);
    cr_assert_eq(tw_reactor_free(r), 0);
}

/* A user watch of SIGINT and run's own handler coexist; the user's watch
 * outlives run. */
TW_REACTOR_TEST(signals, user_watch_of_sigint_during_run)
{
    struct got g = {.r = r};
    tw_signal_watch *w;
    static int signo = SIGINT;
    tw_reactor_watch_signal(r, SIGINT, on_sig, &g, &w);
    tw_call_later(tw_reactor_clock(r), 0.01, raise_it, &signo, NULL);
    tw_testing_log_capture_start();
    cr_assert_eq(tw_reactor_run(r), 0);
    tw_testing_log_capture_stop();
    cr_assert_eq(g.calls, 1);
    cr_assert_neq((void *)handler_of(SIGINT), (void *)SIG_DFL, "still watched");
    tw_signal_watch_stop(w);
    cr_assert_eq((void *)handler_of(SIGINT), (void *)SIG_DFL);
}
