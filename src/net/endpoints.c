/* Endpoints: parsed descriptions bound to a reactor, listening and
 * connecting (endpoint.h). Listening is synchronous underneath (bind and
 * listen either work now or fail now), so its deferred has fired when
 * tw_endpoint_listen returns. Connecting is one "connect operation" per
 * call: resolve the host on the thread pool when it is a name, then start
 * attempts over the addresses, staggered; the first connection made wins. */
#include <arpa/inet.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <twine/endpoint.h>
#include <twine/error.h>
#include <twine/log.h>
#include <twine/net.h>
#include <twine/thread.h>
#include <twine/wrap.h>

#include "net/endpoint-haproxy.h"
#include "net/endpoint-internal.h"
#include "net/endpoint-stdio.h"
#include "net/endpoint-tls.h"
#include "net/net-internal.h"

#define NS "twine.endpoint"

/* Twisted's HostnameEndpoint attemptDelay. */
#define ATTEMPT_DELAY 0.3
/* Addresses tried for one name, at most. */
#define MAX_ADDRESSES 16

struct tw_endpoint {
    tw_reactor *reactor;
    tw_endpoint_spec *spec;  /* NULL for an endpoint made from C (impl) */
    tw_tls_context *tls_ctx; /* tls: made at the first connect, shared by the later ones */
    const struct tw__endpoint_impl *impl;
    void *impl_data;
};

static int from_string(tw_reactor *r, tw_endpoint_role role, const char *description,
                       tw_endpoint **out, tw_failure **failure)
{
    if (failure)
        *failure = NULL;
    if (!out)
        return TW_EINVAL;
    *out = NULL;
    tw_endpoint_spec *spec;
    int rc = tw_endpoint_parse(role, description, &spec, failure);
    if (rc < 0)
        return rc;
    if (spec->kind == TW_ENDPOINT_REGISTERED) {
        tw_failure *f =
            tw_failure_new(TW_ENOTSUP, NULL, "%s: endpoints of this type cannot %s", spec->type,
                           role == TW_ENDPOINT_SERVER ? "listen" : "connect");
        tw_endpoint_spec_free(spec);
        if (failure)
            *failure = f;
        else
            tw_failure_unref(f);
        return TW_ENOTSUP;
    }
    tw_endpoint *ep = tw_malloc(sizeof *ep);
    if (!ep) {
        tw_endpoint_spec_free(spec);
        if (failure)
            *failure = tw_failure_new(TW_ENOMEM, NULL, NULL);
        return TW_ENOMEM;
    }
    *ep = (tw_endpoint){.reactor = r, .spec = spec, .tls_ctx = NULL};
    *out = ep;
    return 0;
}

int tw__endpoint_new_impl(tw_reactor *r, const struct tw__endpoint_impl *impl, void *data,
                          tw_endpoint **out)
{
    tw_endpoint *ep = tw_malloc(sizeof *ep);
    if (!ep) {
        impl->free(data);
        return TW_ENOMEM;
    }
    *ep = (tw_endpoint){.reactor = r, .impl = impl, .impl_data = data};
    *out = ep;
    return 0;
}

int tw_endpoint_server_from_string(tw_reactor *r, const char *description, tw_endpoint **out,
                                   tw_failure **failure)
{
    return from_string(r, TW_ENDPOINT_SERVER, description, out, failure);
}

int tw_endpoint_client_from_string(tw_reactor *r, const char *description, tw_endpoint **out,
                                   tw_failure **failure)
{
    return from_string(r, TW_ENDPOINT_CLIENT, description, out, failure);
}

void tw_endpoint_free(tw_endpoint *ep)
{
    if (!ep)
        return;
    tw_endpoint_spec_free(ep->spec);
    tw_tls_context_unref(ep->tls_ctx);
    if (ep->impl)
        ep->impl->free(ep->impl_data);
    tw_free(ep);
}

const tw_endpoint_spec *tw_endpoint_get_spec(const tw_endpoint *ep)
{
    return ep->spec;
}

/* ---- Listening */

static void release_port(void *port)
{
    tw_deferred_unref(tw_listening_port_stop(port));
}

/* The address a tcp/tcp6 server spec listens on. */
static int tcp_server_address(const tw_endpoint_spec *spec, tw_address *addr)
{
    const tw_endpoint_tcp_server *t = tw_endpoint_spec_tcp_server(spec);
    const char *ip = t->interface;
    if (!ip[0])
        ip = spec->kind == TW_ENDPOINT_TCP6 ? "::" : "0.0.0.0";
    return tw_address_from_ip(addr, ip, t->port);
}

static int systemd_fd(const tw_endpoint_spec *spec, int *fd, tw_failure **failure)
{
    const tw_endpoint_systemd *sd = tw_endpoint_spec_systemd(spec);
    const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
    if (!pid || !fds || strtol(pid, NULL, 10) != (long)getpid()) {
        *failure = tw_failure_new(TW_EINVAL, NULL,
                                  "systemd: no sockets were passed to this process "
                                  "(LISTEN_PID/LISTEN_FDS unset or for another process)");
        return TW_EINVAL;
    }
    long n = strtol(fds, NULL, 10);
    if (n <= 0 || (long)sd->index >= n) {
        *failure =
            tw_failure_new(TW_EINVAL, NULL, "systemd: index %u out of range: %ld socket(s) passed",
                           sd->index, n < 0 ? 0 : n);
        return TW_EINVAL;
    }
    *fd = 3 + (int)sd->index;
    int domain;
    socklen_t len = sizeof domain;
    if (getsockopt(*fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0) {
        int code = -errno;
        *failure = tw_failure_new(code, NULL, "systemd: descriptor %d: %s", *fd, tw_strerror(code));
        return code;
    }
    static const int domains[] = {[TW_ENDPOINT_DOMAIN_INET] = AF_INET,
                                  [TW_ENDPOINT_DOMAIN_INET6] = AF_INET6,
                                  [TW_ENDPOINT_DOMAIN_UNIX] = AF_UNIX};
    if (domain != domains[sd->domain]) {
        *failure = tw_failure_new(TW_EINVAL, NULL,
                                  "systemd: descriptor %d is not of the domain asked for", *fd);
        return TW_EINVAL;
    }
    return 0;
}

/* Opens the port for a server spec (haproxy's inner one included). */
int tw__endpoint_listen_spec(tw_reactor *r, const tw_endpoint_spec *spec, tw_factory *factory,
                             tw_listening_port **port, tw_failure **failure)
{
    tw_address addr = {0};
    tw_listen_options opts = {0};
    char where[TW_ADDRESS_STRLEN];
    int rc;
    switch (spec->kind) {
    case TW_ENDPOINT_TCP:
    case TW_ENDPOINT_TCP6:
        rc = tcp_server_address(spec, &addr);
        opts.backlog = tw_endpoint_spec_tcp_server(spec)->backlog;
        break;
    case TW_ENDPOINT_UNIX: {
        const tw_endpoint_unix_server *u = tw_endpoint_spec_unix_server(spec);
        rc = u->abstract ? tw_address_from_unix(&addr, u->path + 1, u->path_len - 1, true)
                         : tw_address_from_unix(&addr, u->path, u->path_len, false);
        opts = (tw_listen_options){
            .backlog = u->backlog, .mode = u->mode, .lockfile = u->lockfile && !u->abstract};
        break;
    }
    case TW_ENDPOINT_SYSTEMD: {
        int fd;
        rc = systemd_fd(spec, &fd, failure);
        if (rc < 0)
            return rc;
        rc = tw_listen_adopt(r, fd, factory, port);
        if (rc < 0)
            *failure = tw_failure_new(rc, NULL, "systemd: cannot listen on descriptor %d: %s", fd,
                                      tw_strerror(rc));
        return rc;
    }
    case TW_ENDPOINT_HAPROXY:
        return tw__haproxy_listen(r, spec, factory, port, failure);
    case TW_ENDPOINT_SSL:
        return tw__ssl_listen(r, spec, factory, NULL, port, failure);
    case TW_ENDPOINT_STDIO:
        return tw__stdio_listen(r, spec, factory, port, failure);
    default:
        rc = TW_ENOTSUP;
        break;
    }
    if (rc < 0) {
        *failure = tw_failure_new(rc, NULL, "%s: bad address", spec->type);
        return rc;
    }
    rc = tw_listen_stream(r, &addr, &opts, factory, port);
    if (rc < 0)
        *failure = tw_failure_new(rc, NULL, "%s: cannot listen on %s: %s", spec->type,
                                  tw_address_format(&addr, where, sizeof where), tw_strerror(rc));
    return rc;
}

tw_deferred *tw_endpoint_listen(tw_endpoint *ep, tw_factory *factory)
{
    if (!ep || !factory)
        return tw_fail(tw_failure_new(TW_EINVAL, NULL, "listen: no endpoint or no factory"));
    if (!ep->spec)
        return tw_fail(tw_failure_new(TW_ENOTSUP, NULL, "listen: this endpoint only connects"));
    tw_listening_port *port = NULL;
    tw_failure *failure = NULL;
    if (tw__endpoint_listen_spec(ep->reactor, ep->spec, factory, &port, &failure) < 0)
        return tw_fail(failure);
    tw_deferred *d = tw_succeed(tw_result_ok(port, release_port));
    return d;
}

/* ---- Connecting */

/* One call to connect: the deferred it answers, the addresses, the attempts.
 * It lives until the deferred has fired, the resolution (if any) has come
 * back, and the connectors are done with the factory embedded here: they use
 * it until the attempt ends, and for the winner that is when its connection
 * ends. refs counts those holders; the connectors' share is one reference
 * taken when the factory starts and dropped when it stops (a connector stops
 * it as the very last thing it does with it). */
struct connect_op {
    tw_reactor *reactor;
    tw_deferred *d;          /* NULL once fired */
    tw_factory factory;      /* what the connectors see (data = this op) */
    tw_factory *user;        /* the caller's factory, or NULL */
    tw_protocol *ready_made; /* connect_protocol's protocol, until handed over */
    unsigned refs;
    bool user_started;
    tw__tls_client *tls; /* tls: what user is part of; released with the op */

    char *host; /* the name to resolve; NULL for a literal or unix */
    char service[8];
    int family; /* AF_UNSPEC, AF_INET6 (tcp6) */
    double timeout;
    tw_address bind_to;
    bool has_bind;

    tw_address addrs[MAX_ADDRESSES];
    size_t naddrs, next_addr;
    tw_connector *attempts[MAX_ADDRESSES];
    size_t live_attempts;
    tw_connector *winner;
    unsigned orphans; /* connected attempts disconnected by a cancel, not yet lost */
    bool refused;     /* the factory refused the connection */
    tw_failure *last_failure;

    tw_timer stagger; /* starts the next attempt */
    tw_timer deadline;
};

static void op_unref(struct connect_op *op)
{
    if (--op->refs > 0)
        return;
    tw_timer_stop(&op->stagger);
    tw_timer_stop(&op->deadline);
    tw_failure_unref(op->last_failure);
    tw_protocol_release(op->ready_made); /* never handed over */
    if (op->tls)
        tw__tls_client_release(op->tls);
    tw_free(op->host);
    tw_free(op);
}

/* Ends every attempt but the winner's. One that is connected already (the
 * call was cancelled from inside its protocol's connection_made) is
 * disconnected, not dropped: its protocol gets connection_lost, and the
 * caller's factory is stopped only after that (op_connection_lost). */
static void stop_attempts(struct connect_op *op)
{
    tw_timer_stop(&op->stagger);
    tw_timer_stop(&op->deadline);
    for (size_t i = 0; i < op->naddrs; i++) {
        tw_connector *c = op->attempts[i];
        if (!c || c == op->winner)
            continue;
        if (tw_connector_get_state(c) == TW_CONNECTOR_CONNECTED) {
            op->orphans++;
            tw_connector_disconnect(c);
            continue;
        }
        op->attempts[i] = NULL;
        op->live_attempts--;
        tw_connector_free(c);
    }
}

static void stop_user_factory(struct connect_op *op)
{
    if (op->user_started && op->orphans == 0) {
        op->user_started = false;
        tw_factory_do_stop(op->user);
    }
}

/* Fires the deferred (once) with a result, ending every other attempt. The
 * op must stay referenced by the caller across this. */
static void op_finish(struct connect_op *op, tw_result result)
{
    tw_deferred *d = op->d;
    if (!d) {
        tw_result_release(&result);
        return;
    }
    op->d = NULL;
    stop_attempts(op);
    if (tw_result_is_failure(result))
        stop_user_factory(op);
    tw_deferred_callback(d, result);
    tw_deferred_unref(d);
    op_unref(op); /* the deferred's hold */
}

static void op_fail(struct connect_op *op, tw_failure *f)
{
    op_finish(op, tw_result_fail(f));
}

static size_t slot_of(struct connect_op *op, tw_connector *c)
{
    for (size_t i = 0; i < op->naddrs; i++)
        if (op->attempts[i] == c)
            return i;
    return op->naddrs;
}

static void start_next_attempt(struct connect_op *op);

static void stagger_due(tw_timer *t)
{
    struct connect_op *op = (struct connect_op *)((char *)t - offsetof(struct connect_op, stagger));
    start_next_attempt(op);
}

static void deadline_due(tw_timer *t)
{
    struct connect_op *op =
        (struct connect_op *)((char *)t - offsetof(struct connect_op, deadline));
    op->refs++;
    op_fail(op, tw_failure_new(TW_ETIMEDOUT, NULL, "%s: connection timed out after %g s",
                               op->host ? op->host : "connect", op->timeout));
    op_unref(op);
}

/* All attempts are over, none connected, none left to start. */
static void maybe_all_failed(struct connect_op *op)
{
    if (!op->d || op->live_attempts > 0 || op->next_addr < op->naddrs || op->winner)
        return;
    tw_failure *f = op->last_failure ? tw_failure_ref(op->last_failure)
                                     : tw_failure_new(TW_ECONNREFUSED, NULL, "no address to try");
    op_fail(op, f);
}

static void start_next_attempt(struct connect_op *op)
{
    while (op->d && !op->winner && op->next_addr < op->naddrs) {
        size_t i = op->next_addr++;
        tw_connect_options opts = {.timeout = op->timeout,
                                   .bind_to = op->has_bind ? &op->bind_to : NULL};
        tw_connector *c;
        op->live_attempts++;
        op->attempts[i] = NULL; /* started_connecting may run before we store c */
        int rc = tw_connect_stream(op->reactor, &op->addrs[i], &opts, &op->factory, &c);
        if (rc < 0) {
            op->live_attempts--;
            char where[TW_ADDRESS_STRLEN];
            tw_failure_unref(op->last_failure);
            op->last_failure = tw_failure_new(rc, NULL, "connecting to %s: %s",
                                              tw_address_format(&op->addrs[i], where, sizeof where),
                                              tw_strerror(rc));
            continue; /* nothing is in flight: try the next address now */
        }
        op->attempts[i] = c;
        if (op->next_addr < op->naddrs && tw_timer_start(&op->stagger, ATTEMPT_DELAY) < 0)
            continue; /* no timer: start the next one now rather than never */
        return;
    }
    maybe_all_failed(op);
}

static void connected(tw_connector *c, tw_protocol *p, void *arg)
{
    struct connect_op *op = arg;
    if (!op->d)
        return; /* cancelled from inside connection_made: being disconnected */
    op->winner = c;
    if (op->tls) { /* the caller's protocol is the one under TLS */
        tw_wrapper *w = tw_wrapper_from_protocol(p);
        p = w ? w->wrapped : NULL;
    }
    op->refs++;
    op_finish(op, tw_result_ok(p, NULL));
    op_unref(op);
}

static tw_protocol *op_build(tw_factory *f, const tw_address *addr)
{
    struct connect_op *op = f->data;
    if (!op->d || op->winner)
        return NULL; /* another attempt won, or the call was cancelled */
    tw_protocol *p;
    if (op->ready_made) {
        p = op->ready_made;
        op->ready_made = NULL;
    } else {
        p = tw_factory_build_protocol(op->user, addr);
    }
    /* Refused: no other address will change the factory's mind. */
    op->refused = p == NULL;
    return p;
}

static void op_attempt_over(struct connect_op *op, tw_connector *c)
{
    size_t i = slot_of(op, c);
    if (i < op->naddrs) {
        op->attempts[i] = NULL;
        op->live_attempts--;
    }
    tw_connector_free(c);
}

static void op_connection_failed(tw_factory *f, tw_connector *c, tw_failure *reason)
{
    struct connect_op *op = f->data;
    if (c == op->winner)
        return;
    op->refs++;
    /* The connector's failure names the address already. */
    tw_failure_unref(op->last_failure);
    op->last_failure = tw_failure_ref(reason);
    op_attempt_over(op, c);
    if (op->refused)
        op_fail(op, tw_failure_new(TW_ECONNABORTED, NULL, "the factory refused the connection"));
    if (op->d && !op->winner) {
        tw_timer_stop(&op->stagger);
        start_next_attempt(op); /* a failure starts the next at once (RFC 8305) */
    }
    op_unref(op);
}

static void op_connection_lost(tw_factory *f, tw_connector *c, tw_failure *reason)
{
    struct connect_op *op = f->data;
    (void)reason;
    if (c == op->winner)
        op->winner = NULL;
    else if (slot_of(op, c) < op->naddrs && op->orphans > 0)
        op->orphans--;
    else
        return;
    stop_user_factory(op);
    op_attempt_over(op, c);
}

/* The connectors' hold on the op (see struct connect_op). */
static void op_factory_started(tw_factory *f)
{
    ((struct connect_op *)f->data)->refs++;
}

static void op_factory_stopped(tw_factory *f)
{
    op_unref(f->data);
}

static void op_started_connecting(tw_factory *f, tw_connector *c)
{
    struct connect_op *op = f->data;
    c->connected_hook = connected;
    c->connected_arg = op;
}

static const tw_factory_ops op_factory_ops = {
    .build_protocol = op_build,
    .start_factory = op_factory_started,
    .stop_factory = op_factory_stopped,
    .started_connecting = op_started_connecting,
    .client_connection_failed = op_connection_failed,
    .client_connection_lost = op_connection_lost,
};

static void op_cancel(tw_deferred *d, void *arg)
{
    struct connect_op *op = arg;
    (void)d;
    op->refs++;
    op_fail(op, tw_failure_new(TW_ECANCELED, NULL, "connection attempt cancelled"));
    op_unref(op);
}

tw__resolver tw__net_resolver = {getaddrinfo, freeaddrinfo};

/* getaddrinfo on a pool thread. The job owns its copy of the name, so it
 * needs nothing from the op, which may be gone when the job ends. */
struct resolve_job {
    char *host;
    char service[8];
    int family;
};

static void free_addrinfo_value(void *ai)
{
    tw__net_resolver.freeaddrinfo(ai);
}

static tw_result resolve_on_thread(void *arg)
{
    struct resolve_job *job = arg;
    struct addrinfo hints = {.ai_family = job->family,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_ADDRCONFIG | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int rc = tw__net_resolver.getaddrinfo(job->host, job->service, &hints, &res);
    tw_result out;
    if (rc != 0)
        out = tw_result_fail(tw_failure_new(TW_EDNSLOOKUP, NULL, "cannot resolve '%s': %s",
                                            job->host, gai_strerror(rc)));
    else
        out = tw_result_ok(res, free_addrinfo_value);
    tw_free(job->host);
    tw_free(job);
    return out;
}

static tw_result resolved(tw_result result, void *arg)
{
    struct connect_op *op = arg;
    if (!op->d) { /* cancelled or timed out meanwhile */
        tw_result_release(&result);
    } else if (tw_result_is_failure(result)) {
        op_fail(op, result.failure);
    } else {
        for (struct addrinfo *ai = result.value; ai && op->naddrs < MAX_ADDRESSES;
             ai = ai->ai_next) {
            if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
                ai->ai_addrlen > sizeof op->addrs[0].u)
                continue;
            if (op->has_bind && ai->ai_family != op->bind_to.u.sa.sa_family)
                continue; /* cannot reach it from the address we must bind */
            tw_address *a = &op->addrs[op->naddrs++];
            memcpy(&a->u, ai->ai_addr, ai->ai_addrlen);
            a->len = ai->ai_addrlen;
        }
        tw_result_release(&result);
        if (op->naddrs == 0)
            op_fail(op,
                    tw_failure_new(TW_EDNSLOOKUP, NULL, "'%s' has no usable address", op->host));
        else
            start_next_attempt(op);
    }
    op_unref(op); /* the resolution's hold */
    return tw_result_ok(NULL, NULL);
}

static int start_resolution(struct connect_op *op)
{
    struct resolve_job *job = tw_malloc(sizeof *job);
    char *host = tw_strdup(op->host);
    if (!job || !host) {
        tw_free(job);
        tw_free(host);
        return TW_ENOMEM;
    }
    *job = (struct resolve_job){.host = host, .family = op->family};
    memcpy(job->service, op->service, sizeof job->service);
    tw_deferred *d = tw_defer_to_thread(op->reactor, resolve_on_thread, job);
    if (!d) {
        tw_free(host);
        tw_free(job);
        return TW_ENOMEM;
    }
    op->refs++;
    int rc = tw_deferred_add_callbacks(d, resolved, resolved, op, NULL);
    if (rc < 0) {
        /* The job runs anyway; without our callback its result is dropped. */
        op->refs--;
        tw_deferred_unref(d);
        return rc;
    }
    tw_deferred_unref(d);
    return 0;
}

/* Fills op's target from a client spec: addresses now for literals and
 * unix paths, or the name to resolve. */
static int op_target(struct connect_op *op, const tw_endpoint_spec *spec, tw_failure **failure)
{
    int rc = 0;
    if (spec->kind == TW_ENDPOINT_UNIX) {
        const tw_endpoint_unix_client *u = tw_endpoint_spec_unix_client(spec);
        op->timeout = u->timeout;
        rc = u->abstract ? tw_address_from_unix(&op->addrs[0], u->path + 1, u->path_len - 1, true)
                         : tw_address_from_unix(&op->addrs[0], u->path, u->path_len, false);
        op->naddrs = 1;
    } else {
        const tw_endpoint_tcp_client *t = spec->kind == TW_ENDPOINT_TLS
                                              ? &tw_endpoint_spec_tls_client(spec)->tcp
                                              : tw_endpoint_spec_tcp_client(spec);
        op->timeout = t->timeout;
        op->family = spec->kind == TW_ENDPOINT_TCP6 ? AF_INET6 : AF_UNSPEC;
        snprintf(op->service, sizeof op->service, "%u", t->port);
        if (t->bind_address) {
            rc = tw_address_from_ip(&op->bind_to, t->bind_address, 0);
            op->has_bind = rc == 0;
        }
        if (rc == 0 && tw_address_from_ip(&op->addrs[0], t->host, t->port) == 0) {
            op->naddrs = 1;
        } else if (rc == 0) {
            op->host = tw_strdup(t->host);
            if (!op->host)
                rc = TW_ENOMEM;
        }
    }
    if (rc < 0)
        *failure = tw_failure_new(rc, NULL, "%s: bad address", spec->type);
    return rc;
}

static tw_deferred *connect_with(tw_endpoint *ep, tw_factory *user, tw_protocol *ready_made)
{
    if (!ep || (!user && !ready_made)) {
        tw_protocol_release(ready_made);
        return tw_fail(tw_failure_new(TW_EINVAL, NULL, "connect: no endpoint or no factory"));
    }
    if (ep->impl)
        return ep->impl->connect(ep->impl_data, ep->reactor, user, ready_made);
    /* tls: the application's factory (or protocol) under TLS; the op
     * connects the TLS factory instead. */
    tw__tls_client *tls = NULL;
    if (ep->spec->kind == TW_ENDPOINT_TLS) {
        tw_failure *f = NULL;
        if (tw__tls_client_new(ep->spec, &ep->tls_ctx, user, ready_made, &tls, &user, &f) < 0)
            return tw_fail(f);
        ready_made = NULL;
    }
    struct connect_op *op = tw_calloc(1, sizeof *op);
    tw_deferred *d = op ? tw_deferred_new(op_cancel, op) : NULL;
    if (!d) {
        tw_free(op);
        tw_protocol_release(ready_made);
        if (tls)
            tw__tls_client_release(tls);
        return tw_fail(tw_failure_new(TW_ENOMEM, NULL, NULL));
    }
    op->tls = tls;
    op->reactor = ep->reactor;
    op->d = tw_deferred_ref(d);
    op->refs = 1; /* the deferred's hold, dropped when it fires */
    op->user = user;
    op->ready_made = ready_made;
    tw_factory_init(&op->factory, &op_factory_ops, NULL, 0, op);
    tw_timer_init(&op->stagger, tw_reactor_clock(ep->reactor), stagger_due);
    tw_timer_init(&op->deadline, tw_reactor_clock(ep->reactor), deadline_due);
    if (user) {
        tw_factory_do_start(user);
        op->user_started = true;
    }

    op->refs++; /* ours, for the rest of this function */
    tw_failure *failure = NULL;
    int rc = op_target(op, ep->spec, &failure);
    if (rc == 0 && tw_timer_start(&op->deadline, op->timeout) < 0)
        failure = tw_failure_new(TW_ENOMEM, NULL, NULL);
    else if (rc == 0 && op->host && start_resolution(op) < 0)
        failure = tw_failure_new(TW_ENOMEM, NULL, NULL);
    else if (rc == 0 && !op->host)
        start_next_attempt(op);
    if (failure)
        op_fail(op, failure);
    op_unref(op);
    return d;
}

tw_deferred *tw_endpoint_connect(tw_endpoint *ep, tw_factory *factory)
{
    return connect_with(ep, factory, NULL);
}

tw_deferred *tw_endpoint_connect_protocol(tw_endpoint *ep, tw_protocol *protocol)
{
    return connect_with(ep, NULL, protocol);
}
