/* The process transport: a child's pipes as reactor watchers, its reaping,
 * and the process protocol's events. Contracts: process.h, transport.h.
 *
 * ---- Delivering from the reactor
 * Every event reaches the protocol from a reactor callback, never from
 * inside a call the application made (close_stdin, a write that found the
 * pipe broken, abort...). Such a call closes the pipe at once and marks it;
 * the report comes from `later`, a timer embedded in the process. The timer
 * is armed for the far future from the spawn on, so re-arming it to 0 when
 * there is something to report is a move inside the clock's heap that
 * never allocates and so never fails. What the reactor finds itself (end of
 * file, the child reaped) is reported at once.
 *
 * ---- Reaping
 * With a pidfd the process watches it for readability (the child exited)
 * and then calls waitpid(pid, WNOHANG). Without one (a kernel before 5.3,
 * or asked for) it holds a SIGCHLD watch of its own and calls waitpid for
 * its own pid on each delivery; a first check runs from `later` right after
 * the spawn, since the child may exit before the watch could see it. A
 * traced child's pidfd fires before waitpid can take it (its tracer waits
 * first): the process then moves to the SIGCHLD way. No waitpid(-1)
 * anywhere: the children of other libraries are theirs.
 *
 * ---- Pipes
 * A pipe the parent reads is watched for readability while not paused. A
 * pipe it writes is watched for readability too: the write end of a pipe
 * never becomes readable, but reports an error once the child has closed
 * the other end (or exited), which every backend hands over as readable,
 * so the protocol learns of it without writing (Twisted's ProcessWriter
 * does the same). A PTY's master is one descriptor for both directions. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <twine/alloc.h>
#include <twine/buffer.h>
#include <twine/error.h>
#include <twine/log.h>
#include <twine/net.h>

#include "net/fdtransport.h"
#include "process/process-internal.h"

#define NS                              TW__PROCESS_NS

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif
#ifndef TIOCGPTPEER
#define TIOCGPTPEER _IO('T', 0x41)
#endif

#define READS_PER_WAKEUP 4
#define MAX_CHILD_FD     1023
/* Where `later` waits while there is nothing to report. */
#define FAR_AWAY 1e9
/* How often `later` looks for the exit when nothing can tell us of it. */
#define POLL_INTERVAL 0.1

enum { D_READ = 1, D_WRITE = 2 };

enum pipe_state {
    PS_OPEN,
    PS_CLOSING,      /* written by the parent: closes once its queue is flushed */
    PS_LOST_PENDING, /* closed; child_connection_lost to be given from `later` */
    PS_DONE,         /* closed and reported */
};

struct pipe_end {
    tw_io io; /* io.data: the process; io.fd -1 once closed */
    int child_fd;
    uint8_t dir;   /* D_READ, D_WRITE, both for a PTY */
    uint8_t state; /* enum pipe_state */
    tw_wqueue queue;
};

enum {
    F_PTY = 1u << 0,
    F_PAUSED = 1u << 1,
    F_REAPED = 1u << 2,       /* the status is known (or given up on) */
    F_EXIT_PENDING = 1u << 3, /* process_exited not given yet */
    F_ENDED = 1u << 4,        /* process_ended given or being given */
    F_FIRST_CHECK = 1u << 5,  /* SIGCHLD mode: `later` checks once after the spawn */
    F_POLL_EXIT = 1u << 6,    /* no way to be told of the exit: `later` polls for it */
};

struct tw_process {
    tw_transport base; /* first: a tw_transport * is a tw_process * */
    tw_process_protocol *pp;
    tw_handle handle;
    tw_timer later;
    tw_io pidfd; /* fd -1 when there is none */
    tw_signal_watch *sigchld;
    pid_t pid;
    uint32_t flags;
    tw_process_status status;
    char *name;           /* the executable, for messages */
    struct tw__flow flow; /* stdin's consumer side */
    struct pipe_end *in;  /* child fd 0 as a pipe we write, or the PTY; NULL if none */
    size_t npipes;
    struct pipe_end pipes[];
};

static const tw_transport_ops process_ops;

static tw_process *P(const tw_transport *t)
{
    return (tw_process *)t;
}

/* ---- Statuses, addresses, protocols */

bool tw_process_status_ok(const tw_process_status *s)
{
    return s && s->how == TW_PROCESS_EXITED && s->exit_code == 0;
}

const char *tw_process_status_format(const tw_process_status *s, char *buf, size_t size)
{
    if (size == 0)
        return buf;
    if (!s)
        snprintf(buf, size, "ended in an unknown way");
    else if (s->how == TW_PROCESS_EXITED)
        snprintf(buf, size, "exited with code %d", s->exit_code);
    else if (s->how == TW_PROCESS_KILLED)
        snprintf(buf, size, "killed by signal %d (%s)%s", s->signo, strsignal(s->signo),
                 s->core_dumped ? ", core dumped" : "");
    else
        snprintf(buf, size, "ended in an unknown way");
    return buf;
}

tw_failure *tw_process_status_failure(const tw_process_status *s, const char *name, pid_t pid)
{
    char how[TW_PROCESS_STATUS_STRLEN];
    tw_process_status_format(s, how, sizeof how);
    int code = tw_process_status_ok(s) ? TW_ECONNDONE : TW_EPROCESSTERMINATED;
    if (name)
        return tw_failure_new(code, NULL, "process '%s' (pid %ld) %s", name, (long)pid, how);
    return tw_failure_new(code, NULL, "process (pid %ld) %s", (long)pid, how);
}

static tw_process_status status_from_wait(int st)
{
    tw_process_status s = {.how = TW_PROCESS_UNKNOWN, .exit_code = -1};
    if (WIFEXITED(st)) {
        s.how = TW_PROCESS_EXITED;
        s.exit_code = WEXITSTATUS(st);
    } else if (WIFSIGNALED(st)) {
        s.how = TW_PROCESS_KILLED;
        s.signo = WTERMSIG(st);
        s.core_dumped = WCOREDUMP(st);
    }
    return s;
}

void tw_address_from_process(tw_address *out, pid_t pid)
{
    memset(out, 0, sizeof *out);
    out->u.proc.family = TW_AF_PROCESS;
    out->u.proc.pid = pid;
    out->len = sizeof out->u.proc;
}

void tw_address_pipe(tw_address *out)
{
    memset(out, 0, sizeof *out);
    out->u.proc.family = TW_AF_PIPE;
    out->len = sizeof out->u.proc;
}

void tw_process_protocol_init(tw_process_protocol *pp, const tw_process_protocol_ops *ops)
{
    memset(pp, 0, sizeof *pp);
    pp->ops = ops;
}

static void pp_release(tw_process_protocol *pp)
{
    if (!pp)
        return;
    pp->process = NULL;
    if (pp->ops && pp->ops->free)
        pp->ops->free(pp);
}

/* ---- Calls into the protocol */

static void say_data(tw_process *p, int child_fd, const char *data, size_t len)
{
    tw_process_protocol *pp = p->pp;
    const tw_process_protocol_ops *o = pp->ops;
    if (!o)
        return;
    if (o->child_data_received)
        o->child_data_received(pp, child_fd, data, len);
    else if (child_fd == 1 && o->out_received)
        o->out_received(pp, data, len);
    else if (child_fd == 2 && o->err_received)
        o->err_received(pp, data, len);
}

static void say_fd_lost(tw_process *p, int child_fd)
{
    tw_process_protocol *pp = p->pp;
    const tw_process_protocol_ops *o = pp->ops;
    if (!o)
        return;
    if (o->child_connection_lost)
        o->child_connection_lost(pp, child_fd);
    else if (child_fd == 0 && o->in_connection_lost)
        o->in_connection_lost(pp);
    else if (child_fd == 1 && o->out_connection_lost)
        o->out_connection_lost(pp);
    else if (child_fd == 2 && o->err_connection_lost)
        o->err_connection_lost(pp);
}

/* ---- Pipes: interest, closing */

static bool ended(const tw_process *p)
{
    return p->flags & F_ENDED;
}

static bool pipe_open(const struct pipe_end *pe)
{
    return pe->state == PS_OPEN || pe->state == PS_CLOSING;
}

static bool want_read(const tw_process *p, const struct pipe_end *pe)
{
    if (pe->dir == D_WRITE)
        return pipe_open(pe); /* the error that says the child closed it */
    if (pe->dir == (D_READ | D_WRITE))
        return pe->state == PS_OPEN && !(p->flags & F_PAUSED);
    return pe->state == PS_OPEN && !(p->flags & F_PAUSED);
}

static bool want_write(const struct pipe_end *pe)
{
    return (pe->dir & D_WRITE) && pipe_open(pe) && !tw_wqueue_is_empty(&pe->queue);
}

static int update_interest(tw_process *p, struct pipe_end *pe)
{
    tw_reactor *r = p->base.reactor;
    if (pe->io.fd < 0)
        return 0;
    int rc =
        want_read(p, pe) ? tw_reactor_add_reader(r, &pe->io) : tw_reactor_remove_reader(r, &pe->io);
    if (rc < 0)
        return rc;
    return want_write(pe) ? tw_reactor_add_writer(r, &pe->io)
                          : tw_reactor_remove_writer(r, &pe->io);
}

/* Closes the descriptor and drops what was queued for it. */
static void close_pipe_fd(tw_process *p, struct pipe_end *pe)
{
    if (pe->io.fd >= 0) {
        tw_reactor_remove_reader(p->base.reactor, &pe->io);
        tw_reactor_remove_writer(p->base.reactor, &pe->io);
        close(pe->io.fd);
        pe->io.fd = -1;
    }
    tw_wqueue_clear(&pe->queue); /* may run release callbacks: their writes are refused */
    if (pe == p->in)
        tw__flow_stop(&p->flow);
}

static void report_pipe(tw_process *p, struct pipe_end *pe)
{
    pe->state = PS_DONE;
    if (pe->dir == (D_READ | D_WRITE)) {
        for (int fd = 0; fd <= 2 && !ended(p); fd++)
            say_fd_lost(p, fd);
    } else {
        say_fd_lost(p, pe->child_fd);
    }
}

static void kick(tw_process *p)
{
    if (tw_timer_start(&p->later, 0) < 0) /* an armed timer moves without allocating */
        tw_log_error(NS, "process %ld: cannot schedule a report; it comes at shutdown",
                     (long)p->pid);
}

/* From inside a call of the application: closed now, reported later. */
static void pipe_lost_later(tw_process *p, struct pipe_end *pe)
{
    if (!pipe_open(pe))
        return;
    pe->state = PS_LOST_PENDING; /* before the clear: release callbacks' writes are refused */
    close_pipe_fd(p, pe);
    kick(p);
}

static void maybe_end(tw_process *p);

/* From the reactor: closed and reported now. */
static void pipe_lost_now(tw_process *p, struct pipe_end *pe)
{
    if (pe->state == PS_DONE)
        return;
    pe->state = PS_LOST_PENDING;
    close_pipe_fd(p, pe);
    if (!ended(p)) {
        report_pipe(p, pe);
        maybe_end(p);
    }
}

/* ---- Reaping and ending */

static void stop_watching(tw_process *p)
{
    if (p->pidfd.fd >= 0) {
        tw_reactor_remove_reader(p->base.reactor, &p->pidfd);
        close(p->pidfd.fd);
        p->pidfd.fd = -1;
    }
    tw_signal_watch_stop(p->sigchld);
    p->sigchld = NULL;
}

/* waitpid for our child, without blocking. True once it is reaped. */
static bool check_exit(tw_process *p)
{
    if (p->flags & F_REAPED)
        return true;
    int st;
    pid_t got;
    do {
        got = waitpid(p->pid, &st, WNOHANG);
    } while (got < 0 && errno == EINTR);
    if (got == 0)
        return false;
    if (got == p->pid) {
        p->status = status_from_wait(st);
    } else {
        int err = errno;
        /* ECHILD: reaped by someone else (SIGCHLD ignored, a waitpid(-1)). */
        p->status = (tw_process_status){.how = TW_PROCESS_UNKNOWN, .exit_code = -1};
        tw_log_warn(NS, "process %ld: reaped by someone else (%s); its status is unknown",
                    (long)p->pid, tw_strerror(-err));
    }
    p->flags |= F_REAPED | F_EXIT_PENDING;
    stop_watching(p);
    return true;
}

static void deliver_exit(tw_process *p)
{
    if (!(p->flags & F_EXIT_PENDING) || ended(p))
        return;
    p->flags &= ~(uint32_t)F_EXIT_PENDING;
    tw_process_protocol *pp = p->pp;
    if (pp->ops && pp->ops->process_exited)
        pp->ops->process_exited(pp, p->status);
}

/* The last event: process_ended, then free, then the process lets go of
 * itself. */
static void end(tw_process *p)
{
    if (ended(p))
        return;
    p->flags |= F_ENDED;
    tw_reactor_remove_handle(p->base.reactor, &p->handle);
    tw_timer_stop(&p->later);
    stop_watching(p);
    for (size_t i = 0; i < p->npipes; i++)
        close_pipe_fd(p, &p->pipes[i]);
    tw__flow_stop(&p->flow);
    tw_process_protocol *pp = p->pp;
    if (pp->ops && pp->ops->process_ended)
        pp->ops->process_ended(pp, p->status);
    p->pp = NULL;
    pp_release(pp);
    tw_transport_unref(&p->base);
}

static void maybe_end(tw_process *p)
{
    if (ended(p) || !(p->flags & F_REAPED) || (p->flags & F_EXIT_PENDING))
        return;
    for (size_t i = 0; i < p->npipes; i++)
        if (p->pipes[i].state != PS_DONE)
            return;
    end(p);
}

static void on_exit_seen(tw_process *p)
{
    if (!check_exit(p))
        return;
    deliver_exit(p);
    maybe_end(p);
}

static void on_sigchld(tw_reactor *r, int signo, void *arg);

/* The pidfd says the child exited but waitpid cannot take it yet: a tracer
 * (strace -f, a debugger) gets the exit first and hands the zombie back
 * only once it has waited for it, which raises SIGCHLD here. So reaping
 * goes on through SIGCHLD (the pidfd stays, for signals), then checks at
 * once in case the tracer let go meanwhile. Without a watch (out of
 * memory), `later` polls instead. */
static void switch_to_sigchld(tw_process *p)
{
    tw_reactor_remove_reader(p->base.reactor, &p->pidfd);
    int rc = tw_reactor_watch_signal(p->base.reactor, SIGCHLD, on_sigchld, p, &p->sigchld);
    if (rc < 0) {
        tw_log_warn(NS, "process %ld: cannot watch SIGCHLD (%s); polling for its exit",
                    (long)p->pid, tw_strerror(rc));
        p->flags |= F_POLL_EXIT;
        tw_timer_start(&p->later, POLL_INTERVAL); /* armed: moves without allocating */
        return;
    }
    tw_log_debug(NS, "process %ld: exited but not waitable yet (traced?); watching SIGCHLD",
                 (long)p->pid);
    check_exit(p);
}

static void on_pidfd(tw_io *io, unsigned events)
{
    tw_process *p = io->data;
    (void)events;
    tw_transport_ref(&p->base);
    if (!check_exit(p))
        switch_to_sigchld(p);
    deliver_exit(p);
    maybe_end(p);
    tw_transport_unref(&p->base);
}

static void on_sigchld(tw_reactor *r, int signo, void *arg)
{
    tw_process *p = arg;
    (void)r;
    (void)signo;
    tw_transport_ref(&p->base);
    on_exit_seen(p);
    tw_transport_unref(&p->base);
}

static void on_later(tw_timer *t)
{
    tw_process *p = container_of(t, tw_process, later);
    tw_transport_ref(&p->base);
    if (p->flags & (F_FIRST_CHECK | F_POLL_EXIT)) {
        p->flags &= ~(uint32_t)F_FIRST_CHECK;
        check_exit(p);
    }
    for (size_t i = 0; i < p->npipes && !ended(p); i++)
        if (p->pipes[i].state == PS_LOST_PENDING)
            report_pipe(p, &p->pipes[i]);
    deliver_exit(p);
    maybe_end(p);
    if (!ended(p) && !tw_timer_active(&p->later)) /* fits where it just left: no allocation */
        tw_timer_start(&p->later, (p->flags & (F_POLL_EXIT | F_REAPED)) == F_POLL_EXIT
                                      ? POLL_INTERVAL
                                      : FAR_AWAY);
    tw_transport_unref(&p->base);
}

/* Reactor shutdown: stop watching, leave the child running (Twisted's
 * choice), close the pipes and end. */
static void on_handle_close(tw_handle *h)
{
    tw_process *p = container_of(h, tw_process, handle);
    tw_transport_ref(&p->base);
    if (!check_exit(p)) {
        p->status = (tw_process_status){.how = TW_PROCESS_UNKNOWN, .exit_code = -1};
        p->flags |= F_REAPED;
        stop_watching(p);
    }
    for (size_t i = 0; i < p->npipes && !ended(p); i++) {
        struct pipe_end *pe = &p->pipes[i];
        if (pe->state == PS_DONE)
            continue;
        pe->state = PS_LOST_PENDING;
        close_pipe_fd(p, pe);
        report_pipe(p, pe);
    }
    deliver_exit(p);
    end(p);
    tw_transport_unref(&p->base);
}

/* ---- Reading */

static void do_read(tw_process *p, struct pipe_end *pe)
{
    char *buf = tw__process_read_buffer(); /* made at the spawn */
    int data_fd = pe->dir == (D_READ | D_WRITE) ? 1 : pe->child_fd;
    for (int i = 0; i < READS_PER_WAKEUP; i++) {
        ssize_t n = tw__pipe_read(pe->io.fd, buf, TW_NET_READ_SIZE);
        if (n == -EAGAIN)
            return;
        if (n <= 0) {
            /* End of file; EIO from a PTY's master once the terminal's last
             * user has gone; any other error ends the pipe as well. */
            if (n < 0 && n != -EIO)
                tw_log_debug(NS, "process %ld: reading fd %d: %s", (long)p->pid, pe->child_fd,
                             tw_strerror((int)n));
            pipe_lost_now(p, pe);
            return;
        }
        say_data(p, data_fd, buf, (size_t)n);
        if (ended(p) || pe->state != PS_OPEN || (p->flags & F_PAUSED) || n < TW_NET_READ_SIZE)
            return;
    }
}

/* ---- Writing */

static bool pull_producer(const tw_process *p, const struct pipe_end *pe)
{
    return pe == p->in && tw__flow_pull(&p->flow);
}

/* After the queue shrank, from the reactor. */
static void after_drain(tw_process *p, struct pipe_end *pe)
{
    if (!pipe_open(pe) || ended(p))
        return;
    if (tw_wqueue_is_empty(&pe->queue) && pe->state == PS_CLOSING) {
        pipe_lost_now(p, pe);
        return;
    }
    if (pe == p->in && pe->state == PS_OPEN &&
        tw__flow_drained(&p->flow, tw_wqueue_size(&pe->queue)) && (ended(p) || !pipe_open(pe)))
        return;
    if (update_interest(p, pe) < 0)
        pipe_lost_now(p, pe);
}

static void on_pipe_io(tw_io *io, unsigned events)
{
    struct pipe_end *pe = container_of(io, struct pipe_end, io);
    tw_process *p = io->data;
    tw_transport_ref(&p->base);
    if ((events & TW_IO_WRITE) && (pe->dir & D_WRITE) && pipe_open(pe)) {
        int rc = tw__pipe_flush(&pe->io, &pe->queue);
        if (rc < 0)
            pipe_lost_now(p, pe);
        else
            after_drain(p, pe);
    }
    if ((events & TW_IO_READ) && pipe_open(pe) && !ended(p)) {
        if (pe->dir & D_READ) {
            if (want_read(p, pe))
                do_read(p, pe);
        } else {
            pipe_lost_now(p, pe); /* the child closed its end */
        }
    }
    tw_transport_unref(&p->base);
}

/* Something was queued: watch for writability; pause stdin's streaming
 * producer above the high-water mark. */
static int queued(tw_process *p, struct pipe_end *pe)
{
    if (update_interest(p, pe) < 0) {
        pipe_lost_later(p, pe);
        return 0; /* accepted; the loss says why it went nowhere */
    }
    if (pe == p->in)
        tw__flow_queued(&p->flow, tw_wqueue_size(&pe->queue));
    return 0;
}

static int pipe_write_iov(tw_process *p, struct pipe_end *pe, const struct iovec *iov, int iovcnt)
{
    if (!pe || pe->state != PS_OPEN || ended(p))
        return TW_ENOTCONN;
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++)
        total += iov[i].iov_len;
    if (total == 0)
        return 0;
    size_t done = 0;
    if (tw_wqueue_is_empty(&pe->queue) && !pull_producer(p, pe) && iovcnt <= IOV_MAX) {
        ssize_t n = tw__pipe_writev(pe->io.fd, iov, iovcnt);
        if (n < 0) {
            pipe_lost_later(p, pe);
            return 0;
        }
        done = (size_t)n;
        if (done == total)
            return 0;
    }
    size_t put = 0;
    int rc = tw_wqueue_append_iov(&pe->queue, iov, iovcnt, done, &put);
    if (rc < 0) {
        if (done + put > 0)
            pipe_lost_later(p, pe); /* a hole in the byte stream */
        return rc;
    }
    return queued(p, pe);
}

static struct pipe_end *pipe_for(tw_process *p, int child_fd)
{
    if (p->flags & F_PTY)
        return child_fd == 0 ? p->in : NULL;
    for (size_t i = 0; i < p->npipes; i++)
        if (p->pipes[i].child_fd == child_fd)
            return &p->pipes[i];
    return NULL;
}

/* ---- Transport ops */

static int proc_write(tw_transport *t, const void *data, size_t len)
{
    struct iovec iov = {(void *)data, len};
    return pipe_write_iov(P(t), P(t)->in, &iov, 1);
}

static int proc_write_iov(tw_transport *t, const struct iovec *iov, int iovcnt)
{
    return pipe_write_iov(P(t), P(t)->in, iov, iovcnt);
}

static int proc_write_zerocopy(tw_transport *t, const void *data, size_t len, tw_release_fn release,
                               void *arg)
{
    tw_process *p = P(t);
    struct pipe_end *pe = p->in;
    if (!pe || pe->state != PS_OPEN || ended(p))
        return TW_ENOTCONN;
    size_t done = 0;
    if (len > 0 && tw_wqueue_is_empty(&pe->queue) && !pull_producer(p, pe)) {
        struct iovec iov = {(void *)data, len};
        ssize_t n = tw__pipe_writev(pe->io.fd, &iov, 1);
        if (n < 0)
            pipe_lost_later(p, pe);
        if (n < 0 || (size_t)n == len) {
            if (release)
                release(arg);
            return 0;
        }
        done = (size_t)n;
    }
    int rc =
        tw_wqueue_append_zerocopy(&pe->queue, (const char *)data + done, len - done, release, arg);
    if (rc < 0) {
        if (done > 0)
            pipe_lost_later(p, pe);
        return rc;
    }
    return len > 0 ? queued(p, pe) : 0;
}

/* closeChildFD for one pipe: a written one after its queue, a read one now. */
static void close_pipe(tw_process *p, struct pipe_end *pe)
{
    if (pe->state != PS_OPEN)
        return;
    if ((pe->dir & D_WRITE) && !tw_wqueue_is_empty(&pe->queue)) {
        pe->state = PS_CLOSING;
        if (update_interest(p, pe) < 0)
            pipe_lost_later(p, pe);
        return;
    }
    pipe_lost_later(p, pe);
}

static int proc_lose_connection(tw_transport *t)
{
    tw_process *p = P(t);
    for (size_t i = 0; i < p->npipes && !ended(p); i++)
        close_pipe(p, &p->pipes[i]);
    return 0;
}

static int proc_abort_connection(tw_transport *t)
{
    tw_process *p = P(t);
    for (size_t i = 0; i < p->npipes && !ended(p); i++)
        pipe_lost_later(p, &p->pipes[i]);
    return 0;
}

static int proc_lose_write_connection(tw_transport *t)
{
    tw_process *p = P(t);
    if (ended(p))
        return TW_ENOTCONN;
    if (p->flags & F_PTY)
        return TW_ENOTSUP;
    if (p->in)
        close_pipe(p, p->in);
    return 0;
}

static int proc_get_peer(const tw_transport *t, tw_address *out)
{
    if (ended(P(t)))
        return TW_ENOTCONN;
    tw_address_from_process(out, P(t)->pid);
    return 0;
}

static int proc_get_host(const tw_transport *t, tw_address *out)
{
    if (ended(P(t)))
        return TW_ENOTCONN;
    tw_address_pipe(out);
    return 0;
}

static int set_paused(tw_process *p, bool paused)
{
    if (ended(p))
        return TW_ENOTCONN;
    if (paused)
        p->flags |= F_PAUSED;
    else
        p->flags &= ~(uint32_t)F_PAUSED;
    for (size_t i = 0; i < p->npipes; i++) {
        struct pipe_end *pe = &p->pipes[i];
        if ((pe->dir & D_READ) && update_interest(p, pe) < 0)
            pipe_lost_later(p, pe);
    }
    return 0;
}

static int proc_pause_producing(tw_transport *t)
{
    return set_paused(P(t), true);
}

static int proc_resume_producing(tw_transport *t)
{
    return set_paused(P(t), false);
}

static int proc_register_producer(tw_transport *t, tw_producer *producer, bool streaming)
{
    tw_process *p = P(t);
    if (ended(p) || !p->in || p->in->state != PS_OPEN)
        return TW_ENOTCONN;
    return tw__flow_register(&p->flow, t, producer, streaming, tw_wqueue_size(&p->in->queue));
}

static int proc_unregister_producer(tw_transport *t)
{
    tw_process *p = P(t);
    if (ended(p))
        return TW_ENOTCONN;
    p->flow.producer = NULL;
    return 0;
}

static size_t proc_write_buffer_size(const tw_transport *t)
{
    const tw_process *p = P(t);
    return ended(p) || !p->in ? 0 : tw_wqueue_size(&p->in->queue);
}

static int proc_set_write_buffer_limits(tw_transport *t, size_t high, size_t low)
{
    tw_process *p = P(t);
    if (ended(p))
        return TW_ENOTCONN;
    p->flow.high = high;
    p->flow.low = low;
    return 0;
}

static void proc_destroy(tw_transport *t)
{
    tw_process *p = P(t);
    tw_free(p->name);
    tw_free(p);
}

static const tw_transport_ops process_ops = {
    .name = "process",
    .write = proc_write,
    .write_iov = proc_write_iov,
    .write_zerocopy = proc_write_zerocopy,
    .lose_connection = proc_lose_connection,
    .abort_connection = proc_abort_connection,
    .lose_write_connection = proc_lose_write_connection,
    .get_peer = proc_get_peer,
    .get_host = proc_get_host,
    .pause_producing = proc_pause_producing,
    .resume_producing = proc_resume_producing,
    .register_producer = proc_register_producer,
    .unregister_producer = proc_unregister_producer,
    .write_buffer_size = proc_write_buffer_size,
    .set_write_buffer_limits = proc_set_write_buffer_limits,
    .set_option = NULL,
    .send_fds = NULL,
    .destroy = proc_destroy,
};

/* ---- The process API */

tw_transport *tw_process_transport(tw_process *p)
{
    return p ? &p->base : NULL;
}

tw_process *tw_process_from_transport(tw_transport *t)
{
    return t && t->ops == &process_ops ? P(t) : NULL;
}

pid_t tw_process_pid(const tw_process *p)
{
    return p ? p->pid : 0;
}

tw_process_protocol *tw_process_protocol_of(const tw_process *p)
{
    return p ? p->pp : NULL;
}

int tw_process_write_to_child(tw_process *p, int child_fd, const void *data, size_t len)
{
    if (!p || (!data && len > 0))
        return TW_EINVAL;
    struct pipe_end *pe = pipe_for(p, child_fd);
    if (!pe || !(pe->dir & D_WRITE))
        return TW_ENOTCONN;
    struct iovec iov = {(void *)data, len};
    return pipe_write_iov(p, pe, &iov, 1);
}

int tw_process_close_child_fd(tw_process *p, int child_fd)
{
    if (!p)
        return TW_EINVAL;
    if (p->flags & F_PTY)
        return TW_ENOTSUP;
    struct pipe_end *pe = pipe_for(p, child_fd);
    if (!pe)
        return TW_ENOTCONN;
    close_pipe(p, pe);
    return 0;
}

int tw_process_close_stdin(tw_process *p)
{
    return tw_process_close_child_fd(p, 0);
}

int tw_process_close_stdout(tw_process *p)
{
    return tw_process_close_child_fd(p, 1);
}

int tw_process_close_stderr(tw_process *p)
{
    return tw_process_close_child_fd(p, 2);
}

int tw_process_signal(tw_process *p, int signo)
{
    if (!p || signo < 0 || signo >= NSIG)
        return TW_EINVAL;
    if (p->flags & F_REAPED)
        return -ESRCH;
    if (p->pidfd.fd >= 0) {
        if (syscall(SYS_pidfd_send_signal, p->pidfd.fd, signo, NULL, 0) == 0)
            return 0;
        if (errno != ENOSYS)
            return -errno;
    }
    /* Not reaped yet, so the pid is still ours (a zombie at worst). */
    return kill(p->pid, signo) == 0 ? 0 : -errno;
}

/* ---- Spawning */

static const tw_child_fd default_map[] = {
    {0, TW_CHILD_FD_WRITE, -1},
    {1, TW_CHILD_FD_READ, -1},
    {2, TW_CHILD_FD_READ, -1},
};

static int check_map(const tw_child_fd *map, size_t n, tw_failure **f)
{
    /* The child inherits our limit, and no descriptor can be made at or
     * above it: said here, rather than by a child that fails. */
    struct rlimit rl;
    rlim_t limit = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? rl.rlim_cur : RLIM_INFINITY;
    if (n > TW_PROCESS_MAX_CHILD_FDS) {
        *f = tw_failure_new(TW_EINVAL, NULL, "spawn: %zu child descriptors (at most %d)", n,
                            TW_PROCESS_MAX_CHILD_FDS);
        return TW_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        const tw_child_fd *c = &map[i];
        if (c->child_fd < 0 || c->child_fd > MAX_CHILD_FD) {
            *f = tw_failure_new(TW_EINVAL, NULL, "spawn: child descriptor %d out of range (0-%d)",
                                c->child_fd, MAX_CHILD_FD);
            return TW_EINVAL;
        }
        if (limit != RLIM_INFINITY && (rlim_t)c->child_fd >= limit) {
            *f = tw_failure_new(-EMFILE, NULL,
                                "spawn: child descriptor %d is not below the descriptor limit "
                                "(RLIMIT_NOFILE %llu)",
                                c->child_fd, (unsigned long long)limit);
            return -EMFILE;
        }
        for (size_t j = 0; j < i; j++)
            if (map[j].child_fd == c->child_fd) {
                *f = tw_failure_new(TW_EINVAL, NULL, "spawn: child descriptor %d given twice",
                                    c->child_fd);
                return TW_EINVAL;
            }
        if (c->kind == TW_CHILD_FD_INHERIT) {
            if (c->parent_fd < 0 || fcntl(c->parent_fd, F_GETFD) < 0) {
                *f = tw_failure_new(TW_EINVAL, NULL,
                                    "spawn: child descriptor %d: parent descriptor %d is not open",
                                    c->child_fd, c->parent_fd);
                return TW_EINVAL;
            }
        } else if (c->kind != TW_CHILD_FD_READ && c->kind != TW_CHILD_FD_WRITE) {
            *f = tw_failure_new(TW_EINVAL, NULL, "spawn: child descriptor %d: unknown kind %d",
                                c->child_fd, (int)c->kind);
            return TW_EINVAL;
        }
    }
    return 0;
}

/* A pipe whose parent end is non-blocking; both ends close-on-exec. */
static int make_pipe(bool parent_reads, int *parent, int *child)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0)
        return -errno;
    *parent = parent_reads ? fds[0] : fds[1];
    *child = parent_reads ? fds[1] : fds[0];
    if (fcntl(*parent, F_SETFL, O_NONBLOCK) < 0) {
        int err = -errno;
        close(fds[0]);
        close(fds[1]);
        return err;
    }
    return 0;
}

static int make_pty(int *master, int *slave)
{
    int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (m < 0)
        return -errno;
    int s = -1;
    if (unlockpt(m) == 0) {
        s = ioctl(m, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (s < 0) { /* before Linux 4.13 */
            char name[64];
            if (ptsname_r(m, name, sizeof name) == 0)
                s = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
        }
    }
    if (s < 0 || fcntl(m, F_SETFL, O_NONBLOCK) < 0) {
        int err = -errno;
        if (s >= 0)
            close(s);
        close(m);
        return err;
    }
    struct winsize ws = {.ws_row = 24, .ws_col = 80};
    ioctl(m, TIOCSWINSZ, &ws);
    *master = m;
    *slave = s;
    return 0;
}

static bool sigchld_forced(const tw_process_options *o)
{
    if (o->reap_with_sigchld)
        return true;
    const char *e = getenv("TWINE_PROCESS_REAPER");
    return e && strcmp(e, "sigchld") == 0;
}

/* Undoes a spawn that did not happen: descriptors closed, watches and
 * timers stopped, memory freed. */
static void discard(tw_process *p, const int *child_ends, size_t nchild)
{
    for (size_t i = 0; i < nchild; i++)
        if (child_ends[i] >= 0)
            close(child_ends[i]);
    if (!p)
        return;
    for (size_t i = 0; i < p->npipes; i++)
        close_pipe_fd(p, &p->pipes[i]);
    tw_timer_stop(&p->later);
    tw_signal_watch_stop(p->sigchld);
    tw_free(p->name);
    tw_free(p);
}

static int fail_with(tw_failure **failure, tw_failure *f)
{
    int code = tw_failure_code(f);
    if (failure)
        *failure = f;
    else
        tw_failure_unref(f);
    return code;
}

int tw_spawn_process(tw_reactor *r, tw_process_protocol *pp, const char *executable,
                     char *const argv[], char *const env[], const char *working_dir,
                     const tw_process_options *opts, tw_process **out, tw_failure **failure)
{
    if (failure)
        *failure = NULL;
    if (out)
        *out = NULL;
    if (!r || !pp || !executable) {
        pp_release(pp);
        return fail_with(
            failure, tw_failure_new(TW_EINVAL, NULL, "spawn: no reactor, protocol or executable"));
    }
    static const tw_process_options no_options;
    if (!opts)
        opts = &no_options;
    const tw_child_fd *map = opts->child_fds;
    size_t nmap = opts->n_child_fds;
    if (!map || nmap == 0) {
        map = default_map;
        nmap = sizeof default_map / sizeof default_map[0];
    }
    tw_failure *f = NULL;
    int rc = opts->use_pty ? 0 : check_map(map, nmap, &f);
    if (rc < 0) {
        pp_release(pp);
        return fail_with(failure, f);
    }

    char *path = NULL;
    rc = tw__spawn_resolve(executable, env, working_dir, &path);
    if (rc < 0) {
        pp_release(pp);
        return fail_with(failure,
                         tw_failure_new(rc, NULL, "cannot execute '%s': %s", executable,
                                        rc == TW_ENOENT ? "no such file" : tw_strerror(rc)));
    }

    /* Everything that can fail for want of memory or descriptors comes
     * before the child exists. */
    size_t npipes = 0;
    if (opts->use_pty) {
        npipes = 1;
    } else {
        for (size_t i = 0; i < nmap; i++)
            npipes += map[i].kind != TW_CHILD_FD_INHERIT;
    }
    struct tw__fd_move moves[TW_PROCESS_MAX_CHILD_FDS];
    int child_ends[TW_PROCESS_MAX_CHILD_FDS];
    size_t nchild = 0;
    int nmoves = 0;
    tw_process *p = NULL;
    char *name = NULL;
    if (!tw__process_read_buffer() || !(name = tw_strdup(executable)) ||
        !(p = tw_calloc(1, sizeof *p + npipes * sizeof p->pipes[0]))) {
        tw_free(name);
        tw_free(path);
        pp_release(pp);
        return fail_with(failure, tw_failure_new(TW_ENOMEM, NULL, NULL));
    }
    tw_transport_init(&p->base, &process_ops, r);
    p->name = name;
    p->pp = pp;
    tw__flow_init(&p->flow);
    p->status = (tw_process_status){.how = TW_PROCESS_UNKNOWN, .exit_code = -1};
    tw_io_init(&p->pidfd, -1, on_pidfd, p);
    tw_timer_init(&p->later, tw_reactor_clock(r), on_later);
    p->npipes = npipes;
    for (size_t i = 0; i < npipes; i++) {
        tw_io_init(&p->pipes[i].io, -1, on_pipe_io, p);
        tw_wqueue_init(&p->pipes[i].queue);
        p->pipes[i].state = PS_OPEN;
    }

    const char *what = "create a pipe";
    int pty_slave = -1;
    if (opts->use_pty) {
        p->flags |= F_PTY;
        struct pipe_end *pe = &p->pipes[0];
        pe->dir = D_READ | D_WRITE;
        pe->child_fd = 0;
        what = "open a pseudo-terminal";
        rc = make_pty(&pe->io.fd, &pty_slave);
        if (rc == 0) {
            child_ends[nchild++] = pty_slave;
            for (int fd = 0; fd <= 2; fd++)
                moves[nmoves++] = (struct tw__fd_move){fd, pty_slave};
            p->in = pe;
        }
    } else {
        size_t k = 0;
        for (size_t i = 0; i < nmap && rc == 0; i++) {
            if (map[i].kind == TW_CHILD_FD_INHERIT) {
                moves[nmoves++] = (struct tw__fd_move){map[i].child_fd, map[i].parent_fd};
                continue;
            }
            struct pipe_end *pe = &p->pipes[k++];
            bool reads = map[i].kind == TW_CHILD_FD_READ;
            pe->dir = reads ? D_READ : D_WRITE;
            pe->child_fd = map[i].child_fd;
            int child_end = -1;
            rc = make_pipe(reads, &pe->io.fd, &child_end);
            if (rc == 0) {
                child_ends[nchild++] = child_end;
                moves[nmoves++] = (struct tw__fd_move){map[i].child_fd, child_end};
                if (pe->child_fd == 0 && !reads)
                    p->in = pe;
            }
        }
    }
    for (size_t i = 0; i < npipes && rc == 0; i++) {
        what = "watch a pipe";
        rc = update_interest(p, &p->pipes[i]);
    }
    bool sigchld = sigchld_forced(opts);
    if (rc == 0 && sigchld) {
        what = "watch SIGCHLD";
        rc = tw_reactor_watch_signal(r, SIGCHLD, on_sigchld, p, &p->sigchld);
    }
    if (rc == 0) {
        what = "arm its timer";
        rc = tw_timer_start(&p->later, FAR_AWAY);
    }
    if (rc < 0) {
        discard(p, child_ends, nchild);
        tw_free(path);
        pp_release(pp);
        return fail_with(failure, tw_failure_new(rc, NULL, "cannot spawn '%s': cannot %s: %s",
                                                 executable, what, tw_strerror(rc)));
    }

    struct tw__spawn_plan plan = {
        .path = path,
        .argv = argv,
        .envp = env ? env : environ,
        .cwd = working_dir,
        .moves = moves,
        .nmoves = nmoves,
        .pty_slave = pty_slave,
        .set_uid = opts->set_uid,
        .set_gid = opts->set_gid,
        .uid = opts->uid,
        .gid = opts->gid,
        .want_pidfd = !sigchld,
    };
    char *const default_argv[] = {(char *)executable, NULL};
    if (!argv)
        plan.argv = default_argv;
    enum tw__spawn_stage stage;
    int pidfd = -1;
    rc = tw__spawn(&plan, &p->pid, &pidfd, &stage);
    tw_free(path);
    discard(NULL, child_ends, nchild); /* the child has its copies */
    nchild = 0;
    if (rc < 0) {
        discard(p, NULL, 0);
        pp_release(pp);
        if (stage == TW__STAGE_SETUID)
            f = tw_failure_new(rc, NULL, "cannot set the user id to %ld for '%s': %s",
                               (long)opts->uid, executable, tw_strerror(rc));
        else if (stage == TW__STAGE_SETGID)
            f = tw_failure_new(rc, NULL, "cannot set the group id to %ld for '%s': %s",
                               (long)opts->gid, executable, tw_strerror(rc));
        else if (stage == TW__STAGE_CHDIR)
            f = tw_failure_new(rc, NULL, "cannot change to '%s' for '%s': %s", working_dir,
                               executable, tw_strerror(rc));
        else
            f = tw_failure_new(rc, NULL, "cannot %s '%s': %s", tw__spawn_stage_name(stage),
                               executable, tw_strerror(rc));
        return fail_with(failure, f);
    }

    /* The child runs: from here on nothing may fail without it being
     * watched, so the fallbacks below end in SIGCHLD, and the very last one
     * in killing what cannot be watched. */
    if (pidfd >= 0) {
        p->pidfd.fd = pidfd;
        if (tw_reactor_add_reader(r, &p->pidfd) < 0) {
            close(pidfd);
            p->pidfd.fd = -1;
        }
    }
    if (p->pidfd.fd < 0 && !p->sigchld) {
        rc = tw_reactor_watch_signal(r, SIGCHLD, on_sigchld, p, &p->sigchld);
        if (rc < 0) {
            kill(p->pid, SIGKILL);
            while (waitpid(p->pid, NULL, 0) < 0 && errno == EINTR)
                ;
            discard(p, NULL, 0);
            pp_release(pp);
            return fail_with(failure, tw_failure_new(rc, NULL, "cannot watch '%s' (killed): %s",
                                                     executable, tw_strerror(rc)));
        }
    }
    if (p->sigchld) {
        p->flags |= F_FIRST_CHECK;
        kick(p);
    }
    tw_reactor_add_handle(r, &p->handle, on_handle_close);
    pp->process = p;
    if (out)
        *out = p;
    tw_transport_ref(&p->base);
    if (pp->ops && pp->ops->connection_made)
        pp->ops->connection_made(pp);
    tw_transport_unref(&p->base);
    return 0;
}
