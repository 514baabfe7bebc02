#!/usr/bin/env bash
# Evaluates the SWE-bench-style instances of the fixtures (flask, jinja,
# python-slugify, cobra: real bug-fix commits) with `autodev batch
# --swebench`: the gold predictions resolve every instance, the wrong ones
# none (naming the failing tests), an empty patch is empty_patch, a patch
# that does not apply is patch_failed. Dependencies come from the set-up
# phase (PyPI through the egress proxy; for Go a loopback module proxy
# stands in for the registry); the test phase has no network. Then the
# benchmark: per instance, autodev with a warm environment cache against
# `docker run` of the same test command in the same environment image.
#
# Usage: scripts/swebench.sh [FIXTURES]   (autodev from AUTODEV_BIN, default target/debug)
set -euo pipefail
cd "$(dirname "$0")/.."
fixtures="$(cd "${1:-../shared/fixtures}" && pwd)"
swe="$fixtures/swe"
autodev="${AUTODEV_BIN:-$PWD/target/debug/autodev}"
work="$(mktemp -d /tmp/autodev-swe.XXXXXX)"
export XDG_CACHE_HOME="$work/cache"
proxy_pid=""
cleanup() {
  [ -n "$proxy_pid" ] && kill "$proxy_pid" 2>/dev/null || true
  # The environments this script built (named in its results), and only those.
  cat "$work"/*.results.jsonl 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    try: print(json.loads(line)["record"]["environment"]["image"])
    except Exception: pass' | sort -u | while read -r t; do docker rmi -f "$t" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT

port=$((20000 + RANDOM % 20000))
python3 scripts/goproxy-standin.py "$fixtures/goproxy" "$port" >"$work/goproxy.log" 2>&1 &
proxy_pid=$!
for _ in $(seq 1 50); do python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null && break; sleep 0.1; done

# Predictions per kind and language: the Go instance's set-up goes through
# the loopback stand-in (an operator's upstream proxy), the Python ones
# straight to PyPI through the egress proxy.
python3 - "$swe" "$work" <<'PY'
import json, sys
swe, work = sys.argv[1], sys.argv[2]
inst = {json.loads(l)["instance_id"]: json.loads(l) for l in open(f"{swe}/instances.jsonl")}
gold = [json.loads(l) for l in open(f"{swe}/predictions_gold.jsonl")]
wrong = [json.loads(l) for l in open(f"{swe}/predictions_wrong.jsonl")]
empty = [dict(p, model_patch="") for p in gold]
# The gold patch with its first removed line changed: it no longer applies.
def corrupt(p):
    lines = p["model_patch"].split("\n")
    i = next(i for i, l in enumerate(lines) if l.startswith("-") and not l.startswith("---"))
    lines[i] = "-" + lines[i][1:] + "  # not in the file"
    return dict(p, model_patch="\n".join(lines))
stale = [corrupt(p) for p in gold]
for kind, preds in [("gold", gold), ("wrong", wrong), ("empty", empty), ("stale", stale)]:
    for lang in ["python", "go"]:
        with open(f"{work}/{kind}-{lang}.preds.jsonl", "w") as f:
            for p in preds:
                if inst[p["instance_id"]]["language"] == lang:
                    f.write(json.dumps(p) + "\n")
PY

evaluate() { # KIND LANG [flags]; the results go to $OUT (default KIND)-LANG
  local kind=$1 lang=$2; shift 2
  local name="${OUT:-$kind}-$lang"
  local extra=()
  [ "$lang" = go ] && extra=(--setup-env GOPROXY --allow-host modules.test --setup-proxy "127.0.0.1:$port" --tmp-size 1g)
  GOPROXY=http://modules.test "$autodev" batch --swebench "$swe/instances.jsonl" \
    --predictions "$work/$kind-$lang.preds.jsonl" --repos "$swe" \
    --out "$work/$name.results.jsonl" -j "${JOBS:-2}" "${extra[@]}" "$@" 2>"$work/$name.err" || {
      tail -n 20 "$work/$name.err"; echo "FAIL: autodev batch --swebench ($name)" >&2; exit 1; }
  tail -n 1 "$work/$name.err"
}

for kind in gold wrong empty stale; do
  for lang in python go; do evaluate "$kind" "$lang"; done
done

python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
want = {"gold": "resolved", "wrong": "unresolved", "empty": "empty_patch", "stale": "patch_failed"}
report_key = {"gold": "resolved_ids", "wrong": "unresolved_ids", "empty": "empty_patch_ids", "stale": "patch_failed_ids"}
for kind, verdict in want.items():
    for lang in ["python", "go"]:
        rs = [json.loads(l) for l in open(f"{work}/{kind}-{lang}.results.jsonl")]
        assert rs, (kind, lang)
        for r in rs:
            assert r["verdict"] == verdict, (kind, r["id"], r["verdict"], r.get("error"), r.get("stdout_tail", "")[-1500:])
            n = r.get("named_tests")
            if kind == "gold":
                assert not n["fail_to_pass"]["failure"] and not n["fail_to_pass"]["missing"], n
                assert r["record"]["limits"]["network"] == "none", r["record"]
            if kind == "wrong":
                # The fix's tests fail; the tests that passed before still pass.
                assert n["fail_to_pass"]["failure"], n
                assert not n["pass_to_pass"]["failure"] and not n["pass_to_pass"]["missing"], n
            if kind == "stale":
                assert "hunk" in r["error"] and "not in the file" in r["error"], r["error"]
        rep = json.load(open(f"{work}/{kind}-{lang}.results.report.json"))
        assert sorted(rep[report_key[kind]]) == sorted(r["id"] for r in rs), rep
        print(f"swebench {kind:5} {lang:6}: {len(rs)} {verdict}")
PY
left=$(docker network ls -q --filter label=autodev.setup=true | wc -l)
[ "$left" -eq 0 ] || { echo "FAIL: $left set-up network(s) left" >&2; exit 1; }

# The benchmark, per instance (the environments are cached now): the wall
# time of `autodev batch --swebench` with that one prediction against
# `docker run` of the same test command in the same environment image,
# with the same CPU and memory limits, on the same patched tree (patched
# here with git apply: fixtures, not untrusted input); three runs each,
# medians.
python3 - "$work" "$swe" "$autodev" "$port" <<'PY'
import json, os, statistics, subprocess, sys, tarfile, tempfile, time
work, swe, autodev, port = sys.argv[1:5]
inst = {json.loads(l)["instance_id"]: json.loads(l) for l in open(f"{swe}/instances.jsonl")}
gold = {json.loads(l)["instance_id"]: json.loads(l) for l in open(f"{swe}/predictions_gold.jsonl")}
go = ["--setup-env", "GOPROXY", "--allow-host", "modules.test", "--setup-proxy", f"127.0.0.1:{port}", "--tmp-size", "1g"]
env = dict(os.environ, GOPROXY="http://modules.test")
print("instance                        autodev(s)  docker run(s)  ratio  set-up lookup(ms)")
ratios = []
for iid, i in sorted(inst.items()):
    one = f"{work}/one.preds.jsonl"
    open(one, "w").write(json.dumps(gold[iid]) + "\n")
    ours, lookups, image = [], [], None
    for n in range(3):
        out = f"{work}/bench-{iid}-{n}.results.jsonl"
        t0 = time.monotonic()
        subprocess.run([autodev, "batch", "--swebench", f"{swe}/instances.jsonl", "--predictions", one,
                        "--repos", swe, "--out", out, "-j", "1"] + (go if i["language"] == "go" else []),
                       env=env, capture_output=True, check=True)
        ours.append(time.monotonic() - t0)
        r = json.loads(open(out).readline())
        e = r["record"]["environment"]
        assert r["verdict"] == "resolved" and e["cache"] == "hit", r
        lookups.append(e["setup_ms"])
        image = e["image"]
    d = tempfile.mkdtemp(dir=work)
    with tarfile.open(f"{swe}/{i['source_tarball']}") as t:
        t.extractall(d)
    (top,) = os.listdir(d)
    tree = os.path.join(d, top)
    for p in [i["patch"], i["test_patch"]]:
        subprocess.run(["git", "apply", "-"], input=p.encode(), cwd=tree, check=True)
    subprocess.run(["chmod", "-R", "a+rwX", tree], check=True)
    tmp = "1g" if i["language"] == "go" else "64m"
    plain = []
    for _ in range(3):
        t0 = time.monotonic()
        subprocess.run(["docker", "run", "--rm", "--network", "none", "-u", "1000:1000", "--cpus", "1",
                        "--memory", "512m", "-v", f"{tree}:/workspace", "-w", "/workspace",
                        "--tmpfs", f"/tmp:exec,size={tmp}", image, "sh", "-c", i["test_cmd"]],
                       capture_output=True, check=False)
        plain.append(time.monotonic() - t0)
    a, p = statistics.median(ours), statistics.median(plain)
    ratios.append(a / p)
    print(f"{iid:30} {a:10.2f} {p:14.2f} {a / p:6.2f} {statistics.median(lookups):12.0f}")
print(f"median ratio {statistics.median(ratios):.2f}, worst {max(ratios):.2f} (goal <= 1.2)")
PY
echo "swebench: all verdicts as expected"
