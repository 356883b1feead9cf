/* `twined portforward --listen ENDPOINT --connect ENDPOINT`: Twisted's
 * portforward plugin (twisted.tap.portforward) over any endpoints. */
#include <string.h>

#include <twine/endpoint.h>
#include <twine/error.h>
#include <twine/portforward.h>
#include <twine/service.h>

#include "plugins-extra.h"

/* ---- What both relay plugins share */

/* A service that only owns the factory, so the factory lives as long as the
 * tree (the ports are stopped before any service is released). */
typedef struct holder {
    tw_service base;
    void (*release)(void *obj);
    void *obj;
} holder;

static int holder_start(tw_service *s, tw_failure **failure)
{
    (void)s;
    (void)failure;
    return 0;
}

static tw_deferred *holder_stop(tw_service *s)
{
    (void)s;
    return NULL; /* nothing to wait for */
}

static void holder_free(tw_service *s)
{
    holder *h = (holder *)s;
    h->release(h->obj);
}

static const tw_service_ops holder_ops = {
    .kind = "factory",
    .start = holder_start,
    .stop = holder_stop,
    .free = holder_free,
};

static int add_listen(tw_reactor *r, tw_multi_service *m, const char *desc, tw_factory *factory,
                      tw_failure **failure)
{
    tw_endpoint *ep = NULL;
    tw_failure *why = NULL;
    int rc = tw_endpoint_server_from_string(r, desc, &ep, &why);
    if (rc < 0) {
        *failure = tw_failure_new(rc, NULL, "--listen: %s",
                                  why ? tw_failure_message(why) : tw_strerror(rc));
        tw_failure_unref(why);
        return rc;
    }
    if (tw_multi_service_get(m, desc)) {
        tw_endpoint_free(ep);
        *failure = tw_failure_new(TW_EINVAL, NULL, "--listen '%s' is given twice", desc);
        return TW_EINVAL;
    }
    tw_service *server = NULL;
    rc = tw_server_service_new(r, desc, ep, factory, &server);
    if (rc < 0) {
        tw_endpoint_free(ep);
        *failure = tw_failure_new(rc, NULL, "--listen '%s': %s", desc, tw_strerror(rc));
        return rc;
    }
    rc = tw_multi_service_add(m, server, failure);
    if (rc < 0)
        tw_service_release(server);
    return rc;
}

int tw__plugin_serve_factory(tw_reactor *r, const tw_plugin_args *args, const char *name,
                             tw_factory *factory, void (*release)(void *obj), void *obj,
                             tw_service **out, tw_failure **failure)
{
    tw_multi_service *m = NULL;
    holder *h = tw_calloc(1, sizeof *h);
    int rc = h ? tw_multi_service_new(r, name, &m) : TW_ENOMEM;
    if (rc == 0)
        rc = tw_service_init(&h->base, &holder_ops, r, "factory");
    if (rc < 0) {
        tw_free(h);
        if (m)
            tw_service_release(tw_multi_service_base(m));
        release(obj);
        *failure = tw_failure_new(rc, NULL, "%s: %s", name, tw_strerror(rc));
        return rc;
    }
    h->release = release;
    h->obj = obj;
    rc = tw_multi_service_add(m, &h->base, failure);
    if (rc < 0) {
        tw_service_release(&h->base); /* releases the factory */
        tw_service_release(tw_multi_service_base(m));
        return rc;
    }
    size_t n = tw_plugin_arg_count(args, "listen");
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = add_listen(r, m, tw_plugin_arg_at(args, "listen", i), factory, failure);
    if (rc < 0) {
        tw_service_release(tw_multi_service_base(m));
        return rc;
    }
    *out = tw_multi_service_base(m);
    return 0;
}

/* ---- portforward */

static void release_portforward(void *pf)
{
    tw_portforward_factory_free(pf);
}

static int make_portforward(tw_reactor *r, const tw_plugin_args *args, tw_service **out,
                            tw_failure **failure)
{
    const char *to = tw_plugin_arg(args, "connect");
    if (!to) {
        *failure = tw_failure_new(TW_EINVAL, NULL,
                                  "--connect is required: the endpoint each connection is "
                                  "forwarded to (e.g. --connect tcp:example.org:80)");
        return TW_EINVAL;
    }
    tw_endpoint *ep = NULL;
    tw_failure *why = NULL;
    int rc = tw_endpoint_client_from_string(r, to, &ep, &why);
    if (rc < 0) {
        *failure = tw_failure_new(rc, NULL, "--connect: %s",
                                  why ? tw_failure_message(why) : tw_strerror(rc));
        tw_failure_unref(why);
        return rc;
    }
    tw_portforward_factory *pf = NULL;
    rc = tw_portforward_factory_new(ep, NULL, &pf);
    if (rc < 0) {
        tw_endpoint_free(ep);
        *failure = tw_failure_new(rc, NULL, "portforward: %s", tw_strerror(rc));
        return rc;
    }
    return tw__plugin_serve_factory(r, args, "portforward", tw_portforward_factory_base(pf),
                                    release_portforward, pf, out, failure);
}

static const tw_plugin_option portforward_options[] = {
    {.name = "listen",
     .short_name = 'l',
     .metavar = "ENDPOINT",
     .help = "Listen on ENDPOINT (default: Twisted's port 6666).",
     .default_value = "tcp:6666",
     .repeatable = true},
    {.name = "connect",
     .short_name = 'c',
     .metavar = "ENDPOINT",
     .help = "Forward each connection to ENDPOINT (required), e.g. tcp:example.org:80."},
    {0},
};

const tw_plugin tw_plugin_portforward = {
    .name = "portforward",
    .description =
        "A port forwarder: each connection is relayed to --connect, with flow control both ways.",
    .options = portforward_options,
    .make_service = make_portforward,
};
