/* The stream connection (stream.c): its struct, visible to src/net/ and to
 * tests that check its size. Everything else about it goes through
 * transport.h and net-internal.h. */
#ifndef TWINE_SRC_NET_STREAM_H
#define TWINE_SRC_NET_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include <twine/buffer.h>
#include <twine/reactor.h>
#include <twine/transport.h>

#include "net/fdtransport.h"
#include "reactor/completion.h"

/* A connection that reads and writes through completions (completion.h) is
 * never a watcher: the members of its tw_io that only the reactor uses hold
 * its completion target instead, and fd and data stay where they are. */
struct tw__stream_cq {
    int fd;                      /* io.fd */
    void (*unused)(void);        /* io.fn */
    void *data;                  /* io.data */
    struct tw__cq_target target; /* io.reactor, io.events, io.backend */
    int32_t slot;                /* io.seq: a send slot held (stream.c), or -1 */
    uint32_t slot_len, slot_off; /* its bytes, and how many are sent */
};
_Static_assert(offsetof(struct tw__stream_cq, fd) == offsetof(tw_io, fd), "fd overlays");
_Static_assert(offsetof(struct tw__stream_cq, data) == offsetof(tw_io, data), "data overlays");
_Static_assert(sizeof(struct tw__stream_cq) <= sizeof(tw_io), "fits in a tw_io");

/* One open (or lost, still referenced) TCP or Unix stream connection.
 *
 * Memory budget: 160 bytes on LP64, what an idle connection costs. What few
 * connections need (a registered producer, water marks other than the
 * defaults, descriptors waiting to be sent, a connector's lost hook) lives
 * in a separate block allocated on first use and reached through io.data,
 * which the connection does not otherwise need (it finds itself from its
 * io by container_of). */
struct tw__stream {
    tw_transport base; /* first: a tw_transport * is a struct tw__stream * */
    union {
        tw_io io;                /* io.data: struct stream_extra *, or NULL */
        struct tw__stream_cq cq; /* completion mode (F_CQ in stream.c) */
    };
    tw_handle handle;       /* registered while open: reactor shutdown closes it */
    tw_wqueue queue;        /* what the kernel has not taken yet */
    struct tw__fd_state fd; /* TW__FD_* and stream.c's F_* flags; a loss's code */
};

#endif
