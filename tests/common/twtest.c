/* Plain tests: the unhandled-failure check only (needs no reactor). */
#include "twtest.h"

void twtest_setup_plain(void)
{
    tw_testing_begin();
}

void twtest_teardown_plain(void)
{
    char why[512];
    int dirty = tw_testing_check_unhandled(why, sizeof why);
    cr_assert_eq(dirty, 0, "unclean test: %s", why);
}
