/* Protocols and factories (protocol.h): the calls a transport makes, the
 * default builder, counted start/stop. */
#include "twtest.h"
#include <twine/protocol.h>

struct counts {
    int made, data, lost, freed, started, stopped;
    size_t bytes;
    int lost_code;
};

struct proto {
    tw_protocol base;
    struct counts *c;
    long payload[4];
};

static struct counts *counts_of(tw_protocol *p)
{
    return p->factory ? p->factory->data : ((struct proto *)p)->c;
}

static void p_made(tw_protocol *p)
{
    counts_of(p)->made++;
}
static void p_data(tw_protocol *p, const char *d, size_t n)
{
    counts_of(p)->data++;
    counts_of(p)->bytes += n;
}
static void p_lost(tw_protocol *p, tw_failure *reason)
{
    counts_of(p)->lost++;
    counts_of(p)->lost_code = tw_failure_code(reason);
}
static void p_free(tw_protocol *p)
{
    cr_assert_null(p->transport, "transport still set in free");
    counts_of(p)->freed++;
}

static const tw_protocol_ops full_ops = {
    .connection_made = p_made,
    .data_received = p_data,
    .connection_lost = p_lost,
    .free = p_free,
};

TW_TEST(protocol, default_builder_and_release)
{
    struct counts c = {0};
    tw_factory f;
    tw_factory_init(&f, NULL, &full_ops, sizeof(struct proto), &c);
    cr_assert_eq(f.protocol_size, sizeof(struct proto));
    tw_address a = {0};
    tw_protocol *p = tw_factory_build_protocol(&f, &a);
    cr_assert_not_null(p);
    cr_assert_eq(p->ops, &full_ops);
    cr_assert_eq(p->factory, &f);
    cr_assert_null(p->transport);
    struct proto *pp = (struct proto *)p;
    cr_assert_eq(pp->payload[3], 0, "zeroed");
    tw_transport *fake = (tw_transport *)&c; /* never dereferenced */
    tw_protocol_make_connection(p, fake);
    cr_assert_eq(p->transport, fake);
    cr_assert_eq(c.made, 1);
    tw_protocol_data_received(p, "abc", 3);
    cr_assert_eq(c.bytes, 3);
    tw_failure *why = tw_failure_new(TW_ECONNDONE, NULL, NULL);
    tw_protocol_connection_lost(p, why);
    tw_failure_unref(why);
    cr_assert_eq(c.lost_code, TW_ECONNDONE);
    tw_protocol_release(p); /* frees the memory: ASan would see a leak */
    cr_assert_eq(c.freed, 1);
    tw_protocol_release(NULL);
}

TW_TEST(protocol, null_ops_are_skipped)
{
    static const tw_protocol_ops none = {0};
    tw_protocol p;
    tw_protocol_init(&p, &none);
    cr_assert_null(p.factory);
    cr_assert_not(p.default_built);
    tw_protocol_make_connection(&p, NULL);
    tw_protocol_data_received(&p, "x", 1);
    tw_failure *why = tw_failure_new(TW_ECONNLOST, NULL, NULL);
    tw_protocol_connection_lost(&p, why);
    tw_failure_unref(why);
    tw_protocol_release(&p); /* hand-made: not freed by the library */
    cr_assert_null(p.transport);
}

/* A hand-made protocol whose free releases its own memory. */
static int self_freed;
static void free_self(tw_protocol *p)
{
    self_freed++;
    tw_free(p);
}

TW_TEST(protocol, hand_made_free_may_release_itself)
{
    static const tw_protocol_ops ops = {.free = free_self};
    tw_protocol *p = tw_malloc(sizeof *p);
    cr_assert_not_null(p);
    tw_protocol_init(p, &ops);
    tw_protocol_release(p);
    cr_assert_eq(self_freed, 1);
}

static tw_protocol *custom_build(tw_factory *f, const tw_address *addr)
{
    struct proto *p = tw_calloc(1, sizeof *p);
    if (!p)
        return NULL;
    tw_protocol_init(&p->base, f->protocol_ops);
    p->c = f->data;
    return &p->base;
}

static void custom_free(tw_protocol *p)
{
    ((struct proto *)p)->c->freed++;
    tw_free(p);
}

TW_TEST(protocol, custom_builder_gets_the_factory_set)
{
    static const tw_protocol_ops ops = {.free = custom_free};
    static const tw_factory_ops fops = {.build_protocol = custom_build};
    struct counts c = {0};
    tw_factory f;
    tw_factory_init(&f, &fops, &ops, 0, &c);
    cr_assert_eq(f.protocol_size, sizeof(tw_protocol));
    tw_protocol *p = tw_factory_build_protocol(&f, NULL);
    cr_assert_not_null(p);
    cr_assert_eq(p->factory, &f, "the builder left it NULL: set by build_protocol");
    cr_assert_not(p->default_built);
    tw_protocol_release(p);
    cr_assert_eq(c.freed, 1);
}

TW_TEST(protocol, default_builder_refuses_without_ops_or_memory)
{
    tw_factory f;
    tw_factory_init(&f, NULL, NULL, 0, NULL);
    cr_assert_null(tw_factory_build_protocol(&f, NULL));
    cr_assert_null(tw_factory_build_protocol(NULL, NULL));
    tw_factory_init(&f, NULL, &full_ops, sizeof(struct proto), NULL);
    tw_testing_fail_alloc_after(0);
    tw_protocol *p = tw_factory_build_default(&f, NULL);
    tw_testing_fail_alloc_off();
    cr_assert_null(p);
}

static void f_start(tw_factory *f)
{
    ((struct counts *)f->data)->started++;
}
static void f_stop(tw_factory *f)
{
    ((struct counts *)f->data)->stopped++;
}

TW_TEST(protocol, start_and_stop_are_counted)
{
    static const tw_factory_ops fops = {.start_factory = f_start, .stop_factory = f_stop};
    struct counts c = {0};
    tw_factory f;
    tw_factory_init(&f, &fops, &full_ops, 0, &c);
    tw_factory_do_start(&f);
    tw_factory_do_start(&f);
    cr_assert_eq(c.started, 1);
    tw_factory_do_stop(&f);
    cr_assert_eq(c.stopped, 0);
    tw_factory_do_stop(&f);
    cr_assert_eq(c.stopped, 1);
    tw_testing_log_capture_start();
    tw_factory_do_stop(&f);
    size_t logged = tw_testing_log_count("stopped more times than it was started");
    tw_testing_log_capture_stop();
    cr_assert_eq(c.stopped, 1, "a stop without a start is ignored");
    cr_assert_eq(logged, 1);
    tw_factory_do_start(&f);
    cr_assert_eq(c.started, 2);
    tw_factory_do_stop(&f);
    cr_assert_eq(c.stopped, 2);
    /* Without ops: counted all the same, nothing to call. */
    tw_factory g;
    tw_factory_init(&g, NULL, &full_ops, 0, NULL);
    tw_factory_do_start(&g);
    tw_factory_do_stop(&g);
    cr_assert_eq(g.users, 0);
}
