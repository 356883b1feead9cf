/* The echo client again, written as a coroutine: connect, then for each
 * message send it and wait for its echo, then close — one function, top to
 * bottom, where echo-client.c spreads the same over three callbacks.
 *
 *     coro-echo-client ENDPOINT MESSAGE...   e.g. coro-echo-client tcp:localhost:8000 hi there
 *
 * ENDPOINT is a client endpoint description ("tcp:HOST:PORT", "unix:PATH",
 * "tls:HOST:PORT:trustRoots=ca.pem"). Prints "Connected.", then "Server said:
 * MESSAGE" for each echo, then "Connection closed - goodbye!". If no
 * connection can be made: "Connection failed - goodbye!" and why on stderr,
 * exit status 1 (2 for a bad description). A connection that ends before
 * every echo came back says why on stderr, exit status 1. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <twine/coro-stream.h>
#include <twine/task.h>
#include <twine/twine.h>

struct job {
    tw_reactor *reactor;
    const char *endpoint;
    char **messages;
    int count;
};

/* Says why on stderr and gives the exit status to tw_react. */
static tw_result give_up(tw_failure *why)
{
    fprintf(stderr, "coro-echo-client: %s\n", tw_failure_message(why));
    int status = tw_failure_code(why) == TW_EINVAL ? 2 : 1;
    tw_failure_unref(why);
    return tw_react_exit(status);
}

static tw_result echo_all(void *arg)
{
    struct job *job = arg;
    tw_coro_stream *s;
    tw_failure *why;
    if (tw_await_connect(job->reactor, job->endpoint, &s, &why) < 0) {
        printf("Connection failed - goodbye!\n");
        return give_up(why);
    }
    printf("Connected.\n");
    for (int i = 0; i < job->count; i++) {
        size_t len = strlen(job->messages[i]);
        char *echo = malloc(len + 1);
        ssize_t got = echo ? tw_await_write(s, job->messages[i], len) : TW_ENOMEM;
        if (got == 0)
            got = tw_await_read_exactly(s, echo, len);
        if (got != (ssize_t)len) { /* the connection ended, or worse */
            tw_failure *f = tw_coro_stream_failure(s);
            int code = got < 0 ? (int)got : TW_ECONNDONE;
            why = tw_failure_new(code, f ? tw_failure_ref(f) : NULL,
                                 "the connection ended before the echo of message %d: %s", i + 1,
                                 f ? tw_failure_message(f) : tw_strerror(code));
            free(echo);
            tw_coro_stream_free(s);
            return give_up(why);
        }
        printf("Server said: %.*s\n", (int)len, echo);
        free(echo);
    }
    int rc = tw_await_close(s);
    printf("Connection closed - goodbye!\n");
    if (rc < 0)
        return give_up(tw_failure_new(rc, NULL, "the connection did not end cleanly"));
    return tw_result_ok(NULL, NULL);
}

static tw_deferred *start(tw_reactor *r, void *arg)
{
    struct job *job = arg;
    job->reactor = r;
    return tw_coro_start(r, echo_all, job, NULL);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s ENDPOINT MESSAGE...\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct job job = {.endpoint = argv[1], .messages = argv + 2, .count = argc - 2};
    return tw_react(start, &job, NULL); /* runs the reactor until the coroutine returns */
}
