/* Streams for coroutines: reads that wait for bytes, the end of the
 * connection, flow control both ways, cancellation, misuse, closing; over
 * the string transport, then over real TCP (each backend) with a server
 * written as coroutines too. */
#include <twine/coro-stream.h>
#include <twine/endpoint.h>
#include <twine/net.h>

#include "coro-test.h"

/* ---- Over the string transport */

struct fixture {
    tw_string_transport *st;
    tw_coro_stream *s;
};

static void fixture_up(struct fixture *f)
{
    cr_assert_eq(tw_string_transport_new(&f->st), 0);
    cr_assert_eq(tw_coro_stream_new(&f->s), 0);
    cr_assert_eq(tw_string_transport_connect(f->st, tw_coro_stream_protocol(f->s)), 0);
    cr_assert_eq(tw_coro_stream_transport(f->s), &f->st->base);
}

static void fixture_down(struct fixture *f)
{
    tw_coro_stream_free(f->s);
    tw_string_transport_free(f->st);
}

struct reads {
    tw_coro_stream *s;
    char got[64];
    ssize_t n[8];
    size_t chunk; /* bytes asked per read */
    int reads;    /* how many reads to make */
};

static tw_result reader(void *arg)
{
    struct reads *r = arg;
    size_t at = 0;
    for (int i = 0; i < r->reads; i++) {
        r->n[i] = tw_await_read(r->s, r->got + at, r->chunk);
        if (r->n[i] <= 0)
            break;
        at += (size_t)r->n[i];
    }
    return tw_result_from_int((intptr_t)at);
}

CORO_TEST(stream, a_read_waits_for_bytes_and_takes_what_is_there)
{
    struct fixture f;
    fixture_up(&f);
    struct reads rd = {.s = f.s, .chunk = 3, .reads = 3};
    tw_deferred *d = tw_coro_start(r, reader, &rd, NULL);
    cr_assert_eq(rd.n[0], 0, "nothing yet: it waits");
    tw_string_transport_feed(f.st, "hello", 5);
    cr_assert_eq(rd.n[0], 3, "resumed inside data_received");
    cr_assert_eq(rd.n[1], 2, "the rest was there: no wait");
    cr_assert_eq(rd.n[2], 0, "the third read waits");
    tw_string_transport_feed(f.st, "!", 1);
    tw_result res = twtest_wait(r, d);
    cr_assert_eq(tw_result_int(res), 6);
    cr_assert_eq(memcmp(rd.got, "hello!", 6), 0);
    tw_deferred_unref(d);
    fixture_down(&f);
}

static tw_result reads_exactly(void *arg)
{
    struct reads *r = arg;
    r->n[0] = tw_await_read_exactly(r->s, r->got, r->chunk);
    r->n[1] = tw_await_read(r->s, r->got + 60, 4);
    return tw_result_from_int(0);
}

CORO_TEST(stream, read_exactly_gathers_bytes_fed_one_at_a_time_then_sees_the_end)
{
    struct fixture f;
    fixture_up(&f);
    struct reads rd = {.s = f.s, .chunk = 11};
    tw_deferred *d = tw_coro_start(r, reads_exactly, &rd, NULL);
    const char msg[] = "hello world";
    size_t pieces = tw_testing_feed_chunks(msg, 11, 1, tw_string_transport_feeder, f.st);
    cr_assert_eq(pieces, 11);
    cr_assert_eq(rd.n[0], 11);
    cr_assert_eq(memcmp(rd.got, msg, 11), 0);
    cr_assert_not(tw_deferred_called(d), "the second read waits");
    tw_string_transport_lose(f.st, TW_ECONNDONE);
    cr_assert_eq(rd.n[1], 0, "a clean end reads as 0");
    cr_assert_eq(tw_failure_code(tw_coro_stream_failure(f.s)), TW_ECONNDONE);
    cr_assert_null(tw_coro_stream_transport(f.s));
    tw_deferred_unref(d);
    fixture_down(&f);
}

CORO_TEST(stream, bytes_before_the_end_are_read_first_then_why_it_ended)
{
    struct fixture f;
    fixture_up(&f);
    tw_string_transport_feed(f.st, "ab", 2);
    tw_string_transport_lose(f.st, -ECONNRESET);
    struct reads rd = {.s = f.s, .chunk = 8, .reads = 3};
    tw_deferred *d = tw_coro_start(r, reader, &rd, NULL);
    cr_assert_eq(rd.n[0], 2);
    cr_assert_eq(rd.n[1], -ECONNRESET);
    tw_result res = twtest_wait(r, d);
    cr_assert_eq(tw_result_int(res), 2);
    tw_deferred_unref(d);
    fixture_down(&f);
}

static tw_result short_read_exactly(void *arg)
{
    struct reads *r = arg;
    r->n[0] = tw_await_read_exactly(r->s, r->got, 10);
    return tw_result_from_int(0);
}

CORO_TEST(stream, read_exactly_returns_fewer_when_the_peer_closes_first)
{
    struct fixture f;
    fixture_up(&f);
    struct reads rd = {.s = f.s};
    tw_deferred *d = tw_coro_start(r, short_read_exactly, &rd, NULL);
    tw_string_transport_feed(f.st, "abc", 3);
    tw_string_transport_lose(f.st, 0);
    cr_assert_eq(rd.n[0], 3);
    tw_deferred_unref(d);
    fixture_down(&f);
}

/* ---- Flow control */

static tw_result reads_all(void *arg)
{
    struct reads *r = arg;
    char buf[4096];
    size_t total = 0;
    for (;;) {
        ssize_t n = tw_await_read(r->s, buf, sizeof buf);
        if (n <= 0)
            break;
        total += (size_t)n;
    }
    return tw_result_from_int((intptr_t)total);
}

CORO_TEST(stream, unread_bytes_past_the_buffer_pause_reading_until_read)
{
    struct fixture f;
    fixture_up(&f);
    static char block[16 * 1024];
    memset(block, 'x', sizeof block);
    for (size_t fed = 0; fed < TW_CORO_STREAM_BUFFER; fed += sizeof block)
        tw_string_transport_feed(f.st, block, sizeof block);
    cr_assert(f.st->paused, "nobody reads: the transport's reading is paused");
    cr_assert_eq(f.st->pause_calls, 1);
    cr_assert_eq(tw_coro_stream_buffered(f.s), TW_CORO_STREAM_BUFFER);
    struct reads rd = {.s = f.s};
    tw_deferred *d = tw_coro_start(r, reads_all, &rd, NULL);
    cr_assert_not(f.st->paused, "reading resumed once the reader took the bytes");
    cr_assert_eq(f.st->resume_calls, 1);
    tw_string_transport_lose(f.st, 0);
    tw_result res = twtest_wait(r, d);
    cr_assert_eq(tw_result_int(res), TW_CORO_STREAM_BUFFER);
    tw_deferred_unref(d);
    fixture_down(&f);
}

struct writes {
    tw_coro_stream *s;
    int rc;
    bool done;
};

static tw_result writer(void *arg)
{
    struct writes *w = arg;
    w->rc = tw_await_write(w->s, "payload", 7);
    w->done = true;
    return tw_result_from_int(0);
}

CORO_TEST(stream, a_write_waits_while_the_transport_buffer_is_above_its_mark)
{
    struct fixture f;
    fixture_up(&f);
    cr_assert_not_null(f.st->producer, "the stream registered as the transport's producer");
    cr_assert(f.st->streaming);
    tw_string_transport_set_buffer_size(f.st, TW_TRANSPORT_HIGH_WATER + 1);
    struct writes w = {.s = f.s};
    tw_deferred *d = tw_coro_start(r, writer, &w, NULL);
    cr_assert_not(w.done, "the buffer is full: the writer waits");
    cr_assert_str_eq(tw_string_transport_value(f.st, NULL), "payload", "its bytes are queued");
    tw_string_transport_set_buffer_size(f.st, 0);
    cr_assert(w.done, "drained: the writer goes on");
    cr_assert_eq(w.rc, 0);
    tw_deferred_unref(d);
    fixture_down(&f);
}

CORO_TEST(stream, a_connection_lost_while_a_writer_waits_says_why)
{
    struct fixture f;
    fixture_up(&f);
    tw_string_transport_set_buffer_size(f.st, TW_TRANSPORT_HIGH_WATER + 1);
    struct writes w = {.s = f.s};
    tw_deferred *d = tw_coro_start(r, writer, &w, NULL);
    tw_string_transport_lose(f.st, -EPIPE);
    cr_assert(w.done);
    cr_assert_eq(w.rc, -EPIPE);
    tw_deferred_unref(d);
    fixture_down(&f);
}

static tw_result writes_after_end(void *arg)
{
    struct writes *w = arg;
    w->rc = tw_await_write(w->s, "late", 4);
    return tw_result_from_int(0);
}

CORO_TEST(stream, writing_after_the_end_is_enotconn)
{
    struct fixture f;
    fixture_up(&f);
    tw_string_transport_lose(f.st, 0);
    struct writes w = {.s = f.s, .rc = 1};
    tw_deferred_unref(tw_coro_start(r, writes_after_end, &w, NULL));
    cr_assert_eq(w.rc, TW_ENOTCONN);
    fixture_down(&f);
}

/* ---- Cancellation, EBUSY, misuse */

CORO_TEST(stream, a_cancelled_read_returns_ecanceled_and_keeps_later_bytes)
{
    struct fixture f;
    fixture_up(&f);
    struct reads rd = {.s = f.s, .chunk = 8, .reads = 1};
    tw_deferred *d = tw_coro_start(r, reader, &rd, NULL);
    tw_deferred_cancel(d);
    cr_assert_eq(rd.n[0], TW_ECANCELED);
    tw_result res = twtest_wait(r, d);
    cr_assert_eq(tw_result_int(res), 0);
    tw_deferred_unref(d);
    tw_string_transport_feed(f.st, "kept", 4);
    cr_assert_eq(tw_coro_stream_buffered(f.s), 4, "no reader waits, the bytes wait");
    struct reads again = {.s = f.s, .chunk = 8, .reads = 1};
    d = tw_coro_start(r, reader, &again, NULL);
    cr_assert_eq(again.n[0], 4);
    tw_deferred_unref(d);
    fixture_down(&f);
}

CORO_TEST(stream, a_second_reader_at_once_gets_ebusy)
{
    struct fixture f;
    fixture_up(&f);
    struct reads a = {.s = f.s, .chunk = 8, .reads = 1}, b = a;
    tw_deferred *da = tw_coro_start(r, reader, &a, NULL);
    tw_deferred *db = tw_coro_start(r, reader, &b, NULL);
    cr_assert_eq(b.n[0], TW_EBUSY);
    tw_string_transport_feed(f.st, "x", 1);
    cr_assert_eq(a.n[0], 1);
    tw_deferred_unref(da);
    tw_deferred_unref(db);
    fixture_down(&f);
}

CORO_TEST(stream, waiting_calls_outside_a_coroutine_are_einval)
{
    tw_testing_log_capture_start();
    struct fixture f;
    fixture_up(&f);
    tw_string_transport_feed(f.st, "abc", 3);
    char buf[4];
    cr_assert_eq(tw_await_read(f.s, buf, sizeof buf), TW_EINVAL);
    cr_assert_eq(tw_await_write(f.s, "x", 1), TW_EINVAL);
    cr_assert_eq(tw_coro_stream_buffered(f.s), 3, "nothing was read");
    cr_assert_str_eq(tw_string_transport_value(f.st, NULL), "", "nothing was written");
    tw_coro_stream *s2;
    tw_failure *why;
    cr_assert_eq(tw_await_connect(r, "tcp:127.0.0.1:9", &s2, &why), TW_EINVAL);
    cr_assert_null(s2);
    cr_assert(strstr(tw_failure_message(why), "outside a coroutine"));
    tw_failure_unref(why);
    cr_assert_geq(tw_testing_log_count("outside a coroutine"), 3);
    tw_testing_log_capture_stop();
    fixture_down(&f);
}

static tw_result bad_reads(void *arg)
{
    tw_coro_stream *s = arg;
    char buf[1];
    cr_assert_eq(tw_await_read(s, buf, 0), TW_EINVAL);
    cr_assert_eq(tw_await_read(s, NULL, 1), TW_EINVAL);
    cr_assert_eq(tw_await_read(NULL, buf, 1), TW_EINVAL);
    cr_assert_eq(tw_await_write(NULL, "x", 1), TW_EINVAL);
    cr_assert_eq(tw_await_write(s, NULL, 1), TW_EINVAL);
    cr_assert_eq(tw_await_close(NULL), TW_EINVAL);
    return tw_result_from_int(0);
}

CORO_TEST(stream, bad_arguments_are_einval)
{
    struct fixture f;
    fixture_up(&f);
    tw_deferred_unref(tw_coro_start(r, bad_reads, f.s, NULL));
    cr_assert_eq(tw_coro_stream_new(NULL), TW_EINVAL);
    fixture_down(&f);
}

/* ---- Closing and freeing */

struct closing {
    tw_coro_stream *s;
    int rc;
    bool done;
};

static tw_result closer(void *arg)
{
    struct closing *c = arg;
    c->rc = tw_await_close(c->s);
    c->done = true;
    return tw_result_from_int(0);
}

CORO_TEST(stream, close_flushes_waits_for_the_end_and_frees)
{
    struct fixture f;
    fixture_up(&f);
    struct closing c = {.s = f.s, .rc = 1};
    tw_deferred *d = tw_coro_start(r, closer, &c, NULL);
    cr_assert_eq(f.st->lose_calls, 1, "lose_connection: what is queued is flushed first");
    cr_assert_not(c.done, "waits for the connection to end");
    tw_string_transport_lose(f.st, 0);
    cr_assert(c.done);
    cr_assert_eq(c.rc, 0);
    tw_deferred_unref(d);
    tw_string_transport_free(f.st); /* the stream is gone already */
}

CORO_TEST(stream, close_reports_an_unclean_end)
{
    struct fixture f;
    fixture_up(&f);
    struct closing c = {.s = f.s, .rc = 1};
    tw_deferred *d = tw_coro_start(r, closer, &c, NULL);
    tw_string_transport_lose(f.st, TW_ECONNABORTED);
    cr_assert_eq(c.rc, TW_ECONNABORTED);
    tw_deferred_unref(d);
    tw_string_transport_free(f.st);
}

CORO_TEST(stream, closing_a_stream_never_connected_is_enotconn)
{
    tw_coro_stream *s;
    cr_assert_eq(tw_coro_stream_new(&s), 0);
    struct closing c = {.s = s, .rc = 1};
    tw_deferred_unref(tw_coro_start(r, closer, &c, NULL));
    cr_assert_eq(c.rc, TW_ENOTCONN);
}

CORO_TEST(stream, close_outside_a_coroutine_still_frees)
{
    tw_testing_log_capture_start();
    struct fixture f;
    fixture_up(&f);
    cr_assert_eq(tw_await_close(f.s), TW_EINVAL);
    cr_assert_eq(f.st->lose_calls, 1, "freeing a connected stream closes it");
    tw_testing_log_capture_stop();
    tw_string_transport_free(f.st);
}

CORO_TEST(stream, freeing_a_stream_with_a_waiting_reader_releases_the_reader)
{
    struct fixture f;
    fixture_up(&f);
    struct reads rd = {.s = f.s, .chunk = 8, .reads = 1};
    tw_deferred *d = tw_coro_start(r, reader, &rd, NULL);
    tw_coro_stream_free(f.s);
    cr_assert_eq(rd.n[0], TW_ECANCELED);
    cr_assert_eq(f.st->lose_calls, 1);
    tw_string_transport_feed(f.st, "dropped", 7); /* arrives after the free: dropped */
    tw_deferred_unref(d);
    tw_string_transport_free(f.st);
}

CORO_TEST(stream, the_transport_may_go_first)
{
    struct fixture f;
    fixture_up(&f);
    tw_string_transport_free(f.st); /* loses the connection, releases the protocol */
    cr_assert_eq(tw_failure_code(tw_coro_stream_failure(f.s)), TW_ECONNDONE);
    tw_coro_stream_free(f.s);
}

CORO_TEST(stream, out_of_memory_while_buffering_aborts_the_connection)
{
    tw_testing_log_capture_start();
    struct fixture f;
    fixture_up(&f);
    tw_testing_fail_alloc_after(0);
    tw_string_transport_feed(f.st, "abc", 3);
    tw_testing_fail_alloc_off();
    cr_assert_eq(f.st->abort_calls, 1);
    cr_assert_eq(tw_coro_stream_buffered(f.s), 0);
    cr_assert_eq(tw_testing_log_count("out of memory"), 1);
    tw_testing_log_capture_stop();
    fixture_down(&f);
    for (long n = 0;; n++) {
        tw_coro_stream *s;
        tw_testing_fail_alloc_after(n);
        int rc = tw_coro_stream_new(&s);
        tw_testing_fail_alloc_off();
        if (rc == 0) {
            tw_coro_stream_free(s);
            break;
        }
        cr_assert_eq(rc, TW_ENOMEM);
    }
}

/* ---- Over TCP: a client and a server, both coroutines */

static int served;

static tw_result serve_echo(void *arg)
{
    tw_coro_stream *s = arg;
    char buf[1024];
    for (;;) {
        ssize_t n = tw_await_read(s, buf, sizeof buf);
        if (n <= 0)
            break;
        if (tw_await_write(s, buf, (size_t)n) < 0)
            break;
    }
    served++;
    tw_coro_stream_free(s);
    return tw_result_from_int(0);
}

/* The server's factory: a stream per connection, served by a coroutine. */
static tw_protocol *build_served(tw_factory *f, const tw_address *addr)
{
    (void)addr;
    tw_coro_stream *s;
    if (tw_coro_stream_new(&s) < 0)
        return NULL;
    tw_protocol *p = tw_coro_stream_protocol(s);
    tw_deferred_unref(tw_coro_start(f->data, serve_echo, s, NULL));
    return p;
}

static const tw_factory_ops served_ops = {.build_protocol = build_served};

static tw_listening_port *listen_local(tw_reactor *r, tw_factory *f, unsigned *port)
{
    tw_address addr;
    cr_assert_eq(tw_address_from_ip(&addr, "127.0.0.1", 0), 0);
    tw_listening_port *lp;
    cr_assert_eq(tw_listen_stream(r, &addr, NULL, f, &lp), 0);
    tw_address host;
    cr_assert_eq(tw_listening_port_get_host(lp, &host), 0);
    *port = tw_address_port(&host);
    return lp;
}

struct client_run {
    tw_reactor *r;
    char where[64];
    char got[4096];
    int rc;
};

static tw_result echo_client(void *arg)
{
    struct client_run *c = arg;
    tw_coro_stream *s;
    tw_failure *why;
    c->rc = tw_await_connect(c->r, c->where, &s, &why);
    if (c->rc < 0)
        return tw_result_fail(why);
    const char *msgs[] = {"one", "two!", "three"};
    size_t at = 0;
    for (int i = 0; i < 3; i++) {
        size_t len = strlen(msgs[i]);
        cr_assert_eq(tw_await_write(s, msgs[i], len), 0);
        cr_assert_eq(tw_await_read_exactly(s, c->got + at, len), (ssize_t)len);
        at += len;
    }
    c->rc = tw_await_close(s);
    return tw_result_from_int((intptr_t)at);
}

CORO_TEST(stream, a_coroutine_client_talks_to_a_coroutine_server_over_tcp)
{
    tw_factory f;
    tw_factory_init(&f, &served_ops, NULL, 0, r);
    unsigned port;
    tw_listening_port *lp = listen_local(r, &f, &port);
    struct client_run c = {.r = r};
    snprintf(c.where, sizeof c.where, "tcp:127.0.0.1:%u", port);
    tw_deferred *d = tw_coro_start(r, echo_client, &c, NULL);
    tw_result res = twtest_wait(r, d);
    cr_assert_null(res.failure, "%s", res.failure ? tw_failure_message(res.failure) : "");
    cr_assert_eq(tw_result_int(res), 12);
    cr_assert_eq(memcmp(c.got, "onetwo!three", 12), 0);
    cr_assert_eq(c.rc, 0, "closed cleanly");
    tw_deferred_unref(d);
    /* The server's coroutine sees the end on its next read. */
    for (int i = 0; i < 200 && served == 0; i++)
        tw_reactor_iterate(r, 0.01);
    cr_assert_eq(served, 1);
    tw_deferred_unref(tw_listening_port_stop(lp));
}

CORO_TEST(stream, a_refused_connection_is_econnrefused_with_its_failure)
{
    /* A port that was free a moment ago: listen, learn it, stop. */
    tw_factory f;
    tw_factory_init(&f, &served_ops, NULL, 0, r);
    unsigned port;
    tw_deferred_unref(tw_listening_port_stop(listen_local(r, &f, &port)));
    struct client_run c = {.r = r};
    snprintf(c.where, sizeof c.where, "tcp:127.0.0.1:%u", port);
    tw_deferred *d = tw_coro_start(r, echo_client, &c, NULL);
    tw_result res = twtest_wait(r, d);
    cr_assert_eq(c.rc, TW_ECONNREFUSED);
    cr_assert_eq(coro_code(res), TW_ECONNREFUSED);
    tw_result_release(&res);
    tw_deferred_unref(d);
}

CORO_TEST(stream, a_bad_description_is_einval_with_its_message)
{
    struct client_run c = {.r = r};
    snprintf(c.where, sizeof c.where, "tcp:127.0.0.1:70000");
    tw_deferred *d = tw_coro_start(r, echo_client, &c, NULL);
    tw_result res = twtest_wait(r, d);
    cr_assert_eq(c.rc, TW_EINVAL);
    cr_assert(strstr(tw_failure_message(res.failure), "out of range"), "%s",
              tw_failure_message(res.failure));
    tw_result_release(&res);
    tw_deferred_unref(d);
}

/* A server that sends a lot and closes; the client reads it all. */
#define BIG (16 * 1024 * 1024 + 17) /* more than loopback's buffers hold */

static tw_result serve_big(void *arg)
{
    tw_coro_stream *s = arg;
    static char block[65536];
    memset(block, 'z', sizeof block);
    size_t sent = 0;
    while (sent < BIG) {
        size_t n = BIG - sent < sizeof block ? BIG - sent : sizeof block;
        if (tw_await_write(s, block, n) < 0)
            break;
        sent += n;
        cr_assert_leq(tw_transport_write_buffer_size(tw_coro_stream_transport(s)),
                      TW_TRANSPORT_HIGH_WATER + sizeof block,
                      "the writer waited for the buffer to drain");
    }
    tw_await_close(s);
    served++;
    return tw_result_from_int(0);
}

static tw_protocol *build_big(tw_factory *f, const tw_address *addr)
{
    (void)addr;
    tw_coro_stream *s;
    if (tw_coro_stream_new(&s) < 0)
        return NULL;
    tw_protocol *p = tw_coro_stream_protocol(s);
    tw_deferred_unref(tw_coro_start(f->data, serve_big, s, NULL));
    return p;
}

static const tw_factory_ops big_ops = {.build_protocol = build_big};

static tw_result slow_reader(void *arg)
{
    struct client_run *c = arg;
    tw_coro_stream *s;
    tw_failure *why;
    c->rc = tw_await_connect(c->r, c->where, &s, &why);
    if (c->rc < 0)
        return tw_result_fail(why);
    size_t total = 0;
    char buf[8192];
    /* Not reading at first: the kernel's buffers fill, then the server's
     * transport queue passes its high-water mark and its writer waits. */
    tw_await_sleep(tw_reactor_clock(c->r), 0.2);
    size_t ahead = tw_coro_stream_buffered(s);
    cr_assert_geq(ahead, TW_CORO_STREAM_BUFFER, "read ahead up to the mark");
    cr_assert_leq(ahead, TW_CORO_STREAM_BUFFER + TW_NET_READ_SIZE, "and then paused");
    for (;;) {
        ssize_t n = tw_await_read(s, buf, sizeof buf);
        if (n <= 0) {
            c->rc = (int)n;
            break;
        }
        total += (size_t)n;
        cr_assert_leq(tw_coro_stream_buffered(s), TW_CORO_STREAM_BUFFER + TW_NET_READ_SIZE);
        if (total % (512 * 1024) < sizeof buf) /* now and then, let the peer get ahead */
            tw_await_sleep(tw_reactor_clock(c->r), 0.005);
    }
    tw_coro_stream_free(s);
    return tw_result_from_int((intptr_t)total);
}

CORO_TEST(stream, megabytes_flow_with_bounded_buffers_both_ways)
{
    tw_factory f;
    tw_factory_init(&f, &big_ops, NULL, 0, r);
    unsigned port;
    tw_listening_port *lp = listen_local(r, &f, &port);
    struct client_run c = {.r = r};
    snprintf(c.where, sizeof c.where, "tcp:127.0.0.1:%u", port);
    tw_deferred *d = tw_coro_start(r, slow_reader, &c, NULL);
    tw_result res = twtest_wait(r, d);
    cr_assert_null(res.failure);
    cr_assert_eq(tw_result_int(res), BIG);
    cr_assert_eq(c.rc, 0, "then a clean end");
    tw_deferred_unref(d);
    for (int i = 0; i < 200 && served == 0; i++)
        tw_reactor_iterate(r, 0.01);
    cr_assert_eq(served, 1);
    tw_deferred_unref(tw_listening_port_stop(lp));
}
