/* Port forwarding (twisted.protocols.portforward: ProxyFactory, ProxyServer,
 * ProxyClient): a TCP proxy that relays bytes both ways between a connection
 * it accepts and one it makes, with flow control both ways. The relay
 * underneath is public too, for protocols that first decide where to connect
 * (the SOCKS server, socks.h, is one).
 *
 * ---- What a relay does
 * It starts on an inbound connection that is up: it pauses reading it and
 * connects out through an endpoint (the connection attempt of
 * tw_endpoint_connect_protocol: resolution, several addresses, timeout, as
 * the endpoint says). Bytes the inbound protocol still receives while the
 * attempt runs (what arrived in the same read as a SOCKS request, or what a
 * transport had buffered) are held, at most max_pending of them; more closes
 * the inbound connection (logged). Once connected:
 *   - held bytes are written out first, then every byte read on one side is
 *     written to the other, in order;
 *   - each connection is registered as the other's streaming producer, so a
 *     side whose write buffer passes its high-water mark pauses reading the
 *     other side until it has drained to its low-water mark: memory stays
 *     bounded (about one high-water mark plus one read per direction)
 *     however slow either peer reads;
 *   - end of file on one side half-closes the other (lose_write_connection,
 *     after what is queued; a transport that cannot half-close is closed
 *     instead), and the connection whose both halves are shut ends. This is
 *     one difference from Twisted, whose Proxy is not half-closeable: a
 *     client that shuts its sending side and waits for the answer gets it;
 *   - either connection ending (an error, or the close above) closes the
 *     other with lose_connection, which flushes what was queued for it, as
 *     Twisted's Proxy.connectionLost does.
 * A failed attempt closes the inbound connection (logged with the reason,
 * unless the owner's connect_failed hook takes over); the inbound connection
 * ending while the attempt runs abandons the attempt.
 *
 * Everything here runs on the reactor's thread. Log namespace
 * "twine.portforward". */
#ifndef TWINE_PORTFORWARD_H
#define TWINE_PORTFORWARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <twine/endpoint.h>
#include <twine/failure.h>
#include <twine/protocol.h>
#include <twine/transport.h>

/* Bytes held from the inbound connection while connecting, by default. */
#define TW_RELAY_MAX_PENDING (64 * 1024)

typedef struct tw_relay tw_relay;

/* Counters a relay adds to as it goes (a factory sums its relays in one). */
typedef struct tw_relay_stats {
    uint64_t relays;     /* relays started */
    uint64_t connected;  /* outbound connections made */
    uint64_t failed;     /* attempts that failed (not those abandoned) */
    uint64_t active;     /* relays not yet freed */
    uint64_t bytes_in;   /* inbound -> outbound, held bytes included */
    uint64_t bytes_out;  /* outbound -> inbound */
    uint64_t pauses_in;  /* the inbound side paused: the outbound's buffer was full */
    uint64_t pauses_out; /* the outbound side paused: the inbound's buffer was full */
    size_t max_buffered; /* the largest write buffer seen after a relayed write */
} tw_relay_stats;

/* What the owner of a relay hears. Each member may be NULL. */
typedef struct tw_relay_hooks {
    /* The outbound connection is up (its connection_made ran); relaying
     * starts when this returns, so what it writes on the inbound transport
     * (tw_relay_inbound(relay)->transport) goes ahead of relayed bytes. */
    void (*connected)(tw_relay *relay, tw_transport *outbound, void *arg);
    /* The attempt failed (reason borrowed); the inbound connection is closed
     * with lose_connection when this returns, so what it writes is flushed
     * first. NULL: the failure is logged (warn). Not called for an attempt
     * abandoned because the inbound connection ended. */
    void (*connect_failed)(tw_relay *relay, tw_failure *reason, void *arg);
    /* The relay is being freed (both connections are over): release arg. */
    void (*release)(void *arg);
} tw_relay_hooks;

typedef struct tw_relay_options {
    size_t max_pending;    /* 0: TW_RELAY_MAX_PENDING */
    tw_relay_stats *stats; /* counters to add to, or NULL; must live until release */
    const char *name;      /* where it connects, for log lines (copied); NULL: "peer" */
} tw_relay_options;

/* Starts a relay for `inbound`, a protocol whose connection is up, and the
 * connection `ep` makes (ep is borrowed: it may be freed when this returns;
 * the attempt carries on). The inbound protocol keeps its own ops and hands
 * its events to the relay from them, as written below; it must not write on
 * its transport while the relay runs, except from the connected and
 * connect_failed hooks. opts may be NULL.
 *
 * Returns 0 and *out (set before anything else happens: the hooks may run
 * from inside this call, when the endpoint fails at once, as for a
 * description it cannot connect); TW_EINVAL (NULL inbound, ep or out, or no
 * connection); TW_ENOMEM (nothing started, no hook called, the inbound
 * connection left as it was). */
int tw_relay_start(tw_protocol *inbound, tw_endpoint *ep, const tw_relay_hooks *hooks, void *arg,
                   const tw_relay_options *opts, tw_relay **out);

/* What the inbound protocol's ops call, once the relay is started: */
/* data_received: relayed (or held while connecting). */
void tw_relay_data_received(tw_relay *relay, const char *data, size_t len);
/* read_connection_lost (the inbound peer's end of file): half-closes the
 * outbound connection (once it is made). The inbound protocol must set
 * read_connection_lost for half-closing to work at all. */
void tw_relay_read_connection_lost(tw_relay *relay);
/* connection_lost: abandons the attempt or closes the outbound connection.
 * Call it exactly once; the relay must not be used after it (it frees
 * itself once the outbound connection is over too). */
void tw_relay_connection_lost(tw_relay *relay);

/* The inbound protocol (NULL once tw_relay_connection_lost was called) and
 * the outbound connection's transport (NULL before it is made). */
tw_protocol *tw_relay_inbound(const tw_relay *relay);
tw_transport *tw_relay_outbound(const tw_relay *relay);

/* ---- ProxyFactory
 *
 * A factory whose every connection is relayed to a new connection made
 * through one endpoint (Twisted's ProxyFactory(host, port), with any client
 * endpoint: "tcp:example.org:80", "unix:/run/app.sock", "tls:...").
 *
 * Lifetime: reference counted. tw_portforward_factory_free drops the owner's
 * reference; every connection it built holds one until its relay is over, so
 * stopping the listening ports and freeing the factory lets the connections
 * in progress run to their end. */
typedef struct tw_portforward_factory tw_portforward_factory;

/* Makes the factory, taking `to` over on success (freed with the factory;
 * the caller keeps it on error). opts may be NULL (its stats member is
 * ignored: the factory keeps its own). Returns 0 and *out, TW_EINVAL (NULL to
 * or out) or TW_ENOMEM. */
int tw_portforward_factory_new(tw_endpoint *to, const tw_relay_options *opts,
                               tw_portforward_factory **out);

/* Give this to a port or endpoint. */
tw_factory *tw_portforward_factory_base(tw_portforward_factory *pf);

/* Counters summed over its relays, live. */
const tw_relay_stats *tw_portforward_factory_stats(const tw_portforward_factory *pf);

/* Drops the owner's reference (see Lifetime). NULL is ignored. */
void tw_portforward_factory_free(tw_portforward_factory *pf);

#endif
