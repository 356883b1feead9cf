/* Fuzzes the length-prefixed decoders: see framing-harness.h for the input
 * layout and the invariants. Config byte: bits 0-1 pick the prefix (1, 2, 4;
 * 3 means 2); the maximum is 0 (the prefix's own) when the max byte is 0 or
 * 255, else the byte times 16. Also: every payload re-encodes with the same
 * prefix and decodes back. */
#include "framing-harness.h"

static tw_prefixed_decoder dec;
static unsigned prefix;

static void fuzz_init(uint8_t config, uint8_t max)
{
    static const unsigned sizes[4] = {1, 2, 4, 2};
    prefix = sizes[config & 3];
    CHECK(tw_prefixed_decoder_init(&dec, prefix, (max == 255) ? 0 : (size_t)max * 16) == 0);
}

static int reencode(void *ctx, const char *p, size_t n)
{
    char *out = malloc(n + 4);
    CHECK(out);
    size_t len;
    CHECK(tw_prefixed_encode(prefix, p, n, out, n + 4, &len) == 0);
    CHECK(len == n + prefix);
    tw_prefixed_decoder d;
    CHECK(tw_prefixed_decoder_init(&d, prefix, 0) == 0);
    frames f = {0};
    CHECK(tw_prefixed_decoder_feed(&d, out, len, on_frame, &f, NULL) == 0);
    CHECK(f.n == 1 && f.used == n && (n == 0 || memcmp(f.bytes, p, n) == 0));
    tw_prefixed_decoder_reset(&d);
    free(f.bytes);
    free(f.lens);
    free(out);
    return on_frame(ctx, p, n);
}

static int fuzz_feed(const uint8_t *p, size_t n, frames *f, size_t *consumed)
{
    int rc = tw_prefixed_decoder_feed(&dec, p, n, reencode, f, consumed);
    if (rc == TW_EMSGSIZE)
        CHECK(tw_prefixed_decoder_feed(&dec, "\0", 1, on_frame, f, NULL) == TW_EMSGSIZE);
    return rc;
}

static size_t fuzz_held(void)
{
    return tw_rbuf_size(&dec.buf);
}

static size_t fuzz_bound(void)
{
    return dec.max;
}

static void fuzz_reset(void)
{
    tw_prefixed_decoder_reset(&dec);
}
