"""Running code and servers in a sandbox."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..engine.sandbox import Sandbox
from ..live.server import Server, ServerRef
from .events import emit
from .registry import get_host


def run(sandbox_id: str, code: str | Callable[[Sandbox], Any], *,
        timeout: float | None = None) -> Any:
    """Execute source (value of a trailing expression returned) or call ``code(handle)``.

    The source runs in the sandbox's scratch namespace, which sees the same
    names as the handle and can import sibling modules.  Exceptions keep their
    type; exceeding ``timeout`` raises :class:`SandboxTimeout`.
    """
    return get_host(sandbox_id).run(code, timeout)


def start_server(sandbox_id: str, server: type[Server] | str, *args: Any,
                 name: str | None = None) -> ServerRef:
    """Start a server (a :class:`Server` subclass, or ``"module:Name"``) in its own thread."""
    ref: Any = get_host(sandbox_id).start_server(server, tuple(args), name)
    emit("server_started", sandbox_id, name=name)
    result: ServerRef = ref          # a proxy of one for sandboxes in another process
    return result


def get_server(sandbox_id: str, name: str) -> ServerRef:
    """The running server registered under ``name``."""
    ref: ServerRef = get_host(sandbox_id).server(name)
    return ref


def list_servers(sandbox_id: str) -> list[ServerRef]:
    """Every running server of the sandbox."""
    refs: list[ServerRef] = get_host(sandbox_id).servers()
    return refs
