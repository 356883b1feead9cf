/* The reconnecting client factory (ReconnectingClientFactory) against the
 * memory reactor's fake connectors and a manual clock. */
#include <math.h>
#include <string.h>

#include <twine/client.h>
#include <twine/net.h>

#include "twtest.h"

/* ---- Fixture */

struct fixture {
    tw_reactor *mr;
    tw_clock *clock;
    tw_reconnecting_factory rf;
    tw_connector *c;
    const tw_testing_connect *rec;
    /* What the user's hooks saw. */
    unsigned started, failed, lost, made, freed;
    int last_code;
    bool pending_in_hook; /* the retry was scheduled when the hook ran */
    bool stop_in_hook;    /* the failed hook calls stop_trying */
};

static struct fixture *fx_of(tw_factory *f)
{
    return (struct fixture *)((char *)f - offsetof(struct fixture, rf));
}

static void h_started(tw_factory *f, tw_connector *c)
{
    fx_of(f)->started++;
}

static void h_failed(tw_factory *f, tw_connector *c, tw_failure *reason)
{
    struct fixture *fx = fx_of(f);
    fx->failed++;
    fx->last_code = tw_failure_code(reason);
    fx->pending_in_hook = tw_reconnecting_factory_pending(&fx->rf);
    if (fx->stop_in_hook)
        tw_reconnecting_factory_stop_trying(&fx->rf);
}

static void h_lost(tw_factory *f, tw_connector *c, tw_failure *reason)
{
    struct fixture *fx = fx_of(f);
    fx->lost++;
    fx->last_code = tw_failure_code(reason);
    fx->pending_in_hook = tw_reconnecting_factory_pending(&fx->rf);
}

static const tw_factory_ops user_ops = {
    .started_connecting = h_started,
    .client_connection_failed = h_failed,
    .client_connection_lost = h_lost,
};

/* The protocol resets the delay on connection_made, as Twisted users do. */
static void p_made(tw_protocol *p)
{
    tw_reconnecting_factory *rf = (tw_reconnecting_factory *)p->factory;
    fx_of(&rf->base)->made++;
    tw_reconnecting_factory_reset_delay(rf);
}

static void p_free(tw_protocol *p)
{
    fx_of(p->factory)->freed++;
}

static const tw_protocol_ops proto_ops = {.connection_made = p_made, .free = p_free};

static void fx_setup(struct fixture *fx, uint64_t seed)
{
    memset(fx, 0, sizeof *fx);
    cr_assert_eq(tw_testing_memory_reactor_new(&fx->mr), 0);
    fx->clock = tw_clock_new_manual();
    cr_assert_not_null(fx->clock);
    tw_reconnecting_factory_init(&fx->rf, fx->mr, &user_ops, &proto_ops, 0, NULL);
    fx->rf.clock = fx->clock;
    tw_rng_seed(&fx->rf.rng, seed);
    tw_address a;
    cr_assert_eq(tw_address_from_ip(&a, "127.0.0.1", 4321), 0);
    cr_assert_eq(tw_connect_stream(fx->mr, &a, NULL, &fx->rf.base, &fx->c), 0);
    cr_assert_eq(tw_testing_memory_reactor_connects(fx->mr), 1);
    fx->rec = tw_testing_memory_reactor_connect(fx->mr, 0);
}

/* Ends the test: nothing may be left scheduled. */
static void fx_teardown(struct fixture *fx)
{
    char why[512];
    cr_assert_eq(tw_clock_pending(fx->clock), 0, "a retry is still scheduled");
    cr_assert_eq(tw_testing_check_clean(fx->mr, why, sizeof why), 0, "dirty: %s", why);
    cr_assert_eq(tw_testing_memory_reactor_free(fx->mr), 0);
    tw_clock_free(fx->clock);
}

/* Python's random.normalvariate over the same uniform stream, written out
 * here so the test checks the formula rather than trusting tw_rng_normal. */
static double normalvariate(tw_rng *rng, double mu, double sigma)
{
    const double magic = 4 * exp(-0.5) / sqrt(2.0);
    for (;;) {
        double u1 = tw_rng_uniform(rng);
        double u2 = 1.0 - tw_rng_uniform(rng);
        double z = magic * (u1 - 0.5) / u2;
        if (z * z / 4.0 <= -log(u2))
            return mu + z * sigma;
    }
}

/* Advances to just before `delay` (no new attempt) and then past it (one). */
static void expect_retry_after(struct fixture *fx, double delay)
{
    unsigned before = fx->rec->attempts;
    cr_assert(tw_reconnecting_factory_pending(&fx->rf));
    cr_assert_geq(tw_clock_advance(fx->clock, delay - 1e-3), 0);
    cr_assert_eq(fx->rec->attempts, before, "retried before %g s", delay);
    cr_assert_geq(tw_clock_advance(fx->clock, 2e-3), 0);
    cr_assert_eq(fx->rec->attempts, before + 1, "no retry after %g s", delay);
    cr_assert_not(tw_reconnecting_factory_pending(&fx->rf));
}

/* ---- Tests */

TW_TEST(reconnect, defaults_are_twisteds)
{
    struct fixture fx;
    fx_setup(&fx, 1);
    cr_assert_eq(fx.rf.initial_delay, 1.0);
    cr_assert_eq(fx.rf.factor, 2.7182818284590451);
    cr_assert_eq(fx.rf.max_delay, 3600.0);
    cr_assert_eq(fx.rf.jitter, 0.11962656472);
    cr_assert_lt(fx.rf.max_retries, 0);
    cr_assert_eq(fx.rf.delay, 1.0);
    cr_assert(fx.rf.continue_trying);
    cr_assert_eq(fx.started, 1);
    cr_assert_eq(fx.rf.connector, fx.c, "started_connecting records the connector");
    tw_reconnecting_factory_stop_trying(&fx.rf);
    fx_teardown(&fx);
}

TW_TEST(reconnect, failures_back_off_with_jitter)
{
    struct fixture fx;
    fx_setup(&fx, 12345);
    tw_rng expect_rng;
    tw_rng_seed(&expect_rng, 12345);
    double delay = 1.0;
    for (int i = 0; i < 8; i++) {
        cr_assert_eq(tw_testing_connector_fail(fx.c, TW_ECONNREFUSED), 0);
        delay = fmin(delay * 2.7182818284590451, 3600.0);
        delay = normalvariate(&expect_rng, delay, delay * 0.11962656472);
        cr_assert_eq(fx.rf.delay, delay, "retry %d: %.17g != %.17g", i + 1, fx.rf.delay, delay);
        cr_assert_eq(fx.rf.retries, (unsigned long)i + 1);
        cr_assert_eq(fx.failed, (unsigned)i + 1);
        cr_assert_eq(fx.last_code, TW_ECONNREFUSED);
        cr_assert(fx.pending_in_hook, "the user's hook runs after the retry is scheduled");
        expect_retry_after(&fx, delay);
    }
    /* Jitter really moved the delays off the plain exponential. */
    cr_assert_neq(fx.rf.delay, pow(2.7182818284590451, 8));
    tw_reconnecting_factory_stop_trying(&fx.rf);
    cr_assert_eq(fx.rec->stop_connecting_calls, 1);
    fx_teardown(&fx);
}

TW_TEST(reconnect, max_delay_caps_before_jitter)
{
    struct fixture fx;
    fx_setup(&fx, 7);
    fx.rf.jitter = 0;
    fx.rf.factor = 2;
    fx.rf.max_delay = 10;
    const double want[] = {2, 4, 8, 10, 10, 10};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        cr_assert_eq(tw_testing_connector_fail(fx.c, 0), 0);
        cr_assert_eq(fx.rf.delay, want[i], "retry %zu: %g", i + 1, fx.rf.delay);
        expect_retry_after(&fx, want[i]);
    }
    /* With jitter, the cap applies first: the delay is normal around 10. */
    fx.rf.jitter = 0.11962656472;
    tw_rng check = fx.rf.rng;
    cr_assert_eq(tw_testing_connector_fail(fx.c, 0), 0);
    cr_assert_eq(fx.rf.delay, normalvariate(&check, 10, 10 * 0.11962656472));
    tw_reconnecting_factory_stop_trying(&fx.rf);
    fx_teardown(&fx);
}

TW_TEST(reconnect, max_retries_gives_up)
{
    struct fixture fx;
    fx_setup(&fx, 3);
    fx.rf.max_retries = 2;
    fx.rf.jitter = 0;
    tw_testing_log_capture_start();
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(tw_testing_connector_fail(fx.c, 0), 0);
        expect_retry_after(&fx, fx.rf.delay);
    }
    cr_assert_eq(tw_testing_connector_fail(fx.c, 0), 0);
    cr_assert_not(tw_reconnecting_factory_pending(&fx.rf));
    cr_assert_eq(fx.rf.retries, 3, "the count goes past the limit, as Twisted's");
    cr_assert_eq(fx.failed, 3);
    cr_assert_eq(tw_testing_log_count("abandoning reconnection after 3 retries"), 1);
    tw_testing_log_capture_stop();
    cr_assert_eq(tw_clock_advance(fx.clock, 1e6), 0);
    cr_assert_eq(fx.rec->attempts, 3);
    /* retry by hand says why it will not. */
    cr_assert_eq(tw_reconnecting_factory_retry(&fx.rf, NULL), TW_ELIMIT);
    /* max_retries 0: never retried at all. */
    tw_reconnecting_factory_reset_delay(&fx.rf);
    fx.rf.max_retries = 0;
    cr_assert_eq(tw_connector_connect(fx.c), 0);
    cr_assert_eq(tw_testing_connector_fail(fx.c, 0), 0);
    cr_assert_not(tw_reconnecting_factory_pending(&fx.rf));
    fx_teardown(&fx);
}

TW_TEST(reconnect, stop_trying_cancels_the_pending_retry)
{
    struct fixture fx;
    fx_setup(&fx, 4);
    cr_assert_eq(tw_testing_connector_fail(fx.c, 0), 0);
    cr_assert(tw_reconnecting_factory_pending(&fx.rf));
    cr_assert_eq(tw_clock_pending(fx.clock), 1);
    tw_reconnecting_factory_stop_trying(&fx.rf);
    cr_assert_not(tw_reconnecting_factory_pending(&fx.rf));
    cr_assert_eq(tw_clock_pending(fx.clock), 0);
    cr_assert_not(fx.rf.continue_trying);
    cr_assert_eq(fx.rec->stop_connecting_calls, 0, "not connecting: nothing to stop");
    cr_assert_eq(tw_clock_advance(fx.clock, 1e6), 0);
    cr_assert_eq(fx.rec->attempts, 1);
    cr_assert_eq(tw_reconnecting_factory_retry(&fx.rf, NULL), TW_ECANCELED);
    fx_teardown(&fx);
}

TW_TEST(reconnect, stop_trying_stops_the_attempt_in_progress)
{
    struct fixture fx;
    fx_setup(&fx, 5);
    /* The very first attempt: the connector is known from started_connecting. */
    tw_reconnecting_factory_stop_trying(&fx.rf);
    cr_assert_eq(fx.rec->stop_connecting_calls, 1);
    cr_assert_eq(fx.failed, 1);
    cr_assert_eq(fx.last_code, TW_ECANCELED);
    cr_assert_not(fx.pending_in_hook, "a cancelled attempt is not retried");
    cr_assert_eq(tw_connector_get_state(fx.c), TW_CONNECTOR_DISCONNECTED);

    /* reset_delay undoes stop_trying (Twisted's continueTrying = 1). */
    tw_reconnecting_factory_reset_delay(&fx.rf);
    cr_assert_eq(tw_connector_connect(fx.c), 0);
    cr_assert_eq(tw_testing_connector_fail(fx.c, 0), 0);
    cr_assert(tw_reconnecting_factory_pending(&fx.rf));
    expect_retry_after(&fx, fx.rf.delay);
    /* A hook that stops trying cancels the retry scheduled before it. */
    fx.stop_in_hook = true;
    cr_assert_eq(tw_testing_connector_fail(fx.c, 0), 0);
    cr_assert(fx.pending_in_hook);
    cr_assert_not(tw_reconnecting_factory_pending(&fx.rf));
    fx_teardown(&fx);
}

TW_TEST(reconnect, connection_made_resets_and_lost_connections_retry)
{
    struct fixture fx;
    fx_setup(&fx, 6);
    fx.rf.jitter = 0;
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(tw_testing_connector_fail(fx.c, 0), 0);
        expect_retry_after(&fx, fx.rf.delay);
    }
    cr_assert_eq(fx.rf.retries, 3);
    cr_assert_gt(fx.rf.delay, 20);
    cr_assert_eq(tw_testing_connector_succeed(fx.c, NULL), 0);
    cr_assert_eq(fx.made, 1);
    cr_assert_eq(fx.rf.retries, 0);
    cr_assert_eq(fx.rf.delay, 1.0);

    /* A clean close is retried too (Twisted retries both). */
    cr_assert_eq(tw_testing_connector_lose(fx.c, TW_ECONNDONE), 0);
    cr_assert_eq(fx.lost, 1);
    cr_assert_eq(fx.last_code, TW_ECONNDONE);
    cr_assert(fx.pending_in_hook);
    cr_assert_eq(fx.rf.delay, 2.7182818284590451);
    expect_retry_after(&fx, fx.rf.delay);

    /* And an unclean one. */
    cr_assert_eq(tw_testing_connector_succeed(fx.c, NULL), 0);
    cr_assert_eq(tw_testing_connector_lose(fx.c, TW_ECONNRESET), 0);
    cr_assert_eq(fx.lost, 2);
    cr_assert(tw_reconnecting_factory_pending(&fx.rf));
    expect_retry_after(&fx, 2.7182818284590451);

    /* stop_trying while connected: the connection is left alone, and its
     * loss is not retried. */
    cr_assert_eq(tw_testing_connector_succeed(fx.c, NULL), 0);
    tw_reconnecting_factory_stop_trying(&fx.rf);
    cr_assert_eq(fx.rec->disconnect_calls, 0);
    cr_assert_eq(tw_connector_get_state(fx.c), TW_CONNECTOR_CONNECTED);
    cr_assert_eq(tw_testing_connector_lose(fx.c, TW_ECONNDONE), 0);
    cr_assert_not(tw_reconnecting_factory_pending(&fx.rf));
    cr_assert_eq(fx.freed, 3);
    fx_teardown(&fx);
}

TW_TEST(reconnect, retry_by_hand)
{
    struct fixture fx;
    fx_setup(&fx, 8);
    fx.rf.jitter = 0;
    /* Misuse: no factory, no connector known. */
    cr_assert_eq(tw_reconnecting_factory_retry(NULL, NULL), TW_EINVAL);
    tw_reconnecting_factory stray;
    tw_reconnecting_factory_init(&stray, fx.mr, NULL, &proto_ops, 0, NULL);
    cr_assert_eq(tw_reconnecting_factory_retry(&stray, NULL), TW_EINVAL);
    cr_assert_eq(stray.retries, 0);

    /* A retry scheduled twice is scheduled once, at the later delay. */
    cr_assert_eq(tw_testing_connector_fail(fx.c, 0), 0);
    cr_assert_eq(tw_reconnecting_factory_retry(&fx.rf, fx.c), 0);
    cr_assert_eq(tw_clock_pending(fx.clock), 1);
    double d = 2.7182818284590451;
    cr_assert_eq(fx.rf.delay, d * d);
    expect_retry_after(&fx, d * d);
    /* The retry of a connector already connecting is left alone (TW_EBUSY). */
    cr_assert_eq(tw_reconnecting_factory_retry(&fx.rf, NULL), 0);
    cr_assert_eq(tw_clock_advance(fx.clock, 1e6), 1);
    cr_assert_eq(fx.rec->attempts, 2);
    cr_assert_eq(tw_connector_get_state(fx.c), TW_CONNECTOR_CONNECTING);
    tw_reconnecting_factory_stop_trying(&fx.rf);
    fx_teardown(&fx);
}

TW_TEST(reconnect, rng_is_repeatable_and_normal)
{
    tw_rng a, b;
    tw_rng_seed(&a, 99);
    tw_rng_seed(&b, 99);
    double sum = 0, sumsq = 0;
    const int n = 20000;
    for (int i = 0; i < n; i++) {
        double u = tw_rng_uniform(&a);
        cr_assert_eq(u, tw_rng_uniform(&b));
        cr_assert(u >= 0 && u < 1);
        double z = tw_rng_normal(&a, 5, 2);
        cr_assert_eq(z, normalvariate(&b, 5, 2));
        sum += z;
        sumsq += z * z;
    }
    double mean = sum / n, var = sumsq / n - mean * mean;
    cr_assert(fabs(mean - 5) < 0.1, "mean %g", mean);
    cr_assert(fabs(sqrt(var) - 2) < 0.1, "sd %g", sqrt(var));
}

TW_TEST(reconnect, backoff_policy_is_twisteds)
{
    tw_backoff b;
    tw_backoff_init(&b, 11);
    cr_assert_eq(b.initial_delay, 1.0);
    cr_assert_eq(b.max_delay, 60.0);
    cr_assert_eq(b.factor, 1.5);
    tw_rng check;
    tw_rng_seed(&check, 11);
    for (unsigned n = 0; n < 200; n++) {
        double want = fmin(pow(1.5, n < 100 ? n : 100), 60.0) + tw_rng_uniform(&check);
        cr_assert_eq(tw_backoff_policy(n, &b), want, "attempt %u", n);
    }
    /* 0 * inf is not a number: the cap. */
    b.initial_delay = 0;
    b.factor = INFINITY;
    double v = tw_backoff_policy(3, &b);
    cr_assert(v >= 60 && v < 61, "%g", v);
}
