/* ClientService (twisted.application.internet): one connection to an
 * endpoint, kept up. The state machine is Twisted's _ClientMachine; each
 * transition below names the Twisted outputs it runs, in their order.
 *
 * Lifetime: the service's factory is embedded in it, and a connector keeps
 * using a factory after the events the service reacts to (it stops the
 * factory once client_connection_failed or the connection's lost hook has
 * returned). So the memory may only go when the factory has been stopped as
 * often as started and no call of ours is on the stack; free marks the
 * service and the last of those moments releases it. The factory's last
 * stop is such a moment: tw_factory_do_stop touches nothing after calling
 * stop_factory. */
#include <math.h>
#include <stddef.h>
#include <unistd.h>

#include <twine/client.h>
#include <twine/error.h>
#include <twine/log.h>

#define LOG_NS                          "twine.client"

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

typedef enum svc_state {
    S_INIT,
    S_CONNECTING,
    S_WAITING,
    S_CONNECTED,
    S_DISCONNECTING,
    S_RESTARTING,
    S_STOPPED,
} svc_state;

/* A pending when_connected (remaining: failures left before it fails; 0:
 * never) or stop deferred. */
struct waiter {
    struct waiter *next;
    tw_deferred *d;
    unsigned remaining;
};

struct wrapper;

struct tw_client_service {
    tw_factory factory; /* the one given to the endpoint: builds wrappers */
    tw_reactor *r;
    tw_endpoint *endpoint;
    tw_factory *user_factory;
    svc_state state;
    bool running; /* Service.running */

    tw_retry_policy_fn policy;
    void *policy_arg;
    tw_backoff backoff;
    tw_clock *clock;
    tw_timer retry; /* _retryCall */
    unsigned failed_attempts;

    tw_deferred *attempt;    /* _connectionInProgress (our reference), or NULL */
    struct wrapper *current; /* the connection (connected, disconnecting, restarting) */

    struct waiter *awaiting; /* when_connected deferreds, oldest first */
    struct waiter *stopping; /* stop deferreds */

    /* Lifetime (see the top of the file). */
    unsigned busy;
    bool factory_running;
    bool freed;
};

/* ---- Lifetime */

/* After any moment that may be the last use: releases a freed service that
 * nothing uses any more. A deferred's chain holds its own reference while
 * it runs, so the attempt may be dropped from inside its callback. */
static void maybe_release(tw_client_service *s)
{
    if (!s->freed || s->busy > 0 || s->factory_running)
        return;
    tw_timer_stop(&s->retry);
    if (s->attempt)
        tw_deferred_unref(s->attempt);
    tw_free(s);
}

static void enter(tw_client_service *s)
{
    s->busy++;
}

/* s may be gone afterwards. */
static void leave(tw_client_service *s)
{
    s->busy--;
    maybe_release(s);
}

/* ---- Waiters */

static struct waiter *waiter_add(struct waiter **list, unsigned remaining)
{
    struct waiter *w = tw_malloc(sizeof *w);
    if (!w)
        return NULL;
    w->d = tw_deferred_new(NULL, NULL);
    if (!w->d) {
        tw_free(w);
        return NULL;
    }
    w->remaining = remaining;
    w->next = NULL;
    while (*list)
        list = &(*list)->next;
    *list = w;
    return w;
}

/* Takes the whole list first, so deferreds added by the callbacks that run
 * wait for the next event (Twisted's swap of the list). */
static void waiters_fire(struct waiter **list, tw_protocol *p, int code)
{
    struct waiter *w = *list;
    *list = NULL;
    while (w) {
        struct waiter *next = w->next;
        if (code < 0)
            tw_deferred_errback(w->d, tw_failure_new(code, NULL, "the client service was stopped"));
        else
            tw_deferred_callback(w->d, tw_result_borrowed(p));
        tw_deferred_unref(w->d);
        tw_free(w);
        w = next;
    }
}

/* _deliverConnectionFailure. */
static void waiters_deliver_failure(tw_client_service *s, tw_failure *f)
{
    struct waiter *ready = NULL, **tail = &ready;
    for (struct waiter **pw = &s->awaiting; *pw;) {
        struct waiter *w = *pw;
        if (w->remaining == 0) {
            pw = &w->next;
        } else if (w->remaining <= 1) {
            *pw = w->next;
            w->next = NULL;
            *tail = w;
            tail = &w->next;
        } else {
            w->remaining--;
            pw = &w->next;
        }
    }
    while (ready) {
        struct waiter *next = ready->next;
        tw_deferred_errback(ready->d, tw_failure_ref(f));
        tw_deferred_unref(ready->d);
        tw_free(ready);
        ready = next;
    }
}

/* ---- The wrapper protocol (_ReconnectingProtocolProxy) */

struct wrapper {
    tw_protocol base;
    tw_protocol *inner;
    tw_client_service *svc; /* NULL once detached */
};

static struct wrapper *wr(tw_protocol *p)
{
    return (struct wrapper *)p;
}

static void client_disconnected(tw_client_service *s, struct wrapper *w);

static void w_made(tw_protocol *p)
{
    tw_protocol_make_connection(wr(p)->inner, p->transport);
}

static void w_data(tw_protocol *p, const char *data, size_t len)
{
    tw_protocol_data_received(wr(p)->inner, data, len);
}

static void w_lost(tw_protocol *p, tw_failure *reason)
{
    struct wrapper *w = wr(p);
    tw_protocol_connection_lost(w->inner, reason);
    if (w->svc)
        client_disconnected(w->svc, w);
}

static void w_read_lost(tw_protocol *p)
{
    tw_protocol *in = wr(p)->inner;
    in->ops->read_connection_lost(in);
}

static void w_write_lost(tw_protocol *p)
{
    tw_protocol *in = wr(p)->inner;
    if (in->ops->write_connection_lost)
        in->ops->write_connection_lost(in);
}

static void w_fd(tw_protocol *p, int fd)
{
    tw_protocol *in = wr(p)->inner;
    if (in->ops->fd_received)
        in->ops->fd_received(in, fd);
    else
        close(fd);
}

static void w_free(tw_protocol *p)
{
    struct wrapper *w = wr(p);
    tw_protocol_release(w->inner);
    tw_free(w);
}

/* Whether read_connection_lost is set changes what end of file does, so the
 * wrapper has it exactly when the wrapped protocol does. */
static const tw_protocol_ops wrapper_ops = {
    .connection_made = w_made,
    .data_received = w_data,
    .connection_lost = w_lost,
    .write_connection_lost = w_write_lost,
    .fd_received = w_fd,
    .free = w_free,
};
static const tw_protocol_ops wrapper_half_close_ops = {
    .connection_made = w_made,
    .data_received = w_data,
    .connection_lost = w_lost,
    .read_connection_lost = w_read_lost,
    .write_connection_lost = w_write_lost,
    .fd_received = w_fd,
    .free = w_free,
};

/* ---- The service's factory (_DisconnectFactory) */

static tw_client_service *svc_of(tw_factory *f)
{
    return (tw_client_service *)f;
}

static tw_protocol *f_build(tw_factory *f, const tw_address *addr)
{
    tw_client_service *s = svc_of(f);
    tw_protocol *inner = tw_factory_build_protocol(s->user_factory, addr);
    if (!inner)
        return NULL;
    struct wrapper *w = tw_calloc(1, sizeof *w);
    if (!w) {
        tw_protocol_release(inner);
        return NULL;
    }
    tw_protocol_init(&w->base,
                     inner->ops->read_connection_lost ? &wrapper_half_close_ops : &wrapper_ops);
    w->base.factory = f;
    w->inner = inner;
    w->svc = s->freed ? NULL : s;
    return &w->base;
}

static void f_start(tw_factory *f)
{
    tw_client_service *s = svc_of(f);
    s->factory_running = true;
    tw_factory_do_start(s->user_factory);
}

static void f_stop(tw_factory *f)
{
    tw_client_service *s = svc_of(f);
    tw_factory_do_stop(s->user_factory);
    s->factory_running = false;
    maybe_release(s);
}

static const tw_factory_ops service_factory_ops = {
    .build_protocol = f_build,
    .start_factory = f_start,
    .stop_factory = f_stop,
};

/* ---- Transitions */

static void finish_stopping(tw_client_service *s)
{
    waiters_fire(&s->stopping, NULL, 0);
}

static void cancel_connect_waiters(tw_client_service *s)
{
    waiters_fire(&s->awaiting, NULL, TW_ECANCELED);
}

static void retry_fired(tw_timer *t);
static void connect_attempt(tw_client_service *s);

/* _wait / _doWait. */
static void wait_and_retry(tw_client_service *s)
{
    s->failed_attempts++;
    double delay = s->policy(s->failed_attempts, s->policy_arg);
    if (!(delay > 0)) /* negative or NaN */
        delay = 0;
    tw_log_info(LOG_NS, "scheduling retry %u to connect in %g seconds", s->failed_attempts, delay);
    int rc = tw_timer_start(&s->retry, delay);
    if (rc < 0)
        tw_log_error(LOG_NS, "cannot schedule retry %u: %s; the client service is stuck",
                     s->failed_attempts, tw_strerror(rc));
}

static tw_result attempt_done(tw_result result, void *arg)
{
    tw_client_service *s = arg;
    enter(s);
    if (!tw_result_is_failure(result)) {
        struct wrapper *w = wr(tw_result_take(&result));
        /* _connecting + _connectionMade -> _connected: _notifyWaiters. A
         * success can only reach us while connecting: stop cancels the
         * attempt first. */
        if (s->state == S_CONNECTING && w && w->svc == s) {
            s->state = S_CONNECTED;
            s->failed_attempts = 0;
            s->current = w;
            waiters_fire(&s->awaiting, w->inner, 0);
        }
    } else {
        tw_failure *f = result.failure;
        if (s->state == S_CONNECTING) {
            /* -> _waiting: _ignoreAndWait, _deliverConnectionFailure */
            s->state = S_WAITING;
            wait_and_retry(s);
            waiters_deliver_failure(s, f);
        } else if (s->state == S_DISCONNECTING) {
            /* -> _stopped: _ignoreAndCancelConnectWaiters,
             * _ignoreAndFinishStopping */
            s->state = S_STOPPED;
            cancel_connect_waiters(s);
            finish_stopping(s);
        }
        tw_result_release(&result);
    }
    leave(s);
    return tw_result_borrowed(NULL);
}

/* _connect. Returns 0, or TW_ENOMEM with nothing started. */
static int start_attempt(tw_client_service *s)
{
    tw_deferred *d = tw_endpoint_connect(s->endpoint, &s->factory);
    if (!d)
        return TW_ENOMEM;
    if (s->attempt)
        tw_deferred_unref(s->attempt);
    s->attempt = d;
    s->state = S_CONNECTING;
    if (tw_deferred_add_callbacks(d, attempt_done, attempt_done, s, NULL) < 0) {
        /* Cannot watch it: abandon it (its TW_ECANCELED then goes
         * unhandled, logged) and count it as a failure. */
        tw_log_error(LOG_NS, "cannot watch a connection attempt: out of memory");
        s->attempt = NULL;
        tw_deferred_cancel(d);
        tw_deferred_unref(d);
        return TW_ENOMEM;
    }
    return 0;
}

/* _connect where a failure to even start is a failed attempt. */
static void connect_attempt(tw_client_service *s)
{
    if (start_attempt(s) == 0)
        return;
    s->state = S_CONNECTING;
    tw_failure *f = tw_failure_new(TW_ENOMEM, NULL, "cannot start a connection attempt");
    attempt_done(tw_result_fail(f), s);
}

static void retry_fired(tw_timer *t)
{
    tw_client_service *s = container_of(t, tw_client_service, retry);
    /* _waiting + _reconnect -> _connecting */
    if (s->state != S_WAITING)
        return;
    enter(s);
    connect_attempt(s);
    leave(s);
}

/* _clientDisconnected, from the wrapper's connection_lost. */
static void client_disconnected(tw_client_service *s, struct wrapper *w)
{
    w->svc = NULL;
    if (s->current == w)
        s->current = NULL;
    enter(s);
    switch (s->state) {
    case S_CONNECTED: /* -> _waiting: _forgetConnection, _wait */
        s->state = S_WAITING;
        wait_and_retry(s);
        break;
    case S_DISCONNECTING: /* -> _stopped: _cancelConnectWaiters, _finishStopping */
        s->state = S_STOPPED;
        cancel_connect_waiters(s);
        finish_stopping(s);
        break;
    case S_RESTARTING: /* -> _connecting: _finishStopping, _connect */
        finish_stopping(s);
        if (s->state == S_RESTARTING)
            connect_attempt(s);
        break;
    default:
        break;
    }
    /* The connection still counts as a user of the factory until its
     * connector stops it: a freed service goes then. */
    leave(s);
}

/* ---- Public */

int tw_client_service_new(tw_reactor *r, tw_endpoint *endpoint, tw_factory *factory,
                          tw_client_service **out)
{
    if (out)
        *out = NULL;
    if (!r || !endpoint || !factory || !out)
        return TW_EINVAL;
    tw_client_service *s = tw_calloc(1, sizeof *s);
    if (!s)
        return TW_ENOMEM;
    tw_factory_init(&s->factory, &service_factory_ops, NULL, 0, s);
    s->r = r;
    s->endpoint = endpoint;
    s->user_factory = factory;
    s->state = S_INIT;
    s->clock = tw_reactor_clock(r);
    tw_backoff_init(&s->backoff, tw_monotonic_ns() ^ (uint64_t)(uintptr_t)s);
    s->policy = tw_backoff_policy;
    s->policy_arg = &s->backoff;
    tw_timer_init(&s->retry, s->clock, retry_fired);
    *out = s;
    return 0;
}

int tw_client_service_set_retry_policy(tw_client_service *s, tw_retry_policy_fn fn, void *arg)
{
    if (!s)
        return TW_EINVAL;
    s->policy = fn ? fn : tw_backoff_policy;
    s->policy_arg = fn ? arg : &s->backoff;
    return 0;
}

tw_backoff *tw_client_service_backoff(tw_client_service *s)
{
    return s ? &s->backoff : NULL;
}

int tw_client_service_set_clock(tw_client_service *s, tw_clock *clock)
{
    if (!s)
        return TW_EINVAL;
    if (tw_timer_active(&s->retry))
        return TW_EBUSY;
    s->clock = clock ? clock : tw_reactor_clock(s->r);
    tw_timer_init(&s->retry, s->clock, retry_fired);
    return 0;
}

int tw_client_service_start(tw_client_service *s)
{
    if (!s || s->freed)
        return TW_EINVAL;
    if (s->running) {
        tw_log_warn(LOG_NS, "duplicate tw_client_service_start");
        return TW_EBUSY;
    }
    int rc = 0;
    /* Running before the attempt: it may fail at once, and a callback of a
     * when_connected deferred may then stop the service. */
    s->running = true;
    enter(s);
    switch (s->state) {
    case S_INIT:
    case S_STOPPED: /* -> _connecting: _connect */
        rc = start_attempt(s);
        break;
    case S_DISCONNECTING: /* -> _restarting: _resetFailedAttempts */
        s->state = S_RESTARTING;
        s->failed_attempts = 0;
        break;
    default: /* running states: `running` said so already */
        break;
    }
    if (rc < 0)
        s->running = false;
    leave(s);
    return rc;
}

bool tw_client_service_running(const tw_client_service *s)
{
    return s && s->running;
}

/* Everything stop does but the deferred; returns after the transitions. */
static void do_stop(tw_client_service *s)
{
    s->running = false;
    switch (s->state) {
    case S_INIT: /* -> _stopped */
        s->state = S_STOPPED;
        break;
    case S_CONNECTING: /* -> _disconnecting: _waitForStop, _stopConnecting
                          (which fails the attempt at once: -> _stopped) */
        s->state = S_DISCONNECTING;
        if (s->attempt)
            tw_deferred_cancel(s->attempt);
        break;
    case S_WAITING: /* -> _stopped: _waitForStop, _cancelConnectWaiters,
                       _stopRetrying, _finishStopping */
        s->state = S_STOPPED;
        cancel_connect_waiters(s);
        tw_timer_stop(&s->retry);
        finish_stopping(s);
        break;
    case S_CONNECTED: /* -> _disconnecting: _waitForStop, _disconnect */
        s->state = S_DISCONNECTING;
        if (s->current && s->current->base.transport)
            tw_transport_lose_connection(s->current->base.transport);
        break;
    case S_RESTARTING: /* -> _disconnecting: _waitForStop */
        s->state = S_DISCONNECTING;
        break;
    case S_DISCONNECTING:
    case S_STOPPED:
        break;
    }
}

tw_deferred *tw_client_service_stop(tw_client_service *s)
{
    if (!s || s->freed)
        return NULL;
    enter(s);
    tw_deferred *d = NULL;
    if (s->state == S_INIT || s->state == S_STOPPED) {
        do_stop(s);
        d = tw_succeed(tw_result_borrowed(NULL));
    } else {
        struct waiter *w = waiter_add(&s->stopping, 0);
        if (w)
            d = tw_deferred_ref(w->d);
        do_stop(s);
    }
    leave(s);
    return d;
}

tw_deferred *tw_client_service_when_connected(tw_client_service *s, unsigned fail_after_failures)
{
    if (!s || s->freed)
        return NULL;
    switch (s->state) {
    case S_CONNECTED:
        return tw_succeed(tw_result_borrowed(s->current ? s->current->inner : NULL));
    case S_STOPPED:
        return tw_fail(tw_failure_new(TW_ECANCELED, NULL, "the client service is stopped"));
    default: {
        struct waiter *w = waiter_add(&s->awaiting, fail_after_failures);
        return w ? tw_deferred_ref(w->d) : NULL;
    }
    }
}

tw_protocol *tw_client_service_protocol(const tw_client_service *s)
{
    return s && s->state == S_CONNECTED && s->current ? s->current->inner : NULL;
}

void tw_client_service_free(tw_client_service *s)
{
    if (!s || s->freed)
        return;
    enter(s);
    /* The abrupt stop: no connection is waited for. */
    s->running = false;
    tw_timer_stop(&s->retry);
    if (s->current) {
        struct wrapper *w = s->current;
        s->current = NULL;
        w->svc = NULL;
        if (w->base.transport)
            tw_transport_lose_connection(w->base.transport);
    }
    s->state = S_STOPPED;
    s->freed = true;
    if (s->attempt) {
        tw_deferred *d = s->attempt;
        s->attempt = NULL;
        tw_deferred_cancel(d); /* attempt_done sees S_STOPPED: ignores it */
        tw_deferred_unref(d);
    }
    cancel_connect_waiters(s);
    finish_stopping(s);
    leave(s);
}
