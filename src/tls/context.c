/* TLS contexts: see tls.h. */
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <twine/alloc.h>
#include <twine/error.h>
#include <twine/log.h>

#include "tls/tls-internal.h"

#define LOG_NS "twine.tls"

typedef struct sni_entry {
    char *name, *cert_file, *key_file;
} sni_entry;

struct tw__tls_gen {
    atomic_uint refs;
    SSL_CTX *main;
    size_t nsni;
    SSL_CTX **sni; /* parallel to the context's sni entries */
    const struct tw_tls_context *ctx;
};

struct tw_tls_context {
    atomic_uint refs;
    bool server;
    atomic_bool used; /* a connection was made from it: no more add_sni */
    pthread_mutex_t lock;
    tw__tls_gen *gen; /* current generation, under lock */
    /* Copies of the options (reload re-reads the same files). */
    char *cert_file, *key_file, *extra_chain_file, *client_ca_file;
    char *hostname, *ca_file, *ca_dir;
    unsigned char *alpn; /* wire format: length-prefixed names */
    size_t alpn_len;
    int min_version, max_version;
    bool require_client_cert, no_session_tickets, insecure;
    double handshake_timeout;
    sni_entry *sni;
    size_t nsni;
    /* Client-side session cache: the last session a server gave, for
     * hostname `session_host` (resumption on the next connection). */
    SSL_SESSION *session;
    char *session_host;
};

static int ex_index_ctx = -1; /* SSL_CTX ex_data: its tw_tls_context */
static pthread_once_t ex_once = PTHREAD_ONCE_INIT;

static void ex_init(void)
{
    ex_index_ctx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

void tw__tls_error_text(char *buf, size_t size, const char *prefix)
{
    char reason[256] = "";
    unsigned long e, last = 0;
    while ((e = ERR_get_error()) != 0)
        last = e; /* the first error is usually the root cause, but the last names the call */
    if (last) {
        const char *r = ERR_reason_error_string(last);
        if (r)
            snprintf(reason, sizeof reason, "%s", r);
        else
            ERR_error_string_n(last, reason, sizeof reason);
    } else {
        snprintf(reason, sizeof reason, "unknown error");
    }
    snprintf(buf, size, "%s: %s", prefix, reason);
}

/* A TW_EINVAL failure naming what failed, with OpenSSL's reason. */
static int fail(tw_failure **failure, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(tw_failure **failure, const char *fmt, ...)
{
    char prefix[512], text[800];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    tw__tls_error_text(text, sizeof text, prefix);
    if (failure)
        *failure = tw_failure_new(TW_EINVAL, NULL, "%s", text);
    return TW_EINVAL;
}

static int fail_plain(tw_failure **failure, int code, const char *msg)
{
    ERR_clear_error();
    if (failure)
        *failure = tw_failure_new(code, NULL, "%s", msg);
    return code;
}

static char *dup_opt(const char *s, bool *oom)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = tw_malloc(n);
    if (!d)
        *oom = true;
    else
        memcpy(d, s, n);
    return d;
}

/* ---- Generations */

static void gen_free(tw__tls_gen *g)
{
    if (!g)
        return;
    SSL_CTX_free(g->main);
    for (size_t i = 0; i < g->nsni; i++)
        SSL_CTX_free(g->sni[i]);
    tw_free(g->sni);
    tw_free(g);
}

void tw__tls_gen_unref(tw__tls_gen *g)
{
    if (g && atomic_fetch_sub(&g->refs, 1) == 1)
        gen_free(g);
}

static tw__tls_gen *gen_ref(tw__tls_gen *g)
{
    atomic_fetch_add(&g->refs, 1);
    return g;
}

static bool name_matches(const char *pattern, const char *name)
{
    if (strcasecmp(pattern, name) == 0)
        return true;
    if (pattern[0] == '*' && pattern[1] == '.') {
        const char *dot = strchr(name, '.');
        /* One label: "*.example.com" takes "a.example.com", not "example.com". */
        return dot && dot != name && strcasecmp(dot + 1, pattern + 2) == 0;
    }
    return false;
}

static int servername_cb(SSL *s, int *alert, void *arg)
{
    tw__tls_gen *g = arg;
    const char *name = SSL_get_servername(s, TLSEXT_NAMETYPE_host_name);
    if (!name || !g->nsni)
        return SSL_TLSEXT_ERR_OK;
    const tw_tls_context *ctx = g->ctx;
    for (size_t i = 0; i < g->nsni && i < ctx->nsni; i++) {
        if (name_matches(ctx->sni[i].name, name)) {
            SSL_set_SSL_CTX(s, g->sni[i]);
            break;
        }
    }
    return SSL_TLSEXT_ERR_OK;
}

static int alpn_select_cb(SSL *s, const unsigned char **out, unsigned char *outlen,
                          const unsigned char *in, unsigned int inlen, void *arg)
{
    const tw_tls_context *ctx = arg;
    /* Our order of preference first, then the client's. */
    for (size_t i = 0; i < ctx->alpn_len; i += 1 + ctx->alpn[i]) {
        const unsigned char *ours = ctx->alpn + i;
        for (unsigned j = 0; j < inlen; j += 1 + in[j]) {
            if (j + 1 + in[j] > inlen)
                break;
            if (in[j] == ours[0] && memcmp(in + j + 1, ours + 1, ours[0]) == 0) {
                *out = ours + 1;
                *outlen = ours[0];
                return SSL_TLSEXT_ERR_OK;
            }
        }
    }
    return SSL_TLSEXT_ERR_NOACK;
}

static int new_session_cb(SSL *s, SSL_SESSION *sess)
{
    SSL_CTX *sc = SSL_get_SSL_CTX(s);
    tw_tls_context *ctx = SSL_CTX_get_ex_data(sc, ex_index_ctx);
    if (!ctx)
        return 0;
    /* The name verified (set1_host), else the SNI sent: the key the next
     * connection looks the session up by. */
    const char *host = X509_VERIFY_PARAM_get0_host(SSL_get0_param(s), 0);
    if (!host)
        host = SSL_get_servername(s, TLSEXT_NAMETYPE_host_name);
    bool oom = false;
    char *h = dup_opt(host ? host : "", &oom);
    if (oom)
        return 0;
    pthread_mutex_lock(&ctx->lock);
    SSL_SESSION_free(ctx->session);
    tw_free(ctx->session_host);
    ctx->session = sess;
    ctx->session_host = h;
    pthread_mutex_unlock(&ctx->lock);
    return 1; /* we keep the reference */
}

static int set_versions(SSL_CTX *sc, const tw_tls_context *ctx, tw_failure **failure)
{
    int min = ctx->min_version ? ctx->min_version : TLS1_2_VERSION;
    if (!SSL_CTX_set_min_proto_version(sc, min))
        return fail(failure, "cannot set the minimum TLS version 0x%x", (unsigned)min);
    if (!SSL_CTX_set_max_proto_version(sc, ctx->max_version))
        return fail(failure, "cannot set the maximum TLS version 0x%x", (unsigned)ctx->max_version);
    return 0;
}

static int load_cert_key(SSL_CTX *sc, const char *cert, const char *key, tw_failure **failure)
{
    if (SSL_CTX_use_certificate_chain_file(sc, cert) != 1)
        return fail(failure, "cannot read certificate '%s'", cert);
    if (SSL_CTX_use_PrivateKey_file(sc, key, SSL_FILETYPE_PEM) != 1) {
        unsigned long e = ERR_peek_last_error();
        if (ERR_GET_LIB(e) == ERR_LIB_X509 && ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH)
            return fail(failure, "private key '%s' does not match certificate '%s'", key, cert);
        return fail(failure, "cannot read private key '%s'", key);
    }
    if (SSL_CTX_check_private_key(sc) != 1)
        return fail(failure, "private key '%s' does not match certificate '%s'", key, cert);
    return 0;
}

static int load_extra_chain(SSL_CTX *sc, const char *file, tw_failure **failure)
{
    BIO *b = BIO_new_file(file, "r");
    if (!b)
        return fail(failure, "cannot read certificate chain '%s'", file);
    int n = 0;
    X509 *x;
    while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
        if (!SSL_CTX_add0_chain_cert(sc, x)) {
            X509_free(x);
            BIO_free(b);
            return fail(failure, "cannot use certificate chain '%s'", file);
        }
        n++;
    }
    BIO_free(b);
    unsigned long e = ERR_peek_last_error();
    if (n == 0 ||
        (e && !(ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE)))
        return fail(failure, "cannot read certificate chain '%s'", file);
    ERR_clear_error();
    return 0;
}

/* The settings every SSL_CTX of this context shares. */
static SSL_CTX *ctx_base(tw_tls_context *ctx, tw_failure **failure, int *rc)
{
    SSL_CTX *sc = SSL_CTX_new(TLS_method());
    if (!sc) {
        *rc = fail(failure, "cannot make an SSL_CTX");
        return NULL;
    }
    SSL_CTX_set_ex_data(sc, ex_index_ctx, ctx);
    SSL_CTX_set_options(sc, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                (ctx->no_session_tickets ? SSL_OP_NO_TICKET : 0));
    SSL_CTX_set_mode(sc, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                             SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if ((*rc = set_versions(sc, ctx, failure)) < 0) {
        SSL_CTX_free(sc);
        return NULL;
    }
    return sc;
}

static int hex_digit(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* OpenSSL hands every secret it derives to the keylog callback as an NSS
 * key log line ("LABEL <client random> <secret>", hex): the application
 * traffic secrets go to the connection, which may run the TLS 1.3 record
 * layer itself once the handshake is done (tls.c). Nothing is written
 * anywhere. */
static void keylog_cb(const SSL *s, const char *line)
{
    static const char client[] = "CLIENT_TRAFFIC_SECRET_0 ", server[] = "SERVER_TRAFFIC_SECRET_0 ";
    bool is_client = strncmp(line, client, sizeof client - 1) == 0;
    if (!is_client && strncmp(line, server, sizeof server - 1) != 0)
        return;
    const char *p = strchr(line + sizeof client - 1, ' ');
    if (!p)
        return;
    p++;
    uint8_t secret[64];
    size_t n = 0;
    while (n < sizeof secret && p[0] && p[1]) {
        int hi = hex_digit(p[0]), lo = hex_digit(p[1]);
        if (hi < 0 || lo < 0)
            break;
        secret[n++] = (uint8_t)(hi << 4 | lo);
        p += 2;
    }
    if (*p == '\0' && n > 0)
        tw__tls_conn_secret(s, is_client, secret, n);
    OPENSSL_cleanse(secret, sizeof secret);
}

static SSL_CTX *server_ctx(tw_tls_context *ctx, const char *cert, const char *key,
                           tw_failure **failure, int *rc)
{
    SSL_CTX *sc = ctx_base(ctx, failure, rc);
    if (!sc)
        return NULL;
    static const unsigned char sid_ctx[] = "twine";
    SSL_CTX_set_session_id_context(sc, sid_ctx, sizeof sid_ctx - 1);
    /* Every SSL_CTX of a server (SNI ones too: the callback is the current
     * SSL_CTX's) hands the traffic secrets over. No user-facing key log
     * exists to chain to. */
    SSL_CTX_set_keylog_callback(sc, keylog_cb);
    if ((*rc = load_cert_key(sc, cert, key, failure)) < 0)
        goto err;
    if (ctx->extra_chain_file && (*rc = load_extra_chain(sc, ctx->extra_chain_file, failure)) < 0)
        goto err;
    if (ctx->alpn)
        SSL_CTX_set_alpn_select_cb(sc, alpn_select_cb, ctx);
    if (ctx->client_ca_file) {
        if (SSL_CTX_load_verify_locations(sc, ctx->client_ca_file, NULL) != 1) {
            *rc = fail(failure, "cannot read client CA file '%s'", ctx->client_ca_file);
            goto err;
        }
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ctx->client_ca_file);
        if (names)
            SSL_CTX_set_client_CA_list(sc, names);
        SSL_CTX_set_verify(
            sc, SSL_VERIFY_PEER | (ctx->require_client_cert ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
            NULL);
    }
    return sc;
err:
    SSL_CTX_free(sc);
    return NULL;
}

static SSL_CTX *client_ctx(tw_tls_context *ctx, tw_failure **failure, int *rc)
{
    SSL_CTX *sc = ctx_base(ctx, failure, rc);
    if (!sc)
        return NULL;
    if (ctx->cert_file && (*rc = load_cert_key(sc, ctx->cert_file, ctx->key_file, failure)) < 0)
        goto err;
    if (ctx->ca_file || ctx->ca_dir) {
        if (SSL_CTX_load_verify_locations(sc, ctx->ca_file, ctx->ca_dir) != 1) {
            *rc = fail(failure, "cannot read trust roots '%s'",
                       ctx->ca_file ? ctx->ca_file : ctx->ca_dir);
            goto err;
        }
    } else if (!ctx->insecure && SSL_CTX_set_default_verify_paths(sc) != 1) {
        *rc = fail(failure, "cannot load the system's trust store");
        goto err;
    }
    SSL_CTX_set_verify(sc, ctx->insecure ? SSL_VERIFY_NONE : SSL_VERIFY_PEER, NULL);
    if (ctx->alpn && SSL_CTX_set_alpn_protos(sc, ctx->alpn, (unsigned)ctx->alpn_len) != 0) {
        *rc = fail(failure, "cannot set the ALPN list");
        goto err;
    }
    SSL_CTX_set_session_cache_mode(sc, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(sc, new_session_cb);
    return sc;
err:
    SSL_CTX_free(sc);
    return NULL;
}

/* Builds a whole generation from the context's files. */
static int gen_build(tw_tls_context *ctx, tw__tls_gen **out, tw_failure **failure)
{
    tw__tls_gen *g = tw_calloc(1, sizeof *g);
    if (!g)
        return fail_plain(failure, TW_ENOMEM, "out of memory");
    atomic_init(&g->refs, 1);
    g->ctx = ctx;
    int rc = 0;
    if (ctx->nsni) {
        g->sni = tw_calloc(ctx->nsni, sizeof *g->sni);
        if (!g->sni) {
            tw_free(g);
            return fail_plain(failure, TW_ENOMEM, "out of memory");
        }
    }
    g->main = ctx->server ? server_ctx(ctx, ctx->cert_file, ctx->key_file, failure, &rc)
                          : client_ctx(ctx, failure, &rc);
    if (!g->main)
        goto err;
    for (size_t i = 0; i < ctx->nsni; i++) {
        g->sni[i] = server_ctx(ctx, ctx->sni[i].cert_file, ctx->sni[i].key_file, failure, &rc);
        if (!g->sni[i])
            goto err;
        g->nsni = i + 1;
    }
    if (ctx->server) {
        SSL_CTX_set_tlsext_servername_callback(g->main, servername_cb);
        SSL_CTX_set_tlsext_servername_arg(g->main, g);
    }
    *out = g;
    return 0;
err:
    gen_free(g);
    return rc < 0 ? rc : TW_EINVAL;
}

/* ---- Making contexts */

static void ctx_free(tw_tls_context *ctx)
{
    tw__tls_gen_unref(ctx->gen);
    tw_free(ctx->cert_file);
    tw_free(ctx->key_file);
    tw_free(ctx->extra_chain_file);
    tw_free(ctx->client_ca_file);
    tw_free(ctx->hostname);
    tw_free(ctx->ca_file);
    tw_free(ctx->ca_dir);
    tw_free(ctx->alpn);
    for (size_t i = 0; i < ctx->nsni; i++) {
        tw_free(ctx->sni[i].name);
        tw_free(ctx->sni[i].cert_file);
        tw_free(ctx->sni[i].key_file);
    }
    tw_free(ctx->sni);
    SSL_SESSION_free(ctx->session);
    tw_free(ctx->session_host);
    pthread_mutex_destroy(&ctx->lock);
    tw_free(ctx);
}

static int check_version(tw_tls_version v)
{
    return v == TW_TLS_DEFAULT || v == TW_TLS_1_0 || v == TW_TLS_1_1 || v == TW_TLS_1_2 ||
           v == TW_TLS_1_3;
}

static int ctx_alloc(tw_tls_context **out, tw_failure **failure)
{
    pthread_once(&ex_once, ex_init);
    tw_tls_context *ctx = tw_calloc(1, sizeof *ctx);
    if (!ctx)
        return fail_plain(failure, TW_ENOMEM, "out of memory");
    atomic_init(&ctx->refs, 1);
    atomic_init(&ctx->used, false);
    pthread_mutex_init(&ctx->lock, NULL);
    *out = ctx;
    return 0;
}

static int set_common(tw_tls_context *ctx, tw_tls_strings alpn, tw_tls_version min,
                      tw_tls_version max, double timeout, tw_failure **failure)
{
    if (!check_version(min) || !check_version(max) || (min && max && max < min))
        return fail_plain(failure, TW_EINVAL, "bad TLS version range");
    if (!(timeout >= 0))
        return fail_plain(failure, TW_EINVAL, "bad handshake timeout");
    ctx->min_version = min;
    ctx->max_version = max;
    ctx->handshake_timeout = timeout > 0 ? timeout : 30.0;
    if (alpn) {
        size_t total = 0;
        for (size_t i = 0; alpn[i]; i++) {
            size_t n = strlen(alpn[i]);
            if (n == 0 || n > 255)
                return fail_plain(failure, TW_EINVAL, "empty or too long ALPN protocol name");
            total += 1 + n;
        }
        if (total) {
            ctx->alpn = tw_malloc(total);
            if (!ctx->alpn)
                return fail_plain(failure, TW_ENOMEM, "out of memory");
            size_t at = 0;
            for (size_t i = 0; alpn[i]; i++) {
                size_t n = strlen(alpn[i]);
                ctx->alpn[at] = (unsigned char)n;
                memcpy(ctx->alpn + at + 1, alpn[i], n);
                at += 1 + n;
            }
            ctx->alpn_len = total;
        }
    }
    return 0;
}

int tw_tls_server_context_new(const tw_tls_server_options *opts, tw_tls_context **out,
                              tw_failure **failure)
{
    if (failure)
        *failure = NULL;
    if (!opts || !out)
        return fail_plain(failure, TW_EINVAL, "no options");
    if (!opts->cert_file || !opts->key_file)
        return fail_plain(failure, TW_EINVAL, "a server context needs cert_file and key_file");
    tw_tls_context *ctx;
    int rc = ctx_alloc(&ctx, failure);
    if (rc < 0)
        return rc;
    ctx->server = true;
    bool oom = false;
    ctx->cert_file = dup_opt(opts->cert_file, &oom);
    ctx->key_file = dup_opt(opts->key_file, &oom);
    ctx->extra_chain_file = dup_opt(opts->extra_chain_file, &oom);
    ctx->client_ca_file = dup_opt(opts->client_ca_file, &oom);
    ctx->require_client_cert = opts->require_client_cert;
    ctx->no_session_tickets = opts->no_session_tickets;
    if (oom) {
        rc = fail_plain(failure, TW_ENOMEM, "out of memory");
        goto err;
    }
    if (opts->require_client_cert && !opts->client_ca_file) {
        rc = fail_plain(failure, TW_EINVAL, "require_client_cert needs client_ca_file");
        goto err;
    }
    rc = set_common(ctx, opts->alpn, opts->min_version, opts->max_version, opts->handshake_timeout,
                    failure);
    if (rc < 0)
        goto err;
    rc = gen_build(ctx, &ctx->gen, failure);
    if (rc < 0)
        goto err;
    *out = ctx;
    return 0;
err:
    ctx_free(ctx);
    return rc;
}

int tw_tls_client_context_new(const tw_tls_client_options *opts, tw_tls_context **out,
                              tw_failure **failure)
{
    if (failure)
        *failure = NULL;
    if (!opts || !out)
        return fail_plain(failure, TW_EINVAL, "no options");
    if (!opts->cert_file != !opts->key_file)
        return fail_plain(failure, TW_EINVAL, "a client certificate needs cert_file and key_file");
    tw_tls_context *ctx;
    int rc = ctx_alloc(&ctx, failure);
    if (rc < 0)
        return rc;
    bool oom = false;
    ctx->hostname = dup_opt(opts->hostname, &oom);
    ctx->ca_file = dup_opt(opts->ca_file, &oom);
    ctx->ca_dir = dup_opt(opts->ca_dir, &oom);
    ctx->cert_file = dup_opt(opts->cert_file, &oom);
    ctx->key_file = dup_opt(opts->key_file, &oom);
    ctx->insecure = opts->insecure_skip_verify;
    if (oom) {
        rc = fail_plain(failure, TW_ENOMEM, "out of memory");
        goto err;
    }
    rc = set_common(ctx, opts->alpn, opts->min_version, opts->max_version, opts->handshake_timeout,
                    failure);
    if (rc < 0)
        goto err;
    rc = gen_build(ctx, &ctx->gen, failure);
    if (rc < 0)
        goto err;
    if (ctx->insecure)
        tw_log_warn(LOG_NS, "TLS client context made with insecure_skip_verify: any certificate "
                            "from anyone will be accepted (no authentication at all)");
    *out = ctx;
    return 0;
err:
    ctx_free(ctx);
    return rc;
}

tw_tls_context *tw_tls_context_ref(tw_tls_context *ctx)
{
    if (ctx)
        atomic_fetch_add(&ctx->refs, 1);
    return ctx;
}

void tw_tls_context_unref(tw_tls_context *ctx)
{
    if (ctx && atomic_fetch_sub(&ctx->refs, 1) == 1)
        ctx_free(ctx);
}

int tw_tls_context_add_sni(tw_tls_context *ctx, const char *name, const char *cert_file,
                           const char *key_file, tw_failure **failure)
{
    if (failure)
        *failure = NULL;
    if (!ctx || !ctx->server || !name || !*name || !cert_file || !key_file)
        return fail_plain(failure, TW_EINVAL,
                          "add_sni needs a server context, a name, "
                          "cert_file and key_file");
    if (atomic_load(&ctx->used))
        return fail_plain(failure, TW_EBUSY, "the context is in use already");
    sni_entry *grown = tw_realloc(ctx->sni, (ctx->nsni + 1) * sizeof *grown);
    if (!grown)
        return fail_plain(failure, TW_ENOMEM, "out of memory");
    ctx->sni = grown;
    bool oom = false;
    sni_entry e = {dup_opt(name, &oom), dup_opt(cert_file, &oom), dup_opt(key_file, &oom)};
    if (oom) {
        tw_free(e.name);
        tw_free(e.cert_file);
        tw_free(e.key_file);
        return fail_plain(failure, TW_ENOMEM, "out of memory");
    }
    ctx->sni[ctx->nsni++] = e;
    /* A whole new generation, so a bad file leaves everything as it was. */
    tw__tls_gen *g;
    int rc = gen_build(ctx, &g, failure);
    if (rc < 0) {
        ctx->nsni--;
        tw_free(e.name);
        tw_free(e.cert_file);
        tw_free(e.key_file);
        return rc;
    }
    pthread_mutex_lock(&ctx->lock);
    tw__tls_gen *old = ctx->gen;
    ctx->gen = g;
    pthread_mutex_unlock(&ctx->lock);
    tw__tls_gen_unref(old);
    return 0;
}

int tw_tls_context_reload(tw_tls_context *ctx, tw_failure **failure)
{
    if (failure)
        *failure = NULL;
    if (!ctx)
        return fail_plain(failure, TW_EINVAL, "no context");
    tw__tls_gen *g;
    int rc = gen_build(ctx, &g, failure);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&ctx->lock);
    tw__tls_gen *old = ctx->gen;
    ctx->gen = g;
    pthread_mutex_unlock(&ctx->lock);
    tw__tls_gen_unref(old);
    return 0;
}

/* ---- For connections */

bool tw__tls_context_is_server(const tw_tls_context *ctx)
{
    return ctx->server;
}

double tw__tls_context_handshake_timeout(const tw_tls_context *ctx)
{
    return ctx->handshake_timeout;
}

SSL *tw__tls_context_new_ssl(tw_tls_context *ctx, const char *hostname, tw__tls_gen **gen)
{
    atomic_store(&ctx->used, true);
    pthread_mutex_lock(&ctx->lock);
    tw__tls_gen *g = gen_ref(ctx->gen);
    pthread_mutex_unlock(&ctx->lock);
    SSL *s = SSL_new(g->main);
    if (!s)
        goto err;
    if (!ctx->server) {
        const char *host = hostname ? hostname : ctx->hostname;
        if (host && *host) {
            /* SNI only for names, never for IP literals (RFC 6066). */
            ASN1_OCTET_STRING *ip = a2i_IPADDRESS(host);
            if (ip)
                ASN1_OCTET_STRING_free(ip);
            else if (!SSL_set_tlsext_host_name(s, host))
                goto err;
            if (!ctx->insecure && !SSL_set1_host(s, host))
                goto err;
        } else if (!ctx->insecure) {
            /* Verifying a chain without a name would accept any valid
             * certificate for any site: refuse instead. */
            tw_log_error(LOG_NS, "TLS client without a hostname to verify: refused");
            goto err;
        }
        pthread_mutex_lock(&ctx->lock);
        if (ctx->session && ctx->session_host && strcmp(ctx->session_host, host ? host : "") == 0)
            SSL_set_session(s, ctx->session);
        pthread_mutex_unlock(&ctx->lock);
    }
    *gen = g;
    return s;
err:
    ERR_clear_error();
    SSL_free(s);
    tw__tls_gen_unref(g);
    return NULL;
}
