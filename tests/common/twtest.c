/* Plain tests: the unhandled-failure check and, under ASan, the leak check. */
#include "twtest.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TWTEST_LSAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define TWTEST_LSAN 1
#endif
#ifdef TWTEST_LSAN
#include <sanitizer/lsan_interface.h>
#endif

void twtest_begin(void)
{
    tw_testing_begin();
}

void twtest_end(void)
{
    char why[512];
    int dirty = tw_testing_check_unhandled(why, sizeof why);
    cr_assert_eq(dirty, 0, "unclean test: %s", why);
#ifdef TWTEST_LSAN
    cr_assert_eq(__lsan_do_recoverable_leak_check(), 0,
                 "memory leaked (LeakSanitizer report above)");
#endif
}
