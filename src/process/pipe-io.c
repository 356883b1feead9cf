/* What the process and stdio transports share: a per-thread block holding
 * the read buffer and the stack a spawned child runs on, pipe writes that
 * cannot raise SIGPIPE, and flushing a write queue to a pipe. */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <twine/alloc.h>
#include <twine/net.h>

#include "process/process-internal.h"

/* One block per thread: reads land in its first part (one reactor per
 * thread reads at a time, as in stream.c), and the child of a spawn runs on
 * its second part while the parent is suspended (CLONE_VFORK), so neither
 * needs memory once the thread has it. The child's stack is 16-aligned by
 * tw_malloc's alignment and the read buffer's size. */
#define BLOCK_SIZE (TW_NET_READ_SIZE + TW__CHILD_STACK_SIZE)

static _Thread_local char *block;
static pthread_key_t block_key;
static pthread_once_t block_once = PTHREAD_ONCE_INIT;
static bool block_key_ok;

static void block_exit(void *b)
{
    tw_free(b);
    block = NULL;
}

static void block_key_create(void)
{
    block_key_ok = pthread_key_create(&block_key, block_exit) == 0;
}

static char *block_get(void)
{
    if (block)
        return block;
    pthread_once(&block_once, block_key_create);
    char *b = tw_malloc(BLOCK_SIZE);
    if (!b)
        return NULL;
    if (block_key_ok)
        pthread_setspecific(block_key, b);
    block = b;
    return b;
}

char *tw__process_read_buffer(void)
{
    return block_get();
}

char *tw__process_child_stack(void)
{
    char *b = block_get();
    return b ? b + TW_NET_READ_SIZE : NULL;
}

/* Whether this thread last found SIGPIPE ignored. A hint only: a write
 * goes without blocking SIGPIPE only right after the kernel said it is
 * ignored (most servers ignore it, and then a broken pipe raises nothing);
 * when it was not, the disposition is looked at again every
 * RECHECK_EVERY writes, so that a program that ignores it later gets the
 * cheap way too. */
#define RECHECK_EVERY 64
static _Thread_local bool sigpipe_was_ignored = true;
static _Thread_local unsigned writes_since_check;

static bool sigpipe_ignored(void)
{
    struct sigaction sa;
    return sigaction(SIGPIPE, NULL, &sa) == 0 && !(sa.sa_flags & SA_SIGINFO) &&
           sa.sa_handler == SIG_IGN;
}

static ssize_t writev_retrying(int fd, const struct iovec *iov, int iovcnt)
{
    ssize_t n;
    do {
        n = writev(fd, iov, iovcnt);
    } while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : n;
}

ssize_t tw__pipe_writev(int fd, const struct iovec *iov, int iovcnt)
{
    ssize_t n;
    if (sigpipe_was_ignored || ++writes_since_check >= RECHECK_EVERY) {
        writes_since_check = 0;
        sigpipe_was_ignored = sigpipe_ignored();
    }
    if (sigpipe_was_ignored) {
        /* One syscall for the check instead of two for the mask. (A
         * disposition changed by another thread between the check and the
         * write is the one case this does not cover.) */
        n = writev_retrying(fd, iov, iovcnt);
    } else {
        /* A pipe has no MSG_NOSIGNAL: block SIGPIPE for the call, and take
         * back the one a write to a pipe without reader raised (it is
         * directed at this thread, and pending while blocked) so it is
         * never delivered. When the thread blocks SIGPIPE already, the
         * mask is left alone, and so is a pending SIGPIPE: it is then the
         * program's to take. */
        sigset_t pipe_set, old;
        sigemptyset(&pipe_set);
        sigaddset(&pipe_set, SIGPIPE);
        pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
        bool was_blocked = sigismember(&old, SIGPIPE);
        n = writev_retrying(fd, iov, iovcnt);
        if (!was_blocked) {
            if (n == -EPIPE) {
                struct timespec zero = {0, 0};
                while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR)
                    ;
            }
            pthread_sigmask(SIG_SETMASK, &old, NULL);
        }
    }
    return n == -EAGAIN || n == -EWOULDBLOCK ? 0 : n;
}

/* Writes per flush while each is taken whole. */
#define WRITES_PER_WAKEUP 4

int tw__pipe_flush(const tw_io *io, tw_wqueue *q)
{
    for (int round = 0; round < WRITES_PER_WAKEUP; round++) {
        if (tw_wqueue_is_empty(q) || io->fd < 0)
            return 0;
        struct iovec iov[IOV_MAX];
        int cnt = tw_wqueue_fill_iov(q, iov, IOV_MAX);
        size_t offered = 0;
        for (int i = 0; i < cnt; i++)
            offered += iov[i].iov_len;
        ssize_t n = tw__pipe_writev(io->fd, iov, cnt);
        if (n < 0)
            return (int)n;
        if (n > 0)
            tw_wqueue_consume(q, (size_t)n); /* may run release callbacks */
        if ((size_t)n < offered)
            return 0;
    }
    return 0;
}

ssize_t tw__pipe_read(int fd, char *buf, size_t len)
{
    for (;;) {
        ssize_t n = read(fd, buf, len);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    }
}
