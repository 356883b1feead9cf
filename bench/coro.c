/* Coroutines: the context switch against ucontext's swapcontext, in the
 * same run, and what the coroutine layer costs around it.
 *
 * One JSON line (best of REPEAT runs for each timing):
 *   twine_switch_ns     one switch (half a round trip) with Twine's switch
 *                       (assembly here; "switch" names it)
 *   swapcontext_ns      the same round trips with swapcontext (which also
 *                       saves and restores the signal mask: a system call)
 *   ratio               swapcontext_ns / twine_switch_ns
 *   start_end_ns        tw_coro_start of a coroutine that returns at once,
 *                       and dropping its deferred (stack from the pool)
 *   await_resume_ns     a coroutine awaiting a new deferred that the caller
 *                       then fires: deferred made, pair added, two switches
 *   call_later0_resume_ns  the same resume pushed through a zero-delay
 *                       delayed call and a reactor iteration, the other way
 *                       coroutines could be resumed "from the reactor's stack"
 *   parked_bytes_per_coro  RSS growth per coroutine for PARKED coroutines all
 *                       waiting in tw_await (64 KiB stacks: touched pages only) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <ucontext.h>

#include <twine/coro.h>
#include <twine/twine.h>

#include "coro/switch.h"

#define SWITCH_TRIPS   5000000
#define UCONTEXT_TRIPS 500000
#define STARTS         200000
#define AWAITS         500000
#define LATER0         100000
#define PARKED         10000
#define REPEAT         3
#define RAW_STACK      (64 * 1024)

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double best(double a, double b)
{
    return a < b ? a : b;
}

/* ---- Raw switches: main <-> one context, round trips */

static tw__ctx main_ctx, other_ctx;
static volatile long bounces;

static void bounce(void *arg)
{
    (void)arg;
    for (;;) {
        bounces++;
        tw__ctx_switch(&other_ctx, &main_ctx);
    }
}

static double twine_switch_ns(void *stack)
{
    tw__ctx_make(&other_ctx, stack, RAW_STACK, bounce, NULL);
    double t0 = now();
    for (long i = 0; i < SWITCH_TRIPS; i++)
        tw__ctx_switch(&main_ctx, &other_ctx);
    return (now() - t0) / (2.0 * SWITCH_TRIPS) * 1e9;
}

static ucontext_t main_uc, other_uc;

static void bounce_uc(void)
{
    for (;;) {
        bounces++;
        swapcontext(&other_uc, &main_uc);
    }
}

static double swapcontext_ns(void *stack)
{
    getcontext(&other_uc);
    other_uc.uc_stack.ss_sp = stack;
    other_uc.uc_stack.ss_size = RAW_STACK;
    other_uc.uc_link = NULL;
    makecontext(&other_uc, bounce_uc, 0);
    double t0 = now();
    for (long i = 0; i < UCONTEXT_TRIPS; i++)
        swapcontext(&main_uc, &other_uc);
    return (now() - t0) / (2.0 * UCONTEXT_TRIPS) * 1e9;
}

/* ---- The coroutine layer */

static tw_result returns(void *arg)
{
    (void)arg;
    return tw_result_from_int(1);
}

static double start_end_ns(tw_reactor *r)
{
    double t0 = now();
    for (long i = 0; i < STARTS; i++)
        tw_deferred_unref(tw_coro_start(r, returns, NULL, NULL));
    return (now() - t0) / STARTS * 1e9;
}

/* The coroutine publishes each deferred it awaits here; the driver fires it. */
static tw_deferred *next_wait;

static tw_result awaits_forever(void *arg)
{
    long n = *(long *)arg;
    for (long i = 0; i < n; i++) {
        next_wait = tw_deferred_new(NULL, NULL);
        tw_result r = tw_await(tw_deferred_ref(next_wait));
        tw_result_release(&r);
    }
    next_wait = NULL;
    return tw_result_from_int(0);
}

static void fire_next(void *arg)
{
    (void)arg;
    tw_deferred *d = next_wait;
    tw_deferred_callback(d, tw_result_from_int(0));
    tw_deferred_unref(d);
}

static double await_resume_ns(tw_reactor *r)
{
    long n = AWAITS;
    tw_deferred *d = tw_coro_start(r, awaits_forever, &n, NULL);
    double t0 = now();
    while (next_wait)
        fire_next(NULL);
    double t = (now() - t0) / AWAITS * 1e9;
    tw_deferred_unref(d);
    return t;
}

static double call_later0_resume_ns(tw_reactor *r)
{
    long n = LATER0;
    tw_deferred *d = tw_coro_start(r, awaits_forever, &n, NULL);
    double t0 = now();
    while (next_wait) {
        tw_call_later(tw_reactor_clock(r), 0, fire_next, NULL, NULL);
        tw_reactor_iterate(r, 0);
    }
    double t = (now() - t0) / LATER0 * 1e9;
    tw_deferred_unref(d);
    return t;
}

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    char line[256];
    long kib = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

static tw_result parks(void *arg)
{
    tw_result r = tw_await(tw_deferred_ref(arg));
    tw_result_release(&r);
    return tw_result_from_int(0);
}

static double parked_bytes(tw_reactor *r)
{
    tw_coro_pool_trim();
    tw_deferred *gate = tw_deferred_new(NULL, NULL);
    tw_deferred **ds = malloc(PARKED * sizeof *ds);
    if (!ds)
        return -1;
    long before = rss_kib();
    for (int i = 0; i < PARKED; i++)
        ds[i] = tw_coro_start(r, parks, gate, NULL);
    long after = rss_kib();
    tw_deferred_callback(gate, tw_result_from_int(0));
    for (int i = 0; i < PARKED; i++)
        tw_deferred_unref(ds[i]);
    tw_deferred_unref(gate);
    free(ds);
    tw_coro_pool_trim();
    return (double)(after - before) * 1024.0 / PARKED;
}

int main(void)
{
    tw_reactor *r;
    if (tw_reactor_new(&r, NULL) < 0)
        return 1;
    void *stack = malloc(RAW_STACK);
    if (!stack)
        return 1;
    double sw = 1e9, uc = 1e9, se = 1e9, aw = 1e9, cl = 1e9, mem = 1e18;
    for (int i = 0; i < REPEAT; i++) {
        sw = best(sw, twine_switch_ns(stack));
        uc = best(uc, swapcontext_ns(stack));
        se = best(se, start_end_ns(r));
        aw = best(aw, await_resume_ns(r));
        cl = best(cl, call_later0_resume_ns(r));
    }
    mem = parked_bytes(r);
    free(stack);
    tw_reactor_free(r);
    printf("{\"bench\":\"coro\",\"switch\":\"%s\",\"twine_switch_ns\":%.2f,"
           "\"swapcontext_ns\":%.2f,\"ratio\":%.1f,\"start_end_ns\":%.1f,"
           "\"await_resume_ns\":%.1f,\"call_later0_resume_ns\":%.1f,"
           "\"coros_parked\":%d,\"parked_bytes_per_coro\":%.0f}\n",
           tw__ctx_kind, sw, uc, uc / sw, se, aw, cl, PARKED, mem);
    return 0;
}
