"""The child side of the process host: runs inside the child kernel and serves the parent.

The notebook's kernel starts a child IPython kernel (``jupyter_client``) and
runs :func:`serve` in it.  That applies the resource limits, opens a listening
socket on 127.0.0.1 and answers requests on one direct connection (a
``multiprocessing.connection``, about a hundred microseconds a round trip,
where the kernel's execute path takes milliseconds).

Requests run in the serving thread.  The parent interrupts a runaway request
through the kernel's own interrupt (SIGINT), which this module turns into a
``KeyboardInterrupt`` raised in the serving thread.  When the parent goes
away (its end of the connection closes), the child exits: no orphans.

Values cross by pickle.  Objects of sandbox code (instances, functions,
classes, modules, server handles) stay here and cross as references
(:class:`~sandbox_magic.hosts.process.RemoteObject` on the other side);
callables from the notebook arrive by value (cloudpickle).
"""

from __future__ import annotations

import io
import os
import pickle
import signal
import sys
import threading
import traceback
import types
from multiprocessing.connection import Connection, Listener
from typing import Any

import cloudpickle

from .. import api
from ..engine.artifact import Artifact
from ..engine.interpreter import raise_in_thread
from ..engine.reload import Change, plan_change
from ..engine.versions import VersionStore
from ..errors import SandboxError
from ..live.server import ServerRef
from .base import options_from_payload

SANDBOX_PREFIX = "sandbox_magic.sandboxes."
_objects: dict[int, Any] = {}      # oid -> object the parent holds a reference to
_busy = threading.Event()
_worker: list[int] = []


def _is_sandbox_object(obj: Any) -> bool:
    if isinstance(obj, types.MethodType) and _is_sandbox_object(obj.__self__):
        return True
    if isinstance(obj, ServerRef | types.ModuleType):
        return isinstance(obj, ServerRef) or obj.__name__.startswith(SANDBOX_PREFIX)
    if isinstance(obj, types.FunctionType | types.MethodType | type):
        mod = getattr(obj, "__module__", "") or ""
        return mod.startswith(SANDBOX_PREFIX)
    return (type(obj).__module__ or "").startswith(SANDBOX_PREFIX)


class _Out(pickle.Pickler):
    """Pickles results; sandbox objects become references the parent proxies."""

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, type) and obj.__module__ == "builtins":
            return None
        if _is_sandbox_object(obj):
            _objects[id(obj)] = obj
            kind = ("callable" if callable(obj) and not isinstance(obj, ServerRef)
                    else "object")
            try:
                text = repr(obj)
            except Exception:  # a broken __repr__ must not break the transfer
                text = f"<{type(obj).__qualname__}>"
            return ("ref", id(obj), kind, text[:200])
        return None


class _In(pickle.Unpickler):
    """Unpickles arguments; references the parent sends back become the objects."""

    def persistent_load(self, pid: Any) -> Any:
        tag, oid = pid
        if tag != "oid" or oid not in _objects:
            raise pickle.UnpicklingError(f"unknown object reference {pid!r}")
        return _objects[oid]


def _dumps(value: Any) -> bytes:
    buf = io.BytesIO()
    _Out(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    return buf.getvalue()


def _loads(data: bytes) -> Any:
    return _In(io.BytesIO(data)).load()


def _error(exc: BaseException) -> tuple[Any, ...]:
    tb = "".join(traceback.format_exception(exc))
    blob: bytes | None = None
    kind = type(exc)
    if not (kind.__module__ or "").startswith(SANDBOX_PREFIX):
        # the type by name (the parent imports the same one), its args and attributes
        state = {k: v for k, v in vars(exc).items() if _plain(v)}
        try:
            blob = pickle.dumps((kind.__module__, kind.__qualname__,
                                 tuple(a for a in exc.args if _plain(a)), state))
        except Exception:
            blob = None
    return ("error", f"{type(exc).__module__}.{type(exc).__qualname__}", str(exc), tb, blob)


def _plain(value: Any) -> bool:
    """Whether ``value`` pickles without references to sandbox code."""
    try:
        pickle.dumps(value)
    except Exception:
        return False
    return not _is_sandbox_object(value)


# ---------------------------------------------------------------- requests
def _sandbox(sandbox_id: str) -> Any:
    if api.find_host(sandbox_id) is None:
        api.create_sandbox(sandbox_id, store=VersionStore(), max_versions=None)
    return api.get_sandbox(sandbox_id)


def _reload(sandbox_id: str, artifacts: list[tuple[str, bytes]], options: dict[str, Any],
            fresh: bool) -> dict[str, Any]:
    _sandbox(sandbox_id)
    host = api.get_host(sandbox_id)
    st = host.state
    opts = options_from_payload(options)
    with st.lock:
        changes = []
        for module, blob in artifacts:
            art = Artifact.from_bytes(blob)
            ch = plan_change(st, art)
            if ch is None and fresh:
                ch = Change(module, art, "rerun")
            if ch is not None:
                changes.append(Change(module, art, "new"))
        if not changes:
            return {"migrated": 0, "notes": [], "run_order": []}
        results = host.execute(changes, opts)
    return {"migrated": max((r.migrated for r in results), default=0),
            "notes": list(dict.fromkeys(n for r in results for n in r.notes)),
            "run_order": list(dict.fromkeys(
                [c.module for c in changes] + [d for r in results for d in r.dependents]))}


def _dry_run(sandbox_id: str, artifacts: list[tuple[str, bytes]],
             options: dict[str, Any]) -> dict[str, Any]:
    """What reloading ``artifacts`` would do here (the parent numbers the versions)."""
    _sandbox(sandbox_id)
    host = api.get_host(sandbox_id)
    st = host.state
    with st.lock:
        changes = [Change(m, Artifact.from_bytes(blob), "new") for m, blob in artifacts]
        changes = [c for c in changes if plan_change(st, c.artifact) is not None]
        if not changes:
            return {"no_change": True}
        return host.dry_run(changes, options_from_payload(options)).to_dict()


def _handle(sandbox_id: str, req: tuple[Any, ...]) -> Any:
    op = req[0]
    if op == "ping":
        return os.getpid()
    _sandbox(sandbox_id)            # the child's own sandbox, made on first use
    if op == "reload":
        return _reload(sandbox_id, req[1], req[2], req[3])
    if op == "dry_run":
        return _dry_run(sandbox_id, req[1], req[2])
    if op == "resolve":
        return getattr(_sandbox(sandbox_id), req[1])
    if op == "module":
        return _sandbox(sandbox_id).modules[req[1]]
    if op == "getattr":
        return getattr(_objects[req[1]], req[2])
    if op == "setattr":
        setattr(_objects[req[1]], req[2], _loads(req[3]))
        return None
    if op == "call":
        args, kwargs = _loads(req[2])
        return _objects[req[1]](*args, **kwargs)
    if op == "callmethod":
        args, kwargs = _loads(req[3])
        return getattr(_objects[req[1]], req[2])(*args, **kwargs)
    if op == "repr":
        return repr(_objects[req[1]])
    if op == "release":
        for oid in req[1]:
            _objects.pop(oid, None)
        return None
    if op == "run":
        code = req[1] if isinstance(req[1], str) else cloudpickle.loads(req[1])
        return api.run(sandbox_id, code)
    if op == "start_server":
        server = req[1] if isinstance(req[1], str) else _loads(req[1])
        args = _loads(req[2])
        return api.start_server(sandbox_id, server, *args, name=req[3])
    if op == "server":
        return api.get_server(sandbox_id, req[1])
    if op == "servers":
        return api.list_servers(sandbox_id)
    if op == "restart":
        api.restart_sandbox(sandbox_id)
        return None
    raise ValueError(f"unknown request {op!r}")


def _loop(conn: Connection, sandbox_id: str) -> None:
    _worker.append(threading.get_ident())
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            os._exit(0)             # the parent is gone: so are we
        req = pickle.loads(data)
        _busy.set()
        try:
            try:
                reply: tuple[Any, ...] = ("ok", _dumps(_handle(sandbox_id, req)))
            except BaseException as exc:  # everything goes back to the parent
                reply = _error(exc)
            finally:
                _busy.clear()
        except KeyboardInterrupt as exc:   # an interrupt that landed just after the work
            reply = _error(exc)
        try:
            conn.send_bytes(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))
        except (EOFError, OSError):
            os._exit(0)


def _interrupt_worker(signum: int, frame: Any) -> None:
    """The kernel's interrupt (SIGINT) stops the request in progress, if any."""
    if _busy.is_set() and _worker:
        raise_in_thread(_worker[0], KeyboardInterrupt)


#: Data memory a child needs beyond what it uses when the limit is applied: loading the
#: sandbox's modules and answering calls (measured: about 20 MB for the engine's first
#: reload; the rest is room for the sandbox code itself).
HEADROOM = 64 << 20


def data_in_use() -> int | None:
    """This process's data memory (heap and private anonymous mappings, what
    ``RLIMIT_DATA`` bounds), in bytes; None where /proc does not say."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmData:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def apply_limits(memory_limit: int | None, cpu_limit: float | None) -> None:
    """``memory_limit`` bounds data memory (``RLIMIT_DATA``: what Python's objects live
    in; not the address space, of which a started kernel already maps ~800 MB);
    ``cpu_limit`` bounds CPU seconds.  A memory limit the child cannot even work under
    is refused in one line, naming the limit and what the child needs."""
    if not (memory_limit or cpu_limit):
        return
    try:
        import resource
    except ImportError:
        raise SandboxError("memory_limit and cpu_limit need a POSIX system (the resource "
                           "module); on this one, use call_timeout only") from None
    if memory_limit:
        used = data_in_use() if sys.platform.startswith("linux") else None
        if used is None:
            raise SandboxError("memory_limit needs Linux (RLIMIT_DATA, read from /proc); "
                               "use cpu_limit and call_timeout here")
        need = used + HEADROOM
        if memory_limit < need:
            raise SandboxError(
                f"memory_limit {memory_limit >> 20} MB is too small: the child kernel "
                f"already uses {used >> 20} MB of data memory and needs {need >> 20} MB "
                f"to work; give at least {-(-need // (64 << 20)) * 64} MB")
        resource.setrlimit(resource.RLIMIT_DATA, (memory_limit, memory_limit))
    if cpu_limit:
        soft = max(1, int(cpu_limit))
        resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 1))


def serve(sandbox_id: str, authkey: bytes, memory_limit: int | None,
          cpu_limit: float | None) -> int:
    """Apply the limits, listen on 127.0.0.1, serve one parent; return the port."""
    apply_limits(memory_limit, cpu_limit)
    signal.signal(signal.SIGINT, _interrupt_worker)
    # ipykernel puts back its own SIGINT handler after each execution: make it ours
    try:
        from IPython import get_ipython
        kernel = getattr(get_ipython(), "kernel", None)
        if kernel is not None:
            kernel.saved_sigint_handler = _interrupt_worker
    except ImportError:
        pass
    listener = Listener(("127.0.0.1", 0), authkey=authkey)
    port: int = listener.address[1]

    def accept() -> None:
        conn = listener.accept()
        listener.close()
        _loop(conn, sandbox_id)

    threading.Thread(target=accept, name="sandbox-child-server", daemon=True).start()
    return port
