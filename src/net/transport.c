/* Addresses, the transport's reference count, and the tw_transport_*
 * wrappers: argument checks and optional ops here, state checks in each
 * implementation (only it knows whether it is closing). See transport.h. */
#include <arpa/inet.h>
#include <limits.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <twine/error.h>
#include <twine/transport.h>

/* ---- Addresses */

/* The longest IPv6 scope we accept, "%" excluded (IF_NAMESIZE includes the NUL). */
#define SCOPE_MAX (IF_NAMESIZE > 16 ? IF_NAMESIZE : 16)

static int parse_scope(const char *s, uint32_t *out)
{
    if (*s == '\0' || strlen(s) >= SCOPE_MAX)
        return TW_EINVAL;
    if (s[0] >= '0' && s[0] <= '9') {
        char *end;
        errno = 0;
        unsigned long v = strtoul(s, &end, 10);
        if (*end != '\0' || errno || v > UINT32_MAX)
            return TW_EINVAL;
        *out = (uint32_t)v;
        return 0;
    }
    unsigned idx = if_nametoindex(s);
    if (idx == 0)
        return TW_EINVAL;
    *out = idx;
    return 0;
}

int tw_address_from_ip(tw_address *out, const char *ip, unsigned port)
{
    if (!out || !ip || port > 65535)
        return TW_EINVAL;
    tw_address a;
    memset(&a, 0, sizeof a);
    if (inet_pton(AF_INET, ip, &a.u.in.sin_addr) == 1) {
        a.u.in.sin_family = AF_INET;
        a.u.in.sin_port = htons((uint16_t)port);
        a.len = sizeof a.u.in;
        *out = a;
        return 0;
    }
    char host[INET6_ADDRSTRLEN];
    const char *pct = strchr(ip, '%');
    size_t hl = pct ? (size_t)(pct - ip) : strlen(ip);
    if (hl == 0 || hl >= sizeof host)
        return TW_EINVAL;
    memcpy(host, ip, hl);
    host[hl] = '\0';
    if (inet_pton(AF_INET6, host, &a.u.in6.sin6_addr) != 1)
        return TW_EINVAL;
    if (pct && parse_scope(pct + 1, &a.u.in6.sin6_scope_id) < 0)
        return TW_EINVAL;
    a.u.in6.sin6_family = AF_INET6;
    a.u.in6.sin6_port = htons((uint16_t)port);
    a.len = sizeof a.u.in6;
    *out = a;
    return 0;
}

#define SUN_PATH_MAX (sizeof(((struct sockaddr_un *)0)->sun_path))

int tw_address_from_unix(tw_address *out, const char *path, size_t len, bool abstract)
{
    if (!out || !path || len == 0 || len > SUN_PATH_MAX - 1)
        return TW_EINVAL;
    if (!abstract && memchr(path, '\0', len))
        return TW_EINVAL;
    tw_address a;
    memset(&a, 0, sizeof a);
    a.u.un.sun_family = AF_UNIX;
    size_t base = offsetof(struct sockaddr_un, sun_path);
    if (abstract) {
        /* The kernel takes the name's length from the address length: no
         * terminating NUL, the leading one marks the namespace. */
        memcpy(a.u.un.sun_path + 1, path, len);
        a.len = (socklen_t)(base + 1 + len);
    } else {
        memcpy(a.u.un.sun_path, path, len);
        a.len = (socklen_t)(base + len + 1);
    }
    *out = a;
    return 0;
}

/* Appends to a bounded string, cutting what does not fit. */
struct sbuf {
    char *buf;
    size_t size, used;
};

static void sb_put(struct sbuf *b, const char *s, size_t n)
{
    if (b->size == 0)
        return;
    size_t room = b->size - 1 - b->used;
    if (n > room)
        n = room;
    memcpy(b->buf + b->used, s, n);
    b->used += n;
    b->buf[b->used] = '\0';
}

static void sb_str(struct sbuf *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

/* Bytes as printable ASCII; the rest (and the backslash, so the form is
 * unambiguous) as \xNN. */
static void sb_quoted(struct sbuf *b, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f && c != '\\') {
            sb_put(b, (const char *)&c, 1);
        } else {
            char esc[5];
            snprintf(esc, sizeof esc, "\\x%02x", c);
            sb_put(b, esc, 4);
        }
    }
}

const char *tw_address_format(const tw_address *a, char *buf, size_t size)
{
    struct sbuf b = {buf, size, 0};
    if (size == 0)
        return buf;
    buf[0] = '\0';
    if (!a || a->len == 0) {
        sb_str(&b, "none");
        return buf;
    }
    char tmp[INET6_ADDRSTRLEN + 32];
    switch (a->u.sa.sa_family) {
    case AF_INET: {
        char ip[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &a->u.in.sin_addr, ip, sizeof ip);
        snprintf(tmp, sizeof tmp, "%s:%u", ip, (unsigned)ntohs(a->u.in.sin_port));
        sb_str(&b, tmp);
        break;
    }
    case AF_INET6: {
        char ip[INET6_ADDRSTRLEN];
        inet_ntop(AF_INET6, &a->u.in6.sin6_addr, ip, sizeof ip);
        if (a->u.in6.sin6_scope_id)
            snprintf(tmp, sizeof tmp, "[%s%%%u]:%u", ip, (unsigned)a->u.in6.sin6_scope_id,
                     (unsigned)ntohs(a->u.in6.sin6_port));
        else
            snprintf(tmp, sizeof tmp, "[%s]:%u", ip, (unsigned)ntohs(a->u.in6.sin6_port));
        sb_str(&b, tmp);
        break;
    }
    case AF_UNIX: {
        size_t base = offsetof(struct sockaddr_un, sun_path);
        size_t n = a->len > base ? a->len - base : 0;
        if (n > SUN_PATH_MAX)
            n = SUN_PATH_MAX;
        if (n == 0) {
            sb_str(&b, "unnamed");
        } else if (a->u.un.sun_path[0] == '\0') {
            sb_str(&b, "@");
            sb_quoted(&b, a->u.un.sun_path + 1, n - 1);
        } else {
            const char *nul = memchr(a->u.un.sun_path, '\0', n);
            sb_quoted(&b, a->u.un.sun_path, nul ? (size_t)(nul - a->u.un.sun_path) : n);
        }
        break;
    }
    case TW_AF_PROCESS:
        if (a->u.proc.pid > 0)
            snprintf(tmp, sizeof tmp, "process %ld", (long)a->u.proc.pid);
        else
            snprintf(tmp, sizeof tmp, "process");
        sb_str(&b, tmp);
        break;
    case TW_AF_PIPE:
        sb_str(&b, "pipe");
        break;
    default:
        snprintf(tmp, sizeof tmp, "family %d", (int)a->u.sa.sa_family);
        sb_str(&b, tmp);
        break;
    }
    return buf;
}

unsigned tw_address_port(const tw_address *a)
{
    if (!a || a->len == 0)
        return 0;
    if (a->u.sa.sa_family == AF_INET)
        return ntohs(a->u.in.sin_port);
    if (a->u.sa.sa_family == AF_INET6)
        return ntohs(a->u.in6.sin6_port);
    return 0;
}

/* ---- The transport seen as a producer */

static tw_transport *from_producer(tw_producer *p)
{
    return (tw_transport *)((char *)p - offsetof(tw_transport, as_producer));
}

static void producer_pause(tw_producer *p)
{
    tw_transport_pause_producing(from_producer(p));
}

static void producer_resume(tw_producer *p)
{
    tw_transport_resume_producing(from_producer(p));
}

static void producer_stop(tw_producer *p)
{
    tw_transport_lose_connection(from_producer(p));
}

static const tw_producer_ops transport_producer_ops = {
    .pause_producing = producer_pause,
    .resume_producing = producer_resume,
    .stop_producing = producer_stop,
};

tw_producer *tw_transport_producer(tw_transport *t)
{
    return t ? &t->as_producer : NULL;
}

/* ---- Lifetime */

void tw_transport_init(tw_transport *t, const tw_transport_ops *ops, tw_reactor *r)
{
    t->ops = ops;
    t->protocol = NULL;
    t->reactor = r;
    t->as_producer.ops = &transport_producer_ops;
    t->refs = 1;
}

tw_transport *tw_transport_ref(tw_transport *t)
{
    if (t)
        t->refs++;
    return t;
}

void tw_transport_unref(tw_transport *t)
{
    if (!t || --t->refs > 0)
        return;
    t->ops->destroy(t);
}

/* ---- Wrappers */

int tw_transport_write(tw_transport *t, const void *data, size_t len)
{
    if (!t || (!data && len > 0))
        return TW_EINVAL;
    return t->ops->write(t, data, len);
}

int tw_transport_write_sequence(tw_transport *t, const struct iovec *iov, int iovcnt)
{
    if (!t || iovcnt < 0 || (!iov && iovcnt > 0))
        return TW_EINVAL;
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++) {
        if (!iov[i].iov_base && iov[i].iov_len > 0)
            return TW_EINVAL;
        if (iov[i].iov_len > SIZE_MAX - total)
            return TW_EINVAL;
        total += iov[i].iov_len;
    }
    return t->ops->write_iov(t, iov, iovcnt);
}

int tw_transport_write_zerocopy(tw_transport *t, const void *data, size_t len,
                                tw_release_fn release, void *arg)
{
    if (!t || (!data && len > 0))
        return TW_EINVAL;
    return t->ops->write_zerocopy(t, data, len, release, arg);
}

int tw_transport_lose_connection(tw_transport *t)
{
    if (!t)
        return TW_EINVAL;
    return t->ops->lose_connection(t);
}

int tw_transport_abort_connection(tw_transport *t)
{
    if (!t)
        return TW_EINVAL;
    return t->ops->abort_connection(t);
}

int tw_transport_lose_write_connection(tw_transport *t)
{
    if (!t)
        return TW_EINVAL;
    if (!t->ops->lose_write_connection)
        return TW_ENOTSUP;
    return t->ops->lose_write_connection(t);
}

int tw_transport_get_peer(const tw_transport *t, tw_address *out)
{
    if (!t || !out)
        return TW_EINVAL;
    return t->ops->get_peer(t, out);
}

int tw_transport_get_host(const tw_transport *t, tw_address *out)
{
    if (!t || !out)
        return TW_EINVAL;
    return t->ops->get_host(t, out);
}

int tw_transport_pause_producing(tw_transport *t)
{
    if (!t)
        return TW_EINVAL;
    return t->ops->pause_producing(t);
}

int tw_transport_resume_producing(tw_transport *t)
{
    if (!t)
        return TW_EINVAL;
    return t->ops->resume_producing(t);
}

int tw_transport_register_producer(tw_transport *t, tw_producer *producer, bool streaming)
{
    if (!t || !producer || !producer->ops)
        return TW_EINVAL;
    if (streaming && (!producer->ops->pause_producing || !producer->ops->resume_producing))
        return TW_EINVAL;
    if (!streaming && !producer->ops->resume_producing)
        return TW_EINVAL;
    return t->ops->register_producer(t, producer, streaming);
}

int tw_transport_unregister_producer(tw_transport *t)
{
    if (!t)
        return TW_EINVAL;
    return t->ops->unregister_producer(t);
}

size_t tw_transport_write_buffer_size(const tw_transport *t)
{
    return t ? t->ops->write_buffer_size(t) : 0;
}

int tw_transport_set_write_buffer_limits(tw_transport *t, size_t high, size_t low)
{
    if (!t)
        return TW_EINVAL;
    if (high == 0 && low == 0) {
        high = TW_TRANSPORT_HIGH_WATER;
        low = TW_TRANSPORT_LOW_WATER;
    }
    if (high == 0 || low > high)
        return TW_EINVAL;
    return t->ops->set_write_buffer_limits(t, high, low);
}

int tw_transport_set_option(tw_transport *t, tw_transport_option option, int value)
{
    if (!t)
        return TW_EINVAL;
    if (!t->ops->set_option)
        return TW_ENOTSUP;
    return t->ops->set_option(t, option, value);
}

/* Linux's SCM_MAX_FD. */
#define MAX_FDS 253

int tw_transport_send_fds(tw_transport *t, const int *fds, size_t n)
{
    if (!t)
        return TW_EINVAL;
    if (!t->ops->send_fds)
        return TW_ENOTSUP;
    if (!fds || n == 0 || n > MAX_FDS)
        return TW_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (fds[i] < 0)
            return TW_EINVAL;
    return t->ops->send_fds(t, fds, n);
}
