/* Port forwarding: the relay and ProxyFactory. See portforward.h. */
#include <string.h>

#include <twine/buffer.h>
#include <twine/deferred.h>
#include <twine/error.h>
#include <twine/log.h>
#include <twine/portforward.h>

#define LOG_NS "twine.portforward"

/* The relay is one allocation holding the outbound connection's protocol, so
 * the protocol's free op is the outbound side's hold on it. refs counts the
 * holders: the owner (until tw_relay_connection_lost), the outbound protocol
 * (until the transport releases it, which it does whether the attempt
 * succeeded or not) and the attempt's callback pair (until it has run). */
struct tw_relay {
    tw_protocol out;     /* the outbound connection's protocol: first member */
    tw_protocol *in;     /* the owner's protocol; NULL once its connection is lost */
    tw_transport *in_t;  /* its transport, referenced until the relay is freed */
    tw_transport *out_t; /* referenced from the outbound connection_made on */
    /* Each side seen as a producer for the other: they count pauses, and stay
     * valid as long as the relay (the transports' own views would do as well,
     * but could not count). */
    tw_producer in_prod;  /* registered on out_t: pauses reading in_t */
    tw_producer out_prod; /* registered on in_t: pauses reading out_t */
    tw_deferred *attempt; /* our reference, until its callbacks ran */
    tw_rbuf pending;      /* inbound bytes held while connecting */
    const tw_relay_hooks *hooks;
    void *arg;
    tw_relay_stats *stats;
    tw_relay_stats own_stats; /* where counters go when the owner wants none */
    char *name;
    unsigned refs;
    bool connected;    /* relaying: bytes go straight through */
    bool in_eof;       /* the inbound peer shut its sending side */
    bool in_lost;      /* tw_relay_connection_lost was called */
    bool out_lost;     /* the outbound connection_lost ran */
    bool in_paused;    /* in_prod paused by out_t and not resumed since */
    bool out_prod_reg; /* out_prod is registered on in_t */
    bool in_prod_reg;  /* in_prod is registered on out_t */
};

static void relay_unref(tw_relay *relay)
{
    if (--relay->refs > 0)
        return;
    relay->stats->active--;
    tw_rbuf_clear(&relay->pending);
    tw_transport_unref(relay->in_t);
    tw_transport_unref(relay->out_t);
    if (relay->hooks && relay->hooks->release)
        relay->hooks->release(relay->arg);
    tw_free(relay->name);
    tw_free(relay);
}

static void relay_unref_arg(void *arg)
{
    relay_unref(arg);
}

static const char *relay_name(const tw_relay *relay)
{
    return relay->name ? relay->name : "peer";
}

/* Shuts t's sending side once its queue is written, or closes it when it
 * cannot half-close. */
static void shut_write(tw_transport *t)
{
    if (tw_transport_lose_write_connection(t) == TW_ENOTSUP)
        tw_transport_lose_connection(t);
}

/* A write that could not be queued leaves a hole in the byte stream: nothing
 * after it may go through, so both connections end. */
static void relay_broken(tw_relay *relay, int rc)
{
    tw_log_warn(LOG_NS, "relay with %s: cannot queue bytes (%s): closing both connections",
                relay_name(relay), tw_strerror(rc));
    tw_transport_abort_connection(relay->in_t);
    if (relay->out_t)
        tw_transport_abort_connection(relay->out_t);
}

/* Writes data to `to`, counting it. TW_ENOTCONN (that side is closing) drops
 * the bytes, as a closed socket would. */
static void relay_write(tw_relay *relay, tw_transport *to, const char *data, size_t len,
                        uint64_t *counter)
{
    int rc = tw_transport_write(to, data, len);
    if (rc == TW_ENOTCONN)
        return;
    if (rc < 0) {
        relay_broken(relay, rc);
        return;
    }
    *counter += len;
    size_t queued = tw_transport_write_buffer_size(to);
    if (queued > relay->stats->max_buffered)
        relay->stats->max_buffered = queued;
}

/* ---- The two producer views */

static tw_relay *relay_of_in_prod(tw_producer *p)
{
    return (tw_relay *)((char *)p - offsetof(tw_relay, in_prod));
}

static tw_relay *relay_of_out_prod(tw_producer *p)
{
    return (tw_relay *)((char *)p - offsetof(tw_relay, out_prod));
}

static void in_prod_pause(tw_producer *p)
{
    tw_relay *relay = relay_of_in_prod(p);
    relay->in_paused = true;
    relay->stats->pauses_in++;
    tw_transport_pause_producing(relay->in_t);
}

static void in_prod_resume(tw_producer *p)
{
    tw_relay *relay = relay_of_in_prod(p);
    relay->in_paused = false;
    tw_transport_resume_producing(relay->in_t);
}

/* out_t is going away and unregistered us: its connection_lost, next,
 * closes in_t. */
static void in_prod_stop(tw_producer *p)
{
    relay_of_in_prod(p)->in_prod_reg = false;
}

static void out_prod_pause(tw_producer *p)
{
    tw_relay *relay = relay_of_out_prod(p);
    relay->stats->pauses_out++;
    tw_transport_pause_producing(relay->out_t);
}

static void out_prod_resume(tw_producer *p)
{
    tw_transport_resume_producing(relay_of_out_prod(p)->out_t);
}

static void out_prod_stop(tw_producer *p)
{
    relay_of_out_prod(p)->out_prod_reg = false;
}

static const tw_producer_ops in_prod_ops = {
    .pause_producing = in_prod_pause,
    .resume_producing = in_prod_resume,
    .stop_producing = in_prod_stop,
};

static const tw_producer_ops out_prod_ops = {
    .pause_producing = out_prod_pause,
    .resume_producing = out_prod_resume,
    .stop_producing = out_prod_stop,
};

/* ---- The outbound connection's protocol */

static void out_made(tw_protocol *p)
{
    tw_relay *relay = (tw_relay *)p;
    relay->out_t = tw_transport_ref(p->transport);
    if (relay->in_lost) { /* defensive: the attempt is abandoned before this */
        tw_transport_lose_connection(relay->out_t);
        return;
    }
    relay->stats->connected++;
    if (relay->hooks && relay->hooks->connected)
        relay->hooks->connected(relay, relay->out_t, relay->arg);

    /* Held bytes first, with in_t still paused: a resume that delivers at
     * once (a wrapper with bytes of its own) then finds them gone out. */
    int rc = tw_transport_register_producer(relay->out_t, &relay->in_prod, true);
    relay->in_prod_reg = rc == 0;
    if (rc < 0 && rc != TW_ENOTCONN)
        tw_log_debug(LOG_NS, "relay with %s: no flow control towards it (%s)", relay_name(relay),
                     tw_strerror(rc));
    size_t held = tw_rbuf_size(&relay->pending);
    if (held > 0)
        relay_write(relay, relay->out_t, tw_rbuf_data(&relay->pending), held,
                    &relay->stats->bytes_in);
    tw_rbuf_clear(&relay->pending);
    relay->connected = true;
    if (!relay->in_paused) /* else out_t resumes it once drained */
        tw_transport_resume_producing(relay->in_t);

    rc = tw_transport_register_producer(relay->in_t, &relay->out_prod, true);
    relay->out_prod_reg = rc == 0;
    if (rc < 0 && rc != TW_ENOTCONN)
        tw_log_debug(LOG_NS, "relay with %s: no flow control from it (%s)", relay_name(relay),
                     tw_strerror(rc));
    if (relay->in_eof)
        shut_write(relay->out_t);
}

static void out_data(tw_protocol *p, const char *data, size_t len)
{
    tw_relay *relay = (tw_relay *)p;
    if (!relay->in_lost)
        relay_write(relay, relay->in_t, data, len, &relay->stats->bytes_out);
}

static void out_read_lost(tw_protocol *p)
{
    tw_relay *relay = (tw_relay *)p;
    if (!relay->in_lost)
        shut_write(relay->in_t);
}

static void out_lost(tw_protocol *p, tw_failure *reason)
{
    tw_relay *relay = (tw_relay *)p;
    relay->out_lost = true;
    relay->in_prod_reg = false; /* out_t unregistered it */
    int code = tw_failure_code(reason);
    if (code != TW_ECONNDONE)
        tw_log_debug(LOG_NS, "connection to %s lost: %s", relay_name(relay),
                     tw_failure_message(reason));
    if (relay->in_lost)
        return;
    if (relay->out_prod_reg) {
        relay->out_prod_reg = false;
        tw_transport_unregister_producer(relay->in_t);
    }
    tw_transport_lose_connection(relay->in_t);
}

static void out_free(tw_protocol *p)
{
    relay_unref((tw_relay *)p);
}

static const tw_protocol_ops out_ops = {
    .connection_made = out_made,
    .data_received = out_data,
    .read_connection_lost = out_read_lost,
    .connection_lost = out_lost,
    .free = out_free,
};

/* ---- The attempt */

static void attempt_over(tw_relay *relay)
{
    tw_deferred *d = relay->attempt;
    relay->attempt = NULL;
    tw_deferred_unref(d); /* the chain running holds it across this */
}

static tw_result attempt_succeeded(tw_result result, void *arg)
{
    attempt_over(arg);
    return result; /* a borrowed protocol: nothing to release */
}

static tw_result attempt_failed(tw_result result, void *arg)
{
    tw_relay *relay = arg;
    attempt_over(relay);
    if (!relay->in_lost) {
        relay->stats->failed++;
        if (relay->hooks && relay->hooks->connect_failed)
            relay->hooks->connect_failed(relay, result.failure, relay->arg);
        else
            tw_log_failure(TW_LOG_WARN, LOG_NS, result.failure, "cannot connect to %s: %s",
                           relay_name(relay), tw_failure_message(result.failure));
        tw_rbuf_clear(&relay->pending);
        tw_transport_lose_connection(relay->in_t);
    }
    tw_result_release(&result);
    return tw_result_ok(NULL, NULL);
}

int tw_relay_start(tw_protocol *inbound, tw_endpoint *ep, const tw_relay_hooks *hooks, void *arg,
                   const tw_relay_options *opts, tw_relay **out)
{
    if (!inbound || !inbound->transport || !ep || !out)
        return TW_EINVAL;
    tw_relay *relay = tw_calloc(1, sizeof *relay);
    if (!relay)
        return TW_ENOMEM;
    if (opts && opts->name && !(relay->name = tw_strdup(opts->name))) {
        tw_free(relay);
        return TW_ENOMEM;
    }
    tw_protocol_init(&relay->out, &out_ops);
    relay->in = inbound;
    relay->in_t = tw_transport_ref(inbound->transport);
    relay->in_prod.ops = &in_prod_ops;
    relay->out_prod.ops = &out_prod_ops;
    relay->stats = opts && opts->stats ? opts->stats : &relay->own_stats;
    relay->stats->active++;
    tw_rbuf_init(&relay->pending,
                 opts && opts->max_pending ? opts->max_pending : TW_RELAY_MAX_PENDING);
    /* The owner's, and the outbound protocol's from the moment the endpoint
     * has it (it releases it even when it cannot start). */
    relay->refs = 2;
    tw_transport_pause_producing(relay->in_t);

    tw_deferred *d = tw_endpoint_connect_protocol(ep, &relay->out);
    if (!d) { /* out of memory: the protocol was released already */
        tw_transport_resume_producing(relay->in_t);
        relay_unref(relay);
        return TW_ENOMEM;
    }
    relay->hooks = hooks;
    relay->arg = arg;
    relay->stats->relays++;
    relay->attempt = d;
    relay->refs++;
    *out = relay;
    if (tw_deferred_add_callbacks(d, attempt_succeeded, attempt_failed, relay, relay_unref_arg) <
        0) {
        /* The first pair of a deferred has room inside it, so this does not
         * happen; if it did, the cancelled attempt's failure is logged. */
        relay->refs--;
        relay->attempt = NULL;
        relay->hooks = NULL;
        relay->stats->relays--;
        tw_deferred_cancel(d);
        tw_deferred_unref(d);
        tw_transport_resume_producing(relay->in_t);
        relay_unref(relay);
        *out = NULL;
        return TW_ENOMEM;
    }
    return 0;
}

void tw_relay_data_received(tw_relay *relay, const char *data, size_t len)
{
    if (!relay || relay->in_lost || len == 0)
        return;
    if (relay->connected) {
        if (!relay->out_lost)
            relay_write(relay, relay->out_t, data, len, &relay->stats->bytes_in);
        return;
    }
    if (relay->attempt == NULL)
        return; /* the attempt failed: the connection is closing */
    int rc = tw_rbuf_append(&relay->pending, data, len);
    if (rc < 0) {
        tw_log_warn(LOG_NS,
                    "more than %zu bytes arrived before the connection to %s was made: closing",
                    tw_rbuf_max(&relay->pending), relay_name(relay));
        tw_transport_lose_connection(relay->in_t);
    }
}

void tw_relay_read_connection_lost(tw_relay *relay)
{
    if (!relay || relay->in_lost || relay->in_eof)
        return;
    relay->in_eof = true;
    if (relay->connected && !relay->out_lost)
        shut_write(relay->out_t);
}

void tw_relay_connection_lost(tw_relay *relay)
{
    if (!relay || relay->in_lost)
        return;
    relay->in_lost = true;
    relay->in = NULL;
    relay->out_prod_reg = false; /* in_t unregistered it */
    tw_rbuf_clear(&relay->pending);
    if (relay->attempt) {
        tw_deferred_cancel(relay->attempt); /* attempt_failed sees in_lost */
    } else if (relay->out_t && !relay->out_lost) {
        if (relay->in_prod_reg) {
            relay->in_prod_reg = false;
            tw_transport_unregister_producer(relay->out_t);
        }
        tw_transport_lose_connection(relay->out_t);
    }
    relay_unref(relay);
}

tw_protocol *tw_relay_inbound(const tw_relay *relay)
{
    return relay ? relay->in : NULL;
}

tw_transport *tw_relay_outbound(const tw_relay *relay)
{
    return relay && !relay->out_lost ? relay->out_t : NULL;
}

/* ---- ProxyFactory */

struct tw_portforward_factory {
    tw_factory base;
    tw_endpoint *to;
    char *name; /* to's description, for logs */
    size_t max_pending;
    tw_relay_stats stats;
    unsigned refs; /* the owner's, and one per protocol built */
};

typedef struct pf_conn {
    tw_protocol base;
    tw_portforward_factory *pf;
    tw_relay *relay;
} pf_conn;

static void pf_unref(tw_portforward_factory *pf)
{
    if (--pf->refs > 0)
        return;
    tw_endpoint_free(pf->to);
    tw_free(pf->name);
    tw_free(pf);
}

static void pf_unref_arg(void *arg)
{
    pf_unref(arg);
}

static const tw_relay_hooks pf_relay_hooks = {.release = pf_unref_arg};

static void pf_made(tw_protocol *p)
{
    pf_conn *c = (pf_conn *)p;
    tw_portforward_factory *pf = c->pf;
    tw_relay_options opts = {.max_pending = pf->max_pending, .stats = &pf->stats, .name = pf->name};
    pf->refs++; /* the relay's, dropped by its release hook */
    int rc = tw_relay_start(p, pf->to, &pf_relay_hooks, pf, &opts, &c->relay);
    if (rc < 0) {
        pf->refs--;
        tw_log_warn(LOG_NS, "cannot forward a connection to %s: %s", pf->name, tw_strerror(rc));
        tw_transport_lose_connection(p->transport);
    }
}

static void pf_data(tw_protocol *p, const char *data, size_t len)
{
    tw_relay_data_received(((pf_conn *)p)->relay, data, len);
}

static void pf_read_lost(tw_protocol *p)
{
    pf_conn *c = (pf_conn *)p;
    if (c->relay)
        tw_relay_read_connection_lost(c->relay);
    else
        tw_transport_lose_connection(p->transport);
}

static void pf_lost(tw_protocol *p, tw_failure *reason)
{
    pf_conn *c = (pf_conn *)p;
    (void)reason;
    tw_relay_connection_lost(c->relay);
    c->relay = NULL;
}

static void pf_free(tw_protocol *p)
{
    pf_conn *c = (pf_conn *)p;
    tw_portforward_factory *pf = c->pf;
    tw_free(c);
    pf_unref(pf);
}

static const tw_protocol_ops pf_conn_ops = {
    .connection_made = pf_made,
    .data_received = pf_data,
    .read_connection_lost = pf_read_lost,
    .connection_lost = pf_lost,
    .free = pf_free,
};

static tw_protocol *pf_build(tw_factory *f, const tw_address *addr)
{
    tw_portforward_factory *pf = (tw_portforward_factory *)f;
    (void)addr;
    pf_conn *c = tw_calloc(1, sizeof *c);
    if (!c)
        return NULL;
    tw_protocol_init(&c->base, &pf_conn_ops);
    c->pf = pf;
    pf->refs++;
    return &c->base;
}

static const tw_factory_ops pf_factory_ops = {.build_protocol = pf_build};

int tw_portforward_factory_new(tw_endpoint *to, const tw_relay_options *opts,
                               tw_portforward_factory **out)
{
    if (!to || !out)
        return TW_EINVAL;
    tw_portforward_factory *pf = tw_calloc(1, sizeof *pf);
    if (!pf)
        return TW_ENOMEM;
    const tw_endpoint_spec *spec = tw_endpoint_get_spec(to);
    if (opts && opts->name)
        pf->name = tw_strdup(opts->name);
    else if (spec)
        pf->name = tw_endpoint_format(spec, NULL);
    else
        pf->name = tw_strdup("peer");
    if (!pf->name) {
        tw_free(pf);
        return TW_ENOMEM;
    }
    tw_factory_init(&pf->base, &pf_factory_ops, NULL, 0, pf);
    pf->to = to;
    pf->max_pending = opts ? opts->max_pending : 0;
    pf->refs = 1;
    *out = pf;
    return 0;
}

tw_factory *tw_portforward_factory_base(tw_portforward_factory *pf)
{
    return pf ? &pf->base : NULL;
}

const tw_relay_stats *tw_portforward_factory_stats(const tw_portforward_factory *pf)
{
    return pf ? &pf->stats : NULL;
}

void tw_portforward_factory_free(tw_portforward_factory *pf)
{
    if (pf)
        pf_unref(pf);
}
