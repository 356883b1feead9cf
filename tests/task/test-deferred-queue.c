/* DeferredQueue: put/get in both orders, FIFO, size (QueueOverflow) and
 * backlog (QueueUnderflow) limits, ownership on errors, failures as values,
 * cancellation (waiting, and handed a value), free, a long line in constant
 * stack, allocation failure. */
#include <twine/dsync.h>

#include "twtest.h"

static int released;

static void tracked_free(void *p)
{
    released++;
    tw_free(p);
}

static tw_result tracked(int v)
{
    int *p = tw_malloc(sizeof *p);
    cr_assert(p);
    *p = v;
    return tw_result_ok(p, tracked_free);
}

struct got {
    int fired;
    int code;
    int value;
};

static tw_result take(tw_result r, void *arg)
{
    struct got *g = arg;
    g->fired++;
    g->code = r.failure ? tw_failure_code(r.failure) : 0;
    g->value = r.failure ? -1 : *(int *)r.value;
    tw_result_release(&r);
    return tw_result_borrowed(NULL);
}

static tw_dqueue *queue_new(size_t size, size_t backlog)
{
    tw_dqueue *q = NULL;
    cr_assert_eq(tw_dqueue_new(&q, size, backlog), 0);
    return q;
}

static int get_now(tw_dqueue *q)
{
    tw_deferred *d = tw_dqueue_get(q);
    cr_assert(tw_deferred_called(d));
    struct got g = {0};
    tw_deferred_add_both(d, take, &g);
    tw_deferred_unref(d);
    cr_assert_eq(g.code, 0);
    return g.value;
}

TW_TEST(dqueue, put_then_get_and_get_then_put_in_order)
{
    tw_dqueue *q = queue_new(TW_DQUEUE_UNLIMITED, TW_DQUEUE_UNLIMITED);
    for (int i = 0; i < 20; i++)
        cr_assert_eq(tw_dqueue_put(q, tracked(i)), 0);
    cr_assert_eq(tw_dqueue_pending(q), 20);
    for (int i = 0; i < 20; i++)
        cr_assert_eq(get_now(q), i);
    tw_deferred *d[3];
    struct got g[3] = {0};
    for (int i = 0; i < 3; i++) {
        d[i] = tw_dqueue_get(q);
        tw_deferred_add_both(d[i], take, &g[i]);
    }
    cr_assert_eq(tw_dqueue_waiting(q), 3);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(tw_dqueue_put(q, tracked(100 + i)), 0);
        cr_assert_eq(g[i].fired, 1, "the first waiting get");
        cr_assert_eq(g[i].value, 100 + i);
        tw_deferred_unref(d[i]);
    }
    cr_assert_eq(tw_dqueue_pending(q), 0);
    cr_assert_eq(released, 23);
    tw_dqueue_free(q);
}

TW_TEST(dqueue, a_full_queue_refuses_and_the_caller_keeps_the_value)
{
    tw_dqueue *q = queue_new(2, TW_DQUEUE_UNLIMITED);
    cr_assert_eq(tw_dqueue_put(q, tracked(1)), 0);
    cr_assert_eq(tw_dqueue_put(q, tracked(2)), 0);
    tw_result extra = tracked(3);
    cr_assert_eq(tw_dqueue_put(q, extra), TW_ELIMIT, "QueueOverflow");
    cr_assert_eq(released, 0, "not released: still the caller's");
    cr_assert_eq(tw_dqueue_pending(q), 2);
    cr_assert_eq(get_now(q), 1);
    cr_assert_eq(tw_dqueue_put(q, extra), 0, "room again");
    cr_assert_eq(get_now(q), 2);
    cr_assert_eq(get_now(q), 3);
    tw_dqueue_free(q);
    cr_assert_eq(released, 3);
}

TW_TEST(dqueue, size_zero_only_hands_to_waiting_gets)
{
    tw_dqueue *q = queue_new(0, TW_DQUEUE_UNLIMITED);
    tw_result v = tracked(1);
    cr_assert_eq(tw_dqueue_put(q, v), TW_ELIMIT);
    tw_deferred *d = tw_dqueue_get(q);
    struct got g = {0};
    tw_deferred_add_both(d, take, &g);
    cr_assert_eq(tw_dqueue_put(q, v), 0);
    cr_assert_eq(g.value, 1);
    tw_deferred_unref(d);
    tw_dqueue_free(q);
}

TW_TEST(dqueue, too_many_waiting_gets_fail_with_underflow)
{
    tw_dqueue *q = queue_new(TW_DQUEUE_UNLIMITED, 2);
    tw_deferred *a = tw_dqueue_get(q);
    tw_deferred *b = tw_dqueue_get(q);
    tw_testing_log_capture_start();
    tw_deferred *c = tw_dqueue_get(q);
    cr_assert(tw_deferred_called(c));
    struct got gc = {0};
    tw_deferred_add_both(c, take, &gc);
    cr_assert_eq(gc.code, TW_ELIMIT);
    cr_assert_eq(tw_dqueue_waiting(q), 2);
    tw_testing_log_capture_stop();
    /* With values queued a get never waits, backlog or not. */
    tw_dqueue *q0 = queue_new(TW_DQUEUE_UNLIMITED, 0);
    tw_deferred *e = tw_dqueue_get(q0);
    struct got ge = {0};
    tw_deferred_add_both(e, take, &ge);
    cr_assert_eq(ge.code, TW_ELIMIT, "backlog 0: no get may wait");
    tw_dqueue_put(q0, tracked(5));
    cr_assert_eq(get_now(q0), 5);
    struct got ga = {0}, gb = {0};
    tw_deferred_add_both(a, take, &ga);
    tw_deferred_add_both(b, take, &gb);
    tw_dqueue_free(q);
    cr_assert_eq(ga.code, TW_ECANCELED, "freeing fails the waiting gets");
    cr_assert_eq(gb.code, TW_ECANCELED);
    tw_deferred_unref(a);
    tw_deferred_unref(b);
    tw_deferred_unref(c);
    tw_deferred_unref(e);
    tw_dqueue_free(q0);
}

static tw_failure *message_of;

static tw_result keep_failure(tw_result r, void *arg)
{
    message_of = tw_failure_ref(r.failure);
    tw_result_release(&r);
    return tw_result_borrowed(NULL);
}

TW_TEST(dqueue, the_underflow_failure_says_so)
{
    tw_dqueue *q = queue_new(1, 0);
    tw_deferred *d = tw_dqueue_get(q);
    tw_deferred_add_errback(d, keep_failure, NULL);
    cr_assert(message_of);
    cr_assert(strstr(tw_failure_message(message_of), "underflow"), "%s",
              tw_failure_message(message_of));
    tw_failure_unref(message_of);
    tw_deferred_unref(d);
    tw_dqueue_free(q);
}

TW_TEST(dqueue, failures_are_values_and_deferreds_are_refused)
{
    tw_dqueue *q = queue_new(TW_DQUEUE_UNLIMITED, TW_DQUEUE_UNLIMITED);
    cr_assert_eq(tw_dqueue_put(q, tw_result_fail(tw_failure_new(TW_EUSER, NULL, "bad"))), 0);
    tw_deferred *d = tw_dqueue_get(q);
    struct got g = {0};
    tw_deferred_add_both(d, take, &g);
    cr_assert_eq(g.code, TW_EUSER, "the get fails with it");
    tw_deferred_unref(d);
    tw_deferred *inner = tw_deferred_new(NULL, NULL);
    tw_result r = tw_result_deferred(inner);
    cr_assert_eq(tw_dqueue_put(q, r), TW_EINVAL);
    tw_result_release(&r); /* still ours */
    cr_assert_eq(tw_dqueue_put(NULL, tw_result_from_int(1)), TW_EINVAL);
    cr_assert_eq(tw_dqueue_new(NULL, 1, 1), TW_EINVAL);
    tw_dqueue_free(q);
    tw_dqueue_free(NULL);
}

TW_TEST(dqueue, cancelling_a_waiting_get)
{
    tw_dqueue *q = queue_new(TW_DQUEUE_UNLIMITED, TW_DQUEUE_UNLIMITED);
    tw_deferred *a = tw_dqueue_get(q);
    tw_deferred *b = tw_dqueue_get(q);
    struct got ga = {0}, gb = {0};
    tw_deferred_add_both(a, take, &ga);
    tw_deferred_add_both(b, take, &gb);
    tw_deferred_cancel(a);
    cr_assert_eq(ga.code, TW_ECANCELED);
    cr_assert_eq(tw_dqueue_waiting(q), 1);
    tw_dqueue_put(q, tracked(7));
    cr_assert_eq(gb.value, 7);
    tw_deferred_unref(a);
    tw_deferred_unref(b);
    tw_dqueue_free(q);
}

/* a's callback puts again (handing the value to b, which is fired once a's
 * callback returns) and then cancels b: the value goes back to the front. */
static tw_deferred *victim;
static tw_dqueue *vq;

static tw_result put_then_cancel(tw_result r, void *arg)
{
    tw_result_release(&r);
    cr_assert_eq(tw_dqueue_put(vq, tracked(2)), 0);
    cr_assert_eq(tw_dqueue_put(vq, tracked(3)), 0);
    cr_assert_eq(tw_dqueue_pending(vq), 1, "2 went to b, 3 is queued");
    tw_deferred_cancel(victim);
    cr_assert_eq(tw_dqueue_pending(vq), 2, "2 is back");
    return tw_result_borrowed(NULL);
}

TW_TEST(dqueue, a_cancelled_get_that_was_handed_a_value_gives_it_back_first)
{
    vq = queue_new(1, TW_DQUEUE_UNLIMITED);
    tw_deferred *a = tw_dqueue_get(vq);
    victim = tw_dqueue_get(vq);
    struct got gv = {0};
    tw_deferred_add_callback(a, put_then_cancel, NULL);
    tw_deferred_add_both(victim, take, &gv);
    tw_dqueue_put(vq, tracked(1));
    cr_assert_eq(gv.code, TW_ECANCELED);
    cr_assert_eq(get_now(vq), 2, "in order");
    cr_assert_eq(get_now(vq), 3);
    tw_deferred_unref(a);
    tw_deferred_unref(victim);
    tw_dqueue_free(vq);
    cr_assert_eq(released, 3);
}

TW_TEST(dqueue, free_releases_queued_values)
{
    tw_dqueue *q = queue_new(TW_DQUEUE_UNLIMITED, TW_DQUEUE_UNLIMITED);
    for (int i = 0; i < 50; i++) /* wraps the ring */
        tw_dqueue_put(q, tracked(i));
    for (int i = 0; i < 30; i++)
        cr_assert_eq(get_now(q), i);
    for (int i = 0; i < 10; i++)
        tw_dqueue_put(q, tracked(i));
    tw_dqueue_free(q);
    cr_assert_eq(released, 60);
}

/* A line of gets, each putting the next value from its callback. */
static size_t chain_seen;
static tw_dqueue *cq;

static tw_result chain_next(tw_result r, void *arg)
{
    cr_assert_eq(*(int *)r.value, (int)chain_seen);
    chain_seen++;
    tw_result_release(&r);
    cr_assert_eq(tw_dqueue_put(cq, tracked((int)chain_seen)), 0);
    return tw_result_borrowed(NULL);
}

TW_TEST(dqueue, a_long_line_drains_in_constant_stack)
{
    enum { N = 200000 };
    cq = queue_new(TW_DQUEUE_UNLIMITED, TW_DQUEUE_UNLIMITED);
    for (int i = 0; i < N; i++) {
        tw_deferred *d = tw_dqueue_get(cq);
        tw_deferred_add_callback(d, chain_next, NULL);
        tw_deferred_unref(d);
    }
    tw_dqueue_put(cq, tracked(0));
    cr_assert_eq(chain_seen, N);
    cr_assert_eq(tw_dqueue_pending(cq), 1, "the last put stays");
    tw_dqueue_free(cq);
}

TW_TEST(dqueue, allocation_failure_is_clean)
{
    for (long n = 0;; n++) {
        tw_dqueue *q = queue_new(TW_DQUEUE_UNLIMITED, TW_DQUEUE_UNLIMITED);
        int before = released;
        tw_result v = tracked(9);
        tw_testing_fail_alloc_after(n);
        int rc = tw_dqueue_put(q, v);
        tw_deferred *d = rc == 0 ? tw_dqueue_get(q) : NULL;
        tw_deferred *w = d ? tw_dqueue_get(q) : NULL;
        tw_testing_fail_alloc_off();
        if (rc == 0 && d && w) {
            struct got g = {0}, gw = {0};
            tw_deferred_add_both(d, take, &g);
            tw_deferred_add_both(w, take, &gw);
            cr_assert_eq(g.value, 9);
            tw_dqueue_put(q, tracked(10));
            cr_assert_eq(gw.value, 10);
            tw_deferred_unref(d);
            tw_deferred_unref(w);
            tw_dqueue_free(q);
            break;
        }
        if (rc < 0) {
            cr_assert_eq(rc, TW_ENOMEM);
            cr_assert_eq(released, before, "the caller keeps the value");
            tw_result_release(&v);
        } else if (!d) {
            cr_assert_eq(tw_dqueue_pending(q), 1, "the value stays queued");
        } else {
            cr_assert_eq(tw_dqueue_waiting(q), 0);
            struct got g = {0};
            tw_deferred_add_both(d, take, &g);
            tw_deferred_unref(d);
        }
        tw_dqueue_free(q);
    }
}

/* run: a consumer's step. fn gets each value (queued or put later), its
 * result (a deferred too) is the run's; failures put skip fn; cancelling a
 * waiting run leaves the line; out of memory takes nothing. */
static int run_calls;

static tw_result double_it(tw_result r, void *arg)
{
    (void)arg;
    run_calls++;
    int v = *(int *)r.value;
    tw_result_release(&r);
    return tw_result_from_int(2 * v);
}

static tw_deferred *later_d;

static tw_result answer_later(tw_result r, void *arg)
{
    (void)arg;
    run_calls++;
    tw_result_release(&r);
    later_d = tw_deferred_new(NULL, NULL);
    return tw_result_deferred(tw_deferred_ref(later_d));
}

static tw_result int_of(tw_result r, void *arg)
{
    struct got *g = arg;
    g->fired++;
    g->code = r.failure ? tw_failure_code(r.failure) : 0;
    g->value = r.failure ? -1 : (int)tw_result_int(r);
    tw_result_release(&r);
    return tw_result_borrowed(NULL);
}

TW_TEST(dqueue, run_hands_each_value_to_fn)
{
    tw_dqueue *q = queue_new(TW_DQUEUE_UNLIMITED, 1);
    run_calls = 0;
    cr_assert_eq(tw_dqueue_put(q, tracked(4)), 0);
    struct got a = {0}, b = {0}, c = {0}, f = {0};
    tw_deferred *d = tw_dqueue_run(q, double_it, NULL); /* a value is there */
    tw_deferred_add_both(d, int_of, &a);
    tw_deferred_unref(d);
    cr_assert_eq(a.fired, 1);
    cr_assert_eq(a.value, 8);

    d = tw_dqueue_run(q, double_it, NULL); /* waits for the put */
    tw_deferred_add_both(d, int_of, &b);
    cr_assert_eq(b.fired, 0);
    tw_deferred *over = tw_dqueue_run(q, double_it, NULL); /* backlog 1: refused */
    tw_deferred_add_both(over, int_of, &f);
    tw_deferred_unref(over);
    cr_assert_eq(f.code, TW_ELIMIT);
    cr_assert_eq(tw_dqueue_put(q, tracked(5)), 0);
    cr_assert_eq(b.value, 10);
    tw_deferred_unref(d);

    /* A failure put skips fn. */
    d = tw_dqueue_run(q, double_it, NULL);
    tw_deferred_add_both(d, int_of, &c);
    cr_assert_eq(tw_dqueue_put(q, tw_result_fail(tw_failure_new(TW_EPIPE, NULL, "bad item"))), 0);
    cr_assert_eq(c.code, TW_EPIPE);
    tw_deferred_unref(d);
    cr_assert_eq(run_calls, 2);
    tw_dqueue_free(q);
}

TW_TEST(dqueue, run_waits_for_fns_deferred_and_cancels_it)
{
    tw_dqueue *q = queue_new(TW_DQUEUE_UNLIMITED, TW_DQUEUE_UNLIMITED);
    run_calls = 0;
    struct got g = {0}, w = {0};
    cr_assert_eq(tw_dqueue_put(q, tracked(1)), 0);
    tw_deferred *d = tw_dqueue_run(q, answer_later, NULL);
    tw_deferred_add_both(d, int_of, &g);
    cr_assert_eq(run_calls, 1);
    cr_assert_eq(g.fired, 0, "waits for fn's deferred");
    tw_deferred_cancel(d);
    cr_assert_eq(g.code, TW_ECANCELED, "cancelling the run cancels fn's deferred");
    cr_assert(tw_deferred_called(later_d));
    tw_deferred_unref(later_d);
    tw_deferred_unref(d);

    /* Cancelled while waiting for a value: out of the line, fn never runs,
     * and the next value goes to the queue. */
    d = tw_dqueue_run(q, double_it, NULL);
    tw_deferred_add_both(d, int_of, &w);
    cr_assert_eq(tw_dqueue_waiting(q), 1);
    tw_deferred_cancel(d);
    tw_deferred_unref(d);
    cr_assert_eq(w.code, TW_ECANCELED);
    cr_assert_eq(tw_dqueue_waiting(q), 0);
    cr_assert_eq(tw_dqueue_put(q, tracked(3)), 0);
    cr_assert_eq(tw_dqueue_pending(q), 1);
    cr_assert_eq(run_calls, 1);
    tw_dqueue_free(q);
}

TW_TEST(dqueue, run_out_of_memory_takes_nothing)
{
    for (long n = 0;; n++) {
        tw_dqueue *q = queue_new(TW_DQUEUE_UNLIMITED, TW_DQUEUE_UNLIMITED);
        cr_assert_eq(tw_dqueue_put(q, tracked(6)), 0);
        run_calls = 0;
        tw_testing_fail_alloc_after(n);
        tw_deferred *d = tw_dqueue_run(q, double_it, NULL);
        tw_testing_fail_alloc_off();
        if (!d) {
            cr_assert_eq(run_calls, 0);
            cr_assert_eq(tw_dqueue_pending(q), 1, "the value stays queued");
            tw_dqueue_free(q);
            continue;
        }
        struct got g = {0};
        tw_deferred_add_both(d, int_of, &g);
        tw_deferred_unref(d);
        cr_assert_eq(g.value, 12);
        tw_dqueue_free(q);
        break;
    }
}
