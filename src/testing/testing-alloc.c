/* The failing allocator: counts allocations and fails them past a limit. */
#include <twine/alloc.h>
#include <twine/testing.h>

#include <stdatomic.h>
#include <stdlib.h>

static atomic_long allocations;
static atomic_long remaining = -1; /* < 0: never fail */

static bool allowed(void)
{
    atomic_fetch_add(&allocations, 1);
    long left = atomic_load(&remaining);
    while (left >= 0) {
        if (left == 0)
            return false;
        if (atomic_compare_exchange_weak(&remaining, &left, left - 1))
            return true;
    }
    return true;
}

static void *counting_malloc(size_t size)
{
    return allowed() ? malloc(size) : NULL;
}
static void *counting_calloc(size_t count, size_t size)
{
    return allowed() ? calloc(count, size) : NULL;
}
static void *counting_realloc(void *ptr, size_t size)
{
    return allowed() ? realloc(ptr, size) : NULL;
}

static const tw_allocator counting = {counting_malloc, counting_calloc, counting_realloc, free};
static atomic_bool installed;

static void install(void)
{
    if (!atomic_exchange(&installed, true))
        tw_set_allocator(&counting);
}

void tw_testing_fail_alloc_after(long n)
{
    install();
    atomic_store(&remaining, n < 0 ? 0 : n);
}

void tw_testing_fail_alloc_off(void)
{
    atomic_store(&remaining, -1);
}

long tw_testing_alloc_count(void)
{
    install();
    return atomic_load(&allocations);
}
