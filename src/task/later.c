/* deferLater: a delayed call that fires a deferred whose first callback is
 * the user's function.
 *
 * One struct serves the three parties: the delayed call (which holds a
 * reference to the deferred until it runs), the canceller, and the pair that
 * calls fn (whose arg_release frees the struct, so it lives exactly as long
 * as the pair may still run). */
#include <twine/alloc.h>
#include <twine/error.h>
#include <twine/failure.h>
#include <twine/task.h>

#include <math.h>

struct later {
    tw_deferred *d; /* the delayed call's reference, until it runs or is cancelled */
    tw_delayed_call call;
    tw_result (*fn)(void *arg);
    void *arg;
};

static void later_due(void *arg)
{
    struct later *l = arg;
    tw_deferred *d = l->d;
    l->d = NULL;
    tw_deferred_callback(d, tw_result_borrowed(NULL)); /* runs the pair: l may be freed */
    tw_deferred_unref(d);
}

static tw_result later_call(tw_result r, void *arg)
{
    struct later *l = arg;
    tw_result_release(&r);
    return l->fn ? l->fn(l->arg) : tw_result_borrowed(NULL);
}

static void later_free(void *arg)
{
    tw_free(arg);
}

/* Not firing d makes it fail with TW_ECANCELED. */
static void later_cancel(tw_deferred *d, void *arg)
{
    struct later *l = arg;
    tw_delayed_call_cancel(l->call);
    l->d = NULL;
    tw_deferred_unref(d); /* the delayed call's; the cancel holds its own */
}

tw_deferred *tw_defer_later(tw_clock *clock, double delay, tw_result (*fn)(void *arg), void *arg)
{
    if (!clock || !(delay >= 0) || isinf(delay))
        return tw_fail(
            tw_failure_new(TW_EINVAL, NULL, "tw_defer_later: %s",
                           clock ? "the delay must be finite and >= 0" : "the clock is NULL"));
    struct later *l = tw_calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->fn = fn;
    l->arg = arg;
    tw_deferred *d = tw_deferred_new(later_cancel, l);
    if (!d) {
        tw_free(l);
        return NULL;
    }
    if (tw_deferred_add_callbacks(d, later_call, NULL, l, later_free) < 0) {
        tw_free(l);
        tw_deferred_unref(d);
        return NULL;
    }
    /* From here releasing d frees l. */
    if (tw_call_later(clock, delay, later_due, l, &l->call) < 0) {
        tw_deferred_unref(d);
        return NULL;
    }
    l->d = tw_deferred_ref(d);
    return d;
}
