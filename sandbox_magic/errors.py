"""Exception hierarchy: every error the engine raises derives from SandboxError.

Each message says what was wrong and what to do about it, so a notebook user
can act on it without reading the source.
"""

from __future__ import annotations

from typing import Any


class SandboxError(Exception):
    """Base class of every error raised by sandbox_magic."""


class InvalidSandboxIdError(SandboxError, ValueError):
    """A sandbox id that does not follow the naming rules."""


class SandboxExistsError(SandboxError):
    """create_sandbox was given an id that is already in use."""


class SandboxNotFoundError(SandboxError, LookupError):
    """No sandbox has the given id."""


class ModuleNotFoundInSandboxError(SandboxError, LookupError):
    """The sandbox has no module of that name."""


class VersionNotFoundError(SandboxError, LookupError):
    """The module has no retained version with that number."""


class AmbiguousNameError(SandboxError, AttributeError):
    """A top-level name is defined by more than one module of a sandbox."""


class CompileError(SandboxError, SyntaxError):
    """Source that does not compile.  Carries module, line, column and message."""

    def __init__(self, message: str, *, module: str | None, line: int | None,
                 column: int | None, text: str | None = None,
                 filename: str | None = None) -> None:
        if module:
            where = f"module {module!r}"
        else:
            where = "source" if line is None else "source (no module name given)"
        loc = f", line {line}" if line is not None else ""
        if column is not None and line is not None:
            loc += f", column {column}"
        full = f"cannot compile {where}{loc}: {message}"
        SandboxError.__init__(self, full)
        # SyntaxError attributes, so tracebacks and IDE tooling point at the spot.
        self.msg = full
        self.module = module
        self.line = self.lineno = line
        self.column = self.offset = column
        self.text = text
        self.filename = filename
        self.reason = message

    def __str__(self) -> str:
        return self.msg


class ArtifactError(SandboxError, ValueError):
    """Bytes that are not a usable artifact (corrupted, truncated, foreign)."""


class ReloadError(SandboxError):
    """A hot reload was refused; nothing was changed.

    ``step`` names the phase that failed (``"compile"``, ``"execute"``,
    ``"patch"``, ``"migrate"``, ``"validate"``, ``"suspend"``, ``"dependencies"``),
    ``module`` the module being loaded, and ``__cause__`` holds the original error.
    """

    def __init__(self, message: str, *, step: str, module: str | None = None,
                 sandbox_id: str | None = None, obj: Any = None) -> None:
        super().__init__(message)
        self.step = step
        self.module = module
        self.sandbox_id = sandbox_id
        self.obj = obj
        self.line: int | None = None   # line in the module's source, for step "execute"


class CallsInFlight(ReloadError):
    """Calls of methods of a migrating class began while the reload was migrating
    (from a method looked up just before the gate closed); the reload is undone
    and tried again (see :func:`sandbox_magic.engine.reload.execute`)."""

    def __init__(self, found: list[tuple[int, Any]]) -> None:
        names = ", ".join(sorted({getattr(code, "co_qualname", "?") for _, code in found}))
        super().__init__(f"calls of {names} began while the reload was migrating; "
                         "nothing was changed", step="busy")
        self.found = found


class CircularDependencyError(SandboxError):
    """Sandbox modules that import each other in a cycle."""

    def __init__(self, cycle: list[str], message: str | None = None) -> None:
        self.cycle = list(cycle)
        super().__init__(message or (
            "circular import between sandbox modules: " + " -> ".join(cycle)
            + "; move the shared code into a module that both import"))


class IncompatibleStateError(SandboxError):
    """Migrated state does not fit the shape of the old state."""

    def __init__(self, message: str, *, reason: str, keys: list[Any] | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.keys = keys or []


class SandboxTimeout(SandboxError, TimeoutError):
    """An operation did not finish in the time it was given."""


class HistoryError(SandboxError):
    """Undo/redo has nothing to step to, or the target version was dropped."""


class SandboxCrashedError(SandboxError):
    """The child process running a sandbox died (a crash, a limit, a kill) mid-request."""


class StaleObjectError(SandboxError):
    """A proxy into a child process that has since died or restarted."""


class RemoteError(SandboxError):
    """An exception raised in a sandbox's child process whose type cannot be rebuilt here.

    ``remote_type`` names it; ``remote_traceback`` is the child's traceback text.
    """

    def __init__(self, message: str, *, remote_type: str = "",
                 remote_traceback: str = "") -> None:
        super().__init__(message)
        self.remote_type = remote_type
        self.remote_traceback = remote_traceback
