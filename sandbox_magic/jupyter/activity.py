"""Where each version came from, and the reloads that failed, as the panels show them.

The engine records versions and which one is current.  This kernel-side log
adds what the panels say about them: how each version was last made current
(``cell``: a ``%%sandbox_reload`` cell; ``api``: a call such as
``hot_reload_source``; ``rollback``, ``undo``, ``redo``; ``restore``: loaded
from the stored history after a restart; ``teacher``: a followed teacher's
version), and the attempts that failed (a failed reload records no version; a
teacher's version that failed here is one, named as such).  It lives in this kernel only: after a
restart the versions read from the store have no origin until one is made
current again, and earlier failures are not known.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypedDict

from .. import api
from ..api import classroom

MAX_FAILURES = 20      # per module; older failed attempts are forgotten
MAX_MESSAGE = 500      # characters kept of a failure's message


class Origin(TypedDict):
    kind: str          # cell, api, rollback, undo, redo, restore
    at: datetime


class Failure(TypedDict):
    at: datetime
    message: str
    state_handler: str | None


_lock = threading.Lock()
_origins: dict[tuple[str, str], dict[int, Origin]] = {}
_failures: dict[tuple[str, str], deque[Failure]] = {}
_cell: list[str] = []          # sandboxes a %%sandbox_reload cell is reloading

_KINDS = {"rolled_back": "rollback", "undo": "undo", "redo": "redo"}


def _now() -> datetime:
    return datetime.now(UTC)


@contextmanager
def from_cell(sandbox_id: str) -> Iterator[None]:
    """Mark the reloads of ``sandbox_id`` made meanwhile as coming from a cell."""
    _cell.append(sandbox_id)
    try:
        yield
    finally:
        _cell.pop()


def on_event(event: str, sandbox_id: str, payload: dict[str, Any]) -> None:
    """An ``api.listeners`` callback: note what made a version current."""
    if event == "sandbox_destroyed":
        forget(sandbox_id)
        return
    if event == "follow_failed":
        record_failure(sandbox_id, str(payload.get("module") or "?"),
                       f"v{payload.get('version')} from the teacher failed here, nothing "
                       f"changed: {payload.get('message') or 'failed'}")
        return
    if event == "reload_failed":
        # a cell records its own failure, with the message it printed; a follower's
        # failed teacher version is recorded as such (follow_failed)
        if not (_cell and _cell[-1] == sandbox_id) and not classroom.applying(sandbox_id):
            record_failure(sandbox_id, str(payload.get("module") or "?"),
                           str(payload.get("message") or "failed"))
        return
    module, version = payload.get("module"), payload.get("version")
    if not isinstance(module, str) or not isinstance(version, int):
        return
    if event == "reloaded":
        if payload.get("status") == "restored":
            kind = "restore"
        elif classroom.applying(sandbox_id):
            kind = "teacher"
        elif _cell and _cell[-1] == sandbox_id:
            kind = "cell"
        else:
            kind = "api"
    elif event in _KINDS:
        kind = _KINDS[event]
    else:
        return
    with _lock:
        _origins.setdefault((sandbox_id, module), {})[version] = {"kind": kind, "at": _now()}


def origin(sandbox_id: str, module: str, version: int) -> Origin | None:
    """How ``version`` was last made current in this kernel (None: not known here)."""
    with _lock:
        return _origins.get((sandbox_id, module), {}).get(version)


def record_failure(sandbox_id: str, module: str, message: str,
                   state_handler: str | None = None) -> None:
    """Note a failed reload of ``module`` and tell the panels."""
    text = message.strip()
    if len(text) > MAX_MESSAGE:
        text = text[:MAX_MESSAGE - 1] + "…"
    with _lock:
        _failures.setdefault((sandbox_id, module), deque(maxlen=MAX_FAILURES)).append(
            {"at": _now(), "message": text, "state_handler": state_handler})
    api.emit("failed", sandbox_id, module=module, version=None)


def failures(sandbox_id: str, module: str) -> list[Failure]:
    """The failed reloads of ``module`` known to this kernel, newest first."""
    with _lock:
        return list(reversed(_failures.get((sandbox_id, module), ())))


def forget(sandbox_id: str) -> None:
    with _lock:
        for store in (_origins, _failures):
            for key in [k for k in store if k[0] == sandbox_id]:
                del store[key]


def listen() -> None:
    """Follow the engine's events (idempotent)."""
    if on_event not in api.listeners:
        api.listeners.append(on_event)
