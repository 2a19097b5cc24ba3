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
applied at once, as a normal transactional reload in the student's kernel;
otherwise it waits in :meth:`Follower.pending` until :meth:`Follower.apply` or
:meth:`Follower.skip`.  A teacher's reload that ran a state handler publishes
the handler's source with the version (the whole ``%%sandbox_state_handler``
cell, or the function's source), and applying that version runs it on the
student's own objects, told the teacher's version numbers (the teacher version
the student had, and the new one).  A follower that was
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

import inspect
import linecache
import logging
import sqlite3
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from ..engine.diff import VersionDiff, diff_sources
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
#: The state handlers that went with published versions (their source, to run again).
_HANDLERS = """CREATE TABLE IF NOT EXISTS published_handlers (
    sandbox TEXT NOT NULL, module TEXT NOT NULL, version INTEGER NOT NULL,
    name TEXT NOT NULL, source TEXT, PRIMARY KEY (sandbox, module, version))"""
_applying: dict[str, int] = {}      # sandbox -> thread applying a teacher version to it


def applying(sandbox_id: str) -> bool:
    """Whether the calling thread is applying a teacher's version to ``sandbox_id`` now."""
    return _applying.get(sandbox_id) == threading.get_ident()


def handler_source(fn: Any) -> str | None:
    """The source that defines the state handler ``fn``: the ``%%sandbox_state_handler``
    cell it came from, else its own source text (None when Python cannot give it)."""
    cell = getattr(fn, "__sandbox_source__", None)
    if isinstance(cell, str):
        return cell
    try:
        return textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        return None


def _load_handler(source: str, name: str, label: str) -> Callable[[Any, Any, Any], Any]:
    """Define a published state handler in this kernel (its own namespace)."""
    filename = f"<{label}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    ns: dict[str, Any] = {"__name__": "__sandbox_state_handler__"}
    exec(compile(source, filename, "exec"), ns)
    fn = ns.get(name)
    if not callable(fn):
        raise SandboxError(f"the teacher's state handler {name!r} is not defined by the "
                           "source that was published with it")
    return cast(Callable[[Any, Any, Any], Any], fn)


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
        with self.lock:
            self.store.conn.execute(_HANDLERS)
            self.store.conn.commit()

    def write_handler(self, module: str, version: int, fn: Any) -> None:
        """Publish the state handler a teacher's reload ran (before the version itself, so
        that a follower reading the version finds its handler)."""
        name = getattr(fn, "__name__", None) or repr(fn)
        source = handler_source(fn)
        if source is None:
            log.warning("the state handler %s of %s v%s cannot be published: Python has no "
                        "source for it; followers migrate without it", name, module, version)
        with self.lock:
            conn = self.store.conn
            if conn is None:
                return
            conn.execute("INSERT OR REPLACE INTO published_handlers VALUES (?, ?, ?, ?, ?)",
                         (self.sandbox_id, module, version, name, source))
            conn.commit()

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
                fn, version = payload.get("state_handler"), payload.get("version")
                if event == "reloaded" and callable(fn) and isinstance(module, str) \
                        and isinstance(version, int):
                    self.write_handler(module, version, fn)
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
    #: The state handler the teacher's reload ran: its name, and its source (None: none
    #: was run, or Python had no source for it).
    state_handler: str | None = None
    handler_source: str | None = None
    loaded_at: float = 0.0


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
            handlers = self._handlers(store)
        finally:
            store.close()
        out = {}
        for m, h in histories.items():
            if h.current is not None:
                rec = h.current_record()
                name, src = handlers.get((m, h.current), (None, None))
                out[m] = TeacherVersion(m, h.current, rec.source, name, src,
                                        rec.loaded_at.timestamp())
        return out

    def _handlers(self, store: SQLiteVersionStore) -> dict[tuple[str, int], tuple[str, Any]]:
        conn = store.conn
        if conn is None:
            return {}
        try:
            rows = conn.execute("SELECT module, version, name, source FROM published_handlers "
                                "WHERE sandbox = ?", (self.teacher_id,)).fetchall()
        except sqlite3.OperationalError:      # published by a version without handlers
            return {}
        return {(m, v): (n, src) for m, v, n, src in rows}

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
                    emit("follow_pending", self.sandbox_id, module=tv.module,
                         version=tv.version)
                    lines.append(f"{self.sandbox_id}.{tv.module}: v{tv.version} from the "
                                 f"teacher is waiting (follower.apply() or "
                                 f"%sandbox_follow {self.sandbox_id} --apply)")
        for line in lines:
            self.on_version(line)
        return lines

    def pending(self) -> list[TeacherVersion]:
        with self.lock:
            return sorted(self._pending.values(), key=lambda t: t.module)

    def diff(self, module: str) -> VersionDiff:
        """What the waiting teacher version of ``module`` changes against the student's
        current code (``old_version``: the student's, ``new_version``: the teacher's)."""
        with self.lock:
            t = self._pending.get(module)
        if t is None:
            raise SandboxError(f"no teacher version of {module!r} is waiting in "
                               f"{self.sandbox_id}")
        h = sandbox_histories(self.sandbox_id).get(module)
        mine = h.current_record() if h is not None and h.current is not None else None
        return diff_sources(module, mine.version if mine else 0, mine.source if mine else "",
                            t.version, t.source)

    # ------------------------------------------------------------ acting
    def _apply(self, versions: list[TeacherVersion], handlers: bool = True) -> list[str]:
        """Load teacher versions into this kernel's sandbox: one transaction, or (when
        their reloads ran different state handlers) one per module, in the teacher's
        order.  ``handlers=False``: without the teacher's state handlers (a resync)."""
        if not versions:
            return []
        sources = {t.handler_source for t in versions if t.handler_source} if handlers \
            else set()
        if len(sources) > 1:
            out: list[str] = []
            for t in sorted(versions, key=lambda t: t.loaded_at):
                out += self._apply_one([t], True)
            return out
        return self._apply_one(versions, handlers)

    def _handler(self, versions: list[TeacherVersion]) -> Any:
        """The teacher's state handler of these versions, defined here and told the
        teacher's version numbers (None: their reloads ran none)."""
        t = next((t for t in versions if t.handler_source), None)
        if t is None or t.state_handler is None or t.handler_source is None:
            return None
        fn = _load_handler(t.handler_source, t.state_handler,
                           f"the teacher's state handler of {t.module} v{t.version}")
        current = {m: h.current for m, h in sandbox_histories(self.sandbox_id).items()}
        numbers: dict[Any, tuple[Any, int]] = {}
        for v in versions:           # the student's version now -> (teacher's old, new)
            mine = current.get(v.module)
            numbers.setdefault(mine, (self.applied.get(v.module, mine), v.version))

        def teachers_handler(state: Any, old_version: Any, new_version: Any) -> Any:
            old, new = numbers.get(old_version, (old_version, new_version))
            return fn(state, old, new)

        teachers_handler.__name__ = t.state_handler
        return teachers_handler

    def _apply_one(self, versions: list[TeacherVersion], handlers: bool) -> list[str]:
        try:
            handler = self._handler(versions) if handlers else None
            _applying[self.sandbox_id] = threading.get_ident()
            try:
                r = hot_reload_source(self.sandbox_id, {t.module: t.source for t in versions},
                                      state_handler=handler)
            finally:
                _applying.pop(self.sandbox_id, None)
        except Exception as exc:     # SandboxError, or the handler's source failing here
            text = str(exc) if isinstance(exc, SandboxError) \
                else f"the teacher's state handler does not run here: {type(exc).__name__}: {exc}"
            why = text.splitlines()[0] if text else type(exc).__name__
            for t in versions:
                self.failed[(t.module, t.version)] = text
                self._pending.pop(t.module, None)
                emit("follow_failed", self.sandbox_id, module=t.module, version=t.version,
                     message=why)
            return [f"{self.sandbox_id}.{t.module}: v{t.version} from the teacher FAILED "
                    f"here, nothing changed: {why}" for t in versions]
        for t in versions:
            self.applied[t.module] = t.version
            self._pending.pop(t.module, None)
        notes = [r.status] if r.status != "hot_reloaded" else []
        if handler is not None:
            notes.append(f"migrated by {handler.__name__}")
        said = f" ({', '.join(notes)})" if notes else ""
        return [f"{self.sandbox_id}.{t.module}: v{t.version} from the teacher applied{said}"
                for t in versions]

    def apply(self, module: str | None = None) -> list[str]:
        """Apply the waiting teacher versions (of ``module`` only, if given)."""
        with self.lock:
            return self._apply([t for t in self.pending()
                                if module is None or t.module == module])

    def skip(self, module: str | None = None) -> None:
        """Leave the waiting teacher versions (of ``module`` only) unapplied."""
        with self.lock:
            for m in [m for m in self._pending if module is None or m == module]:
                t = self._pending.pop(m)
                emit("follow_skipped", self.sandbox_id, module=m, version=t.version)

    def resync(self) -> list[str]:
        """Take the teacher's current version of every module again (after edits of
        one's own, say)."""
        with self.lock:
            current = self.teacher()
            self.seen.update({m: t.version for m, t in current.items()})
            return self._apply([t for _, t in sorted(current.items())], handlers=False)

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
