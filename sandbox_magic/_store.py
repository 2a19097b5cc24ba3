"""Durable version history: an embedded SQLite store.

Layout (format 1)::

    meta(key, value)                  -- 'format' = 1
    modules(id, sandbox, module, current, next_version, timeline, cursor, retained, rev)
    tail(module_id, version, entry)   -- the newest versions, one small row each
    segments(module_id, first, data)  -- zlib(JSON) of up to SEGMENT versions

Each version is kept as a diff-match-patch delta (``diff_toDelta``) against the
previous one; every segment starts with a full snapshot, so a long series of
small edits costs little more than one copy of the module.  A reload appends
one tail row; every ``TAIL_MAX`` versions the tail is folded into segments.
Versions dropped by retention disappear from ``retained`` at once and from
the file when their whole segment is no longer needed.  Checksums are not
stored; they are recomputed from the sources.

Every change is written in one transaction before the reload reports success.
The database runs in WAL mode, so readers never block the writer and several
kernels can share one folder; a kernel killed mid-write leaves the last
committed state.  A file that cannot be opened, is locked too long, is
corrupted, or was written by a newer format makes the store fall back to
memory with a warning: history is then not persisted, but reloads go on.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import warnings
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from diff_match_patch import diff_match_patch

from ._artifact import source_checksum
from ._versions import ModuleHistory, VersionRecord, VersionStore

FORMAT = 1
SEGMENT = 256     # versions per compressed segment; each starts with a full snapshot
TAIL_MAX = 32     # new versions kept as small rows until they are folded into segments
DEFAULT_DIR = ".sandbox_magic"
DEFAULT_FILE = "history.sqlite3"
ENV_STORE = "SANDBOX_MAGIC_STORE"
MEMORY = ":memory:"


class StoreWarning(UserWarning):
    """The durable store could not be used; history is kept in memory only."""


class StoreFormatError(Exception):
    pass


def _dmp() -> diff_match_patch:
    d = diff_match_patch()
    d.Diff_Timeout = 0   # exact diffs: deltas must reproduce the text exactly
    return d


# A batch stores the same edit in many sandboxes: the newest deltas are kept,
# keyed by the checksums of both sources so that no source is pinned here; the
# deltas of a version no sandbox retains any more are forgotten (forget_deltas).
DELTA_CACHE = 32
_deltas: OrderedDict[tuple[str, str], str] = OrderedDict()
_deltas_lock = threading.Lock()


def encode_delta(old: str, new: str) -> str:
    """A diff-match-patch delta from ``old`` to ``new`` (the newest few are cached).

    ``checklines`` makes diff-match-patch find the changed lines first and diff
    characters only inside them: fast, and the delta stays character-exact.
    """
    key = (source_checksum(old), source_checksum(new))
    with _deltas_lock:
        delta = _deltas.get(key)
        if delta is not None:
            _deltas.move_to_end(key)
            return delta
    dmp = _dmp()
    delta = dmp.diff_toDelta(dmp.diff_main(old, new, True))
    with _deltas_lock:
        _deltas[key] = delta
        while len(_deltas) > DELTA_CACHE:
            _deltas.popitem(last=False)
    return delta


def forget_deltas(checksums: Iterable[str]) -> None:
    """Drop cached deltas from or to these sources (versions nobody retains)."""
    gone = set(checksums)
    with _deltas_lock:
        for key in [k for k in _deltas if k[0] in gone or k[1] in gone]:
            del _deltas[key]


def apply_delta(old: str, delta: str) -> str:
    dmp = _dmp()
    return dmp.diff_text2(dmp.diff_fromDelta(old, delta))


class _Tail:
    """What this process knows about a module's stored chain (to append cheaply)."""

    __slots__ = ("mid", "rev", "last", "last_source", "tail")

    def __init__(self, mid: int, rev: int) -> None:
        self.mid, self.rev = mid, rev
        self.last = 0
        self.last_source: str | None = None
        self.tail = 0


def _replay(entries: list[Any]) -> str:
    source = ""
    for entry in entries:
        source = entry[4] if entry[3] == "full" else apply_delta(source, entry[4])
    return source


class SQLiteVersionStore(VersionStore):
    """Version histories in one SQLite file (see the module docstring)."""

    durable = True

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 5.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self.lock = threading.RLock()
        self.fallback: VersionStore | None = None
        self.conn: sqlite3.Connection | None = None
        self._cache: dict[tuple[str, str], _Tail] = {}
        self._in_batch = False
        try:
            self._open()
        except (sqlite3.Error, OSError, StoreFormatError) as exc:
            self._fall_back(f"cannot use the history store {self.path}: {exc}")

    # ------------------------------------------------------------------ open
    def _open(self) -> None:
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
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            row = conn.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
            if row is None:
                conn.execute("INSERT INTO meta VALUES ('format', ?)", (str(FORMAT),))
            elif int(row[0]) > FORMAT:
                raise StoreFormatError(
                    f"it was written by a newer sandbox_magic (store format {row[0]}, this "
                    f"version reads format {FORMAT}); upgrade sandbox_magic or point "
                    f"{ENV_STORE} at another file")
            conn.execute("""CREATE TABLE IF NOT EXISTS modules (
                id INTEGER PRIMARY KEY, sandbox TEXT NOT NULL, module TEXT NOT NULL,
                current INTEGER, next_version INTEGER NOT NULL, timeline TEXT NOT NULL,
                cursor INTEGER NOT NULL, retained TEXT NOT NULL, rev INTEGER NOT NULL DEFAULT 0,
                UNIQUE (sandbox, module))""")
            conn.execute("""CREATE TABLE IF NOT EXISTS tail (
                module_id INTEGER NOT NULL, version INTEGER NOT NULL, entry TEXT NOT NULL,
                PRIMARY KEY (module_id, version)) WITHOUT ROWID""")
            conn.execute("""CREATE TABLE IF NOT EXISTS segments (
                module_id INTEGER NOT NULL, first INTEGER NOT NULL, data BLOB NOT NULL,
                PRIMARY KEY (module_id, first)) WITHOUT ROWID""")
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        self.conn = conn

    def _fall_back(self, why: str) -> None:
        warnings.warn(f"{why}. Version history is kept in memory only for now.",
                      StoreWarning, stacklevel=3)
        if self.conn is not None:
            try:
                self.conn.close()
            except sqlite3.Error:
                pass
        self.conn = None
        self.fallback = VersionStore()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """One transaction for all saves made inside; committed before leaving.

        A batch reload reports its results only after this commit, so every
        version it reports is durable, at the cost of one write instead of one
        per sandbox.
        """
        with self.lock:
            started = self.conn is not None and not self._in_batch
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
        with self.lock:
            if self.conn is not None:
                self.conn.close()
                self.conn = None

    # ------------------------------------------------------------------ read
    def load(self, sandbox_id: str) -> dict[str, ModuleHistory]:
        with self.lock:
            if self.conn is None:
                return {}
            try:
                return self._load(sandbox_id)
            except (sqlite3.Error, ValueError, KeyError, zlib.error) as exc:
                self._fall_back(f"cannot read history of sandbox {sandbox_id!r} from "
                                f"{self.path}: {exc}")
                return {}

    def _load(self, sandbox_id: str) -> dict[str, ModuleHistory]:
        assert self.conn is not None
        out: dict[str, ModuleHistory] = {}
        rows = self.conn.execute(
            "SELECT id, module, current, next_version, timeline, cursor, retained, rev "
            "FROM modules WHERE sandbox = ?", (sandbox_id,)).fetchall()
        for mid, module, current, next_version, timeline, cursor, retained, rev in rows:
            h = ModuleHistory(module)
            keep = set(json.loads(retained))
            entries: list[Any] = []
            for (data,) in self.conn.execute(
                    "SELECT data FROM segments WHERE module_id = ? ORDER BY first", (mid,)):
                entries.extend(json.loads(zlib.decompress(data)))
            tail = self.conn.execute("SELECT entry FROM tail WHERE module_id = ? "
                                     "ORDER BY version", (mid,)).fetchall()
            entries.extend(json.loads(t) for (t,) in tail)
            source = ""
            cache = _Tail(mid, rev)
            for version, ts, handler, kind, payload in entries:
                source = payload if kind == "full" else apply_delta(source, payload)
                if version in keep:
                    h.records[version] = VersionRecord(
                        version, None, datetime.fromtimestamp(ts / 1000, timezone.utc),
                        handler, module=module, source=source)
                cache.last, cache.last_source = version, source
            cache.tail = len(tail)
            h.current = current if current in h.records else None
            h.next_version = next_version
            h.timeline = [v for v in json.loads(timeline) if v in h.records]
            h.cursor = min(cursor, len(h.timeline) - 1)
            self._cache[(sandbox_id, module)] = cache
            out[module] = h
        return out

    # ----------------------------------------------------------------- write
    def save(self, sandbox_id: str, history: ModuleHistory) -> None:
        with self.lock:
            if self.conn is None:
                return
            try:
                self._save(sandbox_id, history)
            except sqlite3.Error as exc:
                try:
                    self.conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                self._in_batch = False
                self._cache.pop((sandbox_id, history.module), None)
                self._fall_back(f"cannot write history to {self.path}: {exc}")

    def _save(self, sandbox_id: str, h: ModuleHistory) -> None:
        conn = self.conn
        assert conn is not None
        key = (sandbox_id, h.module)
        if not self._in_batch:
            conn.execute("BEGIN IMMEDIATE")
        row = conn.execute("SELECT id, rev FROM modules WHERE sandbox = ? AND module = ?",
                           key).fetchone()
        if row is None:
            mid = conn.execute(
                "INSERT INTO modules (sandbox, module, current, next_version, timeline, "
                "cursor, retained) VALUES (?, ?, NULL, 1, '[]', -1, '[]')", key).lastrowid
            rev = 0
            self._cache[key] = _Tail(mid, rev)
        else:
            mid, rev = row
        cache = self._cache.get(key)
        if cache is None or cache.rev != rev or cache.mid != mid:
            cache = self._rewrite(mid, h)          # another kernel wrote it: ours wins
        else:
            for v in sorted(x for x in h.records if x > cache.last):
                self._append(cache, h.records[v])
            if cache.tail >= TAIL_MAX:
                self._fold(cache, min(h.records, default=0))
        conn.execute("UPDATE modules SET current = ?, next_version = ?, timeline = ?, "
                     "cursor = ?, retained = ?, rev = rev + 1 WHERE id = ?",
                     (h.current, h.next_version, json.dumps(h.timeline), h.cursor,
                      json.dumps(sorted(h.records)), mid))
        if not self._in_batch:
            conn.execute("COMMIT")
        cache.rev = rev + 1
        self._cache[key] = cache

    @staticmethod
    def _entry(rec: VersionRecord, kind: str, payload: str) -> list[Any]:
        return [rec.version, round(rec.loaded_at.timestamp() * 1000), rec.state_handler,
                kind, payload]

    def _append(self, cache: _Tail, rec: VersionRecord) -> None:
        """One new version as a small uncompressed row: cheap on every reload."""
        assert self.conn is not None
        if cache.last_source is None:
            entry = self._entry(rec, "full", rec.source)
        else:
            entry = self._entry(rec, "delta", encode_delta(cache.last_source, rec.source))
        self.conn.execute("INSERT OR REPLACE INTO tail VALUES (?, ?, ?)",
                          (cache.mid, rec.version, json.dumps(entry, separators=(",", ":"))))
        cache.last, cache.last_source, cache.tail = rec.version, rec.source, cache.tail + 1

    def _fold(self, cache: _Tail, oldest_retained: int) -> None:
        """Move the tail rows into compressed segments; drop segments nobody needs."""
        assert self.conn is not None
        conn = self.conn
        last = conn.execute("SELECT first, data FROM segments WHERE module_id = ? "
                            "ORDER BY first DESC LIMIT 1", (cache.mid,)).fetchone()
        entries = json.loads(zlib.decompress(last[1])) if last else []
        first = last[0] if last else None
        source = _replay(entries)
        tail = [json.loads(t) for (t,) in conn.execute(
            "SELECT entry FROM tail WHERE module_id = ? ORDER BY version", (cache.mid,))]
        for entry in tail:
            source = entry[4] if entry[3] == "full" else apply_delta(source, entry[4])
            if first is None or len(entries) >= SEGMENT:
                if entries and first is not None:
                    self._put(cache.mid, first, entries)
                entries, first = [], entry[0]
                entry = [*entry[:3], "full", source]   # every segment starts whole
            entries.append(entry)
        if first is not None:
            self._put(cache.mid, first, entries)
        conn.execute("DELETE FROM tail WHERE module_id = ?", (cache.mid,))
        cache.tail = 0
        firsts = [f for (f,) in conn.execute(
            "SELECT first FROM segments WHERE module_id = ? ORDER BY first", (cache.mid,))]
        for f, nxt in zip(firsts, firsts[1:]):
            if nxt <= oldest_retained:      # every version in segment f was dropped
                conn.execute("DELETE FROM segments WHERE module_id = ? AND first = ?",
                             (cache.mid, f))

    def _rewrite(self, mid: int, h: ModuleHistory) -> _Tail:
        assert self.conn is not None
        self.conn.execute("DELETE FROM segments WHERE module_id = ?", (mid,))
        self.conn.execute("DELETE FROM tail WHERE module_id = ?", (mid,))
        versions = sorted(h.records)
        prev = None
        for k in range(0, len(versions), SEGMENT):
            entries = []
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
            cache.last, cache.last_source = versions[-1], prev
        return cache

    def _put(self, mid: int, first: int, entries: list[Any]) -> None:
        assert self.conn is not None
        data = zlib.compress(json.dumps(entries, separators=(",", ":")).encode(), 9)
        self.conn.execute("INSERT OR REPLACE INTO segments VALUES (?, ?, ?)", (mid, first, data))

    def forget(self, sandbox_id: str) -> None:
        with self.lock:
            if self.conn is None:
                return
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                self.conn.execute("DELETE FROM segments WHERE module_id IN "
                                  "(SELECT id FROM modules WHERE sandbox = ?)", (sandbox_id,))
                self.conn.execute("DELETE FROM modules WHERE sandbox = ?", (sandbox_id,))
                self.conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._fall_back(f"cannot clear history in {self.path}: {exc}")
            self._cache = {k: v for k, v in self._cache.items() if k[0] != sandbox_id}

    def integrity_check(self) -> str:
        assert self.conn is not None
        return self.conn.execute("PRAGMA integrity_check").fetchone()[0]


def store_from_environment(cwd: str | os.PathLike[str] | None = None) -> VersionStore:
    """The default store: ``$SANDBOX_MAGIC_STORE`` (a file, or ``:memory:``), else
    ``.sandbox_magic/history.sqlite3`` in the working directory (beside the notebook)."""
    where = os.environ.get(ENV_STORE, "").strip()
    if where == MEMORY:
        return VersionStore()
    path = Path(where) if where else Path(cwd or os.getcwd()) / DEFAULT_DIR / DEFAULT_FILE
    return SQLiteVersionStore(path)
