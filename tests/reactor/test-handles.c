/* Handles the reactor closes when it shuts down (disconnectAll): every
 * registered handle is closed once, in order, before the during-shutdown
 * triggers; handles added meanwhile are left; removed ones are not closed. */
#include <signal.h>

#include "twtest.h"

struct closing {
    tw_handle h;
    int order;
    tw_reactor *r;
    struct closing *adds; /* registered by this one's close */
};

static int next_order;
static int during_trigger_order;

static void on_close(tw_handle *h)
{
    struct closing *c = (struct closing *)h;
    c->order = ++next_order;
    if (c->adds)
        tw_reactor_add_handle(c->r, &c->adds->h, on_close);
}

static tw_deferred *during(void *arg)
{
    (void)arg;
    during_trigger_order = ++next_order;
    return NULL;
}

static void stop_now(void *arg)
{
    tw_reactor_stop(arg);
}

TW_REACTOR_TEST(handles, closed_in_order_at_shutdown_before_during_triggers)
{
    struct closing a = {.r = r}, b = {.r = r}, removed = {.r = r}, late = {.r = r};
    b.adds = &late;
    tw_reactor_add_handle(r, &a.h, on_close);
    tw_reactor_add_handle(r, &removed.h, on_close);
    tw_reactor_add_handle(r, &b.h, on_close);
    tw_reactor_remove_handle(r, &removed.h);
    tw_reactor_remove_handle(r, &removed.h); /* twice: harmless */

    tw_reactor_state st;
    tw_reactor_get_state(r, &st);
    cr_assert_eq(st.handles, 2);
    char why[256];
    cr_assert_eq(tw_testing_check_clean(r, why, sizeof why), TW_EBUSY);
    cr_assert(strstr(why, "open connection(s) or port(s)"), "%s", why);

    next_order = 0;
    tw_reactor_add_trigger(r, TW_PHASE_DURING, TW_EVENT_SHUTDOWN, during, NULL, NULL);
    tw_call_later(tw_reactor_clock(r), 0, stop_now, r, NULL);
    cr_assert_eq(tw_reactor_run(r), 0);

    cr_assert_eq(a.order, 1);
    cr_assert_eq(b.order, 2);
    cr_assert_eq(removed.order, 0, "a removed handle is not closed");
    cr_assert_eq(late.order, 0, "a handle added while closing is left for later");
    cr_assert_eq(during_trigger_order, 3, "handles close before the during triggers");
    tw_reactor_get_state(r, &st);
    cr_assert_eq(st.handles, 1);
    tw_reactor_remove_handle(r, &late.h);
}
