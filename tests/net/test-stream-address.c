/* Addresses (transport.h): from IP literals and Unix paths, formatted. */
#include <arpa/inet.h>
#include <net/if.h>
#include <string.h>

#include "twtest.h"
#include <twine/transport.h>

static const char *fmt(const tw_address *a)
{
    static char buf[TW_ADDRESS_STRLEN];
    return tw_address_format(a, buf, sizeof buf);
}

TW_TEST(address, ipv4)
{
    tw_address a;
    cr_assert_eq(tw_address_from_ip(&a, "127.0.0.1", 8080), 0);
    cr_assert_eq(a.u.sa.sa_family, AF_INET);
    cr_assert_eq(a.len, sizeof(struct sockaddr_in));
    cr_assert_eq(ntohl(a.u.in.sin_addr.s_addr), INADDR_LOOPBACK);
    cr_assert_eq(tw_address_port(&a), 8080);
    cr_assert_str_eq(fmt(&a), "127.0.0.1:8080");
    cr_assert_eq(tw_address_from_ip(&a, "0.0.0.0", 0), 0);
    cr_assert_str_eq(fmt(&a), "0.0.0.0:0");
}

TW_TEST(address, ipv6_and_scopes)
{
    tw_address a;
    cr_assert_eq(tw_address_from_ip(&a, "::1", 443), 0);
    cr_assert_eq(a.u.sa.sa_family, AF_INET6);
    cr_assert_eq(a.len, sizeof(struct sockaddr_in6));
    cr_assert_str_eq(fmt(&a), "[::1]:443");
    cr_assert_eq(tw_address_port(&a), 443);
    cr_assert_eq(tw_address_from_ip(&a, "fe80::1%2", 80), 0);
    cr_assert_eq(a.u.in6.sin6_scope_id, 2);
    cr_assert_str_eq(fmt(&a), "[fe80::1%2]:80");
    unsigned lo = if_nametoindex("lo");
    if (lo) {
        cr_assert_eq(tw_address_from_ip(&a, "fe80::1%lo", 1), 0);
        cr_assert_eq(a.u.in6.sin6_scope_id, lo);
    }
    cr_assert_eq(tw_address_from_ip(&a, "fe80::1%no-such-if0", 1), TW_EINVAL);
    cr_assert_eq(tw_address_from_ip(&a, "fe80::1%", 1), TW_EINVAL);
    cr_assert_eq(tw_address_from_ip(&a, "fe80::1%2x", 1), TW_EINVAL);
    cr_assert_eq(tw_address_from_ip(&a, "%lo", 1), TW_EINVAL);
}

TW_TEST(address, bad_literals)
{
    tw_address a;
    memset(&a, 0x5a, sizeof a);
    tw_address before = a;
    cr_assert_eq(tw_address_from_ip(&a, "localhost", 1), TW_EINVAL);
    cr_assert_eq(tw_address_from_ip(&a, "1.2.3.4", 65536), TW_EINVAL);
    cr_assert_eq(tw_address_from_ip(&a, "1.2.3", 1), TW_EINVAL);
    cr_assert_eq(tw_address_from_ip(&a, "", 1), TW_EINVAL);
    cr_assert_eq(tw_address_from_ip(&a, NULL, 1), TW_EINVAL);
    cr_assert_eq(tw_address_from_ip(NULL, "::1", 1), TW_EINVAL);
    cr_assert_eq(memcmp(&a, &before, sizeof a), 0, "untouched on error");
    cr_assert_eq(tw_address_from_ip(&a, "1.2.3.4", 65535), 0);
}

TW_TEST(address, unix_paths)
{
    tw_address a;
    cr_assert_eq(tw_address_from_unix(&a, "/run/app.sock", 13, false), 0);
    cr_assert_eq(a.u.sa.sa_family, AF_UNIX);
    cr_assert_str_eq(a.u.un.sun_path, "/run/app.sock");
    cr_assert_str_eq(fmt(&a), "/run/app.sock");
    cr_assert_eq(tw_address_port(&a), 0);
    cr_assert_eq(tw_address_from_unix(&a, "a\0b", 3, true), 0);
    cr_assert_eq(a.u.un.sun_path[0], '\0');
    cr_assert_eq(a.len, offsetof(struct sockaddr_un, sun_path) + 4);
    cr_assert_str_eq(fmt(&a), "@a\\x00b");
    cr_assert_eq(tw_address_from_unix(&a, "x\\y\n", 4, false), 0);
    cr_assert_str_eq(fmt(&a), "x\\x5cy\\x0a");
    char longest[107];
    memset(longest, 'p', sizeof longest);
    cr_assert_eq(tw_address_from_unix(&a, longest, 107, false), 0);
    cr_assert_eq(tw_address_from_unix(&a, longest, 107, true), 0);
    char too_long[108];
    memset(too_long, 'p', sizeof too_long);
    cr_assert_eq(tw_address_from_unix(&a, too_long, 108, false), TW_EINVAL);
    cr_assert_eq(tw_address_from_unix(&a, too_long, 108, true), TW_EINVAL);
    cr_assert_eq(tw_address_from_unix(&a, "", 0, false), TW_EINVAL);
    cr_assert_eq(tw_address_from_unix(&a, "a\0b", 3, false), TW_EINVAL, "NUL in a file path");
    cr_assert_eq(tw_address_from_unix(&a, NULL, 3, false), TW_EINVAL);
}

TW_TEST(address, format_special_and_cut)
{
    tw_address a = {0};
    cr_assert_str_eq(fmt(&a), "none");
    cr_assert_str_eq(fmt(NULL), "none");
    a.u.un.sun_family = AF_UNIX;
    a.len = sizeof(sa_family_t);
    cr_assert_str_eq(fmt(&a), "unnamed");
    a.u.sa.sa_family = AF_APPLETALK;
    a.len = 16;
    cr_assert_str_eq(fmt(&a), "family 5");
    /* The longest form fits TW_ADDRESS_STRLEN exactly. */
    char bytes[107];
    memset(bytes, 0x01, sizeof bytes);
    cr_assert_eq(tw_address_from_unix(&a, bytes, sizeof bytes, false), 0);
    char buf[TW_ADDRESS_STRLEN];
    tw_address_format(&a, buf, sizeof buf);
    cr_assert_eq(strlen(buf), 107 * 4);
    /* Short buffers get a cut, terminated string. */
    cr_assert_eq(tw_address_from_ip(&a, "192.168.100.200", 65535), 0);
    char small[8];
    memset(small, 'Z', sizeof small);
    cr_assert_str_eq(tw_address_format(&a, small, sizeof small), "192.168");
    char one[1] = {'Z'};
    cr_assert_str_eq(tw_address_format(&a, one, 1), "");
    char zero[1] = {'Z'};
    tw_address_format(&a, zero, 0);
    cr_assert_eq(zero[0], 'Z');
}
