/* The PROXY protocol header (HAProxy's proxy-protocol.txt, versions 1 and 2),
 * as a pure parser.
 *
 * A proxy in front of a server starts each connection with one header naming
 * the real client; the server parses it from the first bytes it receives,
 * drops the header and hands the rest to the real protocol. The parser does
 * no I/O and no allocation: it reads caller-owned bytes, fills a caller-owned
 * tw_proxy_header, and the TLV slice it returns points into the input.
 *
 * Incomplete and invalid are different answers, and the answer depends only
 * on the bytes: a proper prefix of a valid header is always incomplete
 * (TW_EAGAIN), and bytes that can no longer start a valid header are invalid
 * (TW_EINVAL) as soon as they disagree, so a peer can never make the server
 * wait past the bound below. Bytes after the header are never consumed or
 * even looked at. */
#ifndef TWINE_PROXY_H
#define TWINE_PROXY_H

#include <stddef.h>
#include <stdint.h>

#include <sys/socket.h>

/* The longest version 1 header, "PROXY ... \r\n" included. */
#define TW_PROXY_V1_MAX 107
/* The longest version 2 header: 16 fixed bytes and a 16-bit length. A
 * server waiting for a header never needs more than this many bytes. */
#define TW_PROXY_V2_MAX (16 + 65535)
/* The most bytes tw_proxy_parse may ask for before answering. */
#define TW_PROXY_MAX TW_PROXY_V2_MAX

typedef enum tw_proxy_command {
    /* The proxy's own connection (a health check): keep the connection's
     * own addresses. */
    TW_PROXY_CMD_LOCAL = 0,
    /* Relayed for a client: use the addresses in the header, when given. */
    TW_PROXY_CMD_PROXY = 1,
} tw_proxy_command;

typedef enum tw_proxy_transport {
    TW_PROXY_TRANSPORT_UNKNOWN = 0,
    TW_PROXY_TRANSPORT_STREAM = 1,
    TW_PROXY_TRANSPORT_DGRAM = 2,
} tw_proxy_transport;

/* What tw_proxy_parse found. All of it is set on every call (zeroed when
 * there is nothing to say); the addresses and tlv are meaningful only after
 * a result > 0, error only after TW_EINVAL. */
typedef struct tw_proxy_header {
    int version; /* 1 or 2 */
    tw_proxy_command command;
    tw_proxy_transport transport;
    /* AF_INET, AF_INET6 or AF_UNIX when addresses are given; AF_UNSPEC
     * otherwise (LOCAL, v1 UNKNOWN, v2 UNSPEC). src_len == 0 is the one rule
     * for callers: no address was given, keep the connection's own. */
    int family;
    struct sockaddr_storage src; /* the client */
    struct sockaddr_storage dst; /* the address the client connected to */
    socklen_t src_len;
    socklen_t dst_len;
    /* Version 2: the bytes after the addresses (type-length-value entries),
     * borrowed from the input; NULL and 0 when there are none, and always
     * for version 1. Iterate with tw_proxy_tlv_iter. */
    const uint8_t *tlv;
    size_t tlv_len;
    size_t header_len; /* the bytes the header occupies: the result */
    /* After TW_EINVAL: a static sentence a server can log ("PROXY v1: bad
     * source port"). NULL otherwise. */
    const char *error;
} tw_proxy_header;

/* Parses the header at the start of data[0..len).
 *
 * Returns the number of bytes the header occupies (> 0, <= len): the caller
 * drops them and hands data[result..len) to the real protocol. TW_EAGAIN: the
 * bytes are a proper prefix of what could still be a valid header (including
 * len == 0); call again with more, never with more than TW_PROXY_MAX.
 * TW_EINVAL: not a valid header, with out->error saying why (also for NULL
 * out, where nothing is written, or NULL data with len > 0).
 *
 * Version 1 is checked strictly: single spaces, "TCP4" addresses that
 * inet_pton(AF_INET) takes, "TCP6" ones that inet_pton(AF_INET6) takes,
 * ports 0-65535 in plain decimal (no sign, no leading zero but "0"), and the
 * line ends with "\r\n" within TW_PROXY_V1_MAX bytes (a bare CR or LF, or a
 * character no address or port may hold, is invalid at once). "UNKNOWN" may
 * be followed by anything up to the CRLF, which is ignored; it gives command
 * PROXY with no addresses.
 *
 * Version 2: version 2, command LOCAL or PROXY. LOCAL ignores the family
 * and addresses, as the specification says (its tlv slice is what follows
 * the addresses when the family is known and they fit, else empty). PROXY
 * takes exactly the family/transport pairs UNSPEC/UNSPEC, INET, INET6 and
 * UNIX over STREAM or DGRAM, and a length at least as long as the family's
 * addresses (12, 36, 216 bytes). A unix address is a struct sockaddr_un
 * whose length stops at the path's terminating NUL (when the 108 bytes hold
 * one); an abstract one (first byte NUL) keeps its bytes up to its last
 * non-NUL one. TLVs are not checked here: the iterator reports an overrun. */
int tw_proxy_parse(const void *data, size_t len, tw_proxy_header *out);

/* Some TLV types (PP2_TYPE_*). */
#define TW_PROXY_TLV_ALPN      0x01
#define TW_PROXY_TLV_AUTHORITY 0x02
#define TW_PROXY_TLV_CRC32C    0x03
#define TW_PROXY_TLV_NOOP      0x04
#define TW_PROXY_TLV_UNIQUE_ID 0x05
#define TW_PROXY_TLV_SSL       0x20
#define TW_PROXY_TLV_NETNS     0x30

/* One TLV entry: value[0..len) borrowed from the parsed input. */
typedef struct tw_proxy_tlv {
    uint8_t type;
    uint16_t len;
    const uint8_t *value;
} tw_proxy_tlv;

/* Walks tlv[0..len). Fields are private. */
typedef struct tw_proxy_tlv_iter {
    const uint8_t *p;
    size_t left;
    int failed;
} tw_proxy_tlv_iter;

/* Starts at h->tlv (a header tw_proxy_parse filled with a result > 0). */
void tw_proxy_tlv_iter_init(tw_proxy_tlv_iter *it, const tw_proxy_header *h);

/* Starts at a raw TLV area tlv[0..len) (a nested one, such as an SSL TLV's
 * sub-TLVs after its first 5 bytes). */
void tw_proxy_tlv_iter_init_raw(tw_proxy_tlv_iter *it, const void *tlv, size_t len);

/* Returns 1 with the next entry in *tlv, 0 at the end, or TW_EINVAL when an
 * entry's 3-byte head or its value runs past the end of the area; the error
 * sticks (every later call returns it). */
int tw_proxy_tlv_next(tw_proxy_tlv_iter *it, tw_proxy_tlv *tlv);

#endif
