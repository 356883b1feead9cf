/* Shared between the endpoint parser (endpoint-parse.c) and the built-in
 * types (endpoint-types.c). */
#ifndef TWINE_NET_ENDPOINT_INTERNAL_H
#define TWINE_NET_ENDPOINT_INTERNAL_H

#include <twine/endpoint.h>

/* A type the parser knows: a built-in one (a static table) or a registered one
 * (allocated once and never moved or freed, so spec->type may point at its
 * name for as long as the process lives). */
typedef struct tw__endpoint_type {
    const char *name; /* lowercase */
    unsigned roles;   /* mask of tw_endpoint_role */
    tw_endpoint_kind kind;
    tw_endpoint_validate_fn validate;
    void *arg;
} tw__endpoint_type;

extern const tw__endpoint_type tw__endpoint_builtin_types[];
extern const size_t tw__endpoint_builtin_count;

/* Finds the type named by len bytes (case-insensitively) for role. Returns
 * NULL when there is none; *other_role is then the type of that name for the
 * other role, or NULL. */
const tw__endpoint_type *tw__endpoint_lookup(const char *name, size_t len, tw_endpoint_role role,
                                             const tw__endpoint_type **other_role);

/* Parses an already tokenized description: args[0] is the type (positional),
 * the rest its arguments (copied). Errors as tw_endpoint_parse, unprefixed. */
int tw__endpoint_parse_args(tw_endpoint_role role, const tw_endpoint_arg *args, size_t nargs,
                            tw_endpoint_spec **out, tw_failure **failure);

/* Stores f in *failure (or drops it when failure is NULL) and returns its
 * code, so that an out-of-memory failure made in place of the intended one
 * turns the result into TW_ENOMEM. */
int tw__endpoint_give(tw_failure **failure, tw_failure *f);

/* ---- Endpoints made from C rather than from a description (the process
 * endpoint, endpoint-process.c): endpoints.c hands connect and free to these
 * ops. connect takes the factory, or (factory NULL) the ready-made protocol,
 * which it takes over whatever happens, and returns a new deferred as
 * tw_endpoint_connect does. */
struct tw__endpoint_impl {
    tw_deferred *(*connect)(void *data, tw_reactor *r, tw_factory *factory,
                            tw_protocol *ready_made);
    void (*free)(void *data);
};

/* Makes an endpoint without a spec that dispatches to impl with data (which
 * impl->free releases with the endpoint; on error it is released here).
 * Returns 0 and *out, or TW_ENOMEM. */
int tw__endpoint_new_impl(tw_reactor *r, const struct tw__endpoint_impl *impl, void *data,
                          tw_endpoint **out);

#endif
