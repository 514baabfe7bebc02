"""The Python client (clients/python, on PYTHONPATH) against a real
service: every method, sync and async, errors with their class, 429
retried after Retry-After, and its route table against the service's
OpenAPI document (drift fails this test).

Usage: client_sdk.py URL TOKEN_A TOKEN_B (key a may run one run at a time,
and the service queues none).
"""
import asyncio
import io
import random
import sys
import tarfile
import time

import httpx

from autodev_client import ROUTES, AsyncClient, AutodevError, Client, models

url, a, b = sys.argv[1], sys.argv[2], sys.argv[3]


class CutFirstStream(httpx.BaseTransport):
    """A real HTTP transport that breaks the first event stream after its
    first chunk, as a dropped connection does."""

    def __init__(self) -> None:
        self.inner, self.cuts, self.resumed_after = httpx.HTTPTransport(), 0, None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        resp = self.inner.handle_request(request)
        if not request.url.path.endswith("/events"):
            return resp
        if self.cuts:
            self.resumed_after = request.headers.get("last-event-id")
            return resp
        self.cuts += 1
        inner, req = resp.stream, request

        class Cut(httpx.SyncByteStream):
            def __iter__(self):
                for chunk in inner:
                    yield chunk
                    raise httpx.ReadError("connection cut by the test", request=req)

            def close(self) -> None:
                inner.close()

        return httpx.Response(resp.status_code, headers=resp.headers, stream=Cut(), request=request)


with Client(url, a, retries=0) as c, Client(url, b) as other:
    doc = c.openapi()
    # `/mcp` is the MCP SDK's to call (tests/mcp_http.rs), not this client's.
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops if m != "parameters" and p != "/mcp"}
    assert documented == set(ROUTES), sorted(documented ^ set(ROUTES))
    assert c.health()["status"] == "ok"

    # The typed models are the document's schemas: the same keys, the same
    # required ones (drift either way fails here).
    comps = doc["components"]["schemas"]
    json_of = lambda op, code: op["responses"][code]["content"]["application/json"]["schema"]
    health = json_of(doc["paths"]["/v1/health"]["get"], "200")
    file_list = json_of(doc["paths"]["/v1/sessions/{id}/files"]["get"], "200")
    write_back = comps["Result"]["properties"]["write_back"]
    schemas = {
        models.Result: comps["Result"], models.Captured: comps["Captured"], models.RunState: comps["RunState"],
        models.Usage: comps["Usage"], models.Session: comps["Session"], models.Batch: comps["Batch"],
        models.WriteBack: write_back, models.Refused: write_back["properties"]["refused"]["items"],
        models.Accepted: json_of(doc["paths"]["/v1/runs"]["post"], "202"),
        models.FileInfo: file_list["properties"]["files"]["items"],
        models.Health: health, models.EngineHealth: health["properties"]["engines"]["items"],
    }
    assert {m.__name__ for m in schemas} == set(models.__all__), "every model is checked"
    for model, schema in schemas.items():
        keys = set(model.__required_keys__) | set(model.__optional_keys__)
        assert keys == set(schema["properties"]), (model.__name__, keys ^ set(schema["properties"]))
        assert set(model.__required_keys__) == set(schema.get("required", [])), model.__name__

    res = c.run("python3 -c 'print(6*7)'")
    assert res["verdict"] == "passed" and res["stdout"]["text"] == "42\n", res
    # What the service sends is documented.
    assert set(res) <= set(comps["Result"]["properties"]), set(res) - set(comps["Result"]["properties"])
    assert set(res["stdout"]) == set(comps["Captured"]["properties"]), res["stdout"]
    res = c.run(["sh", "-c", "exit 3"])
    assert (res["verdict"], res["exit_code"]) == ("failed", 3), res
    res = c.run("python3 -m pytest -q", files={"test_a.py": "def test_a():\n    assert 1 + 1 == 2\n"},
                limits={"timeout": "60s"})
    assert res["verdict"] == "passed" and res["tests"]["passed"] == 1, res

    # Errors carry their class.
    try:
        Client(url, "adk_wrong").run("true")
        raise AssertionError("a wrong token must be refused")
    except AutodevError as e:
        assert (e.status, e.error_class) == (401, "auth"), e
    try:
        c.run("true", files={"../x": "y"})
        raise AssertionError("a path out of the workspace must be refused")
    except AutodevError as e:
        assert (e.status, e.error_class) == (400, "usage"), e

    # A stream broken mid-way (the transport cuts it after its first chunk)
    # is resumed from the last event seen: every event once, in order.
    cut = CutFirstStream()
    with Client(url, a, transport=cut) as flaky:
        rid = flaky.start("for i in 1 2 3 4 5; do echo line$i; sleep 0.2; done")
        evs = list(flaky.events(rid))
        assert [e[0] for e in evs] == list(range(1, len(evs) + 1)) and evs[-1][1] == "result", evs
        assert "".join(e[2].get("text", "") for e in evs if e[1] == "output") == "".join(
            f"line{i}\n" for i in range(1, 6)), evs
        assert cut.cuts == 1 and cut.resumed_after not in (None, "0"), (cut.cuts, cut.resumed_after)

    # Events, resumed after a number; another key sees nothing.
    rid = c.start("for i in 1 2 3; do echo line$i; sleep 0.1; done")
    evs = list(c.events(rid))
    assert [e[0] for e in evs] == list(range(1, len(evs) + 1)) and evs[-1][1] == "result", evs
    assert [e[0] for e in c.events(rid, after=2)] == [e[0] for e in evs[2:]]
    try:
        other.get_run(rid)
        raise AssertionError("another key's run must be 404")
    except AutodevError as e:
        assert e.status == 404, e

    # Key a runs one at a time and may queue none: 429 carries Retry-After;
    # a client with retries waits it out.
    slow = c.start("sleep 2")
    while c.get_run(slow)["state"] != "running":
        time.sleep(0.05)
    try:
        c.run("true")
        raise AssertionError("the second concurrent run must be refused")
    except AutodevError as e:
        assert (e.status, e.error_class) == (429, "quota") and e.retry_after, e
    with Client(url, a, retries=10, max_wait=1) as patient:
        t = time.time()
        assert patient.run("true")["verdict"] == "passed"
        assert time.time() - t >= 0.5, "it waited for the slot"
    gone = c.start("sleep 60")
    c.cancel(gone)
    while c.get_run(gone)["state"] != "done":
        time.sleep(0.05)
    assert c.get_run(gone)["result"]["verdict"] == "interrupted"

    # Sessions: files in, a run with write-back, files out.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        data = b"X = 1\n"
        info = tarfile.TarInfo("pkg/x.py")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    s = c.create_session(tar=buf.getvalue())
    s.write("data.bin", b"\x00\x01")
    assert s.read("data.bin") == b"\x00\x01"
    res = s.run("cat pkg/x.py && echo made > out.txt", write_back=True)
    assert res["verdict"] == "passed" and res["write_back"]["written"] == ["out.txt"], res
    assert s.read("out.txt") == b"made\n"
    assert sorted(f["path"] for f in s.files()) == ["data.bin", "out.txt", "pkg/x.py"]
    s.remove("data.bin")
    with tarfile.open(fileobj=io.BytesIO(s.archive())) as t:
        assert sorted(t.getnames()) == ["out.txt", "pkg/x.py"], t.getnames()
    assert s.info()["files"] == 2
    s.delete()

    # A session of 1,000 files, 50 MB in all: every byte comes back, and an
    # archive put back and taken again is the same archive.
    rng = random.Random(7)
    files = {f"d{i % 10}/f{i:04}.bin": rng.randbytes(50_000) for i in range(1000)}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_700_000_000
            t.addfile(info, io.BytesIO(data))
    big = c.create_session(tar=buf.getvalue())
    assert big.info()["files"] == 1000 and big.info()["bytes"] == 50_000_000, big.info()
    archive = big.archive()
    with tarfile.open(fileobj=io.BytesIO(archive)) as t:
        back = {m.name: t.extractfile(m).read() for m in t.getmembers()}
    assert back == files, "every file, byte for byte"
    big.write("d0/f0000.bin", b"changed")
    big.restore(archive)
    assert big.read("d0/f0000.bin") == files["d0/f0000.bin"]
    assert big.archive() == archive, "an archive survives a restore byte for byte"
    big.delete()

    # Batches.
    bid = c.submit_batch([{"id": f"t{i}", "runner": f"exit {i % 2}"} for i in range(4)])["id"]
    lines = c.batch_results(bid, wait=True)
    assert sorted(l["verdict"] for l in lines) == ["failed", "failed", "passed", "passed"], lines
    assert c.batch(bid)["pass_at_1"] == 0.5
    u = c.usage()
    assert u["runs"] >= 10 and u["cpu_seconds"] > 0, u
    assert "autodev_runs_total" in c.metrics()


async def main() -> None:
    async with AsyncClient(url, b) as ac:
        res = await ac.run("echo async")
        assert res["stdout"]["text"] == "async\n", res
        rid = await ac.start("echo streamed")
        evs = [e async for e in ac.events(rid)]
        assert evs[-1][2]["result"]["verdict"] == "passed", evs
        s = await ac.create_session({"a.txt": "one"})
        await s.write("b.txt", "two")
        res = await s.run("cat a.txt b.txt > c.txt", write_back=True)
        assert await s.read("c.txt") == b"onetwo", res
        await s.delete()
        assert (await ac.usage())["runs"] >= 2


asyncio.run(main())
print("ok")
