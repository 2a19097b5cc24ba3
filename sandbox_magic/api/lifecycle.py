"""Creating, destroying, restarting and restoring sandboxes; finding them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..engine.layout import folder_modules
from ..engine.reload import (
    Change,
    ReloadOptions,
)
from ..engine.sandbox import Sandbox, SandboxInfo, SandboxState, validate_sandbox_id
from ..engine.scope import current_scope, validate_scope
from ..engine.versions import VersionStore
from ..errors import (
    SandboxError,
    SandboxExistsError,
)
from ..hosts.base import SandboxHost
from ..hosts.cluster import ClusterHost, resolve_view
from ..hosts.kernel import KernelHost
from ..hosts.process import ProcessHost
from .events import emit
from .registry import add_host, all_hosts, find_host, get_host, get_state, remove_host
from .reloading import hot_reload_source
from .stores import default_store


def create_sandbox(sandbox_id: str, supervisor: Any = None, *,
                   sandbox_path: str | Path | None = None, max_versions: int | None = 10,
                   store: VersionStore | None = None,
                   history_scope: str | None = None, host: Any = "kernel",
                   memory_limit: int | str | None = None, cpu_limit: float | None = None,
                   call_timeout: float | None = None) -> SandboxInfo:
    """Create an empty sandbox, optionally loading every ``.py`` file of ``sandbox_path``.

    ``max_versions`` bounds each module's retained history (``None`` keeps all).
    ``history_scope`` names a history shared on purpose (by default each
    notebook, or script, has its own: see :func:`set_history_scope`).
    ``host="process"`` runs the sandbox in its own child kernel (see
    :mod:`sandbox_magic.hosts.process`), with optional ``memory_limit`` (bytes or
    ``"512M"``), ``cpu_limit`` (CPU seconds) and ``call_timeout`` (seconds of wall
    time for a reload or a call).  ``host`` may also be an ipyparallel
    ``Client`` or ``DirectView``, or ``"ipyparallel"`` for the default profile's
    cluster: the sandbox then exists on every engine (see
    :mod:`sandbox_magic.hosts.cluster`; ``call_timeout`` bounds each engine).
    """
    cluster = not (isinstance(host, str) and host in ("kernel", "process"))
    if host == "kernel" and (memory_limit, cpu_limit, call_timeout) != (None, None, None):
        raise SandboxError("memory_limit, cpu_limit and call_timeout need host='process'")
    view = resolve_view(host) if cluster else None
    validate_sandbox_id(sandbox_id)
    scope = validate_scope(history_scope) if history_scope is not None else current_scope()
    if max_versions is not None and (not isinstance(max_versions, int) or max_versions < 1):
        raise SandboxError(f"max_versions must be a positive int or None, got {max_versions!r}")
    path = Path(sandbox_path) if sandbox_path is not None else None
    sources: dict[str, str] = {}
    files: dict[str, Path] = {}
    if path is not None:
        if not path.is_dir():
            raise SandboxError(f"sandbox_path {str(path)!r} is not a directory")
        files = folder_modules(path)
        sources = {name: p.read_text(encoding="utf-8") for name, p in files.items()}
        if not sources:
            raise SandboxError(f"sandbox_path {str(path)!r} holds no Python module (a .py "
                               "file, or a package folder with an __init__.py)")
    st = SandboxState(sandbox_id, max_versions=max_versions, sandbox_path=path,
                      store=store or default_store(), scope=scope)
    st.origins.update({name: str(p.resolve()) for name, p in files.items()})
    if find_host(sandbox_id) is not None:
        raise SandboxExistsError(f"sandbox {sandbox_id!r} already exists; use "
                                 "get_sandbox() or destroy_sandbox() first")
    if view is not None:
        sandbox_host: SandboxHost = ClusterHost(st, view, timeout=call_timeout or 60.0)
    elif host == "process":
        sandbox_host = ProcessHost(st, memory_limit=memory_limit,
                                                cpu_limit=cpu_limit, call_timeout=call_timeout)
    else:
        sandbox_host = KernelHost(st)
    try:
        add_host(sandbox_host)
    except BaseException:           # created meanwhile by another thread
        if isinstance(sandbox_host, ProcessHost):
            sandbox_host.stop()
        raise
    try:
        import sys
        sys.modules[st.package_name] = st.package
        if sources:
            hot_reload_source(sandbox_id, sources)
        if supervisor is not None:
            if sandbox_host.kind != "kernel":
                raise SandboxError("a supervisor for a process sandbox is started in its "
                                   "module code (start_server there), not passed here")
            from ..live.supervisors import start_sandbox_supervisor
            start_sandbox_supervisor(st, supervisor)
    except BaseException:
        remove_host(sandbox_id)
        sandbox_host.stop()
        st.unregister_all()
        raise
    emit("sandbox_created", sandbox_id)
    return st.info()


def destroy_sandbox(sandbox_id: str, *, forget_history: bool = False) -> None:
    """Stop the sandbox's servers and drop its modules from ``sys.modules``.

    The recorded history stays in the store (a sandbox created later under
    the same id sees it) unless ``forget_history`` is true.
    """
    host = get_host(sandbox_id)
    st = host.state
    from .watching import unwatch
    unwatch(sandbox_id)
    with st.lock:
        host.stop()
        if forget_history:
            st.store.forget(sandbox_id, scope=st.scope)
        remove_host(sandbox_id)
    emit("sandbox_destroyed", sandbox_id)


def stored_history_origin(sandbox_id: str) -> str:
    """Where a sandbox's stored history came from, in words: a running kernel or an earlier one."""
    st = get_state(sandbox_id)
    others = [w for w in st.store.writers(sandbox_id, scope=st.scope)
              if not w.get("me") and w.get("alive")]
    if others:
        who = ", ".join(f"pid {w.get('pid')} ({w.get('name')})" for w in others)
        return f"history shared with a running kernel, {who}, found"
    return "history from an earlier session found"


def restart_sandbox(sandbox_id: str) -> SandboxInfo:
    """Reload every module fresh at its current version and restart the supervisor tree."""
    host = get_host(sandbox_id)
    host.restart()
    emit("sandbox_restarted", sandbox_id)
    return host.info()


def restore_sandbox(sandbox_id: str) -> SandboxInfo:
    """Load every module the history knows at its current version (after a restart).

    Creates the sandbox if needed.  Code comes back; the state of live objects
    from before the restart does not (it lived in the old process).
    """
    if find_host(sandbox_id) is None:
        create_sandbox(sandbox_id)
    st = get_state(sandbox_id)
    with st.lock:
        missing = [m for m, h in sorted(st.histories.items())
                   if h.current is not None and m not in st.modules]
        if missing:
            changes = [Change(m, st.histories[m].current_record().artifact, "rerun")
                       for m in missing]
            get_host(st.id).execute(changes, ReloadOptions())
            for m in missing:
                st.hold_sources(st.histories[m])
    for m in missing:
        emit("reloaded", sandbox_id, module=m, version=st.histories[m].current,
              status="restored")
    return st.info()


def list_sandboxes() -> list[SandboxInfo]:
    return [h.info() for h in all_hosts()]


def get_sandbox_info(sandbox_id: str) -> SandboxInfo:
    return get_host(sandbox_id).info()


def get_sandbox(sandbox_id: str) -> Sandbox:
    return get_host(sandbox_id).handle



def sync_sandbox(sandbox_id: str) -> list[dict[str, Any]]:
    """Bring every engine of a cluster sandbox to the current versions (joined or restarted
    engines); returns each engine's outcome.  Other hosts have nothing to catch up."""
    host = get_host(sandbox_id)
    sync = getattr(host, "sync", None)
    return sync() if sync is not None else []
