/* The reactor's insides, shared by the files of the reactor layer only.
 *
 * Files and what each owns:
 *   reactor.c          the loop, run/stop/crash/iterate, triggers, the fd API
 *   backend-epoll.c    \
 *   backend-poll.c      > one readiness backend each, behind struct tw__backend
 *   backend-select.c   /
 *   backend-uring.c    io_uring: readiness through poll requests, and the
 *                      completion operations of completion.h
 *   clock.c            timers, delayed calls, manual clocks (clock-internal.h)
 *   signal.c           signal watches and the default SIGINT/SIGTERM handling
 *   wakeup.c           tw_reactor_call_from_thread: queue + eventfd wakeup
 *   threadpool.c       tw_threadpool and the reactor's own pool
 */
#ifndef TWINE_SRC_REACTOR_INTERNAL_H
#define TWINE_SRC_REACTOR_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <twine/reactor.h>
#include <twine/thread.h>

#include "reactor/clock-internal.h"

/* ---- The backend seam.
 *
 * Every backend implements readiness: the reactor asks it to watch fds and
 * it reports which are ready. A completion backend (io_uring) implements
 * readiness with poll requests, and also offers the operations of
 * completion.h (multishot accept and receive into shared buffers, send,
 * connect, cancel, close) through r->cq, which transports use when it is set
 * (the readiness backends leave it NULL, and transports then do the same
 * work with readiness plus the syscall). */
struct tw__backend {
    const char *name;
    /* Sets r->backend_state. Returns 0 or a negative error. */
    int (*init)(tw_reactor *r);
    void (*destroy)(tw_reactor *r);
    /* Makes the kernel watch io->fd for `events` (a mask of TW_IO_READ and
     * TW_IO_WRITE; 0: stop watching). io->backend holds what is registered now
     * and is updated by the backend on success. Returns 0 or -errno. */
    int (*update)(tw_reactor *r, tw_io *io, unsigned events);
    /* Waits up to timeout_ns (-1: no bound, 0: do not wait), calls
     * tw__reactor_woke as soon as the wait returns (whatever it returned),
     * then tw__reactor_dispatch_io for each ready watcher. Returns the number
     * of watchers dispatched, 0 on EINTR, or -errno. */
    int (*poll)(tw_reactor *r, int64_t timeout_ns);
    /* io has left the reactor: drop any event for it not yet dispatched in the
     * batch being dispatched now. */
    void (*forget)(tw_reactor *r, tw_io *io);
};

extern const struct tw__backend tw__backend_epoll;
extern const struct tw__backend tw__backend_poll;
extern const struct tw__backend tw__backend_select;
#ifdef TWINE_HAVE_LIBURING
/* Its init returns TW_ENOTSUP (and logs why) where the kernel refuses
 * io_uring; tw_reactor_new then uses epoll. */
extern const struct tw__backend tw__backend_uring;
#endif

/* Called by backends right after each wait for events returns, before any
 * callback runs: refreshes the loop's time. A callback woken by an event then
 * schedules from the moment it was woken; with the time from before the wait,
 * every timeout it armed (a handshake's, a connection's idle time) would be
 * cut short by however long the loop had been idle. One clock read (vDSO, no
 * syscall) per wakeup. */
static inline void tw__reactor_woke(tw_reactor *r);

/* Called by backends: delivers to io the part of `events` it asks for (its
 * io->events); returns 1 if that was not empty and fn ran, else 0. The
 * watcher may be removed or freed inside. */
int tw__reactor_dispatch_io(tw_reactor *r, tw_io *io, unsigned events);

/* The watcher registered for fd, or NULL (poll/select look fds up here). */
tw_io *tw__reactor_io_for_fd(tw_reactor *r, int fd);

/* Adds/removes events of an internal watcher (not counted as a user handle). */
int tw__reactor_watch_internal(tw_reactor *r, tw_io *io, unsigned events);

/* True on the thread that created r. */
bool tw__reactor_on_owner_thread(const tw_reactor *r);

/* ---- Hooks into wakeup.c (call_from_thread). */
struct tw__wakeup;
struct tw__net_hooks;
struct tw__cq_ops;
int tw__wakeup_init(tw_reactor *r, struct tw__wakeup **out);
/* Refuses further calls (TW_ESHUTDOWN) from now on; queued calls stay queued.
 * tw_reactor_free does this before it joins the thread pool, so a worker that
 * calls back during the free gets TW_ESHUTDOWN instead of a freed reactor. */
void tw__wakeup_close(struct tw__wakeup *w);
/* Refuses further calls (TW_ESHUTDOWN), drops the queued ones unrun, frees. */
void tw__wakeup_destroy(tw_reactor *r, struct tw__wakeup *w);
/* Runs the calls queued so far (not those queued while running). */
size_t tw__wakeup_run(struct tw__wakeup *w);
size_t tw__wakeup_pending(struct tw__wakeup *w); /* walks the queue */
bool tw__wakeup_has_calls(struct tw__wakeup *w); /* cheap */
/* Makes the next poll return at once (thread-safe, async-signal-safe). */
void tw__wakeup_poke(struct tw__wakeup *w);

/* A wake fd: an eventfd (both ends the same fd) where there is one, else a
 * non-blocking pipe. Used by wakeup.c and signal.c. open returns 0 or -errno;
 * write is async-signal-safe and preserves errno; drain empties it. */
int tw__wakefd_open(int fds[2]);
void tw__wakefd_close(int fds[2]);
void tw__wakefd_write(int wfd);
void tw__wakefd_drain(int rfd);

/* ---- Hooks into signal.c. */
struct tw__signals;
int tw__signals_init(tw_reactor *r, struct tw__signals **out);
/* Stops every watch of this reactor (logs if any was left) and frees. */
void tw__signals_destroy(struct tw__signals *s);
/* While run is active: SIGINT and SIGTERM call tw_reactor_stop. */
int tw__signals_install_default(struct tw__signals *s);
void tw__signals_remove_default(struct tw__signals *s);
size_t tw__signals_count(const struct tw__signals *s); /* user watches */

/* ---- Hooks into threadpool.c. */
/* Stops and frees the reactor's pool if it was made. At the end of run
 * (freeing false) the loop keeps turning while workers finish, so a worker
 * waiting on the reactor is answered; at free (freeing true) the calls that
 * workers wait on are swept instead: blocked callers get TW_ESHUTDOWN. */
void tw__reactor_pool_shutdown(tw_reactor *r, bool freeing);

/* ---- The reactor itself. */
enum tw__run_state {
    TW__IDLE,     /* never run, or crashed */
    TW__STARTING, /* firing startup */
    TW__RUNNING,
    TW__STOPPING, /* stop asked; shutdown event firing */
    TW__STOPPED,  /* stopped: cannot run again */
};

struct tw__trigger;
struct tw__wait;

/* One system event (startup or shutdown) being fired: the before triggers
 * have run and their deferreds are awaited; then during and after run. */
enum tw__event_stage { TW__EV_IDLE, TW__EV_WAITING, TW__EV_DONE };
struct tw__event {
    tw_trigger_event which;
    enum tw__event_stage stage;
    size_t waiting;          /* before-phase deferreds not fired yet */
    struct tw__wait *waits;  /* every before-phase deferred of this firing */
    tw_delayed_call timeout; /* shutdown only: the bound on the wait */
    bool timed_out;
};

struct tw_reactor {
    const struct tw__backend *backend;
    void *backend_state;
    tw_clock *clock;
    pthread_t owner;

    /* Watchers by fd; fd_cap slots. */
    tw_io **fds;
    size_t fd_cap;
    size_t readers, writers; /* user watchers only */
    uint64_t io_seq;

    enum tw__run_state state;
    bool run_active;         /* inside tw_reactor_run */
    bool crash_asked;        /* run returns after this iteration */
    unsigned dispatch_depth; /* >0 inside a callback of this reactor */

    struct tw__trigger *triggers; /* owned by reactor.c, in order added */
    struct tw__trigger **triggers_tail;
    size_t trigger_count;
    uint64_t trigger_seq;
    double shutdown_timeout;
    bool signal_handlers;
    bool running; /* Twisted's reactor.running: during-startup to during-shutdown */
    struct tw__event startup, shutdown;
    size_t iter_events; /* user events dispatched (iterate's count) */

    struct tw__wakeup *wakeup;
    struct tw__signals *signals;

    tw_handle handles; /* sentinel of the list of registered handles */
    size_t handle_count;
    const struct tw__net_hooks *net_hooks; /* src/net/net-internal.h; opaque here */
    const struct tw__cq_ops *cq;           /* completion.h: set by a completion backend */
    size_t cq_readers, cq_writers;         /* tw__reactor_count_io */

    pthread_mutex_t pool_lock; /* guards pool and pool_max */
    tw_threadpool *pool;
    size_t pool_max;
};

static inline void tw__reactor_woke(tw_reactor *r)
{
    tw__clock_update(r->clock);
}

#endif
