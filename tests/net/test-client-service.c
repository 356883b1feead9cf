/* ClientService against the memory reactor (endpoints connect through
 * tw_connect_stream, which it intercepts) and a manual clock. */
#include <math.h>
#include <string.h>

#include <twine/client.h>
#include <twine/endpoint.h>
#include <twine/net.h>

#include "twtest.h"

/* ---- The user's protocol: counts what it is told. */

struct counts {
    unsigned made, lost, freed, data, starts, stops;
    int lost_code;
};
static struct counts cnt;

static void p_made(tw_protocol *p)
{
    cnt.made++;
}
static void p_data(tw_protocol *p, const char *d, size_t n)
{
    cnt.data += n;
}
static void p_lost(tw_protocol *p, tw_failure *reason)
{
    cnt.lost++;
    cnt.lost_code = tw_failure_code(reason);
    cr_assert_not_null(p->transport, "the transport is set during connection_lost");
}
static void p_free(tw_protocol *p)
{
    cnt.freed++;
}
static const tw_protocol_ops user_proto = {
    .connection_made = p_made, .data_received = p_data, .connection_lost = p_lost, .free = p_free};

static void f_start(tw_factory *f)
{
    cnt.starts++;
}
static void f_stop(tw_factory *f)
{
    cnt.stops++;
}
static const tw_factory_ops user_factory_ops = {.start_factory = f_start, .stop_factory = f_stop};

/* ---- Fixture */

struct fixture {
    tw_reactor *mr;
    tw_clock *clock;
    tw_endpoint *ep;
    tw_factory factory;
    tw_client_service *s;
    tw_rng expect; /* replays the default policy's jitter */
};

static void fx_setup(struct fixture *fx, uint64_t seed)
{
    memset(fx, 0, sizeof *fx);
    memset(&cnt, 0, sizeof cnt);
    cr_assert_eq(tw_testing_memory_reactor_new(&fx->mr), 0);
    fx->clock = tw_clock_new_manual();
    cr_assert_not_null(fx->clock);
    cr_assert_eq(tw_endpoint_client_from_string(fx->mr, "tcp:127.0.0.1:4321", &fx->ep, NULL), 0);
    tw_factory_init(&fx->factory, &user_factory_ops, &user_proto, 0, NULL);
    cr_assert_eq(tw_client_service_new(fx->mr, fx->ep, &fx->factory, &fx->s), 0);
    cr_assert_eq(tw_client_service_set_clock(fx->s, fx->clock), 0);
    tw_rng_seed(&tw_client_service_backoff(fx->s)->rng, seed);
    tw_rng_seed(&fx->expect, seed);
}

static void fx_teardown(struct fixture *fx)
{
    tw_client_service_free(fx->s);
    /* A release put off to the reactor's next iteration happens now. */
    tw_reactor_iterate(fx->mr, 0);
    char why[512];
    cr_assert_eq(tw_clock_pending(fx->clock), 0, "a retry is still scheduled");
    cr_assert_eq(tw_testing_check_clean(fx->mr, why, sizeof why), 0, "dirty: %s", why);
    cr_assert_eq(tw_testing_memory_reactor_free(fx->mr), 0);
    tw_endpoint_free(fx->ep);
    tw_clock_free(fx->clock);
}

static size_t attempts(struct fixture *fx)
{
    return tw_testing_memory_reactor_connects(fx->mr);
}

/* The connector of the last attempt. */
static tw_connector *last(struct fixture *fx)
{
    size_t n = attempts(fx);
    cr_assert_gt(n, 0);
    return tw_testing_memory_reactor_connect(fx->mr, n - 1)->connector;
}

static const tw_testing_connect *last_rec(struct fixture *fx)
{
    return tw_testing_memory_reactor_connect(fx->mr, attempts(fx) - 1);
}

/* The default policy's next delay for failed_attempts n. */
static double expected_delay(struct fixture *fx, unsigned n)
{
    return fmin(pow(1.5, n), 60.0) + tw_rng_uniform(&fx->expect);
}

/* Advances to just before `delay` (no new attempt), then past it (one). */
static void expect_attempt_after(struct fixture *fx, double delay)
{
    size_t before = attempts(fx);
    cr_assert_geq(tw_clock_advance(fx->clock, delay - 1e-3), 0);
    cr_assert_eq(attempts(fx), before, "attempted before %g s", delay);
    cr_assert_geq(tw_clock_advance(fx->clock, 2e-3), 0);
    cr_assert_eq(attempts(fx), before + 1, "no attempt after %g s", delay);
}

/* A deferred's outcome, recorded by callbacks. */
struct outcome {
    bool fired;
    tw_protocol *p;
    int code;
};

static tw_result record(tw_result r, void *arg)
{
    struct outcome *o = arg;
    o->fired = true;
    if (tw_result_is_failure(r))
        o->code = tw_failure_code(r.failure);
    else
        o->p = r.value;
    tw_result_release(&r);
    return tw_result_borrowed(NULL);
}

static void watch(tw_deferred *d, struct outcome *o)
{
    cr_assert_not_null(d);
    *o = (struct outcome){0};
    cr_assert_eq(tw_deferred_add_callbacks(d, record, record, o, NULL), 0);
    tw_deferred_unref(d);
}

/* ---- Tests */

TW_TEST(client_service, when_connected_fires_with_the_protocol)
{
    struct fixture fx;
    fx_setup(&fx, 1);
    cr_assert_not(tw_client_service_running(fx.s));
    struct outcome early;
    watch(tw_client_service_when_connected(fx.s, 0), &early);
    cr_assert_eq(attempts(&fx), 0, "nothing before start");
    cr_assert_eq(tw_client_service_start(fx.s), 0);
    cr_assert(tw_client_service_running(fx.s));
    cr_assert_eq(tw_client_service_start(fx.s), TW_EBUSY);
    cr_assert_eq(attempts(&fx), 1);
    cr_assert_not(early.fired);
    cr_assert_eq(cnt.starts, 1, "the user's factory is started with the attempt");

    tw_string_transport *st = NULL;
    cr_assert_eq(tw_testing_connector_succeed(last(&fx), &st), 0);
    cr_assert(early.fired);
    cr_assert_eq(early.code, 0);
    cr_assert_not_null(early.p);
    cr_assert_eq(early.p->ops, &user_proto, "the user's protocol, not the wrapper");
    cr_assert_eq(early.p->transport, &st->base);
    cr_assert_eq(early.p->factory, &fx.factory);
    cr_assert_eq(cnt.made, 1);
    cr_assert_eq(tw_client_service_protocol(fx.s), early.p);

    /* Bytes reach the user's protocol through the wrapper. */
    tw_string_transport_feed(st, "hello", 5);
    cr_assert_eq(cnt.data, 5);

    struct outcome now;
    watch(tw_client_service_when_connected(fx.s, 0), &now);
    cr_assert(now.fired, "connected: fires at once");
    cr_assert_eq(now.p, early.p);

    struct outcome stopped;
    watch(tw_client_service_stop(fx.s), &stopped);
    cr_assert_not(stopped.fired, "waits for the connection to close");
    cr_assert_eq(st->lose_calls, 1);
    cr_assert_eq(tw_testing_connector_lose(last(&fx), TW_ECONNDONE), 0);
    cr_assert(stopped.fired);
    cr_assert_eq(stopped.code, 0);
    cr_assert_eq(cnt.lost, 1);
    cr_assert_eq(cnt.freed, 1);
    cr_assert_eq(cnt.stops, 1);
    cr_assert_eq(attempts(&fx), 1, "no reconnection after stop");
    fx_teardown(&fx);
}

TW_TEST(client_service, lost_connection_reconnects_after_the_backoff)
{
    struct fixture fx;
    fx_setup(&fx, 42);
    cr_assert_eq(tw_client_service_start(fx.s), 0);
    cr_assert_eq(tw_testing_connector_succeed(last(&fx), NULL), 0);
    tw_protocol *first = tw_client_service_protocol(fx.s);
    cr_assert_not_null(first);

    cr_assert_eq(tw_testing_connector_lose(last(&fx), TW_ECONNRESET), 0);
    cr_assert_eq(cnt.lost, 1);
    cr_assert_eq(cnt.lost_code, TW_ECONNRESET);
    cr_assert_null(tw_client_service_protocol(fx.s));

    /* While waiting: the next connection answers. */
    struct outcome next;
    watch(tw_client_service_when_connected(fx.s, 0), &next);
    cr_assert_not(next.fired);
    expect_attempt_after(&fx, expected_delay(&fx, 1));
    cr_assert_not(next.fired);
    cr_assert_eq(tw_testing_connector_succeed(last(&fx), NULL), 0);
    cr_assert(next.fired);
    cr_assert_not_null(next.p);
    cr_assert_eq(next.p, tw_client_service_protocol(fx.s));
    cr_assert_eq(cnt.made, 2);

    /* A clean close is retried too; the count restarted with the connection. */
    cr_assert_eq(tw_testing_connector_lose(last(&fx), TW_ECONNDONE), 0);
    expect_attempt_after(&fx, expected_delay(&fx, 1));
    struct outcome stopped;
    watch(tw_client_service_stop(fx.s), &stopped);
    cr_assert(stopped.fired, "the attempt is cancelled at once");
    cr_assert_null(last_rec(&fx)->connector, "the endpoint abandoned (freed) the connector");
    fx_teardown(&fx);
}

TW_TEST(client_service, failed_attempts_back_off)
{
    struct fixture fx;
    fx_setup(&fx, 7);
    cr_assert_eq(tw_client_service_start(fx.s), 0);
    for (unsigned n = 1; n <= 12; n++) {
        cr_assert_eq(tw_testing_connector_fail(last(&fx), TW_ECONNREFUSED), 0);
        double d = expected_delay(&fx, n);
        if (n >= 11)
            cr_assert_gt(d, 60.0, "capped at 60, plus the jitter");
        expect_attempt_after(&fx, d);
    }
    /* A connection resets the count. */
    cr_assert_eq(tw_testing_connector_succeed(last(&fx), NULL), 0);
    cr_assert_eq(tw_testing_connector_lose(last(&fx), TW_ECONNDONE), 0);
    expect_attempt_after(&fx, expected_delay(&fx, 1));
    cr_assert_eq(tw_testing_connector_fail(last(&fx), 0), 0);
    expect_attempt_after(&fx, expected_delay(&fx, 2));
    struct outcome stopped;
    watch(tw_client_service_stop(fx.s), &stopped);
    cr_assert(stopped.fired);
    fx_teardown(&fx);
}

static unsigned policy_calls[16];
static size_t npolicy;
static double fixed_policy(unsigned failed, void *arg)
{
    if (npolicy < 16)
        policy_calls[npolicy++] = failed;
    return *(double *)arg;
}

TW_TEST(client_service, custom_retry_policy)
{
    struct fixture fx;
    fx_setup(&fx, 2);
    npolicy = 0;
    double quarter = 0.25;
    cr_assert_eq(tw_client_service_set_retry_policy(fx.s, fixed_policy, &quarter), 0);
    cr_assert_eq(tw_client_service_start(fx.s), 0);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(tw_testing_connector_fail(last(&fx), 0), 0);
        expect_attempt_after(&fx, 0.25);
    }
    cr_assert_eq(npolicy, 3);
    cr_assert_eq(policy_calls[0], 1);
    cr_assert_eq(policy_calls[2], 3);
    /* A negative delay is taken as 0. */
    quarter = -5;
    cr_assert_eq(tw_testing_connector_fail(last(&fx), 0), 0);
    cr_assert_eq(tw_clock_advance(fx.clock, 0), 1);
    cr_assert_eq(attempts(&fx), 5);
    /* The clock cannot change under a scheduled retry. */
    cr_assert_eq(tw_testing_connector_fail(last(&fx), 0), 0);
    cr_assert_eq(tw_client_service_set_clock(fx.s, NULL), TW_EBUSY);
    struct outcome stopped;
    watch(tw_client_service_stop(fx.s), &stopped);
    cr_assert(stopped.fired);
    /* NULL restores the default policy. */
    cr_assert_eq(tw_client_service_set_retry_policy(fx.s, NULL, NULL), 0);
    fx_teardown(&fx);
}

TW_TEST(client_service, stop_fails_pending_when_connected)
{
    struct fixture fx;
    fx_setup(&fx, 3);
    cr_assert_eq(tw_client_service_start(fx.s), 0);
    cr_assert_eq(tw_testing_connector_fail(last(&fx), 0), 0);
    struct outcome w1, w2;
    watch(tw_client_service_when_connected(fx.s, 0), &w1);
    watch(tw_client_service_when_connected(fx.s, 5), &w2);
    cr_assert_eq(tw_clock_pending(fx.clock), 1);
    struct outcome stopped;
    watch(tw_client_service_stop(fx.s), &stopped);
    cr_assert(stopped.fired, "waiting: nothing to close");
    cr_assert(w1.fired && w2.fired);
    cr_assert_eq(w1.code, TW_ECANCELED);
    cr_assert_eq(w2.code, TW_ECANCELED);
    cr_assert_eq(tw_clock_pending(fx.clock), 0, "the retry is cancelled");
    cr_assert_not(tw_client_service_running(fx.s));

    /* Stopped: when_connected fails at once; stop again fires at once. */
    struct outcome late, again;
    watch(tw_client_service_when_connected(fx.s, 0), &late);
    cr_assert(late.fired);
    cr_assert_eq(late.code, TW_ECANCELED);
    watch(tw_client_service_stop(fx.s), &again);
    cr_assert(again.fired);
    cr_assert_eq(tw_clock_advance(fx.clock, 1e6), 0);
    cr_assert_eq(attempts(&fx), 1);

    /* And it starts again from stopped. */
    cr_assert_eq(tw_client_service_start(fx.s), 0);
    cr_assert_eq(attempts(&fx), 2);
    struct outcome w3;
    watch(tw_client_service_when_connected(fx.s, 0), &w3);
    watch(tw_client_service_stop(fx.s), &stopped);
    cr_assert(stopped.fired);
    cr_assert_eq(w3.code, TW_ECANCELED, "stopping while connecting cancels waiters too");
    fx_teardown(&fx);
}

TW_TEST(client_service, stop_while_connected_waits_for_the_close)
{
    struct fixture fx;
    fx_setup(&fx, 4);
    cr_assert_eq(tw_client_service_start(fx.s), 0);
    tw_string_transport *st = NULL;
    cr_assert_eq(tw_testing_connector_succeed(last(&fx), &st), 0);
    struct outcome s1, s2, w;
    watch(tw_client_service_stop(fx.s), &s1);
    cr_assert_eq(st->lose_calls, 1);
    /* Asked while disconnecting: waits, and is cancelled with the stop. */
    watch(tw_client_service_when_connected(fx.s, 0), &w);
    watch(tw_client_service_stop(fx.s), &s2);
    cr_assert_not(s1.fired || s2.fired || w.fired);
    cr_assert_eq(tw_testing_connector_lose(last(&fx), TW_ECONNDONE), 0);
    cr_assert(s1.fired && s2.fired && w.fired);
    cr_assert_eq(w.code, TW_ECANCELED);
    cr_assert_eq(tw_clock_pending(fx.clock), 0);
    fx_teardown(&fx);
}

TW_TEST(client_service, restart_while_disconnecting)
{
    struct fixture fx;
    fx_setup(&fx, 5);
    cr_assert_eq(tw_client_service_start(fx.s), 0);
    cr_assert_eq(tw_testing_connector_succeed(last(&fx), NULL), 0);
    struct outcome stopped, w;
    watch(tw_client_service_stop(fx.s), &stopped);
    cr_assert_eq(tw_client_service_start(fx.s), 0, "restarting");
    watch(tw_client_service_when_connected(fx.s, 0), &w);
    cr_assert_eq(attempts(&fx), 1);
    cr_assert_eq(tw_testing_connector_lose(last(&fx), TW_ECONNDONE), 0);
    cr_assert(stopped.fired, "the stop completes first");
    cr_assert_eq(attempts(&fx), 2, "then it connects again at once");
    cr_assert_not(w.fired);
    cr_assert_eq(tw_testing_connector_succeed(last(&fx), NULL), 0);
    cr_assert(w.fired);
    cr_assert_not_null(w.p);
    fx_teardown(&fx); /* free while connected */
    cr_assert_eq(cnt.freed, 2);
}

TW_TEST(client_service, fail_after_failures)
{
    struct fixture fx;
    fx_setup(&fx, 6);
    cr_assert_eq(tw_client_service_start(fx.s), 0);
    struct outcome never, one, two;
    watch(tw_client_service_when_connected(fx.s, 0), &never);
    watch(tw_client_service_when_connected(fx.s, 1), &one);
    watch(tw_client_service_when_connected(fx.s, 2), &two);
    cr_assert_eq(tw_testing_connector_fail(last(&fx), TW_ECONNREFUSED), 0);
    cr_assert(one.fired);
    cr_assert_eq(one.code, TW_ECONNREFUSED, "the attempt's own failure");
    cr_assert_not(two.fired);
    expect_attempt_after(&fx, expected_delay(&fx, 1));
    cr_assert_eq(tw_testing_connector_fail(last(&fx), TW_ETIMEDOUT), 0);
    cr_assert(two.fired);
    cr_assert_eq(two.code, TW_ETIMEDOUT);
    cr_assert_not(never.fired);
    expect_attempt_after(&fx, expected_delay(&fx, 2));
    cr_assert_eq(tw_testing_connector_succeed(last(&fx), NULL), 0);
    cr_assert(never.fired);
    cr_assert_eq(never.code, 0);
    cr_assert_not_null(never.p);
    /* A lost connection is not a failed attempt for these counters. */
    struct outcome after_loss;
    cr_assert_eq(tw_testing_connector_lose(last(&fx), TW_ECONNRESET), 0);
    watch(tw_client_service_when_connected(fx.s, 1), &after_loss);
    expect_attempt_after(&fx, expected_delay(&fx, 1));
    cr_assert_not(after_loss.fired);
    cr_assert_eq(tw_testing_connector_fail(last(&fx), 0), 0);
    cr_assert(after_loss.fired);
    cr_assert_eq(after_loss.code, TW_ECONNREFUSED);
    fx_teardown(&fx);
}

/* A when_connected callback that stops and frees the service from inside
 * the service's own call. */
struct reentrant {
    tw_client_service *s;
    bool ran;
};
static tw_result free_from_callback(tw_result r, void *arg)
{
    struct reentrant *re = arg;
    re->ran = true;
    tw_deferred *d = tw_client_service_stop(re->s);
    tw_deferred_unref(d);
    tw_client_service_free(re->s);
    return r;
}

TW_TEST(client_service, free_from_inside_a_callback)
{
    struct fixture fx;
    fx_setup(&fx, 8);
    cr_assert_eq(tw_client_service_start(fx.s), 0);
    struct reentrant re = {fx.s, false};
    tw_deferred *d = tw_client_service_when_connected(fx.s, 0);
    cr_assert_eq(tw_deferred_add_callback(d, free_from_callback, &re), 0);
    tw_deferred_unref(d);
    cr_assert_eq(tw_testing_connector_succeed(last(&fx), NULL), 0);
    cr_assert(re.ran);
    cr_assert_eq(cnt.made, 1);
    /* The connection was told to close and is no longer watched. */
    cr_assert_geq(last_rec(&fx)->transport->lose_calls, 1);
    cr_assert_eq(tw_testing_connector_lose(last(&fx), TW_ECONNDONE), 0);
    cr_assert_eq(cnt.lost, 1);
    cr_assert_eq(cnt.freed, 1);
    tw_reactor_iterate(fx.mr, 0);
    fx.s = NULL;
    fx_teardown(&fx);
}

TW_TEST(client_service, bad_arguments)
{
    tw_client_service *s = (void *)1;
    tw_factory f;
    tw_factory_init(&f, NULL, &user_proto, 0, NULL);
    cr_assert_eq(tw_client_service_new(NULL, NULL, &f, &s), TW_EINVAL);
    cr_assert_null(s);
    cr_assert_eq(tw_client_service_new(NULL, NULL, &f, NULL), TW_EINVAL);
    cr_assert_null(tw_client_service_stop(NULL));
    cr_assert_null(tw_client_service_when_connected(NULL, 0));
    cr_assert_eq(tw_client_service_start(NULL), TW_EINVAL);
    cr_assert_null(tw_client_service_protocol(NULL));
    tw_client_service_free(NULL);
}

TW_TEST(client_service, allocation_failure)
{
    tw_reactor *mr;
    cr_assert_eq(tw_testing_memory_reactor_new(&mr), 0);
    tw_endpoint *ep;
    cr_assert_eq(tw_endpoint_client_from_string(mr, "tcp:127.0.0.1:4321", &ep, NULL), 0);
    tw_factory f;
    tw_factory_init(&f, NULL, &user_proto, 0, NULL);
    memset(&cnt, 0, sizeof cnt);

    /* The constructor. */
    tw_client_service *s = NULL;
    int rc;
    for (long n = 0;; n++) {
        tw_testing_fail_alloc_after(n);
        rc = tw_client_service_new(mr, ep, &f, &s);
        tw_testing_fail_alloc_off();
        if (rc == 0)
            break;
        cr_assert_eq(rc, TW_ENOMEM, "n=%ld: %s", n, tw_strerror(rc));
        cr_assert_null(s);
    }

    tw_clock *clock = tw_clock_new_manual();
    cr_assert_not_null(clock);
    cr_assert_eq(tw_client_service_set_clock(s, clock), 0);
    /* start: TW_ENOMEM leaves it stopped, with nothing recorded. */
    size_t before = 0;
    for (long n = 0;; n++) {
        before = tw_testing_memory_reactor_connects(mr);
        tw_testing_fail_alloc_after(n);
        rc = tw_client_service_start(s);
        tw_testing_fail_alloc_off();
        if (rc == 0)
            break;
        cr_assert_eq(rc, TW_ENOMEM, "n=%ld: %s", n, tw_strerror(rc));
        cr_assert_not(tw_client_service_running(s));
        cr_assert_eq(tw_testing_memory_reactor_connects(mr), before);
    }

    /* An attempt that started but failed later (its deferred failed) is
     * retried on the clock, unless the failing allocations also kept the
     * retry timer from being armed (logged: the service is stuck). */
    while (tw_testing_memory_reactor_connects(mr) == before && tw_clock_pending(clock) > 0)
        tw_clock_advance(clock, 100);
    if (tw_testing_memory_reactor_connects(mr) == before) {
        struct outcome restarted;
        watch(tw_client_service_stop(s), &restarted);
        cr_assert(restarted.fired);
        cr_assert_eq(tw_client_service_start(s), 0);
    }

    /* when_connected: NULL, or a deferred that works. */
    tw_deferred *d = NULL;
    for (long n = 0; !d; n++) {
        tw_testing_fail_alloc_after(n);
        d = tw_client_service_when_connected(s, 0);
        tw_testing_fail_alloc_off();
    }
    struct outcome o;
    watch(d, &o);
    size_t i = tw_testing_memory_reactor_connects(mr) - 1;
    cr_assert_eq(
        tw_testing_connector_succeed(tw_testing_memory_reactor_connect(mr, i)->connector, NULL), 0);
    cr_assert(o.fired);
    cr_assert_not_null(o.p);

    /* stop: NULL when its deferred cannot be made, but it stops all the same. */
    tw_testing_fail_alloc_after(0);
    d = tw_client_service_stop(s);
    tw_testing_fail_alloc_off();
    cr_assert_null(d);
    cr_assert_not(tw_client_service_running(s));
    cr_assert_eq(tw_testing_memory_reactor_connect(mr, i)->transport->lose_calls, 1);
    cr_assert_eq(tw_testing_connector_lose(tw_testing_memory_reactor_connect(mr, i)->connector, 0),
                 0);
    tw_client_service_free(s);
    tw_reactor_iterate(mr, 0);
    cr_assert_eq(tw_clock_pending(clock), 0);
    cr_assert_eq(tw_testing_memory_reactor_free(mr), 0);
    tw_endpoint_free(ep);
    tw_clock_free(clock);
}
