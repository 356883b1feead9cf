/* The string transport (proto_helpers.StringTransport) and the chunked
 * feeding helpers. */
#include "twtest.h"

#include <string.h>

/* A protocol that records every event it sees. */
typedef struct rec_proto {
    tw_protocol base;
    int made, lost, freed;
    int lost_code;
    char got[256];
    size_t ngot;
    size_t calls;
    /* Optional behaviour. */
    bool lose_on_data;
    bool ref_transport_on_lost;
    tw_transport *kept;
    int *freed_out; /* survives the protocol's memory */
} rec_proto;

static void rp_made(tw_protocol *p)
{
    ((rec_proto *)p)->made++;
}

static void rp_data(tw_protocol *p, const char *data, size_t len)
{
    rec_proto *rp = (rec_proto *)p;
    cr_assert_leq(rp->ngot + len, sizeof rp->got);
    memcpy(rp->got + rp->ngot, data, len);
    rp->ngot += len;
    rp->calls++;
    if (rp->lose_on_data)
        tw_transport_lose_connection(p->transport);
}

static void rp_lost(tw_protocol *p, tw_failure *reason)
{
    rec_proto *rp = (rec_proto *)p;
    rp->lost++;
    rp->lost_code = tw_failure_code(reason);
    cr_assert_not_null(p->transport, "transport still set in connection_lost");
    if (rp->ref_transport_on_lost)
        rp->kept = tw_transport_ref(p->transport);
}

static void rp_free(tw_protocol *p)
{
    rec_proto *rp = (rec_proto *)p;
    rp->freed++;
    if (rp->freed_out)
        (*rp->freed_out)++;
}

static const tw_protocol_ops rp_ops = {
    .connection_made = rp_made,
    .data_received = rp_data,
    .connection_lost = rp_lost,
    .free = rp_free,
};

static void rp_init(rec_proto *rp)
{
    memset(rp, 0, sizeof *rp);
    tw_protocol_init(&rp->base, &rp_ops);
}

TW_TEST(string_transport, records_writes_in_order)
{
    tw_string_transport *st;
    cr_assert_eq(tw_string_transport_new(&st), 0);
    rec_proto rp;
    rp_init(&rp);
    cr_assert_eq(tw_string_transport_connect(st, &rp.base), 0);
    cr_assert_eq(rp.made, 1);
    cr_assert_eq(rp.base.transport, &st->base);
    cr_assert_eq(st->base.protocol, &rp.base);
    cr_assert_null(st->base.reactor);

    tw_transport *t = &st->base;
    cr_assert_eq(tw_transport_write(t, "abc", 3), 0);
    struct iovec iov[2] = {{.iov_base = "de", .iov_len = 2}, {.iov_base = "f", .iov_len = 1}};
    cr_assert_eq(tw_transport_write_sequence(t, iov, 2), 0);
    cr_assert_eq(tw_transport_write(t, "", 0), 0);
    size_t n;
    const char *v = tw_string_transport_value(st, &n);
    cr_assert_eq(n, 6);
    cr_assert_str_eq(v, "abcdef");

    tw_string_transport_clear(st);
    v = tw_string_transport_value(st, &n);
    cr_assert_eq(n, 0);
    cr_assert_str_eq(v, "");
    cr_assert_eq(tw_transport_write(t, "g", 1), 0);
    cr_assert_str_eq(tw_string_transport_value(st, NULL), "g");

    cr_assert_eq(tw_string_transport_lose(st, 0), 0);
    cr_assert_eq(rp.lost, 1);
    cr_assert_eq(rp.lost_code, TW_ECONNDONE);
    cr_assert_eq(rp.freed, 1);
    cr_assert_null(rp.base.transport);
    cr_assert_null(st->base.protocol);
    tw_string_transport_free(st);
}

static int released;
static void count_release(void *arg)
{
    released += *(int *)arg;
}

TW_TEST(string_transport, zerocopy_released_once)
{
    tw_string_transport *st;
    cr_assert_eq(tw_string_transport_new(&st), 0);
    rec_proto rp;
    rp_init(&rp);
    tw_string_transport_connect(st, &rp.base);
    int one = 1;
    released = 0;
    cr_assert_eq(tw_transport_write_zerocopy(&st->base, "zc", 2, count_release, &one), 0);
    cr_assert_eq(released, 1);
    cr_assert_str_eq(tw_string_transport_value(st, NULL), "zc");
    tw_string_transport_free(st); /* loses it: nothing leaks */
    cr_assert_eq(rp.lost, 1);
    cr_assert_eq(rp.freed, 1);
}

TW_TEST(string_transport, closing_records_and_refuses_writes)
{
    tw_string_transport *st;
    cr_assert_eq(tw_string_transport_new(&st), 0);
    rec_proto rp;
    rp_init(&rp);
    tw_string_transport_connect(st, &rp.base);
    tw_transport *t = &st->base;

    cr_assert_eq(tw_transport_lose_write_connection(t), 0);
    cr_assert_eq(st->lose_write_calls, 1);
    cr_assert_not(st->disconnecting);
    cr_assert_eq(tw_transport_write(t, "x", 1), TW_ENOTCONN);

    cr_assert_eq(tw_transport_lose_connection(t), 0);
    cr_assert_eq(st->lose_calls, 1);
    cr_assert(st->disconnecting);
    cr_assert_eq(rp.lost, 0, "connection_lost waits for the test");
    cr_assert_eq(tw_transport_abort_connection(t), 0);
    cr_assert_eq(st->abort_calls, 1);
    cr_assert_eq(tw_string_transport_value(st, NULL)[0], '\0');

    /* Bytes still reach the protocol: it must ignore them itself. */
    cr_assert_eq(tw_string_transport_feed(st, "late", 4), 0);
    cr_assert_eq(rp.ngot, 4);

    cr_assert_eq(tw_string_transport_lose(st, TW_ECONNABORTED), 0);
    cr_assert_eq(rp.lost_code, TW_ECONNABORTED);
    cr_assert_eq(tw_string_transport_lose(st, 0), TW_ENOTCONN);
    cr_assert_eq(rp.lost, 1);
    cr_assert_eq(tw_string_transport_feed(st, "x", 1), TW_ENOTCONN);
    cr_assert_eq(rp.ngot, 4);
    cr_assert_eq(tw_transport_write(t, "x", 1), TW_ENOTCONN);
    cr_assert_eq(tw_transport_pause_producing(t), TW_ENOTCONN);
    tw_address a;
    cr_assert_eq(tw_transport_get_peer(t, &a), TW_ENOTCONN);
    cr_assert_eq(tw_transport_write_buffer_size(t), 0);
    rec_proto again;
    rp_init(&again);
    cr_assert_eq(tw_string_transport_connect(st, &again.base), TW_EBUSY);
    cr_assert_eq(again.made, 0);
    tw_string_transport_free(st);
}

TW_TEST(string_transport, protocol_closing_from_data_received)
{
    tw_string_transport *st;
    cr_assert_eq(tw_string_transport_new(&st), 0);
    rec_proto rp;
    rp_init(&rp);
    rp.lose_on_data = true;
    tw_string_transport_connect(st, &rp.base);
    cr_assert_eq(tw_string_transport_feed(st, "hi", 2), 0);
    cr_assert_eq(st->lose_calls, 1);
    cr_assert_eq(rp.lost, 0);
    cr_assert_eq(tw_string_transport_lose(st, -ECONNRESET), 0);
    cr_assert_eq(rp.lost_code, -ECONNRESET);
    tw_string_transport_free(st);
}

TW_TEST(string_transport, addresses_default_and_settable)
{
    tw_string_transport *st;
    cr_assert_eq(tw_string_transport_new(&st), 0);
    rec_proto rp;
    rp_init(&rp);
    tw_address a;
    cr_assert_eq(tw_transport_get_peer(&st->base, &a), TW_ENOTCONN, "no connection yet");
    tw_string_transport_connect(st, &rp.base);
    char buf[TW_ADDRESS_STRLEN];
    cr_assert_eq(tw_transport_get_host(&st->base, &a), 0);
    cr_assert_str_eq(tw_address_format(&a, buf, sizeof buf), "127.0.0.1:12345");
    cr_assert_eq(tw_transport_get_peer(&st->base, &a), 0);
    cr_assert_str_eq(tw_address_format(&a, buf, sizeof buf), "127.0.0.1:54321");
    cr_assert_eq(tw_address_from_ip(&st->peer, "::1", 443), 0);
    cr_assert_eq(tw_transport_get_peer(&st->base, &a), 0);
    cr_assert_str_eq(tw_address_format(&a, buf, sizeof buf), "[::1]:443");
    cr_assert_eq(tw_transport_set_option(&st->base, TW_OPT_TCP_NODELAY, 1), 0);
    cr_assert_eq(st->nodelay, 1);
    cr_assert_eq(st->keepalive, -1);
    tw_string_transport_free(st);
}

TW_TEST(string_transport, records_its_own_pause_and_resume)
{
    tw_string_transport *st;
    cr_assert_eq(tw_string_transport_new(&st), 0);
    rec_proto rp;
    rp_init(&rp);
    tw_string_transport_connect(st, &rp.base);
    cr_assert_not(st->paused);
    cr_assert_eq(tw_transport_pause_producing(&st->base), 0);
    cr_assert_eq(tw_transport_pause_producing(&st->base), 0);
    cr_assert(st->paused);
    cr_assert_eq(tw_transport_resume_producing(&st->base), 0);
    cr_assert_not(st->paused);
    cr_assert_eq(st->pause_calls, 2);
    cr_assert_eq(st->resume_calls, 1);
    /* Through the producer view too. */
    tw_producer *view = tw_transport_producer(&st->base);
    view->ops->pause_producing(view);
    cr_assert(st->paused);
    cr_assert_eq(st->pause_calls, 3);
    tw_string_transport_free(st);
}

/* A producer that records what its consumer asks. */
typedef struct rec_producer {
    tw_producer base;
    int pauses, resumes, stops;
    tw_transport *t;
    int write_on_resume; /* pull: bytes to write each time it is asked */
} rec_producer;

static void prod_pause(tw_producer *p)
{
    ((rec_producer *)p)->pauses++;
}

static void prod_resume(tw_producer *p)
{
    rec_producer *rp = (rec_producer *)p;
    rp->resumes++;
    for (int i = 0; i < rp->write_on_resume; i++)
        cr_assert_eq(tw_transport_write(rp->t, "p", 1), 0);
}

static void prod_stop(tw_producer *p)
{
    ((rec_producer *)p)->stops++;
}

static const tw_producer_ops prod_ops = {prod_pause, prod_resume, prod_stop};

TW_TEST(string_transport, streaming_producer_paused_above_high_water)
{
    tw_string_transport *st;
    cr_assert_eq(tw_string_transport_new(&st), 0);
    rec_proto rp;
    rp_init(&rp);
    tw_string_transport_connect(st, &rp.base);
    tw_transport *t = &st->base;
    rec_producer prod = {.base.ops = &prod_ops, .t = t};
    cr_assert_eq(tw_transport_register_producer(t, &prod.base, true), 0);
    cr_assert_eq(st->producer, &prod.base);
    cr_assert(st->streaming);
    cr_assert_eq(prod.resumes, 0, "a streaming producer is not asked at once");
    rec_producer other = {.base.ops = &prod_ops};
    cr_assert_eq(tw_transport_register_producer(t, &other.base, true), TW_EBUSY);

    cr_assert_eq(tw_string_transport_set_buffer_size(st, TW_TRANSPORT_HIGH_WATER), 0);
    cr_assert_eq(prod.pauses, 0, "at the mark is not above it");
    cr_assert_eq(tw_transport_write_buffer_size(t), TW_TRANSPORT_HIGH_WATER);
    tw_string_transport_set_buffer_size(st, TW_TRANSPORT_HIGH_WATER + 1);
    cr_assert_eq(prod.pauses, 1);
    cr_assert(st->producer_paused);
    tw_string_transport_set_buffer_size(st, TW_TRANSPORT_HIGH_WATER + 100);
    cr_assert_eq(prod.pauses, 1, "paused once");
    tw_string_transport_set_buffer_size(st, TW_TRANSPORT_LOW_WATER + 1);
    cr_assert_eq(prod.resumes, 0, "still above the low-water mark");
    tw_string_transport_set_buffer_size(st, TW_TRANSPORT_LOW_WATER);
    cr_assert_eq(prod.resumes, 1);
    cr_assert_not(st->producer_paused);
    tw_string_transport_set_buffer_size(st, 0);
    cr_assert_eq(prod.resumes, 1, "resumed once");

    /* Lowered marks apply. */
    cr_assert_eq(tw_transport_set_write_buffer_limits(t, 10, 2), 0);
    tw_string_transport_set_buffer_size(st, 11);
    cr_assert_eq(prod.pauses, 2);
    tw_string_transport_set_buffer_size(st, 2);
    cr_assert_eq(prod.resumes, 2);
    cr_assert_eq(st->producer_pauses, 2);
    cr_assert_eq(st->producer_resumes, 2);

    /* Losing the connection stops and unregisters it, once. */
    cr_assert_eq(tw_string_transport_lose(st, 0), 0);
    cr_assert_eq(prod.stops, 1);
    cr_assert_null(st->producer);
    tw_string_transport_free(st);
    cr_assert_eq(prod.stops, 1);
}

TW_TEST(string_transport, queued_writes_fill_the_buffer)
{
    tw_string_transport *st;
    cr_assert_eq(tw_string_transport_new(&st), 0);
    rec_proto rp;
    rp_init(&rp);
    tw_string_transport_connect(st, &rp.base);
    tw_transport *t = &st->base;
    st->queue_writes = true;
    cr_assert_eq(tw_transport_set_write_buffer_limits(t, 4, 1), 0);
    rec_producer prod = {.base.ops = &prod_ops, .t = t};
    cr_assert_eq(tw_transport_register_producer(t, &prod.base, true), 0);
    cr_assert_eq(tw_transport_write(t, "abcd", 4), 0);
    cr_assert_eq(prod.pauses, 0);
    cr_assert_eq(tw_transport_write(t, "e", 1), 0);
    cr_assert_eq(prod.pauses, 1);
    cr_assert_eq(tw_transport_write_buffer_size(t), 5);
    tw_string_transport_set_buffer_size(st, 0);
    cr_assert_eq(prod.resumes, 1);
    cr_assert_eq(tw_transport_unregister_producer(t), 0);
    cr_assert_null(st->producer);
    tw_string_transport_lose(st, 0);
    cr_assert_eq(prod.stops, 0, "unregistered: not stopped");
    tw_string_transport_free(st);
}

TW_TEST(string_transport, pull_producer_asked_for_more)
{
    tw_string_transport *st;
    cr_assert_eq(tw_string_transport_new(&st), 0);
    rec_proto rp;
    rp_init(&rp);
    tw_string_transport_connect(st, &rp.base);
    tw_transport *t = &st->base;
    rec_producer prod = {.base.ops = &prod_ops, .t = t, .write_on_resume = 2};
    cr_assert_eq(tw_transport_register_producer(t, &prod.base, false), 0);
    cr_assert_eq(prod.resumes, 1, "asked when it registers");
    cr_assert_str_eq(tw_string_transport_value(st, NULL), "pp");
    tw_string_transport_set_buffer_size(st, TW_TRANSPORT_HIGH_WATER * 2);
    cr_assert_eq(prod.pauses, 0, "a pull producer is never paused");
    tw_string_transport_set_buffer_size(st, TW_TRANSPORT_LOW_WATER + 1);
    cr_assert_eq(prod.resumes, 1);
    tw_string_transport_set_buffer_size(st, 0);
    cr_assert_eq(prod.resumes, 2);
    tw_string_transport_set_buffer_size(st, 0);
    cr_assert_eq(prod.resumes, 3, "each drain asks again");
    cr_assert_str_eq(tw_string_transport_value(st, NULL), "pppppp");
    tw_string_transport_free(st);
    cr_assert_eq(prod.stops, 1);
    cr_assert_eq(rp.freed, 1);
}

TW_TEST(string_transport, misuse)
{
    cr_assert_eq(tw_string_transport_new(NULL), TW_EINVAL);
    tw_string_transport *st;
    cr_assert_eq(tw_string_transport_new(&st), 0);
    cr_assert_eq(tw_string_transport_connect(st, NULL), TW_EINVAL);
    cr_assert_eq(tw_string_transport_feed(st, "x", 1), TW_ENOTCONN);
    cr_assert_eq(tw_string_transport_lose(st, 0), TW_ENOTCONN);
    cr_assert_eq(tw_string_transport_set_buffer_size(st, 1), TW_ENOTCONN);
    cr_assert_eq(tw_string_transport_of(&st->base), st);
    cr_assert_null(tw_string_transport_of(NULL));
    rec_proto rp;
    rp_init(&rp);
    tw_string_transport_connect(st, &rp.base);
    rec_proto second;
    rp_init(&second);
    cr_assert_eq(tw_string_transport_connect(st, &second.base), TW_EBUSY);
    cr_assert_eq(second.made, 0);
    cr_assert_eq(tw_string_transport_feed(st, NULL, 1), TW_EINVAL);
    cr_assert_eq(tw_transport_register_producer(&st->base, NULL, true), TW_EINVAL);
    cr_assert_eq(tw_transport_set_write_buffer_limits(&st->base, 1, 2), TW_EINVAL);
    tw_string_transport_free(NULL);
    tw_string_transport_free(st);
    cr_assert_eq(rp.lost, 1);
}

TW_TEST(string_transport, protocol_keeps_a_reference)
{
    tw_string_transport *st;
    cr_assert_eq(tw_string_transport_new(&st), 0);
    rec_proto rp;
    rp_init(&rp);
    rp.ref_transport_on_lost = true;
    tw_string_transport_connect(st, &rp.base);
    tw_string_transport_free(st); /* last reference: lost, but the protocol took one */
    cr_assert_eq(rp.lost, 1);
    cr_assert_eq(rp.freed, 1);
    cr_assert_not_null(rp.kept);
    cr_assert_eq(tw_transport_write(rp.kept, "x", 1), TW_ENOTCONN);
    tw_transport_unref(rp.kept); /* now it goes (LeakSanitizer checks) */
}

TW_TEST(string_transport, allocation_failure)
{
    tw_string_transport *st = NULL;
    for (long n = 0;; n++) {
        tw_testing_fail_alloc_after(n);
        int rc = tw_string_transport_new(&st);
        tw_testing_fail_alloc_off();
        if (rc == 0)
            break;
        cr_assert_eq(rc, TW_ENOMEM);
        cr_assert_lt(n, 10);
    }
    rec_proto rp;
    rp_init(&rp);
    tw_string_transport_connect(st, &rp.base);
    tw_testing_fail_alloc_after(0);
    cr_assert_eq(tw_transport_write(&st->base, "abc", 3), TW_ENOMEM);
    struct iovec iov[1] = {{.iov_base = "de", .iov_len = 2}};
    cr_assert_eq(tw_transport_write_sequence(&st->base, iov, 1), TW_ENOMEM);
    tw_testing_fail_alloc_off();
    size_t len;
    tw_string_transport_value(st, &len);
    cr_assert_eq(len, 0, "nothing recorded on failure");
    cr_assert_eq(tw_transport_write(&st->base, "abc", 3), 0);
    cr_assert_str_eq(tw_string_transport_value(st, NULL), "abc");
    tw_string_transport_free(st);
}

/* ---- Feeding helpers */

typedef struct pieces {
    char joined[64];
    size_t n, calls, longest;
} pieces;

static void collect(void *ctx, const char *data, size_t len)
{
    pieces *ps = ctx;
    cr_assert_gt(len, 0, "never an empty piece");
    memcpy(ps->joined + ps->n, data, len);
    ps->n += len;
    ps->calls++;
    if (len > ps->longest)
        ps->longest = len;
}

TW_TEST(feed, every_chunk_size_rebuilds_the_stream)
{
    const char *s = "0123456789abcdefghij";
    size_t len = strlen(s);
    for (size_t chunk = len + 2; chunk > 0; chunk--) {
        pieces ps = {0};
        size_t fed = tw_testing_feed_chunks(s, len, chunk, collect, &ps);
        size_t want_chunk = chunk > len ? len : chunk;
        cr_assert_eq(fed, (len + want_chunk - 1) / want_chunk);
        cr_assert_eq(ps.calls, fed);
        cr_assert_eq(ps.longest, want_chunk);
        cr_assert_eq(ps.n, len);
        cr_assert_eq(memcmp(ps.joined, s, len), 0);
    }
    pieces ps = {0};
    cr_assert_eq(tw_testing_feed_chunks(s, len, 0, collect, &ps), 1);
    cr_assert_eq(tw_testing_feed_chunks(s, 0, 3, collect, &ps), 0);
    cr_assert_eq(ps.calls, 1);
}

TW_TEST(feed, every_split_point)
{
    const char *s = "hello";
    for (size_t at = 0; at <= 6; at++) {
        pieces ps = {0};
        size_t fed = tw_testing_feed_split(s, 5, at, collect, &ps);
        cr_assert_eq(fed, at == 0 || at >= 5 ? 1 : 2);
        cr_assert_eq(ps.n, 5);
        cr_assert_eq(memcmp(ps.joined, s, 5), 0);
    }
}

TW_TEST(feed, through_a_string_transport)
{
    const char *s = "one two three";
    size_t len = strlen(s);
    for (size_t chunk = len; chunk > 0; chunk--) {
        tw_string_transport *st;
        cr_assert_eq(tw_string_transport_new(&st), 0);
        rec_proto rp;
        rp_init(&rp);
        tw_string_transport_connect(st, &rp.base);
        tw_testing_feed_chunks(s, len, chunk, tw_string_transport_feeder, st);
        cr_assert_eq(rp.ngot, len);
        cr_assert_eq(memcmp(rp.got, s, len), 0);
        cr_assert_eq(rp.calls, (len + chunk - 1) / chunk);
        tw_string_transport_free(st);
        cr_assert_eq(rp.freed, 1);
    }
}
