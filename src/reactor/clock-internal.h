/* The clock as the reactor sees it (internal to the reactor layer). */
#ifndef TWINE_SRC_CLOCK_INTERNAL_H
#define TWINE_SRC_CLOCK_INTERNAL_H

#include <stdint.h>

#include <twine/clock.h>

/* A clock driven by the reactor: its time is CLOCK_MONOTONIC, cached, and
 * refreshed by tw__clock_update. NULL when out of memory. */
tw_clock *tw__clock_new_reactor(void);
/* Frees any clock (a reactor's included), dropping pending calls unrun and
 * leaving armed intrusive timers disarmed. From inside one of the clock's own
 * callbacks it frees the clock when the running pass returns. NULL is
 * ignored. */
void tw__clock_destroy(tw_clock *clock);

/* Refreshes a reactor clock's cached time from CLOCK_MONOTONIC; returns it. */
uint64_t tw__clock_update(tw_clock *clock);

/* Nanoseconds until the earliest pending timer is due (0 if one is due now),
 * or -1 when nothing is pending. Does not read the system clock. It may be
 * early, never late: a timer re-armed later since the last tw__clock_run_due
 * is counted at its old deadline (the wake-up then just re-sorts it). Capped
 * at INT64_MAX. */
int64_t tw__clock_timeout_ns(const tw_clock *clock);

/* Runs the timers due at the cached time that were scheduled before this
 * call began (a timer armed or re-armed by a running timer waits for the next
 * call), in (deadline, scheduling order) order. Returns how many ran. */
size_t tw__clock_run_due(tw_clock *clock);

#endif
