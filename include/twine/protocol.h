/* Protocols and factories (twisted.internet.protocol).
 *
 * A protocol reacts to the events of one connection through its ops table; a
 * factory builds one protocol per connection. Embed tw_protocol as the FIRST
 * member of your protocol's struct (the default factory allocates your whole
 * struct and hands out a pointer to it) and cast back in the ops:
 *
 *     struct echo { tw_protocol base; size_t bytes; };
 *     static void echo_data(tw_protocol *p, const char *data, size_t len)
 *     {
 *         tw_transport_write(p->transport, data, len);
 *         ((struct echo *)p)->bytes += len;
 *     }
 *     static const tw_protocol_ops echo_ops = {.data_received = echo_data};
 *     tw_factory f;
 *     tw_factory_init(&f, NULL, &echo_ops, sizeof(struct echo), NULL);
 *
 * ---- The order of events on one connection
 *   build_protocol → (transport set) connection_made → data_received* →
 *   [read_connection_lost] [write_connection_lost] → connection_lost →
 *   (transport cleared) free
 * connection_made and connection_lost are called exactly once each for a
 * protocol that was given a connection; free exactly once for every protocol
 * a transport took (also one whose connection never got made: refused, or the
 * connect attempt failed after the protocol was built). Nothing is delivered
 * after connection_lost. Any op may close the transport, pause it, or write;
 * see transport.h for when connection_lost then runs. */
#ifndef TWINE_PROTOCOL_H
#define TWINE_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>

#include <twine/failure.h>
#include <twine/transport.h>

typedef struct tw_factory tw_factory;
typedef struct tw_connector tw_connector; /* net.h */

typedef struct tw_protocol_ops {
    /* The connection is up; p->transport is set. May be NULL. */
    void (*connection_made)(tw_protocol *p);
    /* Bytes read, borrowed for the call (copy what must outlive it). Chunk
     * boundaries mean nothing: a protocol must accept any split. May be
     * NULL (the bytes are dropped). */
    void (*data_received)(tw_protocol *p, const char *data, size_t len);
    /* The connection is gone; reason is borrowed (tw_failure_ref to keep
     * it): TW_ECONNDONE for a clean close by either side, TW_ECONNABORTED for
     * abort_connection, otherwise why (-ECONNRESET, TW_ETIMEDOUT, ...).
     * p->transport is still set during the call. May be NULL. */
    void (*connection_lost)(tw_protocol *p, tw_failure *reason);
    /* IHalfCloseableProtocol. When read_connection_lost is set, the peer's
     * end of file calls it and the connection stays open for writing (call
     * lose_connection when done); when NULL, end of file closes the
     * connection (connection_lost with TW_ECONNDONE). write_connection_lost
     * runs once lose_write_connection has shut the write side down. When both
     * halves are closed the connection is lost. */
    void (*read_connection_lost)(tw_protocol *p);
    void (*write_connection_lost)(tw_protocol *p);
    /* IFileDescriptorReceiver (Unix sockets): a descriptor that arrived with
     * the bytes delivered next (or already delivered); the protocol owns it.
     * NULL: received descriptors are closed. */
    void (*fd_received)(tw_protocol *p, int fd);
    /* IHandshakeListener (TLS, tls.h): the TLS handshake of the connection
     * under this protocol has completed; what it negotiated can be read now.
     * Called once, before any data_received of the encrypted stream. May be
     * NULL. */
    void (*handshake_completed)(tw_protocol *p);
    /* The destructor: releases what the protocol owns, once, after
     * connection_lost returned (or instead of it, for a protocol whose
     * connection never got made). For a protocol the default builder made,
     * its memory is then freed by the library: free must not free p itself.
     * For any other protocol free releases p's memory too, if it should be
     * released. May be NULL. */
    void (*free)(tw_protocol *p);
} tw_protocol_ops;

struct tw_protocol {
    const tw_protocol_ops *ops;
    tw_transport *transport; /* set from connection_made until free; else NULL */
    tw_factory *factory;     /* the factory that built it, or NULL */
    /* Private. */
    bool default_built; /* memory came from tw_factory_build_default */
};

/* For protocols made by hand (not by the default builder): sets ops and
 * clears the rest. */
void tw_protocol_init(tw_protocol *p, const tw_protocol_ops *ops);

/* ---- Calls a transport makes on its protocol (implementations of
 * tw_transport use these, never the ops directly, so NULL ops and the
 * ordering rules are handled in one place). */

/* Sets p->transport = t and calls connection_made. */
void tw_protocol_make_connection(tw_protocol *p, tw_transport *t);
void tw_protocol_data_received(tw_protocol *p, const char *data, size_t len);
/* Calls connection_lost(reason) (reason borrowed). */
void tw_protocol_connection_lost(tw_protocol *p, tw_failure *reason);
/* Clears p->transport, calls free, and then frees the memory of a
 * default-built protocol (a hand-made one's free may release p itself, so p
 * is not touched after it). NULL is ignored. */
void tw_protocol_release(tw_protocol *p);

/* ---- Factories */

typedef struct tw_factory_ops {
    /* Makes the protocol for a new connection from (server) or to (client)
     * `addr`; NULL refuses it (the connection is closed at once). NULL op:
     * tw_factory_build_default. */
    tw_protocol *(*build_protocol)(tw_factory *f, const tw_address *addr);
    /* Called once before the first port or connector starts using the
     * factory and once after the last one stops (doStart/doStop). May be
     * NULL. */
    void (*start_factory)(tw_factory *f);
    void (*stop_factory)(tw_factory *f);
    /* ClientFactory, each may be NULL. reason is borrowed. */
    void (*started_connecting)(tw_factory *f, tw_connector *c);
    void (*client_connection_failed)(tw_factory *f, tw_connector *c, tw_failure *reason);
    void (*client_connection_lost)(tw_factory *f, tw_connector *c, tw_failure *reason);
} tw_factory_ops;

/* Embed it (or use it as is) and tw_factory_init it. A factory must outlive
 * every port, connector and protocol using it. */
struct tw_factory {
    const tw_factory_ops *ops;
    const tw_protocol_ops *protocol_ops; /* what the default builder builds */
    size_t protocol_size;                /* its size, >= sizeof(tw_protocol) */
    void *data;                          /* the application's (QOTD's quote) */
    /* Private. */
    unsigned users; /* ports and connectors started and not yet stopped */
};

/* ops may be NULL (every op defaults). protocol_ops and protocol_size are
 * what the default builder uses (protocol_size 0 means sizeof(tw_protocol)). */
void tw_factory_init(tw_factory *f, const tw_factory_ops *ops, const tw_protocol_ops *protocol_ops,
                     size_t protocol_size, void *data);

/* Factory.buildProtocol's default: a zeroed f->protocol_size block with
 * ops = f->protocol_ops and factory = f; NULL when out of memory (the
 * connection is then refused) or when protocol_ops is NULL. */
tw_protocol *tw_factory_build_default(tw_factory *f, const tw_address *addr);

/* Calls the factory's build_protocol (or the default) and sets the
 * protocol's factory if the builder left it NULL. */
tw_protocol *tw_factory_build_protocol(tw_factory *f, const tw_address *addr);

/* doStart / doStop: counted, so start_factory runs on the first start and
 * stop_factory on the matching last stop. A stop without a start is ignored
 * (and logged). */
void tw_factory_do_start(tw_factory *f);
void tw_factory_do_stop(tw_factory *f);

#endif
