#!/usr/bin/env bash
# The set-up phase's cost, printed as figures (docs/environments.md, "Measured"):
#  1. building an environment (`autodev env build --rebuild-env`) vs a plain
#     `docker build` running the same install command on the same base;
#  2. time to the first test result with the environment in the cache
#     (`autodev exec`, set-up = a lookup) vs the same tests in a pre-built
#     image with the set-up off (`autodev exec --no-setup --image ID`).
# Project: flask 3.1.0 from the fixtures (default ../shared/fixtures).
#
#   cargo build --release && bash scripts/bench-env.sh [ROUNDS] [FIXTURES]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
fixtures="$(cd "${2:-../shared/fixtures}" && pwd)"
autodev="$PWD/target/release/autodev"
[ -x "$autodev" ] || { echo "bench-env: build first: cargo build --release" >&2; exit 2; }
work="$(mktemp -d /tmp/autodev-bench-env.XXXXXX)"
export XDG_CACHE_HOME="$work/cache"
plain_tag="autodev-bench-env/plain:$$"
env_tag=""
cleanup() {
  docker rmi -f "$plain_tag" >/dev/null 2>&1 || true
  [ -n "$env_tag" ] && docker rmi -f "$env_tag" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
tar -C "$work" -xzf "$fixtures/real-projects/flask.tar.gz"
p="$work/flask"
install="pip install -r requirements/tests.txt -e . werkzeug==3.1.3 click==8.1.7 jinja2==3.1.4 itsdangerous==2.2.0 blinker==1.9.0 markupsafe==3.0.2"
test_cmd="python3 -m pytest tests -q -p no:cacheprovider -x"
ca=/etc/ssl/certs/ca-certificates.crt

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# The plain build: the same base image, the project copied in, the same
# install command with the host's CA bundle (as the set-up gets it), the
# engine's default network. No cache: each round starts from the base.
cp "$ca" "$p/.bench-ca.pem"
cat >"$work/Dockerfile" <<DF
FROM autodev/python:latest
COPY --chown=1000:1000 flask /tmp/src
WORKDIR /tmp/src
RUN PIP_CERT=/tmp/src/.bench-ca.pem PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 $install
DF
for i in $(seq 1 "$rounds"); do
  t0=$(now)
  docker build -q --no-cache -t "$plain_tag" -f "$work/Dockerfile" "$work" >/dev/null
  echo "$(now) - $t0" | bc
done >"$work/plain.txt"
rm -f "$p/.bench-ca.pem"
for i in $(seq 1 "$rounds"); do
  t0=$(now)
  "$autodev" env build -w "$p" --setup "$install" --rebuild-env >"$work/env.json" 2>"$work/env.err"
  echo "$(now) - $t0" | bc
done >"$work/env.txt"
env_tag=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["image"])' "$work/env.json")
env_id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["image_id"])' "$work/env.json")

# Time to the first test result: a cache hit vs the pre-built image,
# interleaved (the test run itself varies by a second or more on 2 cores),
# with twice the rounds; the set-up's own share (`setup_ms`) is printed too.
: >"$work/hit.txt"; : >"$work/pre.txt"; : >"$work/setup_ms.txt"
for i in $(seq 1 $((rounds * 2))); do
  t0=$(now); (cd "$p" && "$autodev" exec -w . --json --setup "$install" -- $test_cmd >"$work/hit.json" 2>/dev/null); echo "$(now) - $t0" | bc >>"$work/hit.txt"
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["record"]["environment"]["setup_ms"])' "$work/hit.json" >>"$work/setup_ms.txt"
  t0=$(now); (cd "$p" && "$autodev" exec -w . --json --no-setup --image "$env_id" -- $test_cmd >"$work/pre.json" 2>/dev/null); echo "$(now) - $t0" | bc >>"$work/pre.txt"
done
python3 - "$work/hit.json" "$work/pre.json" <<'PY'
import json, sys
for f in sys.argv[1:]:
    d = json.load(open(f)); assert d["verdict"] == "passed", d.get("error")
assert json.load(open(sys.argv[1]))["record"]["environment"]["cache"] == "hit"
PY

plain=$(median <"$work/plain.txt"); envb=$(median <"$work/env.txt")
hit=$(median <"$work/hit.txt"); pre=$(median <"$work/pre.txt")
echo "bench-env: flask 3.1.0, $rounds round(s) each, medians"
printf 'build:  autodev env build %.1f s, docker build %.1f s, ratio %.2f (goal <= 1.1)\n' "$envb" "$plain" "$(echo "$envb / $plain" | bc -l)"
printf 'first test result: cache hit %.2f s, pre-built image %.2f s, ratio %.2f (goal <= 1.1); the set-up lookup itself: median %s ms\n' "$hit" "$pre" "$(echo "$hit / $pre" | bc -l)" "$(median <"$work/setup_ms.txt")"
echo "rounds: docker build $(tr '\n' ' ' <"$work/plain.txt"); env build $(tr '\n' ' ' <"$work/env.txt"); hit $(tr '\n' ' ' <"$work/hit.txt"); pre-built $(tr '\n' ' ' <"$work/pre.txt")"
