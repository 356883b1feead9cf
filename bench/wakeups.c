/* Cross-thread calls: tw_reactor_call_from_thread against libuv.
 *
 * N sender threads post calls to a loop thread for about a second while the
 * loop runs them; the figure is calls run per second (best of 3) and the loop
 * wakeups each call cost.
 *
 * The libuv peer does what a libuv program does to run a function on the
 * loop from another thread (and what libuv's own thread pool does to hand
 * back finished work): a malloc'd request pushed on a mutex-guarded queue,
 * then uv_async_send, whose callback drains the queue. Bare uv_async_send
 * (no payload: sends coalesce into one callback) is measured as well, for
 * reference, as libuv_bare_sends_per_s.
 *
 * Each sender keeps at most WINDOW calls in flight, so the queue (and memory)
 * stays bounded when senders outrun the loop; both sides get the same window.
 *
 * Output, one line per thread count:
 * {"bench":"call_from_thread","threads":N,"twine_calls_per_s":..,"libuv_calls_per_s":..,
 *  "ratio":..,"twine_wakeups_per_call":..,"libuv_wakeups_per_call":..,
 *  "libuv_bare_sends_per_s":..} */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <twine/twine.h>
#include <uv.h>

#define DURATION_NS 1000000000ull
#define WINDOW      4096
#define REPEATS     3
#define MAX_SENDERS 8

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* One sender. sent is written by the sender only, consumed by the loop only. */
typedef struct sender {
    pthread_t tid;
    _Alignas(64) atomic_uint_fast64_t sent;
    _Alignas(64) atomic_uint_fast64_t consumed;
    struct run *run;
    int failed;
} sender;

typedef struct run {
    int nthreads;
    sender senders[MAX_SENDERS];
    atomic_bool go;
    atomic_bool stop;
    atomic_int finished;
    uint64_t wakeups;
    /* twine */
    tw_reactor *reactor;
    /* libuv */
    uv_async_t async;
    pthread_mutex_t lock;
    struct uv_req *head, **tail;
} run;

static void wait_window(sender *s, uint64_t sent)
{
    while (sent - atomic_load_explicit(&s->consumed, memory_order_acquire) >= WINDOW)
        cpu_relax();
}

static uint64_t total(const run *rn, bool consumed)
{
    uint64_t n = 0;
    for (int i = 0; i < rn->nthreads; i++)
        n += atomic_load(consumed ? &rn->senders[i].consumed : &rn->senders[i].sent);
    return n;
}

static void count_one(sender *s)
{
    /* Only the loop thread writes consumed: a plain increment, published. */
    uint64_t c = atomic_load_explicit(&s->consumed, memory_order_relaxed);
    atomic_store_explicit(&s->consumed, c + 1, memory_order_release);
}

/* ---- Twine */

static void twine_call(void *arg)
{
    count_one(arg);
}

static void *twine_sender(void *arg)
{
    sender *s = arg;
    run *rn = s->run;
    while (!atomic_load(&rn->go))
        cpu_relax();
    uint64_t sent = 0;
    while (!atomic_load_explicit(&rn->stop, memory_order_relaxed)) {
        wait_window(s, sent);
        if (tw_reactor_call_from_thread(rn->reactor, twine_call, s) != 0) {
            s->failed = 1;
            break;
        }
        sent++;
        atomic_store_explicit(&s->sent, sent, memory_order_relaxed);
    }
    atomic_fetch_add(&rn->finished, 1);
    return NULL;
}

static double bench_twine(int nthreads, double *wakeups_per_call)
{
    run *rn = calloc(1, sizeof *rn);
    rn->nthreads = nthreads;
    if (tw_reactor_new(&rn->reactor, NULL) != 0) {
        fprintf(stderr, "tw_reactor_new failed\n");
        exit(1);
    }
    for (int i = 0; i < nthreads; i++) {
        rn->senders[i].run = rn;
        pthread_create(&rn->senders[i].tid, NULL, twine_sender, &rn->senders[i]);
    }
    uint64_t t0 = now_ns();
    atomic_store(&rn->go, true);
    for (;;) {
        int n = tw_reactor_iterate(rn->reactor, 0.01);
        if (n > 0)
            rn->wakeups++;
        if (!atomic_load(&rn->stop) && now_ns() - t0 >= DURATION_NS)
            atomic_store(&rn->stop, true);
        if (atomic_load(&rn->finished) == nthreads && total(rn, true) == total(rn, false))
            break;
    }
    uint64_t t1 = now_ns();
    for (int i = 0; i < nthreads; i++) {
        pthread_join(rn->senders[i].tid, NULL);
        if (rn->senders[i].failed)
            fprintf(stderr, "tw_reactor_call_from_thread failed\n");
    }
    uint64_t calls = total(rn, true);
    tw_reactor_free(rn->reactor);
    *wakeups_per_call = calls ? (double)rn->wakeups / (double)calls : 0;
    free(rn);
    return (double)calls / ((double)(t1 - t0) / 1e9);
}

/* ---- libuv: queue + uv_async_send */

struct uv_req {
    struct uv_req *next;
    void (*fn)(void *);
    void *arg;
};

static void uv_count(void *arg)
{
    count_one(arg);
}

static void uv_finish_check(run *rn)
{
    if (atomic_load(&rn->finished) == rn->nthreads && total(rn, true) == total(rn, false))
        uv_close((uv_handle_t *)&rn->async, NULL);
}

static void uv_drain(uv_async_t *async)
{
    run *rn = async->data;
    rn->wakeups++;
    pthread_mutex_lock(&rn->lock);
    struct uv_req *list = rn->head;
    rn->head = NULL;
    rn->tail = &rn->head;
    pthread_mutex_unlock(&rn->lock);
    while (list) {
        struct uv_req *next = list->next;
        list->fn(list->arg);
        free(list);
        list = next;
    }
    uv_finish_check(rn);
}

static void *uv_sender(void *arg)
{
    sender *s = arg;
    run *rn = s->run;
    while (!atomic_load(&rn->go))
        cpu_relax();
    uint64_t sent = 0;
    while (!atomic_load_explicit(&rn->stop, memory_order_relaxed)) {
        wait_window(s, sent);
        struct uv_req *req = malloc(sizeof *req);
        req->next = NULL;
        req->fn = uv_count;
        req->arg = s;
        pthread_mutex_lock(&rn->lock);
        *rn->tail = req;
        rn->tail = &req->next;
        pthread_mutex_unlock(&rn->lock);
        uv_async_send(&rn->async);
        sent++;
        atomic_store_explicit(&s->sent, sent, memory_order_relaxed);
    }
    atomic_fetch_add(&rn->finished, 1);
    uv_async_send(&rn->async); /* let the loop see that this sender is done */
    return NULL;
}

static void uv_stop_timer(uv_timer_t *t)
{
    run *rn = t->data;
    atomic_store(&rn->stop, true);
    uv_close((uv_handle_t *)t, NULL);
}

static double bench_libuv(int nthreads, double *wakeups_per_call)
{
    run *rn = calloc(1, sizeof *rn);
    rn->nthreads = nthreads;
    rn->tail = &rn->head;
    pthread_mutex_init(&rn->lock, NULL);
    uv_loop_t loop;
    uv_loop_init(&loop);
    uv_async_init(&loop, &rn->async, uv_drain);
    rn->async.data = rn;
    uv_timer_t timer;
    uv_timer_init(&loop, &timer);
    timer.data = rn;
    uv_timer_start(&timer, uv_stop_timer, DURATION_NS / 1000000, 0);
    for (int i = 0; i < nthreads; i++) {
        rn->senders[i].run = rn;
        pthread_create(&rn->senders[i].tid, NULL, uv_sender, &rn->senders[i]);
    }
    uint64_t t0 = now_ns();
    atomic_store(&rn->go, true);
    uv_run(&loop, UV_RUN_DEFAULT);
    uint64_t t1 = now_ns();
    for (int i = 0; i < nthreads; i++)
        pthread_join(rn->senders[i].tid, NULL);
    uv_loop_close(&loop);
    uint64_t calls = total(rn, true);
    *wakeups_per_call = calls ? (double)rn->wakeups / (double)calls : 0;
    pthread_mutex_destroy(&rn->lock);
    free(rn);
    return (double)calls / ((double)(t1 - t0) / 1e9);
}

/* ---- libuv: bare uv_async_send, for reference */

typedef struct bare {
    uv_async_t async;
    atomic_bool go, stop;
    atomic_uint_fast64_t sends;
    uint64_t callbacks;
    int nthreads;
    atomic_int finished;
} bare;

static void bare_cb(uv_async_t *async)
{
    bare *b = async->data;
    b->callbacks++;
    if (atomic_load(&b->finished) == b->nthreads)
        uv_close((uv_handle_t *)async, NULL);
}

static void *bare_sender(void *arg)
{
    bare *b = arg;
    while (!atomic_load(&b->go))
        cpu_relax();
    uint64_t n = 0;
    while (!atomic_load_explicit(&b->stop, memory_order_relaxed)) {
        uv_async_send(&b->async);
        n++;
    }
    atomic_fetch_add(&b->sends, n);
    atomic_fetch_add(&b->finished, 1);
    uv_async_send(&b->async);
    return NULL;
}

static void bare_stop_timer(uv_timer_t *t)
{
    bare *b = t->data;
    atomic_store(&b->stop, true);
    uv_close((uv_handle_t *)t, NULL);
}

static double bench_libuv_bare(int nthreads)
{
    bare *b = calloc(1, sizeof *b);
    b->nthreads = nthreads;
    uv_loop_t loop;
    uv_loop_init(&loop);
    uv_async_init(&loop, &b->async, bare_cb);
    b->async.data = b;
    uv_timer_t timer;
    uv_timer_init(&loop, &timer);
    timer.data = b;
    uv_timer_start(&timer, bare_stop_timer, DURATION_NS / 1000000, 0);
    pthread_t tids[MAX_SENDERS];
    for (int i = 0; i < nthreads; i++)
        pthread_create(&tids[i], NULL, bare_sender, b);
    uint64_t t0 = now_ns();
    atomic_store(&b->go, true);
    uv_run(&loop, UV_RUN_DEFAULT);
    uint64_t t1 = now_ns();
    for (int i = 0; i < nthreads; i++)
        pthread_join(tids[i], NULL);
    uv_loop_close(&loop);
    double rate = (double)atomic_load(&b->sends) / ((double)(t1 - t0) / 1e9);
    free(b);
    return rate;
}

int main(int argc, char **argv)
{
    int counts[] = {1, 2};
    for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
        int n = counts[c];
        double tw_best = 0, uv_best = 0, bare_best = 0, tw_wpc = 0, uv_wpc = 0;
        for (int rep = 0; rep < REPEATS; rep++) {
            double w;
            double rate = bench_twine(n, &w);
            if (rate > tw_best) {
                tw_best = rate;
                tw_wpc = w;
            }
            rate = bench_libuv(n, &w);
            if (rate > uv_best) {
                uv_best = rate;
                uv_wpc = w;
            }
        }
        bare_best = bench_libuv_bare(n);
        printf("{\"bench\":\"call_from_thread\",\"threads\":%d,\"twine_calls_per_s\":%.0f,"
               "\"libuv_calls_per_s\":%.0f,\"ratio\":%.3f,\"twine_wakeups_per_call\":%.5f,"
               "\"libuv_wakeups_per_call\":%.5f,\"libuv_bare_sends_per_s\":%.0f}\n",
               n, tw_best, uv_best, uv_best > 0 ? tw_best / uv_best : 0, tw_wpc, uv_wpc, bare_best);
        fflush(stdout);
    }
    return 0;
}
