"""The OpenAI Agents SDK (`openai-agents` from PyPI) driving autodev through
`autodev_client.agents`, against a real service: the SDK's own sandbox
session operations (start with a manifest, exec, read, write, ls, mkdir,
mv, rm, persist, hydrate, serialize and resume, shutdown), each exec in a
fresh container whose changes (deletions included) come back, and the
features that need a living process failing clearly.

Usage: agents_sdk.py URL TOKEN
"""
import asyncio
import io
import json
import sys
import tarfile
from pathlib import Path

from agents.sandbox import Manifest
from agents.sandbox.entries import File
from agents.sandbox.types import FileMode, Permissions
from agents.sandbox.errors import (
    ExecNonZeroError,
    ExecTimeoutError,
    ExposedPortUnavailableError,
    InvalidManifestPathError,
    WorkspaceArchiveWriteError,
    WorkspaceReadNotFoundError,
)

from autodev_client.agents import AutodevSandboxClient, AutodevSandboxClientOptions

url, token = sys.argv[1], sys.argv[2]


async def expect(exc, coro, what):
    try:
        await coro
    except exc as e:
        return e
    raise AssertionError(f"{what}: expected {exc.__name__}")


async def read(session, path):
    return (await session.read(Path(path))).read()


async def main():
    client = AutodevSandboxClient(url, token)
    opts = AutodevSandboxClientOptions(limits={"timeout": "60s"})
    plain = Permissions(owner=FileMode.READ | FileMode.WRITE, group=FileMode.READ, other=FileMode.READ)
    manifest = Manifest(entries={
        "seed.txt": File(content=b"seed\n", permissions=plain),
        "src/app.py": File(content=b"X = 1\n", permissions=plain),
        # The SDK's default permissions: 0755.
        "run.sh": File(content=b"#!/bin/sh\necho ran\n"),
    })
    session = await client.create(manifest=manifest, options=opts)
    async with session:
        # The manifest was written into the session by the SDK's own start().
        assert await read(session, "seed.txt") == b"seed\n"
        assert await read(session, "/workspace/src/app.py") == b"X = 1\n"
        r = await session.exec("./run.sh && test ! -x seed.txt")
        assert r.ok() and r.stdout == b"ran\n", ("manifest modes hold", r.exit_code, r.stdout, r.stderr)
        await session.rm("run.sh")

        # Files, binary exact, relative or absolute.
        blob = bytes(range(256)) * 4
        await session.write(Path("bin/data"), io.BytesIO(blob))
        assert await read(session, "/workspace/bin/data") == blob

        # A command sees the files; what it makes, changes and deletes comes back.
        r = await session.exec("cat seed.txt && echo made > made.txt && rm seed.txt "
                               "&& echo 'X = 2' > src/app.py && mkdir -p d && echo x > d/x.txt")
        assert r.ok() and r.stdout == b"seed\n", (r.exit_code, r.stdout, r.stderr)
        assert await read(session, "made.txt") == b"made\n"
        assert await read(session, "src/app.py") == b"X = 2\n"
        assert await read(session, "d/x.txt") == b"x\n"
        await expect(WorkspaceReadNotFoundError, session.read(Path("seed.txt")), "a file the command deleted")

        # Exit codes and both streams.
        r = await session.exec("echo out; echo err >&2; exit 3")
        assert (r.exit_code, r.stdout, r.stderr) == (3, b"out\n", b"err\n"), (r.exit_code, r.stdout, r.stderr)

        # Every exec is a fresh container: a background process and /tmp are gone.
        r = await session.exec("sleep 300 & echo $! > pid.txt; echo t > /tmp/t")
        assert r.ok(), r.stderr
        r = await session.exec("test ! -e /tmp/t && ! kill -0 $(cat pid.txt) 2>/dev/null")
        assert r.ok(), "each exec starts fresh: nothing of the last one lives on"

        # No network: the sandbox has a loopback interface and nothing else.
        r = await session.exec("tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '")
        assert r.stdout.split() == [b"lo"], r.stdout

        # A command over its time gets the SDK's timeout error.
        await expect(ExecTimeoutError, session.exec("sleep 30", timeout=2), "a command over its timeout")

        # ls, mkdir, mv, rm through the session's file routes.
        names = {(e.path, e.is_dir()) for e in await session.ls(".")}
        assert names == {("/workspace/bin", True), ("/workspace/d", True), ("/workspace/made.txt", False),
                         ("/workspace/pid.txt", False), ("/workspace/src", True)}, names
        await session.mkdir("empty/deeper", parents=True)
        await session.mv("made.txt", "moved.txt")
        assert await read(session, "moved.txt") == b"made\n"
        await expect(WorkspaceReadNotFoundError, session.read(Path("made.txt")), "a moved file's old name")
        await expect(ExecNonZeroError, session.rm("d"), "rm of a folder without recursive")
        await session.rm("d", recursive=True)
        await session.rm("pid.txt")
        await expect(ExecNonZeroError, session.ls("d"), "ls of a removed folder")

        # Paths out of the workspace: refused by the SDK's checks, then the service's.
        await expect(InvalidManifestPathError, session.read(Path("../etc/passwd")), "a path out of the workspace")
        await expect(InvalidManifestPathError, session.write(Path("/etc/x"), io.BytesIO(b"x")), "an absolute path")
        await expect(WorkspaceArchiveWriteError, session.write(Path(".git/config"), io.BytesIO(b"x")),
                     "VCS metadata")

        # What needs a process that lives on fails clearly.
        assert not session.supports_pty()
        await expect(NotImplementedError, session.pty_exec_start("sh"), "a PTY")
        await expect(ExposedPortUnavailableError, session.resolve_exposed_port(8080), "an exposed port")

        # persist / hydrate round-trip byte for byte.
        tar = (await session.persist_workspace()).read()
        with tarfile.open(fileobj=io.BytesIO(tar)) as t:
            kept = sorted(m.name for m in t.getmembers() if m.isfile())
        assert kept == ["bin/data", "moved.txt", "src/app.py"], kept
        await session.write(Path("moved.txt"), io.BytesIO(b"changed"))
        await session.write(Path("extra.txt"), io.BytesIO(b"extra"))
        await session.hydrate_workspace(io.BytesIO(tar))
        assert await read(session, "moved.txt") == b"made\n"
        assert await read(session, "bin/data") == blob
        await expect(WorkspaceReadNotFoundError, session.read(Path("extra.txt")), "hydrate replaces the files")
        assert (await session.persist_workspace()).read() == tar, "archives are byte-exact"

        # The state serializes, and resumes onto the same service session.
        payload = json.loads(json.dumps(client.serialize_session_state(session.state)))
        state = client.deserialize_session_state(payload)
        resumed = await client.resume(state)
        assert resumed.state.autodev_session == session.state.autodev_session
        assert await read(resumed, "moved.txt") == b"made\n"

    # aclose shut the backend down: the service's session is gone.
    assert not await session._inner.running()
    await client.aclose()
    print("agents sdk: all session operations held")


asyncio.run(main())
