/* The context switch run where it cannot run natively: built freestanding
 * (no C library) for another architecture and run under qemu-user by
 * check-switch-cross.sh. Ping-pongs between _start's stack and a context
 * made with tw__ctx_make, keeping integer and floating-point values live
 * across every switch (at -O2 they sit in callee-saved registers: x19-x28,
 * d8-d15 on aarch64), and exits 0 only if every one survived. */
#include "coro/switch.h"

#define ROUNDS 100000

static tw__ctx main_ctx, co_ctx;
static unsigned char stack[64 * 1024] __attribute__((aligned(16)));
static volatile long bounced;

static void co_entry(void *arg)
{
    long step = *(long *)arg;
    double f = 0.5;
    for (;;) {
        bounced += step;
        f *= 1.0000001; /* clobbers floating-point registers on this side */
        tw__ctx_switch(&co_ctx, &main_ctx);
        if (f < 0)
            bounced = -1;
    }
}

static long check(void)
{
    long step = 3;
    tw__ctx_make(&co_ctx, stack, sizeof stack, co_entry, &step);
    long a = 11, b = 22, c = 33, d = 44, e = 55, g = 66, h = 77, i2 = 88, j = 99, k = 111;
    double x = 1.5, y = 2.5, z = 3.5, w = 4.5, u = 5.5, v = 6.5, s = 7.5, t = 8.5;
    for (long n = 1; n <= ROUNDS; n++) {
        tw__ctx_switch(&main_ctx, &co_ctx);
        if (bounced != 3 * n)
            return 1;
        a += 1, b += 2, c += 3, d += 4, e += 5, g += 6, h += 7, i2 += 8, j += 9, k += 10;
        x += 1, y += 2, z += 3, w += 4, u += 5, v += 6, s += 7, t += 8;
    }
    long sum = a + b + c + d + e + g + h + i2 + j + k;
    long want = (11 + 22 + 33 + 44 + 55 + 66 + 77 + 88 + 99 + 111) + 55L * ROUNDS;
    double fsum = x + y + z + w + u + v + s + t;
    double fwant = 40.0 + 36.0 * ROUNDS;
    if (sum != want)
        return 2;
    if (fsum != fwant)
        return 3;
    return 0;
}

#if defined(__aarch64__)
static void sys_exit(long code)
{
    register long x0 __asm__("x0") = code;
    register long x8 __asm__("x8") = 93; /* exit */
    __asm__ volatile("svc #0" : : "r"(x0), "r"(x8) : "memory");
    for (;;)
        ;
}
#elif defined(__x86_64__)
static void sys_exit(long code)
{
    __asm__ volatile("syscall" : : "a"(60L), "D"(code) : "rcx", "r11", "memory");
    for (;;)
        ;
}
#endif

void _start(void);
void _start(void)
{
    sys_exit(check());
}
