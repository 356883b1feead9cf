/* Cooperator: round-robin fairness and time slices on a manual clock, tasks
 * finishing, failing, waiting for deferreds, paused, resumed, stopped; the
 * cooperator stopped, started, freed from anywhere; coiterate; allocation
 * failure; and the default slice on a real reactor. */
#include <math.h>
#include <string.h>
#include <time.h>

#include <twine/task.h>

#include "twtest.h"

/* The trace of units run: one letter per unit, '|' between ticks. */
static char trace[4096];
static size_t trace_len;
static double last_tick_time = -1;
static tw_clock *clk;

static void mark(char ch)
{
    double now = tw_clock_seconds(clk);
    if (last_tick_time >= 0 && now != last_tick_time && trace_len + 1 < sizeof trace)
        trace[trace_len++] = '|';
    last_tick_time = now;
    if (trace_len + 1 < sizeof trace)
        trace[trace_len++] = ch;
    trace[trace_len] = '\0';
}

struct it {
    char name;
    int units;    /* done so far */
    int total;    /* done after this many */
    int fail_at;  /* fail on this unit (1-based) */
    int defer_at; /* return `pending` on this unit */
    tw_deferred *pending;
    int released; /* arg_release calls */
    /* reentrancy */
    int stop_self_at;
    int pause_self_at;
    int stop_coop_at;
    int free_coop_at;
    int unref_self_at;
    int add_task_at;
    tw_coop_task *self;
    tw_cooperator *coop;
    struct it *to_add;
    uint64_t spin_ns; /* busy work per unit */
};

static tw_result step(void *arg)
{
    struct it *it = arg;
    it->units++;
    mark(it->name);
    if (it->spin_ns) {
        uint64_t end = tw_monotonic_ns() + it->spin_ns;
        while (tw_monotonic_ns() < end)
            ;
    }
    if (it->units == it->stop_self_at)
        cr_assert_eq(tw_coop_task_stop(it->self), 0);
    if (it->units == it->pause_self_at)
        cr_assert_eq(tw_coop_task_pause(it->self), 0);
    if (it->units == it->stop_coop_at)
        tw_cooperator_stop(it->coop);
    if (it->units == it->free_coop_at)
        tw_cooperator_free(it->coop);
    if (it->units == it->unref_self_at) {
        tw_coop_task_unref(it->self);
        it->self = NULL;
    }
    if (it->units == it->add_task_at)
        cr_assert_eq(tw_cooperate(it->coop, step, it->to_add, NULL, NULL), 0);
    if (it->units == it->fail_at)
        return tw_result_fail(tw_failure_new(TW_EUSER, NULL, "%c failed", it->name));
    if (it->units == it->defer_at) {
        it->pending = tw_deferred_new(NULL, NULL);
        return tw_result_deferred(tw_deferred_ref(it->pending));
    }
    if (it->units >= it->total)
        return tw_iter_done();
    return tw_result_from_int(it->units); /* ignored */
}

static void it_release(void *arg)
{
    struct it *it = arg;
    it->released++;
}

static size_t per_tick = 2;

static bool after_n_units(void *arg, size_t units)
{
    return units >= per_tick;
}

static tw_cooperator *coop_new(bool started)
{
    clk = tw_clock_new_manual();
    cr_assert(clk);
    tw_cooperator_options o = {.tick_over = after_n_units, .not_started = !started};
    tw_cooperator *c = NULL;
    cr_assert_eq(tw_cooperator_new(clk, &o, &c), 0);
    return c;
}

static void coop_done(tw_cooperator *c)
{
    tw_cooperator_free(c);
    cr_assert_eq(tw_clock_pending(clk), 0, "no tick left scheduled");
    tw_clock_free(clk);
}

/* Advances by one tick delay at a time. */
static void ticks(int n)
{
    for (int i = 0; i < n; i++)
        tw_clock_advance(clk, 1e-8);
}

static tw_coop_task *add(tw_cooperator *c, struct it *it)
{
    tw_coop_task *t = NULL;
    cr_assert_eq(tw_cooperate(c, step, it, it_release, &t), 0);
    it->self = t;
    it->coop = c;
    return t;
}

struct outcome {
    int fired;
    int code;
    void *value;
};

static tw_result keep(tw_result r, void *arg)
{
    struct outcome *o = arg;
    o->fired++;
    o->code = r.failure ? tw_failure_code(r.failure) : 0;
    o->value = r.failure ? NULL : r.value;
    tw_result_release(&r);
    return tw_result_borrowed(NULL);
}

static void watch(tw_coop_task *t, struct outcome *o)
{
    tw_deferred *d = tw_coop_task_when_done(t);
    cr_assert(d);
    tw_deferred_add_both(d, keep, o);
    tw_deferred_unref(d);
}

TW_TEST(coop, round_robin_in_slices_across_ticks)
{
    tw_cooperator *c = coop_new(true);
    struct it a = {.name = 'A', .total = 4}, b = {.name = 'B', .total = 4},
              cc = {.name = 'C', .total = 4};
    tw_coop_task *ta = add(c, &a), *tb = add(c, &b), *tc = add(c, &cc);
    cr_assert_eq(tw_clock_pending(clk), 1, "one tick scheduled");
    cr_assert_eq(trace_len, 0, "nothing runs before the tick");
    ticks(6);
    /* Two units per tick, each tick going on after the last task that ran. */
    cr_assert_str_eq(trace, "AB|CA|BC|AB|CA|BC");
    cr_assert_eq(tw_coop_task_state_of(ta), TW_TASK_DONE);
    cr_assert_eq(tw_coop_task_state_of(tc), TW_TASK_DONE);
    cr_assert_eq(tw_cooperator_tasks(c), 0);
    cr_assert_eq(tw_clock_pending(clk), 0, "no work: no tick");
    tw_coop_task_unref(ta);
    tw_coop_task_unref(tb);
    tw_coop_task_unref(tc);
    cr_assert_eq(a.released + b.released + cc.released, 3);
    coop_done(c);
}

TW_TEST(coop, a_finished_task_leaves_the_round_robin)
{
    tw_cooperator *c = coop_new(true);
    per_tick = 3;
    struct it a = {.name = 'A', .total = 1}, b = {.name = 'B', .total = 5};
    tw_coop_task *ta = add(c, &a), *tb = add(c, &b);
    struct outcome oa = {0}, ob = {0};
    watch(ta, &oa);
    watch(tb, &ob);
    ticks(2);
    cr_assert_str_eq(trace, "ABB|BBB");
    cr_assert_eq(oa.fired, 1);
    cr_assert_eq(oa.value, &a, "when_done fires with the iterator's arg");
    cr_assert_eq(ob.fired, 1);
    struct outcome late = {0};
    watch(ta, &late);
    cr_assert_eq(late.value, &a, "on a finished task it fires at once");
    tw_coop_task_unref(ta);
    tw_coop_task_unref(tb);
    coop_done(c);
}

TW_TEST(coop, a_failing_iterator_fails_its_task_only)
{
    tw_cooperator *c = coop_new(true);
    struct it a = {.name = 'A', .total = 9, .fail_at = 2}, b = {.name = 'B', .total = 3};
    tw_coop_task *ta = add(c, &a), *tb = add(c, &b);
    struct outcome oa = {0}, ob = {0};
    watch(ta, &oa);
    watch(tb, &ob);
    ticks(4);
    cr_assert_str_eq(trace, "AB|AB|B");
    cr_assert_eq(oa.code, TW_EUSER);
    cr_assert_eq(tw_coop_task_state_of(ta), TW_TASK_FAILED);
    cr_assert_eq(ob.code, 0);
    cr_assert_eq(tw_coop_task_stop(ta), TW_EINVAL, "finished");
    cr_assert_eq(tw_coop_task_pause(ta), TW_EINVAL, "finished");
    tw_coop_task_unref(ta);
    tw_coop_task_unref(tb);
    coop_done(c);
}

TW_TEST(coop, a_returned_deferred_pauses_the_task_until_it_fires)
{
    tw_cooperator *c = coop_new(true);
    per_tick = 2;
    struct it a = {.name = 'A', .total = 4, .defer_at = 1}, b = {.name = 'B', .total = 20};
    tw_coop_task *ta = add(c, &a), *tb = add(c, &b);
    ticks(3);
    cr_assert_str_eq(trace, "AB|BB|BB");
    cr_assert_eq(tw_coop_task_state_of(ta), TW_TASK_PAUSED);
    cr_assert_eq(tw_coop_task_resume(ta), TW_EPAUSED, "waiting is not a pause to undo");
    tw_deferred_callback(a.pending, tw_result_ok(tw_malloc(8), tw_free)); /* dropped */
    ticks(2);
    /* A comes back at the end of the round robin, which the cursor had
     * reached (as Twisted's live list iterator). */
    cr_assert_str_eq(trace, "AB|BB|BB|AB|AB");
    tw_deferred_unref(a.pending);
    tw_coop_task_stop(tb);
    ticks(2);
    cr_assert_eq(tw_coop_task_state_of(ta), TW_TASK_DONE);
    tw_coop_task_unref(ta);
    tw_coop_task_unref(tb);
    coop_done(c);
}

TW_TEST(coop, a_failing_deferred_fails_the_task)
{
    tw_cooperator *c = coop_new(true);
    struct it a = {.name = 'A', .total = 4, .defer_at = 1};
    tw_coop_task *ta = add(c, &a);
    struct outcome oa = {0};
    watch(ta, &oa);
    ticks(1);
    cr_assert_eq(tw_clock_pending(clk), 0, "the only task waits: no tick");
    tw_deferred_errback(a.pending, tw_failure_new(-EIO, NULL, "io"));
    cr_assert_eq(oa.code, -EIO);
    cr_assert_eq(tw_coop_task_state_of(ta), TW_TASK_FAILED);
    tw_deferred_unref(a.pending);
    tw_coop_task_unref(ta);
    coop_done(c);
}

TW_TEST(coop, a_deferred_released_unfired_fails_the_task)
{
    tw_cooperator *c = coop_new(true);
    struct it a = {.name = 'A', .total = 4, .defer_at = 1};
    tw_coop_task *ta = add(c, &a);
    struct outcome oa = {0};
    watch(ta, &oa);
    ticks(1);
    tw_deferred_unref(a.pending);
    cr_assert_eq(oa.code, TW_ECANCELED);
    tw_coop_task_unref(ta);
    coop_done(c);
}

TW_TEST(coop, stopping_a_waiting_task_ignores_its_deferred)
{
    tw_cooperator *c = coop_new(true);
    struct it a = {.name = 'A', .total = 4, .defer_at = 1};
    tw_coop_task *ta = add(c, &a);
    struct outcome oa = {0};
    watch(ta, &oa);
    ticks(1);
    cr_assert_eq(tw_coop_task_stop(ta), 0);
    cr_assert_eq(oa.code, TW_ECANCELED, "TaskStopped");
    cr_assert_eq(tw_coop_task_state_of(ta), TW_TASK_STOPPED);
    tw_deferred_errback(a.pending, tw_failure_new(TW_EUSER, NULL, "late")); /* dropped */
    ticks(2);
    cr_assert_eq(a.units, 1);
    tw_deferred_unref(a.pending);
    tw_coop_task_unref(ta);
    coop_done(c);
}

TW_TEST(coop, pause_and_resume)
{
    tw_cooperator *c = coop_new(true);
    struct it a = {.name = 'A', .total = 100}, b = {.name = 'B', .total = 100};
    tw_coop_task *ta = add(c, &a), *tb = add(c, &b);
    ticks(1);
    cr_assert_eq(tw_coop_task_pause(ta), 0);
    cr_assert_eq(tw_coop_task_pause(ta), 0);
    cr_assert_eq(tw_coop_task_state_of(ta), TW_TASK_PAUSED);
    ticks(2);
    cr_assert_str_eq(trace, "AB|BB|BB");
    cr_assert_eq(tw_coop_task_resume(ta), 0);
    ticks(1);
    cr_assert_str_eq(trace, "AB|BB|BB|BB", "paused twice: one resume is not enough");
    cr_assert_eq(tw_coop_task_resume(ta), 0);
    cr_assert_eq(tw_coop_task_resume(ta), TW_EPAUSED, "NotPaused");
    ticks(1);
    cr_assert_str_eq(trace, "AB|BB|BB|BB|AB");
    /* Pausing every task stops the ticks. */
    tw_coop_task_pause(ta);
    tw_coop_task_pause(tb);
    cr_assert_eq(tw_clock_pending(clk), 0);
    tw_coop_task_resume(tb);
    cr_assert_eq(tw_clock_pending(clk), 1);
    tw_coop_task_unref(ta);
    tw_coop_task_unref(tb);
    coop_done(c);
    cr_assert_eq(a.released + b.released, 2);
}

TW_TEST(coop, a_task_paused_from_its_own_unit_and_resumed)
{
    tw_cooperator *c = coop_new(true);
    struct it a = {.name = 'A', .total = 3, .pause_self_at = 1}, b = {.name = 'B', .total = 9};
    tw_coop_task *ta = add(c, &a), *tb = add(c, &b);
    ticks(2);
    cr_assert_str_eq(trace, "AB|BB");
    tw_coop_task_resume(ta);
    ticks(1);
    cr_assert_str_eq(trace, "AB|BB|AB");
    tw_coop_task_unref(ta);
    tw_coop_task_unref(tb);
    coop_done(c);
}

TW_TEST(coop, stopping_the_cooperator_fails_every_task)
{
    tw_cooperator *c = coop_new(true);
    struct it a = {.name = 'A', .total = 100}, b = {.name = 'B', .total = 100},
              w = {.name = 'W', .total = 100, .defer_at = 1};
    tw_coop_task *ta = add(c, &a), *tb = add(c, &b), *tw = add(c, &w);
    struct outcome oa = {0}, ob = {0}, ow = {0};
    watch(ta, &oa);
    watch(tb, &ob);
    watch(tw, &ow);
    ticks(2);
    tw_coop_task_pause(tb);
    cr_assert(tw_cooperator_running(c));
    tw_cooperator_stop(c);
    cr_assert_not(tw_cooperator_running(c));
    cr_assert_eq(oa.code, TW_ESHUTDOWN, "running task");
    cr_assert_eq(ob.code, TW_ESHUTDOWN, "paused task too");
    cr_assert_eq(ow.code, TW_ESHUTDOWN, "waiting task too");
    cr_assert_eq(tw_cooperator_tasks(c), 0);
    cr_assert_eq(tw_clock_pending(clk), 0);
    tw_cooperator_stop(c); /* again: nothing */
    /* Added while stopped: fails at once. */
    struct it late = {.name = 'L', .total = 2};
    tw_coop_task *tl = add(c, &late);
    struct outcome ol = {0};
    watch(tl, &ol);
    cr_assert_eq(ol.code, TW_ESHUTDOWN);
    cr_assert_eq(tw_coop_task_resume(tb), 0, "resuming a finished task only counts down");
    tw_deferred_callback(w.pending, tw_result_borrowed(NULL));
    /* Started again, it runs new tasks. */
    tw_cooperator_start(c);
    struct it again = {.name = 'G', .total = 2};
    tw_coop_task *tg = add(c, &again);
    ticks(1);
    cr_assert_eq(tw_coop_task_state_of(tg), TW_TASK_DONE);
    tw_deferred_unref(w.pending);
    tw_coop_task_unref(ta);
    tw_coop_task_unref(tb);
    tw_coop_task_unref(tw);
    tw_coop_task_unref(tl);
    tw_coop_task_unref(tg);
    coop_done(c);
    cr_assert_eq(a.released + b.released + w.released + late.released + again.released, 5);
}

TW_TEST(coop, not_started_waits_for_start)
{
    tw_cooperator *c = coop_new(false);
    cr_assert_not(tw_cooperator_running(c));
    struct it a = {.name = 'A', .total = 2};
    tw_coop_task *ta = add(c, &a);
    cr_assert_eq(tw_clock_pending(clk), 0);
    ticks(3);
    cr_assert_eq(a.units, 0);
    tw_cooperator_start(c);
    cr_assert(tw_cooperator_running(c));
    ticks(1);
    cr_assert_eq(a.units, 2);
    tw_coop_task_unref(ta);
    coop_done(c);
}

TW_TEST(coop, coiterate_fires_with_the_arg)
{
    tw_cooperator *c = coop_new(true);
    struct it a = {.name = 'A', .total = 3};
    a.coop = c;
    tw_deferred *d = tw_coiterate(c, step, &a, it_release);
    struct outcome o = {0};
    tw_deferred_add_both(d, keep, &o);
    ticks(2);
    cr_assert_eq(o.value, &a);
    cr_assert_eq(a.released, 1, "released once done: nobody holds the task");
    tw_deferred_unref(d);
    d = tw_coiterate(NULL, step, &a, NULL);
    tw_deferred_add_both(d, keep, &o);
    cr_assert_eq(o.code, TW_EINVAL);
    tw_deferred_unref(d);
    coop_done(c);
}

TW_TEST(coop, reentrancy_from_inside_units)
{
    /* A task stops itself, another drops its own reference, another adds a
     * task: all from inside their units. */
    tw_cooperator *c = coop_new(true);
    per_tick = 10;
    struct it added = {.name = 'N', .total = 2};
    struct it a = {.name = 'A', .total = 9, .stop_self_at = 2},
              b = {.name = 'B', .total = 3, .unref_self_at = 1},
              d = {.name = 'D', .total = 2, .add_task_at = 1, .to_add = &added};
    tw_coop_task *ta = add(c, &a);
    add(c, &b);
    tw_coop_task *td = add(c, &d);
    struct outcome oa = {0};
    watch(ta, &oa);
    ticks(1);
    cr_assert_str_eq(trace, "ABDNABDNB");
    cr_assert_eq(oa.code, TW_ECANCELED);
    cr_assert_eq(b.released, 1, "dropped its reference, then finished: released");
    cr_assert_eq(added.units, 2);
    tw_coop_task_unref(ta);
    tw_coop_task_unref(td);
    coop_done(c);
}

TW_TEST(coop, stopping_the_cooperator_from_a_unit)
{
    tw_cooperator *c = coop_new(true);
    per_tick = 10;
    struct it a = {.name = 'A', .total = 9}, b = {.name = 'B', .total = 9, .stop_coop_at = 2};
    tw_coop_task *ta = add(c, &a), *tb = add(c, &b);
    ticks(3);
    cr_assert_str_eq(trace, "ABAB", "the tick ends at the stop");
    cr_assert_eq(tw_coop_task_state_of(ta), TW_TASK_STOPPED);
    cr_assert_eq(tw_coop_task_state_of(tb), TW_TASK_STOPPED);
    tw_coop_task_unref(ta);
    tw_coop_task_unref(tb);
    coop_done(c);
}

TW_TEST(coop, freeing_the_cooperator_from_a_unit)
{
    tw_cooperator *c = coop_new(true);
    per_tick = 10;
    struct it a = {.name = 'A', .total = 9, .free_coop_at = 2}, b = {.name = 'B', .total = 9};
    tw_coop_task *ta = add(c, &a), *tb = add(c, &b);
    struct outcome ob = {0};
    watch(tb, &ob);
    ticks(3);
    cr_assert_str_eq(trace, "ABA");
    cr_assert_eq(ob.code, TW_ESHUTDOWN);
    cr_assert_eq(tw_clock_pending(clk), 0);
    tw_coop_task_unref(ta);
    tw_coop_task_unref(tb);
    cr_assert_eq(a.released + b.released, 2);
    tw_clock_free(clk);
}

static tw_cooperator *stop_me;

static tw_result stop_coop_cb(tw_result r, void *arg)
{
    tw_cooperator_stop(stop_me);
    return r;
}

TW_TEST(coop, stopping_the_cooperator_from_when_done)
{
    /* Twisted's comment in _completeWith: the finished task must be out of
     * the cooperator before its deferreds fire. */
    tw_cooperator *c = coop_new(true);
    stop_me = c;
    struct it a = {.name = 'A', .total = 1}, b = {.name = 'B', .total = 9};
    tw_coop_task *ta = add(c, &a), *tb = add(c, &b);
    tw_deferred *d = tw_coop_task_when_done(ta);
    tw_deferred_add_callback(d, stop_coop_cb, NULL);
    struct outcome oa = {0}, ob = {0};
    tw_deferred_add_both(d, keep, &oa);
    tw_deferred_unref(d);
    watch(tb, &ob);
    ticks(1);
    cr_assert_eq(oa.value, &a);
    cr_assert_eq(ob.code, TW_ESHUTDOWN);
    cr_assert_eq(b.units, 0, "the tick ended with the stop");
    tw_coop_task_unref(ta);
    tw_coop_task_unref(tb);
    coop_done(c);
}

TW_TEST(coop, bad_arguments)
{
    clk = tw_clock_new_manual();
    tw_cooperator *c = NULL;
    tw_cooperator_options o = {.slice = -1};
    cr_assert_eq(tw_cooperator_new(clk, &o, &c), TW_EINVAL);
    o = (tw_cooperator_options){.tick_delay = NAN};
    cr_assert_eq(tw_cooperator_new(clk, &o, &c), TW_EINVAL);
    cr_assert_eq(tw_cooperator_new(NULL, NULL, &c), TW_EINVAL);
    cr_assert_eq(tw_cooperator_new(clk, NULL, NULL), TW_EINVAL);
    cr_assert_eq(tw_cooperator_new(clk, NULL, &c), 0);
    cr_assert_eq(tw_cooperate(c, NULL, NULL, NULL, NULL), TW_EINVAL);
    cr_assert_eq(tw_cooperate(NULL, step, NULL, NULL, NULL), TW_EINVAL);
    cr_assert_eq(tw_coop_task_pause(NULL), TW_EINVAL);
    cr_assert_eq(tw_coop_task_resume(NULL), TW_EINVAL);
    cr_assert_eq(tw_coop_task_stop(NULL), TW_EINVAL);
    tw_coop_task_unref(NULL);
    tw_cooperator_free(NULL);
    cr_assert_eq(tw_clock_pending(clk), 0);
    coop_done(c);
}

TW_TEST(coop, allocation_failure_is_clean)
{
    for (long n = 0;; n++) {
        tw_cooperator *c = NULL;
        clk = tw_clock_new_manual();
        struct it a = {.name = 'A', .total = 2};
        tw_testing_fail_alloc_after(n);
        int rc = tw_cooperator_new(clk, NULL, &c);
        tw_coop_task *t = NULL;
        if (rc == 0)
            rc = tw_cooperate(c, step, &a, it_release, &t);
        tw_deferred *w = rc == 0 ? tw_coop_task_when_done(t) : NULL;
        tw_deferred *co = w ? tw_coiterate(c, step, &a, NULL) : NULL;
        tw_testing_fail_alloc_off();
        if (co) {
            ticks(1);
            cr_assert(tw_deferred_called(w));
            cr_assert(tw_deferred_called(co));
            tw_deferred_unref(w);
            tw_deferred_unref(co);
            tw_coop_task_unref(t);
            cr_assert_eq(a.released, 1);
            coop_done(c);
            break;
        }
        if (rc < 0) {
            cr_assert_eq(rc, TW_ENOMEM);
            cr_assert_eq(a.released, 0, "arg_release not called");
        }
        struct outcome ow = {0};
        if (w) {
            tw_deferred_add_both(w, keep, &ow);
            tw_deferred_unref(w);
        }
        tw_coop_task_unref(t);
        cr_assert_eq(a.units, 0);
        if (c)
            coop_done(c);
        else
            tw_clock_free(clk);
    }
}

/* ---- The default slice, in real time, on a real reactor */

static size_t tick_units[256];
static size_t ticks_seen;
static double last_time = -1;
static tw_reactor *the_reactor;

static tw_result busy_step(void *arg)
{
    struct it *it = arg;
    double now = tw_clock_seconds(tw_reactor_clock(the_reactor));
    if (now != last_time) {
        last_time = now;
        ticks_seen++;
    }
    tick_units[ticks_seen - 1]++;
    uint64_t end = tw_monotonic_ns() + 2000000; /* 2 ms of work */
    while (tw_monotonic_ns() < end)
        ;
    return ++it->units >= it->total ? tw_iter_done() : tw_iter_more();
}

TW_REACTOR_TEST(coop, the_default_slice_is_about_ten_milliseconds)
{
    the_reactor = r;
    tw_cooperator *c = NULL;
    cr_assert_eq(tw_cooperator_new(tw_reactor_clock(r), NULL, &c), 0);
    struct it a = {.total = 30}, b = {.total = 30};
    tw_deferred *da = tw_coiterate(c, busy_step, &a, NULL);
    tw_deferred *db = tw_coiterate(c, busy_step, &b, NULL);
    tw_result ra = twtest_wait(r, da);
    tw_result rb = twtest_wait(r, db);
    cr_assert_eq(ra.value, &a);
    cr_assert_eq(rb.value, &b);
    cr_assert_geq(ticks_seen, 60 / 5, "at most 5 units of 2 ms fit in a 10 ms slice");
    for (size_t i = 0; i < ticks_seen; i++)
        cr_assert(tick_units[i] >= 1 && tick_units[i] <= 5, "tick %zu ran %zu units", i,
                  tick_units[i]);
    tw_deferred_unref(da);
    tw_deferred_unref(db);
    tw_cooperator_free(c);
}

static tw_result free_coop_cb(tw_result r, void *arg)
{
    tw_cooperator_free(stop_me);
    return r;
}

TW_TEST(coop, freeing_the_cooperator_from_when_done)
{
    tw_cooperator *c = coop_new(true);
    stop_me = c;
    struct it a = {.name = 'A', .total = 1}, b = {.name = 'B', .total = 9};
    tw_coop_task *ta = add(c, &a), *tb = add(c, &b);
    tw_deferred *d = tw_coop_task_when_done(ta);
    tw_deferred_add_callback(d, free_coop_cb, NULL);
    tw_deferred_unref(d);
    struct outcome ob = {0};
    watch(tb, &ob);
    ticks(1);
    cr_assert_eq(ob.code, TW_ESHUTDOWN);
    cr_assert_eq(tw_clock_pending(clk), 0);
    struct outcome late = {0};
    watch(tb, &late);
    cr_assert_eq(late.code, TW_ESHUTDOWN, "a finished task still answers when_done");
    tw_coop_task_unref(ta);
    tw_coop_task_unref(tb);
    cr_assert_eq(a.released + b.released, 2);
    tw_clock_free(clk);
}
