"""The plain Python API: sandbox lifecycle, reloads, versions, ``run``.

Every function takes a sandbox id and raises a :class:`SandboxError` subclass
with a message that says what to do.  Nothing here imports IPython.
"""

from __future__ import annotations

import ast
import ctypes
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ._artifact import Artifact, CompileInfo, compile_artifact
from ._diff import VersionDiff, diff_sources
from ._errors import (CompileError, ModuleNotFoundInSandboxError, SandboxError,
                      SandboxExistsError, SandboxNotFoundError, SandboxTimeout)
from ._live import LiveState, resolve_class, spawn
from ._reload import (PARTICIPANTS, Change, ReloadOptions, ReloadResult, StateHandler, combine,
                      execute, no_change, plan_change)
from ._server import Server, ServerRef
from ._sandbox import Sandbox, SandboxInfo, SandboxState, validate_sandbox_id
from ._scope import current_scope, set_history_scope, validate_scope  # noqa: F401 (re-export)
from ._versions import ModuleHistory, VersionInfo, VersionStore

PARTICIPANTS.append(LiveState)
_registry: dict[str, SandboxState] = {}
_registry_lock = threading.RLock()
_default_store: VersionStore | None = None
#: Called with ``(event, sandbox_id, payload)`` after every change; the Jupyter
#: glue (widgets, comm) subscribes here.
listeners: list[Callable[[str, str, dict[str, Any]], None]] = []


def _emit(event: str, sandbox_id: str, **payload: Any) -> None:
    for cb in list(listeners):
        try:
            cb(event, sandbox_id, payload)
        except Exception:  # a broken listener must never break a reload
            pass


def set_default_store(store: VersionStore | str | Path | None) -> VersionStore:
    """Choose where sandboxes created from now on keep their history.

    A :class:`VersionStore`, a path to an SQLite file, ``":memory:"``, or
    ``None`` to go back to the default (``$SANDBOX_MAGIC_STORE``, else
    ``.sandbox_magic/history.sqlite3`` in the working directory).
    """
    global _default_store
    from ._store import MEMORY, SQLiteVersionStore
    if store is None or isinstance(store, VersionStore):
        _default_store = store
    elif str(store) == MEMORY:
        _default_store = VersionStore()
    else:
        _default_store = SQLiteVersionStore(store)
    return default_store()


def default_store() -> VersionStore:
    global _default_store
    if _default_store is None:
        from ._store import store_from_environment
        _default_store = store_from_environment()
    return _default_store


def _state(sandbox_id: str) -> SandboxState:
    with _registry_lock:
        st = _registry.get(sandbox_id)
    if st is None:
        validate_sandbox_id(sandbox_id)
        known = ", ".join(sorted(_registry)) or "none"
        raise SandboxNotFoundError(f"no sandbox {sandbox_id!r} (existing: {known}); "
                                   "create it with create_sandbox()")
    return st


def _options(state_handler: StateHandler | None, use_state_preservation: bool,
             coordinate_dependencies: bool, suspend_timeout: float) -> ReloadOptions:
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
    return ReloadOptions(state_handler, name, use_state_preservation, coordinate_dependencies,
                         float(suspend_timeout))


# ------------------------------------------------------------------ lifecycle
def create_sandbox(sandbox_id: str, supervisor: Any = None, *,
                   sandbox_path: str | Path | None = None, max_versions: int | None = 10,
                   store: VersionStore | None = None,
                   history_scope: str | None = None) -> SandboxInfo:
    """Create an empty sandbox, optionally loading every ``.py`` file of ``sandbox_path``.

    ``max_versions`` bounds each module's retained history (``None`` keeps all).
    ``history_scope`` names a history shared on purpose (by default each
    notebook, or script, has its own: see :func:`set_history_scope`).
    """
    validate_sandbox_id(sandbox_id)
    scope = validate_scope(history_scope) if history_scope is not None else current_scope()
    if max_versions is not None and (not isinstance(max_versions, int) or max_versions < 1):
        raise SandboxError(f"max_versions must be a positive int or None, got {max_versions!r}")
    path = Path(sandbox_path) if sandbox_path is not None else None
    sources: dict[str, str] = {}
    if path is not None:
        if not path.is_dir():
            raise SandboxError(f"sandbox_path {str(path)!r} is not a directory")
        sources = {p.stem: p.read_text(encoding="utf-8") for p in sorted(path.glob("*.py"))
                   if p.stem != "__init__"}
    with _registry_lock:
        if sandbox_id in _registry:
            raise SandboxExistsError(f"sandbox {sandbox_id!r} already exists; use "
                                     "get_sandbox() or destroy_sandbox() first")
        st = SandboxState(sandbox_id, max_versions=max_versions, sandbox_path=path,
                          store=store or default_store(), scope=scope)
        _registry[sandbox_id] = st
    try:
        import sys
        sys.modules[st.package_name] = st.package
        if sources:
            hot_reload_source(sandbox_id, sources)
        if supervisor is not None:
            from ._live import start_sandbox_supervisor
            start_sandbox_supervisor(st, supervisor)
    except BaseException:
        with _registry_lock:
            _registry.pop(sandbox_id, None)
        st.unregister_all()
        st.release_sources()
        raise
    _emit("sandbox_created", sandbox_id)
    return st.info()


def destroy_sandbox(sandbox_id: str, *, forget_history: bool = False) -> None:
    """Stop the sandbox's servers and drop its modules from ``sys.modules``.

    The recorded history stays in the store (a sandbox created later under
    the same id sees it) unless ``forget_history`` is true.
    """
    st = _state(sandbox_id)
    with st.lock:
        from ._live import stop_all
        stop_all(st)
        st.unregister_all()
        st.release_sources()
        if forget_history:
            st.store.forget(sandbox_id, scope=st.scope)
        st.status = "destroyed"
        with _registry_lock:
            _registry.pop(sandbox_id, None)
    _emit("sandbox_destroyed", sandbox_id)


def stored_history_origin(sandbox_id: str) -> str:
    """Where a sandbox's stored history came from, in words: a running kernel or an earlier one."""
    st = _state(sandbox_id)
    others = [w for w in st.store.writers(sandbox_id, scope=st.scope)
              if not w.get("me") and w.get("alive")]
    if others:
        who = ", ".join(f"pid {w.get('pid')} ({w.get('name')})" for w in others)
        return f"history shared with a running kernel, {who}, found"
    return "history from an earlier session found"


def restart_sandbox(sandbox_id: str) -> SandboxInfo:
    """Reload every module fresh at its current version and restart the supervisor tree."""
    st = _state(sandbox_id)
    with st.lock:
        from ._live import restart_tree
        execute(st, [], ReloadOptions(), fresh=True)
        st.restart_count += 1
        restart_tree(st)
    _emit("sandbox_restarted", sandbox_id)
    return st.info()


def restore_sandbox(sandbox_id: str) -> SandboxInfo:
    """Load every module the history knows at its current version (after a restart).

    Creates the sandbox if needed.  Code comes back; the state of live objects
    from before the restart does not (it lived in the old process).
    """
    with _registry_lock:
        exists = sandbox_id in _registry
    if not exists:
        create_sandbox(sandbox_id)
    st = _state(sandbox_id)
    with st.lock:
        missing = [m for m, h in sorted(st.histories.items())
                   if h.current is not None and m not in st.modules]
        if missing:
            changes = [Change(m, st.histories[m].current_record().artifact, "rerun")
                       for m in missing]
            execute(st, changes, ReloadOptions())
            for m in missing:
                st.hold_sources(st.histories[m])
    for m in missing:
        _emit("reloaded", sandbox_id, module=m, version=st.histories[m].current,
              status="restored")
    return st.info()


def list_sandboxes() -> list[SandboxInfo]:
    with _registry_lock:
        states = list(_registry.values())
    return [s.info() for s in states]


def get_sandbox_info(sandbox_id: str) -> SandboxInfo:
    return _state(sandbox_id).info()


def get_sandbox(sandbox_id: str) -> Sandbox:
    return _state(sandbox_id).handle


# -------------------------------------------------------------------- reloads
def hot_reload(sandbox_id: str, artifact: Artifact | bytes | CompileInfo, *,
               state_handler: StateHandler | None = None, use_state_preservation: bool = True,
               coordinate_dependencies: bool = True, suspend_timeout: float = 5.0
               ) -> ReloadResult:
    """Load compiled code into a sandbox, in place, as a new version.

    ``artifact`` is an :class:`Artifact`, its bytes, or a :class:`CompileInfo`
    (what ``compile_source``, ``compile_file`` and ``compile_sandbox`` return):
    all of its artifacts are loaded as one transaction, in dependency order,
    like a ``{module: source}`` dict given to :func:`hot_reload_source`.
    A module the sandbox does not have yet is added as version 1.  Code identical
    to the current version gives ``"no_change"``; code identical to an older
    retained version re-activates that version instead of recording a duplicate.
    """
    started = time.perf_counter()
    if isinstance(artifact, CompileInfo) and len(artifact.artifacts) != 1:
        _state(sandbox_id)
        return _load_many(sandbox_id, artifact.artifacts,
                          _options(state_handler, use_state_preservation,
                                   coordinate_dependencies, suspend_timeout), started)
    art = Artifact.coerce(artifact)
    st = _state(sandbox_id)
    opts = _options(state_handler, use_state_preservation, coordinate_dependencies,
                    suspend_timeout)
    with st.lock:
        change = plan_change(st, art)
        if change is None:
            return no_change(st, art.module, started)
        loaded = art.module in st.modules
        status = "hot_reloaded" if change.action == "new" or not loaded else "rolled_back"
        (result,) = execute(st, [change], opts, status=status)
    _emit("reloaded", sandbox_id, module=art.module, version=result.new_version,
          status=result.status)
    return result


def hot_reload_source(sandbox_id: str, source: str | Mapping[str, str],
                      module: str | None = None, *, state_handler: StateHandler | None = None,
                      use_state_preservation: bool = True, coordinate_dependencies: bool = True,
                      suspend_timeout: float = 5.0) -> ReloadResult:
    """Compile and load source; a ``{module: source}`` dict loads as one transaction."""
    if isinstance(source, Mapping):
        if module is not None:
            raise SandboxError("pass module= only with a single source string")
        return _reload_many(sandbox_id, source, state_handler, use_state_preservation,
                            coordinate_dependencies, suspend_timeout)
    _state(sandbox_id)
    art = compile_artifact(source, module)
    return hot_reload(sandbox_id, art, state_handler=state_handler,
                      use_state_preservation=use_state_preservation,
                      coordinate_dependencies=coordinate_dependencies,
                      suspend_timeout=suspend_timeout)


def _reload_many(sandbox_id: str, sources: Mapping[str, str], state_handler: Any,
                 use_state_preservation: bool, coordinate_dependencies: bool,
                 suspend_timeout: float) -> ReloadResult:
    started = time.perf_counter()
    _state(sandbox_id)
    if not sources:
        raise SandboxError("the source dict is empty; give {module_name: source}")
    opts = _options(state_handler, use_state_preservation, coordinate_dependencies,
                    suspend_timeout)
    arts = [compile_artifact(src, name) for name, src in sources.items()]
    return _load_many(sandbox_id, arts, opts, started)


def _load_many(sandbox_id: str, arts: list[Artifact], opts: ReloadOptions,
               started: float) -> ReloadResult:
    """Load several modules' artifacts as one transaction."""
    st = _state(sandbox_id)
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
        results = execute(st, changes, opts) if changes else []
        results += [no_change(st, m, started) for m in unchanged]
    order = {a.module: i for i, a in enumerate(arts)}
    results.sort(key=lambda r: order[r.module])
    for r in results:
        if r.status != "no_change":
            _emit("reloaded", sandbox_id, module=r.module, version=r.new_version,
                  status=r.status)
    return combine(results, started)


def rollback_module(sandbox_id: str, module: str, version: int, *,
                    state_handler: StateHandler | None = None,
                    use_state_preservation: bool = True, coordinate_dependencies: bool = True,
                    suspend_timeout: float = 5.0) -> ReloadResult:
    """Run ``version``'s code again; afterwards ``get_module_version`` returns ``version``."""
    started = time.perf_counter()
    st = _state(sandbox_id)
    opts = _options(state_handler, use_state_preservation, coordinate_dependencies,
                    suspend_timeout)
    with st.lock:
        h = st.history(module)
        if not isinstance(version, int) or isinstance(version, bool):
            raise SandboxError(f"version must be an int, got {version!r}")
        rec = h.record(version)
        if version == h.current:
            return no_change(st, module, started)
        (result,) = execute(st, [Change(module, rec.artifact, "activate", version=version)],
                            opts, status="rolled_back")
    _emit("rolled_back", sandbox_id, module=module, version=version)
    return result


def _step(sandbox_id: str, module: str, delta: int, event: str) -> ReloadResult:
    st = _state(sandbox_id)
    with st.lock:
        h = st.history(module)
        target = h.undo_target() if delta < 0 else h.redo_target()
        rec = h.record(target)
        (result,) = execute(st, [Change(module, rec.artifact, "move", delta=delta)],
                            ReloadOptions(), status="rolled_back")
    _emit(event, sandbox_id, module=module, version=target)
    return result


def undo(sandbox_id: str, module: str) -> ReloadResult:
    """Make the version that was current before the last change current again."""
    return _step(sandbox_id, module, -1, "undo")


def redo(sandbox_id: str, module: str) -> ReloadResult:
    """Step forward again after :func:`undo`."""
    return _step(sandbox_id, module, +1, "redo")


# ------------------------------------------------------------------- versions
def get_module_version(sandbox_id: str, module: str) -> int:
    v = _state(sandbox_id).history(module).current
    assert v is not None
    return v


def list_module_versions(sandbox_id: str, module: str) -> list[VersionInfo]:
    """Retained versions, newest first (from the store when this kernel has not loaded
    the sandbox, e.g. after a restart)."""
    return module_history(sandbox_id, module).infos()


def get_version_history(sandbox_id: str, module: str) -> dict[str, Any]:
    """Current version and retained versions (from the store if not loaded, as above)."""
    h = module_history(sandbox_id, module)
    infos = h.infos()
    return {"current_version": h.current, "total_versions": len(infos), "versions": infos}


def diff_versions(sandbox_id: str, module: str, v1: int, v2: int) -> VersionDiff:
    """Line diff (diff-match-patch) from version ``v1`` to ``v2`` (from the store if not loaded)."""
    h = module_history(sandbox_id, module)
    a, b = h.record(v1), h.record(v2)
    return diff_sources(module, v1, a.source, v2, b.source)


# ---------------------------------------------------- history after a restart
# After a kernel restart the store holds a sandbox's history but this kernel
# has not created the sandbox.  Every command that reads history reads it from
# the store then; commands that change code restore the sandbox first
# (load_before_change).  Every read of the store goes through stored_histories.
def stored_histories(sandbox_id: str) -> dict[str, ModuleHistory]:
    """The histories the default store holds for ``sandbox_id`` in this session's scope."""
    return default_store().load(sandbox_id, scope=current_scope())


def stored_sandbox_ids() -> list[str]:
    """Ids of the sandboxes whose history the default store holds in this scope, sorted."""
    return sorted(default_store().list_sandboxes(scope=current_scope()))


def _copy_history(h: ModuleHistory) -> ModuleHistory:
    c = ModuleHistory(h.module)
    c.restore(h.snapshot())
    return c


def sandbox_histories(sandbox_id: str) -> dict[str, ModuleHistory]:
    """``{module: history}`` as the history-reading commands show it.

    The sandbox's own histories when this kernel has it (copies, so a reload
    running meanwhile changes nothing under the reader), else the ones in the
    store.  Raises :class:`SandboxNotFoundError` when there are neither.
    """
    with _registry_lock:
        st = _registry.get(sandbox_id)
    if st is not None:
        with st.lock:
            return {m: _copy_history(h) for m, h in st.histories.items()}
    validate_sandbox_id(sandbox_id)
    stored = stored_histories(sandbox_id)
    if not any(h.current is not None for h in stored.values()):
        with _registry_lock:
            known = ", ".join(sorted(_registry)) or "none"
        raise SandboxNotFoundError(f"no sandbox {sandbox_id!r} and no recorded history for it "
                                   f"(sandboxes in this kernel: {known})")
    return stored


def module_history(sandbox_id: str, module: str) -> ModuleHistory:
    """One module's history, as :func:`sandbox_histories` finds it."""
    histories = sandbox_histories(sandbox_id)
    h = histories.get(module)
    if h is None or h.current is None:
        have = ", ".join(sorted(m for m, x in histories.items() if x.current is not None))
        raise ModuleNotFoundInSandboxError(
            f"sandbox {sandbox_id!r} has no module {module!r} (modules: {have or 'none'})")
    return h


def history_modules(sandbox_id: str) -> dict[str, int]:
    """``{module: current version}`` of every module with a history, loaded or not."""
    return {m: h.current for m, h in sorted(sandbox_histories(sandbox_id).items())
            if h.current is not None}


def is_loaded(sandbox_id: str, module: str | None = None) -> bool:
    """Whether this kernel has the sandbox (and, given ``module``, has loaded that module)."""
    with _registry_lock:
        st = _registry.get(sandbox_id)
    return st is not None and (module is None or module in st.modules)


def load_before_change(sandbox_id: str, module: str, *, version: int | None = None,
                       step: int = 0) -> dict[str, int]:
    """Load a sandbox that is only in the store before a rollback, undo or redo changes it.

    Call it before :func:`rollback_module` (give ``version``), :func:`undo`
    (``step=-1``) or :func:`redo` (``step=+1``).  The change is checked against
    the history first: an unknown sandbox, module or version, or nothing to
    undo or redo, raises the error the change itself would and loads nothing.
    When ``module`` is not loaded in this kernel (after a restart), the
    sandbox is then restored as :func:`restore_sandbox` does, every module at
    its current version, so that the modules it imports are there too.

    Returns ``{module: version}`` of the modules it loaded, ``{}`` when
    ``module`` was loaded already.  Restoring is a reload like any other: if
    a module body fails, nothing is loaded and the error says why.
    """
    h = module_history(sandbox_id, module)
    if version is not None:
        if not isinstance(version, int) or isinstance(version, bool):
            raise SandboxError(f"version must be an int, got {version!r}")
        h.record(version)
    elif step < 0:
        h.undo_target()
    elif step > 0:
        h.redo_target()
    with _registry_lock:
        st = _registry.get(sandbox_id)
    if st is not None and module in st.modules:
        return {}
    before = set(st.modules) if st is not None else set()
    info = restore_sandbox(sandbox_id)
    return {m: v for m, v in info.modules.items() if m not in before}


# ------------------------------------------------------------------------ run
def run(sandbox_id: str, code: str | Callable[[Sandbox], Any], *,
        timeout: float | None = None) -> Any:
    """Execute source (value of a trailing expression returned) or call ``code(handle)``.

    The source runs in the sandbox's scratch namespace, which sees the same
    names as the handle and can import sibling modules.  Exceptions keep their
    type; exceeding ``timeout`` raises :class:`SandboxTimeout`.
    """
    st = _state(sandbox_id)
    if callable(code):
        fn = code

        def job() -> Any:
            return fn(st.handle)
    elif isinstance(code, str):
        body, tail = _split_trailing_expr(code)
        ns = st.refresh_scratch()

        def job() -> Any:
            if body is not None:
                exec(body, ns)
            return eval(tail, ns) if tail is not None else None
    else:
        raise SandboxError(f"run() takes source text or a callable, got {type(code).__name__}")
    if timeout is None:
        return job()
    return _run_with_timeout(job, timeout, sandbox_id)


def _split_trailing_expr(source: str) -> tuple[Any, Any]:
    try:
        tree = ast.parse(source, "<sandbox run>")
    except SyntaxError as exc:
        raise CompileError(exc.msg, module=None, line=exc.lineno, column=exc.offset,
                           text=exc.text) from None
    tail = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        tail = compile(ast.Expression(tree.body.pop().value), "<sandbox run>", "eval")
    body = compile(tree, "<sandbox run>", "exec") if tree.body else None
    return body, tail


def _run_with_timeout(job: Callable[[], Any], timeout: float, sandbox_id: str) -> Any:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = job()
        except BaseException as exc:  # handed to the caller below
            box["error"] = exc

    t = threading.Thread(target=target, name=f"sandbox-run-{sandbox_id}", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        # Ask the worker to stop at its next bytecode; it cannot be killed harder.
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(t.ident),
                                                   ctypes.py_object(SandboxTimeout))
        raise SandboxTimeout(f"run() in sandbox {sandbox_id!r} exceeded its timeout of "
                             f"{timeout} s; the code was interrupted")
    if "error" in box:
        raise box["error"]
    return box.get("value")


# -------------------------------------------------------------------- servers
def start_server(sandbox_id: str, server: type[Server] | str, *args: Any,
                 name: str | None = None) -> ServerRef:
    """Start a server (a :class:`Server` subclass, or ``"module:Name"``) in its own thread."""
    st = _state(sandbox_id)
    cls = resolve_class(st, server, Server, "server")
    proc = spawn(st, cls, args, name)
    _emit("server_started", sandbox_id, name=name, pid=proc.pid)
    return ServerRef(proc)


def get_server(sandbox_id: str, name: str) -> ServerRef:
    """The running server registered under ``name``."""
    st = _state(sandbox_id)
    proc = st.named.get(name)
    if proc is None or not proc.alive:
        running = ", ".join(sorted(st.named)) or "none"
        raise SandboxError(f"no server named {name!r} in sandbox {sandbox_id!r} "
                           f"(running: {running})")
    return ServerRef(proc)


def list_servers(sandbox_id: str) -> list[ServerRef]:
    """Every running server of the sandbox."""
    return [ServerRef(p) for p in list(_state(sandbox_id).servers) if p.alive]


# ------------------------------------------------------- dependency-aware sets
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
    st = _state(sandbox_id)
    opts = _options(state_handler, True, coordinate_dependencies, 5.0)
    if isinstance(modules, str):
        raise SandboxError("pass a list of module names or a {name: source} mapping, "
                           "not a single string")
    with st.lock:
        changes: list[Change] = []
        if isinstance(modules, Mapping):
            for name, code in modules.items():
                art = (compile_artifact(code, name) if isinstance(code, str)
                       else Artifact.coerce(code))
                ch = plan_change(st, art)
                if ch is None and force_reload:
                    ch = Change(name, st.history(name).current_record().artifact, "rerun")
                if ch is not None:
                    changes.append(ch)
        else:
            for name in modules:
                changes.append(Change(name, st.history(name).current_record().artifact,
                                      "rerun"))
        if not changes:
            return combine([no_change(st, m, started) for m in modules], started)
        results = execute(st, changes, opts, parallel=parallel, timeout=timeout)
    for r in results:
        _emit("reloaded", sandbox_id, module=r.module, version=r.new_version, status=r.status)
    return combine(results, started)
