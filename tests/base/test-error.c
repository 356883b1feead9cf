#include "twtest.h"
#include <twine/error.h>

#include <string.h>

TW_TEST(error, own_codes_are_named_and_described)
{
    cr_assert_str_eq(tw_err_name(TW_EALREADYCALLED), "EALREADYCALLED");
    cr_assert(strstr(tw_strerror(TW_EALREADYCALLED), "already called"));
    cr_assert_str_eq(tw_err_name(TW_ENOTRUNNING), "ENOTRUNNING");
    cr_assert_lt(TW_EUSER, TW__ERRNO_LIMIT);
}

TW_TEST(error, errno_codes_map_to_libc)
{
    cr_assert_eq(TW_ENOMEM, -ENOMEM);
    cr_assert_str_eq(tw_err_name(TW_ENOMEM), "ENOMEM");
    cr_assert_str_eq(tw_err_name(-ECONNRESET), "ECONNRESET");
    cr_assert_str_eq(tw_strerror(-ECONNRESET), "connection reset by peer");
    cr_assert_str_eq(tw_strerror(-EROFS), strerror(EROFS)); /* unmapped: libc names it */
}

TW_TEST(error, unknown_codes_are_safe)
{
    cr_assert_str_eq(tw_err_name(-999999), "UNKNOWN");
    cr_assert_str_eq(tw_strerror(-999999), "unknown error");
    cr_assert_str_eq(tw_strerror(12345), "unknown error");
    cr_assert_str_eq(tw_strerror(0), "success");
}
