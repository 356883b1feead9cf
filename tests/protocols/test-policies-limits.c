/* Connection limits: LimitTotalConnectionsFactory (refusal and overflow
 * protocol) and LimitConnectionsByPeer. */
#include <stdio.h>

#include <twine/policies.h>

#include "rec-protocol.h"

static struct rec_events ev, overflow_ev;
static struct rec_factory rf, overflow_rf;

/* ---- LimitTotalConnectionsFactory */

static tw_limit_total_factory ltf;

static void total_setup(size_t limit)
{
    memset(&ev, 0, sizeof ev);
    memset(&overflow_ev, 0, sizeof overflow_ev);
    rec_factory_init(&rf, &ev, &rec_ops);
    rec_factory_init(&overflow_rf, &overflow_ev, &rec_ops);
    tw_limit_total_factory_init(&ltf, &rf.base);
    cr_assert_eq(ltf.limit, TW_LIMIT_TOTAL_DEFAULT);
    cr_assert_null(ltf.overflow);
    ltf.limit = limit;
}

TW_TEST(limit_total, default_is_unlimited)
{
    total_setup(TW_LIMIT_TOTAL_DEFAULT);
    tw_string_transport *st[20];
    for (int i = 0; i < 20; i++)
        st[i] = rec_connect(&ltf.wf.base, NULL, 0);
    cr_assert_eq(tw_limit_total_factory_connections(&ltf), 20);
    for (int i = 0; i < 20; i++)
        tw_string_transport_free(st[i]);
    cr_assert_eq(tw_limit_total_factory_connections(&ltf), 0);
}

TW_TEST(limit_total, refuses_over_the_limit_and_counts_down)
{
    total_setup(2);
    tw_testing_log_capture_start();
    tw_string_transport *a = rec_connect(&ltf.wf.base, NULL, 0);
    tw_string_transport *b = rec_connect(&ltf.wf.base, NULL, 0);
    tw_address addr;
    tw_address_from_ip(&addr, "192.0.2.44", 1000);
    cr_assert_null(tw_factory_build_protocol(&ltf.wf.base, &addr));
    cr_assert_eq(tw_testing_log_count("LimitTotalConnectionsFactory"), 1);
    cr_assert_eq(tw_testing_log_count("192.0.2.44:1000"), 1);
    tw_testing_log_capture_stop();
    cr_assert_eq(ev.made, 2);
    tw_string_transport_lose(a, TW_ECONNDONE);
    cr_assert_eq(tw_limit_total_factory_connections(&ltf), 1);
    tw_string_transport *c = rec_connect(&ltf.wf.base, NULL, 0);
    cr_assert_eq(ev.made, 3);
    tw_string_transport_free(a);
    tw_string_transport_free(b);
    tw_string_transport_free(c);
    cr_assert_eq(tw_limit_total_factory_connections(&ltf), 0);
}

TW_TEST(limit_total, overflow_protocol_takes_the_excess)
{
    total_setup(1);
    ltf.overflow = &overflow_rf.base;
    tw_testing_log_capture_start();
    tw_string_transport *a = rec_connect(&ltf.wf.base, NULL, 0);
    tw_string_transport *b = rec_connect(&ltf.wf.base, NULL, 0);
    cr_assert_eq(ev.made, 1);
    cr_assert_eq(overflow_ev.made, 1);
    cr_assert_eq(tw_testing_log_count("overflow"), 1);
    tw_testing_log_capture_stop();
    cr_assert_eq(tw_limit_total_factory_connections(&ltf), 2, "overflow connections count");
    tw_string_transport_free(b);
    cr_assert_eq(overflow_ev.freed, 1);
    cr_assert_eq(tw_limit_total_factory_connections(&ltf), 1);
    tw_string_transport_free(a);
    cr_assert_eq(tw_limit_total_factory_connections(&ltf), 0);
}

TW_TEST(limit_total, limit_zero_refuses_everything)
{
    total_setup(0);
    cr_assert_null(tw_factory_build_protocol(&ltf.wf.base, NULL));
    cr_assert_eq(ev.freed, 0);
}

/* ---- LimitConnectionsByPeer */

static tw_limit_per_peer_factory lpf;

static void peer_setup(size_t max)
{
    memset(&ev, 0, sizeof ev);
    rec_factory_init(&rf, &ev, &rec_ops);
    tw_limit_per_peer_factory_init(&lpf, &rf.base);
    cr_assert_eq(lpf.max_per_peer, TW_LIMIT_PER_PEER_DEFAULT);
    cr_assert_eq(lpf.max_per_peer, 5, "Twisted's maxConnectionsPerPeer");
    lpf.max_per_peer = max;
}

static tw_protocol *build_from(const char *ip, unsigned port)
{
    tw_address a;
    cr_assert_eq(tw_address_from_ip(&a, ip, port), 0);
    return tw_factory_build_protocol(&lpf.wf.base, &a);
}

static size_t count_of(const char *ip)
{
    tw_address a;
    cr_assert_eq(tw_address_from_ip(&a, ip, 1), 0);
    return tw_limit_per_peer_factory_count(&lpf, &a);
}

TW_TEST(limit_per_peer, per_host_not_per_port)
{
    peer_setup(2);
    tw_testing_log_capture_start();
    tw_string_transport *a = rec_connect(&lpf.wf.base, "10.0.0.1", 1000);
    tw_string_transport *b = rec_connect(&lpf.wf.base, "10.0.0.1", 1001);
    cr_assert_null(build_from("10.0.0.1", 1002));
    cr_assert_eq(tw_testing_log_count("max_per_peer"), 1);
    cr_assert_eq(tw_testing_log_count("10.0.0.1:1002"), 1);
    cr_assert_null(build_from("::ffff:10.0.0.1", 1003), "an IPv4-mapped address is the same host");
    tw_testing_log_capture_stop();
    tw_string_transport *c = rec_connect(&lpf.wf.base, "10.0.0.2", 1000);
    tw_string_transport *d = rec_connect(&lpf.wf.base, "2001:db8::1", 1000);
    cr_assert_eq(count_of("10.0.0.1"), 2);
    cr_assert_eq(count_of("10.0.0.2"), 1);
    cr_assert_eq(count_of("2001:db8::1"), 1);
    cr_assert_eq(count_of("10.0.0.3"), 0);
    cr_assert_eq(tw_limit_per_peer_factory_peers(&lpf), 3);

    tw_string_transport_lose(a, TW_ECONNDONE);
    cr_assert_eq(count_of("10.0.0.1"), 1, "counted down on connection_lost");
    tw_string_transport *e = rec_connect(&lpf.wf.base, "10.0.0.1", 1004);
    cr_assert_eq(count_of("10.0.0.1"), 2);
    tw_string_transport *all[] = {a, b, c, d, e};
    for (size_t i = 0; i < 5; i++)
        tw_string_transport_free(all[i]);
    cr_assert_eq(tw_limit_per_peer_factory_peers(&lpf), 0);
    cr_assert_null(lpf.buckets, "the table frees itself when empty");
    cr_assert_eq(ev.freed, 5);
}

TW_TEST(limit_per_peer, many_peers_grow_the_table)
{
    peer_setup(1);
    enum { N = 300 };
    tw_protocol *p[N];
    char ip[32];
    for (int i = 0; i < N; i++) {
        snprintf(ip, sizeof ip, "10.%d.%d.1", i / 256, i % 256);
        p[i] = build_from(ip, 1);
        cr_assert(p[i]);
    }
    cr_assert_eq(tw_limit_per_peer_factory_peers(&lpf), N);
    for (int i = 0; i < N; i++) {
        snprintf(ip, sizeof ip, "10.%d.%d.1", i / 256, i % 256);
        cr_assert_null(build_from(ip, 2));
        cr_assert_eq(count_of(ip), 1);
    }
    /* Built and released without a connection: counted down too. */
    for (int i = 0; i < N; i++)
        tw_protocol_release(p[i]);
    cr_assert_eq(tw_limit_per_peer_factory_peers(&lpf), 0);
    cr_assert_eq(ev.freed, N);
}

TW_TEST(limit_per_peer, unix_and_unknown_peers)
{
    peer_setup(1);
    tw_protocol *p = tw_factory_build_protocol(&lpf.wf.base, NULL);
    cr_assert(p);
    cr_assert_null(tw_factory_build_protocol(&lpf.wf.base, NULL), "no address: one peer");
    tw_address u;
    cr_assert_eq(tw_address_from_unix(&u, "/run/a.sock", 11, false), 0);
    tw_protocol *q = tw_factory_build_protocol(&lpf.wf.base, &u);
    cr_assert(q);
    cr_assert_null(tw_factory_build_protocol(&lpf.wf.base, &u));
    tw_protocol_release(p);
    tw_protocol_release(q);
    cr_assert_eq(tw_limit_per_peer_factory_peers(&lpf), 0);
}

TW_TEST(limit_per_peer, refusals_leave_no_count)
{
    peer_setup(0);
    cr_assert_null(build_from("10.0.0.1", 1));
    cr_assert_eq(tw_limit_per_peer_factory_peers(&lpf), 0);
    lpf.max_per_peer = 3;
    rf.refuse = true;
    cr_assert_null(build_from("10.0.0.1", 1));
    cr_assert_eq(count_of("10.0.0.1"), 0);
    cr_assert_eq(tw_limit_per_peer_factory_peers(&lpf), 0);
    cr_assert_null(lpf.buckets);
}

TW_TEST(limit_per_peer, out_of_memory)
{
    peer_setup(5);
    tw_protocol *keep = build_from("10.0.0.9", 1); /* the table exists */
    cr_assert(keep);
    tw_protocol *p;
    long n;
    for (n = 0;; n++) {
        tw_testing_fail_alloc_after(n);
        p = build_from("10.0.0.1", 1);
        tw_testing_fail_alloc_off();
        if (p)
            break;
        cr_assert_eq(count_of("10.0.0.1"), 0);
        cr_assert_eq(tw_limit_per_peer_factory_peers(&lpf), 1);
    }
    cr_assert_gt(n, 0);
    cr_assert_eq(count_of("10.0.0.1"), 1);
    tw_protocol_release(p);
    tw_protocol_release(keep);
    cr_assert_eq(tw_limit_per_peer_factory_peers(&lpf), 0);
}

TW_TEST(limit_per_peer, out_of_memory_for_the_first_peer)
{
    peer_setup(5);
    tw_protocol *p;
    for (long n = 0;; n++) {
        tw_testing_fail_alloc_after(n);
        p = build_from("10.0.0.1", 1);
        tw_testing_fail_alloc_off();
        if (p)
            break;
        cr_assert_eq(tw_limit_per_peer_factory_peers(&lpf), 0);
        cr_assert_null(lpf.buckets, "no table left behind by a refusal");
    }
    cr_assert_eq(count_of("10.0.0.1"), 1);
    tw_protocol_release(p);
    cr_assert_eq(tw_limit_per_peer_factory_peers(&lpf), 0);
}
