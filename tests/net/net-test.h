/* Helpers shared by the listening port and connector tests: counting
 * factories, an echo server, a ping client, raw sockets, and a loop that
 * iterates the reactor until a condition holds. Header-only (each test file
 * is its own executable). */
#ifndef NET_TEST_H
#define NET_TEST_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "twtest.h"

#include "net/net-internal.h"

/* What one test observed; reset by nt_factory_init. */
struct nt_counts {
    int built, refused, made, lost, freed, data_bytes;
    int start, stop, started_connecting, failed, client_lost;
    int lost_code, failed_code, client_lost_code;
    char got[256];
    size_t got_len;
};

struct nt_factory {
    tw_factory base;
    struct nt_counts n;
    bool refuse; /* build_protocol returns NULL */
    /* Optional hooks a test sets. */
    void (*on_started)(struct nt_factory *f, tw_connector *c);
    void (*on_failed)(struct nt_factory *f, tw_connector *c, tw_failure *reason);
    void (*on_lost)(struct nt_factory *f, tw_connector *c, tw_failure *reason);
    void (*on_made)(struct nt_factory *f, tw_protocol *p);
    void *user;
};

struct nt_proto {
    tw_protocol base;
    bool echo;          /* write back what arrives */
    const char *send;   /* written at connection_made */
    size_t close_after; /* lose the connection after this many bytes (0: never) */
};

static inline struct nt_factory *nt_f(tw_factory *f)
{
    return (struct nt_factory *)f;
}

static inline void nt_made(tw_protocol *p)
{
    struct nt_factory *f = nt_f(p->factory);
    struct nt_proto *np = (struct nt_proto *)p;
    f->n.made++;
    if (np->send)
        tw_transport_write(p->transport, np->send, strlen(np->send));
    if (f->on_made)
        f->on_made(f, p);
}

static inline void nt_data(tw_protocol *p, const char *data, size_t len)
{
    struct nt_factory *f = nt_f(p->factory);
    struct nt_proto *np = (struct nt_proto *)p;
    f->n.data_bytes += (int)len;
    if (f->n.got_len + len < sizeof f->n.got) {
        memcpy(f->n.got + f->n.got_len, data, len);
        f->n.got_len += len;
    }
    if (np->echo)
        tw_transport_write(p->transport, data, len);
    if (np->close_after && (size_t)f->n.data_bytes >= np->close_after)
        tw_transport_lose_connection(p->transport);
}

static inline void nt_lost(tw_protocol *p, tw_failure *reason)
{
    struct nt_factory *f = nt_f(p->factory);
    f->n.lost++;
    f->n.lost_code = tw_failure_code(reason);
}

static inline void nt_pfree(tw_protocol *p)
{
    nt_f(p->factory)->n.freed++;
}

static const tw_protocol_ops nt_proto_ops = {
    .connection_made = nt_made,
    .data_received = nt_data,
    .connection_lost = nt_lost,
    .free = nt_pfree,
};

static inline tw_protocol *nt_build(tw_factory *base, const tw_address *addr)
{
    struct nt_factory *f = nt_f(base);
    if (f->refuse) {
        f->n.refused++;
        return NULL;
    }
    f->n.built++;
    return tw_factory_build_default(base, addr);
}

static inline void nt_start(tw_factory *f)
{
    nt_f(f)->n.start++;
}

static inline void nt_stop(tw_factory *f)
{
    nt_f(f)->n.stop++;
}

static inline void nt_started(tw_factory *base, tw_connector *c)
{
    struct nt_factory *f = nt_f(base);
    f->n.started_connecting++;
    if (f->on_started)
        f->on_started(f, c);
}

static inline void nt_failed(tw_factory *base, tw_connector *c, tw_failure *reason)
{
    struct nt_factory *f = nt_f(base);
    f->n.failed++;
    f->n.failed_code = tw_failure_code(reason);
    if (f->on_failed)
        f->on_failed(f, c, reason);
}

static inline void nt_client_lost(tw_factory *base, tw_connector *c, tw_failure *reason)
{
    struct nt_factory *f = nt_f(base);
    f->n.client_lost++;
    f->n.client_lost_code = tw_failure_code(reason);
    if (f->on_lost)
        f->on_lost(f, c, reason);
}

static const tw_factory_ops nt_factory_ops = {
    .build_protocol = nt_build,
    .start_factory = nt_start,
    .stop_factory = nt_stop,
    .started_connecting = nt_started,
    .client_connection_failed = nt_failed,
    .client_connection_lost = nt_client_lost,
};

/* A protocol_ops copy per role would be neater; instead the builder's
 * default makes nt_proto and the test sets the role through these. */
static inline tw_protocol *nt_build_echo(tw_factory *base, const tw_address *addr)
{
    struct nt_proto *p = (struct nt_proto *)nt_build(base, addr);
    if (p)
        p->echo = true;
    return p ? &p->base : NULL;
}

static inline tw_protocol *nt_build_ping(tw_factory *base, const tw_address *addr)
{
    struct nt_proto *p = (struct nt_proto *)nt_build(base, addr);
    if (p) {
        p->send = "ping";
        p->close_after = 4;
    }
    return p ? &p->base : NULL;
}

static const tw_factory_ops nt_echo_ops = {
    .build_protocol = nt_build_echo,
    .start_factory = nt_start,
    .stop_factory = nt_stop,
};

static const tw_factory_ops nt_ping_ops = {
    .build_protocol = nt_build_ping,
    .start_factory = nt_start,
    .stop_factory = nt_stop,
    .started_connecting = nt_started,
    .client_connection_failed = nt_failed,
    .client_connection_lost = nt_client_lost,
};

static inline void nt_factory_init(struct nt_factory *f, const tw_factory_ops *ops)
{
    memset(f, 0, sizeof *f);
    tw_factory_init(&f->base, ops, &nt_proto_ops, sizeof(struct nt_proto), NULL);
}

/* Iterates r until *flag >= want or `timeout` seconds pass; returns whether
 * it got there. */
static inline bool nt_run_until(tw_reactor *r, const int *flag, int want, double timeout)
{
    double end = tw_reactor_seconds(r) + timeout;
    while (*flag < want && tw_reactor_seconds(r) < end)
        tw_reactor_iterate(r, 0.02);
    return *flag >= want;
}

static inline void nt_spin(tw_reactor *r, double seconds)
{
    double end = tw_reactor_seconds(r) + seconds;
    while (tw_reactor_seconds(r) < end)
        tw_reactor_iterate(r, 0.01);
}

static inline tw_address nt_ip(const char *ip, unsigned port)
{
    tw_address a;
    cr_assert_eq(tw_address_from_ip(&a, ip, port), 0);
    return a;
}

/* A Unix path unique to this test process. */
static inline tw_address nt_unix_path(const char *tag, char *path, size_t size)
{
    snprintf(path, size, "/tmp/twine-%s-%d.sock", tag, (int)getpid());
    unlink(path);
    tw_address a;
    cr_assert_eq(tw_address_from_unix(&a, path, strlen(path), false), 0);
    return a;
}

static inline tw_address nt_unix_abstract(const char *tag)
{
    char name[64];
    int n = snprintf(name, sizeof name, "twine-%s-%d", tag, (int)getpid());
    tw_address a;
    cr_assert_eq(tw_address_from_unix(&a, name, (size_t)n, true), 0);
    return a;
}

static inline bool nt_can_bind_v6(void)
{
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    tw_address a = nt_ip("::1", 0);
    bool ok = bind(fd, &a.u.sa, a.len) == 0;
    close(fd);
    return ok;
}

/* A blocking connect (loopback completes it without an accept), then
 * non-blocking. */
static inline int nt_raw_connect(const tw_address *a)
{
    int fd = socket(a->u.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0);
    cr_assert_eq(connect(fd, &a->u.sa, a->len), 0, "connect: %s", strerror(errno));
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

/* Reads from a non-blocking fd while iterating r, until `want` bytes or end
 * of file / error or timeout. Returns bytes read, or -1 at EOF/reset with
 * nothing read. */
static inline ssize_t nt_raw_read(tw_reactor *r, int fd, char *buf, size_t want, double timeout)
{
    size_t got = 0;
    double end = tw_reactor_seconds(r) + timeout;
    while (got < want && tw_reactor_seconds(r) < end) {
        tw_reactor_iterate(r, 0.01);
        ssize_t n = read(fd, buf + got, want - got);
        if (n > 0)
            got += (size_t)n;
        else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
            return got ? (ssize_t)got : -1;
    }
    return (ssize_t)got;
}

static inline int nt_count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    cr_assert_not_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

/* Stops a port and checks the deferred the contract promises. */
static inline void nt_stop_port(tw_listening_port *port)
{
    tw_deferred *d = tw_listening_port_stop(port);
    cr_assert_not_null(d);
    cr_assert(tw_deferred_called(d));
    tw_deferred_unref(d);
}

#endif
