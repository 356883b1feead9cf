#!/bin/sh
# Runs each example under valgrind's memcheck: any leak or memory error fails.
# Usage: check-valgrind.sh BIN_DIR EXAMPLE [EXAMPLE...]
set -eu
bin=$1
shift
command -v valgrind >/dev/null || { echo "valgrind not installed: skipped"; exit 0; }
for ex in "$@"; do
    valgrind -q --leak-check=full --show-leak-kinds=definite,indirect,possible \
        --errors-for-leak-kinds=definite,indirect,possible --error-exitcode=99 \
        "$bin/$ex" >/dev/null
    echo "valgrind: $ex clean"
done
