/* Coroutine stacks: many at once, the pool, the guard page, sizes, what a
 * coroutine costs in memory, deep chains of coroutines awaiting each other,
 * and the pool going away with its thread. */
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "coro-test.h"

#include "coro/stack.h"

/* ---- 10,000 at once, each awaiting a timer */

#define MANY 10000

static int many_done;
static size_t many_peak;

static tw_result naps(void *arg)
{
    int i = (int)(intptr_t)arg;
    tw_coro_stats st;
    tw_coro_get_stats(&st);
    if (st.live > many_peak)
        many_peak = st.live;
    /* Spread over 50 ms so timers fire in many batches and in another order
     * than the coroutines started. */
    double delay = (double)((i * 7919) % 50) / 1000.0;
    int rc = tw_await_sleep(tw_reactor_clock(tw_coro_reactor(tw_coro_current())), delay);
    cr_assert_eq(rc, 0);
    many_done++;
    return tw_result_from_int(i);
}

static tw_result count_result(tw_result result, void *arg)
{
    int *sum = arg;
    *sum += 1;
    cr_assert_null(result.failure);
    return result;
}

CORO_TEST(stack, ten_thousand_coroutines_each_awaiting_a_timer_all_finish, .timeout = 120)
{
    tw_deferred **ds = calloc(MANY, sizeof *ds);
    cr_assert(ds);
    int fired = 0;
    for (int i = 0; i < MANY; i++) {
        ds[i] = tw_coro_start(r, naps, (void *)(intptr_t)i, NULL);
        cr_assert_not_null(ds[i], "coroutine %d could not start", i);
        tw_deferred_add_callback(ds[i], count_result, &fired);
    }
    tw_coro_stats st;
    tw_coro_get_stats(&st);
    cr_assert_eq(st.live, MANY, "all alive at once, each parked in tw_await_sleep");
    cr_assert_eq(many_peak, MANY);
    cr_assert_eq(many_done, 0);

    tw_deferred *all = tw_gather(ds, MANY, false);
    tw_result res = twtest_wait(r, all);
    cr_assert_null(res.failure);
    tw_deferred_list_result *list = res.value;
    cr_assert_eq(list->count, MANY);
    for (int i = 0; i < MANY; i++)
        cr_assert_eq(tw_result_int(list->items[i].result), i);
    tw_result_release(&res);
    tw_deferred_unref(all);
    free(ds);
    cr_assert_eq(many_done, MANY);
    cr_assert_eq(fired, MANY);
    tw_coro_get_stats(&st);
    cr_assert_eq(st.stacks_pooled, TW_CORO_POOL_MAX, "the pool kept its fill, the rest unmapped");
}

/* ---- The pool */

static tw_result nothing(void *arg)
{
    (void)arg;
    return tw_result_from_int(0);
}

static void run_one(tw_reactor *r, size_t stack_size)
{
    tw_coro_options o = {.stack_size = stack_size};
    tw_deferred *d = tw_coro_start(r, nothing, NULL, &o);
    cr_assert(tw_deferred_called(d));
    tw_deferred_unref(d);
}

CORO_TEST(stack, a_stack_is_reused_by_the_next_coroutine_of_its_size)
{
    tw_coro_pool_trim();
    tw_coro_stats a, b, c;
    tw_coro_get_stats(&a);
    run_one(r, 0);
    tw_coro_get_stats(&b);
    cr_assert_eq(b.stacks_mapped, a.stacks_mapped + 1);
    cr_assert_eq(b.stacks_pooled, 1);
    run_one(r, 0);
    tw_coro_get_stats(&c);
    cr_assert_eq(c.stacks_mapped, b.stacks_mapped, "no new mapping");
    cr_assert_eq(c.stacks_reused, b.stacks_reused + 1);
    run_one(r, TW__CORO_STACK_DEFAULT + 4096); /* another size: a new stack */
    tw_coro_get_stats(&c);
    cr_assert_eq(c.stacks_mapped, b.stacks_mapped + 1);
    cr_assert_eq(c.stacks_pooled, 2);
    cr_assert_eq(tw_coro_pool_trim(), 2);
    tw_coro_get_stats(&c);
    cr_assert_eq(c.stacks_mapped, 0);
    cr_assert_eq(c.stacks_pooled, 0);
}

/* ---- Sizes and the guard page */

struct where {
    uintptr_t lo, hi;     /* the mapping holding the running frame */
    bool guard_below;     /* the page under it is mapped with no access */
    size_t size_reported; /* tw_coro_stack_size */
};

static void find_mapping(struct where *w)
{
    /* The frame address, not a local's: with detect_stack_use_after_return,
     * ASan moves address-taken locals to a "fake stack" on the heap. */
    uintptr_t at = (uintptr_t)__builtin_frame_address(0);
    FILE *f = fopen("/proc/self/maps", "r");
    cr_assert(f);
    char line[512];
    uintptr_t prev_hi = 0;
    char prev_perms[8] = "";
    while (fgets(line, sizeof line, f)) {
        uintptr_t lo, hi;
        char perms[8];
        if (sscanf(line, "%" SCNxPTR "-%" SCNxPTR " %7s", &lo, &hi, perms) != 3)
            continue;
        if (at >= lo && at < hi) {
            w->lo = lo;
            w->hi = hi;
            w->guard_below = prev_hi == lo && strcmp(prev_perms, "---p") == 0;
            break;
        }
        prev_hi = hi;
        strcpy(prev_perms, perms);
    }
    fclose(f);
}

static tw_result where_am_i(void *arg)
{
    struct where *w = arg;
    find_mapping(w);
    w->size_reported = tw_coro_stack_size(tw_coro_current());
    return tw_result_from_int(0);
}

CORO_TEST(stack, each_stack_has_the_size_asked_and_a_guard_page_below)
{
    size_t sizes[] = {0, 1, TW_CORO_STACK_MIN + 1, 1 << 20};
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        struct where w = {0};
        tw_coro_options o = {.stack_size = sizes[i]};
        tw_deferred_unref(tw_coro_start(r, where_am_i, &w, &o));
        size_t want = sizes[i] == 0 ? (size_t)TW__CORO_STACK_DEFAULT : sizes[i];
        if (want < TW_CORO_STACK_MIN)
            want = TW_CORO_STACK_MIN;
        want = (want + page - 1) / page * page;
        cr_assert_eq(w.size_reported, want, "asked %zu", sizes[i]);
        /* The mapping may have merged with a neighbour above, never below. */
        cr_assert_geq(w.hi - w.lo, want, "the mapping holds the stack, %zu bytes", want);
        cr_assert(w.guard_below, "no inaccessible page under the stack of %zu", want);
    }
}

static volatile size_t depth_limit = SIZE_MAX; /* never reached: the guard page is */

static size_t recurse(size_t depth)
{
    volatile char frame[1024];
    frame[0] = (char)depth;
    if (depth >= depth_limit)
        return 0;
    return recurse(depth + 1) + frame[0];
}

static tw_result overflows(void *arg)
{
    (void)arg;
    recurse(0);
    return tw_result_from_int(0);
}

#ifdef TW__ASAN
/* ASan reports the overflow and exits instead of dying of the signal. */
#define NOT_UNDER_ASAN .disabled = true
#else
#define NOT_UNDER_ASAN .disabled = false
#endif

CORO_TEST(stack, overflowing_hits_the_guard_page, .signal = SIGSEGV, NOT_UNDER_ASAN)
{
    if (tw__running_on_valgrind())
        raise(SIGSEGV); /* valgrind would report the crash as an error */
    tw_deferred_unref(tw_coro_start(r, overflows, NULL, NULL));
    cr_assert_fail("the recursion should have hit the guard page");
}

static tw_result uses_a_big_frame(void *arg)
{
    size_t n = *(size_t *)arg;
    volatile char *buf = __builtin_alloca(n);
    for (size_t i = 0; i < n; i += 4096)
        buf[i] = 1;
    return tw_result_from_int((intptr_t)buf[0]);
}

CORO_TEST(stack, a_bigger_stack_holds_a_bigger_frame)
{
    size_t n = 3 << 20;
    tw_coro_options o = {.stack_size = 4 << 20};
    tw_deferred *d = tw_coro_start(r, uses_a_big_frame, &n, &o);
    tw_result res = twtest_wait(r, d);
    cr_assert_eq(tw_result_int(res), 1);
    tw_deferred_unref(d);
}

/* ---- Memory: only touched pages count */

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    cr_assert(f);
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

#define PARKED 2000

CORO_TEST(stack, a_parked_coroutine_costs_a_few_pages_not_its_whole_stack, NOT_UNDER_ASAN)
{
    if (tw__running_on_valgrind())
        cr_skip_test("valgrind's own memory hides the figure");
    tw_coro_pool_trim();
    tw_deferred *gate = tw_deferred_new(NULL, NULL);
    static tw_deferred *ds[PARKED];
    long before = rss_kib();
    for (int i = 0; i < PARKED; i++)
        ds[i] = tw_coro_start(r, parks, gate, NULL);
    long after = rss_kib();
    double per = (double)(after - before) * 1024.0 / PARKED;
    cr_log_info("%.0f bytes per parked coroutine (64 KiB stacks)", per);
    /* The whole stack committed would be 64 KiB each; two or three pages and
     * the state are expected. */
    cr_assert_lt(per, 20 * 1024.0, "%.0f bytes per coroutine", per);
    cr_assert_gt(per, 4096.0, "at least the page of its top frames: %.0f", per);
    tw_deferred_callback(gate, tw_result_from_int(0));
    for (int i = 0; i < PARKED; i++) {
        cr_assert(tw_deferred_called(ds[i]));
        tw_deferred_unref(ds[i]);
    }
    tw_deferred_unref(gate);
}

/* ---- A deep chain of coroutines, each awaiting the next */

#define DEPTH 3000

struct chain {
    tw_reactor *r;
    int level;
    tw_deferred *bottom;
};

static tw_result link_in_chain(void *arg)
{
    struct chain *c = arg;
    if (c->level == DEPTH)
        return tw_await(tw_deferred_ref(c->bottom));
    struct chain next = {c->r, c->level + 1, c->bottom};
    tw_coro_options small = {.stack_size = TW_CORO_STACK_MIN};
    tw_result r = tw_await(tw_coro_start(c->r, link_in_chain, &next, &small));
    if (r.failure)
        return r;
    return tw_result_from_int(tw_result_int(r) + 1);
}

static tw_result fires_bottom(void *arg)
{
    /* Fired from a small coroutine stack: the 3000 endings that follow must
     * not pile up on it. */
    tw_deferred_callback(arg, tw_result_from_int(0));
    return tw_result_from_int(0);
}

CORO_TEST(stack, a_deep_chain_unwinds_in_constant_stack, .timeout = 120)
{
    struct chain top = {r, 0, tw_deferred_new(NULL, NULL)};
    tw_coro_options small = {.stack_size = TW_CORO_STACK_MIN};
    tw_deferred *d = tw_coro_start(r, link_in_chain, &top, &small);
    tw_coro_stats st;
    tw_coro_get_stats(&st);
    cr_assert_eq(st.live, DEPTH + 1);
    tw_deferred *f = tw_coro_start(r, fires_bottom, top.bottom, &small);
    tw_result res = twtest_wait(r, d);
    cr_assert_eq(tw_result_int(res), DEPTH);
    tw_deferred_unref(d);
    tw_deferred_unref(f);
    tw_deferred_unref(top.bottom);
}

/* ---- A thread's pool goes with it */

#define ODD_STACK (TW_CORO_STACK_MIN + 13 * 4096) /* a size nothing else asks */

struct thread_report {
    struct where w;
    size_t pooled;
};

static void *thread_with_coroutines(void *arg)
{
    struct thread_report *rep = arg;
    tw_reactor *tr;
    if (tw_reactor_new(&tr, NULL) < 0)
        return NULL;
    tw_coro_options o = {.stack_size = ODD_STACK};
    tw_deferred_unref(tw_coro_start(tr, where_am_i, &rep->w, &o));
    tw_coro_stats st;
    tw_coro_get_stats(&st);
    rep->pooled = st.stacks_pooled;
    tw_reactor_free(tr);
    return rep;
}

static bool is_mapped(uintptr_t addr)
{
    FILE *f = fopen("/proc/self/maps", "r");
    cr_assert(f);
    char line[512];
    bool found = false;
    while (!found && fgets(line, sizeof line, f)) {
        uintptr_t lo, hi;
        if (sscanf(line, "%" SCNxPTR "-%" SCNxPTR, &lo, &hi) == 2 && addr >= lo && addr < hi)
            found = true;
    }
    fclose(f);
    return found;
}

CORO_TEST(stack, a_threads_pool_is_unmapped_when_it_exits)
{
    struct thread_report rep = {0};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, thread_with_coroutines, &rep), 0);
    void *out;
    pthread_join(t, &out);
    cr_assert_not_null(out);
    cr_assert_eq(rep.pooled, 1, "the thread pooled its stack");
    cr_assert_neq(rep.w.lo, 0);
    cr_assert(rep.w.guard_below);
    cr_assert_not(is_mapped(rep.w.lo), "the pooled stack was unmapped at thread exit");
    cr_assert_not(is_mapped(rep.w.lo - 1), "and its guard page");
}
