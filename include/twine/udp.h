/* UDP (twisted.internet.udp: DatagramProtocol, IReactorUDP, IReactorMulticast)
 * over IPv4 and IPv6.
 *
 * A UDP port is a bound datagram socket driven by one datagram protocol:
 *
 *     struct echo { tw_datagram_protocol base; };
 *     static void echo_datagram(tw_datagram_protocol *p, const char *data, size_t len,
 *                               const tw_address *from)
 *     {
 *         tw_udp_port_write(p->port, data, len, from);
 *     }
 *     static const tw_datagram_protocol_ops echo_ops = {.datagram_received = echo_datagram};
 *     struct echo e = {.base.ops = &echo_ops};
 *     tw_address a;
 *     tw_address_from_ip(&a, "0.0.0.0", 9999);
 *     tw_udp_port *port;
 *     int rc = tw_udp_listen(r, &a, NULL, &e.base, &port);
 *
 * ---- The order of events on one port
 *   tw_udp_listen → start_protocol → (datagram_received | connection_refused)* →
 *   tw_udp_port_stop_listening or reactor shutdown → stop_protocol → free
 * start_protocol, stop_protocol and free run exactly once for a protocol that
 * a port took (a successful tw_udp_listen); none of them runs for a protocol
 * whose listen failed. Nothing is delivered after stop_protocol.
 *
 * ---- Reading
 * Datagrams are read into one buffer per reactor (no allocation per
 * datagram): datagram_received gets a slice of it, borrowed for the call. A
 * datagram longer than the port's max_packet_size is dropped whole (never
 * delivered cut short) and logged at the debug level with its size. A port
 * reads at most a bounded number of datagrams per reactor wakeup, so one busy
 * port does not starve the others.
 *
 * ---- Writing
 * UDP makes no delivery promise and Twine adds no buffering: a write either
 * hands the datagram to the kernel at once or fails. When the kernel's send
 * buffer is full the datagram is dropped and TW_EAGAIN returned (as Twisted
 * does; retry later if it matters, or let the protocol's own retransmission
 * cope). A datagram the kernel accepted may still be lost on the way.
 *
 * ---- Connected UDP
 * tw_udp_port_connect fixes the peer: writes may omit the destination, only
 * that peer's datagrams are delivered (datagrams from others that were
 * queued before the connect are dropped too), and an ICMP "port
 * unreachable" from the peer comes back as connection_refused on a later
 * read. An unconnected port never gets connection_refused.
 *
 * Every open port is a reactor handle (reactor.h): stopping the reactor
 * stops it as tw_udp_port_stop_listening does. Everything here runs on the
 * reactor's thread. */
#ifndef TWINE_UDP_H
#define TWINE_UDP_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/uio.h>

#include <twine/reactor.h>
#include <twine/transport.h>

typedef struct tw_udp_port tw_udp_port;
typedef struct tw_datagram_protocol tw_datagram_protocol;

/* Twisted's default maxPacketSize. */
#define TW_UDP_DEFAULT_MAX_PACKET 8192
/* The largest max_packet_size. (The per-reactor read buffer is as large as
 * the largest max_packet_size among the reactor's ports.) */
#define TW_UDP_MAX_PACKET 65536

typedef struct tw_datagram_protocol_ops {
    /* doStart: the port is listening; p->port is set. Runs inside
     * tw_udp_listen, before it returns. The protocol may write, connect and
     * set options here, but not stop the port (that returns TW_EBUSY). May
     * be NULL. */
    void (*start_protocol)(tw_datagram_protocol *p);
    /* doStop: the port has stopped (its socket is closed; calls on p->port
     * return TW_ENOTCONN). p->port is still set during the call. May be
     * NULL. */
    void (*stop_protocol)(tw_datagram_protocol *p);
    /* One datagram of len bytes (0 is a valid length) from `from`. data and
     * from are borrowed for the call. May be NULL (datagrams are dropped). */
    void (*datagram_received)(tw_datagram_protocol *p, const char *data, size_t len,
                              const tw_address *from);
    /* Connected ports only: the peer answered a datagram with ICMP port
     * unreachable (the kernel reports it as ECONNREFUSED on a later read).
     * The port stays open. May be NULL. */
    void (*connection_refused)(tw_datagram_protocol *p);
    /* The destructor, once, after stop_protocol returned: releases what the
     * protocol owns, and p's own memory if it should be released (the port
     * never frees p itself). May be NULL. */
    void (*free)(tw_datagram_protocol *p);
} tw_datagram_protocol_ops;

/* Embed it as the first member of your protocol's struct and set ops. */
struct tw_datagram_protocol {
    const tw_datagram_protocol_ops *ops;
    tw_udp_port *port; /* set from start_protocol until free; else NULL */
};

typedef struct tw_udp_options {
    /* The largest datagram delivered; longer ones are dropped. 0:
     * TW_UDP_DEFAULT_MAX_PACKET; at most TW_UDP_MAX_PACKET. */
    size_t max_packet_size;
    /* SO_REUSEADDR and SO_REUSEPORT (Twisted's listenMultiple): several
     * sockets may bind the same address and port, as multicast listeners
     * sharing a group's port do. */
    bool reuse_addr;
} tw_udp_options;

/* listenUDP / listenMulticast: binds a datagram socket to `bind` (an AF_INET
 * or AF_INET6 address; port 0 picks a free port, tw_udp_port_get_host tells
 * which) and starts reading for p. An IPv6 port is IPv6-only (so udp:PORT and
 * udp6:PORT may coexist, as with stream ports). opts may be NULL.
 *
 * On success the port owns p until p's free op has run: p->port is set and
 * start_protocol has run before this returns. On error nothing was called
 * and p is untouched (still the caller's). Returns 0 and *out; TW_EINVAL
 * (NULL argument, bind not an IP address, max_packet_size too large);
 * TW_EBUSY (p is already some port's protocol); TW_ENOMEM; or -errno from
 * socket/setsockopt/bind (TW_EADDRINUSE, TW_EACCES, TW_EADDRNOTAVAIL,
 * TW_EAFNOSUPPORT when the system has no IPv6...) or from the reactor
 * (TW_EINVAL for an fd select cannot watch). */
int tw_udp_listen(tw_reactor *r, const tw_address *bind, const tw_udp_options *opts,
                  tw_datagram_protocol *p, tw_udp_port **out);

/* Stops the port (stopListening): closes the socket, stops reading,
 * unregisters the reactor handle, then runs the protocol's stop_protocol and
 * free, and frees the port. All of that happens before this returns, except
 * when called from inside one of this port's protocol callbacks: the socket
 * is closed at once and the rest runs right after that callback returns (so
 * the protocol may go on using its state until then). Stopping a port that
 * is stopping already returns 0 and does nothing. The port must not be used
 * once freed. Returns 0; TW_EINVAL for NULL; TW_EBUSY from inside
 * start_protocol (nothing done). */
int tw_udp_port_stop_listening(tw_udp_port *port);

/* Sends data[0..len) as one datagram to `to`, or to the connected peer when
 * to is NULL. The bytes are copied (by the kernel) before this returns.
 * Returns 0 when the kernel took the datagram; TW_EAGAIN when its send buffer
 * is full (the datagram is dropped, see Writing); TW_EMSGSIZE when the
 * datagram is too large to send; TW_ENOTCONN when to is NULL and the port is
 * not connected, or the port is stopped; TW_EISCONN when the port is
 * connected and `to` is another address; TW_EAFNOSUPPORT when to's family is
 * not the port's; TW_EINVAL (NULL data with len > 0, malformed address); or
 * another -errno from the kernel — on a connected port, TW_ECONNREFUSED when
 * the peer refused an earlier datagram (reported here instead of through
 * connection_refused). */
int tw_udp_port_write(tw_udp_port *port, const void *data, size_t len, const tw_address *to);

/* writeSequence: the buffers in order as ONE datagram (sendmsg with the
 * iovec, no copy). iovcnt from 0 to IOV_MAX. Returns as tw_udp_port_write
 * (TW_EINVAL also for a bad iovcnt or a NULL base with a length). */
int tw_udp_port_write_sequence(tw_udp_port *port, const struct iovec *iov, int iovcnt,
                               const tw_address *to);

/* connect: makes this a connected port talking to addr only (see Connected
 * UDP). addr must be an IP address of the port's family (no name lookup);
 * connecting again switches to the new peer. Returns 0; TW_EINVAL;
 * TW_EAFNOSUPPORT; TW_ENOTCONN (stopped); or -errno from connect. */
int tw_udp_port_connect(tw_udp_port *port, const tw_address *addr);

/* The address the socket is bound to (getHost). Returns 0, TW_EINVAL,
 * TW_ENOTCONN (stopped) or -errno. */
int tw_udp_port_get_host(const tw_udp_port *port, tw_address *out);

/* ---- Options. Setters return 0, TW_EINVAL, TW_ENOTCONN (stopped) or
 * -errno; getters return the value (>= 0) or one of those errors. */

/* SO_BROADCAST: may datagrams go to broadcast addresses. */
int tw_udp_port_set_broadcast_allowed(tw_udp_port *port, bool allowed);
int tw_udp_port_get_broadcast_allowed(const tw_udp_port *port); /* 0 or 1 */

/* ---- Multicast (IReactorMulticast). The group must be a multicast address
 * of the port's family (the port number in it is ignored). `interface` picks
 * the local interface; NULL lets the kernel choose by its routes. For IPv4
 * it is the interface's own address (tw_address_from_ip(&a, "127.0.0.1", 0));
 * for IPv6 an address whose scope names the interface ("::%lo"). A group
 * joined on an interface must be left on the same one. Returns 0;
 * TW_EINVAL (not a multicast group, bad interface); TW_EAFNOSUPPORT (family
 * is not the port's); TW_ENOTCONN (stopped); or -errno from the kernel
 * (TW_EADDRINUSE: joined already; TW_EADDRNOTAVAIL: not joined, on leave;
 * -ENODEV: no such interface). */
int tw_udp_port_join_group(tw_udp_port *port, const tw_address *group, const tw_address *interface);
int tw_udp_port_leave_group(tw_udp_port *port, const tw_address *group,
                            const tw_address *interface);

/* Hop limit of multicast datagrams sent (IP_MULTICAST_TTL /
 * IPV6_MULTICAST_HOPS), 0 to 255; the kernel's default is 1. */
int tw_udp_port_set_ttl(tw_udp_port *port, int ttl);
int tw_udp_port_get_ttl(const tw_udp_port *port);

/* Whether multicast datagrams this host sends come back to its own member
 * sockets (IP_MULTICAST_LOOP); on by default in the kernel. */
int tw_udp_port_set_loopback_mode(tw_udp_port *port, bool loop);
int tw_udp_port_get_loopback_mode(const tw_udp_port *port); /* 0 or 1 */

/* The interface multicast datagrams leave by, given as for join_group;
 * NULL goes back to the kernel's choice. */
int tw_udp_port_set_outgoing_interface(tw_udp_port *port, const tw_address *interface);

#endif
