/* The haproxy: server endpoint (endpoint-haproxy.c): the inner endpoint's
 * port, each connection first reading a PROXY protocol header. */
#ifndef TWINE_NET_ENDPOINT_HAPROXY_H
#define TWINE_NET_ENDPOINT_HAPROXY_H

#include <twine/endpoint.h>
#include <twine/net.h>

/* Seconds a connection may take to send its whole PROXY header. */
#define TW_HAPROXY_HEADER_TIMEOUT 10.0

/* Listens on spec->inner with a factory that wraps `factory` (see
 * endpoint.h). Returns 0 and *port, or a negative code with *failure. */
int tw__haproxy_listen(tw_reactor *r, const tw_endpoint_spec *spec, tw_factory *factory,
                       tw_listening_port **port, tw_failure **failure);

/* endpoints.c's listen for any server spec (haproxy's inner one included). */
int tw__endpoint_listen_spec(tw_reactor *r, const tw_endpoint_spec *spec, tw_factory *factory,
                             tw_listening_port **port, tw_failure **failure);

#endif
