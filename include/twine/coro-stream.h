/* Streams for coroutines: a connection read and written in straight-line
 * code, as asyncio's StreamReader/StreamWriter (Twisted leaves this to each
 * protocol's callbacks).
 *
 *     static tw_result client(void *arg)
 *     {
 *         tw_coro_stream *s;
 *         tw_failure *why;
 *         if (tw_await_connect(reactor, "tcp:localhost:8000", &s, &why) < 0)
 *             return tw_result_fail(why);
 *         tw_await_write(s, "hello", 5);
 *         char buf[5];
 *         ssize_t n = tw_await_read_exactly(s, buf, sizeof buf);
 *         ...
 *         return tw_result_from_int(tw_await_close(s));
 *     }
 *
 * A stream is a protocol (tw_coro_stream_protocol) that buffers what
 * data_received delivers until a coroutine reads it, and wakes the coroutine
 * waiting to read when bytes or the end arrive. It is its own header, above
 * coro.h, because it belongs to the transport layer: coro.h needs only
 * deferreds.
 *
 * ---- Flow control
 * Reading: bytes wait in the stream until read; above TW_CORO_STREAM_BUFFER
 * bytes waiting, the stream pauses the transport's reading (the kernel's
 * window then holds the peer back) and resumes it once reads have taken it
 * below half that. Writing: tw_await_write queues the bytes (the transport
 * copies them) and, while the transport's write buffer is above its
 * high-water mark, waits for it to drain to the low-water mark (the stream
 * registers itself as the transport's producer for this): a coroutine that
 * writes faster than the peer reads is held back, and memory stays bounded.
 *
 * ---- Ending
 * Reads return the bytes that arrived before the connection ended, then 0
 * for a clean end (TW_ECONNDONE: the peer closed, or we did) or the
 * negative code of why it ended otherwise (-ECONNRESET, TW_ECONNABORTED...);
 * tw_coro_stream_failure gives the failure with its message.
 *
 * ---- Lifetime
 * The caller of tw_coro_stream_new (or tw_await_connect) holds the stream
 * until tw_await_close or tw_coro_stream_free; the transport holds the
 * protocol until it has released it (after connection_lost), so either may
 * go first. Free a stream only when no coroutine waits on it.
 *
 * Waiting functions (tw_await_*) must be called inside a coroutine:
 * elsewhere they return TW_EINVAL (logged) and do nothing else, but
 * tw_await_close, which frees the stream in every case. One coroutine may
 * wait to read and another to write at the same time; a second reader (or
 * writer) waiting at once gets TW_EBUSY. Cancelling the waiting coroutine
 * makes the wait return TW_ECANCELED; bytes buffered stay for the next
 * read. */
#ifndef TWINE_CORO_STREAM_H
#define TWINE_CORO_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <twine/coro.h>
#include <twine/failure.h>
#include <twine/protocol.h>
#include <twine/reactor.h>
#include <twine/transport.h>

typedef struct tw_coro_stream tw_coro_stream;

#define TW_CORO_STREAM_BUFFER (64 * 1024) /* bytes read ahead before reading pauses */

/* clientFromString + connect, awaited: connects to a client endpoint
 * description ("tcp:HOST:PORT", "unix:PATH", "tls:HOST:PORT", see
 * endpoint.h). Returns 0 with a connected stream in *out; or a negative code
 * with *out NULL and, if failure is not NULL, the failure in *failure (the
 * caller's): TW_EINVAL for a bad description (or outside a coroutine),
 * TW_ECONNREFUSED, TW_ETIMEDOUT, TW_EDNSLOOKUP..., TW_ECANCELED when the
 * coroutine is cancelled meanwhile, TW_ENOMEM. */
int tw_await_connect(tw_reactor *r, const char *description, tw_coro_stream **out,
                     tw_failure **failure);

/* A stream with no connection yet: hand tw_coro_stream_protocol(s) to
 * whatever will connect it (tw_endpoint_connect_protocol, a factory's
 * build_protocol, tw_string_transport_connect). Returns 0 and *out,
 * TW_EINVAL (out NULL) or TW_ENOMEM. */
int tw_coro_stream_new(tw_coro_stream **out);

/* The stream's protocol, for one transport to take over (its free op lets go
 * of the stream). Call it once, and only to hand the protocol over. */
tw_protocol *tw_coro_stream_protocol(tw_coro_stream *s);

/* Reads up to len (> 0) bytes into buf, waiting until at least one is there.
 * Returns how many (> 0), 0 at a clean end of the connection, or a negative
 * code: why the connection ended, TW_ECANCELED, TW_EBUSY, TW_EINVAL,
 * TW_ENOMEM. */
ssize_t tw_await_read(tw_coro_stream *s, void *buf, size_t len);

/* Reads exactly len bytes, waiting as long as needed. Returns len; fewer (the
 * count read, >= 0) when the connection ended cleanly first; or a negative
 * code as tw_await_read (the bytes read so far are in buf, uncounted). */
ssize_t tw_await_read_exactly(tw_coro_stream *s, void *buf, size_t len);

/* Queues data[0..len) for writing (copied) and, while the transport's write
 * buffer is above its high-water mark, waits for it to drain. A stream handed
 * to a transport but not connected yet (a server's, before connection_made)
 * waits for the connection first. Returns 0; TW_ENOTCONN when the
 * connection has ended, or the stream was never handed over (nothing is
 * queued); the code of why the connection ended if it ended while
 * waiting (the bytes may not have been delivered); TW_ECANCELED; TW_EBUSY;
 * TW_EINVAL; TW_ENOMEM (nothing queued). */
int tw_await_write(tw_coro_stream *s, const void *data, size_t len);

/* Closes the connection (flushing what is queued, as lose_connection; once
 * it is made, for a stream not connected yet), waits until it is gone, and frees the stream — in
 * every case, errors included. Returns 0 for a clean end, or why it ended otherwise (the code of
 * the connection's failure, TW_ECANCELED if cancelled while waiting, TW_ENOTCONN for a stream never
 * handed to a transport, TW_EINVAL outside a coroutine). */
int tw_await_close(tw_coro_stream *s);

/* Frees the stream without waiting: a connection still up is closed
 * (lose_connection: what is queued is still flushed) and later bytes are
 * dropped. Waits in progress on s are cancelled first. NULL is ignored.
 * Callable anywhere (inside a coroutine or not). */
void tw_coro_stream_free(tw_coro_stream *s);

/* The transport, from connection_made until connection_lost; else NULL. */
tw_transport *tw_coro_stream_transport(const tw_coro_stream *s);

/* Why the connection ended (borrowed: tw_failure_ref to keep it; NULL while
 * it has not). */
tw_failure *tw_coro_stream_failure(const tw_coro_stream *s);

/* Bytes received and not yet read. */
size_t tw_coro_stream_buffered(const tw_coro_stream *s);

#endif
