#!/bin/sh
# Builds the context switch for aarch64 (clang, freestanding: no aarch64 C
# library needed) with a small driver, and runs it under qemu-aarch64.
# Skips (exit 0, says so) when clang, ld.lld or qemu-aarch64 is missing.
# Usage: check-switch-cross.sh SOURCE_DIR
set -eu
src=$1
for tool in clang ld.lld qemu-aarch64; do
    command -v "$tool" >/dev/null || { echo "$tool not installed: aarch64 switch check skipped"; exit 0; }
done
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for variant in "" "-mbranch-protection=standard"; do
    clang --target=aarch64-linux-gnu -ffreestanding -fno-stack-protector -O2 -std=c17 \
        -Wall -Wextra -Werror $variant -I "$src/src" \
        -c "$src/src/coro/switch.c" -o "$out/switch.o"
    clang --target=aarch64-linux-gnu -ffreestanding -fno-stack-protector -O2 -std=c17 \
        -Wall -Wextra -Werror $variant -I "$src/src" \
        -c "$src/tests/coro/cross/switch-check.c" -o "$out/check.o"
    ld.lld -static -e _start "$out/check.o" "$out/switch.o" -o "$out/check"
    qemu-aarch64 "$out/check" || { echo "aarch64 switch check failed ($variant): status $?"; exit 1; }
    echo "aarch64 switch: 100000 round trips, callee-saved registers intact ${variant:-(plain)}"
done
