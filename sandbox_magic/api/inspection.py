"""Looking at every retained version at once: probe and bisect, in a scratch sandbox.

The live sandbox is never touched: a scratch sandbox (its own modules, a
history in memory) loads the other modules at their current versions and the
module in question at each retained version in turn, and the expression or
callable is evaluated there.  A process sandbox is probed in a scratch child
process, so a version that loops or crashes hurts only that child.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from ..engine.versions import VersionStore
from ..errors import SandboxError
from .lifecycle import create_sandbox, destroy_sandbox
from .queries import module_history, sandbox_histories
from .registry import find_host
from .reloading import hot_reload_source
from .running import run

Probe = Callable[[Any], Any] | str


class _Scratch:
    """A throwaway sandbox holding one version of one module (and the rest at current)."""

    def __init__(self, sandbox_id: str, module: str) -> None:
        self.module = module
        self.histories = sandbox_histories(sandbox_id)
        self.history = module_history(sandbox_id, module)
        host = find_host(sandbox_id)
        kind = getattr(host, "kind", "kernel")
        self.id = f"_probe_{uuid.uuid4().hex[:12]}"
        extra: dict[str, Any] = {}
        if kind == "process":
            extra = {"host": "process", "call_timeout": getattr(host, "call_timeout", None)}
        create_sandbox(self.id, store=VersionStore(), max_versions=None, **extra)

    def load(self, version: int) -> None:
        sources = {m: h.current_record().source for m, h in self.histories.items()
                   if h.current is not None}
        sources[self.module] = self.history.record(version).source
        hot_reload_source(self.id, sources)

    def evaluate(self, probe: Probe) -> Any:
        return run(self.id, probe)

    def close(self) -> None:
        if find_host(self.id) is not None:
            destroy_sandbox(self.id)


def _versions(sandbox_id: str, module: str) -> list[int]:
    return sorted(module_history(sandbox_id, module).records)


def probe(sandbox_id: str, module: str, expr_or_callable: Probe) -> dict[int, Any]:
    """``{version: value}`` of an expression (or ``callable(handle)``) under every retained
    version of ``module``; a version whose code or probe raises maps to the exception."""
    if not (isinstance(expr_or_callable, str) or callable(expr_or_callable)):
        raise SandboxError("probe takes an expression or a callable taking the sandbox")
    scratch = _Scratch(sandbox_id, module)
    out: dict[int, Any] = {}
    try:
        for v in _versions(sandbox_id, module):
            try:
                scratch.load(v)
                out[v] = scratch.evaluate(expr_or_callable)
            except Exception as exc:   # the answer for that version
                out[v] = exc
    finally:
        scratch.close()
    return out


def bisect(sandbox_id: str, module: str, predicate: Probe) -> int | None:
    """The first retained version (in version order) for which ``predicate`` is false.

    Binary search over scratch loads: it assumes the versions go from good to
    bad once.  A version whose code or predicate raises counts as bad.  None
    when every version is good.
    """
    if not (isinstance(predicate, str) or callable(predicate)):
        raise SandboxError("bisect takes an expression or a callable taking the sandbox")
    versions = _versions(sandbox_id, module)
    scratch = _Scratch(sandbox_id, module)

    def good(v: int) -> bool:
        try:
            scratch.load(v)
            return bool(scratch.evaluate(predicate))
        except Exception:
            return False

    try:
        lo, hi = 0, len(versions)
        while lo < hi:
            mid = (lo + hi) // 2
            if good(versions[mid]):
                lo = mid + 1
            else:
                hi = mid
    finally:
        scratch.close()
    return versions[lo] if lo < len(versions) else None
