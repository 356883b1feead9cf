/* The SOCKS server (socks.h): negotiation, replies, the allow list,
 * authentication, connect failures, timeouts and the relay, on string
 * transports with a memory reactor; then end to end with curl as the
 * client (SOCKS4, 4a, 5, 5 with names, with and without a password). */
#include <sys/stat.h>
#include <unistd.h>

#include <twine/process.h>
#include <twine/socks.h>

#include "relay-test.h"

/* ---- With a memory reactor */

struct mem {
    tw_reactor *mr;
    tw_socks_factory *sf;
    tw_string_transport *in;
    tw_string_transport *out;
};

static tw_socks_allow *allow_list(const char *const *rules)
{
    tw_socks_allow *a;
    cr_assert_eq(tw_socks_allow_new(&a), 0);
    for (; *rules; rules++)
        cr_assert_eq(tw_socks_allow_add(a, *rules, NULL), 0, "%s", *rules);
    return a;
}

static const char *const loopback[] = {"127.0.0.0/8", "::1", "localhost", NULL};

static void mem_setup_with(struct mem *m, const char *const *rules, const tw_socks_options *opts)
{
    memset(m, 0, sizeof *m);
    cr_assert_eq(tw_testing_memory_reactor_new(&m->mr), 0);
    tw_socks_allow *a = allow_list(rules);
    cr_assert_eq(tw_socks_factory_new(m->mr, a, opts, &m->sf), 0);
    cr_assert_eq(tw_string_transport_new(&m->in), 0);
    tw_protocol *p = tw_factory_build_protocol(tw_socks_factory_base(m->sf), &m->in->peer);
    cr_assert_not_null(p);
    cr_assert_eq(tw_string_transport_connect(m->in, p), 0);
}

static void mem_setup(struct mem *m)
{
    mem_setup_with(m, loopback, NULL);
}

static void mem_teardown(struct mem *m)
{
    if (m->in->connected)
        tw_string_transport_lose(m->in, 0);
    if (m->out && m->out->connected)
        tw_string_transport_lose(m->out, 0);
    cr_assert_eq(tw_socks_factory_stats(m->sf)->relay.active, 0);
    tw_socks_factory_free(m->sf);
    tw_string_transport_free(m->in);
    cr_assert_eq(tw_testing_memory_reactor_free(m->mr), 0);
}

static void feed(struct mem *m, const void *data, size_t len)
{
    cr_assert_eq(tw_string_transport_feed(m->in, data, len), 0);
}

/* What the server wrote since the last call. */
static void expect_written(struct mem *m, const void *want, size_t len)
{
    size_t n;
    const char *got = tw_string_transport_value(m->in, &n);
    cr_assert_eq(n, len, "wrote %zu bytes, expected %zu", n, len);
    cr_assert_eq(memcmp(got, want, len), 0);
    tw_string_transport_clear(m->in);
}

static const tw_testing_connect *only_connect(struct mem *m, const char *where)
{
    cr_assert_eq(tw_testing_memory_reactor_connects(m->mr), 1);
    const tw_testing_connect *rec = tw_testing_memory_reactor_connect(m->mr, 0);
    char buf[TW_ADDRESS_STRLEN];
    cr_assert_str_eq(tw_address_format(&rec->addr, buf, sizeof buf), where);
    return rec;
}

#define V5_HELLO      "\x05\x01\x00"
#define V5_CHOSE_NONE "\x05\x00"

TW_TEST(socks, socks5_connect_relays_both_ways)
{
    struct mem m;
    mem_setup(&m);
    feed(&m, V5_HELLO, 3);
    expect_written(&m, V5_CHOSE_NONE, 2);
    /* The request and the first bytes for the destination in one read. */
    feed(&m,
         "\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50"
         "GET /",
         15);
    cr_assert(m.in->paused);
    const tw_testing_connect *rec = only_connect(&m, "127.0.0.1:80");
    size_t n;
    tw_string_transport_value(m.in, &n);
    cr_assert_eq(n, 0, "no answer before the connection is made");
    cr_assert_eq(tw_testing_connector_succeed(rec->connector, &m.out), 0);
    /* BND: the outbound connection's own address (127.0.0.1:12345). */
    expect_written(&m, "\x05\x00\x00\x01\x7f\x00\x00\x01\x30\x39", 10);
    cr_assert_str_eq(tw_string_transport_value(m.out, NULL), "GET /");
    cr_assert(!m.in->paused);
    feed(&m, " HTTP/1.0", 9);
    cr_assert_str_eq(tw_string_transport_value(m.out, NULL), "GET / HTTP/1.0");
    tw_string_transport_feed(m.out, "200 OK", 6);
    expect_written(&m, "200 OK", 6);
    const tw_socks_stats *st = tw_socks_factory_stats(m.sf);
    cr_assert_eq(st->requests, 1);
    cr_assert_eq(st->granted, 1);
    cr_assert_eq(st->relay.bytes_in, 14);
    cr_assert_eq(st->relay.bytes_out, 6);
    /* Flow control is the relay's: a full outbound buffer pauses the client. */
    tw_string_transport_set_buffer_size(m.out, TW_TRANSPORT_HIGH_WATER + 1);
    cr_assert(m.in->paused);
    tw_string_transport_set_buffer_size(m.out, 0);
    cr_assert(!m.in->paused);
    mem_teardown(&m);
}

TW_TEST(socks, socks5_ipv6_destination)
{
    struct mem m;
    mem_setup(&m);
    feed(&m, V5_HELLO, 3);
    uint8_t req[22] = {5, 1, 0, 4};
    req[19] = 1; /* ::1 */
    req[20] = 0x1f;
    req[21] = 0x90;
    feed(&m, req, sizeof req);
    const tw_testing_connect *rec = only_connect(&m, "[::1]:8080");
    cr_assert_eq(tw_testing_connector_succeed(rec->connector, &m.out), 0);
    size_t n;
    const char *w = tw_string_transport_value(m.in, &n);
    cr_assert_eq(n, 2 + 10);
    cr_assert_eq(memcmp(w + 2, "\x05\x00\x00\x01", 4), 0);
    mem_teardown(&m);
}

TW_TEST(socks, socks4_connect_answers_with_the_destination)
{
    struct mem m;
    mem_setup(&m);
    feed(&m,
         "\x04\x01\x00\x50\x7f\x00\x00\x02"
         "fred\0",
         13);
    const tw_testing_connect *rec = only_connect(&m, "127.0.0.2:80");
    cr_assert_eq(tw_testing_connector_succeed(rec->connector, &m.out), 0);
    /* As Twisted's SOCKSv4Outgoing: the outbound connection's peer. */
    expect_written(&m, "\x00\x5a\x00\x50\x7f\x00\x00\x02", 8);
    mem_teardown(&m);
}

TW_TEST(socks, socks4a_and_socks5_names_that_are_ip_literals_connect_at_once)
{
    struct mem m;
    mem_setup(&m);
    feed(&m,
         "\x04\x01\x01\xbb\x00\x00\x00\x01\0"
         "127.0.0.9\0",
         19);
    only_connect(&m, "127.0.0.9:443");
    mem_teardown(&m);

    mem_setup(&m);
    feed(&m, V5_HELLO, 3);
    feed(&m, "\x05\x01\x00\x03\x03::1\x00\x16", 10);
    only_connect(&m, "[::1]:22");
    mem_teardown(&m);
}

static void expect_closed_with(struct mem *m, const void *answer, size_t len)
{
    expect_written(m, answer, len);
    cr_assert_eq(m->in->lose_calls, 1);
    cr_assert_eq(tw_testing_memory_reactor_connects(m->mr), 0);
    /* Whatever comes next is ignored. */
    feed(m, "\x05\x01\x00", 3);
    size_t n;
    tw_string_transport_value(m->in, &n);
    cr_assert_eq(n, 0);
}

TW_TEST(socks, destinations_outside_the_allow_list_are_refused)
{
    struct mem m;
    mem_setup(&m);
    tw_testing_log_capture_start();
    feed(&m, V5_HELLO, 3);
    expect_written(&m, V5_CHOSE_NONE, 2);
    feed(&m, "\x05\x01\x00\x01\x0a\x00\x00\x01\x00\x50", 10);
    expect_closed_with(&m, "\x05\x02\x00\x01\0\0\0\0\0\0", 10);
    cr_assert_eq(tw_testing_log_count("127.0.0.1:54321 -> 10.0.0.1:80: denied: not in the "
                                      "allow list"),
                 1, "%s", tw_testing_log_text());
    cr_assert_eq(tw_socks_factory_stats(m.sf)->denied, 1);
    mem_teardown(&m);

    mem_setup(&m);
    feed(&m, "\x04\x01\x00\x50\x0a\x00\x00\x01\0", 9);
    expect_closed_with(&m, "\x00\x5b\0\0\0\0\0\0", 8);
    mem_teardown(&m);

    /* A name not listed; the name is quoted in the log. */
    mem_setup(&m);
    feed(&m, V5_HELLO, 3);
    tw_string_transport_clear(m.in);
    feed(&m,
         "\x05\x01\x00\x03\x0b"
         "example.org"
         "\x01\xbb",
         18);
    expect_closed_with(&m, "\x05\x02\x00\x01\0\0\0\0\0\0", 10);
    cr_assert_eq(tw_testing_log_count("-> 'example.org':443: denied"), 1, "%s",
                 tw_testing_log_text());
    mem_teardown(&m);

    /* Allowed addresses, but another port. */
    static const char *const port_rule[] = {"127.0.0.1:80", NULL};
    mem_setup_with(&m, port_rule, NULL);
    feed(&m, "\x04\x01\x00\x51\x7f\x00\x00\x01\0", 9);
    expect_closed_with(&m, "\x00\x5b\0\0\0\0\0\0", 8);
    mem_teardown(&m);
    tw_testing_log_capture_stop();
}

TW_TEST(socks, commands_other_than_connect_are_not_supported)
{
    for (uint8_t cmd = 2; cmd <= 4; cmd++) {
        struct mem m;
        mem_setup(&m);
        tw_testing_log_capture_start();
        feed(&m, V5_HELLO, 3);
        tw_string_transport_clear(m.in);
        uint8_t req[10] = {5, cmd, 0, 1, 127, 0, 0, 1, 0, 80};
        feed(&m, req, sizeof req);
        expect_closed_with(&m, "\x05\x07\x00\x01\0\0\0\0\0\0", 10);
        cr_assert_eq(tw_testing_log_count("is not supported (CONNECT only)"), 1);
        cr_assert_eq(tw_socks_factory_stats(m.sf)->unsupported, 1);
        tw_testing_log_capture_stop();
        mem_teardown(&m);

        mem_setup(&m);
        uint8_t req4[9] = {4, cmd, 0, 80, 127, 0, 0, 1, 0};
        feed(&m, req4, sizeof req4);
        expect_closed_with(&m, "\x00\x5b\0\0\0\0\0\0", 8);
        mem_teardown(&m);
    }
}

TW_TEST(socks, malformed_requests_get_the_error_reply_then_close)
{
    struct mem m;
    mem_setup(&m);
    tw_testing_log_capture_start();
    feed(&m, V5_HELLO, 3);
    tw_string_transport_clear(m.in);
    feed(&m, "\x05\x01\x00\x09rest", 8);
    expect_closed_with(&m, "\x05\x08\x00\x01\0\0\0\0\0\0", 10);
    cr_assert_eq(tw_testing_log_count("malformed request: SOCKS5 request with an unknown address "
                                      "type"),
                 1, "%s", tw_testing_log_text());
    cr_assert_eq(tw_socks_factory_stats(m.sf)->malformed, 1);
    mem_teardown(&m);

    /* Not SOCKS at all: no answer. */
    mem_setup(&m);
    feed(&m, "GET / HTTP/1.1\r\n", 16);
    expect_closed_with(&m, "", 0);
    mem_teardown(&m);

    /* A SOCKS4 user id without end: closed once past the bound, whatever
     * keeps coming. */
    mem_setup(&m);
    feed(&m, "\x04\x01\x00\x50\x7f\x00\x00\x01", 8);
    static char junk[4096];
    memset(junk, 'u', sizeof junk);
    feed(&m, junk, 200);
    cr_assert_eq(m.in->lose_calls, 0);
    feed(&m, junk, sizeof junk);
    expect_closed_with(&m, "\x00\x5b\0\0\0\0\0\0", 8);
    mem_teardown(&m);
    tw_testing_log_capture_stop();
}

TW_TEST(socks, names_that_are_not_host_names_are_unreachable)
{
    const char *const names[] = {"bad name", "a..b", "-x.\xff", "x\0y"};
    const size_t lens[] = {8, 4, 5, 3};
    for (size_t i = 0; i < 4; i++) {
        static const char *const any[] = {"*", NULL};
        struct mem m;
        mem_setup_with(&m, any, NULL);
        feed(&m, V5_HELLO, 3);
        tw_string_transport_clear(m.in);
        uint8_t req[64] = {5, 1, 0, 3, (uint8_t)lens[i]};
        memcpy(req + 5, names[i], lens[i]);
        req[5 + lens[i] + 1] = 80;
        feed(&m, req, 5 + lens[i] + 2);
        expect_closed_with(&m, "\x05\x04\x00\x01\0\0\0\0\0\0", 10);
        mem_teardown(&m);
    }
}

TW_TEST(socks, no_acceptable_method)
{
    struct mem m;
    mem_setup(&m);
    tw_testing_log_capture_start();
    feed(&m, "\x05\x02\x01\x02", 4);
    expect_closed_with(&m, "\x05\xff", 2);
    cr_assert_eq(tw_testing_log_count("no acceptable authentication method"), 1);
    tw_testing_log_capture_stop();
    cr_assert_eq(tw_socks_factory_stats(m.sf)->auth_failed, 1);
    mem_teardown(&m);
}

TW_TEST(socks, username_and_password)
{
    tw_socks_options opts = {.username = "user", .password = "pa55"};
    struct mem m;
    mem_setup_with(&m, loopback, &opts);
    feed(&m, "\x05\x02\x00\x02", 4);
    expect_written(&m, "\x05\x02", 2);
    feed(&m, "\x01\x04user\x04pa55", 11);
    expect_written(&m, "\x01\x00", 2);
    feed(&m, "\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50", 10);
    only_connect(&m, "127.0.0.1:80");
    mem_teardown(&m);

    /* A wrong password, a wrong user, a prefix of the password. */
    const char *const wrong[] = {"\x01\x04user\x04pa56", "\x01\x04usex\x04pa55",
                                 "\x01\x04user\x03pa5", "\x01\x00\x00"};
    const size_t wrong_len[] = {11, 11, 10, 3};
    tw_testing_log_capture_start();
    for (size_t i = 0; i < 4; i++) {
        mem_setup_with(&m, loopback, &opts);
        feed(&m, "\x05\x01\x02", 3);
        expect_written(&m, "\x05\x02", 2);
        feed(&m, wrong[i], wrong_len[i]);
        expect_closed_with(&m, "\x01\x01", 2);
        mem_teardown(&m);
    }
    cr_assert_eq(tw_testing_log_count("authentication failed for user 'user'"), 2, "%s",
                 tw_testing_log_text());
    cr_assert_eq(tw_testing_log_count("pa5"), 0, "passwords are never logged");

    /* Only "no authentication" offered. */
    mem_setup_with(&m, loopback, &opts);
    feed(&m, V5_HELLO, 3);
    expect_closed_with(&m, "\x05\xff", 2);
    mem_teardown(&m);

    /* SOCKS4 cannot authenticate. */
    mem_setup_with(&m, loopback, &opts);
    feed(&m, "\x04\x01\x00\x50\x7f\x00\x00\x01user\0", 13);
    expect_closed_with(&m, "\x00\x5b\0\0\0\0\0\0", 8);
    cr_assert_eq(tw_testing_log_count("SOCKS4 refused: this server requires a password"), 1);
    mem_teardown(&m);
    tw_testing_log_capture_stop();
}

static void connect_fails_with(int code, uint8_t version, const void *answer, size_t len)
{
    struct mem m;
    mem_setup(&m);
    if (version == 5) {
        feed(&m, V5_HELLO, 3);
        tw_string_transport_clear(m.in);
        feed(&m, "\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50", 10);
    } else {
        feed(&m, "\x04\x01\x00\x50\x7f\x00\x00\x01\0", 9);
    }
    const tw_testing_connect *rec = only_connect(&m, "127.0.0.1:80");
    tw_testing_log_capture_start();
    cr_assert_eq(tw_testing_connector_fail(rec->connector, code), 0);
    expect_written(&m, answer, len);
    cr_assert_eq(m.in->lose_calls, 1);
    cr_assert_eq(tw_testing_log_count("127.0.0.1:54321 -> 127.0.0.1:80: cannot connect"), 1, "%s",
                 tw_testing_log_text());
    tw_testing_log_capture_stop();
    cr_assert_eq(tw_socks_factory_stats(m.sf)->failed, 1);
    feed(&m, "late", 4);
    mem_teardown(&m);
}

TW_TEST(socks, connect_failures_map_to_replies)
{
    connect_fails_with(TW_ECONNREFUSED, 5, "\x05\x05\x00\x01\0\0\0\0\0\0", 10);
    connect_fails_with(TW_ETIMEDOUT, 5, "\x05\x06\x00\x01\0\0\0\0\0\0", 10);
    connect_fails_with(TW_ENETUNREACH, 5, "\x05\x03\x00\x01\0\0\0\0\0\0", 10);
    connect_fails_with(TW_EHOSTUNREACH, 5, "\x05\x04\x00\x01\0\0\0\0\0\0", 10);
    connect_fails_with(TW_EDNSLOOKUP, 5, "\x05\x04\x00\x01\0\0\0\0\0\0", 10);
    connect_fails_with(-EPERM, 5, "\x05\x01\x00\x01\0\0\0\0\0\0", 10);
    connect_fails_with(TW_ECONNREFUSED, 4, "\x00\x5b\0\0\0\0\0\0", 8);
}

TW_TEST(socks, the_client_leaving_while_connecting_abandons_the_attempt)
{
    struct mem m;
    mem_setup(&m);
    feed(&m, "\x04\x01\x00\x50\x7f\x00\x00\x01\0", 9);
    only_connect(&m, "127.0.0.1:80");
    tw_string_transport_lose(m.in, -ECONNRESET);
    cr_assert_null(tw_testing_memory_reactor_connect(m.mr, 0)->connector);
    cr_assert_eq(tw_socks_factory_stats(m.sf)->failed, 0);
    mem_teardown(&m);
}

TW_TEST(socks, end_of_file_while_negotiating_closes)
{
    struct mem m;
    mem_setup(&m);
    feed(&m, "\x05\x01", 2);
    tw_protocol *p = m.in->base.protocol;
    p->ops->read_connection_lost(p);
    cr_assert_eq(m.in->lose_calls, 1);
    mem_teardown(&m);
}

TW_TEST(socks, a_slow_negotiation_times_out)
{
    tw_socks_options opts = {.negotiation_timeout = 0.05};
    struct mem m;
    mem_setup_with(&m, loopback, &opts);
    tw_testing_log_capture_start();
    feed(&m, "\x05\x01", 2);
    double end = tw_reactor_seconds(m.mr) + 5;
    while (m.in->lose_calls == 0 && tw_reactor_seconds(m.mr) < end)
        tw_reactor_iterate(m.mr, 0.01);
    cr_assert_eq(m.in->lose_calls, 1);
    cr_assert_eq(tw_testing_log_count("no complete request after 0.05 s: closing"), 1);
    tw_testing_log_capture_stop();
    cr_assert_eq(tw_socks_factory_stats(m.sf)->timeouts, 1);
    mem_teardown(&m);

    /* A request in time stops the clock. */
    mem_setup_with(&m, loopback, &opts);
    feed(&m, "\x04\x01\x00\x50\x7f\x00\x00\x01\0", 9);
    tw_reactor_iterate(m.mr, 0.1);
    cr_assert_eq(m.in->lose_calls, 0);
    mem_teardown(&m);
}

TW_TEST(socks, factory_arguments)
{
    tw_reactor *mr;
    cr_assert_eq(tw_testing_memory_reactor_new(&mr), 0);
    tw_socks_allow *a = allow_list(loopback);
    tw_socks_factory *sf = NULL;
    cr_assert_eq(tw_socks_factory_new(NULL, a, NULL, &sf), TW_EINVAL);
    cr_assert_eq(tw_socks_factory_new(mr, NULL, NULL, &sf), TW_EINVAL);
    cr_assert_eq(tw_socks_factory_new(mr, a, NULL, NULL), TW_EINVAL);
    tw_socks_options bad = {.negotiation_timeout = -1};
    cr_assert_eq(tw_socks_factory_new(mr, a, &bad, &sf), TW_EINVAL);
    bad = (tw_socks_options){.connect_timeout = 1.0 / 0.0};
    cr_assert_eq(tw_socks_factory_new(mr, a, &bad, &sf), TW_EINVAL);
    bad = (tw_socks_options){.username = "u"};
    cr_assert_eq(tw_socks_factory_new(mr, a, &bad, &sf), TW_EINVAL);
    cr_assert_null(sf);
    cr_assert_null(tw_socks_factory_base(NULL));
    cr_assert_null(tw_socks_factory_stats(NULL));
    tw_socks_factory_free(NULL);
    tw_socks_allow_free(a);
    cr_assert_eq(tw_testing_memory_reactor_free(mr), 0);
}

TW_TEST(socks, allocation_failure)
{
    tw_socks_options opts = {.username = "u", .password = "p"};
    for (long n = 0;; n++) {
        tw_reactor *mr;
        cr_assert_eq(tw_testing_memory_reactor_new(&mr), 0);
        tw_socks_allow *a = allow_list(loopback);
        tw_socks_factory *sf = NULL;
        tw_testing_fail_alloc_after(n);
        int rc = tw_socks_factory_new(mr, a, &opts, &sf);
        tw_testing_fail_alloc_off();
        if (rc < 0) {
            cr_assert_eq(rc, TW_ENOMEM);
            tw_socks_allow_free(a);
        } else {
            tw_socks_factory_free(sf);
        }
        cr_assert_eq(tw_testing_memory_reactor_free(mr), 0);
        if (rc == 0)
            break;
    }
    /* A whole negotiation with allocations failing from the n-th on: the
     * connection is refused, closed, or gets through. */
    tw_testing_log_capture_start();
    for (long n = 0;; n++) {
        struct mem m;
        memset(&m, 0, sizeof m);
        cr_assert_eq(tw_testing_memory_reactor_new(&m.mr), 0);
        cr_assert_eq(tw_socks_factory_new(m.mr, allow_list(loopback), NULL, &m.sf), 0);
        cr_assert_eq(tw_string_transport_new(&m.in), 0);
        tw_testing_fail_alloc_after(n);
        tw_protocol *p = tw_factory_build_protocol(tw_socks_factory_base(m.sf), NULL);
        bool through = false;
        if (p) {
            cr_assert_eq(tw_string_transport_connect(m.in, p), 0);
            feed(&m, V5_HELLO "\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50", 13);
            through = tw_testing_memory_reactor_connects(m.mr) == 1;
            if (!through)
                cr_assert(m.in->lose_calls + m.in->abort_calls >= 1, "n=%ld", n);
        }
        tw_testing_fail_alloc_off();
        if (through) {
            const tw_testing_connect *rec = tw_testing_memory_reactor_connect(m.mr, 0);
            cr_assert_eq(tw_testing_connector_succeed(rec->connector, &m.out), 0);
        }
        mem_teardown(&m);
        if (through)
            break;
    }
    tw_testing_log_capture_stop();
}

/* ---- End to end: curl as the client */

/* A small HTTP server: answers any request with a body, then closes. */
struct http_peer {
    tw_protocol base;
    char head[4096];
    size_t len;
    bool answered;
};

static char http_body[300000];

static void http_data(tw_protocol *p, const char *data, size_t len)
{
    struct http_peer *h = (struct http_peer *)p;
    if (h->answered)
        return;
    size_t n = len < sizeof h->head - 1 - h->len ? len : sizeof h->head - 1 - h->len;
    memcpy(h->head + h->len, data, n);
    h->len += n;
    h->head[h->len] = '\0';
    if (!strstr(h->head, "\r\n\r\n"))
        return;
    h->answered = true;
    char top[128];
    int tn = snprintf(top, sizeof top,
                      "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n\r\n",
                      sizeof http_body);
    tw_transport_write(p->transport, top, (size_t)tn);
    tw_transport_write(p->transport, http_body, sizeof http_body);
    tw_transport_lose_connection(p->transport);
}

static const tw_protocol_ops http_ops = {.data_received = http_data};

struct curl_env {
    tw_socks_factory *sf;
    tw_listening_port *socks_port, *http_port;
    tw_factory http_f;
    unsigned socks, http;
};

static void curl_env_start(tw_reactor *r, struct curl_env *e, const char *const *rules,
                           const tw_socks_options *opts)
{
    if (access("/usr/bin/curl", X_OK) != 0)
        cr_skip_test("curl is not installed (scripts/install-deps.sh installs it)");
    for (size_t i = 0; i < sizeof http_body; i++)
        http_body[i] = (char)('a' + i % 26);
    memset(e, 0, sizeof *e);
    tw_factory_init(&e->http_f, NULL, &http_ops, sizeof(struct http_peer), NULL);
    e->http = rt_listen(r, &e->http_f, &e->http_port);
    cr_assert_eq(tw_socks_factory_new(r, allow_list(rules), opts, &e->sf), 0);
    e->socks = rt_listen(r, tw_socks_factory_base(e->sf), &e->socks_port);
}

static void curl_env_end(tw_reactor *r, struct curl_env *e)
{
    rt_stop(e->socks_port);
    rt_stop(e->http_port);
    const tw_socks_stats *st = tw_socks_factory_stats(e->sf);
    RT_WAIT(r, st->relay.active == 0, 10);
    tw_socks_factory_free(e->sf);
}

/* Runs curl with a proxy option, fetching url (with %u for the HTTP port);
 * returns its exit code and stdout. */
static int run_curl(tw_reactor *r, struct curl_env *e, const char *proxy_opt, const char *url_fmt,
                    const char *user, tw_process_output **out)
{
    char proxy[64], url[128];
    snprintf(proxy, sizeof proxy, "127.0.0.1:%u", e->socks);
    snprintf(url, sizeof url, url_fmt, e->http);
    char *argv[16];
    int n = 0;
    argv[n++] = "curl";
    argv[n++] = "-sS";
    argv[n++] = "--max-time";
    argv[n++] = "20";
    argv[n++] = (char *)proxy_opt;
    argv[n++] = proxy;
    if (user) {
        argv[n++] = "--proxy-user";
        argv[n++] = (char *)user;
    }
    argv[n++] = url;
    argv[n] = NULL;
    /* No proxy settings from the environment. */
    char *env[] = {"PATH=/usr/bin:/bin", NULL};
    tw_deferred *d = tw_get_process_output_and_value(r, "/usr/bin/curl", argv, env, NULL, NULL, 0);
    cr_assert_not_null(d);
    tw_result res = {0};
    cr_assert_eq(tw_testing_run_until_fired(r, d, 30, &res), 0);
    tw_deferred_unref(d);
    cr_assert(!tw_result_is_failure(res), "%s", tw_failure_message(res.failure));
    *out = tw_result_take(&res);
    return (*out)->status.exit_code;
}

static void curl_fetches(tw_reactor *r, struct curl_env *e, const char *proxy_opt,
                         const char *url_fmt, const char *user)
{
    tw_process_output *o;
    int code = run_curl(r, e, proxy_opt, url_fmt, user, &o);
    cr_assert_eq(code, 0, "curl %s: exit %d: %s", proxy_opt, code, o->err);
    cr_assert_eq(o->out_len, sizeof http_body, "curl %s got %zu bytes", proxy_opt, o->out_len);
    cr_assert_eq(memcmp(o->out, http_body, sizeof http_body), 0);
    tw_process_output_free(o);
}

static const char *const curl_rules[] = {"127.0.0.0/8", "localhost", NULL};

TW_REACTOR_TEST(socks_curl, socks4_socks4a_socks5_and_socks5_hostname, .timeout = 120)
{
    struct curl_env e;
    curl_env_start(r, &e, curl_rules, NULL);
    curl_fetches(r, &e, "--socks4", "http://127.0.0.1:%u/", NULL);
    curl_fetches(r, &e, "--socks4a", "http://localhost:%u/", NULL);
    curl_fetches(r, &e, "--socks5", "http://127.0.0.1:%u/", NULL);
    curl_fetches(r, &e, "--socks5-hostname", "http://localhost:%u/index.html", NULL);
    const tw_socks_stats *st = tw_socks_factory_stats(e.sf);
    cr_assert_eq(st->granted, 4);
    cr_assert_geq(st->relay.bytes_out, 4 * sizeof http_body);
    curl_env_end(r, &e);
}

TW_REACTOR_TEST(socks_curl, refused_destinations_fail_the_fetch, .timeout = 120)
{
    static const char *const only_port_1[] = {"127.0.0.1:1", NULL};
    struct curl_env e;
    curl_env_start(r, &e, only_port_1, NULL);
    tw_testing_log_capture_start();
    const char *opts[] = {"--socks4", "--socks4a", "--socks5", "--socks5-hostname"};
    for (size_t i = 0; i < 4; i++) {
        tw_process_output *o;
        int code = run_curl(r, &e, opts[i], "http://127.0.0.1:%u/", NULL, &o);
        cr_assert_neq(code, 0, "curl %s got through", opts[i]);
        cr_assert_eq(o->out_len, 0);
        tw_process_output_free(o);
    }
    cr_assert_eq(tw_testing_log_count("denied: not in the allow list"), 4, "%s",
                 tw_testing_log_text());
    tw_testing_log_capture_stop();
    cr_assert_eq(tw_socks_factory_stats(e.sf)->denied, 4);
    curl_env_end(r, &e);
}

TW_REACTOR_TEST(socks_curl, socks5_with_a_password, .timeout = 120)
{
    tw_socks_options opts = {.username = "alice", .password = "wonder land"};
    struct curl_env e;
    curl_env_start(r, &e, curl_rules, &opts);
    curl_fetches(r, &e, "--socks5-hostname", "http://localhost:%u/", "alice:wonder land");
    tw_testing_log_capture_start();
    tw_process_output *o;
    cr_assert_neq(run_curl(r, &e, "--socks5", "http://127.0.0.1:%u/", "alice:wonder", &o), 0);
    tw_process_output_free(o);
    cr_assert_neq(run_curl(r, &e, "--socks5", "http://127.0.0.1:%u/", NULL, &o), 0);
    tw_process_output_free(o);
    cr_assert_eq(tw_testing_log_count("authentication failed for user 'alice'"), 1, "%s",
                 tw_testing_log_text());
    cr_assert_eq(tw_testing_log_count("no acceptable authentication method"), 1);
    tw_testing_log_capture_stop();
    curl_env_end(r, &e);
}
