/* TLS 1.3 servers run the record layer themselves after the handshake
 * (src/tls/record.c): Twine's client (OpenSSL) against Twine's server, over
 * loopback TCP and over two string transports pumped by hand, with records
 * the test seals itself (with the client's traffic secret, from its keylog
 * callback) to play a broken or hostile client. */
#include <openssl/ssl.h>

#include <twine/testing.h>

#include "tls-test.h"

#include "tls/record.h"
#include "tls/tls-internal.h"

/* ---- A hook in the client's connection_made: its SSL exists, its
 * ClientHello is not made yet. */

static const char *client_suites; /* SSL_set_ciphersuites, or NULL */
static uint8_t client_max_frag;   /* SSL_set_tlsext_max_fragment_length, or 0 */
static uint8_t client_secret[48]; /* CLIENT_TRAFFIC_SECRET_0 */
static size_t client_secret_len;
static int key_updates_seen; /* KeyUpdate messages the client read */

static void client_keylog(const SSL *s, const char *line)
{
    (void)s;
    static const char label[] = "CLIENT_TRAFFIC_SECRET_0 ";
    if (strncmp(line, label, sizeof label - 1) != 0)
        return;
    const char *p = strchr(line + sizeof label - 1, ' ') + 1;
    client_secret_len = 0;
    while (p[0] && p[1] && client_secret_len < sizeof client_secret) {
        unsigned v;
        sscanf(p, "%2x", &v);
        client_secret[client_secret_len++] = (uint8_t)v;
        p += 2;
    }
}

static void client_msg_cb(int write_p, int version, int content_type, const void *buf, size_t len,
                          SSL *ssl, void *arg)
{
    (void)version, (void)ssl, (void)arg;
    if (!write_p && content_type == SSL3_RT_HANDSHAKE && len >= 1 &&
        ((const uint8_t *)buf)[0] == SSL3_MT_KEY_UPDATE)
        key_updates_seen++;
}

static void hooked_made(tw_protocol *p)
{
    SSL *ssl = tw__tls_ssl(p->transport);
    cr_assert(ssl, "the client has its SSL");
    SSL_CTX_set_keylog_callback(SSL_get_SSL_CTX(ssl), client_keylog);
    SSL_set_msg_callback(ssl, client_msg_cb);
    if (client_suites)
        cr_assert_eq(SSL_set_ciphersuites(ssl, client_suites), 1);
    if (client_max_frag)
        cr_assert_eq(SSL_set_tlsext_max_fragment_length(ssl, client_max_frag), 1);
    tt_made(p);
}

static const tw_protocol_ops hooked_ops = {
    .connection_made = hooked_made,
    .data_received = tt_data,
    .connection_lost = tt_lost,
    .handshake_completed = tt_hs,
    .free = tt_free,
};

static void hook_client(tt_side *s)
{
    tw_factory_init(&s->f, NULL, &hooked_ops, sizeof(tw_protocol), NULL);
    client_secret_len = 0;
    key_updates_seen = 0;
}

/* ---- A pattern stream: byte i of a direction is pat(i). */

static uint8_t pat(size_t i)
{
    return (uint8_t)(i * 7 + i / 251);
}

struct stream {
    size_t sent, got;
    bool bad;
};

static void stream_check(tt_side *s, tw_protocol *p, const char *d, size_t n)
{
    (void)p;
    struct stream *st = s->user;
    for (size_t i = 0; i < n; i++)
        if ((uint8_t)d[i] != pat(st->got + i))
            st->bad = true;
    st->got += n;
}

static void stream_send(tw_protocol *p, struct stream *st, size_t n)
{
    uint8_t *b = malloc(n);
    for (size_t i = 0; i < n; i++)
        b[i] = pat(st->sent + i);
    cr_assert_eq(tw_transport_write(p->transport, b, n), 0);
    st->sent += n;
    free(b);
}

/* The server echoes through write_iov in three pieces (one record). */
static void iov_echo(tt_side *s, tw_protocol *p, const char *d, size_t n)
{
    (void)s;
    size_t a = n > 1 ? 1 : n, b = (n - a) / 2;
    struct iovec v[3] = {{(void *)d, a}, {(void *)(d + a), b}, {(void *)(d + a + b), n - a - b}};
    cr_assert_eq(tw_transport_write_sequence(p->transport, v, 3), 0);
}

static bool stream_done(void *arg)
{
    tt_side *s = arg;
    struct stream *st = s->user;
    return st->got >= st->sent || s->lost;
}

/* ---- Over loopback TCP */

static bool hs_both(void *arg)
{
    tt_side *s = arg;
    return s[0].hs && s[1].hs;
}

/* A connected pair, handshake done; the client checks a pattern stream
 * echoed by the server. */
static void tcp_pair(tw_reactor *r, tt_pair *pp, tt_pki *pki, tw_tls_context **sctx,
                     tw_tls_context **cctx, const tw_tls_server_options *so, struct stream *st)
{
    *sctx = tt_server_ctx(&pki->server, so);
    *cctx = tt_client_ctx(pki, NULL);
    tt_pair_init(pp);
    hook_client(&pp->side[1]);
    pp->side[0].on_data = iov_echo;
    pp->side[1].on_data = stream_check;
    pp->side[1].user = st;
    tt_listen(r, pp, *sctx);
    tt_connect(r, pp, *cctx, NULL);
    cr_assert(tt_run_until(r, hs_both, pp->side));
}

static void round_trip(tw_reactor *r, tt_pair *pp, struct stream *st, size_t n)
{
    stream_send(pp->side[1].p, st, n);
    cr_assert(tt_run_until(r, stream_done, &pp->side[1]), "echo of %zu bytes", n);
    cr_assert_eq(st->got, st->sent, "%s", pp->side[1].lost_msg);
    cr_assert_not(st->bad, "the echoed stream differs");
}

static void tcp_close(tw_reactor *r, tt_pair *pp)
{
    tw_transport_lose_connection(pp->side[1].p->transport);
    tt_pair_finish(r, pp);
    cr_assert_eq(pp->side[0].lost_code, TW_ECONNDONE, "%s", pp->side[0].lost_msg);
    cr_assert_eq(pp->side[1].lost_code, TW_ECONNDONE, "%s", pp->side[1].lost_msg);
}

TW_REACTOR_TEST(tls13, many_record_sizes_both_ways)
{
    tt_pki *pki = tt_pki_new();
    tw_tls_context *sctx, *cctx;
    tt_pair pp;
    struct stream st = {0};
    client_suites = NULL;
    tcp_pair(r, &pp, pki, &sctx, &cctx, NULL, &st);
    tw_transport *server = pp.side[0].p->transport;
    cr_assert(tw__tls_own_records(server), "the server switched");
    cr_assert_null(tw__tls_ssl(server), "and freed its SSL");
    cr_assert_not(tw__tls_own_records(pp.side[1].p->transport), "the client stays on OpenSSL");
    cr_assert_str_eq(tw_tls_version_name(server), "TLSv1.3");
    cr_assert_str_eq(tw_tls_cipher_name(server),
                     tw_tls_cipher_name(pp.side[1].p->transport)); /* OpenSSL's name, same */
    cr_assert_str_eq(tw_tls_server_name(server), "localhost");
    static const size_t sizes[] = {1, 2, 100, 16383, 16384, 16385, 50000, 1 << 20, 3};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        round_trip(r, &pp, &st, sizes[i]);
    tcp_close(r, &pp);
    tw_tls_context_unref(sctx);
    tw_tls_context_unref(cctx);
    tt_pki_free(pki);
}

/* Each suite; and the write sequence number counted right with two
 * tickets (default), stateful tickets, and a resumed session. */
static void suite_round(tw_reactor *r, tt_pki *pki, const char *suite,
                        const tw_tls_server_options *so, tw_tls_context *cctx_in, bool *reused)
{
    tw_tls_context *sctx, *cctx;
    tt_pair pp;
    struct stream st = {0};
    client_suites = suite;
    tcp_pair(r, &pp, pki, &sctx, &cctx, so, &st);
    if (cctx_in) {
        /* Start over with the given client context (resumption). */
        tcp_close(r, &pp);
        tw_tls_context_unref(cctx);
        cctx = tw_tls_context_ref(cctx_in);
        tt_pair_init(&pp);
        hook_client(&pp.side[1]);
        pp.side[0].on_data = iov_echo;
        pp.side[1].on_data = stream_check;
        pp.side[1].user = &st;
        memset(&st, 0, sizeof st);
        tt_listen(r, &pp, sctx);
        tt_connect(r, &pp, cctx, NULL);
        cr_assert(tt_run_until(r, hs_both, pp.side));
    }
    tw_transport *server = pp.side[0].p->transport;
    cr_assert(tw__tls_own_records(server));
    if (suite)
        cr_assert_str_eq(tw_tls_cipher_name(server), suite);
    for (int i = 0; i < 5; i++)
        round_trip(r, &pp, &st, 10 + (size_t)i * 3000);
    if (reused)
        *reused = tw__tls_session_reused(server);
    tcp_close(r, &pp);
    tw_tls_context_unref(sctx);
    tw_tls_context_unref(cctx);
    client_suites = NULL;
}

TW_REACTOR_TEST(tls13, each_suite_and_ticket_mode)
{
    tt_pki *pki = tt_pki_new();
    suite_round(r, pki, "TLS_AES_128_GCM_SHA256", NULL, NULL, NULL);
    suite_round(r, pki, "TLS_AES_256_GCM_SHA384", NULL, NULL, NULL);
    suite_round(r, pki, "TLS_CHACHA20_POLY1305_SHA256", NULL, NULL, NULL);
    suite_round(r, pki, NULL, &(tw_tls_server_options){.no_session_tickets = true}, NULL, NULL);
    tt_pki_free(pki);
}

TW_REACTOR_TEST(tls13, resumed_session_switches_too)
{
    tt_pki *pki = tt_pki_new();
    tw_tls_context *sctx = tt_server_ctx(&pki->server, NULL);
    tw_tls_context *cctx = tt_client_ctx(pki, NULL);
    /* Two connections with one client context: the second resumes. */
    for (int round = 0; round < 2; round++) {
        tt_pair pp;
        struct stream st = {0};
        tt_pair_init(&pp);
        hook_client(&pp.side[1]);
        pp.side[0].on_data = iov_echo;
        pp.side[1].on_data = stream_check;
        pp.side[1].user = &st;
        tt_listen(r, &pp, sctx);
        tt_connect(r, &pp, cctx, NULL);
        cr_assert(tt_run_until(r, hs_both, pp.side));
        round_trip(r, &pp, &st, 1000);
        /* The client got its tickets (after the switch: sealed by OpenSSL
         * before it, and our first record after them decrypts). */
        round_trip(r, &pp, &st, 20000);
        cr_assert(tw__tls_own_records(pp.side[0].p->transport));
        cr_assert_eq(tw__tls_session_reused(pp.side[0].p->transport), round == 1);
        cr_assert_eq(tw__tls_session_reused(pp.side[1].p->transport), round == 1);
        tcp_close(r, &pp);
    }
    tw_tls_context_unref(sctx);
    tw_tls_context_unref(cctx);
    tt_pki_free(pki);
}

TW_REACTOR_TEST(tls13, client_certificate_kept_after_ssl_free)
{
    tt_pki *pki = tt_pki_new();
    tw_tls_context *sctx = tt_server_ctx(
        &pki->server, &(tw_tls_server_options){.client_ca_file = pki->ca.cert_file,
                                               .require_client_cert = true,
                                               .alpn = (const char *const[]){"h2", NULL}});
    tw_tls_context *cctx =
        tt_client_ctx(pki, &(tw_tls_client_options){.cert_file = pki->client.cert_file,
                                                    .key_file = pki->client.key_file,
                                                    .alpn = (const char *const[]){"h2", NULL}});
    tt_pair pp;
    struct stream st = {0};
    tt_pair_init(&pp);
    hook_client(&pp.side[1]);
    pp.side[0].on_data = iov_echo;
    pp.side[1].on_data = stream_check;
    pp.side[1].user = &st;
    tt_listen(r, &pp, sctx);
    tt_connect(r, &pp, cctx, NULL);
    cr_assert(tt_run_until(r, hs_both, pp.side));
    tw_transport *server = pp.side[0].p->transport;
    cr_assert(tw__tls_own_records(server));
    cr_assert_str_eq(tw_tls_negotiated_protocol(server), "h2");
    tw_tls_peer_certificate c;
    cr_assert_eq(tw_tls_get_peer_certificate(server, &c), 0);
    cr_assert(strstr(c.subject, "CN=client"), "%s", c.subject);
    round_trip(r, &pp, &st, 5000);
    tcp_close(r, &pp);
    tw_tls_context_unref(sctx);
    tw_tls_context_unref(cctx);
    tt_pki_free(pki);
}

/* KeyUpdate from the client (OpenSSL sends it with its next write): data
 * flows both ways after; with update_requested the server answers with a
 * KeyUpdate of its own, without it it does not. */
static void key_update_round(tw_reactor *r, int type, int times)
{
    tt_pki *pki = tt_pki_new();
    tw_tls_context *sctx, *cctx;
    tt_pair pp;
    struct stream st = {0};
    tcp_pair(r, &pp, pki, &sctx, &cctx, NULL, &st);
    cr_assert(tw__tls_own_records(pp.side[0].p->transport));
    round_trip(r, &pp, &st, 100);
    SSL *cssl = tw__tls_ssl(pp.side[1].p->transport);
    for (int i = 0; i < times; i++) {
        cr_assert_eq(SSL_key_update(cssl, type), 1);
        round_trip(r, &pp, &st, 300 + (size_t)i);
    }
    round_trip(r, &pp, &st, 40000);
    cr_assert_eq(key_updates_seen, type == SSL_KEY_UPDATE_REQUESTED ? times : 0);
    tcp_close(r, &pp);
    tw_tls_context_unref(sctx);
    tw_tls_context_unref(cctx);
    tt_pki_free(pki);
}

TW_REACTOR_TEST(tls13, key_update_requested)
{
    key_update_round(r, SSL_KEY_UPDATE_REQUESTED, 3);
}

TW_REACTOR_TEST(tls13, key_update_not_requested)
{
    key_update_round(r, SSL_KEY_UPDATE_NOT_REQUESTED, 3);
}

static bool no_cipher_ctx(void *arg)
{
    tt_side *s = arg;
    return s->p && !tw__tls_holds_cipher_ctx(s->p->transport);
}

/* What an idle switched connection holds: no SSL, and no cipher context
 * once a quiet window passed (at once when it was never busy). */
TW_REACTOR_TEST(tls13, idle_connection_holds_no_ssl_and_no_cipher_ctx)
{
    tt_pki *pki = tt_pki_new();
    tw_tls_context *sctx, *cctx;
    tt_pair pp;
    struct stream st = {0};
    tcp_pair(r, &pp, pki, &sctx, &cctx, NULL, &st);
    tw_transport *server = pp.side[0].p->transport;
    round_trip(r, &pp, &st, 64);
    cr_assert_null(tw__tls_ssl(server));
    cr_assert_not(tw__tls_holds_cipher_ctx(server), "not busy: freed after each record");
    for (int i = 0; i < 40; i++)
        round_trip(r, &pp, &st, 64);
    cr_assert(tw__tls_keeps_buffers(server));
    cr_assert(tw__tls_holds_cipher_ctx(server), "busy: kept");
    cr_assert(tt_run_until(r, no_cipher_ctx, &pp.side[0]), "quiet: freed");
    cr_assert_not(tw__tls_keeps_buffers(server));
    round_trip(r, &pp, &st, 64); /* made again */
    cr_assert_not(tw__tls_holds_cipher_ctx(server));
    tcp_close(r, &pp);
    tw_tls_context_unref(sctx);
    tw_tls_context_unref(cctx);
    tt_pki_free(pki);
}

TW_REACTOR_TEST(tls13, switch_off_and_tls12_stay_on_openssl)
{
    tt_pki *pki = tt_pki_new();
    for (int round = 0; round < 2; round++) {
        tw_tls_server_options so = {.max_version = round == 1 ? TW_TLS_1_2 : TW_TLS_DEFAULT};
        if (round == 0)
            tw__tls_set_own_record_layer(false);
        tw_tls_context *sctx, *cctx;
        tt_pair pp;
        struct stream st = {0};
        tcp_pair(r, &pp, pki, &sctx, &cctx, &so, &st);
        tw__tls_set_own_record_layer(true);
        tw_transport *server = pp.side[0].p->transport;
        cr_assert_not(tw__tls_own_records(server));
        cr_assert(tw__tls_ssl(server));
        cr_assert_str_eq(tw_tls_version_name(server), round == 1 ? "TLSv1.2" : "TLSv1.3");
        round_trip(r, &pp, &st, 30000);
        tcp_close(r, &pp);
        tw_tls_context_unref(sctx);
        tw_tls_context_unref(cctx);
    }
    tt_pki_free(pki);
}

/* ---- Over string transports: every byte boundary, hostile records */

struct mem {
    tt_side side[2]; /* [0] server, [1] client */
    tw_tls_factory sf, cf;
    tw_string_transport *st[2];
    tw_tls_context *sctx, *cctx;
};

static void mem_init(struct mem *m, tt_pki *pki)
{
    memset(m, 0, sizeof *m);
    tt_side_init(&m->side[0]);
    tt_side_init(&m->side[1]);
    hook_client(&m->side[1]);
    m->sctx = tt_server_ctx(&pki->server, NULL);
    m->cctx = tt_client_ctx(pki, NULL);
    cr_assert_eq(tw_tls_factory_init(&m->sf, m->sctx, &m->side[0].f, NULL), 0);
    cr_assert_eq(tw_tls_factory_init(&m->cf, m->cctx, &m->side[1].f, NULL), 0);
    for (int i = 0; i < 2; i++) {
        tw_protocol *p = tw_factory_build_protocol(i ? &m->cf.wf.base : &m->sf.wf.base, NULL);
        cr_assert(p);
        cr_assert_eq(tw_string_transport_new(&m->st[i]), 0);
        cr_assert_eq(tw_string_transport_connect(m->st[i], p), 0);
    }
}

/* What side i wrote since the last take (malloc'd copy). */
static char *mem_take(struct mem *m, int i, size_t *len)
{
    const char *v = tw_string_transport_value(m->st[i], len);
    char *copy = malloc(*len + 1);
    memcpy(copy, v, *len);
    tw_string_transport_clear(m->st[i]);
    return copy;
}

/* Moves bytes both ways until neither side writes. */
static void mem_pump(struct mem *m)
{
    for (int rounds = 0; rounds < 50; rounds++) {
        bool moved = false;
        for (int i = 0; i < 2; i++) {
            size_t n;
            char *b = mem_take(m, i, &n);
            if (n && m->st[!i]->connected) {
                tw_string_transport_feed(m->st[!i], b, n);
                moved = true;
            }
            free(b);
        }
        if (!moved)
            return;
    }
}

static void mem_finish(struct mem *m)
{
    for (int i = 0; i < 2; i++) {
        if (m->st[i]->connected)
            tw_string_transport_lose(m->st[i], TW_ECONNDONE);
        tw_string_transport_free(m->st[i]);
    }
    tw_tls_factory_cleanup(&m->sf);
    tw_tls_factory_cleanup(&m->cf);
    tw_tls_context_unref(m->sctx);
    tw_tls_context_unref(m->cctx);
}

/* The client's records, as a hostile client would seal them. */
static void forge_init(struct mem *m, tw__tls13 *f)
{
    SSL *cssl = tw__tls_ssl(m->side[1].p->transport);
    uint16_t suite = SSL_CIPHER_get_protocol_id(SSL_get_current_cipher(cssl));
    cr_assert(client_secret_len > 0);
    cr_assert_eq(tw__tls13_init(f, suite, client_secret, client_secret, client_secret_len, 0, 0),
                 0);
}

static size_t forge(tw__tls13 *f, uint8_t type, const void *p, size_t n, uint8_t *out)
{
    struct iovec v = {(void *)p, n};
    tw__tls13_cursor cur = {&v, 1, 0, 0};
    int rc = tw__tls13_seal(f, type, &cur, n, out);
    cr_assert_gt(rc, 0);
    return (size_t)rc;
}

TW_TEST(tls13, client_records_split_at_every_byte)
{
    tt_pki *pki = tt_pki_new();
    /* The client's records: data, a KeyUpdate(update_requested) with data
     * after it, and more data (four records, three keys in play). */
    size_t total = 0;
    for (size_t at = 0;; at++) {
        struct mem m;
        mem_init(&m, pki);
        mem_pump(&m);
        cr_assert_eq(m.side[0].hs, 1);
        cr_assert(tw__tls_own_records(m.side[0].p->transport));
        tw_transport *ct = m.side[1].p->transport;
        cr_assert_eq(tw_transport_write(ct, "first", 5), 0);
        cr_assert_eq(SSL_key_update(tw__tls_ssl(ct), SSL_KEY_UPDATE_REQUESTED), 1);
        cr_assert_eq(tw_transport_write(ct, "second!", 7), 0);
        cr_assert_eq(tw_transport_write(ct, "third", 5), 0);
        size_t n;
        char *bytes = mem_take(&m, 1, &n);
        total = n;
        if (at == 0) {
            /* One byte at a time, too. */
            tw_testing_feed_chunks(bytes, n, 1, tw_string_transport_feeder, m.st[0]);
        } else {
            tw_testing_feed_split(bytes, n, at, tw_string_transport_feeder, m.st[0]);
        }
        free(bytes);
        cr_assert_eq(m.side[0].got_len, 17, "split at %zu: %zu bytes", at, m.side[0].got_len);
        cr_assert_eq(memcmp(m.side[0].got, "firstsecond!third", 17), 0);
        cr_assert_eq(m.side[0].lost, 0);
        /* The server's KeyUpdate reaches the client, and its records
         * under the new key decrypt there. */
        cr_assert_eq(tw_transport_write(m.side[0].p->transport, "back", 4), 0);
        mem_pump(&m);
        cr_assert_eq(key_updates_seen, 1);
        cr_assert_eq(m.side[1].got_len, 4);
        mem_finish(&m);
        if (at >= total)
            break;
    }
    cr_assert_gt(total, 80);
    tt_pki_free(pki);
}

/* A forged client record set: what the server delivered and how it ended. */
struct hostile {
    const char *name;
    void (*make)(tw__tls13 *f, uint8_t *out, size_t *len);
    const char *server_says; /* in the server's lost reason */
    const char *client_says; /* in the client's (the alert it read), or NULL */
};

static void mk_bad_tag(tw__tls13 *f, uint8_t *out, size_t *len)
{
    *len = forge(f, 23, "good", 4, out);
    size_t n = forge(f, 23, "evil", 4, out + *len);
    out[*len + n - 3] ^= 0x40; /* in the tag */
    *len += n;
}

static void mk_body_flip(tw__tls13 *f, uint8_t *out, size_t *len)
{
    *len = forge(f, 23, "good", 4, out);
    size_t n = forge(f, 23, "evil", 4, out + *len);
    out[*len + 6] ^= 1; /* in the ciphertext */
    *len += n;
}

static void mk_ticket(tw__tls13 *f, uint8_t *out, size_t *len)
{
    static const uint8_t nst[] = {4, 0, 0, 4, 0, 0, 0, 0};
    *len = forge(f, 23, "good", 4, out);
    *len += forge(f, 22, nst, sizeof nst, out + *len);
}

static void mk_plain_ccs(tw__tls13 *f, uint8_t *out, size_t *len)
{
    static const uint8_t ccs[] = {20, 3, 3, 0, 1, 1};
    *len = forge(f, 23, "good", 4, out);
    memcpy(out + *len, ccs, sizeof ccs);
    *len += sizeof ccs;
}

static void mk_oversize_header(tw__tls13 *f, uint8_t *out, size_t *len)
{
    *len = forge(f, 23, "good", 4, out);
    static const uint8_t h[] = {23, 3, 3, 0x41, 0x01}; /* 2^14 + 257 */
    memcpy(out + *len, h, sizeof h);
    *len += sizeof h;
}

static void mk_oversize_plain(tw__tls13 *f, uint8_t *out, size_t *len)
{
    static uint8_t big[16385];
    memset(big, 'x', sizeof big);
    *len = forge(f, 23, "good", 4, out);
    *len += forge(f, 23, big, sizeof big, out + *len);
}

static void mk_bad_version(tw__tls13 *f, uint8_t *out, size_t *len)
{
    *len = forge(f, 23, "good", 4, out);
    size_t n = forge(f, 23, "evil", 4, out + *len);
    out[*len + 2] = 1;
    *len += n;
}

static void mk_alert(tw__tls13 *f, uint8_t *out, size_t *len)
{
    static const uint8_t a[] = {2, 40}; /* handshake_failure */
    *len = forge(f, 23, "good", 4, out);
    *len += forge(f, 21, a, 2, out + *len);
}

static void mk_long_alert(tw__tls13 *f, uint8_t *out, size_t *len)
{
    static const uint8_t a[] = {2, 40, 0};
    *len = forge(f, 23, "good", 4, out);
    *len += forge(f, 21, a, 3, out + *len);
}

static void mk_all_zero(tw__tls13 *f, uint8_t *out, size_t *len)
{
    static const uint8_t z[8] = {0};
    *len = forge(f, 23, "good", 4, out);
    *len += forge(f, 0, z, sizeof z, out + *len);
}

static void mk_key_update_then_data(tw__tls13 *f, uint8_t *out, size_t *len)
{
    static const uint8_t ku[] = {24, 0, 0, 1, 0, 'x'};
    *len = forge(f, 23, "good", 4, out);
    *len += forge(f, 22, ku, sizeof ku, out + *len);
}

static void mk_key_update_bad_request(tw__tls13 *f, uint8_t *out, size_t *len)
{
    static const uint8_t ku[] = {24, 0, 0, 1, 2};
    *len = forge(f, 23, "good", 4, out);
    *len += forge(f, 22, ku, sizeof ku, out + *len);
}

static void mk_key_update_long(tw__tls13 *f, uint8_t *out, size_t *len)
{
    static const uint8_t ku[] = {24, 0, 0, 2, 0, 0};
    *len = forge(f, 23, "good", 4, out);
    *len += forge(f, 22, ku, sizeof ku, out + *len);
}

static void mk_empty_handshake(tw__tls13 *f, uint8_t *out, size_t *len)
{
    *len = forge(f, 23, "good", 4, out);
    *len += forge(f, 22, "", 0, out + *len);
}

static void mk_data_inside_handshake(tw__tls13 *f, uint8_t *out, size_t *len)
{
    static const uint8_t ku[] = {24, 0};
    *len = forge(f, 23, "good", 4, out);
    *len += forge(f, 22, ku, sizeof ku, out + *len);
    *len += forge(f, 23, "x", 1, out + *len);
}

static void mk_protected_ccs(tw__tls13 *f, uint8_t *out, size_t *len)
{
    *len = forge(f, 23, "good", 4, out);
    *len += forge(f, 20, "\1", 1, out + *len);
}

static void mk_replay(tw__tls13 *f, uint8_t *out, size_t *len)
{
    *len = forge(f, 23, "good", 4, out);
    memcpy(out + *len, out, *len); /* the same record again: wrong nonce */
    *len *= 2;
}

static const struct hostile hostiles[] = {
    {"bad tag", mk_bad_tag, "bad tag", "bad record mac"},
    {"ciphertext flipped", mk_body_flip, "bad tag", "bad record mac"},
    {"replayed record", mk_replay, "bad tag", "bad record mac"},
    {"NewSessionTicket from a client", mk_ticket, "other than KeyUpdate", "unexpected message"},
    {"plaintext CCS", mk_plain_ccs, "ChangeCipherSpec", "unexpected message"},
    {"protected CCS", mk_protected_ccs, "protected ChangeCipherSpec", "unexpected message"},
    {"oversize header", mk_oversize_header, "longer than", "record overflow"},
    {"oversize plaintext", mk_oversize_plain, "more than 2^14", "record overflow"},
    {"bad version", mk_bad_version, "legacy version", "decode error"},
    {"fatal alert", mk_alert, "alert 40 (handshake failure)", NULL},
    {"alert of 3 bytes", mk_long_alert, "alert of the wrong length", "decode error"},
    {"all-zero plaintext", mk_all_zero, "no content type", "unexpected message"},
    {"KeyUpdate with data after it", mk_key_update_then_data, "not at the end",
     "unexpected message"},
    {"KeyUpdate request 2", mk_key_update_bad_request, "bad request", "illegal parameter"},
    {"KeyUpdate of length 2", mk_key_update_long, "wrong length", "decode error"},
    {"empty handshake record", mk_empty_handshake, "empty handshake", "unexpected message"},
    {"data inside a handshake message", mk_data_inside_handshake, "middle of a handshake",
     "unexpected message"},
};

TW_TEST(tls13, hostile_client_records_fail_the_connection)
{
    tt_pki *pki = tt_pki_new();
    static uint8_t out[3 * (16384 + 300)];
    for (size_t i = 0; i < sizeof hostiles / sizeof hostiles[0]; i++) {
        const struct hostile *h = &hostiles[i];
        struct mem m;
        mem_init(&m, pki);
        mem_pump(&m);
        cr_assert(tw__tls_own_records(m.side[0].p->transport), "%s", h->name);
        tw__tls13 f;
        forge_init(&m, &f);
        size_t len;
        h->make(&f, out, &len);
        tw__tls13_cleanup(&f);
        tw_string_transport_feed(m.st[0], out, len);
        /* What came before the bad record was delivered. */
        cr_assert_eq(m.side[0].got_len, 4, "%s", h->name);
        cr_assert_eq(memcmp(m.side[0].got, "good", 4), 0, "%s", h->name);
        cr_assert_eq(m.st[0]->lose_calls, 1, "%s: the server closes", h->name);
        /* The client reads the server's alert (encrypted with the server's
         * key: OpenSSL decrypts it). */
        mem_pump(&m);
        tw_string_transport_lose(m.st[0], TW_ECONNDONE);
        tw_string_transport_lose(m.st[1], TW_ECONNDONE);
        cr_assert_eq(m.side[0].lost_code, TW_ETLS, "%s: %s", h->name, m.side[0].lost_msg);
        cr_assert(strstr(m.side[0].lost_msg, h->server_says), "%s: %s", h->name,
                  m.side[0].lost_msg);
        if (h->client_says) {
            cr_assert_eq(m.side[1].lost_code, TW_ETLS, "%s: %s", h->name, m.side[1].lost_msg);
            cr_assert(strstr(m.side[1].lost_msg, h->client_says), "%s: client: %s", h->name,
                      m.side[1].lost_msg);
        }
        mem_finish(&m);
    }
    tt_pki_free(pki);
}

TW_TEST(tls13, key_update_split_across_records_and_user_canceled)
{
    tt_pki *pki = tt_pki_new();
    struct mem m;
    mem_init(&m, pki);
    mem_pump(&m);
    tw__tls13 f;
    forge_init(&m, &f);
    static uint8_t out[4096];
    static const uint8_t ku1[] = {24, 0}, ku2[] = {0, 1, 0}, cancel[] = {1, 90};
    size_t len = forge(&f, 21, cancel, 2, out); /* ignored */
    len += forge(&f, 23, "", 0, out + len);     /* empty data: allowed */
    len += forge(&f, 22, ku1, sizeof ku1, out + len);
    len += forge(&f, 22, ku2, sizeof ku2, out + len);
    cr_assert_eq(tw__tls13_update_dir(&f, &f.wr), 0);
    len += forge(&f, 23, "after", 5, out + len);
    /* Padded: "padded" with type 23 and zeros, sealed as type 0. */
    static const uint8_t padded[] = {'p', 'a', 'd', 23, 0, 0, 0, 0, 0};
    len += forge(&f, 0, padded, sizeof padded, out + len);
    uint8_t close[2] = {1, 0};
    len += forge(&f, 21, close, 2, out + len);
    tw__tls13_cleanup(&f);
    tw_testing_feed_chunks(out, len, 3, tw_string_transport_feeder, m.st[0]);
    cr_assert_eq(m.side[0].got_len, 8, "%zu", m.side[0].got_len);
    cr_assert_eq(memcmp(m.side[0].got, "afterpad", 8), 0);
    /* close_notify: answered, and a clean end. */
    cr_assert_eq(m.st[0]->lose_calls, 1);
    mem_pump(&m);
    tw_string_transport_lose(m.st[0], TW_ECONNDONE);
    cr_assert_eq(m.side[0].lost_code, TW_ECONNDONE, "%s", m.side[0].lost_msg);
    cr_assert_eq(m.side[1].lost, 0); /* the client still waits for the close */
    mem_finish(&m);
    tt_pki_free(pki);
}

TW_TEST(tls13, server_close_notify_and_truncation)
{
    tt_pki *pki = tt_pki_new();
    for (int round = 0; round < 2; round++) {
        struct mem m;
        mem_init(&m, pki);
        mem_pump(&m);
        cr_assert(tw__tls_own_records(m.side[0].p->transport));
        if (round == 0) {
            /* Our lose_connection: encrypted close_notify; the client reads
             * it as a clean end (and answers). */
            cr_assert_eq(tw_transport_write(m.side[0].p->transport, "bye", 3), 0);
            tw_transport_lose_connection(m.side[0].p->transport);
            cr_assert_eq(m.st[0]->lose_calls, 1);
            mem_pump(&m);
            cr_assert_eq(m.side[1].got_len, 3);
            cr_assert_eq(m.st[1]->lose_calls, 1, "the client answered close_notify");
            tw_string_transport_lose(m.st[1], TW_ECONNDONE);
            tw_string_transport_lose(m.st[0], TW_ECONNDONE);
            cr_assert_eq(m.side[0].lost_code, TW_ECONNDONE, "%s", m.side[0].lost_msg);
            cr_assert_eq(m.side[1].lost_code, TW_ECONNDONE, "%s", m.side[1].lost_msg);
        } else {
            /* The transport ends with no close_notify: a truncation. */
            tw_string_transport_lose(m.st[0], TW_ECONNDONE);
            cr_assert_eq(m.side[0].lost_code, TW_ECONNLOST, "%s", m.side[0].lost_msg);
            cr_assert(strstr(m.side[0].lost_msg, "without close_notify"));
        }
        mem_finish(&m);
    }
    tt_pki_free(pki);
}

TW_TEST(tls13, partial_record_buffer_only_while_partial)
{
    tt_pki *pki = tt_pki_new();
    struct mem m;
    mem_init(&m, pki);
    mem_pump(&m);
    tw__tls13 f;
    forge_init(&m, &f);
    static uint8_t out[20000];
    static uint8_t big[16384];
    memset(big, 'b', sizeof big);
    size_t len = forge(&f, 23, big, sizeof big, out);
    tw__tls13_cleanup(&f);
    long live0 = tw_testing_alloc_live();
    tw_string_transport_feed(m.st[0], out, 100);
    cr_assert_eq(tw_testing_alloc_live(), live0 + 1, "a buffer for the partial record");
    tw_string_transport_feed(m.st[0], out + 100, len - 100);
    cr_assert_eq(tw_testing_alloc_live(), live0, "freed once whole");
    cr_assert_eq(m.side[0].got_len, sizeof big);
    mem_finish(&m);
    tt_pki_free(pki);
}

/* Allocation failure around the switch: the connection either switches,
 * stays on OpenSSL, or fails cleanly; nothing leaks (ASan). */
TW_TEST(tls13, allocation_failure_at_the_switch)
{
    tt_pki *pki = tt_pki_new();
    int switched = 0, other = 0;
    for (long n = 0; n < 12; n++) {
        struct mem m;
        mem_init(&m, pki);
        /* Up to the client's last flight. */
        size_t len;
        char *b = mem_take(&m, 1, &len);
        tw_string_transport_feed(m.st[0], b, len);
        free(b);
        b = mem_take(&m, 0, &len);
        tw_string_transport_feed(m.st[1], b, len);
        free(b);
        b = mem_take(&m, 1, &len); /* Finished */
        tw_testing_fail_alloc_after(n);
        tw_string_transport_feed(m.st[0], b, len);
        tw_testing_fail_alloc_off();
        free(b);
        bool ok = m.side[0].hs == 1 && m.st[0]->lose_calls == 0;
        if (ok && tw__tls_own_records(m.side[0].p->transport))
            switched++;
        else
            other++;
        if (ok) {
            mem_pump(&m);
            cr_assert_eq(tw_transport_write(m.side[1].p->transport, "ping", 4), 0);
            mem_pump(&m);
            cr_assert_eq(m.side[0].got_len, 4, "n=%ld", n);
        }
        mem_finish(&m);
    }
    cr_assert_gt(switched, 0);
    cr_assert_gt(other, 0);
    tt_pki_free(pki);
}

/* A client that negotiated max_fragment_length gets records no longer than
 * that: the server stays on OpenSSL's record layer, which keeps to it. */
TW_TEST(tls13, max_fragment_length_stays_on_openssl)
{
    tt_pki *pki = tt_pki_new();
    struct mem m;
    client_max_frag = TLSEXT_max_fragment_length_512;
    mem_init(&m, pki);
    mem_pump(&m);
    client_max_frag = 0;
    cr_assert_eq(m.side[0].hs, 1);
    cr_assert_not(tw__tls_own_records(m.side[0].p->transport));
    static char big[3000];
    memset(big, 'm', sizeof big);
    cr_assert_eq(tw_transport_write(m.side[0].p->transport, big, sizeof big), 0);
    mem_pump(&m);
    cr_assert_eq(m.side[1].lost, 0, "%s", m.side[1].lost_msg);
    cr_assert_eq(m.side[1].got_len, sizeof big);
    mem_finish(&m);
    tt_pki_free(pki);
}

static void write_a_made(tw_protocol *p)
{
    tt_made(p);
    cr_assert_eq(tw_transport_write(p->transport, "A", 1), 0);
}

static void write_b_hs(tw_protocol *p)
{
    tt_hs(p);
    cr_assert_eq(tw_transport_write(p->transport, "B", 1), 0);
}

static const tw_protocol_ops order_ops = {
    .connection_made = write_a_made,
    .data_received = tt_data,
    .connection_lost = tt_lost,
    .handshake_completed = write_b_hs,
    .free = tt_free,
};

/* Written before the handshake completed, then from handshake_completed:
 * the peer reads them in that order. */
TW_TEST(tls13, writes_keep_their_order_across_the_handshake)
{
    tt_pki *pki = tt_pki_new();
    for (int side = 0; side < 2; side++) {
        /* As mem_init, with the writing side's protocol the ordering one. */
        struct mem m;
        memset(&m, 0, sizeof m);
        tt_side_init(&m.side[0]);
        tt_side_init(&m.side[1]);
        hook_client(&m.side[1]);
        tw_factory_init(&m.side[side].f, NULL, &order_ops, sizeof(tw_protocol), NULL);
        m.sctx = tt_server_ctx(&pki->server, NULL);
        m.cctx = tt_client_ctx(pki, NULL);
        cr_assert_eq(tw_tls_factory_init(&m.sf, m.sctx, &m.side[0].f, NULL), 0);
        cr_assert_eq(tw_tls_factory_init(&m.cf, m.cctx, &m.side[1].f, NULL), 0);
        for (int i = 0; i < 2; i++) {
            tw_protocol *p = tw_factory_build_protocol(i ? &m.cf.wf.base : &m.sf.wf.base, NULL);
            cr_assert(p);
            cr_assert_eq(tw_string_transport_new(&m.st[i]), 0);
            cr_assert_eq(tw_string_transport_connect(m.st[i], p), 0);
        }
        mem_pump(&m);
        tt_side *peer = &m.side[!side];
        cr_assert_eq(peer->got_len, 2, "side %d", side);
        cr_assert_eq(memcmp(peer->got, "AB", 2), 0, "side %d: %.2s", side, peer->got);
        mem_finish(&m);
    }
    tt_pki_free(pki);
}

/* ---- The record module alone */

static bool count_data(void *arg, const uint8_t *p, size_t n)
{
    (void)p;
    *(size_t *)arg += n;
    return true;
}

static bool refuse_update(void *arg)
{
    (void)arg;
    return true;
}

TW_TEST(tls13, sequence_numbers_never_wrap_and_gcm_keys_wear_out)
{
    static const uint8_t a[32] = "a secret of thirty-two bytes...",
                         b[32] = "another one, also 32 bytes.....";
    static uint8_t rec[TW__TLS13_OVERHEAD + 16], scratch[TW__TLS13_MAX_CIPHER];
    const tw__tls13_sink sink = {.data = count_data, .key_update_requested = refuse_update};
    for (uint16_t suite = 0x1301; suite <= 0x1303; suite += 2) {
        tw__tls13 w, r;
        /* The last sequence number there is: one record, then no more. */
        cr_assert_eq(tw__tls13_init(&w, suite, b, a, 32, 0, UINT64_MAX - 1), 0);
        cr_assert_eq(tw__tls13_init(&r, suite, a, b, 32, UINT64_MAX - 1, 0), 0);
        cr_assert_eq(tw__tls13_write_key_worn(&w), suite != 0x1303);
        struct iovec v = {(void *)"data", 4};
        tw__tls13_cursor cur = {&v, 1, 0, 0};
        int n = tw__tls13_seal(&w, 23, &cur, 4, rec);
        cr_assert_eq(n, (int)tw__tls13_record_size(4));
        cur = (tw__tls13_cursor){&v, 1, 0, 0};
        uint8_t rec2[TW__TLS13_OVERHEAD + 16];
        cr_assert_eq(tw__tls13_seal(&w, 23, &cur, 4, rec2), TW_ELIMIT);
        size_t got = 0;
        tw__tls13_error err;
        cr_assert_eq(tw__tls13_read(&r, rec, (size_t)n, scratch, &sink, &got, &err), 0);
        cr_assert_eq(got, 4);
        /* Nothing at all (not even a KeyUpdate) once they are used up. */
        cr_assert_eq(tw__tls13_seal_key_update(&w, false, rec), TW_ELIMIT);
        tw__tls13_cleanup(&w);
        /* A worn GCM key: a KeyUpdate starts the sequence again, under the
         * next key. */
        cr_assert_eq(tw__tls13_init(&w, suite, b, a, 32, 0, 1ull << 24), 0);
        cr_assert_eq(tw__tls13_write_key_worn(&w), suite != 0x1303);
        uint8_t old_key[32];
        memcpy(old_key, w.wr.key, 32);
        cr_assert_eq(tw__tls13_seal_key_update(&w, false, rec), (int)tw__tls13_record_size(5));
        cr_assert_neq(memcmp(old_key, w.wr.key, 32), 0);
        cr_assert_eq(w.wr.seq, 0);
        cr_assert_not(tw__tls13_write_key_worn(&w));
        tw__tls13_cleanup(&w);
        tw__tls13_cleanup(&r);
        /* Wiped. */
        static const uint8_t zero[48];
        cr_assert_eq(memcmp(w.wr.secret, zero, 48), 0);
        cr_assert_eq(memcmp(w.wr.key, zero, 32), 0);
    }
    tw__tls13 t;
    cr_assert_eq(tw__tls13_init(&t, 0x1304, a, b, 32, 0, 0), TW_EINVAL); /* CCM: not ours */
    cr_assert_eq(tw__tls13_init(&t, 0x1302, a, b, 32, 0, 0), TW_EINVAL); /* SHA-384 wants 48 */
    tw__tls13_cleanup(&t);
}

/* A bad header that arrived in pieces, then more bytes: the failure is
 * final (no half-read record is read on). This is what a TLS connection
 * inside another one meets: the outer one delivers the rest of its input
 * after the inner one failed. Also after the partial buffer's allocation
 * failed. */
TW_TEST(tls13, a_failure_is_final)
{
    static const uint8_t a[32] = "a secret of thirty-two bytes...",
                         b[32] = "another one, also 32 bytes.....";
    static uint8_t scratch[TW__TLS13_MAX_CIPHER];
    const tw__tls13_sink sink = {.data = count_data, .key_update_requested = refuse_update};
    static const uint8_t bad[] = {22, 3, 3, 0, 10, 0xff};
    tw__tls13 r;
    cr_assert_eq(tw__tls13_init(&r, 0x1301, a, b, 32, 0, 0), 0);
    size_t got = 0;
    tw__tls13_error err;
    cr_assert_eq(tw__tls13_read(&r, bad, 3, scratch, &sink, &got, &err), 0);
    cr_assert_eq(tw__tls13_read(&r, bad + 3, 2, scratch, &sink, &got, &err), TW_ETLS);
    cr_assert_eq(err.send_alert, TW__TLS13_AL_UNEXPECTED_MESSAGE);
    cr_assert_eq(tw__tls13_read(&r, bad + 5, 1, scratch, &sink, &got, &err), TW_ETLS);
    cr_assert_eq(tw__tls13_read(&r, bad, sizeof bad, scratch, &sink, &got, &err), TW_ETLS);
    cr_assert_eq(got, 0);
    tw__tls13_cleanup(&r);

    /* The partial record's buffer cannot be had. */
    static const uint8_t head[] = {23, 3, 3, 0, 40};
    cr_assert_eq(tw__tls13_init(&r, 0x1301, a, b, 32, 0, 0), 0);
    tw_testing_fail_alloc_after(0);
    int rc = tw__tls13_read(&r, head, sizeof head, scratch, &sink, &got, &err);
    tw_testing_fail_alloc_off();
    cr_assert_eq(rc, TW_ENOMEM);
    cr_assert_eq(tw__tls13_read(&r, head, 1, scratch, &sink, &got, &err), TW_ETLS);
    tw__tls13_cleanup(&r);
}

/* Records that carry nothing are bounded as OpenSSL bounds them: 32 empty
 * ones in a row, 5 warning alerts in a row; data in between resets both. */
TW_TEST(tls13, floods_of_empty_records_and_warning_alerts_end)
{
    static const uint8_t a[32] = "a secret of thirty-two bytes...",
                         b[32] = "another one, also 32 bytes.....";
    /* Room for 3 floods of 33 records and 2 data records. */
    static uint8_t scratch[TW__TLS13_MAX_CIPHER], rec[128 * (TW__TLS13_OVERHEAD + 8)];
    const tw__tls13_sink sink = {.data = count_data, .key_update_requested = refuse_update};
    static const uint8_t cancel[] = {1, 90};
    struct {
        uint8_t type;
        const void *p;
        size_t n;
        int allowed;
        const char *why;
    } floods[] = {
        {23, "", 0, 32, "too many empty records"},
        {21, cancel, 2, 5, "too many warning alerts"},
    };
    for (size_t k = 0; k < 2; k++) {
        for (int extra = 0; extra < 2; extra++) {
            tw__tls13 w, r;
            cr_assert_eq(tw__tls13_init(&w, 0x1303, b, a, 32, 0, 0), 0);
            cr_assert_eq(tw__tls13_init(&r, 0x1303, a, b, 32, 0, 0), 0);
            size_t len = 0;
            /* Twice the limit with data between, then the limit (+ 1). */
            for (int round = 0; round < 3; round++) {
                int count = round < 2 ? floods[k].allowed : floods[k].allowed + extra;
                for (int i = 0; i < count; i++) {
                    struct iovec v = {(void *)floods[k].p, floods[k].n};
                    tw__tls13_cursor cur = {&v, 1, 0, 0};
                    len += (size_t)tw__tls13_seal(&w, floods[k].type, &cur, floods[k].n, rec + len);
                }
                if (round < 2) {
                    struct iovec v = {(void *)"d", 1};
                    tw__tls13_cursor cur = {&v, 1, 0, 0};
                    len += (size_t)tw__tls13_seal(&w, 23, &cur, 1, rec + len);
                }
            }
            size_t got = 0;
            tw__tls13_error err;
            int rc = tw__tls13_read(&r, rec, len, scratch, &sink, &got, &err);
            cr_assert_eq(got, 2, "the data between the floods");
            if (extra) {
                cr_assert_eq(rc, TW_ETLS, "%s: one more than allowed", floods[k].why);
                cr_assert_str_eq(err.why, floods[k].why);
                cr_assert_eq(err.send_alert, TW__TLS13_AL_UNEXPECTED_MESSAGE);
            } else {
                cr_assert_eq(rc, 0, "%s: as many as allowed", floods[k].why);
            }
            tw__tls13_cleanup(&w);
            tw__tls13_cleanup(&r);
        }
    }
}
