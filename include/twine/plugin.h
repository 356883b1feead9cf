/* twined plugins (twisted.plugins' IServiceMaker): a named, self-describing
 * maker of a service tree from command-line options.
 *
 * The launcher (twined) knows no plugin by name: it parses its own options,
 * finds the plugin named next on the command line in the registry, parses
 * the rest with the plugin's option table, and calls make_service. A later
 * issue (web, dns, mail, ...) adds a plugin by defining a tw_plugin and
 * listing it in src/app/plugins.c's table of built-in plugins; programs can
 * also register their own at startup.
 *
 * Options are GNU-style long options: `--name VALUE`, `--name=VALUE`, and
 * `--flag` for options without a metavar; `-x` short forms where given.
 * `--help` is built in for every plugin (generated from the table). */
#ifndef TWINE_PLUGIN_H
#define TWINE_PLUGIN_H

#include <stdbool.h>
#include <stddef.h>

#include <twine/failure.h>
#include <twine/reactor.h>
#include <twine/service.h>

typedef struct tw_plugin_option {
    const char *name;          /* long name without "--": "listen" */
    char short_name;           /* 'l', or 0 */
    const char *metavar;       /* "ENDPOINT"; NULL for a flag (no value) */
    const char *help;          /* one line */
    const char *default_value; /* used when not given; NULL: none */
    bool repeatable;           /* may be given several times (--listen A --listen B) */
} tw_plugin_option;

/* The parsed options of one plugin invocation (read-only for the plugin). */
typedef struct tw_plugin_args tw_plugin_args;

/* The values given for `name` (without defaults), in order, and how many;
 * when none was given and the option has a default, that one default. */
size_t tw_plugin_arg_count(const tw_plugin_args *a, const char *name);
const char *tw_plugin_arg_at(const tw_plugin_args *a, const char *name, size_t i);
/* The last value given, else the default, else NULL. */
const char *tw_plugin_arg(const tw_plugin_args *a, const char *name);
/* A flag given on the command line. */
bool tw_plugin_flag(const tw_plugin_args *a, const char *name);

typedef struct tw_plugin {
    const char *name;                /* "echo": what follows `twined` on the command line */
    const char *description;         /* one line, for `twined` with no plugin */
    const tw_plugin_option *options; /* terminated by an entry with name NULL */
    /* Builds the plugin's service tree (not started). Returns 0 and *out, or
     * an error with *failure saying what is wrong in the user's terms ("--listen:
     * unknown endpoint type 'tpc'"). */
    int (*make_service)(tw_reactor *r, const tw_plugin_args *args, tw_service **out,
                        tw_failure **failure);
} tw_plugin;

/* The registry: the built-in plugins, then those registered. Register at
 * startup, before any lookup (not thread-safe). TW_EEXIST for a name taken,
 * TW_EINVAL for a plugin without a name or make_service. The plugin is
 * borrowed: it must live as long as the process. */
int tw_plugin_register(const tw_plugin *plugin);
const tw_plugin *tw_plugin_find(const char *name);
size_t tw_plugin_count(void);
const tw_plugin *tw_plugin_at(size_t i); /* in name order */

/* Parses argv[0..argc) (the words after the plugin's name) against the
 * plugin's options. Values point into argv, which must outlive the args.
 * Words that are not options are refused ("unexpected argument 'x'"); a
 * non-repeatable option given twice keeps the last value, as Twisted's
 * usage.Options does. Returns 0 and *out (free with tw_plugin_args_free);
 * TW_EINVAL with *failure naming the bad word ("unknown option '--lisen'",
 * "--listen needs a value"); TW_EAGAIN when --help was asked for (nothing
 * to run: print tw_plugin_usage). */
int tw_plugin_args_parse(const tw_plugin *plugin, int argc, char *const *argv, tw_plugin_args **out,
                         tw_failure **failure);
void tw_plugin_args_free(tw_plugin_args *a);

/* What most plugins do with their --listen: adds to m one server service per
 * value of `option` (given, else its default), named by the description,
 * serving `factory` (which must outlive m: tw_multi_service_keep it).
 * Returns 0; TW_EINVAL with *failure "--listen: <why>" for a description
 * that does not parse or is given twice; TW_ENOMEM. Services added before an
 * error stay in m (release m). */
int tw_plugin_add_servers(tw_reactor *r, const tw_plugin_args *args, const char *option,
                          tw_multi_service *m, tw_factory *factory, tw_failure **failure);

/* Writes the plugin's --help text (usage line, description, options with
 * defaults) into buf (truncated, NUL-terminated); returns the full length. */
size_t tw_plugin_usage(const tw_plugin *plugin, char *buf, size_t size);

#endif
