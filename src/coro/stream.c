/* Streams for coroutines (coro-stream.h): a protocol whose callbacks fill a
 * buffer and fire "wake up" deferreds that the waiting coroutine awaits.
 *
 * Each wait is a fresh deferred in a slot (reader, drainer, closer) that the
 * protocol's events fire with no value: the coroutine then looks at the
 * stream's state again. Its canceller empties the slot, so a cancelled wait
 * leaves nothing behind. Everything the events do happens before they fire
 * the slot, because firing resumes the coroutine inside the event, and it
 * may close or free the stream there (the transport's reference keeps the
 * memory until its free op).
 *
 * This file is the transport layer's part of src/coro/: it uses endpoints
 * and transports, which coro.c does not. */
#include <string.h>

#include <twine/alloc.h>
#include <twine/coro-stream.h>
#include <twine/endpoint.h>
#include <twine/error.h>
#include <twine/log.h>

#define NS "twine.coro"

struct tw_coro_stream {
    tw_protocol base; /* first: the transport hands it back to the ops */
    tw_producer producer;
    unsigned refs;    /* the caller's, and the transport's once handed over */
    bool handed;      /* the protocol was given to a transport */
    bool user_gone;   /* freed by the caller: drop what arrives */
    bool lost;        /* the connection has ended (or never will be) */
    bool read_paused; /* we paused the transport's reading */
    bool write_full;  /* the transport paused us: its buffer is above the mark */
    tw_failure *reason;
    char *buf;
    size_t off, len, cap; /* unread bytes are buf[off .. off + len) */
    tw_deferred *reader, *drainer, *closer;
};

static void stream_unref(tw_coro_stream *s)
{
    if (--s->refs)
        return;
    tw_failure_unref(s->reason);
    tw_free(s->buf);
    tw_free(s);
}

/* ---- Waiting */

static void wait_cancel(tw_deferred *d, void *arg)
{
    tw_deferred **slot = arg;
    if (*slot == d) {
        *slot = NULL;
        tw_deferred_unref(d); /* the slot's; the cancel holds one until it fails d */
    }
}

static void wake(tw_deferred **slot)
{
    tw_deferred *d = *slot;
    if (!d)
        return;
    *slot = NULL;
    tw_deferred_callback(d, tw_result_ok(NULL, NULL)); /* resumes the waiter */
    tw_deferred_unref(d);
}

/* Waits until *slot is woken. Returns 0, or why not (TW_ECANCELED...). */
static int wait_on(tw_deferred **slot)
{
    if (*slot)
        return TW_EBUSY;
    tw_deferred *d = tw_deferred_new(wait_cancel, slot);
    if (!d)
        return TW_ENOMEM;
    *slot = d;
    tw_result r = tw_await(tw_deferred_ref(d));
    int rc = r.failure ? tw_failure_code(r.failure) : 0;
    tw_result_release(&r);
    return rc;
}

static bool in_coroutine(const char *who)
{
    if (tw_coro_current())
        return true;
    tw_log_error(NS, "%s called outside a coroutine: there is nothing to suspend", who);
    return false;
}

/* 0 for a clean end, else the negative code of why it ended. */
static int end_code(const tw_coro_stream *s)
{
    int code = s->reason ? tw_failure_code(s->reason) : TW_ENOTCONN;
    return code == TW_ECONNDONE ? 0 : code;
}

/* ---- The protocol */

static void producer_pause(tw_producer *p)
{
    tw_coro_stream *s = (tw_coro_stream *)((char *)p - offsetof(tw_coro_stream, producer));
    s->write_full = true;
}

static void producer_resume(tw_producer *p)
{
    tw_coro_stream *s = (tw_coro_stream *)((char *)p - offsetof(tw_coro_stream, producer));
    s->write_full = false;
    wake(&s->drainer);
}

static const tw_producer_ops producer_ops = {
    .pause_producing = producer_pause,
    .resume_producing = producer_resume,
};

static void stream_made(tw_protocol *p)
{
    tw_coro_stream *s = (tw_coro_stream *)p;
    /* Without it writes still work; only the waiting for drains is lost. */
    if (tw_transport_register_producer(p->transport, &s->producer, true) < 0)
        tw_log_debug(NS, "stream: cannot register as the transport's producer");
    /* Writers and closers that came before the connection go on. */
    wake(&s->drainer);
    wake(&s->closer);
}

static void stream_data(tw_protocol *p, const char *data, size_t len)
{
    tw_coro_stream *s = (tw_coro_stream *)p;
    if (s->user_gone)
        return;
    if (s->off + s->len + len > s->cap) {
        if (s->off) { /* slide the unread bytes down first */
            memmove(s->buf, s->buf + s->off, s->len);
            s->off = 0;
        }
        if (s->len + len > s->cap) {
            size_t cap = s->cap ? s->cap : 4096;
            while (cap < s->len + len)
                cap *= 2;
            char *buf = tw_realloc(s->buf, cap);
            if (!buf) {
                /* Nowhere to put the bytes: the stream cannot go on. */
                tw_log_error(NS, "stream: out of memory buffering %zu bytes: aborting", len);
                tw_transport_abort_connection(p->transport);
                return;
            }
            s->buf = buf;
            s->cap = cap;
        }
    }
    memcpy(s->buf + s->off + s->len, data, len);
    s->len += len;
    if (s->len >= TW_CORO_STREAM_BUFFER && !s->read_paused) {
        s->read_paused = true;
        tw_transport_pause_producing(p->transport);
    }
    wake(&s->reader);
}

static void stream_lost(tw_protocol *p, tw_failure *reason)
{
    tw_coro_stream *s = (tw_coro_stream *)p;
    s->lost = true;
    s->reason = tw_failure_ref(reason);
    wake(&s->reader);
    wake(&s->drainer);
    wake(&s->closer);
}

static void stream_free(tw_protocol *p)
{
    tw_coro_stream *s = (tw_coro_stream *)p;
    if (!s->lost) { /* released without a connection: the attempt failed */
        s->lost = true;
        s->reason = tw_failure_new(TW_ENOTCONN, NULL, "the stream was never connected");
        wake(&s->reader);
        wake(&s->drainer);
        wake(&s->closer);
    }
    stream_unref(s);
}

static const tw_protocol_ops stream_ops = {
    .connection_made = stream_made,
    .data_received = stream_data,
    .connection_lost = stream_lost,
    .free = stream_free,
};

/* ---- The API */

int tw_coro_stream_new(tw_coro_stream **out)
{
    if (!out)
        return TW_EINVAL;
    tw_coro_stream *s = tw_calloc(1, sizeof *s);
    if (!s)
        return TW_ENOMEM;
    tw_protocol_init(&s->base, &stream_ops);
    s->producer.ops = &producer_ops;
    s->refs = 1;
    *out = s;
    return 0;
}

tw_protocol *tw_coro_stream_protocol(tw_coro_stream *s)
{
    if (!s)
        return NULL;
    s->refs++;
    s->handed = true;
    return &s->base;
}

tw_transport *tw_coro_stream_transport(const tw_coro_stream *s)
{
    return s && !s->lost ? s->base.transport : NULL;
}

tw_failure *tw_coro_stream_failure(const tw_coro_stream *s)
{
    return s ? s->reason : NULL;
}

size_t tw_coro_stream_buffered(const tw_coro_stream *s)
{
    return s ? s->len : 0;
}

ssize_t tw_await_read(tw_coro_stream *s, void *buf, size_t len)
{
    if (!s || !buf || len == 0 || !in_coroutine("tw_await_read"))
        return TW_EINVAL;
    while (s->len == 0) {
        if (s->lost)
            return end_code(s);
        int rc = wait_on(&s->reader);
        if (rc < 0)
            return rc;
    }
    size_t n = len < s->len ? len : s->len;
    memcpy(buf, s->buf + s->off, n);
    s->off += n;
    s->len -= n;
    if (!s->len)
        s->off = 0;
    if (s->read_paused && s->len < TW_CORO_STREAM_BUFFER / 2) {
        s->read_paused = false;
        tw_transport_resume_producing(s->base.transport); /* TW_ENOTCONN once lost: fine */
    }
    return (ssize_t)n;
}

ssize_t tw_await_read_exactly(tw_coro_stream *s, void *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = tw_await_read(s, (char *)buf + got, len - got);
        if (n < 0)
            return n;
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return (ssize_t)got;
}

int tw_await_write(tw_coro_stream *s, const void *data, size_t len)
{
    if (!s || (!data && len) || !in_coroutine("tw_await_write"))
        return TW_EINVAL;
    int rc;
    while (!s->base.transport && s->handed && !s->lost) { /* not connected yet */
        rc = wait_on(&s->drainer);
        if (rc < 0)
            return rc;
    }
    tw_transport *t = tw_coro_stream_transport(s);
    if (!t)
        return TW_ENOTCONN;
    rc = tw_transport_write(t, data, len);
    if (rc < 0)
        return rc;
    while (s->write_full && !s->lost) {
        rc = wait_on(&s->drainer);
        if (rc < 0)
            return rc;
    }
    if (s->lost && s->write_full)
        return s->reason ? tw_failure_code(s->reason) : TW_ENOTCONN;
    return 0;
}

int tw_await_close(tw_coro_stream *s)
{
    if (!s)
        return TW_EINVAL;
    int rc = 0;
    if (!in_coroutine("tw_await_close")) {
        rc = TW_EINVAL;
    } else if (!s->handed) {
        rc = TW_ENOTCONN;
    } else {
        bool asked = false;
        while (!s->lost && rc == 0) {
            if (s->base.transport && !asked) { /* else: not connected yet, wait for it */
                tw_transport_lose_connection(s->base.transport);
                asked = true;
            }
            rc = wait_on(&s->closer);
        }
        if (rc == 0)
            rc = end_code(s);
    }
    tw_coro_stream_free(s);
    return rc;
}

void tw_coro_stream_free(tw_coro_stream *s)
{
    if (!s)
        return;
    s->user_gone = true;
    s->len = s->off = 0;
    /* A waiter left behind would never be woken: let it go (ECANCELED). */
    tw_deferred_cancel(s->reader);
    tw_deferred_cancel(s->drainer);
    tw_deferred_cancel(s->closer);
    if (s->base.transport && !s->lost) {
        if (s->read_paused)
            tw_transport_resume_producing(s->base.transport); /* lose needs nothing read */
        tw_transport_lose_connection(s->base.transport);
    }
    stream_unref(s);
}

int tw_await_connect(tw_reactor *r, const char *description, tw_coro_stream **out,
                     tw_failure **failure)
{
    if (out)
        *out = NULL;
    if (failure)
        *failure = NULL;
    tw_failure *why = NULL;
    int rc;
    if (!out || !r || !description) {
        rc = TW_EINVAL;
        why = tw_failure_new(rc, NULL, "tw_await_connect: %s is NULL",
                             !out ? "out"
                             : !r ? "the reactor"
                                  : "the description");
    } else if (!in_coroutine("tw_await_connect")) {
        rc = TW_EINVAL;
        why = tw_failure_new(rc, NULL, "tw_await_connect outside a coroutine");
    } else {
        tw_endpoint *ep;
        rc = tw_endpoint_client_from_string(r, description, &ep, &why);
        if (rc == 0) {
            tw_coro_stream *s;
            rc = tw_coro_stream_new(&s);
            if (rc < 0) {
                why = tw_failure_new(rc, NULL, "tw_await_connect: no memory for the stream");
                tw_endpoint_free(ep);
            } else {
                tw_deferred *d = tw_endpoint_connect_protocol(ep, tw_coro_stream_protocol(s));
                tw_endpoint_free(ep); /* the attempt carries on without it */
                tw_result res = tw_await(d);
                if (res.failure) {
                    rc = tw_failure_code(res.failure);
                    why = res.failure;
                    tw_coro_stream_free(s);
                } else {
                    tw_result_release(&res); /* the protocol: borrowed */
                    *out = s;
                }
            }
        }
    }
    if (rc < 0 && !why)
        why = tw_failure_new(rc, NULL, "tw_await_connect: %s", tw_strerror(rc));
    if (failure)
        *failure = why;
    else
        tw_failure_unref(why);
    return rc;
}
