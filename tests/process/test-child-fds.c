/* The child's descriptor map at its edges: numbers right below the
 * descriptor limit, numbers above it, descriptors without close-on-exec
 * when the kernel cannot mark a range close-on-exec, and pipes the parent
 * writes on numbers other than 0. */
#include <sys/resource.h>

#include "proc-test.h"
#include "process/process-internal.h"

static void lower_fd_limit(rlim_t n)
{
    struct rlimit rl;
    cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    rl.rlim_cur = n;
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
}

/* The child writes to its descriptor `target` (a pipe the parent reads),
 * with the limit at 1024: every descriptor the child is given fits, and so
 * must the spawn's own scratch descriptors. */
static void write_to_high_fd(tw_reactor *r, int target)
{
    lower_fd_limit(1024);
    struct rec rec;
    rec_init(&rec);
    tw_child_fd map[] = {{1, TW_CHILD_FD_READ, -1}, {target, TW_CHILD_FD_READ, -1}};
    tw_process_options o = {.child_fds = map, .n_child_fds = 2};
    char script[64];
    snprintf(script, sizeof script, "echo high >&%d; echo low", target);
    char *argv[] = {"bash", "-c", script, NULL};
    spawn_rec(r, &rec, "/bin/bash", argv, &o);
    run_until_freed(r, &rec, 5);
    cr_assert_eq(rec.end_status.how, TW_PROCESS_EXITED);
    cr_assert_eq(rec.end_status.exit_code, 0, "exit %d", rec.end_status.exit_code);
    cr_assert_str_eq(rec.out, "low\n");
    cr_assert_eq(rec.other_bytes, 5, "\"high\\n\" arrived from fd %d", target);
    rec_clear(&rec);
}

TW_REACTOR_TEST(child_fds, fd_1023_with_a_limit_of_1024)
{
    write_to_high_fd(r, 1023);
}

TW_REACTOR_TEST(child_fds, fd_1022_with_a_limit_of_1024)
{
    write_to_high_fd(r, 1022);
}

/* A child descriptor the limit does not allow is a synchronous error that
 * says so, with no child started. */
TW_REACTOR_TEST(child_fds, fd_above_the_limit_is_refused)
{
    lower_fd_limit(64);
    struct rec rec;
    rec_init(&rec);
    tw_child_fd map[] = {{1, TW_CHILD_FD_READ, -1}, {100, TW_CHILD_FD_READ, -1}};
    tw_process_options o = {.child_fds = map, .n_child_fds = 2};
    tw_failure *f = NULL;
    int fds = count_fds();
    int rc = tw_spawn_process(r, &rec.base, "/bin/true", NULL, NULL, NULL, &o, NULL, &f);
    cr_assert_eq(rc, -EMFILE, "%s", tw_strerror(rc));
    cr_assert(f);
    cr_assert(strstr(tw_failure_message(f), "100"), "%s", tw_failure_message(f));
    cr_assert(strstr(tw_failure_message(f), "limit"), "%s", tw_failure_message(f));
    tw_failure_unref(f);
    cr_assert_eq(rec.freed, 1);
    cr_assert_eq(count_fds(), fds);
    cr_assert_eq(waitpid(-1, NULL, WNOHANG), -1, "no child started");
}

/* The descriptors of the parent that the map does not name never reach the
 * child, also those without close-on-exec, whichever way the child closes
 * them: marking the rest close-on-exec (Linux 5.11+), walking
 * /proc/self/fd, or closing every number up to the limit. */
static void nothing_leaks(tw_reactor *r, int how)
{
    int leaky = dup(2);
    int high = fcntl(2, F_DUPFD, 700); /* no close-on-exec either */
    cr_assert_geq(leaky, 0);
    cr_assert_geq(high, 700);
    tw__spawn_set_close_method(how);
    struct rec rec;
    rec_init(&rec);
    char *argv[] = {"ls", "/proc/self/fd", NULL};
    spawn_rec(r, &rec, "/bin/ls", argv, NULL);
    run_until_freed(r, &rec, 5);
    cr_assert_str_eq(rec.out, "0\n1\n2\n3\n", "method %d: %s", how, rec.out);
    rec_clear(&rec);

    /* With an inherited descriptor kept in place and one moved. */
    int keep = dup(1);
    cr_assert_geq(keep, 0);
    tw_child_fd map[] = {
        {1, TW_CHILD_FD_READ, -1},
        {keep, TW_CHILD_FD_INHERIT, keep},
        {9, TW_CHILD_FD_INHERIT, high},
    };
    tw_process_options o = {.child_fds = map, .n_child_fds = 3};
    rec_init(&rec);
    char *argv_v[] = {"ls", "-v", "/proc/self/fd", NULL};
    spawn_rec(r, &rec, "/bin/ls", argv_v, &o);
    run_until_freed(r, &rec, 5);
    char want[64];
    /* ls opens its directory on the lowest free number: 0 here. */
    if (keep < 9)
        snprintf(want, sizeof want, "0\n1\n%d\n9\n", keep);
    else
        snprintf(want, sizeof want, "0\n1\n9\n%d\n", keep);
    cr_assert_str_eq(rec.out, want, "method %d: %s", how, rec.out);
    rec_clear(&rec);
    tw__spawn_set_close_method(0);
    close(keep);
    close(leaky);
    close(high);
}

TW_REACTOR_TEST(child_fds, nothing_leaks_with_close_range)
{
    nothing_leaks(r, 0);
}

TW_REACTOR_TEST(child_fds, nothing_leaks_walking_proc_self_fd)
{
    nothing_leaks(r, 1);
}

TW_REACTOR_TEST(child_fds, nothing_leaks_closing_up_to_the_limit)
{
    lower_fd_limit(2048);
    nothing_leaks(r, 2);
}

/* write_to_child and close_child_fd on a pipe the child reads as fd 3. */
TW_REACTOR_TEST(child_fds, write_to_child_on_fd_3)
{
    struct rec rec;
    rec_init(&rec);
    tw_child_fd map[] = {
        {1, TW_CHILD_FD_READ, -1},
        {3, TW_CHILD_FD_WRITE, -1},
    };
    tw_process_options o = {.child_fds = map, .n_child_fds = 2};
    char *argv[] = {"sh", "-c", "cat <&3", NULL};
    tw_process *p = spawn_rec(r, &rec, "/bin/sh", argv, &o);
    tw_transport *t = tw_process_transport(p);
    cr_assert_eq(tw_transport_write(t, "x", 1), TW_ENOTCONN, "no stdin");
    cr_assert_eq(tw_process_write_to_child(p, 3, "hello ", 6), 0);
    static char big[200 * 1024];
    memset(big, 'b', sizeof big);
    cr_assert_eq(tw_process_write_to_child(p, 3, big, sizeof big), 0);
    cr_assert_eq(tw_process_write_to_child(p, 3, "end\n", 4), 0);
    cr_assert_eq(tw_process_write_to_child(p, 1, "x", 1), TW_ENOTCONN, "fd 1 is read");
    cr_assert_eq(tw_process_write_to_child(p, 4, "x", 1), TW_ENOTCONN, "no fd 4");
    cr_assert_eq(tw_process_write_to_child(p, 3, NULL, 1), TW_EINVAL);
    cr_assert_eq(tw_process_close_child_fd(p, 3), 0, "closed once flushed");
    cr_assert_eq(tw_process_write_to_child(p, 3, "late", 4), TW_ENOTCONN);
    run_until_freed(r, &rec, 5);
    cr_assert_eq(rec.out_len, 6 + sizeof big + 4);
    cr_assert_eq(memcmp(rec.out, "hello ", 6), 0);
    cr_assert_eq(memcmp(rec.out + 6, big, sizeof big), 0);
    cr_assert_eq(memcmp(rec.out + 6 + sizeof big, "end\n", 4), 0);
    cr_assert_eq(rec.end_status.exit_code, 0);
    cr_assert_eq(rec.nlost, 2);
    rec_clear(&rec);
}
