/* Shared inside src/app: the table of built-in plugins (plugins.c), which
 * the registry (plugin.c) serves before the ones registered at run time. */
#ifndef TWINE_SRC_APP_INTERNAL_H
#define TWINE_SRC_APP_INTERNAL_H

#include <stddef.h>

#include <twine/plugin.h>

extern const tw_plugin *const tw__builtin_plugins[];
extern const size_t tw__builtin_plugin_count;

/* The RFC 862-867 plugins (plugins-basic.c). */
extern const tw_plugin tw__plugin_echo;
extern const tw_plugin tw__plugin_discard;
extern const tw_plugin tw__plugin_chargen;
extern const tw_plugin tw__plugin_daytime;
extern const tw_plugin tw__plugin_qotd;

#endif
