/* Stream connections: reading, writing, closing, addresses, options,
 * descriptor passing, allocation. Each test uses a real socket pair: one end
 * adopted by a transport, the other driven by the test. */
#include <netinet/tcp.h>
#include <stdlib.h>

#include "net/stream.h"
#include "test-stream-helpers.h"

/* ---- Round trips */

static void echo_round_trip(tw_reactor *r, int fds[2])
{
    struct rec x = {.echo = true};
    rec_adopt(r, fds[0], &x, NULL);
    set_nonblock(fds[1]);
    peer_write_all(fds[1], "hello", 5);
    char buf[16];
    ssize_t got = 0;
    RUN_UNTIL(r, x.got_len == 5);
    /* The echo is in the peer's socket now. */
    double end = now_s() + 5;
    while (got < 5 && now_s() < end) {
        ssize_t n = peer_read(fds[1], buf + got, sizeof buf - (size_t)got);
        if (n > 0)
            got += n;
        tw_reactor_iterate(r, 0.001);
    }
    cr_assert_eq(got, 5);
    cr_assert_eq(memcmp(buf, "hello", 5), 0);
    cr_assert_eq(memcmp(x.got, "hello", 5), 0);
    close(fds[1]);
    RUN_UNTIL(r, x.lost == 1);
    cr_assert_eq(x.lost_code, TW_ECONNDONE, "%s", tw_strerror(x.lost_code));
    cr_assert_eq(x.freed, 1);
    cr_assert_null(x.base.transport);
}

TW_REACTOR_TEST(stream_io, echo_round_trip_unix)
{
    int fds[2];
    unix_pair(fds);
    echo_round_trip(r, fds);
}

TW_REACTOR_TEST(stream_io, echo_round_trip_tcp)
{
    int fds[2];
    tcp_pair(fds);
    echo_round_trip(r, fds);
}

/* Reads what the peer end gets until end of file or `want` bytes;
 * iterating r meanwhile. Returns a malloc'd buffer. */
static char *drain_peer(tw_reactor *r, int fd, size_t want, size_t *len, bool *eof)
{
    size_t cap = want + 1, n = 0;
    char *buf = malloc(cap);
    cr_assert_not_null(buf);
    *eof = false;
    double end = now_s() + 10;
    while (now_s() < end) {
        tw_reactor_iterate(r, 0);
        ssize_t k = peer_read(fd, buf + n, cap - n);
        if (k == 0 || k == -2) {
            *eof = true;
            break;
        }
        if (k > 0) {
            n += (size_t)k;
            if (n >= want)
                break;
            continue;
        }
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        poll(&pf, 1, 1);
    }
    *len = n;
    return buf;
}

static void write_seq_made(tw_protocol *p)
{
    struct iovec iov[3] = {{"one ", 4}, {"", 0}, {"two three", 9}};
    cr_assert_eq(tw_transport_write_sequence(p->transport, iov, 3), 0);
    cr_assert_eq(tw_transport_write_sequence(p->transport, iov, 0), 0);
    cr_assert_eq(tw_transport_write_sequence(p->transport, NULL, 1), TW_EINVAL);
    struct iovec bad = {NULL, 3};
    cr_assert_eq(tw_transport_write_sequence(p->transport, &bad, 1), TW_EINVAL);
    cr_assert_eq(tw_transport_write(p->transport, NULL, 2), TW_EINVAL);
    cr_assert_eq(tw_transport_lose_connection(p->transport), 0);
}

TW_REACTOR_TEST(stream_io, write_sequence_in_order)
{
    int fds[2];
    unix_pair(fds);
    static const tw_protocol_ops ops = {.connection_made = write_seq_made};
    tw_protocol p;
    tw_protocol_init(&p, &ops);
    tw_factory f;
    tw_factory_init(&f, &rec_factory_ops, NULL, 0, &p);
    cr_assert_eq(tw_connection_adopt(r, fds[0], &f, NULL), 0);
    close(fds[0]);
    size_t len;
    bool eof;
    char *got = drain_peer(r, fds[1], 64, &len, &eof);
    cr_assert(eof);
    cr_assert_eq(len, 13);
    cr_assert_eq(memcmp(got, "one two three", 13), 0);
    free(got);
    close(fds[1]);
}

/* ---- Zero-copy */

static void count_release(void *arg)
{
    (*(int *)arg)++;
}

TW_REACTOR_TEST(stream_io, zerocopy_released_once_direct_and_queued)
{
    int fds[2];
    tcp_pair(fds);
    struct rec x = {.hold = true};
    rec_adopt(r, fds[0], &x, NULL);
    set_nonblock(fds[1]);
    static char big[1 << 20];
    memset(big, 'z', sizeof big);
    int small_rel = 0, big_rel = 0, empty_rel = 0;
    /* Goes to the kernel whole: released at once. With io_uring's
     * completions every write queues and leaves with the next submission:
     * released once that has completed. */
    cr_assert_eq(tw_transport_write_zerocopy(x.t, "abc", 3, count_release, &small_rel), 0);
    if (strcmp(tw_reactor_backend_name(r), "io_uring") == 0)
        RUN_UNTIL(r, small_rel == 1);
    cr_assert_eq(small_rel, 1);
    cr_assert_eq(tw_transport_write_zerocopy(x.t, "", 0, count_release, &empty_rel), 0);
    cr_assert_eq(empty_rel, 1);
    /* More than the kernel takes: queued, released once written. */
    for (int i = 0; i < 8; i++)
        cr_assert_eq(tw_transport_write_zerocopy(x.t, big, sizeof big, count_release, &big_rel), 0);
    cr_assert_gt(tw_transport_write_buffer_size(x.t), 0);
    cr_assert_lt(big_rel, 8);
    size_t len;
    bool eof;
    char *got = drain_peer(r, fds[1], 3 + 8 * sizeof big, &len, &eof);
    RUN_UNTIL(r, big_rel == 8);
    cr_assert_eq(len, 3 + 8 * sizeof big);
    cr_assert_eq(small_rel, 1);
    free(got);
    /* Dropped by abort: released once, too. */
    int drop_rel = 0;
    for (int i = 0; i < 8; i++)
        tw_transport_write_zerocopy(x.t, big, sizeof big, count_release, &drop_rel);
    cr_assert_eq(tw_transport_abort_connection(x.t), 0);
    cr_assert_eq(drop_rel, 8, "dropped bytes are released by the abort");
    RUN_UNTIL(r, x.lost == 1);
    cr_assert_eq(x.lost_code, TW_ECONNABORTED);
    cr_assert_eq(drop_rel, 8);
    cr_assert_eq(tw_transport_write_zerocopy(x.t, big, 1, count_release, &drop_rel), TW_ENOTCONN);
    cr_assert_eq(drop_rel, 8, "release ran for a refused write");
    tw_transport_unref(x.t);
    close(fds[1]);
}

/* ---- Big writes to a slow reader */

static char *pattern(size_t n)
{
    char *b = malloc(n);
    cr_assert_not_null(b);
    for (size_t i = 0; i < n; i++)
        b[i] = (char)((i * 7 + i / 251) & 0xff);
    return b;
}

static void slow_reader(tw_reactor *r, int fds[2])
{
    const size_t total = 4u << 20;
    char *data = pattern(total);
    struct rec x = {.hold = true};
    rec_adopt(r, fds[0], &x, NULL);
    set_nonblock(fds[1]);
    /* Unequal pieces, some through write_sequence. */
    size_t off = 0, piece = 1;
    while (off < total) {
        size_t n = piece < total - off ? piece : total - off;
        if (piece % 3 == 0) {
            struct iovec iov[2] = {{data + off, n / 2}, {data + off + n / 2, n - n / 2}};
            cr_assert_eq(tw_transport_write_sequence(x.t, iov, 2), 0);
        } else {
            cr_assert_eq(tw_transport_write(x.t, data + off, n), 0);
        }
        off += n;
        piece = piece * 3 + 1;
        if (piece > 300000)
            piece = 1;
    }
    cr_assert_eq(tw_transport_lose_connection(x.t), 0);
    cr_assert_eq(tw_transport_write(x.t, "x", 1), TW_ENOTCONN);
    /* The reader takes small bites. */
    char *got = malloc(total + 1);
    size_t n = 0;
    bool eof = false;
    double end = now_s() + 20;
    while (!eof && now_s() < end) {
        tw_reactor_iterate(r, 0);
        ssize_t k = peer_read(fds[1], got + n, 4096 < total + 1 - n ? 4096 : total + 1 - n);
        if (k == 0 || k == -2)
            eof = true;
        else if (k > 0)
            n += (size_t)k;
    }
    cr_assert(eof);
    cr_assert_eq(n, total);
    cr_assert_eq(memcmp(got, data, total), 0, "bytes out of order or corrupted");
    RUN_UNTIL(r, x.lost == 1);
    cr_assert_eq(x.lost_code, TW_ECONNDONE);
    cr_assert_not(x.lost_inside_close);
    tw_transport_unref(x.t);
    free(got);
    free(data);
    close(fds[1]);
}

TW_REACTOR_TEST(stream_io, four_mib_to_slow_reader_tcp)
{
    int fds[2];
    tcp_pair(fds);
    slow_reader(r, fds);
}

TW_REACTOR_TEST(stream_io, four_mib_to_slow_reader_unix)
{
    int fds[2];
    unix_pair(fds);
    slow_reader(r, fds);
}

/* ---- Closing */

TW_REACTOR_TEST(stream_io, lose_connection_flushes_and_reports_later)
{
    int fds[2];
    tcp_pair(fds);
    struct rec x = {.hold = true};
    rec_adopt(r, fds[0], &x, NULL);
    char *data = pattern(8 << 20);
    cr_assert_eq(tw_transport_write(x.t, data, 8 << 20), 0);
    cr_assert_gt(tw_transport_write_buffer_size(x.t), 0);
    rec_closing = true;
    cr_assert_eq(tw_transport_lose_connection(x.t), 0);
    cr_assert_eq(tw_transport_lose_connection(x.t), 0, "closing twice is harmless");
    cr_assert_eq(tw_transport_abort_connection(x.t), 0);
    rec_closing = false;
    cr_assert_eq(x.lost, 0, "connection_lost inside the close call");
    set_nonblock(fds[1]);
    size_t len;
    bool eof;
    char *got = drain_peer(r, fds[1], 8 << 20, &len, &eof);
    cr_assert(eof);
    /* abort after lose_connection dropped what was still queued. */
    cr_assert_lt(len, 8 << 20);
    cr_assert_eq(memcmp(got, data, len), 0);
    RUN_UNTIL(r, x.lost == 1);
    cr_assert_eq(x.lost_code, TW_ECONNABORTED);
    free(got);
    free(data);
    tw_transport_unref(x.t);
    close(fds[1]);
}

TW_REACTOR_TEST(stream_io, lose_connection_delivers_everything)
{
    int fds[2];
    unix_pair(fds);
    struct rec x = {.hold = true};
    rec_adopt(r, fds[0], &x, NULL);
    char *data = pattern(3 << 20);
    cr_assert_eq(tw_transport_write(x.t, data, 3 << 20), 0);
    cr_assert_gt(tw_transport_write_buffer_size(x.t), 0);
    rec_closing = true;
    cr_assert_eq(tw_transport_lose_connection(x.t), 0);
    rec_closing = false;
    set_nonblock(fds[1]);
    size_t len;
    bool eof;
    char *got = drain_peer(r, fds[1], 4 << 20, &len, &eof);
    cr_assert(eof);
    cr_assert_eq(len, 3 << 20);
    cr_assert_eq(memcmp(got, data, len), 0);
    RUN_UNTIL(r, x.lost == 1);
    cr_assert_eq(x.lost_code, TW_ECONNDONE);
    cr_assert_not(x.lost_inside_close);
    /* Every call on a lost transport is refused. */
    tw_address a;
    cr_assert_eq(tw_transport_write(x.t, "x", 1), TW_ENOTCONN);
    cr_assert_eq(tw_transport_get_peer(x.t, &a), TW_ENOTCONN);
    cr_assert_eq(tw_transport_get_host(x.t, &a), TW_ENOTCONN);
    cr_assert_eq(tw_transport_pause_producing(x.t), TW_ENOTCONN);
    cr_assert_eq(tw_transport_resume_producing(x.t), TW_ENOTCONN);
    cr_assert_eq(tw_transport_lose_write_connection(x.t), TW_ENOTCONN);
    cr_assert_eq(tw_transport_set_write_buffer_limits(x.t, 10, 1), TW_ENOTCONN);
    cr_assert_eq(tw_transport_unregister_producer(x.t), TW_ENOTCONN);
    cr_assert_eq(tw_transport_write_buffer_size(x.t), 0);
    cr_assert_eq(tw_transport_lose_connection(x.t), 0);
    int one = 0;
    cr_assert_eq(tw_transport_send_fds(x.t, &one, 1), TW_ENOTCONN);
    cr_assert_eq(x.lost, 1);
    cr_assert_eq(x.freed, 1);
    free(got);
    free(data);
    tw_transport_unref(x.t);
    close(fds[1]);
}

TW_REACTOR_TEST(stream_io, abort_drops_the_queue)
{
    int fds[2];
    tcp_pair(fds);
    struct rec x = {.hold = true};
    rec_adopt(r, fds[0], &x, NULL);
    char *data = pattern(8 << 20);
    cr_assert_eq(tw_transport_write(x.t, data, 8 << 20), 0);
    size_t queued = tw_transport_write_buffer_size(x.t);
    cr_assert_gt(queued, 0);
    rec_closing = true;
    cr_assert_eq(tw_transport_abort_connection(x.t), 0);
    rec_closing = false;
    cr_assert_eq(tw_transport_write_buffer_size(x.t), 0);
    cr_assert_eq(tw_transport_write(x.t, "x", 1), TW_ENOTCONN);
    cr_assert_eq(x.lost, 0);
    RUN_UNTIL(r, x.lost == 1);
    cr_assert_eq(x.lost_code, TW_ECONNABORTED);
    cr_assert_not(x.lost_inside_close);
    set_nonblock(fds[1]);
    size_t len;
    bool eof;
    char *got = drain_peer(r, fds[1], 8 << 20, &len, &eof);
    cr_assert(eof);
    cr_assert_eq(len, (8u << 20) - queued, "the queued part must not arrive");
    free(got);
    free(data);
    tw_transport_unref(x.t);
    close(fds[1]);
}

/* ---- Half-close */

TW_REACTOR_TEST(stream_io, peer_eof_without_half_close_loses)
{
    int fds[2];
    tcp_pair(fds);
    struct rec x = {0};
    rec_adopt(r, fds[0], &x, NULL);
    peer_write_all(fds[1], "last", 4);
    shutdown(fds[1], SHUT_WR);
    RUN_UNTIL(r, x.lost == 1);
    cr_assert_eq(x.got_len, 4);
    cr_assert_eq(x.lost_code, TW_ECONNDONE);
    close(fds[1]);
}

/* The answer to bytes that came with the peer's end (read in the same
 * wakeup, or the same batch of completions) still goes out before the close. */
TW_REACTOR_TEST(stream_io, answer_to_the_last_bytes_goes_out_before_the_close)
{
    int fds[2];
    tcp_pair(fds);
    struct rec x = {.echo = true};
    rec_adopt(r, fds[0], &x, NULL);
    peer_write_all(fds[1], "hello", 5);
    shutdown(fds[1], SHUT_WR);
    RUN_UNTIL(r, x.lost == 1);
    char buf[16];
    size_t n = 0;
    ssize_t k;
    while ((k = recv(fds[1], buf + n, sizeof buf - n, 0)) > 0)
        n += (size_t)k;
    cr_assert_eq(k, 0, "then the end");
    cr_assert_eq(n, 5, "the echo arrived (%zu bytes)", n);
    cr_assert_eq(memcmp(buf, "hello", 5), 0);
    close(fds[1]);
}

TW_REACTOR_TEST(stream_io, peer_eof_with_half_close_keeps_writing)
{
    int fds[2];
    unix_pair(fds);
    struct rec x = {.hold = true};
    rec_adopt(r, fds[0], &x, &rec_half_ops);
    shutdown(fds[1], SHUT_WR);
    RUN_UNTIL(r, x.read_lost == 1);
    spin(r, 5);
    cr_assert_eq(x.lost, 0);
    cr_assert_eq(x.read_lost, 1);
    cr_assert_eq(tw_transport_write(x.t, "bye", 3), 0);
    cr_assert_eq(tw_transport_lose_connection(x.t), 0);
    set_nonblock(fds[1]);
    size_t len;
    bool eof;
    char *got = drain_peer(r, fds[1], 16, &len, &eof);
    cr_assert(eof);
    cr_assert_eq(len, 3);
    cr_assert_eq(memcmp(got, "bye", 3), 0);
    RUN_UNTIL(r, x.lost == 1);
    cr_assert_eq(x.lost_code, TW_ECONNDONE);
    free(got);
    tw_transport_unref(x.t);
    close(fds[1]);
}

static void lose_write_case(tw_reactor *r, const tw_protocol_ops *ops)
{
    int fds[2];
    tcp_pair(fds);
    struct rec x = {.hold = true};
    rec_adopt(r, fds[0], &x, ops);
    cr_assert_eq(tw_transport_write(x.t, "data", 4), 0);
    cr_assert_eq(tw_transport_lose_write_connection(x.t), 0);
    cr_assert_eq(tw_transport_lose_write_connection(x.t), 0);
    cr_assert_eq(tw_transport_write(x.t, "more", 4), TW_ENOTCONN);
    set_nonblock(fds[1]);
    size_t len;
    bool eof;
    char *got = drain_peer(r, fds[1], 16, &len, &eof);
    cr_assert(eof, "the peer reads end of file after the flush");
    cr_assert_eq(len, 4);
    free(got);
    if (ops == &rec_half_ops)
        RUN_UNTIL(r, x.write_lost == 1);
    cr_assert_eq(x.lost, 0);
    /* Reading goes on. */
    peer_write_all(fds[1], "ping", 4);
    RUN_UNTIL(r, x.got_len == 4);
    cr_assert_eq(x.lost, 0);
    close(fds[1]);
    RUN_UNTIL(r, x.lost == 1);
    cr_assert_eq(x.lost_code, TW_ECONNDONE);
    if (ops == &rec_half_ops)
        cr_assert_eq(x.read_lost, 1, "both halves closed: read_connection_lost, then lost");
    tw_transport_unref(x.t);
}

TW_REACTOR_TEST(stream_io, lose_write_connection_half_closeable)
{
    lose_write_case(r, &rec_half_ops);
}

TW_REACTOR_TEST(stream_io, lose_write_connection_plain)
{
    lose_write_case(r, &rec_ops);
}

TW_REACTOR_TEST(stream_io, peer_reset_is_econnreset_naming_the_peer)
{
    int fds[2];
    tcp_pair(fds);
    struct rec x = {0};
    rec_adopt(r, fds[0], &x, NULL);
    struct sockaddr_in me;
    socklen_t ml = sizeof me;
    cr_assert_eq(getsockname(fds[1], (struct sockaddr *)&me, &ml), 0);
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    cr_assert_eq(setsockopt(fds[1], SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    close(fds[1]);
    RUN_UNTIL(r, x.lost == 1);
    cr_assert_eq(x.lost_code, -ECONNRESET, "%s", tw_strerror(x.lost_code));
    char want[64];
    snprintf(want, sizeof want, "127.0.0.1:%u", (unsigned)ntohs(me.sin_port));
    cr_assert_not_null(strstr(x.lost_msg, want), "message '%s' lacks %s", x.lost_msg, want);
}

/* ---- Closing from callbacks */

static void close_from_data(tw_reactor *r, enum rec_action a, int want)
{
    int fds[2];
    tcp_pair(fds);
    struct rec x = {.on_data = a};
    rec_adopt(r, fds[0], &x, NULL);
    peer_write_all(fds[1], "first", 5);
    RUN_UNTIL(r, x.data_calls == 1);
    peer_write_all(fds[1], "second", 6);
    RUN_UNTIL(r, x.lost == 1);
    cr_assert_eq(x.data_calls, 1, "data delivered after the protocol closed");
    cr_assert_eq(x.lost_code, want);
    cr_assert_not(x.lost_inside_close);
    cr_assert_eq(x.freed, 1);
    close(fds[1]);
}

TW_REACTOR_TEST(stream_io, lose_from_data_received)
{
    close_from_data(r, ACT_LOSE, TW_ECONNDONE);
}

TW_REACTOR_TEST(stream_io, abort_from_data_received)
{
    close_from_data(r, ACT_ABORT, TW_ECONNABORTED);
}

TW_REACTOR_TEST(stream_io, lose_from_connection_made)
{
    int fds[2];
    unix_pair(fds);
    struct rec x = {.on_made = ACT_LOSE};
    rec_adopt(r, fds[0], &x, NULL);
    cr_assert_eq(x.lost, 0);
    RUN_UNTIL(r, x.lost == 1);
    cr_assert_eq(x.lost_code, TW_ECONNDONE);
    cr_assert_not(x.lost_inside_close);
    close(fds[1]);
}

/* A protocol that aborts another connection from its data_received, while
 * that one has bytes waiting in the same iteration. */
struct killer {
    tw_protocol base;
    struct rec *victim;
    int calls;
};

static void killer_data(tw_protocol *p, const char *data, size_t len)
{
    struct killer *k = (struct killer *)p;
    k->calls++;
    if (k->victim->base.transport)
        tw_transport_abort_connection(k->victim->base.transport);
    tw_transport_abort_connection(p->transport);
}

TW_REACTOR_TEST(stream_io, another_connection_closes_this_one)
{
    int a[2], b[2];
    tcp_pair(a);
    tcp_pair(b);
    struct rec victim = {0};
    rec_adopt(r, b[0], &victim, NULL);
    static const tw_protocol_ops kops = {.data_received = killer_data};
    struct killer k = {.victim = &victim};
    tw_protocol_init(&k.base, &kops);
    tw_factory f;
    tw_factory_init(&f, &rec_factory_ops, NULL, 0, &k);
    cr_assert_eq(tw_connection_adopt(r, a[0], &f, NULL), 0);
    close(a[0]);
    peer_write_all(b[1], "v", 1);
    peer_write_all(a[1], "k", 1);
    RUN_UNTIL(r, victim.lost == 1 && k.calls == 1);
    spin(r, 3);
    cr_assert_eq(victim.lost, 1);
    cr_assert_eq(victim.freed, 1);
    cr_assert_leq(victim.data_calls, 1);
    close(a[1]);
    close(b[1]);
}

/* ---- Reactor shutdown */

static void stop_it(void *arg)
{
    tw_reactor_stop(arg);
}

TW_REACTOR_TEST(stream_io, reactor_shutdown_closes_connections)
{
    int a[2], b[2];
    tcp_pair(a);
    unix_pair(b);
    struct rec x = {0}, y = {0};
    rec_adopt(r, a[0], &x, NULL);
    rec_adopt(r, b[0], &y, NULL);
    tw_reactor_state st;
    tw_reactor_get_state(r, &st);
    cr_assert_eq(st.handles, 2);
    cr_assert_eq(tw_reactor_call_when_running(r, stop_it, r), 0);
    cr_assert_eq(tw_reactor_run(r), 0);
    cr_assert_eq(x.lost, 1);
    cr_assert_eq(y.lost, 1);
    cr_assert_eq(x.lost_code, TW_ECONNLOST);
    cr_assert_eq(y.lost_code, TW_ECONNLOST);
    cr_assert_eq(x.freed + y.freed, 2);
    tw_reactor_get_state(r, &st);
    cr_assert_eq(st.handles, 0);
    char c;
    cr_assert_eq(read(a[1], &c, 1), 0, "the peer sees the close");
    close(a[1]);
    close(b[1]);
}

/* A zero-copy write the peer never takes, when the reactor shuts down:
 * its memory is released once, by the time the reactor is freed. */
TW_TEST(stream_io, shutdown_releases_zero_copy_writes_still_queued)
{
    tw_reactor *r = NULL;
    cr_assert_eq(tw_reactor_new(&r, NULL), 0);
    int fds[2];
    tcp_pair(fds);
    struct rec x = {0};
    rec_adopt(r, fds[0], &x, NULL);
    static char big[8 << 20];
    int released = 0;
    cr_assert_eq(
        tw_transport_write_zerocopy(x.base.transport, big, sizeof big, count_release, &released),
        0);
    spin(r, 5);
    cr_assert_eq(tw_reactor_call_when_running(r, stop_it, r), 0);
    cr_assert_eq(tw_reactor_run(r), 0);
    cr_assert_eq(x.lost, 1);
    cr_assert_leq(released, 1);
    cr_assert_eq(tw_reactor_free(r), 0);
    cr_assert_eq(released, 1, "released once");
    close(fds[1]);
}

/* ---- Addresses */

static void check_addresses(tw_reactor *r, int fds[2], int family)
{
    struct rec x = {.hold = true};
    struct sockaddr_storage peer, host;
    socklen_t pl = sizeof peer, hl = sizeof host;
    cr_assert_eq(getpeername(fds[0], (struct sockaddr *)&peer, &pl), 0);
    cr_assert_eq(getsockname(fds[0], (struct sockaddr *)&host, &hl), 0);
    rec_adopt(r, fds[0], &x, NULL);
    tw_address a;
    cr_assert_eq(tw_transport_get_peer(x.t, &a), 0);
    cr_assert_eq(a.u.sa.sa_family, family);
    cr_assert_eq(a.len, pl);
    cr_assert_eq(memcmp(&a.u, &peer, pl), 0);
    cr_assert_eq(tw_transport_get_host(x.t, &a), 0);
    cr_assert_eq(a.len, hl);
    cr_assert_eq(memcmp(&a.u, &host, hl), 0);
    cr_assert_eq(tw_transport_get_peer(x.t, NULL), TW_EINVAL);
    cr_assert_eq(tw_transport_abort_connection(x.t), 0);
    RUN_UNTIL(r, x.lost == 1);
    tw_transport_unref(x.t);
    close(fds[1]);
}

TW_REACTOR_TEST(stream_io, addresses_tcp4)
{
    int fds[2];
    tcp_pair(fds);
    check_addresses(r, fds, AF_INET);
}

TW_REACTOR_TEST(stream_io, addresses_tcp6)
{
    int fds[2];
    if (!tcp_pair_family(fds, AF_INET6)) {
        cr_log_warn("no IPv6 loopback here: skipped");
        return;
    }
    check_addresses(r, fds, AF_INET6);
}

TW_REACTOR_TEST(stream_io, addresses_unix_named)
{
    int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    tw_address name;
    char abs[64];
    snprintf(abs, sizeof abs, "twine-test-%d-%ld", (int)getpid(), (long)now_s());
    cr_assert_eq(tw_address_from_unix(&name, abs, strlen(abs), true), 0);
    cr_assert_eq(bind(l, &name.u.sa, name.len), 0);
    cr_assert_eq(listen(l, 1), 0);
    int c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_eq(connect(c, &name.u.sa, name.len), 0);
    int a = accept(l, NULL, NULL);
    close(l);
    /* The connecting end's peer is the named socket. */
    int fds[2] = {c, a};
    struct rec x = {.hold = true};
    rec_adopt(r, fds[0], &x, NULL);
    tw_address got;
    cr_assert_eq(tw_transport_get_peer(x.t, &got), 0);
    char buf[TW_ADDRESS_STRLEN], want[80];
    snprintf(want, sizeof want, "@%s", abs);
    cr_assert_str_eq(tw_address_format(&got, buf, sizeof buf), want);
    cr_assert_eq(tw_transport_get_host(x.t, &got), 0);
    cr_assert_str_eq(tw_address_format(&got, buf, sizeof buf), "unnamed");
    cr_assert_eq(tw_transport_abort_connection(x.t), 0);
    RUN_UNTIL(r, x.lost == 1);
    tw_transport_unref(x.t);
    close(fds[1]);
}

/* ---- Options */

TW_REACTOR_TEST(stream_io, tcp_options_read_back)
{
    int fds[2];
    tcp_pair(fds);
    int raw = dup(fds[0]); /* to look at the same socket from outside */
    struct rec x = {.hold = true};
    rec_adopt(r, fds[0], &x, NULL);
    int v;
    socklen_t vl = sizeof v;
    cr_assert_eq(getsockopt(raw, IPPROTO_TCP, TCP_NODELAY, &v, &vl), 0);
    cr_assert_eq(v, 0, "Nagle stays on by default");
    cr_assert_eq(tw_transport_set_option(x.t, TW_OPT_TCP_NODELAY, 1), 0);
    cr_assert_eq(getsockopt(raw, IPPROTO_TCP, TCP_NODELAY, &v, &vl), 0);
    cr_assert_neq(v, 0);
    cr_assert_eq(tw_transport_set_option(x.t, TW_OPT_TCP_NODELAY, 0), 0);
    cr_assert_eq(getsockopt(raw, IPPROTO_TCP, TCP_NODELAY, &v, &vl), 0);
    cr_assert_eq(v, 0);
    cr_assert_eq(tw_transport_set_option(x.t, TW_OPT_TCP_KEEPALIVE, 1), 0);
    cr_assert_eq(getsockopt(raw, SOL_SOCKET, SO_KEEPALIVE, &v, &vl), 0);
    cr_assert_neq(v, 0);
    cr_assert_eq(tw_transport_set_option(x.t, TW_OPT_TCP_KEEPALIVE, 2), TW_EINVAL);
    cr_assert_eq(tw_transport_set_option(x.t, (tw_transport_option)99, 1), TW_EINVAL);
    int one = 1;
    cr_assert_eq(tw_transport_send_fds(x.t, &one, 1), TW_ENOTSUP);
    cr_assert_eq(tw_transport_abort_connection(x.t), 0);
    RUN_UNTIL(r, x.lost == 1);
    cr_assert_eq(tw_transport_set_option(x.t, TW_OPT_TCP_NODELAY, 1), TW_ENOTCONN);
    tw_transport_unref(x.t);
    close(raw);
    close(fds[1]);
}

TW_REACTOR_TEST(stream_io, unix_has_no_tcp_options)
{
    int fds[2];
    unix_pair(fds);
    struct rec x = {.hold = true};
    rec_adopt(r, fds[0], &x, NULL);
    cr_assert_eq(tw_transport_set_option(x.t, TW_OPT_TCP_NODELAY, 1), TW_ENOTSUP);
    cr_assert_eq(tw_transport_send_fds(x.t, NULL, 1), TW_EINVAL);
    int fd = 0;
    cr_assert_eq(tw_transport_send_fds(x.t, &fd, 0), TW_EINVAL);
    cr_assert_eq(tw_transport_send_fds(x.t, &fd, 254), TW_EINVAL);
    int bad = -1;
    cr_assert_eq(tw_transport_send_fds(x.t, &bad, 1), TW_EINVAL);
    cr_assert_eq(tw_transport_abort_connection(x.t), 0);
    RUN_UNTIL(r, x.lost == 1);
    tw_transport_unref(x.t);
    close(fds[1]);
}

/* ---- Descriptor passing */

TW_REACTOR_TEST(stream_io, fds_ride_on_the_next_byte)
{
    int fds[2];
    unix_pair(fds);
    struct rec snd = {.hold = true}, rcv = {0};
    rec_adopt(r, fds[0], &snd, NULL);
    rec_adopt(r, fds[1], &rcv, NULL);
    int p1[2], p2[2];
    cr_assert_eq(pipe(p1), 0);
    cr_assert_eq(pipe(p2), 0);
    cr_assert_eq(tw_transport_write(snd.t, "ab", 2), 0);
    cr_assert_eq(tw_transport_send_fds(snd.t, &p1[1], 1), 0);
    cr_assert_eq(tw_transport_send_fds(snd.t, &p2[1], 1), 0); /* same byte: merged */
    cr_assert_eq(tw_transport_write(snd.t, "cd", 2), 0);
    /* The caller keeps its own. */
    close(p1[1]);
    close(p2[1]);
    RUN_UNTIL(r, rcv.got_len == 4 && rcv.fds_got == 2);
    cr_assert_eq(memcmp(rcv.got, "abcd", 4), 0);
    /* The last one received is p2's write end: it works. */
    cr_assert_eq(write(rcv.last_fd, "!", 1), 1);
    char c;
    cr_assert_eq(read(p2[0], &c, 1), 1);
    cr_assert_eq(c, '!');
    cr_assert(fcntl(rcv.last_fd, F_GETFD) & FD_CLOEXEC);
    close(rcv.last_fd);
    cr_assert_eq(read(p2[0], &c, 1), 0, "no copy of the descriptor left behind");
    /* p1's received copy was the first; close it by number: fd_received got
     * it first, so it is last_fd - something; find it via the pipe instead. */
    cr_assert_eq(tw_transport_lose_connection(snd.t), 0);
    RUN_UNTIL(r, snd.lost == 1 && rcv.lost == 1);
    tw_transport_unref(snd.t);
    close(p1[0]);
    close(p2[0]);
}

TW_REACTOR_TEST(stream_io, fds_closed_without_fd_received)
{
    int fds[2];
    unix_pair(fds);
    static const tw_protocol_ops no_fd_ops = {
        .connection_made = rec_made,
        .data_received = rec_data,
        .connection_lost = rec_lost,
        .free = rec_free,
    };
    struct rec snd = {.hold = true}, rcv = {0};
    rec_adopt(r, fds[0], &snd, NULL);
    rec_adopt(r, fds[1], &rcv, &no_fd_ops);
    int p[2];
    cr_assert_eq(pipe(p), 0);
    cr_assert_eq(tw_transport_send_fds(snd.t, &p[1], 1), 0);
    cr_assert_eq(tw_transport_write(snd.t, "x", 1), 0);
    close(p[1]);
    RUN_UNTIL(r, rcv.got_len == 1);
    char c;
    cr_assert_eq(read(p[0], &c, 1), 0, "the received copy was closed");
    /* Descriptors sent without a byte after them are dropped (closed). */
    int q[2];
    cr_assert_eq(pipe(q), 0);
    cr_assert_eq(tw_transport_send_fds(snd.t, &q[1], 1), 0);
    close(q[1]);
    cr_assert_eq(tw_transport_lose_connection(snd.t), 0);
    RUN_UNTIL(r, snd.lost == 1 && rcv.lost == 1);
    cr_assert_eq(read(q[0], &c, 1), 0);
    tw_transport_unref(snd.t);
    close(p[0]);
    close(q[0]);
}

/* ---- Adopt: misuse and allocation failure */

static tw_protocol *refuse(tw_factory *f, const tw_address *addr)
{
    (void)f;
    (void)addr;
    return NULL;
}

TW_REACTOR_TEST(stream_io, adopt_misuse)
{
    tw_factory f;
    static const tw_protocol_ops nothing = {0};
    tw_factory_init(&f, NULL, &nothing, 0, NULL);
    int p[2];
    cr_assert_eq(pipe(p), 0);
    cr_assert_eq(tw_connection_adopt(r, p[0], &f, NULL), TW_EINVAL, "a pipe");
    close(p[0]);
    close(p[1]);
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    cr_assert_eq(tw_connection_adopt(r, u, &f, NULL), TW_EINVAL, "a datagram socket");
    close(u);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_eq(tw_connection_adopt(r, s, &f, NULL), TW_EINVAL, "not connected");
    close(s);
    cr_assert_eq(tw_connection_adopt(r, -1, &f, NULL), TW_EINVAL);
    cr_assert_eq(tw_connection_adopt(r, 1000, &f, NULL), TW_EBADF);
    int fds[2];
    unix_pair(fds);
    static const tw_factory_ops refusing = {.build_protocol = refuse};
    tw_factory g;
    tw_factory_init(&g, &refusing, NULL, 0, NULL);
    cr_assert_eq(tw_connection_adopt(r, fds[0], &g, NULL), TW_ECONNABORTED);
    /* The caller's descriptor is untouched. */
    cr_assert_eq(write(fds[0], "x", 1), 1);
    close(fds[0]);
    close(fds[1]);
}

struct counted {
    tw_protocol base;
};
static int built, freed_count, made_count, lost_count;
static void counted_made(tw_protocol *p)
{
    made_count++;
}
static void counted_lost(tw_protocol *p, tw_failure *reason)
{
    lost_count++;
}
static void counted_free(tw_protocol *p)
{
    freed_count++;
}
static tw_protocol *counted_build(tw_factory *f, const tw_address *addr)
{
    tw_protocol *p = tw_factory_build_default(f, addr);
    if (p)
        built++;
    return p;
}

TW_REACTOR_TEST(stream_io, adopt_allocation_failures_are_clean)
{
    static const tw_protocol_ops ops = {
        .connection_made = counted_made, .connection_lost = counted_lost, .free = counted_free};
    static const tw_factory_ops fops = {.build_protocol = counted_build};
    tw_factory f, fd_default;
    tw_factory_init(&f, &fops, &ops, sizeof(struct counted), NULL);
    tw_factory_init(&fd_default, NULL, &ops, sizeof(struct counted), NULL);
    tw_factory *factories[2] = {&fd_default, &f};
    for (int which = 0; which < 2; which++) {
        int fds[2];
        tcp_pair(fds);
        int rc = -1;
        long n;
        for (n = 0; n < 100; n++) {
            built = freed_count = made_count = lost_count = 0;
            tw_testing_fail_alloc_after(n);
            tw_protocol *p = NULL;
            rc = tw_connection_adopt(r, fds[0], factories[which], &p);
            tw_testing_fail_alloc_off();
            if (rc == 0) {
                cr_assert_not_null(p);
                break;
            }
            if (which == 0)
                cr_assert_eq(rc, TW_ENOMEM, "n=%ld: %s", n, tw_strerror(rc));
            else
                cr_assert(rc == TW_ENOMEM || rc == TW_ECONNABORTED, "n=%ld: %s", n,
                          tw_strerror(rc));
            cr_assert_eq(made_count, 0);
            if (which == 1)
                cr_assert_eq(freed_count, built, "a protocol built and not released");
            else
                cr_assert_leq(freed_count, 1);
            tw_reactor_state st;
            tw_reactor_get_state(r, &st);
            cr_assert_eq(st.handles + st.readers + st.writers, 0);
        }
        cr_assert_eq(rc, 0);
        cr_assert_eq(made_count, 1);
        /* The caller's fd still works; the connection is live. */
        close(fds[0]);
        close(fds[1]);
        RUN_UNTIL(r, lost_count == 1);
        cr_assert_eq(freed_count, 1);
    }
}

/* ---- The steady path allocates nothing */

TW_REACTOR_TEST(stream_io, no_allocation_per_read_or_write)
{
    int fds[2];
    tcp_pair(fds);
    struct rec x = {.echo = true};
    tw_testing_alloc_count(); /* install the counting allocator first */
    rec_adopt(r, fds[0], &x, NULL);
    char buf[64];
    long before = 0;
    for (int i = 0; i < 1100; i++) {
        if (i == 100)
            before = tw_testing_alloc_count();
        peer_write_all(fds[1], "0123456789", 10);
        size_t got = 0;
        while (got < 10) {
            tw_reactor_iterate(r, 0.01);
            ssize_t k = peer_read(fds[1], buf + got, sizeof buf - got);
            if (k > 0)
                got += (size_t)k;
            cr_assert_neq(k, 0);
        }
        cr_assert_eq(got, 10);
    }
    long after = tw_testing_alloc_count();
    cr_assert_eq(after - before, 0, "%ld allocations in 1000 round trips", after - before);
    close(fds[1]);
    RUN_UNTIL(r, x.lost == 1);
}

/* The memory budget of an idle connection: the struct, nothing else. On LP64
 * it is 160 bytes: base 40 + io 56 + handle 24 + write queue 32 + 8. */
TW_TEST(stream_io, connection_struct_fits_its_budget)
{
    cr_log_info("sizeof(struct tw__stream) = %zu", sizeof(struct tw__stream));
    cr_assert_leq(sizeof(struct tw__stream), 160);
}
