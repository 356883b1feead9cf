/* The echo server of the seeds: every byte a client sends comes back.
 *
 *     echo-server ENDPOINT [--quiet]      e.g.  echo-server tcp:8000
 *
 * ENDPOINT is any server endpoint description ("tcp:8000",
 * "tcp6:8000:interface=\:\:1", "unix:/tmp/echo.sock", "systemd:domain=INET:index=0",
 * "haproxy:tcp:8000"). As in the seed, each connection prints "Connection made.",
 * "Data received: b'...'" and "Connection lost: ..."; --quiet prints nothing per
 * connection (for benchmarks). Ctrl-C stops it cleanly.
 *
 * What to read here: a protocol is a struct whose first member is a
 * tw_protocol, with an ops table of the events it cares about; a factory
 * builds one per connection (the default factory allocates it); an endpoint
 * turns the description into a listening port. */
#include <stdio.h>
#include <string.h>

#include <twine/protocol.h>

#include "serve.h"

/* Prints bytes the way Python prints a bytes object: b'...' with escapes. */
static void print_bytes(const char *data, size_t len)
{
    fputs("b'", stdout);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)data[i];
        if (c == '\\' || c == '\'')
            printf("\\%c", c);
        else if (c == '\n')
            fputs("\\n", stdout);
        else if (c == '\r')
            fputs("\\r", stdout);
        else if (c == '\t')
            fputs("\\t", stdout);
        else if (c < 0x20 || c >= 0x7f)
            printf("\\x%02x", c);
        else
            putchar(c);
    }
    putchar('\'');
}

static void echo_made(tw_protocol *p)
{
    (void)p;
    printf("Connection made.\n");
}

static void echo_data(tw_protocol *p, const char *data, size_t len)
{
    fputs("Data received: ", stdout);
    print_bytes(data, len);
    putchar('\n');
    tw_transport_write(p->transport, data, len);
}

static void echo_lost(tw_protocol *p, tw_failure *reason)
{
    (void)p;
    printf("Connection lost: %s\n", tw_failure_message(reason));
}

static void quiet_data(tw_protocol *p, const char *data, size_t len)
{
    tw_transport_write(p->transport, data, len);
}

static const tw_protocol_ops echo_ops = {
    .connection_made = echo_made,
    .data_received = echo_data,
    .connection_lost = echo_lost,
};

static const tw_protocol_ops quiet_echo_ops = {.data_received = quiet_data};

int main(int argc, char **argv)
{
    bool quiet = argc == 3 && strcmp(argv[2], "--quiet") == 0;
    if (argc < 2 || (argc == 3 && !quiet) || argc > 3) {
        fprintf(stderr, "usage: %s ENDPOINT [--quiet]\n", argv[0]);
        return 2;
    }
    tw_factory factory;
    tw_factory_init(&factory, NULL, quiet ? &quiet_echo_ops : &echo_ops, 0, NULL);
    return serve("echo-server", argv[1], &factory);
}
