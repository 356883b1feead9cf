/* Fuzzes the line receiver over a string transport.
 *
 * Input: byte 0 picks the delimiter (bits 0-1: "\r\n", "\n", "ab", 16 'x'),
 * whether allocations fail (bit 2: after byte 2 of them), the line-only
 * receiver with a line_length_exceeded hook that keeps the connection open
 * (bit 3), and pausing (bit 4: a line or raw chunk starting with 'P' pauses
 * the receiver; a piece of odd length resumes it first); byte 1 is the
 * maximum line length (1 + the byte); byte 2 the allocation budget; then
 * the stream, fed in pieces: a piece starts with a control byte (bits 0-5:
 * the piece's length; bit 6: a line received next toggles raw mode; bit 7:
 * clear the line buffer before feeding), so raw-mode toggling and chunking
 * are both under the fuzzer's control. In raw mode a raw chunk switches back
 * to line mode, handing back its second half as extra bytes.
 *
 * Invariants (trap on failure): no line is longer than the maximum, and
 * the line-only hook gets only longer ones; no line and no raw byte arrives
 * after the receiver stopped (disconnecting) or while it is paused; the
 * bytes delivered never outnumber the bytes fed; everything the receiver
 * and transport allocated is freed at the end (tw_testing_alloc_live). */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <twine/basic.h>
#include <twine/error.h>
#include <twine/testing.h>

#include "fuzz.h"

typedef struct fz {
    tw_line_receiver lr;
    size_t max;
    size_t delivered;
    bool toggle_next;
    bool stopped_seen;
    bool pausing;
    bool line_only;
} fz;

static void maybe_pause(fz *f, const char *data, size_t len)
{
    if (f->pausing && len > 0 && data[0] == 'P')
        CHECK(tw_basic_pause_producing(&f->lr.rx.base) == 0);
}

static void on_line(tw_protocol *p, const char *line, size_t len)
{
    fz *f = (fz *)p;
    CHECK(len <= f->max);
    CHECK(!tw_basic_disconnecting(p));
    CHECK(!f->lr.raw);
    CHECK(!tw_basic_paused(p));
    f->delivered += len;
    if (f->toggle_next) {
        f->toggle_next = false;
        int rc = tw_line_receiver_set_raw_mode(p);
        CHECK(rc == (f->line_only ? TW_ENOTSUP : 0));
    }
    maybe_pause(f, line, len);
    if (len == 1 && line[0] == 'Q')
        tw_basic_lose_connection(p);
}

static void on_raw(tw_protocol *p, const char *data, size_t len)
{
    fz *f = (fz *)p;
    CHECK(!tw_basic_disconnecting(p));
    CHECK(f->lr.raw);
    CHECK(!tw_basic_paused(p));
    maybe_pause(f, data, len);
    size_t half = len / 2;
    f->delivered += half;
    int rc = tw_line_receiver_set_line_mode(p, data + half, len - half);
    CHECK(rc == 0 || rc == TW_ENOMEM);
}

/* Line-only: keeps the connection open; the rest of the line is skipped. */
static void on_long(tw_protocol *p, const char *data, size_t len)
{
    fz *f = (fz *)p;
    CHECK(len > f->max && data);
    CHECK(!tw_basic_disconnecting(p));
    CHECK(!tw_basic_paused(p));
}

static void on_take(void *ctx, const char *data, size_t len)
{
    CHECK(len > 0 && data);
}

static const tw_line_receiver_ops base_ops = {
    .protocol = TW_LINE_RECEIVER_PROTOCOL_OPS,
    .line_received = on_line,
    .raw_data_received = on_raw,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    static const char xs[16] = "xxxxxxxxxxxxxxxx";
    tw_line_receiver_ops ops = base_ops;
    switch (data[0] & 3) {
    case 0:
        break;
    case 1:
        ops.delimiter = "\n";
        break;
    case 2:
        ops.delimiter = "ab";
        break;
    default:
        ops.delimiter = xs;
        ops.delimiter_len = sizeof xs;
    }
    ops.max_length = (size_t)data[1] + 1;
    if (data[0] & 8) {
        ops.line_only = true;
        ops.line_length_exceeded = on_long;
    }
    bool pausing = data[0] & 16;
    bool fail = data[0] & 4;
    long budget = data[2];
    data += 3;
    size -= 3;

    tw_testing_alloc_live(); /* installs the counting allocator */
    long live = tw_testing_alloc_live();
    tw_string_transport *st;
    CHECK(tw_string_transport_new(&st) == 0);
    fz f;
    tw_line_receiver_init(&f.lr, &ops);
    f.max = ops.max_length;
    f.delivered = 0;
    f.toggle_next = false;
    f.pausing = pausing;
    f.line_only = ops.line_only;
    CHECK(tw_string_transport_connect(st, &f.lr.rx.base) == 0);
    if (fail)
        tw_testing_fail_alloc_after(budget);

    size_t fed = 0;
    while (size > 0) {
        uint8_t ctl = data[0];
        data++;
        size--;
        size_t n = ctl & 63;
        if (n > size)
            n = size;
        if (ctl & 64)
            f.toggle_next = true;
        if (ctl & 128)
            tw_line_receiver_clear_line_buffer(&f.lr.rx.base, on_take, NULL);
        if (pausing && (n & 1))
            CHECK(tw_basic_resume_producing(&f.lr.rx.base) == 0);
        tw_string_transport_feed(st, data, n);
        fed += n;
        CHECK(f.delivered <= fed);
        data += n;
        size -= n;
    }
    tw_testing_fail_alloc_off();
    tw_basic_resume_producing(&f.lr.rx.base);
    CHECK(f.delivered <= fed);
    CHECK(tw_string_transport_lose(st, 0) == 0);
    tw_string_transport_free(st);
    CHECK(tw_testing_alloc_live() == live);
    return 0;
}
