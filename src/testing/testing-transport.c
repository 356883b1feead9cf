/* The string transport (proto_helpers.StringTransport) and the chunked
 * feeding helpers of the testing kit. */
#include <twine/alloc.h>
#include <twine/error.h>
#include <twine/failure.h>
#include <twine/log.h>
#include <twine/protocol.h>
#include <twine/testing.h>
#include <twine/transport.h>

#include <stdint.h>
#include <string.h>

static const tw_transport_ops string_ops;

static tw_string_transport *st_of(const tw_transport *t)
{
    return (tw_string_transport *)t;
}

/* Writes are refused once any close was asked for (transport.h). */
static bool writable(const tw_string_transport *st)
{
    return st->connected && !st->disconnecting && st->lose_write_calls == 0;
}

static void producer_pause(tw_string_transport *st)
{
    tw_producer *p = st->producer;
    if (!p || !st->streaming || st->producer_paused || st->buffered <= st->high)
        return;
    st->producer_paused = true;
    st->producer_pauses++;
    if (p->ops->pause_producing)
        p->ops->pause_producing(p);
}

/* The buffer drained to the low-water mark: resume a paused streaming
 * producer, ask a pull producer for more. */
static void producer_drained(tw_string_transport *st)
{
    tw_producer *p = st->producer;
    if (!p || st->buffered > st->low)
        return;
    if (st->streaming) {
        if (!st->producer_paused)
            return;
        st->producer_paused = false;
    }
    st->producer_resumes++;
    if (p->ops->resume_producing)
        p->ops->resume_producing(p);
}

/* Appends to the record, all or nothing. */
static int record(tw_string_transport *st, const void *data, size_t len)
{
    if (len > SIZE_MAX - st->len - 1)
        return TW_ENOMEM;
    size_t need = st->len + len + 1;
    if (need > st->cap) {
        size_t cap = st->cap ? st->cap : 64;
        while (cap < need)
            cap = cap > SIZE_MAX / 2 ? need : cap * 2;
        char *d = tw_realloc(st->data, cap);
        if (!d)
            return TW_ENOMEM;
        st->data = d;
        st->cap = cap;
    }
    if (len)
        memcpy(st->data + st->len, data, len);
    st->len += len;
    st->data[st->len] = '\0';
    return 0;
}

static void queued(tw_string_transport *st, size_t len)
{
    if (!st->queue_writes || !len)
        return;
    st->buffered = len > SIZE_MAX - st->buffered ? SIZE_MAX : st->buffered + len;
    producer_pause(st);
}

static int st_write(tw_transport *t, const void *data, size_t len)
{
    tw_string_transport *st = st_of(t);
    if (!writable(st))
        return TW_ENOTCONN;
    if (!data && len)
        return TW_EINVAL;
    int rc = record(st, data, len);
    if (rc == 0)
        queued(st, len);
    return rc;
}

static int st_write_iov(tw_transport *t, const struct iovec *iov, int iovcnt)
{
    tw_string_transport *st = st_of(t);
    if (!writable(st))
        return TW_ENOTCONN;
    if (iovcnt < 0 || (!iov && iovcnt > 0))
        return TW_EINVAL;
    size_t before = st->len, total = 0;
    for (int i = 0; i < iovcnt; i++) {
        int rc = iov[i].iov_base || !iov[i].iov_len ? record(st, iov[i].iov_base, iov[i].iov_len)
                                                    : TW_EINVAL;
        if (rc < 0) {
            st->len = before; /* all or nothing */
            if (st->data)
                st->data[before] = '\0';
            return rc;
        }
        total += iov[i].iov_len;
    }
    queued(st, total);
    return 0;
}

static int st_write_zerocopy(tw_transport *t, const void *data, size_t len, tw_release_fn release,
                             void *arg)
{
    int rc = st_write(t, data, len);
    if (rc == 0 && release)
        release(arg); /* "sent" at once */
    return rc;
}

static int st_lose(tw_transport *t)
{
    tw_string_transport *st = st_of(t);
    if (!st->connected)
        return TW_ENOTCONN;
    st->lose_calls++;
    st->disconnecting = true;
    return 0;
}

static int st_abort(tw_transport *t)
{
    tw_string_transport *st = st_of(t);
    if (!st->connected)
        return TW_ENOTCONN;
    st->abort_calls++;
    st->disconnecting = true;
    return 0;
}

static int st_lose_write(tw_transport *t)
{
    tw_string_transport *st = st_of(t);
    if (!st->connected)
        return TW_ENOTCONN;
    st->lose_write_calls++;
    return 0;
}

static int st_get_peer(const tw_transport *t, tw_address *out)
{
    const tw_string_transport *st = st_of(t);
    if (!st->connected)
        return TW_ENOTCONN;
    *out = st->peer;
    return 0;
}

static int st_get_host(const tw_transport *t, tw_address *out)
{
    const tw_string_transport *st = st_of(t);
    if (!st->connected)
        return TW_ENOTCONN;
    *out = st->host;
    return 0;
}

static int st_pause(tw_transport *t)
{
    tw_string_transport *st = st_of(t);
    if (!st->connected)
        return TW_ENOTCONN;
    st->pause_calls++;
    st->paused = true;
    return 0;
}

static int st_resume(tw_transport *t)
{
    tw_string_transport *st = st_of(t);
    if (!st->connected)
        return TW_ENOTCONN;
    st->resume_calls++;
    st->paused = false;
    return 0;
}

static int st_register(tw_transport *t, tw_producer *producer, bool streaming)
{
    tw_string_transport *st = st_of(t);
    if (!st->connected)
        return TW_ENOTCONN;
    if (!producer || !producer->ops)
        return TW_EINVAL;
    if (st->producer)
        return TW_EBUSY;
    st->producer = producer;
    st->streaming = streaming;
    st->producer_paused = false;
    if (streaming) {
        producer_pause(st);
    } else {
        st->producer_resumes++;
        if (producer->ops->resume_producing)
            producer->ops->resume_producing(producer);
    }
    return 0;
}

static int st_unregister(tw_transport *t)
{
    tw_string_transport *st = st_of(t);
    if (!st->connected)
        return TW_ENOTCONN;
    st->producer = NULL;
    st->streaming = false;
    st->producer_paused = false;
    return 0;
}

static size_t st_buffer_size(const tw_transport *t)
{
    const tw_string_transport *st = st_of(t);
    return st->connected ? st->buffered : 0;
}

static int st_set_limits(tw_transport *t, size_t high, size_t low)
{
    tw_string_transport *st = st_of(t);
    if (!st->connected)
        return TW_ENOTCONN;
    if (high == 0 && low == 0) {
        high = TW_TRANSPORT_HIGH_WATER;
        low = TW_TRANSPORT_LOW_WATER;
    }
    if (high == 0 || low > high)
        return TW_EINVAL;
    st->high = high;
    st->low = low;
    return 0;
}

static int st_set_option(tw_transport *t, tw_transport_option option, int value)
{
    tw_string_transport *st = st_of(t);
    if (!st->connected)
        return TW_ENOTCONN;
    switch (option) {
    case TW_OPT_TCP_NODELAY:
        st->nodelay = value != 0;
        return 0;
    case TW_OPT_TCP_KEEPALIVE:
        st->keepalive = value != 0;
        return 0;
    }
    return TW_EINVAL;
}

static void st_destroy(tw_transport *t)
{
    tw_string_transport *st = st_of(t);
    if (st->connected) {
        /* Resurrected for the callbacks: the protocol may take a reference
         * of its own, and then the transport outlives this call. */
        t->refs = 1;
        tw_string_transport_lose(st, TW_ECONNDONE);
        if (--t->refs > 0)
            return;
    }
    tw_free(st->data);
    tw_free(st);
}

static const tw_transport_ops string_ops = {
    .name = "string",
    .write = st_write,
    .write_iov = st_write_iov,
    .write_zerocopy = st_write_zerocopy,
    .lose_connection = st_lose,
    .abort_connection = st_abort,
    .lose_write_connection = st_lose_write,
    .get_peer = st_get_peer,
    .get_host = st_get_host,
    .pause_producing = st_pause,
    .resume_producing = st_resume,
    .register_producer = st_register,
    .unregister_producer = st_unregister,
    .write_buffer_size = st_buffer_size,
    .set_write_buffer_limits = st_set_limits,
    .set_option = st_set_option,
    .send_fds = NULL,
    .destroy = st_destroy,
};

int tw_string_transport_new(tw_string_transport **out)
{
    if (!out)
        return TW_EINVAL;
    tw_string_transport *st = tw_calloc(1, sizeof *st);
    if (!st)
        return TW_ENOMEM;
    tw_transport_init(&st->base, &string_ops, NULL);
    st->nodelay = st->keepalive = -1;
    tw_address_from_ip(&st->host, "127.0.0.1", 12345);
    tw_address_from_ip(&st->peer, "127.0.0.1", 54321);
    st->high = TW_TRANSPORT_HIGH_WATER;
    st->low = TW_TRANSPORT_LOW_WATER;
    *out = st;
    return 0;
}

void tw_string_transport_free(tw_string_transport *st)
{
    if (st)
        tw_transport_unref(&st->base);
}

tw_string_transport *tw_string_transport_of(tw_transport *t)
{
    return t && t->ops == &string_ops ? st_of(t) : NULL;
}

const char *tw_string_transport_value(const tw_string_transport *st, size_t *len)
{
    if (len)
        *len = st->len;
    return st->data ? st->data : "";
}

void tw_string_transport_clear(tw_string_transport *st)
{
    st->len = 0;
    if (st->data)
        st->data[0] = '\0';
}

int tw_string_transport_connect(tw_string_transport *st, tw_protocol *p)
{
    if (!st || !p)
        return TW_EINVAL;
    if (st->connected || st->base.protocol || st->was_connected)
        return TW_EBUSY;
    st->was_connected = true;
    st->base.protocol = p;
    st->connected = true;
    tw_protocol_make_connection(p, &st->base);
    return 0;
}

int tw_string_transport_feed(tw_string_transport *st, const void *data, size_t len)
{
    if (!st || (!data && len))
        return TW_EINVAL;
    if (!st->connected)
        return TW_ENOTCONN;
    tw_protocol_data_received(st->base.protocol, data, len);
    return 0;
}

void tw_string_transport_feeder(void *st, const char *data, size_t len)
{
    tw_string_transport_feed(st, data, len);
}

int tw_string_transport_lose(tw_string_transport *st, int code)
{
    if (!st)
        return TW_EINVAL;
    if (!st->connected)
        return TW_ENOTCONN;
    tw_protocol *p = st->base.protocol;
    st->connected = false; /* from here on every call is refused */
    st->base.refs++;       /* the callbacks below may drop the last reference */
    tw_producer *producer = st->producer;
    st->producer = NULL;
    st->producer_paused = false;
    if (producer) {
        st->producer_stops++;
        if (producer->ops->stop_producing)
            producer->ops->stop_producing(producer);
    }
    tw_failure *reason = tw_failure_new(code < 0 ? code : TW_ECONNDONE, NULL, "%s",
                                        code < 0 ? tw_strerror(code) : tw_strerror(TW_ECONNDONE));
    tw_protocol_connection_lost(p, reason);
    if (st->lost_hook)
        st->lost_hook(st->lost_arg, reason);
    tw_failure_unref(reason);
    tw_protocol_release(p);
    st->base.protocol = NULL;
    tw_transport_unref(&st->base);
    return 0;
}

int tw_string_transport_set_buffer_size(tw_string_transport *st, size_t size)
{
    if (!st)
        return TW_EINVAL;
    if (!st->connected)
        return TW_ENOTCONN;
    st->buffered = size;
    if (size > st->high)
        producer_pause(st);
    else
        producer_drained(st);
    return 0;
}

size_t tw_testing_feed_chunks(const void *data, size_t len, size_t chunk, tw_testing_feed_fn feed,
                              void *ctx)
{
    const char *p = data;
    if (chunk == 0 || chunk > len)
        chunk = len;
    size_t pieces = 0;
    for (size_t at = 0; at < len; at += chunk, pieces++)
        feed(ctx, p + at, len - at < chunk ? len - at : chunk);
    return pieces;
}

size_t tw_testing_feed_split(const void *data, size_t len, size_t at, tw_testing_feed_fn feed,
                             void *ctx)
{
    const char *p = data;
    size_t pieces = 0;
    if (at > len)
        at = len;
    if (at > 0) {
        feed(ctx, p, at);
        pieces++;
    }
    if (at < len) {
        feed(ctx, p + at, len - at);
        pieces++;
    }
    return pieces;
}
