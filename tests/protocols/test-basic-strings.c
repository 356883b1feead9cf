/* NetstringReceiver and Int8/16/32StringReceiver over a string transport,
 * every input fed in every chunk size. */
#include "twtest.h"

#include <twine/basic.h>

#include <string.h>

/* Records "S<payload>|" per string. Big enough for either receiver. */
typedef struct tester {
    union {
        tw_netstring_receiver nr;
        tw_int_receiver ir;
    } u;
    char log[512];
    size_t n;
    int freed, exceeded;
    const char *lose_on;
    const char *pause_on; /* a string that pauses the receiver */
} tester;

static void t_string(tw_protocol *p, const char *data, size_t len)
{
    tester *t = (tester *)p;
    cr_assert_lt(t->n + len + 2, sizeof t->log);
    t->log[t->n++] = 'S';
    memcpy(t->log + t->n, data, len);
    t->n += len;
    t->log[t->n++] = '|';
    t->log[t->n] = '\0';
    if (t->lose_on && strlen(t->lose_on) == len && memcmp(t->lose_on, data, len) == 0)
        cr_assert_eq(tw_basic_lose_connection(p), 0);
    if (t->pause_on && strlen(t->pause_on) == len && memcmp(t->pause_on, data, len) == 0)
        cr_assert_eq(tw_basic_pause_producing(p), 0);
}

static void t_free(tw_protocol *p)
{
    ((tester *)p)->freed++;
}

static void t_exceeded(tw_protocol *p)
{
    ((tester *)p)->exceeded++;
}

static const tw_netstring_receiver_ops ns_ops = {
    .protocol = TW_NETSTRING_RECEIVER_PROTOCOL_OPS,
    .string_received = t_string,
    .free = t_free,
    .max_length = 10,
};

static const tw_int_receiver_ops i8_ops = {
    .protocol = TW_INT_RECEIVER_PROTOCOL_OPS,
    .string_received = t_string,
    .free = t_free,
    .prefix_bytes = 1,
};
static const tw_int_receiver_ops i16_ops = {
    .protocol = TW_INT_RECEIVER_PROTOCOL_OPS,
    .string_received = t_string,
    .free = t_free,
    .prefix_bytes = 2,
    .max_length = 5,
};
static const tw_int_receiver_ops i32_ops = {
    .protocol = TW_INT_RECEIVER_PROTOCOL_OPS,
    .string_received = t_string,
    .free = t_free,
    .length_limit_exceeded = t_exceeded,
    .max_length = 4,
};

typedef struct run {
    tw_string_transport *st;
    tester t;
} run;

static tw_protocol *start(run *r, const void *ops, bool netstring, const char *lose_on)
{
    memset(r, 0, sizeof *r);
    cr_assert_eq(tw_string_transport_new(&r->st), 0);
    if (netstring)
        tw_netstring_receiver_init(&r->t.u.nr, ops);
    else
        cr_assert_eq(tw_int_receiver_init(&r->t.u.ir, ops), 0);
    r->t.lose_on = lose_on;
    tw_protocol *p = (tw_protocol *)&r->t;
    cr_assert_eq(tw_string_transport_connect(r->st, p), 0);
    return p;
}

static void finish(run *r)
{
    tw_string_transport_free(r->st);
    cr_assert_eq(r->t.freed, 1);
}

/* Feeds data[0..len) in every chunk size; each run must log `want` and have
 * called lose_connection `loses` times. */
static void every_chunk(const void *ops, bool netstring, const char *lose_on, const char *data,
                        size_t len, const char *want, unsigned loses)
{
    for (size_t chunk = len; chunk > 0; chunk--) {
        run r;
        start(&r, ops, netstring, lose_on);
        tw_testing_feed_chunks(data, len, chunk, tw_string_transport_feeder, r.st);
        cr_assert_str_eq(r.t.log, want, "chunk size %zu", chunk);
        cr_assert_eq(r.st->lose_calls, loses, "chunk size %zu", chunk);
        finish(&r);
    }
}

#define NS(s) s, sizeof(s) - 1

TW_TEST(netstring, good_strings)
{
    every_chunk(&ns_ops, true, NULL, NS("3:abc,0:,10:0123456789,1:x,"), "Sabc|S|S0123456789|Sx|",
                0);
}

TW_TEST(netstring, bad_input_breaks_the_peer)
{
    tw_testing_log_capture_start();
    every_chunk(&ns_ops, true, NULL, NS("3:abc,03:abc,1:x,"), "Sabc|", 1);
    every_chunk(&ns_ops, true, NULL, NS("3:abc,x:abc,"), "Sabc|", 1);
    every_chunk(&ns_ops, true, NULL, NS("3:abc,11:"), "Sabc|", 1);
    every_chunk(&ns_ops, true, NULL, NS("3:abc,3:abcd"), "Sabc|", 1);
    every_chunk(&ns_ops, true, NULL, NS(":"), "", 1);
    cr_assert_gt(tw_testing_log_count("broken peer"), 0);
    cr_assert_gt(tw_testing_log_count("leading zero"), 0);
    tw_testing_log_capture_stop();

    run r;
    tw_protocol *p = start(&r, &ns_ops, true, NULL);
    tw_testing_log_capture_start();
    tw_string_transport_feed(r.st, "01:a,", 5);
    cr_assert_eq(tw_testing_log_count("broken peer: netstring length has a leading zero"), 1, "%s",
                 tw_testing_log_text());
    tw_testing_log_capture_stop();
    cr_assert(r.t.u.nr.broken_peer);
    cr_assert_eq(r.t.u.nr.error, TW_NETSTRING_LEADING_ZERO);
    cr_assert(tw_basic_disconnecting(p));
    tw_string_transport_feed(r.st, "1:a,", 4);
    cr_assert_str_eq(r.t.log, "");
    finish(&r);
}

TW_TEST(netstring, nothing_after_disconnect)
{
    every_chunk(&ns_ops, true, "stop", NS("1:a,4:stop,1:b,"), "Sa|Sstop|", 1);
}

TW_TEST(netstring, send_string)
{
    run r;
    tw_protocol *p = start(&r, &ns_ops, true, NULL);
    cr_assert_eq(tw_netstring_receiver_send_string(p, "abc", 3), 0);
    cr_assert_eq(tw_netstring_receiver_send_string(p, "", 0), 0);
    cr_assert_str_eq(tw_string_transport_value(r.st, NULL), "3:abc,0:,");
    static char big[2000];
    memset(big, 'z', sizeof big);
    tw_string_transport_clear(r.st);
    /* Large frames need a temporary buffer; the transport one more. */
    for (long n = 0;; n++) {
        tw_testing_fail_alloc_after(n);
        int rc = tw_netstring_receiver_send_string(p, big, sizeof big);
        tw_testing_fail_alloc_off();
        if (rc == 0)
            break;
        cr_assert_eq(rc, TW_ENOMEM);
        cr_assert_lt(n, 10);
        size_t len;
        tw_string_transport_value(r.st, &len);
        cr_assert_eq(len, 0);
    }
    size_t len;
    const char *v = tw_string_transport_value(r.st, &len);
    cr_assert_eq(len, 2000 + 6);
    cr_assert_eq(memcmp(v, "2000:zz", 7), 0);
    cr_assert_eq(v[len - 1], ',');
    cr_assert_eq(tw_netstring_receiver_send_string(p, NULL, 1), TW_EINVAL);
    finish(&r);
}

TW_TEST(netstring, out_of_memory_closes)
{
    run r;
    start(&r, &ns_ops, true, NULL);
    tw_testing_log_capture_start();
    tw_testing_fail_alloc_after(0);
    tw_string_transport_feed(r.st, "1:a,5:ab", 8);
    tw_testing_fail_alloc_off();
    tw_testing_log_capture_stop();
    cr_assert_str_eq(r.t.log, "Sa|");
    cr_assert_eq(r.st->lose_calls, 1);
    cr_assert_not(r.t.u.nr.broken_peer);
    finish(&r);
}

TW_TEST(intn, int8_strings)
{
    every_chunk(&i8_ops, false, NULL,
                NS("\x03"
                   "abc\x00\x01x"),
                "Sabc|S|Sx|", 0);
}

TW_TEST(intn, int16_limit)
{
    tw_testing_log_capture_start();
    every_chunk(&i16_ops, false, NULL,
                NS("\x00\x05"
                   "abcde\x00\x06"
                   "abcdef\x00\x01x"),
                "Sabcde|", 1);
    cr_assert_gt(tw_testing_log_count("longer than 5 bytes"), 0);
    tw_testing_log_capture_stop();
}

TW_TEST(intn, int32_limit_hook)
{
    for (size_t chunk = 15; chunk > 0; chunk--) {
        run r;
        start(&r, &i32_ops, false, NULL);
        tw_testing_feed_chunks("\0\0\0\2ab\0\0\0\5abcde", 15, chunk, tw_string_transport_feeder,
                               r.st);
        cr_assert_str_eq(r.t.log, "Sab|");
        cr_assert_eq(r.t.exceeded, 1);
        cr_assert(r.t.u.ir.too_long);
        cr_assert_eq(r.st->lose_calls, 0, "the hook decides");
        tw_string_transport_feed(r.st, "\0\0\0\1x", 5);
        cr_assert_str_eq(r.t.log, "Sab|", "nothing more is read");
        cr_assert_eq(r.t.exceeded, 1);
        finish(&r);
    }
}

TW_TEST(intn, nothing_after_disconnect)
{
    every_chunk(&i8_ops, false, "stop",
                NS("\x01"
                   "a\x04stop\x01"
                   "b"),
                "Sa|Sstop|", 1);
}

TW_TEST(intn, send_string_and_too_long)
{
    run r;
    tw_protocol *p = start(&r, &i8_ops, false, NULL);
    cr_assert_eq(tw_int_receiver_send_string(p, "hi", 2), 0);
    static char big[70000];
    memset(big, 'q', sizeof big);
    cr_assert_eq(tw_int_receiver_send_string(p, big, 256), TW_EMSGSIZE);
    cr_assert_eq(tw_int_receiver_send_string(p, big, 255), 0);
    size_t len;
    const char *v = tw_string_transport_value(r.st, &len);
    cr_assert_eq(len, 3 + 256);
    cr_assert_eq(memcmp(v, "\x02hi\xff", 4), 0);
    finish(&r);

    p = start(&r, &i16_ops, false, NULL);
    cr_assert_eq(tw_int_receiver_send_string(p, big, 65536), TW_EMSGSIZE);
    tw_testing_fail_alloc_after(0);
    cr_assert_eq(tw_int_receiver_send_string(p, big, 65535), TW_ENOMEM);
    tw_testing_fail_alloc_off();
    cr_assert_eq(tw_int_receiver_send_string(p, big, 65535), 0);
    v = tw_string_transport_value(r.st, &len);
    cr_assert_eq(len, 2 + 65535);
    cr_assert_eq(memcmp(v, "\xff\xffqq", 4), 0);
    finish(&r);

    p = start(&r, &i32_ops, false, NULL);
    cr_assert_eq(tw_int_receiver_send_string(p, "abc", 3), 0);
    cr_assert_eq(memcmp(tw_string_transport_value(r.st, NULL), "\0\0\0\3abc", 7), 0);
    finish(&r);
}

TW_TEST(intn, bad_prefix_size)
{
    static const tw_int_receiver_ops bad = {
        .protocol = TW_INT_RECEIVER_PROTOCOL_OPS,
        .string_received = t_string,
        .free = t_free,
        .prefix_bytes = 3,
    };
    run r;
    memset(&r, 0, sizeof r);
    cr_assert_eq(tw_string_transport_new(&r.st), 0);
    cr_assert_eq(tw_int_receiver_init(&r.t.u.ir, &bad), TW_EINVAL);
    tw_testing_log_capture_start();
    tw_string_transport_connect(r.st, (tw_protocol *)&r.t);
    tw_testing_log_capture_stop();
    cr_assert_eq(r.st->lose_calls, 1);
    cr_assert_eq(tw_int_receiver_send_string((tw_protocol *)&r.t, "a", 1), TW_EINVAL);
    finish(&r);
}

/* ---- Pausing: a string that pauses the receiver holds the rest of the
 * chunk until it resumes, which delivers it with no new byte (Twisted's
 * IntNStringReceiver; its NetstringReceiver cannot pause, this one pauses
 * the same way). Split at every byte boundary and in every chunk size. */
static void every_split_paused(const void *ops, bool netstring, const char *data, size_t len,
                               const char *rest, size_t rest_len)
{
    for (size_t way = 0; way < 2 * len + 1; way++) {
        run r;
        tw_protocol *p = start(&r, ops, netstring, NULL);
        r.t.pause_on = "a";
        if (way <= len)
            tw_testing_feed_split(data, len, way, tw_string_transport_feeder, r.st);
        else
            tw_testing_feed_chunks(data, len, way - len, tw_string_transport_feeder, r.st);
        cr_assert_str_eq(r.t.log, "Sa|", "way %zu", way);
        cr_assert(tw_basic_paused(p) && r.st->paused, "way %zu", way);
        cr_assert_eq(tw_basic_resume_producing(p), 0);
        cr_assert_str_eq(r.t.log, "Sa|Sbb|Sccc|", "way %zu", way);
        cr_assert_not(r.st->paused);
        tw_string_transport_feed(r.st, rest, rest_len);
        cr_assert_str_eq(r.t.log, "Sa|Sbb|Sccc|Sparti|", "way %zu", way);
        finish(&r);
    }
}

TW_TEST(pausing, netstring)
{
    every_split_paused(&ns_ops, true, NS("1:a,2:bb,3:ccc,5:pa"), NS("rti,"));
}

TW_TEST(pausing, int8)
{
    every_split_paused(&i8_ops, false,
                       NS("\x01"
                          "a\x02"
                          "bb\x03"
                          "ccc\x05"
                          "pa"),
                       NS("rti"));
}

TW_TEST(pausing, int16)
{
    every_split_paused(&i16_ops, false, NS("\0\1a\0\2bb\0\3ccc\0\5pa"), NS("rti"));
}

TW_TEST(pausing, int32)
{
    static const tw_int_receiver_ops ops = {
        .protocol = TW_INT_RECEIVER_PROTOCOL_OPS,
        .string_received = t_string,
        .free = t_free,
    };
    every_split_paused(&ops, false, NS("\0\0\0\1a\0\0\0\2bb\0\0\0\3ccc\0\0\0\5pa"), NS("rti"));
}

TW_TEST(pausing, bytes_while_paused_and_stop_producing)
{
    run r;
    tw_protocol *p = start(&r, &i8_ops, false, NULL);
    cr_assert_eq(tw_basic_pause_producing(p), 0);
    tw_string_transport_feed(r.st, "\x01x\x01y", 4);
    cr_assert_str_eq(r.t.log, "", "nothing while paused, even a whole string");
    cr_assert_eq(tw_basic_stop_producing(p), 0);
    cr_assert_eq(r.st->lose_calls, 1);
    tw_basic_resume_producing(p);
    cr_assert_str_eq(r.t.log, "", "stopped for good");
    finish(&r);
}
