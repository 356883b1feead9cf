/* ReconnectingClientFactory, and the jitter generator and backoff policy
 * that it and ClientService share. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include <twine/client.h>
#include <twine/error.h>
#include <twine/log.h>

#define LOG_NS                          "twine.client"

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* ---- tw_rng */

void tw_rng_seed(tw_rng *rng, uint64_t seed)
{
    rng->state = seed;
}

static uint64_t rng_next(tw_rng *rng)
{
    uint64_t z = (rng->state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

double tw_rng_uniform(tw_rng *rng)
{
    return (double)(rng_next(rng) >> 11) * 0x1.0p-53;
}

double tw_rng_normal(tw_rng *rng, double mu, double sigma)
{
    const double nv_magic = 4.0 * exp(-0.5) / sqrt(2.0);
    double z;
    for (;;) {
        double u1 = tw_rng_uniform(rng);
        double u2 = 1.0 - tw_rng_uniform(rng); /* (0, 1]: log is finite */
        z = nv_magic * (u1 - 0.5) / u2;
        if (z * z / 4.0 <= -log(u2))
            break;
    }
    return mu + z * sigma;
}

/* A seed that differs between processes and between objects. */
static uint64_t default_seed(const void *obj)
{
    tw_rng mix = {tw_monotonic_ns() ^ (uint64_t)(uintptr_t)obj};
    return rng_next(&mix);
}

/* ---- Backoff policy */

void tw_backoff_init(tw_backoff *b, uint64_t seed)
{
    *b = (tw_backoff){.initial_delay = 1.0, .max_delay = 60.0, .factor = 1.5};
    tw_rng_seed(&b->rng, seed);
}

double tw_backoff_policy(unsigned failed_attempts, void *backoff)
{
    tw_backoff *b = backoff;
    double n = failed_attempts < 100 ? failed_attempts : 100;
    double delay = fmin(b->initial_delay * pow(b->factor, n), b->max_delay);
    if (isnan(delay))
        delay = b->max_delay;
    return delay + (b->jitter ? b->jitter(b->jitter_arg) : tw_rng_uniform(&b->rng));
}

/* ---- The factory */

static tw_reconnecting_factory *rcf(tw_factory *f)
{
    return (tw_reconnecting_factory *)f;
}

static tw_protocol *op_build(tw_factory *f, const tw_address *addr)
{
    tw_reconnecting_factory *rf = rcf(f);
    if (rf->user_ops && rf->user_ops->build_protocol)
        return rf->user_ops->build_protocol(f, addr);
    return tw_factory_build_default(f, addr);
}

static void op_start(tw_factory *f)
{
    tw_reconnecting_factory *rf = rcf(f);
    if (rf->user_ops && rf->user_ops->start_factory)
        rf->user_ops->start_factory(f);
}

static void op_stop(tw_factory *f)
{
    tw_reconnecting_factory *rf = rcf(f);
    if (rf->user_ops && rf->user_ops->stop_factory)
        rf->user_ops->stop_factory(f);
}

static void op_started(tw_factory *f, tw_connector *c)
{
    tw_reconnecting_factory *rf = rcf(f);
    rf->connector = c;
    if (rf->user_ops && rf->user_ops->started_connecting)
        rf->user_ops->started_connecting(f, c);
}

static void op_failed(tw_factory *f, tw_connector *c, tw_failure *reason)
{
    tw_reconnecting_factory *rf = rcf(f);
    if (rf->continue_trying) {
        rf->connector = c;
        tw_reconnecting_factory_retry(rf, NULL);
    }
    if (rf->user_ops && rf->user_ops->client_connection_failed)
        rf->user_ops->client_connection_failed(f, c, reason);
}

static void op_lost(tw_factory *f, tw_connector *c, tw_failure *reason)
{
    tw_reconnecting_factory *rf = rcf(f);
    if (rf->continue_trying) {
        rf->connector = c;
        tw_reconnecting_factory_retry(rf, NULL);
    }
    if (rf->user_ops && rf->user_ops->client_connection_lost)
        rf->user_ops->client_connection_lost(f, c, reason);
}

static const tw_factory_ops reconnecting_ops = {
    .build_protocol = op_build,
    .start_factory = op_start,
    .stop_factory = op_stop,
    .started_connecting = op_started,
    .client_connection_failed = op_failed,
    .client_connection_lost = op_lost,
};

/* The scheduled retry: connector.connect(). An attempt that cannot even
 * start is what Twisted would report through clientConnectionFailed. */
static void reconnect(tw_timer *timer)
{
    tw_reconnecting_factory *rf = container_of(timer, tw_reconnecting_factory, timer);
    tw_connector *c = rf->connector;
    if (!c)
        return;
    int rc = tw_connector_connect(c);
    if (rc == 0 || rc == TW_EBUSY)
        return;
    tw_failure *reason = tw_failure_new(rc, NULL, "reconnecting: %s", tw_strerror(rc));
    op_failed(&rf->base, c, reason);
    tw_failure_unref(reason);
}

void tw_reconnecting_factory_init(tw_reconnecting_factory *rf, tw_reactor *r,
                                  const tw_factory_ops *ops, const tw_protocol_ops *protocol_ops,
                                  size_t protocol_size, void *data)
{
    *rf = (tw_reconnecting_factory){0};
    tw_factory_init(&rf->base, &reconnecting_ops, protocol_ops, protocol_size, data);
    rf->user_ops = ops;
    rf->initial_delay = TW_RECONNECT_INITIAL_DELAY;
    rf->factor = TW_RECONNECT_FACTOR;
    rf->max_delay = TW_RECONNECT_MAX_DELAY;
    rf->jitter = TW_RECONNECT_JITTER;
    rf->max_retries = -1;
    rf->clock = r ? tw_reactor_clock(r) : NULL;
    tw_rng_seed(&rf->rng, default_seed(rf));
    rf->delay = rf->initial_delay;
    rf->continue_trying = true;
    tw_timer_init(&rf->timer, rf->clock, reconnect);
}

int tw_reconnecting_factory_retry(tw_reconnecting_factory *rf, tw_connector *c)
{
    if (!rf)
        return TW_EINVAL;
    if (!rf->continue_trying) {
        tw_log_info(LOG_NS, "abandoning reconnection on explicit request");
        return TW_ECANCELED;
    }
    if (c)
        rf->connector = c;
    if (!rf->connector)
        return TW_EINVAL;

    rf->retries++;
    if (rf->max_retries >= 0 && rf->retries > (unsigned long)rf->max_retries) {
        tw_log_info(LOG_NS, "abandoning reconnection after %lu retries", rf->retries);
        return TW_ELIMIT;
    }
    rf->delay = fmin(rf->delay * rf->factor, rf->max_delay);
    if (rf->jitter != 0)
        rf->delay = tw_rng_normal(&rf->rng, rf->delay, rf->delay * rf->jitter);

    double when = rf->delay > 0 && !isnan(rf->delay) ? rf->delay : 0;
    tw_log_info(LOG_NS, "will retry in %g seconds", when);
    /* The clock may have been changed since the last retry; re-initialising
     * is allowed on a disarmed timer. */
    if (rf->timer.clock != rf->clock) {
        tw_timer_stop(&rf->timer);
        tw_timer_init(&rf->timer, rf->clock, reconnect);
    }
    int rc = rf->clock ? tw_timer_start(&rf->timer, when) : TW_EINVAL;
    if (rc < 0)
        tw_log_error(LOG_NS, "cannot schedule the reconnection: %s", tw_strerror(rc));
    return rc;
}

void tw_reconnecting_factory_stop_trying(tw_reconnecting_factory *rf)
{
    if (!rf)
        return;
    tw_timer_stop(&rf->timer);
    rf->continue_trying = false;
    if (rf->connector && tw_connector_get_state(rf->connector) == TW_CONNECTOR_CONNECTING)
        tw_connector_stop_connecting(rf->connector);
}

void tw_reconnecting_factory_reset_delay(tw_reconnecting_factory *rf)
{
    if (!rf)
        return;
    rf->delay = rf->initial_delay;
    rf->retries = 0;
    rf->continue_trying = true;
}

bool tw_reconnecting_factory_pending(const tw_reconnecting_factory *rf)
{
    return rf && tw_timer_active(&rf->timer);
}
