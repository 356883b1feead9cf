/* Listening stream sockets (listenTCP, listenUNIX, adoptStreamPort): bind,
 * listen, and an accept loop that hands each connection to tw__stream_open.
 *
 * Fairness: one wakeup accepts at most ACCEPT_BATCH connections, so a flood
 * on one port cannot starve the other watchers of the loop; the reactor is
 * level-triggered, so what is left is taken on the next iteration.
 *
 * Running out of descriptors (EMFILE/ENFILE): the classic answer (libuv,
 * nginx) is a descriptor kept in reserve. On a shortage the port closes the
 * reserve, accepts with the slot it frees and closes at once (with SO_LINGER
 * 0: the peer sees a reset) every pending connection, then takes the reserve
 * back. Without that the listening socket stays readable and the loop spins
 * on it while peers hang in the backlog. The reserve is one per process (it
 * stands for the process's last free slot, not a port's). If even the
 * reserve is gone (another thread took the slot), the port stops reading for
 * RETRY_DELAY and tries again, rather than spin.
 *
 * io_uring (a reactor with completions, completion.h): the port watches an
 * epoll fd of its own that holds the listening socket, not the socket
 * itself. Any io_uring request on the socket — a multishot accept, a poll —
 * holds a reference to it, and when the process dies the kernel drops that
 * reference only when it tears the ring down, asynchronously, milliseconds
 * later: meanwhile the dead server's port still completes handshakes, and a
 * load balancer that fails over on a refused connect (haproxy's redispatch)
 * sends clients to a socket that then resets them. An epoll registration
 * holds no reference, so the port closes with the process, as with epoll.
 * (Multishot accept was tried and measured first; accepting is not what the
 * completion path speeds up.) */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stddef.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <twine/error.h>
#include <twine/log.h>
#include <twine/net.h>

#include "net/net-internal.h"
#include "reactor/completion.h"

#define LOG_NS                          "twine.net"
#define ACCEPT_BATCH                    64
#define DEFAULT_BACKLOG                 50
#define RETRY_DELAY                     0.1
#define LOCK_SUFFIX                     ".lock"

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

struct stream_port {
    tw_listening_port base;
    tw_reactor *r;
    tw_factory *factory;
    tw_io io;
    tw_handle handle;
    tw_timer retry; /* re-arms reading after a shortage with no reserve */
    tw_address host;
    int lock_fd;          /* PATH.lock held while listening, or -1 */
    bool owns_path;       /* a Unix file socket this port bound: removed at stop */
    bool closed;          /* socket closed (stop, or the reactor's shutdown) */
    bool accepting;       /* inside the accept loop */
    bool free_asked;      /* stopped from inside the accept loop: free after it */
    bool shortage_logged; /* the descriptor shortage was logged */
    int lfd;              /* the listening socket (io.fd is the epoll fd's under io_uring) */
    char path[sizeof(((struct sockaddr_un *)0)->sun_path) + sizeof LOCK_SUFFIX];
};

/* ---- The reserve descriptor */

static pthread_mutex_t reserve_lock = PTHREAD_MUTEX_INITIALIZER;
static int reserve_fd = -1;

static void reserve_ensure(void)
{
    pthread_mutex_lock(&reserve_lock);
    if (reserve_fd < 0)
        reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    pthread_mutex_unlock(&reserve_lock);
}

static void close_with_reset(int fd)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

/* Accepts and closes every pending connection with the reserve's slot.
 * Returns how many were shed, or -1 when there was no reserve to spend. */
static int shed(int lfd)
{
    int n = 0;
    pthread_mutex_lock(&reserve_lock);
    if (reserve_fd < 0) {
        pthread_mutex_unlock(&reserve_lock);
        return -1;
    }
    close(reserve_fd);
    reserve_fd = -1;
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            break;
        }
        close_with_reset(fd);
        n++;
    }
    reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    pthread_mutex_unlock(&reserve_lock);
    return n;
}

/* ---- Closing */

/* A Unix file socket's path and lock file go when the port closes (or fails
 * to open): the next listener must find neither. */
static void remove_files(struct stream_port *p)
{
    if (p->owns_path)
        unlink(p->path);
    if (p->lock_fd >= 0) {
        size_t n = strlen(p->path);
        memcpy(p->path + n, LOCK_SUFFIX, sizeof LOCK_SUFFIX);
        unlink(p->path);
        p->path[n] = '\0';
        close(p->lock_fd);
        p->lock_fd = -1;
    }
}

static void port_close(struct stream_port *p)
{
    if (p->closed)
        return;
    p->closed = true;
    tw_reactor_remove_reader(p->r, &p->io);
    tw_timer_stop(&p->retry);
    tw_reactor_remove_handle(p->r, &p->handle);
    if (p->io.fd != p->lfd)
        close(p->io.fd);
    close(p->lfd);
    p->io.fd = p->lfd = -1;
    remove_files(p);
    char buf[TW_ADDRESS_STRLEN];
    tw_log_debug(LOG_NS, "stopped listening on %s", tw_address_format(&p->host, buf, sizeof buf));
    tw_factory_do_stop(p->factory);
}

static void port_handle_close(tw_handle *h)
{
    port_close(container_of(h, struct stream_port, handle));
}

static int port_get_host(const tw_listening_port *base, tw_address *out)
{
    const struct stream_port *p = (const struct stream_port *)base;
    *out = p->host;
    return 0;
}

static void port_stop(tw_listening_port *base)
{
    struct stream_port *p = (struct stream_port *)base;
    port_close(p);
    if (p->accepting)
        p->free_asked = true;
    else
        tw_free(p);
}

static const struct tw__port_ops stream_port_ops = {
    .get_host = port_get_host,
    .stop = port_stop,
};

/* ---- Accepting */

static void pause_for_retry(struct stream_port *p)
{
    if (tw_timer_start(&p->retry, RETRY_DELAY) == 0)
        tw_reactor_remove_reader(p->r, &p->io);
}

static void retry_fired(tw_timer *t)
{
    struct stream_port *p = container_of(t, struct stream_port, retry);
    if (tw_reactor_add_reader(p->r, &p->io) < 0)
        pause_for_retry(p);
}

static void shortage(struct stream_port *p, int err)
{
    if (!p->shortage_logged) {
        char buf[TW_ADDRESS_STRLEN];
        p->shortage_logged = true;
        if (err == EMFILE || err == ENFILE)
            tw_log_warn(LOG_NS, "out of file descriptors: shedding connections on %s",
                        tw_address_format(&p->host, buf, sizeof buf));
        else
            tw_log_warn(LOG_NS, "accept on %s: %s; retrying",
                        tw_address_format(&p->host, buf, sizeof buf), tw_strerror(-err));
    }
    if ((err != EMFILE && err != ENFILE) || shed(p->lfd) <= 0)
        pause_for_retry(p);
}

static void accept_one(struct stream_port *p, int fd, const tw_address *peer)
{
    if (p->shortage_logged) {
        char buf[TW_ADDRESS_STRLEN];
        p->shortage_logged = false;
        tw_log_info(LOG_NS, "accepting connections again on %s",
                    tw_address_format(&p->host, buf, sizeof buf));
    }
    tw_protocol *proto = tw_factory_build_protocol(p->factory, peer);
    if (!proto) {
        close(fd);
        return;
    }
    int rc = tw__stream_open(p->r, fd, proto, NULL);
    if (rc < 0) {
        char buf[TW_ADDRESS_STRLEN];
        tw_log_warn(LOG_NS, "dropped a connection from %s: %s",
                    tw_address_format(peer, buf, sizeof buf), tw_strerror(rc));
    }
}

static void port_readable(tw_io *io, unsigned events)
{
    struct stream_port *p = io->data;
    p->accepting = true;
    for (int i = 0; i < ACCEPT_BATCH && !p->closed; i++) {
        tw_address peer;
        peer.len = sizeof peer.u;
        int fd = accept4(p->lfd, &peer.u.sa, &peer.len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int err = errno;
            if (err == EAGAIN || err == EWOULDBLOCK)
                break;
            /* Linux hands pending network errors of the new connection to
             * accept: that connection is gone, the next may be fine. */
            if (err == EINTR || err == ECONNABORTED || err == EPROTO || err == ENETDOWN ||
                err == ENOPROTOOPT || err == EHOSTDOWN || err == ENONET || err == EHOSTUNREACH ||
                err == EOPNOTSUPP || err == ENETUNREACH)
                continue;
            shortage(p, err);
            break;
        }
        accept_one(p, fd, &peer);
    }
    p->accepting = false;
    if (p->free_asked)
        tw_free(p);
}

/* ---- Opening */

static int check_address(const tw_address *addr)
{
    if (!addr || addr->len == 0 || addr->len > sizeof addr->u)
        return TW_EINVAL;
    switch (addr->u.sa.sa_family) {
    case AF_INET:
        return addr->len >= sizeof(struct sockaddr_in) ? 0 : TW_EINVAL;
    case AF_INET6:
        return addr->len >= sizeof(struct sockaddr_in6) ? 0 : TW_EINVAL;
    case AF_UNIX: /* the union is longer than a sockaddr_un: bound it by the latter */
        return addr->len >= offsetof(struct sockaddr_un, sun_path) &&
                       addr->len <= sizeof(struct sockaddr_un)
                   ? 0
                   : TW_EINVAL;
    default:
        return TW_EINVAL;
    }
}

/* A Unix address naming a file (not abstract, not unnamed): copies its path
 * into p->path and returns true. */
static bool unix_file_path(const tw_address *addr, char *path)
{
    size_t off = offsetof(struct sockaddr_un, sun_path);
    if (addr->u.sa.sa_family != AF_UNIX || addr->len <= off || addr->u.un.sun_path[0] == '\0')
        return false;
    size_t n = strnlen(addr->u.un.sun_path, addr->len - off);
    memcpy(path, addr->u.un.sun_path, n);
    path[n] = '\0';
    return true;
}

/* Takes PATH.lock; with it held, a socket file left at PATH is stale (its
 * listener would hold the lock) and is removed. The lock file is checked to
 * still be the one at its path after locking, since a stopping listener
 * unlinks it. Returns the locked fd or a negative error. */
static int take_lock(const char *path)
{
    char lock[sizeof(((struct stream_port *)0)->path)];
    size_t n = strlen(path);
    memcpy(lock, path, n);
    memcpy(lock + n, LOCK_SUFFIX, sizeof LOCK_SUFFIX);
    for (int attempt = 0; attempt < 8; attempt++) {
        int fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0)
            return -errno;
        if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
            int err = errno;
            close(fd);
            return err == EWOULDBLOCK ? TW_EADDRINUSE : -err;
        }
        struct stat held, now;
        if (fstat(fd, &held) == 0 && stat(lock, &now) == 0 && held.st_ino == now.st_ino &&
            held.st_dev == now.st_dev) {
            struct stat st;
            if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
                unlink(path);
            return fd;
        }
        close(fd);
    }
    return TW_EADDRINUSE;
}

static int port_start(tw_reactor *r, int fd, tw_factory *factory, struct stream_port *p,
                      tw_listening_port **out)
{
    p->host.len = sizeof p->host.u;
    if (getsockname(fd, &p->host.u.sa, &p->host.len) < 0)
        return -errno;
    int watched = fd;
    if (tw__reactor_cq(r)) {
        /* See the top of the file. */
        watched = epoll_create1(EPOLL_CLOEXEC);
        struct epoll_event ev = {.events = EPOLLIN};
        if (watched < 0)
            return -errno;
        if (epoll_ctl(watched, EPOLL_CTL_ADD, fd, &ev) < 0) {
            int rc = -errno;
            close(watched);
            return rc;
        }
    }
    tw_io_init(&p->io, watched, port_readable, p);
    p->lfd = fd;
    int rc = tw_reactor_add_reader(r, &p->io);
    if (rc < 0) {
        if (watched != fd)
            close(watched);
        p->io.fd = p->lfd = -1;
        return rc;
    }
    tw_reactor_add_handle(r, &p->handle, port_handle_close);
    reserve_ensure();
    char buf[TW_ADDRESS_STRLEN];
    tw_log_debug(LOG_NS, "listening on %s", tw_address_format(&p->host, buf, sizeof buf));
    tw_factory_do_start(factory);
    *out = &p->base;
    return 0;
}

static struct stream_port *port_new(tw_reactor *r, tw_factory *factory)
{
    struct stream_port *p = tw_calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->base.ops = &stream_port_ops;
    p->r = r;
    p->factory = factory;
    p->lock_fd = -1;
    p->io.fd = p->lfd = -1;
    tw_timer_init(&p->retry, tw_reactor_clock(r), retry_fired);
    return p;
}

int tw_listen_stream(tw_reactor *r, const tw_address *addr, const tw_listen_options *opts,
                     tw_factory *factory, tw_listening_port **out)
{
    if (!r || !out)
        return TW_EINVAL;
    /* hooks->listen stands in for this call only; tw_listen_adopt is never
     * intercepted (a descriptor the caller already has is real). */
    const struct tw__net_hooks *hooks = tw__reactor_net_hooks(r);
    if (hooks && hooks->listen)
        return hooks->listen(hooks->arg, r, addr, opts, factory, out);

    tw_listen_options o = opts ? *opts : (tw_listen_options){0};
    if (!factory || check_address(addr) < 0 || o.backlog < 0 || (o.mode & ~07777u))
        return TW_EINVAL;
    int family = addr->u.sa.sa_family;
    int backlog = o.backlog ? o.backlog : DEFAULT_BACKLOG;

    struct stream_port *p = port_new(r, factory);
    if (!p)
        return TW_ENOMEM;
    bool file = unix_file_path(addr, p->path);
    int rc = 0;
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        rc = -errno;
        goto fail;
    }
    int one = 1;
    if (family == AF_INET || family == AF_INET6) {
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
            goto fail_errno;
    }
    if (family == AF_INET6) {
        if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) < 0)
            goto fail_errno;
    }
    if (file && o.lockfile) {
        p->lock_fd = take_lock(p->path);
        if (p->lock_fd < 0) {
            rc = p->lock_fd;
            goto fail;
        }
    }
    if (bind(fd, &addr->u.sa, addr->len) < 0)
        goto fail_errno;
    p->owns_path = file;
    /* Before listen, so no peer can connect through looser permissions. */
    if (file && chmod(p->path, o.mode ? o.mode : 0666) < 0)
        goto fail_errno;
    if (listen(fd, backlog) < 0)
        goto fail_errno;
    rc = port_start(r, fd, factory, p, out);
    if (rc == 0)
        return 0;
    goto fail;

fail_errno:
    rc = -errno;
fail:
    if (fd >= 0)
        close(fd);
    remove_files(p);
    tw_free(p);
    return rc;
}

int tw_listen_adopt(tw_reactor *r, int fd, tw_factory *factory, tw_listening_port **out)
{
    if (!r || !out || !factory || fd < 0)
        return TW_EINVAL;
    int type = 0, listening = 0;
    socklen_t len = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_STREAM)
        return TW_EINVAL;
    len = sizeof listening;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0 || !listening)
        return TW_EINVAL;
    struct sockaddr_storage ss;
    len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return -errno;
    if (ss.ss_family != AF_INET && ss.ss_family != AF_INET6 && ss.ss_family != AF_UNIX)
        return TW_EINVAL;

    struct stream_port *p = port_new(r, factory);
    if (!p)
        return TW_ENOMEM;
    /* The socket file of an adopted Unix port belongs to whoever made it
     * (systemd): owns_path stays false and stop leaves it. */
    int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    int rc;
    if (dup_fd < 0) {
        rc = -errno;
    } else {
        int flags = fcntl(dup_fd, F_GETFL);
        if (flags < 0 || fcntl(dup_fd, F_SETFL, flags | O_NONBLOCK) < 0)
            rc = -errno;
        else
            rc = port_start(r, dup_fd, factory, p, out);
        if (rc < 0)
            close(dup_fd);
    }
    if (rc < 0)
        tw_free(p);
    return rc;
}
