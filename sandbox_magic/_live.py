"""Live state: servers and supervisors (filled in by the live-state engine)."""

from __future__ import annotations

from typing import Any

from ._errors import SandboxError


def start_sandbox_supervisor(state: Any, supervisor: Any) -> None:
    raise SandboxError("supervisors are not available yet")


def stop_all(state: Any) -> None:
    return None


def restart_tree(state: Any) -> None:
    return None
