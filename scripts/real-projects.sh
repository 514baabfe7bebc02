#!/usr/bin/env bash
# Runs real open-source projects' own test suites through `autodev exec`,
# with their dependencies installed by the set-up phase and the network off
# in the test phase; a second run of each must be a cache hit. Needs the
# fixtures folder (default ../shared/fixtures: flask, rust-csv and cobra at
# a tagged commit, and a Go module proxy in GOPROXY layout for cobra, served
# here on loopback as the registry's stand-in).
#
# When the Kubernetes binaries are built (tests/kube/build.sh), flask runs
# once more on a two-node test cluster (tests/kube/cluster.sh), its
# environment pushed to the cluster's registry and pulled by the nodes.
#
# Usage: scripts/real-projects.sh [FIXTURES]   (autodev from target/debug)
set -euo pipefail
cd "$(dirname "$0")/.."
fixtures="$(cd "${1:-../shared/fixtures}" && pwd)"
autodev="$PWD/target/debug/autodev"
work="$(mktemp -d /tmp/autodev-real.XXXXXX)"
export XDG_CACHE_HOME="$work/cache"
proxy_pid=""
kube_bin="$PWD/target/kube-1.20.2/bin"
kube=(k90 /tmp/autodev-real-kube 10.234.250)
cleanup() {
  [ -n "$proxy_pid" ] && kill "$proxy_pid" 2>/dev/null || true
  [ -d "${kube[1]}" ] && bash tests/kube/cluster.sh down "${kube[@]}" >/dev/null 2>&1 || true
  # The environments this script built (named in its results), and only those.
  cat "$work"/*-1.json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    try: print(json.loads(line)["record"]["environment"]["image"])
    except Exception: pass' | while read -r t; do docker rmi -f "$t" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT

for p in flask csv cobra; do tar -C "$work" -xzf "$fixtures/real-projects/$p.tar.gz"; done

# The module proxy stand-in: a loopback HTTP server that answers the egress
# proxy's forwarded requests (absolute URIs) from the fixture folder.
port=$((20000 + RANDOM % 20000))
python3 scripts/goproxy-standin.py "$fixtures/goproxy" "$port" >"$work/goproxy.log" 2>&1 &
proxy_pid=$!
for _ in $(seq 1 50); do python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null && break; sleep 0.1; done

# name, flags, test command, what its output must say; the project's
# folder is $dir when set, else its name
check() {
  local name=$1 want=$2; shift 2
  local folder=$work/${dir:-$name}
  for run in 1 2; do
    local t0; t0=$(date +%s.%N)
    local fresh=""; [ "$run" = 1 ] && fresh=--rebuild-env
    ( cd "$folder" && "$autodev" exec -w . --json $fresh "$@" ) >"$work/$name-$run.json" 2>"$work/$name-$run.err" || {
      tail -n 20 "$work/$name-$run.err"; python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(d['verdict'], d.get('error')); print(d['stdout']['text'][-2000:]); print(d['stderr']['text'][-2000:])" "$work/$name-$run.json" || true
      echo "FAIL: $name run $run" >&2; exit 1; }
    python3 - "$work/$name-$run.json" "$want" "$run" "$name" "$(date +%s.%N)" "$t0" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); want, run, name = sys.argv[2], int(sys.argv[3]), sys.argv[4]
env = d["record"]["environment"]
assert d["verdict"] == "passed" and want in d["stdout"]["text"], d["stdout"]["text"][-1000:]
assert env["cache"] == ("miss" if run == 1 else "hit"), env
assert run == 1 or not env.get("connections"), env
print(f"{name} run {run}: {d['verdict']}, environment {env['cache']} ({env['setup']}), "
      f"set-up {env['setup_ms']} ms, {float(sys.argv[5]) - float(sys.argv[6]):.1f} s in all")
PY
  done
}

flask_setup="pip install -r requirements/tests.txt -e . werkzeug==3.1.3 click==8.1.7 jinja2==3.1.4 itsdangerous==2.2.0 blinker==1.9.0 markupsafe==3.0.2"
check flask "490 passed, 2 skipped" --setup "$flask_setup" -- python3 -m pytest tests -q -p no:cacheprovider
check csv "140 passed" --tmp-size 1g --memory 2g -- cargo test --offline --locked --lib
GOPROXY=http://modules.test check cobra "ok  	github.com/spf13/cobra/doc" \
  --setup-env GOPROXY --allow-host modules.test --setup-proxy "127.0.0.1:$port" --tmp-size 1g \
  -- go test ./...
if [ -x "$kube_bin/kubelet" ]; then
  bash tests/kube/cluster.sh up "${kube[@]}" "$kube_bin" autodev/python:latest >"$work/cluster.log" 2>&1 || {
    tail -n 30 "$work/cluster.log"; echo "FAIL: the test cluster did not start" >&2; exit 1; }
  export KUBECONFIG="${kube[1]}/kubeconfig"
  "$autodev" kube setup --image autodev/python:latest --image-pull-policy never >/dev/null
  dir=flask check flask-kubernetes "490 passed, 2 skipped" --backend kubernetes \
    --registry "${kube[2]}.13:5000" --setup "$flask_setup" -- python3 -m pytest tests -q -p no:cacheprovider
  python3 - "$work/flask-kubernetes-1.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert "node-" in d["record"]["engine"] and "@sha256:" in d["record"]["environment"]["pulled_from"], d["record"]
print("flask on Kubernetes: ran on", d["record"]["engine"], "from", d["record"]["environment"]["pulled_from"])
PY
  unset KUBECONFIG
  bash tests/kube/cluster.sh down "${kube[@]}"
else
  echo "NOTE: no Kubernetes binaries in $kube_bin: flask did not run on the test cluster"
fi
left=$(docker network ls -q --filter label=autodev.setup=true | wc -l)
[ "$left" -eq 0 ] || { echo "FAIL: $left set-up network(s) left" >&2; exit 1; }
echo "real projects: all passed"
