/* What the descriptor-backed transports share. Contracts: fdtransport.h,
 * transport.h. */
#include <twine/error.h>

#include "net/fdtransport.h"

/* ---- Producers */

void tw__flow_init(struct tw__flow *f)
{
    f->producer = NULL;
    f->streaming = f->paused = false;
    f->high = TW_TRANSPORT_HIGH_WATER;
    f->low = TW_TRANSPORT_LOW_WATER;
}

int tw__flow_register(struct tw__flow *f, tw_transport *t, tw_producer *producer, bool streaming,
                      size_t queued)
{
    if (f->producer)
        return TW_EBUSY;
    f->producer = producer;
    f->streaming = streaming;
    f->paused = false;
    tw_transport_ref(t);
    if (!streaming) {
        producer->ops->resume_producing(producer);
    } else if (queued > f->high) {
        f->paused = true;
        producer->ops->pause_producing(producer);
    }
    tw_transport_unref(t);
    return 0;
}

void tw__flow_stop(struct tw__flow *f)
{
    tw_producer *prod = f->producer;
    f->producer = NULL;
    if (prod && prod->ops->stop_producing)
        prod->ops->stop_producing(prod);
}

/* ---- The closing rules */

void tw__fd_start(tw_transport *t, tw_handle *h, void (*on_close)(tw_handle *h), tw_protocol *p,
                  tw_transport **out)
{
    tw_reactor_add_handle(t->reactor, h, on_close);
    t->protocol = p;
    if (out)
        *out = t;
    tw_transport_ref(t);
    tw_protocol_make_connection(p, t);
    tw_transport_unref(t);
}

bool tw__fd_side_closed(tw_transport *t, const struct tw__fd_state *st, bool read_side)
{
    tw_protocol *p = t->protocol;
    void (*tell)(tw_protocol *) = NULL;
    if (p->ops)
        tell = read_side ? p->ops->read_connection_lost : p->ops->write_connection_lost;
    if (tell)
        tell(p);
    uint32_t other = read_side ? TW__FD_WRITE_CLOSED : TW__FD_READ_CLOSED;
    return !(st->flags & TW__FD_GOING) && (st->flags & other);
}

void tw__fd_tell_lost(tw_transport *t, struct tw__flow *flow, tw_failure *reason,
                      void (*hook)(void *arg, tw_failure *reason), void *hook_arg)
{
    if (flow)
        tw__flow_stop(flow);
    tw_protocol *p = t->protocol;
    if (p)
        tw_protocol_connection_lost(p, reason);
    if (hook)
        hook(hook_arg, reason);
    tw_failure_unref(reason);
    t->protocol = NULL;
    tw_protocol_release(p);
    tw_transport_unref(t); /* the connection's own */
}

static const struct tw__fd_kind *kind_of(const tw_transport *t)
{
    return (const struct tw__fd_kind *)t->ops;
}

static struct tw__fd_state *state_of(const tw_transport *t)
{
    return (struct tw__fd_state *)((char *)t + kind_of(t)->state_at);
}

int tw__fd_lose_connection(tw_transport *t)
{
    const struct tw__fd_kind *k = kind_of(t);
    struct tw__fd_state *st = state_of(t);
    if (st->flags & TW__FD_CLOSING)
        return 0;
    st->flags |= TW__FD_DISCONNECTING;
    if (k->out_size(t) == 0) {
        k->schedule_loss(t, TW_ECONNDONE);
        return 0;
    }
    int rc = k->update_interest(t); /* reading off; writing on already */
    if (rc < 0)
        k->schedule_loss(t, rc);
    return 0;
}

int tw__fd_abort_connection(tw_transport *t)
{
    const struct tw__fd_kind *k = kind_of(t);
    k->schedule_loss(t, TW_ECONNABORTED);
    return 0;
}

int tw__fd_lose_write_connection(tw_transport *t)
{
    const struct tw__fd_kind *k = kind_of(t);
    struct tw__fd_state *st = state_of(t);
    if (st->flags & TW__FD_LOST)
        return TW_ENOTCONN;
    if (st->flags & (TW__FD_CLOSING | TW__FD_WRITE_SHUTTING | TW__FD_WRITE_CLOSED))
        return 0;
    st->flags |= TW__FD_WRITE_SHUTTING;
    /* Write interest even with nothing queued: the shutdown and
     * write_connection_lost then come from the reactor. */
    int rc = k->update_interest(t);
    if (rc < 0)
        k->schedule_loss(t, rc);
    return 0;
}

int tw__fd_pause_producing(tw_transport *t)
{
    const struct tw__fd_kind *k = kind_of(t);
    struct tw__fd_state *st = state_of(t);
    if (st->flags & TW__FD_LOST)
        return TW_ENOTCONN;
    st->flags |= TW__FD_PAUSED;
    k->update_interest(t); /* removing cannot fail */
    return 0;
}

int tw__fd_resume_producing(tw_transport *t)
{
    const struct tw__fd_kind *k = kind_of(t);
    struct tw__fd_state *st = state_of(t);
    if (st->flags & TW__FD_LOST)
        return TW_ENOTCONN;
    st->flags &= ~(uint32_t)TW__FD_PAUSED;
    int rc = k->update_interest(t);
    if (rc < 0)
        k->schedule_loss(t, rc);
    return 0;
}

int tw__fd_register_producer(tw_transport *t, tw_producer *producer, bool streaming)
{
    const struct tw__fd_kind *k = kind_of(t);
    if (state_of(t)->flags & TW__FD_NO_WRITE)
        return TW_ENOTCONN;
    /* Busy before out of memory: a second producer is refused as such. */
    struct tw__flow *f = k->flow(t, false);
    if (f && f->producer)
        return TW_EBUSY;
    if (!(f = k->flow(t, true)))
        return TW_ENOMEM;
    return tw__flow_register(f, t, producer, streaming, k->out_size(t));
}

int tw__fd_unregister_producer(tw_transport *t)
{
    const struct tw__fd_kind *k = kind_of(t);
    if (state_of(t)->flags & TW__FD_LOST)
        return TW_ENOTCONN;
    struct tw__flow *f = k->flow(t, false);
    if (f)
        f->producer = NULL;
    return 0;
}

size_t tw__fd_write_buffer_size(const tw_transport *t)
{
    const struct tw__fd_kind *k = kind_of(t);
    if (state_of(t)->flags & TW__FD_LOST)
        return 0;
    return k->out_size(t);
}

int tw__fd_set_write_buffer_limits(tw_transport *t, size_t high, size_t low)
{
    const struct tw__fd_kind *k = kind_of(t);
    if (state_of(t)->flags & TW__FD_LOST)
        return TW_ENOTCONN;
    /* The defaults need no block where the flow lives in one. */
    struct tw__flow *f = k->flow(t, false);
    if (!f && high == TW_TRANSPORT_HIGH_WATER && low == TW_TRANSPORT_LOW_WATER)
        return 0;
    if (!f && !(f = k->flow(t, true)))
        return TW_ENOMEM;
    f->high = high;
    f->low = low;
    return 0;
}
