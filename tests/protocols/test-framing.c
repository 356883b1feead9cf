#include "twtest.h"
#include <twine/framing.h>

#include <stdint.h>
#include <string.h>

/* ---- A recorder of frames, and one driver over the three decoders ------- */

#define REC_BYTES  65536
#define REC_FRAMES 2048

typedef struct rec {
    char bytes[REC_BYTES];
    size_t used;
    size_t lens[REC_FRAMES];
    size_t n;
    int err;             /* the first error feed returned, 0 if none */
    int stop_every;      /* the callback asks to stop after each frame */
    const char *lo, *hi; /* the input being fed, to count zero-copy frames */
    size_t zero_copy;
} rec;

static int rec_frame(void *ctx, const char *p, size_t n)
{
    rec *r = ctx;
    cr_assert_lt(r->n, REC_FRAMES);
    cr_assert_leq(r->used + n, REC_BYTES);
    if (n)
        memcpy(r->bytes + r->used, p, n);
    r->used += n;
    r->lens[r->n++] = n;
    if (n && r->lo && p >= r->lo && p + n <= r->hi)
        r->zero_copy++;
    return r->stop_every;
}

static void rec_assert_eq(const rec *a, const rec *b, const char *what)
{
    cr_assert_eq(a->n, b->n, "%s: %zu frames, expected %zu", what, a->n, b->n);
    cr_assert_eq(a->used, b->used, "%s: frame bytes differ in size", what);
    for (size_t i = 0; i < a->n; i++)
        cr_assert_eq(a->lens[i], b->lens[i], "%s: frame %zu has %zu bytes, expected %zu", what, i,
                     a->lens[i], b->lens[i]);
    cr_assert(memcmp(a->bytes, b->bytes, a->used) == 0, "%s: frame bytes differ", what);
    cr_assert_eq(a->err, b->err, "%s: error %d, expected %d", what, a->err, b->err);
}

enum { K_LINE, K_NS, K_PX };

typedef struct cfg {
    int kind;
    const char *delim; /* lines: NULL for the default */
    size_t delim_len;
    size_t max;
    unsigned prefix;
} cfg;

typedef struct dec {
    int kind;
    tw_line_decoder line;
    tw_netstring_decoder ns;
    tw_prefixed_decoder px;
} dec;

static void dec_init(dec *d, const cfg *c)
{
    d->kind = c->kind;
    switch (c->kind) {
    case K_LINE:
        tw_line_decoder_init(&d->line);
        if (c->delim)
            cr_assert_eq(tw_line_decoder_set_delimiter(&d->line, c->delim, c->delim_len), 0);
        if (c->max)
            tw_line_decoder_set_max(&d->line, c->max);
        break;
    case K_NS:
        tw_netstring_decoder_init(&d->ns, c->max);
        break;
    default:
        cr_assert_eq(tw_prefixed_decoder_init(&d->px, c->prefix, c->max), 0);
    }
}

static int dec_feed(dec *d, const void *p, size_t n, rec *r, size_t *consumed)
{
    switch (d->kind) {
    case K_LINE:
        return tw_line_decoder_feed(&d->line, p, n, rec_frame, r, consumed);
    case K_NS:
        return tw_netstring_decoder_feed(&d->ns, p, n, rec_frame, r, consumed);
    default:
        return tw_prefixed_decoder_feed(&d->px, p, n, rec_frame, r, consumed);
    }
}

static const tw_rbuf *dec_buf(const dec *d)
{
    return d->kind == K_LINE ? &d->line.buf : d->kind == K_NS ? &d->ns.buf : &d->px.buf;
}

static void dec_reset(dec *d)
{
    switch (d->kind) {
    case K_LINE:
        tw_line_decoder_reset(&d->line);
        break;
    case K_NS:
        tw_netstring_decoder_reset(&d->ns);
        break;
    default:
        tw_prefixed_decoder_reset(&d->px);
    }
}

/* The bound on what a decoder may hold. */
static size_t dec_bound(const cfg *c)
{
    size_t max = c->max;
    if (c->kind == K_LINE)
        return (max ? max : TW_LINE_DEFAULT_MAX) + (c->delim ? c->delim_len : 2) - 1;
    if (c->kind == K_NS)
        return max ? max : TW_NETSTRING_DEFAULT_MAX;
    return max ? max : tw_prefixed_limit(c->prefix);
}

/* Feeds one chunk, re-feeding the rest when the callback stops; records the
 * first error. Returns false once an error was seen. */
static bool feed_chunk(dec *d, const cfg *c, const char *p, size_t n, rec *r)
{
    while (true) {
        size_t consumed = 12345;
        r->lo = p;
        r->hi = p + n;
        int rc = dec_feed(d, p, n, r, &consumed);
        cr_assert_leq(consumed, n);
        cr_assert_leq(tw_rbuf_size(dec_buf(d)), dec_bound(c), "decoder holds more than its bound");
        if (rc == 1) {
            cr_assert(r->stop_every, "stopped without being asked");
            p += consumed;
            n -= consumed;
            continue;
        }
        if (rc < 0) {
            r->err = rc;
            return false;
        }
        cr_assert_eq(rc, 0);
        cr_assert_eq(consumed, n, "returned 0 without taking everything");
        return true;
    }
}

/* Feeds the input cut at the given points (sorted, in (0, len)). */
static void run_cuts(const cfg *c, const char *in, size_t len, const size_t *cuts, size_t ncuts,
                     rec *r)
{
    dec d;
    dec_init(&d, c);
    size_t at = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : len;
        if (!feed_chunk(&d, c, in + at, end - at, r))
            break;
        at = end;
    }
    dec_reset(&d);
    cr_assert_null(tw_rbuf_data(dec_buf(&d)), "reset left memory owned");
}

static rec ref, got; /* large: kept out of the stack */

/* The heart of the suite: feeding `in` all at once, in every chunk size down
 * to one byte, split at every single point, and stopping after every frame,
 * gives the same frames in the same order and the same error. Returns the
 * reference frames in `ref`. */
static void assert_split_invariant(const cfg *c, const char *in, size_t len)
{
    memset(&ref, 0, sizeof ref);
    run_cuts(c, in, len, NULL, 0, &ref);
    static size_t cuts[8192];
    cr_assert_lt(len, sizeof cuts / sizeof cuts[0]);
    for (size_t chunk = len; chunk >= 1; chunk--) {
        size_t n = 0;
        for (size_t at = chunk; at < len; at += chunk)
            cuts[n++] = at;
        memset(&got, 0, sizeof got);
        run_cuts(c, in, len, cuts, n, &got);
        rec_assert_eq(&got, &ref, "chunked");
    }
    for (size_t at = 1; at < len; at++) {
        memset(&got, 0, sizeof got);
        run_cuts(c, in, len, &at, 1, &got);
        rec_assert_eq(&got, &ref, "split once");
    }
    memset(&got, 0, sizeof got);
    got.stop_every = 1;
    run_cuts(c, in, len, NULL, 0, &got);
    rec_assert_eq(&got, &ref, "stop after every frame");
}

static void assert_frames(const char *const *expect, size_t n, int err)
{
    cr_assert_eq(ref.n, n, "%zu frames, expected %zu", ref.n, n);
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        size_t el = strlen(expect[i]);
        cr_assert_eq(ref.lens[i], el, "frame %zu: %zu bytes, expected %zu", i, ref.lens[i], el);
        cr_assert(memcmp(ref.bytes + off, expect[i], el) == 0, "frame %zu differs", i);
        off += el;
    }
    cr_assert_eq(ref.err, err, "error %d, expected %d", ref.err, err);
}

#define S(lit) (lit), (sizeof(lit) - 1)

/* ---- Lines ------------------------------------------------------------ */

TW_TEST(lines, default_crlf_every_split)
{
    cfg c = {.kind = K_LINE};
    assert_split_invariant(&c, S("hello\r\nworld\r\n\r\nx\ry\nz\r\n\r\r\n\rtail"));
    const char *e[] = {"hello", "world", "", "x\ry\nz", "\r"};
    assert_frames(e, 5, 0);
}

TW_TEST(lines, lines_are_slices_of_the_input)
{
    tw_line_decoder d;
    tw_line_decoder_init(&d);
    memset(&got, 0, sizeof got);
    const char in[] = "ab\r\ncd\r\nef";
    got.lo = in;
    got.hi = in + sizeof in;
    size_t consumed;
    cr_assert_eq(tw_line_decoder_feed(&d, in, sizeof in - 1, rec_frame, &got, &consumed), 0);
    cr_assert_eq(consumed, sizeof in - 1);
    cr_assert_eq(got.n, 2);
    cr_assert_eq(got.zero_copy, 2, "a line wholly inside the input was copied");
    size_t n;
    const char *held = tw_line_decoder_buffered(&d, &n);
    cr_assert_eq(n, 2);
    cr_assert(memcmp(held, "ef", 2) == 0);
    /* The tail completes from the next feed. */
    cr_assert_eq(tw_line_decoder_feed(&d, S("gh\r\n"), rec_frame, &got, &consumed), 0);
    cr_assert_eq(got.n, 3);
    cr_assert(memcmp(got.bytes + 4, "efgh", 4) == 0);
    cr_assert_null(tw_line_decoder_buffered(&d, &n), "an empty decoder owns memory");
    cr_assert_eq(n, 0);
    tw_line_decoder_reset(&d);
}

TW_TEST(lines, custom_delimiters_every_split)
{
    cfg lf = {.kind = K_LINE, .delim = "\n", .delim_len = 1};
    assert_split_invariant(&lf, S("a\nbb\n\nccc\r\nd"));
    const char *e1[] = {"a", "bb", "", "ccc\r"};
    assert_frames(e1, 4, 0);

    /* A self-overlapping delimiter: the leftmost match wins. */
    cfg aab = {.kind = K_LINE, .delim = "aab", .delim_len = 3};
    assert_split_invariant(&aab, S("xaaabyaabaabzaaaab"));
    const char *e2[] = {"xa", "y", "", "zaa"};
    assert_frames(e2, 4, 0);

    cfg blank = {.kind = K_LINE, .delim = "\r\n\r\n", .delim_len = 4};
    assert_split_invariant(&blank, S("h1\r\nh2\r\n\r\nbody\r\n\r\r\n\r\n"));
    const char *e3[] = {"h1\r\nh2", "body\r\n\r"};
    assert_frames(e3, 2, 0);

    cfg nul = {.kind = K_LINE, .delim = "\0", .delim_len = 1};
    assert_split_invariant(&nul, "a\0b\0", 4);
    const char *e4[] = {"a", "b"};
    assert_frames(e4, 2, 0);
}

TW_TEST(lines, set_delimiter_rules)
{
    tw_line_decoder d;
    tw_line_decoder_init(&d);
    char big[TW_LINE_DELIMITER_MAX + 1] = {0};
    cr_assert_eq(tw_line_decoder_set_delimiter(&d, "x", 0), TW_EINVAL);
    cr_assert_eq(tw_line_decoder_set_delimiter(&d, big, sizeof big), TW_EINVAL);
    cr_assert_eq(tw_line_decoder_set_delimiter(&d, big, TW_LINE_DELIMITER_MAX), 0);
    cr_assert_eq(tw_line_decoder_set_delimiter(&d, "\n", 1), 0);
    memset(&got, 0, sizeof got);
    cr_assert_eq(tw_line_decoder_feed(&d, S("partial"), rec_frame, &got, NULL), 0);
    cr_assert_eq(tw_line_decoder_set_delimiter(&d, "\r\n", 2), TW_EBUSY);
    tw_line_decoder_clear(&d);
    cr_assert_eq(tw_line_decoder_set_delimiter(&d, "\r\n", 2), 0);
    cr_assert_eq(tw_line_decoder_feed(&d, NULL, 3, rec_frame, &got, NULL), TW_EINVAL);
    cr_assert_eq(tw_line_decoder_feed(&d, "a", 1, NULL, &got, NULL), TW_EINVAL);
    cr_assert_eq(tw_line_decoder_feed(NULL, "a", 1, rec_frame, &got, NULL), TW_EINVAL);
    cr_assert_eq(tw_line_decoder_feed(&d, NULL, 0, rec_frame, &got, NULL), 0);
    cr_assert_eq(got.n, 0);
    tw_line_decoder_reset(&d);
}

/* A protocol in the style of LineReceiver: lines until "RAW n", then n raw
 * bytes, then lines again (setRawMode / setLineMode(extra)). */
typedef struct mode_proto {
    tw_line_decoder d;
    bool raw;
    size_t raw_left;
    char raw_bytes[256];
    size_t raw_len;
    char lines[16][32];
    size_t nlines;
} mode_proto;

static int mode_line(void *ctx, const char *p, size_t n)
{
    mode_proto *m = ctx;
    cr_assert_lt(m->nlines, 16);
    cr_assert_lt(n, 32);
    memcpy(m->lines[m->nlines], p, n);
    m->lines[m->nlines++][n] = 0;
    if (n > 4 && memcmp(p, "RAW ", 4) == 0) {
        m->raw = true;
        m->raw_left = (size_t)(p[4] - '0');
        return 1; /* stop: the rest is raw */
    }
    return 0;
}

static void mode_feed(mode_proto *m, const char *p, size_t n)
{
    while (n) {
        if (m->raw) {
            size_t take = n < m->raw_left ? n : m->raw_left;
            memcpy(m->raw_bytes + m->raw_len, p, take);
            m->raw_len += take;
            m->raw_left -= take;
            p += take;
            n -= take;
            if (m->raw_left == 0)
                m->raw = false; /* setLineMode(rest): just feed it */
            continue;
        }
        size_t consumed;
        int rc = tw_line_decoder_feed(&m->d, p, n, mode_line, m, &consumed);
        cr_assert_geq(rc, 0);
        if (rc == 1) {
            size_t held;
            tw_line_decoder_buffered(&m->d, &held);
            cr_assert_eq(held, 0, "a line callback stop left bytes in the decoder");
        }
        p += consumed;
        n -= consumed;
    }
}

TW_TEST(lines, stop_after_line_switches_to_raw_and_back)
{
    static const char in[] = "one\r\nRAW 5\r\nab\r\ncafter\r\nlast\r\npart";
    for (size_t at = 0; at <= sizeof in - 1; at++) {
        mode_proto m = {0};
        tw_line_decoder_init(&m.d);
        mode_feed(&m, in, at);
        mode_feed(&m, in + at, sizeof in - 1 - at);
        cr_assert_eq(m.nlines, 4, "split %zu: %zu lines", at, m.nlines);
        cr_assert_str_eq(m.lines[0], "one");
        cr_assert_str_eq(m.lines[1], "RAW 5");
        cr_assert_str_eq(m.lines[2], "after");
        cr_assert_str_eq(m.lines[3], "last");
        cr_assert_eq(m.raw_len, 5);
        cr_assert(memcmp(m.raw_bytes, "ab\r\nc", 5) == 0);
        size_t held;
        const char *b = tw_line_decoder_buffered(&m.d, &held);
        cr_assert_eq(held, 4);
        cr_assert(memcmp(b, "part", 4) == 0);
        tw_line_decoder_reset(&m.d);
    }
}

TW_TEST(lines, stop_reports_consumed_and_buffer_can_be_taken)
{
    tw_line_decoder d;
    tw_line_decoder_init(&d);
    memset(&got, 0, sizeof got);
    got.stop_every = 1;
    size_t consumed;
    /* A line completed from the buffer, then stop. */
    cr_assert_eq(tw_line_decoder_feed(&d, S("abc\r"), rec_frame, &got, &consumed), 0);
    cr_assert_eq(consumed, 4);
    cr_assert_eq(got.n, 0);
    cr_assert_eq(tw_line_decoder_feed(&d, S("\nrest\r\nmore"), rec_frame, &got, &consumed), 1);
    cr_assert_eq(consumed, 1);
    cr_assert_eq(got.n, 1);
    cr_assert_eq(got.lens[0], 3);
    cr_assert_eq(tw_line_decoder_feed(&d, S("rest\r\nmore"), rec_frame, &got, &consumed), 1);
    cr_assert_eq(consumed, 6);
    cr_assert_eq(got.n, 2);
    got.stop_every = 0;
    cr_assert_eq(tw_line_decoder_feed(&d, S("more"), rec_frame, &got, &consumed), 0);
    /* clearLineBuffer: take what is held, then clear. */
    size_t n;
    const char *b = tw_line_decoder_buffered(&d, &n);
    cr_assert_eq(n, 4);
    cr_assert(memcmp(b, "more", 4) == 0);
    tw_line_decoder_clear(&d);
    cr_assert_null(tw_line_decoder_buffered(&d, &n));
    cr_assert_eq(n, 0);
    tw_line_decoder_reset(&d);
}

/* A callback that changes the delimiter after the first line. */
static int switch_delim(void *ctx, const char *p, size_t n)
{
    void **a = ctx;
    rec_frame(a[0], p, n);
    cr_assert_eq(tw_line_decoder_set_delimiter(a[1], "|", 1), 0);
    return 0;
}

TW_TEST(lines, delimiter_changed_from_the_callback_applies_next)
{
    tw_line_decoder d;
    tw_line_decoder_init(&d);
    memset(&got, 0, sizeof got);
    void *a[2] = {&got, &d};
    size_t consumed;
    cr_assert_eq(tw_line_decoder_feed(&d, S("a\r\nb|c|d\r\n"), switch_delim, a, &consumed), 0);
    cr_assert_eq(consumed, 10);
    cr_assert_eq(got.n, 3);
    cr_assert(memcmp(got.bytes, "abc", 3) == 0);
    size_t n;
    tw_line_decoder_buffered(&d, &n);
    cr_assert_eq(n, 3); /* "d\r\n" waits for '|' */
    tw_line_decoder_reset(&d);
}

TW_TEST(lines, max_length_exactly_and_exceeded_at_every_split)
{
    cfg c = {.kind = K_LINE, .max = 5};
    assert_split_invariant(&c, S("12345\r\n\r\n12345\r"));
    const char *ok[] = {"12345", ""};
    assert_frames(ok, 2, 0);

    assert_split_invariant(&c, S("ab\r\n123456\r\nzz\r\n"));
    const char *e1[] = {"ab"};
    assert_frames(e1, 1, TW_EMSGSIZE);

    /* Too long without a delimiter ever seen. */
    assert_split_invariant(&c, S("ab\r\n12345\rx"));
    assert_frames(e1, 1, TW_EMSGSIZE);

    /* A partial delimiter at the end does not count against the maximum. */
    cfg c4 = {.kind = K_LINE, .max = 3, .delim = "ABCD", .delim_len = 4};
    assert_split_invariant(&c4, S("123ABC"));
    assert_frames(NULL, 0, 0);
    assert_split_invariant(&c4, S("123ABCD1234"));
    const char *e2[] = {"123"};
    assert_frames(e2, 1, TW_EMSGSIZE);
}

TW_TEST(lines, max_exceeded_is_reported_once_and_leaves_the_decoder_empty)
{
    tw_line_decoder d;
    tw_line_decoder_init(&d);
    tw_line_decoder_set_max(&d, 4);
    memset(&got, 0, sizeof got);
    size_t consumed;
    cr_assert_eq(tw_line_decoder_feed(&d, S("ok\r\n1234"), rec_frame, &got, &consumed), 0);
    cr_assert_eq(tw_line_decoder_feed(&d, S("5"), rec_frame, &got, &consumed), TW_EMSGSIZE);
    cr_assert_eq(consumed, 0);
    size_t n;
    cr_assert_null(tw_line_decoder_buffered(&d, &n), "the long line is still held");
    cr_assert_eq(tw_line_decoder_feed(&d, S("ok\r\nxy123456"), rec_frame, &got, &consumed),
                 TW_EMSGSIZE);
    cr_assert_eq(consumed, 4, "consumed must end after the last line delivered");
    cr_assert_eq(got.n, 2);
    /* Usable again: the next feed starts a new line. */
    cr_assert_eq(tw_line_decoder_feed(&d, S("fine\r\n"), rec_frame, &got, &consumed), 0);
    cr_assert_eq(got.n, 3);
    /* Default maximum: 16384 accepted, 16385 refused. */
    tw_line_decoder_set_max(&d, 0);
    static char big[TW_LINE_DEFAULT_MAX + 3];
    memset(big, 'x', sizeof big);
    memcpy(big + TW_LINE_DEFAULT_MAX, "\r\n", 2);
    cr_assert_eq(tw_line_decoder_feed(&d, big, TW_LINE_DEFAULT_MAX + 2, rec_frame, &got, NULL), 0);
    cr_assert_eq(got.lens[3], TW_LINE_DEFAULT_MAX);
    memset(big, 'x', sizeof big);
    cr_assert_eq(tw_line_decoder_feed(&d, big, TW_LINE_DEFAULT_MAX + 1, rec_frame, &got, NULL),
                 TW_EMSGSIZE);
    tw_line_decoder_reset(&d);
}

/* ---- Allocation failure: every decoder, every failing allocation -------- */

static void assert_alloc_failures(const cfg *c, const char *in, size_t len, size_t chunk)
{
    memset(&ref, 0, sizeof ref);
    run_cuts(c, in, len, NULL, 0, &ref);
    for (long n = 0;; n++) {
        dec d;
        dec_init(&d, c);
        memset(&got, 0, sizeof got);
        bool failed = false;
        tw_testing_fail_alloc_after(n);
        for (size_t at = 0; at < len;) {
            size_t end = at + chunk < len ? at + chunk : len;
            size_t consumed;
            size_t before = tw_rbuf_size(dec_buf(&d));
            size_t frames = got.n;
            int rc = dec_feed(&d, in + at, end - at, &got, &consumed);
            if (rc == TW_ENOMEM) {
                failed = true;
                cr_assert_leq(consumed, end - at);
                if (consumed == 0 && got.n == frames)
                    cr_assert_eq(tw_rbuf_size(dec_buf(&d)), before, "ENOMEM changed the decoder");
                tw_testing_fail_alloc_off();
                at += consumed; /* the caller feeds the rest again */
                continue;
            }
            cr_assert_eq(rc, ref.err ? rc : 0, "unexpected %d", rc);
            if (rc < 0) {
                got.err = rc;
                break;
            }
            at = end;
        }
        tw_testing_fail_alloc_off();
        dec_reset(&d);
        rec_assert_eq(&got, &ref, "after allocation failures");
        if (!failed)
            break;
        cr_assert_lt(n, 1000);
    }
}

TW_TEST(alloc, failures_lose_no_byte)
{
    cfg line = {.kind = K_LINE};
    assert_alloc_failures(&line, S("abc\r\ndefgh\r\nij\r\n\r\nklmnop\r\nq"), 3);
    assert_alloc_failures(&line, S("abc\r\ndefgh\r\nij\r\n\r\nklmnop\r\nq"), 7);
    cfg ns = {.kind = K_NS};
    assert_alloc_failures(&ns, S("3:abc,0:,11:hello world,2:xy,"), 4);
    assert_alloc_failures(&ns, S("3:abc,0:,11:hello world,2:xy,"), 1);
    cfg px = {.kind = K_PX, .prefix = 2};
    assert_alloc_failures(&px, "\0\3abc\0\0\0\5hello\0\1z", 17, 3);
    assert_alloc_failures(&px, "\0\3abc\0\0\0\5hello\0\1z", 17, 1);
}

/* ---- Netstrings ------------------------------------------------------- */

TW_TEST(netstrings, frames_every_split)
{
    cfg c = {.kind = K_NS};
    assert_split_invariant(&c, S("3:abc,0:,12:hello\r\nworld,1:,,"));
    const char *e[] = {"abc", "", "hello\r\nworld", ","};
    assert_frames(e, 4, 0);
    cr_assert_eq(ref.zero_copy, 3, "payloads wholly inside the input were copied");
}

static void assert_ns_error(const char *in, size_t len, size_t max, tw_netstring_error kind,
                            size_t frames)
{
    cfg c = {.kind = K_NS, .max = max};
    assert_split_invariant(&c, in, len);
    cr_assert_eq(ref.n, frames);
    cr_assert_eq(ref.err, kind == TW_NETSTRING_TOO_LONG ? TW_EMSGSIZE : TW_EINVAL);
    tw_netstring_decoder d;
    tw_netstring_decoder_init(&d, max);
    memset(&got, 0, sizeof got);
    size_t consumed;
    int rc = tw_netstring_decoder_feed(&d, in, len, rec_frame, &got, &consumed);
    cr_assert_eq(rc, ref.err);
    cr_assert_eq(tw_netstring_decoder_error(&d), kind, "kind %d, expected %d",
                 tw_netstring_decoder_error(&d), kind);
    cr_assert_lt(consumed, len);
    /* Sticky: later feeds take nothing and fail the same way. */
    cr_assert_eq(tw_netstring_decoder_feed(&d, S("1:a,"), rec_frame, &got, &consumed), rc);
    cr_assert_eq(consumed, 0);
    cr_assert_eq(got.n, frames);
    cr_assert_null(tw_rbuf_data(&d.buf), "a failed decoder owns memory");
    /* reset recovers. */
    tw_netstring_decoder_reset(&d);
    cr_assert_eq(tw_netstring_decoder_error(&d), TW_NETSTRING_OK);
    cr_assert_eq(tw_netstring_decoder_feed(&d, S("1:a,"), rec_frame, &got, &consumed), 0);
    cr_assert_eq(got.n, frames + 1);
    tw_netstring_decoder_reset(&d);
}

TW_TEST(netstrings, each_error_distinct)
{
    assert_ns_error(S("1:a,01:a,"), 0, TW_NETSTRING_LEADING_ZERO, 1);
    assert_ns_error(S("00:,"), 0, TW_NETSTRING_LEADING_ZERO, 0);
    assert_ns_error(S("1:a,x:"), 0, TW_NETSTRING_BAD_LENGTH, 1);
    assert_ns_error(S(":,"), 0, TW_NETSTRING_BAD_LENGTH, 0);
    assert_ns_error(S("12a:"), 0, TW_NETSTRING_BAD_LENGTH, 0);
    assert_ns_error(S("-1:"), 0, TW_NETSTRING_BAD_LENGTH, 0);
    assert_ns_error(S("0x"), 0, TW_NETSTRING_BAD_LENGTH, 0);
    assert_ns_error(S("100000:"), 0, TW_NETSTRING_TOO_LONG, 0);
    assert_ns_error(S("99999999999999999999999:"), 0, TW_NETSTRING_TOO_LONG, 0);
    assert_ns_error(S("2:ab,3:abc"), 2, TW_NETSTRING_TOO_LONG, 1);
    assert_ns_error(S("3:abcX"), 0, TW_NETSTRING_NO_COMMA, 0);
    assert_ns_error(S("0:;"), 0, TW_NETSTRING_NO_COMMA, 0);
    /* Distinct messages the protocol can log. */
    const char *m[5];
    for (int i = 0; i < 5; i++) {
        m[i] = tw_netstring_error_message((tw_netstring_error)i);
        cr_assert_not_null(m[i]);
        for (int j = 0; j < i; j++)
            cr_assert_str_neq(m[i], m[j]);
    }
    cr_assert(strstr(tw_netstring_error_message(TW_NETSTRING_LEADING_ZERO), "leading zero"));
}

TW_TEST(netstrings, max_exactly_and_bounded_memory)
{
    cfg c = {.kind = K_NS, .max = 5};
    assert_split_invariant(&c, S("5:12345,4:1234,"));
    const char *e[] = {"12345", "1234"};
    assert_frames(e, 2, 0);
}

TW_TEST(netstrings, encoder_round_trips)
{
    static char payload[300], out[400];
    for (size_t i = 0; i < sizeof payload; i++)
        payload[i] = (char)(i * 37 + 11);
    static char stream[4096];
    size_t used = 0;
    size_t sizes[] = {0, 1, 9, 10, 11, 99, 100, 299};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t n;
        size_t need = tw_netstring_encoded_len(sizes[i]);
        cr_assert_eq(tw_netstring_encode(payload, sizes[i], out, need - 1, &n), TW_ENOBUFS);
        cr_assert_eq(tw_netstring_encode(payload, sizes[i], out, sizeof out, &n), 0);
        cr_assert_eq(n, need);
        memcpy(stream + used, out, n);
        used += n;
    }
    cr_assert(memcmp(stream, "0:,1:", 5) == 0);
    cr_assert_eq(tw_netstring_encode(NULL, 3, out, sizeof out, NULL), TW_EINVAL);
    cfg c = {.kind = K_NS};
    assert_split_invariant(&c, stream, used);
    cr_assert_eq(ref.n, 8);
    for (size_t i = 0, off = 0; i < 8; off += sizes[i], i++) {
        cr_assert_eq(ref.lens[i], sizes[i]);
        cr_assert(memcmp(ref.bytes + off, payload, sizes[i]) == 0);
    }

    /* Into a write queue, small and large, with allocation failure. */
    static char big[20000];
    memset(big, 'q', sizeof big);
    for (long fail = 0;; fail++) {
        tw_wqueue q;
        tw_wqueue_init(&q);
        tw_testing_fail_alloc_after(fail);
        int rc = tw_netstring_write(&q, "abc", 3);
        if (rc == 0)
            rc = tw_netstring_write(&q, big, sizeof big);
        tw_testing_fail_alloc_off();
        if (rc == TW_ENOMEM) {
            cr_assert(tw_wqueue_size(&q) == 0 || tw_wqueue_size(&q) == 6, "a partial frame");
            tw_wqueue_clear(&q);
            cr_assert_lt(fail, 100);
            continue;
        }
        cr_assert_eq(rc, 0);
        cr_assert_eq(tw_wqueue_size(&q), 6 + tw_netstring_encoded_len(sizeof big));
        tw_netstring_decoder d;
        tw_netstring_decoder_init(&d, 0);
        memset(&got, 0, sizeof got);
        struct iovec iov[64];
        int niov = tw_wqueue_fill_iov(&q, iov, 64);
        for (int i = 0; i < niov; i++)
            cr_assert_eq(tw_netstring_decoder_feed(&d, iov[i].iov_base, iov[i].iov_len, rec_frame,
                                                   &got, NULL),
                         0);
        cr_assert_eq(got.n, 2);
        cr_assert_eq(got.lens[1], sizeof big);
        cr_assert(memcmp(got.bytes + 3, big, sizeof big) == 0);
        tw_netstring_decoder_reset(&d);
        tw_wqueue_clear(&q);
        break;
    }
    tw_wqueue_cache_trim();
}

/* ---- Length-prefixed strings ------------------------------------------ */

TW_TEST(prefixed, each_prefix_every_split)
{
    cfg c1 = {.kind = K_PX, .prefix = 1};
    assert_split_invariant(&c1, "\3abc\0\1z\2\0", 9);
    const char *e[] = {"abc", "", "z"};
    assert_frames(e, 3, 0);
    cfg c2 = {.kind = K_PX, .prefix = 2};
    assert_split_invariant(&c2, "\0\3abc\0\0\0\1z\0", 11);
    assert_frames(e, 3, 0);
    cfg c4 = {.kind = K_PX, .prefix = 4};
    assert_split_invariant(&c4, "\0\0\0\3abc\0\0\0\0\0\0\0\1z\0\0", 18);
    assert_frames(e, 3, 0);
    cr_assert_eq(ref.zero_copy, 2);
}

TW_TEST(prefixed, length_limit_exceeded_sticks)
{
    cfg c = {.kind = K_PX, .prefix = 2, .max = 4};
    assert_split_invariant(&c, "\0\4abcd\0\5abcde", 13);
    const char *e[] = {"abcd"};
    assert_frames(e, 1, TW_EMSGSIZE);

    tw_prefixed_decoder d;
    cr_assert_eq(tw_prefixed_decoder_init(&d, 3, 0), TW_EINVAL);
    cr_assert_eq(tw_prefixed_decoder_feed(&d, "a", 1, rec_frame, &got, NULL), TW_EINVAL);
    cr_assert_eq(tw_prefixed_decoder_init(&d, 1, 1000), 0);
    cr_assert_eq(d.max, 255, "a maximum above the prefix's was kept");
    tw_prefixed_decoder_set_max(&d, 2);
    memset(&got, 0, sizeof got);
    size_t consumed;
    cr_assert_eq(tw_prefixed_decoder_feed(&d, "\2ab\3abc", 7, rec_frame, &got, &consumed),
                 TW_EMSGSIZE);
    cr_assert_eq(consumed, 4);
    cr_assert_eq(got.n, 1);
    cr_assert_eq(tw_prefixed_decoder_feed(&d, "\0", 1, rec_frame, &got, &consumed), TW_EMSGSIZE);
    cr_assert_eq(consumed, 0);
    tw_prefixed_decoder_reset(&d);
    cr_assert_eq(tw_prefixed_decoder_feed(&d, "\0", 1, rec_frame, &got, &consumed), 0);
    cr_assert_eq(got.n, 2);
    tw_prefixed_decoder_reset(&d);
}

TW_TEST(prefixed, encoder_refuses_too_long_and_round_trips)
{
    static char payload[70000], out[70010];
    memset(payload, 'p', sizeof payload);
    size_t n;
    cr_assert_eq(tw_prefixed_encode(1, payload, 256, out, sizeof out, &n), TW_EMSGSIZE);
    cr_assert_eq(tw_prefixed_encode(2, payload, 65536, out, sizeof out, &n), TW_EMSGSIZE);
    cr_assert_eq(tw_prefixed_encode(3, payload, 1, out, sizeof out, &n), TW_EINVAL);
    cr_assert_eq(tw_prefixed_encode(2, payload, 10, out, 11, &n), TW_ENOBUFS);
    tw_wqueue q;
    tw_wqueue_init(&q);
    cr_assert_eq(tw_prefixed_write(&q, 1, payload, 256), TW_EMSGSIZE);
    cr_assert_eq(tw_wqueue_size(&q), 0);

    static char stream[1024];
    size_t used = 0;
    unsigned prefixes[] = {1, 2, 4};
    size_t sizes[] = {0, 1, 255, 3};
    for (int p = 0; p < 3; p++) {
        used = 0;
        for (int i = 0; i < 4; i++) {
            cr_assert_eq(
                tw_prefixed_encode(prefixes[p], payload, sizes[i], stream + used, 1024 - used, &n),
                0);
            cr_assert_eq(n, prefixes[p] + sizes[i]);
            used += n;
        }
        cfg c = {.kind = K_PX, .prefix = prefixes[p]};
        assert_split_invariant(&c, stream, used);
        cr_assert_eq(ref.n, 4);
        for (int i = 0; i < 4; i++)
            cr_assert_eq(ref.lens[i], sizes[i]);
    }
    cr_assert(memcmp(stream, "\0\0\0\0\0\0\0\1p", 9) == 0, "not big-endian");

    cr_assert_eq(tw_prefixed_write(&q, 2, payload, 65535), 0);
    cr_assert_eq(tw_prefixed_write(&q, 4, payload, 70000), 0);
    cr_assert_eq(tw_wqueue_size(&q), 2 + 65535 + 4 + 70000);
    struct iovec iov[64];
    cr_assert_gt(tw_wqueue_fill_iov(&q, iov, 64), 0);
    cr_assert(memcmp(iov[0].iov_base, "\xff\xff", 2) == 0);
    tw_wqueue_clear(&q);
    tw_wqueue_cache_trim();
}
