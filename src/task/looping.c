/* LoopingCall (with withCount's count always given).
 *
 * Time is kept in the clock's nanoseconds: call n is due at start_ns + n *
 * interval_ns, computed afresh each time, so no error accumulates however
 * many calls there are (Twisted works in float seconds and guards against
 * the drift). The clock's time is read as seconds and turned back into
 * nanoseconds, which is exact for a manual clock and within a few
 * nanoseconds for a reactor's after months of uptime; `target`, the index
 * the timer was armed for, keeps such a rounding from ever counting a call
 * twice or giving a count of 0.
 *
 * A run (start until the start deferred fires) is in one of three places:
 * the timer armed, the function running (in_call), or a deferred the function
 * returned pending (waiting). stop only acts on the first; the other two end
 * in call_finished, which reschedules or fires the start deferred. */
#include <twine/alloc.h>
#include <twine/error.h>
#include <twine/failure.h>
#include <twine/log.h>
#include <twine/task.h>

#include <math.h>
#include <stddef.h>

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* Intervals are capped here (146 years) so index arithmetic cannot wrap. */
#define MAX_INTERVAL_NS (UINT64_C(1) << 62)

struct tw_looping_call {
    tw_clock *clock;
    tw_looping_fn fn;
    void *arg;
    tw_timer timer;
    tw_deferred *d;       /* the start deferred (our reference) until it fires */
    tw_deferred *waiting; /* the deferred of the last call until it fires; our pair holds us */
    double interval;
    uint64_t interval_ns; /* 0: as fast as possible */
    uint64_t start_ns;
    int64_t last;   /* index of the last call: -1 before the first with `now` */
    int64_t target; /* index the timer is armed for */
    unsigned refs;  /* the user's, a call in progress, the pair on `waiting` */
    bool running, in_call, freed;
};

static void lc_unref(tw_looping_call *lc)
{
    if (--lc->refs > 0)
        return;
    tw_timer_stop(&lc->timer);
    tw_free(lc);
}

static uint64_t now_ns(const tw_looping_call *lc)
{
    double s = tw_clock_seconds(lc->clock);
    return s > 0 ? (uint64_t)llround(s * 1e9) : 0;
}

static int64_t index_at(const tw_looping_call *lc, uint64_t t)
{
    return t <= lc->start_ns ? 0 : (int64_t)((t - lc->start_ns) / lc->interval_ns);
}

/* _scheduleFrom: arms the timer for the first aligned time after `when`
 * (never an index already called). */
static int schedule_from(tw_looping_call *lc, uint64_t when)
{
    uint64_t delay_ns = 0;
    int64_t idx = lc->last + 1;
    if (lc->interval_ns) {
        int64_t at = index_at(lc, when) + 1;
        if (at > idx)
            idx = at;
        uint64_t due = lc->start_ns + (uint64_t)idx * lc->interval_ns;
        delay_ns = due > when ? due - when : 0;
    }
    lc->target = idx;
    return tw_timer_start(&lc->timer, (double)delay_ns / 1e9);
}

/* The start deferred fires (or, if it was cancelled, the result goes). */
static void fire_start(tw_looping_call *lc, tw_result r)
{
    tw_deferred *d = lc->d;
    lc->d = NULL;
    if (!d) {
        tw_result_release(&r);
        return;
    }
    tw_deferred_callback(d, r);
    tw_deferred_unref(d);
}

static tw_result stopped_value(tw_looping_call *lc)
{
    return tw_result_borrowed(lc->freed ? NULL : lc);
}

/* A call is over with result r (cb and eb of LoopingCall.__call__). */
static void call_finished(tw_looping_call *lc, tw_result r)
{
    if (r.failure) {
        lc->running = false;
        fire_start(lc, r);
        return;
    }
    tw_result_release(&r);
    if (!lc->running) {
        fire_start(lc, stopped_value(lc));
        return;
    }
    int rc = schedule_from(lc, now_ns(lc));
    if (rc < 0) {
        lc->running = false;
        fire_start(lc, tw_result_fail(tw_failure_new(
                           rc, NULL, "looping call: cannot schedule the next call")));
    }
}

static tw_result call_done(tw_result r, void *arg)
{
    tw_looping_call *lc = arg;
    lc->waiting = NULL;
    call_finished(lc, r);
    return tw_result_borrowed(NULL);
}

/* The pair on the function's deferred is done with: if it never ran, the
 * deferred was released unfired, and the loop would wait forever. */
static void call_pair_release(void *arg)
{
    tw_looping_call *lc = arg;
    if (lc->waiting) {
        lc->waiting = NULL;
        call_finished(lc, tw_result_fail(tw_failure_new(
                              TW_ECANCELED, NULL,
                              "the deferred returned by the looping call's function was "
                              "released without firing")));
    }
    lc_unref(lc);
}

static void do_call(tw_looping_call *lc, int64_t idx)
{
    uint64_t count = lc->interval_ns ? (uint64_t)(idx - lc->last) : 1;
    lc->last = idx;
    lc->refs++;
    lc->in_call = true;
    tw_result r = lc->fn(lc, count, lc->arg);
    lc->in_call = false;
    if (tw_result_is_deferred(r)) {
        lc->refs++;
        lc->waiting = r.value;
        int rc = tw_deferred_add_callbacks(r.value, call_done, call_done, lc, call_pair_release);
        if (rc < 0) {
            lc->refs--;
            lc->waiting = NULL;
            tw_result_release(&r);
            call_finished(lc,
                          tw_result_fail(tw_failure_new(
                              rc, NULL, "looping call: cannot wait for the function's deferred")));
        } else {
            tw_result_release(&r); /* its chain holds us now */
        }
    } else {
        call_finished(lc, r);
    }
    lc_unref(lc);
}

static void timer_fired(tw_timer *timer)
{
    tw_looping_call *lc = container_of(timer, tw_looping_call, timer);
    int64_t idx = lc->target;
    if (lc->interval_ns) {
        int64_t at = index_at(lc, now_ns(lc));
        if (at > idx)
            idx = at;
    }
    do_call(lc, idx);
}

/* Cancelling the start deferred stops everything; not firing d makes it fail
 * with TW_ECANCELED. */
static void start_cancel(tw_deferred *d, void *arg)
{
    tw_looping_call *lc = arg;
    lc->refs++;
    lc->d = NULL;
    tw_deferred_unref(d); /* ours; the cancel holds its own */
    lc->running = false;
    tw_timer_stop(&lc->timer);
    if (lc->waiting)
        tw_deferred_cancel(lc->waiting);
    lc_unref(lc);
}

int tw_looping_call_new(tw_clock *clock, tw_looping_fn fn, void *arg, tw_looping_call **out)
{
    if (!clock || !fn || !out)
        return TW_EINVAL;
    tw_looping_call *lc = tw_calloc(1, sizeof *lc);
    if (!lc)
        return TW_ENOMEM;
    lc->clock = clock;
    lc->fn = fn;
    lc->arg = arg;
    lc->refs = 1;
    tw_timer_init(&lc->timer, clock, timer_fired);
    *out = lc;
    return 0;
}

void tw_looping_call_free(tw_looping_call *lc)
{
    if (!lc || lc->freed)
        return;
    lc->freed = true;
    if (lc->running)
        tw_looping_call_stop(lc);
    lc_unref(lc);
}

int tw_looping_call_start(tw_looping_call *lc, double interval, bool now, tw_deferred **out)
{
    if (!lc || lc->freed || !(interval >= 0) || isinf(interval))
        return TW_EINVAL;
    if (lc->running || lc->d || lc->waiting || lc->in_call)
        return TW_EBUSY;
    tw_deferred *d = tw_deferred_new(start_cancel, lc);
    if (!d)
        return TW_ENOMEM;
    uint64_t ins = 0;
    if (interval > 0) {
        double ns = interval * 1e9 + 0.5;
        ins = ns >= (double)MAX_INTERVAL_NS ? MAX_INTERVAL_NS : (uint64_t)ns;
        if (ins == 0)
            ins = 1;
    }
    lc->interval = interval;
    lc->interval_ns = ins;
    lc->start_ns = now_ns(lc);
    lc->last = now ? -1 : 0;
    if (!now) {
        int rc = schedule_from(lc, lc->start_ns);
        if (rc < 0) {
            tw_deferred_unref(d);
            return rc;
        }
    }
    lc->d = d;
    lc->running = true;
    if (out)
        *out = tw_deferred_ref(d);
    if (now)
        do_call(lc, 0); /* lc may be gone after this */
    return 0;
}

int tw_looping_call_stop(tw_looping_call *lc)
{
    if (!lc || !lc->running)
        return TW_EINVAL;
    lc->running = false;
    if (tw_timer_active(&lc->timer)) {
        tw_timer_stop(&lc->timer);
        lc->refs++; /* the start deferred's callbacks may free it */
        fire_start(lc, stopped_value(lc));
        lc_unref(lc);
    }
    return 0;
}

int tw_looping_call_reset(tw_looping_call *lc)
{
    if (!lc || !lc->running)
        return TW_EINVAL;
    if (tw_timer_active(&lc->timer)) {
        lc->start_ns = now_ns(lc);
        lc->last = 0;
        schedule_from(lc, lc->start_ns); /* re-arming an armed timer cannot fail */
    }
    return 0;
}

bool tw_looping_call_running(const tw_looping_call *lc)
{
    return lc && lc->running;
}

double tw_looping_call_interval(const tw_looping_call *lc)
{
    return lc ? lc->interval : 0;
}
