/* Endpoints over real sockets: listen and connect from description strings,
 * the hostname endpoint's resolution and staggered attempts, cancellation,
 * timeouts, and the errors a wrong description or a failed connection give. */
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <twine/endpoint.h>
#include <twine/net.h>

#include "net/net-internal.h"
#include "twtest.h"

/* ---- A server that echoes, and a client that records what it hears. */

struct echo {
    tw_protocol base;
};

static void echo_data(tw_protocol *p, const char *data, size_t len)
{
    tw_transport_write(p->transport, data, len);
}

static const tw_protocol_ops echo_ops = {.data_received = echo_data};

struct client {
    tw_protocol base;
    char heard[256];
    size_t len;
    int lost_code; /* 0 until connection_lost */
    int *freed;    /* counts free calls */
};

static void client_data(tw_protocol *p, const char *data, size_t len)
{
    struct client *c = (struct client *)p;
    if (c->len + len < sizeof c->heard) {
        memcpy(c->heard + c->len, data, len);
        c->len += len;
    }
}

static void client_lost(tw_protocol *p, tw_failure *reason)
{
    ((struct client *)p)->lost_code = tw_failure_code(reason);
}

static void client_free(tw_protocol *p)
{
    struct client *c = (struct client *)p;
    if (c->freed)
        (*c->freed)++;
}

static const tw_protocol_ops client_ops = {
    .data_received = client_data, .connection_lost = client_lost, .free = client_free};

static bool heard(const struct client *c, const char *text)
{
    return c->len == strlen(text) && memcmp(c->heard, text, c->len) == 0;
}

static void spin_until_heard(tw_reactor *r, struct client *c, const char *text)
{
    double end = tw_reactor_seconds(r) + 10;
    while (!heard(c, text) && tw_reactor_seconds(r) < end)
        tw_reactor_iterate(r, 0.01);
    cr_assert(heard(c, text), "heard '%.*s', wanted '%s'", (int)c->len, c->heard, text);
}

static tw_listening_port *listen_on(tw_reactor *r, const char *description, tw_factory *f)
{
    tw_endpoint *ep;
    tw_failure *failure = NULL;
    cr_assert_eq(tw_endpoint_server_from_string(r, description, &ep, &failure), 0, "%s",
                 failure ? tw_failure_message(failure) : "");
    tw_deferred *d = tw_endpoint_listen(ep, f);
    tw_result res = twtest_wait(r, d);
    tw_deferred_unref(d);
    tw_endpoint_free(ep);
    cr_assert_null(res.failure, "%s", res.failure ? tw_failure_message(res.failure) : "");
    return tw_result_take(&res);
}

static unsigned port_of(tw_listening_port *port)
{
    tw_address a;
    cr_assert_eq(tw_listening_port_get_host(port, &a), 0);
    return tw_address_port(&a);
}

/* Connects `description`; returns the result (protocol or failure). */
static tw_result connect_to(tw_reactor *r, const char *description, tw_factory *f)
{
    tw_endpoint *ep;
    tw_failure *failure = NULL;
    cr_assert_eq(tw_endpoint_client_from_string(r, description, &ep, &failure), 0, "%s",
                 failure ? tw_failure_message(failure) : "");
    tw_deferred *d = tw_endpoint_connect(ep, f);
    tw_result res = twtest_wait(r, d);
    tw_deferred_unref(d);
    tw_endpoint_free(ep);
    return res;
}

static void stop_port(tw_listening_port *port)
{
    tw_deferred_unref(tw_listening_port_stop(port));
}

static void spin(tw_reactor *r)
{
    for (int i = 0; i < 20; i++)
        tw_reactor_iterate(r, 0.01);
}

/* Drops the client's connection and the server's port, and lets the server
 * side notice, so the reactor is clean. */
static void hang_up(tw_reactor *r, struct client *c, tw_listening_port *port)
{
    tw_transport_abort_connection(c->base.transport);
    stop_port(port);
    spin(r);
}

/* A listening socket whose accept queue is full: further connects hang in
 * SYN_SENT, which is how an unreachable host looks, without a network. */
struct blackhole {
    int fd, filler[4];
    unsigned port;
};

static void blackhole_open(struct blackhole *b)
{
    b->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(b->fd, (struct sockaddr *)&sin, sizeof sin), 0);
    cr_assert_eq(listen(b->fd, 0), 0);
    socklen_t len = sizeof sin;
    getsockname(b->fd, (struct sockaddr *)&sin, &len);
    b->port = ntohs(sin.sin_port);
    for (int i = 0; i < 4; i++) {
        b->filler[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        connect(b->filler[i], (struct sockaddr *)&sin, sizeof sin);
    }
    usleep(20000);
}

static void blackhole_close(struct blackhole *b)
{
    for (int i = 0; i < 4; i++)
        close(b->filler[i]);
    close(b->fd);
}

/* ---- Tests */

TW_REACTOR_TEST(endpoints, tcp_listen_and_connect_round_trip)
{
    tw_factory server, client;
    tw_factory_init(&server, NULL, &echo_ops, sizeof(struct echo), NULL);
    tw_factory_init(&client, NULL, &client_ops, sizeof(struct client), NULL);
    tw_listening_port *port = listen_on(r, "tcp:0:interface=127.0.0.1", &server);
    char desc[64];
    snprintf(desc, sizeof desc, "tcp:127.0.0.1:%u", port_of(port));

    tw_result res = connect_to(r, desc, &client);
    cr_assert_null(res.failure);
    struct client *c = res.value;
    cr_assert_not_null(c);
    cr_assert_eq(c->base.factory, &client, "the protocol's factory is the caller's");
    tw_transport_write(c->base.transport, "ping", 4);
    spin_until_heard(r, c, "ping");

    int freed = 0;
    c->freed = &freed;
    tw_transport_lose_connection(c->base.transport);
    double end = tw_reactor_seconds(r) + 5;
    while (freed == 0 && tw_reactor_seconds(r) < end)
        tw_reactor_iterate(r, 0.01);
    cr_assert_eq(freed, 1);
    stop_port(port);
    spin(r); /* the server side notices the close */
}

TW_REACTOR_TEST(endpoints, host_name_is_resolved_off_the_reactor_thread)
{
    tw_factory server, client;
    tw_factory_init(&server, NULL, &echo_ops, sizeof(struct echo), NULL);
    tw_factory_init(&client, NULL, &client_ops, sizeof(struct client), NULL);
    tw_listening_port *port = listen_on(r, "tcp:0:interface=127.0.0.1", &server);
    char desc[64];
    snprintf(desc, sizeof desc, "tcp:localhost:%u", port_of(port));
    tw_result res = connect_to(r, desc, &client);
    cr_assert_null(res.failure, "%s", res.failure ? tw_failure_message(res.failure) : "");
    struct client *c = res.value;
    tw_transport_write(c->base.transport, "by name", 7);
    spin_until_heard(r, c, "by name");
    hang_up(r, c, port);
}

TW_REACTOR_TEST(endpoints, refused_connection_names_the_address)
{
    tw_factory client;
    tw_factory_init(&client, NULL, &client_ops, sizeof(struct client), NULL);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(s, (struct sockaddr *)&sin, sizeof sin);
    socklen_t len = sizeof sin;
    getsockname(s, (struct sockaddr *)&sin, &len);
    close(s); /* a port nobody listens on */
    char desc[64], where[64];
    snprintf(desc, sizeof desc, "tcp:127.0.0.1:%u", ntohs(sin.sin_port));
    snprintf(where, sizeof where, "127.0.0.1:%u", ntohs(sin.sin_port));

    tw_result res = connect_to(r, desc, &client);
    cr_assert_not_null(res.failure);
    cr_assert_eq(tw_failure_code(res.failure), TW_ECONNREFUSED);
    cr_assert(strstr(tw_failure_message(res.failure), where), "%s",
              tw_failure_message(res.failure));
    tw_result_release(&res);
}

TW_REACTOR_TEST(endpoints, unknown_host_fails_with_dns_lookup)
{
    tw_factory client;
    tw_factory_init(&client, NULL, &client_ops, sizeof(struct client), NULL);
    tw_result res = connect_to(r, "tcp:no-such-host.invalid:80", &client);
    cr_assert_not_null(res.failure);
    cr_assert_eq(tw_failure_code(res.failure), TW_EDNSLOOKUP);
    cr_assert(strstr(tw_failure_message(res.failure), "no-such-host.invalid"));
    tw_result_release(&res);
}

TW_REACTOR_TEST(endpoints, connect_times_out)
{
    struct blackhole b;
    blackhole_open(&b);
    tw_factory client;
    tw_factory_init(&client, NULL, &client_ops, sizeof(struct client), NULL);
    char desc[64];
    snprintf(desc, sizeof desc, "tcp:127.0.0.1:%u:timeout=0.3", b.port);
    double start = tw_reactor_seconds(r);
    tw_result res = connect_to(r, desc, &client);
    double took = tw_reactor_seconds(r) - start;
    blackhole_close(&b);
    cr_assert_not_null(res.failure);
    cr_assert_eq(tw_failure_code(res.failure), TW_ETIMEDOUT, "%s", tw_failure_message(res.failure));
    cr_assert(took >= 0.29 && took < 3, "took %g s", took);
    tw_result_release(&res);
}

TW_REACTOR_TEST(endpoints, cancel_abandons_the_attempt)
{
    struct blackhole b;
    blackhole_open(&b);
    tw_factory client;
    tw_factory_init(&client, NULL, &client_ops, sizeof(struct client), NULL);
    char desc[64];
    snprintf(desc, sizeof desc, "tcp:127.0.0.1:%u", b.port);
    tw_endpoint *ep;
    cr_assert_eq(tw_endpoint_client_from_string(r, desc, &ep, NULL), 0);
    tw_deferred *d = tw_endpoint_connect(ep, &client);
    tw_reactor_iterate(r, 0.05);
    cr_assert_not(tw_deferred_called(d));
    tw_deferred_cancel(d);
    tw_result res = twtest_wait(r, d);
    cr_assert_eq(tw_failure_code(res.failure), TW_ECANCELED);
    tw_result_release(&res);
    tw_deferred_unref(d);
    tw_endpoint_free(ep);
    blackhole_close(&b);
}

TW_REACTOR_TEST(endpoints, unix_listen_and_connect)
{
    char path[64];
    snprintf(path, sizeof path, "/tmp/twine-ep-%d.sock", (int)getpid());
    char sdesc[96], cdesc[96];
    snprintf(sdesc, sizeof sdesc, "unix:%s:mode=600", path);
    snprintf(cdesc, sizeof cdesc, "unix:path=%s", path);
    tw_factory server, client;
    tw_factory_init(&server, NULL, &echo_ops, sizeof(struct echo), NULL);
    tw_factory_init(&client, NULL, &client_ops, sizeof(struct client), NULL);
    tw_listening_port *port = listen_on(r, sdesc, &server);
    cr_assert_eq(access(path, F_OK), 0);
    tw_result res = connect_to(r, cdesc, &client);
    cr_assert_null(res.failure, "%s", res.failure ? tw_failure_message(res.failure) : "");
    struct client *c = res.value;
    tw_transport_write(c->base.transport, "unix", 4);
    spin_until_heard(r, c, "unix");
    tw_transport_abort_connection(c->base.transport);
    stop_port(port);
    cr_assert_neq(access(path, F_OK), 0, "the socket file is removed when the port stops");
    spin(r);
}

TW_REACTOR_TEST(endpoints, connect_protocol_hands_over_a_ready_protocol)
{
    tw_factory server;
    tw_factory_init(&server, NULL, &echo_ops, sizeof(struct echo), NULL);
    tw_listening_port *port = listen_on(r, "tcp:0:interface=127.0.0.1", &server);
    char desc[64];
    snprintf(desc, sizeof desc, "tcp:127.0.0.1:%u", port_of(port));

    int freed = 0;
    struct client mine = {.freed = &freed};
    tw_protocol_init(&mine.base, &client_ops);
    tw_endpoint *ep;
    cr_assert_eq(tw_endpoint_client_from_string(r, desc, &ep, NULL), 0);
    tw_deferred *d = tw_endpoint_connect_protocol(ep, &mine.base);
    tw_result res = twtest_wait(r, d);
    tw_deferred_unref(d);
    cr_assert_eq(res.value, &mine);
    tw_transport_write(mine.base.transport, "ready", 5);
    spin_until_heard(r, &mine, "ready");
    tw_transport_lose_connection(mine.base.transport);
    double end = tw_reactor_seconds(r) + 5;
    while (freed == 0 && tw_reactor_seconds(r) < end)
        tw_reactor_iterate(r, 0.01);
    cr_assert_eq(freed, 1, "the protocol's free op ran once the connection ended");
    cr_assert_eq(mine.lost_code, TW_ECONNDONE);

    /* A ready protocol whose connection fails is freed too. */
    stop_port(port);
    freed = 0;
    struct client orphan = {.freed = &freed};
    tw_protocol_init(&orphan.base, &client_ops);
    d = tw_endpoint_connect_protocol(ep, &orphan.base);
    res = twtest_wait(r, d);
    tw_deferred_unref(d);
    cr_assert_eq(tw_failure_code(res.failure), TW_ECONNREFUSED);
    tw_result_release(&res);
    cr_assert_eq(freed, 1);
    tw_endpoint_free(ep);
    spin(r);
}

static tw_protocol *refuse(tw_factory *f, const tw_address *addr)
{
    (void)f, (void)addr;
    return NULL;
}

TW_REACTOR_TEST(endpoints, factory_refusing_fails_the_connect)
{
    tw_factory server, client;
    tw_factory_init(&server, NULL, &echo_ops, sizeof(struct echo), NULL);
    static const tw_factory_ops refusing = {.build_protocol = refuse};
    tw_factory_init(&client, &refusing, NULL, 0, NULL);
    tw_listening_port *port = listen_on(r, "tcp:0:interface=127.0.0.1", &server);
    char desc[64];
    snprintf(desc, sizeof desc, "tcp:127.0.0.1:%u", port_of(port));
    tw_result res = connect_to(r, desc, &client);
    cr_assert_eq(tw_failure_code(res.failure), TW_ECONNABORTED, "%s",
                 res.failure ? tw_failure_message(res.failure) : "no failure");
    tw_result_release(&res);
    stop_port(port);
    spin(r);
}

TW_REACTOR_TEST(endpoints, listen_errors_name_the_address)
{
    tw_factory server;
    tw_factory_init(&server, NULL, &echo_ops, sizeof(struct echo), NULL);
    tw_listening_port *port = listen_on(r, "tcp:0:interface=127.0.0.1", &server);
    char desc[64], where[64];
    snprintf(desc, sizeof desc, "tcp:%u:interface=127.0.0.1", port_of(port));
    snprintf(where, sizeof where, "127.0.0.1:%u", port_of(port));
    tw_endpoint *ep;
    cr_assert_eq(tw_endpoint_server_from_string(r, desc, &ep, NULL), 0);
    tw_deferred *d = tw_endpoint_listen(ep, &server);
    tw_result res = twtest_wait(r, d);
    tw_deferred_unref(d);
    cr_assert_eq(tw_failure_code(res.failure), TW_EADDRINUSE);
    cr_assert(strstr(tw_failure_message(res.failure), where), "%s",
              tw_failure_message(res.failure));
    tw_result_release(&res);
    tw_endpoint_free(ep);
    stop_port(port);
}

TW_REACTOR_TEST(endpoints, a_port_left_in_the_result_stops_with_it)
{
    tw_factory server;
    tw_factory_init(&server, NULL, &echo_ops, sizeof(struct echo), NULL);
    tw_endpoint *ep;
    cr_assert_eq(tw_endpoint_server_from_string(r, "tcp:0:interface=127.0.0.1", &ep, NULL), 0);
    tw_deferred *d = tw_endpoint_listen(ep, &server);
    cr_assert(tw_deferred_called(d));
    tw_deferred_unref(d); /* the result's release stops listening: the clean check proves it */
    tw_endpoint_free(ep);
}

TW_REACTOR_TEST(endpoints, systemd_without_sockets_is_a_clear_error)
{
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    tw_factory server;
    tw_factory_init(&server, NULL, &echo_ops, sizeof(struct echo), NULL);
    tw_endpoint *ep;
    cr_assert_eq(tw_endpoint_server_from_string(r, "systemd:domain=INET:index=0", &ep, NULL), 0);
    tw_deferred *d = tw_endpoint_listen(ep, &server);
    tw_result res = twtest_wait(r, d);
    tw_deferred_unref(d);
    cr_assert_eq(tw_failure_code(res.failure), TW_EINVAL);
    cr_assert(strstr(tw_failure_message(res.failure), "LISTEN_FDS"));
    tw_result_release(&res);
    tw_endpoint_free(ep);
}

TW_REACTOR_TEST(endpoints, wrong_descriptions_name_the_offending_part)
{
    tw_endpoint *ep = (tw_endpoint *)1;
    tw_failure *f = NULL;
    cr_assert_eq(tw_endpoint_server_from_string(r, "tpc:80", &ep, &f), TW_EINVAL);
    cr_assert_null(ep);
    cr_assert_str_eq(tw_failure_message(f), "unknown endpoint type 'tpc'");
    tw_failure_unref(f);
    cr_assert_eq(tw_endpoint_client_from_string(r, "tcp:example.com:70000", &ep, &f), TW_EINVAL);
    cr_assert(strstr(tw_failure_message(f), "port 70000 out of range"));
    tw_failure_unref(f);
}

/* ---- Staggered attempts, with a resolver that gives several addresses. */

static unsigned fake_ports[2];
static const char *fake_ips[2];

static int fake_getaddrinfo(const char *host, const char *service, const struct addrinfo *hints,
                            struct addrinfo **res)
{
    (void)service;
    if (strcmp(host, "multi.test") != 0)
        return EAI_NONAME;
    struct addrinfo *head = NULL, **tail = &head;
    for (int i = 0; i < 2; i++) {
        char port[8];
        snprintf(port, sizeof port, "%u", fake_ports[i]);
        struct addrinfo h = *hints, *one;
        h.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
        if (getaddrinfo(fake_ips[i], port, &h, &one) != 0)
            return EAI_FAIL;
        *tail = one;
        tail = &one->ai_next;
    }
    *res = head;
    return 0;
}

TW_REACTOR_TEST(endpoints, attempts_are_staggered_and_the_first_connection_wins)
{
    /* The name has two addresses: the first never answers (a full accept
     * queue), the second is an echo server. The second attempt starts
     * 0.3 s after the first, wins, and the first is abandoned. The fake
     * resolver gives each address its own port, which a real one cannot. */
    struct blackhole b;
    blackhole_open(&b);
    tw_factory server, client;
    tw_factory_init(&server, NULL, &echo_ops, sizeof(struct echo), NULL);
    tw_factory_init(&client, NULL, &client_ops, sizeof(struct client), NULL);
    tw_listening_port *port = listen_on(r, "tcp:0:interface=127.0.0.1", &server);
    fake_ips[0] = fake_ips[1] = "127.0.0.1";
    fake_ports[0] = b.port;
    fake_ports[1] = port_of(port);
    tw__net_resolver.getaddrinfo = fake_getaddrinfo;

    double start = tw_reactor_seconds(r);
    tw_result res = connect_to(r, "tcp:multi.test:1", &client);
    double took = tw_reactor_seconds(r) - start;
    cr_assert_null(res.failure, "%s", res.failure ? tw_failure_message(res.failure) : "");
    cr_assert(took >= 0.29 && took < 2, "the second attempt started after %g s, not 0.3", took);
    struct client *c = res.value;
    tw_address peer;
    tw_transport_get_peer(c->base.transport, &peer);
    cr_assert_eq(tw_address_port(&peer), port_of(port), "the second address won");
    tw_transport_abort_connection(c->base.transport);
    stop_port(port);
    blackhole_close(&b);
    tw__net_resolver.getaddrinfo = getaddrinfo;
    spin(r);
}

TW_REACTOR_TEST(endpoints, a_failed_attempt_starts_the_next_at_once)
{
    tw_factory server, client;
    tw_factory_init(&server, NULL, &echo_ops, sizeof(struct echo), NULL);
    tw_factory_init(&client, NULL, &client_ops, sizeof(struct client), NULL);
    tw_listening_port *port = listen_on(r, "tcp:0:interface=127.0.0.1", &server);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(s, (struct sockaddr *)&sin, sizeof sin);
    socklen_t len = sizeof sin;
    getsockname(s, (struct sockaddr *)&sin, &len);
    close(s);
    fake_ips[0] = fake_ips[1] = "127.0.0.1";
    fake_ports[0] = ntohs(sin.sin_port); /* refused at once */
    fake_ports[1] = port_of(port);
    tw__net_resolver.getaddrinfo = fake_getaddrinfo;

    double start = tw_reactor_seconds(r);
    tw_result res = connect_to(r, "tcp:multi.test:1", &client);
    double took = tw_reactor_seconds(r) - start;
    cr_assert_null(res.failure, "%s", res.failure ? tw_failure_message(res.failure) : "");
    cr_assert_lt(took, 0.25, "waited %g s for the stagger after a refusal", took);
    struct client *c = res.value;
    tw_transport_abort_connection(c->base.transport);
    stop_port(port);
    tw__net_resolver.getaddrinfo = getaddrinfo;
    spin(r);
}

TW_REACTOR_TEST(endpoints, unix_address_longer_than_sockaddr_un_is_refused)
{
    /* tw_address's union is longer than a sockaddr_un: a hand-made length
     * that counts past it is a bad address, not a path to copy. */
    tw_factory server;
    tw_factory_init(&server, NULL, &echo_ops, sizeof(struct echo), NULL);
    tw_address a;
    memset(&a, 'b', sizeof a);
    a.u.un.sun_family = AF_UNIX;
    a.len = sizeof a.u;
    tw_listening_port *port = NULL;
    cr_assert_eq(tw_listen_stream(r, &a, NULL, &server, &port), TW_EINVAL);
    cr_assert_null(port);
    tw_connector *c = NULL;
    cr_assert_eq(tw_connect_stream(r, &a, NULL, &server, &c), TW_EINVAL);
    cr_assert_null(c);
}

/* ---- Cancelling the connect from inside connection_made */

static tw_deferred *cancel_me;
static int cancel_made, cancel_lost, cancel_factory_stops;

static void cancel_on_made(tw_protocol *p)
{
    (void)p;
    cancel_made++;
    tw_deferred_cancel(cancel_me);
}

static void cancel_on_lost(tw_protocol *p, tw_failure *reason)
{
    (void)p, (void)reason;
    cancel_lost++;
    cr_assert_eq(cancel_factory_stops, 0, "the factory is stopped after its protocol is gone");
}

static void cancel_on_stop(tw_factory *f)
{
    (void)f;
    cancel_factory_stops++;
}

TW_REACTOR_TEST(endpoints, cancel_from_connection_made_closes_that_connection)
{
    static const tw_protocol_ops ops = {.connection_made = cancel_on_made,
                                        .connection_lost = cancel_on_lost};
    static const tw_factory_ops fops = {.stop_factory = cancel_on_stop};
    tw_factory server, client;
    tw_factory_init(&server, NULL, &echo_ops, sizeof(struct echo), NULL);
    tw_factory_init(&client, &fops, &ops, 0, NULL);
    tw_listening_port *port = listen_on(r, "tcp:0:interface=127.0.0.1", &server);
    char desc[64];
    snprintf(desc, sizeof desc, "tcp:127.0.0.1:%u", port_of(port));
    tw_endpoint *ep;
    cr_assert_eq(tw_endpoint_client_from_string(r, desc, &ep, NULL), 0);
    cancel_made = cancel_lost = cancel_factory_stops = 0;
    cancel_me = tw_endpoint_connect(ep, &client);
    tw_result res = twtest_wait(r, cancel_me);
    cr_assert_eq(tw_failure_code(res.failure), TW_ECANCELED);
    tw_result_release(&res);
    tw_deferred_unref(cancel_me);
    double end = tw_reactor_seconds(r) + 5;
    while (cancel_factory_stops == 0 && tw_reactor_seconds(r) < end)
        tw_reactor_iterate(r, 0.01);
    cr_assert_eq(cancel_made, 1);
    cr_assert_eq(cancel_lost, 1, "the connection made for a cancelled call is closed");
    cr_assert_eq(cancel_factory_stops, 1);
    tw_endpoint_free(ep);
    stop_port(port);
    spin(r);
}

TW_REACTOR_TEST(endpoints, bind_address_is_the_client_s_local_address)
{
    tw_factory server, client;
    tw_factory_init(&server, NULL, &echo_ops, sizeof(struct echo), NULL);
    tw_factory_init(&client, NULL, &client_ops, sizeof(struct client), NULL);
    tw_listening_port *port = listen_on(r, "tcp:0", &server);
    char desc[96];
    snprintf(desc, sizeof desc, "tcp:127.0.0.1:%u:bindAddress=127.0.0.2:timeout=5", port_of(port));
    tw_result res = connect_to(r, desc, &client);
    cr_assert_null(res.failure, "%s", res.failure ? tw_failure_message(res.failure) : "");
    struct client *c = res.value;
    tw_address host;
    cr_assert_eq(tw_transport_get_host(c->base.transport, &host), 0);
    char got[TW_ADDRESS_STRLEN];
    tw_address_format(&host, got, sizeof got);
    cr_assert(strncmp(got, "127.0.0.2:", 10) == 0, "bound to %s", got);
    hang_up(r, c, port);
}
