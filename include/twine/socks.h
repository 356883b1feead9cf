/* SOCKS servers (twisted.protocols.socks: SOCKSv4 and 4a; and SOCKS5, RFC
 * 1928, with RFC 1929's username/password): CONNECT only, to the
 * destinations an allow list names.
 *
 * Three layers, each usable alone:
 *   - a decoder of what a client sends (greeting, authentication, request),
 *     pure and incremental: it does no I/O and no allocation, takes bytes in
 *     any split, and keeps only fixed-size fields, so a client can never make
 *     it hold more than sizeof(tw_socks_decoder);
 *   - the allow list: which destinations (networks, hosts, port ranges) a
 *     client may reach;
 *   - the server: a factory whose connections negotiate, check the allow
 *     list, connect (a name through the hostname endpoint: resolution on the
 *     reactor's thread pool, several addresses) and then relay both ways
 *     with flow control (portforward.h's relay).
 *
 * ---- What the server answers (RFC 1928 section 6; SOCKS4's two codes)
 *   destination connected           5: 0x00 succeeded, with BND.ADDR/BND.PORT
 *                                   the outbound connection's local address;
 *                                   4: 0x5A, with the destination's address
 *                                   (as Twisted's SOCKSv4Outgoing)
 *   not in the allow list           5: 0x02 "not allowed by ruleset"; 4: 0x5B
 *   BIND, UDP ASSOCIATE, other      5: 0x07 "command not supported"; 4: 0x5B
 *   connection refused              5: 0x05; timed out 0x06; network
 *                                   unreachable 0x03; host unreachable or a
 *                                   name that does not resolve or is not a
 *                                   host name 0x04; anything else 0x01; 4: 0x5B
 *   malformed request               5: 0x01 (0x08 for an unknown address
 *                                   type); 4: 0x5B; an unknown version byte or
 *                                   a malformed greeting: no answer
 *   no acceptable method            05 FF (RFC 1928 section 3)
 *   bad user name or password       01 01 (RFC 1929)
 * Every answer but success is followed by closing the connection, and logged
 * (namespace "twine.socks", info level: under a flood a warning each would be
 * noise) with the client's address and what it asked for. A client that has
 * not completed its request within the negotiation timeout is closed. */
#ifndef TWINE_SOCKS_H
#define TWINE_SOCKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <twine/failure.h>
#include <twine/portforward.h>
#include <twine/protocol.h>
#include <twine/reactor.h>
#include <twine/transport.h>

/* Bounds on what a client sends. SOCKS5 carries lengths in one byte, so its
 * fields cannot be longer; SOCKS4 and 4a end theirs with a NUL, and a longer
 * one is malformed. */
#define TW_SOCKS_MAX_NAME 255 /* a destination host name */
#define TW_SOCKS_MAX_USER 255 /* a SOCKS4 user id; an RFC 1929 user name or password */

enum {
    TW_SOCKS_CMD_CONNECT = 1,
    TW_SOCKS_CMD_BIND = 2,
    TW_SOCKS_CMD_UDP_ASSOCIATE = 3,
};

/* Address types (SOCKS5's ATYP; a SOCKS4 request is IPV4, a SOCKS4a one DOMAIN). */
enum {
    TW_SOCKS_ATYP_IPV4 = 1,
    TW_SOCKS_ATYP_DOMAIN = 3,
    TW_SOCKS_ATYP_IPV6 = 4,
};

/* SOCKS5 authentication methods. */
enum {
    TW_SOCKS_METHOD_NONE = 0x00,
    TW_SOCKS_METHOD_GSSAPI = 0x01,
    TW_SOCKS_METHOD_USERPASS = 0x02,
    TW_SOCKS_METHOD_UNACCEPTABLE = 0xff,
};

/* Reply codes: SOCKS4's, then SOCKS5's. */
enum {
    TW_SOCKS4_GRANTED = 0x5a,
    TW_SOCKS4_REJECTED = 0x5b,
    TW_SOCKS5_SUCCEEDED = 0x00,
    TW_SOCKS5_FAILURE = 0x01,
    TW_SOCKS5_NOT_ALLOWED = 0x02,
    TW_SOCKS5_NET_UNREACHABLE = 0x03,
    TW_SOCKS5_HOST_UNREACHABLE = 0x04,
    TW_SOCKS5_REFUSED = 0x05,
    TW_SOCKS5_TTL_EXPIRED = 0x06,
    TW_SOCKS5_CMD_UNSUPPORTED = 0x07,
    TW_SOCKS5_ATYP_UNSUPPORTED = 0x08,
};

/* ---- The decoder */

/* A request, as the client sent it. */
typedef struct tw_socks_request {
    uint8_t version; /* 4 (SOCKS4 and 4a) or 5 */
    uint8_t command; /* TW_SOCKS_CMD_*, or whatever else the client sent */
    uint8_t atyp;    /* TW_SOCKS_ATYP_* */
    uint16_t port;
    uint8_t addr[16]; /* IPV4: addr[0..4); IPV6: addr[0..16); network order; else zeros */
    /* DOMAIN: name_len bytes (SOCKS5's may be any bytes, NUL included),
     * then a NUL. */
    char name[TW_SOCKS_MAX_NAME + 1];
    size_t name_len;
    /* SOCKS4's user id, or the RFC 1929 user name of a SOCKS5 client:
     * user_len bytes, then a NUL. */
    char user[TW_SOCKS_MAX_USER + 1];
    size_t user_len;
} tw_socks_request;

typedef enum tw_socks_event {
    TW_SOCKS_MORE = 0, /* every byte taken, the message not complete yet */
    TW_SOCKS_METHODS,  /* a SOCKS5 greeting: methods[0..nmethods) (0 of them is allowed) */
    TW_SOCKS_AUTH,     /* RFC 1929 credentials: req.user, password */
    TW_SOCKS_REQUEST,  /* a complete request: req */
    TW_SOCKS_ERROR,    /* malformed: error, reply */
} tw_socks_event;

/* What a SOCKS client sends, decoded. Read the public members after the
 * event that fills them; the rest is private. */
typedef struct tw_socks_decoder {
    tw_socks_request req;
    uint8_t nmethods;
    uint8_t methods[255];
    char password[TW_SOCKS_MAX_USER + 1]; /* password_len bytes, then a NUL */
    size_t password_len;
    /* After TW_SOCKS_ERROR: a static sentence ("SOCKS4 user id longer than
     * 255 bytes"), and the code of the answer owed, or -1 when the protocol
     * has none (tw_socks_error_reply builds it). */
    const char *error;
    int reply;
    /* Private. */
    uint8_t state;
    uint8_t phase;
    uint16_t need, got;
} tw_socks_decoder;

/* Prepares a decoder for a new connection (the client's first byte picks
 * SOCKS4 or SOCKS5). */
void tw_socks_decoder_init(tw_socks_decoder *d);

/* Decodes data[0..len), stopping at the end of a message: *consumed bytes
 * were taken (the rest belongs to what follows: the next message, or bytes
 * for the destination after a request). Returns the event (>= 0):
 * TW_SOCKS_MORE when all len bytes were taken and the message goes on;
 * TW_SOCKS_METHODS after a SOCKS5 greeting (answer it, then call
 * tw_socks_decoder_method before decoding more); TW_SOCKS_AUTH after RFC 1929
 * credentials (the request follows); TW_SOCKS_REQUEST or TW_SOCKS_ERROR, after
 * which the decoder is done. The answer depends only on the bytes, not on how
 * they were split. Returns TW_EINVAL (nothing taken) for a NULL d or
 * consumed, NULL data with len > 0, or a decoder that is done. */
int tw_socks_decode(tw_socks_decoder *d, const void *data, size_t len, size_t *consumed);

/* The method the server chose after TW_SOCKS_METHODS: with
 * TW_SOCKS_METHOD_USERPASS, RFC 1929's subnegotiation is decoded next; with
 * any other, the request. Returns 0, or TW_EINVAL when the greeting was not
 * the last message decoded. */
int tw_socks_decoder_method(tw_socks_decoder *d, uint8_t method);

/* ---- Replies: bytes to write. TW_SOCKS_REPLY_MAX is room for any. */
#define TW_SOCKS_REPLY_MAX 22

/* The answer to a request: SOCKS4 (8 bytes: 0, code, port, IPv4) or SOCKS5
 * (05, code, 00, ATYP, BND.ADDR, BND.PORT: 10 bytes for IPv4, 22 for IPv6).
 * `addr` fills the address and port: an AF_INET or AF_INET6 address (an
 * IPv6 one is zeros for SOCKS4), or NULL: 0.0.0.0, port 0. Returns the
 * length, 0 for a version that is neither 4 nor 5. */
size_t tw_socks_reply(uint8_t version, uint8_t code, const tw_address *addr, uint8_t *out);

/* The answer owed after TW_SOCKS_ERROR (a request reply, or RFC 1929's
 * failure status), or 0 when there is none. */
size_t tw_socks_error_reply(const tw_socks_decoder *d, uint8_t *out);

/* ---- The allow list
 *
 * A list of rules; a destination is allowed when any rule matches it, and
 * an empty list allows nothing. A rule is HOST or HOST:PORTS:
 *   HOST    *                    any destination, by address or by name
 *           192.0.2.7            one IPv4 address (a /32)
 *           10.0.0.0/8           an IPv4 network (host bits are ignored:
 *                                127.0.0.1/8 is 127.0.0.0/8)
 *           [2001:db8::1]        one IPv6 address; [2001:db8::]/32 a network;
 *                                without a port the brackets may be left out
 *                                (::1, fe80::/10)
 *           example.org          that host name (case does not matter, nor
 *                                a final dot)
 *           *.example.org        any name under example.org (not
 *                                example.org itself)
 *   PORTS   443, 8000-8999 or *  (default: every port, 1-65535)
 * An IPv4-mapped IPv6 destination (::ffff:192.0.2.7) is checked as the IPv4
 * address it is. A destination given by name (SOCKS4a, SOCKS5's DOMAIN) is
 * checked against the name rules (and *) only, before it is resolved: the
 * addresses it resolves to are not checked, so allow a name only if you
 * trust what it resolves to. A name that is an IP literal counts as that
 * address. */
typedef struct tw_socks_allow tw_socks_allow;

/* An empty list. Returns 0 and *out, TW_EINVAL (out NULL) or TW_ENOMEM. */
int tw_socks_allow_new(tw_socks_allow **out);
void tw_socks_allow_free(tw_socks_allow *a); /* NULL is ignored */

/* Parses and adds one rule (NUL-terminated). Returns 0; TW_EINVAL, with
 * *failure (if failure is not NULL) saying which part is wrong ("allow rule
 * '10.0.0.0/33': prefix length 33 out of range (0-32)"); TW_ENOMEM. */
int tw_socks_allow_add(tw_socks_allow *a, const char *rule, tw_failure **failure);

size_t tw_socks_allow_count(const tw_socks_allow *a);

/* Whether a rule allows this AF_INET / AF_INET6 address and its port
 * (another family, or port 0: never). */
bool tw_socks_allow_address(const tw_socks_allow *a, const tw_address *addr);

/* Whether a rule allows this name (name_len bytes) and port. An IP literal is
 * checked as tw_socks_allow_address would; a name holding a NUL byte never
 * matches. */
bool tw_socks_allow_name(const tw_socks_allow *a, const char *name, size_t name_len, unsigned port);

/* ---- The server */

#define TW_SOCKS_NEGOTIATION_TIMEOUT 30.0 /* seconds from connection to a complete request */
#define TW_SOCKS_CONNECT_TIMEOUT     30.0 /* seconds to connect to the destination */

typedef struct tw_socks_options {
    double negotiation_timeout; /* 0: TW_SOCKS_NEGOTIATION_TIMEOUT */
    double connect_timeout;     /* 0: TW_SOCKS_CONNECT_TIMEOUT */
    size_t max_pending;         /* bytes held while connecting; 0: TW_RELAY_MAX_PENDING */
    /* When set (both), SOCKS5 clients must authenticate with them (RFC 1929)
     * and SOCKS4 requests, which cannot, are refused. Copied. */
    const char *username;
    const char *password;
} tw_socks_options;

typedef struct tw_socks_stats {
    uint64_t requests;    /* complete requests decoded */
    uint64_t denied;      /* refused by the allow list */
    uint64_t unsupported; /* commands other than CONNECT */
    uint64_t malformed;   /* bad bytes, or a destination name that is no host name */
    uint64_t auth_failed; /* no acceptable method, bad credentials, SOCKS4 when they are required */
    uint64_t granted;     /* connected to the destination */
    uint64_t failed;      /* could not connect */
    uint64_t timeouts;    /* negotiations that timed out */
    tw_relay_stats relay; /* the relays of granted requests */
} tw_socks_stats;

/* SOCKSv4Factory and its SOCKS5 sibling: each connection speaks SOCKS4, 4a
 * or 5 (the client's first byte decides). `allow` is taken over on success
 * (the caller keeps it on error). Destinations are connected through client
 * endpoints made on r. Returns 0 and *out; TW_EINVAL (NULL r, allow or out;
 * a negative or NaN timeout; only one of username and password); TW_ENOMEM.
 * Reference counted as tw_portforward_factory is. */
typedef struct tw_socks_factory tw_socks_factory;

int tw_socks_factory_new(tw_reactor *r, tw_socks_allow *allow, const tw_socks_options *opts,
                         tw_socks_factory **out);
tw_factory *tw_socks_factory_base(tw_socks_factory *sf);
const tw_socks_stats *tw_socks_factory_stats(const tw_socks_factory *sf);
void tw_socks_factory_free(tw_socks_factory *sf); /* drops the owner's reference; NULL ignored */

#endif
