/* Fuzzes a manual clock against a reference model.
 *
 * The input is a sequence of 3-byte operations (op, a, b): schedule a call,
 * cancel / reset / delay an earlier handle (stale ones included), start or
 * stop an intrusive timer, advance, inspect a handle. Each call and timer
 * also carries an action, taken from its operation's bytes, that its callback
 * performs when it runs (the same operations, nested), so callbacks schedule,
 * cancel and re-arm while the clock runs.
 *
 * The model knows every call's and timer's deadline and scheduling order; a
 * callback checks that it is the one the model expects next (due, earliest
 * by (deadline, scheduling order)), so nothing runs early, twice, out of order
 * or after being cancelled. Every return code is predicted. A violated
 * invariant traps. */
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <twine/clock.h>
#include <twine/error.h>

#include "fuzz.h"

#define MAX_CALLS     512
#define TIMERS        8
#define FAR_NS        ((uint64_t)INT64_MAX)
#define ACTION_BUDGET 2000

enum state { PENDING, CALLED, CANCELLED };

struct entity {
    uint64_t due, seq;
    uint8_t action, a, b; /* what the callback does */
};

struct call {
    struct entity e;
    tw_delayed_call handle;
    enum state state;
    bool reused; /* its slot went to a later call: the handle is stale */
};

struct timer {
    struct entity e;
    tw_timer timer;
    bool armed;
};

static tw_clock *clock;
static struct call calls[MAX_CALLS];
static size_t ncalls;
static struct timer timers[TIMERS];
static uint64_t now, seq;
static size_t pending;
static unsigned depth; /* > 0 inside a callback */
static long ran;       /* callbacks run in the current advance */
static int budget;     /* nested actions left */

static void do_op(uint8_t op, uint8_t a, uint8_t b);

/* ---- Delays as the input encodes them. */

/* b -> seconds, with a few bad and huge values; returns the model's ns or
 * -1 for a delay the clock must refuse. */
static double delay_of(uint8_t b, int64_t *ns)
{
    switch (b) {
    case 255:
        *ns = -1;
        return NAN;
    case 254:
        *ns = -1;
        return -1.0;
    case 253:
        *ns = -1;
        return INFINITY;
    case 252:
        *ns = (int64_t)FAR_NS;
        return 1e300;
    default:
        *ns = (int64_t)(b % 64) * 1000000;
        return (double)(b % 64) / 1e3;
    }
}

static uint64_t add_capped(uint64_t t, uint64_t d)
{
    return d >= FAR_NS - t ? FAR_NS : t + d;
}

/* ---- The model's expectations. */

static int expected_code(const struct call *c)
{
    if (c->reused || c->state == CALLED)
        return TW_EALREADYCALLED;
    if (c->state == CANCELLED)
        return TW_EALREADYCANCELLED;
    return 0;
}

static bool earlier(const struct entity *x, const struct entity *y)
{
    return x->due < y->due || (x->due == y->due && x->seq < y->seq);
}

/* The entity that must run next: a pending call (index) or a timer
 * (MAX_CALLS + index); -1 when nothing is due. */
static long next_due(void)
{
    const struct entity *best = NULL;
    long who = -1;
    for (size_t i = 0; i < ncalls; i++) {
        const struct entity *e = &calls[i].e;
        if (calls[i].state == PENDING && e->due <= now && (best == NULL || earlier(e, best))) {
            best = e;
            who = (long)i;
        }
    }
    for (size_t i = 0; i < TIMERS; i++) {
        const struct entity *e = &timers[i].e;
        if (timers[i].armed && e->due <= now && (best == NULL || earlier(e, best))) {
            best = e;
            who = MAX_CALLS + (long)i;
        }
    }
    return who;
}

static void act(const struct entity *e)
{
    if (e->action < 7 && budget > 0) {
        budget--;
        do_op(e->action, e->a, e->b);
    }
}

static void call_ran(void *arg)
{
    size_t i = (size_t)(uintptr_t)arg;
    CHECK(next_due() == (long)i);
    struct call *c = &calls[i];
    c->state = CALLED;
    pending--;
    ran++;
    CHECK(!tw_delayed_call_active(c->handle));
    CHECK(tw_delayed_call_cancel(c->handle) == TW_EALREADYCALLED);
    depth++;
    act(&c->e);
    depth--;
}

static void timer_ran(tw_timer *t)
{
    size_t i = (size_t)((struct timer *)((char *)t - offsetof(struct timer, timer)) - timers);
    CHECK(i < TIMERS);
    CHECK(next_due() == MAX_CALLS + (long)i);
    CHECK(!tw_timer_active(t));
    timers[i].armed = false;
    pending--;
    ran++;
    depth++;
    act(&timers[i].e);
    depth--;
}

/* ---- Operations */

static struct call *pick(uint8_t a)
{
    if (ncalls == 0)
        return NULL;
    return ncalls <= 256 ? &calls[a % ncalls] : &calls[ncalls - 1 - a]; /* recent ones */
}

static void op_call_later(uint8_t a, uint8_t b)
{
    if (ncalls == MAX_CALLS)
        return;
    int64_t ns;
    double delay = delay_of(a, &ns);
    struct call *c = &calls[ncalls];
    tw_delayed_call h = {0};
    int rc = tw_call_later(clock, delay, call_ran, (void *)(uintptr_t)ncalls, &h);
    if (ns < 0) {
        CHECK(rc == TW_EINVAL && h.slot == NULL);
        return;
    }
    CHECK(rc == 0 && h.slot != NULL);
    for (size_t i = 0; i < ncalls; i++) {
        if (calls[i].handle.slot == h.slot) {
            CHECK(calls[i].state != PENDING); /* a live slot is never reused */
            calls[i].reused = true;
        }
    }
    *c = (struct call){
        .e = {.due = add_capped(now, (uint64_t)ns),
              .seq = seq++,
              .action = b & 7,
              .a = (uint8_t)(b >> 3),
              .b = a},
        .handle = h,
        .state = PENDING,
    };
    ncalls++;
    pending++;
}

static void op_cancel(uint8_t a)
{
    struct call *c = pick(a);
    if (c == NULL) {
        CHECK(tw_delayed_call_cancel((tw_delayed_call){0}) == TW_EALREADYCALLED);
        return;
    }
    int want = expected_code(c);
    CHECK(tw_delayed_call_cancel(c->handle) == want);
    if (want == 0) {
        c->state = CANCELLED;
        pending--;
    }
}

static void op_reset(uint8_t a, uint8_t b)
{
    struct call *c = pick(a);
    if (c == NULL)
        return;
    int64_t ns;
    double delay = delay_of(b, &ns);
    int want = expected_code(c);
    if (want == 0 && ns < 0)
        want = TW_EINVAL;
    CHECK(tw_delayed_call_reset(c->handle, delay) == want);
    if (want == 0) {
        c->e.due = add_capped(now, (uint64_t)ns);
        c->e.seq = seq++;
    }
}

static void op_delay(uint8_t a, uint8_t b)
{
    struct call *c = pick(a);
    if (c == NULL)
        return;
    int8_t ms = (int8_t)b;
    double seconds = ms == INT8_MIN ? NAN : (double)ms / 1e3;
    int want = expected_code(c);
    if (want == 0 && ms == INT8_MIN)
        want = TW_EINVAL;
    CHECK(tw_delayed_call_delay(c->handle, seconds) == want);
    if (want != 0)
        return;
    uint64_t due = c->e.due;
    if (ms >= 0) {
        due = add_capped(due, (uint64_t)ms * 1000000);
        if (due < now)
            due = now;
    } else {
        uint64_t mag = (uint64_t)(-(int)ms) * 1000000;
        if (due <= now)
            return; /* already due: left as it is */
        due = due - now > mag ? due - mag : now;
    }
    c->e.due = due;
    c->e.seq = seq++;
}

static void op_timer_start(uint8_t a, uint8_t b)
{
    struct timer *t = &timers[a % TIMERS];
    int64_t ns;
    double delay = delay_of(b, &ns);
    int rc = tw_timer_start(&t->timer, delay);
    if (ns < 0) {
        CHECK(rc == TW_EINVAL);
        CHECK(tw_timer_active(&t->timer) == t->armed);
        return;
    }
    CHECK(rc == 0 && tw_timer_active(&t->timer));
    if (!t->armed)
        pending++;
    t->armed = true;
    t->e = (struct entity){.due = add_capped(now, (uint64_t)ns),
                           .seq = seq++,
                           .action = (uint8_t)((a >> 3) & 7),
                           .a = b,
                           .b = (uint8_t)(a >> 6)};
}

static void op_timer_stop(uint8_t a)
{
    struct timer *t = &timers[a % TIMERS];
    tw_timer_stop(&t->timer);
    CHECK(!tw_timer_active(&t->timer));
    if (t->armed)
        pending--;
    t->armed = false;
}

static void op_advance(uint8_t b)
{
    double seconds = b == 255 ? NAN : (double)b / 1e3;
    if (depth > 0) {
        CHECK(tw_clock_advance(clock, seconds) == TW_EBUSY);
        return;
    }
    if (b == 255) {
        CHECK(tw_clock_advance(clock, seconds) == TW_EINVAL);
        return;
    }
    now = add_capped(now, (uint64_t)b * 1000000);
    ran = 0;
    budget = ACTION_BUDGET;
    int rc = tw_clock_advance(clock, seconds);
    CHECK(rc >= 0 && rc == ran);
    CHECK(next_due() == -1); /* everything due has run */
    CHECK(tw_clock_seconds(clock) == (double)now / 1e9);
}

static void op_inspect(uint8_t a)
{
    struct call *c = pick(a);
    tw_delayed_call h = c ? c->handle : (tw_delayed_call){0};
    bool active = c != NULL && expected_code(c) == 0;
    CHECK(tw_delayed_call_active(h) == active);
    double t = tw_delayed_call_time(h);
    if (active)
        CHECK(t == (double)c->e.due / 1e9);
    else
        CHECK(isnan(t));
}

static void do_op(uint8_t op, uint8_t a, uint8_t b)
{
    switch (op % 8) {
    case 0:
    case 7:
        op_call_later(a, b);
        break;
    case 1:
        op_cancel(a);
        break;
    case 2:
        op_reset(a, b);
        break;
    case 3:
        op_delay(a, b);
        break;
    case 4:
        op_timer_start(a, b);
        break;
    case 5:
        op_timer_stop(a);
        break;
    case 6:
        if (depth > 0 || (a & 1))
            op_advance(b);
        else
            op_inspect(a >> 1);
        break;
    }
    CHECK(tw_clock_pending(clock) == pending);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    clock = tw_clock_new_manual();
    if (clock == NULL)
        return 0;
    memset(calls, 0, sizeof calls);
    ncalls = 0;
    now = seq = 0;
    pending = 0;
    depth = 0;
    budget = ACTION_BUDGET;
    for (size_t i = 0; i < TIMERS; i++) {
        timers[i].armed = false;
        tw_timer_init(&timers[i].timer, clock, timer_ran);
    }
    for (size_t i = 0; i + 3 <= size; i += 3)
        do_op(data[i], data[i + 1], data[i + 2]);
    /* Run out the clock: everything left runs once, in order. */
    ran = 0;
    budget = 0;
    now = FAR_NS;
    int rc = tw_clock_advance(clock, 1e300);
    CHECK(rc == ran && next_due() == -1);
    CHECK(tw_clock_pending(clock) == 0 && pending == 0);
    tw_clock_free(clock);
    clock = NULL;
    return 0;
}
