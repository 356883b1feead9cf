/* What AddressSanitizer and valgrind need to hear about stacks that are not
 * the thread's own. Everything here compiles to nothing in a plain build
 * (valgrind's client requests are a few no-op instructions outside valgrind).
 *
 * ASan keeps a shadow of every stack and, with detect_stack_use_after_return,
 * a "fake stack" per stack for frames whose locals escape. Around each switch
 * it must be told where execution is going (start_switch_fiber, with the
 * bounds of the stack about to run) and, once there, that it arrived
 * (finish_switch_fiber, which also reports the bounds of the stack it came
 * from). A fiber that will never run again passes NULL to start so its fake
 * stack is freed. */
#ifndef TWINE_SRC_CORO_SANITIZER_H
#define TWINE_SRC_CORO_SANITIZER_H

#include <stddef.h>

#if defined(__SANITIZE_ADDRESS__)
#define TW__ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TW__ASAN 1
#endif
#endif

#ifdef TW__ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>

static inline void tw__asan_start_switch(void **fake_stack_save, const void *bottom, size_t size)
{
    __sanitizer_start_switch_fiber(fake_stack_save, bottom, size);
}
static inline void tw__asan_finish_switch(void *fake_stack_save, const void **bottom_old,
                                          size_t *size_old)
{
    __sanitizer_finish_switch_fiber(fake_stack_save, bottom_old, size_old);
}
/* A stack's frames that never returned (the coroutine's entry, the frame
 * parked in the switch) leave poisoned redzones in the shadow: clear them
 * before the memory runs something else. */
static inline void tw__asan_unpoison(void *p, size_t size)
{
    __asan_unpoison_memory_region(p, size);
}
#else
static inline void tw__asan_start_switch(void **fake_stack_save, const void *bottom, size_t size)
{
    (void)fake_stack_save;
    (void)bottom;
    (void)size;
}
static inline void tw__asan_finish_switch(void *fake_stack_save, const void **bottom_old,
                                          size_t *size_old)
{
    (void)fake_stack_save;
    (void)bottom_old;
    (void)size_old;
}
static inline void tw__asan_unpoison(void *p, size_t size)
{
    (void)p;
    (void)size;
}
#endif

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define TW__VALGRIND 1
#endif
#endif

static inline unsigned tw__valgrind_stack_register(void *lo, void *hi)
{
#ifdef TW__VALGRIND
    return VALGRIND_STACK_REGISTER(lo, hi);
#else
    (void)lo;
    (void)hi;
    return 0;
#endif
}

/* True under valgrind (tests skip what it changes: RSS, crashing on purpose). */
static inline int tw__running_on_valgrind(void)
{
#ifdef TW__VALGRIND
    return RUNNING_ON_VALGRIND;
#else
    return 0;
#endif
}

static inline void tw__valgrind_stack_deregister(unsigned id)
{
#ifdef TW__VALGRIND
    VALGRIND_STACK_DEREGISTER(id);
#else
    (void)id;
#endif
}

#endif
