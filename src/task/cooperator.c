/* Cooperator and CooperativeTask.
 *
 * A task is a member of its cooperator from cooperate until it finishes, and
 * is on the active list (the round robin) while it is a member, not paused
 * and not waiting for a deferred. `cursor` is the next active task to run;
 * removing it from the list moves the cursor on, so a tick goes on after the
 * last task that ran, whatever the units did to the list.
 *
 * References to a task: the caller's (tw_cooperate's out), the cooperator's
 * while it is a member, a running unit's, and the pair on a deferred it
 * waits for. The cooperator's own count covers the caller and a running
 * tick, so it may be freed from inside one. */
#include <twine/alloc.h>
#include <twine/error.h>
#include <twine/failure.h>
#include <twine/log.h>
#include <twine/task.h>

#include <math.h>
#include <stddef.h>

#define NS                              "twine.task"
#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

#define DEFAULT_SLICE                   0.01 /* Twisted's _Timer.MAX_SLICE */
#define DEFAULT_TICK_DELAY              1e-8 /* Twisted's _EPSILON */

const char tw__iter_done_tag = 0;

struct tw_coop_task {
    unsigned refs;
    tw_cooperator *coop; /* NULL once finished */
    tw_iter_fn fn;
    void *arg;
    tw_release_fn arg_release;
    tw_coop_task *prev, *next;   /* the active list */
    tw_coop_task *mprev, *mnext; /* the members list */
    uint64_t gen;                /* the cooperator's start generation when it joined */
    bool active, member;
    unsigned pauses;        /* tw_coop_task_pause not yet resumed */
    tw_deferred *awaited;   /* the deferred it waits for; its pair holds the task */
    tw_coop_task_state end; /* TW_TASK_RUNNING until finished */
    tw_failure *failure;    /* why it ended, unless done */
    tw_deferred **done;     /* when_done deferreds not fired yet (our references) */
    size_t ndone, capdone;
};

struct tw_cooperator {
    unsigned refs;
    tw_clock *clock;
    tw_timer timer;
    double tick_delay;
    uint64_t slice_ns;
    bool (*tick_over)(void *arg, size_t units);
    void *tick_over_arg;
    bool started, stopped, freed, in_tick;
    uint64_t gen;                /* bumped by start */
    tw_coop_task *head, *tail;   /* active, in round-robin order */
    tw_coop_task *cursor;        /* next active task to run; NULL: past the tail (the
                                    next unit starts a new pass at the head) */
    tw_coop_task *mhead, *mtail; /* members, in joining order */
    size_t members;
};

static void coop_unref(tw_cooperator *c)
{
    if (--c->refs > 0)
        return;
    tw_timer_stop(&c->timer);
    tw_free(c);
}

static void task_unref(tw_coop_task *t)
{
    if (--t->refs > 0)
        return;
    if (t->arg_release)
        t->arg_release(t->arg);
    tw_failure_unref(t->failure);
    tw_free(t->done);
    tw_free(t);
}

/* ---- Lists */

static void active_add(tw_cooperator *c, tw_coop_task *t)
{
    t->next = NULL;
    t->prev = c->tail;
    if (c->tail)
        c->tail->next = t;
    else
        c->head = t;
    c->tail = t;
    t->active = true;
    /* A cursor past the tail picks up a task added before the next unit, as
     * Twisted's live list iterator does. */
    if (!c->cursor)
        c->cursor = t;
}

static void active_remove(tw_cooperator *c, tw_coop_task *t)
{
    if (!t->active)
        return;
    if (c->cursor == t)
        c->cursor = t->next;
    if (t->prev)
        t->prev->next = t->next;
    else
        c->head = t->next;
    if (t->next)
        t->next->prev = t->prev;
    else
        c->tail = t->prev;
    t->prev = t->next = NULL;
    t->active = false;
}

static void member_add(tw_cooperator *c, tw_coop_task *t)
{
    t->mnext = NULL;
    t->mprev = c->mtail;
    if (c->mtail)
        c->mtail->mnext = t;
    else
        c->mhead = t;
    c->mtail = t;
    t->member = true;
    t->gen = c->gen;
    c->members++;
}

static void member_remove(tw_cooperator *c, tw_coop_task *t)
{
    if (!t->member)
        return;
    if (t->mprev)
        t->mprev->mnext = t->mnext;
    else
        c->mhead = t->mnext;
    if (t->mnext)
        t->mnext->mprev = t->mprev;
    else
        c->mtail = t->mprev;
    t->mprev = t->mnext = NULL;
    t->member = false;
    c->members--;
}

/* ---- Finishing */

static bool finished(const tw_coop_task *t)
{
    return t->end != TW_TASK_RUNNING;
}

static tw_result done_result(tw_coop_task *t)
{
    if (t->end == TW_TASK_DONE)
        return tw_result_borrowed(t->arg);
    return tw_result_fail(tw_failure_ref(t->failure));
}

/* _completeWith: leaves the cooperator first, then fires the when_done
 * deferreds (whose callbacks may do anything to the cooperator). failure is
 * taken over (NULL for done). */
static void complete(tw_coop_task *t, tw_coop_task_state end, tw_failure *failure)
{
    if (finished(t)) {
        tw_failure_unref(failure);
        return;
    }
    t->end = end;
    t->failure = failure;
    tw_cooperator *c = t->coop;
    t->coop = NULL;
    t->refs++;
    bool was_member = t->member;
    if (c) {
        active_remove(c, t);
        member_remove(c, t);
        if (!c->head && !c->in_tick)
            tw_timer_stop(&c->timer); /* no work left */
    }
    /* Deferreds asked for while these fire are fired at once (finished). */
    for (size_t i = 0; i < t->ndone; i++) {
        tw_deferred *d = t->done[i];
        t->done[i] = NULL;
        tw_deferred_callback(d, done_result(t));
        tw_deferred_unref(d);
    }
    t->ndone = 0;
    if (was_member)
        task_unref(t); /* the cooperator's */
    task_unref(t);
}

static tw_failure *scheduler_stopped(void)
{
    return tw_failure_new(TW_ESHUTDOWN, NULL, "the cooperator was stopped (SchedulerStopped)");
}

/* ---- Scheduling */

/* Arms the tick if there is work and none is armed. Returns 0 or TW_ENOMEM
 * (the clock could not grow its heap). */
static int reschedule(tw_cooperator *c)
{
    if (!c->started || c->stopped || c->in_tick || !c->head || tw_timer_active(&c->timer))
        return 0;
    return tw_timer_start(&c->timer, c->tick_delay);
}

/* Work that cannot be scheduled would never run: the active tasks fail. */
static void reschedule_or_fail(tw_cooperator *c)
{
    int rc = reschedule(c);
    if (rc == 0)
        return;
    tw_log_error(NS, "cooperator: cannot schedule a tick (%s): failing its running tasks",
                 tw_strerror(rc));
    c->refs++;
    while (c->head)
        complete(c->head, TW_TASK_FAILED,
                 tw_failure_new(rc, NULL, "the cooperator could not schedule a tick"));
    coop_unref(c);
}

/* Puts the task in the round robin if it may run, or takes it out. */
static void update_active(tw_coop_task *t)
{
    tw_cooperator *c = t->coop;
    if (!c)
        return;
    bool runnable = !finished(t) && t->pauses == 0 && !t->awaited;
    if (runnable && !t->active) {
        if (c->stopped) {
            complete(t, TW_TASK_STOPPED, scheduler_stopped());
            return;
        }
        active_add(c, t);
        reschedule_or_fail(c);
    } else if (!runnable && t->active) {
        active_remove(c, t);
        if (!c->head && !c->in_tick)
            tw_timer_stop(&c->timer);
    }
}

/* ---- Units of work */

static tw_result awaited_fired(tw_result r, void *arg)
{
    tw_coop_task *t = arg;
    t->awaited = NULL;
    if (r.failure && !finished(t)) {
        complete(t, TW_TASK_FAILED, r.failure);
        return tw_result_borrowed(NULL);
    }
    tw_result_release(&r);
    update_active(t);
    return tw_result_borrowed(NULL);
}

/* The pair is done with: if it never ran, the deferred was released unfired
 * and the task would wait forever. */
static void awaited_pair_done(void *arg)
{
    tw_coop_task *t = arg;
    if (t->awaited) {
        t->awaited = NULL;
        complete(t, TW_TASK_FAILED,
                 tw_failure_new(TW_ECANCELED, NULL,
                                "the deferred a cooperative task returned was released "
                                "without firing"));
    }
    task_unref(t);
}

static void run_unit(tw_coop_task *t)
{
    t->refs++;
    tw_result r = t->fn(t->arg);
    if (finished(t)) {
        /* Stopped from inside its own unit: what it returned is not looked at. */
        tw_result_release(&r);
    } else if (r.failure) {
        complete(t, TW_TASK_FAILED, r.failure);
    } else if (r.value == &tw__iter_done_tag && r.release == NULL) {
        complete(t, TW_TASK_DONE, NULL);
    } else if (tw_result_is_deferred(r)) {
        tw_deferred *d = r.value;
        t->awaited = d;
        update_active(t);
        t->refs++;
        int rc = tw_deferred_add_callbacks(d, awaited_fired, awaited_fired, t, awaited_pair_done);
        if (rc < 0) {
            t->refs--;
            t->awaited = NULL;
            complete(t, TW_TASK_FAILED,
                     tw_failure_new(rc, NULL, "cannot wait for the deferred a task returned"));
        }
        tw_result_release(&r); /* its chain holds the task now */
    } else {
        tw_result_release(&r);
    }
    task_unref(t);
}

static bool tick_is_over(tw_cooperator *c, size_t units, uint64_t end_ns)
{
    if (c->tick_over)
        return c->tick_over(c->tick_over_arg, units);
    return tw_monotonic_ns() >= end_ns;
}

static void tick(tw_timer *timer)
{
    tw_cooperator *c = container_of(timer, tw_cooperator, timer);
    c->refs++;
    c->in_tick = true;
    uint64_t end_ns = tw_monotonic_ns() + c->slice_ns;
    size_t units = 0;
    while (c->head && !c->stopped) {
        tw_coop_task *t = c->cursor ? c->cursor : c->head;
        c->cursor = t->next;
        run_unit(t);
        if (tick_is_over(c, ++units, end_ns))
            break;
    }
    c->in_tick = false;
    reschedule_or_fail(c);
    coop_unref(c);
}

/* ---- Cooperator */

int tw_cooperator_new(tw_clock *clock, const tw_cooperator_options *options, tw_cooperator **out)
{
    tw_cooperator_options o = options ? *options : (tw_cooperator_options){0};
    if (!clock || !out || !(o.slice >= 0) || isinf(o.slice) || !(o.tick_delay >= 0) ||
        isinf(o.tick_delay))
        return TW_EINVAL;
    tw_cooperator *c = tw_calloc(1, sizeof *c);
    if (!c)
        return TW_ENOMEM;
    c->refs = 1;
    c->clock = clock;
    tw_timer_init(&c->timer, clock, tick);
    double slice = o.slice > 0 ? o.slice : DEFAULT_SLICE;
    c->slice_ns = slice >= 1e9 ? UINT64_C(1) << 62 : (uint64_t)(slice * 1e9 + 0.5);
    c->tick_delay = o.tick_delay > 0 ? o.tick_delay : DEFAULT_TICK_DELAY;
    c->tick_over = o.tick_over;
    c->tick_over_arg = o.tick_over_arg;
    c->started = !o.not_started;
    *out = c;
    return 0;
}

void tw_cooperator_free(tw_cooperator *c)
{
    if (!c || c->freed)
        return;
    c->freed = true; /* before the callbacks stop runs: they may free it again */
    c->refs++;
    tw_cooperator_stop(c);
    tw_timer_stop(&c->timer);
    coop_unref(c);
    coop_unref(c);
}

void tw_cooperator_start(tw_cooperator *c)
{
    if (!c || c->freed)
        return;
    c->stopped = false;
    c->started = true;
    c->gen++;
    reschedule_or_fail(c);
}

void tw_cooperator_stop(tw_cooperator *c)
{
    if (!c)
        return;
    c->stopped = true;
    tw_timer_stop(&c->timer);
    /* Only the tasks there now: a callback may start the cooperator again and
     * add new ones, which join later generations at the tail. */
    uint64_t gen = c->gen;
    c->refs++;
    while (c->mhead && c->mhead->gen <= gen)
        complete(c->mhead, TW_TASK_STOPPED, scheduler_stopped());
    coop_unref(c);
}

bool tw_cooperator_running(const tw_cooperator *c)
{
    return c && c->started && !c->stopped;
}

size_t tw_cooperator_tasks(const tw_cooperator *c)
{
    return c ? c->members : 0;
}

/* ---- Tasks */

/* Adds a task; with `done`, also a when_done deferred, allocated before
 * anything is visible. */
static int task_add(tw_cooperator *c, tw_iter_fn fn, void *arg, tw_release_fn arg_release,
                    tw_coop_task **out, tw_deferred **done)
{
    if (!c || !fn || c->freed)
        return TW_EINVAL;
    tw_coop_task *t = tw_calloc(1, sizeof *t);
    if (!t)
        return TW_ENOMEM;
    t->refs = 1 + (out != NULL);
    t->fn = fn;
    t->arg = arg;
    t->coop = c;
    if (done) {
        t->done = tw_malloc(4 * sizeof *t->done);
        *done = t->done ? tw_deferred_new(NULL, NULL) : NULL;
        if (!*done) {
            tw_free(t->done);
            tw_free(t);
            return TW_ENOMEM;
        }
        t->capdone = 4;
        t->ndone = 1;
        t->done[0] = tw_deferred_ref(*done);
    }
    if (c->stopped) {
        /* Cooperator._addTask on a stopped cooperator: it fails at once. */
        t->arg_release = arg_release;
        if (out)
            *out = t;
        complete(t, TW_TASK_STOPPED, scheduler_stopped());
        task_unref(t); /* the reference a member would have given the cooperator */
        return 0;
    }
    member_add(c, t);
    active_add(c, t);
    int rc = reschedule(c);
    if (rc < 0) {
        active_remove(c, t);
        member_remove(c, t);
        if (done) {
            tw_deferred_unref(t->done[0]);
            tw_deferred_unref(*done);
        }
        tw_free(t->done);
        tw_free(t);
        return rc;
    }
    t->arg_release = arg_release;
    if (out)
        *out = t;
    return 0;
}

int tw_cooperate(tw_cooperator *c, tw_iter_fn fn, void *arg, tw_release_fn arg_release,
                 tw_coop_task **out)
{
    return task_add(c, fn, arg, arg_release, out, NULL);
}

tw_deferred *tw_coiterate(tw_cooperator *c, tw_iter_fn fn, void *arg, tw_release_fn arg_release)
{
    tw_deferred *done = NULL;
    int rc = task_add(c, fn, arg, arg_release, NULL, &done);
    if (rc == TW_EINVAL)
        return tw_fail(tw_failure_new(TW_EINVAL, NULL, "tw_coiterate: %s",
                                      c && fn ? "the cooperator was freed" : "NULL argument"));
    return rc < 0 ? NULL : done;
}

tw_deferred *tw_coop_task_when_done(tw_coop_task *t)
{
    if (!t)
        return tw_fail(tw_failure_new(TW_EINVAL, NULL, "tw_coop_task_when_done: NULL task"));
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    if (!d)
        return NULL;
    if (finished(t)) {
        tw_deferred_callback(d, done_result(t));
        return d;
    }
    if (t->ndone == t->capdone) {
        size_t cap = t->capdone ? t->capdone * 2 : 4;
        tw_deferred **grown = tw_realloc(t->done, cap * sizeof *grown);
        if (!grown) {
            tw_deferred_unref(d);
            return NULL;
        }
        t->done = grown;
        t->capdone = cap;
    }
    t->done[t->ndone++] = tw_deferred_ref(d);
    return d;
}

int tw_coop_task_pause(tw_coop_task *t)
{
    if (!t || finished(t))
        return TW_EINVAL;
    t->pauses++;
    update_active(t);
    return 0;
}

int tw_coop_task_resume(tw_coop_task *t)
{
    if (!t)
        return TW_EINVAL;
    if (t->pauses == 0)
        return TW_EPAUSED;
    t->pauses--;
    update_active(t);
    return 0;
}

int tw_coop_task_stop(tw_coop_task *t)
{
    if (!t || finished(t))
        return TW_EINVAL;
    complete(t, TW_TASK_STOPPED,
             tw_failure_new(TW_ECANCELED, NULL, "the task was stopped (TaskStopped)"));
    return 0;
}

tw_coop_task_state tw_coop_task_state_of(const tw_coop_task *t)
{
    if (finished(t))
        return t->end;
    return t->active || (t->pauses == 0 && !t->awaited) ? TW_TASK_RUNNING : TW_TASK_PAUSED;
}

void tw_coop_task_unref(tw_coop_task *t)
{
    if (t)
        task_unref(t);
}
