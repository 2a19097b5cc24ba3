"""The in-kernel host: a sandbox's modules live in the notebook kernel's own process."""

from __future__ import annotations

import ast
import threading
from collections.abc import Callable, Iterable
from typing import Any

from ..engine.dryrun import DryRun, dry_run
from ..engine.interpreter import raise_in_thread, thread_interrupts_ok
from ..engine.reload import Change, ReloadOptions, ReloadResult, execute
from ..engine.sandbox import Sandbox, SandboxInfo, SandboxState
from ..errors import CompileError, SandboxError, SandboxTimeout
from ..live.server import Server, ServerRef
from ..live.supervisors import resolve_class, restart_tree, spawn, stop_all


class KernelHost:
    """Modules in ``sys.modules`` of this process; objects shared with the notebook as they are."""

    kind = "kernel"

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        state.host = self

    @property
    def handle(self) -> Sandbox:
        return self.state.handle

    def execute(self, changes: list[Change], options: ReloadOptions, *,
                status: str = "hot_reloaded", fresh: bool = False, rerun: Iterable[str] = (),
                parallel: bool = False, timeout: float | None = None) -> list[ReloadResult]:
        return execute(self.state, changes, options, status=status, fresh=fresh, rerun=rerun,
                       parallel=parallel, timeout=timeout)

    def dry_run(self, changes: list[Change], options: ReloadOptions) -> DryRun:
        return dry_run(self.state, changes, options)

    def run(self, code: str | Callable[[Sandbox], Any], timeout: float | None) -> Any:
        st = self.state
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
            raise SandboxError(f"run() takes source text or a callable, got "
                               f"{type(code).__name__}")
        if timeout is None:
            return job()
        return _run_with_timeout(job, timeout, st.id)

    def start_server(self, server: type[Server] | str, args: tuple[Any, ...],
                     name: str | None) -> ServerRef:
        cls = resolve_class(self.state, server, Server, "server")
        return ServerRef(spawn(self.state, cls, args, name))

    def server(self, name: str) -> ServerRef:
        st = self.state
        proc = st.named.get(name)
        if proc is None or not proc.alive:
            running = ", ".join(sorted(st.named)) or "none"
            raise SandboxError(f"no server named {name!r} in sandbox {st.id!r} "
                               f"(running: {running})")
        return ServerRef(proc)

    def servers(self) -> list[ServerRef]:
        return [ServerRef(p) for p in list(self.state.servers) if p.alive]

    def restart(self) -> None:
        st = self.state
        with st.lock:
            execute(st, [], ReloadOptions(), fresh=True)
            st.restart_count += 1
            restart_tree(st)

    def stop(self) -> None:
        st = self.state
        with st.lock:
            stop_all(st)
            st.unregister_all()
            st.release_sources()
            st.status = "destroyed"

    def info(self) -> SandboxInfo:
        return self.state.info()


def _split_trailing_expr(source: str) -> tuple[Any, Any]:
    try:
        tree = ast.parse(source, "<sandbox run>")
    except SyntaxError as exc:
        raise CompileError(exc.msg, module=None, line=exc.lineno, column=exc.offset,
                           text=exc.text) from None
    tail = None
    last = tree.body[-1] if tree.body else None
    if isinstance(last, ast.Expr):
        tree.body.pop()
        tail = compile(ast.Expression(last.value), "<sandbox run>", "eval")
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
        assert t.ident is not None
        if thread_interrupts_ok() and raise_in_thread(t.ident, SandboxTimeout):
            raise SandboxTimeout(f"run() in sandbox {sandbox_id!r} exceeded its timeout of "
                                 f"{timeout} s; the code was interrupted")
        raise SandboxTimeout(f"run() in sandbox {sandbox_id!r} exceeded its timeout of "
                             f"{timeout} s; this interpreter cannot interrupt it, so it goes "
                             f"on in the background thread {t.name!r}")
    if "error" in box:
        raise box["error"]
    return box.get("value")
