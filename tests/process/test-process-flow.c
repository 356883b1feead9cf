/* Flow control through a child: both directions at once without deadlock,
 * a paused parent holding a fast child back, producers on stdin. */
#include "proc-test.h"

/* Byte i of the pattern. */
static char pattern(size_t i)
{
    return (char)((i * 7 + i / 251) & 0xff);
}

struct checker {
    struct rec rec;
    size_t seen;
    size_t bad;
};

static void check_data(tw_process_protocol *pp, int fd, const char *data, size_t len)
{
    struct checker *c = (struct checker *)pp;
    if (fd != 1) {
        rec_data(pp, fd, data, len);
        return;
    }
    for (size_t i = 0; i < len; i++)
        if (data[i] != pattern(c->seen + i))
            c->bad++;
    c->seen += len;
}

#define TEN_MIB (10u * 1024 * 1024)

TW_REACTOR_TEST(flow, cat_round_trips_ten_mib_both_ways_at_once)
{
    static tw_process_protocol_ops ops;
    ops = rec_ops;
    ops.child_data_received = check_data;
    struct checker c = {0};
    rec_init(&c.rec);
    c.rec.base.ops = &ops;
    tw_process *p = spawn_rec(r, &c.rec, "/bin/cat", NULL, NULL);
    char *buf = tw_malloc(TEN_MIB);
    for (size_t i = 0; i < TEN_MIB; i++)
        buf[i] = pattern(i);
    /* All of it at once: cat cannot take it until we read what it writes
     * back, which we do while the rest waits in the queue. */
    cr_assert_eq(tw_transport_write(tw_process_transport(p), buf, TEN_MIB), 0);
    tw_free(buf);
    cr_assert_gt(tw_transport_write_buffer_size(tw_process_transport(p)), 0);
    cr_assert_eq(tw_transport_lose_write_connection(tw_process_transport(p)), 0);
    run_until_freed(r, &c.rec, 10);
    cr_assert_eq(c.seen, TEN_MIB);
    cr_assert_eq(c.bad, 0);
    cr_assert_eq(c.rec.end_status.exit_code, 0);
    rec_clear(&c.rec);
}

/* A streaming producer feeding cat: paused above the high-water mark,
 * resumed at the low one, stopped when stdin closes. */
struct feeder {
    tw_producer base;
    tw_transport *t;
    size_t sent, limit;
    bool paused;
    int pauses, resumes, stops;
};

static void feed_some(struct feeder *fd)
{
    char chunk[32 * 1024];
    while (!fd->paused && fd->sent < fd->limit) {
        size_t n = sizeof chunk;
        if (n > fd->limit - fd->sent)
            n = fd->limit - fd->sent;
        for (size_t i = 0; i < n; i++)
            chunk[i] = pattern(fd->sent + i);
        cr_assert_eq(tw_transport_write(fd->t, chunk, n), 0);
        fd->sent += n;
    }
    if (fd->sent == fd->limit && !fd->paused) {
        fd->paused = true; /* done: no more */
        tw_transport_unregister_producer(fd->t);
        tw_transport_lose_write_connection(fd->t);
    }
}

static void feeder_pause(tw_producer *p)
{
    struct feeder *fd = (struct feeder *)p;
    fd->paused = true;
    fd->pauses++;
}

static void feeder_resume(tw_producer *p)
{
    struct feeder *fd = (struct feeder *)p;
    fd->resumes++;
    fd->paused = false;
    feed_some(fd);
}

static void feeder_stop(tw_producer *p)
{
    ((struct feeder *)p)->stops++;
}

static const tw_producer_ops feeder_ops = {feeder_pause, feeder_resume, feeder_stop};

TW_REACTOR_TEST(flow, streaming_producer_on_stdin)
{
    static tw_process_protocol_ops ops;
    ops = rec_ops;
    ops.child_data_received = check_data;
    struct checker c = {0};
    rec_init(&c.rec);
    c.rec.base.ops = &ops;
    tw_process *p = spawn_rec(r, &c.rec, "/bin/cat", NULL, NULL);
    tw_transport *t = tw_process_transport(p);
    struct feeder fd = {.base = {&feeder_ops}, .t = t, .limit = 4u * 1024 * 1024};
    cr_assert_eq(tw_transport_register_producer(t, &fd.base, true), 0);
    cr_assert_eq(tw_transport_register_producer(t, &fd.base, true), TW_EBUSY);
    feed_some(&fd);
    cr_assert_gt(fd.pauses, 0, "paused above the high-water mark");
    cr_assert_leq(tw_transport_write_buffer_size(t), TW_TRANSPORT_HIGH_WATER + 32 * 1024);
    run_until_freed(r, &c.rec, 10);
    cr_assert_gt(fd.resumes, 0);
    cr_assert_eq(c.seen, fd.limit);
    cr_assert_eq(c.bad, 0);
    rec_clear(&c.rec);
}

/* A producer still registered when stdin closes is stopped. */
TW_REACTOR_TEST(flow, producer_stopped_when_stdin_closes)
{
    struct rec rec;
    rec_init(&rec);
    tw_process *p = spawn_rec(r, &rec, "/bin/true", NULL, NULL);
    struct feeder fd = {.base = {&feeder_ops}, .t = tw_process_transport(p), .paused = true};
    cr_assert_eq(tw_transport_register_producer(fd.t, &fd.base, true), 0);
    run_until_freed(r, &rec, 5);
    cr_assert_eq(fd.stops, 1);
    rec_clear(&rec);
}

/* A pull producer feeding cat: asked for one chunk at a time, each time
 * the queue has drained, never from inside its own write. */
struct puller {
    tw_producer base;
    tw_transport *t;
    size_t sent, limit;
    int resumes, stops, depth, max_depth;
};

static void puller_resume(tw_producer *p)
{
    struct puller *pl = (struct puller *)p;
    pl->resumes++;
    if (++pl->depth > pl->max_depth)
        pl->max_depth = pl->depth;
    if (pl->sent < pl->limit) {
        char chunk[8 * 1024];
        size_t n = sizeof chunk;
        if (n > pl->limit - pl->sent)
            n = pl->limit - pl->sent;
        for (size_t i = 0; i < n; i++)
            chunk[i] = pattern(pl->sent + i);
        pl->sent += n;
        cr_assert_eq(tw_transport_write(pl->t, chunk, n), 0);
        if (pl->sent == pl->limit) {
            tw_transport_unregister_producer(pl->t);
            tw_transport_lose_write_connection(pl->t);
        }
    }
    pl->depth--;
}

static void puller_stop(tw_producer *p)
{
    ((struct puller *)p)->stops++;
}

static const tw_producer_ops puller_ops = {NULL, puller_resume, puller_stop};

TW_REACTOR_TEST(flow, pull_producer_on_stdin)
{
    static tw_process_protocol_ops ops;
    ops = rec_ops;
    ops.child_data_received = check_data;
    struct checker c = {0};
    rec_init(&c.rec);
    c.rec.base.ops = &ops;
    tw_process *p = spawn_rec(r, &c.rec, "/bin/cat", NULL, NULL);
    tw_transport *t = tw_process_transport(p);
    struct puller pl = {.base = {&puller_ops}, .t = t, .limit = 1024u * 1024};
    cr_assert_eq(tw_transport_register_producer(t, &pl.base, false), 0);
    cr_assert_eq(pl.resumes, 1, "asked once as it registers");
    run_until_freed(r, &c.rec, 10);
    cr_assert_eq(pl.sent, pl.limit);
    cr_assert_eq(pl.resumes, 128, "one chunk per resume");
    cr_assert_eq(pl.max_depth, 1, "never resumed from inside its own write");
    cr_assert_eq(pl.stops, 0, "unregistered before the end");
    cr_assert_eq(c.seen, pl.limit);
    cr_assert_eq(c.bad, 0);
    cr_assert_eq(c.rec.end_status.exit_code, 0);
    rec_clear(&c.rec);
}

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long size = 0, resident = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &size, &resident) != 2)
            resident = 0;
        fclose(f);
    }
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

#define HUNDRED_MIB (100u * 1024 * 1024)

/* head writes 100 MiB as fast as it can; the parent pauses reading for a
 * while at every 10 MiB. What arrives while paused is nothing, and the
 * parent's memory does not grow with what the child has to say. */
struct pauser {
    struct rec rec;
    tw_reactor *r;
    size_t next_pause;
    size_t during_pause;
    bool paused;
    int pauses;
    long rss_max;
};

static void pauser_resume(void *arg)
{
    struct pauser *ps = arg;
    ps->paused = false;
    tw_transport_resume_producing(tw_process_transport(ps->rec.base.process));
}

static void pauser_data(tw_process_protocol *pp, int fd, const char *data, size_t len)
{
    struct pauser *ps = (struct pauser *)pp;
    (void)data;
    if (fd != 1)
        return;
    if (ps->paused)
        ps->during_pause += len;
    ps->rec.out_len += len;
    if (ps->rec.out_len >= ps->next_pause && !ps->paused) {
        ps->next_pause += 10u * 1024 * 1024;
        ps->paused = true;
        ps->pauses++;
        tw_transport_pause_producing(tw_process_transport(pp->process));
        cr_assert_eq(tw_call_later(tw_reactor_clock(ps->r), 0.02, pauser_resume, ps, NULL), 0);
        long rss = rss_kib();
        if (rss > ps->rss_max)
            ps->rss_max = rss;
    }
}

TW_REACTOR_TEST(flow, paused_parent_does_not_grow_with_a_fast_child)
{
    static tw_process_protocol_ops ops;
    ops = rec_ops;
    ops.child_data_received = pauser_data;
    struct pauser ps = {.r = r, .next_pause = 1024 * 1024};
    rec_init(&ps.rec);
    ps.rec.base.ops = &ops;
    char *argv[] = {"head", "-c", "104857600", "/dev/zero", NULL};
    long before = rss_kib();
    spawn_rec(r, &ps.rec, "/usr/bin/head", argv, NULL);
    run_until_freed(r, &ps.rec, 20);
    cr_assert_eq(ps.rec.out_len, HUNDRED_MIB);
    cr_assert_eq(ps.during_pause, 0, "nothing read while paused");
    cr_assert_geq(ps.pauses, 9);
    cr_assert_lt(ps.rss_max - before, 4 * 1024, "grew by %ld KiB", ps.rss_max - before);
    cr_assert_eq(ps.rec.end_status.exit_code, 0);
}
