/* The stream connection (stream.c): its struct, visible to src/net/ and to
 * tests that check its size. Everything else about it goes through
 * transport.h and net-internal.h. */
#ifndef TWINE_SRC_NET_STREAM_H
#define TWINE_SRC_NET_STREAM_H

#include <stdint.h>

#include <twine/buffer.h>
#include <twine/reactor.h>
#include <twine/transport.h>

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
    tw_io io;          /* io.data: struct stream_extra *, or NULL */
    tw_handle handle;  /* registered while open: reactor shutdown closes it */
    tw_wqueue queue;   /* what the kernel has not taken yet */
    uint32_t flags;    /* F_* in stream.c */
    int32_t reason;    /* the code of a loss decided but not yet delivered */
};

#endif
