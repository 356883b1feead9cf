/* TLS: bad peers, timeouts, startTLS, TLS inside TLS, reload, resumption,
 * context errors and allocation failure. */
#include "tls-test.h"

#include "tls/tls-internal.h"

static bool got_n(void *arg)
{
    tt_side *s = arg;
    return s->got_len >= (size_t)(uintptr_t)s->user;
}

/* A plain TCP client to a TLS server. */
static void plain_client(tw_reactor *r, tt_pair *pp, tw_tls_context *sctx)
{
    tt_listen(r, pp, sctx);
    cr_assert_eq(tw_connect_stream(r, &pp->addr, NULL, &pp->side[1].f, &pp->conn), 0);
}

static void plain_finish(tw_reactor *r, tt_pair *pp)
{
    cr_assert(tt_run_until(r, tt_both_lost, pp->side));
    tw_reactor_iterate(r, 0);
    tw_connector_free(pp->conn);
    tw_deferred_unref(tw_listening_port_stop(pp->port));
    tw_tls_factory_cleanup(&pp->sf);
}

TW_REACTOR_TEST(tls_more, garbage_instead_of_client_hello)
{
    tt_pki *pki = tt_pki_new();
    tw_tls_context *sctx = tt_server_ctx(&pki->server, NULL);
    tt_pair pp;
    tt_pair_init(&pp);
    pp.side[1].send_at_made = "GET / HTTP/1.0\r\n\r\n";
    plain_client(r, &pp, sctx);
    plain_finish(r, &pp);
    cr_assert_eq(pp.side[0].made, 1);
    cr_assert_eq(pp.side[0].hs, 0);
    cr_assert_eq(pp.side[0].got_len, 0);
    cr_assert_eq(pp.side[0].lost_code, TW_ETLS, "%s", pp.side[0].lost_msg);
    tw_tls_context_unref(sctx);
    tt_pki_free(pki);
}

TW_REACTOR_TEST(tls_more, handshake_timeout)
{
    tt_pki *pki = tt_pki_new();
    tw_tls_context *sctx =
        tt_server_ctx(&pki->server, &(tw_tls_server_options){.handshake_timeout = 0.1});
    tt_pair pp;
    tt_pair_init(&pp);
    uint64_t t0 = tw_monotonic_ns();
    plain_client(r, &pp, sctx);
    plain_finish(r, &pp);
    double took = (double)(tw_monotonic_ns() - t0) / 1e9;
    cr_assert(took >= 0.09 && took < 3, "%f", took);
    cr_assert_eq(pp.side[0].lost_code, TW_ETLS, "%s", pp.side[0].lost_msg);
    cr_assert(strstr(pp.side[0].lost_msg, "handshake timed out"), "%s", pp.side[0].lost_msg);
    tw_tls_context_unref(sctx);
    tt_pki_free(pki);
}

/* startTLS: the client writes STARTTLS, the server answers OK in the clear
 * and starts TLS; the client starts TLS on OK and sends a secret. */
struct starttls {
    tw_tls_context *sctx, *cctx;
    int started[2];
};

static void st_server_data(tt_side *s, tw_protocol *p, const char *d, size_t n)
{
    struct starttls *st = s->user;
    if (!st->started[0] && s->got_len == 9 && memcmp(s->got, "STARTTLS\n", 9) == 0) {
        cr_assert_eq(tw_transport_write(p->transport, "OK\n", 3), 0);
        cr_assert_eq(tw_tls_start(p, st->sctx, NULL), 0);
        cr_assert_eq(tw_tls_start(p, st->sctx, NULL), TW_EINVAL); /* TLS already */
        st->started[0] = 1;
        s->got_len = 0;
    } else if (st->started[0]) {
        cr_assert(tw_tls_is_tls(p->transport));
        tw_transport_write(p->transport, d, n);
    }
}

static void st_client_data(tt_side *s, tw_protocol *p, const char *d, size_t n)
{
    struct starttls *st = s->user;
    if (!st->started[1] && s->got_len == 3 && memcmp(s->got, "OK\n", 3) == 0) {
        cr_assert_eq(tw_tls_start(p, st->cctx, "localhost"), 0);
        cr_assert(tw_tls_is_tls(p->transport));
        st->started[1] = 1;
        s->got_len = 0;
        cr_assert_eq(tw_transport_write(p->transport, "secret!", 7), 0);
    }
}

TW_REACTOR_TEST(tls_more, start_tls_both_sides)
{
    tt_pki *pki = tt_pki_new();
    struct starttls st = {.sctx = tt_server_ctx(&pki->server, NULL),
                          .cctx = tt_client_ctx(pki, NULL)};
    tt_pair pp;
    tt_pair_init(&pp);
    pp.side[0].user = pp.side[1].user = &st;
    pp.side[0].on_data = st_server_data;
    pp.side[1].on_data = st_client_data;
    pp.side[1].send_at_made = "STARTTLS\n";
    tw_address a;
    tw_address_from_ip(&a, "127.0.0.1", 0);
    cr_assert_eq(tw_listen_stream(r, &a, NULL, &pp.side[0].f, &pp.port), 0);
    cr_assert_eq(tw_listening_port_get_host(pp.port, &pp.addr), 0);
    cr_assert_eq(tw_connect_stream(r, &pp.addr, NULL, &pp.side[1].f, &pp.conn), 0);
    /* Wait for the echoed secret. */
    uint64_t end = tw_monotonic_ns() + 5000000000ull;
    while (!(st.started[1] && pp.side[1].got_len >= 7) && tw_monotonic_ns() < end)
        tw_reactor_iterate(r, 0.01);
    cr_assert_eq(pp.side[1].got_len, 7);
    cr_assert_eq(memcmp(pp.side[1].got, "secret!", 7), 0);
    cr_assert_eq(pp.side[0].hs, 1);
    cr_assert_eq(pp.side[1].hs, 1);
    tw_transport_lose_connection(pp.side[1].p->transport);
    cr_assert(tt_run_until(r, tt_both_lost, pp.side));
    cr_assert_eq(pp.side[0].lost_code, TW_ECONNDONE, "%s", pp.side[0].lost_msg);
    cr_assert_eq(pp.side[1].lost_code, TW_ECONNDONE, "%s", pp.side[1].lost_msg);
    tw_reactor_iterate(r, 0);
    tw_connector_free(pp.conn);
    tw_deferred_unref(tw_listening_port_stop(pp.port));
    tw_tls_context_unref(st.sctx);
    tw_tls_context_unref(st.cctx);
    tt_pki_free(pki);
}

TW_REACTOR_TEST(tls_more, tls_inside_tls)
{
    tt_pki *pki = tt_pki_new();
    tw_tls_context *sctx = tt_server_ctx(&pki->server, NULL);
    tw_tls_context *sctx2 = tt_server_ctx(&pki->server2, NULL);
    tw_tls_context *cctx = tt_client_ctx(pki, NULL);
    tt_pair pp;
    tt_pair_init(&pp);
    pp.side[0].echo = true;
    pp.side[1].send_at_made = "inner";
    pp.side[1].user = (void *)(uintptr_t)5;
    tw_tls_factory sin, cin;
    cr_assert_eq(tw_tls_factory_init(&sin, sctx2, &pp.side[0].f, NULL), 0);
    cr_assert_eq(tw_tls_factory_init(&cin, cctx, &pp.side[1].f, NULL), 0);
    cr_assert_eq(tw_tls_factory_init(&pp.sf, sctx, &sin.wf.base, NULL), 0);
    tw_address a;
    tw_address_from_ip(&a, "127.0.0.1", 0);
    cr_assert_eq(tw_listen_stream(r, &a, NULL, &pp.sf.wf.base, &pp.port), 0);
    cr_assert_eq(tw_listening_port_get_host(pp.port, &pp.addr), 0);
    cr_assert_eq(tw_tls_factory_init(&pp.cf, cctx, &cin.wf.base, NULL), 0);
    cr_assert_eq(tw_connect_stream(r, &pp.addr, NULL, &pp.cf.wf.base, &pp.conn), 0);
    cr_assert(tt_run_until(r, got_n, &pp.side[1]));
    cr_assert_eq(memcmp(pp.side[1].got, "inner", 5), 0);
    /* The inner connection's peer is server2. */
    tw_tls_peer_certificate c;
    cr_assert_eq(tw_tls_get_peer_certificate(pp.side[1].p->transport, &c), 0);
    unsigned char md[32];
    unsigned int mdlen;
    X509_digest(pki->server2.cert, EVP_sha256(), md, &mdlen);
    cr_assert_eq(memcmp(md, c.sha256, 32), 0);
    tw_transport_lose_connection(pp.side[1].p->transport);
    tt_pair_finish(r, &pp);
    cr_assert_eq(pp.side[1].lost_code, TW_ECONNDONE, "%s", pp.side[1].lost_msg);
    tw_tls_factory_cleanup(&sin);
    tw_tls_factory_cleanup(&cin);
    tw_tls_context_unref(sctx);
    tw_tls_context_unref(sctx2);
    tw_tls_context_unref(cctx);
    tt_pki_free(pki);
}

/* One connection that exchanges a few bytes and closes; returns what the
 * client saw. */
static void one_connection(tw_reactor *r, tw_tls_context *sctx, tw_tls_context *cctx,
                           uint8_t fp[32], bool *reused)
{
    tt_pair pp;
    tt_pair_init(&pp);
    pp.side[0].echo = true;
    pp.side[1].send_at_made = "ping";
    pp.side[1].user = (void *)(uintptr_t)4;
    tt_listen(r, &pp, sctx);
    tt_connect(r, &pp, cctx, NULL);
    cr_assert(tt_run_until(r, got_n, &pp.side[1]));
    tw_tls_peer_certificate c;
    cr_assert_eq(tw_tls_get_peer_certificate(pp.side[1].p->transport, &c), 0);
    memcpy(fp, c.sha256, 32);
    *reused = tw__tls_session_reused(pp.side[1].p->transport);
    tw_transport_lose_connection(pp.side[1].p->transport);
    tt_pair_finish(r, &pp);
}

TW_REACTOR_TEST(tls_more, reload_and_resumption)
{
    tt_pki *pki = tt_pki_new();
    /* The served files: a copy the test overwrites, as a renewal would. */
    char cert[200], key[200];
    snprintf(cert, sizeof cert, "%s/live.pem", pki->dir);
    snprintf(key, sizeof key, "%s/live.key", pki->dir);
    tt_key live = {.key = pki->server.key, .cert = pki->server.cert};
    tt_write_key(pki, &live, "live");
    tw_tls_context *sctx = tt_server_ctx(&live, NULL);
    tw_tls_context *cctx = tt_client_ctx(pki, NULL);
    uint8_t fp[32], want[32];
    unsigned int n;
    bool reused;
    one_connection(r, sctx, cctx, fp, &reused);
    X509_digest(pki->server.cert, EVP_sha256(), want, &n);
    cr_assert_eq(memcmp(fp, want, 32), 0);
    cr_assert(!reused);
    /* The same client context resumes. */
    one_connection(r, sctx, cctx, fp, &reused);
    cr_assert(reused);
    /* A bad file: reload refuses and nothing changes. */
    FILE *f = fopen(cert, "w");
    fputs("not a certificate\n", f);
    fclose(f);
    tw_failure *fail = NULL;
    cr_assert_eq(tw_tls_context_reload(sctx, &fail), TW_EINVAL);
    cr_assert(strstr(tw_failure_message(fail), "live.pem"), "%s", tw_failure_message(fail));
    tw_failure_unref(fail);
    /* Renewed: new connections get the new certificate. */
    tt_key renewed = {.key = pki->server2.key, .cert = pki->server2.cert};
    tt_write_key(pki, &renewed, "live");
    cr_assert_eq(tw_tls_context_reload(sctx, &fail), 0);
    tw_tls_context *cctx2 = tt_client_ctx(pki, NULL);
    one_connection(r, sctx, cctx2, fp, &reused);
    X509_digest(pki->server2.cert, EVP_sha256(), want, &n);
    cr_assert_eq(memcmp(fp, want, 32), 0);
    unlink(cert);
    unlink(key);
    tw_tls_context_unref(sctx);
    tw_tls_context_unref(cctx);
    tw_tls_context_unref(cctx2);
    tt_pki_free(pki);
}

TW_TEST(tls_more, context_errors)
{
    tt_pki *pki = tt_pki_new();
    tw_tls_context *ctx = NULL;
    tw_failure *f = NULL;
    tw_tls_server_options o = {.cert_file = "/nonexistent/x.pem", .key_file = pki->server.key_file};
    cr_assert_eq(tw_tls_server_context_new(&o, &ctx, &f), TW_EINVAL);
    cr_assert(strstr(tw_failure_message(f), "cannot read certificate '/nonexistent/x.pem'"), "%s",
              tw_failure_message(f));
    tw_failure_unref(f);
    o = (tw_tls_server_options){.cert_file = pki->server.cert_file,
                                .key_file = pki->other.key_file};
    cr_assert_eq(tw_tls_server_context_new(&o, &ctx, &f), TW_EINVAL);
    cr_assert(strstr(tw_failure_message(f), "does not match"), "%s", tw_failure_message(f));
    tw_failure_unref(f);
    static const char *const bad_alpn[] = {"h2", "", NULL};
    o = (tw_tls_server_options){
        .cert_file = pki->server.cert_file, .key_file = pki->server.key_file, .alpn = bad_alpn};
    cr_assert_eq(tw_tls_server_context_new(&o, &ctx, &f), TW_EINVAL);
    tw_failure_unref(f);
    o.alpn = NULL;
    o.min_version = TW_TLS_1_3;
    o.max_version = TW_TLS_1_2;
    cr_assert_eq(tw_tls_server_context_new(&o, &ctx, &f), TW_EINVAL);
    tw_failure_unref(f);
    cr_assert_eq(tw_tls_server_context_new(NULL, &ctx, NULL), TW_EINVAL);
    tw_tls_client_options co = {.ca_file = "/nonexistent/ca.pem"};
    cr_assert_eq(tw_tls_client_context_new(&co, &ctx, &f), TW_EINVAL);
    cr_assert(strstr(tw_failure_message(f), "/nonexistent/ca.pem"), "%s", tw_failure_message(f));
    tw_failure_unref(f);
    /* insecure_skip_verify is logged loudly. */
    tw_testing_log_capture_start();
    co = (tw_tls_client_options){.insecure_skip_verify = true};
    cr_assert_eq(tw_tls_client_context_new(&co, &ctx, NULL), 0);
    cr_assert_eq(tw_testing_log_count("insecure_skip_verify"), 1);
    tw_testing_log_capture_stop();
    tw_tls_context_unref(ctx);
    /* A factory with a hostname needs a client context. */
    tw_tls_context *sctx = tt_server_ctx(&pki->server, NULL);
    tw_factory inner;
    tw_factory_init(&inner, NULL, NULL, 0, NULL);
    tw_tls_factory tf;
    cr_assert_eq(tw_tls_factory_init(&tf, sctx, &inner, "x"), TW_EINVAL);
    tw_tls_context_unref(sctx);
    tt_pki_free(pki);
}

TW_TEST(tls_more, context_allocation_failure)
{
    tt_pki *pki = tt_pki_new();
    static const char *const alpn[] = {"h2", "http/1.1", NULL};
    for (long n = 0;; n++) {
        tw_tls_context *ctx = NULL;
        tw_failure *f = NULL;
        tw_testing_fail_alloc_after(n);
        int rc = tw_tls_server_context_new(
            &(tw_tls_server_options){
                .cert_file = pki->server.cert_file, .key_file = pki->server.key_file, .alpn = alpn},
            &ctx, &f);
        int rc2 = rc == 0 ? tw_tls_context_add_sni(ctx, "other.example", pki->other.cert_file,
                                                   pki->other.key_file, &f)
                          : rc;
        tw_testing_fail_alloc_off();
        tw_tls_context_unref(ctx);
        if (rc2 == 0) {
            cr_assert(n > 2);
            break;
        }
        cr_assert_eq(rc2, TW_ENOMEM, "n=%ld: %d", n, rc2);
        tw_failure_unref(f);
        cr_assert(n < 1000);
    }
    tt_pki_free(pki);
}

/* ---- Flow control through TLS: a client that stops reading pauses the
 * server's producer; reading again resumes it, and everything arrives. */

#define FLOW_CHUNK 16384
#define FLOW_TOTAL (8u << 20)

struct flow {
    tw_producer producer;
    tw_protocol *p;
    size_t left;
    bool paused;
    int pauses, resumes;
    size_t max_buffered;
};

static struct flow flow;

static void flow_produce(void)
{
    static char chunk[FLOW_CHUNK];
    while (!flow.paused && flow.left > 0 && flow.p) {
        size_t n = flow.left < FLOW_CHUNK ? flow.left : FLOW_CHUNK;
        cr_assert_eq(tw_transport_write(flow.p->transport, chunk, n), 0);
        flow.left -= n;
        size_t b = tw_transport_write_buffer_size(flow.p->transport);
        if (b > flow.max_buffered)
            flow.max_buffered = b;
    }
    if (flow.left == 0 && flow.p)
        tw_transport_unregister_producer(flow.p->transport);
}

static void flow_pause(tw_producer *p)
{
    (void)p;
    flow.paused = true;
    flow.pauses++;
}

static void flow_resume(tw_producer *p)
{
    (void)p;
    flow.paused = false;
    flow.resumes++;
    flow_produce();
}

static const tw_producer_ops flow_ops = {.pause_producing = flow_pause,
                                         .resume_producing = flow_resume};

static void flow_server_hs(tt_side *s, tw_protocol *p)
{
    (void)s;
    flow.p = p;
    flow.producer.ops = &flow_ops;
    cr_assert_eq(tw_transport_register_producer(p->transport, &flow.producer, true), 0);
    flow_produce();
}

static void flow_client_hs(tt_side *s, tw_protocol *p)
{
    (void)s;
    tw_transport_pause_producing(p->transport); /* a reader that stops */
}

static bool flow_paused(void *arg)
{
    (void)arg;
    return flow.pauses > 0;
}

static size_t flow_received;

static void flow_count(tt_side *s, tw_protocol *p, const char *d, size_t n)
{
    (void)s, (void)p, (void)d;
    flow_received += n;
}

static bool flow_all_in(void *arg)
{
    (void)arg;
    return flow_received == FLOW_TOTAL;
}

TW_REACTOR_TEST(tls_more, slow_reader_pauses_the_producer)
{
    tt_pki *pki = tt_pki_new();
    tw_tls_context *sctx = tt_server_ctx(&pki->server, NULL);
    tw_tls_context *cctx = tt_client_ctx(pki, NULL);
    tt_pair pp;
    tt_pair_init(&pp);
    memset(&flow, 0, sizeof flow);
    flow.left = FLOW_TOTAL;
    pp.side[0].on_hs = flow_server_hs;
    pp.side[1].on_hs = flow_client_hs;
    pp.side[1].on_data = flow_count;
    flow_received = 0;
    tt_listen(r, &pp, sctx);
    tt_connect(r, &pp, cctx, NULL);
    cr_assert(tt_run_until(r, flow_paused, NULL), "the producer was never paused");
    for (int i = 0; i < 20; i++)
        tw_reactor_iterate(r, 0.01);
    cr_assert(flow.paused);
    cr_assert_gt(flow.left, 0, "the stalled reader did not hold the writer back");
    cr_assert_leq(flow.max_buffered, TW_TRANSPORT_HIGH_WATER + 2 * FLOW_CHUNK, "buffered %zu bytes",
                  flow.max_buffered);
    /* Read again: the producer resumes and every byte arrives. */
    tw_transport_resume_producing(pp.side[1].p->transport);
    cr_assert(tt_run_until(r, flow_all_in, NULL), "received %zu of %u", flow_received, FLOW_TOTAL);
    cr_assert_gt(flow.resumes, 0);
    tw_transport_lose_connection(pp.side[0].p->transport);
    tt_pair_finish(r, &pp);
    tw_tls_context_unref(sctx);
    tw_tls_context_unref(cctx);
    tt_pki_free(pki);
}

/* Buffers: a busy connection keeps OpenSSL's buffers between records; once
 * a window passes without much traffic it goes back to releasing them, and
 * it still works afterwards. */
struct ping {
    int sent, target;
};

static void ping_data(tt_side *s, tw_protocol *p, const char *d, size_t n)
{
    (void)d, (void)n;
    struct ping *pg = s->user;
    if (s->got_len == (size_t)pg->sent * 4 && pg->sent < pg->target) {
        cr_assert_eq(tw_transport_write(p->transport, "ping", 4), 0);
        pg->sent++;
    }
}

static bool pings_done(void *arg)
{
    tt_side *s = arg;
    struct ping *pg = s->user;
    return s->got_len == (size_t)pg->target * 4;
}

static bool releases_again(void *arg)
{
    tt_side *s = arg;
    return s->p && !tw__tls_keeps_buffers(s->p->transport);
}

TW_REACTOR_TEST(tls_more, busy_connection_keeps_buffers_until_quiet)
{
    tt_pki *pki = tt_pki_new();
    tw_tls_context *sctx = tt_server_ctx(&pki->server, NULL);
    tw_tls_context *cctx = tt_client_ctx(pki, NULL);
    tt_pair pp;
    tt_pair_init(&pp);
    pp.side[0].echo = true;
    struct ping pg = {.sent = 1, .target = 3};
    pp.side[1].user = &pg;
    pp.side[1].on_data = ping_data;
    pp.side[1].send_at_made = "ping";
    tt_listen(r, &pp, sctx);
    tt_connect(r, &pp, cctx, "localhost");

    /* A few records: not busy. */
    cr_assert(tt_run_until(r, pings_done, &pp.side[1]));
    cr_assert_not(tw__tls_keeps_buffers(pp.side[0].p->transport));
    cr_assert_not(tw__tls_keeps_buffers(pp.side[1].p->transport));

    /* Many: both ends keep their buffers. */
    pg.target = 40;
    cr_assert_eq(tw_transport_write(pp.side[1].p->transport, "ping", 4), 0);
    pg.sent++;
    cr_assert(tt_run_until(r, pings_done, &pp.side[1]));
    cr_assert(tw__tls_keeps_buffers(pp.side[0].p->transport));
    cr_assert(tw__tls_keeps_buffers(pp.side[1].p->transport));

    /* Quiet: released again (within two windows), and still working. */
    cr_assert(tt_run_until(r, releases_again, &pp.side[0]));
    cr_assert(tt_run_until(r, releases_again, &pp.side[1]));
    pg.target = 42;
    cr_assert_eq(tw_transport_write(pp.side[1].p->transport, "ping", 4), 0);
    pg.sent++;
    cr_assert(tt_run_until(r, pings_done, &pp.side[1]));
    cr_assert_eq(memcmp(pp.side[1].got + 41 * 4, "ping", 4), 0);

    tw_transport_lose_connection(pp.side[1].p->transport);
    tt_pair_finish(r, &pp);
    cr_assert_eq(pp.side[0].lost_code, TW_ECONNDONE, "%s", pp.side[0].lost_msg);
    tw_tls_context_unref(sctx);
    tw_tls_context_unref(cctx);
    tt_pki_free(pki);
}
