/* Shared by tests/net/test-stream-*.c: socket pairs made with plain
 * syscalls (listening ports are not under test here), a recording protocol
 * and a factory that hands it out, and a bounded "run until". */
#ifndef TEST_STREAM_HELPERS_H
#define TEST_STREAM_HELPERS_H

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "twtest.h"
#include <twine/net.h>

static inline double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Iterates r until cond holds (5 s bound; fails the test after). */
#define RUN_UNTIL(r, cond)                                                                         \
    do {                                                                                           \
        double end_ = now_s() + 5;                                                                 \
        while (!(cond) && now_s() < end_)                                                          \
            tw_reactor_iterate((r), 0.005);                                                        \
        cr_assert((cond), "timed out waiting for %s", #cond);                                      \
    } while (0)

/* Iterates r n times without waiting long. */
static inline void spin(tw_reactor *r, int n)
{
    for (int i = 0; i < n; i++)
        tw_reactor_iterate(r, 0.001);
}

/* A connected pair: fds[0] for the transport, fds[1] the test's peer. */
static inline void unix_pair(int fds[2])
{
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
}

/* A loopback TCP pair; returns false (and makes nothing) when the family's
 * loopback is not available (no ::1). */
static inline bool tcp_pair_family(int fds[2], int family)
{
    int l = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (l < 0)
        return false;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t sl;
    if (family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        in->sin_family = AF_INET;
        in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sl = sizeof *in;
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        in6->sin6_family = AF_INET6;
        in6->sin6_addr = in6addr_loopback;
        sl = sizeof *in6;
    }
    if (bind(l, (struct sockaddr *)&ss, sl) < 0 || listen(l, 4) < 0) {
        close(l);
        return false;
    }
    sl = sizeof ss;
    cr_assert_eq(getsockname(l, (struct sockaddr *)&ss, &sl), 0);
    int c = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(c, 0);
    cr_assert_eq(connect(c, (struct sockaddr *)&ss, sl), 0);
    int a = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    cr_assert_geq(a, 0);
    close(l);
    fds[0] = a;
    fds[1] = c;
    return true;
}

static inline void tcp_pair(int fds[2])
{
    cr_assert(tcp_pair_family(fds, AF_INET), "no IPv4 loopback");
}

static inline void set_nonblock(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/* Reads what is there now (the peer's socket is non-blocking) into buf,
 * at most cap bytes. Returns bytes read, 0 at end of file, -1 if nothing yet,
 * -errno... as -2 for any other error. */
static inline ssize_t peer_read(int fd, void *buf, size_t cap)
{
    ssize_t n = recv(fd, buf, cap, MSG_DONTWAIT);
    if (n >= 0)
        return n;
    return (errno == EAGAIN || errno == EWOULDBLOCK) ? -1 : -2;
}

static inline void peer_write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        cr_assert_gt(n, 0, "peer write: %s", strerror(errno));
        p += n;
        len -= (size_t)n;
    }
}

/* ---- A recording protocol */

enum rec_action { ACT_NONE, ACT_LOSE, ACT_ABORT, ACT_PAUSE, ACT_LOSE_WRITE };

struct rec {
    tw_protocol base;
    int made, lost, read_lost, write_lost, freed, fds_got;
    int data_calls;
    int lost_code;
    char lost_msg[256];
    char got[1 << 16];
    size_t got_len;
    size_t total; /* all bytes received, also past got's capacity */
    bool echo;
    enum rec_action on_made, on_data, on_read_lost;
    bool lost_inside_close; /* connection_lost ran while closing was on the stack */
    int last_fd;
    tw_transport *t; /* kept with a reference when hold is set */
    bool hold;
};

static bool rec_closing; /* set by tests around their close calls */

static inline void rec_act(struct rec *x, enum rec_action a)
{
    tw_transport *t = x->base.transport;
    rec_closing = true;
    switch (a) {
    case ACT_LOSE:
        cr_assert_eq(tw_transport_lose_connection(t), 0);
        break;
    case ACT_ABORT:
        cr_assert_eq(tw_transport_abort_connection(t), 0);
        break;
    case ACT_PAUSE:
        cr_assert_eq(tw_transport_pause_producing(t), 0);
        break;
    case ACT_LOSE_WRITE:
        cr_assert_eq(tw_transport_lose_write_connection(t), 0);
        break;
    case ACT_NONE:
        break;
    }
    rec_closing = false;
}

static inline void rec_made(tw_protocol *p)
{
    struct rec *x = (struct rec *)p;
    x->made++;
    if (x->hold)
        x->t = tw_transport_ref(p->transport);
    rec_act(x, x->on_made);
}

static inline void rec_data(tw_protocol *p, const char *data, size_t len)
{
    struct rec *x = (struct rec *)p;
    cr_assert_eq(x->lost, 0, "data after connection_lost");
    x->data_calls++;
    size_t room = sizeof x->got - x->got_len;
    size_t n = len < room ? len : room;
    memcpy(x->got + x->got_len, data, n);
    x->got_len += n;
    x->total += len;
    if (x->echo)
        cr_assert_eq(tw_transport_write(p->transport, data, len), 0);
    rec_act(x, x->on_data);
}

static inline void rec_lost(tw_protocol *p, tw_failure *reason)
{
    struct rec *x = (struct rec *)p;
    x->lost++;
    x->lost_inside_close |= rec_closing;
    x->lost_code = tw_failure_code(reason);
    snprintf(x->lost_msg, sizeof x->lost_msg, "%s", tw_failure_message(reason));
    cr_assert_not_null(p->transport, "transport cleared before connection_lost");
}

static inline void rec_read_lost(tw_protocol *p)
{
    struct rec *x = (struct rec *)p;
    x->read_lost++;
    rec_act(x, x->on_read_lost);
}

static inline void rec_write_lost(tw_protocol *p)
{
    ((struct rec *)p)->write_lost++;
}

static inline void rec_fd(tw_protocol *p, int fd)
{
    struct rec *x = (struct rec *)p;
    x->fds_got++;
    x->last_fd = fd;
}

static inline void rec_free(tw_protocol *p)
{
    struct rec *x = (struct rec *)p;
    cr_assert(x->made == 0 || x->lost == 1, "free before connection_lost");
    x->freed++;
}

static const tw_protocol_ops rec_ops = {
    .connection_made = rec_made,
    .data_received = rec_data,
    .connection_lost = rec_lost,
    .fd_received = rec_fd,
    .free = rec_free,
};

/* Half-closeable. */
static const tw_protocol_ops rec_half_ops = {
    .connection_made = rec_made,
    .data_received = rec_data,
    .connection_lost = rec_lost,
    .read_connection_lost = rec_read_lost,
    .write_connection_lost = rec_write_lost,
    .fd_received = rec_fd,
    .free = rec_free,
};

/* The factory hands out f->data, a struct rec the test owns. */
static inline tw_protocol *rec_build(tw_factory *f, const tw_address *addr)
{
    (void)addr;
    return f->data;
}

static const tw_factory_ops rec_factory_ops = {.build_protocol = rec_build};

/* Adopts fds[0] (and closes the test's copy) for x. */
static inline void rec_adopt(tw_reactor *r, int fd, struct rec *x, const tw_protocol_ops *ops)
{
    tw_protocol_init(&x->base, ops ? ops : &rec_ops);
    tw_factory f;
    tw_factory_init(&f, &rec_factory_ops, NULL, 0, x);
    tw_protocol *p = NULL;
    int rc = tw_connection_adopt(r, fd, &f, &p);
    cr_assert_eq(rc, 0, "adopt: %s", tw_strerror(rc));
    cr_assert_eq(p, &x->base);
    cr_assert_eq(x->made, 1);
    cr_assert_eq(p->factory, &f);
    p->factory = NULL; /* f dies here */
    close(fd);
}

#endif
