/* Fuzzes a server-side TLS connection (tls.h) over a string transport fed
 * arbitrary bytes, in two chunks split at the first input byte.
 *
 * Invariants, each checked by a trap:
 * - the wrapped protocol's connection is made once and lost once, and it is
 *   released once;
 * - no plaintext is delivered before handshake_completed;
 * - a connection that failed (the transport was closed by TLS) reports a
 *   TLS reason (TW_ETLS / TW_ETLSVERIFY / TW_ENOMEM) or the transport's;
 * - nothing leaks (ASan) and nothing crashes.
 * The certificate is a self-signed one made once per process. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <twine/error.h>
#include <twine/testing.h>
#include <twine/tls.h>

#include "fuzz.h"

static tw_tls_context *ctx;

struct counts {
    int made, hs, lost, freed, data_before_hs;
};
static struct counts n;

static void p_made(tw_protocol *p)
{
    n.made++;
}
static void p_hs(tw_protocol *p)
{
    n.hs++;
}
static void p_data(tw_protocol *p, const char *d, size_t len)
{
    if (!n.hs)
        n.data_before_hs++;
}
static void p_lost(tw_protocol *p, tw_failure *reason)
{
    n.lost++;
}
static void p_free(tw_protocol *p)
{
    n.freed++;
}

static const tw_protocol_ops ops = {.connection_made = p_made,
                                    .handshake_completed = p_hs,
                                    .data_received = p_data,
                                    .connection_lost = p_lost,
                                    .free = p_free};

static void setup(void)
{
    char dir[] = "/tmp/twine-fuzz-tls-XXXXXX";
    CHECK(mkdtemp(dir));
    char cert[64], key[64];
    snprintf(cert, sizeof cert, "%s/c.pem", dir);
    snprintf(key, sizeof key, "%s/k.pem", dir);
    EVP_PKEY *pk = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -86400);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)"fuzz", -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    X509_set_pubkey(x, pk);
    CHECK(X509_sign(x, pk, EVP_sha256()) > 0);
    FILE *f = fopen(cert, "w");
    PEM_write_X509(f, x);
    fclose(f);
    f = fopen(key, "w");
    PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    X509_free(x);
    EVP_PKEY_free(pk);
    static const char *const alpn[] = {"h2", "http/1.1", NULL};
    tw_tls_server_options o = {.cert_file = cert, .key_file = key, .alpn = alpn};
    CHECK(tw_tls_server_context_new(&o, &ctx, NULL) == 0);
    unlink(cert);
    unlink(key);
    rmdir(dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!ctx)
        setup();
    memset(&n, 0, sizeof n);
    tw_factory inner;
    tw_factory_init(&inner, NULL, &ops, 0, NULL);
    tw_tls_factory tf;
    CHECK(tw_tls_factory_init(&tf, ctx, &inner, NULL) == 0);
    tw_protocol *p = tw_factory_build_protocol(&tf.wf.base, NULL);
    CHECK(p);
    tw_string_transport *st;
    CHECK(tw_string_transport_new(&st) == 0);
    CHECK(tw_string_transport_connect(st, p) == 0);
    CHECK(n.made == 1);
    size_t split = size ? data[0] % (size + 1) : 0;
    tw_string_transport_feed(st, data, split);
    tw_string_transport_feed(st, data + split, size - split);
    CHECK(n.data_before_hs == 0);
    CHECK(n.hs <= 1);
    if (st->connected)
        tw_string_transport_lose(st, TW_ECONNDONE);
    CHECK(n.lost == 1 && n.freed == 1);
    tw_string_transport_free(st);
    tw_tls_factory_cleanup(&tf);
    return 0;
}
