"""A sandbox client for the OpenAI Agents SDK (`openai-agents` 0.24) over
autodev sessions: `pip install './clients/python[agents]'`.

    from autodev_client.agents import AutodevSandboxClient, AutodevSandboxClientOptions

    client = AutodevSandboxClient("http://127.0.0.1:8844", token)
    session = await client.create(options=AutodevSandboxClientOptions())

The workspace lives on the service's host (an autodev session); every
`exec` runs in a **fresh** container hydrated from it, and what the command
changed, made and deleted is copied back when it ends. So no process
outlives an `exec`: a server started in the background is killed when its
`exec` returns, and the SDK features that need a process to live on fail
with a clear error instead of a wrong answer: PTY sessions
(`supports_pty()` is false; `pty_exec_start` raises `NotImplementedError`)
and exposed ports (`ExposedPortUnavailableError`). Empty folders are not
kept (a session holds files), nor any mode bit but the executable one
(a manifest entry's `permissions` set that bit only; its `group`, and
manifest users and groups, are refused: every command runs as the
sandbox's one unprivileged user). Command output comes back as text
(invalid UTF-8 replaced), head and tail kept past the service's output limit.
"""

from __future__ import annotations

import io
import uuid
from pathlib import Path, PurePosixPath
from typing import Any, Dict, List, Literal, Optional, Tuple, Union

from agents.sandbox.errors import (
    ExecNonZeroError,
    ExecTimeoutError,
    ExecTransportError,
    WorkspaceArchiveReadError,
    WorkspaceArchiveWriteError,
    WorkspaceReadNotFoundError,
)
from agents.sandbox.files import EntryKind, FileEntry
from agents.sandbox.manifest import Manifest
from agents.sandbox.session import SandboxSession, SandboxSessionState
from agents.sandbox.session.base_sandbox_session import BaseSandboxSession
from agents.sandbox.session.manager import Instrumentation
from agents.sandbox.session.sandbox_client import BaseSandboxClient, BaseSandboxClientOptions
from agents.sandbox.snapshot import SnapshotBase, SnapshotSpec, resolve_snapshot
from agents.sandbox.types import ExecResult, Permissions, User
from pydantic import Field

from . import AsyncClient, AsyncSession, AutodevError

__all__ = [
    "AutodevSandboxClient",
    "AutodevSandboxClientOptions",
    "AutodevSandboxSession",
    "AutodevSandboxSessionState",
]

# Where autodev puts the workspace in every sandbox.
WORKSPACE = "/workspace"


class AutodevSandboxClientOptions(BaseSandboxClientOptions):
    """What every `exec` of a session gets: `image` (else the service's
    profile), `limits` (the service's request limits, e.g. `{"timeout":
    "60s", "memory": "512m"}`; the operator's and the key's caps still
    apply) and `env`."""

    type: Literal["autodev"] = "autodev"
    image: Optional[str] = None
    limits: Dict[str, Any] = Field(default_factory=dict)
    env: Dict[str, str] = Field(default_factory=dict)


class AutodevSandboxSessionState(SandboxSessionState):
    """A session's state: the service's session id besides the SDK's own."""

    type: Literal["autodev"] = "autodev"
    autodev_session: str
    image: Optional[str] = None
    limits: Dict[str, Any] = Field(default_factory=dict)
    env: Dict[str, str] = Field(default_factory=dict)


def _text(stream: Any) -> bytes:
    return (stream or {}).get("text", "").encode() if isinstance(stream, dict) else b""


def _seconds(timeout: Optional[float]) -> Optional[str]:
    # The service takes durations as text; whole milliseconds, at least one.
    return None if timeout is None else f"{max(1, int(timeout * 1000))}ms"


class AutodevSandboxSession(BaseSandboxSession):
    """One autodev session seen as an Agents SDK sandbox session."""

    state: AutodevSandboxSessionState

    def __init__(self, *, client: AsyncClient, state: AutodevSandboxSessionState) -> None:
        self._client = client
        self.state = state

    @property
    def _remote(self) -> AsyncSession:
        return self._client.session(self.state.autodev_session)

    def _rel(self, path: Union[Path, str], *, for_write: bool = False) -> str:
        """The workspace-relative path the service's file routes take,
        after the SDK's own checks (no escape from the root)."""
        full = PurePosixPath(self.normalize_path(path, for_write=for_write).as_posix())
        rel = full.relative_to(self.state.manifest.root).as_posix()
        return "" if rel == "." else rel

    # Commands
    async def _exec_internal(self, *command: Union[str, Path], timeout: Optional[float] = None) -> ExecResult:
        argv = [str(c) for c in command]
        limits = dict(self.state.limits)
        if timeout is not None:
            limits["timeout"] = _seconds(timeout)
        try:
            res = await self._remote.run(argv, write_back=True, limits=limits or None,
                                         env=self.state.env or None, image=self.state.image)
        except AutodevError as e:
            raise ExecTransportError(command=argv, message=f"autodev: {e}", cause=e,
                                     retryable=e.status in (429, 503)) from e
        verdict = res.get("verdict")
        if verdict == "timed_out":
            raise ExecTimeoutError(command=argv, timeout_s=timeout,
                                   context={"autodev_run": res.get("id")})
        if verdict not in ("passed", "failed", "oom_killed", "output_limit"):
            raise ExecTransportError(command=argv, message=f"autodev: {verdict}: {res.get('error')}",
                                     context={"autodev_run": res.get("id")})
        stdout, stderr = _text(res.get("stdout")), _text(res.get("stderr"))
        notes = self._notes(res)
        if notes:
            stderr += ("\n" if stderr and not stderr.endswith(b"\n") else "").encode() + notes
        code = res.get("exit_code")
        return ExecResult(stdout=stdout, stderr=stderr, exit_code=137 if code is None else int(code))

    async def _exec_checked_nonzero(self, *command: Union[str, Path]) -> ExecResult:
        # The SDK applies a manifest entry's metadata with `chmod` (and
        # `chgrp`, `groupadd`, `useradd` for accounts). A session keeps one
        # bit of mode, executable or not, which the file routes set: no
        # container per entry. Accounts do not exist here: every command
        # runs as the sandbox's one unprivileged user.
        argv = [str(c) for c in command]
        if argv[:1] in (["groupadd"], ["useradd"], ["usermod"], ["chgrp"]):
            raise ExecTransportError(command=argv, message=(
                "autodev: manifest users and groups are not supported: every command "
                "runs as the sandbox's one unprivileged user"))
        if len(argv) == 3 and argv[0] == "chmod" and argv[1].isdigit():
            rel = self._rel(argv[2])
            want = int(argv[1], 8) & 0o111 != 0
            files = {f["path"]: f.get("executable", False) for f in await self._remote.files()}
            if rel in files and files[rel] != want:
                await self._remote.write(rel, await self._remote.read(rel), executable=want)
            # A folder is kept implicitly: nothing to set.
            return ExecResult(stdout=b"", stderr=b"", exit_code=0)
        return await super()._exec_checked_nonzero(*command)

    @staticmethod
    def _notes(res: Dict[str, Any]) -> bytes:
        """What the command's output does not say: a limit that stopped it,
        and changes that did not reach the workspace (never silently)."""
        lines: List[str] = []
        if res.get("verdict") in ("oom_killed", "output_limit"):
            lines.append(f"autodev: the command was stopped: {res['verdict']}")
        wb = res.get("write_back") or {}
        if wb.get("error"):
            lines.append(f"autodev: the workspace was not updated: {wb['error']}")
        for r in wb.get("refused", []):
            lines.append(f"autodev: not kept in the workspace: {r.get('path')}: {r.get('why')}")
        return "".join(line + "\n" for line in lines).encode()

    # Files
    async def read(self, path: Path, *, user: Optional[Union[str, User]] = None) -> io.IOBase:
        rel = self._rel(path)
        try:
            return io.BytesIO(await self._remote.read(rel))
        except AutodevError as e:
            if e.status == 404 and "file" in e.message:
                raise WorkspaceReadNotFoundError(path=Path(path), cause=e) from e
            raise WorkspaceArchiveReadError(path=Path(path), context={"autodev": e.message}, cause=e) from e

    async def write(self, path: Path, data: io.IOBase, *, user: Optional[Union[str, User]] = None) -> None:
        rel = self._rel(path, for_write=True)
        payload = data.read()
        if isinstance(payload, str):
            payload = payload.encode()
        try:
            await self._remote.write(rel, bytes(payload))
        except AutodevError as e:
            raise WorkspaceArchiveWriteError(path=Path(path), message=f"autodev: {e.message}",
                                             cause=e) from e

    async def _listing(self) -> List[Tuple[str, int]]:
        return [(f["path"], int(f["bytes"])) for f in await self._remote.files()]

    async def ls(self, path: Union[Path, str], *, user: Optional[Union[str, User]] = None) -> List[FileEntry]:
        rel = self._rel(path)
        base = PurePosixPath(self.state.manifest.root, rel).as_posix()
        files = await self._listing()
        entries: Dict[str, FileEntry] = {}
        for p, size in files:
            if p == rel:
                return [FileEntry(path=base, permissions=Permissions(owner=6, group=4, other=4),
                                  owner="autodev", group="autodev", size=size)]
            inside = p if not rel else (p[len(rel) + 1:] if p.startswith(rel + "/") else None)
            if inside is None:
                continue
            first, _, rest = inside.partition("/")
            kind = EntryKind.DIRECTORY if rest else EntryKind.FILE
            perms = Permissions(owner=7, group=5, other=5, directory=True) if rest else \
                Permissions(owner=6, group=4, other=4)
            entries.setdefault(first, FileEntry(path=f"{base.rstrip('/')}/{first}", permissions=perms,
                                                owner="autodev", group="autodev",
                                                size=0 if rest else size, kind=kind))
        if not entries and rel:
            cmd = ("ls", "-la", "--", base)
            missing = ExecResult(stdout=b"", exit_code=2,
                                 stderr=f"ls: cannot access '{base}': No such file or directory\n".encode())
            raise ExecNonZeroError(missing, command=cmd)
        return sorted(entries.values(), key=lambda e: e.path)

    async def rm(self, path: Union[Path, str], *, recursive: bool = False,
                 user: Optional[Union[str, User]] = None) -> None:
        rel = self._rel(path, for_write=True)
        files = [p for p, _ in await self._listing()]
        if rel in files:
            await self._remote.remove(rel)
            return
        under = [p for p in files if not rel or p.startswith(rel + "/")]
        cmd = ("rm", "-rf" if recursive else "--", rel)
        if under and not recursive:
            why = f"rm: cannot remove '{path}': Is a directory\n"
            raise ExecNonZeroError(ExecResult(stdout=b"", stderr=why.encode(), exit_code=1), command=cmd)
        if not under and not recursive:
            why = f"rm: cannot remove '{path}': No such file or directory\n"
            raise ExecNonZeroError(ExecResult(stdout=b"", stderr=why.encode(), exit_code=1), command=cmd)
        for p in under:
            await self._remote.remove(p)

    async def mv(self, source: Union[Path, str], destination: Union[Path, str], *,
                 user: Optional[Union[str, User]] = None) -> None:
        src, dst = self._rel(source, for_write=True), self._rel(destination, for_write=True)
        if src not in [p for p, _ in await self._listing()]:
            why = "Move source must be a regular file or symlink\n"
            raise ExecNonZeroError(ExecResult(stdout=b"", stderr=why.encode(), exit_code=1),
                                   command=("mv", "-fT", "--", src, dst))
        await self._remote.write(dst, await self._remote.read(src))
        await self._remote.remove(src)

    async def mkdir(self, path: Union[Path, str], *, parents: bool = False,
                    user: Optional[Union[str, User]] = None) -> None:
        # A session holds files; their folders exist as long as they do.
        # The path is still checked, so a bad one fails here as elsewhere.
        self._rel(path, for_write=True)

    # The session itself
    async def running(self) -> bool:
        try:
            await self._remote.info()
            return True
        except AutodevError as e:
            if e.status == 404:
                return False
            raise

    async def persist_workspace(self) -> io.IOBase:
        return io.BytesIO(await self._remote.archive())

    async def hydrate_workspace(self, data: io.IOBase) -> None:
        payload = data.read()
        try:
            await self._remote.restore(bytes(payload))
        except AutodevError as e:
            raise WorkspaceArchiveWriteError(path=Path(self.state.manifest.root),
                                             message=f"autodev: {e.message}", cause=e) from e

    async def _shutdown_backend(self) -> None:
        try:
            await self._remote.delete()
        except AutodevError as e:
            if e.status != 404:
                raise


class AutodevSandboxClient(BaseSandboxClient[AutodevSandboxClientOptions]):
    """Makes Agents SDK sandbox sessions out of autodev sessions on the
    service at `url` (`autodev serve`), with `token` when it has keys."""

    backend_id = "autodev"

    def __init__(self, url: str, token: Optional[str] = None, *, timeout: float = 600.0,
                 instrumentation: Optional[Instrumentation] = None) -> None:
        super().__init__()
        self._client = AsyncClient(url, token, timeout=timeout)
        self._instrumentation = instrumentation if instrumentation is not None else Instrumentation()

    async def create(self, *, snapshot: Optional[Union[SnapshotSpec, SnapshotBase]] = None,
                     manifest: Optional[Manifest] = None,
                     options: AutodevSandboxClientOptions) -> SandboxSession:
        manifest = manifest if manifest is not None else Manifest()
        self._validate_manifest_for_create(manifest)
        if manifest.root != WORKSPACE:
            raise ValueError(f"autodev runs every command in {WORKSPACE}: give Manifest(root={WORKSPACE!r})")
        remote = await self._client.create_session()
        session_id = uuid.uuid4()
        state = AutodevSandboxSessionState(
            session_id=session_id, manifest=manifest,
            snapshot=resolve_snapshot(snapshot, str(session_id)),
            autodev_session=remote.id, image=options.image,
            limits=dict(options.limits), env=dict(options.env))
        inner = AutodevSandboxSession(client=self._client, state=state)
        return self._wrap_session(inner, instrumentation=self._instrumentation)

    async def delete(self, session: SandboxSession) -> SandboxSession:
        inner = session._inner
        if not isinstance(inner, AutodevSandboxSession):
            raise TypeError("AutodevSandboxClient.delete expects an AutodevSandboxSession")
        await inner._shutdown_backend()
        return session

    async def resume(self, state: SandboxSessionState) -> SandboxSession:
        """The session `state` names if the service still has it (its files
        as they are); else a new one, which `start()` fills from the state's
        snapshot."""
        if not isinstance(state, AutodevSandboxSessionState):
            raise TypeError("AutodevSandboxClient.resume expects an AutodevSandboxSessionState")
        inner = AutodevSandboxSession(client=self._client, state=state)
        alive = await inner.running()
        if not alive:
            state.autodev_session = (await self._client.create_session()).id
            state.workspace_root_ready = False
        inner._set_start_state_preserved(alive)
        return self._wrap_session(inner, instrumentation=self._instrumentation)

    def deserialize_session_state(self, payload: Dict[str, object]) -> SandboxSessionState:
        return self._deserialize_session_state_payload(payload, AutodevSandboxSessionState)

    async def aclose(self) -> None:
        """Closes the HTTP connections (sessions stay until deleted or idle)."""
        await self._client.aclose()
