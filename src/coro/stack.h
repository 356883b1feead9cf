/* Coroutine stacks: mmap'd with a guard page below, registered with
 * valgrind, recycled through a per-thread pool (see coro.h, "Stacks"). */
#ifndef TWINE_SRC_CORO_STACK_H
#define TWINE_SRC_CORO_STACK_H

#include <stdbool.h>
#include <stddef.h>

#include <twine/coro.h>

#include "coro/sanitizer.h"

/* The default size (coro.h says why 64 KiB); ASan's redzones make frames
 * several times bigger. */
#ifdef TW__ASAN
#define TW__CORO_STACK_DEFAULT (256 * 1024)
#else
#define TW__CORO_STACK_DEFAULT (64 * 1024)
#endif

struct tw__coro_stack {
    void *lo;    /* lowest usable byte (just above the guard page) */
    size_t size; /* usable bytes, a whole number of pages */
    void *map;   /* the mapping: the guard page, then the stack */
    size_t map_len;
    unsigned vg_id; /* valgrind's id for the registered stack */
};

/* The usable size for a requested one: 0 means the default; rounded up to
 * pages and to at least TW_CORO_STACK_MIN. 0 when above TW_CORO_STACK_MAX. */
size_t tw__coro_stack_round(size_t requested);

/* A stack of `size` bytes (already rounded), from the pool or a new mapping.
 * Returns 0, or TW_ENOMEM when the kernel would not map it (logged at debug
 * with its errno). */
int tw__coro_stack_get(struct tw__coro_stack *s, size_t size);

/* Gives a stack back: to the pool while it has room, else unmapped. Nothing
 * may run on it any more. */
void tw__coro_stack_put(struct tw__coro_stack *s);

/* Counters for tw_coro_get_stats (live coroutines are coro.c's). */
void tw__coro_stack_stats(tw_coro_stats *out);

/* Tests: after n more stacks are mapped, mapping fails (as if mmap had
 * refused) until n < 0 turns it off. Pool hits do not count. */
void tw__coro_stack_fail_after(long n);

#endif
