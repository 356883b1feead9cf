/* The SOCKS decoder and replies (socks.h): a byte-at-a-time state machine
 * over fixed-size fields, so any split of the input gives the same answer
 * and nothing a client sends is ever held beyond the struct. */
#include <string.h>

#include <twine/error.h>
#include <twine/socks.h>

enum state {
    ST_VERSION,
    /* SOCKS4 and 4a */
    ST4_CMD,
    ST4_PORT,
    ST4_ADDR,
    ST4_USER,
    ST4_NAME,
    /* SOCKS5 greeting */
    ST5_NMETHODS,
    ST5_METHODS,
    /* RFC 1929 */
    STA_VERSION,
    STA_ULEN,
    STA_UNAME,
    STA_PLEN,
    STA_PASSWD,
    /* SOCKS5 request */
    ST5_VERSION,
    ST5_CMD,
    ST5_RSV,
    ST5_ATYP,
    ST5_ADDR,
    ST5_NAMELEN,
    ST5_NAME,
    ST5_PORT,
    ST_DONE,
};

/* Which answer an error owes. */
enum phase {
    PH_GREETING, /* none: the client's protocol is not known, or has no error answer */
    PH_AUTH,     /* RFC 1929 failure status */
    PH_REQUEST,  /* a request reply of req.version */
};

void tw_socks_decoder_init(tw_socks_decoder *d)
{
    memset(d, 0, sizeof *d);
    d->reply = -1;
    d->state = ST_VERSION;
    d->phase = PH_GREETING;
}

static int fail(tw_socks_decoder *d, const char *why, int reply)
{
    d->state = ST_DONE;
    d->error = why;
    d->reply = reply;
    return TW_SOCKS_ERROR;
}

/* Appends b to a bounded NUL-terminated field. */
static bool field_add(char *field, size_t *len, size_t max, uint8_t b)
{
    if (*len >= max)
        return false;
    field[(*len)++] = (char)b;
    field[*len] = '\0';
    return true;
}

/* Takes one byte; returns the event it completes, or TW_SOCKS_MORE. */
static int step(tw_socks_decoder *d, uint8_t b)
{
    tw_socks_request *q = &d->req;
    switch (d->state) {
    case ST_VERSION:
        if (b == 4) {
            q->version = 4;
            d->phase = PH_REQUEST;
            d->state = ST4_CMD;
        } else if (b == 5) {
            q->version = 5;
            d->state = ST5_NMETHODS;
        } else {
            return fail(d, "not a SOCKS4 or SOCKS5 request (unknown version byte)", -1);
        }
        return TW_SOCKS_MORE;

    case ST4_CMD:
        q->command = b;
        d->got = 0;
        d->state = ST4_PORT;
        return TW_SOCKS_MORE;
    case ST4_PORT:
        q->port = (uint16_t)(q->port << 8 | b);
        if (++d->got == 2) {
            d->got = 0;
            d->state = ST4_ADDR;
        }
        return TW_SOCKS_MORE;
    case ST4_ADDR:
        q->addr[d->got++] = b;
        if (d->got == 4) {
            q->atyp = TW_SOCKS_ATYP_IPV4;
            d->state = ST4_USER;
        }
        return TW_SOCKS_MORE;
    case ST4_USER:
        if (b == 0) {
            /* SOCKS4a: 0.0.0.x with x != 0 says a name follows. */
            if (q->addr[0] == 0 && q->addr[1] == 0 && q->addr[2] == 0 && q->addr[3] != 0) {
                q->atyp = TW_SOCKS_ATYP_DOMAIN;
                memset(q->addr, 0, sizeof q->addr);
                d->state = ST4_NAME;
                return TW_SOCKS_MORE;
            }
            d->state = ST_DONE;
            return TW_SOCKS_REQUEST;
        }
        if (!field_add(q->user, &q->user_len, TW_SOCKS_MAX_USER, b))
            return fail(d, "SOCKS4 user id longer than 255 bytes", TW_SOCKS4_REJECTED);
        return TW_SOCKS_MORE;
    case ST4_NAME:
        if (b == 0) {
            if (q->name_len == 0)
                return fail(d, "SOCKS4a request with an empty host name", TW_SOCKS4_REJECTED);
            d->state = ST_DONE;
            return TW_SOCKS_REQUEST;
        }
        if (!field_add(q->name, &q->name_len, TW_SOCKS_MAX_NAME, b))
            return fail(d, "SOCKS4a host name longer than 255 bytes", TW_SOCKS4_REJECTED);
        return TW_SOCKS_MORE;

    case ST5_NMETHODS:
        d->nmethods = b;
        d->got = 0;
        d->state = b == 0 ? ST5_VERSION : ST5_METHODS;
        return b == 0 ? TW_SOCKS_METHODS : TW_SOCKS_MORE;
    case ST5_METHODS:
        d->methods[d->got++] = b;
        if (d->got < d->nmethods)
            return TW_SOCKS_MORE;
        d->state = ST5_VERSION;
        return TW_SOCKS_METHODS;

    case STA_VERSION:
        if (b != 1)
            return fail(d, "RFC 1929 authentication version is not 1", 1);
        d->state = STA_ULEN;
        return TW_SOCKS_MORE;
    case STA_ULEN:
        d->need = b;
        q->user_len = 0;
        q->user[0] = '\0';
        d->state = b == 0 ? STA_PLEN : STA_UNAME;
        return TW_SOCKS_MORE;
    case STA_UNAME:
        field_add(q->user, &q->user_len, TW_SOCKS_MAX_USER, b); /* need <= 255: fits */
        if (q->user_len == d->need)
            d->state = STA_PLEN;
        return TW_SOCKS_MORE;
    case STA_PLEN:
        d->need = b;
        d->password_len = 0;
        d->password[0] = '\0';
        if (b == 0) {
            d->state = ST5_VERSION;
            d->phase = PH_REQUEST;
            return TW_SOCKS_AUTH;
        }
        d->state = STA_PASSWD;
        return TW_SOCKS_MORE;
    case STA_PASSWD:
        field_add(d->password, &d->password_len, TW_SOCKS_MAX_USER, b);
        if (d->password_len < d->need)
            return TW_SOCKS_MORE;
        d->state = ST5_VERSION;
        d->phase = PH_REQUEST;
        return TW_SOCKS_AUTH;

    case ST5_VERSION:
        d->phase = PH_REQUEST;
        if (b != 5)
            return fail(d, "SOCKS5 request whose version is not 5", TW_SOCKS5_FAILURE);
        d->state = ST5_CMD;
        return TW_SOCKS_MORE;
    case ST5_CMD:
        q->command = b;
        d->state = ST5_RSV;
        return TW_SOCKS_MORE;
    case ST5_RSV:
        if (b != 0)
            return fail(d, "SOCKS5 request whose reserved byte is not 0", TW_SOCKS5_FAILURE);
        d->state = ST5_ATYP;
        return TW_SOCKS_MORE;
    case ST5_ATYP:
        q->atyp = b;
        d->got = 0;
        if (b == TW_SOCKS_ATYP_IPV4 || b == TW_SOCKS_ATYP_IPV6) {
            d->need = b == TW_SOCKS_ATYP_IPV4 ? 4 : 16;
            d->state = ST5_ADDR;
        } else if (b == TW_SOCKS_ATYP_DOMAIN) {
            d->state = ST5_NAMELEN;
        } else {
            return fail(d, "SOCKS5 request with an unknown address type",
                        TW_SOCKS5_ATYP_UNSUPPORTED);
        }
        return TW_SOCKS_MORE;
    case ST5_ADDR:
        q->addr[d->got++] = b;
        if (d->got == d->need) {
            d->got = 0;
            d->state = ST5_PORT;
        }
        return TW_SOCKS_MORE;
    case ST5_NAMELEN:
        if (b == 0)
            return fail(d, "SOCKS5 request with an empty host name", TW_SOCKS5_FAILURE);
        d->need = b;
        d->state = ST5_NAME;
        return TW_SOCKS_MORE;
    case ST5_NAME:
        field_add(q->name, &q->name_len, TW_SOCKS_MAX_NAME, b); /* need <= 255: fits */
        if (q->name_len == d->need) {
            d->got = 0;
            d->state = ST5_PORT;
        }
        return TW_SOCKS_MORE;
    case ST5_PORT:
        q->port = (uint16_t)(q->port << 8 | b);
        if (++d->got < 2)
            return TW_SOCKS_MORE;
        d->state = ST_DONE;
        return TW_SOCKS_REQUEST;
    default:
        return fail(d, "SOCKS decoder used after it was done", -1);
    }
}

int tw_socks_decode(tw_socks_decoder *d, const void *data, size_t len, size_t *consumed)
{
    if (consumed)
        *consumed = 0;
    if (!d || !consumed || (!data && len > 0) || d->state == ST_DONE)
        return TW_EINVAL;
    const uint8_t *p = data;
    size_t i = 0;
    int ev = TW_SOCKS_MORE;
    while (i < len && ev == TW_SOCKS_MORE)
        ev = step(d, p[i++]);
    *consumed = i;
    return ev;
}

int tw_socks_decoder_method(tw_socks_decoder *d, uint8_t method)
{
    /* Right after the greeting: the request's first byte not yet taken. */
    if (!d || d->state != ST5_VERSION || d->phase != PH_GREETING)
        return TW_EINVAL;
    if (method == TW_SOCKS_METHOD_USERPASS) {
        d->state = STA_VERSION;
        d->phase = PH_AUTH;
    }
    return 0;
}

static void put16(uint8_t *p, unsigned v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

size_t tw_socks_reply(uint8_t version, uint8_t code, const tw_address *addr, uint8_t *out)
{
    int family = addr && addr->len > 0 ? addr->u.sa.sa_family : AF_UNSPEC;
    if (version == 4) {
        memset(out, 0, 8);
        out[1] = code;
        if (family == AF_INET) {
            put16(out + 2, ntohs(addr->u.in.sin_port));
            memcpy(out + 4, &addr->u.in.sin_addr, 4);
        }
        return 8;
    }
    if (version != 5)
        return 0;
    out[0] = 5;
    out[1] = code;
    out[2] = 0;
    if (family == AF_INET6) {
        out[3] = TW_SOCKS_ATYP_IPV6;
        memcpy(out + 4, &addr->u.in6.sin6_addr, 16);
        put16(out + 20, ntohs(addr->u.in6.sin6_port));
        return 22;
    }
    out[3] = TW_SOCKS_ATYP_IPV4;
    memset(out + 4, 0, 6);
    if (family == AF_INET) {
        memcpy(out + 4, &addr->u.in.sin_addr, 4);
        put16(out + 8, ntohs(addr->u.in.sin_port));
    }
    return 10;
}

size_t tw_socks_error_reply(const tw_socks_decoder *d, uint8_t *out)
{
    if (!d || !d->error || d->reply < 0)
        return 0;
    if (d->phase == PH_AUTH) {
        out[0] = 1; /* RFC 1929's version, then a failure status */
        out[1] = (uint8_t)d->reply;
        return 2;
    }
    if (d->phase != PH_REQUEST)
        return 0;
    return tw_socks_reply(d->req.version, (uint8_t)d->reply, NULL, out);
}
