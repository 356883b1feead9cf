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
