/* The context switch under the coroutines (coro.c) and the benchmark.
 *
 * A context is a saved stack pointer: tw__ctx_switch pushes the callee-saved
 * registers on the current stack, stores the stack pointer in `from`, loads
 * the one in `to` and pops that stack's registers, so the call returns on the
 * other stack, into whatever switched away from it. Everything the calling
 * convention lets a call clobber is the compiler's business already, which is
 * why saving the callee-saved registers is enough. x86-64 and aarch64 (ELF)
 * have it in assembly (switch.c); other targets, or a build with
 * TWINE_CORO_UCONTEXT defined, use makecontext/swapcontext, which is correct
 * everywhere POSIX has it but makes a system call per switch (the signal
 * mask).
 *
 * This header includes nothing but freestanding ones on the assembly path,
 * so switch.c compiles for another architecture without its C library
 * (clang --target=aarch64-linux-gnu -c). */
#ifndef TWINE_SRC_CORO_SWITCH_H
#define TWINE_SRC_CORO_SWITCH_H

#include <stddef.h>

#if defined(TWINE_CORO_UCONTEXT) || !(defined(__x86_64__) || defined(__aarch64__)) ||              \
    !defined(__ELF__)
#define TW__CORO_UCONTEXT 1
#include <ucontext.h>
typedef struct tw__ctx {
    ucontext_t uc;
} tw__ctx;
#else
typedef struct tw__ctx {
    void *sp; /* the stack pointer it was left with; its registers are on that stack */
} tw__ctx;
#endif

/* What a new context runs; it must never return (switch away for good). */
typedef void (*tw__ctx_entry)(void *arg);

/* Prepares ctx so that the first switch to it runs entry(arg) on the stack
 * [lo, lo + size) (the stack grows down from lo + size). */
void tw__ctx_make(tw__ctx *ctx, void *lo, size_t size, tw__ctx_entry entry, void *arg);

/* Saves the running context in *from and continues *to; returns when
 * something switches back to *from. */
#ifdef TW__CORO_UCONTEXT
void tw__ctx_switch(tw__ctx *from, tw__ctx *to);
#else
__attribute__((visibility("hidden"))) void tw__ctx_switch(tw__ctx *from, tw__ctx *to);
#endif

/* "asm" or "ucontext": for logs and the benchmark. */
extern const char tw__ctx_kind[];

#endif
