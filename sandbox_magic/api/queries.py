"""Reading versions and histories, also of sandboxes only in the store (after a restart)."""

from __future__ import annotations

from typing import Any

from ..engine.diff import VersionDiff, diff_sources
from ..engine.sandbox import validate_sandbox_id
from ..engine.versions import ModuleHistory, VersionInfo
from ..errors import (
    ModuleNotFoundInSandboxError,
    SandboxError,
    SandboxNotFoundError,
)
from .lifecycle import restore_sandbox
from .registry import find_host, get_state, known_ids
from .stores import default_store, stored_histories


def get_module_version(sandbox_id: str, module: str) -> int:
    v = get_state(sandbox_id).history(module).current
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
    host = find_host(sandbox_id)
    if host is not None:
        st = host.state
        with st.lock:
            return {m: _copy_history(h) for m, h in st.histories.items()}
    validate_sandbox_id(sandbox_id)
    stored = stored_histories(sandbox_id)
    if not any(h.current is not None for h in stored.values()):
        known = known_ids()
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


def unsaved_reason(sandbox_id: str) -> str | None:
    """Why the sandbox's new versions are kept in memory only (its history store cannot
    be written), or None when they are saved to disk."""
    host = find_host(sandbox_id)
    store = host.state.store if host is not None else default_store()
    if getattr(store, "saved_to_disk", True):
        return None
    return getattr(store, "failure", None) or "the history store cannot be written"


def is_loaded(sandbox_id: str, module: str | None = None) -> bool:
    """Whether this kernel has the sandbox (and, given ``module``, has loaded that module)."""
    host = find_host(sandbox_id)
    return host is not None and (module is None or module in host.state.modules)


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
    host = find_host(sandbox_id)
    st = host.state if host is not None else None
    if st is not None and module in st.modules:
        return {}
    before = set(st.modules) if st is not None else set()
    info = restore_sandbox(sandbox_id)
    return {m: v for m, v in info.modules.items() if m not in before}

