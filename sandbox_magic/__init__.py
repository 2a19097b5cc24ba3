"""sandbox-magic: live, versioned, stateful hot code reloading for Python and Jupyter.

The engine (everything importable here) needs no IPython; ``%load_ext
sandbox_magic`` adds the notebook magics on top of it.
"""

from __future__ import annotations

from importlib import metadata as _metadata
from typing import Any

from . import api  # noqa: F401  (sandbox_magic.api: the API by concern)
from .api import (
    bisect,
    cell_provenance,
    create_sandbox,
    destroy_sandbox,
    diff_versions,
    get_module_version,
    get_sandbox,
    get_sandbox_info,
    get_server,
    get_version_history,
    hot_reload,
    hot_reload_source,
    list_module_versions,
    list_sandboxes,
    list_servers,
    probe,
    redo,
    restart_sandbox,
    restore_sandbox,
    rollback_module,
    run,
    set_default_store,
    start_server,
    sync_sandbox,
    undo,
    unwatch,
    watch,
)
from .api.batch import batch_hot_reload
from .api.classroom import Follower, follow, publish, unfollow, unpublish
from .api.manager import ModuleVersionManager
from .api.preservation import CapturedState, PreserveResult, StatePreservation
from .engine.artifact import Artifact, CompileInfo, compile_file, compile_sandbox, compile_source
from .engine.diff import VersionDiff
from .engine.dryrun import ClassMigration, DryRun
from .engine.provenance import CellRun, RanModule
from .engine.reload import ReloadResult
from .engine.sandbox import Sandbox, SandboxInfo
from .engine.scope import current_scope, set_history_scope
from .engine.store import SQLiteVersionStore, StoreWarning
from .engine.versions import VersionInfo, VersionStore
from .errors import (
    AmbiguousNameError,
    ArtifactError,
    CallsInFlight,
    CircularDependencyError,
    CompileError,
    HistoryError,
    IncompatibleStateError,
    InvalidSandboxIdError,
    ModuleNotFoundInSandboxError,
    ReloadError,
    RemoteError,
    SandboxCrashedError,
    SandboxError,
    SandboxExistsError,
    SandboxNotFoundError,
    SandboxTimeout,
    StaleObjectError,
    VersionNotFoundError,
)
from .hosts.process import RemoteObject, RemoteSandbox
from .live.server import Server, ServerError, ServerRef
from .live.supervisors import ChildSpec, Supervisor

__version__ = next((d.version for d in _metadata.distributions(name="sandbox-magic")), "0+unknown")

__all__ = [
    "AmbiguousNameError",
    "Artifact",
    "ArtifactError",
    "CallsInFlight",
    "CapturedState",
    "CellRun",
    "ChildSpec",
    "CircularDependencyError",
    "ClassMigration",
    "CompileError",
    "CompileInfo",
    "DryRun",
    "Follower",
    "HistoryError",
    "IncompatibleStateError",
    "InvalidSandboxIdError",
    "ModuleNotFoundInSandboxError",
    "ModuleVersionManager",
    "PreserveResult",
    "RanModule",
    "ReloadError",
    "ReloadResult",
    "RemoteError",
    "RemoteObject",
    "RemoteSandbox",
    "SQLiteVersionStore",
    "Sandbox",
    "SandboxCrashedError",
    "SandboxError",
    "SandboxExistsError",
    "SandboxInfo",
    "SandboxNotFoundError",
    "SandboxTimeout",
    "Server",
    "ServerError",
    "ServerRef",
    "StaleObjectError",
    "StatePreservation",
    "StoreWarning",
    "Supervisor",
    "VersionDiff",
    "VersionInfo",
    "VersionNotFoundError",
    "VersionStore",
    "batch_hot_reload",
    "bisect",
    "cell_provenance",
    "compile_file",
    "compile_sandbox",
    "compile_source",
    "create_sandbox",
    "current_scope",
    "destroy_sandbox",
    "diff_versions",
    "follow",
    "get_module_version",
    "get_sandbox",
    "get_sandbox_info",
    "get_server",
    "get_version_history",
    "hot_reload",
    "hot_reload_source",
    "list_module_versions",
    "list_sandboxes",
    "list_servers",
    "probe",
    "publish",
    "redo",
    "restart_sandbox",
    "restore_sandbox",
    "rollback_module",
    "run",
    "set_default_store",
    "set_history_scope",
    "start_server",
    "sync_sandbox",
    "undo",
    "unfollow",
    "unpublish",
    "unwatch",
    "watch",
]


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext sandbox_magic``: register the magics (imported lazily)."""
    from .jupyter.magics import load_ipython_extension as load

    load(ipython)
