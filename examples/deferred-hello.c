/* A deferred, a callback, and firing it: the first thing to read about
 * deferreds. Prints "Callback received: Hello, Deferred!".
 *
 * A tw_deferred holds a result that is not there yet. Callbacks added to it
 * run, in order, once it fires; each gets the current result and returns the
 * next one. */
#include <stdio.h>
#include <twine/twine.h>

static tw_result print_message(tw_result result, void *arg)
{
    (void)arg;
    printf("Callback received: %s\n", (const char *)result.value);
    return result; /* passed on unchanged to the next callback, if any */
}

int main(void)
{
    tw_deferred *d = tw_deferred_new(NULL, NULL);
    if (!d)
        return 1;
    tw_deferred_add_callback(d, print_message, NULL);
    /* The string is static: a borrowed result, nothing to release. */
    tw_deferred_callback(d, tw_result_borrowed("Hello, Deferred!"));
    tw_deferred_unref(d);
    return 0;
}
