/* Fuzzes the SOCKS decoder (and the allow list's rule parser and matcher)
 * with arbitrary bytes.
 *
 * The first byte steers: bit 0 picks the method the server answers a SOCKS5
 * greeting with (none, or username/password), the rest a split point. The
 * other bytes are what the client sends. Invariants, each checked by a trap:
 * - every call returns an event or, only once the decoder is done, TW_EINVAL;
 *   MORE takes every byte; no call takes more than it is given;
 * - the events and fields do not depend on the split: whole, byte by byte
 *   and split at one point give the same answers;
 * - fields stay within their bounds and NUL-terminated; an error has a
 *   printable reason and a reply of a known length;
 * - the input, read as an allow rule, is parsed or refused with a one-line
 *   message, and matching any request against it never crashes. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <twine/error.h>
#include <twine/socks.h>
#include <twine/testing.h>

#include "fuzz.h"

#define MAX_EVENTS 4

struct run {
    tw_socks_decoder d;
    int events[MAX_EVENTS];
    size_t nevents;
    size_t taken;
    bool over;
    uint8_t method;
};

static void feed(struct run *r, const uint8_t *p, size_t n)
{
    while (n > 0 && !r->over) {
        size_t used = 0;
        int ev = tw_socks_decode(&r->d, p, n, &used);
        CHECK(ev >= TW_SOCKS_MORE && ev <= TW_SOCKS_ERROR);
        CHECK(used <= n);
        CHECK(ev != TW_SOCKS_MORE || used == n);
        CHECK(ev == TW_SOCKS_MORE || used > 0);
        r->taken += used;
        p += used;
        n -= used;
        if (ev == TW_SOCKS_MORE)
            continue;
        CHECK(r->nevents < MAX_EVENTS);
        r->events[r->nevents++] = ev;
        if (ev == TW_SOCKS_METHODS)
            CHECK(tw_socks_decoder_method(&r->d, r->method) == 0);
        if (ev == TW_SOCKS_REQUEST || ev == TW_SOCKS_ERROR) {
            r->over = true;
            size_t u = 1;
            CHECK(tw_socks_decode(&r->d, "x", 1, &u) == TW_EINVAL && u == 0);
        }
    }
}

static void start(struct run *r, uint8_t method)
{
    memset(r, 0, sizeof *r);
    tw_socks_decoder_init(&r->d);
    r->method = method;
}

static bool printable(const char *m)
{
    if (*m == '\0')
        return false;
    for (; *m; m++)
        if ((unsigned char)*m < 0x20 || (unsigned char)*m > 0x7e)
            return false;
    return true;
}

static void check_fields(const struct run *r)
{
    const tw_socks_request *q = &r->d.req;
    CHECK(q->name_len <= TW_SOCKS_MAX_NAME && q->name[q->name_len] == '\0');
    CHECK(q->user_len <= TW_SOCKS_MAX_USER && q->user[q->user_len] == '\0');
    CHECK(r->d.password_len <= TW_SOCKS_MAX_USER && r->d.password[r->d.password_len] == '\0');
    if (r->nevents > 0 && r->events[r->nevents - 1] == TW_SOCKS_REQUEST) {
        CHECK(q->version == 4 || q->version == 5);
        CHECK(q->atyp == TW_SOCKS_ATYP_IPV4 || q->atyp == TW_SOCKS_ATYP_IPV6 ||
              q->atyp == TW_SOCKS_ATYP_DOMAIN);
        CHECK((q->atyp == TW_SOCKS_ATYP_DOMAIN) == (q->name_len > 0));
        CHECK(r->d.error == NULL);
    }
    uint8_t out[TW_SOCKS_REPLY_MAX];
    size_t n = tw_socks_error_reply(&r->d, out);
    if (r->nevents > 0 && r->events[r->nevents - 1] == TW_SOCKS_ERROR) {
        CHECK(r->d.error != NULL && printable(r->d.error));
        CHECK(n == 0 || n == 2 || n == 8 || n == 10);
        CHECK((n == 0) == (r->d.reply < 0));
    } else {
        CHECK(r->d.error == NULL && n == 0);
    }
}

static void same(const struct run *a, const struct run *b)
{
    CHECK(a->nevents == b->nevents && a->taken == b->taken && a->over == b->over);
    CHECK(memcmp(a->events, b->events, sizeof a->events) == 0);
    const tw_socks_request *x = &a->d.req, *y = &b->d.req;
    CHECK(x->version == y->version && x->command == y->command && x->atyp == y->atyp);
    CHECK(x->port == y->port && memcmp(x->addr, y->addr, 16) == 0);
    CHECK(x->name_len == y->name_len && memcmp(x->name, y->name, x->name_len) == 0);
    CHECK(x->user_len == y->user_len && memcmp(x->user, y->user, x->user_len) == 0);
    CHECK(a->d.password_len == b->d.password_len);
    CHECK(memcmp(a->d.password, b->d.password, a->d.password_len) == 0);
    CHECK(a->d.nmethods == b->d.nmethods);
    CHECK(memcmp(a->d.methods, b->d.methods, a->d.nmethods) == 0);
    CHECK(a->d.error == b->d.error && a->d.reply == b->d.reply);
}

static void allow_rule(const uint8_t *data, size_t size, const struct run *r)
{
    char *rule = malloc(size + 1);
    CHECK(rule != NULL);
    memcpy(rule, data, size);
    rule[size] = '\0';
    tw_socks_allow *a = NULL;
    CHECK(tw_socks_allow_new(&a) == 0);
    tw_failure *f = NULL;
    int rc = tw_socks_allow_add(a, rule, &f);
    CHECK(rc == 0 || rc == TW_EINVAL);
    if (rc < 0) {
        CHECK(f != NULL && printable(tw_failure_message(f)));
        tw_failure_unref(f);
    } else {
        CHECK(f == NULL && tw_socks_allow_count(a) == 1);
    }
    const tw_socks_request *q = &r->d.req;
    tw_socks_allow_name(a, q->name, q->name_len, q->port);
    tw_socks_allow_name(a, rule, strlen(rule), q->port);
    tw_address addr;
    if (tw_address_from_ip(&addr, "127.0.0.1", q->port) == 0)
        tw_socks_allow_address(a, &addr);
    tw_socks_allow_free(a);
    free(rule);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    long live = tw_testing_alloc_live();
    uint8_t method = data[0] & 1 ? TW_SOCKS_METHOD_USERPASS : TW_SOCKS_METHOD_NONE;
    size_t at = size > 1 ? (data[0] >> 1) % size : 0;
    const uint8_t *p = data + 1;
    size_t n = size - 1;

    struct run whole, bytes, split;
    start(&whole, method);
    feed(&whole, p, n);
    check_fields(&whole);
    CHECK(whole.taken <= n);
    CHECK(whole.over || whole.taken == n);

    start(&bytes, method);
    for (size_t i = 0; i < n; i++)
        feed(&bytes, p + i, 1);
    same(&whole, &bytes);

    start(&split, method);
    feed(&split, p, at < n ? at : n);
    if (at < n)
        feed(&split, p + at, n - at);
    same(&whole, &split);

    allow_rule(p, n, &whole);
    CHECK(tw_testing_alloc_live() == live);
    return 0;
}
