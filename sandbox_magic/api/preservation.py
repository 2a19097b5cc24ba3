"""StatePreservation: capture, validate, migrate and restore server state by hand.

The same machinery runs inside every reload; these functions expose it for
code that wants to inspect or migrate state outside a reload (the guide's
``capture_module_states`` and ``preserve_and_restore``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..engine.versions import utcnow
from ..errors import ReloadError, SandboxTimeout
from ..live.migration import migrate_state, validate_state_compatibility
from ..live.server import Server, ServerProcess, ServerRef
from .registry import get_state


@dataclass(frozen=True)
class CapturedState:
    """The state of one server, as captured between two of its messages."""

    ref: ServerRef
    module: str
    state: Any
    captured_at: datetime
    process_info: dict[str, Any] = field(default_factory=dict)
    supervisor_info: dict[str, Any] | None = None


@dataclass(frozen=True)
class PreserveResult:
    status: str          # "completed" or "rolled_back"
    migrated: int
    error: BaseException | None = None


def _servers_of(st: Any, module: str) -> list[ServerProcess]:
    st.get_module(module)
    full = st.fullname(module)
    return [p for p in list(st.servers) if p.alive and p.cls.__module__ == full]


def _suspend_all(procs: list[ServerProcess], timeout: float) -> list[ServerProcess]:
    done: list[ServerProcess] = []
    try:
        for p in procs:
            p.suspend(timeout)
            done.append(p)
    except SandboxTimeout:
        for p in done:
            p.resume()
        raise
    return done


class StatePreservation:
    """Capture, validate and migrate the state of a module's servers."""

    validate_state_compatibility = staticmethod(validate_state_compatibility)

    @staticmethod
    def capture_module_states(sandbox_id: str, module: str, *, timeout: float = 5.0,
                              preserve_supervisor_specs: bool = True) -> list[CapturedState]:
        """Snapshot the state of every server running ``module``'s code."""
        st = get_state(sandbox_id)
        with st.lock:
            procs = _suspend_all(_servers_of(st, module), timeout)
            try:
                out = []
                for p in procs:
                    sup_info = None
                    if preserve_supervisor_specs and st.supervisor is not None:
                        for spec, child in zip(st.supervisor.specs, st.supervisor.procs):
                            if child is p:
                                sup_info = {"supervisor": type(st.supervisor.sup).__qualname__,
                                            "strategy": st.supervisor.sup.strategy,
                                            "child_spec": spec}
                    out.append(CapturedState(
                        ServerRef(p), module, p.state, utcnow(),
                        {"pid": p.pid, "name": p.name, "server": p.cls.__qualname__,
                         "queued_messages": p.mailbox.qsize(), "handled": p.handled,
                         "alive": p.alive}, sup_info))
                return out
            finally:
                for p in procs:
                    p.resume()

    @staticmethod
    def preserve_and_restore(sandbox_id: str, module: str, old_version: int | None,
                             new_version: int, *, timeout: float = 5.0,
                             validate_compatibility: bool = True,
                             migration_function: Callable[[Any, Any, Any], Any] | None = None,
                             rollback_on_failure: bool = True) -> PreserveResult:
        """Suspend the module's servers, migrate their states, validate, restore, resume.

        Without ``migration_function`` each server's own ``code_change`` runs.
        A failure restores every state when ``rollback_on_failure`` (the
        default) and raises; otherwise the states migrated so far are kept.
        """
        st = get_state(sandbox_id)
        with st.lock:
            procs = _suspend_all(_servers_of(st, module), timeout)
            old = {p: p.state for p in procs}
            done = 0
            try:
                for p in procs:
                    fn = migration_function or p.impl.code_change
                    if migration_function is None and type(p.impl).code_change is Server.code_change:
                        continue
                    p.state = migrate_state(fn, f"server {p.label}", old[p], old_version,
                                            new_version, validate=validate_compatibility,
                                            module=module)
                    done += 1
            except ReloadError:
                if rollback_on_failure:
                    for p, s in old.items():
                        p.state = s
                raise
            finally:
                for p in procs:
                    p.resume()
            return PreserveResult("completed", done)
