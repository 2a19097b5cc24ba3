"""Durable version history: an embedded SQLite store.

Layout (format 2)::

    meta(key, value)                  -- 'format' = 2
    modules(id, scope, sandbox, module, current, next_version, timeline, cursor, retained,
            rev, writer)              -- one row per (scope, sandbox, module)
    tail(module_id, version, entry)   -- the newest versions, one small row each
    segments(module_id, first, data)  -- zlib(JSON) of up to SEGMENT versions

Each version is kept as a diff-match-patch delta (``diff_toDelta``) against the
previous one; every segment starts with a full snapshot, so a long series of
small edits costs little more than one copy of the module.  A reload appends
one tail row holding its whole source (no diff on the reload path); every
``TAIL_MAX`` versions, when the tail's sources reach ``TAIL_BYTES``, and when
the store closes, the tail is folded into delta segments.
Versions dropped by retention disappear from ``retained`` at once and from
the file when their whole segment is no longer needed.  Checksums are not
stored; they are recomputed from the sources.

Every change is written in one transaction before the reload reports success.
The database runs in WAL mode, so readers never block the writer and several
kernels can share one folder; a kernel killed mid-write leaves the last
committed state.  Histories belong to a scope (see ``engine.scope``): a notebook, a
script, the folder, or a name shared on purpose.  Format 1 files (no scopes)
are upgraded in place, their histories going to the folder scope.

Any number of kernels may write one history: each write happens in an
immediate transaction that first checks the row's revision.  When another
kernel wrote in between, its versions are merged in and this kernel's new
versions are numbered after them, so none is lost, overwritten or numbered
twice; the first time a live kernel other than this one is seen writing the
same history, a :class:`StoreWarning` names it.  A store that cannot be
written (read-only file or folder) is opened read-only: its history is shown,
and writes warn once.  Closing the store (also at interpreter exit)
checkpoints and removes the write-ahead log.  A file that cannot be opened, is locked too long, is
corrupted, or was written by a newer format makes the store fall back to
memory with a warning: history is then not persisted, but reloads go on.
"""

from __future__ import annotations

import atexit
import itertools
import json
import logging
import os
import socket
import sqlite3
import threading
import warnings
import weakref
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from diff_match_patch import diff_match_patch

from .artifact import source_checksum
from .chunks import _fragments
from .scope import FOLDER
from .versions import ModuleHistory, VersionRecord, VersionStore

log = logging.getLogger(__name__)

FORMAT = 2
SEGMENT = 256     # versions per compressed segment; each starts with a full snapshot
TAIL_MAX = 32     # new versions kept as rows of their own until they are folded into segments
TAIL_BYTES = 256 << 10   # ... or until their sources add up to this many characters
DEFAULT_DIR = ".sandbox_magic"
DEFAULT_FILE = "history.sqlite3"
ENV_STORE = "SANDBOX_MAGIC_STORE"
MEMORY = ":memory:"
# The write-ahead log is checkpointed every WAL_PAGES pages (of 1 KiB) and cut
# back to WAL_LIMIT bytes, so even a kernel that is killed leaves a small log
# behind; checkpoints more often than this cost reloads time (each one syncs).
WAL_PAGES = 256
WAL_LIMIT = 64 << 10
_HOST = socket.gethostname()


def writer_identity() -> dict[str, Any]:
    """Who writes: this process, its host and the notebook or script it serves."""
    return {"pid": os.getpid(), "host": _HOST,
            "name": os.environ.get("JPY_SESSION_NAME") or
            os.path.basename(getattr(__import__("sys").modules.get("__main__"), "__file__", "")
                             or "") or "python"}


def writer_alive(w: dict[str, Any]) -> bool:
    """Whether the process that wrote is still running (on this host; elsewhere: assumed)."""
    if w.get("host") != _HOST or os.name != "posix":
        return True       # (on Windows a signal 0 would be a Ctrl+C sent to the process)
    try:
        os.kill(int(w["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


def _close_at_exit(ref: weakref.ref[Any]) -> None:
    store = ref()
    if store is None:
        return
    try:
        store.close()
    except Exception as exc:   # a damaged file must not turn the exit into a traceback
        log.warning("closing the history store %s at exit failed: %s",
                    getattr(store, "path", "?"), exc)


class StoreWarning(UserWarning):
    """The durable store could not be used; history is kept in memory only."""


class StoreFormatError(Exception):
    pass


# A delta reproduces the new text exactly whether or not the diff behind it is
# the smallest one, so the diff gets a time budget: a long changed line can no
# longer make storing a version take seconds (it was quadratic without one).
DIFF_BUDGET = 0.1


def _dmp() -> diff_match_patch:
    d = diff_match_patch()
    d.Diff_Timeout = DIFF_BUDGET
    return d


_DMP = _dmp()   # its methods keep no state between calls: one instance serves all threads

# A batch stores the same edit in many sandboxes: the newest deltas are kept,
# keyed by the checksums of both sources so that no source is pinned here; the
# deltas of a version no sandbox retains any more are forgotten (forget_deltas).
DELTA_CACHE = 2 * TAIL_MAX   # a fold of one sandbox's tail serves the next sandbox's
_deltas: OrderedDict[tuple[str, str], str] = OrderedDict()
_deltas_lock = threading.Lock()

#: Changed regions up to this many characters (old and new together) are diffed
#: character by character; longer ones line by line, which stays fast for a
#: long rewritten line (a delta is exact either way, only its size differs).
CHAR_DIFF_MAX = 4000


def encode_delta(old: str, new: str, key: tuple[str, str] | None = None, *,
                 remember: bool = True) -> str:
    """A diff-match-patch delta from ``old`` to ``new`` (the newest few are cached).

    ``key`` is the checksums of both sources when the caller knows them.  The
    common head and tail are cut at line boundaries first; what is left is
    diffed by characters when it is short and by lines otherwise.
    """
    if key is None:
        key = (source_checksum(old), source_checksum(new))
    with _deltas_lock:
        delta = _deltas.get(key)
        if delta is not None:
            _deltas.move_to_end(key)
            return delta
    made: str = _DMP.diff_toDelta(_diff(old, new))
    if not remember:
        return made
    with _deltas_lock:
        _deltas[key] = made
        while len(_deltas) > DELTA_CACHE:
            _deltas.popitem(last=False)
    return made


#: Sources of at least this many top-level statements are diffed statement by
#: statement first (see :func:`_diff`).
STATEMENTS_MIN = 16


def _diff(old: str, new: str) -> list[tuple[int, str]]:
    """The diff of two sources: when both cut into as many top-level statements
    (``engine.chunks``, which has cut them already to compile them), only the
    statements that differ are diffed; else the whole changed region."""
    if len(old) > CHAR_DIFF_MAX:
        a, b = _fragments(old), _fragments(new)
        if len(a) == len(b) >= STATEMENTS_MIN:
            out: list[tuple[int, str]] = []
            for x, y in zip(a, b):
                out.extend([(0, x)] if x == y else _diff_region(x, y))
            return out
    return _diff_region(old, new)


def _diff_region(old: str, new: str) -> list[tuple[int, str]]:
    d = _DMP
    head = d.diff_commonPrefix(old, new)
    head = old.rfind("\n", 0, head) + 1                 # whole lines
    tail = d.diff_commonSuffix(old[head:], new[head:])
    start = len(old) - tail
    if tail and start > 0 and old[start - 1] != "\n":   # whole lines
        nl = old.find("\n", start)
        tail = 0 if nl < 0 else len(old) - nl - 1
    a, b = old[head:len(old) - tail], new[head:len(new) - tail]
    if len(a) + len(b) <= CHAR_DIFF_MAX:
        middle = d.diff_main(a, b, False)
    else:
        chars_a, chars_b, lines = d.diff_linesToChars(a, b)
        middle = d.diff_main(chars_a, chars_b, False)
        d.diff_charsToLines(middle, lines)
    out = [(0, old[:head])] if head else []
    out += middle
    if tail:
        out.append((0, old[len(old) - tail:]))
    return out


def quick_delta(old: str, new: str) -> str:
    """An exact delta from ``old`` to ``new`` made without diffing: cut into top-level
    statements (``engine.chunks``, which cut both to compile them), each statement
    that differs is replaced between its common head and tail; when the statements do
    not pair up, the whole changed region is.  Larger than :func:`encode_delta`'s for
    some edits, and costs a few string comparisons: what a reload stores."""
    a, b = _fragments(old), _fragments(new)
    pairs: Iterable[tuple[str, str]] = zip(a, b)
    if len(a) != len(b):
        # statements added or removed: the same ones at both ends, one region between
        n = min(len(a), len(b))
        i = next((k for k in range(n) if a[k] != b[k]), n)
        j = next((k for k in range(n - i) if a[-1 - k] != b[-1 - k]), n - i)
        pairs = [*zip(a[:i], b[:i]), ("".join(a[i:len(a) - j]), "".join(b[i:len(b) - j])),
                 *zip(a[len(a) - j:], b[len(b) - j:])]
    d = _DMP
    diffs: list[tuple[int, str]] = []
    pos = same = 0          # where the pair starts in old; where the unchanged run does
    for x, y in pairs:
        if x != y:
            head = d.diff_commonPrefix(x, y)
            tail = d.diff_commonSuffix(x[head:], y[head:])
            if pos + head > same:
                diffs.append((0, old[same:pos + head]))
            for op, text in ((-1, x[head:len(x) - tail]), (1, y[head:len(y) - tail])):
                if text:
                    diffs.append((op, text))
            same = pos + len(x) - tail
        pos += len(x)
    if len(old) > same:
        diffs.append((0, old[same:]))
    delta: str = d.diff_toDelta(diffs)
    return delta


def forget_deltas(checksums: Iterable[str]) -> None:
    """Drop cached deltas from or to these sources (versions nobody retains)."""
    gone = set(checksums)
    with _deltas_lock:
        for key in [k for k in _deltas if k[0] in gone or k[1] in gone]:
            del _deltas[key]


def apply_delta(old: str, delta: str) -> str:
    text: str = _DMP.diff_text2(_DMP.diff_fromDelta(old, delta))
    return text


class _Tail:
    """What this process knows about a module's stored chain (to append cheaply)."""

    __slots__ = ("base", "last", "last_checksum", "last_source", "mid", "rev", "tail",
                 "tail_bytes")

    def __init__(self, mid: int, rev: int) -> None:
        self.mid, self.rev = mid, rev
        self.last = 0
        self.last_source: str | None = None
        self.last_checksum = ""
        self.tail_bytes = 0
        self.base: str | None = None    # the source the segments end with, when known
        self.tail = 0


def _replay(entries: list[Any]) -> str:
    source = ""
    for entry in entries:
        source = entry[4] if entry[3] == "full" else apply_delta(source, entry[4])
    return source


class SQLiteVersionStore(VersionStore):
    """Version histories in one SQLite file (see the module docstring)."""

    durable = True

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 5.0,
                 read_only: bool = False, snapshot: bool = False) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self.lock = threading.RLock()
        self.failure: str | None = None    # why history went to memory only, if it did
        self.conn: sqlite3.Connection | None = None
        self.readonly = False
        self._cache: dict[tuple[str, str, str], _Tail] = {}
        self._in_batch = False
        self._me = json.dumps(writer_identity(), sort_keys=True)
        self._warned: set[tuple[str, str, int]] = set()
        self._warned_readonly = False
        self._file_id: tuple[int, int] | None = None   # (device, inode) of the open file
        # histories saved while the file could not be written: written when it can be
        self.pending: dict[tuple[str, str, str], ModuleHistory] = {}
        self._lost = False
        if read_only:
            # never written through this object, whatever the file's permissions
            self._warned_readonly = True
            if not self.path.exists() or not self._connect_readonly(snapshot):
                raise StoreFormatError(f"cannot read the history store {self.path}: it does "
                                       "not exist or is not a sandbox_magic store")
            return
        try:
            self._open()
        except (sqlite3.Error, OSError, StoreFormatError) as exc:
            if not self._open_readonly(exc):
                self._fall_back(f"cannot use the history store {self.path}: {exc}")
        atexit.register(_close_at_exit, weakref.ref(self))

    # ------------------------------------------------------------------ open
    def _open(self) -> None:
        if self.path.exists() and not os.access(self.path, os.W_OK):
            raise sqlite3.OperationalError("attempt to write a readonly database")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=self.timeout, check_same_thread=False,
                               isolation_level=None)
        try:
            # Small pages and auto-vacuum keep the file close to what it holds; both
            # only take effect while the file is new.
            conn.execute("PRAGMA page_size=1024")
            conn.execute("PRAGMA auto_vacuum=FULL")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
            conn.execute(f"PRAGMA wal_autocheckpoint={WAL_PAGES}")
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            row = conn.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
            if row is not None and int(row[0]) > FORMAT:
                raise StoreFormatError(
                    f"it was written by a newer sandbox_magic (store format {row[0]}, this "
                    f"version reads format {FORMAT}); upgrade sandbox_magic or point "
                    f"{ENV_STORE} at another file")
            self._create_tables(conn, old_format=int(row[0]) if row is not None else None)
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('format', ?)", (str(FORMAT),))
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        self.conn = conn
        st = os.stat(self.path)
        self._file_id = (st.st_dev, st.st_ino)

    def _file_gone(self) -> str | None:
        """Why the open file is no longer the store's file (its folder was removed, the
        file deleted or replaced), or None.  An open SQLite file that was unlinked still
        accepts writes, which would then vanish at the next start."""
        try:
            st = os.stat(self.path)
        except OSError as exc:
            return f"{self.path} is gone ({exc.strerror})"
        if (st.st_dev, st.st_ino) != self._file_id:
            return f"{self.path} was replaced by another file"
        return None

    @staticmethod
    def _create_tables(conn: sqlite3.Connection, old_format: int | None) -> None:
        if old_format == 1:
            # Format 1 had no scopes: its histories move to the folder scope, unchanged.
            conn.execute("ALTER TABLE modules RENAME TO modules_v1")
        conn.execute("""CREATE TABLE IF NOT EXISTS modules (
            id INTEGER PRIMARY KEY, scope TEXT NOT NULL, sandbox TEXT NOT NULL,
            module TEXT NOT NULL, current INTEGER, next_version INTEGER NOT NULL,
            timeline TEXT NOT NULL, cursor INTEGER NOT NULL, retained TEXT NOT NULL,
            rev INTEGER NOT NULL DEFAULT 0, writer TEXT,
            UNIQUE (scope, sandbox, module))""")
        if old_format == 1:
            conn.execute("INSERT INTO modules (id, scope, sandbox, module, current, next_version, "
                         "timeline, cursor, retained, rev) SELECT id, ?, sandbox, module, "
                         "current, next_version, timeline, cursor, retained, rev "
                         "FROM modules_v1", (FOLDER,))
            conn.execute("DROP TABLE modules_v1")
        conn.execute("""CREATE TABLE IF NOT EXISTS tail (
            module_id INTEGER NOT NULL, version INTEGER NOT NULL, entry TEXT NOT NULL,
            PRIMARY KEY (module_id, version)) WITHOUT ROWID""")
        conn.execute("""CREATE TABLE IF NOT EXISTS segments (
            module_id INTEGER NOT NULL, first INTEGER NOT NULL, data BLOB NOT NULL,
            PRIMARY KEY (module_id, first)) WITHOUT ROWID""")

    def _open_readonly(self, why: BaseException) -> bool:
        """A store we may not write: open it to read, so its history still shows."""
        if not self.path.exists() or ("readonly" not in str(why).replace("-", "").lower() \
                and os.access(self.path.parent, os.W_OK)):
            return False
        return self._connect_readonly()

    def _connect_readonly(self, snapshot: bool = False) -> bool:
        """Open to read.  ``snapshot``: read the file as it is, as an unchanging file,
        first (SQLite then makes no side files for a write-ahead log: for a reader of a
        folder that others write, when no writer is there)."""
        queries = ("mode=ro", "mode=ro&immutable=1")
        for query in reversed(queries) if snapshot else queries:
            try:
                conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?{query}", uri=True,
                                       timeout=self.timeout, check_same_thread=False,
                                       isolation_level=None)
                row = conn.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
                if row is None or int(row[0]) != FORMAT:
                    conn.close()
                    return False      # an older format cannot be upgraded read-only
                conn.execute("SELECT count(*) FROM modules").fetchone()
            except sqlite3.Error:
                continue
            self.conn, self.readonly = conn, True
            return True
        return False

    def _fall_back(self, why: str) -> None:
        warnings.warn(f"{why}. Version history is kept in memory only for now.",
                      StoreWarning, stacklevel=3)
        log.warning("%s; history is kept in memory only", why)
        self._drop_connection()
        self.failure = why

    def _drop_connection(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except sqlite3.Error:
                log.debug("closing the history store failed", exc_info=True)
        self.conn = None

    def _cannot_write(self) -> bool:
        """True (after one warning) when this store is read-only."""
        if self.readonly and not self._warned_readonly:
            self._warned_readonly = True
            warnings.warn(f"the history store {self.path} is read-only: its history is shown, "
                          "but new versions are kept in memory only", StoreWarning, stacklevel=4)
        return self.readonly

    @contextmanager
    def batch(self) -> Iterator[None]:
        """One transaction for all saves made inside; committed before leaving.

        A batch reload reports its results only after this commit, so every
        version it reports is durable, at the cost of one write instead of one
        per sandbox.
        """
        with self.lock:
            started = self.conn is not None and not self._in_batch and not self.readonly
            if started:
                assert self.conn is not None
                try:
                    self.conn.execute("BEGIN IMMEDIATE")
                    self._in_batch = True
                except sqlite3.Error as exc:
                    self._fall_back(f"cannot write history to {self.path}: {exc}")
                    started = False
        try:
            yield
        finally:
            if started:
                with self.lock:
                    self._in_batch = False
                    if self.conn is not None:
                        try:
                            self.conn.execute("COMMIT")
                        except sqlite3.Error as exc:
                            self._cache.clear()
                            self._fall_back(f"cannot write history to {self.path}: {exc}")

    def close(self) -> None:
        """Fold this kernel's tails, checkpoint the write-ahead log and close (it is removed)."""
        with self.lock:
            if self.conn is not None:
                try:
                    if not self.readonly:
                        self._fold_all()
                        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                except sqlite3.Error:
                    pass
                self.conn.close()
                self.conn = None

    # ------------------------------------------------------------------ read
    def load(self, sandbox_id: str, scope: str = FOLDER) -> dict[str, ModuleHistory]:
        with self.lock:
            if self.conn is None:
                return {}
            try:
                out = self._load(scope, sandbox_id)
                if not out and scope != FOLDER and self._claim_upgraded(scope, sandbox_id):
                    out = self._load(scope, sandbox_id)
                return out
            except (sqlite3.Error, ValueError, KeyError, zlib.error) as exc:
                self._fall_back(f"cannot read history of sandbox {sandbox_id!r} from "
                                f"{self.path}: {exc}")
                return {}

    def _claim_upgraded(self, scope: str, sandbox_id: str) -> bool:
        """A history upgraded from the first release (no scopes, never written since)
        goes to the first notebook or script that asks for its sandbox."""
        if self.readonly:
            return False
        assert self.conn is not None
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            moved = self.conn.execute(
                "UPDATE modules SET scope = ? WHERE scope = ? AND sandbox = ? AND writer IS NULL "
                "AND NOT EXISTS (SELECT 1 FROM modules m WHERE m.scope = ? AND m.sandbox = ?)",
                (scope, FOLDER, sandbox_id, scope, sandbox_id)).rowcount
            self.conn.execute("COMMIT")
        except sqlite3.Error:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            return False
        return moved > 0

    def list_sandboxes(self, scope: str = FOLDER) -> dict[str, dict[str, int]]:
        """``{sandbox: {module: current version}}`` stored under ``scope``."""
        with self.lock:
            if self.conn is None:
                return {}
            try:
                rows = self.conn.execute("SELECT sandbox, module, current FROM modules "
                                         "WHERE scope = ? AND current IS NOT NULL "
                                         "ORDER BY sandbox, module", (scope,)).fetchall()
            except sqlite3.Error:
                return {}
        out: dict[str, dict[str, int]] = {}
        for sandbox, module, current in rows:
            out.setdefault(sandbox, {})[module] = current
        return out

    def writers(self, sandbox_id: str, scope: str = FOLDER) -> list[dict[str, Any]]:
        """Who last wrote each module of this history (``alive``, ``me`` added)."""
        with self.lock:
            if self.conn is None:
                return []
            try:
                rows = self.conn.execute("SELECT DISTINCT writer FROM modules WHERE scope = ? "
                                         "AND sandbox = ? AND writer IS NOT NULL",
                                         (scope, sandbox_id)).fetchall()
            except sqlite3.Error:
                return []
        out = []
        for (w,) in rows:
            info = json.loads(w)
            info["me"] = w == self._me
            info["alive"] = info["me"] or writer_alive(info)
            out.append(info)
        return out

    def _read_module(self, mid: int, module: str, keep: set[int] | None
                     ) -> tuple[dict[int, VersionRecord], _Tail]:
        """Every stored version of one module (or those in ``keep``), and where the chain ends."""
        assert self.conn is not None
        entries: list[Any] = []
        for (data,) in self.conn.execute(
                "SELECT data FROM segments WHERE module_id = ? ORDER BY first", (mid,)):
            entries.extend(json.loads(zlib.decompress(data)))
        tail = self.conn.execute("SELECT entry FROM tail WHERE module_id = ? "
                                 "ORDER BY version", (mid,)).fetchall()
        entries.extend(json.loads(t) for (t,) in tail)
        source = ""
        cache = _Tail(mid, -1)
        records: dict[int, VersionRecord] = {}
        for version, ts, handler, kind, payload in entries:
            source = payload if kind == "full" else apply_delta(source, payload)
            if keep is None or version in keep:
                records[version] = VersionRecord(
                    version, None, datetime.fromtimestamp(ts / 1000, UTC),
                    handler, module=module, source=source)
            cache.last, cache.last_source, cache.last_checksum = version, source, ""
        cache.tail = len(tail)
        cache.tail_bytes = sum(len(t) for (t,) in tail)
        return records, cache

    def _load(self, scope: str, sandbox_id: str) -> dict[str, ModuleHistory]:
        assert self.conn is not None
        out: dict[str, ModuleHistory] = {}
        rows = self.conn.execute(
            "SELECT id, module, current, next_version, timeline, cursor, retained, rev "
            "FROM modules WHERE scope = ? AND sandbox = ?", (scope, sandbox_id)).fetchall()
        for mid, module, current, next_version, timeline, cursor, retained, rev in rows:
            h = ModuleHistory(module)
            h.records, cache = self._read_module(mid, module, set(json.loads(retained)))
            cache.rev = rev
            h.current = current if current in h.records else None
            h.next_version = next_version
            h.timeline = [v for v in json.loads(timeline) if v in h.records]
            h.cursor = min(cursor, len(h.timeline) - 1)
            self._cache[(scope, sandbox_id, module)] = cache
            out[module] = h
        return out

    # ----------------------------------------------------------------- write
    def save(self, sandbox_id: str, history: ModuleHistory, scope: str = FOLDER) -> None:
        """Write ``history``; may renumber its newest versions (see the module docstring).

        When the file cannot be written (its folder removed or replaced by a file, the
        disk full, permissions changed), one :class:`StoreWarning` names it, the
        history waits in :attr:`pending` (``saved_to_disk`` is False), and every later
        save tries the file again: once it can be written, everything pending is.
        """
        key = (scope, sandbox_id, history.module)
        with self.lock:
            if self._lost and not self._recover():
                self.pending[key] = history
                return
            if self.conn is None or self._cannot_write():
                return
            gone = None if self._in_batch else self._file_gone()
            if gone is not None:
                self._lose(gone)
                self.pending[key] = history
                return
            try:
                self._save(scope, sandbox_id, history)
            except sqlite3.Error as exc:
                try:
                    self.conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                self._in_batch = False
                self._cache.pop(key, None)
                self._lose(f"cannot write history to {self.path}: {exc}")
                self.pending[key] = history

    @property
    def saved_to_disk(self) -> bool:
        """False while some version is kept in memory only (see :meth:`save`)."""
        return not self._lost and self.failure is None

    def _lose(self, why: str) -> None:
        warnings.warn(f"{why}: new versions are kept in memory and not saved to disk; "
                      "they are written when the file can be written again (recreate "
                      "its folder, or call set_default_store)", StoreWarning, stacklevel=4)
        log.warning("%s; versions kept in memory until it can be written", why)
        self._drop_connection()
        self._cache.clear()
        self._lost = True
        self.failure = why

    def _recover(self) -> bool:
        """Open the file again if it can be, and write what waits; True on success."""
        if not self.path.parent.is_dir():
            return False
        try:
            self._open()
            for (scope, sid, _), h in list(self.pending.items()):
                self._save(scope, sid, h)
        except (sqlite3.Error, OSError, StoreFormatError):
            self._drop_connection()
            return False
        self.pending.clear()
        self._lost = False
        self.failure = None
        log.warning("the history store %s can be written again; the versions kept in "
                    "memory were written", self.path)
        return True

    def flush_pending(self) -> bool:
        """Try now to write what waits (a recreated folder, say); True if nothing waits."""
        with self.lock:
            return not self._lost or self._recover()

    def _save(self, scope: str, sandbox_id: str, h: ModuleHistory) -> None:
        conn = self.conn
        assert conn is not None
        key = (scope, sandbox_id, h.module)
        if not self._in_batch:
            conn.execute("BEGIN IMMEDIATE")
        try:
            cache = self._cache.get(key)
            if cache is not None and self._save_fast(conn, cache, h):
                if not self._in_batch:
                    conn.execute("COMMIT")
                cache.rev += 1
                return
            row = conn.execute("SELECT id, rev, next_version, writer, retained FROM modules "
                               "WHERE scope = ? AND sandbox = ? AND module = ?", key).fetchone()
            if row is None:
                mid = conn.execute(
                    "INSERT INTO modules (scope, sandbox, module, current, next_version, "
                    "timeline, cursor, retained) VALUES (?, ?, ?, NULL, 1, '[]', -1, '[]')",
                    key).lastrowid
                assert mid is not None
                cache = _Tail(mid, 0)
                rev = 0
                for v in sorted(h.records):
                    self._append(cache, h.records[v])
            else:
                mid, rev, stored_next, writer, retained = row
                if writer is not None and writer != self._me:
                    self._tell_other_writer(key, json.loads(writer))
                if cache is None or cache.rev != rev or cache.mid != mid:
                    cache = self._merge(mid, h, cache, stored_next, set(json.loads(retained)))
                else:
                    for v in sorted(x for x in h.records if x > cache.last):
                        self._append(cache, h.records[v])
                    if self._tail_full(cache):
                        self._fold(cache, min(h.records, default=0))
            conn.execute("UPDATE modules SET current = ?, next_version = ?, timeline = ?, "
                         "cursor = ?, retained = ?, rev = rev + 1, writer = ? WHERE id = ?",
                         (h.current, h.next_version, json.dumps(h.timeline), h.cursor,
                          json.dumps(sorted(h.records)), self._me, mid))
            if not self._in_batch:
                conn.execute("COMMIT")
        except BaseException:
            if not self._in_batch:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            raise
        cache.rev = rev + 1
        self._cache[key] = cache

    def _save_fast(self, conn: sqlite3.Connection, cache: _Tail, h: ModuleHistory) -> bool:
        """The common case: nobody wrote since we did; one conditional UPDATE tells.

        Inside the immediate transaction no other kernel can write, so when the
        row still has the revision we wrote last, our new versions are simply
        appended.  Otherwise nothing was changed and the caller merges.
        """
        cur = conn.execute(
            "UPDATE modules SET current = ?, next_version = ?, timeline = ?, cursor = ?, "
            "retained = ?, rev = rev + 1, writer = ? WHERE id = ? AND rev = ?",
            (h.current, h.next_version, json.dumps(h.timeline), h.cursor,
             json.dumps(sorted(h.records)), self._me, cache.mid, cache.rev))
        if cur.rowcount != 1:
            return False
        for v in sorted(x for x in h.records if x > cache.last):
            self._append(cache, h.records[v])
        if self._tail_full(cache):
            self._fold(cache, min(h.records, default=0))
        return True

    def _merge(self, mid: int, h: ModuleHistory, cache: _Tail | None,
               stored_next: int, retained: set[int]) -> _Tail:
        """Another kernel wrote this history since we last did: keep both kernels' versions.

        Versions this kernel made since its last write are renumbered after the
        stored ones (``h`` is updated in place, so the caller reports the final
        numbers); the stored versions join ``h``'s records; the whole chain is
        written again.
        """
        theirs, _ = self._read_module(mid, h.module, retained)
        known = cache.last if cache is not None else 0
        mine = sorted(v for v in h.records if (v > known and v not in theirs)
                      or (v > known and theirs[v].checksum != h.records[v].checksum))
        renumber = {v: stored_next + i for i, v in enumerate(mine)}
        if renumber:
            records = {}
            for v, rec in h.records.items():
                if v in renumber:
                    rec = VersionRecord(renumber[v], rec._artifact, rec.loaded_at,
                                        rec.state_handler, module=rec.module, source=rec.source)
                records[rec.version] = rec
            h.records = records
            h.timeline = [renumber.get(v, v) for v in h.timeline]
            if h.current is not None:
                h.current = renumber.get(h.current, h.current)
        for v, rec in theirs.items():
            h.records.setdefault(v, rec)
        h.next_version = max(h.next_version, stored_next + len(mine),
                             max(h.records, default=0) + 1)
        return self._rewrite(mid, h)

    def _tell_other_writer(self, key: tuple[str, str, str], other: dict[str, Any]) -> None:
        marker = (key[0], key[1], int(other.get("pid", 0)))
        if marker in self._warned or not writer_alive(other):
            return
        self._warned.add(marker)
        warnings.warn(
            f"another running kernel (pid {other.get('pid')} on {other.get('host')}, "
            f"{other.get('name')}) also writes the history of sandbox {key[1]!r} in "
            f"{self.path}; the versions of both are kept, numbered in the order they are "
            "written", StoreWarning, stacklevel=5)

    @staticmethod
    def _entry(rec: VersionRecord, kind: str, payload: str) -> list[Any]:
        return [rec.version, round(rec.loaded_at.timestamp() * 1000), rec.state_handler,
                kind, payload]

    def _append(self, cache: _Tail, rec: VersionRecord) -> None:
        """One new version as one row: a quick delta from the version before it (see
        :func:`quick_delta`), or its whole source when the one before is not known here.

        The fold moves these rows into compressed segments (every TAIL_MAX versions,
        when the tail holds TAIL_BYTES, and when the store closes).
        """
        assert self.conn is not None
        prev = cache.last_source
        if prev is not None and cache.last < rec.version:
            payload = quick_delta(prev, rec.source)
            entry = self._entry(rec, "delta", payload)
        else:
            payload = rec.source
            entry = self._entry(rec, "full", payload)
        self.conn.execute("INSERT OR REPLACE INTO tail VALUES (?, ?, ?)",
                          (cache.mid, rec.version, json.dumps(entry, separators=(",", ":"))))
        cache.last, cache.last_source, cache.tail = rec.version, rec.source, cache.tail + 1
        cache.last_checksum = rec.checksum
        cache.tail_bytes += len(payload)

    def _tail_full(self, cache: _Tail) -> bool:
        return cache.tail >= TAIL_MAX or cache.tail_bytes >= TAIL_BYTES

    def _fold(self, cache: _Tail, oldest_retained: int) -> None:
        """Move the tail rows into compressed segments; drop segments nobody needs."""
        assert self.conn is not None
        conn = self.conn
        last = conn.execute("SELECT first, data FROM segments WHERE module_id = ? "
                            "ORDER BY first DESC LIMIT 1", (cache.mid,)).fetchone()
        entries = json.loads(zlib.decompress(last[1])) if last else []
        first = last[0] if last else None
        source = cache.base if cache.base is not None and last else _replay(entries)
        tail = [json.loads(t) for (t,) in conn.execute(
            "SELECT entry FROM tail WHERE module_id = ? ORDER BY version", (cache.mid,))]
        for entry in tail:
            prev = source
            source = entry[4] if entry[3] == "full" else apply_delta(source, entry[4])
            if first is None or len(entries) >= SEGMENT:
                if entries and first is not None:
                    self._put(cache.mid, first, entries)
                entries, first = [], entry[0]
                entry = [*entry[:3], "full", source]   # every segment starts whole
            elif entry[3] == "full":     # a version nobody retains is not cached
                entry = [*entry[:3], "delta", encode_delta(
                    prev, source, remember=entry[0] > oldest_retained)]
            entries.append(entry)
        if first is not None:
            self._put(cache.mid, first, entries)
        conn.execute("DELETE FROM tail WHERE module_id = ?", (cache.mid,))
        cache.tail = cache.tail_bytes = 0
        cache.base = source
        firsts = [f for (f,) in conn.execute(
            "SELECT first FROM segments WHERE module_id = ? ORDER BY first", (cache.mid,))]
        for f, nxt in itertools.pairwise(firsts):
            if nxt <= oldest_retained:      # every version in segment f was dropped
                conn.execute("DELETE FROM segments WHERE module_id = ? AND first = ?",
                             (cache.mid, f))

    def _fold_all(self) -> None:
        """Fold the tails this kernel wrote, unless another kernel wrote after it."""
        assert self.conn is not None
        if self._in_batch:
            return
        for cache in self._cache.values():
            if cache.tail == 0:
                continue
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                row = self.conn.execute("SELECT rev, retained FROM modules WHERE id = ?",
                                        (cache.mid,)).fetchone()
                if row is not None and row[0] == cache.rev:
                    self._fold(cache, min(json.loads(row[1]), default=0))
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise

    def _rewrite(self, mid: int, h: ModuleHistory) -> _Tail:
        assert self.conn is not None
        self.conn.execute("DELETE FROM segments WHERE module_id = ?", (mid,))
        self.conn.execute("DELETE FROM tail WHERE module_id = ?", (mid,))
        versions = sorted(h.records)
        prev = None
        for k in range(0, len(versions), SEGMENT):
            entries: list[Any] = []
            for v in versions[k:k + SEGMENT]:
                rec = h.records[v]
                if prev is None or not entries:
                    entries.append(self._entry(rec, "full", rec.source))
                else:
                    entries.append(self._entry(rec, "delta", encode_delta(prev, rec.source)))
                prev = rec.source
            self._put(mid, versions[k], entries)
        cache = _Tail(mid, -1)
        if versions:
            cache.last, cache.last_source, cache.last_checksum = versions[-1], prev, ""
            cache.base = prev
        return cache

    def _put(self, mid: int, first: int, entries: list[Any]) -> None:
        assert self.conn is not None
        data = zlib.compress(json.dumps(entries, separators=(",", ":")).encode(), 6)
        self.conn.execute("INSERT OR REPLACE INTO segments VALUES (?, ?, ?)", (mid, first, data))

    def forget(self, sandbox_id: str, scope: str = FOLDER) -> None:
        """Delete one sandbox's history in one scope, and nothing else."""
        with self.lock:
            if self.conn is None or self._cannot_write():
                return
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                ids = "(SELECT id FROM modules WHERE scope = ? AND sandbox = ?)"
                for table in ("segments", "tail"):
                    self.conn.execute(f"DELETE FROM {table} WHERE module_id IN {ids}",
                                      (scope, sandbox_id))
                self.conn.execute("DELETE FROM modules WHERE scope = ? AND sandbox = ?",
                                  (scope, sandbox_id))
                self.conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._fall_back(f"cannot clear history in {self.path}: {exc}")
            self._cache = {k: v for k, v in self._cache.items()
                           if (k[0], k[1]) != (scope, sandbox_id)}

    def integrity_check(self) -> str:
        assert self.conn is not None
        result: str = self.conn.execute("PRAGMA integrity_check").fetchone()[0]
        return result


def store_from_environment(cwd: str | os.PathLike[str] | None = None) -> VersionStore:
    """The default store: ``$SANDBOX_MAGIC_STORE`` (a file, or ``:memory:``), else
    ``.sandbox_magic/history.sqlite3`` in the working directory (beside the notebook)."""
    where = os.environ.get(ENV_STORE, "").strip()
    if where == MEMORY:
        return VersionStore()
    path = Path(where) if where else Path(cwd or os.getcwd()) / DEFAULT_DIR / DEFAULT_FILE
    return SQLiteVersionStore(path)
