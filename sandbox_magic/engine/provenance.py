"""Which sandbox code ran while each notebook cell ran, and at which versions.

Every version's code has a file name of its own (``<sandbox MODULE CHECKSUM>``,
see :mod:`.artifact`), so a code object tells which module and version it
belongs to.  The recorder collects the sandbox code objects that start while a
cell runs:

* Python 3.12+: ``sys.monitoring`` ``PY_START`` events, set as *local* events
  on the sandbox modules' code objects only (every version's, as it is loaded).
  The first start of each code object in a cell is recorded and its event is
  then disabled until the next cell, so a loop calling a sandbox function a
  million times pays for one call.  Code started by threads that the cell
  started counts; threads that were running before the cell began (a server's,
  say) do not.
* Python 3.11: a profile hook in the compiled part (a set insertion per call
  of any function) while a cell runs whose text names a sandbox object (a
  sandbox handle, a module, function, class or instance of one) or is a
  ``%%sandbox`` cell, for the cell's first 20,000 function calls (the hook
  then leaves, so a long loop pays for those only), unless a profiler of the
  user's own is installed when the cell starts; other cells are not watched, and code run by other threads is not seen.  So on 3.11 a cell that
  reaches sandbox code only through a notebook function of its own, or only
  after its first 20,000 calls, records nothing.
"""

from __future__ import annotations

import contextlib
import re
import sys
import threading
import time
import types
import weakref
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .artifact import Artifact

_PREFIX = "<sandbox "
MONITORING = sys.version_info >= (3, 12)
#: How many cells are remembered.
KEEP = 500
#: On 3.11, the calls of a cell that are watched (the first ones).
CALLS_311 = 20_000


@dataclass(frozen=True)
class RanModule:
    """One sandbox module whose code ran during a cell, at ``version``."""

    sandbox: str
    module: str
    version: int | None        # None: a version this kernel no longer retains

    def label(self) -> str:
        return f"{self.sandbox}.{self.module} v{self.version if self.version else '?'}"


@dataclass(frozen=True)
class CellRun:
    """The sandbox code one cell ran."""

    execution_count: int | None
    cell_id: str | None
    modules: tuple[RanModule, ...]
    started: float
    finished: float
    #: The cell changes versions (``%%sandbox_reload``, ``%sandbox_rollback``...): the
    #: code it ran is the module bodies of the versions it loaded, not an output's maker.
    versioning: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"execution_count": self.execution_count, "cell_id": self.cell_id,
                "modules": [{"sandbox": m.sandbox, "module": m.module, "version": m.version}
                            for m in self.modules]}


RUNS: deque[CellRun] = deque(maxlen=KEEP)


def _codes(codes: Iterable[types.CodeType]) -> Iterable[types.CodeType]:
    todo = list(codes)
    while todo:
        c = todo.pop()
        yield c
        todo.extend(k for k in c.co_consts if type(k) is types.CodeType)


class _Monitor:
    """The sys.monitoring side (3.12+).

    A code object's events are turned off (``set_local_events(..., 0)``) at its first
    start in a cell and on again when the next cell begins: only this tool's events,
    so other tools' disabled events stay disabled (no ``restart_events``)."""

    def __init__(self) -> None:
        self.tool: int | None = None
        self.seen: dict[int, types.CodeType] = {}      # by identity: equal codes differ
        self.off: dict[int, types.CodeType] = {}       # events turned off since the cell began
        self.cell_thread: int | None = None
        self.before: frozenset[int] = frozenset()
        self.recording = False
        self.paused = 0
        self.lock = threading.Lock()
        self.events = 0

    def start_tool(self) -> bool:
        mon: Any = sys.monitoring  # type: ignore[attr-defined]
        for tool in (4, 3):
            if mon.get_tool(tool) is None:
                mon.use_tool_id(tool, "sandbox-magic provenance")
                self.events = mon.events.PY_START | mon.events.PY_RESUME
                mon.register_callback(tool, mon.events.PY_START, self._on_start)
                mon.register_callback(tool, mon.events.PY_RESUME, self._on_start)
                self.tool = tool
                return True
        return False

    def _on_start(self, code: types.CodeType, offset: int) -> Any:
        if self.paused:
            return None         # a dry run's staged code: it made nothing
        if self.recording:
            t = threading.get_ident()
            if t != self.cell_thread and t in self.before:
                return None     # a thread from before the cell: not this cell's code
            self.seen[id(code)] = code
        mon: Any = sys.monitoring  # type: ignore[attr-defined]
        mon.set_local_events(self.tool, code, 0)
        self.off[id(code)] = code
        return None

    def watch(self, codes: Iterable[types.CodeType]) -> None:
        if self.tool is None:
            return
        mon: Any = sys.monitoring  # type: ignore[attr-defined]
        for c in _codes(codes):      # (equal code objects of two sandboxes are two objects)
            mon.set_local_events(self.tool, c, self.events)

    def begin(self) -> None:
        self.seen = {}
        self.cell_thread = threading.get_ident()
        self.before = frozenset(t.ident for t in threading.enumerate()
                                if t.ident is not None) - {self.cell_thread}
        mon: Any = sys.monitoring  # type: ignore[attr-defined]
        off, self.off = self.off, {}
        for c in off.values():
            mon.set_local_events(self.tool, c, self.events)
        self.recording = True

    def end(self) -> list[types.CodeType]:
        self.recording = False
        seen, self.seen = self.seen, {}
        return list(seen.values())


class _Hook:
    """The profile-hook side (3.11, the compiled part)."""

    def __init__(self) -> None:
        self.token: Any = None
        self.seen: set[object] = set()

    def begin(self) -> None:
        from . import importtime
        if not importtime.ENABLED or self.token is not None:
            return
        if sys.getprofile() is not None:
            return          # a profiler of the user's own: it keeps every event
        self.seen = set()
        self.token = importtime.NATIVE.calls_start(self.seen, (), CALLS_311,
                                                   importtime.holder())

    def pause(self) -> bool:
        from . import importtime
        if self.token is None:
            return False
        importtime.NATIVE.calls_stop(self.token)
        self.token = None
        return True

    def resume(self) -> None:
        from . import importtime
        self.token = importtime.NATIVE.calls_start(self.seen, (), CALLS_311,
                                                   importtime.holder())

    def end(self) -> set[types.CodeType]:
        from . import importtime
        if self.token is None:
            return set()
        importtime.NATIVE.calls_stop(self.token)
        self.token = None
        return {c for c in self.seen if type(c) is types.CodeType
                and c.co_filename.startswith(_PREFIX)}


class Recorder:
    """Starts and stops the recording around cells (see the module doc)."""

    def __init__(self) -> None:
        self.active = False
        self.monitor = _Monitor() if MONITORING else None
        self.hook = None if MONITORING else _Hook()
        self.current: tuple[int | None, str | None, float] | None = None
        self.available = True
        #: id(code) -> (the code, weakly; the sandbox that loaded it): equal code of
        #: two sandboxes is told apart by the object that ran
        self.owners: dict[int, tuple[weakref.ref[types.CodeType], str]] = {}
        self._pruned_at = 1024

    def activate(self, loaded: Iterable[tuple[Artifact, str]]) -> bool:
        """Start recording cells (from now on, every loaded version's code is watched)."""
        if self.active:
            return True
        if self.monitor is not None and not self.monitor.start_tool():
            self.available = False
            return False
        self.active = True
        for artifact, owner in loaded:
            self.watch(artifact, owner)
        return True

    def watch(self, artifact: Artifact, owner: str | None = None) -> None:
        if not self.active:
            return
        if owner is not None:
            owners = self.owners
            for c in _codes(artifact.codes):
                owners[id(c)] = (weakref.ref(c), owner)
            if len(owners) > 2 * self._pruned_at:
                for k in [k for k, (ref, _) in owners.items() if ref() is None]:
                    del owners[k]
                self._pruned_at = max(1024, len(owners))
        if self.monitor is not None:
            with self.monitor.lock:
                self.monitor.watch(artifact.codes)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Record nothing meanwhile (a dry run: its staged code makes no output)."""
        if self.monitor is not None:
            self.monitor.paused += 1
            try:
                yield
            finally:
                self.monitor.paused -= 1
            return
        hook = self.hook
        stopped = hook is not None and threading.current_thread() is threading.main_thread() \
            and hook.pause()
        try:
            yield
        finally:
            if stopped and hook is not None:
                hook.resume()

    def owner_of(self, code: types.CodeType) -> str | None:
        entry = self.owners.get(id(code))
        return entry[1] if entry is not None and entry[0]() is code else None

    def begin_cell(self, execution_count: int | None, cell_id: str | None,
                   uses_sandbox: bool) -> None:
        if not self.active:
            return
        self.current = (execution_count, cell_id, time.time())
        if self.monitor is not None:
            self.monitor.begin()
        elif self.hook is not None and uses_sandbox:
            self.hook.begin()

    def end_cell(self) -> tuple[tuple[str, str, str | None], ...] | None:
        """(module, checksum prefix, sandbox when known) of every version whose code ran
        in the cell."""
        if not self.active or self.current is None:
            return None
        codes = self.monitor.end() if self.monitor is not None else \
            (self.hook.end() if self.hook is not None else set())
        found = set()
        for c in codes:
            name = c.co_filename
            if name.startswith(_PREFIX) and name.endswith(">"):
                module, _, checksum = name[len(_PREFIX):-1].rpartition(" ")
                if module:
                    found.add((module, checksum, self.owner_of(c)))
        return tuple(sorted(found, key=lambda f: (f[0], f[1], f[2] or "")))


RECORDER = Recorder()

_NAME = re.compile(r"[A-Za-z_]\w*")
_VERSIONING = re.compile(r"\s*%%?sandbox_(reload|state_handler|rollback|undo|redo|restore|sync)\b")


def changes_versions(cell: str) -> bool:
    """Whether a cell is a magic that loads or switches versions."""
    return _VERSIONING.match(cell) is not None
_SANDBOX_MODULES = "sandbox_magic.sandboxes."


def is_sandbox_object(obj: Any) -> bool:
    """A sandbox handle, or a module, function, class or instance made by sandbox code
    (a generator or coroutine of sandbox code too)."""
    from .sandbox import Sandbox
    if isinstance(obj, Sandbox):
        return True
    code = getattr(obj, "gi_code", None) or getattr(obj, "cr_code", None) \
        or getattr(obj, "ag_code", None)
    if isinstance(code, types.CodeType) and code.co_filename.startswith(_PREFIX):
        return True
    for owner in (obj, type(obj)):
        name = getattr(owner, "__module__", None) if not isinstance(owner, types.ModuleType) \
            else owner.__name__
        if isinstance(name, str) and name.startswith(_SANDBOX_MODULES):
            return True
    return False


def names_sandbox_code(cell: str, namespace: dict[str, Any], limit: int = 100_000) -> bool:
    """Whether a cell's text names a sandbox object of ``namespace`` (or is a
    ``%%sandbox`` cell): the 3.11 gate (see the module doc)."""
    text = cell.lstrip()
    if text.startswith(("%%sandbox", "%sandbox")) or len(cell) > limit:
        return True
    for name in set(_NAME.findall(cell)):
        obj = namespace.get(name)
        try:
            if obj is not None and is_sandbox_object(obj):
                return True
        except Exception:       # a proxy whose attributes raise: not one of ours
            continue
    return False


