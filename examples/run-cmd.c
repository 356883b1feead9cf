/* Runs a command, streams its stdout and stderr as they come, and says how
 * it ended.
 *
 *     run-cmd CMD [ARGS...]       e.g.  run-cmd ls -l /
 *
 * The command's output goes to our stdout and stderr chunk by chunk, as it
 * writes it; it reads our own stdin (passed to it as is). At the end a line
 * on stderr says how it ended ("run-cmd: 'ls' (pid 123) exited with code 0"),
 * and run-cmd exits with the command's code (128 + N when signal N killed
 * it, 127 when it could not be started). Ctrl-C or a SIGTERM sent to
 * run-cmd is passed on to the command.
 *
 * What to read here: a process protocol (its out_received, err_received and
 * process_ended), a child descriptor map (the child's stdin is ours,
 * inherited; its stdout and stderr are pipes we read), and signals watched
 * from the loop (the reactor's own SIGINT handling is turned off so that
 * Ctrl-C reaches the child instead of stopping us first). */
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include <twine/process.h>
#include <twine/twine.h>

struct run {
    tw_process_protocol base; /* first */
    tw_reactor *r;
    const char *name;
    int exit_code;
};

static void write_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n <= 0)
            return;
        data += n;
        len -= (size_t)n;
    }
}

static void run_out(tw_process_protocol *pp, const char *data, size_t len)
{
    (void)pp;
    write_all(1, data, len);
}

static void run_err(tw_process_protocol *pp, const char *data, size_t len)
{
    (void)pp;
    write_all(2, data, len);
}

static void run_ended(tw_process_protocol *pp, tw_process_status status)
{
    struct run *run = (struct run *)pp;
    char how[TW_PROCESS_STATUS_STRLEN];
    fprintf(stderr, "run-cmd: '%s' (pid %ld) %s\n", run->name, (long)tw_process_pid(pp->process),
            tw_process_status_format(&status, how, sizeof how));
    run->exit_code = status.how == TW_PROCESS_EXITED   ? status.exit_code
                     : status.how == TW_PROCESS_KILLED ? 128 + status.signo
                                                       : 1;
    tw_reactor_stop(run->r);
}

static const tw_process_protocol_ops run_ops = {
    .out_received = run_out,
    .err_received = run_err,
    .process_ended = run_ended,
};

/* Ctrl-C and SIGTERM go to the child; its end stops us. */
static void forward(tw_reactor *r, int signo, void *arg)
{
    (void)r;
    struct run *run = arg;
    if (run->base.process)
        tw_process_signal(run->base.process, signo);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: run-cmd CMD [ARGS...]\n");
        return 2;
    }
    tw_reactor *r;
    tw_reactor_options ro = {.no_signal_handlers = true};
    if (tw_reactor_new(&r, &ro) < 0)
        return 1;
    struct run run = {.r = r, .name = argv[1], .exit_code = 1};
    tw_process_protocol_init(&run.base, &run_ops);
    static const tw_child_fd map[] = {
        {0, TW_CHILD_FD_INHERIT, 0}, /* our stdin, as it is */
        {1, TW_CHILD_FD_READ, -1},
        {2, TW_CHILD_FD_READ, -1},
    };
    tw_process_options opts = {.child_fds = map, .n_child_fds = 3};
    tw_failure *f = NULL;
    /* Watched before the child starts: a signal that comes meanwhile still
     * reaches it. */
    tw_signal_watch *sigint = NULL, *sigterm = NULL;
    tw_reactor_watch_signal(r, SIGINT, forward, &run, &sigint);
    tw_reactor_watch_signal(r, SIGTERM, forward, &run, &sigterm);
    int rc = tw_spawn_process(r, &run.base, argv[1], &argv[1], NULL, NULL, &opts, NULL, &f);
    if (rc < 0) {
        fprintf(stderr, "run-cmd: %s\n", tw_failure_message(f));
        tw_failure_unref(f);
        run.exit_code = 127;
    } else {
        tw_reactor_run(r);
    }
    tw_signal_watch_stop(sigint);
    tw_signal_watch_stop(sigterm);
    tw_reactor_free(r);
    return run.exit_code;
}
