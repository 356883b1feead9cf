/* The relay plugins (issue 7): `twined portforward` and `twined socks`, and
 * what they share. List the two in src/app/plugins.c's table. */
#ifndef TWINE_APP_PLUGINS_EXTRA_H
#define TWINE_APP_PLUGINS_EXTRA_H

#include <twine/plugin.h>
#include <twine/protocol.h>

extern const tw_plugin tw__plugin_portforward;
extern const tw_plugin tw__plugin_socks;

/* Builds the service tree of a plugin whose connections all come from one
 * factory: a multi-service named `name` holding the factory (released with
 * release(obj) when the tree is released; connections still running keep
 * what they need) and one server service per --listen value. On error the
 * factory is released too and *failure says which --listen is wrong and
 * why. */
int tw__plugin_serve_factory(tw_reactor *r, const tw_plugin_args *args, const char *name,
                             tw_factory *factory, void (*release)(void *obj), void *obj,
                             tw_service **out, tw_failure **failure);

#endif
