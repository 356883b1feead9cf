/* The ssl: server and tls: client endpoints (endpoint-tls.c): tcp with each
 * connection under TLS (tls.h). */
#ifndef TWINE_NET_ENDPOINT_TLS_H
#define TWINE_NET_ENDPOINT_TLS_H

#include <twine/endpoint.h>
#include <twine/net.h>
#include <twine/tls.h>
#include <twine/wrap.h>

/* Listens as an ssl: spec says, each connection wrapped in TLS around
 * `factory`. With `outer` (haproxy:ssl:, whose PROXY header comes before
 * TLS, in the clear), outer is set to wrap the TLS factory and the port
 * listens with outer instead, so its wrappers sit outside TLS. Returns 0 and
 * *port, or a negative code with *failure. */
int tw__ssl_listen(tw_reactor *r, const tw_endpoint_spec *spec, tw_factory *factory,
                   tw_wrapping_factory *outer, tw_listening_port **port, tw_failure **failure);

/* What a tls: connect hands the connect operation: a factory that builds
 * TLS-wrapped protocols from `user` (or, when user is NULL, from the
 * ready-made protocol, taken over in every case: released if never used).
 * The client context is made on the first call and kept in *ctx_cache (the
 * endpoint's, which drops it when freed), so that later connections of the
 * same endpoint share it: the trust roots are read once and the server's
 * session is resumed.
 * The protocol a connection gets is the one under the TLS wrapper the factory
 * built. Release it with tw__tls_client_release once the connectors
 * are done with the factory; it lives on until its last connection is gone.
 * Returns 0, or a negative code with *failure (the context's, prefixed with
 * "tls: "). */
typedef struct tw__tls_client tw__tls_client;
int tw__tls_client_new(const tw_endpoint_spec *spec, tw_tls_context **ctx_cache, tw_factory *user,
                       tw_protocol *ready_made, tw__tls_client **out, tw_factory **factory,
                       tw_failure **failure);
void tw__tls_client_release(void *client);

#endif
