/* Shared by the process tests: a recording process protocol and helpers to
 * run the reactor until it ends. */
#ifndef PROC_TEST_H
#define PROC_TEST_H

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <twine/process.h>

#include "twtest.h"

/* What a child did, as the protocol saw it. */
struct rec {
    tw_process_protocol base;
    char *out, *err; /* tw_malloc'd, NUL-terminated */
    size_t out_len, err_len;
    size_t other_bytes; /* data from fds other than 1 and 2 */
    int lost[8];        /* child_connection_lost, in order */
    int nlost;
    int made, exited, ended, freed;
    int order;               /* events so far */
    int exited_at, ended_at; /* the event number of each */
    int lost_at[8];
    tw_process_status exit_status, end_status;
    bool pause_on_data;
    size_t pause_after; /* pause the transport once this much stdout arrived */
    bool keep_out;      /* store stdout (false: only count it) */
    int *freed_flag;
};

static inline void rec_append(char **buf, size_t *len, const char *data, size_t n)
{
    char *b = tw_realloc(*buf, *len + n + 1);
    cr_assert(b);
    memcpy(b + *len, data, n);
    *len += n;
    b[*len] = '\0';
    *buf = b;
}

static inline void rec_made(tw_process_protocol *pp)
{
    ((struct rec *)pp)->made++;
    ((struct rec *)pp)->order++;
}

static inline void rec_data(tw_process_protocol *pp, int fd, const char *data, size_t len)
{
    struct rec *r = (struct rec *)pp;
    if (fd == 1) {
        if (r->keep_out)
            rec_append(&r->out, &r->out_len, data, len);
        else
            r->out_len += len;
        if (r->pause_after && r->out_len >= r->pause_after) {
            r->pause_after = 0;
            tw_transport_pause_producing(tw_process_transport(pp->process));
        }
    } else if (fd == 2) {
        rec_append(&r->err, &r->err_len, data, len);
    } else {
        r->other_bytes += len;
    }
}

static inline void rec_lost(tw_process_protocol *pp, int fd)
{
    struct rec *r = (struct rec *)pp;
    if (r->nlost < 8) {
        r->lost_at[r->nlost] = ++r->order;
        r->lost[r->nlost++] = fd;
    }
}

static inline void rec_exited(tw_process_protocol *pp, tw_process_status st)
{
    struct rec *r = (struct rec *)pp;
    r->exited++;
    r->exited_at = ++r->order;
    r->exit_status = st;
}

static inline void rec_ended(tw_process_protocol *pp, tw_process_status st)
{
    struct rec *r = (struct rec *)pp;
    r->ended++;
    r->ended_at = ++r->order;
    r->end_status = st;
    cr_assert(pp->process, "process set during process_ended");
}

static inline void rec_free(tw_process_protocol *pp)
{
    struct rec *r = (struct rec *)pp;
    r->freed++;
    cr_assert_null(pp->process);
    if (r->freed_flag)
        (*r->freed_flag)++;
}

static const tw_process_protocol_ops rec_ops = {
    .connection_made = rec_made,
    .child_data_received = rec_data,
    .child_connection_lost = rec_lost,
    .process_exited = rec_exited,
    .process_ended = rec_ended,
    .free = rec_free,
};

static inline void rec_init(struct rec *r)
{
    memset(r, 0, sizeof *r);
    tw_process_protocol_init(&r->base, &rec_ops);
    r->keep_out = true;
}

static inline void rec_clear(struct rec *r)
{
    tw_free(r->out);
    tw_free(r->err);
    r->out = r->err = NULL;
}

/* Runs r until the protocol was freed (or `seconds` pass). */
static inline void run_until_freed(tw_reactor *reactor, struct rec *r, double seconds)
{
    double deadline = tw_reactor_seconds(reactor) + seconds;
    while (!r->freed && tw_reactor_seconds(reactor) < deadline)
        tw_reactor_iterate(reactor, 0.05);
    cr_assert_eq(r->freed, 1, "the process did not end in %g s", seconds);
}

/* Spawns with the recording protocol; asserts it worked. */
static inline tw_process *spawn_rec(tw_reactor *reactor, struct rec *r, const char *exe,
                                    char *const *argv, const tw_process_options *opts)
{
    tw_process *p = NULL;
    tw_failure *f = NULL;
    int rc = tw_spawn_process(reactor, &r->base, exe, argv, NULL, NULL, opts, &p, &f);
    cr_assert_eq(rc, 0, "spawn %s: %s", exe, f ? tw_failure_message(f) : tw_strerror(rc));
    cr_assert(p);
    return p;
}

/* Descriptors open in this process. */
static inline int count_fds(void)
{
    int n = 0;
    char path[64];
    for (int fd = 0; fd < 4096; fd++) {
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        if (access(path, F_OK) == 0)
            n++;
    }
    return n;
}

#endif
