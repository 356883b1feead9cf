/* The plugin registry and GNU-style option parsing for plugins (plugin.h).
 *
 * The registry is the built-in table followed by the plugins registered at
 * startup; there are a handful of each, so lookups scan and the name order
 * is computed on demand, without allocating. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <twine/alloc.h>
#include <twine/endpoint.h>
#include <twine/error.h>
#include <twine/plugin.h>

#include "app/app-internal.h"

/* ---- Registry */

static const tw_plugin **registered;
static size_t nregistered, registered_cap;

static const tw_plugin *plugin_by_index(size_t i)
{
    return i < tw__builtin_plugin_count ? tw__builtin_plugins[i]
                                        : registered[i - tw__builtin_plugin_count];
}

size_t tw_plugin_count(void)
{
    return tw__builtin_plugin_count + nregistered;
}

const tw_plugin *tw_plugin_find(const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < tw_plugin_count(); i++)
        if (strcmp(plugin_by_index(i)->name, name) == 0)
            return plugin_by_index(i);
    return NULL;
}

int tw_plugin_register(const tw_plugin *plugin)
{
    if (!plugin || !plugin->name || !plugin->name[0] || !plugin->make_service)
        return TW_EINVAL;
    if (tw_plugin_find(plugin->name))
        return TW_EEXIST;
    if (nregistered == registered_cap) {
        size_t cap = registered_cap ? registered_cap * 2 : 8;
        const tw_plugin **grown = tw_realloc(registered, cap * sizeof *grown);
        if (!grown)
            return TW_ENOMEM;
        registered = grown;
        registered_cap = cap;
    }
    registered[nregistered++] = plugin;
    return 0;
}

/* Name order, ties (which registration refuses) by position. */
static bool before(size_t a, size_t b)
{
    int c = strcmp(plugin_by_index(a)->name, plugin_by_index(b)->name);
    return c < 0 || (c == 0 && a < b);
}

const tw_plugin *tw_plugin_at(size_t i)
{
    size_t n = tw_plugin_count();
    for (size_t cand = 0; cand < n; cand++) {
        size_t rank = 0;
        for (size_t other = 0; other < n; other++)
            if (before(other, cand))
                rank++;
        if (rank == i)
            return plugin_by_index(cand);
    }
    return NULL;
}

/* ---- Arguments */

struct value {
    const tw_plugin_option *opt;
    const char *value; /* NULL for a flag */
};

struct tw_plugin_args {
    const tw_plugin *plugin;
    struct value *v;
    size_t n, cap;
};

static const tw_plugin_option *option_named(const tw_plugin *p, const char *name, size_t len)
{
    for (const tw_plugin_option *o = p->options; o && o->name; o++)
        if (strlen(o->name) == len && memcmp(o->name, name, len) == 0)
            return o;
    return NULL;
}

static const tw_plugin_option *option_short(const tw_plugin *p, char c)
{
    for (const tw_plugin_option *o = p->options; o && o->name; o++)
        if (o->short_name && o->short_name == c)
            return o;
    return NULL;
}

static int record(tw_plugin_args *a, const tw_plugin_option *opt, const char *value)
{
    if (!opt->repeatable) {
        for (size_t i = 0; i < a->n; i++) {
            if (a->v[i].opt == opt) {
                a->v[i].value = value; /* the last one wins, as Twisted's */
                return 0;
            }
        }
    }
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 8;
        struct value *grown = tw_realloc(a->v, cap * sizeof *grown);
        if (!grown)
            return TW_ENOMEM;
        a->v = grown;
        a->cap = cap;
    }
    a->v[a->n++] = (struct value){opt, value};
    return 0;
}

static int bad(tw_failure **failure, int code, const char *fmt, const char *word, int len)
{
    if (failure) {
        if (code == TW_ENOMEM)
            *failure = tw_failure_new(TW_ENOMEM, NULL, NULL);
        else
            *failure = tw_failure_new(code, NULL, fmt, len, word);
    }
    return code;
}

int tw_plugin_args_parse(const tw_plugin *plugin, int argc, char *const *argv, tw_plugin_args **out,
                         tw_failure **failure)
{
    if (failure)
        *failure = NULL;
    if (!out)
        return TW_EINVAL;
    *out = NULL;
    if (!plugin || argc < 0 || (argc > 0 && !argv))
        return TW_EINVAL;
    tw_plugin_args *a = tw_calloc(1, sizeof *a);
    if (!a)
        return bad(failure, TW_ENOMEM, NULL, NULL, 0);
    a->plugin = plugin;
    int rc = 0;
    for (int i = 0; i < argc && rc == 0; i++) {
        const char *w = argv[i];
        const tw_plugin_option *opt;
        const char *value = NULL;
        bool has_value = false;
        if (w[0] == '-' && w[1] == '-' && w[2]) {
            const char *name = w + 2, *eq = strchr(name, '=');
            int len = eq ? (int)(eq - name) : (int)strlen(name);
            if (!eq && strcmp(name, "help") == 0) {
                rc = TW_EAGAIN;
                break;
            }
            opt = option_named(plugin, name, (size_t)len);
            if (!opt) {
                rc = bad(failure, TW_EINVAL, "unknown option '--%.*s'", name, len);
                break;
            }
            if (eq) {
                value = eq + 1;
                has_value = true;
            }
        } else if (w[0] == '-' && w[1] && w[1] != '-') {
            opt = option_short(plugin, w[1]);
            if (!opt) {
                rc = bad(failure, TW_EINVAL, "unknown option '-%.*s'", w + 1, 1);
                break;
            }
            if (w[2]) {
                value = w + 2;
                has_value = true;
            }
        } else {
            rc = bad(failure, TW_EINVAL, "unexpected argument '%.*s'", w, (int)strlen(w));
            break;
        }
        if (!opt->metavar) {
            if (has_value) {
                rc = bad(failure, TW_EINVAL, "--%.*s takes no value", opt->name,
                         (int)strlen(opt->name));
                break;
            }
        } else if (!has_value) {
            if (i + 1 >= argc) {
                rc = bad(failure, TW_EINVAL, "--%.*s needs a value", opt->name,
                         (int)strlen(opt->name));
                break;
            }
            value = argv[++i];
        }
        if (record(a, opt, value) < 0)
            rc = bad(failure, TW_ENOMEM, NULL, NULL, 0);
    }
    if (rc < 0) {
        tw_plugin_args_free(a);
        return rc;
    }
    *out = a;
    return 0;
}

void tw_plugin_args_free(tw_plugin_args *a)
{
    if (!a)
        return;
    tw_free(a->v);
    tw_free(a);
}

static const tw_plugin_option *option_of(const tw_plugin_args *a, const char *name)
{
    return a && name ? option_named(a->plugin, name, strlen(name)) : NULL;
}

size_t tw_plugin_arg_count(const tw_plugin_args *a, const char *name)
{
    const tw_plugin_option *opt = option_of(a, name);
    if (!opt)
        return 0;
    size_t n = 0;
    for (size_t i = 0; i < a->n; i++)
        if (a->v[i].opt == opt)
            n++;
    return n == 0 && opt->default_value ? 1 : n;
}

const char *tw_plugin_arg_at(const tw_plugin_args *a, const char *name, size_t i)
{
    const tw_plugin_option *opt = option_of(a, name);
    if (!opt)
        return NULL;
    size_t seen = 0;
    for (size_t k = 0; k < a->n; k++)
        if (a->v[k].opt == opt && seen++ == i)
            return a->v[k].value;
    return seen == 0 && i == 0 ? opt->default_value : NULL;
}

const char *tw_plugin_arg(const tw_plugin_args *a, const char *name)
{
    const tw_plugin_option *opt = option_of(a, name);
    if (!opt)
        return NULL;
    for (size_t k = a->n; k-- > 0;)
        if (a->v[k].opt == opt)
            return a->v[k].value;
    return opt->default_value;
}

bool tw_plugin_flag(const tw_plugin_args *a, const char *name)
{
    const tw_plugin_option *opt = option_of(a, name);
    if (!opt)
        return false;
    for (size_t k = 0; k < a->n; k++)
        if (a->v[k].opt == opt)
            return true;
    return false;
}

int tw_plugin_add_servers(tw_reactor *r, const tw_plugin_args *args, const char *option,
                          tw_multi_service *m, tw_factory *factory, tw_failure **failure)
{
    if (failure)
        *failure = NULL;
    if (!r || !args || !option || !m || !factory)
        return TW_EINVAL;
    size_t n = tw_plugin_arg_count(args, option);
    for (size_t i = 0; i < n; i++) {
        const char *desc = tw_plugin_arg_at(args, option, i);
        tw_endpoint *ep;
        tw_failure *f = NULL;
        int rc = tw_endpoint_server_from_string(r, desc, &ep, &f);
        if (rc < 0) {
            if (failure)
                *failure = rc == TW_ENOMEM ? f
                                           : tw_failure_new(rc, f, "--%s: %s", option,
                                                            f ? tw_failure_message(f) : "?");
            else
                tw_failure_unref(f);
            return rc;
        }
        if (tw_multi_service_get(m, desc)) {
            tw_endpoint_free(ep);
            if (failure)
                *failure = tw_failure_new(TW_EINVAL, NULL, "--%s: '%s' given twice", option, desc);
            return TW_EINVAL;
        }
        tw_service *s;
        rc = tw_server_service_new(r, desc, ep, factory, &s);
        if (rc == 0) {
            rc = tw_multi_service_add(m, s, &f);
            if (rc < 0) {
                tw_service_release(s);
                if (failure)
                    *failure = f;
                else
                    tw_failure_unref(f);
                return rc;
            }
        }
        if (rc < 0) {
            if (failure)
                *failure = tw_failure_new(rc, NULL, NULL);
            return rc;
        }
    }
    return 0;
}

/* ---- Usage */

struct out {
    char *buf;
    size_t size, len;
};

static void put(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct out *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *at = o->len < o->size ? o->buf + o->len : NULL;
    int n = vsnprintf(at, at ? o->size - o->len : 0, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->len += (size_t)n;
}

/* Words of text from column 28 on, lines kept within 79 columns. */
static void put_wrapped(struct out *o, const char *text)
{
    enum { INDENT = 28, WIDTH = 79 };
    size_t col = INDENT;
    for (const char *w = text; *w;) {
        while (*w == ' ')
            w++;
        size_t n = strcspn(w, " ");
        if (!n)
            break;
        if (col > INDENT && col + 1 + n > WIDTH) {
            put(o, "\n%*s", INDENT, "");
            col = INDENT;
        }
        put(o, " %.*s", (int)n, w);
        col += 1 + n;
        w += n;
    }
    put(o, "\n");
}

size_t tw_plugin_usage(const tw_plugin *plugin, char *buf, size_t size)
{
    struct out o = {buf, buf ? size : 0, 0};
    if (o.size)
        buf[0] = '\0';
    if (!plugin)
        return 0;
    put(&o, "Usage: twined [options] %s [%s options]\n", plugin->name, plugin->name);
    if (plugin->description)
        put(&o, "%s\n", plugin->description);
    put(&o, "\nOptions:\n");
    for (const tw_plugin_option *opt = plugin->options; opt && opt->name; opt++) {
        char lhs[96], text[1024];
        snprintf(lhs, sizeof lhs, "%c%c%c --%s%s%s", opt->short_name ? '-' : ' ',
                 opt->short_name ? opt->short_name : ' ', opt->short_name ? ',' : ' ', opt->name,
                 opt->metavar ? " " : "", opt->metavar ? opt->metavar : "");
        snprintf(text, sizeof text, "%s%s%s%s%s", opt->help ? opt->help : "",
                 opt->repeatable ? " Repeatable." : "", opt->default_value ? " [default: " : "",
                 opt->default_value ? opt->default_value : "", opt->default_value ? "]" : "");
        put(&o, "  %-26s", lhs);
        put_wrapped(&o, text);
    }
    put(&o, "  %-26s %s\n", "    --help", "Display this help and exit.");
    return o.len;
}
