/* Helpers for the TLS tests: a throwaway PKI made with OpenSSL in a mkdtemp
 * directory (never committed), recording protocols, and a loopback TCP pair
 * with TLS on both sides. Header-only: each test file is its own executable. */
#ifndef TLS_TEST_H
#define TLS_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "twtest.h"
#include <twine/tls.h>

#define TT_UNUSED __attribute__((unused))

/* ---- The PKI */

typedef struct tt_key {
    EVP_PKEY *key;
    X509 *cert;
    char cert_file[160], key_file[160];
} tt_key;

typedef struct tt_pki {
    char dir[64];
    tt_key ca;        /* the trusted root */
    tt_key server;    /* CN=localhost, SAN localhost + 127.0.0.1, by ca */
    tt_key expired;   /* localhost, by ca, expired */
    tt_key other;     /* CN=other.example, SAN other.example + *.wild.example, by ca */
    tt_key client;    /* CN=client, by ca */
    tt_key rogue_ca;  /* a root nobody trusts */
    tt_key untrusted; /* localhost, by rogue_ca */
    tt_key server2;   /* localhost again, by ca (a renewed certificate, for reload) */
} tt_pki;

static TT_UNUSED void tt_write_key(tt_pki *pki, tt_key *k, const char *name)
{
    snprintf(k->cert_file, sizeof k->cert_file, "%s/%s.pem", pki->dir, name);
    snprintf(k->key_file, sizeof k->key_file, "%s/%s.key", pki->dir, name);
    FILE *f = fopen(k->cert_file, "w");
    cr_assert(f);
    PEM_write_X509(f, k->cert);
    fclose(f);
    f = fopen(k->key_file, "w");
    cr_assert(f);
    PEM_write_PrivateKey(f, k->key, NULL, NULL, 0, NULL, NULL);
    fclose(f);
}

static TT_UNUSED void tt_add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, issuer, x, NULL, NULL, 0);
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    cr_assert(e, "extension %s", value);
    X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
}

/* Makes k: a new P-256 key and a certificate for cn signed by `by` (NULL:
 * self-signed), valid from now + from_s to now + to_s. */
static TT_UNUSED void tt_make(tt_pki *pki, tt_key *k, const char *name, const char *cn,
                              const char *san, bool ca, const tt_key *by, long from_s, long to_s)
{
    static long serial = 1;
    k->key = EVP_EC_gen("P-256");
    cr_assert(k->key);
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++ + (long)getpid() * 100);
    X509_gmtime_adj(X509_getm_notBefore(x), from_s);
    X509_gmtime_adj(X509_getm_notAfter(x), to_s);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "O", MBSTRING_ASC, (const unsigned char *)"Twine Tests", -1, -1,
                               0);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, by ? X509_get_subject_name(by->cert) : n);
    X509_set_pubkey(x, k->key);
    X509 *issuer = by ? by->cert : x;
    if (ca) {
        tt_add_ext(x, issuer, NID_basic_constraints, "critical,CA:TRUE");
        tt_add_ext(x, issuer, NID_key_usage, "critical,keyCertSign,cRLSign");
    } else {
        tt_add_ext(x, issuer, NID_basic_constraints, "CA:FALSE");
    }
    tt_add_ext(x, issuer, NID_subject_key_identifier, "hash");
    if (san)
        tt_add_ext(x, issuer, NID_subject_alt_name, san);
    cr_assert(X509_sign(x, by ? by->key : k->key, EVP_sha256()) > 0);
    k->cert = x;
    tt_write_key(pki, k, name);
}

static TT_UNUSED tt_pki *tt_pki_new(void)
{
    tt_pki *pki = calloc(1, sizeof *pki);
    cr_assert(pki);
    strcpy(pki->dir, "/tmp/twine-tls-XXXXXX");
    cr_assert(mkdtemp(pki->dir));
    const long day = 86400;
    tt_make(pki, &pki->ca, "ca", "Twine Test CA", NULL, true, NULL, -day, 365 * day);
    tt_make(pki, &pki->server, "server", "localhost", "DNS:localhost,IP:127.0.0.1", false, &pki->ca,
            -day, 30 * day);
    tt_make(pki, &pki->expired, "expired", "localhost", "DNS:localhost,IP:127.0.0.1", false,
            &pki->ca, -30 * day, -day);
    tt_make(pki, &pki->other, "other", "other.example", "DNS:other.example,DNS:*.wild.example",
            false, &pki->ca, -day, 30 * day);
    tt_make(pki, &pki->client, "client", "client", NULL, false, &pki->ca, -day, 30 * day);
    tt_make(pki, &pki->rogue_ca, "rogue-ca", "Rogue CA", NULL, true, NULL, -day, 365 * day);
    tt_make(pki, &pki->untrusted, "untrusted", "localhost", "DNS:localhost,IP:127.0.0.1", false,
            &pki->rogue_ca, -day, 30 * day);
    tt_make(pki, &pki->server2, "server2", "localhost", "DNS:localhost,IP:127.0.0.1", false,
            &pki->ca, -day, 60 * day);
    return pki;
}

static TT_UNUSED void tt_key_free(tt_key *k)
{
    EVP_PKEY_free(k->key);
    X509_free(k->cert);
    if (k->cert_file[0])
        unlink(k->cert_file);
    if (k->key_file[0])
        unlink(k->key_file);
}

static TT_UNUSED void tt_pki_free(tt_pki *pki)
{
    tt_key *keys[] = {&pki->ca,     &pki->server,   &pki->expired,   &pki->other,
                      &pki->client, &pki->rogue_ca, &pki->untrusted, &pki->server2};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        tt_key_free(keys[i]);
    rmdir(pki->dir);
    free(pki);
}

static TT_UNUSED tw_tls_context *tt_server_ctx(const tt_key *k, const tw_tls_server_options *base)
{
    tw_tls_server_options o = base ? *base : (tw_tls_server_options){0};
    o.cert_file = k->cert_file;
    o.key_file = k->key_file;
    tw_tls_context *ctx = NULL;
    tw_failure *f = NULL;
    int rc = tw_tls_server_context_new(&o, &ctx, &f);
    cr_assert_eq(rc, 0, "server context: %s", f ? tw_failure_message(f) : "?");
    return ctx;
}

static TT_UNUSED tw_tls_context *tt_client_ctx(const tt_pki *pki, const tw_tls_client_options *base)
{
    tw_tls_client_options o = base ? *base : (tw_tls_client_options){0};
    if (!o.ca_file && !o.insecure_skip_verify)
        o.ca_file = pki->ca.cert_file;
    if (!o.hostname)
        o.hostname = "localhost";
    tw_tls_context *ctx = NULL;
    tw_failure *f = NULL;
    int rc = tw_tls_client_context_new(&o, &ctx, &f);
    cr_assert_eq(rc, 0, "client context: %s", f ? tw_failure_message(f) : "?");
    return ctx;
}

/* ---- Recording protocols */

typedef struct tt_side tt_side;
struct tt_side {
    tw_factory f; /* first: a protocol finds its side through p->factory */
    int built, made, hs, lost, freed, data_before_hs;
    int lost_code;
    char lost_msg[512];
    char got[1 << 16];
    size_t got_len;
    bool echo;
    const char *send_at_made; /* written from connection_made (before the handshake) */
    bool close_at_hs;         /* lose_connection from handshake_completed */
    tw_protocol *p;           /* the live protocol */
    void (*on_hs)(tt_side *s, tw_protocol *p);
    void (*on_data)(tt_side *s, tw_protocol *p, const char *d, size_t n);
    void *user;
};

static TT_UNUSED void tt_made(tw_protocol *p)
{
    tt_side *s = (tt_side *)p->factory;
    s->made++;
    s->p = p;
    if (s->send_at_made)
        cr_assert_eq(tw_transport_write(p->transport, s->send_at_made, strlen(s->send_at_made)), 0);
}

static TT_UNUSED void tt_hs(tw_protocol *p)
{
    tt_side *s = (tt_side *)p->factory;
    s->hs++;
    if (s->on_hs)
        s->on_hs(s, p);
    if (s->close_at_hs)
        tw_transport_lose_connection(p->transport);
}

static TT_UNUSED void tt_data(tw_protocol *p, const char *d, size_t n)
{
    tt_side *s = (tt_side *)p->factory;
    if (tw_tls_is_tls(p->transport) && !s->hs)
        s->data_before_hs++;
    if (s->got_len + n <= sizeof s->got) {
        memcpy(s->got + s->got_len, d, n);
        s->got_len += n;
    }
    if (s->echo)
        tw_transport_write(p->transport, d, n);
    if (s->on_data)
        s->on_data(s, p, d, n);
}

static TT_UNUSED void tt_lost(tw_protocol *p, tw_failure *reason)
{
    tt_side *s = (tt_side *)p->factory;
    s->lost++;
    s->lost_code = tw_failure_code(reason);
    snprintf(s->lost_msg, sizeof s->lost_msg, "%s", tw_failure_message(reason));
    s->p = NULL;
}

static TT_UNUSED void tt_free(tw_protocol *p)
{
    ((tt_side *)p->factory)->freed++;
}

static const tw_protocol_ops tt_ops TT_UNUSED = {
    .connection_made = tt_made,
    .data_received = tt_data,
    .connection_lost = tt_lost,
    .handshake_completed = tt_hs,
    .free = tt_free,
};

static TT_UNUSED void tt_side_init(tt_side *s)
{
    memset(s, 0, sizeof *s);
    tw_factory_init(&s->f, NULL, &tt_ops, sizeof(tw_protocol), NULL);
}

/* ---- Running */

typedef bool (*tt_cond)(void *arg);

/* Iterates r until cond(arg) holds (5 s bound). */
static TT_UNUSED bool tt_run_until(tw_reactor *r, tt_cond cond, void *arg)
{
    uint64_t end = tw_monotonic_ns() + 5000000000ull;
    while (!cond(arg)) {
        if (tw_monotonic_ns() > end)
            return false;
        tw_reactor_iterate(r, 0.01);
    }
    return true;
}

static TT_UNUSED bool tt_both_lost(void *arg)
{
    tt_side *s = arg;
    return s[0].lost && s[1].lost;
}

/* A loopback TCP pair: server TLS factory on 127.0.0.1:0, client connecting. */
typedef struct tt_pair {
    tt_side side[2]; /* [0] the server, [1] the client: tt_both_lost(side) */
    tw_tls_factory sf, cf;
    tw_listening_port *port;
    tw_connector *conn;
    tw_address addr;
} tt_pair;

static TT_UNUSED void tt_pair_init(tt_pair *pp)
{
    memset(pp, 0, sizeof *pp);
    tt_side_init(&pp->side[0]);
    tt_side_init(&pp->side[1]);
}

static TT_UNUSED void tt_listen(tw_reactor *r, tt_pair *pp, tw_tls_context *sctx)
{
    cr_assert_eq(tw_tls_factory_init(&pp->sf, sctx, &pp->side[0].f, NULL), 0);
    tw_address a;
    tw_address_from_ip(&a, "127.0.0.1", 0);
    cr_assert_eq(tw_listen_stream(r, &a, NULL, &pp->sf.wf.base, &pp->port), 0);
    cr_assert_eq(tw_listening_port_get_host(pp->port, &pp->addr), 0);
}

static TT_UNUSED void tt_connect(tw_reactor *r, tt_pair *pp, tw_tls_context *cctx,
                                 const char *hostname)
{
    cr_assert_eq(tw_tls_factory_init(&pp->cf, cctx, &pp->side[1].f, hostname), 0);
    cr_assert_eq(tw_connect_stream(r, &pp->addr, NULL, &pp->cf.wf.base, &pp->conn), 0);
}

/* Waits for both connections to end, then frees everything. */
static TT_UNUSED void tt_pair_finish(tw_reactor *r, tt_pair *pp)
{
    cr_assert(tt_run_until(r, tt_both_lost, pp->side), "both sides lost (server %d, client %d)",
              pp->side[0].lost, pp->side[1].lost);
    tw_reactor_iterate(r, 0);
    tw_connector_free(pp->conn);
    tw_deferred *d = tw_listening_port_stop(pp->port);
    tw_deferred_unref(d);
    tw_tls_factory_cleanup(&pp->sf);
    tw_tls_factory_cleanup(&pp->cf);
}

#endif
