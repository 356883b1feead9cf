/* The reactor half of the testing kit: the dirty-reactor check and running
 * the reactor until a deferred fires. */
#include <twine/alloc.h>
#include <twine/deferred.h>
#include <twine/error.h>
#include <twine/log.h>
#include <twine/reactor.h>
#include <twine/testing.h>

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static void add(char *why, size_t size, size_t *used, size_t count, const char *what)
{
    if (!count)
        return;
    int n = snprintf(*used < size ? why + *used : NULL, *used < size ? size - *used : 0, "%s%zu %s",
                     *used ? "; " : "", count, what);
    if (n > 0)
        *used += (size_t)n;
}

int tw_testing_check_clean(tw_reactor *r, char *why, size_t size)
{
    if (size)
        why[0] = '\0';
    size_t used = 0;
    if (r) {
        tw_reactor_state st;
        tw_reactor_get_state(r, &st);
        add(why, size, &used, st.delayed_calls, "pending delayed call(s)");
        add(why, size, &used, st.readers, "reader(s)");
        add(why, size, &used, st.writers, "writer(s)");
        add(why, size, &used, st.handles, "open connection(s) or port(s)");
        add(why, size, &used, st.signal_watches, "signal watch(es)");
        add(why, size, &used, st.thread_calls, "queued cross-thread call(s)");
    }
    char unhandled[160];
    if (tw_testing_check_unhandled(unhandled, sizeof unhandled) != 0) {
        int n = snprintf(used < size ? why + used : NULL, used < size ? size - used : 0, "%s%s",
                         used ? "; " : "", unhandled);
        if (n > 0)
            used += (size_t)n;
    }
    return used ? TW_EBUSY : 0;
}

/* Shared by the caller and the callback pair: whichever is done last frees it,
 * so a deferred that fires after a timeout cannot write into a dead frame. */
struct waiter {
    int refs;
    bool fired;
    bool abandoned;
    tw_result result;
};

static void waiter_unref(void *arg)
{
    struct waiter *w = arg;
    if (--w->refs == 0)
        tw_free(w);
}

static tw_result store(tw_result result, void *arg)
{
    struct waiter *w = arg;
    w->fired = true;
    if (w->abandoned)
        tw_result_release(&result);
    else
        w->result = result;
    return tw_result_borrowed(NULL);
}

int tw_testing_run_until_fired(tw_reactor *r, tw_deferred *d, double timeout, tw_result *out)
{
    if (!(timeout >= 0) || isinf(timeout))
        return TW_EINVAL;
    struct waiter *w = tw_calloc(1, sizeof *w);
    if (!w)
        return TW_ENOMEM;
    w->refs = 2;
    int rc = tw_deferred_add_callbacks(d, store, store, w, waiter_unref);
    if (rc < 0) {
        tw_free(w);
        return rc;
    }
    double deadline = tw_reactor_seconds(r) + timeout;
    while (!w->fired) {
        double left = deadline - tw_reactor_seconds(r);
        if (left <= 0)
            break;
        if (tw_reactor_iterate(r, left < 0.05 ? left : 0.05) < 0)
            break;
    }
    if (!w->fired) {
        w->abandoned = true;
        tw_deferred_cancel(d); /* whatever it fires with now or later is released */
        waiter_unref(w);
        return TW_ETIMEDOUT;
    }
    *out = w->result;
    waiter_unref(w);
    return 0;
}
