"""The in-notebook history panel (ipywidgets).

Module picker, version list, a diff between any two versions, and Rollback /
Undo / Redo buttons acting on the live sandbox.  The panel listens to the
engine's events, so it refreshes itself whenever a reload, rollback, undo or
redo happens anywhere in the kernel.  After a kernel restart it shows the
stored history at once; the buttons then restore the sandbox first.  All text
from module sources is escaped before it becomes HTML.
"""

from __future__ import annotations

import html
import weakref
from typing import Any

import ipywidgets as w

from .. import api
from ..errors import ModuleNotFoundInSandboxError, SandboxError
from .display import diff_html
from .panel_rows import history_rows

_panels: weakref.WeakSet[HistoryPanel] = weakref.WeakSet()


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
        self.module_picker = w.Dropdown(description="Module")
        self.versions = w.Select(description="Versions", rows=8,
                                 layout=w.Layout(width="100%"))
        self.diff_from = w.Dropdown(description="Diff from")
        self.diff_to = w.Dropdown(description="to")
        self.diff_view = w.HTML()
        self.rollback_button = w.Button(description="Rollback", icon="undo",
                                        tooltip="make the selected version current")
        self.undo_button = w.Button(description="Undo", tooltip="step back in time")
        self.redo_button = w.Button(description="Redo", tooltip="step forward again")
        self.status = w.HTML()
        super().__init__([
            w.HTML(f"<b>Sandbox {html.escape(sandbox_id)}</b>"),
            self.module_picker, self.versions,
            w.HBox([self.rollback_button, self.undo_button, self.redo_button]),
            w.HBox([self.diff_from, self.diff_to]), self.diff_view, self.status])
        self._refreshing = False
        self.refresh(module)
        self.module_picker.observe(lambda ch: self.refresh(), names="value")
        self.diff_from.observe(lambda ch: self._show_diff(), names="value")
        self.diff_to.observe(lambda ch: self._show_diff(), names="value")
        self.rollback_button.on_click(lambda b: self.rollback())
        self.undo_button.on_click(lambda b: self._act("undo"))
        self.redo_button.on_click(lambda b: self._act("redo"))
        _panels.add(self)
        if _on_event not in api.listeners:
            api.listeners.append(_on_event)

    @property
    def module(self) -> str | None:
        return self.module_picker.value

    def version_rows(self) -> list[dict[str, Any]]:
        """One row per retained version, newest first (what the list shows)."""
        return history_rows(self.sandbox_id, self.module) if self.module else []

    @staticmethod
    def _label(r: dict[str, Any]) -> str:
        mark = "● " if r["current"] else "  "
        mig = f" migrated by {r['state_handler']}" if r["state_handler"] else ""
        return (f"{mark}v{r['version']}  {r['loaded_at']:%H:%M:%S}  {r['checksum']}  "
                f"+{r['added']} -{r['removed']}{mig}")

    def refresh(self, module: str | None = None) -> None:
        """Re-read the sandbox and redraw everything."""
        if self._refreshing:
            return
        self._refreshing = True
        try:
            try:
                mods = sorted(api.history_modules(self.sandbox_id))
            except SandboxError:
                self.status.value = "<i>this sandbox no longer exists</i>"
                return
            keep = module or self.module_picker.value
            self.module_picker.options = mods
            self.module_picker.value = keep if keep in mods else (mods[0] if mods else None)
            rows = self.version_rows()
            self.versions.options = [(self._label(r), r["version"]) for r in rows]
            current = next((r["version"] for r in rows if r["current"]), None)
            self.versions.value = current
            choices = [f"v{r['version']}" for r in reversed(rows)]
            self.diff_from.options = choices
            self.diff_to.options = choices
            if len(rows) >= 2:
                self.diff_from.value = f"v{rows[1]['version']}"
                self.diff_to.value = f"v{rows[0]['version']}"
        finally:
            self._refreshing = False
        self._show_diff()

    def _show_diff(self) -> None:
        if self._refreshing:
            return
        a, b = self.diff_from.value, self.diff_to.value
        if not (self.module and a and b):
            self.diff_view.value = "<i>one version only: nothing to compare</i>"
            return
        d = api.diff_versions(self.sandbox_id, self.module, int(a[1:]), int(b[1:]))
        self.diff_view.value = diff_html(d)

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
            self.status.value = f'<span style="color:#b00">{html.escape(str(exc))}</span>'
            return
        self.refresh()
        first = ""
        if restored:
            first = ("restored from the stored history first ("
                     + ", ".join(f"{m} v{v}" for m, v in restored.items()) + "); ")
        what = "no change" if r.status == "no_change" else {
            "rollback": "rolled back", "undo": "undo", "redo": "redo"}[action]
        self.status.value = html.escape(f"{first}{r.module}: now v{r.new_version} ({what})")
