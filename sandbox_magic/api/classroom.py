"""A class: students' kernels follow the versions a teacher's kernel records.

The teacher publishes a sandbox's history to a file that students can read (a
shared folder): :func:`publish` writes every module's history there now and
after every change (reload, rollback, undo, redo) of that sandbox, each change
in one write with what it ran besides the code: its state handler and its
check, as source (the whole ``%%sandbox_state_handler`` cell, or the
function's ``def``; a check expression as it is).  The teacher never waits for
followers: the file is a SQLite store in write-ahead-log mode, whose readers
never block its writer.  Publishing again (a new session) replaces what was
published under the same id.

A student follows it (:func:`follow`): the store is opened read-only (a
follower can never change it, and leaves no file in the folder when no teacher
is writing), the teacher's current version of each module is loaded into the
student's own sandbox, and ``watchfiles`` reports each later write of the file
(no polling; a stat once a second if the folder cannot be watched).  With
``auto=True`` what is new is applied at once, as one transactional reload,
with the teacher's checks; each module's objects are migrated by the state
handler of the teacher's change that made that module's version (the engine
asks a handler with ``for_module`` for each module's), told the teacher's
version numbers, and only on code the student had from the teacher (not on
the student's own edits).  Otherwise a new version
waits in :meth:`Follower.pending` until :meth:`Follower.apply` or
:meth:`Follower.skip`.  A follower that was away catches up with the current
version (the versions in between are not applied one by one; the last change's
handler runs).  A teacher version that fails in the student's kernel (its body
raises, its check or migration fails, its handler could not be sent) changes
nothing there: it is listed in :attr:`Follower.failed`, and the next version
is tried when it comes.  The student's own edits are versions of the student's
own history, never of the teacher's; :meth:`Follower.resync` takes the
teacher's current version again.

Applying a followed version runs the teacher's code in the student's kernel.
"""

from __future__ import annotations

import ast
import inspect
import json
import linecache
import logging
import sqlite3
import textwrap
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from ..engine.artifact import source_checksum
from ..engine.deps import dependency_graph
from ..engine.diff import VersionDiff, diff_sources
from ..engine.store import SQLiteVersionStore, StoreFormatError, StoreWarning
from ..errors import SandboxError
from ..live.migration import handler_for_module
from .events import emit, listeners
from .queries import sandbox_histories
from .registry import find_host, get_state
from .reloading import hot_reload_source

log = logging.getLogger(__name__)

#: The history scope published histories are written under.
SCOPE = "published"
STORE_NAME = "classroom.sqlite3"
_CHANGES = ("reloaded", "rolled_back", "undo", "redo")
#: The teacher's last change of each module: its number (one per transaction, shared by
#: the transaction's modules; increasing in the file), and the state handler and check
#: it ran, as source to run again in the students' kernels.
_CHANGES_TABLE = """CREATE TABLE IF NOT EXISTS published_changes (
    sandbox TEXT NOT NULL, module TEXT NOT NULL, version INTEGER NOT NULL,
    seq INTEGER NOT NULL, kind TEXT NOT NULL, handler TEXT, handler_source TEXT,
    check_kind TEXT, check_name TEXT, check_source TEXT, change_modules TEXT,
    PRIMARY KEY (sandbox, module))"""
#: Every version published (by the checksum of its code), kept when the teacher's history
#: no longer retains it: a follower knows the student's code was the teacher's.
_SOURCES_TABLE = """CREATE TABLE IF NOT EXISTS published_sources (
    sandbox TEXT NOT NULL, module TEXT NOT NULL, checksum TEXT NOT NULL,
    version INTEGER NOT NULL, PRIMARY KEY (sandbox, module, checksum))"""
#: Seconds before a failed write of the published store is tried again.
RETRY = 2.0
_applying: dict[str, int] = {}      # sandbox -> thread applying a teacher version to it


def applying(sandbox_id: str) -> bool:
    """Whether the calling thread is applying a teacher's version to ``sandbox_id`` now."""
    return _applying.get(sandbox_id) == threading.get_ident()


def source_of(fn: Any) -> str | None:
    """Source that defines the function ``fn`` under its own name (to run it in another
    kernel): the ``%%sandbox_state_handler`` cell it came from, else its own ``def``.
    None for what has no such source: a lambda, a partial, a callable object, a
    function made by ``exec``."""
    cell = getattr(fn, "__sandbox_source__", None)
    if isinstance(cell, str):
        return cell
    name = getattr(fn, "__name__", "")
    if not inspect.isfunction(fn) or not name.isidentifier():
        return None
    try:
        src = textwrap.dedent(inspect.getsource(fn))
        tree = ast.parse(src)
    except (OSError, TypeError, SyntaxError):
        return None
    defines = any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name
                  for n in tree.body)
    return src if defines else None


def _name_of(fn: Any) -> str:
    """The name a published function is found by in its source (the name a
    ``%%sandbox_state_handler`` cell binds it to, else its own)."""
    return str(getattr(fn, "__sandbox_name__", None) or getattr(fn, "__name__", None)
               or repr(fn))


def _define(source: str, name: str, label: str) -> Callable[..., Any]:
    """Define a published function in this kernel (a namespace of its own)."""
    filename = f"<{label}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    ns: dict[str, Any] = {"__name__": "__sandbox_state_handler__"}
    exec(compile(source, filename, "exec"), ns)
    fn = ns.get(name)
    if not callable(fn):
        raise SandboxError(f"{label}: {name!r} is not defined by the source published "
                           "with it")
    return cast(Callable[..., Any], fn)


def _store_path(path: str | Path) -> Path:
    p = Path(path).expanduser().resolve()       # absolute: a later chdir changes nothing
    return p if p.suffix == ".sqlite3" else p / STORE_NAME


class _Publisher:
    def __init__(self, sandbox_id: str, path: Path) -> None:
        self.sandbox_id = sandbox_id
        self.path = path
        self.store = self._open()
        if self.store.conn is None or self.store.readonly:
            failure = self.store.failure or "read-only"
            self.store.close()
            raise SandboxError(f"cannot publish to {path}: it cannot be written ({failure})")
        self.lock = threading.Lock()
        self.last_transaction: Any = None
        self.missed = False          # a write failed: the next one writes everything
        self.retry: threading.Timer | None = None
        self.closed = False
        with self.lock:
            columns = {r[1] for r in self.store.conn.execute(
                "PRAGMA table_info(published_changes)")}
            if columns and "change_modules" not in columns:     # an earlier layout
                self.store.conn.execute("DROP TABLE published_changes")
            self.store.conn.execute(_CHANGES_TABLE)
            self.store.conn.execute(_SOURCES_TABLE)

    def _open(self) -> SQLiteVersionStore:
        with warnings.catch_warnings():     # what goes wrong is said by the publisher
            warnings.simplefilter("ignore", StoreWarning)
            # a short wait for the file's lock: the teacher's reload must not wait long
            return SQLiteVersionStore(self.path, timeout=1.0)

    def _usable(self) -> bool:
        """The store can be written (opened again after a failed write: the next change
        publishes everything that was missed)."""
        if self.store.conn is not None and not self.store.readonly:
            return True
        failure = self.store.failure
        self.store.close()
        self.store = self._open()
        if self.store.conn is None or self.store.readonly:
            log.warning("publishing %s to %s failed (%s); tried again in %g s",
                        self.sandbox_id, self.path, self.store.failure or failure, RETRY)
            return False
        with self.lock:
            self.store.conn.execute(_CHANGES_TABLE)
            self.store.conn.execute(_SOURCES_TABLE)
        return True

    def _missed(self) -> None:
        """A write failed: everything is written at the next change, or in RETRY seconds."""
        self.missed = True
        if self.retry is None and not self.closed:
            self.retry = threading.Timer(RETRY, self._retry)
            self.retry.daemon = True
            self.retry.start()

    def _retry(self) -> None:
        self.retry = None
        if self.missed and not self.closed:
            try:
                self.write()
            except Exception:
                log.exception("publishing %s to %s failed", self.sandbox_id, self.path)

    def reset(self) -> None:
        """Publish afresh: what an earlier session published under this id is replaced
        (its version numbers are not this session's)."""
        self.store.forget(self.sandbox_id, SCOPE)
        with self.lock:
            conn = self.store.conn
            if conn is not None:
                for table in ("published_changes", "published_sources"):
                    conn.execute(f"DELETE FROM {table} WHERE sandbox = ?", (self.sandbox_id,))
        self.write()

    def write(self, change: tuple[str, dict[str, Any]] | None = None) -> None:
        """Write the history (of the change's modules, or all) and the change itself,
        in one transaction: a follower reads all of a teacher's transaction or none."""
        if not self._usable():
            self._missed()
            return
        everything, self.missed = self.missed, False   # after a failed write: all of it
        histories = sandbox_histories(self.sandbox_id)
        modules = None
        if change is not None:
            modules = [m for m in change[1].get("modules") or [change[1].get("module")]
                       if isinstance(m, str) and m in histories]
        with self.lock:
            try:
                with self.store.batch():
                    conn = self.store.conn
                    if conn is None:
                        raise sqlite3.OperationalError(self.store.failure or "not open")
                    if change is not None and modules:
                        self._write_change(conn, change[0], change[1], modules, histories)
                    for m, h in histories.items():
                        if everything or modules is None or m in modules:
                            self._write_history(conn, m, h, modules is None or everything)
            except sqlite3.Error as exc:
                log.warning("publishing %s to %s failed (%s); tried again in %g s",
                            self.sandbox_id, self.path, exc, RETRY)
                self._missed()
                return
            conn = self.store.conn
            if conn is None:
                self.missed = True
                log.warning("publishing %s to %s failed (%s); tried again at the next change",
                            self.sandbox_id, self.path, self.store.failure)
            else:
                try:     # readers that cannot use the write-ahead log still see it all
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error:
                    log.debug("checkpointing the published store failed", exc_info=True)

    def _write_history(self, conn: sqlite3.Connection, module: str, h: Any,
                       every_version: bool) -> None:
        self.store.save(self.sandbox_id, h, scope=SCOPE)
        if self.store.conn is None:
            raise sqlite3.OperationalError(self.store.failure or "the store closed")
        records = list(h.records.values()) if every_version else \
            [h.current_record()] if h.current is not None else []
        conn.executemany("INSERT OR IGNORE INTO published_sources VALUES (?, ?, ?, ?)",
                         [(self.sandbox_id, module, r.checksum, r.version) for r in records])

    def _write_change(self, conn: sqlite3.Connection, event: str, payload: dict[str, Any],
                      modules: list[str], histories: dict[str, Any]) -> None:
        fn, check = payload.get("state_handler"), payload.get("check")
        name = source = None
        if callable(fn):
            name = _name_of(fn)
            source = source_of(fn)
            if source is None:
                log.warning("the state handler %s cannot be published (Python has no source "
                            "defining it); followers refuse the version it migrated", name)
        check_row: tuple[Any, Any, Any] = (None, None, None)
        if isinstance(check, str):
            check_row = ("expr", None, check)
        elif callable(check):
            check_row = ("def", _name_of(check), source_of(check))
            if check_row[2] is None:
                log.warning("the check %s cannot be published (Python has no source defining "
                            "it); followers refuse the version it checked", check_row[1])
        (seq,) = conn.execute("SELECT coalesce(max(seq), 0) + 1 FROM published_changes"
                              ).fetchone()
        for m in modules:
            conn.execute("INSERT OR REPLACE INTO published_changes VALUES "
                         "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (self.sandbox_id, m, histories[m].current, seq, event, name, source,
                          *check_row, json.dumps(sorted(modules))))

    def on_event(self, event: str, sandbox_id: str, payload: dict[str, Any]) -> None:
        if sandbox_id != self.sandbox_id:
            return
        if event == "sandbox_destroyed":        # what was published stays readable
            unpublish(sandbox_id)
            return
        if event not in _CHANGES:
            return
        transaction = payload.get("transaction")
        if transaction is not None and transaction == self.last_transaction:
            return                  # written with the transaction's first module
        self.last_transaction = transaction
        try:
            self.write((event, payload))
        except Exception:            # publishing never fails the teacher's reload
            log.exception("publishing %s to %s failed", sandbox_id, self.path)

    def close(self) -> None:
        self.closed = True
        if self.retry is not None:
            self.retry.cancel()
        conn = self.store.conn
        if conn is not None:
            try:     # a follower reading now must not hold the teacher up
                conn.execute("PRAGMA busy_timeout = 100")
            except sqlite3.Error:
                pass
        self.store.close()


_publishers: dict[str, _Publisher] = {}


def publish(sandbox_id: str, path: str | Path) -> Path:
    """Share ``sandbox_id``'s history at ``path`` (a folder, or a ``.sqlite3`` file), now
    and after every later change; returns the store file followers open.  What an earlier
    session published there under the same id is replaced."""
    get_state(sandbox_id)
    pub = _Publisher(sandbox_id, _store_path(path))      # (fails before anything stops)
    unpublish(sandbox_id)
    try:
        pub.reset()
    except Exception:
        pub.close()
        raise
    _publishers[sandbox_id] = pub
    listeners.append(pub.on_event)
    return pub.path


def unpublish(sandbox_id: str) -> None:
    """Stop publishing (what was published stays readable)."""
    pub = _publishers.pop(sandbox_id, None)
    if pub is not None:
        if pub.on_event in listeners:
            listeners.remove(pub.on_event)
        pub.close()


@dataclass(frozen=True)
class TeacherVersion:
    """The teacher's current version of a module, as published."""

    module: str
    version: int
    source: str
    #: The state handler the teacher's last change of the module ran: its name, and its
    #: source (None: none ran, or Python had no source for it).
    state_handler: str | None = None
    handler_source: str | None = None
    loaded_at: float = 0.0
    #: The teacher's change that made it current (0: not known, published at the start).
    seq: int = 0
    #: The check that change ran: ("expr", None, text), ("def", name, source or None).
    check: tuple[str, str | None, str | None] | None = None


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
        self._applied_source: dict[str, str] = {}   # module -> the code of that version
        self.seen: dict[str, tuple[int, str]] = {}   # module -> newest (version, source)
        self._pending: dict[str, TeacherVersion] = {}
        self._versions: dict[str, dict[str, int]] = {}   # module -> {source: teacher v}
        self.failed: dict[tuple[str, int], str] = {}
        self.lock = threading.RLock()
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        #: How the file is watched: "events" (watchfiles), or why it is polled instead.
        self.watching = "events"
        self.latency: list[float] = []           # seconds from a write to its check
        self.stamp = self._stamp()               # the file when it was last read

    # ------------------------------------------------------------ reading
    def teacher(self) -> dict[str, TeacherVersion]:
        """The teacher's current version of each module, read now (read-only)."""
        snapshot = not self.path.with_name(self.path.name + "-wal").exists()
        try:
            # no write-ahead log: no teacher is writing; read the file as it is (without
            # making the log's side files, which would be the student's in the folder)
            store = SQLiteVersionStore(self.path, read_only=True, snapshot=snapshot)
        except StoreFormatError as exc:
            raise SandboxError(str(exc)) from None
        conn = store.conn
        try:
            if conn is not None:
                conn.execute("BEGIN")      # one snapshot: the histories and their changes
            published = store.list_sandboxes(SCOPE)
            if self.teacher_id not in published:
                there = ", ".join(sorted(published)) or "none"
                raise SandboxError(f"{self.path} has no published sandbox "
                                   f"{self.teacher_id!r} (published there: {there})")
            histories = store.load(self.teacher_id, scope=SCOPE)
            if store.failure:
                raise SandboxError(f"cannot read {self.path}: {store.failure}")
            changes = self._changes(store)
            known = self._known(store)
        finally:
            if store.conn is not None and store.conn.in_transaction:
                store.conn.execute("COMMIT")
            store.close()
        out = {}
        for m, h in histories.items():
            if h.current is None:
                continue
            rec = h.current_record()
            row = changes.get(m)
            if row is not None and row[0] == h.current:
                _, seq, name, src, ck, cn, cs = row
                out[m] = TeacherVersion(m, h.current, rec.source, name, src,
                                        rec.loaded_at.timestamp(), seq,
                                        (ck, cn, cs) if ck else None)
            else:
                out[m] = TeacherVersion(m, h.current, rec.source, None, None,
                                        rec.loaded_at.timestamp())
            with self.lock:
                self._versions[m] = {**known.get(m, {}),
                                     **{r.checksum: v for v, r in h.records.items()}}
        return out

    def _known(self, store: SQLiteVersionStore) -> dict[str, dict[str, int]]:
        conn = store.conn
        out: dict[str, dict[str, int]] = {}
        if conn is None:
            return out
        try:
            rows = conn.execute("SELECT module, checksum, version FROM published_sources "
                                "WHERE sandbox = ?", (self.teacher_id,)).fetchall()
        except sqlite3.OperationalError:      # published before sources were
            return out
        for m, checksum, v in rows:
            out.setdefault(m, {})[checksum] = v
        return out

    def _changes(self, store: SQLiteVersionStore) -> dict[str, tuple[Any, ...]]:
        conn = store.conn
        if conn is None:
            return {}
        try:
            rows = conn.execute("SELECT module, version, seq, handler, handler_source, "
                                "check_kind, check_name, check_source, change_modules FROM "
                                "published_changes WHERE sandbox = ?",
                                (self.teacher_id,)).fetchall()
        except sqlite3.OperationalError:      # published before changes were
            return {}
        # a change's check holds while all of its modules are at that change's versions
        still: dict[int, set[str]] = {}
        for m, _v, seq, *_ in rows:
            still.setdefault(seq, set()).add(m)
        out = {}
        for m, v, seq, name, src, ck, cn, cs, mods in rows:
            whole = set(json.loads(mods or "[]")) == still[seq]
            out[m] = (v, seq, name, src, ck if whole else None, cn, cs)
        return out

    @property
    def teacher_id(self) -> str:
        """The published sandbox's id (the same as the follower's, unless given)."""
        return self._teacher

    @property
    def alive(self) -> bool:
        """Whether the follower still watches the published file."""
        return self.thread is not None and self.thread.is_alive()

    def _source_here(self, module: str) -> str | None:
        h = sandbox_histories(self.sandbox_id).get(module)
        return h.current_record().source if h is not None and h.current is not None \
            else None

    def _teacher_version_here(self, module: str) -> int | None:
        """The teacher's version the student's current code of ``module`` is (None: the
        student's own edit, or not loaded here): the one applied last, or one the
        teacher's history still holds."""
        here = self._source_here(module)
        if here is None:
            return None
        if self._applied_source.get(module) == here:
            return self.applied.get(module)
        return self._versions.get(module, {}).get(source_checksum(here))

    def _say(self, lines: list[str]) -> None:
        for line in lines:
            try:
                self.on_version(line)
            except Exception:       # a broken callback must not stop the follower
                log.exception("on_version callback of %s failed", self.sandbox_id)

    def check(self) -> list[str]:
        """Look at the published history now; apply (``auto``) or queue what is new.
        Returns one line per teacher version it saw."""
        lines = []
        with self.lock:
            if self.stop_event.is_set():
                return []
            new = []
            current = self.teacher()
            for m in [m for m in self._pending if m not in current]:
                del self._pending[m]          # withdrawn (published again without it)
            for m, tv in sorted(current.items()):
                if self.seen.get(m) == (tv.version, tv.source):
                    continue
                self.seen[m] = (tv.version, tv.source)
                if self._source_here(m) == tv.source:   # the student has it (a rollback
                    self._applied(tv)                   # of the teacher's, say)
                    continue
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
        self._say(lines)
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
    def _applied(self, t: TeacherVersion) -> None:
        self.applied[t.module] = t.version
        self._applied_source[t.module] = t.source
        self._pending.pop(t.module, None)

    def _apply(self, versions: list[TeacherVersion]) -> list[str]:
        """Load teacher versions into this kernel's sandbox, as one transactional reload
        (the teacher's current code of these modules belongs together), each module's
        objects migrated by the state handler of the teacher's change that made that
        module's version, and the checks of those changes run."""
        if not versions:
            return []
        try:
            return self._apply_together(versions)
        except _Failed as failed:
            groups = self._groups(versions)
            if len(groups) == 1:
                for t in versions:
                    self.failed[(t.module, t.version)] = failed.text
                    self._pending.pop(t.module, None)
                    emit("follow_failed", self.sandbox_id, module=t.module,
                         version=t.version, message=failed.why)
                return failed.lines
            # what does not belong together fails on its own
            return [line for g in groups for line in self._apply(g)]

    def _apply_together(self, versions: list[TeacherVersion]) -> list[str]:
        try:
            handler = self._handlers(versions)
            check = self._checks(versions)
            _applying[self.sandbox_id] = threading.get_ident()
            try:
                r = hot_reload_source(self.sandbox_id, {t.module: t.source for t in versions},
                                      state_handler=handler, check=check)
            finally:
                _applying.pop(self.sandbox_id, None)
        except Exception as exc:     # SandboxError, or published source failing here
            text = str(exc) if isinstance(exc, SandboxError) else \
                f"the teacher's published code does not run here: {type(exc).__name__}: {exc}"
            why = text.splitlines()[0] if text else type(exc).__name__
            raise _Failed(text, why, [f"{self.sandbox_id}.{t.module}: v{t.version} from the "
                                      f"teacher FAILED here, nothing changed: {why}"
                                      for t in versions]) from None
        for t in versions:
            self._applied(t)
        out = []
        for t in versions:
            notes = [r.status] if r.status != "hot_reloaded" else []
            if handler is not None and handler.for_module(t.module) is not None:
                notes.append(f"migrated by {t.state_handler}")
            elif t.state_handler and handler is not None and t.module in handler.own_edits:
                notes.append(f"without the teacher's state handler {t.state_handler}: your "
                             "own edits came before it")
            said = f" ({', '.join(notes)})" if notes else ""
            out.append(f"{self.sandbox_id}.{t.module}: v{t.version} from the teacher "
                       f"applied{said}")
        return out

    def _handlers(self, versions: list[TeacherVersion]) -> _TeacherHandlers | None:
        """The teacher's state handlers of these versions, defined here (None: none)."""
        if not any(t.state_handler for t in versions):
            return None
        histories = sandbox_histories(self.sandbox_id)
        chosen: dict[str, Callable[[Any, Any, Any], Any]] = {}
        own_edits = set()
        defined: dict[tuple[str, str], Callable[..., Any]] = {}
        for t in versions:
            if not t.state_handler:
                continue
            if t.handler_source is None:
                raise SandboxError(f"the state handler {t.state_handler!r} of {t.module} "
                                   f"v{t.version} could not be sent: Python has no source "
                                   "defining it (a lambda, a partial, a callable object); "
                                   "the teacher can define it with def or a "
                                   "%%sandbox_state_handler cell")
            if t.module not in histories:
                continue                  # new here: no objects of it to migrate
            old = self._teacher_version_here(t.module)
            if old is None:
                own_edits.add(t.module)   # written for the teacher's code, not the student's
                continue
            key = (t.handler_source, t.state_handler)
            if key not in defined:
                defined[key] = _define(t.handler_source, t.state_handler,
                                       f"the teacher's state handler of {t.module} "
                                       f"v{t.version}")
            own = handler_for_module(defined[key], t.module)
            if own is not None:       # (a handler by module may leave this one alone)
                chosen[t.module] = _told(own, old, t.version)
        if not chosen and not own_edits:
            return None
        return _TeacherHandlers(chosen, own_edits, versions)

    @staticmethod
    def _checks(versions: list[TeacherVersion]) -> Any:
        """The checks of the teacher's changes that made these versions: one as it is,
        several as one that runs each."""
        checks: list[Any] = []
        for t in versions:
            kind, name, text = t.check or (None, None, None)
            if kind == "expr" and text not in checks:
                checks.append(text)
            elif kind == "def":
                if text is None or name is None:
                    raise SandboxError(f"the check {name!r} of {t.module} v{t.version} could "
                                       "not be sent: Python has no source defining it; the "
                                       "teacher can give the check as an expression or a def")
                checks.append(_define(text, name, f"the teacher's check {name}"))
        if len(checks) <= 1:
            return checks[0] if checks else None

        def teachers_checks(box: Any) -> bool:
            for c in checks:
                ok = eval(c, {}, _Names(box)) if isinstance(c, str) else c(box)
                if ok is False:
                    what = c if isinstance(c, str) else getattr(c, "__name__", "check")
                    raise AssertionError(f"the teacher's check {what} returned False")
            return True

        return teachers_checks

    def _waiting(self, module: str | None, version: int | None,
                 linked: bool = True) -> list[TeacherVersion]:
        """The waiting versions of ``module`` (all, if None), with (``linked``) the waiting
        versions that go with it: those the same teacher change made, and those it
        imports or that import it (the teacher's code of these belongs together)."""
        if version is not None and module is None:
            raise SandboxError("version= names one module's waiting version: give module= too")
        waiting = self.pending()
        out = [t for t in waiting if module is None or t.module == module]
        if version is not None and any(t.version != version for t in out):
            (t,) = out
            raise SandboxError(f"the teacher's version of {t.module} waiting is now "
                               f"v{t.version}, not v{version}: look at its diff first")
        if module is None or not out or not linked:
            return out
        (group,) = [g for g in self._groups(waiting) if out[0] in g]
        return group

    def _groups(self, versions: list[TeacherVersion]) -> list[list[TeacherVersion]]:
        """``versions`` in groups that belong together: those one teacher change made, and
        those of modules that import one another (the student's other code included in
        what imports what)."""
        by_module = {t.module: t for t in versions}
        sources = {m: h.current_record().source
                   for m, h in sandbox_histories(self.sandbox_id).items()
                   if h.current is not None}
        sources.update({t.module: t.source for t in versions})
        graph = dependency_graph(sources, deferred=True)
        linked: dict[str, set[str]] = {m: set() for m in by_module}
        for m, deps in graph.items():
            for d in deps:
                if m in by_module and d in by_module:
                    linked[m].add(d)
                    linked[d].add(m)
        for t in versions:
            for u in versions:
                if t.seq and t.seq == u.seq:
                    linked[t.module].add(u.module)
        groups, done = [], set()
        for t in versions:
            if t.module in done:
                continue
            take, todo = {t.module}, [t.module]
            while todo:
                for n in linked[todo.pop()] - take:
                    take.add(n)
                    todo.append(n)
            done |= take
            groups.append([u for u in versions if u.module in take])
        return groups

    def apply(self, module: str | None = None, version: int | None = None) -> list[str]:
        """Apply the waiting teacher versions (of ``module`` only, if given; ``version``:
        only if that is still the one waiting)."""
        with self.lock:
            return self._apply(self._waiting(module, version))

    def skip(self, module: str | None = None, version: int | None = None) -> None:
        """Leave the waiting teacher versions (of ``module`` only) unapplied."""
        with self.lock:
            for t in self._waiting(module, version, linked=False):
                del self._pending[t.module]
                emit("follow_skipped", self.sandbox_id, module=t.module, version=t.version)

    def resync(self) -> list[str]:
        """Take the teacher's current version of every module again (after edits of
        one's own, say)."""
        with self.lock:
            current = self.teacher()
            self.seen.update({m: (t.version, t.source) for m, t in current.items()})
            return self._apply([t for _, t in sorted(current.items())
                                if self._source_here(t.module) != t.source])

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

    def _tick(self) -> None:
        """Read the store if the file changed since it was last read."""
        now = self._stamp()
        if now == self.stamp:
            return          # no write (an event of a reader opening the file)
        self.stamp = now
        started = time.perf_counter()
        try:
            self.check()
        except Exception:
            log.exception("following %s failed", self.path)
        self.latency.append(time.perf_counter() - started)

    def _watch(self) -> None:
        """File events of the store's folder wake the follower, which reads the store when
        the file's time or size changed (readers opening it make events too); once a
        second without events, one stat of the file catches a write the events missed
        (one made while the watch was starting, say).  When the folder cannot be watched
        (no inotify instance left, say), a stat once a second is all."""
        try:
            from watchfiles import watch

            names = {self.path.name, self.path.name + "-wal"}
            for _changes in watch(self.path.parent, stop_event=self.stop_event,
                                  debounce=50, step=20, recursive=False,
                                  watch_filter=lambda _c, p: Path(p).name in names,
                                  raise_interrupt=False, yield_on_timeout=True,
                                  rust_timeout=1000):
                self._tick()
        except Exception as exc:
            if self.stop_event.is_set():
                return
            self.watching = f"a stat once a second: the folder cannot be watched ({exc})"
            log.warning("following %s: %s", self.path, self.watching)
            while not self.stop_event.wait(1.0):
                self._tick()

    def stop(self) -> None:
        """Stop following; waits for a teacher version being applied now to finish."""
        self.stop_event.set()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout=5)
        if self.lock.acquire(timeout=60):
            self.lock.release()


class _Failed(Exception):
    """Teacher versions that failed here together: what to say, if that is final."""

    def __init__(self, text: str, why: str, lines: list[str]) -> None:
        super().__init__(why)
        self.text, self.why, self.lines = text, why, lines


def _told(fn: Callable[..., Any], old: int, new: int) -> Callable[[Any, Any, Any], Any]:
    """``fn`` told the teacher's version numbers instead of the student's."""
    def teachers_handler(state: Any, _old_version: Any, _new_version: Any) -> Any:
        return fn(state, old, new)
    teachers_handler.__name__ = getattr(fn, "__name__", "teachers_handler")
    return teachers_handler


class _TeacherHandlers:
    """The state handler of a follower's reload: each module's objects get the handler of
    the teacher's change that made that module's version (``for_module``, as the engine
    asks), told the teacher's version numbers."""

    def __init__(self, chosen: dict[str, Callable[[Any, Any, Any], Any]],
                 own_edits: set[str], versions: list[TeacherVersion]) -> None:
        self.chosen = chosen
        self.own_edits = own_edits
        names = sorted({t.state_handler for t in versions if t.module in chosen
                        and t.state_handler})
        self.__name__ = "+".join(names) or "teacher"
        # a follower that publishes in turn (an assistant's section) sends the teacher's
        first = next((t for t in versions if t.module in chosen), None)
        if len(names) == 1 and first is not None:
            self.__sandbox_source__ = first.handler_source

    def for_module(self, module: str) -> Callable[[Any, Any, Any], Any] | None:
        return self.chosen.get(module)

    def __call__(self, state: Any, old_version: Any, new_version: Any) -> Any:
        if len(self.chosen) == 1:      # asked without a module: the one there is
            (fn,) = self.chosen.values()
            return fn(state, old_version, new_version)
        return state


class _Names(dict):  # type: ignore[type-arg]
    """A check expression's names: the sandbox's."""

    def __init__(self, box: Any) -> None:
        super().__init__()
        self.box = box

    def __missing__(self, name: str) -> Any:
        try:
            return getattr(self.box, name)
        except AttributeError:
            raise KeyError(name) from None


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
    f = Follower(sandbox_id, store, auto, on_version, teacher)   # (stamps the file)
    f.teacher()                     # published there, and readable: else nothing changes
    unfollow(sandbox_id)
    if find_host(sandbox_id) is None:
        from .lifecycle import create_sandbox
        create_sandbox(sandbox_id)
    f._say(f.resync())              # the current versions, whatever auto says
    f.start()
    _followers[sandbox_id] = f
    return f


def unfollow(sandbox_id: str) -> None:
    f = _followers.pop(sandbox_id, None)
    if f is not None:
        f.stop()


def follower(sandbox_id: str) -> Follower | None:
    return _followers.get(sandbox_id)
