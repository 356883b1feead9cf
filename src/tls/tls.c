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
 * TLS 1.3 servers run the record layer themselves (record.h): once the
 * handshake completes with TLS 1.3 and one of its three AEAD suites, the
 * connection takes the application traffic secrets (which the context's
 * keylog callback handed over), the sequence numbers reached, and what the
 * protocol may still ask (ALPN, SNI, the peer's certificate, resumption),
 * then frees its SSL: an idle connection keeps a few hundred bytes of keys
 * instead of OpenSSL's 14 KB, and records cost no SSL_read/SSL_write
 * machinery. Anything unexpected at that point leaves the connection on
 * OpenSSL (logged at debug). The sequence numbers: the read one is 0, as
 * OpenSSL (read_ahead is never on) reads a record's header, then exactly its
 * body, so it stops right after the client's Finished and what follows in
 * `in` is the first record we decrypt; the write one is the number of
 * records OpenSSL wrote in the SSL_do_handshake call that completed (the
 * NewSessionTickets, under the application key), counted by parsing the
 * record headers that go through the BIO. The cipher contexts follow the
 * buffers' busy/quiet policy: kept while busy, freed when quiet.
 *
 * Why the protocol hears the TLS reason: a TLS failure remembers its
 * failure on the wrapper (tw_wrapper_set_lost_reason), then closes the real
 * transport (lose_connection, so the alert OpenSSL produced goes out first);
 * the wrapper passes the remembered failure to the wrapped protocol's
 * connection_lost instead of the real transport's TW_ECONNDONE. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
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

#include "tls/record.h"
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
    /* The own record layer (servers, TLS 1.3): before the switch, the
     * secrets the keylog callback handed over and the records written. */
    struct tls_secrets *secrets;
    unsigned hs_records; /* records begun in the current SSL_do_handshake call */
    uint8_t wr_hdr_len;  /* header bytes of the record being written */
    uint8_t wr_hdr[5];
    size_t wr_body_left;     /* body bytes of it still to come */
    tw__tls13 *rl;           /* after the switch (ssl is NULL then) */
    X509 *peer_cert;         /* kept from the SSL, or NULL */
    char *sni;               /* likewise */
    const char *cipher_name; /* static */
    bool reused;
} tls_conn;

struct tls_secrets {
    uint8_t client[48], server[48];
    uint8_t client_len, server_len;
};

static const tw_wrapper_hooks tls_hooks;

/* A connection with this many reads and writes in this many seconds keeps
 * OpenSSL's buffers between records. */
#define TLS_BUSY_RECORDS  32
#define TLS_BUSY_WINDOW_S 1.0

static atomic_bool own_records_on = true; /* set by tests and bench-tls before serving */

void tw__tls_set_own_record_layer(bool on)
{
    own_records_on = on;
}

static int conn_ex_index = -1; /* SSL ex_data: a server SSL's tls_conn */
static pthread_once_t conn_ex_once = PTHREAD_ONCE_INIT;

static void conn_ex_init(void)
{
    conn_ex_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

static tls_conn *conn_of(tw_wrapper *w)
{
    return (tls_conn *)w;
}

static bool live(const tls_conn *c)
{
    return !c->w.lost && tw_wrapper_real(&c->w) && !c->closed;
}

/* ---- The BIO between OpenSSL and the real transport */

/* Counts the records OpenSSL writes during a server handshake, however it
 * splits or joins them, by following their headers. */
static void count_records(tls_conn *c, const uint8_t *p, size_t len)
{
    while (len > 0) {
        if (c->wr_body_left > 0) {
            size_t take = len < c->wr_body_left ? len : c->wr_body_left;
            c->wr_body_left -= take;
            p += take;
            len -= take;
            continue;
        }
        c->wr_hdr[c->wr_hdr_len++] = *p++;
        len--;
        if (c->wr_hdr_len == sizeof c->wr_hdr) {
            c->wr_body_left = (size_t)c->wr_hdr[3] << 8 | c->wr_hdr[4];
            c->wr_hdr_len = 0;
            c->hs_records++;
        }
    }
}

static int bio_write(BIO *b, const char *data, int len)
{
    tls_conn *c = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (c->server && !c->handshake_done && len > 0)
        count_records(c, (const uint8_t *)data, (size_t)len);
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

/* A connection that is not busy lets go of what it holds between records:
 * OpenSSL's buffers (SSL_MODE_RELEASE_BUFFERS does it as they drain), or
 * our cipher contexts. */
static void release_if_quiet(tls_conn *c)
{
    if (c->rl && !c->keeps_buffers)
        tw__tls13_quiet(c->rl);
}

/* A read or a write after the handshake: enough of them make the
 * connection busy, and the busy window's timer runs while it stays so. */
static void note_traffic(tls_conn *c)
{
    if (++c->records < TLS_BUSY_RECORDS || c->keeps_buffers) {
        release_if_quiet(c);
        return;
    }
    if (c->closed || c->w.lost || !c->timer_set) {
        release_if_quiet(c);
        return;
    }
    c->keeps_buffers = true;
    if (c->ssl)
        SSL_clear_mode(c->ssl, SSL_MODE_RELEASE_BUFFERS);
    c->records = 0;
    tw_timer_start(&c->timer, TLS_BUSY_WINDOW_S);
}

/* The connection failed: remember why, send the alert, close. */
static void fail_with(tls_conn *c, tw_failure *f)
{
    if (c->failed || c->closed) {
        /* Closing already (our close_notify went out): the reason stays, but
         * nothing more is read (reading() checks failed). */
        c->failed = true;
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

/* ---- The own record layer: writing */

/* Records that fit this buffer are sealed on the stack (coroutine stacks
 * are small); bigger writes are sealed into one allocation handed to the
 * transport without a copy. */
#define OWN_STACK_PLAIN 2048
#define OWN_CHUNK_PLAIN (16 * TW__TLS13_MAX_PLAIN)

/* Bytes to the real transport, as bio_write does. */
static int send_raw(tls_conn *c, const void *p, size_t n)
{
    tw_transport *real = tw_wrapper_real(&c->w);
    if (!c->w.lost && real && tw_transport_write(real, p, n) == TW_ENOMEM)
        return TW_ENOMEM;
    return 0;
}

static void fail_own_write(tls_conn *c, int rc)
{
    fail_with(c, tw_failure_new(rc == TW_ENOMEM ? TW_ENOMEM : TW_ETLS, NULL, "TLS write failed: %s",
                                rc == TW_ELIMIT ? "sequence numbers exhausted" : tw_strerror(rc)));
}

/* One small record (alert, KeyUpdate, short data) sealed on the stack. */
static int own_send_small(tls_conn *c, uint8_t type, tw__tls13_cursor *cur, size_t len)
{
    uint8_t buf[OWN_STACK_PLAIN + TW__TLS13_OVERHEAD];
    int n = tw__tls13_seal(c->rl, type, cur, len, buf);
    if (n < 0)
        return n;
    return send_raw(c, buf, (size_t)n);
}

static int own_key_update(tls_conn *c)
{
    uint8_t buf[TW__TLS13_OVERHEAD + 5];
    int n = tw__tls13_seal_key_update(c->rl, false, buf);
    if (n < 0)
        return n;
    return send_raw(c, buf, (size_t)n);
}

/* Seals `len` bytes of cur as records of at most 16 KiB of plaintext
 * (small pieces coalesced) and hands them to the real transport. Returns 0,
 * or TW_ENOTCONN once the connection failed. */
static int own_write(tls_conn *c, tw__tls13_cursor *cur, size_t len)
{
    while (len > 0) {
        int rc = 0;
        /* AES-GCM wears out after 2^24 records: move to the next key. */
        if (tw__tls13_write_key_worn(c->rl))
            rc = own_key_update(c);
        size_t chunk = len < OWN_CHUNK_PLAIN ? len : OWN_CHUNK_PLAIN;
        uint8_t *buf = NULL;
        size_t nrec = (chunk + TW__TLS13_MAX_PLAIN - 1) / TW__TLS13_MAX_PLAIN, size = 0;
        if (rc == 0 && chunk > OWN_STACK_PLAIN)
            buf = tw_malloc(chunk + nrec * TW__TLS13_OVERHEAD);
        if (rc < 0) {
            /* below */
        } else if (buf) {
            for (size_t left = chunk; left > 0 && rc >= 0;) {
                size_t n = left < TW__TLS13_MAX_PLAIN ? left : TW__TLS13_MAX_PLAIN;
                rc = tw__tls13_seal(c->rl, TW__TLS13_CT_APPDATA, cur, n, buf + size);
                if (rc > 0)
                    size += (size_t)rc;
                left -= n;
            }
            tw_transport *real = tw_wrapper_real(&c->w);
            if (rc >= 0 && !c->w.lost && real)
                rc = tw_transport_write_zerocopy(real, buf, size, tw_free, buf);
            else if (rc >= 0)
                rc = TW_ENOTCONN; /* the transport is closing: dropped */
            if (rc < 0)
                tw_free(buf);
            if (rc == TW_ENOTCONN)
                rc = 0;
        } else {
            /* Small, or no memory for a big buffer: a record at a time. */
            for (size_t left = chunk; left > 0 && rc >= 0;) {
                size_t n = left < OWN_STACK_PLAIN ? left : OWN_STACK_PLAIN;
                rc = own_send_small(c, TW__TLS13_CT_APPDATA, cur, n);
                left -= n;
            }
        }
        if (rc < 0) {
            fail_own_write(c, rc);
            return TW_ENOTCONN;
        }
        len -= chunk;
    }
    return 0;
}

/* Sends an alert (encrypted) unless close_notify went out already. */
static void own_send_alert(tls_conn *c, uint8_t desc)
{
    if (c->closed)
        return;
    uint8_t buf[TW__TLS13_OVERHEAD + 2];
    int n = tw__tls13_seal_alert(c->rl, desc, buf);
    if (n > 0)
        (void)send_raw(c, buf, (size_t)n);
}

/* ---- The own record layer: reading */

static bool reading(const tls_conn *c)
{
    return !c->w.lost && !c->failed && !c->aborted && !c->peer_closed;
}

static bool sink_data(void *arg, const uint8_t *p, size_t n)
{
    tls_conn *c = arg;
    tw_wrapper_deliver(&c->w, (const char *)p, n);
    return reading(c);
}

static bool sink_key_update(void *arg)
{
    tls_conn *c = arg;
    /* After our close_notify nothing more is sent: the peer's request
     * needs no answer then. */
    if (!c->closed) {
        int rc = own_key_update(c);
        if (rc < 0) {
            fail_own_write(c, rc);
            return false;
        }
    }
    return reading(c);
}

static const tw__tls13_sink own_sink = {.data = sink_data, .key_update_requested = sink_key_update};

static void do_close(tls_conn *c);

static void own_read(tls_conn *c, const char *data, size_t len)
{
    uint8_t scratch[TW__TLS13_MAX_CIPHER];
    tw__tls13_error err;
    int rc = tw__tls13_read(c->rl, (const uint8_t *)data, len, scratch, &own_sink, c, &err);
    if (rc == TW__TLS13_CLOSED) {
        /* The peer's close_notify: answer it and close. */
        if (reading(c)) {
            c->peer_closed = true;
            do_close(c);
        }
    } else if (rc == TW_ENOMEM) {
        own_send_alert(c, TW__TLS13_AL_INTERNAL_ERROR);
        fail_with(c, tw_failure_new(TW_ENOMEM, NULL, "TLS read failed: out of memory"));
    } else if (rc == TW_ETLS && err.peer_alert >= 0) {
        fail_with(c, tw_failure_new(TW_ETLS, NULL, "TLS read failed: the peer sent alert %d (%s)",
                                    err.peer_alert, SSL_alert_desc_string_long(err.peer_alert)));
    } else if (rc == TW_ETLS) {
        own_send_alert(c, (uint8_t)err.send_alert);
        fail_with(c, tw_failure_new(TW_ETLS, NULL, "TLS read failed: %s (alert %s sent)", err.why,
                                    SSL_alert_desc_string_long(err.send_alert)));
    }
}

/* ---- The switch from OpenSSL to the own record layer */

static void wipe_secrets(tls_conn *c)
{
    if (!c->secrets)
        return;
    OPENSSL_cleanse(c->secrets, sizeof *c->secrets);
    tw_free(c->secrets);
    c->secrets = NULL;
}

void tw__tls_conn_secret(const SSL *s, bool client, const uint8_t *secret, size_t len)
{
    if (conn_ex_index < 0)
        return;
    tls_conn *c = SSL_get_ex_data(s, conn_ex_index);
    if (!c || len > sizeof c->secrets->client)
        return;
    if (!c->secrets) {
        c->secrets = tw_calloc(1, sizeof *c->secrets);
        if (!c->secrets)
            return; /* the connection stays on OpenSSL */
    }
    memcpy(client ? c->secrets->client : c->secrets->server, secret, len);
    if (client)
        c->secrets->client_len = (uint8_t)len;
    else
        c->secrets->server_len = (uint8_t)len;
}

/* Why the connection cannot leave OpenSSL, or NULL when it switched. */
static const char *switch_to_own(tls_conn *c)
{
    if (!own_records_on)
        return "turned off";
    if (SSL_version(c->ssl) != TLS1_3_VERSION)
        return "not TLS 1.3";
    const SSL_CIPHER *cipher = SSL_get_current_cipher(c->ssl);
    uint16_t suite = cipher ? SSL_CIPHER_get_protocol_id(cipher) : 0;
    const char *name = tw__tls13_suite_name(suite);
    if (!name)
        return "a cipher suite of its own";
    struct tls_secrets *sec = c->secrets;
    if (!sec || !sec->client_len || sec->client_len != sec->server_len)
        return "no traffic secrets";
    /* OpenSSL must have read exactly up to the client's Finished. */
    if (SSL_get_read_ahead(c->ssl) || SSL_has_pending(c->ssl))
        return "OpenSSL holds input it read";
    if (c->wr_hdr_len || c->wr_body_left)
        return "OpenSSL wrote part of a record";
    /* The client's max_fragment_length: records must stay that small. */
    SSL_SESSION *sess = SSL_get0_session(c->ssl);
    if (sess && SSL_SESSION_get_max_fragment_length(sess) != TLSEXT_max_fragment_length_DISABLED)
        return "a max_fragment_length was negotiated";
    tw__tls13 *rl = tw_malloc(sizeof *rl);
    if (!rl)
        return "out of memory";
    int rc = tw__tls13_init(rl, suite, sec->client, sec->server, sec->client_len, 0, c->hs_records);
    if (rc < 0) {
        tw__tls13_cleanup(rl);
        tw_free(rl);
        return rc == TW_ENOTSUP ? "OpenSSL lacks the cipher or HKDF" : "key derivation failed";
    }
    const char *sni = SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name);
    if (sni) {
        size_t n = strlen(sni) + 1;
        c->sni = tw_malloc(n);
        if (!c->sni) {
            tw__tls13_cleanup(rl);
            tw_free(rl);
            return "out of memory";
        }
        memcpy(c->sni, sni, n);
    }
    c->peer_cert = SSL_get1_peer_certificate(c->ssl);
    c->reused = SSL_session_reused(c->ssl);
    c->cipher_name = name;
    /* Not a bad session for the server's cache: the connection goes on. */
    SSL_set_shutdown(c->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    SSL_free(c->ssl);
    c->ssl = NULL;
    tw__tls_gen_unref(c->gen);
    c->gen = NULL;
    c->rl = rl;
    ERR_clear_error();
    return NULL;
}

/* ---- Both paths */

static int ssl_write_all(tls_conn *c, const void *data, size_t len)
{
    if (c->rl) {
        struct iovec v = {(void *)data, len};
        tw__tls13_cursor cur = {&v, 1, 0, 0};
        return own_write(c, &cur, len);
    }
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
        for (int i = 0; i < n; i++)
            total += iov[i].iov_len;
        if (c->rl) {
            tw__tls13_cursor cur = {iov, n, 0, 0};
            if (own_write(c, &cur, total) < 0)
                return;
        } else {
            for (int i = 0; i < n; i++)
                if (ssl_write_all(c, iov[i].iov_base, iov[i].iov_len) < 0)
                    return;
        }
        tw_wqueue_consume(&c->pending, total);
    }
}

static void do_close(tls_conn *c)
{
    if (c->closed)
        return;
    if (c->rl) {
        own_send_alert(c, TW__TLS13_AL_CLOSE_NOTIFY);
        release_if_quiet(c);
    }
    c->closed = true;
    stop_timer(c);
    if (c->handshake_done && c->ssl) {
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
            wipe_secrets(c);
            fail_with(c, tw_failure_new(TW_ENOMEM, NULL, "out of memory after the TLS handshake"));
            return;
        }
        memcpy(c->alpn, proto, plen);
        c->alpn[plen] = '\0';
    }
    if (c->server) {
        const char *why = switch_to_own(c);
        if (why)
            tw_log_debug(LOG_NS, "TLS connection stays on OpenSSL's record layer: %s", why);
    }
    wipe_secrets(c);
    /* What was written before goes first, then whatever handshake_completed
     * writes. */
    flush_pending(c);
    if (!live(c))
        return;
    tw_protocol *p = c->w.wrapped;
    if (p && c->w.wrapped_made && p->ops && p->ops->handshake_completed)
        p->ops->handshake_completed(p);
    if (c->close_requested && live(c))
        do_close(c);
}

/* Drives OpenSSL after bytes arrived (or at the start): the handshake, then
 * every plaintext byte there is. */
static void drive(tls_conn *c)
{
    if (!c->handshake_done) {
        ERR_clear_error();
        c->hs_records = 0;
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
    if (c->rl) {
        /* What came after the client's Finished: the first records of ours. */
        if (c->in_len > 0 && reading(c))
            own_read(c, c->in, c->in_len);
        c->in_len = 0;
        return;
    }
    if (!c->ssl)
        return;
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
 * the partial record they hold is complete), or frees its cipher contexts. */
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
    if (c->rl) {
        tw__tls13_quiet(c->rl);
        return;
    }
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
    if (c->server) {
        /* The keylog callback finds the connection through it. */
        if (pthread_once(&conn_ex_once, conn_ex_init) == 0 && conn_ex_index >= 0)
            SSL_set_ex_data(c->ssl, conn_ex_index, c);
        /* OpenSSL must read a record at a time (see the top). */
        SSL_set_read_ahead(c->ssl, 0);
        SSL_set_accept_state(c->ssl);
    } else {
        SSL_set_connect_state(c->ssl);
    }
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
    if (c->failed || c->aborted || (!c->ssl && !c->rl))
        return;
    /* After our lose_connection (close_notify sent) the peer's last records
     * are still read: plaintext sent before its close_notify is delivered. */
    if (c->closed && !c->handshake_done)
        return;
    if (c->rl) {
        if (reading(c))
            own_read(c, data, len);
        note_traffic(c);
        return;
    }
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
    wipe_secrets(c);
    if (c->rl) {
        tw__tls13_cleanup(c->rl);
        tw_free(c->rl);
        c->rl = NULL;
    }
    X509_free(c->peer_cert);
    c->peer_cert = NULL;
    tw_free(c->sni);
    c->sni = NULL;
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
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++)
        total += iov[i].iov_len;
    if (!c->handshake_done) {
        /* One copy of the whole sequence: all or nothing. */
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
    if (c->rl) {
        /* Small pieces coalesce into one record. */
        tw__tls13_cursor cur = {iov, iovcnt, 0, 0};
        if (own_write(c, &cur, total) < 0)
            return TW_ENOTCONN;
    } else {
        for (int i = 0; i < iovcnt; i++)
            if (ssl_write_all(c, iov[i].iov_base, iov[i].iov_len) < 0)
                return TW_ENOTCONN;
    }
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
    return c && c->handshake_done && (c->ssl || c->rl) ? c : NULL;
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
    if (!c)
        return NULL;
    return c->rl ? "TLSv1.3" : SSL_get_version(c->ssl);
}

const char *tw_tls_cipher_name(const tw_transport *t)
{
    tls_conn *c = done_of(t);
    if (!c)
        return NULL;
    return c->rl ? c->cipher_name : SSL_get_cipher_name(c->ssl);
}

const char *tw_tls_server_name(const tw_transport *t)
{
    tls_conn *c = tls_of(t);
    if (!c || !c->server)
        return NULL;
    if (c->rl)
        return c->sni;
    return c->ssl ? SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name) : NULL;
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
    if (!c->handshake_done || (!c->ssl && !c->rl))
        return TW_EAGAIN;
    X509 *x = c->rl ? c->peer_cert : SSL_get1_peer_certificate(c->ssl);
    if (x && c->rl)
        X509_up_ref(x);
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
    return c && (c->rl ? c->reused : SSL_session_reused(c->ssl));
}

bool tw__tls_own_records(const tw_transport *t)
{
    tls_conn *c = tls_of(t);
    return c && c->rl;
}

SSL *tw__tls_ssl(const tw_transport *t)
{
    tls_conn *c = tls_of(t);
    return c ? c->ssl : NULL;
}

bool tw__tls_holds_cipher_ctx(const tw_transport *t)
{
    tls_conn *c = tls_of(t);
    return c && c->rl && tw__tls13_has_cipher_ctx(c->rl);
}

bool tw__tls_keeps_buffers(const tw_transport *t)
{
    tls_conn *c = tls_of(t);
    return c && c->keeps_buffers;
}
