/* react: run a main function's deferred to completion with its reactor.
 *
 * As Twisted's: the reactor is stopped once main's deferred fires, from the
 * running reactor (if the deferred fired before run, from a call when
 * running); if the shutdown has begun already (a before-shutdown trigger
 * has fired), the outcome is only recorded. */
#include <twine/alloc.h>
#include <twine/error.h>
#include <twine/failure.h>
#include <twine/log.h>
#include <twine/task.h>

#define NS "twine.task"

/* Shared by tw_react and the pair on main's deferred, which may outlive the
 * call when cancelling does not fire the deferred (a paused one). */
struct react {
    unsigned refs;
    tw_reactor *r;
    int status;
    bool stopping; /* the shutdown has begun */
    bool over;     /* run returned: the deferred's outcome no longer counts */
};

void tw_react_exit_tag(void *value)
{
    (void)value;
}

static tw_deferred *react_shutdown_begins(void *arg)
{
    struct react *st = arg;
    st->stopping = true;
    return NULL;
}

static void react_unref(void *arg)
{
    struct react *st = arg;
    if (--st->refs == 0)
        tw_free(st);
}

/* Its argument is the reactor itself, which outlives the call. */
static void react_stop(void *r)
{
    tw_reactor_stop(r); /* TW_ENOTRUNNING (stopped meanwhile) is fine */
}

static tw_result react_finished(tw_result r, void *arg)
{
    struct react *st = arg;
    if (st->over) {
        tw_result_release(&r);
        return tw_result_borrowed(NULL);
    }
    if (r.failure) {
        tw_log_failure(TW_LOG_ERROR, NS, r.failure, "main function encountered error");
        st->status = 1;
    } else if (r.release == tw_react_exit_tag) {
        st->status = (int)tw_result_int(r);
    }
    tw_result_release(&r);
    if (st->stopping)
        return tw_result_borrowed(NULL);
    if (tw_reactor_running(st->r)) {
        tw_reactor_stop(st->r);
    } else if (tw_reactor_call_when_running(st->r, react_stop, st->r) < 0) {
        tw_log_error(NS, "react: out of memory: cannot stop the reactor when it runs");
        st->status = 1;
    }
    return tw_result_borrowed(NULL);
}

int tw_react(tw_react_main_fn main_fn, void *arg, const tw_react_options *options)
{
    if (!main_fn) {
        tw_log_error(NS, "tw_react: main_fn is NULL");
        return 1;
    }
    struct react *st = tw_calloc(1, sizeof *st);
    if (!st) {
        tw_log_error(NS, "tw_react: out of memory");
        return 1;
    }
    st->refs = 1;
    tw_reactor *own = NULL;
    int status = 1;
    int rc;
    if (options && options->reactor) {
        st->r = options->reactor;
    } else {
        rc = tw_reactor_new(&own, options ? options->reactor_options : NULL);
        if (rc < 0) {
            tw_log_error(NS, "tw_react: cannot make a reactor: %s", tw_strerror(rc));
            goto out;
        }
        st->r = own;
    }

    tw_trigger_id trigger;
    rc = tw_reactor_add_trigger(st->r, TW_PHASE_BEFORE, TW_EVENT_SHUTDOWN, react_shutdown_begins,
                                st, &trigger);
    if (rc < 0) {
        tw_log_error(NS, "tw_react: cannot watch the shutdown: %s", tw_strerror(rc));
        goto out;
    }
    tw_deferred *d = main_fn(st->r, arg);
    if (!d) {
        tw_log_error(NS, "tw_react: the main function returned NULL (out of memory)");
        tw_reactor_remove_trigger(st->r, trigger);
        goto out;
    }
    st->refs++; /* the pair's: it may run, and be done with, right away */
    rc = tw_deferred_add_callbacks(d, react_finished, react_finished, st, react_unref);
    if (rc < 0) {
        st->refs--;
        tw_log_error(NS, "tw_react: cannot wait for main's deferred: %s", tw_strerror(rc));
        tw_reactor_remove_trigger(st->r, trigger);
        tw_deferred_cancel(d);
        tw_deferred_unref(d);
        goto out;
    }
    rc = tw_reactor_run(st->r);
    st->over = true;
    tw_reactor_remove_trigger(st->r, trigger); /* TW_ENOENT once it fired */
    status = st->status;
    if (rc < 0) {
        tw_log_error(NS, "tw_react: cannot run the reactor: %s", tw_strerror(rc));
        status = 1;
    }
    /* Stopped by something else before main was done: it never will be. */
    tw_deferred_cancel(d);
    tw_deferred_unref(d);
out:
    react_unref(st);
    if (own)
        tw_reactor_free(own);
    return status;
}
