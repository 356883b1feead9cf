/* A process protocol may close, abort, lose the connection or signal the
 * child from inside any of its callbacks, and use the transport it was
 * given until process_ended returns; nothing is touched after free. Run
 * under ASan, this is what catches a use after free. */
#include "proc-test.h"

enum act {
    ACT_ABORT,      /* abort_connection */
    ACT_CLOSE_FD,   /* close_child_fd on the pipe that spoke */
    ACT_LOSE,       /* pause_producing, then lose_connection */
    ACT_SIGNAL,     /* SIGKILL */
    ACT_EVERYTHING, /* all of them, and a write */
};

struct reent {
    struct rec rec;
    enum act in_data, in_lost, in_exited, in_ended, in_made;
    bool act_in_data, act_in_lost, act_in_exited, act_in_ended, act_in_made;
    int chunks;
    int signal_rc_after_exit, write_rc_in_ended, abort_rc_in_ended, close_rc_in_ended;
};

static void act(tw_process_protocol *pp, enum act a, int fd)
{
    tw_process *p = pp->process;
    tw_transport *t = tw_process_transport(p);
    switch (a) {
    case ACT_ABORT:
        tw_transport_abort_connection(t);
        break;
    case ACT_CLOSE_FD:
        tw_process_close_child_fd(p, fd);
        break;
    case ACT_LOSE:
        tw_transport_pause_producing(t);
        tw_transport_lose_connection(t);
        break;
    case ACT_SIGNAL:
        tw_process_signal(p, SIGKILL);
        break;
    case ACT_EVERYTHING:
        tw_transport_write(t, "x", 1);
        tw_process_close_child_fd(p, fd);
        tw_transport_lose_connection(t);
        tw_transport_abort_connection(t);
        tw_process_signal(p, SIGKILL);
        tw_transport_write(t, "x", 1);
        break;
    }
}

static void re_made(tw_process_protocol *pp)
{
    struct reent *re = (struct reent *)pp;
    rec_made(pp);
    if (re->act_in_made)
        act(pp, re->in_made, 0);
}

static void re_data(tw_process_protocol *pp, int fd, const char *data, size_t len)
{
    struct reent *re = (struct reent *)pp;
    re->chunks++;
    rec_data(pp, fd, data, len);
    if (re->act_in_data)
        act(pp, re->in_data, fd);
}

static void re_lost(tw_process_protocol *pp, int fd)
{
    struct reent *re = (struct reent *)pp;
    rec_lost(pp, fd);
    if (re->act_in_lost)
        act(pp, re->in_lost, fd);
}

static void re_exited(tw_process_protocol *pp, tw_process_status st)
{
    struct reent *re = (struct reent *)pp;
    rec_exited(pp, st);
    re->signal_rc_after_exit = tw_process_signal(pp->process, SIGTERM);
    if (re->act_in_exited)
        act(pp, re->in_exited, 1);
}

static void re_ended(tw_process_protocol *pp, tw_process_status st)
{
    struct reent *re = (struct reent *)pp;
    rec_ended(pp, st);
    tw_transport *t = tw_process_transport(pp->process);
    re->write_rc_in_ended = tw_transport_write(t, "x", 1);
    re->abort_rc_in_ended = tw_transport_abort_connection(t);
    re->close_rc_in_ended = tw_process_close_stdin(pp->process);
    if (re->act_in_ended)
        act(pp, re->in_ended, 0);
}

static const tw_process_protocol_ops re_ops = {
    .connection_made = re_made,
    .child_data_received = re_data,
    .child_connection_lost = re_lost,
    .process_exited = re_exited,
    .process_ended = re_ended,
    .free = rec_free,
};

static void re_init(struct reent *re)
{
    memset(re, 0, sizeof *re);
    rec_init(&re->rec);
    re->rec.base.ops = &re_ops;
    re->rec.keep_out = false;
}

/* Plenty on stdout, then on stderr. */
static void run(tw_reactor *r, struct reent *re, bool pty)
{
    tw_process_options o = {.use_pty = pty};
    char *argv[] = {"sh", "-c", "yes | head -c 1000000; yes | head -c 100000 >&2", NULL};
    spawn_rec(r, &re->rec, "/bin/sh", argv, &o);
    run_until_freed(r, &re->rec, 10);
    cr_assert_eq(re->rec.made, 1);
    cr_assert_eq(re->rec.exited, 1);
    cr_assert_eq(re->rec.ended, 1);
    cr_assert_eq(re->rec.nlost, 3, "every pipe reported once");
    for (int i = 0; i < re->rec.nlost; i++)
        cr_assert_lt(re->rec.lost_at[i], re->rec.ended_at);
    cr_assert_eq(re->signal_rc_after_exit, -ESRCH);
    cr_assert_eq(re->write_rc_in_ended, TW_ENOTCONN);
    cr_assert_eq(re->abort_rc_in_ended, 0, "closing a closed transport does nothing");
    cr_assert_eq(re->close_rc_in_ended, pty ? TW_ENOTSUP : 0);
    rec_clear(&re->rec);
}

static void in_data(tw_reactor *r, enum act a, bool pty)
{
    struct reent re;
    re_init(&re);
    re.act_in_data = true;
    re.in_data = a;
    run(r, &re, pty);
    if (a == ACT_ABORT || a == ACT_LOSE || a == ACT_EVERYTHING)
        cr_assert_eq(re.chunks, 1, "nothing read after the first chunk's %d", a);
    if (a == ACT_CLOSE_FD) /* fd 1 closed at its first chunk; fd 2 spoke later */
        cr_assert_eq(re.chunks, 2);
    if (a == ACT_SIGNAL || a == ACT_EVERYTHING) {
        /* A PTY's hang-up (abort closes it) raises SIGHUP before SIGKILL. */
        cr_assert_eq(re.rec.end_status.how, TW_PROCESS_KILLED);
        if (!pty || a == ACT_SIGNAL)
            cr_assert_eq(re.rec.end_status.signo, SIGKILL);
    }
}

TW_REACTOR_TEST(reentrancy, abort_in_data)
{
    in_data(r, ACT_ABORT, false);
    in_data(r, ACT_ABORT, true);
}

TW_REACTOR_TEST(reentrancy, close_the_fd_in_data)
{
    in_data(r, ACT_CLOSE_FD, false);
}

TW_REACTOR_TEST(reentrancy, lose_connection_in_data)
{
    in_data(r, ACT_LOSE, false);
    in_data(r, ACT_LOSE, true);
}

TW_REACTOR_TEST(reentrancy, signal_in_data)
{
    in_data(r, ACT_SIGNAL, false);
    in_data(r, ACT_SIGNAL, true);
}

TW_REACTOR_TEST(reentrancy, everything_in_data)
{
    in_data(r, ACT_EVERYTHING, false);
    in_data(r, ACT_EVERYTHING, true);
}

TW_REACTOR_TEST(reentrancy, everything_in_connection_lost)
{
    for (int pty = 0; pty < 2; pty++) {
        struct reent re;
        re_init(&re);
        re.act_in_lost = true;
        re.in_lost = ACT_EVERYTHING;
        run(r, &re, pty);
        /* Whether the first pipe closed before the exit is the child's
         * timing: either way the status is what was seen. */
        cr_assert_neq(re.rec.end_status.how, TW_PROCESS_UNKNOWN);
    }
}

TW_REACTOR_TEST(reentrancy, everything_in_exited_and_ended)
{
    for (int pty = 0; pty < 2; pty++) {
        struct reent re;
        re_init(&re);
        re.act_in_exited = re.act_in_ended = true;
        re.in_exited = re.in_ended = ACT_EVERYTHING;
        run(r, &re, pty);
        cr_assert_eq(re.rec.end_status.how, TW_PROCESS_EXITED);
        cr_assert_eq(re.rec.end_status.exit_code, 0);
    }
}

TW_REACTOR_TEST(reentrancy, abort_and_signal_in_connection_made)
{
    for (int pty = 0; pty < 2; pty++) {
        struct reent re;
        re_init(&re);
        re.act_in_made = true;
        re.in_made = ACT_EVERYTHING;
        run(r, &re, pty);
        cr_assert_eq(re.chunks, 0, "nothing read");
        cr_assert_eq(re.rec.end_status.how, TW_PROCESS_KILLED);
    }
}
