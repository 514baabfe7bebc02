"""`autodev mcp` driven by the real MCP client (the `mcp` Python SDK from
PyPI, over stdio): the tools, their descriptions, a fix-and-retest loop,
confinement, write-back, and limits that only tighten.

Usage: client.py AUTODEV WORKSPACE IMAGE LABEL
"""
import asyncio
import os
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

autodev, workspace, image, label = sys.argv[1:5]


async def main() -> None:
    params = StdioServerParameters(
        command=autodev,
        args=["mcp", "-w", workspace, "--image", image, "--label", label, "--no-setup", "--warm", "0"],
        env={k: v for k, v in os.environ.items() if not k.startswith("AUTODEV_")},
    )
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as s:
            init = await s.initialize()
            assert init.server_info.name == "autodev", init
            assert "FRESH" in (init.instructions or ""), init.instructions
            tools = {t.name: t for t in (await s.list_tools()).tools}
            assert sorted(tools) == ["doctor", "exec", "list_files", "read_file", "run_tests", "write_file"], tools
            for name in ("run_tests", "exec"):
                assert "FRESH" in tools[name].description, tools[name]

            r = await s.call_tool("run_tests", {})
            assert r.is_error and r.structured_content["verdict"] == "failed", r
            failing = r.structured_content["tests"]["failing"]
            assert failing and "test_add" in failing[0]["name"], failing

            r = await s.call_tool("write_file", {"path": "calc.py", "content": "def add(a, b):\n    return a + b\n"})
            assert not r.is_error, r
            r = await s.call_tool("run_tests", {})
            assert not r.is_error and r.structured_content["tests"]["passed"] == 1, r
            r = await s.call_tool("read_file", {"path": "calc.py"})
            assert "a + b" in r.content[0].text, r

            for bad in ({"path": "../escape", "content": "x"}, {"path": "/etc/passwd", "content": "x"},
                        {"path": ".git/config", "content": "x"}):
                r = await s.call_tool("write_file", bad)
                assert r.is_error, (bad, r)
            r = await s.call_tool("read_file", {"path": "../../etc/passwd"})
            assert r.is_error, r

            r = await s.call_tool("exec", {"command": "echo gone > gone.txt"})
            assert not r.is_error, r
            r = await s.call_tool("exec", {"command": ["sh", "-c", "echo kept > kept.txt"], "write_back": True})
            assert r.structured_content["write_back"]["written"] == ["kept.txt"], r
            r = await s.call_tool("list_files", {})
            paths = [f["path"] for f in r.structured_content["files"]]
            assert "kept.txt" in paths and "gone.txt" not in paths, paths

            r = await s.call_tool("exec", {"command": "true", "limits": {"memory": "100g"}})
            assert r.is_error and "memory" in r.content[0].text, r
            r = await s.call_tool("exec", {"command": "sleep 30", "limits": {"timeout": "1s"}})
            assert r.structured_content["verdict"] == "timed_out", r
            r = await s.call_tool("exec", {"command": "true", "bogus": 1})
            assert r.is_error, r

            # Each guarantee checked with this server's image and limits.
            r = await s.call_tool("doctor", {})
            assert not r.is_error, r
            found = {f["check"]: f["status"] for f in r.structured_content["findings"]}
            assert len(found) >= 10 and not r.structured_content["broken"], r.structured_content
            assert "held" in r.content[0].text, r.content[0].text
    print("ok")


asyncio.run(main())
