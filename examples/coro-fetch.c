/* Fetches what a server sends until it closes, written as a coroutine: one
 * loop of awaited reads. Writes the bytes to stdout as they come, then says
 * on stderr how many and how long it took.
 *
 *     coro-fetch ENDPOINT          e.g.  coro-fetch tcp:localhost:8017 (a QOTD server)
 *
 * stderr ends with "coro-fetch: N bytes in S.SSS s". If no connection can be
 * made, or it ends otherwise than cleanly, says why on stderr, exit status 1
 * (2 for a bad description). */
#include <stdio.h>

#include <twine/coro-stream.h>
#include <twine/task.h>
#include <twine/twine.h>

static tw_result give_up(tw_failure *why)
{
    fprintf(stderr, "coro-fetch: %s\n", tw_failure_message(why));
    int status = tw_failure_code(why) == TW_EINVAL ? 2 : 1;
    tw_failure_unref(why);
    return tw_react_exit(status);
}

static tw_result fetch(void *arg)
{
    const char *endpoint = arg;
    tw_reactor *r = tw_coro_reactor(tw_coro_current());
    double start = tw_reactor_seconds(r);
    tw_coro_stream *s;
    tw_failure *why;
    if (tw_await_connect(r, endpoint, &s, &why) < 0)
        return give_up(why);
    size_t total = 0;
    ssize_t n;
    char buf[16384];
    while ((n = tw_await_read(s, buf, sizeof buf)) > 0) {
        fwrite(buf, 1, (size_t)n, stdout);
        total += (size_t)n;
    }
    fflush(stdout);
    fprintf(stderr, "coro-fetch: %zu bytes in %.3f s\n", total, tw_reactor_seconds(r) - start);
    if (n < 0) { /* not a clean end: say why */
        tw_failure *f = tw_coro_stream_failure(s);
        why = tw_failure_new((int)n, f ? tw_failure_ref(f) : NULL, "the connection broke: %s",
                             f ? tw_failure_message(f) : tw_strerror((int)n));
        tw_coro_stream_free(s);
        return give_up(why);
    }
    tw_coro_stream_free(s);
    return tw_result_ok(NULL, NULL);
}

static tw_deferred *start(tw_reactor *r, void *endpoint)
{
    return tw_coro_start(r, fetch, endpoint, NULL);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s ENDPOINT\n", argv[0]);
        return 2;
    }
    return tw_react(start, argv[1], NULL);
}
