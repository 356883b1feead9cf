/* TLS connections over loopback TCP: handshake, echo, what a protocol can
 * ask, verification failures, closing. */
#include <openssl/ssl.h>

#include "tls-test.h"

static bool got_n(void *arg)
{
    tt_side *s = arg;
    return s->got_len >= (size_t)(uintptr_t)s->user;
}

static bool hs_both(void *arg)
{
    tt_side *s = arg;
    return s[0].hs && s[1].hs;
}

struct seen {
    char alpn[16], version[16], cipher[64], sni[64];
    tw_tls_peer_certificate cert;
    int cert_rc, before_rc;
};

static void record_hs(tt_side *s, tw_protocol *p)
{
    struct seen *v = s->user;
    const char *a = tw_tls_negotiated_protocol(p->transport);
    snprintf(v->alpn, sizeof v->alpn, "%s", a ? a : "(none)");
    snprintf(v->version, sizeof v->version, "%s", tw_tls_version_name(p->transport));
    snprintf(v->cipher, sizeof v->cipher, "%s", tw_tls_cipher_name(p->transport));
    const char *sni = tw_tls_server_name(p->transport);
    snprintf(v->sni, sizeof v->sni, "%s", sni ? sni : "(none)");
    v->cert_rc = tw_tls_get_peer_certificate(p->transport, &v->cert);
}

static void query_before(tw_protocol *p)
{
    tt_side *s = (tt_side *)p->factory;
    tt_made(p);
    struct seen *v = s->user;
    tw_tls_peer_certificate c;
    v->before_rc = tw_tls_get_peer_certificate(p->transport, &c);
    cr_assert(tw_tls_is_tls(p->transport));
    cr_assert(!tw_tls_handshake_done(p->transport));
    cr_assert_null(tw_tls_version_name(p->transport));
}

TW_REACTOR_TEST(tls, echo_and_writes_before_handshake)
{
    tt_pki *pki = tt_pki_new();
    tw_tls_context *sctx = tt_server_ctx(&pki->server, NULL);
    tw_tls_context *cctx = tt_client_ctx(pki, NULL);
    tt_pair pp;
    tt_pair_init(&pp);
    pp.side[0].echo = true;
    pp.side[1].send_at_made = "hello, before the handshake";
    pp.side[1].user = (void *)(uintptr_t)strlen("hello, before the handshake");
    tt_listen(r, &pp, sctx);
    tt_connect(r, &pp, cctx, NULL);
    cr_assert(tt_run_until(r, got_n, &pp.side[1]));
    cr_assert_eq(memcmp(pp.side[1].got, "hello, before the handshake", pp.side[1].got_len), 0);
    cr_assert_eq(pp.side[0].hs, 1);
    cr_assert_eq(pp.side[1].hs, 1);
    cr_assert_eq(pp.side[0].data_before_hs, 0);
    cr_assert_eq(pp.side[1].data_before_hs, 0);
    /* A big write goes through too (many records). */
    static char big[40000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (char)('a' + i % 26);
    pp.side[1].got_len = 0;
    pp.side[1].user = (void *)(uintptr_t)sizeof big;
    cr_assert_eq(tw_transport_write(pp.side[1].p->transport, big, sizeof big), 0);
    cr_assert(tt_run_until(r, got_n, &pp.side[1]));
    cr_assert_eq(memcmp(pp.side[1].got, big, sizeof big), 0);
    /* A clean close: close_notify, TW_ECONNDONE on both sides. */
    tw_transport_lose_connection(pp.side[1].p->transport);
    tt_pair_finish(r, &pp);
    cr_assert_eq(pp.side[0].lost_code, TW_ECONNDONE, "%s", pp.side[0].lost_msg);
    cr_assert_eq(pp.side[1].lost_code, TW_ECONNDONE, "%s", pp.side[1].lost_msg);
    cr_assert_eq(pp.side[0].freed, 1);
    cr_assert_eq(pp.side[1].freed, 1);
    tw_tls_context_unref(sctx);
    tw_tls_context_unref(cctx);
    tt_pki_free(pki);
}

TW_REACTOR_TEST(tls, alpn_cert_version_cipher)
{
    tt_pki *pki = tt_pki_new();
    static const char *const salpn[] = {"h2", "http/1.1", NULL};
    static const char *const calpn[] = {"http/1.1", "h2", NULL};
    tw_tls_context *sctx = tt_server_ctx(&pki->server, &(tw_tls_server_options){.alpn = salpn});
    tw_tls_context *cctx = tt_client_ctx(pki, &(tw_tls_client_options){.alpn = calpn});
    tt_pair pp;
    tt_pair_init(&pp);
    struct seen sv = {0}, cv = {0};
    pp.side[0].user = &sv;
    pp.side[1].user = &cv;
    pp.side[0].on_hs = record_hs;
    pp.side[1].on_hs = record_hs;
    static const tw_protocol_ops before_ops = {.connection_made = query_before,
                                               .data_received = tt_data,
                                               .connection_lost = tt_lost,
                                               .handshake_completed = tt_hs,
                                               .free = tt_free};
    pp.side[1].f.protocol_ops = &before_ops;
    tt_listen(r, &pp, sctx);
    tt_connect(r, &pp, cctx, NULL);
    cr_assert(tt_run_until(r, hs_both, pp.side));
    cr_assert_eq(cv.before_rc, TW_EAGAIN);
    cr_assert_str_eq(sv.alpn, "h2"); /* the server's preference wins */
    cr_assert_str_eq(cv.alpn, "h2");
    cr_assert_str_eq(cv.version, "TLSv1.3");
    cr_assert_str_eq(sv.version, "TLSv1.3");
    cr_assert_str_eq(cv.cipher, sv.cipher);
    cr_assert_str_eq(sv.sni, "localhost");
    /* The client sees the server's certificate, as OpenSSL itself describes it. */
    cr_assert_eq(cv.cert_rc, 0);
    cr_assert_str_eq(cv.cert.subject, "CN=localhost,O=Twine Tests");
    cr_assert_str_eq(cv.cert.issuer, "CN=Twine Test CA,O=Twine Tests");
    unsigned char md[32];
    unsigned int mdlen;
    X509_digest(pki->server.cert, EVP_sha256(), md, &mdlen);
    cr_assert_eq(memcmp(md, cv.cert.sha256, 32), 0);
    int days, secs;
    ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(pki->server.cert));
    int64_t expect_after = (int64_t)time(NULL) + days * 86400LL + secs;
    cr_assert(cv.cert.not_after >= expect_after - 2 && cv.cert.not_after <= expect_after + 2);
    cr_assert(cv.cert.not_before < (int64_t)time(NULL));
    /* The server got no client certificate. */
    cr_assert_eq(sv.cert_rc, TW_ENOENT);
    tw_transport_lose_connection(pp.side[0].p->transport);
    tt_pair_finish(r, &pp);
    cr_assert_eq(pp.side[1].lost_code, TW_ECONNDONE, "%s", pp.side[1].lost_msg);
    tw_tls_context_unref(sctx);
    tw_tls_context_unref(cctx);
    tt_pki_free(pki);
}

/* Runs a connection that must fail; returns the client's and server's reasons. */
static void expect_failure(tw_reactor *r, tw_tls_context *sctx, tw_tls_context *cctx,
                           const char *hostname, tt_pair *pp)
{
    tt_pair_init(pp);
    pp->side[1].send_at_made = "secret";
    tt_listen(r, pp, sctx);
    tt_connect(r, pp, cctx, hostname);
    tt_pair_finish(r, pp);
    cr_assert_eq(pp->side[0].hs, 0);
    cr_assert_eq(pp->side[1].hs, 0);
    cr_assert_eq(pp->side[0].got_len, 0);
    cr_assert_eq(pp->side[1].got_len, 0);
}

TW_REACTOR_TEST(tls, verify_wrong_hostname)
{
    tt_pki *pki = tt_pki_new();
    tw_tls_context *sctx = tt_server_ctx(&pki->server, NULL);
    tw_tls_context *cctx = tt_client_ctx(pki, NULL);
    tt_pair pp;
    expect_failure(r, sctx, cctx, "wrong.example", &pp);
    cr_assert_eq(pp.side[1].lost_code, TW_ETLSVERIFY, "%s", pp.side[1].lost_msg);
    cr_assert(strstr(pp.side[1].lost_msg, "hostname mismatch"), "%s", pp.side[1].lost_msg);
    cr_assert_eq(pp.side[0].lost_code, TW_ETLS, "%s", pp.side[0].lost_msg);
    tw_tls_context_unref(sctx);
    tw_tls_context_unref(cctx);
    tt_pki_free(pki);
}

TW_REACTOR_TEST(tls, verify_expired)
{
    tt_pki *pki = tt_pki_new();
    tw_tls_context *sctx = tt_server_ctx(&pki->expired, NULL);
    tw_tls_context *cctx = tt_client_ctx(pki, NULL);
    tt_pair pp;
    expect_failure(r, sctx, cctx, NULL, &pp);
    cr_assert_eq(pp.side[1].lost_code, TW_ETLSVERIFY, "%s", pp.side[1].lost_msg);
    cr_assert(strstr(pp.side[1].lost_msg, "certificate has expired"), "%s", pp.side[1].lost_msg);
    tw_tls_context_unref(sctx);
    tw_tls_context_unref(cctx);
    tt_pki_free(pki);
}

TW_REACTOR_TEST(tls, verify_untrusted_root)
{
    tt_pki *pki = tt_pki_new();
    tw_tls_context *sctx = tt_server_ctx(&pki->untrusted, NULL);
    tw_tls_context *cctx = tt_client_ctx(pki, NULL);
    tt_pair pp;
    expect_failure(r, sctx, cctx, NULL, &pp);
    cr_assert_eq(pp.side[1].lost_code, TW_ETLSVERIFY, "%s", pp.side[1].lost_msg);
    cr_assert(strstr(pp.side[1].lost_msg, "unable to get local issuer certificate"), "%s",
              pp.side[1].lost_msg);
    tw_tls_context_unref(sctx);
    tw_tls_context_unref(cctx);
    tt_pki_free(pki);
}

TW_REACTOR_TEST(tls, old_protocol_refused)
{
    tt_pki *pki = tt_pki_new();
    tw_tls_context *sctx = tt_server_ctx(&pki->server, NULL);
    tw_tls_context *cctx = tt_client_ctx(
        pki, &(tw_tls_client_options){.min_version = TW_TLS_1_0, .max_version = TW_TLS_1_0});
    tt_pair pp;
    expect_failure(r, sctx, cctx, NULL, &pp);
    cr_assert_eq(pp.side[0].lost_code, TW_ETLS, "%s", pp.side[0].lost_msg);
    cr_assert_eq(pp.side[1].lost_code, TW_ETLS, "%s", pp.side[1].lost_msg);
    bool named = strstr(pp.side[0].lost_msg, "protocol version") ||
                 strstr(pp.side[0].lost_msg, "no protocols available") ||
                 strstr(pp.side[0].lost_msg, "unsupported protocol");
    cr_assert(named, "%s", pp.side[0].lost_msg);
    tw_tls_context_unref(sctx);
    tw_tls_context_unref(cctx);
    tt_pki_free(pki);
}

TW_REACTOR_TEST(tls, client_cert_required_and_verified)
{
    tt_pki *pki = tt_pki_new();
    tw_tls_context *sctx =
        tt_server_ctx(&pki->server, &(tw_tls_server_options){.client_ca_file = pki->ca.cert_file,
                                                             .require_client_cert = true});
    /* Without a certificate: refused. */
    tw_tls_context *bare = tt_client_ctx(pki, NULL);
    tt_pair pp;
    tt_pair_init(&pp);
    tt_listen(r, &pp, sctx);
    tt_connect(r, &pp, bare, NULL);
    tt_pair_finish(r, &pp);
    cr_assert_eq(pp.side[0].lost_code, TW_ETLS, "%s", pp.side[0].lost_msg);
    cr_assert(strstr(pp.side[0].lost_msg, "certificate"), "%s", pp.side[0].lost_msg);
    cr_assert_eq(pp.side[0].hs, 0);
    /* With one: the server sees who. */
    tw_tls_context *withc =
        tt_client_ctx(pki, &(tw_tls_client_options){.cert_file = pki->client.cert_file,
                                                    .key_file = pki->client.key_file});
    tt_pair_init(&pp);
    struct seen sv = {0}, cv = {0};
    pp.side[0].user = &sv;
    pp.side[1].user = &cv;
    pp.side[0].on_hs = record_hs;
    pp.side[1].on_hs = record_hs;
    pp.side[1].close_at_hs = true;
    tt_listen(r, &pp, sctx);
    tt_connect(r, &pp, withc, NULL);
    tt_pair_finish(r, &pp);
    cr_assert_eq(pp.side[0].hs, 1);
    cr_assert_eq(sv.cert_rc, 0);
    cr_assert_str_eq(sv.cert.subject, "CN=client,O=Twine Tests");
    cr_assert_eq(pp.side[0].lost_code, TW_ECONNDONE, "%s", pp.side[0].lost_msg);
    tw_tls_context_unref(sctx);
    tw_tls_context_unref(bare);
    tw_tls_context_unref(withc);
    tt_pki_free(pki);
}

TW_REACTOR_TEST(tls, sni_picks_certificate)
{
    tt_pki *pki = tt_pki_new();
    tw_tls_context *sctx = tt_server_ctx(&pki->server, NULL);
    tw_failure *f = NULL;
    cr_assert_eq(tw_tls_context_add_sni(sctx, "*.wild.example", pki->other.cert_file,
                                        pki->other.key_file, &f),
                 0);
    cr_assert_eq(tw_tls_context_add_sni(sctx, "x", "/nonexistent.pem", pki->other.key_file, &f),
                 TW_EINVAL);
    cr_assert(strstr(tw_failure_message(f), "/nonexistent.pem"), "%s", tw_failure_message(f));
    tw_failure_unref(f);
    const char *names[] = {"a.wild.example", "localhost"};
    const char *subjects[] = {"CN=other.example,O=Twine Tests", "CN=localhost,O=Twine Tests"};
    for (int i = 0; i < 2; i++) {
        tw_tls_context *cctx = tt_client_ctx(pki, NULL);
        tt_pair pp;
        tt_pair_init(&pp);
        struct seen sv = {0}, cv = {0};
        pp.side[0].user = &sv;
        pp.side[1].user = &cv;
        pp.side[0].on_hs = record_hs;
        pp.side[1].on_hs = record_hs;
        pp.side[1].close_at_hs = true;
        tt_listen(r, &pp, sctx);
        tt_connect(r, &pp, cctx, names[i]);
        tt_pair_finish(r, &pp);
        cr_assert_eq(pp.side[1].hs, 1, "%s: %s", names[i], pp.side[1].lost_msg);
        cr_assert_str_eq(cv.cert.subject, subjects[i]);
        cr_assert_str_eq(sv.sni, names[i]);
        tw_tls_context_unref(cctx);
    }
    /* Used now: no more entries. */
    cr_assert_eq(tw_tls_context_add_sni(sctx, "y", pki->other.cert_file, pki->other.key_file, &f),
                 TW_EBUSY);
    tw_failure_unref(f);
    tw_tls_context_unref(sctx);
    tt_pki_free(pki);
}

TW_REACTOR_TEST(tls, abort_and_queries_on_plain)
{
    tt_pki *pki = tt_pki_new();
    tw_tls_context *sctx = tt_server_ctx(&pki->server, NULL);
    tw_tls_context *cctx = tt_client_ctx(pki, NULL);
    tt_pair pp;
    tt_pair_init(&pp);
    tt_listen(r, &pp, sctx);
    tt_connect(r, &pp, cctx, NULL);
    cr_assert(tt_run_until(r, hs_both, pp.side));
    tw_transport_abort_connection(pp.side[1].p->transport);
    tt_pair_finish(r, &pp);
    cr_assert_eq(pp.side[1].lost_code, TW_ECONNABORTED, "%s", pp.side[1].lost_msg);
    /* The server saw the TCP connection end without close_notify. */
    cr_assert_eq(pp.side[0].lost_code, TW_ECONNLOST, "%s", pp.side[0].lost_msg);
    cr_assert(strstr(pp.side[0].lost_msg, "close_notify"), "%s", pp.side[0].lost_msg);
    cr_assert(!tw_tls_is_tls(NULL));
    tw_tls_context_unref(sctx);
    tw_tls_context_unref(cctx);
    tt_pki_free(pki);
}

static int half_closes;

static void count_half_close(tw_protocol *p)
{
    (void)p;
    half_closes++;
}

TW_REACTOR_TEST(tls, truncation_is_a_loss_even_for_half_closing_protocols)
{
    /* An end of file under TLS without close_notify is a truncation: a
     * protocol that can half-close must not take it for the peer closing
     * its half. */
    static const tw_protocol_ops half_ops = {
        .connection_made = tt_made,
        .data_received = tt_data,
        .connection_lost = tt_lost,
        .read_connection_lost = count_half_close,
        .handshake_completed = tt_hs,
        .free = tt_free,
    };
    tt_pki *pki = tt_pki_new();
    tw_tls_context *sctx = tt_server_ctx(&pki->server, NULL);
    tw_tls_context *cctx = tt_client_ctx(pki, NULL);
    tt_pair pp;
    tt_pair_init(&pp);
    pp.side[0].f.protocol_ops = &half_ops;
    half_closes = 0;
    tt_listen(r, &pp, sctx);
    tt_connect(r, &pp, cctx, NULL);
    cr_assert(tt_run_until(r, hs_both, pp.side));
    tw_transport_abort_connection(pp.side[1].p->transport);
    tt_pair_finish(r, &pp);
    cr_assert_eq(half_closes, 0);
    cr_assert_eq(pp.side[0].lost_code, TW_ECONNLOST, "%s", pp.side[0].lost_msg);
    tw_tls_context_unref(sctx);
    tw_tls_context_unref(cctx);
    tt_pki_free(pki);
}
