/* Stream sockets: TCP over IPv4 and IPv6, and Unix sockets (listenTCP,
 * connectTCP, listenUNIX, connectUNIX, adoptStreamPort,
 * adoptStreamConnection). The address family picks the kind: AF_INET and
 * AF_INET6 are TCP, AF_UNIX is a Unix stream socket. Endpoints (endpoint.h)
 * are built on these; most applications use endpoints.
 *
 * Connections made here are tw_transports (transport.h) with the "tcp" or
 * "unix" ops: no allocation per read or write on the steady path (reads land
 * in a per-reactor buffer and data_received gets a slice of it; writes
 * coalesce into one writev). Every open connection and listening port is a
 * reactor handle (reactor.h): stopping the reactor closes them.
 *
 * Everything here runs on the reactor's thread. */
#ifndef TWINE_NET_H
#define TWINE_NET_H

#include <stdbool.h>

#include <twine/deferred.h>
#include <twine/protocol.h>
#include <twine/reactor.h>
#include <twine/transport.h>

/* Read at most this much per read call (the reactor's read buffer). */
#define TW_NET_READ_SIZE (64 * 1024)

/* ---- Listening */

typedef struct tw_listening_port tw_listening_port;

typedef struct tw_listen_options {
    int backlog;   /* 0: 50 (Twisted's default); capped by the kernel's somaxconn */
    unsigned mode; /* Unix file sockets: permission bits; 0: 0666 */
    /* Unix file sockets: take PATH.lock (flock) while listening, and remove
     * a stale socket file left at PATH by a dead process (Twisted's wantPID).
     * With another live listener holding the lock, listen fails with
     * TW_EADDRINUSE. */
    bool lockfile; /* ignored for abstract and unnamed Unix addresses */
} tw_listen_options;

/* Binds addr, listens, and accepts connections for factory: each accepted
 * connection gets factory's build_protocol(peer address); a NULL protocol
 * closes that connection at once. The factory is started (tw_factory_do_start)
 * here and stopped when the port stops. TCP listening sockets get
 * SO_REUSEADDR; an IPv6 one is IPv6-only (so tcp:PORT and tcp6:PORT may
 * coexist). Port 0 picks a free port (tw_listening_port_get_host tells which).
 * opts may be NULL. Returns 0 and *out; TW_EINVAL (bad address or options),
 * TW_ENOMEM, or -errno from socket/bind/listen (TW_EADDRINUSE, TW_EACCES...).
 *
 * Out of descriptors (EMFILE/ENFILE) while accepting: the port keeps
 * listening; it sheds the connections it cannot take (accepts and closes
 * them at once, with a descriptor it keeps in reserve, so peers see a reset
 * instead of a hang), logs that once per shortage at the warning level, and
 * takes connections again as soon as descriptors are free.
 *
 * The port is a reactor handle: the reactor's shutdown closes it (socket,
 * path and lock file; the factory is stopped), but its memory stays the
 * caller's until tw_listening_port_stop, which then only frees it. A port
 * must be stopped before its reactor is freed, unless the shutdown closed
 * it. When the reactor has net hooks (the memory reactor), they take this
 * call. */
int tw_listen_stream(tw_reactor *r, const tw_address *addr, const tw_listen_options *opts,
                     tw_factory *factory, tw_listening_port **out);

/* adoptStreamPort: listens on fd, an already bound and listening stream
 * socket (systemd's sockets). The port works on a duplicate of fd; the
 * caller keeps fd and should close it. Returns as tw_listen_stream, TW_EINVAL
 * when fd is not a listening stream socket. The duplicate shares fd's open
 * file description, so fd becomes non-blocking too. An adopted Unix socket's
 * file is left in place at stop (whoever made it owns it). Never intercepted
 * by net hooks: the descriptor is real whatever the reactor. */
int tw_listen_adopt(tw_reactor *r, int fd, tw_factory *factory, tw_listening_port **out);

/* Where the port listens (the real port when 0 was asked for). */
int tw_listening_port_get_host(const tw_listening_port *port, tw_address *out);

/* stopListening: closes the socket now (a Unix file socket's path and lock
 * file are removed), stops the factory, frees the port, and returns a new
 * deferred (the caller's reference) that has fired with NULL already (the
 * port is closed by then; Twisted's fires later only because its close is
 * deferred); NULL instead when memory for it ran out (the port is stopped and
 * freed all the same). Do not use the port afterwards. Connections already
 * accepted are not touched. A NULL port gives NULL. */
tw_deferred *tw_listening_port_stop(tw_listening_port *port);

/* ---- Connecting */

typedef struct tw_connect_options {
    double timeout;            /* seconds to wait for the connection; 0: 30 */
    const tw_address *bind_to; /* local address to bind first (bindAddress); NULL: any */
} tw_connect_options;

typedef enum tw_connector_state {
    TW_CONNECTOR_DISCONNECTED, /* not connecting, not connected */
    TW_CONNECTOR_CONNECTING,
    TW_CONNECTOR_CONNECTED,
} tw_connector_state;

/* connectTCP / connectUNIX: starts connecting to addr for factory, and
 * returns the connector (Twisted's IConnector) that keeps doing so:
 * started_connecting runs first (before this returns), then either the
 * connection is made (build_protocol(addr), connection_made...) and later
 * lost (client_connection_lost), or it fails (client_connection_failed:
 * refused, unreachable, TW_ETIMEDOUT after the timeout, build_protocol
 * refusing: TW_ECONNABORTED). The factory is started for each attempt and
 * stopped after it ends. opts may be NULL. Returns 0 and *out, or TW_EINVAL /
 * TW_ENOMEM / -errno for an attempt that could not even start (no callback
 * runs then). Errors the kernel reports later (ECONNREFUSED...) arrive
 * through client_connection_failed, never from this call; so do errors
 * connect() gives at once (ECONNREFUSED on a Unix socket; EAGAIN when a Unix
 * listener's backlog is full), from the reactor's next iteration. An attempt
 * still connecting when the reactor shuts down fails with TW_ECONNLOST. If
 * started_connecting freed the connector, this returns 0 with *out NULL.
 * opts->timeout may be INFINITY (no timeout). */
int tw_connect_stream(tw_reactor *r, const tw_address *addr, const tw_connect_options *opts,
                      tw_factory *factory, tw_connector **out);

/* IConnector.connect: starts another attempt with the same address, options
 * and factory (what a reconnecting factory calls from
 * client_connection_lost/failed). Returns 0; TW_EBUSY when connecting or
 * connected already; TW_ENOMEM / -errno as above. */
int tw_connector_connect(tw_connector *c);
/* stopConnecting: abandons the attempt in progress (client_connection_failed
 * with TW_ECANCELED). Returns 0, or TW_ENOTCONN when not connecting. */
int tw_connector_stop_connecting(tw_connector *c);
/* disconnect: stops connecting, or loses the connection (lose_connection). */
void tw_connector_disconnect(tw_connector *c);
tw_connector_state tw_connector_get_state(const tw_connector *c);
/* getDestination: the address given to tw_connect_stream. */
const tw_address *tw_connector_get_destination(const tw_connector *c);
/* The protocol of the current connection (CONNECTED), or NULL. */
tw_protocol *tw_connector_protocol(const tw_connector *c);
/* Frees the connector: an attempt in progress is abandoned without calling
 * client_connection_failed; a live connection is left alone (it runs to its
 * end, and client_connection_lost is then not called). The factory, if this
 * connector's attempt started it, is still stopped (tw_factory_do_stop) once
 * no attempt or connection of the connector is left. Safe from inside the
 * factory's callbacks about this connector. NULL is ignored. */
void tw_connector_free(tw_connector *c);

/* ---- Adopting a connected socket (adoptStreamConnection) */

/* Wraps fd, a connected stream socket, in a transport for the protocol
 * factory builds (build_protocol(peer)); connection_made runs before this
 * returns. The transport works on a duplicate of fd; the caller keeps fd.
 * Returns 0 and, if out is not NULL, the protocol (owned by the transport);
 * TW_ECONNABORTED when build_protocol refused; TW_EINVAL (not a connected
 * stream socket), TW_ENOMEM or -errno. */
int tw_connection_adopt(tw_reactor *r, int fd, tw_factory *factory, tw_protocol **out);

#endif
