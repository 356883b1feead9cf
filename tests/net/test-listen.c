/* Listening ports: TCP v4/v6 and Unix (file, abstract) accept and echo,
 * port 0, EADDRINUSE, backlog, Unix modes and lock files, factory start/stop,
 * refusal, reactor shutdown, adoption, interception, bad input, allocation
 * failure. */
#include <sys/stat.h>

#include "net-test.h"

/* Listens with an echo factory on addr, connects a raw client, checks the
 * echo, then closes both ends and waits for the server side to be lost. */
static void echo_roundtrip(tw_reactor *r, const tw_address *addr)
{
    struct nt_factory f;
    nt_factory_init(&f, &nt_echo_ops);
    tw_listening_port *port = NULL;
    int rc = tw_listen_stream(r, addr, NULL, &f.base, &port);
    cr_assert_eq(rc, 0, "listen: %s", tw_strerror(rc));
    cr_assert_eq(f.n.start, 1);

    tw_address host;
    cr_assert_eq(tw_listening_port_get_host(port, &host), 0);
    cr_assert_eq(host.u.sa.sa_family, addr->u.sa.sa_family);
    if (addr->u.sa.sa_family != AF_UNIX)
        cr_assert_neq(tw_address_port(&host), 0, "port 0 must report the real port");

    int fd = nt_raw_connect(&host);
    cr_assert_eq(write(fd, "hello", 5), 5);
    char buf[16];
    cr_assert_eq(nt_raw_read(r, fd, buf, 5, 5.0), 5);
    cr_assert_eq(memcmp(buf, "hello", 5), 0);
    cr_assert_eq(f.n.built, 1);
    cr_assert_eq(f.n.made, 1);

    close(fd);
    cr_assert(nt_run_until(r, &f.n.freed, 1, 5.0));
    cr_assert_eq(f.n.lost, 1);
    cr_assert_eq(f.n.lost_code, TW_ECONNDONE);
    nt_stop_port(port);
    cr_assert_eq(f.n.stop, 1);
}

TW_REACTOR_TEST(listen, tcp4_echo_port0)
{
    tw_address a = nt_ip("127.0.0.1", 0);
    echo_roundtrip(r, &a);
}

TW_REACTOR_TEST(listen, tcp6_echo_port0)
{
    if (!nt_can_bind_v6()) {
        twtest_end_reactor(r);
        cr_skip_test("::1 cannot be bound here");
    }
    tw_address a = nt_ip("::1", 0);
    echo_roundtrip(r, &a);
}

TW_REACTOR_TEST(listen, unix_file_echo)
{
    char path[108];
    tw_address a = nt_unix_path("echo", path, sizeof path);
    echo_roundtrip(r, &a);
    struct stat st;
    cr_assert_eq(stat(path, &st), -1, "stop removes the socket file");
}

TW_REACTOR_TEST(listen, unix_abstract_echo)
{
    tw_address a = nt_unix_abstract("echo");
    echo_roundtrip(r, &a);
}

TW_REACTOR_TEST(listen, tcp_addr_in_use)
{
    struct nt_factory f;
    nt_factory_init(&f, &nt_echo_ops);
    tw_address a = nt_ip("127.0.0.1", 0);
    tw_listening_port *p1 = NULL, *p2 = NULL;
    cr_assert_eq(tw_listen_stream(r, &a, NULL, &f.base, &p1), 0);
    tw_address host;
    tw_listening_port_get_host(p1, &host);
    cr_assert_eq(tw_listen_stream(r, &host, NULL, &f.base, &p2), TW_EADDRINUSE);
    cr_assert_null(p2);
    cr_assert_eq(f.n.start, 1, "a failed listen does not start the factory");
    nt_stop_port(p1);
    /* SO_REUSEADDR: the port is free again at once. */
    cr_assert_eq(tw_listen_stream(r, &host, NULL, &f.base, &p2), 0);
    nt_stop_port(p2);
    cr_assert_eq(f.n.stop, 2);
}

TW_REACTOR_TEST(listen, tcp4_and_tcp6_same_port)
{
    if (!nt_can_bind_v6()) {
        twtest_end_reactor(r);
        cr_skip_test("::1 cannot be bound here");
    }
    struct nt_factory f;
    nt_factory_init(&f, &nt_echo_ops);
    tw_address a6 = nt_ip("::", 0);
    tw_listening_port *p6 = NULL, *p4 = NULL;
    cr_assert_eq(tw_listen_stream(r, &a6, NULL, &f.base, &p6), 0);
    tw_address host;
    tw_listening_port_get_host(p6, &host);
    tw_address a4 = nt_ip("0.0.0.0", tw_address_port(&host));
    int rc = tw_listen_stream(r, &a4, NULL, &f.base, &p4);
    cr_assert_eq(rc, 0, "v6 ports are v6-only: %s", tw_strerror(rc));
    nt_stop_port(p4);
    nt_stop_port(p6);
}

TW_REACTOR_TEST(listen, unix_addr_in_use)
{
    struct nt_factory f;
    nt_factory_init(&f, &nt_echo_ops);
    char path[108];
    tw_address a = nt_unix_path("inuse", path, sizeof path);
    tw_listening_port *p1 = NULL, *p2 = NULL;
    cr_assert_eq(tw_listen_stream(r, &a, NULL, &f.base, &p1), 0);
    cr_assert_eq(tw_listen_stream(r, &a, NULL, &f.base, &p2), TW_EADDRINUSE);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0, "a failed listen leaves the other's file");
    nt_stop_port(p1);
}

/* Clients connect while the reactor does not run: the kernel completes at
 * most backlog + 1 handshakes (Linux), the rest wait for a SYN retry. */
static int connected_without_accept(tw_reactor *r, int backlog, int *fds, int n)
{
    struct nt_factory f;
    nt_factory_init(&f, &nt_echo_ops);
    tw_address a = nt_ip("127.0.0.1", 0);
    tw_listening_port *port = NULL;
    tw_listen_options o = {.backlog = backlog};
    cr_assert_eq(tw_listen_stream(r, &a, &o, &f.base, &port), 0);
    tw_address host;
    tw_listening_port_get_host(port, &host);
    for (int i = 0; i < n; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        connect(fds[i], &host.u.sa, host.len);
    }
    usleep(100 * 1000);
    int done = 0;
    for (int i = 0; i < n; i++) {
        struct pollfd pfd = {.fd = fds[i], .events = POLLOUT};
        int err = 0;
        socklen_t len = sizeof err;
        if (poll(&pfd, 1, 0) == 1 && getsockopt(fds[i], SOL_SOCKET, SO_ERROR, &err, &len) == 0 &&
            err == 0)
            done++;
    }
    /* Now let the port take what it can, and everyone goes. */
    nt_run_until(r, &f.n.made, done, 2.0);
    cr_assert_eq(f.n.made, done);
    for (int i = 0; i < n; i++)
        close(fds[i]);
    cr_assert(nt_run_until(r, &f.n.freed, f.n.made, 5.0));
    nt_stop_port(port);
    return done;
}

TW_REACTOR_TEST(listen, backlog)
{
    int fds[6];
    cr_assert_eq(connected_without_accept(r, 1, fds, 6), 2, "backlog 1 holds 2 connections");
    cr_assert_eq(connected_without_accept(r, 0, fds, 6), 6, "the default backlog holds 6");
}

TW_REACTOR_TEST(listen, unix_mode_applied)
{
    struct nt_factory f;
    nt_factory_init(&f, &nt_echo_ops);
    char path[108];
    tw_address a = nt_unix_path("mode", path, sizeof path);
    tw_listening_port *port = NULL;
    tw_listen_options o = {.mode = 0600};
    cr_assert_eq(tw_listen_stream(r, &a, &o, &f.base, &port), 0);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert(S_ISSOCK(st.st_mode));
    cr_assert_eq(st.st_mode & 07777, 0600);
    nt_stop_port(port);

    cr_assert_eq(tw_listen_stream(r, &a, NULL, &f.base, &port), 0);
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_mode & 07777, 0666, "default mode, whatever the umask");
    nt_stop_port(port);
}

TW_REACTOR_TEST(listen, unix_lockfile_removes_stale_socket)
{
    struct nt_factory f;
    nt_factory_init(&f, &nt_echo_ops);
    char path[108], lock[120];
    tw_address a = nt_unix_path("stale", path, sizeof path);
    snprintf(lock, sizeof lock, "%s.lock", path);
    /* A dead listener's leftover: bound, then closed without unlinking. */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_eq(bind(fd, &a.u.sa, a.len), 0);
    close(fd);

    tw_listening_port *port = NULL;
    cr_assert_eq(tw_listen_stream(r, &a, NULL, &f.base, &port), TW_EADDRINUSE,
                 "without the lock file the stale socket is left alone");
    tw_listen_options o = {.lockfile = true};
    int rc = tw_listen_stream(r, &a, &o, &f.base, &port);
    cr_assert_eq(rc, 0, "%s", tw_strerror(rc));
    struct stat st;
    cr_assert_eq(stat(lock, &st), 0, "the lock file exists while listening");

    int c = nt_raw_connect(&a);
    cr_assert(nt_run_until(r, &f.n.made, 1, 5.0));
    close(c);
    cr_assert(nt_run_until(r, &f.n.freed, 1, 5.0));
    nt_stop_port(port);
    cr_assert_eq(stat(path, &st), -1);
    cr_assert_eq(stat(lock, &st), -1, "stop removes the lock file");
}

TW_REACTOR_TEST(listen, unix_lockfile_refuses_live_listener)
{
    struct nt_factory f;
    nt_factory_init(&f, &nt_echo_ops);
    char path[108];
    tw_address a = nt_unix_path("live", path, sizeof path);
    tw_listen_options o = {.lockfile = true};
    tw_listening_port *p1 = NULL, *p2 = NULL;
    cr_assert_eq(tw_listen_stream(r, &a, &o, &f.base, &p1), 0);
    cr_assert_eq(tw_listen_stream(r, &a, &o, &f.base, &p2), TW_EADDRINUSE);
    /* The live one still has its socket file and serves. */
    int c = nt_raw_connect(&a);
    cr_assert(nt_run_until(r, &f.n.made, 1, 5.0));
    close(c);
    cr_assert(nt_run_until(r, &f.n.freed, 1, 5.0));
    nt_stop_port(p1);
    /* Released: a new listener takes it. */
    cr_assert_eq(tw_listen_stream(r, &a, &o, &f.base, &p2), 0);
    nt_stop_port(p2);
}

TW_REACTOR_TEST(listen, factory_started_once_for_two_ports)
{
    struct nt_factory f;
    nt_factory_init(&f, &nt_echo_ops);
    tw_address a = nt_ip("127.0.0.1", 0);
    tw_listening_port *p1 = NULL, *p2 = NULL;
    cr_assert_eq(tw_listen_stream(r, &a, NULL, &f.base, &p1), 0);
    cr_assert_eq(tw_listen_stream(r, &a, NULL, &f.base, &p2), 0);
    cr_assert_eq(f.n.start, 1);
    nt_stop_port(p1);
    cr_assert_eq(f.n.stop, 0);
    nt_stop_port(p2);
    cr_assert_eq(f.n.stop, 1);
}

TW_REACTOR_TEST(listen, build_protocol_null_refuses)
{
    struct nt_factory f;
    nt_factory_init(&f, &nt_echo_ops);
    f.refuse = true;
    tw_address a = nt_ip("127.0.0.1", 0);
    tw_listening_port *port = NULL;
    cr_assert_eq(tw_listen_stream(r, &a, NULL, &f.base, &port), 0);
    tw_address host;
    tw_listening_port_get_host(port, &host);
    int fd = nt_raw_connect(&host);
    char buf[4];
    cr_assert_eq(nt_raw_read(r, fd, buf, 1, 5.0), -1, "the client sees the close");
    cr_assert_eq(f.n.refused, 1);
    cr_assert_eq(f.n.made, 0);
    close(fd);
    nt_stop_port(port);
}

static tw_listening_port *stop_inside_port;
static tw_protocol *build_then_stop(tw_factory *base, const tw_address *addr)
{
    nt_stop_port(stop_inside_port);
    return nt_build_echo(base, addr);
}

TW_REACTOR_TEST(listen, stop_from_build_protocol)
{
    static const tw_factory_ops ops = {
        .build_protocol = build_then_stop, .start_factory = nt_start, .stop_factory = nt_stop};
    struct nt_factory f;
    nt_factory_init(&f, &ops);
    tw_address a = nt_ip("127.0.0.1", 0);
    cr_assert_eq(tw_listen_stream(r, &a, NULL, &f.base, &stop_inside_port), 0);
    tw_address host;
    tw_listening_port_get_host(stop_inside_port, &host);
    int c1 = nt_raw_connect(&host);
    int c2 = nt_raw_connect(&host);
    cr_assert(nt_run_until(r, &f.n.made, 1, 5.0));
    nt_spin(r, 0.05);
    cr_assert_eq(f.n.built, 1, "nothing accepted after the stop");
    cr_assert_eq(f.n.stop, 1);
    char buf[4];
    cr_assert_eq(write(c1, "abc", 3), 3);
    cr_assert_eq(nt_raw_read(r, c1, buf, 3, 5.0), 3, "the accepted connection lives on");
    close(c1);
    close(c2);
    cr_assert(nt_run_until(r, &f.n.freed, 1, 5.0));
}

static void stop_soon(void *arg)
{
    tw_reactor_stop(arg);
}

TW_REACTOR_TEST(listen, reactor_shutdown_closes_port_and_connections)
{
    struct nt_factory f;
    nt_factory_init(&f, &nt_echo_ops);
    tw_address a = nt_ip("127.0.0.1", 0);
    tw_listening_port *port = NULL;
    cr_assert_eq(tw_listen_stream(r, &a, NULL, &f.base, &port), 0);
    tw_address host;
    tw_listening_port_get_host(port, &host);
    int c = nt_raw_connect(&host);
    cr_assert(nt_run_until(r, &f.n.made, 1, 5.0));

    tw_delayed_call dc;
    cr_assert_eq(tw_call_later(tw_reactor_clock(r), 0.01, stop_soon, r, &dc), 0);
    cr_assert_eq(tw_reactor_run(r), 0);

    tw_reactor_state st;
    tw_reactor_get_state(r, &st);
    cr_assert_eq(st.handles, 0);
    cr_assert_eq(st.readers, 0);
    cr_assert_eq(f.n.lost, 1, "the connection was closed");
    cr_assert_eq(f.n.stop, 1, "the port was stopped");
    char buf[4];
    cr_assert_eq(read(c, buf, sizeof buf), 0, "the client sees the close");
    close(c);
    int again = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_eq(connect(again, &host.u.sa, host.len), -1, "nothing listens any more");
    close(again);
    /* The port's memory is still the caller's to free. */
    nt_stop_port(port);
    cr_assert_eq(f.n.stop, 1);
}

TW_REACTOR_TEST(listen, adopt)
{
    struct nt_factory f;
    nt_factory_init(&f, &nt_echo_ops);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    tw_address a = nt_ip("127.0.0.1", 0);
    cr_assert_eq(bind(lfd, &a.u.sa, a.len), 0);
    tw_listening_port *port = NULL;
    cr_assert_eq(tw_listen_adopt(r, lfd, &f.base, &port), TW_EINVAL, "not listening");
    cr_assert_eq(listen(lfd, 5), 0);
    cr_assert_eq(tw_listen_adopt(r, lfd, &f.base, &port), 0);
    tw_address host, mine;
    mine.len = sizeof mine.u;
    getsockname(lfd, &mine.u.sa, &mine.len);
    tw_listening_port_get_host(port, &host);
    cr_assert_eq(tw_address_port(&host), tw_address_port(&mine));
    close(lfd); /* the port works on its own duplicate */

    int c = nt_raw_connect(&host);
    cr_assert_eq(write(c, "hey", 3), 3);
    char buf[4];
    cr_assert_eq(nt_raw_read(r, c, buf, 3, 5.0), 3);
    close(c);
    cr_assert(nt_run_until(r, &f.n.freed, 1, 5.0));
    nt_stop_port(port);

    int pfd[2];
    cr_assert_eq(pipe(pfd), 0);
    cr_assert_eq(tw_listen_adopt(r, pfd[0], &f.base, &port), TW_EINVAL, "not a socket");
    close(pfd[0]);
    close(pfd[1]);
    int ufd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    cr_assert_eq(tw_listen_adopt(r, ufd, &f.base, &port), TW_EINVAL, "not a stream socket");
    close(ufd);
    cr_assert_eq(f.n.start, 1);
    cr_assert_eq(f.n.stop, 1);
}

TW_REACTOR_TEST(listen, bad_input)
{
    struct nt_factory f;
    nt_factory_init(&f, &nt_echo_ops);
    tw_address a = nt_ip("127.0.0.1", 0);
    tw_listening_port *port = NULL;
    tw_address none = {0};
    cr_assert_eq(tw_listen_stream(r, NULL, NULL, &f.base, &port), TW_EINVAL);
    cr_assert_eq(tw_listen_stream(r, &none, NULL, &f.base, &port), TW_EINVAL);
    cr_assert_eq(tw_listen_stream(r, &a, NULL, NULL, &port), TW_EINVAL);
    cr_assert_eq(tw_listen_stream(r, &a, NULL, &f.base, NULL), TW_EINVAL);
    tw_listen_options neg = {.backlog = -1}, mode = {.mode = 010000};
    cr_assert_eq(tw_listen_stream(r, &a, &neg, &f.base, &port), TW_EINVAL);
    cr_assert_eq(tw_listen_stream(r, &a, &mode, &f.base, &port), TW_EINVAL);
    tw_address bad = a;
    bad.u.sa.sa_family = AF_APPLETALK;
    cr_assert_eq(tw_listen_stream(r, &bad, NULL, &f.base, &port), TW_EINVAL);
    cr_assert_null(port);
    cr_assert_eq(f.n.start, 0);
    cr_assert_null(tw_listening_port_stop(NULL));
    cr_assert_eq(tw_listening_port_get_host(NULL, &a), TW_EINVAL);
}

struct fake_listen {
    int calls;
    const tw_address *addr;
    tw_factory *factory;
};

static int fake_listen(void *arg, tw_reactor *r, const tw_address *addr,
                       const tw_listen_options *opts, tw_factory *factory, tw_listening_port **out)
{
    struct fake_listen *fl = arg;
    fl->calls++;
    fl->addr = addr;
    fl->factory = factory;
    return TW_EACCES;
}

TW_REACTOR_TEST(listen, intercepted_by_hooks_but_not_adopt)
{
    struct fake_listen fl = {0};
    struct tw__net_hooks hooks = {.listen = fake_listen, .arg = &fl};
    tw__reactor_set_net_hooks(r, &hooks);
    struct nt_factory f;
    nt_factory_init(&f, &nt_echo_ops);
    tw_address a = nt_ip("127.0.0.1", 0);
    tw_listening_port *port = NULL;
    cr_assert_eq(tw_listen_stream(r, &a, NULL, &f.base, &port), TW_EACCES);
    cr_assert_eq(fl.calls, 1);
    cr_assert_eq(fl.addr, &a);
    cr_assert_eq(fl.factory, &f.base);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_eq(bind(lfd, &a.u.sa, a.len), 0);
    cr_assert_eq(listen(lfd, 5), 0);
    cr_assert_eq(tw_listen_adopt(r, lfd, &f.base, &port), 0);
    cr_assert_eq(fl.calls, 1, "adopt is never intercepted");
    close(lfd);
    nt_stop_port(port);
    tw__reactor_set_net_hooks(r, NULL);
}

static void alloc_loop(tw_reactor *r, const tw_address *a, const tw_listen_options *o)
{
    struct nt_factory f;
    nt_factory_init(&f, &nt_echo_ops);
    /* The first listen opens the process's reserve descriptor: not a leak. */
    tw_listening_port *port = NULL;
    cr_assert_eq(tw_listen_stream(r, a, o, &f.base, &port), 0);
    nt_stop_port(port);
    int fds = nt_count_fds();
    tw_testing_fail_alloc_after(0);
    tw_testing_fail_alloc_off();
    long live = tw_testing_alloc_live();
    int rc = 0;
    long n;
    for (n = 0; n < 100; n++) {
        tw_testing_fail_alloc_after(n);
        rc = tw_listen_stream(r, a, o, &f.base, &port);
        tw_testing_fail_alloc_off();
        if (rc == 0)
            break;
        cr_assert_eq(rc, TW_ENOMEM, "n=%ld: %s", n, tw_strerror(rc));
        cr_assert_eq(nt_count_fds(), fds, "n=%ld: descriptor leaked", n);
        cr_assert_eq(tw_testing_alloc_live(), live, "n=%ld: memory leaked", n);
    }
    cr_assert_eq(rc, 0);
    cr_assert_eq(f.n.start, 2);
    nt_stop_port(port);
    cr_assert_eq(f.n.stop, 2);
    cr_assert_eq(nt_count_fds(), fds);
}

TW_REACTOR_TEST(listen, allocation_failure_tcp)
{
    tw_address a = nt_ip("127.0.0.1", 0);
    alloc_loop(r, &a, NULL);
}

TW_REACTOR_TEST(listen, allocation_failure_unix_lockfile)
{
    char path[108];
    tw_address a = nt_unix_path("alloc", path, sizeof path);
    tw_listen_options o = {.lockfile = true, .mode = 0640};
    alloc_loop(r, &a, &o);
    struct stat st;
    cr_assert_eq(stat(path, &st), -1);
}
