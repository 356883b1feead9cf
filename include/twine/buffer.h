/* Byte buffers for transports and protocols (base layer).
 *
 * tw_wqueue is the write queue of one transport: what `write` queued and the
 * kernel has not taken yet. Copied bytes coalesce into fixed-size blocks, so
 * many small writes become one iovec; zero-copy writes queue the caller's
 * memory and release it through its callback once written. fill_iov hands the
 * queue to writev/sendmsg, consume drops what the kernel took.
 *
 * tw_rbuf keeps the partial frame a protocol must hold between reads (a line
 * without its newline, half a netstring), bounded by a settable maximum.
 *
 * Memory: both are small headers meant to be embedded in a connection. An
 * empty tw_wqueue or tw_rbuf owns no memory at all: blocks go back as soon as
 * they drain, so an idle connection costs only the headers (32 and 24 bytes
 * on LP64).
 *
 * Steady state allocates nothing: a write queue's blocks come from a
 * per-thread cache of at most TW_WQUEUE_CACHE_BLOCKS free blocks
 * (TW_WQUEUE_CACHE_BLOCKS * TW_WQUEUE_BLOCK_SIZE = 256 KiB per thread at
 * most). A block drained beyond that bound is freed. The cache is freed when
 * its thread exits, or now with tw_wqueue_cache_trim.
 *
 * Threads: a queue or rbuf belongs to one thread at a time (its reactor's);
 * the block cache is per thread, so queues on different reactor threads
 * never contend. A queue may move to another thread between calls: its
 * blocks then drain into that thread's cache. */
#ifndef TWINE_BUFFER_H
#define TWINE_BUFFER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include <twine/alloc.h>

/* ---- Write queue ------------------------------------------------------ */

/* Bytes allocated per block (header included); a block holds a little less
 * than this of copied data. */
#define TW_WQUEUE_BLOCK_SIZE 16384
/* Free blocks each thread keeps for reuse. */
#define TW_WQUEUE_CACHE_BLOCKS 16

struct tw__wblock;

/* 32 bytes on LP64. Embed it and tw_wqueue_init it (or use TW_WQUEUE_INIT);
 * tw_wqueue_clear releases everything it holds, after which it may be reused
 * or its memory dropped. */
typedef struct tw_wqueue {
    /* Private. */
    struct tw__wblock *head, *tail;
    size_t size;  /* bytes queued */
    uint32_t gen; /* bumped by clear, so consume notices a clear from a release */
} tw_wqueue;

#define TW_WQUEUE_INIT                                                                             \
    {                                                                                              \
        0                                                                                          \
    }

void tw_wqueue_init(tw_wqueue *q);

/* A heap-allocated queue, for callers that do not embed one: NULL when out of
 * memory. tw_wqueue_free clears it (releasing zero-copy segments) and frees
 * it; NULL is ignored. */
tw_wqueue *tw_wqueue_new(void);
void tw_wqueue_free(tw_wqueue *q);

/* Queues a copy of data[0..len) after everything queued. Small appends
 * coalesce into the last block; large ones fill as many blocks as they need.
 * Returns 0; 0 with nothing queued when len == 0; TW_EINVAL for a NULL queue,
 * NULL data with len > 0, or a size that would overflow; TW_ENOMEM when a
 * block could not be allocated, with the queue exactly as it was (an append
 * is all or nothing). */
int tw_wqueue_append(tw_wqueue *q, const void *data, size_t len);

/* Queues a copy of the bytes of iov[0..iovcnt) that come after the first
 * `skip` of them: what a transport queues after a write that took only
 * `skip` bytes. Entries are appended one by one, so on failure the queue
 * holds the ones before the failing entry: *appended (may be NULL) says how
 * many bytes were queued, then and on success. Returns 0, or TW_EINVAL /
 * TW_ENOMEM as append. */
int tw_wqueue_append_iov(tw_wqueue *q, const struct iovec *iov, int iovcnt, size_t skip,
                         size_t *appended);

/* Queues data[0..len) itself, without copying: the caller keeps it alive and
 * unchanged until release(arg) is called. release (may be NULL) is called
 * exactly once: from tw_wqueue_consume once the bytes consumed reach the end
 * of this segment, or from tw_wqueue_clear/free if it is still queued; never
 * earlier. With len == 0 there is nothing to write and release(arg) is called
 * before this returns 0. Returns 0, or TW_EINVAL / TW_ENOMEM as append, in
 * which case release is never called and the caller still owns data.
 *
 * A release callback may append to the queue (a write from inside it) and
 * may clear it; it must not consume from it or free it. A segment costs a
 * small descriptor in the current block, not an allocation of its own. */
int tw_wqueue_append_zerocopy(tw_wqueue *q, const void *data, size_t len, tw_release_fn release,
                              void *arg);

/* Fills iov[0..max) with the queued bytes, in order, starting with the first
 * byte not yet consumed, ready for writev or sendmsg. Returns how many
 * entries it filled: fewer than max when the whole queue fits, exactly max
 * when it may not (the entries then cover a prefix of the queue). Entries are
 * never empty; memory-adjacent segments share one entry. 0 when the queue is
 * empty or max <= 0. The entries point into the queue: valid until the next
 * call that changes it. */
int tw_wqueue_fill_iov(const tw_wqueue *q, struct iovec *iov, int max);

/* Drops the first n bytes (what a possibly partial write took), releasing
 * each zero-copy segment whose end they reach and returning drained blocks to
 * the cache. Returns 0; TW_EINVAL (nothing consumed) when n exceeds the size.
 * If a release callback clears the queue, consume stops there. */
int tw_wqueue_consume(tw_wqueue *q, size_t n);

/* Releases everything queued (abort_connection drops the buffer): every
 * zero-copy segment still queued is released, in queue order, and the blocks
 * go back to the cache. The queue is empty and owns nothing afterwards (a
 * release callback that appends starts a new, independent queue content). */
void tw_wqueue_clear(tw_wqueue *q);

/* Bytes queued: O(1), for the transport's water marks. */
static inline size_t tw_wqueue_size(const tw_wqueue *q)
{
    return q->size;
}

static inline bool tw_wqueue_is_empty(const tw_wqueue *q)
{
    return q->size == 0;
}

/* Frees the calling thread's cached free blocks now and returns how many it
 * freed. Call it before tw_set_allocator replaces the allocator that made
 * them, or to give memory back after a burst. */
int tw_wqueue_cache_trim(void);

/* ---- Read buffer ------------------------------------------------------ */

/* The maximum size of an rbuf initialised with max == 0. */
#define TW_RBUF_DEFAULT_MAX (64 * 1024)

/* 24 bytes on LP64. Embed it and tw_rbuf_init it; tw_rbuf_clear frees it.
 * Holds at most UINT32_MAX bytes. */
typedef struct tw_rbuf {
    /* Private. */
    char *data;     /* NULL when empty: an empty rbuf owns nothing */
    uint32_t start; /* offset of the first byte held */
    uint32_t len;   /* bytes held */
    uint32_t cap;   /* bytes allocated */
    uint32_t max;   /* bound on len */
} tw_rbuf;

/* max: the most bytes it may hold; 0 means TW_RBUF_DEFAULT_MAX, larger than
 * UINT32_MAX means UINT32_MAX. */
void tw_rbuf_init(tw_rbuf *b, size_t max);

/* Changes the bound. Bytes already held stay even above a lowered bound;
 * appends fail until enough are consumed. max as for tw_rbuf_init. */
void tw_rbuf_set_max(tw_rbuf *b, size_t max);

/* Appends a copy of data[0..len) after the bytes held. Returns 0; TW_ENOBUFS
 * when the size would pass the maximum; TW_ENOMEM; TW_EINVAL for NULL data
 * with len > 0. On any error the buffer is unchanged (all or nothing).
 * Amortized O(len): consumed space is reclaimed by moving the live bytes down
 * only when the consumed prefix is at least as large as them, or else the
 * storage grows by doubling (up to the maximum, where moving is the only way
 * left). */
int tw_rbuf_append(tw_rbuf *b, const void *data, size_t len);

/* Drops the first n bytes: O(1) (only an offset moves). When the buffer
 * empties its storage is freed, so a protocol between frames owns nothing.
 * Returns 0, or TW_EINVAL (nothing dropped) when n exceeds the size. */
int tw_rbuf_consume(tw_rbuf *b, size_t n);

/* Drops everything and frees the storage; the bound stays. */
void tw_rbuf_clear(tw_rbuf *b);

/* The bytes held (peek): valid until the next append, consume or clear. NULL
 * when empty. */
static inline const char *tw_rbuf_data(const tw_rbuf *b)
{
    return b->data ? b->data + b->start : NULL;
}

static inline size_t tw_rbuf_size(const tw_rbuf *b)
{
    return b->len;
}

static inline size_t tw_rbuf_max(const tw_rbuf *b)
{
    return b->max;
}

#endif
