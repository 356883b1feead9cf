/* The standard I/O transport over pipes, files, /dev/null and a terminal,
 * and the stdio: server endpoint. */
#include <fcntl.h>
#include <pty.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <twine/endpoint.h>
#include <twine/net.h>

#include "proc-test.h"

struct echo {
    tw_protocol base;
    char got[1 << 20];
    size_t len;
    int made, lost, read_lost, write_lost, freed;
    int lost_code;
    bool echo, half_close, pause_at_first;
};

static void echo_made(tw_protocol *p)
{
    ((struct echo *)p)->made++;
}

static void echo_data(tw_protocol *p, const char *data, size_t len)
{
    struct echo *e = (struct echo *)p;
    if (e->len + len <= sizeof e->got) {
        memcpy(e->got + e->len, data, len);
        e->len += len;
    }
    if (e->echo)
        tw_transport_write(p->transport, data, len);
    if (e->pause_at_first) {
        e->pause_at_first = false;
        tw_transport_pause_producing(p->transport);
    }
}

static void echo_lost(tw_protocol *p, tw_failure *reason)
{
    struct echo *e = (struct echo *)p;
    e->lost++;
    e->lost_code = tw_failure_code(reason);
    cr_assert(p->transport);
}

static void echo_read_lost(tw_protocol *p)
{
    ((struct echo *)p)->read_lost++;
    tw_transport_write(p->transport, "bye\n", 4);
    tw_transport_lose_connection(p->transport);
}

static void echo_write_lost(tw_protocol *p)
{
    ((struct echo *)p)->write_lost++;
}

static void echo_free(tw_protocol *p)
{
    ((struct echo *)p)->freed++;
}

static const tw_protocol_ops echo_ops = {
    .connection_made = echo_made,
    .data_received = echo_data,
    .connection_lost = echo_lost,
    .free = echo_free,
};

static const tw_protocol_ops half_ops = {
    .connection_made = echo_made,
    .data_received = echo_data,
    .connection_lost = echo_lost,
    .read_connection_lost = echo_read_lost,
    .write_connection_lost = echo_write_lost,
    .free = echo_free,
};

static struct echo *echo_new(const tw_protocol_ops *ops)
{
    struct echo *e = tw_calloc(1, sizeof *e);
    tw_protocol_init(&e->base, ops);
    return e;
}

static void run_until_lost(tw_reactor *r, struct echo *e)
{
    for (int i = 0; i < 200 && !e->freed; i++)
        tw_reactor_iterate(r, 0.02);
    cr_assert_eq(e->freed, 1, "the connection did not end");
}

/* Reads what is there (non-blocking) into buf; returns the length. */
static size_t drain(int fd, char *buf, size_t size)
{
    size_t got = 0;
    for (;;) {
        ssize_t n = read(fd, buf + got, size - got);
        if (n <= 0)
            return got;
        got += (size_t)n;
    }
}

TW_REACTOR_TEST(stdio, pipes_echo_and_end_of_file)
{
    int in[2], out[2];
    cr_assert_eq(pipe2(in, O_CLOEXEC), 0);
    cr_assert_eq(pipe2(out, O_CLOEXEC | O_NONBLOCK), 0);
    int fl_in = fcntl(in[0], F_GETFL);
    struct echo *e = echo_new(&echo_ops);
    e->echo = true;
    tw_transport *t;
    tw_stdio_options o = {.in_fd = in[0], .out_fd = out[1]};
    cr_assert_eq(tw_stdio_new(r, &e->base, &o, &t), 0);
    cr_assert_eq(e->made, 1);
    cr_assert(fcntl(in[0], F_GETFL) & O_NONBLOCK, "a pipe is set non-blocking while in use");
    tw_address a;
    char buf[TW_ADDRESS_STRLEN];
    cr_assert_eq(tw_transport_get_peer(t, &a), 0);
    cr_assert_str_eq(tw_address_format(&a, buf, sizeof buf), "pipe");
    cr_assert_eq(write(in[1], "ping\n", 5), 5);
    for (int i = 0; i < 10 && e->len < 5; i++)
        tw_reactor_iterate(r, 0.02);
    char got[64];
    cr_assert_eq(drain(out[0], got, sizeof got), 5);
    cr_assert_eq(memcmp(got, "ping\n", 5), 0);
    close(in[1]); /* end of file */
    run_until_lost(r, e);
    cr_assert_eq(e->lost_code, TW_ECONNDONE);
    cr_assert_eq(fcntl(in[0], F_GETFL), fl_in, "flags restored");
    cr_assert_geq(fcntl(out[1], F_GETFD), 0, "left open");
    close(in[0]);
    close(out[0]);
    close(out[1]);
    tw_free(e);
}

TW_REACTOR_TEST(stdio, regular_file_in_and_out)
{
    char in_path[] = "/tmp/twine-stdio-in-XXXXXX", out_path[] = "/tmp/twine-stdio-out-XXXXXX";
    int fin = mkstemp(in_path), fout = mkstemp(out_path);
    cr_assert_geq(fin, 0);
    cr_assert_geq(fout, 0);
    static char data[300 * 1024];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (char)('a' + i % 26);
    cr_assert_eq(write(fin, data, sizeof data), (ssize_t)sizeof data);
    lseek(fin, 0, SEEK_SET);
    struct echo *e = echo_new(&echo_ops);
    e->echo = true;
    tw_stdio_options o = {.in_fd = fin, .out_fd = fout};
    cr_assert_eq(tw_stdio_new(r, &e->base, &o, NULL), 0, "files work whatever the backend");
    run_until_lost(r, e);
    cr_assert_eq(e->lost_code, TW_ECONNDONE);
    cr_assert_eq(e->len, sizeof data);
    cr_assert_eq(memcmp(e->got, data, sizeof data), 0);
    cr_assert_eq(lseek(fout, 0, SEEK_CUR), (off_t)sizeof data, "everything written");
    close(fin);
    close(fout);
    unlink(in_path);
    unlink(out_path);
    tw_free(e);
}

TW_REACTOR_TEST(stdio, dev_null_is_an_immediate_end)
{
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    int out[2];
    cr_assert_eq(pipe2(out, O_CLOEXEC), 0);
    struct echo *e = echo_new(&echo_ops);
    tw_stdio_options o = {.in_fd = null, .out_fd = out[1]};
    cr_assert_eq(tw_stdio_new(r, &e->base, &o, NULL), 0);
    cr_assert_eq(e->lost, 0, "never from inside the call");
    run_until_lost(r, e);
    cr_assert_eq(e->lost_code, TW_ECONNDONE);
    close(null);
    close(out[0]);
    close(out[1]);
    tw_free(e);
}

TW_REACTOR_TEST(stdio, half_close_and_lose_write_connection)
{
    int in[2], out[2];
    cr_assert_eq(pipe2(in, O_CLOEXEC), 0);
    cr_assert_eq(pipe2(out, O_CLOEXEC | O_NONBLOCK), 0);
    struct echo *e = echo_new(&half_ops);
    tw_transport *t;
    tw_stdio_options o = {.in_fd = in[0], .out_fd = out[1]};
    cr_assert_eq(tw_stdio_new(r, &e->base, &o, &t), 0);
    close(in[1]);
    run_until_lost(r, e);
    cr_assert_eq(e->read_lost, 1);
    char got[16];
    cr_assert_eq(drain(out[0], got, sizeof got), 4, "written after end of file");
    close(in[0]);
    tw_free(e);

    /* lose_write_connection: the reader sees end of file, reading goes on. */
    cr_assert_eq(pipe2(in, O_CLOEXEC), 0);
    o.in_fd = in[0];
    e = echo_new(&half_ops);
    cr_assert_eq(tw_stdio_new(r, &e->base, &o, &t), 0);
    cr_assert_eq(tw_transport_write(t, "last", 4), 0);
    cr_assert_eq(tw_transport_lose_write_connection(t), 0);
    cr_assert_eq(tw_transport_write(t, "x", 1), TW_ENOTCONN);
    for (int i = 0; i < 10 && !e->write_lost; i++)
        tw_reactor_iterate(r, 0.02);
    cr_assert_eq(e->write_lost, 1);
    cr_assert_eq(drain(out[0], got, sizeof got), 4);
    /* out[1] now points at /dev/null: with no other writer, end of file. */
    fcntl(out[0], F_SETFL, 0);
    cr_assert_eq(read(out[0], got, sizeof got), 0);
    cr_assert_eq(write(in[1], "more", 4), 4);
    for (int i = 0; i < 10 && e->len < 4; i++)
        tw_reactor_iterate(r, 0.02);
    cr_assert_eq(e->len, 4, "still reading");
    close(in[1]);
    run_until_lost(r, e);
    cr_assert_eq(e->lost_code, TW_ECONNDONE);
    close(in[0]);
    close(out[0]);
    close(out[1]);
    tw_free(e);
}

TW_REACTOR_TEST(stdio, reader_of_stdout_going_away_ends_it)
{
    int in[2], out[2];
    cr_assert_eq(pipe2(in, O_CLOEXEC), 0);
    cr_assert_eq(pipe2(out, O_CLOEXEC), 0);
    struct echo *e = echo_new(&echo_ops);
    tw_stdio_options o = {.in_fd = in[0], .out_fd = out[1]};
    tw_transport *t;
    cr_assert_eq(tw_stdio_new(r, &e->base, &o, &t), 0);
    close(out[0]);
    run_until_lost(r, e);
    cr_assert_eq(e->lost_code, -EPIPE);
    close(in[0]);
    close(in[1]);
    close(out[1]);
    tw_free(e);
}

TW_REACTOR_TEST(stdio, pause_stops_reading)
{
    int in[2], out[2];
    cr_assert_eq(pipe2(in, O_CLOEXEC), 0);
    cr_assert_eq(pipe2(out, O_CLOEXEC), 0);
    struct echo *e = echo_new(&echo_ops);
    e->pause_at_first = true;
    tw_stdio_options o = {.in_fd = in[0], .out_fd = out[1]};
    tw_transport *t;
    cr_assert_eq(tw_stdio_new(r, &e->base, &o, &t), 0);
    cr_assert_eq(write(in[1], "one", 3), 3);
    for (int i = 0; i < 5; i++)
        tw_reactor_iterate(r, 0.01);
    cr_assert_eq(e->len, 3);
    cr_assert_eq(write(in[1], "two", 3), 3);
    for (int i = 0; i < 5; i++)
        tw_reactor_iterate(r, 0.01);
    cr_assert_eq(e->len, 3, "paused: nothing read");
    cr_assert_eq(tw_transport_resume_producing(t), 0);
    for (int i = 0; i < 5 && e->len < 6; i++)
        tw_reactor_iterate(r, 0.01);
    cr_assert_eq(e->len, 6);
    cr_assert_eq(tw_transport_abort_connection(t), 0);
    cr_assert_eq(e->lost, 0);
    run_until_lost(r, e);
    cr_assert_eq(e->lost_code, TW_ECONNABORTED);
    close(in[0]);
    close(in[1]);
    close(out[0]);
    close(out[1]);
    tw_free(e);
}

TW_REACTOR_TEST(stdio, a_terminal_is_reopened_not_made_non_blocking)
{
    int master, slave;
    cr_assert_eq(openpty(&master, &slave, NULL, NULL, NULL), 0);
    int slave2 = dup(slave);
    int fl = fcntl(slave, F_GETFL);
    struct echo *e = echo_new(&echo_ops);
    tw_stdio_options o = {.in_fd = slave, .out_fd = slave2};
    tw_transport *t;
    cr_assert_eq(tw_stdio_new(r, &e->base, &o, &t), 0);
    cr_assert_eq(fcntl(slave, F_GETFL), fl, "the shared description is left alone");
    cr_assert_eq(write(master, "typed\n", 6), 6);
    for (int i = 0; i < 20 && e->len < 6; i++)
        tw_reactor_iterate(r, 0.02);
    cr_assert_eq(e->len, 6);
    cr_assert_eq(memcmp(e->got, "typed\n", 6), 0);
    cr_assert_eq(tw_transport_write(t, "shown", 5), 0);
    tw_transport_lose_connection(t);
    run_until_lost(r, e);
    char buf[64];
    fcntl(master, F_SETFL, O_NONBLOCK);
    size_t n = drain(master, buf, sizeof buf - 1);
    buf[n] = '\0';
    cr_assert(strstr(buf, "shown"), "%s", buf);
    cr_assert_eq(fcntl(slave, F_GETFL), fl);
    close(master);
    close(slave);
    close(slave2);
    tw_free(e);
}

TW_REACTOR_TEST(stdio, bad_descriptors)
{
    int p[2];
    cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
    struct echo *e = echo_new(&echo_ops);
    tw_stdio_options o = {.in_fd = p[0], .out_fd = p[0]};
    cr_assert_eq(tw_stdio_new(r, &e->base, &o, NULL), TW_EINVAL);
    cr_assert_eq(e->freed, 1, "released on error");
    cr_assert_eq(e->made, 0);
    e->freed = 0;
    o = (tw_stdio_options){.in_fd = p[1], .out_fd = p[0]}; /* the wrong ways round */
    cr_assert_eq(tw_stdio_new(r, &e->base, &o, NULL), TW_EINVAL);
    o = (tw_stdio_options){.in_fd = 900, .out_fd = p[1]};
    cr_assert_eq(tw_stdio_new(r, &e->base, &o, NULL), TW_EINVAL);
    cr_assert_eq(tw_stdio_new(NULL, &e->base, &o, NULL), TW_EINVAL);
    /* Another watcher on the descriptor. */
    tw_io other;
    tw_io_init(&other, p[0], NULL, NULL);
    cr_assert_eq(tw_reactor_add_reader(r, &other), 0);
    o = (tw_stdio_options){.in_fd = p[0], .out_fd = p[1]};
    int fl = fcntl(p[0], F_GETFL);
    cr_assert_eq(tw_stdio_new(r, &e->base, &o, NULL), TW_EBUSY);
    cr_assert_eq(fcntl(p[0], F_GETFL), fl, "flags restored on error");
    tw_reactor_remove_reader(r, &other);
    close(p[0]);
    close(p[1]);
    tw_free(e);
}

TW_REACTOR_TEST(stdio, allocation_failure_is_clean)
{
    int p[2], q[2];
    cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
    cr_assert_eq(pipe2(q, O_CLOEXEC), 0);
    tw_stdio_options o = {.in_fd = p[0], .out_fd = q[1]};
    struct echo *e = echo_new(&echo_ops);
    for (long n = 0;; n++) {
        e->freed = 0;
        tw_testing_fail_alloc_after(n);
        tw_transport *t;
        int rc = tw_stdio_new(r, &e->base, &o, &t);
        tw_testing_fail_alloc_off();
        if (rc == 0) {
            tw_transport_lose_connection(t);
            run_until_lost(r, e);
            break;
        }
        cr_assert_eq(rc, TW_ENOMEM);
        cr_assert_eq(e->freed, 1);
    }
    close(p[0]);
    close(p[1]);
    close(q[0]);
    close(q[1]);
    tw_free(e);
}

static void stop_now(void *r)
{
    tw_reactor_stop(r);
}

TW_REACTOR_TEST(stdio, reactor_shutdown_ends_it)
{
    int p[2], q[2];
    cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
    cr_assert_eq(pipe2(q, O_CLOEXEC), 0);
    tw_stdio_options o = {.in_fd = p[0], .out_fd = q[1]};
    struct echo *e = echo_new(&echo_ops);
    cr_assert_eq(tw_stdio_new(r, &e->base, &o, NULL), 0);
    tw_reactor_call_when_running(r, stop_now, r);
    tw_reactor_run(r);
    cr_assert_eq(e->lost_code, TW_ECONNLOST);
    cr_assert_eq(e->freed, 1);
    close(p[0]);
    close(p[1]);
    close(q[0]);
    close(q[1]);
    tw_free(e);
}

/* A half-closeable protocol that only counts (echo_read_lost answers and
 * closes). */
static void count_read_lost(tw_protocol *p)
{
    ((struct echo *)p)->read_lost++;
}

static const tw_protocol_ops counting_half_ops = {
    .connection_made = echo_made,
    .data_received = echo_data,
    .connection_lost = echo_lost,
    .read_connection_lost = count_read_lost,
    .write_connection_lost = echo_write_lost,
    .free = echo_free,
};

/* stdout's reader going away with a half-closeable protocol: Twisted's
 * StandardIO calls writeConnectionLost and goes on reading. */
static void reader_gone_half_close(tw_reactor *r, bool write_first)
{
    int in[2], out[2];
    cr_assert_eq(pipe2(in, O_CLOEXEC), 0);
    cr_assert_eq(pipe2(out, O_CLOEXEC), 0);
    struct echo *e = echo_new(&counting_half_ops);
    tw_stdio_options o = {.in_fd = in[0], .out_fd = out[1]};
    tw_transport *t;
    cr_assert_eq(tw_stdio_new(r, &e->base, &o, &t), 0);
    close(out[0]);
    if (write_first) {
        /* The write finds the pipe broken before the reactor does: accepted,
         * and the loss told from the reactor. */
        cr_assert_eq(tw_transport_write(t, "x", 1), 0);
        cr_assert_eq(e->write_lost, 0, "not from inside the write");
        cr_assert_eq(tw_transport_write(t, "y", 1), TW_ENOTCONN);
    }
    for (int i = 0; i < 20 && !e->write_lost; i++)
        tw_reactor_iterate(r, 0.01);
    cr_assert_eq(e->write_lost, 1);
    cr_assert_eq(e->lost, 0, "the connection is still up");
    cr_assert_eq(tw_transport_write(t, "z", 1), TW_ENOTCONN);
    cr_assert_eq(write(in[1], "more", 4), 4);
    for (int i = 0; i < 20 && e->len < 4; i++)
        tw_reactor_iterate(r, 0.01);
    cr_assert_eq(e->len, 4, "still reading");
    cr_assert_eq(e->lost, 0);
    close(in[1]);
    run_until_lost(r, e);
    cr_assert_eq(e->read_lost, 1);
    cr_assert_eq(e->write_lost, 1, "told once");
    cr_assert_eq(e->lost_code, TW_ECONNDONE, "both halves closed");
    close(in[0]);
    close(out[1]);
    tw_free(e);
}

TW_REACTOR_TEST(stdio, reader_of_stdout_going_away_is_a_half_close)
{
    reader_gone_half_close(r, false);
}

TW_REACTOR_TEST(stdio, write_to_a_gone_reader_is_a_half_close)
{
    reader_gone_half_close(r, true);
}

/* inetd: standard input and output are one socket. Its flags come back as
 * they were, and lose_write_connection shuts the socket down for writing
 * (the peer reads end of file) while reading goes on. */
TW_REACTOR_TEST(stdio, one_socket_for_both_like_inetd)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    int a = dup(sv[0]), b = dup(sv[0]);
    close(sv[0]);
    int fl = fcntl(a, F_GETFL);
    cr_assert_eq(fl & O_NONBLOCK, 0);
    struct echo *e = echo_new(&counting_half_ops);
    tw_stdio_options o = {.in_fd = a, .out_fd = b};
    tw_transport *t;
    cr_assert_eq(tw_stdio_new(r, &e->base, &o, &t), 0);
    cr_assert(fcntl(a, F_GETFL) & O_NONBLOCK);
    cr_assert_eq(write(sv[1], "hi", 2), 2);
    for (int i = 0; i < 20 && e->len < 2; i++)
        tw_reactor_iterate(r, 0.01);
    cr_assert_eq(e->len, 2);
    cr_assert_eq(tw_transport_write(t, "yo", 2), 0);
    cr_assert_eq(tw_transport_lose_write_connection(t), 0);
    for (int i = 0; i < 20 && !e->write_lost; i++)
        tw_reactor_iterate(r, 0.01);
    cr_assert_eq(e->write_lost, 1);
    char buf[16];
    cr_assert_eq(read(sv[1], buf, sizeof buf), 2);
    cr_assert_eq(memcmp(buf, "yo", 2), 0);
    cr_assert_eq(read(sv[1], buf, sizeof buf), 0, "end of file for the peer");
    cr_assert_eq(write(sv[1], "more", 4), 4);
    for (int i = 0; i < 20 && e->len < 6; i++)
        tw_reactor_iterate(r, 0.01);
    cr_assert_eq(e->len, 6, "still reading");
    cr_assert_eq(shutdown(sv[1], SHUT_WR), 0);
    run_until_lost(r, e);
    cr_assert_eq(e->read_lost, 1);
    cr_assert_eq(e->lost_code, TW_ECONNDONE);
    cr_assert_eq(fcntl(a, F_GETFL), fl, "flags restored");
    cr_assert_eq(fcntl(b, F_GETFL), fl);
    struct stat st;
    cr_assert_eq(fstat(b, &st), 0);
    cr_assert(S_ISSOCK(st.st_mode), "the output is still the socket");
    close(a);
    close(b);
    close(sv[1]);
    tw_free(e);
}

/* lose_write_connection on a regular file or a terminal: the descriptor is
 * left pointing where it did (there is no reader to give end of file to). */
TW_REACTOR_TEST(stdio, half_close_leaves_a_file_or_terminal_in_place)
{
    char path[] = "/tmp/twine-stdio-half-XXXXXX";
    int file = mkstemp(path);
    cr_assert_geq(file, 0);
    int master, slave;
    cr_assert_eq(openpty(&master, &slave, NULL, NULL, NULL), 0);
    int in[2];
    cr_assert_eq(pipe2(in, O_CLOEXEC), 0);
    int outs[] = {file, slave};
    for (int k = 0; k < 2; k++) {
        struct stat before, after;
        cr_assert_eq(fstat(outs[k], &before), 0);
        struct echo *e = echo_new(&counting_half_ops);
        tw_stdio_options o = {.in_fd = in[0], .out_fd = outs[k]};
        tw_transport *t;
        cr_assert_eq(tw_stdio_new(r, &e->base, &o, &t), 0);
        cr_assert_eq(tw_transport_write(t, "last\n", 5), 0);
        cr_assert_eq(tw_transport_lose_write_connection(t), 0);
        for (int i = 0; i < 20 && !e->write_lost; i++)
            tw_reactor_iterate(r, 0.01);
        cr_assert_eq(e->write_lost, 1);
        cr_assert_eq(fstat(outs[k], &after), 0);
        cr_assert_eq(after.st_ino, before.st_ino, "%s: still where it was", k ? "tty" : "file");
        cr_assert_eq(after.st_rdev, before.st_rdev);
        cr_assert_eq(tw_transport_lose_connection(t), 0);
        run_until_lost(r, e);
        cr_assert_eq(fstat(outs[k], &after), 0);
        cr_assert_eq(after.st_ino, before.st_ino);
        cr_assert_eq(after.st_rdev, before.st_rdev);
        tw_free(e);
    }
    cr_assert_eq(lseek(file, 0, SEEK_CUR), 5);
    cr_assert(isatty(slave));
    close(file);
    unlink(path);
    close(master);
    close(slave);
    close(in[0]);
    close(in[1]);
}

/* A pull producer on the stdio transport: asked for more each time what it
 * wrote is gone, whatever stdout is (a regular file or /dev/null takes
 * every write at once, so nothing is ever queued). */
struct pull {
    tw_producer base;
    tw_transport *t;
    int resumes, writes, stops, depth, max_depth;
};

static void pull_resume(tw_producer *p)
{
    struct pull *pl = (struct pull *)p;
    pl->resumes++;
    if (++pl->depth > pl->max_depth)
        pl->max_depth = pl->depth;
    if (pl->writes < 10) {
        pl->writes++;
        cr_assert_eq(tw_transport_write(pl->t, "chunk\n", 6), 0);
    }
    pl->depth--;
}

static void pull_stop(tw_producer *p)
{
    ((struct pull *)p)->stops++;
}

static const tw_producer_ops pull_ops = {NULL, pull_resume, pull_stop};

static void pull_producer_to(tw_reactor *r, int out_fd, bool zerocopy)
{
    int in[2];
    cr_assert_eq(pipe2(in, O_CLOEXEC), 0);
    struct echo *e = echo_new(&echo_ops);
    tw_stdio_options o = {.in_fd = in[0], .out_fd = out_fd};
    tw_transport *t;
    cr_assert_eq(tw_stdio_new(r, &e->base, &o, &t), 0);
    struct pull pl = {.base = {&pull_ops}, .t = t};
    if (zerocopy)
        cr_assert_eq(tw_transport_write_zerocopy(t, "zc\n", 3, NULL, NULL), 0);
    cr_assert_eq(tw_transport_register_producer(t, &pl.base, false), 0);
    cr_assert_eq(pl.resumes, 1);
    for (int i = 0; i < 40 && pl.resumes < 11; i++)
        tw_reactor_iterate(r, 0.01);
    cr_assert_eq(pl.writes, 10);
    cr_assert_eq(pl.resumes, 11, "asked again after each write: %d", pl.resumes);
    cr_assert_eq(pl.max_depth, 1, "never from inside its own write");
    for (int i = 0; i < 5; i++)
        tw_reactor_iterate(r, 0.01);
    cr_assert_eq(pl.resumes, 11, "not asked again without a write");
    cr_assert_eq(tw_transport_lose_connection(t), 0);
    run_until_lost(r, e);
    cr_assert_eq(e->lost_code, TW_ECONNDONE);
    cr_assert_eq(pl.stops, 1);
    close(in[0]);
    close(in[1]);
    tw_free(e);
}

TW_REACTOR_TEST(stdio, pull_producer_writing_to_a_file)
{
    char path[] = "/tmp/twine-stdio-pull-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    pull_producer_to(r, fd, false);
    cr_assert_eq(lseek(fd, 0, SEEK_CUR), 60, "every chunk written");
    close(fd);
    unlink(path);
}

TW_REACTOR_TEST(stdio, pull_producer_writing_to_dev_null)
{
    int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    cr_assert_geq(fd, 0);
    pull_producer_to(r, fd, true);
    close(fd);
}

TW_REACTOR_TEST(stdio, pull_producer_writing_to_a_pipe)
{
    int out[2];
    cr_assert_eq(pipe2(out, O_CLOEXEC), 0);
    pull_producer_to(r, out[1], false);
    char buf[128];
    fcntl(out[0], F_SETFL, O_NONBLOCK);
    cr_assert_eq(drain(out[0], buf, sizeof buf), 60);
    close(out[0]);
    close(out[1]);
}

/* ---- The stdio: endpoint */

TW_TEST(stdio_endpoint, parses)
{
    tw_endpoint_spec *spec;
    tw_failure *f;
    cr_assert_eq(tw_endpoint_parse(TW_ENDPOINT_SERVER, "stdio:", &spec, &f), 0);
    cr_assert_eq(spec->kind, TW_ENDPOINT_STDIO);
    tw_endpoint_spec_free(spec);
    cr_assert_eq(tw_endpoint_parse(TW_ENDPOINT_SERVER, "STDIO", &spec, &f), 0);
    tw_endpoint_spec_free(spec);
    cr_assert_eq(tw_endpoint_parse(TW_ENDPOINT_SERVER, "stdio:x", &spec, &f), TW_EINVAL);
    cr_assert(strstr(tw_failure_message(f), "stdio takes no arguments"), "%s",
              tw_failure_message(f));
    tw_failure_unref(f);
    cr_assert_eq(tw_endpoint_parse(TW_ENDPOINT_SERVER, "stdio:a=1", &spec, &f), TW_EINVAL);
    tw_failure_unref(f);
    cr_assert_eq(tw_endpoint_parse(TW_ENDPOINT_CLIENT, "stdio:", &spec, &f), TW_EINVAL,
                 "a server type only");
    tw_failure_unref(f);
}

static tw_result take_port(tw_result res, void *arg)
{
    *(tw_listening_port **)arg = tw_result_take(&res);
    return tw_result_ok(NULL, NULL);
}

static void echo_back(tw_protocol *p, const char *data, size_t len)
{
    echo_data(p, data, len);
    tw_transport_write(p->transport, data, len);
}

static const tw_protocol_ops echo_back_ops = {
    .data_received = echo_back,
    .free = echo_free,
};

TW_REACTOR_TEST(stdio_endpoint, listen_connects_stdin_and_stdout)
{
    /* This test runs in a process of its own: its 0 and 1 become pipes. */
    int in[2], out[2];
    cr_assert_eq(pipe2(in, O_CLOEXEC), 0);
    cr_assert_eq(pipe2(out, O_CLOEXEC), 0);
    cr_assert_eq(dup2(in[0], 0), 0);
    cr_assert_eq(dup2(out[1], 1), 1);
    tw_factory factory;
    tw_factory_init(&factory, NULL, &echo_back_ops, sizeof(struct echo), NULL);
    tw_endpoint *ep;
    cr_assert_eq(tw_endpoint_server_from_string(r, "stdio:", &ep, NULL), 0);
    tw_listening_port *port = NULL;
    tw_deferred *d = tw_endpoint_listen(ep, &factory);
    tw_deferred_add_callback(d, take_port, &port);
    tw_deferred_unref(d);
    cr_assert(port);
    tw_address a;
    char buf[TW_ADDRESS_STRLEN];
    cr_assert_eq(tw_listening_port_get_host(port, &a), 0);
    cr_assert_str_eq(tw_address_format(&a, buf, sizeof buf), "pipe");
    cr_assert_eq(write(in[1], "abc", 3), 3);
    /* The protocol the factory built echoes: "abc" came in through fd 0 and
     * goes out through fd 1. */
    char got[8];
    size_t n = 0;
    fcntl(out[0], F_SETFL, O_NONBLOCK);
    for (int i = 0; i < 50 && n < 3; i++) {
        tw_reactor_iterate(r, 0.01);
        n += drain(out[0], got + n, sizeof got - n);
    }
    cr_assert_eq(n, 3, "read %zu bytes back", n);
    cr_assert_eq(memcmp(got, "abc", 3), 0);
    tw_deferred_unref(tw_listening_port_stop(port));
    tw_reactor_state st;
    for (int i = 0; i < 20; i++) {
        tw_reactor_get_state(r, &st);
        if (st.handles == 0)
            break;
        tw_reactor_iterate(r, 0.01);
    }
    cr_assert_eq(st.handles, 0, "the stop closed the connection");
    cr_assert_eq(factory.users, 0, "the factory was stopped");
    tw_endpoint_free(ep);
    close(in[1]);
    close(out[0]);
}
