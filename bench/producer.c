/* Flow control under a slow peer: a server streams 1 GiB through a push
 * producer to a client that first reads nothing for a while, then reads it
 * all. The server's memory must stay bounded (DESIGN.md: the producer is
 * paused above the high-water mark), whatever the peer does.
 *
 * The client is a child process (plain sockets, nothing of Twine), so the
 * figure is the server's alone: the peak resident memory of this process
 * (VmHWM), measured after the stall and after the whole transfer.
 * Prints one JSON line. Usage: bench-producer [MiB, default 1024] */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <twine/endpoint.h>
#include <twine/net.h>
#include <twine/testing.h>
#include <twine/twine.h>

#define CHUNK         (64 * 1024)
#define STALL_SECONDS 1.0

struct streamer {
    tw_protocol base;
    tw_producer producer;
    size_t left;
    bool paused;
    unsigned pauses;
};

static char chunk[CHUNK];
static struct streamer *the_streamer;
static bool finished;

static void produce(struct streamer *s)
{
    while (!s->paused && s->left > 0) {
        size_t n = s->left < CHUNK ? s->left : CHUNK;
        if (tw_transport_write(s->base.transport, chunk, n) < 0)
            return;
        s->left -= n;
    }
    if (s->left == 0) {
        tw_transport_unregister_producer(s->base.transport);
        tw_transport_lose_connection(s->base.transport);
    }
}

static void pause_producing(tw_producer *p)
{
    struct streamer *s = (struct streamer *)((char *)p - offsetof(struct streamer, producer));
    s->paused = true;
    s->pauses++;
}

static void resume_producing(tw_producer *p)
{
    struct streamer *s = (struct streamer *)((char *)p - offsetof(struct streamer, producer));
    s->paused = false;
    produce(s);
}

static const tw_producer_ops streamer_producer_ops = {.pause_producing = pause_producing,
                                                      .resume_producing = resume_producing};

static void streamer_made(tw_protocol *p)
{
    struct streamer *s = (struct streamer *)p;
    s->left = *(size_t *)p->factory->data;
    s->producer.ops = &streamer_producer_ops;
    the_streamer = s;
    tw_transport_register_producer(p->transport, &s->producer, true);
    produce(s);
}

static void streamer_lost(tw_protocol *p, tw_failure *reason)
{
    (void)p, (void)reason;
    finished = true;
}

static const tw_protocol_ops streamer_ops = {.connection_made = streamer_made,
                                             .connection_lost = streamer_lost};

static long peak_rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %ld kB", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return kib;
}

/* The peer: connects, stalls, then reads until end of file. */
static void client(unsigned port, size_t total)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&sin, sizeof sin) < 0)
        _exit(2);
    usleep((useconds_t)(STALL_SECONDS * 1e6));
    static char buf[1 << 20];
    size_t got = 0;
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        got += (size_t)n;
    _exit(got == total ? 0 : 3);
}

int main(int argc, char **argv)
{
    size_t total = (size_t)(argc > 1 ? atol(argv[1]) : 1024) << 20;
    memset(chunk, 'x', sizeof chunk);
    tw_reactor *r;
    if (tw_reactor_new(&r, NULL) < 0)
        return 1;
    tw_factory factory;
    tw_factory_init(&factory, NULL, &streamer_ops, sizeof(struct streamer), &total);
    tw_endpoint *ep;
    tw_endpoint_server_from_string(r, "tcp:0:interface=127.0.0.1", &ep, NULL);
    tw_deferred *d = tw_endpoint_listen(ep, &factory);
    tw_result res;
    tw_testing_run_until_fired(r, d, 5, &res);
    tw_deferred_unref(d);
    tw_listening_port *port = tw_result_take(&res);
    tw_address host;
    tw_listening_port_get_host(port, &host);
    long before = peak_rss_kib();

    pid_t child = fork();
    if (child == 0)
        client(tw_address_port(&host), total);

    double start = tw_reactor_seconds(r);
    while (tw_reactor_seconds(r) - start < STALL_SECONDS * 0.9)
        tw_reactor_iterate(r, 0.05);
    size_t queued_in_stall =
        the_streamer ? tw_transport_write_buffer_size(the_streamer->base.transport) : 0;
    long during_stall = peak_rss_kib();
    unsigned pauses = the_streamer ? the_streamer->pauses : 0;
    while (!finished)
        tw_reactor_iterate(r, 1);
    double took = tw_reactor_seconds(r) - start;
    int status;
    waitpid(child, &status, 0);

    printf("{\"bench\":\"producer\",\"bytes\":%zu,\"client_ok\":%s,\"seconds\":%.2f,"
           "\"queued_during_stall\":%zu,\"pauses_during_stall\":%u,\"rss_before_kib\":%ld,"
           "\"peak_rss_during_stall_kib\":%ld,\"peak_rss_kib\":%ld}\n",
           total, WIFEXITED(status) && WEXITSTATUS(status) == 0 ? "true" : "false", took,
           queued_in_stall, pauses, before, during_stall, peak_rss_kib());
    tw_deferred_unref(tw_listening_port_stop(port));
    tw_endpoint_free(ep);
    tw_reactor_free(r);
    return 0;
}
