/* Services (service.h): the lifecycle wrappers, the multi-service's order of
 * start and stop, deferred stops, failures half-way, privileged start, and
 * the stock server, client and timer services. */
#include <math.h>
#include <string.h>

#include <twine/endpoint.h>
#include <twine/net.h>
#include <twine/service.h>

#include "twtest.h"

/* ---- A service that records what is done to it */

static char events[1024];

static void note(const char *what, const char *name)
{
    strcat(events, what);
    strcat(events, name);
    strcat(events, " ");
}

struct rec {
    tw_service base;
    bool fail_priv, fail_start;
    tw_deferred *stop_with; /* what stop returns (the service's reference) */
    bool has_priv;
    unsigned freed_marker;
};

static unsigned freed;

static int rec_priv(tw_service *s, tw_failure **f)
{
    struct rec *r = (struct rec *)s;
    note("p:", s->name);
    if (r->fail_priv) {
        *f = tw_failure_new(TW_EACCES, NULL, "no privilege");
        return TW_EACCES;
    }
    return 0;
}

static int rec_start(tw_service *s, tw_failure **f)
{
    struct rec *r = (struct rec *)s;
    note("s:", s->name);
    if (r->fail_start) {
        *f = tw_failure_new(TW_EADDRINUSE, NULL, "port taken");
        return TW_EADDRINUSE;
    }
    return 0;
}

static tw_deferred *rec_stop(tw_service *s)
{
    struct rec *r = (struct rec *)s;
    note("x:", s->name);
    tw_deferred *d = r->stop_with;
    r->stop_with = NULL;
    return d;
}

static void rec_free(tw_service *s)
{
    note("f:", s->name);
    freed++;
}

static const tw_service_ops rec_ops = {
    .kind = "rec", .start = rec_start, .stop = rec_stop, .free = rec_free};
static const tw_service_ops rec_priv_ops = {.kind = "rec",
                                            .privileged_start = rec_priv,
                                            .start = rec_start,
                                            .stop = rec_stop,
                                            .free = rec_free};

static struct rec *rec_new(tw_reactor *r, const char *name, bool priv)
{
    struct rec *s = tw_calloc(1, sizeof *s);
    cr_assert_not_null(s);
    cr_assert_eq(tw_service_init(&s->base, priv ? &rec_priv_ops : &rec_ops, r, name), 0);
    return s;
}

static tw_multi_service *three(tw_reactor *r, struct rec **a, struct rec **b, struct rec **c)
{
    tw_multi_service *m;
    cr_assert_eq(tw_multi_service_new(r, "top", &m), 0);
    *a = rec_new(r, "A", false);
    *b = rec_new(r, "B", false);
    *c = rec_new(r, "C", false);
    cr_assert_eq(tw_multi_service_add(m, &(*a)->base, NULL), 0);
    cr_assert_eq(tw_multi_service_add(m, &(*b)->base, NULL), 0);
    cr_assert_eq(tw_multi_service_add(m, &(*c)->base, NULL), 0);
    events[0] = '\0';
    freed = 0;
    return m;
}

static bool fired(tw_deferred *d)
{
    return d && tw_deferred_called(d);
}

TW_TEST(service, multi_starts_in_order_and_stops_in_reverse)
{
    struct rec *a, *b, *c;
    tw_multi_service *m = three(NULL, &a, &b, &c);
    tw_service *top = tw_multi_service_base(m);
    cr_assert_eq(tw_multi_service_count(m), 3);
    cr_assert_eq(tw_service_start(top, NULL), 0);
    cr_assert_str_eq(events, "s:A s:B s:C ");
    cr_assert(top->running && a->base.running && c->base.running);
    tw_deferred *d = tw_service_stop(top);
    cr_assert_str_eq(events, "s:A s:B s:C x:C x:B x:A ");
    cr_assert(fired(d));
    cr_assert(!top->running && !a->base.running);
    tw_deferred_unref(d);
    tw_service_release(top);
    cr_assert_eq(freed, 3, "the children are released with their parent");
    cr_assert_str_eq(events, "s:A s:B s:C x:C x:B x:A f:C f:B f:A ");
}

TW_TEST(service, start_and_stop_are_idempotent)
{
    struct rec *a, *b, *c;
    tw_multi_service *m = three(NULL, &a, &b, &c);
    tw_service *top = tw_multi_service_base(m);
    tw_deferred *d = tw_service_stop(top); /* never started: nothing to do */
    cr_assert(fired(d));
    tw_deferred_unref(d);
    cr_assert_str_eq(events, "");
    cr_assert_eq(tw_service_start(top, NULL), 0);
    cr_assert_eq(tw_service_start(top, NULL), 0);
    cr_assert_eq(tw_service_start(&b->base, NULL), 0);
    cr_assert_str_eq(events, "s:A s:B s:C ");
    tw_deferred_unref(tw_service_stop(&b->base));
    tw_deferred_unref(tw_service_stop(top));
    tw_deferred_unref(tw_service_stop(top));
    cr_assert_str_eq(events, "s:A s:B s:C x:B x:C x:A ", "B stopped once, alone first");
    tw_service_release(top);
}

TW_TEST(service, stop_waits_for_every_child_deferred)
{
    struct rec *a, *b, *c;
    tw_multi_service *m = three(NULL, &a, &b, &c);
    tw_service *top = tw_multi_service_base(m);
    cr_assert_eq(tw_service_start(top, NULL), 0);
    tw_deferred *slow_b = tw_deferred_new(NULL, NULL), *slow_a = tw_deferred_new(NULL, NULL);
    b->stop_with = tw_deferred_ref(slow_b);
    a->stop_with = tw_deferred_ref(slow_a);
    tw_deferred *d = tw_service_stop(top);
    cr_assert(!fired(d));
    cr_assert(!top->running, "stopping counts as not running, as in Twisted");
    tw_deferred_callback(slow_a, tw_result_ok(NULL, NULL));
    cr_assert(!fired(d), "B still stopping");
    tw_deferred_callback(slow_b, tw_result_ok(NULL, NULL));
    cr_assert(fired(d));
    tw_deferred_unref(d);
    tw_deferred_unref(slow_a);
    tw_deferred_unref(slow_b);
    tw_service_release(top);
}

TW_TEST(service, stop_failure_is_logged_and_the_stop_still_fires)
{
    struct rec *a, *b, *c;
    tw_multi_service *m = three(NULL, &a, &b, &c);
    tw_service *top = tw_multi_service_base(m);
    cr_assert_eq(tw_service_start(top, NULL), 0);
    b->stop_with = tw_fail(tw_failure_new(TW_ETIMEDOUT, NULL, "would not stop"));
    tw_testing_log_capture_start();
    tw_deferred *d = tw_service_stop(top);
    size_t logged = tw_testing_log_count("would not stop");
    tw_testing_log_capture_stop();
    cr_assert_eq(logged, 1);
    cr_assert(fired(d));
    tw_deferred_unref(d);
    cr_assert_str_eq(events, "s:A s:B s:C x:C x:B x:A ");
    tw_service_release(top);
}

TW_TEST(service, failure_half_way_stops_the_started_ones)
{
    struct rec *a, *b, *c;
    tw_multi_service *m = three(NULL, &a, &b, &c);
    tw_service *top = tw_multi_service_base(m);
    b->fail_start = true;
    tw_failure *f = NULL;
    cr_assert_eq(tw_service_start(top, &f), TW_EADDRINUSE);
    cr_assert_not_null(f);
    cr_assert_eq(tw_failure_code(f), TW_EADDRINUSE);
    cr_assert_str_eq(tw_failure_message(f), "service 'B' failed to start: port taken");
    cr_assert_not_null(tw_failure_cause(f), "the child's own failure is the cause");
    tw_failure_unref(f);
    cr_assert_str_eq(events, "s:A s:B x:A ", "C never started, A stopped");
    cr_assert(!top->running && !a->base.running && !b->base.running && !c->base.running);
    /* It can start again once the trouble is gone. */
    b->fail_start = false;
    cr_assert_eq(tw_service_start(top, NULL), 0);
    tw_deferred_unref(tw_service_stop(top));
    tw_service_release(top);
}

TW_TEST(service, privileged_start_then_start)
{
    tw_multi_service *m;
    cr_assert_eq(tw_multi_service_new(NULL, NULL, &m), 0);
    struct rec *a = rec_new(NULL, "A", true), *b = rec_new(NULL, "B", false);
    struct rec *c = rec_new(NULL, "C", true);
    cr_assert_eq(tw_multi_service_add(m, &a->base, NULL), 0);
    cr_assert_eq(tw_multi_service_add(m, &b->base, NULL), 0);
    cr_assert_eq(tw_multi_service_add(m, &c->base, NULL), 0);
    events[0] = '\0';
    tw_service *top = tw_multi_service_base(m);
    cr_assert_eq(tw_service_privileged_start(top, NULL), 0);
    cr_assert_eq(tw_service_privileged_start(top, NULL), 0);
    cr_assert_str_eq(events, "p:A p:C ");
    cr_assert(a->base.privileged_started && !a->base.running);
    cr_assert_eq(tw_service_start(top, NULL), 0);
    cr_assert_str_eq(events, "p:A p:C s:A s:B s:C ");
    tw_deferred_unref(tw_service_stop(top));
    cr_assert(!a->base.privileged_started);
    tw_service_release(top);
}

TW_TEST(service, privileged_failure_undoes_the_ones_before)
{
    tw_multi_service *m;
    cr_assert_eq(tw_multi_service_new(NULL, "top", &m), 0);
    struct rec *a = rec_new(NULL, "A", true), *b = rec_new(NULL, "B", true);
    b->fail_priv = true;
    cr_assert_eq(tw_multi_service_add(m, &a->base, NULL), 0);
    cr_assert_eq(tw_multi_service_add(m, &b->base, NULL), 0);
    events[0] = '\0';
    tw_failure *f;
    tw_service *top = tw_multi_service_base(m);
    cr_assert_eq(tw_service_privileged_start(top, &f), TW_EACCES);
    cr_assert(strstr(tw_failure_message(f), "'B'"), "%s", tw_failure_message(f));
    tw_failure_unref(f);
    cr_assert_str_eq(events, "p:A p:B x:A ");
    cr_assert(!top->privileged_started && !a->base.privileged_started);
    tw_service_release(top);
}

TW_TEST(service, a_failed_start_undoes_the_privileged_part)
{
    struct rec *a = rec_new(NULL, "A", true);
    a->fail_start = true;
    events[0] = '\0';
    cr_assert_eq(tw_service_privileged_start(&a->base, NULL), 0);
    cr_assert_eq(tw_service_start(&a->base, NULL), TW_EADDRINUSE);
    cr_assert_str_eq(events, "p:A s:A x:A ");
    cr_assert(!a->base.privileged_started && !a->base.running);
    tw_service_release(&a->base);
}

TW_TEST(service, add_get_remove)
{
    struct rec *a, *b, *c;
    tw_multi_service *m = three(NULL, &a, &b, &c);
    tw_service *top = tw_multi_service_base(m);
    cr_assert_eq(tw_multi_service_get(m, "B"), &b->base);
    cr_assert_null(tw_multi_service_get(m, "Z"));
    cr_assert_eq(tw_multi_service_child_at(m, 2), &c->base);
    cr_assert_null(tw_multi_service_child_at(m, 3));
    cr_assert_eq(tw_service_as_multi(top), m);
    cr_assert_null(tw_service_as_multi(&a->base));
    struct rec *dup = rec_new(NULL, "B", false);
    tw_failure *f;
    cr_assert_eq(tw_multi_service_add(m, &dup->base, &f), TW_EEXIST);
    cr_assert(strstr(tw_failure_message(f), "'B'"));
    tw_failure_unref(f);
    cr_assert_eq(tw_multi_service_add(m, &a->base, NULL), TW_EINVAL, "A has a parent");
    cr_assert_eq(tw_multi_service_add(m, top, NULL), TW_EINVAL, "itself");

    cr_assert_eq(tw_service_start(top, NULL), 0);
    events[0] = '\0';
    /* Added to a running multi-service: started at once. */
    struct rec *d = rec_new(NULL, "D", true);
    cr_assert_eq(tw_multi_service_add(m, &d->base, NULL), 0);
    cr_assert_str_eq(events, "p:D s:D ");
    /* A child that fails to start is not added; the caller keeps it. */
    dup->fail_start = true;
    tw_free(dup->base.name);
    dup->base.name = tw_strdup("E");
    cr_assert_eq(tw_multi_service_add(m, &dup->base, NULL), TW_EADDRINUSE);
    cr_assert_null(dup->base.parent);
    cr_assert_eq(tw_multi_service_count(m), 4);
    tw_service_release(&dup->base);

    tw_deferred *stopped;
    events[0] = '\0';
    tw_service *got = tw_multi_service_remove(m, "B", &stopped);
    cr_assert_eq(got, &b->base);
    cr_assert(fired(stopped));
    tw_deferred_unref(stopped);
    cr_assert_str_eq(events, "x:B ");
    cr_assert_null(got->parent);
    cr_assert_eq(tw_multi_service_count(m), 3);
    cr_assert_null(tw_multi_service_remove(m, "B", &stopped));
    cr_assert_null(stopped);
    tw_service_release(got);
    tw_deferred_unref(tw_service_stop(top));
    tw_service_release(top);
}

TW_TEST(service, releasing_a_running_service_stops_it_and_says_so)
{
    struct rec *a = rec_new(NULL, "A", false);
    events[0] = '\0';
    cr_assert_eq(tw_service_start(&a->base, NULL), 0);
    tw_testing_log_capture_start();
    tw_service_release(&a->base);
    size_t logged = tw_testing_log_count("released while running");
    tw_testing_log_capture_stop();
    cr_assert_eq(logged, 1);
    cr_assert_str_eq(events, "s:A x:A f:A ");
}

TW_TEST(service, keep_releases_after_the_children)
{
    struct rec *a, *b, *c;
    tw_multi_service *m = three(NULL, &a, &b, &c);
    char *data = tw_strdup("kept");
    tw_multi_service_keep(m, data, tw_free);
    tw_service_release(tw_multi_service_base(m)); /* ASan sees a leak if not released */
    cr_assert_eq(freed, 3);
}

TW_TEST(service, bad_arguments)
{
    tw_service s;
    cr_assert_eq(tw_service_init(NULL, &rec_ops, NULL, NULL), TW_EINVAL);
    cr_assert_eq(tw_service_init(&s, NULL, NULL, NULL), TW_EINVAL);
    cr_assert_eq(tw_service_start(NULL, NULL), TW_EINVAL);
    cr_assert_eq(tw_service_privileged_start(NULL, NULL), TW_EINVAL);
    tw_deferred *d = tw_service_stop(NULL);
    cr_assert(fired(d));
    tw_deferred_unref(d);
    tw_service_release(NULL);
    cr_assert_eq(tw_multi_service_new(NULL, NULL, NULL), TW_EINVAL);
    cr_assert_eq(tw_multi_service_add(NULL, NULL, NULL), TW_EINVAL);
    cr_assert_eq(tw_multi_service_count(NULL), 0);
    tw_service *out;
    cr_assert_eq(tw_timer_service_new(NULL, "t", 1, NULL, NULL, &out), TW_EINVAL);
    cr_assert_eq(tw_server_service_new(NULL, "s", NULL, NULL, &out), TW_EINVAL);
    cr_assert_null(tw_server_service_port(NULL));
}

/* ---- Server service */

static tw_endpoint *server_endpoint(tw_reactor *r, const char *desc)
{
    tw_endpoint *ep;
    cr_assert_eq(tw_endpoint_server_from_string(r, desc, &ep, NULL), 0);
    return ep;
}

static const tw_protocol_ops nothing_ops = {0};

TW_TEST(service, server_listens_in_privileged_start_once)
{
    tw_reactor *mr;
    cr_assert_eq(tw_testing_memory_reactor_new(&mr), 0);
    tw_factory factory;
    tw_factory_init(&factory, NULL, &nothing_ops, 0, NULL);
    tw_service *s;
    cr_assert_eq(tw_server_service_new(mr, "web", server_endpoint(mr, "tcp:8080"), &factory, &s),
                 0);
    cr_assert_null(tw_server_service_port(s));
    cr_assert_eq(tw_service_privileged_start(s, NULL), 0);
    cr_assert_eq(tw_testing_memory_reactor_listens(mr), 1);
    cr_assert_not_null(tw_server_service_port(s));
    cr_assert_eq(tw_service_start(s, NULL), 0);
    cr_assert_eq(tw_testing_memory_reactor_listens(mr), 1, "start does not listen again");
    const tw_testing_listen *rec = tw_testing_memory_reactor_listen(mr, 0);
    cr_assert_eq(tw_address_port(&rec->addr), 8080);
    tw_deferred *d = tw_service_stop(s);
    cr_assert(fired(d));
    tw_deferred_unref(d);
    cr_assert(rec->stopped);
    cr_assert_null(tw_server_service_port(s));
    /* Started again without a privileged start: listens in start. */
    cr_assert_eq(tw_service_start(s, NULL), 0);
    cr_assert_eq(tw_testing_memory_reactor_listens(mr), 2);
    tw_deferred_unref(tw_service_stop(s));
    tw_service_release(s);
    tw_testing_memory_reactor_free(mr);
}

TW_REACTOR_TEST(service, server_port_in_use_fails_the_start)
{
    tw_factory factory;
    tw_factory_init(&factory, NULL, &nothing_ops, 0, NULL);
    tw_service *first, *second;
    cr_assert_eq(tw_server_service_new(r, "one", server_endpoint(r, "tcp:0:interface=127.0.0.1"),
                                       &factory, &first),
                 0);
    cr_assert_eq(tw_service_start(first, NULL), 0);
    tw_address host;
    cr_assert_eq(tw_listening_port_get_host(tw_server_service_port(first), &host), 0);
    char desc[64];
    snprintf(desc, sizeof desc, "tcp:%u:interface=127.0.0.1", tw_address_port(&host));
    cr_assert_eq(tw_server_service_new(r, "two", server_endpoint(r, desc), &factory, &second), 0);
    tw_failure *f;
    cr_assert_eq(tw_service_start(second, &f), TW_EADDRINUSE);
    cr_assert(strstr(tw_failure_message(f), "service 'two' failed to start"));
    cr_assert(strstr(tw_failure_message(f), "address already in use"), "%s", tw_failure_message(f));
    tw_failure_unref(f);
    cr_assert(!second->running);
    tw_service_release(second);
    tw_deferred_unref(tw_service_stop(first));
    tw_service_release(first);
}

/* ---- Client service */

TW_TEST(service, client_service_connects_while_running)
{
    tw_reactor *mr;
    cr_assert_eq(tw_testing_memory_reactor_new(&mr), 0);
    tw_factory factory;
    tw_factory_init(&factory, NULL, &nothing_ops, 0, NULL);
    tw_endpoint *ep;
    cr_assert_eq(tw_endpoint_client_from_string(mr, "tcp:127.0.0.1:9", &ep, NULL), 0);
    tw_service *s;
    tw_client_service *cs;
    cr_assert_eq(tw_client_service_as_service(mr, "client", ep, &factory, &s, &cs), 0);
    cr_assert_not_null(cs);
    cr_assert_eq(tw_testing_memory_reactor_connects(mr), 0);
    cr_assert_eq(tw_service_start(s, NULL), 0);
    cr_assert(tw_client_service_running(cs));
    cr_assert_eq(tw_testing_memory_reactor_connects(mr), 1);
    tw_deferred *d = tw_service_stop(s);
    cr_assert(fired(d), "the attempt is cancelled: stopped at once");
    tw_deferred_unref(d);
    cr_assert(!tw_client_service_running(cs));
    tw_service_release(s);
    tw_testing_memory_reactor_free(mr);
}

/* ---- Timer service */

static int ticks;
static tw_result tick(void *arg)
{
    ticks++;
    if (arg && ticks == 2)
        return tw_result_fail(tw_failure_new(TW_EPROTOCOL, NULL, "tick failed"));
    return tw_result_ok(NULL, NULL);
}

TW_REACTOR_TEST(service, timer_calls_while_running)
{
    ticks = 0;
    tw_service *s;
    cr_assert_eq(tw_timer_service_new(r, "timer", -1, tick, NULL, &s), TW_EINVAL);
    cr_assert_eq(tw_timer_service_new(r, "timer", NAN, tick, NULL, &s), TW_EINVAL);
    cr_assert_eq(tw_timer_service_new(r, "timer", 0.01, tick, NULL, &s), 0);
    cr_assert_eq(tw_service_start(s, NULL), 0);
    cr_assert_eq(ticks, 1, "the first call at start");
    for (int i = 0; i < 200 && ticks < 3; i++)
        tw_reactor_iterate(r, 0.02);
    cr_assert_geq(ticks, 3);
    tw_deferred *d = tw_service_stop(s);
    cr_assert(fired(d));
    tw_deferred_unref(d);
    int seen = ticks;
    tw_reactor_iterate(r, 0.03);
    cr_assert_eq(ticks, seen, "no call after stop");
    tw_service_release(s);
}

TW_REACTOR_TEST(service, timer_failure_is_logged_and_stops_it)
{
    ticks = 0;
    tw_service *s;
    cr_assert_eq(tw_timer_service_new(r, "timer", 0.01, tick, (void *)1, &s), 0);
    tw_testing_log_capture_start();
    cr_assert_eq(tw_service_start(s, NULL), 0);
    for (int i = 0; i < 200 && ticks < 2; i++)
        tw_reactor_iterate(r, 0.02);
    tw_reactor_iterate(r, 0.03);
    size_t logged = tw_testing_log_count("tick failed");
    tw_testing_log_capture_stop();
    cr_assert_eq(ticks, 2, "stopped by the failure");
    cr_assert_eq(logged, 1);
    tw_deferred_unref(tw_service_stop(s));
    tw_service_release(s);
}

/* ---- Allocation failure: a plugin-like tree of two servers */

TW_TEST(service, allocation_failure_is_clean)
{
    tw_reactor *mr;
    cr_assert_eq(tw_testing_memory_reactor_new(&mr), 0);
    tw_factory factory;
    tw_factory_init(&factory, NULL, &nothing_ops, 0, NULL);
    for (long n = 0;; n++) {
        tw_testing_fail_alloc_after(n);
        int rc = 0;
        tw_multi_service *m = NULL;
        tw_service *a = NULL, *b = NULL;
        tw_endpoint *ea = NULL, *eb = NULL;
        rc = tw_multi_service_new(mr, "top", &m);
        if (rc == 0)
            rc = tw_endpoint_server_from_string(mr, "tcp:1", &ea, NULL);
        if (rc == 0)
            rc = tw_server_service_new(mr, "a", ea, &factory, &a);
        if (rc == 0 && (rc = tw_multi_service_add(m, a, NULL)) < 0)
            tw_service_release(a);
        if (rc == 0)
            rc = tw_endpoint_server_from_string(mr, "tcp:2", &eb, NULL);
        if (rc == 0)
            rc = tw_server_service_new(mr, "b", eb, &factory, &b);
        if (rc == 0 && (rc = tw_multi_service_add(m, b, NULL)) < 0)
            tw_service_release(b);
        tw_failure *f = NULL;
        if (rc == 0)
            rc = tw_service_start(tw_multi_service_base(m), &f);
        tw_testing_fail_alloc_off();
        if (rc < 0) {
            cr_assert_eq(rc, TW_ENOMEM, "n=%ld rc=%d", n, rc);
            cr_assert(!m || !tw_multi_service_base(m)->running);
        }
        tw_failure_unref(f);
        if (m) {
            tw_deferred_unref(tw_service_stop(tw_multi_service_base(m)));
            tw_service_release(tw_multi_service_base(m));
        }
        if (rc == 0)
            break;
        cr_assert_lt(n, 1000);
    }
    tw_testing_memory_reactor_free(mr);
}
