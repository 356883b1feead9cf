/* The process endpoint: an ordinary protocol over a child. */
#include <twine/endpoint.h>

#include "proc-test.h"

struct peer {
    tw_protocol base;
    char got[4096];
    size_t len;
    int made, lost, write_lost, freed;
    int lost_code;
    char lost_msg[256];
    int *freed_flag;
};

static void peer_made(tw_protocol *p)
{
    ((struct peer *)p)->made++;
    cr_assert(tw_process_from_transport(p->transport));
    cr_assert_eq(p->transport->protocol, p);
}

static void peer_data(tw_protocol *p, const char *data, size_t len)
{
    struct peer *e = (struct peer *)p;
    if (e->len + len < sizeof e->got) {
        memcpy(e->got + e->len, data, len);
        e->len += len;
        e->got[e->len] = '\0';
    }
}

static void peer_lost(tw_protocol *p, tw_failure *reason)
{
    struct peer *e = (struct peer *)p;
    e->lost++;
    e->lost_code = tw_failure_code(reason);
    snprintf(e->lost_msg, sizeof e->lost_msg, "%s", tw_failure_message(reason));
    cr_assert(p->transport, "transport set during connection_lost");
}

static void peer_write_lost(tw_protocol *p)
{
    ((struct peer *)p)->write_lost++;
}

static void peer_free(tw_protocol *p)
{
    struct peer *e = (struct peer *)p;
    e->freed++;
    if (e->freed_flag)
        (*e->freed_flag)++;
}

static const tw_protocol_ops peer_ops = {
    .connection_made = peer_made,
    .data_received = peer_data,
    .connection_lost = peer_lost,
    .write_connection_lost = peer_write_lost,
    .free = peer_free,
};

/* The factory hands out one protocol the test owns. */
struct one {
    tw_factory f;
    struct peer peer;
    tw_address addr;
    int starts, stops;
};

static tw_protocol *one_build(tw_factory *f, const tw_address *addr)
{
    struct one *o = (struct one *)f;
    o->addr = *addr;
    tw_protocol_init(&o->peer.base, &peer_ops);
    return &o->peer.base;
}

static void one_start(tw_factory *f)
{
    ((struct one *)f)->starts++;
}

static void one_stop(tw_factory *f)
{
    ((struct one *)f)->stops++;
}

static const tw_factory_ops one_ops = {
    .build_protocol = one_build, .start_factory = one_start, .stop_factory = one_stop};

static void run_until(tw_reactor *r, int *flag)
{
    for (int i = 0; i < 250 && !*flag; i++)
        tw_reactor_iterate(r, 0.02);
    cr_assert(*flag, "did not happen");
}

TW_REACTOR_TEST(process_endpoint, cat_as_a_peer)
{
    tw_endpoint *ep;
    cr_assert_eq(tw_process_endpoint_new(r, "cat", NULL, NULL, NULL, NULL, TW_STDERR_LOG, &ep), 0);
    cr_assert_null(tw_endpoint_get_spec(ep));
    struct one o = {0};
    tw_factory_init(&o.f, &one_ops, NULL, 0, NULL);
    tw_deferred *d = tw_endpoint_connect(ep, &o.f);
    tw_result res = twtest_wait(r, d);
    cr_assert(!tw_result_is_failure(res));
    cr_assert_eq(res.value, &o.peer.base, "fires with the protocol");
    cr_assert_eq(o.peer.made, 1);
    cr_assert_eq(o.addr.u.proc.family, TW_AF_PROCESS);
    cr_assert_eq(o.starts, 1);
    tw_deferred_unref(d);
    tw_transport *t = o.peer.base.transport;
    cr_assert_eq(tw_transport_write(t, "round trip\n", 11), 0);
    /* Half-close: lose_connection would close cat's stdout at once too. */
    cr_assert_eq(tw_transport_lose_write_connection(t), 0);
    run_until(r, &o.peer.freed);
    cr_assert_str_eq(o.peer.got, "round trip\n");
    cr_assert_eq(o.peer.lost, 1);
    cr_assert_eq(o.peer.lost_code, TW_ECONNDONE, "cat exited with 0: %s", o.peer.lost_msg);
    cr_assert_eq(o.peer.write_lost, 1, "stdin closing is write_connection_lost");
    cr_assert_eq(o.stops, 1);
    /* Connecting twice: two children. */
    o = (struct one){0};
    tw_factory_init(&o.f, &one_ops, NULL, 0, NULL);
    d = tw_endpoint_connect(ep, &o.f);
    res = twtest_wait(r, d);
    cr_assert(!tw_result_is_failure(res));
    tw_deferred_unref(d);
    tw_transport_lose_connection(o.peer.base.transport);
    run_until(r, &o.peer.freed);
    cr_assert_eq(o.peer.lost_code, TW_ECONNDONE, "%s", o.peer.lost_msg);
    cr_assert_eq(o.peer.len, 0);
    tw_endpoint_free(ep);
}

TW_REACTOR_TEST(process_endpoint, failing_child_and_stderr)
{
    tw_testing_log_capture_start();
    char *argv[] = {"sh", "-c", "echo complaint >&2; exit 4", NULL};
    tw_endpoint *ep;
    cr_assert_eq(
        tw_process_endpoint_new(r, "/bin/sh", argv, NULL, "/tmp", NULL, TW_STDERR_LOG, &ep), 0);
    struct one o = {0};
    tw_factory_init(&o.f, &one_ops, NULL, 0, NULL);
    tw_deferred *d = tw_endpoint_connect(ep, &o.f);
    tw_result res = twtest_wait(r, d);
    cr_assert(!tw_result_is_failure(res));
    tw_deferred_unref(d);
    run_until(r, &o.peer.freed);
    cr_assert_eq(o.peer.lost_code, TW_EPROCESSTERMINATED);
    cr_assert(strstr(o.peer.lost_msg, "exited with code 4"), "%s", o.peer.lost_msg);
    cr_assert_eq(tw_testing_log_count("complaint"), 1, "stderr logged");
    tw_endpoint_free(ep);

    cr_assert_eq(tw_process_endpoint_new(r, "/bin/sh", argv, NULL, NULL, NULL, TW_STDERR_DROP, &ep),
                 0);
    o = (struct one){0};
    tw_factory_init(&o.f, &one_ops, NULL, 0, NULL);
    d = tw_endpoint_connect(ep, &o.f);
    res = twtest_wait(r, d);
    cr_assert(!tw_result_is_failure(res));
    tw_deferred_unref(d);
    run_until(r, &o.peer.freed);
    cr_assert_eq(tw_testing_log_count("complaint"), 1, "dropped this time");
    tw_testing_log_capture_stop();
    tw_endpoint_free(ep);
}

TW_REACTOR_TEST(process_endpoint, missing_executable_fails_the_connect)
{
    tw_endpoint *ep;
    cr_assert_eq(
        tw_process_endpoint_new(r, "/no/such/exe", NULL, NULL, NULL, NULL, TW_STDERR_LOG, &ep), 0);
    struct one o = {0};
    tw_factory_init(&o.f, &one_ops, NULL, 0, NULL);
    tw_deferred *d = tw_endpoint_connect(ep, &o.f);
    tw_result res = twtest_wait(r, d);
    cr_assert(tw_result_is_failure(res));
    cr_assert_eq(tw_failure_code(res.failure), TW_ENOENT);
    cr_assert(strstr(tw_failure_message(res.failure), "/no/such/exe"));
    tw_result_release(&res);
    tw_deferred_unref(d);
    cr_assert_eq(o.peer.freed, 1, "the protocol built for it is released");
    cr_assert_eq(o.peer.made, 0);
    cr_assert_eq(o.stops, 1);
    /* Listening makes no sense for it. */
    d = tw_endpoint_listen(ep, &o.f);
    res = twtest_wait(r, d);
    cr_assert_eq(tw_failure_code(res.failure), TW_ENOTSUP);
    tw_result_release(&res);
    tw_deferred_unref(d);
    tw_endpoint_free(ep);
}

TW_REACTOR_TEST(process_endpoint, connect_protocol_and_options_copied)
{
    /* The map is copied: the caller's may go. */
    tw_child_fd map[] = {{0, TW_CHILD_FD_WRITE, -1}, {1, TW_CHILD_FD_READ, -1}};
    tw_process_options opts = {.child_fds = map, .n_child_fds = 2};
    char *argv[] = {"sh", "-c", "echo \"$X\"; ls /proc/self/fd", NULL};
    char *env[] = {"X=copied", NULL};
    tw_endpoint *ep;
    cr_assert_eq(tw_process_endpoint_new(r, "/bin/sh", argv, env, NULL, &opts, TW_STDERR_LOG, &ep),
                 0);
    memset(map, 0, sizeof map);
    argv[2] = "exit 9";
    env[0] = "X=changed";
    struct peer *pr = tw_calloc(1, sizeof *pr);
    tw_protocol_init(&pr->base, &peer_ops);
    int freed = 0;
    pr->freed_flag = &freed;
    tw_deferred *d = tw_endpoint_connect_protocol(ep, &pr->base);
    tw_result res = twtest_wait(r, d);
    cr_assert(!tw_result_is_failure(res));
    tw_deferred_unref(d);
    tw_transport_lose_write_connection(pr->base.transport);
    run_until(r, &freed);
    cr_assert(strncmp(pr->got, "copied\n0\n1\n", 11) == 0, "%s", pr->got);
    tw_free(pr);
    tw_endpoint_free(ep);
}

TW_TEST(process_endpoint, bad_arguments_and_allocation_failure)
{
    tw_reactor *r;
    cr_assert_eq(tw_reactor_new(&r, NULL), 0);
    tw_endpoint *ep;
    cr_assert_eq(tw_process_endpoint_new(NULL, "x", NULL, NULL, NULL, NULL, 0, &ep), TW_EINVAL);
    cr_assert_eq(tw_process_endpoint_new(r, NULL, NULL, NULL, NULL, NULL, 0, &ep), TW_EINVAL);
    char *argv[] = {"a", "b", NULL};
    tw_child_fd map[] = {{1, TW_CHILD_FD_READ, -1}};
    tw_process_options opts = {.child_fds = map, .n_child_fds = 1};
    for (long n = 0;; n++) {
        tw_testing_fail_alloc_after(n);
        int rc = tw_process_endpoint_new(r, "/bin/true", argv, argv, "/", &opts, 0, &ep);
        tw_testing_fail_alloc_off();
        if (rc == 0)
            break;
        cr_assert_eq(rc, TW_ENOMEM);
    }
    tw_endpoint_free(ep);
    tw_reactor_free(r);
}
