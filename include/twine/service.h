/* Services (twisted.application.service and twisted.application.internet):
 * the start/stop tree a long-running program is built from, and the stock
 * services that put a server on an endpoint, keep a client connected, or
 * call a function on a timer.
 *
 * A service is a struct whose first member is a tw_service, with an ops
 * table. Every call runs on the reactor's thread. Lifecycle, as Twisted's
 * IService:
 *
 *   privileged_start  optional; runs before the program drops privileges
 *                     (bind a port below 1024 here). A service that has one
 *                     is "started" by it: start then only finishes the job.
 *   start             the service begins its work. Returns 0 or an error
 *                     (with *failure set); a failed start leaves the service
 *                     stopped.
 *   stop              returns a deferred that fires when the service has
 *                     stopped (tw_succeed(NULL) when it is immediate), or
 *                     NULL, meaning "stopped already". Must not fail for a
 *                     running service; a failure it reports is logged.
 *   free              releases what the service owns (not the service's
 *                     own memory); called once, by tw_service_release, on
 *                     a stopped service.
 *
 * The wrappers below keep `running` right and make the calls idempotent:
 * starting a running service or stopping a stopped one does nothing.
 *
 * Ownership: a service is owned by its parent once added to a multi-service
 * (tw_multi_service_add takes the caller's reference); a top-level service
 * is owned by whoever made it and released with tw_service_release. A
 * service's memory comes from tw_malloc/tw_calloc (tw_service_release frees
 * it with tw_free).
 *
 * Stopping covers a service that was only privileged-started, too: stop
 * undoes what privileged_start did (a port opened is closed). */
#ifndef TWINE_SERVICE_H
#define TWINE_SERVICE_H

#include <stdbool.h>
#include <stddef.h>

#include <twine/client.h>
#include <twine/deferred.h>
#include <twine/endpoint.h>
#include <twine/failure.h>
#include <twine/protocol.h>
#include <twine/reactor.h>

typedef struct tw_service tw_service;

typedef struct tw_service_ops {
    const char *kind; /* "multi", "server", "client", "timer", ...: for logs */
    int (*privileged_start)(tw_service *s, tw_failure **failure); /* optional */
    int (*start)(tw_service *s, tw_failure **failure);
    tw_deferred *(*stop)(tw_service *s);
    void (*free)(tw_service *s); /* optional */
} tw_service_ops;

struct tw_service {
    const tw_service_ops *ops;
    tw_reactor *reactor;
    char *name;         /* NULL or owned copy; unique among a parent's children */
    tw_service *parent; /* the multi-service it belongs to, or NULL */
    bool running;
    bool privileged_started;
    /* private to service.c */
    tw_service *next_sibling;
};

/* Initialises the common part; name may be NULL. Returns 0 or TW_ENOMEM. */
int tw_service_init(tw_service *s, const tw_service_ops *ops, tw_reactor *r, const char *name);

/* Run the ops with the bookkeeping above. *failure (may be NULL) receives a
 * failure saying which service failed and why. */
int tw_service_privileged_start(tw_service *s, tw_failure **failure);
int tw_service_start(tw_service *s, tw_failure **failure);
/* Returns a new deferred (the caller's reference) that fires with a NULL
 * value once the service has stopped: already fired when the stop was
 * immediate or the service was not running. A failure the service's stop
 * reports is logged (warning, "twine.service") and the deferred still fires
 * with NULL. NULL only when memory for the deferred ran out (the service is
 * stopped all the same). */
tw_deferred *tw_service_stop(tw_service *s);

/* The service must be stopped (or never started): one still running is
 * stopped first, which is logged as a misuse (its stop's deferred is not
 * waited for). Releases the children of a multi-service first (last added
 * first), then calls ops->free and frees the name and s. NULL is ignored. */
void tw_service_release(tw_service *s);

/* ---- Multi-service: named children, started in the order they were added
 * and stopped in reverse order. As Twisted's MultiService, stop asks every
 * child to stop (last added first) and its deferred fires when all of
 * theirs have. A child that fails to start stops the ones started before it
 * (in reverse) and the start fails with that child's failure. */
typedef struct tw_multi_service tw_multi_service;

int tw_multi_service_new(tw_reactor *r, const char *name, tw_multi_service **out);
tw_service *tw_multi_service_base(tw_multi_service *m);
/* Adds child (which must have no parent); TW_EEXIST when a child of that name
 * is there already (the caller keeps child). Adding to a running
 * multi-service starts the child at once; a start failure is returned and
 * the child is not added. */
int tw_multi_service_add(tw_multi_service *m, tw_service *child, tw_failure **failure);
/* Removes the named child and gives it back to the caller (NULL if none),
 * stopping it first when the multi-service runs: *stopped (may be NULL)
 * receives that stop's deferred, or an already-fired one. */
tw_service *tw_multi_service_remove(tw_multi_service *m, const char *name, tw_deferred **stopped);
tw_service *tw_multi_service_get(tw_multi_service *m, const char *name);
size_t tw_multi_service_count(const tw_multi_service *m);
/* Keeps data for the multi-service (a factory its servers use, the state a
 * plugin made) and calls release(data) when the multi-service is released,
 * after its children: so the children may use it until they are gone. One
 * per multi-service (a second call releases the first data at once).
 * release may be NULL. */
void tw_multi_service_keep(tw_multi_service *m, void *data, tw_release_fn release);
/* The i-th child in the order added (NULL when out of range), to walk a tree
 * (twined asks each server where it listens). */
tw_service *tw_multi_service_child_at(tw_multi_service *m, size_t i);
/* The multi-service s is, or NULL when s is another kind of service. */
tw_multi_service *tw_service_as_multi(tw_service *s);

/* ---- Stock services */

/* A server on an endpoint (StreamServerEndpointService). The endpoint is
 * listened on in privileged_start when it is called, else in start; stop
 * stops listening (connections already accepted go on) and fires when the
 * port is closed. The service takes the endpoint whatever this returns
 * (freed with the service, or at once on error); the factory must outlive
 * it. Returns 0 and *out, TW_EINVAL (a NULL argument) or TW_ENOMEM. A
 * failed listen fails the start with the endpoint's failure ("tcp: cannot
 * listen on 0.0.0.0:80: permission denied"), named by the wrapper. */
int tw_server_service_new(tw_reactor *r, const char *name, tw_endpoint *endpoint,
                          tw_factory *factory, tw_service **out);
/* The listening port while running or privileged-started (NULL otherwise,
 * and for a service that is not a server service): to ask where it
 * listens. */
tw_listening_port *tw_server_service_port(tw_service *s);

/* A client kept connected (tw_client_service, client.h) as a service:
 * start starts it, stop stops it (and closes the connection). The service
 * takes the endpoint whatever this returns (freed with the service, or at
 * once on error); the factory must outlive it. *client (may be NULL)
 * receives the tw_client_service, to set its retry policy or ask
 * when_connected. */
int tw_client_service_as_service(tw_reactor *r, const char *name, tw_endpoint *endpoint,
                                 tw_factory *factory, tw_service **out, tw_client_service **client);

/* fn(arg) every `interval` seconds while running (TimerService: the first
 * call at start; a failure returned stops the timer and is logged). fn may
 * return a deferred: the next call waits for it. TW_EINVAL for a NULL fn or
 * a negative, NaN or infinite interval. */
int tw_timer_service_new(tw_reactor *r, const char *name, double interval,
                         tw_result (*fn)(void *arg), void *arg, tw_service **out);

#endif
