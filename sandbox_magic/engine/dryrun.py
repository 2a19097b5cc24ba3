"""What a reload would do, without doing it.

A dry run is a reload transaction stopped before its commit: the new code is
compiled, the module bodies run into staging modules, old and new objects are
paired, live state is captured and the state handler runs on copies, the check
runs on the staged version; then everything is undone exactly as for a
refused reload.  What each step found is kept in a :class:`DryRun`.

Like a refused reload, a dry run does run the new module bodies (their side
effects outside the sandbox are theirs) and, while it lasts, pauses the
module's servers and the callers of classes whose instances it migrates.  The
state handler gets deep copies of the live states (the states themselves when
they cannot be copied).  What runs after a reload's switch is not tried: a
server's ``code_change``, a new ``__setstate__`` given the migrated state of a
replaced class; a reload can still be refused there after a dry run said it
would be applied.
"""

from __future__ import annotations

import dataclasses
import linecache
import time
import types
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import SandboxError
from .artifact import Artifact
from .inplace import _is_def, _same_function
from .provenance import RECORDER
from .sandbox import forget_source

__all__ = ["ClassMigration", "DryRun", "dry_run", "function_changes", "numbered_here"]


@dataclass(frozen=True)
class ClassMigration:
    """The live instances of one class a reload would migrate."""

    cls: str                        # module.Class
    instances: int
    added: tuple[str, ...] = ()     # attributes the state handler (or new defaults) adds
    dropped: tuple[str, ...] = ()   # attributes it drops
    replaced: bool = False          # moved to the new class (layout change)


@dataclass(frozen=True)
class DryRun:
    """What a reload would do.  ``refused``: it would not happen, for ``reason``."""

    modules: tuple[str, ...]
    from_versions: dict[str, int | None]
    to_versions: dict[str, int | None]
    refused: bool = False
    reason: str | None = None
    step: str | None = None
    in_place: bool = False
    functions_changed: tuple[str, ...] = ()
    functions_added: tuple[str, ...] = ()
    functions_removed: tuple[str, ...] = ()
    classes_replaced: tuple[str, ...] = ()
    migrations: tuple[ClassMigration, ...] = ()
    servers: tuple[str, ...] = ()
    dependents: tuple[str, ...] = ()
    check: str | None = None        # None (no check), "passed" or "refused: why"
    notes: tuple[str, ...] = ()
    duration: float = 0.0
    no_change: bool = field(default=False)

    @property
    def status(self) -> str:
        return "dry_run"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["migrations"] = [asdict(m) for m in self.migrations]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DryRun:
        values = dict(data)
        migrations = []
        for m in values.get("migrations", ()):
            fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                                      for k, v in m.items()}
            migrations.append(ClassMigration(**fields))
        values["migrations"] = tuple(migrations)
        for key in ("modules", "functions_changed", "functions_added", "functions_removed",
                    "classes_replaced", "servers", "dependents", "notes"):
            values[key] = tuple(values.get(key, ()))
        return cls(**values)

    def summary(self) -> str:
        """A few lines a person reads: what would change, and whether it would happen."""
        mods = ", ".join(f"{m} v{self.from_versions.get(m) or '-'} -> "
                         f"v{self.to_versions.get(m) or '-'}" for m in self.modules)
        if self.no_change:
            return f"dry run: {mods or ', '.join(self.modules)}: no change (the code is current)"
        head = (f"dry run: {mods}: would be REFUSED ({self.step or 'reload'}): {self.reason}"
                if self.refused else f"dry run: {mods}: would be applied"
                + (" in place (no module body runs)" if self.in_place else ""))
        lines = [head]

        def names(label: str, items: tuple[str, ...]) -> None:
            if items:
                shown = ", ".join(items[:8]) + (f", ... ({len(items)})" if len(items) > 8
                                                else "")
                lines.append(f"  {label}: {shown}")
        names("functions changed", self.functions_changed)
        names("functions added", self.functions_added)
        names("functions removed", self.functions_removed)
        names("classes replaced (layout changed; instances move, old ones forward)",
              self.classes_replaced)
        for m in self.migrations:
            what = []
            if m.added:
                what.append("adds " + ", ".join(m.added))
            if m.dropped:
                what.append("drops " + ", ".join(m.dropped))
            lines.append(f"  migrate {m.instances} {m.cls} instance"
                         f"{'s' if m.instances != 1 else ''}"
                         + (f" ({'; '.join(what)})" if what else "")
                         + (" into the new class" if m.replaced else ""))
        names("servers suspended", self.servers)
        names("dependents re-run", self.dependents)
        if self.check is not None:
            lines.append(f"  check: {self.check}")
        lines.extend(f"  note: {n}" for n in self.notes)
        lines.append("  nothing was changed")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def _functions(art: Artifact | None) -> dict[str, types.CodeType]:
    """The functions made by ``def`` in a module's code, by qualified name."""
    out: dict[str, types.CodeType] = {}
    if art is None:
        return out
    todo = list(art.codes)
    while todo:
        code = todo.pop()
        for c in code.co_consts:
            if type(c) is types.CodeType:
                if _is_def(c) and "<locals>" not in c.co_qualname:
                    out.setdefault(c.co_qualname, c)
                todo.append(c)
    return out


def _text(source_lines: list[str], code: types.CodeType) -> str:
    """The source lines of a function (its decorators to its last line of code)."""
    last = code.co_firstlineno
    todo = [code]
    while todo:
        c = todo.pop()
        last = max([last, *(ln for _, _, ln in c.co_lines() if ln is not None)])
        todo.extend(k for k in c.co_consts if type(k) is types.CodeType)
    return "\n".join(x.strip() for x in source_lines[code.co_firstlineno - 1:last])


def function_changes(module: str, old: Artifact | None, new: Artifact
                     ) -> tuple[list[str], list[str], list[str]]:
    """Functions (and methods) changed, added and removed from ``old`` to ``new``: a
    function changed when its code and its text both differ (the same text compiled
    whole or statement by statement can give slightly different code)."""
    a, b = _functions(old), _functions(new)
    old_lines = old.source.split("\n") if old is not None else []
    new_lines = new.source.split("\n")
    changed = sorted(f"{module}.{q}" for q in a.keys() & b.keys()
                     if not _same_function(a[q], b[q])
                     and _text(old_lines, a[q]) != _text(new_lines, b[q]))
    added = sorted(f"{module}.{q}" for q in b.keys() - a.keys())
    removed = sorted(f"{module}.{q}" for q in a.keys() - b.keys())
    return changed, added, removed


def _migrations(participants: list[Any]) -> list[ClassMigration]:
    out: list[ClassMigration] = []
    for p in participants:
        for g in getattr(p, "groups", ()):
            if getattr(g, "handler", None) is None or not g.objs:
                continue
            pairs = [(o, n) for o, n in zip(g.old or (), g.new or ())
                     if isinstance(o, dict) and isinstance(n, dict)]
            # the distinct (old keys, new keys) shapes, found in C: usually one
            shapes = set(zip(map(frozenset, (o for o, _ in pairs)),
                             map(frozenset, (n for _, n in pairs))))
            added = set().union(*(n - o for o, n in shapes))
            dropped = set().union(*(o - n for o, n in shapes))
            out.append(ClassMigration(f"{g.module}.{g.cls.__qualname__}", len(g.objs),
                                      tuple(sorted(added)), tuple(sorted(dropped))))
        moved: dict[str, int] = {}
        for _obj, old_cls, _new in getattr(p, "moved", ()):
            key = f"{p.module_of.get(old_cls.__module__, old_cls.__module__)}." \
                  f"{old_cls.__qualname__}"
            moved[key] = moved.get(key, 0) + 1
        out.extend(ClassMigration(k, n, replaced=True) for k, n in moved.items())
    return out


def _versions(state: Any, changes: list[Any]) -> tuple[dict[str, int | None],
                                                        dict[str, int | None]]:
    """Each changed module's current version, and the one the reload would make current."""
    from_versions: dict[str, int | None] = {}
    to_versions: dict[str, int | None] = {}
    for c in changes:
        h = state.histories.get(c.module)
        from_versions[c.module] = h.current if h is not None else None
        if c.action == "new":
            to_versions[c.module] = h.next_version if h is not None else 1
        elif c.action == "activate":
            to_versions[c.module] = c.version
        elif h is not None:
            to_versions[c.module] = h.undo_target() if c.delta < 0 else h.redo_target()
    return from_versions, to_versions


def numbered_here(state: Any, changes: list[Any], reply: dict[str, Any],
                  started: float) -> DryRun:
    """A dry run another process made, with this kernel's version numbers."""
    from_versions, to_versions = _versions(state, changes)
    values = dict(reply)
    values.update(modules=[c.module for c in changes], from_versions=from_versions,
                  to_versions=to_versions, duration=time.perf_counter() - started)
    return DryRun.from_dict(values)


def dry_run(state: Any, changes: list[Any], options: Any) -> DryRun:
    """Run ``changes`` as a transaction up to its commit, then undo it (see module doc)."""
    from .interrupts import InterruptGuard
    from .reload import Transaction

    started = time.perf_counter()
    options = dataclasses.replace(options, isolate_states=True)
    modules = tuple(c.module for c in changes)
    from_versions, to_versions = _versions(state, changes)
    changed: list[str] = []
    added: list[str] = []
    removed: list[str] = []
    for c in changes:
        h = state.histories.get(c.module)
        old = h.current_record().artifact if h is not None and h.current is not None else None
        fc, fa, fr = function_changes(c.module, old, c.artifact)
        changed += fc
        added += fa
        removed += fr
    report: dict[str, Any] = {"modules": modules, "from_versions": from_versions,
                              "to_versions": to_versions,
                              "functions_changed": tuple(changed),
                              "functions_added": tuple(added),
                              "functions_removed": tuple(removed)}
    known_sources = {c.artifact.filename for c in changes if c.artifact.filename in linecache.cache}
    added_sources = [c.artifact.filename for c in changes
                     if c.artifact.filename not in known_sources]
    with state.lock, InterruptGuard(), RECORDER.paused():
        tx = Transaction(state, changes, options, fresh=False, rerun=())
        try:
            try:
                tx.plan()
                report["in_place"] = tx.in_place is not None
                report["dependents"] = tuple(m for m in tx.run_order if m not in tx.changed)
                tx.stage(False, None)
                tx.pair()
                patcher = tx.patcher
                if patcher is not None and not report["in_place"]:
                    short = {state.fullname(m): m for m in tx.code_for}
                    report["classes_replaced"] = tuple(
                        f"{short.get(o.__module__, o.__module__)}.{o.__qualname__}"
                        for o, _ in getattr(patcher, "replaced", ()))
                tx.prepare()
                if options.use_state_preservation:     # else no server is suspended
                    report["servers"] = tuple(p.label for part in tx.participants
                                              for p in getattr(part, "suspend_set", ()))
                report["migrations"] = tuple(_migrations(tx.participants))
                if options.check is not None:
                    tx.run_check()
                    report["check"] = "passed"
                report["notes"] = tuple(patcher.notes) if patcher is not None else ()
            except SandboxError as exc:
                report.update(refused=True, reason=str(exc),
                              step=getattr(exc, "step", None))
                if getattr(exc, "step", None) == "check":
                    report["check"] = f"refused: {exc}"
        finally:
            tx.rollback()
            tx.finish(False)
            for name in added_sources:       # the dry run's versions were never loaded
                forget_source(name)
    report["duration"] = time.perf_counter() - started
    return DryRun(**report)
