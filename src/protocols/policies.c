/* Policies: idle timeouts, throttling, connection limits. See policies.h. */
#include <math.h>
#include <string.h>

#include <twine/error.h>
#include <twine/log.h>
#include <twine/policies.h>

#define LOG_NS "twine.policies"

static const char *peer_text(const tw_address *a, char *buf, size_t size)
{
    return tw_address_format(a, buf, size);
}

/* ---- TimeoutMixin */

static tw_timeout *timeout_of(tw_timer *timer)
{
    return (tw_timeout *)((char *)timer - offsetof(tw_timeout, timer));
}

static void timeout_fired(tw_timer *timer)
{
    tw_timeout *t = timeout_of(timer);
    tw_log_info(LOG_NS, "idle timeout: no traffic for %g s, timing the connection out", t->period);
    if (t->timeout_connection)
        t->timeout_connection(t);
    else if (t->protocol && t->protocol->transport)
        tw_transport_lose_connection(t->protocol->transport);
}

void tw_timeout_init(tw_timeout *t, tw_clock *clock, tw_protocol *protocol, tw_timeout_fn fn)
{
    memset(t, 0, sizeof *t);
    t->protocol = protocol;
    t->timeout_connection = fn;
    tw_timer_init(&t->timer, clock, timeout_fired);
}

int tw_timeout_set(tw_timeout *t, double seconds)
{
    if (!(seconds >= 0) || isinf(seconds))
        return TW_EINVAL;
    if (seconds == 0) {
        tw_timer_stop(&t->timer);
        t->period = 0;
        return 0;
    }
    int rc = tw_timer_start(&t->timer, seconds);
    if (rc < 0)
        return rc;
    t->period = seconds;
    return 0;
}

void tw_timeout_reset(tw_timeout *t)
{
    /* An armed timer re-arms without allocating, so this cannot fail. */
    if (t->period > 0 && tw_timer_active(&t->timer))
        tw_timer_start(&t->timer, t->period);
}

double tw_timeout_period(const tw_timeout *t)
{
    return t->period;
}

bool tw_timeout_pending(const tw_timeout *t)
{
    return tw_timer_active(&t->timer);
}

/* ---- TimeoutFactory (TimeoutProtocol) */

typedef struct timeout_wrapper {
    tw_wrapper w;
    tw_timer timer;
    double period;
} timeout_wrapper;

static timeout_wrapper *tw_of(tw_wrapper *w)
{
    return (timeout_wrapper *)w;
}

static void tp_fired(tw_timer *timer)
{
    timeout_wrapper *tw = (timeout_wrapper *)((char *)timer - offsetof(timeout_wrapper, timer));
    char buf[TW_ADDRESS_STRLEN];
    tw_log_info(LOG_NS, "closing the connection with %s: idle for %g s (TimeoutFactory timeout)",
                peer_text(&tw->w.addr, buf, sizeof buf), tw->period);
    if (tw_wrapper_real(&tw->w))
        tw_transport_lose_connection(tw_wrapper_real(&tw->w));
}

static void tp_reset(tw_wrapper *w)
{
    timeout_wrapper *tw = tw_of(w);
    if (tw_timer_active(&tw->timer))
        tw_timer_start(&tw->timer, tw->period);
}

static void tp_connection_made(tw_wrapper *w)
{
    timeout_wrapper *tw = tw_of(w);
    tw_timeout_factory *f = (tw_timeout_factory *)w->wfactory;
    tw->period = f->timeout > 0 && !isinf(f->timeout) ? f->timeout : TW_TIMEOUT_FACTORY_DEFAULT;
    tw_timer_init(&tw->timer, f->clock, tp_fired);
    if (tw_timer_start(&tw->timer, tw->period) < 0) {
        /* A connection nothing would ever time out breaks the limit: refuse
         * it before the wrapped protocol sees it. */
        tw_log_error(LOG_NS, "no memory for a connection's idle timer: closing it");
        tw_transport_abort_connection(tw_wrapper_real(w));
        return;
    }
    tw_wrapper_make_wrapped_connection(w);
}

static void tp_data_received(tw_wrapper *w, const char *data, size_t len)
{
    tp_reset(w);
    tw_wrapper_deliver(w, data, len);
}

static void tp_connection_lost(tw_wrapper *w, tw_failure *reason)
{
    tw_timer_stop(&tw_of(w)->timer);
}

static void tp_free(tw_wrapper *w)
{
    /* A wrapper released without a connection never armed its timer, and
     * tw_timer_stop on a zeroed timer is not allowed before init: only stop
     * a timer that connection_made initialised. */
    if (tw_of(w)->timer.fn)
        tw_timer_stop(&tw_of(w)->timer);
}

static int tp_write(tw_wrapper *w, const void *data, size_t len)
{
    tp_reset(w);
    return tw_transport_write(tw_wrapper_real(w), data, len);
}

static int tp_write_iov(tw_wrapper *w, const struct iovec *iov, int iovcnt)
{
    tp_reset(w);
    return tw_transport_write_sequence(tw_wrapper_real(w), iov, iovcnt);
}

static int tp_write_zerocopy(tw_wrapper *w, const void *data, size_t len, tw_release_fn release,
                             void *arg)
{
    tp_reset(w);
    return tw_transport_write_zerocopy(tw_wrapper_real(w), data, len, release, arg);
}

static const tw_wrapper_hooks timeout_hooks = {
    .connection_made = tp_connection_made,
    .data_received = tp_data_received,
    .connection_lost = tp_connection_lost,
    .free = tp_free,
    .write = tp_write,
    .write_iov = tp_write_iov,
    .write_zerocopy = tp_write_zerocopy,
};

void tw_timeout_factory_init(tw_timeout_factory *f, tw_factory *wrapped, tw_clock *clock)
{
    tw_wrapping_factory_init(&f->wf, wrapped, &timeout_hooks, sizeof(timeout_wrapper), NULL);
    f->clock = clock;
    f->timeout = TW_TIMEOUT_FACTORY_DEFAULT;
}

/* ---- ThrottlingFactory (ThrottlingProtocol) */

typedef struct throttle_wrapper {
    tw_wrapper w;
    tw_producer *producer; /* the wrapped protocol's, if streaming */
    bool own_pause;        /* the wrapped protocol paused its transport */
    bool producer_paused;  /* we paused producer */
} throttle_wrapper;

static throttle_wrapper *th_of(tw_wrapper *w)
{
    return (throttle_wrapper *)w;
}

static tw_throttling_factory *thf_of(tw_wrapper *w)
{
    return (tw_throttling_factory *)w->wfactory;
}

#define CONTAINER(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

static void th_pause_reads(tw_wrapper *w, void *arg)
{
    tw_transport_pause_producing(tw_wrapper_real(w));
}

static void th_resume_reads(tw_wrapper *w, void *arg)
{
    if (!th_of(w)->own_pause)
        tw_transport_resume_producing(tw_wrapper_real(w));
}

static void th_pause_writes(tw_wrapper *w, void *arg)
{
    throttle_wrapper *t = th_of(w);
    if (t->producer && !t->producer_paused) {
        t->producer_paused = true;
        t->producer->ops->pause_producing(t->producer);
    }
}

static void th_resume_writes(tw_wrapper *w, void *arg)
{
    throttle_wrapper *t = th_of(w);
    if (t->producer && t->producer_paused) {
        t->producer_paused = false;
        t->producer->ops->resume_producing(t->producer);
    }
}

static void unthrottle_reads(tw_throttling_factory *f)
{
    if (!f->reads_throttled)
        return;
    f->reads_throttled = false;
    tw_log_info(LOG_NS, "ThrottlingFactory: reading again on %zu connections", f->connections);
    tw_wrapping_factory_each(&f->wf, th_resume_reads, NULL);
}

static void unthrottle_writes(tw_throttling_factory *f)
{
    if (!f->writes_throttled)
        return;
    f->writes_throttled = false;
    tw_log_info(LOG_NS, "ThrottlingFactory: writing again on %zu connections", f->connections);
    tw_wrapping_factory_each(&f->wf, th_resume_writes, NULL);
}

static void unthrottle_reads_fired(tw_timer *timer)
{
    unthrottle_reads(CONTAINER(timer, tw_throttling_factory, unthrottle_reads_timer));
}

static void unthrottle_writes_fired(tw_timer *timer)
{
    unthrottle_writes(CONTAINER(timer, tw_throttling_factory, unthrottle_writes_timer));
}

/* checkReadBandwidth / checkWriteBandwidth: the second's count against the
 * limit; over it, hold everything back long enough to pay the excess. */
static void check_reads_fired(tw_timer *timer)
{
    tw_throttling_factory *f = CONTAINER(timer, tw_throttling_factory, check_reads);
    if (f->read_limit && f->read_this_second > f->read_limit) {
        double pause = (double)f->read_this_second / (double)f->read_limit - 1.0;
        tw_log_info(LOG_NS,
                    "ThrottlingFactory: read %llu bytes in a second, over read_limit %llu: "
                    "pausing reads for %g s",
                    (unsigned long long)f->read_this_second, (unsigned long long)f->read_limit,
                    pause);
        if (!f->reads_throttled) {
            f->reads_throttled = true;
            tw_wrapping_factory_each(&f->wf, th_pause_reads, NULL);
        }
        if (tw_timer_start(&f->unthrottle_reads_timer, pause) < 0) {
            tw_log_error(LOG_NS, "ThrottlingFactory: no memory for a timer, not throttling");
            unthrottle_reads(f);
        }
    }
    f->read_this_second = 0;
    if (tw_timer_start(&f->check_reads, 1.0) < 0)
        tw_log_error(LOG_NS, "ThrottlingFactory: no memory for a timer, read checks stop");
}

static void check_writes_fired(tw_timer *timer)
{
    tw_throttling_factory *f = CONTAINER(timer, tw_throttling_factory, check_writes);
    if (f->write_limit && f->written_this_second > f->write_limit) {
        double pause = (double)f->written_this_second / (double)f->write_limit - 1.0;
        tw_log_info(LOG_NS,
                    "ThrottlingFactory: wrote %llu bytes in a second, over write_limit %llu: "
                    "pausing producers for %g s",
                    (unsigned long long)f->written_this_second, (unsigned long long)f->write_limit,
                    pause);
        if (!f->writes_throttled) {
            f->writes_throttled = true;
            tw_wrapping_factory_each(&f->wf, th_pause_writes, NULL);
        }
        if (tw_timer_start(&f->unthrottle_writes_timer, pause) < 0) {
            tw_log_error(LOG_NS, "ThrottlingFactory: no memory for a timer, not throttling");
            unthrottle_writes(f);
        }
    }
    f->written_this_second = 0;
    if (tw_timer_start(&f->check_writes, 1.0) < 0)
        tw_log_error(LOG_NS, "ThrottlingFactory: no memory for a timer, write checks stop");
}

static void stop_checks(tw_throttling_factory *f)
{
    tw_timer_stop(&f->check_reads);
    tw_timer_stop(&f->unthrottle_reads_timer);
    tw_timer_stop(&f->check_writes);
    tw_timer_stop(&f->unthrottle_writes_timer);
    f->reads_throttled = f->writes_throttled = false;
}

/* What Twisted's first buildProtocol does by calling the checks: start the
 * one-second rounds from zero. */
static int start_checks(tw_throttling_factory *f)
{
    f->read_this_second = f->written_this_second = 0;
    int rc = 0;
    if (f->read_limit)
        rc = tw_timer_start(&f->check_reads, 1.0);
    if (rc == 0 && f->write_limit)
        rc = tw_timer_start(&f->check_writes, 1.0);
    if (rc < 0)
        stop_checks(f);
    return rc;
}

static tw_protocol *thf_build(tw_wrapping_factory *wf, const tw_address *addr)
{
    tw_throttling_factory *f = (tw_throttling_factory *)wf;
    char buf[TW_ADDRESS_STRLEN];
    if (f->connections >= f->max_connections) {
        tw_log_info(LOG_NS,
                    "refusing the connection with %s: %zu connections open, "
                    "ThrottlingFactory max_connections reached",
                    addr ? peer_text(addr, buf, sizeof buf) : "?", f->connections);
        return NULL;
    }
    if (f->connections == 0 && start_checks(f) < 0) {
        tw_log_error(LOG_NS, "refusing the connection with %s: no memory for the throttle timers",
                     addr ? peer_text(addr, buf, sizeof buf) : "?");
        return NULL;
    }
    tw_protocol *p = tw_wrapping_factory_build(wf, addr);
    if (!p && f->connections == 0)
        stop_checks(f);
    return p;
}

static int thf_init(tw_wrapping_factory *wf, tw_wrapper *w)
{
    ((tw_throttling_factory *)wf)->connections++;
    return 0;
}

static void thf_unregister(tw_wrapping_factory *wf, tw_wrapper *w)
{
    tw_throttling_factory *f = (tw_throttling_factory *)wf;
    if (--f->connections == 0)
        stop_checks(f);
}

static void th_connection_made(tw_wrapper *w)
{
    if (thf_of(w)->reads_throttled)
        tw_transport_pause_producing(tw_wrapper_real(w));
    tw_wrapper_make_wrapped_connection(w);
}

static void th_data_received(tw_wrapper *w, const char *data, size_t len)
{
    thf_of(w)->read_this_second += len;
    tw_wrapper_deliver(w, data, len);
}

static int th_write(tw_wrapper *w, const void *data, size_t len)
{
    int rc = tw_transport_write(tw_wrapper_real(w), data, len);
    if (rc == 0)
        thf_of(w)->written_this_second += len;
    return rc;
}

static int th_write_iov(tw_wrapper *w, const struct iovec *iov, int iovcnt)
{
    int rc = tw_transport_write_sequence(tw_wrapper_real(w), iov, iovcnt);
    if (rc == 0)
        for (int i = 0; i < iovcnt; i++)
            thf_of(w)->written_this_second += iov[i].iov_len;
    return rc;
}

static int th_write_zerocopy(tw_wrapper *w, const void *data, size_t len, tw_release_fn release,
                             void *arg)
{
    int rc = tw_transport_write_zerocopy(tw_wrapper_real(w), data, len, release, arg);
    if (rc == 0)
        thf_of(w)->written_this_second += len;
    return rc;
}

static int th_pause_producing(tw_wrapper *w)
{
    th_of(w)->own_pause = true;
    return tw_transport_pause_producing(tw_wrapper_real(w));
}

static int th_resume_producing(tw_wrapper *w)
{
    th_of(w)->own_pause = false;
    if (thf_of(w)->reads_throttled)
        return 0; /* the throttle's end resumes it */
    return tw_transport_resume_producing(tw_wrapper_real(w));
}

static int th_register_producer(tw_wrapper *w, tw_producer *producer, bool streaming)
{
    int rc = tw_transport_register_producer(tw_wrapper_real(w), producer, streaming);
    if (rc < 0 || !streaming)
        return rc;
    throttle_wrapper *t = th_of(w);
    t->producer = producer;
    t->producer_paused = false;
    if (thf_of(w)->writes_throttled)
        th_pause_writes(w, NULL);
    return 0;
}

static int th_unregister_producer(tw_wrapper *w)
{
    throttle_wrapper *t = th_of(w);
    t->producer = NULL;
    t->producer_paused = false;
    return tw_transport_unregister_producer(tw_wrapper_real(w));
}

static void th_connection_lost(tw_wrapper *w, tw_failure *reason)
{
    /* The transport tells the producer stop_producing itself. */
    th_of(w)->producer = NULL;
}

static const tw_wrapper_hooks throttle_hooks = {
    .connection_made = th_connection_made,
    .data_received = th_data_received,
    .connection_lost = th_connection_lost,
    .write = th_write,
    .write_iov = th_write_iov,
    .write_zerocopy = th_write_zerocopy,
    .pause_producing = th_pause_producing,
    .resume_producing = th_resume_producing,
    .register_producer = th_register_producer,
    .unregister_producer = th_unregister_producer,
};

static const tw_wrapping_factory_hooks throttle_factory_hooks = {
    .build_protocol = thf_build,
    .init = thf_init,
    .unregister_protocol = thf_unregister,
};

void tw_throttling_factory_init(tw_throttling_factory *f, tw_factory *wrapped, tw_clock *clock)
{
    memset(f, 0, sizeof *f);
    tw_wrapping_factory_init(&f->wf, wrapped, &throttle_hooks, sizeof(throttle_wrapper),
                             &throttle_factory_hooks);
    f->clock = clock;
    f->max_connections = TW_THROTTLE_MAX_CONNECTIONS_DEFAULT;
    tw_timer_init(&f->check_reads, clock, check_reads_fired);
    tw_timer_init(&f->unthrottle_reads_timer, clock, unthrottle_reads_fired);
    tw_timer_init(&f->check_writes, clock, check_writes_fired);
    tw_timer_init(&f->unthrottle_writes_timer, clock, unthrottle_writes_fired);
}

size_t tw_throttling_factory_connections(const tw_throttling_factory *f)
{
    return f->connections;
}

/* ---- LimitTotalConnectionsFactory */

static tw_protocol *ltf_build(tw_wrapping_factory *wf, const tw_address *addr)
{
    tw_limit_total_factory *f = (tw_limit_total_factory *)wf;
    if (f->connections < f->limit)
        return tw_wrapping_factory_build(wf, addr);
    char buf[TW_ADDRESS_STRLEN];
    const char *peer = addr ? peer_text(addr, buf, sizeof buf) : "?";
    if (!f->overflow) {
        tw_log_info(LOG_NS,
                    "refusing the connection with %s: %zu connections open, the "
                    "LimitTotalConnectionsFactory limit",
                    peer, f->connections);
        return NULL;
    }
    tw_log_info(LOG_NS,
                "connection with %s over the LimitTotalConnectionsFactory limit of %zu: "
                "handing it to the overflow protocol",
                peer, f->limit);
    return tw_wrapping_factory_build_with(wf, f->overflow, addr);
}

static int ltf_init(tw_wrapping_factory *wf, tw_wrapper *w)
{
    ((tw_limit_total_factory *)wf)->connections++;
    return 0;
}

static void ltf_unregister(tw_wrapping_factory *wf, tw_wrapper *w)
{
    ((tw_limit_total_factory *)wf)->connections--;
}

static const tw_wrapping_factory_hooks limit_total_hooks = {
    .build_protocol = ltf_build,
    .init = ltf_init,
    .unregister_protocol = ltf_unregister,
};

void tw_limit_total_factory_init(tw_limit_total_factory *f, tw_factory *wrapped)
{
    memset(f, 0, sizeof *f);
    tw_wrapping_factory_init(&f->wf, wrapped, NULL, 0, &limit_total_hooks);
    f->limit = TW_LIMIT_TOTAL_DEFAULT;
}

size_t tw_limit_total_factory_connections(const tw_limit_total_factory *f)
{
    return f->connections;
}

/* ---- LimitConnectionsByPeer */

#define PEER_KEY_MAX 108

typedef struct peer_key {
    int family;
    size_t len;
    unsigned char bytes[PEER_KEY_MAX];
} peer_key;

struct tw__peer_entry {
    struct tw__peer_entry *next;
    uint64_t hash;
    size_t count;
    peer_key key;
};

typedef struct peer_wrapper {
    tw_wrapper w;
    struct tw__peer_entry *entry;
} peer_wrapper;

static void make_key(const tw_address *a, peer_key *k)
{
    memset(k, 0, sizeof *k);
    if (!a || a->len == 0)
        return;
    k->family = a->u.sa.sa_family;
    switch (k->family) {
    case AF_INET:
        k->len = 4;
        memcpy(k->bytes, &a->u.in.sin_addr, 4);
        break;
    case AF_INET6:
        if (IN6_IS_ADDR_V4MAPPED(&a->u.in6.sin6_addr)) {
            k->family = AF_INET;
            k->len = 4;
            memcpy(k->bytes, &a->u.in6.sin6_addr.s6_addr[12], 4);
        } else {
            k->len = 16;
            memcpy(k->bytes, &a->u.in6.sin6_addr, 16);
        }
        break;
    case AF_UNIX: {
        size_t off = offsetof(struct sockaddr_un, sun_path);
        k->len = a->len > off ? a->len - off : 0;
        if (k->len > PEER_KEY_MAX)
            k->len = PEER_KEY_MAX;
        memcpy(k->bytes, a->u.un.sun_path, k->len);
        break;
    }
    default:
        break;
    }
}

static uint64_t key_hash(const peer_key *k)
{
    uint64_t h = 1469598103934665603ull ^ (uint64_t)k->family;
    for (size_t i = 0; i < k->len; i++) {
        h ^= k->bytes[i];
        h *= 1099511628211ull;
    }
    return h;
}

static bool key_equal(const peer_key *a, const peer_key *b)
{
    return a->family == b->family && a->len == b->len && memcmp(a->bytes, b->bytes, a->len) == 0;
}

static struct tw__peer_entry *peer_find(const tw_limit_per_peer_factory *f, const peer_key *k,
                                        uint64_t h)
{
    if (!f->nbuckets)
        return NULL;
    for (struct tw__peer_entry *e = f->buckets[h & (f->nbuckets - 1)]; e; e = e->next)
        if (e->hash == h && key_equal(&e->key, k))
            return e;
    return NULL;
}

/* Doubles the table (or makes the first one). A failure leaves longer
 * chains, never a wrong answer. */
static void peer_grow(tw_limit_per_peer_factory *f)
{
    size_t n = f->nbuckets ? f->nbuckets * 2 : 16;
    struct tw__peer_entry **b = tw_calloc(n, sizeof *b);
    if (!b)
        return;
    for (size_t i = 0; i < f->nbuckets; i++) {
        for (struct tw__peer_entry *e = f->buckets[i], *next; e; e = next) {
            next = e->next;
            e->next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
        }
    }
    tw_free(f->buckets);
    f->buckets = b;
    f->nbuckets = n;
}

/* An empty table is freed, so the factory needs no teardown. */
static void peer_table_drop_if_empty(tw_limit_per_peer_factory *f)
{
    if (f->npeers > 0)
        return;
    tw_free(f->buckets);
    f->buckets = NULL;
    f->nbuckets = 0;
}

static void peer_remove(tw_limit_per_peer_factory *f, struct tw__peer_entry *entry)
{
    struct tw__peer_entry **pp = &f->buckets[entry->hash & (f->nbuckets - 1)];
    while (*pp != entry)
        pp = &(*pp)->next;
    *pp = entry->next;
    tw_free(entry);
    f->npeers--;
    peer_table_drop_if_empty(f);
}

static tw_protocol *lpf_build(tw_wrapping_factory *wf, const tw_address *addr)
{
    tw_limit_per_peer_factory *f = (tw_limit_per_peer_factory *)wf;
    char buf[TW_ADDRESS_STRLEN];
    peer_key k;
    make_key(addr, &k);
    uint64_t h = key_hash(&k);
    struct tw__peer_entry *e = peer_find(f, &k, h);
    if (e && e->count >= f->max_per_peer) {
        tw_log_info(LOG_NS,
                    "refusing the connection with %s: %zu connections open from that host, "
                    "LimitConnectionsByPeer max_per_peer",
                    addr ? peer_text(addr, buf, sizeof buf) : "?", e->count);
        return NULL;
    }
    if (f->max_per_peer == 0) {
        tw_log_info(LOG_NS,
                    "refusing the connection with %s: LimitConnectionsByPeer "
                    "max_per_peer is 0",
                    addr ? peer_text(addr, buf, sizeof buf) : "?");
        return NULL;
    }
    bool fresh = false;
    if (!e) {
        if (f->npeers >= f->nbuckets)
            peer_grow(f);
        if (!f->nbuckets || !(e = tw_calloc(1, sizeof *e))) {
            peer_table_drop_if_empty(f);
            tw_log_error(LOG_NS, "refusing the connection with %s: no memory to count its peer",
                         addr ? peer_text(addr, buf, sizeof buf) : "?");
            return NULL;
        }
        e->key = k;
        e->hash = h;
        e->next = f->buckets[h & (f->nbuckets - 1)];
        f->buckets[h & (f->nbuckets - 1)] = e;
        f->npeers++;
        fresh = true;
    }
    e->count++;
    tw_protocol *p = tw_wrapping_factory_build(wf, addr);
    if (p) {
        ((peer_wrapper *)p)->entry = e;
        return p;
    }
    if (--e->count == 0 && fresh)
        peer_remove(f, e);
    return NULL;
}

static void lpf_unregister(tw_wrapping_factory *wf, tw_wrapper *w)
{
    tw_limit_per_peer_factory *f = (tw_limit_per_peer_factory *)wf;
    struct tw__peer_entry *e = ((peer_wrapper *)w)->entry;
    if (e && --e->count == 0)
        peer_remove(f, e);
}

static const tw_wrapping_factory_hooks limit_per_peer_hooks = {
    .build_protocol = lpf_build,
    .unregister_protocol = lpf_unregister,
};

void tw_limit_per_peer_factory_init(tw_limit_per_peer_factory *f, tw_factory *wrapped)
{
    memset(f, 0, sizeof *f);
    tw_wrapping_factory_init(&f->wf, wrapped, NULL, sizeof(peer_wrapper), &limit_per_peer_hooks);
    f->max_per_peer = TW_LIMIT_PER_PEER_DEFAULT;
}

size_t tw_limit_per_peer_factory_count(const tw_limit_per_peer_factory *f, const tw_address *addr)
{
    peer_key k;
    make_key(addr, &k);
    struct tw__peer_entry *e = peer_find(f, &k, key_hash(&k));
    return e ? e->count : 0;
}

size_t tw_limit_per_peer_factory_peers(const tw_limit_per_peer_factory *f)
{
    return f->npeers;
}
