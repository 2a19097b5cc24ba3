"""Rows of a module's history as the panels show them (widgets and JupyterLab)."""

from __future__ import annotations

from typing import Any

from .. import api
from ..engine.diff import diff_sources


def history_rows(sandbox_id: str, module: str) -> list[dict[str, Any]]:
    """One row per retained version, newest first, with lines changed vs the previous.

    The history is read once (from the store when the sandbox is not loaded in
    this kernel); the line counts are those of :func:`sandbox_magic.diff_versions`.
    """
    infos = api.list_module_versions(sandbox_id, module)
    rows = []
    for i, info in enumerate(infos):
        older = infos[i + 1] if i + 1 < len(infos) else None
        if older is not None:
            d = diff_sources(module, older.version, older.source, info.version, info.source)
            added, removed = d.lines_added, d.lines_removed
        else:
            added, removed = len(info.source.splitlines()), 0
        rows.append({"version": info.version, "loaded_at": info.loaded_at,
                     "checksum": info.checksum[:8], "added": added, "removed": removed,
                     "state_handler": info.state_handler, "current": info.is_current})
    return rows
