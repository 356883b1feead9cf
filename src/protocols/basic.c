/* twisted.protocols.basic's receivers over the framing decoders: the
 * protocol half (feeding, raw mode, limits, closing, sending). */
#include <twine/alloc.h>
#include <twine/basic.h>
#include <twine/error.h>
#include <twine/failure.h>
#include <twine/log.h>
#include <twine/transport.h>

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define NS "twine.basic"

/* Frames up to this size are assembled on the stack before the write. */
#define SEND_STACK 512

enum kind { K_NONE, K_LINE, K_NETSTRING, K_INT };

static enum kind kind_of(const tw_protocol *p)
{
    if (!p || !p->ops)
        return K_NONE;
    if (p->ops->data_received == tw_line_receiver_data_received)
        return K_LINE;
    if (p->ops->data_received == tw_netstring_receiver_data_received)
        return K_NETSTRING;
    if (p->ops->data_received == tw_int_receiver_data_received)
        return K_INT;
    return K_NONE;
}

/* The receiver head is the first member of each receiver, whose first member
 * is the protocol. */
static tw_basic_receiver *rx_of(tw_protocol *p)
{
    return (tw_basic_receiver *)p;
}

static void close_rx(tw_protocol *p)
{
    rx_of(p)->disconnecting = true;
    if (p->transport)
        tw_transport_lose_connection(p->transport);
}

int tw_basic_lose_connection(tw_protocol *p)
{
    if (kind_of(p) == K_NONE)
        return TW_EINVAL;
    rx_of(p)->disconnecting = true;
    return p->transport ? tw_transport_lose_connection(p->transport) : TW_ENOTCONN;
}

bool tw_basic_disconnecting(const tw_protocol *p)
{
    return kind_of(p) != K_NONE && ((const tw_basic_receiver *)p)->disconnecting;
}

static void rx_setup(tw_basic_receiver *rx)
{
    tw_rbuf_init(&rx->pending, SIZE_MAX);
    rx->ready = true;
}

/* Bytes that arrived while a chunk is being handled, or while the receiver
 * is paused, wait here. */
static int rx_queue(tw_protocol *p, const char *data, size_t len)
{
    int rc = tw_rbuf_append(&rx_of(p)->pending, data, len);
    if (rc < 0) {
        tw_log_error(NS, "out of memory queueing %zu bytes received: closing the connection", len);
        close_rx(p);
    }
    return rc;
}

/* A handler takes a chunk and returns how many bytes at its end it left
 * unhandled because the receiver was paused in the middle of it. */
typedef size_t (*rx_handler)(tw_protocol *p, const char *data, size_t len);

/* Puts the rest of a chunk the receiver paused in (data[0..len)) back in
 * front of what was queued meanwhile. `chunk` is the queued chunk that data
 * points into, or NULL when data is borrowed from the transport: then it is
 * copied, otherwise the chunk is kept (no copy of the rest). */
static void rx_hold(tw_protocol *p, const char *data, size_t len, tw_rbuf *chunk)
{
    tw_basic_receiver *rx = rx_of(p);
    tw_rbuf front;
    if (chunk) {
        front = *chunk;
        tw_rbuf_init(chunk, SIZE_MAX);
        tw_rbuf_consume(&front, tw_rbuf_size(&front) - len);
    } else {
        tw_rbuf_init(&front, SIZE_MAX);
        if (tw_rbuf_append(&front, data, len) < 0)
            goto oom;
    }
    if (tw_rbuf_size(&rx->pending) &&
        tw_rbuf_append(&front, tw_rbuf_data(&rx->pending), tw_rbuf_size(&rx->pending)) < 0) {
        tw_rbuf_clear(&front);
        goto oom;
    }
    tw_rbuf_clear(&rx->pending);
    rx->pending = front;
    return;
oom:
    tw_log_error(
        NS, "out of memory holding %zu bytes received while paused: closing the connection", len);
    close_rx(p);
}

/* Runs handle over data, then over what was queued meanwhile, until nothing
 * is left or the receiver stopped or paused (Twisted's _busyReceiving and
 * paused). data may be empty: resuming delivers what was held. */
static void rx_receive(tw_protocol *p, const char *data, size_t len, rx_handler handle)
{
    tw_basic_receiver *rx = rx_of(p);
    if (rx->disconnecting || (!data && len))
        return;
    if (rx->busy || rx->paused || tw_rbuf_size(&rx->pending)) {
        /* Behind what is queued already (bytes held while paused, raw
         * mode's set-aside line). */
        if ((len && rx_queue(p, data, len) < 0) || rx->busy || rx->paused)
            return;
        len = 0;
    }
    rx->busy = true;
    if (len) {
        size_t left = handle(p, data, len);
        if (left && !rx->disconnecting)
            rx_hold(p, data + len - left, left, NULL);
    }
    while (!rx->disconnecting && !rx->paused && tw_rbuf_size(&rx->pending)) {
        tw_rbuf chunk = rx->pending;
        tw_rbuf_init(&rx->pending, SIZE_MAX);
        size_t left = handle(p, tw_rbuf_data(&chunk), tw_rbuf_size(&chunk));
        if (left && !rx->disconnecting)
            rx_hold(p, tw_rbuf_data(&chunk) + tw_rbuf_size(&chunk) - left, left, &chunk);
        tw_rbuf_clear(&chunk);
    }
    if (rx->disconnecting)
        tw_rbuf_clear(&rx->pending); /* dropped */
    rx->busy = false;
}

static int send_frame(tw_protocol *p, size_t total,
                      int (*encode)(const void *arg, void *out, size_t size), const void *arg)
{
    if (!p->transport)
        return TW_EINVAL;
    char stack[SEND_STACK];
    char *buf = total <= sizeof stack ? stack : tw_malloc(total);
    if (!buf)
        return TW_ENOMEM;
    int rc = encode(arg, buf, total);
    if (rc == 0)
        rc = tw_transport_write(p->transport, buf, total);
    if (buf != stack)
        tw_free(buf);
    return rc;
}

/* ---- Lines */

static tw_line_receiver *lr_of(tw_protocol *p)
{
    return (tw_line_receiver *)p;
}

static const tw_line_receiver_ops *lr_ops(const tw_protocol *p)
{
    return (const tw_line_receiver_ops *)p->ops;
}

/* LineOnlyReceiver applies MAX_LENGTH itself: its decoder takes lines of
 * any length (TW_LINE_MAX_LIMIT), so that a long line reaches the hook
 * alone and whole, and the receiver skips the rest of a long line that was
 * still partial. Between reads the decoder still holds no more than the
 * maximum (plus a partial delimiter): the receiver checks it after each
 * chunk. */
static void lr_set_max(tw_line_receiver *lr, size_t max)
{
    lr->max = max ? max : TW_LINE_DEFAULT_MAX;
    if (lr->max > TW_LINE_MAX_LIMIT)
        lr->max = TW_LINE_MAX_LIMIT;
    tw_line_decoder_set_max(&lr->dec, lr_ops(&lr->rx.base)->line_only ? TW_LINE_MAX_LIMIT : max);
}

static void lr_setup(tw_line_receiver *lr)
{
    const tw_line_receiver_ops *ops = lr_ops(&lr->rx.base);
    tw_line_decoder_init(&lr->dec);
    lr->delim_len = 2;
    memcpy(lr->delim, "\r\n", 2);
    if (ops->delimiter) {
        size_t n = ops->delimiter_len ? ops->delimiter_len : strlen(ops->delimiter);
        if (tw_line_decoder_set_delimiter(&lr->dec, ops->delimiter, n) == 0) {
            lr->delim_len = (uint8_t)n;
            memcpy(lr->delim, ops->delimiter, n);
        } else {
            tw_log_warn(NS, "bad line delimiter (%zu bytes): using \"\\r\\n\"", n);
        }
    }
    lr_set_max(lr, ops->max_length);
    rx_setup(&lr->rx);
}

void tw_line_receiver_init(tw_line_receiver *lr, const tw_line_receiver_ops *ops)
{
    memset(lr, 0, sizeof *lr);
    tw_protocol_init(&lr->rx.base, &ops->protocol);
    lr_setup(lr);
}

void tw_line_receiver_connection_made(tw_protocol *p)
{
    tw_line_receiver *lr = lr_of(p);
    if (!lr->rx.ready)
        lr_setup(lr);
    if (lr_ops(p)->connection_made)
        lr_ops(p)->connection_made(p);
}

static void line_too_long(tw_protocol *p, const char *data, size_t len);

static int on_line(void *ctx, const char *line, size_t len)
{
    tw_line_receiver *lr = ctx;
    tw_protocol *p = &lr->rx.base;
    lr->cur_off += (long long)(len + lr->delim_len);
    if (lr->rx.disconnecting)
        return 1;
    if (lr->skipping)
        lr->skipping = false; /* the end of a long line handed over already */
    else if (lr_ops(p)->line_only && len > lr->max)
        line_too_long(p, line, len);
    else
        lr_ops(p)->line_received(p, line, len);
    return lr->rx.disconnecting || lr->rx.paused || lr->raw || lr->cleared || lr->delim_pending;
}

static void line_too_long(tw_protocol *p, const char *data, size_t len)
{
    if (lr_ops(p)->line_length_exceeded) {
        lr_ops(p)->line_length_exceeded(p, data, len);
        return;
    }
    tw_log_warn(NS, "line longer than %zu bytes received: closing the connection", lr_of(p)->max);
    close_rx(p);
}

/* How many bytes at the end of b[0..n) may begin the delimiter. */
static size_t delim_start(const tw_line_receiver *lr, const char *b, size_t n)
{
    size_t k = lr->delim_len - 1u;
    if (k > n)
        k = n;
    for (; k > 0; k--)
        if (memcmp(b + n - k, lr->delim, k) == 0)
            return k;
    return 0;
}

/* LineOnlyReceiver, after a chunk whose bytes the decoder all took: a
 * partial line longer than the maximum (not counting what may begin the
 * delimiter, so that the verdict does not depend on the split) goes to the
 * hook, all of it that has arrived, and the rest of that line is skipped;
 * while skipping, only what may begin the delimiter is kept. */
static void only_check_tail(tw_protocol *p)
{
    tw_line_receiver *lr = lr_of(p);
    size_t n;
    const char *held = tw_line_decoder_buffered(&lr->dec, &n);
    size_t k = delim_start(lr, held, n);
    if (!lr->skipping) {
        if (n - k <= lr->max)
            return;
        lr->skipping = true;
        line_too_long(p, held, n);
        if (lr->rx.disconnecting)
            return;
        held = tw_line_decoder_buffered(&lr->dec, &n); /* the hook may have cleared it */
        k = delim_start(lr, held, n);
    }
    if (k == n)
        return;
    char keep[TW_LINE_DELIMITER_MAX];
    memcpy(keep, held + n - k, k);
    tw_line_decoder_clear(&lr->dec);
    if (k && tw_line_decoder_feed(&lr->dec, keep, k, on_line, lr, NULL) < 0) {
        tw_log_error(NS, "cannot hold a partial line (%s): closing the connection",
                     tw_strerror(TW_ENOMEM));
        close_rx(p);
    }
}

static size_t lr_handle(tw_protocol *p, const char *data, size_t len)
{
    tw_line_receiver *lr = lr_of(p);
    while (len && !lr->rx.disconnecting) {
        if (lr->rx.paused)
            return len;
        if (lr->raw) {
            if (lr_ops(p)->raw_data_received)
                lr_ops(p)->raw_data_received(p, data, len);
            return 0;
        }
        size_t held;
        tw_line_decoder_buffered(&lr->dec, &held);
        lr->cur = data;
        lr->cur_len = len;
        lr->cur_off = -(long long)held;
        lr->in_feed = true;
        size_t consumed = 0;
        int rc = tw_line_decoder_feed(&lr->dec, data, len, on_line, lr, &consumed);
        lr->in_feed = false;
        if (lr->cleared) {
            lr->cleared = false; /* the rest was taken */
            return 0;
        }
        if (lr->delim_pending) {
            lr->delim_pending = false;
            tw_line_decoder_set_delimiter(&lr->dec, lr->delim, lr->delim_len);
        }
        if (rc == 1) {
            data += consumed;
            len -= consumed;
        } else if (rc == TW_EMSGSIZE) {
            line_too_long(p, data + consumed, len - consumed);
            return 0;
        } else if (rc < 0) {
            tw_log_error(NS, "cannot hold a partial line (%s): closing the connection",
                         tw_strerror(rc));
            close_rx(p);
            return 0;
        } else {
            if (lr_ops(p)->line_only)
                only_check_tail(p);
            return 0;
        }
    }
    return 0;
}

void tw_line_receiver_data_received(tw_protocol *p, const char *data, size_t len)
{
    if (!lr_of(p)->rx.ready)
        lr_setup(lr_of(p));
    rx_receive(p, data, len, lr_handle);
}

void tw_line_receiver_connection_lost(tw_protocol *p, tw_failure *reason)
{
    if (lr_ops(p)->connection_lost)
        lr_ops(p)->connection_lost(p, reason);
}

void tw_line_receiver_free(tw_protocol *p)
{
    tw_line_receiver *lr = lr_of(p);
    tw_line_decoder_reset(&lr->dec);
    tw_rbuf_clear(&lr->rx.pending);
    if (lr_ops(p)->free)
        lr_ops(p)->free(p);
}

int tw_line_receiver_send_line(tw_protocol *p, const void *line, size_t len)
{
    if (kind_of(p) != K_LINE || !p->transport || (!line && len))
        return TW_EINVAL;
    tw_line_receiver *lr = lr_of(p);
    if (!lr->rx.ready)
        lr_setup(lr);
    struct iovec iov[2] = {
        {.iov_base = (void *)line, .iov_len = len},
        {.iov_base = lr->delim, .iov_len = lr->delim_len},
    };
    return len ? tw_transport_write_sequence(p->transport, iov, 2)
               : tw_transport_write_sequence(p->transport, iov + 1, 1);
}

int tw_line_receiver_set_raw_mode(tw_protocol *p)
{
    if (kind_of(p) != K_LINE)
        return TW_EINVAL;
    tw_line_receiver *lr = lr_of(p);
    if (lr_ops(p)->line_only)
        return TW_ENOTSUP;
    if (!lr->rx.ready)
        lr_setup(lr);
    if (lr->raw)
        return 0;
    size_t held = 0;
    /* Inside a line callback the decoder's buffer is that line: nothing
     * partial is held, and the rest of the chunk goes raw. */
    const char *h = lr->in_feed ? NULL : tw_line_decoder_buffered(&lr->dec, &held);
    if (held) {
        /* Set aside, ahead of anything queued: it came first. */
        tw_rbuf keep;
        tw_rbuf_init(&keep, SIZE_MAX);
        if (tw_rbuf_append(&keep, h, held) < 0 ||
            tw_rbuf_append(&keep, tw_rbuf_data(&lr->rx.pending), tw_rbuf_size(&lr->rx.pending)) <
                0) {
            tw_rbuf_clear(&keep);
            return TW_ENOMEM;
        }
        tw_rbuf_clear(&lr->rx.pending);
        lr->rx.pending = keep;
        tw_line_decoder_clear(&lr->dec);
    }
    lr->raw = true;
    return 0;
}

int tw_line_receiver_set_line_mode(tw_protocol *p, const void *extra, size_t len)
{
    if (kind_of(p) != K_LINE || (!extra && len))
        return TW_EINVAL;
    tw_line_receiver *lr = lr_of(p);
    lr->raw = false;
    if (!len)
        return 0;
    if (lr->rx.busy)
        return rx_queue(p, extra, len) < 0 ? TW_ENOMEM : 0;
    tw_line_receiver_data_received(p, extra, len);
    return 0;
}

void tw_line_receiver_clear_line_buffer(tw_protocol *p,
                                        void (*take)(void *ctx, const char *data, size_t len),
                                        void *ctx)
{
    if (kind_of(p) != K_LINE)
        return;
    tw_line_receiver *lr = lr_of(p);
    size_t n;
    if (lr->in_feed) {
        /* The decoder holds the line being delivered, not a partial one. */
        if (lr->cur_off >= 0 && (size_t)lr->cur_off < lr->cur_len && take)
            take(ctx, lr->cur + lr->cur_off, lr->cur_len - (size_t)lr->cur_off);
        lr->cleared = true;
    } else {
        const char *held = tw_line_decoder_buffered(&lr->dec, &n);
        if (n && take)
            take(ctx, held, n);
        tw_line_decoder_clear(&lr->dec);
    }
    n = tw_rbuf_size(&lr->rx.pending);
    if (n && take)
        take(ctx, tw_rbuf_data(&lr->rx.pending), n);
    tw_rbuf_clear(&lr->rx.pending);
}

int tw_line_receiver_set_delimiter(tw_protocol *p, const void *delim, size_t len)
{
    if (kind_of(p) != K_LINE)
        return TW_EINVAL;
    tw_line_receiver *lr = lr_of(p);
    if (!lr->rx.ready)
        lr_setup(lr);
    int rc;
    if (lr->in_feed) {
        /* The decoder refuses a new delimiter while it holds the line being
         * delivered (a line that spanned chunks): stop the feed and apply it
         * before the next line (lr_handle). */
        rc = delim && len > 0 && len <= TW_LINE_DELIMITER_MAX ? 0 : TW_EINVAL;
        lr->delim_pending = rc == 0;
    } else {
        rc = tw_line_decoder_set_delimiter(&lr->dec, delim, len);
    }
    if (rc == 0) {
        lr->delim_len = (uint8_t)len;
        memcpy(lr->delim, delim, len);
    }
    return rc;
}

int tw_line_receiver_set_max_length(tw_protocol *p, size_t max)
{
    if (kind_of(p) != K_LINE)
        return TW_EINVAL;
    tw_line_receiver *lr = lr_of(p);
    if (!lr->rx.ready)
        lr_setup(lr);
    lr_set_max(lr, max);
    return 0;
}

/* ---- Netstrings */

static tw_netstring_receiver *nr_of(tw_protocol *p)
{
    return (tw_netstring_receiver *)p;
}

static const tw_netstring_receiver_ops *nr_ops(const tw_protocol *p)
{
    return (const tw_netstring_receiver_ops *)p->ops;
}

static void nr_setup(tw_netstring_receiver *nr)
{
    tw_netstring_decoder_init(&nr->dec, nr_ops(&nr->rx.base)->max_length);
    rx_setup(&nr->rx);
}

void tw_netstring_receiver_init(tw_netstring_receiver *nr, const tw_netstring_receiver_ops *ops)
{
    memset(nr, 0, sizeof *nr);
    tw_protocol_init(&nr->rx.base, &ops->protocol);
    nr_setup(nr);
}

void tw_netstring_receiver_connection_made(tw_protocol *p)
{
    if (!nr_of(p)->rx.ready)
        nr_setup(nr_of(p));
    if (nr_ops(p)->connection_made)
        nr_ops(p)->connection_made(p);
}

static int on_string(void *ctx, const char *data, size_t len)
{
    tw_protocol *p = ctx;
    if (rx_of(p)->disconnecting)
        return 1;
    /* Both string ops tables put string_received right after the protocol. */
    if (kind_of(p) == K_NETSTRING)
        nr_ops(p)->string_received(p, data, len);
    else
        ((const tw_int_receiver_ops *)p->ops)->string_received(p, data, len);
    return rx_of(p)->disconnecting || rx_of(p)->paused;
}

static size_t nr_handle(tw_protocol *p, const char *data, size_t len)
{
    tw_netstring_receiver *nr = nr_of(p);
    while (len && !nr->rx.disconnecting && !nr->broken_peer) {
        if (nr->rx.paused)
            return len;
        size_t consumed = 0;
        int rc = tw_netstring_decoder_feed(&nr->dec, data, len, on_string, p, &consumed);
        if (rc == 1) {
            data += consumed;
            len -= consumed;
            continue;
        }
        if (rc == TW_ENOMEM) {
            tw_log_error(NS, "cannot hold a partial netstring: closing the connection");
            close_rx(p);
        } else if (rc < 0) {
            nr->broken_peer = true;
            nr->error = tw_netstring_decoder_error(&nr->dec);
            tw_log_warn(NS, "broken peer: %s: closing the connection",
                        tw_netstring_error_message(nr->error));
            close_rx(p);
        }
        return 0;
    }
    return 0;
}

void tw_netstring_receiver_data_received(tw_protocol *p, const char *data, size_t len)
{
    if (!nr_of(p)->rx.ready)
        nr_setup(nr_of(p));
    rx_receive(p, data, len, nr_handle);
}

void tw_netstring_receiver_connection_lost(tw_protocol *p, tw_failure *reason)
{
    if (nr_ops(p)->connection_lost)
        nr_ops(p)->connection_lost(p, reason);
}

void tw_netstring_receiver_free(tw_protocol *p)
{
    tw_netstring_decoder_reset(&nr_of(p)->dec);
    tw_rbuf_clear(&nr_of(p)->rx.pending);
    if (nr_ops(p)->free)
        nr_ops(p)->free(p);
}

struct payload {
    const void *data;
    size_t len;
    unsigned prefix;
};

static int ns_encode(const void *arg, void *out, size_t size)
{
    const struct payload *pl = arg;
    return tw_netstring_encode(pl->data, pl->len, out, size, NULL);
}

int tw_netstring_receiver_send_string(tw_protocol *p, const void *data, size_t len)
{
    if (kind_of(p) != K_NETSTRING || (!data && len))
        return TW_EINVAL;
    size_t total = tw_netstring_encoded_len(len);
    if (total < len)
        return TW_EINVAL;
    struct payload pl = {data, len, 0};
    return send_frame(p, total, ns_encode, &pl);
}

/* ---- Length-prefixed strings */

static tw_int_receiver *ir_of(tw_protocol *p)
{
    return (tw_int_receiver *)p;
}

static const tw_int_receiver_ops *ir_ops(const tw_protocol *p)
{
    return (const tw_int_receiver_ops *)p->ops;
}

static unsigned ir_prefix(const tw_protocol *p)
{
    return ir_ops(p)->prefix_bytes ? ir_ops(p)->prefix_bytes : 4;
}

static int ir_setup(tw_int_receiver *ir)
{
    tw_protocol *p = &ir->rx.base;
    size_t max = ir_ops(p)->max_length ? ir_ops(p)->max_length : TW_INT_RECEIVER_DEFAULT_MAX;
    int rc = tw_prefixed_decoder_init(&ir->dec, ir_prefix(p), max);
    rx_setup(&ir->rx);
    return rc;
}

int tw_int_receiver_init(tw_int_receiver *ir, const tw_int_receiver_ops *ops)
{
    memset(ir, 0, sizeof *ir);
    tw_protocol_init(&ir->rx.base, &ops->protocol);
    return ir_setup(ir);
}

void tw_int_receiver_connection_made(tw_protocol *p)
{
    if (!ir_of(p)->rx.ready)
        ir_setup(ir_of(p));
    if (tw_prefixed_limit(ir_prefix(p)) == 0) {
        tw_log_error(NS, "bad prefix size %u for a length-prefixed receiver: closing",
                     ir_prefix(p));
        close_rx(p);
    }
    if (ir_ops(p)->connection_made)
        ir_ops(p)->connection_made(p);
}

static size_t ir_handle(tw_protocol *p, const char *data, size_t len)
{
    tw_int_receiver *ir = ir_of(p);
    while (len && !ir->rx.disconnecting && !ir->too_long) {
        if (ir->rx.paused)
            return len;
        size_t consumed = 0;
        int rc = tw_prefixed_decoder_feed(&ir->dec, data, len, on_string, p, &consumed);
        if (rc == 1) {
            data += consumed;
            len -= consumed;
            continue;
        }
        if (rc == TW_EMSGSIZE) {
            ir->too_long = true;
            size_t max =
                ir_ops(p)->max_length ? ir_ops(p)->max_length : TW_INT_RECEIVER_DEFAULT_MAX;
            if (max > tw_prefixed_limit(ir_prefix(p)))
                max = tw_prefixed_limit(ir_prefix(p));
            if (ir_ops(p)->length_limit_exceeded) {
                ir_ops(p)->length_limit_exceeded(p);
            } else {
                tw_log_warn(NS, "string longer than %zu bytes announced: closing the connection",
                            max);
                close_rx(p);
            }
        } else if (rc < 0) {
            tw_log_error(NS, "cannot hold a partial string (%s): closing the connection",
                         tw_strerror(rc));
            close_rx(p);
        }
        return 0;
    }
    return 0;
}

void tw_int_receiver_data_received(tw_protocol *p, const char *data, size_t len)
{
    if (!ir_of(p)->rx.ready)
        ir_setup(ir_of(p));
    rx_receive(p, data, len, ir_handle);
}

void tw_int_receiver_connection_lost(tw_protocol *p, tw_failure *reason)
{
    if (ir_ops(p)->connection_lost)
        ir_ops(p)->connection_lost(p, reason);
}

void tw_int_receiver_free(tw_protocol *p)
{
    tw_prefixed_decoder_reset(&ir_of(p)->dec);
    tw_rbuf_clear(&ir_of(p)->rx.pending);
    if (ir_ops(p)->free)
        ir_ops(p)->free(p);
}

static int px_encode(const void *arg, void *out, size_t size)
{
    const struct payload *pl = arg;
    return tw_prefixed_encode(pl->prefix, pl->data, pl->len, out, size, NULL);
}

int tw_int_receiver_send_string(tw_protocol *p, const void *data, size_t len)
{
    if (kind_of(p) != K_INT || (!data && len))
        return TW_EINVAL;
    unsigned prefix = ir_prefix(p);
    uint32_t limit = tw_prefixed_limit(prefix);
    if (limit == 0)
        return TW_EINVAL;
    if (len > limit)
        return TW_EMSGSIZE;
    struct payload pl = {data, len, prefix};
    return send_frame(p, prefix + len, px_encode, &pl);
}

/* ---- Pausing (_PauseableMixin) */

static bool rx_ready(tw_protocol *p)
{
    switch (kind_of(p)) {
    case K_LINE:
        if (!lr_of(p)->rx.ready)
            lr_setup(lr_of(p));
        return true;
    case K_NETSTRING:
        if (!nr_of(p)->rx.ready)
            nr_setup(nr_of(p));
        return true;
    case K_INT:
        if (!ir_of(p)->rx.ready)
            ir_setup(ir_of(p));
        return true;
    default:
        return false;
    }
}

int tw_basic_pause_producing(tw_protocol *p)
{
    if (!rx_ready(p))
        return TW_EINVAL;
    rx_of(p)->paused = true;
    if (p->transport)
        tw_transport_pause_producing(p->transport);
    return 0;
}

int tw_basic_resume_producing(tw_protocol *p)
{
    if (!rx_ready(p))
        return TW_EINVAL;
    rx_of(p)->paused = false;
    if (p->transport)
        tw_transport_resume_producing(p->transport);
    /* What was held goes out now (from inside a callback: once the chunk
     * being handled is done, as Twisted's dataReceived(b"")). */
    switch (kind_of(p)) {
    case K_LINE:
        rx_receive(p, NULL, 0, lr_handle);
        break;
    case K_NETSTRING:
        rx_receive(p, NULL, 0, nr_handle);
        break;
    default:
        rx_receive(p, NULL, 0, ir_handle);
        break;
    }
    return 0;
}

int tw_basic_stop_producing(tw_protocol *p)
{
    if (!rx_ready(p))
        return TW_EINVAL;
    rx_of(p)->paused = true;
    return tw_basic_lose_connection(p);
}

bool tw_basic_paused(const tw_protocol *p)
{
    return kind_of(p) != K_NONE && ((const tw_basic_receiver *)p)->paused;
}

static tw_protocol *producer_protocol(tw_producer *producer)
{
    /* The producer view sits in the receiver head, which starts the
     * protocol. */
    return (tw_protocol *)((char *)producer - offsetof(tw_basic_receiver, producer));
}

static void producer_pause(tw_producer *producer)
{
    tw_basic_pause_producing(producer_protocol(producer));
}

static void producer_resume(tw_producer *producer)
{
    tw_basic_resume_producing(producer_protocol(producer));
}

static void producer_stop(tw_producer *producer)
{
    tw_basic_stop_producing(producer_protocol(producer));
}

static const tw_producer_ops receiver_producer_ops = {
    .pause_producing = producer_pause,
    .resume_producing = producer_resume,
    .stop_producing = producer_stop,
};

tw_producer *tw_basic_producer(tw_protocol *p)
{
    if (kind_of(p) == K_NONE)
        return NULL;
    rx_of(p)->producer.ops = &receiver_producer_ops;
    return &rx_of(p)->producer;
}
