/* The PROXY protocol header parser: every valid form of versions 1 and 2,
 * every invalid form, each input at every prefix length (a proper prefix of
 * a valid header is incomplete; an invalid verdict never turns back into
 * incomplete), bytes after the header untouched, and the TLV iterator. */
#include "twtest.h"
#include <twine/proxy.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

/* ---- Helpers */

/* Parses a copy of data[0..len) in a buffer of exactly len bytes, so ASan
 * catches any read past the bytes given. */
static int parse_exact(const void *data, size_t len, tw_proxy_header *h)
{
    void *copy = malloc(len ? len : 1);
    cr_assert_not_null(copy);
    if (len)
        memcpy(copy, data, len);
    int rc = tw_proxy_parse(copy, len, h);
    /* The TLV slice must point into the buffer parsed; re-aim it at data so
     * the caller can use it after the copy is gone. */
    if (rc > 0 && h->tlv) {
        cr_assert(h->tlv >= (const uint8_t *)copy && h->tlv + h->tlv_len <= (uint8_t *)copy + rc);
        h->tlv = (const uint8_t *)data + (h->tlv - (const uint8_t *)copy);
    }
    free(copy);
    return rc;
}

/* Asserts data[0..len) is a valid header of exactly len bytes: every proper
 * prefix is incomplete, the whole gives len, and trailing bytes are not
 * consumed (nor change the answer). Fills *h from the whole. */
static void expect_valid(const void *data, size_t len, tw_proxy_header *h)
{
    tw_proxy_header tmp;
    for (size_t k = 0; k < len; k++) {
        int rc = len < 1024 ? parse_exact(data, k, &tmp) : tw_proxy_parse(data, k, &tmp);
        cr_assert_eq(rc, TW_EAGAIN, "prefix %zu of %zu: rc %d (%s)", k, len, rc,
                     tmp.error ? tmp.error : "");
        cr_assert_null(tmp.error);
    }
    int rc = parse_exact(data, len, h);
    cr_assert_eq(rc, (int)len, "whole: rc %d, want %zu (%s)", rc, len, h->error ? h->error : "");
    cr_assert_eq(h->header_len, len);
    cr_assert_null(h->error);

    /* Followed by the real protocol's bytes, including ones that look like
     * another header. */
    static const char tail[] = "PROXY TCP4 GET / HTTP/1.1\r\n\r\n\r\n\0\r\nQUIT\n";
    size_t total = len + sizeof tail;
    char *more = malloc(total);
    memcpy(more, data, len);
    memcpy(more + len, tail, sizeof tail);
    rc = parse_exact(more, total, &tmp);
    cr_assert_eq(rc, (int)len, "with a tail: rc %d, want %zu", rc, len);
    cr_assert_eq(tmp.version, h->version);
    cr_assert_eq(tmp.src_len, h->src_len);
    cr_assert_eq(memcmp(&tmp.src, &h->src, h->src_len), 0);
    cr_assert_eq(memcmp(&tmp.dst, &h->dst, h->dst_len), 0);
    free(more);
}

/* Asserts data[0..len) is invalid: the whole gives TW_EINVAL with a reason
 * holding `needle`, and once a prefix is invalid every longer one is too
 * (so no prefix of it could have been waited on forever). Returns the
 * shortest invalid prefix length. */
static size_t expect_invalid(const void *data, size_t len, const char *needle)
{
    tw_proxy_header h;
    size_t first = len + 1;
    for (size_t k = 0; k <= len; k++) {
        int rc = parse_exact(data, k, &h);
        if (rc == TW_EINVAL) {
            cr_assert_not_null(h.error);
            if (first > len)
                first = k;
        } else {
            cr_assert_eq(rc, TW_EAGAIN, "prefix %zu: rc %d", k, rc);
            cr_assert(first > len, "prefix %zu incomplete after invalid at %zu", k, first);
        }
    }
    int rc = parse_exact(data, len, &h);
    cr_assert_eq(rc, TW_EINVAL, "rc %d for an invalid header", rc);
    cr_assert_not_null(h.error);
    cr_assert_not_null(strstr(h.error, needle), "error \"%s\" lacks \"%s\"", h.error, needle);
    return first;
}

static void valid_str(const char *s, tw_proxy_header *h)
{
    expect_valid(s, strlen(s), h);
}

static void invalid_str(const char *s, const char *needle)
{
    expect_invalid(s, strlen(s), needle);
}

static void check_in(const struct sockaddr_storage *ss, socklen_t len, const char *addr,
                     uint16_t port)
{
    const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
    cr_assert_eq(len, sizeof *sin);
    cr_assert_eq(sin->sin_family, AF_INET);
    char buf[INET_ADDRSTRLEN];
    cr_assert_not_null(inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof buf));
    cr_assert_str_eq(buf, addr);
    cr_assert_eq(ntohs(sin->sin_port), port);
}

static void check_in6(const struct sockaddr_storage *ss, socklen_t len, const char *addr,
                      uint16_t port)
{
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
    cr_assert_eq(len, sizeof *sin6);
    cr_assert_eq(sin6->sin6_family, AF_INET6);
    struct in6_addr want;
    cr_assert_eq(inet_pton(AF_INET6, addr, &want), 1);
    cr_assert_eq(memcmp(&sin6->sin6_addr, &want, sizeof want), 0);
    cr_assert_eq(ntohs(sin6->sin6_port), port);
}

/* ---- Version 1: valid */

TW_TEST(proxy_v1, tcp4)
{
    tw_proxy_header h;
    valid_str("PROXY TCP4 192.168.0.1 10.0.0.2 56324 443\r\n", &h);
    cr_assert_eq(h.version, 1);
    cr_assert_eq(h.command, TW_PROXY_CMD_PROXY);
    cr_assert_eq(h.transport, TW_PROXY_TRANSPORT_STREAM);
    cr_assert_eq(h.family, AF_INET);
    check_in(&h.src, h.src_len, "192.168.0.1", 56324);
    check_in(&h.dst, h.dst_len, "10.0.0.2", 443);
    cr_assert_null(h.tlv);
    cr_assert_eq(h.tlv_len, 0);

    valid_str("PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n", &h);
    check_in(&h.src, h.src_len, "0.0.0.0", 0);
    check_in(&h.dst, h.dst_len, "255.255.255.255", 65535);
}

TW_TEST(proxy_v1, tcp6)
{
    tw_proxy_header h;
    valid_str("PROXY TCP6 2001:db8::1 ::1 1 8080\r\n", &h);
    cr_assert_eq(h.family, AF_INET6);
    cr_assert_eq(h.transport, TW_PROXY_TRANSPORT_STREAM);
    check_in6(&h.src, h.src_len, "2001:db8::1", 1);
    check_in6(&h.dst, h.dst_len, "::1", 8080);

    valid_str("PROXY TCP6 ::ffff:1.2.3.4 FE80::A 65535 65535\r\n", &h);
    check_in6(&h.src, h.src_len, "::ffff:1.2.3.4", 65535);
    check_in6(&h.dst, h.dst_len, "fe80::a", 65535);

    /* The longest TCP6 line (104 bytes). */
    const char *longest = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                          "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    cr_assert_eq(strlen(longest), 104);
    valid_str(longest, &h);
    check_in6(&h.src, h.src_len, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535);
}

TW_TEST(proxy_v1, unknown)
{
    tw_proxy_header h;
    valid_str("PROXY UNKNOWN\r\n", &h);
    cr_assert_eq(h.version, 1);
    cr_assert_eq(h.command, TW_PROXY_CMD_PROXY);
    cr_assert_eq(h.transport, TW_PROXY_TRANSPORT_UNKNOWN);
    cr_assert_eq(h.family, AF_UNSPEC);
    cr_assert_eq(h.src_len, 0);
    cr_assert_eq(h.dst_len, 0);

    /* Whatever follows UNKNOWN is ignored, even what TCP4 would refuse. */
    valid_str("PROXY UNKNOWN ffff::1 junk!  x 99999\r\n", &h);
    cr_assert_eq(h.src_len, 0);

    /* Exactly 107 bytes is the longest line. */
    char line[TW_PROXY_V1_MAX + 1];
    memset(line, 'x', sizeof line);
    memcpy(line, "PROXY UNKNOWN ", 14);
    memcpy(line + TW_PROXY_V1_MAX - 2, "\r\n", 2);
    expect_valid(line, TW_PROXY_V1_MAX, &h);
    cr_assert_eq(h.header_len, 107);
}

/* ---- Version 1: invalid */

TW_TEST(proxy_v1, bad_addresses)
{
    invalid_str("PROXY TCP4 1.2.3 1.2.3.4 1 2\r\n", "source address");
    invalid_str("PROXY TCP4 1.2.3.256 1.2.3.4 1 2\r\n", "source address");
    invalid_str("PROXY TCP4 1.2.3.4 1.2.3.4.5 1 2\r\n", "destination address");
    invalid_str("PROXY TCP4 ::1 1.2.3.4 1 2\r\n", "source address");
    invalid_str("PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "source address");
    invalid_str("PROXY TCP6 ::1 1::2::3 1 2\r\n", "destination address");
    invalid_str("PROXY TCP6 ::1 12345::1 1 2\r\n", "destination address");
    invalid_str("PROXY TCP4 1.2.3.4 1.2.3.x 1 2\r\n", "invalid character");
    invalid_str("PROXY TCP4 localhost 1.2.3.4 1 2\r\n", "invalid character");
    invalid_str("PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "invalid character");
    /* Longer than any address. */
    invalid_str("PROXY TCP6 0000:0000:0000:0000:0000:0000:0000:0000:0 ::1 1 2\r\n",
                "source address");
}

TW_TEST(proxy_v1, bad_ports)
{
    invalid_str("PROXY TCP4 1.2.3.4 5.6.7.8 65536 1\r\n", "source port");
    invalid_str("PROXY TCP4 1.2.3.4 5.6.7.8 1 100000\r\n", "destination port");
    invalid_str("PROXY TCP4 1.2.3.4 5.6.7.8 01 1\r\n", "source port");
    invalid_str("PROXY TCP4 1.2.3.4 5.6.7.8 1 00\r\n", "destination port");
    invalid_str("PROXY TCP4 1.2.3.4 5.6.7.8 ab 1\r\n", "source port");
    invalid_str("PROXY TCP4 1.2.3.4 5.6.7.8 +1 1\r\n", "invalid character");
    invalid_str("PROXY TCP4 1.2.3.4 5.6.7.8 -1 1\r\n", "invalid character");
    invalid_str("PROXY TCP4 1.2.3.4 5.6.7.8 1 \t2\r\n", "invalid character");
    invalid_str("PROXY TCP4 1.2.3.4 5.6.7.8 99999999999999999999 1\r\n", "source port");
}

TW_TEST(proxy_v1, bad_structure)
{
    invalid_str("PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "too many fields");
    invalid_str("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "too many fields");
    invalid_str("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "too many fields");
    invalid_str("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "too few fields");
    invalid_str("PROXY TCP4 \r\n", "too few fields");
    invalid_str("PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "too many fields");
    invalid_str("PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "unknown protocol");
    invalid_str("PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "unknown protocol");
    invalid_str("PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", "unknown protocol");
    invalid_str("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", "unknown protocol");
    invalid_str("PROXY TCP4\r\n", "unknown protocol");
    invalid_str("PROXY UNKNOWNX\r\n", "unknown protocol");
    invalid_str("PROXY UNKNOW\r\n", "unknown protocol");
    invalid_str("PROXY \r\n", "unknown protocol");
    invalid_str("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "LF without CR");
    invalid_str("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rx", "CR not followed by LF");
    invalid_str("PROXY UNKNOWN a\nb\r\n", "LF without CR");
    invalid_str("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", "CR not followed by LF");
}

TW_TEST(proxy_v1, too_long)
{
    /* 107 bytes with no CRLF: invalid at once, never waiting for more. */
    char line[TW_PROXY_V1_MAX + 2];
    memset(line, 'x', sizeof line);
    memcpy(line, "PROXY UNKNOWN ", 14);
    size_t first = expect_invalid(line, TW_PROXY_V1_MAX, "107");
    cr_assert_eq(first, TW_PROXY_V1_MAX);
    /* A CRLF just past the limit (108 bytes): the CR at byte 106 decides. */
    memcpy(line + TW_PROXY_V1_MAX - 1, "\r\n", 2);
    first = expect_invalid(line, TW_PROXY_V1_MAX + 1, "107");
    cr_assert_eq(first, TW_PROXY_V1_MAX);

    /* TCP4 padded with characters an address may hold. */
    char tcp[200];
    memset(tcp, '1', sizeof tcp);
    memcpy(tcp, "PROXY TCP4 ", 11);
    expect_invalid(tcp, sizeof tcp, "107");
}

/* ---- Signatures */

TW_TEST(proxy_sig, neither)
{
    /* Each is invalid from the first byte that disagrees with both
     * signatures. */
    cr_assert_eq(expect_invalid("GET / HTTP/1.1\r\n", 16, "signature"), 1);
    cr_assert_eq(expect_invalid("PROXX TCP4", 10, "signature"), 5);
}

TW_TEST(proxy_sig, prefixes)
{
    tw_proxy_header h;
    cr_assert_eq(tw_proxy_parse("", 0, &h), TW_EAGAIN);
    cr_assert_eq(tw_proxy_parse(NULL, 0, &h), TW_EAGAIN);
    cr_assert_eq(tw_proxy_parse("PROXY", 5, &h), TW_EAGAIN);
    cr_assert_eq(tw_proxy_parse("\r\n\r\n\0\r\nQUIT", 11, &h), TW_EAGAIN);
    cr_assert_eq(expect_invalid("\r\n\r\n\0\r\nQUIX", 11, "signature"), 11);
    cr_assert_eq(expect_invalid("\r\n\r\n\1", 5, "signature"), 5);
    cr_assert_eq(expect_invalid("\r\r", 2, "signature"), 2);
    cr_assert_eq(expect_invalid("\r\n\r\n\0\r\nQUIT\r", 12, "signature"), 12);
}

TW_TEST(proxy_sig, bad_arguments)
{
    tw_proxy_header h;
    cr_assert_eq(tw_proxy_parse("PROXY UNKNOWN\r\n", 15, NULL), TW_EINVAL);
    cr_assert_eq(tw_proxy_parse(NULL, 3, &h), TW_EINVAL);
    cr_assert_not_null(h.error);
}

/* ---- Version 2 */

static const uint8_t sig2[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};

/* Writes a v2 header with ver_cmd, fam, and the block body[0..blen) into
 * buf; returns its length. */
static size_t v2(uint8_t *buf, uint8_t ver_cmd, uint8_t fam, const void *body, size_t blen)
{
    memcpy(buf, sig2, 12);
    buf[12] = ver_cmd;
    buf[13] = fam;
    buf[14] = (uint8_t)(blen >> 8);
    buf[15] = (uint8_t)blen;
    if (blen)
        memcpy(buf + 16, body, blen);
    return 16 + blen;
}

TW_TEST(proxy_v2, local)
{
    uint8_t buf[64];
    tw_proxy_header h;
    size_t n = v2(buf, 0x20, 0x00, NULL, 0);
    expect_valid(buf, n, &h);
    cr_assert_eq(h.version, 2);
    cr_assert_eq(h.command, TW_PROXY_CMD_LOCAL);
    cr_assert_eq(h.family, AF_UNSPEC);
    cr_assert_eq(h.src_len, 0);
    cr_assert_eq(h.dst_len, 0);
    cr_assert_null(h.tlv);

    /* LOCAL ignores the family and its addresses; what follows them is the
     * TLV area. */
    uint8_t body[15] = {1, 2, 3, 4, 5, 6, 7, 8, 0, 80, 0, 81, 0x04, 0, 0};
    n = v2(buf, 0x20, 0x11, body, sizeof body);
    expect_valid(buf, n, &h);
    cr_assert_eq(h.command, TW_PROXY_CMD_LOCAL);
    cr_assert_eq(h.src_len, 0);
    cr_assert_eq(h.tlv_len, 3);
    cr_assert_eq(h.tlv, buf + 16 + 12);

    /* Even an unknown family, or one whose addresses do not fit. */
    n = v2(buf, 0x20, 0x77, body, 5);
    expect_valid(buf, n, &h);
    cr_assert_eq(h.tlv_len, 0);
    n = v2(buf, 0x20, 0x21, body, 5);
    expect_valid(buf, n, &h);
    cr_assert_eq(h.src_len, 0);
}

TW_TEST(proxy_v2, inet)
{
    uint8_t buf[64];
    tw_proxy_header h;
    uint8_t body[12] = {192, 168, 0, 1, 10, 0, 0, 2, 0xdc, 0x04, 0x01, 0xbb};
    size_t n = v2(buf, 0x21, 0x11, body, sizeof body);
    expect_valid(buf, n, &h);
    cr_assert_eq(h.command, TW_PROXY_CMD_PROXY);
    cr_assert_eq(h.transport, TW_PROXY_TRANSPORT_STREAM);
    cr_assert_eq(h.family, AF_INET);
    check_in(&h.src, h.src_len, "192.168.0.1", 56324);
    check_in(&h.dst, h.dst_len, "10.0.0.2", 443);
    cr_assert_null(h.tlv);
    cr_assert_eq(h.tlv_len, 0);

    n = v2(buf, 0x21, 0x12, body, sizeof body);
    expect_valid(buf, n, &h);
    cr_assert_eq(h.transport, TW_PROXY_TRANSPORT_DGRAM);
}

TW_TEST(proxy_v2, inet6)
{
    uint8_t buf[64];
    tw_proxy_header h;
    uint8_t body[36] = {0};
    inet_pton(AF_INET6, "2001:db8::1", body);
    inet_pton(AF_INET6, "::1", body + 16);
    body[32] = 0x1f;
    body[33] = 0x90;
    body[35] = 1;
    size_t n = v2(buf, 0x21, 0x22, body, sizeof body);
    expect_valid(buf, n, &h);
    cr_assert_eq(h.family, AF_INET6);
    cr_assert_eq(h.transport, TW_PROXY_TRANSPORT_DGRAM);
    check_in6(&h.src, h.src_len, "2001:db8::1", 8080);
    check_in6(&h.dst, h.dst_len, "::1", 1);

    n = v2(buf, 0x21, 0x21, body, sizeof body);
    expect_valid(buf, n, &h);
    cr_assert_eq(h.transport, TW_PROXY_TRANSPORT_STREAM);
}

TW_TEST(proxy_v2, unix_paths)
{
    uint8_t buf[300];
    tw_proxy_header h;
    uint8_t body[216] = {0};
    memcpy(body, "/run/client.sock", 16);
    body[108] = 0; /* abstract "\0srv" */
    memcpy(body + 109, "srv", 3);
    size_t n = v2(buf, 0x21, 0x31, body, sizeof body);
    expect_valid(buf, n, &h);
    cr_assert_eq(h.family, AF_UNIX);
    cr_assert_eq(h.transport, TW_PROXY_TRANSPORT_STREAM);
    const struct sockaddr_un *s = (const struct sockaddr_un *)&h.src;
    const struct sockaddr_un *d = (const struct sockaddr_un *)&h.dst;
    cr_assert_eq(s->sun_family, AF_UNIX);
    cr_assert_str_eq(s->sun_path, "/run/client.sock");
    cr_assert_eq(h.src_len, offsetof(struct sockaddr_un, sun_path) + 17);
    cr_assert_eq(d->sun_family, AF_UNIX);
    cr_assert_eq(h.dst_len, offsetof(struct sockaddr_un, sun_path) + 4);
    cr_assert_eq(memcmp(d->sun_path, "\0srv", 4), 0);

    /* A full 108-byte path without NUL; an unnamed (all-zero) one. */
    memset(body, 'p', 108);
    memset(body + 108, 0, 108);
    n = v2(buf, 0x21, 0x32, body, sizeof body);
    expect_valid(buf, n, &h);
    cr_assert_eq(h.transport, TW_PROXY_TRANSPORT_DGRAM);
    cr_assert_eq(h.src_len, offsetof(struct sockaddr_un, sun_path) + 108);
    cr_assert_eq(h.dst_len, offsetof(struct sockaddr_un, sun_path));
}

TW_TEST(proxy_v2, unspec)
{
    uint8_t buf[64];
    tw_proxy_header h;
    uint8_t body[4] = {0x04, 0, 1, 0xaa};
    size_t n = v2(buf, 0x21, 0x00, body, sizeof body);
    expect_valid(buf, n, &h);
    cr_assert_eq(h.command, TW_PROXY_CMD_PROXY);
    cr_assert_eq(h.family, AF_UNSPEC);
    cr_assert_eq(h.transport, TW_PROXY_TRANSPORT_UNKNOWN);
    cr_assert_eq(h.src_len, 0);
    cr_assert_eq(h.tlv, buf + 16);
    cr_assert_eq(h.tlv_len, 4);
}

TW_TEST(proxy_v2, tlvs)
{
    uint8_t buf[128];
    tw_proxy_header h;
    uint8_t body[12 + 5 + 3 + 8 + 3] = {127, 0, 0, 1, 127, 0, 0, 1, 0, 1, 0, 2};
    uint8_t *t = body + 12;
    memcpy(t, "\x01\x00\x02h2", 5);   /* ALPN "h2" */
    memcpy(t + 5, "\x04\x00\x00", 3); /* NOOP, empty */
    memcpy(t + 8,
           "\x02\x00\x05"
           "a.com",
           8);                         /* AUTHORITY */
    memcpy(t + 16, "\x30\x00\x00", 3); /* NETNS, empty */
    size_t n = v2(buf, 0x21, 0x11, body, sizeof body);
    expect_valid(buf, n, &h);
    cr_assert_eq(h.tlv, buf + 28);
    cr_assert_eq(h.tlv_len, 19);

    tw_proxy_tlv_iter it;
    tw_proxy_tlv_iter_init(&it, &h);
    tw_proxy_tlv tlv;
    static const struct {
        uint8_t type;
        uint16_t len;
        const char *value;
    } want[] = {{TW_PROXY_TLV_ALPN, 2, "h2"},
                {TW_PROXY_TLV_NOOP, 0, ""},
                {TW_PROXY_TLV_AUTHORITY, 5, "a.com"},
                {TW_PROXY_TLV_NETNS, 0, ""}};
    for (size_t i = 0; i < 4; i++) {
        cr_assert_eq(tw_proxy_tlv_next(&it, &tlv), 1, "entry %zu", i);
        cr_assert_eq(tlv.type, want[i].type);
        cr_assert_eq(tlv.len, want[i].len);
        cr_assert_eq(memcmp(tlv.value, want[i].value, tlv.len), 0);
        cr_assert(tlv.value >= h.tlv && tlv.value + tlv.len <= h.tlv + h.tlv_len);
    }
    cr_assert_eq(tw_proxy_tlv_next(&it, &tlv), 0);
    cr_assert_eq(tw_proxy_tlv_next(&it, &tlv), 0);

    /* A header without TLVs iterates to nothing. */
    n = v2(buf, 0x21, 0x11, body, 12);
    expect_valid(buf, n, &h);
    tw_proxy_tlv_iter_init(&it, &h);
    cr_assert_eq(tw_proxy_tlv_next(&it, &tlv), 0);
}

TW_TEST(proxy_v2, tlv_overrun)
{
    /* The parser accepts the header; the iterator refuses the entry that
     * runs past the end, after the good ones, and keeps refusing. */
    uint8_t buf[64];
    tw_proxy_header h;
    uint8_t body[12 + 5 + 4] = {1, 1, 1, 1, 2, 2, 2, 2, 0, 1, 0, 2};
    memcpy(body + 12, "\x01\x00\x02h2", 5);
    memcpy(body + 17, "\x02\x00\x02x", 4); /* claims 2 bytes, has 1 */
    size_t n = v2(buf, 0x21, 0x11, body, sizeof body);
    expect_valid(buf, n, &h);
    tw_proxy_tlv_iter it;
    tw_proxy_tlv tlv;
    tw_proxy_tlv_iter_init(&it, &h);
    cr_assert_eq(tw_proxy_tlv_next(&it, &tlv), 1);
    cr_assert_eq(tw_proxy_tlv_next(&it, &tlv), TW_EINVAL);
    cr_assert_eq(tw_proxy_tlv_next(&it, &tlv), TW_EINVAL);

    /* A head cut short (1 and 2 bytes left). */
    for (size_t left = 1; left < 3; left++) {
        tw_proxy_tlv_iter_init_raw(&it, "\x04\x00\x00\x04\x00", 3 + left);
        cr_assert_eq(tw_proxy_tlv_next(&it, &tlv), 1);
        cr_assert_eq(tw_proxy_tlv_next(&it, &tlv), TW_EINVAL, "head of %zu bytes", left);
    }
    /* A value of 65535 in an area of 3 bytes; nothing read past it (ASan). */
    uint8_t *area = malloc(3);
    memcpy(area, "\x05\xff\xff", 3);
    tw_proxy_tlv_iter_init_raw(&it, area, 3);
    cr_assert_eq(tw_proxy_tlv_next(&it, &tlv), TW_EINVAL);
    free(area);
    tw_proxy_tlv_iter_init_raw(&it, NULL, 0);
    cr_assert_eq(tw_proxy_tlv_next(&it, &tlv), 0);
}

TW_TEST(proxy_v2, bad_version_command_family)
{
    uint8_t buf[64];
    uint8_t body[36] = {0};
    size_t n;
    /* Versions other than 2 are invalid as soon as byte 12 arrives. */
    static const uint8_t bad_ver[] = {0x01, 0x11, 0x31, 0xf1, 0x00};
    for (size_t i = 0; i < sizeof bad_ver; i++) {
        n = v2(buf, bad_ver[i], 0x11, body, 12);
        cr_assert_eq(expect_invalid(buf, n, "version"), 13);
    }
    for (uint8_t cmd = 2; cmd < 16; cmd++) {
        n = v2(buf, (uint8_t)(0x20 | cmd), 0x11, body, 12);
        cr_assert_eq(expect_invalid(buf, n, "command"), 13);
    }
    /* PROXY takes only UNSPEC/UNSPEC and INET, INET6, UNIX over STREAM or
     * DGRAM: everything else is invalid once byte 13 arrives. */
    for (unsigned b = 0; b < 256; b++) {
        unsigned fam = b >> 4, tr = b & 15;
        int good = b == 0 || (fam >= 1 && fam <= 3 && (tr == 1 || tr == 2));
        if (good)
            continue;
        n = v2(buf, 0x21, (uint8_t)b, body, 36);
        cr_assert_eq(expect_invalid(buf, n, "family"), 14, "byte 13 = 0x%02x", b);
    }
}

TW_TEST(proxy_v2, short_length)
{
    uint8_t buf[300];
    uint8_t body[216] = {0};
    static const struct {
        uint8_t fam;
        size_t need;
    } fams[] = {{0x11, 12}, {0x12, 12}, {0x21, 36}, {0x22, 36}, {0x31, 216}, {0x32, 216}};
    for (size_t i = 0; i < 6; i++) {
        /* Invalid once the length field is read: no waiting for the block. */
        size_t n = v2(buf, 0x21, fams[i].fam, body, fams[i].need - 1);
        cr_assert_eq(expect_invalid(buf, n, "too short"), 16);
        n = v2(buf, 0x21, fams[i].fam, body, 0);
        cr_assert_eq(expect_invalid(buf, n, "too short"), 16);
        /* Exactly the addresses is fine. */
        tw_proxy_header h;
        n = v2(buf, 0x21, fams[i].fam, body, fams[i].need);
        expect_valid(buf, n, &h);
        cr_assert_eq(h.tlv_len, 0);
    }
}

TW_TEST(proxy_v2, longest)
{
    /* The bound: 16 + 65535 bytes, of which all the prefixes are incomplete. */
    size_t n = TW_PROXY_V2_MAX;
    uint8_t *buf = calloc(1, n);
    uint8_t *body = calloc(1, 65535);
    /* Addresses, then NOOP TLVs filling the rest. */
    size_t off = 12;
    while (off + 3 <= 65535) {
        size_t vlen = 65535 - off - 3;
        if (vlen > 60000)
            vlen = 60000;
        body[off] = TW_PROXY_TLV_NOOP;
        body[off + 1] = (uint8_t)(vlen >> 8);
        body[off + 2] = (uint8_t)vlen;
        off += 3 + vlen;
    }
    cr_assert_eq(off, 65535);
    cr_assert_eq(v2(buf, 0x21, 0x11, body, 65535), n);
    tw_proxy_header h;
    expect_valid(buf, n, &h);
    cr_assert_eq(h.tlv_len, 65535 - 12);
    tw_proxy_tlv_iter it;
    tw_proxy_tlv tlv;
    tw_proxy_tlv_iter_init(&it, &h);
    int count = 0, rc;
    while ((rc = tw_proxy_tlv_next(&it, &tlv)) == 1)
        count++;
    cr_assert_eq(rc, 0);
    cr_assert_eq(count, 2);
    free(body);
    free(buf);
}
