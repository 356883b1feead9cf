/* The process endpoint (Twisted's ProcessEndpoint): a client endpoint whose
 * connect spawns a child and runs an ordinary protocol over it, through a
 * process protocol that forwards (Twisted's _WrapIProtocol): stdout to
 * data_received, stderr to the log (or nowhere), the process's end to
 * connection_lost. The protocol's transport is the process transport
 * itself. See process.h. */
#include <string.h>

#include <twine/error.h>
#include <twine/log.h>
#include <twine/process.h>

#include "net/endpoint-internal.h"

#define NS "twine.process"

/* What the endpoint keeps: copies of everything tw_process_endpoint_new got. */
struct proc_ep {
    char *executable;
    char **argv; /* NULL-terminated copies, or NULL */
    char **env;
    char *cwd;
    tw_process_options opts;
    tw_child_fd *fds;
    tw_stderr_behavior err_behavior;
};

/* The process protocol around the application's protocol. */
struct wrap {
    tw_process_protocol base;
    tw_protocol *proto;
    tw_factory *factory; /* started for this connection; NULL for connect_protocol */
    tw_stderr_behavior err_behavior;
    char *name;
    bool exited; /* reaped: not a shutdown that left it running */
};

static void strv_free(char **v)
{
    for (char **p = v; p && *p; p++)
        tw_free(*p);
    tw_free(v);
}

static int strv_dup(char *const *src, char ***out)
{
    *out = NULL;
    if (!src)
        return 0;
    size_t n = 0;
    while (src[n])
        n++;
    char **v = tw_calloc(n + 1, sizeof *v);
    if (!v)
        return TW_ENOMEM;
    for (size_t i = 0; i < n; i++)
        if (!(v[i] = tw_strdup(src[i]))) {
            strv_free(v);
            return TW_ENOMEM;
        }
    *out = v;
    return 0;
}

static void ep_free(void *data)
{
    struct proc_ep *e = data;
    tw_free(e->executable);
    strv_free(e->argv);
    strv_free(e->env);
    tw_free(e->cwd);
    tw_free(e->fds);
    tw_free(e);
}

/* ---- The forwarding process protocol */

static void w_made(tw_process_protocol *pp)
{
    struct wrap *w = (struct wrap *)pp;
    tw_transport *t = tw_process_transport(pp->process);
    t->protocol = w->proto;
    tw_protocol_make_connection(w->proto, t);
}

static void w_data(tw_process_protocol *pp, int fd, const char *data, size_t len)
{
    struct wrap *w = (struct wrap *)pp;
    if (fd == 1)
        tw_protocol_data_received(w->proto, data, len);
    else if (fd == 2 && w->err_behavior == TW_STDERR_LOG)
        tw_log_info(NS, "process '%s' wrote to stderr: %.*s", w->name, (int)len, data);
}

static void w_fd_lost(tw_process_protocol *pp, int fd)
{
    struct wrap *w = (struct wrap *)pp;
    const tw_protocol_ops *o = w->proto->ops;
    if (fd == 0 && o && o->write_connection_lost)
        o->write_connection_lost(w->proto);
}

static void w_exited(tw_process_protocol *pp, tw_process_status status)
{
    (void)status;
    ((struct wrap *)pp)->exited = true;
}

static void w_ended(tw_process_protocol *pp, tw_process_status status)
{
    struct wrap *w = (struct wrap *)pp;
    pid_t pid = tw_process_pid(pp->process);
    tw_failure *reason =
        w->exited ? tw_process_status_failure(&status, w->name, pid)
                  : tw_failure_new(TW_ECONNLOST, NULL,
                                   "the reactor shut down; process '%s' (pid %ld) left running",
                                   w->name, (long)pid);
    tw_protocol_connection_lost(w->proto, reason);
    tw_failure_unref(reason);
    tw_process_transport(pp->process)->protocol = NULL; /* released next, in free */
}

static void w_free(tw_process_protocol *pp)
{
    struct wrap *w = (struct wrap *)pp;
    tw_protocol_release(w->proto);
    if (w->factory)
        tw_factory_do_stop(w->factory);
    tw_free(w->name);
    tw_free(w);
}

static const tw_process_protocol_ops wrap_ops = {
    .connection_made = w_made,
    .child_data_received = w_data,
    .child_connection_lost = w_fd_lost,
    .process_exited = w_exited,
    .process_ended = w_ended,
    .free = w_free,
};

/* ---- connect */

static tw_deferred *ep_connect(void *data, tw_reactor *r, tw_factory *factory,
                               tw_protocol *ready_made)
{
    struct proc_ep *e = data;
    tw_protocol *p = ready_made;
    if (!p) {
        tw_address addr;
        tw_address_from_process(&addr, 0);
        tw_factory_do_start(factory);
        p = tw_factory_build_protocol(factory, &addr);
        if (!p) {
            tw_factory_do_stop(factory);
            bool by_default =
                (!factory->ops || !factory->ops->build_protocol) && factory->protocol_ops;
            return tw_fail(by_default ? tw_failure_new(TW_ENOMEM, NULL, NULL)
                                      : tw_failure_new(TW_ECONNABORTED, NULL,
                                                       "the factory refused the connection"));
        }
    } else {
        factory = NULL;
    }
    struct wrap *w = tw_calloc(1, sizeof *w);
    char *name = w ? tw_strdup(e->executable) : NULL;
    if (!name) {
        tw_free(w);
        tw_protocol_release(p);
        if (factory)
            tw_factory_do_stop(factory);
        return tw_fail(tw_failure_new(TW_ENOMEM, NULL, NULL));
    }
    tw_process_protocol_init(&w->base, &wrap_ops);
    w->proto = p;
    w->factory = factory;
    w->err_behavior = e->err_behavior;
    w->name = name;
    tw_failure *f = NULL;
    /* The wrapper is taken over: on error its free releases p. */
    int rc =
        tw_spawn_process(r, &w->base, e->executable, e->argv, e->env, e->cwd, &e->opts, NULL, &f);
    if (rc < 0)
        return tw_fail(f ? f : tw_failure_new(rc, NULL, NULL));
    return tw_succeed(tw_result_ok(p, NULL));
}

static const struct tw__endpoint_impl process_impl = {
    .connect = ep_connect,
    .free = ep_free,
};

int tw_process_endpoint_new(tw_reactor *r, const char *executable, char *const argv[],
                            char *const env[], const char *working_dir,
                            const tw_process_options *opts, tw_stderr_behavior err_behavior,
                            tw_endpoint **out)
{
    if (out)
        *out = NULL;
    if (!r || !executable || !out)
        return TW_EINVAL;
    struct proc_ep *e = tw_calloc(1, sizeof *e);
    if (!e)
        return TW_ENOMEM;
    e->err_behavior = err_behavior;
    if (opts)
        e->opts = *opts;
    int rc = 0;
    if (!(e->executable = tw_strdup(executable)) ||
        (working_dir && !(e->cwd = tw_strdup(working_dir))))
        rc = TW_ENOMEM;
    if (rc == 0)
        rc = strv_dup(argv, &e->argv);
    if (rc == 0)
        rc = strv_dup(env, &e->env);
    if (rc == 0 && opts && opts->child_fds && opts->n_child_fds > 0) {
        if (opts->n_child_fds > TW_PROCESS_MAX_CHILD_FDS) {
            rc = TW_EINVAL;
        } else if (!(e->fds = tw_calloc(opts->n_child_fds, sizeof *e->fds))) {
            rc = TW_ENOMEM;
        } else {
            memcpy(e->fds, opts->child_fds, opts->n_child_fds * sizeof *e->fds);
            e->opts.child_fds = e->fds;
        }
    }
    if (rc < 0) {
        ep_free(e);
        return rc;
    }
    return tw__endpoint_new_impl(r, &process_impl, e, out);
}
