/* The logging server of the seeds: every line a client sends is appended to a
 * file. The factory opens the file when it starts (before the first port
 * uses it) and closes it when it stops (after the last port stops: here, at
 * Ctrl-C), Twisted's startFactory / stopFactory.
 *
 *     logging-server ENDPOINT FILE        e.g.  logging-server tcp:8007 /tmp/log.txt
 *
 * Lines end with "\r\n" (LineReceiver's default delimiter); each is written
 * to the file followed by "\n". */
#include <stdio.h>

#include <twine/basic.h>
#include <twine/log.h>

#include "serve.h"

struct log_file {
    const char *path;
    FILE *fp;
};

struct logging_protocol {
    tw_line_receiver lr; /* first: the line receiver does the framing */
};

static void line_received(tw_protocol *p, const char *line, size_t len)
{
    struct log_file *log = p->factory->data;
    fwrite(line, 1, len, log->fp);
    fputc('\n', log->fp);
    fflush(log->fp); /* a line is in the file once the peer has sent it */
}

static const tw_line_receiver_ops logging_ops = {
    .protocol = TW_LINE_RECEIVER_PROTOCOL_OPS,
    .line_received = line_received,
};

static void start_factory(tw_factory *f)
{
    struct log_file *log = f->data;
    log->fp = fopen(log->path, "a");
    if (!log->fp)
        tw_log_error("logging-server", "cannot open %s", log->path);
}

static void stop_factory(tw_factory *f)
{
    struct log_file *log = f->data;
    if (log->fp)
        fclose(log->fp);
    log->fp = NULL;
}

static tw_protocol *build_protocol(tw_factory *f, const tw_address *addr)
{
    struct log_file *log = f->data;
    return log->fp ? tw_factory_build_default(f, addr) : NULL; /* no file: refuse */
}

static const tw_factory_ops logging_factory_ops = {
    .build_protocol = build_protocol,
    .start_factory = start_factory,
    .stop_factory = stop_factory,
};

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s ENDPOINT FILE\n", argv[0]);
        return 2;
    }
    struct log_file log = {.path = argv[2]};
    tw_factory factory;
    tw_factory_init(&factory, &logging_factory_ops, &logging_ops.protocol,
                    sizeof(struct logging_protocol), &log);
    return serve("logging-server", argv[1], &factory);
}
