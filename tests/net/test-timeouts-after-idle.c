/* Connection timeouts armed after the loop has waited idle, on the real
 * clock: a protocol's idle timeout (tw_timeout, TimeoutMixin) started from
 * data_received, and the TLS server's handshake timeout started when a
 * connection is accepted. The peer is a plain socket on another thread that
 * acts only after IDLE, so the event that arms the timeout ends a long wait.
 * Each timeout must run no sooner than its period after that event
 * (CLOCK_MONOTONIC): a loop that kept the time from before its wait would
 * run it early by the idle time. */
#include "../tls/tls-test.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <twine/net.h>
#include <twine/policies.h>

#define IDLE_NS 2000000000ull
#define PERIOD  1.0
/* The wait asked of the loop: longer than IDLE, so the peer's move ends it. */
#define WAIT_BOUND 5.0

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Off the loop's thread: returns at `ns` (CLOCK_MONOTONIC) or later. This is
 * the idle time under test, not a way to wait for something. */
static void sleep_until(uint64_t ns)
{
    struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000u),
                          .tv_nsec = (long)(ns % 1000000000u)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        continue;
}

static int blocking_connect(const tw_address *a)
{
    int fd = socket(a->u.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, &a->u.sa, a->len) < 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/* The peer: at `at`, connects (unless connected already) and writes `send`
 * (if any); then reads until the server closes. */
struct peer {
    tw_address addr;
    int fd;
    uint64_t at;
    const char *send;
    bool ok;
};

static void *peer_main(void *arg)
{
    struct peer *pe = arg;
    sleep_until(pe->at);
    if (pe->fd < 0)
        pe->fd = blocking_connect(&pe->addr);
    if (pe->fd < 0)
        return NULL;
    if (pe->send && write(pe->fd, pe->send, strlen(pe->send)) != (ssize_t)strlen(pe->send))
        return NULL;
    char buf[4096];
    ssize_t n;
    while ((n = read(pe->fd, buf, sizeof buf)) > 0)
        continue;
    pe->ok = true;
    return NULL;
}

/* Iterates until *flag is set, in waits long enough that the peer's move
 * ends the first one (20 s bound). */
static bool run_until(tw_reactor *r, const int *flag)
{
    uint64_t give_up = now_ns() + 20 * 1000000000ull;
    while (!*flag && now_ns() < give_up)
        tw_reactor_iterate(r, WAIT_BOUND);
    return *flag;
}

static void check_not_early(uint64_t fired_ns, uint64_t event_ns, double period, const char *what)
{
    cr_assert(fired_ns >= event_ns + (uint64_t)(period * 1e9),
              "a %.1f s %s armed after an idle wait ran %.3f s after the event that armed it",
              period, what, (double)(fired_ns - event_ns) / 1e9);
}

/* ---- An idle timeout set from data_received */

struct idle_proto {
    tw_protocol base;
    tw_timeout idle;
};

struct idle_server {
    tw_factory f; /* first: a protocol finds its server through p->factory */
    int made, lost;
    uint64_t timed_out_ns;
};

static void idle_timed_out(tw_timeout *t)
{
    struct idle_server *s = (struct idle_server *)t->protocol->factory;
    s->timed_out_ns = now_ns();
    tw_transport_lose_connection(t->protocol->transport);
}

static void idle_made(tw_protocol *p)
{
    struct idle_proto *ip = (struct idle_proto *)p;
    ((struct idle_server *)p->factory)->made++;
    tw_timeout_init(&ip->idle, tw_reactor_clock(p->transport->reactor), p, idle_timed_out);
}

static void idle_data(tw_protocol *p, const char *data, size_t len)
{
    struct idle_proto *ip = (struct idle_proto *)p;
    (void)data;
    (void)len;
    if (tw_timeout_period(&ip->idle) == 0)
        cr_assert_eq(tw_timeout_set(&ip->idle, PERIOD), 0);
    else
        tw_timeout_reset(&ip->idle);
}

static void idle_lost(tw_protocol *p, tw_failure *reason)
{
    struct idle_proto *ip = (struct idle_proto *)p;
    (void)reason;
    tw_timeout_set(&ip->idle, 0);
    ((struct idle_server *)p->factory)->lost++;
}

static const tw_protocol_ops idle_ops = {
    .connection_made = idle_made,
    .data_received = idle_data,
    .connection_lost = idle_lost,
};

TW_REACTOR_TEST(timeouts_after_idle, idle_timeout_set_from_data_received)
{
    struct idle_server s = {0};
    tw_factory_init(&s.f, NULL, &idle_ops, sizeof(struct idle_proto), NULL);
    tw_address a;
    cr_assert_eq(tw_address_from_ip(&a, "127.0.0.1", 0), 0);
    tw_listening_port *port;
    cr_assert_eq(tw_listen_stream(r, &a, NULL, &s.f, &port), 0);

    /* Connected now; the first bytes come after IDLE. */
    struct peer pe = {.fd = -1, .send = "x"};
    cr_assert_eq(tw_listening_port_get_host(port, &pe.addr), 0);
    pe.fd = blocking_connect(&pe.addr);
    cr_assert_geq(pe.fd, 0, "connect: %s", strerror(errno));
    cr_assert(run_until(r, &s.made));
    pe.at = now_ns() + IDLE_NS;
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, peer_main, &pe), 0);

    cr_assert(run_until(r, &s.lost), "the idle timeout never ran");
    pthread_join(t, NULL);
    cr_assert(pe.ok, "the peer did not see the connection closed");
    close(pe.fd);
    cr_assert_neq(s.timed_out_ns, 0);
    check_not_early(s.timed_out_ns, pe.at, PERIOD, "idle timeout");
    tw_deferred_unref(tw_listening_port_stop(port));
}

/* ---- The TLS handshake timeout, started when the connection is accepted */

static uint64_t tls_lost_ns;

static void tls_lost(tw_protocol *p, tw_failure *reason)
{
    tls_lost_ns = now_ns();
    tt_lost(p, reason);
}

static const tw_protocol_ops tls_ops = {
    .connection_made = tt_made,
    .data_received = tt_data,
    .connection_lost = tls_lost,
    .handshake_completed = tt_hs,
    .free = tt_free,
};

TW_REACTOR_TEST(timeouts_after_idle, tls_handshake_timeout_started_at_accept)
{
    tt_pki *pki = tt_pki_new();
    tw_tls_context *sctx =
        tt_server_ctx(&pki->server, &(tw_tls_server_options){.handshake_timeout = PERIOD});
    tt_pair pp;
    tt_pair_init(&pp);
    tw_factory_init(&pp.side[0].f, NULL, &tls_ops, sizeof(tw_protocol), NULL);
    tt_listen(r, &pp, sctx);

    /* A client that connects after IDLE and never says hello. */
    struct peer pe = {.fd = -1, .addr = pp.addr, .at = now_ns() + IDLE_NS};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, peer_main, &pe), 0);

    cr_assert(run_until(r, &pp.side[0].lost), "the handshake timeout never ran");
    pthread_join(t, NULL);
    cr_assert(pe.ok, "the client did not connect, or did not see the connection closed");
    close(pe.fd);
    cr_assert_eq(pp.side[0].lost_code, TW_ETLS, "%s", pp.side[0].lost_msg);
    cr_assert(strstr(pp.side[0].lost_msg, "handshake timed out"), "%s", pp.side[0].lost_msg);
    check_not_early(tls_lost_ns, pe.at, PERIOD, "TLS handshake timeout");

    tw_reactor_iterate(r, 0);
    tw_deferred_unref(tw_listening_port_stop(pp.port));
    tw_tls_factory_cleanup(&pp.sf);
    tw_tls_context_unref(sctx);
    tt_pki_free(pki);
}
