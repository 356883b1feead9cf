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
 * whether the child started is known before tw__spawn returns. What can be
 * prepared in the parent is: the descriptors that would collide with the
 * map's targets (and the report pipe) are moved there, so the child only
 * duplicates and never needs a free number of its own. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
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

/* The kernel's signal set: _NSIG - 1 signals, a bit each (64 on most
 * architectures, 128 on MIPS). */
#define KERNEL_NSIG        (_NSIG - 1)
#define KERNEL_SIGSET_SIZE (KERNEL_NSIG / 8)
#define SIGSET_WORDS       ((KERNEL_SIGSET_SIZE + sizeof(unsigned long) - 1) / sizeof(unsigned long))

/* How the child closes the descriptors its map does not name (see
 * tw__spawn_set_close_method). */
enum { CLOSE_AUTO, CLOSE_WALK_PROC, CLOSE_UP_TO_LIMIT };
static atomic_int close_method;

/* Where CLOSE_UP_TO_LIMIT stops when the limit is higher (or infinite). */
#define CLOSE_LOOP_CAP 65536

/* ---- The child */

struct child_report {
    int stage;
    int err;
};

/* Everything the child reads, prepared by the parent: the child only
 * duplicates each source onto its target (no source and not the report
 * pipe is ever a target number, so no step undoes another), then closes
 * the rest. */
struct child_args {
    const struct tw__spawn_plan *plan;
    int err_fd;
    int method;
    int close_limit;                       /* CLOSE_UP_TO_LIMIT: numbers below it */
    int src[TW_PROCESS_MAX_CHILD_FDS];     /* moves[i]'s source, moved off the targets */
    int targets[TW_PROCESS_MAX_CHILD_FDS]; /* sorted */
    int ntargets;
};

/* What getdents64 gives (linux_dirent64). */
struct dirent64 {
    uint64_t ino;
    int64_t off;
    unsigned short reclen;
    unsigned char type;
    char name[];
};

#define CHILD_CODE __attribute__((no_sanitize("address", "undefined")))

/* A kernel struct sigaction of zeros: SIG_DFL, no flags, empty mask,
 * whatever the field order (three pointers and the mask at most). */
static const unsigned long default_action[3 + SIGSET_WORDS];
static const unsigned long empty_mask[SIGSET_WORDS];

/* syscall() gives -1 and errno; the child wants -errno. errno lives in the
 * parent thread's TLS, which the suspended parent does not read meanwhile. */
#define RAW(...) (syscall(__VA_ARGS__) < 0 ? -errno : 0)

CHILD_CODE static bool child_keeps(const struct child_args *a, long fd)
{
    if (fd == a->err_fd)
        return true;
    for (int i = 0; i < a->ntargets; i++)
        if (a->targets[i] == fd)
            return true;
    return false;
}

/* Marks every number between the targets close-on-exec (Linux 5.11+).
 * False when the kernel cannot. */
CHILD_CODE static bool cloexec_the_rest(const struct child_args *a)
{
    unsigned lo = 0;
    for (int i = 0; i <= a->ntargets; i++) {
        unsigned hi = i < a->ntargets ? (unsigned)a->targets[i] : ~0u;
        if (hi > lo &&
            syscall(SYS_close_range, lo, i < a->ntargets ? hi - 1 : hi, CLOSE_RANGE_CLOEXEC) < 0)
            return false;
        lo = hi + 1;
    }
    return true;
}

/* Closes every open descriptor not kept, as /proc/self/fd lists them.
 * False when it cannot be read (no /proc, no descriptor free). */
CHILD_CODE static bool close_listed(const struct child_args *a)
{
    long dir = syscall(SYS_openat, AT_FDCWD, "/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0)
        return false;
    char buf[2048] __attribute__((aligned(8)));
    for (;;) {
        long n = syscall(SYS_getdents64, dir, buf, sizeof buf);
        if (n <= 0)
            break;
        for (long off = 0; off < n;) {
            struct dirent64 *d = (struct dirent64 *)(buf + off);
            off += d->reclen;
            long fd = 0;
            const char *c = d->name;
            if (*c < '0' || *c > '9')
                continue; /* "." and ".." */
            for (; *c >= '0' && *c <= '9'; c++)
                fd = fd * 10 + (*c - '0');
            /* Closing entries already listed does not disturb the walk:
             * /proc/self/fd goes by descriptor number. */
            if (fd != dir && !child_keeps(a, fd))
                syscall(SYS_close, fd);
        }
    }
    syscall(SYS_close, dir);
    return true;
}

CHILD_CODE static void close_the_rest(const struct child_args *a)
{
    if (a->method == CLOSE_AUTO && cloexec_the_rest(a))
        return;
    if (a->method != CLOSE_UP_TO_LIMIT && close_listed(a))
        return;
    for (int fd = 0; fd < a->close_limit; fd++)
        if (!child_keeps(a, fd))
            syscall(SYS_close, fd);
}

__attribute__((noinline)) CHILD_CODE static int child_main(void *arg)
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

    /* The parent moved every source (and the report pipe) off the target
     * numbers, so the map may permute freely (child 1 <- parent 2 and
     * child 2 <- parent 1): each target is made from its source in turn. */
    stage = TW__STAGE_FDS;
    for (int i = 0; i < pl->nmoves; i++) {
        int t = pl->moves[i].target;
        if (a->src[i] == t)
            rc = RAW(SYS_fcntl, t, F_SETFD, 0); /* keep it across execve */
        else
            rc = RAW(SYS_dup3, a->src[i], t, 0);
        if (rc < 0)
            goto fail;
    }
    /* Only what the map names reaches the program. */
    close_the_rest(a);

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
    /* Eight bytes into an empty pipe: this write does not fail, so the
     * parent never takes a child that failed for one that started. */
    struct child_report rep = {stage, (int)-rc};
    syscall(SYS_write, a->err_fd, &rep, sizeof rep);
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

static bool in_sorted(const int *v, int n, int x)
{
    for (int i = 0; i < n && v[i] <= x; i++)
        if (v[i] == x)
            return true;
    return false;
}

/* A close-on-exec duplicate of fd on the lowest number that is not a
 * target, or -errno (-EMFILE when the limit leaves none). */
static int dup_off_targets(int fd, const struct child_args *a)
{
    int from = 0;
    for (;;) {
        int d = fcntl(fd, F_DUPFD_CLOEXEC, from);
        if (d < 0)
            return errno == EINVAL ? -EMFILE : -errno; /* EINVAL: from is past the limit */
        if (!in_sorted(a->targets, a->ntargets, d))
            return d;
        close(d);
        from = d + 1;
    }
}

/* Fills a's sources, targets and closing method, moving (in the parent,
 * where a failure is an ordinary error) every source that sits on another
 * move's target, and the report pipe when it sits on one, to a number no
 * target uses. `made` gets the duplicates to close after the clone.
 * Returns 0 or -errno. */
static int prepare_child_fds(const struct tw__spawn_plan *plan, struct child_args *a, int *made,
                             int *nmade)
{
    *nmade = 0;
    a->ntargets = 0;
    for (int i = 0; i < plan->nmoves; i++) {
        int t = plan->moves[i].target, k = a->ntargets++;
        while (k > 0 && a->targets[k - 1] > t) {
            a->targets[k] = a->targets[k - 1];
            k--;
        }
        a->targets[k] = t;
    }
    for (int i = 0; i < plan->nmoves; i++) {
        int s = plan->moves[i].source;
        a->src[i] = s;
        if (s == plan->moves[i].target || !in_sorted(a->targets, a->ntargets, s))
            continue;
        for (int j = 0; j < i; j++) /* the PTY's slave is the source of three */
            if (plan->moves[j].source == s && a->src[j] != s)
                a->src[i] = a->src[j];
        if (a->src[i] != s)
            continue;
        int d = dup_off_targets(s, a);
        if (d < 0)
            return d;
        made[(*nmade)++] = d;
        a->src[i] = d;
    }
    if (in_sorted(a->targets, a->ntargets, a->err_fd)) {
        int d = dup_off_targets(a->err_fd, a);
        if (d < 0)
            return d;
        close(a->err_fd);
        a->err_fd = d;
    }
    a->method = atomic_load(&close_method);
    struct rlimit rl;
    a->close_limit = CLOSE_LOOP_CAP;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        rl.rlim_cur < CLOSE_LOOP_CAP)
        a->close_limit = (int)rl.rlim_cur;
    return 0;
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
    struct child_args a = {.plan = plan, .err_fd = ep[1]};
    int made[TW_PROCESS_MAX_CHILD_FDS], nmade;
    int rc = prepare_child_fds(plan, &a, made, &nmade);
    if (rc < 0) {
        for (int i = 0; i < nmade; i++)
            close(made[i]);
        close(ep[0]);
        close(a.err_fd);
        *stage = TW__STAGE_FDS;
        return rc;
    }

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
    close(a.err_fd);
    for (int i = 0; i < nmade; i++)
        close(made[i]);
    if (p < 0) {
        close(ep[0]);
        return -clone_err;
    }
    struct child_report rep;
    ssize_t n;
    do {
        n = read(ep[0], &rep, sizeof rep);
    } while (n < 0 && errno == EINTR);
    int read_err = errno;
    close(ep[0]);
    if (!(flags & CLONE_PIDFD))
        fd = -1;
    if (n != 0) {
        /* A report, or (never seen) a pipe that cannot be read: either
         * way not a child to hand over. */
        if (n != (ssize_t)sizeof rep) {
            kill(p, SIGKILL);
            rep = (struct child_report){TW__STAGE_CLONE, n < 0 ? read_err : EIO};
        }
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

void tw__spawn_set_close_method(int how)
{
    atomic_store(&close_method, how);
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
