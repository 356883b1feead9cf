/* Shared between the TLS context (context.c) and connections (tls.c). */
#ifndef TWINE_TLS_INTERNAL_H
#define TWINE_TLS_INTERNAL_H

#include <openssl/ssl.h>

#include <twine/tls.h>

/* One generation of a context's OpenSSL state: the SSL_CTX new connections
 * are made from and, on servers, one SSL_CTX per SNI entry. Reload makes a
 * new generation; connections keep a reference to the one they started
 * with (the servername callback reads it during their handshake). */
typedef struct tw__tls_gen tw__tls_gen;

/* Makes the SSL of a new connection (server or client as the context is),
 * with the hostname to verify and send (clients; NULL: the context's). On
 * success *gen holds a generation reference for tw__tls_gen_unref. Returns
 * NULL when out of memory or when OpenSSL refuses. */
SSL *tw__tls_context_new_ssl(tw_tls_context *ctx, const char *hostname, tw__tls_gen **gen);
void tw__tls_gen_unref(tw__tls_gen *gen);

bool tw__tls_context_is_server(const tw_tls_context *ctx);
double tw__tls_context_handshake_timeout(const tw_tls_context *ctx);

/* Formats OpenSSL's error queue (oldest first, emptied) after `prefix`
 * into buf: "prefix: reason". */
void tw__tls_error_text(char *buf, size_t size, const char *prefix);

/* From the server contexts' keylog callback: one of the application
 * traffic secrets (CLIENT_ or SERVER_TRAFFIC_SECRET_0) of connection s. */
void tw__tls_conn_secret(const SSL *s, bool client, const uint8_t *secret, size_t len);

/* For tests and benchmarks: whether server connections that complete a TLS
 * 1.3 handshake run the record layer themselves and free their SSL (on by
 * default). Read when a handshake completes. */
void tw__tls_set_own_record_layer(bool on);

/* For tests: the TLS connection under t runs its records itself (its SSL
 * is freed). */
bool tw__tls_own_records(const tw_transport *t);

/* For tests: the connection's SSL (NULL once freed). */
SSL *tw__tls_ssl(const tw_transport *t);

/* For tests: the connection (own record layer) holds cipher contexts. */
bool tw__tls_holds_cipher_ctx(const tw_transport *t);

/* For tests: the TLS connection under t resumed a session. */
bool tw__tls_session_reused(const tw_transport *t);

/* For tests: the TLS connection under t is busy, so it keeps OpenSSL's
 * buffers between records (see tls.c). */
bool tw__tls_keeps_buffers(const tw_transport *t);

#endif
