/* tw_defer_to_thread and tw_blocking_call_from_thread on a reactor, and the
 * reactor's own pool. */
#include "twtest-gate.h"
#include "twtest.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <twine/thread.h>

#include "reactor/threadpool-internal.h"

/* ---- Helpers */

/* Iterates the reactor until its pool has no work left anywhere: every worker
 * idle, nothing queued, and every result posted back has run. */
static void drain(tw_reactor *r)
{
    tw_threadpool *pool = tw_reactor_thread_pool(r);
    cr_assert_not_null(pool);
    for (int i = 0; i < 5000; i++) {
        tw_reactor_iterate(r, 0.001);
        tw__threadpool_stats st;
        tw__threadpool_get_stats(pool, &st);
        if (st.idle != st.threads || st.queued != 0)
            continue;
        /* Workers post before they go idle: whatever they posted is queued. */
        tw_reactor_state rs;
        tw_reactor_get_state(r, &rs);
        if (rs.thread_calls == 0)
            return;
    }
    cr_assert_fail("the reactor's pool did not drain");
}

typedef struct ctx {
    pthread_t fn_thread;
    pthread_t cb_thread;
    atomic_int runs;
    intptr_t value;
    gate *gate;
    tw_reactor *r;
} ctx;

static tw_result return_value(void *arg)
{
    ctx *c = arg;
    c->fn_thread = pthread_self();
    atomic_fetch_add(&c->runs, 1);
    if (c->gate)
        gate_wait(c->gate);
    return tw_result_from_int(c->value);
}

static tw_result note_thread(tw_result result, void *arg)
{
    ctx *c = arg;
    c->cb_thread = pthread_self();
    return result;
}

/* ---- tw_defer_to_thread */

TW_REACTOR_TEST(defer_to_thread, fires_with_the_value_on_the_reactor_thread)
{
    ctx c = {.value = 42};
    tw_deferred *d = tw_defer_to_thread(r, return_value, &c);
    cr_assert_not_null(d);
    cr_assert_eq(tw_deferred_add_both(d, note_thread, &c), 0);
    tw_result res = twtest_wait(r, d);
    cr_assert_not(tw_result_is_failure(res));
    cr_assert_eq(tw_result_int(res), 42);
    cr_assert_eq(atomic_load(&c.runs), 1);
    cr_assert(pthread_equal(c.cb_thread, pthread_self()), "callback ran off the reactor thread");
    cr_assert_not(pthread_equal(c.fn_thread, pthread_self()), "fn ran on the reactor thread");
    tw_deferred_unref(d);

    tw_reactor_state st;
    tw_reactor_get_state(r, &st);
    cr_assert(st.thread_pool_started);
}

static tw_result return_failure(void *arg)
{
    ctx *c = arg;
    c->fn_thread = pthread_self();
    return tw_result_fail(tw_failure_new(TW_EUSER, NULL, "boom %d", 7));
}

TW_REACTOR_TEST(defer_to_thread, fails_with_the_failure_on_the_reactor_thread)
{
    ctx c = {0};
    tw_deferred *d = tw_defer_to_thread(r, return_failure, &c);
    cr_assert_not_null(d);
    cr_assert_eq(tw_deferred_add_both(d, note_thread, &c), 0);
    tw_result res = twtest_wait(r, d);
    cr_assert(tw_result_is_failure(res));
    cr_assert_eq(tw_failure_code(res.failure), TW_EUSER);
    cr_assert_str_eq(tw_failure_message(res.failure), "boom 7");
    cr_assert(pthread_equal(c.cb_thread, pthread_self()));
    cr_assert_not(pthread_equal(c.fn_thread, pthread_self()));
    tw_result_release(&res);
    tw_deferred_unref(d);
}

static atomic_int released;
static pthread_t release_thread;

static void counting_free(void *p)
{
    release_thread = pthread_self();
    atomic_fetch_add(&released, 1);
    free(p);
}

static tw_result return_owned(void *arg)
{
    ctx *c = arg;
    atomic_fetch_add(&c->runs, 1);
    if (c->gate)
        gate_wait(c->gate);
    char *s = malloc(16);
    strcpy(s, "from a thread");
    return tw_result_ok(s, counting_free);
}

TW_REACTOR_TEST(defer_to_thread, hands_over_an_owned_value)
{
    atomic_store(&released, 0);
    ctx c = {0};
    tw_deferred *d = tw_defer_to_thread(r, return_owned, &c);
    tw_result res = twtest_wait(r, d);
    cr_assert_not(tw_result_is_failure(res));
    cr_assert_str_eq(res.value, "from a thread");
    cr_assert_eq(atomic_load(&released), 0);
    tw_result_release(&res);
    cr_assert_eq(atomic_load(&released), 1);
    tw_deferred_unref(d);
}

static tw_result return_deferred(void *arg)
{
    return tw_result_deferred(tw_deferred_new(NULL, NULL));
}

TW_REACTOR_TEST(defer_to_thread, fn_returning_a_deferred_is_einval)
{
    tw_deferred *d = tw_defer_to_thread(r, return_deferred, NULL);
    tw_result res = twtest_wait(r, d);
    cr_assert(tw_result_is_failure(res));
    cr_assert_eq(tw_failure_code(res.failure), TW_EINVAL);
    tw_result_release(&res);
    tw_deferred_unref(d);
}

TW_REACTOR_TEST(defer_to_thread, null_fn_is_einval)
{
    tw_deferred *d = tw_defer_to_thread(r, NULL, NULL);
    cr_assert_not_null(d);
    cr_assert(tw_deferred_called(d));
    tw_result res = twtest_wait(r, d);
    cr_assert(tw_result_is_failure(res));
    cr_assert_eq(tw_failure_code(res.failure), TW_EINVAL);
    tw_result_release(&res);
    tw_deferred_unref(d);
}

TW_REACTOR_TEST(defer_to_thread, cancel_before_start_keeps_fn_from_running)
{
    cr_assert_eq(tw_reactor_suggest_thread_pool_size(r, 1), 0);
    tw_threadpool *pool = tw_reactor_thread_pool(r);
    cr_assert_not_null(pool);
    gate g = GATE_INIT;
    cr_assert_eq(tw_threadpool_call(pool, gate_job, &g), 0);
    cr_assert(gate_await_waiting(&g, 1));

    ctx c = {.value = 1};
    tw_deferred *d = tw_defer_to_thread(r, return_value, &c);
    cr_assert_not_null(d);
    cr_assert_not(tw_deferred_called(d));
    tw_deferred_cancel(d);
    cr_assert(tw_deferred_called(d), "cancel did not fire the deferred at once");
    tw_result res = twtest_wait(r, d);
    cr_assert(tw_result_is_failure(res));
    cr_assert_eq(tw_failure_code(res.failure), TW_ECANCELED);
    tw_result_release(&res);

    gate_open(&g);
    drain(r);
    cr_assert_eq(atomic_load(&c.runs), 0, "a cancelled job ran");
    tw_deferred_unref(d);
}

TW_REACTOR_TEST(defer_to_thread, cancel_after_start_fails_at_once_and_releases_late_result)
{
    atomic_store(&released, 0);
    gate g = GATE_INIT;
    ctx c = {.gate = &g};
    tw_deferred *d = tw_defer_to_thread(r, return_owned, &c);
    cr_assert(gate_await_waiting(&g, 1));
    tw_deferred_cancel(d);
    cr_assert(tw_deferred_called(d));
    tw_result res = twtest_wait(r, d);
    cr_assert(tw_result_is_failure(res));
    cr_assert_eq(tw_failure_code(res.failure), TW_ECANCELED);
    tw_result_release(&res);

    gate_open(&g);
    drain(r);
    cr_assert_eq(atomic_load(&c.runs), 1);
    cr_assert_eq(atomic_load(&released), 1, "the late result was not released");
    cr_assert(pthread_equal(release_thread, pthread_self()),
              "the late result was released off the reactor thread");
    tw_deferred_unref(d);
}

TW_REACTOR_TEST(defer_to_thread, caller_may_drop_its_reference)
{
    /* The job keeps the deferred alive; its callbacks still run. */
    ctx c = {.value = 5};
    tw_deferred *d = tw_defer_to_thread(r, return_value, &c);
    cr_assert_eq(tw_deferred_add_both(d, note_thread, &c), 0);
    tw_deferred_unref(d);
    drain(r);
    cr_assert_eq(atomic_load(&c.runs), 1);
    cr_assert(pthread_equal(c.cb_thread, pthread_self()), "the callback did not run");
}

static tw_result return_index_slowly(void *arg)
{
    sleep_ms(1);
    return tw_result_from_int((intptr_t)arg * 3);
}

TW_REACTOR_TEST(defer_to_thread, hundred_at_once_all_fire)
{
    enum { N = 100 };
    tw_deferred *ds[N];
    for (intptr_t i = 0; i < N; i++) {
        ds[i] = tw_defer_to_thread(r, return_index_slowly, (void *)i);
        cr_assert_not_null(ds[i]);
    }
    tw__threadpool_stats st;
    tw__threadpool_get_stats(tw_reactor_thread_pool(r), &st);
    cr_assert_leq(st.started, 10, "the default pool is at most 10 threads");
    cr_assert_geq(st.started, 2);
    for (intptr_t i = 0; i < N; i++) {
        tw_result res = twtest_wait(r, ds[i]);
        cr_assert_not(tw_result_is_failure(res));
        cr_assert_eq(tw_result_int(res), i * 3);
        tw_deferred_unref(ds[i]);
    }
    drain(r);
}

TW_REACTOR_TEST(defer_to_thread, suggested_size_bounds_the_pool)
{
    cr_assert_eq(tw_reactor_suggest_thread_pool_size(r, 0), TW_EINVAL);
    cr_assert_eq(tw_reactor_suggest_thread_pool_size(r, 2), 0);
    gate g = GATE_INIT;
    ctx c[3] = {{.gate = &g}, {.gate = &g}, {.gate = &g}};
    tw_deferred *ds[3];
    for (int i = 0; i < 3; i++)
        ds[i] = tw_defer_to_thread(r, return_value, &c[i]);
    cr_assert(gate_await_waiting(&g, 2));
    sleep_ms(20);
    cr_assert_eq(g.waiting, 2, "%d ran at once with a pool of 2", g.waiting);
    /* Growing the live pool lets the third start. */
    cr_assert_eq(tw_reactor_suggest_thread_pool_size(r, 3), 0);
    cr_assert(gate_await_waiting(&g, 3));
    gate_open(&g);
    for (int i = 0; i < 3; i++) {
        tw_result res = twtest_wait(r, ds[i]);
        cr_assert_not(tw_result_is_failure(res));
        tw_deferred_unref(ds[i]);
    }
    drain(r);
}

static tw_result consume(tw_result result, void *arg)
{
    if (tw_result_is_failure(result))
        *(int *)arg = tw_failure_code(result.failure);
    tw_result_release(&result);
    return tw_result_borrowed(NULL);
}

static void *defer_off_thread(void *arg)
{
    ctx *c = arg;
    static int code;
    code = 0;
    tw_deferred *d = tw_defer_to_thread(c->r, return_value, c);
    if (d) {
        tw_deferred_add_both(d, consume, &code);
        tw_deferred_unref(d);
    }
    return &code;
}

TW_REACTOR_TEST(defer_to_thread, off_the_reactor_thread_is_ewrongthread)
{
    ctx c = {.r = r};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, defer_off_thread, &c), 0);
    void *out;
    pthread_join(t, &out);
    cr_assert_eq(*(int *)out, TW_EWRONGTHREAD);
    cr_assert_eq(atomic_load(&c.runs), 0);
}

TW_REACTOR_TEST(defer_to_thread, survives_allocation_failure)
{
    ctx c = {.value = 9};
    long n = 0;
    for (;; n++) {
        tw_testing_fail_alloc_after(n);
        tw_deferred *d = tw_defer_to_thread(r, return_value, &c);
        tw_testing_fail_alloc_off();
        if (!d) {
            cr_assert_eq(atomic_load(&c.runs), 0, "n=%ld: fn ran after a NULL return", n);
            continue;
        }
        tw_result res = twtest_wait(r, d);
        tw_deferred_unref(d);
        if (tw_result_is_failure(res)) {
            /* Starting the first worker failed for lack of memory. */
            cr_assert_eq(tw_failure_code(res.failure), TW_ENOMEM, "n=%ld", n);
            tw_result_release(&res);
            continue;
        }
        cr_assert_eq(tw_result_int(res), 9);
        break;
    }
    cr_assert_gt(n, 0);
    drain(r);
    cr_assert_eq(atomic_load(&c.runs), 1);
}

TW_REACTOR_TEST(defer_to_thread, a_pool_that_cannot_start_a_thread_fails_the_deferred)
{
    pthread_attr_t saved, huge;
    cr_assert_eq(pthread_getattr_default_np(&saved), 0);
    pthread_attr_init(&huge);
    cr_assert_eq(pthread_attr_setstacksize(&huge, (size_t)1 << 46), 0);
    cr_assert_eq(pthread_setattr_default_np(&huge), 0);
    ctx c = {.value = 1};
    tw_deferred *d = tw_defer_to_thread(r, return_value, &c);
    cr_assert_eq(pthread_setattr_default_np(&saved), 0);
    pthread_attr_destroy(&huge);
    pthread_attr_destroy(&saved);
    cr_assert_not_null(d);
    cr_assert(tw_deferred_called(d), "no thread, yet the deferred waits");
    tw_result res = twtest_wait(r, d);
    cr_assert(tw_result_is_failure(res));
    int code = tw_failure_code(res.failure);
    cr_assert(code < 0 && code > TW__ERRNO_LIMIT && code != TW_ENOMEM, "got %d", code);
    tw_result_release(&res);
    tw_deferred_unref(d);
    cr_assert_eq(atomic_load(&c.runs), 0);
}

/* ---- tw_blocking_call_from_thread */

typedef struct bctx {
    tw_reactor *r;
    pthread_t on_thread; /* where the reactor-side fn ran */
    atomic_int runs;
    atomic_bool timer_fired;
    bool timer_fired_before_return;
    bool fail;
    bool leak_deferred; /* return a deferred nobody fires */
} bctx;

static tw_result on_reactor_plain(void *arg)
{
    bctx *b = arg;
    b->on_thread = pthread_self();
    atomic_fetch_add(&b->runs, 1);
    return tw_result_from_int(7);
}

static tw_result worker_blocking_plain(void *arg)
{
    bctx *b = arg;
    tw_result res = tw_blocking_call_from_thread(b->r, on_reactor_plain, b);
    if (tw_result_is_failure(res))
        return res;
    return tw_result_from_int(tw_result_int(res) + 1);
}

TW_REACTOR_TEST(blocking_call, plain_value_from_a_pool_thread)
{
    bctx b = {.r = r};
    tw_deferred *d = tw_defer_to_thread(r, worker_blocking_plain, &b);
    tw_result res = twtest_wait(r, d);
    cr_assert_not(tw_result_is_failure(res));
    cr_assert_eq(tw_result_int(res), 8);
    cr_assert_eq(atomic_load(&b.runs), 1);
    cr_assert(pthread_equal(b.on_thread, pthread_self()), "fn ran off the reactor thread");
    tw_deferred_unref(d);
    drain(r);
}

static void fire_later(void *arg)
{
    tw_deferred *d = arg;
    tw_deferred_callback(d, tw_result_from_int(11));
    tw_deferred_unref(d);
}

static void fail_later(void *arg)
{
    tw_deferred *d = arg;
    tw_deferred_errback(d, tw_failure_new(TW_ETIMEDOUT, NULL, "late failure"));
    tw_deferred_unref(d);
}

static tw_result mark_timer(tw_result result, void *arg)
{
    atomic_store(&((bctx *)arg)->timer_fired, true);
    return result;
}

static tw_result on_reactor_deferred(void *arg)
{
    bctx *b = arg;
    b->on_thread = pthread_self();
    atomic_fetch_add(&b->runs, 1);
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    if (b->leak_deferred)
        return tw_result_deferred(d); /* released unfired once dropped */
    tw_deferred_add_both(d, mark_timer, b);
    cr_assert_eq(tw_call_later(tw_reactor_clock(b->r), 0.02, b->fail ? fail_later : fire_later,
                               tw_deferred_ref(d), NULL),
                 0);
    return tw_result_deferred(d);
}

static tw_result worker_blocking_deferred(void *arg)
{
    bctx *b = arg;
    tw_result res = tw_blocking_call_from_thread(b->r, on_reactor_deferred, b);
    b->timer_fired_before_return = atomic_load(&b->timer_fired);
    return res;
}

TW_REACTOR_TEST(blocking_call, waits_for_a_returned_deferred)
{
    bctx b = {.r = r};
    tw_deferred *d = tw_defer_to_thread(r, worker_blocking_deferred, &b);
    tw_result res = twtest_wait(r, d);
    cr_assert_not(tw_result_is_failure(res));
    cr_assert_eq(tw_result_int(res), 11);
    cr_assert(b.timer_fired_before_return, "returned before the deferred fired");
    cr_assert(pthread_equal(b.on_thread, pthread_self()));
    tw_deferred_unref(d);
    drain(r);
}

TW_REACTOR_TEST(blocking_call, a_returned_deferred_that_fails)
{
    bctx b = {.r = r, .fail = true};
    tw_deferred *d = tw_defer_to_thread(r, worker_blocking_deferred, &b);
    tw_result res = twtest_wait(r, d);
    cr_assert(tw_result_is_failure(res));
    cr_assert_eq(tw_failure_code(res.failure), TW_ETIMEDOUT);
    cr_assert_str_eq(tw_failure_message(res.failure), "late failure");
    cr_assert(b.timer_fired_before_return);
    tw_result_release(&res);
    tw_deferred_unref(d);
    drain(r);
}

TW_REACTOR_TEST(blocking_call, a_deferred_released_unfired_wakes_the_caller)
{
    bctx b = {.r = r, .leak_deferred = true};
    tw_deferred *d = tw_defer_to_thread(r, worker_blocking_deferred, &b);
    tw_result res = twtest_wait(r, d);
    cr_assert(tw_result_is_failure(res));
    cr_assert_eq(tw_failure_code(res.failure), TW_ECANCELED);
    tw_result_release(&res);
    tw_deferred_unref(d);
    drain(r);
}

TW_REACTOR_TEST(blocking_call, on_the_reactor_thread_is_ewrongthread)
{
    bctx b = {.r = r};
    tw_result res = tw_blocking_call_from_thread(r, on_reactor_plain, &b);
    cr_assert(tw_result_is_failure(res));
    cr_assert_eq(tw_failure_code(res.failure), TW_EWRONGTHREAD);
    cr_assert_eq(atomic_load(&b.runs), 0);
    tw_result_release(&res);
    res = tw_blocking_call_from_thread(r, NULL, NULL);
    cr_assert(tw_result_is_failure(res));
    cr_assert_eq(tw_failure_code(res.failure), TW_EINVAL);
    tw_result_release(&res);
}

/* A plain thread, not the pool: fails the first n allocations and calls. */
typedef struct fail_nth {
    bctx b;
    long n;
    atomic_bool done;
    tw_result res;
} fail_nth;

static void *blocking_with_failing_alloc(void *arg)
{
    fail_nth *f = arg;
    tw_testing_fail_alloc_after(f->n);
    f->res = tw_blocking_call_from_thread(f->b.r, on_reactor_plain, &f->b);
    tw_testing_fail_alloc_off();
    atomic_store(&f->done, true);
    return NULL;
}

TW_REACTOR_TEST(blocking_call, survives_allocation_failure)
{
    long n = 0;
    for (;; n++) {
        fail_nth f = {.b = {.r = r}, .n = n};
        pthread_t t;
        cr_assert_eq(pthread_create(&t, NULL, blocking_with_failing_alloc, &f), 0);
        /* Iterate only once the call is queued, and with allocations working,
         * so that only the calling thread's allocations fail. */
        for (int i = 0; i < 5000 && !atomic_load(&f.done); i++) {
            tw_reactor_state st;
            tw_reactor_get_state(r, &st);
            if (st.thread_calls > 0) {
                tw_testing_fail_alloc_off();
                tw_reactor_iterate(r, 0.001);
            } else {
                sleep_ms(1);
            }
        }
        pthread_join(t, NULL);
        cr_assert(atomic_load(&f.done));
        if (tw_result_is_failure(f.res)) {
            cr_assert_eq(tw_failure_code(f.res.failure), TW_ENOMEM, "n=%ld: %s", n,
                         tw_failure_message(f.res.failure));
            cr_assert_eq(atomic_load(&f.b.runs), 0);
            tw_result_release(&f.res);
            continue;
        }
        cr_assert_eq(tw_result_int(f.res), 7);
        cr_assert_eq(atomic_load(&f.b.runs), 1);
        break;
    }
    cr_assert_gt(n, 0);
}

/* ---- The pool when the reactor stops or is freed */

typedef struct fired {
    int count;
    intptr_t sum;
    int codes[8];
    pthread_t thread;
} fired;

static tw_result record_fired(tw_result result, void *arg)
{
    fired *f = arg;
    f->thread = pthread_self();
    if (tw_result_is_failure(result))
        f->codes[f->count < 8 ? f->count : 7] = tw_failure_code(result.failure);
    else
        f->sum += tw_result_int(result);
    f->count++;
    tw_result_release(&result);
    return tw_result_borrowed(NULL);
}

static void *open_gate_later(void *arg)
{
    sleep_ms(50);
    gate_open(arg);
    return NULL;
}

TW_TEST(pool_shutdown, free_delivers_results_still_running)
{
    tw_reactor *r2;
    cr_assert_eq(tw_reactor_new(&r2, NULL), 0);
    gate g = GATE_INIT;
    ctx c[4];
    tw_deferred *ds[4];
    fired f = {0};
    for (int i = 0; i < 4; i++) {
        c[i] = (ctx){.value = i + 1, .gate = &g};
        ds[i] = tw_defer_to_thread(r2, return_value, &c[i]);
        cr_assert_eq(tw_deferred_add_both(ds[i], record_fired, &f), 0);
    }
    cr_assert(gate_await_waiting(&g, 4));
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, open_gate_later, &g), 0);
    /* The workers finish while free waits for them; the reactor refuses their
     * calls by then, so the results come back through the pool's orphans. */
    cr_assert_eq(tw_reactor_free(r2), 0);
    pthread_join(t, NULL);
    cr_assert_eq(f.count, 4, "%d of 4 deferreds fired", f.count);
    cr_assert_eq(f.sum, 1 + 2 + 3 + 4);
    cr_assert(pthread_equal(f.thread, pthread_self()));
    for (int i = 0; i < 4; i++)
        tw_deferred_unref(ds[i]);
}

TW_TEST(pool_shutdown, free_delivers_results_already_queued)
{
    tw_reactor *r2;
    cr_assert_eq(tw_reactor_new(&r2, NULL), 0);
    fired f = {0};
    ctx c = {.value = 3};
    tw_deferred *d = tw_defer_to_thread(r2, return_value, &c);
    cr_assert_eq(tw_deferred_add_both(d, record_fired, &f), 0);
    /* Without iterating: wait until the result sits in the reactor's queue. */
    for (int i = 0; i < 5000; i++) {
        tw_reactor_state st;
        tw_reactor_get_state(r2, &st);
        if (st.thread_calls == 1)
            break;
        sleep_ms(1);
    }
    cr_assert_eq(f.count, 0);
    cr_assert_eq(tw_reactor_free(r2), 0);
    cr_assert_eq(f.count, 1, "a queued result was dropped at free");
    cr_assert_eq(f.sum, 3);
    tw_deferred_unref(d);
}

/* A worker that, after an optional gate and pause, calls back into the reactor. */
typedef struct late_block {
    tw_reactor *r;
    gate *gate;
    int pause_ms;
} late_block;

static tw_result worker_block_late(void *arg)
{
    late_block *lb = arg;
    if (lb->gate)
        gate_wait(lb->gate);
    if (lb->pause_ms)
        sleep_ms(lb->pause_ms);
    bctx b = {.r = lb->r};
    tw_result res = tw_blocking_call_from_thread(lb->r, on_reactor_plain, &b);
    if (tw_result_is_failure(res))
        return res;
    return tw_result_from_int(tw_result_int(res) + 100);
}

TW_TEST(pool_shutdown, free_answers_eshutdown_to_a_blocking_call_queued_before)
{
    tw_reactor *r2;
    cr_assert_eq(tw_reactor_new(&r2, NULL), 0);
    fired f = {0};
    late_block lb = {.r = r2};
    tw_deferred *d = tw_defer_to_thread(r2, worker_block_late, &lb);
    cr_assert_eq(tw_deferred_add_both(d, record_fired, &f), 0);
    for (int i = 0; i < 5000; i++) {
        tw_reactor_state st;
        tw_reactor_get_state(r2, &st);
        if (st.thread_calls == 1)
            break;
        sleep_ms(1);
    }
    /* The worker is blocked on the reactor: free answers it TW_ESHUTDOWN
     * rather than join it forever (nothing queued runs at free), and
     * delivers what the worker then returns. */
    cr_assert_eq(tw_reactor_free(r2), 0);
    cr_assert_eq(f.count, 1);
    cr_assert_eq(f.codes[0], TW_ESHUTDOWN, "got %s", tw_err_name(f.codes[0]));
    tw_deferred_unref(d);
}

TW_TEST(pool_shutdown, free_answers_eshutdown_to_a_worker_calling_back_during_free)
{
    tw_reactor *r2;
    cr_assert_eq(tw_reactor_new(&r2, NULL), 0);
    fired f = {0};
    gate g = GATE_INIT;
    late_block lb = {.r = r2, .gate = &g};
    tw_deferred *d = tw_defer_to_thread(r2, worker_block_late, &lb);
    cr_assert_eq(tw_deferred_add_both(d, record_fired, &f), 0);
    cr_assert(gate_await_waiting(&g, 1));
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, open_gate_later, &g), 0);
    cr_assert_eq(tw_reactor_free(r2), 0);
    pthread_join(t, NULL);
    cr_assert_eq(f.count, 1);
    cr_assert_eq(f.codes[0], TW_ESHUTDOWN, "got %s", tw_err_name(f.codes[0]));
    tw_deferred_unref(d);
}

/* fn returns a deferred that nothing fires; the test keeps it alive. */
static tw_deferred *kept;

static tw_result on_reactor_kept_deferred(void *arg)
{
    kept = tw_deferred_new(NULL, NULL);
    return tw_result_deferred(tw_deferred_ref(kept));
}

static tw_result worker_waits_on_kept(void *arg)
{
    return tw_blocking_call_from_thread(arg, on_reactor_kept_deferred, NULL);
}

TW_TEST(pool_shutdown, free_wakes_a_caller_waiting_on_a_deferred_that_never_fires)
{
    /* The caller, whose answer can no longer come, is woken with
     * TW_ESHUTDOWN at free. */
    tw_reactor *r2;
    cr_assert_eq(tw_reactor_new(&r2, NULL), 0);
    fired f = {0};
    kept = NULL;
    tw_deferred *d = tw_defer_to_thread(r2, worker_waits_on_kept, r2);
    cr_assert_eq(tw_deferred_add_both(d, record_fired, &f), 0);
    for (int i = 0; i < 5000 && !kept; i++)
        tw_reactor_iterate(r2, 0.001);
    cr_assert_not_null(kept);
    cr_assert_eq(tw_reactor_free(r2), 0);
    cr_assert_eq(f.count, 1);
    cr_assert_eq(f.codes[0], TW_ESHUTDOWN, "got %s", tw_err_name(f.codes[0]));
    /* Firing it now reaches nobody; releasing it frees the call. */
    cr_assert_eq(tw_deferred_callback(kept, tw_result_from_int(1)), 0);
    tw_deferred_unref(kept);
    tw_deferred_unref(d);
}

static void stop_reactor(void *arg)
{
    tw_reactor_stop(arg);
}

TW_REACTOR_TEST(pool_shutdown, stop_serves_a_worker_calling_back)
{
    fired f = {0};
    late_block lb = {.r = r, .pause_ms = 30};
    tw_deferred *d = tw_defer_to_thread(r, worker_block_late, &lb);
    cr_assert_eq(tw_deferred_add_both(d, record_fired, &f), 0);
    cr_assert_eq(tw_call_later(tw_reactor_clock(r), 0.005, stop_reactor, r, NULL), 0);
    cr_assert_eq(tw_reactor_run(r), 0);
    /* The pool stopped after the loop, while the worker still slept. */
    cr_assert_eq(f.count, 1, "the result was not delivered by the time run returned");
    cr_assert_eq(f.sum, 107);
    tw_reactor_state st;
    tw_reactor_get_state(r, &st);
    cr_assert_not(st.thread_pool_started);
    tw_deferred_unref(d);
}

static tw_result worker_late_waits_on_timer(void *arg)
{
    sleep_ms(30);
    return worker_blocking_deferred(arg);
}

TW_REACTOR_TEST(pool_shutdown, stop_serves_a_worker_waiting_on_a_timer)
{
    /* The worker asks the reactor for a deferred that a timer fires, after
     * the loop has stopped: the pool's shutdown keeps iterating meanwhile. */
    bctx b = {.r = r};
    fired f = {0};
    tw_deferred *d = tw_defer_to_thread(r, worker_late_waits_on_timer, &b);
    cr_assert_eq(tw_deferred_add_both(d, record_fired, &f), 0);
    cr_assert_eq(tw_call_later(tw_reactor_clock(r), 0.005, stop_reactor, r, NULL), 0);
    cr_assert_eq(tw_reactor_run(r), 0);
    cr_assert_eq(f.count, 1);
    cr_assert_eq(f.sum, 11);
    cr_assert(b.timer_fired_before_return);
    tw_deferred_unref(d);
}
