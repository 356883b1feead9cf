/* The listening sockets twined's workers share (--workers).
 *
 * The supervisor runs the plugin's privileged start with the reactor's net
 * hooks (net-internal.h) pointed here: each tw_listen_stream the tree makes
 * (through whatever endpoint: tcp, unix, haproxy:, ssl:) binds and listens
 * a socket as tw_listen_stream would, keeps it, and hands back a port that
 * only says where it is bound. The workers inherit those sockets and, with
 * the hooks pointed at the adopt side, make the same calls in the same order,
 * each of which adopts the next inherited socket (tw_listen_adopt). So the
 * supervisor finds a port in use before any worker starts, the kernel's one
 * accept queue per socket survives a worker's crash, and port 0 means one
 * port for all. */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <twine/alloc.h>
#include <twine/error.h>
#include <twine/log.h>
#include <twine/net.h>

#include "net/net-internal.h"
#include "twined/twined.h"

#define DEFAULT_BACKLOG 50 /* tw_listen_stream's, Twisted's */

/* ---- Supervisor: bind, listen, keep */

struct held_port {
    tw_listening_port base;
    int fd; /* the supervisor's (in its twined_sockets) */
    tw_factory *factory;
};

static int held_get_host(const tw_listening_port *port, tw_address *out)
{
    const struct held_port *hp = (const struct held_port *)port;
    *out = (tw_address){.len = sizeof out->u.storage};
    if (getsockname(hp->fd, &out->u.sa, &out->len) < 0)
        return -errno;
    return 0;
}

static void held_stop(tw_listening_port *port)
{
    struct held_port *hp = (struct held_port *)port;
    tw_factory_do_stop(hp->factory);
    tw_free(hp);
}

static const struct tw__port_ops held_ops = {.get_host = held_get_host, .stop = held_stop};

static bool unix_file(const tw_address *a)
{
    return a->u.sa.sa_family == AF_UNIX && a->len > offsetof(struct sockaddr_un, sun_path) &&
           a->u.un.sun_path[0] != '\0';
}

/* Whether nobody listens on the Unix socket file at addr. */
static bool stale(const tw_address *addr)
{
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe < 0)
        return false;
    bool refused = connect(probe, &addr->u.sa, addr->len) < 0 && errno == ECONNREFUSED;
    close(probe);
    return refused;
}

static int bind_listen(void *arg, tw_reactor *r, const tw_address *addr,
                       const tw_listen_options *opts, tw_factory *factory, tw_listening_port **out)
{
    twined_sockets *s = arg;
    if (!addr || !factory || !out)
        return TW_EINVAL;
    if (s->n == TWINED_MAX_SOCKETS)
        return -EMFILE;
    int family = addr->u.sa.sa_family;
    int backlog = opts && opts->backlog ? opts->backlog : DEFAULT_BACKLOG;
    struct held_port *hp = tw_calloc(1, sizeof *hp);
    char *path = unix_file(addr) ? tw_strdup(addr->u.un.sun_path) : NULL;
    if (!hp || (unix_file(addr) && !path)) {
        tw_free(hp);
        tw_free(path);
        return TW_ENOMEM;
    }
    int one = 1, rc = 0;
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail_errno;
    if ((family == AF_INET || family == AF_INET6) &&
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
        goto fail_errno;
    if (family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) < 0)
        goto fail_errno;
    if (bind(fd, &addr->u.sa, addr->len) < 0) {
        /* A socket file nobody listens on any more (its process died): with
         * lockfile=1, tw_listen_stream would take its place, so do we. */
        rc = -errno;
        if (rc != TW_EADDRINUSE || !path || !opts || !opts->lockfile || !stale(addr))
            goto fail;
        if (unlink(path) < 0 || bind(fd, &addr->u.sa, addr->len) < 0)
            goto fail_errno;
    }
    if (path && chmod(path, opts && opts->mode ? opts->mode : 0666) < 0) {
        rc = -errno;
        unlink(path);
        goto fail;
    }
    if (listen(fd, backlog) < 0) {
        rc = -errno;
        if (path)
            unlink(path);
        goto fail;
    }
    hp->base.ops = &held_ops;
    hp->fd = fd;
    hp->factory = factory;
    s->fds[s->n] = fd;
    s->paths[s->n] = path;
    s->n++;
    tw_factory_do_start(factory);
    *out = &hp->base;
    return 0;

fail_errno:
    rc = -errno;
fail:
    if (fd >= 0)
        close(fd);
    tw_free(hp);
    tw_free(path);
    return rc;
}

static struct tw__net_hooks bind_hooks = {.listen = bind_listen};

void twined_sockets_bind_on(tw_reactor *r, twined_sockets *s)
{
    bind_hooks.arg = s;
    tw__reactor_set_net_hooks(r, &bind_hooks);
}

void twined_sockets_close(twined_sockets *s)
{
    for (size_t i = 0; i < s->n; i++) {
        close(s->fds[i]);
        if (s->paths[i])
            unlink(s->paths[i]);
        tw_free(s->paths[i]);
    }
    s->n = 0;
}

/* ---- Worker: adopt what was inherited */

struct inherited {
    int next, end;
};

static struct inherited inherited;

static int adopt_listen(void *arg, tw_reactor *r, const tw_address *addr,
                        const tw_listen_options *opts, tw_factory *factory, tw_listening_port **out)
{
    struct inherited *in = arg;
    if (in->next < in->end) {
        int fd = in->next++;
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0 ||
            ss.ss_family != addr->u.sa.sa_family) {
            tw_log_error(TWINED_NS, "inherited descriptor %d is not the socket expected", fd);
            return TW_EINVAL;
        }
        return tw_listen_adopt(r, fd, factory, out);
    }
    /* A port the supervisor did not open (one a service opens outside its
     * privileged start): this worker's own. */
    const struct tw__net_hooks *hooks = tw__reactor_net_hooks(r);
    tw__reactor_set_net_hooks(r, NULL);
    int rc = tw_listen_stream(r, addr, opts, factory, out);
    tw__reactor_set_net_hooks(r, hooks);
    return rc;
}

static struct tw__net_hooks adopt_hooks = {.listen = adopt_listen, .arg = &inherited};

void twined_sockets_adopt_on(tw_reactor *r, int first, int count)
{
    inherited = (struct inherited){first, first + (count > 0 ? count : 0)};
    tw__reactor_set_net_hooks(r, &adopt_hooks);
}

void twined_sockets_off(tw_reactor *r)
{
    tw__reactor_set_net_hooks(r, NULL);
}
