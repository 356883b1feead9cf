/* --workers N: a supervisor and N worker processes.
 *
 * The supervisor builds the plugin's tree only to run its privileged start,
 * with the listens turned into plain bound sockets (sockets.c); it logs where
 * they listen and lets the tree go. Then it starts N copies of this program
 * with the same command line, each inheriting the sockets (after systemd's,
 * if any) and a pipe on which it says "ready" once it serves, and watches
 * them (tw_spawn_process: every other descriptor is closed in the child, so
 * workers leak nothing of the supervisor's).
 *
 * A worker that ends while it should run is started again after a delay that
 * doubles from 0.1 s up to 10 s, and falls back to 0.1 s once a worker has
 * run for 10 s. A worker that fails before its first "ready" at startup
 * makes the whole start fail (exit 1): it would fail again. SIGTERM/SIGINT
 * go to every worker as SIGTERM (each stops gracefully) and the supervisor
 * exits 0 once all have ended (those still running after the grace and 5 s
 * more are killed); SIGHUP reopens the supervisor's log and goes to every
 * worker. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <twine/alloc.h>
#include <twine/error.h>
#include <twine/process.h>
#include <twine/twine.h>

#include "twined/twined.h"

#define RESTART_MIN 0.1
#define RESTART_MAX 10.0
#define RESET_AFTER 10.0 /* a worker that ran this long restarts at RESTART_MIN again */
#define KILL_AFTER  5.0  /* past the grace, before SIGKILL */

extern char **environ;

struct supervisor;

struct worker {
    struct supervisor *sup;
    int index;        /* 1-based, for logs and TWINED_WORKER */
    tw_process *proc; /* NULL while not running */
    long pid;
    bool ready;
    double ready_at;
    double delay; /* the last restart delay; 0 before any */
    tw_timer restart;
};

struct supervisor {
    const twined_config *cfg;
    tw_reactor *r;
    twined_sockets socks;
    int systemd_fds;
    struct worker *workers;
    size_t n;
    size_t running; /* processes not yet ended */
    size_t ready;   /* workers ready at least once, until all were */
    bool all_ready_once;
    bool stopping;
    int exit_code;
    char exe[PATH_MAX];
    tw_timer kill_timer;
};

struct worker_protocol {
    tw_process_protocol base;
    struct worker *w;
};

static void begin_stop(struct supervisor *sup, int signo);

static void each_worker_signal(struct supervisor *sup, int signo)
{
    for (size_t i = 0; i < sup->n; i++)
        if (sup->workers[i].proc)
            tw_process_signal(sup->workers[i].proc, signo);
}

static void worker_data(tw_process_protocol *pp, int child_fd, const char *data, size_t len)
{
    struct worker *w = ((struct worker_protocol *)pp)->w;
    struct supervisor *sup = w->sup;
    if (w->ready || len == 0)
        return;
    w->ready = true;
    w->ready_at = tw_reactor_seconds(sup->r);
    if (!sup->all_ready_once && ++sup->ready == sup->n) {
        sup->all_ready_once = true;
        tw_log_info(TWINED_NS, "%zu worker(s) serving", sup->n);
        twined_notify("READY=1");
    }
}

static int spawn_worker(struct worker *w);

static void restart_fired(tw_timer *t)
{
    struct worker *w = (struct worker *)((char *)t - offsetof(struct worker, restart));
    if (!w->sup->stopping)
        spawn_worker(w);
}

/* A worker to start again (it ended, or could not be spawned). */
static void schedule_restart(struct worker *w, const char *why)
{
    struct supervisor *sup = w->sup;
    double now = tw_reactor_seconds(sup->r);
    if (w->ready && now - w->ready_at >= RESET_AFTER)
        w->delay = 0;
    w->delay = w->delay == 0 ? RESTART_MIN : w->delay * 2;
    if (w->delay > RESTART_MAX)
        w->delay = RESTART_MAX;
    tw_log_warn(TWINED_NS, "worker %d %s; starting it again in %.1f s", w->index, why, w->delay);
    if (tw_timer_start(&w->restart, w->delay) < 0) {
        tw_log_error(TWINED_NS, "out of memory: stopping");
        sup->exit_code = TWINED_EXIT_FAILED;
        begin_stop(sup, SIGTERM);
    }
}

static void worker_ended(tw_process_protocol *pp, tw_process_status status)
{
    struct worker *w = ((struct worker_protocol *)pp)->w;
    struct supervisor *sup = w->sup;
    char how[TW_PROCESS_STATUS_STRLEN], why[TW_PROCESS_STATUS_STRLEN + 32];
    tw_process_status_format(&status, how, sizeof how);
    snprintf(why, sizeof why, "(pid %ld) %s", w->pid, how);
    w->proc = NULL;
    sup->running--;
    if (sup->stopping) {
        tw_log_info(TWINED_NS, "worker %d %s", w->index, why);
        if (sup->running == 0)
            tw_reactor_stop(sup->r);
    } else if (!sup->all_ready_once && !w->ready) {
        tw_log_error(TWINED_NS, "worker %d %s before it could serve: stopping", w->index, why);
        sup->exit_code = TWINED_EXIT_FAILED;
        begin_stop(sup, SIGTERM);
    } else {
        schedule_restart(w, why);
    }
}

static void worker_protocol_free(tw_process_protocol *pp)
{
    tw_free(pp);
}

static const tw_process_protocol_ops worker_ops = {
    .child_data_received = worker_data,
    .process_ended = worker_ended,
    .free = worker_protocol_free,
};

static bool is_open(int fd)
{
    return fcntl(fd, F_GETFD) >= 0;
}

/* The environment of a worker: ours without systemd's variables (the
 * supervisor is the one systemd talks to; a worker sets up LISTEN_* for
 * itself) and with what the worker needs to find its sockets. */
static char **worker_env(struct supervisor *sup, struct worker *w, char extra[6][48])
{
    size_t n = 0;
    while (environ[n])
        n++;
    char **env = tw_calloc(n + 7, sizeof *env);
    if (!env)
        return NULL;
    size_t k = 0;
    static const char *const dropped[] = {
        "NOTIFY_SOCKET=", "LISTEN_PID=", "LISTEN_FDS=", "LISTEN_FDNAMES=", "TWINED_"};
    for (size_t i = 0; i < n; i++) {
        bool drop = false;
        for (size_t d = 0; d < sizeof dropped / sizeof *dropped; d++)
            drop = drop || strncmp(environ[i], dropped[d], strlen(dropped[d])) == 0;
        if (!drop)
            env[k++] = environ[i];
    }
    int first = 3 + sup->systemd_fds;
    snprintf(extra[0], 48, "TWINED_WORKER=%d", w->index);
    snprintf(extra[1], 48, "TWINED_FIRST_FD=%d", first);
    snprintf(extra[2], 48, "TWINED_WORKER_FDS=%zu", sup->socks.n);
    snprintf(extra[3], 48, "TWINED_STATUS_FD=%zu", (size_t)first + sup->socks.n);
    snprintf(extra[4], 48, "TWINED_SYSTEMD_FDS=%d", sup->systemd_fds);
    snprintf(extra[5], 48, "TWINED_SUPERVISOR=%ld", (long)getpid());
    for (int i = 0; i < 6; i++)
        env[k++] = extra[i];
    env[k] = NULL;
    return env;
}

static int spawn_worker(struct worker *w)
{
    struct supervisor *sup = w->sup;
    tw_child_fd map[TW_PROCESS_MAX_CHILD_FDS];
    size_t n = 0;
    for (int fd = 0; fd < 3; fd++)
        if (is_open(fd))
            map[n++] = (tw_child_fd){fd, TW_CHILD_FD_INHERIT, fd};
    for (int i = 0; i < sup->systemd_fds; i++)
        map[n++] = (tw_child_fd){3 + i, TW_CHILD_FD_INHERIT, 3 + i};
    int first = 3 + sup->systemd_fds;
    for (size_t i = 0; i < sup->socks.n; i++)
        map[n++] = (tw_child_fd){first + (int)i, TW_CHILD_FD_INHERIT, sup->socks.fds[i]};
    map[n++] = (tw_child_fd){first + (int)sup->socks.n, TW_CHILD_FD_READ, -1};

    char extra[6][48];
    char **env = worker_env(sup, w, extra);
    struct worker_protocol *wp = tw_calloc(1, sizeof *wp);
    int rc = TW_ENOMEM;
    tw_failure *f = NULL;
    if (env && wp) {
        tw_process_protocol_init(&wp->base, &worker_ops);
        wp->w = w;
        tw_process_options opts = {.child_fds = map,
                                   .n_child_fds = n,
                                   .set_uid = sup->cfg->set_uid,
                                   .uid = sup->cfg->uid,
                                   .set_gid = sup->cfg->set_gid,
                                   .gid = sup->cfg->gid};
        rc = tw_spawn_process(sup->r, &wp->base, sup->exe, sup->cfg->argv, env, NULL, &opts,
                              &w->proc, &f); /* takes wp whatever it returns */
    } else {
        tw_free(wp);
    }
    tw_free(env);
    if (rc < 0) {
        char why[256];
        snprintf(why, sizeof why, "could not be started: %s",
                 f ? tw_failure_message(f) : tw_strerror(rc));
        tw_failure_unref(f);
        w->proc = NULL;
        if (!sup->all_ready_once) {
            tw_log_error(TWINED_NS, "worker %d %s", w->index, why);
            return rc;
        }
        schedule_restart(w, why);
        return rc;
    }
    w->pid = (long)tw_process_pid(w->proc);
    w->ready = false;
    sup->running++;
    tw_log_info(TWINED_NS, "worker %d started (pid %ld)", w->index, w->pid);
    return 0;
}

static void kill_fired(tw_timer *t)
{
    struct supervisor *sup =
        (struct supervisor *)((char *)t - offsetof(struct supervisor, kill_timer));
    tw_log_warn(TWINED_NS, "%zu worker(s) still running %g s after SIGTERM: killing them",
                sup->running, sup->cfg->grace + KILL_AFTER);
    each_worker_signal(sup, SIGKILL);
}

static void begin_stop(struct supervisor *sup, int signo)
{
    sup->stopping = true;
    for (size_t i = 0; i < sup->n; i++)
        tw_timer_stop(&sup->workers[i].restart);
    if (sup->running == 0) {
        tw_reactor_stop(sup->r);
        return;
    }
    each_worker_signal(sup, signo);
    if (!tw_timer_active(&sup->kill_timer))
        tw_timer_start(&sup->kill_timer, sup->cfg->grace + KILL_AFTER);
}

static void on_stop_signal(tw_reactor *r, int signo, void *arg)
{
    struct supervisor *sup = arg;
    if (!sup->stopping) {
        tw_log_info(TWINED_NS, "%s: stopping the workers", strsignal(signo));
        twined_notify("STOPPING=1");
        begin_stop(sup, SIGTERM);
    } else {
        each_worker_signal(sup, SIGTERM); /* again: they cut their grace short */
    }
}

static void on_hup(tw_reactor *r, int signo, void *arg)
{
    struct supervisor *sup = arg;
    int rc = tw_log_file_reopen(sup->cfg->log);
    if (rc < 0)
        tw_log_error(TWINED_NS, "SIGHUP: cannot reopen the log file: %s", tw_strerror(rc));
    else
        tw_log_info(TWINED_NS, "SIGHUP: log file reopened");
    each_worker_signal(sup, SIGHUP);
}

/* systemd's sockets, when they were passed to this process. */
static int systemd_fds(void)
{
    const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
    if (!pid || !fds || strtol(pid, NULL, 10) != (long)getpid())
        return 0;
    long n = strtol(fds, NULL, 10);
    return n > 0 && n < 64 ? (int)n : 0;
}

/* Opens the tree's ports (privileged start with the listens held), logs
 * where, and lets the tree go. */
static int bind_sockets(struct supervisor *sup)
{
    tw_service *tree;
    int code = twined_make_service(sup->cfg, sup->r, &tree);
    if (code != 0)
        return code;
    twined_sockets_bind_on(sup->r, &sup->socks);
    tw_failure *f = NULL;
    int rc = tw_service_privileged_start(tree, &f);
    twined_sockets_off(sup->r);
    if (rc < 0) {
        twined_complain("%s", f ? tw_failure_message(f) : tw_strerror(rc));
        tw_failure_unref(f);
        tw_service_release(tree);
        return TWINED_EXIT_FAILED;
    }
    twined_log_ports(sup->cfg, tree);
    tw_deferred_unref(tw_service_stop(tree));
    tw_service_release(tree);
    if (3 + sup->systemd_fds + sup->socks.n + 1 > TW_PROCESS_MAX_CHILD_FDS) {
        twined_complain("--workers: too many sockets to pass to workers (%zu)", sup->socks.n);
        return TWINED_EXIT_FAILED;
    }
    return 0;
}

int twined_supervise(const twined_config *cfg)
{
    struct supervisor sup = {.cfg = cfg, .exit_code = TWINED_EXIT_OK};
    tw_signal_watch *watches[3] = {NULL, NULL, NULL};
    bool pid_written = false;
    int code = TWINED_EXIT_FAILED;
    sup.systemd_fds = systemd_fds();
    ssize_t len = readlink("/proc/self/exe", sup.exe, sizeof sup.exe - 1);
    if (len <= 0) {
        twined_complain("cannot find this program (/proc/self/exe): %s", strerror(errno));
        return TWINED_EXIT_FAILED;
    }
    sup.exe[len] = '\0';
    if (twined_reactor_new(cfg, &sup.r) < 0)
        return TWINED_EXIT_FAILED;
    tw_timer_init(&sup.kill_timer, tw_reactor_clock(sup.r), kill_fired);
    sup.n = (size_t)cfg->workers;
    sup.workers = tw_calloc(sup.n, sizeof *sup.workers);
    if (!sup.workers) {
        twined_complain("out of memory");
        goto out;
    }
    for (size_t i = 0; i < sup.n; i++) {
        sup.workers[i] = (struct worker){.sup = &sup, .index = (int)i + 1};
        tw_timer_init(&sup.workers[i].restart, tw_reactor_clock(sup.r), restart_fired);
    }
    static const int signals[3] = {SIGTERM, SIGINT, SIGHUP};
    for (int i = 0; i < 3; i++) {
        int rc = tw_reactor_watch_signal(sup.r, signals[i], i < 2 ? on_stop_signal : on_hup, &sup,
                                         &watches[i]);
        if (rc < 0) {
            twined_complain("cannot watch signals: %s", tw_strerror(rc));
            goto out;
        }
    }
    code = bind_sockets(&sup);
    if (code != 0)
        goto out;
    code = TWINED_EXIT_FAILED;
    if (cfg->pidfile) {
        if (twined_pidfile_write(cfg->pidfile) < 0)
            goto out;
        pid_written = true;
    }
    for (size_t i = 0; i < sup.n; i++) {
        if (spawn_worker(&sup.workers[i]) < 0) {
            twined_complain("cannot start worker %zu", i + 1);
            sup.exit_code = TWINED_EXIT_FAILED;
            begin_stop(&sup, SIGTERM);
            break;
        }
    }
    if (!sup.stopping || sup.running > 0)
        tw_reactor_run(sup.r);
    code = sup.exit_code;
    tw_log_info(TWINED_NS, "stopped");

out:
    for (int i = 0; i < 3; i++)
        tw_signal_watch_stop(watches[i]);
    tw_timer_stop(&sup.kill_timer);
    for (size_t i = 0; sup.workers && i < sup.n; i++)
        tw_timer_stop(&sup.workers[i].restart);
    tw_reactor_free(sup.r);
    tw_free(sup.workers);
    twined_sockets_close(&sup.socks);
    if (pid_written)
        twined_pidfile_remove(cfg->pidfile);
    return code;
}
