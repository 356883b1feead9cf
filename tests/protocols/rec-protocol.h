/* A protocol that records every event it sees, for the wrapper and policy
 * tests. Its events land in a struct rec_events that outlives it (the
 * factory's data), so a test can check them after the protocol was freed. */
#ifndef TWINE_TESTS_REC_PROTOCOL_H
#define TWINE_TESTS_REC_PROTOCOL_H

#include <string.h>
#include <unistd.h>

#include "twtest.h"

#define REC_UNUSED __attribute__((unused))

struct rec_events {
    int made, lost, freed, read_lost, write_lost, fds;
    int lost_code;
    char data[256];
    size_t len;
    tw_transport *transport; /* the transport given at connection_made */
    tw_address peer_at_made; /* get_peer during connection_made */
    int peer_rc_at_made;
    tw_address peer_at_lost; /* get_peer during connection_lost */
    int peer_rc_at_lost;
    /* What to do from inside the events. */
    bool close_on_made;
    bool close_on_data;
    bool keep_ref; /* take a transport reference at made (the test drops it) */
};

typedef struct rec_protocol {
    tw_protocol base;
    struct rec_events *ev;
} rec_protocol;

static inline struct rec_events *rec_ev(tw_protocol *p)
{
    return ((rec_protocol *)p)->ev;
}

static inline void rec_made(tw_protocol *p)
{
    struct rec_events *ev = rec_ev(p);
    ev->made++;
    ev->transport = p->transport;
    ev->peer_rc_at_made = tw_transport_get_peer(p->transport, &ev->peer_at_made);
    if (ev->keep_ref)
        tw_transport_ref(p->transport);
    if (ev->close_on_made)
        tw_transport_lose_connection(p->transport);
}

static inline void rec_data(tw_protocol *p, const char *data, size_t len)
{
    struct rec_events *ev = rec_ev(p);
    cr_assert(ev->len + len <= sizeof ev->data);
    memcpy(ev->data + ev->len, data, len);
    ev->len += len;
    if (ev->close_on_data)
        tw_transport_lose_connection(p->transport);
}

static inline void rec_lost(tw_protocol *p, tw_failure *reason)
{
    struct rec_events *ev = rec_ev(p);
    ev->lost++;
    ev->lost_code = tw_failure_code(reason);
    cr_assert(p->transport != NULL);
    ev->peer_rc_at_lost = tw_transport_get_peer(p->transport, &ev->peer_at_lost);
}

static inline void rec_read_lost(tw_protocol *p)
{
    rec_ev(p)->read_lost++;
}

static inline void rec_write_lost(tw_protocol *p)
{
    rec_ev(p)->write_lost++;
}

static inline void rec_fd(tw_protocol *p, int fd)
{
    rec_ev(p)->fds++;
    close(fd);
}

static inline void rec_free(tw_protocol *p)
{
    rec_ev(p)->freed++;
}

static const tw_protocol_ops rec_ops REC_UNUSED = {
    .connection_made = rec_made,
    .data_received = rec_data,
    .connection_lost = rec_lost,
    .write_connection_lost = rec_write_lost,
    .fd_received = rec_fd,
    .free = rec_free,
};

/* The same, half-closeable (IHalfCloseableProtocol). */
static const tw_protocol_ops rec_half_ops REC_UNUSED = {
    .connection_made = rec_made,
    .data_received = rec_data,
    .connection_lost = rec_lost,
    .read_connection_lost = rec_read_lost,
    .write_connection_lost = rec_write_lost,
    .fd_received = rec_fd,
    .free = rec_free,
};

static inline tw_protocol *rec_build(tw_factory *f, const tw_address *addr)
{
    tw_protocol *p = tw_factory_build_default(f, addr);
    if (p)
        ((rec_protocol *)p)->ev = f->data;
    return p;
}

/* A factory counting starts, stops and client callbacks. */
struct rec_factory {
    tw_factory base;
    int starts, stops, started_connecting, failed, client_lost;
    bool refuse;
};

static inline tw_protocol *rec_factory_build(tw_factory *f, const tw_address *addr)
{
    if (((struct rec_factory *)f)->refuse)
        return NULL;
    return rec_build(f, addr);
}

static inline void rec_factory_start(tw_factory *f)
{
    ((struct rec_factory *)f)->starts++;
}

static inline void rec_factory_stop(tw_factory *f)
{
    ((struct rec_factory *)f)->stops++;
}

static inline void rec_factory_started(tw_factory *f, tw_connector *c)
{
    ((struct rec_factory *)f)->started_connecting++;
}

static inline void rec_factory_failed(tw_factory *f, tw_connector *c, tw_failure *reason)
{
    ((struct rec_factory *)f)->failed++;
}

static inline void rec_factory_client_lost(tw_factory *f, tw_connector *c, tw_failure *reason)
{
    ((struct rec_factory *)f)->client_lost++;
}

static const tw_factory_ops rec_factory_ops REC_UNUSED = {
    .build_protocol = rec_factory_build,
    .start_factory = rec_factory_start,
    .stop_factory = rec_factory_stop,
    .started_connecting = rec_factory_started,
    .client_connection_failed = rec_factory_failed,
    .client_connection_lost = rec_factory_client_lost,
};

static inline void rec_factory_init(struct rec_factory *f, struct rec_events *ev,
                                    const tw_protocol_ops *ops)
{
    memset(f, 0, sizeof *f);
    tw_factory_init(&f->base, &rec_factory_ops, ops, sizeof(rec_protocol), ev);
}

/* A fresh string transport; the test frees it. */
static inline tw_string_transport *rec_string_transport(void)
{
    tw_string_transport *st = NULL;
    cr_assert_eq(tw_string_transport_new(&st), 0);
    return st;
}

/* Builds through f for addr (NULL: 127.0.0.1:54321) and connects it to a new
 * string transport. */
static inline tw_string_transport *rec_connect(tw_factory *f, const char *ip, unsigned port)
{
    tw_address addr;
    cr_assert_eq(tw_address_from_ip(&addr, ip ? ip : "127.0.0.1", ip ? port : 54321), 0);
    tw_protocol *p = tw_factory_build_protocol(f, &addr);
    cr_assert(p, "build_protocol refused");
    tw_string_transport *st = rec_string_transport();
    st->peer = addr;
    cr_assert_eq(tw_string_transport_connect(st, p), 0);
    return st;
}

#endif
