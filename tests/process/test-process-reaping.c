/* Reaping in the awkward cases: a child traced by another process (strace
 * -f, a debugger), so that its pidfd says it exited before waitpid may take
 * it; and children reaped by someone else, in both reaping modes. */
#include <sys/ptrace.h>

#include "proc-test.h"

/* A tracer: attaches to pid, tells the test it did (one byte on `ready`,
 * 'y' or 'n'), sees the exit without consuming it, holds the zombie for
 * `hold` seconds (waitpid of the real parent gives 0 meanwhile, though the
 * pidfd is readable), then takes it, which hands it back to its parent. */
static pid_t start_tracer(pid_t pid, double hold, int *ready_fd)
{
    int ready[2];
    cr_assert_eq(pipe2(ready, O_CLOEXEC), 0);
    pid_t tracer = fork();
    cr_assert_geq(tracer, 0);
    if (tracer == 0) {
        close(ready[0]);
        char ok = ptrace(PTRACE_SEIZE, pid, 0, 0) == 0 ? 'y' : 'n';
        if (write(ready[1], &ok, 1) != 1 || ok != 'y')
            _exit(1);
        siginfo_t si;
        for (;;) {
            memset(&si, 0, sizeof si);
            if (waitid(P_PID, (id_t)pid, &si, WEXITED | WSTOPPED | WNOWAIT) < 0)
                _exit(2);
            if (si.si_code == CLD_EXITED || si.si_code == CLD_KILLED || si.si_code == CLD_DUMPED)
                break;
            /* A stop (sh gets SIGCHLD from its sleep): take it and let the
             * tracee go on, with its signal. */
            int st;
            waitpid(pid, &st, __WALL);
            ptrace(PTRACE_CONT, pid, 0, WIFSTOPPED(st) ? WSTOPSIG(st) : 0);
        }
        usleep((useconds_t)(hold * 1e6));
        int st;
        _exit(waitpid(pid, &st, __WALL) == pid ? 0 : 3);
    }
    close(ready[1]);
    *ready_fd = ready[0];
    return tracer;
}

static void traced_child_reaped(tw_reactor *r, bool sigchld, bool no_memory)
{
    struct rec rec;
    rec_init(&rec);
    char *argv[] = {"sh", "-c", "sleep 0.2; exit 4", NULL};
    tw_process_options o = {.reap_with_sigchld = sigchld};
    tw_process *p = spawn_rec(r, &rec, "/bin/sh", argv, &o);
    pid_t pid = tw_process_pid(p);
    int ready;
    pid_t tracer = start_tracer(pid, 0.3, &ready);
    char ok = 0;
    cr_assert_eq(read(ready, &ok, 1), 1);
    close(ready);
    if (ok != 'y') {
        tw_process_signal(p, SIGKILL);
        run_until_freed(r, &rec, 5);
        waitpid(tracer, NULL, 0);
        rec_clear(&rec);
        cr_skip_test("ptrace is not allowed here");
    }
    tw_testing_log_capture_start();
    if (no_memory) {
        /* The SIGCHLD watch cannot be made: `later` polls for the exit. */
        double deadline = tw_reactor_seconds(r) + 5;
        while (!rec.exited && tw_reactor_seconds(r) < deadline) {
            tw_testing_fail_alloc_after(0);
            tw_reactor_iterate(r, 0.05);
            tw_testing_fail_alloc_off();
        }
        cr_assert_eq(tw_testing_log_count("polling for its exit"), 1);
    }
    run_until_freed(r, &rec, 5);
    tw_testing_log_capture_stop();
    int st;
    cr_assert_eq(waitpid(tracer, &st, 0), tracer);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the tracer took the exit");
    cr_assert_eq(rec.exited, 1);
    cr_assert_eq(rec.ended, 1);
    cr_assert_eq(rec.end_status.how, TW_PROCESS_EXITED, "the status is known");
    cr_assert_eq(rec.end_status.exit_code, 4);
    cr_assert_eq(waitpid(pid, NULL, WNOHANG), -1, "no zombie left");
    cr_assert_eq(errno, ECHILD);
    rec_clear(&rec);
}

TW_REACTOR_TEST(reaping, traced_child_is_reaped_once_its_tracer_lets_go)
{
    traced_child_reaped(r, false, false);
}

TW_REACTOR_TEST(reaping, traced_child_is_reaped_without_memory_for_a_sigchld_watch)
{
    traced_child_reaped(r, false, true);
}

TW_REACTOR_TEST(reaping, traced_child_is_reaped_in_sigchld_mode)
{
    traced_child_reaped(r, true, false);
}

/* SIGCHLD mode, the child reaped behind our back before the first check:
 * the status is unknown, and the process still ends. */
TW_REACTOR_TEST(reaping, reaped_by_someone_else_before_the_first_check_sigchld)
{
    tw_testing_log_capture_start();
    struct rec rec;
    rec_init(&rec);
    tw_process_options o = {.reap_with_sigchld = true};
    tw_process *p = spawn_rec(r, &rec, "/bin/true", NULL, &o);
    pid_t pid = tw_process_pid(p);
    cr_assert_eq(waitpid(pid, NULL, 0), pid);
    run_until_freed(r, &rec, 5);
    cr_assert_eq(rec.exited, 1);
    cr_assert_eq(rec.end_status.how, TW_PROCESS_UNKNOWN);
    cr_assert_eq(rec.end_status.exit_code, -1);
    cr_assert_eq(tw_testing_log_count("reaped by someone else"), 1);
    tw_testing_log_capture_stop();
    rec_clear(&rec);
}

/* SIGCHLD mode, reaped behind our back after the first check: the SIGCHLD
 * that its exit raised finds it gone. */
TW_REACTOR_TEST(reaping, reaped_by_someone_else_later_sigchld)
{
    tw_testing_log_capture_start();
    struct rec rec;
    rec_init(&rec);
    tw_process_options o = {.reap_with_sigchld = true};
    char *argv[] = {"sleep", "0.2", NULL};
    tw_process *p = spawn_rec(r, &rec, "/bin/sleep", argv, &o);
    pid_t pid = tw_process_pid(p);
    for (int i = 0; i < 3; i++)
        tw_reactor_iterate(r, 0);
    cr_assert_eq(rec.exited, 0, "the first check found it running");
    cr_assert_eq(waitpid(pid, NULL, 0), pid);
    run_until_freed(r, &rec, 5);
    cr_assert_eq(rec.exited, 1);
    cr_assert_eq(rec.end_status.how, TW_PROCESS_UNKNOWN);
    cr_assert_eq(tw_testing_log_count("reaped by someone else"), 1);
    tw_testing_log_capture_stop();
    rec_clear(&rec);
}
