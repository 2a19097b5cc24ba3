"""Which versions' code ran in each cell, and which version raised in a traceback.

The recording itself is :mod:`sandbox_magic.engine.provenance`; this module names
what it found in terms of sandboxes and version numbers.
"""

from __future__ import annotations

import time
import traceback
import types
from collections.abc import Iterable
from typing import Any

from ..engine.provenance import (
    RECORDER,
    RUNS,
    CellRun,
    RanModule,
    changes_versions,
    names_sandbox_code,
)
from .registry import all_hosts

_PREFIX = "<sandbox "


def version_of(module: str, checksum: str, sandbox: str | None = None) -> list[RanModule]:
    """The sandboxes (``sandbox`` only, when the code's owner is known) holding a version
    of ``module`` whose checksum starts with ``checksum``, and that version (the current
    one when it matches)."""
    out = []
    for host in all_hosts():
        st = host.state
        if sandbox is not None and st.id != sandbox:
            continue
        h = st.histories.get(module)
        if h is None:
            continue
        versions = [v for v, rec in h.records.items() if rec.checksum.startswith(checksum)]
        if versions:
            out.append(RanModule(st.id, module, h.current if h.current in versions
                                 else max(versions)))
        elif sandbox is not None:
            out.append(RanModule(st.id, module, None))     # a version no longer retained
    return out


def _from_filename(filename: str) -> tuple[str, str] | None:
    if filename.startswith(_PREFIX) and filename.endswith(">"):
        module, _, checksum = filename[len(_PREFIX):-1].rpartition(" ")
        if module and checksum:
            return module, checksum
    return None


def _resolve(found: Iterable[tuple[str, str, str | None]]) -> tuple[RanModule, ...]:
    """Every (sandbox, module, version) whose code ran: two versions of one module both
    count (a cell that ran v1's code and then reloaded to v2 made outputs of both)."""
    out = {(r.sandbox, r.module, r.version)
           for module, checksum, owner in found
           for r in version_of(module, checksum, owner)}
    return tuple(RanModule(*k) for k in sorted(out, key=lambda k: (k[0], k[1], k[2] or 0)))


def start_recording() -> bool:
    """Record which sandbox code each cell runs from now on (the IPython extension
    calls this); False when this interpreter cannot (another tool holds the ids)."""
    loaded = [(h.state.histories[m].current_record().artifact, h.state.id)
              for h in all_hosts() for m in h.state.modules
              if m in h.state.histories and h.state.histories[m].current is not None]
    return RECORDER.activate(loaded)


def recording_unavailable() -> str | None:
    """Why cells are not recorded in this kernel, or None when they are."""
    if RECORDER.available:
        return None
    return ("provenance is off in this kernel: sys.monitoring tool ids 3 and 4 are both "
            "in use by other tools")


_versioning: list[bool] = [False]


def begin_cell(execution_count: int | None, cell_id: str | None, cell: str,
               namespace: dict[str, Any]) -> None:
    _versioning[0] = changes_versions(cell)
    if _versioning[0] and "--dry-run" in cell.split("\n", 1)[0]:
        RECORDER.current = None
        return              # a dry run makes nothing: nothing to record
    uses = RECORDER.monitor is not None or names_sandbox_code(cell, namespace)
    RECORDER.begin_cell(execution_count, cell_id, uses)


def end_cell(execution_count: int | None = None) -> CellRun | None:
    """Close the cell's record; the record if it ran sandbox code."""
    current = RECORDER.current
    found = RECORDER.end_cell()
    RECORDER.current = None
    if found is None or current is None:
        return None
    count, cell_id, started = current
    modules = _resolve(found)
    if not modules:
        return None
    run = CellRun(execution_count if execution_count is not None else count, cell_id,
                  modules, started, time.time(), _versioning[0])
    RUNS.append(run)
    return run


def cell_provenance(last: int | None = None, cell_id: str | None = None) -> list[CellRun]:
    """The cells that ran sandbox code, oldest first: the last ``last`` of them, or those
    of one cell (``cell_id``, as the notebook names its cells).  Each lists the
    sandbox modules whose code ran and at which version."""
    runs = [r for r in RUNS if cell_id is None or r.cell_id == cell_id]
    return runs[-last:] if last else runs


def sandbox_frames(tb: types.TracebackType | None) -> list[str]:
    """One line per sandbox frame of a traceback: module, version, line, function."""
    lines = []
    for frame, lineno in traceback.walk_tb(tb):
        where = _from_filename(frame.f_code.co_filename)
        if where is None:
            continue
        found = version_of(*where, RECORDER.owner_of(frame.f_code))
        name = ", ".join(f"{r.sandbox}.{r.module} v{r.version}" for r in found) or \
            f"{where[0]} (a version no sandbox retains)"
        lines.append(f"  {name}, line {lineno}, in {frame.f_code.co_name}")
    return lines


_NOTE = "sandbox code in this traceback (module and version, newest call last):"


def name_versions(exc: BaseException) -> bool:
    """Add a note to ``exc`` (and to the errors it chains, and an exception group's
    members) naming the module and version of each sandbox frame of its traceback;
    a note from an earlier raise of the same object is replaced.  True if any has
    such frames."""
    found = False
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        notes = getattr(e, "__notes__", None)
        if notes:
            notes[:] = [n for n in notes if not (isinstance(n, str) and n.startswith(_NOTE))]
        lines = sandbox_frames(e.__traceback__)
        if lines:
            e.add_note(_NOTE + "\n" + "\n".join(lines))
            found = True
        todo.extend(x for x in (e.__cause__, e.__context__) if x is not None)
        todo.extend(getattr(e, "exceptions", ()) or ())
    return found
