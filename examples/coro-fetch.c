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
#include <twine/twine.h>

struct job {
    tw_reactor *reactor;
    const char *endpoint;
    int status;
    bool finished;
};

static tw_result fetch(void *arg)
{
    struct job *job = arg;
    double start = tw_reactor_seconds(job->reactor);
    tw_coro_stream *s;
    tw_failure *why;
    if (tw_await_connect(job->reactor, job->endpoint, &s, &why) < 0)
        return tw_result_fail(why);
    size_t total = 0;
    ssize_t n;
    char buf[16384];
    while ((n = tw_await_read(s, buf, sizeof buf)) > 0) {
        fwrite(buf, 1, (size_t)n, stdout);
        total += (size_t)n;
    }
    fflush(stdout);
    double took = tw_reactor_seconds(job->reactor) - start;
    fprintf(stderr, "coro-fetch: %zu bytes in %.3f s\n", total, took);
    if (n < 0) { /* not a clean end: say why */
        tw_failure *f = tw_coro_stream_failure(s);
        why = tw_failure_new((int)n, f ? tw_failure_ref(f) : NULL, "the connection broke: %s",
                             f ? tw_failure_message(f) : tw_strerror((int)n));
        tw_coro_stream_free(s);
        return tw_result_fail(why);
    }
    tw_coro_stream_free(s);
    return tw_result_from_int((intptr_t)total);
}

static tw_result finished(tw_result result, void *arg)
{
    struct job *job = arg;
    if (result.failure) {
        fprintf(stderr, "coro-fetch: %s\n", tw_failure_message(result.failure));
        job->status = tw_failure_code(result.failure) == TW_EINVAL ? 2 : 1;
        tw_result_release(&result);
    }
    job->finished = true;
    tw_reactor_stop(job->reactor);
    return tw_result_ok(NULL, NULL);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s ENDPOINT\n", argv[0]);
        return 2;
    }
    struct job job = {.endpoint = argv[1]};
    if (tw_reactor_new(&job.reactor, NULL) < 0)
        return 1;
    tw_deferred *d = tw_coro_start(job.reactor, fetch, &job, NULL);
    if (!d || tw_deferred_add_both(d, finished, &job) < 0) {
        fprintf(stderr, "coro-fetch: out of memory\n");
        job.status = 1;
        job.finished = true;
    }
    tw_deferred_unref(d);
    if (!job.finished)
        tw_reactor_run(job.reactor);
    tw_reactor_free(job.reactor);
    return job.status;
}
