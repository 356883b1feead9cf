/* Timers, Twine against libuv, in one process run. Prints two JSON lines.
 *
 * 1. libuv's million_timers workload: 1,000,000 one-shot timers whose timeout
 *    grows by 1 ms every 1,000 timers (so the run spans about one second),
 *    run to completion, then cleaned up. Twine runs it twice: with
 *    tw_call_later (the clock owns the calls) and with intrusive tw_timer
 *    (the caller owns them, as libuv's uv_timer_t). Wall time includes the
 *    second of waiting both loops must do; CPU time does not, and tells the
 *    implementations apart.
 * 2. Idle-timeout resets: 100,000 armed timers, each re-armed 10 times to a
 *    later deadline (what a connection does on every read), in ns per reset,
 *    with the allocations made during the resets.
 *
 * Twine runs on a real reactor (epoll), iterated until no timer is pending,
 * as uv_run runs until no handle is active. The resets run on the reactor's
 * clock. Best of REPS runs each. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <twine/clock.h>
#include <twine/reactor.h>
#include <twine/testing.h>
#include <uv.h>

#define TIMERS       1000000
#define RESET_TIMERS 100000
#define RESET_ROUNDS 10
#define REPS         3

struct figures {
    double wall, cpu;
};

static double clock_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct figures start_figures(void)
{
    return (struct figures){clock_s(CLOCK_MONOTONIC), clock_s(CLOCK_PROCESS_CPUTIME_ID)};
}

static struct figures since(struct figures start)
{
    return (struct figures){clock_s(CLOCK_MONOTONIC) - start.wall,
                            clock_s(CLOCK_PROCESS_CPUTIME_ID) - start.cpu};
}

static void keep_best(struct figures *best, struct figures f)
{
    if (best->wall == 0 || f.wall < best->wall)
        best->wall = f.wall;
    if (best->cpu == 0 || f.cpu < best->cpu)
        best->cpu = f.cpu;
}

static void fail(const char *what)
{
    fprintf(stderr, "bench-timers: %s\n", what);
    exit(1);
}

/* ---- Counting allocators: allocations made through each library. */

/* Twine's allocations are counted by the testing kit's allocator; libuv's here. */
static long uv_allocs;

static void *uv_count_malloc(size_t n)
{
    uv_allocs++;
    return malloc(n);
}
static void *uv_count_calloc(size_t c, size_t n)
{
    uv_allocs++;
    return calloc(c, n);
}
static void *uv_count_realloc(void *p, size_t n)
{
    uv_allocs++;
    return realloc(p, n);
}

/* ---- Twine */

static long fired;

static tw_reactor *new_reactor(void)
{
    tw_reactor *r = NULL;
    tw_reactor_options options = {.backend = "epoll", .no_signal_handlers = true};
    if (tw_reactor_new(&r, &options) != 0)
        fail("tw_reactor_new");
    return r;
}

/* Runs the reactor until no timer is left, as uv_run(UV_RUN_DEFAULT) does. */
static void drive(tw_reactor *r)
{
    while (tw_clock_pending(tw_reactor_clock(r)) > 0)
        if (tw_reactor_iterate(r, INFINITY) < 0)
            fail("tw_reactor_iterate");
}

static void call_fired(void *arg)
{
    fired++;
}

static struct figures twine_calls(void)
{
    fired = 0;
    struct figures start = start_figures();
    tw_reactor *r = new_reactor();
    tw_clock *clock = tw_reactor_clock(r);
    uint64_t timeout_ms = 0;
    for (long i = 0; i < TIMERS; i++) {
        if (i % 1000 == 0)
            timeout_ms++;
        if (tw_call_later(clock, (double)timeout_ms / 1e3, call_fired, NULL, NULL) != 0)
            fail("tw_call_later");
    }
    drive(r);
    tw_reactor_free(r);
    struct figures f = since(start);
    if (fired != TIMERS)
        fail("twine: not every call ran");
    return f;
}

static void timer_fired(tw_timer *timer)
{
    fired++;
}

static struct figures twine_timers(void)
{
    tw_timer *timers = malloc(TIMERS * sizeof *timers);
    if (timers == NULL)
        fail("out of memory");
    fired = 0;
    struct figures start = start_figures();
    tw_reactor *r = new_reactor();
    tw_clock *clock = tw_reactor_clock(r);
    uint64_t timeout_ms = 0;
    for (long i = 0; i < TIMERS; i++) {
        if (i % 1000 == 0)
            timeout_ms++;
        tw_timer_init(&timers[i], clock, timer_fired);
        if (tw_timer_start(&timers[i], (double)timeout_ms / 1e3) != 0)
            fail("tw_timer_start");
    }
    drive(r);
    for (long i = 0; i < TIMERS; i++)
        tw_timer_stop(&timers[i]);
    tw_reactor_free(r);
    struct figures f = since(start);
    if (fired != TIMERS)
        fail("twine: not every timer ran");
    free(timers);
    return f;
}

/* ---- libuv */

static void uv_fired(uv_timer_t *handle)
{
    fired++;
}

static void uv_closed(uv_handle_t *handle) {}

static struct figures libuv_timers(void)
{
    uv_loop_t loop;
    uv_timer_t *timers = malloc(TIMERS * sizeof *timers);
    if (timers == NULL || uv_loop_init(&loop) != 0)
        fail("uv_loop_init");
    fired = 0;
    struct figures start = start_figures();
    uint64_t timeout_ms = 0;
    for (long i = 0; i < TIMERS; i++) {
        if (i % 1000 == 0)
            timeout_ms++;
        if (uv_timer_init(&loop, &timers[i]) != 0 ||
            uv_timer_start(&timers[i], uv_fired, timeout_ms, 0) != 0)
            fail("uv_timer_start");
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    for (long i = 0; i < TIMERS; i++)
        uv_close((uv_handle_t *)&timers[i], uv_closed);
    uv_run(&loop, UV_RUN_DEFAULT);
    struct figures f = since(start);
    if (fired != TIMERS)
        fail("libuv: not every timer ran");
    uv_loop_close(&loop);
    free(timers);
    return f;
}

/* ---- Idle-timeout resets */

static double twine_resets(long *allocations)
{
    tw_reactor *r = new_reactor();
    tw_clock *clock = tw_reactor_clock(r);
    tw_timer *timers = malloc(RESET_TIMERS * sizeof *timers);
    if (timers == NULL)
        fail("out of memory");
    for (long i = 0; i < RESET_TIMERS; i++) {
        tw_timer_init(&timers[i], clock, timer_fired);
        if (tw_timer_start(&timers[i], 60.0) != 0)
            fail("tw_timer_start");
    }
    long before = tw_testing_alloc_count();
    double start = clock_s(CLOCK_MONOTONIC);
    for (int round = 1; round <= RESET_ROUNDS; round++) {
        double delay = 60.0 + round * 1e-3;
        for (long i = 0; i < RESET_TIMERS; i++)
            tw_timer_start(&timers[i], delay);
    }
    double elapsed = clock_s(CLOCK_MONOTONIC) - start;
    *allocations = tw_testing_alloc_count() - before;
    for (long i = 0; i < RESET_TIMERS; i++)
        tw_timer_stop(&timers[i]);
    tw_reactor_free(r);
    free(timers);
    return elapsed * 1e9 / ((double)RESET_TIMERS * RESET_ROUNDS);
}

static double libuv_resets(long *allocations)
{
    uv_loop_t loop;
    uv_timer_t *timers = malloc(RESET_TIMERS * sizeof *timers);
    if (timers == NULL || uv_loop_init(&loop) != 0)
        fail("uv_loop_init");
    for (long i = 0; i < RESET_TIMERS; i++) {
        uv_timer_init(&loop, &timers[i]);
        uv_timer_start(&timers[i], uv_fired, 60000, 0);
    }
    long before = uv_allocs;
    double start = clock_s(CLOCK_MONOTONIC);
    for (int round = 1; round <= RESET_ROUNDS; round++) {
        for (long i = 0; i < RESET_TIMERS; i++)
            uv_timer_start(&timers[i], uv_fired, 60000 + (uint64_t)round, 0);
    }
    double elapsed = clock_s(CLOCK_MONOTONIC) - start;
    *allocations = uv_allocs - before;
    for (long i = 0; i < RESET_TIMERS; i++)
        uv_close((uv_handle_t *)&timers[i], uv_closed);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    free(timers);
    return elapsed * 1e9 / ((double)RESET_TIMERS * RESET_ROUNDS);
}

int main(void)
{
    tw_testing_fail_alloc_off(); /* installs the testing kit's counting allocator */
    if (uv_replace_allocator(uv_count_malloc, uv_count_realloc, uv_count_calloc, free) != 0)
        fail("cannot install the counting allocators");

    struct figures tw = {0}, twt = {0}, uv = {0};
    for (int rep = 0; rep < REPS; rep++) {
        keep_best(&tw, twine_calls());
        keep_best(&twt, twine_timers());
        keep_best(&uv, libuv_timers());
    }
    printf("{\"bench\":\"timers\",\"timers\":%d,\"twine_s\":%.4f,\"twine_timer_s\":%.4f,"
           "\"libuv_s\":%.4f,\"ratio\":%.3f,\"twine_cpu_s\":%.4f,\"twine_timer_cpu_s\":%.4f,"
           "\"libuv_cpu_s\":%.4f,\"cpu_ratio\":%.3f,\"timer_cpu_ratio\":%.3f}\n",
           TIMERS, tw.wall, twt.wall, uv.wall, tw.wall / uv.wall, tw.cpu, twt.cpu, uv.cpu,
           tw.cpu / uv.cpu, twt.cpu / uv.cpu);
    fflush(stdout);

    double tw_ns = 0, uv_ns = 0;
    long tw_allocs = 0, uv_allocs_during = 0;
    for (int rep = 0; rep < REPS; rep++) {
        long a;
        double ns = twine_resets(&a);
        if (rep == 0 || ns < tw_ns)
            tw_ns = ns;
        tw_allocs += a;
        ns = libuv_resets(&a);
        if (rep == 0 || ns < uv_ns)
            uv_ns = ns;
        uv_allocs_during += a;
    }
    printf("{\"bench\":\"timer_resets\",\"timers\":%d,\"resets_each\":%d,\"ns_per_reset\":%.2f,"
           "\"allocations\":%ld,\"libuv_ns_per_reset\":%.2f,\"libuv_allocations\":%ld,"
           "\"ratio\":%.3f}\n",
           RESET_TIMERS, RESET_ROUNDS, tw_ns, tw_allocs, uv_ns, uv_allocs_during, tw_ns / uv_ns);
    return tw_allocs == 0 ? 0 : 1;
}
