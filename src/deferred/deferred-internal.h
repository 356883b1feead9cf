/* What the combinators need from deferred.c (internal to the deferred layer).
 *
 * A combinator adds one pair to each of its inputs. Adding can run user code
 * (an input that has fired runs the pair at once), so every allocation must
 * happen before the first pair goes in: reserve a slot on each input first
 * (fallible, no visible effect), then add into the reserved slots (never
 * fails). */
#ifndef TWINE_SRC_DEFERRED_INTERNAL_H
#define TWINE_SRC_DEFERRED_INTERNAL_H

#include <twine/deferred.h>

/* Makes room for one more pair that only tw__deferred_add_reserved may use.
 * Returns 0 or TW_ENOMEM. Reserving the same deferred twice reserves two. */
int tw__deferred_reserve(tw_deferred *d);
/* Gives back a reservation that will not be used. */
void tw__deferred_unreserve(tw_deferred *d);
/* tw_deferred_add_callbacks into a reserved slot: cannot fail. */
void tw__deferred_add_reserved(tw_deferred *d, tw_callback_fn callback, tw_callback_fn errback,
                               void *arg, tw_release_fn arg_release);

#endif
