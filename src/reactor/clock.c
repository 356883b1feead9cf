/* Timers, delayed calls and manual clocks.
 *
 * Every armed timer (intrusive tw_timer, or the one embedded in a delayed
 * call's slot) sits in one binary min-heap: an array of tw_timer *, each timer
 * knowing its index, ordered by (heap_key_ns, heap_seq). Re-arming to a later
 * deadline, the idle-timeout pattern, only records the new (due_ns, seq) and
 * leaves the heap alone; the heap entry is then an under-estimate, and when it
 * reaches the top it is re-keyed and sunk instead of run. So the top is always
 * checked "fresh" (heap_seq == seq) before anything trusts it. Because a
 * re-arm always takes a new seq, heap (key, seq) <= real (due, seq) for every
 * timer, which is what makes a fresh top the true earliest.
 *
 * Delayed calls live in slots the clock owns, carved from chunks that are
 * only given back when the clock is destroyed; a handle {slot, id} can
 * therefore always be checked, and ids are never reused within a clock. */
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <twine/alloc.h>
#include <twine/clock.h>
#include <twine/error.h>
#include <twine/log.h>

#include "reactor/clock-internal.h"

#define LOG_NS  "twine.clock"

#define UNARMED UINT32_MAX
/* Largest heap; UNARMED must stay out of range. */
#define HEAP_MAX   (UINT32_MAX - 1u)
#define HEAP_FIRST 64u
/* Every deadline is capped here (about 292 years) so that adding a delay to
 * the time never overflows and the timeout fits an int64_t. */
#define FAR_NS      ((uint64_t)INT64_MAX)

#define CHUNK_FIRST 64u
#define CHUNK_MAX   16384u

enum slot_state { SLOT_PENDING, SLOT_CALLED, SLOT_CANCELLED };

struct tw__delayed {
    tw_timer timer; /* first: the slot is found from its timer */
    tw_call_fn fn;
    void *arg;
    uint64_t id; /* 0 until first used; then unique within the clock */
    struct tw__delayed *next_free;
    unsigned char state;
};

struct chunk {
    struct chunk *next;
    size_t count;
    struct tw__delayed slots[];
};

struct tw_clock {
    uint64_t now_ns;
    tw_timer **heap;
    uint32_t len, cap;
    uint64_t seq;     /* next scheduling sequence number */
    uint64_t next_id; /* next delayed-call id */

    /* Free slots, oldest released first, so a released slot keeps answering
     * its handle's exact code for as long as possible. */
    struct tw__delayed *free_head, *free_tail;
    struct chunk *chunks;
    size_t next_chunk;

    unsigned running; /* > 0 while one of its callbacks runs */
    bool manual;
    bool free_asked; /* freed from inside a callback: free when it returns */
};

/* ---- Time conversions */

uint64_t tw_monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Seconds to nanoseconds, rounded to nearest, capped at FAR_NS. Rejects NaN,
 * negative and infinite amounts. */
static int seconds_to_ns(double seconds, uint64_t *out)
{
    if (!(seconds >= 0) || isinf(seconds))
        return TW_EINVAL;
    double ns = seconds * 1e9 + 0.5;
    *out = ns >= 0x1p63 ? FAR_NS : (uint64_t)ns;
    if (*out > FAR_NS)
        *out = FAR_NS;
    return 0;
}

static uint64_t add_capped(uint64_t t, uint64_t d)
{
    return d >= FAR_NS - t ? FAR_NS : t + d;
}

static double ns_to_seconds(uint64_t ns)
{
    return (double)ns / 1e9;
}

/* ---- The heap */

static inline bool before(const tw_timer *a, const tw_timer *b)
{
    return a->heap_key_ns < b->heap_key_ns ||
           (a->heap_key_ns == b->heap_key_ns && a->heap_seq < b->heap_seq);
}

static void sift_up(tw_timer **heap, size_t i, tw_timer *t)
{
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        tw_timer *p = heap[parent];
        if (!before(t, p))
            break;
        heap[i] = p;
        p->heap_index = (uint32_t)i;
        i = parent;
    }
    heap[i] = t;
    t->heap_index = (uint32_t)i;
}

static void sift_down(tw_timer **heap, size_t len, size_t i, tw_timer *t)
{
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= len)
            break;
        tw_timer *c = heap[child];
        if (child + 1 < len && before(heap[child + 1], c))
            c = heap[++child];
        if (!before(c, t))
            break;
        heap[i] = c;
        c->heap_index = (uint32_t)i;
        i = child;
    }
    heap[i] = t;
    t->heap_index = (uint32_t)i;
}

/* Makes room for one more armed timer. Growth is the heap's only allocation;
 * on failure nothing changes. */
static int heap_reserve(tw_clock *clock)
{
    if (clock->len < clock->cap)
        return 0;
    if (clock->cap >= HEAP_MAX)
        return TW_ENOMEM;
    uint32_t cap = clock->cap == 0              ? HEAP_FIRST
                   : clock->cap > HEAP_MAX / 2u ? HEAP_MAX
                                                : clock->cap * 2u;
    tw_timer **heap = tw_realloc(clock->heap, (size_t)cap * sizeof *heap);
    if (heap == NULL)
        return TW_ENOMEM;
    clock->heap = heap;
    clock->cap = cap;
    return 0;
}

static void heap_remove(tw_clock *clock, tw_timer *t)
{
    size_t i = t->heap_index;
    tw_timer *last = clock->heap[--clock->len];
    t->heap_index = UNARMED;
    if (last == t)
        return;
    if (i > 0 && before(last, clock->heap[(i - 1) / 2]))
        sift_up(clock->heap, i, last);
    else
        sift_down(clock->heap, clock->len, i, last);
}

/* (Re-)arms t for `due`. An unarmed timer needs heap_reserve first. */
static void arm(tw_clock *clock, tw_timer *t, uint64_t due)
{
    uint64_t seq = clock->seq++;
    t->due_ns = due;
    t->seq = seq;
    if (t->heap_index == UNARMED) {
        t->heap_key_ns = due;
        t->heap_seq = seq;
        sift_up(clock->heap, clock->len++, t);
    } else if (due < t->heap_key_ns) {
        t->heap_key_ns = due;
        t->heap_seq = seq;
        sift_up(clock->heap, t->heap_index, t);
    }
    /* Otherwise later (or the same deadline with a later seq): the heap keeps
     * the old, smaller key until the timer reaches the top. */
}

/* The earliest timer, with its heap entry brought up to date, or NULL. */
static tw_timer *settle_top(tw_clock *clock)
{
    while (clock->len > 0) {
        tw_timer *t = clock->heap[0];
        if (t->heap_seq == t->seq)
            return t;
        t->heap_key_ns = t->due_ns;
        t->heap_seq = t->seq;
        sift_down(clock->heap, clock->len, 0, t);
    }
    return NULL;
}

/* Disarms the top timer t and runs it. */
static void fire_top(tw_clock *clock, tw_timer *t)
{
    heap_remove(clock, t);
    t->fn(t);
}

/* ---- Delayed-call slots */

static void delayed_fire(tw_timer *timer);

static int slab_grow(tw_clock *clock)
{
    size_t count = clock->next_chunk;
    struct chunk *ch = tw_malloc(sizeof *ch + count * sizeof ch->slots[0]);
    if (ch == NULL)
        return TW_ENOMEM;
    ch->count = count;
    ch->next = clock->chunks;
    clock->chunks = ch;
    if (clock->next_chunk < CHUNK_MAX)
        clock->next_chunk *= 2;

    for (size_t i = 0; i < count; i++) {
        struct tw__delayed *s = &ch->slots[i];
        tw_timer_init(&s->timer, clock, delayed_fire);
        s->id = 0;
        s->state = SLOT_CALLED;
        s->next_free = i + 1 < count ? &ch->slots[i + 1] : NULL;
    }
    if (clock->free_tail != NULL)
        clock->free_tail->next_free = &ch->slots[0];
    else
        clock->free_head = &ch->slots[0];
    clock->free_tail = &ch->slots[count - 1];
    return 0;
}

static struct tw__delayed *slot_take(tw_clock *clock)
{
    if (clock->free_head == NULL && slab_grow(clock) < 0)
        return NULL;
    struct tw__delayed *s = clock->free_head;
    clock->free_head = s->next_free;
    if (clock->free_head == NULL)
        clock->free_tail = NULL;
    return s;
}

/* Keeps id and state: the handle still answers until the slot is reused. */
static void slot_release(tw_clock *clock, struct tw__delayed *s)
{
    s->next_free = NULL;
    if (clock->free_tail != NULL)
        clock->free_tail->next_free = s;
    else
        clock->free_head = s;
    clock->free_tail = s;
}

static void delayed_fire(tw_timer *timer)
{
    struct tw__delayed *s = (struct tw__delayed *)timer;
    tw_call_fn fn = s->fn;
    void *arg = s->arg;
    s->state = SLOT_CALLED;
    slot_release(timer->clock, s);
    fn(arg);
}

/* ---- Clocks */

static tw_clock *clock_new(bool manual)
{
    tw_clock *clock = tw_calloc(1, sizeof *clock);
    if (clock == NULL)
        return NULL;
    clock->manual = manual;
    clock->next_id = 1;
    clock->next_chunk = CHUNK_FIRST;
    clock->now_ns = manual ? 0 : tw_monotonic_ns();
    return clock;
}

tw_clock *tw_clock_new_manual(void)
{
    return clock_new(true);
}

tw_clock *tw__clock_new_reactor(void)
{
    return clock_new(false);
}

static void clock_destroy(tw_clock *clock)
{
    /* Owners may still stop their timers after this; leave them unarmed. */
    for (uint32_t i = 0; i < clock->len; i++)
        clock->heap[i]->heap_index = UNARMED;
    tw_free(clock->heap);
    for (struct chunk *ch = clock->chunks, *next; ch != NULL; ch = next) {
        next = ch->next;
        tw_free(ch);
    }
    tw_free(clock);
}

void tw__clock_destroy(tw_clock *clock)
{
    if (clock == NULL)
        return;
    if (clock->running > 0) {
        clock->free_asked = true;
        return;
    }
    clock_destroy(clock);
}

void tw_clock_free(tw_clock *clock)
{
    if (clock == NULL)
        return;
    if (!clock->manual) {
        tw_log_error(LOG_NS, "tw_clock_free: this is a reactor's clock; it is freed with the "
                             "reactor (ignored)");
        return;
    }
    tw__clock_destroy(clock);
}

double tw_clock_seconds(const tw_clock *clock)
{
    return ns_to_seconds(clock->now_ns);
}

size_t tw_clock_pending(const tw_clock *clock)
{
    return clock->len;
}

uint64_t tw__clock_update(tw_clock *clock)
{
    uint64_t now = tw_monotonic_ns();
    /* CLOCK_MONOTONIC does not go back, but the cached time must not either. */
    if (now > clock->now_ns)
        clock->now_ns = now < FAR_NS ? now : FAR_NS;
    return clock->now_ns;
}

int64_t tw__clock_timeout_ns(const tw_clock *clock)
{
    if (clock->len == 0)
        return -1;
    uint64_t key = clock->heap[0]->heap_key_ns;
    if (key <= clock->now_ns)
        return 0;
    return (int64_t)(key - clock->now_ns); /* both <= FAR_NS */
}

size_t tw__clock_run_due(tw_clock *clock)
{
    /* Everything armed from here on has seq >= limit and a deadline >= now,
     * so it sorts after every timer that may run in this pass. */
    uint64_t limit = clock->seq;
    size_t ran = 0;
    tw_timer *t;
    clock->running++;
    while (!clock->free_asked && (t = settle_top(clock)) != NULL && t->due_ns <= clock->now_ns &&
           t->seq < limit) {
        fire_top(clock, t);
        ran++;
    }
    clock->running--;
    if (clock->free_asked && clock->running == 0)
        clock_destroy(clock);
    return ran;
}

/* Runs everything due on a manual clock, including what becomes due while it
 * runs. Returns the count; *freed tells whether the clock is gone. */
static size_t run_manual(tw_clock *clock, bool *freed)
{
    size_t ran = 0;
    tw_timer *t;
    clock->running++;
    while (!clock->free_asked && (t = settle_top(clock)) != NULL && t->due_ns <= clock->now_ns) {
        fire_top(clock, t);
        ran++;
    }
    clock->running--;
    *freed = clock->free_asked;
    if (*freed)
        clock_destroy(clock);
    return ran;
}

static int check_manual(const tw_clock *clock)
{
    if (clock == NULL || !clock->manual)
        return TW_EINVAL;
    if (clock->running > 0)
        return TW_EBUSY;
    return 0;
}

static int count_result(size_t ran)
{
    return ran > INT_MAX ? INT_MAX : (int)ran;
}

int tw_clock_advance(tw_clock *clock, double seconds)
{
    return tw_clock_pump(clock, &seconds, 1);
}

int tw_clock_pump(tw_clock *clock, const double *timings, size_t n)
{
    int rc = check_manual(clock);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        uint64_t ns;
        if (seconds_to_ns(timings[i], &ns) < 0)
            return TW_EINVAL;
    }
    size_t ran = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t ns = 0;
        seconds_to_ns(timings[i], &ns);
        clock->now_ns = add_capped(clock->now_ns, ns);
        bool freed;
        ran += run_manual(clock, &freed);
        if (freed)
            break;
    }
    return count_result(ran);
}

/* ---- Intrusive timers */

void tw_timer_init(tw_timer *timer, tw_clock *clock, tw_timer_fn fn)
{
    memset(timer, 0, sizeof *timer);
    timer->clock = clock;
    timer->fn = fn;
    timer->heap_index = UNARMED;
}

int tw_timer_start(tw_timer *timer, double delay)
{
    uint64_t ns;
    if (timer->clock == NULL || timer->fn == NULL || seconds_to_ns(delay, &ns) < 0)
        return TW_EINVAL;
    tw_clock *clock = timer->clock;
    if (timer->heap_index == UNARMED) {
        int rc = heap_reserve(clock);
        if (rc < 0)
            return rc;
    }
    arm(clock, timer, add_capped(clock->now_ns, ns));
    return 0;
}

void tw_timer_stop(tw_timer *timer)
{
    if (timer->heap_index != UNARMED)
        heap_remove(timer->clock, timer);
}

bool tw_timer_active(const tw_timer *timer)
{
    return timer->heap_index != UNARMED;
}

/* ---- Delayed calls */

int tw_call_later(tw_clock *clock, double delay, tw_call_fn fn, void *arg, tw_delayed_call *out)
{
    uint64_t ns;
    if (clock == NULL || fn == NULL || seconds_to_ns(delay, &ns) < 0)
        return TW_EINVAL;
    int rc = heap_reserve(clock);
    if (rc < 0)
        return rc;
    struct tw__delayed *s = slot_take(clock);
    if (s == NULL)
        return TW_ENOMEM;
    s->id = clock->next_id++;
    s->state = SLOT_PENDING;
    s->fn = fn;
    s->arg = arg;
    arm(clock, &s->timer, add_capped(clock->now_ns, ns));
    if (out != NULL)
        *out = (tw_delayed_call){.slot = s, .id = s->id};
    return 0;
}

/* The slot of a pending call, or NULL with the code that says why not. */
static struct tw__delayed *pending_slot(tw_delayed_call call, int *code)
{
    struct tw__delayed *s = call.slot;
    if (s == NULL || s->id != call.id || s->state == SLOT_CALLED) {
        *code = TW_EALREADYCALLED;
        return NULL;
    }
    if (s->state == SLOT_CANCELLED) {
        *code = TW_EALREADYCANCELLED;
        return NULL;
    }
    return s;
}

int tw_delayed_call_cancel(tw_delayed_call call)
{
    int code;
    struct tw__delayed *s = pending_slot(call, &code);
    if (s == NULL)
        return code;
    tw_clock *clock = s->timer.clock;
    heap_remove(clock, &s->timer);
    s->state = SLOT_CANCELLED;
    slot_release(clock, s);
    return 0;
}

int tw_delayed_call_reset(tw_delayed_call call, double delay)
{
    int code;
    struct tw__delayed *s = pending_slot(call, &code);
    if (s == NULL)
        return code;
    uint64_t ns;
    if (seconds_to_ns(delay, &ns) < 0)
        return TW_EINVAL;
    tw_clock *clock = s->timer.clock;
    arm(clock, &s->timer, add_capped(clock->now_ns, ns));
    return 0;
}

int tw_delayed_call_delay(tw_delayed_call call, double seconds)
{
    int code;
    struct tw__delayed *s = pending_slot(call, &code);
    if (s == NULL)
        return code;
    uint64_t ns;
    if (isnan(seconds) || seconds_to_ns(fabs(seconds), &ns) < 0)
        return TW_EINVAL;
    /* Nothing is ever scheduled before now: tw__clock_run_due relies on every
     * timer armed during a pass sorting after the ones it may run. */
    tw_clock *clock = s->timer.clock;
    uint64_t now = clock->now_ns, due = s->timer.due_ns;
    if (seconds >= 0) {
        due = add_capped(due, ns);
        if (due < now)
            due = now;
    } else {
        if (due <= now)
            return 0; /* already due: it cannot run any sooner */
        due = due - now > ns ? due - ns : now;
    }
    arm(clock, &s->timer, due);
    return 0;
}

bool tw_delayed_call_active(tw_delayed_call call)
{
    int code;
    return pending_slot(call, &code) != NULL;
}

double tw_delayed_call_time(tw_delayed_call call)
{
    int code;
    struct tw__delayed *s = pending_slot(call, &code);
    return s == NULL ? NAN : ns_to_seconds(s->timer.due_ns);
}
