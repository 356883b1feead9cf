/* Starting a child: the PATH search (in the parent, where memory may be
 * allocated), and the child itself, which runs between clone and execve.
 *
 * ---- Why clone(CLONE_VM | CLONE_VFORK)
 * fork copies the parent's page tables, which costs in proportion to the
 * parent's memory; a vfork-style child shares the parent's memory and the
 * parent stays suspended until the child has called execve (or exited), so
 * starting one costs the same whatever the parent's size. The price is what
 * the child may do: it shares memory with a parent whose other threads go on
 * running, so it touches nothing of theirs, takes no lock, allocates
 * nothing, and calls the kernel directly (syscall()) rather than through
 * libc wrappers that keep state (glibc's setuid, for one, signals every
 * thread of the process to change their ids too). It runs on a stack of its
 * own (the thread's block, pipe-io.c), and with every signal blocked from
 * before the clone until its dispositions are back to the defaults, so no
 * handler of the parent ever runs in it. Under valgrind, which runs such a
 * clone as a fork, the same code works unchanged.
 *
 * ---- Failures
 * The child reports a failed step (its stage and errno) through a
 * close-on-exec pipe, then exits with 127; execve closing the pipe says it
 * worked. The parent reads the pipe once the child has let it resume, so
 * whether the child started is known before tw__spawn returns. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <twine/alloc.h>
#include <twine/error.h>

#include "process/process-internal.h"

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

extern char **environ;

/* The kernel's signal set is 64 bits on every Linux architecture. */
#define KERNEL_SIGSET_SIZE 8
#define KERNEL_NSIG        64

/* ---- The child */

struct child_report {
    int stage;
    int err;
};

struct child_args {
    const struct tw__spawn_plan *plan;
    int err_fd;
    int max_target;
    int src[TW_PROCESS_MAX_CHILD_FDS]; /* the child's scratch: where each source is now */
};

/* A kernel struct sigaction of zeros: SIG_DFL, no flags, empty mask,
 * whatever the field order. */
static const unsigned long default_action[4];
static const unsigned long empty_mask[1];

/* syscall() gives -1 and errno; the child wants -errno. errno lives in the
 * parent thread's TLS, which the suspended parent does not read meanwhile. */
#define RAW(...) (syscall(__VA_ARGS__) < 0 ? -errno : 0)

static bool is_target(const struct tw__spawn_plan *pl, int fd)
{
    for (int i = 0; i < pl->nmoves; i++)
        if (pl->moves[i].target == fd)
            return true;
    return false;
}

__attribute__((noinline, no_sanitize("address", "undefined"))) static int child_main(void *arg)
{
    struct child_args *a = arg;
    const struct tw__spawn_plan *pl = a->plan;
    int stage = TW__STAGE_SETSID;
    long rc = 0;

    if (pl->pty_slave >= 0) {
        if ((rc = RAW(SYS_setsid)) < 0)
            goto fail;
        stage = TW__STAGE_CTTY;
        if ((rc = RAW(SYS_ioctl, pl->pty_slave, TIOCSCTTY, 0)) < 0)
            goto fail;
    }

    /* The map may permute (child 1 <- parent 2, child 2 <- parent 1): first
     * every source (and the report pipe) that a target could clobber moves
     * above the highest target, then each target is made from it. */
    stage = TW__STAGE_FDS;
    int floor = a->max_target + 1;
    if (a->err_fd < floor) {
        long fd = syscall(SYS_fcntl, a->err_fd, F_DUPFD_CLOEXEC, floor);
        if (fd < 0) {
            rc = -errno;
            goto fail_silent; /* no pipe to report through */
        }
        a->err_fd = (int)fd;
    }
    for (int i = 0; i < pl->nmoves; i++) {
        int s = pl->moves[i].source;
        if (s != pl->moves[i].target && s < floor) {
            long fd = syscall(SYS_fcntl, s, F_DUPFD_CLOEXEC, floor);
            if (fd < 0) {
                rc = -errno;
                goto fail;
            }
            s = (int)fd;
        }
        a->src[i] = s;
    }
    for (int i = 0; i < pl->nmoves; i++) {
        int t = pl->moves[i].target;
        if (a->src[i] == t)
            rc = RAW(SYS_fcntl, t, F_SETFD, 0); /* keep it across execve */
        else
            rc = RAW(SYS_dup3, a->src[i], t, 0);
        if (rc < 0)
            goto fail;
    }
    /* Only what the map names reaches the program: the rest of the low
     * numbers are closed, everything above is closed by execve. */
    for (int fd = 0; fd < floor; fd++)
        if (!is_target(pl, fd))
            syscall(SYS_close, fd);
    syscall(SYS_close_range, (unsigned)floor, ~0u, CLOSE_RANGE_CLOEXEC); /* 5.11+; else O_CLOEXEC */

    if (pl->cwd) {
        stage = TW__STAGE_CHDIR;
        if ((rc = RAW(SYS_chdir, pl->cwd)) < 0)
            goto fail;
    }
    if (pl->set_gid || pl->set_uid)
        syscall(SYS_setgroups, 0, NULL); /* fails unless root, and is not needed then */
    if (pl->set_gid) {
        stage = TW__STAGE_SETGID;
        if ((rc = RAW(SYS_setgid, pl->gid)) < 0)
            goto fail;
    }
    if (pl->set_uid) {
        stage = TW__STAGE_SETUID;
        if ((rc = RAW(SYS_setuid, pl->uid)) < 0)
            goto fail;
    }

    /* Every disposition back to the default (also the ignored ones, as
     * Twisted does: a child of a program that ignores SIGPIPE should still
     * die of it), then nothing blocked. */
    for (int sig = 1; sig <= KERNEL_NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            syscall(SYS_rt_sigaction, sig, default_action, NULL, KERNEL_SIGSET_SIZE);
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, empty_mask, NULL, KERNEL_SIGSET_SIZE);

    stage = TW__STAGE_EXEC;
    rc = RAW(SYS_execve, pl->path, pl->argv, pl->envp);

fail:;
    struct child_report rep = {stage, (int)-rc};
    syscall(SYS_write, a->err_fd, &rep, sizeof rep);
fail_silent:
    syscall(SYS_exit_group, 127);
    return 127;
}

/* ---- The parent */

static atomic_bool clone_pidfd_refused;

int tw__pidfd_open(pid_t pid)
{
    long fd = syscall(SYS_pidfd_open, pid, 0);
    if (fd < 0)
        return -errno;
    /* pidfds are close-on-exec from birth. */
    return (int)fd;
}

static void reap_now(pid_t pid)
{
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
}

int tw__spawn(const struct tw__spawn_plan *plan, pid_t *pid, int *pidfd,
              enum tw__spawn_stage *stage)
{
    *stage = TW__STAGE_CLONE;
    *pidfd = -1;
    char *stack = tw__process_child_stack();
    if (!stack)
        return TW_ENOMEM;
    int ep[2];
    if (pipe2(ep, O_CLOEXEC) < 0)
        return -errno;
    struct child_args a = {.plan = plan, .err_fd = ep[1], .max_target = 2};
    for (int i = 0; i < plan->nmoves; i++)
        if (plan->moves[i].target > a.max_target)
            a.max_target = plan->moves[i].target;

    int flags = CLONE_VM | CLONE_VFORK | SIGCHLD;
    if (plan->want_pidfd && !atomic_load(&clone_pidfd_refused))
        flags |= CLONE_PIDFD;
    int fd = -1;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid_t p = clone(child_main, stack + TW__CHILD_STACK_SIZE, flags, &a, &fd);
    if (p < 0 && errno == EINVAL && (flags & CLONE_PIDFD)) {
        /* A kernel before 5.2 (or a tool that does not pass it on). */
        atomic_store(&clone_pidfd_refused, true);
        flags &= ~CLONE_PIDFD;
        fd = -1;
        p = clone(child_main, stack + TW__CHILD_STACK_SIZE, flags, &a, &fd);
    }
    int clone_err = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    close(ep[1]);
    if (p < 0) {
        close(ep[0]);
        return -clone_err;
    }
    struct child_report rep;
    ssize_t n;
    do {
        n = read(ep[0], &rep, sizeof rep);
    } while (n < 0 && errno == EINTR);
    close(ep[0]);
    if (!(flags & CLONE_PIDFD))
        fd = -1;
    if (n == (ssize_t)sizeof rep) {
        reap_now(p);
        if (fd >= 0)
            close(fd);
        *stage = (enum tw__spawn_stage)rep.stage;
        return rep.err > 0 ? -rep.err : TW_EINVAL;
    }
    if (plan->want_pidfd && fd < 0) {
        int pfd = tw__pidfd_open(p);
        fd = pfd >= 0 ? pfd : -1;
    }
    *pid = p;
    *pidfd = fd;
    *stage = TW__STAGE_NONE;
    return 0;
}

/* ---- PATH search */

static bool executable_file(int dirfd, const char *path, bool *exists)
{
    struct stat st;
    if (fstatat(dirfd, path, &st, 0) < 0 || S_ISDIR(st.st_mode))
        return false;
    *exists = true;
    return faccessat(dirfd, path, X_OK, AT_EACCESS) == 0;
}

static const char *path_of(char *const *envp)
{
    if (!envp)
        return getenv("PATH");
    for (char *const *e = envp; *e; e++)
        if (strncmp(*e, "PATH=", 5) == 0)
            return *e + 5;
    return NULL;
}

int tw__spawn_resolve(const char *executable, char *const *envp, const char *cwd, char **out)
{
    *out = NULL;
    if (strchr(executable, '/')) {
        *out = tw_strdup(executable);
        return *out ? 0 : TW_ENOMEM;
    }
    if (!executable[0])
        return TW_ENOENT;
    const char *path = path_of(envp);
    if (!path)
        path = "/bin:/usr/bin";
    int dirfd = AT_FDCWD;
    if (cwd) {
        dirfd = open(cwd, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (dirfd < 0)
            dirfd = AT_FDCWD; /* the chdir in the child will say why */
    }
    size_t elen = strlen(executable);
    bool exists = false;
    int rc = TW_ENOENT;
    for (const char *p = path;; p++) {
        const char *end = strchr(p, ':');
        size_t dlen = end ? (size_t)(end - p) : strlen(p);
        char *cand = dlen == 0 ? tw_strdup(executable) : tw_malloc(dlen + 1 + elen + 1);
        if (!cand) {
            rc = TW_ENOMEM;
            break;
        }
        if (dlen > 0) {
            memcpy(cand, p, dlen);
            cand[dlen] = '/';
            memcpy(cand + dlen + 1, executable, elen + 1);
        }
        if (executable_file(dirfd, cand, &exists)) {
            /* An empty entry is the working directory: say so, or execve
             * would take the bare name for a path anyway. */
            if (dlen == 0) {
                char *dot = tw_asprintf("./%s", executable);
                tw_free(cand);
                cand = dot;
                if (!cand) {
                    rc = TW_ENOMEM;
                    break;
                }
            }
            *out = cand;
            rc = 0;
            break;
        }
        tw_free(cand);
        if (!end) {
            rc = exists ? TW_EACCES : TW_ENOENT;
            break;
        }
        p = end;
    }
    if (dirfd >= 0)
        close(dirfd);
    return rc;
}

const char *tw__spawn_stage_name(enum tw__spawn_stage stage)
{
    switch (stage) {
    case TW__STAGE_CLONE:
        return "start a process";
    case TW__STAGE_SETSID:
        return "start a session";
    case TW__STAGE_CTTY:
        return "set the controlling terminal";
    case TW__STAGE_FDS:
        return "set up the descriptors";
    case TW__STAGE_CHDIR:
        return "change to the working directory";
    case TW__STAGE_SETGID:
        return "set the group id";
    case TW__STAGE_SETUID:
        return "set the user id";
    case TW__STAGE_EXEC:
        return "execute";
    default:
        return "spawn";
    }
}
