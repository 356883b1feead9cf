/* LineReceiver and LineOnlyReceiver over a string transport, every input fed
 * in every chunk size. */
#include "twtest.h"

#include <twine/basic.h>

#include <string.h>

/* Records events as text: "L<line>|" per line, "R<bytes>|" per raw call,
 * "X" for line_length_exceeded. */
typedef struct tester {
    tw_line_receiver lr;
    char log[1024];
    size_t n;
    int lines, made, lost, freed;
    /* Behaviour. */
    const char *raw_on;   /* line that switches to raw mode */
    size_t raw_left;      /* raw bytes to take before going back to lines */
    const char *lose_on;  /* line that closes the connection */
    const char *clear_on; /* line that clears the buffer */
    const char *delim_on; /* line after which the delimiter becomes "!" */
    const char *pause_on; /* line that pauses the receiver */
    bool pause_every;     /* every line and raw chunk pauses it */
    bool resume_inside;   /* ... and resumes it again before returning */
    char taken[256];      /* what clear_line_buffer handed over */
    size_t ntaken;
} tester;

static void logs(tester *t, const char *s, size_t n)
{
    cr_assert_lt(t->n + n, sizeof t->log);
    memcpy(t->log + t->n, s, n);
    t->n += n;
    t->log[t->n] = '\0';
}

static bool is(const char *want, const char *line, size_t len)
{
    return want && strlen(want) == len && memcmp(want, line, len) == 0;
}

static void take(void *ctx, const char *data, size_t len)
{
    tester *t = ctx;
    memcpy(t->taken + t->ntaken, data, len);
    t->ntaken += len;
}

static void t_line(tw_protocol *p, const char *line, size_t len)
{
    tester *t = (tester *)p;
    t->lines++;
    logs(t, "L", 1);
    logs(t, line, len);
    logs(t, "|", 1);
    if (is(t->raw_on, line, len))
        cr_assert_eq(tw_line_receiver_set_raw_mode(p), 0);
    if (is(t->lose_on, line, len))
        cr_assert_eq(tw_basic_lose_connection(p), 0);
    if (is(t->clear_on, line, len))
        tw_line_receiver_clear_line_buffer(p, take, t);
    if (is(t->delim_on, line, len))
        cr_assert_eq(tw_line_receiver_set_delimiter(p, "!", 1), 0);
    if (is(t->pause_on, line, len) || t->pause_every) {
        cr_assert_eq(tw_basic_pause_producing(p), 0);
        if (t->resume_inside)
            cr_assert_eq(tw_basic_resume_producing(p), 0);
    }
}

static void t_raw(tw_protocol *p, const char *data, size_t len)
{
    tester *t = (tester *)p;
    size_t n = len < t->raw_left ? len : t->raw_left;
    logs(t, "R", 1);
    logs(t, data, n);
    logs(t, "|", 1);
    t->raw_left -= n;
    if (t->raw_left == 0)
        cr_assert_eq(tw_line_receiver_set_line_mode(p, data + n, len - n), 0);
    if (t->pause_every)
        cr_assert_eq(tw_basic_pause_producing(p), 0);
}

static void t_made(tw_protocol *p)
{
    ((tester *)p)->made++;
}

static void t_lost(tw_protocol *p, tw_failure *reason)
{
    ((tester *)p)->lost++;
}

static void t_free(tw_protocol *p)
{
    ((tester *)p)->freed++;
}

static void t_exceeded(tw_protocol *p, const char *data, size_t len)
{
    logs((tester *)p, "X", 1);
}

static const tw_line_receiver_ops crlf_ops = {
    .protocol = TW_LINE_RECEIVER_PROTOCOL_OPS,
    .line_received = t_line,
    .raw_data_received = t_raw,
    .connection_made = t_made,
    .connection_lost = t_lost,
    .free = t_free,
};

static const tw_line_receiver_ops custom_ops = {
    .protocol = TW_LINE_RECEIVER_PROTOCOL_OPS,
    .line_received = t_line,
    .raw_data_received = t_raw,
    .free = t_free,
    .delimiter = "<>",
    .max_length = 8,
};

static const tw_line_receiver_ops only_ops = {
    .protocol = TW_LINE_RECEIVER_PROTOCOL_OPS,
    .line_received = t_line,
    .free = t_free,
    .line_only = true,
    .max_length = 5,
};

static const tw_line_receiver_ops hook_ops = {
    .protocol = TW_LINE_RECEIVER_PROTOCOL_OPS,
    .line_received = t_line,
    .line_length_exceeded = t_exceeded,
    .free = t_free,
    .max_length = 3,
};

typedef struct run {
    tw_string_transport *st;
    tester t;
} run;

static void start(run *r, const tw_line_receiver_ops *ops, const tester *setup)
{
    cr_assert_eq(tw_string_transport_new(&r->st), 0);
    tw_line_receiver_init(&r->t.lr, ops);
    if (setup) {
        r->t.raw_on = setup->raw_on;
        r->t.raw_left = setup->raw_left;
        r->t.lose_on = setup->lose_on;
        r->t.clear_on = setup->clear_on;
        r->t.delim_on = setup->delim_on;
        r->t.pause_on = setup->pause_on;
        r->t.pause_every = setup->pause_every;
        r->t.resume_inside = setup->resume_inside;
    }
    cr_assert_eq(tw_string_transport_connect(r->st, &r->t.lr.rx.base), 0);
}

static void finish(run *r)
{
    tw_string_transport_free(r->st);
    cr_assert_eq(r->t.freed, 1);
}

/* Feeds data in every chunk size, checks the log each time. */
static void every_chunk(const tw_line_receiver_ops *ops, const tester *setup, const char *data,
                        const char *want)
{
    size_t len = strlen(data);
    for (size_t chunk = len; chunk > 0; chunk--) {
        run r = {0};
        start(&r, ops, setup);
        tw_testing_feed_chunks(data, len, chunk, tw_string_transport_feeder, r.st);
        cr_assert_str_eq(r.t.log, want, "chunk size %zu", chunk);
        finish(&r);
    }
}

TW_TEST(lines, crlf_lines_in_every_chunking)
{
    every_chunk(&crlf_ops, NULL, "len 10\r\n0123456789\r\n\r\nlast\r\npartial",
                "Llen 10|L0123456789|L|Llast|");
}

TW_TEST(lines, custom_delimiter_and_partial_delimiters)
{
    every_chunk(&custom_ops, NULL, "a<b<>c<<>><>x<", "La<b|Lc<|L>|");
}

TW_TEST(lines, every_split_point)
{
    const char *data = "one\r\ntwo\r\nthree\r\n";
    size_t len = strlen(data);
    for (size_t at = 0; at <= len; at++) {
        run r = {0};
        start(&r, &crlf_ops, NULL);
        tw_testing_feed_split(data, len, at, tw_string_transport_feeder, r.st);
        cr_assert_str_eq(r.t.log, "Lone|Ltwo|Lthree|", "split at %zu", at);
        finish(&r);
    }
}

TW_TEST(lines, hooks_forwarded)
{
    run r = {0};
    start(&r, &crlf_ops, NULL);
    cr_assert_eq(r.t.made, 1);
    cr_assert_eq(tw_string_transport_lose(r.st, 0), 0);
    cr_assert_eq(r.t.lost, 1);
    cr_assert_eq(r.t.freed, 1);
    tw_string_transport_free(r.st);
}

TW_TEST(lines, send_line_uses_the_delimiter)
{
    run r = {0};
    start(&r, &custom_ops, NULL);
    tw_protocol *p = &r.t.lr.rx.base;
    cr_assert_eq(tw_line_receiver_send_line(p, "hi", 2), 0);
    cr_assert_eq(tw_line_receiver_send_line(p, "", 0), 0);
    cr_assert_eq(tw_line_receiver_set_delimiter(p, "\n", 1), 0);
    cr_assert_eq(tw_line_receiver_send_line(p, "x", 1), 0);
    cr_assert_str_eq(tw_string_transport_value(r.st, NULL), "hi<><>x\n");
    char big[300];
    memset(big, 'b', sizeof big);
    tw_testing_fail_alloc_after(0);
    int rc = tw_line_receiver_send_line(p, big, sizeof big);
    tw_testing_fail_alloc_off();
    cr_assert_eq(rc, TW_ENOMEM);
    cr_assert_str_eq(tw_string_transport_value(r.st, NULL), "hi<><>x\n");
    finish(&r);
}

TW_TEST(lines, max_length_exceeded_closes_with_a_reason)
{
    tw_testing_log_capture_start();
    /* 8 bytes pass, 9 do not, with or without the delimiter seen. */
    every_chunk(&custom_ops, NULL, "12345678<>123456789<>after<>", "L12345678|");
    every_chunk(&custom_ops, NULL, "12345678<>1234567890", "L12345678|");
    cr_assert_gt(tw_testing_log_count("line longer than 8 bytes"), 0);
    tw_testing_log_capture_stop();

    run r = {0};
    start(&r, &custom_ops, NULL);
    tw_string_transport_feed(r.st, "123456789", 9);
    cr_assert_eq(r.st->lose_calls, 1);
    cr_assert(r.t.lr.rx.disconnecting);
    cr_assert(tw_basic_disconnecting(&r.t.lr.rx.base));
    tw_string_transport_feed(r.st, "<>ok<>", 6);
    cr_assert_str_eq(r.t.log, "", "nothing after the close");
    finish(&r);
}

TW_TEST(lines, exceeded_hook_keeps_the_connection)
{
    run r = {0};
    start(&r, &hook_ops, NULL);
    tw_string_transport_feed(r.st, "abc\r\nabcd\r\nxy\r\n", 15);
    cr_assert_str_eq(r.t.log, "Labc|X", "the rest of the chunk is dropped");
    cr_assert_eq(r.st->lose_calls, 0);
    tw_string_transport_feed(r.st, "ok\r\n", 4);
    cr_assert_str_eq(r.t.log, "Labc|XLok|");
    finish(&r);
}

TW_TEST(lines, raw_mode_switch_mid_buffer_and_back)
{
    tester setup = {.raw_on = "BODY", .raw_left = 5};
    /* 5 raw bytes, then line mode re-parses the rest of the raw chunk. */
    const char *data = "head\r\nBODY\r\n12345tail\r\nend\r\n";
    size_t len = strlen(data);
    for (size_t chunk = len; chunk > 0; chunk--) {
        run r = {0};
        start(&r, &crlf_ops, &setup);
        tw_testing_feed_chunks(data, len, chunk, tw_string_transport_feeder, r.st);
        /* Raw bytes come in one or more calls; join them to compare. */
        char joined[256] = "";
        size_t j = 0;
        for (const char *s = r.t.log; *s;) {
            const char *bar = strchr(s, '|');
            if (s[0] == 'R') {
                memcpy(joined + j, s + 1, (size_t)(bar - s - 1));
                j += (size_t)(bar - s - 1);
            } else {
                memcpy(joined + j, s, (size_t)(bar - s + 1));
                j += (size_t)(bar - s + 1);
            }
            s = bar + 1;
        }
        joined[j] = '\0';
        cr_assert_str_eq(joined, "Lhead|LBODY|12345Ltail|Lend|", "chunk %zu: %s", chunk, r.t.log);
        cr_assert_not(r.t.lr.raw);
        finish(&r);
    }
}

TW_TEST(lines, raw_mode_outside_a_callback_hands_over_the_partial_line)
{
    run r = {0};
    start(&r, &crlf_ops, NULL);
    tw_protocol *p = &r.t.lr.rx.base;
    r.t.raw_left = 100;
    tw_string_transport_feed(r.st, "a\r\npart", 7);
    cr_assert_eq(tw_line_receiver_set_raw_mode(p), 0);
    cr_assert(r.t.lr.raw);
    tw_string_transport_feed(r.st, "ial\r\n", 5);
    cr_assert_str_eq(r.t.log, "La|Rpartial\r\n|");
    /* Back to lines by hand, with extra bytes parsed at once. */
    cr_assert_eq(tw_line_receiver_set_line_mode(p, "x\r\ny", 4), 0);
    cr_assert_str_eq(r.t.log, "La|Rpartial\r\n|Lx|");
    tw_string_transport_feed(r.st, "z\r\n", 3);
    cr_assert_str_eq(r.t.log, "La|Rpartial\r\n|Lx|Lyz|");
    finish(&r);
}

TW_TEST(lines, raw_mode_set_aside_out_of_memory)
{
    run r = {0};
    start(&r, &crlf_ops, NULL);
    tw_protocol *p = &r.t.lr.rx.base;
    tw_string_transport_feed(r.st, "part", 4);
    tw_testing_fail_alloc_after(0);
    int rc = tw_line_receiver_set_raw_mode(p);
    tw_testing_fail_alloc_off();
    cr_assert_eq(rc, TW_ENOMEM);
    cr_assert_not(r.t.lr.raw);
    tw_string_transport_feed(r.st, "\r\n", 2);
    cr_assert_str_eq(r.t.log, "Lpart|", "nothing lost");
    finish(&r);
}

TW_TEST(lines, line_only_refuses_raw_mode)
{
    run r = {0};
    start(&r, &only_ops, NULL);
    cr_assert_eq(tw_line_receiver_set_raw_mode(&r.t.lr.rx.base), TW_ENOTSUP);
    every_chunk(&only_ops, NULL, "12345\r\n123456\r\nx\r\n", "L12345|");
    finish(&r);
}

TW_TEST(lines, clear_line_buffer_takes_the_rest)
{
    tester setup = {.clear_on = "two"};
    const char *data = "one\r\ntwo\r\nthree\r\nfour";
    size_t len = strlen(data);
    for (size_t chunk = len; chunk > 0; chunk--) {
        run r = {0};
        start(&r, &crlf_ops, &setup);
        tw_testing_feed_chunks(data, len, chunk, tw_string_transport_feeder, r.st);
        /* Cleared once it is in the chunk being handled: what it took is the
         * rest of that chunk; later chunks parse as usual. */
        size_t after_two = strlen("one\r\ntwo\r\n");
        size_t chunk_end = ((after_two - 1) / chunk + 1) * chunk;
        if (chunk_end > len)
            chunk_end = len;
        cr_assert_eq(r.t.ntaken, chunk_end - after_two, "chunk %zu", chunk);
        cr_assert_eq(memcmp(r.t.taken, data + after_two, r.t.ntaken), 0);
        size_t n;
        tw_protocol *p = &r.t.lr.rx.base;
        r.t.clear_on = NULL;
        r.t.ntaken = 0;
        tw_line_receiver_clear_line_buffer(p, take, &r.t);
        n = r.t.ntaken;
        /* Outside a callback: the partial line held. */
        cr_assert_eq(n == 0 ? 0 : memcmp(r.t.taken, data + len - n, n), 0);
        finish(&r);
    }
}

TW_TEST(lines, nothing_delivered_after_disconnect)
{
    tester setup = {.lose_on = "stop"};
    every_chunk(&crlf_ops, &setup, "a\r\nstop\r\nb\r\nc\r\n", "La|Lstop|");
}

TW_TEST(lines, delimiter_changed_from_a_line)
{
    tester setup = {.delim_on = "switch"};
    every_chunk(&crlf_ops, &setup, "a\r\nswitch\r\nb!c\r\n!", "La|Lswitch|Lb|Lc\r\n|");
}

TW_TEST(lines, set_max_length_applies)
{
    run r = {0};
    start(&r, &crlf_ops, NULL);
    tw_protocol *p = &r.t.lr.rx.base;
    cr_assert_eq(tw_line_receiver_set_max_length(p, 2), 0);
    tw_testing_log_capture_start();
    tw_string_transport_feed(r.st, "ab\r\nabc\r\n", 9);
    cr_assert_eq(tw_testing_log_count("line longer than 2 bytes"), 1);
    tw_testing_log_capture_stop();
    cr_assert_str_eq(r.t.log, "Lab|");
    cr_assert_eq(r.st->lose_calls, 1);
    finish(&r);
}

/* A protocol that feeds itself from inside line_received (a loopback). */
static void reentrant_line(tw_protocol *p, const char *line, size_t len)
{
    t_line(p, line, len);
    if (is("loop", line, len))
        tw_string_transport_feed(tw_string_transport_of(p->transport), "inner\r\n", 7);
}

static const tw_line_receiver_ops reentrant_ops = {
    .protocol = TW_LINE_RECEIVER_PROTOCOL_OPS,
    .line_received = reentrant_line,
    .free = t_free,
};

TW_TEST(lines, reentrant_data_is_queued_behind_the_rest)
{
    /* Queued behind everything received so far, as Twisted's _buffer: fed
     * at once, "next" comes before "inner". */
    run r = {0};
    start(&r, &reentrant_ops, NULL);
    tw_string_transport_feed(r.st, "loop\r\nnext\r\n", 12);
    cr_assert_str_eq(r.t.log, "Lloop|Lnext|Linner|");
    tw_string_transport_feed(r.st, "loop\r\n", 6);
    tw_string_transport_feed(r.st, "x\r\n", 3);
    cr_assert_str_eq(r.t.log, "Lloop|Lnext|Linner|Lloop|Linner|Lx|");
    finish(&r);
}

TW_TEST(lines, reentrant_queue_out_of_memory_closes)
{
    run r = {0};
    start(&r, &reentrant_ops, NULL);
    tw_testing_log_capture_start();
    tw_testing_fail_alloc_after(0);
    tw_string_transport_feed(r.st, "loop\r\nnext\r\n", 12);
    tw_testing_fail_alloc_off();
    cr_assert_eq(tw_testing_log_count("out of memory"), 1);
    tw_testing_log_capture_stop();
    cr_assert_str_eq(r.t.log, "Lloop|");
    cr_assert_eq(r.st->lose_calls, 1);
    finish(&r);
}

TW_TEST(lines, partial_line_out_of_memory_closes)
{
    run r = {0};
    start(&r, &crlf_ops, NULL);
    tw_testing_log_capture_start();
    tw_testing_fail_alloc_after(0);
    tw_string_transport_feed(r.st, "a\r\npartial", 10);
    tw_testing_fail_alloc_off();
    tw_testing_log_capture_stop();
    cr_assert_str_eq(r.t.log, "La|");
    cr_assert_eq(r.st->lose_calls, 1);
    finish(&r);
}

/* The default builder's zeroed block sets itself up at connection_made. */
typedef struct built {
    tw_line_receiver lr;
    int lines;
} built;

static void built_line(tw_protocol *p, const char *line, size_t len)
{
    ((built *)p)->lines++;
    tw_line_receiver_send_line(p, line, len);
}

static const tw_line_receiver_ops built_ops = {
    .protocol = TW_LINE_RECEIVER_PROTOCOL_OPS,
    .line_received = built_line,
    .delimiter = "\n",
};

TW_TEST(lines, default_builder)
{
    tw_factory f;
    tw_factory_init(&f, NULL, &built_ops.protocol, sizeof(built), NULL);
    tw_protocol *p = tw_factory_build_protocol(&f, NULL);
    cr_assert_not_null(p);
    tw_string_transport *st;
    cr_assert_eq(tw_string_transport_new(&st), 0);
    cr_assert_eq(tw_string_transport_connect(st, p), 0);
    tw_string_transport_feed(st, "echo\nme\n", 8);
    cr_assert_eq(((built *)p)->lines, 2);
    cr_assert_str_eq(tw_string_transport_value(st, NULL), "echo\nme\n");
    cr_assert_eq(tw_basic_lose_connection(p), 0);
    tw_string_transport_free(st); /* lost and freed: LeakSanitizer checks */
}

TW_TEST(lines, misuse)
{
    tw_protocol plain;
    tw_protocol_init(&plain, &(tw_protocol_ops){0});
    cr_assert_eq(tw_basic_lose_connection(&plain), TW_EINVAL);
    cr_assert_not(tw_basic_disconnecting(&plain));
    cr_assert_eq(tw_line_receiver_send_line(&plain, "x", 1), TW_EINVAL);
    cr_assert_eq(tw_line_receiver_set_raw_mode(&plain), TW_EINVAL);
    cr_assert_eq(tw_line_receiver_set_line_mode(&plain, NULL, 0), TW_EINVAL);
    cr_assert_eq(tw_line_receiver_set_max_length(&plain, 1), TW_EINVAL);
    tester t = {0};
    tw_line_receiver_init(&t.lr, &crlf_ops);
    cr_assert_eq(tw_line_receiver_send_line(&t.lr.rx.base, "x", 1), TW_EINVAL, "no transport");
    cr_assert_eq(tw_line_receiver_set_delimiter(&t.lr.rx.base, "", 0), TW_EINVAL);
    cr_assert_eq(tw_basic_lose_connection(&t.lr.rx.base), TW_ENOTCONN);
    tw_line_receiver_free(&t.lr.rx.base);
}

/* ---- Pausing: as Twisted's LineReceiver.pauseProducing, no line is
 * delivered while paused, not even one of the chunk being handled; resuming
 * delivers what was held before any new byte comes. */

/* Feeds data split at every byte boundary and in every chunk size; each
 * time the log must read want_paused with the receiver and its transport
 * paused, and want_resumed after one resume with no new byte. */
static void every_split_paused(const tw_line_receiver_ops *ops, const tester *setup,
                               const char *data, const char *want_paused, const char *want_resumed)
{
    size_t len = strlen(data);
    for (size_t way = 0; way < 2 * len + 1; way++) {
        run r = {0};
        start(&r, ops, setup);
        if (way <= len)
            tw_testing_feed_split(data, len, way, tw_string_transport_feeder, r.st);
        else
            tw_testing_feed_chunks(data, len, way - len, tw_string_transport_feeder, r.st);
        tw_protocol *p = &r.t.lr.rx.base;
        cr_assert_str_eq(r.t.log, want_paused, "way %zu", way);
        cr_assert(tw_basic_paused(p) && r.t.lr.rx.paused);
        cr_assert(r.st->paused, "the transport stopped reading");
        cr_assert_eq(tw_basic_resume_producing(p), 0);
        cr_assert_str_eq(r.t.log, want_resumed, "way %zu", way);
        cr_assert_not(tw_basic_paused(p));
        cr_assert_not(r.st->paused, "the transport reads again");
        finish(&r);
    }
}

TW_TEST(pausing, a_line_that_pauses_holds_the_rest_until_resumed)
{
    tester setup = {.pause_on = "P"};
    every_split_paused(&crlf_ops, &setup, "a\r\nP\r\nb\r\nc\r\npart", "La|LP|", "La|LP|Lb|Lc|");
    /* The partial line held goes on with the next bytes. */
    run r = {0};
    start(&r, &crlf_ops, &setup);
    tw_string_transport_feed(r.st, "P\r\nb\r\npart", 10);
    tw_basic_resume_producing(&r.t.lr.rx.base);
    tw_string_transport_feed(r.st, "ial\r\n", 5);
    cr_assert_str_eq(r.t.log, "LP|Lb|Lpartial|");
    finish(&r);
}

TW_TEST(pausing, the_line_only_receiver_pauses_the_same_way)
{
    tester setup = {.pause_on = "P"};
    every_split_paused(&only_ops, &setup, "a\r\nP\r\nb\r\nc\r\n", "La|LP|", "La|LP|Lb|Lc|");
}

TW_TEST(pausing, bytes_that_arrive_while_paused_wait_behind_the_rest)
{
    tester setup = {.pause_on = "P"};
    run r = {0};
    start(&r, &crlf_ops, &setup);
    tw_protocol *p = &r.t.lr.rx.base;
    tw_string_transport_feed(r.st, "P\r\nb\r\n", 6);
    tw_string_transport_feed(r.st, "c\r\n", 3);
    tw_string_transport_feed(r.st, "d\r", 2);
    cr_assert_str_eq(r.t.log, "LP|");
    /* clear_line_buffer outside a callback takes what is held, in order. */
    tw_line_receiver_clear_line_buffer(p, take, &r.t);
    cr_assert_eq(r.t.ntaken, 8);
    cr_assert_eq(memcmp(r.t.taken, "b\r\nc\r\nd\r", 8), 0);
    tw_basic_resume_producing(p);
    tw_string_transport_feed(r.st, "e\r\n", 3);
    cr_assert_str_eq(r.t.log, "LP|Le|");
    finish(&r);
}

TW_TEST(pausing, each_resume_delivers_one_line_when_every_line_pauses)
{
    tester setup = {.pause_every = true};
    const char *data = "1\r\n2\r\n3\r\n4";
    size_t len = strlen(data);
    for (size_t chunk = len; chunk > 0; chunk--) {
        run r = {0};
        start(&r, &crlf_ops, &setup);
        tw_protocol *p = &r.t.lr.rx.base;
        tw_testing_feed_chunks(data, len, chunk, tw_string_transport_feeder, r.st);
        cr_assert_str_eq(r.t.log, "L1|", "chunk %zu", chunk);
        tw_basic_resume_producing(p);
        cr_assert_str_eq(r.t.log, "L1|L2|", "chunk %zu", chunk);
        tw_basic_resume_producing(p);
        cr_assert_str_eq(r.t.log, "L1|L2|L3|", "chunk %zu", chunk);
        cr_assert(tw_basic_paused(p));
        tw_basic_resume_producing(p);
        cr_assert_str_eq(r.t.log, "L1|L2|L3|", "only the partial line is left");
        cr_assert_not(tw_basic_paused(p));
        tw_string_transport_feed(r.st, "\r\n", 2);
        cr_assert_str_eq(r.t.log, "L1|L2|L3|L4|");
        cr_assert_eq(r.st->pause_calls, 4);
        finish(&r);
    }
}

TW_TEST(pausing, pause_and_resume_inside_one_line_changes_nothing)
{
    tester setup = {.pause_every = true, .resume_inside = true};
    every_chunk(&crlf_ops, &setup, "a\r\nb\r\nc\r\n", "La|Lb|Lc|");
}

TW_TEST(pausing, raw_mode_pauses_after_a_raw_chunk)
{
    tester setup = {.raw_on = "raw", .raw_left = 100};
    const char *data = "raw\r\nxyz";
    size_t len = strlen(data);
    for (size_t at = 0; at <= len; at++) {
        run r = {0};
        start(&r, &crlf_ops, &setup);
        tw_protocol *p = &r.t.lr.rx.base;
        r.t.pause_every = true;
        r.t.pause_on = NULL;
        tw_testing_feed_split(data, len, at, tw_string_transport_feeder, r.st);
        tw_string_transport_feed(r.st, "more", 4);
        /* The line "raw" paused; whatever follows is held. */
        cr_assert_str_eq(r.t.log, "Lraw|", "split %zu", at);
        tw_basic_resume_producing(p);
        cr_assert_str_eq(r.t.log, "Lraw|Rxyzmore|", "split %zu: held bytes come as one", at);
        tw_string_transport_feed(r.st, "!", 1);
        cr_assert_str_eq(r.t.log, "Lraw|Rxyzmore|", "paused by the raw chunk");
        tw_basic_resume_producing(p);
        cr_assert_str_eq(r.t.log, "Lraw|Rxyzmore|R!|");
        finish(&r);
    }
}

TW_TEST(pausing, stop_producing_closes_and_delivers_nothing_more)
{
    run r = {0};
    start(&r, &crlf_ops, NULL);
    tw_protocol *p = &r.t.lr.rx.base;
    tw_string_transport_feed(r.st, "a\r\nb", 4);
    cr_assert_eq(tw_basic_stop_producing(p), 0);
    cr_assert(tw_basic_paused(p) && tw_basic_disconnecting(p));
    cr_assert_eq(r.st->lose_calls, 1);
    tw_basic_resume_producing(p);
    tw_string_transport_feed(r.st, "\r\nc\r\n", 5);
    cr_assert_str_eq(r.t.log, "La|");
    finish(&r);
}

/* A proxy: the receiver is the producer of another connection, whose full
 * write buffer pauses it (the consumer calls the receiver's producer ops). */
TW_TEST(pausing, registered_as_another_connections_producer)
{
    run r = {0};
    start(&r, &crlf_ops, NULL);
    tw_protocol *p = &r.t.lr.rx.base;
    tw_string_transport *far;
    cr_assert_eq(tw_string_transport_new(&far), 0);
    tw_protocol other;
    tw_protocol_init(&other, &(tw_protocol_ops){0});
    cr_assert_eq(tw_string_transport_connect(far, &other), 0);
    cr_assert_eq(tw_transport_register_producer(&far->base, tw_basic_producer(p), true), 0);
    tw_string_transport_feed(r.st, "a\r\n", 3);
    cr_assert_eq(tw_string_transport_set_buffer_size(far, TW_TRANSPORT_HIGH_WATER + 1), 0);
    cr_assert(tw_basic_paused(p) && r.st->paused);
    tw_string_transport_feed(r.st, "b\r\nc\r\n", 6);
    cr_assert_str_eq(r.t.log, "La|");
    cr_assert_eq(tw_string_transport_set_buffer_size(far, 0), 0);
    cr_assert_not(tw_basic_paused(p));
    cr_assert_str_eq(r.t.log, "La|Lb|Lc|");
    /* The far side goes away: the receiver's connection is closed. */
    cr_assert_eq(tw_string_transport_lose(far, 0), 0);
    cr_assert(tw_basic_disconnecting(p));
    cr_assert_eq(r.st->lose_calls, 1);
    tw_string_transport_free(far);
    finish(&r);
}

TW_TEST(pausing, holding_the_rest_out_of_memory_closes)
{
    tester setup = {.pause_on = "P"};
    run r = {0};
    start(&r, &crlf_ops, &setup);
    tw_testing_log_capture_start();
    tw_testing_fail_alloc_after(0);
    tw_string_transport_feed(r.st, "P\r\nb\r\n", 6);
    tw_testing_fail_alloc_off();
    cr_assert_eq(tw_testing_log_count("out of memory holding 3 bytes"), 1);
    tw_testing_log_capture_stop();
    cr_assert_eq(r.st->lose_calls, 1);
    cr_assert(tw_basic_disconnecting(&r.t.lr.rx.base));
    tw_basic_resume_producing(&r.t.lr.rx.base);
    cr_assert_str_eq(r.t.log, "LP|");
    finish(&r);
}

TW_TEST(pausing, misuse)
{
    tw_protocol plain;
    tw_protocol_init(&plain, &(tw_protocol_ops){0});
    cr_assert_eq(tw_basic_pause_producing(&plain), TW_EINVAL);
    cr_assert_eq(tw_basic_resume_producing(&plain), TW_EINVAL);
    cr_assert_eq(tw_basic_stop_producing(&plain), TW_EINVAL);
    cr_assert_not(tw_basic_paused(&plain));
    cr_assert_null(tw_basic_producer(&plain));
    /* Without a transport the receiver still pauses. */
    tester t = {0};
    tw_line_receiver_init(&t.lr, &crlf_ops);
    tw_protocol *p = &t.lr.rx.base;
    cr_assert_eq(tw_basic_pause_producing(p), 0);
    tw_line_receiver_data_received(p, "x\r\n", 3);
    cr_assert_eq(t.lines, 0);
    cr_assert_eq(tw_basic_resume_producing(p), 0);
    cr_assert_eq(t.lines, 1);
    tw_line_receiver_free(p);
}

/* ---- LineOnlyReceiver's length rules (Twisted's LineOnlyReceiver): a line
 * longer than the maximum, complete or still partial, goes to
 * line_length_exceeded alone; the lines around it are delivered. */

static const char *long_line; /* the long line and its delimiter */
static char exceeded_arg[64];

static void t_only_exceeded(tw_protocol *p, const char *data, size_t len)
{
    tester *t = (tester *)p;
    logs(t, "X", 1);
    /* All of the long line that arrived (with what may begin its
     * delimiter, as Twisted's buffer), or the whole line: never the whole
     * delimiter, never bytes of another line. */
    cr_assert_lt(len, strlen(long_line));
    cr_assert_eq(memcmp(data, long_line, len), 0, "handed %.*s", (int)len, data);
    cr_assert_lt(len, sizeof exceeded_arg);
    memcpy(exceeded_arg, data, len);
    exceeded_arg[len] = '\0';
}

static const tw_line_receiver_ops only_hook_ops = {
    .protocol = TW_LINE_RECEIVER_PROTOCOL_OPS,
    .line_received = t_line,
    .line_length_exceeded = t_only_exceeded,
    .free = t_free,
    .line_only = true,
    .max_length = 5,
};

TW_TEST(line_only, a_complete_long_line_alone_goes_to_the_hook)
{
    long_line = "123456\r\n";
    /* Fed whole, the hook gets exactly the line (Twisted's argument). */
    run r = {0};
    start(&r, &only_hook_ops, NULL);
    tw_string_transport_feed(r.st, "12345\r\n123456\r\nx\r\n", 19);
    cr_assert_str_eq(r.t.log, "L12345|XLx|");
    cr_assert_str_eq(exceeded_arg, "123456");
    cr_assert_eq(r.st->lose_calls, 0, "the hook keeps the connection");
    finish(&r);
    /* Any split: the same lines and one call of the hook. */
    const char *data = "12345\r\n123456\r\nx\r\n";
    size_t len = strlen(data);
    for (size_t at = 0; at <= len; at++) {
        memset(&r, 0, sizeof r);
        start(&r, &only_hook_ops, NULL);
        tw_testing_feed_split(data, len, at, tw_string_transport_feeder, r.st);
        cr_assert_str_eq(r.t.log, "L12345|XLx|", "split %zu", at);
        finish(&r);
    }
    every_chunk(&only_hook_ops, NULL, data, "L12345|XLx|");
}

TW_TEST(line_only, a_partial_long_line_goes_to_the_hook_and_its_rest_is_skipped)
{
    long_line = "1234567890\r\n";
    run r = {0};
    start(&r, &only_hook_ops, NULL);
    tw_string_transport_feed(r.st, "ab\r\n1234567", 11);
    cr_assert_str_eq(r.t.log, "Lab|X");
    cr_assert_str_eq(exceeded_arg, "1234567", "all of it so far");
    /* The rest of the long line is not a line of its own. */
    tw_string_transport_feed(r.st, "89", 2);
    tw_string_transport_feed(r.st, "0\r\nx\r\n", 6);
    cr_assert_str_eq(r.t.log, "Lab|XLx|");
    finish(&r);
    every_chunk(&only_hook_ops, NULL, "ab\r\n1234567890\r\nx\r\ny", "Lab|XLx|");
    const char *data = "ab\r\n1234567890\r\nx\r\n";
    size_t len = strlen(data);
    for (size_t at = 0; at <= len; at++) {
        memset(&r, 0, sizeof r);
        start(&r, &only_hook_ops, NULL);
        tw_testing_feed_split(data, len, at, tw_string_transport_feeder, r.st);
        cr_assert_str_eq(r.t.log, "Lab|XLx|", "split %zu", at);
        finish(&r);
    }
}

TW_TEST(line_only, a_line_of_the_maximum_passes_however_split)
{
    /* Twisted's LineOnlyReceiver fails "12345\r" held at the end of a chunk
     * (its buffer is 6 bytes); here the "\r" may begin the delimiter and
     * does not count, so the verdict does not depend on the split. */
    long_line = "";
    every_chunk(&only_hook_ops, NULL, "12345\r\nz\r\n", "L12345|Lz|");
    const char *data = "12345\r\nz\r\n";
    size_t len = strlen(data);
    for (size_t at = 0; at <= len; at++) {
        run r = {0};
        start(&r, &only_hook_ops, NULL);
        tw_testing_feed_split(data, len, at, tw_string_transport_feeder, r.st);
        cr_assert_str_eq(r.t.log, "L12345|Lz|", "split %zu", at);
        finish(&r);
    }
}

TW_TEST(line_only, without_a_hook_a_long_line_closes)
{
    tw_testing_log_capture_start();
    every_chunk(&only_ops, NULL, "12345\r\n123456\r\nx\r\n", "L12345|");
    every_chunk(&only_ops, NULL, "ab\r\n123456", "Lab|");
    cr_assert_gt(tw_testing_log_count("line longer than 5 bytes"), 0);
    tw_testing_log_capture_stop();
    run r = {0};
    start(&r, &only_ops, NULL);
    tw_string_transport_feed(r.st, "ab\r\n123456", 10);
    cr_assert_eq(r.st->lose_calls, 1);
    cr_assert(tw_basic_disconnecting(&r.t.lr.rx.base));
    finish(&r);
}

TW_TEST(line_only, a_long_line_that_spans_chunks_is_handed_over_whole)
{
    long_line = "abcdef\r\n";
    run r = {0};
    start(&r, &only_hook_ops, NULL);
    tw_string_transport_feed(r.st, "abc", 3);
    tw_string_transport_feed(r.st, "def\r\nok\r\n", 9);
    cr_assert_str_eq(r.t.log, "XLok|");
    cr_assert_str_eq(exceeded_arg, "abcdef");
    finish(&r);
}

TW_TEST(line_only, set_max_length_applies_to_the_next_lines)
{
    long_line = "abcdefg\r\n";
    run r = {0};
    start(&r, &only_hook_ops, NULL);
    tw_protocol *p = &r.t.lr.rx.base;
    cr_assert_eq(tw_line_receiver_set_max_length(p, 2), 0);
    tw_string_transport_feed(r.st, "ab\r\nabc\r\n", 9);
    cr_assert_str_eq(r.t.log, "Lab|X");
    cr_assert_eq(tw_line_receiver_set_max_length(p, 6), 0);
    tw_string_transport_feed(r.st, "abcdef\r\nabcdefg\r\n", 17);
    cr_assert_str_eq(r.t.log, "Lab|XLabcdef|X");
    finish(&r);
}

/* Closing through the transport itself bypasses the receiver: it does not
 * know, and the rest of the chunk is delivered (basic.h, Closing). */
static void close_by_transport(tw_protocol *p, const char *line, size_t len)
{
    t_line(p, line, len);
    if (is("stop", line, len))
        tw_transport_lose_connection(p->transport);
}

static const tw_line_receiver_ops close_ops = {
    .protocol = TW_LINE_RECEIVER_PROTOCOL_OPS,
    .line_received = close_by_transport,
    .free = t_free,
};

TW_TEST(lines, a_close_through_the_transport_is_not_seen)
{
    run r = {0};
    start(&r, &close_ops, NULL);
    tw_string_transport_feed(r.st, "a\r\nstop\r\nb\r\n", 12);
    cr_assert_str_eq(r.t.log, "La|Lstop|Lb|");
    cr_assert_eq(r.st->lose_calls, 1);
    cr_assert_not(tw_basic_disconnecting(&r.t.lr.rx.base));
    finish(&r);
}
