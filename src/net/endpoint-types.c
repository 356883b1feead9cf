/* The built-in endpoint types: tcp, tcp6, unix, systemd, haproxy, ssl, tls. Each is a
 * validator like any registered type's: it binds the arguments to its
 * parameters (Twisted's parser signatures) and makes the typed fields. */
#include "net/endpoint-internal.h"

#include <twine/alloc.h>
#include <twine/error.h>

#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <string.h>

#define GIVE(spec, ...) tw__endpoint_give(failure, tw_endpoint_fail((spec), __VA_ARGS__))
#define QUOTE(buf, arg) tw_endpoint_quote((buf), sizeof(buf), (arg)->value, (arg)->value_len)
#define COUNT(a)        (sizeof(a) / sizeof((a)[0]))

#define DEFAULT_BACKLOG 50
#define DEFAULT_TIMEOUT 30.0
#define MAX_TIMEOUT     1e9
#define UNIX_PATH_MAX   107 /* sun_path is 108 bytes: a NUL, or the abstract marker */

/* ---- Checking values */

static bool has_nul(const tw_endpoint_arg *a)
{
    return memchr(a->value, '\0', a->value_len) != NULL;
}

static bool ipv4_literal(const char *s, size_t len)
{
    char buf[INET_ADDRSTRLEN];
    struct in_addr addr;
    if (len >= sizeof buf || memchr(s, '\0', len))
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    return inet_pton(AF_INET, buf, &addr) == 1;
}

/* An IPv6 literal, with an optional zone ("fe80::1%eth0"). */
static bool ipv6_literal(const char *s, size_t len)
{
    char buf[INET6_ADDRSTRLEN];
    struct in6_addr addr;
    const char *zone = memchr(s, '%', len);
    size_t addr_len = zone ? (size_t)(zone - s) : len;
    if (zone) {
        size_t zone_len = len - addr_len - 1;
        if (zone_len == 0 || zone_len > 15)
            return false;
        for (size_t i = 1; i <= zone_len; i++) {
            char c = zone[i];
            bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '.' || c == '_' || c == '-';
            if (!ok)
                return false;
        }
    }
    if (addr_len >= sizeof buf || memchr(s, '\0', addr_len))
        return false;
    memcpy(buf, s, addr_len);
    buf[addr_len] = '\0';
    return inet_pton(AF_INET6, buf, &addr) == 1;
}

/* A DNS name: labels of 1-63 letters, digits, '-' or '_', 253 bytes in all,
 * with an optional final dot. */
static bool dns_name(const char *s, size_t len)
{
    if (len > 0 && s[len - 1] == '.')
        len--;
    if (len == 0 || len > 253)
        return false;
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '.') {
            if (label == 0)
                return false;
            label = 0;
            continue;
        }
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_';
        if (!ok || ++label > 63)
            return false;
    }
    return label > 0;
}

/* Seconds: digits with an optional fraction, > 0 and at most MAX_TIMEOUT.
 * Parsed by hand: strtod would follow the locale's decimal point. */
static int seconds_arg(const tw_endpoint_spec *spec, const tw_endpoint_arg *a, double *out,
                       tw_failure **failure)
{
    char q[TW_ENDPOINT_QUOTE_SIZE];
    const char *s = a->value, *end = a->value + a->value_len;
    double whole = 0, frac = 0, scale = 1;
    size_t digits = 0;
    while (s < end && *s >= '0' && *s <= '9') {
        whole = whole * 10 + (*s++ - '0');
        digits++;
    }
    bool ok = digits > 0;
    if (ok && s < end && *s == '.') {
        s++;
        size_t fdigits = 0;
        while (s < end && *s >= '0' && *s <= '9') {
            if (fdigits++ < 9) { /* nanoseconds are as fine as a timeout gets */
                scale *= 10;
                frac = frac * 10 + (*s - '0');
            }
            s++;
        }
        ok = fdigits > 0;
    }
    if (!ok || s != end)
        return GIVE(spec, "timeout %s is not a number of seconds", QUOTE(q, a));
    double v = whole + frac / scale;
    if (v <= 0)
        return GIVE(spec, "timeout %s must be more than 0 seconds", QUOTE(q, a));
    if (v > MAX_TIMEOUT)
        return GIVE(spec, "timeout %s out of range (at most %.0f seconds)", QUOTE(q, a),
                    MAX_TIMEOUT);
    *out = v;
    return 0;
}

static int backlog_arg(const tw_endpoint_spec *spec, const tw_endpoint_arg *a, int *out,
                       tw_failure **failure)
{
    unsigned long v = DEFAULT_BACKLOG;
    if (a != NULL) {
        int rc = tw_endpoint_arg_uint(spec, a, "backlog", 0, INT_MAX, &v, failure);
        if (rc < 0)
            return rc;
    }
    *out = (int)v;
    return 0;
}

/* A unix socket path (see the header): '@' or a NUL first means abstract. */
static int path_arg(const tw_endpoint_spec *spec, const tw_endpoint_arg *a, const char **path,
                    size_t *path_len, bool *abstract, tw_failure **failure)
{
    char q[TW_ENDPOINT_QUOTE_SIZE];
    if (a->value_len == 0)
        return GIVE(spec, "empty path");
    *abstract = a->value[0] == '@' || a->value[0] == '\0';
    if (*abstract) {
        if (a->value_len == 1)
            return GIVE(spec, "empty abstract socket name %s", QUOTE(q, a));
        if (a->value_len - 1 > UNIX_PATH_MAX)
            return GIVE(spec, "abstract socket name too long (%zu bytes, at most %d)",
                        a->value_len - 1, UNIX_PATH_MAX);
    } else {
        if (has_nul(a))
            return GIVE(spec, "path %s holds a NUL byte", QUOTE(q, a));
        if (a->value_len > UNIX_PATH_MAX)
            return GIVE(spec, "path too long (%zu bytes, at most %d)", a->value_len, UNIX_PATH_MAX);
    }
    *path = a->value;
    *path_len = a->value_len;
    return 0;
}

static void *typed_new(size_t size, tw_failure **failure)
{
    void *p = tw_calloc(1, size);
    if (p == NULL)
        *failure = tw_failure_new(TW_ENOMEM, NULL, NULL);
    return p;
}

/* ---- tcp and tcp6 */

typedef struct tcp_flavour {
    bool v6;
    const char *default_interface;
    const char *const *server_params; /* tcp6's positional order differs (Twisted's) */
} tcp_flavour;

static const char *const tcp_server_params[] = {"port", "interface", "backlog"};
static const char *const tcp6_server_params[] = {"port", "backlog", "interface"};
static const tcp_flavour tcp4 = {false, "", tcp_server_params};
static const tcp_flavour tcp6 = {true, "::", tcp6_server_params};

static int tcp_server_fields(const tw_endpoint_spec *spec, const tcp_flavour *fl,
                             const tw_endpoint_arg *port_arg, const tw_endpoint_arg *i,
                             const tw_endpoint_arg *backlog, tw_endpoint_tcp_server *tp,
                             tw_failure **failure);
static int tcp_client_fields(const tw_endpoint_spec *spec, const tcp_flavour *fl,
                             const tw_endpoint_arg *const *slot, tw_endpoint_tcp_client *tp,
                             tw_failure **failure);

static int tcp_server(const tw_endpoint_spec *spec, const tcp_flavour *fl, void **typed,
                      tw_release_fn *release, tw_failure **failure)
{
    enum { PORT, INTERFACE, BACKLOG, N };
    const tw_endpoint_arg *slot[N];
    int rc = tw_endpoint_bind_args(spec, fl->server_params, N, N, slot, failure);
    if (rc < 0)
        return rc;
    if (fl->v6) { /* bound in tcp6's order: port backlog interface */
        const tw_endpoint_arg *a = slot[INTERFACE];
        slot[INTERFACE] = slot[BACKLOG];
        slot[BACKLOG] = a;
    }

    tw_endpoint_tcp_server t;
    if ((rc = tcp_server_fields(spec, fl, slot[PORT], slot[INTERFACE], slot[BACKLOG], &t,
                                failure)) < 0)
        return rc;

    tw_endpoint_tcp_server *out = typed_new(sizeof *out, failure);
    if (out == NULL)
        return TW_ENOMEM;
    *out = t;
    *typed = out;
    *release = tw_free;
    return 0;
}

/* The port, interface and backlog of a tcp-like server (ssl: too). */
static int tcp_server_fields(const tw_endpoint_spec *spec, const tcp_flavour *fl,
                             const tw_endpoint_arg *port_arg, const tw_endpoint_arg *i,
                             const tw_endpoint_arg *backlog, tw_endpoint_tcp_server *tp,
                             tw_failure **failure)
{
    char q[TW_ENDPOINT_QUOTE_SIZE];
    int rc;
    tw_endpoint_tcp_server t = {.interface = fl->default_interface};
    if (port_arg == NULL)
        return GIVE(spec, "missing port");
    unsigned long port;
    if ((rc = tw_endpoint_arg_uint(spec, port_arg, "port", 0, 65535, &port, failure)) < 0)
        return rc;
    t.port = (unsigned)port;
    if (i != NULL && i->value_len > 0) {
        bool ok =
            fl->v6 ? ipv6_literal(i->value, i->value_len)
                   : ipv4_literal(i->value, i->value_len) || ipv6_literal(i->value, i->value_len);
        if (!ok)
            return GIVE(spec, "interface %s is not an %s address", QUOTE(q, i),
                        fl->v6 ? "IPv6" : "IP");
        t.interface = i->value;
    } else if (i != NULL) {
        t.interface = ""; /* all interfaces, as the defaults */
    }
    if ((rc = backlog_arg(spec, backlog, &t.backlog, failure)) < 0)
        return rc;
    *tp = t;
    return 0;
}

static int tcp_client(const tw_endpoint_spec *spec, const tcp_flavour *fl, void **typed,
                      tw_release_fn *release, tw_failure **failure)
{
    enum { HOST, PORT, TIMEOUT, BIND, N };
    static const char *const params[N] = {"host", "port", "timeout", "bindAddress"};
    /* Twisted: a single positional argument is the port when host= is given. */
    static const char *const port_first[N] = {"port", "host", "timeout", "bindAddress"};
    size_t npos = 0;
    for (size_t k = 0; k < spec->nargs; k++)
        npos += spec->args[k].key == NULL;
    bool swap = npos == 1 && tw_endpoint_spec_get(spec, "host") != NULL;
    const tw_endpoint_arg *slot[N];
    int rc = tw_endpoint_bind_args(spec, swap ? port_first : params, N, 2, slot, failure);
    if (rc < 0)
        return rc;
    if (swap) {
        const tw_endpoint_arg *a = slot[0];
        slot[0] = slot[1];
        slot[1] = a;
    }

    tw_endpoint_tcp_client t;
    if ((rc = tcp_client_fields(spec, fl, slot, &t, failure)) < 0)
        return rc;
    tw_endpoint_tcp_client *out = typed_new(sizeof *out, failure);
    if (out == NULL)
        return TW_ENOMEM;
    *out = t;
    *typed = out;
    *release = tw_free;
    return 0;
}

/* host, port, timeout, bindAddress (slot[0..3]) of a tcp-like client (tls: too). */
static int tcp_client_fields(const tw_endpoint_spec *spec, const tcp_flavour *fl,
                             const tw_endpoint_arg *const *slot, tw_endpoint_tcp_client *tp,
                             tw_failure **failure)
{
    char q[TW_ENDPOINT_QUOTE_SIZE];
    enum { HOST, PORT, TIMEOUT, BIND };
    int rc;
    tw_endpoint_tcp_client t = {.timeout = DEFAULT_TIMEOUT};
    const tw_endpoint_arg *h = slot[HOST];
    if (h == NULL)
        return GIVE(spec, "missing host");
    if (fl->v6 && ipv4_literal(h->value, h->value_len))
        return GIVE(spec, "host %s is an IPv4 address", QUOTE(q, h));
    if (!dns_name(h->value, h->value_len) && !ipv4_literal(h->value, h->value_len) &&
        !ipv6_literal(h->value, h->value_len))
        return GIVE(spec, "host %s is not a host name or IP address", QUOTE(q, h));
    t.host = h->value;
    if (slot[PORT] == NULL)
        return GIVE(spec, "missing port");
    unsigned long port;
    if ((rc = tw_endpoint_arg_uint(spec, slot[PORT], "port", 1, 65535, &port, failure)) < 0)
        return rc;
    t.port = (unsigned)port;
    if (slot[TIMEOUT] && (rc = seconds_arg(spec, slot[TIMEOUT], &t.timeout, failure)) < 0)
        return rc;
    const tw_endpoint_arg *b = slot[BIND];
    if (b != NULL) {
        bool ok =
            fl->v6 ? ipv6_literal(b->value, b->value_len)
                   : ipv4_literal(b->value, b->value_len) || ipv6_literal(b->value, b->value_len);
        if (!ok)
            return GIVE(spec, "bindAddress %s is not an %s address", QUOTE(q, b),
                        fl->v6 ? "IPv6" : "IP");
        t.bind_address = b->value;
    }
    *tp = t;
    return 0;
}

static int validate_tcp(const tw_endpoint_spec *spec, void *arg, void **typed,
                        tw_release_fn *release, tw_failure **failure)
{
    const tcp_flavour *fl = arg;
    return spec->role == TW_ENDPOINT_SERVER ? tcp_server(spec, fl, typed, release, failure)
                                            : tcp_client(spec, fl, typed, release, failure);
}

/* ---- unix */

static int unix_server(const tw_endpoint_spec *spec, void **typed, tw_release_fn *release,
                       tw_failure **failure)
{
    char q[TW_ENDPOINT_QUOTE_SIZE];
    enum { ADDRESS, MODE, BACKLOG, LOCKFILE, N };
    static const char *const params[N] = {"address", "mode", "backlog", "lockfile"};
    const tw_endpoint_arg *slot[N];
    int rc = tw_endpoint_bind_args(spec, params, N, N, slot, failure);
    if (rc < 0)
        return rc;

    tw_endpoint_unix_server t = {.mode = 0666, .lockfile = true};
    if (slot[ADDRESS] == NULL)
        return GIVE(spec, "missing path (positional or address=)");
    if ((rc = path_arg(spec, slot[ADDRESS], &t.path, &t.path_len, &t.abstract, failure)) < 0)
        return rc;
    const tw_endpoint_arg *m = slot[MODE];
    if (m != NULL) {
        if (m->value_len == 0 || strspn(m->value, "01234567") != m->value_len)
            return GIVE(spec, "mode %s is not octal", QUOTE(q, m));
        unsigned long mode = 0;
        for (size_t k = 0; k < m->value_len && mode <= 07777; k++)
            mode = mode * 8 + (unsigned long)(m->value[k] - '0');
        if (mode > 07777)
            return GIVE(spec, "mode %s out of range (0-07777)", QUOTE(q, m));
        t.mode = (unsigned)mode;
    }
    if ((rc = backlog_arg(spec, slot[BACKLOG], &t.backlog, failure)) < 0)
        return rc;
    if (slot[LOCKFILE] &&
        (rc = tw_endpoint_arg_flag(spec, slot[LOCKFILE], "lockfile", &t.lockfile, failure)) < 0)
        return rc;

    tw_endpoint_unix_server *out = typed_new(sizeof *out, failure);
    if (out == NULL)
        return TW_ENOMEM;
    *out = t;
    *typed = out;
    *release = tw_free;
    return 0;
}

static int unix_client(const tw_endpoint_spec *spec, void **typed, tw_release_fn *release,
                       tw_failure **failure)
{
    enum { PATH, TIMEOUT, CHECKPID, LOCKFILE, N };
    /* lockfile= is what Twisted's clientFromString reads for checkPID. */
    static const char *const params[N] = {"path", "timeout", "checkPID", "lockfile"};
    const tw_endpoint_arg *slot[N];
    int rc = tw_endpoint_bind_args(spec, params, N, 1, slot, failure);
    if (rc < 0)
        return rc;

    tw_endpoint_unix_client t = {.timeout = DEFAULT_TIMEOUT};
    if (slot[PATH] == NULL)
        return GIVE(spec, "missing path (positional or path=)");
    if ((rc = path_arg(spec, slot[PATH], &t.path, &t.path_len, &t.abstract, failure)) < 0)
        return rc;
    if (slot[TIMEOUT] && (rc = seconds_arg(spec, slot[TIMEOUT], &t.timeout, failure)) < 0)
        return rc;
    if (slot[CHECKPID] && slot[LOCKFILE])
        return GIVE(spec, "options 'checkPID' and 'lockfile' both given (they are the same)");
    const tw_endpoint_arg *c = slot[CHECKPID] ? slot[CHECKPID] : slot[LOCKFILE];
    if (c && (rc = tw_endpoint_arg_flag(spec, c, c == slot[CHECKPID] ? "checkPID" : "lockfile",
                                        &t.check_pid, failure)) < 0)
        return rc;

    tw_endpoint_unix_client *out = typed_new(sizeof *out, failure);
    if (out == NULL)
        return TW_ENOMEM;
    *out = t;
    *typed = out;
    *release = tw_free;
    return 0;
}

static int validate_unix(const tw_endpoint_spec *spec, void *arg, void **typed,
                         tw_release_fn *release, tw_failure **failure)
{
    return spec->role == TW_ENDPOINT_SERVER ? unix_server(spec, typed, release, failure)
                                            : unix_client(spec, typed, release, failure);
}

/* ---- systemd (socket activation) */

static int validate_systemd(const tw_endpoint_spec *spec, void *arg, void **typed,
                            tw_release_fn *release, tw_failure **failure)
{
    char q[TW_ENDPOINT_QUOTE_SIZE];
    enum { DOMAIN, INDEX, N };
    static const char *const params[N] = {"domain", "index"};
    static const char *const domains[] = {"INET", "INET6", "UNIX"};
    const tw_endpoint_arg *slot[N];
    int rc = tw_endpoint_bind_args(spec, params, N, N, slot, failure);
    if (rc < 0)
        return rc;

    tw_endpoint_systemd t = {0};
    const tw_endpoint_arg *d = slot[DOMAIN];
    if (d == NULL)
        return GIVE(spec, "missing domain");
    size_t k = 0;
    while (k < COUNT(domains) &&
           !(strlen(domains[k]) == d->value_len && memcmp(domains[k], d->value, d->value_len) == 0))
        k++;
    if (k == COUNT(domains))
        return GIVE(spec, "domain %s is not INET, INET6 or UNIX", QUOTE(q, d));
    t.domain = (tw_endpoint_domain)k;
    if (slot[INDEX] == NULL)
        return GIVE(spec, "missing index");
    unsigned long index;
    if ((rc = tw_endpoint_arg_uint(spec, slot[INDEX], "index", 0, 65535, &index, failure)) < 0)
        return rc;
    t.index = (unsigned)index;

    tw_endpoint_systemd *out = typed_new(sizeof *out, failure);
    if (out == NULL)
        return TW_ENOMEM;
    *out = t;
    *typed = out;
    *release = tw_free;
    return 0;
}

/* ---- haproxy: the PROXY protocol around any other server description. The
 * arguments are the wrapped description, already tokenized. */

static void release_spec(void *spec)
{
    tw_endpoint_spec_free(spec);
}

static int validate_haproxy(const tw_endpoint_spec *spec, void *arg, void **typed,
                            tw_release_fn *release, tw_failure **failure)
{
    char q[TW_ENDPOINT_QUOTE_SIZE];
    if (spec->nargs == 0 || (spec->args[0].key == NULL && spec->args[0].value_len == 0))
        return GIVE(spec, "missing wrapped endpoint description");
    const tw_endpoint_arg *first = &spec->args[0];
    if (first->key != NULL)
        return GIVE(spec, "missing wrapped endpoint type (the first argument is the option %s)",
                    tw_endpoint_quote(q, sizeof q, first->key, first->key_len));
    const tw__endpoint_type *other;
    const tw__endpoint_type *t =
        tw__endpoint_lookup(first->value, first->value_len, spec->role, &other);
    if (t != NULL && t->kind == TW_ENDPOINT_HAPROXY)
        return GIVE(spec, "cannot wrap another haproxy endpoint");

    tw_endpoint_spec *inner;
    tw_failure *f = NULL;
    int rc = tw__endpoint_parse_args(spec->role, spec->args, spec->nargs, &inner, &f);
    if (rc < 0) {
        if (tw_failure_code(f) == TW_ENOMEM) {
            *failure = f;
            return TW_ENOMEM;
        }
        *failure = tw_endpoint_fail(spec, "%s", tw_failure_message(f));
        tw_failure_unref(f);
        return tw_failure_code(*failure);
    }
    *typed = inner;
    *release = release_spec;
    return 0;
}

/* ---- ssl (server) and tls (client): tcp with TLS files */

/* A file name: not empty, no NUL byte. */
static int file_arg(const tw_endpoint_spec *spec, const tw_endpoint_arg *a, const char *what,
                    const char **out, tw_failure **failure)
{
    char q[TW_ENDPOINT_QUOTE_SIZE];
    if (a == NULL)
        return 0;
    if (a->value_len == 0)
        return GIVE(spec, "empty %s file name", what);
    if (has_nul(a))
        return GIVE(spec, "%s %s holds a NUL byte", what, QUOTE(q, a));
    *out = a->value;
    return 0;
}

static int validate_ssl(const tw_endpoint_spec *spec, void *arg, void **typed,
                        tw_release_fn *release, tw_failure **failure)
{
    (void)arg;
    /* Twisted's _parseSSL signature, in its order. */
    enum { PORT, INTERFACE, BACKLOG, KEY, CERT, METHOD, CHAIN, DH, N };
    static const char *const params[N] = {"port",    "interface", "backlog",        "privateKey",
                                          "certKey", "sslmethod", "extraCertChain", "dhParameters"};
    const tw_endpoint_arg *slot[N];
    int rc = tw_endpoint_bind_args(spec, params, N, N, slot, failure);
    if (rc < 0)
        return rc;
    tw_endpoint_ssl_server t = {0};
    if ((rc = tcp_server_fields(spec, &tcp4, slot[PORT], slot[INTERFACE], slot[BACKLOG], &t.tcp,
                                failure)) < 0)
        return rc;
    if (slot[METHOD])
        return GIVE(spec, "option 'sslmethod' is not supported (TLS 1.2 and 1.3 are offered)");
    if (slot[DH])
        return GIVE(spec, "option 'dhParameters' is not supported (ECDHE key exchange only)");
    if (slot[KEY] == NULL)
        return GIVE(spec, "missing privateKey");
    if ((rc = file_arg(spec, slot[KEY], "privateKey", &t.private_key, failure)) < 0 ||
        (rc = file_arg(spec, slot[CERT], "certKey", &t.cert_key, failure)) < 0 ||
        (rc = file_arg(spec, slot[CHAIN], "extraCertChain", &t.extra_cert_chain, failure)) < 0)
        return rc;
    if (t.cert_key == NULL)
        t.cert_key = t.private_key; /* Twisted's: one PEM with both */

    tw_endpoint_ssl_server *out = typed_new(sizeof *out, failure);
    if (out == NULL)
        return TW_ENOMEM;
    *out = t;
    *typed = out;
    *release = tw_free;
    return 0;
}

static int validate_tls(const tw_endpoint_spec *spec, void *arg, void **typed,
                        tw_release_fn *release, tw_failure **failure)
{
    (void)arg;
    /* tcp's first four (tcp_client_fields reads them there), then Twisted's. */
    enum { HOST, PORT, TIMEOUT, BIND, CERT, KEY, ROOTS, N };
    static const char *const params[N] = {"host",        "port",       "timeout",   "bindAddress",
                                          "certificate", "privateKey", "trustRoots"};
    const tw_endpoint_arg *slot[N];
    int rc = tw_endpoint_bind_args(spec, params, N, 2, slot, failure);
    if (rc < 0)
        return rc;
    tw_endpoint_tls_client t = {0};
    if ((rc = tcp_client_fields(spec, &tcp4, slot, &t.tcp, failure)) < 0)
        return rc;
    if ((rc = file_arg(spec, slot[ROOTS], "trustRoots", &t.trust_roots, failure)) < 0 ||
        (rc = file_arg(spec, slot[CERT], "certificate", &t.certificate, failure)) < 0 ||
        (rc = file_arg(spec, slot[KEY], "privateKey", &t.private_key, failure)) < 0)
        return rc;
    if (t.private_key && !t.certificate)
        return GIVE(spec, "privateKey given without certificate");
    if (t.certificate && !t.private_key)
        t.private_key = t.certificate;

    tw_endpoint_tls_client *out = typed_new(sizeof *out, failure);
    if (out == NULL)
        return TW_ENOMEM;
    *out = t;
    *typed = out;
    *release = tw_free;
    return 0;
}

/* ---- stdio (server): standard input and output, no arguments ("stdio:"
 * has one empty positional argument, accepted as none). */

static int validate_stdio(const tw_endpoint_spec *spec, void *arg, void **typed,
                          tw_release_fn *release, tw_failure **failure)
{
    (void)arg;
    char q[TW_ENDPOINT_QUOTE_SIZE];
    bool only_empty = spec->nargs == 1 && spec->args[0].key == NULL && spec->args[0].value_len == 0;
    if (spec->nargs > 0 && !only_empty) {
        const tw_endpoint_arg *a = &spec->args[0];
        if (a->key != NULL)
            return GIVE(spec, "unknown option %s (stdio takes no arguments)",
                        tw_endpoint_quote(q, sizeof q, a->key, a->key_len));
        return GIVE(spec, "unexpected argument %s (stdio takes no arguments)", QUOTE(q, a));
    }
    *typed = NULL;
    *release = NULL;
    return 0;
}

/* ---- The table */

const tw__endpoint_type tw__endpoint_builtin_types[] = {
    {"tcp", TW_ENDPOINT_SERVER | TW_ENDPOINT_CLIENT, TW_ENDPOINT_TCP, validate_tcp, (void *)&tcp4},
    {"tcp6", TW_ENDPOINT_SERVER | TW_ENDPOINT_CLIENT, TW_ENDPOINT_TCP6, validate_tcp,
     (void *)&tcp6},
    {"unix", TW_ENDPOINT_SERVER | TW_ENDPOINT_CLIENT, TW_ENDPOINT_UNIX, validate_unix, NULL},
    {"systemd", TW_ENDPOINT_SERVER, TW_ENDPOINT_SYSTEMD, validate_systemd, NULL},
    {"haproxy", TW_ENDPOINT_SERVER, TW_ENDPOINT_HAPROXY, validate_haproxy, NULL},
    {"ssl", TW_ENDPOINT_SERVER, TW_ENDPOINT_SSL, validate_ssl, NULL},
    {"tls", TW_ENDPOINT_CLIENT, TW_ENDPOINT_TLS, validate_tls, NULL},
    {"stdio", TW_ENDPOINT_SERVER, TW_ENDPOINT_STDIO, validate_stdio, NULL},
};
const size_t tw__endpoint_builtin_count = COUNT(tw__endpoint_builtin_types);

/* ---- Typed accessors */

static const void *typed_if(const tw_endpoint_spec *spec, tw_endpoint_role role, tw_endpoint_kind a,
                            tw_endpoint_kind b)
{
    if (spec == NULL || spec->role != role || (spec->kind != a && spec->kind != b))
        return NULL;
    return spec->typed;
}

const tw_endpoint_tcp_server *tw_endpoint_spec_tcp_server(const tw_endpoint_spec *spec)
{
    return typed_if(spec, TW_ENDPOINT_SERVER, TW_ENDPOINT_TCP, TW_ENDPOINT_TCP6);
}

const tw_endpoint_tcp_client *tw_endpoint_spec_tcp_client(const tw_endpoint_spec *spec)
{
    return typed_if(spec, TW_ENDPOINT_CLIENT, TW_ENDPOINT_TCP, TW_ENDPOINT_TCP6);
}

const tw_endpoint_unix_server *tw_endpoint_spec_unix_server(const tw_endpoint_spec *spec)
{
    return typed_if(spec, TW_ENDPOINT_SERVER, TW_ENDPOINT_UNIX, TW_ENDPOINT_UNIX);
}

const tw_endpoint_unix_client *tw_endpoint_spec_unix_client(const tw_endpoint_spec *spec)
{
    return typed_if(spec, TW_ENDPOINT_CLIENT, TW_ENDPOINT_UNIX, TW_ENDPOINT_UNIX);
}

const tw_endpoint_systemd *tw_endpoint_spec_systemd(const tw_endpoint_spec *spec)
{
    return typed_if(spec, TW_ENDPOINT_SERVER, TW_ENDPOINT_SYSTEMD, TW_ENDPOINT_SYSTEMD);
}

const tw_endpoint_ssl_server *tw_endpoint_spec_ssl_server(const tw_endpoint_spec *spec)
{
    return typed_if(spec, TW_ENDPOINT_SERVER, TW_ENDPOINT_SSL, TW_ENDPOINT_SSL);
}

const tw_endpoint_tls_client *tw_endpoint_spec_tls_client(const tw_endpoint_spec *spec)
{
    return typed_if(spec, TW_ENDPOINT_CLIENT, TW_ENDPOINT_TLS, TW_ENDPOINT_TLS);
}
