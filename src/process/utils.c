/* twisted.internet.utils: getProcessOutput, getProcessValue,
 * getProcessOutputAndValue. Each is a process protocol that gathers what
 * it needs and fires a deferred when the child has ended. See process.h. */
#include <signal.h>
#include <string.h>

#include <twine/alloc.h>
#include <twine/error.h>

#include "process/process-internal.h"

enum helper_kind { H_OUTPUT, H_VALUE, H_BOTH };

struct helper {
    tw_process_protocol base;
    enum helper_kind kind;
    bool errortoo;
    bool spawning;  /* inside tw_spawn_process: a failed spawn's free keeps the memory */
    bool exited;    /* process_exited came: the child was reaped */
    tw_deferred *d; /* NULL once fired */
    tw_process_output *res;
    const void *stdin_bytes;
    size_t stdin_len;
};

void tw_process_output_free(void *output)
{
    tw_process_output *o = output;
    if (!o)
        return;
    tw_free(o->out);
    tw_free(o->err);
    tw_free(o);
}

static void fire(struct helper *h, tw_result result)
{
    tw_deferred *d = h->d;
    if (!d) {
        tw_result_release(&result);
        return;
    }
    h->d = NULL;
    tw_deferred_callback(d, result);
    tw_deferred_unref(d);
}

static void fail(struct helper *h, tw_failure *f)
{
    fire(h, tw_result_fail(f));
}

static int append(char **buf, size_t *len, const char *data, size_t n)
{
    char *b = tw_realloc(*buf, *len + n + 1);
    if (!b)
        return TW_ENOMEM;
    memcpy(b + *len, data, n);
    *len += n;
    b[*len] = '\0';
    *buf = b;
    return 0;
}

/* Gathering failed for want of memory: say so and let the child go. */
static void out_of_memory(struct helper *h)
{
    fail(h, tw_failure_new(TW_ENOMEM, NULL, "out of memory gathering the output of a process"));
    tw_transport_abort_connection(tw_process_transport(h->base.process));
}

static void h_made(tw_process_protocol *pp)
{
    struct helper *h = (struct helper *)pp;
    tw_process *p = pp->process;
    h->res->pid = tw_process_pid(p);
    if (h->stdin_len > 0 &&
        tw_transport_write(tw_process_transport(p), h->stdin_bytes, h->stdin_len) < 0) {
        out_of_memory(h);
        return;
    }
    tw_process_close_stdin(p);
}

static void h_data(tw_process_protocol *pp, int fd, const char *data, size_t len)
{
    struct helper *h = (struct helper *)pp;
    tw_process_output *o = h->res;
    if (!h->d || h->kind == H_VALUE)
        return;
    int rc = 0;
    if (fd == 1 || (fd == 2 && h->errortoo)) {
        rc = append(&o->out, &o->out_len, data, len);
    } else if (fd == 2 && h->kind == H_BOTH) {
        rc = append(&o->err, &o->err_len, data, len);
    } else if (fd == 2) {
        /* Twisted's _UnexpectedErrorOutput: stderr was not asked for. */
        size_t show = len > 200 ? 200 : len;
        fail(h, tw_failure_new(TW_EPROTOCOL, NULL, "got stderr: '%.*s'%s", (int)show, data,
                               show < len ? "..." : ""));
        tw_transport_lose_connection(tw_process_transport(pp->process));
        return;
    }
    if (rc < 0)
        out_of_memory(h);
}

static void h_exited(tw_process_protocol *pp, tw_process_status status)
{
    (void)status;
    ((struct helper *)pp)->exited = true;
}

static void h_ended(tw_process_protocol *pp, tw_process_status status)
{
    struct helper *h = (struct helper *)pp;
    if (!h->d)
        return;
    pid_t pid = tw_process_pid(pp->process);
    if (!h->exited) {
        fail(h, tw_failure_new(TW_ECONNLOST, NULL,
                               "the reactor shut down before process %ld ended (left running)",
                               (long)pid));
        return;
    }
    if (h->kind == H_VALUE) {
        if (status.how == TW_PROCESS_EXITED)
            fire(h, tw_result_from_int(status.exit_code));
        else
            fail(h, tw_process_status_failure(&status, NULL, pid));
        return;
    }
    tw_process_output *o = h->res;
    o->status = status;
    /* Never NULL, as promised: the empty strings now. */
    if ((!o->out && append(&o->out, &o->out_len, "", 0) < 0) ||
        (!o->err && append(&o->err, &o->err_len, "", 0) < 0)) {
        fail(h, tw_failure_new(TW_ENOMEM, NULL, NULL));
        return;
    }
    h->res = NULL;
    fire(h, tw_result_ok(o, tw_process_output_free));
}

static void h_free(tw_process_protocol *pp)
{
    struct helper *h = (struct helper *)pp;
    if (h->spawning)
        return; /* the caller fails the deferred with the spawn's failure */
    if (h->d)
        fail(h, tw_failure_new(TW_ECONNLOST, NULL, "the process was lost"));
    tw_process_output_free(h->res);
    tw_free(h);
}

static const tw_process_protocol_ops helper_ops = {
    .connection_made = h_made,
    .child_data_received = h_data,
    .process_exited = h_exited,
    .process_ended = h_ended,
    .free = h_free,
};

/* Cancelling kills the child; the deferred fails at once, and the process
 * runs on to its end (reaped as usual) with nobody waiting. */
static void h_cancel(tw_deferred *d, void *arg)
{
    struct helper *h = arg;
    (void)d;
    if (h->base.process)
        tw_process_signal(h->base.process, SIGKILL);
    fail(h, tw_failure_new(TW_ECANCELED, NULL, "waiting for the process was cancelled"));
}

static tw_deferred *start(tw_reactor *r, enum helper_kind kind, const char *executable,
                          char *const argv[], char *const env[], const char *path, bool errortoo,
                          const void *stdin_bytes, size_t stdin_len)
{
    if (!r || !executable || (!stdin_bytes && stdin_len > 0))
        return tw_fail(tw_failure_new(TW_EINVAL, NULL, "no reactor or no executable"));
    struct helper *h = tw_calloc(1, sizeof *h);
    tw_process_output *o = h ? tw_calloc(1, sizeof *o) : NULL;
    tw_deferred *d = o ? tw_deferred_new(h_cancel, h) : NULL;
    if (!d) {
        tw_free(o);
        tw_free(h);
        return tw_fail(tw_failure_new(TW_ENOMEM, NULL, NULL));
    }
    tw_process_protocol_init(&h->base, &helper_ops);
    *o = (tw_process_output){.status = {.how = TW_PROCESS_UNKNOWN, .exit_code = -1}};
    h->kind = kind;
    h->errortoo = errortoo;
    h->res = o;
    h->d = tw_deferred_ref(d);
    h->stdin_bytes = stdin_bytes;
    h->stdin_len = stdin_len;
    h->spawning = true;
    tw_failure *f = NULL;
    int rc = tw_spawn_process(r, &h->base, executable, argv, env, path, NULL, NULL, &f);
    h->spawning = false;
    if (rc < 0) {
        fail(h, f ? f : tw_failure_new(rc, NULL, NULL));
        h_free(&h->base);
        return d;
    }
    h->stdin_bytes = NULL; /* written (or queued: copied) in connection_made */
    h->stdin_len = 0;
    return d;
}

tw_deferred *tw_get_process_output(tw_reactor *r, const char *executable, char *const argv[],
                                   char *const env[], const char *path, bool errortoo)
{
    return start(r, H_OUTPUT, executable, argv, env, path, errortoo, NULL, 0);
}

tw_deferred *tw_get_process_value(tw_reactor *r, const char *executable, char *const argv[],
                                  char *const env[], const char *path)
{
    return start(r, H_VALUE, executable, argv, env, path, false, NULL, 0);
}

tw_deferred *tw_get_process_output_and_value(tw_reactor *r, const char *executable,
                                             char *const argv[], char *const env[],
                                             const char *path, const void *stdin_bytes,
                                             size_t stdin_len)
{
    return start(r, H_BOTH, executable, argv, env, path, false, stdin_bytes, stdin_len);
}
