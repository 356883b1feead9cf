/* The stdio: server endpoint (Twisted's StandardIOEndpoint): "listening"
 * connects one protocol to standard input and output; the port it gives
 * holds that connection, and stopping it closes the connection. */
#include <twine/error.h>
#include <twine/process.h>

#include "net/endpoint-stdio.h"
#include "net/net-internal.h"

struct stdio_port {
    tw_listening_port base; /* first */
    tw_factory *factory;
    tw_transport *t; /* a reference, until stop */
};

static int stdio_port_get_host(const tw_listening_port *port, tw_address *out)
{
    (void)port;
    tw_address_pipe(out);
    return 0;
}

static void stdio_port_stop(tw_listening_port *port)
{
    struct stdio_port *sp = (struct stdio_port *)port;
    tw_transport_lose_connection(sp->t); /* nothing once the connection is lost */
    tw_transport_unref(sp->t);
    tw_factory_do_stop(sp->factory);
    tw_free(sp);
}

static const struct tw__port_ops stdio_port_ops = {
    .get_host = stdio_port_get_host,
    .stop = stdio_port_stop,
};

int tw__stdio_listen(tw_reactor *r, const tw_endpoint_spec *spec, tw_factory *factory,
                     tw_listening_port **port, tw_failure **failure)
{
    (void)spec;
    struct stdio_port *sp = tw_calloc(1, sizeof *sp);
    if (!sp) {
        *failure = tw_failure_new(TW_ENOMEM, NULL, NULL);
        return TW_ENOMEM;
    }
    sp->base.ops = &stdio_port_ops;
    sp->factory = factory;
    tw_factory_do_start(factory);
    tw_address pipe;
    tw_address_pipe(&pipe);
    tw_protocol *p = tw_factory_build_protocol(factory, &pipe);
    /* The default builder fails only for want of memory. */
    bool by_default = (!factory->ops || !factory->ops->build_protocol) && factory->protocol_ops;
    int rc = p ? tw_stdio_new(r, p, NULL, &sp->t) : by_default ? TW_ENOMEM : TW_ECONNABORTED;
    if (rc < 0) {
        tw_factory_do_stop(factory);
        tw_free(sp);
        *failure = rc == TW_ECONNABORTED
                       ? tw_failure_new(rc, NULL, "stdio: the factory built no protocol")
                       : tw_failure_new(rc, NULL, "stdio: cannot use standard input and output: %s",
                                        tw_strerror(rc));
        return rc;
    }
    tw_transport_ref(sp->t);
    *port = &sp->base;
    return 0;
}
