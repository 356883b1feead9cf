/* Fuzzes the line decoder: see framing-harness.h for the input layout and
 * the invariants. Config byte: bits 0-1 pick the delimiter ("\r\n", "\n",
 * "aab", a 16-byte run of 'x'); max is 1 + the max byte, or the default when
 * it is 255. */
#include "framing-harness.h"

static tw_line_decoder dec;
static size_t delim_len;

static void fuzz_init(uint8_t config, uint8_t max)
{
    static const char xs[TW_LINE_DELIMITER_MAX] = "xxxxxxxxxxxxxxxx";
    tw_line_decoder_init(&dec);
    switch (config & 3) {
    case 0:
        delim_len = 2;
        break;
    case 1:
        CHECK(tw_line_decoder_set_delimiter(&dec, "\n", 1) == 0);
        delim_len = 1;
        break;
    case 2:
        CHECK(tw_line_decoder_set_delimiter(&dec, "aab", 3) == 0);
        delim_len = 3;
        break;
    default:
        CHECK(tw_line_decoder_set_delimiter(&dec, xs, sizeof xs) == 0);
        delim_len = sizeof xs;
    }
    tw_line_decoder_set_max(&dec, max == 255 ? 0 : (size_t)max + 1);
}

static int fuzz_feed(const uint8_t *p, size_t n, frames *f, size_t *consumed)
{
    int rc = tw_line_decoder_feed(&dec, p, n, on_frame, f, consumed);
    if (rc == TW_EMSGSIZE)
        CHECK(fuzz_held() == 0);
    return rc;
}

static size_t fuzz_held(void)
{
    size_t n;
    const char *p = tw_line_decoder_buffered(&dec, &n);
    CHECK((p == NULL) == (n == 0));
    return n;
}

static size_t fuzz_bound(void)
{
    return dec.max + delim_len - 1;
}

static void fuzz_reset(void)
{
    tw_line_decoder_reset(&dec);
}
