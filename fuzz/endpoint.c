/* Fuzzes the endpoint description parser with arbitrary bytes.
 *
 * The first byte chooses the role (bit 0) and, with bit 1 set, makes
 * allocations fail after (byte >> 2) have succeeded; the rest is the
 * description, NUL bytes and all. Invariants, each checked by a trap:
 * - the result is 0, TW_EINVAL or (only when allocations fail) TW_ENOMEM, with
 *   a failure of the same code whose message is one line of printable ASCII;
 * - on success, format(spec) is no longer than the input, parses again for the
 *   same role to an equal spec with equal typed fields, and formats again to
 *   the same bytes (the canonical form is a fixed point);
 * - a description without NUL bytes parses the same through tw_endpoint_parse;
 * - nothing leaks (LeakSanitizer) and nothing is read out of bounds (the
 *   input is libFuzzer's own buffer, of exactly its size). */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <twine/alloc.h>
#include <twine/endpoint.h>
#include <twine/error.h>
#include <twine/testing.h>

#include "fuzz.h"

/* A registered type with a validator of its own, so that path is fuzzed too:
 * one optional positional number, options a= and b=, and a typed value. */
static int validate_reg(const tw_endpoint_spec *spec, void *arg, void **typed,
                        tw_release_fn *release, tw_failure **failure)
{
    static const char *const params[] = {"n", "a", "b"};
    const tw_endpoint_arg *slot[3];
    int rc = tw_endpoint_bind_args(spec, params, 3, 1, slot, failure);
    if (rc < 0)
        return rc;
    unsigned long n = 7;
    if (slot[0] && (rc = tw_endpoint_arg_uint(spec, slot[0], "n", 1, 1000, &n, failure)) < 0)
        return rc;
    bool flag = false;
    if (slot[1] && (rc = tw_endpoint_arg_flag(spec, slot[1], "a", &flag, failure)) < 0)
        return rc;
    unsigned long *value = tw_malloc(sizeof *value);
    if (value == NULL) {
        *failure = tw_failure_new(TW_ENOMEM, NULL, NULL);
        return TW_ENOMEM;
    }
    *value = n * 2 + flag;
    *typed = value;
    *release = tw_free;
    return 0;
}

static bool printable_line(const char *m)
{
    if (*m == '\0')
        return false;
    for (; *m; m++)
        if ((unsigned char)*m < 0x20 || (unsigned char)*m > 0x7e)
            return false;
    return true;
}

static bool same_str(const char *a, const char *b)
{
    return (a == NULL) == (b == NULL) && (a == NULL || strcmp(a, b) == 0);
}

static void check_typed(const tw_endpoint_spec *a, const tw_endpoint_spec *b)
{
    CHECK(tw_endpoint_spec_equal(a, b));
    const tw_endpoint_tcp_server *ts = tw_endpoint_spec_tcp_server(a);
    const tw_endpoint_tcp_client *tc = tw_endpoint_spec_tcp_client(a);
    const tw_endpoint_unix_server *us = tw_endpoint_spec_unix_server(a);
    const tw_endpoint_unix_client *uc = tw_endpoint_spec_unix_client(a);
    const tw_endpoint_systemd *sd = tw_endpoint_spec_systemd(a);
    if (ts) {
        const tw_endpoint_tcp_server *x = tw_endpoint_spec_tcp_server(b);
        CHECK(x && x->port == ts->port && x->backlog == ts->backlog && ts->port <= 65535);
        CHECK(same_str(x->interface, ts->interface));
    } else if (tc) {
        const tw_endpoint_tcp_client *x = tw_endpoint_spec_tcp_client(b);
        CHECK(x && x->port == tc->port && x->timeout == tc->timeout && tc->timeout > 0);
        CHECK(tc->port >= 1 && tc->port <= 65535);
        CHECK(same_str(x->host, tc->host) && same_str(x->bind_address, tc->bind_address));
    } else if (us) {
        const tw_endpoint_unix_server *x = tw_endpoint_spec_unix_server(b);
        CHECK(x && x->path_len == us->path_len && memcmp(x->path, us->path, us->path_len) == 0);
        CHECK(x->abstract == us->abstract && x->mode == us->mode && x->backlog == us->backlog);
        CHECK(x->lockfile == us->lockfile && us->mode <= 07777 && us->path_len <= 108);
    } else if (uc) {
        const tw_endpoint_unix_client *x = tw_endpoint_spec_unix_client(b);
        CHECK(x && x->path_len == uc->path_len && memcmp(x->path, uc->path, uc->path_len) == 0);
        CHECK(x->abstract == uc->abstract && x->timeout == uc->timeout);
        CHECK(x->check_pid == uc->check_pid);
    } else if (sd) {
        const tw_endpoint_systemd *x = tw_endpoint_spec_systemd(b);
        CHECK(x && x->domain == sd->domain && x->index == sd->index);
    } else if (a->kind == TW_ENDPOINT_HAPROXY) {
        CHECK(a->inner && b->inner && a->inner->kind != TW_ENDPOINT_HAPROXY);
        check_typed(a->inner, b->inner);
    } else {
        CHECK(a->kind == TW_ENDPOINT_REGISTERED);
        if (a->typed)
            CHECK(*(const unsigned long *)a->typed == *(const unsigned long *)b->typed);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool registered;
    if (!registered) {
        CHECK(tw_endpoint_register_type("reg", TW_ENDPOINT_SERVER | TW_ENDPOINT_CLIENT,
                                        validate_reg, NULL) == 0);
        registered = true;
    }
    if (size == 0)
        return 0;
    tw_endpoint_role role = (data[0] & 1) ? TW_ENDPOINT_CLIENT : TW_ENDPOINT_SERVER;
    bool failing = (data[0] & 2) != 0;
    const char *desc = (const char *)data + 1;
    size_t len = size - 1;

    tw_endpoint_spec *spec = NULL;
    tw_failure *f = NULL;
    if (failing)
        tw_testing_fail_alloc_after(data[0] >> 2);
    int rc = tw_endpoint_parse_bytes(role, desc, len, &spec, &f);
    tw_testing_fail_alloc_off();
    CHECK(rc == 0 || rc == TW_EINVAL || (failing && rc == TW_ENOMEM));
    if (rc != 0) {
        CHECK(spec == NULL && f != NULL && tw_failure_code(f) == rc);
        CHECK(printable_line(tw_failure_message(f)));
        tw_failure_unref(f);
    } else {
        CHECK(spec != NULL && f == NULL && spec->role == role);
    }

    if (!failing && memchr(desc, '\0', len) == NULL && len <= TW_ENDPOINT_MAX_LENGTH) {
        char *copy = malloc(len + 1);
        memcpy(copy, desc, len);
        copy[len] = '\0';
        tw_endpoint_spec *same = NULL;
        CHECK(tw_endpoint_parse(role, copy, &same, NULL) == rc);
        CHECK(rc != 0 || tw_endpoint_spec_equal(spec, same));
        tw_endpoint_spec_free(same);
        free(copy);
    }
    if (rc != 0)
        return 0;

    size_t flen = 0;
    char *formatted = tw_endpoint_format(spec, &flen);
    CHECK(formatted != NULL && formatted[flen] == '\0' && flen <= len);
    tw_endpoint_spec *again = NULL;
    tw_failure *f2 = NULL;
    CHECK(tw_endpoint_parse_bytes(role, formatted, flen, &again, &f2) == 0 && f2 == NULL);
    check_typed(spec, again);
    size_t flen2 = 0;
    char *formatted2 = tw_endpoint_format(again, &flen2);
    CHECK(formatted2 != NULL && flen2 == flen && memcmp(formatted, formatted2, flen) == 0);
    tw_free(formatted2);
    tw_free(formatted);
    tw_endpoint_spec_free(again);
    tw_endpoint_spec_free(spec);
    return 0;
}
