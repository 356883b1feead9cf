/* The part of the clean check that needs only the deferred layer. */
#include <twine/deferred.h>
#include <twine/error.h>
#include <twine/testing.h>

#include <stdio.h>

static size_t unhandled_at_begin;

void tw_testing_begin(void)
{
    unhandled_at_begin = tw_deferred_unhandled_count();
}

int tw_testing_check_unhandled(char *why, size_t size)
{
    size_t now = tw_deferred_unhandled_count();
    if (now == unhandled_at_begin) {
        if (size)
            why[0] = '\0';
        return 0;
    }
    snprintf(why, size, "%zu unhandled failure(s) logged (\"Unhandled error in Deferred\")",
             now - unhandled_at_begin);
    return TW_EBUSY;
}
