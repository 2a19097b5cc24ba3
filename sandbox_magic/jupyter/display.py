"""How a diff looks in a notebook: coloured, theme-aware, and always escaped.

Colours come from JupyterLab's CSS variables, so a diff reads well in the
light and the dark theme; each has a fallback for frontends without them
(the classic notebook, nbviewer).  Added and removed lines get a translucent
tint over the page's own background and keep the theme's text colour.
"""

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


_TEXT = "color:var(--jp-content-font-color1,inherit)"
_DIFF_STYLE = {
    "+": f"background:rgba(46,160,67,.22);{_TEXT}",
    "-": f"background:rgba(218,54,51,.22);{_TEXT}",
    " ": _TEXT,
}
_MUTED = "color:var(--jp-content-font-color2,#57606a)"

#: A <style> for the panel widgets: the version list in the code font, without clipping.
THEME_STYLE = (
    "<style>"
    ".sandbox-magic-panel .sandbox-magic-versions select{"
    "font-family:var(--jp-code-font-family,monospace);"
    "font-size:var(--jp-code-font-size,13px);white-space:pre;overflow-x:auto}"
    ".sandbox-magic-panel .sandbox-magic-versions{width:100%;max-width:100%}"
    "</style>")


def diff_html(diff: Any, *, pinned: bool = False) -> str:
    rows = [f'<div style="{_DIFF_STYLE[m]}">{html.escape(m + line) or "&nbsp;"}</div>'
            for m, line in diff.lines()]
    head = html.escape(f"{diff.module}: v{diff.old_version} -> v{diff.new_version} "
                       f"(+{diff.lines_added} -{diff.lines_removed})")
    pin = f' <span style="{_MUTED}">(pinned)</span>' if pinned else ""
    return (f'<div class="sandbox-diff" style="{_TEXT}"><div><b>{head}</b>{pin}</div>'
            f'<pre style="margin:0;{_TEXT};background:transparent;'
            f'font-family:var(--jp-code-font-family,monospace)">{"".join(rows)}</pre></div>')
