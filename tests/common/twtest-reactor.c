/* Reactor tests: a fresh reactor per test and the dirty-reactor check after. */
#include "twtest.h"

tw_reactor *twtest_begin_reactor(void)
{
    tw_testing_begin();
    tw_reactor *r = NULL;
    int rc = tw_reactor_new(&r, NULL);
    cr_assert_eq(rc, 0, "tw_reactor_new: %s", tw_strerror(rc));
    return r;
}

void twtest_end_reactor(tw_reactor *r)
{
    char why[512];
    int dirty = tw_testing_check_clean(r, why, sizeof why);
    int rc = tw_reactor_free(r);
    cr_assert_eq(rc, 0, "tw_reactor_free: %s", tw_strerror(rc));
    cr_assert_eq(dirty, 0, "dirty reactor: %s", why);
    twtest_end();
}

tw_result twtest_wait(tw_reactor *r, tw_deferred *d)
{
    tw_result out = {0};
    int rc = tw_testing_run_until_fired(r, d, 10.0, &out);
    cr_assert_eq(rc, 0, "deferred did not fire: %s", tw_strerror(rc));
    return out;
}
