/* Helpers for the relay tests (portforward, socks): a peer protocol that
 * sends a byte pattern as a pull producer, checks the pattern it receives,
 * reads slowly, echoes, half-closes; listening and connecting on loopback;
 * and a loop that iterates the reactor until a condition holds. Header-only
 * (each test file is its own executable). */
#ifndef TWINE_TESTS_RELAY_TEST_H
#define TWINE_TESTS_RELAY_TEST_H

#include <string.h>

#include <twine/endpoint.h>
#include <twine/net.h>

#include "twtest.h"

#define RT_UNUSED __attribute__((unused))

/* Iterates r until cond holds, failing the test after `timeout` seconds. */
#define RT_WAIT(r, cond, timeout)                                                                  \
    do {                                                                                           \
        double rt_end_ = tw_reactor_seconds(r) + (timeout);                                        \
        while (!(cond) && tw_reactor_seconds(r) < rt_end_)                                         \
            tw_reactor_iterate((r), 0.01);                                                         \
        cr_assert(cond, "timed out waiting for %s", #cond);                                        \
    } while (0)

static inline uint8_t rt_pattern(uint64_t i)
{
    return (uint8_t)(i % 253);
}

/* What one peer does and saw; outlives its protocol (the factory's data). */
struct rt_peer {
    /* What to do. */
    uint64_t send_total;  /* pattern bytes to send from connection_made */
    bool shut_after_send; /* then lose_write_connection */
    bool close_after_send;
    double pause_first;  /* stop reading for this long after connection_made */
    bool echo;           /* write back what arrives, reading paused by its own buffer */
    bool half_close;     /* take end of file as read_connection_lost */
    const char *on_eof;  /* written at end of file, then lose_connection */
    const char *on_made; /* written at connection_made */
    bool close_on_data;  /* lose_connection at the first bytes */
    /* What happened. */
    int made, lost, lost_code, eofs, freed, write_lost;
    uint64_t received, sent;
    bool pattern_bad;
    char head[512]; /* the first bytes received, NUL-terminated */
    size_t head_len;
    tw_transport *transport; /* while connected */
    size_t max_queued;       /* the largest write buffer of this peer */
};

struct rt_proto {
    tw_protocol base;
    struct rt_peer *s;
    tw_producer pull;
    tw_timer resume;
    bool timing; /* resume was initialised */
};

static inline struct rt_proto *rt_of_pull(tw_producer *p)
{
    return (struct rt_proto *)((char *)p - offsetof(struct rt_proto, pull));
}

static inline void rt_pull_more(tw_producer *prod)
{
    struct rt_proto *rp = rt_of_pull(prod);
    struct rt_peer *s = rp->s;
    tw_transport *t = rp->base.transport;
    if (!t || s->sent >= s->send_total)
        return;
    static char chunk[65536];
    size_t n = sizeof chunk;
    if (s->send_total - s->sent < n)
        n = (size_t)(s->send_total - s->sent);
    for (size_t i = 0; i < n; i++)
        chunk[i] = (char)rt_pattern(s->sent + i);
    if (tw_transport_write(t, chunk, n) < 0)
        return;
    s->sent += n;
    size_t q = tw_transport_write_buffer_size(t);
    if (q > s->max_queued)
        s->max_queued = q;
    if (s->sent == s->send_total) {
        tw_transport_unregister_producer(t);
        if (s->shut_after_send)
            tw_transport_lose_write_connection(t);
        if (s->close_after_send)
            tw_transport_lose_connection(t);
    }
}

static const tw_producer_ops rt_pull_ops = {.resume_producing = rt_pull_more};

static inline void rt_resume_due(tw_timer *timer)
{
    struct rt_proto *rp = (struct rt_proto *)((char *)timer - offsetof(struct rt_proto, resume));
    if (rp->base.transport)
        tw_transport_resume_producing(rp->base.transport);
}

static inline void rt_made(tw_protocol *p)
{
    struct rt_proto *rp = (struct rt_proto *)p;
    struct rt_peer *s = rp->s;
    s->made++;
    s->transport = p->transport;
    if (s->on_made)
        tw_transport_write(p->transport, s->on_made, strlen(s->on_made));
    if (s->pause_first > 0 && p->transport->reactor) {
        tw_transport_pause_producing(p->transport);
        tw_timer_init(&rp->resume, tw_reactor_clock(p->transport->reactor), rt_resume_due);
        rp->timing = true;
        tw_timer_start(&rp->resume, s->pause_first);
    }
    if (s->echo)
        cr_assert_eq(
            tw_transport_register_producer(p->transport, tw_transport_producer(p->transport), true),
            0);
    else if (s->send_total > 0)
        cr_assert_eq(tw_transport_register_producer(p->transport, &rp->pull, false), 0);
}

static inline void rt_data(tw_protocol *p, const char *data, size_t len)
{
    struct rt_peer *s = ((struct rt_proto *)p)->s;
    for (size_t i = 0; i < len; i++)
        if ((uint8_t)data[i] != rt_pattern(s->received + i))
            s->pattern_bad = true;
    size_t room = sizeof s->head - 1 - s->head_len;
    size_t n = len < room ? len : room;
    memcpy(s->head + s->head_len, data, n);
    s->head_len += n;
    s->head[s->head_len] = '\0';
    s->received += len;
    if (s->echo) {
        tw_transport_write(p->transport, data, len);
        size_t q = tw_transport_write_buffer_size(p->transport);
        if (q > s->max_queued)
            s->max_queued = q;
    }
    if (s->close_on_data)
        tw_transport_lose_connection(p->transport);
}

static inline void rt_read_lost(tw_protocol *p)
{
    struct rt_peer *s = ((struct rt_proto *)p)->s;
    s->eofs++;
    if (s->on_eof) {
        tw_transport_write(p->transport, s->on_eof, strlen(s->on_eof));
        tw_transport_lose_connection(p->transport);
    }
}

static inline void rt_write_lost(tw_protocol *p)
{
    ((struct rt_proto *)p)->s->write_lost++;
}

static inline void rt_lost(tw_protocol *p, tw_failure *reason)
{
    struct rt_proto *rp = (struct rt_proto *)p;
    rp->s->lost++;
    rp->s->lost_code = tw_failure_code(reason);
    rp->s->transport = NULL;
    if (rp->timing)
        tw_timer_stop(&rp->resume);
}

static inline void rt_free(tw_protocol *p)
{
    struct rt_proto *rp = (struct rt_proto *)p;
    rp->s->freed++;
    if (rp->timing)
        tw_timer_stop(&rp->resume);
}

static const tw_protocol_ops rt_ops = {
    .connection_made = rt_made,
    .data_received = rt_data,
    .connection_lost = rt_lost,
    .write_connection_lost = rt_write_lost,
    .free = rt_free,
};

static const tw_protocol_ops rt_half_ops = {
    .connection_made = rt_made,
    .data_received = rt_data,
    .read_connection_lost = rt_read_lost,
    .connection_lost = rt_lost,
    .write_connection_lost = rt_write_lost,
    .free = rt_free,
};

static inline tw_protocol *rt_build(tw_factory *f, const tw_address *addr)
{
    struct rt_proto *rp = (struct rt_proto *)tw_factory_build_default(f, addr);
    if (!rp)
        return NULL;
    rp->s = f->data;
    rp->pull.ops = &rt_pull_ops;
    if (rp->s->half_close)
        rp->base.ops = &rt_half_ops;
    return &rp->base;
}

static const tw_factory_ops rt_factory_ops = {.build_protocol = rt_build};

static inline void rt_factory_init(tw_factory *f, struct rt_peer *s)
{
    tw_factory_init(f, &rt_factory_ops, &rt_ops, sizeof(struct rt_proto), s);
}

/* Listens on 127.0.0.1, any port; returns the port number. */
static inline unsigned rt_listen(tw_reactor *r, tw_factory *f, tw_listening_port **port)
{
    tw_address a;
    cr_assert_eq(tw_address_from_ip(&a, "127.0.0.1", 0), 0);
    cr_assert_eq(tw_listen_stream(r, &a, NULL, f, port), 0);
    tw_address host;
    cr_assert_eq(tw_listening_port_get_host(*port, &host), 0);
    return tw_address_port(&host);
}

static inline void rt_stop(tw_listening_port *port)
{
    tw_deferred *d = tw_listening_port_stop(port);
    cr_assert_not_null(d);
    tw_deferred_unref(d);
}

/* A client endpoint for tcp:127.0.0.1:port. */
static inline tw_endpoint *rt_client_endpoint(tw_reactor *r, unsigned port)
{
    char desc[64];
    snprintf(desc, sizeof desc, "tcp:127.0.0.1:%u", port);
    tw_endpoint *ep = NULL;
    cr_assert_eq(tw_endpoint_client_from_string(r, desc, &ep, NULL), 0);
    return ep;
}

/* Connects f to 127.0.0.1:port and waits for the connection. */
static inline void rt_connect(tw_reactor *r, unsigned port, tw_factory *f)
{
    tw_endpoint *ep = rt_client_endpoint(r, port);
    tw_deferred *d = tw_endpoint_connect(ep, f);
    cr_assert_not_null(d);
    tw_result res = twtest_wait(r, d);
    cr_assert(!tw_result_is_failure(res), "connect failed: %s",
              res.failure ? tw_failure_message(res.failure) : "");
    tw_result_release(&res);
    tw_deferred_unref(d);
    tw_endpoint_free(ep);
}

/* A port on 127.0.0.1 where nothing listens (bound, then closed). */
static inline unsigned rt_dead_port(tw_reactor *r)
{
    tw_factory f;
    struct rt_peer s = {0};
    rt_factory_init(&f, &s);
    tw_listening_port *port;
    unsigned n = rt_listen(r, &f, &port);
    rt_stop(port);
    return n;
}

#endif
