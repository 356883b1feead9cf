/* Connectors (connectTCP, connectUNIX; Twisted's BaseConnector and the
 * connecting half of tcp.BaseClient): a non-blocking connect watched for
 * writability, a timeout, and the ClientFactory calls around each attempt.
 *
 * Re-entrancy: the factory's callbacks may reconnect, stop, disconnect or
 * free the connector. `busy` counts the factory calls in progress on it;
 * tw_connector_free inside one only marks it freed (tearing down the attempt
 * at once), and the memory goes when the outermost call returns. A
 * connector freed with a live connection stays allocated, unseen, until
 * that connection's lost hook, which then stops the factory and frees it.
 *
 * Errors that connect() reports at once (ECONNREFUSED on a Unix socket
 * without a listener) are still delivered from the reactor: they are kept
 * in `pending` and the attempt's timer is armed for 0 s, so
 * client_connection_failed never runs inside the call that started the
 * attempt.
 *
 * Completions (a reactor whose backend has them, completion.h): a TCP
 * attempt connects through the ring instead of waiting for writability. The
 * request belongs to a small block of its own (with a copy of the address),
 * not to the connector, which may be freed, or start another attempt, before
 * the request's completion comes: the block then goes alone. */
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <unistd.h>

#include <twine/error.h>
#include <twine/log.h>
#include <twine/net.h>

#include "net/net-internal.h"
#include "reactor/completion.h"

#define LOG_NS                          "twine.net"
#define DEFAULT_TIMEOUT                 30.0

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

struct stream_connector {
    tw_connector base;
    tw_reactor *r;
    tw_factory *factory;
    tw_address dest;
    tw_address bind_to; /* len 0: none */
    double timeout;     /* INFINITY: none */
    tw_connector_state state;

    /* The attempt (CONNECTING). */
    int fd;      /* -1 once closed, or when `pending` is set */
    int pending; /* an error connect() gave at once, reported from the timer */
    tw_io io;
    tw_timer timer; /* the timeout, or the 0 s report of `pending` */
    tw_handle handle;

    struct connect_op *cop; /* the attempt's request through completions, or NULL */

    /* The connection (CONNECTED). */
    tw_protocol *proto;

    unsigned attempt; /* counts attempts started, to tell one from the next */
    unsigned busy;
    bool freed;
    bool factory_started;
    bool lost_hook_set; /* the connection will call back when it ends */
};

static const struct tw__connector_ops stream_connector_ops;

struct connect_op {
    struct tw__cq_target target;
    struct stream_connector *c; /* NULL once the attempt is over */
    tw_address addr;
};

static struct stream_connector *sc(tw_connector *c)
{
    return (struct stream_connector *)c;
}

/* ---- Around factory calls */

static void enter(struct stream_connector *c)
{
    c->busy++;
}

/* After the factory's callbacks: an attempt that ended without another
 * starting stops the factory (BaseConnector.connectionFailed/Lost), and a
 * connector freed meanwhile goes. */
static void leave(struct stream_connector *c)
{
    if (--c->busy > 0)
        return;
    if (c->state == TW_CONNECTOR_DISCONNECTED && c->factory_started) {
        c->factory_started = false;
        c->busy++;
        tw_factory_do_stop(c->factory);
        c->busy--;
    }
    if (c->freed && c->busy == 0 && !c->lost_hook_set)
        tw_free(c);
}

/* ---- The attempt */

/* The attempt no longer waits for its request (its block goes when the
 * completion comes). */
static void cop_detach(struct stream_connector *c)
{
    if (!c->cop)
        return;
    c->cop->c = NULL;
    c->cop = NULL;
    tw__reactor_count_io(c->r, 0, -1);
}

static void attempt_teardown(struct stream_connector *c)
{
    if (c->cop) {
        /* With the next submission: the socket is released then (the request
         * holds it). Not at once, which would also run the kernel's pending
         * work, accepting connections nobody has been told of yet. */
        tw__reactor_cq(c->r)->cancel(c->r, &c->cop->target, 1, false);
        cop_detach(c);
    }
    if (c->fd >= 0) {
        tw_reactor_remove_writer(c->r, &c->io);
        close(c->fd);
        c->fd = -1;
    }
    c->pending = 0;
    tw_timer_stop(&c->timer);
    tw_reactor_remove_handle(c->r, &c->handle);
}

static void attempt_failed(struct stream_connector *c, int code)
{
    attempt_teardown(c);
    c->state = TW_CONNECTOR_DISCONNECTED;
    enter(c);
    if (!c->freed && c->factory->ops && c->factory->ops->client_connection_failed) {
        char buf[TW_ADDRESS_STRLEN];
        tw_failure *reason =
            tw_failure_new(code, NULL, "connecting to %s: %s",
                           tw_address_format(&c->dest, buf, sizeof buf), tw_strerror(code));
        c->factory->ops->client_connection_failed(c->factory, &c->base, reason);
        tw_failure_unref(reason);
    }
    leave(c);
}

static void connection_ended(void *arg, tw_failure *reason)
{
    struct stream_connector *c = arg;
    c->lost_hook_set = false;
    c->proto = NULL;
    c->state = TW_CONNECTOR_DISCONNECTED;
    enter(c);
    if (!c->freed && c->factory->ops && c->factory->ops->client_connection_lost)
        c->factory->ops->client_connection_lost(c->factory, &c->base, reason);
    leave(c);
}

static void connected(struct stream_connector *c)
{
    int fd = c->fd;
    cop_detach(c);
    tw_reactor_remove_writer(c->r, &c->io);
    tw_timer_stop(&c->timer);
    tw_reactor_remove_handle(c->r, &c->handle);
    c->fd = -1;

    enter(c);
    unsigned attempt = c->attempt;
    tw_protocol *p = tw_factory_build_protocol(c->factory, &c->dest);
    if (!p || c->freed || c->state != TW_CONNECTOR_CONNECTING || c->attempt != attempt) {
        /* Refused, or the builder freed or stopped the connector (and maybe
         * started another attempt, which goes on: this one is over). */
        close(fd);
        if (p)
            tw_protocol_release(p);
        if (c->state == TW_CONNECTOR_CONNECTING && c->attempt == attempt)
            attempt_failed(c, TW_ECONNABORTED);
        leave(c);
        return;
    }
    c->state = TW_CONNECTOR_CONNECTED;
    c->proto = p;
    tw_transport *t = NULL;
    int rc = tw__stream_open(c->r, fd, p, &t);
    if (rc < 0) {
        c->proto = NULL;
        c->state = TW_CONNECTOR_CONNECTING;
        attempt_failed(c, rc);
        leave(c);
        return;
    }
    if (tw__stream_set_lost_hook(t, connection_ended, c) < 0) {
        /* Unwatched, the connection would leave the connector CONNECTED
         * forever: drop it, and report its loss now. */
        tw_transport_abort_connection(t);
        c->proto = NULL;
        c->state = TW_CONNECTOR_DISCONNECTED;
        if (!c->freed && c->factory->ops && c->factory->ops->client_connection_lost) {
            tw_failure *reason =
                tw_failure_new(TW_ENOMEM, NULL, "no memory to watch the connection");
            c->factory->ops->client_connection_lost(c->factory, &c->base, reason);
            tw_failure_unref(reason);
        }
        leave(c);
        return;
    }
    c->lost_hook_set = true;
    if (!c->freed && c->base.connected_hook)
        c->base.connected_hook(&c->base, p, c->base.connected_arg);
    leave(c);
}

static void writable(tw_io *io, unsigned events)
{
    struct stream_connector *c = io->data;
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err == 0) {
        /* Writable with no error can still be a connect that has not
         * finished on some kernels; getpeername tells. */
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        if (getpeername(c->fd, (struct sockaddr *)&ss, &sl) < 0)
            err = errno == ENOTCONN ? ECONNREFUSED : errno;
    }
    if (err != 0)
        attempt_failed(c, -err);
    else
        connected(c);
}

static void cop_done(struct tw__cq_target *t, unsigned op, int res, unsigned flags,
                     const char *data)
{
    struct connect_op *o = container_of(t, struct connect_op, target);
    struct stream_connector *c = o->c;
    tw_free(o);
    if (!c)
        return; /* the attempt is over already */
    c->cop = NULL;
    tw__reactor_count_io(c->r, 0, -1);
    if (flags & TW__CQ_DYING)
        return;
    if (res == -EINPROGRESS || res == -EALREADY) {
        /* Not finished after all: wait for writability as without the ring. */
        int rc = tw_reactor_add_writer(c->r, &c->io);
        if (rc < 0)
            attempt_failed(c, rc);
        return;
    }
    if (res < 0)
        attempt_failed(c, res);
    else
        connected(c);
}

/* Starts connecting through the ring. Returns 0, or an error with nothing
 * started (the caller then waits for writability instead). */
static int cop_start(struct stream_connector *c, int fd)
{
    const struct tw__cq_ops *cq = tw__reactor_cq(c->r);
    int family = c->dest.u.sa.sa_family;
    /* Unix sockets keep readiness: a full backlog must fail at once (EAGAIN),
     * which the ring would wait out instead. */
    if (!cq || (family != AF_INET && family != AF_INET6))
        return TW_ENOTSUP;
    struct connect_op *o = tw_malloc(sizeof *o);
    if (!o)
        return TW_ENOMEM;
    *o = (struct connect_op){.target = {.complete = cop_done}, .c = c, .addr = c->dest};
    /* The timer first: once the request is made, nothing may fail. */
    int rc = isfinite(c->timeout) ? tw_timer_start(&c->timer, c->timeout) : 0;
    if (rc < 0) {
        tw_free(o);
        return rc;
    }
    rc = cq->connect(c->r, &o->target, 1, fd, &o->addr.u.sa, o->addr.len);
    if (rc < 0) {
        tw_timer_stop(&c->timer);
        tw_free(o);
        return rc;
    }
    c->cop = o;
    tw__reactor_count_io(c->r, 0, 1);
    return 0;
}

static void timer_fired(tw_timer *t)
{
    struct stream_connector *c = container_of(t, struct stream_connector, timer);
    attempt_failed(c, c->pending ? c->pending : TW_ETIMEDOUT);
}

static void handle_closed(tw_handle *h)
{
    /* The reactor is shutting down (disconnectAll): as Twisted's, the
     * attempt fails with a lost connection. */
    attempt_failed(container_of(h, struct stream_connector, handle), TW_ECONNLOST);
}

/* Opens the socket and starts connecting; no factory call. Returns 0 or an
 * error with nothing left open. */
static int attempt_open(struct stream_connector *c)
{
    int fd = socket(c->dest.u.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int rc = 0;
    if (c->bind_to.len && bind(fd, &c->bind_to.u.sa, c->bind_to.len) < 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    int pending = 0;
    tw_io_init(&c->io, fd, writable, c);
    rc = cop_start(c, fd);
    if (rc == 0)
        goto started;
    if (rc == TW_ENOMEM) {
        close(fd);
        return rc;
    }
    rc = 0;
    while (connect(fd, &c->dest.u.sa, c->dest.len) < 0) {
        if (errno == EINTR)
            continue;
        /* A Unix socket whose listener's backlog is full answers EAGAIN
         * and is not connecting: reported as a failure, as other errors. */
        if (errno != EINPROGRESS)
            pending = -errno;
        break;
    }
    if (pending) {
        close(fd);
        fd = -1;
        rc = tw_timer_start(&c->timer, 0);
    } else {
        tw_io_init(&c->io, fd, writable, c);
        rc = tw_reactor_add_writer(c->r, &c->io);
        if (rc == 0 && isfinite(c->timeout)) {
            rc = tw_timer_start(&c->timer, c->timeout);
            if (rc < 0)
                tw_reactor_remove_writer(c->r, &c->io);
        }
    }
    if (rc < 0) {
        if (fd >= 0)
            close(fd);
        return rc;
    }
started:
    c->fd = fd;
    c->pending = pending;
    tw_reactor_add_handle(c->r, &c->handle, handle_closed);
    c->state = TW_CONNECTOR_CONNECTING;
    c->attempt++;
    return 0;
}

/* Starts the factory for the attempt and tells it (startedConnecting). */
static void attempt_announce(struct stream_connector *c)
{
    enter(c);
    if (!c->factory_started) {
        c->factory_started = true;
        tw_factory_do_start(c->factory);
    }
    if (!c->freed && c->state == TW_CONNECTOR_CONNECTING && c->factory->ops &&
        c->factory->ops->started_connecting)
        c->factory->ops->started_connecting(c->factory, &c->base);
    leave(c);
}

/* ---- Ops */

static int op_connect(tw_connector *base)
{
    struct stream_connector *c = sc(base);
    if (c->freed)
        return TW_EINVAL;
    if (c->state != TW_CONNECTOR_DISCONNECTED)
        return TW_EBUSY;
    int rc = attempt_open(c);
    if (rc < 0)
        return rc;
    attempt_announce(c);
    return 0;
}

static int op_stop_connecting(tw_connector *base)
{
    struct stream_connector *c = sc(base);
    if (c->state != TW_CONNECTOR_CONNECTING)
        return TW_ENOTCONN;
    attempt_failed(c, TW_ECANCELED);
    return 0;
}

static void op_disconnect(tw_connector *base)
{
    struct stream_connector *c = sc(base);
    if (c->state == TW_CONNECTOR_CONNECTING)
        op_stop_connecting(base);
    else if (c->state == TW_CONNECTOR_CONNECTED && c->proto && c->proto->transport)
        tw_transport_lose_connection(c->proto->transport);
}

static tw_connector_state op_get_state(const tw_connector *base)
{
    return ((const struct stream_connector *)base)->state;
}

static const tw_address *op_get_destination(const tw_connector *base)
{
    return &((const struct stream_connector *)base)->dest;
}

static tw_protocol *op_protocol(const tw_connector *base)
{
    const struct stream_connector *c = (const struct stream_connector *)base;
    return c->state == TW_CONNECTOR_CONNECTED ? c->proto : NULL;
}

static void op_free(tw_connector *base)
{
    struct stream_connector *c = sc(base);
    if (c->freed)
        return;
    c->freed = true;
    if (c->state == TW_CONNECTOR_CONNECTING) {
        attempt_teardown(c);
        c->state = TW_CONNECTOR_DISCONNECTED;
    }
    /* leave() stops the factory if an attempt of ours had started it and no
     * connection is live, and frees unless a callback or the connection still
     * needs the memory. */
    enter(c);
    leave(c);
}

static const struct tw__connector_ops stream_connector_ops = {
    .connect = op_connect,
    .stop_connecting = op_stop_connecting,
    .disconnect = op_disconnect,
    .get_state = op_get_state,
    .get_destination = op_get_destination,
    .protocol = op_protocol,
    .free = op_free,
};

static bool family_ok(const tw_address *a)
{
    if (!a || a->len == 0 || a->len > sizeof a->u)
        return false;
    switch (a->u.sa.sa_family) {
    case AF_INET:
        return a->len >= sizeof(struct sockaddr_in);
    case AF_INET6:
        return a->len >= sizeof(struct sockaddr_in6);
    case AF_UNIX: /* the union is longer than a sockaddr_un: bound it by the latter */
        return a->len > offsetof(struct sockaddr_un, sun_path) &&
               a->len <= sizeof(struct sockaddr_un);
    default:
        return false;
    }
}

int tw_connect_stream(tw_reactor *r, const tw_address *addr, const tw_connect_options *opts,
                      tw_factory *factory, tw_connector **out)
{
    if (!r || !out)
        return TW_EINVAL;
    const struct tw__net_hooks *hooks = tw__reactor_net_hooks(r);
    if (hooks && hooks->connect)
        return hooks->connect(hooks->arg, r, addr, opts, factory, out);

    tw_connect_options o = opts ? *opts : (tw_connect_options){0};
    if (!factory || !family_ok(addr) || isnan(o.timeout) || o.timeout < 0)
        return TW_EINVAL;
    if (o.bind_to && (!family_ok(o.bind_to) || o.bind_to->u.sa.sa_family != addr->u.sa.sa_family))
        return TW_EINVAL;

    struct stream_connector *c = tw_calloc(1, sizeof *c);
    if (!c)
        return TW_ENOMEM;
    c->base.ops = &stream_connector_ops;
    c->r = r;
    c->factory = factory;
    c->dest = *addr;
    if (o.bind_to)
        c->bind_to = *o.bind_to;
    c->timeout = o.timeout > 0 ? o.timeout : DEFAULT_TIMEOUT;
    c->state = TW_CONNECTOR_DISCONNECTED;
    c->fd = -1;
    tw_timer_init(&c->timer, tw_reactor_clock(r), timer_fired);

    int rc = attempt_open(c);
    if (rc < 0) {
        tw_free(c);
        return rc;
    }
    *out = &c->base;
    /* Held across started_connecting so that a free inside it leaves the
     * memory valid until here; *out then reads NULL. */
    enter(c);
    attempt_announce(c);
    if (c->freed)
        *out = NULL;
    leave(c);
    return 0;
}
