/* Spawning: /bin/true 1,000 times, 16 children at a time, Twine's
 * tw_spawn_process against libuv's uv_spawn, in the same run.
 *
 * Both sides do the same work per child: three pipes (stdin written by the
 * parent, stdout and stderr read until end of file), the child reaped, every
 * handle closed; a finished child makes room for the next. A second pair of
 * figures spawns without pipes (the child's 0, 1 and 2 inherited from one
 * /dev/null descriptor), which isolates the cost of starting a process.
 * Best of REPEATS runs of each, alternating.
 *
 * Output, one line:
 * {"bench":"spawn","children":1000,"concurrency":16,"twine_s":..,"libuv_s":..,"ratio":..,
 *  "twine_nopipes_s":..,"libuv_nopipes_s":..,"nopipes_ratio":..} */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <twine/process.h>
#include <twine/twine.h>
#include <uv.h>

#define CHILDREN    1000
#define CONCURRENCY 16
#define REPEATS     3
#define EXE         "/bin/true"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int devnull;

/* ---- Twine */

struct tw_run {
    tw_reactor *r;
    int started, ended;
    bool pipes;
    tw_process_protocol slots[CONCURRENCY];
};

static void tw_start_one(struct tw_run *run, tw_process_protocol *pp);

static struct tw_run *current;

/* The child has ended and its pipes are closed: its slot takes the next. */
static void tw_free_slot(tw_process_protocol *pp)
{
    struct tw_run *run = current;
    run->ended++;
    if (run->started < CHILDREN)
        tw_start_one(run, pp);
    else if (run->ended == CHILDREN)
        tw_reactor_crash(run->r);
}

static const tw_process_protocol_ops tw_ops = {.free = tw_free_slot};

static void tw_start_one(struct tw_run *run, tw_process_protocol *pp)
{
    static const tw_child_fd nopipes[] = {
        {0, TW_CHILD_FD_INHERIT, 0}, {1, TW_CHILD_FD_INHERIT, 0}, {2, TW_CHILD_FD_INHERIT, 0}};
    tw_child_fd map[3];
    memcpy(map, nopipes, sizeof map);
    for (int i = 0; i < 3; i++)
        map[i].parent_fd = devnull;
    tw_process_options o = {.child_fds = run->pipes ? NULL : map, .n_child_fds = 3};
    tw_process_protocol_init(pp, &tw_ops);
    run->started++;
    tw_failure *f = NULL;
    if (tw_spawn_process(run->r, pp, EXE, NULL, NULL, NULL, &o, NULL, &f) < 0) {
        fprintf(stderr, "tw_spawn_process: %s\n", tw_failure_message(f));
        exit(1);
    }
}

static double bench_twine(bool pipes)
{
    struct tw_run run = {.pipes = pipes};
    if (tw_reactor_new(&run.r, NULL) < 0)
        exit(1);
    current = &run;
    double t0 = now_s();
    for (int i = 0; i < CONCURRENCY; i++)
        tw_start_one(&run, &run.slots[i]);
    tw_reactor_run(run.r);
    double t = now_s() - t0;
    tw_reactor_free(run.r);
    return t;
}

/* ---- libuv */

struct uv_child {
    uv_process_t proc;
    uv_pipe_t pipes[3];
    int open_handles;
    int eofs;
    bool exited;
    struct uv_run *run;
};

struct uv_run {
    uv_loop_t loop;
    int started, ended;
    bool pipes;
    struct uv_child slots[CONCURRENCY];
};

static void uv_start_one(struct uv_run *run, struct uv_child *c);

static void uv_closed(uv_handle_t *h)
{
    struct uv_child *c = h->data;
    if (--c->open_handles > 0)
        return;
    struct uv_run *run = c->run;
    run->ended++;
    if (run->started < CHILDREN)
        uv_start_one(run, c);
}

static void uv_maybe_done(struct uv_child *c)
{
    if (!c->exited || c->eofs < (c->run->pipes ? 2 : 0))
        return;
    uv_close((uv_handle_t *)&c->proc, uv_closed);
    if (c->run->pipes)
        for (int i = 0; i < 3; i++)
            uv_close((uv_handle_t *)&c->pipes[i], uv_closed);
}

static void uv_exited(uv_process_t *p, int64_t status, int signo)
{
    (void)status;
    (void)signo;
    struct uv_child *c = p->data;
    c->exited = true;
    uv_maybe_done(c);
}

static char uv_buf[65536];

static void uv_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf)
{
    (void)h;
    (void)size;
    *buf = uv_buf_init(uv_buf, sizeof uv_buf);
}

static void uv_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    (void)buf;
    struct uv_child *c = s->data;
    if (n < 0) {
        uv_read_stop(s);
        c->eofs++;
        uv_maybe_done(c);
    }
}

static void uv_start_one(struct uv_run *run, struct uv_child *c)
{
    memset(c, 0, sizeof *c);
    c->run = run;
    char *args[] = {EXE, NULL};
    uv_stdio_container_t stdio[3];
    for (int i = 0; i < 3; i++) {
        if (run->pipes) {
            uv_pipe_init(&run->loop, &c->pipes[i], 0);
            c->pipes[i].data = c;
            stdio[i].flags = UV_CREATE_PIPE | (i == 0 ? UV_READABLE_PIPE : UV_WRITABLE_PIPE);
            stdio[i].data.stream = (uv_stream_t *)&c->pipes[i];
        } else {
            stdio[i].flags = UV_INHERIT_FD;
            stdio[i].data.fd = devnull;
        }
    }
    uv_process_options_t o = {
        .exit_cb = uv_exited, .file = EXE, .args = args, .stdio = stdio, .stdio_count = 3};
    c->proc.data = c;
    run->started++;
    int rc = uv_spawn(&run->loop, &c->proc, &o);
    if (rc < 0) {
        fprintf(stderr, "uv_spawn: %s\n", uv_strerror(rc));
        exit(1);
    }
    c->open_handles = run->pipes ? 4 : 1;
    if (run->pipes) {
        uv_read_start((uv_stream_t *)&c->pipes[1], uv_alloc, uv_read);
        uv_read_start((uv_stream_t *)&c->pipes[2], uv_alloc, uv_read);
    }
}

static double bench_libuv(bool pipes)
{
    struct uv_run *run = calloc(1, sizeof *run);
    run->pipes = pipes;
    uv_loop_init(&run->loop);
    double t0 = now_s();
    for (int i = 0; i < CONCURRENCY; i++)
        uv_start_one(run, &run->slots[i]);
    uv_run(&run->loop, UV_RUN_DEFAULT);
    double t = now_s() - t0;
    if (run->ended != CHILDREN)
        fprintf(stderr, "libuv: %d of %d ended\n", run->ended, CHILDREN);
    uv_loop_close(&run->loop);
    free(run);
    return t;
}

static double min(double a, double b)
{
    return a < b ? a : b;
}

int main(void)
{
    devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    double tw = 1e9, uv = 1e9, tw_np = 1e9, uv_np = 1e9;
    for (int i = 0; i < REPEATS; i++) {
        tw = min(tw, bench_twine(true));
        uv = min(uv, bench_libuv(true));
        tw_np = min(tw_np, bench_twine(false));
        uv_np = min(uv_np, bench_libuv(false));
    }
    printf("{\"bench\":\"spawn\",\"children\":%d,\"concurrency\":%d,\"twine_s\":%.4f,"
           "\"libuv_s\":%.4f,\"ratio\":%.3f,\"twine_nopipes_s\":%.4f,\"libuv_nopipes_s\":%.4f,"
           "\"nopipes_ratio\":%.3f}\n",
           CHILDREN, CONCURRENCY, tw, uv, tw / uv, tw_np, uv_np, tw_np / uv_np);
    return 0;
}
