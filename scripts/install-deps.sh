#!/bin/sh
# Installs the Debian packages Twine builds, tests and benchmarks with.
# Idempotent: asks apt only for what is missing. Needs root (or sudo).
set -eu
pkgs="build-essential cmake pkg-config clang libclang-rt-dev clang-format valgrind libcriterion-dev libuv1-dev libssl-dev liburing-dev openssl python3 python3-twisted lld qemu-user haproxy curl"
need=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need="$need $p"
done
[ -z "$need" ] && exit 0
echo "install-deps: installing$need"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $need >/dev/null
