/* The write path without the syscall: 64-byte writes appended to a write
 * queue, then fill_iov and consume as a writev that took everything would.
 *
 * There is no libuv call to race that does not make a syscall, so two peers
 * frame the figure: the floor (the same bytes memcpy'd into one flat array,
 * the least any coalescing write path does) and the per-write allocation a
 * libuv user pays by default (a malloc'd request and copy for each uv_write,
 * freed when it completes). Prints one JSON line (best of REPEAT runs):
 *   twine_ns_per_write   16 writes per flush, ns per write
 *   single_ns_per_write  one write per flush (append, fill_iov, consume)
 *   floor_ns_per_write   memcpy into a flat array, 16 per flush
 *   malloc_ns_per_write  malloc + memcpy + free per write
 *   allocs_per_write     allocations per write in the timed runs (must be 0) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <twine/buffer.h>
#include <twine/testing.h>

#define WRITES    2000000
#define PER_FLUSH 16
#define MSG       64
#define REPEAT    5

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static volatile size_t sink;
static unsigned char msg[MSG];

static int twine_run(int per_flush, double *seconds)
{
    tw_wqueue q = TW_WQUEUE_INIT;
    struct iovec iov[64];
    double t0 = now();
    for (int i = 0; i < WRITES; i += per_flush) {
        for (int j = 0; j < per_flush; j++)
            if (tw_wqueue_append(&q, msg, MSG) != 0)
                return -1;
        int n = tw_wqueue_fill_iov(&q, iov, 64);
        size_t bytes = 0;
        for (int k = 0; k < n; k++)
            bytes += iov[k].iov_len;
        sink += bytes + *(unsigned char *)iov[0].iov_base;
        if (tw_wqueue_consume(&q, bytes) != 0)
            return -1;
    }
    *seconds = now() - t0;
    return tw_wqueue_is_empty(&q) ? 0 : -1;
}

static double floor_run(void)
{
    static unsigned char flat[PER_FLUSH * MSG];
    double t0 = now();
    for (int i = 0; i < WRITES; i += PER_FLUSH) {
        size_t used = 0;
        for (int j = 0; j < PER_FLUSH; j++) {
            memcpy(flat + used, msg, MSG);
            used += MSG;
            __asm__ volatile("" : : "r"(flat) : "memory");
        }
        struct iovec iov = {flat, used};
        sink += iov.iov_len + flat[0];
    }
    return now() - t0;
}

static double malloc_run(void)
{
    void *pending[PER_FLUSH];
    double t0 = now();
    for (int i = 0; i < WRITES; i += PER_FLUSH) {
        for (int j = 0; j < PER_FLUSH; j++) {
            pending[j] = malloc(MSG + 96); /* the request and the copied bytes */
            if (!pending[j])
                return -1;
            memcpy(pending[j], msg, MSG);
        }
        for (int j = 0; j < PER_FLUSH; j++) {
            sink += *(unsigned char *)pending[j];
            free(pending[j]);
        }
    }
    return now() - t0;
}

int main(void)
{
    for (int i = 0; i < MSG; i++)
        msg[i] = (unsigned char)i;
    double batch = 1e9, single = 1e9, flat = 1e9, mall = 1e9, s;
    tw_testing_alloc_count();            /* installs the counting allocator first */
    if (twine_run(PER_FLUSH, &s) != 0) { /* warm-up: fills the block cache */
        fprintf(stderr, "bench-buffer: the write queue failed\n");
        return 1;
    }
    long allocs = tw_testing_alloc_count();
    for (int r = 0; r < REPEAT; r++) {
        if (twine_run(PER_FLUSH, &s) != 0)
            return 1;
        batch = s < batch ? s : batch;
        if (twine_run(1, &s) != 0)
            return 1;
        single = s < single ? s : single;
        s = floor_run();
        flat = s < flat ? s : flat;
        s = malloc_run();
        if (s < 0)
            return 1;
        mall = s < mall ? s : mall;
    }
    allocs = tw_testing_alloc_count() - allocs;
    double per = 1e9 / WRITES;
    printf("{\"bench\":\"buffer\",\"writes\":%d,\"write_bytes\":%d,\"per_flush\":%d,"
           "\"twine_ns_per_write\":%.2f,\"single_ns_per_write\":%.2f,"
           "\"floor_ns_per_write\":%.2f,\"malloc_ns_per_write\":%.2f,\"ratio_to_floor\":%.2f,"
           "\"allocs_per_write\":%.6f}\n",
           WRITES, MSG, PER_FLUSH, batch * per, single * per, flat * per, mall * per, batch / flat,
           (double)allocs / ((double)WRITES * 2 * REPEAT));
    tw_wqueue_cache_trim();
    return 0;
}
