/* Timers driven by a real reactor: order, zero delays, and how the loop
 * sleeps until the next one. */
#include "twtest.h"

#include <fcntl.h>
#include <unistd.h>

struct order {
    tw_reactor *r;
    int seen[8];
    int n;
    bool stop_after;
};

struct tagged {
    struct order *o;
    int tag;
};

static void note(void *arg)
{
    struct tagged *t = arg;
    t->o->seen[t->o->n++] = t->tag;
    if (t->o->stop_after && t->o->n == 5)
        tw_reactor_stop(t->o->r);
}

TW_REACTOR_TEST(time, order_by_deadline_then_scheduling)
{
    struct order o = {.r = r, .stop_after = true};
    tw_clock *c = tw_reactor_clock(r);
    struct tagged t[5] = {{&o, 5}, {&o, 2}, {&o, 4}, {&o, 1}, {&o, 3}};
    cr_assert_eq(tw_call_later(c, 0.030, note, &t[0], NULL), 0);
    cr_assert_eq(tw_call_later(c, 0.010, note, &t[1], NULL), 0);
    cr_assert_eq(tw_call_later(c, 0.020, note, &t[2], NULL), 0);
    cr_assert_eq(tw_call_later(c, 0.000, note, &t[3], NULL), 0);
    cr_assert_eq(tw_call_later(c, 0.010, note, &t[4], NULL), 0); /* ties go in order */
    cr_assert_eq(tw_reactor_run(r), 0);
    cr_assert_eq(o.n, 5);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(o.seen[i], i + 1, "position %d: %d", i, o.seen[i]);
}

struct spinner {
    tw_reactor *r;
    int runs;
    int io_calls;
    bool stop;
};

static void spin(void *arg)
{
    struct spinner *s = arg;
    s->runs++;
    if (!s->stop)
        cr_assert_eq(tw_call_later(tw_reactor_clock(s->r), 0, spin, s, NULL), 0);
}

static void on_readable(tw_io *io, unsigned events)
{
    struct spinner *s = io->data;
    (void)events;
    s->io_calls++;
}

/* A timer that re-arms itself with no delay runs once per pass over the due
 * timers, never in a loop of its own: I/O still gets its turn. */
TW_REACTOR_TEST(time, zero_delay_from_a_callback_waits_for_the_next_pass)
{
    struct spinner s = {.r = r};
    int p[2];
    cr_assert_eq(pipe2(p, O_NONBLOCK), 0);
    cr_assert_eq(write(p[1], "x", 1), 1);
    tw_io io;
    tw_io_init(&io, p[0], on_readable, &s);
    tw_reactor_add_reader(r, &io);

    tw_call_later(tw_reactor_clock(r), 0, spin, &s, NULL);
    for (int i = 1; i <= 5; i++) {
        int n = tw_reactor_iterate(r, 1.0);
        cr_assert_leq(s.runs, 2 * i, "at most once per pass (two passes per iteration)");
        cr_assert_geq(s.runs, i);
        cr_assert_eq(s.io_calls, i, "I/O dispatched every iteration");
        cr_assert_geq(n, 2);
    }
    s.stop = true;
    while (tw_clock_pending(tw_reactor_clock(r)) > 0)
        tw_reactor_iterate(r, 0);
    tw_reactor_remove_reader(r, &io);
    close(p[0]);
    close(p[1]);
}

struct fired {
    int count;
    uint64_t at;
};

static void mark(void *arg)
{
    struct fired *f = arg;
    f->count++;
    f->at = tw_monotonic_ns();
}

TW_REACTOR_TEST(time, timer_wakes_the_loop_no_earlier_than_due)
{
    struct fired f = {0};
    uint64_t t0 = tw_monotonic_ns();
    tw_reactor_seconds(r); /* schedule from a fresh loop time */
    cr_assert_eq(tw_call_later(tw_reactor_clock(r), 0.05, mark, &f, NULL), 0);
    int iterations = 0;
    while (f.count == 0) {
        cr_assert_geq(tw_reactor_iterate(r, 10.0), 0);
        iterations++;
        cr_assert_lt(iterations, 10, "the loop spins instead of sleeping");
    }
    double took = (double)(f.at - t0) / 1e9;
    cr_assert_geq(took, 0.05, "fired after %f s", took);
    cr_assert_lt(took, 1.0, "fired after %f s", took);
    cr_assert_leq(iterations, 3, "%d iterations", iterations);
}

static void stop_reactor(void *arg)
{
    tw_reactor_stop(arg);
}

TW_REACTOR_TEST(time, run_sleeps_until_the_timer)
{
    struct fired f = {0};
    tw_reactor_seconds(r);
    uint64_t t0 = tw_monotonic_ns();
    tw_call_later(tw_reactor_clock(r), 0.05, mark, &f, NULL);
    tw_call_later(tw_reactor_clock(r), 0.05, stop_reactor, r, NULL);
    cr_assert_eq(tw_reactor_run(r), 0);
    cr_assert_eq(f.count, 1);
    cr_assert_geq(f.at - t0, 50000000u);
}

TW_REACTOR_TEST(time, cancelled_timer_neither_runs_nor_keeps_the_loop_waiting)
{
    struct fired f = {0};
    tw_delayed_call dc;
    tw_call_later(tw_reactor_clock(r), 5.0, mark, &f, &dc);
    cr_assert_eq(tw_delayed_call_cancel(dc), 0);
    uint64_t t0 = tw_monotonic_ns();
    cr_assert_eq(tw_reactor_iterate(r, 0.02), 0);
    uint64_t took = tw_monotonic_ns() - t0;
    cr_assert_lt(took, 1000000000u);
    cr_assert_eq(f.count, 0);
}

TW_REACTOR_TEST(time, iterate_timeout_shortened_by_a_timer)
{
    struct fired f = {0};
    tw_reactor_seconds(r);
    tw_call_later(tw_reactor_clock(r), 0.02, mark, &f, NULL);
    uint64_t t0 = tw_monotonic_ns();
    int n = 0;
    while (f.count == 0)
        n += tw_reactor_iterate(r, 5.0);
    uint64_t took = tw_monotonic_ns() - t0;
    cr_assert_eq(n, 1);
    cr_assert_lt(took, 1000000000u, "iterate waited for its own timeout");
}

TW_REACTOR_TEST(time, reactor_clock_follows_real_time)
{
    double a = tw_reactor_seconds(r);
    usleep(20000);
    tw_reactor_iterate(r, 0);
    double b = tw_clock_seconds(tw_reactor_clock(r));
    cr_assert_geq(b - a, 0.02);
}
