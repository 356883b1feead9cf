/* Twine's trial: deterministic helpers for testing code built on Twine.
 * (The manual clock, task.Clock, is in clock.h: tw_clock_new_manual.)
 * Later layers add the in-memory transport and memory reactor here. */
#ifndef TWINE_TESTING_H
#define TWINE_TESTING_H

#include <stdbool.h>
#include <stddef.h>

#include <twine/clock.h>
#include <twine/deferred.h>
#include <twine/log.h>
#include <twine/reactor.h>
#include <twine/result.h>

/* Runs the reactor (by iterating it; run need not be active) until d has
 * fired or `timeout` seconds have passed. d is borrowed. Returns 0 with the
 * result moved into *out (d's chain goes on with NULL); or TW_ETIMEDOUT, after
 * cancelling d and discarding whatever it then fires with. */
int tw_testing_run_until_fired(tw_reactor *r, tw_deferred *d, double timeout, tw_result *out);

/* The dirty-reactor check, run after every test. Reports, in `why`, what was
 * left: pending delayed calls, readers, writers, signal watches, queued
 * cross-thread calls, and failures logged as unhandled since
 * tw_testing_begin. r may be NULL: unhandled failures only. Returns 0 when
 * clean, TW_EBUSY when not. */
int tw_testing_check_clean(tw_reactor *r, char *why, size_t size);

/* The part of the check that needs no reactor: 0 if no failure was logged
 * as unhandled since tw_testing_begin, else TW_EBUSY with what was logged. */
int tw_testing_check_unhandled(char *why, size_t size);

/* Marks the start of a test: the unhandled-failure count and captured log
 * lines are measured from here. */
void tw_testing_begin(void);

/* ---- Failing allocations: after `n` more allocations succeed, every one
 * fails (n = 0: the next one fails), until tw_testing_fail_alloc_off. Installs
 * a counting allocator over libc's (see alloc.h). */
void tw_testing_fail_alloc_after(long n);
void tw_testing_fail_alloc_off(void);
/* True while failing is armed (after fail_alloc_after, before _off). */
bool tw_testing_fail_alloc_armed(void);
/* Allocations made through Twine since the counting allocator was installed. */
long tw_testing_alloc_count(void);
/* Allocations made since then and not yet freed: compare it before and after
 * a piece of work to prove the work freed everything (fuzz targets do). Call
 * any tw_testing_*alloc* function before the work so the allocator is in
 * place: memory allocated before it was installed is not counted. */
long tw_testing_alloc_live(void);

/* ---- Captured log: keeps the text of every event logged (still passing
 * them to the other observers is not done: capture replaces them). */
void tw_testing_log_capture_start(void);
void tw_testing_log_capture_stop(void);
/* How many captured events contain `needle` in their message or failure. */
size_t tw_testing_log_count(const char *needle);
/* Every captured line, joined by newlines (borrowed, valid until the next
 * event or stop). */
const char *tw_testing_log_text(void);

#endif
