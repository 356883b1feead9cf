/* What every example server does with its endpoint: parse the description,
 * listen, print where, run until Ctrl-C (stopping the reactor closes the
 * port and every connection, and stops the factory), then free everything.
 * Shared by the example servers so each of them shows only its protocol. */
#ifndef TWINE_EXAMPLES_SERVE_H
#define TWINE_EXAMPLES_SERVE_H

#include <stdio.h>

#include <twine/endpoint.h>
#include <twine/net.h>
#include <twine/twine.h>

static tw_result serve_listening(tw_result result, void *arg)
{
    tw_listening_port **port = arg;
    *port = tw_result_take(&result); /* ours now: we stop it at the end */
    tw_address host;
    char where[TW_ADDRESS_STRLEN];
    if (tw_listening_port_get_host(*port, &host) == 0)
        printf("Listening on %s\n", tw_address_format(&host, where, sizeof where));
    return tw_result_ok(NULL, NULL);
}

static tw_result serve_failed(tw_result result, void *arg)
{
    const char *prog = arg;
    fprintf(stderr, "%s: %s\n", prog, tw_failure_message(result.failure));
    tw_result_release(&result);
    return tw_result_ok(NULL, NULL);
}

/* Returns the exit status: 0 after a clean stop, 1 when it could not listen,
 * 2 for a bad description. */
static int serve(const char *prog, const char *description, tw_factory *factory)
{
    setvbuf(stdout, NULL, _IOLBF, 0); /* one line at a time, even into a pipe */
    tw_reactor *r;
    if (tw_reactor_new(&r, NULL) < 0)
        return 1;
    tw_endpoint *ep;
    tw_failure *failure;
    if (tw_endpoint_server_from_string(r, description, &ep, &failure) < 0) {
        fprintf(stderr, "%s: %s\n", prog, tw_failure_message(failure));
        tw_failure_unref(failure);
        tw_reactor_free(r);
        return 2;
    }
    tw_listening_port *port = NULL;
    tw_deferred *d = tw_endpoint_listen(ep, factory);
    tw_deferred_add_callbacks(d, serve_listening, NULL, &port, NULL);
    tw_deferred_add_errback(d, serve_failed, (void *)prog);
    tw_deferred_unref(d);

    if (port)
        tw_reactor_run(r);
    tw_deferred_unref(tw_listening_port_stop(port));
    tw_endpoint_free(ep);
    tw_reactor_free(r);
    return port ? 0 : 1;
}

#endif
