/* The failing allocator: counts allocations and fails them past a limit. */
#include <twine/alloc.h>
#include <twine/testing.h>

#include <stdatomic.h>
#include <stdlib.h>

static atomic_long allocations;
static atomic_long live;           /* made through the counting allocator and not yet freed */
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

static void *counted(void *p)
{
    if (p)
        atomic_fetch_add(&live, 1);
    return p;
}

static void *counting_malloc(size_t size)
{
    return allowed() ? counted(malloc(size)) : NULL;
}
static void *counting_calloc(size_t count, size_t size)
{
    return allowed() ? counted(calloc(count, size)) : NULL;
}
static void *counting_realloc(void *ptr, size_t size)
{
    if (!allowed())
        return NULL;
    void *p = realloc(ptr, size);
    return ptr ? p : counted(p);
}
static void counting_free(void *ptr)
{
    if (ptr)
        atomic_fetch_sub(&live, 1);
    free(ptr);
}

static const tw_allocator counting = {counting_malloc, counting_calloc, counting_realloc,
                                      counting_free};
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

bool tw_testing_fail_alloc_armed(void)
{
    return atomic_load(&remaining) >= 0;
}

long tw_testing_alloc_live(void)
{
    install();
    return atomic_load(&live);
}

long tw_testing_alloc_count(void)
{
    install();
    return atomic_load(&allocations);
}
