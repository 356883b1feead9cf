/* `twined portforward --listen ENDPOINT --connect ENDPOINT`: Twisted's
 * portforward plugin (twisted.tap.portforward) over any endpoints. */
#include <string.h>

#include <twine/endpoint.h>
#include <twine/error.h>
#include <twine/portforward.h>
#include <twine/service.h>

#include "plugins-extra.h"

/* ---- What both relay plugins share */

int tw__plugin_serve_factory(tw_reactor *r, const tw_plugin_args *args, const char *name,
                             tw_factory *factory, void (*release)(void *obj), void *obj,
                             tw_service **out, tw_failure **failure)
{
    tw_multi_service *m = NULL;
    int rc = tw_multi_service_new(r, name, &m);
    if (rc < 0) {
        release(obj);
        *failure = tw_failure_new(rc, NULL, "%s: %s", name, tw_strerror(rc));
        return rc;
    }
    /* The factory lives as long as the tree: released after the servers. */
    tw_multi_service_keep(m, obj, release);
    rc = tw_plugin_add_servers(r, args, "listen", m, factory, failure);
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

const tw_plugin tw__plugin_portforward = {
    .name = "portforward",
    .description =
        "A port forwarder: each connection is relayed to --connect, with flow control both ways.",
    .options = portforward_options,
    .make_service = make_portforward,
};
