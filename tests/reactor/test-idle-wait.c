/* The loop's notion of "now" after an idle wait, on the real clock.
 *
 * Each test lets the loop sleep for IDLE with nothing to do, then wakes it
 * with one event at a known CLOCK_MONOTONIC instant (`woken`): a descriptor
 * becoming readable, a signal, a call from another thread, the end of work on
 * the thread pool. The callback of that event arms a timer and a delayed call
 * of DELAY. Neither may run before woken + DELAY, measured here with
 * CLOCK_MONOTONIC, whatever the reactor's cached time says: a loop that
 * still holds the time from before its wait would run them at once, cut
 * short by the idle time. The manual clock cannot show this; only a real wait
 * can. */
#include "twtest.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <twine/thread.h>

#define IDLE_NS  2000000000ull
#define DELAY    0.5
#define DELAY_NS 500000000ull
/* The wait asked of the loop: longer than IDLE, so the event ends it. */
#define WAIT_BOUND 5.0

struct probe {
    tw_reactor *r;
    uint64_t woken_ns; /* when the waking event happens */
    int armed;
    double loop_now; /* the reactor's time, as the waking callback saw it */
    tw_timer timer;
    uint64_t timer_ns, call_ns; /* when the timer and the delayed call ran */
    int fired;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static struct timespec to_timespec(uint64_t ns)
{
    return (struct timespec){.tv_sec = (time_t)(ns / 1000000000u),
                             .tv_nsec = (long)(ns % 1000000000u)};
}

/* Off the loop's thread: returns at `ns` (CLOCK_MONOTONIC) or later. This is
 * the idle time under test, not a way to wait for something. */
static void sleep_until(uint64_t ns)
{
    struct timespec ts = to_timespec(ns);
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        continue;
}

static void timer_fired(tw_timer *t)
{
    struct probe *p = (struct probe *)((char *)t - offsetof(struct probe, timer));
    p->timer_ns = now_ns();
    p->fired++;
}

static void call_fired(void *arg)
{
    struct probe *p = arg;
    p->call_ns = now_ns();
    p->fired++;
}

static void probe_init(struct probe *p, tw_reactor *r)
{
    *p = (struct probe){.r = r, .woken_ns = now_ns() + IDLE_NS};
    tw_timer_init(&p->timer, tw_reactor_clock(r), timer_fired);
}

/* What every waking callback does: arm both kinds of timer. */
static void arm(struct probe *p)
{
    tw_clock *clock = tw_reactor_clock(p->r);
    p->armed++;
    p->loop_now = tw_clock_seconds(clock);
    cr_assert_eq(tw_timer_start(&p->timer, DELAY), 0);
    cr_assert_eq(tw_call_later(clock, DELAY, call_fired, p, NULL), 0);
}

/* Lets the loop wait (in waits long enough that only the event ends the
 * first), then checks when the timers ran. */
static void run_and_check(struct probe *p)
{
    uint64_t give_up = p->woken_ns + 10 * 1000000000ull;
    while (p->fired < 2 && now_ns() < give_up)
        tw_reactor_iterate(p->r, WAIT_BOUND);
    cr_assert_eq(p->armed, 1, "the waking callback ran %d times", p->armed);
    cr_assert_eq(p->fired, 2, "the timers armed after the idle wait did not both run");
    cr_assert(p->timer_ns >= p->woken_ns + DELAY_NS,
              "a %.1f s timer armed after an idle wait ran %.3f s after the event", DELAY,
              (double)(p->timer_ns - p->woken_ns) / 1e9);
    cr_assert(p->call_ns >= p->woken_ns + DELAY_NS,
              "a %.1f s delayed call armed after an idle wait ran %.3f s after the event", DELAY,
              (double)(p->call_ns - p->woken_ns) / 1e9);
    double woken = (double)p->woken_ns / 1e9;
    cr_assert(p->loop_now >= woken - 1e-6,
              "the loop's time in the waking callback was %.3f s before the event",
              woken - p->loop_now);
}

/* ---- A descriptor that becomes readable */

static void on_readable(tw_io *io, unsigned events)
{
    struct probe *p = io->data;
    (void)events;
    uint64_t expirations;
    cr_assert_eq(read(io->fd, &expirations, sizeof expirations), (ssize_t)sizeof expirations);
    cr_assert_eq(tw_reactor_remove_reader(p->r, io), 0);
    arm(p);
}

TW_REACTOR_TEST(idle_wait, io_callback_arms_a_timer)
{
    struct probe p;
    probe_init(&p, r);
    /* A timerfd becomes readable at an exact CLOCK_MONOTONIC instant. */
    int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    cr_assert_geq(fd, 0);
    struct itimerspec its = {.it_value = to_timespec(p.woken_ns)};
    cr_assert_eq(timerfd_settime(fd, TFD_TIMER_ABSTIME, &its, NULL), 0);
    tw_io io;
    tw_io_init(&io, fd, on_readable, &p);
    cr_assert_eq(tw_reactor_add_reader(r, &io), 0);
    run_and_check(&p);
    close(fd);
}

/* ---- A signal, handled on another thread (which wakes the loop through the
 * reactor's descriptor rather than by interrupting its wait) */

static void on_signal(tw_reactor *r, int signo, void *arg)
{
    (void)r;
    (void)signo;
    arm(arg);
}

static void *signal_later(void *arg)
{
    struct probe *p = arg;
    sleep_until(p->woken_ns);
    pthread_kill(pthread_self(), SIGUSR1);
    return NULL;
}

TW_REACTOR_TEST(idle_wait, signal_callback_arms_a_timer)
{
    struct probe p;
    probe_init(&p, r);
    tw_signal_watch *watch;
    cr_assert_eq(tw_reactor_watch_signal(r, SIGUSR1, on_signal, &p, &watch), 0);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, signal_later, &p), 0);
    run_and_check(&p);
    pthread_join(t, NULL);
    tw_signal_watch_stop(watch);
}

/* ---- A call from another thread */

static void arm_call(void *arg)
{
    arm(arg);
}

static void *call_later_from_thread(void *arg)
{
    struct probe *p = arg;
    sleep_until(p->woken_ns);
    cr_assert_eq(tw_reactor_call_from_thread(p->r, arm_call, p), 0);
    return NULL;
}

TW_REACTOR_TEST(idle_wait, call_from_thread_arms_a_timer)
{
    struct probe p;
    probe_init(&p, r);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, call_later_from_thread, &p), 0);
    run_and_check(&p);
    pthread_join(t, NULL);
}

/* ---- Work done on the thread pool */

static tw_result slow_work(void *arg)
{
    struct probe *p = arg;
    sleep_until(p->woken_ns);
    return tw_result_from_int(1);
}

static tw_result work_done(tw_result result, void *arg)
{
    arm(arg);
    return result;
}

TW_REACTOR_TEST(idle_wait, thread_pool_completion_arms_a_timer)
{
    struct probe p;
    probe_init(&p, r);
    tw_deferred *d = tw_defer_to_thread(r, slow_work, &p);
    cr_assert_not_null(d);
    cr_assert_eq(tw_deferred_add_callback(d, work_done, &p), 0);
    run_and_check(&p);
    cr_assert(tw_deferred_called(d));
    tw_deferred_unref(d);
}
