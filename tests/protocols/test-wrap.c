/* Protocol wrappers and wrapping factories: every event and call forwarded,
 * hooks overriding them, the haproxy-style delayed connection_made, the
 * wrapped protocol's lifetime, factory forwarding, refusal and out of memory. */
#include <fcntl.h>
#include <stdio.h>

#include <twine/wrap.h>

#include "rec-protocol.h"

static struct rec_events ev;
static struct rec_factory rf;
static tw_wrapping_factory wf;

static void setup_plain(const tw_protocol_ops *ops, const tw_wrapper_hooks *hooks, size_t size,
                        const tw_wrapping_factory_hooks *fhooks)
{
    memset(&ev, 0, sizeof ev);
    rec_factory_init(&rf, &ev, ops);
    tw_wrapping_factory_init(&wf, &rf.base, hooks, size, fhooks);
}

TW_TEST(wrap, forwards_events_and_releases_the_wrapped_protocol)
{
    setup_plain(&rec_ops, NULL, 0, NULL);
    tw_string_transport *st = rec_connect(&wf.base, "10.1.2.3", 4000);
    cr_assert_eq(ev.made, 1);
    cr_assert(ev.transport != NULL);
    cr_assert_neq(ev.transport, &st->base, "the wrapped protocol gets the wrapper's transport");
    tw_wrapper *w = tw_wrapper_from_protocol(st->base.protocol);
    cr_assert(w);
    cr_assert_eq(&w->transport, ev.transport);
    cr_assert_eq(w->transport.protocol, w->wrapped);
    cr_assert_eq(w->wfactory, &wf);
    cr_assert_eq(tw_address_port(&w->addr), 4000);
    cr_assert_eq(tw_wrapping_factory_connected(&wf), 1);

    tw_string_transport_feed(st, "abc", 3);
    tw_string_transport_feed(st, "de", 2);
    cr_assert_eq(ev.len, 5);
    cr_assert_eq(memcmp(ev.data, "abcde", 5), 0);

    /* Half-close and descriptors, as the real transport would call them. */
    cr_assert_null(st->base.protocol->ops->read_connection_lost,
                   "a wrapped protocol without half-close keeps close-on-EOF");
    st->base.protocol->ops->write_connection_lost(st->base.protocol);
    cr_assert_eq(ev.write_lost, 1);
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    st->base.protocol->ops->fd_received(st->base.protocol, fds[0]);
    cr_assert_eq(ev.fds, 1);
    close(fds[1]);

    cr_assert_eq(tw_string_transport_lose(st, -ECONNRESET), 0);
    cr_assert_eq(ev.lost, 1);
    cr_assert_eq(ev.lost_code, -ECONNRESET);
    cr_assert_eq(ev.freed, 1);
    cr_assert_eq(tw_wrapping_factory_connected(&wf), 0);
    tw_string_transport_free(st);
}

TW_TEST(wrap, half_close_is_the_wrapped_protocols_choice)
{
    setup_plain(&rec_half_ops, NULL, 0, NULL);
    tw_string_transport *st = rec_connect(&wf.base, NULL, 0);
    tw_protocol *wp = st->base.protocol;
    cr_assert(wp->ops->read_connection_lost);
    wp->ops->read_connection_lost(wp);
    cr_assert_eq(ev.read_lost, 1);
    cr_assert_eq(st->lose_calls, 0);
    tw_string_transport_free(st);
    cr_assert_eq(ev.lost, 1);
    cr_assert_eq(ev.freed, 1);
}

TW_TEST(wrap, descriptor_without_receiver_is_closed)
{
    static const tw_protocol_ops no_fd_ops = {.free = rec_free};
    setup_plain(&no_fd_ops, NULL, 0, NULL);
    tw_string_transport *st = rec_connect(&wf.base, NULL, 0);
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    st->base.protocol->ops->fd_received(st->base.protocol, fds[0]);
    cr_assert_eq(fcntl(fds[0], F_GETFD), -1, "the wrapper closed the descriptor");
    close(fds[1]);
    tw_string_transport_free(st);
    cr_assert_eq(ev.freed, 1);
}

struct counting_producer {
    tw_producer base;
    int pauses, resumes, stops;
};

static void cp_pause(tw_producer *p)
{
    ((struct counting_producer *)p)->pauses++;
}

static void cp_resume(tw_producer *p)
{
    ((struct counting_producer *)p)->resumes++;
}

static void cp_stop(tw_producer *p)
{
    ((struct counting_producer *)p)->stops++;
}

static const tw_producer_ops cp_ops = {cp_pause, cp_resume, cp_stop};

static int zc_released;
static void zc_release(void *arg)
{
    zc_released++;
}

TW_TEST(wrap, forwards_every_transport_call)
{
    setup_plain(&rec_ops, NULL, 0, NULL);
    tw_string_transport *st = rec_connect(&wf.base, "192.0.2.7", 1234);
    tw_transport *t = ev.transport;
    cr_assert_eq(t->reactor, st->base.reactor);

    cr_assert_eq(tw_transport_write(t, "one,", 4), 0);
    struct iovec iov[2] = {{"two", 3}, {",", 1}};
    cr_assert_eq(tw_transport_write_sequence(t, iov, 2), 0);
    zc_released = 0;
    cr_assert_eq(tw_transport_write_zerocopy(t, "three", 5, zc_release, NULL), 0);
    size_t n;
    const char *out = tw_string_transport_value(st, &n);
    cr_assert_eq(n, 13);
    cr_assert_eq(memcmp(out, "one,two,three", 13), 0);

    tw_address a;
    cr_assert_eq(tw_transport_get_peer(t, &a), 0);
    cr_assert_eq(tw_address_port(&a), 1234);
    cr_assert_eq(tw_transport_get_host(t, &a), 0);
    cr_assert_eq(tw_address_port(&a), tw_address_port(&st->host));

    cr_assert_eq(tw_transport_pause_producing(t), 0);
    cr_assert(st->paused);
    cr_assert_eq(tw_transport_resume_producing(t), 0);
    cr_assert_not(st->paused);
    cr_assert_eq(st->pause_calls, 1);
    cr_assert_eq(st->resume_calls, 1);

    struct counting_producer prod = {.base.ops = &cp_ops};
    cr_assert_eq(tw_transport_register_producer(t, &prod.base, true), 0);
    cr_assert_eq(st->producer, &prod.base);
    cr_assert(st->streaming);
    cr_assert_eq(tw_transport_register_producer(t, &prod.base, true), TW_EBUSY);
    cr_assert_eq(tw_transport_unregister_producer(t), 0);
    cr_assert_null(st->producer);

    cr_assert_eq(tw_transport_set_write_buffer_limits(t, 100, 10), 0);
    st->queue_writes = true;
    cr_assert_eq(tw_transport_write(t, "12345", 5), 0);
    cr_assert_eq(tw_transport_write_buffer_size(t), 5);
    cr_assert_eq(tw_transport_set_option(t, TW_OPT_TCP_NODELAY, 1), 0);
    cr_assert_eq(st->nodelay, 1);
    int fd = 0;
    cr_assert_eq(tw_transport_send_fds(t, &fd, 1), tw_transport_send_fds(&st->base, &fd, 1),
                 "send_fds answers what the real transport answers");

    cr_assert_eq(tw_transport_lose_write_connection(t), 0);
    cr_assert_eq(st->lose_write_calls, 1);
    cr_assert_eq(tw_transport_lose_connection(t), 0);
    cr_assert_eq(st->lose_calls, 1);
    cr_assert_eq(tw_transport_abort_connection(t), 0);
    cr_assert_eq(st->abort_calls, 1);

    tw_string_transport_free(st);
    cr_assert_eq(zc_released, 1);
    cr_assert_eq(ev.freed, 1);
}

TW_TEST(wrap, calls_after_the_connection_is_lost_are_refused)
{
    setup_plain(&rec_ops, NULL, 0, NULL);
    ev.keep_ref = true;
    tw_string_transport *st = rec_connect(&wf.base, NULL, 0);
    tw_transport *t = ev.transport;
    tw_string_transport_lose(st, TW_ECONNDONE);
    tw_string_transport_free(st); /* the real transport is gone */
    cr_assert_eq(ev.freed, 1);

    tw_address a;
    cr_assert_eq(tw_transport_write(t, "x", 1), TW_ENOTCONN);
    struct iovec iov = {"x", 1};
    cr_assert_eq(tw_transport_write_sequence(t, &iov, 1), TW_ENOTCONN);
    cr_assert_eq(tw_transport_write_zerocopy(t, "x", 1, zc_release, NULL), TW_ENOTCONN);
    cr_assert_eq(tw_transport_get_peer(t, &a), TW_ENOTCONN);
    cr_assert_eq(tw_transport_get_host(t, &a), TW_ENOTCONN);
    cr_assert_eq(tw_transport_pause_producing(t), TW_ENOTCONN);
    cr_assert_eq(tw_transport_resume_producing(t), TW_ENOTCONN);
    struct counting_producer prod = {.base.ops = &cp_ops};
    cr_assert_eq(tw_transport_register_producer(t, &prod.base, true), TW_ENOTCONN);
    cr_assert_eq(tw_transport_unregister_producer(t), TW_ENOTCONN);
    cr_assert_eq(tw_transport_write_buffer_size(t), 0);
    cr_assert_eq(tw_transport_set_write_buffer_limits(t, 10, 1), TW_ENOTCONN);
    cr_assert_eq(tw_transport_set_option(t, TW_OPT_TCP_NODELAY, 1), TW_ENOTCONN);
    cr_assert_eq(tw_transport_lose_write_connection(t), TW_ENOTCONN);
    cr_assert_eq(tw_transport_lose_connection(t), 0, "closing a closed transport does nothing");
    cr_assert_eq(tw_transport_abort_connection(t), 0);
    tw_transport_unref(t); /* the wrapper's memory goes now (ASan checks) */
}

TW_TEST(wrap, wrapped_protocol_may_close_from_its_callbacks)
{
    setup_plain(&rec_ops, NULL, 0, NULL);
    ev.close_on_made = true;
    tw_string_transport *st = rec_connect(&wf.base, NULL, 0);
    cr_assert_eq(st->lose_calls, 1);
    ev.close_on_data = true;
    tw_string_transport_feed(st, "late", 4);
    cr_assert_eq(ev.len, 4, "bytes fed after a close are still delivered, as by a transport");
    cr_assert_eq(tw_transport_write(ev.transport, "x", 1), TW_ENOTCONN);
    tw_string_transport_lose(st, TW_ECONNDONE);
    cr_assert_eq(ev.lost_code, TW_ECONNDONE);
    tw_string_transport_free(st);
    cr_assert_eq(ev.freed, 1);
}

/* ---- Hooks */

static size_t hooked_bytes;
static tw_address fake_peer;

static void count_data(tw_wrapper *w, const char *data, size_t len)
{
    hooked_bytes += len;
    tw_wrapper_deliver(w, data, len);
}

static int fixed_peer(const tw_wrapper *w, tw_address *out)
{
    *out = fake_peer;
    return 0;
}

/* Writes go out in upper case: a hook may change what passes. */
static int upper_write(tw_wrapper *w, const void *data, size_t len)
{
    char buf[64];
    cr_assert(len <= sizeof buf);
    for (size_t i = 0; i < len; i++) {
        char c = ((const char *)data)[i];
        buf[i] = c >= 'a' && c <= 'z' ? (char)(c - 32) : c;
    }
    return tw_transport_write(tw_wrapper_real(w), buf, len);
}

TW_TEST(wrap, hooks_override_what_they_set)
{
    static const tw_wrapper_hooks hooks = {
        .data_received = count_data, .get_peer = fixed_peer, .write = upper_write};
    hooked_bytes = 0;
    cr_assert_eq(tw_address_from_ip(&fake_peer, "203.0.113.9", 777), 0);
    setup_plain(&rec_ops, &hooks, 0, NULL);
    tw_string_transport *st = rec_connect(&wf.base, NULL, 0);
    cr_assert_eq(ev.peer_rc_at_made, 0);
    cr_assert_eq(tw_address_port(&ev.peer_at_made), 777);
    tw_string_transport_feed(st, "12345", 5);
    cr_assert_eq(hooked_bytes, 5);
    cr_assert_eq(ev.len, 5);
    tw_transport_write(ev.transport, "hi", 2);
    cr_assert_str_eq(tw_string_transport_value(st, NULL), "HI");
    /* What the hooks leave alone is still forwarded. */
    tw_address a;
    cr_assert_eq(tw_transport_get_host(ev.transport, &a), 0);
    cr_assert_eq(tw_address_port(&a), tw_address_port(&st->host));
    tw_string_transport_free(st);
}

/* ---- The haproxy endpoint's pattern: hold connection_made back until a
 * header line "PEER ip port\n" was read, report that peer, then deliver the
 * bytes that followed. */

struct hp_wrapper {
    tw_wrapper w;
    char head[64];
    size_t n;
    bool have;
    tw_address peer;
    int made_rc;
};

static int hp_frees;

static void hp_made(tw_wrapper *w)
{
    /* Wait for the header. */
}

static void hp_data(tw_wrapper *w, const char *data, size_t len)
{
    struct hp_wrapper *h = (struct hp_wrapper *)w;
    if (h->have) {
        tw_wrapper_deliver(w, data, len);
        return;
    }
    cr_assert_eq(tw_wrapper_deliver(w, data, len), TW_ENOTCONN, "nothing before the header");
    size_t i = 0;
    while (i < len && h->n < sizeof h->head - 1) {
        char c = data[i++];
        if (c == '\n') {
            h->head[h->n] = 0;
            char ip[48];
            unsigned port;
            if (sscanf(h->head, "PEER %47s %u", ip, &port) != 2 ||
                tw_address_from_ip(&h->peer, ip, port) < 0) {
                tw_transport_abort_connection(tw_wrapper_real(w));
                return;
            }
            h->have = true;
            h->made_rc = tw_wrapper_make_wrapped_connection(w);
            cr_assert_eq(tw_wrapper_make_wrapped_connection(w), TW_EALREADYCALLED);
            if (i < len)
                tw_wrapper_deliver(w, data + i, len - i);
            return;
        }
        h->head[h->n++] = c;
    }
}

static int hp_peer(const tw_wrapper *w, tw_address *out)
{
    const struct hp_wrapper *h = (const struct hp_wrapper *)w;
    if (!h->have)
        return tw_transport_get_peer(tw_wrapper_real(w), out);
    *out = h->peer;
    return 0;
}

static void hp_free(tw_wrapper *w)
{
    hp_frees++;
}

static const tw_wrapper_hooks hp_hooks = {
    .connection_made = hp_made, .data_received = hp_data, .get_peer = hp_peer, .free = hp_free};

TW_TEST(wrap, delayed_connection_made_reports_the_header_peer)
{
    setup_plain(&rec_ops, &hp_hooks, sizeof(struct hp_wrapper), NULL);
    tw_string_transport *st = rec_connect(&wf.base, "127.0.0.1", 5000);
    struct hp_wrapper *h = (struct hp_wrapper *)tw_wrapper_from_protocol(st->base.protocol);
    cr_assert_eq(ev.made, 0, "held back until the header is read");
    cr_assert_eq(tw_wrapping_factory_connected(&wf), 1);
    tw_string_transport_feed(st, "PEER 10.0.", 10);
    cr_assert_eq(ev.made, 0);
    cr_assert_eq(ev.len, 0);
    tw_string_transport_feed(st, "0.1 999\nhello", 13);
    cr_assert_eq(h->made_rc, 0);
    cr_assert_eq(ev.made, 1);
    cr_assert_eq(ev.peer_rc_at_made, 0);
    char buf[TW_ADDRESS_STRLEN];
    cr_assert_str_eq(tw_address_format(&ev.peer_at_made, buf, sizeof buf), "10.0.0.1:999");
    cr_assert_eq(ev.len, 5);
    cr_assert_eq(memcmp(ev.data, "hello", 5), 0);
    tw_string_transport_feed(st, " world", 6);
    cr_assert_eq(ev.len, 11);
    tw_string_transport_lose(st, TW_ECONNDONE);
    cr_assert_eq(ev.lost, 1);
    cr_assert_str_eq(tw_address_format(&ev.peer_at_lost, buf, sizeof buf), "10.0.0.1:999");
    tw_string_transport_free(st);
    cr_assert_eq(ev.freed, 1);
}

TW_TEST(wrap, delayed_connection_lost_before_the_header_only_frees_the_wrapped)
{
    hp_frees = 0;
    setup_plain(&rec_ops, &hp_hooks, sizeof(struct hp_wrapper), NULL);
    tw_string_transport *st = rec_connect(&wf.base, NULL, 0);
    tw_string_transport_feed(st, "PEER 1", 6);
    tw_string_transport_lose(st, TW_ECONNDONE);
    cr_assert_eq(ev.made, 0);
    cr_assert_eq(ev.lost, 0, "no connection_lost for a connection never made");
    cr_assert_eq(ev.freed, 1);
    cr_assert_eq(hp_frees, 1);
    cr_assert_eq(tw_wrapping_factory_connected(&wf), 0);
    tw_string_transport_free(st);
}

TW_TEST(wrap, delayed_bad_header_aborts)
{
    setup_plain(&rec_half_ops, &hp_hooks, sizeof(struct hp_wrapper), NULL);
    tw_string_transport *st = rec_connect(&wf.base, NULL, 0);
    tw_string_transport_feed(st, "GET / HTTP/1.0\n", 15);
    cr_assert_eq(st->abort_calls, 1);
    /* End of file before the header, on a half-closeable wrapped protocol:
     * nothing more can come, so the wrapper closes. */
    st->base.protocol->ops->read_connection_lost(st->base.protocol);
    cr_assert_eq(ev.read_lost, 0);
    cr_assert_eq(st->lose_calls, 1);
    tw_string_transport_free(st);
    cr_assert_eq(ev.made, 0);
    cr_assert_eq(ev.freed, 1);
}

/* ---- The factory */

TW_TEST(wrap, factory_forwards_start_stop_and_client_callbacks)
{
    setup_plain(&rec_ops, NULL, 0, NULL);
    cr_assert_eq(tw_wrapping_factory_from_factory(&wf.base), &wf);
    cr_assert_null(tw_wrapping_factory_from_factory(&rf.base));
    tw_factory_do_start(&wf.base);
    tw_factory_do_start(&wf.base);
    cr_assert_eq(rf.starts, 1);
    tw_factory_do_stop(&wf.base);
    cr_assert_eq(rf.stops, 0);
    tw_factory_do_stop(&wf.base);
    cr_assert_eq(rf.stops, 1);
    tw_failure *f = tw_failure_new(TW_ECONNREFUSED, NULL, NULL);
    wf.base.ops->started_connecting(&wf.base, NULL);
    wf.base.ops->client_connection_failed(&wf.base, NULL, f);
    wf.base.ops->client_connection_lost(&wf.base, NULL, f);
    tw_failure_unref(f);
    cr_assert_eq(rf.started_connecting, 1);
    cr_assert_eq(rf.failed, 1);
    cr_assert_eq(rf.client_lost, 1);
}

TW_TEST(wrap, refused_by_the_wrapped_factory)
{
    setup_plain(&rec_ops, NULL, 0, NULL);
    rf.refuse = true;
    tw_address a;
    tw_address_from_ip(&a, "127.0.0.1", 1);
    cr_assert_null(tw_factory_build_protocol(&wf.base, &a));
    cr_assert_eq(ev.freed, 0);
}

static int init_calls, unregister_calls;
static int refuse_init(tw_wrapping_factory *f, tw_wrapper *w)
{
    init_calls++;
    return TW_ELIMIT;
}

static void count_unregister(tw_wrapping_factory *f, tw_wrapper *w)
{
    unregister_calls++;
}

TW_TEST(wrap, init_hook_may_refuse)
{
    static const tw_wrapping_factory_hooks fh = {.init = refuse_init,
                                                 .unregister_protocol = count_unregister};
    init_calls = unregister_calls = 0;
    setup_plain(&rec_ops, NULL, 0, &fh);
    cr_assert_null(tw_factory_build_protocol(&wf.base, NULL));
    cr_assert_eq(init_calls, 1);
    cr_assert_eq(ev.freed, 1, "the wrapped protocol was released");
    cr_assert_eq(ev.made, 0);
    cr_assert_eq(unregister_calls, 0);
}

TW_TEST(wrap, unregister_once_per_wrapper_connected_or_not)
{
    static const tw_wrapping_factory_hooks fh = {.unregister_protocol = count_unregister};
    unregister_calls = 0;
    setup_plain(&rec_ops, NULL, 0, &fh);
    /* Built, never given a connection. */
    tw_protocol *p = tw_factory_build_protocol(&wf.base, NULL);
    cr_assert(p);
    tw_protocol_release(p);
    cr_assert_eq(unregister_calls, 1);
    cr_assert_eq(ev.freed, 1);
    /* Connected, then lost. */
    tw_string_transport *st = rec_connect(&wf.base, NULL, 0);
    tw_string_transport_lose(st, TW_ECONNDONE);
    cr_assert_eq(unregister_calls, 2);
    tw_string_transport_free(st);
    cr_assert_eq(unregister_calls, 2);
}

static void collect(tw_wrapper *w, void *arg)
{
    tw_wrapper **seen = arg;
    while (*seen)
        seen++;
    *seen = w;
}

TW_TEST(wrap, each_walks_the_connected_wrappers_oldest_first)
{
    setup_plain(&rec_ops, NULL, 0, NULL);
    tw_string_transport *st[3];
    for (int i = 0; i < 3; i++)
        st[i] = rec_connect(&wf.base, NULL, 0);
    tw_string_transport_lose(st[1], TW_ECONNDONE);
    tw_wrapper *seen[4] = {0};
    tw_wrapping_factory_each(&wf, collect, seen);
    cr_assert_eq(seen[0], tw_wrapper_from_protocol(st[0]->base.protocol));
    cr_assert_eq(seen[1], tw_wrapper_from_protocol(st[2]->base.protocol));
    cr_assert_null(seen[2]);
    for (int i = 0; i < 3; i++)
        tw_string_transport_free(st[i]);
    cr_assert_eq(tw_wrapping_factory_connected(&wf), 0);
    cr_assert_eq(ev.freed, 3);
}

TW_TEST(wrap, standalone_wrapper)
{
    memset(&ev, 0, sizeof ev);
    rec_factory_init(&rf, &ev, &rec_ops);
    tw_protocol *inner = tw_factory_build_protocol(&rf.base, NULL);
    tw_wrapper *w = NULL;
    cr_assert_eq(tw_wrapper_new(NULL, 0, NULL, &w), TW_EINVAL);
    cr_assert_eq(tw_wrapper_new(NULL, 0, inner, NULL), TW_EINVAL);
    cr_assert_eq(tw_wrapper_new(NULL, sizeof(tw_wrapper) - 1, inner, &w), TW_EINVAL);
    cr_assert_eq(tw_wrapper_make_wrapped_connection(&(tw_wrapper){0}), TW_ENOTCONN);
    for (long n = 0;; n++) {
        tw_testing_fail_alloc_after(n);
        int rc = tw_wrapper_new(NULL, 0, inner, &w);
        tw_testing_fail_alloc_off();
        if (rc == 0)
            break;
        cr_assert_eq(rc, TW_ENOMEM);
    }
    cr_assert_eq(tw_wrapper_from_protocol(&w->base), w);
    cr_assert_null(tw_wrapper_from_protocol(inner));
    cr_assert_null(w->wfactory);
    tw_string_transport *st = rec_string_transport();
    cr_assert_eq(tw_string_transport_connect(st, &w->base), 0);
    cr_assert_eq(ev.made, 1);
    tw_string_transport_feed(st, "x", 1);
    cr_assert_eq(ev.len, 1);
    tw_string_transport_free(st);
    cr_assert_eq(ev.lost, 1);
    cr_assert_eq(ev.freed, 1);
}

TW_TEST(wrap, build_out_of_memory)
{
    setup_plain(&rec_ops, NULL, 0, NULL);
    tw_protocol *p = NULL;
    long n;
    for (n = 0;; n++) {
        tw_testing_fail_alloc_after(n);
        p = tw_factory_build_protocol(&wf.base, NULL);
        tw_testing_fail_alloc_off();
        if (p)
            break;
        cr_assert_eq(ev.freed, 0, "a wrapped protocol is not built then thrown away");
    }
    cr_assert_gt(n, 0);
    tw_protocol_release(p);
    cr_assert_eq(ev.freed, 1);
}

/* ---- A kept factory outlives its owner while its connections live. */

static int kept_released;

static void kept_release(tw_wrapping_factory *f)
{
    cr_assert_eq(f, &wf);
    kept_released++;
}

TW_TEST(wrap, kept_factory_is_released_after_its_owner_and_last_connection)
{
    setup_plain(&rec_ops, NULL, 0, NULL);
    kept_released = 0;
    tw_wrapping_factory_keep(&wf, kept_release);
    tw_string_transport *a = rec_connect(&wf.base, "10.0.0.1", 1);
    tw_string_transport *b = rec_connect(&wf.base, "10.0.0.2", 2);
    tw_wrapping_factory_drop(&wf); /* the owner (a port) lets go first */
    cr_assert_eq(kept_released, 0, "two connections still use it");
    cr_assert_eq(tw_string_transport_lose(a, TW_ECONNDONE), 0);
    cr_assert_eq(kept_released, 0);
    cr_assert_eq(tw_string_transport_lose(b, TW_ECONNDONE), 0);
    cr_assert_eq(kept_released, 1, "released with the last connection");
    tw_string_transport_free(a);
    tw_string_transport_free(b);
}

TW_TEST(wrap, kept_factory_with_no_connection_goes_with_its_owner)
{
    setup_plain(&rec_ops, NULL, 0, NULL);
    kept_released = 0;
    tw_wrapping_factory_keep(&wf, kept_release);
    rf.refuse = true; /* a refused build leaves no reference behind */
    cr_assert_null(tw_factory_build_protocol(&wf.base, NULL));
    tw_wrapping_factory_drop(&wf);
    cr_assert_eq(kept_released, 1);
}
