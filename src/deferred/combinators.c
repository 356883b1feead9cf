/* DeferredList, gatherResults and race.
 *
 * One group per call: it holds the deferred it returns (`out`, weakly) and a
 * reference to each input until that input's pair has run, which is what
 * cancelling `out` needs. Each input's pair holds the group, and so does a
 * passthrough "hook" pair put first on `out`: when out fires, or is released
 * unfired, the hook lets the inputs go (nothing can cancel them through out
 * any more), which breaks the group <-> input cycle. The group is freed when
 * the last of those pairs is done.
 *
 * Cancelling out cancels every input whose pair has not run, as Twisted's
 * DeferredList.cancel goes through its whole list: out usually fires inside
 * the first cancellation (an ECANCELED failure under FIRE_ON_ONE_ERRBACK,
 * which gather uses, or a value a canceller supplies under
 * FIRE_ON_ONE_CALLBACK), and the operations behind the others must still be
 * stopped. So while a cancellation is going through the inputs, the hook
 * leaves them to it, and it lets them go when it is done. */
#include <twine/alloc.h>
#include <twine/deferred.h>
#include <twine/error.h>

#include <stdint.h>

#include "deferred/deferred-internal.h"

enum mode { MODE_LIST, MODE_RACE };

struct group;

struct slot {
    struct group *group;
    size_t index;
    tw_deferred *input; /* held until its pair has run; NULL after */
};

struct group {
    size_t refs; /* the inputs' pairs not yet done, and the hook */
    enum mode mode;
    unsigned flags;
    size_t n;
    size_t finished;                 /* inputs whose pair ran */
    unsigned cancelling;             /* cancel_inputs calls under way (they nest) */
    tw_deferred *out;                /* NULL once out fired or was released */
    bool won;                        /* race: a value arrived */
    tw_failure *failure;             /* race: the failure of the lowest input so far */
    size_t failure_index;            /* its input */
    tw_deferred_list_result *list;   /* handed over when out fires with it */
    tw_deferred_first_result *first; /* likewise */
    struct slot slots[];
};

static void list_result_free(void *value)
{
    tw_deferred_list_result *list = value;
    for (size_t i = 0; i < list->count; i++)
        tw_result_release(&list->items[i].result);
    tw_free(list);
}

static void first_result_free(void *value)
{
    tw_deferred_first_result *first = value;
    tw_result_release(&first->result);
    tw_free(first);
}

static void group_unref(struct group *g)
{
    if (--g->refs > 0)
        return;
    if (g->list)
        list_result_free(g->list);
    if (g->first)
        first_result_free(g->first);
    tw_failure_unref(g->failure);
    tw_free(g);
}

static void slot_release(void *arg)
{
    struct slot *s = arg;
    group_unref(s->group);
}

static void let_inputs_go(struct group *g)
{
    for (size_t i = 0; i < g->n; i++) {
        tw_deferred *in = g->slots[i].input;
        g->slots[i].input = NULL;
        tw_deferred_unref(in);
    }
}

/* Out has fired or is gone: nothing can cancel the inputs through it any
 * more, except a cancellation already going through them. */
static void hook_release(void *arg)
{
    struct group *g = arg;
    g->out = NULL;
    if (!g->cancelling)
        let_inputs_go(g);
    group_unref(g);
}

static bool group_open(const struct group *g)
{
    return g->out && !tw_deferred_called(g->out);
}

/* Cancels the inputs whose pair has not run (skipping `except`), all of
 * them even if out fires on the way. */
static void cancel_inputs(struct group *g, size_t except)
{
    g->refs++;
    g->cancelling++;
    for (size_t i = 0; i < g->n; i++) {
        tw_deferred *in = g->slots[i].input;
        if (!in || i == except)
            continue;
        tw_deferred_ref(in);
        tw_deferred_cancel(in);
        tw_deferred_unref(in);
    }
    if (--g->cancelling == 0 && !g->out)
        let_inputs_go(g);
    group_unref(g);
}

static void group_cancel(tw_deferred *out, void *arg)
{
    (void)out;
    cancel_inputs(arg, SIZE_MAX);
}

static tw_result list_on_result(tw_result r, struct group *g, size_t i)
{
    bool ok = !r.failure;
    bool consume = g->flags & TW_DL_CONSUME_ERRORS;
    if (!group_open(g)) {
        if (!ok && consume)
            tw_result_release(&r);
        return r;
    }
    g->finished++;
    if (ok && (g->flags & TW_DL_FIRE_ON_ONE_CALLBACK)) {
        tw_deferred_first_result *first = g->first;
        g->first = NULL;
        first->index = i;
        first->result = r;
        tw_deferred_callback(g->out, tw_result_ok(first, first_result_free));
        return (tw_result){0};
    }
    if (!ok && (g->flags & TW_DL_FIRE_ON_ONE_ERRBACK)) {
        tw_failure *cause = consume ? r.failure : tw_failure_ref(r.failure);
        if (consume)
            r = (tw_result){0};
        tw_deferred_errback(
            g->out, tw_failure_new(TW_EFIRSTERROR, cause, "deferred %zu of %zu failed", i, g->n));
        return r;
    }
    tw_deferred_list_item *item = &g->list->items[i];
    item->success = ok;
    if (ok || consume) {
        item->result = r;
        r = (tw_result){0};
    } else {
        item->result = tw_result_fail(tw_failure_ref(r.failure));
    }
    if (g->finished == g->n) {
        tw_deferred_list_result *list = g->list;
        g->list = NULL;
        tw_deferred_callback(g->out, tw_result_ok(list, list_result_free));
    }
    return r;
}

static tw_result race_on_result(tw_result r, struct group *g, size_t i)
{
    if (!r.failure) {
        if (g->won || !group_open(g))
            return r; /* a late value stays with its input */
        g->won = true;
        tw_deferred_first_result *first = g->first;
        g->first = NULL;
        first->index = i;
        first->result = r;
        /* As Twisted: the others are cancelled before out fires. */
        cancel_inputs(g, i);
        if (group_open(g))
            tw_deferred_callback(g->out, tw_result_ok(first, first_result_free));
        else
            first_result_free(first);
        return (tw_result){0};
    }
    g->finished++;
    if (!g->failure || i < g->failure_index) {
        tw_failure_unref(g->failure);
        g->failure = r.failure;
        g->failure_index = i;
    } else {
        tw_failure_unref(r.failure);
    }
    if (g->finished == g->n && !g->won && group_open(g)) {
        tw_failure *cause = g->failure;
        g->failure = NULL;
        tw_deferred_errback(g->out,
                            tw_failure_new(TW_EALLFAILED, cause, "all %zu deferreds failed", g->n));
    }
    return (tw_result){0};
}

static tw_result on_result(tw_result r, void *arg)
{
    struct slot *s = arg;
    struct group *g = s->group;
    tw_deferred *in = s->input; /* alive: its run loop holds it */
    s->input = NULL;
    tw_deferred_unref(in);
    if (g->mode == MODE_RACE)
        return race_on_result(r, g, s->index);
    return list_on_result(r, g, s->index);
}

static void release_inputs(tw_deferred *const *ds, size_t n)
{
    for (size_t i = 0; ds && i < n; i++)
        tw_deferred_unref(ds[i]);
}

static tw_deferred *group_new(tw_deferred *const *ds, size_t n, enum mode mode, unsigned flags)
{
    if (n && !ds)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (!ds[i]) { /* an input that could not be made: pass the failure on */
            release_inputs(ds, n);
            return NULL;
        }
    }
    bool want_first = mode == MODE_RACE || (flags & TW_DL_FIRE_ON_ONE_CALLBACK);
    bool want_list = mode == MODE_LIST;
    struct group *g = NULL;
    tw_deferred *out = NULL;
    size_t reserved = 0;
    if (n > (SIZE_MAX - sizeof *g) / sizeof g->slots[0] ||
        n > (SIZE_MAX - sizeof *g->list) / sizeof g->list->items[0])
        goto fail;
    g = tw_calloc(1, sizeof *g + n * sizeof g->slots[0]);
    if (!g)
        goto fail;
    *g = (struct group){.mode = mode, .flags = flags, .n = n};
    if (want_list) {
        g->list = tw_malloc(sizeof *g->list + n * sizeof g->list->items[0]);
        if (!g->list)
            goto fail;
        g->list->count = n;
        for (size_t i = 0; i < n; i++)
            g->list->items[i] = (tw_deferred_list_item){0};
    }
    if (want_first) {
        g->first = tw_malloc(sizeof *g->first);
        if (!g->first)
            goto fail;
        *g->first = (tw_deferred_first_result){0};
    }
    out = tw_deferred_new(group_cancel, g);
    if (!out || tw__deferred_reserve(out) < 0)
        goto fail;
    for (; reserved < n; reserved++)
        if (tw__deferred_reserve(ds[reserved]) < 0)
            goto fail;

    /* Nothing can fail from here on; adding runs the pairs of inputs that
     * have fired, which may fire out and let go of inputs not yet reached, so
     * hold them all until the end. */
    g->refs = n + 1;
    g->out = out;
    for (size_t i = 0; i < n; i++) {
        g->slots[i] = (struct slot){.group = g, .index = i, .input = ds[i]};
        tw_deferred_ref(ds[i]);
    }
    tw__deferred_add_reserved(out, NULL, NULL, g, hook_release);
    for (size_t i = 0; i < n; i++)
        tw__deferred_add_reserved(ds[i], on_result, on_result, &g->slots[i], slot_release);
    release_inputs(ds, n);
    if (n == 0 && mode == MODE_LIST && !(flags & TW_DL_FIRE_ON_ONE_CALLBACK)) {
        tw_deferred_list_result *list = g->list;
        g->list = NULL;
        tw_deferred_callback(out, tw_result_ok(list, list_result_free));
    } else if (n == 0 && mode == MODE_RACE) {
        tw_deferred_errback(out, tw_failure_new(TW_EALLFAILED, NULL, "race of no deferreds"));
    }
    return out;

fail:
    for (size_t i = 0; i < reserved; i++)
        tw__deferred_unreserve(ds[i]);
    tw_deferred_unref(out);
    if (g) {
        if (g->list)
            list_result_free(g->list);
        tw_free(g->first);
        tw_free(g);
    }
    release_inputs(ds, n);
    return NULL;
}

tw_deferred *tw_deferred_list(tw_deferred *const *ds, size_t n, unsigned flags)
{
    return group_new(ds, n, MODE_LIST, flags);
}

tw_deferred *tw_gather(tw_deferred *const *ds, size_t n, bool consume_errors)
{
    return group_new(ds, n, MODE_LIST,
                     TW_DL_FIRE_ON_ONE_ERRBACK | (consume_errors ? TW_DL_CONSUME_ERRORS : 0));
}

tw_deferred *tw_race(tw_deferred *const *ds, size_t n)
{
    return group_new(ds, n, MODE_RACE, 0);
}
