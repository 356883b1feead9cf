/* Deferred chains and nests, run on a thread with a 256 KiB stack to show the
 * run loop's stack stays fixed however long or deep the work.
 *
 * There is no deferred in libuv to race against, so the peer figure is the
 * floor: the same callbacks called in a plain loop through function pointers.
 * Prints one JSON line per case (best of REPEAT runs):
 *   deferred_chain  1,000,000 callbacks on one deferred: ns per callback
 *   deferred_nest   100,000 deferreds, each returned by a callback of the one
 *                   before, resumed when the innermost fires: ns per level
 *   deferred_small  new, two callbacks, fire, unref: ns per deferred */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <twine/twine.h>

#define STACK_BYTES (256 * 1024)
#define CHAIN       1000000
#define NEST        100000
#define SMALL       1000000
#define REPEAT      5

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static tw_result increment(tw_result r, void *arg)
{
    (void)arg;
    return tw_result_from_int(tw_result_int(r) + 1);
}

static tw_result return_next(tw_result r, void *arg)
{
    (void)r;
    return tw_result_deferred(tw_deferred_ref(arg));
}

static volatile intptr_t sink;

static tw_result store(tw_result r, void *arg)
{
    (void)arg;
    sink = tw_result_int(r);
    return r;
}

struct figures {
    double chain_add, chain_run, chain_floor;
    double nest_build, nest_resume;
    double small;
    int failed;
};

static void chain_once(struct figures *f)
{
    double t0 = now();
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    for (int i = 0; i < CHAIN; i++)
        if (tw_deferred_add_callback(d, increment, NULL) < 0)
            f->failed = 1;
    tw_deferred_add_callback(d, store, NULL);
    double t1 = now();
    tw_deferred_callback(d, tw_result_from_int(0));
    double t2 = now();
    tw_deferred_unref(d);
    if (sink != CHAIN)
        f->failed = 1;
    if (t1 - t0 < f->chain_add)
        f->chain_add = t1 - t0;
    if (t2 - t1 < f->chain_run)
        f->chain_run = t2 - t1;

    /* The floor: the same calls, no deferred. */
    static tw_callback_fn fns[CHAIN];
    for (int i = 0; i < CHAIN; i++)
        fns[i] = increment;
    t0 = now();
    tw_result r = tw_result_from_int(0);
    for (int i = 0; i < CHAIN; i++)
        r = fns[i](r, NULL);
    sink = tw_result_int(r);
    t1 = now();
    if (t1 - t0 < f->chain_floor)
        f->chain_floor = t1 - t0;
}

static void nest_once(struct figures *f)
{
    static tw_deferred *ds[NEST];
    double t0 = now();
    for (int i = 0; i < NEST; i++)
        ds[i] = tw_deferred_new(NULL, NULL);
    for (int i = 0; i + 1 < NEST; i++) {
        tw_deferred_add_callback(ds[i], return_next, ds[i + 1]);
        tw_deferred_add_callback(ds[i], increment, NULL);
    }
    tw_deferred_add_callback(ds[0], store, NULL);
    for (int i = 0; i + 1 < NEST; i++)
        tw_deferred_callback(ds[i], tw_result_from_int(0));
    double t1 = now();
    tw_deferred_callback(ds[NEST - 1], tw_result_from_int(0));
    double t2 = now();
    for (int i = 0; i < NEST; i++)
        tw_deferred_unref(ds[i]);
    if (sink != NEST - 1)
        f->failed = 1;
    if (t1 - t0 < f->nest_build)
        f->nest_build = t1 - t0;
    if (t2 - t1 < f->nest_resume)
        f->nest_resume = t2 - t1;
}

static void small_once(struct figures *f)
{
    double t0 = now();
    for (int i = 0; i < SMALL; i++) {
        tw_deferred *d = tw_deferred_new(NULL, NULL);
        tw_deferred_add_callback(d, increment, NULL);
        tw_deferred_add_callback(d, store, NULL);
        tw_deferred_callback(d, tw_result_from_int(i));
        tw_deferred_unref(d);
    }
    double t1 = now();
    if (t1 - t0 < f->small)
        f->small = t1 - t0;
}

static void *bench(void *arg)
{
    struct figures *f = arg;
    for (int i = 0; i < REPEAT; i++) {
        chain_once(f);
        nest_once(f);
        small_once(f);
    }
    return NULL;
}

int main(void)
{
    struct figures f = {1e9, 1e9, 1e9, 1e9, 1e9, 1e9, 0};
    pthread_attr_t attr;
    pthread_t thread;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, STACK_BYTES);
    if (pthread_create(&thread, &attr, bench, &f) != 0 || pthread_join(thread, NULL) != 0) {
        fprintf(stderr, "bench-deferreds: cannot run the benchmark thread\n");
        return 1;
    }
    if (f.failed) {
        fprintf(stderr, "bench-deferreds: wrong results\n");
        return 1;
    }
    double chain = f.chain_add + f.chain_run;
    printf("{\"bench\":\"deferred_chain\",\"callbacks\":%d,\"stack_bytes\":%d,"
           "\"twine_s\":%.6f,\"add_ns_per_callback\":%.2f,\"run_ns_per_callback\":%.2f,"
           "\"floor_s\":%.6f,\"ratio\":%.2f}\n",
           CHAIN, STACK_BYTES, chain, f.chain_add * 1e9 / CHAIN, f.chain_run * 1e9 / CHAIN,
           f.chain_floor, chain / f.chain_floor);
    printf("{\"bench\":\"deferred_nest\",\"levels\":%d,\"stack_bytes\":%d,\"twine_s\":%.6f,"
           "\"build_ns_per_level\":%.2f,\"resume_ns_per_level\":%.2f}\n",
           NEST, STACK_BYTES, f.nest_build + f.nest_resume, f.nest_build * 1e9 / NEST,
           f.nest_resume * 1e9 / NEST);
    printf("{\"bench\":\"deferred_small\",\"deferreds\":%d,\"twine_s\":%.6f,"
           "\"ns_per_deferred\":%.2f}\n",
           SMALL, f.small, f.small * 1e9 / SMALL);
    return 0;
}
