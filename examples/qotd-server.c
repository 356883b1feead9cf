/* The QOTD server of the seeds: each client gets the quote of the day, then
 * the connection closes.
 *
 *     qotd-server ENDPOINT [QUOTE]        e.g.  qotd-server tcp:8017
 *
 * The factory holds the quote (factory.data), and each protocol reaches it
 * through its factory pointer, as Twisted's QOTD reads self.factory.quote. */
#include <stdio.h>
#include <string.h>

#include <twine/protocol.h>

#include "serve.h"

static void qotd_made(tw_protocol *p)
{
    const char *quote = p->factory->data;
    const struct iovec lines[] = {{(void *)quote, strlen(quote)}, {"\r\n", 2}};
    tw_transport_write_sequence(p->transport, lines, 2);
    tw_transport_lose_connection(p->transport); /* sends the quote first */
}

static const tw_protocol_ops qotd_ops = {.connection_made = qotd_made};

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s ENDPOINT [QUOTE]\n", argv[0]);
        return 2;
    }
    const char *quote = argc == 3 ? argv[2] : "An apple a day keeps the doctor away";

    tw_factory factory;
    tw_factory_init(&factory, NULL, &qotd_ops, 0, (void *)quote);
    return serve("qotd-server", argv[1], &factory);
}
