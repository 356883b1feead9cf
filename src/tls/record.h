/* TLS 1.3 record protection done by Twine itself (RFC 8446 §5, §7.1-7.3,
 * §4.6.3), with OpenSSL's crypto primitives only (EVP AEAD ciphers, HKDF).
 *
 * Contract:
 * - After a TLS 1.3 handshake that OpenSSL ran, a server connection hands
 *   the two application traffic secrets (CLIENT/SERVER_TRAFFIC_SECRET_0)
 *   and the sequence numbers reached to tw__tls13_init, then frees its SSL:
 *   from then on this module protects and unprotects every record.
 * - Suites: TLS_AES_128_GCM_SHA256 (0x1301), TLS_AES_256_GCM_SHA384 (0x1302),
 *   TLS_CHACHA20_POLY1305_SHA256 (0x1303). Anything else is refused at init.
 * - It does no I/O and keeps no plaintext: tw__tls13_read takes ciphertext
 *   as it arrives (any split) and hands the application data, in order, to
 *   the caller's sink; tw__tls13_seal builds one whole record (header,
 *   ciphertext, tag) in the caller's buffer.
 * - Memory: the state is a few hundred bytes (secrets, keys, IVs, sequence
 *   numbers). One EVP_CIPHER_CTX per direction is made on the first record
 *   that needs it and kept until tw__tls13_quiet (the caller's busy/quiet
 *   policy). A record that arrived in part waits in a buffer allocated only
 *   while it is partial: an idle connection holds no buffer.
 * - Nonces: iv XOR the 64-bit sequence number; a sequence number is never
 *   used twice with one key: sealing fails (TW_ELIMIT) rather than wrap, and
 *   the caller must then fail the connection.
 * - Secrets and keys are wiped (OPENSSL_cleanse) when replaced and at
 *   tw__tls13_cleanup.
 * - Tags are checked by EVP_DecryptFinal_ex (constant time is its job).
 *
 * What the reader accepts after the handshake (anything else is a fatal
 * error naming the alert to send):
 * - outer records of type application_data (23), legacy version 0x0303,
 *   length at most 2^14 + 256 (else unexpected_message / decode_error /
 *   record_overflow), that decrypt (else bad_record_mac);
 * - a content type (an all-zero plaintext: unexpected_message) and at most
 *   2^14 bytes of content once the zero padding and the type are removed
 *   (record_overflow);
 * - application_data (may be empty, but not more than 32 empty records in a
 *   row: unexpected_message, as OpenSSL);
 * - alert: exactly two bytes (decode_error); close_notify ends the stream
 *   (TW__TLS13_CLOSED, later bytes ignored), user_canceled is ignored (5 in a
 *   row at most, as OpenSSL), any other ends it with the peer's alert
 *   reported;
 * - handshake: KeyUpdate only (other messages: unexpected_message), length 1
 *   (decode_error), request 0 or 1 (illegal_parameter); a message may be
 *   split across records (no other record type may come in between:
 *   unexpected_message), and a KeyUpdate must end its record, since the key
 *   changes after it (RFC 8446 §5.1; unexpected_message). The read key moves
 *   after each KeyUpdate; update_requested calls the sink first.
 *
 * Everything runs on one thread; the state is the caller's. */
#ifndef TWINE_TLS_RECORD_H
#define TWINE_TLS_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include <openssl/evp.h>

#define TW__TLS13_HEADER     5
#define TW__TLS13_TAG        16
#define TW__TLS13_MAX_PLAIN  16384u          /* per record, from the caller */
#define TW__TLS13_MAX_CIPHER (16384u + 256u) /* a record body we accept */
#define TW__TLS13_OVERHEAD   (TW__TLS13_HEADER + 1 + TW__TLS13_TAG)

/* Content types and the alerts this module names. */
enum {
    TW__TLS13_CT_ALERT = 21,
    TW__TLS13_CT_HANDSHAKE = 22,
    TW__TLS13_CT_APPDATA = 23,
};
enum {
    TW__TLS13_AL_CLOSE_NOTIFY = 0,
    TW__TLS13_AL_UNEXPECTED_MESSAGE = 10,
    TW__TLS13_AL_BAD_RECORD_MAC = 20,
    TW__TLS13_AL_RECORD_OVERFLOW = 22,
    TW__TLS13_AL_ILLEGAL_PARAMETER = 47,
    TW__TLS13_AL_DECODE_ERROR = 50,
    TW__TLS13_AL_INTERNAL_ERROR = 80,
    TW__TLS13_AL_USER_CANCELED = 90,
};

typedef struct tw__tls13_dir {
    uint8_t secret[48]; /* the current traffic secret (KeyUpdate derives the next) */
    uint8_t key[32];
    uint8_t iv[12];
    uint64_t seq;
    EVP_CIPHER_CTX *cctx; /* NULL while quiet */
} tw__tls13_dir;

typedef struct tw__tls13 {
    tw__tls13_dir rd, wr;
    const EVP_CIPHER *cipher;
    const char *digest; /* "SHA256" or "SHA384" */
    uint16_t suite;
    uint8_t secret_len, key_len;
    /* A record arriving in part: its header, then (allocated only then) its body. */
    uint8_t hdr[TW__TLS13_HEADER];
    uint8_t hdr_len;
    uint8_t *body;
    size_t body_len, body_need;
    /* A handshake message arriving in part: up to its 4-byte header. */
    uint8_t hs[4];
    uint8_t hs_len;
    bool hs_body_pending; /* the header is complete; its 1-byte body is next */
    bool closed;          /* close_notify received: later bytes are ignored */
    bool failed;          /* reading failed: every later read fails too */
    /* Records in a row that carried nothing (empty application data, warning
     * alerts): bounded as OpenSSL bounds them, so a flood of them ends the
     * connection instead of keeping it busy. */
    uint8_t empty_records, warning_alerts;
} tw__tls13;

/* Where the reader hands what it found. Each callback returns false to stop
 * reading at once (the caller is closing); tw__tls13_read then returns
 * TW__TLS13_STOPPED and the bytes not yet read are dropped. */
typedef struct tw__tls13_sink {
    /* Application data, in order; len > 0. Borrowed for the call. */
    bool (*data)(void *arg, const uint8_t *p, size_t len);
    /* The peer's KeyUpdate asked for ours: send KeyUpdate(update_not_requested)
     * (tw__tls13_seal_key_update) before any other record. */
    bool (*key_update_requested)(void *arg);
} tw__tls13_sink;

/* Why reading stopped with TW_ETLS. */
typedef struct tw__tls13_error {
    int send_alert;  /* the alert to send to the peer, or -1 (the peer's alert ended it) */
    int peer_alert;  /* the alert the peer sent, or -1 */
    const char *why; /* static text */
} tw__tls13_error;

enum { TW__TLS13_STOPPED = 1, TW__TLS13_CLOSED = 2 };

/* The suite's OpenSSL name ("TLS_AES_128_GCM_SHA256"), or NULL when not one
 * of ours. */
const char *tw__tls13_suite_name(uint16_t suite);

/* Sets t up for `suite` with the peer's (read) and our (write) traffic
 * secrets (secret_len: the suite's hash length) and sequence numbers.
 * Returns 0; TW_EINVAL (suite or length not ours); TW_ENOTSUP (OpenSSL lacks
 * the cipher or the KDF); TW_ETLS (the KDF failed). On error t holds nothing
 * to release (tw__tls13_cleanup is harmless). */
int tw__tls13_init(tw__tls13 *t, uint16_t suite, const uint8_t *read_secret,
                   const uint8_t *write_secret, size_t secret_len, uint64_t read_seq,
                   uint64_t write_seq);

/* Wipes every secret and frees the cipher contexts and the partial record. */
void tw__tls13_cleanup(tw__tls13 *t);

/* Frees the cipher contexts (they are made again, key schedule only, on the
 * next record). */
void tw__tls13_quiet(tw__tls13 *t);
bool tw__tls13_has_cipher_ctx(const tw__tls13 *t);

/* Reads len bytes of the peer's stream. `scratch` is the caller's buffer of
 * at least TW__TLS13_MAX_CIPHER bytes, which plaintext is decrypted into.
 * Returns 0 (all read; a partial record may be kept), TW__TLS13_STOPPED,
 * TW__TLS13_CLOSED (close_notify; the rest ignored, and every later call
 * returns TW__TLS13_CLOSED), TW_ENOMEM (the partial record's buffer; the
 * stream is broken: fail with internal_error), or TW_ETLS with *err set.
 * A failure is final: every later call returns TW_ETLS. */
int tw__tls13_read(tw__tls13 *t, const uint8_t *data, size_t len, uint8_t *scratch,
                   const tw__tls13_sink *sink, void *arg, tw__tls13_error *err);

/* Reads plaintext from an iovec array, across calls. */
typedef struct tw__tls13_cursor {
    const struct iovec *iov;
    int iovcnt;
    int i;      /* the current element */
    size_t off; /* bytes of it already taken */
} tw__tls13_cursor;

/* Bytes one record of `len` plaintext bytes takes on the wire. */
static inline size_t tw__tls13_record_size(size_t len)
{
    return len + TW__TLS13_OVERHEAD;
}

/* Seals one record of content type `type` whose plaintext is the next len
 * bytes of cur into out (tw__tls13_record_size(len) bytes), under the write
 * key, and advances the write sequence number. A valid record holds at most
 * TW__TLS13_MAX_PLAIN bytes: callers keep to that (up to 2^14 + 239 are
 * sealed too, for tests that need an oversized record; type 0 with the
 * real type and zeros at the end of the plaintext makes a padded one).
 * Returns the record's size; TW_ELIMIT (sequence numbers exhausted: the key
 * must not be used again); TW_ENOMEM; TW_ETLS (the cipher failed); TW_EINVAL
 * (len too big, or cur holds fewer bytes). */
int tw__tls13_seal(tw__tls13 *t, uint8_t type, tw__tls13_cursor *cur, size_t len, uint8_t *out);

/* Seals an alert (level fatal, or warning for close_notify / user_canceled)
 * into out (tw__tls13_record_size(2) bytes). Returns as tw__tls13_seal. */
int tw__tls13_seal_alert(tw__tls13 *t, uint8_t desc, uint8_t *out);

/* Seals KeyUpdate(request) into out (tw__tls13_record_size(5) bytes), then
 * moves the write key to the next generation (sequence 0). Returns as
 * tw__tls13_seal. */
int tw__tls13_seal_key_update(tw__tls13 *t, bool request, uint8_t *out);

/* The next generation of a traffic secret ("traffic upd") and its key and
 * IV; sequence number 0. Returns 0 or TW_ETLS. */
int tw__tls13_update_dir(tw__tls13 *t, tw__tls13_dir *d);

/* AES-GCM's per-key record limit (RFC 8446 §5.5): sending past it should be
 * preceded by a KeyUpdate. */
bool tw__tls13_write_key_worn(const tw__tls13 *t);

#endif
