/* tw_result: a value with its owner, or a failure — the one result type that
 * deferreds, threads and every later layer pass around.
 *
 * Exactly one of three shapes:
 *   a value:    failure == NULL; value (may be NULL) is released by release()
 *               when the holder is done with it; release == NULL means the
 *               value is not owned (static data, an integer cast to a pointer,
 *               something owned elsewhere).
 *   a failure:  failure != NULL (one reference, owned); value/release unused.
 *   a deferred: the value is a tw_deferred * and release ==
 *               tw_deferred_release_value (which drops one reference).
 *               A callback that returns this pauses its chain until that
 *               deferred fires (see deferred.h).
 *
 * Whoever holds a tw_result owns it: pass it on (a callback's argument becomes
 * its return value) or drop it with tw_result_release. Copying the struct does
 * not copy the value. */
#ifndef TWINE_RESULT_H
#define TWINE_RESULT_H

#include <stdbool.h>
#include <stdint.h>

#include <twine/alloc.h>
#include <twine/failure.h>

typedef struct tw_deferred tw_deferred;

typedef struct tw_result {
    void *value;
    tw_release_fn release;
    tw_failure *failure;
} tw_result;

/* Drops one reference to the deferred `d` points to: the release function of a
 * result that holds a deferred. Defined in deferred.c. */
void tw_deferred_release_value(void *d);

static inline tw_result tw_result_ok(void *value, tw_release_fn release)
{
    return (tw_result){.value = value, .release = release, .failure = NULL};
}

/* An unowned value: nothing is released. */
static inline tw_result tw_result_borrowed(const void *value)
{
    return (tw_result){.value = (void *)value, .release = NULL, .failure = NULL};
}

/* An integer result (no ownership); read it back with tw_result_int. */
static inline tw_result tw_result_from_int(intptr_t n)
{
    return (tw_result){.value = (void *)n, .release = NULL, .failure = NULL};
}
static inline intptr_t tw_result_int(tw_result r)
{
    return (intptr_t)r.value;
}

/* Takes over the failure's reference. */
static inline tw_result tw_result_fail(tw_failure *failure)
{
    return (tw_result){.value = NULL, .release = NULL, .failure = failure};
}

/* Takes over one reference to d; a callback returning this waits for d. */
static inline tw_result tw_result_deferred(tw_deferred *d)
{
    return (tw_result){.value = d, .release = tw_deferred_release_value, .failure = NULL};
}

static inline bool tw_result_is_failure(tw_result r)
{
    return r.failure != NULL;
}

static inline bool tw_result_is_deferred(tw_result r)
{
    return r.failure == NULL && r.release == tw_deferred_release_value;
}

/* Releases what the result owns (value or failure) and empties it. */
static inline void tw_result_release(tw_result *r)
{
    if (r->failure)
        tw_failure_unref(r->failure);
    else if (r->release)
        r->release(r->value);
    *r = (tw_result){0};
}

/* Hands the value over to the caller: returns it and empties the result so
 * releasing it afterwards does nothing. For a failure, returns NULL and leaves
 * the result as it is. */
static inline void *tw_result_take(tw_result *r)
{
    if (r->failure)
        return NULL;
    void *v = r->value;
    *r = (tw_result){0};
    return v;
}

#endif
