/* Allocation hooks. Every allocation Twine makes goes through these, so an
 * application can supply its own allocator and tests can fail the Nth call
 * (see tw_testing_fail_alloc_after in testing.h).
 *
 * Twine never treats a failed allocation as fatal: the function that needed
 * the memory returns TW_ENOMEM (or NULL where documented) and leaves its
 * objects as they were. */
#ifndef TWINE_ALLOC_H
#define TWINE_ALLOC_H

#include <stddef.h>

/* Releases what it is given: the owner's half of a value handed around
 * (tw_result, zero-copy writes). */
typedef void (*tw_release_fn)(void *value);

typedef struct tw_allocator {
    void *(*malloc)(size_t size);
    void *(*calloc)(size_t count, size_t size);
    void *(*realloc)(void *ptr, size_t size);
    void (*free)(void *ptr);
} tw_allocator;

/* Replaces the allocator process-wide; NULL restores libc's. Call it before any
 * Twine object exists (memory must be freed by the allocator that made it).
 * Returns 0, or TW_EINVAL if a member is NULL. Not thread-safe. */
int tw_set_allocator(const tw_allocator *allocator);

void *tw_malloc(size_t size);
void *tw_calloc(size_t count, size_t size); /* overflow-checked */
void *tw_realloc(void *ptr, size_t size);
void tw_free(void *ptr);

/* Duplicates a NUL-terminated string with tw_malloc; NULL on failure. */
char *tw_strdup(const char *s);

/* Formats into a new tw_malloc'd string; NULL on failure. */
char *tw_asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
