"""Version history of sandbox modules: records, retention, the undo/redo timeline.

The history of one module is a :class:`ModuleHistory`.  Version numbers only
grow: after a rollback to 2 of a module at 5, the next new code becomes 6.
Undo and redo walk the *timeline*, the sequence of versions that were current,
whatever made each one current (a reload, a rollback, a dedup re-activation).

Histories are kept behind the small :class:`VersionStore` interface so that a
durable store can replace the in-memory one without touching the engine.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..errors import HistoryError, VersionNotFoundError
from .artifact import Artifact, compile_artifact, source_checksum


class VersionRecord:
    """One stored version of a module.

    Versions read back from a durable store hold only their source; the
    artifact is compiled the first time it is needed (a rollback, a restore).
    """

    __slots__ = (
        "_artifact",
        "checksum",
        "loaded_at",
        "module",
        "source",
        "state_handler",
        "version",
    )

    def __init__(self, version: int, artifact: Artifact | None, loaded_at: datetime,
                 state_handler: str | None = None, *, module: str | None = None,
                 source: str | None = None) -> None:
        self.version = version
        self.loaded_at = loaded_at
        self.state_handler = state_handler
        self._artifact = artifact
        if artifact is not None:
            self.module, self.source, self.checksum = (artifact.module, artifact.source,
                                                       artifact.checksum)
        else:
            assert module is not None and source is not None
            self.module, self.source = module, source
            self.checksum = source_checksum(source)

    @property
    def artifact(self) -> Artifact:
        if self._artifact is None:
            self._artifact = compile_artifact(self.source, self.module)
        return self._artifact

    def __repr__(self) -> str:
        return f"<VersionRecord {self.module} v{self.version} {self.checksum[:8]}>"


@dataclass(frozen=True)
class VersionInfo:
    """What :func:`list_module_versions` reports about a version."""

    module: str
    version: int
    loaded_at: datetime
    checksum: str
    source: str = field(repr=False)
    is_current: bool
    state_handler: str | None

    def as_dict(self) -> dict[str, object]:
        return {"module": self.module, "version": self.version,
                "loaded_at": self.loaded_at.isoformat(), "checksum": self.checksum,
                "source": self.source, "is_current": self.is_current,
                "state_handler": self.state_handler}


def utcnow() -> datetime:
    return datetime.now(UTC)


class ModuleHistory:
    """Retained versions of one module, its current version and its timeline."""

    def __init__(self, module: str) -> None:
        self.module = module
        self.records: dict[int, VersionRecord] = {}
        self.current: int | None = None
        self.next_version = 1
        self.timeline: list[int] = []
        self.cursor = -1

    # ---------------------------------------------------------------- queries
    def record(self, version: int) -> VersionRecord:
        try:
            return self.records[version]
        except KeyError:
            have = ", ".join(map(str, sorted(self.records))) or "none"
            raise VersionNotFoundError(
                f"module {self.module!r} has no version {version} (retained: {have})"
            ) from None

    def current_record(self) -> VersionRecord:
        if self.current is None:
            raise VersionNotFoundError(f"module {self.module!r} has no current version")
        return self.records[self.current]

    def find_checksum(self, checksum: str) -> int | None:
        for v, rec in self.records.items():
            if rec.checksum == checksum:
                return v
        return None

    def infos(self) -> list[VersionInfo]:
        return [VersionInfo(self.module, r.version, r.loaded_at, r.checksum, r.source,
                            r.version == self.current, r.state_handler)
                for r in sorted(self.records.values(), key=lambda r: -r.version)]

    def undo_target(self) -> int:
        if self.cursor <= 0:
            raise HistoryError(f"nothing to undo for module {self.module!r}")
        return self.timeline[self.cursor - 1]

    def redo_target(self) -> int:
        if self.cursor >= len(self.timeline) - 1:
            raise HistoryError(f"nothing to redo for module {self.module!r}")
        return self.timeline[self.cursor + 1]

    # -------------------------------------------------------------- mutations
    def snapshot(self) -> tuple[Any, ...]:
        """Everything a mutation may change, for :meth:`restore`."""
        return (dict(self.records), self.current, self.next_version, list(self.timeline),
                self.cursor)

    def restore(self, snap: tuple[Any, ...]) -> None:
        records, self.current, self.next_version, timeline, self.cursor = snap
        self.records = dict(records)
        self.timeline = list(timeline)

    def add(self, artifact: Artifact, state_handler: str | None,
            loaded_at: datetime | None = None) -> VersionRecord:
        rec = VersionRecord(self.next_version, artifact, loaded_at or utcnow(), state_handler)
        self.records[rec.version] = rec
        self.next_version += 1
        self.activate(rec.version)
        return rec

    def activate(self, version: int) -> None:
        """Make ``version`` current as a new step (drops any redo steps)."""
        self.record(version)
        self.current = version
        if self.timeline and self.cursor >= 0 and self.timeline[self.cursor] == version:
            return
        del self.timeline[self.cursor + 1:]
        if not self.timeline or self.timeline[-1] != version:
            self.timeline.append(version)
        self.cursor = len(self.timeline) - 1

    def move(self, delta: int) -> int:
        """Step the timeline cursor by ``delta`` (undo: -1, redo: +1)."""
        target = self.undo_target() if delta < 0 else self.redo_target()
        self.cursor += delta
        self.current = target
        return target

    def retain(self, max_versions: int | None) -> list[int]:
        """Drop the oldest non-current versions beyond ``max_versions``."""
        dropped: list[int] = []
        if max_versions is None:
            return dropped
        for v in sorted(self.records):
            if len(self.records) <= max_versions:
                break
            if v != self.current:
                del self.records[v]
                dropped.append(v)
        if dropped:
            self._prune_timeline()
        return dropped

    def _prune_timeline(self) -> None:
        here = self.timeline[self.cursor] if self.timeline else None
        kept: list[int] = []
        for v in self.timeline:
            if v in self.records and (not kept or kept[-1] != v):
                kept.append(v)
        self.timeline = kept
        self.cursor = (len(kept) - 1 - kept[::-1].index(here)) if here in kept else len(kept) - 1


class VersionStore:
    """Where histories live.  The base class keeps them in memory only."""

    durable = False

    def load(self, sandbox_id: str, scope: str = "folder") -> dict[str, ModuleHistory]:
        """Histories previously saved for ``sandbox_id`` in ``scope`` (none in memory)."""
        return {}

    def save(self, sandbox_id: str, history: ModuleHistory, scope: str = "folder") -> None:
        """Persist ``history`` after a change; called before a reload reports success."""

    def forget(self, sandbox_id: str, scope: str = "folder") -> None:
        """Drop everything stored for ``sandbox_id`` in ``scope``."""

    def list_sandboxes(self, scope: str = "folder") -> dict[str, dict[str, int]]:
        """``{sandbox: {module: current version}}`` stored under ``scope``."""
        return {}

    def writers(self, sandbox_id: str, scope: str = "folder") -> list[dict[str, object]]:
        """Who last wrote this history's modules (a durable store knows)."""
        return []

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group the writes of many reloads into one durable write (see batch reloads)."""
        yield
