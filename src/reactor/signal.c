/* Signal watches, delivered on the loop thread.
 *
 * One process-wide sigaction handler serves every reactor. Each reactor that
 * watches signals holds a slot in a fixed table: its wake fd, the signals it
 * watches and the signals that arrived (bit masks of atomics). The handler
 * only reads and sets bits and writes to wake fds: no locks, no allocation,
 * errno preserved. The reactor's internal watcher on its wake fd then takes
 * the arrived bits and calls the watches.
 *
 * A slot's `busy` count closes the race between the handler (which may run on
 * any thread) and a reactor giving its slot up: the reactor withdraws the fd,
 * then waits until no handler is inside the slot before closing it, so the
 * handler never writes to an fd number that has been closed and reused.
 *
 * Installing and restoring sigactions, and slot ownership, happen under one
 * mutex (never taken by the handler). The previous disposition of a signal is
 * saved when the first watch in the process starts, and restored when the
 * last one stops. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include <twine/alloc.h>
#include <twine/error.h>
#include <twine/log.h>

#include "reactor/reactor-internal.h"

#define NS        "twine.reactor"
#define MAX_SLOTS 256
#define SIG_WORDS ((NSIG + 63) / 64)

_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2 && ATOMIC_INT_LOCK_FREE == 2,
               "the signal handler needs lock-free atomics");

struct slot {
    atomic_int fd;   /* wake fd to write, or -1 */
    atomic_int busy; /* handlers inside this slot now */
    atomic_ullong watched[SIG_WORDS];
    atomic_ullong arrived[SIG_WORDS];
    bool in_use; /* under table_lock */
};

static struct slot slots[MAX_SLOTS];
static atomic_int slots_used; /* high-water mark of slots handed out */
static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    unsigned reactors; /* reactors watching the signal */
    struct sigaction previous;
} installed[NSIG];

struct tw_signal_watch {
    struct tw__signals *owner;
    struct tw_signal_watch *prev, *next;
    int signo;
    tw_signal_fn fn;
    void *arg;
    uint64_t seq;
    bool internal; /* the default SIGINT/SIGTERM stop */
};

struct tw__signals {
    tw_reactor *r;
    int slot; /* -1 until the first watch */
    int fds[2];
    tw_io io;
    struct tw_signal_watch *head, *tail;
    struct tw_signal_watch *cursor; /* next watch to visit while delivering */
    unsigned counts[NSIG];          /* watches per signal, internal included */
    size_t user_watches;
    uint64_t seq;
    struct tw_signal_watch *defaults[2];
};

static void on_signal(int signo)
{
    int saved = errno;
    int used = atomic_load(&slots_used);
    unsigned word = (unsigned)signo / 64;
    unsigned long long bit = 1ull << ((unsigned)signo % 64);
    for (int i = 0; i < used; i++) {
        struct slot *s = &slots[i];
        atomic_fetch_add(&s->busy, 1);
        int fd = atomic_load(&s->fd);
        if (fd >= 0 && (atomic_load(&s->watched[word]) & bit)) {
            atomic_fetch_or(&s->arrived[word], bit);
            tw__wakefd_write(fd);
        }
        atomic_fetch_sub(&s->busy, 1);
    }
    errno = saved;
}

/* Signals a watch may not take: they cannot be caught, glibc keeps them for
 * itself, or they report a fault that returning from a handler would only
 * repeat. */
static bool watchable(int signo)
{
    if (signo <= 0 || signo >= NSIG)
        return false;
    switch (signo) {
    case SIGKILL:
    case SIGSTOP:
    case SIGSEGV:
    case SIGBUS:
    case SIGFPE:
    case SIGILL:
        return false;
    }
#ifdef SIGRTMIN
    if (signo > 31 && signo < SIGRTMIN)
        return false;
#endif
    return true;
}

/* ---- Process-wide state (under table_lock) */

static int install_locked(int signo)
{
    if (installed[signo].reactors++ > 0)
        return 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigfillset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    if (sigaction(signo, &sa, &installed[signo].previous) < 0) {
        installed[signo].reactors--;
        return -errno;
    }
    return 0;
}

static void uninstall_locked(int signo)
{
    if (--installed[signo].reactors > 0)
        return;
    if (sigaction(signo, &installed[signo].previous, NULL) < 0)
        tw_log_warn(NS, "could not restore the disposition of signal %d: %s", signo,
                    strerror(errno));
}

static int take_slot(struct tw__signals *s)
{
    int rc = tw__wakefd_open(s->fds);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&table_lock);
    int i = 0;
    while (i < MAX_SLOTS && slots[i].in_use)
        i++;
    if (i == MAX_SLOTS) {
        pthread_mutex_unlock(&table_lock);
        tw__wakefd_close(s->fds);
        tw_log_error(NS, "more than %d reactors watch signals", MAX_SLOTS);
        return TW_EBUSY;
    }
    struct slot *sl = &slots[i];
    sl->in_use = true;
    for (int w = 0; w < SIG_WORDS; w++) {
        atomic_store(&sl->watched[w], 0);
        atomic_store(&sl->arrived[w], 0);
    }
    atomic_store(&sl->fd, s->fds[1]);
    if (atomic_load(&slots_used) <= i)
        atomic_store(&slots_used, i + 1);
    pthread_mutex_unlock(&table_lock);
    s->slot = i;
    return 0;
}

static void give_slot_back(struct tw__signals *s)
{
    struct slot *sl = &slots[s->slot];
    atomic_store(&sl->fd, -1);
    while (atomic_load(&sl->busy) > 0)
        sched_yield();
    pthread_mutex_lock(&table_lock);
    sl->in_use = false;
    pthread_mutex_unlock(&table_lock);
    s->slot = -1;
}

/* ---- Delivery on the loop thread */

static void deliver(struct tw__signals *s, int signo)
{
    /* Watches added by a callback wait for the next delivery. */
    uint64_t last = s->seq;
    for (struct tw_signal_watch *w = s->head; w; w = s->cursor) {
        s->cursor = w->next;
        if (w->signo != signo || w->seq > last)
            continue;
        if (!w->internal)
            s->r->iter_events++;
        w->fn(s->r, signo, w->arg);
    }
    s->cursor = NULL;
}

static void on_wake(tw_io *io, unsigned events)
{
    struct tw__signals *s = io->data;
    (void)events;
    tw__wakefd_drain(s->fds[0]);
    struct slot *sl = &slots[s->slot];
    for (int word = 0; word < SIG_WORDS; word++) {
        unsigned long long bits = atomic_exchange(&sl->arrived[word], 0);
        while (bits) {
            int b = __builtin_ctzll(bits);
            bits &= bits - 1;
            deliver(s, word * 64 + b);
        }
    }
}

static int ensure_started(struct tw__signals *s)
{
    if (s->slot >= 0)
        return 0;
    int rc = take_slot(s);
    if (rc < 0)
        return rc;
    tw_io_init(&s->io, s->fds[0], on_wake, s);
    rc = tw__reactor_watch_internal(s->r, &s->io, TW_IO_READ);
    if (rc < 0) {
        give_slot_back(s);
        tw__wakefd_close(s->fds);
    }
    return rc;
}

/* Links w and makes the handler catch its signal for this reactor. */
static int start_watch(struct tw__signals *s, struct tw_signal_watch *w)
{
    int rc = ensure_started(s);
    if (rc < 0)
        return rc;
    int signo = w->signo;
    if (s->counts[signo] == 0) {
        struct slot *sl = &slots[s->slot];
        /* Watched before installed: a signal arriving in between is caught. */
        atomic_fetch_or(&sl->watched[signo / 64], 1ull << (signo % 64));
        pthread_mutex_lock(&table_lock);
        rc = install_locked(signo);
        pthread_mutex_unlock(&table_lock);
        if (rc < 0) {
            atomic_fetch_and(&sl->watched[signo / 64], ~(1ull << (signo % 64)));
            return rc;
        }
    }
    s->counts[signo]++;
    w->owner = s;
    w->seq = ++s->seq;
    w->next = NULL;
    w->prev = s->tail;
    if (s->tail)
        s->tail->next = w;
    else
        s->head = w;
    s->tail = w;
    if (!w->internal)
        s->user_watches++;
    return 0;
}

static void stop_watch(struct tw_signal_watch *w)
{
    struct tw__signals *s = w->owner;
    if (s->cursor == w)
        s->cursor = w->next;
    if (w->prev)
        w->prev->next = w->next;
    else
        s->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        s->tail = w->prev;
    if (!w->internal)
        s->user_watches--;

    int signo = w->signo;
    if (--s->counts[signo] == 0) {
        struct slot *sl = &slots[s->slot];
        /* Restored before unwatched: a signal in between is not swallowed. */
        pthread_mutex_lock(&table_lock);
        uninstall_locked(signo);
        pthread_mutex_unlock(&table_lock);
        unsigned long long bit = 1ull << (signo % 64);
        atomic_fetch_and(&sl->watched[signo / 64], ~bit);
        atomic_fetch_and(&sl->arrived[signo / 64], ~bit);
    }
    tw_free(w);
}

/* ---- The API */

int tw_reactor_watch_signal(tw_reactor *r, int signo, tw_signal_fn fn, void *arg,
                            tw_signal_watch **out)
{
    if (!fn || !out || !watchable(signo))
        return TW_EINVAL;
    struct tw_signal_watch *w = tw_malloc(sizeof *w);
    if (!w)
        return TW_ENOMEM;
    *w = (struct tw_signal_watch){.signo = signo, .fn = fn, .arg = arg};
    int rc = start_watch(r->signals, w);
    if (rc < 0) {
        tw_free(w);
        return rc;
    }
    *out = w;
    return 0;
}

void tw_signal_watch_stop(tw_signal_watch *watch)
{
    if (watch)
        stop_watch(watch);
}

int tw__signals_init(tw_reactor *r, struct tw__signals **out)
{
    struct tw__signals *s = tw_calloc(1, sizeof *s);
    if (!s)
        return TW_ENOMEM;
    s->r = r;
    s->slot = -1;
    s->fds[0] = s->fds[1] = -1;
    *out = s;
    return 0;
}

void tw__signals_destroy(struct tw__signals *s)
{
    if (!s)
        return;
    if (s->user_watches > 0)
        tw_log_warn(NS, "reactor freed with %zu signal watch(es) still started; stopping them",
                    s->user_watches);
    while (s->head)
        stop_watch(s->head);
    s->defaults[0] = s->defaults[1] = NULL;
    if (s->slot >= 0) {
        tw__reactor_watch_internal(s->r, &s->io, 0);
        give_slot_back(s);
        tw__wakefd_close(s->fds);
    }
    tw_free(s);
}

static void stop_on_signal(tw_reactor *r, int signo, void *arg)
{
    (void)arg;
    if (tw_reactor_stop(r) == 0)
        tw_log_info(NS, "received %s, shutting down", signo == SIGINT ? "SIGINT" : "SIGTERM");
}

int tw__signals_install_default(struct tw__signals *s)
{
    static const int signos[2] = {SIGINT, SIGTERM};
    for (int i = 0; i < 2; i++) {
        if (s->defaults[i])
            continue;
        struct tw_signal_watch *w = tw_malloc(sizeof *w);
        if (!w) {
            tw__signals_remove_default(s);
            return TW_ENOMEM;
        }
        *w = (struct tw_signal_watch){.signo = signos[i], .fn = stop_on_signal, .internal = true};
        int rc = start_watch(s, w);
        if (rc < 0) {
            tw_free(w);
            tw__signals_remove_default(s);
            return rc;
        }
        s->defaults[i] = w;
    }
    return 0;
}

void tw__signals_remove_default(struct tw__signals *s)
{
    for (int i = 0; i < 2; i++) {
        if (s->defaults[i])
            stop_watch(s->defaults[i]);
        s->defaults[i] = NULL;
    }
}

size_t tw__signals_count(const struct tw__signals *s)
{
    return s->user_watches;
}
