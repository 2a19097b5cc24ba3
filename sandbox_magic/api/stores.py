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
    """
    global _default_store
    from ..engine.store import MEMORY, SQLiteVersionStore
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
        from ..engine.store import store_from_environment
        _default_store = store_from_environment()
    return _default_store


def stored_histories(sandbox_id: str) -> dict[str, ModuleHistory]:
    """The histories the default store holds for ``sandbox_id`` in this session's scope."""
    return default_store().load(sandbox_id, scope=current_scope())


def stored_sandbox_ids() -> list[str]:
    """Ids of the sandboxes whose history the default store holds in this scope, sorted."""
    return sorted(default_store().list_sandboxes(scope=current_scope()))

