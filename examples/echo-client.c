/* The echo client of the seeds: connects, sends a message, prints what the
 * server says back, and closes.
 *
 *     echo-client ENDPOINT MESSAGE        e.g.  echo-client tcp:localhost:8000 "hello, world!"
 *
 * ENDPOINT is a client endpoint description ("tcp:HOST:PORT", "unix:PATH",
 * "tls:HOST:PORT:trustRoots=ca.pem").
 * A host name is resolved off the reactor thread and every address it has is
 * tried (the hostname endpoint). Prints "Server said: ..." then
 * "connection lost" and "Connection lost - goodbye!"; if no connection can be
 * made, "Connection failed - goodbye!" and why, with exit status 1. A
 * connection lost otherwise than cleanly (a TLS handshake that failed) says
 * why on stderr, with exit status 1 too. */
#include <stdio.h>
#include <string.h>

#include <twine/endpoint.h>
#include <twine/protocol.h>
#include <twine/twine.h>

struct client {
    tw_reactor *reactor;
    const char *message;
    int status;
};

static void client_made(tw_protocol *p)
{
    struct client *c = p->factory->data;
    tw_transport_write(p->transport, c->message, strlen(c->message));
}

static void client_data(tw_protocol *p, const char *data, size_t len)
{
    printf("Server said: %.*s\n", (int)len, data);
    tw_transport_lose_connection(p->transport);
}

static void client_lost(tw_protocol *p, tw_failure *reason)
{
    struct client *c = p->factory->data;
    printf("connection lost\n");
    /* A clean close says nothing; anything else (a refused TLS certificate,
     * a reset) says why on stderr and makes the exit status 1. */
    if (tw_failure_code(reason) != TW_ECONNDONE) {
        fprintf(stderr, "echo-client: %s\n", tw_failure_message(reason));
        c->status = 1;
    }
    printf("Connection lost - goodbye!\n");
    tw_reactor_stop(c->reactor);
}

static const tw_protocol_ops client_ops = {
    .connection_made = client_made,
    .data_received = client_data,
    .connection_lost = client_lost,
};

static tw_result connection_failed(tw_result result, void *arg)
{
    struct client *c = arg;
    printf("Connection failed - goodbye!\n");
    fprintf(stderr, "echo-client: %s\n", tw_failure_message(result.failure));
    tw_result_release(&result);
    c->status = 1;
    tw_reactor_stop(c->reactor);
    return tw_result_ok(NULL, NULL);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s ENDPOINT MESSAGE\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct client client = {.message = argv[2]};
    if (tw_reactor_new(&client.reactor, NULL) < 0)
        return 1;
    tw_endpoint *ep;
    tw_failure *failure;
    if (tw_endpoint_client_from_string(client.reactor, argv[1], &ep, &failure) < 0) {
        fprintf(stderr, "echo-client: %s\n", tw_failure_message(failure));
        tw_failure_unref(failure);
        tw_reactor_free(client.reactor);
        return 2;
    }

    tw_factory factory;
    tw_factory_init(&factory, NULL, &client_ops, 0, &client);
    tw_deferred *d = tw_endpoint_connect(ep, &factory);
    tw_deferred_add_errback(d, connection_failed, &client);
    tw_deferred_unref(d);

    if (client.status == 0) /* a failure may be known at once (a bad address) */
        tw_reactor_run(client.reactor);
    tw_endpoint_free(ep);
    tw_reactor_free(client.reactor);
    return client.status;
}
