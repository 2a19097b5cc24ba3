"""Rows of a module's history as the panels show them (widgets and JupyterLab)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from .. import api
from ..engine.diff import diff_sources
from ..errors import HistoryError, SandboxError
from . import activity

# (older checksum, newer checksum) -> (lines added, lines removed).  A history of
# 1,000 versions is diffed once; later reads of it only look the counts up.
_COUNTS: OrderedDict[tuple[str, str], tuple[int, int]] = OrderedDict()
_COUNTS_MAX = 8192
_counts_lock = threading.Lock()

ORIGIN_LABELS = {"cell": "cell", "api": "API call", "rollback": "rollback", "undo": "undo",
                 "redo": "redo", "restore": "restore", "teacher": "teacher"}


def _counts(module: str, older: Any, info: Any) -> tuple[int, int]:
    key = (older.checksum, info.checksum)
    with _counts_lock:
        hit = _COUNTS.get(key)
        if hit is not None:
            _COUNTS.move_to_end(key)
            return hit
    d = diff_sources(module, older.version, older.source, info.version, info.source)
    counts = (d.lines_added, d.lines_removed)
    with _counts_lock:
        _COUNTS[key] = counts
        while len(_COUNTS) > _COUNTS_MAX:
            _COUNTS.popitem(last=False)
    return counts


def history_rows(sandbox_id: str, module: str) -> list[dict[str, Any]]:
    """One row per retained version, newest first, with lines changed vs the previous.

    The history is read once (from the store when the sandbox is not loaded in
    this kernel); the line counts are those of :func:`sandbox_magic.diff_versions`.
    ``origin`` says what last made the version current in this kernel (see
    :mod:`sandbox_magic.jupyter.activity`; None when this kernel does not know)
    and ``origin_at`` when.
    """
    infos = api.list_module_versions(sandbox_id, module)
    rows = []
    for i, info in enumerate(infos):
        older = infos[i + 1] if i + 1 < len(infos) else None
        if older is not None:
            added, removed = _counts(module, older, info)
        else:
            added, removed = len(info.source.splitlines()), 0
        o = activity.origin(sandbox_id, module, info.version)
        rows.append({"version": info.version, "loaded_at": info.loaded_at,
                     "checksum": info.checksum[:8], "added": added, "removed": removed,
                     "state_handler": info.state_handler, "current": info.is_current,
                     "origin": o["kind"] if o else None, "origin_at": o["at"] if o else None})
    return rows


def timeline(sandbox_id: str, module: str) -> dict[str, Any]:
    """What the panels need besides the rows: undo and redo targets, dropped versions,
    retention, failed attempts (newest first), and why new versions are not saved to
    disk when they are not."""
    h = api.module_history(sandbox_id, module)
    try:
        undo_to: int | None = h.undo_target()
    except HistoryError:
        undo_to = None
    try:
        redo_to: int | None = h.redo_target()
    except HistoryError:
        redo_to = None
    max_versions: int | None = None
    if api.is_loaded(sandbox_id):
        try:
            max_versions = api.get_sandbox_info(sandbox_id).max_versions
        except SandboxError:        # destroyed meanwhile
            pass
    return {"undo_to": undo_to, "redo_to": redo_to,
            "dropped": max(0, h.next_version - 1 - len(h.records)),
            "max_versions": max_versions,
            "failed": activity.failures(sandbox_id, module),
            "unsaved": api.unsaved_reason(sandbox_id)}


def origin_text(row: dict[str, Any]) -> str:
    """Where a row came from, in words: ``cell``, ``rollback``, ``cell, migrated by m``."""
    parts = [ORIGIN_LABELS.get(row.get("origin") or "", "")]
    if row.get("state_handler"):
        parts.append(f"migrated by {row['state_handler']}")
    return ", ".join(p for p in parts if p)
