#include "twtest.h"
#include <twine/buffer.h>

#include <pthread.h>
#include <stdint.h>
#include <string.h>

/* ---- Helpers ------------------------------------------------------------ */

#define MAX_IOV 1024

/* Copies the whole queue out through fill_iov; returns the byte count. */
static size_t flatten(const tw_wqueue *q, unsigned char *out, size_t cap)
{
    struct iovec iov[MAX_IOV];
    int n = tw_wqueue_fill_iov(q, iov, MAX_IOV);
    cr_assert_lt(n, MAX_IOV, "test queue larger than the iov array");
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        cr_assert_gt(iov[i].iov_len, 0, "empty iov entry %d", i);
        cr_assert_leq(total + iov[i].iov_len, cap);
        memcpy(out + total, iov[i].iov_base, iov[i].iov_len);
        total += iov[i].iov_len;
    }
    return total;
}

static void assert_queue_holds(const tw_wqueue *q, const unsigned char *expect, size_t len)
{
    static unsigned char got[1 << 20];
    cr_assert_eq(tw_wqueue_size(q), len, "size %zu, expected %zu", tw_wqueue_size(q), len);
    size_t n = flatten(q, got, sizeof got);
    cr_assert_eq(n, len, "fill_iov covers %zu bytes, size says %zu", n, len);
    cr_assert(memcmp(got, expect, len) == 0, "queued bytes differ");
}

static void pattern(unsigned char *p, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++)
        p[i] = (unsigned char)(seed * 131 + i * 7 + (i >> 8));
}

static void count_release(void *arg)
{
    ++*(int *)arg;
}

/* ---- Write queue: basics ------------------------------------------------ */

TW_TEST(wqueue, empty_queue_owns_nothing)
{
    tw_wqueue q = TW_WQUEUE_INIT;
    struct iovec iov[4];
    cr_assert(tw_wqueue_is_empty(&q));
    cr_assert_eq(tw_wqueue_fill_iov(&q, iov, 4), 0);
    cr_assert_eq(tw_wqueue_consume(&q, 0), 0);

    unsigned char data[100000];
    pattern(data, sizeof data, 1);
    cr_assert_eq(tw_wqueue_append(&q, data, sizeof data), 0);
    cr_assert_not_null(q.head);
    cr_assert_eq(tw_wqueue_consume(&q, sizeof data - 1), 0);
    cr_assert_not_null(q.head, "one byte is still queued");
    cr_assert_eq(tw_wqueue_consume(&q, 1), 0);
    cr_assert(tw_wqueue_is_empty(&q));
    cr_assert_null(q.head, "a drained queue keeps a block");
    cr_assert_null(q.tail);
    cr_assert_leq(sizeof(tw_wqueue), 32);
    tw_wqueue_clear(&q);
    tw_wqueue_cache_trim();
}

TW_TEST(wqueue, small_appends_coalesce_into_one_entry)
{
    tw_wqueue q;
    tw_wqueue_init(&q);
    unsigned char expect[6400];
    pattern(expect, sizeof expect, 2);
    for (int i = 0; i < 100; i++)
        cr_assert_eq(tw_wqueue_append(&q, expect + i * 64, 64), 0);
    struct iovec iov[8];
    cr_assert_eq(tw_wqueue_fill_iov(&q, iov, 8), 1);
    cr_assert_eq(iov[0].iov_len, sizeof expect);
    assert_queue_holds(&q, expect, sizeof expect);
    tw_wqueue_clear(&q);
    cr_assert(tw_wqueue_is_empty(&q));
    cr_assert_null(q.head);
}

TW_TEST(wqueue, large_append_fills_blocks_in_order)
{
    static unsigned char data[300000];
    pattern(data, sizeof data, 3);
    tw_wqueue q = TW_WQUEUE_INIT;
    cr_assert_eq(tw_wqueue_append(&q, data, 10), 0);
    cr_assert_eq(tw_wqueue_append(&q, data + 10, sizeof data - 10), 0);
    struct iovec iov[64];
    int n = tw_wqueue_fill_iov(&q, iov, 64);
    /* Each block carries one record of nearly TW_WQUEUE_BLOCK_SIZE bytes. */
    cr_assert_geq(n, (int)(sizeof data / TW_WQUEUE_BLOCK_SIZE) + 1);
    cr_assert_leq(n, (int)(sizeof data / (TW_WQUEUE_BLOCK_SIZE - 64)) + 1);
    for (int i = 0; i + 1 < n; i++)
        cr_assert_gt(iov[i].iov_len, TW_WQUEUE_BLOCK_SIZE - 64, "block %d underfilled", i);
    assert_queue_holds(&q, data, sizeof data);
    tw_wqueue_clear(&q);
}

TW_TEST(wqueue, bad_arguments_are_refused)
{
    tw_wqueue q = TW_WQUEUE_INIT;
    int released = 0;
    cr_assert_eq(tw_wqueue_append(NULL, "x", 1), TW_EINVAL);
    cr_assert_eq(tw_wqueue_append(&q, NULL, 1), TW_EINVAL);
    cr_assert_eq(tw_wqueue_append(&q, NULL, 0), 0);
    cr_assert_eq(tw_wqueue_append_zerocopy(&q, NULL, 5, count_release, &released), TW_EINVAL);
    cr_assert_eq(tw_wqueue_append_zerocopy(NULL, "x", 1, count_release, &released), TW_EINVAL);
    cr_assert_eq(released, 0, "a refused zero-copy append released its data");
    cr_assert(tw_wqueue_is_empty(&q));
    cr_assert_null(q.head);

    cr_assert_eq(tw_wqueue_append(&q, "abc", 3), 0);
    cr_assert_eq(tw_wqueue_consume(&q, 4), TW_EINVAL);
    cr_assert_eq(tw_wqueue_consume(NULL, 0), TW_EINVAL);
    assert_queue_holds(&q, (const unsigned char *)"abc", 3);
    struct iovec iov[2];
    cr_assert_eq(tw_wqueue_fill_iov(&q, iov, 0), 0);
    cr_assert_eq(tw_wqueue_fill_iov(&q, iov, -3), 0);
    cr_assert_eq(tw_wqueue_fill_iov(NULL, iov, 2), 0);
    tw_wqueue_clear(&q);
    tw_wqueue_clear(NULL);
    tw_wqueue_free(NULL);
}

/* ---- Write queue: consuming at every offset ------------------------------ */

/* A queue mixing copies (one crossing a block boundary) and zero-copy
 * segments, with the reference bytes and where each zero-copy segment ends. */
struct mixed {
    unsigned char expect[40000];
    size_t len;
    unsigned char zc[3][3000];
    size_t zc_end[3];
    int released[3];
};

static const size_t mixed_copies[] = {10, 20000, 1, 300};
static const size_t mixed_zlens[] = {50, 3000, 1};

/* Queues the mixed layout; the patterns are made once (the first time). */
static void build_mixed(tw_wqueue *q, struct mixed *m)
{
    if (m->len == 0) {
        for (int i = 0; i < 4; i++) {
            pattern(m->expect + m->len, mixed_copies[i], 10 + (unsigned)i);
            m->len += mixed_copies[i];
            if (i < 3) {
                pattern(m->zc[i], mixed_zlens[i], 20 + (unsigned)i);
                memcpy(m->expect + m->len, m->zc[i], mixed_zlens[i]);
                m->len += mixed_zlens[i];
                m->zc_end[i] = m->len;
            }
        }
    }
    size_t off = 0;
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(tw_wqueue_append(q, m->expect + off, mixed_copies[i]), 0);
        off += mixed_copies[i];
        if (i < 3) {
            m->released[i] = 0;
            cr_assert_eq(tw_wqueue_append_zerocopy(q, m->zc[i], mixed_zlens[i], count_release,
                                                   &m->released[i]),
                         0);
            off += mixed_zlens[i];
        }
    }
    cr_assert_eq(tw_wqueue_size(q), m->len);
}

static void assert_releases(const struct mixed *m, size_t consumed)
{
    for (int i = 0; i < 3; i++)
        cr_assert_eq(m->released[i], consumed >= m->zc_end[i] ? 1 : 0,
                     "segment %d (ends at %zu) released %d times after consuming %zu", i,
                     m->zc_end[i], m->released[i], consumed);
}

TW_TEST(wqueue, consume_at_every_offset_keeps_order, .timeout = 120)
{
    static struct mixed m;
    tw_wqueue q = TW_WQUEUE_INIT;
    build_mixed(&q, &m);
    size_t total = m.len;
    tw_wqueue_clear(&q);

    for (size_t k = 0; k <= total; k++) {
        build_mixed(&q, &m);
        cr_assert_eq(tw_wqueue_consume(&q, k), 0);
        assert_releases(&m, k);
        assert_queue_holds(&q, m.expect + k, total - k);
        cr_assert_eq(tw_wqueue_consume(&q, total - k), 0);
        assert_releases(&m, total);
        cr_assert_null(q.head);
    }
}

TW_TEST(wqueue, consume_in_steps_of_every_size)
{
    static struct mixed m;
    static const size_t steps[] = {1, 2, 3, 7, 8, 49, 50, 51, 4096, 16384, 16385, 30000};
    tw_wqueue q = TW_WQUEUE_INIT;
    for (size_t s = 0; s < sizeof steps / sizeof *steps; s++) {
        build_mixed(&q, &m);
        size_t done = 0;
        while (done < m.len) {
            size_t n = m.len - done < steps[s] ? m.len - done : steps[s];
            cr_assert_eq(tw_wqueue_consume(&q, n), 0);
            done += n;
            assert_releases(&m, done);
            cr_assert_eq(tw_wqueue_size(&q), m.len - done);
            if (done < m.len) {
                struct iovec iov[1];
                cr_assert_eq(tw_wqueue_fill_iov(&q, iov, 1), 1);
                cr_assert_eq(*(unsigned char *)iov[0].iov_base, m.expect[done],
                             "wrong first byte after consuming %zu in steps of %zu", done,
                             steps[s]);
            }
        }
        cr_assert_null(q.head);
    }
}

/* ---- Write queue: the iov limit ------------------------------------------ */

TW_TEST(wqueue, iov_limit_smaller_than_segments)
{
    /* copy, zc, copy, zc, ... : 9 segments, none adjacent in memory. */
    tw_wqueue q = TW_WQUEUE_INIT;
    unsigned char expect[9 * 100];
    unsigned char zc[4][100];
    int released = 0;
    size_t len = 0;
    for (int i = 0; i < 9; i++) {
        unsigned char buf[100];
        pattern(buf, 100, (unsigned)i);
        memcpy(expect + len, buf, 100);
        len += 100;
        if (i % 2 == 0) {
            cr_assert_eq(tw_wqueue_append(&q, buf, 100), 0);
        } else {
            memcpy(zc[i / 2], buf, 100);
            cr_assert_eq(tw_wqueue_append_zerocopy(&q, zc[i / 2], 100, count_release, &released),
                         0);
        }
    }
    struct iovec iov[16];
    for (int max = 1; max <= 12; max++) {
        int n = tw_wqueue_fill_iov(&q, iov, max);
        cr_assert_eq(n, max < 9 ? max : 9, "max %d gave %d", max, n);
        size_t off = 0;
        for (int i = 0; i < n; i++) {
            cr_assert_eq(iov[i].iov_len, 100);
            cr_assert(memcmp(iov[i].iov_base, expect + off, 100) == 0);
            off += 100;
        }
    }

    /* A writev loop with room for two entries, taking 150 bytes each time. */
    size_t done = 0;
    while (!tw_wqueue_is_empty(&q)) {
        int n = tw_wqueue_fill_iov(&q, iov, 2);
        cr_assert_geq(n, 1);
        size_t covered = 0;
        for (int i = 0; i < n; i++) {
            cr_assert(memcmp(iov[i].iov_base, expect + done + covered, iov[i].iov_len) == 0);
            covered += iov[i].iov_len;
        }
        size_t took = covered < 150 ? covered : 150;
        cr_assert_eq(tw_wqueue_consume(&q, took), 0);
        done += took;
    }
    cr_assert_eq(done, len);
    cr_assert_eq(released, 4);
}

TW_TEST(wqueue, adjacent_zerocopy_segments_share_an_entry)
{
    tw_wqueue q = TW_WQUEUE_INIT;
    static const char text[] = "hello, world";
    int released = 0;
    cr_assert_eq(tw_wqueue_append_zerocopy(&q, text, 5, count_release, &released), 0);
    cr_assert_eq(tw_wqueue_append_zerocopy(&q, text + 5, 7, count_release, &released), 0);
    struct iovec iov[4];
    cr_assert_eq(tw_wqueue_fill_iov(&q, iov, 4), 1);
    cr_assert_eq(iov[0].iov_len, 12);
    cr_assert_eq(tw_wqueue_consume(&q, 5), 0);
    cr_assert_eq(released, 1);
    cr_assert_eq(tw_wqueue_consume(&q, 7), 0);
    cr_assert_eq(released, 2);
}

/* ---- Write queue: zero-copy release ------------------------------------- */

TW_TEST(wqueue, zerocopy_released_once_when_consumed_past_its_end)
{
    tw_wqueue q = TW_WQUEUE_INIT;
    static const char a[] = "abcdefgh";
    int released = 0;
    cr_assert_eq(tw_wqueue_append(&q, "12", 2), 0);
    cr_assert_eq(tw_wqueue_append_zerocopy(&q, a, 8, count_release, &released), 0);
    cr_assert_eq(tw_wqueue_append(&q, "34", 2), 0);
    cr_assert_eq(released, 0);
    cr_assert_eq(tw_wqueue_consume(&q, 2), 0);
    cr_assert_eq(released, 0, "released before any of its bytes were written");
    cr_assert_eq(tw_wqueue_consume(&q, 7), 0);
    cr_assert_eq(released, 0, "released with one byte still queued");
    assert_queue_holds(&q, (const unsigned char *)"h34", 3);
    cr_assert_eq(tw_wqueue_consume(&q, 1), 0);
    cr_assert_eq(released, 1);
    cr_assert_eq(tw_wqueue_consume(&q, 2), 0);
    cr_assert_eq(released, 1);
    tw_wqueue_clear(&q);
    cr_assert_eq(released, 1, "clear released a segment already released");
}

TW_TEST(wqueue, zerocopy_released_on_clear_and_free)
{
    int released[3] = {0};
    tw_wqueue q = TW_WQUEUE_INIT;
    cr_assert_eq(tw_wqueue_append_zerocopy(&q, "abc", 3, count_release, &released[0]), 0);
    cr_assert_eq(tw_wqueue_append_zerocopy(&q, "def", 3, count_release, &released[1]), 0);
    cr_assert_eq(tw_wqueue_consume(&q, 1), 0);
    cr_assert_eq(released[0], 0);
    tw_wqueue_clear(&q);
    cr_assert_eq(released[0], 1);
    cr_assert_eq(released[1], 1);
    cr_assert(tw_wqueue_is_empty(&q));
    cr_assert_null(q.head);
    tw_wqueue_clear(&q);
    cr_assert_eq(released[0] + released[1], 2);

    tw_wqueue *h = tw_wqueue_new();
    cr_assert_not_null(h);
    cr_assert(tw_wqueue_is_empty(h));
    cr_assert_eq(tw_wqueue_append(h, "x", 1), 0);
    cr_assert_eq(tw_wqueue_append_zerocopy(h, "ghi", 3, count_release, &released[2]), 0);
    tw_wqueue_free(h);
    cr_assert_eq(released[2], 1);
}

TW_TEST(wqueue, zerocopy_without_release_or_bytes)
{
    tw_wqueue q = TW_WQUEUE_INIT;
    int released = 0;
    cr_assert_eq(tw_wqueue_append_zerocopy(&q, "static", 6, NULL, NULL), 0);
    cr_assert_eq(tw_wqueue_append_zerocopy(&q, "", 0, count_release, &released), 0);
    cr_assert_eq(released, 1, "an empty zero-copy segment is released at once");
    cr_assert_eq(tw_wqueue_append_zerocopy(&q, NULL, 0, count_release, &released), 0);
    cr_assert_eq(released, 2);
    assert_queue_holds(&q, (const unsigned char *)"static", 6);
    cr_assert_eq(tw_wqueue_consume(&q, 6), 0);
    cr_assert_null(q.head);
}

/* A release callback that writes again (as a protocol may from inside it). */
struct rewrite {
    tw_wqueue *q;
    int calls;
};

static void release_and_append(void *arg)
{
    struct rewrite *w = arg;
    w->calls++;
    cr_assert_eq(tw_wqueue_append(w->q, "after", 5), 0);
}

TW_TEST(wqueue, release_may_append)
{
    tw_wqueue q = TW_WQUEUE_INIT;
    struct rewrite w = {&q, 0};
    cr_assert_eq(tw_wqueue_append_zerocopy(&q, "zc", 2, release_and_append, &w), 0);
    cr_assert_eq(tw_wqueue_append(&q, "tail", 4), 0);
    cr_assert_eq(tw_wqueue_consume(&q, 3), 0);
    cr_assert_eq(w.calls, 1);
    assert_queue_holds(&q, (const unsigned char *)"ailafter", 8);

    /* The release drains the last block and appends into a fresh one. */
    cr_assert_eq(tw_wqueue_consume(&q, 8), 0);
    cr_assert_eq(tw_wqueue_append_zerocopy(&q, "zc", 2, release_and_append, &w), 0);
    cr_assert_eq(tw_wqueue_consume(&q, 2), 0);
    cr_assert_eq(w.calls, 2);
    assert_queue_holds(&q, (const unsigned char *)"after", 5);
    tw_wqueue_clear(&q);
}

struct clearer {
    tw_wqueue *q;
    int calls;
};

static void release_and_clear(void *arg)
{
    struct clearer *c = arg;
    c->calls++;
    tw_wqueue_clear(c->q);
}

TW_TEST(wqueue, release_may_clear)
{
    tw_wqueue q = TW_WQUEUE_INIT;
    struct clearer c = {&q, 0};
    int later = 0;
    cr_assert_eq(tw_wqueue_append_zerocopy(&q, "ab", 2, release_and_clear, &c), 0);
    cr_assert_eq(tw_wqueue_append(&q, "cd", 2), 0);
    cr_assert_eq(tw_wqueue_append_zerocopy(&q, "ef", 2, count_release, &later), 0);
    /* The write took everything; the first release aborts the connection. */
    cr_assert_eq(tw_wqueue_consume(&q, 6), 0);
    cr_assert_eq(c.calls, 1);
    cr_assert_eq(later, 1, "clear from a release must release the rest once");
    cr_assert(tw_wqueue_is_empty(&q));
    cr_assert_null(q.head);
}

/* ---- Write queue: allocation -------------------------------------------- */

TW_TEST(wqueue, steady_state_allocates_nothing)
{
    tw_wqueue q = TW_WQUEUE_INIT;
    unsigned char msg[64];
    pattern(msg, sizeof msg, 5);
    struct iovec iov[16];
    int released = 0;
    long before = 0;
    for (int round = 0; round < 2000; round++) {
        if (round == 10)
            before = tw_testing_alloc_count();
        for (int i = 0; i < 16; i++)
            cr_assert_eq(tw_wqueue_append(&q, msg, sizeof msg), 0);
        cr_assert_eq(tw_wqueue_append_zerocopy(&q, msg, sizeof msg, count_release, &released), 0);
        int n = tw_wqueue_fill_iov(&q, iov, 16);
        size_t bytes = 0;
        for (int i = 0; i < n; i++)
            bytes += iov[i].iov_len;
        cr_assert_eq(bytes, 17 * sizeof msg);
        /* A partial write first, then the rest. */
        cr_assert_eq(tw_wqueue_consume(&q, 100), 0);
        cr_assert_eq(tw_wqueue_consume(&q, bytes - 100), 0);
        cr_assert_null(q.head, "an empty queue kept a block");
    }
    cr_assert_eq(tw_testing_alloc_count(), before, "%ld allocations in the steady state",
                 tw_testing_alloc_count() - before);
    cr_assert_eq(released, 2000);
}

TW_TEST(wqueue, cache_is_bounded)
{
    tw_wqueue_cache_trim();
    static unsigned char big[TW_WQUEUE_BLOCK_SIZE * 40];
    tw_wqueue q = TW_WQUEUE_INIT;
    cr_assert_eq(tw_wqueue_append(&q, big, sizeof big), 0);
    tw_wqueue_clear(&q);
    cr_assert_eq(tw_wqueue_cache_trim(), TW_WQUEUE_CACHE_BLOCKS);
    cr_assert_eq(tw_wqueue_cache_trim(), 0);

    /* Cached blocks are reused: a second burst of the cache's size allocates nothing. */
    size_t fits = (size_t)TW_WQUEUE_CACHE_BLOCKS * (TW_WQUEUE_BLOCK_SIZE - 64);
    cr_assert_eq(tw_wqueue_append(&q, big, fits), 0);
    tw_wqueue_clear(&q);
    long before = tw_testing_alloc_count();
    cr_assert_eq(tw_wqueue_append(&q, big, fits), 0);
    cr_assert_eq(tw_testing_alloc_count(), before);
    tw_wqueue_clear(&q);
    tw_wqueue_cache_trim();
}

TW_TEST(wqueue, append_fails_cleanly_without_memory)
{
    static unsigned char big[100000];
    pattern(big, sizeof big, 6);
    unsigned char expect[200];
    pattern(expect, sizeof expect, 7);
    int released = 0;
    int failures = 0;
    for (long n = 0;; n++) {
        tw_wqueue q = TW_WQUEUE_INIT;
        tw_wqueue_cache_trim();
        cr_assert_eq(tw_wqueue_append(&q, expect, 100), 0);
        cr_assert_eq(tw_wqueue_append_zerocopy(&q, expect + 100, 100, count_release, &released), 0);
        tw_wqueue_cache_trim(); /* nothing to take from: every block is allocated */
        tw_testing_fail_alloc_after(n);
        int rc = tw_wqueue_append(&q, big, sizeof big);
        tw_testing_fail_alloc_off();
        if (rc == 0) {
            static unsigned char all[200 + sizeof big];
            memcpy(all, expect, 200);
            memcpy(all + 200, big, sizeof big);
            assert_queue_holds(&q, all, sizeof all);
            tw_wqueue_clear(&q);
            break;
        }
        failures++;
        cr_assert_eq(rc, TW_ENOMEM, "n=%ld: %s", n, tw_strerror(rc));
        assert_queue_holds(&q, expect, 200);
        cr_assert_eq(released, failures - 1);
        tw_wqueue_clear(&q);
        cr_assert_eq(released, failures);
    }
    cr_assert_geq(failures, 5, "the append needed %d blocks", failures);
    tw_wqueue_cache_trim();
}

TW_TEST(wqueue, zerocopy_and_new_fail_cleanly_without_memory)
{
    tw_wqueue_cache_trim();
    tw_wqueue q = TW_WQUEUE_INIT;
    int released = 0;
    tw_testing_fail_alloc_after(0);
    cr_assert_eq(tw_wqueue_append_zerocopy(&q, "abc", 3, count_release, &released), TW_ENOMEM);
    cr_assert_eq(tw_wqueue_append(&q, "abc", 3), TW_ENOMEM);
    cr_assert_null(tw_wqueue_new());
    tw_testing_fail_alloc_off();
    cr_assert_eq(released, 0, "a failed zero-copy append released the caller's data");
    cr_assert(tw_wqueue_is_empty(&q));
    cr_assert_null(q.head);

    /* With a block holding room, a zero-copy append needs no allocation. */
    cr_assert_eq(tw_wqueue_append(&q, "x", 1), 0);
    tw_testing_fail_alloc_after(0);
    cr_assert_eq(tw_wqueue_append_zerocopy(&q, "abc", 3, count_release, &released), 0);
    tw_testing_fail_alloc_off();
    assert_queue_holds(&q, (const unsigned char *)"xabc", 4);
    tw_wqueue_clear(&q);
    cr_assert_eq(released, 1);
    tw_wqueue_cache_trim();
}

/* ---- Write queue: threads ----------------------------------------------- */

static void *thread_traffic(void *arg)
{
    tw_wqueue *moved = arg;
    unsigned char msg[3000];
    pattern(msg, sizeof msg, 8);
    tw_wqueue q = TW_WQUEUE_INIT;
    for (int i = 0; i < 200; i++) {
        for (int j = 0; j < 20; j++)
            if (tw_wqueue_append(&q, msg, sizeof msg) != 0)
                return (void *)1;
        if (tw_wqueue_consume(&q, tw_wqueue_size(&q)) != 0)
            return (void *)2;
    }
    /* A queue filled on another thread drains into this thread's cache. */
    if (tw_wqueue_consume(moved, tw_wqueue_size(moved)) != 0)
        return (void *)3;
    /* Leaves its cache full: the thread-exit destructor must free it
     * (LeakSanitizer checks after the test). */
    return NULL;
}

TW_TEST(wqueue, per_thread_caches_are_freed_at_thread_exit)
{
    static unsigned char data[4][50000];
    tw_wqueue moved[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        tw_wqueue_init(&moved[i]);
        pattern(data[i], sizeof data[i], 9);
        cr_assert_eq(tw_wqueue_append(&moved[i], data[i], sizeof data[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, thread_traffic, &moved[i]), 0);
    for (int i = 0; i < 4; i++) {
        void *rc;
        pthread_join(t[i], &rc);
        cr_assert_null(rc, "thread %d failed at step %p", i, rc);
        cr_assert(tw_wqueue_is_empty(&moved[i]));
        cr_assert_null(moved[i].head);
    }
    tw_wqueue_cache_trim();
}

/* ---- Write queue: randomized against a reference ------------------------- */

static uint64_t rng_state;

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

#define MODEL_SEGS 4096

struct model {
    unsigned char bytes[1 << 19];
    size_t head, tail; /* the queue holds bytes[head..tail) */
    size_t zc_end[MODEL_SEGS];
    int released[MODEL_SEGS];
    int nzc;
};

TW_TEST(wqueue, randomized_against_a_model, .timeout = 120)
{
    static struct model m;
    static unsigned char source[70000];
    pattern(source, sizeof source, 11);
    rng_state = 0x9e3779b97f4a7c15ull;
    tw_wqueue q = TW_WQUEUE_INIT;
    struct iovec iov[64];

    for (int step = 0; step < 20000; step++) {
        unsigned op = (unsigned)(rng() % 100);
        size_t room = sizeof m.bytes - m.tail;
        if (op < 40 && room > 0) {
            size_t len = rng() % 4 == 0 ? rng() % 40000 : rng() % 200;
            len = len < room ? len : room;
            size_t from = rng() % (sizeof source - len + 1);
            cr_assert_eq(tw_wqueue_append(&q, source + from, len), 0);
            memcpy(m.bytes + m.tail, source + from, len);
            m.tail += len;
        } else if (op < 55 && room > 0 && m.nzc < MODEL_SEGS) {
            size_t len = 1 + rng() % 5000;
            len = len < room ? len : room;
            size_t from = rng() % (sizeof source - len + 1);
            int id = m.nzc++;
            cr_assert_eq(
                tw_wqueue_append_zerocopy(&q, source + from, len, count_release, &m.released[id]),
                0);
            memcpy(m.bytes + m.tail, source + from, len);
            m.tail += len;
            m.zc_end[id] = m.tail;
        } else if (op < 90) {
            int max = 1 + (int)(rng() % 64);
            int n = tw_wqueue_fill_iov(&q, iov, max);
            size_t covered = 0;
            for (int i = 0; i < n; i++) {
                cr_assert_gt(iov[i].iov_len, 0);
                cr_assert(memcmp(iov[i].iov_base, m.bytes + m.head + covered, iov[i].iov_len) == 0,
                          "step %d: entry %d differs", step, i);
                covered += iov[i].iov_len;
            }
            size_t size = m.tail - m.head;
            if (n < max)
                cr_assert_eq(covered, size, "step %d: the whole queue should fit", step);
            size_t take = covered ? rng() % (covered + 1) : 0;
            cr_assert_eq(tw_wqueue_consume(&q, take), 0);
            m.head += take;
        } else if (op < 92) {
            tw_wqueue_clear(&q);
            m.head = m.tail;
        } else {
            cr_assert_eq(tw_wqueue_consume(&q, m.tail - m.head + 1), TW_EINVAL);
        }
        cr_assert_eq(tw_wqueue_size(&q), m.tail - m.head, "step %d", step);
        cr_assert_eq(q.head == NULL, m.tail == m.head, "step %d: blocks vs emptiness", step);
        for (int i = 0; i < m.nzc; i++)
            cr_assert_eq(m.released[i], m.zc_end[i] <= m.head ? 1 : 0,
                         "step %d: segment %d released %d times", step, i, m.released[i]);
        if (m.tail == m.head && m.tail > sizeof m.bytes / 2) {
            m.head = m.tail = 0; /* recycle the reference array */
            for (int i = 0; i < m.nzc; i++)
                m.zc_end[i] = 0;
        }
    }
    tw_wqueue_clear(&q);
    for (int i = 0; i < m.nzc; i++)
        cr_assert_eq(m.released[i], 1);
    tw_wqueue_cache_trim();
}

/* ---- Read buffer --------------------------------------------------------- */

TW_TEST(rbuf, append_peek_consume)
{
    tw_rbuf b;
    tw_rbuf_init(&b, 0);
    cr_assert_eq(tw_rbuf_max(&b), TW_RBUF_DEFAULT_MAX);
    cr_assert_null(tw_rbuf_data(&b));
    cr_assert_eq(tw_rbuf_size(&b), 0);
    cr_assert_eq(tw_rbuf_append(&b, "hello ", 6), 0);
    cr_assert_eq(tw_rbuf_append(&b, "world", 5), 0);
    cr_assert_eq(tw_rbuf_size(&b), 11);
    cr_assert(memcmp(tw_rbuf_data(&b), "hello world", 11) == 0);
    cr_assert_eq(tw_rbuf_consume(&b, 6), 0);
    cr_assert(memcmp(tw_rbuf_data(&b), "world", 5) == 0);
    cr_assert_eq(tw_rbuf_consume(&b, 6), TW_EINVAL);
    cr_assert_eq(tw_rbuf_size(&b), 5);
    cr_assert_eq(tw_rbuf_append(&b, NULL, 3), TW_EINVAL);
    cr_assert_eq(tw_rbuf_append(&b, NULL, 0), 0);
    cr_assert_eq(tw_rbuf_consume(&b, 5), 0);
    cr_assert_null(tw_rbuf_data(&b));
    cr_assert_null(b.data, "an empty rbuf keeps its storage");
    cr_assert_eq(tw_rbuf_consume(&b, 0), 0);
    tw_rbuf_clear(&b);
    cr_assert_leq(sizeof(tw_rbuf), 24);
}

TW_TEST(rbuf, maximum_size_is_enforced)
{
    tw_rbuf b;
    tw_rbuf_init(&b, 10);
    cr_assert_eq(tw_rbuf_append(&b, "0123456", 7), 0);
    cr_assert_eq(tw_rbuf_append(&b, "7890", 4), TW_ENOBUFS);
    cr_assert_eq(tw_rbuf_size(&b), 7, "a refused append changed the buffer");
    cr_assert_eq(tw_rbuf_append(&b, "789", 3), 0);
    cr_assert_eq(tw_rbuf_append(&b, "x", 1), TW_ENOBUFS);
    cr_assert(memcmp(tw_rbuf_data(&b), "0123456789", 10) == 0);
    cr_assert_eq(tw_rbuf_append(&b, "x", SIZE_MAX), TW_ENOBUFS);
    cr_assert_str_eq(tw_err_name(TW_ENOBUFS), "ENOBUFS");

    /* Lowering the bound keeps what is held; appends wait for consumes. */
    tw_rbuf_set_max(&b, 4);
    cr_assert_eq(tw_rbuf_size(&b), 10);
    cr_assert_eq(tw_rbuf_append(&b, "x", 1), TW_ENOBUFS);
    cr_assert_eq(tw_rbuf_consume(&b, 7), 0);
    cr_assert_eq(tw_rbuf_append(&b, "x", 1), 0);
    cr_assert(memcmp(tw_rbuf_data(&b), "789x", 4) == 0);
    tw_rbuf_clear(&b);
    cr_assert_null(b.data);
    cr_assert_eq(tw_rbuf_max(&b), 4, "clear keeps the bound");

    tw_rbuf_set_max(&b, (size_t)UINT32_MAX + 5);
    cr_assert_eq(tw_rbuf_max(&b), UINT32_MAX);
}

TW_TEST(rbuf, partial_frames_reuse_storage)
{
    /* A protocol that keeps a partial frame between reads: the storage is
     * compacted and reused, so the steady state allocates nothing. */
    tw_rbuf b;
    tw_rbuf_init(&b, 4096);
    unsigned char src[300];
    pattern(src, sizeof src, 12);
    size_t produced = 0, consumed = 0; /* positions in an endless stream of src */
    long before = 0;
    for (int round = 0; round < 5000; round++) {
        if (round == 20)
            before = tw_testing_alloc_count();
        size_t len = 100 + (size_t)(round % 7) * 20;
        unsigned char chunk[300];
        for (size_t i = 0; i < len; i++)
            chunk[i] = src[(produced + i) % sizeof src];
        cr_assert_eq(tw_rbuf_append(&b, chunk, len), 0);
        produced += len;
        cr_assert_eq(tw_rbuf_size(&b), produced - consumed);
        const unsigned char *d = (const unsigned char *)tw_rbuf_data(&b);
        for (size_t i = 0; i < produced - consumed; i++)
            cr_assert_eq(d[i], src[(consumed + i) % sizeof src], "round %d byte %zu", round, i);
        size_t keep = 30 + (size_t)(round % 5) * 10;
        cr_assert_eq(tw_rbuf_consume(&b, produced - consumed - keep), 0);
        consumed = produced - keep;
    }
    cr_assert_eq(tw_testing_alloc_count(), before, "%ld allocations in the steady state",
                 tw_testing_alloc_count() - before);
    cr_assert_leq(b.cap, 1024, "storage grew to %u for frames under 300 bytes", b.cap);
    tw_rbuf_clear(&b);
}

TW_TEST(rbuf, moves_down_at_the_maximum)
{
    /* Storage at its maximum: reclaiming the consumed front is the only way. */
    tw_rbuf b;
    tw_rbuf_init(&b, 100);
    unsigned char src[100];
    pattern(src, sizeof src, 13);
    cr_assert_eq(tw_rbuf_append(&b, src, 100), 0);
    for (int i = 0; i < 300; i++) {
        cr_assert_eq(tw_rbuf_consume(&b, 1), 0);
        unsigned char c = (unsigned char)i;
        cr_assert_eq(tw_rbuf_append(&b, &c, 1), 0);
        cr_assert_eq(tw_rbuf_size(&b), 100);
        cr_assert_eq((unsigned char)tw_rbuf_data(&b)[99], c);
        cr_assert_leq(b.cap, 100);
    }
    const unsigned char *d = (const unsigned char *)tw_rbuf_data(&b);
    for (int i = 0; i < 100; i++)
        cr_assert_eq(d[i], (unsigned char)(200 + i));
    tw_rbuf_clear(&b);
}

TW_TEST(rbuf, append_fails_cleanly_without_memory)
{
    tw_rbuf b;
    tw_rbuf_init(&b, 1 << 20);
    unsigned char big[5000];
    pattern(big, sizeof big, 14);
    int failures = 0;
    for (long n = 0;; n++) {
        cr_assert_eq(tw_rbuf_append(&b, "abc", 3), 0);
        cr_assert_eq(tw_rbuf_consume(&b, 1), 0);
        tw_testing_fail_alloc_after(n);
        int rc = tw_rbuf_append(&b, big, sizeof big);
        tw_testing_fail_alloc_off();
        if (rc == 0) {
            cr_assert_eq(tw_rbuf_size(&b), 2 + sizeof big);
            cr_assert(memcmp(tw_rbuf_data(&b), "bc", 2) == 0);
            cr_assert(memcmp(tw_rbuf_data(&b) + 2, big, sizeof big) == 0);
            tw_rbuf_clear(&b);
            break;
        }
        failures++;
        cr_assert_eq(rc, TW_ENOMEM);
        cr_assert_eq(tw_rbuf_size(&b), 2);
        cr_assert(memcmp(tw_rbuf_data(&b), "bc", 2) == 0);
        tw_rbuf_clear(&b);
    }
    cr_assert_eq(failures, 1);
}

/* append_iov: the bytes after `skip`, at every skip; a failing entry leaves
 * the entries before it queued and says how many bytes they were. */
TW_TEST(wqueue, append_iov_queues_what_follows_skip)
{
    static unsigned char a[10], b[40000], c[7], all[40017];
    pattern(a, sizeof a, 1);
    pattern(b, sizeof b, 2);
    pattern(c, sizeof c, 3);
    memcpy(all, a, 10);
    memcpy(all + 10, b, sizeof b);
    memcpy(all + 10 + sizeof b, c, 7);
    struct iovec iov[4] = {{a, 10}, {NULL, 0}, {b, sizeof b}, {c, 7}};
    size_t skips[] = {0, 1, 9, 10, 11, 40009, 40010, 40011, 40016, 40017};
    for (size_t k = 0; k < sizeof skips / sizeof *skips; k++) {
        tw_wqueue q;
        tw_wqueue_init(&q);
        size_t put = 12345;
        cr_assert_eq(tw_wqueue_append_iov(&q, iov, 4, skips[k], &put), 0);
        cr_assert_eq(put, sizeof all - skips[k]);
        assert_queue_holds(&q, all + skips[k], sizeof all - skips[k]);
        tw_wqueue_clear(&q);
    }
    for (long n = 0;; n++) {
        tw_wqueue q;
        tw_wqueue_init(&q);
        size_t put = 12345;
        tw_testing_fail_alloc_after(n);
        int rc = tw_wqueue_append_iov(&q, iov, 4, 5, &put);
        tw_testing_fail_alloc_off();
        if (rc == 0) {
            assert_queue_holds(&q, all + 5, sizeof all - 5);
            tw_wqueue_clear(&q);
            break;
        }
        cr_assert_eq(rc, TW_ENOMEM);
        cr_assert(put == 0 || put == 5, "whole entries only: %zu", put);
        assert_queue_holds(&q, all + 5, put);
        tw_wqueue_clear(&q);
    }
}
