/* The stdio: server endpoint (endpoint-stdio.c): one protocol over this
 * program's standard input and output (process.h's tw_stdio_new). */
#ifndef TWINE_NET_ENDPOINT_STDIO_H
#define TWINE_NET_ENDPOINT_STDIO_H

#include <twine/endpoint.h>
#include <twine/net.h>

/* Builds one protocol from factory (started now, stopped with the port) and
 * connects it to fds 0 and 1. The port's stop loses that connection (if it
 * is still up) and frees the port. Returns 0 and *port, or a negative code
 * with *failure. */
int tw__stdio_listen(tw_reactor *r, const tw_endpoint_spec *spec, tw_factory *factory,
                     tw_listening_port **port, tw_failure **failure);

#endif
