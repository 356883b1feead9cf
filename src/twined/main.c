/* twined: runs a plugin's services from the command line, as Twisted's
 * `twist` (and `twistd` in the foreground) do.
 *
 *     twined [--log-level L] [--log-format text|json] [--log-file F]
 *            [--reactor NAME] [--workers N] [--pidfile F] [--grace S]
 *            [--uid USER] [--gid GROUP] PLUGIN [plugin options]
 *
 * The launcher knows no plugin by name: it parses its own options up to the
 * first word that is not one, finds that plugin in the registry, and hands
 * it the rest. With no plugin it lists them.
 *
 * Signals: SIGTERM or SIGINT stops gracefully (the servers stop listening,
 * open connections get --grace seconds to finish, then the rest are closed,
 * the reactor's shutdown triggers run, and twined exits 0; a second signal
 * cuts the grace short); SIGHUP reopens the log file (log rotation).
 * Under systemd, READY=1 and STOPPING=1 go to $NOTIFY_SOCKET. */
#include <errno.h>
#include <grp.h>
#include <math.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <twine/error.h>
#include <twine/net.h>
#include <twine/twine.h>

#include "twined/twined.h"

#ifndef TWINED_VERSION
#define TWINED_VERSION "0"
#endif

#define DEFAULT_GRACE 10.0
#define MAX_WORKERS   256

static const tw_plugin_option launcher_options[] = {
    {"log-level", 0, "LEVEL",
     "Log events of LEVEL and above: debug, info, warn, error or critical; comma-separated "
     "NAMESPACE=LEVEL items give a namespace its own (info,twine.net=debug).",
     "info", false},
    {"log-format", 0, "FORMAT",
     "text or json (default: text when the log file is a terminal, otherwise json, as twist).",
     NULL, false},
    {"log-file", 0, "FILE",
     "Log to FILE, reopened on SIGHUP (\"-\": standard output, \"+\": standard error).", "-",
     false},
    {"reactor", 0, "NAME",
     "The reactor backend: io_uring, epoll, poll or select (default: $TWINE_REACTOR, else "
     "io_uring, or epoll where the kernel refuses it).",
     NULL, false},
    {"workers", 0, "N",
     "Serve from N worker processes sharing the listening sockets, restarted if they crash "
     "(0: serve in this process).",
     "0", false},
    {"pidfile", 0, "FILE", "Write the process id to FILE while running.", NULL, false},
    {"uid", 'u', "USER",
     "Once the ports are bound, run as USER (a name or a number; needs root). With --workers, "
     "the workers run as USER and the supervisor stays.",
     NULL, false},
    {"gid", 'g', "GROUP", "Run as GROUP (a name or a number; default: USER's group).", NULL, false},
    {"grace", 0, "SECONDS",
     "On SIGTERM, how long open connections may take to finish before they are closed.", "10",
     false},
    {"version", 0, NULL, "Print the version and exit.", NULL, false},
    {0},
};

static const tw_plugin launcher = {
    .name = "twined",
    .description = NULL,
    .options = launcher_options,
    .make_service = NULL,
};

void twined_complain(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("twined: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void print_usage(FILE *out)
{
    char buf[4096];
    tw_plugin_usage(&launcher, buf, sizeof buf);
    const char *options = strstr(buf, "\nOptions:");
    fprintf(out,
            "Usage: twined [options] PLUGIN [plugin options]\n"
            "Runs a plugin's services, as Twisted's twist does.\n%s",
            options ? options : buf);
    fprintf(out, "\nPlugins:\n");
    for (size_t i = 0; i < tw_plugin_count(); i++) {
        const tw_plugin *p = tw_plugin_at(i);
        fprintf(out, "  %-12s %s\n", p->name, p->description ? p->description : "");
    }
    fprintf(out, "\n'twined PLUGIN --help' shows a plugin's options.\n");
}

/* The index of the plugin's name: the first word that is not a launcher
 * option or an option's value. An unknown option stops the scan, so that
 * the parser names it. */
static int plugin_index(int argc, char **argv)
{
    int k = 1;
    while (k < argc) {
        const char *w = argv[k];
        if (w[0] != '-')
            break;
        if (strncmp(w, "--", 2) != 0 || !w[2])
            return k + 1;
        const char *name = w + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const tw_plugin_option *o = launcher_options;
        while (o->name && (strlen(o->name) != len || strncmp(o->name, name, len) != 0))
            o++;
        if (!o->name)
            return k + 1;
        k += o->metavar && !eq ? 2 : 1;
    }
    return k < argc ? k : argc;
}

int twined_reactor_new(const twined_config *cfg, tw_reactor **out)
{
    tw_reactor_options opts = {
        .backend = cfg->backend,
        .no_signal_handlers = true,
        .shutdown_timeout = cfg->grace + 10,
    };
    int rc = tw_reactor_new(out, &opts);
    if (rc < 0)
        twined_complain("cannot make the reactor: %s", tw_strerror(rc));
    return rc;
}

int twined_make_service(const twined_config *cfg, tw_reactor *r, tw_service **out)
{
    tw_failure *f = NULL;
    int rc = cfg->plugin->make_service(r, cfg->args, out, &f);
    if (rc < 0) {
        twined_complain("%s: %s", cfg->plugin->name, f ? tw_failure_message(f) : tw_strerror(rc));
        tw_failure_unref(f);
        return rc == TW_EINVAL ? TWINED_EXIT_USAGE : TWINED_EXIT_FAILED;
    }
    tw_failure_unref(f);
    return 0;
}

static void log_ports(const twined_config *cfg, tw_service *s)
{
    tw_multi_service *m = tw_service_as_multi(s);
    if (m) {
        for (size_t i = 0; i < tw_multi_service_count(m); i++)
            log_ports(cfg, tw_multi_service_child_at(m, i));
        return;
    }
    tw_listening_port *port = tw_server_service_port(s);
    tw_address host;
    char where[TW_ADDRESS_STRLEN];
    if (port && tw_listening_port_get_host(port, &host) == 0)
        tw_log_info(TWINED_NS, "%s listening on %s (%s)", cfg->plugin->name,
                    tw_address_format(&host, where, sizeof where), s->name ? s->name : "?");
}

void twined_log_ports(const twined_config *cfg, tw_service *tree)
{
    log_ports(cfg, tree);
}

int twined_drop_privileges(const twined_config *cfg)
{
    if (!cfg->set_uid && !cfg->set_gid)
        return 0;
    int rc = 0;
    const char *step = NULL;
    if (cfg->set_gid && getegid() != cfg->gid) {
        if (setgroups(0, NULL) < 0 && errno != EPERM)
            step = "setgroups", rc = -errno;
        else if (setgid(cfg->gid) < 0)
            step = "--gid", rc = -errno;
    }
    if (rc == 0 && cfg->set_uid && geteuid() != cfg->uid && setuid(cfg->uid) < 0)
        step = "--uid", rc = -errno;
    if (rc < 0) {
        twined_complain("%s: cannot change to %ld: %s", step,
                        strcmp(step, "--uid") == 0 ? (long)cfg->uid : (long)cfg->gid,
                        tw_strerror(rc));
        return rc;
    }
    tw_log_info(TWINED_NS, "running as uid %ld, gid %ld", (long)getuid(), (long)getgid());
    return 0;
}

/* ---- Serving in this process */

struct run {
    const twined_config *cfg;
    tw_reactor *r;
    tw_service *tree;
    bool worker;
    bool stopping;        /* a stop signal came */
    tw_deferred *drained; /* the before-shutdown trigger's, until the drain ends */
    tw_timer poll;        /* looks at the open connections while draining */
    double deadline;      /* when the grace ends */
    bool announced;
    char who[48]; /* "worker 2: " in a worker's messages, else "" */
};

static void drain_finish(struct run *run)
{
    tw_timer_stop(&run->poll);
    tw_deferred *d = run->drained;
    run->drained = NULL;
    if (d) {
        tw_deferred_callback(d, tw_result_ok(NULL, NULL));
        tw_deferred_unref(d);
    }
}

/* Every open connection and port is a reactor handle: once the servers have
 * stopped listening, what is left are the connections to wait for. */
static void check_connections(struct run *run)
{
    tw_reactor_state st;
    tw_reactor_get_state(run->r, &st);
    if (st.handles == 0) {
        drain_finish(run);
        return;
    }
    double now = tw_reactor_seconds(run->r);
    if (!run->announced) {
        run->announced = true;
        tw_log_info(TWINED_NS, "%sstopped listening; waiting up to %g s for %zu open connection(s)",
                    run->who, run->cfg->grace, st.handles);
    }
    if (now >= run->deadline) {
        tw_log_warn(TWINED_NS, "%sgrace period over: closing %zu connection(s)", run->who,
                    st.handles);
        drain_finish(run);
        return;
    }
    double wait = run->deadline - now;
    if (tw_timer_start(&run->poll, wait < 0.05 ? wait : 0.05) < 0)
        drain_finish(run);
}

static void poll_fired(tw_timer *t)
{
    struct run *run = (struct run *)((char *)t - offsetof(struct run, poll));
    check_connections(run);
}

static tw_result services_stopped(tw_result result, void *arg)
{
    struct run *run = arg;
    tw_result_release(&result);
    run->deadline = tw_reactor_seconds(run->r) + run->cfg->grace;
    if (run->drained)
        check_connections(run);
    return tw_result_ok(NULL, NULL);
}

/* Twisted's application stops in a before-shutdown trigger too: the
 * shutdown waits for this deferred, and the reactor closes whatever is
 * left afterwards. */
static tw_deferred *before_shutdown(void *arg)
{
    struct run *run = arg;
    run->drained = tw_deferred_new(NULL, NULL);
    tw_deferred *d = tw_service_stop(run->tree);
    if (!run->drained) {
        tw_deferred_unref(d);
        return NULL; /* out of memory: no wait */
    }
    tw_deferred *mine = tw_deferred_ref(run->drained);
    if (!d || tw_deferred_add_callback(d, services_stopped, run) < 0)
        services_stopped(tw_result_ok(NULL, NULL), run);
    tw_deferred_unref(d);
    return mine;
}

static void on_stop_signal(tw_reactor *r, int signo, void *arg)
{
    struct run *run = arg;
    if (!run->stopping) {
        run->stopping = true;
        tw_log_info(TWINED_NS, "%s%s: stopping", run->who, strsignal(signo));
        if (!run->worker)
            twined_notify("STOPPING=1");
        tw_reactor_stop(r);
    } else if (run->drained) {
        tw_log_info(TWINED_NS, "%s%s again: closing every connection now", run->who,
                    strsignal(signo));
        drain_finish(run);
    }
}

static void on_hup(tw_reactor *r, int signo, void *arg)
{
    struct run *run = arg;
    int rc = tw_log_file_reopen(run->cfg->log);
    if (rc < 0)
        tw_log_error(TWINED_NS, "%sSIGHUP: cannot reopen the log file: %s", run->who,
                     tw_strerror(rc));
    else
        tw_log_info(TWINED_NS, "%sSIGHUP: log file reopened", run->who);
}

static long env_long(const char *name, long fallback)
{
    const char *v = getenv(name);
    char *end;
    long n = v ? strtol(v, &end, 10) : fallback;
    return v && (*end || end == v) ? fallback : n;
}

/* A worker: die with the supervisor, re-establish systemd's sockets for
 * this pid, and take the inherited listening sockets. */
static void worker_setup(tw_reactor *r)
{
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != (pid_t)env_long("TWINED_SUPERVISOR", getppid()))
        raise(SIGTERM); /* the supervisor died before the line above */
    long sd = env_long("TWINED_SYSTEMD_FDS", 0);
    if (sd > 0) {
        char buf[32];
        snprintf(buf, sizeof buf, "%ld", (long)getpid());
        setenv("LISTEN_PID", buf, 1);
        snprintf(buf, sizeof buf, "%ld", sd);
        setenv("LISTEN_FDS", buf, 1);
    }
    twined_sockets_adopt_on(r, (int)env_long("TWINED_FIRST_FD", 3),
                            (int)env_long("TWINED_WORKER_FDS", 0));
}

static void worker_ready(void)
{
    int first = (int)env_long("TWINED_FIRST_FD", 3), count = (int)env_long("TWINED_WORKER_FDS", 0);
    for (int fd = first; fd < first + count; fd++)
        close(fd); /* the ports listen on duplicates */
    int status = (int)env_long("TWINED_STATUS_FD", -1);
    if (status >= 0) {
        ssize_t n = write(status, "ready\n", 6);
        (void)n; /* the supervisor learns it from our exit otherwise */
        close(status);
    }
}

int twined_serve(const twined_config *cfg, bool worker)
{
    struct run run = {.cfg = cfg, .worker = worker};
    if (worker)
        snprintf(run.who, sizeof run.who, "worker %ld: ", env_long("TWINED_WORKER", 0));
    int code = TWINED_EXIT_FAILED;
    tw_signal_watch *watches[3] = {NULL, NULL, NULL};
    bool pid_written = false;
    if (twined_reactor_new(cfg, &run.r) < 0)
        return TWINED_EXIT_FAILED;
    tw_timer_init(&run.poll, tw_reactor_clock(run.r), poll_fired);
    /* Watched from the start, so that a signal sent as soon as the ports
     * are announced is not the default (fatal) one. */
    static const int signals[3] = {SIGTERM, SIGINT, SIGHUP};
    for (int i = 0; i < 3; i++) {
        int rc = tw_reactor_watch_signal(run.r, signals[i], i < 2 ? on_stop_signal : on_hup, &run,
                                         &watches[i]);
        if (rc < 0) {
            twined_complain("cannot watch signals: %s", tw_strerror(rc));
            goto out;
        }
    }
    code = twined_make_service(cfg, run.r, &run.tree);
    if (code != 0)
        goto out;
    code = TWINED_EXIT_FAILED;
    if (worker)
        worker_setup(run.r);
    tw_failure *f = NULL;
    /* privileged_start binds the ports (before privileges would be dropped,
     * which twined does not do yet), start does the rest. */
    int rc = tw_service_privileged_start(run.tree, &f);
    if (rc == 0)
        rc = tw_service_start(run.tree, &f);
    if (worker)
        twined_sockets_off(run.r);
    if (rc < 0) {
        twined_complain("%s", f ? tw_failure_message(f) : tw_strerror(rc));
        tw_failure_unref(f);
        goto out;
    }
    /* A worker was started as the user already. */
    if (!worker && twined_drop_privileges(cfg) < 0)
        goto out;
    if (!worker) {
        if (cfg->pidfile) {
            if (twined_pidfile_write(cfg->pidfile) < 0)
                goto out;
            pid_written = true;
        }
        twined_log_ports(cfg, run.tree);
    } else {
        tw_log_info(TWINED_NS, "worker %ld (pid %ld) serving", env_long("TWINED_WORKER", 0),
                    (long)getpid());
    }
    rc = tw_reactor_add_trigger(run.r, TW_PHASE_BEFORE, TW_EVENT_SHUTDOWN, before_shutdown, &run,
                                NULL);
    if (rc < 0) {
        twined_complain("%s", tw_strerror(rc));
        goto out;
    }
    if (worker)
        worker_ready();
    else
        twined_notify("READY=1");
    rc = tw_reactor_run(run.r);
    code = rc < 0 ? TWINED_EXIT_FAILED : TWINED_EXIT_OK;
    tw_log_info(TWINED_NS, "%sstopped", run.who);

out:
    for (int i = 0; i < 3; i++)
        tw_signal_watch_stop(watches[i]);
    tw_timer_stop(&run.poll);
    if (run.tree)
        tw_service_release(run.tree); /* stops what a failed start left running */
    tw_reactor_free(run.r);
    if (pid_written)
        twined_pidfile_remove(cfg->pidfile);
    return code;
}

/* ---- The command line */

static int parse_config(twined_config *cfg, const tw_plugin_args *la)
{
    tw_failure *f = NULL;
    if (tw_log_set_levels(tw_plugin_arg(la, "log-level"), &f) < 0) {
        twined_complain("--log-level: %s", tw_failure_message(f));
        tw_failure_unref(f);
        return -1;
    }
    const char *w = tw_plugin_arg(la, "workers");
    char *end;
    errno = 0;
    cfg->workers = strtol(w, &end, 10);
    if (errno || *end || end == w || cfg->workers < 0 || cfg->workers > MAX_WORKERS) {
        twined_complain("--workers: '%s' is not a number from 0 to %d", w, MAX_WORKERS);
        return -1;
    }
    const char *g = tw_plugin_arg(la, "grace");
    cfg->grace = strtod(g, &end);
    if (*end || end == g || !(cfg->grace >= 0) || isinf(cfg->grace)) {
        twined_complain("--grace: '%s' is not a number of seconds", g);
        return -1;
    }
    cfg->backend = tw_plugin_arg(la, "reactor");
    if (cfg->backend) {
        const char *const *names = tw_reactor_backends();
        size_t i = 0;
        while (names[i] && strcmp(names[i], cfg->backend) != 0)
            i++;
        if (!names[i]) {
            char known[128] = "";
            for (size_t k = 0; names[k]; k++)
                snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", k ? ", " : "",
                         names[k]);
            twined_complain("--reactor: unknown reactor '%s' (%s)", cfg->backend, known);
            return -1;
        }
    }
    cfg->pidfile = tw_plugin_arg(la, "pidfile");
    const char *user = tw_plugin_arg(la, "uid"), *group = tw_plugin_arg(la, "gid");
    if (user) {
        struct passwd *pw = getpwnam(user);
        long n = strtol(user, &end, 10);
        if (!pw && (*end || end == user || n < 0)) {
            twined_complain("--uid: unknown user '%s'", user);
            return -1;
        }
        cfg->set_uid = true;
        cfg->uid = pw ? pw->pw_uid : (uid_t)n;
        if (!group) {
            pw = pw ? pw : getpwuid(cfg->uid);
            if (pw) {
                cfg->set_gid = true;
                cfg->gid = pw->pw_gid;
            }
        }
    }
    if (group) {
        struct group *gr = getgrnam(group);
        long n = strtol(group, &end, 10);
        if (!gr && (*end || end == group || n < 0)) {
            twined_complain("--gid: unknown group '%s'", group);
            return -1;
        }
        cfg->set_gid = true;
        cfg->gid = gr ? gr->gr_gid : (gid_t)n;
    }
    const char *fmt = tw_plugin_arg(la, "log-format");
    if (fmt && strcmp(fmt, "text") != 0 && strcmp(fmt, "json") != 0) {
        twined_complain("--log-format: '%s' is neither text nor json", fmt);
        return -1;
    }
    return 0;
}

static int open_log(twined_config *cfg, const tw_plugin_args *la)
{
    const char *path = tw_plugin_arg(la, "log-file");
    const char *fmt = tw_plugin_arg(la, "log-format");
    int rc = tw_log_file_open(path, TW_LOG_FORMAT_TEXT, &cfg->log);
    if (rc < 0) {
        twined_complain("--log-file: cannot open '%s': %s", path, tw_strerror(rc));
        return -1;
    }
    bool json = fmt ? strcmp(fmt, "json") == 0 : !tw_log_file_isatty(cfg->log);
    tw_log_file_set_format(cfg->log, json ? TW_LOG_FORMAT_JSON : TW_LOG_FORMAT_TEXT);
    rc = tw_log_add_observer(tw_log_file_observer, cfg->log);
    if (rc < 0) {
        twined_complain("cannot log: %s", tw_strerror(rc));
        tw_log_file_close(cfg->log);
        cfg->log = NULL;
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN); /* a log reader that goes away must not kill us */
    twined_config cfg = {.argc = argc, .argv = argv, .grace = DEFAULT_GRACE};
    int k = plugin_index(argc, argv);
    tw_plugin_args *la = NULL;
    tw_failure *f = NULL;
    int code = TWINED_EXIT_USAGE;
    int rc = tw_plugin_args_parse(&launcher, k - 1, argv + 1, &la, &f);
    if (rc == TW_EAGAIN) {
        print_usage(stdout);
        return TWINED_EXIT_OK;
    }
    if (rc < 0) {
        twined_complain("%s (twined --help lists the options)",
                        f ? tw_failure_message(f) : tw_strerror(rc));
        tw_failure_unref(f);
        return rc == TW_EINVAL ? TWINED_EXIT_USAGE : TWINED_EXIT_FAILED;
    }
    if (tw_plugin_flag(la, "version")) {
        printf("twined %s\n", TWINED_VERSION);
        code = TWINED_EXIT_OK;
        goto out;
    }
    if (k >= argc) {
        print_usage(stdout);
        twined_complain("no plugin given: name one of the plugins listed above");
        goto out;
    }
    if (parse_config(&cfg, la) < 0)
        goto out;
    cfg.plugin = tw_plugin_find(argv[k]);
    if (!cfg.plugin) {
        twined_complain("unknown plugin '%s' (twined alone lists the plugins)", argv[k]);
        goto out;
    }
    rc = tw_plugin_args_parse(cfg.plugin, argc - k - 1, argv + k + 1, &cfg.args, &f);
    if (rc == TW_EAGAIN) {
        char buf[8192];
        tw_plugin_usage(cfg.plugin, buf, sizeof buf);
        fputs(buf, stdout);
        code = TWINED_EXIT_OK;
        goto out;
    }
    if (rc < 0) {
        twined_complain("%s: %s (twined %s --help lists its options)", cfg.plugin->name,
                        f ? tw_failure_message(f) : tw_strerror(rc), cfg.plugin->name);
        tw_failure_unref(f);
        code = rc == TW_EINVAL ? TWINED_EXIT_USAGE : TWINED_EXIT_FAILED;
        goto out;
    }
    if (open_log(&cfg, la) < 0) {
        code = TWINED_EXIT_FAILED;
        goto out;
    }
    if (getenv("TWINED_WORKER"))
        code = twined_serve(&cfg, true);
    else if (cfg.workers > 0)
        code = twined_supervise(&cfg);
    else
        code = twined_serve(&cfg, false);

out:
    if (cfg.log) {
        tw_log_remove_observer(tw_log_file_observer, cfg.log);
        tw_log_file_close(cfg.log);
    }
    tw_log_clear_namespace_levels();
    tw_plugin_args_free(cfg.args);
    tw_plugin_args_free(la);
    return code;
}
