/* The PROXY protocol header parser: see proxy.h. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <string.h>
#include <sys/un.h>

#include <twine/error.h>
#include <twine/proxy.h>

static const char v1_sig[] = "PROXY ";
#define V1_SIG_LEN 6
static const uint8_t v2_sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                   0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};
#define V2_SIG_LEN 12
#define V2_FIXED   16

static int fail(tw_proxy_header *out, const char *why)
{
    out->error = why;
    return TW_EINVAL;
}

/* ---- Version 1 */

/* A character an address or a port may hold, or their separator. */
static bool v1_addr_char(uint8_t c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == '.' ||
           c == ':' || c == ' ';
}

/* The protocol word after "PROXY ": *n bytes of it are in p[0..avail).
 * Returns 4 or 6 for TCP4/TCP6, 0 for UNKNOWN, -1 when the bytes disagree
 * with every word, -2 when too few bytes decide. */
static int v1_protocol(const uint8_t *p, size_t avail)
{
    static const char *const words[] = {"TCP4 ", "TCP6 ", "UNKNOWN"};
    static const int kinds[] = {4, 6, 0};
    for (int i = 0; i < 3; i++) {
        size_t wl = strlen(words[i]);
        size_t n = avail < wl ? avail : wl;
        if (memcmp(p, words[i], n) != 0)
            continue;
        if (avail < wl)
            return -2;
        if (kinds[i] != 0)
            return kinds[i];
        /* "UNKNOWN" ends the line or is followed by a space. */
        if (avail == wl)
            return -2;
        return (p[wl] == ' ' || p[wl] == '\r') ? 0 : -1;
    }
    return -1;
}

/* A port: "0" or 1-5 digits without a leading zero, at most 65535. */
static bool v1_port(const uint8_t *s, size_t n, uint16_t *port)
{
    if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
        return false;
    uint32_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (uint32_t)(s[i] - '0');
    }
    if (v > 65535)
        return false;
    *port = (uint16_t)v;
    return true;
}

static bool v1_addr(int family, const uint8_t *s, size_t n, struct sockaddr_storage *ss,
                    socklen_t *sslen)
{
    char buf[INET6_ADDRSTRLEN];
    if (n == 0 || n >= sizeof buf)
        return false;
    memcpy(buf, s, n);
    buf[n] = '\0';
    if (family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)ss;
        if (inet_pton(AF_INET, buf, &sin->sin_addr) != 1)
            return false;
        sin->sin_family = AF_INET;
        *sslen = sizeof *sin;
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
        if (inet_pton(AF_INET6, buf, &sin6->sin6_addr) != 1)
            return false;
        sin6->sin6_family = AF_INET6;
        *sslen = sizeof *sin6;
    }
    return true;
}

static void set_port(struct sockaddr_storage *ss, uint16_t port)
{
    if (ss->ss_family == AF_INET)
        ((struct sockaddr_in *)ss)->sin_port = htons(port);
    else
        ((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
}

/* Parses the four fields of a complete TCP4/TCP6 line: f[0..n) holds
 * "<src> <dst> <sport> <dport>" (no CRLF). */
static int v1_fields(const uint8_t *f, size_t n, int family, tw_proxy_header *out)
{
    const uint8_t *field[4];
    size_t flen[4];
    size_t start = 0;
    int k = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && f[i] != ' ')
            continue;
        if (k == 4)
            return fail(out, "PROXY v1: too many fields");
        field[k] = f + start;
        flen[k] = i - start;
        k++;
        start = i + 1;
    }
    if (k != 4)
        return fail(out, "PROXY v1: too few fields");
    if (!v1_addr(family, field[0], flen[0], &out->src, &out->src_len))
        return fail(out, "PROXY v1: bad source address");
    if (!v1_addr(family, field[1], flen[1], &out->dst, &out->dst_len))
        return fail(out, "PROXY v1: bad destination address");
    uint16_t sport, dport;
    if (!v1_port(field[2], flen[2], &sport))
        return fail(out, "PROXY v1: bad source port");
    if (!v1_port(field[3], flen[3], &dport))
        return fail(out, "PROXY v1: bad destination port");
    set_port(&out->src, sport);
    set_port(&out->dst, dport);
    return 0;
}

static int parse_v1(const uint8_t *d, size_t len, tw_proxy_header *out)
{
    size_t avail = len < TW_PROXY_V1_MAX ? len : TW_PROXY_V1_MAX;
    int proto = v1_protocol(d + V1_SIG_LEN, avail - V1_SIG_LEN);
    if (proto == -1)
        return fail(out, "PROXY v1: unknown protocol (not TCP4, TCP6 or UNKNOWN)");
    /* Find the CRLF, rejecting at once what no line could hold. */
    size_t end = 0;
    for (size_t i = V1_SIG_LEN; i < avail; i++) {
        uint8_t c = d[i];
        if (c == '\r') {
            if (i + 2 > TW_PROXY_V1_MAX)
                return fail(out, "PROXY v1: line longer than 107 bytes");
            if (i + 1 == len)
                return TW_EAGAIN;
            if (d[i + 1] != '\n')
                return fail(out, "PROXY v1: CR not followed by LF");
            end = i;
            break;
        }
        if (c == '\n')
            return fail(out, "PROXY v1: LF without CR");
        if (proto > 0 && i >= V1_SIG_LEN + 5 && !v1_addr_char(c))
            return fail(out, "PROXY v1: invalid character in an address or port");
    }
    if (proto == -2 && end == 0)
        return TW_EAGAIN;
    if (end == 0)
        return len >= TW_PROXY_V1_MAX ? fail(out, "PROXY v1: no CRLF within 107 bytes") : TW_EAGAIN;
    if (proto == -2) /* the line ended inside the protocol word */
        return fail(out, "PROXY v1: unknown protocol (not TCP4, TCP6 or UNKNOWN)");

    out->version = 1;
    out->command = TW_PROXY_CMD_PROXY;
    out->header_len = end + 2;
    if (proto == 0) {
        out->transport = TW_PROXY_TRANSPORT_UNKNOWN;
        out->family = AF_UNSPEC;
        return (int)out->header_len;
    }
    int family = proto == 4 ? AF_INET : AF_INET6;
    size_t first = V1_SIG_LEN + 5;
    int rc = v1_fields(d + first, end - first, family, out);
    if (rc < 0) {
        out->src_len = out->dst_len = 0;
        out->header_len = 0;
        out->version = 0;
        return rc;
    }
    out->transport = TW_PROXY_TRANSPORT_STREAM;
    out->family = family;
    return (int)out->header_len;
}

/* ---- Version 2 */

/* The address block size of a family nibble, or -1 for an unknown one. */
static int v2_addr_size(uint8_t fam)
{
    switch (fam) {
    case 0x0:
        return 0;
    case 0x1:
        return 12;
    case 0x2:
        return 36;
    case 0x3:
        return 216;
    default:
        return -1;
    }
}

static void v2_unix(const uint8_t *p, struct sockaddr_storage *ss, socklen_t *sslen)
{
    struct sockaddr_un *sun = (struct sockaddr_un *)ss;
    size_t cap = sizeof sun->sun_path < 108 ? sizeof sun->sun_path : 108;
    sun->sun_family = AF_UNIX;
    memcpy(sun->sun_path, p, cap);
    size_t n;
    if (p[0] != 0) {
        const uint8_t *nul = memchr(p, 0, cap);
        n = nul ? (size_t)(nul - p) + 1 : cap;
    } else {
        n = cap;
        while (n > 0 && p[n - 1] == 0)
            n--;
    }
    *sslen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
}

static int parse_v2(const uint8_t *d, size_t len, tw_proxy_header *out)
{
    if (len < V2_SIG_LEN + 1)
        return TW_EAGAIN;
    uint8_t ver = d[12] >> 4, cmd = d[12] & 0x0f;
    if (ver != 2)
        return fail(out, "PROXY v2: unsupported version");
    if (cmd > 1)
        return fail(out, "PROXY v2: unknown command");
    if (len < V2_SIG_LEN + 2)
        return TW_EAGAIN;
    uint8_t fam = d[13] >> 4, tr = d[13] & 0x0f;
    int asize = v2_addr_size(fam);
    if (cmd == 1) {
        bool ok = (fam == 0 && tr == 0) || (asize > 0 && (tr == 1 || tr == 2));
        if (!ok)
            return fail(out, "PROXY v2: unknown address family or transport");
    }
    if (len < V2_FIXED)
        return TW_EAGAIN;
    size_t blen = ((size_t)d[14] << 8) | d[15];
    if (cmd == 1 && blen < (size_t)asize)
        return fail(out, "PROXY v2: length too short for the address family");
    if (len < V2_FIXED + blen)
        return TW_EAGAIN;

    const uint8_t *blk = d + V2_FIXED;
    out->version = 2;
    out->header_len = V2_FIXED + blen;
    out->family = AF_UNSPEC;
    size_t skip = 0;
    if (cmd == 0) {
        out->command = TW_PROXY_CMD_LOCAL;
        if (asize >= 0 && (size_t)asize <= blen)
            skip = (size_t)asize;
        else
            skip = blen;
    } else {
        out->command = TW_PROXY_CMD_PROXY;
        out->transport = tr == 1   ? TW_PROXY_TRANSPORT_STREAM
                         : tr == 2 ? TW_PROXY_TRANSPORT_DGRAM
                                   : TW_PROXY_TRANSPORT_UNKNOWN;
        skip = (size_t)asize;
        if (fam == 1) {
            struct sockaddr_in *s = (struct sockaddr_in *)&out->src;
            struct sockaddr_in *t = (struct sockaddr_in *)&out->dst;
            s->sin_family = t->sin_family = AF_INET;
            memcpy(&s->sin_addr, blk, 4);
            memcpy(&t->sin_addr, blk + 4, 4);
            memcpy(&s->sin_port, blk + 8, 2);
            memcpy(&t->sin_port, blk + 10, 2);
            out->src_len = out->dst_len = sizeof *s;
            out->family = AF_INET;
        } else if (fam == 2) {
            struct sockaddr_in6 *s = (struct sockaddr_in6 *)&out->src;
            struct sockaddr_in6 *t = (struct sockaddr_in6 *)&out->dst;
            s->sin6_family = t->sin6_family = AF_INET6;
            memcpy(&s->sin6_addr, blk, 16);
            memcpy(&t->sin6_addr, blk + 16, 16);
            memcpy(&s->sin6_port, blk + 32, 2);
            memcpy(&t->sin6_port, blk + 34, 2);
            out->src_len = out->dst_len = sizeof *s;
            out->family = AF_INET6;
        } else if (fam == 3) {
            v2_unix(blk, &out->src, &out->src_len);
            v2_unix(blk + 108, &out->dst, &out->dst_len);
            out->family = AF_UNIX;
        }
    }
    if (blen > skip) {
        out->tlv = blk + skip;
        out->tlv_len = blen - skip;
    }
    return (int)out->header_len;
}

int tw_proxy_parse(const void *data, size_t len, tw_proxy_header *out)
{
    if (out == NULL)
        return TW_EINVAL;
    memset(out, 0, sizeof *out);
    if (data == NULL && len > 0)
        return fail(out, "PROXY: NULL data");
    const uint8_t *d = data;
    size_t n1 = len < V1_SIG_LEN ? len : V1_SIG_LEN;
    size_t n2 = len < V2_SIG_LEN ? len : V2_SIG_LEN;
    if (len > 0 && memcmp(d, v1_sig, n1) == 0)
        return len < V1_SIG_LEN ? TW_EAGAIN : parse_v1(d, len, out);
    if (len > 0 && memcmp(d, v2_sig, n2) == 0)
        return len < V2_SIG_LEN ? TW_EAGAIN : parse_v2(d, len, out);
    if (len == 0)
        return TW_EAGAIN;
    return fail(out, "PROXY: no PROXY protocol signature");
}

/* ---- TLVs */

void tw_proxy_tlv_iter_init_raw(tw_proxy_tlv_iter *it, const void *tlv, size_t len)
{
    it->p = tlv;
    it->left = tlv ? len : 0;
    it->failed = 0;
}

void tw_proxy_tlv_iter_init(tw_proxy_tlv_iter *it, const tw_proxy_header *h)
{
    tw_proxy_tlv_iter_init_raw(it, h->tlv, h->tlv_len);
}

int tw_proxy_tlv_next(tw_proxy_tlv_iter *it, tw_proxy_tlv *tlv)
{
    if (it->failed)
        return TW_EINVAL;
    if (it->left == 0)
        return 0;
    if (it->left < 3) {
        it->failed = 1;
        return TW_EINVAL;
    }
    size_t vlen = ((size_t)it->p[1] << 8) | it->p[2];
    if (vlen > it->left - 3) {
        it->failed = 1;
        return TW_EINVAL;
    }
    tlv->type = it->p[0];
    tlv->len = (uint16_t)vlen;
    tlv->value = it->p + 3;
    it->p += 3 + vlen;
    it->left -= 3 + vlen;
    return 1;
}
