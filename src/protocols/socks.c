/* The SOCKS server (socks.h): negotiation, the allow list, then the relay. */
#include <arpa/inet.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <twine/clock.h>
#include <twine/endpoint.h>
#include <twine/error.h>
#include <twine/log.h>
#include <twine/socks.h>

#include "socks-internal.h"

#define LOG_NS "twine.socks"

struct tw_socks_factory {
    tw_factory base;
    tw_reactor *reactor;
    tw_socks_allow *allow;
    double negotiation_timeout;
    double connect_timeout;
    size_t max_pending;
    char *username, *password; /* both or neither */
    size_t username_len, password_len;
    tw_socks_stats stats;
    unsigned refs; /* the owner's, one per protocol built, one per relay */
};

/* The peer's address for logs: IP addresses fit; anything longer is cut. */
#define PEER_TEXT 56

typedef struct socks_conn {
    tw_protocol base;
    tw_socks_factory *sf;
    tw_socks_decoder *dec; /* while negotiating */
    tw_relay *relay;       /* once connecting */
    tw_timer timer;        /* the negotiation timeout */
    uint8_t version;       /* of the request: which replies to send */
    bool done;             /* a final answer went out: the rest is ignored */
    char *dest;            /* what the client asked for, for logs */
    char peer[PEER_TEXT];
} socks_conn;

static void sf_unref(tw_socks_factory *sf)
{
    if (--sf->refs > 0)
        return;
    tw_socks_allow_free(sf->allow);
    tw_free(sf->username);
    tw_free(sf->password);
    tw_free(sf);
}

static void sf_unref_arg(void *arg)
{
    sf_unref(arg);
}

/* ---- Answers */

static void send_bytes(socks_conn *c, const uint8_t *bytes, size_t len)
{
    if (len > 0)
        tw_transport_write(c->base.transport, bytes, len);
}

/* The last answer: write it, then close (what was written is flushed). */
static void finish(socks_conn *c, const uint8_t *bytes, size_t len)
{
    send_bytes(c, bytes, len);
    c->done = true;
    tw_timer_stop(&c->timer);
    tw_transport_lose_connection(c->base.transport);
}

static void finish_reply(socks_conn *c, uint8_t code5)
{
    uint8_t out[TW_SOCKS_REPLY_MAX];
    uint8_t code = c->version == 4 ? TW_SOCKS4_REJECTED : code5;
    finish(c, out, tw_socks_reply(c->version, code, NULL, out));
}

/* "203.0.113.9:443", "[2001:db8::1]:443" or "'example.org':443" (quoted: a
 * client's bytes, printable in the log whatever they are). */
static char *describe_dest(const tw_socks_request *q)
{
    if (q->atyp == TW_SOCKS_ATYP_DOMAIN) {
        char name[TW_ENDPOINT_QUOTE_SIZE];
        tw_endpoint_quote(name, sizeof name, q->name, q->name_len);
        return tw_asprintf("%s:%u", name, (unsigned)q->port);
    }
    tw_address a = {0};
    if (q->atyp == TW_SOCKS_ATYP_IPV4) {
        a.u.in.sin_family = AF_INET;
        memcpy(&a.u.in.sin_addr, q->addr, 4);
        a.u.in.sin_port = htons(q->port);
        a.len = sizeof a.u.in;
    } else {
        a.u.in6.sin6_family = AF_INET6;
        memcpy(&a.u.in6.sin6_addr, q->addr, 16);
        a.u.in6.sin6_port = htons(q->port);
        a.len = sizeof a.u.in6;
    }
    char buf[TW_ADDRESS_STRLEN];
    return tw_strdup(tw_address_format(&a, buf, sizeof buf));
}

static const char *command_name(uint8_t cmd)
{
    switch (cmd) {
    case TW_SOCKS_CMD_BIND:
        return "BIND";
    case TW_SOCKS_CMD_UDP_ASSOCIATE:
        return "UDP ASSOCIATE";
    default:
        return "an unknown command";
    }
}

static uint8_t reply_for_failure(int code)
{
    switch (code) {
    case TW_ECONNREFUSED:
        return TW_SOCKS5_REFUSED;
    case TW_ENETUNREACH:
        return TW_SOCKS5_NET_UNREACHABLE;
    case TW_EHOSTUNREACH:
    case TW_EDNSLOOKUP:
        return TW_SOCKS5_HOST_UNREACHABLE;
    case TW_ETIMEDOUT:
        return TW_SOCKS5_TTL_EXPIRED;
    default:
        return TW_SOCKS5_FAILURE;
    }
}

/* ---- The relay's hooks */

static void relay_connected(tw_relay *relay, tw_transport *outbound, void *arg)
{
    socks_conn *c = (socks_conn *)tw_relay_inbound(relay);
    tw_socks_factory *sf = arg;
    sf->stats.granted++;
    tw_address a = {0};
    int rc =
        c->version == 4 ? tw_transport_get_peer(outbound, &a) : tw_transport_get_host(outbound, &a);
    uint8_t out[TW_SOCKS_REPLY_MAX];
    uint8_t code = c->version == 4 ? TW_SOCKS4_GRANTED : TW_SOCKS5_SUCCEEDED;
    send_bytes(c, out, tw_socks_reply(c->version, code, rc == 0 ? &a : NULL, out));
    tw_log_info(LOG_NS, "%s -> %s: connected", c->peer, c->dest);
}

static void relay_failed(tw_relay *relay, tw_failure *reason, void *arg)
{
    socks_conn *c = (socks_conn *)tw_relay_inbound(relay);
    tw_socks_factory *sf = arg;
    sf->stats.failed++;
    uint8_t code =
        c->version == 4 ? TW_SOCKS4_REJECTED : reply_for_failure(tw_failure_code(reason));
    uint8_t out[TW_SOCKS_REPLY_MAX];
    send_bytes(c, out, tw_socks_reply(c->version, code, NULL, out));
    c->done = true;
    tw_log_info(LOG_NS, "%s -> %s: cannot connect: %s", c->peer, c->dest,
                tw_failure_message(reason));
}

static const tw_relay_hooks socks_relay_hooks = {
    .connected = relay_connected,
    .connect_failed = relay_failed,
    .release = sf_unref_arg,
};

/* ---- Negotiation */

/* Writes a tcp: client description for the destination into buf. */
static int dest_description(const tw_socks_request *q, const char *host, double timeout, char *buf,
                            size_t size)
{
    char esc[2 * TW_SOCKS_MAX_NAME + 1];
    size_t n = 0;
    for (const char *s = host; *s && n + 2 < sizeof esc; s++) {
        if (*s == ':' || *s == '=' || *s == '\\')
            esc[n++] = '\\';
        esc[n++] = *s;
    }
    esc[n] = '\0';
    int len =
        snprintf(buf, size, "tcp:host=%s:port=%u:timeout=%.3f", esc, (unsigned)q->port, timeout);
    return len > 0 && (size_t)len < size ? 0 : TW_EINVAL;
}

/* The allow list's answer, and the host to connect to (an IP address in
 * text, or the host name), or an error code owed to the client. */
static int check_destination(socks_conn *c, const tw_socks_request *q, char *host, size_t size)
{
    tw_socks_factory *sf = c->sf;
    if (q->atyp == TW_SOCKS_ATYP_DOMAIN) {
        bool clean = strlen(q->name) == q->name_len;
        tw_address ip;
        bool literal = clean && tw_address_from_ip(&ip, q->name, q->port) == 0;
        if (!literal && !(clean && tw__socks_host_name_ok(q->name, q->name_len))) {
            sf->stats.malformed++;
            tw_log_info(LOG_NS, "%s -> %s: not a host name", c->peer, c->dest);
            return TW_SOCKS5_HOST_UNREACHABLE;
        }
        if (!tw_socks_allow_name(sf->allow, q->name, q->name_len, q->port))
            return TW_SOCKS5_NOT_ALLOWED;
        snprintf(host, size, "%s", q->name);
        return 0;
    }
    tw_address a = {0};
    if (q->atyp == TW_SOCKS_ATYP_IPV4) {
        a.u.in.sin_family = AF_INET;
        memcpy(&a.u.in.sin_addr, q->addr, 4);
        a.u.in.sin_port = htons(q->port);
        a.len = sizeof a.u.in;
        inet_ntop(AF_INET, q->addr, host, (socklen_t)size);
    } else {
        a.u.in6.sin6_family = AF_INET6;
        memcpy(&a.u.in6.sin6_addr, q->addr, 16);
        a.u.in6.sin6_port = htons(q->port);
        a.len = sizeof a.u.in6;
        inet_ntop(AF_INET6, q->addr, host, (socklen_t)size);
    }
    return tw_socks_allow_address(sf->allow, &a) ? 0 : TW_SOCKS5_NOT_ALLOWED;
}

static void on_request(socks_conn *c)
{
    tw_socks_factory *sf = c->sf;
    const tw_socks_request *q = &c->dec->req;
    c->version = q->version;
    tw_timer_stop(&c->timer);
    sf->stats.requests++;
    c->dest = describe_dest(q);
    if (!c->dest) {
        finish_reply(c, TW_SOCKS5_FAILURE);
        return;
    }
    if (q->version == 4 && sf->username) {
        sf->stats.auth_failed++;
        tw_log_info(LOG_NS, "%s -> %s: SOCKS4 refused: this server requires a password", c->peer,
                    c->dest);
        finish_reply(c, TW_SOCKS5_FAILURE);
        return;
    }
    if (q->command != TW_SOCKS_CMD_CONNECT) {
        sf->stats.unsupported++;
        tw_log_info(LOG_NS, "%s -> %s: %s is not supported (CONNECT only)", c->peer, c->dest,
                    command_name(q->command));
        finish_reply(c, TW_SOCKS5_CMD_UNSUPPORTED);
        return;
    }
    char host[TW_SOCKS_MAX_NAME + 1];
    int code = check_destination(c, q, host, sizeof host);
    if (code == TW_SOCKS5_NOT_ALLOWED) {
        sf->stats.denied++;
        tw_log_info(LOG_NS, "%s -> %s: denied: not in the allow list", c->peer, c->dest);
    }
    if (code != 0) {
        finish_reply(c, (uint8_t)code);
        return;
    }
    char desc[3 * TW_SOCKS_MAX_NAME + 64];
    tw_endpoint *ep = NULL;
    tw_failure *failure = NULL;
    int rc = dest_description(q, host, sf->connect_timeout, desc, sizeof desc);
    if (rc == 0)
        rc = tw_endpoint_client_from_string(sf->reactor, desc, &ep, &failure);
    if (rc == 0) {
        tw_relay_options opts = {
            .max_pending = sf->max_pending, .stats = &sf->stats.relay, .name = c->dest};
        sf->refs++; /* the relay's, dropped by its release hook */
        rc = tw_relay_start(&c->base, ep, &socks_relay_hooks, sf, &opts, &c->relay);
        if (rc < 0)
            sf->refs--;
        tw_endpoint_free(ep);
    }
    if (rc < 0) {
        sf->stats.failed++;
        tw_log_info(LOG_NS, "%s -> %s: cannot connect: %s", c->peer, c->dest,
                    failure ? tw_failure_message(failure) : tw_strerror(rc));
        tw_failure_unref(failure);
        finish_reply(c, rc == TW_EINVAL ? TW_SOCKS5_HOST_UNREACHABLE : TW_SOCKS5_FAILURE);
    }
}

static void on_methods(socks_conn *c)
{
    tw_socks_factory *sf = c->sf;
    uint8_t want = sf->username ? TW_SOCKS_METHOD_USERPASS : TW_SOCKS_METHOD_NONE;
    bool offered = memchr(c->dec->methods, want, c->dec->nmethods) != NULL;
    if (!offered) {
        sf->stats.auth_failed++;
        tw_log_info(LOG_NS, "%s: no acceptable authentication method (%s needed)", c->peer,
                    sf->username ? "username/password" : "none");
        uint8_t no[2] = {5, TW_SOCKS_METHOD_UNACCEPTABLE};
        finish(c, no, 2);
        return;
    }
    uint8_t yes[2] = {5, want};
    send_bytes(c, yes, 2);
    tw_socks_decoder_method(c->dec, want);
}

/* Compares without stopping at the first difference, so the time taken
 * does not tell how much of a guess was right. */
static bool same_secret(const char *a, size_t alen, const char *b, size_t blen)
{
    unsigned diff = alen != blen;
    size_t n = alen < blen ? alen : blen;
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)(a[i] ^ b[i]);
    return diff == 0;
}

static void on_auth(socks_conn *c)
{
    tw_socks_factory *sf = c->sf;
    tw_socks_decoder *d = c->dec;
    bool user_ok = same_secret(d->req.user, d->req.user_len, sf->username, sf->username_len);
    bool password_ok = same_secret(d->password, d->password_len, sf->password, sf->password_len);
    bool ok = user_ok && password_ok;
    memset(d->password, 0, sizeof d->password);
    if (!ok) {
        sf->stats.auth_failed++;
        char user[TW_ENDPOINT_QUOTE_SIZE];
        tw_log_info(LOG_NS, "%s: authentication failed for user %s", c->peer,
                    tw_endpoint_quote(user, sizeof user, d->req.user, d->req.user_len));
        uint8_t no[2] = {1, 1};
        finish(c, no, 2);
        return;
    }
    uint8_t yes[2] = {1, 0};
    send_bytes(c, yes, 2);
}

static void on_error(socks_conn *c)
{
    c->sf->stats.malformed++;
    tw_log_info(LOG_NS, "%s: malformed request: %s", c->peer, c->dec->error);
    uint8_t out[TW_SOCKS_REPLY_MAX];
    finish(c, out, tw_socks_error_reply(c->dec, out));
}

/* ---- The protocol */

static void negotiation_timed_out(tw_timer *t)
{
    socks_conn *c = (socks_conn *)((char *)t - offsetof(socks_conn, timer));
    c->sf->stats.timeouts++;
    tw_log_info(LOG_NS, "%s: no complete request after %g s: closing", c->peer,
                c->sf->negotiation_timeout);
    c->done = true;
    tw_transport_lose_connection(c->base.transport);
}

static void socks_made(tw_protocol *p)
{
    socks_conn *c = (socks_conn *)p;
    tw_address a;
    if (tw_transport_get_peer(p->transport, &a) == 0)
        tw_address_format(&a, c->peer, sizeof c->peer);
    else
        snprintf(c->peer, sizeof c->peer, "client");
    c->dec = tw_malloc(sizeof *c->dec);
    if (!c->dec || tw_timer_start(&c->timer, c->sf->negotiation_timeout) < 0) {
        tw_log_warn(LOG_NS, "%s: out of memory: closing", c->peer);
        c->done = true;
        tw_transport_abort_connection(p->transport);
        return;
    }
    tw_socks_decoder_init(c->dec);
}

static void socks_data(tw_protocol *p, const char *data, size_t len)
{
    socks_conn *c = (socks_conn *)p;
    if (c->relay) {
        tw_relay_data_received(c->relay, data, len);
        return;
    }
    while (len > 0 && !c->done && c->dec) {
        size_t used = 0;
        int ev = tw_socks_decode(c->dec, data, len, &used);
        data += used;
        len -= used;
        switch (ev) {
        case TW_SOCKS_METHODS:
            on_methods(c);
            break;
        case TW_SOCKS_AUTH:
            on_auth(c);
            break;
        case TW_SOCKS_REQUEST:
            on_request(c);
            tw_free(c->dec);
            c->dec = NULL;
            if (c->relay && len > 0) /* what came with the request goes on */
                tw_relay_data_received(c->relay, data, len);
            return;
        case TW_SOCKS_ERROR:
            on_error(c);
            return;
        default: /* TW_SOCKS_MORE: every byte taken */
            break;
        }
    }
}

static void socks_read_lost(tw_protocol *p)
{
    socks_conn *c = (socks_conn *)p;
    if (c->relay) {
        tw_relay_read_connection_lost(c->relay);
        return;
    }
    c->done = true;
    tw_timer_stop(&c->timer);
    tw_transport_lose_connection(p->transport);
}

static void socks_lost(tw_protocol *p, tw_failure *reason)
{
    socks_conn *c = (socks_conn *)p;
    (void)reason;
    tw_timer_stop(&c->timer);
    tw_relay_connection_lost(c->relay);
    c->relay = NULL;
}

static void socks_free(tw_protocol *p)
{
    socks_conn *c = (socks_conn *)p;
    tw_socks_factory *sf = c->sf;
    tw_timer_stop(&c->timer);
    tw_free(c->dec);
    tw_free(c->dest);
    tw_free(c);
    sf_unref(sf);
}

static const tw_protocol_ops socks_ops = {
    .connection_made = socks_made,
    .data_received = socks_data,
    .read_connection_lost = socks_read_lost,
    .connection_lost = socks_lost,
    .free = socks_free,
};

static tw_protocol *socks_build(tw_factory *f, const tw_address *addr)
{
    tw_socks_factory *sf = (tw_socks_factory *)f;
    (void)addr;
    socks_conn *c = tw_calloc(1, sizeof *c);
    if (!c)
        return NULL;
    tw_protocol_init(&c->base, &socks_ops);
    c->sf = sf;
    tw_timer_init(&c->timer, tw_reactor_clock(sf->reactor), negotiation_timed_out);
    sf->refs++;
    return &c->base;
}

static const tw_factory_ops socks_factory_ops = {.build_protocol = socks_build};

static bool bad_timeout(double t)
{
    return !(t >= 0) || isinf(t);
}

int tw_socks_factory_new(tw_reactor *r, tw_socks_allow *allow, const tw_socks_options *opts,
                         tw_socks_factory **out)
{
    tw_socks_options o = opts ? *opts : (tw_socks_options){0};
    if (!r || !allow || !out || bad_timeout(o.negotiation_timeout) ||
        bad_timeout(o.connect_timeout) || o.connect_timeout > 1e9 || (!o.username) != (!o.password))
        return TW_EINVAL;
    tw_socks_factory *sf = tw_calloc(1, sizeof *sf);
    if (!sf)
        return TW_ENOMEM;
    if (o.username) {
        sf->username = tw_strdup(o.username);
        sf->password = tw_strdup(o.password);
        if (!sf->username || !sf->password) {
            tw_free(sf->username);
            tw_free(sf->password);
            tw_free(sf);
            return TW_ENOMEM;
        }
        sf->username_len = strlen(sf->username);
        sf->password_len = strlen(sf->password);
    }
    tw_factory_init(&sf->base, &socks_factory_ops, NULL, 0, sf);
    sf->reactor = r;
    sf->allow = allow;
    sf->negotiation_timeout =
        o.negotiation_timeout > 0 ? o.negotiation_timeout : TW_SOCKS_NEGOTIATION_TIMEOUT;
    sf->connect_timeout = o.connect_timeout > 0 ? o.connect_timeout : TW_SOCKS_CONNECT_TIMEOUT;
    sf->max_pending = o.max_pending;
    sf->refs = 1;
    *out = sf;
    return 0;
}

tw_factory *tw_socks_factory_base(tw_socks_factory *sf)
{
    return sf ? &sf->base : NULL;
}

const tw_socks_stats *tw_socks_factory_stats(const tw_socks_factory *sf)
{
    return sf ? &sf->stats : NULL;
}

void tw_socks_factory_free(tw_socks_factory *sf)
{
    if (sf)
        sf_unref(sf);
}
