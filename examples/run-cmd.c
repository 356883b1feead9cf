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
 * inherited; its stdout and stderr are pipes we read), signals watched from
 * the loop (the reactor's own SIGINT handling is turned off so that Ctrl-C
 * reaches the child instead of stopping us first), and flow control: our
 * stdout and stderr are stdio transports, which never block the loop, and
 * the command is a producer for our stdout, so a slow reader of run-cmd's
 * output holds the command back (its pipe fills) instead of filling our
 * memory. When the reader of our stdout goes away, the command's stdout is
 * closed, so it gets SIGPIPE as it would in a shell pipeline. */
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <unistd.h>

#include <twine/process.h>
#include <twine/twine.h>

struct run;

/* One of our own outputs (stdout or stderr): a protocol over the stdio
 * transport that writes it. Its input is /dev/null: it only writes. */
struct output {
    tw_protocol base; /* first */
    struct run *run;
    tw_transport *t; /* NULL once lost (or if it could not be opened) */
    int null;        /* its input; the transport uses it, we close it */
};

struct run {
    tw_process_protocol base; /* first */
    tw_producer producer;     /* the command, as the producer of our stdout */
    tw_reactor *r;
    const char *name;
    int exit_code;
    bool freed; /* the process protocol is done */
    struct output out, err;
};

/* Once the command has ended and everything is written, the loop stops. */
static void maybe_stop(struct run *run)
{
    if (run->freed && !run->out.t && !run->err.t && tw_reactor_running(run->r))
        tw_reactor_stop(run->r);
}

/* ---- Our outputs */

static void output_read_lost(tw_protocol *p)
{
    (void)p; /* /dev/null's end of file: we only write */
}

static void output_write_lost(tw_protocol *p)
{
    /* Whoever read us has gone (the producer was stopped: see below). */
    (void)p;
}

static void output_lost(tw_protocol *p, tw_failure *reason)
{
    (void)reason;
    struct output *o = (struct output *)p;
    o->t = NULL;
    close(o->null);
    maybe_stop(o->run);
}

static const tw_protocol_ops output_ops = {
    .connection_lost = output_lost,
    .read_connection_lost = output_read_lost,
    .write_connection_lost = output_write_lost,
};

static void output_open(struct output *o, struct run *run, int fd)
{
    o->run = run;
    tw_protocol_init(&o->base, &output_ops);
    o->null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    tw_stdio_options so = {.in_fd = o->null, .out_fd = fd};
    if (o->null < 0 || tw_stdio_new(run->r, &o->base, &so, &o->t) < 0) {
        o->t = NULL; /* fd closed, say: what goes there is dropped */
        if (o->null >= 0)
            close(o->null);
    }
}

static void output_write(struct output *o, const char *data, size_t len)
{
    if (o->t)
        tw_transport_write(o->t, data, len);
}

/* ---- The command as a producer: pausing it stops reading its pipes */

static void cmd_pause(tw_producer *prod)
{
    struct run *run = (struct run *)((char *)prod - offsetof(struct run, producer));
    tw_transport_pause_producing(tw_process_transport(run->base.process));
}

static void cmd_resume(tw_producer *prod)
{
    struct run *run = (struct run *)((char *)prod - offsetof(struct run, producer));
    tw_transport_resume_producing(tw_process_transport(run->base.process));
}

static void cmd_stop(tw_producer *prod)
{
    struct run *run = (struct run *)((char *)prod - offsetof(struct run, producer));
    /* Our stdout is gone: so is the command's (it gets SIGPIPE). Its stderr
     * may have been paused with it (our stdout was full when its reader
     * left): read it again, or the command's end would never be seen. */
    tw_process_close_stdout(run->base.process);
    tw_transport_resume_producing(tw_process_transport(run->base.process));
}

static const tw_producer_ops cmd_producer_ops = {cmd_pause, cmd_resume, cmd_stop};

/* ---- The process protocol */

static void run_made(tw_process_protocol *pp)
{
    struct run *run = (struct run *)pp;
    if (run->out.t)
        tw_transport_register_producer(run->out.t, &run->producer, true);
}

static void run_out(tw_process_protocol *pp, const char *data, size_t len)
{
    output_write(&((struct run *)pp)->out, data, len);
}

static void run_err(tw_process_protocol *pp, const char *data, size_t len)
{
    output_write(&((struct run *)pp)->err, data, len);
}

static void run_ended(tw_process_protocol *pp, tw_process_status status)
{
    struct run *run = (struct run *)pp;
    /* The process goes after this call: it must not stay our producer. */
    if (run->out.t)
        tw_transport_unregister_producer(run->out.t);
    char how[TW_PROCESS_STATUS_STRLEN], line[TW_PROCESS_STATUS_STRLEN + 128];
    int n = snprintf(line, sizeof line, "run-cmd: '%s' (pid %ld) %s\n", run->name,
                     (long)tw_process_pid(pp->process),
                     tw_process_status_format(&status, how, sizeof how));
    output_write(&run->err, line, n < (int)sizeof line ? (size_t)n : sizeof line - 1);
    run->exit_code = status.how == TW_PROCESS_EXITED   ? status.exit_code
                     : status.how == TW_PROCESS_KILLED ? 128 + status.signo
                                                       : 1;
}

static void run_free(tw_process_protocol *pp)
{
    struct run *run = (struct run *)pp;
    run->freed = true;
    /* What is still queued for our outputs is written, then they close
     * (output_lost comes from the loop, never from inside this call). */
    if (run->out.t)
        tw_transport_lose_connection(run->out.t);
    if (run->err.t)
        tw_transport_lose_connection(run->err.t);
    maybe_stop(run);
}

static const tw_process_protocol_ops run_ops = {
    .connection_made = run_made,
    .out_received = run_out,
    .err_received = run_err,
    .process_ended = run_ended,
    .free = run_free,
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
    run.producer.ops = &cmd_producer_ops;
    output_open(&run.out, &run, 1);
    output_open(&run.err, &run, 2);
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
    if (rc < 0)
        run.exit_code = 127; /* run_free has been called: our outputs are closing */
    if (run.out.t || run.err.t || !run.freed)
        tw_reactor_run(r); /* until the command has ended and all is written */
    if (rc < 0) {
        fprintf(stderr, "run-cmd: %s\n", tw_failure_message(f));
        tw_failure_unref(f);
    }
    tw_signal_watch_stop(sigint);
    tw_signal_watch_stop(sigterm);
    tw_reactor_free(r);
    return run.exit_code;
}
