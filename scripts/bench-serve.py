"""Load and overhead figures for `autodev serve` (docs/serve.md, "Measured").

Run by scripts/bench-serve.sh, which starts the service (release build) on
loopback and gives: URL PID TOKEN_FLOOD TOKEN_A TOKEN_B RUNS CONNECTIONS.

1. Idle: keys a and b alone, one run at a time each: their queue waits.
2. Load: the flood key sends RUNS - 100 runs over CONNECTIONS - 2
   connections while a and b send 50 each, one at a time (so each of their
   runs is the key's only one: fair queueing owes it the next free slot). Every
   4th run of every key fails (exit 1): each result is checked against the
   verdict its command must get, and each run must answer exactly once.
   The service's RSS is sampled as runs complete.
3. Overhead: the client's wall time for a run vs the run's own figures
   (durations.total_ms, what `autodev exec` measures in-process).
"""
import concurrent.futures as cf
import statistics
import sys
import threading
import time

import requests

url, pid, flood, ka, kb = sys.argv[1:6]
runs, conns = int(sys.argv[6]), int(sys.argv[7])
local = threading.local()


def session():
    if not hasattr(local, "s"):
        local.s = requests.Session()
    return local.s


def run(token, i):
    fails = i % 4 == 0
    body = {"id": f"r{i}", "runner": ["sh", "-c", f"exit {int(fails)}"]}
    t = time.monotonic()
    while True:
        r = session().post(url + "/v1/runs", json=body, headers={"Authorization": "Bearer " + token}, timeout=600)
        if r.status_code != 429:
            break
        time.sleep(float(r.headers.get("Retry-After", "1")))
    wall = (time.monotonic() - t) * 1000
    assert r.status_code == 200, r.text
    res = r.json()
    want = "failed" if fails else "passed"
    return res["id"], res["verdict"] == want, res["queue_ms"], wall, res["durations"]["total_ms"]


def rss_kib():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def serial(token, n, start):
    return [run(token, start + i) for i in range(n)]


# 1. idle
with cf.ThreadPoolExecutor(2) as ex:
    idle = [r for f in [ex.submit(serial, ka, 50, 0), ex.submit(serial, kb, 50, 1000)] for r in f.result()]
idle_q = [r[2] for r in idle]

# 2. load
flood_n = runs - 100
rss, done = [rss_kib()], threading.Event()


def sample():
    while not done.wait(5):
        rss.append(rss_kib())


sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
t0 = time.monotonic()
with cf.ThreadPoolExecutor(conns) as ex:
    mine = [ex.submit(serial, k, 50, base) for k, base in [(ka, 2000), (kb, 4000)]]
    per = -(-flood_n // (conns - 2))
    theirs = [ex.submit(serial, flood, min(per, flood_n - c * per), 10000 + c * per)
              for c in range(conns - 2) if flood_n - c * per > 0]
    others = [r for f in mine for r in f.result()]
    floods = [r for f in theirs for r in f.result()]
elapsed = time.monotonic() - t0
done.set()
rss.append(rss_kib())
everything = others + floods
ids = [r[0] for r in everything]
wrong = sum(1 for r in everything if not r[1])
load_q = [r[2] for r in others]
flood_q = [r[2] for r in floods]
print(f"runs: {len(everything)} under load ({len(ids)} answers, {len(set(ids))} distinct ids), {wrong} with a wrong verdict, {elapsed:.1f} s ({len(everything) / elapsed:.1f} runs/s)")
print(f"queue wait of keys a and b: idle p50 {pct(idle_q, 50)} ms, p99 {pct(idle_q, 99)} ms; with the flood p50 {pct(load_q, 50)} ms, p99 {pct(load_q, 99)} ms")
print(f"queue wait of the flood key: p50 {pct(flood_q, 50)} ms, p99 {pct(flood_q, 99)} ms")
slot = elapsed * 1000 / len(everything)
print(f"a slot freed every {slot:.0f} ms on average under load: keys a and b waited p50 {pct(load_q, 50) / slot:.2f}, p99 {pct(load_q, 99) / slot:.2f} of that")
print(f"service RSS (KiB), every 5 s under load: {rss}")

# 3. overhead: idle runs, client wall vs in-process total
over = [r[3] - r[4] for r in idle]
print(f"overhead (client wall - in-process total_ms) over {len(idle)} idle runs: p50 {statistics.median(over):.1f} ms, p90 {pct(over, 90):.1f} ms")
print(f"in-process total_ms p50 {statistics.median([r[4] for r in idle])} ms; client wall p50 {statistics.median([r[3] for r in idle]):.1f} ms")
ok = wrong == 0 and len(ids) == len(set(ids)) == runs
sys.exit(0 if ok else 1)
