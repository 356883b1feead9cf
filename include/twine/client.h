/* Clients that stay connected: ReconnectingClientFactory
 * (twisted.internet.protocol) and ClientService (twisted.application.internet),
 * with the backoff arithmetic they share.
 *
 * Both run on their reactor's thread and schedule their retries on a tw_clock
 * (the reactor's by default; a manual clock in tests). Jitter comes from a
 * small seedable generator (tw_rng), so a test that seeds it sees the same
 * delays every run. */
#ifndef TWINE_CLIENT_H
#define TWINE_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include <twine/clock.h>
#include <twine/deferred.h>
#include <twine/endpoint.h>
#include <twine/net.h>
#include <twine/protocol.h>
#include <twine/reactor.h>

/* ---- Jitter: a seedable pseudo-random generator (splitmix64). Not for
 * secrets. A zeroed tw_rng is valid (seed 0). */
typedef struct tw_rng {
    uint64_t state;
} tw_rng;

void tw_rng_seed(tw_rng *rng, uint64_t seed);
/* Uniform in [0, 1), 53 random bits (Python's random.random). */
double tw_rng_uniform(tw_rng *rng);
/* Normal with mean mu and standard deviation sigma by Python's
 * random.normalvariate (Kinderman and Monahan's ratio method): draws pairs
 * u1 = uniform(), u2 = 1 - uniform(), z = 4 e^-0.5 / sqrt 2 * (u1 - 0.5) / u2,
 * until z * z / 4 <= -log(u2); returns mu + z * sigma. Two or more uniforms
 * per call, so a test can replay the sequence. */
double tw_rng_normal(tw_rng *rng, double mu, double sigma);

/* ---- Reconnecting client factory (ReconnectingClientFactory)
 *
 * A client factory that connects again, through the same connector, each
 * time an attempt fails or a connection is lost, after a delay that grows
 * exponentially with jitter: per retry, exactly as Twisted's retry(),
 *
 *     retries += 1; if max_retries >= 0 and retries > max_retries: give up
 *     delay = min(delay * factor, max_delay)
 *     if jitter: delay = normalvariate(delay, delay * jitter)   (tw_rng_normal)
 *     tw_connector_connect(connector) after `delay` seconds
 *
 * so the first retry waits about initial_delay * factor (2.7 s) and the cap
 * applies before the jitter (a delay may exceed max_delay by the jitter). The
 * jittered delay is kept and grows from there, as in Twisted. A negative
 * jittered delay (practically impossible) is scheduled as 0.
 *
 * A lost connection is retried whether it closed cleanly or not
 * (TW_ECONNDONE included), as Twisted does; only stop_trying ends the loop.
 * Call tw_reconnecting_factory_reset_delay from your protocol's
 * connection_made (Twisted users call resetDelay there), or the next loss
 * waits as long as the failures before it earned.
 *
 * Use: embed it as the first member of your own struct (or use it as is),
 * initialise it, and pass &rf->base to tw_connect_stream:
 *
 *     struct my_client { tw_reconnecting_factory rf; int lines; };
 *     static void made(tw_protocol *p)
 *     {
 *         tw_reconnecting_factory_reset_delay((tw_reconnecting_factory *)p->factory);
 *     }
 *     tw_reconnecting_factory_init(&c.rf, r, &my_ops, &proto_ops, sizeof(struct proto), &c);
 *     tw_connect_stream(r, &addr, NULL, &c.rf.base, &connector);
 *
 * User hooks: `ops` given to init is the user's factory ops table, kept in
 * rf->user_ops. build_protocol (NULL: the default builder over protocol_ops
 * and protocol_size), start_factory and stop_factory are called as for a
 * plain factory, with f == &rf->base. started_connecting,
 * client_connection_failed and client_connection_lost run AFTER the
 * factory's own handling of the event (the retry is scheduled, or abandoned,
 * by then): a hook may call stop_trying (cancelling that retry), retry,
 * reset_delay, or change the settings. Protocols built by the default builder
 * have p->factory == &rf->base, so a protocol finds the reconnecting factory
 * (and your embedding struct) by casting p->factory.
 *
 * Lifetime: nothing is allocated. The factory must outlive its connector and
 * connections (as any factory); call stop_trying before the factory goes away
 * (it cancels the scheduled retry), and before tw_connector_free on its
 * connector (the factory keeps a borrowed pointer to the connector). */
#define TW_RECONNECT_INITIAL_DELAY 1.0
#define TW_RECONNECT_FACTOR        2.7182818284590451 /* e */
#define TW_RECONNECT_MAX_DELAY     3600.0             /* one hour */
#define TW_RECONNECT_JITTER        0.11962656472      /* molar Planck constant times c */

typedef struct tw_reconnecting_factory {
    tw_factory base;                /* first: hand &rf->base to tw_connect_stream */
    const tw_factory_ops *user_ops; /* the user's hooks (see above); may be NULL */

    /* Settings: Twisted's attributes, with its defaults; change them any
     * time, they are read at each retry. */
    double initial_delay; /* what reset_delay restores delay to */
    double factor;
    double max_delay;
    double jitter;    /* relative standard deviation; 0: no jitter */
    long max_retries; /* retries before giving up; negative: never (the default) */
    tw_clock *clock;  /* where retries are scheduled: the reactor's by default;
                         change it only while no retry is scheduled */
    tw_rng rng;       /* the jitter's source: seed it for repeatable delays */

    /* State, read-only to users. */
    double delay;            /* the last delay used (initial_delay before any) */
    unsigned long retries;   /* retries since the last reset_delay */
    bool continue_trying;    /* false after stop_trying, until reset_delay */
    tw_connector *connector; /* the connector it retries (borrowed), or NULL */

    /* Private. */
    tw_timer timer; /* the scheduled retry */
} tw_reconnecting_factory;

/* Initialises rf: base as tw_factory_init(&rf->base, <the reconnecting ops>,
 * protocol_ops, protocol_size, data); user_ops = ops; Twisted's settings;
 * clock = tw_reactor_clock(r); rng seeded from the monotonic clock and rf's
 * address. Allocates nothing; r must not be NULL. */
void tw_reconnecting_factory_init(tw_reconnecting_factory *rf, tw_reactor *r,
                                  const tw_factory_ops *ops, const tw_protocol_ops *protocol_ops,
                                  size_t protocol_size, void *data);

/* retry(connector): schedules tw_connector_connect(c) after the next delay
 * (see the formula above); c NULL means rf->connector. A retry already
 * scheduled is replaced (Twisted would run both; the second connect would be
 * refused anyway). When the connect call itself fails (TW_ENOMEM, -errno:
 * the attempt could not even start), that counts as a failed attempt:
 * user_ops->client_connection_failed gets a failure with that code and the
 * next retry is scheduled, as Twisted reports socket errors through
 * clientConnectionFailed. TW_EBUSY (the connector is connecting or
 * connected already, someone else connected it) is left alone.
 * Returns 0 when scheduled; TW_ECANCELED when stop_trying was called (logged
 * at info, "abandoning"); TW_ELIMIT when max_retries is reached (logged; the
 * retry count stays incremented, as Twisted's); TW_EINVAL when rf is NULL
 * or there is no connector; TW_ENOMEM when the clock could not take the
 * timer (logged as an error; nothing scheduled). */
int tw_reconnecting_factory_retry(tw_reconnecting_factory *rf, tw_connector *c);

/* stopTrying: cancels the scheduled retry, sets continue_trying to false,
 * and stops the connector's attempt in progress if there is one (it then
 * reports client_connection_failed with TW_ECANCELED, which is not retried).
 * A live connection is left alone; when it is lost it is not retried.
 * Unlike Twisted's, which learns the connector only from the first failure,
 * this factory records it in started_connecting, so stop_trying also stops
 * the very first attempt. */
void tw_reconnecting_factory_stop_trying(tw_reconnecting_factory *rf);

/* resetDelay: delay = initial_delay, retries = 0, continue_trying = true (so
 * it also undoes stop_trying, as Twisted's). Twisted forgets a scheduled call
 * here without cancelling it; this one leaves it scheduled and still
 * cancellable. */
void tw_reconnecting_factory_reset_delay(tw_reconnecting_factory *rf);

/* True while a retry is scheduled. */
bool tw_reconnecting_factory_pending(const tw_reconnecting_factory *rf);

/* ---- Backoff policies (twisted.application.internet.backoffPolicy) */

/* Seconds to wait before the next attempt, given how many attempts have
 * failed in a row (1 for the first retry). */
typedef double (*tw_retry_policy_fn)(unsigned failed_attempts, void *arg);

typedef struct tw_backoff {
    double initial_delay; /* default 1.0 */
    double max_delay;     /* default 60.0; before jitter */
    double factor;        /* default 1.5 */
    /* The jitter added to each delay; NULL: uniform in [0, 1) from rng
     * (Twisted's random.random). */
    double (*jitter)(void *arg);
    void *jitter_arg;
    tw_rng rng;
} tw_backoff;

/* Twisted's defaults (1.0, 60.0, 1.5, uniform jitter), rng seeded with
 * `seed`. */
void tw_backoff_init(tw_backoff *b, uint64_t seed);

/* A tw_retry_policy_fn over a tw_backoff (arg): as Twisted's policy,
 *     min(initial_delay * factor ** min(100, failed_attempts), max_delay) + jitter()
 * where a result that is not a number (0 * inf) becomes max_delay. */
double tw_backoff_policy(unsigned failed_attempts, void *backoff);

/* ---- ClientService: keeps one connection to an endpoint up.
 *
 * start connects through tw_endpoint_connect(endpoint, <the service's
 * factory>); when the attempt fails, or the connection is later lost (however
 * it closed), the service waits policy(failed_attempts) seconds and connects
 * again, until stop. failed_attempts counts attempts failed in a row plus one
 * for a lost connection, and is reset when a connection is made (so after a
 * loss the wait is policy(1)). The states and transitions are Twisted's
 * _ClientMachine's, exactly (init, connecting, waiting, connected,
 * disconnecting, restarting, stopped). Twisted's prepareConnection is not
 * offered.
 *
 * How the service sees its connection end: its internal factory builds each
 * protocol with the user's factory (tw_factory_build_protocol) and wraps it in
 * a small forwarding protocol (Twisted's _ReconnectingProtocolProxy). The
 * transport owns the wrapper; every event is forwarded to the user's
 * protocol, whose `transport` is set as usual, then the wrapper tells the
 * service the connection is gone (after the user's connection_lost
 * returned). The wrapper offers read_connection_lost only when the user's
 * protocol does, so half-close behaves the same. A visible difference:
 * transport->protocol is the wrapper, not the user's protocol. The user's
 * factory's start_factory/stop_factory run as the service's own factory is
 * started and stopped by each attempt; its client hooks are not called
 * (endpoints do not call them).
 *
 * Errors arrive through when_connected's deferreds; the service itself logs
 * each scheduled retry at info ("twine.client"). */

typedef struct tw_client_service tw_client_service;

/* Makes a stopped service that will connect `endpoint` for `factory`, with
 * Twisted's default policy (a tw_backoff with its defaults, seeded from the
 * monotonic clock; tw_client_service_backoff reaches it) on
 * tw_reactor_clock(r). Endpoint and factory are borrowed: both must outlive
 * the service and every connection it made. Returns 0 and *out; TW_EINVAL
 * (a NULL argument) or TW_ENOMEM. */
int tw_client_service_new(tw_reactor *r, tw_endpoint *endpoint, tw_factory *factory,
                          tw_client_service **out);

/* Frees the service, at once when it is stopped (never started, or stop's
 * deferred has fired) and no attempt or connection still uses its factory;
 * otherwise it stops it now, abruptly (the retry cancelled, the attempt
 * cancelled, the connection told to lose_connection and no longer watched,
 * pending when_connected deferreds failed with TW_ECANCELED, pending stop
 * deferreds fired), and the memory goes once nothing uses it (when that
 * connection has ended). Safe
 * from inside any callback of the service's deferreds. NULL is ignored. */
void tw_client_service_free(tw_client_service *s);

/* The retry policy: fn(failed_attempts, arg) gives the seconds to wait
 * (negative or NaN is taken as 0). NULL fn restores the default. Returns 0. */
int tw_client_service_set_retry_policy(tw_client_service *s, tw_retry_policy_fn fn, void *arg);

/* The default policy's parameters and jitter generator (to seed it or tune
 * it); used only while no other policy is set. */
tw_backoff *tw_client_service_backoff(tw_client_service *s);

/* The clock retries are scheduled on. Returns 0, or TW_EBUSY while a retry
 * is scheduled (the clock stays). NULL clock restores the reactor's. */
int tw_client_service_set_clock(tw_client_service *s, tw_clock *clock);

/* startService: starts connecting (from init or stopped), or, while a stop
 * is closing the connection, arranges to connect again once it is closed
 * (restarting: the stop's deferred fires first, and the failure count is
 * reset). Returns 0; TW_EBUSY when running already (logged as a warning:
 * Twisted's "Duplicate ClientService.startService"); TW_ENOMEM when the
 * first attempt could not be started (the service stays stopped). */
int tw_client_service_start(tw_client_service *s);

/* True between start and stop (Service.running). */
bool tw_client_service_running(const tw_client_service *s);

/* stopService: stops retrying and connecting and closes the connection
 * (lose_connection). Returns a new deferred (the caller's reference) that
 * fires with a NULL value once no connection or attempt is left: at once
 * when there was none or the attempt was cancelled, else after the
 * connection's connection_lost. Pending when_connected deferreds fail with
 * TW_ECANCELED by then. Calling it again while stopping gives another
 * deferred that fires at the same time. NULL when out of memory for the
 * deferred (the service stops all the same). */
tw_deferred *tw_client_service_stop(tw_client_service *s);

/* whenConnected: a new deferred (the caller's reference) that fires with the
 * user's protocol of the current connection (a borrowed tw_protocol *: its
 * transport owns it; valid until its connection_lost returns): at once when
 * connected, else when the next connection is made. It fails with
 * TW_ECANCELED when the service is stopped (at once if it is stopped now),
 * and, when fail_after_failures > 0, with the attempt's failure once that many
 * attempts have failed in a row from now (1: the next failure; Twisted's
 * failAfterFailures; 0 is its None: never). NULL when out of memory. */
tw_deferred *tw_client_service_when_connected(tw_client_service *s, unsigned fail_after_failures);

/* The user's protocol of the current connection, or NULL. */
tw_protocol *tw_client_service_protocol(const tw_client_service *s);

#endif
