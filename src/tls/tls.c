/* TLS connections: a protocol wrapper (wrap.h) running OpenSSL over a BIO
 * of our own. See tls.h.
 *
 * The BIO holds no bytes. It reads from the window of input that
 * data_received is feeding OpenSSL (`in`, `in_len`), and it writes what
 * OpenSSL produces straight to the real transport (which sends it or copies
 * it into its own queue), so the real transport's buffer is the whole of
 * what waits to be sent. OpenSSL consumes the whole window before it asks
 * for more (it keeps partial records in its own read buffer). Plaintext the
 * protocol writes before the handshake completes waits in `pending`.
 *
 * OpenSSL's read and write buffers (about 17 KB each): a connection starts
 * with SSL_MODE_RELEASE_BUFFERS, which frees them whenever they drain, so
 * an idle connection holds none. Allocating them per record costs more CPU
 * than encrypting a small record, so a busy connection (TLS_BUSY_RECORDS in
 * a TLS_BUSY_WINDOW_S) keeps them until a window passes with less traffic.
 * (Keeping them until a timer frees them instead would leave every
 * connection of a burst holding them for a while: a fragmented heap.)
 *
 * Why the protocol hears the TLS reason: a TLS failure remembers its
 * failure on the wrapper (tw_wrapper_set_lost_reason), then closes the real
 * transport (lose_connection, so the alert OpenSSL produced goes out first);
 * the wrapper passes the remembered failure to the wrapped protocol's
 * connection_lost instead of the real transport's TW_ECONNDONE. */
#include <errno.h>
#include <pthread.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <twine/buffer.h>
#include <twine/clock.h>
#include <twine/error.h>
#include <twine/log.h>
#include <twine/reactor.h>
#include <twine/tls.h>

#include "tls/tls-internal.h"

#define LOG_NS "twine.tls"

typedef struct tls_conn {
    tw_wrapper w;
    tw_tls_context *ctx;
    tw__tls_gen *gen;
    char *hostname; /* the client's name to verify, or NULL: the context's */
    SSL *ssl;
    const char *in; /* input data_received is feeding OpenSSL, not yet read */
    size_t in_len;
    tw_wqueue pending; /* plaintext written before the handshake completed */
    tw_timer timer;    /* the handshake timeout, then the idle check */
    bool timer_set;
    bool keeps_buffers; /* busy: SSL_MODE_RELEASE_BUFFERS is off */
    unsigned records;   /* reads and writes in the current busy window */
    bool server;
    bool handshake_done;
    bool close_requested; /* the protocol called lose_connection */
    bool closed;          /* we closed the real transport (lose or failure) */
    bool failed;
    bool peer_closed; /* close_notify received */
    bool aborted;
    char *alpn; /* the protocol agreed on (NUL-terminated, ours), or NULL */
} tls_conn;

static const tw_wrapper_hooks tls_hooks;

/* A connection with this many reads and writes in this many seconds keeps
 * OpenSSL's buffers between records. */
#define TLS_BUSY_RECORDS  32
#define TLS_BUSY_WINDOW_S 1.0

static tls_conn *conn_of(tw_wrapper *w)
{
    return (tls_conn *)w;
}

static bool live(const tls_conn *c)
{
    return !c->w.lost && tw_wrapper_real(&c->w) && !c->closed;
}

/* ---- The BIO between OpenSSL and the real transport */

static int bio_write(BIO *b, const char *data, int len)
{
    tls_conn *c = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    tw_transport *real = tw_wrapper_real(&c->w);
    /* A transport that is closing drops the bytes: its loss is reported
     * on its own, and OpenSSL's state stays as if they were sent. */
    if (len > 0 && !c->w.lost && real && tw_transport_write(real, data, (size_t)len) == TW_ENOMEM)
        return -1;
    return len;
}

static int bio_read(BIO *b, char *out, int len)
{
    tls_conn *c = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (c->in_len == 0) {
        BIO_set_retry_read(b); /* no more yet, not the end */
        return -1;
    }
    size_t n = len < 0 ? 0 : (size_t)len;
    if (n > c->in_len)
        n = c->in_len;
    memcpy(out, c->in, n);
    c->in += n;
    c->in_len -= n;
    return (int)n;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b, (void)num, (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static BIO_METHOD *bio_method;
static pthread_once_t bio_method_once = PTHREAD_ONCE_INIT;

/* Made once per process and kept (OpenSSL's own methods live as long). */
static void make_bio_method(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "twine transport");
    if (m && BIO_meth_set_write(m, bio_write) && BIO_meth_set_read(m, bio_read) &&
        BIO_meth_set_ctrl(m, bio_ctrl))
        bio_method = m;
    else
        BIO_meth_free(m);
}

static BIO *new_bio(tls_conn *c)
{
    if (pthread_once(&bio_method_once, make_bio_method) != 0 || !bio_method)
        return NULL;
    BIO *b = BIO_new(bio_method);
    if (b) {
        BIO_set_data(b, c);
        BIO_set_init(b, 1);
    }
    return b;
}

static void stop_timer(tls_conn *c)
{
    if (c->timer_set)
        tw_timer_stop(&c->timer);
}

/* A read or a write after the handshake: enough of them make the
 * connection busy, and the busy window's timer runs while it stays so. */
static void note_traffic(tls_conn *c)
{
    if (++c->records < TLS_BUSY_RECORDS || c->keeps_buffers)
        return;
    if (c->closed || c->w.lost || !c->timer_set)
        return;
    c->keeps_buffers = true;
    SSL_clear_mode(c->ssl, SSL_MODE_RELEASE_BUFFERS);
    c->records = 0;
    tw_timer_start(&c->timer, TLS_BUSY_WINDOW_S);
}

/* The connection failed: remember why, send the alert, close. */
static void fail_with(tls_conn *c, tw_failure *f)
{
    if (c->failed || c->closed) {
        tw_failure_unref(f);
        return;
    }
    c->failed = true;
    c->closed = true;
    stop_timer(c);
    tw_log_failure(TW_LOG_DEBUG, LOG_NS, f, "TLS connection failed");
    tw_wrapper_set_lost_reason(&c->w, f);
    tw_wqueue_clear(&c->pending);
    if (tw_wrapper_real(&c->w))
        tw_transport_lose_connection(tw_wrapper_real(&c->w));
}

/* An SSL call returned `ret`: fail with the right code and reason. */
static void fail_ssl(tls_conn *c, int ret, const char *what)
{
    int err = SSL_get_error(c->ssl, ret);
    long vr = SSL_get_verify_result(c->ssl);
    char text[512];
    if (vr != X509_V_OK && !c->handshake_done) {
        ERR_clear_error();
        fail_with(c, tw_failure_new(TW_ETLSVERIFY, NULL, "%s: certificate verify failed: %s", what,
                                    X509_verify_cert_error_string(vr)));
        return;
    }
    if (err == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
        fail_with(c, tw_failure_new(TW_ETLS, NULL, "%s: unexpected end of the stream", what));
        return;
    }
    tw__tls_error_text(text, sizeof text, what);
    fail_with(c, tw_failure_new(TW_ETLS, NULL, "%s", text));
}

static int ssl_write_all(tls_conn *c, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        int chunk = len > (1u << 30) ? (1 << 30) : (int)len;
        int n = SSL_write(c->ssl, p, chunk);
        if (n <= 0) {
            fail_ssl(c, n, "TLS write failed");
            return TW_ENOTCONN;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* After the handshake: encrypts what waited, in order. */
static void flush_pending(tls_conn *c)
{
    struct iovec iov[16];
    while (!tw_wqueue_is_empty(&c->pending) && live(c)) {
        int n = tw_wqueue_fill_iov(&c->pending, iov, 16);
        size_t total = 0;
        for (int i = 0; i < n; i++) {
            if (ssl_write_all(c, iov[i].iov_base, iov[i].iov_len) < 0)
                return;
            total += iov[i].iov_len;
        }
        tw_wqueue_consume(&c->pending, total);
    }
}

static void do_close(tls_conn *c)
{
    if (c->closed)
        return;
    c->closed = true;
    stop_timer(c);
    if (c->handshake_done) {
        ERR_clear_error();
        (void)SSL_shutdown(c->ssl); /* close_notify */
        ERR_clear_error();
    }
    tw_transport_lose_connection(tw_wrapper_real(&c->w));
}

static void handshake_finished(tls_conn *c)
{
    c->handshake_done = true;
    stop_timer(c);
    const unsigned char *proto;
    unsigned int plen;
    SSL_get0_alpn_selected(c->ssl, &proto, &plen);
    if (proto && plen > 0) {
        c->alpn = tw_malloc(plen + 1u);
        if (!c->alpn) {
            fail_with(c, tw_failure_new(TW_ENOMEM, NULL, "out of memory after the TLS handshake"));
            return;
        }
        memcpy(c->alpn, proto, plen);
        c->alpn[plen] = '\0';
    }
    tw_protocol *p = c->w.wrapped;
    if (p && c->w.wrapped_made && p->ops && p->ops->handshake_completed)
        p->ops->handshake_completed(p);
    if (!live(c))
        return;
    flush_pending(c);
    if (c->close_requested && live(c))
        do_close(c);
}

/* Drives OpenSSL after bytes arrived (or at the start): the handshake, then
 * every plaintext byte there is. */
static void drive(tls_conn *c)
{
    if (!c->handshake_done) {
        ERR_clear_error();
        int r = SSL_do_handshake(c->ssl);
        if (r != 1) {
            int err = SSL_get_error(c->ssl, r);
            if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
                return;
            fail_ssl(c, r, "TLS handshake failed");
            return;
        }
        handshake_finished(c);
    }
    char buf[16384];
    ERR_clear_error();
    while (!c->w.lost && !c->failed && !c->aborted && !c->peer_closed) {
        int n = SSL_read(c->ssl, buf, sizeof buf);
        if (n > 0) {
            tw_wrapper_deliver(&c->w, buf, (size_t)n);
            /* All input read and no record half-processed: another
             * SSL_read could only say "want more". */
            if (c->in_len == 0 && !SSL_has_pending(c->ssl))
                break;
            continue;
        }
        int err = SSL_get_error(c->ssl, n);
        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
            break;
        if (err == SSL_ERROR_ZERO_RETURN) {
            /* The peer's close_notify: answer it and close. */
            c->peer_closed = true;
            do_close(c);
            return;
        }
        fail_ssl(c, n, "TLS read failed");
        return;
    }
}

/* The handshake timeout, then the end of a busy window: a connection that
 * went quiet goes back to releasing OpenSSL's buffers (at once, or when
 * the partial record they hold is complete). */
static void on_timer(tw_timer *t)
{
    tls_conn *c = (tls_conn *)((char *)t - offsetof(tls_conn, timer));
    if (!c->handshake_done) {
        fail_with(c, tw_failure_new(TW_ETLS, NULL, "TLS handshake timed out"));
        return;
    }
    if (c->closed || c->w.lost)
        return;
    if (c->records >= TLS_BUSY_RECORDS) {
        c->records = 0;
        tw_timer_start(&c->timer, TLS_BUSY_WINDOW_S);
        return;
    }
    c->keeps_buffers = false;
    c->records = 0;
    SSL_set_mode(c->ssl, SSL_MODE_RELEASE_BUFFERS);
    (void)SSL_free_buffers(c->ssl);
}

/* ---- Hooks: events from the real transport */

static int setup_ssl(tls_conn *c)
{
    if (c->ssl)
        return 0;
    c->ssl = tw__tls_context_new_ssl(c->ctx, c->hostname, &c->gen);
    if (!c->ssl)
        return TW_ENOMEM;
    BIO *bio = new_bio(c);
    if (!bio) {
        SSL_free(c->ssl);
        c->ssl = NULL;
        tw__tls_gen_unref(c->gen);
        c->gen = NULL;
        return TW_ENOMEM;
    }
    SSL_set_bio(c->ssl, bio, bio); /* one reference, for both directions */
    if (c->server)
        SSL_set_accept_state(c->ssl);
    else
        SSL_set_connect_state(c->ssl);
    return 0;
}

static void tls_connection_made(tw_wrapper *w)
{
    tls_conn *c = conn_of(w);
    tw_transport *real = tw_wrapper_real(w);
    int rc = setup_ssl(c);
    if (rc < 0) {
        tw_wrapper_set_lost_reason(w,
                                   tw_failure_new(TW_ETLS, NULL, "cannot start a TLS connection"));
        c->closed = c->failed = true;
        tw_transport_abort_connection(real);
        return;
    }
    if (real->reactor) {
        tw_timer_init(&c->timer, tw_reactor_clock(real->reactor), on_timer);
        c->timer_set = true;
        tw_timer_start(&c->timer, tw__tls_context_handshake_timeout(c->ctx));
    }
    tw_wrapper_make_wrapped_connection(w);
    if (!c->server && !c->aborted && !c->failed && !c->w.lost)
        drive(c); /* the ClientHello */
}

static void tls_data_received(tw_wrapper *w, const char *data, size_t len)
{
    tls_conn *c = conn_of(w);
    if (c->failed || c->aborted || !c->ssl)
        return;
    /* After our lose_connection (close_notify sent) the peer's last records
     * are still read: plaintext sent before its close_notify is delivered. */
    if (c->closed && !c->handshake_done)
        return;
    c->in = data;
    c->in_len = len;
    drive(c);
    /* Bytes left unread came after a close_notify or a failure. */
    c->in = NULL;
    c->in_len = 0;
    if (c->handshake_done)
        note_traffic(c);
}

static void tls_connection_lost(tw_wrapper *w, tw_failure *reason)
{
    tls_conn *c = conn_of(w);
    stop_timer(c);
    if (c->failed)
        return;
    int code = tw_failure_code(reason);
    /* After the peer's close_notify the TLS connection ended cleanly, even
     * if our answering close_notify found the socket closed. */
    if (c->peer_closed && (code == -EPIPE || code == -ECONNRESET))
        tw_wrapper_set_lost_reason(w, tw_failure_new(TW_ECONNDONE, NULL, NULL));
    else if (code == TW_ECONNDONE && !c->peer_closed && !c->close_requested)
        tw_wrapper_set_lost_reason(
            w, tw_failure_new(TW_ECONNLOST, NULL, "TLS connection closed without close_notify"));
}

static void tls_free(tw_wrapper *w)
{
    tls_conn *c = conn_of(w);
    stop_timer(c);
    SSL_free(c->ssl); /* and the BIOs */
    c->ssl = NULL;
    tw__tls_gen_unref(c->gen);
    c->gen = NULL;
    tw_wqueue_clear(&c->pending);
    tw_free(c->hostname);
    c->hostname = NULL;
    tw_free(c->alpn);
    c->alpn = NULL;
    tw_tls_context_unref(c->ctx);
    c->ctx = NULL;
}

/* ---- Hooks: calls from the wrapped protocol */

static int tls_write(tw_wrapper *w, const void *data, size_t len)
{
    tls_conn *c = conn_of(w);
    if (c->close_requested || c->closed || c->failed)
        return TW_ENOTCONN;
    if (len == 0)
        return 0;
    if (!c->handshake_done)
        return tw_wqueue_append(&c->pending, data, len);
    if (ssl_write_all(c, data, len) < 0)
        return TW_ENOTCONN;
    note_traffic(c);
    return 0;
}

static int tls_write_iov(tw_wrapper *w, const struct iovec *iov, int iovcnt)
{
    tls_conn *c = conn_of(w);
    if (c->close_requested || c->closed || c->failed)
        return TW_ENOTCONN;
    if (iovcnt < 0 || (iovcnt > 0 && !iov))
        return TW_EINVAL;
    if (!c->handshake_done) {
        /* One copy of the whole sequence: all or nothing. */
        size_t total = 0;
        for (int i = 0; i < iovcnt; i++)
            total += iov[i].iov_len;
        if (total == 0)
            return 0;
        char *copy = tw_malloc(total);
        if (!copy)
            return TW_ENOMEM;
        size_t at = 0;
        for (int i = 0; i < iovcnt; i++) {
            if (iov[i].iov_len)
                memcpy(copy + at, iov[i].iov_base, iov[i].iov_len);
            at += iov[i].iov_len;
        }
        int rc = tw_wqueue_append_zerocopy(&c->pending, copy, total, tw_free, copy);
        if (rc < 0)
            tw_free(copy);
        return rc;
    }
    for (int i = 0; i < iovcnt; i++)
        if (ssl_write_all(c, iov[i].iov_base, iov[i].iov_len) < 0)
            return TW_ENOTCONN;
    note_traffic(c);
    return 0;
}

static int tls_write_zerocopy(tw_wrapper *w, const void *data, size_t len, tw_release_fn release,
                              void *arg)
{
    tls_conn *c = conn_of(w);
    if (c->close_requested || c->closed || c->failed)
        return TW_ENOTCONN;
    if (!c->handshake_done)
        return tw_wqueue_append_zerocopy(&c->pending, data, len, release, arg);
    /* Encryption copies: the caller's bytes are done with at once. */
    if (ssl_write_all(c, data, len) < 0)
        return TW_ENOTCONN; /* the caller still owns data */
    if (release)
        release(arg);
    note_traffic(c);
    return 0;
}

static int tls_lose_connection(tw_wrapper *w)
{
    tls_conn *c = conn_of(w);
    if (c->close_requested || c->closed)
        return 0;
    c->close_requested = true;
    /* Before the handshake: what was written is sent once it completes
     * (the handshake timeout bounds the wait). */
    if (c->handshake_done)
        do_close(c);
    return 0;
}

static int tls_abort_connection(tw_wrapper *w)
{
    tls_conn *c = conn_of(w);
    c->close_requested = true;
    c->closed = true;
    c->aborted = true;
    stop_timer(c);
    tw_wqueue_clear(&c->pending);
    return tw_transport_abort_connection(tw_wrapper_real(w));
}

static size_t tls_write_buffer_size(const tw_wrapper *w)
{
    const tls_conn *c = (const tls_conn *)w;
    return tw_wqueue_size(&c->pending) + tw_transport_write_buffer_size(tw_wrapper_real(w));
}

static const tw_wrapper_hooks tls_hooks = {
    .connection_made = tls_connection_made,
    .data_received = tls_data_received,
    .connection_lost = tls_connection_lost,
    .free = tls_free,
    .write = tls_write,
    .write_iov = tls_write_iov,
    .write_zerocopy = tls_write_zerocopy,
    .lose_connection = tls_lose_connection,
    .abort_connection = tls_abort_connection,
    .write_buffer_size = tls_write_buffer_size,
    .no_half_close = true,
};

static int conn_init(tls_conn *c, tw_tls_context *ctx, const char *hostname)
{
    if (hostname) {
        size_t n = strlen(hostname) + 1;
        c->hostname = tw_malloc(n);
        if (!c->hostname)
            return TW_ENOMEM;
        memcpy(c->hostname, hostname, n);
    }
    c->ctx = tw_tls_context_ref(ctx);
    c->server = tw__tls_context_is_server(ctx);
    tw_wqueue_init(&c->pending);
    return 0;
}

/* ---- The factory */

static int tf_init(tw_wrapping_factory *wf, tw_wrapper *w)
{
    tw_tls_factory *tf = (tw_tls_factory *)wf;
    return conn_init(conn_of(w), tf->ctx, tf->hostname);
}

static const tw_wrapping_factory_hooks tf_hooks = {.init = tf_init};

int tw_tls_factory_init(tw_tls_factory *tf, tw_tls_context *ctx, tw_factory *wrapped,
                        const char *hostname)
{
    if (!tf || !ctx || !wrapped)
        return TW_EINVAL;
    if (hostname && tw__tls_context_is_server(ctx))
        return TW_EINVAL;
    char *h = NULL;
    if (hostname) {
        size_t n = strlen(hostname) + 1;
        h = tw_malloc(n);
        if (!h)
            return TW_ENOMEM;
        memcpy(h, hostname, n);
    }
    tw_wrapping_factory_init(&tf->wf, wrapped, &tls_hooks, sizeof(tls_conn), &tf_hooks);
    tf->ctx = tw_tls_context_ref(ctx);
    tf->hostname = h;
    return 0;
}

void tw_tls_factory_cleanup(tw_tls_factory *tf)
{
    if (!tf)
        return;
    tw_tls_context_unref(tf->ctx);
    tf->ctx = NULL;
    tw_free(tf->hostname);
    tf->hostname = NULL;
}

/* ---- startTLS */

static tls_conn *tls_of(const tw_transport *t)
{
    tw_wrapper *w = tw_wrapper_from_transport(t);
    return w && w->hooks == &tls_hooks ? conn_of(w) : NULL;
}

int tw_tls_start(tw_protocol *p, tw_tls_context *ctx, const char *hostname)
{
    if (!p || !ctx || !p->transport)
        return TW_EINVAL;
    if (tls_of(p->transport))
        return TW_EINVAL;
    if (hostname && tw__tls_context_is_server(ctx))
        return TW_EINVAL;
    tw_wrapper *w;
    int rc = tw_wrapper_new(&tls_hooks, sizeof(tls_conn), p, &w);
    if (rc < 0)
        return rc;
    tls_conn *c = conn_of(w);
    rc = conn_init(c, ctx, hostname);
    if (rc == 0)
        rc = setup_ssl(c);
    if (rc < 0) {
        /* Not inserted: releasing the wrapper must not release p. */
        w->wrapped = NULL;
        tw_protocol_release(&w->base);
        return rc;
    }
    rc = tw_wrapper_insert(w);
    if (rc < 0) {
        w->wrapped = NULL;
        tw_protocol_release(&w->base);
        return rc == TW_ENOTCONN ? TW_EINVAL : rc;
    }
    return 0;
}

/* ---- Queries */

bool tw_tls_is_tls(const tw_transport *t)
{
    return tls_of(t) != NULL;
}

bool tw_tls_handshake_done(const tw_transport *t)
{
    tls_conn *c = tls_of(t);
    return c && c->handshake_done;
}

static tls_conn *done_of(const tw_transport *t)
{
    tls_conn *c = tls_of(t);
    return c && c->handshake_done && c->ssl ? c : NULL;
}

const char *tw_tls_negotiated_protocol(const tw_transport *t)
{
    tls_conn *c = done_of(t);
    if (!c)
        return NULL;
    return c->alpn;
}

const char *tw_tls_version_name(const tw_transport *t)
{
    tls_conn *c = done_of(t);
    return c ? SSL_get_version(c->ssl) : NULL;
}

const char *tw_tls_cipher_name(const tw_transport *t)
{
    tls_conn *c = done_of(t);
    return c ? SSL_get_cipher_name(c->ssl) : NULL;
}

const char *tw_tls_server_name(const tw_transport *t)
{
    tls_conn *c = tls_of(t);
    if (!c || !c->ssl || !c->server)
        return NULL;
    return SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name);
}

static int64_t asn1_time_to_epoch(const ASN1_TIME *at)
{
    struct tm tm;
    if (!at || ASN1_TIME_to_tm(at, &tm) != 1)
        return 0;
    return (int64_t)timegm(&tm);
}

int tw_tls_get_peer_certificate(const tw_transport *t, tw_tls_peer_certificate *out)
{
    tls_conn *c = tls_of(t);
    if (!c || !out)
        return TW_EINVAL;
    if (!c->handshake_done || !c->ssl)
        return TW_EAGAIN;
    X509 *x = SSL_get1_peer_certificate(c->ssl);
    if (!x)
        return TW_ENOENT;
    memset(out, 0, sizeof *out);
    int rc = 0;
    BIO *b = BIO_new(BIO_s_mem());
    if (!b) {
        rc = TW_ENOMEM;
        goto done;
    }
    const X509_NAME *names[2] = {X509_get_subject_name(x), X509_get_issuer_name(x)};
    char *dst[2] = {out->subject, out->issuer};
    for (int i = 0; i < 2; i++) {
        (void)BIO_reset(b);
        X509_NAME_print_ex(b, names[i], 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
        char *data;
        long n = BIO_get_mem_data(b, &data);
        if (n < 0)
            n = 0;
        if ((size_t)n >= sizeof out->subject)
            n = sizeof out->subject - 1;
        memcpy(dst[i], data, (size_t)n);
        dst[i][n] = '\0';
    }
    BIO_free(b);
    out->not_before = asn1_time_to_epoch(X509_get0_notBefore(x));
    out->not_after = asn1_time_to_epoch(X509_get0_notAfter(x));
    unsigned int mdlen = 0;
    if (X509_digest(x, EVP_sha256(), out->sha256, &mdlen) != 1 || mdlen != 32)
        rc = TW_ENOMEM;
done:
    X509_free(x);
    ERR_clear_error();
    return rc;
}

bool tw__tls_session_reused(const tw_transport *t)
{
    tls_conn *c = done_of(t);
    return c && SSL_session_reused(c->ssl);
}

bool tw__tls_keeps_buffers(const tw_transport *t)
{
    tls_conn *c = tls_of(t);
    return c && c->keeps_buffers;
}
