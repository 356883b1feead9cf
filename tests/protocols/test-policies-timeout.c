/* Idle timeouts: the TimeoutMixin (tw_timeout) in a protocol of its own, and
 * TimeoutFactory around any protocol, on a manual clock. */
#include <math.h>

#include <twine/policies.h>

#include "rec-protocol.h"

static tw_clock *clock_;

static void clock_begin(void)
{
    clock_ = tw_clock_new_manual();
    cr_assert(clock_);
}

/* The clean check for a manual clock: nothing left pending. */
static void clock_end(void)
{
    cr_assert_eq(tw_clock_pending(clock_), 0, "a timer was left pending");
    tw_clock_free(clock_);
}

/* ---- TimeoutMixin */

struct idle_proto {
    tw_protocol base;
    tw_timeout idle;
    int custom_fired;
};

static int idle_free_calls;

static void idle_made(tw_protocol *p)
{
    struct idle_proto *ip = (struct idle_proto *)p;
    tw_timeout_init(&ip->idle, clock_, p, NULL);
    cr_assert_eq(tw_timeout_set(&ip->idle, 10), 0);
}

static void idle_data(tw_protocol *p, const char *data, size_t len)
{
    tw_timeout_reset(&((struct idle_proto *)p)->idle);
}

static void idle_lost(tw_protocol *p, tw_failure *reason)
{
    tw_timeout_set(&((struct idle_proto *)p)->idle, 0);
}

static void idle_free(tw_protocol *p)
{
    idle_free_calls++;
}

static const tw_protocol_ops idle_ops = {.connection_made = idle_made,
                                         .data_received = idle_data,
                                         .connection_lost = idle_lost,
                                         .free = idle_free};

static struct idle_proto *idle_connect(tw_string_transport **st)
{
    struct idle_proto *ip = tw_calloc(1, sizeof *ip);
    cr_assert(ip);
    tw_protocol_init(&ip->base, &idle_ops);
    *st = rec_string_transport();
    cr_assert_eq(tw_string_transport_connect(*st, &ip->base), 0);
    return ip;
}

TW_TEST(timeout_mixin, fires_after_idle_and_loses_the_connection)
{
    clock_begin();
    tw_testing_log_capture_start();
    tw_string_transport *st;
    struct idle_proto *ip = idle_connect(&st);
    cr_assert(tw_timeout_pending(&ip->idle));
    cr_assert_eq(tw_timeout_period(&ip->idle), 10);
    tw_clock_advance(clock_, 9.9);
    cr_assert_eq(st->lose_calls, 0);
    tw_string_transport_feed(st, "x", 1); /* traffic resets the count */
    tw_clock_advance(clock_, 9.9);
    cr_assert_eq(st->lose_calls, 0);
    tw_clock_advance(clock_, 0.2);
    cr_assert_eq(st->lose_calls, 1, "Twisted's default timeoutConnection: loseConnection");
    cr_assert_eq(st->abort_calls, 0);
    cr_assert_not(tw_timeout_pending(&ip->idle));
    cr_assert_eq(tw_testing_log_count("idle timeout"), 1);
    /* Once fired, resets do nothing until the next set (as in Twisted). */
    tw_timeout_reset(&ip->idle);
    cr_assert_not(tw_timeout_pending(&ip->idle));
    tw_testing_log_capture_stop();
    tw_string_transport_free(st);
    tw_free(ip);
    clock_end();
}

TW_TEST(timeout_mixin, set_restarts_turns_off_and_rejects_bad_periods)
{
    clock_begin();
    tw_string_transport *st;
    struct idle_proto *ip = idle_connect(&st);
    tw_clock_advance(clock_, 8);
    cr_assert_eq(tw_timeout_set(&ip->idle, 5), 0); /* counts 5 from now */
    tw_clock_advance(clock_, 4.9);
    cr_assert_eq(st->lose_calls, 0);
    cr_assert_eq(tw_timeout_set(&ip->idle, -1), TW_EINVAL);
    cr_assert_eq(tw_timeout_set(&ip->idle, NAN), TW_EINVAL);
    cr_assert_eq(tw_timeout_set(&ip->idle, INFINITY), TW_EINVAL);
    cr_assert_eq(tw_timeout_period(&ip->idle), 5, "a bad period changes nothing");
    cr_assert(tw_timeout_pending(&ip->idle));
    cr_assert_eq(tw_timeout_set(&ip->idle, 0), 0);
    cr_assert_not(tw_timeout_pending(&ip->idle));
    cr_assert_eq(tw_clock_pending(clock_), 0);
    tw_timeout_reset(&ip->idle); /* off: does nothing */
    cr_assert_not(tw_timeout_pending(&ip->idle));
    tw_clock_advance(clock_, 100);
    cr_assert_eq(st->lose_calls, 0);
    tw_string_transport_free(st);
    tw_free(ip);
    clock_end();
}

TW_TEST(timeout_mixin, cancelled_at_connection_lost)
{
    clock_begin();
    tw_string_transport *st;
    struct idle_proto *ip = idle_connect(&st);
    tw_clock_advance(clock_, 3);
    tw_string_transport_lose(st, TW_ECONNRESET);
    cr_assert_eq(idle_free_calls, 1);
    tw_string_transport_free(st);
    tw_free(ip);
    clock_end();
}

static int custom_calls;
static void custom_timeout(tw_timeout *t)
{
    custom_calls++;
    tw_transport_abort_connection(t->protocol->transport);
}

TW_TEST(timeout_mixin, custom_timeout_connection)
{
    clock_begin();
    tw_string_transport *st;
    struct idle_proto *ip = idle_connect(&st);
    tw_timeout_set(&ip->idle, 0); /* init only an unset timeout */
    tw_timeout_init(&ip->idle, clock_, &ip->base, custom_timeout);
    cr_assert_eq(tw_timeout_set(&ip->idle, 1), 0);
    tw_clock_advance(clock_, 1);
    cr_assert_eq(custom_calls, 1);
    cr_assert_eq(st->abort_calls, 1);
    cr_assert_eq(st->lose_calls, 0);
    tw_string_transport_free(st);
    tw_free(ip);
    clock_end();
}

TW_TEST(timeout_mixin, reset_allocates_nothing)
{
    clock_begin();
    tw_string_transport *st;
    struct idle_proto *ip = idle_connect(&st);
    long before = tw_testing_alloc_count();
    for (int i = 0; i < 1000; i++)
        tw_timeout_reset(&ip->idle);
    cr_assert_eq(tw_testing_alloc_count(), before);
    tw_string_transport_free(st);
    tw_free(ip);
    clock_end();
}

/* ---- TimeoutFactory */

static struct rec_events ev;
static struct rec_factory rf;
static tw_timeout_factory tf;

static void tf_setup(double timeout)
{
    clock_begin();
    memset(&ev, 0, sizeof ev);
    rec_factory_init(&rf, &ev, &rec_ops);
    tw_timeout_factory_init(&tf, &rf.base, clock_);
    cr_assert_eq(tf.timeout, TW_TIMEOUT_FACTORY_DEFAULT);
    tf.timeout = timeout;
}

TW_TEST(timeout_factory, default_is_thirty_minutes)
{
    tf_setup(TW_TIMEOUT_FACTORY_DEFAULT);
    tw_string_transport *st = rec_connect(&tf.wf.base, NULL, 0);
    tw_clock_advance(clock_, 1799);
    cr_assert_eq(st->lose_calls, 0);
    tw_clock_advance(clock_, 1);
    cr_assert_eq(st->lose_calls, 1);
    tw_string_transport_free(st);
    clock_end();
}

TW_TEST(timeout_factory, traffic_either_way_resets_it)
{
    tf_setup(5);
    tw_testing_log_capture_start();
    tw_string_transport *st = rec_connect(&tf.wf.base, "198.51.100.4", 80);
    cr_assert_eq(ev.made, 1);
    tw_clock_advance(clock_, 4);
    tw_string_transport_feed(st, "in", 2); /* read */
    cr_assert_eq(ev.len, 2);
    tw_clock_advance(clock_, 4);
    cr_assert_eq(tw_transport_write(ev.transport, "out", 3), 0); /* write */
    tw_clock_advance(clock_, 4);
    struct iovec iov = {"seq", 3};
    cr_assert_eq(tw_transport_write_sequence(ev.transport, &iov, 1), 0);
    tw_clock_advance(clock_, 4);
    cr_assert_eq(tw_transport_write_zerocopy(ev.transport, "zc", 2, NULL, NULL), 0);
    tw_clock_advance(clock_, 4);
    /* Other calls are not traffic. */
    tw_address a;
    tw_transport_get_peer(ev.transport, &a);
    tw_clock_advance(clock_, 0.9);
    cr_assert_eq(st->lose_calls, 0);
    tw_clock_advance(clock_, 0.2);
    cr_assert_eq(st->lose_calls, 1);
    cr_assert_eq(tw_testing_log_count("198.51.100.4:80"), 1);
    cr_assert_eq(tw_testing_log_count("TimeoutFactory"), 1);
    tw_testing_log_capture_stop();
    tw_string_transport_lose(st, TW_ECONNDONE);
    cr_assert_eq(ev.lost, 1);
    tw_string_transport_free(st);
    clock_end();
}

TW_TEST(timeout_factory, cancelled_at_connection_lost)
{
    tf_setup(5);
    tw_string_transport *st[2];
    st[0] = rec_connect(&tf.wf.base, NULL, 0);
    st[1] = rec_connect(&tf.wf.base, NULL, 0);
    cr_assert_eq(tw_clock_pending(clock_), 2);
    tw_clock_advance(clock_, 1);
    tw_string_transport_lose(st[0], TW_ECONNDONE);
    cr_assert_eq(tw_clock_pending(clock_), 1);
    tw_string_transport_lose(st[1], TW_ECONNDONE);
    cr_assert_eq(ev.freed, 2);
    tw_string_transport_free(st[0]);
    tw_string_transport_free(st[1]);
    clock_end();
}

TW_TEST(timeout_factory, built_but_never_connected_leaves_nothing)
{
    tf_setup(5);
    tw_protocol *p = tw_factory_build_protocol(&tf.wf.base, NULL);
    cr_assert(p);
    tw_protocol_release(p);
    cr_assert_eq(ev.freed, 1);
    clock_end();
}
