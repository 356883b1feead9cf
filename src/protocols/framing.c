/* Framing decoders and encoders (twisted.protocols.basic): see framing.h. */
#include <string.h>

#include <twine/error.h>
#include <twine/framing.h>

static void set_consumed(size_t *consumed, size_t n)
{
    if (consumed)
        *consumed = n;
}

/* Appends hdr, data and tail to q in one all-or-nothing append: small frames
 * go through a stack buffer, larger ones through a temporary one. */
static int append_frame(tw_wqueue *q, const void *hdr, size_t hlen, const void *data, size_t len,
                        const void *tail, size_t tlen)
{
    char small[4096];
    size_t total = hlen + len + tlen;
    if (total < len)
        return TW_EINVAL;
    char *buf = small;
    if (total > sizeof small) {
        buf = tw_malloc(total);
        if (!buf)
            return TW_ENOMEM;
    }
    if (hlen)
        memcpy(buf, hdr, hlen);
    if (len)
        memcpy(buf + hlen, data, len);
    if (tlen)
        memcpy(buf + hlen + len, tail, tlen);
    int rc = tw_wqueue_append(q, buf, total);
    if (buf != small)
        tw_free(buf);
    return rc;
}

/* ---- Lines ------------------------------------------------------------ */

void tw_line_decoder_init(tw_line_decoder *d)
{
    memset(d, 0, sizeof *d);
    d->max = TW_LINE_DEFAULT_MAX;
    d->delim[0] = '\r';
    d->delim[1] = '\n';
    d->delim_len = 2;
    /* The tail may hold a whole line plus all but one byte of the delimiter. */
    tw_rbuf_init(&d->buf, (size_t)d->max + TW_LINE_DELIMITER_MAX - 1);
}

int tw_line_decoder_set_delimiter(tw_line_decoder *d, const void *delim, size_t len)
{
    if (!d || !delim || len == 0 || len > TW_LINE_DELIMITER_MAX)
        return TW_EINVAL;
    if (tw_rbuf_size(&d->buf) > 0)
        return TW_EBUSY;
    memcpy(d->delim, delim, len);
    d->delim_len = (uint8_t)len;
    return 0;
}

void tw_line_decoder_set_max(tw_line_decoder *d, size_t max)
{
    if (max == 0)
        max = TW_LINE_DEFAULT_MAX;
    if (max > TW_LINE_MAX_LIMIT)
        max = TW_LINE_MAX_LIMIT;
    d->max = (uint32_t)max;
    tw_rbuf_set_max(&d->buf, max + TW_LINE_DELIMITER_MAX - 1);
}

const char *tw_line_decoder_buffered(const tw_line_decoder *d, size_t *len)
{
    *len = tw_rbuf_size(&d->buf);
    return tw_rbuf_data(&d->buf);
}

void tw_line_decoder_clear(tw_line_decoder *d)
{
    tw_rbuf_clear(&d->buf);
}

void tw_line_decoder_reset(tw_line_decoder *d)
{
    tw_rbuf_clear(&d->buf);
}

/* Offset of the first delimiter in p[0..n), or -1. */
static ptrdiff_t find_delim(const tw_line_decoder *d, const char *p, size_t n)
{
    const char *hit;
    if (d->delim_len == 1)
        hit = memchr(p, d->delim[0], n);
    else
        hit = memmem(p, n, d->delim, d->delim_len);
    return hit ? hit - p : -1;
}

/* The byte at i of held ++ rest. */
static char joined_at(const char *held, size_t hlen, const char *rest, size_t i)
{
    return i < hlen ? held[i] : rest[i - hlen];
}

/* How many bytes at the end of held ++ rest (total bytes) are a proper prefix
 * of the delimiter: they may yet begin it, so they do not count against the
 * maximum. */
static size_t partial_delim(const tw_line_decoder *d, const char *held, size_t hlen,
                            const char *rest, size_t total)
{
    size_t k = d->delim_len - 1u;
    if (k > total)
        k = total;
    for (; k > 0; k--) {
        size_t i;
        for (i = 0; i < k; i++)
            if (joined_at(held, hlen, rest, total - k + i) != d->delim[i])
                break;
        if (i == k)
            return k;
    }
    return 0;
}

static int line_too_long(tw_line_decoder *d, size_t *consumed, size_t pos)
{
    tw_rbuf_clear(&d->buf);
    set_consumed(consumed, pos);
    return TW_EMSGSIZE;
}

/* Delivers the held line (its first n bytes) and empties the buffer. */
static int deliver_held(tw_line_decoder *d, size_t n, tw_frame_fn fn, void *ctx)
{
    int stop = fn(ctx, tw_rbuf_data(&d->buf), n);
    tw_rbuf_clear(&d->buf);
    return stop;
}

int tw_line_decoder_feed(tw_line_decoder *d, const void *data, size_t len, tw_frame_fn on_line,
                         void *ctx, size_t *consumed)
{
    set_consumed(consumed, 0);
    if (!d || !on_line || (!data && len))
        return TW_EINVAL;
    const char *in = data;
    size_t pos = 0;
    size_t held = tw_rbuf_size(&d->buf);

    if (held > 0 && len > 0) {
        /* The held tail has no delimiter; one may begin in its last
         * delim_len - 1 bytes and end in the input. */
        const char *b = tw_rbuf_data(&d->buf);
        size_t dl = d->delim_len;
        size_t s = held >= dl - 1 ? held - (dl - 1) : 0;
        for (; s < held; s++) {
            size_t k = held - s; /* delimiter bytes already held */
            if (memcmp(b + s, d->delim, k) == 0 && len >= dl - k &&
                memcmp(in, d->delim + k, dl - k) == 0)
                break;
        }
        if (s < held) {
            if (s > d->max)
                return line_too_long(d, consumed, 0);
            pos = dl - (held - s);
            if (deliver_held(d, s, on_line, ctx)) {
                set_consumed(consumed, pos);
                return 1;
            }
        } else {
            ptrdiff_t p = find_delim(d, in, len);
            if (p >= 0) {
                if (held + (size_t)p > d->max)
                    return line_too_long(d, consumed, 0);
                int rc = tw_rbuf_append(&d->buf, in, (size_t)p);
                if (rc < 0)
                    return rc; /* TW_ENOMEM: nothing taken */
                pos = (size_t)p + dl;
                if (deliver_held(d, held + (size_t)p, on_line, ctx)) {
                    set_consumed(consumed, pos);
                    return 1;
                }
            } else {
                pos = 0; /* all of the input joins the held tail */
                goto tail;
            }
        }
    }

    /* Nothing held: lines wholly inside the input are slices of it. */
    while (pos < len) {
        ptrdiff_t p = find_delim(d, in + pos, len - pos);
        if (p < 0)
            break;
        if ((size_t)p > d->max)
            return line_too_long(d, consumed, pos);
        size_t at = pos;
        pos += (size_t)p + d->delim_len; /* before on_line, which may change it */
        int stop = on_line(ctx, in + at, (size_t)p);
        if (stop) {
            set_consumed(consumed, pos);
            return 1;
        }
    }

tail:;
    held = tw_rbuf_size(&d->buf);
    size_t n = len - pos;
    size_t total = held + n;
    if (total == 0) {
        set_consumed(consumed, len);
        return 0;
    }
    size_t k = partial_delim(d, tw_rbuf_data(&d->buf), held, in + pos, total);
    if (total - k > d->max)
        return line_too_long(d, consumed, pos);
    int rc = tw_rbuf_append(&d->buf, in + pos, n);
    if (rc < 0) {
        set_consumed(consumed, pos);
        return rc;
    }
    set_consumed(consumed, len);
    return 0;
}

/* ---- Netstrings ------------------------------------------------------- */

enum { NS_START, NS_ZERO, NS_DIGITS, NS_PAYLOAD, NS_COMMA, NS_FAILED };

static uint32_t clamp_u32(size_t max, uint32_t dflt)
{
    if (max == 0)
        return dflt;
    return max > UINT32_MAX ? UINT32_MAX : (uint32_t)max;
}

void tw_netstring_decoder_init(tw_netstring_decoder *d, size_t max)
{
    memset(d, 0, sizeof *d);
    d->max = clamp_u32(max, TW_NETSTRING_DEFAULT_MAX);
    d->state = NS_START;
    tw_rbuf_init(&d->buf, d->max);
}

void tw_netstring_decoder_set_max(tw_netstring_decoder *d, size_t max)
{
    d->max = clamp_u32(max, TW_NETSTRING_DEFAULT_MAX);
    tw_rbuf_set_max(&d->buf, d->max);
}

void tw_netstring_decoder_reset(tw_netstring_decoder *d)
{
    tw_rbuf_clear(&d->buf);
    d->need = 0;
    d->state = NS_START;
    d->error = TW_NETSTRING_OK;
}

tw_netstring_error tw_netstring_decoder_error(const tw_netstring_decoder *d)
{
    return (tw_netstring_error)d->error;
}

const char *tw_netstring_error_message(tw_netstring_error e)
{
    switch (e) {
    case TW_NETSTRING_OK:
        return "no error";
    case TW_NETSTRING_BAD_LENGTH:
        return "netstring length is not a decimal number followed by ':'";
    case TW_NETSTRING_LEADING_ZERO:
        return "netstring length has a leading zero";
    case TW_NETSTRING_TOO_LONG:
        return "netstring length is over the maximum";
    case TW_NETSTRING_NO_COMMA:
        return "netstring payload is not followed by ','";
    }
    return "unknown netstring error";
}

static int ns_code(tw_netstring_error e)
{
    return e == TW_NETSTRING_TOO_LONG ? TW_EMSGSIZE : TW_EINVAL;
}

static int ns_fail(tw_netstring_decoder *d, tw_netstring_error e, size_t *consumed, size_t pos)
{
    tw_rbuf_clear(&d->buf);
    d->state = NS_FAILED;
    d->error = (uint8_t)e;
    set_consumed(consumed, pos);
    return ns_code(e);
}

int tw_netstring_decoder_feed(tw_netstring_decoder *d, const void *data, size_t len,
                              tw_frame_fn on_string, void *ctx, size_t *consumed)
{
    set_consumed(consumed, 0);
    if (!d || !on_string || (!data && len))
        return TW_EINVAL;
    if (d->state == NS_FAILED)
        return ns_code((tw_netstring_error)d->error);
    const char *in = data;
    size_t pos = 0;
    while (pos < len) {
        char c = in[pos];
        switch (d->state) {
        case NS_START:
            if (c == '0') {
                d->need = 0;
                d->state = NS_ZERO;
            } else if (c >= '1' && c <= '9') {
                d->need = (uint32_t)(c - '0');
                if (d->need > d->max)
                    return ns_fail(d, TW_NETSTRING_TOO_LONG, consumed, pos);
                d->state = NS_DIGITS;
            } else {
                return ns_fail(d, TW_NETSTRING_BAD_LENGTH, consumed, pos);
            }
            pos++;
            break;
        case NS_ZERO:
            if (c >= '0' && c <= '9')
                return ns_fail(d, TW_NETSTRING_LEADING_ZERO, consumed, pos);
            if (c != ':')
                return ns_fail(d, TW_NETSTRING_BAD_LENGTH, consumed, pos);
            d->state = NS_PAYLOAD;
            pos++;
            break;
        case NS_DIGITS:
            if (c >= '0' && c <= '9') {
                uint64_t n = (uint64_t)d->need * 10 + (uint64_t)(c - '0');
                if (n > d->max)
                    return ns_fail(d, TW_NETSTRING_TOO_LONG, consumed, pos);
                d->need = (uint32_t)n;
            } else if (c == ':') {
                d->state = NS_PAYLOAD;
            } else {
                return ns_fail(d, TW_NETSTRING_BAD_LENGTH, consumed, pos);
            }
            pos++;
            break;
        case NS_PAYLOAD: {
            size_t held = tw_rbuf_size(&d->buf);
            size_t avail = len - pos;
            if (held == 0 && avail > d->need) {
                /* Payload and comma both here: deliver a slice. */
                if (in[pos + d->need] != ',')
                    return ns_fail(d, TW_NETSTRING_NO_COMMA, consumed, pos + d->need);
                size_t at = pos;
                pos += (size_t)d->need + 1;
                d->state = NS_START;
                if (on_string(ctx, in + at, d->need)) {
                    set_consumed(consumed, pos);
                    return 1;
                }
                break;
            }
            size_t take = d->need - held;
            if (take > avail)
                take = avail;
            int rc = tw_rbuf_append(&d->buf, in + pos, take);
            if (rc < 0) {
                set_consumed(consumed, pos);
                return rc;
            }
            pos += take;
            if (tw_rbuf_size(&d->buf) == d->need)
                d->state = NS_COMMA;
            break;
        }
        case NS_COMMA: {
            if (c != ',')
                return ns_fail(d, TW_NETSTRING_NO_COMMA, consumed, pos);
            pos++;
            d->state = NS_START;
            int stop = on_string(ctx, tw_rbuf_data(&d->buf), tw_rbuf_size(&d->buf));
            tw_rbuf_clear(&d->buf);
            if (stop) {
                set_consumed(consumed, pos);
                return 1;
            }
            break;
        }
        default:
            return TW_EINVAL;
        }
    }
    set_consumed(consumed, len);
    return 0;
}

size_t tw_netstring_encoded_len(size_t len)
{
    size_t digits = 1;
    for (size_t n = len; n >= 10; n /= 10)
        digits++;
    return digits + 1 + len + 1;
}

/* Writes "LEN:" into hdr (at least 22 bytes); returns its length. */
static size_t ns_header(size_t len, char *hdr)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + len % 10);
        len /= 10;
    } while (len);
    for (size_t i = 0; i < n; i++)
        hdr[i] = tmp[n - 1 - i];
    hdr[n] = ':';
    return n + 1;
}

int tw_netstring_encode(const void *data, size_t len, void *out, size_t size, size_t *out_len)
{
    if ((!data && len) || (!out && size))
        return TW_EINVAL;
    size_t need = tw_netstring_encoded_len(len);
    if (need < len || size < need)
        return TW_ENOBUFS;
    char *o = out;
    size_t h = ns_header(len, o);
    if (len)
        memcpy(o + h, data, len);
    o[h + len] = ',';
    if (out_len)
        *out_len = need;
    return 0;
}

int tw_netstring_write(tw_wqueue *q, const void *data, size_t len)
{
    if (!q || (!data && len))
        return TW_EINVAL;
    char hdr[24];
    size_t h = ns_header(len, hdr);
    return append_frame(q, hdr, h, data, len, ",", 1);
}

/* ---- Length-prefixed strings ------------------------------------------ */

enum { PX_PREFIX, PX_PAYLOAD, PX_FAILED };

uint32_t tw_prefixed_limit(unsigned prefix_bytes)
{
    switch (prefix_bytes) {
    case 1:
        return UINT8_MAX;
    case 2:
        return UINT16_MAX;
    case 4:
        return UINT32_MAX;
    default:
        return 0;
    }
}

static uint32_t px_max(unsigned prefix, size_t max)
{
    uint32_t limit = tw_prefixed_limit(prefix);
    return (max == 0 || max > limit) ? limit : (uint32_t)max;
}

int tw_prefixed_decoder_init(tw_prefixed_decoder *d, unsigned prefix_bytes, size_t max)
{
    memset(d, 0, sizeof *d);
    if (tw_prefixed_limit(prefix_bytes) == 0) {
        d->state = PX_FAILED;
        return TW_EINVAL;
    }
    d->prefix = (uint8_t)prefix_bytes;
    d->max = px_max(prefix_bytes, max);
    d->state = PX_PREFIX;
    tw_rbuf_init(&d->buf, d->max);
    return 0;
}

void tw_prefixed_decoder_set_max(tw_prefixed_decoder *d, size_t max)
{
    if (d->prefix == 0)
        return;
    d->max = px_max(d->prefix, max);
    tw_rbuf_set_max(&d->buf, d->max);
}

void tw_prefixed_decoder_reset(tw_prefixed_decoder *d)
{
    tw_rbuf_clear(&d->buf);
    d->need = 0;
    d->have = 0;
    if (d->prefix)
        d->state = PX_PREFIX;
}

int tw_prefixed_decoder_feed(tw_prefixed_decoder *d, const void *data, size_t len,
                             tw_frame_fn on_string, void *ctx, size_t *consumed)
{
    set_consumed(consumed, 0);
    if (!d || !on_string || (!data && len) || d->prefix == 0)
        return TW_EINVAL;
    if (d->state == PX_FAILED)
        return TW_EMSGSIZE;
    const unsigned char *in = data;
    size_t pos = 0;
    for (;;) {
        if (d->state == PX_PREFIX) {
            while (d->have < d->prefix && pos < len)
                d->hdr[d->have++] = in[pos++];
            if (d->have < d->prefix)
                break;
            uint32_t n = 0;
            for (unsigned i = 0; i < d->prefix; i++)
                n = (n << 8) | d->hdr[i];
            d->have = 0;
            if (n > d->max) {
                d->state = PX_FAILED;
                set_consumed(consumed, pos);
                return TW_EMSGSIZE;
            }
            d->need = n;
            d->state = PX_PAYLOAD;
        }
        /* PX_PAYLOAD */
        size_t held = tw_rbuf_size(&d->buf);
        size_t avail = len - pos;
        if (held == 0 && avail >= d->need) {
            size_t at = pos;
            pos += d->need;
            d->state = PX_PREFIX;
            if (on_string(ctx, (const char *)in + at, d->need)) {
                set_consumed(consumed, pos);
                return 1;
            }
            continue;
        }
        if (avail == 0)
            break;
        size_t take = d->need - held;
        if (take > avail)
            take = avail;
        int rc = tw_rbuf_append(&d->buf, in + pos, take);
        if (rc < 0) {
            set_consumed(consumed, pos);
            return rc;
        }
        pos += take;
        if (tw_rbuf_size(&d->buf) < d->need)
            break;
        d->state = PX_PREFIX;
        int stop = on_string(ctx, tw_rbuf_data(&d->buf), d->need);
        tw_rbuf_clear(&d->buf);
        if (stop) {
            set_consumed(consumed, pos);
            return 1;
        }
    }
    set_consumed(consumed, len);
    return 0;
}

static size_t px_header(unsigned prefix, size_t len, unsigned char *hdr)
{
    for (unsigned i = 0; i < prefix; i++)
        hdr[i] = (unsigned char)(len >> (8 * (prefix - 1 - i)));
    return prefix;
}

int tw_prefixed_encode(unsigned prefix_bytes, const void *data, size_t len, void *out, size_t size,
                       size_t *out_len)
{
    uint32_t limit = tw_prefixed_limit(prefix_bytes);
    if (limit == 0 || (!data && len) || (!out && size))
        return TW_EINVAL;
    if (len > limit)
        return TW_EMSGSIZE;
    if (size < prefix_bytes + len)
        return TW_ENOBUFS;
    unsigned char *o = out;
    px_header(prefix_bytes, len, o);
    if (len)
        memcpy(o + prefix_bytes, data, len);
    if (out_len)
        *out_len = prefix_bytes + len;
    return 0;
}

int tw_prefixed_write(tw_wqueue *q, unsigned prefix_bytes, const void *data, size_t len)
{
    uint32_t limit = tw_prefixed_limit(prefix_bytes);
    if (!q || limit == 0 || (!data && len))
        return TW_EINVAL;
    if (len > limit)
        return TW_EMSGSIZE;
    unsigned char hdr[4];
    size_t h = px_header(prefix_bytes, len, hdr);
    return append_frame(q, hdr, h, data, len, NULL, 0);
}
