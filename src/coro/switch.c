/* The context switch (see switch.h): assembly on x86-64 and aarch64,
 * swapcontext elsewhere.
 *
 * A suspended context's stack holds, from its saved stack pointer up, the
 * callee-saved registers and then the address to return to. A new context
 * is made to look like one that was suspended just before calling
 * tw__ctx_start: its "saved registers" carry entry and arg, and the switch's
 * return lands in tw__ctx_start, which moves them into place and calls
 * entry(arg) with the stack aligned as the ABI wants (16 bytes at the call).
 * tw__ctx_start marks the return address undefined in its unwind info so a
 * debugger's backtrace of a coroutine stops there instead of wandering off
 * the top of the stack. */
#include "coro/switch.h"

#include <stdint.h>

#ifndef TW__CORO_UCONTEXT

const char tw__ctx_kind[] = "asm";

__attribute__((visibility("hidden"))) void tw__ctx_start(void);

#if defined(__x86_64__)

/* Indirect-branch tracking wants an end-branch at every address reached
 * indirectly; harmless (a NOP) where it is off. */
#if defined(__CET__) && (__CET__ & 1)
#define TW__ENDBR "endbr64\n"
#else
#define TW__ENDBR ""
#endif

/* rdi = from, rsi = to. Saved frame, from the stack pointer up: r15 r14 r13
 * r12 rbx rbp, then the return address. */
__asm__(".text\n"
        ".globl tw__ctx_switch\n"
        ".hidden tw__ctx_switch\n"
        ".type tw__ctx_switch,@function\n"
        ".p2align 4\n"
        "tw__ctx_switch:\n"
        ".cfi_startproc\n" TW__ENDBR "pushq %rbp\n"
        ".cfi_adjust_cfa_offset 8\n"
        "pushq %rbx\n"
        ".cfi_adjust_cfa_offset 8\n"
        "pushq %r12\n"
        ".cfi_adjust_cfa_offset 8\n"
        "pushq %r13\n"
        ".cfi_adjust_cfa_offset 8\n"
        "pushq %r14\n"
        ".cfi_adjust_cfa_offset 8\n"
        "pushq %r15\n"
        ".cfi_adjust_cfa_offset 8\n"
        "movq %rsp, (%rdi)\n"
        "movq (%rsi), %rsp\n"
        "popq %r15\n"
        "popq %r14\n"
        "popq %r13\n"
        "popq %r12\n"
        "popq %rbx\n"
        "popq %rbp\n"
        ".cfi_adjust_cfa_offset -48\n"
        "ret\n"
        ".cfi_endproc\n"
        ".size tw__ctx_switch, .-tw__ctx_switch\n"
        "\n"
        ".globl tw__ctx_start\n"
        ".hidden tw__ctx_start\n"
        ".type tw__ctx_start,@function\n"
        ".p2align 4\n"
        "tw__ctx_start:\n"
        ".cfi_startproc\n"
        ".cfi_undefined rip\n" TW__ENDBR "movq %r13, %rdi\n"
        "callq *%r12\n"
        "ud2\n"
        ".cfi_endproc\n"
        ".size tw__ctx_start, .-tw__ctx_start\n");

void tw__ctx_make(tw__ctx *ctx, void *lo, size_t size, tw__ctx_entry entry, void *arg)
{
    uintptr_t top = ((uintptr_t)lo + size) & ~(uintptr_t)15;
    /* 16 bytes of zeros at the top, then the return address at top - 24: after
     * the switch's ret pops it, the stack pointer is top - 16, 16-aligned, as
     * it must be at tw__ctx_start's call. */
    uint64_t *sp = (uint64_t *)(top - 16);
    *(sp + 0) = 0;
    *(sp + 1) = 0;
    *--sp = (uint64_t)(uintptr_t)tw__ctx_start;
    *--sp = 0;                          /* rbp: the end of the frame-pointer chain */
    *--sp = 0;                          /* rbx */
    *--sp = (uint64_t)(uintptr_t)entry; /* r12 */
    *--sp = (uint64_t)(uintptr_t)arg;   /* r13 */
    *--sp = 0;                          /* r14 */
    *--sp = 0;                          /* r15 */
    ctx->sp = sp;
}

#elif defined(__aarch64__)

/* Branch target identification wants a landing pad where it is on. */
#if defined(__ARM_FEATURE_BTI_DEFAULT) && __ARM_FEATURE_BTI_DEFAULT
#define TW__BTI_C "hint #34\n"
#else
#define TW__BTI_C ""
#endif

/* x0 = from, x1 = to. Saved frame of 160 bytes, from the stack pointer up:
 * x19..x28, x29 (frame pointer), x30 (the return address), d8..d15 (the low
 * halves of v8..v15, all AAPCS64 asks to preserve). */
__asm__(".text\n"
        ".globl tw__ctx_switch\n"
        ".hidden tw__ctx_switch\n"
        ".type tw__ctx_switch,%function\n"
        ".p2align 4\n"
        "tw__ctx_switch:\n"
        ".cfi_startproc\n" TW__BTI_C "sub sp, sp, #160\n"
        ".cfi_adjust_cfa_offset 160\n"
        "stp x19, x20, [sp, #0]\n"
        "stp x21, x22, [sp, #16]\n"
        "stp x23, x24, [sp, #32]\n"
        "stp x25, x26, [sp, #48]\n"
        "stp x27, x28, [sp, #64]\n"
        "stp x29, x30, [sp, #80]\n"
        "stp d8, d9, [sp, #96]\n"
        "stp d10, d11, [sp, #112]\n"
        "stp d12, d13, [sp, #128]\n"
        "stp d14, d15, [sp, #144]\n"
        "mov x9, sp\n"
        "str x9, [x0]\n"
        "ldr x9, [x1]\n"
        "mov sp, x9\n"
        "ldp x19, x20, [sp, #0]\n"
        "ldp x21, x22, [sp, #16]\n"
        "ldp x23, x24, [sp, #32]\n"
        "ldp x25, x26, [sp, #48]\n"
        "ldp x27, x28, [sp, #64]\n"
        "ldp x29, x30, [sp, #80]\n"
        "ldp d8, d9, [sp, #96]\n"
        "ldp d10, d11, [sp, #112]\n"
        "ldp d12, d13, [sp, #128]\n"
        "ldp d14, d15, [sp, #144]\n"
        "add sp, sp, #160\n"
        ".cfi_adjust_cfa_offset -160\n"
        "ret\n"
        ".cfi_endproc\n"
        ".size tw__ctx_switch, .-tw__ctx_switch\n"
        "\n"
        ".globl tw__ctx_start\n"
        ".hidden tw__ctx_start\n"
        ".type tw__ctx_start,%function\n"
        ".p2align 4\n"
        "tw__ctx_start:\n"
        ".cfi_startproc\n"
        ".cfi_undefined x30\n"
        "mov x0, x20\n"
        "blr x19\n"
        "brk #1\n"
        ".cfi_endproc\n"
        ".size tw__ctx_start, .-tw__ctx_start\n");

void tw__ctx_make(tw__ctx *ctx, void *lo, size_t size, tw__ctx_entry entry, void *arg)
{
    uintptr_t top = ((uintptr_t)lo + size) & ~(uintptr_t)15;
    uint64_t *frame = (uint64_t *)(top - 160); /* the switch's frame; sp = top after it */
    for (int i = 0; i < 20; i++)
        frame[i] = 0;
    frame[0] = (uint64_t)(uintptr_t)entry;          /* x19 */
    frame[1] = (uint64_t)(uintptr_t)arg;            /* x20 */
    frame[10] = 0;                                  /* x29: the end of the frame-pointer chain */
    frame[11] = (uint64_t)(uintptr_t)tw__ctx_start; /* x30: where the switch returns */
    ctx->sp = frame;
}

#endif

#else /* TW__CORO_UCONTEXT */

const char tw__ctx_kind[] = "ucontext";

/* makecontext passes int arguments only: the pointers travel in halves. */
static void ctx_trampoline(unsigned entry_hi, unsigned entry_lo, unsigned arg_hi, unsigned arg_lo)
{
    uintptr_t e = ((uintptr_t)entry_hi << 16 << 16) | entry_lo;
    uintptr_t a = ((uintptr_t)arg_hi << 16 << 16) | arg_lo;
    tw__ctx_entry entry = (tw__ctx_entry)e;
    entry((void *)a);
}

void tw__ctx_make(tw__ctx *ctx, void *lo, size_t size, tw__ctx_entry entry, void *arg)
{
    uintptr_t e = (uintptr_t)entry, a = (uintptr_t)arg;
    getcontext(&ctx->uc);
    ctx->uc.uc_stack.ss_sp = lo;
    ctx->uc.uc_stack.ss_size = size;
    ctx->uc.uc_link = NULL;
    makecontext(&ctx->uc, (void (*)(void))ctx_trampoline, 4, (unsigned)(e >> 16 >> 16), (unsigned)e,
                (unsigned)(a >> 16 >> 16), (unsigned)a);
}

void tw__ctx_switch(tw__ctx *from, tw__ctx *to)
{
    swapcontext(&from->uc, &to->uc);
}

#endif
