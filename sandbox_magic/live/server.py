"""Servers (the GenServer analog) and their mailbox loops.

A :class:`Server` subclass lives in a sandbox module and holds no state of its
own: :func:`start_server` creates a process that owns the state, runs a thread
with a mailbox, and passes the state to the callbacks.  Because the callbacks
are looked up on a sandbox class at every message, a reload changes the code
the next message runs; the state is migrated by ``code_change`` or a
``state_handler`` while the server is suspended.

Suspension is a gate in front of the mailbox: the message in progress
finishes, new messages wait in the queue, nothing is lost or reordered.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from ..errors import SandboxError, SandboxTimeout

log = logging.getLogger(__name__)

_pids = itertools.count(1)


class ServerError(SandboxError):
    """A server callback raised, or the server is not running."""


class Server:
    """Base class of servers defined in sandbox modules.

    Override the callbacks you need; the state is whatever ``init`` returns.
    """

    def init(self, *args: Any) -> Any:
        return None

    def handle_call(self, request: Any, state: Any) -> tuple[Any, Any]:
        raise ServerError(f"{type(self).__name__} does not handle calls ({request!r})")

    def handle_cast(self, request: Any, state: Any) -> Any:
        return state

    def handle_info(self, message: Any, state: Any) -> Any:
        return state

    def code_change(self, old_state: Any, old_version: int | None, new_version: int) -> Any:
        return old_state

    def terminate(self, reason: Any, state: Any) -> None:
        return None


_STOP = object()


class ServerProcess:
    """The running side of a server: state, mailbox, thread, suspension gate."""

    def __init__(self, sandbox: Any, cls: type, args: tuple[Any, ...], name: str | None,
                 on_exit: Callable[[ServerProcess, BaseException | None], None] | None = None
                 ) -> None:
        self.sandbox = sandbox
        self.cls = cls
        self.args = args
        self.name = name
        self.pid = next(_pids)
        self.on_exit = on_exit
        self.mailbox: queue.Queue[Any] = queue.Queue()
        self.gate = threading.Condition()
        self.suspended = False
        self.busy = False
        self.alive = False
        self.exit_reason: Any = None
        self.impl: Server = cls()
        self.state = self.impl.init(*args)
        self.handled = 0
        self.thread = threading.Thread(target=self._loop, daemon=True,
                                       name=f"server-{name or cls.__name__}-{self.pid}")
        self.alive = True
        self.thread.start()

    # ----------------------------------------------------------------- loop
    def _loop(self) -> None:
        crash: BaseException | None = None
        while True:
            msg = self.mailbox.get()
            with self.gate:
                while self.suspended and msg is not _STOP:
                    self.gate.wait()
                self.busy = True
            try:
                if msg is _STOP:
                    break
                self._dispatch(msg)
            except BaseException as exc:  # a crash ends the process, like OTP
                crash = exc
                break
            finally:
                with self.gate:
                    self.busy = False
                    self.gate.notify_all()
        self._exit(crash)

    def _dispatch(self, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        self.handled += 1
        if kind == "call":
            _, request, fut = msg
            try:
                reply, self.state = self.impl.handle_call(request, self.state)
            except BaseException as exc:
                fut.set_exception(ServerError(
                    f"server {self.label} crashed handling call {request!r}: "
                    f"{type(exc).__name__}: {exc}"))
                raise
            fut.set_result(reply)
        elif kind == "cast":
            self.state = self.impl.handle_cast(msg[1], self.state)
        elif kind == "info":
            self.state = self.impl.handle_info(msg[1], self.state)
        elif kind == "sys":
            _, fn, fut = msg
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)

    def _exit(self, crash: BaseException | None) -> None:
        self.exit_reason = crash if crash is not None else "normal"
        try:
            self.impl.terminate(self.exit_reason, self.state)
        except Exception:   # the server is ending either way
            log.exception("terminate() of server %s raised", self.label)
        with self.gate:
            self.alive = False
            self.gate.notify_all()
        while True:  # callers still waiting get an error, never silence
            try:
                msg = self.mailbox.get_nowait()
            except queue.Empty:
                break
            if msg is not _STOP and msg[0] in ("call", "sys"):
                msg[-1].set_exception(ServerError(f"server {self.label} is not running"))
        if self.on_exit is not None:
            self.on_exit(self, crash)
        if crash is not None:       # after the supervisor heard of it: logging takes time
            log.warning("server %s crashed: %s: %s", self.label, type(crash).__name__, crash)

    @property
    def label(self) -> str:
        return f"{self.name or self.cls.__name__}#{self.pid}"

    # ------------------------------------------------------------ messages
    def call(self, request: Any, timeout: float | None = 5.0) -> Any:
        if not self.alive:
            raise ServerError(f"server {self.label} is not running ({self.exit_reason})")
        fut: Future[Any] = Future()
        self.mailbox.put(("call", request, fut))
        try:
            return fut.result(timeout)
        except FutureTimeout:
            raise SandboxTimeout(f"call to server {self.label} got no reply within "
                                 f"{timeout} s") from None

    def cast(self, request: Any) -> None:
        if not self.alive:
            raise ServerError(f"server {self.label} is not running ({self.exit_reason})")
        self.mailbox.put(("cast", request))

    def send(self, message: Any) -> None:
        if self.alive:
            self.mailbox.put(("info", message))

    def run_in_loop(self, fn: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Run ``fn`` between two messages, in the server's own thread."""
        fut: Future[Any] = Future()
        self.mailbox.put(("sys", fn, fut))
        try:
            return fut.result(timeout)
        except FutureTimeout:
            raise SandboxTimeout(f"server {self.label} did not answer within {timeout} s"
                                 ) from None

    def stop(self, timeout: float = 5.0, wait: bool = True) -> None:
        """Stop after the messages already queued; wait for the thread unless told not to."""
        if self.alive:
            self.mailbox.put(_STOP)
            if wait and threading.current_thread() is not self.thread:
                self.thread.join(timeout)

    # ----------------------------------------------------------- suspension
    def suspend(self, timeout: float) -> None:
        """Stop taking new messages once the one in progress finishes."""
        deadline = time.monotonic() + timeout
        with self.gate:
            self.suspended = True
            while self.busy and self.alive:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.suspended = False
                    self.gate.notify_all()
                    raise SandboxTimeout(
                        f"server {self.label} was still handling a message after "
                        f"suspend_timeout={timeout} s")
                self.gate.wait(left)

    def resume(self) -> None:
        with self.gate:
            self.suspended = False
            self.gate.notify_all()


class ServerRef:
    """Handle on a running server."""

    __slots__ = ("_proc",)

    def __init__(self, proc: ServerProcess) -> None:
        self._proc = proc

    def call(self, request: Any, timeout: float | None = 5.0) -> Any:
        """Send ``request`` and wait for the reply."""
        return self._proc.call(request, timeout)

    def cast(self, request: Any) -> None:
        """Send ``request`` without waiting."""
        self._proc.cast(request)

    def send(self, message: Any) -> None:
        """Deliver ``message`` to ``handle_info``."""
        self._proc.send(message)

    def stop(self) -> None:
        self._proc.stop()

    def get_state(self, timeout: float = 5.0) -> Any:
        """The server's state, read between two messages."""
        return self._proc.run_in_loop(lambda: self._proc.state, timeout)

    @property
    def alive(self) -> bool:
        return self._proc.alive

    @property
    def name(self) -> str | None:
        return self._proc.name

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def server_class(self) -> type:
        return self._proc.cls

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ServerRef) and other._proc is self._proc

    def __hash__(self) -> int:
        return hash(self._proc.pid)

    def __repr__(self) -> str:
        status = "alive" if self.alive else f"exited: {self._proc.exit_reason!r}"
        return f"<ServerRef {self._proc.label} {status}>"
