"""Where histories are kept: the default store, and reads of stored histories."""

from __future__ import annotations

from pathlib import Path

from ..engine.scope import current_scope
from ..engine.versions import ModuleHistory, VersionStore

_default_store: VersionStore | None = None


def set_default_store(store: VersionStore | str | Path | None) -> VersionStore:
    """Choose where sandboxes created from now on keep their history.

    A :class:`VersionStore`, a path to an SQLite file, ``":memory:"``, or
    ``None`` to go back to the default (``$SANDBOX_MAGIC_STORE``, else
    ``.sandbox_magic/history.sqlite3`` in the working directory).

    Sandboxes whose store can no longer be written (its folder was removed, say:
    their new versions were kept in memory, "not saved to disk") move to the new
    store, and every version they kept is written there now.
    """
    global _default_store
    from ..engine.store import MEMORY, SQLiteVersionStore
    old = _default_store
    if store is None or isinstance(store, VersionStore):
        _default_store = store
    elif str(store) == MEMORY:
        _default_store = VersionStore()
    else:
        _default_store = SQLiteVersionStore(store)
    new = default_store()
    _take_over(old, new)
    return new


def _take_over(old: VersionStore | None, new: VersionStore) -> None:
    """Move the sandboxes of a store that cannot be written to ``new``, with their
    histories (and the histories it kept for sandboxes no longer loaded)."""
    from .registry import all_hosts
    failing = {id(s): s for s in [old, *(h.state.store for h in all_hosts())]
               if s is not None and s is not new and not getattr(s, "saved_to_disk", True)}
    moved: set[tuple[str, str]] = set()
    for host in all_hosts():
        st = host.state
        if id(st.store) not in failing:
            continue
        with st.lock:
            st.store = new
            for h in list(st.histories.values()):
                new.save(st.id, h, scope=st.scope)
                moved.add((st.id, h.module))
    for s in failing.values():
        pending = getattr(s, "pending", {})
        for (scope, sid, module), h in list(pending.items()):
            if (sid, module) not in moved:
                new.save(sid, h, scope=scope)
        pending.clear()


def default_store() -> VersionStore:
    global _default_store
    if _default_store is None:
        from ..engine.store import store_from_environment
        _default_store = store_from_environment()
    return _default_store


def stored_histories(sandbox_id: str) -> dict[str, ModuleHistory]:
    """The histories the default store holds for ``sandbox_id`` in this session's scope."""
    return default_store().load(sandbox_id, scope=current_scope())


def stored_sandbox_ids() -> list[str]:
    """Ids of the sandboxes whose history the default store holds in this scope, sorted."""
    return sorted(default_store().list_sandboxes(scope=current_scope()))

