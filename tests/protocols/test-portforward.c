/* The relay and ProxyFactory (portforward.h): bytes held while connecting,
 * relayed both ways, flow control both ways, half-close and close
 * propagation, connect failure, the client leaving while connecting,
 * allocation failure; on string transports with a memory reactor, then
 * end to end over loopback with large transfers and slow readers. */
#include <twine/portforward.h>

#include "relay-test.h"

/* ---- With a memory reactor: every step under the test's control */

struct mem {
    tw_reactor *mr;
    tw_portforward_factory *pf;
    tw_string_transport *in;  /* the client's connection to the proxy */
    tw_protocol *proto;       /* the proxy's protocol for it */
    tw_string_transport *out; /* the proxy's connection onwards, once made */
};

static void mem_setup(struct mem *m, size_t max_pending)
{
    memset(m, 0, sizeof *m);
    cr_assert_eq(tw_testing_memory_reactor_new(&m->mr), 0);
    tw_endpoint *ep = NULL;
    cr_assert_eq(tw_endpoint_client_from_string(m->mr, "tcp:127.0.0.1:7", &ep, NULL), 0);
    tw_relay_options opts = {.max_pending = max_pending};
    cr_assert_eq(tw_portforward_factory_new(ep, &opts, &m->pf), 0);
    cr_assert_eq(tw_string_transport_new(&m->in), 0);
    tw_address peer;
    tw_address_from_ip(&peer, "127.0.0.1", 40000);
    m->proto = tw_factory_build_protocol(tw_portforward_factory_base(m->pf), &peer);
    cr_assert_not_null(m->proto);
    cr_assert_eq(tw_string_transport_connect(m->in, m->proto), 0);
}

static tw_connector *mem_connector(struct mem *m)
{
    cr_assert_eq(tw_testing_memory_reactor_connects(m->mr), 1);
    const tw_testing_connect *rec = tw_testing_memory_reactor_connect(m->mr, 0);
    char buf[TW_ADDRESS_STRLEN];
    cr_assert_str_eq(tw_address_format(&rec->addr, buf, sizeof buf), "127.0.0.1:7");
    return rec->connector;
}

static void mem_connect(struct mem *m)
{
    cr_assert_eq(tw_testing_connector_succeed(mem_connector(m), &m->out), 0);
    cr_assert_not_null(m->out);
}

static void mem_teardown(struct mem *m)
{
    if (m->in->connected)
        tw_string_transport_lose(m->in, 0);
    if (m->out && m->out->connected)
        tw_string_transport_lose(m->out, 0);
    cr_assert_eq(tw_portforward_factory_stats(m->pf)->active, 0);
    tw_portforward_factory_free(m->pf);
    tw_string_transport_free(m->in);
    cr_assert_eq(tw_testing_memory_reactor_free(m->mr), 0);
}

static const char *value(tw_string_transport *st)
{
    return tw_string_transport_value(st, NULL);
}

TW_TEST(portforward, bytes_before_the_connection_are_held_then_relayed_both_ways)
{
    struct mem m;
    mem_setup(&m, 0);
    const tw_relay_stats *st = tw_portforward_factory_stats(m.pf);
    cr_assert(m.in->paused, "reading the client stops while connecting");
    cr_assert_eq(st->relays, 1);
    cr_assert_eq(st->active, 1);
    tw_string_transport_feed(m.in, "early ", 6);
    tw_string_transport_feed(m.in, "bird ", 5);
    mem_connect(&m);
    cr_assert_str_eq(value(m.out), "early bird ");
    cr_assert(!m.in->paused, "reading the client starts again once connected");
    cr_assert_not_null(m.in->producer, "the outbound connection is the client's producer");
    cr_assert_not_null(m.out->producer, "the client's connection is the outbound's producer");
    cr_assert(m.in->streaming && m.out->streaming);

    tw_string_transport_feed(m.in, "abc", 3);
    cr_assert_str_eq(value(m.out), "early bird abc");
    tw_string_transport_feed(m.out, "xyz", 3);
    tw_string_transport_feed(m.out, "!", 1);
    cr_assert_str_eq(value(m.in), "xyz!");
    cr_assert_eq(st->connected, 1);
    cr_assert_eq(st->bytes_in, 14);
    cr_assert_eq(st->bytes_out, 4);
    mem_teardown(&m);
}

TW_TEST(portforward, a_full_side_pauses_reading_the_other)
{
    struct mem m;
    mem_setup(&m, 0);
    mem_connect(&m);
    const tw_relay_stats *st = tw_portforward_factory_stats(m.pf);

    /* The outbound connection's buffer fills: the client is not read. */
    cr_assert_eq(tw_string_transport_set_buffer_size(m.out, TW_TRANSPORT_HIGH_WATER + 1), 0);
    cr_assert(m.in->paused);
    cr_assert(!m.out->paused);
    cr_assert_eq(st->pauses_in, 1);
    cr_assert_eq(tw_string_transport_set_buffer_size(m.out, TW_TRANSPORT_LOW_WATER), 0);
    cr_assert(!m.in->paused);

    /* And the other way. */
    cr_assert_eq(tw_string_transport_set_buffer_size(m.in, TW_TRANSPORT_HIGH_WATER + 1), 0);
    cr_assert(m.out->paused);
    cr_assert(!m.in->paused);
    cr_assert_eq(st->pauses_out, 1);
    cr_assert_eq(tw_string_transport_set_buffer_size(m.in, 0), 0);
    cr_assert(!m.out->paused);
    cr_assert_eq(st->pauses_in, 1);
    mem_teardown(&m);
}

/* ---- The relay under a protocol of the test's own, with every hook */

struct owner {
    tw_protocol base;
    tw_relay *relay;
    tw_endpoint *ep;
    size_t max_pending;
    int connected, failed, released, failed_code;
    bool queue_outbound; /* the outbound transport keeps what it is given */
};

static void owner_connected(tw_relay *relay, tw_transport *outbound, void *arg)
{
    struct owner *o = arg;
    o->connected++;
    cr_assert_eq(tw_relay_inbound(relay), &o->base);
    cr_assert_eq(tw_relay_outbound(relay), outbound);
    tw_string_transport *st = tw_string_transport_of(outbound);
    cr_assert_not_null(st);
    st->queue_writes = o->queue_outbound;
    tw_transport_write(o->base.transport, "granted;", 8);
}

static void owner_failed(tw_relay *relay, tw_failure *reason, void *arg)
{
    struct owner *o = arg;
    o->failed++;
    o->failed_code = tw_failure_code(reason);
    cr_assert_null(tw_relay_outbound(relay));
    tw_transport_write(o->base.transport, "refused;", 8);
}

static void owner_release(void *arg)
{
    ((struct owner *)arg)->released++;
}

static const tw_relay_hooks owner_hooks = {
    .connected = owner_connected,
    .connect_failed = owner_failed,
    .release = owner_release,
};

static void owner_made(tw_protocol *p)
{
    struct owner *o = (struct owner *)p;
    tw_relay_options opts = {.max_pending = o->max_pending, .name = "the test's peer"};
    cr_assert_eq(tw_relay_start(p, o->ep, &owner_hooks, o, &opts, &o->relay), 0);
}

static void owner_data(tw_protocol *p, const char *data, size_t len)
{
    tw_relay_data_received(((struct owner *)p)->relay, data, len);
}

static void owner_lost(tw_protocol *p, tw_failure *reason)
{
    tw_relay_connection_lost(((struct owner *)p)->relay);
}

static const tw_protocol_ops owner_ops = {
    .connection_made = owner_made,
    .data_received = owner_data,
    .connection_lost = owner_lost,
};

struct owned {
    tw_reactor *mr;
    struct owner o;
    tw_string_transport *in, *out;
};

static void owned_setup(struct owned *t, size_t max_pending, bool queue_outbound)
{
    memset(t, 0, sizeof *t);
    cr_assert_eq(tw_testing_memory_reactor_new(&t->mr), 0);
    cr_assert_eq(tw_endpoint_client_from_string(t->mr, "tcp:127.0.0.1:7", &t->o.ep, NULL), 0);
    tw_protocol_init(&t->o.base, &owner_ops);
    t->o.max_pending = max_pending;
    t->o.queue_outbound = queue_outbound;
    cr_assert_eq(tw_string_transport_new(&t->in), 0);
    cr_assert_eq(tw_string_transport_connect(t->in, &t->o.base), 0);
    tw_endpoint_free(t->o.ep); /* the attempt carries on without it */
    cr_assert(t->in->paused);
}

static void owned_teardown(struct owned *t)
{
    if (t->in->connected)
        tw_string_transport_lose(t->in, 0);
    if (t->out && t->out->connected)
        tw_string_transport_lose(t->out, 0);
    cr_assert_eq(t->o.released, 1);
    tw_string_transport_free(t->in);
    cr_assert_eq(tw_testing_memory_reactor_free(t->mr), 0);
}

TW_TEST(portforward, the_connected_hook_writes_first_and_a_full_buffer_keeps_the_client_paused)
{
    struct owned t;
    owned_setup(&t, 200000, true);
    static char block[50000];
    memset(block, 'h', sizeof block);
    tw_string_transport_feed(t.in, block, sizeof block);
    tw_string_transport_feed(t.in, block, sizeof block);
    const tw_testing_connect *rec = tw_testing_memory_reactor_connect(t.mr, 0);
    cr_assert_eq(tw_testing_connector_succeed(rec->connector, &t.out), 0);
    cr_assert_eq(t.o.connected, 1);
    cr_assert_str_eq(value(t.in), "granted;");
    cr_assert_eq(tw_transport_write_buffer_size(&t.out->base), 2 * sizeof block);
    cr_assert(t.in->paused, "100000 bytes queued: the client stays paused");
    cr_assert_eq(tw_string_transport_set_buffer_size(t.out, 0), 0);
    cr_assert(!t.in->paused, "drained: the client is read again");
    cr_assert_eq(t.o.released, 0);
    owned_teardown(&t);
    cr_assert_eq(t.o.failed, 0);
}

TW_TEST(portforward, the_connect_failed_hook_answers_before_the_close)
{
    struct owned t;
    owned_setup(&t, 0, false);
    tw_string_transport_feed(t.in, "dropped", 7);
    const tw_testing_connect *rec = tw_testing_memory_reactor_connect(t.mr, 0);
    cr_assert_eq(tw_testing_connector_fail(rec->connector, TW_ETIMEDOUT), 0);
    cr_assert_eq(t.o.failed, 1);
    cr_assert_eq(t.o.failed_code, TW_ETIMEDOUT);
    cr_assert_str_eq(value(t.in), "refused;");
    cr_assert_eq(t.in->lose_calls, 1);
    cr_assert_eq(t.o.released, 0, "the owner's connection is not over yet");
    tw_string_transport_lose(t.in, 0);
    cr_assert_eq(t.o.released, 1);
    owned_teardown(&t);
    cr_assert_eq(t.o.connected, 0);
}

TW_TEST(portforward, an_endpoint_failing_at_once_runs_the_hook_inside_start)
{
    tw_reactor *mr;
    cr_assert_eq(tw_testing_memory_reactor_new(&mr), 0);
    struct owner o = {0};
    /* A name that cannot be resolved without a thread pool would wait; a tls
     * endpoint with a missing trust file fails at once. */
    cr_assert_eq(tw_endpoint_client_from_string(
                     mr, "tls:localhost:7:trustRoots=/nonexistent/ca.pem", &o.ep, NULL),
                 0);
    tw_protocol_init(&o.base, &owner_ops);
    tw_string_transport *in;
    cr_assert_eq(tw_string_transport_new(&in), 0);
    cr_assert_eq(tw_string_transport_connect(in, &o.base), 0);
    tw_endpoint_free(o.ep);
    cr_assert_eq(o.failed, 1);
    cr_assert_eq(in->lose_calls, 1);
    cr_assert_str_eq(value(in), "refused;");
    tw_string_transport_lose(in, 0);
    cr_assert_eq(o.released, 1);
    tw_string_transport_free(in);
    cr_assert_eq(tw_testing_memory_reactor_free(mr), 0);
}

TW_TEST(portforward, too_many_bytes_while_connecting_close_the_client)
{
    struct mem m;
    mem_setup(&m, 8);
    tw_testing_log_capture_start();
    tw_string_transport_feed(m.in, "12345678", 8);
    cr_assert_eq(m.in->lose_calls, 0);
    tw_string_transport_feed(m.in, "9", 1);
    cr_assert_eq(m.in->lose_calls, 1);
    cr_assert_eq(tw_testing_log_count("more than 8 bytes arrived before the connection to "
                                      "tcp:127.0.0.1:7 was made"),
                 1, "%s", tw_testing_log_text());
    tw_testing_log_capture_stop();
    /* The close ends the attempt. */
    tw_string_transport_lose(m.in, 0);
    cr_assert_null(tw_testing_memory_reactor_connect(m.mr, 0)->connector);
    mem_teardown(&m);
}

TW_TEST(portforward, a_failed_connection_closes_the_client_with_a_log_line)
{
    struct mem m;
    mem_setup(&m, 0);
    tw_string_transport_feed(m.in, "lost", 4);
    tw_testing_log_capture_start();
    cr_assert_eq(tw_testing_connector_fail(mem_connector(&m), TW_ECONNREFUSED), 0);
    cr_assert_eq(m.in->lose_calls, 1);
    cr_assert_eq(m.in->abort_calls, 0);
    cr_assert_eq(tw_testing_log_count("cannot connect to tcp:127.0.0.1:7"), 1, "%s",
                 tw_testing_log_text());
    cr_assert_eq(tw_testing_log_count("ECONNREFUSED"), 1, "%s", tw_testing_log_text());
    tw_testing_log_capture_stop();
    size_t n;
    tw_string_transport_value(m.in, &n);
    cr_assert_eq(n, 0, "nothing is written to the client");
    const tw_relay_stats *st = tw_portforward_factory_stats(m.pf);
    cr_assert_eq(st->failed, 1);
    cr_assert_eq(st->connected, 0);
    cr_assert_eq(st->bytes_in, 0);
    /* Bytes that still arrive go nowhere. */
    tw_string_transport_feed(m.in, "more", 4);
    tw_string_transport_lose(m.in, 0);
    cr_assert_eq(st->active, 0);
    mem_teardown(&m);
}

TW_TEST(portforward, the_client_leaving_while_connecting_abandons_the_attempt)
{
    struct mem m;
    mem_setup(&m, 0);
    tw_string_transport_feed(m.in, "bye", 3);
    tw_testing_log_capture_start();
    tw_string_transport_lose(m.in, -ECONNRESET);
    cr_assert_null(tw_testing_memory_reactor_connect(m.mr, 0)->connector, "the connector is freed");
    const tw_relay_stats *st = tw_portforward_factory_stats(m.pf);
    cr_assert_eq(st->failed, 0, "an abandoned attempt is not a failure");
    cr_assert_eq(st->active, 0);
    cr_assert_eq(tw_testing_log_count("cannot connect"), 0);
    tw_testing_log_capture_stop();
    mem_teardown(&m);
}

/* End of file on each side, as the transports report it. */
static void peer_eof(tw_string_transport *st)
{
    tw_protocol *p = st->base.protocol;
    cr_assert_not_null(p->ops->read_connection_lost, "the relay's protocols half-close");
    p->ops->read_connection_lost(p);
}

TW_TEST(portforward, end_of_file_half_closes_the_other_side)
{
    struct mem m;
    mem_setup(&m, 0);
    mem_connect(&m);
    tw_string_transport_feed(m.in, "question", 8);
    peer_eof(m.in);
    cr_assert_eq(m.out->lose_write_calls, 1);
    cr_assert_eq(m.out->lose_calls, 0);
    cr_assert_eq(m.in->lose_calls + m.in->lose_write_calls, 0, "the answer may still come");
    tw_string_transport_feed(m.out, "answer", 6);
    cr_assert_str_eq(value(m.in), "answer");
    peer_eof(m.out);
    cr_assert_eq(m.in->lose_write_calls, 1);
    cr_assert_str_eq(value(m.out), "question");
    mem_teardown(&m);
}

TW_TEST(portforward, end_of_file_while_connecting_half_closes_after_the_held_bytes)
{
    struct mem m;
    mem_setup(&m, 0);
    tw_string_transport_feed(m.in, "all of it", 9);
    peer_eof(m.in);
    cr_assert_eq(m.in->lose_calls, 0);
    mem_connect(&m);
    cr_assert_str_eq(value(m.out), "all of it");
    cr_assert_eq(m.out->lose_write_calls, 1);
    mem_teardown(&m);
}

TW_TEST(portforward, the_outbound_side_ending_closes_the_client)
{
    struct mem m;
    mem_setup(&m, 0);
    mem_connect(&m);
    tw_string_transport_feed(m.out, "last words", 10);
    tw_string_transport_lose(m.out, -ECONNRESET);
    cr_assert_eq(m.in->lose_calls, 1, "lose_connection: what was written is flushed");
    cr_assert_eq(m.in->abort_calls, 0);
    cr_assert_null(m.in->producer, "the lost connection is no longer the client's producer");
    cr_assert_str_eq(value(m.in), "last words");
    /* The client's bytes now go nowhere, without harm. */
    tw_string_transport_feed(m.in, "late", 4);
    tw_string_transport_lose(m.in, 0);
    cr_assert_eq(tw_portforward_factory_stats(m.pf)->bytes_in, 0);
    mem_teardown(&m);
}

TW_TEST(portforward, the_client_ending_closes_the_outbound_side)
{
    struct mem m;
    mem_setup(&m, 0);
    mem_connect(&m);
    tw_string_transport_lose(m.in, 0);
    cr_assert_eq(m.out->lose_calls, 1);
    cr_assert_eq(m.out->abort_calls, 0);
    cr_assert_null(m.out->producer);
    tw_string_transport_feed(m.out, "late", 4);
    cr_assert_eq(tw_portforward_factory_stats(m.pf)->bytes_out, 0);
    tw_string_transport_lose(m.out, 0);
    mem_teardown(&m);
}

TW_TEST(portforward, the_factory_freed_first_lives_until_its_connections_end)
{
    struct mem m;
    mem_setup(&m, 0);
    mem_connect(&m);
    tw_portforward_factory *pf = m.pf;
    tw_portforward_factory_free(pf); /* the owner lets go: connections keep it */
    tw_string_transport_feed(m.in, "still", 5);
    cr_assert_str_eq(value(m.out), "still");
    tw_string_transport_lose(m.in, 0);
    tw_string_transport_lose(m.out, 0); /* the last holder: freed (ASan checks) */
    tw_string_transport_free(m.in);
    cr_assert_eq(tw_testing_memory_reactor_free(m.mr), 0);
}

TW_TEST(portforward, relay_start_refuses_bad_arguments)
{
    tw_reactor *mr;
    cr_assert_eq(tw_testing_memory_reactor_new(&mr), 0);
    tw_endpoint *ep = NULL;
    cr_assert_eq(tw_endpoint_client_from_string(mr, "tcp:127.0.0.1:7", &ep, NULL), 0);
    tw_protocol p;
    tw_protocol_init(&p, NULL);
    tw_relay *relay = NULL;
    cr_assert_eq(tw_relay_start(NULL, ep, NULL, NULL, NULL, &relay), TW_EINVAL);
    cr_assert_eq(tw_relay_start(&p, ep, NULL, NULL, NULL, &relay), TW_EINVAL, "no connection");
    cr_assert_null(relay);
    cr_assert_eq(tw_portforward_factory_new(NULL, NULL, NULL), TW_EINVAL);
    tw_portforward_factory *pf = NULL;
    cr_assert_eq(tw_portforward_factory_new(ep, NULL, NULL), TW_EINVAL);
    cr_assert_eq(tw_portforward_factory_new(NULL, NULL, &pf), TW_EINVAL);
    cr_assert_null(tw_portforward_factory_base(NULL));
    tw_portforward_factory_free(NULL);
    tw_relay_data_received(NULL, "x", 1);
    tw_relay_read_connection_lost(NULL);
    tw_relay_connection_lost(NULL);
    cr_assert_null(tw_relay_inbound(NULL));
    cr_assert_null(tw_relay_outbound(NULL));
    tw_endpoint_free(ep);
    cr_assert_eq(tw_testing_memory_reactor_free(mr), 0);
}

TW_TEST(portforward, allocation_failure_refuses_cleanly)
{
    /* The factory. */
    for (long n = 0;; n++) {
        tw_reactor *mr;
        cr_assert_eq(tw_testing_memory_reactor_new(&mr), 0);
        tw_endpoint *ep = NULL;
        cr_assert_eq(tw_endpoint_client_from_string(mr, "tcp:127.0.0.1:7", &ep, NULL), 0);
        tw_portforward_factory *pf = NULL;
        tw_testing_fail_alloc_after(n);
        int rc = tw_portforward_factory_new(ep, NULL, &pf);
        tw_testing_fail_alloc_off();
        if (rc < 0) {
            cr_assert_eq(rc, TW_ENOMEM);
            tw_endpoint_free(ep);
        } else {
            tw_portforward_factory_free(pf);
        }
        cr_assert_eq(tw_testing_memory_reactor_free(mr), 0);
        if (rc == 0)
            break;
    }
    /* A connection: refused, or closed with a log line, or under way. */
    tw_testing_log_capture_start();
    for (long n = 0;; n++) {
        struct mem m;
        memset(&m, 0, sizeof m);
        cr_assert_eq(tw_testing_memory_reactor_new(&m.mr), 0);
        tw_endpoint *ep = NULL;
        cr_assert_eq(tw_endpoint_client_from_string(m.mr, "tcp:127.0.0.1:7", &ep, NULL), 0);
        cr_assert_eq(tw_portforward_factory_new(ep, NULL, &m.pf), 0);
        cr_assert_eq(tw_string_transport_new(&m.in), 0);
        tw_testing_fail_alloc_after(n);
        m.proto = tw_factory_build_protocol(tw_portforward_factory_base(m.pf), NULL);
        bool started = false;
        if (m.proto) {
            cr_assert_eq(tw_string_transport_connect(m.in, m.proto), 0);
            started = tw_testing_memory_reactor_connects(m.mr) == 1 && m.in->lose_calls == 0;
            if (!started)
                cr_assert_eq(m.in->lose_calls, 1, "a relay that cannot start closes");
        }
        tw_testing_fail_alloc_off();
        if (started) {
            mem_connect(&m);
            tw_string_transport_feed(m.in, "ok", 2);
            cr_assert_str_eq(value(m.out), "ok");
        }
        mem_teardown(&m);
        if (started)
            break;
    }
    tw_testing_log_capture_stop();
}

/* ---- End to end over loopback */

struct e2e {
    tw_portforward_factory *pf;
    tw_listening_port *proxy_port, *server_port;
    tw_factory server_f, client_f;
    struct rt_peer server, client;
    unsigned proxy;
};

static void e2e_start(tw_reactor *r, struct e2e *e, bool dead_server)
{
    rt_factory_init(&e->server_f, &e->server);
    rt_factory_init(&e->client_f, &e->client);
    unsigned server;
    if (dead_server)
        server = rt_dead_port(r);
    else
        server = rt_listen(r, &e->server_f, &e->server_port);
    cr_assert_eq(tw_portforward_factory_new(rt_client_endpoint(r, server), NULL, &e->pf), 0);
    e->proxy = rt_listen(r, tw_portforward_factory_base(e->pf), &e->proxy_port);
}

static void e2e_end(tw_reactor *r, struct e2e *e)
{
    rt_stop(e->proxy_port);
    if (e->server_port)
        rt_stop(e->server_port);
    const tw_relay_stats *st = tw_portforward_factory_stats(e->pf);
    RT_WAIT(r, st->active == 0, 10);
    tw_portforward_factory_free(e->pf);
}

#define BIG (24u << 20)

/* The upload: the client sends faster than the server reads; the proxy
 * stops reading the client rather than buffering. */
TW_REACTOR_TEST(portforward_e2e, upload_to_a_slow_reader_stays_bounded, .timeout = 120)
{
    struct e2e e = {0};
    e.server.pause_first = 0.5;
    e.client.send_total = BIG;
    e.client.close_after_send = true;
    e2e_start(r, &e, false);
    rt_connect(r, e.proxy, &e.client_f);
    RT_WAIT(r, e.server.lost == 1, 60);
    cr_assert_eq(e.server.received, BIG);
    cr_assert(!e.server.pattern_bad, "every byte arrives, in order");
    cr_assert_eq(e.server.lost_code, TW_ECONNDONE);
    RT_WAIT(r, e.client.lost == 1, 10);
    const tw_relay_stats *st = tw_portforward_factory_stats(e.pf);
    cr_assert_geq(st->pauses_in, 1, "the slow reader paused the client");
    cr_assert_leq(st->max_buffered, 3 * TW_TRANSPORT_HIGH_WATER, "buffered %zu", st->max_buffered);
    cr_assert_eq(st->bytes_in, BIG);
    e2e_end(r, &e);
}

TW_REACTOR_TEST(portforward_e2e, download_to_a_slow_reader_stays_bounded, .timeout = 120)
{
    struct e2e e = {0};
    e.server.send_total = BIG;
    e.server.close_after_send = true;
    e.client.pause_first = 0.5;
    e2e_start(r, &e, false);
    rt_connect(r, e.proxy, &e.client_f);
    RT_WAIT(r, e.client.lost == 1, 60);
    cr_assert_eq(e.client.received, BIG);
    cr_assert(!e.client.pattern_bad);
    cr_assert_eq(e.client.lost_code, TW_ECONNDONE);
    const tw_relay_stats *st = tw_portforward_factory_stats(e.pf);
    cr_assert_geq(st->pauses_out, 1, "the slow reader paused the server");
    cr_assert_leq(st->max_buffered, 3 * TW_TRANSPORT_HIGH_WATER, "buffered %zu", st->max_buffered);
    cr_assert_eq(st->bytes_out, BIG);
    e2e_end(r, &e);
}

/* Both ways at once: an echo server behind the proxy, the client sending 8
 * MiB and reading it all back, then half-closing. */
TW_REACTOR_TEST(portforward_e2e, echo_both_ways_with_half_close, .timeout = 120)
{
    struct e2e e = {0};
    e.server.echo = true;
    e.server.half_close = true;
    e.server.on_eof = "";
    e.client.send_total = 8u << 20;
    e.client.shut_after_send = true;
    e.client.half_close = true;
    e2e_start(r, &e, false);
    rt_connect(r, e.proxy, &e.client_f);
    RT_WAIT(r, e.client.lost == 1, 60);
    cr_assert_eq(e.client.received, 8u << 20);
    cr_assert(!e.client.pattern_bad);
    cr_assert_eq(e.client.eofs, 1, "the server's close reached the client as end of file");
    cr_assert_eq(e.client.write_lost, 1);
    cr_assert_eq(e.client.lost_code, TW_ECONNDONE);
    RT_WAIT(r, e.server.lost == 1, 10);
    cr_assert_eq(e.server.eofs, 1, "the client's half-close reached the server");
    cr_assert_eq(e.server.received, 8u << 20);
    e2e_end(r, &e);
}

/* The client shuts its sending side and still gets the answer. */
TW_REACTOR_TEST(portforward_e2e, a_half_closed_client_gets_its_answer)
{
    struct e2e e = {0};
    e.server.half_close = true;
    e.server.on_eof = "the answer";
    e.client.send_total = 1000;
    e.client.shut_after_send = true;
    e.client.half_close = true;
    e2e_start(r, &e, false);
    rt_connect(r, e.proxy, &e.client_f);
    RT_WAIT(r, e.client.lost == 1, 10);
    cr_assert_eq(e.server.received, 1000);
    cr_assert_eq(e.server.eofs, 1);
    cr_assert_str_eq(e.client.head, "the answer");
    cr_assert_eq(e.client.lost_code, TW_ECONNDONE);
    e2e_end(r, &e);
}

TW_REACTOR_TEST(portforward_e2e, the_client_closing_closes_the_server)
{
    struct e2e e = {0};
    e.server.on_made = "hello";
    e.client.close_on_data = true;
    e2e_start(r, &e, false);
    rt_connect(r, e.proxy, &e.client_f);
    RT_WAIT(r, e.server.lost == 1, 10);
    cr_assert_str_eq(e.client.head, "hello");
    cr_assert_eq(e.client.lost, 1);
    e2e_end(r, &e);
}

TW_REACTOR_TEST(portforward_e2e, nothing_listening_closes_the_client_and_says_why)
{
    struct e2e e = {0};
    tw_testing_log_capture_start();
    e2e_start(r, &e, true);
    rt_connect(r, e.proxy, &e.client_f);
    RT_WAIT(r, e.client.lost == 1, 10);
    cr_assert_eq(e.client.received, 0);
    cr_assert_eq(tw_testing_log_count("cannot connect to tcp:127.0.0.1:"), 1, "%s",
                 tw_testing_log_text());
    cr_assert_eq(tw_testing_log_count("connection refused"), 1, "%s", tw_testing_log_text());
    tw_testing_log_capture_stop();
    cr_assert_eq(tw_portforward_factory_stats(e.pf)->failed, 1);
    e2e_end(r, &e);
}
