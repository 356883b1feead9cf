/* Fuzzes the netstring decoder: see framing-harness.h for the input layout
 * and the invariants. The maximum is the max byte, or the default when it is
 * 255 (0 also means the default). Also: a failed decoder says why, with a
 * message, and every payload re-encodes to a netstring that decodes to it. */
#include "framing-harness.h"

static tw_netstring_decoder dec;

static void fuzz_init(uint8_t config, uint8_t max)
{
    tw_netstring_decoder_init(&dec, max == 255 ? 0 : max);
}

static int reencode(void *ctx, const char *p, size_t n)
{
    char *out = malloc(tw_netstring_encoded_len(n));
    CHECK(out);
    size_t len;
    CHECK(tw_netstring_encode(p, n, out, tw_netstring_encoded_len(n), &len) == 0);
    tw_netstring_decoder d;
    tw_netstring_decoder_init(&d, n ? n : 1);
    frames f = {0};
    CHECK(tw_netstring_decoder_feed(&d, out, len, on_frame, &f, NULL) == 0);
    CHECK(f.n == 1 && f.used == n && (n == 0 || memcmp(f.bytes, p, n) == 0));
    tw_netstring_decoder_reset(&d);
    free(f.bytes);
    free(f.lens);
    free(out);
    return on_frame(ctx, p, n);
}

static int fuzz_feed(const uint8_t *p, size_t n, frames *f, size_t *consumed)
{
    int rc = tw_netstring_decoder_feed(&dec, p, n, reencode, f, consumed);
    if (rc == TW_EINVAL || rc == TW_EMSGSIZE) {
        tw_netstring_error e = tw_netstring_decoder_error(&dec);
        CHECK(e != TW_NETSTRING_OK);
        CHECK((rc == TW_EMSGSIZE) == (e == TW_NETSTRING_TOO_LONG));
        CHECK(tw_netstring_error_message(e)[0] != 0);
        CHECK(tw_netstring_decoder_feed(&dec, "1:a,", 4, on_frame, f, NULL) == rc);
    }
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
    tw_netstring_decoder_reset(&dec);
}
