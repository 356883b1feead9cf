#include "twtest.h"
#include <twine/alloc.h>
#include <twine/error.h>
#include <twine/testing.h>

#include <string.h>

TW_TEST(alloc, fail_after_n)
{
    tw_testing_fail_alloc_after(2);
    void *a = tw_malloc(8), *b = tw_malloc(8), *c = tw_malloc(8);
    tw_testing_fail_alloc_off();
    cr_assert_not_null(a);
    cr_assert_not_null(b);
    cr_assert_null(c);
    void *d = tw_malloc(8);
    cr_assert_not_null(d);
    tw_free(a);
    tw_free(b);
    tw_free(d);
}

TW_TEST(alloc, counts_allocations)
{
    long before = tw_testing_alloc_count();
    char *s = tw_strdup("hello");
    char *t = tw_asprintf("%s-%d", s, 7);
    cr_assert_str_eq(t, "hello-7");
    cr_assert_eq(tw_testing_alloc_count() - before, 2);
    tw_free(s);
    tw_free(t);
}

TW_TEST(alloc, calloc_overflow_is_refused)
{
    cr_assert_null(tw_calloc((size_t)-1 / 2, 4));
}

TW_TEST(alloc, set_allocator_rejects_incomplete)
{
    tw_allocator bad = {0};
    cr_assert_eq(tw_set_allocator(&bad), TW_EINVAL);
}

TW_TEST(alloc, live_count_follows_allocations_and_frees)
{
    tw_testing_fail_alloc_off(); /* installs the counting allocator */
    long before = tw_testing_alloc_live();
    char *a = tw_malloc(8);
    char *b = tw_realloc(NULL, 8); /* realloc of NULL is an allocation */
    cr_assert_eq(tw_testing_alloc_live() - before, 2);
    a = tw_realloc(a, 64); /* moving a block is not a new one */
    cr_assert_eq(tw_testing_alloc_live() - before, 2);
    tw_free(a);
    tw_free(b);
    cr_assert_eq(tw_testing_alloc_live(), before);
    cr_assert(!tw_testing_fail_alloc_armed());
    tw_testing_fail_alloc_after(1);
    cr_assert(tw_testing_fail_alloc_armed());
    tw_testing_fail_alloc_off();
}
