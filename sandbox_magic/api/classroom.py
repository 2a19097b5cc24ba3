"""A class: students' kernels follow the versions a teacher's kernel records.

The teacher publishes a sandbox's history to a file that students can read (a
shared folder): :func:`publish` writes every module's history there now and
after every change (reload, rollback, undo, redo) of that sandbox.  The teacher
never waits for followers: the file is a SQLite store in write-ahead-log mode,
whose readers never block its writer.

A student follows it (:func:`follow`): the store is opened read-only (a
follower can never change it), the teacher's current version of each module
is loaded into the student's own sandbox, and ``watchfiles`` reports each later
write of the file (no polling).  With ``auto=True`` each new teacher version is
applied at once, as a normal transactional reload in the student's kernel (the
teacher's state handler is not sent: the student's objects keep their state
where the new code allows it); otherwise it waits in :meth:`Follower.pending`
until :meth:`Follower.apply` or :meth:`Follower.skip`.  A follower that was
away catches up with the current version (the versions in between are not
applied one by one).  A teacher version that fails in the student's kernel
(its body raises, its check or migration fails) changes nothing there: it is
listed in :attr:`Follower.failed`, and the next version is tried when it comes.
The student's own edits are versions of the student's own history, never of
the teacher's; :meth:`Follower.resync` takes the teacher's current version
again.

Applying a followed version runs the teacher's code in the student's kernel.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..engine.store import SQLiteVersionStore, StoreFormatError
from ..errors import SandboxError
from .events import emit, listeners
from .queries import sandbox_histories
from .registry import find_host, get_state
from .reloading import hot_reload_source

log = logging.getLogger(__name__)

#: The history scope published histories are written under.
SCOPE = "published"
STORE_NAME = "classroom.sqlite3"
_CHANGES = ("reloaded", "rolled_back", "undo", "redo")


def _store_path(path: str | Path) -> Path:
    p = Path(path)
    return p if p.suffix == ".sqlite3" else p / STORE_NAME


class _Publisher:
    def __init__(self, sandbox_id: str, path: Path) -> None:
        self.sandbox_id = sandbox_id
        self.path = path
        self.store = SQLiteVersionStore(path)
        if self.store.conn is None or self.store.readonly:
            raise SandboxError(f"cannot publish to {path}: it cannot be written "
                               f"({self.store.failure or 'read-only'})")
        self.lock = threading.Lock()

    def write(self, modules: list[str] | None = None) -> None:
        histories = sandbox_histories(self.sandbox_id)
        with self.lock:
            for m, h in histories.items():
                if modules is None or m in modules:
                    self.store.save(self.sandbox_id, h, scope=SCOPE)
            conn = self.store.conn
            if conn is not None:
                try:     # readers that cannot use the write-ahead log still see it all
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except Exception:
                    log.debug("checkpointing the published store failed", exc_info=True)

    def on_event(self, event: str, sandbox_id: str, payload: dict[str, Any]) -> None:
        if sandbox_id == self.sandbox_id and event in _CHANGES:
            module = payload.get("module")
            try:
                self.write([module] if isinstance(module, str) else None)
            except Exception:        # publishing never fails the teacher's reload
                log.exception("publishing %s to %s failed", sandbox_id, self.path)


_publishers: dict[str, _Publisher] = {}


def publish(sandbox_id: str, path: str | Path) -> Path:
    """Share ``sandbox_id``'s history at ``path`` (a folder, or a ``.sqlite3`` file), now
    and after every later change; returns the store file followers open."""
    get_state(sandbox_id)
    unpublish(sandbox_id)
    pub = _Publisher(sandbox_id, _store_path(path))
    pub.write()
    _publishers[sandbox_id] = pub
    listeners.append(pub.on_event)
    return pub.path


def unpublish(sandbox_id: str) -> None:
    """Stop publishing (what was published stays readable)."""
    pub = _publishers.pop(sandbox_id, None)
    if pub is not None:
        if pub.on_event in listeners:
            listeners.remove(pub.on_event)
        pub.store.close()


@dataclass(frozen=True)
class TeacherVersion:
    """A version the teacher recorded that this follower has not applied."""

    module: str
    version: int
    source: str


class Follower:
    """Follows a published history (see the module doc)."""

    def __init__(self, sandbox_id: str, path: Path, auto: bool,
                 on_version: Callable[[str], None] | None, teacher: str | None = None) -> None:
        self.sandbox_id = sandbox_id
        self._teacher = teacher or sandbox_id
        self.path = path
        self.auto = auto
        self.on_version = on_version or (lambda line: None)
        self.applied: dict[str, int] = {}        # module -> teacher version applied
        self.seen: dict[str, int] = {}           # module -> newest teacher version seen
        self._pending: dict[str, TeacherVersion] = {}
        self.failed: dict[tuple[str, int], str] = {}
        self.lock = threading.RLock()
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.latency: list[float] = []           # seconds from a write to its check
        self.stamp = self._stamp()               # the file when it was last read

    # ------------------------------------------------------------ reading
    def teacher(self) -> dict[str, TeacherVersion]:
        """The teacher's current version of each module, read now (read-only)."""
        try:
            store = SQLiteVersionStore(self.path, read_only=True)
        except StoreFormatError as exc:
            raise SandboxError(str(exc)) from None
        try:
            histories = store.load(self.teacher_id, scope=SCOPE)
        finally:
            store.close()
        out = {}
        for m, h in histories.items():
            if h.current is not None:
                rec = h.current_record()
                out[m] = TeacherVersion(m, h.current, rec.source)
        return out

    @property
    def teacher_id(self) -> str:
        """The published sandbox's id (the same as the follower's, unless given)."""
        return self._teacher

    def check(self) -> list[str]:
        """Look at the published history now; apply (``auto``) or queue what is new.
        Returns one line per teacher version it saw."""
        lines = []
        with self.lock:
            new = []
            for m, tv in sorted(self.teacher().items()):
                if self.seen.get(m) == tv.version:
                    continue
                self.seen[m] = tv.version
                if self.applied.get(m) != tv.version:
                    new.append(tv)
            if self.auto:
                lines = self._apply(new)
            else:
                for tv in new:
                    self._pending[tv.module] = tv
                    lines.append(f"{self.sandbox_id}.{tv.module}: v{tv.version} from the "
                                 f"teacher is waiting (follower.apply() or "
                                 f"%sandbox_follow {self.sandbox_id} --apply)")
        for line in lines:
            self.on_version(line)
        return lines

    def pending(self) -> list[TeacherVersion]:
        with self.lock:
            return sorted(self._pending.values(), key=lambda t: t.module)

    # ------------------------------------------------------------ acting
    def _apply(self, versions: list[TeacherVersion]) -> list[str]:
        """Load teacher versions into this kernel's sandbox, as one transaction."""
        if not versions:
            return []
        try:
            r = hot_reload_source(self.sandbox_id, {t.module: t.source for t in versions})
        except SandboxError as exc:
            why = str(exc).splitlines()[0]
            for t in versions:
                self.failed[(t.module, t.version)] = str(exc)
                self._pending.pop(t.module, None)
            emit("follow_failed", self.sandbox_id, module=versions[0].module,
                 version=versions[0].version, message=why)
            return [f"{self.sandbox_id}.{t.module}: v{t.version} from the teacher FAILED "
                    f"here, nothing changed: {why}" for t in versions]
        for t in versions:
            self.applied[t.module] = t.version
            self._pending.pop(t.module, None)
        return [f"{self.sandbox_id}.{t.module}: v{t.version} from the teacher applied"
                + (f" ({r.status})" if r.status != "hot_reloaded" else "") for t in versions]

    def apply(self, module: str | None = None) -> list[str]:
        """Apply the waiting teacher versions (of ``module`` only, if given)."""
        with self.lock:
            return self._apply([t for t in self.pending()
                                if module is None or t.module == module])

    def skip(self, module: str | None = None) -> None:
        """Leave the waiting teacher versions (of ``module`` only) unapplied."""
        with self.lock:
            for m in [m for m in self._pending if module is None or m == module]:
                del self._pending[m]

    def resync(self) -> list[str]:
        """Take the teacher's current version of every module again (after edits of
        one's own, say)."""
        with self.lock:
            current = self.teacher()
            self.seen.update({m: t.version for m, t in current.items()})
            return self._apply([t for _, t in sorted(current.items())])

    # ------------------------------------------------------------ watching
    def start(self) -> None:
        self.thread = threading.Thread(target=self._watch, daemon=True,
                                       name=f"sandbox-follow-{self.sandbox_id}")
        self.thread.start()

    def _stamp(self) -> tuple[int, ...]:
        out: list[int] = []
        for p in (self.path, self.path.with_name(self.path.name + "-wal")):
            try:
                st = p.stat()
                out += [st.st_mtime_ns, st.st_size]
            except OSError:
                out += [0, 0]
        return tuple(out)

    def _watch(self) -> None:
        """File events of the store's folder wake the follower, which reads the store when
        the file's time or size changed (readers opening it make events too); once a
        second without events, one stat of the file catches a write the events missed
        (one made while the watch was starting, say)."""
        from watchfiles import watch

        names = {self.path.name, self.path.name + "-wal"}
        stamp = self.stamp
        for _changes in watch(self.path.parent, stop_event=self.stop_event, debounce=50,
                             step=20, watch_filter=lambda _c, p: Path(p).name in names,
                             raise_interrupt=False, yield_on_timeout=True,
                             rust_timeout=1000):
            now = self._stamp()
            if now == stamp:
                continue        # no write (an event of a reader opening the file)
            stamp = now
            started = time.perf_counter()
            try:
                self.check()
            except Exception:
                log.exception("following %s failed", self.path)
            self.latency.append(time.perf_counter() - started)

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(timeout=5)


_followers: dict[str, Follower] = {}


def follow(sandbox_id: str, path: str | Path, *, auto: bool = False,
           on_version: Callable[[str], None] | None = None,
           teacher: str | None = None) -> Follower:
    """Follow the history published at ``path`` (see the module doc) in the sandbox
    ``sandbox_id`` of this kernel (created if needed), from the published sandbox of the
    same id (or ``teacher``).  Loads the teacher's current versions now; ``on_version``
    gets one line per teacher version seen (what was applied, waits or failed)."""
    store = _store_path(path)
    if not store.exists():
        raise SandboxError(f"nothing is published at {store}: the teacher runs "
                           f"sm.publish({sandbox_id!r}, folder) or %sandbox_publish first")
    unfollow(sandbox_id)
    if find_host(sandbox_id) is None:
        from .lifecycle import create_sandbox
        create_sandbox(sandbox_id)
    f = Follower(sandbox_id, store, auto, on_version, teacher)   # (stamps the file)
    for line in f.resync():                  # the current versions, whatever auto says
        f.on_version(line)
    f.start()
    _followers[sandbox_id] = f
    return f


def unfollow(sandbox_id: str) -> None:
    f = _followers.pop(sandbox_id, None)
    if f is not None:
        f.stop()


def follower(sandbox_id: str) -> Follower | None:
    return _followers.get(sandbox_id)
