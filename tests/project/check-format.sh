#!/bin/sh
# Fails when a tracked C file does not follow .clang-format.
set -eu
cd "$1"
command -v clang-format >/dev/null || { echo "clang-format not installed: skipped"; exit 0; }
files=$(git ls-files '*.c' '*.h' 2>/dev/null || find src include tests bench fuzz examples -name '*.[ch]')
clang-format --dry-run -Werror $files
echo "format: $(echo "$files" | wc -w) files follow .clang-format"
