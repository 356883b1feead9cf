/* What the descriptor-backed transports share: stream.c (TCP, Unix),
 * process/stdio.c (standard I/O) and process/process.c (a child's pipes).
 * This is the transport layer's internal interface to them, as
 * completion.h is the reactor's; nothing outside those files includes it.
 *
 * Two pieces:
 * - tw__flow: the consumer side of flow control (transport.h's "Writing and
 *   flow control"): the registered producer, and when to pause, resume or
 *   stop it. All three transports keep one (the process for its stdin).
 * - tw__fd_state and the tw__fd_* functions: the closing rules of a
 *   transport with one read side and one write side (stream.c, stdio.c):
 *   the transport ops that are nothing but those rules (half-close, lose
 *   after the queue drains, abort now, pause and resume reading, producer
 *   registration), the half-close rule the read and write paths apply, and
 *   the first and last steps of the connection's life. The process
 *   transport is not such a transport: each of its pipes closes on its own
 *   (closeChildFD), and the process ends when all are closed and the child
 *   is reaped, so only tw__flow fits it (the queue flush it shares with
 *   stdio.c is process-internal.h's tw__pipe_flush).
 *
 * What stays in each transport, because it differs on purpose: how a loss
 * decided inside a call reaches the reactor (stream.c: the socket shut down
 * and its reader, or a no-op completion; stdio.c: a timer), tearing down
 * (a send in flight, the connector's lost hook; restoring a terminal's
 * flags), how the write side is shut; and the read path, the write path
 * and the drain after a write (after_drain: close or half-close once the
 * queue is empty, resume the producer), which run for every read or write
 * and so call the transport's own functions directly, not through the
 * kind's hooks below. */
#ifndef TWINE_SRC_NET_FDTRANSPORT_H
#define TWINE_SRC_NET_FDTRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <twine/error.h>
#include <twine/failure.h>
#include <twine/protocol.h>
#include <twine/transport.h>

/* ---- Producers */

struct tw__flow {
    tw_producer *producer; /* NULL: none registered */
    bool streaming;
    bool paused; /* a streaming producer paused by us, at the high-water mark */
    size_t high, low;
};

/* No producer; the default water marks. */
void tw__flow_init(struct tw__flow *f);

/* registerProducer on a transport t that may be written, with `queued`
 * bytes waiting: a pull producer is asked for its first piece, a streaming
 * one is paused at once if the queue is above the high-water mark (t is
 * referenced across that call: the producer may close it). Returns 0, or
 * TW_EBUSY with nothing changed if one is registered already. */
int tw__flow_register(struct tw__flow *f, tw_transport *t, tw_producer *producer, bool streaming,
                      size_t queued);

/* Whether a pull producer is registered: its writes must queue, so that the
 * drain asks it for more. */
static inline bool tw__flow_pull(const struct tw__flow *f)
{
    return f->producer && !f->streaming;
}

/* Something was queued (the queue now holds `queued` bytes): above the
 * high-water mark a streaming producer is paused, once. Inline: it runs on
 * every write. */
static inline void tw__flow_queued(struct tw__flow *f, size_t queued)
{
    if (f->producer && f->streaming && !f->paused && queued > f->high) {
        f->paused = true;
        f->producer->ops->pause_producing(f->producer);
    }
}

/* The queue drained to `queued` bytes, in the reactor, on a transport that
 * may still be written: at the low-water mark a pull producer is asked for
 * more, and a streaming one we paused is resumed. Returns true if a producer
 * was called (it may have closed the transport: the caller looks again).
 * Inline: it runs after every write that the kernel took. */
static inline bool tw__flow_drained(struct tw__flow *f, size_t queued)
{
    tw_producer *prod = f->producer;
    if (!prod || queued > f->low || (f->streaming && !f->paused))
        return false;
    f->paused = false;
    prod->ops->resume_producing(prod);
    return true;
}

/* The connection is going away: the producer is unregistered, then told
 * stop_producing (transport.h: once). */
void tw__flow_stop(struct tw__flow *f);

/* ---- The closing rules of a two-sided transport */

/* The state flags, in the low bits of the transport's flags word; a
 * transport numbers its own flags from TW__FD_OWN up. */
enum {
    TW__FD_PAUSED = 1u << 0,         /* pause_producing: no reading */
    TW__FD_READ_CLOSED = 1u << 1,    /* the peer's end of file was read */
    TW__FD_WRITE_SHUTTING = 1u << 2, /* lose_write_connection: flush, then shut down */
    TW__FD_WRITE_CLOSED = 1u << 3,   /* the write side is shut down */
    TW__FD_DISCONNECTING = 1u << 4,  /* lose_connection: flush, then close */
    TW__FD_LOST_PENDING = 1u << 5,   /* loss decided: delivered from the reactor */
    TW__FD_LOST = 1u << 6,           /* torn down: connection_lost given or being given */
    TW__FD_OWN = 1u << 7,
};
/* Writes are refused in these states (transport.h). */
#define TW__FD_NO_WRITE                                                                            \
    (TW__FD_WRITE_SHUTTING | TW__FD_WRITE_CLOSED | TW__FD_DISCONNECTING | TW__FD_LOST_PENDING |    \
     TW__FD_LOST)
/* The protocol hears nothing more once one of these is set. */
#define TW__FD_CLOSING (TW__FD_DISCONNECTING | TW__FD_LOST_PENDING | TW__FD_LOST)
/* A loss is decided (delivered or not). */
#define TW__FD_GOING (TW__FD_LOST_PENDING | TW__FD_LOST)

/* Embedded in the transport: the flags and the code of a loss decided but
 * not yet delivered. */
struct tw__fd_state {
    uint32_t flags;
    int32_t reason;
};

/* Decides a loss with code, from inside a call of the application: the
 * transport then has the reactor deliver it (connection_lost never runs
 * inside the call that closed). Returns false, changing nothing, when a
 * loss is decided already: the first reason stands. */
static inline bool tw__fd_decide_loss(struct tw__fd_state *st, int code)
{
    if (st->flags & TW__FD_GOING)
        return false;
    st->flags |= TW__FD_LOST_PENDING;
    st->reason = code;
    return true;
}

/* The loss is being delivered, from the reactor: returns false when it was
 * already (connection_lost exactly once). */
static inline bool tw__fd_mark_lost(struct tw__fd_state *st)
{
    if (st->flags & TW__FD_LOST)
        return false;
    st->flags = (st->flags | TW__FD_LOST) & ~(uint32_t)TW__FD_LOST_PENDING;
    return true;
}

/* The last step of opening, once nothing can fail: registers h with t's
 * reactor (its shutdown calls on_close, which delivers the loss), gives t
 * its protocol p, sets *out (if not NULL) to t, and calls p's
 * connection_made with a reference held (the protocol may close t from
 * it). */
void tw__fd_start(tw_transport *t, tw_handle *h, void (*on_close)(tw_handle *h), tw_protocol *p,
                  tw_transport **out);

/* One side of t has just closed (TW__FD_READ_CLOSED or TW__FD_WRITE_CLOSED
 * set), in the reactor: the protocol hears read_connection_lost or
 * write_connection_lost, if it has it. Returns true when the connection is
 * then done, both sides closed and no loss decided meanwhile: the caller
 * finishes it with TW_ECONNDONE. */
bool tw__fd_side_closed(tw_transport *t, const struct tw__fd_state *st, bool read_side);

/* The code of the loss that the reactor's shutdown (the transport's handle
 * closing) delivers: a loss decided but not yet delivered keeps its own. */
static inline int tw__fd_shutdown_code(const struct tw__fd_state *st)
{
    return (st->flags & TW__FD_LOST_PENDING) ? st->reason : TW_ECONNLOST;
}

/* The last steps of a loss, from the reactor, once the transport has set
 * TW__FD_LOST, closed its descriptors and dropped its queue: the producer
 * (flow; NULL: none) is stopped, the protocol gets connection_lost(reason),
 * then hook(hook_arg, reason) runs if given (a connector's), then the
 * protocol is released and the connection's own reference dropped. Takes
 * reason's reference. The caller holds a reference of its own across. */
void tw__fd_tell_lost(tw_transport *t, struct tw__flow *flow, tw_failure *reason,
                      void (*hook)(void *arg, tw_failure *reason), void *hook_arg);

/* A transport that follows these rules: its ops table, with the operations
 * below in it, and what they need of it. Each such transport has a static
 * const one and gives &kind.ops to tw_transport_init, so that the
 * operations find their kind from t->ops (ops is first). The hooks are
 * reached only from these operations, none of which is a read or a write. */
struct tw__fd_kind {
    tw_transport_ops ops;
    size_t state_at; /* offsetof(the transport's struct, its tw__fd_state) */
    /* Brings the reactor's interest in line with the flags. Returns 0 or the
     * error of adding interest. */
    int (*update_interest)(tw_transport *t);
    /* Decides the loss with code, from inside a call of the application
     * that must not deliver it; the reactor delivers it on its next
     * iteration. Does nothing once a loss is decided. */
    void (*schedule_loss)(tw_transport *t, int code);
    /* Bytes waiting to be written. */
    size_t (*out_size)(const tw_transport *t);
    /* The transport's tw__flow; with create false NULL may mean none
     * (stream.c keeps it in a block made on first use), with create true
     * NULL means out of memory. */
    struct tw__flow *(*flow)(tw_transport *t, bool create);
};
_Static_assert(offsetof(struct tw__fd_kind, ops) == 0, "t->ops leads to the kind");

/* Transport ops for a kind's table (transport.h's contracts):
 * lose_connection flushes, then schedules the loss with TW_ECONNDONE;
 * lose_write_connection asks for write interest even with nothing queued,
 * so that the shut down and write_connection_lost come from the reactor
 * (the transport's drain does them); a failure to add interest becomes the
 * loss, with its code. */
int tw__fd_lose_connection(tw_transport *t);
int tw__fd_abort_connection(tw_transport *t);
int tw__fd_lose_write_connection(tw_transport *t);
int tw__fd_pause_producing(tw_transport *t);
int tw__fd_resume_producing(tw_transport *t);
int tw__fd_register_producer(tw_transport *t, tw_producer *producer, bool streaming);
int tw__fd_unregister_producer(tw_transport *t);
size_t tw__fd_write_buffer_size(const tw_transport *t);
int tw__fd_set_write_buffer_limits(tw_transport *t, size_t high, size_t low);

#endif
