"""The reload transaction: stage, pair, commit (or revert), then record versions.

One transaction covers every module it touches: the modules being changed and,
when dependencies are coordinated, the sandbox modules that import them.  Their
bodies run first into staging namespaces while the old version keeps running;
only when every body ran and every live-state step succeeded are old objects
patched, and only then is a version recorded.  Any failure leaves modules,
objects and history exactly as they were and names the step that failed.
"""

from __future__ import annotations

import sys
import time
import traceback
import types
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from ._artifact import Artifact
from ._deps import dependents_of, graph_of, topological_order
from ._errors import ReloadError, SandboxError
from ._patch import Patcher
from ._sandbox import SandboxState, register_source
from ._versions import ModuleHistory

StateHandler = Callable[[Any, int, int], Any]


@dataclass(frozen=True)
class ReloadResult:
    """Outcome of a reload, rollback, undo or redo.

    ``status`` is ``"hot_reloaded"``, ``"no_change"`` or ``"rolled_back"``;
    ``notes`` lists every fallback the patcher had to take (for example a class
    replaced because its ``__slots__`` changed); ``modules`` holds per-module
    results when several modules were loaded as one transaction.
    """

    status: str
    module: str
    old_version: int | None
    new_version: int | None
    migrated: int = 0
    dependents: tuple[str, ...] = ()
    duration: float = 0.0
    notes: tuple[str, ...] = ()
    modules: tuple[ReloadResult, ...] = field(default=(), repr=False)

    @property
    def ok(self) -> bool:
        return self.status in ("hot_reloaded", "no_change", "rolled_back")


@dataclass
class Change:
    """One module's part of a transaction."""

    module: str
    artifact: Artifact
    action: str                 # "new" | "activate" | "move" | "rerun" (no version recorded)
    version: int | None = None  # target of "activate"
    delta: int = 0              # step of "move"


@dataclass
class ReloadOptions:
    state_handler: StateHandler | None = None
    handler_name: str | None = None
    use_state_preservation: bool = True
    coordinate_dependencies: bool = True
    suspend_timeout: float = 5.0


#: Live-state participants (servers, tracked instances) hook in here.  Each is
#: called as ``factory(state, patcher, run_order, changes, options)`` and
#: the participant offers ``before_commit()``, ``after_commit() -> int``
#: (objects migrated), ``rollback()`` and ``finish()``.
PARTICIPANTS: list[Callable[..., Any]] = []


def _body_error(exc: BaseException, module: str, artifact: Artifact) -> ReloadError:
    line = None
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        if frame.f_code.co_filename == artifact.filename:
            line = lineno
    where = f" at line {line}" if line else ""
    err = ReloadError(
        f"module {module!r} raised {type(exc).__name__}{where} while its body ran: {exc}; "
        "nothing was changed and the previous version keeps running",
        step="execute", module=module)
    err.line = line
    return err


def _levels(order: list[str], graph: dict[str, set[str]]) -> list[list[str]]:
    """Group modules so that each group only imports modules of earlier groups."""
    level: dict[str, int] = {}
    for m in order:
        level[m] = 1 + max((level[d] for d in graph.get(m, ()) if d in level), default=-1)
    groups: list[list[str]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for m in order:
        groups[level[m]].append(m)
    return groups


def _run_body(state: SandboxState, m: str, art: Artifact, smod: types.ModuleType) -> None:
    try:
        exec(art.code, smod.__dict__)
    except Exception as exc:
        raise _body_error(exc, m, art) from exc


def _run_level(state: SandboxState, mods: list[str], code_for: dict[str, Artifact],
               staged: dict[str, types.ModuleType], timeout: float | None) -> None:
    """Run the bodies of independent modules side by side; the first error wins."""
    def job(m: str) -> None:
        state.join_overlay()
        _run_body(state, m, code_for[m], staged[m])

    pool = ThreadPoolExecutor(max_workers=min(8, len(mods)),
                              thread_name_prefix=f"sandbox-{state.id}-reload")
    try:
        futures = {pool.submit(job, m): m for m in mods}
        done, pending = wait(futures, timeout=timeout)
        if pending:
            late = ", ".join(sorted(futures[f] for f in pending))
            raise ReloadError(f"module bodies of {late} did not finish within {timeout} s; "
                              "nothing was changed", step="execute", module=late)
        for f in futures:   # input order: the same error every time
            f.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def execute(state: SandboxState, changes: list[Change], options: ReloadOptions, *,
            status: str = "hot_reloaded", fresh: bool = False, rerun: Iterable[str] = (),
            parallel: bool = False, timeout: float | None = None) -> list[ReloadResult]:
    """Run one transaction; return a result per changed module (see module doc).

    ``rerun`` names modules re-executed at their current version without
    recording one; ``parallel`` runs the bodies of modules of one dependency
    level side by side, each level bounded by ``timeout`` seconds.
    """
    started = time.perf_counter()
    with state.lock:
        code_for: dict[str, Artifact] = {}
        for name in state.modules:
            code_for[name] = state.histories[name].current_record().artifact
        changed = {c.module for c in changes}
        for c in changes:
            code_for[c.module] = c.artifact
        graph = graph_of({m: a.imports for m, a in code_for.items()})
        order = topological_order(graph)
        if fresh:
            run = set(code_for)
            cascade: set[str] = set()
        else:
            cascade = (dependents_of(graph, changed) & set(state.modules)
                       if options.coordinate_dependencies else set())
            run = changed | cascade | set(rerun)
        run_order = [m for m in order if m in run]

        staged: dict[str, types.ModuleType] = {}
        saved_sys: dict[str, types.ModuleType | None] = {}
        reals: dict[str, types.ModuleType] = {}
        participants: list[Any] = []
        committed = False
        patcher: Patcher | None = None
        state.install_overlay(staged)
        try:
            for group in (_levels(run_order, graph) if parallel else [[m] for m in run_order]):
                for m in group:
                    art = code_for[m]
                    register_source(art)
                    smod = state.new_module(m, art)
                    staged[m] = smod
                    saved_sys.setdefault(smod.__name__, sys.modules.get(smod.__name__))
                    sys.modules[smod.__name__] = smod
                if len(group) == 1:
                    _run_body(state, group[0], code_for[group[0]], staged[group[0]])
                else:
                    _run_level(state, group, code_for, staged, timeout)
            for m in run_order:
                existing = None if fresh else state.modules.get(m)
                reals[m] = existing if existing is not None else state.new_module(m, code_for[m])
            patcher = Patcher({id(staged[m].__dict__): reals[m].__dict__ for m in run_order},
                              {id(staged[m]): reals[m] for m in run_order},
                              [reals[m].__dict__ for m in run_order])
            for m in run_order:
                patcher.pair_module(reals[m].__dict__, staged[m].__dict__, reals[m].__name__)
            patcher.check_classes()
            if not fresh:
                for factory in PARTICIPANTS:
                    participants.append(factory(state, patcher, run_order, changes, options))
                for p in participants:
                    p.before_commit()
            try:
                patcher.commit([(reals[m].__dict__, staged[m].__dict__) for m in run_order])
            except SandboxError:
                raise
            except Exception as exc:
                raise ReloadError(f"patching old objects failed ({type(exc).__name__}: {exc}); "
                                  "every change was undone", step="patch",
                                  module=", ".join(run_order)) from exc
            committed = True
            migrated = sum(p.after_commit() for p in participants)
        except BaseException:
            if committed and patcher is not None:
                patcher.revert()
            for p in reversed(participants):
                p.rollback()
            for full, prev in saved_sys.items():
                if prev is None:
                    sys.modules.pop(full, None)
                else:
                    sys.modules[full] = prev
            state.clear_overlay()
            raise
        finally:
            for p in participants:
                p.finish()
        state.clear_overlay()
        for m in run_order:
            reals[m].__file__ = code_for[m].filename
            reals[m].__spec__ = state.spec(m, code_for[m])
            state.register_module(m, reals[m], code_for[m])

        results = []
        notes = tuple(patcher.notes) if patcher else ()
        deps = tuple(m for m in run_order if m not in changed)
        duration = time.perf_counter() - started
        for c in changes:
            h = state.histories.setdefault(c.module, ModuleHistory(c.module))
            old = h.current
            if c.action == "rerun":
                results.append(ReloadResult(status, c.module, old, old, migrated, deps,
                                            duration, notes))
                continue
            if c.action == "new":
                h.add(c.artifact, options.handler_name)
            elif c.action == "activate":
                assert c.version is not None
                h.activate(c.version)
            else:
                h.move(c.delta)
            h.retain(state.max_versions)
            state.hold_sources(h)   # linecache keeps retained versions only
            state.store.save(state.id, h)
            results.append(ReloadResult(status, c.module, old, h.current, migrated, deps,
                                        duration, notes))
        return results


def plan_change(state: SandboxState, artifact: Artifact) -> Change | None:
    """New version, re-activation of an identical retained version, or None (no change)."""
    h = state.histories.get(artifact.module)
    if h is not None and h.current is not None:
        loaded = artifact.module in state.modules
        if loaded and h.current_record().checksum == artifact.checksum:
            return None
        same = h.find_checksum(artifact.checksum)
        if same is not None:   # also after a restart: load the stored version, no duplicate
            return Change(artifact.module, artifact, "activate", version=same)
    return Change(artifact.module, artifact, "new")


def no_change(state: SandboxState, module: str, started: float) -> ReloadResult:
    v = state.histories[module].current
    return ReloadResult("no_change", module, v, v, duration=time.perf_counter() - started)


def combine(results: list[ReloadResult], started: float) -> ReloadResult:
    """One result standing for a multi-module transaction."""
    changed = [r for r in results if r.status != "no_change"]
    status = changed[0].status if changed else "no_change"
    deps = tuple(dict.fromkeys(d for r in results for d in r.dependents))
    notes = tuple(dict.fromkeys(n for r in results for n in r.notes))
    return ReloadResult(status, ", ".join(r.module for r in results), None, None,
                        max((r.migrated for r in results), default=0), deps,
                        time.perf_counter() - started, notes, tuple(results))
