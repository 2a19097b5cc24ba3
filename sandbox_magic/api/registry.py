"""The sandboxes of this kernel: one host per sandbox id.

The only place that keeps them; every other module asks through these
functions.  It also wires the live-state layer into every reload.
"""

from __future__ import annotations

import threading

from ..engine.reload import PARTICIPANTS
from ..engine.sandbox import SandboxState, validate_sandbox_id
from ..errors import SandboxExistsError, SandboxNotFoundError
from ..hosts.base import SandboxHost
from ..live.migration import LiveState

if LiveState not in PARTICIPANTS:
    PARTICIPANTS.append(LiveState)

_hosts: dict[str, SandboxHost] = {}
_lock = threading.RLock()


def find_host(sandbox_id: str) -> SandboxHost | None:
    with _lock:
        return _hosts.get(sandbox_id)


def get_host(sandbox_id: str) -> SandboxHost:
    host = find_host(sandbox_id)
    if host is None:
        validate_sandbox_id(sandbox_id)
        raise SandboxNotFoundError(f"no sandbox {sandbox_id!r} (existing: {known_ids()}); "
                                   "create it with create_sandbox()")
    return host


def get_state(sandbox_id: str) -> SandboxState:
    """What the kernel keeps about a sandbox (histories, lock), whatever its host."""
    return get_host(sandbox_id).state


def add_host(host: SandboxHost) -> None:
    with _lock:
        if host.state.id in _hosts:
            raise SandboxExistsError(f"sandbox {host.state.id!r} already exists; use "
                                     "get_sandbox() or destroy_sandbox() first")
        _hosts[host.state.id] = host


def remove_host(sandbox_id: str) -> None:
    with _lock:
        _hosts.pop(sandbox_id, None)


def all_hosts() -> list[SandboxHost]:
    with _lock:
        return list(_hosts.values())


def known_ids() -> str:
    with _lock:
        return ", ".join(sorted(_hosts)) or "none"
