/* TLS over any transport, with OpenSSL 3 (twisted.protocols.tls'
 * TLSMemoryBIOProtocol, twisted.internet.ssl's context factories).
 *
 * TLS is a protocol wrapper (wrap.h): OpenSSL runs over a BIO of ours between
 * the real transport (TCP, Unix, a pipe, another TLS connection) and the
 * application's protocol, whose transport is the wrapper. So TLS works on any
 * tw_transport, and a live connection can switch to it (tw_tls_start: SMTP
 * STARTTLS, IMAP, FTP AUTH TLS).
 *
 * ---- A connection
 * - The application's protocol gets connection_made at once (as in Twisted:
 *   before the handshake); what it writes before the handshake completes is
 *   queued and sent, encrypted, after. handshake_completed (protocol.h) runs
 *   once the handshake is done; then data_received gets the plaintext.
 * - lose_connection: flush, send close_notify, then close the transport
 *   under. abort_connection: close at once, no close_notify.
 * - connection_lost's reason: TW_ECONNDONE when the peer sent close_notify
 *   (or we closed); TW_ECONNLOST with "closed without close_notify" when the
 *   peer's transport ended without it (plaintext delivered before it is never
 *   lost); TW_ETLSVERIFY when the peer's certificate was refused, with
 *   OpenSSL's reason in the message ("certificate verify failed: hostname
 *   mismatch", "... certificate has expired", "... unable to get local issuer
 *   certificate"); TW_ETLS for any other TLS failure ("no protocols
 *   available", "wrong version number", "handshake timed out", a
 *   renegotiation attempt); or what the transport under reported.
 * - Flow control passes through: the TLS transport's write buffer is its own
 *   queue plus the transport under's; its producer is paused when the
 *   transport under is above its high-water mark; pausing the TLS transport
 *   pauses the transport under (stops reading), and the reverse.
 * - A handshake that does not complete within the context's
 *   handshake_timeout (default 30 s) fails the connection (TW_ETLS,
 *   "handshake timed out").
 * - Renegotiation is refused (TLS 1.3 has none; for 1.2 it is disabled and a
 *   peer's request closes the connection).
 * - Memory: OpenSSL's read and write buffers (about 17 KB each) are released
 *   whenever they drain, so an idle connection holds none; a busy one (32
 *   reads and writes within a second) keeps them until a second passes with
 *   less traffic. What stays is OpenSSL's own per-connection state, about
 *   14 KB for a TLS 1.3 connection; but a TLS 1.3 server connection runs the
 *   record layer itself once the handshake is done (with OpenSSL's ciphers)
 *   and frees OpenSSL's state, keeping its keys (a few hundred bytes) and
 *   cipher contexts only while busy (docs/benchmarks.md). It stays on
 *   OpenSSL's when a client negotiated max_fragment_length. It sends no
 *   record padding: a RecordPadding set in openssl.cnf applies to the
 *   handshake's records only (OpenSSL 3.0 has no call to read it back).
 *
 * Everything here runs on the connection's reactor thread, except contexts,
 * which are immutable once made (reload swaps them atomically) and may be
 * shared by connections on several reactors. */
#ifndef TWINE_TLS_H
#define TWINE_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <twine/failure.h>
#include <twine/protocol.h>
#include <twine/transport.h>
#include <twine/wrap.h>

/* ---- Contexts (CertificateOptions): what connections made from them do.
 * Reference counted; a connection holds a reference for its life. */
typedef struct tw_tls_context tw_tls_context;

typedef enum tw_tls_version {
    TW_TLS_DEFAULT = 0, /* TLS 1.2 as the minimum; the highest OpenSSL has as the maximum */
    TW_TLS_1_0 = 0x0301,
    TW_TLS_1_1 = 0x0302,
    TW_TLS_1_2 = 0x0303,
    TW_TLS_1_3 = 0x0304,
} tw_tls_version;

/* NULL-terminated lists of strings. */
typedef const char *const *tw_tls_strings;

typedef struct tw_tls_server_options {
    const char *cert_file;        /* PEM: the certificate, then its chain. Required. */
    const char *key_file;         /* PEM: its private key. Required. */
    const char *extra_chain_file; /* PEM: more chain certificates (extraCertChain); or NULL */
    tw_tls_version min_version;   /* default TLS 1.2 */
    tw_tls_version max_version;   /* default: the highest */
    tw_tls_strings alpn;          /* protocols we accept, in our order of preference; or NULL */
    /* Client certificates: ask for one and verify it against ca_file; with
     * require_client_cert a client without one is refused. */
    const char *client_ca_file;
    bool require_client_cert;
    bool no_session_tickets;  /* resumption by tickets is on unless this is set */
    double handshake_timeout; /* seconds; 0: 30 */
} tw_tls_server_options;

typedef struct tw_tls_client_options {
    /* The name the server's certificate must carry, also sent as SNI. NULL:
     * the endpoint's host (tls: endpoints) — required when verifying. */
    const char *hostname;
    const char *ca_file;              /* trust roots (trustRoots): a PEM file ... */
    const char *ca_dir;               /* ... or a hashed directory; both NULL: the system's store */
    const char *cert_file, *key_file; /* a client certificate, or NULL */
    tw_tls_strings alpn;              /* protocols we offer, in order; or NULL */
    tw_tls_version min_version, max_version;
    /* Accept any certificate from anyone. Never the default; logged at the
     * warning level each time a context is made with it. */
    bool insecure_skip_verify;
    double handshake_timeout; /* seconds; 0: 30 */
} tw_tls_client_options;

/* Make a context. Returns 0 and *out; TW_EINVAL for missing or unreadable
 * files, a key that does not match its certificate, bad versions or an empty
 * ALPN entry (the failure, stored in *failure when failure is not NULL, says
 * which and OpenSSL's reason: "cannot read certificate 'x.pem': No such file
 * or directory"); TW_ENOMEM. Strings are copied. */
int tw_tls_server_context_new(const tw_tls_server_options *opts, tw_tls_context **out,
                              tw_failure **failure);
int tw_tls_client_context_new(const tw_tls_client_options *opts, tw_tls_context **out,
                              tw_failure **failure);

tw_tls_context *tw_tls_context_ref(tw_tls_context *ctx);
void tw_tls_context_unref(tw_tls_context *ctx); /* NULL is ignored */

/* Server contexts: another certificate, chosen when the client's SNI
 * matches `name` (exactly, or "*.example.com" for one label). Connections
 * without SNI, or with a name nothing matches, get the default certificate.
 * Returns 0, TW_EINVAL (+ failure) or TW_ENOMEM. Only before the context is
 * used by a connection (TW_EBUSY after). */
int tw_tls_context_add_sni(tw_tls_context *ctx, const char *name, const char *cert_file,
                           const char *key_file, tw_failure **failure);

/* Re-reads every certificate and key file of a server context (after a
 * renewal): connections made from then on use the new ones; live ones keep
 * theirs. On error (TW_EINVAL + failure) nothing changes. */
int tw_tls_context_reload(tw_tls_context *ctx, tw_failure **failure);

/* ---- Connections */

/* A wrapping factory (wrap.h) that puts TLS under each protocol `wrapped`
 * builds: as the server or the client, as ctx says. Embed it or use it as is;
 * give &tf->wf.base to a port or a connector. hostname (client contexts
 * only, may be NULL) overrides the context's for the name to verify and
 * send. tw_tls_factory_init takes a reference to ctx; tw_tls_factory_cleanup
 * drops it, after the last connection using the factory is gone: a factory
 * that may outlive its port is kept by its connections with
 * tw_wrapping_factory_keep(&tf->wf, release) (wrap.h), release calling
 * cleanup and freeing it (the ssl: and tls: endpoints do). */
typedef struct tw_tls_factory {
    tw_wrapping_factory wf;
    /* Private. */
    tw_tls_context *ctx;
    char *hostname;
} tw_tls_factory;

int tw_tls_factory_init(tw_tls_factory *tf, tw_tls_context *ctx, tw_factory *wrapped,
                        const char *hostname);
void tw_tls_factory_cleanup(tw_tls_factory *tf);

/* startTLS: puts TLS under p on its live connection, now. What p writes from
 * then on is encrypted; bytes already queued on the transport go first, in
 * the clear (write the STARTTLS reply, then call this). Bytes the transport
 * under already delivered are not re-read as TLS. p's transport becomes the
 * TLS transport (p->transport changes); the side is ctx's. Returns 0;
 * TW_EINVAL (no connection, p is TLS already); TW_ENOMEM. */
int tw_tls_start(tw_protocol *p, tw_tls_context *ctx, const char *hostname);

/* ---- What a protocol can ask of its (TLS) transport. t is a protocol's
 * transport; these return TW_EINVAL (or false / NULL) for a transport that
 * is not TLS, and TW_EAGAIN before the handshake completed. */

bool tw_tls_is_tls(const tw_transport *t);
bool tw_tls_handshake_done(const tw_transport *t);

/* The ALPN protocol agreed on ("h2", "http/1.1"), or NULL (none). Borrowed
 * until the connection is lost. */
const char *tw_tls_negotiated_protocol(const tw_transport *t);

/* "TLSv1.3", "TLSv1.2"... and the cipher's OpenSSL name; NULL when not TLS
 * or before the handshake. Static or borrowed until the connection is lost. */
const char *tw_tls_version_name(const tw_transport *t);
const char *tw_tls_cipher_name(const tw_transport *t);

/* The SNI name the client sent (server side), or NULL. Borrowed. */
const char *tw_tls_server_name(const tw_transport *t);

/* The peer's certificate, as text. */
typedef struct tw_tls_peer_certificate {
    char subject[256]; /* one line, RFC 2253: "CN=example.com,O=Example" */
    char issuer[256];
    int64_t not_before, not_after; /* seconds since the epoch (UTC) */
    uint8_t sha256[32];            /* fingerprint of the DER encoding */
} tw_tls_peer_certificate;

/* Returns 0 and *out; TW_ENOENT when the peer sent none; TW_EAGAIN before
 * the handshake; TW_EINVAL. */
int tw_tls_get_peer_certificate(const tw_transport *t, tw_tls_peer_certificate *out);

#endif
