/* The ssl: (server) and tls: (client) endpoint descriptions: parsing, typed
 * fields, defaults, errors, formatting back, allocation failure. */
#include "twtest.h"
#include <twine/endpoint.h>
#include <twine/net.h>
#include <twine/tls.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S TW_ENDPOINT_SERVER
#define C TW_ENDPOINT_CLIENT

static tw_endpoint_spec *parse_ok(tw_endpoint_role role, const char *s)
{
    tw_endpoint_spec *spec = NULL;
    tw_failure *f = NULL;
    int rc = tw_endpoint_parse(role, s, &spec, &f);
    cr_assert_eq(rc, 0, "parsing \"%s\" failed: %s", s, f ? tw_failure_message(f) : "?");
    cr_assert_null(f);
    return spec;
}

static void parse_bad(tw_endpoint_role role, const char *s, const char *needle)
{
    tw_endpoint_spec *spec = (void *)1;
    tw_failure *f = NULL;
    int rc = tw_endpoint_parse(role, s, &spec, &f);
    cr_assert_eq(rc, TW_EINVAL, "\"%s\": rc %d (%s)", s, rc, f ? tw_failure_message(f) : "");
    cr_assert_null(spec);
    cr_assert_not_null(f);
    cr_assert(strstr(tw_failure_message(f), needle), "\"%s\": message \"%s\" lacks \"%s\"", s,
              tw_failure_message(f), needle);
    tw_failure_unref(f);
}

/* Formats spec, parses that again and checks both are equal. */
static void round_trip(const tw_endpoint_spec *spec, const char *want)
{
    size_t len;
    char *s = tw_endpoint_format(spec, &len);
    cr_assert_not_null(s);
    if (want)
        cr_assert_str_eq(s, want);
    tw_endpoint_spec *again = parse_ok(spec->role, s);
    cr_assert(tw_endpoint_spec_equal(spec, again), "\"%s\" did not parse back equal", s);
    tw_endpoint_spec_free(again);
    tw_free(s);
}

/* ---- ssl: servers */

TW_TEST(endpoint_ssl, minimal_form_defaults_cert_to_the_key)
{
    tw_endpoint_spec *spec = parse_ok(S, "ssl:443:privateKey=server.pem");
    cr_assert_eq(spec->kind, TW_ENDPOINT_SSL);
    cr_assert_str_eq(spec->type, "ssl");
    const tw_endpoint_ssl_server *s = tw_endpoint_spec_ssl_server(spec);
    cr_assert_not_null(s);
    cr_assert_eq(s->tcp.port, 443);
    cr_assert_str_eq(s->tcp.interface, "");
    cr_assert_eq(s->tcp.backlog, 50);
    cr_assert_str_eq(s->private_key, "server.pem");
    cr_assert_str_eq(s->cert_key, "server.pem");
    cr_assert_null(s->extra_cert_chain);
    /* Not a tcp server, nor a client of any kind. */
    cr_assert_null(tw_endpoint_spec_tcp_server(spec));
    cr_assert_null(tw_endpoint_spec_tls_client(spec));
    round_trip(spec, "ssl:443:privateKey=server.pem");
    tw_endpoint_spec_free(spec);
}

TW_TEST(endpoint_ssl, every_option)
{
    tw_endpoint_spec *spec =
        parse_ok(S, "SSL:0:privateKey=/k/key.pem:certKey=cert.pem:extraCertChain=chain\\:1.pem:"
                    "interface=127.0.0.1:backlog=7");
    const tw_endpoint_ssl_server *s = tw_endpoint_spec_ssl_server(spec);
    cr_assert_eq(s->tcp.port, 0);
    cr_assert_str_eq(s->tcp.interface, "127.0.0.1");
    cr_assert_eq(s->tcp.backlog, 7);
    cr_assert_str_eq(s->private_key, "/k/key.pem");
    cr_assert_str_eq(s->cert_key, "cert.pem");
    cr_assert_str_eq(s->extra_cert_chain, "chain:1.pem");
    round_trip(spec, "ssl:0:privateKey=/k/key.pem:certKey=cert.pem:extraCertChain=chain\\:1.pem:"
                     "interface=127.0.0.1:backlog=7");
    tw_endpoint_spec_free(spec);
}

TW_TEST(endpoint_ssl, positional_in_twisteds_order)
{
    /* port interface backlog privateKey certKey */
    tw_endpoint_spec *spec = parse_ok(S, "ssl:8443:\\:\\:1:9:k.pem:c.pem");
    const tw_endpoint_ssl_server *s = tw_endpoint_spec_ssl_server(spec);
    cr_assert_eq(s->tcp.port, 8443);
    cr_assert_str_eq(s->tcp.interface, "::1");
    cr_assert_eq(s->tcp.backlog, 9);
    cr_assert_str_eq(s->private_key, "k.pem");
    cr_assert_str_eq(s->cert_key, "c.pem");
    round_trip(spec, NULL);
    tw_endpoint_spec_free(spec);
}

TW_TEST(endpoint_ssl, bad_descriptions)
{
    parse_bad(S, "ssl:443", "ssl: missing privateKey");
    parse_bad(S, "ssl:privateKey=k.pem", "ssl: missing port");
    parse_bad(S, "ssl:70000:privateKey=k.pem", "ssl: port 70000 out of range");
    parse_bad(S, "ssl:443:privateKey=", "ssl: empty privateKey file name");
    parse_bad(S, "ssl:443:privateKey=k.pem:certKey=", "ssl: empty certKey file name");
    parse_bad(S, "ssl:443:privateKey=k.pem:extraCertChain=", "empty extraCertChain");
    parse_bad(S, "ssl:443:privateKey=k.pem:sslmethod=TLSv1_2_METHOD",
              "ssl: option 'sslmethod' is not supported");
    parse_bad(S, "ssl:443:privateKey=k.pem:dhParameters=dh.pem",
              "ssl: option 'dhParameters' is not supported");
    parse_bad(S, "ssl:443:privateKey=k.pem:interface=localhost", "ssl: interface 'localhost'");
    parse_bad(S, "ssl:443:privateKey=k.pem:backlog=-1", "ssl: backlog");
    parse_bad(S, "ssl:443:privateKey=k.pem:trustRoots=ca.pem", "ssl: unknown option 'trustRoots'");
    parse_bad(S, "ssl:443:privateKey=k.pem:privateKey=j.pem", "given twice");
    parse_bad(S, "ssl:1:2:3:4:5:6:7:8:9", "too many positional arguments (at most 8)");
    /* ssl is a server type only, tls a client one. */
    parse_bad(C, "ssl:localhost:443", "ssl");
    parse_bad(S, "tls:443", "tls");
}

TW_TEST(endpoint_ssl, under_haproxy)
{
    tw_endpoint_spec *spec = parse_ok(S, "haproxy:ssl:443:privateKey=k.pem");
    cr_assert_eq(spec->kind, TW_ENDPOINT_HAPROXY);
    cr_assert_not_null(spec->inner);
    const tw_endpoint_ssl_server *s = tw_endpoint_spec_ssl_server(spec->inner);
    cr_assert_not_null(s);
    cr_assert_str_eq(s->private_key, "k.pem");
    round_trip(spec, "haproxy:ssl:443:privateKey=k.pem");
    tw_endpoint_spec_free(spec);
    parse_bad(S, "haproxy:ssl:443", "haproxy: ssl: missing privateKey");
}

/* ---- tls: clients */

TW_TEST(endpoint_tls, minimal_form)
{
    tw_endpoint_spec *spec = parse_ok(C, "tls:example.com:443");
    cr_assert_eq(spec->kind, TW_ENDPOINT_TLS);
    const tw_endpoint_tls_client *t = tw_endpoint_spec_tls_client(spec);
    cr_assert_not_null(t);
    cr_assert_str_eq(t->tcp.host, "example.com");
    cr_assert_eq(t->tcp.port, 443);
    cr_assert_eq(t->tcp.timeout, 30.0);
    cr_assert_null(t->tcp.bind_address);
    cr_assert_null(t->trust_roots);
    cr_assert_null(t->certificate);
    cr_assert_null(t->private_key);
    cr_assert_null(tw_endpoint_spec_tcp_client(spec));
    cr_assert_null(tw_endpoint_spec_ssl_server(spec));
    round_trip(spec, "tls:example.com:443");
    tw_endpoint_spec_free(spec);
}

TW_TEST(endpoint_tls, every_option)
{
    tw_endpoint_spec *spec =
        parse_ok(C, "tls:host=localhost:port=8443:trustRoots=/etc/ca:certificate=me.pem:"
                    "privateKey=me.key:timeout=2.5:bindAddress=127.0.0.1");
    const tw_endpoint_tls_client *t = tw_endpoint_spec_tls_client(spec);
    cr_assert_str_eq(t->tcp.host, "localhost");
    cr_assert_eq(t->tcp.port, 8443);
    cr_assert_eq(t->tcp.timeout, 2.5);
    cr_assert_str_eq(t->tcp.bind_address, "127.0.0.1");
    cr_assert_str_eq(t->trust_roots, "/etc/ca");
    cr_assert_str_eq(t->certificate, "me.pem");
    cr_assert_str_eq(t->private_key, "me.key");
    round_trip(spec, NULL);
    tw_endpoint_spec_free(spec);
}

TW_TEST(endpoint_tls, certificate_alone_holds_its_key)
{
    tw_endpoint_spec *spec = parse_ok(C, "tls:\\:\\:1:443:certificate=both.pem");
    const tw_endpoint_tls_client *t = tw_endpoint_spec_tls_client(spec);
    cr_assert_str_eq(t->tcp.host, "::1");
    cr_assert_str_eq(t->certificate, "both.pem");
    cr_assert_str_eq(t->private_key, "both.pem");
    round_trip(spec, "tls:\\:\\:1:443:certificate=both.pem");
    tw_endpoint_spec_free(spec);
}

TW_TEST(endpoint_tls, bad_descriptions)
{
    parse_bad(C, "tls:example.com", "tls: missing port");
    parse_bad(C, "tls:port=443", "tls: missing host");
    parse_bad(C, "tls:exa mple:443", "tls: host 'exa mple' is not a host name");
    parse_bad(C, "tls:example.com:0", "tls: port 0 out of range");
    parse_bad(C, "tls:example.com:443:5", "too many positional arguments (at most 2)");
    parse_bad(C, "tls:example.com:443:trustRoots=", "tls: empty trustRoots file name");
    parse_bad(C, "tls:example.com:443:privateKey=k.pem", "privateKey given without certificate");
    parse_bad(C, "tls:example.com:443:timeout=0", "tls: timeout '0' must be more than 0");
    parse_bad(C, "tls:example.com:443:bindAddress=me", "tls: bindAddress 'me'");
    parse_bad(C, "tls:example.com:443:privateKey=k.pem:certKey=c.pem", "unknown option 'certKey'");
}

TW_TEST(endpoint_tls, nul_bytes_in_file_names_are_refused)
{
    tw_endpoint_spec *spec = (void *)1;
    tw_failure *f = NULL;
    static const char d[] = "tls:h:1:trustRoots=a\0b";
    int rc = tw_endpoint_parse_bytes(C, d, sizeof d - 1, &spec, &f);
    cr_assert_eq(rc, TW_EINVAL);
    cr_assert(strstr(tw_failure_message(f), "NUL byte"), "%s", tw_failure_message(f));
    tw_failure_unref(f);
    static const char e[] = "ssl:1:privateKey=\0";
    rc = tw_endpoint_parse_bytes(S, e, sizeof e - 1, &spec, &f);
    cr_assert_eq(rc, TW_EINVAL);
    cr_assert(strstr(tw_failure_message(f), "NUL byte"), "%s", tw_failure_message(f));
    tw_failure_unref(f);
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
            cr_assert_eq(tw_failure_code(f), TW_ENOMEM);
            tw_failure_unref(f);
            cr_assert_lt(n, 20, "%s: still out of memory after %ld allocations", s, n);
            continue;
        }
        cr_assert_eq(rc, want, "%s: rc %d after %ld allocations", s, rc, n);
        if (rc == 0)
            tw_endpoint_spec_free(spec);
        else
            tw_failure_unref(f);
        cr_assert_gt(n, 0);
        return;
    }
}

TW_TEST(endpoint_tls, every_allocation_failure_is_clean)
{
    fail_alloc_loop(S, "ssl:443:privateKey=k.pem:certKey=c.pem:extraCertChain=x", 0);
    fail_alloc_loop(S, "ssl:443:privateKey=k.pem:sslmethod=x", TW_EINVAL);
    fail_alloc_loop(C, "tls:localhost:443:trustRoots=ca.pem:certificate=c.pem", 0);
    fail_alloc_loop(C, "tls:localhost:443:privateKey=k", TW_EINVAL);
}

/* ---- Listening and connecting over loopback, with certificates made by
 * the openssl command in a temporary directory. */

struct certs {
    char dir[64];
};

static void make_certs(struct certs *c)
{
    strcpy(c->dir, "/tmp/twine-tlsep-XXXXXX");
    cr_assert_not_null(mkdtemp(c->dir));
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "cd %s && exec >/dev/null 2>&1 && "
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
             "-keyout ca.key -out ca.pem -days 2 -subj /CN=TwineTestCA && "
             "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout key.pem "
             "-out s.csr -subj /CN=localhost && "
             "printf 'basicConstraints=CA:FALSE\\nsubjectAltName=DNS:localhost,IP:127.0.0.1\\n' "
             "> ext.cnf && "
             "openssl x509 -req -in s.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
             "-out cert.pem -days 2 -extfile ext.cnf && cat key.pem cert.pem > both.pem",
             c->dir);
    cr_assert_eq(system(cmd), 0, "openssl could not make the test certificates");
}

static void drop_certs(struct certs *c)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", c->dir);
    cr_assert_eq(system(cmd), 0);
}

struct echo {
    tw_protocol base;
};

static void echo_data(tw_protocol *p, const char *data, size_t len)
{
    tw_transport_write(p->transport, data, len);
}

static const tw_protocol_ops echo_ops = {.data_received = echo_data};

struct client {
    tw_protocol base;
    char heard[256];
    size_t len;
};

/* What outlives the client protocol (freed after its connection_lost). One
 * test per process (Criterion forks), so a static does. */
static struct {
    int handshakes;
    int lost_code; /* 0 until connection_lost */
    char version[16];
} seen;

static void client_handshake(tw_protocol *p)
{
    seen.handshakes++;
    const char *v = tw_tls_version_name(p->transport);
    snprintf(seen.version, sizeof seen.version, "%s", v ? v : "?");
}

static void client_data(tw_protocol *p, const char *data, size_t len)
{
    struct client *c = (struct client *)p;
    if (c->len + len < sizeof c->heard) {
        memcpy(c->heard + c->len, data, len);
        c->len += len;
    }
}

static void client_lost(tw_protocol *p, tw_failure *reason)
{
    (void)p;
    seen.lost_code = tw_failure_code(reason);
}

static const tw_protocol_ops client_ops = {.handshake_completed = client_handshake,
                                           .data_received = client_data,
                                           .connection_lost = client_lost};

static void owned_free(tw_protocol *p)
{
    tw_free(p);
}

static const tw_protocol_ops owned_client_ops = {.handshake_completed = client_handshake,
                                                 .data_received = client_data,
                                                 .connection_lost = client_lost,
                                                 .free = owned_free};

static tw_result listen_result(tw_reactor *r, const char *description, tw_factory *f)
{
    tw_endpoint *ep;
    tw_failure *failure = NULL;
    cr_assert_eq(tw_endpoint_server_from_string(r, description, &ep, &failure), 0, "%s",
                 failure ? tw_failure_message(failure) : "");
    tw_deferred *d = tw_endpoint_listen(ep, f);
    tw_result res = twtest_wait(r, d);
    tw_deferred_unref(d);
    tw_endpoint_free(ep);
    return res;
}

static tw_result connect_result(tw_reactor *r, const char *description, tw_factory *f)
{
    tw_endpoint *ep;
    tw_failure *failure = NULL;
    cr_assert_eq(tw_endpoint_client_from_string(r, description, &ep, &failure), 0, "%s",
                 failure ? tw_failure_message(failure) : "");
    tw_deferred *d = tw_endpoint_connect(ep, f);
    tw_result res = twtest_wait(r, d);
    tw_deferred_unref(d);
    tw_endpoint_free(ep);
    return res;
}

static void spin_until(tw_reactor *r, bool (*done)(struct client *), struct client *c)
{
    double end = tw_reactor_seconds(r) + 10;
    while (!done(c) && tw_reactor_seconds(r) < end)
        tw_reactor_iterate(r, 0.01);
}

static bool heard_hello(struct client *c)
{
    return c->len == 5;
}

static bool was_lost(struct client *c)
{
    (void)c;
    return seen.lost_code != 0;
}

static unsigned port_of(tw_listening_port *port)
{
    tw_address a;
    cr_assert_eq(tw_listening_port_get_host(port, &a), 0);
    return tw_address_port(&a);
}

TW_REACTOR_TEST(endpoint_tls_io, ssl_listen_and_tls_connect_echo)
{
    struct certs c;
    make_certs(&c);
    tw_factory server, client;
    tw_factory_init(&server, NULL, &echo_ops, sizeof(struct echo), NULL);
    tw_factory_init(&client, NULL, &client_ops, sizeof(struct client), NULL);
    char desc[512];
    snprintf(desc, sizeof desc,
             "ssl:0:privateKey=%s/key.pem:certKey=%s/cert.pem:interface=127.0.0.1", c.dir, c.dir);
    tw_result lr = listen_result(r, desc, &server);
    cr_assert_null(lr.failure, "%s", lr.failure ? tw_failure_message(lr.failure) : "");
    tw_listening_port *port = tw_result_take(&lr);
    /* By name: verified against the CA for "localhost"; then by a directory of roots. */
    snprintf(desc, sizeof desc, "tls:localhost:%u:trustRoots=%s/ca.pem", port_of(port), c.dir);
    tw_result cr = connect_result(r, desc, &client);
    cr_assert_null(cr.failure, "%s", cr.failure ? tw_failure_message(cr.failure) : "");
    struct client *cl = cr.value;
    cr_assert_eq(cl->base.ops, &client_ops, "the deferred gives the application's protocol");
    cr_assert_eq(tw_transport_write(cl->base.transport, "hello", 5), 0);
    spin_until(r, heard_hello, cl);
    cr_assert_eq(cl->len, 5);
    cr_assert_eq(memcmp(cl->heard, "hello", 5), 0);
    cr_assert_eq(seen.handshakes, 1);
    cr_assert_str_eq(seen.version, "TLSv1.3");
    /* The port goes first: its connection (and the TLS factory) live on. */
    tw_deferred_unref(tw_listening_port_stop(port));
    cr_assert_eq(tw_transport_write(cl->base.transport, "again", 5), 0);
    cl->len = 0;
    spin_until(r, heard_hello, cl);
    cr_assert_eq(memcmp(cl->heard, "again", 5), 0);
    tw_transport_lose_connection(cl->base.transport);
    spin_until(r, was_lost, cl);
    cr_assert_eq(seen.lost_code, TW_ECONNDONE);
    for (int i = 0; i < 10; i++)
        tw_reactor_iterate(r, 0.01);
    drop_certs(&c);
}

TW_REACTOR_TEST(endpoint_tls_io, server_certificate_from_another_root_is_refused)
{
    struct certs c, other;
    make_certs(&c);
    make_certs(&other);
    tw_factory server, client;
    tw_factory_init(&server, NULL, &echo_ops, sizeof(struct echo), NULL);
    tw_factory_init(&client, NULL, &client_ops, sizeof(struct client), NULL);
    char desc[512];
    snprintf(desc, sizeof desc, "ssl:0:privateKey=%s/both.pem:interface=127.0.0.1", c.dir);
    tw_result lr = listen_result(r, desc, &server);
    cr_assert_null(lr.failure, "%s", lr.failure ? tw_failure_message(lr.failure) : "");
    tw_listening_port *port = tw_result_take(&lr);
    snprintf(desc, sizeof desc, "tls:127.0.0.1:%u:trustRoots=%s", port_of(port), other.dir);
    /* trustRoots names a directory here: not hashed, so nothing in it is trusted. */
    tw_result cr = connect_result(r, desc, &client);
    cr_assert_null(cr.failure, "connected before the handshake, as Twisted does");
    struct client *cl = cr.value;
    spin_until(r, was_lost, cl);
    cr_assert_eq(seen.lost_code, TW_ETLSVERIFY);
    cr_assert_eq(seen.handshakes, 0);
    tw_deferred_unref(tw_listening_port_stop(port));
    for (int i = 0; i < 10; i++)
        tw_reactor_iterate(r, 0.01);
    drop_certs(&c);
    drop_certs(&other);
}

TW_REACTOR_TEST(endpoint_tls_io, unreadable_files_fail_listen_and_connect)
{
    tw_factory f;
    tw_factory_init(&f, NULL, &echo_ops, sizeof(struct echo), NULL);
    tw_result lr = listen_result(r, "ssl:0:privateKey=/nonexistent/k.pem:interface=127.0.0.1", &f);
    cr_assert_not_null(lr.failure);
    cr_assert_eq(tw_failure_code(lr.failure), TW_EINVAL);
    const char *m = tw_failure_message(lr.failure);
    cr_assert(strncmp(m, "ssl: ", 5) == 0 && strstr(m, "/nonexistent/k.pem"), "%s", m);
    tw_result_release(&lr);

    tw_result cr = connect_result(r, "tls:localhost:1:trustRoots=/nonexistent/ca.pem", &f);
    cr_assert_not_null(cr.failure);
    m = tw_failure_message(cr.failure);
    cr_assert(strncmp(m, "tls: ", 5) == 0 && strstr(m, "/nonexistent/ca.pem"), "%s", m);
    tw_result_release(&cr);
    cr_assert_eq(f.users, 0, "the factory was never started, or stopped again");
}

TW_REACTOR_TEST(endpoint_tls_io, connect_protocol_under_tls)
{
    struct certs c;
    make_certs(&c);
    tw_factory server;
    tw_factory_init(&server, NULL, &echo_ops, sizeof(struct echo), NULL);
    char desc[512];
    snprintf(desc, sizeof desc,
             "ssl:0:privateKey=%s/key.pem:certKey=%s/cert.pem:interface=127.0.0.1", c.dir, c.dir);
    tw_result lr = listen_result(r, desc, &server);
    cr_assert_null(lr.failure);
    tw_listening_port *port = tw_result_take(&lr);
    snprintf(desc, sizeof desc, "tls:localhost:%u:trustRoots=%s/ca.pem", port_of(port), c.dir);
    tw_endpoint *ep;
    cr_assert_eq(tw_endpoint_client_from_string(r, desc, &ep, NULL), 0);
    struct client *mine = tw_calloc(1, sizeof *mine);
    tw_protocol_init(&mine->base, &owned_client_ops);
    tw_deferred *d = tw_endpoint_connect_protocol(ep, &mine->base);
    tw_result res = twtest_wait(r, d);
    tw_deferred_unref(d);
    tw_endpoint_free(ep);
    cr_assert_null(res.failure);
    cr_assert_eq(res.value, mine);
    tw_transport_write(mine->base.transport, "hello", 5);
    spin_until(r, heard_hello, mine);
    cr_assert_eq(seen.handshakes, 1);
    tw_transport_lose_connection(mine->base.transport);
    tw_deferred_unref(tw_listening_port_stop(port));
    for (int i = 0; i < 20; i++)
        tw_reactor_iterate(r, 0.01);
    drop_certs(&c);
}

/* Every allocation of listen and connect may fail: the deferred then fails
 * with TW_ENOMEM and nothing leaks (ASan checks); once enough succeed, the
 * endpoint works. */
TW_REACTOR_TEST(endpoint_tls_io, allocation_failures_in_listen_and_connect_are_clean)
{
    struct certs c;
    make_certs(&c);
    tw_factory server, client;
    tw_factory_init(&server, NULL, &echo_ops, sizeof(struct echo), NULL);
    tw_factory_init(&client, NULL, &client_ops, sizeof(struct client), NULL);
    char desc[512];
    snprintf(desc, sizeof desc, "ssl:0:privateKey=%s/both.pem:interface=127.0.0.1", c.dir);
    tw_endpoint *ep;
    cr_assert_eq(tw_endpoint_server_from_string(r, desc, &ep, NULL), 0);
    tw_listening_port *port = NULL;
    for (long n = 0; !port; n++) {
        cr_assert_lt(n, 200);
        tw_testing_fail_alloc_after(n);
        tw_deferred *d = tw_endpoint_listen(ep, &server);
        tw_testing_fail_alloc_off();
        if (!d)
            continue; /* not even a failed deferred could be made */
        tw_result res = twtest_wait(r, d);
        tw_deferred_unref(d);
        if (res.failure) {
            cr_assert_eq(tw_failure_code(res.failure), TW_ENOMEM, "%s",
                         tw_failure_message(res.failure));
            tw_result_release(&res);
            continue;
        }
        port = tw_result_take(&res);
    }
    tw_endpoint_free(ep);

    snprintf(desc, sizeof desc, "tls:127.0.0.1:%u:trustRoots=%s/ca.pem", port_of(port), c.dir);
    cr_assert_eq(tw_endpoint_client_from_string(r, desc, &ep, NULL), 0);
    struct client *cl = NULL;
    for (long n = 0; !cl; n++) {
        cr_assert_lt(n, 200);
        tw_testing_fail_alloc_after(n);
        tw_deferred *d = tw_endpoint_connect(ep, &client);
        tw_testing_fail_alloc_off();
        if (!d)
            continue; /* not even a failed deferred could be made */
        tw_result res = twtest_wait(r, d);
        tw_deferred_unref(d);
        if (res.failure) {
            cr_assert_eq(tw_failure_code(res.failure), TW_ENOMEM, "%s",
                         tw_failure_message(res.failure));
            tw_result_release(&res);
            cr_assert_eq(client.users, 0, "the factory is stopped after a failed connect");
            continue;
        }
        cl = res.value;
    }
    tw_endpoint_free(ep);
    tw_transport_write(cl->base.transport, "hello", 5);
    spin_until(r, heard_hello, cl);
    cr_assert_eq(memcmp(cl->heard, "hello", 5), 0);
    tw_transport_lose_connection(cl->base.transport);
    spin_until(r, was_lost, cl);
    tw_deferred_unref(tw_listening_port_stop(port));
    for (int i = 0; i < 10; i++)
        tw_reactor_iterate(r, 0.01);
    drop_certs(&c);
}

/* One tls: endpoint, connected twice (its context kept between): both work. */
TW_REACTOR_TEST(endpoint_tls_io, one_endpoint_connects_again)
{
    struct certs c;
    make_certs(&c);
    tw_factory server, client;
    tw_factory_init(&server, NULL, &echo_ops, sizeof(struct echo), NULL);
    tw_factory_init(&client, NULL, &client_ops, sizeof(struct client), NULL);
    char desc[512];
    snprintf(desc, sizeof desc, "ssl:0:privateKey=%s/both.pem:interface=127.0.0.1", c.dir);
    tw_result lr = listen_result(r, desc, &server);
    cr_assert_null(lr.failure);
    tw_listening_port *port = tw_result_take(&lr);
    snprintf(desc, sizeof desc, "tls:localhost:%u:trustRoots=%s/ca.pem", port_of(port), c.dir);
    tw_endpoint *ep;
    cr_assert_eq(tw_endpoint_client_from_string(r, desc, &ep, NULL), 0);
    for (int round = 0; round < 2; round++) {
        memset(&seen, 0, sizeof seen);
        tw_deferred *d = tw_endpoint_connect(ep, &client);
        tw_result res = twtest_wait(r, d);
        tw_deferred_unref(d);
        cr_assert_null(res.failure, "round %d: %s", round,
                       res.failure ? tw_failure_message(res.failure) : "");
        struct client *cl = res.value;
        tw_transport_write(cl->base.transport, "hello", 5);
        spin_until(r, heard_hello, cl);
        cr_assert_eq(memcmp(cl->heard, "hello", 5), 0, "round %d", round);
        cr_assert_eq(seen.handshakes, 1, "round %d", round);
        tw_transport_lose_connection(cl->base.transport);
        spin_until(r, was_lost, cl);
        cr_assert_eq(seen.lost_code, TW_ECONNDONE, "round %d", round);
    }
    tw_endpoint_free(ep);
    tw_deferred_unref(tw_listening_port_stop(port));
    for (int i = 0; i < 10; i++)
        tw_reactor_iterate(r, 0.01);
    drop_certs(&c);
}
