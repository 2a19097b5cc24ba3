"""sandbox-magic: live, versioned, stateful hot code reloading for Python and Jupyter.

The engine (everything importable here) needs no IPython; ``%load_ext
sandbox_magic`` adds the notebook magics on top of it.
"""

from __future__ import annotations

from ._api import (create_sandbox, destroy_sandbox, diff_versions, get_module_version,
                   get_sandbox, get_sandbox_info, get_version_history, hot_reload,
                   get_server, hot_reload_source, list_module_versions, list_sandboxes,
                   list_servers, redo, restart_sandbox, restore_sandbox, set_default_store,
                   rollback_module, run, start_server, undo)
from ._scope import current_scope, set_history_scope
from ._live import ChildSpec, Supervisor
from ._preservation import CapturedState, PreserveResult, StatePreservation
from ._server import Server, ServerError, ServerRef
from ._batch import batch_hot_reload
from ._artifact import Artifact, CompileInfo, compile_file, compile_sandbox, compile_source
from ._diff import VersionDiff
from ._errors import (AmbiguousNameError, ArtifactError, CircularDependencyError, CompileError,
                      HistoryError, IncompatibleStateError, InvalidSandboxIdError,
                      ModuleNotFoundInSandboxError, ReloadError, SandboxError,
                      SandboxExistsError, SandboxNotFoundError, SandboxTimeout,
                      VersionNotFoundError)
from ._manager import ModuleVersionManager
from ._reload import ReloadResult
from ._sandbox import Sandbox, SandboxInfo
from ._store import SQLiteVersionStore, StoreWarning
from ._versions import VersionInfo, VersionStore

__version__ = "0.1.0"

__all__ = [
    "CapturedState", "ChildSpec", "PreserveResult", "Server", "ServerError", "ServerRef",
    "StatePreservation", "Supervisor", "batch_hot_reload", "restore_sandbox",
    "set_default_store", "SQLiteVersionStore", "StoreWarning", "get_server", "list_servers", "start_server",
    "AmbiguousNameError", "Artifact", "ArtifactError", "CircularDependencyError",
    "CompileError", "CompileInfo", "HistoryError", "IncompatibleStateError",
    "InvalidSandboxIdError", "ModuleNotFoundInSandboxError", "ModuleVersionManager",
    "ReloadError", "ReloadResult", "Sandbox", "SandboxError", "SandboxExistsError",
    "SandboxInfo", "SandboxNotFoundError", "SandboxTimeout", "VersionDiff", "VersionInfo",
    "VersionNotFoundError", "VersionStore", "compile_file", "compile_sandbox",
    "compile_source", "create_sandbox", "destroy_sandbox", "diff_versions",
    "get_module_version", "get_sandbox", "get_sandbox_info", "get_version_history",
    "hot_reload", "hot_reload_source", "list_module_versions", "list_sandboxes", "redo",
    "restart_sandbox", "rollback_module", "run", "undo", "current_scope", "set_history_scope",
]


def load_ipython_extension(ipython):  # type: ignore[no-untyped-def]
    """``%load_ext sandbox_magic``: register the magics (imported lazily)."""
    from ._magics import load_ipython_extension as load

    load(ipython)
