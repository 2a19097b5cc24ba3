"""A sandbox's history as a notebook (nbformat): one cell per retained version."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from .. import api
from ..errors import SandboxError


def history_notebook(sandbox_id: str) -> Any:
    """A notebook whose cells re-create every retained version, oldest first.

    Reads the history from the store when this kernel has not loaded the
    sandbox (after a restart).
    """
    histories = api.sandbox_histories(sandbox_id)
    cells = [new_markdown_cell(
        f"# History of sandbox `{sandbox_id}`\n\n"
        "Each code cell is one recorded version; running them in order replays the "
        "history into a sandbox of the same name.")]
    cells.append(new_code_cell("%load_ext sandbox_magic"))
    for name, h in sorted(histories.items()):
        if h.current is None:
            continue
        cells.append(new_markdown_cell(f"## Module `{name}` (current: v{h.current})"))
        for rec in sorted(h.records.values(), key=lambda r: r.version):
            meta = {"sandbox_magic": {
                "sandbox": sandbox_id, "module": name, "version": rec.version,
                "checksum": rec.checksum, "loaded_at": rec.loaded_at.isoformat(),
                "state_handler": rec.state_handler, "is_current": rec.version == h.current}}
            header = f"%%sandbox_reload {sandbox_id} {name}"
            cells.append(new_code_cell(f"{header}\n{rec.source.rstrip()}", metadata=meta))
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    return nb


def export_history(sandbox_id: str, path: str | Path, *, overwrite: bool = True) -> Path:
    """Write :func:`history_notebook` to ``path`` (a ``.ipynb`` file).

    With ``overwrite=False`` an existing file is left alone and
    :class:`FileExistsError` is raised.
    """
    p = Path(path)
    if p.suffix != ".ipynb":
        raise SandboxError(f"export path must end in .ipynb, got {str(p)!r}")
    nb = history_notebook(sandbox_id)
    nbformat.validate(nb)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "w" if overwrite else "x", encoding="utf-8") as f:
        nbformat.write(nb, f)
    return p
