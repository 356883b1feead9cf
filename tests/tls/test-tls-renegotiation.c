/* A peer asking to renegotiate (TLS 1.2; 1.3 has no renegotiation) is
 * refused: the request ends that connection with a TLS failure, and the
 * server goes on serving. The peer is OpenSSL itself, driven by hand in a
 * thread with blocking sockets, since Twine's client never renegotiates. */
#include <arpa/inet.h>
#include <pthread.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "tls-test.h"

struct peer {
    unsigned port;
    int echoed;       /* bytes echoed before the request */
    int reneg_result; /* what the renegotiation handshake returned */
    int read_after;   /* SSL_read after it: <= 0 when the server closed */
};

static void *renegotiating_peer(void *arg)
{
    struct peer *pe = arg;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)pe->port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&sin, sizeof sin) < 0)
        return NULL;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION);
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) == 1 && SSL_write(ssl, "ping", 4) == 4) {
        char buf[16];
        pe->echoed = SSL_read(ssl, buf, sizeof buf);
        pe->reneg_result = SSL_renegotiate(ssl) == 1 ? SSL_do_handshake(ssl) : -1;
        pe->read_after = SSL_read(ssl, buf, sizeof buf);
    }
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    close(fd);
    return NULL;
}

static bool server_lost(void *arg)
{
    return ((tt_side *)arg)->lost > 0;
}

TW_REACTOR_TEST(tls_reneg, renegotiation_request_is_refused)
{
    tt_pki *pki = tt_pki_new();
    tw_tls_server_options so = {.max_version = TW_TLS_1_2};
    tw_tls_context *sctx = tt_server_ctx(&pki->server, &so);
    tt_pair pp;
    tt_pair_init(&pp);
    pp.side[0].echo = true;
    tt_listen(r, &pp, sctx);

    struct peer pe = {.port = tw_address_port(&pp.addr)};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, renegotiating_peer, &pe), 0);
    cr_assert(tt_run_until(r, server_lost, &pp.side[0]), "the server kept the connection");
    for (int i = 0; i < 10; i++)
        tw_reactor_iterate(r, 0.01);
    pthread_join(th, NULL);

    cr_assert_eq(pe.echoed, 4, "the connection worked before the request");
    cr_assert_leq(pe.read_after, 0, "the connection ended after the request");
    /* The server answers the request with a no_renegotiation alert, and
     * OpenSSL's client gives up with a handshake_failure alert: a TLS
     * failure, with OpenSSL's words for it. */
    cr_assert_eq(pp.side[0].lost_code, TW_ETLS, "%s", pp.side[0].lost_msg);
    cr_assert(strstr(pp.side[0].lost_msg, "alert"), "%s", pp.side[0].lost_msg);

    tw_deferred_unref(tw_listening_port_stop(pp.port));
    tw_tls_factory_cleanup(&pp.sf);
    tw_tls_context_unref(sctx);
    tt_pki_free(pki);
}
