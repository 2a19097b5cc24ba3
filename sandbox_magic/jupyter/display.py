"""How a diff looks in a notebook: coloured, and always escaped."""

from __future__ import annotations

import html
from typing import Any


class DiffDisplay:
    """A diff that renders coloured (and escaped) in notebooks, plain elsewhere."""

    def __init__(self, diff: Any) -> None:
        self.diff = diff

    def __repr__(self) -> str:
        return str(self.diff)

    def _repr_html_(self) -> str:
        return diff_html(self.diff)


_DIFF_STYLE = {"+": "background:#e6ffec;color:#116329", "-": "background:#ffebe9;color:#82071e",
               " ": "color:inherit"}


def diff_html(diff: Any) -> str:
    rows = [f'<div style="{_DIFF_STYLE[m]}">{html.escape(m + line) or "&nbsp;"}</div>'
            for m, line in diff.lines()]
    head = html.escape(f"{diff.module}: v{diff.old_version} -> v{diff.new_version} "
                       f"(+{diff.lines_added} -{diff.lines_removed})")
    return (f'<div class="sandbox-diff"><div><b>{head}</b></div>'
            f'<pre style="margin:0">{"".join(rows)}</pre></div>')
