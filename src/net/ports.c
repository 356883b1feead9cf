/* net.h's listening port and connector calls: dispatch through the ops
 * (net-internal.h), so real ports (listen.c), real connectors (connect.c)
 * and the memory reactor's fakes answer the same calls. */
#include <twine/error.h>
#include <twine/net.h>

#include "net/net-internal.h"

int tw_listening_port_get_host(const tw_listening_port *port, tw_address *out)
{
    if (!port || !out)
        return TW_EINVAL;
    return port->ops->get_host(port, out);
}

tw_deferred *tw_listening_port_stop(tw_listening_port *port)
{
    if (!port)
        return NULL;
    port->ops->stop(port);
    /* Made after the stop, so that running out of memory here cannot keep
     * the port open. */
    return tw_succeed(tw_result_borrowed(NULL));
}

int tw_connector_connect(tw_connector *c)
{
    if (!c)
        return TW_EINVAL;
    return c->ops->connect(c);
}

int tw_connector_stop_connecting(tw_connector *c)
{
    if (!c)
        return TW_EINVAL;
    return c->ops->stop_connecting(c);
}

void tw_connector_disconnect(tw_connector *c)
{
    if (c)
        c->ops->disconnect(c);
}

tw_connector_state tw_connector_get_state(const tw_connector *c)
{
    if (!c)
        return TW_CONNECTOR_DISCONNECTED;
    return c->ops->get_state(c);
}

const tw_address *tw_connector_get_destination(const tw_connector *c)
{
    if (!c)
        return NULL;
    return c->ops->get_destination(c);
}

tw_protocol *tw_connector_protocol(const tw_connector *c)
{
    if (!c)
        return NULL;
    return c->ops->protocol(c);
}

void tw_connector_free(tw_connector *c)
{
    if (c)
        c->ops->free(c);
}
