/* TLS 1.3 record protection: see record.h. */
#include <pthread.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/kdf.h>

#include <twine/alloc.h>
#include <twine/error.h>

#include "tls/record.h"

/* ---- Algorithms, fetched once per process and kept (explicit fetches
 * spare OpenSSL 3 a lookup on every cipher initialisation). */

static EVP_CIPHER *aes128gcm, *aes256gcm, *chacha;
static EVP_KDF *hkdf;
static pthread_once_t fetch_once = PTHREAD_ONCE_INIT;

static void fetch_all(void)
{
    aes128gcm = EVP_CIPHER_fetch(NULL, "AES-128-GCM", NULL);
    aes256gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    chacha = EVP_CIPHER_fetch(NULL, "ChaCha20-Poly1305", NULL);
    hkdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
}

typedef struct suite_info {
    uint16_t id;
    const char *name;
    const char *digest;
    uint8_t hash_len, key_len;
} suite_info;

static const suite_info suites[] = {
    {0x1301, "TLS_AES_128_GCM_SHA256", "SHA256", 32, 16},
    {0x1302, "TLS_AES_256_GCM_SHA384", "SHA384", 48, 32},
    {0x1303, "TLS_CHACHA20_POLY1305_SHA256", "SHA256", 32, 32},
};

static const suite_info *suite_of(uint16_t id)
{
    for (size_t i = 0; i < sizeof suites / sizeof suites[0]; i++)
        if (suites[i].id == id)
            return &suites[i];
    return NULL;
}

const char *tw__tls13_suite_name(uint16_t suite)
{
    const suite_info *s = suite_of(suite);
    return s ? s->name : NULL;
}

/* ---- Key schedule (RFC 8446 §7.1, §7.3) */

/* HKDF-Expand-Label(secret, label, "", out_len). */
static int expand_label(const tw__tls13 *t, const uint8_t *secret, const char *label, uint8_t *out,
                        size_t out_len)
{
    uint8_t info[2 + 1 + 6 + 16 + 1];
    size_t llen = strlen(label);
    if (llen > 16)
        return TW_EINVAL;
    info[0] = (uint8_t)(out_len >> 8);
    info[1] = (uint8_t)out_len;
    info[2] = (uint8_t)(6 + llen);
    memcpy(info + 3, "tls13 ", 6);
    memcpy(info + 9, label, llen);
    info[9 + llen] = 0; /* empty context */
    EVP_KDF_CTX *k = EVP_KDF_CTX_new(hkdf);
    if (!k)
        return TW_ENOMEM;
    int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)t->digest, 0),
        OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)secret, t->secret_len),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, 10 + llen),
        OSSL_PARAM_construct_end(),
    };
    int ok = EVP_KDF_derive(k, out, out_len, params);
    EVP_KDF_CTX_free(k);
    return ok == 1 ? 0 : TW_ETLS;
}

/* key and iv from the direction's secret. */
static int derive_keys(tw__tls13 *t, tw__tls13_dir *d)
{
    int rc = expand_label(t, d->secret, "key", d->key, t->key_len);
    if (rc == 0)
        rc = expand_label(t, d->secret, "iv", d->iv, sizeof d->iv);
    return rc;
}

static void dir_wipe(tw__tls13_dir *d)
{
    EVP_CIPHER_CTX_free(d->cctx);
    d->cctx = NULL;
    OPENSSL_cleanse(d, sizeof *d);
}

int tw__tls13_update_dir(tw__tls13 *t, tw__tls13_dir *d)
{
    uint8_t next[48];
    int rc = expand_label(t, d->secret, "traffic upd", next, t->secret_len);
    if (rc == 0) {
        memcpy(d->secret, next, t->secret_len);
        rc = derive_keys(t, d);
    }
    OPENSSL_cleanse(next, sizeof next);
    if (rc < 0)
        return TW_ETLS;
    d->seq = 0;
    /* A live context takes the new key in place (-1: keep its direction). */
    if (d->cctx && !EVP_CipherInit_ex2(d->cctx, NULL, d->key, NULL, -1, NULL)) {
        EVP_CIPHER_CTX_free(d->cctx);
        d->cctx = NULL;
    }
    return 0;
}

int tw__tls13_init(tw__tls13 *t, uint16_t suite, const uint8_t *read_secret,
                   const uint8_t *write_secret, size_t secret_len, uint64_t read_seq,
                   uint64_t write_seq)
{
    memset(t, 0, sizeof *t);
    const suite_info *s = suite_of(suite);
    if (!s || secret_len != s->hash_len)
        return TW_EINVAL;
    if (pthread_once(&fetch_once, fetch_all) != 0 || !hkdf)
        return TW_ENOTSUP;
    t->cipher = suite == 0x1301 ? aes128gcm : suite == 0x1302 ? aes256gcm : chacha;
    if (!t->cipher)
        return TW_ENOTSUP;
    t->suite = suite;
    t->digest = s->digest;
    t->secret_len = s->hash_len;
    t->key_len = s->key_len;
    memcpy(t->rd.secret, read_secret, secret_len);
    memcpy(t->wr.secret, write_secret, secret_len);
    t->rd.seq = read_seq;
    t->wr.seq = write_seq;
    if (derive_keys(t, &t->rd) < 0 || derive_keys(t, &t->wr) < 0) {
        tw__tls13_cleanup(t);
        return TW_ETLS;
    }
    return 0;
}

void tw__tls13_cleanup(tw__tls13 *t)
{
    dir_wipe(&t->rd);
    dir_wipe(&t->wr);
    tw_free(t->body);
    t->body = NULL;
    t->body_len = t->body_need = 0;
    t->hdr_len = 0;
    OPENSSL_cleanse(t->hs, sizeof t->hs);
}

void tw__tls13_quiet(tw__tls13 *t)
{
    EVP_CIPHER_CTX_free(t->rd.cctx);
    t->rd.cctx = NULL;
    EVP_CIPHER_CTX_free(t->wr.cctx);
    t->wr.cctx = NULL;
}

bool tw__tls13_has_cipher_ctx(const tw__tls13 *t)
{
    return t->rd.cctx || t->wr.cctx;
}

bool tw__tls13_write_key_worn(const tw__tls13 *t)
{
    /* 2^24.5 full records per AES-GCM key; ChaCha20-Poly1305's limit is
     * beyond the sequence numbers. */
    return t->suite != 0x1303 && t->wr.seq >= (1ull << 24);
}

/* The direction's context, made (key schedule) if it was freed. */
static EVP_CIPHER_CTX *dir_ctx(tw__tls13 *t, tw__tls13_dir *d, int enc)
{
    if (d->cctx)
        return d->cctx;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    if (!c)
        return NULL;
    if (!EVP_CipherInit_ex2(c, t->cipher, d->key, NULL, enc, NULL)) {
        EVP_CIPHER_CTX_free(c);
        return NULL;
    }
    d->cctx = c;
    return c;
}

/* RFC 8446 §5.3: the IV XOR the sequence number, left-padded. */
static void make_nonce(const tw__tls13_dir *d, uint8_t nonce[12])
{
    memcpy(nonce, d->iv, 12);
    for (int i = 0; i < 8; i++)
        nonce[11 - i] ^= (uint8_t)(d->seq >> (8 * i));
}

/* ---- Sealing */

int tw__tls13_seal(tw__tls13 *t, uint8_t type, tw__tls13_cursor *cur, size_t len, uint8_t *out)
{
    if (len > TW__TLS13_MAX_CIPHER - 1 - TW__TLS13_TAG)
        return TW_EINVAL;
    if (t->wr.seq == UINT64_MAX)
        return TW_ELIMIT;
    EVP_CIPHER_CTX *c = dir_ctx(t, &t->wr, 1);
    if (!c)
        return TW_ENOMEM;
    uint8_t nonce[12];
    make_nonce(&t->wr, nonce);
    /* The nonce counts as used from here on, whatever happens next. */
    t->wr.seq++;
    if (!EVP_CipherInit_ex2(c, NULL, NULL, nonce, 1, NULL))
        return TW_ETLS;
    size_t blen = len + 1 + TW__TLS13_TAG;
    out[0] = TW__TLS13_CT_APPDATA;
    out[1] = 3;
    out[2] = 3;
    out[3] = (uint8_t)(blen >> 8);
    out[4] = (uint8_t)blen;
    int n;
    if (!EVP_EncryptUpdate(c, NULL, &n, out, TW__TLS13_HEADER))
        return TW_ETLS;
    size_t pos = TW__TLS13_HEADER, left = len;
    while (left > 0) {
        if (cur->i >= cur->iovcnt)
            return TW_EINVAL;
        const struct iovec *v = &cur->iov[cur->i];
        size_t take = v->iov_len - cur->off;
        if (take > left)
            take = left;
        if (take > 0) {
            if (!EVP_EncryptUpdate(c, out + pos, &n, (const uint8_t *)v->iov_base + cur->off,
                                   (int)take))
                return TW_ETLS;
            pos += (size_t)n;
            left -= take;
            cur->off += take;
        }
        if (cur->off == v->iov_len) {
            cur->i++;
            cur->off = 0;
        }
    }
    if (!EVP_EncryptUpdate(c, out + pos, &n, &type, 1))
        return TW_ETLS;
    pos += (size_t)n;
    if (!EVP_EncryptFinal_ex(c, out + pos, &n))
        return TW_ETLS;
    pos += (size_t)n;
    /* The tag through params: EVP_CIPHER_CTX_ctrl would translate to them. */
    OSSL_PARAM tp[] = {
        OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, out + pos, TW__TLS13_TAG),
        OSSL_PARAM_construct_end(),
    };
    if (pos != TW__TLS13_HEADER + len + 1 || EVP_CIPHER_CTX_get_params(c, tp) != 1)
        return TW_ETLS;
    return (int)(pos + TW__TLS13_TAG);
}

static int seal_bytes(tw__tls13 *t, uint8_t type, const uint8_t *p, size_t len, uint8_t *out)
{
    struct iovec v = {(void *)p, len};
    tw__tls13_cursor cur = {&v, 1, 0, 0};
    return tw__tls13_seal(t, type, &cur, len, out);
}

int tw__tls13_seal_alert(tw__tls13 *t, uint8_t desc, uint8_t *out)
{
    bool warning = desc == TW__TLS13_AL_CLOSE_NOTIFY || desc == TW__TLS13_AL_USER_CANCELED;
    uint8_t a[2] = {warning ? 1 : 2, desc};
    return seal_bytes(t, TW__TLS13_CT_ALERT, a, 2, out);
}

int tw__tls13_seal_key_update(tw__tls13 *t, bool request, uint8_t *out)
{
    uint8_t m[5] = {24, 0, 0, 1, request ? 1 : 0};
    int n = seal_bytes(t, TW__TLS13_CT_HANDSHAKE, m, sizeof m, out);
    if (n < 0)
        return n;
    int rc = tw__tls13_update_dir(t, &t->wr);
    return rc < 0 ? rc : n;
}

/* ---- Reading */

static int fail(tw__tls13_error *err, int alert, const char *why)
{
    err->send_alert = alert;
    err->peer_alert = -1;
    err->why = why;
    return TW_ETLS;
}

/* The 5-byte header of a protected record: its body's length. */
static int check_header(const uint8_t *h, size_t *blen, tw__tls13_error *err)
{
    if (h[0] != TW__TLS13_CT_APPDATA)
        return fail(err, TW__TLS13_AL_UNEXPECTED_MESSAGE,
                    h[0] == 20   ? "a ChangeCipherSpec record after the handshake"
                    : h[0] == 21 ? "an unprotected alert after the handshake"
                                 : "a record of an unexpected type after the handshake");
    if (h[1] != 3 || h[2] != 3)
        return fail(err, TW__TLS13_AL_DECODE_ERROR, "a record with a bad legacy version");
    size_t n = (size_t)h[3] << 8 | h[4];
    if (n > TW__TLS13_MAX_CIPHER)
        return fail(err, TW__TLS13_AL_RECORD_OVERFLOW, "a record longer than 2^14 + 256 bytes");
    if (n < 1 + TW__TLS13_TAG)
        return fail(err, TW__TLS13_AL_BAD_RECORD_MAC, "a record too short to be authentic");
    *blen = n;
    return 0;
}

static int on_handshake(tw__tls13 *t, const uint8_t *p, size_t n, const tw__tls13_sink *sink,
                        void *arg, tw__tls13_error *err)
{
    if (n == 0)
        return fail(err, TW__TLS13_AL_UNEXPECTED_MESSAGE, "an empty handshake record");
    size_t i = 0;
    while (i < n) {
        if (!t->hs_body_pending) {
            t->hs[t->hs_len++] = p[i++];
            if (t->hs_len == 1 && t->hs[0] != 24)
                return fail(err, TW__TLS13_AL_UNEXPECTED_MESSAGE,
                            "a post-handshake message other than KeyUpdate");
            if (t->hs_len < 4)
                continue;
            if (t->hs[1] != 0 || t->hs[2] != 0 || t->hs[3] != 1)
                return fail(err, TW__TLS13_AL_DECODE_ERROR, "a KeyUpdate of the wrong length");
            t->hs_body_pending = true;
            continue;
        }
        uint8_t request = p[i++];
        t->hs_len = 0;
        t->hs_body_pending = false;
        if (request > 1)
            return fail(err, TW__TLS13_AL_ILLEGAL_PARAMETER, "a KeyUpdate with a bad request");
        /* The key changes after it: nothing may follow under the old one. */
        if (i != n)
            return fail(err, TW__TLS13_AL_UNEXPECTED_MESSAGE,
                        "a KeyUpdate not at the end of its record");
        if (tw__tls13_update_dir(t, &t->rd) < 0)
            return fail(err, TW__TLS13_AL_INTERNAL_ERROR, "cannot derive the next read key");
        if (request && !sink->key_update_requested(arg))
            return TW__TLS13_STOPPED;
    }
    return 0;
}

/* OpenSSL's limits on records in a row that carry nothing. */
#define MAX_EMPTY_RECORDS  32
#define MAX_WARNING_ALERTS 5

static int act_on_record(tw__tls13 *t, uint8_t type, const uint8_t *out, size_t len,
                         const tw__tls13_sink *sink, void *arg, tw__tls13_error *err)
{
    if (len > TW__TLS13_MAX_PLAIN)
        return fail(err, TW__TLS13_AL_RECORD_OVERFLOW, "a record with more than 2^14 bytes");
    if ((t->hs_len || t->hs_body_pending) && type != TW__TLS13_CT_HANDSHAKE)
        return fail(err, TW__TLS13_AL_UNEXPECTED_MESSAGE,
                    "a record in the middle of a handshake message");
    switch (type) {
    case TW__TLS13_CT_APPDATA:
        if (len == 0) {
            if (++t->empty_records > MAX_EMPTY_RECORDS)
                return fail(err, TW__TLS13_AL_UNEXPECTED_MESSAGE, "too many empty records");
            return 0;
        }
        t->empty_records = t->warning_alerts = 0;
        return sink->data(arg, out, len) ? 0 : TW__TLS13_STOPPED;
    case TW__TLS13_CT_ALERT:
        if (len != 2)
            return fail(err, TW__TLS13_AL_DECODE_ERROR, "an alert of the wrong length");
        if (out[1] == TW__TLS13_AL_CLOSE_NOTIFY) {
            t->closed = true;
            return TW__TLS13_CLOSED;
        }
        if (out[1] == TW__TLS13_AL_USER_CANCELED) {
            if (++t->warning_alerts > MAX_WARNING_ALERTS)
                return fail(err, TW__TLS13_AL_UNEXPECTED_MESSAGE, "too many warning alerts");
            return 0;
        }
        err->send_alert = -1;
        err->peer_alert = out[1];
        err->why = "the peer sent an alert";
        return TW_ETLS;
    case TW__TLS13_CT_HANDSHAKE:
        return on_handshake(t, out, len, sink, arg, err);
    default:
        return fail(err, TW__TLS13_AL_UNEXPECTED_MESSAGE,
                    type == 20 ? "a protected ChangeCipherSpec"
                               : "a record of an unknown content type");
    }
}

/* One whole record: decrypt into out, then act on its content. No
 * plaintext stays behind in out, whatever the outcome. */
static int open_record(tw__tls13 *t, const uint8_t *hdr, const uint8_t *body, size_t blen,
                       uint8_t *out, const tw__tls13_sink *sink, void *arg, tw__tls13_error *err)
{
    if (t->rd.seq == UINT64_MAX)
        return fail(err, TW__TLS13_AL_INTERNAL_ERROR, "read sequence numbers exhausted");
    EVP_CIPHER_CTX *c = dir_ctx(t, &t->rd, 0);
    if (!c)
        return fail(err, TW__TLS13_AL_INTERNAL_ERROR, "cannot make a cipher context");
    uint8_t nonce[12], tag[TW__TLS13_TAG];
    make_nonce(&t->rd, nonce);
    size_t clen = blen - TW__TLS13_TAG;
    memcpy(tag, body + clen, TW__TLS13_TAG);
    int n, m;
    OSSL_PARAM tp[] = {
        OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, tag, TW__TLS13_TAG),
        OSSL_PARAM_construct_end(),
    };
    if (!EVP_CipherInit_ex2(c, NULL, NULL, nonce, 0, NULL) ||
        !EVP_DecryptUpdate(c, NULL, &n, hdr, TW__TLS13_HEADER) ||
        !EVP_DecryptUpdate(c, out, &n, body, (int)clen) || EVP_CIPHER_CTX_set_params(c, tp) != 1)
        return fail(err, TW__TLS13_AL_INTERNAL_ERROR, "the cipher failed");
    int rc;
    if (EVP_DecryptFinal_ex(c, out + n, &m) <= 0) {
        rc = fail(err, TW__TLS13_AL_BAD_RECORD_MAC, "a record that does not decrypt (bad tag)");
        m = 0;
    } else {
        t->rd.seq++;
        size_t len = (size_t)n + (size_t)m;
        while (len > 0 && out[len - 1] == 0)
            len--;
        if (len == 0)
            rc = fail(err, TW__TLS13_AL_UNEXPECTED_MESSAGE, "a record with no content type");
        else
            rc = act_on_record(t, out[len - 1], out, len - 1, sink, arg, err);
    }
    OPENSSL_cleanse(out, clen > (size_t)n + (size_t)m ? clen : (size_t)n + (size_t)m);
    return rc;
}

static void drop_partial(tw__tls13 *t)
{
    tw_free(t->body);
    t->body = NULL;
    t->body_len = t->body_need = 0;
    t->hdr_len = 0;
}

static int read_records(tw__tls13 *t, const uint8_t *data, size_t len, uint8_t *scratch,
                        const tw__tls13_sink *sink, void *arg, tw__tls13_error *err)
{
    size_t at = 0, blen;
    int rc;
    while (at < len) {
        if (t->closed)
            return TW__TLS13_CLOSED;
        /* A whole record in the input: read it where it is. */
        if (t->hdr_len == 0 && len - at >= TW__TLS13_HEADER) {
            if ((rc = check_header(data + at, &blen, err)) < 0)
                return rc;
            if (len - at - TW__TLS13_HEADER >= blen) {
                const uint8_t *h = data + at;
                at += TW__TLS13_HEADER + blen;
                rc = open_record(t, h, h + TW__TLS13_HEADER, blen, scratch, sink, arg, err);
                if (rc != 0)
                    return rc;
                continue;
            }
        }
        /* Part of one: gather its header, then its body. */
        if (t->hdr_len < TW__TLS13_HEADER) {
            size_t take = TW__TLS13_HEADER - t->hdr_len;
            if (take > len - at)
                take = len - at;
            memcpy(t->hdr + t->hdr_len, data + at, take);
            t->hdr_len = (uint8_t)(t->hdr_len + take);
            at += take;
            if (t->hdr_len < TW__TLS13_HEADER)
                return 0;
            if ((rc = check_header(t->hdr, &blen, err)) < 0)
                return rc;
            t->body = tw_malloc(blen);
            if (!t->body)
                return TW_ENOMEM;
            t->body_need = blen;
            t->body_len = 0;
        }
        size_t take = t->body_need - t->body_len;
        if (take > len - at)
            take = len - at;
        memcpy(t->body + t->body_len, data + at, take);
        t->body_len += take;
        at += take;
        if (t->body_len < t->body_need)
            return 0;
        rc = open_record(t, t->hdr, t->body, t->body_need, scratch, sink, arg, err);
        drop_partial(t);
        if (rc != 0)
            return rc;
    }
    return t->closed ? TW__TLS13_CLOSED : 0;
}

int tw__tls13_read(tw__tls13 *t, const uint8_t *data, size_t len, uint8_t *scratch,
                   const tw__tls13_sink *sink, void *arg, tw__tls13_error *err)
{
    /* A failure is final: a caller that reads on (a connection closing after
     * its own close_notify, TLS inside TLS delivering the rest of its input)
     * must not find a half-read record. */
    if (t->failed)
        return fail(err, -1, "the TLS connection already failed");
    int rc = read_records(t, data, len, scratch, sink, arg, err);
    if (rc < 0) {
        t->failed = true;
        drop_partial(t);
    }
    return rc;
}
