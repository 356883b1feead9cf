/* The io_uring backend: the fall back to epoll where the kernel refuses
 * io_uring (seccomp), and what only its completion path does: writes that
 * leave with the next submission, the shared receive buffers running short,
 * bytes already received when a pause comes, and requests still in flight
 * when the reactor is freed. Tests that need io_uring skip elsewhere. */
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "test-stream-helpers.h"

static bool on_uring(tw_reactor *r)
{
    return strcmp(tw_reactor_backend_name(r), "io_uring") == 0;
}

#define NEED_URING(r)                                                                              \
    do {                                                                                           \
        if (!on_uring(r))                                                                          \
            cr_skip_test("io_uring only");                                                         \
    } while (0)

/* ---- Fall back */

/* What a container's seccomp profile does: io_uring_setup fails with EPERM. */
static void refuse_io_uring(void)
{
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof filter / sizeof filter[0], .filter = filter};
    cr_assert_eq(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
    cr_assert_eq(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog), 0, "%s", strerror(errno));
}

/* Criterion runs each test in a process of its own: the filter stays there. */
TW_TEST(uring, falls_back_to_epoll_when_seccomp_refuses)
{
    bool have = false;
    for (const char *const *n = tw_reactor_backends(); *n; n++)
        have |= strcmp(*n, "io_uring") == 0;
    if (!have)
        cr_skip_test("built without liburing");
    refuse_io_uring();
    tw_testing_log_capture_start();
    tw_reactor *r = NULL;
    tw_reactor_options opts = {.backend = "io_uring"};
    cr_assert_eq(tw_reactor_new(&r, &opts), 0);
    cr_assert_str_eq(tw_reactor_backend_name(r), "epoll");
    cr_assert_eq(tw_testing_log_count("io_uring unavailable"), 1, "%s", tw_testing_log_text());
    cr_assert_eq(tw_testing_log_count("using epoll"), 1);
    cr_assert_eq(tw_testing_log_count("not permitted"), 1, "says why: %s", tw_testing_log_text());
    /* The fallback reactor works. */
    int fds[2];
    tcp_pair(fds);
    struct rec x = {0};
    rec_adopt(r, fds[0], &x, NULL);
    peer_write_all(fds[1], "hi", 2);
    RUN_UNTIL(r, x.got_len == 2);
    tw_transport_lose_connection(x.base.transport);
    RUN_UNTIL(r, x.lost == 1);
    close(fds[1]);
    cr_assert_eq(tw_reactor_free(r), 0);
    tw_testing_log_capture_stop();
}

/* A user's RLIMIT_MEMLOCK (64 KiB is a common default) caps the memory the
 * kernel gives rings: the backend makes smaller ones, and with none at all
 * falls back to epoll. Root's CAP_IPC_LOCK lifts the limit, so the test
 * process becomes an unprivileged user first: a uid of its own, because the
 * kernel counts locked memory per user, and these tests run in parallel. */
static void as_nobody_with_memlock(rlim_t bytes)
{
    struct rlimit lim = {.rlim_cur = bytes, .rlim_max = bytes};
    cr_assert_eq(setrlimit(RLIMIT_MEMLOCK, &lim), 0, "%s", strerror(errno));
    if (geteuid() == 0)
        cr_assert_eq(setuid((uid_t)(200000 + getpid() % 100000)), 0, "%s", strerror(errno));
}

static void round_trip_on(tw_reactor *r)
{
    int fds[2];
    tcp_pair(fds);
    struct rec x = {0};
    rec_adopt(r, fds[0], &x, NULL);
    peer_write_all(fds[1], "hi", 2);
    RUN_UNTIL(r, x.got_len == 2);
    tw_transport_lose_connection(x.base.transport);
    RUN_UNTIL(r, x.lost == 1);
    close(fds[1]);
}

static bool built_with_uring(void)
{
    for (const char *const *n = tw_reactor_backends(); *n; n++)
        if (strcmp(*n, "io_uring") == 0)
            return true;
    return false;
}

TW_TEST(uring, falls_back_to_epoll_without_lockable_memory)
{
    if (!built_with_uring())
        cr_skip_test("built without liburing");
    as_nobody_with_memlock(0);
    tw_testing_log_capture_start();
    tw_reactor *r = NULL;
    tw_reactor_options opts = {.backend = "io_uring"};
    cr_assert_eq(tw_reactor_new(&r, &opts), 0, "a reactor, not ENOMEM");
    if (on_uring(r)) {
        /* A kernel that charges rings elsewhere (a memory cgroup): fine too. */
        cr_assert_eq(tw_testing_log_count("io_uring unavailable"), 0);
    } else {
        cr_assert_str_eq(tw_reactor_backend_name(r), "epoll");
        cr_assert_eq(tw_testing_log_count("RLIMIT_MEMLOCK"), 1, "says why: %s",
                     tw_testing_log_text());
    }
    round_trip_on(r);
    cr_assert_eq(tw_reactor_free(r), 0);
    tw_testing_log_capture_stop();
}

TW_TEST(uring, small_memlock_still_gets_a_working_ring)
{
    if (!built_with_uring())
        cr_skip_test("built without liburing");
    as_nobody_with_memlock(64 * 1024);
    tw_reactor *r = NULL;
    tw_reactor_options opts = {.backend = "io_uring"};
    cr_assert_eq(tw_reactor_new(&r, &opts), 0);
    cr_assert_str_eq(tw_reactor_backend_name(r), "io_uring", "smaller rings fit 64 KiB");
    round_trip_on(r);
    cr_assert_eq(tw_reactor_free(r), 0);
}

/* ---- Completions */

TW_REACTOR_TEST(uring, writes_leave_with_the_next_submission)
{
    NEED_URING(r);
    int fds[2];
    tcp_pair(fds);
    struct rec x = {.hold = true};
    rec_adopt(r, fds[0], &x, NULL);
    set_nonblock(fds[1]);
    cr_assert_eq(tw_transport_write(x.t, "abc", 3), 0);
    cr_assert_eq(tw_transport_write(x.t, "def", 3), 0);
    /* Queued, not sent: the completion path sends from the queue. */
    cr_assert_eq(tw_transport_write_buffer_size(x.t), 6);
    char buf[8];
    cr_assert_eq(peer_read(fds[1], buf, sizeof buf), -1);
    /* One send takes both writes. */
    RUN_UNTIL(r, tw_transport_write_buffer_size(x.t) == 0);
    ssize_t n = -1;
    for (int i = 0; i < 100 && n < 0; i++) {
        n = peer_read(fds[1], buf, sizeof buf);
        if (n < 0)
            tw_reactor_iterate(r, 0.01);
    }
    cr_assert_eq(n, 6);
    cr_assert_eq(memcmp(buf, "abcdef", 6), 0);
    tw_transport_abort_connection(x.t);
    RUN_UNTIL(r, x.lost == 1);
    tw_transport_unref(x.t);
    close(fds[1]);
}

/* Checks a pattern byte by byte: connection id + offset. */
struct pat {
    tw_protocol base;
    unsigned id;
    size_t total;
    int lost;
    bool bad;
    int calls_while_paused;
    bool paused;
    bool pause_first;
};

static void pat_data(tw_protocol *p, const char *data, size_t len)
{
    struct pat *x = (struct pat *)p;
    if (x->paused)
        x->calls_while_paused++;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)data[i] != (unsigned char)(x->id + x->total + i))
            x->bad = true;
    x->total += len;
    if (x->pause_first) {
        x->pause_first = false;
        x->paused = true;
        cr_assert_eq(tw_transport_pause_producing(p->transport), 0);
    }
}

static void pat_lost(tw_protocol *p, tw_failure *reason)
{
    ((struct pat *)p)->lost++;
}

static const tw_protocol_ops pat_ops = {.data_received = pat_data, .connection_lost = pat_lost};

static void pat_fill(char *buf, size_t len, unsigned id)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (char)(id + i);
}

static void pat_adopt(tw_reactor *r, int fd, struct pat *x)
{
    tw_protocol_init(&x->base, &pat_ops);
    tw_factory f;
    tw_factory_init(&f, &rec_factory_ops, NULL, 0, x);
    cr_assert_eq(tw_connection_adopt(r, fd, &f, NULL), 0);
    close(fd);
}

#define CONNS 40
#define EACH  (96 * 1024)

/* 40 connections with 96 KiB each waiting: more than the shared buffers
 * hold at once, so receives end with ENOBUFS and are armed again. */
TW_REACTOR_TEST(uring, shared_buffers_running_short_lose_nothing)
{
    static struct pat x[CONNS];
    static int peer[CONNS];
    static char buf[EACH];
    for (unsigned i = 0; i < CONNS; i++) {
        int fds[2];
        tcp_pair(fds);
        x[i] = (struct pat){.id = i};
        pat_adopt(r, fds[0], &x[i]);
        peer[i] = fds[1];
        pat_fill(buf, EACH, i);
        peer_write_all(peer[i], buf, EACH);
    }
    double end = now_s() + 20;
    for (;;) {
        size_t done = 0;
        for (unsigned i = 0; i < CONNS; i++)
            done += x[i].total == EACH;
        if (done == CONNS || now_s() > end)
            break;
        tw_reactor_iterate(r, 0.01);
    }
    for (unsigned i = 0; i < CONNS; i++) {
        cr_assert_eq(x[i].total, EACH, "connection %u got %zu", i, x[i].total);
        cr_assert(!x[i].bad, "connection %u: bytes out of order", i);
        close(peer[i]);
    }
    for (unsigned i = 0; i < CONNS; i++)
        RUN_UNTIL(r, x[i].lost == 1);
}

/* A receive larger than what is left of a shared buffer comes in pieces:
 * a pause from inside the first leaves the next piece received already. It
 * waits for the resume and comes before anything read after. */
TW_REACTOR_TEST(uring, bytes_received_before_a_pause_wait_for_the_resume)
{
    int fds[2];
    tcp_pair(fds);
    struct pat x = {.id = 7, .pause_first = true};
    pat_adopt(r, fds[0], &x);
    static char buf[3 * 65536];
    pat_fill(buf, sizeof buf, 7);
    peer_write_all(fds[1], buf, 150000);
    RUN_UNTIL(r, x.paused);
    spin(r, 20);
    cr_assert_eq(x.calls_while_paused, 0, "data_received while paused");
    size_t before = x.total;
    cr_assert_lt(before, 150000);
    peer_write_all(fds[1], buf + 150000, sizeof buf - 150000);
    x.paused = false;
    cr_assert_eq(tw_transport_resume_producing(x.base.transport), 0);
    RUN_UNTIL(r, x.total == sizeof buf);
    cr_assert(!x.bad, "bytes out of order");
    close(fds[1]);
    RUN_UNTIL(r, x.lost == 1);
}

/* A reactor freed while the completions of a close are still to come:
 * they are delivered at free, and the connection's memory goes with them. */
static tw_reactor *uring_reactor(void)
{
    tw_reactor *r;
    tw_reactor_options opts = {.backend = "io_uring"};
    cr_assert_eq(tw_reactor_new(&r, &opts), 0);
    if (!on_uring(r)) {
        tw_reactor_free(r);
        cr_skip_test("io_uring only");
    }
    return r;
}

TW_TEST(uring, free_with_requests_in_flight_releases_the_connection)
{
    /* A first reactor and connection make what the thread keeps (its read
     * buffer, its send slots), so that the count below sees only what the
     * second one leaves. */
    tw_testing_alloc_live();
    tw_reactor *r = uring_reactor();
    int warm[2];
    tcp_pair(warm);
    struct rec w = {0};
    rec_adopt(r, warm[0], &w, NULL);
    tw_transport_write(w.base.transport, "x", 1);
    tw_transport_lose_connection(w.base.transport);
    RUN_UNTIL(r, w.lost == 1);
    close(warm[1]);
    cr_assert_eq(tw_reactor_free(r), 0);
    tw_wqueue_cache_trim();
    long live = tw_testing_alloc_live();

    r = uring_reactor();
    int fds[2];
    tcp_pair(fds);
    struct rec x = {0};
    rec_adopt(r, fds[0], &x, NULL);
    /* More than the kernel takes: a send stays in flight. */
    static char big[4 << 20];
    cr_assert_eq(tw_transport_write(x.base.transport, big, sizeof big), 0);
    spin(r, 5);
    cr_assert_eq(tw_transport_abort_connection(x.base.transport), 0);
    RUN_UNTIL(r, x.lost == 1);
    /* The completions of the close are still to come: the free delivers them. */
    cr_assert_eq(tw_reactor_free(r), 0);
    tw_wqueue_cache_trim();
    cr_assert_eq(tw_testing_alloc_live(), live, "the connection was released");
    close(fds[1]);
}

/* An io_uring reactor whose sends all go zero copy, loopback included. */
static tw_reactor *zero_copy_reactor(void)
{
    setenv("TWINE_IO_URING_ZC_MIN", "0", 1);
    tw_reactor *r = uring_reactor();
    unsetenv("TWINE_IO_URING_ZC_MIN");
    return r;
}

static void count_release_fn(void *arg)
{
    (*(int *)arg)++;
}

/* Reads the peer's end while iterating r, until want bytes or 10 s. */
static char *drain_peer(tw_reactor *r, int fd, size_t want, size_t *len, bool *eof)
{
    char *buf = malloc(want + 1);
    cr_assert_not_null(buf);
    size_t n = 0;
    *eof = false;
    double end = now_s() + 10;
    while (n < want && now_s() < end) {
        tw_reactor_iterate(r, 0.001);
        ssize_t k = peer_read(fd, buf + n, want + 1 - n);
        if (k == 0 || k == -2) {
            *eof = true;
            break;
        }
        if (k > 0)
            n += (size_t)k;
    }
    *len = n;
    return buf;
}

/* Zero-copy sends (forced for every size, loopback too): the bytes arrive
 * whole and in order, and each write's memory is released once, after its
 * notification. */
TW_TEST(uring, zero_copy_sends_deliver_and_release_once)
{
    tw_reactor *r = zero_copy_reactor();
    int fds[2];
    tcp_pair(fds);
    struct rec x = {.hold = true};
    rec_adopt(r, fds[0], &x, NULL);
    set_nonblock(fds[1]);
    static char big[8][256 * 1024];
    int released = 0;
    for (int i = 0; i < 8; i++) {
        pat_fill(big[i], sizeof big[i], (unsigned)(i * sizeof big[i]));
        cr_assert_eq(
            tw_transport_write_zerocopy(x.t, big[i], sizeof big[i], count_release_fn, &released),
            0);
    }
    cr_assert_eq(tw_transport_write(x.t, "end", 3), 0);
    size_t len;
    bool eof;
    char *got = drain_peer(r, fds[1], sizeof big + 3, &len, &eof);
    cr_assert_eq(len, sizeof big + 3);
    for (size_t i = 0; i < sizeof big; i++)
        if ((unsigned char)got[i] != (unsigned char)i)
            cr_assert_fail("byte %zu", i);
    cr_assert_eq(memcmp(got + sizeof big, "end", 3), 0);
    free(got);
    RUN_UNTIL(r, released == 8);
    spin(r, 5);
    cr_assert_eq(released, 8, "released once each");
    tw_transport_lose_connection(x.t);
    RUN_UNTIL(r, x.lost == 1);
    tw_transport_unref(x.t);
    close(fds[1]);
    cr_assert_eq(tw_reactor_free(r), 0);
}

/* The kernel cannot pin pages for a zero-copy send (RLIMIT_MEMLOCK): the
 * bytes go copied instead, all of them, and the write is released. */
TW_TEST(uring, zero_copy_without_lockable_memory_sends_copies)
{
    /* The ring's creator is who the kernel charges pinned pages to. */
    as_nobody_with_memlock(1 << 20);
    tw_reactor *r = zero_copy_reactor();
    int fds[2];
    tcp_pair(fds);
    set_nonblock(fds[1]);
    struct rec x = {.hold = true};
    rec_adopt(r, fds[0], &x, NULL);
    static char big[4 << 20];
    pat_fill(big, sizeof big, 0);
    int released = 0;
    cr_assert_eq(tw_transport_write_zerocopy(x.t, big, sizeof big, count_release_fn, &released), 0);
    size_t len;
    bool eof;
    char *got = drain_peer(r, fds[1], sizeof big, &len, &eof);
    cr_assert_eq(len, sizeof big, "all of it arrived (%zu)", len);
    cr_assert_eq(memcmp(got, big, sizeof big), 0);
    free(got);
    RUN_UNTIL(r, released == 1);
    cr_assert_eq(x.lost, 0);
    tw_transport_lose_connection(x.t);
    RUN_UNTIL(r, x.lost == 1);
    tw_transport_unref(x.t);
    close(fds[1]);
    cr_assert_eq(tw_reactor_free(r), 0);
}

/* A zero-copy send that fails (the peer reset, nothing reading to notice)
 * loses the connection with the error instead of sending again forever. */
TW_TEST(uring, failed_zero_copy_send_loses_the_connection)
{
    tw_reactor *r = zero_copy_reactor();
    int fds[2];
    tcp_pair(fds);
    struct rec x = {.hold = true};
    rec_adopt(r, fds[0], &x, NULL);
    tw_transport_pause_producing(x.t);
    spin(r, 3);
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    cr_assert_eq(setsockopt(fds[1], SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    close(fds[1]); /* a reset */
    usleep(10000);
    static char big[1 << 20];
    int released = 0;
    cr_assert_eq(tw_transport_write_zerocopy(x.t, big, sizeof big, count_release_fn, &released), 0);
    RUN_UNTIL(r, x.lost == 1);
    cr_assert(x.lost_code == -ECONNRESET || x.lost_code == -EPIPE, "lost with %d (%s)", x.lost_code,
              x.lost_msg);
    RUN_UNTIL(r, released == 1);
    tw_transport_unref(x.t);
    cr_assert_eq(tw_reactor_free(r), 0);
}
