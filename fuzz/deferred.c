/* Fuzz target: bytes become operations on a few deferreds (add callbacks that
 * pass, replace, fail, recover, return other deferreds or themselves, fire or
 * cancel others; fire, errback, cancel, pause, unpause, chain, timeouts on a
 * manual clock, combinators), with allocations failing on demand.
 *
 * Checked, besides no crash and no sanitizer report:
 * - once called, a deferred stays called; cancel leaves it called;
 * - firing returns 0 or TW_EALREADYCALLED, and 0 for one already called only
 *   when a cancellation may have armed the one swallowed firing;
 * - unpause returns TW_EPAUSED exactly when our pauses are used up;
 * - at the end of each input, every value and every pair argument was
 *   released exactly once, no timer is left on the clock, and every byte
 *   Twine allocated was freed.
 *
 * Every deferred made stays registered (one reference) until the end, which
 * comes one of two ways (the first byte picks): fire everything unfired and
 * undo the pauses, then drop the references; or drop them with deferreds
 * still unfired, paused and waiting. Waiting only ever goes from lower ids to
 * higher ones (a deadlock no firing could undo is not a bug to find), and the
 * abandoning mode does not chain: a deferred chained into one that waits on
 * it is a reference cycle of the user's making, which leaks in Twine as in
 * any reference-counted C library. Run with FUZZ_DEFERRED_TRACE=1 to print
 * the operations of an input. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <twine/testing.h>
#include <twine/twine.h>

#include "fuzz.h"

#define SLOTS 6

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz-deferred: invariant broken: %s\n", what);
        abort();
    }
}

static int tracing; /* FUZZ_DEFERRED_TRACE=1: print each operation (to replay a crash) */

static void quiet(const tw_log_event *event, void *arg)
{
    (void)event;
    (void)arg;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    tracing = getenv("FUZZ_DEFERRED_TRACE") != NULL;
    tw_testing_fail_alloc_off();      /* installs the counting allocator */
    tw_log_add_observer(quiet, NULL); /* misuse is logged: keep the output quiet */
    return 0;
}

/* ---- Values that count their releases (libc memory: never made to fail). */

static long values_made, values_released;

static void value_free(void *p)
{
    values_released++;
    free(p);
}

static tw_result value(void)
{
    void *p = malloc(1);
    if (!p)
        abort();
    values_made++;
    return tw_result_ok(p, value_free);
}

/* ---- The deferreds under test: every one made is registered (the registry
 * holds its one reference until the end of the input); slots are handles the
 * operations pick from. */

#define MAX_DEFERREDS 64

struct entry {
    tw_deferred *d;
    long id;
    int pauses;           /* ours, not yet unpaused */
    int called;           /* we saw it called */
    int maybe_suppressed; /* a cancellation may have armed the one free firing */
};

static struct entry registry[MAX_DEFERREDS];
static int registered;
static struct entry *slots[SLOTS];
static long next_id, next_low_id;
static long pairs_added, pairs_released;
static int abandon; /* this input ends by dropping everything unfired */

/* A pair's argument. `other` and `self` are borrowed: the registry keeps every
 * deferred alive while pairs can run. */
enum kind {
    K_PASS,
    K_REPLACE,
    K_FAIL,
    K_RECOVER,
    K_RETURN_OTHER,
    K_CONSUME,
    K_FIRE_OTHER,
    K_CANCEL_OTHER,
    K_RETURN_SELF,
    K_KINDS
};

struct arg {
    enum kind kind;
    tw_deferred *other;
    tw_deferred *self;
};

static void arg_release(void *p)
{
    pairs_released++;
    free(p);
}

static tw_result run_pair(tw_result r, void *p)
{
    struct arg *a = p;
    switch (a->kind) {
    case K_PASS:
        return r;
    case K_REPLACE:
        tw_result_release(&r);
        return value();
    case K_FAIL:
        tw_result_release(&r);
        return tw_result_fail(tw_failure_new(TW_EUSER, NULL, "fuzz"));
    case K_RECOVER:
        if (!r.failure)
            return r;
        tw_result_release(&r);
        return value();
    case K_RETURN_OTHER:
        tw_result_release(&r);
        return tw_result_deferred(tw_deferred_ref(a->other));
    case K_CONSUME:
        tw_result_release(&r);
        return tw_result_borrowed(NULL);
    case K_FIRE_OTHER: {
        int rc = tw_deferred_callback(a->other, value());
        check(rc == 0 || rc == TW_EALREADYCALLED, "firing from a callback");
        check(tw_deferred_called(a->other), "called after firing from a callback");
        return r;
    }
    case K_CANCEL_OTHER:
        tw_deferred_cancel(a->other);
        check(tw_deferred_called(a->other), "called after cancel from a callback");
        return r;
    case K_RETURN_SELF:
        tw_result_release(&r);
        return tw_result_deferred(tw_deferred_ref(a->self));
    default:
        return r;
    }
}

enum { C_NONE, C_SILENT, C_FIRES };

static void canceller_silent(tw_deferred *d, void *arg)
{
    (void)d;
    (void)arg;
}

static void canceller_fires(tw_deferred *d, void *arg)
{
    (void)arg;
    tw_deferred_callback(d, value());
}

/* The reader. */
struct input {
    const uint8_t *data;
    size_t size, at;
};

static unsigned byte(struct input *in)
{
    return in->at < in->size ? in->data[in->at++] : 0;
}

static struct entry *add_entry(tw_deferred *d, long id)
{
    if (registered == MAX_DEFERREDS) {
        tw_deferred_unref(d);
        return NULL;
    }
    struct entry *e = &registry[registered++];
    *e = (struct entry){.d = d, .id = id, .called = tw_deferred_called(d)};
    return e;
}

static void after_fire(struct entry *e, int rc)
{
    check(rc == 0 || rc == TW_EALREADYCALLED, "fire returns 0 or EALREADYCALLED");
    if (e->called && rc == 0)
        check(e->maybe_suppressed, "a second firing accepted without a cancellation");
    e->called = 1;
    check(tw_deferred_called(e->d), "called after firing");
}

/* Waiting goes from lower ids to higher ones only, so no deferred can end up
 * waiting (through others) on itself: a deadlock no firing could undo. */
static void add_pair(struct entry *e, unsigned k, unsigned pick)
{
    struct arg *a = malloc(sizeof *a);
    if (!a)
        abort();
    *a = (struct arg){.kind = k % K_KINDS, .self = e->d};
    if (a->kind == K_RETURN_OTHER || a->kind == K_FIRE_OTHER || a->kind == K_CANCEL_OTHER) {
        struct entry *t = slots[pick % SLOTS];
        if (!t || (a->kind == K_RETURN_OTHER && t->id <= e->id)) {
            a->kind = K_PASS;
        } else {
            a->other = t->d;
            t->maybe_suppressed = 1; /* it may be cancelled, directly or forwarded to */
        }
    }
    tw_callback_fn cb = run_pair, eb = run_pair;
    if (k & 0x10)
        cb = NULL;
    else if (k & 0x20)
        eb = NULL;
    int rc = tw_deferred_add_callbacks(e->d, cb, eb, a, arg_release);
    check(rc == 0 || rc == TW_ENOMEM, "add_callbacks returns 0 or ENOMEM");
    if (rc == 0)
        pairs_added++;
    else
        free(a);
}

/* A combinator over two slots' deferreds; its deferred gets an id below every
 * other, as it holds its inputs. */
static void combine(unsigned how, struct entry *a, struct entry *b)
{
    tw_deferred *ds[2] = {tw_deferred_ref(a->d), tw_deferred_ref(b->d)};
    tw_deferred *d;
    switch (how % 3) {
    case 0:
        d = tw_deferred_list(ds, 2, (how >> 2) & 7);
        break;
    case 1:
        d = tw_gather(ds, 2, how & 4);
        break;
    default:
        d = tw_race(ds, 2);
        break;
    }
    a->maybe_suppressed = b->maybe_suppressed = 1;
    if (!d)
        return;
    struct entry *e = add_entry(d, --next_low_id);
    if (e)
        e->maybe_suppressed = 1;
}

/* Fires everything unfired and undoes our pauses, until nothing changes: then
 * no deferred waits, no pair is left, and dropping the references must free
 * everything. */
static void settle(void)
{
    for (int changed = 1; changed;) {
        changed = 0;
        for (int i = 0; i < registered; i++) {
            struct entry *e = &registry[i];
            for (; e->pauses; e->pauses--)
                check(tw_deferred_unpause(e->d) == 0, "unpause at the end");
            if (!tw_deferred_called(e->d)) {
                tw_deferred_callback(e->d, value());
                changed = 1;
            }
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct input in = {data, size, 0};
    long baseline = tw_testing_alloc_live();
    tw_clock *clock = tw_clock_new_manual();
    if (!clock)
        return 0;
    registered = 0;
    memset(slots, 0, sizeof slots);
    values_made = values_released = 0;
    pairs_added = pairs_released = 0;
    next_id = next_low_id = 0;
    unsigned mode = byte(&in);
    /* Abandoning unfired deferreds frees them only where no reference cycle
     * keeps them: a deferred chained into one that waits (through others) on
     * it is such a cycle, so that mode does not chain. */
    abandon = mode & 1;

    for (int ops = 0; in.at < in.size && ops < 512; ops++) {
        unsigned op = byte(&in) % 15;
        int slot = (int)(byte(&in) % SLOTS);
        struct entry *e = slots[slot];
        unsigned k = byte(&in);
        if (op != 0 && op != 11 && op != 13 && op != 14 && !e)
            op = 0;
        if (tracing)
            fprintf(stderr, "op %u slot %d (id %ld) k %u\n", op, slot, e ? e->id : 0, k);
        switch (op) {
        case 0: { /* new */
            tw_canceller_fn c = k % 3 == C_SILENT  ? canceller_silent
                                : k % 3 == C_FIRES ? canceller_fires
                                                   : NULL;
            tw_deferred *d = tw_deferred_new(c, NULL);
            if (d)
                slots[slot] = add_entry(d, ++next_id);
            break;
        }
        case 1:
        case 2:
            add_pair(e, k, byte(&in));
            break;
        case 3:
            after_fire(e, tw_deferred_callback(e->d, value()));
            break;
        case 4:
            after_fire(e, tw_deferred_errback(e->d, tw_failure_new(TW_EUSER, NULL, "errback")));
            break;
        case 5:
            if (!e->called)
                e->maybe_suppressed = 1;
            tw_deferred_cancel(e->d);
            e->called = 1;
            check(tw_deferred_called(e->d), "called after cancel");
            break;
        case 6:
            tw_deferred_pause(e->d);
            e->pauses++;
            break;
        case 7: {
            int rc = tw_deferred_unpause(e->d);
            check(rc == (e->pauses ? 0 : TW_EPAUSED), "unpause returns EPAUSED when not paused");
            if (e->pauses)
                e->pauses--;
            break;
        }
        case 8: {
            struct entry *t = slots[k % SLOTS];
            if (!abandon && t) {
                int rc = tw_deferred_chain(e->d, t->d);
                check(rc == (t == e ? TW_EINVAL : 0) || rc == TW_ENOMEM, "chain");
            }
            break;
        }
        case 9: /* forget the handle (the registry keeps the deferred) */
            slots[slot] = NULL;
            break;
        case 10: {
            int rc = tw_deferred_add_timeout(e->d, clock, (double)(k % 4));
            check(rc == 0 || rc == TW_ENOMEM, "add_timeout");
            e->maybe_suppressed = 1;
            break;
        }
        case 11:
            check(tw_clock_advance(clock, (double)(k % 3)) >= 0, "advance");
            break;
        case 12: {
            struct entry *t = slots[byte(&in) % SLOTS];
            if (t)
                combine(k, e, t);
            break;
        }
        case 13: /* the next few allocations succeed, then they fail */
            tw_testing_fail_alloc_after(k % 8);
            break;
        case 14:
            tw_testing_fail_alloc_off();
            break;
        }
        for (int i = 0; i < registered; i++)
            if (registry[i].called)
                check(tw_deferred_called(registry[i].d), "stays called");
    }

    tw_testing_fail_alloc_off();
    if (!abandon)
        settle();
    for (int i = 0; i < registered; i++)
        tw_deferred_unref(registry[(mode & 2) ? registered - 1 - i : i].d);
    check(tw_clock_pending(clock) == 0, "no timer outlives its deferred");
    tw_clock_free(clock);
    check(values_made == values_released, "every value released exactly once");
    check(pairs_added == pairs_released, "every pair argument released exactly once");
    check(tw_testing_alloc_live() == baseline, "everything Twine allocated was freed");
    return 0;
}
