"""The kernel side of the JupyterLab panel: a Jupyter comm with a versioned JSON protocol.

Protocol 1 (documented in ``labextension/PROTOCOL.md``): the panel opens a comm to the
target ``sandbox_magic`` and sends requests ``{"protocol": 1, "id", "method",
"params"}``; every request gets exactly one reply ``{"protocol": 1, "id",
"ok": true, "result"}`` or ``{"protocol": 1, "id", "ok": false, "error":
{"code", "message"}}``.  The kernel pushes ``{"protocol": 1, "event":
"changed", ...}`` on every reload, rollback and sandbox change, and when
``%load_ext sandbox_magic`` runs it opens a comm to the frontend target
``sandbox_magic.panel`` so that a panel opened earlier attaches.

Every field is validated; anything malformed, unknown, oversized or wrongly
typed gets an error reply and changes nothing.

After a kernel restart the store still holds each sandbox's history: ``list``
names those sandboxes with ``"loaded": false``, ``history`` and ``diff`` read
them from the store, and ``rollback``, ``undo`` and ``redo`` restore the
sandbox first (the reply's ``restored`` says which modules were loaded).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from typing import Any, Literal, TypedDict

from .. import api
from ..api import classroom
from ..api.provenance import cell_provenance
from ..engine.sandbox import is_sandbox_id
from ..errors import (
    HistoryError,
    ModuleNotFoundInSandboxError,
    SandboxError,
    SandboxNotFoundError,
    VersionNotFoundError,
)
from . import activity
from .panel_rows import history_rows, timeline

log = logging.getLogger(__name__)

PROTOCOL = 1
TARGET = "sandbox_magic"
FRONTEND_TARGET = "sandbox_magic.panel"
MAX_MESSAGE = 64 * 1024
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")

# method -> {param: kind}
METHODS: dict[str, dict[str, str]] = {
    "hello": {},
    "list": {},
    "history": {"sandbox": "sandbox", "module": "module"},
    "diff": {"sandbox": "sandbox", "module": "module", "v1": "version", "v2": "version"},
    "rollback": {"sandbox": "sandbox", "module": "module", "version": "version"},
    "undo": {"sandbox": "sandbox", "module": "module"},
    "redo": {"sandbox": "sandbox", "module": "module"},
    "probe": {"sandbox": "sandbox", "module": "module", "expr": "expression"},
    "ran": {},
    "follow_apply": {"sandbox": "sandbox", "module": "module", "version": "version"},
    "follow_skip": {"sandbox": "sandbox", "module": "module", "version": "version"},
}
#: Most cells a ``ran`` reply lists (the newest).
RAN_MAX = 200
#: Longest probe expression, and longest value text, in characters.
MAX_EXPR = 2000
MAX_VALUE = 200


# ---------------------------------------------------------- message shapes
class Request(TypedDict, total=False):
    protocol: int
    id: int | str
    method: str
    params: dict[str, Any]


class ErrorBody(TypedDict):
    code: str
    message: str


class Reply(TypedDict, total=False):
    protocol: int
    id: int | str | None
    ok: bool
    result: Any          # one of the *Result shapes below
    error: ErrorBody


class SandboxEntry(TypedDict, total=False):
    id: str
    modules: dict[str, int]          # loaded: module -> current version
    stored_modules: dict[str, int]   # only in the history: module -> current version
    loaded: bool
    host: str                        # kernel, process or cluster (loaded sandboxes)
    engines: int                     # a cluster sandbox's number of engines
    teacher_waiting: dict[str, int]  # following: module -> the teacher's version waiting


class ListResult(TypedDict, total=False):
    sandboxes: list[SandboxEntry]
    protocol: int                    # in the reply to "hello" only


class FailedAttempt(TypedDict):
    at: str                          # ISO 8601, UTC
    message: str
    state_handler: str | None


class HistoryResult(TypedDict):
    sandbox: str
    module: str
    versions: list[dict[str, Any]]   # panel rows (see panel_rows.history_rows)
    # added in 0.1 without a new protocol number; panels must not require them:
    undo_to: int | None              # the version undo would make current (None: nothing)
    redo_to: int | None
    dropped: int                     # versions no longer retained (max_versions)
    max_versions: int | None         # the sandbox's retention (None: all, or not loaded)
    failed: list[FailedAttempt]      # failed reloads this kernel saw, newest first
    unsaved: str | None              # why new versions are kept in memory only, if they are
    following: Following | None      # the published history this sandbox follows, if any
    teacher: TeacherOffer | None     # the teacher's version of this module waiting, if any


class Following(TypedDict):
    path: str                        # the published store
    auto: bool                       # new teacher versions are applied at once
    applied: int | None              # the teacher's version of this module applied here


class TeacherOffer(TypedDict):
    version: int                     # the teacher's version number
    state_handler: str | None        # the teacher's state handler that goes with it
    current: int | None              # the version here it is diffed against
    added: int
    removed: int
    lines: list[list[str]]           # the diff: [marker, text], as in DiffResult


class DiffResult(TypedDict):
    v1: int
    v2: int
    added: int
    removed: int
    lines: list[list[str]]           # [marker, text]: "+", "-" or " "


class FollowResult(TypedDict):
    lines: list[str]                 # what the magic would print, one line per version
    applied: int | None              # the teacher's version of the module now applied here


class ActionResult(TypedDict):
    module: str
    status: str
    old_version: int | None
    new_version: int | None
    migrated: int
    restored: dict[str, int]         # modules loaded from the history first


class ProbeValue(TypedDict):
    version: int
    value: str                       # repr of the value (or "Type: message"), shortened
    error: bool                      # the version's code or the expression raised


class ProbeResult(TypedDict):
    expr: str
    values: list[ProbeValue]         # every retained version, newest first


class RanResult(TypedDict):
    runs: list[dict[str, Any]]       # {"execution_count", "cell_id", "modules": [...]}


class ChangedEvent(TypedDict):
    protocol: int
    event: Literal["changed"]
    kind: str                        # the API event: reloaded, rolled_back, undo, ...
    sandbox: str
    module: str | None
    version: int | None


class ProtocolError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _check_param(name: str, kind: str, value: Any) -> Any:
    ok = {"sandbox": lambda v: is_sandbox_id(v),
          "module": lambda v: isinstance(v, str) and _MODULE.fullmatch(v) is not None,
          "version": lambda v: type(v) is int and 1 <= v < 2**31,
          "expression": lambda v: isinstance(v, str) and 0 < len(v.strip()) <= MAX_EXPR}[kind]
    if not ok(value):
        what = {"sandbox": "a sandbox id", "module": "a module name",
                "version": "a positive integer",
                "expression": f"a Python expression of at most {MAX_EXPR} characters"}[kind]
        raise ProtocolError("bad_params", f"{name} must be {what}")
    return value


def parse_request(data: Any) -> tuple[Any, str, dict[str, Any]]:
    """Validate a request; return ``(id, method, params)`` or raise ProtocolError."""
    if not isinstance(data, dict):
        raise ProtocolError("bad_message", "a request must be a JSON object")
    try:
        size = len(json.dumps(data))
    except (TypeError, ValueError):
        raise ProtocolError("bad_message", "the request is not plain JSON") from None
    if size > MAX_MESSAGE:
        raise ProtocolError("too_large", f"requests are limited to {MAX_MESSAGE} bytes")
    if data.get("protocol") != PROTOCOL or type(data.get("protocol")) is not int:
        raise ProtocolError("unsupported_protocol",
                            f"this kernel speaks protocol {PROTOCOL}; update the extension "
                            "or the sandbox_magic package so that both match")
    rid = data.get("id")
    if not ((type(rid) is int and abs(rid) < 2**53) or (isinstance(rid, str) and len(rid) <= 64)):
        raise ProtocolError("bad_message", "id must be an integer or a short string")
    method = data.get("method")
    if not isinstance(method, str) or method not in METHODS:
        raise ProtocolError("unknown_method", f"unknown method {str(method)[:40]!r}; "
                            f"known: {', '.join(sorted(METHODS))}")
    params = data.get("params", {})
    if not isinstance(params, dict):
        raise ProtocolError("bad_params", "params must be a JSON object")
    spec = METHODS[method]
    extra = set(params) - set(spec)
    if extra:
        raise ProtocolError("bad_params", f"unexpected params {sorted(map(str, extra))[:5]}")
    missing = set(spec) - set(params)
    if missing:
        raise ProtocolError("bad_params", f"missing params {sorted(missing)}")
    return rid, method, {k: _check_param(k, spec[k], params[k]) for k in spec}


def _sandboxes() -> list[SandboxEntry]:
    """The sandboxes of this kernel, then those only the store knows (after a restart)."""
    out: list[SandboxEntry] = [
        {"id": i.id, "modules": i.modules, "stored_modules": i.stored_modules, "loaded": True,
         "host": i.host, "engines": len(i.engines)}
        for i in api.list_sandboxes()]
    for entry in out:
        f = classroom.follower(entry["id"])
        if f is not None:
            entry["teacher_waiting"] = {t.module: t.version for t in f.pending()}
    live = {s["id"] for s in out}
    for sid in api.stored_sandbox_ids():
        if sid in live or not is_sandbox_id(sid):
            continue
        try:
            stored = api.history_modules(sid)
        except SandboxError:        # forgotten meanwhile
            continue
        out.append({"id": sid, "modules": {}, "stored_modules": stored, "loaded": False})
    return out


def _result(r: Any, restored: dict[str, int] | None = None) -> ActionResult:
    return {"module": r.module, "status": r.status, "old_version": r.old_version,
            "new_version": r.new_version, "migrated": r.migrated, "restored": restored or {}}


def _bind_handle(sandbox_id: str, restored: dict[str, int]) -> None:
    """A sandbox the panel restored gets its handle in the notebook, as with the magics."""
    if not restored:
        return
    try:
        from IPython import get_ipython
    except ImportError:
        return
    ip = get_ipython()
    magics = ip.magics_manager.registry.get("SandboxMagics") if ip is not None else None
    if magics is not None:
        magics._bind_handle(sandbox_id)


def _shorten(text: str) -> str:
    return text if len(text) <= MAX_VALUE else text[:MAX_VALUE - 1] + "…"


def _probe(sandbox_id: str, module: str, expr: str) -> ProbeResult:
    try:
        compile(expr, "<probe>", "eval")
    except SyntaxError as exc:
        raise ProtocolError("bad_params", f"the probe is not an expression: {exc.msg}") from None
    values: list[ProbeValue] = []
    for version, value in sorted(api.probe(sandbox_id, module, expr).items(), reverse=True):
        error = isinstance(value, BaseException)
        try:
            text = f"{type(value).__name__}: {value}" if error else repr(value)
        except Exception as exc:   # a repr that raises is the answer too
            text, error = f"repr failed: {type(exc).__name__}", True
        values.append({"version": version, "value": _shorten(text), "error": error})
    return {"expr": expr, "values": values}


def _following(sandbox_id: str, module: str) -> tuple[Following | None, TeacherOffer | None]:
    f = classroom.follower(sandbox_id)
    if f is None:
        return None, None
    following: Following = {"path": str(f.path), "auto": f.auto,
                            "applied": f.applied.get(module)}
    waiting = {t.module: t for t in f.pending()}
    if module not in waiting:
        return following, None
    t = waiting[module]
    try:
        d = f.diff(module)
    except SandboxError:        # applied or skipped meanwhile
        return following, None
    return following, {"version": t.version, "state_handler": t.state_handler,
                       "current": d.old_version or None, "added": d.lines_added,
                       "removed": d.lines_removed, "lines": [list(x) for x in d.lines()]}


def _follow_action(method: str, sandbox_id: str, module: str, version: int) -> FollowResult:
    f = classroom.follower(sandbox_id)
    if f is None:
        raise ProtocolError("not_found", f"{sandbox_id} follows no teacher in this kernel")
    waiting = {t.module: t for t in f.pending()}
    if module not in waiting:
        raise ProtocolError("nothing_to_do", f"no teacher version of {module} is waiting "
                            "(applied or skipped already)")
    if waiting[module].version != version:      # not the one whose diff was shown
        raise ProtocolError("stale", f"the teacher's version of {module} waiting is now "
                            f"v{waiting[module].version}, not v{version}: look at its diff")
    if method == "follow_apply":
        lines = f.apply(module, version)
    else:
        f.skip(module, version)
        lines = [f"{sandbox_id}.{module}: v{version} from the teacher skipped"]
    return {"lines": lines, "applied": f.applied.get(module)}


def call(method: str, p: dict[str, Any]) -> (ListResult | HistoryResult | DiffResult
                                             | ActionResult | ProbeResult | RanResult
                                             | FollowResult):
    if method == "ran":
        # cells that load or switch versions are not outputs' makers: no badges
        return {"runs": [r.to_dict() for r in cell_provenance()
                         if not r.versioning][-RAN_MAX:]}
    if method in ("hello", "list"):
        out: ListResult = {"sandboxes": _sandboxes()}
        if method == "hello":
            out["protocol"] = PROTOCOL
        return out
    if method == "history":
        rows = history_rows(p["sandbox"], p["module"])
        for r in rows:
            r["loaded_at"] = r["loaded_at"].isoformat()
            r["origin_at"] = r["origin_at"].isoformat() if r["origin_at"] else None
        t = timeline(p["sandbox"], p["module"])
        failed: list[FailedAttempt] = [
            {"at": f["at"].isoformat(), "message": f["message"],
             "state_handler": f["state_handler"]} for f in t["failed"]]
        following, teacher = _following(p["sandbox"], p["module"])
        return {"sandbox": p["sandbox"], "module": p["module"], "versions": rows,
                "undo_to": t["undo_to"], "redo_to": t["redo_to"], "dropped": t["dropped"],
                "max_versions": t["max_versions"], "failed": failed, "unsaved": t["unsaved"],
                "following": following, "teacher": teacher}
    if method == "diff":
        d = api.diff_versions(p["sandbox"], p["module"], p["v1"], p["v2"])
        return {"v1": p["v1"], "v2": p["v2"], "added": d.lines_added,
                "removed": d.lines_removed, "lines": [list(x) for x in d.lines()]}
    sid, mod = p["sandbox"], p["module"]
    if method in ("follow_apply", "follow_skip"):
        return _follow_action(method, sid, mod, p["version"])
    if method == "probe":
        return _probe(sid, mod, p["expr"])
    if method == "rollback":
        restored = api.load_before_change(sid, mod, version=p["version"])
        _bind_handle(sid, restored)
        return _result(api.rollback_module(sid, mod, p["version"]), restored)
    step = -1 if method == "undo" else +1
    restored = api.load_before_change(sid, mod, step=step)
    _bind_handle(sid, restored)
    return _result((api.undo if step < 0 else api.redo)(sid, mod), restored)


def handle_message(data: Any) -> Reply:
    """Answer one request; never raises."""
    rid = data.get("id") if isinstance(data, dict) else None
    if not (type(rid) is int or (isinstance(rid, str) and len(rid) <= 64)):
        rid = None
    try:
        rid, method, params = parse_request(data)
        return {"protocol": PROTOCOL, "id": rid, "ok": True, "result": call(method, params)}
    except ProtocolError as exc:
        code, message = exc.code, str(exc)
    except (SandboxNotFoundError, ModuleNotFoundInSandboxError, VersionNotFoundError) as exc:
        code, message = "not_found", str(exc)
    except HistoryError as exc:
        code, message = "nothing_to_do", str(exc)
    except SandboxError as exc:
        code, message = "failed", str(exc)
    except Exception as exc:  # a bug must not take the kernel down
        code, message = "internal", f"{type(exc).__name__}: {exc}"
    return {"protocol": PROTOCOL, "id": rid, "ok": False,
            "error": {"code": code, "message": message[:2000]}}


class CommHub:
    """Open comms to panels; replies to requests, pushes change events."""

    def __init__(self) -> None:
        self.comms: list[Any] = []
        self.lock = threading.Lock()

    def opened(self, comm: Any, open_msg: Any) -> None:
        with self.lock:
            self.comms.append(comm)

        def on_msg(msg: Any) -> None:
            data = msg.get("content", {}).get("data") if isinstance(msg, dict) else None
            comm.send(handle_message(data))

        def on_close(msg: Any) -> None:
            with self.lock:
                if comm in self.comms:
                    self.comms.remove(comm)

        comm.on_msg(on_msg)
        comm.on_close(on_close)

    def push(self, event: str, sandbox_id: str, payload: dict[str, Any]) -> None:
        msg: ChangedEvent = {"protocol": PROTOCOL, "event": "changed", "kind": event,
                             "sandbox": sandbox_id, "module": payload.get("module"),
                             "version": payload.get("version")}
        with self.lock:
            comms = list(self.comms)
        for c in comms:
            try:
                c.send(msg)
            except Exception:   # a closed frontend must not break a reload
                log.debug("could not push %s to a panel", msg.get("event"), exc_info=True)


    def push_ran(self, run: Any) -> None:
        """A cell ran sandbox code: which versions (the panel marks the cell's outputs)."""
        if run.versioning:
            return
        msg = {"protocol": PROTOCOL, "event": "ran", **run.to_dict()}
        with self.lock:
            comms = list(self.comms)
        for c in comms:
            try:
                c.send(msg)
            except Exception:
                log.debug("could not push a cell's provenance to a panel", exc_info=True)


hub = CommHub()


def register(ipython: Any) -> None:
    """Register the comm target and tell an already open panel that we are here."""
    from comm import create_comm, get_comm_manager
    manager = get_comm_manager()
    manager.register_target(TARGET, hub.opened)
    activity.listen()
    if hub.push not in api.listeners:
        api.listeners.append(hub.push)
    try:
        create_comm(target_name=FRONTEND_TARGET,
                    data={"protocol": PROTOCOL, "event": "hello"}).close()
    except Exception:   # no frontend listening (a plain IPython shell): nothing to tell
        log.debug("no panel to greet", exc_info=True)
