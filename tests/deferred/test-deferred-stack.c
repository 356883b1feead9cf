/* Constant stack: long chains and deep nests run (and are released) on a
 * thread with a 256 KiB stack, where any recursion per callback or per level
 * would overflow and crash the test. */
#include "helpers.h"

#include <pthread.h>

#define SMALL_STACK  (256 * 1024)
#define CHAIN_LENGTH 1000000
#define NEST_DEPTH   100000

static void run_on_small_stack(void *(*fn)(void *), void *arg)
{
    pthread_attr_t attr;
    pthread_t thread;
    cr_assert_eq(pthread_attr_init(&attr), 0);
    cr_assert_eq(pthread_attr_setstacksize(&attr, SMALL_STACK), 0);
    cr_assert_eq(pthread_create(&thread, &attr, fn, arg), 0);
    cr_assert_eq(pthread_join(thread, NULL), 0);
    pthread_attr_destroy(&attr);
}

static tw_result increment(tw_result r, void *arg)
{
    (void)arg;
    return tw_result_from_int(tw_result_int(r) + 1);
}

static tw_result record_int(tw_result r, void *arg)
{
    *(intptr_t *)arg = tw_result_int(r);
    return r;
}

static void *long_chain(void *arg)
{
    intptr_t *out = arg;
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    for (int i = 0; i < CHAIN_LENGTH; i++)
        if (tw_deferred_add_callback(d, increment, NULL) < 0)
            return NULL;
    tw_deferred_add_callback(d, record_int, out);
    tw_deferred_callback(d, tw_result_from_int(0));
    tw_deferred_unref(d);
    return NULL;
}

TW_TEST(stack, a_million_callbacks_run_in_constant_stack)
{
    intptr_t out = -1;
    run_on_small_stack(long_chain, &out);
    cr_assert_eq(out, CHAIN_LENGTH);
}

/* ---- Nests: ds[i]'s callback returns ds[i + 1]. */

struct nest {
    tw_deferred **ds;
    intptr_t out;
    int finals;
};

static tw_result return_next(tw_result r, void *arg)
{
    tw_result_release(&r);
    return tw_result_deferred(tw_deferred_ref(arg));
}

static tw_result final(tw_result r, void *arg)
{
    struct nest *n = arg;
    n->finals++;
    n->out = r.failure ? tw_failure_code(r.failure) : tw_result_int(r);
    tw_result_release(&r);
    return tw_result_borrowed(NULL);
}

/* Builds the nest; every level but the innermost has fired and waits. */
static void build_nest(struct nest *n)
{
    n->ds = tw_malloc(NEST_DEPTH * sizeof *n->ds);
    for (int i = 0; i < NEST_DEPTH; i++)
        n->ds[i] = tw_deferred_new(NULL, NULL);
    for (int i = 0; i + 1 < NEST_DEPTH; i++) {
        tw_deferred_add_callback(n->ds[i], return_next, n->ds[i + 1]);
        tw_deferred_add_callback(n->ds[i], increment, NULL);
    }
    tw_deferred_add_both(n->ds[0], final, n);
    for (int i = 0; i + 1 < NEST_DEPTH; i++)
        tw_deferred_callback(n->ds[i], tw_result_from_int(0));
}

static void free_nest(struct nest *n)
{
    for (int i = 0; i < NEST_DEPTH; i++)
        tw_deferred_unref(n->ds[i]);
    tw_free(n->ds);
}

static void *nest_fire_innermost(void *arg)
{
    struct nest *n = arg;
    build_nest(n);
    tw_deferred_callback(n->ds[NEST_DEPTH - 1], tw_result_from_int(1000));
    free_nest(n);
    return NULL;
}

TW_TEST(stack, a_nest_of_100000_returned_deferreds_resumes_in_constant_stack)
{
    struct nest n = {0};
    run_on_small_stack(nest_fire_innermost, &n);
    cr_assert_eq(n.finals, 1);
    cr_assert_eq(n.out, 1000 + NEST_DEPTH - 1, "each level added one on the way out");
}

static void *nest_cancel_outermost(void *arg)
{
    struct nest *n = arg;
    build_nest(n);
    tw_deferred_cancel(n->ds[0]); /* forwarded all the way in */
    free_nest(n);
    return NULL;
}

TW_TEST(stack, cancelling_a_deep_nest_forwards_in_constant_stack)
{
    struct nest n = {0};
    run_on_small_stack(nest_cancel_outermost, &n);
    cr_assert_eq(n.finals, 1);
    cr_assert_eq(n.out, TW_ECANCELED);
}

static void *nest_release_unfired(void *arg)
{
    struct nest *n = arg;
    build_nest(n);
    free_nest(n); /* the innermost never fires: everything goes */
    return NULL;
}

TW_TEST(stack, releasing_a_deep_nest_unfired_frees_it_in_constant_stack)
{
    struct nest n = {0};
    run_on_small_stack(nest_release_unfired, &n);
    cr_assert_eq(n.finals, 0);
}

static void *nest_dropped_then_fired(void *arg)
{
    struct nest *n = arg;
    build_nest(n);
    /* Keep only the innermost (its producer's reference): the levels are held
     * by the continuations alone, and dropping the outermost's reference lets
     * each level in turn stop holding the next. */
    for (int i = 0; i + 1 < NEST_DEPTH; i++)
        tw_deferred_unref(n->ds[i]);
    tw_deferred_callback(n->ds[NEST_DEPTH - 1], tw_result_from_int(0));
    tw_deferred_unref(n->ds[NEST_DEPTH - 1]);
    tw_free(n->ds);
    return NULL;
}

TW_TEST(stack, a_deep_nest_nobody_holds_still_runs_when_its_innermost_fires)
{
    struct nest n = {0};
    run_on_small_stack(nest_dropped_then_fired, &n);
    cr_assert_eq(n.finals, 1);
    cr_assert_eq(n.out, NEST_DEPTH - 1);
}

/* ---- chainDeferred: ds[i] chained to ds[i + 1]. */

static void *long_chain_deferred(void *arg)
{
    struct nest *n = arg;
    n->ds = tw_malloc(NEST_DEPTH * sizeof *n->ds);
    for (int i = 0; i < NEST_DEPTH; i++)
        n->ds[i] = tw_deferred_new(NULL, NULL);
    for (int i = 0; i + 1 < NEST_DEPTH; i++)
        tw_deferred_chain(n->ds[i], n->ds[i + 1]);
    tw_deferred_add_both(n->ds[NEST_DEPTH - 1], final, n);
    tw_deferred_callback(n->ds[0], tw_result_from_int(5));
    free_nest(n);
    return NULL;
}

TW_TEST(stack, chaining_100000_deferreds_runs_in_constant_stack)
{
    struct nest n = {0};
    run_on_small_stack(long_chain_deferred, &n);
    cr_assert_eq(n.finals, 1);
    cr_assert_eq(n.out, 5);
}
