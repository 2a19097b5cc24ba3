"""The reload transaction: stage, pair, commit (or revert), then record versions.

One transaction covers every module it touches: the modules being changed and,
when dependencies are coordinated, the sandbox modules that import them.  Their
bodies run first into staging namespaces while the old version keeps running;
only when every body ran and every live-state step succeeded are old objects
patched, and only then is a version recorded.  Any failure leaves modules,
objects and history exactly as they were and names the step that failed.
"""

from __future__ import annotations

import itertools
import logging
import sys
import time
import traceback
import types
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import CallsInFlight, CircularDependencyError, ReloadError, SandboxError
from . import importtime
from .artifact import Artifact
from .deps import DEFERRED, find_cycles, graph_of, load_order, resolve_import
from .impact import cascade
from .inplace import InPlace
from .inplace import plan as plan_in_place
from .interrupts import InterruptGuard, user_code
from .layout import packages_of
from .patch import Patcher
from .sandbox import SandboxState, register_source, retire
from .tracking import adopt_namespace
from .versions import ModuleHistory

StateHandler = Callable[[Any, int, int], Any]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReloadResult:
    """Outcome of a reload, rollback, undo or redo.

    ``status`` is ``"hot_reloaded"`` (a new version), ``"reactivated"`` (the code is
    that of a stored version, which is current again: ``new_version`` is its number),
    ``"rolled_back"`` (rollback, undo, redo) or ``"no_change"``;
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
    #: Hosts that run a sandbox in several processes: per engine, its outcome and time.
    engines: tuple[dict[str, Any], ...] = field(default=(), repr=False)

    @property
    def ok(self) -> bool:
        return self.status in ("hot_reloaded", "reactivated", "no_change", "rolled_back")


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
    #: Run on the new code before the version is recorded: a callable taking the
    #: sandbox handle, or an expression evaluated among the sandbox's names;
    #: ``False`` or an exception refuses the reload (step ``"check"``).
    check: Callable[[Any], Any] | str | None = None
    #: A dry run (engine.dryrun): the state handler gets deep copies of the live
    #: states, so that nothing it does in place reaches a live object.
    isolate_states: bool = False


class ReloadParticipant(Protocol):
    """Something that joins every reload transaction (live state does).

    The two-phase hooks, in the order a transaction calls them:
    ``before_commit`` prepares everything without changing anything visible
    (suspend servers, capture and migrate states); ``commit_ops`` returns
    C-level callables run in the same loop as the code switch (so no other
    thread sees code and state out of step); ``after_commit`` finishes what
    needs the new code and returns how many objects were migrated;
    ``rollback`` undoes whatever ran if any later step fails; ``finish``
    always runs last (resume servers, release waiting threads).  ``guard_ops``
    returns C-level checks run first in that loop: one that raises refuses the
    commit before anything changed.
    """

    def before_commit(self) -> None: ...
    def guard_ops(self) -> list[Callable[[], Any]]: ...
    def commit_ops(self) -> list[Callable[[], Any]]: ...
    def after_commit(self) -> int: ...
    def rollback(self) -> None: ...
    def finish(self) -> None: ...


#: Called as ``factory(state, patcher, run_order, changes, options)`` for every
#: reload; each returns a :class:`ReloadParticipant`.
ParticipantFactory = Callable[[SandboxState, Patcher, list[str], list[Change], ReloadOptions],
                              ReloadParticipant]
PARTICIPANTS: list[ParticipantFactory] = []

#: When each live sandbox module's body last ran (a serial per transaction): an edit
#: applied in place keeps what the body computed, which is only what running it
#: again would compute if nothing it imports ran again since.
RAN: weakref.WeakKeyDictionary[types.ModuleType, int] = weakref.WeakKeyDictionary()
_SERIAL = itertools.count(1)


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


def _run_body(state: SandboxState, m: str, art: Artifact, smod: types.ModuleType,
              running: dict[str, types.ModuleType] | None = None) -> None:
    try:
        with user_code(), importtime.recording(smod):
            art.run(smod.__dict__)
    except CircularDependencyError:
        raise
    except (Exception, SystemExit) as exc:
        cycle = _partial_use(exc, running or {})
        if cycle is not None:
            raise CircularDependencyError(cycle, (
                f"circular import between sandbox modules: {' -> '.join(cycle)}; module "
                f"{m!r} used {getattr(exc, 'name', '?')!r} of {cycle[0]!r} while "
                f"{cycle[0]!r} was still running (Python cannot run this either); move "
                "the shared code into a module that both import")) from exc
        raise _body_error(exc, m, art) from exc
    adopt_namespace(smod.__dict__)


def _partial_use(exc: BaseException, running: dict[str, types.ModuleType]) -> list[str] | None:
    """The import cycle behind an AttributeError on a module whose body is still running."""
    obj = getattr(exc, "obj", None) if isinstance(exc, AttributeError) else None
    if obj is None or not isinstance(obj, types.ModuleType):
        return None
    names = list(running)
    for i, name in enumerate(names):
        if running[name] is obj:
            return names[i:] + [name]
    return None


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
        with user_code():
            _, pending = wait(futures, timeout=timeout)
        if pending:
            late = ", ".join(sorted(futures[f] for f in pending))
            raise ReloadError(f"module bodies of {late} did not finish within {timeout} s; "
                              "nothing was changed", step="execute", module=late)
        for f in futures:   # input order: the same error every time
            f.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


class Transaction:
    """One reload, as named steps: plan, stage, pair, prepare, commit, record, finish.

    Every step before :meth:`commit` leaves the running program untouched;
    :meth:`commit` switches code (and migrated state) in one C-level loop;
    :meth:`record` writes the versions.  :meth:`rollback` undoes whatever
    ran, in reverse order, whichever step failed and however (an error, a
    ``KeyboardInterrupt``, a ``SystemExit``).
    """

    def __init__(self, state: SandboxState, changes: list[Change], options: ReloadOptions, *,
                 fresh: bool, rerun: Iterable[str]) -> None:
        self.state = state
        self.changes = changes
        self.options = options
        self.fresh = fresh
        self.rerun = set(rerun)
        self.staged: dict[str, types.ModuleType] = {}
        self.saved_sys: dict[str, None] = {}
        self.reals: dict[str, types.ModuleType] = {}
        self.participants: list[ReloadParticipant] = []
        self.patcher: Patcher | InPlace | None = None
        #: Set when the change is inside function bodies only (see ``engine.inplace``).
        self.in_place: InPlace | None = None
        self.committed = False
        self.registered: dict[str, tuple[types.ModuleType | None, frozenset[str] | None,
                                         Artifact | None]] = {}
        self.histories: dict[str, tuple[ModuleHistory | None, Any]] = {}
        self.old_versions: dict[str, int | None] = {}
        self.notes: list[str] = []       # what a host that ran the bodies elsewhere reported
        self.saved_store: list[ModuleHistory] = []
        self.store_note = ""
        self.migrated = 0
        self.packages: frozenset[str] = frozenset()

    # ------------------------------------------------------------------- steps
    def plan(self) -> None:
        state = self.state
        self.code_for = {name: state.histories[name].current_record().artifact
                         for name in state.modules}
        self.changed = {c.module for c in self.changes}
        for c in self.changes:
            self.code_for[c.module] = c.artifact
        self.graph = graph_of({m: a.imports for m, a in self.code_for.items()})
        self.packages = packages_of(list(self.code_for))
        if not self.fresh and not self.rerun and len(self.changes) == 1 \
                and self.options.state_handler is None and self.options.check is None:
            change = self.changes[0]
            self.in_place = self._plan_in_place(change)
            if self.in_place is not None:
                change.artifact = self.code_for[change.module] = self.in_place.artifact
                self.run_order = [change.module]
                return
        order = load_order(self.graph)
        if self.fresh:
            run = set(self.code_for)
        else:
            cascade = (self._cascade() & set(state.modules)
                       if self.options.coordinate_dependencies else set())
            run = self.changed | cascade | self.rerun
        self.run_order = [m for m in order if m in run]

    def _plan_in_place(self, change: Change) -> InPlace | None:
        """The change applied to the live objects without running any body, when it
        is inside function bodies that no import-time code reaches."""
        state, m = self.state, change.module
        real, running = state.modules.get(m), state.live.get(m)
        if real is None or running is None or change.action == "rerun":
            return None
        if any(p.alive and p.cls.__module__ == real.__name__ for p in state.servers):
            log.debug("%s: a full reload (its servers' code_change runs)", m)
            return None
        if self._inputs_ran_since(m, real, running):
            log.debug("%s: a full reload (a module it imports ran again since)", m)
            return None
        mods = list(state.modules.values())
        return plan_in_place(m, real.__name__, real.__dict__, running, change.artifact,
                             {n: a.source for n, a in self.code_for.items()}, self.graph,
                             self.packages, self.options.coordinate_dependencies,
                             lambda codes: importtime.called(codes, mods))

    def _cascade(self) -> set[str]:
        """Importers that must run again: those whose import-time code can see the
        change (``engine.impact``); the others keep working with the patched objects."""
        state = self.state
        old = {m: state.histories[m].current_record().source for m in self.changed
               if m in state.modules and state.histories.get(m) is not None
               and state.histories[m].current is not None}
        return cascade(self.graph, {m: a.source for m, a in self.code_for.items()}, old,
                       self.changed, packages_of(list(self.code_for)))

    def _inputs_ran_since(self, m: str, real: types.ModuleType, running: Artifact) -> bool:
        """Whether a module that ``m``'s body imports (in this sandbox or not) ran
        again since ``m``'s body last ran (its values may be others now)."""
        mine = RAN.get(real)
        if mine is None:
            return True
        state = self.state
        for spec in running.imports:
            if spec.startswith(DEFERRED):
                continue        # imported inside a function: nothing the body kept
            target = resolve_import(spec, m, self.packages)
            if target is None:
                return True
            mod = state.modules.get(target) or sys.modules.get(target)
            if mod is not None and RAN.get(mod, 0) > mine:
                return True
        return False

    def stage(self, parallel: bool, timeout: float | None) -> None:
        """Run the new bodies into staging modules; the old version keeps running.

        Bodies run in dependency order; a body that imports a module of this
        reload whose body has not run yet runs that body first, as Python's
        import does (so packages, whose ``__init__`` runs before their
        submodules, and import cycles that Python can run, load here too).
        """
        state = self.state
        if self.in_place is not None:
            return          # no body runs
        self.pending = dict.fromkeys(self.run_order)
        self.running: dict[str, types.ModuleType] = {}
        state.install_overlay(self.staged, self.pending, self._pull, self.running)
        if parallel and not find_cycles(self.graph):
            for group in _levels(self.run_order, self.graph):
                for m in group:
                    self._prepare(m)
                if len(group) == 1:
                    _run_body(state, group[0], self.code_for[group[0]], self.staged[group[0]])
                else:
                    _run_level(state, group, self.code_for, self.staged, timeout)
            return
        for m in self.run_order:
            if m in self.pending:
                self._pull(m)

    def _prepare(self, m: str) -> types.ModuleType:
        """The staging module of ``m`` (its body not run yet)."""
        self.pending.pop(m, None)
        art = self.code_for[m]
        register_source(art, self.state.id)
        smod = self.state.new_module(m, art, self.packages)
        self.staged[m] = smod
        if sys.modules.get(smod.__name__) is None:
            # A module's first load: importers by full name find it while it runs.
            # An existing module stays in sys.modules as it is, so other threads
            # (pickle, importers) never see a half-built one.
            self.saved_sys.setdefault(smod.__name__, None)
            sys.modules[smod.__name__] = smod
        return smod

    def _pull(self, m: str) -> types.ModuleType:
        """Run ``m``'s body now (its package's first), unless it ran or is running."""
        parent = m.rpartition(".")[0]
        if parent in self.pending:
            self._pull(parent)
        if m in self.staged:
            return self.staged[m]
        smod = self._prepare(m)
        self.running[m] = smod
        try:
            _run_body(self.state, m, self.code_for[m], smod, self.running)
        finally:
            self.running.pop(m, None)
        return smod

    def pair(self) -> None:
        state, run_order = self.state, self.run_order
        if self.in_place is not None:
            (m,) = run_order
            self.reals[m] = state.modules[m]
            register_source(self.code_for[m], state.id)
            self.patcher = self.in_place
            return
        for m in run_order:
            existing = None if self.fresh else state.modules.get(m)
            self.reals[m] = (existing if existing is not None
                             else state.new_module(m, self.code_for[m], self.packages))
        staged, reals = self.staged, self.reals
        self.patcher = Patcher({id(staged[m].__dict__): reals[m].__dict__ for m in run_order},
                               {id(staged[m]): reals[m] for m in run_order},
                               [reals[m].__dict__ for m in run_order],
                               [staged[m].__dict__ for m in run_order])
        for m in run_order:
            self.patcher.pair_module(reals[m].__dict__, staged[m].__dict__, reals[m].__name__)
        self.patcher.check_classes()

    def prepare(self) -> None:
        """Live state joins: servers suspended, states captured and migrated (not applied)."""
        if self.fresh or self.in_place is not None:
            return          # in place: no state, server or class changes (see plan)
        assert isinstance(self.patcher, Patcher)
        for factory in PARTICIPANTS:
            self.participants.append(factory(self.state, self.patcher, self.run_order,
                                             self.changes, self.options))
        for p in self.participants:
            p.before_commit()

    def commit(self) -> None:
        assert self.patcher is not None
        participants = self.participants

        def extra_ops() -> list[Callable[[], Any]]:
            return [op for p in participants for op in p.commit_ops()]
        try:
            self.patcher.commit([(self.reals[m].__dict__, self.staged[m].__dict__)
                                 for m in self.run_order if m in self.staged], extra_ops,
                                [op for p in participants for op in p.guard_ops()])
        except SandboxError:
            raise
        except Exception as exc:
            raise ReloadError(f"patching old objects failed ({type(exc).__name__}: {exc}); "
                              "every change was undone", step="patch",
                              module=", ".join(self.run_order)) from exc
        self.committed = True
        self.migrated = sum(p.after_commit() for p in participants)
        state = self.state
        for m in self.run_order:
            real = self.reals[m]
            self.registered[m] = (state.modules.get(m), state.defined.get(m),
                                  state.live.get(m))
            real.__file__ = state.file_of(m, self.code_for[m])
            real.__spec__ = state.spec(m, self.code_for[m], m in self.packages)
            state.register_module(m, real, self.code_for[m])

    def run_check(self) -> None:
        """The user's check, on the staged new version, before the switch: the checking
        thread sees the new modules (and what they define) in place of the live ones;
        no other thread reaches them, so none runs code that the check refuses."""
        check = self.options.check
        if check is None:
            return
        modules = ", ".join(self.run_order)
        state = self.state
        state.show_staged(self.staged, {m: self.code_for[m].defines for m in self.staged})
        try:
            with user_code():
                if isinstance(check, str):
                    names = dict(state.scratch)
                    names.update(state.visible_names())
                    ok = eval(compile(check, "<sandbox check>", "eval"), names)
                else:
                    ok = check(state.handle)
        except (Exception, SystemExit) as exc:
            raise ReloadError(f"the check raised {type(exc).__name__}: {exc}; the reload was "
                              "refused and the previous version keeps running", step="check",
                              module=modules) from exc
        finally:
            state.hide_staged()
        if ok is False:
            what = check if isinstance(check, str) else getattr(check, "__name__", "check")
            raise ReloadError(f"the check {what!s} returned False on the new code; the reload "
                              "was refused and the previous version keeps running",
                              step="check", module=modules)

    def ran_elsewhere(self, run_order: list[str], migrated: int, notes: list[str]) -> None:
        """What another process reported for this transaction (a host's child or engines),
        so that :meth:`record` and :meth:`results` can follow here."""
        self.run_order = run_order
        self.changed = {c.module for c in self.changes}
        self.migrated = migrated
        self.notes = notes

    def record(self) -> None:
        """Write the versions: in memory first (undoable), then to the store."""
        state = self.state
        for c in self.changes:
            h = state.histories.get(c.module)
            self.old_versions.setdefault(c.module, h.current if h is not None else None)
            if c.action == "rerun" or c.module in self.histories:
                continue
            self.histories[c.module] = (h, h.snapshot() if h is not None else None)
            if h is None:
                h = state.histories[c.module] = ModuleHistory(c.module)
            if c.action == "new":
                h.add(c.artifact, self.options.handler_name)
            elif c.action == "activate":
                assert c.version is not None
                h.activate(c.version)
            else:
                h.move(c.delta)
            h.retain(state.max_versions)
            state.hold_sources(h)   # linecache keeps retained versions only
        for c in self.changes:
            if c.action != "rerun":
                h = state.histories[c.module]
                self.saved_store.append(h)
                state.store.save(state.id, h, scope=state.scope)
        if not getattr(state.store, "saved_to_disk", True):
            why = getattr(state.store, "failure", None) or "the history store cannot be written"
            self.store_note = (f"not saved to disk: {why}; kept in memory and written when "
                               "the store can be written again")

    def results(self, status: str, started: float) -> list[ReloadResult]:
        notes = tuple(self.patcher.notes) if self.patcher else tuple(self.notes)
        if self.store_note:
            notes += (self.store_note,)
        deps = tuple(m for m in self.run_order if m not in self.changed)
        duration = time.perf_counter() - started
        out = []
        for c in self.changes:
            h = self.state.histories[c.module]
            # code identical to a stored version: that version is current again
            says = "reactivated" if status == "hot_reloaded" and c.action == "activate" \
                else status
            out.append(ReloadResult(says, c.module, self.old_versions.get(c.module),
                                    h.current, self.migrated, deps,
                                    duration, notes))
        return out

    def rollback(self) -> None:
        """Undo every step that ran, newest first; never raises."""
        state = self.state
        for m, (h, snap) in self.histories.items():
            if h is None:
                state.histories.pop(m, None)
            else:
                h.restore(snap)
                state.hold_sources(h)
        for h in self.saved_store:
            try:
                state.store.save(state.id, state.histories.get(h.module, h), scope=state.scope)
            except Exception:   # the store said why when it failed; memory is right
                log.exception("could not write back the history of %s", h.module)
        for m, (mod, defined, running) in self.registered.items():
            state.unregister_module(m, mod, defined, running)
        if self.patcher is not None:
            self.patcher.revert()       # nothing to undo unless its commit ran
        for p in reversed(self.participants):
            try:
                p.rollback()
            except Exception:
                log.exception("rolling back live state failed")
        for full in self.saved_sys:     # first loads only: nothing was there before
            sys.modules.pop(full, None)
        state.clear_overlay()

    def finish(self, ok: bool) -> None:
        for p in self.participants:
            try:
                p.finish()
            except Exception:
                log.exception("resuming live state failed")
        self.state.clear_overlay()
        if ok and self.in_place is None:
            serial = next(_SERIAL)
            for m in self.run_order:
                real = self.reals.get(m)
                if real is not None:
                    RAN[real] = serial
                    importtime.adopt(self.staged.get(m), real)
        if ok and self.patcher is not None:
            # The version is live and recorded: a failure from here on is reported
            # in the result's notes, never raised as if the reload had failed, and
            # every later release step still runs.
            try:
                self.patcher.finish()
            except Exception as exc:
                log.exception("releasing the staging namespaces failed")
                self.patcher.notes.append(f"releasing the staging namespaces failed after "
                                          f"the reload took effect ({type(exc).__name__}: "
                                          f"{exc}); the new version is live and recorded")
            for m in self.run_order:
                try:
                    retire(self.staged.get(m), self.reals.get(m))
                except Exception as exc:
                    log.exception("retiring the staging module of %s failed", m)
                    self.patcher.notes.append(f"{m}: retiring its staging module failed "
                                              f"({type(exc).__name__}: {exc})")


def execute(state: SandboxState, changes: list[Change], options: ReloadOptions, *,
            status: str = "hot_reloaded", fresh: bool = False, rerun: Iterable[str] = (),
            parallel: bool = False, timeout: float | None = None) -> list[ReloadResult]:
    """Run one transaction; return a result per changed module (see module doc).

    ``rerun`` names modules re-executed at their current version without
    recording one; ``parallel`` runs the bodies of modules of one dependency
    level side by side, each level bounded by ``timeout`` seconds.
    """
    started = time.perf_counter()
    deadline = time.monotonic() + options.suspend_timeout
    while True:
        try:
            return _execute_once(state, changes, options, status, fresh, rerun, parallel,
                                 timeout, started)
        except CallsInFlight:
            # a call of old code began just as the gate closed: everything was
            # undone; once it returns the reload is tried again (bounded)
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.0005)


def _execute_once(state: SandboxState, changes: list[Change], options: ReloadOptions,
                  status: str, fresh: bool, rerun: Iterable[str], parallel: bool,
                  timeout: float | None, started: float) -> list[ReloadResult]:
    with state.lock, InterruptGuard() as guard:
        tx = Transaction(state, changes, options, fresh=fresh, rerun=rerun)
        ok = False
        try:
            tx.plan()
            tx.stage(parallel, timeout)
            tx.pair()
            tx.prepare()
            tx.run_check()
            guard.checkpoint()        # an interrupt so far refuses the reload
            tx.commit()
            tx.record()
            ok = True
        except BaseException:
            tx.rollback()
            raise
        finally:
            tx.finish(ok)
        return tx.results(status, started)


class TwoPhase:
    """One transaction split into prepare / commit / end, for coordinators of many processes.

    :meth:`prepare` runs every step up to the commit (bodies run, objects paired,
    states migrated, servers suspended) and keeps the sandbox locked;
    :meth:`commit` switches code and state and records the version; :meth:`end`
    finishes, rolling back whatever ran unless the whole group committed.  A
    cluster host calls them on every engine in turn, so that no engine commits
    before all are prepared, and committed engines can still roll back.
    """

    def __init__(self, state: SandboxState, changes: list[Change], options: ReloadOptions,
                 *, fresh: bool = False) -> None:
        self.tx = Transaction(state, changes, options, fresh=fresh, rerun=())
        self.state = state
        self.started = time.perf_counter()
        self.open = False

    def prepare(self) -> None:
        self.state.lock.acquire()
        self.open = True
        try:
            self.tx.plan()
            self.tx.stage(False, None)
            self.tx.pair()
            self.tx.prepare()
            self.tx.run_check()
        except BaseException:
            self.end(False)
            raise

    def commit(self) -> list[ReloadResult]:
        try:
            self.tx.commit()
            self.tx.record()
        except BaseException:
            self.end(False)
            raise
        return self.tx.results("hot_reloaded", self.started)

    def end(self, ok: bool) -> None:
        if not self.open:
            return
        self.open = False
        try:
            if not ok:
                self.tx.rollback()
            self.tx.finish(ok)
        finally:
            self.state.lock.release()


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
