/* tw_reactor_call_from_thread: order, wakeups, shutdown, memory. */
#include "twtest.h"

#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

enum { THREADS = 4, CALLS = 10000 };

struct flood {
    tw_reactor *r;
    pthread_barrier_t start;
    int next[THREADS]; /* the sequence number each thread's next call must carry */
    long ran;
    long out_of_order;
    int send_errors;
};

struct sender {
    struct flood *f;
    int id;
};

static struct flood *the_flood;

static void receive(void *arg)
{
    uintptr_t v = (uintptr_t)arg;
    int id = (int)(v / CALLS), seq = (int)(v % CALLS);
    struct flood *f = the_flood;
    if (f->next[id] != seq)
        f->out_of_order++;
    f->next[id] = seq + 1;
    f->ran++;
}

static void *send_many(void *arg)
{
    struct sender *s = arg;
    pthread_barrier_wait(&s->f->start);
    for (int i = 0; i < CALLS; i++) {
        if (tw_reactor_call_from_thread(s->f->r, receive, (void *)(uintptr_t)(s->id * CALLS + i)))
            __atomic_add_fetch(&s->f->send_errors, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

TW_REACTOR_TEST(call_from_thread, four_threads_in_order_with_few_wakeups)
{
    struct flood f = {.r = r};
    the_flood = &f;
    pthread_barrier_init(&f.start, NULL, THREADS);
    pthread_t tids[THREADS];
    struct sender senders[THREADS];
    for (int t = 0; t < THREADS; t++) {
        senders[t] = (struct sender){&f, t};
        cr_assert_eq(pthread_create(&tids[t], NULL, send_many, &senders[t]), 0);
    }
    long iterations = 0;
    uint64_t deadline = tw_monotonic_ns() + 20000000000u;
    while (f.ran < THREADS * CALLS && tw_monotonic_ns() < deadline) {
        if (tw_reactor_iterate(r, 1.0) > 0)
            iterations++;
    }
    for (int t = 0; t < THREADS; t++)
        pthread_join(tids[t], NULL);
    pthread_barrier_destroy(&f.start);
    cr_assert_eq(f.send_errors, 0);
    cr_assert_eq(f.ran, THREADS * CALLS);
    cr_assert_eq(f.out_of_order, 0);
    for (int t = 0; t < THREADS; t++)
        cr_assert_eq(f.next[t], CALLS);
    cr_assert_lt(iterations, THREADS * CALLS / 10, "%ld wakeups for %d calls", iterations,
                 THREADS * CALLS);
    cr_log_info("%ld loop iterations ran %d calls", iterations, THREADS * CALLS);
}

static void count(void *arg)
{
    (*(int *)arg)++;
}

TW_REACTOR_TEST(call_from_thread, from_the_loop_thread_runs_next_iteration)
{
    int n = 0;
    cr_assert_eq(tw_reactor_call_from_thread(r, count, &n), 0);
    cr_assert_eq(n, 0);
    tw_reactor_state st;
    tw_reactor_get_state(r, &st);
    cr_assert_eq(st.thread_calls, 1);
    cr_assert_eq(tw_reactor_iterate(r, 0), 1);
    cr_assert_eq(n, 1);
    tw_reactor_get_state(r, &st);
    cr_assert_eq(st.thread_calls, 0);
}

struct requeue {
    tw_reactor *r;
    int runs;
};

static void requeue_self(void *arg)
{
    struct requeue *q = arg;
    if (++q->runs < 3)
        cr_assert_eq(tw_reactor_call_from_thread(q->r, requeue_self, q), 0);
}

TW_REACTOR_TEST(call_from_thread, call_queued_by_a_call_waits_for_the_next_iteration)
{
    struct requeue q = {.r = r};
    tw_reactor_call_from_thread(r, requeue_self, &q);
    for (int i = 1; i <= 3; i++) {
        cr_assert_eq(tw_reactor_iterate(r, 1.0), 1);
        cr_assert_eq(q.runs, i);
    }
}

TW_REACTOR_TEST(call_from_thread, bad_arguments)
{
    cr_assert_eq(tw_reactor_call_from_thread(r, NULL, NULL), TW_EINVAL);
}

struct later {
    tw_reactor *r;
    int ran;
    int rc;
    useconds_t delay_us;
    void (*fn)(void *);
};

static void stop_it(void *arg)
{
    struct later *l = arg;
    l->ran++;
    tw_reactor_stop(l->r);
}

static void *send_later(void *arg)
{
    struct later *l = arg;
    usleep(l->delay_us);
    l->rc = tw_reactor_call_from_thread(l->r, l->fn, l);
    return NULL;
}

static void note_ran(void *arg)
{
    ((struct later *)arg)->ran++;
}

TW_REACTOR_TEST(call_from_thread, wakes_a_sleeping_iterate)
{
    struct later l = {.r = r, .delay_us = 30000, .fn = note_ran};
    pthread_t tid;
    pthread_create(&tid, NULL, send_later, &l);
    uint64_t t0 = tw_monotonic_ns();
    int n = 0;
    while (l.ran == 0 && tw_monotonic_ns() - t0 < 5000000000u)
        n += tw_reactor_iterate(r, 10.0);
    uint64_t took = tw_monotonic_ns() - t0;
    pthread_join(tid, NULL);
    cr_assert_eq(l.rc, 0);
    cr_assert_eq(l.ran, 1);
    cr_assert_eq(n, 1);
    cr_assert_lt(took, 2000000000u, "the call did not wake the loop");
}

TW_REACTOR_TEST(call_from_thread, stops_a_running_reactor)
{
    struct later l = {.r = r, .delay_us = 20000, .fn = stop_it};
    pthread_t tid;
    pthread_create(&tid, NULL, send_later, &l);
    cr_assert_eq(tw_reactor_run(r), 0);
    pthread_join(tid, NULL);
    cr_assert_eq(l.ran, 1);
}

/* A pool worker keeps calling back while the reactor is freed: the free
 * closes the queue before it joins the pool, so the worker gets
 * TW_ESHUTDOWN, and what it queued before is dropped unrun. */
struct late_sender {
    tw_reactor *r;
    atomic_long accepted;
    int final_rc;
    int ran;
};

static void never_runs(void *arg)
{
    ((struct late_sender *)arg)->ran++;
}

static void keep_calling(void *arg)
{
    struct late_sender *s = arg;
    int rc;
    while ((rc = tw_reactor_call_from_thread(s->r, never_runs, s)) == 0) {
        atomic_fetch_add(&s->accepted, 1);
        usleep(200);
    }
    s->final_rc = rc;
}

TW_TEST(call_from_thread, eshutdown_once_free_begins)
{
    tw_reactor *r;
    cr_assert_eq(tw_reactor_new(&r, NULL), 0);
    struct late_sender s = {.r = r};
    tw_threadpool *pool = tw_reactor_thread_pool(r);
    cr_assert_not_null(pool);
    cr_assert_eq(tw_threadpool_call(pool, keep_calling, &s), 0);
    while (atomic_load(&s.accepted) < 3)
        usleep(1000);
    cr_assert_eq(tw_reactor_free(r), 0);
    cr_assert_eq(s.final_rc, TW_ESHUTDOWN);
    cr_assert_eq(s.ran, 0, "queued calls are dropped, not run");
}

TW_TEST(call_from_thread, free_drops_queued_calls)
{
    tw_reactor *r;
    cr_assert_eq(tw_reactor_new(&r, NULL), 0);
    int n = 0;
    /* More than the node pool holds, so some are allocated one by one. */
    for (int i = 0; i < 1000; i++)
        cr_assert_eq(tw_reactor_call_from_thread(r, count, &n), 0);
    tw_reactor_state st;
    tw_reactor_get_state(r, &st);
    cr_assert_eq(st.thread_calls, 1000);
    cr_assert_eq(tw_reactor_free(r), 0);
    cr_assert_eq(n, 0);
}

TW_REACTOR_TEST(call_from_thread, out_of_memory_beyond_the_pool)
{
    int n = 0, queued = 0, rc = 0;
    tw_testing_fail_alloc_after(0);
    /* The pool's nodes need no allocation; past them, calls fail cleanly. */
    while (queued < 100000 && (rc = tw_reactor_call_from_thread(r, count, &n)) == 0)
        queued++;
    tw_testing_fail_alloc_off();
    cr_assert_eq(rc, TW_ENOMEM);
    cr_assert_gt(queued, 0, "the pool serves calls without allocating");
    cr_assert_lt(queued, 100000);
    /* The ones accepted all run; the failed one never does. */
    tw_reactor_iterate(r, 0);
    cr_assert_eq(n, queued);
    /* And later calls work again. */
    cr_assert_eq(tw_reactor_call_from_thread(r, count, &n), 0);
    tw_reactor_iterate(r, 0);
    cr_assert_eq(n, queued + 1);
}

/* Pool nodes are recycled: a long stream of calls, each batch run before the
 * next is sent, reuses the same nodes and never allocates. */
TW_REACTOR_TEST(call_from_thread, steady_state_does_not_allocate)
{
    int n = 0;
    for (int i = 0; i < 10; i++)
        tw_reactor_call_from_thread(r, count, &n);
    tw_reactor_iterate(r, 0);
    long before = tw_testing_alloc_count();
    for (int round = 0; round < 100; round++) {
        for (int i = 0; i < 50; i++)
            tw_reactor_call_from_thread(r, count, &n);
        tw_reactor_iterate(r, 0);
    }
    cr_assert_eq(n, 10 + 100 * 50);
    cr_assert_eq(tw_testing_alloc_count(), before);
}

/* Ping-pong: a thread sends one call, waits until the loop has run it, and
 * sends the next. The loop sleeps with a long timeout between calls, so every
 * call must wake it: a single lost wakeup would stall the test for 10 s. */
struct pingpong {
    tw_reactor *r;
    atomic_int ran;
    int rounds;
    int errors;
};

static void pong(void *arg)
{
    struct pingpong *p = arg;
    atomic_fetch_add(&p->ran, 1);
}

static void *ping(void *arg)
{
    struct pingpong *p = arg;
    for (int i = 0; i < p->rounds; i++) {
        if (tw_reactor_call_from_thread(p->r, pong, p) != 0)
            p->errors++;
        while (atomic_load(&p->ran) <= i)
            ; /* the loop runs it; spin rather than sleep to race it */
    }
    return NULL;
}

TW_REACTOR_TEST(call_from_thread, no_lost_wakeups)
{
    struct pingpong p = {.r = r, .rounds = 2000};
    pthread_t tid;
    cr_assert_eq(pthread_create(&tid, NULL, ping, &p), 0);
    uint64_t t0 = tw_monotonic_ns();
    while (atomic_load(&p.ran) < p.rounds && tw_monotonic_ns() - t0 < 20000000000u)
        tw_reactor_iterate(r, 10.0);
    uint64_t took = tw_monotonic_ns() - t0;
    pthread_join(tid, NULL);
    cr_assert_eq(p.errors, 0);
    cr_assert_eq(atomic_load(&p.ran), p.rounds);
    cr_assert_lt(took, 8000000000u, "a wakeup was lost (took %.1f s)", (double)took / 1e9);
}
