"""The in-notebook history panel (ipywidgets).

Module picker, version list, a diff between any two versions, and Rollback /
Undo / Redo buttons acting on the live sandbox.  The panel listens to the
engine's events, so it refreshes itself whenever a reload, rollback, undo or
redo happens anywhere in the kernel.  After a kernel restart it shows the
stored history at once; the buttons then restore the sandbox first.  All text
from module sources is escaped before it becomes HTML.

What it shows follows JupyterLab's theme (its CSS variables, with fallbacks
for the classic notebook).  The list selects the current version; Rollback
acts on the selected row and is disabled while that is the current one, and
Undo and Redo name the version they go to ("Undo to v2") and are disabled at
the ends of the timeline.  The diff follows previous -> current until a diff
picker is changed ("pinned"); "Follow current" unpins it.
"""

from __future__ import annotations

import html
import weakref
from typing import Any

import ipywidgets as w

from .. import api
from ..errors import ModuleNotFoundInSandboxError, SandboxError
from . import activity
from .display import THEME_STYLE, diff_html
from .panel_rows import history_rows, origin_text, timeline

_panels: weakref.WeakSet[HistoryPanel] = weakref.WeakSet()

MAX_ROWS = 12          # the version list grows up to this many rows, then scrolls
_ERROR = "color:var(--jp-error-color1,#c62828)"
_MUTED = "color:var(--jp-ui-font-color2,#616161)"


def _on_event(event: str, sandbox_id: str, payload: dict[str, Any]) -> None:
    for panel in list(_panels):
        if panel.sandbox_id == sandbox_id:
            panel.refresh()


class HistoryPanel(w.VBox):
    """Version history of one sandbox, with diff and rollback controls."""

    def __init__(self, sandbox_id: str, module: str | None = None) -> None:
        mods = api.history_modules(sandbox_id)   # unknown id: a clear error now, not a blank panel
        if module is not None and module not in mods:
            raise ModuleNotFoundInSandboxError(
                f"sandbox {sandbox_id!r} has no module {module!r} "
                f"(modules: {', '.join(mods) or 'none'})")
        self.sandbox_id = sandbox_id
        full = w.Layout(width="100%")
        self.module_picker = w.Dropdown(description="Module")
        self.versions = w.Select(rows=3, layout=full)
        self.versions.add_class("sandbox-magic-versions")
        self.notes = w.HTML()
        self.diff_from = w.Dropdown(description="Diff from")
        self.diff_to = w.Dropdown(description="to", style={"description_width": "2em"},
                                  layout=w.Layout(width="auto"))
        self.follow_button = w.Button(description="Follow current", disabled=True,
                                      tooltip="the diff follows previous -> current")
        self.diff_view = w.HTML()
        self.rollback_button = w.Button(description="Roll back", icon="undo", disabled=True)
        self.undo_button = w.Button(description="Undo", disabled=True)
        self.redo_button = w.Button(description="Redo", disabled=True)
        self.status = w.HTML()
        super().__init__([
            w.HTML(THEME_STYLE + f"<b>Sandbox {html.escape(sandbox_id)}</b>"),
            self.module_picker, w.Label("Versions (● current; select one to roll back to it)"),
            self.versions, self.notes,
            w.HBox([self.rollback_button, self.undo_button, self.redo_button]),
            w.HBox([self.diff_from, self.diff_to, self.follow_button]), self.diff_view,
            self.status], layout=w.Layout(width="100%"))
        self.add_class("sandbox-magic-panel")
        self._refreshing = False
        self._pinned = False
        self._rows: list[dict[str, Any]] = []
        self._current: int | None = None
        self._timeline: dict[str, Any] | None = None
        self.refresh(module)
        self.module_picker.observe(lambda ch: self._module_changed(), names="value")
        self.versions.observe(lambda ch: self._update_buttons(), names="value")
        self.diff_from.observe(lambda ch: self._pick_diff(), names="value")
        self.diff_to.observe(lambda ch: self._pick_diff(), names="value")
        self.follow_button.on_click(lambda b: self.follow())
        self.rollback_button.on_click(lambda b: self.rollback())
        self.undo_button.on_click(lambda b: self._act("undo"))
        self.redo_button.on_click(lambda b: self._act("redo"))
        _panels.add(self)
        activity.listen()
        if _on_event not in api.listeners:
            api.listeners.append(_on_event)

    @property
    def module(self) -> str | None:
        return self.module_picker.value

    @property
    def pinned(self) -> bool:
        """Whether the user picked the diff's pair (else it follows previous -> current)."""
        return self._pinned

    def version_rows(self) -> list[dict[str, Any]]:
        """One row per retained version, newest first (what the list shows)."""
        return history_rows(self.sandbox_id, self.module) if self.module else []

    @staticmethod
    def _label(r: dict[str, Any]) -> str:
        mark = "● " if r["current"] else "  "
        where = origin_text(r)
        return (f"{mark}v{r['version']}  {r['loaded_at']:%H:%M:%S}  {r['checksum']}  "
                f"+{r['added']} -{r['removed']}" + (f"  {where}" if where else ""))

    def _module_changed(self) -> None:
        if not self._refreshing:
            self._pinned = False
            self.refresh()

    def refresh(self, module: str | None = None) -> None:
        """Re-read the sandbox and redraw everything."""
        if self._refreshing:
            return
        self._refreshing = True
        try:
            try:
                mods = sorted(api.history_modules(self.sandbox_id))
            except SandboxError:
                self.status.value = f'<i style="{_MUTED}">this sandbox no longer exists</i>'
                for b in (self.rollback_button, self.undo_button, self.redo_button):
                    b.disabled = True
                return
            keep = module or self.module_picker.value
            self.module_picker.options = mods
            self.module_picker.value = keep if keep in mods else (mods[0] if mods else None)
            rows = self._rows = self.version_rows()
            selected = self.versions.value
            self.versions.options = [(self._label(r), r["version"]) for r in rows]
            self.versions.rows = min(max(len(rows), 3), MAX_ROWS)
            current = next((r["version"] for r in rows if r["current"]), None)
            # the current version, unless the user chose another row that still exists
            keep_sel = selected is not None and selected != self._current and any(
                r["version"] == selected for r in rows)
            self.versions.value = selected if keep_sel else current
            self._current = current
            choices = [f"v{r['version']}" for r in reversed(rows)]
            pair = (self.diff_from.value, self.diff_to.value)
            self.diff_from.options = choices
            self.diff_to.options = choices
            if self._pinned and pair[0] in choices and pair[1] in choices:
                self.diff_from.value, self.diff_to.value = pair
            else:
                self._pinned = False
                follow = self._follow_pair(rows)
                if follow:
                    self.diff_from.value, self.diff_to.value = follow
            self._show_notes()
        finally:
            self._refreshing = False
        self._update_buttons()
        self._show_diff()

    @staticmethod
    def _follow_pair(rows: list[dict[str, Any]]) -> tuple[str, str] | None:
        """Previous -> current (the oldest two when the oldest version is current)."""
        if len(rows) < 2:
            return None
        versions = [r["version"] for r in rows]
        current = next((r["version"] for r in rows if r["current"]), versions[0])
        older = [v for v in versions if v < current]
        a, b = (max(older), current) if older else (versions[1], versions[0])
        return f"v{a}", f"v{b}"

    def _show_notes(self) -> None:
        if not self.module:
            self.notes.value = ""
            return
        t = timeline(self.sandbox_id, self.module)
        self._timeline = t
        parts = []
        if t["dropped"]:
            n = t["dropped"]
            limit = f" (max_versions={t['max_versions']})" if t["max_versions"] else ""
            parts.append(f'<div style="{_MUTED}">{n} older version{"s" if n != 1 else ""} '
                         f'{"were" if n != 1 else "was"} dropped{limit}</div>')
        parts.extend(f'<div style="{_ERROR}">✗ failed at {f["at"]:%H:%M:%S}: '
                     f'{html.escape(f["message"])}</div>' for f in t["failed"][:3])
        if t.get("unsaved"):
            parts.append(f'<div style="{_ERROR}">⚠ not saved to disk: '
                         f'{html.escape(t["unsaved"])}; new versions are kept in memory and '
                         'written when the store can be written again</div>')
        self.notes.value = "".join(parts)

    def _update_buttons(self) -> None:
        t = self._timeline if self.module else None
        sel = self.versions.value
        can_roll = sel is not None and sel != self._current
        self.rollback_button.disabled = not can_roll
        self.rollback_button.description = f"Roll back to v{sel}" if can_roll else "Roll back"
        self.rollback_button.tooltip = (f"make v{sel} current again" if can_roll else
                                        "select an older version to roll back to")
        for button, key, word in ((self.undo_button, "undo_to", "Undo"),
                                  (self.redo_button, "redo_to", "Redo")):
            target = t[key] if t else None
            button.disabled = target is None
            button.description = f"{word} to v{target}" if target is not None else word
            button.tooltip = (f"make v{target} current again" if target is not None
                              else f"nothing to {word.lower()}")

    def _pick_diff(self) -> None:
        if self._refreshing:
            return
        follow = self._follow_pair(self._rows)
        self._pinned = (self.diff_from.value, self.diff_to.value) != follow
        self.follow_button.disabled = not self._pinned
        self._show_diff()

    def follow(self) -> None:
        """Unpin the diff: show previous -> current again, and keep following it."""
        self._pinned = False
        self.refresh()

    def _show_diff(self) -> None:
        if self._refreshing:
            return
        self.follow_button.disabled = not self._pinned
        self.follow_button.tooltip = ("pinned: show previous -> current again" if self._pinned
                                      else "the diff follows previous -> current")
        a, b = self.diff_from.value, self.diff_to.value
        if not (self.module and a and b):
            self.diff_view.value = f'<i style="{_MUTED}">one version only: nothing to compare</i>'
            return
        d = api.diff_versions(self.sandbox_id, self.module, int(a[1:]), int(b[1:]))
        self.diff_view.value = diff_html(d, pinned=self._pinned)

    def rollback(self) -> None:
        """Roll the module back to the version selected in the list."""
        if self.module and self.versions.value is not None:
            self._act("rollback", self.versions.value)

    def _act(self, action: str, version: int | None = None) -> None:
        """Rollback, undo or redo; a sandbox that is only in the store is restored first."""
        sid, mod = self.sandbox_id, self.module
        if not mod:
            return
        step = {"undo": -1, "redo": +1}.get(action, 0)
        try:
            restored = api.load_before_change(sid, mod, version=version, step=step)
            if action == "rollback":
                assert version is not None
                r = api.rollback_module(sid, mod, version)
            else:
                r = (api.undo if step < 0 else api.redo)(sid, mod)
        except SandboxError as exc:
            self.status.value = f'<span style="{_ERROR}">{html.escape(str(exc))}</span>'
            return
        self._pinned = False
        self.refresh()
        first = ""
        if restored:
            first = ("restored from the stored history first ("
                     + ", ".join(f"{m} v{v}" for m, v in restored.items()) + "); ")
        what = "no change" if r.status == "no_change" else {
            "rollback": "rolled back", "undo": "undo", "redo": "redo"}[action]
        self.status.value = html.escape(f"{first}{r.module}: now v{r.new_version} ({what})")
