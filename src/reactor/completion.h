/* The completion seam: operations a completion backend (io_uring) performs
 * for transports, in the reactor layer's terms. Transports include this
 * header (it is the reactor's interface to them, as reactor.h is to users);
 * a reactor whose backend has no such operations returns NULL from
 * tw__reactor_cq, and the transport uses readiness (tw_io) instead.
 *
 * A request is made for a target, a struct the owner embeds in its object,
 * with an op number of the owner's choosing (1..7), which comes back with
 * every completion. The backend keeps no reference: the owner keeps its
 * object alive until the last completion of each request it made (the one
 * without TW__CQ_MORE), which always comes, also after a cancel (then
 * usually with -ECANCELED) and when the reactor is freed (then with
 * TW__CQ_DYING set: the owner only lets go of what it holds, closes an fd
 * that res may carry, and calls nothing of the reactor's). Completions are delivered from the
 * reactor's poll, as fd events are.
 *
 * Requests are batched: they reach the kernel with the next wait, unless
 * said otherwise. Each call returns 0 or a negative error (TW_ESHUTDOWN while
 * the reactor is being freed, TW_ENOMEM, -errno) with no request made and no
 * completion to come. */
#ifndef TWINE_SRC_REACTOR_COMPLETION_H
#define TWINE_SRC_REACTOR_COMPLETION_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <twine/reactor.h>

struct tw__cq_target;

/* res: bytes, a new fd or 0 on success, or a negative error. data: the
 * bytes received, for a receive (valid only during the call; the buffer goes
 * back to the shared pool when it returns), else NULL. */
typedef void (*tw__cq_fn)(struct tw__cq_target *t, unsigned op, int res, unsigned flags,
                          const char *data);

struct tw__cq_target {
    tw__cq_fn complete;
    struct tw__cq_target *next; /* the backend's (the flush list) */
};

/* Completion flags. */
enum {
    TW__CQ_MORE = 1u,  /* the request goes on: this is not its last completion */
    TW__CQ_NOTIF = 2u, /* a zero-copy send's last completion: the bytes are free again */
    TW__CQ_DYING = 4u, /* the reactor is being freed (see above) */
};

/* The op number of the call a flush_later asks for. */
#define TW__CQ_FLUSH 0u

struct tw__cq_ops {
    /* Multishot receive on a connected stream socket into the reactor's
     * shared buffers (no buffer per connection). Each completion: res > 0
     * bytes at data, 0 end of file, < 0 an error. Without TW__CQ_MORE the
     * receive has ended; -ENOBUFS means the shared buffers ran short, and the
     * owner asks again (nothing was lost: the bytes wait in the socket). */
    int (*recv)(tw_reactor *r, struct tw__cq_target *t, unsigned op, int fd);
    /* One send of iov[0..cnt) (the array is copied; the bytes must stay
     * unchanged until the completion, or with zerocopy until the
     * TW__CQ_NOTIF one). res: bytes taken (the first completion of a
     * zero-copy send has TW__CQ_MORE set). MSG_NOSIGNAL always. */
    int (*send)(tw_reactor *r, struct tw__cq_target *t, unsigned op, int fd,
                const struct iovec *iov, int cnt, bool zerocopy);
    /* connect(2) through the ring; addr must stay valid until the
     * completion (res 0 or -errno). */
    int (*connect)(tw_reactor *r, struct tw__cq_target *t, unsigned op, int fd,
                   const struct sockaddr *addr, socklen_t len);
    /* A completion (res 0) on the next iteration: a wakeup that needs no
     * memory. */
    int (*nop)(tw_reactor *r, struct tw__cq_target *t, unsigned op);
    /* Cancels t's request op (every one in flight). With now, it reaches the
     * kernel before this returns, and so does everything batched so far: a
     * request holds its file open, so cancel now before closing. */
    int (*cancel)(tw_reactor *r, struct tw__cq_target *t, unsigned op, bool now);
    /* Closes fd through the ring, now (with everything batched so far). */
    int (*close)(tw_reactor *r, int fd);
    /* Calls t->complete(t, TW__CQ_FLUSH, 0, 0, NULL) just before the next
     * submission, so that what an iteration writes goes out as one send.
     * Once per call; t must not be queued already (the owner tracks it). */
    void (*flush_later)(tw_reactor *r, struct tw__cq_target *t);
    /* Sends of at least this many bytes are worth zero copy (measured:
     * bench/sendzc.c); SIZE_MAX: never. */
    size_t zerocopy_min;
    /* Zero copy to loopback peers too (never by default: the kernel copies
     * for the local receiver anyway); set with an explicit threshold in
     * TWINE_IO_URING_ZC_MIN, for measuring. */
    bool zerocopy_loopback;
};

/* The completion operations of r's backend, or NULL. */
const struct tw__cq_ops *tw__reactor_cq(const tw_reactor *r);

/* Counts readers and writers that are not fd watchers (a connection reading
 * through completions) in tw_reactor_get_state, so the dirty-reactor check
 * sees them. */
void tw__reactor_count_io(tw_reactor *r, int readers, int writers);

#endif
