/* Stream connections: flow control. Producers paused and resumed at the
 * water marks, pull producers asked for more, memory bounded with a peer
 * that never reads, the transport paused as a reader. */
#include <stdlib.h>

#include "test-stream-helpers.h"

#define CHUNK (16 * 1024)

/* A streaming producer that writes CHUNKs while not paused, up to a budget. */
struct pusher {
    tw_producer base;
    tw_transport *t;
    int pauses, resumes, stops;
    size_t size_at_pause, size_at_resume, max_size;
    size_t written, budget;
    bool paused, in_write;
};

static char chunk[CHUNK];

static void pusher_pump(struct pusher *p)
{
    while (!p->paused && p->written < p->budget) {
        p->in_write = true;
        int rc = tw_transport_write(p->t, chunk, CHUNK);
        p->in_write = false;
        if (rc < 0)
            return;
        p->written += CHUNK;
        size_t sz = tw_transport_write_buffer_size(p->t);
        if (sz > p->max_size)
            p->max_size = sz;
    }
}

static void pusher_pause(tw_producer *pr)
{
    struct pusher *p = (struct pusher *)pr;
    cr_assert_not(p->paused, "paused twice");
    p->pauses++;
    p->paused = true;
    p->size_at_pause = tw_transport_write_buffer_size(p->t);
}

static void pusher_resume(tw_producer *pr)
{
    struct pusher *p = (struct pusher *)pr;
    cr_assert(p->paused, "resumed while not paused");
    p->resumes++;
    p->paused = false;
    p->size_at_resume = tw_transport_write_buffer_size(p->t);
    pusher_pump(p);
}

static void pusher_stop(tw_producer *pr)
{
    ((struct pusher *)pr)->stops++;
}

static const tw_producer_ops pusher_ops = {pusher_pause, pusher_resume, pusher_stop};

/* Reads and discards what is there at the peer; returns bytes read, and
 * sets *eof. */
static size_t peer_drain_some(int fd, size_t max, bool *eof)
{
    static char buf[65536];
    size_t total = 0;
    while (total < max) {
        size_t want = max - total < sizeof buf ? max - total : sizeof buf;
        ssize_t n = peer_read(fd, buf, want);
        if (n == 0 || n == -2) {
            *eof = true;
            break;
        }
        if (n < 0)
            break;
        total += (size_t)n;
    }
    return total;
}

TW_REACTOR_TEST(stream_flow, push_producer_paused_and_resumed_at_the_marks)
{
    int fds[2];
    tcp_pair(fds);
    set_nonblock(fds[1]);
    struct rec x = {.hold = true};
    rec_adopt(r, fds[0], &x, NULL);
    struct pusher p = {.base.ops = &pusher_ops, .t = x.t, .budget = 32u << 20};
    cr_assert_eq(tw_transport_register_producer(x.t, &p.base, true), 0);
    cr_assert_eq(tw_transport_register_producer(x.t, &p.base, true), TW_EBUSY);
    pusher_pump(&p);
    cr_assert_eq(p.pauses, 1, "paused once the buffer passed the high-water mark");
    cr_assert_gt(p.size_at_pause, TW_TRANSPORT_HIGH_WATER);
    cr_assert_leq(p.size_at_pause, TW_TRANSPORT_HIGH_WATER + CHUNK);
    /* The peer reads: the producer is resumed at or below the low mark, and
     * paused again above the high one, until its budget is spent. */
    size_t got = 0;
    bool eof = false;
    double end = now_s() + 20;
    while (got < p.budget && now_s() < end) {
        tw_reactor_iterate(r, 0);
        got += peer_drain_some(fds[1], 1 << 20, &eof);
        if (p.resumes > 0)
            cr_assert_leq(p.size_at_resume, TW_TRANSPORT_LOW_WATER);
    }
    cr_assert_eq(got, p.budget);
    cr_assert_gt(p.resumes, 0);
    cr_assert_geq(p.pauses, p.resumes);
    cr_assert_leq(p.max_size, TW_TRANSPORT_HIGH_WATER + CHUNK);
    /* The loss stops the producer, once, and unregisters it. */
    close(fds[1]);
    RUN_UNTIL(r, x.lost == 1);
    cr_assert_eq(p.stops, 1);
    tw_transport_unref(x.t);
}

TW_REACTOR_TEST(stream_flow, custom_marks)
{
    int fds[2];
    unix_pair(fds);
    set_nonblock(fds[1]);
    struct rec x = {.hold = true};
    rec_adopt(r, fds[0], &x, NULL);
    cr_assert_eq(tw_transport_set_write_buffer_limits(x.t, 10, 20), TW_EINVAL);
    cr_assert_eq(tw_transport_set_write_buffer_limits(x.t, 0, 0), 0);
    cr_assert_eq(tw_transport_set_write_buffer_limits(x.t, 4 * CHUNK, 2 * CHUNK), 0);
    struct pusher p = {.base.ops = &pusher_ops, .t = x.t, .budget = 16u << 20};
    cr_assert_eq(tw_transport_register_producer(x.t, &p.base, true), 0);
    pusher_pump(&p);
    cr_assert_eq(p.pauses, 1);
    cr_assert_gt(p.size_at_pause, 4 * CHUNK);
    cr_assert_leq(p.size_at_pause, 5 * CHUNK);
    bool eof = false;
    RUN_UNTIL(r, (peer_drain_some(fds[1], 1 << 20, &eof), p.resumes > 0));
    cr_assert_leq(p.size_at_resume, 2 * CHUNK);
    cr_assert_eq(tw_transport_unregister_producer(x.t), 0);
    cr_assert_eq(tw_transport_unregister_producer(x.t), 0);
    cr_assert_eq(tw_transport_abort_connection(x.t), 0);
    RUN_UNTIL(r, x.lost == 1);
    cr_assert_eq(p.stops, 0, "an unregistered producer is not stopped");
    tw_transport_unref(x.t);
    close(fds[1]);
}

/* Memory stays bounded however much a producer has to give, with a peer
 * that never reads: the producer is held back at the high-water mark. */
TW_REACTOR_TEST(stream_flow, memory_bounded_with_a_peer_that_never_reads)
{
    int fds[2];
    tcp_pair(fds);
    struct rec x = {.hold = true};
    rec_adopt(r, fds[0], &x, NULL);
    struct pusher p = {.base.ops = &pusher_ops, .t = x.t, .budget = 64u << 20};
    cr_assert_eq(tw_transport_register_producer(x.t, &p.base, true), 0);
    pusher_pump(&p);
    for (int i = 0; i < 50; i++) {
        tw_reactor_iterate(r, 0.001);
        pusher_pump(&p); /* a producer that ignores nothing: only pause stops it */
    }
    cr_assert(p.paused);
    cr_assert_lt(p.written, p.budget, "the producer was never held back");
    cr_assert_leq(p.max_size, TW_TRANSPORT_HIGH_WATER + CHUNK, "queue grew to %zu", p.max_size);
    cr_assert_leq(tw_transport_write_buffer_size(x.t), TW_TRANSPORT_HIGH_WATER + CHUNK);
    cr_assert_eq(tw_transport_abort_connection(x.t), 0);
    RUN_UNTIL(r, x.lost == 1);
    cr_assert_eq(p.stops, 1);
    tw_transport_unref(x.t);
    close(fds[1]);
}

/* A pull producer: one piece per resume_producing. */
struct puller {
    tw_producer base;
    tw_transport *t;
    int resumes, stops;
    int pieces, max_pieces;
    size_t max_size;
};

static void puller_resume(tw_producer *pr)
{
    struct puller *p = (struct puller *)pr;
    p->resumes++;
    if (p->pieces == p->max_pieces) {
        cr_assert_eq(tw_transport_unregister_producer(p->t), 0);
        cr_assert_eq(tw_transport_lose_connection(p->t), 0);
        return;
    }
    static char piece[3 * CHUNK];
    memset(piece, 'a' + p->pieces % 26, sizeof piece);
    cr_assert_eq(tw_transport_write(p->t, piece, sizeof piece), 0);
    p->pieces++;
    size_t sz = tw_transport_write_buffer_size(p->t);
    if (sz > p->max_size)
        p->max_size = sz;
}

static void puller_stop(tw_producer *pr)
{
    ((struct puller *)pr)->stops++;
}

static const tw_producer_ops puller_ops = {NULL, puller_resume, puller_stop};

TW_REACTOR_TEST(stream_flow, pull_producer_asked_when_drained)
{
    int fds[2];
    unix_pair(fds);
    set_nonblock(fds[1]);
    struct rec x = {.hold = true};
    rec_adopt(r, fds[0], &x, NULL);
    struct puller p = {.base.ops = &puller_ops, .t = x.t, .max_pieces = 200};
    cr_assert_eq(tw_transport_register_producer(x.t, &p.base, false), 0);
    cr_assert_eq(p.resumes, 1, "asked once on registration");
    size_t got = 0;
    bool eof = false;
    double end = now_s() + 20;
    char *all = malloc(200 * 3 * CHUNK);
    while (!eof && now_s() < end) {
        tw_reactor_iterate(r, 0);
        ssize_t n = peer_read(fds[1], all + got, 200 * 3 * CHUNK - got);
        if (n == 0 || n == -2)
            eof = true;
        else if (n > 0)
            got += (size_t)n;
    }
    cr_assert(eof);
    cr_assert_eq(got, 200 * 3 * CHUNK);
    for (size_t i = 0; i < got; i += 3 * CHUNK)
        cr_assert_eq(all[i], 'a' + (int)(i / (3 * CHUNK)) % 26, "piece %zu out of order",
                     i / (3 * CHUNK));
    cr_assert_eq(p.resumes, 201);
    cr_assert_leq(p.max_size, TW_TRANSPORT_LOW_WATER + 3 * CHUNK);
    RUN_UNTIL(r, x.lost == 1);
    cr_assert_eq(x.lost_code, TW_ECONNDONE);
    cr_assert_eq(p.stops, 0);
    free(all);
    tw_transport_unref(x.t);
}

TW_REACTOR_TEST(stream_flow, producer_misuse)
{
    int fds[2];
    unix_pair(fds);
    struct rec x = {.hold = true};
    rec_adopt(r, fds[0], &x, NULL);
    cr_assert_eq(tw_transport_register_producer(x.t, NULL, true), TW_EINVAL);
    tw_producer bare = {NULL};
    cr_assert_eq(tw_transport_register_producer(x.t, &bare, true), TW_EINVAL);
    static const tw_producer_ops pull_only = {.resume_producing = puller_resume};
    tw_producer half = {&pull_only};
    cr_assert_eq(tw_transport_register_producer(x.t, &half, true), TW_EINVAL,
                 "streaming needs pause");
    cr_assert_eq(tw_transport_lose_connection(x.t), 0);
    struct pusher p = {.base.ops = &pusher_ops, .t = x.t};
    cr_assert_eq(tw_transport_register_producer(x.t, &p.base, true), TW_ENOTCONN);
    RUN_UNTIL(r, x.lost == 1);
    cr_assert_eq(tw_transport_register_producer(x.t, &p.base, true), TW_ENOTCONN);
    cr_assert_eq(p.stops, 0);
    tw_transport_unref(x.t);
    close(fds[1]);
}

/* ---- The transport as a producer of what it reads */

TW_REACTOR_TEST(stream_flow, pause_stops_reading_until_resume)
{
    int fds[2];
    tcp_pair(fds);
    struct rec x = {.hold = true};
    rec_adopt(r, fds[0], &x, NULL);
    tw_reactor_state st;
    tw_reactor_get_state(r, &st);
    size_t readers = st.readers;
    cr_assert_eq(tw_transport_pause_producing(x.t), 0);
    cr_assert_eq(tw_transport_pause_producing(x.t), 0);
    tw_reactor_get_state(r, &st);
    cr_assert_eq(st.readers, readers - 1);
    peer_write_all(fds[1], "wait", 4);
    spin(r, 20);
    cr_assert_eq(x.data_calls, 0, "read while paused");
    cr_assert_eq(tw_transport_resume_producing(x.t), 0, "one resume undoes two pauses");
    RUN_UNTIL(r, x.got_len == 4);
    /* Paused from inside data_received: nothing more until resumed. */
    x.on_data = ACT_PAUSE;
    peer_write_all(fds[1], "a", 1);
    RUN_UNTIL(r, x.data_calls == 2);
    peer_write_all(fds[1], "b", 1);
    spin(r, 20);
    cr_assert_eq(x.data_calls, 2);
    x.on_data = ACT_NONE;
    tw_producer *tp = tw_transport_producer(x.t);
    tp->ops->resume_producing(tp);
    RUN_UNTIL(r, x.data_calls == 3);
    cr_assert_eq(x.got[5], 'b');
    /* stop_producing is lose_connection. */
    tp->ops->stop_producing(tp);
    RUN_UNTIL(r, x.lost == 1);
    cr_assert_eq(x.lost_code, TW_ECONNDONE);
    tw_transport_unref(x.t);
    close(fds[1]);
}

/* A proxy: connection A's reader is the producer of connection B's writer.
 * With B's peer not reading, A stops reading once B's buffer fills. */
struct relay {
    tw_protocol base;
    tw_transport *out;
    size_t relayed;
};

static void relay_data(tw_protocol *p, const char *data, size_t len)
{
    struct relay *rl = (struct relay *)p;
    cr_assert_eq(tw_transport_write(rl->out, data, len), 0);
    rl->relayed += len;
}

TW_REACTOR_TEST(stream_flow, transport_registered_as_producer_of_another)
{
    int a[2], b[2];
    unix_pair(a);
    tcp_pair(b);
    struct rec bx = {.hold = true};
    rec_adopt(r, b[0], &bx, NULL);
    static const tw_protocol_ops relay_ops = {.data_received = relay_data};
    struct relay rl = {.out = bx.t};
    tw_protocol_init(&rl.base, &relay_ops);
    tw_factory f;
    tw_factory_init(&f, &rec_factory_ops, NULL, 0, &rl);
    cr_assert_eq(tw_connection_adopt(r, a[0], &f, NULL), 0);
    close(a[0]);
    tw_transport *at = rl.base.transport;
    cr_assert_eq(tw_transport_register_producer(bx.t, tw_transport_producer(at), true), 0);
    set_nonblock(a[1]);
    /* Feed A until it stops taking: its reader was paused. */
    static char block[65536];
    size_t fed = 0;
    for (int i = 0; i < 2000; i++) {
        ssize_t n = send(a[1], block, sizeof block, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0)
            fed += (size_t)n;
        tw_reactor_iterate(r, 0);
    }
    tw_reactor_state st;
    tw_reactor_get_state(r, &st);
    cr_assert_lt(rl.relayed, fed, "A kept reading although B could not write");
    cr_assert_leq(tw_transport_write_buffer_size(bx.t), TW_TRANSPORT_HIGH_WATER + 65536);
    /* B's peer reads: A reads again and everything fed arrives. */
    set_nonblock(b[1]);
    size_t got = 0;
    bool eof = false;
    double end = now_s() + 20;
    while (got < fed && now_s() < end) {
        tw_reactor_iterate(r, 0);
        got += peer_drain_some(b[1], 1 << 20, &eof);
    }
    cr_assert_eq(got, fed);
    cr_assert_eq(rl.relayed, fed);
    cr_assert_eq(tw_transport_lose_connection(bx.t), 0);
    RUN_UNTIL(r, bx.lost == 1);
    /* B's loss stopped its producer: A's lose_connection. */
    close(a[1]);
    spin(r, 5);
    tw_reactor_get_state(r, &st);
    cr_assert_eq(st.handles, 0);
    tw_transport_unref(bx.t);
    close(b[1]);
}
