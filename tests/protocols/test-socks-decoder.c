/* The SOCKS decoder, replies and allow list (socks.h): every valid form and
 * every malformed one, each fed whole, at every split, and byte by byte. */
#include <arpa/inet.h>
#include <string.h>

#include <twine/socks.h>

#include "twtest.h"

/* ---- Running the decoder over a client's bytes */

#define MAX_EVENTS 8

struct run {
    tw_socks_decoder d;
    int events[MAX_EVENTS];
    size_t nevents;
    size_t taken;   /* bytes consumed before the last event */
    bool over;      /* REQUEST or ERROR */
    uint8_t method; /* the answer to METHODS */
};

static void run_init(struct run *r, uint8_t method)
{
    memset(r, 0, sizeof *r);
    tw_socks_decoder_init(&r->d);
    r->method = method;
}

static void run_feed(void *ctx, const char *data, size_t len)
{
    struct run *r = ctx;
    while (len > 0 && !r->over) {
        size_t used = 99;
        int ev = tw_socks_decode(&r->d, data, len, &used);
        cr_assert_geq(ev, 0);
        cr_assert_leq(used, len);
        r->taken += used;
        data += used;
        len -= used;
        if (ev == TW_SOCKS_MORE) {
            cr_assert_eq(len, 0, "MORE takes every byte");
            continue;
        }
        cr_assert_lt(r->nevents, MAX_EVENTS);
        r->events[r->nevents++] = ev;
        if (ev == TW_SOCKS_METHODS)
            cr_assert_eq(tw_socks_decoder_method(&r->d, r->method), 0);
        if (ev == TW_SOCKS_REQUEST || ev == TW_SOCKS_ERROR)
            r->over = true;
    }
}

static void same_run(const struct run *a, const struct run *b, const char *how, size_t n)
{
    cr_assert_eq(a->nevents, b->nevents, "%s %zu", how, n);
    for (size_t i = 0; i < a->nevents; i++)
        cr_assert_eq(a->events[i], b->events[i], "%s %zu: event %zu", how, n, i);
    cr_assert_eq(a->taken, b->taken, "%s %zu", how, n);
    const tw_socks_request *x = &a->d.req, *y = &b->d.req;
    cr_assert_eq(x->version, y->version);
    cr_assert_eq(x->command, y->command);
    cr_assert_eq(x->atyp, y->atyp);
    cr_assert_eq(x->port, y->port);
    cr_assert_eq(memcmp(x->addr, y->addr, sizeof x->addr), 0);
    cr_assert_eq(x->name_len, y->name_len);
    cr_assert_eq(memcmp(x->name, y->name, x->name_len + 1), 0);
    cr_assert_eq(x->user_len, y->user_len);
    cr_assert_eq(memcmp(x->user, y->user, x->user_len + 1), 0);
    cr_assert_eq(a->d.password_len, b->d.password_len);
    cr_assert_eq(memcmp(a->d.password, b->d.password, a->d.password_len + 1), 0);
    cr_assert_eq(a->d.nmethods, b->d.nmethods);
    cr_assert_eq(memcmp(a->d.methods, b->d.methods, a->d.nmethods), 0);
    cr_assert_eq(a->d.error, b->d.error, "%s %zu", how, n);
    cr_assert_eq(a->d.reply, b->d.reply);
}

/* Decodes bytes whole, then at every split and in every chunk size, and
 * checks every way gives the same answer; *whole gets it. */
static void decode_all_ways(const void *bytes, size_t len, uint8_t method, struct run *whole)
{
    run_init(whole, method);
    run_feed(whole, bytes, len);
    for (size_t at = 0; at <= len; at++) {
        struct run r;
        run_init(&r, method);
        tw_testing_feed_split(bytes, len, at, run_feed, &r);
        same_run(whole, &r, "split at", at);
    }
    for (size_t chunk = 1; chunk < len; chunk++) {
        struct run r;
        run_init(&r, method);
        tw_testing_feed_chunks(bytes, len, chunk, run_feed, &r);
        same_run(whole, &r, "chunks of", chunk);
    }
}

/* A byte string built by hand. */
struct bytes {
    uint8_t b[1200];
    size_t n;
};

static void put(struct bytes *s, const void *p, size_t n)
{
    cr_assert_leq(s->n + n, sizeof s->b);
    if (n > 0)
        memcpy(s->b + s->n, p, n);
    s->n += n;
}

static void put1(struct bytes *s, uint8_t v)
{
    put(s, &v, 1);
}

static void put_str(struct bytes *s, const char *str)
{
    put(s, str, strlen(str));
}

static void put_fill(struct bytes *s, char c, size_t n)
{
    for (size_t i = 0; i < n; i++)
        put1(s, (uint8_t)c);
}

static void socks4(struct bytes *s, uint8_t cmd, unsigned port, const char *ip)
{
    put1(s, 4);
    put1(s, cmd);
    put1(s, (uint8_t)(port >> 8));
    put1(s, (uint8_t)port);
    uint8_t a[4];
    cr_assert_eq(inet_pton(AF_INET, ip, a), 1);
    put(s, a, 4);
}

static void greeting(struct bytes *s, const uint8_t *methods, size_t n)
{
    put1(s, 5);
    put1(s, (uint8_t)n);
    put(s, methods, n);
}

static void socks5_head(struct bytes *s, uint8_t cmd, uint8_t atyp)
{
    put1(s, 5);
    put1(s, cmd);
    put1(s, 0);
    put1(s, atyp);
}

static void port16(struct bytes *s, unsigned port)
{
    put1(s, (uint8_t)(port >> 8));
    put1(s, (uint8_t)port);
}

static const uint8_t no_auth[] = {TW_SOCKS_METHOD_NONE};

/* ---- Valid forms */

TW_TEST(socks_decoder, socks4_connect)
{
    struct bytes s = {0};
    socks4(&s, TW_SOCKS_CMD_CONNECT, 8080, "192.0.2.7");
    put_str(&s, "alice");
    put1(&s, 0);
    size_t request = s.n;
    put_str(&s, "GET / HTTP/1.0\r\n"); /* bytes for the destination: not taken */
    struct run r;
    decode_all_ways(s.b, s.n, 0, &r);
    cr_assert_eq(r.nevents, 1);
    cr_assert_eq(r.events[0], TW_SOCKS_REQUEST);
    cr_assert_eq(r.taken, request);
    cr_assert_eq(r.d.req.version, 4);
    cr_assert_eq(r.d.req.command, TW_SOCKS_CMD_CONNECT);
    cr_assert_eq(r.d.req.atyp, TW_SOCKS_ATYP_IPV4);
    cr_assert_eq(r.d.req.port, 8080);
    cr_assert_eq(memcmp(r.d.req.addr, "\xc0\x00\x02\x07", 4), 0);
    cr_assert_str_eq(r.d.req.user, "alice");
    cr_assert_eq(r.d.req.user_len, 5);
    cr_assert_eq(r.d.req.name_len, 0);
    cr_assert_null(r.d.error);
}

TW_TEST(socks_decoder, socks4_empty_user_and_bind)
{
    struct bytes s = {0};
    socks4(&s, TW_SOCKS_CMD_BIND, 21, "10.0.0.1");
    put1(&s, 0);
    struct run r;
    decode_all_ways(s.b, s.n, 0, &r);
    cr_assert_eq(r.events[0], TW_SOCKS_REQUEST);
    cr_assert_eq(r.d.req.command, TW_SOCKS_CMD_BIND, "decoded: refusing it is the server's part");
    cr_assert_eq(r.d.req.user_len, 0);
    cr_assert_str_eq(r.d.req.user, "");
}

TW_TEST(socks_decoder, socks4a_names_a_host)
{
    struct bytes s = {0};
    socks4(&s, TW_SOCKS_CMD_CONNECT, 443, "0.0.0.1");
    put_str(&s, "bob");
    put1(&s, 0);
    put_str(&s, "example.org");
    put1(&s, 0);
    struct run r;
    decode_all_ways(s.b, s.n, 0, &r);
    cr_assert_eq(r.events[0], TW_SOCKS_REQUEST);
    cr_assert_eq(r.taken, s.n);
    cr_assert_eq(r.d.req.atyp, TW_SOCKS_ATYP_DOMAIN);
    cr_assert_str_eq(r.d.req.name, "example.org");
    cr_assert_eq(r.d.req.name_len, 11);
    cr_assert_str_eq(r.d.req.user, "bob");
    cr_assert_eq(r.d.req.port, 443);
    static const uint8_t zero[16];
    cr_assert_eq(memcmp(r.d.req.addr, zero, 16), 0);
}

TW_TEST(socks_decoder, socks4_longest_fields)
{
    struct bytes s = {0};
    socks4(&s, TW_SOCKS_CMD_CONNECT, 1, "0.0.0.255");
    put_fill(&s, 'u', TW_SOCKS_MAX_USER);
    put1(&s, 0);
    put_fill(&s, 'n', TW_SOCKS_MAX_NAME);
    put1(&s, 0);
    struct run r;
    decode_all_ways(s.b, s.n, 0, &r);
    cr_assert_eq(r.events[0], TW_SOCKS_REQUEST);
    cr_assert_eq(r.d.req.user_len, TW_SOCKS_MAX_USER);
    cr_assert_eq(r.d.req.name_len, TW_SOCKS_MAX_NAME);
    cr_assert_eq(strlen(r.d.req.name), TW_SOCKS_MAX_NAME);
}

TW_TEST(socks_decoder, socks5_ipv4)
{
    struct bytes s = {0};
    greeting(&s, no_auth, 1);
    socks5_head(&s, TW_SOCKS_CMD_CONNECT, TW_SOCKS_ATYP_IPV4);
    put(&s, "\x7f\x00\x00\x01", 4);
    port16(&s, 80);
    put_str(&s, "early data");
    struct run r;
    decode_all_ways(s.b, s.n, TW_SOCKS_METHOD_NONE, &r);
    cr_assert_eq(r.nevents, 2);
    cr_assert_eq(r.events[0], TW_SOCKS_METHODS);
    cr_assert_eq(r.events[1], TW_SOCKS_REQUEST);
    cr_assert_eq(r.taken, s.n - strlen("early data"));
    cr_assert_eq(r.d.nmethods, 1);
    cr_assert_eq(r.d.methods[0], 0);
    cr_assert_eq(r.d.req.version, 5);
    cr_assert_eq(r.d.req.atyp, TW_SOCKS_ATYP_IPV4);
    cr_assert_eq(memcmp(r.d.req.addr, "\x7f\x00\x00\x01", 4), 0);
    cr_assert_eq(r.d.req.port, 80);
}

TW_TEST(socks_decoder, socks5_ipv6)
{
    struct bytes s = {0};
    const uint8_t methods[] = {0x01, 0x00, 0x80};
    greeting(&s, methods, 3);
    socks5_head(&s, TW_SOCKS_CMD_CONNECT, TW_SOCKS_ATYP_IPV6);
    uint8_t a[16];
    inet_pton(AF_INET6, "2001:db8::42", a);
    put(&s, a, 16);
    port16(&s, 65535);
    struct run r;
    decode_all_ways(s.b, s.n, TW_SOCKS_METHOD_NONE, &r);
    cr_assert_eq(r.events[1], TW_SOCKS_REQUEST);
    cr_assert_eq(r.d.nmethods, 3);
    cr_assert_eq(memcmp(r.d.methods, methods, 3), 0);
    cr_assert_eq(r.d.req.atyp, TW_SOCKS_ATYP_IPV6);
    cr_assert_eq(memcmp(r.d.req.addr, a, 16), 0);
    cr_assert_eq(r.d.req.port, 65535);
}

TW_TEST(socks_decoder, socks5_domain_of_every_length_limit)
{
    for (size_t len = 1; len <= TW_SOCKS_MAX_NAME; len += len < 4 ? 1 : 127) {
        struct bytes s = {0};
        greeting(&s, no_auth, 1);
        socks5_head(&s, TW_SOCKS_CMD_CONNECT, TW_SOCKS_ATYP_DOMAIN);
        put1(&s, (uint8_t)len);
        put_fill(&s, 'h', len);
        port16(&s, 443);
        struct run r;
        decode_all_ways(s.b, s.n, TW_SOCKS_METHOD_NONE, &r);
        cr_assert_eq(r.events[1], TW_SOCKS_REQUEST);
        cr_assert_eq(r.d.req.atyp, TW_SOCKS_ATYP_DOMAIN);
        cr_assert_eq(r.d.req.name_len, len);
        cr_assert_eq(strlen(r.d.req.name), len);
        cr_assert_eq(r.d.req.port, 443);
    }
}

TW_TEST(socks_decoder, socks5_domain_may_hold_any_byte)
{
    struct bytes s = {0};
    greeting(&s, no_auth, 1);
    socks5_head(&s, TW_SOCKS_CMD_CONNECT, TW_SOCKS_ATYP_DOMAIN);
    put1(&s, 3);
    put(&s, "a\0b", 3);
    port16(&s, 1);
    struct run r;
    decode_all_ways(s.b, s.n, TW_SOCKS_METHOD_NONE, &r);
    cr_assert_eq(r.events[1], TW_SOCKS_REQUEST);
    cr_assert_eq(r.d.req.name_len, 3, "the length is the truth");
    cr_assert_eq(memcmp(r.d.req.name, "a\0b", 4), 0);
}

TW_TEST(socks_decoder, socks5_no_methods_and_other_commands)
{
    struct bytes s = {0};
    greeting(&s, NULL, 0);
    socks5_head(&s, TW_SOCKS_CMD_UDP_ASSOCIATE, TW_SOCKS_ATYP_IPV4);
    put(&s, "\0\0\0\0", 4);
    port16(&s, 0);
    struct run r;
    decode_all_ways(s.b, s.n, TW_SOCKS_METHOD_NONE, &r);
    cr_assert_eq(r.events[0], TW_SOCKS_METHODS);
    cr_assert_eq(r.d.nmethods, 0);
    cr_assert_eq(r.events[1], TW_SOCKS_REQUEST);
    cr_assert_eq(r.d.req.command, TW_SOCKS_CMD_UDP_ASSOCIATE);
    cr_assert_eq(r.d.req.port, 0);
}

TW_TEST(socks_decoder, socks5_username_password)
{
    struct bytes s = {0};
    const uint8_t methods[] = {0x00, 0x02};
    greeting(&s, methods, 2);
    put1(&s, 1);
    put1(&s, 5);
    put_str(&s, "carol");
    put1(&s, 6);
    put_str(&s, "s3cret");
    socks5_head(&s, TW_SOCKS_CMD_CONNECT, TW_SOCKS_ATYP_DOMAIN);
    put1(&s, 9);
    put_str(&s, "localhost");
    port16(&s, 8080);
    struct run r;
    decode_all_ways(s.b, s.n, TW_SOCKS_METHOD_USERPASS, &r);
    cr_assert_eq(r.nevents, 3);
    cr_assert_eq(r.events[0], TW_SOCKS_METHODS);
    cr_assert_eq(r.events[1], TW_SOCKS_AUTH);
    cr_assert_eq(r.events[2], TW_SOCKS_REQUEST);
    cr_assert_str_eq(r.d.req.user, "carol");
    cr_assert_str_eq(r.d.password, "s3cret");
    cr_assert_str_eq(r.d.req.name, "localhost");
    cr_assert_eq(r.d.req.port, 8080);

    /* Empty name and password, and the longest ones. */
    for (size_t len = 0; len <= 255; len += 255) {
        struct bytes t = {0};
        greeting(&t, methods, 2);
        put1(&t, 1);
        put1(&t, (uint8_t)len);
        put_fill(&t, 'u', len);
        put1(&t, (uint8_t)len);
        put_fill(&t, 'p', len);
        socks5_head(&t, TW_SOCKS_CMD_CONNECT, TW_SOCKS_ATYP_IPV4);
        put(&t, "\1\2\3\4", 4);
        port16(&t, 9);
        decode_all_ways(t.b, t.n, TW_SOCKS_METHOD_USERPASS, &r);
        cr_assert_eq(r.events[1], TW_SOCKS_AUTH);
        cr_assert_eq(r.events[2], TW_SOCKS_REQUEST);
        cr_assert_eq(r.d.req.user_len, len);
        cr_assert_eq(r.d.password_len, len);
    }
}

TW_TEST(socks_decoder, an_incomplete_message_is_more)
{
    struct bytes s = {0};
    greeting(&s, no_auth, 1);
    socks5_head(&s, TW_SOCKS_CMD_CONNECT, TW_SOCKS_ATYP_DOMAIN);
    put1(&s, 4);
    put_str(&s, "host");
    port16(&s, 80);
    for (size_t k = 2; k < s.n; k++) { /* past the greeting */
        struct run r;
        run_init(&r, 0);
        run_feed(&r, (const char *)s.b, k);
        cr_assert(!r.over, "prefix %zu", k);
        cr_assert_eq(r.taken, k);
    }
}

/* ---- Malformed forms */

static void expect_error(const void *bytes, size_t len, uint8_t method, const char *error,
                         size_t at, const uint8_t *reply, size_t reply_len)
{
    struct run r;
    decode_all_ways(bytes, len, method, &r);
    cr_assert(r.over);
    cr_assert_eq(r.events[r.nevents - 1], TW_SOCKS_ERROR);
    cr_assert_str_eq(r.d.error, error);
    cr_assert_eq(r.taken, at, "the error is found at byte %zu, not %zu", at, r.taken);
    uint8_t out[TW_SOCKS_REPLY_MAX];
    size_t n = tw_socks_error_reply(&r.d, out);
    cr_assert_eq(n, reply_len);
    if (n > 0)
        cr_assert_eq(memcmp(out, reply, n), 0);
    size_t used = 7;
    cr_assert_eq(tw_socks_decode(&r.d, "x", 1, &used), TW_EINVAL, "done");
    cr_assert_eq(used, 0);
}

static const uint8_t v4_rejected[8] = {0, TW_SOCKS4_REJECTED};

TW_TEST(socks_decoder, an_unknown_version_gets_no_answer)
{
    for (int v = 0; v < 256; v++) {
        if (v == 4 || v == 5)
            continue;
        uint8_t b[3] = {(uint8_t)v, 1, 0};
        expect_error(b, 3, 0, "not a SOCKS4 or SOCKS5 request (unknown version byte)", 1, NULL, 0);
    }
}

TW_TEST(socks_decoder, a_socks4_user_id_too_long)
{
    struct bytes s = {0};
    socks4(&s, TW_SOCKS_CMD_CONNECT, 80, "192.0.2.1");
    put_fill(&s, 'u', TW_SOCKS_MAX_USER + 1); /* unterminated */
    put1(&s, 0);
    expect_error(s.b, s.n, 0, "SOCKS4 user id longer than 255 bytes", 8 + TW_SOCKS_MAX_USER + 1,
                 v4_rejected, 8);
}

TW_TEST(socks_decoder, a_socks4a_name_empty_or_too_long)
{
    struct bytes s = {0};
    socks4(&s, TW_SOCKS_CMD_CONNECT, 80, "0.0.0.9");
    put1(&s, 0);
    put1(&s, 0);
    expect_error(s.b, s.n, 0, "SOCKS4a request with an empty host name", s.n, v4_rejected, 8);

    struct bytes t = {0};
    socks4(&t, TW_SOCKS_CMD_CONNECT, 80, "0.0.0.9");
    put1(&t, 0);
    put_fill(&t, 'n', TW_SOCKS_MAX_NAME + 1);
    expect_error(t.b, t.n, 0, "SOCKS4a host name longer than 255 bytes", t.n, v4_rejected, 8);
}

static const uint8_t v5_failure[10] = {5, TW_SOCKS5_FAILURE, 0, 1};

TW_TEST(socks_decoder, a_socks5_request_with_a_wrong_version)
{
    struct bytes s = {0};
    greeting(&s, no_auth, 1);
    put1(&s, 4);
    put_str(&s, "\1\0\1");
    expect_error(s.b, s.n, 0, "SOCKS5 request whose version is not 5", 4, v5_failure, 10);
}

TW_TEST(socks_decoder, a_socks5_request_with_a_reserved_byte_set)
{
    struct bytes s = {0};
    greeting(&s, no_auth, 1);
    put_str(&s, "\5\1\1\1");
    expect_error(s.b, s.n, 0, "SOCKS5 request whose reserved byte is not 0", 6, v5_failure, 10);
}

TW_TEST(socks_decoder, a_socks5_request_with_an_unknown_address_type)
{
    const uint8_t reply[10] = {5, TW_SOCKS5_ATYP_UNSUPPORTED, 0, 1};
    for (int atyp = 0; atyp < 256; atyp++) {
        if (atyp == 1 || atyp == 3 || atyp == 4)
            continue;
        struct bytes s = {0};
        greeting(&s, no_auth, 1);
        socks5_head(&s, TW_SOCKS_CMD_CONNECT, (uint8_t)atyp);
        put_str(&s, "\1\2\3\4\0\x50");
        expect_error(s.b, s.n, 0, "SOCKS5 request with an unknown address type", 7, reply, 10);
    }
}

TW_TEST(socks_decoder, a_socks5_request_with_an_empty_name)
{
    struct bytes s = {0};
    greeting(&s, no_auth, 1);
    socks5_head(&s, TW_SOCKS_CMD_CONNECT, TW_SOCKS_ATYP_DOMAIN);
    put1(&s, 0);
    port16(&s, 80);
    expect_error(s.b, s.n, 0, "SOCKS5 request with an empty host name", 8, v5_failure, 10);
}

TW_TEST(socks_decoder, an_authentication_with_a_wrong_version)
{
    struct bytes s = {0};
    const uint8_t methods[] = {2};
    greeting(&s, methods, 1);
    put_str(&s, "\5\1\1\0\0");
    const uint8_t reply[2] = {1, 1};
    expect_error(s.b, s.n, TW_SOCKS_METHOD_USERPASS, "RFC 1929 authentication version is not 1", 4,
                 reply, 2);
}

TW_TEST(socks_decoder, misuse_is_refused)
{
    tw_socks_decoder d;
    tw_socks_decoder_init(&d);
    size_t used = 5;
    cr_assert_eq(tw_socks_decode(NULL, "x", 1, &used), TW_EINVAL);
    cr_assert_eq(used, 0);
    cr_assert_eq(tw_socks_decode(&d, "x", 1, NULL), TW_EINVAL);
    cr_assert_eq(tw_socks_decode(&d, NULL, 1, &used), TW_EINVAL);
    cr_assert_eq(tw_socks_decode(&d, NULL, 0, &used), TW_SOCKS_MORE);
    cr_assert_eq(tw_socks_decoder_method(&d, 0), TW_EINVAL, "no greeting yet");
    cr_assert_eq(tw_socks_decoder_method(NULL, 0), TW_EINVAL);
    cr_assert_eq(tw_socks_decode(&d, "\5\1\0", 3, &used), TW_SOCKS_METHODS);
    cr_assert_eq(tw_socks_decoder_method(&d, 0), 0);
    cr_assert_eq(tw_socks_decode(&d, "\5", 1, &used), TW_SOCKS_MORE);
    cr_assert_eq(tw_socks_decoder_method(&d, 2), TW_EINVAL, "the request has begun");
    cr_assert_eq(tw_socks_error_reply(NULL, NULL), 0);
    cr_assert_eq(tw_socks_error_reply(&d, NULL), 0, "no error");
}

/* ---- Replies */

TW_TEST(socks_decoder, replies)
{
    uint8_t out[TW_SOCKS_REPLY_MAX];
    tw_address a;
    tw_address_from_ip(&a, "192.0.2.7", 8080);
    cr_assert_eq(tw_socks_reply(4, TW_SOCKS4_GRANTED, &a, out), 8);
    cr_assert_eq(memcmp(out, "\x00\x5a\x1f\x90\xc0\x00\x02\x07", 8), 0);
    cr_assert_eq(tw_socks_reply(5, TW_SOCKS5_SUCCEEDED, &a, out), 10);
    cr_assert_eq(memcmp(out, "\x05\x00\x00\x01\xc0\x00\x02\x07\x1f\x90", 10), 0);
    tw_address_from_ip(&a, "2001:db8::1", 443);
    cr_assert_eq(tw_socks_reply(5, TW_SOCKS5_SUCCEEDED, &a, out), 22);
    cr_assert_eq(memcmp(out, "\x05\x00\x00\x04\x20\x01\x0d\xb8", 8), 0);
    cr_assert_eq(out[19], 1);
    cr_assert_eq(memcmp(out + 20, "\x01\xbb", 2), 0);
    cr_assert_eq(tw_socks_reply(4, TW_SOCKS4_GRANTED, &a, out), 8);
    cr_assert_eq(memcmp(out, "\x00\x5a\0\0\0\0\0\0", 8), 0, "IPv6 does not fit SOCKS4");
    cr_assert_eq(tw_socks_reply(5, TW_SOCKS5_NOT_ALLOWED, NULL, out), 10);
    cr_assert_eq(memcmp(out, "\x05\x02\x00\x01\0\0\0\0\0\0", 10), 0);
    cr_assert_eq(tw_socks_reply(3, 0, NULL, out), 0);
}

/* ---- The allow list */

static tw_socks_allow *allow(const char *const *rules)
{
    tw_socks_allow *a;
    cr_assert_eq(tw_socks_allow_new(&a), 0);
    for (; *rules; rules++) {
        tw_failure *f = NULL;
        int rc = tw_socks_allow_add(a, *rules, &f);
        cr_assert_eq(rc, 0, "rule '%s': %s", *rules, f ? tw_failure_message(f) : "");
    }
    return a;
}

static bool ip_ok(const tw_socks_allow *a, const char *ip, unsigned port)
{
    tw_address addr;
    cr_assert_eq(tw_address_from_ip(&addr, ip, port), 0, "%s", ip);
    return tw_socks_allow_address(a, &addr);
}

static bool name_ok(const tw_socks_allow *a, const char *name, unsigned port)
{
    return tw_socks_allow_name(a, name, strlen(name), port);
}

TW_TEST(socks_allow, an_empty_list_allows_nothing)
{
    tw_socks_allow *a = allow((const char *[]){NULL});
    cr_assert_eq(tw_socks_allow_count(a), 0);
    cr_assert(!ip_ok(a, "127.0.0.1", 80));
    cr_assert(!name_ok(a, "localhost", 80));
    tw_socks_allow_free(a);
}

TW_TEST(socks_allow, ipv4_networks)
{
    tw_socks_allow *a = allow((const char *[]){"10.0.0.0/8", "127.0.0.1/8:1-1023",
                                               "192.168.1.128/25", "198.51.100.7", NULL});
    cr_assert_eq(tw_socks_allow_count(a), 4);
    cr_assert(ip_ok(a, "10.0.0.0", 1));
    cr_assert(ip_ok(a, "10.255.255.255", 65535));
    cr_assert(!ip_ok(a, "11.0.0.0", 80));
    cr_assert(!ip_ok(a, "9.255.255.255", 80));
    cr_assert(ip_ok(a, "127.9.9.9", 1023), "host bits of the rule are ignored");
    cr_assert(!ip_ok(a, "127.9.9.9", 1024));
    cr_assert(ip_ok(a, "192.168.1.128", 80));
    cr_assert(ip_ok(a, "192.168.1.255", 80));
    cr_assert(!ip_ok(a, "192.168.1.127", 80));
    cr_assert(ip_ok(a, "198.51.100.7", 5));
    cr_assert(!ip_ok(a, "198.51.100.8", 5));
    cr_assert(!ip_ok(a, "10.0.0.1", 0), "port 0 never");
    cr_assert(!ip_ok(a, "::a00:1", 80), "an IPv4 rule does not match IPv6");
    cr_assert(ip_ok(a, "::ffff:10.1.2.3", 80), "IPv4-mapped is checked as IPv4");
    cr_assert(!ip_ok(a, "::ffff:11.1.2.3", 80));
    cr_assert(!name_ok(a, "ten.example", 80), "address rules do not match names");
    cr_assert(name_ok(a, "10.1.1.1", 80), "an IP literal name is its address");
    cr_assert(!name_ok(a, "11.1.1.1", 80));
    tw_socks_allow_free(a);

    a = allow((const char *[]){"0.0.0.0/0:443", NULL});
    cr_assert(ip_ok(a, "203.0.113.1", 443));
    cr_assert(!ip_ok(a, "203.0.113.1", 444));
    cr_assert(!ip_ok(a, "2001:db8::1", 443));
    tw_socks_allow_free(a);
}

TW_TEST(socks_allow, ipv6_networks)
{
    tw_socks_allow *a = allow((const char *[]){"[2001:db8::]/32:443", "::1", "fe80::/10",
                                               "[2001:db8:ffff::7]:22", "::ffff:0:0/96", NULL});
    cr_assert(ip_ok(a, "2001:db8:1::5", 443));
    cr_assert(!ip_ok(a, "2001:db8:1::5", 80));
    cr_assert(!ip_ok(a, "2001:db9::", 443));
    cr_assert(ip_ok(a, "::1", 1));
    cr_assert(ip_ok(a, "::1", 65535));
    cr_assert(!ip_ok(a, "::2", 1));
    cr_assert(ip_ok(a, "fe80::1", 80));
    cr_assert(ip_ok(a, "febf:ffff::1", 80));
    cr_assert(!ip_ok(a, "fec0::1", 80));
    cr_assert(ip_ok(a, "2001:db8:ffff::7", 22));
    cr_assert(!ip_ok(a, "127.0.0.1", 22), "IPv6 rules do not match IPv4");
    cr_assert(!ip_ok(a, "::ffff:127.0.0.1", 80), "mapped addresses are IPv4 addresses");
    cr_assert(name_ok(a, "::1", 80));
    tw_socks_allow_free(a);
}

TW_TEST(socks_allow, names_suffixes_ports_and_any)
{
    tw_socks_allow *a = allow(
        (const char *[]){"Example.ORG:443", "*.example.net", "localhost:8000-8999", "*:22", NULL});
    cr_assert(name_ok(a, "example.org", 443));
    cr_assert(name_ok(a, "EXAMPLE.org.", 443), "case and a final dot do not matter");
    cr_assert(!name_ok(a, "example.org", 80));
    cr_assert(!name_ok(a, "www.example.org", 443));
    cr_assert(name_ok(a, "a.example.net", 1));
    cr_assert(name_ok(a, "a.b.Example.NET", 65535));
    cr_assert(!name_ok(a, "example.net", 80), "a suffix rule is for names under it");
    cr_assert(!name_ok(a, "badexample.net", 80));
    cr_assert(name_ok(a, "localhost", 8000));
    cr_assert(name_ok(a, "localhost", 8999));
    cr_assert(!name_ok(a, "localhost", 7999));
    cr_assert(!name_ok(a, "localhost", 9000));
    cr_assert(name_ok(a, "anything.at.all", 22));
    cr_assert(ip_ok(a, "203.0.113.5", 22));
    cr_assert(ip_ok(a, "2001:db8::5", 22));
    cr_assert(!name_ok(a, "anything.at.all", 23));
    cr_assert(!tw_socks_allow_name(a, "example.org\0.evil", 17, 443), "a NUL never matches");
    cr_assert(!tw_socks_allow_name(a, "", 0, 22));
    cr_assert(!name_ok(a, "localhost", 0));
    cr_assert(!name_ok(a, "localhost", 70000));
    tw_socks_allow_free(a);

    a = allow((const char *[]){"*", NULL});
    cr_assert(name_ok(a, "x", 1));
    cr_assert(ip_ok(a, "::", 65535));
    cr_assert(!ip_ok(a, "1.2.3.4", 0));
    tw_socks_allow_free(a);
}

static void bad_rule(const char *rule, const char *why)
{
    tw_socks_allow *a;
    cr_assert_eq(tw_socks_allow_new(&a), 0);
    tw_failure *f = NULL;
    cr_assert_eq(tw_socks_allow_add(a, rule, &f), TW_EINVAL, "rule '%s'", rule);
    cr_assert_not_null(f);
    const char *m = tw_failure_message(f);
    cr_assert(strstr(m, "allow rule '") == m, "%s", m);
    cr_assert(strstr(m, why) != NULL, "rule '%s': '%s' lacks '%s'", rule, m, why);
    cr_assert_null(strchr(m, '\n'));
    tw_failure_unref(f);
    cr_assert_eq(tw_socks_allow_count(a), 0);
    cr_assert_eq(tw_socks_allow_add(a, rule, NULL), TW_EINVAL);
    tw_socks_allow_free(a);
}

TW_TEST(socks_allow, bad_rules_say_why)
{
    bad_rule("", "empty rule");
    bad_rule(":80", "missing host");
    bad_rule("10.0.0.0/33", "prefix length out of range (0-32)");
    bad_rule("[::]/129", "prefix length out of range (0-128)");
    bad_rule("10.0.0.0/x", "prefix length is not a number");
    bad_rule("10.0.0.0/", "prefix length is not a number");
    bad_rule("10.0.0/8", "a network must be an IP address");
    bad_rule("host:0", "ports must be");
    bad_rule("host:70000", "ports must be");
    bad_rule("host:90-80", "ports must be");
    bad_rule("host:8o", "ports must be");
    bad_rule("host:", "ports must be");
    bad_rule("host:-5", "ports must be");
    bad_rule("[::1", "missing ']'");
    bad_rule("[1.2.3.4]:80", "brackets must hold an IPv6 address");
    bad_rule("[::1]x", "unexpected text after ']'");
    bad_rule("bad name!", "not an address, network or host name");
    bad_rule("a..b", "not an address, network or host name");
    bad_rule("*.", "not an address, network or host name");
    bad_rule("**", "not an address, network or host name");
    bad_rule("\x01\xff", "not an address, network or host name");
    bad_rule("\x01\xff", "'\\x01\\xff'");

    tw_socks_allow *a;
    cr_assert_eq(tw_socks_allow_new(&a), 0);
    tw_failure *f = NULL;
    cr_assert_eq(tw_socks_allow_add(a, NULL, &f), TW_EINVAL);
    tw_failure_unref(f);
    cr_assert_eq(tw_socks_allow_add(NULL, "*", NULL), TW_EINVAL);
    cr_assert_eq(tw_socks_allow_new(NULL), TW_EINVAL);
    cr_assert(!tw_socks_allow_address(a, NULL));
    cr_assert(!tw_socks_allow_address(NULL, NULL));
    cr_assert_eq(tw_socks_allow_count(NULL), 0);
    tw_socks_allow_free(a);
    tw_socks_allow_free(NULL);
}

TW_TEST(socks_allow, allocation_failure)
{
    const char *rules[] = {"a.example", "*.b.example", "10.0.0.0/8", "::1", "*"};
    for (long n = 0;; n++) {
        tw_socks_allow *a = NULL;
        tw_testing_fail_alloc_after(n);
        int rc = tw_socks_allow_new(&a);
        for (size_t i = 0; rc == 0 && i < sizeof rules / sizeof rules[0]; i++)
            rc = tw_socks_allow_add(a, rules[i], NULL);
        tw_testing_fail_alloc_off();
        if (rc < 0) {
            cr_assert_eq(rc, TW_ENOMEM);
            if (a) /* what was added stays usable */
                cr_assert(!name_ok(a, "c.example", 80));
            tw_socks_allow_free(a);
            continue;
        }
        cr_assert_eq(tw_socks_allow_count(a), 5);
        cr_assert(name_ok(a, "x.b.example", 80));
        tw_socks_allow_free(a);
        break;
    }
}
