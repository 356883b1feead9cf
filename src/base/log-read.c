/* Reading JSON log lines back (log.h: tw_log_read_json).
 *
 * A small recursive-descent JSON parser over caller-owned bytes, bounded in
 * depth, that keeps only what an event needs. Decoded strings go into one
 * arena allocated up front: a JSON string never decodes to more bytes than
 * it takes in the line (an escape is at least as long as what it stands for,
 * and the two quotes pay for the terminating NUL), so len + 1 bytes are
 * always enough and decoding cannot fail for lack of room. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <twine/alloc.h>
#include <twine/error.h>
#include <twine/failure.h>
#include <twine/log.h>

#define MAX_DEPTH    32
#define MAX_FAILURES 64 /* a failure and its causes, at most */

struct parser {
    const char *s;
    size_t len, pos;
    char *arena; /* where decoded strings go */
    size_t used;
    int depth;
    const char *error; /* what is wrong, at pos */
};

/* One failure of the chain as read; made into tw_failures at the end. */
struct failure_in {
    long code;
    const char *message;
    const char *where;
};

static bool fail(struct parser *p, const char *why)
{
    if (!p->error)
        p->error = why;
    return false;
}

static void skip_ws(struct parser *p)
{
    while (p->pos < p->len && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' ||
                               p->s[p->pos] == '\n' || p->s[p->pos] == '\r'))
        p->pos++;
}

static bool expect(struct parser *p, char c)
{
    skip_ws(p);
    if (p->pos >= p->len || p->s[p->pos] != c) {
        static const char *const msgs[] = {"expected '{'", "expected '}'", "expected ':'",
                                           "expected '\"'", "expected ']'"};
        const char *m = c == '{'   ? msgs[0]
                        : c == '}' ? msgs[1]
                        : c == ':' ? msgs[2]
                        : c == '"' ? msgs[3]
                                   : msgs[4];
        return fail(p, m);
    }
    p->pos++;
    return true;
}

static int hex4(const char *s)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

static char *put_utf8(char *out, uint32_t cp)
{
    if (cp < 0x80) {
        *out++ = (char)cp;
    } else if (cp < 0x800) {
        *out++ = (char)(0xc0 | (cp >> 6));
        *out++ = (char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        *out++ = (char)(0xe0 | (cp >> 12));
        *out++ = (char)(0x80 | ((cp >> 6) & 0x3f));
        *out++ = (char)(0x80 | (cp & 0x3f));
    } else {
        *out++ = (char)(0xf0 | (cp >> 18));
        *out++ = (char)(0x80 | ((cp >> 12) & 0x3f));
        *out++ = (char)(0x80 | ((cp >> 6) & 0x3f));
        *out++ = (char)(0x80 | (cp & 0x3f));
    }
    return out;
}

/* Parses a string; *out (when not NULL) gets its decoded, NUL-terminated
 * copy in the arena. */
static bool parse_string(struct parser *p, const char **out)
{
    if (!expect(p, '"'))
        return false;
    char *start = p->arena + p->used, *w = start;
    for (;;) {
        if (p->pos >= p->len)
            return fail(p, "unterminated string");
        unsigned char c = (unsigned char)p->s[p->pos];
        if (c == '"') {
            p->pos++;
            break;
        }
        if (c < 0x20)
            return fail(p, "control character in a string");
        if (c != '\\') {
            *w++ = (char)c;
            p->pos++;
            continue;
        }
        if (p->pos + 1 >= p->len)
            return fail(p, "unterminated string");
        char e = p->s[p->pos + 1];
        p->pos += 2;
        switch (e) {
        case '"':
        case '\\':
        case '/':
            *w++ = e;
            break;
        case 'b':
            *w++ = '\b';
            break;
        case 'f':
            *w++ = '\f';
            break;
        case 'n':
            *w++ = '\n';
            break;
        case 'r':
            *w++ = '\r';
            break;
        case 't':
            *w++ = '\t';
            break;
        case 'u': {
            int hi = p->pos + 4 <= p->len ? hex4(p->s + p->pos) : -1;
            if (hi < 0)
                return fail(p, "bad \\u escape");
            p->pos += 4;
            uint32_t cp = (uint32_t)hi;
            if (hi >= 0xd800 && hi <= 0xdbff) {
                int lo = p->pos + 6 <= p->len && p->s[p->pos] == '\\' && p->s[p->pos + 1] == 'u'
                             ? hex4(p->s + p->pos + 2)
                             : -1;
                if (lo < 0xdc00 || lo > 0xdfff)
                    return fail(p, "unpaired surrogate in a \\u escape");
                p->pos += 6;
                cp = 0x10000 + (((uint32_t)hi - 0xd800) << 10) + ((uint32_t)lo - 0xdc00);
            } else if (hi >= 0xdc00 && hi <= 0xdfff) {
                return fail(p, "unpaired surrogate in a \\u escape");
            }
            if (cp == 0)
                return fail(p, "NUL character in a string");
            w = put_utf8(w, cp);
            break;
        }
        default:
            return fail(p, "bad escape in a string");
        }
    }
    *w++ = '\0';
    p->used = (size_t)(w - p->arena);
    if (out)
        *out = start;
    else
        p->used = (size_t)(start - p->arena); /* skipped: give the room back */
    return true;
}

/* A JSON number, strictly by the grammar; *out gets its value. */
static bool parse_number(struct parser *p, double *out)
{
    size_t start = p->pos;
    const char *s = p->s;
    size_t i = p->pos;
    if (i < p->len && s[i] == '-')
        i++;
    if (i < p->len && s[i] == '0') {
        i++;
    } else if (i < p->len && s[i] >= '1' && s[i] <= '9') {
        while (i < p->len && s[i] >= '0' && s[i] <= '9')
            i++;
    } else {
        return fail(p, "bad number");
    }
    if (i < p->len && s[i] == '.') {
        i++;
        if (i >= p->len || s[i] < '0' || s[i] > '9')
            return fail(p, "bad number");
        while (i < p->len && s[i] >= '0' && s[i] <= '9')
            i++;
    }
    if (i < p->len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < p->len && (s[i] == '+' || s[i] == '-'))
            i++;
        if (i >= p->len || s[i] < '0' || s[i] > '9')
            return fail(p, "bad number");
        while (i < p->len && s[i] >= '0' && s[i] <= '9')
            i++;
    }
    char buf[512]; /* room for any double as %f prints it */
    if (i - start >= sizeof buf)
        return fail(p, "number too long");
    memcpy(buf, s + start, i - start);
    buf[i - start] = '\0';
    p->pos = i;
    if (out)
        *out = strtod(buf, NULL);
    return true;
}

static bool parse_literal(struct parser *p, const char *word)
{
    size_t n = strlen(word);
    if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n) != 0)
        return fail(p, "unexpected character");
    p->pos += n;
    return true;
}

static bool skip_value(struct parser *p);

static bool enter(struct parser *p)
{
    if (++p->depth > MAX_DEPTH)
        return fail(p, "nested too deeply");
    return true;
}

/* Calls member(p, key, arg) for each member of an object; member parses the
 * value (or skips it). */
typedef bool (*member_fn)(struct parser *p, const char *key, void *arg);

static bool parse_object(struct parser *p, member_fn member, void *arg)
{
    if (!expect(p, '{') || !enter(p))
        return false;
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == '}') {
        p->pos++;
        p->depth--;
        return true;
    }
    for (;;) {
        const char *key;
        if (!parse_string(p, &key) || !expect(p, ':'))
            return false;
        skip_ws(p);
        if (!member(p, key, arg))
            return false;
        skip_ws(p);
        if (p->pos < p->len && p->s[p->pos] == ',') {
            p->pos++;
            continue;
        }
        if (!expect(p, '}'))
            return false;
        p->depth--;
        return true;
    }
}

/* Calls element(p, index, arg) for each element of an array. */
typedef bool (*element_fn)(struct parser *p, size_t index, void *arg);

static bool parse_array(struct parser *p, element_fn element, void *arg)
{
    if (!expect(p, '[') || !enter(p))
        return false;
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == ']') {
        p->pos++;
        p->depth--;
        return true;
    }
    for (size_t i = 0;; i++) {
        skip_ws(p);
        if (!element(p, i, arg))
            return false;
        skip_ws(p);
        if (p->pos < p->len && p->s[p->pos] == ',') {
            p->pos++;
            continue;
        }
        if (!expect(p, ']'))
            return false;
        p->depth--;
        return true;
    }
}

static bool skip_member(struct parser *p, const char *key, void *arg)
{
    return skip_value(p);
}

static bool skip_element(struct parser *p, size_t index, void *arg)
{
    return skip_value(p);
}

static bool skip_value(struct parser *p)
{
    skip_ws(p);
    if (p->pos >= p->len)
        return fail(p, "expected a value");
    switch (p->s[p->pos]) {
    case '{':
        return parse_object(p, skip_member, NULL);
    case '[':
        return parse_array(p, skip_element, NULL);
    case '"':
        return parse_string(p, NULL);
    case 't':
        return parse_literal(p, "true");
    case 'f':
        return parse_literal(p, "false");
    case 'n':
        return parse_literal(p, "null");
    default:
        return parse_number(p, NULL);
    }
}

/* ---- The event's members */

struct event_in {
    double time;
    bool has_level, has_ns, has_message;
    tw_log_level level;
    const char *ns, *message, *file;
    long line;
    struct failure_in failures[MAX_FAILURES];
    size_t nfailures;
};

static bool integer(struct parser *p, long min, long max, long *out)
{
    double v;
    if (!parse_number(p, &v))
        return false;
    if (!(v >= (double)min && v <= (double)max) || v != floor(v))
        return fail(p, "number out of range");
    *out = (long)v;
    return true;
}

static bool failure_member(struct parser *p, const char *key, void *arg)
{
    struct failure_in *f = arg;
    if (strcmp(key, "code") == 0)
        return integer(p, INT32_MIN, INT32_MAX, &f->code);
    if (strcmp(key, "message") == 0)
        return parse_string(p, &f->message);
    if (strcmp(key, "where") == 0)
        return parse_string(p, &f->where);
    return skip_value(p); /* "name" follows from the code; "backtrace" is not kept */
}

static bool parse_failure(struct parser *p, struct event_in *ev)
{
    if (ev->nfailures == MAX_FAILURES)
        return fail(p, "too many causes");
    struct failure_in *f = &ev->failures[ev->nfailures++];
    *f = (struct failure_in){.code = TW_EUSER};
    return parse_object(p, failure_member, f);
}

static bool cause_element(struct parser *p, size_t index, void *arg)
{
    struct event_in *ev = arg;
    if (ev->nfailures == 0)
        return fail(p, "\"causes\" before \"failure\"");
    return parse_failure(p, ev);
}

static bool event_member(struct parser *p, const char *key, void *arg)
{
    struct event_in *ev = arg;
    if (strcmp(key, "time") == 0)
        return parse_number(p, &ev->time);
    if (strcmp(key, "level") == 0) {
        const char *name;
        if (!parse_string(p, &name))
            return false;
        if (tw_log_level_parse(name, &ev->level) < 0)
            return fail(p, "unknown level");
        ev->has_level = true;
        return true;
    }
    if (strcmp(key, "namespace") == 0) {
        ev->has_ns = true;
        return parse_string(p, &ev->ns);
    }
    if (strcmp(key, "message") == 0) {
        ev->has_message = true;
        return parse_string(p, &ev->message);
    }
    if (strcmp(key, "file") == 0)
        return parse_string(p, &ev->file);
    if (strcmp(key, "line") == 0)
        return integer(p, INT32_MIN, INT32_MAX, &ev->line);
    if (strcmp(key, "failure") == 0) {
        if (ev->nfailures > 0)
            return fail(p, "\"failure\" given twice");
        return parse_failure(p, ev);
    }
    if (strcmp(key, "causes") == 0)
        return parse_array(p, cause_element, ev);
    return skip_value(p);
}

/* "file:line in func" back into its parts; what does not fit that shape is
 * kept whole as the file. The string is the arena's: it is cut in place. */
static void split_where(char *where, const char **file, int *line, const char **func)
{
    *file = where;
    *line = 0;
    *func = NULL;
    if (!where)
        return;
    char *in = strstr(where, " in ");
    if (!in)
        return;
    for (char *next; (next = strstr(in + 1, " in ")) != NULL;)
        in = next; /* the last one: a file name may hold " in " */
    char *colon = NULL;
    for (char *c = where; c < in; c++)
        if (*c == ':')
            colon = c;
    if (!colon || colon + 1 == in)
        return;
    long n = 0;
    for (char *d = colon + 1; d < in; d++) {
        if (*d < '0' || *d > '9' || n > 100000000)
            return;
        n = n * 10 + (*d - '0');
    }
    *colon = '\0';
    *in = '\0';
    *line = (int)n;
    *func = in + 4;
}

int tw_log_read_json(const char *line, size_t len, tw_log_record **out, tw_failure **failure)
{
    if (failure)
        *failure = NULL;
    if (!out)
        return TW_EINVAL;
    *out = NULL;
    if (!line && len > 0)
        return TW_EINVAL;
    tw_log_record *rec = tw_calloc(1, sizeof *rec);
    char *arena = rec ? tw_malloc(len + 1) : NULL;
    struct event_in *ev = arena ? tw_calloc(1, sizeof *ev) : NULL;
    if (!ev) {
        tw_free(arena);
        tw_free(rec);
        if (failure)
            *failure = tw_failure_new(TW_ENOMEM, NULL, NULL);
        return TW_ENOMEM;
    }
    struct parser p = {.s = line, .len = len, .arena = arena};
    bool ok = parse_object(&p, event_member, ev);
    if (ok) {
        skip_ws(&p);
        if (p.pos != p.len)
            ok = fail(&p, "text after the object");
    }
    if (ok && (!ev->has_level || !ev->has_ns || !ev->has_message))
        ok = fail(&p, !ev->has_level ? "no \"level\""
                      : !ev->has_ns  ? "no \"namespace\""
                                     : "no \"message\"");
    int rc = 0;
    if (!ok) {
        rc = TW_EINVAL;
        if (failure)
            *failure = tw_failure_new(TW_EINVAL, NULL, "byte %zu: %s", p.pos, p.error);
        goto fail;
    }
    /* The chain is built from its end: each failure takes its cause. */
    tw_failure *chain = NULL;
    for (size_t i = ev->nfailures; i-- > 0;) {
        const struct failure_in *f = &ev->failures[i];
        const char *file, *func;
        int fline;
        split_where((char *)f->where, &file, &fline, &func);
        chain = tw_failure_new_at((int)f->code, chain, file, fline, func, "%s",
                                  f->message ? f->message : "");
        if (tw_failure_code(chain) == TW_ENOMEM && chain && f->code != TW_ENOMEM) {
            /* The static out-of-memory failure stands in: the chain is lost. */
            tw_failure_unref(chain);
            rc = TW_ENOMEM;
            if (failure)
                *failure = tw_failure_new(TW_ENOMEM, NULL, NULL);
            goto fail;
        }
    }
    rec->failure = chain;
    rec->strings = arena;
    rec->event = (tw_log_event){
        .level = ev->level,
        .ns = ev->ns,
        .message = ev->message,
        .failure = chain,
        .time = ev->time,
        .file = ev->file,
        .line = (int)ev->line,
        .func = NULL,
    };
    tw_free(ev);
    *out = rec;
    return 0;

fail:
    tw_free(ev);
    tw_free(arena);
    tw_free(rec);
    return rc;
}

void tw_log_record_free(tw_log_record *rec)
{
    if (!rec)
        return;
    tw_failure_unref(rec->failure);
    tw_free(rec->strings);
    tw_free(rec);
}

long tw_log_read_json_file(FILE *f, tw_log_observer_fn fn, void *arg, size_t *skipped)
{
    if (skipped)
        *skipped = 0;
    if (!f || !fn)
        return TW_EINVAL;
    size_t cap = 4096, len = 0;
    char *buf = tw_malloc(cap);
    if (!buf)
        return TW_ENOMEM;
    long delivered = 0;
    for (;;) {
        int c = getc(f);
        if (c != EOF && c != '\n') {
            if (len + 1 == cap) {
                char *grown = tw_realloc(buf, cap * 2);
                if (!grown) {
                    tw_free(buf);
                    return TW_ENOMEM;
                }
                buf = grown;
                cap *= 2;
            }
            buf[len++] = (char)c;
            continue;
        }
        if (len > 0) {
            tw_log_record *rec;
            int rc = tw_log_read_json(buf, len, &rec, NULL);
            if (rc == TW_ENOMEM) {
                tw_free(buf);
                return rc;
            }
            if (rc == 0) {
                fn(&rec->event, arg);
                tw_log_record_free(rec);
                delivered++;
            } else if (skipped) {
                (*skipped)++;
            }
        }
        len = 0;
        if (c == EOF)
            break;
    }
    tw_free(buf);
    if (ferror(f))
        return -EIO;
    return delivered;
}
