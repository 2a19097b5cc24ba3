"""The host seam: what the API needs from wherever a sandbox's code runs."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ..engine.dryrun import DryRun
    from ..engine.reload import Change, ReloadOptions, ReloadResult
    from ..engine.sandbox import Sandbox, SandboxInfo, SandboxState
    from ..live.server import Server


@runtime_checkable
class SandboxHost(Protocol):
    """A sandbox as the API drives it.

    ``state`` holds what the notebook's kernel keeps about the sandbox whatever
    the host: its id, history scope, the version histories (recorded in the
    notebook's store) and the lock that serializes changes.  Everything that
    touches the sandbox's code or objects goes through the methods below.
    """

    kind: str                    # "kernel", "process", "cluster"
    state: SandboxState

    @property
    def handle(self) -> Sandbox | Any:
        """The object users reach modules and definitions through (or proxies of them)."""
        ...

    def execute(self, changes: list[Change], options: ReloadOptions, *, status: str = ...,
                fresh: bool = ..., rerun: Iterable[str] = ..., parallel: bool = ...,
                timeout: float | None = ...) -> list[ReloadResult]:
        """Apply one reload transaction, all or nothing, and record its versions."""
        ...

    def dry_run(self, changes: list[Change], options: ReloadOptions) -> DryRun:
        """What :meth:`execute` would do, everything undone before the commit."""
        ...

    def run(self, code: str | Callable[[Sandbox], Any], timeout: float | None) -> Any:
        """Run source (the trailing expression's value returned) or a callable."""
        ...

    def start_server(self, server: type[Server] | str, args: tuple[Any, ...],
                     name: str | None) -> Any:
        """Start a server; returns its handle (a ServerRef, or a proxy of one)."""
        ...

    def server(self, name: str) -> Any:
        """The running server registered under ``name`` (its handle)."""
        ...

    def servers(self) -> list[Any]:
        """Handles of every running server."""
        ...

    def restart(self) -> None:
        """Reload every module fresh at its current version; restart the supervisor tree."""
        ...

    def stop(self) -> None:
        """Stop servers and drop the modules; the history stays in the store."""
        ...

    def info(self) -> SandboxInfo:
        ...


def options_payload(options: ReloadOptions) -> dict[str, Any]:
    """Reload options as another process takes them (the state handler by value)."""
    import cloudpickle
    return {"state_handler": cloudpickle.dumps(options.state_handler)
            if options.state_handler is not None else None,
            "handler_name": options.handler_name,
            "use_state_preservation": options.use_state_preservation,
            "coordinate_dependencies": options.coordinate_dependencies,
            "suspend_timeout": options.suspend_timeout,
            "check": options.check if options.check is None or isinstance(options.check, str)
            else cloudpickle.dumps(options.check)}


def options_from_payload(payload: dict[str, Any]) -> ReloadOptions:
    """The other side of :func:`options_payload`."""
    import cloudpickle

    from ..engine.reload import ReloadOptions
    values = dict(payload)
    handler = values.pop("state_handler", None)
    check = values.pop("check", None)
    return ReloadOptions(cloudpickle.loads(handler) if handler else None,
                         check=cloudpickle.loads(check) if isinstance(check, bytes) else check,
                         **values)


def current_artifacts(state: SandboxState) -> dict[str, bytes]:
    """Every loaded module's current version, as artifact bytes."""
    return {m: state.histories[m].current_record().artifact.to_bytes()
            for m in state.modules if state.histories.get(m) and state.histories[m].current}
