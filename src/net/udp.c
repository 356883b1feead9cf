/* UDP ports (udp.h): a non-blocking datagram socket, one reader watcher, one
 * reactor handle, and a read buffer shared by every port of the reactor. */
#include <twine/udp.h>

#include <limits.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <twine/alloc.h>
#include <twine/error.h>
#include <twine/log.h>

#define NS "twine.udp"

/* Datagrams read per wakeup before the port yields to the rest of the loop
 * (libuv reads 32 too): level-triggered readiness brings it back next
 * iteration if more are queued. */
enum { READS_PER_WAKEUP = 32 };

/* The read buffer of one reactor. Reactors live on one thread, so the list
 * of them is per thread and needs no lock. The buffer is as large as the
 * largest max_packet_size among the reactor's ports; it only grows when a
 * port listens. A port that listens from inside datagram_received may grow
 * it while the datagram being delivered still points into it: the old
 * buffer is then kept as `retired` until that callback returns. */
struct udp_rbuf {
    struct udp_rbuf *next;
    tw_reactor *reactor;
    char *buf;
    size_t cap;
    char *retired;
    unsigned users;  /* ports of this reactor */
    bool delivering; /* a datagram in buf (or retired) is borrowed right now */
};

static _Thread_local struct udp_rbuf *rbufs;

struct tw_udp_port {
    tw_io io;
    tw_handle handle;
    tw_reactor *reactor;
    tw_datagram_protocol *protocol;
    struct udp_rbuf *rbuf;
    size_t max_packet;
    int family;
    tw_address peer; /* the connected peer; len 0 when not connected */
    unsigned busy;   /* protocol callbacks of this port running now */
    bool starting;   /* inside start_protocol */
    bool stopping;   /* stop_listening (or shutdown) happened: socket closed */
};

/* ---- The shared read buffer */

static int rbuf_reserve(struct udp_rbuf *rb, size_t size)
{
    if (rb->cap >= size)
        return 0;
    char *nb = tw_malloc(size);
    if (!nb)
        return TW_ENOMEM;
    if (rb->delivering && !rb->retired)
        rb->retired = rb->buf;
    else
        tw_free(rb->buf); /* not borrowed: either idle, or made during this delivery */
    rb->buf = nb;
    rb->cap = size;
    return 0;
}

static void rbuf_release(struct udp_rbuf *rb)
{
    if (--rb->users)
        return;
    for (struct udp_rbuf **pp = &rbufs; *pp; pp = &(*pp)->next) {
        if (*pp == rb) {
            *pp = rb->next;
            break;
        }
    }
    tw_free(rb->retired);
    tw_free(rb->buf);
    tw_free(rb);
}

/* Takes a use of r's buffer, made at least `size` bytes. */
static struct udp_rbuf *rbuf_acquire(tw_reactor *r, size_t size)
{
    struct udp_rbuf *rb = rbufs;
    while (rb && rb->reactor != r)
        rb = rb->next;
    if (!rb) {
        rb = tw_calloc(1, sizeof *rb);
        if (!rb)
            return NULL;
        rb->reactor = r;
        rb->next = rbufs;
        rbufs = rb;
    }
    rb->users++;
    if (rbuf_reserve(rb, size) != 0) {
        rbuf_release(rb);
        return NULL;
    }
    return rb;
}

static void rbuf_delivered(struct udp_rbuf *rb)
{
    rb->delivering = false;
    if (rb->retired) {
        tw_free(rb->retired);
        rb->retired = NULL;
    }
}

/* ---- Addresses */

static socklen_t family_len(int family)
{
    return family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
}

/* 0 for a well-formed IPv4 or IPv6 address, else TW_EINVAL. */
static int check_ip(const tw_address *a)
{
    if (!a)
        return TW_EINVAL;
    int family = a->u.sa.sa_family;
    if (family != AF_INET && family != AF_INET6)
        return TW_EINVAL;
    if (a->len < family_len(family) || a->len > sizeof a->u)
        return TW_EINVAL;
    return 0;
}

static bool same_peer(const tw_address *a, const tw_address *b)
{
    if (a->u.sa.sa_family != b->u.sa.sa_family)
        return false;
    if (a->u.sa.sa_family == AF_INET)
        return a->u.in.sin_port == b->u.in.sin_port &&
               a->u.in.sin_addr.s_addr == b->u.in.sin_addr.s_addr;
    return a->u.in6.sin6_port == b->u.in6.sin6_port &&
           memcmp(&a->u.in6.sin6_addr, &b->u.in6.sin6_addr, sizeof(struct in6_addr)) == 0;
}

/* ---- Stopping */

static void port_close_socket(tw_udp_port *port)
{
    port->stopping = true;
    tw_reactor_remove_reader(port->reactor, &port->io);
    tw_reactor_remove_handle(port->reactor, &port->handle);
    close(port->io.fd);
    port->io.fd = -1;
}

/* stop_protocol, free, and the port's memory: the socket is closed already
 * and no callback of this port is running. */
static void port_finish(tw_udp_port *port)
{
    tw_datagram_protocol *p = port->protocol;
    if (p->ops->stop_protocol)
        p->ops->stop_protocol(p);
    p->port = NULL;
    port->protocol = NULL;
    if (p->ops->free)
        p->ops->free(p);
    rbuf_release(port->rbuf);
    tw_free(port);
}

int tw_udp_port_stop_listening(tw_udp_port *port)
{
    if (!port)
        return TW_EINVAL;
    if (port->starting)
        return TW_EBUSY;
    if (port->stopping)
        return 0;
    port_close_socket(port);
    if (port->busy == 0)
        port_finish(port);
    return 0;
}

static void port_handle_close(tw_handle *h)
{
    tw_udp_port *port = (tw_udp_port *)((char *)h - offsetof(tw_udp_port, handle));
    tw_udp_port_stop_listening(port);
}

/* ---- Reading */

static void port_readable(tw_io *io, unsigned events)
{
    tw_udp_port *port = io->data;
    struct udp_rbuf *rb = port->rbuf;
    tw_datagram_protocol *p = port->protocol;

    for (int i = 0; i < READS_PER_WAKEUP; i++) {
        tw_address from;
        struct iovec iov = {.iov_base = rb->buf, .iov_len = port->max_packet};
        struct msghdr msg = {
            .msg_name = &from.u,
            .msg_namelen = sizeof from.u,
            .msg_iov = &iov,
            .msg_iovlen = 1,
        };
        /* MSG_TRUNC: the length of the whole datagram even when it did not
         * fit, so the drop can be logged with its size. */
        ssize_t n = recvmsg(io->fd, &msg, MSG_TRUNC);
        if (n < 0) {
            int err = errno;
            if (err == EINTR)
                continue;
            if (err == EAGAIN || err == EWOULDBLOCK)
                return;
            if (err == ECONNREFUSED) {
                if (port->peer.len == 0 || !p->ops->connection_refused)
                    continue;
                port->busy++;
                p->ops->connection_refused(p);
                port->busy--;
                if (port->stopping) {
                    port_finish(port);
                    return;
                }
                continue;
            }
            /* Other errors (ICMP host or network unreachable on a connected
             * port, ENOBUFS...) concern one datagram, not the port. */
            tw_log_debug(NS, "recvmsg on fd %d: %s", io->fd, tw_strerror(-err));
            continue;
        }
        from.len = msg.msg_namelen;
        if ((msg.msg_flags & MSG_TRUNC) || (size_t)n > port->max_packet) {
            if (tw_log_get_level() <= TW_LOG_DEBUG) {
                char where[TW_ADDRESS_STRLEN];
                tw_log_debug(NS,
                             "dropped a %zd-byte datagram from %s: longer than "
                             "max_packet_size %zu",
                             n, tw_address_format(&from, where, sizeof where), port->max_packet);
            }
            continue;
        }
        /* connect() does not flush what other senders queued before it. */
        if (port->peer.len && !same_peer(&from, &port->peer))
            continue;
        if (!p->ops->datagram_received)
            continue;
        port->busy++;
        rb->delivering = true;
        p->ops->datagram_received(p, rb->buf, (size_t)n, &from);
        rbuf_delivered(rb);
        port->busy--;
        if (port->stopping) {
            port_finish(port);
            return;
        }
    }
}

/* ---- Listening */

static int set_int_opt(int fd, int level, int name, int value)
{
    if (setsockopt(fd, level, name, &value, sizeof value) != 0)
        return -errno;
    return 0;
}

int tw_udp_listen(tw_reactor *r, const tw_address *bind_addr, const tw_udp_options *opts,
                  tw_datagram_protocol *p, tw_udp_port **out)
{
    if (!r || !p || !p->ops || !out)
        return TW_EINVAL;
    int rc = check_ip(bind_addr);
    if (rc)
        return rc;
    size_t max_packet =
        opts && opts->max_packet_size ? opts->max_packet_size : TW_UDP_DEFAULT_MAX_PACKET;
    if (max_packet > TW_UDP_MAX_PACKET)
        return TW_EINVAL;
    if (p->port)
        return TW_EBUSY;

    tw_udp_port *port = tw_calloc(1, sizeof *port);
    if (!port)
        return TW_ENOMEM;
    port->rbuf = rbuf_acquire(r, max_packet);
    if (!port->rbuf) {
        tw_free(port);
        return TW_ENOMEM;
    }
    port->reactor = r;
    port->protocol = p;
    port->max_packet = max_packet;
    port->family = bind_addr->u.sa.sa_family;

    int fd = socket(port->family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        rc = -errno;
        goto fail;
    }
    if (port->family == AF_INET6 && (rc = set_int_opt(fd, IPPROTO_IPV6, IPV6_V6ONLY, 1)))
        goto fail_fd;
    if (opts && opts->reuse_addr) {
        if ((rc = set_int_opt(fd, SOL_SOCKET, SO_REUSEADDR, 1)))
            goto fail_fd;
#ifdef SO_REUSEPORT
        if ((rc = set_int_opt(fd, SOL_SOCKET, SO_REUSEPORT, 1)))
            goto fail_fd;
#endif
    }
    if (bind(fd, &bind_addr->u.sa, family_len(port->family)) != 0) {
        rc = -errno;
        goto fail_fd;
    }
    tw_io_init(&port->io, fd, port_readable, port);
    if ((rc = tw_reactor_add_reader(r, &port->io)))
        goto fail_fd;
    tw_reactor_add_handle(r, &port->handle, port_handle_close);

    p->port = port;
    *out = port;
    if (p->ops->start_protocol) {
        port->starting = true;
        p->ops->start_protocol(p);
        port->starting = false;
    }
    return 0;

fail_fd:
    close(fd);
fail:
    rbuf_release(port->rbuf);
    tw_free(port);
    return rc;
}

/* ---- Writing */

static int port_send(tw_udp_port *port, const struct iovec *iov, int iovcnt, const tw_address *to)
{
    if (port->stopping)
        return TW_ENOTCONN;
    struct msghdr msg = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt};
    if (to) {
        int rc = check_ip(to);
        if (rc)
            return rc;
        if (to->u.sa.sa_family != port->family)
            return TW_EAFNOSUPPORT;
        if (port->peer.len) {
            if (!same_peer(to, &port->peer))
                return TW_EISCONN;
        } else {
            msg.msg_name = (void *)&to->u;
            msg.msg_namelen = family_len(port->family);
        }
    } else if (!port->peer.len) {
        return TW_ENOTCONN;
    }
    ssize_t n;
    do
        n = sendmsg(port->io.fd, &msg, 0);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return errno == EWOULDBLOCK ? TW_EAGAIN : -errno;
    return 0;
}

int tw_udp_port_write(tw_udp_port *port, const void *data, size_t len, const tw_address *to)
{
    if (!port || (!data && len))
        return TW_EINVAL;
    struct iovec iov = {.iov_base = (void *)data, .iov_len = len};
    return port_send(port, &iov, 1, to);
}

int tw_udp_port_write_sequence(tw_udp_port *port, const struct iovec *iov, int iovcnt,
                               const tw_address *to)
{
    if (!port || iovcnt < 0 || iovcnt > IOV_MAX || (!iov && iovcnt > 0))
        return TW_EINVAL;
    for (int i = 0; i < iovcnt; i++)
        if (!iov[i].iov_base && iov[i].iov_len)
            return TW_EINVAL;
    return port_send(port, iov, iovcnt, to);
}

/* ---- Connecting and addresses */

int tw_udp_port_connect(tw_udp_port *port, const tw_address *addr)
{
    if (!port)
        return TW_EINVAL;
    int rc = check_ip(addr);
    if (rc)
        return rc;
    if (port->stopping)
        return TW_ENOTCONN;
    if (addr->u.sa.sa_family != port->family)
        return TW_EAFNOSUPPORT;
    if (connect(port->io.fd, &addr->u.sa, family_len(port->family)) != 0)
        return -errno;
    port->peer = *addr;
    port->peer.len = family_len(port->family);
    return 0;
}

int tw_udp_port_get_host(const tw_udp_port *port, tw_address *out)
{
    if (!port || !out)
        return TW_EINVAL;
    if (port->stopping)
        return TW_ENOTCONN;
    memset(out, 0, sizeof *out);
    socklen_t len = sizeof out->u;
    if (getsockname(port->io.fd, &out->u.sa, &len) != 0)
        return -errno;
    out->len = len;
    return 0;
}

/* ---- Options */

static int port_set_int(tw_udp_port *port, int level, int name, int value)
{
    if (!port)
        return TW_EINVAL;
    if (port->stopping)
        return TW_ENOTCONN;
    return set_int_opt(port->io.fd, level, name, value);
}

static int port_get_int(const tw_udp_port *port, int level, int name)
{
    if (!port)
        return TW_EINVAL;
    if (port->stopping)
        return TW_ENOTCONN;
    int value = 0;
    socklen_t len = sizeof value;
    if (getsockopt(port->io.fd, level, name, &value, &len) != 0)
        return -errno;
    /* IPv4 multicast options may answer with a single byte. */
    if (len == 1)
        value = *(unsigned char *)&value;
    return value;
}

int tw_udp_port_set_broadcast_allowed(tw_udp_port *port, bool allowed)
{
    return port_set_int(port, SOL_SOCKET, SO_BROADCAST, allowed);
}

int tw_udp_port_get_broadcast_allowed(const tw_udp_port *port)
{
    int v = port_get_int(port, SOL_SOCKET, SO_BROADCAST);
    return v < 0 ? v : v != 0;
}

int tw_udp_port_set_ttl(tw_udp_port *port, int ttl)
{
    if (ttl < 0 || ttl > 255)
        return TW_EINVAL;
    if (port && port->family == AF_INET6)
        return port_set_int(port, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, ttl);
    return port_set_int(port, IPPROTO_IP, IP_MULTICAST_TTL, ttl);
}

int tw_udp_port_get_ttl(const tw_udp_port *port)
{
    if (port && port->family == AF_INET6)
        return port_get_int(port, IPPROTO_IPV6, IPV6_MULTICAST_HOPS);
    return port_get_int(port, IPPROTO_IP, IP_MULTICAST_TTL);
}

int tw_udp_port_set_loopback_mode(tw_udp_port *port, bool loop)
{
    if (port && port->family == AF_INET6)
        return port_set_int(port, IPPROTO_IPV6, IPV6_MULTICAST_LOOP, loop);
    return port_set_int(port, IPPROTO_IP, IP_MULTICAST_LOOP, loop);
}

int tw_udp_port_get_loopback_mode(const tw_udp_port *port)
{
    int v = port && port->family == AF_INET6 ? port_get_int(port, IPPROTO_IPV6, IPV6_MULTICAST_LOOP)
                                             : port_get_int(port, IPPROTO_IP, IP_MULTICAST_LOOP);
    return v < 0 ? v : v != 0;
}

/* ---- Multicast */

/* Checks an interface argument of the port's family; NULL is fine. */
static int check_interface(const tw_udp_port *port, const tw_address *interface)
{
    if (!interface)
        return 0;
    if (check_ip(interface) || interface->u.sa.sa_family != port->family)
        return TW_EINVAL;
    return 0;
}

static int membership(tw_udp_port *port, const tw_address *group, const tw_address *interface,
                      bool join)
{
    if (!port)
        return TW_EINVAL;
    int rc = check_ip(group);
    if (rc)
        return rc;
    if (port->stopping)
        return TW_ENOTCONN;
    if (group->u.sa.sa_family != port->family)
        return TW_EAFNOSUPPORT;
    if ((rc = check_interface(port, interface)))
        return rc;
    int res;
    if (port->family == AF_INET) {
        if (!IN_MULTICAST(ntohl(group->u.in.sin_addr.s_addr)))
            return TW_EINVAL;
        struct ip_mreq m = {.imr_multiaddr = group->u.in.sin_addr};
        m.imr_interface.s_addr = interface ? interface->u.in.sin_addr.s_addr : htonl(INADDR_ANY);
        res = setsockopt(port->io.fd, IPPROTO_IP, join ? IP_ADD_MEMBERSHIP : IP_DROP_MEMBERSHIP, &m,
                         sizeof m);
    } else {
        if (!IN6_IS_ADDR_MULTICAST(&group->u.in6.sin6_addr))
            return TW_EINVAL;
        struct ipv6_mreq m = {.ipv6mr_multiaddr = group->u.in6.sin6_addr};
        m.ipv6mr_interface = interface ? interface->u.in6.sin6_scope_id : 0;
        res = setsockopt(port->io.fd, IPPROTO_IPV6,
                         join ? IPV6_ADD_MEMBERSHIP : IPV6_DROP_MEMBERSHIP, &m, sizeof m);
    }
    return res != 0 ? -errno : 0;
}

int tw_udp_port_join_group(tw_udp_port *port, const tw_address *group, const tw_address *interface)
{
    return membership(port, group, interface, true);
}

int tw_udp_port_leave_group(tw_udp_port *port, const tw_address *group, const tw_address *interface)
{
    return membership(port, group, interface, false);
}

int tw_udp_port_set_outgoing_interface(tw_udp_port *port, const tw_address *interface)
{
    if (!port)
        return TW_EINVAL;
    if (port->stopping)
        return TW_ENOTCONN;
    int rc = check_interface(port, interface);
    if (rc)
        return rc;
    int res;
    if (port->family == AF_INET) {
        struct in_addr a = {.s_addr =
                                interface ? interface->u.in.sin_addr.s_addr : htonl(INADDR_ANY)};
        res = setsockopt(port->io.fd, IPPROTO_IP, IP_MULTICAST_IF, &a, sizeof a);
    } else {
        unsigned index = interface ? interface->u.in6.sin6_scope_id : 0;
        res = setsockopt(port->io.fd, IPPROTO_IPV6, IPV6_MULTICAST_IF, &index, sizeof index);
    }
    return res != 0 ? -errno : 0;
}
