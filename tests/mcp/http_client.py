"""`autodev serve --mcp` driven by the real MCP client (the `mcp` Python SDK
from PyPI) over streamable HTTP, with a key: the tools on a session's
files, a fix-and-retest loop, write-back with deletions, confinement,
limits that only tighten, hostile commands, and the session ended on close.

Usage: http_client.py URL TOKEN
"""
import asyncio
import sys

import httpx
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

url, token = sys.argv[1], sys.argv[2]
auth = {"Authorization": f"Bearer {token}"}


async def main() -> None:
    async with create_mcp_http_client(headers=auth) as http:
        async with streamable_http_client(url + "/mcp", http_client=http) as (read, write):
            async with ClientSession(read, write) as s:
                init = await s.initialize()
                assert init.server_info.name == "autodev" and "FRESH" in (init.instructions or ""), init
                tools = {t.name: t for t in (await s.list_tools()).tools}
                assert sorted(tools) == ["exec", "list_files", "read_file", "run_tests", "write_file"], tools
                for name in ("run_tests", "exec"):
                    assert "FRESH" in tools[name].description, tools[name]

                # A project written through the tools, failing, fixed, passing.
                test = "from calc import add\n\ndef test_add():\n    assert add(2, 3) == 5\n"
                for path, content in (("calc.py", "def add(a, b):\n    return a - b\n"), ("test_calc.py", test)):
                    r = await s.call_tool("write_file", {"path": path, "content": content})
                    assert not r.is_error, r
                r = await s.call_tool("run_tests", {})
                assert r.is_error and r.structured_content["verdict"] == "failed", r
                failing = r.structured_content["tests"]["failing"]
                assert failing and "test_add" in failing[0]["name"], failing
                await s.call_tool("write_file", {"path": "calc.py", "content": "def add(a, b):\n    return a + b\n"})
                r = await s.call_tool("run_tests", {})
                assert not r.is_error and r.structured_content["tests"]["passed"] == 1, r
                run_id = r.structured_content["run"]

                # Write-back brings back what a command made and what it deleted.
                r = await s.call_tool("exec", {"command": "echo kept > kept.txt && rm test_calc.py",
                                               "write_back": True})
                wb = r.structured_content["write_back"]
                assert wb["written"] == ["kept.txt"] and wb["deleted"] == ["test_calc.py"], wb
                r = await s.call_tool("exec", {"command": "echo gone > gone.txt"})
                assert not r.is_error, r
                r = await s.call_tool("list_files", {})
                paths = sorted(f["path"] for f in r.structured_content["files"])
                assert paths == ["calc.py", "kept.txt"], paths
                r = await s.call_tool("read_file", {"path": "kept.txt"})
                assert r.content[0].text == "kept\n", r

                # Confinement.
                for bad in ({"path": "../escape", "content": "x"}, {"path": "/etc/passwd", "content": "x"},
                            {"path": ".git/config", "content": "x"}):
                    r = await s.call_tool("write_file", bad)
                    assert r.is_error, (bad, r)
                r = await s.call_tool("read_file", {"path": "../../etc/passwd"})
                assert r.is_error, r

                # Limits only tighten; a timeout is a verdict; bad arguments are tool errors.
                r = await s.call_tool("exec", {"command": "true", "limits": {"memory": "100g"}})
                assert r.is_error and "memory" in r.content[0].text, r
                r = await s.call_tool("exec", {"command": "sleep 30", "limits": {"timeout": "1s"}})
                assert r.structured_content["verdict"] == "timed_out", r
                for bad in ({"command": "true", "bogus": 1}, {"command": 42}, {"command": []}):
                    r = await s.call_tool("exec", bad)
                    assert r.is_error, (bad, r)

                # Hostile commands hold as in exec.
                r = await s.call_tool("exec", {"command": "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '"})
                assert r.structured_content["stdout"]["text"].split() == ["lo"], r
                # A fork bomb meets the process limit, and everything it
                # started is gone when the call returns.
                r = await s.call_tool("exec", {"command": "f(){ f|f& };f; sleep 3", "limits": {"timeout": "20s"}})
                assert "Cannot fork" in r.structured_content["stderr"]["text"], r
                r = await s.call_tool("exec", {"command": "ps -e -o pid= | wc -l"})
                assert int(r.structured_content["stdout"]["text"]) < 10, r
                # An output flood is kept as head and tail; the answer stays small.
                r = await s.call_tool("exec", {"command": "head -c 20000000 /dev/zero | tr '\\0' x"})
                out = r.structured_content["stdout"]
                assert r.structured_content["verdict"] == "passed" and out["total_bytes"] == 20000000, r
                assert len(r.content[0].text) < 20000, "the answer is bounded"

    # The runs were the key's, through the service's queue; the session
    # ended with the client (it sends DELETE on close).
    usage = httpx.get(url + "/v1/usage", headers=auth, timeout=30).json()
    assert usage["runs"] >= 9, usage
    r = httpx.get(url + f"/v1/runs/{run_id}", headers=auth, timeout=30)
    assert r.status_code == 200 and r.json()["result"]["verdict"] == "passed", r.text
    print("ok")


asyncio.run(main())
