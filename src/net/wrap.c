/* Protocol wrappers and wrapping factories: see wrap.h. */
#include <string.h>
#include <unistd.h>

#include <twine/error.h>
#include <twine/log.h>
#include <twine/wrap.h>

#define LOG_NS "twine.wrap"

static tw_wrapper *from_transport(const tw_transport *t)
{
    return (tw_wrapper *)((char *)t - offsetof(tw_wrapper, transport));
}

/* True while the wrapped protocol may use the real transport. */
static bool up(const tw_wrapper *w)
{
    return !w->lost && w->base.transport != NULL;
}

/* ---- Factory bookkeeping */

static void list_add(tw_wrapper *w)
{
    tw_wrapping_factory *wf = w->wfactory;
    if (!wf || w->listed)
        return;
    w->prev = wf->tail;
    w->next = NULL;
    if (wf->tail)
        wf->tail->next = w;
    else
        wf->head = w;
    wf->tail = w;
    wf->connected++;
    w->listed = true;
}

static void list_remove(tw_wrapper *w)
{
    tw_wrapping_factory *wf = w->wfactory;
    if (!wf || !w->listed)
        return;
    if (w->prev)
        w->prev->next = w->next;
    else
        wf->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        wf->tail = w->prev;
    w->prev = w->next = NULL;
    wf->connected--;
    w->listed = false;
}

static void unregister(tw_wrapper *w)
{
    list_remove(w);
    if (!w->counted)
        return;
    w->counted = false;
    tw_wrapping_factory *wf = w->wfactory;
    if (wf->hooks && wf->hooks->unregister_protocol)
        wf->hooks->unregister_protocol(wf, w);
}

/* ---- The protocol side: events from the real transport */

static tw_wrapper *from_protocol(tw_protocol *p)
{
    return (tw_wrapper *)p;
}

static void w_connection_made(tw_protocol *p)
{
    tw_wrapper *w = from_protocol(p);
    w->transport.reactor = p->transport->reactor;
    list_add(w);
    if (w->hooks && w->hooks->connection_made)
        w->hooks->connection_made(w);
    else
        tw_wrapper_make_wrapped_connection(w);
}

static void w_data_received(tw_protocol *p, const char *data, size_t len)
{
    tw_wrapper *w = from_protocol(p);
    if (w->lost)
        return;
    if (w->hooks && w->hooks->data_received)
        w->hooks->data_received(w, data, len);
    else
        tw_wrapper_deliver(w, data, len);
}

static void release_wrapped(tw_wrapper *w)
{
    tw_protocol *wrapped = w->wrapped;
    if (!wrapped)
        return;
    w->wrapped = NULL;
    w->transport.protocol = NULL;
    tw_protocol_release(wrapped);
}

static void w_connection_lost(tw_protocol *p, tw_failure *reason)
{
    tw_wrapper *w = from_protocol(p);
    if (w->hooks && w->hooks->connection_lost)
        w->hooks->connection_lost(w, reason);
    if (w->lost_reason)
        reason = w->lost_reason;
    /* get_peer and friends keep working during the wrapped connection_lost
     * (protocols log who left); everything is refused once it returns. */
    if (w->wrapped && w->wrapped_made)
        tw_protocol_connection_lost(w->wrapped, reason);
    w->lost = true;
    release_wrapped(w);
    unregister(w);
}

/* Half-close: only in the ops table of wrappers whose wrapped protocol
 * handles it, so a transport's choice (close on end of file, or not) is the
 * wrapped protocol's. */
static void w_read_connection_lost(tw_protocol *p)
{
    tw_wrapper *w = from_protocol(p);
    if (w->lost)
        return;
    if (w->wrapped && w->wrapped_made && w->wrapped->ops->read_connection_lost)
        w->wrapped->ops->read_connection_lost(w->wrapped);
    else
        /* End of file before the wrapped protocol was given its connection
         * (a header that never came): nothing more can arrive. */
        tw_transport_lose_connection(p->transport);
}

static void w_write_connection_lost(tw_protocol *p)
{
    tw_wrapper *w = from_protocol(p);
    if (!w->lost && w->wrapped && w->wrapped_made && w->wrapped->ops->write_connection_lost)
        w->wrapped->ops->write_connection_lost(w->wrapped);
}

static void w_fd_received(tw_protocol *p, int fd)
{
    tw_wrapper *w = from_protocol(p);
    if (!w->lost && w->wrapped && w->wrapped_made && w->wrapped->ops->fd_received)
        w->wrapped->ops->fd_received(w->wrapped, fd);
    else
        close(fd);
}

static void w_free(tw_protocol *p)
{
    tw_wrapper *w = from_protocol(p);
    w->lost = true;
    release_wrapped(w);
    unregister(w);
    if (w->hooks && w->hooks->free)
        w->hooks->free(w);
    tw_failure_unref(w->lost_reason);
    w->lost_reason = NULL;
    if (w->holds_factory) { /* the last use of wfactory */
        w->holds_factory = false;
        tw_wrapping_factory_drop(w->wfactory);
    }
    /* The memory goes with the transport's last reference (ours, unless the
     * wrapped protocol kept one). */
    tw_transport_unref(&w->transport);
}

static const tw_protocol_ops wrapper_ops = {
    .connection_made = w_connection_made,
    .data_received = w_data_received,
    .connection_lost = w_connection_lost,
    .write_connection_lost = w_write_connection_lost,
    .fd_received = w_fd_received,
    .free = w_free,
};

static const tw_protocol_ops wrapper_half_close_ops = {
    .connection_made = w_connection_made,
    .data_received = w_data_received,
    .connection_lost = w_connection_lost,
    .read_connection_lost = w_read_connection_lost,
    .write_connection_lost = w_write_connection_lost,
    .fd_received = w_fd_received,
    .free = w_free,
};

/* ---- The transport side: calls from the wrapped protocol */

#define HOOK(w, name) ((w)->hooks ? (w)->hooks->name : NULL)

static int t_write(tw_transport *t, const void *data, size_t len)
{
    tw_wrapper *w = from_transport(t);
    if (!up(w))
        return TW_ENOTCONN;
    if (HOOK(w, write))
        return w->hooks->write(w, data, len);
    return tw_transport_write(tw_wrapper_real(w), data, len);
}

static int t_write_iov(tw_transport *t, const struct iovec *iov, int iovcnt)
{
    tw_wrapper *w = from_transport(t);
    if (!up(w))
        return TW_ENOTCONN;
    if (HOOK(w, write_iov))
        return w->hooks->write_iov(w, iov, iovcnt);
    return tw_transport_write_sequence(tw_wrapper_real(w), iov, iovcnt);
}

static int t_write_zerocopy(tw_transport *t, const void *data, size_t len, tw_release_fn release,
                            void *arg)
{
    tw_wrapper *w = from_transport(t);
    if (!up(w))
        return TW_ENOTCONN;
    if (HOOK(w, write_zerocopy))
        return w->hooks->write_zerocopy(w, data, len, release, arg);
    return tw_transport_write_zerocopy(tw_wrapper_real(w), data, len, release, arg);
}

static int t_lose_connection(tw_transport *t)
{
    tw_wrapper *w = from_transport(t);
    if (!up(w))
        return 0; /* closing a closed transport does nothing */
    if (HOOK(w, lose_connection))
        return w->hooks->lose_connection(w);
    return tw_transport_lose_connection(tw_wrapper_real(w));
}

static int t_abort_connection(tw_transport *t)
{
    tw_wrapper *w = from_transport(t);
    if (!up(w))
        return 0;
    if (HOOK(w, abort_connection))
        return w->hooks->abort_connection(w);
    return tw_transport_abort_connection(tw_wrapper_real(w));
}

static int t_lose_write_connection(tw_transport *t)
{
    tw_wrapper *w = from_transport(t);
    if (!up(w))
        return TW_ENOTCONN;
    return tw_transport_lose_write_connection(tw_wrapper_real(w));
}

static int t_get_peer(const tw_transport *t, tw_address *out)
{
    const tw_wrapper *w = from_transport(t);
    if (!up(w))
        return TW_ENOTCONN;
    if (HOOK(w, get_peer))
        return w->hooks->get_peer(w, out);
    return tw_transport_get_peer(tw_wrapper_real(w), out);
}

static int t_get_host(const tw_transport *t, tw_address *out)
{
    const tw_wrapper *w = from_transport(t);
    if (!up(w))
        return TW_ENOTCONN;
    if (HOOK(w, get_host))
        return w->hooks->get_host(w, out);
    return tw_transport_get_host(tw_wrapper_real(w), out);
}

static int t_pause_producing(tw_transport *t)
{
    tw_wrapper *w = from_transport(t);
    if (!up(w))
        return TW_ENOTCONN;
    if (HOOK(w, pause_producing))
        return w->hooks->pause_producing(w);
    return tw_transport_pause_producing(tw_wrapper_real(w));
}

static int t_resume_producing(tw_transport *t)
{
    tw_wrapper *w = from_transport(t);
    if (!up(w))
        return TW_ENOTCONN;
    if (HOOK(w, resume_producing))
        return w->hooks->resume_producing(w);
    return tw_transport_resume_producing(tw_wrapper_real(w));
}

static int t_register_producer(tw_transport *t, tw_producer *producer, bool streaming)
{
    tw_wrapper *w = from_transport(t);
    if (!up(w))
        return TW_ENOTCONN;
    if (HOOK(w, register_producer))
        return w->hooks->register_producer(w, producer, streaming);
    return tw_transport_register_producer(tw_wrapper_real(w), producer, streaming);
}

static int t_unregister_producer(tw_transport *t)
{
    tw_wrapper *w = from_transport(t);
    if (!up(w))
        return TW_ENOTCONN;
    if (HOOK(w, unregister_producer))
        return w->hooks->unregister_producer(w);
    return tw_transport_unregister_producer(tw_wrapper_real(w));
}

static size_t t_write_buffer_size(const tw_transport *t)
{
    const tw_wrapper *w = from_transport(t);
    if (!up(w))
        return 0;
    if (HOOK(w, write_buffer_size))
        return w->hooks->write_buffer_size(w);
    return tw_transport_write_buffer_size(tw_wrapper_real(w));
}

static int t_set_write_buffer_limits(tw_transport *t, size_t high, size_t low)
{
    tw_wrapper *w = from_transport(t);
    if (!up(w))
        return TW_ENOTCONN;
    return tw_transport_set_write_buffer_limits(tw_wrapper_real(w), high, low);
}

static int t_set_option(tw_transport *t, tw_transport_option option, int value)
{
    tw_wrapper *w = from_transport(t);
    if (!up(w))
        return TW_ENOTCONN;
    return tw_transport_set_option(tw_wrapper_real(w), option, value);
}

static int t_send_fds(tw_transport *t, const int *fds, size_t n)
{
    tw_wrapper *w = from_transport(t);
    if (!up(w))
        return TW_ENOTCONN;
    return tw_transport_send_fds(tw_wrapper_real(w), fds, n);
}

static void t_destroy(tw_transport *t)
{
    tw_free(from_transport(t));
}

static const tw_transport_ops wrapper_transport_ops = {
    .name = "wrapper",
    .write = t_write,
    .write_iov = t_write_iov,
    .write_zerocopy = t_write_zerocopy,
    .lose_connection = t_lose_connection,
    .abort_connection = t_abort_connection,
    .lose_write_connection = t_lose_write_connection,
    .get_peer = t_get_peer,
    .get_host = t_get_host,
    .pause_producing = t_pause_producing,
    .resume_producing = t_resume_producing,
    .register_producer = t_register_producer,
    .unregister_producer = t_unregister_producer,
    .write_buffer_size = t_write_buffer_size,
    .set_write_buffer_limits = t_set_write_buffer_limits,
    .set_option = t_set_option,
    .send_fds = t_send_fds,
    .destroy = t_destroy,
};

/* ---- Wrappers */

static tw_wrapper *wrapper_alloc(size_t size)
{
    if (size == 0)
        size = sizeof(tw_wrapper);
    if (size < sizeof(tw_wrapper))
        return NULL;
    return tw_calloc(1, size);
}

/* Fills a zeroed wrapper around wrapped. */
static void wrapper_setup(tw_wrapper *w, const tw_wrapper_hooks *hooks, tw_protocol *wrapped)
{
    bool half_close =
        !(hooks && hooks->no_half_close) && wrapped->ops && wrapped->ops->read_connection_lost;
    tw_protocol_init(&w->base, half_close ? &wrapper_half_close_ops : &wrapper_ops);
    tw_transport_init(&w->transport, &wrapper_transport_ops, NULL);
    w->wrapped = wrapped;
    w->hooks = hooks;
}

int tw_wrapper_new(const tw_wrapper_hooks *hooks, size_t size, tw_protocol *wrapped,
                   tw_wrapper **out)
{
    if (!wrapped || !out || (size != 0 && size < sizeof(tw_wrapper)))
        return TW_EINVAL;
    tw_wrapper *w = wrapper_alloc(size);
    if (!w)
        return TW_ENOMEM;
    wrapper_setup(w, hooks, wrapped);
    *out = w;
    return 0;
}

tw_wrapper *tw_wrapper_from_protocol(tw_protocol *p)
{
    if (p && (p->ops == &wrapper_ops || p->ops == &wrapper_half_close_ops))
        return (tw_wrapper *)p;
    return NULL;
}

tw_wrapper *tw_wrapper_from_transport(const tw_transport *t)
{
    return t && t->ops == &wrapper_transport_ops ? from_transport(t) : NULL;
}

void tw_wrapper_set_lost_reason(tw_wrapper *w, tw_failure *reason)
{
    if (w->lost_reason || w->lost)
        tw_failure_unref(reason);
    else
        w->lost_reason = reason;
}

int tw_wrapper_insert(tw_wrapper *w)
{
    tw_protocol *p = w ? w->wrapped : NULL;
    if (!p || w->base.transport || w->wrapped_made || w->lost)
        return TW_EINVAL;
    tw_transport *t = p->transport;
    if (!t || t->protocol != p)
        return TW_ENOTCONN;
    tw_wrapper *outer = tw_wrapper_from_transport(t);
    if (outer) {
        if (!up(outer) || outer->wrapped != p)
            return TW_ENOTCONN;
        outer->wrapped = &w->base;
    }
    t->protocol = &w->base;
    w->base.transport = t;
    w->transport.reactor = t->reactor;
    w->wrapped_made = true;
    w->transport.protocol = p;
    p->transport = &w->transport;
    if (w->hooks && w->hooks->connection_made)
        w->hooks->connection_made(w);
    return 0;
}

int tw_wrapper_make_wrapped_connection(tw_wrapper *w)
{
    if (!up(w) || !w->wrapped)
        return TW_ENOTCONN;
    if (w->wrapped_made)
        return TW_EALREADYCALLED;
    w->wrapped_made = true;
    w->transport.protocol = w->wrapped;
    tw_protocol_make_connection(w->wrapped, &w->transport);
    return 0;
}

int tw_wrapper_deliver(tw_wrapper *w, const char *data, size_t len)
{
    if (w->lost || !w->wrapped || !w->wrapped_made)
        return TW_ENOTCONN;
    tw_protocol_data_received(w->wrapped, data, len);
    return 0;
}

/* ---- Wrapping factories */

static tw_wrapping_factory *wf_of(tw_factory *f)
{
    return (tw_wrapping_factory *)f;
}

void tw_wrapping_factory_keep(tw_wrapping_factory *wf, void (*release)(tw_wrapping_factory *wf))
{
    wf->refs = 1;
    wf->release = release;
}

void tw_wrapping_factory_drop(tw_wrapping_factory *wf)
{
    if (wf->release && --wf->refs == 0)
        wf->release(wf);
}

static void hold(tw_wrapping_factory *wf)
{
    if (wf->release)
        wf->refs++;
}

static tw_protocol *wf_build_protocol(tw_factory *f, const tw_address *addr)
{
    tw_wrapping_factory *wf = wf_of(f);
    if (!(wf->hooks && wf->hooks->build_protocol))
        return tw_wrapping_factory_build(wf, addr);
    hold(wf); /* the hook may stop the port that owns wf */
    tw_protocol *p = wf->hooks->build_protocol(wf, addr);
    tw_wrapping_factory_drop(wf);
    return p;
}

static void wf_start(tw_factory *f)
{
    tw_wrapping_factory *wf = wf_of(f);
    tw_factory_do_start(wf->wrapped);
    if (wf->hooks && wf->hooks->start_factory)
        wf->hooks->start_factory(wf);
}

static void wf_stop(tw_factory *f)
{
    tw_wrapping_factory *wf = wf_of(f);
    if (wf->hooks && wf->hooks->stop_factory)
        wf->hooks->stop_factory(wf);
    tw_factory_do_stop(wf->wrapped);
}

static void wf_started_connecting(tw_factory *f, tw_connector *c)
{
    tw_factory *wrapped = wf_of(f)->wrapped;
    if (wrapped->ops && wrapped->ops->started_connecting)
        wrapped->ops->started_connecting(wrapped, c);
}

static void wf_client_connection_failed(tw_factory *f, tw_connector *c, tw_failure *reason)
{
    tw_factory *wrapped = wf_of(f)->wrapped;
    if (wrapped->ops && wrapped->ops->client_connection_failed)
        wrapped->ops->client_connection_failed(wrapped, c, reason);
}

static void wf_client_connection_lost(tw_factory *f, tw_connector *c, tw_failure *reason)
{
    tw_factory *wrapped = wf_of(f)->wrapped;
    if (wrapped->ops && wrapped->ops->client_connection_lost)
        wrapped->ops->client_connection_lost(wrapped, c, reason);
}

static const tw_factory_ops wrapping_factory_ops = {
    .build_protocol = wf_build_protocol,
    .start_factory = wf_start,
    .stop_factory = wf_stop,
    .started_connecting = wf_started_connecting,
    .client_connection_failed = wf_client_connection_failed,
    .client_connection_lost = wf_client_connection_lost,
};

void tw_wrapping_factory_init(tw_wrapping_factory *wf, tw_factory *wrapped,
                              const tw_wrapper_hooks *wrapper_hooks, size_t wrapper_size,
                              const tw_wrapping_factory_hooks *hooks)
{
    memset(wf, 0, sizeof *wf);
    tw_factory_init(&wf->base, &wrapping_factory_ops, NULL, 0, NULL);
    wf->wrapped = wrapped;
    wf->wrapper_hooks = wrapper_hooks;
    wf->wrapper_size = wrapper_size;
    wf->hooks = hooks;
}

tw_wrapping_factory *tw_wrapping_factory_from_factory(tw_factory *f)
{
    return f && f->ops == &wrapping_factory_ops ? wf_of(f) : NULL;
}

tw_protocol *tw_wrapping_factory_build(tw_wrapping_factory *wf, const tw_address *addr)
{
    return tw_wrapping_factory_build_with(wf, wf->wrapped, addr);
}

tw_protocol *tw_wrapping_factory_build_with(tw_wrapping_factory *wf, tw_factory *from,
                                            const tw_address *addr)
{
    /* The wrapper first: running out of memory then costs the wrapped
     * factory nothing (no protocol built and thrown away). */
    tw_wrapper *w = wrapper_alloc(wf->wrapper_size);
    if (!w) {
        if (wf->wrapper_size != 0 && wf->wrapper_size < sizeof(tw_wrapper))
            tw_log_error(LOG_NS, "wrapper_size %zu is smaller than a tw_wrapper", wf->wrapper_size);
        return NULL;
    }
    hold(wf); /* the wrapped factory's build_protocol may stop the port that owns wf */
    tw_protocol *wrapped = tw_factory_build_protocol(from, addr);
    if (!wrapped) {
        tw_free(w);
        tw_wrapping_factory_drop(wf);
        return NULL;
    }
    wrapper_setup(w, wf->wrapper_hooks, wrapped);
    w->wfactory = wf;
    w->base.factory = &wf->base;
    w->holds_factory = wf->release != NULL; /* the build's hold becomes the wrapper's */
    if (addr)
        w->addr = *addr;
    if (wf->hooks && wf->hooks->init && wf->hooks->init(wf, w) < 0) {
        tw_protocol_release(&w->base);
        return NULL;
    }
    w->counted = true;
    return &w->base;
}

size_t tw_wrapping_factory_connected(const tw_wrapping_factory *wf)
{
    return wf->connected;
}

void tw_wrapping_factory_each(tw_wrapping_factory *wf, void (*fn)(tw_wrapper *w, void *arg),
                              void *arg)
{
    for (tw_wrapper *w = wf->head, *next; w; w = next) {
        next = w->next;
        fn(w, arg);
    }
}
