"""Reload a sandbox from files on every save: the ``%autoreload`` workflow, with versions.

:func:`watch` follows a ``.py`` file or a folder of them (the ``sandbox_path``
layout: one module per file, siblings imported by plain name) with
``watchfiles``, which uses the operating system's file events (inotify here)
and groups the events of one save, or of an editor writing several files, into
one batch after ``debounce`` seconds of quiet.  Each batch is one
transactional reload of the changed files, in dependency order, with the
watch's ``state_handler`` and ``check``: a save with a syntax error, a failing
body or a failing check changes nothing, and the next good save goes through.
New files add modules; deleted files are reported and their modules kept.

Every outcome goes to the watch's ``on_event`` callback and to the events the
panels follow (a failed save is listed as a failed attempt).  The notebook
magic shows the latest outcome in one output that updates in place.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine.layout import folder_modules, module_of_file
from ..engine.reload import StateHandler
from ..errors import SandboxError
from .registry import get_state
from .reloading import hot_reload_source

log = logging.getLogger(__name__)
_watchers: dict[str, Watcher] = {}
_lock = threading.Lock()


@dataclass
class WatchEvent:
    """What one batch of saves did."""

    kind: str                        # "reloaded", "unchanged", "failed", "deleted"
    modules: tuple[str, ...]
    message: str
    versions: dict[str, int] = field(default_factory=dict)


class Watcher:
    """A running watch; :meth:`stop` ends it (its thread is joined)."""

    def __init__(self, sandbox_id: str, path: Path, *, debounce: float,
                 state_handler: StateHandler | None, check: Any,
                 on_event: Callable[[WatchEvent], None] | None) -> None:
        import watchfiles
        self._watchfiles = watchfiles
        self.sandbox_id = sandbox_id
        self.path = path
        self.debounce = debounce
        self.state_handler = state_handler
        self.check = check
        self.on_event = on_event
        self.single = not path.is_dir()        # one file (its folder is watched)
        self.events: list[WatchEvent] = []
        self.counts: dict[str, int] = {}       # events of each kind since the watch began
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"sandbox-watch-{sandbox_id}")
        self._thread.start()
        self._ready.wait(5)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def summary(self) -> str:
        """One line: what the saves did so far, and the last failure if the last event
        failed (``print(watcher)`` shows it too)."""
        kinds = ("reloaded", "unchanged", "failed", "deleted")
        said = ", ".join(f"{self.counts[k]} {k}" for k in kinds if self.counts.get(k))
        state = "watching" if self.alive else "stopped watching"
        line = f"{state} {self.path} for sandbox {self.sandbox_id}: {said or 'no saves yet'}"
        last = self.events[-1] if self.events else None
        if last is not None and last.kind in ("failed", "deleted"):
            line += f"; last: {last.message}"
        return line

    def __repr__(self) -> str:
        return f"<Watcher {self.summary()}>"

    __str__ = summary

    def stop(self) -> None:
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(10)
        with _lock:
            if _watchers.get(self.sandbox_id) is self:
                del _watchers[self.sandbox_id]

    def _module_of(self, p: Path) -> str | None:
        if self.single:
            return self.path.stem if p.absolute() == self.path.absolute() else None
        return module_of_file(self.path, p)

    def _run(self) -> None:
        watch_path = self.path.parent if self.single else self.path
        quiet_ms = max(10, int(self.debounce * 1000))
        while not self._stop.is_set():
            if not watch_path.is_dir():
                self._wait_for(watch_path)
                continue
            try:
                self._watch_folder(watch_path, quiet_ms)
            except Exception:   # the folder went away mid-watch, or worse: say so
                if watch_path.is_dir():
                    log.exception("watching %s for sandbox %s stopped", self.path,
                                  self.sandbox_id)
                    self._ready.set()
                    return

    def _watch_folder(self, folder: Path, quiet_ms: int) -> None:
        """Batches of events under ``folder`` until the watch stops or the folder goes.

        The operating system's watch is in place before :func:`watch` returns (a save
        right after it is seen).  A batch ends after `debounce` seconds with no new
        event (a save written in parts is read once it is whole); one that never goes
        quiet is taken after ten times that, and its files are read only once they
        are `debounce` seconds old.
        """
        wf = self._watchfiles
        keep = wf.DefaultFilter()
        with wf.main.RustNotify([str(folder)], False, False, 300, True, False) as notify:
            self._ready.set()
            while not self._stop.is_set():
                raw = notify.watch(max(2000, 10 * quiet_ms), quiet_ms, 0, self._stop)
                if raw in ("stop", "signal"):
                    return
                if raw == "timeout":
                    continue
                changes = {(wf.Change(c), p) for c, p in raw if keep(wf.Change(c), p)}
                if changes:
                    self.apply(changes)
                if not folder.is_dir():
                    return

    def _wait_for(self, folder: Path) -> None:
        """The watched folder was removed: say so once, and go on when it is back."""
        self._ready.set()
        self._tell(WatchEvent("deleted", (), f"{folder} was removed; the modules stay loaded "
                              "and the watch goes on when it is back"))
        while not self._stop.wait(max(0.05, self.debounce)):
            if folder.is_dir():
                files = ({self.path.stem: self.path} if self.single
                         else folder_modules(self.path))
                present = {m: f for m, f in files.items() if f.exists()}
                if present:
                    self._tell(self._reload(present))
                return

    def apply(self, changes: set[tuple[Any, str]]) -> WatchEvent | None:
        """One batch of file events: one reload of the changed files."""
        deleted = self._watchfiles.Change.deleted
        changed: dict[str, Path] = {}
        gone: list[str] = []
        for change, name in changes:
            p = Path(name)
            module = self._module_of(p)
            if module is None:
                continue
            if change == deleted and not p.exists():
                gone.append(module)
            else:
                changed[module] = p
        event: WatchEvent | None = None
        if gone:
            event = WatchEvent("deleted", tuple(sorted(gone)),
                               f"deleted: {', '.join(sorted(gone))}; their modules stay loaded "
                               "(destroy or reload the sandbox to drop them)")
            self._tell(event)
        if changed:
            event = self._reload(changed)
            self._tell(event)
        return event

    def _reload(self, changed: dict[str, Path]) -> WatchEvent:
        names = tuple(sorted(changed))
        try:
            sources = {m: self._read_whole(p) for m, p in changed.items()}
        except (OSError, UnicodeDecodeError) as exc:
            return WatchEvent("failed", names, f"could not read {exc}")
        except _StillWriting as exc:
            return WatchEvent("failed", names, f"{exc} was being written while it was read; "
                              "the next event loads it")
        try:
            get_state(self.sandbox_id).origins.update(
                {m: str(p.resolve()) for m, p in changed.items()})
            r = hot_reload_source(self.sandbox_id, sources, state_handler=self.state_handler,
                                  check=self.check)
        except SandboxError as exc:   # announced by hot_reload_source (reload_failed)
            return WatchEvent("failed", names, str(exc).splitlines()[0])
        results = r.modules or (r,)
        versions = {x.module: x.new_version for x in results if x.new_version is not None}
        if all(x.status == "no_change" for x in results):
            return WatchEvent("unchanged", names, "saved without changes", versions)
        said = ", ".join(f"{m} v{v}" for m, v in versions.items())
        return WatchEvent("reloaded", names, f"reloaded {said}", versions)

    def _read_whole(self, p: Path) -> str:
        """A file's text, read only when no write touched it during the read, nor during
        the last `debounce` seconds (a torn read never becomes a version)."""
        for _ in range(50):
            before = os.stat(p)
            age = time.time() - before.st_mtime
            if 0 <= age < self.debounce:             # written just now: let it settle
                if self._stop.wait(self.debounce - age):
                    break
                continue                             # (a future time is taken as is)
            text = p.read_text(encoding="utf-8")
            after = os.stat(p)
            if (before.st_mtime_ns, before.st_size, before.st_ino) == \
                    (after.st_mtime_ns, after.st_size, after.st_ino):
                return text
        raise _StillWriting(str(p))

    def _tell(self, event: WatchEvent) -> None:
        self.counts[event.kind] = self.counts.get(event.kind, 0) + 1
        if event.kind in ("failed", "deleted"):
            # plain Python sees it too: the logging module (a notebook shows the magic's line)
            log.warning("sandbox %s, watching %s: %s", self.sandbox_id, self.path, event.message)
        else:
            log.info("sandbox %s, watching %s: %s", self.sandbox_id, self.path, event.message)
        self.events.append(event)
        del self.events[:-50]
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:   # a broken callback must not end the watch
                log.exception("watch callback failed")


class _StillWriting(Exception):
    pass


def watch(sandbox_id: str, path: str | Path, *, debounce: float = 0.2,
          state_handler: StateHandler | None = None, check: Any = None,
          on_event: Callable[[WatchEvent], None] | None = None) -> Watcher:
    """Reload ``sandbox_id`` from ``path`` (a ``.py`` file or a folder of them) on every save.

    The files are loaded once now (a failure here raises); afterwards every save
    is one reload (see the module docstring).  A sandbox has at most one watch:
    watching again replaces it.
    """
    get_state(sandbox_id)
    p = Path(path)
    if not p.exists():
        raise SandboxError(f"cannot watch {str(p)!r}: no such file or folder")
    if p.is_file() and p.suffix != ".py":
        raise SandboxError(f"cannot watch {str(p)!r}: watch a .py file or a folder of them")
    files = {p.stem: p} if p.is_file() else folder_modules(p)
    get_state(sandbox_id).origins.update({m: str(f.resolve()) for m, f in files.items()})
    if files:
        hot_reload_source(sandbox_id, {m: f.read_text(encoding="utf-8") for m, f in files.items()},
                          state_handler=state_handler, check=check)
    try:
        import watchfiles  # noqa: F401
    except ImportError:
        raise SandboxError("watching files needs watchfiles: pip install watchfiles") from None
    unwatch(sandbox_id)
    w = Watcher(sandbox_id, p, debounce=debounce, state_handler=state_handler, check=check,
                on_event=on_event)
    with _lock:
        _watchers[sandbox_id] = w
    return w


def unwatch(sandbox_id: str) -> bool:
    """Stop the sandbox's watch; True if there was one."""
    with _lock:
        w = _watchers.pop(sandbox_id, None)
    if w is not None:
        w.stop()
    return w is not None
