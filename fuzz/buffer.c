/* Fuzz target: bytes become operations on one write queue and one read
 * buffer (appends of many sizes, zero-copy appends, fill_iov with various
 * limits followed by partial consumes, consumes of any size, clears, cache
 * trims, bounds, and allocations failing on demand), each checked against a
 * plain byte array.
 *
 * Checked, besides no crash and no sanitizer report:
 * - the queue's size and the bytes fill_iov covers are the model's, in order;
 *   fill_iov returns fewer entries than allowed only when it covers all;
 * - every zero-copy release comes exactly once, never before the consume (or
 *   clear) that passes its end, and never for an append that failed;
 * - a failed append (TW_ENOMEM, TW_ENOBUFS) leaves queue and buffer as they
 *   were; consume past the size is TW_EINVAL and changes nothing;
 * - an empty queue or read buffer owns no memory; at the end of each input,
 *   after the clears and a cache trim, every byte allocated was freed. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <twine/buffer.h>
#include <twine/testing.h>
#include <twine/twine.h>

#include "fuzz.h"

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz-buffer: invariant broken: %s\n", what);
        abort();
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    tw_testing_fail_alloc_off(); /* installs the counting allocator */
    return 0;
}

/* ---- The model. */

#define MODEL_BYTES (1u << 20)
#define MAX_SEGS    8192
#define SOURCE_SIZE 65536

static unsigned char source[SOURCE_SIZE];

static struct {
    unsigned char bytes[MODEL_BYTES];
    size_t head, tail; /* the queue holds bytes[head..tail) */
    size_t target;     /* where head will be once the running call returns */
    size_t seg_end[MAX_SEGS];
    int released[MAX_SEGS];
    int nsegs;
    int settled; /* segments [0, settled) are known released */
} m;

static struct {
    unsigned char bytes[1u << 17];
    size_t len;
} rm;

static void release_segment(void *arg)
{
    int id = (int)(intptr_t)arg;
    check(id >= 0 && id < m.nsegs, "release of a segment that was never queued");
    check(m.released[id] == 0, "zero-copy segment released twice");
    check(m.seg_end[id] <= m.target, "zero-copy segment released before its end was consumed");
    m.released[id] = 1;
}

static void release_empty(void *arg)
{
    ++*(int *)arg;
}

static void check_queue(const tw_wqueue *q, int full)
{
    size_t size = m.tail - m.head;
    check(tw_wqueue_size(q) == size, "size differs from the model");
    check(tw_wqueue_is_empty(q) == (size == 0), "is_empty differs from size");
    check((q->head == NULL) == (size == 0), "an empty queue owns blocks, or a full one none");
    while (m.settled < m.nsegs && m.seg_end[m.settled] <= m.head) {
        check(m.released[m.settled] == 1, "zero-copy segment not released after its end");
        m.settled++;
    }
    for (int i = m.settled; i < m.nsegs; i++)
        check(m.released[i] == 0 || m.seg_end[i] <= m.head, "released too early");
    if (!full)
        return;
    static struct iovec iov[1024];
    int n = tw_wqueue_fill_iov(q, iov, 1024);
    size_t covered = 0;
    for (int i = 0; i < n; i++) {
        check(iov[i].iov_len > 0, "empty iov entry");
        check(covered + iov[i].iov_len <= size, "fill_iov covers more than the size");
        check(memcmp(iov[i].iov_base, m.bytes + m.head + covered, iov[i].iov_len) == 0,
              "queued bytes differ from the model");
        covered += iov[i].iov_len;
    }
    check(n == 1024 || covered == size, "fill_iov stopped short of its limit");
}

static void check_rbuf(const tw_rbuf *b)
{
    check(tw_rbuf_size(b) == rm.len, "rbuf size differs from the model");
    check((b->data == NULL) == (rm.len == 0), "an empty rbuf owns storage");
    check(rm.len == 0 || memcmp(tw_rbuf_data(b), rm.bytes, rm.len) == 0, "rbuf bytes differ");
}

/* ---- Input decoding. */

struct input {
    const uint8_t *p, *end;
};

static unsigned byte(struct input *in)
{
    return in->p < in->end ? *in->p++ : 0;
}

/* A length spread over small, block-sized and multi-block scales. */
static size_t length(struct input *in)
{
    unsigned a = byte(in), b = byte(in);
    switch (a & 3) {
    case 0:
        return b % 16;
    case 1:
        return ((a >> 2) << 8 | b) % 300;
    case 2:
        return (size_t)TW_WQUEUE_BLOCK_SIZE - 64 + (b % 128);
    default:
        return ((size_t)(a >> 2) << 10 | (size_t)b << 2) % 50000;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (source[1] == 0)
        for (size_t i = 0; i < SOURCE_SIZE; i++)
            source[i] = (unsigned char)(i * 7 + (i >> 8) + 1);
    long baseline = tw_testing_alloc_live();
    memset(&m, 0, sizeof m);
    rm.len = 0;

    tw_wqueue q = TW_WQUEUE_INIT;
    tw_rbuf b;
    tw_rbuf_init(&b, 1u << 16);
    struct input in = {data, data + size};
    static struct iovec iov[80];

    while (in.p < in.end) {
        unsigned op = byte(&in) % 12;
        switch (op) {
        case 0:
        case 1: { /* append a copy */
            size_t len = length(&in);
            size_t from = (byte(&in) * 251u) % (SOURCE_SIZE - len + 1);
            if (m.tail + len > MODEL_BYTES)
                break;
            int rc = tw_wqueue_append(&q, source + from, len);
            if (rc == 0) {
                memcpy(m.bytes + m.tail, source + from, len);
                m.tail += len;
            } else {
                check(rc == TW_ENOMEM, "append failed other than TW_ENOMEM");
                check(tw_testing_fail_alloc_armed(), "append failed with memory available");
            }
            check_queue(&q, rc != 0);
            break;
        }
        case 2: { /* append zero-copy */
            size_t len = length(&in);
            size_t from = (byte(&in) * 253u) % (SOURCE_SIZE - len + 1);
            if (m.tail + len > MODEL_BYTES || m.nsegs == MAX_SEGS)
                break;
            if (len == 0) {
                int empty = 0;
                check(tw_wqueue_append_zerocopy(&q, source, 0, release_empty, &empty) == 0,
                      "empty zero-copy append failed");
                check(empty == 1, "empty zero-copy segment not released at once");
                check_queue(&q, 0);
                break;
            }
            int id = m.nsegs;
            m.target = m.head;
            int rc = tw_wqueue_append_zerocopy(&q, source + from, len, release_segment,
                                               (void *)(intptr_t)id);
            if (rc == 0) {
                memcpy(m.bytes + m.tail, source + from, len);
                m.tail += len;
                m.seg_end[id] = m.tail;
                m.nsegs++;
            } else {
                check(rc == TW_ENOMEM && tw_testing_fail_alloc_armed(),
                      "zero-copy append failed oddly");
            }
            check_queue(&q, rc != 0);
            break;
        }
        case 3:
        case 4:
        case 5: { /* a writev: fill, then take part of what was offered */
            int max = 1 + (int)(byte(&in) % 70);
            unsigned frac = byte(&in);
            int n = tw_wqueue_fill_iov(&q, iov, max);
            check(n >= 0 && n <= max, "fill_iov count out of range");
            size_t covered = 0;
            for (int i = 0; i < n; i++) {
                check(iov[i].iov_len > 0, "empty iov entry");
                check(memcmp(iov[i].iov_base, m.bytes + m.head + covered, iov[i].iov_len) == 0,
                      "fill_iov bytes differ from the model");
                covered += iov[i].iov_len;
            }
            check(covered <= m.tail - m.head, "fill_iov covers more than the size");
            check(n == max || covered == m.tail - m.head, "fill_iov stopped short of its limit");
            size_t take = frac == 255 ? covered : covered * frac / 255;
            m.target = m.head + take;
            check(tw_wqueue_consume(&q, take) == 0, "consume of offered bytes failed");
            m.head = m.target;
            check_queue(&q, 0);
            break;
        }
        case 6: { /* consume any amount, maybe too much */
            size_t n = length(&in);
            size_t queued = m.tail - m.head;
            m.target = n <= queued ? m.head + n : m.head;
            int rc = tw_wqueue_consume(&q, n);
            check(rc == (n <= queued ? 0 : TW_EINVAL), "consume result");
            m.head = m.target;
            check_queue(&q, 0);
            break;
        }
        case 7: /* abort_connection */
            m.target = m.tail;
            tw_wqueue_clear(&q);
            m.head = m.tail;
            check_queue(&q, 1);
            break;
        case 8: { /* allocation failures on or off; trim the cache */
            unsigned v = byte(&in);
            if (v & 0x80)
                tw_wqueue_cache_trim();
            if (v & 0x40)
                tw_testing_fail_alloc_off();
            else
                tw_testing_fail_alloc_after((long)(v & 7));
            break;
        }
        case 9: { /* rbuf append */
            size_t len = length(&in) % 20000;
            size_t from = (byte(&in) * 257u) % (SOURCE_SIZE - len + 1);
            int rc = tw_rbuf_append(&b, source + from, len);
            if (rc == 0) {
                check(len == 0 || rm.len + len <= tw_rbuf_max(&b), "rbuf passed its maximum");
                memcpy(rm.bytes + rm.len, source + from, len);
                rm.len += len;
            } else if (rc == TW_ENOBUFS) {
                check(rm.len + len > tw_rbuf_max(&b), "TW_ENOBUFS below the maximum");
            } else {
                check(rc == TW_ENOMEM && tw_testing_fail_alloc_armed(), "rbuf append failed oddly");
            }
            check_rbuf(&b);
            break;
        }
        case 10: { /* rbuf consume */
            size_t n = length(&in) % 20000;
            int rc = tw_rbuf_consume(&b, n);
            check(rc == (n <= rm.len ? 0 : TW_EINVAL), "rbuf consume result");
            if (rc == 0) {
                memmove(rm.bytes, rm.bytes + n, rm.len - n);
                rm.len -= n;
            }
            check_rbuf(&b);
            break;
        }
        default: { /* rbuf bound or clear */
            unsigned v = byte(&in);
            if (v == 0) {
                tw_rbuf_clear(&b);
                rm.len = 0;
            } else {
                tw_rbuf_set_max(&b, (size_t)v * 512);
            }
            check_rbuf(&b);
            break;
        }
        }
    }

    tw_testing_fail_alloc_off();
    m.target = m.tail;
    tw_wqueue_clear(&q);
    m.head = m.tail;
    check_queue(&q, 1);
    for (int i = 0; i < m.nsegs; i++)
        check(m.released[i] == 1, "zero-copy segment not released exactly once");
    tw_rbuf_clear(&b);
    tw_wqueue_cache_trim();
    check(tw_testing_alloc_live() == baseline, "memory still allocated at the end of the input");
    return 0;
}
