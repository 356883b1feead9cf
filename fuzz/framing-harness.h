/* The shared body of the framing fuzz targets (lines.c, netstrings.c,
 * prefixed.c): each defines the decoder hooks and includes this.
 *
 * Input: byte 0 configures the decoder (fuzz_init), byte 1 its maximum,
 * byte 2 flags (bit 0: the callback stops after every frame and the rest is
 * fed again; bit 1: allocations fail after byte 3 of them have succeeded;
 * bits 2-5: how many cut points follow), then one byte per cut point (a
 * position in the stream, modulo its length), then the stream.
 * Invariants, each checked by a trap:
 * - feeding the stream in the chunks given by the cuts (stopping and
 *   re-feeding, failing allocations and re-feeding data[consumed..]) gives
 *   exactly the frames of feeding it all at once, and the same error after
 *   them, and leaves the same number of bytes held;
 * - consumed never exceeds the input, and 0 means all of it was taken;
 * - the decoder never holds more than its bound, and owns nothing after
 *   reset (LeakSanitizer checks the rest). */
#ifndef FUZZ_FRAMING_HARNESS_H
#define FUZZ_FRAMING_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <twine/error.h>
#include <twine/framing.h>
#include <twine/testing.h>

#include "fuzz.h"

typedef struct frames {
    char *bytes;
    size_t used, cap;
    size_t *lens;
    size_t n, ncap;
    int err;
    bool stop_every;
} frames;

static int on_frame(void *ctx, const char *p, size_t n)
{
    frames *f = ctx;
    if (f->used + n > f->cap) {
        f->cap = (f->used + n) * 2 + 64;
        f->bytes = realloc(f->bytes, f->cap);
        CHECK(f->bytes);
    }
    if (n)
        memcpy(f->bytes + f->used, p, n);
    f->used += n;
    if (f->n == f->ncap) {
        f->ncap = f->ncap * 2 + 16;
        f->lens = realloc(f->lens, f->ncap * sizeof *f->lens);
        CHECK(f->lens);
    }
    f->lens[f->n++] = n;
    return f->stop_every;
}

/* Hooks each target defines. */
static void fuzz_init(uint8_t config, uint8_t max);
static int fuzz_feed(const uint8_t *p, size_t n, frames *f, size_t *consumed);
static size_t fuzz_held(void);
static size_t fuzz_bound(void);
static void fuzz_reset(void);

/* Feeds the stream cut at cuts[0..ncuts) (sorted); returns the bytes held at
 * the end. With fail_after >= 0, allocations fail after that many. */
static size_t fuzz_run(uint8_t config, uint8_t max, const uint8_t *s, size_t len,
                       const size_t *cuts, size_t ncuts, long fail_after, frames *f)
{
    fuzz_init(config, max);
    if (fail_after >= 0)
        tw_testing_fail_alloc_after(fail_after);
    size_t at = 0;
    for (size_t i = 0; i <= ncuts && !f->err; i++) {
        size_t end = i < ncuts ? cuts[i] : len;
        while (at < end || (at == end && end == len && len == 0)) {
            size_t consumed = (size_t)-1;
            int rc = fuzz_feed(s + at, end - at, f, &consumed);
            CHECK(consumed <= end - at);
            CHECK(fuzz_held() <= fuzz_bound());
            if (rc == TW_ENOMEM) {
                tw_testing_fail_alloc_off();
                at += consumed;
                continue;
            }
            if (rc < 0) {
                f->err = rc;
                break;
            }
            CHECK(rc == 0 || (rc == 1 && f->stop_every));
            if (rc == 0)
                CHECK(consumed == end - at);
            at += consumed;
            if (end == at)
                break;
        }
    }
    tw_testing_fail_alloc_off();
    size_t held = fuzz_held();
    fuzz_reset();
    CHECK(fuzz_held() == 0);
    return held;
}

static int cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    uint8_t config = data[0], max = data[1], flags = data[2];
    long fail_after = (flags & 2) ? data[3] : -1;
    size_t ncuts = (flags >> 2) & 15;
    data += 4;
    size -= 4;
    if (ncuts > size)
        ncuts = size;
    const uint8_t *cut_bytes = data;
    data += ncuts;
    size -= ncuts;
    size_t cuts[16];
    for (size_t i = 0; i < ncuts; i++)
        cuts[i] = size ? cut_bytes[i] % size : 0;
    qsort(cuts, ncuts, sizeof cuts[0], cmp_size);

    frames whole = {0}, split = {0};
    size_t held_whole = fuzz_run(config, max, data, size, NULL, 0, -1, &whole);
    split.stop_every = flags & 1;
    size_t held_split = fuzz_run(config, max, data, size, cuts, ncuts, fail_after, &split);

    CHECK(whole.n == split.n);
    CHECK(whole.used == split.used);
    CHECK(whole.err == split.err);
    CHECK(whole.n == 0 || memcmp(whole.lens, split.lens, whole.n * sizeof *whole.lens) == 0);
    CHECK(whole.used == 0 || memcmp(whole.bytes, split.bytes, whole.used) == 0);
    if (!whole.err)
        CHECK(held_whole == held_split);
    free(whole.bytes);
    free(whole.lens);
    free(split.bytes);
    free(split.lens);
    return 0;
}

#endif
