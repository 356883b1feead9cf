/* tw_spawn_process: output, exit statuses, ordering of events, errors. */
#include "proc-test.h"

TW_REACTOR_TEST(spawn, echo_output_and_exit_code)
{
    struct rec rec;
    rec_init(&rec);
    char *argv[] = {"sh", "-c", "echo hello; echo oops >&2; exit 3", NULL};
    tw_process *p = spawn_rec(r, &rec, "/bin/sh", argv, NULL);
    cr_assert_gt(tw_process_pid(p), 0);
    cr_assert_eq(rec.made, 1);
    run_until_freed(r, &rec, 5);
    cr_assert_str_eq(rec.out, "hello\n");
    cr_assert_str_eq(rec.err, "oops\n");
    cr_assert_eq(rec.exited, 1);
    cr_assert_eq(rec.ended, 1);
    cr_assert_eq(rec.end_status.how, TW_PROCESS_EXITED);
    cr_assert_eq(rec.end_status.exit_code, 3);
    cr_assert_eq(rec.nlost, 3);
    for (int i = 0; i < rec.nlost; i++)
        cr_assert_lt(rec.lost_at[i], rec.ended_at, "child_connection_lost before process_ended");
    cr_assert_lt(rec.exited_at, rec.ended_at);
    rec_clear(&rec);
}

TW_REACTOR_TEST(spawn, missing_executable_is_a_clear_synchronous_error)
{
    int freed = 0;
    struct rec rec;
    rec_init(&rec);
    rec.freed_flag = &freed;
    tw_process *p = (tw_process *)1;
    tw_failure *f = NULL;
    int rc = tw_spawn_process(r, &rec.base, "/nonexistent/prog", NULL, NULL, NULL, NULL, &p, &f);
    cr_assert_eq(rc, TW_ENOENT);
    cr_assert_null(p);
    cr_assert_eq(freed, 1, "the protocol is released");
    cr_assert_eq(rec.made, 0);
    cr_assert(f);
    cr_assert(strstr(tw_failure_message(f), "/nonexistent/prog"), "%s", tw_failure_message(f));
    tw_failure_unref(f);

    /* Not in PATH: the same, found out before any child starts. */
    rec_init(&rec);
    rc = tw_spawn_process(r, &rec.base, "no-such-command-xyz", NULL, NULL, NULL, NULL, NULL, &f);
    cr_assert_eq(rc, TW_ENOENT);
    cr_assert(strstr(tw_failure_message(f), "no-such-command-xyz"));
    tw_failure_unref(f);

    /* Found but not executable. */
    rec_init(&rec);
    rc = tw_spawn_process(r, &rec.base, "/etc/passwd", NULL, NULL, NULL, NULL, NULL, &f);
    cr_assert_eq(rc, TW_EACCES, "%s", tw_strerror(rc));
    tw_failure_unref(f);

    /* A bad working directory fails in the child and says so. */
    rec_init(&rec);
    rc =
        tw_spawn_process(r, &rec.base, "/bin/true", NULL, NULL, "/nonexistent-dir", NULL, NULL, &f);
    cr_assert_eq(rc, TW_ENOENT);
    cr_assert(strstr(tw_failure_message(f), "/nonexistent-dir"), "%s", tw_failure_message(f));
    tw_failure_unref(f);
}

TW_REACTOR_TEST(spawn, bad_arguments)
{
    struct rec rec;
    rec_init(&rec);
    cr_assert_eq(tw_spawn_process(NULL, &rec.base, "/bin/true", NULL, NULL, NULL, NULL, NULL, NULL),
                 TW_EINVAL);
    cr_assert_eq(rec.freed, 1);
    cr_assert_eq(tw_spawn_process(r, NULL, "/bin/true", NULL, NULL, NULL, NULL, NULL, NULL),
                 TW_EINVAL);
    tw_child_fd twice[] = {{1, TW_CHILD_FD_READ, -1}, {1, TW_CHILD_FD_READ, -1}};
    tw_process_options o = {.child_fds = twice, .n_child_fds = 2};
    tw_failure *f;
    rec_init(&rec);
    cr_assert_eq(tw_spawn_process(r, &rec.base, "/bin/true", NULL, NULL, NULL, &o, NULL, &f),
                 TW_EINVAL);
    cr_assert(strstr(tw_failure_message(f), "twice"));
    tw_failure_unref(f);
    tw_child_fd closed[] = {{0, TW_CHILD_FD_INHERIT, 999}};
    o = (tw_process_options){.child_fds = closed, .n_child_fds = 1};
    rec_init(&rec);
    cr_assert_eq(tw_spawn_process(r, &rec.base, "/bin/true", NULL, NULL, NULL, &o, NULL, &f),
                 TW_EINVAL);
    tw_failure_unref(f);
    tw_child_fd range[] = {{5000, TW_CHILD_FD_READ, -1}};
    o = (tw_process_options){.child_fds = range, .n_child_fds = 1};
    rec_init(&rec);
    cr_assert_eq(tw_spawn_process(r, &rec.base, "/bin/true", NULL, NULL, NULL, &o, NULL, NULL),
                 TW_EINVAL);
    cr_assert_eq(rec.freed, 1);
}

TW_REACTOR_TEST(spawn, path_search_env_and_working_dir)
{
    struct rec rec;
    rec_init(&rec);
    char *argv[] = {"sh", "-c", "echo \"$FOO:$(pwd)\"", NULL};
    char *env[] = {"FOO=bar", "PATH=/nonexistent:/usr/bin:/bin", NULL};
    tw_failure *f = NULL;
    int rc = tw_spawn_process(r, &rec.base, "sh", argv, env, "/tmp", NULL, NULL, &f);
    cr_assert_eq(rc, 0, "%s", f ? tw_failure_message(f) : "");
    run_until_freed(r, &rec, 5);
    cr_assert_str_eq(rec.out, "bar:/tmp\n");
    cr_assert_eq(rec.end_status.exit_code, 0);
    rec_clear(&rec);

    /* An environment without PATH searches /bin:/usr/bin. */
    rec_init(&rec);
    char *argv2[] = {"echo", "found", NULL};
    char *empty_env[] = {NULL};
    rc = tw_spawn_process(r, &rec.base, "echo", argv2, empty_env, NULL, NULL, NULL, NULL);
    cr_assert_eq(rc, 0);
    run_until_freed(r, &rec, 5);
    cr_assert_str_eq(rec.out, "found\n");
    rec_clear(&rec);

    /* argv NULL: argv[0] is the executable. */
    rec_init(&rec);
    spawn_rec(r, &rec, "/bin/pwd", NULL, NULL);
    run_until_freed(r, &rec, 5);
    cr_assert_gt(rec.out_len, 1);
    rec_clear(&rec);
}

/* A map that swaps the child's stdout and stderr, with an extra pipe as fd 5
 * and the parent's descriptor inherited as fd 3. */
TW_REACTOR_TEST(spawn, descriptor_map_permutations)
{
    int side[2];
    cr_assert_eq(pipe2(side, O_CLOEXEC), 0);
    struct rec rec;
    rec_init(&rec);
    int rd[2];
    cr_assert_eq(pipe2(rd, O_CLOEXEC), 0);
    /* The child's 1 is a pipe we read as fd 1... but its stdout goes to
     * fd 2 of ours and vice versa: child 1 <- parent pipe A, child 2 <- B.
     * Then the shell writes "one" to 1, "two" to 2, "five" to 5, and
     * "three" to 3 (the inherited side pipe). */
    tw_child_fd map[] = {
        {2, TW_CHILD_FD_READ, -1},         {1, TW_CHILD_FD_READ, -1},  {5, TW_CHILD_FD_READ, -1},
        {3, TW_CHILD_FD_INHERIT, side[1]}, {0, TW_CHILD_FD_WRITE, -1},
    };
    tw_process_options o = {.child_fds = map, .n_child_fds = 5};
    char *argv[] = {"sh", "-c", "echo one; echo two >&2; echo five >&5; echo three >&3", NULL};
    spawn_rec(r, &rec, "/bin/sh", argv, &o);
    close(side[1]);
    run_until_freed(r, &rec, 5);
    cr_assert_str_eq(rec.out, "one\n");
    cr_assert_str_eq(rec.err, "two\n");
    cr_assert_eq(rec.other_bytes, 5);
    char buf[16] = {0};
    cr_assert_eq(read(side[0], buf, sizeof buf), 6);
    cr_assert_str_eq(buf, "three\n");
    cr_assert_eq(rec.nlost, 4, "four pipes");
    close(side[0]);
    close(rd[0]);
    close(rd[1]);
    rec_clear(&rec);

    /* A true permutation of inherited descriptors: the child's 1 is our
     * pipe X and its 2 is our pipe Y, where X and Y sit at each other's
     * target numbers in the parent. */
    int x[2], y[2];
    cr_assert_eq(pipe(x), 0);
    cr_assert_eq(pipe(y), 0);
    /* Make x[1] == 21 and y[1] == 22, then map child 21 <- 22, 22 <- 21. */
    cr_assert_eq(dup2(x[1], 21), 21);
    cr_assert_eq(dup2(y[1], 22), 22);
    close(x[1]);
    close(y[1]);
    tw_child_fd swap[] = {
        {21, TW_CHILD_FD_INHERIT, 22},
        {22, TW_CHILD_FD_INHERIT, 21},
    };
    o = (tw_process_options){.child_fds = swap, .n_child_fds = 2};
    /* bash: dash takes no descriptor above 9 in a redirection. */
    char *argv2[] = {"bash", "-c", "echo to21 >&21; echo to22 >&22", NULL};
    rec_init(&rec);
    spawn_rec(r, &rec, "/bin/bash", argv2, &o);
    close(21);
    close(22);
    run_until_freed(r, &rec, 5);
    cr_assert_eq(rec.end_status.exit_code, 0);
    char bx[16] = {0}, by[16] = {0};
    cr_assert_eq(read(x[0], bx, sizeof bx), 5);
    cr_assert_eq(read(y[0], by, sizeof by), 5);
    cr_assert_str_eq(bx, "to22\n", "child 22 is our 21 (pipe x)");
    cr_assert_str_eq(by, "to21\n");
    close(x[0]);
    close(y[0]);
    rec_clear(&rec);
}

TW_REACTOR_TEST(spawn, descriptors_not_in_the_map_are_closed_in_the_child)
{
    /* A descriptor of ours without close-on-exec must not reach the child. */
    int leaky = dup(2);
    cr_assert_geq(leaky, 0);
    struct rec rec;
    rec_init(&rec);
    char *argv[] = {"ls", "/proc/self/fd", NULL};
    int before = count_fds();
    spawn_rec(r, &rec, "/bin/ls", argv, NULL);
    run_until_freed(r, &rec, 5);
    /* 0, 1, 2, and the directory ls reads: nothing else. */
    cr_assert_str_eq(rec.out, "0\n1\n2\n3\n");
    cr_assert_eq(count_fds(), before, "no descriptor leaked in the parent");
    close(leaky);
    rec_clear(&rec);

    /* A map without 2: the child's 2 is closed, not inherited. */
    tw_child_fd map[] = {{1, TW_CHILD_FD_READ, -1}};
    tw_process_options o = {.child_fds = map, .n_child_fds = 1};
    rec_init(&rec);
    spawn_rec(r, &rec, "/bin/ls", argv, &o);
    run_until_freed(r, &rec, 5);
    cr_assert_str_eq(rec.out, "0\n1\n", "got %s", rec.out);
    rec_clear(&rec);
}

TW_REACTOR_TEST(spawn, close_stdin_is_end_of_file_for_cat)
{
    struct rec rec;
    rec_init(&rec);
    tw_process *p = spawn_rec(r, &rec, "/bin/cat", NULL, NULL);
    tw_transport *t = tw_process_transport(p);
    cr_assert_eq(tw_process_from_transport(t), p);
    cr_assert_eq(tw_transport_write(t, "hello ", 6), 0);
    cr_assert_eq(tw_process_write_to_child(p, 0, "cat\n", 4), 0);
    cr_assert_eq(tw_process_write_to_child(p, 1, "x", 1), TW_ENOTCONN, "fd 1 is read");
    cr_assert_eq(tw_process_close_stdin(p), 0);
    cr_assert_eq(tw_transport_write(t, "late", 4), TW_ENOTCONN);
    cr_assert_eq(rec.nlost, 0, "reported from the reactor, not from inside close_stdin");
    run_until_freed(r, &rec, 5);
    cr_assert_str_eq(rec.out, "hello cat\n");
    cr_assert_eq(rec.end_status.how, TW_PROCESS_EXITED);
    cr_assert_eq(rec.end_status.exit_code, 0);
    cr_assert_eq(rec.lost[0], 0, "stdin first");
    rec_clear(&rec);
}

TW_REACTOR_TEST(spawn, signal_process_and_killed_status)
{
    struct rec rec;
    rec_init(&rec);
    char *argv[] = {"sleep", "10", NULL};
    tw_process *p = spawn_rec(r, &rec, "/bin/sleep", argv, NULL);
    cr_assert_eq(tw_process_signal(p, -1), TW_EINVAL);
    cr_assert_eq(tw_process_signal(p, 0), 0, "signal 0 checks it exists");
    cr_assert_eq(tw_process_signal(p, SIGTERM), 0);
    run_until_freed(r, &rec, 5);
    cr_assert_eq(rec.end_status.how, TW_PROCESS_KILLED);
    cr_assert_eq(rec.end_status.signo, SIGTERM);
    cr_assert_eq(rec.exit_status.signo, SIGTERM);
    char how[TW_PROCESS_STATUS_STRLEN];
    tw_process_status_format(&rec.end_status, how, sizeof how);
    cr_assert(strstr(how, "killed by signal 15"), "%s", how);
    tw_failure *f = tw_process_status_failure(&rec.end_status, "sleep", 42);
    cr_assert_eq(tw_failure_code(f), TW_EPROCESSTERMINATED);
    cr_assert(strstr(tw_failure_message(f), "'sleep' (pid 42) killed by signal 15"));
    tw_failure_unref(f);
    cr_assert(!tw_process_status_ok(&rec.end_status));
    rec_clear(&rec);

    /* A child killing itself with SIGKILL, dumping no core. */
    rec_init(&rec);
    char *argv2[] = {"sh", "-c", "kill -9 $$", NULL};
    spawn_rec(r, &rec, "/bin/sh", argv2, NULL);
    run_until_freed(r, &rec, 5);
    cr_assert_eq(rec.end_status.how, TW_PROCESS_KILLED);
    cr_assert_eq(rec.end_status.signo, SIGKILL);
    cr_assert(!rec.end_status.core_dumped);
    rec_clear(&rec);
}

/* process_exited comes with the status; the signal after it is refused. */
struct after_exit {
    struct rec rec;
    int signal_rc;
};

static void ae_exited(tw_process_protocol *pp, tw_process_status st)
{
    struct after_exit *a = (struct after_exit *)pp;
    rec_exited(pp, st);
    a->signal_rc = tw_process_signal(pp->process, SIGTERM);
}

TW_REACTOR_TEST(spawn, signal_after_reaping_is_esrch)
{
    static tw_process_protocol_ops ops;
    ops = rec_ops;
    ops.process_exited = ae_exited;
    struct after_exit a;
    rec_init(&a.rec);
    a.rec.base.ops = &ops;
    spawn_rec(r, &a.rec, "/bin/true", NULL, NULL);
    run_until_freed(r, &a.rec, 5);
    cr_assert_eq(a.signal_rc, -ESRCH);
    rec_clear(&a.rec);
}

/* A grandchild holding stdout keeps the process from ending until the pipe
 * closes: process_exited first, process_ended after the last pipe. */
TW_REACTOR_TEST(spawn, ended_waits_for_every_pipe)
{
    struct rec rec;
    rec_init(&rec);
    char *argv[] = {"sh", "-c", "(sleep 0.3; echo late) & exit 0", NULL};
    spawn_rec(r, &rec, "/bin/sh", argv, NULL);
    run_until_freed(r, &rec, 5);
    cr_assert_str_eq(rec.out, "late\n");
    cr_assert_lt(rec.exited_at, rec.ended_at);
    int last_lost = 0;
    for (int i = 0; i < rec.nlost; i++)
        if (rec.lost_at[i] > last_lost)
            last_lost = rec.lost_at[i];
    cr_assert_lt(rec.exited_at, last_lost, "stdout closed after the child exited");
    cr_assert_eq(rec.ended_at, last_lost + 1, "process_ended right after the last pipe");
    rec_clear(&rec);
}

TW_REACTOR_TEST(spawn, closing_our_ends_and_addresses)
{
    struct rec rec;
    rec_init(&rec);
    char *argv[] = {"sh", "-c", "sleep 0.2; echo gone; echo gone >&2; exit 0", NULL};
    tw_process *p = spawn_rec(r, &rec, "/bin/sh", argv, NULL);
    tw_transport *t = tw_process_transport(p);
    tw_address a;
    char buf[TW_ADDRESS_STRLEN], want[64];
    cr_assert_eq(tw_transport_get_peer(t, &a), 0);
    cr_assert_eq(a.u.proc.family, TW_AF_PROCESS);
    snprintf(want, sizeof want, "process %ld", (long)tw_process_pid(p));
    cr_assert_str_eq(tw_address_format(&a, buf, sizeof buf), want);
    cr_assert_eq(tw_transport_get_host(t, &a), 0);
    cr_assert_str_eq(tw_address_format(&a, buf, sizeof buf), "pipe");
    cr_assert_null(t->protocol);
    cr_assert_eq(tw_process_protocol_of(p), &rec.base);
    cr_assert_eq(tw_transport_set_option(t, TW_OPT_TCP_NODELAY, 1), TW_ENOTSUP);
    /* Closed by us: stdout and stderr now; stdin via lose_connection. */
    cr_assert_eq(tw_process_close_stdout(p), 0);
    cr_assert_eq(tw_process_close_stdout(p), 0, "twice is fine");
    cr_assert_eq(tw_process_close_child_fd(p, 7), TW_ENOTCONN);
    cr_assert_eq(tw_transport_lose_connection(t), 0);
    run_until_freed(r, &rec, 5);
    cr_assert_eq(rec.out_len, 0, "nothing read after close_stdout");
    cr_assert_eq(rec.err_len, 0);
    cr_assert_eq(rec.nlost, 3);
    /* The child wrote to closed pipes: SIGPIPE, with the default disposition
     * restored in it. */
    cr_assert_eq(rec.end_status.how, TW_PROCESS_KILLED);
    cr_assert_eq(rec.end_status.signo, SIGPIPE);
    rec_clear(&rec);
}

TW_REACTOR_TEST(spawn, abort_closes_pipes_and_drops_the_queue)
{
    struct rec rec;
    rec_init(&rec);
    char *argv[] = {"sh", "-c", "exec sleep 0.2", NULL};
    tw_process *p = spawn_rec(r, &rec, "/bin/sh", argv, NULL);
    tw_transport *t = tw_process_transport(p);
    static char big[256 * 1024];
    cr_assert_eq(tw_transport_write(t, big, sizeof big), 0);
    cr_assert_gt(tw_transport_write_buffer_size(t), 0, "sleep reads nothing: queued");
    cr_assert_eq(tw_transport_abort_connection(t), 0);
    cr_assert_eq(tw_transport_write_buffer_size(t), 0);
    cr_assert_eq(tw_transport_write(t, "x", 1), TW_ENOTCONN);
    run_until_freed(r, &rec, 5);
    cr_assert_eq(rec.nlost, 3);
    cr_assert_eq(rec.end_status.how, TW_PROCESS_EXITED, "abort does not kill");
    rec_clear(&rec);
}

static void reaped_in_parallel(tw_reactor *r, int n, bool sigchld)
{
    struct rec *recs = tw_calloc((size_t)n, sizeof *recs);
    tw_process_options o = {.reap_with_sigchld = sigchld};
    for (int i = 0; i < n; i++) {
        rec_init(&recs[i]);
        spawn_rec(r, &recs[i], "/bin/true", NULL, &o);
    }
    int done = 0;
    double deadline = tw_reactor_seconds(r) + 10;
    while (done < n && tw_reactor_seconds(r) < deadline) {
        tw_reactor_iterate(r, 0.05);
        done = 0;
        for (int i = 0; i < n; i++)
            done += recs[i].freed;
    }
    cr_assert_eq(done, n, "%d of %d reaped", done, n);
    for (int i = 0; i < n; i++) {
        cr_assert_eq(recs[i].end_status.how, TW_PROCESS_EXITED);
        cr_assert_eq(recs[i].end_status.exit_code, 0);
        rec_clear(&recs[i]);
    }
    tw_free(recs);
    /* No zombie left: none of our children is waitable. */
    cr_assert_eq(waitpid(-1, NULL, WNOHANG), -1);
    cr_assert_eq(errno, ECHILD);
}

TW_REACTOR_TEST(spawn, two_hundred_children_in_parallel_are_reaped)
{
    reaped_in_parallel(r, 200, false);
}

TW_REACTOR_TEST(spawn, sigchld_fallback_reaps_too)
{
    reaped_in_parallel(r, 50, true);
    cr_assert_eq(setenv("TWINE_PROCESS_REAPER", "sigchld", 1), 0);
    struct rec rec;
    rec_init(&rec);
    char *argv[] = {"sh", "-c", "exit 7", NULL};
    tw_process *p = spawn_rec(r, &rec, "/bin/sh", argv, NULL);
    tw_reactor_state st;
    tw_reactor_get_state(r, &st);
    cr_assert_eq(st.signal_watches, 1, "reaped through a SIGCHLD watch");
    (void)p;
    run_until_freed(r, &rec, 5);
    cr_assert_eq(rec.end_status.exit_code, 7);
    unsetenv("TWINE_PROCESS_REAPER");
    rec_clear(&rec);
}

/* Another part of the program reaps our child: the status is unknown, and
 * the process still ends. */
TW_REACTOR_TEST(spawn, child_reaped_by_someone_else)
{
    tw_testing_log_capture_start();
    struct rec rec;
    rec_init(&rec);
    tw_process *p = spawn_rec(r, &rec, "/bin/true", NULL, NULL);
    pid_t pid = tw_process_pid(p);
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    run_until_freed(r, &rec, 5);
    cr_assert_eq(rec.exited, 1);
    cr_assert_eq(rec.end_status.how, TW_PROCESS_UNKNOWN);
    cr_assert_eq(tw_testing_log_count("reaped by someone else"), 1);
    tw_testing_log_capture_stop();
    rec_clear(&rec);
}

TW_REACTOR_TEST(spawn, pty_is_the_controlling_terminal)
{
    struct rec rec;
    rec_init(&rec);
    tw_process_options o = {.use_pty = true};
    char *argv[] = {"sh", "-c", "test -t 0 && test -t 1 && tty; read line; echo \"got $line\"",
                    NULL};
    tw_process *p = spawn_rec(r, &rec, "/bin/sh", argv, &o);
    cr_assert_eq(tw_process_close_stdin(p), TW_ENOTSUP);
    cr_assert_eq(tw_transport_lose_write_connection(tw_process_transport(p)), TW_ENOTSUP);
    cr_assert_eq(tw_transport_write(tw_process_transport(p), "hi\n", 3), 0);
    run_until_freed(r, &rec, 5);
    cr_assert(strstr(rec.out, "/dev/pts/"), "%s", rec.out);
    cr_assert(strstr(rec.out, "got hi"), "%s", rec.out);
    cr_assert_eq(rec.end_status.exit_code, 0);
    cr_assert_eq(rec.nlost, 3, "0, 1 and 2 together");
    cr_assert_eq(rec.lost[0], 0);
    cr_assert_eq(rec.lost[2], 2);
    rec_clear(&rec);
}

TW_REACTOR_TEST(spawn, uid_and_gid)
{
    struct rec rec;
    char *argv[] = {"sh", "-c", "echo $(id -u):$(id -g)", NULL};
    tw_process_options o = {.set_uid = true, .uid = 65534, .set_gid = true, .gid = 65534};
    if (getuid() == 0) {
        rec_init(&rec);
        spawn_rec(r, &rec, "/bin/sh", argv, &o);
        run_until_freed(r, &rec, 5);
        cr_assert_str_eq(rec.out, "65534:65534\n");
        rec_clear(&rec);
        /* Become someone else (this test runs in a process of its own) so
         * that the error path can be seen. */
        cr_assert_eq(setgid(65534), 0);
        cr_assert_eq(setuid(65534), 0);
    }
    tw_failure *f;
    o = (tw_process_options){.set_uid = true, .uid = 0};
    rec_init(&rec);
    int rc = tw_spawn_process(r, &rec.base, "/bin/sh", argv, NULL, NULL, &o, NULL, &f);
    cr_assert_eq(rc, -EPERM, "%s", tw_strerror(rc));
    cr_assert(strstr(tw_failure_message(f), "user id"), "%s", tw_failure_message(f));
    tw_failure_unref(f);
    o = (tw_process_options){.set_gid = true, .gid = 0};
    rec_init(&rec);
    rc = tw_spawn_process(r, &rec.base, "/bin/sh", argv, NULL, NULL, &o, NULL, &f);
    cr_assert_eq(rc, -EPERM);
    cr_assert(strstr(tw_failure_message(f), "group id"), "%s", tw_failure_message(f));
    tw_failure_unref(f);
    cr_assert_eq(rec.freed, 1);
}

static void stop_now(void *r)
{
    tw_reactor_stop(r);
}

/* At shutdown the child is left running; its pipes close and the protocol
 * ends with an unknown status. */
TW_REACTOR_TEST(spawn, reactor_shutdown_leaves_the_child_running)
{
    struct rec rec;
    rec_init(&rec);
    char *argv[] = {"sleep", "5", NULL};
    tw_process *p = spawn_rec(r, &rec, "/bin/sleep", argv, NULL);
    pid_t pid = tw_process_pid(p);
    cr_assert_eq(tw_reactor_call_when_running(r, stop_now, r), 0);
    tw_reactor_run(r);
    cr_assert_eq(rec.freed, 1);
    cr_assert_eq(rec.exited, 0);
    cr_assert_eq(rec.end_status.how, TW_PROCESS_UNKNOWN);
    cr_assert_eq(rec.nlost, 3);
    cr_assert_eq(kill(pid, 0), 0, "still running");
    kill(pid, SIGKILL);
    cr_assert_eq(waitpid(pid, NULL, 0), pid);
    rec_clear(&rec);
}

TW_REACTOR_TEST(spawn, allocation_failure_is_clean)
{
    /* Warm up: the thread's buffer and the reactor's tables. */
    struct rec rec;
    rec_init(&rec);
    spawn_rec(r, &rec, "/bin/true", NULL, NULL);
    run_until_freed(r, &rec, 5);
    int fds = count_fds();
    for (long n = 0;; n++) {
        rec_init(&rec);
        tw_failure *f = NULL;
        tw_testing_fail_alloc_after(n);
        int rc = tw_spawn_process(r, &rec.base, "/bin/true", NULL, NULL, NULL, NULL, NULL, &f);
        tw_testing_fail_alloc_off();
        tw_failure_unref(f);
        if (rc == 0) {
            cr_assert_gt(n, 0);
            run_until_freed(r, &rec, 5);
            break;
        }
        cr_assert_eq(rc, TW_ENOMEM, "n=%ld: %s", n, tw_strerror(rc));
        cr_assert_eq(rec.freed, 1);
        cr_assert_eq(count_fds(), fds, "n=%ld: descriptors leaked", n);
        cr_assert_eq(waitpid(-1, NULL, WNOHANG), -1, "no child left behind");
    }
    /* The same through the SIGCHLD path (one more allocation: the watch). */
    tw_process_options o = {.reap_with_sigchld = true};
    for (long n = 0;; n++) {
        rec_init(&rec);
        tw_testing_fail_alloc_after(n);
        int rc = tw_spawn_process(r, &rec.base, "/bin/true", NULL, NULL, NULL, &o, NULL, NULL);
        tw_testing_fail_alloc_off();
        if (rc == 0) {
            run_until_freed(r, &rec, 5);
            break;
        }
        cr_assert_eq(rc, TW_ENOMEM);
        cr_assert_eq(count_fds(), fds);
    }
}
