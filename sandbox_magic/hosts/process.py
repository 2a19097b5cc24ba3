"""The process host: a sandbox that lives in its own child Python kernel.

A student's runaway loop, ``os.abort()`` or memory blow-up then takes down
only the child.  The notebook's kernel keeps the sandbox's history (in its
own store, as for every host) and drives the child over a direct connection
(see :mod:`sandbox_magic.hosts.child`):

* a reload compiles here, sends the artifacts, and the child runs the usual
  all-or-nothing transaction on its live objects (the ``state_handler`` is
  shipped by value with cloudpickle); only when the child has committed is
  the version recorded here, and if recording fails the child is put back;
* ``get_sandbox(id)`` returns a :class:`RemoteSandbox`: its functions run in
  the child; instances, classes and servers come back as :class:`RemoteObject`
  proxies, plain values by value, exceptions as themselves (with the child's
  traceback in ``remote_traceback``) or as :class:`RemoteError`;
* every request is bounded by ``call_timeout``: past it the child is
  interrupted, and killed if it does not answer; a dead child (a crash, a
  limit, a kill) fails the request in flight with :class:`SandboxCrashedError`
  and is started again with every module at its current version (at most
  ``max_restarts`` times within ``restart_window`` seconds); proxies into a
  dead child raise :class:`StaleObjectError`.
"""

from __future__ import annotations

import atexit
import importlib
import io
import logging
import os
import pickle
import re
import subprocess
import threading
import time
import types
import weakref
from collections.abc import Callable, Iterable
from multiprocessing.connection import Client, Connection
from typing import Any

import cloudpickle

from ..engine.dryrun import DryRun, numbered_here
from ..engine.reload import Change, ReloadOptions, ReloadResult, Transaction
from ..engine.sandbox import SandboxInfo, SandboxState
from ..errors import (
    RemoteError,
    SandboxCrashedError,
    SandboxError,
    SandboxTimeout,
    StaleObjectError,
)
from .base import current_artifacts, options_payload

log = logging.getLogger(__name__)

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", re.I)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_hosts: weakref.WeakSet[ProcessHost] = weakref.WeakSet()


def parse_size(value: int | str | None) -> int | None:
    """Bytes from ``512M``, ``2G``, ``1048576`` (None stays None)."""
    if value is None or isinstance(value, int):
        return value
    m = _SIZE.fullmatch(str(value))
    if not m:
        raise SandboxError(f"memory_limit {value!r} is not a size; use bytes or e.g. '512M'")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def _stop_all_children() -> None:
    for host in list(_hosts):
        host.stop()


atexit.register(_stop_all_children)


class _Out(pickle.Pickler):
    """Arguments to the child: proxies go back as references, the rest by value."""

    def __init__(self, file: io.BytesIO, host: ProcessHost) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.host = host

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, RemoteObject):
            obj._check()
            return ("oid", object.__getattribute__(obj, "_oid"))
        return None

    def reducer_override(self, obj: Any) -> Any:
        # functions and classes defined in the notebook travel by value
        if isinstance(obj, types.FunctionType | type) and \
                getattr(obj, "__module__", None) == "__main__":
            return cloudpickle.loads, (cloudpickle.dumps(obj),)
        return NotImplemented


class _In(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, host: ProcessHost) -> None:
        super().__init__(file)
        self.host = host

    def persistent_load(self, pid: Any) -> Any:
        _, oid, kind, text = pid
        return RemoteObject(self.host, oid, self.host.generation, kind, text)


class RemoteObject:
    """An object living in a sandbox's child process; attribute access and calls go there."""

    __slots__ = ("__weakref__", "_gen", "_host", "_kind", "_oid", "_text")

    def __init__(self, host: ProcessHost, oid: int, gen: int, kind: str, text: str) -> None:
        object.__setattr__(self, "_host", host)
        object.__setattr__(self, "_oid", oid)
        object.__setattr__(self, "_gen", gen)
        object.__setattr__(self, "_kind", kind)
        object.__setattr__(self, "_text", text)
        weakref.finalize(self, host._release, oid, gen)

    def _check(self) -> None:
        host: ProcessHost = object.__getattribute__(self, "_host")
        if object.__getattribute__(self, "_gen") != host.generation:
            raise StaleObjectError(
                f"{object.__getattribute__(self, '_text')} lived in a child process of sandbox "
                f"{host.state.id!r} that has since stopped; get it again from the sandbox")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        self._check()
        return self._host.request(("getattr", self._oid, name))

    def __setattr__(self, name: str, value: Any) -> None:
        self._check()
        self._host.request(("setattr", self._oid, name, self._host.dumps(value)))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self._check()
        return self._host.request(("call", self._oid, self._host.dumps((args, kwargs))))

    def __repr__(self) -> str:
        host: ProcessHost = object.__getattribute__(self, "_host")
        if object.__getattribute__(self, "_gen") != host.generation:
            return f"<stale {object.__getattribute__(self, '_text')}>"
        try:
            return str(host.request(("repr", object.__getattribute__(self, "_oid"))))
        except SandboxError:
            text: str = object.__getattribute__(self, "_text")
            return text


class RemoteSandbox:
    """The handle of a process sandbox: names resolve in the child, calls run there."""

    __slots__ = ("_host",)

    def __init__(self, host: ProcessHost) -> None:
        object.__setattr__(self, "_host", host)

    @property
    def id(self) -> str:
        host: ProcessHost = self._host
        return host.state.id

    @property
    def modules(self) -> dict[str, Any]:
        host: ProcessHost = self._host
        return {m: host.request(("module", m)) for m in host.state.modules}

    @property
    def info(self) -> SandboxInfo:
        host: ProcessHost = self._host
        return host.info()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        host: ProcessHost = self._host
        return host.request(("resolve", name))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a sandbox handle is read-only; change code with hot_reload_source()")

    def __repr__(self) -> str:
        host: ProcessHost = self._host
        mods = ", ".join(f"{m} v{v}" for m, v in host.state.current_versions().items())
        return f"<Sandbox {host.state.id!r} in process {host.pid}: {mods or 'no modules'}>"


class ProcessHost:
    """A sandbox in a child kernel (see the module docstring)."""

    kind = "process"
    max_restarts = 3
    restart_window = 60.0
    grace = 2.0          # seconds an interrupted child gets to answer before it is killed

    def __init__(self, state: SandboxState, *, memory_limit: int | str | None = None,
                 cpu_limit: float | None = None, call_timeout: float | None = None) -> None:
        self.state = state
        state.host = self
        self.memory_limit = parse_size(memory_limit)
        self.cpu_limit = cpu_limit
        self.call_timeout = call_timeout
        self.generation = 0
        self.restarts: list[float] = []
        self.pid: int | None = None
        self.failed: str | None = None
        self._lock = threading.RLock()
        self._released: list[tuple[int, int]] = []
        self._km: Any = None
        self._conn: Connection | None = None
        self._handle = RemoteSandbox(self)
        self._start()
        _hosts.add(self)

    # ---------------------------------------------------------------- child
    def _start(self) -> None:
        from jupyter_client.manager import KernelManager
        km = KernelManager(kernel_name="python3")
        # Its output is not the notebook's: a kernel's own log lines would only be noise.
        km.start_kernel(env={**os.environ, "SANDBOX_MAGIC_STORE": ":memory:",
                             "JPY_SESSION_NAME": ""},
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        kc = km.client()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=60)
            authkey = os.urandom(16)
            code = ("from sandbox_magic.hosts import child as _sandbox_child\n"
                    f"_sandbox_port = _sandbox_child.serve({self.state.id!r}, {authkey!r}, "
                    f"{self.memory_limit!r}, {self.cpu_limit!r})\n")
            reply = kc.execute_interactive(code, user_expressions={"port": "_sandbox_port"},
                                           timeout=60, store_history=False)
            content = reply["content"]
            if content.get("status") != "ok":
                raise SandboxError(f"the child process of sandbox {self.state.id!r} could not "
                                   f"start: {content.get('evalue')}")
            port = int(content["user_expressions"]["port"]["data"]["text/plain"])
        except BaseException:
            kc.stop_channels()
            km.shutdown_kernel(now=True)      # no child left behind
            raise
        kc.stop_channels()
        self._km = km
        self._conn = Client(("127.0.0.1", port), authkey=authkey)
        self.generation += 1
        self._released.clear()
        self.pid = self._raw(("ping",), 30)

    def _kill(self) -> None:
        km, self._km = self._km, None
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except OSError:
                pass
        if km is not None:
            try:
                km.shutdown_kernel(now=True)
            except Exception:   # already dead
                log.debug("shutting down the child of %s failed", self.state.id, exc_info=True)

    def _restart(self, why: str) -> None:
        now = time.monotonic()
        self.restarts = [t for t in self.restarts if now - t < self.restart_window]
        self.restarts.append(now)
        self._kill()
        if len(self.restarts) > self.max_restarts:
            self.failed = (f"its child process died {len(self.restarts)} times within "
                           f"{self.restart_window:.0f} s (last: {why}); not restarted again")
            return
        self._start()
        current = list(current_artifacts(self.state).items())
        if current:
            self._raw(("reload", current, options_payload(ReloadOptions()), True),
                      self.call_timeout)

    # ------------------------------------------------------------ requests
    def dumps(self, value: Any) -> bytes:
        buf = io.BytesIO()
        _Out(buf, self).dump(value)
        return buf.getvalue()

    def _release(self, oid: int, gen: int) -> None:
        self._released.append((oid, gen))

    def _raw(self, req: tuple[Any, ...], timeout: float | None) -> Any:
        """Send one request and wait for its reply (interrupt, then kill, past ``timeout``)."""
        conn = self._conn
        if conn is None:
            raise SandboxCrashedError(f"sandbox {self.state.id!r} has no child process "
                                      f"({self.failed or 'stopped'})")
        try:
            conn.send_bytes(pickle.dumps(req, protocol=pickle.HIGHEST_PROTOCOL))
            try:
                ready = conn.poll(timeout)
            except KeyboardInterrupt:       # the notebook's interrupt reaches the child
                self._interrupt(conn)
                raise
            reply = pickle.loads(conn.recv_bytes()) if ready else None
        except (EOFError, OSError, ConnectionError) as exc:
            code = self._exit_code()
            self._restart(f"exit code {code}" if code is not None else str(exc))
            raise SandboxCrashedError(
                f"the child process of sandbox {self.state.id!r} died "
                f"({'exit code ' + str(code) if code is not None else exc}); "
                + ("it was started again with every module at its current version"
                   if self.failed is None else self.failed)) from None
        if reply is None:
            if not self._interrupt(conn):
                self._restart(f"no answer within call_timeout={timeout} s")
                raise SandboxTimeout(
                    f"sandbox {self.state.id!r} did not answer within "
                    f"call_timeout={timeout} s; its child process was killed and started "
                    "again with every module at its current version")
            raise SandboxTimeout(f"sandbox {self.state.id!r}: the call exceeded "
                                 f"call_timeout={timeout} s and was interrupted")
        return self._answer(reply)

    def _exit_code(self) -> int | None:
        try:
            proc = self._km.provisioner.process if self._km is not None else None
            return proc.wait(timeout=1) if proc is not None else None
        except Exception:
            return None

    def _interrupt(self, conn: Connection) -> bool:
        """Interrupt the child's request; True when it answered (the answer is dropped)."""
        try:
            self._km.interrupt_kernel()
            if conn.poll(self.grace):
                conn.recv_bytes()
                return True
        except (EOFError, OSError, ConnectionError):
            pass
        except Exception:   # the kernel manager could not signal it
            log.debug("interrupting the child of %s failed", self.state.id, exc_info=True)
        return False

    def _answer(self, reply: tuple[Any, ...]) -> Any:
        if reply[0] == "ok":
            return _In(io.BytesIO(reply[1]), self).load()
        _, type_name, message, tb, blob = reply
        exc: BaseException | None = None
        if blob is not None:
            try:
                module, qualname, args, attrs = pickle.loads(blob)
                kind: Any = importlib.import_module(module)
                for part in qualname.split("."):
                    kind = getattr(kind, part)
                if isinstance(kind, type) and issubclass(kind, BaseException):
                    exc = kind.__new__(kind)
                    exc.args = args
                    exc.__dict__.update(attrs)
            except Exception:   # a type this side does not have
                exc = None
        if exc is None:
            exc = RemoteError(f"{type_name}: {message}", remote_type=type_name,
                              remote_traceback=tb)
        else:
            exc.remote_traceback = tb  # type: ignore[attr-defined]
            exc.add_note(f"raised in the child process of sandbox {self.state.id!r}:\n{tb}")
        raise exc

    def request(self, req: tuple[Any, ...], timeout: float | None = None) -> Any:
        """One request to the child (see :mod:`sandbox_magic.hosts.child`)."""
        with self._lock:
            if self.failed is not None and self._conn is None:
                raise SandboxCrashedError(f"sandbox {self.state.id!r}: {self.failed}")
            gone = [oid for oid, gen in self._released if gen == self.generation]
            self._released.clear()
            if gone:
                self._raw(("release", gone), self.call_timeout)
            return self._raw(req, timeout if timeout is not None else self.call_timeout)

    # ------------------------------------------------------- SandboxHost
    @property
    def handle(self) -> RemoteSandbox:
        return self._handle

    def execute(self, changes: list[Change], options: ReloadOptions, *,
                status: str = "hot_reloaded", fresh: bool = False, rerun: Iterable[str] = (),
                parallel: bool = False, timeout: float | None = None) -> list[ReloadResult]:
        """The child runs the transaction; the version is recorded here once it committed."""
        started = time.perf_counter()
        st = self.state
        with st.lock:
            previous = list(current_artifacts(self.state).items())
            sent = [(c.module, c.artifact.to_bytes()) for c in changes]
            sent += [(m, st.histories[m].current_record().artifact.to_bytes())
                     for m in rerun if m in st.histories]
            if fresh:
                sent = previous
            reply = self.request(("reload", sent, options_payload(options), fresh or bool(rerun)))
            tx = Transaction(st, changes, options, fresh=fresh, rerun=rerun)
            tx.ran_elsewhere(list(reply["run_order"]), reply["migrated"], list(reply["notes"]))
            try:
                tx.record()
            except BaseException:
                tx.rollback()
                if previous:    # put the child back on the versions still recorded
                    self.request(("reload", previous, options_payload(ReloadOptions()), False))
                raise
            for m in tx.run_order:
                if m in st.histories and st.histories[m].current is not None:
                    rec = st.histories[m].current_record()
                    st.modules[m] = types.ModuleType(st.fullname(m))
                    st.defined[m] = rec.artifact.defines
            return tx.results(status, started)

    def dry_run(self, changes: list[Change], options: ReloadOptions) -> DryRun:
        """The child runs the transaction up to its commit and undoes it; the version
        numbers are this kernel's."""
        started = time.perf_counter()
        st = self.state
        with st.lock:
            sent = [(c.module, c.artifact.to_bytes()) for c in changes]
            reply = self.request(("dry_run", sent, options_payload(options)))
            return numbered_here(st, changes, reply, started)

    def run(self, code: str | Callable[..., Any], timeout: float | None) -> Any:
        payload = code if isinstance(code, str) else cloudpickle.dumps(code)
        return self.request(("run", payload), timeout)

    def start_server(self, server: Any, args: tuple[Any, ...], name: str | None) -> Any:
        ref = server if isinstance(server, str) else self.dumps(server)
        return self.request(("start_server", ref, self.dumps(args), name))

    def server(self, name: str) -> Any:
        return self.request(("server", name))

    def servers(self) -> list[Any]:
        result: list[Any] = self.request(("servers",))
        return result

    def restart(self) -> None:
        with self.state.lock:
            self.request(("restart",))
            self.state.restart_count += 1

    def stop(self) -> None:
        with self._lock:
            self._kill()
            self.state.status = "destroyed"
            self.state.release_sources()
        _hosts.discard(self)

    def info(self) -> SandboxInfo:
        return self.state.info()
