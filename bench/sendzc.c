/* Zero-copy sends (io_uring's SEND_ZC) against copying sends, by write size:
 * where does zero copy start to pay?
 *
 * A Twine connection on an io_uring reactor streams 256 MiB, in zero-copy
 * writes (tw_transport_write_zerocopy) of SIZE bytes each, to a child
 * process that reads and discards (plain sockets). Each size runs twice:
 * with the backend's zero-copy threshold at 0 (every send SEND_ZC /
 * SENDMSG_ZC) and at SIZE_MAX (every send copies), set through
 * TWINE_IO_URING_ZC_MIN before the reactor is made. The figure is this
 * process's CPU time (the reactor thread: the sender's side alone) and the
 * wall time, best of 3. Prints one JSON line per size.
 * Usage: bench-sendzc [MiB, default 256] */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <twine/net.h>
#include <twine/twine.h>

#define IN_FLIGHT (1u << 20) /* bytes queued at once, at least two writes */

struct sender {
    tw_protocol base;
    size_t size, left, queued;
    bool done;
};

static char *payload;

static void release(void *arg);

static void fill(struct sender *s)
{
    while (s->left > 0 && (s->queued < IN_FLIGHT || s->queued < 2 * s->size)) {
        size_t n = s->left < s->size ? s->left : s->size;
        s->left -= n;
        s->queued += n;
        if (tw_transport_write_zerocopy(s->base.transport, payload, n, release, s) < 0) {
            fprintf(stderr, "write failed\n");
            exit(1);
        }
    }
}

static void release(void *arg)
{
    struct sender *s = arg;
    s->queued -= s->queued < s->size ? s->queued : s->size;
    if (s->left > 0)
        fill(s);
    else if (s->queued == 0 && !s->done) {
        s->done = true;
        tw_transport_lose_connection(s->base.transport);
    }
}

static void made(tw_protocol *p)
{
    fill((struct sender *)p);
}

static void lost(tw_protocol *p, tw_failure *reason)
{
    ((struct sender *)p)->done = true;
}

static const tw_protocol_ops sender_ops = {.connection_made = made, .connection_lost = lost};

static tw_protocol *build(tw_factory *f, const tw_address *addr)
{
    return f->data;
}

static const tw_factory_ops factory_ops = {.build_protocol = build};

static double now(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A connected pair on loopback; the child reads its end to the end. */
static int connect_reader(pid_t *child)
{
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 1) < 0 ||
        getsockname(l, (struct sockaddr *)&a, &al) < 0)
        exit(1);
    *child = fork();
    if (*child == 0) {
        int c = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(c, (struct sockaddr *)&a, sizeof a) < 0)
            _exit(1);
        static char buf[1 << 18];
        while (read(c, buf, sizeof buf) > 0) {
        }
        _exit(0);
    }
    int fd = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    close(l);
    return fd;
}

/* Returns the CPU seconds of the sending side; *wall gets the wall time. */
static double run(size_t size, size_t total, bool zc, double *wall)
{
    setenv("TWINE_IO_URING_ZC_MIN", zc ? "0" : "18446744073709551615", 1);
    tw_reactor *r;
    tw_reactor_options opts = {.backend = "io_uring", .no_signal_handlers = true};
    if (tw_reactor_new(&r, &opts) < 0 || strcmp(tw_reactor_backend_name(r), "io_uring") != 0) {
        fprintf(stderr, "no io_uring here\n");
        exit(1);
    }
    pid_t child;
    int fd = connect_reader(&child);
    struct sender s = {.size = size, .left = total};
    tw_protocol_init(&s.base, &sender_ops);
    tw_factory f;
    tw_factory_init(&f, &factory_ops, NULL, 0, &s);
    double c0 = now(CLOCK_PROCESS_CPUTIME_ID), w0 = now(CLOCK_MONOTONIC);
    if (tw_connection_adopt(r, fd, &f, NULL) < 0)
        exit(1);
    close(fd);
    while (!s.done)
        tw_reactor_iterate(r, 1.0);
    double cpu = now(CLOCK_PROCESS_CPUTIME_ID) - c0;
    *wall = now(CLOCK_MONOTONIC) - w0;
    waitpid(child, NULL, 0);
    tw_reactor_free(r);
    return cpu;
}

int main(int argc, char **argv)
{
    size_t total = (size_t)(argc > 1 ? atoi(argv[1]) : 256) << 20;
    static const size_t sizes[] = {4096, 16384, 65536, 262144, 1048576, 4194304};
    payload = malloc(sizes[sizeof sizes / sizeof sizes[0] - 1]);
    memset(payload, 'z', sizes[sizeof sizes / sizeof sizes[0] - 1]);
    signal(SIGPIPE, SIG_IGN);
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        double best[2] = {1e9, 1e9}, wall[2] = {1e9, 1e9};
        for (int rep = 0; rep < 3; rep++) {
            for (int zc = 0; zc < 2; zc++) {
                double w;
                double c = run(sizes[i], total, zc, &w);
                if (c < best[zc])
                    best[zc] = c;
                if (w < wall[zc])
                    wall[zc] = w;
            }
        }
        printf("{\"bench\":\"sendzc\",\"write_bytes\":%zu,\"mib\":%zu,\"copy_cpu_s\":%.4f,"
               "\"zc_cpu_s\":%.4f,\"copy_gib_s\":%.2f,\"zc_gib_s\":%.2f,\"cpu_ratio\":%.3f}\n",
               sizes[i], total >> 20, best[0], best[1], (double)total / wall[0] / (1 << 30),
               (double)total / wall[1] / (1 << 30), best[1] / best[0]);
        fflush(stdout);
    }
    free(payload);
    return 0;
}
