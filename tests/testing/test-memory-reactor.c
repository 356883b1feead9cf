/* The memory reactor (proto_helpers.MemoryReactor): listens and connects
 * recorded, fake ports and connectors driven by the test. */
#include "twtest.h"

#include "net/net-internal.h"

#include <string.h>

/* A client factory that records its callbacks, optionally reconnecting. */
typedef struct rec_factory {
    tw_factory base;
    int starts, stops, started_connecting, failed, lost, built;
    int last_code;
    tw_connector *last_connector;
    bool reconnect;      /* tw_connector_connect from failed/lost */
    bool free_on_report; /* tw_connector_free from failed/lost */
    bool refuse;         /* build_protocol returns NULL */
    char log[128];
} rec_factory;

static void logc(rec_factory *f, char c)
{
    size_t n = strlen(f->log);
    cr_assert_lt(n + 1, sizeof f->log);
    f->log[n] = c;
}

static void f_start(tw_factory *f)
{
    ((rec_factory *)f)->starts++;
    logc((rec_factory *)f, 'S');
}

static void f_stop(tw_factory *f)
{
    ((rec_factory *)f)->stops++;
    logc((rec_factory *)f, 's');
}

static void f_started(tw_factory *f, tw_connector *c)
{
    rec_factory *rf = (rec_factory *)f;
    rf->started_connecting++;
    rf->last_connector = c;
    logc(rf, 'c');
    cr_assert_eq(tw_connector_get_state(c), TW_CONNECTOR_CONNECTING);
}

static void report(rec_factory *rf, tw_connector *c)
{
    cr_assert_eq(tw_connector_get_state(c), TW_CONNECTOR_DISCONNECTED);
    if (rf->reconnect)
        cr_assert_eq(tw_connector_connect(c), 0);
    if (rf->free_on_report)
        tw_connector_free(c);
}

static void f_failed(tw_factory *f, tw_connector *c, tw_failure *reason)
{
    rec_factory *rf = (rec_factory *)f;
    rf->failed++;
    rf->last_code = tw_failure_code(reason);
    logc(rf, 'F');
    report(rf, c);
}

static void f_lost(tw_factory *f, tw_connector *c, tw_failure *reason)
{
    rec_factory *rf = (rec_factory *)f;
    rf->lost++;
    rf->last_code = tw_failure_code(reason);
    logc(rf, 'L');
    report(rf, c);
}

typedef struct client_proto {
    tw_protocol base;
    int made, data, lost;
} client_proto;

static void cp_made(tw_protocol *p)
{
    client_proto *cp = (client_proto *)p;
    cp->made++;
    logc((rec_factory *)p->factory, 'm');
    tw_transport_write(p->transport, "hello", 5);
}

static void cp_lost(tw_protocol *p, tw_failure *reason)
{
    ((client_proto *)p)->lost++;
    logc((rec_factory *)p->factory, 'l');
}

static const tw_protocol_ops cp_ops = {.connection_made = cp_made, .connection_lost = cp_lost};

static tw_protocol *f_build(tw_factory *f, const tw_address *addr)
{
    rec_factory *rf = (rec_factory *)f;
    rf->built++;
    logc(rf, 'b');
    if (rf->refuse)
        return NULL;
    return tw_factory_build_default(f, addr);
}

static const tw_factory_ops rf_ops = {
    .build_protocol = f_build,
    .start_factory = f_start,
    .stop_factory = f_stop,
    .started_connecting = f_started,
    .client_connection_failed = f_failed,
    .client_connection_lost = f_lost,
};

static void rf_init(rec_factory *rf)
{
    memset(rf, 0, sizeof *rf);
    tw_factory_init(&rf->base, &rf_ops, &cp_ops, sizeof(client_proto), NULL);
}

static tw_reactor *mem_reactor(void)
{
    tw_reactor *r;
    cr_assert_eq(tw_testing_memory_reactor_new(&r), 0);
    return r;
}

TW_TEST(memory_reactor, listen_recorded_and_port_stopped)
{
    tw_reactor *r = mem_reactor();
    rec_factory rf;
    rf_init(&rf);
    tw_address addr;
    tw_address_from_ip(&addr, "0.0.0.0", 8080);
    tw_listen_options opts = {.backlog = 7};
    tw_listening_port *port;
    cr_assert_eq(tw_listen_stream(r, &addr, &opts, &rf.base, &port), 0);
    cr_assert_eq(rf.starts, 1);
    cr_assert_eq(tw_testing_memory_reactor_listens(r), 1);
    cr_assert_eq(tw_testing_memory_reactor_connects(r), 0);
    const tw_testing_listen *l = tw_testing_memory_reactor_listen(r, 0);
    cr_assert_not_null(l);
    cr_assert_eq(tw_address_port(&l->addr), 8080);
    cr_assert_eq(l->opts.backlog, 7);
    cr_assert_eq(l->factory, &rf.base);
    cr_assert_eq(l->port, port);
    cr_assert_not(l->stopped);
    cr_assert_null(tw_testing_memory_reactor_listen(r, 1));

    tw_address host;
    char buf[TW_ADDRESS_STRLEN];
    cr_assert_eq(tw_listening_port_get_host(port, &host), 0);
    cr_assert_str_eq(tw_address_format(&host, buf, sizeof buf), "0.0.0.0:8080");

    tw_listening_port *second;
    tw_address unix_addr;
    tw_address_from_unix(&unix_addr, "/tmp/x.sock", strlen("/tmp/x.sock"), false);
    cr_assert_eq(tw_listen_stream(r, &unix_addr, NULL, &rf.base, &second), 0);
    cr_assert_eq(tw_testing_memory_reactor_listens(r), 2);
    cr_assert_eq(tw_testing_memory_reactor_listen(r, 1)->opts.backlog, 0);
    cr_assert_eq(rf.starts, 1, "doStart is counted: start_factory runs once");

    tw_deferred *d = tw_listening_port_stop(port);
    cr_assert_not_null(d);
    tw_result res = twtest_wait(r, d);
    cr_assert_not(tw_result_is_failure(res));
    tw_result_release(&res);
    tw_deferred_unref(d);
    cr_assert(l->stopped);
    cr_assert_null(l->port);
    cr_assert_eq(rf.stops, 0, "the second port still uses the factory");
    /* The second port is left to the memory reactor's free. */
    cr_assert_eq(tw_testing_memory_reactor_free(r), 0);
    cr_assert_eq(rf.stops, 1);
}

TW_TEST(memory_reactor, connect_then_fail)
{
    tw_reactor *r = mem_reactor();
    rec_factory rf;
    rf_init(&rf);
    tw_address addr, bind;
    tw_address_from_ip(&addr, "10.1.2.3", 25);
    tw_address_from_ip(&bind, "127.0.0.2", 0);
    tw_connect_options opts = {.timeout = 5, .bind_to = &bind};
    tw_connector *c;
    cr_assert_eq(tw_connect_stream(r, &addr, &opts, &rf.base, &c), 0);
    cr_assert_str_eq(rf.log, "Sc", "started, then started_connecting, before it returned");
    cr_assert_eq(rf.last_connector, c);
    cr_assert_eq(tw_connector_get_state(c), TW_CONNECTOR_CONNECTING);
    cr_assert_eq(tw_address_port(tw_connector_get_destination(c)), 25);
    cr_assert_null(tw_connector_protocol(c));

    const tw_testing_connect *rec = tw_testing_memory_reactor_connect(r, 0);
    cr_assert_not_null(rec);
    cr_assert_eq(rec->connector, c);
    cr_assert_eq(rec->factory, &rf.base);
    cr_assert_eq(rec->opts.timeout, 5);
    cr_assert_eq(rec->opts.bind_to, &rec->bind_to);
    char buf[TW_ADDRESS_STRLEN];
    cr_assert_str_eq(tw_address_format(&rec->bind_to, buf, sizeof buf), "127.0.0.2:0");
    cr_assert_eq(rec->attempts, 1);

    cr_assert_eq(tw_testing_connector_lose(c, 0), TW_ENOTCONN);
    cr_assert_eq(tw_connector_connect(c), TW_EBUSY);
    cr_assert_eq(tw_testing_connector_fail(c, -ENETUNREACH), 0);
    cr_assert_str_eq(rf.log, "ScFs");
    cr_assert_eq(rf.last_code, -ENETUNREACH);
    cr_assert_eq(tw_connector_get_state(c), TW_CONNECTOR_DISCONNECTED);
    cr_assert_eq(rec->failures, 1);
    cr_assert_eq(tw_testing_connector_fail(c, 0), TW_ENOTCONN);

    /* Again by hand: default failure code. */
    cr_assert_eq(tw_connector_connect(c), 0);
    cr_assert_eq(rec->attempts, 2);
    cr_assert_eq(tw_testing_connector_fail(c, 0), 0);
    cr_assert_eq(rf.last_code, TW_ECONNREFUSED);
    cr_assert_str_eq(rf.log, "ScFsScFs");
    tw_connector_free(c);
    cr_assert_null(rec->connector);
    cr_assert_eq(rf.stops, rf.starts);
    cr_assert_eq(tw_testing_memory_reactor_free(r), 0);
}

TW_TEST(memory_reactor, reconnecting_factory_keeps_the_factory_started)
{
    tw_reactor *r = mem_reactor();
    rec_factory rf;
    rf_init(&rf);
    rf.reconnect = true;
    tw_address addr;
    tw_address_from_ip(&addr, "10.1.2.3", 25);
    tw_connector *c;
    cr_assert_eq(tw_connect_stream(r, &addr, NULL, &rf.base, &c), 0);
    cr_assert_eq(tw_testing_connector_fail(c, 0), 0);
    cr_assert_str_eq(rf.log, "ScFc", "reconnected from the errback, factory not stopped");
    cr_assert_eq(tw_connector_get_state(c), TW_CONNECTOR_CONNECTING);

    tw_string_transport *st;
    cr_assert_eq(tw_testing_connector_succeed(c, &st), 0);
    cr_assert_str_eq(rf.log, "ScFcbm");
    cr_assert_eq(tw_connector_get_state(c), TW_CONNECTOR_CONNECTED);
    client_proto *cp = (client_proto *)tw_connector_protocol(c);
    cr_assert_not_null(cp);
    cr_assert_eq(cp->made, 1);
    cr_assert_eq(cp->base.transport, &st->base);
    cr_assert_str_eq(tw_string_transport_value(st, NULL), "hello");
    const tw_testing_connect *rec = tw_testing_memory_reactor_connect(r, 0);
    cr_assert_eq(rec->transport, st);
    cr_assert_eq(rec->connections, 1);
    tw_address peer;
    cr_assert_eq(tw_transport_get_peer(&st->base, &peer), 0);
    cr_assert_eq(tw_address_port(&peer), 25, "the peer is the destination");

    /* disconnect only asks the transport to close; the test finishes it. */
    tw_connector_disconnect(c);
    cr_assert_eq(rec->disconnect_calls, 1);
    cr_assert_eq(st->lose_calls, 1);
    cr_assert_eq(tw_connector_get_state(c), TW_CONNECTOR_CONNECTED);
    cr_assert_eq(tw_testing_connector_lose(c, -ECONNRESET), 0);
    cr_assert_str_eq(rf.log, "ScFcbmlLc", "lost, reported, reconnecting");
    cr_assert_eq(rf.last_code, -ECONNRESET);
    cr_assert_eq(rec->losses, 1);
    cr_assert_eq(rf.starts, 1);
    cr_assert_eq(rf.stops, 0);
    cr_assert_eq(rec->transport, st, "kept after the loss");
    cr_assert_not(st->connected);

    /* stop_connecting ends it: the factory is told, not reconnecting now. */
    rf.reconnect = false;
    cr_assert_eq(tw_connector_stop_connecting(c), 0);
    cr_assert_eq(rf.last_code, TW_ECANCELED);
    cr_assert_str_eq(rf.log, "ScFcbmlLcFs");
    cr_assert_eq(tw_connector_stop_connecting(c), TW_ENOTCONN);
    cr_assert_eq(rec->stop_connecting_calls, 2);
    tw_connector_free(c);
    cr_assert_eq(tw_testing_memory_reactor_free(r), 0);
}

static int hooks_run;
static void connected_hook(tw_connector *c, tw_protocol *p, void *arg)
{
    hooks_run++;
    cr_assert_eq(tw_connector_protocol(c), p);
    cr_assert_eq(((client_proto *)p)->made, 1, "after connection_made");
    if (arg)
        tw_connector_free(c);
}

TW_TEST(memory_reactor, connected_hook_may_free_the_connector)
{
    tw_reactor *r = mem_reactor();
    rec_factory rf;
    rf_init(&rf);
    tw_address addr;
    tw_address_from_ip(&addr, "::1", 80);
    tw_connector *c;
    cr_assert_eq(tw_connect_stream(r, &addr, NULL, &rf.base, &c), 0);
    c->connected_hook = connected_hook;
    c->connected_arg = &rf;
    hooks_run = 0;
    tw_string_transport *st;
    cr_assert_eq(tw_testing_connector_succeed(c, &st), 0);
    cr_assert_eq(hooks_run, 1);
    const tw_testing_connect *rec = tw_testing_memory_reactor_connect(r, 0);
    cr_assert_null(rec->connector);
    cr_assert_eq(rf.stops, 0, "the live connection keeps the factory started");
    /* The connection runs to its end without client_connection_lost. */
    cr_assert_eq(tw_string_transport_lose(st, 0), 0);
    cr_assert_eq(rf.lost, 0);
    cr_assert_eq(rec->losses, 1);
    cr_assert_eq(rf.stops, 1);
    cr_assert_str_eq(rf.log, "Scbmls");
    cr_assert_eq(tw_testing_memory_reactor_free(r), 0);
}

TW_TEST(memory_reactor, factory_refusing_fails_the_attempt)
{
    tw_reactor *r = mem_reactor();
    rec_factory rf;
    rf_init(&rf);
    rf.refuse = true;
    tw_address addr;
    tw_address_from_ip(&addr, "127.0.0.1", 1);
    tw_connector *c;
    cr_assert_eq(tw_connect_stream(r, &addr, NULL, &rf.base, &c), 0);
    cr_assert_eq(tw_testing_connector_succeed(c, NULL), TW_ECONNABORTED);
    cr_assert_eq(rf.last_code, TW_ECONNABORTED);
    cr_assert_str_eq(rf.log, "ScbFs");
    cr_assert_null(tw_testing_memory_reactor_connect(r, 0)->transport);
    cr_assert_eq(tw_testing_connector_succeed(c, NULL), TW_ENOTCONN);
    tw_connector_free(c);
    cr_assert_eq(tw_testing_memory_reactor_free(r), 0);
}

TW_TEST(memory_reactor, free_on_report_and_leftovers)
{
    tw_reactor *r = mem_reactor();
    rec_factory rf;
    rf_init(&rf);
    rf.free_on_report = true;
    tw_address addr;
    tw_address_from_ip(&addr, "127.0.0.1", 1);
    tw_connector *c;
    cr_assert_eq(tw_connect_stream(r, &addr, NULL, &rf.base, &c), 0);
    cr_assert_eq(tw_testing_connector_fail(c, 0), 0);
    cr_assert_null(tw_testing_memory_reactor_connect(r, 0)->connector);
    cr_assert_eq(rf.stops, 1);

    /* Left for the free: one connecting, one connected. */
    rf.free_on_report = false;
    tw_connector *c2, *c3;
    cr_assert_eq(tw_connect_stream(r, &addr, NULL, &rf.base, &c2), 0);
    cr_assert_eq(tw_connect_stream(r, &addr, NULL, &rf.base, &c3), 0);
    tw_string_transport *st;
    cr_assert_eq(tw_testing_connector_succeed(c3, &st), 0);
    cr_assert_eq(tw_testing_memory_reactor_connects(r), 3);
    cr_assert_eq(tw_testing_memory_reactor_free(r), 0);
    cr_assert_eq(rf.lost, 1, "the connection still up was lost");
    cr_assert_eq(rf.starts, rf.stops);
}

static void bump(void *arg)
{
    (*(int *)arg)++;
}

TW_TEST(memory_reactor, timers_work)
{
    tw_reactor *r = mem_reactor();
    int fired = 0;
    cr_assert_eq(tw_call_later(tw_reactor_clock(r), 0.001, bump, &fired, NULL), 0);
    for (int i = 0; i < 1000 && !fired; i++)
        tw_reactor_iterate(r, 0.01);
    cr_assert_eq(fired, 1);
    char why[200];
    cr_assert_eq(tw_testing_check_clean(r, why, sizeof why), 0, "%s", why);
    cr_assert_eq(tw_testing_memory_reactor_free(r), 0);
}

TW_TEST(memory_reactor, not_a_memory_reactor)
{
    tw_reactor *r;
    cr_assert_eq(tw_reactor_new(&r, NULL), 0);
    cr_assert_eq(tw_testing_memory_reactor_listens(r), 0);
    cr_assert_null(tw_testing_memory_reactor_connect(r, 0));
    cr_assert_eq(tw_testing_memory_reactor_free(r), 0, "frees a plain reactor too");
    cr_assert_eq(tw_testing_memory_reactor_free(NULL), 0);
    cr_assert_eq(tw_testing_connector_fail(NULL, 0), TW_EINVAL);
    cr_assert_eq(tw_testing_connector_succeed(NULL, NULL), TW_EINVAL);
    cr_assert_eq(tw_testing_connector_lose(NULL, 0), TW_EINVAL);
}

TW_TEST(memory_reactor, allocation_failure)
{
    tw_reactor *r = NULL;
    for (long n = 0;; n++) {
        tw_testing_fail_alloc_after(n);
        int rc = tw_testing_memory_reactor_new(&r);
        tw_testing_fail_alloc_off();
        if (rc == 0)
            break;
        cr_assert_eq(rc, TW_ENOMEM, "%s", tw_strerror(rc));
        cr_assert_lt(n, 100);
    }
    rec_factory rf;
    rf_init(&rf);
    tw_address addr;
    tw_address_from_ip(&addr, "127.0.0.1", 1);
    tw_connector *c = NULL;
    for (long n = 0;; n++) {
        tw_testing_fail_alloc_after(n);
        int rc = tw_connect_stream(r, &addr, NULL, &rf.base, &c);
        tw_testing_fail_alloc_off();
        if (rc == 0)
            break;
        cr_assert_eq(rc, TW_ENOMEM);
        cr_assert_eq(tw_testing_memory_reactor_connects(r), 0);
        cr_assert_eq(rf.started_connecting, 0, "no callback on error");
        cr_assert_lt(n, 100);
    }
    /* No transport: nothing happens, still connecting. */
    tw_testing_fail_alloc_after(0);
    cr_assert_eq(tw_testing_connector_succeed(c, NULL), TW_ENOMEM);
    tw_testing_fail_alloc_off();
    cr_assert_eq(tw_connector_get_state(c), TW_CONNECTOR_CONNECTING);
    cr_assert_eq(rf.built, 0);
    /* No protocol: the default builder refuses, the attempt fails. */
    tw_testing_fail_alloc_after(1);
    cr_assert_eq(tw_testing_connector_succeed(c, NULL), TW_ECONNABORTED);
    tw_testing_fail_alloc_off();
    cr_assert_eq(rf.built, 1);
    cr_assert_eq(rf.failed, 1);
    cr_assert_eq(tw_connector_get_state(c), TW_CONNECTOR_DISCONNECTED);
    cr_assert_eq(tw_connector_connect(c), 0);
    cr_assert_eq(tw_testing_connector_succeed(c, NULL), 0);
    tw_listening_port *port = NULL;
    for (long n = 0;; n++) {
        tw_testing_fail_alloc_after(n);
        int rc = tw_listen_stream(r, &addr, NULL, &rf.base, &port);
        tw_testing_fail_alloc_off();
        if (rc == 0)
            break;
        cr_assert_eq(rc, TW_ENOMEM);
        cr_assert_eq(tw_testing_memory_reactor_listens(r), 0);
        cr_assert_lt(n, 100);
    }
    tw_connector_free(c);
    cr_assert_eq(tw_testing_memory_reactor_free(r), 0);
    cr_assert_eq(rf.starts, rf.stops);
}
