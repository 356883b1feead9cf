/* twisted.protocols.basic: protocols that cut a byte stream into lines
 * (LineReceiver, LineOnlyReceiver), netstrings (NetstringReceiver) or
 * length-prefixed strings (Int8/Int16/Int32StringReceiver). They are built on
 * the decoders of framing.h and do the protocol's half: feeding, raw mode,
 * limits, closing on bad input, sending.
 *
 * ---- Using one: embed the receiver as the FIRST member of your protocol,
 * fill in an ops table whose first member is the receiver's protocol ops
 * (the macro), and hand that to a factory as the protocol ops:
 *
 *     struct chat { tw_line_receiver lr; int lines; };
 *     static void chat_line(tw_protocol *p, const char *line, size_t len)
 *     {
 *         ((struct chat *)p)->lines++;
 *         tw_line_receiver_send_line(p, line, len); // echo it back
 *     }
 *     static const tw_line_receiver_ops chat_ops = {
 *         .protocol = TW_LINE_RECEIVER_PROTOCOL_OPS,
 *         .line_received = chat_line,
 *         .delimiter = "\n", // class attributes: delimiter, MAX_LENGTH
 *     };
 *     tw_factory_init(&f, NULL, &chat_ops.protocol, sizeof(struct chat), NULL);
 *
 * The receiver supplies connection_made, data_received, connection_lost and
 * free, and forwards the first two and free to the optional hooks of the same
 * names in your ops (they get the same p). Every callback gets the protocol
 * p; cast it to your struct. Because p->ops must point at the .protocol
 * member of a receiver ops table, never give the receiver's protocol ops to
 * anything as a bare tw_protocol_ops. A protocol made by hand (not by the
 * default builder) calls tw_line_receiver_init (or the netstring / int one)
 * first; the default builder's zeroed block needs nothing: the receiver sets
 * itself up from the ops at connection_made.
 *
 * ---- Closing and "disconnecting"
 * transport.h has no disconnecting query, so the receiver keeps its own:
 * disconnecting becomes true when the receiver closes the connection itself
 * (a line too long, a broken peer, out of memory) or when the protocol
 * closes it with tw_basic_lose_connection or tw_basic_stop_producing (use
 * them instead of tw_transport_lose_connection). From then on no frame is
 * delivered, not even one already read in the same chunk, and bytes that
 * still arrive are dropped: every receiver here behaves so.
 * Twisted 22.4 tests transport.disconnecting instead, and its receivers
 * differ: LineReceiver stops after the line that closed, as here, but
 * keeps the rest of its buffer and delivers one more line at each later
 * dataReceived (it tests after each line); LineOnlyReceiver delivers
 * nothing more, as here; NetstringReceiver and IntNStringReceiver never
 * test it, and deliver every string left in the chunk and any that comes
 * later. A real transport reads nothing after loseConnection, so what is
 * at stake is the rest of the chunk being handled.
 * A protocol that calls tw_transport_lose_connection itself bypasses the
 * receiver, which does not know: it delivers the rest of the chunk being
 * handled (as Twisted's netstring and length-prefixed receivers do), and
 * the transport reads nothing more.
 *
 * ---- Pausing
 * tw_basic_pause_producing pauses the receiver and its transport: no frame
 * is delivered until tw_basic_resume_producing, not even one already read.
 * Called from inside a callback, it takes effect right after that frame:
 * the rest of the chunk is held (copied, unless it was held already), and
 * so is every byte that arrives while paused. Resuming delivers what was
 * held at once, even if no new byte ever comes, then reads again. This is
 * Twisted's LineReceiver and IntNStringReceiver (pauseProducing and
 * resumeProducing on the protocol); here the netstring receiver and the
 * line-only receiver pause the same way, where Twisted's
 * NetstringReceiver and LineOnlyReceiver have no pauseProducing at all.
 * Pausing the transport alone (tw_transport_pause_producing) only stops
 * reading: the frames of a chunk already read are still delivered, as in
 * Twisted. In raw mode a raw chunk is delivered whole; bytes that come
 * after it are held.
 *
 * ---- Re-entrancy
 * A callback may write, close, change the settings, switch modes, or cause
 * data_received to be called again (an in-memory loopback): bytes arriving
 * while a chunk is being handled are queued after what is left of it, as
 * Twisted's _busyReceiving does. Queuing (and holding while paused)
 * copies; if that copy runs out of memory the connection is closed
 * (logged). */
#ifndef TWINE_BASIC_H
#define TWINE_BASIC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <twine/buffer.h>
#include <twine/framing.h>
#include <twine/protocol.h>

/* The head of every receiver here. */
typedef struct tw_basic_receiver {
    tw_protocol base;
    bool disconnecting; /* see Closing; read it freely */
    bool paused;        /* see Pausing; read it freely */
    /* Private. */
    bool ready; /* set up from the ops */
    bool busy;  /* handling a chunk: more bytes go to pending */
    tw_rbuf pending;
    tw_producer producer; /* tw_basic_producer's view */
} tw_basic_receiver;

/* Closes p's connection (tw_transport_lose_connection) and stops delivery:
 * the receiver's disconnecting. p must be a receiver from this header.
 * Returns what the transport returns, or TW_EINVAL for another protocol. */
int tw_basic_lose_connection(tw_protocol *p);

/* p's disconnecting (false for a protocol that is not a receiver here). */
bool tw_basic_disconnecting(const tw_protocol *p);

/* Pausing (Twisted's _PauseableMixin, an IPushProducer): see the top of
 * this file. Each returns 0, or TW_EINVAL for a protocol that is not a
 * receiver here; what the transport answers (TW_ENOTCONN once the
 * connection is lost) is not an error of the receiver's. */
int tw_basic_pause_producing(tw_protocol *p);
/* Resumes the transport and delivers what was held before returning (from
 * inside a callback: once that callback has returned). */
int tw_basic_resume_producing(tw_protocol *p);
/* Paused for good, and tw_basic_lose_connection. */
int tw_basic_stop_producing(tw_protocol *p);
/* p's paused (false for a protocol that is not a receiver here). */
bool tw_basic_paused(const tw_protocol *p);
/* The receiver as a tw_producer whose ops are the three calls above, to
 * register with another connection (tw_transport_register_producer): a
 * proxy whose far side is slow pauses the receiver, not only its
 * transport. Valid as long as p is; NULL for another protocol. */
tw_producer *tw_basic_producer(tw_protocol *p);

/* ---- LineReceiver / LineOnlyReceiver */

typedef struct tw_line_receiver_ops {
    tw_protocol_ops protocol; /* TW_LINE_RECEIVER_PROTOCOL_OPS */
    /* A complete line, delimiter removed; borrowed. Required. */
    void (*line_received)(tw_protocol *p, const char *line, size_t len);
    /* Raw mode: every byte as it comes. NULL: raw bytes are dropped. */
    void (*raw_data_received)(tw_protocol *p, const char *data, size_t len);
    /* A line longer than the maximum (its length not counting the
     * delimiter, nor bytes at the end of a partial line that may begin it).
     * LineReceiver: data[0..len) is the part of the long line (and whatever
     * followed it) in this chunk, dropped after the call; a hook that keeps
     * the connection open gets the next chunk parsed as a new line.
     * line_only (Twisted's LineOnlyReceiver): data[0..len) is the long line
     * alone, without its delimiter, or, when its delimiter has not come
     * yet, all of it received so far (ending, maybe, with bytes that begin
     * the delimiter, as Twisted's buffer does); the rest of the line is
     * then dropped as it arrives and the lines after it are delivered.
     * NULL: logs why at the warning level and tw_basic_lose_connection (as
     * Twisted). */
    void (*line_length_exceeded)(tw_protocol *p, const char *data, size_t len);
    /* Optional hooks, called after the receiver's own work. */
    void (*connection_made)(tw_protocol *p);
    void (*connection_lost)(tw_protocol *p, tw_failure *reason);
    void (*free)(tw_protocol *p);
    /* Class attributes: the delimiter (delimiter_len bytes; 0 means
     * strlen(delimiter); NULL means "\r\n") and MAX_LENGTH (0 means
     * TW_LINE_DEFAULT_MAX, 16384). A bad delimiter (longer than
     * TW_LINE_DELIMITER_MAX) is logged and "\r\n" used. */
    const char *delimiter;
    size_t delimiter_len;
    size_t max_length;
    /* LineOnlyReceiver: no raw mode (set_raw_mode returns TW_ENOTSUP), and
     * its rules for long lines (line_length_exceeded). A partial line is
     * checked after each chunk, so one chunk's worth of it may be held
     * beyond the maximum until then. */
    bool line_only;
} tw_line_receiver_ops;

typedef struct tw_line_receiver {
    tw_basic_receiver rx;
    bool raw; /* in raw mode; read it, change it with set_raw_mode / set_line_mode */
    /* Private. */
    bool in_feed;       /* inside the decoder's feed (a line callback may run) */
    bool cleared;       /* clear_line_buffer took the rest of the chunk */
    bool delim_pending; /* set_delimiter from a line: applied after it */
    bool skipping;      /* line_only: dropping the rest of a long line */
    uint8_t delim_len;  /* the current delimiter, for send_line and clear_line_buffer */
    char delim[TW_LINE_DELIMITER_MAX];
    size_t max;        /* MAX_LENGTH, for the log */
    const char *cur;   /* the chunk being fed, and the offset in it past the */
    size_t cur_len;    /* last line delivered (negative at first: bytes held */
    long long cur_off; /* from earlier chunks complete the first line) */
    tw_line_decoder dec;
} tw_line_receiver;

void tw_line_receiver_connection_made(tw_protocol *p);
void tw_line_receiver_data_received(tw_protocol *p, const char *data, size_t len);
void tw_line_receiver_connection_lost(tw_protocol *p, tw_failure *reason);
void tw_line_receiver_free(tw_protocol *p);

#define TW_LINE_RECEIVER_PROTOCOL_OPS                                                              \
    {                                                                                              \
        .connection_made = tw_line_receiver_connection_made,                                       \
        .data_received = tw_line_receiver_data_received,                                           \
        .connection_lost = tw_line_receiver_connection_lost, .free = tw_line_receiver_free,        \
    }

/* For a protocol made by hand: zeroes *lr and sets it up from ops. */
void tw_line_receiver_init(tw_line_receiver *lr, const tw_line_receiver_ops *ops);

/* Writes line[0..len) and the delimiter in one write. Returns what
 * tw_transport_write_sequence returns; TW_EINVAL when p is not a line
 * receiver or has no transport. */
int tw_line_receiver_send_line(tw_protocol *p, const void *line, size_t len);

/* setRawMode: from the next byte on, bytes go to raw_data_received. From
 * inside line_received, the rest of the chunk after that line is delivered
 * raw; from elsewhere, a partial line held is delivered raw first with the
 * next bytes (it is set aside now). Returns 0, TW_ENOTSUP (line_only),
 * TW_EINVAL, or TW_ENOMEM (the partial line could not be set aside: still
 * in line mode). */
int tw_line_receiver_set_raw_mode(tw_protocol *p);

/* setLineMode(extra): back to lines; extra[0..len) (may be empty) is parsed
 * as lines first, as if it had just been received (from inside a callback:
 * right after it returns). Returns 0, TW_EINVAL, or TW_ENOMEM (from inside a
 * callback, extra could not be queued: the mode changed, extra is dropped). */
int tw_line_receiver_set_line_mode(tw_protocol *p, const void *extra, size_t len);

/* clearLineBuffer: hands what is buffered to take(ctx, ...) (may be NULL;
 * called once per contiguous piece, in order, borrowed for the call) and
 * drops it. From inside line_received that is the rest of the current
 * chunk, after the line, and what was queued behind it: no more lines come
 * from those bytes. From elsewhere it is the partial line held. */
void tw_line_receiver_clear_line_buffer(tw_protocol *p,
                                        void (*take)(void *ctx, const char *data, size_t len),
                                        void *ctx);

/* Change the delimiter / MAX_LENGTH of this connection; a new delimiter
 * applies from the next line on, and send_line uses it at once. Change the
 * delimiter from line_received (or before any byte arrives): elsewhere it is
 * TW_EBUSY while a partial line is held (see tw_line_decoder_set_delimiter).
 * Return 0, TW_EINVAL or TW_EBUSY. */
int tw_line_receiver_set_delimiter(tw_protocol *p, const void *delim, size_t len);
int tw_line_receiver_set_max_length(tw_protocol *p, size_t max);

/* ---- NetstringReceiver */

typedef struct tw_netstring_receiver_ops {
    tw_protocol_ops protocol; /* TW_NETSTRING_RECEIVER_PROTOCOL_OPS */
    /* A complete payload; borrowed. Required. */
    void (*string_received)(tw_protocol *p, const char *data, size_t len);
    void (*connection_made)(tw_protocol *p);
    void (*connection_lost)(tw_protocol *p, tw_failure *reason);
    void (*free)(tw_protocol *p);
    size_t max_length; /* MAX_LENGTH; 0 means TW_NETSTRING_DEFAULT_MAX (99999) */
} tw_netstring_receiver_ops;

/* A malformed netstring or one over the maximum makes the peer broken: the
 * reason is logged at the warning level ("broken peer: netstring length has
 * a leading zero"), broken_peer is set and the connection closed. */
typedef struct tw_netstring_receiver {
    tw_basic_receiver rx;
    bool broken_peer;         /* read it */
    tw_netstring_error error; /* why, once broken */
    /* Private. */
    tw_netstring_decoder dec;
} tw_netstring_receiver;

void tw_netstring_receiver_connection_made(tw_protocol *p);
void tw_netstring_receiver_data_received(tw_protocol *p, const char *data, size_t len);
void tw_netstring_receiver_connection_lost(tw_protocol *p, tw_failure *reason);
void tw_netstring_receiver_free(tw_protocol *p);

#define TW_NETSTRING_RECEIVER_PROTOCOL_OPS                                                         \
    {                                                                                              \
        .connection_made = tw_netstring_receiver_connection_made,                                  \
        .data_received = tw_netstring_receiver_data_received,                                      \
        .connection_lost = tw_netstring_receiver_connection_lost,                                  \
        .free = tw_netstring_receiver_free,                                                        \
    }

void tw_netstring_receiver_init(tw_netstring_receiver *nr, const tw_netstring_receiver_ops *ops);

/* Writes data[0..len) as one netstring. Returns what tw_transport_write
 * returns, TW_ENOMEM (a frame over a few hundred bytes is assembled in a
 * temporary buffer) or TW_EINVAL. */
int tw_netstring_receiver_send_string(tw_protocol *p, const void *data, size_t len);

/* ---- Int8/Int16/Int32StringReceiver */

typedef struct tw_int_receiver_ops {
    tw_protocol_ops protocol; /* TW_INT_RECEIVER_PROTOCOL_OPS */
    /* A complete payload; borrowed. Required. */
    void (*string_received)(tw_protocol *p, const char *data, size_t len);
    /* A prefix announced more than max_length (lengthLimitExceeded). NULL:
     * logs it at the warning level and tw_basic_lose_connection. Either way
     * nothing more is read from the connection. */
    void (*length_limit_exceeded)(tw_protocol *p);
    void (*connection_made)(tw_protocol *p);
    void (*connection_lost)(tw_protocol *p, tw_failure *reason);
    void (*free)(tw_protocol *p);
    unsigned prefix_bytes; /* 1, 2 or 4 (Int8, Int16, Int32); 0 means 4 */
    size_t max_length;     /* MAX_LENGTH; 0 means 99999 (Twisted's); capped by the prefix */
} tw_int_receiver_ops;

/* Twisted's IntNStringReceiver.MAX_LENGTH. */
#define TW_INT_RECEIVER_DEFAULT_MAX 99999

typedef struct tw_int_receiver {
    tw_basic_receiver rx;
    bool too_long; /* a prefix was over the maximum; read it */
    /* Private. */
    tw_prefixed_decoder dec;
} tw_int_receiver;

void tw_int_receiver_connection_made(tw_protocol *p);
void tw_int_receiver_data_received(tw_protocol *p, const char *data, size_t len);
void tw_int_receiver_connection_lost(tw_protocol *p, tw_failure *reason);
void tw_int_receiver_free(tw_protocol *p);

#define TW_INT_RECEIVER_PROTOCOL_OPS                                                               \
    {                                                                                              \
        .connection_made = tw_int_receiver_connection_made,                                        \
        .data_received = tw_int_receiver_data_received,                                            \
        .connection_lost = tw_int_receiver_connection_lost, .free = tw_int_receiver_free,          \
    }

/* Returns 0, or TW_EINVAL for a prefix size other than 0, 1, 2, 4 (the
 * receiver then refuses every byte: it closes at connection_made). */
int tw_int_receiver_init(tw_int_receiver *ir, const tw_int_receiver_ops *ops);

/* Writes the prefix and data[0..len) in one write. Returns what
 * tw_transport_write returns; TW_EMSGSIZE (StringTooLongError) when len is
 * more than the prefix can carry (255, 65535, 4294967295); TW_ENOMEM (frames
 * over a few hundred bytes are assembled in a temporary buffer); TW_EINVAL. */
int tw_int_receiver_send_string(tw_protocol *p, const void *data, size_t len);

#endif
