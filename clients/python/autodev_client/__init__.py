"""Client for `autodev serve` (see docs/serve.md and docs/openapi.json).

`Client` is synchronous, `AsyncClient` the same over asyncio. Both speak
the service's routes only; nothing of the sandbox is here.
"""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import quote
from typing import Any, AsyncIterator, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import httpx

from .models import Batch, FileInfo, Health, Result, RunState, Session as SessionInfo, Usage

__all__ = [
    "AsyncClient",
    "AsyncSession",
    "AutodevError",
    "Client",
    "Event",
    "ROUTES",
    "Session",
]

# Every (method, path) the client calls, as the OpenAPI document spells them.
ROUTES: Tuple[Tuple[str, str], ...] = (
    ("get", "/v1/health"),
    ("get", "/v1/openapi.json"),
    ("get", "/metrics"),
    ("post", "/v1/runs"),
    ("get", "/v1/runs/{id}"),
    ("delete", "/v1/runs/{id}"),
    ("get", "/v1/runs/{id}/events"),
    ("get", "/v1/usage"),
    ("post", "/v1/sessions"),
    ("get", "/v1/sessions/{id}"),
    ("delete", "/v1/sessions/{id}"),
    ("get", "/v1/sessions/{id}/files"),
    ("get", "/v1/sessions/{id}/files/{path}"),
    ("put", "/v1/sessions/{id}/files/{path}"),
    ("delete", "/v1/sessions/{id}/files/{path}"),
    ("post", "/v1/sessions/{id}/runs"),
    ("get", "/v1/sessions/{id}/archive"),
    ("put", "/v1/sessions/{id}/archive"),
    ("post", "/v1/batches"),
    ("get", "/v1/batches/{id}"),
    ("delete", "/v1/batches/{id}"),
    ("get", "/v1/batches/{id}/results"),
)

Runner = Union[str, Sequence[str]]
Json = Dict[str, Any]
Event = Tuple[int, str, Json]
"""A server-sent event: its sequence number, its name, its data."""


class AutodevError(Exception):
    """An answer that is not a success, with the service's error class."""

    def __init__(self, status: int, error_class: str, message: str, retry_after: Optional[float] = None):
        super().__init__(f"{status} {error_class}: {message}")
        self.status = status
        self.error_class = error_class
        self.message = message
        self.retry_after = retry_after


def _error(r: httpx.Response) -> AutodevError:
    try:
        e = r.json()["error"]
        cls, msg = e["class"], e["message"]
    except (ValueError, KeyError, TypeError):
        cls, msg = "internal", r.text[:500]
    ra = r.headers.get("retry-after")
    return AutodevError(r.status_code, cls, msg, float(ra) if ra else None)


def _run_body(runner: Runner, **fields: Any) -> Json:
    body: Json = {"runner": runner if isinstance(runner, str) else list(runner)}
    body.update({k: v for k, v in fields.items() if v is not None})
    return body


def _file(session_id: str, path: str) -> str:
    # Percent-encoded, so a name with `?`, `#` or `%` in it stays a name; the
    # service decodes it and applies its path rules to the result.
    return f"/v1/sessions/{session_id}/files/{quote(path, safe='/')}"


def _exec_param(executable: Optional[bool]) -> Dict[str, str]:
    return {} if executable is None else {"executable": str(executable).lower()}


def _events(lines: Iterator[str]) -> Iterator[Event]:
    block: Dict[str, str] = {}
    for line in lines:
        if line == "":
            if "id" in block and "data" in block:
                yield int(block["id"]), block.get("event", "message"), json.loads(block["data"])
            block = {}
        elif not line.startswith(":"):
            k, _, v = line.partition(":")
            block[k] = v[1:] if v.startswith(" ") else v


class Client:
    """A synchronous client. `retries`: how many times a 429 or 503 answer
    is retried after its Retry-After (at most `max_wait` seconds each)."""

    def __init__(self, url: str, token: Optional[str] = None, *, timeout: float = 600.0,
                 retries: int = 5, max_wait: float = 30.0, transport: Optional[httpx.BaseTransport] = None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout, transport=transport)
        self.retries, self.max_wait = retries, max_wait

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        for attempt in range(self.retries + 1):
            r = self._http.request(method, path, **kw)
            if r.status_code in (429, 503) and attempt < self.retries:
                time.sleep(min(float(r.headers.get("retry-after", "1")), self.max_wait))
                continue
            if r.status_code >= 400:
                raise _error(r)
            return r
        raise AssertionError("unreachable")

    # Runs
    def run(self, runner: Runner, files: Optional[Mapping[str, str]] = None, *, limits: Optional[Json] = None,
            env: Optional[Mapping[str, str]] = None, image: Optional[str] = None,
            setup: Optional[Union[str, bool]] = None) -> Result:
        """One run in a fresh container; the result `exec --json` prints."""
        body = _run_body(runner, files=files, limits=limits, env=env, image=image, setup=setup)
        return self._call("POST", "/v1/runs", json=body).json()

    def start(self, runner: Runner, files: Optional[Mapping[str, str]] = None, **fields: Any) -> str:
        """Starts a run and returns its id at once."""
        body = _run_body(runner, files=files, **fields)
        return self._call("POST", "/v1/runs", params={"wait": "false"}, json=body).json()["id"]

    def get_run(self, run_id: str) -> RunState:
        return self._call("GET", f"/v1/runs/{run_id}").json()

    def cancel(self, run_id: str) -> RunState:
        return self._call("DELETE", f"/v1/runs/{run_id}").json()

    def events(self, run_id: str, after: int = 0) -> Iterator[Event]:
        """The run's events after number `after`, until its result; a
        broken stream is resumed where it stopped."""
        seen = after
        for _ in range(self.retries + 1):
            try:
                with self._http.stream("GET", f"/v1/runs/{run_id}/events",
                                       headers={"Last-Event-ID": str(seen)}) as r:
                    if r.status_code >= 400:
                        r.read()
                        raise _error(r)
                    for ev in _events(r.iter_lines()):
                        seen = ev[0]
                        yield ev
                        if ev[1] == "result":
                            return
                return
            except httpx.TransportError:
                continue

    def usage(self, since: int = 0) -> Usage:
        return self._call("GET", "/v1/usage", params={"since": since}).json()

    def health(self) -> Health:
        return self._call("GET", "/v1/health").json()

    def openapi(self) -> Json:
        return self._call("GET", "/v1/openapi.json").json()

    def metrics(self) -> str:
        return self._call("GET", "/metrics").text

    # Sessions
    def create_session(self, files: Optional[Mapping[str, str]] = None, tar: Optional[bytes] = None) -> "Session":
        """A workspace on the service's host; each run on it is a fresh container."""
        if tar is not None:
            r = self._call("POST", "/v1/sessions", content=tar, headers={"Content-Type": "application/x-tar"})
        else:
            r = self._call("POST", "/v1/sessions", json={"files": dict(files or {})})
        return Session(self, r.json()["id"])

    def session(self, session_id: str) -> "Session":
        """A session made earlier (by id), without asking the service."""
        return Session(self, session_id)

    # Batches
    def submit_batch(self, tasks: Sequence[Json]) -> Batch:
        lines = "\n".join(json.dumps(t) for t in tasks)
        return self._call("POST", "/v1/batches", content=lines.encode(),
                          headers={"Content-Type": "application/x-ndjson"}).json()

    def batch(self, batch_id: str) -> Batch:
        return self._call("GET", f"/v1/batches/{batch_id}").json()

    def cancel_batch(self, batch_id: str) -> Batch:
        return self._call("DELETE", f"/v1/batches/{batch_id}").json()

    def batch_results(self, batch_id: str, wait: bool = False) -> List[Result]:
        r = self._call("GET", f"/v1/batches/{batch_id}/results", params={"wait": str(wait).lower()})
        return [json.loads(line) for line in r.text.splitlines() if line.strip()]


class Session:
    """A session of a `Client`."""

    def __init__(self, client: Client, session_id: str):
        self.client, self.id = client, session_id

    def _path(self, rest: str = "") -> str:
        return f"/v1/sessions/{self.id}{rest}"

    def info(self) -> SessionInfo:
        return self.client._call("GET", self._path()).json()

    def files(self) -> List[FileInfo]:
        """Every regular file: `{"path", "bytes"}`."""
        return self.client._call("GET", self._path("/files")).json()["files"]

    def read(self, path: str) -> bytes:
        return self.client._call("GET", _file(self.id, path)).content

    def write(self, path: str, data: Union[bytes, str], *, executable: Optional[bool] = None) -> None:
        """Writes a file whole; `executable` sets or clears its executable bit
        (else a new file is not executable and a replaced one keeps its mode)."""
        content = data.encode() if isinstance(data, str) else data
        self.client._call("PUT", _file(self.id, path), content=content, params=_exec_param(executable))

    def remove(self, path: str) -> None:
        self.client._call("DELETE", _file(self.id, path))

    def run(self, runner: Runner, *, write_back: bool = False, **fields: Any) -> Result:
        """A run on the session's files in a fresh container; with
        `write_back`, what the command changed (and deleted) is copied back."""
        body = _run_body(runner, write_back=write_back, **fields)
        return self.client._call("POST", self._path("/runs"), json=body).json()

    def archive(self) -> bytes:
        """The files as a tar."""
        return self.client._call("GET", self._path("/archive")).content

    def restore(self, tar: bytes) -> None:
        """Replaces the files with a tar's, whole or not at all."""
        self.client._call("PUT", self._path("/archive"), content=tar,
                          headers={"Content-Type": "application/x-tar"})

    def delete(self) -> None:
        self.client._call("DELETE", self._path())


class AsyncClient:
    """The same as `Client`, over asyncio."""

    def __init__(self, url: str, token: Optional[str] = None, *, timeout: float = 600.0,
                 retries: int = 5, max_wait: float = 30.0, transport: Optional[httpx.AsyncBaseTransport] = None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(base_url=url.rstrip("/"), headers=headers, timeout=timeout,
                                       transport=transport)
        self.retries, self.max_wait = retries, max_wait

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        for attempt in range(self.retries + 1):
            r = await self._http.request(method, path, **kw)
            if r.status_code in (429, 503) and attempt < self.retries:
                await asyncio.sleep(min(float(r.headers.get("retry-after", "1")), self.max_wait))
                continue
            if r.status_code >= 400:
                raise _error(r)
            return r
        raise AssertionError("unreachable")

    async def run(self, runner: Runner, files: Optional[Mapping[str, str]] = None, **fields: Any) -> Result:
        return (await self._call("POST", "/v1/runs", json=_run_body(runner, files=files, **fields))).json()

    async def start(self, runner: Runner, files: Optional[Mapping[str, str]] = None, **fields: Any) -> str:
        body = _run_body(runner, files=files, **fields)
        return (await self._call("POST", "/v1/runs", params={"wait": "false"}, json=body)).json()["id"]

    async def get_run(self, run_id: str) -> RunState:
        return (await self._call("GET", f"/v1/runs/{run_id}")).json()

    async def cancel(self, run_id: str) -> RunState:
        return (await self._call("DELETE", f"/v1/runs/{run_id}")).json()

    async def events(self, run_id: str, after: int = 0) -> AsyncIterator[Event]:
        seen = after
        for _ in range(self.retries + 1):
            try:
                async with self._http.stream("GET", f"/v1/runs/{run_id}/events",
                                             headers={"Last-Event-ID": str(seen)}) as r:
                    if r.status_code >= 400:
                        await r.aread()
                        raise _error(r)
                    lines = [line async for line in r.aiter_lines()]
                for ev in _events(iter(lines)):
                    seen = ev[0]
                    yield ev
                    if ev[1] == "result":
                        return
                return
            except httpx.TransportError:
                continue

    async def usage(self, since: int = 0) -> Usage:
        return (await self._call("GET", "/v1/usage", params={"since": since})).json()

    async def create_session(self, files: Optional[Mapping[str, str]] = None,
                             tar: Optional[bytes] = None) -> "AsyncSession":
        if tar is not None:
            r = await self._call("POST", "/v1/sessions", content=tar,
                                 headers={"Content-Type": "application/x-tar"})
        else:
            r = await self._call("POST", "/v1/sessions", json={"files": dict(files or {})})
        return AsyncSession(self, r.json()["id"])

    def session(self, session_id: str) -> "AsyncSession":
        """A session made earlier (by id), without asking the service."""
        return AsyncSession(self, session_id)


class AsyncSession:
    """A session of an `AsyncClient`: the same methods as `Session`."""

    def __init__(self, client: AsyncClient, session_id: str):
        self.client, self.id = client, session_id

    def _path(self, rest: str = "") -> str:
        return f"/v1/sessions/{self.id}{rest}"

    async def info(self) -> SessionInfo:
        return (await self.client._call("GET", self._path())).json()

    async def files(self) -> List[FileInfo]:
        return (await self.client._call("GET", self._path("/files"))).json()["files"]

    async def read(self, path: str) -> bytes:
        return (await self.client._call("GET", _file(self.id, path))).content

    async def write(self, path: str, data: Union[bytes, str], *, executable: Optional[bool] = None) -> None:
        content = data.encode() if isinstance(data, str) else data
        await self.client._call("PUT", _file(self.id, path), content=content, params=_exec_param(executable))

    async def remove(self, path: str) -> None:
        await self.client._call("DELETE", _file(self.id, path))

    async def run(self, runner: Runner, *, write_back: bool = False, **fields: Any) -> Result:
        body = _run_body(runner, write_back=write_back, **fields)
        return (await self.client._call("POST", self._path("/runs"), json=body)).json()

    async def archive(self) -> bytes:
        return (await self.client._call("GET", self._path("/archive"))).content

    async def restore(self, tar: bytes) -> None:
        await self.client._call("PUT", self._path("/archive"), content=tar,
                                headers={"Content-Type": "application/x-tar"})

    async def delete(self) -> None:
        await self.client._call("DELETE", self._path())
