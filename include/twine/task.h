/* Tasks (twisted.internet.task): a function called on an interval
 * (LoopingCall), a function called after a delay as a deferred (deferLater),
 * many iterators run a slice at a time (Cooperator, cooperate, coiterate),
 * and a program's main function run with its reactor (react).
 *
 * Everything timed takes a tw_clock *: the reactor's (tw_reactor_clock) or a
 * manual one (tw_clock_new_manual), so tests of timing need no sleeping. The
 * clock must outlive what is scheduled on it. Single-threaded, as the clock.
 *
 * Log namespace: "twine.task". */
#ifndef TWINE_TASK_H
#define TWINE_TASK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <twine/clock.h>
#include <twine/deferred.h>
#include <twine/reactor.h>
#include <twine/result.h>

/* ---- Looping calls (LoopingCall, LoopingCall.withCount) */

typedef struct tw_looping_call tw_looping_call;

/* The function a looping call runs. count is how many intervals have passed
 * since the previous call (Twisted's withCount): 1 when on time, more when
 * calls were skipped because the reactor was busy, the clock jumped, or a
 * deferred the function returned fired late; never 0. With an interval of 0
 * it is always 1. A function that does not care ignores it (LoopingCall).
 *
 * Returns a value (released at once: it is ignored, as in Twisted), a
 * deferred (tw_result_deferred: the loop waits for it, then calls again at
 * the next aligned time; its value is ignored), or a failure (the loop stops
 * and the start deferred fails with it). It may call stop, reset, start (it
 * is refused: running) or free on its looping call. */
typedef tw_result (*tw_looping_fn)(tw_looping_call *lc, uint64_t count, void *arg);

/* Makes a stopped looping call of fn(lc, count, arg) on `clock` (which must
 * outlive it). Returns 0 and *out; TW_EINVAL (NULL clock, fn or out);
 * TW_ENOMEM. */
int tw_looping_call_new(tw_clock *clock, tw_looping_fn fn, void *arg, tw_looping_call **out);

/* Stops the loop if it runs (as tw_looping_call_stop) and releases the
 * looping call. If it waits for a deferred the function returned, the start
 * deferred fires when that one does, as after stop, with a NULL value (the
 * looping call is gone). Safe from inside the function and from the start
 * deferred's callbacks. NULL is ignored. */
void tw_looping_call_free(tw_looping_call *lc);

/* Starts calling the function every `interval` seconds (LoopingCall.start):
 * at once, before this returns, if `now`; else first one interval from now.
 * Calls stay aligned to the start time: the n-th is due at start + n *
 * interval, whatever the calls before it cost. A call that comes late, or a
 * deferred that fires late, is followed by the next aligned time, and the
 * intervals missed are counted in `count`. Time is counted in the clock's
 * nanoseconds, so alignment does not drift: a thousand ticks of 0.1 s end at
 * exactly 100 s. An interval of 0 calls again as soon as possible: on the
 * reactor's next iteration, or within the same advance of a manual clock
 * (as task.Clock does) until the loop stops or waits for a deferred.
 *
 * *out (out may be NULL) gets a new reference to the start deferred: it
 * fires with the looping call (a borrowed tw_looping_call *) once the loop
 * has stopped, or fails with the function's failure. With `now`, the first
 * call may already have stopped or failed the loop: the deferred has then
 * fired when start returns 0. Cancelling the start deferred stops the loop
 * and cancels the deferred it waits for, if any; it then fails with
 * TW_ECANCELED (Twisted's keeps looping: its deferred has no canceller).
 *
 * Returns 0; TW_EBUSY while running, or while a stopped loop still waits for
 * the deferred of its last call (its start deferred has not fired: restart
 * from a callback of it); TW_EINVAL for a negative, NaN or infinite interval,
 * or a NULL lc; TW_ENOMEM (nothing was called or scheduled). */
int tw_looping_call_start(tw_looping_call *lc, double interval, bool now, tw_deferred **out);

/* Stops the loop (LoopingCall.stop). If a call is scheduled, it is dropped and
 * the start deferred fires now; if the function is running, or a deferred it
 * returned has not fired, the start deferred fires when that is over (or
 * fails, if it fails). Returns 0, or TW_EINVAL if the loop is not running. */
int tw_looping_call_stop(tw_looping_call *lc);

/* Skips the scheduled call and starts the interval again from now
 * (LoopingCall.reset): the next call is one interval from now, and is
 * counted from here (count 1). While the function runs or a deferred it
 * returned is pending, there is no scheduled call and it does nothing.
 * Returns 0, or TW_EINVAL if the loop is not running. */
int tw_looping_call_reset(tw_looping_call *lc);

/* True from start until stop, or until the function failed (Twisted's
 * running): false by the time the start deferred fires. */
bool tw_looping_call_running(const tw_looping_call *lc);

/* The interval given to the last start (0 before any). */
double tw_looping_call_interval(const tw_looping_call *lc);

/* ---- deferLater */

/* A deferred that fires after `delay` seconds on `clock` with what fn(arg)
 * returns then (fn may return a deferred: the chain waits for it; fn NULL:
 * the value is NULL). fn runs as the deferred's first callback, exactly
 * once, or never if the deferred is cancelled first: cancelling it drops the
 * delayed call, and it fails with TW_ECANCELED. The clock holds a reference
 * until the delay is over, so dropping yours does not stop it (fn still
 * runs). Returns a new reference; a deferred failed with TW_EINVAL for a
 * negative, NaN or infinite delay or a NULL clock; NULL when out of memory
 * (fn will not run). */
tw_deferred *tw_defer_later(tw_clock *clock, double delay, tw_result (*fn)(void *arg), void *arg);

/* ---- Cooperative tasks (Cooperator, CooperativeTask, cooperate, coiterate)
 *
 * A cooperator runs many iterators in time slices: on each tick it takes one
 * unit of work (one call of the iterator) from each task in turn, round
 * robin, until the slice is used up (0.01 s by default, as Twisted's), then
 * yields to the reactor until the next tick (a delayed call of 1e-8 s on its
 * clock, Twisted's default scheduler). The next tick goes on with the task
 * after the last one that ran, so tasks share the time fairly. */

typedef struct tw_cooperator tw_cooperator;
typedef struct tw_coop_task tw_coop_task;

/* An iterator: each call does one unit of work (Python's next()) and returns
 *   tw_iter_more()          do more later (any other value too: it is
 *                           released, as Twisted ignores what is yielded);
 *   tw_result_deferred(d)   pause this task until d fires: it goes on after
 *                           d's value (which is dropped), or fails with d's
 *                           failure;
 *   tw_result_fail(f)       the task fails with f (an exception in next());
 *   tw_iter_done()          the task is finished (StopIteration). */
typedef tw_result (*tw_iter_fn)(void *arg);

extern const char tw__iter_done_tag;
static inline tw_result tw_iter_more(void)
{
    return tw_result_borrowed(NULL);
}
static inline tw_result tw_iter_done(void)
{
    return tw_result_borrowed(&tw__iter_done_tag);
}

typedef struct tw_cooperator_options {
    /* How long one tick runs iterators before yielding (Twisted's
     * _Timer.MAX_SLICE), in real (monotonic) time whatever the clock:
     * 0 means 0.01 s. At least one unit runs per tick. */
    double slice;
    /* Twisted's terminationPredicateFactory, for tests and special policies:
     * when set, it is asked after each unit whether the tick is over (units:
     * how many have run in this tick, 1 or more), and slice is not used. */
    bool (*tick_over)(void *arg, size_t units);
    void *tick_over_arg;
    /* Delay on the clock from one tick to the next: 0 means Twisted's 1e-8 s,
     * which a reactor runs on its next iteration (after I/O) and a manual
     * clock on its next advance (of 1e-8 s or more). */
    double tick_delay;
    /* Cooperator(started=False): tasks wait until tw_cooperator_start. */
    bool not_started;
} tw_cooperator_options;

/* Makes a cooperator ticking on `clock` (which must outlive it); options may
 * be NULL. Returns 0 and *out; TW_EINVAL (NULL clock or out; negative, NaN
 * or infinite slice or tick_delay); TW_ENOMEM. */
int tw_cooperator_new(tw_clock *clock, const tw_cooperator_options *options, tw_cooperator **out);

/* Stops the cooperator (see stop) and frees it. Tasks still referenced stay
 * valid (finished) until their last reference goes. Safe from inside an
 * iterator or a callback: it is then freed when the running tick returns.
 * NULL is ignored. */
void tw_cooperator_free(tw_cooperator *c);

/* Begins scheduling ticks (Cooperator.start), for a cooperator made with
 * not_started or stopped: tasks added from now on run again. */
void tw_cooperator_start(tw_cooperator *c);

/* Stops scheduling (Cooperator.stop): every unfinished task (running, paused
 * or waiting for a deferred) finishes, its when_done deferreds failing with
 * TW_ESHUTDOWN ("SchedulerStopped"), and a task added before the next start
 * fails that way at once. Twisted's stop forgets paused tasks, whose
 * deferreds fire only if resumed; this one finishes them. Stopping a stopped
 * cooperator does nothing. */
void tw_cooperator_stop(tw_cooperator *c);

/* Started and not stopped (Cooperator.running). */
bool tw_cooperator_running(const tw_cooperator *c);

/* Tasks added and not finished (paused ones included). */
size_t tw_cooperator_tasks(const tw_cooperator *c);

/* cooperate: adds the iterator fn(arg) as a task. *out (out may be NULL: the
 * cooperator then holds the task alone until it finishes) gets a reference
 * the caller drops with tw_coop_task_unref. On a stopped cooperator the task
 * has failed already (TW_ESHUTDOWN). arg_release, if not NULL, is called
 * with arg when the task is released: once it has finished and its last
 * reference is gone. Returns 0; TW_EINVAL (NULL c or fn); TW_ENOMEM (fn never
 * runs, arg_release is not called). */
int tw_cooperate(tw_cooperator *c, tw_iter_fn fn, void *arg, tw_release_fn arg_release,
                 tw_coop_task **out);

/* coiterate: cooperate, returning a new reference to the task's when_done
 * deferred. NULL when out of memory (fn never runs, arg_release is not
 * called); a TW_EINVAL failure for a NULL c or fn. */
tw_deferred *tw_coiterate(tw_cooperator *c, tw_iter_fn fn, void *arg, tw_release_fn arg_release);

/* whenDone: a new deferred that fires when the task finishes: with arg
 * (borrowed: valid until arg_release, after the callbacks that run when the
 * task finishes, or later while a reference to the task is held) when the
 * iterator is done; with the iterator's failure (or the failure of a
 * deferred it returned); with TW_ECANCELED ("TaskStopped") after
 * tw_coop_task_stop; with TW_ESHUTDOWN after the cooperator stopped. On a
 * finished task it has fired already. NULL when out of memory. */
tw_deferred *tw_coop_task_when_done(tw_coop_task *t);

/* Pauses the task: no more units until a resume for each pause. Returns 0, or
 * TW_EINVAL if the task has finished (TaskFinished). */
int tw_coop_task_pause(tw_coop_task *t);

/* Undoes one pause. Returns 0, or TW_EPAUSED if the task was not paused
 * (NotPaused) by tw_coop_task_pause: waiting for a deferred it returned is
 * not a pause to undo. Resuming a finished task only counts down. */
int tw_coop_task_resume(tw_coop_task *t);

/* Stops the task: it gets no more units and its when_done deferreds fail with
 * TW_ECANCELED (TaskStopped). A deferred it waits for is left alone (not
 * cancelled); what it fires with is dropped. Returns 0, or TW_EINVAL if the
 * task has finished already. */
int tw_coop_task_stop(tw_coop_task *t);

typedef enum tw_coop_task_state {
    TW_TASK_RUNNING, /* gets units */
    TW_TASK_PAUSED,  /* paused, or waiting for a deferred it returned */
    TW_TASK_DONE,    /* the iterator returned tw_iter_done() */
    TW_TASK_FAILED,  /* the iterator, or a deferred it returned, failed */
    TW_TASK_STOPPED, /* tw_coop_task_stop, or the cooperator stopped */
} tw_coop_task_state;

tw_coop_task_state tw_coop_task_state_of(const tw_coop_task *t);

/* Drops a reference from tw_cooperate. An unfinished task keeps running: the
 * cooperator holds it until it finishes. NULL is ignored. */
void tw_coop_task_unref(tw_coop_task *t);

/* ---- react */

/* A program's main: returns a new reference to a deferred that fires when the
 * program is done (NULL counts as a failure: out of memory). */
typedef tw_deferred *(*tw_react_main_fn)(tw_reactor *r, void *arg);

typedef struct tw_react_options {
    /* Run this reactor (not run before; it stays the caller's to free).
     * NULL: react makes one with reactor_options and frees it. */
    tw_reactor *reactor;
    const tw_reactor_options *reactor_options;
} tw_react_options;

/* Tags an exit status in a result (the release function of tw_react_exit's
 * value; it releases nothing). */
void tw_react_exit_tag(void *value);

/* Twisted's SystemExit(status): main's deferred firing with this value (an
 * errback may return it too) makes tw_react return `status`. */
static inline tw_result tw_react_exit(int status)
{
    return tw_result_ok((void *)(intptr_t)status, tw_react_exit_tag);
}

/* react: calls main_fn(r, arg), runs the reactor until the deferred it
 * returned fires, stops the reactor (once, after it has started), and returns
 * the process exit status: 0 when the deferred fired with a value; `status`
 * for tw_react_exit(status); 1 when it failed, after logging the failure
 * ("main function encountered error", level error); 1 when main_fn returned
 * NULL or the reactor could not be made or run (logged). If something else
 * stops the reactor first (a signal), the status is 0, as in Twisted, and the
 * deferred is cancelled once run returns (its outcome is then ignored).
 * Never exits the process itself: a program ends with
 *     int main(void) { return tw_react(my_main, &config, NULL); }      */
int tw_react(tw_react_main_fn main_fn, void *arg, const tw_react_options *options);

#endif
