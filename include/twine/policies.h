/* Policies for any protocol (twisted.protocols.policies): idle timeouts,
 * bandwidth throttling and connection limits. All but the timeout mixin are
 * wrapping factories (wrap.h): give &f->wf.base to a port or endpoint
 * instead of the application's factory, which they wrap.
 *
 * Every limit below is a documented default the application may change by
 * setting the field (before the factory is used, unless said otherwise).
 * Crossing one is logged (namespace "twine.policies", info level: under a
 * flood a warning per connection would be noise) with the limit's name, its
 * value and the peer; what was already accepted is never dropped.
 *
 * Everything here runs on the reactor's thread. Time comes from the tw_clock
 * given at init (tw_reactor_clock(r), or a manual clock in tests). */
#ifndef TWINE_POLICIES_H
#define TWINE_POLICIES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <twine/clock.h>
#include <twine/protocol.h>
#include <twine/wrap.h>

/* ---- Idle timeout for a protocol of your own (TimeoutMixin)
 *
 * Embed a tw_timeout in the protocol, init it, set a period when the
 * connection is made, call tw_timeout_reset on traffic, and tw_timeout_set(t,
 * 0) in connection_lost (or the timer outlives the protocol):
 *
 *     struct chat { tw_protocol base; tw_timeout idle; };
 *     made:  tw_timeout_init(&c->idle, clock, &c->base, NULL);
 *            tw_timeout_set(&c->idle, 60);
 *     data:  tw_timeout_reset(&c->idle); ...
 *     lost:  tw_timeout_set(&c->idle, 0);
 *
 * The timer is an intrusive tw_timer: resetting it (on every read) allocates
 * nothing and makes no syscall. Once it has fired the timeout is off (resets
 * do nothing) until the next tw_timeout_set, as in Twisted. */
typedef struct tw_timeout tw_timeout;
/* timeoutConnection: runs when the period passed without a reset. */
typedef void (*tw_timeout_fn)(tw_timeout *t);

struct tw_timeout {
    tw_protocol *protocol; /* whose transport the default closes */
    tw_timeout_fn timeout_connection;
    /* Private. */
    tw_timer timer;
    double period; /* seconds; 0: off */
};

/* Prepares an idle timeout (off). fn NULL is Twisted's default
 * timeoutConnection: tw_transport_lose_connection(protocol->transport) (a
 * clean close: queued bytes are flushed first). Either way the expiry is
 * logged. Must not be called on a timeout that is set. */
void tw_timeout_init(tw_timeout *t, tw_clock *clock, tw_protocol *protocol, tw_timeout_fn fn);

/* setTimeout: the connection times out after `seconds` without a reset;
 * 0 turns it off. Setting it while it runs restarts the count from now.
 * Returns 0; TW_EINVAL (negative, NaN or infinite: nothing changes);
 * TW_ENOMEM (the clock could not make room for the timer; the timeout stays
 * off). */
int tw_timeout_set(tw_timeout *t, double seconds);

/* resetTimeout: restart the count (call it on traffic). Does nothing when the
 * timeout is off or has fired. Never allocates, never fails. */
void tw_timeout_reset(tw_timeout *t);

/* The period set (0: off), and whether the timer is counting down now. */
double tw_timeout_period(const tw_timeout *t);
bool tw_timeout_pending(const tw_timeout *t);

/* ---- TimeoutFactory: an idle timeout for any protocol
 *
 * Each connection gets a timer from connection_made to connection_lost;
 * traffic in either direction (bytes read, and every write the protocol
 * makes) resets it. When it fires the connection is closed with
 * lose_connection (TimeoutProtocol.timeoutFunc), which is logged. */
#define TW_TIMEOUT_FACTORY_DEFAULT 1800.0 /* seconds: Twisted's 30 minutes */

typedef struct tw_timeout_factory {
    tw_wrapping_factory wf;
    tw_clock *clock;
    double timeout; /* seconds idle; > 0; TW_TIMEOUT_FACTORY_DEFAULT */
} tw_timeout_factory;

/* wrapped and clock must outlive f. */
void tw_timeout_factory_init(tw_timeout_factory *f, tw_factory *wrapped, tw_clock *clock);

/* ---- ThrottlingFactory: bandwidth and connection-count limits
 *
 * Counts the bytes every connection of the factory reads and writes, all
 * together, and checks the counts once a second (from the first connection
 * on; nothing is scheduled while there is none):
 *   - read more than read_limit in the last second: reading is paused on every
 *     connection (tw_transport_pause_producing) for (read / read_limit - 1)
 *     seconds, then resumed. So a second's excess is paid back in time.
 *   - written more than write_limit: the streaming producer each wrapped
 *     protocol registered on its transport is paused for (written /
 *     write_limit - 1) seconds, then resumed. A protocol that writes without
 *     a registered streaming producer is counted but cannot be held back
 *     (Twisted's ThrottlingProtocol has the same rule).
 *   - max_connections open: more are refused (build_protocol returns NULL).
 * Differences from Twisted, both to keep the limits tight: a connection made
 * (or a producer registered) while throttled starts paused; and a wrapped
 * protocol's own pause_producing is honoured (the end of a throttle does not
 * resume a transport its protocol paused; its resume_producing during a
 * throttle takes effect when the throttle ends). */
#define TW_THROTTLE_MAX_CONNECTIONS_DEFAULT SIZE_MAX /* Twisted: sys.maxsize */

typedef struct tw_throttling_factory {
    tw_wrapping_factory wf;
    tw_clock *clock;
    size_t max_connections; /* TW_THROTTLE_MAX_CONNECTIONS_DEFAULT */
    uint64_t read_limit;    /* bytes per second; 0 (default): no limit */
    uint64_t write_limit;   /* bytes per second; 0 (default): no limit */
    /* Private. */
    size_t connections;
    uint64_t read_this_second;
    uint64_t written_this_second;
    bool reads_throttled;
    bool writes_throttled;
    tw_timer check_reads, unthrottle_reads_timer;
    tw_timer check_writes, unthrottle_writes_timer;
} tw_throttling_factory;

/* wrapped and clock must outlive f. The limits are read when the first
 * connection is built (a limit set to nonzero later takes effect once the
 * connection count has gone back to 0) and at every check. */
void tw_throttling_factory_init(tw_throttling_factory *f, tw_factory *wrapped, tw_clock *clock);
/* Connections built and not yet lost. */
size_t tw_throttling_factory_connections(const tw_throttling_factory *f);

/* ---- LimitTotalConnectionsFactory
 *
 * Counts connections built and not yet lost. Below `limit` the wrapped
 * factory builds the protocol; at the limit the overflow factory builds it
 * (a protocol that says "busy" and closes, Twisted's overflowProtocol) or,
 * with no overflow factory, the connection is refused. Overflow connections
 * count too. */
#define TW_LIMIT_TOTAL_DEFAULT SIZE_MAX /* Twisted's connectionLimit = None */

typedef struct tw_limit_total_factory {
    tw_wrapping_factory wf;
    size_t limit;         /* TW_LIMIT_TOTAL_DEFAULT (no limit) */
    tw_factory *overflow; /* NULL (default): refuse; must outlive f */
    /* Private. */
    size_t connections;
} tw_limit_total_factory;

void tw_limit_total_factory_init(tw_limit_total_factory *f, tw_factory *wrapped);
size_t tw_limit_total_factory_connections(const tw_limit_total_factory *f);

/* ---- LimitConnectionsByPeer
 *
 * At most max_per_peer connections from one peer host (the address given to
 * build_protocol, without its port; an IPv4-mapped IPv6 address counts as
 * the IPv4 one). Unix peers count by their socket name, so all unnamed ones
 * are one peer. More are refused. The counts live in a hash table that holds
 * only peers with connections open: it is empty (and frees itself) when the
 * last connection is lost, so the factory needs no teardown. A new peer
 * costs one allocation; when it fails the connection is refused. */
#define TW_LIMIT_PER_PEER_DEFAULT 5 /* Twisted's maxConnectionsPerPeer */

struct tw__peer_entry;

typedef struct tw_limit_per_peer_factory {
    tw_wrapping_factory wf;
    size_t max_per_peer; /* TW_LIMIT_PER_PEER_DEFAULT */
    /* Private. */
    struct tw__peer_entry **buckets;
    size_t nbuckets; /* 0 or a power of two */
    size_t npeers;
} tw_limit_per_peer_factory;

void tw_limit_per_peer_factory_init(tw_limit_per_peer_factory *f, tw_factory *wrapped);
/* Connections open from addr's host. */
size_t tw_limit_per_peer_factory_count(const tw_limit_per_peer_factory *f, const tw_address *addr);
/* Distinct peers with connections open. */
size_t tw_limit_per_peer_factory_peers(const tw_limit_per_peer_factory *f);

#endif
