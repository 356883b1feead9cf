/* Echoes standard input, line by line, over the stdio transport.
 *
 *     stdio-echo              type lines; Ctrl-D ends
 *     stdio-echo < file       works with a file as stdin too
 *     printf 'a\nb\n' | stdio-echo
 *
 * Each line comes back as "echo: LINE". When stdin ends, whatever is still
 * queued for stdout is written and the program exits.
 *
 * What to read here: the "stdio:" server endpoint connects one protocol (a
 * LineReceiver, basic.h) to this program's own stdin and stdout, as any
 * other endpoint connects a protocol to a socket; the protocol cannot tell
 * the difference. When its connection ends it stops the reactor. */
#include <stdio.h>
#include <string.h>

#include <twine/basic.h>
#include <twine/endpoint.h>
#include <twine/net.h>
#include <twine/twine.h>

struct echo {
    tw_line_receiver lr; /* first */
};

static void echo_line(tw_protocol *p, const char *line, size_t len)
{
    struct iovec iov[3] = {{"echo: ", 6}, {(void *)line, len}, {"\n", 1}};
    tw_transport_write_sequence(p->transport, iov, 3);
}

static void echo_lost(tw_protocol *p, tw_failure *reason)
{
    tw_reactor *r = p->factory->data;
    if (tw_failure_code(reason) != TW_ECONNDONE)
        fprintf(stderr, "stdio-echo: %s\n", tw_failure_message(reason));
    tw_reactor_stop(r);
}

static const tw_line_receiver_ops echo_ops = {
    .protocol = TW_LINE_RECEIVER_PROTOCOL_OPS,
    .line_received = echo_line,
    .connection_lost = echo_lost,
    .delimiter = "\n",
};

static tw_result listen_failed(tw_result result, void *arg)
{
    (void)arg;
    fprintf(stderr, "stdio-echo: %s\n", tw_failure_message(result.failure));
    tw_result_release(&result);
    return tw_result_ok(NULL, NULL);
}

static tw_result listening(tw_result result, void *arg)
{
    *(tw_listening_port **)arg = tw_result_take(&result);
    return tw_result_ok(NULL, NULL);
}

int main(int argc, char **argv)
{
    (void)argv;
    if (argc != 1) {
        fprintf(stderr, "usage: stdio-echo < INPUT\n");
        return 2;
    }
    tw_reactor *r;
    if (tw_reactor_new(&r, NULL) < 0)
        return 1;
    tw_factory factory;
    tw_factory_init(&factory, NULL, &echo_ops.protocol, sizeof(struct echo), r);
    tw_endpoint *ep;
    tw_failure *f;
    if (tw_endpoint_server_from_string(r, "stdio:", &ep, &f) < 0) {
        fprintf(stderr, "stdio-echo: %s\n", tw_failure_message(f));
        tw_failure_unref(f);
        tw_reactor_free(r);
        return 1;
    }
    tw_listening_port *port = NULL;
    tw_deferred *d = tw_endpoint_listen(ep, &factory);
    tw_deferred_add_callbacks(d, listening, listen_failed, &port, NULL);
    tw_deferred_unref(d);
    if (port)
        tw_reactor_run(r);
    tw_deferred_unref(tw_listening_port_stop(port));
    tw_endpoint_free(ep);
    tw_reactor_free(r);
    return port ? 0 : 1;
}
