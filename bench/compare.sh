#!/bin/sh
# The network benchmarks of docs/benchmarks.md: echo-server against the peers
# with ../shared/bench/compare.py (run ../shared/bench/setup-peers.sh once
# first). Usage: bench/compare.sh [BIN_DIR]   (default build/bin)
set -eu
bin=$(cd "${1:-build/bin}" && pwd)
compare="$(dirname "$0")/../../shared/bench/compare.py"
twine="twine=env TWINE_REACTOR=io_uring $bin/echo-server tcp:{port}:interface=127.0.0.1 --quiet"
# Twine's epoll backend too: the io_uring targets (issue 8) are ratios to it.
twine_epoll="twine-epoll=env TWINE_REACTOR=epoll $bin/echo-server tcp:{port}:interface=127.0.0.1 --quiet"
peers="--server @epoll --server @libuv --server @libevent --server @twisted"
for conns in 1 50 1000; do
    echo "## echo, 64-byte messages, $conns connection(s)"
    python3 "$compare" echo --size 64 --conns "$conns" --seconds 3 --rounds 3 $peers --server "$twine_epoll" --server "$twine"
done
echo "## echo, 64-byte messages, 50 connections, 16 messages in flight each"
python3 "$compare" echo --size 64 --conns 50 --pipeline 16 --seconds 3 --rounds 3 $peers --server "$twine_epoll" --server "$twine"
echo "## idle: 10,000 connections, bytes of server memory per connection"
python3 "$compare" idle --conns 10000 --rounds 2 --server @libuv --server @libevent --server @twisted --server "$twine_epoll" --server "$twine"
