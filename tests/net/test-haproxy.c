/* The haproxy: server endpoint over real sockets: the protocol sees the
 * PROXY header's addresses through get_peer/get_host and only the bytes that
 * follow the header, whatever way the header is split across reads; a bad
 * header closes the connection before the application hears of it. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <twine/endpoint.h>
#include <twine/net.h>

#include "twtest.h"

struct seen {
    int built, made, lost;
    tw_address peer, host;
    char data[64];
    size_t len;
};

struct recorder {
    tw_protocol base;
};

static struct seen *seen_of(tw_protocol *p)
{
    return p->factory->data;
}

static void rec_made(tw_protocol *p)
{
    struct seen *s = seen_of(p);
    s->made++;
    tw_transport_get_peer(p->transport, &s->peer);
    tw_transport_get_host(p->transport, &s->host);
}

static void rec_data(tw_protocol *p, const char *data, size_t len)
{
    struct seen *s = seen_of(p);
    if (s->len + len <= sizeof s->data) {
        memcpy(s->data + s->len, data, len);
        s->len += len;
    }
    tw_transport_write(p->transport, data, len);
}

static void rec_lost(tw_protocol *p, tw_failure *reason)
{
    (void)reason;
    seen_of(p)->lost++;
}

static const tw_protocol_ops rec_ops = {
    .connection_made = rec_made, .data_received = rec_data, .connection_lost = rec_lost};

static tw_protocol *rec_build(tw_factory *f, const tw_address *addr)
{
    ((struct seen *)f->data)->built++;
    return tw_factory_build_default(f, addr);
}

static const tw_factory_ops rec_factory_ops = {.build_protocol = rec_build};

static tw_listening_port *listen_haproxy(tw_reactor *r, tw_factory *f, unsigned *port)
{
    tw_endpoint *ep;
    cr_assert_eq(tw_endpoint_server_from_string(r, "haproxy:tcp:0:interface=127.0.0.1", &ep, NULL),
                 0);
    tw_deferred *d = tw_endpoint_listen(ep, f);
    tw_result res = twtest_wait(r, d);
    tw_deferred_unref(d);
    tw_endpoint_free(ep);
    cr_assert_null(res.failure);
    tw_listening_port *lp = tw_result_take(&res);
    tw_address a;
    cr_assert_eq(tw_listening_port_get_host(lp, &a), 0);
    *port = tw_address_port(&a);
    return lp;
}

static int dial(unsigned port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(connect(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    return fd;
}

static void spin(tw_reactor *r, int times)
{
    for (int i = 0; i < times; i++)
        tw_reactor_iterate(r, 0.005);
}

static void spin_until(tw_reactor *r, const int *counter, int want)
{
    double end = tw_reactor_seconds(r) + 10;
    while (*counter < want && tw_reactor_seconds(r) < end)
        tw_reactor_iterate(r, 0.005);
    cr_assert_geq(*counter, want, "waited 10 s");
}

static void check_v4(const tw_address *a, const char *ip, unsigned port)
{
    char want[64], got[TW_ADDRESS_STRLEN];
    snprintf(want, sizeof want, "%s:%u", ip, port);
    cr_assert_str_eq(tw_address_format(a, got, sizeof got), want);
}

/* Sends head+body split at `cut`, reads the echo of body, closes. */
static void session(tw_reactor *r, unsigned port, const char *msg, size_t len, size_t cut,
                    struct seen *s, const char *body)
{
    int fd = dial(port);
    cr_assert_eq(send(fd, msg, cut, 0), (ssize_t)cut);
    spin(r, 2);
    cr_assert_eq(send(fd, msg + cut, len - cut, 0), (ssize_t)(len - cut));
    int lost = s->lost;
    double end = tw_reactor_seconds(r) + 10;
    while (s->len < strlen(body) && tw_reactor_seconds(r) < end)
        tw_reactor_iterate(r, 0.005);
    /* The reply may leave with the next iteration (io_uring batches the
     * iteration's sends into its next submission). */
    char back[64];
    ssize_t n = -1;
    while (tw_reactor_seconds(r) < end) {
        n = recv(fd, back, sizeof back, MSG_DONTWAIT);
        if (n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
            break;
        tw_reactor_iterate(r, 0.005);
    }
    cr_assert_eq(n, (ssize_t)strlen(body), "cut at %zu", cut);
    close(fd);
    spin_until(r, &s->lost, lost + 1);
}

TW_REACTOR_TEST(haproxy, v1_header_split_at_every_byte)
{
    static const char msg[] = "PROXY TCP4 192.0.2.7 198.51.100.9 40000 443\r\nhello";
    struct seen s = {0};
    tw_factory f;
    tw_factory_init(&f, &rec_factory_ops, &rec_ops, sizeof(struct recorder), &s);
    unsigned port;
    tw_listening_port *lp = listen_haproxy(r, &f, &port);
    for (size_t cut = 1; cut < sizeof msg - 1; cut++) {
        s.len = 0;
        session(r, port, msg, sizeof msg - 1, cut, &s, "hello");
        cr_assert_eq(s.len, 5);
        cr_assert_eq(memcmp(s.data, "hello", 5), 0, "the header never reaches the protocol");
        check_v4(&s.peer, "192.0.2.7", 40000);
        check_v4(&s.host, "198.51.100.9", 443);
    }
    cr_assert_eq(s.made, (int)sizeof msg - 2);
    tw_deferred_unref(tw_listening_port_stop(lp));
}

TW_REACTOR_TEST(haproxy, v2_header_with_ipv6_addresses)
{
    unsigned char msg[16 + 36 + 4] = {
        0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51,
        0x55, 0x49, 0x54, 0x0A, 0x21, 0x21, 0x00, 36}; /* PROXY, TCP over IPv6 */
    inet_pton(AF_INET6, "2001:db8::1", msg + 16);
    inet_pton(AF_INET6, "2001:db8::2", msg + 32);
    msg[48] = 0x9c, msg[49] = 0x40; /* 40000 */
    msg[50] = 0x01, msg[51] = 0xbb; /* 443 */
    memcpy(msg + 52, "ping", 4);
    struct seen s = {0};
    tw_factory f;
    tw_factory_init(&f, &rec_factory_ops, &rec_ops, sizeof(struct recorder), &s);
    unsigned port;
    tw_listening_port *lp = listen_haproxy(r, &f, &port);
    for (size_t cut = 1; cut < sizeof msg; cut++) {
        s.len = 0;
        session(r, port, (const char *)msg, sizeof msg, cut, &s, "ping");
        char got[TW_ADDRESS_STRLEN];
        cr_assert_str_eq(tw_address_format(&s.peer, got, sizeof got), "[2001:db8::1]:40000");
        cr_assert_str_eq(tw_address_format(&s.host, got, sizeof got), "[2001:db8::2]:443");
    }
    tw_deferred_unref(tw_listening_port_stop(lp));
}

TW_REACTOR_TEST(haproxy, local_command_keeps_the_real_addresses)
{
    static const unsigned char msg[] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55,
                                        0x49, 0x54, 0x0A, 0x20, 0x00, 0x00, 0x00, 'o',  'k'};
    struct seen s = {0};
    tw_factory f;
    tw_factory_init(&f, &rec_factory_ops, &rec_ops, sizeof(struct recorder), &s);
    unsigned port;
    tw_listening_port *lp = listen_haproxy(r, &f, &port);
    session(r, port, (const char *)msg, sizeof msg, 3, &s, "ok");
    char got[TW_ADDRESS_STRLEN];
    cr_assert(strncmp(tw_address_format(&s.peer, got, sizeof got), "127.0.0.1:", 10) == 0, "%s",
              got);
    tw_deferred_unref(tw_listening_port_stop(lp));
}

TW_REACTOR_TEST(haproxy, bad_header_closes_before_the_protocol_is_built)
{
    tw_testing_log_capture_start();
    struct seen s = {0};
    tw_factory f;
    tw_factory_init(&f, &rec_factory_ops, &rec_ops, sizeof(struct recorder), &s);
    unsigned port;
    tw_listening_port *lp = listen_haproxy(r, &f, &port);
    int fd = dial(port);
    static const char bad[] = "GET / HTTP/1.0\r\n\r\n";
    send(fd, bad, sizeof bad - 1, 0);
    char buf[16];
    ssize_t n = -1;
    double end = tw_reactor_seconds(r) + 10;
    struct timeval tv = {0, 5000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    while (tw_reactor_seconds(r) < end) {
        tw_reactor_iterate(r, 0.005);
        n = recv(fd, buf, sizeof buf, 0);
        if (n >= 0 || errno == ECONNRESET)
            break;
    }
    cr_assert(n == 0 || (n < 0 && errno == ECONNRESET), "the connection was closed");
    close(fd);
    spin(r, 5);
    cr_assert_eq(s.made, 0, "the application never saw the connection");
    cr_assert_eq(tw_testing_log_count("bad PROXY header"), 1);
    tw_testing_log_capture_stop();
    tw_deferred_unref(tw_listening_port_stop(lp));
    spin(r, 5);
}

TW_REACTOR_TEST(haproxy, connections_outlive_the_port)
{
    static const char msg[] = "PROXY TCP4 10.0.0.1 10.0.0.2 1 2\r\nafter";
    struct seen s = {0};
    tw_factory f;
    tw_factory_init(&f, &rec_factory_ops, &rec_ops, sizeof(struct recorder), &s);
    unsigned port;
    tw_listening_port *lp = listen_haproxy(r, &f, &port);
    int fd = dial(port);
    spin_until(r, &s.built, 1);
    tw_deferred_unref(tw_listening_port_stop(lp)); /* the connection stays */
    send(fd, msg, sizeof msg - 1, 0);
    spin_until(r, &s.made, 1);
    double end = tw_reactor_seconds(r) + 10;
    while (s.len < 5 && tw_reactor_seconds(r) < end)
        tw_reactor_iterate(r, 0.005);
    cr_assert_eq(s.len, 5);
    close(fd);
    spin_until(r, &s.lost, 1);
}

static tw_listening_port *stop_me;

static tw_protocol *build_and_stop(tw_factory *f, const tw_address *addr)
{
    ((struct seen *)f->data)->built++;
    tw_deferred_unref(tw_listening_port_stop(stop_me)); /* from inside the accept */
    stop_me = NULL;
    return tw_factory_build_default(f, addr);
}

TW_REACTOR_TEST(haproxy, port_stopped_from_build_protocol)
{
    static const tw_factory_ops ops = {.build_protocol = build_and_stop};
    static const char msg[] = "PROXY TCP4 10.0.0.1 10.0.0.2 1 2\r\nx";
    struct seen s = {0};
    tw_factory f;
    tw_factory_init(&f, &ops, &rec_ops, sizeof(struct recorder), &s);
    unsigned port;
    stop_me = listen_haproxy(r, &f, &port);
    int fd = dial(port);
    send(fd, msg, sizeof msg - 1, 0);
    spin_until(r, &s.built, 1);
    spin_until(r, &s.made, 1);
    cr_assert_null(stop_me);
    close(fd);
    spin_until(r, &s.lost, 1);
}
