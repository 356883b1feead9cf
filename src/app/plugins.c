/* The plugins twined knows without being told: a plain list. A family that
 * brings a plugin (web, dns, mail, ...) adds one line here; order does not
 * matter (the registry lists them by name). */
#include "app/app-internal.h"
#include "app/plugins-extra.h"

const tw_plugin *const tw__builtin_plugins[] = {
    &tw__plugin_echo, &tw__plugin_discard,     &tw__plugin_chargen, &tw__plugin_daytime,
    &tw__plugin_qotd, &tw__plugin_portforward, &tw__plugin_socks,
};

const size_t tw__builtin_plugin_count = sizeof tw__builtin_plugins / sizeof *tw__builtin_plugins;
