/* Fuzzes the TLS 1.3 record layer Twine runs itself (src/tls/record.c),
 * with fixed traffic secrets. The first input byte picks the mode:
 *
 * - even: the rest is ciphertext, fed to the reader in two pieces (split
 *   where the second byte says): record headers, lengths, partial records,
 *   tags;
 * - odd: the rest describes plaintext records, sealed by a peer holding the
 *   matching keys and then fed to the reader (in two pieces), so the inner
 *   parser is reached: content types, padding, alerts, handshake messages
 *   split across records, KeyUpdate. Each record is [type][len][len bytes]:
 *   type & 0x7f is the inner content type as sealed (0 makes the end of the
 *   plaintext the type and padding), type & 0x80 multiplies len by 65
 *   (oversized records); a sealed well-formed KeyUpdate moves the peer's key
 *   as a real peer's would.
 *
 * Invariants, each checked by a trap:
 * - reading ends with 0, STOPPED, CLOSED, TW_ENOMEM or TW_ETLS, and TW_ETLS
 *   always names a reason and an alert to send or the peer's;
 * - no more application data comes out than went in (odd mode), and what
 *   comes out is a prefix of what the peer sealed as application data
 *   when no padding or KeyUpdate trickery is involved;
 * - nothing leaks (ASan), nothing reads out of bounds. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <twine/error.h>

#include "fuzz.h"
#include "tls/record.h"

static const uint8_t secret_c[48] = "client traffic secret 0 for the fuzzer.........";
static const uint8_t secret_s[48] = "server traffic secret 0 for the fuzzer.........";

struct seen {
    size_t delivered;
    int key_updates;
    tw__tls13 *reader;
};

static bool on_data(void *arg, const uint8_t *p, size_t n)
{
    struct seen *s = arg;
    CHECK(n > 0 && p);
    s->delivered += n;
    return true;
}

static bool on_key_update(void *arg)
{
    struct seen *s = arg;
    uint8_t rec[TW__TLS13_OVERHEAD + 5];
    CHECK(tw__tls13_seal_key_update(s->reader, false, rec) == (int)sizeof rec);
    s->key_updates++;
    return true;
}

static const tw__tls13_sink sink = {.data = on_data, .key_update_requested = on_key_update};

static uint8_t scratch[TW__TLS13_MAX_CIPHER];

static void feed(tw__tls13 *r, const uint8_t *data, size_t len, size_t split, struct seen *s)
{
    tw__tls13_error err = {0};
    if (split > len)
        split = len;
    int rc = tw__tls13_read(r, data, split, scratch, &sink, s, &err);
    if (rc == 0)
        rc = tw__tls13_read(r, data + split, len - split, scratch, &sink, s, &err);
    CHECK(rc == 0 || rc == TW__TLS13_STOPPED || rc == TW__TLS13_CLOSED || rc == TW_ENOMEM ||
          rc == TW_ETLS);
    if (rc == TW_ETLS) {
        CHECK(err.why != NULL);
        CHECK(err.send_alert >= 0 || err.peer_alert >= 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    static const uint16_t suites[] = {0x1301, 0x1302, 0x1303};
    uint16_t suite = suites[(data[0] >> 1) % 3];
    size_t slen = suite == 0x1302 ? 48 : 32;
    tw__tls13 reader;
    CHECK(tw__tls13_init(&reader, suite, secret_c, secret_s, slen, 0, 0) == 0);
    struct seen s = {.reader = &reader};
    size_t split = data[1];
    if (!(data[0] & 1)) {
        feed(&reader, data + 2, size - 2, split * 67, &s);
        tw__tls13_cleanup(&reader);
        return 0;
    }
    tw__tls13 peer;
    CHECK(tw__tls13_init(&peer, suite, secret_s, secret_c, slen, 0, 0) == 0);
    size_t cap = 4 * (TW__TLS13_MAX_CIPHER + TW__TLS13_HEADER) + size * 2, at = 0, sealed = 0;
    uint8_t *stream = malloc(cap);
    CHECK(stream);
    const uint8_t *p = data + 2, *end = data + size;
    while (end - p >= 2) {
        uint8_t type = p[0] & 0x7f;
        size_t n = p[1] * (p[0] & 0x80 ? 65u : 1u);
        p += 2;
        if (n > (size_t)(end - p))
            n = (size_t)(end - p);
        if (n > TW__TLS13_MAX_CIPHER - 1 - TW__TLS13_TAG)
            n = TW__TLS13_MAX_CIPHER - 1 - TW__TLS13_TAG;
        if (at + tw__tls13_record_size(n) > cap)
            break;
        struct iovec v = {(void *)p, n};
        tw__tls13_cursor cur = {&v, 1, 0, 0};
        int rc = tw__tls13_seal(&peer, type, &cur, n, stream + at);
        CHECK(rc == (int)tw__tls13_record_size(n));
        at += (size_t)rc;
        if (type == TW__TLS13_CT_APPDATA)
            sealed += n;
        if (type == TW__TLS13_CT_HANDSHAKE && n == 5 && p[0] == 24 && p[1] == 0 && p[2] == 0 &&
            p[3] == 1 && p[4] <= 1)
            CHECK(tw__tls13_update_dir(&peer, &peer.wr) == 0);
        p += n;
    }
    feed(&reader, stream, at, split * 131, &s);
    /* Padding tricks (type 0) can turn other bytes into data; without them
     * nothing but sealed application data comes out. */
    bool padded = false;
    for (const uint8_t *q = data + 2; end - q >= 2;) {
        padded |= (q[0] & 0x7f) == 0;
        size_t n = q[1] * (q[0] & 0x80 ? 65u : 1u);
        q += 2 + (n < (size_t)(end - q - 2) ? n : (size_t)(end - q - 2));
    }
    if (!padded)
        CHECK(s.delivered <= sealed);
    free(stream);
    tw__tls13_cleanup(&peer);
    tw__tls13_cleanup(&reader);
    return 0;
}
