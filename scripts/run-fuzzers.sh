#!/bin/sh
# Runs each libFuzzer target in BUILD/fuzz/ for SECS seconds, corpus in BUILD/corpus/NAME.
set -eu
build=${1:-build-fuzz}
secs=${2:-20}
for f in "$build"/fuzz/fuzz-*; do
    [ -x "$f" ] || continue
    name=$(basename "$f")
    mkdir -p "$build/corpus/$name"
    echo "== $name ($secs s)"
    "$f" -max_total_time="$secs" -print_final_stats=1 "$build/corpus/$name"
done
