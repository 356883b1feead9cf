/* Fuzzes the PROXY protocol header parser with arbitrary bytes.
 *
 * Invariants, each checked by a trap:
 * - the result is a header length in 1..size, TW_EAGAIN or TW_EINVAL (with a
 *   static reason of printable ASCII); the header is at most TW_PROXY_MAX
 *   bytes, and TW_EAGAIN only ever comes for fewer than TW_PROXY_MAX bytes;
 * - every prefix shorter than a header, or of an incomplete input, is
 *   incomplete; once a prefix is invalid every longer one is too;
 * - the same bytes (at another address) give the same answer and fields;
 * - addresses and TLVs are consistent (lengths within the storage, the TLV
 *   slice inside the header) and the TLV iterator ends within the slice;
 * - nothing is read out of bounds (the input is libFuzzer's own buffer). */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <twine/error.h>
#include <twine/proxy.h>

#include "fuzz.h"

static bool printable_line(const char *m)
{
    if (*m == '\0')
        return false;
    for (; *m; m++)
        if ((unsigned char)*m < 0x20 || (unsigned char)*m > 0x7e)
            return false;
    return true;
}

static void check_same(const tw_proxy_header *a, const uint8_t *abase, const tw_proxy_header *b,
                       const uint8_t *bbase)
{
    CHECK(a->version == b->version && a->command == b->command);
    CHECK(a->transport == b->transport && a->family == b->family);
    CHECK(a->src_len == b->src_len && a->dst_len == b->dst_len);
    CHECK(memcmp(&a->src, &b->src, a->src_len) == 0);
    CHECK(memcmp(&a->dst, &b->dst, a->dst_len) == 0);
    CHECK(a->header_len == b->header_len && a->tlv_len == b->tlv_len);
    CHECK((a->tlv == NULL) == (b->tlv == NULL));
    CHECK(a->tlv == NULL || a->tlv - abase == b->tlv - bbase);
    CHECK((a->error == NULL) == (b->error == NULL));
    CHECK(a->error == NULL || strcmp(a->error, b->error) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tw_proxy_header h;
    int rc = tw_proxy_parse(data, size, &h);
    CHECK(rc == TW_EAGAIN || rc == TW_EINVAL || rc > 0);
    if (rc == TW_EINVAL)
        CHECK(h.error != NULL && printable_line(h.error));
    else
        CHECK(h.error == NULL);
    if (rc == TW_EAGAIN)
        CHECK(size < TW_PROXY_MAX);
    if (rc > 0) {
        size_t n = (size_t)rc;
        CHECK(n <= size && n <= TW_PROXY_MAX && h.header_len == n);
        CHECK(h.version == 1 || h.version == 2);
        CHECK(h.src_len <= sizeof h.src && h.dst_len <= sizeof h.dst);
        CHECK((h.src_len == 0) == (h.family == AF_UNSPEC));
        CHECK((h.src_len == 0) == (h.dst_len == 0));
        CHECK(h.src_len == 0 || (h.src.ss_family == h.family && h.dst.ss_family == h.family));
        if (h.version == 1)
            CHECK(n <= TW_PROXY_V1_MAX && h.tlv == NULL && h.tlv_len == 0);
        if (h.tlv) {
            CHECK(h.tlv >= data && h.tlv + h.tlv_len <= data + n && h.tlv_len > 0);
            tw_proxy_tlv_iter it;
            tw_proxy_tlv t;
            tw_proxy_tlv_iter_init(&it, &h);
            size_t seen = 0;
            int r;
            while ((r = tw_proxy_tlv_next(&it, &t)) == 1) {
                CHECK(t.value >= h.tlv && t.value + t.len <= h.tlv + h.tlv_len);
                seen += 3 + (size_t)t.len;
                CHECK(seen <= h.tlv_len);
            }
            CHECK(r == 0 || r == TW_EINVAL);
            CHECK(r != 0 || seen == h.tlv_len);
            CHECK(tw_proxy_tlv_next(&it, &t) == r);
        } else {
            CHECK(h.tlv_len == 0);
        }
    }

    /* Prefixes: incomplete below a header or an incomplete input; once
     * invalid, invalid for good. */
    size_t limit = rc > 0 ? (size_t)rc : size;
    bool invalid = false;
    for (size_t k = 0; k < limit; k++) {
        tw_proxy_header p;
        int pr = tw_proxy_parse(data, k, &p);
        if (rc != TW_EINVAL) {
            CHECK(pr == TW_EAGAIN);
        } else {
            CHECK(pr == TW_EAGAIN || pr == TW_EINVAL);
            CHECK(!invalid || pr == TW_EINVAL);
            invalid = pr == TW_EINVAL;
        }
    }

    /* The same bytes elsewhere: the same answer. */
    uint8_t *copy = malloc(size ? size : 1);
    CHECK(copy != NULL);
    if (size)
        memcpy(copy, data, size);
    tw_proxy_header h2;
    CHECK(tw_proxy_parse(copy, size, &h2) == rc);
    check_same(&h, data, &h2, copy);
    free(copy);
    return 0;
}
