"""The service's answers as typed dictionaries, one per schema of its
OpenAPI document (`docs/openapi.json`): the keys a `TypedDict` requires
are the schema's `required`, the others its optional properties. A test
(`tests/serve/client_sdk.py`) fails when a model and the document drift.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, TypedDict

__all__ = [
    "Accepted",
    "Batch",
    "Captured",
    "EngineHealth",
    "FileInfo",
    "Health",
    "Refused",
    "Result",
    "RunState",
    "Session",
    "Usage",
    "WriteBack",
]


class Captured(TypedDict):
    """One output stream: head and tail past the output limit."""

    text: str
    total_bytes: int
    dropped_bytes: int


class Refused(TypedDict):
    path: str
    why: str


class WriteBack(TypedDict, total=False):
    """What a session run with write-back brought back."""

    written: List[str]
    refused: List[Refused]
    deleted: List[str]
    unchanged: int
    error: str


class _ResultRequired(TypedDict):
    verdict: str


class Result(_ResultRequired, total=False):
    """A run's result: what `autodev exec --json` prints, with the run's id
    and its time in the queue."""

    id: str
    exit_code: Optional[int]
    stdout: Captured
    stderr: Captured
    durations: Dict[str, Any]
    tests: Optional[Dict[str, Any]]
    resources: Optional[Dict[str, Any]]
    record: Optional[Dict[str, Any]]
    error: Optional[str]
    tests_note: str
    timed_out_by: str
    starved: bool
    queue_ms: int
    write_back: WriteBack


class _RunStateRequired(TypedDict):
    id: str
    state: str


class RunState(_RunStateRequired, total=False):
    result: Optional[Result]


class Accepted(TypedDict):
    """A run started with `wait=false`: its id and its events' route."""

    id: str
    events: str


class Usage(TypedDict):
    key: str
    since: int
    runs: int
    by_verdict: Dict[str, int]
    cpu_seconds: float
    memory_gib_seconds: float
    peak_memory_bytes: int
    wall_seconds: float


class Session(TypedDict):
    id: str
    created: int
    last_used: int
    files: int
    bytes: int


class FileInfo(TypedDict):
    path: str
    bytes: int
    executable: bool


class _BatchRequired(TypedDict):
    id: str
    state: str
    total: int
    done: int
    by_verdict: Dict[str, int]


class Batch(_BatchRequired, total=False):
    created: int
    pass_at_1: Optional[float]


class EngineHealth(TypedDict):
    name: str
    up: bool


class Health(TypedDict):
    status: str
    engine_up: bool
    running: int
    waiting: int
    engines: List[EngineHealth]
