/* The write queue (blocks of records) and the read buffer.
 *
 * A write queue is a list of fixed-size blocks. Each block holds a run of
 * 8-aligned records, written at `end` and read from `read`:
 *   a copy record:      {COPY, len} followed by len bytes of data;
 *   a zero-copy record: {ZEROCOPY} and the caller's pointer, length and
 *                       release callback.
 * An append whose last record (in the tail block) is a copy record extends it
 * in place, which is how small writes coalesce into one iovec. Zero-copy
 * descriptors live in the blocks too, so a zero-copy write allocates nothing
 * either. `skip` counts the bytes of the head block's first record already
 * consumed. A block whose records are all consumed goes back to the thread's
 * cache at once; so no records means no blocks means size 0. */
#include <twine/alloc.h>
#include <twine/buffer.h>
#include <twine/error.h>

#include <assert.h>
#include <pthread.h>
#include <stdalign.h>
#include <string.h>

/* ---- Blocks and the per-thread cache ---------------------------------- */

enum { REC_COPY = 1, REC_ZEROCOPY = 2 };
#define NOT_OPEN UINT32_MAX

struct tw__wblock {
    struct tw__wblock *next;
    size_t skip;   /* bytes of the first unconsumed record already consumed */
    uint32_t read; /* offset of that record */
    uint32_t end;  /* offset where the next record goes */
    uint32_t open; /* offset of the last record if appends may extend it (a copy
                    * record), else NOT_OPEN */
    uint32_t unused;
    alignas(8) unsigned char data[];
};

struct rec {
    uint32_t kind;
    uint32_t len; /* copy records: payload length; the payload follows */
};

struct zrec {
    uint32_t kind;
    uint32_t pad;
    const unsigned char *data;
    size_t len;
    tw_release_fn release;
    void *arg;
};

#define BLOCK_CAP ((uint32_t)(TW_WQUEUE_BLOCK_SIZE - offsetof(struct tw__wblock, data)))
#define REC_HDR   ((uint32_t)sizeof(struct rec))
#define ZREC_SIZE ((uint32_t)sizeof(struct zrec))
#define COPY_MAX  (BLOCK_CAP - REC_HDR) /* most payload one copy record holds */
#define ALIGN8(x) (((x) + 7u) & ~(uint32_t)7u)

static_assert(sizeof(tw_wqueue) <= 32, "the write queue header is part of the idle budget");
static_assert(sizeof(tw_rbuf) <= 24, "the read buffer header is part of the idle budget");
static_assert(sizeof(struct zrec) % 8 == 0, "records stay 8-aligned");
static_assert(offsetof(struct tw__wblock, data) % 8 == 0, "records stay 8-aligned");

struct block_cache {
    struct tw__wblock *free;
    int count;
    bool registered; /* the thread-exit destructor will free this cache */
};

static _Thread_local struct block_cache cache;
static pthread_key_t cache_key;
static pthread_once_t cache_key_once = PTHREAD_ONCE_INIT;
static bool cache_key_ok;

static int cache_free_all(struct block_cache *c)
{
    int n = 0;
    while (c->free) {
        struct tw__wblock *b = c->free;
        c->free = b->next;
        tw_free(b);
        n++;
    }
    c->count = 0;
    return n;
}

/* Runs at thread exit, while the thread's TLS is still there. */
static void cache_thread_exit(void *c)
{
    cache_free_all(c);
    ((struct block_cache *)c)->registered = false;
}

static void cache_key_create(void)
{
    cache_key_ok = pthread_key_create(&cache_key, cache_thread_exit) == 0;
}

static struct tw__wblock *block_get(void)
{
    struct tw__wblock *b = cache.free;
    if (b) {
        cache.free = b->next;
        cache.count--;
    } else {
        b = tw_malloc(TW_WQUEUE_BLOCK_SIZE);
        if (!b)
            return NULL;
    }
    b->next = NULL;
    b->skip = 0;
    b->read = b->end = 0;
    b->open = NOT_OPEN;
    return b;
}

static void block_put(struct tw__wblock *b)
{
    if (cache.count < TW_WQUEUE_CACHE_BLOCKS && !cache.registered) {
        /* Blocks cached on a thread must be freed when it exits: register
         * once per thread, or keep nothing if that cannot be done. */
        pthread_once(&cache_key_once, cache_key_create);
        cache.registered = cache_key_ok && pthread_setspecific(cache_key, &cache) == 0;
    }
    if (cache.count >= TW_WQUEUE_CACHE_BLOCKS || !cache.registered) {
        tw_free(b);
        return;
    }
    b->next = cache.free;
    cache.free = b;
    cache.count++;
}

int tw_wqueue_cache_trim(void)
{
    return cache_free_all(&cache);
}

/* ---- Records ----------------------------------------------------------- */

static inline struct rec *rec_at(struct tw__wblock *b, uint32_t off)
{
    return (struct rec *)(void *)(b->data + off);
}

static inline uint32_t rec_size(const struct rec *r)
{
    return r->kind == REC_COPY ? REC_HDR + ALIGN8(r->len) : ZREC_SIZE;
}

static inline size_t rec_len(const struct rec *r)
{
    return r->kind == REC_COPY ? r->len : ((const struct zrec *)(const void *)r)->len;
}

static inline const unsigned char *rec_bytes(const struct rec *r)
{
    return r->kind == REC_COPY ? (const unsigned char *)(r + 1)
                               : ((const struct zrec *)(const void *)r)->data;
}

/* ---- The write queue --------------------------------------------------- */

void tw_wqueue_init(tw_wqueue *q)
{
    *q = (tw_wqueue)TW_WQUEUE_INIT;
}

tw_wqueue *tw_wqueue_new(void)
{
    return tw_calloc(1, sizeof(tw_wqueue));
}

void tw_wqueue_free(tw_wqueue *q)
{
    if (!q)
        return;
    tw_wqueue_clear(q);
    tw_free(q);
}

/* Copies up to `len` bytes into the tail block: into its open copy record
 * (extending it) or a new one. Returns how many fitted. */
static size_t copy_into_tail(tw_wqueue *q, const unsigned char *src, size_t len)
{
    struct tw__wblock *t = q->tail;
    if (!t)
        return 0;
    struct rec *r;
    uint32_t used;
    if (t->open != NOT_OPEN) {
        r = rec_at(t, t->open);
        used = t->open + REC_HDR + r->len;
    } else if (t->end + REC_HDR < BLOCK_CAP) {
        r = rec_at(t, t->end);
        r->kind = REC_COPY;
        r->len = 0;
        t->open = t->end;
        used = t->end + REC_HDR;
    } else {
        return 0;
    }
    size_t n = BLOCK_CAP - used < len ? BLOCK_CAP - used : len;
    memcpy(t->data + used, src, n);
    r->len += (uint32_t)n;
    t->end = t->open + REC_HDR + ALIGN8(r->len);
    return n;
}

/* Room in the tail for more copied bytes without a new block. */
static size_t tail_copy_room(const tw_wqueue *q)
{
    const struct tw__wblock *t = q->tail;
    if (!t)
        return 0;
    if (t->open != NOT_OPEN)
        return BLOCK_CAP - (t->open + REC_HDR + rec_at((struct tw__wblock *)t, t->open)->len);
    return t->end + REC_HDR < BLOCK_CAP ? BLOCK_CAP - t->end - REC_HDR : 0;
}

static void link_block(tw_wqueue *q, struct tw__wblock *b)
{
    if (q->tail)
        q->tail->next = b;
    else
        q->head = b;
    q->tail = b;
}

int tw_wqueue_append_iov(tw_wqueue *q, const struct iovec *iov, int iovcnt, size_t skip,
                         size_t *appended)
{
    size_t put = 0;
    int rc = 0;
    for (int i = 0; i < iovcnt && rc == 0; i++) {
        size_t l = iov[i].iov_len;
        if (skip >= l) {
            skip -= l;
            continue;
        }
        rc = tw_wqueue_append(q, (const char *)iov[i].iov_base + skip, l - skip);
        if (rc == 0)
            put += l - skip;
        skip = 0;
    }
    if (appended)
        *appended = put;
    return rc;
}

int tw_wqueue_append(tw_wqueue *q, const void *data, size_t len)
{
    /* The steady path: a small write that fits the open record. */
    struct tw__wblock *t;
    if (q && (t = q->tail) && t->open != NOT_OPEN && data && len <= SIZE_MAX - q->size) {
        struct rec *r = rec_at(t, t->open);
        uint32_t used = t->open + REC_HDR + r->len;
        if (len <= BLOCK_CAP - used) {
            memcpy(t->data + used, data, len);
            r->len += (uint32_t)len;
            t->end = t->open + REC_HDR + ALIGN8(r->len);
            q->size += len;
            return 0;
        }
    }
    if (!q || (!data && len))
        return TW_EINVAL;
    if (len == 0)
        return 0;
    if (len > SIZE_MAX - q->size)
        return TW_EINVAL;

    /* Take every block the append needs before touching the queue, so that
     * a failure leaves it as it was. */
    size_t room = tail_copy_room(q);
    struct tw__wblock *fresh = NULL, **link = &fresh;
    if (len > room) {
        size_t blocks = (len - room) / COPY_MAX + ((len - room) % COPY_MAX != 0);
        while (blocks--) {
            struct tw__wblock *b = block_get();
            if (!b) {
                while (fresh) {
                    struct tw__wblock *next = fresh->next;
                    block_put(fresh);
                    fresh = next;
                }
                return TW_ENOMEM;
            }
            *link = b;
            link = &b->next;
        }
    }

    const unsigned char *src = data;
    size_t left = len;
    size_t n = copy_into_tail(q, src, left);
    src += n;
    left -= n;
    while (left) {
        struct tw__wblock *b = fresh;
        fresh = b->next;
        b->next = NULL;
        link_block(q, b);
        n = copy_into_tail(q, src, left);
        src += n;
        left -= n;
    }
    assert(!fresh);
    q->size += len;
    return 0;
}

int tw_wqueue_append_zerocopy(tw_wqueue *q, const void *data, size_t len, tw_release_fn release,
                              void *arg)
{
    if (!q || (!data && len))
        return TW_EINVAL;
    if (len > SIZE_MAX - q->size)
        return TW_EINVAL;
    if (len == 0) {
        if (release)
            release(arg);
        return 0;
    }
    if (!q->tail || BLOCK_CAP - q->tail->end < ZREC_SIZE) {
        struct tw__wblock *b = block_get();
        if (!b)
            return TW_ENOMEM;
        link_block(q, b);
    }
    struct tw__wblock *t = q->tail;
    struct zrec *z = (struct zrec *)(void *)(t->data + t->end);
    *z = (struct zrec){
        .kind = REC_ZEROCOPY, .data = data, .len = len, .release = release, .arg = arg};
    t->open = NOT_OPEN;
    t->end += ZREC_SIZE;
    q->size += len;
    return 0;
}

int tw_wqueue_fill_iov(const tw_wqueue *q, struct iovec *iov, int max)
{
    if (!q || !iov || max <= 0)
        return 0;
    int n = 0;
    for (struct tw__wblock *b = q->head; b; b = b->next) {
        size_t skip = b->skip;
        for (uint32_t off = b->read; off < b->end;) {
            const struct rec *r = rec_at(b, off);
            const unsigned char *base = rec_bytes(r) + skip;
            size_t len = rec_len(r) - skip;
            skip = 0;
            off += rec_size(r);
            if (n > 0 && (unsigned char *)iov[n - 1].iov_base + iov[n - 1].iov_len == base) {
                iov[n - 1].iov_len += len;
                continue;
            }
            if (n == max)
                return n;
            iov[n].iov_base = (void *)base;
            iov[n].iov_len = len;
            n++;
        }
    }
    return n;
}

int tw_wqueue_consume(tw_wqueue *q, size_t n)
{
    if (!q || n > q->size)
        return TW_EINVAL;
    while (n > 0) {
        struct tw__wblock *b = q->head;
        struct rec *r = rec_at(b, b->read);
        size_t avail = rec_len(r) - b->skip;
        if (n < avail) {
            b->skip += n;
            q->size -= n;
            return 0;
        }
        n -= avail;
        q->size -= avail;
        tw_release_fn release = NULL;
        void *arg = NULL;
        if (r->kind == REC_ZEROCOPY) {
            struct zrec *z = (struct zrec *)(void *)r;
            release = z->release;
            arg = z->arg;
        }
        b->skip = 0;
        b->read += rec_size(r);
        if (b->read == b->end) {
            q->head = b->next;
            if (!q->head)
                q->tail = NULL;
            block_put(b);
        }
        /* The queue is consistent before the callback runs, which may append
         * to it or clear it. */
        if (release) {
            uint32_t gen = q->gen;
            release(arg);
            if (q->gen != gen)
                return 0;
        }
    }
    return 0;
}

void tw_wqueue_clear(tw_wqueue *q)
{
    if (!q)
        return;
    struct tw__wblock *b = q->head;
    q->head = q->tail = NULL;
    q->size = 0;
    q->gen++;
    while (b) {
        struct tw__wblock *next = b->next;
        for (uint32_t off = b->read; off < b->end;) {
            struct rec *r = rec_at(b, off);
            off += rec_size(r);
            if (r->kind == REC_ZEROCOPY) {
                struct zrec *z = (struct zrec *)(void *)r;
                if (z->release)
                    z->release(z->arg);
            }
        }
        block_put(b);
        b = next;
    }
}

/* ---- The read buffer --------------------------------------------------- */

#define RBUF_MIN_CAP 64u

static uint32_t clamp_max(size_t max)
{
    if (max == 0)
        return TW_RBUF_DEFAULT_MAX;
    return max > UINT32_MAX ? UINT32_MAX : (uint32_t)max;
}

void tw_rbuf_init(tw_rbuf *b, size_t max)
{
    *b = (tw_rbuf){.max = clamp_max(max)};
}

void tw_rbuf_set_max(tw_rbuf *b, size_t max)
{
    b->max = clamp_max(max);
}

int tw_rbuf_append(tw_rbuf *b, const void *data, size_t len)
{
    if (!b || (!data && len))
        return TW_EINVAL;
    if (len == 0)
        return 0;
    if (len > b->max || b->len > b->max - len)
        return TW_ENOBUFS;
    uint32_t need = b->len + (uint32_t)len;

    if (b->start + (uint64_t)need > b->cap) {
        /* Move down only when that costs no more than the bytes consumed
         * since the last move (amortized O(1) per byte), or when the storage
         * cannot grow any more. */
        if (need <= b->cap && (b->start >= b->len || b->cap >= b->max)) {
            memmove(b->data, b->data + b->start, b->len);
            b->start = 0;
        } else {
            uint64_t cap = b->cap ? b->cap : RBUF_MIN_CAP;
            while (cap < need)
                cap *= 2;
            if (cap > b->max)
                cap = b->max; /* >= need, checked above */
            char *fresh = tw_malloc((size_t)cap);
            if (!fresh)
                return TW_ENOMEM;
            if (b->len)
                memcpy(fresh, b->data + b->start, b->len);
            tw_free(b->data);
            b->data = fresh;
            b->cap = (uint32_t)cap;
            b->start = 0;
        }
    }
    memcpy(b->data + b->start + b->len, data, len);
    b->len = need;
    return 0;
}

int tw_rbuf_consume(tw_rbuf *b, size_t n)
{
    if (!b || n > b->len)
        return TW_EINVAL;
    if (n == b->len) {
        tw_rbuf_clear(b);
        return 0;
    }
    b->start += (uint32_t)n;
    b->len -= (uint32_t)n;
    return 0;
}

void tw_rbuf_clear(tw_rbuf *b)
{
    if (!b)
        return;
    tw_free(b->data);
    b->data = NULL;
    b->start = b->len = b->cap = 0;
}
