/* The endpoint description parser: every built-in form, the tokenizer,
 * errors, the registry, formatting back, bounds, truncation, allocation
 * failure. */
#include "twtest.h"
#include <twine/endpoint.h>

#include <stdlib.h>
#include <string.h>

#define S TW_ENDPOINT_SERVER
#define C TW_ENDPOINT_CLIENT

/* ---- Helpers */

static tw_endpoint_spec *parse_ok_n(tw_endpoint_role role, const char *s, size_t len)
{
    tw_endpoint_spec *spec = (void *)1;
    tw_failure *f = NULL;
    int rc = tw_endpoint_parse_bytes(role, s, len, &spec, &f);
    cr_assert_eq(rc, 0, "parsing \"%s\" failed: %s", s, f ? tw_failure_message(f) : "?");
    cr_assert_null(f);
    cr_assert_not_null(spec);
    cr_assert_eq(spec->role, role);
    return spec;
}

static tw_endpoint_spec *parse_ok(tw_endpoint_role role, const char *s)
{
    return parse_ok_n(role, s, strlen(s));
}

/* Asserts that s is refused with TW_EINVAL and a message holding `needle`. */
static void parse_bad_n(tw_endpoint_role role, const char *s, size_t len, const char *needle)
{
    tw_endpoint_spec *spec = (void *)1;
    tw_failure *f = NULL;
    int rc = tw_endpoint_parse_bytes(role, s, len, &spec, &f);
    cr_assert_eq(rc, TW_EINVAL, "\"%s\": rc %d (%s)", s, rc, f ? tw_failure_message(f) : "");
    cr_assert_null(spec);
    cr_assert_not_null(f);
    cr_assert_eq(tw_failure_code(f), TW_EINVAL);
    cr_assert(strstr(tw_failure_message(f), needle), "\"%s\": message \"%s\" lacks \"%s\"", s,
              tw_failure_message(f), needle);
    tw_failure_unref(f);
}

static void parse_bad(tw_endpoint_role role, const char *s, const char *needle)
{
    parse_bad_n(role, s, strlen(s), needle);
}

static void assert_arg(const tw_endpoint_spec *spec, size_t i, const char *key, const char *value)
{
    cr_assert_lt(i, spec->nargs);
    const tw_endpoint_arg *a = &spec->args[i];
    if (key == NULL) {
        cr_assert_null(a->key, "arg %zu should be positional, has key '%s'", i, a->key);
    } else {
        cr_assert_not_null(a->key, "arg %zu should have key '%s'", i, key);
        cr_assert_str_eq(a->key, key);
        cr_assert_eq(a->key_len, strlen(key));
    }
    cr_assert_str_eq(a->value, value);
    cr_assert_eq(a->value_len, strlen(value));
}

/* A type that accepts anything: shows the tokenizer's work as is. */
static int raw_validations;
static int validate_raw(const tw_endpoint_spec *spec, void *arg, void **typed,
                        tw_release_fn *release, tw_failure **failure)
{
    raw_validations++;
    cr_assert_eq(arg, (void *)&raw_validations);
    cr_assert_null(spec->typed);
    return 0;
}

static void register_raw(void)
{
    cr_assert_eq(tw_endpoint_register_type("raw", S | C, validate_raw, &raw_validations), 0);
}

/* parse(format(spec)) == spec, and the canonical form is as expected. */
static void assert_round_trip(const tw_endpoint_spec *spec, const char *canonical)
{
    size_t len = 0;
    char *s = tw_endpoint_format(spec, &len);
    cr_assert_not_null(s);
    cr_assert_eq(s[len], '\0');
    if (canonical) {
        cr_assert_eq(len, strlen(canonical));
        cr_assert_str_eq(s, canonical);
    }
    tw_endpoint_spec *again = parse_ok_n(spec->role, s, len);
    cr_assert(tw_endpoint_spec_equal(spec, again), "\"%s\" does not parse back the same", s);
    tw_endpoint_spec_free(again);
    tw_free(s);
}

/* ---- tcp servers */

TW_TEST(endpoint_tcp, server_port_only_takes_defaults)
{
    tw_endpoint_spec *spec = parse_ok(S, "tcp:8080");
    cr_assert_eq(spec->kind, TW_ENDPOINT_TCP);
    cr_assert_str_eq(spec->type, "tcp");
    cr_assert_eq(spec->nargs, 1);
    assert_arg(spec, 0, NULL, "8080");
    const tw_endpoint_tcp_server *t = tw_endpoint_spec_tcp_server(spec);
    cr_assert_not_null(t);
    cr_assert_eq(t->port, 8080);
    cr_assert_str_eq(t->interface, "");
    cr_assert_eq(t->backlog, 50);
    cr_assert_eq(spec->typed, t);
    cr_assert_null(spec->inner);
    cr_assert_null(tw_endpoint_spec_tcp_client(spec));
    cr_assert_null(tw_endpoint_spec_unix_server(spec));
    tw_endpoint_spec_free(spec);
}

TW_TEST(endpoint_tcp, server_keywords_positional_and_mixed)
{
    const char *forms[] = {
        "tcp:port=8080:interface=127.0.0.1:backlog=7",
        "tcp:8080:127.0.0.1:7",
        "tcp:interface=127.0.0.1:8080:backlog=7",
        "tcp:backlog=7:8080:127.0.0.1",
    };
    for (size_t i = 0; i < sizeof forms / sizeof *forms; i++) {
        tw_endpoint_spec *spec = parse_ok(S, forms[i]);
        const tw_endpoint_tcp_server *t = tw_endpoint_spec_tcp_server(spec);
        cr_assert_eq(t->port, 8080, "%s", forms[i]);
        cr_assert_str_eq(t->interface, "127.0.0.1", "%s", forms[i]);
        cr_assert_eq(t->backlog, 7, "%s", forms[i]);
        tw_endpoint_spec_free(spec);
    }
}

TW_TEST(endpoint_tcp, server_port_bounds_and_ipv6_interface)
{
    tw_endpoint_spec *spec = parse_ok(S, "tcp:0:interface=\\:\\:1");
    const tw_endpoint_tcp_server *t = tw_endpoint_spec_tcp_server(spec);
    cr_assert_eq(t->port, 0);
    cr_assert_str_eq(t->interface, "::1");
    tw_endpoint_spec_free(spec);
    spec = parse_ok(S, "tcp:65535:backlog=0");
    t = tw_endpoint_spec_tcp_server(spec);
    cr_assert_eq(t->port, 65535);
    cr_assert_eq(t->backlog, 0);
    tw_endpoint_spec_free(spec);
    spec = parse_ok(S, "tcp:00080:backlog=2147483647"); /* leading zeros, as int() */
    t = tw_endpoint_spec_tcp_server(spec);
    cr_assert_eq(t->port, 80);
    cr_assert_eq(t->backlog, 2147483647);
    tw_endpoint_spec_free(spec);
}

TW_TEST(endpoint_tcp, type_is_case_insensitive)
{
    tw_endpoint_spec *spec = parse_ok(S, "TCP:80");
    cr_assert_str_eq(spec->type, "tcp");
    cr_assert_eq(spec->kind, TW_ENDPOINT_TCP);
    tw_endpoint_spec_free(spec);
    spec = parse_ok(C, "Unix:/x");
    cr_assert_str_eq(spec->type, "unix");
    tw_endpoint_spec_free(spec);
}

TW_TEST(endpoint_tcp, tcp6_server_defaults_and_twisted_positional_order)
{
    tw_endpoint_spec *spec = parse_ok(S, "tcp6:443");
    cr_assert_eq(spec->kind, TW_ENDPOINT_TCP6);
    const tw_endpoint_tcp_server *t = tw_endpoint_spec_tcp_server(spec);
    cr_assert_eq(t->port, 443);
    cr_assert_str_eq(t->interface, "::");
    cr_assert_eq(t->backlog, 50);
    tw_endpoint_spec_free(spec);

    spec = parse_ok(S, "tcp6:443:interface=\\:\\:1");
    t = tw_endpoint_spec_tcp_server(spec);
    cr_assert_str_eq(t->interface, "::1");
    assert_arg(spec, 1, "interface", "::1");
    tw_endpoint_spec_free(spec);

    /* tcp6's parser takes (port, backlog, interface) positionally. */
    spec = parse_ok(S, "tcp6:443:9:fe80\\:\\:1%eth0");
    t = tw_endpoint_spec_tcp_server(spec);
    cr_assert_eq(t->backlog, 9);
    cr_assert_str_eq(t->interface, "fe80::1%eth0");
    tw_endpoint_spec_free(spec);
}

TW_TEST(endpoint_tcp, server_errors_name_the_part)
{
    parse_bad(S, "tcp:70000", "tcp: port 70000 out of range (0-65535)");
    parse_bad(S, "tcp:99999999999999999999999999", "tcp: port 999999999999999999999999... out");
    parse_bad(S, "tcp:http", "tcp: port 'http' is not a number");
    parse_bad(S, "tcp:-1", "tcp: port '-1' is not a number");
    parse_bad(S, "tcp: 80", "tcp: port ' 80' is not a number");
    parse_bad(S, "tcp:", "tcp: port '' is not a number");
    parse_bad(S, "tcp:80:backlg=5", "tcp: unknown option 'backlg'");
    parse_bad(S, "tcp:interface=127.0.0.1", "tcp: missing port");
    parse_bad(S, "tcp", "tcp: missing port");
    parse_bad(S, "tcp:port=80:port=81", "tcp: option 'port' given twice");
    parse_bad(S, "tcp:80:port=81", "tcp: option 'port' given twice");
    parse_bad(S, "tcp:80:127.0.0.1:5:x", "tcp: too many positional arguments (at most 3)");
    parse_bad(S, "tcp:80:backlog=-1", "tcp: backlog '-1' is not a number");
    parse_bad(S, "tcp:80:backlog=2147483648", "tcp: backlog 2147483648 out of range");
    parse_bad(S, "tcp:80:interface=localhost", "tcp: interface 'localhost' is not an IP address");
    parse_bad(S, "tcp6:80:interface=127.0.0.1",
              "tcp6: interface '127.0.0.1' is not an IPv6 address");
    parse_bad(S, "tcp6:80:interface=fe80\\:\\:1%", "tcp6: interface 'fe80::1%' is not");
    parse_bad(S, "tcp6:80:interface=fe80\\:\\:1%a/b", "tcp6: interface 'fe80::1%a/b' is not");
    parse_bad(S, "tpc:80", "unknown endpoint type 'tpc'");
}

/* ---- tcp clients */

TW_TEST(endpoint_tcp, client_forms)
{
    const char *forms[] = {
        "tcp:example.com:80",      "tcp:host=example.com:port=80", "tcp:port=80:host=example.com",
        "tcp:host=example.com:80", /* one positional with host=: the port (Twisted) */
        "tcp:80:host=example.com", "tcp:example.com:port=80",
    };
    for (size_t i = 0; i < sizeof forms / sizeof *forms; i++) {
        tw_endpoint_spec *spec = parse_ok(C, forms[i]);
        cr_assert_eq(spec->kind, TW_ENDPOINT_TCP);
        const tw_endpoint_tcp_client *t = tw_endpoint_spec_tcp_client(spec);
        cr_assert_not_null(t);
        cr_assert_str_eq(t->host, "example.com", "%s", forms[i]);
        cr_assert_eq(t->port, 80, "%s", forms[i]);
        cr_assert_eq(t->timeout, 30.0);
        cr_assert_null(t->bind_address);
        cr_assert_null(tw_endpoint_spec_tcp_server(spec));
        tw_endpoint_spec_free(spec);
    }
}

TW_TEST(endpoint_tcp, client_options)
{
    tw_endpoint_spec *spec =
        parse_ok(C, "tcp:host=\\:\\:1:port=8443:timeout=2.5:bindAddress=\\:\\:1");
    const tw_endpoint_tcp_client *t = tw_endpoint_spec_tcp_client(spec);
    cr_assert_str_eq(t->host, "::1");
    cr_assert_eq(t->port, 8443);
    cr_assert_eq(t->timeout, 2.5);
    cr_assert_str_eq(t->bind_address, "::1");
    tw_endpoint_spec_free(spec);

    spec = parse_ok(C, "tcp:10.0.0.1:1:timeout=007:bindAddress=10.0.0.2");
    t = tw_endpoint_spec_tcp_client(spec);
    cr_assert_str_eq(t->host, "10.0.0.1");
    cr_assert_eq(t->port, 1);
    cr_assert_eq(t->timeout, 7.0);
    cr_assert_str_eq(t->bind_address, "10.0.0.2");
    tw_endpoint_spec_free(spec);

    spec = parse_ok(C, "tcp6:ip6.example.:443:timeout=0.001");
    cr_assert_eq(spec->kind, TW_ENDPOINT_TCP6);
    t = tw_endpoint_spec_tcp_client(spec);
    cr_assert_str_eq(t->host, "ip6.example.");
    cr_assert_eq(t->timeout, 0.001);
    tw_endpoint_spec_free(spec);
}

TW_TEST(endpoint_tcp, client_errors_name_the_part)
{
    parse_bad(C, "tcp:example.com", "tcp: missing port");
    parse_bad(C, "tcp:port=80", "tcp: missing host");
    parse_bad(C, "tcp", "tcp: missing host");
    parse_bad(C, "tcp:h:0", "tcp: port 0 out of range (1-65535)");
    parse_bad(C, "tcp:h:65536", "tcp: port 65536 out of range (1-65535)");
    parse_bad(C, "tcp:h:http", "tcp: port 'http' is not a number");
    parse_bad(C, "tcp:h:80:x", "tcp: too many positional arguments (at most 2)");
    parse_bad(C, "tcp:h:80:host=g", "tcp: option 'host' given twice");
    parse_bad(C, "tcp:h:80:timeout=0", "tcp: timeout '0' must be more than 0 seconds");
    parse_bad(C, "tcp:h:80:timeout=abc", "tcp: timeout 'abc' is not a number of seconds");
    parse_bad(C, "tcp:h:80:timeout=1.", "tcp: timeout '1.' is not a number of seconds");
    parse_bad(C, "tcp:h:80:timeout=.5", "tcp: timeout '.5' is not a number of seconds");
    parse_bad(C, "tcp:h:80:timeout=1e3", "tcp: timeout '1e3' is not a number of seconds");
    parse_bad(C, "tcp:h:80:timeout=1000000001", "tcp: timeout '1000000001' out of range");
    parse_bad(C, "tcp:bad host:80", "tcp: host 'bad host' is not a host name or IP address");
    parse_bad(C, "tcp:a..b:80", "tcp: host 'a..b' is not");
    parse_bad(C, "tcp:.:80", "tcp: host '.' is not");
    parse_bad(C, "tcp6:127.0.0.1:80", "tcp6: host '127.0.0.1' is an IPv4 address");
    parse_bad(C, "tcp:h:80:bindAddress=nope", "tcp: bindAddress 'nope' is not an IP address");
    parse_bad(C, "tcp6:h:80:bindAddress=10.0.0.1",
              "tcp6: bindAddress '10.0.0.1' is not an IPv6 address");
    parse_bad(C, "tcp:h:80:interface=x", "tcp: unknown option 'interface'");

    char label[80];
    memset(label, 'a', 64);
    strcpy(label + 64, ":80");
    char desc[100] = "tcp:";
    strcat(desc, label);
    parse_bad(C, desc, "is not a host name"); /* a 64-byte label */
    label[63] = '\0';
    strcpy(desc, "tcp:");
    strcat(desc, label);
    strcat(desc, ".com:80");
    tw_endpoint_spec_free(parse_ok(C, desc)); /* 63 is fine */
}

/* ---- unix */

TW_TEST(endpoint_unix, server_defaults_and_escaped_path)
{
    tw_endpoint_spec *spec = parse_ok(S, "unix:/run/app\\:1.sock");
    cr_assert_eq(spec->kind, TW_ENDPOINT_UNIX);
    assert_arg(spec, 0, NULL, "/run/app:1.sock");
    const tw_endpoint_unix_server *u = tw_endpoint_spec_unix_server(spec);
    cr_assert_not_null(u);
    cr_assert_str_eq(u->path, "/run/app:1.sock");
    cr_assert_eq(u->path_len, 15);
    cr_assert(!u->abstract);
    cr_assert_eq(u->mode, 0666);
    cr_assert_eq(u->backlog, 50);
    cr_assert(u->lockfile);
    cr_assert_null(tw_endpoint_spec_unix_client(spec));
    tw_endpoint_spec_free(spec);
}

TW_TEST(endpoint_unix, server_keywords_and_positional)
{
    const char *forms[] = {
        "unix:address=/tmp/s:mode=600:backlog=3:lockfile=0",
        "unix:/tmp/s:600:3:0",
        "unix:lockfile=0:/tmp/s:0600:backlog=3",
    };
    for (size_t i = 0; i < sizeof forms / sizeof *forms; i++) {
        tw_endpoint_spec *spec = parse_ok(S, forms[i]);
        const tw_endpoint_unix_server *u = tw_endpoint_spec_unix_server(spec);
        cr_assert_str_eq(u->path, "/tmp/s", "%s", forms[i]);
        cr_assert_eq(u->mode, 0600, "%s", forms[i]);
        cr_assert_eq(u->backlog, 3);
        cr_assert(!u->lockfile);
        tw_endpoint_spec_free(spec);
    }
}

TW_TEST(endpoint_unix, abstract_namespace)
{
    tw_endpoint_spec *spec = parse_ok(S, "unix:@twine\\:test");
    const tw_endpoint_unix_server *u = tw_endpoint_spec_unix_server(spec);
    cr_assert(u->abstract);
    cr_assert_eq(u->path_len, 11);
    cr_assert_eq(memcmp(u->path, "@twine:test", 11), 0);
    tw_endpoint_spec_free(spec);

    static const char nul[] = "unix:\0name\0x";
    spec = parse_ok_n(C, nul, sizeof nul - 1);
    const tw_endpoint_unix_client *c = tw_endpoint_spec_unix_client(spec);
    cr_assert(c->abstract);
    cr_assert_eq(c->path_len, 7);
    cr_assert_eq(memcmp(c->path, "\0name\0x", 7), 0);
    assert_round_trip(spec, NULL);
    tw_endpoint_spec_free(spec);

    char big[200] = "unix:@";
    memset(big + 6, 'n', 107);
    tw_endpoint_spec_free(parse_ok(S, big)); /* 107 bytes of name */
    big[6 + 107] = 'n';
    parse_bad(S, big, "unix: abstract socket name too long (108 bytes, at most 107)");
}

TW_TEST(endpoint_unix, client_forms)
{
    tw_endpoint_spec *spec = parse_ok(C, "unix:/var/run/x.sock");
    const tw_endpoint_unix_client *u = tw_endpoint_spec_unix_client(spec);
    cr_assert_str_eq(u->path, "/var/run/x.sock");
    cr_assert_eq(u->timeout, 30.0);
    cr_assert(!u->check_pid);
    cr_assert(!u->abstract);
    tw_endpoint_spec_free(spec);

    spec = parse_ok(C, "unix:path=/x:timeout=5:checkPID=1");
    u = tw_endpoint_spec_unix_client(spec);
    cr_assert_str_eq(u->path, "/x");
    cr_assert_eq(u->timeout, 5.0);
    cr_assert(u->check_pid);
    tw_endpoint_spec_free(spec);

    spec = parse_ok(C, "unix:/x:lockfile=1"); /* Twisted's spelling of checkPID */
    cr_assert(tw_endpoint_spec_unix_client(spec)->check_pid);
    tw_endpoint_spec_free(spec);
}

TW_TEST(endpoint_unix, errors_name_the_part)
{
    parse_bad(S, "unix:/x:mode=0999", "unix: mode '0999' is not octal");
    parse_bad(S, "unix:/x:mode=", "unix: mode '' is not octal");
    parse_bad(S, "unix:/x:mode=77777", "unix: mode '77777' out of range (0-07777)");
    parse_bad(S, "unix:/x:lockfile=yes", "unix: lockfile 'yes' is not 0 or 1");
    parse_bad(S, "unix:/x:lockfile=2", "unix: lockfile '2' is not 0 or 1");
    parse_bad(S, "unix:", "unix: empty path");
    parse_bad(S, "unix:@", "unix: empty abstract socket name '@'");
    parse_bad(S, "unix:mode=600", "unix: missing path (positional or address=)");
    parse_bad(S, "unix:path=/x", "unix: unknown option 'path'");
    parse_bad(S, "unix:/x:600:5:1:extra", "unix: too many positional arguments (at most 4)");
    parse_bad(C, "unix:/a:/b", "unix: too many positional arguments (at most 1)");
    parse_bad(C, "unix:timeout=1", "unix: missing path (positional or path=)");
    parse_bad(C, "unix:/x:checkPID=1:lockfile=1", "unix: options 'checkPID' and 'lockfile'");
    parse_bad(C, "unix:/x:checkPID=true", "unix: checkPID 'true' is not 0 or 1");
    parse_bad(C, "unix:/x:timeout=-1", "unix: timeout '-1' is not a number of seconds");
    parse_bad(C, "unix:/x:mode=600", "unix: unknown option 'mode'");
    parse_bad_n(S, "unix:/a\0b", 9, "unix: path '/a\\x00b' holds a NUL byte");

    char big[200] = "unix:/";
    memset(big + 6, 'p', 106);
    tw_endpoint_spec_free(parse_ok(S, big)); /* 107 bytes */
    big[6 + 106] = 'p';
    parse_bad(S, big, "unix: path too long (108 bytes, at most 107)");
}

/* ---- systemd */

TW_TEST(endpoint_systemd, forms_and_errors)
{
    tw_endpoint_spec *spec = parse_ok(S, "systemd:domain=INET:index=0");
    cr_assert_eq(spec->kind, TW_ENDPOINT_SYSTEMD);
    const tw_endpoint_systemd *d = tw_endpoint_spec_systemd(spec);
    cr_assert_eq(d->domain, TW_ENDPOINT_DOMAIN_INET);
    cr_assert_eq(d->index, 0);
    tw_endpoint_spec_free(spec);
    spec = parse_ok(S, "systemd:INET6:3");
    d = tw_endpoint_spec_systemd(spec);
    cr_assert_eq(d->domain, TW_ENDPOINT_DOMAIN_INET6);
    cr_assert_eq(d->index, 3);
    tw_endpoint_spec_free(spec);
    spec = parse_ok(S, "systemd:index=65535:domain=UNIX");
    d = tw_endpoint_spec_systemd(spec);
    cr_assert_eq(d->domain, TW_ENDPOINT_DOMAIN_UNIX);
    cr_assert_eq(d->index, 65535);
    tw_endpoint_spec_free(spec);

    parse_bad(S, "systemd:domain=inet:index=0",
              "systemd: domain 'inet' is not INET, INET6 or UNIX");
    parse_bad(S, "systemd:index=0", "systemd: missing domain");
    parse_bad(S, "systemd:domain=INET", "systemd: missing index");
    parse_bad(S, "systemd:domain=INET:index=x", "systemd: index 'x' is not a number");
    parse_bad(S, "systemd:domain=INET:index=65536", "systemd: index 65536 out of range");
    parse_bad(S, "systemd:domain=INET:index=0:name=web", "systemd: unknown option 'name'");
    parse_bad(C, "systemd:domain=INET:index=0", "systemd: not a client endpoint type");
}

/* ---- haproxy */

TW_TEST(endpoint_haproxy, wraps_any_server_description)
{
    tw_endpoint_spec *spec = parse_ok(S, "haproxy:tcp:80:interface=\\:\\:1");
    cr_assert_eq(spec->kind, TW_ENDPOINT_HAPROXY);
    cr_assert_str_eq(spec->type, "haproxy");
    cr_assert_eq(spec->nargs, 3);
    assert_arg(spec, 0, NULL, "tcp");
    const tw_endpoint_spec *in = spec->inner;
    cr_assert_not_null(in);
    cr_assert_eq(in->role, S);
    cr_assert_eq(in->kind, TW_ENDPOINT_TCP);
    cr_assert_eq(in->nargs, 2);
    assert_arg(in, 1, "interface", "::1");
    const tw_endpoint_tcp_server *t = tw_endpoint_spec_tcp_server(in);
    cr_assert_eq(t->port, 80);
    cr_assert_str_eq(t->interface, "::1");
    cr_assert_null(tw_endpoint_spec_tcp_server(spec));
    assert_round_trip(spec, "haproxy:tcp:80:interface=\\:\\:1");
    tw_endpoint_spec_free(spec);

    spec = parse_ok(S, "haproxy:UNIX:/run/a\\:b");
    cr_assert_str_eq(tw_endpoint_spec_unix_server(spec->inner)->path, "/run/a:b");
    tw_endpoint_spec_free(spec);
    spec = parse_ok(S, "haproxy:systemd:domain=INET6:index=2");
    cr_assert_eq(tw_endpoint_spec_systemd(spec->inner)->index, 2);
    tw_endpoint_spec_free(spec);
}

TW_TEST(endpoint_haproxy, errors)
{
    parse_bad(S, "haproxy:haproxy:tcp:80", "haproxy: cannot wrap another haproxy endpoint");
    parse_bad(S, "haproxy:HAProxy:tcp:80", "haproxy: cannot wrap another haproxy endpoint");
    parse_bad(S, "haproxy", "haproxy: missing wrapped endpoint description");
    parse_bad(S, "haproxy:", "haproxy: missing wrapped endpoint description");
    parse_bad(S, "haproxy:port=80:tcp", "haproxy: missing wrapped endpoint type (the first");
    parse_bad(S, "haproxy:tcp", "haproxy: tcp: missing port");
    parse_bad(S, "haproxy:tcp:80:port=1", "haproxy: tcp: option 'port' given twice");
    parse_bad(S, "haproxy:tpc:80", "haproxy: unknown endpoint type 'tpc'");
    parse_bad(C, "haproxy:tcp:h:80", "haproxy: not a client endpoint type");
}

/* ---- The tokenizer, seen through a type that accepts anything */

TW_TEST(endpoint_syntax, fields_keys_and_escapes)
{
    register_raw();
    tw_endpoint_spec *spec = parse_ok(S, "raw:a:k=v:b");
    cr_assert_eq(spec->kind, TW_ENDPOINT_REGISTERED);
    cr_assert_eq(spec->nargs, 3);
    assert_arg(spec, 0, NULL, "a");
    assert_arg(spec, 1, "k", "v");
    assert_arg(spec, 2, NULL, "b");
    cr_assert_eq(tw_endpoint_spec_get(spec, "k"), &spec->args[1]);
    cr_assert_null(tw_endpoint_spec_get(spec, "a"));
    cr_assert_null(tw_endpoint_spec_get(spec, "K"));
    tw_endpoint_spec_free(spec);

    struct {
        const char *in;
        const char *key, *value; /* the single argument */
    } cases[] = {
        {"raw:k=v=w", "k", "v=w"},    /* split at the first '=' */
        {"raw:k\\=x=v", "k=x", "v"},  /* escaped '=' in a key */
        {"raw:a\\=b", NULL, "a=b"},   /* escaped '=': positional */
        {"raw:\\:\\:1", NULL, "::1"}, /* escaped ':' */
        {"raw:\\\\", NULL, "\\"},     /* escaped backslash */
        {"raw:\\a\\b", NULL, "ab"},   /* any byte may be escaped */
        {"raw:=v", "", "v"},          /* empty key */
        {"raw:k=", "k", ""},          /* empty value */
        {"raw:", NULL, ""},           /* empty positional */
        {"raw:k=a\\:b=c", "k", "a:b=c"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        spec = parse_ok(C, cases[i].in);
        cr_assert_eq(spec->nargs, 1, "%s", cases[i].in);
        assert_arg(spec, 0, cases[i].key, cases[i].value);
        tw_endpoint_spec_free(spec);
    }

    spec = parse_ok(S, "raw");
    cr_assert_eq(spec->nargs, 0);
    tw_endpoint_spec_free(spec);
    spec = parse_ok(S, "raw::");
    cr_assert_eq(spec->nargs, 2);
    assert_arg(spec, 0, NULL, "");
    assert_arg(spec, 1, NULL, "");
    tw_endpoint_spec_free(spec);
    spec = parse_ok(S, "r\\aw:x"); /* the type is unescaped too */
    cr_assert_str_eq(spec->type, "raw");
    tw_endpoint_spec_free(spec);
    cr_assert_eq(raw_validations, 14);
}

TW_TEST(endpoint_syntax, generic_errors)
{
    register_raw();
    parse_bad(S, "", "empty endpoint description");
    parse_bad(C, "", "empty endpoint description");
    parse_bad(S, "tcp:80\\", "unterminated escape at the end of the endpoint description");
    parse_bad(S, "raw:\\\\\\", "unterminated escape");
    parse_bad(S, "\\", "unterminated escape");
    parse_bad(S, ":80", "missing endpoint type");
    parse_bad(S, "port=80:tcp", "missing endpoint type (the first field is the option 'port')");
    parse_bad(S, "raw:k=1:k=2", "raw: option 'k' given twice");
    parse_bad(S, "tpc\x01:80", "unknown endpoint type 'tpc\\x01'");
    parse_bad(S, "t\xc3\xa9:80", "unknown endpoint type 't\\xc3\\xa9'");
    char long_type[120];
    memset(long_type, 'x', 100);
    long_type[100] = '\0';
    char want[120] = "unknown endpoint type '";
    memset(want + 23, 'x', 64);
    strcpy(want + 23 + 64, "'...");
    parse_bad(S, long_type, want);
    /* Values shown in messages are printable and bounded. */
    tw_endpoint_spec *spec = NULL;
    tw_failure *f = NULL;
    cr_assert_eq(tw_endpoint_parse_bytes(S, "tcp:\n\r\x7f", 7, &spec, &f), TW_EINVAL);
    cr_assert_str_eq(tw_failure_message(f), "tcp: port '\\x0a\\x0d\\x7f' is not a number");
    tw_failure_unref(f);
}

TW_TEST(endpoint_syntax, unescaped_ipv6_gets_a_hint)
{
    const char *hint = "(a ':' inside a value is written '\\:', as in \\:\\:1)";
    parse_bad(S, "tcp:80:interface=::1", "tcp: option 'interface' given twice (a ':' inside");
    parse_bad(S, "tcp:80:interface=::1", hint);
    parse_bad(C, "tcp:host=::1:port=80", "tcp: option 'host' given twice (a ':'");
    parse_bad(C, "tcp:::1:80", "tcp: too many positional arguments (at most 2) (a ':'");
    /* Once only, through haproxy. */
    tw_endpoint_spec *spec = NULL;
    tw_failure *f = NULL;
    cr_assert_eq(tw_endpoint_parse(S, "haproxy:tcp:80:interface=::1", &spec, &f), TW_EINVAL);
    const char *m = tw_failure_message(f);
    cr_assert(strstr(m, "haproxy: tcp: option 'interface' given twice"));
    cr_assert_eq(strstr(m, hint), strrchr(m, '(')); /* the only hint is the last bracket */
    tw_failure_unref(f);
    /* Not given where nothing looks unescaped. */
    cr_assert_eq(tw_endpoint_parse(S, "tcp:80:port=1", &spec, &f), TW_EINVAL);
    cr_assert_null(strstr(tw_failure_message(f), "inside a value"));
    tw_failure_unref(f);
}

TW_TEST(endpoint_syntax, quote_is_printable_and_bounded)
{
    char buf[TW_ENDPOINT_QUOTE_SIZE];
    cr_assert_str_eq(tw_endpoint_quote(buf, sizeof buf, "a\0b\xff'\\", 6), "'a\\x00b\\xff'\\'");
    char all[300];
    memset(all, 0x01, sizeof all);
    const char *q = tw_endpoint_quote(buf, sizeof buf, all, sizeof all);
    cr_assert_eq(strlen(q), sizeof buf - 1); /* 64 bytes as \x01, quotes, "..." */
    cr_assert_eq(strcmp(q + strlen(q) - 4, "'..."), 0);
    char small[5] = "zzzz";
    cr_assert_str_eq(tw_endpoint_quote(small, sizeof small, "abcdef", 6), "'abc");
    cr_assert_str_eq(tw_endpoint_quote(small, 0, "x", 1), "'abc"); /* size 0: untouched */
}

TW_TEST(endpoint_syntax, bad_calls)
{
    tw_endpoint_spec *spec = (void *)1;
    tw_failure *f = NULL;
    cr_assert_eq(tw_endpoint_parse(S | C, "tcp:80", &spec, &f), TW_EINVAL);
    cr_assert_null(spec);
    cr_assert(strstr(tw_failure_message(f), "neither server nor client"));
    tw_failure_unref(f);
    cr_assert_eq(tw_endpoint_parse(S, NULL, &spec, &f), TW_EINVAL);
    cr_assert(strstr(tw_failure_message(f), "missing endpoint description"));
    tw_failure_unref(f);
    f = (void *)1;
    cr_assert_eq(tw_endpoint_parse(S, "tcp:80", NULL, &f), TW_EINVAL);
    cr_assert_null(f);
    /* No failure wanted: the code alone. */
    cr_assert_eq(tw_endpoint_parse(S, "tcp:x", &spec, NULL), TW_EINVAL);
    cr_assert_null(spec);
    tw_endpoint_spec_free(NULL);
    cr_assert_null(tw_endpoint_format(NULL, NULL));
    cr_assert(tw_endpoint_spec_equal(NULL, NULL));
}

/* ---- Bounds */

TW_TEST(endpoint_syntax, length_bound)
{
    register_raw();
    char *s = malloc(TW_ENDPOINT_MAX_LENGTH + 100);
    memcpy(s, "raw:", 4);
    memset(s + 4, 'a', TW_ENDPOINT_MAX_LENGTH - 4);
    s[TW_ENDPOINT_MAX_LENGTH] = '\0';
    tw_endpoint_spec *spec = parse_ok(S, s);
    cr_assert_eq(spec->args[0].value_len, TW_ENDPOINT_MAX_LENGTH - 4);
    tw_endpoint_spec_free(spec);
    s[TW_ENDPOINT_MAX_LENGTH] = 'a';
    s[TW_ENDPOINT_MAX_LENGTH + 1] = '\0';
    parse_bad(S, s, "endpoint description too long (more than 4096 bytes)");
    memset(s, 'a', TW_ENDPOINT_MAX_LENGTH + 99); /* also well past the bound */
    s[TW_ENDPOINT_MAX_LENGTH + 99] = '\0';
    parse_bad(C, s, "too long");
    free(s);
}

TW_TEST(endpoint_syntax, field_bound)
{
    register_raw();
    char s[4 + 2 * TW_ENDPOINT_MAX_FIELDS + 8] = "raw";
    for (int i = 1; i < TW_ENDPOINT_MAX_FIELDS; i++)
        strcat(s, ":x");
    tw_endpoint_spec *spec = parse_ok(S, s); /* 64 fields, the type included */
    cr_assert_eq(spec->nargs, TW_ENDPOINT_MAX_FIELDS - 1);
    tw_endpoint_spec_free(spec);
    strcat(s, ":");
    parse_bad(S, s, "too many fields in the endpoint description (at most 64)");
}

/* ---- The registry */

static int releases;
static void release_counted(void *p)
{
    releases++;
    free(p);
}

/* A registered type shaped like ssl (built in now): one positional port, a key file. */
static int validate_ssl(const tw_endpoint_spec *spec, void *arg, void **typed,
                        tw_release_fn *release, tw_failure **failure)
{
    static const char *const params[] = {"port", "privateKey"};
    const tw_endpoint_arg *slot[2];
    int rc = tw_endpoint_bind_args(spec, params, 2, 1, slot, failure);
    if (rc < 0)
        return rc;
    if (slot[1] == NULL) {
        *failure = tw_endpoint_fail(spec, "missing privateKey");
        return TW_EINVAL;
    }
    unsigned long *port = malloc(sizeof *port);
    *port = 443;
    if (slot[0] && (rc = tw_endpoint_arg_uint(spec, slot[0], "port", 0, 65535, port, failure))) {
        free(port);
        return rc;
    }
    *typed = port;
    *release = release_counted;
    return 0;
}

static int validate_fails_bare(const tw_endpoint_spec *spec, void *arg, void **typed,
                               tw_release_fn *release, tw_failure **failure)
{
    return TW_ENOSYS; /* and no failure: the parser makes one */
}

TW_TEST(endpoint_registry, register_parse_and_release)
{
    cr_assert_eq(tw_endpoint_register_type("xssl", S, validate_ssl, NULL), 0);
    tw_endpoint_spec *spec = parse_ok(S, "XSSL:8443:privateKey=/etc/k\\:ey.pem");
    cr_assert_eq(spec->kind, TW_ENDPOINT_REGISTERED);
    cr_assert_str_eq(spec->type, "xssl");
    cr_assert_eq(*(const unsigned long *)spec->typed, 8443);
    assert_arg(spec, 1, "privateKey", "/etc/k:ey.pem");
    assert_round_trip(spec, "xssl:8443:privateKey=/etc/k\\:ey.pem");
    tw_endpoint_spec_free(spec);
    cr_assert_eq(releases, 2); /* the spec and its round-tripped twin */

    parse_bad(S, "xssl:443", "xssl: missing privateKey");
    parse_bad(S, "xssl:99999:privateKey=k", "xssl: port 99999 out of range");
    parse_bad(S, "xssl:1:2:privateKey=k", "xssl: too many positional arguments (at most 1)");
    parse_bad(C, "xssl:h:443", "xssl: not a client endpoint type");
    cr_assert_eq(releases, 2);

    /* Wrapped by haproxy, as any server type. */
    spec = parse_ok(S, "haproxy:xssl:privateKey=k");
    cr_assert_eq(*(const unsigned long *)spec->inner->typed, 443);
    tw_endpoint_spec_free(spec);
    cr_assert_eq(releases, 3);
}

TW_TEST(endpoint_registry, duplicates_and_bad_names)
{
    cr_assert_eq(tw_endpoint_register_type("xssl", S, validate_ssl, NULL), 0);
    cr_assert_eq(tw_endpoint_register_type("xssl", S, validate_ssl, NULL), TW_EEXIST);
    cr_assert_eq(tw_endpoint_register_type("XSSL", S | C, validate_ssl, NULL), TW_EEXIST);
    cr_assert_eq(tw_endpoint_register_type("xssl", C, validate_fails_bare, NULL), 0);
    cr_assert_eq(tw_endpoint_register_type("xssl", C, validate_ssl, NULL), TW_EEXIST);
    cr_assert_eq(tw_endpoint_register_type("tcp", S, validate_ssl, NULL), TW_EEXIST);
    cr_assert_eq(tw_endpoint_register_type("Haproxy", C, validate_ssl, NULL), 0);
    cr_assert_eq(tw_endpoint_register_type("systemd", S, validate_ssl, NULL), TW_EEXIST);

    cr_assert_eq(tw_endpoint_register_type("", S, validate_ssl, NULL), TW_EINVAL);
    cr_assert_eq(tw_endpoint_register_type(NULL, S, validate_ssl, NULL), TW_EINVAL);
    cr_assert_eq(tw_endpoint_register_type("1x", S, validate_ssl, NULL), TW_EINVAL);
    cr_assert_eq(tw_endpoint_register_type("a:b", S, validate_ssl, NULL), TW_EINVAL);
    cr_assert_eq(tw_endpoint_register_type("a=b", S, validate_ssl, NULL), TW_EINVAL);
    cr_assert_eq(tw_endpoint_register_type("ok", 0, validate_ssl, NULL), TW_EINVAL);
    cr_assert_eq(tw_endpoint_register_type("ok", 4, validate_ssl, NULL), TW_EINVAL);
    cr_assert_eq(tw_endpoint_register_type("ok", S, NULL, NULL), TW_EINVAL);
    char name[TW_ENDPOINT_MAX_TYPE + 2];
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    cr_assert_eq(tw_endpoint_register_type(name, S, validate_ssl, NULL), TW_EINVAL);
    name[TW_ENDPOINT_MAX_TYPE] = '\0';
    cr_assert_eq(tw_endpoint_register_type(name, S, validate_ssl, NULL), 0);
    cr_assert_eq(tw_endpoint_register_type("x+y.z-w_1", S, validate_ssl, NULL), 0);

    /* The client "xssl" fails with no failure of its own: one is made. */
    tw_endpoint_spec *spec = NULL;
    tw_failure *f = NULL;
    cr_assert_eq(tw_endpoint_parse(C, "xssl:x", &spec, &f), TW_ENOSYS);
    cr_assert_eq(tw_failure_code(f), TW_ENOSYS);
    cr_assert(strstr(tw_failure_message(f), "xssl: invalid description"));
    tw_failure_unref(f);
    /* A client "haproxy" is a separate, registered type. */
    spec = parse_ok(C, "haproxy:privateKey=k");
    cr_assert_eq(spec->kind, TW_ENDPOINT_REGISTERED);
    tw_endpoint_spec_free(spec);
}

TW_TEST(endpoint_registry, many_types)
{
    char name[16];
    for (int i = 0; i < 40; i++) {
        snprintf(name, sizeof name, "t%d", i);
        cr_assert_eq(tw_endpoint_register_type(name, S | C, validate_raw, &raw_validations), 0);
    }
    tw_endpoint_spec *first = parse_ok(S, "t0:x");
    tw_endpoint_spec *last = parse_ok(C, "T39:x");
    cr_assert_str_eq(first->type, "t0");
    cr_assert_str_eq(last->type, "t39");
    tw_endpoint_spec_free(first);
    tw_endpoint_spec_free(last);
}

/* ---- Formatting back */

TW_TEST(endpoint_format, canonical_and_round_trip)
{
    register_raw();
    struct {
        tw_endpoint_role role;
        const char *in, *out;
    } cases[] = {
        {S, "tcp:80", "tcp:80"},
        {S, "TCP:port=80:interface=\\:\\:1", "tcp:port=80:interface=\\:\\:1"},
        {S, "t\\cp6:443:backlog=5", "tcp6:443:backlog=5"},
        {S, "unix:/a\\:b:mode=600", "unix:/a\\:b:mode=600"},
        {S, "unix:\\/x", "unix:/x"},
        {S, "systemd:domain=INET:index=0", "systemd:domain=INET:index=0"},
        {S, "haproxy:tcp:80", "haproxy:tcp:80"},
        {C, "tcp:host=\\:\\:1:port=80", "tcp:host=\\:\\:1:port=80"},
        {C, "unix:path=/p:checkPID=1", "unix:path=/p:checkPID=1"},
        {S, "raw:k=v=w", "raw:k=v=w"},
        {S, "raw:k\\=x\\:y=v\\=w", "raw:k\\=x\\:y=v=w"},
        {S, "raw:a\\=b", "raw:a\\=b"},
        {S, "raw:\\\\:\\\\=\\\\", "raw:\\\\:\\\\=\\\\"},
        {S, "raw::=:", "raw::=:"},
        {S, "raw", "raw"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        tw_endpoint_spec *spec = parse_ok(cases[i].role, cases[i].in);
        assert_round_trip(spec, cases[i].out);
        size_t len;
        char *s = tw_endpoint_format(spec, &len);
        cr_assert_leq(len, strlen(cases[i].in), "%s", cases[i].in);
        tw_free(s);
        tw_endpoint_spec_free(spec);
    }
}

TW_TEST(endpoint_format, equal_tells_specs_apart)
{
    register_raw();
    const char *distinct[] = {"raw:a", "raw:b", "raw:a:b", "raw:k=a",     "raw:j=a",       "raw:=a",
                              "raw",   "raw:",  "tcp:80",  "tcp:port=80", "haproxy:tcp:80"};
    size_t n = sizeof distinct / sizeof *distinct;
    for (size_t i = 0; i < n; i++) {
        tw_endpoint_spec *a = parse_ok(S, distinct[i]);
        for (size_t j = 0; j < n; j++) {
            tw_endpoint_spec *b = parse_ok(S, distinct[j]);
            cr_assert_eq(tw_endpoint_spec_equal(a, b), i == j, "%s vs %s", distinct[i],
                         distinct[j]);
            tw_endpoint_spec_free(b);
        }
        tw_endpoint_spec *c = parse_ok(C, distinct[i][0] == 'r' ? distinct[i] : "raw:zz");
        cr_assert(!tw_endpoint_spec_equal(a, c)); /* roles differ */
        tw_endpoint_spec_free(c);
        tw_endpoint_spec_free(a);
    }
}

/* ---- Every prefix and suffix of valid descriptions parses or fails cleanly */

static const char *const valid[] = {
    "tcp:8080:interface=127.0.0.1:backlog=20",
    "tcp6:443:interface=fe80\\:\\:1%eth0",
    "unix:/run/a\\:b.sock:mode=0600:lockfile=0",
    "unix:@abstract\\\\name",
    "systemd:domain=INET6:index=1",
    "haproxy:tcp:80:interface=\\:\\:1",
    "tcp:host=example.com:port=443:timeout=2.5:bindAddress=10.0.0.1",
    "unix:path=/var/x.sock:timeout=1:checkPID=1",
};

static void parse_cleanly(tw_endpoint_role role, const char *s, size_t len, int *parsed)
{
    tw_endpoint_spec *spec = NULL;
    tw_failure *f = NULL;
    int rc = tw_endpoint_parse_bytes(role, s, len, &spec, &f);
    if (rc == 0) {
        cr_assert_null(f);
        assert_round_trip(spec, NULL);
        tw_endpoint_spec_free(spec);
        (*parsed)++;
    } else {
        cr_assert_eq(rc, TW_EINVAL, "%.*s: %d", (int)len, s, rc);
        cr_assert_null(spec);
        cr_assert_eq(tw_failure_code(f), TW_EINVAL);
        tw_failure_unref(f);
    }
}

TW_TEST(endpoint_syntax, every_prefix_and_suffix_is_clean)
{
    int parsed = 0;
    for (size_t i = 0; i < sizeof valid / sizeof *valid; i++) {
        size_t len = strlen(valid[i]);
        for (size_t n = 0; n <= len; n++) {
            /* Copied to the heap at its exact length, so ASan sees any over-read. */
            char *prefix = malloc(n ? n : 1);
            memcpy(prefix, valid[i], n);
            char *suffix = malloc(n ? n : 1);
            memcpy(suffix, valid[i] + len - n, n);
            for (int role = S; role <= C; role++) {
                parse_cleanly((tw_endpoint_role)role, prefix, n, &parsed);
                parse_cleanly((tw_endpoint_role)role, suffix, n, &parsed);
            }
            free(prefix);
            free(suffix);
        }
    }
    cr_assert_gt(parsed, 16); /* the whole ones at least, and some prefixes */
}

/* ---- Allocation failure */

static void fail_alloc_loop(tw_endpoint_role role, const char *s, int want)
{
    for (long n = 0;; n++) {
        tw_endpoint_spec *spec = (void *)1;
        tw_failure *f = NULL;
        tw_testing_fail_alloc_after(n);
        int rc = tw_endpoint_parse(role, s, &spec, &f);
        tw_testing_fail_alloc_off();
        if (rc == TW_ENOMEM) {
            cr_assert_null(spec);
            cr_assert_not_null(f);
            cr_assert_eq(tw_failure_code(f), TW_ENOMEM);
            tw_failure_unref(f);
            cr_assert_lt(n, 20, "%s: still out of memory after %ld allocations", s, n);
            continue;
        }
        cr_assert_eq(rc, want, "%s: rc %d after %ld allocations", s, rc, n);
        if (rc == 0) {
            cr_assert_null(f);
            size_t len;
            tw_testing_fail_alloc_after(0);
            cr_assert_null(tw_endpoint_format(spec, &len));
            tw_testing_fail_alloc_off();
            tw_endpoint_spec_free(spec);
        } else {
            cr_assert_eq(tw_failure_code(f), want);
            tw_failure_unref(f);
        }
        cr_assert_gt(n, 0, "%s: no allocation at all?", s);
        return;
    }
}

TW_TEST(endpoint_alloc, every_allocation_failure_is_clean)
{
    cr_assert_eq(tw_endpoint_register_type("xssl", S, validate_ssl, NULL), 0);
    fail_alloc_loop(S, "tcp:80:interface=\\:\\:1", 0);
    fail_alloc_loop(S, "unix:/x:mode=600", 0);
    fail_alloc_loop(S, "systemd:INET:0", 0);
    fail_alloc_loop(S, "haproxy:tcp:80", 0);
    fail_alloc_loop(S, "haproxy:unix:@a", 0);
    fail_alloc_loop(S, "haproxy:xssl:1:privateKey=k", 0);
    fail_alloc_loop(C, "tcp:h:80:timeout=3", 0);
    fail_alloc_loop(C, "unix:/x", 0);
    fail_alloc_loop(S, "tcp:http", TW_EINVAL);
    fail_alloc_loop(S, "tpc:80", TW_EINVAL);
    fail_alloc_loop(S, "haproxy:tcp:x", TW_EINVAL);
    fail_alloc_loop(S, "haproxy:tpc", TW_EINVAL);
    fail_alloc_loop(S, "xssl:1", TW_EINVAL);
    fail_alloc_loop(S, "tcp:port=1:port=2", TW_EINVAL);
    fail_alloc_loop(S, "tcp:80:interface=::1", TW_EINVAL); /* the hint: a second failure */
    fail_alloc_loop(S, "haproxy:tcp:80:interface=::1", TW_EINVAL);
}

TW_TEST(endpoint_alloc, registration_under_allocation_failure)
{
    char name[16];
    int registered = 0;
    for (long n = 0; registered < 20; n++) {
        snprintf(name, sizeof name, "r%d", registered);
        tw_testing_fail_alloc_after(n % 3);
        int rc = tw_endpoint_register_type(name, S, validate_raw, &raw_validations);
        tw_testing_fail_alloc_off();
        cr_assert(rc == 0 || rc == TW_ENOMEM, "rc %d", rc);
        if (rc == 0)
            registered++;
        else /* nothing half-registered: the name is still free */
            cr_assert_eq(tw_endpoint_parse(S, name, &(tw_endpoint_spec *){NULL}, NULL), TW_EINVAL);
    }
    tw_endpoint_spec *spec = parse_ok(S, "r19");
    tw_endpoint_spec_free(spec);
}
