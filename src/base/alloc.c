#include <twine/alloc.h>
#include <twine/error.h>

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *libc_calloc(size_t count, size_t size)
{
    return calloc(count, size);
}

static const tw_allocator libc_allocator = {malloc, libc_calloc, realloc, free};
static tw_allocator current = {malloc, libc_calloc, realloc, free};

int tw_set_allocator(const tw_allocator *allocator)
{
    if (!allocator) {
        current = libc_allocator;
        return 0;
    }
    if (!allocator->malloc || !allocator->calloc || !allocator->realloc || !allocator->free)
        return TW_EINVAL;
    current = *allocator;
    return 0;
}

void *tw_malloc(size_t size)
{
    return current.malloc(size ? size : 1);
}

void *tw_calloc(size_t count, size_t size)
{
    if (size && count > SIZE_MAX / size)
        return NULL;
    return current.calloc(count ? count : 1, size ? size : 1);
}

void *tw_realloc(void *ptr, size_t size)
{
    return current.realloc(ptr, size ? size : 1);
}

void tw_free(void *ptr)
{
    if (ptr)
        current.free(ptr);
}

char *tw_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *copy = tw_malloc(n);
    if (copy)
        memcpy(copy, s, n);
    return copy;
}

char *tw_asprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return NULL;
    char *s = tw_malloc((size_t)n + 1);
    if (!s)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}
