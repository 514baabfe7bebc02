#!/usr/bin/env bash
# Throughput of `autodev batch --swebench` over two engines against one:
# N repository tasks (a small git repository at a base commit, the gold
# patch and a test patch each, pytest with a JUnit report), on Docker
# engines in network namespaces made here (tests/fleet.sh; needs root).
# Both engines share this machine's cores: on one host the figure is what
# spreading costs, not a speed-up. Three rounds, alternating.
#
# Usage: scripts/bench-swebench-engines.sh [N]   (autodev from target/release, else target/debug)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-40}
autodev="$PWD/target/release/autodev"
[ -x "$autodev" ] || autodev="$PWD/target/debug/autodev"
work="$(mktemp -d /tmp/autodev-bench-swe.XXXXXX)"
tag="bs$((RANDOM % 1000))" net=10.249.31 fleet="$work/fleet"
down() { bash tests/fleet.sh down "$tag" "$fleet" "$net" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap down EXIT
bash tests/fleet.sh up "$tag" "$fleet" "$net" 2 >/dev/null
for i in 1 2; do "$autodev" images push python --engine "tcp://$net.$((10 + i)):2375" 2>/dev/null; done

# The repository and N instances of it, every prediction the gold patch.
python3 - "$work" "$n" <<'PY'
import json, os, subprocess, sys
work, n = sys.argv[1], int(sys.argv[2])
repo = f"{work}/repos/acme__calc"
os.makedirs(f"{repo}/tests")
open(f"{repo}/calc.py", "w").write("def add(a, b):\n    return a - b\n")
open(f"{repo}/tests/test_calc.py", "w").write("def test_one():\n    assert 1 == 1\n")
git = ["git", "-c", "user.name=b", "-c", "user.email=b@example.invalid"]
for c in (["init", "-q"], ["add", "."], ["commit", "-qm", "base"]):
    subprocess.run(git + c, cwd=repo, check=True)
base = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
gold = "--- a/calc.py\n+++ b/calc.py\n@@ -1,2 +1,2 @@\n def add(a, b):\n-    return a - b\n+    return a + b\n"
test = ("--- a/tests/test_calc.py\n+++ b/tests/test_calc.py\n@@ -1,2 +1,7 @@\n+from calc import add\n+\n+\n"
        "+def test_add():\n+    assert add(2, 3) == 5\n def test_one():\n     assert 1 == 1\n")
with open(f"{work}/instances.jsonl", "w") as i, open(f"{work}/preds.jsonl", "w") as p:
    for k in range(n):
        iid = f"acme__calc-{k:03}"
        i.write(json.dumps({"instance_id": iid, "repo": "acme/calc", "base_commit": base, "test_patch": test,
                            "FAIL_TO_PASS": ["tests/test_calc.py::test_add"], "PASS_TO_PASS": ["tests/test_calc.py::test_one"],
                            "test_cmd": "python3 -m pytest -q -p no:cacheprovider --junitxml=r.xml tests"}) + "\n")
        p.write(json.dumps({"instance_id": iid, "model_patch": gold}) + "\n")
PY

run() { # NAME ENGINES...
  local name=$1; shift
  local engines=()
  for e in "$@"; do engines+=(--engine "tcp://$net.$((10 + e)):2375#slots=2"); done
  rm -f "$work/$name".*
  local t0; t0=$(date +%s.%N)
  "$autodev" batch --swebench "$work/instances.jsonl" --predictions "$work/preds.jsonl" --repos "$work/repos" \
    --out "$work/$name.jsonl" --no-setup "${engines[@]}" 2>/dev/null
  python3 - "$work/$name.report.json" "$n" "$t0" "$(date +%s.%N)" "$name" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); n = int(sys.argv[2]); wall = float(sys.argv[4]) - float(sys.argv[3])
assert r["resolved_instances"] == n, r
print(f"{sys.argv[5]:12} {n} resolved in {wall:6.1f} s, {n / wall:5.2f} instances/s")
PY
}
for round in 1 2 3; do
  run "one-$round" 1
  run "two-$round" 1 2
done
