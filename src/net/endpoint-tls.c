/* The ssl: server and tls: client endpoints: tcp's listen and connect with a
 * TLS wrapping factory (tls.h) around the application's factory.
 *
 * The TLS factory and its context must outlive every connection they made,
 * and the port (or connect operation) may go long before those connections
 * do. So the TLS factory lives in a heap bundle that its connections keep
 * (tw_wrapping_factory_keep): the bundle goes when its owner (the port, the
 * connect operation) has let go and the last TLS wrapper is released. */
#include <string.h>
#include <sys/stat.h>

#include <twine/error.h>
#include <twine/log.h>
#include <twine/tls.h>
#include <twine/wrap.h>

#include "net/endpoint-tls.h"
#include "net/net-internal.h"

#define NS "twine.endpoint.tls"

struct tw__tls_client { /* the bundle, for servers too */
    tw_tls_factory tls; /* first: its wrapping factory is what ports and connectors see */
    tw_factory once;    /* connect_protocol: hands out `ready` once */
    tw_protocol *ready;
};

typedef struct tw__tls_client bundle;

static void bundle_free(tw_wrapping_factory *wf)
{
    bundle *b = (bundle *)wf;
    tw_tls_factory_cleanup(&b->tls);
    tw_protocol_release(b->ready); /* never handed over */
    tw_free(b);
}

/* Lets go of the owner's reference. */
static void bundle_drop(bundle *b)
{
    tw_wrapping_factory_drop(&b->tls.wf);
}

static tw_protocol *once_build(tw_factory *f, const tw_address *addr)
{
    bundle *b = f->data;
    (void)addr;
    tw_protocol *p = b->ready;
    b->ready = NULL;
    return p;
}

static const tw_factory_ops once_ops = {.build_protocol = once_build};

/* A bundle around ctx (taken over) and `inner`. */
static int bundle_new(tw_tls_context *ctx, tw_factory *inner, tw_protocol *ready,
                      const char *hostname, bundle **out, tw_failure **failure)
{
    bundle *b = tw_calloc(1, sizeof *b);
    if (!b) {
        tw_tls_context_unref(ctx);
        tw_protocol_release(ready);
        *failure = tw_failure_new(TW_ENOMEM, NULL, NULL);
        return TW_ENOMEM;
    }
    b->ready = ready;
    if (!inner) {
        tw_factory_init(&b->once, &once_ops, NULL, 0, b);
        inner = &b->once;
    }
    int rc = tw_tls_factory_init(&b->tls, ctx, inner, hostname);
    tw_tls_context_unref(ctx); /* the factory holds its own reference */
    if (rc < 0) {
        tw_protocol_release(ready);
        tw_free(b);
        *failure = tw_failure_new(rc, NULL, "TLS factory: %s", tw_strerror(rc));
        return rc;
    }
    tw_wrapping_factory_keep(&b->tls.wf, bundle_free);
    *out = b;
    return 0;
}

/* "ssl: cannot read certificate ...": the context's failure, said by whom. */
static int context_failed(const tw_endpoint_spec *spec, int rc, tw_failure *f, tw_failure **failure)
{
    if (f && tw_failure_code(f) == TW_ENOMEM) {
        *failure = f;
        return TW_ENOMEM;
    }
    *failure = f ? tw_failure_new(rc, f, "%s: %s", spec->type, tw_failure_message(f))
                 : tw_failure_new(rc, NULL, "%s: %s", spec->type, tw_strerror(rc));
    return rc;
}

/* ---- ssl: servers */

struct ssl_port {
    tw_listening_port base;
    tw_listening_port *inner;
    bundle *bundle;
};

static int port_get_host(const tw_listening_port *base, tw_address *out)
{
    const struct ssl_port *p = (const struct ssl_port *)base;
    return tw_listening_port_get_host(p->inner, out);
}

static void port_stop(tw_listening_port *base)
{
    struct ssl_port *p = (struct ssl_port *)base;
    tw_deferred_unref(tw_listening_port_stop(p->inner));
    bundle_drop(p->bundle);
    tw_free(p);
}

static const struct tw__port_ops ssl_port_ops = {.get_host = port_get_host, .stop = port_stop};

int tw__ssl_listen(tw_reactor *r, const tw_endpoint_spec *spec, tw_factory *factory,
                   tw_wrapping_factory *outer, tw_listening_port **port, tw_failure **failure)
{
    const tw_endpoint_ssl_server *s = tw_endpoint_spec_ssl_server(spec);
    tw_tls_server_options opts = {.cert_file = s->cert_key,
                                  .key_file = s->private_key,
                                  .extra_chain_file = s->extra_cert_chain};
    tw_tls_context *ctx = NULL;
    tw_failure *f = NULL;
    int rc = tw_tls_server_context_new(&opts, &ctx, &f);
    if (rc < 0)
        return context_failed(spec, rc, f, failure);

    bundle *b;
    if ((rc = bundle_new(ctx, factory, NULL, NULL, &b, failure)) < 0)
        return rc;
    struct ssl_port *p = tw_calloc(1, sizeof *p);
    if (!p) {
        bundle_drop(b);
        *failure = tw_failure_new(TW_ENOMEM, NULL, NULL);
        return TW_ENOMEM;
    }
    tw_address addr;
    char where[TW_ADDRESS_STRLEN];
    rc = tw_address_from_ip(&addr, s->tcp.interface[0] ? s->tcp.interface : "0.0.0.0", s->tcp.port);
    if (rc < 0) {
        *failure = tw_failure_new(rc, NULL, "%s: bad address", spec->type);
    } else {
        tw_listen_options lo = {.backlog = s->tcp.backlog};
        tw_factory *listening = &b->tls.wf.base;
        if (outer) {
            outer->wrapped = &b->tls.wf.base;
            listening = &outer->base;
        }
        rc = tw_listen_stream(r, &addr, &lo, listening, &p->inner);
        if (rc < 0)
            *failure =
                tw_failure_new(rc, NULL, "%s: cannot listen on %s: %s", spec->type,
                               tw_address_format(&addr, where, sizeof where), tw_strerror(rc));
    }
    if (rc < 0) {
        bundle_drop(b);
        tw_free(p);
        return rc;
    }
    p->base.ops = &ssl_port_ops;
    p->bundle = b;
    *port = &p->base;
    return 0;
}

/* ---- tls: clients */

int tw__tls_client_new(const tw_endpoint_spec *spec, tw_tls_context **ctx_cache, tw_factory *user,
                       tw_protocol *ready_made, tw__tls_client **out, tw_factory **factory,
                       tw_failure **failure)
{
    const tw_endpoint_tls_client *t = tw_endpoint_spec_tls_client(spec);
    int rc;
    if (!*ctx_cache) {
        tw_tls_client_options opts = {
            .hostname = t->tcp.host, .cert_file = t->certificate, .key_file = t->private_key};
        if (t->trust_roots) {
            struct stat st;
            if (stat(t->trust_roots, &st) == 0 && S_ISDIR(st.st_mode))
                opts.ca_dir = t->trust_roots;
            else
                opts.ca_file = t->trust_roots; /* missing: the context says so */
        }
        tw_failure *f = NULL;
        rc = tw_tls_client_context_new(&opts, ctx_cache, &f);
        if (rc < 0) {
            *ctx_cache = NULL;
            tw_protocol_release(ready_made);
            return context_failed(spec, rc, f, failure);
        }
    }
    tw_tls_context *ctx = tw_tls_context_ref(*ctx_cache);
    bundle *b;
    if ((rc = bundle_new(ctx, user, ready_made, t->tcp.host, &b, failure)) < 0)
        return rc;
    *out = b;
    *factory = &b->tls.wf.base;
    return 0;
}

void tw__tls_client_release(void *client)
{
    bundle_drop(client);
}
