"""Every route of `autodev serve`, through Python's `requests` (from PyPI),
and the OpenAPI document checked by `openapi-spec-validator` and against
the routes this script used.

Usage: client.py URL TOKEN_A TOKEN_B (two keys of the service).
"""
import json
import sys
import time

import requests
from openapi_spec_validator import validate

url, a, b = sys.argv[1], sys.argv[2], sys.argv[3]
used = set()


def call(method, path, token=None, route=None, **kw):
    used.add((method.lower(), route or path.split("?")[0]))
    headers = kw.pop("headers", {})
    if token:
        headers["Authorization"] = "Bearer " + token
    return requests.request(method, url + path, headers=headers, timeout=60, **kw)


def events(resp):
    """(id, event, data) of a server-sent event stream, read to its end."""
    out, block = [], {}
    for line in resp.iter_lines(decode_unicode=True):
        if line == "":
            if "id" in block:
                out.append((int(block["id"]), block["event"], json.loads(block["data"])))
            block = {}
        elif not line.startswith(":"):
            k, _, v = line.partition(": ")
            block[k] = v
    return out


r = call("GET", "/v1/health")
assert r.status_code == 200 and r.json()["status"] == "ok", r.text

doc = call("GET", "/v1/openapi.json").json()
validate(doc)

r = call("POST", "/v1/runs", a, json={"runner": "python3 -c 'print(6*7)'"})
assert r.status_code == 200, r.text
res = r.json()
assert res["verdict"] == "passed" and res["stdout"]["text"] == "42\n", res

r = call("POST", "/v1/runs", a, json={"runner": "echo a; echo b >&2"},
         headers={"Accept": "text/event-stream"}, stream=True)
evs = events(r)
assert [e[0] for e in evs] == list(range(1, len(evs) + 1)), evs
assert evs[-1][1] == "result" and evs[-1][2]["result"]["verdict"] == "passed", evs
run_id = evs[-1][2]["result"]["id"]

r = call("GET", f"/v1/runs/{run_id}/events?after=2", a, route="/v1/runs/{id}/events", stream=True)
assert [e[0] for e in events(r)] == [e[0] for e in evs[2:]]

r = call("GET", f"/v1/runs/{run_id}", a, route="/v1/runs/{id}")
assert r.json()["state"] == "done", r.text
assert call("GET", f"/v1/runs/{run_id}", b, route="/v1/runs/{id}").status_code == 404

r = call("POST", "/v1/runs?wait=false", a, json={"runner": "sleep 60"})
assert r.status_code == 202, r.text
slow = r.json()["id"]
assert call("DELETE", f"/v1/runs/{slow}", b, route="/v1/runs/{id}").status_code == 404
r = call("DELETE", f"/v1/runs/{slow}", a, route="/v1/runs/{id}")
assert r.status_code == 202, r.text
deadline = time.time() + 60
while True:
    state = call("GET", f"/v1/runs/{slow}", a, route="/v1/runs/{id}").json()
    if state["state"] == "done":
        break
    assert time.time() < deadline, state
    time.sleep(0.1)
assert state["result"]["verdict"] == "interrupted", state

r = call("GET", "/v1/usage?since=0", a)
assert r.status_code == 200 and r.json()["runs"] >= 3, r.text
assert call("GET", "/v1/usage?key=a", b).status_code == 404

r = call("GET", "/metrics")
assert "autodev_runs_total" in r.text, r.text

# Sessions: files in, a run in a fresh container on them, files out.
import io
import tarfile

buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w") as t:
    data = b"def test_one():\n    assert 1 == 1\n"
    info = tarfile.TarInfo("tests/test_one.py")
    info.size = len(data)
    t.addfile(info, io.BytesIO(data))
r = call("POST", "/v1/sessions", a, data=buf.getvalue(), headers={"Content-Type": "application/x-tar"})
assert r.status_code == 201, r.text
sid = r.json()["id"]
r = call("PUT", f"/v1/sessions/{sid}/files/lib/util.py", a, route="/v1/sessions/{id}/files/{path}", data=b"X = 41\n")
assert r.status_code == 204, r.text
r = call("PUT", f"/v1/sessions/{sid}/files/..%2Fescape", a, route="/v1/sessions/{id}/files/{path}", data=b"x")
assert r.status_code in (400, 404), r.text
r = call("GET", f"/v1/sessions/{sid}/files/lib/util.py", a, route="/v1/sessions/{id}/files/{path}")
assert r.content == b"X = 41\n", r.content
r = call("GET", f"/v1/sessions/{sid}/files", a, route="/v1/sessions/{id}/files")
assert [f["path"] for f in r.json()["files"]] == ["lib/util.py", "tests/test_one.py"], r.text
r = call("POST", f"/v1/sessions/{sid}/runs", a, route="/v1/sessions/{id}/runs",
         json={"runner": "python3 -m pytest -q tests && cat lib/util.py && touch made-here"})
res = r.json()
assert res["verdict"] == "passed" and "X = 41" in res["stdout"]["text"], res
r = call("GET", f"/v1/sessions/{sid}", a, route="/v1/sessions/{id}")
assert r.json()["files"] == 2, "a run's changes stay in its container: %s" % r.text
assert call("GET", f"/v1/sessions/{sid}", b, route="/v1/sessions/{id}").status_code == 404
r = call("DELETE", f"/v1/sessions/{sid}/files/lib/util.py", a, route="/v1/sessions/{id}/files/{path}")
assert r.status_code == 204, r.text
r = call("GET", f"/v1/sessions/{sid}/archive", a, route="/v1/sessions/{id}/archive")
with tarfile.open(fileobj=io.BytesIO(r.content)) as t:
    assert t.getnames() == ["tests/test_one.py"], t.getnames()
archive = r.content
# Replacing the files with an archive: a link in it refuses it whole.
bad = io.BytesIO()
with tarfile.open(fileobj=bad, mode="w") as t:
    t.addfile(tarfile.TarInfo("ok.txt"), io.BytesIO(b""))
    link = tarfile.TarInfo("out")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    t.addfile(link)
r = call("PUT", f"/v1/sessions/{sid}/archive", a, route="/v1/sessions/{id}/archive", data=bad.getvalue(),
         headers={"Content-Type": "application/x-tar"})
assert r.status_code == 400 and r.json()["error"]["class"] == "usage", r.text
r = call("PUT", f"/v1/sessions/{sid}/archive", a, route="/v1/sessions/{id}/archive", data=archive,
         headers={"Content-Type": "application/x-tar"})
assert r.status_code == 204, r.text
assert call("GET", f"/v1/sessions/{sid}/archive", a, route="/v1/sessions/{id}/archive").content == archive
assert call("DELETE", f"/v1/sessions/{sid}", a, route="/v1/sessions/{id}").status_code == 204
assert call("GET", f"/v1/sessions/{sid}", a, route="/v1/sessions/{id}").status_code == 404

# Batches: a tasks file in, progress, results, cancel.
tasks = "\n".join(json.dumps({"id": f"t{i}", "runner": f"exit {i % 2}"}) for i in range(4))
r = call("POST", "/v1/batches", a, data=tasks, headers={"Content-Type": "application/x-ndjson"})
assert r.status_code == 201, r.text
bid = r.json()["id"]
r = call("GET", f"/v1/batches/{bid}/results?wait=true", a, route="/v1/batches/{id}/results")
lines = [json.loads(l) for l in r.text.splitlines()]
assert sorted(l["verdict"] for l in lines) == ["failed", "failed", "passed", "passed"], lines
r = call("GET", f"/v1/batches/{bid}", a, route="/v1/batches/{id}")
assert r.json()["state"] == "done" and r.json()["pass_at_1"] == 0.5, r.text
assert call("GET", f"/v1/batches/{bid}", b, route="/v1/batches/{id}").status_code == 404
r = call("POST", "/v1/batches", a, data=json.dumps({"id": "slow", "runner": "sleep 60"}))
slow_b = r.json()["id"]
r = call("DELETE", f"/v1/batches/{slow_b}", a, route="/v1/batches/{id}")
assert r.status_code == 202 and r.json()["state"] == "cancelled", r.text

# MCP over HTTP (the service runs with --mcp; tests/mcp_http.rs drives it
# with the MCP SDK): a session per initialize, no server-sent stream, an end.
r = call("POST", "/mcp", a, json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}})
assert r.status_code == 200 and r.json()["result"]["serverInfo"]["name"] == "autodev", r.text
mcp_sid = r.headers["mcp-session-id"]
r = call("POST", "/mcp", a, json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, headers={"Mcp-Session-Id": mcp_sid})
assert "doctor" not in {t["name"] for t in r.json()["result"]["tools"]}, r.text
assert call("POST", "/mcp", b, json={"jsonrpc": "2.0", "id": 3, "method": "tools/list"},
            headers={"Mcp-Session-Id": mcp_sid}).status_code == 404, "another key's MCP session"
assert call("GET", "/mcp", a, headers={"Mcp-Session-Id": mcp_sid}).status_code == 405
assert call("DELETE", "/mcp", a, headers={"Mcp-Session-Id": mcp_sid}).status_code == 204
assert call("POST", "/mcp", a, json={"jsonrpc": "2.0", "id": 4, "method": "tools/list"},
            headers={"Mcp-Session-Id": mcp_sid}).status_code == 404, "an ended MCP session"
# A web page on another origin is refused, whatever it asks.
r = call("POST", "/v1/runs", a, data='{"runner": "true"}', headers={"Origin": "http://evil.example"})
assert r.status_code == 403 and r.json()["error"]["class"] == "auth", r.text

r = call("POST", "/v1/runs", a, data="{not json", headers={"Content-Type": "application/json"})
assert r.status_code == 400 and r.json()["error"]["class"] == "usage", r.text

documented = {(m, p) for p, ops in doc["paths"].items() for m in ops if m != "parameters"}
assert documented == used, (sorted(documented ^ used))
print("ok: %d routes" % len(used))
