/* Framing decoders and encoders of twisted.protocols.basic, as pure parsers.
 *
 * Three decoders, one per framing: lines (LineReceiver), netstrings
 * (NetstringReceiver) and length-prefixed strings (Int8/16/32StringReceiver).
 * Each is a small header embedded in a protocol, fed the bytes the protocol
 * received; it does no I/O. A frame lying wholly inside the bytes fed is
 * handed to the callback as a slice of them (zero copy); only a frame split
 * across feeds is kept, in a bounded tw_rbuf, until it completes.
 *
 * Common rules for every decoder:
 * - The callback (tw_frame_fn) gets each complete frame in stream order. The
 *   bytes are borrowed for the call. It returns 0 to go on, or non-zero to
 *   stop right after that frame: feed then returns 1 with *consumed saying
 *   how many bytes of the input it took; the caller owns the rest (to handle
 *   them another way, or to feed them again later). The callback may change
 *   the decoder's settings (delimiter, maximum), which apply from the next
 *   frame on; it must not feed, reset or drop the decoder (stop instead).
 * - feed returns 0 when it took all the bytes (*consumed == len), 1 when the
 *   callback stopped it, or a negative code. *consumed (when consumed is not
 *   NULL) is always set: the bytes taken, whose frames were delivered or
 *   whose content the decoder now holds.
 * - TW_ENOMEM: the decoder could not store a partial frame. It is left as it
 *   was before the failing step and no byte is lost: data[0..*consumed) was
 *   taken, and the caller feeds data[*consumed..len) again (later, or after
 *   freeing memory) to carry on exactly where it stopped.
 * - The partial frame never holds more than the maximum frame (plus a partial
 *   delimiter for lines); an empty decoder owns no memory, so an idle
 *   connection costs only the header. reset drops everything it owns.
 * - The result depends only on the bytes, never on how they were split
 *   across feeds: the same frames come out in the same order, and the same
 *   error after the same frames.
 * - TW_EINVAL for a NULL decoder or callback, or NULL data with len > 0
 *   (nothing taken, nothing called). */
#ifndef TWINE_FRAMING_H
#define TWINE_FRAMING_H

#include <stddef.h>
#include <stdint.h>

#include <twine/buffer.h>

/* One complete frame: data[0..len) is borrowed for the call (and is not
 * NUL-terminated). Returns 0 to go on, non-zero to stop after this frame. */
typedef int (*tw_frame_fn)(void *ctx, const char *data, size_t len);

/* ---- Lines (LineReceiver) --------------------------------------------- */

/* LineReceiver.MAX_LENGTH. */
#define TW_LINE_DEFAULT_MAX 16384
/* The longest delimiter a line decoder takes. */
#define TW_LINE_DELIMITER_MAX 16
/* The largest maximum line length (larger settings are clamped to it). */
#define TW_LINE_MAX_LIMIT (UINT32_MAX - TW_LINE_DELIMITER_MAX)

/* Embed it and tw_line_decoder_init it; tw_line_decoder_reset before the
 * memory goes. Fields are private. */
typedef struct tw_line_decoder {
    tw_rbuf buf; /* the partial line, possibly ending with part of the delimiter */
    uint32_t max;
    uint8_t delim_len;
    char delim[TW_LINE_DELIMITER_MAX];
} tw_line_decoder;

/* Delimiter "\r\n", maximum TW_LINE_DEFAULT_MAX, nothing held. */
void tw_line_decoder_init(tw_line_decoder *d);

/* Sets the delimiter to a copy of delim[0..len), 1 <= len <=
 * TW_LINE_DELIMITER_MAX; it applies to the next line found. Returns 0;
 * TW_EINVAL for a bad length; TW_EBUSY while a partial line is held (it may
 * already hold part of the old delimiter): change it from the line callback,
 * or after taking the buffer. */
int tw_line_decoder_set_delimiter(tw_line_decoder *d, const void *delim, size_t len);

/* The longest line accepted, delimiter excluded: 0 means TW_LINE_DEFAULT_MAX;
 * larger than TW_LINE_MAX_LIMIT means that limit. A partial line already
 * longer than a lowered maximum is reported at the next feed. */
void tw_line_decoder_set_max(tw_line_decoder *d, size_t max);

/* Feeds data[0..len): calls on_line for each complete line, without its
 * delimiter, and keeps the incomplete tail. A delimiter split across feeds is
 * found. Returns 0, 1 (stopped) or a negative code; see the common rules.
 *
 * TW_EMSGSIZE: a line is longer than the maximum, whether its delimiter was
 * seen or not (a tail is too long once it is longer than the maximum plus the
 * part of the delimiter it may end with: the verdict never depends on how the
 * bytes were split). Lines before it were delivered; *consumed counts the
 * bytes up to the end of the last of them, so data[*consumed..len) starts
 * with (the rest of) the long line. It is reported once: the decoder drops
 * what it held and is left empty, as after init with the same settings, and
 * the next feed starts a new line. The protocol calls line_length_exceeded
 * (which, in Twisted, drops the connection). */
int tw_line_decoder_feed(tw_line_decoder *d, const void *data, size_t len, tw_frame_fn on_line,
                         void *ctx, size_t *consumed);

/* The partial line held (without any complete line): *len bytes, valid until
 * the next feed, clear or reset; NULL with *len = 0 when empty. With
 * tw_line_decoder_clear this is clearLineBuffer: peek, take what is there,
 * then clear. A protocol switching to raw mode outside a line callback hands
 * these bytes to its raw handler; from inside the callback the decoder holds
 * nothing and the rest of the input is data[*consumed..len). */
const char *tw_line_decoder_buffered(const tw_line_decoder *d, size_t *len);

/* Drops the partial line and frees its storage; settings stay. */
void tw_line_decoder_clear(tw_line_decoder *d);

/* Same as clear: releases everything the decoder owns. */
void tw_line_decoder_reset(tw_line_decoder *d);

/* ---- Netstrings (NetstringReceiver) ----------------------------------- */

/* NetstringReceiver.MAX_LENGTH. */
#define TW_NETSTRING_DEFAULT_MAX 99999

/* Why a netstring stream was rejected. */
typedef enum tw_netstring_error {
    TW_NETSTRING_OK = 0,
    TW_NETSTRING_BAD_LENGTH,   /* a non-digit in the length, or an empty one */
    TW_NETSTRING_LEADING_ZERO, /* "01:...": the length has a leading zero */
    TW_NETSTRING_TOO_LONG,     /* the length is over the maximum */
    TW_NETSTRING_NO_COMMA,     /* the payload is not followed by ',' */
} tw_netstring_error;

/* Embed it and tw_netstring_decoder_init it; reset before the memory goes. */
typedef struct tw_netstring_decoder {
    tw_rbuf buf; /* the partial payload */
    uint32_t max;
    uint32_t need; /* the declared payload length */
    uint8_t state; /* private */
    uint8_t error; /* tw_netstring_error, once failed */
} tw_netstring_decoder;

/* max: the longest payload; 0 means TW_NETSTRING_DEFAULT_MAX, larger than
 * UINT32_MAX means UINT32_MAX. */
void tw_netstring_decoder_init(tw_netstring_decoder *d, size_t max);

/* Changes the maximum; it applies to lengths read from now on. */
void tw_netstring_decoder_set_max(tw_netstring_decoder *d, size_t max);

/* Feeds data[0..len), calling on_string with each payload once its trailing
 * comma is seen. Returns 0, 1 (stopped) or a negative code (common rules).
 *
 * A malformed stream cannot be resynchronised, so its errors stick: the
 * decoder fails, every later feed returns the same code and takes nothing,
 * until reset. TW_EINVAL for a malformed netstring (BAD_LENGTH, LEADING_ZERO,
 * NO_COMMA), TW_EMSGSIZE for a length over the maximum (found as soon as the
 * digits pass it); tw_netstring_decoder_error says which, and
 * tw_netstring_error_message gives a sentence to log. *consumed counts the
 * bytes before the offending one. */
int tw_netstring_decoder_feed(tw_netstring_decoder *d, const void *data, size_t len,
                              tw_frame_fn on_string, void *ctx, size_t *consumed);

/* Why the decoder failed: TW_NETSTRING_OK while it has not. */
tw_netstring_error tw_netstring_decoder_error(const tw_netstring_decoder *d);

/* A static sentence for an error kind ("netstring length has a leading
 * zero"); never NULL. */
const char *tw_netstring_error_message(tw_netstring_error e);

/* Drops the partial netstring and the failed state; the maximum stays. */
void tw_netstring_decoder_reset(tw_netstring_decoder *d);

/* The size of "LEN:PAYLOAD," for a payload of len bytes. */
size_t tw_netstring_encoded_len(size_t len);

/* Writes the netstring of data[0..len) into out[0..size) and its length into
 * *out_len (when not NULL). Returns 0; TW_ENOBUFS (nothing written) when size
 * is below tw_netstring_encoded_len(len); TW_EINVAL for NULL data with len >
 * 0 or NULL out with size > 0. */
int tw_netstring_encode(const void *data, size_t len, void *out, size_t size, size_t *out_len);

/* Appends the netstring of data[0..len) to q, all of it or nothing. Returns
 * 0, TW_ENOMEM (q unchanged) or TW_EINVAL. Frames over a few KiB are
 * assembled in a temporary buffer so the append stays all or nothing. */
int tw_netstring_write(tw_wqueue *q, const void *data, size_t len);

/* ---- Length-prefixed strings (Int8/16/32StringReceiver) --------------- */

/* Embed it and tw_prefixed_decoder_init it; reset before the memory goes. */
typedef struct tw_prefixed_decoder {
    tw_rbuf buf; /* the partial payload */
    uint32_t max;
    uint32_t need;  /* the payload length of the frame being read */
    uint8_t prefix; /* 1, 2 or 4 */
    uint8_t have;   /* prefix bytes collected in hdr */
    uint8_t state;  /* private */
    uint8_t hdr[4];
} tw_prefixed_decoder;

/* The largest length a prefix of prefix_bytes can carry (255, 65535,
 * 4294967295), or 0 for a size other than 1, 2 or 4. */
uint32_t tw_prefixed_limit(unsigned prefix_bytes);

/* prefix_bytes: 1, 2 or 4 (a big-endian unsigned length, as "!B", "!H",
 * "!I"). max: the longest payload accepted; 0 or more than the prefix can
 * carry means what the prefix can carry. Returns 0, or TW_EINVAL for another
 * prefix size (the decoder is then unusable). */
int tw_prefixed_decoder_init(tw_prefixed_decoder *d, unsigned prefix_bytes, size_t max);

/* Changes the maximum (same rule as init); it applies to prefixes read from
 * now on. */
void tw_prefixed_decoder_set_max(tw_prefixed_decoder *d, size_t max);

/* Feeds data[0..len), calling on_string with each payload. Returns 0, 1
 * (stopped) or a negative code (common rules). TW_EMSGSIZE when a prefix
 * announces more than the maximum (lengthLimitExceeded): the error sticks,
 * every later feed returns it and takes nothing, until reset. *consumed then
 * counts the bytes taken, the offending prefix included. */
int tw_prefixed_decoder_feed(tw_prefixed_decoder *d, const void *data, size_t len,
                             tw_frame_fn on_string, void *ctx, size_t *consumed);

/* Drops the partial frame and the failed state; prefix and maximum stay. */
void tw_prefixed_decoder_reset(tw_prefixed_decoder *d);

/* Writes the prefix and data[0..len) into out[0..size), the total into
 * *out_len (when not NULL). Returns 0; TW_EMSGSIZE when len is more than the
 * prefix can carry (StringTooLongError); TW_ENOBUFS when size is below
 * prefix_bytes + len; TW_EINVAL for a bad prefix size or NULL pointers with
 * lengths. Nothing is written on error. */
int tw_prefixed_encode(unsigned prefix_bytes, const void *data, size_t len, void *out, size_t size,
                       size_t *out_len);

/* Appends the prefix and data[0..len) to q, all or nothing. Returns 0,
 * TW_EMSGSIZE (StringTooLongError), TW_ENOMEM (q unchanged) or TW_EINVAL. */
int tw_prefixed_write(tw_wqueue *q, unsigned prefix_bytes, const void *data, size_t len);

#endif
