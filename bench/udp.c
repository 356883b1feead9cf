/* UDP ping-pong on 127.0.0.1, Twine against libuv, in one process run.
 *
 * Two ports in one loop: the client sends a 64-byte datagram, the server
 * echoes it, the client sends the next when the echo arrives, ROUNDS times.
 * Both sides send with a synchronous call (tw_udp_port_write,
 * uv_udp_try_send) and read with the loop. Best of REPS runs each; prints
 * one JSON line with the time per round trip and the allocations Twine made
 * during the rounds. */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <twine/reactor.h>
#include <twine/testing.h>
#include <twine/udp.h>
#include <uv.h>

#define ROUNDS 20000
#define REPS   3

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char payload[64];

/* ---- Twine */

struct side {
    tw_datagram_protocol base;
    bool echo;
    int rounds;
    tw_address peer;
};

static void tw_received(tw_datagram_protocol *p, const char *data, size_t len,
                        const tw_address *from)
{
    struct side *s = (struct side *)p;
    if (s->echo) {
        tw_udp_port_write(p->port, data, len, from);
        return;
    }
    if (++s->rounds < ROUNDS)
        tw_udp_port_write(p->port, payload, sizeof payload, &s->peer);
}

static const tw_datagram_protocol_ops side_ops = {.datagram_received = tw_received};

static double run_twine(long *allocs)
{
    tw_reactor *r;
    if (tw_reactor_new(&r, &(tw_reactor_options){.backend = "epoll"}) != 0)
        return -1;
    struct side server = {.base.ops = &side_ops, .echo = true};
    struct side client = {.base.ops = &side_ops};
    tw_address lo;
    tw_address_from_ip(&lo, "127.0.0.1", 0);
    tw_udp_port *sp, *cp;
    if (tw_udp_listen(r, &lo, NULL, &server.base, &sp) ||
        tw_udp_listen(r, &lo, NULL, &client.base, &cp))
        return -1;
    tw_udp_port_get_host(sp, &client.peer);
    long before = tw_testing_alloc_count();
    double t0 = now();
    tw_udp_port_write(cp, payload, sizeof payload, &client.peer);
    while (client.rounds < ROUNDS)
        tw_reactor_iterate(r, 1.0);
    double t = now() - t0;
    *allocs = tw_testing_alloc_count() - before;
    tw_udp_port_stop_listening(sp);
    tw_udp_port_stop_listening(cp);
    tw_reactor_free(r);
    return t;
}

/* ---- libuv */

struct uv_side {
    uv_udp_t h;
    bool echo;
    int rounds;
    struct sockaddr_in peer;
};

static char uv_buffer[65536];

static void uv_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    *buf = uv_buf_init(uv_buffer, sizeof uv_buffer);
}

static void uv_recv(uv_udp_t *h, ssize_t n, const uv_buf_t *buf, const struct sockaddr *from,
                    unsigned flags)
{
    struct uv_side *s = (struct uv_side *)h;
    if (n <= 0 || !from)
        return;
    if (s->echo) {
        uv_buf_t b = uv_buf_init(buf->base, (unsigned)n);
        uv_udp_try_send(h, &b, 1, from);
        return;
    }
    if (++s->rounds < ROUNDS) {
        uv_buf_t b = uv_buf_init(payload, sizeof payload);
        uv_udp_try_send(h, &b, 1, (const struct sockaddr *)&s->peer);
    } else {
        uv_close((uv_handle_t *)h, NULL);
    }
}

static double run_libuv(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct uv_side server = {.echo = true}, client = {0};
    struct sockaddr_in lo;
    uv_ip4_addr("127.0.0.1", 0, &lo);
    uv_udp_init(&loop, &server.h);
    uv_udp_init(&loop, &client.h);
    uv_udp_bind(&server.h, (const struct sockaddr *)&lo, 0);
    uv_udp_bind(&client.h, (const struct sockaddr *)&lo, 0);
    int len = sizeof client.peer;
    uv_udp_getsockname(&server.h, (struct sockaddr *)&client.peer, &len);
    uv_udp_recv_start(&server.h, uv_alloc, uv_recv);
    uv_udp_recv_start(&client.h, uv_alloc, uv_recv);
    double t0 = now();
    uv_buf_t b = uv_buf_init(payload, sizeof payload);
    uv_udp_try_send(&client.h, &b, 1, (const struct sockaddr *)&client.peer);
    while (client.rounds < ROUNDS)
        uv_run(&loop, UV_RUN_ONCE);
    double t = now() - t0;
    uv_close((uv_handle_t *)&server.h, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return t;
}

int main(void)
{
    memset(payload, 'p', sizeof payload);
    double tw_best = 0, uv_best = 0;
    long allocs = 0;
    for (int i = 0; i < REPS; i++) {
        long a;
        double t = run_twine(&a);
        if (t < 0) {
            fprintf(stderr, "twine run failed\n");
            return 1;
        }
        if (tw_best == 0 || t < tw_best)
            tw_best = t, allocs = a;
        t = run_libuv();
        if (uv_best == 0 || t < uv_best)
            uv_best = t;
    }
    printf("{\"bench\":\"udp_pingpong\",\"rounds\":%d,\"twine_s\":%.4f,\"libuv_s\":%.4f,"
           "\"ratio\":%.3f,\"twine_us_per_round\":%.2f,\"twine_allocs\":%ld}\n",
           ROUNDS, tw_best, uv_best, tw_best / uv_best, tw_best / ROUNDS * 1e6, allocs);
    return 0;
}
