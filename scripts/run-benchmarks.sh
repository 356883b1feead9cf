#!/bin/sh
# Runs every benchmark in build/bin/bench-* once; each prints one JSON line.
set -eu
build=${1:-build}
status=0
for b in "$build"/bin/bench-*; do
    [ -x "$b" ] || continue
    "$b" || status=1
done
exit $status
