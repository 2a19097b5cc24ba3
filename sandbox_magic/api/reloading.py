"""Every way code changes: reloads, batches of modules, rollback, undo, redo."""

from __future__ import annotations

import functools
import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar, overload

from ..engine.artifact import Artifact, CompileInfo, compile_artifact
from ..engine.dryrun import DryRun
from ..engine.layout import path_to_module
from ..engine.reload import (
    Change,
    ReloadOptions,
    ReloadResult,
    StateHandler,
    combine,
    no_change,
    plan_change,
)
from ..errors import (
    CompileError,
    ReloadError,
    SandboxError,
)
from .events import emit
from .registry import get_host, get_state

_F = TypeVar("_F", bound=Callable[..., Any])
_calls = threading.local()


def _reports_failures(fn: _F) -> _F:
    """A reload that is refused (syntax error, body, state handler, check) is announced.

    The ``reload_failed`` event lets the panels list the failed attempt whatever
    made it: a cell, a file watch or a plain API call.  Only the outermost entry
    point of a thread announces it (``hot_reload_source`` calls ``hot_reload``).
    """
    @functools.wraps(fn)
    def wrapper(sandbox_id: str, *args: Any, **kwargs: Any) -> Any:
        depth = getattr(_calls, "depth", 0)
        _calls.depth = depth + 1
        try:
            return fn(sandbox_id, *args, **kwargs)
        except (ReloadError, CompileError) as exc:
            if depth == 0 and not kwargs.get("dry_run"):    # a dry run tries nothing
                _announce(fn.__name__, sandbox_id, exc, args, kwargs)
            raise
        finally:
            _calls.depth = depth
    return wrapper  # type: ignore[return-value]


def _announce(entry: str, sandbox_id: str, exc: SandboxError, args: tuple[Any, ...],
              kwargs: dict[str, Any]) -> None:
    module = getattr(exc, "module", None) or kwargs.get("module")
    first = args[0] if args else kwargs.get("source", kwargs.get("artifact"))
    if module is None and entry == "hot_reload_source":
        if isinstance(first, Mapping) and first:
            module = sorted(first)[0]
        elif len(args) > 1:
            module = args[1]
    elif module is None and entry == "rollback_module":
        module = first
    elif module is None and isinstance(first, Artifact):
        module = first.module
    if isinstance(module, str):
        emit("reload_failed", sandbox_id, module=module, message=str(exc))


_transactions = itertools.count(1)


def _change(opts: ReloadOptions, modules: list[str]) -> dict[str, Any]:
    """What the events of one change say besides each module's version: the change's
    number (one per transaction, shared by its modules' events), all its modules, and
    the state handler and check it ran (a published history sends them along)."""
    return {"transaction": next(_transactions), "modules": modules,
            "state_handler": opts.state_handler, "check": opts.check}


def _options(state_handler: StateHandler | None, use_state_preservation: bool,
             coordinate_dependencies: bool, suspend_timeout: float,
             check: Callable[[Any], Any] | str | None = None) -> ReloadOptions:
    if state_handler is not None and not callable(state_handler):
        raise SandboxError(f"state_handler must be callable(old_state, old_version, "
                           f"new_version), got {type(state_handler).__name__}")
    if not isinstance(suspend_timeout, (int, float)) or suspend_timeout < 0:
        raise SandboxError(f"suspend_timeout must be a number of seconds >= 0, "
                           f"got {suspend_timeout!r}")
    if state_handler is not None and not use_state_preservation:
        raise SandboxError("state_handler needs use_state_preservation=True: without state "
                           "preservation live objects keep their state as it is")
    name = None
    if state_handler is not None:
        name = getattr(state_handler, "__name__", None) or repr(state_handler)
    if check is not None and not (callable(check) or isinstance(check, str)):
        raise SandboxError(f"check must be a callable taking the sandbox, or an expression; "
                           f"got {type(check).__name__}")
    return ReloadOptions(state_handler, name, use_state_preservation, coordinate_dependencies,
                         float(suspend_timeout), check)


@overload
def hot_reload(sandbox_id: str, artifact: Artifact | bytes | CompileInfo, *,
               state_handler: StateHandler | None = ..., use_state_preservation: bool = ...,
               coordinate_dependencies: bool = ..., suspend_timeout: float = ...,
               check: Callable[[Any], Any] | str | None = ...,
    dry_run: Literal[False] = ...) -> ReloadResult: ...


@overload
def hot_reload(sandbox_id: str, artifact: Artifact | bytes | CompileInfo, *,
               state_handler: StateHandler | None = ..., use_state_preservation: bool = ...,
               coordinate_dependencies: bool = ..., suspend_timeout: float = ...,
               check: Callable[[Any], Any] | str | None = ...,
    dry_run: Literal[True]) -> DryRun: ...


@overload
def hot_reload(sandbox_id: str, artifact: Artifact | bytes | CompileInfo, *,
               state_handler: StateHandler | None = ..., use_state_preservation: bool = ...,
               coordinate_dependencies: bool = ..., suspend_timeout: float = ...,
               check: Callable[[Any], Any] | str | None = ...,
    dry_run: bool) -> ReloadResult | DryRun: ...


@_reports_failures
def hot_reload(sandbox_id: str, artifact: Artifact | bytes | CompileInfo, *,
               state_handler: StateHandler | None = None, use_state_preservation: bool = True,
               coordinate_dependencies: bool = True, suspend_timeout: float = 5.0,
               check: Callable[[Any], Any] | str | None = None,
               dry_run: bool = False) -> ReloadResult | DryRun:
    """Load compiled code into a sandbox, in place, as a new version.

    ``artifact`` is an :class:`Artifact`, its bytes, or a :class:`CompileInfo`
    (what ``compile_source``, ``compile_file`` and ``compile_sandbox`` return):
    all of its artifacts are loaded as one transaction, in dependency order,
    like a ``{module: source}`` dict given to :func:`hot_reload_source`.
    A module the sandbox does not have yet is added as version 1.  Code identical
    to the current version gives ``"no_change"``; code identical to an older
    retained version re-activates that version instead of recording a duplicate.
    ``check`` (a callable taking the sandbox handle, or an expression among its
    names) runs on the new code before the version is recorded; ``False`` or an
    exception refuses the reload (``ReloadError`` with ``step="check"``) and
    everything is as before.

    ``dry_run=True`` does everything up to the switch (compile, module bodies in
    staging, pairing, the state handler on copies of the states, the check) and then
    undoes it as for a refused reload: it returns a :class:`DryRun` saying what the
    reload would change, migrate, suspend and re-run, or why it would be refused.
    """
    started = time.perf_counter()
    opts = _options(state_handler, use_state_preservation, coordinate_dependencies,
                    suspend_timeout, check)
    if isinstance(artifact, CompileInfo) and len(artifact.artifacts) != 1:
        get_state(sandbox_id)
        return _load_many(sandbox_id, artifact.artifacts, opts, started, dry_run)
    art = Artifact.coerce(artifact)
    st = get_state(sandbox_id)
    with st.lock:
        change = plan_change(st, art)
        if change is None:
            return _unchanged(st, [art.module], started) if dry_run \
                else no_change(st, art.module, started)
        if dry_run:
            found: DryRun = get_host(st.id).dry_run([change], opts)
            return found
        status = "hot_reloaded" if change.action == "new" else "reactivated"
        (result,) = get_host(st.id).execute([change], opts, status=status)
    emit("reloaded", sandbox_id, module=art.module, version=result.new_version,
         status=result.status, **_change(opts, [art.module]))
    return result


@overload
def hot_reload_source(sandbox_id: str, source: str | Mapping[str, str],
                      module: str | None = ..., *, state_handler: StateHandler | None = ...,
                      use_state_preservation: bool = ..., coordinate_dependencies: bool = ...,
                      suspend_timeout: float = ...,
                      check: Callable[[Any], Any] | str | None = ...,
    dry_run: Literal[False] = ...) -> ReloadResult: ...


@overload
def hot_reload_source(sandbox_id: str, source: str | Mapping[str, str],
                      module: str | None = ..., *, state_handler: StateHandler | None = ...,
                      use_state_preservation: bool = ..., coordinate_dependencies: bool = ...,
                      suspend_timeout: float = ...,
                      check: Callable[[Any], Any] | str | None = ...,
    dry_run: Literal[True]) -> DryRun: ...


@overload
def hot_reload_source(sandbox_id: str, source: str | Mapping[str, str],
                      module: str | None = ..., *, state_handler: StateHandler | None = ...,
                      use_state_preservation: bool = ..., coordinate_dependencies: bool = ...,
                      suspend_timeout: float = ...,
                      check: Callable[[Any], Any] | str | None = ...,
    dry_run: bool) -> ReloadResult | DryRun: ...


@_reports_failures
def hot_reload_source(sandbox_id: str, source: str | Mapping[str, str],
                      module: str | None = None, *, state_handler: StateHandler | None = None,
                      use_state_preservation: bool = True, coordinate_dependencies: bool = True,
                      suspend_timeout: float = 5.0,
                      check: Callable[[Any], Any] | str | None = None,
                      dry_run: bool = False) -> ReloadResult | DryRun:
    """Compile and load source; a ``{module: source}`` dict loads as one transaction.

    ``check`` and ``dry_run`` as for :func:`hot_reload`.
    """
    if isinstance(source, Mapping):
        if module is not None:
            raise SandboxError("pass module= only with a single source string")
        return _reload_many(sandbox_id, source, state_handler, use_state_preservation,
                            coordinate_dependencies, suspend_timeout, check, dry_run)
    get_state(sandbox_id)
    art = compile_artifact(source, module)
    return hot_reload(sandbox_id, art, state_handler=state_handler,
                      use_state_preservation=use_state_preservation,
                      coordinate_dependencies=coordinate_dependencies,
                      suspend_timeout=suspend_timeout, check=check, dry_run=dry_run)


def _reload_many(sandbox_id: str, sources: Mapping[str, str], state_handler: Any,
                 use_state_preservation: bool, coordinate_dependencies: bool,
                 suspend_timeout: float, check: Any = None, dry_run: bool = False
                 ) -> ReloadResult | DryRun:
    started = time.perf_counter()
    get_state(sandbox_id)
    if not sources:
        raise SandboxError("the source dict is empty; give {module_name: source}")
    opts = _options(state_handler, use_state_preservation, coordinate_dependencies,
                    suspend_timeout, check)
    arts = [compile_artifact(src, _dict_key_module(name)) for name, src in sources.items()]
    return _load_many(sandbox_id, arts, opts, started, dry_run)


def _dict_key_module(key: str) -> str:
    """A source dict's key: a dotted module name, or a path (``pkg/__init__.py``)."""
    if isinstance(key, str) and key.endswith(".py"):
        name = path_to_module(key)
        if name is None:
            raise SandboxError(f"{key!r} is not a module's path; use names like "
                               "'pkg/__init__.py', 'pkg/util.py' or dotted names like 'pkg.util'")
        return name
    return key


def _load_many(sandbox_id: str, arts: list[Artifact], opts: ReloadOptions,
               started: float, dry_run: bool = False) -> ReloadResult | DryRun:
    """Load several modules' artifacts as one transaction."""
    st = get_state(sandbox_id)
    if not arts:
        raise SandboxError("nothing to load: the CompileInfo holds no artifact")
    twice = sorted(m for m, n in Counter(a.module for a in arts).items() if n > 1)
    if twice:
        raise SandboxError(f"module {twice[0]!r} is given twice; load one artifact per module")
    with st.lock:
        changes, unchanged = [], []
        for art in arts:
            ch = plan_change(st, art)
            (changes.append(ch) if ch is not None else unchanged.append(art.module))
        if dry_run:
            if not changes:
                return _unchanged(st, unchanged, started)
            found: DryRun = get_host(st.id).dry_run(changes, opts)
            return found
        results = get_host(st.id).execute(changes, opts) if changes else []
        results += [no_change(st, m, started) for m in unchanged]
    order = {a.module: i for i, a in enumerate(arts)}
    results.sort(key=lambda r: order[r.module])
    changed = _change(opts, [r.module for r in results if r.status != "no_change"])
    for r in results:
        if r.status != "no_change":
            emit("reloaded", sandbox_id, module=r.module, version=r.new_version,
                 status=r.status, **changed)
    return combine(results, started)


@overload
def rollback_module(sandbox_id: str, module: str, version: int, *,
                    state_handler: StateHandler | None = ...,
                    use_state_preservation: bool = ..., coordinate_dependencies: bool = ...,
                    suspend_timeout: float = ...,
                    check: Callable[[Any], Any] | str | None = ...,
    dry_run: Literal[False] = ...) -> ReloadResult: ...


@overload
def rollback_module(sandbox_id: str, module: str, version: int, *,
                    state_handler: StateHandler | None = ...,
                    use_state_preservation: bool = ..., coordinate_dependencies: bool = ...,
                    suspend_timeout: float = ...,
                    check: Callable[[Any], Any] | str | None = ...,
    dry_run: Literal[True]) -> DryRun: ...


@overload
def rollback_module(sandbox_id: str, module: str, version: int, *,
                    state_handler: StateHandler | None = ...,
                    use_state_preservation: bool = ..., coordinate_dependencies: bool = ...,
                    suspend_timeout: float = ...,
                    check: Callable[[Any], Any] | str | None = ...,
    dry_run: bool) -> ReloadResult | DryRun: ...


@_reports_failures
def rollback_module(sandbox_id: str, module: str, version: int, *,
                    state_handler: StateHandler | None = None,
                    use_state_preservation: bool = True, coordinate_dependencies: bool = True,
                    suspend_timeout: float = 5.0,
                    check: Callable[[Any], Any] | str | None = None,
                    dry_run: bool = False) -> ReloadResult | DryRun:
    """Run ``version``'s code again; afterwards ``get_module_version`` returns ``version``.

    ``check`` as for :func:`hot_reload`: a rollback whose check fails changes nothing.
    ``dry_run=True``: what the rollback would do, nothing changed (see :func:`hot_reload`).
    """
    started = time.perf_counter()
    st = get_state(sandbox_id)
    opts = _options(state_handler, use_state_preservation, coordinate_dependencies,
                    suspend_timeout, check)
    with st.lock:
        h = st.history(module)
        if not isinstance(version, int) or isinstance(version, bool):
            raise SandboxError(f"version must be an int, got {version!r}")
        rec = h.record(version)
        if version == h.current:
            return _unchanged(st, [module], started) if dry_run \
                else no_change(st, module, started)
        change = Change(module, rec.artifact, "activate", version=version)
        if dry_run:
            found: DryRun = get_host(st.id).dry_run([change], opts)
            return found
        (result,) = get_host(st.id).execute([change], opts, status="rolled_back")
    emit("rolled_back", sandbox_id, module=module, version=version,
         **_change(opts, [module]))
    return result


def _unchanged(st: Any, modules: list[str], started: float) -> DryRun:
    versions = {m: st.histories[m].current if m in st.histories else None for m in modules}
    return DryRun(tuple(modules), versions, dict(versions), no_change=True,
                  duration=time.perf_counter() - started)


def _step(sandbox_id: str, module: str, delta: int, event: str) -> ReloadResult:
    st = get_state(sandbox_id)
    with st.lock:
        h = st.history(module)
        target = h.undo_target() if delta < 0 else h.redo_target()
        rec = h.record(target)
        (result,) = get_host(st.id).execute([Change(module, rec.artifact, "move", delta=delta)],
                            ReloadOptions(), status="rolled_back")
    emit(event, sandbox_id, module=module, version=target, **_change(ReloadOptions(), [module]))
    return result


def undo(sandbox_id: str, module: str) -> ReloadResult:
    """Make the version that was current before the last change current again."""
    return _step(sandbox_id, module, -1, "undo")


def redo(sandbox_id: str, module: str) -> ReloadResult:
    """Step forward again after :func:`undo`."""
    return _step(sandbox_id, module, +1, "redo")


def reload_modules(sandbox_id: str, modules: Any, *, state_handler: StateHandler | None = None,
                   force_reload: bool = False, parallel: bool = False,
                   timeout: float | None = None, coordinate_dependencies: bool = True
                   ) -> ReloadResult:
    """Reload several modules and their dependents as one transaction.

    ``modules`` is a list of module names (re-run at their current version) or
    a mapping ``{name: source or Artifact}`` (new code).  Mapping entries whose
    code is already current are skipped unless ``force_reload``, which re-runs
    them anyway.
    """
    started = time.perf_counter()
    st = get_state(sandbox_id)
    opts = _options(state_handler, True, coordinate_dependencies, 5.0)
    if isinstance(modules, str):
        raise SandboxError("pass a list of module names or a {name: source} mapping, "
                           "not a single string")
    with st.lock:
        changes: list[Change] = []
        if isinstance(modules, Mapping):
            for name, code in modules.items():
                art = Artifact.of(code, name)
                ch = plan_change(st, art)
                if ch is None and force_reload:
                    ch = Change(name, st.history(name).current_record().artifact, "rerun")
                if ch is not None:
                    changes.append(ch)
        else:
            changes.extend(Change(name, st.history(name).current_record().artifact, "rerun")
                           for name in modules)
        if not changes:
            return combine([no_change(st, m, started) for m in modules], started)
        results = get_host(st.id).execute(changes, opts, parallel=parallel, timeout=timeout)
    changed = _change(opts, [r.module for r in results])
    for r in results:
        emit("reloaded", sandbox_id, module=r.module, version=r.new_version, status=r.status,
             **changed)
    return combine(results, started)

