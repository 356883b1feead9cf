/* The transport layer's insides, shared by src/net/ and by the testing kit's
 * memory reactor (src/testing/), which stands in for real sockets.
 *
 * Listening ports and connectors are polymorphic: net.h's public functions
 * dispatch through these ops, so the memory reactor can hand out fake ports
 * and connectors that record what is done to them, and code under test
 * (endpoints, reconnecting factories, client services) cannot tell. */
#ifndef TWINE_SRC_NET_INTERNAL_H
#define TWINE_SRC_NET_INTERNAL_H

#include <twine/net.h>

struct tw__port_ops {
    int (*get_host)(const tw_listening_port *port, tw_address *out);
    /* Stops listening and frees the port (see tw_listening_port_stop). */
    void (*stop)(tw_listening_port *port);
};

/* Implementations embed this as their first member. */
struct tw_listening_port {
    const struct tw__port_ops *ops;
};

struct tw__connector_ops {
    int (*connect)(tw_connector *c);
    int (*stop_connecting)(tw_connector *c);
    void (*disconnect)(tw_connector *c);
    tw_connector_state (*get_state)(const tw_connector *c);
    const tw_address *(*get_destination)(const tw_connector *c);
    tw_protocol *(*protocol)(const tw_connector *c);
    void (*free)(tw_connector *c);
};

/* Implementations embed this as their first member. connected_hook, when
 * set, runs after a connection this connector made has had its
 * connection_made return (endpoints fire their deferred from it); the hook
 * may free the connector. */
struct tw_connector {
    const struct tw__connector_ops *ops;
    void (*connected_hook)(tw_connector *c, tw_protocol *p, void *arg);
    void *connected_arg;
};

/* ---- Connections (stream.c), for ports, connectors and adopt */

/* Makes a "tcp" or "unix" transport (by fd's family) over fd, a connected
 * stream socket, which it takes over (sets it non-blocking and close-on-exec;
 * closes it on any error). Registers the reactor handle, starts reading, and
 * calls tw_protocol_make_connection(p) before returning. The transport owns
 * p from the call on, whatever it returns (on error p is released without
 * connection_made). Returns 0 and, if out is not NULL, the transport
 * (borrowed: the connection holds its only reference); TW_ENOMEM or -errno. */
int tw__stream_open(tw_reactor *r, int fd, tw_protocol *p, tw_transport **out);

/* Runs fn(arg, reason) once, after the connection's protocol had
 * connection_lost(reason) and before it is released (a connector reports
 * client_connection_lost from it). One hook per transport (a second call
 * replaces the first); t must be a stream transport not yet lost (a loss
 * already decided but not yet delivered is fine: connection_made may have
 * closed it). Returns 0, or TW_ENOMEM with no hook set: the hook lives in
 * the connection's rarely used state, which is allocated on first use so
 * that an idle connection costs only its struct. */
int tw__stream_set_lost_hook(tw_transport *t, void (*fn)(void *arg, tw_failure *reason), void *arg);

/* ---- Interception (the memory reactor). When a reactor has hooks set,
 * tw_listen_stream, tw_listen_adopt and tw_connect_stream on it call these
 * instead of opening sockets, with the same arguments and contract. */
struct tw__net_hooks {
    int (*listen)(void *arg, tw_reactor *r, const tw_address *addr, const tw_listen_options *opts,
                  tw_factory *factory, tw_listening_port **out);
    int (*connect)(void *arg, tw_reactor *r, const tw_address *addr, const tw_connect_options *opts,
                   tw_factory *factory, tw_connector **out);
    void *arg;
};

/* The hooks set on r, or NULL (defined in the reactor, which only stores
 * them). */
const struct tw__net_hooks *tw__reactor_net_hooks(const tw_reactor *r);
void tw__reactor_set_net_hooks(tw_reactor *r, const struct tw__net_hooks *hooks);

#endif
