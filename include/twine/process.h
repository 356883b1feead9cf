/* Child processes and standard I/O (spawnProcess + ProcessProtocol,
 * twisted.internet.utils, StandardIO, ProcessEndpoint).
 *
 * ---- Spawning
 * tw_spawn_process starts a child without blocking the loop: the child's
 * pipes are non-blocking watchers of the reactor, and the child is reaped
 * from the loop when it exits (a pidfd watched for readability where the
 * kernel has one, else a SIGCHLD watch and waitpid(pid, WNOHANG) on each of
 * Twine's own children; never waitpid(-1), which would take other libraries'
 * children). Every descriptor Twine opens is close-on-exec, and the child
 * gets exactly the descriptors its map names: every other descriptor of
 * the parent is closed in it (as Twisted does), whether or not it was marked
 * close-on-exec (Linux 5.11+ marks them all close-on-exec in one call; older
 * kernels have the child close them as /proc/self/fd lists them, or, without
 * /proc, close every number below the descriptor limit, at most 65536).
 *
 * The child is started with clone(CLONE_VM | CLONE_VFORK) (vfork's speed:
 * no page tables copied) and does only async-signal-safe work before execve:
 * with a PTY, setsid and TIOCSCTTY; the descriptor map (which may permute:
 * child 1 <- parent 2 and child 2 <- parent 1 is fine); setgroups, setgid,
 * setuid; chdir; every signal back to its default disposition (also the
 * ignored ones, as Twisted does) and an empty signal mask; execve. A failure
 * of any step travels back through a close-on-exec pipe, so it is a
 * synchronous error of tw_spawn_process: a missing executable is TW_ENOENT
 * with a failure naming it, never a child that exits with 127.
 *
 * An executable without a '/' is searched in PATH as execvp does (Twisted
 * uses os.execvpe): the PATH of the child's environment, or, when env is
 * NULL, the parent's; "/bin:/usr/bin" when that environment has none. The
 * search happens in the parent before the child starts, with the parent's
 * ids (with set_uid/set_gid, a match only the parent may execute is taken,
 * and execve then fails with TW_EACCES); relative entries are taken from
 * working_dir when one is given.
 *
 * ---- Events, in order (ProcessProtocol)
 *   connection_made → (child_data_received | child_connection_lost)* and
 *   process_exited, in the order they happen → process_ended → free
 * process_exited runs once the child has been reaped; process_ended once it
 * has exited AND every pipe to it is closed (so every byte it wrote has been
 * delivered), always after the last child_connection_lost. A child that
 * exits while a grandchild still holds its stdout open ends only when that
 * pipe closes too (or when the parent closes it). Nothing is called after
 * process_ended but free. Every callback runs from the reactor, never from
 * inside the call that caused it: a pipe closed by close_stdin is reported
 * on the reactor's next iteration.
 *
 * ---- Reactor shutdown
 * A process is a reactor handle (reactor.h). At shutdown Twine does what
 * Twisted does: it leaves the child running and stops watching it. Its pipes
 * are closed (the child reads end of file, and gets EPIPE or SIGPIPE if it
 * writes), child_connection_lost is called for each, then process_ended with
 * how == TW_PROCESS_UNKNOWN (unless it had exited already: it is then
 * reaped and reported as usual). A child left running that way is reaped by
 * no one until this program exits.
 *
 * tw_reactor_free closes no handle (reactor.h): free the reactor only once
 * every process has ended, or after a shutdown (tw_reactor_stop, and run
 * returning) has closed them as above. A process still open when its
 * reactor is freed is leaked, protocol and pipes included, and must not be
 * used any more. The same holds for the stdio transport (below).
 *
 * Everything here runs on the reactor's thread. */
#ifndef TWINE_PROCESS_H
#define TWINE_PROCESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <twine/deferred.h>
#include <twine/endpoint.h>
#include <twine/failure.h>
#include <twine/protocol.h>
#include <twine/reactor.h>
#include <twine/transport.h>

typedef struct tw_process tw_process;
typedef struct tw_process_protocol tw_process_protocol;

/* ---- How a child ended */

typedef enum tw_process_how {
    TW_PROCESS_EXITED, /* it called exit: exit_code holds its status (0-255) */
    TW_PROCESS_KILLED, /* a signal ended it: signo (and core_dumped) */
    /* Not known: it was reaped by someone else (a waitpid(-1) elsewhere in
     * the program, or SIGCHLD set to SIG_IGN), or the reactor shut down
     * while it still ran. */
    TW_PROCESS_UNKNOWN,
} tw_process_how;

typedef struct tw_process_status {
    tw_process_how how;
    int exit_code;    /* TW_PROCESS_EXITED; -1 otherwise */
    int signo;        /* TW_PROCESS_KILLED; 0 otherwise */
    bool core_dumped; /* TW_PROCESS_KILLED: a core was dumped */
} tw_process_status;

/* True when the child exited with code 0 (Twisted's ProcessDone). */
bool tw_process_status_ok(const tw_process_status *status);

/* One line into buf (cut to fit, always NUL-terminated when size > 0):
 * "exited with code 0", "killed by signal 9 (Killed)", "killed by signal 11
 * (Segmentation fault), core dumped", "ended in an unknown way". Returns buf. */
#define TW_PROCESS_STATUS_STRLEN 96
const char *tw_process_status_format(const tw_process_status *status, char *buf, size_t size);

/* Twisted's ProcessDone / ProcessTerminated as a failure (the caller's
 * reference; never NULL, see failure.h): TW_ECONNDONE for an exit with code
 * 0, TW_EPROCESSTERMINATED for any other end, with the message
 * "process 'NAME' (pid N) exited with code 3" (NAME may be NULL: "process
 * (pid N) ..."). */
tw_failure *tw_process_status_failure(const tw_process_status *status, const char *name, pid_t pid);

/* ---- The process protocol (IProcessProtocol)
 *
 * Embed tw_process_protocol as the first member of your struct and cast back
 * in the ops. Every op may be NULL. The process owns the protocol from
 * tw_spawn_process on (whatever that returns) and releases it through free
 * after process_ended, or right away when the spawn fails (free is then the
 * only op called). */
typedef struct tw_process_protocol_ops {
    /* makeConnection: pp->process is set; the child runs already. */
    void (*connection_made)(tw_process_protocol *pp);
    /* Bytes the child wrote to child_fd (a TW_CHILD_FD_READ pipe; fd 1 for a
     * PTY), borrowed for the call. NULL: out_received for fd 1, err_received
     * for fd 2, dropped for the others. */
    void (*child_data_received)(tw_process_protocol *pp, int child_fd, const char *data,
                                size_t len);
    void (*out_received)(tw_process_protocol *pp, const char *data, size_t len);
    void (*err_received)(tw_process_protocol *pp, const char *data, size_t len);
    /* The pipe to child_fd is closed: end of file or an error reading it, the
     * child closed its reading end (or exited), or the parent closed it
     * (close_child_fd, lose_connection, abort). NULL: in_connection_lost for
     * fd 0, out_connection_lost for 1, err_connection_lost for 2. With a PTY,
     * the terminal closing is reported as fds 0, 1 and 2 in that order. */
    void (*child_connection_lost)(tw_process_protocol *pp, int child_fd);
    void (*in_connection_lost)(tw_process_protocol *pp);
    void (*out_connection_lost)(tw_process_protocol *pp);
    void (*err_connection_lost)(tw_process_protocol *pp);
    /* The child was reaped (it may still have pipes open: see the top). */
    void (*process_exited)(tw_process_protocol *pp, tw_process_status status);
    /* The child has exited and every pipe is closed: the last event. */
    void (*process_ended)(tw_process_protocol *pp, tw_process_status status);
    /* The destructor, once, after process_ended (or after a failed spawn):
     * releases what the protocol owns, and pp's memory if it should be
     * released. pp->process is NULL by then. */
    void (*free)(tw_process_protocol *pp);
} tw_process_protocol_ops;

struct tw_process_protocol {
    const tw_process_protocol_ops *ops;
    tw_process *process; /* from connection_made until free (Twisted's self.transport) */
};

/* Sets ops and clears the rest. */
void tw_process_protocol_init(tw_process_protocol *pp, const tw_process_protocol_ops *ops);

/* ---- Spawning (reactor.spawnProcess) */

/* What the parent gives one descriptor of the child (Twisted's childFDs). */
typedef enum tw_child_fd_kind {
    TW_CHILD_FD_READ = 1, /* "r": a pipe the child writes and the parent reads */
    TW_CHILD_FD_WRITE,    /* "w": a pipe the parent writes and the child reads */
    TW_CHILD_FD_INHERIT,  /* the parent's descriptor parent_fd, as the child's child_fd */
} tw_child_fd_kind;

typedef struct tw_child_fd {
    /* 0 ... 1023, each at most once in a map, and below the soft
     * RLIMIT_NOFILE (the child inherits it: no descriptor can be made at or
     * above it, so such a map fails with -EMFILE). */
    int child_fd;
    tw_child_fd_kind kind;
    int parent_fd; /* TW_CHILD_FD_INHERIT only */
} tw_child_fd;

/* At most this many entries in a map. */
#define TW_PROCESS_MAX_CHILD_FDS 64

typedef struct tw_process_options {
    /* The child's descriptors; NULL (or n_child_fds 0) gives Twisted's
     * default {0: "w", 1: "r", 2: "r"}. Descriptors of the child not in
     * the map are closed. Ignored with use_pty. */
    const tw_child_fd *child_fds;
    size_t n_child_fds;
    /* A pseudo-terminal instead of pipes: the child's 0, 1 and 2 are the
     * terminal (its controlling terminal, in a new session); the parent writes
     * to it with write (echo is on, as a terminal's is) and reads what the
     * child prints as fd 1. close_stdin, close_stdout and close_stderr are
     * refused (TW_ENOTSUP: a terminal closes as a whole; lose_connection
     * closes it). */
    bool use_pty;
    /* Run the child as this group / user (setgid / setuid, supplementary
     * groups dropped). Not root: changing to another id fails the spawn with
     * -EPERM and a failure saying which. */
    bool set_gid;
    gid_t gid;
    bool set_uid;
    uid_t uid;
    /* Reap with a SIGCHLD watch and waitpid(pid, WNOHANG) even where pidfds
     * exist (what kernels before 5.3 get). TWINE_PROCESS_REAPER=sigchld in the
     * environment does the same for every spawn. */
    bool reap_with_sigchld;
} tw_process_options;

/* Starts `executable` with argv (NULL-terminated, argv[0] included; NULL
 * means {executable, NULL}) and env (NULL-terminated "K=V" strings; NULL
 * inherits the parent's environment), in working_dir (NULL: the parent's),
 * for the process protocol pp, which it takes over (see above). opts may be
 * NULL. The strings are read during the call only.
 *
 * Returns 0 after connection_made has run, with the process in *out when out
 * is not NULL (borrowed: the process keeps itself alive until free; take a
 * reference with tw_transport_ref(tw_process_transport(p)) to keep it
 * longer). Or an error, with no child left behind, nothing leaked, and a
 * failure in *failure when failure is not NULL (the caller's reference):
 * TW_EINVAL (a NULL argument, a bad map: a child fd listed twice or out of
 * range, an INHERIT of a closed descriptor), TW_ENOENT "cannot execute
 * 'NAME': ..." (not found; a PATH search found nothing), TW_EACCES (not
 * executable), -EPERM (uid/gid), TW_ENOMEM, -EMFILE (also a child fd at or
 * above the descriptor limit), -EAGAIN (too many processes), or another
 * -errno from the child's preparation, the failure saying which step
 * failed. A child that failed any step before execve is never handed over
 * as started. */
int tw_spawn_process(tw_reactor *r, tw_process_protocol *pp, const char *executable,
                     char *const argv[], char *const env[], const char *working_dir,
                     const tw_process_options *opts, tw_process **out, tw_failure **failure);

/* ---- The process transport (IProcessTransport)
 *
 * A process is a tw_transport (tw_process_transport gives it), so the
 * tw_transport_* calls work on it with these meanings:
 *   write, write_sequence, write_zerocopy   to the child's stdin (child fd 0
 *       as TW_CHILD_FD_WRITE, or the PTY); TW_ENOTCONN when there is none or
 *       it is closed. Flow control as transport.h: a producer registered for
 *       stdin, water marks on stdin's queue.
 *   lose_connection       loseConnection: stdin closed once its queue is
 *       flushed, every other pipe closed now; the child is not signalled.
 *   lose_write_connection close_stdin.
 *   abort_connection      every pipe closed now, stdin's queue dropped; the
 *       child is not signalled (signal it with tw_process_signal).
 *   pause/resume_producing   stop/start reading every pipe the parent reads.
 *   get_peer              the child: family TW_AF_PROCESS with its pid.
 *   get_host              a pipe address (TW_AF_PIPE).
 * A tw_protocol runs over a process through the process endpoint (below):
 * transport->protocol is then that protocol; it is NULL for a process run
 * by a process protocol. After process_ended every call returns
 * TW_ENOTCONN. */

tw_transport *tw_process_transport(tw_process *p);
/* The process behind t, or NULL when t is another kind of transport. */
tw_process *tw_process_from_transport(tw_transport *t);

pid_t tw_process_pid(const tw_process *p);
/* The process protocol, or NULL once released. */
tw_process_protocol *tw_process_protocol_of(const tw_process *p);

/* writeToChild: queues data for the pipe to child_fd (a TW_CHILD_FD_WRITE
 * entry; fd 0 is what tw_transport_write writes to). Returns 0, TW_ENOTCONN
 * (no such pipe, or closed), TW_EINVAL or TW_ENOMEM. */
int tw_process_write_to_child(tw_process *p, int child_fd, const void *data, size_t len);

/* closeChildFD: a pipe the parent writes is closed once its queue is
 * flushed, one it reads is closed now; child_connection_lost follows from the
 * reactor. Returns 0 (also when it is closed or closing already), TW_ENOTCONN
 * (no pipe to that fd), TW_ENOTSUP (a PTY). close_stdin/stdout/stderr are
 * fds 0, 1 and 2. */
int tw_process_close_child_fd(tw_process *p, int child_fd);
int tw_process_close_stdin(tw_process *p);
int tw_process_close_stdout(tw_process *p);
int tw_process_close_stderr(tw_process *p);

/* signalProcess: sends signo (through the pidfd when there is one). Returns
 * 0; -ESRCH once the child has been reaped (Twisted's ProcessExitedAlready);
 * TW_EINVAL for a bad signal number. With a pidfd the signal reaches this
 * child or nobody. Without one (SIGCHLD mode: reap_with_sigchld, or a
 * kernel before 5.3) it goes by pid, which is safe while Twine alone reaps
 * the child (until then the pid stays taken, by a zombie at worst); but a
 * child reaped by someone else (a waitpid(-1) elsewhere, SIGCHLD set to
 * SIG_IGN) is known to be gone only once Twine has looked, on a later
 * iteration, and meanwhile its pid may already be another process's, which
 * the signal then reaches. Leave Twine's children to Twine. */
int tw_process_signal(tw_process *p, int signo);

/* ---- Process addresses (get_peer / get_host above, the stdio transport) */

/* Fills *out with the address of process pid (TW_AF_PROCESS). */
void tw_address_from_process(tw_address *out, pid_t pid);
/* Fills *out with the pipe address (TW_AF_PIPE: Twisted's PipeAddress). */
void tw_address_pipe(tw_address *out);

/* ---- Helpers returning deferreds (twisted.internet.utils)
 *
 * Each spawns executable as tw_spawn_process does (argv, env, path as there;
 * the default descriptor map) and closes the child's stdin at once, after
 * writing stdin_bytes for the last one (Twisted leaves it open: a child that
 * reads its stdin would wait forever). A spawn that fails gives a failed
 * deferred (TW_ENOENT for a missing executable, with the failure that names
 * it); NULL only when out of memory (as deferred.h's). Cancelling the deferred kills the child
 * (SIGKILL) and fails it with TW_ECANCELED. A reactor shutdown before the child ends fails it with
 * TW_ECONNLOST. */

/* What get_process_output_and_value gives (and get_process_output, whose
 * out also holds stderr's bytes with errortoo): bytes as read, each
 * NUL-terminated (the terminator not counted in the length). */
typedef struct tw_process_output {
    tw_process_status status;
    pid_t pid;
    char *out; /* stdout; never NULL */
    size_t out_len;
    char *err; /* stderr; never NULL ("" for get_process_output) */
    size_t err_len;
} tw_process_output;

/* getProcessOutput: fires with a tw_process_output * (owned by the result:
 * tw_result_take it, free it with tw_process_output_free) once the child
 * has ended, however it ended. Without errortoo, the first byte the child
 * writes to stderr fails the deferred at once with TW_EPROTOCOL ("got
 * stderr: ...") and closes the pipes, as Twisted's does; with errortoo,
 * stderr's bytes join out as they arrive. */
tw_deferred *tw_get_process_output(tw_reactor *r, const char *executable, char *const argv[],
                                   char *const env[], const char *path, bool errortoo);

/* getProcessValue: fires with the exit code (tw_result_int) once the child
 * has ended; a child killed by a signal fails it with TW_EPROCESSTERMINATED
 * (Twisted gives None: C has no None). */
tw_deferred *tw_get_process_value(tw_reactor *r, const char *executable, char *const argv[],
                                  char *const env[], const char *path);

/* getProcessOutputAndValue: fires with a tw_process_output * (stdout and
 * stderr apart, and the status) however the child ended; the status says
 * whether a signal killed it (Twisted errbacks then; here the caller reads
 * status.how). stdin_bytes (may be NULL with len 0) is written to the child's
 * stdin before it is closed. */
tw_deferred *tw_get_process_output_and_value(tw_reactor *r, const char *executable,
                                             char *const argv[], char *const env[],
                                             const char *path, const void *stdin_bytes,
                                             size_t stdin_len);

void tw_process_output_free(void *output);

/* ---- Standard I/O (StandardIO)
 *
 * A tw_transport over the program's own standard input and output (or two
 * other descriptors), connected to an ordinary tw_protocol: what stdin holds
 * arrives through data_received, writes go to stdout, end of file on stdin
 * is read_connection_lost (a half-closeable protocol) or the connection's
 * end (TW_ECONNDONE). lose_connection flushes stdout, then ends the
 * connection (stdin is not read any more; it is not closed under a writer,
 * so no one gets SIGPIPE from us). A reader of stdout that goes away (or a
 * write to stdout that fails) is, for a protocol with write_connection_lost,
 * the end of the write side only, as Twisted's StandardIO has it: what was
 * queued is dropped, a registered producer is stopped, write_connection_lost
 * runs from the reactor, writes are refused with TW_ENOTCONN, and reading
 * goes on (end of file on stdin then ends the connection with
 * TW_ECONNDONE); for any other protocol, or after lose_connection, it ends
 * the connection with the error (-EPIPE). lose_write_connection flushes
 * stdout, then closes the write side so that its reader sees end of file:
 * a socket is shut down for writing (shutdown(SHUT_WR); reading the same
 * socket goes on, as inetd's programs need); a pipe or FIFO is pointed at
 * /dev/null (dup2: the number stays taken, and the pipe closes once nobody
 * else holds it); a terminal, a regular file or another device is left as
 * it is and no longer written (there is no end of file to give). get_peer
 * and get_host give the pipe address.
 *
 * What each descriptor may be:
 *   a pipe, FIFO or socket   watched by the reactor; O_NONBLOCK is set on it
 *       while the transport is open and its flags restored after. The flag
 *       belongs to the open file description, which the program may share
 *       with others (a shell's pipeline does not; `cmd | tee` does not; two
 *       programs given one pipe do): they see it non-blocking meanwhile.
 *   a terminal   reopened (through /proc/self/fd) as a description of its own,
 *       set non-blocking, so the shell and the other programs on the same
 *       terminal never see O_NONBLOCK; when it cannot be reopened, the shared
 *       one is used as for a pipe.
 *   a regular file, /dev/null or any other descriptor the reactor cannot
 *       watch (epoll refuses regular files)   read in chunks of
 *       TW_NET_READ_SIZE from calls scheduled on the reactor, one chunk per
 *       iteration while not paused (so `prog < file` works with every
 *       backend), and written synchronously (writes to a regular file do not
 *       wait for a peer), a short write or error ending the connection.
 * When the connection ends, each descriptor is left open and pointing where
 * it did, its flags as they were (but for a pipe or FIFO output half-closed
 * by lose_write_connection, which points at /dev/null, above). A producer
 * registered for stdout follows transport.h; with a regular file or
 * /dev/null, which take every write at once, a pull producer is asked for
 * more from the reactor after each write it makes. The transport is a
 * reactor handle: shutdown ends the connection (TW_ECONNLOST); end it (or
 * shut the reactor down) before tw_reactor_free, which would leak it. */

typedef struct tw_stdio_options {
    int in_fd;  /* read from; 0 (the default) is standard input */
    int out_fd; /* written to; 0 means 1 (standard output) */
} tw_stdio_options;

/* Connects p (taken over whatever this returns: on error it is released
 * without connection_made) to the descriptors; connection_made runs before
 * this returns. The descriptors stay the caller's: keep them open until the
 * connection has ended (the transport reads and writes them by number).
 * Returns 0 and, when out is not NULL, the transport (borrowed: the
 * connection holds its only reference, as for sockets); TW_EINVAL (NULL r
 * or p, in_fd == out_fd, a descriptor not open or not readable/writable),
 * TW_EBUSY (another watcher of this reactor watches one of them), TW_ENOMEM,
 * or -errno. */
int tw_stdio_new(tw_reactor *r, tw_protocol *p, const tw_stdio_options *opts, tw_transport **out);

/* ---- The process endpoint (ProcessEndpoint)
 *
 * A client endpoint whose connect spawns the child and runs a tw_protocol
 * over it: the protocol's transport is the process transport (above), the
 * child's stdout arrives through data_received, what the protocol writes
 * goes to the child's stdin, and when the process has ended the protocol
 * gets connection_lost: TW_ECONNDONE for an exit with code 0, else
 * TW_EPROCESSTERMINATED (tw_process_status_failure); stdin closing is
 * write_connection_lost for a half-closeable protocol. The deferred of
 * tw_endpoint_connect fires with the protocol after its connection_made, or
 * fails with the spawn's failure (the protocol built for it is released).
 * build_protocol gets the child's address (TW_AF_PROCESS, pid 0: not started
 * yet). Free it with tw_endpoint_free; tw_endpoint_get_spec gives NULL for
 * it and tw_endpoint_listen fails with TW_ENOTSUP. */

typedef enum tw_stderr_behavior {
    TW_STDERR_LOG,  /* each chunk the child writes to stderr is logged (info, "twine.process") */
    TW_STDERR_DROP, /* dropped */
} tw_stderr_behavior;

/* Copies every string and the options (the map too), so the caller's may
 * go. Returns 0 and *out, TW_EINVAL (NULL r, executable or out) or
 * TW_ENOMEM. */
int tw_process_endpoint_new(tw_reactor *r, const char *executable, char *const argv[],
                            char *const env[], const char *working_dir,
                            const tw_process_options *opts, tw_stderr_behavior err_behavior,
                            tw_endpoint **out);

#endif
