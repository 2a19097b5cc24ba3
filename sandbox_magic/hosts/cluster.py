"""The cluster host: one sandbox on every engine of an ipyparallel cluster.

A reload is two-phase over the engines (see :mod:`sandbox_magic.hosts.engine_side`):

1. every engine compiles nothing new (the notebook sends the artifacts), runs
   the bodies, pairs objects and runs the ``state_handler`` on its own live
   objects, without committing; any refusal, error or silence past the
   per-engine ``timeout`` and every engine rolls back: nothing changes;
2. only then does each engine commit; if a commit fails after others
   committed, those roll back and the error says so;
3. the version is recorded once, in the notebook's store, and the engines
   close their transactions.

Every reload also sends the current version of every module, so an engine
that joined later or restarted catches up (it loads what it is missing) in
the same transaction; :func:`sync_sandbox` does it on demand.  The result's
``engines`` lists each engine's outcome and time.
"""

from __future__ import annotations

import time
import types
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import cloudpickle

from ..engine.dryrun import DryRun, numbered_here
from ..engine.reload import Change, ReloadOptions, ReloadResult, Transaction
from ..engine.sandbox import SandboxInfo, SandboxState
from ..errors import ReloadError, SandboxError
from . import engine_side
from .base import current_artifacts, options_payload

INSTALL = "pip install 'sandbox-magic[cluster]'"


def _ipp() -> Any:
    try:
        import ipyparallel
    except ImportError:
        raise SandboxError(f"cluster sandboxes need ipyparallel: {INSTALL}") from None
    return ipyparallel


def resolve_view(host: Any) -> Any:
    """A DirectView from a DirectView, a Client (all engines) or ``"ipyparallel"``."""
    ipp = _ipp()
    if isinstance(host, str):
        if host != "ipyparallel":
            raise SandboxError(f"unknown host {host!r}; use 'kernel', 'process', "
                               "'ipyparallel' or an ipyparallel Client or DirectView")
        try:
            host = ipp.Client()
        except Exception as exc:
            raise SandboxError(f"no running ipyparallel cluster in the default profile "
                               f"({exc}); start one with `ipcluster start -n 4` or "
                               "ipyparallel.Cluster(n=4).start_and_connect_sync()") from exc
    if isinstance(host, ipp.Client):
        return host.direct_view("all")     # every engine, also those that join later
    if isinstance(host, ipp.DirectView):
        return host
    raise SandboxError(f"host must be an ipyparallel Client or DirectView, got "
                       f"{type(host).__name__}")


class ClusterSandbox:
    """The handle of a cluster sandbox: its code runs on the engines.

    ``apply(fn)`` calls ``fn(sandbox)`` on every engine with that engine's
    handle and returns ``{engine: result}``; ``view`` is the DirectView.
    """

    def __init__(self, host: ClusterHost) -> None:
        self._host = host

    @property
    def id(self) -> str:
        return self._host.state.id

    @property
    def view(self) -> Any:
        return self._host.view

    @property
    def engines(self) -> list[int]:
        return self._host.targets()

    def apply(self, fn: Callable[[Any], Any]) -> dict[int, Any]:
        return self._host.run(fn, None)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(
            f"sandbox {self._host.state.id!r} runs on {len(self.engines)} engines: reach "
            f"{name!r} there, e.g. sb.apply(lambda s: s.{name})")

    def __repr__(self) -> str:
        mods = ", ".join(f"{m} v{v}" for m, v in self._host.state.current_versions().items())
        return (f"<Sandbox {self._host.state.id!r} on engines {self.engines}: "
                f"{mods or 'no modules'}>")


class ClusterHost:
    """A sandbox on every engine of a DirectView (see the module docstring)."""

    kind = "cluster"

    def __init__(self, state: SandboxState, view: Any, *, timeout: float | None = 60.0) -> None:
        self.state = state
        state.host = self
        self.view = view
        self.timeout = timeout
        self._handle = ClusterSandbox(self)
        self.last_engines: list[dict[str, Any]] = []   # outcomes of the latest transaction
        self._apply(engine_side.ensure, state.id)

    def targets(self) -> list[int]:
        t = self.view.targets
        client = self.view.client
        if t is None or t == "all" or (isinstance(t, slice) and t == slice(None)):
            return list(client.ids)
        return [t] if isinstance(t, int) else list(t)

    def _apply(self, fn: Callable[..., Any], *args: Any,
               engines: Iterable[int] | None = None) -> dict[int, Any]:
        """``fn(*args)`` on each engine; ``{engine: result or exception}``, none waited past timeout."""
        client = self.view.client
        pending = {e: client[e].apply_async(fn, *args)
                   for e in (self.targets() if engines is None else engines)}
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        out: dict[int, Any] = {}
        for e, ar in pending.items():
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                out[e] = ar.get(timeout=left)
            except Exception as exc:   # a RemoteError, a timeout, an engine that is gone
                out[e] = exc
        return out

    @staticmethod
    def _failed(replies: dict[int, Any]) -> dict[int, BaseException]:
        return {e: r for e, r in replies.items() if isinstance(r, BaseException)}

    @staticmethod
    def _say(failed: dict[int, BaseException]) -> str:
        parts = []
        for e, exc in sorted(failed.items()):
            name = getattr(exc, "ename", type(exc).__name__)
            text = getattr(exc, "evalue", str(exc)) or type(exc).__name__
            parts.append(f"engine {e}: {name}: {text}")
        return "; ".join(parts)

    # ------------------------------------------------------- SandboxHost
    @property
    def handle(self) -> ClusterSandbox:
        return self._handle

    def dry_run(self, changes: list[Change], options: ReloadOptions) -> DryRun:
        """Every engine runs the transaction up to its commit and undoes it: the report of
        the first engine, refused if any engine would refuse (naming those engines)."""
        started = time.perf_counter()
        st = self.state
        with st.lock:
            send = current_artifacts(st)           # catch-up for new or restarted engines
            send.update({c.module: c.artifact.to_bytes() for c in changes})
            engines = self.targets()
            replies = self._apply(engine_side.dry_run, st.id, list(send.items()),
                                  options_payload(options), engines=engines)
            failed = self._failed(replies)
            ok = [r for r in replies.values() if not isinstance(r, BaseException)]
            reply = dict(ok[0]) if ok else {}
            refusing = {e: r for e, r in replies.items()
                        if not isinstance(r, BaseException) and r.get("refused")}
            if failed or refusing:
                why = "; ".join([self._say(failed)] if failed else [])
                why += "; ".join(f"engine {e}: {r.get('reason')}" for e, r in
                                 sorted(refusing.items()))
                reply.update(refused=True, reason=f"refused on {len(failed) + len(refusing)} "
                             f"of {len(engines)} engines: {why}",
                             step=reply.get("step") or "prepare")
            return numbered_here(st, changes, reply, started)

    def execute(self, changes: list[Change], options: ReloadOptions, *,
                status: str = "hot_reloaded", fresh: bool = False, rerun: Iterable[str] = (),
                parallel: bool = False, timeout: float | None = None) -> list[ReloadResult]:
        started = time.perf_counter()
        st = self.state
        with st.lock:
            send = current_artifacts(st)           # catch-up for new or restarted engines
            send.update({c.module: c.artifact.to_bytes() for c in changes})
            arts = list(send.items())
            txid = uuid.uuid4().hex
            engines = self.targets()
            prepared = self._apply(engine_side.prepare, st.id, txid, arts,
                                   options_payload(options), engines=engines)
            failed = self._failed(prepared)
            if failed:
                self._apply(engine_side.end, txid, False, engines=engines)
                raise ReloadError(f"the reload was refused on {len(failed)} of {len(engines)} "
                                  f"engines, so no engine changed: {self._say(failed)}",
                                  step="prepare", module=", ".join(c.module for c in changes))
            committed = self._apply(engine_side.commit, txid, engines=engines)
            failed = self._failed(committed)
            tx = Transaction(st, changes, options, fresh=fresh, rerun=rerun)
            if not failed:
                try:
                    tx.ran_elsewhere(
                        [c.module for c in changes],
                        max((r["migrated"] for r in committed.values()), default=0),
                        list(dict.fromkeys(n for r in committed.values() for n in r["notes"])))
                    tx.record()
                except BaseException as exc:
                    tx.rollback()
                    failed = {-1: exc}
            self._apply(engine_side.end, txid, not failed, engines=engines)
            if failed:
                raise ReloadError(
                    f"the commit failed ({self._say(failed)}); every engine that had "
                    "committed was rolled back, so no engine changed", step="commit",
                    module=", ".join(c.module for c in changes))
            for m, _ in arts:
                rec = st.histories[m].current_record()
                st.modules.setdefault(m, types.ModuleType(st.fullname(m)))
                st.defined[m] = rec.artifact.defines
            per_engine = tuple(
                {"engine": e, "outcome": "committed" if prepared[e]["changes"] else "unchanged",
                 "seconds": prepared[e]["seconds"] + committed[e]["seconds"]}
                for e in engines)
            self.last_engines = list(per_engine)
            results = tx.results(status, started)
            return [ReloadResult(r.status, r.module, r.old_version, r.new_version, r.migrated,
                                 r.dependents, r.duration, r.notes, r.modules, per_engine)
                    for r in results]

    def sync(self) -> list[dict[str, Any]]:
        """Bring every engine to the current versions (engines that joined or restarted)."""
        self.execute([], ReloadOptions())
        return self.last_engines

    def run(self, code: str | Callable[..., Any], timeout: float | None) -> dict[int, Any]:
        payload = code if isinstance(code, str) else cloudpickle.dumps(code)
        replies = self._apply(_run_on_engine, self.state.id, payload)
        failed = self._failed(replies)
        if failed:
            raise SandboxError(f"run failed on {self._say(failed)}")
        return replies

    def start_server(self, server: Any, args: tuple[Any, ...], name: str | None) -> Any:
        raise SandboxError("servers of a cluster sandbox start on the engines: call "
                           "sm.start_server there, e.g. in the module code or with sb.apply")

    def server(self, name: str) -> Any:
        raise SandboxError("servers of a cluster sandbox live on the engines")

    def servers(self) -> list[Any]:
        return []

    def restart(self) -> None:
        self.execute([], ReloadOptions(), fresh=True)
        self.state.restart_count += 1

    def stop(self) -> None:
        try:
            self._apply(engine_side.destroy, self.state.id)
        finally:
            self.state.status = "destroyed"
            self.state.release_sources()

    def info(self) -> SandboxInfo:
        return self.state.info()


def _run_on_engine(sandbox_id: str, payload: Any) -> Any:
    import cloudpickle as cp

    from sandbox_magic import api
    from sandbox_magic.hosts import engine_side as side
    side.ensure(sandbox_id)
    code = payload if isinstance(payload, str) else cp.loads(payload)
    if callable(code):
        return code(api.get_sandbox(sandbox_id))
    return api.run(sandbox_id, code)
