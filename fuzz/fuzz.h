/* What every fuzz target shares: libFuzzer's entry point (declared, since
 * the build wants a prototype for every non-static function) and CHECK, an
 * invariant whose breaking must stop the fuzzer (a trap, which libFuzzer
 * reports as a crash with the input that caused it). */
#ifndef TWINE_FUZZ_H
#define TWINE_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

#endif
