/* Protocols and factories: the calls transports make on protocols (so NULL
 * ops are handled in one place) and the default factory. See protocol.h. */
#include <string.h>

#include <twine/log.h>
#include <twine/protocol.h>

#define LOG_NS "twine.net"

void tw_protocol_init(tw_protocol *p, const tw_protocol_ops *ops)
{
    memset(p, 0, sizeof *p);
    p->ops = ops;
}

void tw_protocol_make_connection(tw_protocol *p, tw_transport *t)
{
    p->transport = t;
    if (p->ops && p->ops->connection_made)
        p->ops->connection_made(p);
}

void tw_protocol_data_received(tw_protocol *p, const char *data, size_t len)
{
    if (p->ops && p->ops->data_received)
        p->ops->data_received(p, data, len);
}

void tw_protocol_connection_lost(tw_protocol *p, tw_failure *reason)
{
    if (p->ops && p->ops->connection_lost)
        p->ops->connection_lost(p, reason);
}

void tw_protocol_release(tw_protocol *p)
{
    if (!p)
        return;
    /* A hand-made protocol's free may release p itself: read what is needed
     * first and touch nothing after it. */
    bool default_built = p->default_built;
    p->transport = NULL;
    if (p->ops && p->ops->free)
        p->ops->free(p);
    if (default_built)
        tw_free(p);
}

void tw_factory_init(tw_factory *f, const tw_factory_ops *ops, const tw_protocol_ops *protocol_ops,
                     size_t protocol_size, void *data)
{
    f->ops = ops;
    f->protocol_ops = protocol_ops;
    f->protocol_size = protocol_size < sizeof(tw_protocol) ? sizeof(tw_protocol) : protocol_size;
    f->data = data;
    f->users = 0;
}

tw_protocol *tw_factory_build_default(tw_factory *f, const tw_address *addr)
{
    (void)addr;
    if (!f || !f->protocol_ops)
        return NULL;
    size_t size = f->protocol_size < sizeof(tw_protocol) ? sizeof(tw_protocol) : f->protocol_size;
    tw_protocol *p = tw_calloc(1, size);
    if (!p)
        return NULL;
    p->ops = f->protocol_ops;
    p->factory = f;
    p->default_built = true;
    return p;
}

tw_protocol *tw_factory_build_protocol(tw_factory *f, const tw_address *addr)
{
    if (!f)
        return NULL;
    tw_protocol *p = (f->ops && f->ops->build_protocol) ? f->ops->build_protocol(f, addr)
                                                        : tw_factory_build_default(f, addr);
    if (p && !p->factory)
        p->factory = f;
    return p;
}

void tw_factory_do_start(tw_factory *f)
{
    if (f->users++ == 0 && f->ops && f->ops->start_factory)
        f->ops->start_factory(f);
}

void tw_factory_do_stop(tw_factory *f)
{
    if (f->users == 0) {
        tw_log_warn(LOG_NS, "factory %p stopped more times than it was started", (void *)f);
        return;
    }
    if (--f->users == 0 && f->ops && f->ops->stop_factory)
        f->ops->stop_factory(f);
}
