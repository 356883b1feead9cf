/* Fuzzes the netstring and Int8/16/32 receivers (basic.h) over a string
 * transport.
 *
 * Input: byte 0 picks the receiver (0: netstring, 1/2/3: 8/16/32-bit
 * prefixes), in bit 2, whether a string "Q" makes the protocol close the
 * connection, and in bit 3 pausing (a string starting with 'P' pauses the
 * receiver; a piece of odd length resumes it first); byte 1 is the maximum
 * length (the byte times 8); then the stream, fed in pieces whose lengths
 * come from control bytes (bits 0-5: length).
 *
 * Invariants (trap on failure): no string is longer than the maximum;
 * nothing arrives after the receiver stopped (disconnecting, a broken peer, a
 * length over the limit) or while it is paused; the bytes delivered never outnumber the bytes fed;
 * everything allocated is freed at the end (tw_testing_alloc_live). */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <twine/basic.h>
#include <twine/error.h>
#include <twine/testing.h>

#include "fuzz.h"

typedef struct fz {
    union {
        tw_netstring_receiver ns;
        tw_int_receiver in;
    } rx; /* first: both begin with their tw_protocol */
    size_t max;
    size_t delivered;
    bool quit_on_q;
    bool pausing;
} fz;

static void on_string(tw_protocol *p, const char *s, size_t len)
{
    fz *f = (fz *)p;
    CHECK(len <= f->max);
    CHECK(!tw_basic_disconnecting(p));
    CHECK(!tw_basic_paused(p));
    f->delivered += len;
    if (f->quit_on_q && len == 1 && s[0] == 'Q')
        tw_basic_lose_connection(p);
    if (f->pausing && len > 0 && s[0] == 'P')
        CHECK(tw_basic_pause_producing(p) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    tw_testing_alloc_count(); /* the counting allocator, before anything */
    long live = tw_testing_alloc_live();
    unsigned kind = data[0] & 3;
    size_t max = (size_t)data[1] * 8;
    static const unsigned prefix[] = {0, 1, 2, 4};
    tw_netstring_receiver_ops ns_ops = {
        .protocol = TW_NETSTRING_RECEIVER_PROTOCOL_OPS,
        .string_received = on_string,
        .max_length = max ? max : 1,
    };
    tw_int_receiver_ops in_ops = {
        .protocol = TW_INT_RECEIVER_PROTOCOL_OPS,
        .string_received = on_string,
        .prefix_bytes = prefix[kind],
        .max_length = max ? max : 1,
    };
    fz f = {.max = max ? max : 1, .quit_on_q = data[0] & 4, .pausing = data[0] & 8};
    if (kind == 0)
        tw_netstring_receiver_init(&f.rx.ns, &ns_ops);
    else
        CHECK(tw_int_receiver_init(&f.rx.in, &in_ops) == 0);
    if (kind != 0 && f.max > 255 && prefix[kind] == 1)
        f.max = 255; /* the prefix caps the maximum */

    tw_string_transport *st;
    if (tw_string_transport_new(&st) < 0)
        return 0;
    tw_protocol *p = (tw_protocol *)&f;
    CHECK(tw_string_transport_connect(st, p) == 0);
    size_t fed = 0;
    for (size_t i = 2; i < size;) {
        size_t n = data[i++] & 63;
        if (n > size - i)
            n = size - i;
        if (f.pausing && (n & 1))
            CHECK(tw_basic_resume_producing(p) == 0);
        tw_string_transport_feed(st, data + i, n);
        fed += n;
        i += n;
    }
    tw_basic_resume_producing(p);
    CHECK(f.delivered <= fed);
    tw_string_transport_lose(st, TW_ECONNDONE);
    tw_string_transport_free(st);
    CHECK(tw_testing_alloc_live() == live);
    return 0;
}
