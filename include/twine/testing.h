/* Twine's trial: deterministic helpers for testing code built on Twine.
 * (The manual clock, task.Clock, is in clock.h: tw_clock_new_manual.)
 * proto_helpers lives here too: the string transport (StringTransport), a
 * helper that feeds a byte stream in every chunking, and the memory reactor
 * (MemoryReactor), which records listens and connects instead of opening
 * sockets. */
#ifndef TWINE_TESTING_H
#define TWINE_TESTING_H

#include <stdbool.h>
#include <stddef.h>

#include <twine/clock.h>
#include <twine/deferred.h>
#include <twine/log.h>
#include <twine/net.h>
#include <twine/protocol.h>
#include <twine/reactor.h>
#include <twine/result.h>
#include <twine/transport.h>

/* Runs the reactor (by iterating it; run need not be active) until d has
 * fired or `timeout` seconds have passed. d is borrowed. Returns 0 with the
 * result moved into *out (d's chain goes on with NULL); or TW_ETIMEDOUT, after
 * cancelling d and discarding whatever it then fires with. */
int tw_testing_run_until_fired(tw_reactor *r, tw_deferred *d, double timeout, tw_result *out);

/* The dirty-reactor check, run after every test. Reports, in `why`, what was
 * left: pending delayed calls, readers, writers, signal watches, queued
 * cross-thread calls, and failures logged as unhandled since
 * tw_testing_begin. r may be NULL: unhandled failures only. Returns 0 when
 * clean, TW_EBUSY when not. */
int tw_testing_check_clean(tw_reactor *r, char *why, size_t size);

/* The part of the check that needs no reactor: 0 if no failure was logged
 * as unhandled since tw_testing_begin, else TW_EBUSY with what was logged. */
int tw_testing_check_unhandled(char *why, size_t size);

/* Marks the start of a test: the unhandled-failure count and captured log
 * lines are measured from here. */
void tw_testing_begin(void);

/* ---- Failing allocations: after `n` more allocations succeed, every one
 * fails (n = 0: the next one fails), until tw_testing_fail_alloc_off. Installs
 * a counting allocator over libc's (see alloc.h). */
void tw_testing_fail_alloc_after(long n);
void tw_testing_fail_alloc_off(void);
/* True while failing is armed (after fail_alloc_after, before _off). */
bool tw_testing_fail_alloc_armed(void);
/* Allocations made through Twine since the counting allocator was installed. */
long tw_testing_alloc_count(void);
/* Allocations made since then and not yet freed: compare it before and after
 * a piece of work to prove the work freed everything (fuzz targets do). Call
 * any tw_testing_*alloc* function before the work so the allocator is in
 * place: memory allocated before it was installed is not counted. */
long tw_testing_alloc_live(void);

/* ---- Captured log: keeps the text of every event logged (still passing
 * them to the other observers is not done: capture replaces them). */
void tw_testing_log_capture_start(void);
void tw_testing_log_capture_stop(void);
/* How many captured events contain `needle` in their message or failure. */
size_t tw_testing_log_count(const char *needle);
/* Every captured line, joined by newlines (borrowed, valid until the next
 * event or stop). */
const char *tw_testing_log_text(void);

/* ---- String transport (proto_helpers.StringTransport)
 *
 * An in-memory transport that needs no reactor (base.reactor is NULL): it
 * records every byte written and every call made on it, and the test drives
 * the other side: feed bytes, simulate the peer closing, move the simulated
 * write buffer across the water marks.
 *
 *     tw_string_transport *st;
 *     tw_string_transport_new(&st);
 *     tw_string_transport_connect(st, proto);        // connection_made
 *     tw_string_transport_feed(st, "hello\r\n", 7);  // data_received
 *     size_t n;
 *     const char *out = tw_string_transport_value(st, &n);   // what it wrote
 *     tw_string_transport_lose(st, TW_ECONNDONE);    // connection_lost, free
 *     tw_string_transport_free(st);
 *
 * Lifetime: reference counted as transport.h says. _new gives the caller one
 * reference (the connection's, in transport.h's terms); tw_string_transport_free
 * drops it. The last reference going, with a protocol still connected, first
 * loses the connection with TW_ECONNDONE (so a test that never closed leaks
 * nothing), unless the protocol takes a reference of its own then.
 *
 * Closing: lose_connection, abort_connection and lose_write_connection only
 * record the call (as Twisted's StringTransport, nothing is lost until the
 * test says so with tw_string_transport_lose), and later writes are refused
 * with TW_ENOTCONN as transport.h promises. Feeding goes on regardless, so a
 * test can check what a protocol does with bytes that arrive after it
 * closed.
 *
 * Flow control: the transport keeps a simulated write buffer, 0 bytes unless
 * the test says otherwise (writes are "sent" at once). The test moves it with
 * tw_string_transport_set_buffer_size, or sets queue_writes so that written
 * bytes stay in it; crossing the high-water mark pauses a streaming
 * producer, going down to the low-water mark resumes it (a pull producer is
 * asked for more instead), as a real transport does. */

typedef struct tw_string_transport {
    tw_transport base; /* hand &st->base to the code under test */

    /* What was done to it; read freely. */
    unsigned lose_calls;       /* lose_connection */
    unsigned abort_calls;      /* abort_connection */
    unsigned lose_write_calls; /* lose_write_connection */
    bool disconnecting;        /* lose_connection or abort_connection was called */
    bool connected;            /* a protocol is connected and not yet lost */
    bool paused;               /* pause_producing on the transport, not resumed since */
    unsigned pause_calls;      /* pause_producing on the transport */
    unsigned resume_calls;     /* resume_producing on the transport */
    tw_producer *producer;     /* the registered producer, or NULL */
    bool streaming;            /* its kind */
    bool producer_paused;      /* the transport paused it (above the high-water mark) */
    unsigned producer_pauses;  /* pause_producing calls made on producers */
    unsigned producer_resumes; /* resume_producing calls made on producers */
    unsigned producer_stops;   /* stop_producing calls made on producers */
    int nodelay, keepalive;    /* the last set_option values; -1 when never set */

    /* Set by the test. */
    tw_address host;   /* get_host: 127.0.0.1:12345 unless changed */
    tw_address peer;   /* get_peer: 127.0.0.1:54321 unless changed */
    bool queue_writes; /* written bytes stay in the simulated write buffer */

    /* Private. */
    char *data;
    size_t len, cap;
    size_t buffered; /* the simulated write buffer */
    size_t high, low;
    bool was_connected;
    void (*lost_hook)(void *arg, tw_failure *reason);
    void *lost_arg;
} tw_string_transport;

/* Makes a string transport with no protocol. Returns 0 and *out, TW_EINVAL
 * (out NULL) or TW_ENOMEM. */
int tw_string_transport_new(tw_string_transport **out);

/* Drops the caller's reference (see Lifetime). NULL is ignored. */
void tw_string_transport_free(tw_string_transport *st);

/* The string transport behind t, or NULL when t is another kind (or NULL). */
tw_string_transport *tw_string_transport_of(tw_transport *t);

/* Every byte written since _new or the last clear, in order (write,
 * write_sequence and write_zerocopy alike), NUL-terminated for convenience
 * and never NULL; *len (when len is not NULL) gets the count. Valid until
 * the next write or clear. */
const char *tw_string_transport_value(const tw_string_transport *st, size_t *len);

/* Forgets the bytes written (Twisted's clear()); the call records stay. */
void tw_string_transport_clear(tw_string_transport *st);

/* makeConnection: the transport takes p over (as a real connection does: it
 * releases p after connection_lost) and calls connection_made. Returns 0,
 * TW_EINVAL (NULL), or TW_EBUSY when a protocol was connected already, even
 * one since lost (p is not taken then): one transport, one connection. */
int tw_string_transport_connect(tw_string_transport *st, tw_protocol *p);

/* Delivers data[0..len) to the protocol's data_received in one call, paused
 * or closing or not. Returns 0, TW_ENOTCONN (no protocol connected) or
 * TW_EINVAL. */
int tw_string_transport_feed(tw_string_transport *st, const void *data, size_t len);

/* tw_string_transport_feed as a tw_testing_feed_fn (ctx is the string
 * transport), for tw_testing_feed_chunks. */
void tw_string_transport_feeder(void *st, const char *data, size_t len);

/* The connection ends (the peer closed, or the test says the close that the
 * protocol asked for is done): a registered producer is unregistered and gets
 * stop_producing, the protocol gets connection_lost with a failure of `code`
 * (TW_ECONNDONE for a clean close, TW_ECONNABORTED after an abort, -ECONNRESET,
 * ...; 0 means TW_ECONNDONE) and is released, and every later call on the
 * transport returns TW_ENOTCONN. Returns 0, or TW_ENOTCONN when no protocol
 * is connected. */
int tw_string_transport_lose(tw_string_transport *st, int code);

/* Sets the simulated write buffer to `size` bytes (what
 * tw_transport_write_buffer_size reports): above the high-water mark a
 * streaming producer is paused (once); at or below the low-water mark a
 * paused streaming producer is resumed, and a pull producer is asked for more
 * (each call). Returns 0, or TW_ENOTCONN when no protocol is connected. */
int tw_string_transport_set_buffer_size(tw_string_transport *st, size_t size);

/* ---- Feeding a byte stream in every split (Twisted's tests feed "in
 * differing chunk sizes, down to one byte at a time"). */

typedef void (*tw_testing_feed_fn)(void *ctx, const char *data, size_t len);

/* Calls feed(ctx, ...) with data[0..len) in consecutive pieces of `chunk`
 * bytes (the last may be shorter); chunk 0 or >= len: one piece. Nothing is
 * called for len 0. Returns the number of pieces fed. Use it in a loop over
 * every chunk size, rebuilding the protocol each time:
 *
 *     for (size_t chunk = len; chunk > 0; chunk--) {
 *         ... fresh transport and protocol ...
 *         tw_testing_feed_chunks(data, len, chunk, tw_string_transport_feeder, st);
 *         ... assert on what it saw ...
 *     }                                                                    */
size_t tw_testing_feed_chunks(const void *data, size_t len, size_t chunk, tw_testing_feed_fn feed,
                              void *ctx);

/* Calls feed with data[0..at) then data[at..len) (an empty piece is skipped;
 * at > len means len): the split at one byte boundary. Loop at from 0 to len
 * for every boundary. Returns the number of pieces fed. */
size_t tw_testing_feed_split(const void *data, size_t len, size_t at, tw_testing_feed_fn feed,
                             void *ctx);

/* ---- Memory reactor (proto_helpers.MemoryReactor)
 *
 * A real reactor (timers, deferreds and calls from threads work, with the
 * backend from TWINE_REACTOR) on which tw_listen_stream, tw_listen_adopt and
 * tw_connect_stream open no socket: they record the request and hand out a
 * fake listening port or connector, which code under test (endpoints,
 * reconnecting factories, services) uses through net.h as usual while the
 * test reads the records and drives the connectors.
 *
 * Listening: the factory is started; the fake port's get_host gives the
 * address asked for; stopping it records that (the record stays, port
 * NULL, stopped true), stops the factory and frees the port.
 *
 * Connecting: the factory is started and started_connecting runs before
 * tw_connect_stream returns, as with real sockets; the connector then stays
 * CONNECTING until the test calls tw_testing_connector_fail or
 * tw_testing_connector_succeed. As Twisted's connectors do, the factory
 * stays started across a reconnect made from client_connection_failed/lost
 * and is stopped after an attempt that ends with no new one. connect,
 * stop_connecting and disconnect are counted in the record; stop_connecting
 * fails the attempt with TW_ECANCELED; disconnect stops connecting or calls
 * lose_connection on the string transport (which only records it: the test
 * then calls tw_testing_connector_lose). */

/* One tw_listen_stream / tw_listen_adopt call. */
typedef struct tw_testing_listen {
    tw_address addr;        /* as asked (len 0 for an adopted descriptor) */
    tw_listen_options opts; /* as given; zeroed when NULL was passed */
    tw_factory *factory;
    tw_listening_port *port; /* the fake port; NULL once stopped */
    bool stopped;
} tw_testing_listen;

/* One tw_connect_stream call and the connector it made. */
typedef struct tw_testing_connect {
    tw_address addr;         /* the destination */
    tw_connect_options opts; /* as given (zeroed for NULL); bind_to points into bind_to */
    tw_address bind_to;      /* copy of *opts->bind_to, len 0 when none */
    tw_factory *factory;
    tw_connector *connector; /* NULL once tw_connector_free'd */
    unsigned attempts;       /* attempts started: 1 + tw_connector_connect's */
    unsigned stop_connecting_calls;
    unsigned disconnect_calls;
    unsigned failures;    /* attempts that failed (client_connection_failed) */
    unsigned connections; /* connections made */
    unsigned losses;      /* connections lost */
    /* The transport of the last connection made (kept, lost or not, until
     * the next one or the memory reactor's free), or NULL. */
    tw_string_transport *transport;
} tw_testing_connect;

/* Makes a memory reactor. Returns 0 and *out, or what tw_reactor_new
 * returns (TW_ENOMEM...). */
int tw_testing_memory_reactor_new(tw_reactor **out);

/* Frees the records, every fake port not stopped and connector not freed
 * (pointers to them are dead afterwards), loses (TW_ECONNDONE) and frees the
 * connections still up, then the reactor. Returns what tw_reactor_free
 * returns (TW_EBUSY while running: nothing is freed). NULL is ignored. */
int tw_testing_memory_reactor_free(tw_reactor *r);

/* The number of listen / connect calls recorded (0 for a reactor that is not
 * a memory reactor), and the i-th record (NULL when out of range). Records
 * are borrowed, valid until the memory reactor is freed. */
size_t tw_testing_memory_reactor_listens(const tw_reactor *r);
const tw_testing_listen *tw_testing_memory_reactor_listen(const tw_reactor *r, size_t i);
size_t tw_testing_memory_reactor_connects(const tw_reactor *r);
const tw_testing_connect *tw_testing_memory_reactor_connect(const tw_reactor *r, size_t i);

/* The attempt in progress fails: CONNECTING -> DISCONNECTED, then
 * client_connection_failed with a failure of `code` (0: TW_ECONNREFUSED).
 * Returns 0; TW_EINVAL (not a memory connector), TW_ENOTCONN (not
 * connecting). */
int tw_testing_connector_fail(tw_connector *c, int code);

/* The attempt in progress succeeds: builds the protocol from the factory
 * (build_protocol(destination)), connects it to a new string transport
 * (connection_made), state CONNECTED, then runs the connector's
 * connected_hook. *out (when out is not NULL) gets the transport, borrowed
 * (see tw_testing_connect.transport). A factory refusing (NULL protocol)
 * fails the attempt with TW_ECONNABORTED and returns that. Returns 0;
 * TW_EINVAL; TW_ENOTCONN (not connecting); TW_ENOMEM (nothing happened: still
 * connecting). */
int tw_testing_connector_succeed(tw_connector *c, tw_string_transport **out);

/* The connection is lost: tw_string_transport_lose(code) on it, after which
 * the connector is DISCONNECTED and the factory gets client_connection_lost
 * (not when the connector was freed). Returns 0, TW_EINVAL, or TW_ENOTCONN
 * (not connected). */
int tw_testing_connector_lose(tw_connector *c, int code);

#endif
