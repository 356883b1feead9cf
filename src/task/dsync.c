/* DeferredLock, DeferredSemaphore and DeferredQueue.
 *
 * The three share one shape: an owner with a line of waiters, each a node
 * holding the deferred it will fire. Handing something over (a token, a
 * value) moves the first waiter from `waiting` to `granted` at once, so the
 * state is right before any user code runs; then drain fires the granted
 * ones, one at a time. A callback that releases or puts again only moves the
 * next waiter to `granted`: the outer drain's loop fires it, so a long line
 * is served in constant stack.
 *
 * A node is freed when its deferred is fired or cancelled. The owner is
 * reference counted: the user's reference, a running drain's, and each run
 * helper in progress, so freeing it from inside a callback, or while a run's
 * function is pending, is safe. */
#include <twine/alloc.h>
#include <twine/dsync.h>
#include <twine/error.h>
#include <twine/failure.h>
#include <twine/log.h>

#include <string.h>

#include "deferred/deferred-internal.h"

enum kind { KIND_LOCK, KIND_SEMAPHORE, KIND_QUEUE };

struct owner;

struct waiter {
    struct waiter *prev, *next;
    struct owner *owner;
    tw_deferred *d;  /* our reference, until fired or cancelled */
    tw_result value; /* queue: the value handed over (granted) */
    bool granted;
};

struct wlist {
    struct waiter *head, *tail;
    size_t n;
};

struct owner {
    enum kind kind;
    unsigned refs;
    bool freed;    /* the user let go: waiters get TW_ECANCELED */
    bool draining; /* a drain loop runs on this owner */
    struct wlist waiting, granted;
};

struct sem {
    struct owner o; /* first: a tw_dlock * / tw_dsemaphore * is this */
    size_t tokens, limit;
};

struct tw_dlock {
    struct sem s;
};

struct tw_dsemaphore {
    struct sem s;
};

struct tw_dqueue {
    struct owner o;
    size_t size, backlog;
    tw_result *ring; /* pending values: count of them from head, wrapping */
    size_t cap, head, count;
};

/* ---- Lists */

static void wl_append(struct wlist *l, struct waiter *w)
{
    w->next = NULL;
    w->prev = l->tail;
    if (l->tail)
        l->tail->next = w;
    else
        l->head = w;
    l->tail = w;
    l->n++;
}

static void wl_remove(struct wlist *l, struct waiter *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        l->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        l->tail = w->prev;
    w->prev = w->next = NULL;
    l->n--;
}

static struct waiter *wl_pop(struct wlist *l)
{
    struct waiter *w = l->head;
    if (w)
        wl_remove(l, w);
    return w;
}

/* ---- Owners */

static void queue_release_values(struct tw_dqueue *q)
{
    for (size_t i = 0; i < q->count; i++)
        tw_result_release(&q->ring[(q->head + i) % q->cap]);
    tw_free(q->ring);
}

static void owner_unref(struct owner *o)
{
    if (--o->refs > 0)
        return;
    if (o->kind == KIND_QUEUE)
        queue_release_values((struct tw_dqueue *)o);
    tw_free(o);
}

static const char *kind_name(enum kind k)
{
    return k == KIND_LOCK        ? "DeferredLock"
           : k == KIND_SEMAPHORE ? "DeferredSemaphore"
                                 : "DeferredQueue";
}

static tw_failure *freed_failure(struct owner *o)
{
    return tw_failure_new(TW_ECANCELED, NULL, "the %s was freed while this waited",
                          kind_name(o->kind));
}

/* Fires the granted waiters, unless a drain already runs (it will). */
static void drain(struct owner *o)
{
    if (o->draining)
        return;
    o->draining = true;
    o->refs++;
    struct waiter *w;
    while ((w = wl_pop(&o->granted))) {
        tw_result r;
        if (o->kind == KIND_QUEUE)
            r = w->value; /* handed over: delivered even after a free */
        else if (o->freed)
            r = tw_result_fail(freed_failure(o));
        else
            r = tw_result_borrowed(o);
        tw_deferred *d = w->d;
        tw_free(w);
        tw_deferred_callback(d, r);
        tw_deferred_unref(d);
    }
    o->draining = false;
    owner_unref(o);
}

/* The user lets go: the waiters in line fail; granted ones are fired by the
 * drain that is running (the only time there are any). */
static void owner_free(struct owner *o)
{
    o->freed = true;
    struct waiter *w;
    while ((w = wl_pop(&o->waiting))) {
        tw_deferred *d = w->d;
        tw_free(w);
        tw_deferred_errback(d, freed_failure(o));
        tw_deferred_unref(d);
    }
    owner_unref(o);
}

static struct waiter *waiter_new(struct owner *o)
{
    struct waiter *w = tw_calloc(1, sizeof *w);
    if (w)
        w->owner = o;
    return w;
}

/* ---- Semaphores (a lock is a semaphore of one token) */

/* A token comes back: to the first waiter, or to the pool. */
static void sem_give(struct sem *s)
{
    struct waiter *w = wl_pop(&s->o.waiting);
    if (w) {
        w->granted = true;
        wl_append(&s->o.granted, w);
        drain(&s->o);
    } else {
        s->tokens++;
    }
}

static void queue_regrant(struct tw_dqueue *q, tw_result value);

/* The canceller of a waiter's deferred: leave the line. A waiter granted but
 * not yet fired gives back what it was handed. Not firing d makes it fail
 * with TW_ECANCELED. */
static void waiter_cancel(tw_deferred *d, void *arg)
{
    struct waiter *w = arg;
    struct owner *o = w->owner;
    bool granted = w->granted;
    tw_result value = w->value;
    wl_remove(granted ? &o->granted : &o->waiting, w);
    tw_free(w);
    tw_deferred_unref(d); /* ours; tw_deferred_cancel holds its own */
    if (granted && !o->freed) {
        if (o->kind == KIND_QUEUE)
            queue_regrant((struct tw_dqueue *)o, value);
        else
            sem_give((struct sem *)o);
    } else if (granted) {
        tw_result_release(&value);
    }
}

static int sem_init(struct sem **out, enum kind kind, size_t tokens)
{
    struct sem *s =
        tw_calloc(1, kind == KIND_LOCK ? sizeof(struct tw_dlock) : sizeof(struct tw_dsemaphore));
    if (!s)
        return TW_ENOMEM;
    s->o.kind = kind;
    s->o.refs = 1;
    s->tokens = s->limit = tokens;
    *out = s;
    return 0;
}

/* With `reserve`, the deferred has room for one pair that cannot fail to be
 * added (for the run helpers). */
static tw_deferred *sem_acquire(struct sem *s, bool reserve)
{
    if (s->tokens > 0) {
        tw_deferred *d = tw_deferred_new(NULL, NULL);
        if (!d)
            return NULL;
        if (reserve && tw__deferred_reserve(d) < 0) {
            tw_deferred_unref(d);
            return NULL;
        }
        s->tokens--;
        tw_deferred_callback(d, tw_result_borrowed(s)); /* no callbacks yet: no user code */
        return d;
    }
    struct waiter *w = waiter_new(&s->o);
    if (!w)
        return NULL;
    tw_deferred *d = tw_deferred_new(waiter_cancel, w);
    if (!d || (reserve && tw__deferred_reserve(d) < 0)) {
        tw_deferred_unref(d);
        tw_free(w);
        return NULL;
    }
    w->d = tw_deferred_ref(d);
    wl_append(&s->o.waiting, w);
    return d;
}

static int sem_release(struct sem *s)
{
    if (s->tokens >= s->limit) {
        if (s->o.kind == KIND_LOCK)
            tw_log_error("twine.task", "tw_dlock_release: the lock is not locked");
        else
            tw_log_error("twine.task",
                         "tw_dsemaphore_release: released more times than acquired (%zu tokens)",
                         s->limit);
        return TW_EINVAL;
    }
    sem_give(s);
    return 0;
}

/* ---- The run helper (_ConcurrencyPrimitive.run) */

struct run {
    unsigned refs; /* the execute pair, and the release pair once added */
    struct sem *s; /* held */
    tw_dsync_fn fn;
    void *arg;
    bool holding; /* fn ran and its token is not given back yet */
};

static void run_give_back(struct run *run)
{
    if (!run->holding)
        return;
    run->holding = false;
    if (!run->s->o.freed)
        sem_release(run->s);
}

static void run_unref(void *arg)
{
    struct run *run = arg;
    if (--run->refs > 0)
        return;
    /* fn's deferred was released unfired: nobody can give the token back
     * later, so it goes back now rather than never. */
    run_give_back(run);
    owner_unref(&run->s->o);
    tw_free(run);
}

static tw_result run_release(tw_result r, void *arg)
{
    run_give_back(arg);
    return r;
}

static tw_result run_execute(tw_result r, void *arg)
{
    struct run *run = arg;
    tw_result_release(&r); /* the borrowed semaphore */
    run->holding = true;
    tw_result out = run->fn(run->arg);
    if (!tw_result_is_deferred(out)) {
        run_give_back(run);
        return out;
    }
    run->refs++;
    if (tw_deferred_add_callbacks(out.value, run_release, run_release, run, run_unref) < 0) {
        run->refs--;
        run_give_back(run);
        tw_result_release(&out); /* its chain goes on without us */
        return tw_result_fail(
            tw_failure_new(TW_ENOMEM, NULL, "out of memory: cannot wait for the run's deferred"));
    }
    return out;
}

static tw_deferred *sem_run(struct sem *s, tw_dsync_fn fn, void *arg)
{
    if (!fn)
        return tw_fail(tw_failure_new(TW_EINVAL, NULL, "%s run: fn is NULL", kind_name(s->o.kind)));
    struct run *run = tw_calloc(1, sizeof *run);
    if (!run)
        return NULL;
    tw_deferred *d = sem_acquire(s, true);
    if (!d) {
        tw_free(run);
        return NULL;
    }
    run->refs = 1;
    run->s = s;
    s->o.refs++;
    run->fn = fn;
    run->arg = arg;
    tw__deferred_add_reserved(d, run_execute, NULL, run, run_unref);
    return d;
}

/* ---- DeferredLock */

int tw_dlock_new(tw_dlock **out)
{
    if (!out)
        return TW_EINVAL;
    return sem_init((struct sem **)out, KIND_LOCK, 1);
}

void tw_dlock_free(tw_dlock *lock)
{
    if (lock)
        owner_free(&lock->s.o);
}

tw_deferred *tw_dlock_acquire(tw_dlock *lock)
{
    if (!lock)
        return tw_fail(tw_failure_new(TW_EINVAL, NULL, "tw_dlock_acquire: NULL lock"));
    return sem_acquire(&lock->s, false);
}

int tw_dlock_release(tw_dlock *lock)
{
    return lock ? sem_release(&lock->s) : TW_EINVAL;
}

tw_deferred *tw_dlock_run(tw_dlock *lock, tw_dsync_fn fn, void *arg)
{
    if (!lock)
        return tw_fail(tw_failure_new(TW_EINVAL, NULL, "tw_dlock_run: NULL lock"));
    return sem_run(&lock->s, fn, arg);
}

bool tw_dlock_locked(const tw_dlock *lock)
{
    return lock && lock->s.tokens == 0;
}

size_t tw_dlock_waiting(const tw_dlock *lock)
{
    return lock ? lock->s.o.waiting.n : 0;
}

/* ---- DeferredSemaphore */

int tw_dsemaphore_new(tw_dsemaphore **out, size_t tokens)
{
    if (!out || tokens == 0)
        return TW_EINVAL;
    return sem_init((struct sem **)out, KIND_SEMAPHORE, tokens);
}

void tw_dsemaphore_free(tw_dsemaphore *sem)
{
    if (sem)
        owner_free(&sem->s.o);
}

tw_deferred *tw_dsemaphore_acquire(tw_dsemaphore *sem)
{
    if (!sem)
        return tw_fail(tw_failure_new(TW_EINVAL, NULL, "tw_dsemaphore_acquire: NULL semaphore"));
    return sem_acquire(&sem->s, false);
}

int tw_dsemaphore_release(tw_dsemaphore *sem)
{
    return sem ? sem_release(&sem->s) : TW_EINVAL;
}

tw_deferred *tw_dsemaphore_run(tw_dsemaphore *sem, tw_dsync_fn fn, void *arg)
{
    if (!sem)
        return tw_fail(tw_failure_new(TW_EINVAL, NULL, "tw_dsemaphore_run: NULL semaphore"));
    return sem_run(&sem->s, fn, arg);
}

size_t tw_dsemaphore_tokens(const tw_dsemaphore *sem)
{
    return sem ? sem->s.tokens : 0;
}

size_t tw_dsemaphore_limit(const tw_dsemaphore *sem)
{
    return sem ? sem->s.limit : 0;
}

size_t tw_dsemaphore_waiting(const tw_dsemaphore *sem)
{
    return sem ? sem->s.o.waiting.n : 0;
}

/* ---- DeferredQueue
 *
 * The ring always has room for every pending value plus every granted one
 * (cap >= count + granted.n): a granted get that is cancelled before its
 * deferred fires puts its value back at the front without allocating. Such a
 * value may take the queue past `size`: it had been accepted already. */

static int queue_make_room(tw_dqueue *q, size_t need)
{
    if (q->cap >= need)
        return 0;
    size_t cap = q->cap ? q->cap * 2 : 8;
    while (cap < need)
        cap *= 2;
    tw_result *ring = tw_calloc(cap, sizeof *ring);
    if (!ring)
        return TW_ENOMEM;
    for (size_t i = 0; i < q->count; i++)
        ring[i] = q->ring[(q->head + i) % q->cap];
    tw_free(q->ring);
    q->ring = ring;
    q->cap = cap;
    q->head = 0;
    return 0;
}

static void queue_push_back(tw_dqueue *q, tw_result v)
{
    q->ring[(q->head + q->count) % q->cap] = v;
    q->count++;
}

static tw_result queue_pop_front(tw_dqueue *q)
{
    tw_result v = q->ring[q->head];
    q->ring[q->head] = (tw_result){0};
    q->head = (q->head + 1) % q->cap;
    q->count--;
    return v;
}

/* Hands value to the first waiter (room was made). */
static void queue_grant(tw_dqueue *q, struct waiter *w, tw_result value)
{
    w->granted = true;
    w->value = value;
    wl_append(&q->o.granted, w);
    drain(&q->o);
}

static void queue_regrant(tw_dqueue *q, tw_result value)
{
    struct waiter *w = wl_pop(&q->o.waiting);
    if (w) {
        queue_grant(q, w, value);
        return;
    }
    q->head = (q->head + q->cap - 1) % q->cap;
    q->ring[q->head] = value;
    q->count++;
}

int tw_dqueue_new(tw_dqueue **out, size_t size, size_t backlog)
{
    if (!out)
        return TW_EINVAL;
    tw_dqueue *q = tw_calloc(1, sizeof *q);
    if (!q)
        return TW_ENOMEM;
    q->o.kind = KIND_QUEUE;
    q->o.refs = 1;
    q->size = size;
    q->backlog = backlog;
    *out = q;
    return 0;
}

void tw_dqueue_free(tw_dqueue *q)
{
    if (q)
        owner_free(&q->o);
}

int tw_dqueue_put(tw_dqueue *q, tw_result value)
{
    if (!q || tw_result_is_deferred(value))
        return TW_EINVAL;
    if (!q->o.waiting.n && q->count >= q->size)
        return TW_ELIMIT;
    if (queue_make_room(q, q->count + q->o.granted.n + 1) < 0)
        return TW_ENOMEM;
    struct waiter *w = wl_pop(&q->o.waiting);
    if (w)
        queue_grant(q, w, value);
    else
        queue_push_back(q, value);
    return 0;
}

tw_deferred *tw_dqueue_get(tw_dqueue *q)
{
    if (!q)
        return tw_fail(tw_failure_new(TW_EINVAL, NULL, "tw_dqueue_get: NULL queue"));
    if (q->count) {
        tw_deferred *d = tw_deferred_new(NULL, NULL);
        if (d)
            tw_deferred_callback(d, queue_pop_front(q));
        return d;
    }
    if (q->o.waiting.n >= q->backlog)
        return tw_fail(tw_failure_new(TW_ELIMIT, NULL,
                                      "DeferredQueue underflow: %zu gets are waiting already "
                                      "(backlog %zu)",
                                      q->o.waiting.n, q->backlog));
    struct waiter *w = waiter_new(&q->o);
    if (!w)
        return NULL;
    tw_deferred *d = tw_deferred_new(waiter_cancel, w);
    if (!d) {
        tw_free(w);
        return NULL;
    }
    w->d = tw_deferred_ref(d);
    wl_append(&q->o.waiting, w);
    return d;
}

tw_deferred *tw_dqueue_run(tw_dqueue *q, tw_callback_fn fn, void *arg)
{
    if (!q || !fn)
        return tw_fail(
            tw_failure_new(TW_EINVAL, NULL, "tw_dqueue_run: NULL %s", q ? "fn" : "queue"));
    if (q->count) {
        /* fn is in place before the value is taken: running out of memory
         * takes nothing from the queue. */
        tw_deferred *d = tw_deferred_new(NULL, NULL);
        if (!d)
            return NULL;
        if (tw_deferred_add_callback(d, fn, arg) < 0) {
            tw_deferred_unref(d);
            return NULL;
        }
        tw_deferred_callback(d, queue_pop_front(q));
        return d;
    }
    tw_deferred *d = tw_dqueue_get(q); /* waiting, or failed by the backlog */
    if (d && tw_deferred_add_callback(d, fn, arg) < 0) {
        tw_deferred_cancel(d); /* leaves the line: no value was handed to it */
        tw_deferred_unref(d);
        return NULL;
    }
    return d;
}

size_t tw_dqueue_pending(const tw_dqueue *q)
{
    return q ? q->count : 0;
}

size_t tw_dqueue_waiting(const tw_dqueue *q)
{
    return q ? q->o.waiting.n : 0;
}
