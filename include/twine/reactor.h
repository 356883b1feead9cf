/* The reactor (twisted.internet.reactor): one event loop per thread, passed
 * explicitly; there is no global reactor.
 *
 * Backends: "io_uring" (the default where the build has liburing), "epoll"
 * (the default without), "poll", "select" — picked by
 * tw_reactor_options.backend, else by TWINE_REACTOR=io_uring|epoll|poll|select,
 * else the default. Every backend behaves the same at this interface. Where
 * the kernel refuses io_uring (disabled by sysctl, seccomp, too old, no
 * lockable memory for a ring under RLIMIT_MEMLOCK), asking
 * for it (or defaulting to it) gives an epoll reactor and one log line
 * saying why; tw_reactor_backend_name tells which one runs.
 *
 * Threads: everything here must be called on the reactor's thread (the one
 * that created it), except what thread.h documents as thread-safe.
 *
 * Re-entrancy: any callback may stop the reactor, add or remove watchers and
 * timers, or free the object it was called on (after removing it from the
 * reactor); the reactor never touches a removed watcher again. */
#ifndef TWINE_REACTOR_H
#define TWINE_REACTOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <twine/clock.h>

typedef struct tw_reactor tw_reactor;
typedef struct tw_deferred tw_deferred;

typedef struct tw_reactor_options {
    /* NULL: $TWINE_REACTOR, else io_uring (epoll where the kernel refuses it,
     * or under valgrind, which cannot interrupt io_uring's wait with a signal) */
    const char *backend;
    bool no_signal_handlers; /* true: SIGINT/SIGTERM do not stop a running reactor */
    double shutdown_timeout; /* bound on waiting for before-shutdown deferreds; 0: 30 s */
} tw_reactor_options;

/* Makes a reactor; options may be NULL. Returns 0 and *out, TW_EUNKNOWNBACKEND
 * (and logs the name) for a backend that does not exist, TW_EINVAL for a
 * negative or NaN shutdown_timeout, TW_ENOMEM, or -errno from the kernel
 * (epoll_create1, eventfd). */
int tw_reactor_new(tw_reactor **out, const tw_reactor_options *options);

/* Frees the reactor. Returns TW_EBUSY (and frees nothing) while it runs or
 * from inside one of its callbacks. Watchers still added are dropped (their
 * memory is theirs; they are left out of any reactor, free to be re-added
 * elsewhere); pending delayed calls, triggers and cross-thread calls are
 * dropped without running; the thread pool is stopped and joined (a worker
 * blocked in tw_blocking_call_from_thread is woken with TW_ESHUTDOWN, see
 * thread.h). NULL is ignored (returns 0). */
int tw_reactor_free(tw_reactor *r);

const char *tw_reactor_backend_name(const tw_reactor *r);
/* The names of the backends this build has, NULL-terminated. */
const char *const *tw_reactor_backends(void);

/* The reactor's clock, for tw_call_later and everything timed. */
tw_clock *tw_reactor_clock(tw_reactor *r);
/* Current monotonic time in seconds (reads the system clock and refreshes the
 * cached loop time). */
double tw_reactor_seconds(tw_reactor *r);

/* ---- Running (run, stop, crash, iterate, callWhenRunning) */

/* Fires the startup event (before, during, after triggers; calls added with
 * call_when_running run then), then loops until stopped or crashed. With
 * signal handlers on, SIGINT and SIGTERM stop it (installed for the duration
 * of run). Returns 0 after a stop or crash; TW_EALREADYRUNNING if it is
 * running; TW_ENOTRESTARTABLE once it has been stopped (a crashed reactor may
 * run again, as in Twisted). */
int tw_reactor_run(tw_reactor *r);

/* Asks a running reactor to stop: on its next iteration the shutdown event
 * fires (before triggers, waiting for their deferreds up to the shutdown
 * timeout; then during, then after triggers), the thread pool is stopped
 * (the loop answering calls from its workers until they finish, see
 * thread.h), and run returns. Returns 0, or TW_ENOTRUNNING if it is not running or
 * already stopping (and logs nothing: stopping twice is a common, harmless
 * race with signals). */
int tw_reactor_stop(tw_reactor *r);

/* Makes run return after the current iteration, firing no shutdown event.
 * Returns 0 or TW_ENOTRUNNING (not running, or crashed already). A crashed
 * reactor may run again: the startup event then fires again, with whatever
 * startup triggers are registered by then. A crash after a stop still leaves
 * the reactor stopped (not restartable). */
int tw_reactor_crash(tw_reactor *r);

/* Runs one iteration: due timers, then waits up to `timeout` seconds (0: just
 * poll; INFINITY: no bound) for I/O and dispatches it, then due timers and
 * cross-thread calls. The wait ends early at the next timer, and is 0 when
 * cross-thread calls are queued. Works whether or not run is active (not from
 * inside a callback of this reactor: TW_EBUSY). Returns the number of timers,
 * fd events, signal deliveries and cross-thread calls dispatched (the
 * reactor's own internal wakeups are not counted), or an error (TW_EINVAL for
 * a negative or NaN timeout). */
int tw_reactor_iterate(tw_reactor *r, double timeout);

/* Twisted's reactor.running: true from the during-startup phase until the
 * during-shutdown phase (so still true in before-shutdown triggers), or until
 * a crash. */
bool tw_reactor_running(const tw_reactor *r);

/* Calls fn(arg) once the reactor runs: at the after-startup phase (in order
 * with the after-startup triggers; it counts as one in tw_reactor_state), or
 * on the next iteration if it runs already (as a delayed call of 0 s).
 * Returns 0, TW_EINVAL for a NULL fn, or TW_ENOMEM. */
int tw_reactor_call_when_running(tw_reactor *r, void (*fn)(void *arg), void *arg);

/* ---- System event triggers (addSystemEventTrigger) */

typedef enum tw_trigger_phase { TW_PHASE_BEFORE, TW_PHASE_DURING, TW_PHASE_AFTER } tw_trigger_phase;
typedef enum tw_trigger_event { TW_EVENT_STARTUP, TW_EVENT_SHUTDOWN } tw_trigger_event;

/* A trigger returns NULL or a new reference to a deferred. In the before phase
 * the event waits for every returned deferred (for shutdown: at most the
 * shutdown timeout, after which they are cancelled and the wait is logged);
 * in other phases a returned deferred is not waited for. A failure from such a
 * deferred is logged and does not stop the event. While an event waits, the
 * loop goes on (timers, I/O). Firing an event consumes its triggers, as in
 * Twisted; a before trigger added while the before phase fires runs in it. */
typedef tw_deferred *(*tw_trigger_fn)(void *arg);
typedef uint64_t tw_trigger_id;

/* Returns 0 and, if out is not NULL, an id for removal; TW_EINVAL; TW_ENOMEM. */
int tw_reactor_add_trigger(tw_reactor *r, tw_trigger_phase phase, tw_trigger_event event,
                           tw_trigger_fn fn, void *arg, tw_trigger_id *out);
/* Returns 0, or TW_ENOENT if the id is not (or no longer: fired) registered. */
int tw_reactor_remove_trigger(tw_reactor *r, tw_trigger_id id);

/* ---- Watching file descriptors (IReactorFDSet)
 *
 * A tw_io is a watcher the caller embeds in its own struct. Readiness is
 * level-triggered: fn runs on every iteration while the fd is ready for an
 * event the watcher asks for. Errors and hang-ups are reported as readable
 * and/or writable (whichever is asked for), so the next read or write sees
 * the error. One watcher per fd per reactor. */

enum { TW_IO_READ = 1, TW_IO_WRITE = 2 };

typedef struct tw_io tw_io;
/* events: TW_IO_READ and/or TW_IO_WRITE that are ready, never 0. */
typedef void (*tw_io_fn)(tw_io *io, unsigned events);

struct tw_io {
    int fd;
    tw_io_fn fn;
    void *data; /* for the owner */
    /* Private. */
    tw_reactor *reactor;
    unsigned events;  /* asked for: TW_IO_READ | TW_IO_WRITE */
    unsigned backend; /* what the backend has registered */
    uint64_t seq;     /* order added, for remove_all */
    bool internal;    /* the reactor's own (wakeup, signals): not a user handle */
};

/* Prepares a watcher for fd. Does not add it anywhere. */
void tw_io_init(tw_io *io, int fd, tw_io_fn fn, void *data);

/* Start or stop watching for readability / writability. Adding what is
 * already added, or removing what is not, returns 0 and does nothing.
 * Returns TW_EEXIST if another watcher of this reactor watches the fd,
 * TW_EBUSY if io is added to another reactor (removal too), TW_EBADF for a
 * bad fd, TW_EINVAL if select is the backend and fd >= FD_SETSIZE, TW_ENOMEM,
 * or -errno from the kernel (epoll refuses regular files: -EPERM). Removal
 * succeeds even if the fd was closed first. A watcher with neither event left
 * is out of the reactor and may be freed or re-added. */
int tw_reactor_add_reader(tw_reactor *r, tw_io *io);
int tw_reactor_add_writer(tw_reactor *r, tw_io *io);
int tw_reactor_remove_reader(tw_reactor *r, tw_io *io);
int tw_reactor_remove_writer(tw_reactor *r, tw_io *io);

/* Removes every watcher (removeAll) and calls fn(io, arg) for each, in the
 * order they were added (fn may be NULL). Each watcher is out of the reactor
 * when fn sees it; fn may free it, or remove or free watchers not yet visited
 * (those are then skipped). The reactor's own internal watchers stay.
 * Returns how many were removed. */
size_t tw_reactor_remove_all(tw_reactor *r, void (*fn)(tw_io *io, void *arg), void *arg);

/* ---- Signals
 *
 * Watch any signal from the loop: fn runs on the reactor thread, on the next
 * iteration after the signal arrives (several deliveries of one signal between
 * iterations may be merged into one call). Works with several reactors and
 * several watches per signal. SIGKILL, SIGSTOP, the signals the C library
 * reserves, and the fault signals SIGSEGV, SIGBUS, SIGFPE and SIGILL (whose
 * handler returning would only repeat the fault) cannot be watched
 * (TW_EINVAL). A signal's first watch in the process replaces its
 * disposition; the delivery itself runs an async-signal-safe handler that only
 * wakes the reactors watching it. */

typedef struct tw_signal_watch tw_signal_watch;
typedef void (*tw_signal_fn)(tw_reactor *r, int signo, void *arg);

/* Returns 0 and the watch in *out; TW_EINVAL (also for a NULL fn or out);
 * TW_ENOMEM; TW_EBUSY when more than 256 reactors watch signals at once;
 * -errno. */
int tw_reactor_watch_signal(tw_reactor *r, int signo, tw_signal_fn fn, void *arg,
                            tw_signal_watch **out);
/* Stops and frees the watch (also from inside its own callback); when the
 * last watch of a signal in the process goes, the signal's previous
 * disposition is restored. NULL is ignored. Watches left when the reactor is
 * freed are stopped and freed with it (and that is logged). */
void tw_signal_watch_stop(tw_signal_watch *watch);

/* ---- Handles the reactor closes when it shuts down (disconnectAll)
 *
 * Connections and listening ports register a handle for as long as they are
 * open, so that stopping the reactor closes them: in the shutdown event,
 * just before the during-shutdown triggers run, every registered handle is
 * removed and its close function called, in the order they were added (a
 * handle added while this runs is left for later). close then tears its
 * object down at once (a connection loses its queue: TW_ECONNLOST; a port
 * stops listening). A handle is embedded in the object it closes. */
typedef struct tw_handle tw_handle;
struct tw_handle {
    void (*close)(tw_handle *h);
    /* Private. */
    tw_handle *prev, *next;
};
/* Registers h (not registered yet) with its close function. */
void tw_reactor_add_handle(tw_reactor *r, tw_handle *h, void (*close)(tw_handle *h));
/* Unregisters h; does nothing if it is not registered. */
void tw_reactor_remove_handle(tw_reactor *r, tw_handle *h);

/* ---- State, for the dirty-reactor check (testing.h) */

typedef struct tw_reactor_state {
    size_t delayed_calls;  /* pending timers and delayed calls */
    size_t readers;        /* watchers asking for TW_IO_READ */
    size_t writers;        /* watchers asking for TW_IO_WRITE */
    size_t signal_watches; /* tw_signal_watch not stopped */
    size_t thread_calls;   /* cross-thread calls queued, not yet run */
    size_t triggers;       /* system event triggers registered */
    size_t handles;        /* tw_handle registered: open connections and ports */
    bool thread_pool_started;
} tw_reactor_state;

void tw_reactor_get_state(tw_reactor *r, tw_reactor_state *out);

#endif
