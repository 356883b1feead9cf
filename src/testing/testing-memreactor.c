/* The memory reactor (proto_helpers.MemoryReactor): a real reactor whose
 * net hooks record listens and connects and hand out fake ports and
 * connectors instead of sockets. */
#include <twine/alloc.h>
#include <twine/error.h>
#include <twine/failure.h>
#include <twine/log.h>
#include <twine/protocol.h>
#include <twine/testing.h>

#include "net/net-internal.h"

#include <string.h>

typedef struct memory_reactor memory_reactor;

/* A record and the state of its connector; lives as long as the memory
 * reactor, so a connection outliving its connector can still report. */
typedef struct connect_record {
    tw_testing_connect pub; /* first: handed out as the record */
    memory_reactor *mr;
    tw_connector_state state;
    bool factory_started;
} connect_record;

typedef struct listen_record {
    tw_testing_listen pub;
} listen_record;

typedef struct fake_port {
    tw_listening_port base;
    listen_record *rec;
} fake_port;

typedef struct fake_connector {
    tw_connector base;
    connect_record *rec;
} fake_connector;

struct memory_reactor {
    struct tw__net_hooks hooks; /* hooks.arg is this */
    listen_record **listens;
    size_t nlistens, listens_cap;
    connect_record **connects;
    size_t nconnects, connects_cap;
};

static const struct tw__port_ops fake_port_ops;
static const struct tw__connector_ops fake_connector_ops;

static memory_reactor *mr_of(const tw_reactor *r);

/* Room for one more pointer in *arr (all or nothing). */
static int grow(void *arrp, size_t n, size_t *cap)
{
    void ***arr = arrp;
    if (n < *cap)
        return 0;
    size_t ncap = *cap ? *cap * 2 : 8;
    void **a = tw_realloc(*arr, ncap * sizeof *a);
    if (!a)
        return TW_ENOMEM;
    *arr = a;
    *cap = ncap;
    return 0;
}

/* ---- Listening */

static int port_get_host(const tw_listening_port *port, tw_address *out)
{
    *out = ((const fake_port *)port)->rec->pub.addr;
    return 0;
}

static void port_stop(tw_listening_port *port)
{
    fake_port *fp = (fake_port *)port;
    listen_record *rec = fp->rec;
    rec->pub.port = NULL;
    rec->pub.stopped = true;
    tw_free(fp);
    tw_factory_do_stop(rec->pub.factory);
}

static const struct tw__port_ops fake_port_ops = {
    .get_host = port_get_host,
    .stop = port_stop,
};

static int mr_listen(void *arg, tw_reactor *r, const tw_address *addr,
                     const tw_listen_options *opts, tw_factory *factory, tw_listening_port **out)
{
    memory_reactor *mr = arg;
    if (!factory || !out)
        return TW_EINVAL;
    if (grow(&mr->listens, mr->nlistens, &mr->listens_cap) < 0)
        return TW_ENOMEM;
    listen_record *rec = tw_calloc(1, sizeof *rec);
    fake_port *fp = tw_calloc(1, sizeof *fp);
    if (!rec || !fp) {
        tw_free(rec);
        tw_free(fp);
        return TW_ENOMEM;
    }
    if (addr)
        rec->pub.addr = *addr;
    if (opts)
        rec->pub.opts = *opts;
    rec->pub.factory = factory;
    rec->pub.port = &fp->base;
    fp->base.ops = &fake_port_ops;
    fp->rec = rec;
    mr->listens[mr->nlistens++] = rec;
    tw_factory_do_start(factory);
    *out = &fp->base;
    return 0;
}

/* ---- Connecting */

static connect_record *rec_of(const tw_connector *c)
{
    return c && c->ops == &fake_connector_ops ? ((const fake_connector *)c)->rec : NULL;
}

/* An attempt ended with nothing new started: stop the factory (Twisted's
 * "if self.state == 'disconnected': self.factory.doStop()"). */
static void maybe_stop_factory(connect_record *rec)
{
    if (rec->state == TW_CONNECTOR_DISCONNECTED && rec->factory_started) {
        rec->factory_started = false;
        tw_factory_do_stop(rec->pub.factory);
    }
}

static void start_attempt(connect_record *rec)
{
    rec->state = TW_CONNECTOR_CONNECTING;
    rec->pub.attempts++;
    if (!rec->factory_started) {
        rec->factory_started = true;
        tw_factory_do_start(rec->pub.factory);
    }
    tw_factory *f = rec->pub.factory;
    if (f->ops && f->ops->started_connecting)
        f->ops->started_connecting(f, rec->pub.connector);
}

static void fail_attempt(connect_record *rec, int code, const char *why)
{
    rec->state = TW_CONNECTOR_DISCONNECTED;
    rec->pub.failures++;
    tw_factory *f = rec->pub.factory;
    if (rec->pub.connector && f->ops && f->ops->client_connection_failed) {
        tw_failure *reason = tw_failure_new(code, NULL, "%s", why);
        f->ops->client_connection_failed(f, rec->pub.connector, reason);
        tw_failure_unref(reason);
    }
    maybe_stop_factory(rec);
}

static int conn_connect(tw_connector *c)
{
    connect_record *rec = rec_of(c);
    if (rec->state != TW_CONNECTOR_DISCONNECTED)
        return TW_EBUSY;
    start_attempt(rec);
    return 0;
}

static int conn_stop_connecting(tw_connector *c)
{
    connect_record *rec = rec_of(c);
    rec->pub.stop_connecting_calls++;
    if (rec->state != TW_CONNECTOR_CONNECTING)
        return TW_ENOTCONN;
    fail_attempt(rec, TW_ECANCELED, "connection attempt stopped");
    return 0;
}

static void conn_disconnect(tw_connector *c)
{
    connect_record *rec = rec_of(c);
    rec->pub.disconnect_calls++;
    if (rec->state == TW_CONNECTOR_CONNECTING)
        fail_attempt(rec, TW_ECANCELED, "connection attempt stopped");
    else if (rec->state == TW_CONNECTOR_CONNECTED)
        tw_transport_lose_connection(&rec->pub.transport->base);
}

static tw_connector_state conn_get_state(const tw_connector *c)
{
    return rec_of(c)->state;
}

static const tw_address *conn_get_destination(const tw_connector *c)
{
    return &rec_of(c)->pub.addr;
}

static tw_protocol *conn_protocol(const tw_connector *c)
{
    connect_record *rec = rec_of(c);
    return rec->state == TW_CONNECTOR_CONNECTED ? rec->pub.transport->base.protocol : NULL;
}

static void conn_free(tw_connector *c)
{
    connect_record *rec = rec_of(c);
    rec->pub.connector = NULL;
    if (rec->state == TW_CONNECTOR_CONNECTING)
        rec->state = TW_CONNECTOR_DISCONNECTED; /* abandoned, the factory not told */
    /* A live connection keeps the factory started until it ends. */
    maybe_stop_factory(rec);
    tw_free(c);
}

static const struct tw__connector_ops fake_connector_ops = {
    .connect = conn_connect,
    .stop_connecting = conn_stop_connecting,
    .disconnect = conn_disconnect,
    .get_state = conn_get_state,
    .get_destination = conn_get_destination,
    .protocol = conn_protocol,
    .free = conn_free,
};

static int mr_connect(void *arg, tw_reactor *r, const tw_address *addr,
                      const tw_connect_options *opts, tw_factory *factory, tw_connector **out)
{
    memory_reactor *mr = arg;
    if (!addr || !factory || !out)
        return TW_EINVAL;
    if (grow(&mr->connects, mr->nconnects, &mr->connects_cap) < 0)
        return TW_ENOMEM;
    connect_record *rec = tw_calloc(1, sizeof *rec);
    fake_connector *fc = tw_calloc(1, sizeof *fc);
    if (!rec || !fc) {
        tw_free(rec);
        tw_free(fc);
        return TW_ENOMEM;
    }
    rec->mr = mr;
    rec->pub.addr = *addr;
    if (opts) {
        rec->pub.opts = *opts;
        if (opts->bind_to) {
            rec->pub.bind_to = *opts->bind_to;
            rec->pub.opts.bind_to = &rec->pub.bind_to;
        }
    }
    rec->pub.factory = factory;
    rec->pub.connector = &fc->base;
    fc->base.ops = &fake_connector_ops;
    fc->rec = rec;
    mr->connects[mr->nconnects++] = rec;
    *out = &fc->base;
    start_attempt(rec);
    return 0;
}

/* ---- Driving connectors */

int tw_testing_connector_fail(tw_connector *c, int code)
{
    connect_record *rec = rec_of(c);
    if (!rec)
        return TW_EINVAL;
    if (rec->state != TW_CONNECTOR_CONNECTING)
        return TW_ENOTCONN;
    fail_attempt(rec, code < 0 ? code : TW_ECONNREFUSED, "connection failed (memory reactor)");
    return 0;
}

/* The connection's protocol had connection_lost: report it. */
static void connection_lost_hook(void *arg, tw_failure *reason)
{
    connect_record *rec = arg;
    rec->state = TW_CONNECTOR_DISCONNECTED;
    rec->pub.losses++;
    tw_factory *f = rec->pub.factory;
    if (rec->pub.connector && f->ops && f->ops->client_connection_lost)
        f->ops->client_connection_lost(f, rec->pub.connector, reason);
    maybe_stop_factory(rec);
}

int tw_testing_connector_succeed(tw_connector *c, tw_string_transport **out)
{
    connect_record *rec = rec_of(c);
    if (!rec)
        return TW_EINVAL;
    if (rec->state != TW_CONNECTOR_CONNECTING)
        return TW_ENOTCONN;
    tw_string_transport *st;
    if (tw_string_transport_new(&st) < 0)
        return TW_ENOMEM;
    st->peer = rec->pub.addr;
    tw_protocol *p = tw_factory_build_protocol(rec->pub.factory, &rec->pub.addr);
    if (!p) {
        tw_string_transport_free(st);
        fail_attempt(rec, TW_ECONNABORTED, "the factory refused the connection");
        return TW_ECONNABORTED;
    }
    tw_string_transport_free(rec->pub.transport); /* the previous connection's */
    rec->pub.transport = st;
    rec->pub.connections++;
    rec->state = TW_CONNECTOR_CONNECTED;
    st->lost_hook = connection_lost_hook;
    st->lost_arg = rec;
    if (out)
        *out = st;
    tw_string_transport_connect(st, p);
    /* The hook may free the connector; connection_made may have lost the
     * connection already (only through the test), so look again. */
    if (rec->pub.connector && rec->state == TW_CONNECTOR_CONNECTED && c->connected_hook)
        c->connected_hook(c, p, c->connected_arg);
    return 0;
}

int tw_testing_connector_lose(tw_connector *c, int code)
{
    connect_record *rec = rec_of(c);
    if (!rec)
        return TW_EINVAL;
    if (rec->state != TW_CONNECTOR_CONNECTED)
        return TW_ENOTCONN;
    return tw_string_transport_lose(rec->pub.transport, code);
}

/* ---- The reactor */

static memory_reactor *mr_of(const tw_reactor *r)
{
    const struct tw__net_hooks *h = r ? tw__reactor_net_hooks(r) : NULL;
    return h && h->listen == mr_listen ? h->arg : NULL;
}

int tw_testing_memory_reactor_new(tw_reactor **out)
{
    if (!out)
        return TW_EINVAL;
    memory_reactor *mr = tw_calloc(1, sizeof *mr);
    if (!mr)
        return TW_ENOMEM;
    tw_reactor *r;
    int rc = tw_reactor_new(&r, NULL);
    if (rc < 0) {
        tw_free(mr);
        return rc;
    }
    mr->hooks.listen = mr_listen;
    mr->hooks.connect = mr_connect;
    mr->hooks.arg = mr;
    tw__reactor_set_net_hooks(r, &mr->hooks);
    *out = r;
    return 0;
}

int tw_testing_memory_reactor_free(tw_reactor *r)
{
    memory_reactor *mr = mr_of(r);
    if (!r)
        return 0;
    if (!mr)
        return tw_reactor_free(r);
    if (tw_reactor_running(r))
        return TW_EBUSY;
    /* Connections first (their loss reports to live connectors), then the
     * fakes the test left, then the records. */
    for (size_t i = 0; i < mr->nconnects; i++) {
        connect_record *rec = mr->connects[i];
        tw_string_transport *st = rec->pub.transport;
        rec->pub.transport = NULL;
        if (st && st->connected)
            tw_string_transport_lose(st, TW_ECONNDONE);
        tw_string_transport_free(st);
    }
    for (size_t i = 0; i < mr->nconnects; i++) {
        connect_record *rec = mr->connects[i];
        if (rec->pub.connector)
            conn_free(rec->pub.connector);
        tw_free(rec);
    }
    for (size_t i = 0; i < mr->nlistens; i++) {
        listen_record *rec = mr->listens[i];
        if (rec->pub.port)
            port_stop(rec->pub.port);
        tw_free(rec);
    }
    tw__reactor_set_net_hooks(r, NULL);
    tw_free(mr->connects);
    tw_free(mr->listens);
    tw_free(mr);
    return tw_reactor_free(r);
}

size_t tw_testing_memory_reactor_listens(const tw_reactor *r)
{
    memory_reactor *mr = mr_of(r);
    return mr ? mr->nlistens : 0;
}

const tw_testing_listen *tw_testing_memory_reactor_listen(const tw_reactor *r, size_t i)
{
    memory_reactor *mr = mr_of(r);
    return mr && i < mr->nlistens ? &mr->listens[i]->pub : NULL;
}

size_t tw_testing_memory_reactor_connects(const tw_reactor *r)
{
    memory_reactor *mr = mr_of(r);
    return mr ? mr->nconnects : 0;
}

const tw_testing_connect *tw_testing_memory_reactor_connect(const tw_reactor *r, size_t i)
{
    memory_reactor *mr = mr_of(r);
    return mr && i < mr->nconnects ? &mr->connects[i]->pub : NULL;
}
