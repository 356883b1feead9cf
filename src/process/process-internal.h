/* Shared by the files of src/process/ only.
 *
 * Files and what each owns:
 *   spawn.c      starting a child: PATH search, the clone'd child, the
 *                descriptor map (everything the child does before execve)
 *   process.c    the process transport: pipes, reaping, the protocol's events
 *   utils.c      the deferred helpers (getProcessOutput...)
 *   stdio.c      the standard I/O transport
 *   pipe-io.c    what process.c and stdio.c share: the per-thread read buffer,
 *                writes to pipes that cannot raise SIGPIPE, the queue's flush
 * (What they share with stream.c too, the producer bookkeeping and stdio's
 * closing rules, is src/net/fdtransport.h's.) */
#ifndef TWINE_SRC_PROCESS_INTERNAL_H
#define TWINE_SRC_PROCESS_INTERNAL_H

#include <stdbool.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <twine/buffer.h>
#include <twine/process.h>
#include <twine/reactor.h>

#define TW__PROCESS_NS "twine.process"

/* ---- pipe-io.c */

/* The calling thread's read buffer (TW_NET_READ_SIZE bytes) and the stack
 * the spawned child runs on before execve (TW__CHILD_STACK_SIZE bytes),
 * made on the thread's first use and freed when it exits. NULL when out of
 * memory. */
#define TW__CHILD_STACK_SIZE (32 * 1024)
char *tw__process_read_buffer(void);
char *tw__process_child_stack(void);

/* writev that never raises SIGPIPE: a reader that went away is -EPIPE.
 * Returns the bytes written, 0 when the pipe is full (EAGAIN), or -errno.
 * With SIGPIPE ignored it costs one syscall more than writev (the check),
 * else two (blocking SIGPIPE and restoring the mask); the one case not
 * covered is another thread restoring SIGPIPE's default disposition between
 * that check and the write. A thread that blocks SIGPIPE itself keeps its
 * mask, and a SIGPIPE the write raised stays pending for it. */
ssize_t tw__pipe_writev(int fd, const struct iovec *iov, int iovcnt);

/* Writes what q holds to io->fd, a pipe, until the pipe is full, q is
 * empty, or a few writes were made (one wakeup must not starve the others);
 * stops early if io->fd becomes -1 (a release callback run as the queue is
 * consumed closed the pipe). Returns 0, or -errno with the queue as it was
 * before the failing write. */
int tw__pipe_flush(const tw_io *io, tw_wqueue *q);

/* Reads into buf; returns the bytes read, 0 at end of file, -EAGAIN, or
 * -errno (EINTR retried). */
ssize_t tw__pipe_read(int fd, char *buf, size_t len);

/* ---- spawn.c */

/* One descriptor of the child: source is a descriptor of the parent that
 * becomes the child's target. */
struct tw__fd_move {
    int target;
    int source;
};

struct tw__spawn_plan {
    const char *path; /* what execve gets (resolved from PATH) */
    char *const *argv;
    char *const *envp;
    const char *cwd;
    const struct tw__fd_move *moves;
    int nmoves;
    int pty_slave; /* >= 0: setsid, TIOCSCTTY on it (it is in moves as 0, 1, 2) */
    bool set_uid, set_gid;
    uid_t uid;
    gid_t gid;
    bool want_pidfd;
};

/* What went wrong, for the failure message. */
enum tw__spawn_stage {
    TW__STAGE_NONE,
    TW__STAGE_CLONE,
    TW__STAGE_SETSID,
    TW__STAGE_CTTY,
    TW__STAGE_FDS,
    TW__STAGE_CHDIR,
    TW__STAGE_SETGID,
    TW__STAGE_SETUID,
    TW__STAGE_EXEC,
};

/* Starts the child as the plan says. Returns 0 with *pid and *pidfd (-1
 * when none was asked for or the kernel cannot give one). Or a negative code
 * with *stage saying which step failed; the child, if one started, has been
 * reaped. Blocks (briefly) only while the child prepares: it runs before the
 * parent resumes, as with vfork. */
int tw__spawn(const struct tw__spawn_plan *plan, pid_t *pid, int *pidfd,
              enum tw__spawn_stage *stage);

/* The path execve should get for executable: a copy of it when it holds a
 * '/', else the first executable match in the PATH of envp (NULL: the
 * parent's), relative entries taken from cwd. Returns 0 and *out (tw_free
 * it), TW_ENOENT, TW_EACCES (only matches that cannot be executed) or
 * TW_ENOMEM. */
int tw__spawn_resolve(const char *executable, char *const *envp, const char *cwd, char **out);

/* A readable name of a stage: "execute", "set the user id"... */
const char *tw__spawn_stage_name(enum tw__spawn_stage stage);

/* For tests: how the child closes the descriptors its map does not name.
 * 0 (the default): marks them close-on-exec with close_range (Linux 5.11+),
 * falling back to 1: closing what /proc/self/fd lists, falling back to 2:
 * closing every number below the descriptor limit (at most 65536). Forcing
 * 1 or 2 tests the fallbacks on a kernel that would not need them. */
void tw__spawn_set_close_method(int how);

/* pidfd_open(pid), or -errno (-ENOSYS where the kernel has none). */
int tw__pidfd_open(pid_t pid);

#endif
