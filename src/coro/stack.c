/* Coroutine stacks (see stack.h and coro.h).
 *
 * One mapping per stack: a PROT_NONE guard page at the bottom, the stack
 * above it. Mapping is lazy, so the size asked for costs address space; the
 * kernel commits a page when the coroutine first touches it.
 *
 * The pool is a per-thread list threaded through the pooled stacks
 * themselves (a node at the top of each, where the finished coroutine's
 * first frames were, so the page is committed already): keeping a stack
 * allocates nothing, and leak checkers, which look at the heap, have nothing
 * to report about it. A thread's pool is unmapped when the thread exits
 * (a pthread key's destructor). */
#include "coro/stack.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <twine/error.h>
#include <twine/log.h>

#include "coro/sanitizer.h"

#define NS "twine.coro"

struct pooled {
    struct pooled *next;
    struct tw__coro_stack s;
};

static _Thread_local struct pooled *pool;
static _Thread_local size_t pooled_count, mapped_count, reused_count;
static _Thread_local bool exit_hook_set;

static atomic_long fail_after = -1;

static pthread_once_t key_once = PTHREAD_ONCE_INIT;
static pthread_key_t exit_key;
static bool exit_key_ok;

static size_t page_size(void)
{
    static atomic_size_t cached;
    size_t p = atomic_load_explicit(&cached, memory_order_relaxed);
    if (!p) {
        long v = sysconf(_SC_PAGESIZE);
        p = v > 0 ? (size_t)v : 4096;
        atomic_store_explicit(&cached, p, memory_order_relaxed);
    }
    return p;
}

size_t tw__coro_stack_round(size_t requested)
{
    if (requested == 0)
        requested = TW__CORO_STACK_DEFAULT;
    if (requested > TW_CORO_STACK_MAX)
        return 0;
    if (requested < TW_CORO_STACK_MIN)
        requested = TW_CORO_STACK_MIN;
    size_t page = page_size();
    return (requested + page - 1) / page * page;
}

static void unmap(struct tw__coro_stack *s)
{
    tw__valgrind_stack_deregister(s->vg_id);
    tw__asan_unpoison(s->lo, s->size);
    munmap(s->map, s->map_len);
    mapped_count--;
}

static void thread_exit(void *unused)
{
    (void)unused;
    tw_coro_pool_trim();
}

static void make_exit_key(void)
{
    exit_key_ok = pthread_key_create(&exit_key, thread_exit) == 0;
}

int tw__coro_stack_get(struct tw__coro_stack *s, size_t size)
{
    for (struct pooled **p = &pool; *p; p = &(*p)->next) {
        if ((*p)->s.size != size)
            continue;
        struct pooled *hit = *p;
        *p = hit->next;
        *s = hit->s;
        pooled_count--;
        reused_count++;
        return 0;
    }
    long left = atomic_load(&fail_after);
    if (left == 0)
        return TW_ENOMEM;
    if (left > 0)
        atomic_fetch_sub(&fail_after, 1);

    size_t page = page_size();
    size_t len = size + page;
    void *map =
        mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (map == MAP_FAILED) {
        tw_log_debug(NS, "cannot map a coroutine stack of %zu bytes: %s", size, strerror(errno));
        return TW_ENOMEM;
    }
    if (mprotect(map, page, PROT_NONE) < 0) {
        tw_log_debug(NS, "cannot protect a coroutine stack's guard page: %s", strerror(errno));
        munmap(map, len);
        return TW_ENOMEM;
    }
    s->map = map;
    s->map_len = len;
    s->lo = (char *)map + page;
    s->size = size;
    s->vg_id = tw__valgrind_stack_register(s->lo, (char *)s->lo + size);
    mapped_count++;
    return 0;
}

void tw__coro_stack_put(struct tw__coro_stack *s)
{
    if (pooled_count >= TW_CORO_POOL_MAX) {
        unmap(s);
        return;
    }
    tw__asan_unpoison(s->lo, s->size);
    uintptr_t top = (uintptr_t)s->lo + s->size;
    struct pooled *node = (struct pooled *)((top - sizeof *node) & ~(uintptr_t)15);
    node->s = *s;
    node->next = pool;
    pool = node;
    pooled_count++;
    if (!exit_hook_set) {
        pthread_once(&key_once, make_exit_key);
        if (exit_key_ok && pthread_setspecific(exit_key, (void *)1) == 0)
            exit_hook_set = true;
    }
}

size_t tw_coro_pool_trim(void)
{
    size_t n = 0;
    while (pool) {
        struct pooled *node = pool;
        pool = node->next;
        struct tw__coro_stack s = node->s; /* the node lives in the stack */
        unmap(&s);
        n++;
    }
    pooled_count = 0;
    return n;
}

void tw__coro_stack_stats(tw_coro_stats *out)
{
    out->stacks_mapped = mapped_count;
    out->stacks_pooled = pooled_count;
    out->stacks_reused = reused_count;
}

void tw__coro_stack_fail_after(long n)
{
    atomic_store(&fail_after, n < 0 ? -1 : n);
}
