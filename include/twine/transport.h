/* Transports (ITransport, ITCPTransport, IProducer/IConsumer): one ops table
 * for every kind of connection — TCP, Unix, TLS, pipes, in-memory. A
 * protocol talks to its connection only through the tw_transport_* calls
 * below; whoever implements a transport fills in tw_transport_ops.
 *
 * ---- Lifetime (reference counted)
 * A transport is made by whoever opens the connection (a listening port, a
 * connector, an adopt call, a test) with one reference, which the connection
 * holds until it has called the protocol's connection_lost and released the
 * protocol. A protocol may use transport->... freely until connection_lost
 * returns; anyone who keeps the pointer longer takes a reference
 * (tw_transport_ref) and drops it with tw_transport_unref. After the
 * connection is lost every call below returns TW_ENOTCONN (or does nothing,
 * for the void ones) — never undefined behaviour.
 *
 * ---- Writing and flow control (DESIGN.md)
 * write never blocks and never fails for lack of room: it queues what the
 * kernel does not take now. Writes after lose_connection or
 * lose_write_connection are refused with TW_ENOTCONN (nothing queued).
 * Above the high-water mark (64 KiB by default) a registered streaming
 * producer is paused; once the buffer has drained to the low-water mark
 * (16 KiB by default) it is resumed. A pull producer (streaming == false) is
 * asked for more with resume_producing when it registers and each time the
 * buffer drains to the low-water mark. When the connection is lost, a
 * registered producer gets stop_producing (once) and is unregistered.
 *
 * The transport is itself a producer of what it reads: pause_producing stops
 * reading (the kernel's receive window then holds the peer back) and
 * resume_producing starts again; tw_transport_producer gives the tw_producer
 * view of it, so one connection can be registered as the producer of
 * another (a proxy: pause the reader when the writer's buffer fills).
 *
 * ---- Closing
 * lose_connection: stop reading, flush what is queued, then close; the
 * protocol's connection_lost gets TW_ECONNDONE. abort_connection: drop the
 * queue and close now (connection_lost gets TW_ECONNABORTED). A connection
 * the peer closes gives TW_ECONNDONE (end of file) or the socket's error
 * (-ECONNRESET, -EPIPE, ...). lose_write_connection: flush, then shut the write side
 * down (the peer reads end of file); reading goes on. Closing a closed or
 * closing transport does nothing and returns 0. connection_lost is never
 * called from inside the call that closes: it runs from the reactor on its
 * next iteration, so a protocol can close from any of its callbacks and go
 * on using its state until it returns. */
#ifndef TWINE_TRANSPORT_H
#define TWINE_TRANSPORT_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>

#include <twine/alloc.h>
#include <twine/reactor.h>

typedef struct tw_protocol tw_protocol;
typedef struct tw_transport tw_transport;

/* ---- Addresses (IAddress: IPv4Address, IPv6Address, UNIXAddress) */

/* Families of addresses that are no socket's (values no socket family
 * takes): a child process (Twisted's _ProcessAddress; u.proc.pid is its pid,
 * 0 when not known) and a pipe (PipeAddress: standard I/O). process.h makes
 * them. */
#define TW_AF_PROCESS 0xfff0
#define TW_AF_PIPE    0xfff1

/* A socket address of any family the transports speak: AF_INET, AF_INET6,
 * AF_UNIX (path, abstract or unnamed), or TW_AF_PROCESS / TW_AF_PIPE. len == 0
 * means "no address". */
typedef struct tw_address {
    socklen_t len;
    union {
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
        struct sockaddr_un un;
        struct sockaddr_storage storage;
        struct {
            sa_family_t family; /* TW_AF_PROCESS or TW_AF_PIPE */
            pid_t pid;
        } proc;
    } u;
} tw_address;

/* Room for any formatted address, NUL included: a Unix path of 107 bytes
 * quoted byte by byte as \xNN is the longest. */
#define TW_ADDRESS_STRLEN (2 + 108 * 4 + 1)

/* Fills *out from an IPv4 or IPv6 literal (IPv6 may carry a scope, "fe80::1%lo")
 * and a port. Returns 0 or TW_EINVAL (not a literal, port > 65535). */
int tw_address_from_ip(tw_address *out, const char *ip, unsigned port);

/* Fills *out with a Unix socket address: a file path, or, with abstract, a
 * name in Linux's abstract namespace (len bytes, NULs allowed; the leading NUL
 * is added here). Returns 0 or TW_EINVAL (empty, too long: 107 bytes at most,
 * a NUL inside a file path). */
int tw_address_from_unix(tw_address *out, const char *path, size_t len, bool abstract);

/* Writes a one-line, printable form into buf (size >= TW_ADDRESS_STRLEN is
 * always enough; shorter buffers get a cut, NUL-terminated string):
 * "127.0.0.1:8080", "[::1]:8080", "[fe80::1%2]:80", "/run/app.sock",
 * "@name" (abstract; bytes outside printable ASCII as \xNN), "unnamed"
 * (a Unix socket without a name), "process 1234" (TW_AF_PROCESS; "process"
 * when the pid is 0), "pipe" (TW_AF_PIPE), "none" (len == 0). Returns buf. */
const char *tw_address_format(const tw_address *a, char *buf, size_t size);

/* The port of an AF_INET or AF_INET6 address; 0 for any other. */
unsigned tw_address_port(const tw_address *a);

/* ---- Producers (IPushProducer / IPullProducer) */

typedef struct tw_producer tw_producer;

typedef struct tw_producer_ops {
    /* Streaming producers only: stop producing until resume_producing. */
    void (*pause_producing)(tw_producer *p);
    /* Streaming: produce again. Pull: produce one more piece now (write it
     * to the consumer from inside this call). */
    void (*resume_producing)(tw_producer *p);
    /* The consumer is going away (its connection was lost): stop for good.
     * The consumer has already unregistered the producer. May be NULL. */
    void (*stop_producing)(tw_producer *p);
} tw_producer_ops;

/* Embed it in your producer. */
struct tw_producer {
    const tw_producer_ops *ops;
};

/* ---- The transport */

typedef enum tw_transport_option {
    TW_OPT_TCP_NODELAY,   /* value 0/1: Nagle off when 1 (TCP only) */
    TW_OPT_TCP_KEEPALIVE, /* value 0/1: SO_KEEPALIVE (TCP only) */
} tw_transport_option;

/* What a transport implements. Every op but the optional ones must be set;
 * callers use the tw_transport_* functions, which check the state the
 * contracts above describe before they reach an op. */
typedef struct tw_transport_ops {
    const char *name; /* "tcp", "unix", "tls", "string", ...: for logs */
    int (*write)(tw_transport *t, const void *data, size_t len);
    int (*write_iov)(tw_transport *t, const struct iovec *iov, int iovcnt);
    int (*write_zerocopy)(tw_transport *t, const void *data, size_t len, tw_release_fn release,
                          void *arg);
    int (*lose_connection)(tw_transport *t);
    int (*abort_connection)(tw_transport *t);
    int (*lose_write_connection)(tw_transport *t);
    int (*get_peer)(const tw_transport *t, tw_address *out);
    int (*get_host)(const tw_transport *t, tw_address *out);
    int (*pause_producing)(tw_transport *t);
    int (*resume_producing)(tw_transport *t);
    int (*register_producer)(tw_transport *t, tw_producer *producer, bool streaming);
    int (*unregister_producer)(tw_transport *t);
    size_t (*write_buffer_size)(const tw_transport *t);
    int (*set_write_buffer_limits)(tw_transport *t, size_t high, size_t low);
    /* Optional (NULL: TW_ENOTSUP). */
    int (*set_option)(tw_transport *t, tw_transport_option option, int value);
    int (*send_fds)(tw_transport *t, const int *fds, size_t n);
    /* The last reference is gone: free the transport's memory. */
    void (*destroy)(tw_transport *t);
} tw_transport_ops;

/* The members a transport implementation sets (tw_transport_init); users read
 * protocol and reactor. */
struct tw_transport {
    const tw_transport_ops *ops;
    tw_protocol *protocol; /* the protocol it feeds; NULL once released */
    tw_reactor *reactor;   /* NULL for a transport that needs none (in-memory) */
    /* Private. */
    tw_producer as_producer; /* tw_transport_producer's view */
    uint32_t refs;
};

/* For implementations: sets ops, reactor and one reference; protocol NULL. */
void tw_transport_init(tw_transport *t, const tw_transport_ops *ops, tw_reactor *r);

tw_transport *tw_transport_ref(tw_transport *t);
/* Drops a reference; the last calls ops->destroy. NULL is ignored. */
void tw_transport_unref(tw_transport *t);

/* Copies data[0..len) into the queue (see Writing). Returns 0, TW_ENOTCONN,
 * TW_EINVAL (NULL data with len > 0), or TW_ENOMEM (nothing queued). */
int tw_transport_write(tw_transport *t, const void *data, size_t len);

/* writeSequence: the buffers in order, as one writev where the kernel takes
 * them at once. Returns as tw_transport_write (all or nothing). */
int tw_transport_write_sequence(tw_transport *t, const struct iovec *iov, int iovcnt);

/* Queues data itself without copying; release(arg) runs exactly once when the
 * bytes are written or dropped (see buffer.h's zero-copy contract). On error
 * release is not called and the caller still owns data. */
int tw_transport_write_zerocopy(tw_transport *t, const void *data, size_t len,
                                tw_release_fn release, void *arg);

int tw_transport_lose_connection(tw_transport *t);
int tw_transport_abort_connection(tw_transport *t);
/* Returns 0, TW_ENOTCONN, or TW_ENOTSUP for a transport that cannot half-close. */
int tw_transport_lose_write_connection(tw_transport *t);

/* Fill *out. Returns 0, TW_ENOTCONN, or -errno. */
int tw_transport_get_peer(const tw_transport *t, tw_address *out);
int tw_transport_get_host(const tw_transport *t, tw_address *out);

/* Stop / start reading (see above). Pauses do not nest: one resume undoes any
 * number of pauses. Return 0 or TW_ENOTCONN. */
int tw_transport_pause_producing(tw_transport *t);
int tw_transport_resume_producing(tw_transport *t);
/* The transport seen as a producer: pause/resume as above; stop_producing
 * is lose_connection. Valid as long as the transport is. */
tw_producer *tw_transport_producer(tw_transport *t);

/* Returns 0; TW_EBUSY if a producer is registered already; TW_ENOTCONN (a
 * producer registering on a lost connection is not told stop_producing:
 * the error is its answer); TW_EINVAL for a NULL producer or ops. */
int tw_transport_register_producer(tw_transport *t, tw_producer *producer, bool streaming);
/* Returns 0 (also when none is registered) or TW_ENOTCONN. */
int tw_transport_unregister_producer(tw_transport *t);

/* Bytes queued, not yet taken by the kernel (0 when not connected). */
size_t tw_transport_write_buffer_size(const tw_transport *t);
/* Sets the water marks: low <= high, high > 0; 0, 0 restores the defaults.
 * Returns 0, TW_EINVAL or TW_ENOTCONN. Takes effect at the next write or
 * drain. */
int tw_transport_set_write_buffer_limits(tw_transport *t, size_t high, size_t low);
#define TW_TRANSPORT_HIGH_WATER (64 * 1024)
#define TW_TRANSPORT_LOW_WATER  (16 * 1024)

/* Returns 0, TW_ENOTSUP, TW_ENOTCONN, TW_EINVAL or -errno. */
int tw_transport_set_option(tw_transport *t, tw_transport_option option, int value);

/* Unix sockets (sendFileDescriptor): sends dup'ed copies of fds[0..n) with
 * the next byte queued (SCM_RIGHTS); the caller keeps its own fds. A write
 * must follow (descriptors ride on data); n <= 253. Returns 0, TW_ENOTSUP
 * (not a Unix socket), TW_EINVAL, TW_ENOTCONN, TW_ENOMEM or -errno (dup).
 * The receiving protocol gets them through its fd_received op. */
int tw_transport_send_fds(tw_transport *t, const int *fds, size_t n);

#endif
