/* The haproxy: server endpoint. Each connection the inner port accepts is
 * wrapped (wrap.h); the wrapper reads the PROXY header from the first bytes
 * (proxy.h), then gives the application's protocol its connection, with
 * get_peer / get_host answering the header's addresses, and the bytes that
 * followed the header. A malformed header, or none within
 * TW_HAPROXY_HEADER_TIMEOUT, closes the connection before the application's
 * protocol sees anything.
 *
 * The endpoint's port is a small port of its own around the inner one, so
 * that stopping it also lets go of the wrapping factory, which lives on until
 * the last wrapped connection is gone (tw_wrapping_factory_keep). */
#include <string.h>

#include <twine/buffer.h>
#include <twine/error.h>
#include <twine/log.h>
#include <twine/proxy.h>
#include <twine/wrap.h>

#include "net/endpoint-haproxy.h"
#include "net/endpoint-tls.h"
#include "net/net-internal.h"

#define NS "twine.endpoint.haproxy"

struct hp_wrapper {
    tw_wrapper w;
    tw_rbuf head;      /* the header so far, when it spans reads */
    tw_timer deadline; /* the header must be whole by then */
    tw_address peer, host;
    bool have_addresses; /* the header named them (PROXY, not LOCAL) */
};

struct hp_port {
    tw_listening_port base;
    tw_listening_port *inner;
    tw_wrapping_factory *factory;
};

static void free_factory(tw_wrapping_factory *wf)
{
    tw_free(wf);
}

/* The proxy's own address (the connection's real peer), for logs. */
static const char *proxy_name(struct hp_wrapper *h, char *buf, size_t size)
{
    tw_address peer;
    if (tw_transport_get_peer(tw_wrapper_real(&h->w), &peer) < 0)
        peer.len = 0;
    return tw_address_format(&peer, buf, size);
}

static void header_late(tw_timer *t)
{
    struct hp_wrapper *h = (struct hp_wrapper *)((char *)t - offsetof(struct hp_wrapper, deadline));
    char where[TW_ADDRESS_STRLEN];
    tw_log_warn(NS, "no PROXY header from %s within %g s: closing",
                proxy_name(h, where, sizeof where), TW_HAPROXY_HEADER_TIMEOUT);
    tw_transport_abort_connection(tw_wrapper_real(&h->w));
}

static void hp_made(tw_wrapper *w)
{
    struct hp_wrapper *h = (struct hp_wrapper *)w;
    tw_timer_init(&h->deadline, tw_reactor_clock(tw_wrapper_real(w)->reactor), header_late);
    if (tw_timer_start(&h->deadline, TW_HAPROXY_HEADER_TIMEOUT) < 0)
        tw_transport_abort_connection(tw_wrapper_real(w)); /* unbounded wait: refuse */
}

static void take_addresses(struct hp_wrapper *h, const tw_proxy_header *hdr)
{
    if (hdr->command != TW_PROXY_CMD_PROXY || hdr->src_len == 0)
        return; /* LOCAL (a health check) or UNKNOWN: the connection's own */
    h->have_addresses = true;
    h->peer.len = hdr->src_len;
    memcpy(&h->peer.u, &hdr->src, hdr->src_len);
    h->host.len = hdr->dst_len;
    memcpy(&h->host.u, &hdr->dst, hdr->dst_len);
}

static void refuse(struct hp_wrapper *h, const char *why)
{
    char where[TW_ADDRESS_STRLEN];
    tw_log_warn(NS, "bad PROXY header from %s: %s; closing", proxy_name(h, where, sizeof where),
                why);
    tw_timer_stop(&h->deadline);
    tw_rbuf_clear(&h->head);
    tw_transport_abort_connection(tw_wrapper_real(&h->w));
}

/* Parses the header from data (the whole of it so far); returns its length,
 * 0 when more is needed, or -1 after refusing the connection. */
static long parse(struct hp_wrapper *h, const char *data, size_t len)
{
    tw_proxy_header hdr;
    int n = tw_proxy_parse(data, len, &hdr);
    if (n == TW_EAGAIN)
        return 0;
    if (n < 0) {
        refuse(h, hdr.error ? hdr.error : "malformed");
        return -1;
    }
    take_addresses(h, &hdr);
    return n;
}

static void start_wrapped(struct hp_wrapper *h, const char *rest, size_t len)
{
    tw_timer_stop(&h->deadline);
    tw_wrapper_make_wrapped_connection(&h->w);
    if (len > 0)
        tw_wrapper_deliver(&h->w, rest, len);
}

static void hp_data(tw_wrapper *w, const char *data, size_t len)
{
    struct hp_wrapper *h = (struct hp_wrapper *)w;
    if (w->wrapped_made || !tw_timer_active(&h->deadline)) {
        tw_wrapper_deliver(w, data, len);
        return;
    }
    if (tw_rbuf_size(&h->head) == 0) {
        /* The common case: the whole header is in the first read. */
        long n = parse(h, data, len);
        if (n > 0) {
            start_wrapped(h, data + n, len - (size_t)n);
            return;
        }
        if (n < 0)
            return;
    }
    /* Part of a header: keep it, bounded by the longest header there is. */
    size_t held = tw_rbuf_size(&h->head);
    size_t take = len < TW_PROXY_MAX - held ? len : TW_PROXY_MAX - held;
    if (tw_rbuf_append(&h->head, data, take) < 0) {
        refuse(h, "out of memory for the header");
        return;
    }
    long n = parse(h, tw_rbuf_data(&h->head), tw_rbuf_size(&h->head));
    if (n == 0 && take < len)
        n = -1, refuse(h, "longer than any header");
    if (n <= 0)
        return;
    /* The bytes after the header: some were held, the rest are in data. */
    size_t total = held + take, after = total - (size_t)n;
    tw_rbuf head = h->head;
    tw_rbuf_init(&h->head, TW_PROXY_MAX);
    start_wrapped(h, tw_rbuf_data(&head) + n, after);
    tw_rbuf_clear(&head);
    if (take < len)
        tw_wrapper_deliver(w, data + take, len - take);
}

static void hp_lost(tw_wrapper *w, tw_failure *reason)
{
    struct hp_wrapper *h = (struct hp_wrapper *)w;
    (void)reason;
    tw_timer_stop(&h->deadline);
    tw_rbuf_clear(&h->head);
}

static void hp_free(tw_wrapper *w)
{
    struct hp_wrapper *h = (struct hp_wrapper *)w;
    tw_rbuf_clear(&h->head);
}

static int hp_get_peer(const tw_wrapper *w, tw_address *out)
{
    const struct hp_wrapper *h = (const struct hp_wrapper *)w;
    if (!h->have_addresses)
        return tw_transport_get_peer(tw_wrapper_real(w), out);
    *out = h->peer;
    return 0;
}

static int hp_get_host(const tw_wrapper *w, tw_address *out)
{
    const struct hp_wrapper *h = (const struct hp_wrapper *)w;
    if (!h->have_addresses)
        return tw_transport_get_host(tw_wrapper_real(w), out);
    *out = h->host;
    return 0;
}

static const tw_wrapper_hooks hp_wrapper_hooks = {
    .connection_made = hp_made,
    .data_received = hp_data,
    .connection_lost = hp_lost,
    .free = hp_free,
    .get_peer = hp_get_peer,
    .get_host = hp_get_host,
};

static int hp_init(tw_wrapping_factory *wf, tw_wrapper *w)
{
    struct hp_wrapper *h = (struct hp_wrapper *)w;
    (void)wf;
    tw_rbuf_init(&h->head, TW_PROXY_MAX);
    return 0;
}

static const tw_wrapping_factory_hooks hp_factory_hooks = {.init = hp_init};

static int port_get_host(const tw_listening_port *base, tw_address *out)
{
    const struct hp_port *p = (const struct hp_port *)base;
    return tw_listening_port_get_host(p->inner, out);
}

static void port_stop(tw_listening_port *base)
{
    struct hp_port *p = (struct hp_port *)base;
    tw_deferred_unref(tw_listening_port_stop(p->inner));
    tw_wrapping_factory_drop(p->factory);
    tw_free(p);
}

static const struct tw__port_ops hp_port_ops = {.get_host = port_get_host, .stop = port_stop};

int tw__haproxy_listen(tw_reactor *r, const tw_endpoint_spec *spec, tw_factory *factory,
                       tw_listening_port **port, tw_failure **failure)
{
    tw_wrapping_factory *f = tw_calloc(1, sizeof *f);
    struct hp_port *p = tw_calloc(1, sizeof *p);
    if (!f || !p) {
        tw_free(f);
        tw_free(p);
        *failure = tw_failure_new(TW_ENOMEM, NULL, NULL);
        return TW_ENOMEM;
    }
    tw_wrapping_factory_init(f, factory, &hp_wrapper_hooks, sizeof(struct hp_wrapper),
                             &hp_factory_hooks);
    tw_wrapping_factory_keep(f, free_factory);
    /* ssl: the PROXY header comes first, in the clear: our wrappers go
     * outside TLS's, so ssl listens with our factory around its own. */
    int rc = spec->inner->kind == TW_ENDPOINT_SSL
                 ? tw__ssl_listen(r, spec->inner, factory, f, &p->inner, failure)
                 : tw__endpoint_listen_spec(r, spec->inner, &f->base, &p->inner, failure);
    if (rc < 0) {
        tw_free(f);
        tw_free(p);
        if (*failure) { /* say which layer: "haproxy: tcp: cannot listen..." */
            tw_failure *inner = *failure;
            *failure = tw_failure_new(rc, inner, "haproxy: %s", tw_failure_message(inner));
        }
        return rc;
    }
    p->base.ops = &hp_port_ops;
    p->factory = f;
    *port = &p->base;
    return 0;
}
