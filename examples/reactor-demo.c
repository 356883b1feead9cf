/* reactor-demo: the reactor, timers, a deferred and a shutdown trigger at work.
 *
 * What happens (about 2 seconds; Ctrl-C stops it early, just as cleanly):
 *   0.0 s  the reactor starts (backend from $TWINE_REACTOR, default epoll)
 *   0.2 s, 0.5 s, 0.8 s  three timers tick
 *   1.0 s  a timer fires a deferred with 42; its first callback fails, an
 *          errback recovers, the last callback sees the recovered value
 *   1.5 s  a timer stops the reactor; a before-shutdown trigger returns a
 *          deferred (say, flushing a log) that fires 0.5 s later, and the
 *          shutdown waits for it
 *   2.0 s  the during and after shutdown triggers run; run() returns; exit 0 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include <twine/twine.h>

static tw_reactor *reactor;
static double started;
static tw_deferred *answer; /* the deferred the 1.0 s timer fires */

/* Prints a line stamped with the time since start. */
__attribute__((format(printf, 1, 2))) static void say(const char *fmt, ...)
{
    printf("[%5.2f s] ", tw_reactor_seconds(reactor) - started);
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

/* ---- Timers */

static void tick(void *arg)
{
    say("timer tick %ld", (long)(intptr_t)arg);
}

/* ---- A deferred with a callback chain */

static tw_result double_it_then_fail(tw_result result, void *arg)
{
    (void)arg;
    long n = (long)tw_result_int(result);
    say("callback 1 got %ld; now failing on purpose", n);
    return tw_result_fail(tw_failure_new(TW_EUSER, NULL, "something went wrong with %ld", n * 2));
}

static tw_result never_called(tw_result result, void *arg)
{
    (void)arg;
    say("callback 2 (skipped on a failure: this line never prints)");
    return result;
}

static tw_result recover(tw_result result, void *arg)
{
    (void)arg;
    say("errback recovered from: %s", tw_failure_message(result.failure));
    tw_result_release(&result);
    return tw_result_from_int(7);
}

static tw_result last_callback(tw_result result, void *arg)
{
    (void)arg;
    say("callback 3 got the recovered value %ld", (long)tw_result_int(result));
    return result;
}

static void fire_answer(void *arg)
{
    (void)arg;
    say("timer fires the deferred with 42");
    tw_deferred_callback(answer, tw_result_from_int(42));
    tw_deferred_unref(answer);
    answer = NULL;
}

/* ---- Shutdown */

static void stop(void *arg)
{
    (void)arg;
    say("stopping the reactor");
    tw_reactor_stop(reactor);
}

static void flushed(void *arg)
{
    tw_deferred *d = arg;
    say("flush done: the shutdown can go on");
    tw_deferred_callback(d, tw_result_borrowed(NULL));
    tw_deferred_unref(d);
}

static tw_deferred *before_shutdown(void *arg)
{
    (void)arg;
    say("before-shutdown trigger: flushing for 0.5 s, the reactor waits");
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    if (!d)
        return NULL;
    if (tw_call_later(tw_reactor_clock(reactor), 0.5, flushed, tw_deferred_ref(d), NULL) < 0) {
        tw_deferred_unref(d); /* the reference meant for the timer */
        return d;             /* fine: the reactor gives up after shutdown_timeout */
    }
    return d;
}

static tw_deferred *during_shutdown(void *arg)
{
    (void)arg;
    say("during-shutdown trigger");
    return NULL;
}

static tw_deferred *after_shutdown(void *arg)
{
    (void)arg;
    say("after-shutdown trigger: bye");
    return NULL;
}

static void running(void *arg)
{
    (void)arg;
    say("the reactor is running (Ctrl-C stops it cleanly)");
}

static int check(int rc, const char *what)
{
    if (rc < 0) {
        fprintf(stderr, "reactor-demo: %s: %s\n", what, tw_strerror(rc));
        exit(1);
    }
    return rc;
}

int main(void)
{
    check(tw_reactor_new(&reactor, NULL), "tw_reactor_new");
    started = tw_reactor_seconds(reactor);
    printf("reactor-demo: backend \"%s\" (set TWINE_REACTOR=epoll|poll|select to change)\n",
           tw_reactor_backend_name(reactor));

    tw_clock *clock = tw_reactor_clock(reactor);
    for (intptr_t i = 1; i <= 3; i++) {
        static const double at[] = {0, 0.2, 0.5, 0.8};
        check(tw_call_later(clock, at[i], tick, (void *)i, NULL), "tw_call_later");
    }

    answer = tw_deferred_new(NULL, NULL);
    if (!answer)
        check(TW_ENOMEM, "tw_deferred_new");
    check(tw_deferred_add_callback(answer, double_it_then_fail, NULL), "add_callback");
    check(tw_deferred_add_callback(answer, never_called, NULL), "add_callback");
    check(tw_deferred_add_errback(answer, recover, NULL), "add_errback");
    check(tw_deferred_add_callback(answer, last_callback, NULL), "add_callback");
    check(tw_call_later(clock, 1.0, fire_answer, NULL, NULL), "tw_call_later");

    check(tw_call_later(clock, 1.5, stop, NULL, NULL), "tw_call_later");
    check(tw_reactor_call_when_running(reactor, running, NULL), "call_when_running");
    check(tw_reactor_add_trigger(reactor, TW_PHASE_BEFORE, TW_EVENT_SHUTDOWN, before_shutdown, NULL,
                                 NULL),
          "add_trigger");
    check(tw_reactor_add_trigger(reactor, TW_PHASE_DURING, TW_EVENT_SHUTDOWN, during_shutdown, NULL,
                                 NULL),
          "add_trigger");
    check(tw_reactor_add_trigger(reactor, TW_PHASE_AFTER, TW_EVENT_SHUTDOWN, after_shutdown, NULL,
                                 NULL),
          "add_trigger");

    check(tw_reactor_run(reactor), "tw_reactor_run");
    printf("reactor-demo: run() returned after %.2f s\n", tw_reactor_seconds(reactor) - started);
    /* Stopped early by Ctrl-C, timers may still be pending: freeing the
     * reactor drops them, so the deferred one of them would have fired is
     * released here (unfired, it just goes away). */
    tw_deferred_unref(answer);
    check(tw_reactor_free(reactor), "tw_reactor_free");
    return 0;
}
