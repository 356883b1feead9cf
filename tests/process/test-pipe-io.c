/* Writes to pipes never raise SIGPIPE, whatever the program did with it:
 * default, ignored, handled, blocked, or changed between writes. */
#include <pthread.h>

#include "proc-test.h"
#include "process/process-internal.h"

static volatile sig_atomic_t handled;

static void on_sigpipe(int signo)
{
    (void)signo;
    handled++;
}

/* A pipe whose reader has gone. */
static int broken_pipe(void)
{
    int p[2];
    cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
    close(p[0]);
    return p[1];
}

static bool sigpipe_pending(void)
{
    sigset_t pending;
    sigpending(&pending);
    return sigismember(&pending, SIGPIPE);
}

static void write_broken(int times)
{
    int fd = broken_pipe();
    struct iovec iov = {"x", 1};
    for (int i = 0; i < times; i++)
        cr_assert_eq(tw__pipe_writev(fd, &iov, 1), -EPIPE);
    close(fd);
}

TW_TEST(pipe_io, default_disposition)
{
    signal(SIGPIPE, SIG_DFL);
    write_broken(200); /* past a re-check of the disposition */
    cr_assert(!sigpipe_pending());
}

TW_TEST(pipe_io, ignored)
{
    signal(SIGPIPE, SIG_IGN);
    write_broken(3);
    cr_assert(!sigpipe_pending());
}

TW_TEST(pipe_io, handled_by_the_program)
{
    signal(SIGPIPE, on_sigpipe);
    write_broken(3);
    cr_assert_eq(handled, 0, "the program's handler never sees ours");
    cr_assert(!sigpipe_pending());
}

/* The cheap way is taken only while SIGPIPE is ignored: back to the
 * default between two writes, the next write still blocks it. */
TW_TEST(pipe_io, disposition_changed_between_writes)
{
    for (int round = 0; round < 3; round++) {
        signal(SIGPIPE, SIG_IGN);
        write_broken(2);
        signal(SIGPIPE, SIG_DFL);
        write_broken(2);
        signal(SIGPIPE, on_sigpipe);
        write_broken(70);
    }
    cr_assert_eq(handled, 0);
    cr_assert(!sigpipe_pending());
}

/* A thread that blocks SIGPIPE itself keeps its mask, and the SIGPIPE a
 * write raised stays pending for it to take. */
TW_TEST(pipe_io, blocked_by_the_program)
{
    signal(SIGPIPE, SIG_DFL);
    sigset_t set, old, now;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    write_broken(1);
    pthread_sigmask(SIG_BLOCK, NULL, &now);
    cr_assert(sigismember(&now, SIGPIPE), "still blocked");
    cr_assert(sigpipe_pending(), "the program's to take");
    struct timespec zero = {0, 0};
    cr_assert_eq(sigtimedwait(&set, NULL, &zero), SIGPIPE);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

TW_TEST(pipe_io, full_pipe_is_zero_and_errors_are_negative)
{
    signal(SIGPIPE, SIG_DFL);
    int p[2];
    cr_assert_eq(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
    static char big[1 << 20];
    struct iovec iov = {big, sizeof big};
    cr_assert_gt(tw__pipe_writev(p[1], &iov, 1), 0);
    cr_assert_eq(tw__pipe_writev(p[1], &iov, 1), 0, "full: EAGAIN is 0");
    close(p[0]);
    close(p[1]);
    cr_assert_eq(tw__pipe_writev(p[1], &iov, 1), -EBADF);
}
