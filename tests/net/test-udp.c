/* UDP ports: echo over IPv4 and IPv6, Python's socket module as a peer,
 * connected UDP (filtering, connection refused), oversized datagrams,
 * EMSGSIZE, options, multicast on the loopback interface, the stop order,
 * reactor shutdown, allocation failure, and no allocation per datagram. */
#include "twtest.h"
#include <twine/udp.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <math.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

extern char **environ;

/* ---- Helpers */

enum { EV_START = 1, EV_STOP, EV_FREE };

struct dg {
    tw_datagram_protocol base;
    int started, stopped, freed, refused, received;
    int events[8];
    int nevents;
    char last[256];
    size_t last_len;
    tw_address last_from;
    bool echo;            /* write every datagram back to its sender */
    bool stop_in_receive; /* stop the port from inside datagram_received */
    int write_after_stop; /* what a write returned after that stop */
    int stop_in_start;    /* what stop_listening returned inside start_protocol */
    bool try_stop_in_start;
    /* listen another port from inside datagram_received (buffer growth) */
    tw_datagram_protocol *listen_in_receive;
    tw_reactor *reactor;
    tw_udp_port *listened;
    bool data_intact;
};

static void note(struct dg *d, int ev)
{
    if (d->nevents < 8)
        d->events[d->nevents++] = ev;
}

static void dg_start(tw_datagram_protocol *p)
{
    struct dg *d = (struct dg *)p;
    d->started++;
    note(d, EV_START);
    cr_assert_not_null(p->port);
    if (d->try_stop_in_start)
        d->stop_in_start = tw_udp_port_stop_listening(p->port);
}

static void dg_stop(tw_datagram_protocol *p)
{
    struct dg *d = (struct dg *)p;
    d->stopped++;
    note(d, EV_STOP);
    cr_assert_not_null(p->port, "port cleared before stop_protocol");
    cr_assert_eq(tw_udp_port_write(p->port, "x", 1, &d->last_from), TW_ENOTCONN);
}

static void dg_free(tw_datagram_protocol *p)
{
    struct dg *d = (struct dg *)p;
    d->freed++;
    note(d, EV_FREE);
    cr_assert_null(p->port);
}

static void dg_received(tw_datagram_protocol *p, const char *data, size_t len,
                        const tw_address *from)
{
    struct dg *d = (struct dg *)p;
    d->received++;
    d->last_len = len;
    memcpy(d->last, data, len < sizeof d->last ? len : sizeof d->last);
    d->last_from = *from;
    if (d->echo)
        cr_assert_eq(tw_udp_port_write(p->port, data, len, from), 0);
    if (d->listen_in_receive) {
        char copy[256];
        size_t n = len < sizeof copy ? len : sizeof copy;
        memcpy(copy, data, n);
        tw_address any;
        memset(&any, 0, sizeof any);
        any.u.in.sin_family = AF_INET;
        any.u.in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        any.len = sizeof any.u.in;
        tw_udp_options big = {.max_packet_size = TW_UDP_MAX_PACKET};
        cr_assert_eq(tw_udp_listen(d->reactor, &any, &big, d->listen_in_receive, &d->listened), 0);
        d->listen_in_receive = NULL;
        d->data_intact = memcmp(copy, data, n) == 0; /* ASan: no use after free */
    }
    if (d->stop_in_receive) {
        cr_assert_eq(tw_udp_port_stop_listening(p->port), 0);
        cr_assert_eq(d->stopped, 0, "stop_protocol ran inside datagram_received");
        d->write_after_stop = tw_udp_port_write(p->port, data, len, from);
        cr_assert_eq(tw_udp_port_stop_listening(p->port), 0, "stopping twice");
    }
}

static void dg_refused(tw_datagram_protocol *p)
{
    ((struct dg *)p)->refused++;
}

static const tw_datagram_protocol_ops dg_ops = {
    .start_protocol = dg_start,
    .stop_protocol = dg_stop,
    .datagram_received = dg_received,
    .connection_refused = dg_refused,
    .free = dg_free,
};

static void dg_init(struct dg *d)
{
    memset(d, 0, sizeof *d);
    d->base.ops = &dg_ops;
}

static tw_address ip(const char *text, unsigned port)
{
    tw_address a;
    cr_assert_eq(tw_address_from_ip(&a, text, port), 0, "%s", text);
    return a;
}

static unsigned port_of(tw_udp_port *port)
{
    tw_address a;
    cr_assert_eq(tw_udp_port_get_host(port, &a), 0);
    return ntohs(a.u.sa.sa_family == AF_INET ? a.u.in.sin_port : a.u.in6.sin6_port);
}

static tw_address host_of(tw_udp_port *port)
{
    tw_address a;
    cr_assert_eq(tw_udp_port_get_host(port, &a), 0);
    return a;
}

/* Iterates until *counter reaches want or 5 s pass; returns whether it did. */
static bool run_until(tw_reactor *r, const int *counter, int want)
{
    double end = tw_reactor_seconds(r) + 5;
    while (*counter < want && tw_reactor_seconds(r) < end)
        tw_reactor_iterate(r, 0.05);
    return *counter >= want;
}

/* Iterates for `seconds` (to show that something does NOT arrive). */
static void run_for(tw_reactor *r, double seconds)
{
    double end = tw_reactor_seconds(r) + seconds;
    while (tw_reactor_seconds(r) < end)
        tw_reactor_iterate(r, 0.01);
}

/* The sockets this process has open, as "socket:[inode]" links. */
static size_t list_sockets(char names[][32], size_t max)
{
    DIR *d = opendir("/proc/self/fd");
    cr_assert_not_null(d);
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < max) {
        char path[300], link[32] = "";
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        ssize_t len = readlink(path, link, sizeof link - 1);
        if (len > 0 && strncmp(link, "socket:", 7) == 0) {
            link[len] = 0;
            memcpy(names[n++], link, sizeof link);
        }
    }
    closedir(d);
    return n;
}

static bool socket_listed(char names[][32], size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0)
            return true;
    return false;
}

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    cr_assert_not_null(d);
    int n = 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

static void listen_or_die(tw_reactor *r, const char *addr, const tw_udp_options *o, struct dg *d,
                          tw_udp_port **out)
{
    tw_address a = ip(addr, 0);
    int rc = tw_udp_listen(r, &a, o, &d->base, out);
    cr_assert_eq(rc, 0, "listen %s: %s", addr, tw_strerror(rc));
}

/* ---- Echo */

static void echo_between(tw_reactor *r, const char *host)
{
    struct dg server, client;
    dg_init(&server);
    dg_init(&client);
    server.echo = true;
    tw_udp_port *sp, *cp;
    listen_or_die(r, host, NULL, &server, &sp);
    listen_or_die(r, host, NULL, &client, &cp);
    cr_assert_eq(server.started, 1);
    cr_assert_eq(server.base.port, sp);

    tw_address to = ip(host, port_of(sp));
    cr_assert_eq(tw_udp_port_write(cp, "hello", 5, &to), 0);
    cr_assert(run_until(r, &client.received, 1), "no echo over %s", host);
    cr_assert_eq(server.received, 1);
    cr_assert_eq(client.last_len, 5);
    cr_assert_arr_eq(client.last, "hello", 5);
    /* Each side saw the other's bound address as the sender. */
    cr_assert_eq(ntohs(to.u.sa.sa_family == AF_INET ? client.last_from.u.in.sin_port
                                                    : client.last_from.u.in6.sin6_port),
                 port_of(sp));
    cr_assert_eq(ntohs(to.u.sa.sa_family == AF_INET ? server.last_from.u.in.sin_port
                                                    : server.last_from.u.in6.sin6_port),
                 port_of(cp));

    /* An empty datagram is a datagram. */
    cr_assert_eq(tw_udp_port_write(cp, NULL, 0, &to), 0);
    cr_assert(run_until(r, &client.received, 2));
    cr_assert_eq(client.last_len, 0);

    /* write_sequence sends one datagram. */
    struct iovec iov[3] = {{"ab", 2}, {NULL, 0}, {"cde", 3}};
    cr_assert_eq(tw_udp_port_write_sequence(cp, iov, 3, &to), 0);
    cr_assert(run_until(r, &client.received, 3));
    cr_assert_eq(server.received, 3);
    cr_assert_eq(client.last_len, 5);
    cr_assert_arr_eq(client.last, "abcde", 5);

    cr_assert_eq(tw_udp_port_stop_listening(sp), 0);
    cr_assert_eq(tw_udp_port_stop_listening(cp), 0);
    cr_assert_eq(server.stopped, 1);
    cr_assert_eq(client.freed, 1);
}

TW_REACTOR_TEST(udp, echo_ipv4)
{
    echo_between(r, "127.0.0.1");
}

TW_REACTOR_TEST(udp, echo_ipv6)
{
    struct dg probe;
    dg_init(&probe);
    tw_address a = ip("::1", 0);
    tw_udp_port *port;
    int rc = tw_udp_listen(r, &a, NULL, &probe.base, &port);
    if (rc == TW_EAFNOSUPPORT || rc == TW_EADDRNOTAVAIL)
        cr_skip_test("no IPv6 loopback here: %s", tw_strerror(rc));
    cr_assert_eq(rc, 0, "%s", tw_strerror(rc));
    tw_udp_port_stop_listening(port);
    echo_between(r, "::1");
}

/* ---- Python's socket module as the peer */

TW_REACTOR_TEST(udp, python_peer_gets_echo)
{
    if (access("/usr/bin/python3", X_OK) != 0)
        cr_skip_test("no /usr/bin/python3");
    struct dg server;
    dg_init(&server);
    server.echo = true;
    tw_udp_port *sp;
    listen_or_die(r, "127.0.0.1", NULL, &server, &sp);
    char portarg[16];
    snprintf(portarg, sizeof portarg, "%u", port_of(sp));
    const char *script = "import socket, sys\n"
                         "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                         "s.settimeout(5)\n"
                         "msg = b'twine ' * 50\n"
                         "s.sendto(msg, ('127.0.0.1', int(sys.argv[1])))\n"
                         "data, addr = s.recvfrom(65536)\n"
                         "sys.exit(0 if data == msg and addr[1] == int(sys.argv[1]) else 3)\n";
    char *argv[] = {"python3", "-c", (char *)script, portarg, NULL};
    pid_t pid;
    cr_assert_eq(posix_spawn(&pid, "/usr/bin/python3", NULL, NULL, argv, environ), 0);
    int status = 0;
    double end = tw_reactor_seconds(r) + 10;
    pid_t done = 0;
    while (done == 0 && tw_reactor_seconds(r) < end) {
        tw_reactor_iterate(r, 0.02);
        done = waitpid(pid, &status, WNOHANG);
    }
    if (done == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        cr_assert_fail("python peer did not finish");
    }
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "python peer status %d", status);
    cr_assert_eq(server.received, 1);
    cr_assert_eq(server.last_len, 300);
    tw_udp_port_stop_listening(sp);
}

/* ---- Connected UDP */

TW_REACTOR_TEST(udp, connected_port_filters_other_senders)
{
    struct dg a, b, c;
    dg_init(&a);
    dg_init(&b);
    dg_init(&c);
    tw_udp_port *pa, *pb, *pc;
    listen_or_die(r, "127.0.0.1", NULL, &a, &pa);
    listen_or_die(r, "127.0.0.1", NULL, &b, &pb);
    listen_or_die(r, "127.0.0.1", NULL, &c, &pc);
    tw_address to_a = host_of(pa), to_b = host_of(pb);

    /* Queued before the connect: the kernel keeps it, the port must not
     * deliver it. */
    cr_assert_eq(tw_udp_port_write(pc, "early c", 7, &to_a), 0);
    cr_assert_eq(tw_udp_port_write(pa, "x", 1, NULL), TW_ENOTCONN);
    cr_assert_eq(tw_udp_port_connect(pa, &to_b), 0);
    cr_assert_eq(tw_udp_port_write(pc, "late c", 6, &to_a), 0);
    cr_assert_eq(tw_udp_port_write(pb, "from b", 6, &to_a), 0);
    cr_assert(run_until(r, &a.received, 1));
    run_for(r, 0.05);
    cr_assert_eq(a.received, 1, "a connected port delivered another sender's datagram");
    cr_assert_eq(a.last_len, 6);
    cr_assert_arr_eq(a.last, "from b", 6);

    /* Writes go to the peer without a destination, or with the peer's. */
    cr_assert_eq(tw_udp_port_write(pa, "1", 1, NULL), 0);
    cr_assert_eq(tw_udp_port_write(pa, "2", 1, &to_b), 0);
    tw_address to_c = host_of(pc);
    cr_assert_eq(tw_udp_port_write(pa, "3", 1, &to_c), TW_EISCONN);
    cr_assert(run_until(r, &b.received, 2));
    run_for(r, 0.05);
    cr_assert_eq(b.received, 2);
    cr_assert_eq(c.received, 0);

    tw_udp_port_stop_listening(pa);
    tw_udp_port_stop_listening(pb);
    tw_udp_port_stop_listening(pc);
}

TW_REACTOR_TEST(udp, connection_refused_after_sending_to_closed_port)
{
    struct dg gone, a;
    dg_init(&gone);
    dg_init(&a);
    tw_udp_port *pg, *pa;
    listen_or_die(r, "127.0.0.1", NULL, &gone, &pg);
    tw_address closed = host_of(pg);
    tw_udp_port_stop_listening(pg);

    listen_or_die(r, "127.0.0.1", NULL, &a, &pa);
    cr_assert_eq(tw_udp_port_connect(pa, &closed), 0);
    cr_assert_eq(tw_udp_port_write(pa, "anyone?", 7, NULL), 0);
    cr_assert(run_until(r, &a.refused, 1), "no connection_refused");
    cr_assert_eq(a.received, 0);
    /* The port stays open and usable; the error was consumed. */
    cr_assert_eq(tw_udp_port_write(pa, "again", 5, NULL), 0);
    cr_assert(run_until(r, &a.refused, 2));
    cr_assert_eq(a.stopped, 0);
    tw_udp_port_stop_listening(pa);
    cr_assert_eq(a.refused, 2);
}

TW_REACTOR_TEST(udp, unconnected_port_gets_no_connection_refused)
{
    struct dg gone, a;
    dg_init(&gone);
    dg_init(&a);
    tw_udp_port *pg, *pa;
    listen_or_die(r, "127.0.0.1", NULL, &gone, &pg);
    tw_address closed = host_of(pg);
    tw_udp_port_stop_listening(pg);
    listen_or_die(r, "127.0.0.1", NULL, &a, &pa);
    cr_assert_eq(tw_udp_port_write(pa, "anyone?", 7, &closed), 0);
    run_for(r, 0.05);
    cr_assert_eq(a.refused, 0);
    tw_udp_port_stop_listening(pa);
}

/* ---- Sizes */

TW_REACTOR_TEST(udp, datagram_over_max_packet_size_is_dropped)
{
    struct dg a, b;
    dg_init(&a);
    dg_init(&b);
    tw_udp_options small = {.max_packet_size = 100};
    tw_udp_port *pa, *pb;
    listen_or_die(r, "127.0.0.1", &small, &a, &pa);
    listen_or_die(r, "127.0.0.1", NULL, &b, &pb);
    tw_address to_a = host_of(pa);

    tw_log_level level = tw_log_get_level();
    tw_log_set_level(TW_LOG_DEBUG);
    tw_testing_log_capture_start();
    char big[200], exact[100];
    memset(big, 'B', sizeof big);
    memset(exact, 'E', sizeof exact);
    cr_assert_eq(tw_udp_port_write(pb, big, sizeof big, &to_a), 0);
    cr_assert_eq(tw_udp_port_write(pb, "next", 4, &to_a), 0);
    cr_assert_eq(tw_udp_port_write(pb, exact, sizeof exact, &to_a), 0);
    bool got = run_until(r, &a.received, 2);
    char expect[96];
    snprintf(expect, sizeof expect, "dropped a 200-byte datagram from 127.0.0.1:%u", port_of(pb));
    size_t logged = tw_testing_log_count(expect);
    tw_testing_log_capture_stop();
    tw_log_set_level(level);

    cr_assert(got, "the datagrams after the big one did not arrive");
    run_for(r, 0.05);
    cr_assert_eq(a.received, 2, "the oversized datagram was delivered");
    cr_assert_eq(a.last_len, 100, "a datagram of exactly max_packet_size must arrive whole");
    cr_assert_eq(logged, 1);
    tw_udp_port_stop_listening(pa);
    tw_udp_port_stop_listening(pb);
}

TW_REACTOR_TEST(udp, oversized_send_is_emsgsize)
{
    struct dg a;
    dg_init(&a);
    tw_udp_port *pa;
    listen_or_die(r, "127.0.0.1", NULL, &a, &pa);
    tw_address self = host_of(pa);
    char *buf = calloc(1, 70000);
    cr_assert_not_null(buf);
    cr_assert_eq(tw_udp_port_write(pa, buf, 70000, &self), TW_EMSGSIZE);
    struct iovec iov[2] = {{buf, 35000}, {buf + 35000, 35000}};
    cr_assert_eq(tw_udp_port_write_sequence(pa, iov, 2, &self), TW_EMSGSIZE);
    free(buf);
    run_for(r, 0.02);
    cr_assert_eq(a.received, 0);
    tw_udp_port_stop_listening(pa);
}

/* ---- Options and multicast */

TW_REACTOR_TEST(udp, broadcast_flag_reads_back)
{
    struct dg a;
    dg_init(&a);
    tw_udp_port *pa;
    listen_or_die(r, "127.0.0.1", NULL, &a, &pa);
    cr_assert_eq(tw_udp_port_get_broadcast_allowed(pa), 0);
    cr_assert_eq(tw_udp_port_set_broadcast_allowed(pa, true), 0);
    cr_assert_eq(tw_udp_port_get_broadcast_allowed(pa), 1);
    cr_assert_eq(tw_udp_port_set_broadcast_allowed(pa, false), 0);
    cr_assert_eq(tw_udp_port_get_broadcast_allowed(pa), 0);
    tw_udp_port_stop_listening(pa);
}

TW_REACTOR_TEST(udp, multicast_on_loopback_delivers_to_self)
{
    struct dg m;
    dg_init(&m);
    tw_udp_options reuse = {.reuse_addr = true};
    tw_udp_port *pm;
    listen_or_die(r, "0.0.0.0", &reuse, &m, &pm);
    tw_address group = ip("239.255.0.1", port_of(pm));
    tw_address lo = ip("127.0.0.1", 0);

    cr_assert_eq(tw_udp_port_set_ttl(pm, 3), 0);
    cr_assert_eq(tw_udp_port_get_ttl(pm), 3);
    cr_assert_eq(tw_udp_port_set_ttl(pm, 256), TW_EINVAL);
    cr_assert_eq(tw_udp_port_get_ttl(pm), 3);
    cr_assert_eq(tw_udp_port_set_loopback_mode(pm, false), 0);
    cr_assert_eq(tw_udp_port_get_loopback_mode(pm), 0);
    cr_assert_eq(tw_udp_port_set_loopback_mode(pm, true), 0);
    cr_assert_eq(tw_udp_port_get_loopback_mode(pm), 1);

    tw_address not_group = ip("127.0.0.1", 0);
    cr_assert_eq(tw_udp_port_join_group(pm, &not_group, &lo), TW_EINVAL);
    tw_address v6group = ip("ff02::1", 0);
    cr_assert_eq(tw_udp_port_join_group(pm, &v6group, NULL), TW_EAFNOSUPPORT);

    int rc = tw_udp_port_join_group(pm, &group, &lo);
    if (rc != 0) {
        tw_udp_port_stop_listening(pm);
        cr_skip_test("cannot join 239.255.0.1 on 127.0.0.1 here (%s): no multicast on lo",
                     tw_strerror(rc));
    }
    cr_assert_eq(tw_udp_port_join_group(pm, &group, &lo), TW_EADDRINUSE);
    cr_assert_eq(tw_udp_port_set_outgoing_interface(pm, &lo), 0);
    cr_assert_eq(tw_udp_port_write(pm, "to the group", 12, &group), 0);
    cr_assert(run_until(r, &m.received, 1), "multicast datagram not looped back");
    cr_assert_arr_eq(m.last, "to the group", 12);

    /* (Turning loopback off proves nothing here: sent out through lo, the
     * datagram comes back in through lo like any other.) Left: nothing more
     * arrives, and leaving twice is an error. */
    cr_assert_eq(tw_udp_port_leave_group(pm, &group, &lo), 0);
    cr_assert_eq(tw_udp_port_leave_group(pm, &group, &lo), TW_EADDRNOTAVAIL);
    cr_assert_eq(tw_udp_port_write(pm, "gone", 4, &group), 0);
    run_for(r, 0.05);
    cr_assert_eq(m.received, 1);
    cr_assert_eq(tw_udp_port_set_outgoing_interface(pm, NULL), 0);
    tw_udp_port_stop_listening(pm);
}

/* IPv6: the options and membership take the IPv6 paths. (Sending to a group
 * through lo needs a multicast-capable interface, which lo is not on Linux.) */
TW_REACTOR_TEST(udp, ipv6_multicast_membership_and_options)
{
    struct dg m;
    dg_init(&m);
    tw_address any = ip("::", 0);
    tw_udp_port *pm;
    int rc = tw_udp_listen(r, &any, NULL, &m.base, &pm);
    if (rc == TW_EAFNOSUPPORT || rc == TW_EADDRNOTAVAIL)
        cr_skip_test("no IPv6 here: %s", tw_strerror(rc));
    cr_assert_eq(rc, 0, "%s", tw_strerror(rc));
    cr_assert_eq(tw_udp_port_set_ttl(pm, 7), 0);
    cr_assert_eq(tw_udp_port_get_ttl(pm), 7);
    cr_assert_eq(tw_udp_port_set_loopback_mode(pm, false), 0);
    cr_assert_eq(tw_udp_port_get_loopback_mode(pm), 0);
    cr_assert_eq(tw_udp_port_set_loopback_mode(pm, true), 0);
    cr_assert_eq(tw_udp_port_get_loopback_mode(pm), 1);

    tw_address group = ip("ff12::1234", 0), lo = ip("::%lo", 0), v4 = ip("127.0.0.1", 0);
    tw_address unicast = ip("::1", 0);
    cr_assert_eq(tw_udp_port_join_group(pm, &unicast, &lo), TW_EINVAL);
    cr_assert_eq(tw_udp_port_join_group(pm, &group, &v4), TW_EINVAL);
    cr_assert_eq(tw_udp_port_join_group(pm, &group, &lo), 0);
    cr_assert_eq(tw_udp_port_leave_group(pm, &group, &lo), 0);
    cr_assert_lt(tw_udp_port_leave_group(pm, &group, &lo), 0, "left a group not joined");
    cr_assert_eq(tw_udp_port_set_outgoing_interface(pm, &lo), 0);
    cr_assert_eq(tw_udp_port_set_outgoing_interface(pm, NULL), 0);
    tw_udp_port_stop_listening(pm);
}

/* ---- Lifecycle */

TW_REACTOR_TEST(udp, stop_listening_runs_stop_protocol_then_free_once)
{
    struct dg a;
    dg_init(&a);
    tw_udp_port *pa;
    listen_or_die(r, "127.0.0.1", NULL, &a, &pa);
    tw_reactor_state st;
    tw_reactor_get_state(r, &st);
    cr_assert_eq(st.handles, 1);
    cr_assert_eq(st.readers, 1);
    cr_assert_eq(tw_udp_port_stop_listening(pa), 0);
    cr_assert_eq(a.nevents, 3);
    cr_assert_eq(a.events[0], EV_START);
    cr_assert_eq(a.events[1], EV_STOP);
    cr_assert_eq(a.events[2], EV_FREE);
    cr_assert_null(a.base.port);
    tw_reactor_get_state(r, &st);
    cr_assert_eq(st.handles, 0);
    cr_assert_eq(tw_udp_port_stop_listening(NULL), TW_EINVAL);
}

TW_REACTOR_TEST(udp, stop_inside_datagram_received_finishes_after_it)
{
    struct dg a, b;
    dg_init(&a);
    dg_init(&b);
    a.stop_in_receive = true;
    tw_udp_port *pa, *pb;
    listen_or_die(r, "127.0.0.1", NULL, &a, &pa);
    listen_or_die(r, "127.0.0.1", NULL, &b, &pb);
    tw_address to_a = host_of(pa);
    cr_assert_eq(tw_udp_port_write(pb, "one", 3, &to_a), 0);
    cr_assert_eq(tw_udp_port_write(pb, "two", 3, &to_a), 0);
    cr_assert(run_until(r, &a.freed, 1));
    cr_assert_eq(a.write_after_stop, TW_ENOTCONN);
    cr_assert_eq(a.received, 1, "delivered after the port stopped");
    cr_assert_eq(a.stopped, 1);
    cr_assert_eq(a.nevents, 3);
    cr_assert_eq(a.events[1], EV_STOP);
    cr_assert_eq(a.events[2], EV_FREE);
    tw_udp_port_stop_listening(pb);
}

TW_REACTOR_TEST(udp, listen_inside_datagram_received_with_larger_buffer)
{
    struct dg a, b, grown;
    dg_init(&a);
    dg_init(&b);
    dg_init(&grown);
    a.listen_in_receive = &grown.base;
    a.reactor = r;
    tw_udp_port *pa, *pb;
    listen_or_die(r, "127.0.0.1", NULL, &a, &pa);
    listen_or_die(r, "127.0.0.1", NULL, &b, &pb);
    tw_address to_a = host_of(pa);
    cr_assert_eq(tw_udp_port_write(pb, "still here", 10, &to_a), 0);
    cr_assert(run_until(r, &a.received, 1));
    cr_assert(a.data_intact, "the borrowed datagram changed under the callback");
    cr_assert_eq(grown.started, 1);

    /* The grown buffer takes a big datagram for the new port. */
    char *big = calloc(1, 60000);
    cr_assert_not_null(big);
    tw_address to_grown = host_of(a.listened);
    cr_assert_eq(tw_udp_port_write(pb, big, 60000, &to_grown), 0);
    free(big);
    cr_assert(run_until(r, &grown.received, 1));
    cr_assert_eq(grown.last_len, 60000);
    tw_udp_port_stop_listening(a.listened);
    tw_udp_port_stop_listening(pa);
    tw_udp_port_stop_listening(pb);
}

static void stop_reactor(void *arg)
{
    tw_reactor_stop(arg);
}

TW_REACTOR_TEST(udp, reactor_shutdown_closes_the_port)
{
    struct dg a, b;
    dg_init(&a);
    dg_init(&b);
    tw_udp_port *pa, *pb;
    static char before[64][32], open[64][32], after[64][32];
    size_t nbefore = list_sockets(before, 64);
    listen_or_die(r, "127.0.0.1", NULL, &a, &pa);
    listen_or_die(r, "127.0.0.1", NULL, &b, &pb);
    size_t nopen = list_sockets(open, 64);
    cr_assert_eq(nopen, nbefore + 2);
    cr_assert_eq(tw_reactor_call_when_running(r, stop_reactor, r), 0);
    cr_assert_eq(tw_reactor_run(r), 0);
    cr_assert_eq(a.stopped, 1);
    cr_assert_eq(a.freed, 1);
    cr_assert_eq(b.freed, 1);
    size_t nafter = list_sockets(after, 64);
    for (size_t i = 0; i < nopen; i++)
        if (!socket_listed(before, nbefore, open[i]))
            cr_assert(!socket_listed(after, nafter, open[i]), "%s still open", open[i]);
    tw_reactor_state st;
    tw_reactor_get_state(r, &st);
    cr_assert_eq(st.handles, 0);
    cr_assert_eq(st.readers, 0);
}

/* ---- Misuse */

TW_REACTOR_TEST(udp, bad_arguments)
{
    struct dg a, b;
    dg_init(&a);
    dg_init(&b);
    tw_udp_port *pa = NULL, *pb;
    tw_address lo = ip("127.0.0.1", 0);
    tw_address unix_addr;
    memset(&unix_addr, 0, sizeof unix_addr);
    unix_addr.u.un.sun_family = AF_UNIX;
    unix_addr.len = sizeof unix_addr.u.un;
    tw_udp_options huge = {.max_packet_size = TW_UDP_MAX_PACKET + 1};

    cr_assert_eq(tw_udp_listen(NULL, &lo, NULL, &a.base, &pa), TW_EINVAL);
    cr_assert_eq(tw_udp_listen(r, NULL, NULL, &a.base, &pa), TW_EINVAL);
    cr_assert_eq(tw_udp_listen(r, &lo, NULL, NULL, &pa), TW_EINVAL);
    cr_assert_eq(tw_udp_listen(r, &lo, NULL, &a.base, NULL), TW_EINVAL);
    cr_assert_eq(tw_udp_listen(r, &unix_addr, NULL, &a.base, &pa), TW_EINVAL);
    cr_assert_eq(tw_udp_listen(r, &lo, &huge, &a.base, &pa), TW_EINVAL);
    cr_assert_eq(a.started, 0);

    listen_or_die(r, "127.0.0.1", NULL, &a, &pa);
    cr_assert_eq(tw_udp_listen(r, &lo, NULL, &a.base, &pb), TW_EBUSY, "one port per protocol");
    tw_address taken = host_of(pa);
    cr_assert_eq(tw_udp_listen(r, &taken, NULL, &b.base, &pb), TW_EADDRINUSE);
    cr_assert_eq(b.started, 0);
    cr_assert_null(b.base.port);

    tw_address v6 = ip("::1", 9);
    cr_assert_eq(tw_udp_port_write(pa, "x", 1, &v6), TW_EAFNOSUPPORT);
    cr_assert_eq(tw_udp_port_connect(pa, &v6), TW_EAFNOSUPPORT);
    cr_assert_eq(tw_udp_port_write(pa, NULL, 1, &taken), TW_EINVAL);
    cr_assert_eq(tw_udp_port_write(pa, "x", 1, &unix_addr), TW_EINVAL);
    cr_assert_eq(tw_udp_port_write_sequence(pa, NULL, 1, &taken), TW_EINVAL);
    cr_assert_eq(tw_udp_port_write_sequence(pa, NULL, -1, &taken), TW_EINVAL);
    struct iovec holey = {NULL, 3};
    cr_assert_eq(tw_udp_port_write_sequence(pa, &holey, 1, &taken), TW_EINVAL);
    cr_assert_eq(tw_udp_port_get_host(pa, NULL), TW_EINVAL);
    cr_assert_eq(tw_udp_port_set_ttl(NULL, 1), TW_EINVAL);
    cr_assert_eq(tw_udp_port_get_ttl(NULL), TW_EINVAL);
    cr_assert_eq(tw_udp_port_set_outgoing_interface(pa, &v6), TW_EINVAL);
    tw_udp_port_stop_listening(pa);

    /* Stopping from inside start_protocol is refused; the port lives on. */
    dg_init(&b);
    b.try_stop_in_start = true;
    listen_or_die(r, "127.0.0.1", NULL, &b, &pb);
    cr_assert_eq(b.stop_in_start, TW_EBUSY);
    cr_assert_eq(b.stopped, 0);
    cr_assert_eq(tw_udp_port_stop_listening(pb), 0);
    cr_assert_eq(b.freed, 1);
}

/* ---- Allocation */

TW_REACTOR_TEST(udp, listen_allocation_failure_is_clean)
{
    /* A first port with the default size, so the loop covers both making the
     * reactor's buffer (first pass) and growing it (second pass). */
    for (int pass = 0; pass < 2; pass++) {
        struct dg first;
        dg_init(&first);
        tw_udp_port *pf = NULL;
        if (pass == 1)
            listen_or_die(r, "127.0.0.1", NULL, &first, &pf);
        tw_udp_options big = {.max_packet_size = TW_UDP_MAX_PACKET};
        tw_address lo = ip("127.0.0.1", 0);
        int rc = TW_ENOMEM;
        long n;
        for (n = 0; n < 100 && rc == TW_ENOMEM; n++) {
            struct dg a;
            dg_init(&a);
            tw_udp_port *pa = NULL;
            int fds = count_fds();
            long live = tw_testing_alloc_live();
            tw_testing_fail_alloc_after(n);
            rc = tw_udp_listen(r, &lo, &big, &a.base, &pa);
            tw_testing_fail_alloc_off();
            if (rc == 0) {
                cr_assert_eq(a.started, 1);
                tw_udp_port_stop_listening(pa);
                cr_assert_eq(a.freed, 1);
                break;
            }
            cr_assert_eq(rc, TW_ENOMEM, "n=%ld: %s", n, tw_strerror(rc));
            cr_assert_eq(tw_testing_alloc_live(), live, "n=%ld: memory kept after failure", n);
            cr_assert_eq(count_fds(), fds, "n=%ld: descriptor leaked", n);
            cr_assert_eq(a.started + a.stopped + a.freed, 0);
            cr_assert_null(a.base.port);
            tw_reactor_state st;
            tw_reactor_get_state(r, &st);
            cr_assert_eq(st.handles, (size_t)pass);
        }
        cr_assert_eq(rc, 0, "never succeeded");
        cr_assert_gt(n, 0, "no allocation was ever failed");
        if (pf)
            tw_udp_port_stop_listening(pf);
    }
}

TW_REACTOR_TEST(udp, no_allocation_per_datagram)
{
    tw_testing_alloc_count(); /* installs the counting allocator */
    struct dg server, client;
    dg_init(&server);
    dg_init(&client);
    server.echo = true;
    tw_udp_port *sp, *cp;
    listen_or_die(r, "127.0.0.1", NULL, &server, &sp);
    listen_or_die(r, "127.0.0.1", NULL, &client, &cp);
    tw_address to = host_of(sp);
    /* Warm up: the first round trip may size the reactor's tables. */
    cr_assert_eq(tw_udp_port_write(cp, "warm", 4, &to), 0);
    cr_assert(run_until(r, &client.received, 1));

    long before = tw_testing_alloc_count();
    for (int i = 0; i < 200; i++) {
        cr_assert_eq(tw_udp_port_write(cp, "ping", 4, &to), 0);
        if (i % 20 == 19)
            cr_assert(run_until(r, &client.received, i + 2));
    }
    cr_assert(run_until(r, &client.received, 201));
    long spent = tw_testing_alloc_count() - before;
    cr_assert_eq(spent, 0, "%ld allocations for 400 datagrams", spent);
    tw_udp_port_stop_listening(sp);
    tw_udp_port_stop_listening(cp);
}
