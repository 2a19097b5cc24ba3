"""Supervisors and the server registry of a sandbox (the OTP supervision tree)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from ..errors import SandboxError
from .server import Server, ServerError, ServerProcess


# ------------------------------------------------------------------ supervisors
@dataclass(frozen=True)
class ChildSpec:
    """How a supervisor starts a child: a server class (or ``"module:Name"``), args, name.

    ``restart``: ``"permanent"`` (always restarted), ``"transient"`` (restarted
    only after a crash) or ``"temporary"`` (never restarted).
    """

    server: Any
    args: tuple[Any, ...] = ()
    name: str | None = None
    restart: str = "permanent"


class Supervisor:
    """Base class of supervisors: override :meth:`children` and the class attributes.

    ``strategy``: ``"one_for_one"`` restarts the crashed child, ``"one_for_all"``
    restarts every child, ``"rest_for_one"`` the crashed child and those started
    after it.  More than ``max_restarts`` restarts within ``max_seconds`` make
    the supervisor give up and stop its children.
    """

    strategy = "one_for_one"
    max_restarts = 3
    max_seconds = 5.0

    def children(self) -> list[ChildSpec | tuple[Any, ...] | Any]:
        return []


_STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one")


def _as_spec(child: Any) -> ChildSpec:
    if isinstance(child, ChildSpec):
        return child
    if isinstance(child, tuple):
        return ChildSpec(*child)
    return ChildSpec(child)


class SupervisorProcess:
    """A running supervisor: its children and their restart history."""

    def __init__(self, state: Any, sup: Supervisor) -> None:
        self.state = state
        self.sup = sup
        if sup.strategy not in _STRATEGIES:
            raise SandboxError(f"unknown supervisor strategy {sup.strategy!r}; "
                               f"use one of {', '.join(_STRATEGIES)}")
        self.specs = [_as_spec(c) for c in sup.children()]
        self.procs: list[ServerProcess | None] = [None] * len(self.specs)
        self.restarts: list[float] = []
        self.lock = threading.RLock()
        self.stopping = False
        self.status = "running"

    def start(self) -> None:
        for i in range(len(self.specs)):
            self._start_child(i)

    def _start_child(self, i: int) -> None:
        spec = self.specs[i]
        cls = resolve_class(self.state, spec.server, Server, "server")
        self.procs[i] = spawn(self.state, cls, spec.args, spec.name, self._child_exit)

    def _child_exit(self, proc: ServerProcess, crash: BaseException | None) -> None:
        with self.lock:
            if self.stopping or proc not in self.procs:
                return
            i = self.procs.index(proc)
            spec = self.specs[i]
            if spec.restart == "temporary" or (spec.restart == "transient" and crash is None):
                self.procs[i] = None
                return
            now = time.monotonic()
            self.restarts = [t for t in self.restarts if now - t < self.sup.max_seconds]
            self.restarts.append(now)
            if len(self.restarts) > self.sup.max_restarts:
                self.status = "failed"
                self.stop(wait=False)   # siblings' exits need this lock: never join here
                return
            if self.sup.strategy == "one_for_one":
                group = [i]
            elif self.sup.strategy == "one_for_all":
                group = list(range(len(self.specs)))
            else:
                group = list(range(i, len(self.specs)))
            for j in reversed(group):
                other = self.procs[j]
                self.procs[j] = None
                if other is not None and other is not proc and other.alive:
                    unregister(self.state, other)
                    other.stop(wait=False)
            for j in group:
                self._start_child(j)

    def stop(self, wait: bool = True) -> None:
        with self.lock:
            self.stopping = True
            procs = [p for p in reversed(self.procs) if p is not None and p.alive]
        for p in procs:
            p.stop(wait=wait and threading.current_thread() is not p.thread)



def resolve_class(state: Any, ref: Any, base: type, what: str) -> type:
    """A class object, ``"module:Name"`` or ``"Name"`` resolved inside the sandbox."""
    if isinstance(ref, str):
        mod, sep, name = ref.partition(":")
        try:
            cls = getattr(state.get_module(mod), name) if sep else state.resolve(ref)
        except AttributeError:
            raise SandboxError(f"sandbox {state.id!r} has no {what} {ref!r}") from None
    else:
        cls = ref
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise SandboxError(f"{ref!r} is not a {base.__name__} subclass")
    return cls


def unregister(state: Any, proc: ServerProcess) -> None:
    with state.server_lock:
        if proc.name is not None and state.named.get(proc.name) is proc:
            del state.named[proc.name]
        if proc in state.servers:
            state.servers.remove(proc)


def spawn(state: Any, cls: type, args: tuple[Any, ...], name: str | None,
          on_exit: Any = None) -> ServerProcess:
    with state.server_lock:
        if name is not None:
            other = state.named.get(name)
            if other is not None and other.alive:
                raise SandboxError(f"a server named {name!r} is already running in sandbox "
                                   f"{state.id!r}")

        def exited(proc: ServerProcess, crash: BaseException | None) -> None:
            unregister(state, proc)
            if on_exit is not None:
                on_exit(proc, crash)

        try:
            proc = ServerProcess(state, cls, tuple(args), name, exited)
        except Exception as exc:
            raise ServerError(f"server {cls.__name__} failed in init: "
                              f"{type(exc).__name__}: {exc}") from exc
        state.servers.append(proc)
        if name is not None:
            state.named[name] = proc
        return proc


def start_sandbox_supervisor(state: Any, supervisor: Any) -> None:
    if isinstance(supervisor, Supervisor):
        sup = supervisor
    else:
        cls = resolve_class(state, supervisor, Supervisor, "supervisor")
        sup = cls()
    proc = SupervisorProcess(state, sup)
    state.supervisor_spec = supervisor
    state.supervisor = proc
    try:
        proc.start()
    except BaseException:
        proc.stop()
        raise


def stop_all(state: Any) -> None:
    if state.supervisor is not None:
        state.supervisor.stop()
    with state.server_lock:
        procs = list(state.servers)
    for p in procs:
        p.stop()


def restart_tree(state: Any) -> None:
    stop_all(state)
    if state.supervisor_spec is not None:
        start_sandbox_supervisor(state, state.supervisor_spec)


