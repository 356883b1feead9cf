/* Services (service.h): the lifecycle wrappers, the multi-service, and the
 * stock server, client and timer services.
 *
 * The wrappers own the bookkeeping (running, privileged_started) so that
 * every ops table only does its work, and so that the calls are idempotent
 * whatever the ops do. A multi-service's children form a singly linked list
 * in the order they were added; walking it backwards to stop them is
 * quadratic, which costs nothing for the handful of children a program has
 * and keeps stop free of allocation but for the deferred it returns. */
#include <math.h>
#include <string.h>

#include <twine/alloc.h>
#include <twine/error.h>
#include <twine/log.h>
#include <twine/net.h>
#include <twine/service.h>
#include <twine/task.h>

#define NS "twine.service"

static const tw_service_ops multi_ops;

static const char *label(const tw_service *s)
{
    return s->name ? s->name : s->ops->kind ? s->ops->kind : "service";
}

int tw_service_init(tw_service *s, const tw_service_ops *ops, tw_reactor *r, const char *name)
{
    if (!s || !ops)
        return TW_EINVAL;
    *s = (tw_service){.ops = ops, .reactor = r};
    if (name) {
        s->name = tw_strdup(name);
        if (!s->name)
            return TW_ENOMEM;
    }
    return 0;
}

/* Hands the failure of a start to the caller, saying which service failed.
 * A multi-service passes its child's failure on as it is: the child's
 * wrapper has named the child already. */
static int report(tw_service *s, int rc, tw_failure *f, tw_failure **failure)
{
    if (!f)
        f = tw_failure_new(rc, NULL, NULL);
    if (s->ops != &multi_ops)
        f = tw_failure_new(rc, f, "service '%s' failed to start: %s", label(s),
                           tw_failure_message(f));
    if (failure)
        *failure = f;
    else
        tw_failure_unref(f);
    return rc;
}

int tw_service_privileged_start(tw_service *s, tw_failure **failure)
{
    if (failure)
        *failure = NULL;
    if (!s)
        return TW_EINVAL;
    if (s->running || s->privileged_started || !s->ops->privileged_start)
        return 0;
    tw_failure *f = NULL;
    int rc = s->ops->privileged_start(s, &f);
    if (rc < 0)
        return report(s, rc, f, failure);
    tw_failure_unref(f); /* an op that set one and succeeded */
    s->privileged_started = true;
    return 0;
}

static tw_result log_stop_failure(tw_result result, void *kind)
{
    tw_log_failure(TW_LOG_WARN, NS, result.failure, "a %s service failed to stop",
                   (const char *)kind);
    tw_result_release(&result);
    return tw_result_ok(NULL, NULL);
}

tw_deferred *tw_service_stop(tw_service *s)
{
    if (!s || (!s->running && !s->privileged_started))
        return tw_succeed(tw_result_ok(NULL, NULL));
    s->running = false;
    s->privileged_started = false;
    tw_deferred *d = s->ops->stop ? s->ops->stop(s) : NULL;
    if (!d)
        return tw_succeed(tw_result_ok(NULL, NULL));
    /* Out of memory for the pair: the failure, if one comes, is then
     * logged as unhandled instead, which still says it. */
    tw_deferred_add_errback(d, log_stop_failure, (void *)(s->ops->kind ? s->ops->kind : "?"));
    return d;
}

int tw_service_start(tw_service *s, tw_failure **failure)
{
    if (failure)
        *failure = NULL;
    if (!s)
        return TW_EINVAL;
    if (s->running)
        return 0;
    tw_failure *f = NULL;
    int rc = s->ops->start ? s->ops->start(s, &f) : 0;
    if (rc < 0) {
        /* A failed start leaves the service stopped: undo the privileged
         * part (a port opened) too. */
        if (s->privileged_started)
            tw_deferred_unref(tw_service_stop(s));
        return report(s, rc, f, failure);
    }
    tw_failure_unref(f);
    s->running = true;
    return 0;
}

static void multi_detach(tw_service *child);

void tw_service_release(tw_service *s)
{
    if (!s)
        return;
    if (s->running || s->privileged_started) {
        tw_log_warn(NS, "service '%s' released while running: stopping it", label(s));
        tw_deferred_unref(tw_service_stop(s));
    }
    if (s->parent)
        multi_detach(s);
    if (s->ops->free)
        s->ops->free(s);
    tw_free(s->name);
    tw_free(s);
}

/* ---- Multi-service */

struct tw_multi_service {
    tw_service base;
    tw_service *first, *last;
    size_t count;
    void *kept; /* tw_multi_service_keep's, released after the children */
    tw_release_fn kept_release;
};

static tw_multi_service *as_multi(tw_service *s)
{
    return (tw_multi_service *)s;
}

tw_multi_service *tw_service_as_multi(tw_service *s)
{
    return s && s->ops == &multi_ops ? as_multi(s) : NULL;
}

tw_service *tw_multi_service_base(tw_multi_service *m)
{
    return m ? &m->base : NULL;
}

/* The child before `child` (NULL for the first). */
static tw_service *previous(tw_multi_service *m, tw_service *child)
{
    tw_service *prev = NULL;
    for (tw_service *c = m->first; c && c != child; c = c->next_sibling)
        prev = c;
    return prev;
}

static void unlink_child(tw_multi_service *m, tw_service *child)
{
    tw_service *prev = previous(m, child);
    if (prev)
        prev->next_sibling = child->next_sibling;
    else
        m->first = child->next_sibling;
    if (m->last == child)
        m->last = prev;
    child->next_sibling = NULL;
    child->parent = NULL;
    m->count--;
}

static void multi_detach(tw_service *child)
{
    unlink_child(as_multi(child->parent), child);
}

/* Stops, last first, the children before `upto` (NULL: all) that are
 * running or privileged-started; their deferreds go on on their own. */
static void stop_children_before(tw_multi_service *m, tw_service *upto)
{
    for (tw_service *c = previous(m, upto); c; c = previous(m, c))
        tw_deferred_unref(tw_service_stop(c));
}

static int multi_privileged_start(tw_service *s, tw_failure **failure)
{
    tw_multi_service *m = as_multi(s);
    for (tw_service *c = m->first; c; c = c->next_sibling) {
        int rc = tw_service_privileged_start(c, failure);
        if (rc < 0) {
            stop_children_before(m, c);
            return rc;
        }
    }
    return 0;
}

static int multi_start(tw_service *s, tw_failure **failure)
{
    tw_multi_service *m = as_multi(s);
    for (tw_service *c = m->first; c; c = c->next_sibling) {
        int rc = tw_service_start(c, failure);
        if (rc < 0) {
            /* The failed child stopped itself; the ones after it may hold
             * what their privileged start opened, the ones before run. */
            for (tw_service *later = c->next_sibling; later; later = later->next_sibling)
                if (later->privileged_started)
                    tw_deferred_unref(tw_service_stop(later));
            stop_children_before(m, c);
            return rc;
        }
    }
    return 0;
}

/* Counts the children's stops down to the multi-service's own deferred. */
struct gather {
    tw_deferred *d;
    size_t pending;
};

static void gather_done(struct gather *g)
{
    if (--g->pending > 0)
        return;
    tw_deferred_callback(g->d, tw_result_ok(NULL, NULL));
    tw_deferred_unref(g->d);
    tw_free(g);
}

static tw_result gather_one(tw_result result, void *arg)
{
    tw_result_release(&result);
    gather_done(arg);
    return tw_result_ok(NULL, NULL);
}

static tw_deferred *multi_stop(tw_service *s)
{
    tw_multi_service *m = as_multi(s);
    struct gather *g = tw_malloc(sizeof *g);
    tw_deferred *d = g ? tw_deferred_new(NULL, NULL) : NULL;
    if (!d) {
        tw_free(g);
        stop_children_before(m, NULL);
        return NULL;
    }
    g->d = tw_deferred_ref(d);
    g->pending = 1; /* held while the children are asked, so it fires once, at the end */
    for (tw_service *c = m->last; c; c = previous(m, c)) {
        tw_deferred *cd = tw_service_stop(c);
        if (!cd)
            continue;
        g->pending++;
        if (tw_deferred_add_callbacks(cd, gather_one, gather_one, g, NULL) < 0)
            g->pending--; /* not waited for: it stops on its own */
        tw_deferred_unref(cd);
    }
    gather_done(g);
    return d;
}

static void multi_free(tw_service *s)
{
    tw_multi_service *m = as_multi(s);
    while (m->last) {
        tw_service *c = m->last;
        unlink_child(m, c);
        tw_service_release(c);
    }
    if (m->kept_release)
        m->kept_release(m->kept);
}

void tw_multi_service_keep(tw_multi_service *m, void *data, tw_release_fn release)
{
    if (!m)
        return;
    if (m->kept_release)
        m->kept_release(m->kept);
    m->kept = data;
    m->kept_release = release;
}

static const tw_service_ops multi_ops = {
    .kind = "multi",
    .privileged_start = multi_privileged_start,
    .start = multi_start,
    .stop = multi_stop,
    .free = multi_free,
};

int tw_multi_service_new(tw_reactor *r, const char *name, tw_multi_service **out)
{
    if (!out)
        return TW_EINVAL;
    *out = NULL;
    tw_multi_service *m = tw_calloc(1, sizeof *m);
    if (!m)
        return TW_ENOMEM;
    int rc = tw_service_init(&m->base, &multi_ops, r, name);
    if (rc < 0) {
        tw_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

tw_service *tw_multi_service_get(tw_multi_service *m, const char *name)
{
    if (!m || !name)
        return NULL;
    for (tw_service *c = m->first; c; c = c->next_sibling)
        if (c->name && strcmp(c->name, name) == 0)
            return c;
    return NULL;
}

size_t tw_multi_service_count(const tw_multi_service *m)
{
    return m ? m->count : 0;
}

tw_service *tw_multi_service_child_at(tw_multi_service *m, size_t i)
{
    if (!m)
        return NULL;
    tw_service *c = m->first;
    while (c && i--)
        c = c->next_sibling;
    return c;
}

int tw_multi_service_add(tw_multi_service *m, tw_service *child, tw_failure **failure)
{
    if (failure)
        *failure = NULL;
    if (!m || !child || child->parent || child == &m->base)
        return TW_EINVAL;
    for (tw_service *p = m->base.parent; p; p = p->parent)
        if (p == child)
            return TW_EINVAL; /* a cycle */
    if (child->name && tw_multi_service_get(m, child->name)) {
        if (failure)
            *failure =
                tw_failure_new(TW_EEXIST, NULL, "a service named '%s' exists already", child->name);
        return TW_EEXIST;
    }
    if (m->base.running) {
        /* As Twisted's addService: privileged start, then start. */
        int rc = tw_service_privileged_start(child, failure);
        if (rc == 0)
            rc = tw_service_start(child, failure);
        if (rc < 0) {
            tw_deferred_unref(tw_service_stop(child));
            return rc;
        }
    }
    child->parent = &m->base;
    child->next_sibling = NULL;
    if (m->last)
        m->last->next_sibling = child;
    else
        m->first = child;
    m->last = child;
    m->count++;
    return 0;
}

tw_service *tw_multi_service_remove(tw_multi_service *m, const char *name, tw_deferred **stopped)
{
    if (stopped)
        *stopped = NULL;
    tw_service *child = tw_multi_service_get(m, name);
    if (!child)
        return NULL;
    unlink_child(m, child);
    tw_deferred *d = tw_service_stop(child);
    if (stopped)
        *stopped = d;
    else
        tw_deferred_unref(d);
    return child;
}

/* ---- Server on an endpoint (StreamServerEndpointService) */

struct server_service {
    tw_service base;
    tw_endpoint *endpoint;
    tw_factory *factory;
    tw_listening_port *port;
    tw_deferred *pending; /* a listen not fired yet (endpoint types that listen later) */
    tw_failure *error;    /* a failure that came back while listen was being called */
    bool listening_now;   /* inside do_listen */
};

static const tw_service_ops server_ops;

static tw_result server_listened(tw_result result, void *arg)
{
    struct server_service *ss = arg;
    ss->port = tw_result_take(&result);
    tw_result_release(&result);
    return tw_result_ok(NULL, NULL);
}

static tw_result server_listen_failed(tw_result result, void *arg)
{
    struct server_service *ss = arg;
    if (ss->listening_now) {
        ss->error = result.failure;
        return tw_result_ok(NULL, NULL);
    }
    /* A listen that failed after start returned (Twisted logs it too). */
    if (!tw_failure_check(result.failure, TW_ECANCELED))
        tw_log_failure(TW_LOG_ERROR, NS, result.failure, "service '%s' could not listen",
                       label(&ss->base));
    tw_result_release(&result);
    return tw_result_ok(NULL, NULL);
}

static int server_listen(struct server_service *ss, tw_failure **failure)
{
    if (ss->port || ss->pending)
        return 0;
    tw_deferred *d = tw_endpoint_listen(ss->endpoint, ss->factory);
    if (!d)
        return TW_ENOMEM;
    ss->listening_now = true;
    int rc = tw_deferred_add_callbacks(d, server_listened, server_listen_failed, ss, NULL);
    ss->listening_now = false;
    if (rc < 0) {
        tw_deferred_cancel(d);
        tw_deferred_unref(d); /* a port it holds is stopped with its result */
        return rc;
    }
    if (ss->error) {
        tw_failure *f = ss->error;
        ss->error = NULL;
        tw_deferred_unref(d);
        *failure = f;
        return tw_failure_code(f);
    }
    if (tw_deferred_called(d))
        tw_deferred_unref(d);
    else
        ss->pending = d;
    return 0;
}

static int server_privileged_start(tw_service *s, tw_failure **failure)
{
    return server_listen((struct server_service *)s, failure);
}

static int server_start(tw_service *s, tw_failure **failure)
{
    return server_listen((struct server_service *)s, failure);
}

static void server_drop_pending(struct server_service *ss)
{
    tw_deferred *p = ss->pending;
    ss->pending = NULL;
    if (p) {
        tw_deferred_cancel(p);
        tw_deferred_unref(p);
    }
}

static tw_deferred *server_stop(tw_service *s)
{
    struct server_service *ss = (struct server_service *)s;
    server_drop_pending(ss);
    tw_listening_port *port = ss->port;
    ss->port = NULL;
    return port ? tw_listening_port_stop(port) : NULL;
}

static void server_free(tw_service *s)
{
    struct server_service *ss = (struct server_service *)s;
    server_drop_pending(ss);
    tw_endpoint_free(ss->endpoint);
}

static const tw_service_ops server_ops = {
    .kind = "server",
    .privileged_start = server_privileged_start,
    .start = server_start,
    .stop = server_stop,
    .free = server_free,
};

int tw_server_service_new(tw_reactor *r, const char *name, tw_endpoint *endpoint,
                          tw_factory *factory, tw_service **out)
{
    if (out)
        *out = NULL;
    if (!endpoint || !factory || !out) {
        tw_endpoint_free(endpoint);
        return TW_EINVAL;
    }
    struct server_service *ss = tw_calloc(1, sizeof *ss);
    int rc = ss ? tw_service_init(&ss->base, &server_ops, r, name) : TW_ENOMEM;
    if (rc < 0) {
        tw_free(ss);
        tw_endpoint_free(endpoint);
        return rc;
    }
    ss->endpoint = endpoint;
    ss->factory = factory;
    *out = &ss->base;
    return 0;
}

tw_listening_port *tw_server_service_port(tw_service *s)
{
    if (!s || s->ops != &server_ops)
        return NULL;
    return ((struct server_service *)s)->port;
}

/* ---- A client kept connected (ClientService) */

struct client_service {
    tw_service base;
    tw_endpoint *endpoint;
    tw_client_service *client;
};

static int client_start(tw_service *s, tw_failure **failure)
{
    struct client_service *cs = (struct client_service *)s;
    int rc = tw_client_service_start(cs->client);
    if (rc < 0)
        *failure = tw_failure_new(rc, NULL, "cannot start connecting: %s", tw_strerror(rc));
    return rc;
}

static tw_deferred *client_stop(tw_service *s)
{
    return tw_client_service_stop(((struct client_service *)s)->client);
}

static void client_free(tw_service *s)
{
    struct client_service *cs = (struct client_service *)s;
    tw_client_service_free(cs->client);
    tw_endpoint_free(cs->endpoint);
}

static const tw_service_ops client_ops = {
    .kind = "client",
    .start = client_start,
    .stop = client_stop,
    .free = client_free,
};

int tw_client_service_as_service(tw_reactor *r, const char *name, tw_endpoint *endpoint,
                                 tw_factory *factory, tw_service **out, tw_client_service **client)
{
    if (out)
        *out = NULL;
    if (client)
        *client = NULL;
    if (!r || !endpoint || !factory || !out) {
        tw_endpoint_free(endpoint);
        return TW_EINVAL;
    }
    struct client_service *cs = tw_calloc(1, sizeof *cs);
    int rc = cs ? tw_service_init(&cs->base, &client_ops, r, name) : TW_ENOMEM;
    if (rc == 0)
        rc = tw_client_service_new(r, endpoint, factory, &cs->client);
    if (rc < 0) {
        if (cs)
            tw_free(cs->base.name);
        tw_free(cs);
        tw_endpoint_free(endpoint);
        return rc;
    }
    cs->endpoint = endpoint;
    *out = &cs->base;
    if (client)
        *client = cs->client;
    return 0;
}

/* ---- A function on a timer (TimerService) */

struct timer_service {
    tw_service base;
    double interval;
    tw_result (*fn)(void *arg);
    void *arg;
    tw_looping_call *loop;
    tw_deferred *loop_done; /* the loop's start deferred, until stop hands it out */
};

static tw_result timer_tick(tw_looping_call *lc, uint64_t count, void *arg)
{
    struct timer_service *ts = arg;
    return ts->fn(ts->arg);
}

static tw_result timer_failed(tw_result result, void *arg)
{
    struct timer_service *ts = arg;
    if (!tw_failure_check(result.failure, TW_ECANCELED))
        tw_log_failure(TW_LOG_ERROR, NS, result.failure, "timer service '%s' failed: stopped",
                       label(&ts->base));
    tw_result_release(&result);
    return tw_result_ok(NULL, NULL);
}

static tw_result timer_value(tw_result result, void *arg)
{
    tw_result_release(&result); /* the borrowed looping call */
    return tw_result_ok(NULL, NULL);
}

static int timer_start(tw_service *s, tw_failure **failure)
{
    struct timer_service *ts = (struct timer_service *)s;
    tw_deferred *d;
    int rc = tw_looping_call_start(ts->loop, ts->interval, true, &d);
    if (rc < 0) {
        *failure = tw_failure_new(rc, NULL, "cannot start the timer: %s", tw_strerror(rc));
        return rc;
    }
    if (tw_deferred_add_callbacks(d, timer_value, timer_failed, ts, NULL) < 0)
        tw_log_error(NS, "timer service '%s': out of memory: its failure will be unhandled",
                     label(s));
    tw_deferred_unref(ts->loop_done);
    ts->loop_done = d;
    return 0;
}

static tw_deferred *timer_stop(tw_service *s)
{
    struct timer_service *ts = (struct timer_service *)s;
    if (tw_looping_call_running(ts->loop))
        tw_looping_call_stop(ts->loop);
    tw_deferred *d = ts->loop_done; /* fires when the last call is over */
    ts->loop_done = NULL;
    return d;
}

static void timer_free(tw_service *s)
{
    struct timer_service *ts = (struct timer_service *)s;
    tw_looping_call_free(ts->loop);
    tw_deferred_unref(ts->loop_done);
}

static const tw_service_ops timer_ops = {
    .kind = "timer",
    .start = timer_start,
    .stop = timer_stop,
    .free = timer_free,
};

int tw_timer_service_new(tw_reactor *r, const char *name, double interval,
                         tw_result (*fn)(void *arg), void *arg, tw_service **out)
{
    if (out)
        *out = NULL;
    if (!r || !fn || !out || !(interval >= 0) || isinf(interval))
        return TW_EINVAL;
    struct timer_service *ts = tw_calloc(1, sizeof *ts);
    int rc = ts ? tw_service_init(&ts->base, &timer_ops, r, name) : TW_ENOMEM;
    if (rc == 0)
        rc = tw_looping_call_new(tw_reactor_clock(r), timer_tick, ts, &ts->loop);
    if (rc < 0) {
        if (ts)
            tw_free(ts->base.name);
        tw_free(ts);
        return rc;
    }
    ts->interval = interval;
    ts->fn = fn;
    ts->arg = arg;
    *out = &ts->base;
    return 0;
}
