/* Watching file descriptors: readiness, level triggering, hang-ups,
 * re-entrancy (removal and freeing inside callbacks), the error rules. */
#include "twtest.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <unistd.h>

struct watch {
    tw_io io;
    tw_reactor *r;
    int calls;
    unsigned events[8];
    /* What the callback does. */
    bool remove_self, free_self;
    struct watch **victim; /* removes and frees *victim, then clears it */
    int *ran;              /* shared counter of callbacks */
};

static void on_io(tw_io *io, unsigned events)
{
    struct watch *w = io->data;
    cr_assert_neq(events, 0u);
    if (w->calls < 8)
        w->events[w->calls] = events;
    w->calls++;
    if (w->ran)
        (*w->ran)++;
    if (w->victim && *w->victim) {
        struct watch *v = *w->victim;
        cr_assert_eq(tw_reactor_remove_reader(w->r, &v->io), 0);
        cr_assert_eq(tw_reactor_remove_writer(w->r, &v->io), 0);
        free(v);
        *w->victim = NULL;
    }
    if (w->remove_self) {
        cr_assert_eq(tw_reactor_remove_reader(w->r, io), 0);
        cr_assert_eq(tw_reactor_remove_writer(w->r, io), 0);
        if (w->free_self)
            free(w);
    }
}

static struct watch *watch_new(tw_reactor *r, int fd)
{
    struct watch *w = calloc(1, sizeof *w);
    cr_assert_not_null(w);
    w->r = r;
    tw_io_init(&w->io, fd, on_io, w);
    return w;
}

static void make_pipe(int fds[2])
{
    cr_assert_eq(pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0);
}

static void make_socketpair(int fds[2])
{
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0);
}

static void put(int fd)
{
    cr_assert_eq(write(fd, "x", 1), 1);
}

static void state(tw_reactor *r, size_t readers, size_t writers)
{
    tw_reactor_state st;
    tw_reactor_get_state(r, &st);
    cr_assert_eq(st.readers, readers, "readers %zu, expected %zu", st.readers, readers);
    cr_assert_eq(st.writers, writers, "writers %zu, expected %zu", st.writers, writers);
}

TW_REACTOR_TEST(io, readable)
{
    int p[2];
    make_pipe(p);
    struct watch *w = watch_new(r, p[0]);
    cr_assert_eq(tw_reactor_add_reader(r, &w->io), 0);
    state(r, 1, 0);
    cr_assert_eq(tw_reactor_iterate(r, 0), 0, "nothing to read yet");
    cr_assert_eq(w->calls, 0);
    put(p[1]);
    cr_assert_eq(tw_reactor_iterate(r, 1.0), 1);
    cr_assert_eq(w->calls, 1);
    cr_assert_eq(w->events[0], (unsigned)TW_IO_READ);
    cr_assert_eq(tw_reactor_remove_reader(r, &w->io), 0);
    state(r, 0, 0);
    close(p[0]);
    close(p[1]);
    free(w);
}

TW_REACTOR_TEST(io, writable)
{
    int p[2];
    make_pipe(p);
    struct watch *w = watch_new(r, p[1]);
    cr_assert_eq(tw_reactor_add_writer(r, &w->io), 0);
    state(r, 0, 1);
    cr_assert_eq(tw_reactor_iterate(r, 1.0), 1);
    cr_assert_eq(w->events[0], (unsigned)TW_IO_WRITE);
    cr_assert_eq(tw_reactor_remove_writer(r, &w->io), 0);
    state(r, 0, 0);
    close(p[0]);
    close(p[1]);
    free(w);
}

TW_REACTOR_TEST(io, readable_and_writable_in_one_call)
{
    int s[2];
    make_socketpair(s);
    struct watch *w = watch_new(r, s[0]);
    put(s[1]);
    cr_assert_eq(tw_reactor_add_reader(r, &w->io), 0);
    cr_assert_eq(tw_reactor_add_writer(r, &w->io), 0);
    state(r, 1, 1);
    cr_assert_eq(tw_reactor_iterate(r, 1.0), 1);
    cr_assert_eq(w->calls, 1);
    cr_assert_eq(w->events[0], (unsigned)(TW_IO_READ | TW_IO_WRITE));

    /* Dropping one interest keeps the other. */
    cr_assert_eq(tw_reactor_remove_writer(r, &w->io), 0);
    state(r, 1, 0);
    cr_assert_eq(tw_reactor_iterate(r, 1.0), 1);
    cr_assert_eq(w->events[1], (unsigned)TW_IO_READ);
    cr_assert_eq(tw_reactor_remove_reader(r, &w->io), 0);
    close(s[0]);
    close(s[1]);
    free(w);
}

TW_REACTOR_TEST(io, level_triggered)
{
    int p[2];
    make_pipe(p);
    put(p[1]);
    struct watch *w = watch_new(r, p[0]);
    tw_reactor_add_reader(r, &w->io);
    for (int i = 1; i <= 3; i++) {
        cr_assert_eq(tw_reactor_iterate(r, 1.0), 1);
        cr_assert_eq(w->calls, i, "fires again while unread");
    }
    char c;
    cr_assert_eq(read(p[0], &c, 1), 1);
    cr_assert_eq(tw_reactor_iterate(r, 0), 0);
    cr_assert_eq(w->calls, 3);
    tw_reactor_remove_reader(r, &w->io);
    close(p[0]);
    close(p[1]);
    free(w);
}

TW_REACTOR_TEST(io, hangup_reported_as_readable)
{
    int p[2];
    make_pipe(p);
    struct watch *w = watch_new(r, p[0]);
    tw_reactor_add_reader(r, &w->io);
    close(p[1]);
    cr_assert_eq(tw_reactor_iterate(r, 1.0), 1);
    cr_assert_eq(w->events[0], (unsigned)TW_IO_READ);
    char c;
    cr_assert_eq(read(p[0], &c, 1), 0, "end of file");
    tw_reactor_remove_reader(r, &w->io);
    close(p[0]);
    free(w);
}

TW_REACTOR_TEST(io, hangup_reported_as_writable)
{
    int s[2];
    make_socketpair(s);
    /* Fill the socket so it is not writable, then the peer goes away. */
    char buf[4096];
    memset(buf, 'x', sizeof buf);
    while (write(s[0], buf, sizeof buf) > 0) {
    }
    struct watch *w = watch_new(r, s[0]);
    tw_reactor_add_writer(r, &w->io);
    cr_assert_eq(tw_reactor_iterate(r, 0), 0, "full: not writable");
    close(s[1]);
    cr_assert_eq(tw_reactor_iterate(r, 1.0), 1);
    cr_assert_eq(w->events[0], (unsigned)TW_IO_WRITE, "only what was asked for");
    cr_assert_lt(send(s[0], "x", 1, MSG_NOSIGNAL), 0, "the write sees the error");
    tw_reactor_remove_writer(r, &w->io);
    close(s[0]);
    free(w);
}

TW_REACTOR_TEST(io, remove_inside_callback)
{
    int p[2];
    make_pipe(p);
    put(p[1]);
    struct watch *w = watch_new(r, p[0]);
    w->remove_self = true;
    tw_reactor_add_reader(r, &w->io);
    cr_assert_eq(tw_reactor_iterate(r, 1.0), 1);
    cr_assert_eq(tw_reactor_iterate(r, 0), 0);
    cr_assert_eq(w->calls, 1);
    state(r, 0, 0);
    close(p[0]);
    close(p[1]);
    free(w);
}

TW_REACTOR_TEST(io, free_watcher_inside_its_callback)
{
    int p[2];
    make_pipe(p);
    put(p[1]);
    int ran = 0;
    struct watch *w = watch_new(r, p[0]);
    w->remove_self = w->free_self = true;
    w->ran = &ran;
    tw_reactor_add_reader(r, &w->io);
    tw_reactor_add_writer(r, &w->io); /* a pipe's read end is never writable */
    cr_assert_eq(tw_reactor_iterate(r, 1.0), 1);
    cr_assert_eq(ran, 1);
    cr_assert_eq(tw_reactor_iterate(r, 0), 0);
    state(r, 0, 0);
    close(p[0]);
    close(p[1]);
}

/* Two ready watchers; whichever runs first removes and frees the other, which
 * must then not be dispatched in the same batch (ASan would see a use after
 * free; the counter sees a dispatch). */
TW_REACTOR_TEST(io, callback_frees_another_ready_watcher)
{
    int a[2], b[2];
    make_pipe(a);
    make_pipe(b);
    put(a[1]);
    put(b[1]);
    int ran = 0;
    struct watch *wa = watch_new(r, a[0]), *wb = watch_new(r, b[0]);
    struct watch *slot_a = wa, *slot_b = wb;
    wa->victim = &slot_b;
    wb->victim = &slot_a;
    wa->ran = wb->ran = &ran;
    tw_reactor_add_reader(r, &wa->io);
    tw_reactor_add_reader(r, &wb->io);
    cr_assert_eq(tw_reactor_iterate(r, 1.0), 1);
    cr_assert_eq(ran, 1, "the freed watcher was dispatched");
    cr_assert((slot_a == NULL) != (slot_b == NULL));
    struct watch *survivor = slot_a ? slot_a : slot_b;
    state(r, 1, 0);
    cr_assert_eq(tw_reactor_iterate(r, 1.0), 1);
    cr_assert_eq(survivor->calls, 2);
    tw_reactor_remove_reader(r, &survivor->io);
    free(survivor);
    close(a[0]);
    close(a[1]);
    close(b[0]);
    close(b[1]);
}

/* The same, when the freed watcher's fd is watched again at once by a new
 * watcher: the old event must not reach the old memory. */
struct replacer {
    tw_io io;
    tw_reactor *r;
    struct watch **victim;
    struct watch *replacement;
    int calls;
};

static void on_replace(tw_io *io, unsigned events)
{
    struct replacer *rp = io->data;
    (void)events;
    rp->calls++;
    if (*rp->victim) {
        struct watch *v = *rp->victim;
        int fd = v->io.fd;
        tw_reactor_remove_reader(rp->r, &v->io);
        free(v);
        *rp->victim = NULL;
        rp->replacement = watch_new(rp->r, fd);
        cr_assert_eq(tw_reactor_add_reader(rp->r, &rp->replacement->io), 0);
    }
}

TW_REACTOR_TEST(io, callback_replaces_another_ready_watcher)
{
    int a[2], b[2];
    make_pipe(a);
    make_pipe(b);
    put(a[1]);
    put(b[1]);
    /* The replacer's fd is the lower one, so select and poll visit it first;
     * epoll's order is the kernel's. */
    struct watch *victim = watch_new(r, b[0]);
    struct replacer rp = {.r = r, .victim = &victim};
    tw_io_init(&rp.io, a[0], on_replace, &rp);
    tw_reactor_add_reader(r, &rp.io);
    tw_reactor_add_reader(r, &victim->io);
    /* 1 if the replacer ran first, 2 if the victim ran before it. */
    int n = tw_reactor_iterate(r, 1.0);
    cr_assert(n == 1 || n == 2, "n=%d", n);
    cr_assert_null(victim);
    cr_assert_not_null(rp.replacement);
    cr_assert_eq(rp.replacement->calls, 0, "new watcher not given the old event");
    cr_assert_eq(tw_reactor_iterate(r, 1.0), 2);
    cr_assert_eq(rp.replacement->calls, 1);
    tw_reactor_remove_reader(r, &rp.io);
    tw_reactor_remove_reader(r, &rp.replacement->io);
    free(rp.replacement);
    close(a[0]);
    close(a[1]);
    close(b[0]);
    close(b[1]);
}

/* ---- The rules */

TW_REACTOR_TEST(io, adding_twice_and_removing_absent_do_nothing)
{
    int p[2];
    make_pipe(p);
    struct watch *w = watch_new(r, p[0]);
    cr_assert_eq(tw_reactor_remove_reader(r, &w->io), 0);
    cr_assert_eq(tw_reactor_remove_writer(r, &w->io), 0);
    cr_assert_eq(tw_reactor_add_reader(r, &w->io), 0);
    cr_assert_eq(tw_reactor_add_reader(r, &w->io), 0);
    state(r, 1, 0);
    cr_assert_eq(tw_reactor_remove_writer(r, &w->io), 0);
    state(r, 1, 0);
    cr_assert_eq(tw_reactor_remove_reader(r, &w->io), 0);
    cr_assert_eq(tw_reactor_remove_reader(r, &w->io), 0);
    state(r, 0, 0);
    close(p[0]);
    close(p[1]);
    free(w);
}

TW_REACTOR_TEST(io, eexist_for_a_second_watcher_on_the_fd)
{
    int p[2];
    make_pipe(p);
    struct watch *a = watch_new(r, p[0]), *b = watch_new(r, p[0]);
    cr_assert_eq(tw_reactor_add_reader(r, &a->io), 0);
    cr_assert_eq(tw_reactor_add_reader(r, &b->io), TW_EEXIST);
    cr_assert_eq(tw_reactor_add_writer(r, &b->io), TW_EEXIST);
    state(r, 1, 0);
    /* Once the first leaves, the second may come in. */
    cr_assert_eq(tw_reactor_remove_reader(r, &a->io), 0);
    cr_assert_eq(tw_reactor_add_reader(r, &b->io), 0);
    cr_assert_eq(tw_reactor_remove_reader(r, &b->io), 0);
    close(p[0]);
    close(p[1]);
    free(a);
    free(b);
}

TW_REACTOR_TEST(io, ebusy_in_another_reactor)
{
    int p[2];
    make_pipe(p);
    tw_reactor *other;
    cr_assert_eq(tw_reactor_new(&other, NULL), 0);
    struct watch *w = watch_new(other, p[0]);
    cr_assert_eq(tw_reactor_add_reader(other, &w->io), 0);
    cr_assert_eq(tw_reactor_add_reader(r, &w->io), TW_EBUSY);
    cr_assert_eq(tw_reactor_add_writer(r, &w->io), TW_EBUSY);
    cr_assert_eq(tw_reactor_remove_reader(r, &w->io), TW_EBUSY);
    state(r, 0, 0);
    cr_assert_eq(tw_reactor_remove_reader(other, &w->io), 0);
    cr_assert_eq(tw_reactor_add_reader(r, &w->io), 0, "free to move once out");
    cr_assert_eq(tw_reactor_remove_reader(r, &w->io), 0);
    cr_assert_eq(tw_reactor_free(other), 0);
    close(p[0]);
    close(p[1]);
    free(w);
}

TW_REACTOR_TEST(io, ebadf)
{
    struct watch *w = watch_new(r, -1);
    cr_assert_eq(tw_reactor_add_reader(r, &w->io), TW_EBADF);
    cr_assert_eq(tw_reactor_remove_reader(r, &w->io), 0, "never added: nothing to do");
    int p[2];
    make_pipe(p);
    close(p[0]);
    close(p[1]);
    tw_io_init(&w->io, p[0], on_io, w);
    cr_assert_eq(tw_reactor_add_reader(r, &w->io), TW_EBADF);
    cr_assert_eq(tw_reactor_add_writer(r, &w->io), TW_EBADF);
    state(r, 0, 0);
    cr_assert_null(w->io.reactor);
    free(w);
}

static void raise_nofile(int want)
{
    struct rlimit rl;
    cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur < (rlim_t)want) {
        rl.rlim_cur = rl.rlim_max < (rlim_t)want ? rl.rlim_max : (rlim_t)want;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

TW_REACTOR_TEST(io, select_fd_setsize_bound)
{
    raise_nofile(FD_SETSIZE + 64);
    int p[2];
    make_pipe(p);
    int high = fcntl(p[0], F_DUPFD_CLOEXEC, FD_SETSIZE + 3);
    if (high < 0)
        cr_skip_test("cannot open fds above FD_SETSIZE here");
    struct watch *w = watch_new(r, high);
    int rc = tw_reactor_add_reader(r, &w->io);
    if (strcmp(tw_reactor_backend_name(r), "select") == 0) {
        cr_assert_eq(rc, TW_EINVAL);
        state(r, 0, 0);
        cr_assert_null(w->io.reactor);
    } else {
        cr_assert_eq(rc, 0);
        put(p[1]);
        cr_assert_eq(tw_reactor_iterate(r, 1.0), 1);
        cr_assert_eq(w->calls, 1);
        tw_reactor_remove_reader(r, &w->io);
    }
    close(high);
    close(p[0]);
    close(p[1]);
    free(w);
}

/* ---- remove_all */

struct removed {
    int fds[8];
    int n;
};

static void note_removed(tw_io *io, void *arg)
{
    struct removed *rm = arg;
    rm->fds[rm->n++] = io->fd;
    cr_assert_null(io->reactor, "already out of the reactor");
    free(io->data);
}

static void count_thread_call(void *arg)
{
    (*(int *)arg)++;
}

TW_REACTOR_TEST(io, remove_all_in_order_added)
{
    int p1[2], p2[2], p3[2];
    make_pipe(p1);
    make_pipe(p2);
    make_pipe(p3);
    /* Added in an order unlike fd order; one reads and writes. */
    struct watch *a = watch_new(r, p3[0]), *b = watch_new(r, p1[1]), *c = watch_new(r, p2[0]);
    tw_reactor_add_reader(r, &a->io);
    tw_reactor_add_writer(r, &b->io);
    tw_reactor_add_reader(r, &c->io);
    tw_reactor_add_writer(r, &c->io);
    state(r, 2, 2);
    struct removed rm = {0};
    cr_assert_eq(tw_reactor_remove_all(r, note_removed, &rm), 3);
    cr_assert_eq(rm.n, 3);
    cr_assert_eq(rm.fds[0], p3[0]);
    cr_assert_eq(rm.fds[1], p1[1]);
    cr_assert_eq(rm.fds[2], p2[0]);
    state(r, 0, 0);
    cr_assert_eq(tw_reactor_remove_all(r, note_removed, &rm), 0);

    /* The reactor's own watchers are left alone. */
    int calls = 0;
    tw_reactor_call_from_thread(r, count_thread_call, &calls);
    cr_assert_eq(tw_reactor_iterate(r, 1.0), 1);
    cr_assert_eq(calls, 1);
    for (int i = 0; i < 2; i++) {
        close(p1[i]);
        close(p2[i]);
        close(p3[i]);
    }
}

TW_REACTOR_TEST(io, remove_all_out_of_memory_keeps_order)
{
    int p1[2], p2[2];
    make_pipe(p1);
    make_pipe(p2);
    struct watch *a = watch_new(r, p2[0]), *b = watch_new(r, p1[0]);
    tw_reactor_add_reader(r, &a->io);
    tw_reactor_add_reader(r, &b->io);
    struct removed rm = {0};
    tw_testing_fail_alloc_after(0);
    size_t n = tw_reactor_remove_all(r, note_removed, &rm);
    tw_testing_fail_alloc_off();
    cr_assert_eq(n, 2);
    cr_assert_eq(rm.fds[0], p2[0]);
    cr_assert_eq(rm.fds[1], p1[0]);
    state(r, 0, 0);
    for (int i = 0; i < 2; i++) {
        close(p1[i]);
        close(p2[i]);
    }
}

TW_REACTOR_TEST(io, remove_all_without_callback)
{
    int p[2];
    make_pipe(p);
    struct watch *w = watch_new(r, p[0]);
    tw_reactor_add_reader(r, &w->io);
    cr_assert_eq(tw_reactor_remove_all(r, NULL, NULL), 1);
    cr_assert_null(w->io.reactor);
    state(r, 0, 0);
    close(p[0]);
    close(p[1]);
    free(w);
}

/* ---- Memory */

TW_REACTOR_TEST(io, table_growth_out_of_memory)
{
    int p[2];
    make_pipe(p);
    /* High enough to grow the watcher table, low enough for select. */
    int high = fcntl(p[0], F_DUPFD_CLOEXEC, 900);
    cr_assert_geq(high, 900);
    struct watch *w = watch_new(r, high);
    for (long n = 0;; n++) {
        tw_testing_fail_alloc_after(n);
        int rc = tw_reactor_add_reader(r, &w->io);
        tw_testing_fail_alloc_off();
        if (rc == 0)
            break;
        cr_assert_eq(rc, TW_ENOMEM, "n=%ld: %s", n, tw_strerror(rc));
        cr_assert_null(w->io.reactor);
        state(r, 0, 0);
        cr_assert_lt(n, 20);
    }
    put(p[1]);
    cr_assert_eq(tw_reactor_iterate(r, 1.0), 1);
    cr_assert_eq(w->calls, 1);
    tw_reactor_remove_reader(r, &w->io);
    close(high);
    close(p[0]);
    close(p[1]);
    free(w);
}

TW_TEST(io, free_lets_go_of_watchers)
{
    tw_reactor *r;
    cr_assert_eq(tw_reactor_new(&r, NULL), 0);
    int p[2];
    make_pipe(p);
    struct watch *w = watch_new(r, p[0]);
    tw_reactor_add_reader(r, &w->io);
    cr_assert_eq(tw_reactor_free(r), 0);
    cr_assert_null(w->io.reactor);
    cr_assert_eq(w->io.events, 0u);
    /* And it can join another reactor. */
    cr_assert_eq(tw_reactor_new(&r, NULL), 0);
    cr_assert_eq(tw_reactor_add_reader(r, &w->io), 0);
    cr_assert_eq(tw_reactor_remove_reader(r, &w->io), 0);
    cr_assert_eq(tw_reactor_free(r), 0);
    close(p[0]);
    close(p[1]);
    free(w);
}

/* Closing an fd before removing its watcher must not break removal. */
TW_REACTOR_TEST(io, remove_after_close)
{
    int p[2];
    make_pipe(p);
    struct watch *w = watch_new(r, p[0]);
    tw_reactor_add_reader(r, &w->io);
    close(p[0]);
    cr_assert_eq(tw_reactor_remove_reader(r, &w->io), 0);
    state(r, 0, 0);
    cr_assert_eq(tw_reactor_iterate(r, 0), 0);
    close(p[1]);
    free(w);
}

/* Many watchers, each removing itself: exercises the poll backend's array
 * compaction and the fd table. */
TW_REACTOR_TEST(io, many_watchers)
{
    enum { N = 40 };
    int p[N][2];
    struct watch *w[N];
    int ran = 0;
    for (int i = 0; i < N; i++) {
        make_pipe(p[i]);
        w[i] = watch_new(r, p[i][0]);
        w[i]->ran = &ran;
        w[i]->remove_self = (i % 2) == 0;
        tw_reactor_add_reader(r, &w[i]->io);
        put(p[i][1]);
    }
    cr_assert_eq(tw_reactor_iterate(r, 1.0), N);
    cr_assert_eq(ran, N);
    state(r, N / 2, 0);
    cr_assert_eq(tw_reactor_iterate(r, 1.0), N / 2);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(w[i]->calls, (i % 2) == 0 ? 1 : 2, "watcher %d", i);
        tw_reactor_remove_reader(r, &w[i]->io);
        close(p[i][0]);
        close(p[i][1]);
        free(w[i]);
    }
    state(r, 0, 0);
}
