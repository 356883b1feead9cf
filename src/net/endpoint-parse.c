/* The endpoint description parser: tokenizing, the spec, the type registry,
 * formatting back, and the helpers validators share. The built-in types'
 * validators are in endpoint-types.c. */
#include "net/endpoint-internal.h"

#include <twine/alloc.h>
#include <twine/error.h>

#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* The spec and everything it owns but the typed value, in one allocation:
 * the struct, the argument array, then the unescaped text the arguments
 * point into. */
typedef struct spec_impl {
    tw_endpoint_spec pub;
    void *typed;
    tw_release_fn release;
    tw_endpoint_arg argv[];
} spec_impl;

static spec_impl *impl_of(const tw_endpoint_spec *spec)
{
    return (spec_impl *)((char *)spec - offsetof(spec_impl, pub));
}

int tw__endpoint_give(tw_failure **failure, tw_failure *f)
{
    int code = tw_failure_code(f);
    if (failure)
        *failure = f;
    else
        tw_failure_unref(f);
    return code;
}

#define GIVE(...) tw__endpoint_give(failure, tw_failure_new(TW_EINVAL, NULL, __VA_ARGS__))

/* ---- Quoting values for messages */

const char *tw_endpoint_quote(char *buf, size_t size, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    char tmp[TW_ENDPOINT_QUOTE_SIZE];
    size_t n = 0;
    size_t shown = len > 64 ? 64 : len;
    tmp[n++] = '\'';
    for (size_t i = 0; i < shown; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f) {
            tmp[n++] = (char)c;
        } else {
            tmp[n++] = '\\';
            tmp[n++] = 'x';
            tmp[n++] = hex[c >> 4];
            tmp[n++] = hex[c & 15];
        }
    }
    tmp[n++] = '\'';
    if (shown < len) {
        memcpy(tmp + n, "...", 3);
        n += 3;
    }
    tmp[n] = '\0';
    if (size > 0) {
        size_t copy = n < size - 1 ? n : size - 1;
        memcpy(buf, tmp, copy);
        buf[copy] = '\0';
    }
    return buf;
}

#define QUOTE(buf, s, len) tw_endpoint_quote((buf), sizeof(buf), (s), (len))

tw_failure *tw_endpoint_fail(const tw_endpoint_spec *spec, const char *fmt, ...)
{
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    return tw_failure_new(TW_EINVAL, NULL, "%s: %s", spec->type, text);
}

/* ---- The registry */

static tw__endpoint_type **registered; /* entries never move: specs point at their names */
static size_t nregistered, registered_cap;

static bool name_is(const char *name, const char *s, size_t len)
{
    size_t n = strlen(name);
    if (n != len)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c - 'A' + 'a');
        if (c != (unsigned char)name[i])
            return false;
    }
    return true;
}

static const tw__endpoint_type *type_at(size_t i)
{
    return i < tw__endpoint_builtin_count ? &tw__endpoint_builtin_types[i]
                                          : registered[i - tw__endpoint_builtin_count];
}

const tw__endpoint_type *tw__endpoint_lookup(const char *name, size_t len, tw_endpoint_role role,
                                             const tw__endpoint_type **other_role)
{
    *other_role = NULL;
    for (size_t i = 0; i < tw__endpoint_builtin_count + nregistered; i++) {
        const tw__endpoint_type *t = type_at(i);
        if (!name_is(t->name, name, len))
            continue;
        if (t->roles & (unsigned)role)
            return t;
        *other_role = t;
    }
    return NULL;
}

int tw_endpoint_register_type(const char *name, unsigned roles, tw_endpoint_validate_fn validate,
                              void *arg)
{
    const unsigned all = TW_ENDPOINT_SERVER | TW_ENDPOINT_CLIENT;
    if (name == NULL || validate == NULL || roles == 0 || (roles & ~all) != 0)
        return TW_EINVAL;
    size_t len = strlen(name);
    if (len == 0 || len > TW_ENDPOINT_MAX_TYPE)
        return TW_EINVAL;
    char lower[TW_ENDPOINT_MAX_TYPE + 1];
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        bool other = (c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.' || c == '_';
        if (!letter && (i == 0 || !other))
            return TW_EINVAL;
        lower[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    lower[len] = '\0';
    for (size_t i = 0; i < tw__endpoint_builtin_count + nregistered; i++) {
        const tw__endpoint_type *t = type_at(i);
        if (strcmp(t->name, lower) == 0 && (t->roles & roles))
            return TW_EEXIST;
    }
    if (nregistered == registered_cap) {
        size_t cap = registered_cap ? registered_cap * 2 : 8;
        tw__endpoint_type **grown = tw_realloc(registered, cap * sizeof *grown);
        if (grown == NULL)
            return TW_ENOMEM;
        registered = grown;
        registered_cap = cap;
    }
    tw__endpoint_type *t = tw_malloc(sizeof *t + len + 1);
    if (t == NULL)
        return TW_ENOMEM;
    char *stored = (char *)(t + 1);
    memcpy(stored, lower, len + 1);
    *t = (tw__endpoint_type){.name = stored,
                             .roles = roles,
                             .kind = TW_ENDPOINT_REGISTERED,
                             .validate = validate,
                             .arg = arg};
    registered[nregistered++] = t;
    return 0;
}

/* ---- Building a spec */

static const char *role_name(tw_endpoint_role role)
{
    return role == TW_ENDPOINT_SERVER ? "server" : "client";
}

static spec_impl *impl_new(tw_endpoint_role role, const tw__endpoint_type *t, size_t nargs,
                           size_t text)
{
    spec_impl *impl = tw_malloc(sizeof *impl + nargs * sizeof(tw_endpoint_arg) + text);
    if (impl == NULL)
        return NULL;
    impl->pub = (tw_endpoint_spec){
        .role = role, .kind = t->kind, .type = t->name, .nargs = nargs, .args = impl->argv};
    impl->typed = NULL;
    impl->release = NULL;
    return impl;
}

static char *impl_text(spec_impl *impl)
{
    return (char *)(impl->argv + impl->pub.nargs);
}

static bool same_bytes(const char *a, size_t alen, const char *b, size_t blen)
{
    return alen == blen && memcmp(a, b, alen) == 0;
}

/* An empty value followed by an empty positional field is what an unescaped
 * "::" (an IPv6 address) leaves behind. */
static bool looks_unescaped(const tw_endpoint_spec *spec)
{
    for (size_t i = 0; i + 1 < spec->nargs; i++)
        if (spec->args[i].value_len == 0 && spec->args[i + 1].key == NULL &&
            spec->args[i + 1].value_len == 0)
            return true;
    return false;
}

static tw_failure *add_escape_hint(tw_failure *f)
{
    tw_failure *hinted =
        tw_failure_new(TW_EINVAL, NULL, "%s (a ':' inside a value is written '\\:', as in %s)",
                       tw_failure_message(f), "\\:\\:1");
    tw_failure_unref(f);
    return hinted;
}

/* Refuses duplicate keywords, runs the type's validator, and hands the spec
 * over (or frees it). */
static int finish(spec_impl *impl, const tw__endpoint_type *t, tw_endpoint_spec **out,
                  tw_failure **failure)
{
    tw_endpoint_spec *spec = &impl->pub;
    for (size_t i = 0; i < spec->nargs; i++) {
        const tw_endpoint_arg *a = &spec->args[i];
        if (a->key == NULL)
            continue;
        for (size_t j = i + 1; j < spec->nargs; j++) {
            const tw_endpoint_arg *b = &spec->args[j];
            if (b->key && same_bytes(a->key, a->key_len, b->key, b->key_len)) {
                char q[TW_ENDPOINT_QUOTE_SIZE];
                int code =
                    tw__endpoint_give(failure, tw_endpoint_fail(spec, "option %s given twice",
                                                                QUOTE(q, a->key, a->key_len)));
                tw_free(impl);
                return code;
            }
        }
    }
    void *typed = NULL;
    tw_release_fn release = NULL;
    tw_failure *f = NULL;
    int rc = t->validate(spec, t->arg, &typed, &release, &f);
    if (rc < 0) {
        if (f == NULL)
            f = tw_failure_new(rc, NULL, "%s: invalid description (%s)", spec->type,
                               tw_strerror(rc));
        else if (tw_failure_code(f) == TW_EINVAL && spec->kind != TW_ENDPOINT_HAPROXY &&
                 looks_unescaped(spec)) /* haproxy's inner spec has had its say */
            f = add_escape_hint(f);
        tw_free(impl);
        return tw__endpoint_give(failure, f);
    }
    if (f != NULL) /* a validator that succeeded yet made a failure */
        tw_failure_unref(f);
    impl->typed = typed;
    impl->release = release;
    spec->typed = typed;
    if (spec->kind == TW_ENDPOINT_HAPROXY)
        spec->inner = typed;
    *out = spec;
    return 0;
}

int tw__endpoint_parse_args(tw_endpoint_role role, const tw_endpoint_arg *args, size_t nargs,
                            tw_endpoint_spec **out, tw_failure **failure)
{
    char q[TW_ENDPOINT_QUOTE_SIZE];
    *out = NULL;
    if (nargs == 0 || args[0].key != NULL || args[0].value_len == 0)
        return GIVE("missing endpoint type");
    const tw__endpoint_type *other;
    const tw__endpoint_type *t =
        tw__endpoint_lookup(args[0].value, args[0].value_len, role, &other);
    if (t == NULL) {
        if (other)
            return GIVE("%s: not a %s endpoint type", other->name, role_name(role));
        return GIVE("unknown endpoint type %s", QUOTE(q, args[0].value, args[0].value_len));
    }
    size_t text = 0;
    for (size_t i = 1; i < nargs; i++)
        text += (args[i].key ? args[i].key_len + 1 : 0) + args[i].value_len + 1;
    spec_impl *impl = impl_new(role, t, nargs - 1, text);
    if (impl == NULL)
        return tw__endpoint_give(failure, tw_failure_new(TW_ENOMEM, NULL, NULL));
    char *p = impl_text(impl);
    for (size_t i = 1; i < nargs; i++) {
        tw_endpoint_arg *a = &impl->argv[i - 1];
        *a = (tw_endpoint_arg){0};
        if (args[i].key) {
            memcpy(p, args[i].key, args[i].key_len);
            p[args[i].key_len] = '\0';
            a->key = p;
            a->key_len = args[i].key_len;
            p += args[i].key_len + 1;
        }
        memcpy(p, args[i].value, args[i].value_len);
        p[args[i].value_len] = '\0';
        a->value = p;
        a->value_len = args[i].value_len;
        p += args[i].value_len + 1;
    }
    return finish(impl, t, out, failure);
}

/* ---- Tokenizing (Twisted's _tokenize): a field ends at an unescaped ':',
 * its key at the first unescaped '='. */

typedef struct raw_field {
    const char *start, *eq, *end; /* eq: the first unescaped '=', or NULL */
} raw_field;

/* Scans one field from p; returns false on a trailing lone backslash (the
 * field then ends at `end`). Sets every member of *f either way. */
static bool scan_field(const char *p, const char *end, raw_field *f)
{
    f->start = p;
    f->eq = NULL;
    while (p < end && *p != ':') {
        if (*p == '\\') {
            if (p + 1 == end) {
                f->end = end;
                return false;
            }
            p += 2;
            continue;
        }
        if (*p == '=' && f->eq == NULL)
            f->eq = p;
        p++;
    }
    f->end = p;
    return true;
}

/* Copies [s, e) into dst without its escapes; returns the bytes written. The
 * range was scanned, so a backslash is never its last byte. */
static size_t unescape(char *dst, const char *s, const char *e)
{
    size_t n = 0;
    while (s < e) {
        if (*s == '\\')
            s++;
        dst[n++] = *s++;
    }
    return n;
}

/* Like unescape, but writes at most `cap` bytes and returns the full length. */
static size_t unescape_prefix(char *dst, size_t cap, const char *s, const char *e)
{
    size_t n = 0;
    while (s < e) {
        if (*s == '\\')
            s++;
        if (n < cap)
            dst[n] = *s;
        n++;
        s++;
    }
    return n;
}

int tw_endpoint_parse_bytes(tw_endpoint_role role, const char *description, size_t len,
                            tw_endpoint_spec **out, tw_failure **failure)
{
    char q[TW_ENDPOINT_QUOTE_SIZE];
    if (failure)
        *failure = NULL;
    if (out == NULL)
        return TW_EINVAL;
    *out = NULL;
    if (role != TW_ENDPOINT_SERVER && role != TW_ENDPOINT_CLIENT)
        return GIVE("endpoint role %d is neither server nor client", (int)role);
    if (description == NULL)
        return GIVE("missing endpoint description (NULL)");
    if (len == 0)
        return GIVE("empty endpoint description");
    if (len > TW_ENDPOINT_MAX_LENGTH)
        return GIVE("endpoint description too long (more than %d bytes)", TW_ENDPOINT_MAX_LENGTH);

    /* First pass: check escapes, count fields. */
    const char *end = description + len;
    size_t nfields = 0;
    raw_field first = {0};
    for (const char *p = description;; p++) {
        raw_field f;
        if (!scan_field(p, end, &f))
            return GIVE("unterminated escape at the end of the endpoint description");
        if (++nfields > TW_ENDPOINT_MAX_FIELDS)
            return GIVE("too many fields in the endpoint description (at most %d)",
                        TW_ENDPOINT_MAX_FIELDS);
        if (nfields == 1)
            first = f;
        p = f.end;
        if (p == end)
            break;
    }

    /* The type: the first field, positional. */
    char name[80];
    if (first.eq != NULL) {
        size_t n = unescape_prefix(name, sizeof name, first.start, first.eq);
        return GIVE("missing endpoint type (the first field is the option %s)",
                    QUOTE(q, name, n < sizeof name ? n : sizeof name));
    }
    size_t name_len = unescape_prefix(name, sizeof name, first.start, first.end);
    if (name_len == 0)
        return GIVE("missing endpoint type (the description starts with ':')");
    size_t shown = name_len < sizeof name ? name_len : sizeof name;
    if (name_len > TW_ENDPOINT_MAX_TYPE)
        return GIVE("unknown endpoint type %s", QUOTE(q, name, shown));
    const tw__endpoint_type *other;
    const tw__endpoint_type *t = tw__endpoint_lookup(name, name_len, role, &other);
    if (t == NULL) {
        if (other)
            return GIVE("%s: not a %s endpoint type", other->name, role_name(role));
        return GIVE("unknown endpoint type %s", QUOTE(q, name, shown));
    }

    /* Second pass: unescape the arguments into the spec. Each key and value
     * gets a NUL, and unescaping only shrinks. */
    size_t nargs = nfields - 1;
    spec_impl *impl = impl_new(role, t, nargs, len + 2 * nargs);
    if (impl == NULL)
        return tw__endpoint_give(failure, tw_failure_new(TW_ENOMEM, NULL, NULL));
    char *text = impl_text(impl);
    const char *p = first.end + (first.end < end); /* past the ':' */
    for (size_t i = 0; i < nargs; i++) {
        raw_field f;
        scan_field(p, end, &f);
        tw_endpoint_arg *a = &impl->argv[i];
        *a = (tw_endpoint_arg){0};
        const char *vstart = f.start;
        if (f.eq != NULL) {
            a->key = text;
            a->key_len = unescape(text, f.start, f.eq);
            text[a->key_len] = '\0';
            text += a->key_len + 1;
            vstart = f.eq + 1;
        }
        a->value = text;
        a->value_len = unescape(text, vstart, f.end);
        text[a->value_len] = '\0';
        text += a->value_len + 1;
        p = f.end + 1;
    }
    return finish(impl, t, out, failure);
}

int tw_endpoint_parse(tw_endpoint_role role, const char *description, tw_endpoint_spec **out,
                      tw_failure **failure)
{
    size_t len = description ? strnlen(description, TW_ENDPOINT_MAX_LENGTH + 1) : 0;
    return tw_endpoint_parse_bytes(role, description, len, out, failure);
}

void tw_endpoint_spec_free(tw_endpoint_spec *spec)
{
    if (spec == NULL)
        return;
    spec_impl *impl = impl_of(spec);
    if (impl->release)
        impl->release(impl->typed);
    tw_free(impl);
}

/* ---- Formatting back */

/* Writes s escaped into dst (when not NULL); returns the length. Keys and
 * positional values escape ':' '=' '\'; keyword values need no '=' escaped. */
static size_t escape(char *dst, const char *s, size_t len, bool keyword_value)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == ':' || c == '\\' || (c == '=' && !keyword_value)) {
            if (dst)
                dst[n] = '\\';
            n++;
        }
        if (dst)
            dst[n] = c;
        n++;
    }
    return n;
}

static size_t format_into(char *dst, const tw_endpoint_spec *spec)
{
    size_t n = strlen(spec->type);
    if (dst)
        memcpy(dst, spec->type, n);
    for (size_t i = 0; i < spec->nargs; i++) {
        const tw_endpoint_arg *a = &spec->args[i];
        if (dst)
            dst[n] = ':';
        n++;
        if (a->key) {
            n += escape(dst ? dst + n : NULL, a->key, a->key_len, false);
            if (dst)
                dst[n] = '=';
            n++;
        }
        n += escape(dst ? dst + n : NULL, a->value, a->value_len, a->key != NULL);
    }
    return n;
}

char *tw_endpoint_format(const tw_endpoint_spec *spec, size_t *len)
{
    if (spec == NULL)
        return NULL;
    size_t n = format_into(NULL, spec);
    char *s = tw_malloc(n + 1);
    if (s == NULL)
        return NULL;
    format_into(s, spec);
    s[n] = '\0';
    if (len)
        *len = n;
    return s;
}

bool tw_endpoint_spec_equal(const tw_endpoint_spec *a, const tw_endpoint_spec *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    if (a->role != b->role || a->kind != b->kind || strcmp(a->type, b->type) != 0 ||
        a->nargs != b->nargs)
        return false;
    for (size_t i = 0; i < a->nargs; i++) {
        const tw_endpoint_arg *x = &a->args[i], *y = &b->args[i];
        if ((x->key == NULL) != (y->key == NULL))
            return false;
        if (x->key && !same_bytes(x->key, x->key_len, y->key, y->key_len))
            return false;
        if (!same_bytes(x->value, x->value_len, y->value, y->value_len))
            return false;
    }
    return tw_endpoint_spec_equal(a->inner, b->inner);
}

const tw_endpoint_arg *tw_endpoint_spec_get(const tw_endpoint_spec *spec, const char *key)
{
    const tw_endpoint_arg *found = NULL;
    size_t len = strlen(key);
    for (size_t i = 0; i < spec->nargs; i++) {
        const tw_endpoint_arg *a = &spec->args[i];
        if (a->key && same_bytes(a->key, a->key_len, key, len))
            found = a;
    }
    return found;
}

/* ---- Helpers for validators */

int tw_endpoint_bind_args(const tw_endpoint_spec *spec, const char *const *params, size_t nparams,
                          size_t npositional, const tw_endpoint_arg **slots, tw_failure **failure)
{
    char q[TW_ENDPOINT_QUOTE_SIZE];
    if (npositional > nparams)
        npositional = nparams;
    for (size_t i = 0; i < nparams; i++)
        slots[i] = NULL;
    size_t pos = 0;
    for (size_t i = 0; i < spec->nargs; i++) {
        if (spec->args[i].key != NULL)
            continue;
        if (pos == npositional)
            return tw__endpoint_give(
                failure,
                tw_endpoint_fail(spec, "too many positional arguments (at most %zu)", npositional));
        slots[pos++] = &spec->args[i];
    }
    for (size_t i = 0; i < spec->nargs; i++) {
        const tw_endpoint_arg *a = &spec->args[i];
        if (a->key == NULL)
            continue;
        size_t j = 0;
        while (j < nparams && !same_bytes(params[j], strlen(params[j]), a->key, a->key_len))
            j++;
        if (j == nparams)
            return tw__endpoint_give(
                failure, tw_endpoint_fail(spec, "unknown option %s", QUOTE(q, a->key, a->key_len)));
        if (slots[j] != NULL)
            return tw__endpoint_give(failure, tw_endpoint_fail(spec, "option %s given twice",
                                                               QUOTE(q, a->key, a->key_len)));
        slots[j] = a;
    }
    return 0;
}

int tw_endpoint_arg_uint(const tw_endpoint_spec *spec, const tw_endpoint_arg *arg, const char *what,
                         unsigned long min, unsigned long max, unsigned long *out,
                         tw_failure **failure)
{
    char q[TW_ENDPOINT_QUOTE_SIZE];
    const char *s = arg->value;
    size_t len = arg->value_len;
    if (len == 0)
        return tw__endpoint_give(failure, tw_endpoint_fail(spec, "%s '' is not a number", what));
    unsigned long v = 0;
    bool over = false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return tw__endpoint_give(
                failure, tw_endpoint_fail(spec, "%s %s is not a number", what, QUOTE(q, s, len)));
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (ULONG_MAX - d) / 10)
            over = true;
        else
            v = v * 10 + d;
    }
    if (over || v < min || v > max) {
        /* Digits only, so printable: shown bare, as numbers are. */
        return tw__endpoint_give(failure, tw_endpoint_fail(spec, "%s %.*s%s out of range (%lu-%lu)",
                                                           what, len > 24 ? 24 : (int)len, s,
                                                           len > 24 ? "..." : "", min, max));
    }
    *out = v;
    return 0;
}

int tw_endpoint_arg_flag(const tw_endpoint_spec *spec, const tw_endpoint_arg *arg, const char *what,
                         bool *out, tw_failure **failure)
{
    char q[TW_ENDPOINT_QUOTE_SIZE];
    if (arg->value_len == 1 && (arg->value[0] == '0' || arg->value[0] == '1')) {
        *out = arg->value[0] == '1';
        return 0;
    }
    return tw__endpoint_give(failure, tw_endpoint_fail(spec, "%s %s is not 0 or 1", what,
                                                       QUOTE(q, arg->value, arg->value_len)));
}
