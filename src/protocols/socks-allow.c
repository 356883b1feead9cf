/* The SOCKS server's allow list (socks.h): networks, hosts, name suffixes
 * and port ranges. */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include <twine/endpoint.h>
#include <twine/error.h>
#include <twine/socks.h>

#include "socks-internal.h"

enum kind { R_ANY, R_V4, R_V6, R_NAME, R_SUFFIX };

struct rule {
    enum kind kind;
    unsigned bits; /* R_V4, R_V6: prefix length */
    uint8_t addr[16];
    uint16_t lo, hi; /* ports, inclusive */
    char *name;      /* R_NAME, R_SUFFIX: lowercase, no final dot */
    size_t name_len;
};

struct tw_socks_allow {
    struct rule *rules;
    size_t n, cap;
};

int tw_socks_allow_new(tw_socks_allow **out)
{
    if (!out)
        return TW_EINVAL;
    *out = tw_calloc(1, sizeof **out);
    return *out ? 0 : TW_ENOMEM;
}

void tw_socks_allow_free(tw_socks_allow *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < a->n; i++)
        tw_free(a->rules[i].name);
    tw_free(a->rules);
    tw_free(a);
}

size_t tw_socks_allow_count(const tw_socks_allow *a)
{
    return a ? a->n : 0;
}

bool tw__socks_host_name_ok(const char *s, size_t len)
{
    if (len > 0 && s[len - 1] == '.')
        len--;
    if (len == 0 || len > 253)
        return false;
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '.') {
            if (label == 0)
                return false;
            label = 0;
        } else if (isalnum(c) || c == '-' || c == '_') {
            if (++label > 63)
                return false;
        } else {
            return false;
        }
    }
    return label > 0;
}

/* Decimal digits only, within [min, max]. */
static bool parse_uint(const char *s, size_t len, unsigned long max, unsigned long *out)
{
    if (len == 0 || len > 10)
        return false;
    unsigned long v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (unsigned long)(s[i] - '0');
    }
    if (v > max)
        return false;
    *out = v;
    return true;
}

static bool parse_ports(const char *s, size_t len, struct rule *r)
{
    if (len == 1 && s[0] == '*') {
        r->lo = 1;
        r->hi = 65535;
        return true;
    }
    const char *dash = memchr(s, '-', len);
    unsigned long lo, hi;
    if (!dash) {
        if (!parse_uint(s, len, 65535, &lo))
            return false;
        hi = lo;
    } else if (!parse_uint(s, (size_t)(dash - s), 65535, &lo) ||
               !parse_uint(dash + 1, len - (size_t)(dash - s) - 1, 65535, &hi)) {
        return false;
    }
    if (lo == 0 || lo > hi)
        return false;
    r->lo = (uint16_t)lo;
    r->hi = (uint16_t)hi;
    return true;
}

static void mask_host_bits(uint8_t *addr, size_t size, unsigned bits)
{
    for (size_t i = 0; i < size; i++) {
        unsigned keep = bits >= 8 * (i + 1) ? 8 : bits > 8 * i ? bits - 8 * (unsigned)i : 0;
        addr[i] &= (uint8_t)(0xff00u >> keep);
    }
}

static int rule_error(tw_failure **failure, const char *rule, const char *fmt, const char *what)
{
    if (failure) {
        char q[TW_ENDPOINT_QUOTE_SIZE];
        tw_endpoint_quote(q, sizeof q, rule, strlen(rule));
        *failure = tw_failure_new(TW_EINVAL, NULL, "allow rule %s: %s%s", q, fmt, what);
    }
    return TW_EINVAL;
}

/* HOST: an address or network, a name, a *.suffix, or *. */
static int parse_host(const char *rule, const char *s, size_t len, struct rule *r,
                      tw_failure **failure)
{
    if (len == 1 && s[0] == '*') {
        r->kind = R_ANY;
        return 0;
    }
    char buf[256];
    if (len >= sizeof buf)
        return rule_error(failure, rule, "host too long", "");
    memcpy(buf, s, len);
    buf[len] = '\0';
    char *slash = strchr(buf, '/');
    if (slash)
        *slash = '\0';
    unsigned max_bits;
    if (inet_pton(AF_INET, buf, r->addr) == 1) {
        r->kind = R_V4;
        max_bits = 32;
    } else if (inet_pton(AF_INET6, buf, r->addr) == 1) {
        r->kind = R_V6;
        max_bits = 128;
    } else if (slash) {
        return rule_error(failure, rule, "a network must be an IP address with /bits", "");
    } else {
        bool suffix = len > 2 && buf[0] == '*' && buf[1] == '.';
        const char *name = suffix ? buf + 2 : buf;
        size_t nlen = strlen(name);
        if (!tw__socks_host_name_ok(name, nlen))
            return rule_error(failure, rule, "not an address, network or host name", "");
        if (name[nlen - 1] == '.')
            nlen--;
        r->kind = suffix ? R_SUFFIX : R_NAME;
        r->name = tw_malloc(nlen + 1);
        if (!r->name)
            return TW_ENOMEM;
        for (size_t i = 0; i < nlen; i++)
            r->name[i] = (char)tolower((unsigned char)name[i]);
        r->name[nlen] = '\0';
        r->name_len = nlen;
        return 0;
    }
    unsigned long bits = max_bits;
    if (slash) {
        const char *b = slash + 1;
        if (!parse_uint(b, strlen(b), 1000, &bits))
            return rule_error(failure, rule, "prefix length is not a number", "");
        if (bits > max_bits)
            return rule_error(failure, rule, "prefix length out of range ",
                              max_bits == 32 ? "(0-32)" : "(0-128)");
    }
    r->bits = (unsigned)bits;
    mask_host_bits(r->addr, max_bits / 8, r->bits);
    return 0;
}

int tw_socks_allow_add(tw_socks_allow *a, const char *rule, tw_failure **failure)
{
    if (failure)
        *failure = NULL;
    if (!a || !rule) {
        if (failure)
            *failure = tw_failure_new(TW_EINVAL, NULL, "no allow list or no rule");
        return TW_EINVAL;
    }
    size_t len = strlen(rule);
    if (len == 0)
        return rule_error(failure, rule, "empty rule", "");
    struct rule r = {.lo = 1, .hi = 65535};
    const char *host = rule, *ports = NULL;
    size_t host_len = len, ports_len = 0;
    if (rule[0] == '[') {
        const char *close = strchr(rule, ']');
        if (!close)
            return rule_error(failure, rule, "missing ']'", "");
        /* [v6] or [v6]/bits, then :ports */
        const char *after = close + 1;
        const char *colon = strchr(after, ':');
        size_t tail = colon ? (size_t)(colon - after) : strlen(after);
        if (tail > 0 && after[0] != '/')
            return rule_error(failure, rule, "unexpected text after ']'", "");
        char buf[256];
        size_t inner = (size_t)(close - rule - 1);
        if (inner + tail >= sizeof buf)
            return rule_error(failure, rule, "host too long", "");
        memcpy(buf, rule + 1, inner);
        memcpy(buf + inner, after, tail);
        buf[inner + tail] = '\0';
        uint8_t probe[16];
        char *slash = strchr(buf, '/');
        if (slash)
            *slash = '\0';
        bool v6 = inet_pton(AF_INET6, buf, probe) == 1;
        if (slash)
            *slash = '/';
        if (!v6)
            return rule_error(failure, rule, "brackets must hold an IPv6 address", "");
        if (colon) {
            ports = colon + 1;
            ports_len = strlen(ports);
        }
        int rc = parse_host(rule, buf, strlen(buf), &r, failure);
        if (rc < 0)
            return rc;
    } else {
        const char *first = strchr(rule, ':');
        const char *last = strrchr(rule, ':');
        if (first && first == last) { /* HOST:PORTS */
            host_len = (size_t)(first - rule);
            ports = first + 1;
            ports_len = strlen(ports);
        } /* else no colon, or a bare IPv6 address (or network) */
        if (host_len == 0)
            return rule_error(failure, rule, "missing host", "");
        int rc = parse_host(rule, host, host_len, &r, failure);
        if (rc < 0)
            return rc;
    }
    if (ports && !parse_ports(ports, ports_len, &r)) {
        tw_free(r.name);
        return rule_error(failure, rule, "ports must be N, N-M (1-65535, N <= M) or *", "");
    }
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 4;
        struct rule *grown = tw_realloc(a->rules, cap * sizeof *grown);
        if (!grown) {
            tw_free(r.name);
            return TW_ENOMEM;
        }
        a->rules = grown;
        a->cap = cap;
    }
    a->rules[a->n++] = r;
    return 0;
}

static bool prefix_match(const uint8_t *rule, const uint8_t *addr, unsigned bits)
{
    size_t full = bits / 8;
    if (memcmp(rule, addr, full) != 0)
        return false;
    unsigned rest = bits % 8;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xff00u >> rest);
    return (rule[full] & mask) == (addr[full] & mask);
}

static bool port_ok(const struct rule *r, unsigned port)
{
    return port >= r->lo && port <= r->hi;
}

bool tw_socks_allow_address(const tw_socks_allow *a, const tw_address *addr)
{
    if (!a || !addr || addr->len == 0)
        return false;
    uint8_t bytes[16];
    enum kind want;
    unsigned port = tw_address_port(addr);
    if (addr->u.sa.sa_family == AF_INET) {
        memcpy(bytes, &addr->u.in.sin_addr, 4);
        want = R_V4;
    } else if (addr->u.sa.sa_family == AF_INET6) {
        const uint8_t *b6 = addr->u.in6.sin6_addr.s6_addr;
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(b6, mapped, 12) == 0) {
            memcpy(bytes, b6 + 12, 4);
            want = R_V4;
        } else {
            memcpy(bytes, b6, 16);
            want = R_V6;
        }
    } else {
        return false;
    }
    if (port == 0)
        return false;
    for (size_t i = 0; i < a->n; i++) {
        const struct rule *r = &a->rules[i];
        if (!port_ok(r, port))
            continue;
        if (r->kind == R_ANY || (r->kind == want && prefix_match(r->addr, bytes, r->bits)))
            return true;
    }
    return false;
}

bool tw_socks_allow_name(const tw_socks_allow *a, const char *name, size_t name_len, unsigned port)
{
    if (!a || !name || name_len == 0 || name_len > TW_SOCKS_MAX_NAME || port == 0 || port > 65535 ||
        memchr(name, '\0', name_len))
        return false;
    char low[TW_SOCKS_MAX_NAME + 1];
    memcpy(low, name, name_len);
    low[name_len] = '\0';
    tw_address ip;
    if (tw_address_from_ip(&ip, low, port) == 0)
        return tw_socks_allow_address(a, &ip);
    if (low[name_len - 1] == '.')
        name_len--;
    for (size_t i = 0; i < name_len; i++)
        low[i] = (char)tolower((unsigned char)low[i]);
    for (size_t i = 0; i < a->n; i++) {
        const struct rule *r = &a->rules[i];
        if (!port_ok(r, port))
            continue;
        if (r->kind == R_ANY)
            return true;
        if (r->kind == R_NAME && r->name_len == name_len && memcmp(r->name, low, name_len) == 0)
            return true;
        if (r->kind == R_SUFFIX && name_len > r->name_len + 1 &&
            low[name_len - r->name_len - 1] == '.' &&
            memcmp(low + name_len - r->name_len, r->name, r->name_len) == 0)
            return true;
    }
    return false;
}
