"""The public API: the registry of sandboxes and every operation on them.

One module per concern: ``registry`` (the sandboxes of this kernel and their
hosts), ``events`` (what the panels follow), ``stores`` (where histories are
kept), ``lifecycle``, ``reloading``, ``queries`` (versions and histories, also
after a restart) and ``running`` (code and servers).  ``sandbox_magic``
re-exports the public names; the magics, widgets and comm protocol use these
functions, never the engine's internals.
"""

from ..engine.sandbox import validate_sandbox_id
from ..engine.scope import current_scope, set_history_scope
from .events import emit, listeners
from .inspection import bisect, probe
from .lifecycle import (
                        create_sandbox,
                        destroy_sandbox,
                        get_sandbox,
                        get_sandbox_info,
                        list_sandboxes,
                        restart_sandbox,
                        restore_sandbox,
                        stored_history_origin,
                        sync_sandbox,
)
from .provenance import cell_provenance
from .queries import (
                        diff_versions,
                        get_module_version,
                        get_version_history,
                        history_modules,
                        is_loaded,
                        list_module_versions,
                        load_before_change,
                        module_history,
                        sandbox_histories,
                        unsaved_reason,
)
from .registry import find_host, get_host, get_state
from .reloading import hot_reload, hot_reload_source, redo, reload_modules, rollback_module, undo
from .running import get_server, list_servers, run, start_server
from .stores import default_store, set_default_store, stored_histories, stored_sandbox_ids
from .watching import Watcher, WatchEvent, unwatch, watch

__all__ = [
                        "WatchEvent",
                        "Watcher",
                        "bisect",
                        "cell_provenance",
                        "create_sandbox",
                        "current_scope",
                        "default_store",
                        "destroy_sandbox",
                        "diff_versions",
                        "emit",
                        "find_host",
                        "get_host",
                        "get_module_version",
                        "get_sandbox",
                        "get_sandbox_info",
                        "get_server",
                        "get_state",
                        "get_version_history",
                        "history_modules",
                        "hot_reload",
                        "hot_reload_source",
                        "is_loaded",
                        "list_module_versions",
                        "list_sandboxes",
                        "list_servers",
                        "listeners",
                        "load_before_change",
                        "module_history",
                        "probe",
                        "redo",
                        "reload_modules",
                        "restart_sandbox",
                        "restore_sandbox",
                        "rollback_module",
                        "run",
                        "sandbox_histories",
                        "set_default_store",
                        "set_history_scope",
                        "start_server",
                        "stored_histories",
                        "stored_history_origin",
                        "stored_sandbox_ids",
                        "sync_sandbox",
                        "undo",
                        "unsaved_reason",
                        "unwatch",
                        "validate_sandbox_id",
                        "watch",
]
