/* Time (IReactorTime, IDelayedCall, task.Clock).
 *
 * A tw_clock holds the pending timed calls of one reactor, or of a manual
 * clock that tests move by hand (task.Clock). Everything that schedules by
 * time takes a tw_clock *, so a manual clock works wherever the reactor's does:
 * tw_reactor_clock(r) gives the reactor's.
 *
 * Time is in seconds (double) at the API, as in Twisted; inside it is
 * nanoseconds of CLOCK_MONOTONIC. A reactor's clock reads the system clock
 * when an iteration begins and again as soon as its wait for events returns,
 * before any callback runs, and schedules against that cached time (as
 * libuv's uv_now), so scheduling costs no syscall and a delay armed from any
 * callback counts from when that callback was woken.
 *
 * Order: calls due at the same time run in the order they were scheduled
 * (a reset counts as rescheduling). A call scheduled by a running call with a
 * delay of 0 runs on the reactor's next iteration, never in the same pass, so
 * timers cannot starve I/O; a manual clock's advance runs it in the same
 * advance (as task.Clock does).
 *
 * Single-threaded: a clock belongs to its reactor's thread. */
#ifndef TWINE_CLOCK_H
#define TWINE_CLOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct tw_clock tw_clock;

/* Nanoseconds of CLOCK_MONOTONIC. */
uint64_t tw_monotonic_ns(void);

/* A manual clock (task.Clock) starting at 0 seconds; NULL when out of memory.
 * Its time moves only with tw_clock_advance. */
tw_clock *tw_clock_new_manual(void);

/* Frees a manual clock. Pending calls are dropped without running; their
 * arguments are not touched (they belong to whoever scheduled them); intrusive
 * timers still armed are left disarmed (their memory is their owner's; they
 * may still be stopped, a no-op, but never started again). Called
 * from inside one of the clock's own callbacks, it frees the clock once the
 * advance that ran the callback returns, running nothing more. A reactor's
 * clock is freed with the reactor, never with this: given one, it logs an
 * error and does nothing. NULL is ignored. */
void tw_clock_free(tw_clock *clock);

/* The clock's current time in seconds: a manual clock's own, a reactor's
 * cached loop time. */
double tw_clock_seconds(const tw_clock *clock);

/* Manual clocks only: moves time forward by `seconds` and runs every call that
 * is then due, in order, including calls those calls schedule that are due too.
 * Returns the number of calls run (capped at INT_MAX); TW_EINVAL for a
 * negative, NaN or infinite amount, or for a reactor's clock (time is left as
 * it was); TW_EBUSY when called from inside a callback of this clock. A huge
 * finite amount moves time to the far future (about 292 years), no further. */
int tw_clock_advance(tw_clock *clock, double seconds);

/* Manual clocks only: advance by each of timings[0..n) in turn (Clock.pump).
 * Returns the number of calls run, or TW_EINVAL / TW_EBUSY as advance (every
 * timing is checked before time moves at all). */
int tw_clock_pump(tw_clock *clock, const double *timings, size_t n);

/* Pending timers and delayed calls on this clock (the dirty-reactor check). */
size_t tw_clock_pending(const tw_clock *clock);

/* ---- Intrusive timers: embed one in your own struct; never allocates once
 * armed. This is what a connection's idle timeout uses: re-arming an armed
 * timer (on every read) allocates nothing, makes no syscall, and is O(1) when
 * the deadline moves later (the common case); an earlier deadline costs
 * O(log n) with n pending timers. */

typedef struct tw_timer tw_timer;
typedef void (*tw_timer_fn)(tw_timer *timer);

struct tw_timer {
    /* Private: set by tw_timer_init and the clock. The heap is ordered by
     * (heap_key_ns, heap_seq); re-arming later only moves (due_ns, seq), and
     * the heap catches up when the timer reaches its top. */
    tw_clock *clock;
    tw_timer_fn fn;
    uint64_t heap_key_ns; /* deadline the heap is ordered by (<= due_ns) */
    uint64_t heap_seq;    /* tie-break the heap is ordered by (<= seq) */
    uint64_t due_ns;      /* the real deadline */
    uint64_t seq;         /* the real tie-break: scheduling order */
    uint32_t heap_index;  /* position in the heap; UINT32_MAX when not armed */
};

/* Prepares a timer (unarmed); fn runs on the clock's thread when it is due,
 * after the timer has been disarmed (so fn may re-arm it or free its
 * container). Must not be called on an armed timer. */
void tw_timer_init(tw_timer *timer, tw_clock *clock, tw_timer_fn fn);

/* Arms the timer `delay` seconds from the clock's current time, or re-arms it
 * if armed (a re-arm counts as rescheduling for the same-deadline order).
 * A huge finite delay means the far future (about 292 years). Returns 0;
 * TW_EINVAL for a negative, NaN or infinite delay (the timer is left as it
 * was); TW_ENOMEM if the clock's heap had to grow and could not (only possible
 * when the timer was not armed; it stays unarmed). */
int tw_timer_start(tw_timer *timer, double delay);

/* Disarms the timer; does nothing if it is not armed. */
void tw_timer_stop(tw_timer *timer);

bool tw_timer_active(const tw_timer *timer);

/* ---- Delayed calls (callLater / IDelayedCall): one-shot calls the clock
 * owns. A tw_delayed_call is a small handle, copied by value; it stays safe to
 * use after the call ran or was cancelled (the clock keeps the call's slot and
 * knows the handle is stale), so cancelling a call that already ran is an
 * error code, never a use after free. A zeroed handle is valid and inactive.
 * Handles must not outlive their clock. */

typedef void (*tw_call_fn)(void *arg);

typedef struct tw_delayed_call {
    struct tw__delayed *slot; /* private */
    uint64_t id;              /* private */
} tw_delayed_call;

/* Schedules fn(arg) `delay` seconds from now (a huge finite delay: the far
 * future, about 292 years). arg is never touched by Twine. Returns 0 and, if
 * out is not NULL, the handle; TW_EINVAL for a negative, NaN or infinite delay
 * or a NULL clock or fn; TW_ENOMEM. On error fn never runs and nothing is
 * scheduled. */
int tw_call_later(tw_clock *clock, double delay, tw_call_fn fn, void *arg, tw_delayed_call *out);

/* Each returns 0, or TW_EALREADYCALLED if the call ran (or is running: a call
 * counts as called as soon as it starts), TW_EALREADYCANCELLED if it was
 * cancelled (TW_EALREADYCALLED too for a zeroed handle, or a handle whose slot
 * has since been reused; slots are reused oldest-released first, so the exact
 * code survives as long as possible). The handle is checked before the
 * arguments. */
int tw_delayed_call_cancel(tw_delayed_call call);
/* Reschedules to `delay` seconds from now (TW_EINVAL as tw_call_later); a
 * reset counts as rescheduling for the same-deadline order, as does delay. */
int tw_delayed_call_reset(tw_delayed_call call, double delay);
/* Postpones by `seconds` from its current time (may be negative: sooner).
 * The new time is never before now: a call already due is left as it is by a
 * negative amount, and one overdue by more than a positive amount moves to
 * now. TW_EINVAL for NaN or an infinite amount. */
int tw_delayed_call_delay(tw_delayed_call call, double seconds);

bool tw_delayed_call_active(tw_delayed_call call);
/* The clock time at which it will run, or NAN when not active. */
double tw_delayed_call_time(tw_delayed_call call);

#endif
