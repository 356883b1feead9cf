/* System event triggers: phase order, waiting on before-phase deferreds, the
 * shutdown timeout, removal. */
#include "twtest.h"

#include <stdlib.h>
#include <string.h>

struct seq {
    tw_reactor *r;
    char names[32][24];
    int n;
};

static void note(struct seq *s, const char *name)
{
    if (s->n < 32)
        snprintf(s->names[s->n], sizeof s->names[0], "%s", name);
    s->n++;
}

static void assert_seq(const struct seq *s, const char *const *want, int n)
{
    cr_assert_eq(s->n, n, "%d triggers fired, expected %d", s->n, n);
    for (int i = 0; i < n; i++)
        cr_assert_str_eq(s->names[i], want[i], "position %d", i);
}

struct trig {
    struct seq *seq;
    const char *name;
    tw_reactor *r;
};

static tw_deferred *noting(void *arg)
{
    struct trig *t = arg;
    note(t->seq, t->name);
    return NULL;
}

static void stop_reactor(void *arg)
{
    tw_reactor_stop(arg);
}

static void add(tw_reactor *r, tw_trigger_phase p, tw_trigger_event e, struct trig *t)
{
    cr_assert_eq(tw_reactor_add_trigger(r, p, e, noting, t, NULL), 0);
}

TW_REACTOR_TEST(triggers, phase_order)
{
    struct seq s = {.r = r};
    /* Added out of order, on purpose. */
    struct trig t[] = {
        {&s, "after-startup-1", r}, {&s, "during-startup", r},    {&s, "before-startup", r},
        {&s, "after-shutdown", r},  {&s, "during-shutdown", r},   {&s, "before-shutdown", r},
        {&s, "after-startup-2", r}, {&s, "before-shutdown-2", r},
    };
    add(r, TW_PHASE_AFTER, TW_EVENT_STARTUP, &t[0]);
    add(r, TW_PHASE_DURING, TW_EVENT_STARTUP, &t[1]);
    add(r, TW_PHASE_BEFORE, TW_EVENT_STARTUP, &t[2]);
    add(r, TW_PHASE_AFTER, TW_EVENT_SHUTDOWN, &t[3]);
    add(r, TW_PHASE_DURING, TW_EVENT_SHUTDOWN, &t[4]);
    add(r, TW_PHASE_BEFORE, TW_EVENT_SHUTDOWN, &t[5]);
    add(r, TW_PHASE_AFTER, TW_EVENT_STARTUP, &t[6]);
    add(r, TW_PHASE_BEFORE, TW_EVENT_SHUTDOWN, &t[7]);
    tw_reactor_state st;
    tw_reactor_get_state(r, &st);
    cr_assert_eq(st.triggers, 8);

    tw_call_later(tw_reactor_clock(r), 0, stop_reactor, r, NULL);
    cr_assert_eq(tw_reactor_run(r), 0);
    const char *want[] = {"before-startup",  "during-startup",  "after-startup-1",
                          "after-startup-2", "before-shutdown", "before-shutdown-2",
                          "during-shutdown", "after-shutdown"};
    assert_seq(&s, want, 8);
    tw_reactor_get_state(r, &st);
    cr_assert_eq(st.triggers, 0, "firing consumes triggers");
}

/* A before trigger added while the before phase fires runs in that phase. */
static tw_deferred *adds_another(void *arg)
{
    struct trig *t = arg;
    note(t->seq, t->name);
    static struct trig late;
    late = (struct trig){t->seq, "late-before", t->r};
    tw_reactor_add_trigger(t->r, TW_PHASE_BEFORE, TW_EVENT_SHUTDOWN, noting, &late, NULL);
    return NULL;
}

TW_REACTOR_TEST(triggers, added_while_firing)
{
    struct seq s = {.r = r};
    struct trig a = {&s, "before", r}, d = {&s, "during", r};
    tw_reactor_add_trigger(r, TW_PHASE_BEFORE, TW_EVENT_SHUTDOWN, adds_another, &a, NULL);
    add(r, TW_PHASE_DURING, TW_EVENT_SHUTDOWN, &d);
    tw_call_later(tw_reactor_clock(r), 0, stop_reactor, r, NULL);
    cr_assert_eq(tw_reactor_run(r), 0);
    const char *want[] = {"before", "late-before", "during"};
    assert_seq(&s, want, 3);
}

/* ---- Waiting for before-phase deferreds */

struct waited {
    struct seq *seq;
    tw_reactor *r;
    tw_deferred *d;
    double delay;
    uint64_t fired_at;
    int cancels;
};

static void fire_waited(void *arg)
{
    struct waited *w = arg;
    note(w->seq, "fired");
    w->fired_at = tw_monotonic_ns();
    tw_deferred_callback(w->d, tw_result_from_int(7));
    tw_deferred_unref(w->d);
    w->d = NULL;
}

static tw_deferred *returns_deferred(void *arg)
{
    struct waited *w = arg;
    note(w->seq, "before");
    w->d = tw_deferred_new(NULL, NULL);
    if (!w->d) /* out of memory */
        return NULL;
    tw_call_later(tw_reactor_clock(w->r), w->delay, fire_waited, w, NULL);
    return tw_deferred_ref(w->d);
}

TW_REACTOR_TEST(triggers, before_shutdown_deferred_is_waited_for)
{
    struct seq s = {.r = r};
    struct waited w = {.seq = &s, .r = r, .delay = 0.05};
    struct trig d = {&s, "during", r}, a = {&s, "after", r};
    tw_reactor_add_trigger(r, TW_PHASE_BEFORE, TW_EVENT_SHUTDOWN, returns_deferred, &w, NULL);
    add(r, TW_PHASE_DURING, TW_EVENT_SHUTDOWN, &d);
    add(r, TW_PHASE_AFTER, TW_EVENT_SHUTDOWN, &a);
    tw_call_later(tw_reactor_clock(r), 0, stop_reactor, r, NULL);
    uint64_t t0 = tw_monotonic_ns();
    cr_assert_eq(tw_reactor_run(r), 0);
    const char *want[] = {"before", "fired", "during", "after"};
    assert_seq(&s, want, 4);
    cr_assert_geq(w.fired_at - t0, 50000000u);
}

TW_REACTOR_TEST(triggers, before_startup_deferred_is_waited_for)
{
    struct seq s = {.r = r};
    struct waited w = {.seq = &s, .r = r, .delay = 0.02};
    struct trig d = {&s, "during", r}, a = {&s, "after", r};
    tw_reactor_add_trigger(r, TW_PHASE_BEFORE, TW_EVENT_STARTUP, returns_deferred, &w, NULL);
    add(r, TW_PHASE_DURING, TW_EVENT_STARTUP, &d);
    add(r, TW_PHASE_AFTER, TW_EVENT_STARTUP, &a);
    tw_reactor_call_when_running(r, stop_reactor, r);
    cr_assert_eq(tw_reactor_run(r), 0);
    const char *want[] = {"before", "fired", "during", "after"};
    assert_seq(&s, want, 4);
}

static tw_deferred *returns_fired(void *arg)
{
    note(arg, "fired-already");
    return tw_succeed(tw_result_from_int(1));
}

TW_REACTOR_TEST(triggers, already_fired_deferred)
{
    struct seq s = {.r = r};
    struct trig d = {&s, "during", r};
    tw_reactor_add_trigger(r, TW_PHASE_BEFORE, TW_EVENT_SHUTDOWN, returns_fired, &s, NULL);
    add(r, TW_PHASE_DURING, TW_EVENT_SHUTDOWN, &d);
    tw_call_later(tw_reactor_clock(r), 0, stop_reactor, r, NULL);
    cr_assert_eq(tw_reactor_run(r), 0);
    const char *want[] = {"fired-already", "during"};
    assert_seq(&s, want, 2);
}

static tw_deferred *returns_failure(void *arg)
{
    note(arg, "failing");
    return tw_fail(tw_failure_new(TW_EUSER, NULL, "trigger went wrong"));
}

TW_REACTOR_TEST(triggers, failed_deferreds_are_logged_not_fatal)
{
    struct seq s = {.r = r};
    struct trig d = {&s, "during", r};
    tw_testing_log_capture_start();
    tw_reactor_add_trigger(r, TW_PHASE_BEFORE, TW_EVENT_SHUTDOWN, returns_failure, &s, NULL);
    tw_reactor_add_trigger(r, TW_PHASE_DURING, TW_EVENT_SHUTDOWN, returns_failure, &s, NULL);
    tw_reactor_add_trigger(r, TW_PHASE_AFTER, TW_EVENT_STARTUP, returns_failure, &s, NULL);
    add(r, TW_PHASE_AFTER, TW_EVENT_SHUTDOWN, &d);
    tw_call_later(tw_reactor_clock(r), 0, stop_reactor, r, NULL);
    cr_assert_eq(tw_reactor_run(r), 0);
    size_t logged = tw_testing_log_count("trigger went wrong");
    tw_testing_log_capture_stop();
    const char *want[] = {"failing", "failing", "failing", "during"};
    assert_seq(&s, want, 4);
    cr_assert_eq(logged, 3);
    /* The teardown's check proves none was left "unhandled". */
}

/* ---- The shutdown timeout */

static void count_cancel(tw_deferred *d, void *arg)
{
    (void)d;
    ((struct waited *)arg)->cancels++;
}

static tw_deferred *never_fires(void *arg)
{
    struct waited *w = arg;
    note(w->seq, "before");
    w->d = tw_deferred_new(count_cancel, w);
    return tw_deferred_ref(w->d);
}

TW_TEST(triggers, shutdown_timeout_bounds_the_wait)
{
    tw_reactor *r;
    tw_reactor_options opts = {.shutdown_timeout = 0.1};
    cr_assert_eq(tw_reactor_new(&r, &opts), 0);
    struct seq s = {.r = r};
    struct waited w = {.seq = &s, .r = r};
    struct trig d = {&s, "during", r};
    tw_reactor_add_trigger(r, TW_PHASE_BEFORE, TW_EVENT_SHUTDOWN, never_fires, &w, NULL);
    add(r, TW_PHASE_DURING, TW_EVENT_SHUTDOWN, &d);
    tw_call_later(tw_reactor_clock(r), 0, stop_reactor, r, NULL);

    tw_testing_log_capture_start();
    uint64_t t0 = tw_monotonic_ns();
    cr_assert_eq(tw_reactor_run(r), 0);
    double took = (double)(tw_monotonic_ns() - t0) / 1e9;
    size_t logged = tw_testing_log_count("before-shutdown");
    tw_testing_log_capture_stop();

    const char *want[] = {"before", "during"};
    assert_seq(&s, want, 2);
    cr_assert_geq(took, 0.1, "took %f", took);
    cr_assert_lt(took, 2.0, "took %f", took);
    cr_assert_eq(w.cancels, 1);
    cr_assert(tw_deferred_called(w.d), "cancelled deferred has fired (ECANCELED)");
    cr_assert_eq(logged, 1);
    tw_deferred_unref(w.d); /* its ECANCELED was consumed by the reactor */
    tw_reactor_state st;
    tw_reactor_get_state(r, &st);
    cr_assert_eq(st.delayed_calls, 0, "the timeout timer is gone");
    cr_assert_eq(tw_reactor_free(r), 0);
}

TW_TEST(triggers, shutdown_timeout_default_is_not_reached)
{
    /* A deferred that fires in time: no timeout line, no cancellation. */
    tw_reactor *r;
    tw_reactor_options opts = {.shutdown_timeout = 5};
    cr_assert_eq(tw_reactor_new(&r, &opts), 0);
    struct seq s = {.r = r};
    struct waited w = {.seq = &s, .r = r, .delay = 0.01};
    tw_reactor_add_trigger(r, TW_PHASE_BEFORE, TW_EVENT_SHUTDOWN, returns_deferred, &w, NULL);
    tw_call_later(tw_reactor_clock(r), 0, stop_reactor, r, NULL);
    tw_testing_log_capture_start();
    cr_assert_eq(tw_reactor_run(r), 0);
    size_t logged = tw_testing_log_count("before-shutdown");
    tw_testing_log_capture_stop();
    cr_assert_eq(logged, 0);
    cr_assert_eq(s.n, 2);
    tw_reactor_state st;
    tw_reactor_get_state(r, &st);
    cr_assert_eq(st.delayed_calls, 0, "the timeout timer was cancelled");
    cr_assert_eq(tw_reactor_free(r), 0);
}

/* ---- Removal */

static tw_trigger_id to_remove;
static tw_deferred *removes_next(void *arg)
{
    struct trig *t = arg;
    note(t->seq, t->name);
    cr_assert_eq(tw_reactor_remove_trigger(t->r, to_remove), 0);
    return NULL;
}

TW_REACTOR_TEST(triggers, remove_trigger)
{
    struct seq s = {.r = r};
    struct trig a = {&s, "a", r}, b = {&s, "b", r}, c = {&s, "c", r}, d = {&s, "d", r};
    tw_trigger_id ida, idb, idc;
    cr_assert_eq(tw_reactor_add_trigger(r, TW_PHASE_DURING, TW_EVENT_SHUTDOWN, noting, &a, &ida),
                 0);
    cr_assert_eq(
        tw_reactor_add_trigger(r, TW_PHASE_DURING, TW_EVENT_SHUTDOWN, removes_next, &b, &idb), 0);
    cr_assert_eq(tw_reactor_add_trigger(r, TW_PHASE_DURING, TW_EVENT_SHUTDOWN, noting, &c, &idc),
                 0);
    cr_assert_eq(tw_reactor_add_trigger(r, TW_PHASE_AFTER, TW_EVENT_SHUTDOWN, noting, &d, NULL), 0);
    cr_assert_neq(ida, idb);
    to_remove = idc; /* b removes c before c fires */
    cr_assert_eq(tw_reactor_remove_trigger(r, ida), 0);
    cr_assert_eq(tw_reactor_remove_trigger(r, ida), TW_ENOENT);
    cr_assert_eq(tw_reactor_remove_trigger(r, 0), TW_ENOENT);
    cr_assert_eq(tw_reactor_remove_trigger(r, 999999), TW_ENOENT);

    tw_call_later(tw_reactor_clock(r), 0, stop_reactor, r, NULL);
    cr_assert_eq(tw_reactor_run(r), 0);
    const char *want[] = {"b", "d"};
    assert_seq(&s, want, 2);
    cr_assert_eq(tw_reactor_remove_trigger(r, idb), TW_ENOENT, "fired triggers are gone");
}

TW_REACTOR_TEST(triggers, bad_arguments)
{
    struct seq s = {.r = r};
    cr_assert_eq(tw_reactor_add_trigger(r, 7, TW_EVENT_STARTUP, noting, &s, NULL), TW_EINVAL);
    cr_assert_eq(tw_reactor_add_trigger(r, TW_PHASE_BEFORE, 9, noting, &s, NULL), TW_EINVAL);
    cr_assert_eq(tw_reactor_add_trigger(r, TW_PHASE_BEFORE, TW_EVENT_STARTUP, NULL, &s, NULL),
                 TW_EINVAL);
    tw_reactor_state st;
    tw_reactor_get_state(r, &st);
    cr_assert_eq(st.triggers, 0);
}

TW_REACTOR_TEST(triggers, add_out_of_memory)
{
    struct seq s = {.r = r};
    tw_trigger_id id = 42;
    tw_testing_fail_alloc_after(0);
    int rc = tw_reactor_add_trigger(r, TW_PHASE_BEFORE, TW_EVENT_STARTUP, noting, &s, &id);
    tw_testing_fail_alloc_off();
    cr_assert_eq(rc, TW_ENOMEM);
    cr_assert_eq(id, 42, "out untouched on error");
    tw_reactor_state st;
    tw_reactor_get_state(r, &st);
    cr_assert_eq(st.triggers, 0);
}

/* Out of memory while waiting: each allocation the firing makes may fail; the
 * event must still complete and leak nothing. */
TW_TEST(triggers, shutdown_out_of_memory)
{
    for (long n = 0; n < 64; n++) {
        tw_reactor *r;
        tw_reactor_options opts = {.shutdown_timeout = 0.02};
        cr_assert_eq(tw_reactor_new(&r, &opts), 0);
        struct seq s = {.r = r};
        struct waited w = {.seq = &s, .r = r, .delay = 0};
        tw_reactor_add_trigger(r, TW_PHASE_BEFORE, TW_EVENT_SHUTDOWN, returns_fired, &s, NULL);
        tw_reactor_add_trigger(r, TW_PHASE_BEFORE, TW_EVENT_SHUTDOWN, returns_deferred, &w, NULL);
        tw_call_later(tw_reactor_clock(r), 0, stop_reactor, r, NULL);
        tw_testing_log_capture_start();
        tw_testing_fail_alloc_after(n);
        int rc = tw_reactor_run(r);
        tw_testing_fail_alloc_off();
        tw_testing_log_capture_stop();
        cr_assert_eq(rc, 0);
        if (w.d) { /* its timer could not be scheduled */
            tw_deferred_callback(w.d, tw_result_from_int(0));
            tw_deferred_unref(w.d);
        }
        cr_assert_eq(tw_reactor_free(r), 0);
    }
}
