#!/usr/bin/env bash
# bench_auto on an engine with the overlay2 storage driver, the default on
# most Docker hosts, when this machine's own engine uses another (here:
# fuse-overlayfs, whose per-container cost no concurrency level hides).
# The engine runs in its own network namespace (tests/fleet.sh), gets the
# bench image from the host's engine, and is torn down afterwards.
#
#   cargo build --release --examples && bash scripts/bench-auto-overlay2.sh [ROUNDS]
#
# Env: AUTODEV_BENCH_IMAGE (default autodev/python:latest), BENCH_DIR
# (default /tmp/autodev-bench-overlay2; deleted at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
image=${AUTODEV_BENCH_IMAGE:-autodev/python:latest}
dir=${BENCH_DIR:-/tmp/autodev-bench-overlay2}/fleet
tag=bo net=10.250.97
bin=target/release/examples/bench_auto
[ -x "$bin" ] || { echo "bench-auto-overlay2: build first: cargo build --release --examples" >&2; exit 2; }
trap 'bash tests/fleet.sh down $tag "$dir" $net' EXIT
bash tests/fleet.sh up $tag "$dir" $net 1
sock=unix://$dir/h1/docker.sock
docker -H "$sock" info --format 'engine: {{.ServerVersion}}, storage {{.Driver}}, cgroup v{{.CgroupVersion}}'
docker save "$image" | docker -H "$sock" load >/dev/null
DOCKER_HOST=$sock AUTODEV_BENCH_IMAGE=$image "$bin" 164 "$rounds"
left=$(docker -H "$sock" ps -aq --filter label=autodev.managed=true | wc -l)
echo "containers left on the overlay2 engine: $left"
[ "$left" -eq 0 ]
