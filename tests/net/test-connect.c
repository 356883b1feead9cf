/* Connectors: connect and echo over TCP v4/v6 and Unix (file, abstract),
 * the ClientFactory calls and their order, refusal, timeout, bind_to,
 * stop_connecting, reconnecting, freeing from inside callbacks, reactor
 * shutdown, interception, bad input, allocation failure. */
#include <math.h>

#include "net-test.h"

struct server {
    struct nt_factory f;
    tw_listening_port *port;
    tw_address host;
};

static void server_start(tw_reactor *r, struct server *s, const tw_address *a)
{
    nt_factory_init(&s->f, &nt_echo_ops);
    int rc = tw_listen_stream(r, a, NULL, &s->f.base, &s->port);
    cr_assert_eq(rc, 0, "listen: %s", tw_strerror(rc));
    tw_listening_port_get_host(s->port, &s->host);
}

static void server_stop(tw_reactor *r, struct server *s)
{
    cr_assert(nt_run_until(r, &s->f.n.freed, s->f.n.built, 5.0), "server connections end");
    nt_stop_port(s->port);
}

/* The ping client sends "ping", gets it echoed, closes. */
static void ping_roundtrip(tw_reactor *r, const tw_address *listen_at)
{
    struct server s;
    server_start(r, &s, listen_at);
    struct nt_factory f;
    nt_factory_init(&f, &nt_ping_ops);
    tw_connector *c = NULL;
    int rc = tw_connect_stream(r, &s.host, NULL, &f.base, &c);
    cr_assert_eq(rc, 0, "%s", tw_strerror(rc));
    cr_assert_eq(f.n.started_connecting, 1, "started_connecting runs before the return");
    cr_assert_eq(f.n.start, 1);
    cr_assert_eq(tw_connector_get_state(c), TW_CONNECTOR_CONNECTING);
    cr_assert_null(tw_connector_protocol(c));
    cr_assert_eq(tw_connector_connect(c), TW_EBUSY);
    const tw_address *dest = tw_connector_get_destination(c);
    cr_assert_eq(dest->len, s.host.len);
    cr_assert_eq(memcmp(&dest->u, &s.host.u, s.host.len), 0);

    cr_assert(nt_run_until(r, &f.n.made, 1, 5.0));
    cr_assert_eq(tw_connector_get_state(c), TW_CONNECTOR_CONNECTED);
    cr_assert_not_null(tw_connector_protocol(c));
    cr_assert(nt_run_until(r, &f.n.client_lost, 1, 5.0));
    cr_assert_eq(f.n.got_len, 4);
    cr_assert_eq(memcmp(f.n.got, "ping", 4), 0);
    cr_assert_eq(f.n.lost, 1);
    cr_assert_eq(f.n.client_lost_code, TW_ECONNDONE);
    cr_assert_eq(f.n.failed, 0);
    cr_assert_eq(f.n.stop, 1, "stopped when the attempt ended");
    cr_assert_eq(tw_connector_get_state(c), TW_CONNECTOR_DISCONNECTED);
    cr_assert_null(tw_connector_protocol(c));
    tw_connector_free(c);
    server_stop(r, &s);
}

TW_REACTOR_TEST(connect, tcp4_echo)
{
    tw_address a = nt_ip("127.0.0.1", 0);
    ping_roundtrip(r, &a);
}

TW_REACTOR_TEST(connect, tcp6_echo)
{
    if (!nt_can_bind_v6()) {
        twtest_end_reactor(r);
        cr_skip_test("::1 cannot be bound here");
    }
    tw_address a = nt_ip("::1", 0);
    ping_roundtrip(r, &a);
}

TW_REACTOR_TEST(connect, unix_file_echo)
{
    char path[108];
    tw_address a = nt_unix_path("cecho", path, sizeof path);
    ping_roundtrip(r, &a);
}

TW_REACTOR_TEST(connect, unix_abstract_echo)
{
    tw_address a = nt_unix_abstract("cecho");
    ping_roundtrip(r, &a);
}

/* A TCP address nobody listens on. */
static tw_address dead_tcp(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    tw_address a = nt_ip("127.0.0.1", 0);
    cr_assert_eq(bind(fd, &a.u.sa, a.len), 0);
    a.len = sizeof a.u;
    getsockname(fd, &a.u.sa, &a.len);
    close(fd);
    return a;
}

static void refused(tw_reactor *r, const tw_address *a)
{
    struct nt_factory f;
    nt_factory_init(&f, &nt_ping_ops);
    tw_connector *c = NULL;
    cr_assert_eq(tw_connect_stream(r, a, NULL, &f.base, &c), 0);
    cr_assert_eq(f.n.failed, 0, "never reported from inside tw_connect_stream");
    cr_assert_eq(tw_connector_get_state(c), TW_CONNECTOR_CONNECTING);
    cr_assert(nt_run_until(r, &f.n.failed, 1, 5.0));
    cr_assert_eq(f.n.failed_code, TW_ECONNREFUSED, "%s", tw_strerror(f.n.failed_code));
    cr_assert_eq(f.n.built, 0);
    cr_assert_eq(f.n.start, 1);
    cr_assert_eq(f.n.stop, 1);
    cr_assert_eq(tw_connector_get_state(c), TW_CONNECTOR_DISCONNECTED);
    tw_connector_free(c);
}

TW_REACTOR_TEST(connect, tcp_refused)
{
    tw_address a = dead_tcp();
    refused(r, &a);
}

TW_REACTOR_TEST(connect, unix_refused_at_once_reported_later)
{
    /* Bound, not listening: connect() fails at once with ECONNREFUSED. */
    char path[108];
    tw_address a = nt_unix_path("refused", path, sizeof path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_eq(bind(fd, &a.u.sa, a.len), 0);
    refused(r, &a);
    close(fd);
    unlink(path);
}

TW_REACTOR_TEST(connect, timeout)
{
    /* A listener that never accepts, its backlog (0) filled: further SYNs
     * are dropped, so the attempt hangs until the timeout. */
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    tw_address a = nt_ip("127.0.0.1", 0);
    cr_assert_eq(bind(lfd, &a.u.sa, a.len), 0);
    cr_assert_eq(listen(lfd, 0), 0);
    a.len = sizeof a.u;
    getsockname(lfd, &a.u.sa, &a.len);
    int fill[2];
    for (int i = 0; i < 2; i++) {
        fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        connect(fill[i], &a.u.sa, a.len);
    }
    usleep(50 * 1000);

    struct nt_factory f;
    nt_factory_init(&f, &nt_ping_ops);
    tw_connector *c = NULL;
    tw_connect_options o = {.timeout = 0.2};
    double t0 = tw_reactor_seconds(r);
    cr_assert_eq(tw_connect_stream(r, &a, &o, &f.base, &c), 0);
    cr_assert(nt_run_until(r, &f.n.failed, 1, 5.0));
    double took = tw_reactor_seconds(r) - t0;
    cr_assert_eq(f.n.failed_code, TW_ETIMEDOUT, "%s", tw_strerror(f.n.failed_code));
    cr_assert(took >= 0.19 && took < 2.0, "took %f s", took);
    cr_assert_eq(f.n.made, 0);
    tw_connector_free(c);
    for (int i = 0; i < 2; i++)
        close(fill[i]);
    close(lfd);
}

static int host_port;
static void record_host(struct nt_factory *f, tw_protocol *p)
{
    tw_address h;
    cr_assert_eq(tw_transport_get_host(p->transport, &h), 0);
    char buf[TW_ADDRESS_STRLEN];
    tw_address_format(&h, buf, sizeof buf);
    cr_assert(strncmp(buf, "127.0.0.2:", 10) == 0, "host %s", buf);
    host_port = (int)tw_address_port(&h);
}

TW_REACTOR_TEST(connect, bind_to_honoured)
{
    struct server s;
    tw_address any = nt_ip("127.0.0.1", 0);
    server_start(r, &s, &any);
    struct nt_factory f;
    nt_factory_init(&f, &nt_ping_ops);
    f.on_made = record_host;
    tw_address local = nt_ip("127.0.0.2", 0);
    tw_connect_options o = {.bind_to = &local};
    tw_connector *c = NULL;
    int rc = tw_connect_stream(r, &s.host, &o, &f.base, &c);
    cr_assert_eq(rc, 0, "%s", tw_strerror(rc));
    cr_assert(nt_run_until(r, &f.n.client_lost, 1, 5.0));
    cr_assert_eq(f.n.made, 1);
    cr_assert_neq(host_port, 0);
    tw_connector_free(c);
    server_stop(r, &s);

    /* A bind_to of another family, or an unbindable one. */
    tw_address v6 = nt_ip("::1", 0);
    o.bind_to = &v6;
    cr_assert_eq(tw_connect_stream(r, &s.host, &o, &f.base, &c), TW_EINVAL);
    tw_address foreign = nt_ip("192.0.2.1", 0);
    o.bind_to = &foreign;
    cr_assert_eq(tw_connect_stream(r, &s.host, &o, &f.base, &c), TW_EADDRNOTAVAIL);
    cr_assert_eq(f.n.started_connecting, 1, "no callback for an attempt that did not start");
}

TW_REACTOR_TEST(connect, stop_connecting)
{
    struct server s;
    tw_address any = nt_ip("127.0.0.1", 0);
    server_start(r, &s, &any);
    struct nt_factory f;
    nt_factory_init(&f, &nt_ping_ops);
    tw_connector *c = NULL;
    cr_assert_eq(tw_connect_stream(r, &s.host, NULL, &f.base, &c), 0);
    cr_assert_eq(tw_connector_stop_connecting(c), 0);
    cr_assert_eq(f.n.failed, 1);
    cr_assert_eq(f.n.failed_code, TW_ECANCELED);
    cr_assert_eq(f.n.stop, 1);
    cr_assert_eq(tw_connector_get_state(c), TW_CONNECTOR_DISCONNECTED);
    cr_assert_eq(tw_connector_stop_connecting(c), TW_ENOTCONN);
    nt_spin(r, 0.05);
    cr_assert_eq(f.n.made, 0);
    cr_assert_eq(f.n.failed, 1);

    /* disconnect while connecting is stop_connecting. */
    cr_assert_eq(tw_connector_connect(c), 0);
    tw_connector_disconnect(c);
    cr_assert_eq(f.n.failed, 2);
    cr_assert_eq(f.n.failed_code, TW_ECANCELED);
    tw_connector_free(c);
    server_stop(r, &s);
}

static void disconnect_when_made(struct nt_factory *f, tw_protocol *p)
{
    tw_connector_disconnect(f->user);
}

TW_REACTOR_TEST(connect, disconnect_connected)
{
    struct server s;
    tw_address any = nt_ip("127.0.0.1", 0);
    server_start(r, &s, &any);
    struct nt_factory f;
    nt_factory_init(&f, &nt_echo_ops);
    static const tw_factory_ops ops = {.client_connection_lost = nt_client_lost,
                                       .start_factory = nt_start,
                                       .stop_factory = nt_stop};
    f.base.ops = &ops;
    f.on_made = disconnect_when_made;
    tw_connector *c = NULL;
    cr_assert_eq(tw_connect_stream(r, &s.host, NULL, &f.base, &c), 0);
    f.user = c;
    cr_assert(nt_run_until(r, &f.n.client_lost, 1, 5.0));
    cr_assert_eq(f.n.made, 1);
    cr_assert_eq(f.n.client_lost_code, TW_ECONNDONE);
    cr_assert_eq(f.n.stop, 1);
    tw_connector_free(c);
    server_stop(r, &s);
}

static void reconnect_twice(struct nt_factory *f, tw_connector *c, tw_failure *reason)
{
    if (f->n.client_lost + f->n.failed < 3)
        cr_assert_eq(tw_connector_connect(c), 0);
}

TW_REACTOR_TEST(connect, reconnect_from_connection_lost)
{
    struct server s;
    tw_address any = nt_ip("127.0.0.1", 0);
    server_start(r, &s, &any);
    struct nt_factory f;
    nt_factory_init(&f, &nt_ping_ops);
    f.on_lost = reconnect_twice;
    tw_connector *c = NULL;
    cr_assert_eq(tw_connect_stream(r, &s.host, NULL, &f.base, &c), 0);
    cr_assert(nt_run_until(r, &f.n.client_lost, 3, 5.0));
    cr_assert_eq(f.n.started_connecting, 3);
    cr_assert_eq(f.n.made, 3);
    cr_assert_eq(f.n.start, 1, "the factory stays started across reconnects");
    cr_assert_eq(f.n.stop, 1);
    cr_assert_eq(tw_connector_get_state(c), TW_CONNECTOR_DISCONNECTED);
    tw_connector_free(c);
    server_stop(r, &s);
}

TW_REACTOR_TEST(connect, reconnect_from_connection_failed)
{
    tw_address a = dead_tcp();
    struct nt_factory f;
    nt_factory_init(&f, &nt_ping_ops);
    f.on_failed = reconnect_twice;
    tw_connector *c = NULL;
    cr_assert_eq(tw_connect_stream(r, &a, NULL, &f.base, &c), 0);
    cr_assert(nt_run_until(r, &f.n.failed, 3, 5.0));
    cr_assert_eq(f.n.started_connecting, 3);
    cr_assert_eq(f.n.start, 1);
    cr_assert_eq(f.n.stop, 1);
    tw_connector_free(c);
}

static void free_it(struct nt_factory *f, tw_connector *c)
{
    tw_connector_free(c);
}
static void free_it_reason(struct nt_factory *f, tw_connector *c, tw_failure *reason)
{
    tw_connector_free(c);
}
static void free_it_made(struct nt_factory *f, tw_protocol *p)
{
    tw_connector_free(f->user);
}

TW_REACTOR_TEST(connect, free_inside_started_connecting)
{
    struct server s;
    tw_address any = nt_ip("127.0.0.1", 0);
    server_start(r, &s, &any);
    struct nt_factory f;
    nt_factory_init(&f, &nt_ping_ops);
    f.on_started = free_it;
    tw_connector *c = (tw_connector *)&f;
    cr_assert_eq(tw_connect_stream(r, &s.host, NULL, &f.base, &c), 0);
    cr_assert_null(c, "a connector freed in started_connecting is not handed out");
    nt_spin(r, 0.05);
    cr_assert_eq(f.n.made + f.n.failed + f.n.client_lost, 0);
    cr_assert_eq(f.n.start, 1);
    cr_assert_eq(f.n.stop, 1);
    server_stop(r, &s);
}

TW_REACTOR_TEST(connect, free_inside_connection_failed)
{
    tw_address a = dead_tcp();
    struct nt_factory f;
    nt_factory_init(&f, &nt_ping_ops);
    f.on_failed = free_it_reason;
    tw_connector *c = NULL;
    cr_assert_eq(tw_connect_stream(r, &a, NULL, &f.base, &c), 0);
    cr_assert(nt_run_until(r, &f.n.failed, 1, 5.0));
    cr_assert_eq(f.n.stop, 1);
}

TW_REACTOR_TEST(connect, free_inside_connection_lost)
{
    struct server s;
    tw_address any = nt_ip("127.0.0.1", 0);
    server_start(r, &s, &any);
    struct nt_factory f;
    nt_factory_init(&f, &nt_ping_ops);
    f.on_lost = free_it_reason;
    tw_connector *c = NULL;
    cr_assert_eq(tw_connect_stream(r, &s.host, NULL, &f.base, &c), 0);
    cr_assert(nt_run_until(r, &f.n.client_lost, 1, 5.0));
    cr_assert_eq(f.n.stop, 1);
    server_stop(r, &s);
}

TW_REACTOR_TEST(connect, free_inside_connection_made_keeps_connection)
{
    struct server s;
    tw_address any = nt_ip("127.0.0.1", 0);
    server_start(r, &s, &any);
    struct nt_factory f;
    nt_factory_init(&f, &nt_ping_ops);
    f.on_made = free_it_made;
    tw_connector *c = NULL;
    cr_assert_eq(tw_connect_stream(r, &s.host, NULL, &f.base, &c), 0);
    f.user = c;
    cr_assert(nt_run_until(r, &f.n.freed, 1, 5.0));
    cr_assert_eq(f.n.got_len, 4, "the connection ran to its end");
    cr_assert_eq(f.n.lost, 1);
    cr_assert_eq(f.n.client_lost, 0, "no client_connection_lost after free");
    cr_assert_eq(f.n.stop, 1, "the factory is stopped when the connection ends");
    server_stop(r, &s);
}

TW_REACTOR_TEST(connect, free_while_connecting_is_silent)
{
    struct server s;
    tw_address any = nt_ip("127.0.0.1", 0);
    server_start(r, &s, &any);
    struct nt_factory f;
    nt_factory_init(&f, &nt_ping_ops);
    tw_connector *c = NULL;
    cr_assert_eq(tw_connect_stream(r, &s.host, NULL, &f.base, &c), 0);
    tw_connector_free(c);
    nt_spin(r, 0.05);
    cr_assert_eq(f.n.made + f.n.failed + f.n.client_lost, 0);
    cr_assert_eq(f.n.stop, 1);
    server_stop(r, &s);
}

TW_REACTOR_TEST(connect, build_protocol_null_fails_attempt)
{
    struct server s;
    tw_address any = nt_ip("127.0.0.1", 0);
    server_start(r, &s, &any);
    struct nt_factory f;
    nt_factory_init(&f, &nt_ping_ops);
    f.refuse = true;
    tw_connector *c = NULL;
    cr_assert_eq(tw_connect_stream(r, &s.host, NULL, &f.base, &c), 0);
    cr_assert(nt_run_until(r, &f.n.failed, 1, 5.0));
    cr_assert_eq(f.n.failed_code, TW_ECONNABORTED);
    cr_assert_eq(f.n.refused, 1);
    cr_assert_eq(f.n.stop, 1);
    tw_connector_free(c);
    server_stop(r, &s);
}

static int hook_calls;
static int made_at_hook;
static void connected_hook(tw_connector *c, tw_protocol *p, void *arg)
{
    struct nt_factory *f = arg;
    hook_calls++;
    made_at_hook = f->n.made;
    cr_assert_eq(tw_connector_protocol(c), p);
}

TW_REACTOR_TEST(connect, connected_hook_after_connection_made)
{
    struct server s;
    tw_address any = nt_ip("127.0.0.1", 0);
    server_start(r, &s, &any);
    struct nt_factory f;
    nt_factory_init(&f, &nt_ping_ops);
    tw_connector *c = NULL;
    cr_assert_eq(tw_connect_stream(r, &s.host, NULL, &f.base, &c), 0);
    c->connected_hook = connected_hook;
    c->connected_arg = &f;
    cr_assert(nt_run_until(r, &f.n.client_lost, 1, 5.0));
    cr_assert_eq(hook_calls, 1);
    cr_assert_eq(made_at_hook, 1);
    tw_connector_free(c);
    server_stop(r, &s);
}

static void stop_soon(void *arg)
{
    tw_reactor_stop(arg);
}

TW_REACTOR_TEST(connect, reactor_shutdown_closes_connections_and_attempts)
{
    struct server s;
    tw_address any = nt_ip("127.0.0.1", 0);
    server_start(r, &s, &any);
    struct nt_factory f;
    nt_factory_init(&f, &nt_echo_ops);
    static const tw_factory_ops ops = {.client_connection_lost = nt_client_lost,
                                       .client_connection_failed = nt_failed,
                                       .start_factory = nt_start,
                                       .stop_factory = nt_stop};
    f.base.ops = &ops;
    tw_connector *c = NULL, *c2 = NULL;
    cr_assert_eq(tw_connect_stream(r, &s.host, NULL, &f.base, &c), 0);
    cr_assert(nt_run_until(r, &f.n.made, 1, 5.0));
    /* A second attempt still connecting at shutdown. */
    tw_address dead = dead_tcp();
    cr_assert_eq(tw_connect_stream(r, &dead, NULL, &f.base, &c2), 0);

    cr_assert_eq(tw_call_later(tw_reactor_clock(r), 0, stop_soon, r, NULL), 0);
    cr_assert_eq(tw_reactor_run(r), 0);
    tw_reactor_state st;
    tw_reactor_get_state(r, &st);
    cr_assert_eq(st.handles, 0);
    cr_assert_eq(st.writers, 0);
    cr_assert_eq(f.n.client_lost, 1);
    cr_assert_eq(f.n.failed, 1);
    cr_assert(f.n.failed_code == TW_ECONNLOST || f.n.failed_code == TW_ECONNREFUSED, "%s",
              tw_strerror(f.n.failed_code));
    cr_assert_eq(s.f.n.lost, 1);
    cr_assert_eq(f.n.start, 1);
    cr_assert_eq(f.n.stop, 1);
    tw_connector_free(c);
    tw_connector_free(c2);
    nt_stop_port(s.port);
}

struct fake_connect {
    int calls;
    tw_factory *factory;
};

static int fake_connect(void *arg, tw_reactor *r, const tw_address *addr,
                        const tw_connect_options *opts, tw_factory *factory, tw_connector **out)
{
    struct fake_connect *fc = arg;
    fc->calls++;
    fc->factory = factory;
    return TW_ENETUNREACH;
}

TW_REACTOR_TEST(connect, intercepted_by_hooks)
{
    struct fake_connect fc = {0};
    struct tw__net_hooks hooks = {.connect = fake_connect, .arg = &fc};
    tw__reactor_set_net_hooks(r, &hooks);
    struct nt_factory f;
    nt_factory_init(&f, &nt_ping_ops);
    tw_address a = nt_ip("127.0.0.1", 1);
    tw_connector *c = NULL;
    cr_assert_eq(tw_connect_stream(r, &a, NULL, &f.base, &c), TW_ENETUNREACH);
    cr_assert_eq(fc.calls, 1);
    cr_assert_eq(fc.factory, &f.base);
    cr_assert_eq(f.n.started_connecting, 0);
    tw__reactor_set_net_hooks(r, NULL);
}

TW_REACTOR_TEST(connect, bad_input)
{
    struct nt_factory f;
    nt_factory_init(&f, &nt_ping_ops);
    tw_address a = nt_ip("127.0.0.1", 1), none = {0};
    tw_connector *c = NULL;
    cr_assert_eq(tw_connect_stream(r, NULL, NULL, &f.base, &c), TW_EINVAL);
    cr_assert_eq(tw_connect_stream(r, &none, NULL, &f.base, &c), TW_EINVAL);
    cr_assert_eq(tw_connect_stream(r, &a, NULL, NULL, &c), TW_EINVAL);
    cr_assert_eq(tw_connect_stream(r, &a, NULL, &f.base, NULL), TW_EINVAL);
    tw_connect_options neg = {.timeout = -1}, nan_ = {.timeout = NAN};
    cr_assert_eq(tw_connect_stream(r, &a, &neg, &f.base, &c), TW_EINVAL);
    cr_assert_eq(tw_connect_stream(r, &a, &nan_, &f.base, &c), TW_EINVAL);
    cr_assert_null(c);
    cr_assert_eq(f.n.started_connecting + f.n.start, 0);
    cr_assert_eq(tw_connector_connect(NULL), TW_EINVAL);
    cr_assert_eq(tw_connector_stop_connecting(NULL), TW_EINVAL);
    cr_assert_eq(tw_connector_get_state(NULL), TW_CONNECTOR_DISCONNECTED);
    cr_assert_null(tw_connector_get_destination(NULL));
    cr_assert_null(tw_connector_protocol(NULL));
    tw_connector_disconnect(NULL);
    tw_connector_free(NULL);
}

TW_REACTOR_TEST(connect, allocation_failure)
{
    struct server s;
    tw_address any = nt_ip("127.0.0.1", 0);
    server_start(r, &s, &any);
    struct nt_factory f;
    nt_factory_init(&f, &nt_ping_ops);
    int fds = nt_count_fds();
    tw_testing_fail_alloc_after(0);
    tw_testing_fail_alloc_off();
    long live = tw_testing_alloc_live();
    tw_connector *c = NULL;
    int rc = 0;
    for (long n = 0; n < 100; n++) {
        tw_testing_fail_alloc_after(n);
        rc = tw_connect_stream(r, &s.host, NULL, &f.base, &c);
        tw_testing_fail_alloc_off();
        if (rc == 0)
            break;
        cr_assert_eq(rc, TW_ENOMEM, "n=%ld: %s", n, tw_strerror(rc));
        cr_assert_eq(f.n.started_connecting, 0);
        cr_assert_eq(nt_count_fds(), fds, "n=%ld: descriptor leaked", n);
        cr_assert_eq(tw_testing_alloc_live(), live, "n=%ld: memory leaked", n);
    }
    cr_assert_eq(rc, 0);
    cr_assert(nt_run_until(r, &f.n.client_lost, 1, 5.0));
    tw_connector_free(c);
    /* Failed attempts whose handshake the kernel completed were accepted
     * too, and end when the server reads their close. */
    nt_spin(r, 0.05);
    cr_assert(nt_run_until(r, &s.f.n.freed, s.f.n.built, 5.0));
    cr_assert_eq(nt_count_fds(), fds, "both ends closed");
    server_stop(r, &s);
}

/* Allocations failing while the attempt completes in the reactor (the
 * protocol, the transport, the lost hook, failures): every attempt still
 * ends with exactly one report, the factory balanced, nothing leaked. */
TW_REACTOR_TEST(connect, allocation_failure_while_connecting)
{
    struct server s;
    tw_address any = nt_ip("127.0.0.1", 0);
    server_start(r, &s, &any);
    /* Warm up what the reactor and the transports allocate once and keep
     * (the read buffer, the timer heap, the watcher table). */
    tw_testing_fail_alloc_after(0);
    tw_testing_fail_alloc_off();
    struct nt_factory warm;
    nt_factory_init(&warm, &nt_ping_ops);
    tw_connector *wc = NULL;
    cr_assert_eq(tw_connect_stream(r, &s.host, NULL, &warm.base, &wc), 0);
    cr_assert(nt_run_until(r, &warm.n.client_lost, 1, 5.0));
    tw_connector_free(wc);
    cr_assert(nt_run_until(r, &s.f.n.freed, s.f.n.built, 5.0));
    int fds = nt_count_fds();
    long live = tw_testing_alloc_live();
    bool succeeded = false;
    for (long n = 0; n < 200 && !succeeded; n++) {
        struct nt_factory f;
        nt_factory_init(&f, &nt_ping_ops);
        tw_connector *c = NULL;
        cr_assert_eq(tw_connect_stream(r, &s.host, NULL, &f.base, &c), 0);
        tw_testing_fail_alloc_after(n);
        double end = tw_reactor_seconds(r) + 5.0;
        while (f.n.failed + f.n.client_lost == 0 && tw_reactor_seconds(r) < end)
            tw_reactor_iterate(r, 0.01);
        tw_testing_fail_alloc_off();
        cr_assert_eq(f.n.failed + f.n.client_lost, 1, "n=%ld: one report", n);
        succeeded = f.n.client_lost == 1 && f.n.got_len == 4;
        cr_assert_eq(f.n.start, 1);
        cr_assert_eq(f.n.stop, 1, "n=%ld", n);
        tw_connector_free(c);
        nt_spin(r, 0.02);
        cr_assert_eq(f.n.built, f.n.freed, "n=%ld: every protocol released", n);
        cr_assert(nt_run_until(r, &s.f.n.freed, s.f.n.built, 5.0));
        cr_assert_eq(nt_count_fds(), fds, "n=%ld: descriptor leaked", n);
        cr_assert_eq(tw_testing_alloc_live(), live, "n=%ld: memory leaked (%ld)", n,
                     tw_testing_alloc_live() - live);
    }
    cr_assert(succeeded);
    server_stop(r, &s);
}

/* build_protocol stops the connector and starts another attempt: the first
 * attempt is over (its socket closed, the factory told it was cancelled),
 * and the second one connects on its own, once. */
static tw_connector *restart_me;
static bool restarted;

static tw_protocol *build_restarting(tw_factory *base, const tw_address *addr)
{
    if (!restarted) {
        restarted = true;
        cr_assert_eq(tw_connector_stop_connecting(restart_me), 0);
        cr_assert_eq(tw_connector_connect(restart_me), 0);
    }
    return nt_build(base, addr);
}

TW_REACTOR_TEST(connect, reconnect_from_build_protocol_keeps_attempts_apart)
{
    struct nt_factory server, client;
    nt_factory_init(&server, &nt_echo_ops);
    static const tw_factory_ops restarting = {.build_protocol = build_restarting,
                                              .start_factory = nt_start,
                                              .stop_factory = nt_stop,
                                              .started_connecting = nt_started,
                                              .client_connection_failed = nt_failed,
                                              .client_connection_lost = nt_client_lost};
    nt_factory_init(&client, &restarting);
    tw_address la = nt_ip("127.0.0.1", 0);
    tw_listening_port *port;
    cr_assert_eq(tw_listen_stream(r, &la, NULL, &server.base, &port), 0);
    tw_address host;
    tw_listening_port_get_host(port, &host);
    restarted = false;
    int fds = nt_count_fds();
    cr_assert_eq(tw_connect_stream(r, &host, NULL, &client.base, &restart_me), 0);
    cr_assert(nt_run_until(r, &client.n.made, 1, 5));
    nt_spin(r, 0.1);
    cr_assert_eq(client.n.failed, 1);
    cr_assert_eq(client.n.failed_code, TW_ECANCELED);
    cr_assert_eq(client.n.made, 1, "one connection, from the second attempt");
    cr_assert_eq(client.n.built, 2);
    cr_assert_eq(client.n.freed, 1, "the protocol built for the first attempt was released");
    cr_assert_eq(tw_connector_get_state(restart_me), TW_CONNECTOR_CONNECTED);
    tw_reactor_state st;
    tw_reactor_get_state(r, &st);
    cr_assert_eq(st.writers, 0, "no attempt is left waiting for its connect");
    cr_assert_eq(st.handles, 3, "the port, and one connection on each side");
    tw_connector_disconnect(restart_me);
    cr_assert(nt_run_until(r, &client.n.client_lost, 1, 5));
    tw_connector_free(restart_me);
    nt_spin(r, 0.1);
    cr_assert_eq(nt_count_fds(), fds, "every socket of both attempts is closed");
    nt_stop_port(port);
    nt_spin(r, 0.1);
}
