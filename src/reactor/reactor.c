/* The loop: run/stop/crash/iterate, system event triggers, the fd API.
 *
 * One iteration (iterate_once):
 *   refresh the clock, run due timers,
 *   poll for I/O, waiting at most min(requested, next timer) — 0 when
 *   cross-thread calls are queued or the run loop has work of its own —
 *   refresh the clock as soon as the wait returns (the backend does, through
 *   tw__reactor_woke), and dispatch the I/O,
 *   run due timers, run the queued cross-thread calls.
 * So every callback sees the time it was woken at, never the time from
 * before a wait: a timeout armed from one runs its full length.
 *
 * run() wraps iterations in the startup and shutdown events. Each event fires
 * Twisted's three phases: before triggers run, the deferreds they return are
 * waited for (by iterating the loop, so timers and I/O go on), then during and
 * after triggers run. Triggers are consumed by firing, as in Twisted. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <twine/alloc.h>
#include <twine/deferred.h>
#include <twine/error.h>
#include <twine/log.h>

#include "reactor/completion.h"
#include "reactor/reactor-internal.h"

#ifdef TWINE_HAVE_VALGRIND_H
#include <valgrind/valgrind.h>
#endif

#define NS "twine.reactor"

struct tw__trigger {
    struct tw__trigger *next;
    tw_trigger_id id;
    tw_trigger_phase phase;
    tw_trigger_event event;
    tw_trigger_fn fn;
    void (*call)(void *arg); /* call_when_running: a trigger returning nothing */
    void *arg;
};

/* A before-phase deferred being waited for. Two references: the event's list
 * (dropped when the event lets go of its deferreds) and the callback pair
 * added to the deferred (dropped through arg_release). */
struct tw__wait {
    struct tw__wait *next;
    struct tw__event *ev; /* NULL once fired, or abandoned by the event */
    tw_deferred *d;       /* our reference, until the event lets go */
    int refs;
};

#ifdef TWINE_HAVE_LIBURING
static const char *const backend_names[] = {"epoll", "poll", "select", "io_uring", NULL};
static const struct tw__backend *const backends[] = {&tw__backend_epoll, &tw__backend_poll,
                                                     &tw__backend_select, &tw__backend_uring};
#define BACKEND_LIST "epoll, poll, select, io_uring"
/* Where the kernel refuses it, tw_reactor_new falls back to epoll. */
#define DEFAULT_BACKEND "io_uring"
#else
static const char *const backend_names[] = {"epoll", "poll", "select", NULL};
static const struct tw__backend *const backends[] = {&tw__backend_epoll, &tw__backend_poll,
                                                     &tw__backend_select};
#define BACKEND_LIST    "epoll, poll, select"
#define DEFAULT_BACKEND "epoll"
#endif

const char *const *tw_reactor_backends(void)
{
    return backend_names;
}

static const char *event_name(tw_trigger_event e)
{
    return e == TW_EVENT_STARTUP ? "startup" : "shutdown";
}

/* ---- Creating and freeing */

/* The backend when none is named. Under valgrind it is epoll: valgrind does
 * not deliver a signal to a thread blocked in io_uring_enter until the call
 * returns, so a loop waiting without a bound would never see SIGINT or SIGTERM
 * (the program could only be killed). A backend named in the options or in
 * TWINE_REACTOR is used as asked. */
static const char *default_backend(void)
{
#if defined(TWINE_HAVE_LIBURING) && defined(TWINE_HAVE_VALGRIND_H)
    if (RUNNING_ON_VALGRIND) {
        tw_log_debug(NS, "running under valgrind, which cannot interrupt io_uring's wait with a "
                         "signal: using epoll");
        return "epoll";
    }
#endif
    return DEFAULT_BACKEND;
}

static int pick_backend(const tw_reactor_options *options, const struct tw__backend **out)
{
    const char *name = options ? options->backend : NULL;
    if (!name || !*name)
        name = getenv("TWINE_REACTOR");
    if (!name || !*name)
        name = default_backend();
    for (size_t i = 0; i < sizeof backends / sizeof backends[0]; i++) {
        if (strcmp(backends[i]->name, name) == 0) {
            *out = backends[i];
            return 0;
        }
    }
    tw_log_error(NS, "unknown reactor backend \"%s\" (this build has " BACKEND_LIST ")", name);
    return TW_EUNKNOWNBACKEND;
}

int tw_reactor_new(tw_reactor **out, const tw_reactor_options *options)
{
    const struct tw__backend *backend;
    int rc = pick_backend(options, &backend);
    if (rc < 0)
        return rc;
    double timeout = options ? options->shutdown_timeout : 0;
    if (isnan(timeout) || timeout < 0)
        return TW_EINVAL;

    tw_reactor *r = tw_calloc(1, sizeof *r);
    if (!r)
        return TW_ENOMEM;
    r->backend = backend;
    r->owner = pthread_self();
    r->triggers_tail = &r->triggers;
    r->shutdown_timeout = timeout > 0 ? timeout : 30.0;
    r->signal_handlers = !(options && options->no_signal_handlers);
    r->startup.which = TW_EVENT_STARTUP;
    r->shutdown.which = TW_EVENT_SHUTDOWN;
    r->handles.prev = r->handles.next = &r->handles;
    r->pool_max = 10;

    rc = pthread_mutex_init(&r->pool_lock, NULL);
    if (rc != 0) {
        tw_free(r);
        return -rc;
    }
    r->clock = tw__clock_new_reactor();
    if (!r->clock) {
        rc = TW_ENOMEM;
        goto fail_clock;
    }
    rc = backend->init(r);
    if (rc == TW_ENOTSUP && backend != &tw__backend_epoll) {
        /* io_uring refused by the kernel (its init logged why). */
        r->backend = backend = &tw__backend_epoll;
        r->cq = NULL;
        rc = backend->init(r);
    }
    if (rc < 0)
        goto fail_backend;
    rc = tw__wakeup_init(r, &r->wakeup);
    if (rc < 0)
        goto fail_wakeup;
    rc = tw__signals_init(r, &r->signals);
    if (rc < 0)
        goto fail_signals;
    *out = r;
    return 0;

fail_signals:
    tw__wakeup_destroy(r, r->wakeup);
fail_wakeup:
    backend->destroy(r);
fail_backend:
    tw__clock_destroy(r->clock);
fail_clock:
    pthread_mutex_destroy(&r->pool_lock);
    tw_free(r->fds);
    tw_free(r);
    return rc;
}

static void event_abandon(tw_reactor *r, struct tw__event *ev);

int tw_reactor_free(tw_reactor *r)
{
    if (!r)
        return 0;
    if (r->run_active || r->dispatch_depth > 0)
        return TW_EBUSY;

    /* Refuse cross-thread calls first: pool workers joined below may still
     * try to call back, and must get TW_ESHUTDOWN. */
    tw__wakeup_close(r->wakeup);
    tw__reactor_pool_shutdown(r, true);
    tw__signals_destroy(r->signals);
    tw__wakeup_destroy(r, r->wakeup);

    event_abandon(r, &r->startup);
    event_abandon(r, &r->shutdown);
    for (struct tw__trigger *t = r->triggers, *next; t; t = next) {
        next = t->next;
        tw_free(t);
    }

    /* Handles and watchers still registered are their owners' memory: just
     * let go of them. */
    while (r->handles.next != &r->handles)
        tw_reactor_remove_handle(r, r->handles.next);
    for (size_t fd = 0; fd < r->fd_cap; fd++) {
        tw_io *io = r->fds[fd];
        if (io) {
            io->reactor = NULL;
            io->events = 0;
            io->backend = 0;
        }
    }
    r->backend->destroy(r);
    tw__clock_destroy(r->clock);
    pthread_mutex_destroy(&r->pool_lock);
    tw_free(r->fds);
    tw_free(r);
    return 0;
}

const char *tw_reactor_backend_name(const tw_reactor *r)
{
    return r->backend->name;
}

tw_clock *tw_reactor_clock(tw_reactor *r)
{
    return r->clock;
}

double tw_reactor_seconds(tw_reactor *r)
{
    tw__clock_update(r->clock);
    return tw_clock_seconds(r->clock);
}

bool tw__reactor_on_owner_thread(const tw_reactor *r)
{
    return pthread_equal(pthread_self(), r->owner);
}

/* ---- Watchers */

void tw_io_init(tw_io *io, int fd, tw_io_fn fn, void *data)
{
    *io = (tw_io){.fd = fd, .fn = fn, .data = data};
}

tw_io *tw__reactor_io_for_fd(tw_reactor *r, int fd)
{
    if (fd < 0 || (size_t)fd >= r->fd_cap)
        return NULL;
    return r->fds[fd];
}

static int grow_fds(tw_reactor *r, int fd)
{
    if ((size_t)fd < r->fd_cap)
        return 0;
    size_t cap = r->fd_cap ? r->fd_cap : 64;
    while (cap <= (size_t)fd)
        cap *= 2;
    tw_io **fds = tw_realloc(r->fds, cap * sizeof *fds);
    if (!fds)
        return TW_ENOMEM;
    memset(fds + r->fd_cap, 0, (cap - r->fd_cap) * sizeof *fds);
    r->fds = fds;
    r->fd_cap = cap;
    return 0;
}

static void count_user(tw_reactor *r, const tw_io *io, unsigned events, int sign)
{
    if (io->internal)
        return;
    if (events & TW_IO_READ)
        r->readers += (size_t)sign;
    if (events & TW_IO_WRITE)
        r->writers += (size_t)sign;
}

/* Makes io ask for exactly `events`, adding it to or taking it out of the
 * reactor as needed. The kernel is told only when the mask changes. */
static int set_events(tw_reactor *r, tw_io *io, unsigned events)
{
    if (io->reactor && io->reactor != r)
        return TW_EBUSY;
    if (!io->reactor && events == 0)
        return 0;
    if (io->reactor && io->events == events)
        return 0;

    if (!io->reactor) {
        if (io->fd < 0)
            return TW_EBADF;
        int rc = grow_fds(r, io->fd);
        if (rc < 0)
            return rc;
        if (r->fds[io->fd])
            return TW_EEXIST;
        io->backend = 0;
        io->seq = ++r->io_seq;
        rc = r->backend->update(r, io, events);
        if (rc < 0)
            return rc;
        io->reactor = r;
        io->events = events;
        r->fds[io->fd] = io;
        count_user(r, io, events, 1);
        return 0;
    }

    int rc = r->backend->update(r, io, events);
    if (rc < 0 && events != 0)
        return rc;
    /* Taking a watcher out always succeeds: the kernel may have dropped the
     * fd already (closed before removal), which is no reason to keep it. */
    count_user(r, io, io->events, -1);
    count_user(r, io, events, 1);
    io->events = events;
    if (events == 0) {
        io->backend = 0;
        r->fds[io->fd] = NULL;
        io->reactor = NULL;
        r->backend->forget(r, io);
    }
    return 0;
}

static unsigned current_events(tw_reactor *r, const tw_io *io)
{
    return io->reactor == r ? io->events : 0;
}

int tw_reactor_add_reader(tw_reactor *r, tw_io *io)
{
    return set_events(r, io, current_events(r, io) | TW_IO_READ);
}

int tw_reactor_add_writer(tw_reactor *r, tw_io *io)
{
    return set_events(r, io, current_events(r, io) | TW_IO_WRITE);
}

int tw_reactor_remove_reader(tw_reactor *r, tw_io *io)
{
    if (io->reactor && io->reactor != r)
        return TW_EBUSY;
    return set_events(r, io, current_events(r, io) & ~(unsigned)TW_IO_READ);
}

int tw_reactor_remove_writer(tw_reactor *r, tw_io *io)
{
    if (io->reactor && io->reactor != r)
        return TW_EBUSY;
    return set_events(r, io, current_events(r, io) & ~(unsigned)TW_IO_WRITE);
}

int tw__reactor_watch_internal(tw_reactor *r, tw_io *io, unsigned events)
{
    io->internal = true;
    return set_events(r, io, events);
}

int tw__reactor_dispatch_io(tw_reactor *r, tw_io *io, unsigned events)
{
    events &= io->events;
    if (!events)
        return 0;
    if (!io->internal)
        r->iter_events++;
    io->fn(io, events);
    return 1;
}

struct fd_seq {
    int fd;
    uint64_t seq;
};

static int by_seq(const void *a, const void *b)
{
    uint64_t x = ((const struct fd_seq *)a)->seq, y = ((const struct fd_seq *)b)->seq;
    return x < y ? -1 : x > y;
}

static void remove_one(tw_reactor *r, tw_io *io, void (*fn)(tw_io *, void *), void *arg)
{
    set_events(r, io, 0);
    if (fn)
        fn(io, arg);
}

/* Watchers are remembered by (fd, seq), not by pointer: fn may free or remove
 * watchers not yet visited, and a stale pointer must never be followed. */
size_t tw_reactor_remove_all(tw_reactor *r, void (*fn)(tw_io *io, void *arg), void *arg)
{
    size_t n = r->readers + r->writers, removed = 0;
    if (n == 0)
        return 0;
    struct fd_seq *list = tw_malloc(n * sizeof *list);
    if (list) {
        size_t k = 0;
        for (size_t fd = 0; fd < r->fd_cap && k < n; fd++) {
            tw_io *io = r->fds[fd];
            if (io && !io->internal)
                list[k++] = (struct fd_seq){(int)fd, io->seq};
        }
        qsort(list, k, sizeof *list, by_seq);
        for (size_t i = 0; i < k; i++) {
            tw_io *io = tw__reactor_io_for_fd(r, list[i].fd);
            if (io && io->seq == list[i].seq && !io->internal) {
                remove_one(r, io, fn, arg);
                removed++;
            }
        }
        tw_free(list);
    }
    /* Without memory for the list (or for watchers fn added meanwhile):
     * pick the oldest remaining watcher each time. */
    for (;;) {
        tw_io *oldest = NULL;
        for (size_t fd = 0; fd < r->fd_cap; fd++) {
            tw_io *io = r->fds[fd];
            if (io && !io->internal && (!oldest || io->seq < oldest->seq))
                oldest = io;
        }
        if (!oldest)
            break;
        remove_one(r, oldest, fn, arg);
        removed++;
    }
    return removed;
}

/* ---- Triggers */

int tw_reactor_add_trigger(tw_reactor *r, tw_trigger_phase phase, tw_trigger_event event,
                           tw_trigger_fn fn, void *arg, tw_trigger_id *out)
{
    if (!fn || (phase != TW_PHASE_BEFORE && phase != TW_PHASE_DURING && phase != TW_PHASE_AFTER) ||
        (event != TW_EVENT_STARTUP && event != TW_EVENT_SHUTDOWN))
        return TW_EINVAL;
    struct tw__trigger *t = tw_malloc(sizeof *t);
    if (!t)
        return TW_ENOMEM;
    *t = (struct tw__trigger){
        .id = ++r->trigger_seq, .phase = phase, .event = event, .fn = fn, .arg = arg};
    *r->triggers_tail = t;
    r->triggers_tail = &t->next;
    r->trigger_count++;
    if (out)
        *out = t->id;
    return 0;
}

static void unlink_trigger(tw_reactor *r, struct tw__trigger **link)
{
    struct tw__trigger *t = *link;
    *link = t->next;
    if (r->triggers_tail == &t->next)
        r->triggers_tail = link;
    r->trigger_count--;
}

int tw_reactor_remove_trigger(tw_reactor *r, tw_trigger_id id)
{
    for (struct tw__trigger **link = &r->triggers; *link; link = &(*link)->next) {
        if ((*link)->id == id) {
            struct tw__trigger *t = *link;
            unlink_trigger(r, link);
            tw_free(t);
            return 0;
        }
    }
    return TW_ENOENT;
}

/* Takes the first trigger registered for (event, phase) off the list: the
 * caller owns it. Triggers added while a phase fires join the end, so they
 * fire in the same phase (as Twisted's while-loop over the list). */
static struct tw__trigger *pop_trigger(tw_reactor *r, tw_trigger_event event,
                                       tw_trigger_phase phase)
{
    for (struct tw__trigger **link = &r->triggers; *link; link = &(*link)->next) {
        struct tw__trigger *t = *link;
        if (t->event == event && t->phase == phase) {
            unlink_trigger(r, link);
            return t;
        }
    }
    return NULL;
}

static tw_result log_trigger_failure(tw_result result, void *arg)
{
    const struct tw__trigger *t = arg;
    (void)t;
    tw_log_failure(TW_LOG_ERROR, NS, result.failure, "a system event trigger's deferred failed");
    tw_result_release(&result);
    return tw_result_borrowed(NULL);
}

/* A deferred returned outside the before phase: not waited for, but its
 * failure is reported rather than left to surface as "unhandled". */
static void let_go(tw_deferred *d)
{
    tw_deferred_add_errback(d, log_trigger_failure, NULL);
    tw_deferred_unref(d);
}

static void wait_unref(struct tw__wait *w)
{
    if (--w->refs == 0)
        tw_free(w);
}

static void wait_release(void *arg)
{
    wait_unref(arg);
}

static tw_result wait_fired(tw_result result, void *arg)
{
    struct tw__wait *w = arg;
    struct tw__event *ev = w->ev;
    if (ev) {
        if (result.failure && !ev->timed_out)
            tw_log_failure(TW_LOG_ERROR, NS, result.failure,
                           "a before-%s trigger's deferred failed", event_name(ev->which));
        w->ev = NULL;
        ev->waiting--;
    }
    tw_result_release(&result);
    return tw_result_borrowed(NULL);
}

static void event_wait_for(tw_reactor *r, struct tw__event *ev, tw_deferred *d)
{
    struct tw__wait *w = tw_malloc(sizeof *w);
    if (!w) {
        tw_log_error(NS, "out of memory: not waiting for a before-%s trigger's deferred",
                     event_name(ev->which));
        let_go(d);
        return;
    }
    *w = (struct tw__wait){.next = ev->waits, .ev = ev, .d = d, .refs = 2};
    ev->waits = w;
    ev->waiting++;
    if (tw_deferred_add_callbacks(d, wait_fired, wait_fired, w, wait_release) < 0) {
        tw_log_error(NS, "out of memory: not waiting for a before-%s trigger's deferred",
                     event_name(ev->which));
        w->ev = NULL;
        w->refs--; /* the pair that was never added */
        ev->waiting--;
    }
    (void)r;
}

/* Lets go of the event's deferreds (whether or not they fired) and resets it. */
static void event_abandon(tw_reactor *r, struct tw__event *ev)
{
    tw_delayed_call_cancel(ev->timeout);
    ev->timeout = (tw_delayed_call){0};
    while (ev->waits) {
        struct tw__wait *w = ev->waits;
        ev->waits = w->next;
        w->ev = NULL;
        tw_deferred *d = w->d;
        w->d = NULL;
        tw_deferred_unref(d);
        wait_unref(w);
    }
    ev->waiting = 0;
    ev->timed_out = false;
    ev->stage = TW__EV_IDLE;
    (void)r;
}

static void event_timed_out(void *arg)
{
    tw_reactor *r = arg;
    struct tw__event *ev = &r->shutdown;
    ev->timeout = (tw_delayed_call){0};
    if (ev->stage != TW__EV_WAITING || ev->waiting == 0)
        return;
    tw_log_warn(NS,
                "gave up waiting for %zu before-shutdown deferred(s) after %g s "
                "(shutdown_timeout); cancelling them",
                ev->waiting, r->shutdown_timeout);
    ev->timed_out = true;
    for (struct tw__wait *w = ev->waits; w; w = w->next) {
        if (w->ev)
            tw_deferred_cancel(w->d);
    }
    /* A deferred that ignores cancellation (paused, say) is not waited for. */
    for (struct tw__wait *w = ev->waits; w; w = w->next)
        w->ev = NULL;
    ev->waiting = 0;
}

static tw_deferred *run_trigger(struct tw__trigger *t)
{
    if (t->call) {
        t->call(t->arg);
        return NULL;
    }
    return t->fn(t->arg);
}

/* Fires the before phase; the wait and the rest happen in event_progress. */
static void event_begin(tw_reactor *r, struct tw__event *ev)
{
    ev->stage = TW__EV_WAITING;
    ev->timed_out = false;
    struct tw__trigger *t;
    while ((t = pop_trigger(r, ev->which, TW_PHASE_BEFORE))) {
        tw_deferred *d = run_trigger(t);
        tw_free(t);
        if (d)
            event_wait_for(r, ev, d);
    }
    if (ev->which == TW_EVENT_SHUTDOWN && ev->waiting > 0) {
        if (tw_call_later(r->clock, r->shutdown_timeout, event_timed_out, r, &ev->timeout) < 0) {
            /* Shutdown must stay bounded: without a timer, do not wait. */
            tw_log_error(NS, "out of memory: cannot bound the wait for before-shutdown "
                             "deferreds, so not waiting for them");
            event_timed_out(r);
        }
    }
}

static void run_phase(tw_reactor *r, tw_trigger_event event, tw_trigger_phase phase)
{
    struct tw__trigger *t;
    while ((t = pop_trigger(r, event, phase))) {
        tw_deferred *d = run_trigger(t);
        tw_free(t);
        if (d)
            let_go(d);
    }
}

void tw_reactor_add_handle(tw_reactor *r, tw_handle *h, void (*close)(tw_handle *h))
{
    h->close = close;
    h->next = &r->handles;
    h->prev = r->handles.prev;
    h->prev->next = h;
    r->handles.prev = h;
    r->handle_count++;
}

void tw_reactor_remove_handle(tw_reactor *r, tw_handle *h)
{
    if (!h->next)
        return;
    h->prev->next = h->next;
    h->next->prev = h->prev;
    h->prev = h->next = NULL;
    r->handle_count--;
}

/* Declared in src/net/net-internal.h: the reactor only stores the pointer
 * for the transport layer (which cannot add members to the reactor). */
const struct tw__net_hooks *tw__reactor_net_hooks(const tw_reactor *r);
void tw__reactor_set_net_hooks(tw_reactor *r, const struct tw__net_hooks *hooks);

const struct tw__net_hooks *tw__reactor_net_hooks(const tw_reactor *r)
{
    return r->net_hooks;
}

void tw__reactor_set_net_hooks(tw_reactor *r, const struct tw__net_hooks *hooks)
{
    r->net_hooks = hooks;
}

const struct tw__cq_ops *tw__reactor_cq(const tw_reactor *r)
{
    return r->cq;
}

void tw__reactor_count_io(tw_reactor *r, int readers, int writers)
{
    r->cq_readers += (size_t)(ptrdiff_t)readers;
    r->cq_writers += (size_t)(ptrdiff_t)writers;
}

/* disconnectAll. The list is detached first so that handles registered by a
 * close function (a client reconnecting, say) are left for later instead of
 * being closed in an endless loop. */
static void close_handles(tw_reactor *r)
{
    if (r->handles.next == &r->handles)
        return;
    tw_handle pending = {.next = r->handles.next, .prev = r->handles.prev};
    pending.next->prev = &pending;
    pending.prev->next = &pending;
    r->handles.next = r->handles.prev = &r->handles;
    while (pending.next != &pending) {
        tw_handle *h = pending.next;
        h->prev->next = h->next;
        h->next->prev = h->prev;
        h->prev = h->next = NULL;
        r->handle_count--;
        r->dispatch_depth++;
        h->close(h);
        r->dispatch_depth--;
    }
}

static bool event_ready(const struct tw__event *ev)
{
    return ev->stage == TW__EV_WAITING && ev->waiting == 0;
}

static void event_progress(tw_reactor *r, struct tw__event *ev)
{
    if (!event_ready(ev))
        return;
    event_abandon(r, ev); /* every deferred has fired: let go of them */
    ev->stage = TW__EV_DONE;
    if (ev->which == TW_EVENT_STARTUP) {
        if (r->state == TW__STARTING)
            r->state = TW__RUNNING;
        if (r->state == TW__RUNNING)
            r->running = true;
    } else {
        r->running = false;
        close_handles(r);
    }
    run_phase(r, ev->which, TW_PHASE_DURING);
    run_phase(r, ev->which, TW_PHASE_AFTER);
}

int tw_reactor_call_when_running(tw_reactor *r, void (*fn)(void *arg), void *arg)
{
    if (!fn)
        return TW_EINVAL;
    if (r->running)
        return tw_call_later(r->clock, 0, fn, arg, NULL);
    struct tw__trigger *t = tw_malloc(sizeof *t);
    if (!t)
        return TW_ENOMEM;
    *t = (struct tw__trigger){.id = ++r->trigger_seq,
                              .phase = TW_PHASE_AFTER,
                              .event = TW_EVENT_STARTUP,
                              .call = fn,
                              .arg = arg};
    *r->triggers_tail = t;
    r->triggers_tail = &t->next;
    r->trigger_count++;
    return 0;
}

/* ---- Running */

/* True when the run loop has something to do before it may sleep. */
static bool loop_has_work(const tw_reactor *r)
{
    if (!r->run_active)
        return false;
    if (r->crash_asked || event_ready(&r->startup) || event_ready(&r->shutdown))
        return true;
    return r->state == TW__STOPPING && r->shutdown.stage == TW__EV_IDLE;
}

static int64_t seconds_to_ns(double seconds)
{
    if (seconds >= 9.0e9) /* beyond ~285 years: no bound */
        return -1;
    return (int64_t)ceil(seconds * 1e9);
}

/* One iteration; timeout_ns -1 waits for the next event without bound.
 * Returns the number of events and calls dispatched, or -errno from poll. */
static int iterate_once(tw_reactor *r, int64_t timeout_ns)
{
    r->dispatch_depth++;
    r->iter_events = 0;
    tw__clock_update(r->clock);
    size_t n = tw__clock_run_due(r->clock);

    if (tw__wakeup_has_calls(r->wakeup) || loop_has_work(r)) {
        timeout_ns = 0;
    } else {
        int64_t next = tw__clock_timeout_ns(r->clock);
        if (next >= 0 && (timeout_ns < 0 || next < timeout_ns))
            timeout_ns = next;
    }
    /* The backend refreshes the clock when its wait returns. */
    int rc = r->backend->poll(r, timeout_ns);
    if (rc < 0)
        tw_log_error(NS, "%s: waiting for events failed: %s", r->backend->name, tw_strerror(rc));

    n += tw__clock_run_due(r->clock);
    n += tw__wakeup_run(r->wakeup);
    n += r->iter_events;
    r->iter_events = 0;
    r->dispatch_depth--;
    if (rc < 0)
        return rc;
    return n > INT32_MAX ? INT32_MAX : (int)n;
}

int tw_reactor_iterate(tw_reactor *r, double timeout)
{
    if (isnan(timeout) || timeout < 0)
        return TW_EINVAL;
    if (r->dispatch_depth > 0)
        return TW_EBUSY;
    return iterate_once(r, seconds_to_ns(timeout));
}

bool tw_reactor_running(const tw_reactor *r)
{
    return r->running;
}

int tw_reactor_run(tw_reactor *r)
{
    if (r->run_active || r->dispatch_depth > 0)
        return TW_EALREADYRUNNING;
    if (r->state == TW__STOPPED)
        return TW_ENOTRESTARTABLE;

    r->run_active = true;
    r->crash_asked = false;
    r->state = TW__STARTING;
    if (r->signal_handlers) {
        int rc = tw__signals_install_default(r->signals);
        if (rc < 0)
            tw_log_warn(NS, "could not install SIGINT/SIGTERM handlers: %s", tw_strerror(rc));
    }

    r->dispatch_depth++;
    event_begin(r, &r->startup);
    r->dispatch_depth--;
    for (;;) {
        r->dispatch_depth++;
        event_progress(r, &r->startup);
        if (r->state == TW__STOPPING && r->shutdown.stage == TW__EV_IDLE && !r->crash_asked)
            event_begin(r, &r->shutdown);
        event_progress(r, &r->shutdown);
        r->dispatch_depth--;
        if (r->crash_asked || r->shutdown.stage == TW__EV_DONE)
            break;
        /* A poll that fails (it was logged) tends to keep failing: back off
         * rather than spin. */
        if (iterate_once(r, -1) < 0)
            usleep(1000);
    }

    bool stopped = r->state == TW__STOPPING || r->state == TW__STOPPED;
    event_abandon(r, &r->startup);
    event_abandon(r, &r->shutdown);
    if (r->signal_handlers)
        tw__signals_remove_default(r->signals);
    r->running = false;
    r->crash_asked = false;
    r->state = stopped ? TW__STOPPED : TW__IDLE;
    if (stopped)
        tw__reactor_pool_shutdown(r, false);
    r->run_active = false;
    return 0;
}

int tw_reactor_stop(tw_reactor *r)
{
    if (!r->run_active || r->crash_asked || (r->state != TW__STARTING && r->state != TW__RUNNING))
        return TW_ENOTRUNNING;
    r->state = TW__STOPPING;
    return 0;
}

int tw_reactor_crash(tw_reactor *r)
{
    if (!r->run_active || r->crash_asked)
        return TW_ENOTRUNNING;
    r->crash_asked = true;
    r->running = false;
    return 0;
}

void tw_reactor_get_state(tw_reactor *r, tw_reactor_state *out)
{
    *out = (tw_reactor_state){
        .delayed_calls = tw_clock_pending(r->clock),
        .readers = r->readers + r->cq_readers,
        .writers = r->writers + r->cq_writers,
        .signal_watches = tw__signals_count(r->signals),
        .thread_calls = tw__wakeup_pending(r->wakeup),
        .triggers = r->trigger_count,
        .handles = r->handle_count,
    };
    pthread_mutex_lock(&r->pool_lock);
    out->thread_pool_started = r->pool != NULL;
    pthread_mutex_unlock(&r->pool_lock);
}
