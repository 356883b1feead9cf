/* ThrottlingFactory: reads and writes held back for the time that pays a
 * second's excess, connection count limit, timers gone with the last
 * connection. On a manual clock. */
#include <twine/policies.h>

#include "rec-protocol.h"

static tw_clock *clock_;
static struct rec_events ev;
static struct rec_factory rf;
static tw_throttling_factory thf;

static void setup(uint64_t read_limit, uint64_t write_limit)
{
    clock_ = tw_clock_new_manual();
    cr_assert(clock_);
    memset(&ev, 0, sizeof ev);
    rec_factory_init(&rf, &ev, &rec_ops);
    tw_throttling_factory_init(&thf, &rf.base, clock_);
    cr_assert_eq(thf.max_connections, TW_THROTTLE_MAX_CONNECTIONS_DEFAULT);
    cr_assert_eq(thf.read_limit, 0);
    cr_assert_eq(thf.write_limit, 0);
    thf.read_limit = read_limit;
    thf.write_limit = write_limit;
}

static void teardown(void)
{
    cr_assert_eq(tw_throttling_factory_connections(&thf), 0);
    cr_assert_eq(tw_clock_pending(clock_), 0, "a throttle timer was left pending");
    tw_clock_free(clock_);
}

struct counting_producer {
    tw_producer base;
    int pauses, resumes, stops;
};

static void cp_pause(tw_producer *p)
{
    ((struct counting_producer *)p)->pauses++;
}

static void cp_resume(tw_producer *p)
{
    ((struct counting_producer *)p)->resumes++;
}

static void cp_stop(tw_producer *p)
{
    ((struct counting_producer *)p)->stops++;
}

static const tw_producer_ops cp_ops = {cp_pause, cp_resume, cp_stop};

TW_TEST(throttle, reads_over_the_limit_pause_every_connection)
{
    setup(10, 0);
    tw_testing_log_capture_start();
    tw_string_transport *a = rec_connect(&thf.wf.base, NULL, 0);
    tw_string_transport *b = rec_connect(&thf.wf.base, NULL, 0);
    cr_assert_eq(tw_throttling_factory_connections(&thf), 2);
    tw_string_transport_feed(a, "0123456789", 10);
    tw_string_transport_feed(b, "0123456789abcde", 15); /* 25 in all: over 10 */
    cr_assert_eq(ev.len, 25, "bytes are never held back, only reading");
    cr_assert_not(a->paused);
    tw_clock_advance(clock_, 1.0); /* the check: pause for 25/10 - 1 = 1.5 s */
    cr_assert(a->paused);
    cr_assert(b->paused);
    cr_assert_eq(tw_testing_log_count("read_limit"), 1);
    /* A connection made while throttled starts paused. */
    tw_string_transport *c = rec_connect(&thf.wf.base, NULL, 0);
    cr_assert(c->paused);
    tw_clock_advance(clock_, 1.0); /* next check: nothing read, still paused */
    cr_assert(a->paused);
    tw_clock_advance(clock_, 0.49);
    cr_assert(a->paused);
    tw_clock_advance(clock_, 0.02);
    cr_assert_not(a->paused);
    cr_assert_not(b->paused);
    cr_assert_not(c->paused);
    cr_assert_eq(a->pause_calls, 1);
    cr_assert_eq(a->resume_calls, 1);
    cr_assert_eq(tw_testing_log_count("reading again"), 1);
    tw_testing_log_capture_stop();
    tw_string_transport_free(a);
    tw_string_transport_free(b);
    tw_string_transport_free(c);
    teardown();
}

TW_TEST(throttle, reads_at_the_limit_are_not_throttled)
{
    setup(10, 0);
    tw_string_transport *a = rec_connect(&thf.wf.base, NULL, 0);
    for (int s = 0; s < 5; s++) {
        tw_string_transport_feed(a, "0123456789", 10);
        tw_clock_advance(clock_, 1.0);
        cr_assert_not(a->paused);
    }
    cr_assert_eq(a->pause_calls, 0);
    tw_string_transport_free(a);
    teardown();
}

TW_TEST(throttle, the_protocols_own_pause_is_honoured)
{
    setup(10, 0);
    tw_string_transport *a = rec_connect(&thf.wf.base, NULL, 0);
    tw_string_transport_feed(a, "0123456789abcdefghij", 20);
    tw_transport_pause_producing(ev.transport); /* the protocol's own */
    tw_clock_advance(clock_, 1.0);              /* throttled for 1 s */
    cr_assert(a->paused);
    tw_clock_advance(clock_, 1.0); /* throttle over */
    cr_assert(a->paused, "the protocol paused it and did not resume");
    /* Its resume during a throttle waits for the throttle's end. */
    tw_string_transport_feed(a, "0123456789abcdefghij", 20);
    tw_clock_advance(clock_, 1.0);
    cr_assert_eq(tw_transport_resume_producing(ev.transport), 0);
    cr_assert(a->paused);
    tw_clock_advance(clock_, 1.0);
    cr_assert_not(a->paused);
    tw_string_transport_free(a);
    teardown();
}

TW_TEST(throttle, writes_over_the_limit_pause_the_producer)
{
    setup(0, 10);
    tw_testing_log_capture_start();
    tw_string_transport *a = rec_connect(&thf.wf.base, NULL, 0);
    tw_transport *t = ev.transport;
    struct counting_producer prod = {.base.ops = &cp_ops};
    cr_assert_eq(tw_transport_register_producer(t, &prod.base, true), 0);
    cr_assert_eq(tw_transport_write(t, "0123456789", 10), 0);
    struct iovec iov[2] = {{"0123456789", 10}, {"0123456789", 10}};
    cr_assert_eq(tw_transport_write_sequence(t, iov, 2), 0); /* 30 in all */
    size_t n;
    tw_string_transport_value(a, &n);
    cr_assert_eq(n, 30, "writes are never held back, only the producer");
    tw_clock_advance(clock_, 1.0); /* pause for 30/10 - 1 = 2 s */
    cr_assert_eq(prod.pauses, 1);
    cr_assert_eq(tw_testing_log_count("write_limit"), 1);
    tw_clock_advance(clock_, 1.99);
    cr_assert_eq(prod.resumes, 0);
    tw_clock_advance(clock_, 0.02);
    cr_assert_eq(prod.resumes, 1);
    tw_testing_log_capture_stop();

    /* Zero-copy writes count too; a producer registered while throttled
     * starts paused. */
    cr_assert_eq(tw_transport_unregister_producer(t), 0);
    cr_assert_eq(tw_transport_write_zerocopy(t, "0123456789abcdefghijk", 21, NULL, NULL), 0);
    tw_clock_advance(clock_, 0.99); /* the check at 4.0 s: 21 > 10, 1.1 s */
    struct counting_producer late = {.base.ops = &cp_ops};
    cr_assert_eq(tw_transport_register_producer(t, &late.base, true), 0);
    cr_assert_eq(late.pauses, 1);
    tw_clock_advance(clock_, 1.2);
    cr_assert_eq(late.resumes, 1);
    cr_assert_eq(prod.pauses, 1, "an unregistered producer is left alone");
    tw_string_transport_lose(a, TW_ECONNDONE);
    cr_assert_eq(late.stops, 1);
    tw_string_transport_free(a);
    teardown();
}

TW_TEST(throttle, writes_without_a_producer_are_only_counted)
{
    setup(0, 10);
    tw_string_transport *a = rec_connect(&thf.wf.base, NULL, 0);
    cr_assert_eq(tw_transport_write(ev.transport, "0123456789abcdefghij", 20), 0);
    tw_clock_advance(clock_, 1.0);
    struct counting_producer pull = {.base.ops = &cp_ops};
    /* A pull producer is never paused or resumed by the throttle. */
    cr_assert_eq(tw_transport_register_producer(ev.transport, &pull.base, false), 0);
    int resumes_before = pull.resumes; /* the transport asks a pull producer for more */
    tw_clock_advance(clock_, 2.0);
    cr_assert_eq(pull.pauses, 0);
    cr_assert_eq(pull.resumes, resumes_before);
    tw_string_transport_free(a);
    teardown();
}

TW_TEST(throttle, max_connections_refuses_and_counts_down_on_connection_lost)
{
    setup(0, 0);
    thf.max_connections = 2;
    tw_testing_log_capture_start();
    tw_string_transport *a = rec_connect(&thf.wf.base, NULL, 0);
    tw_string_transport *b = rec_connect(&thf.wf.base, NULL, 0);
    tw_address addr;
    tw_address_from_ip(&addr, "192.0.2.1", 9);
    cr_assert_null(tw_factory_build_protocol(&thf.wf.base, &addr));
    cr_assert_eq(tw_testing_log_count("max_connections"), 1);
    cr_assert_eq(tw_testing_log_count("192.0.2.1:9"), 1);
    tw_testing_log_capture_stop();
    cr_assert_eq(ev.made, 2);
    tw_string_transport_lose(a, TW_ECONNDONE);
    cr_assert_eq(tw_throttling_factory_connections(&thf), 1);
    tw_string_transport *c = rec_connect(&thf.wf.base, NULL, 0);
    cr_assert_eq(tw_throttling_factory_connections(&thf), 2);
    tw_string_transport_free(a);
    tw_string_transport_free(b);
    tw_string_transport_free(c);
    teardown();
}

TW_TEST(throttle, timers_stop_with_the_last_connection_and_restart)
{
    setup(10, 10);
    tw_string_transport *a = rec_connect(&thf.wf.base, NULL, 0);
    cr_assert_eq(tw_clock_pending(clock_), 2);
    tw_string_transport_feed(a, "0123456789abcdefghij0123456789", 30);
    tw_clock_advance(clock_, 1.0); /* throttled, unthrottle pending too */
    cr_assert(a->paused);
    cr_assert_eq(tw_clock_pending(clock_), 3);
    tw_string_transport_free(a);
    cr_assert_eq(tw_clock_pending(clock_), 0);
    /* A new first connection starts fresh: not throttled. */
    tw_string_transport *b = rec_connect(&thf.wf.base, NULL, 0);
    cr_assert_not(b->paused);
    cr_assert_eq(tw_clock_pending(clock_), 2);
    tw_string_transport_free(b);
    teardown();
}

TW_TEST(throttle, refused_by_the_wrapped_factory_and_out_of_memory)
{
    setup(10, 10);
    rf.refuse = true;
    cr_assert_null(tw_factory_build_protocol(&thf.wf.base, NULL));
    cr_assert_eq(tw_throttling_factory_connections(&thf), 0);
    cr_assert_eq(tw_clock_pending(clock_), 0);
    rf.refuse = false;
    tw_protocol *p;
    for (long n = 0;; n++) {
        tw_testing_fail_alloc_after(n);
        p = tw_factory_build_protocol(&thf.wf.base, NULL);
        tw_testing_fail_alloc_off();
        if (p)
            break;
        cr_assert_eq(tw_throttling_factory_connections(&thf), 0);
        cr_assert_eq(tw_clock_pending(clock_), 0);
    }
    cr_assert_eq(tw_throttling_factory_connections(&thf), 1);
    tw_protocol_release(p); /* never connected: counted down all the same */
    cr_assert_eq(ev.freed, 1);
    teardown();
}
