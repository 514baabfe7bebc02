#!/usr/bin/env bash
# `autodev serve` under load, and its overhead per run, printed as figures
# (docs/serve.md, "Measured"). Loopback only; the service, its keys and its
# state are this script's and go with it.
#
#   cargo build --release && bash scripts/bench-serve.sh [RUNS] [CONNECTIONS] [JOBS]
#
# Needs a Python with `requests` (AUTODEV_TEST_PYTHON, else python3).
# AUTODEV_BENCH_SERVE_ARGS: more flags for the service (e.g. --keep-finished 5s).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-2000}
conns=${2:-32}
jobs=${3:-4}
py=${AUTODEV_TEST_PYTHON:-python3}
autodev="$PWD/target/release/autodev"
[ -x "$autodev" ] || { echo "bench-serve: build first: cargo build --release" >&2; exit 2; }
work="$(mktemp -d /tmp/autodev-bench-serve.XXXXXX)"
label="autodev-bench-serve=$$"
pid=""
cleanup() {
  [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
  docker ps -aq --filter "label=$label" | xargs -r docker rm -f >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
state="$work/state"
key() { "$autodev" serve keys add "$1" --state "$state" --max-concurrent 10; }
flood=$(key flood 2>/dev/null); a=$(key a 2>/dev/null); b=$(key b 2>/dev/null)
"$autodev" serve --listen 127.0.0.1:0 --state "$state" --jobs "$jobs" --max-queue 100000 \
  --label "$label" --warm 2 ${AUTODEV_BENCH_SERVE_ARGS:-} 2>"$work/serve.log" &
pid=$!
for _ in $(seq 1 100); do grep -q "listening on" "$work/serve.log" && break; sleep 0.1; done
url=$(sed -n 's/.*listening on \(http:[^;]*\);.*/\1/p' "$work/serve.log" | head -1)
[ -n "$url" ] || { cat "$work/serve.log"; exit 1; }
echo "bench-serve: $runs runs, $conns connections, $jobs slots, 3 keys (one flooding), $(nproc) cores"
rc=0
"$py" scripts/bench-serve.py "$url" "$pid" "$flood" "$a" "$b" "$runs" "$conns" || rc=$?
kill -TERM "$pid"
for _ in $(seq 1 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
pid=""
left=$(docker ps -aq --filter "label=$label" | wc -l)
echo "containers left after SIGTERM: $left"
[ "$left" -eq 0 ] || rc=1
exit $rc
