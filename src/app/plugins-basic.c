/* The RFC 862-867 services as twined plugins (Twisted's twisted.protocols.wire:
 * Echo, Discard, Chargen, Daytime, QOTD).
 *
 * Ports: the RFCs' are below 1024 (echo 7, discard 9, daytime 13, qotd 17,
 * chargen 19), which only root may bind; the defaults are those plus 8000
 * (tcp:8007, ...), as the qotd example's tcp:8017. Each plugin says so in
 * its --help.
 *
 * Flow control: echo registers its transport as the producer of its own
 * writes, so a client that sends without reading stops being read once the
 * echoes back up (the kernel's window then holds it back) instead of growing
 * the write queue; chargen is a pull producer, writing one chunk each time
 * the transport's queue drains. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <twine/alloc.h>
#include <twine/error.h>
#include <twine/log.h>
#include <twine/plugin.h>
#include <twine/protocol.h>
#include <twine/service.h>
#include <twine/transport.h>

#include "app/app-internal.h"

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* Logs the peer of each connection at debug level, in the plugin's namespace
 * (twined.echo...): behind a proxy speaking the PROXY protocol (haproxy:
 * endpoints), that is the client's address, not the proxy's. */
static void log_peer(tw_protocol *p, const char *ns)
{
    if (!tw_log_namespace_enabled(ns, TW_LOG_DEBUG))
        return; /* no formatting for a line nobody sees */
    tw_address peer;
    char where[TW_ADDRESS_STRLEN];
    if (tw_transport_get_peer(p->transport, &peer) == 0)
        tw_log_debug(ns, "connection from %s", tw_address_format(&peer, where, sizeof where));
}

/* ---- Echo (RFC 862) */

static void echo_made(tw_protocol *p)
{
    log_peer(p, "twined.echo");
    tw_transport *t = p->transport;
    /* Out of memory here only costs the flow control. */
    tw_transport_register_producer(t, tw_transport_producer(t), true);
}

static void echo_data(tw_protocol *p, const char *data, size_t len)
{
    tw_transport_write(p->transport, data, len);
}

static const tw_protocol_ops echo_ops = {
    .connection_made = echo_made,
    .data_received = echo_data,
};

/* ---- Discard (RFC 863) */

static void discard_made(tw_protocol *p)
{
    log_peer(p, "twined.discard");
}

static const tw_protocol_ops discard_ops = {.connection_made = discard_made};

/* ---- Character generator (RFC 864): lines of 72 printable characters,
 * each starting one character further along the 95 printable ASCII ones. */

#define CHARGEN_LINE  72
#define CHARGEN_CHUNK 221 /* lines per resume: about 16 KiB */

struct chargen {
    tw_protocol base;
    tw_producer producer;
    unsigned next; /* the first character of the next line, 0-94 */
    bool stopped;
};

static void chargen_resume(tw_producer *prod)
{
    struct chargen *c = container_of(prod, struct chargen, producer);
    if (c->stopped || !c->base.transport)
        return;
    char buf[CHARGEN_CHUNK * (CHARGEN_LINE + 2)];
    char *at = buf;
    for (int line = 0; line < CHARGEN_CHUNK; line++) {
        for (unsigned i = 0; i < CHARGEN_LINE; i++)
            *at++ = (char)(' ' + (c->next + i) % 95);
        *at++ = '\r';
        *at++ = '\n';
        c->next = (c->next + 1) % 95;
    }
    tw_transport_write(c->base.transport, buf, sizeof buf);
}

static void chargen_stop(tw_producer *prod)
{
    container_of(prod, struct chargen, producer)->stopped = true;
}

static const tw_producer_ops chargen_producer_ops = {
    .resume_producing = chargen_resume,
    .stop_producing = chargen_stop,
};

static void chargen_made(tw_protocol *p)
{
    struct chargen *c = (struct chargen *)p;
    log_peer(p, "twined.chargen");
    c->producer.ops = &chargen_producer_ops;
    int rc = tw_transport_register_producer(p->transport, &c->producer, false);
    if (rc < 0) {
        tw_log_warn("twined.chargen", "cannot produce: %s", tw_strerror(rc));
        tw_transport_lose_connection(p->transport);
    }
}

static const tw_protocol_ops chargen_ops = {.connection_made = chargen_made};

/* ---- Daytime (RFC 867): the time in UTC, as Twisted's (asctime of gmtime). */

static void daytime_made(tw_protocol *p)
{
    log_peer(p, "twined.daytime");
    time_t now = time(NULL);
    struct tm tm;
    char line[64];
    gmtime_r(&now, &tm);
    size_t n = strftime(line, sizeof line, "%a %b %e %H:%M:%S %Y\r\n", &tm);
    tw_transport_write(p->transport, line, n);
    tw_transport_lose_connection(p->transport);
}

static const tw_protocol_ops daytime_ops = {.connection_made = daytime_made};

/* ---- Quote of the day (RFC 865) */

static void qotd_made(tw_protocol *p)
{
    log_peer(p, "twined.qotd");
    const char *quote = p->factory->data;
    const struct iovec lines[] = {{(void *)quote, strlen(quote)}, {"\r\n", 2}};
    tw_transport_write_sequence(p->transport, lines, 2);
    tw_transport_lose_connection(p->transport);
}

static const tw_protocol_ops qotd_ops = {.connection_made = qotd_made};

/* ---- The plugins: a multi-service named after the plugin, one server per
 * --listen, and the factory (with the quote) kept by the multi-service. */

struct basic_state {
    tw_factory factory;
    char quote[]; /* qotd's; "" for the others */
};

static int basic_make(tw_reactor *r, const tw_plugin_args *args, const char *name,
                      const tw_protocol_ops *ops, size_t protocol_size, const char *quote,
                      tw_service **out, tw_failure **failure)
{
    tw_multi_service *m;
    int rc = tw_multi_service_new(r, name, &m);
    if (rc < 0)
        return rc;
    size_t qlen = quote ? strlen(quote) : 0;
    struct basic_state *st = tw_calloc(1, sizeof *st + qlen + 1);
    if (!st) {
        tw_service_release(tw_multi_service_base(m));
        return TW_ENOMEM;
    }
    if (qlen)
        memcpy(st->quote, quote, qlen);
    tw_factory_init(&st->factory, NULL, ops, protocol_size, st->quote);
    tw_multi_service_keep(m, st, tw_free);
    rc = tw_plugin_add_servers(r, args, "listen", m, &st->factory, failure);
    if (rc < 0) {
        tw_service_release(tw_multi_service_base(m));
        return rc;
    }
    *out = tw_multi_service_base(m);
    return 0;
}

/* The default is the RFC's port plus 8000: unprivileged. */
#define LISTEN_OPTION(port)                                                                        \
    {                                                                                              \
        "listen", 'l', "ENDPOINT", "Listen on ENDPOINT (default: the RFC's port plus 8000).",      \
            "tcp:80" #port, true                                                                   \
    }

static int echo_make(tw_reactor *r, const tw_plugin_args *args, tw_service **out,
                     tw_failure **failure)
{
    return basic_make(r, args, "echo", &echo_ops, 0, NULL, out, failure);
}

static const tw_plugin_option echo_options[] = {LISTEN_OPTION(07), {0}};

const tw_plugin tw__plugin_echo = {
    .name = "echo",
    .description = "An echo server (RFC 862): every byte a client sends comes back.",
    .options = echo_options,
    .make_service = echo_make,
};

static int discard_make(tw_reactor *r, const tw_plugin_args *args, tw_service **out,
                        tw_failure **failure)
{
    return basic_make(r, args, "discard", &discard_ops, 0, NULL, out, failure);
}

static const tw_plugin_option discard_options[] = {LISTEN_OPTION(09), {0}};

const tw_plugin tw__plugin_discard = {
    .name = "discard",
    .description = "A discard server (RFC 863): reads and drops whatever a client sends.",
    .options = discard_options,
    .make_service = discard_make,
};

static int chargen_make(tw_reactor *r, const tw_plugin_args *args, tw_service **out,
                        tw_failure **failure)
{
    return basic_make(r, args, "chargen", &chargen_ops, sizeof(struct chargen), NULL, out, failure);
}

static const tw_plugin_option chargen_options[] = {LISTEN_OPTION(19), {0}};

const tw_plugin tw__plugin_chargen = {
    .name = "chargen",
    .description = "A character generator (RFC 864): lines of printable characters, as fast as "
                   "the client reads them.",
    .options = chargen_options,
    .make_service = chargen_make,
};

static int daytime_make(tw_reactor *r, const tw_plugin_args *args, tw_service **out,
                        tw_failure **failure)
{
    return basic_make(r, args, "daytime", &daytime_ops, 0, NULL, out, failure);
}

static const tw_plugin_option daytime_options[] = {LISTEN_OPTION(13), {0}};

const tw_plugin tw__plugin_daytime = {
    .name = "daytime",
    .description = "A daytime server (RFC 867): the date and time in UTC, then the connection "
                   "closes.",
    .options = daytime_options,
    .make_service = daytime_make,
};

#define DEFAULT_QUOTE "An apple a day keeps the doctor away."

static int qotd_make(tw_reactor *r, const tw_plugin_args *args, tw_service **out,
                     tw_failure **failure)
{
    return basic_make(r, args, "qotd", &qotd_ops, 0, tw_plugin_arg(args, "quote"), out, failure);
}

static const tw_plugin_option qotd_options[] = {
    LISTEN_OPTION(17),
    {"quote", 'q', "TEXT", "The quote every client gets.", DEFAULT_QUOTE, false},
    {0},
};

const tw_plugin tw__plugin_qotd = {
    .name = "qotd",
    .description = "A quote of the day server (RFC 865): one quote, then the connection closes.",
    .options = qotd_options,
    .make_service = qotd_make,
};
