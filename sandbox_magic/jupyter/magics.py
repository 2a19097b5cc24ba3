"""IPython magics: ``%%sandbox_reload`` and friends (``%load_ext sandbox_magic``)."""

from __future__ import annotations

import functools
import itertools
import linecache
import logging
import os
import shlex
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.display import display

from .. import api
from ..api import classroom, provenance
from ..engine.artifact import infer_module_name
from ..engine.sandbox import Sandbox
from ..engine.scope import describe
from ..engine.versions import VersionStore
from ..errors import CompileError, ReloadError, SandboxError, SandboxNotFoundError
from ..hosts.process import RemoteSandbox
from . import activity
from .display import DiffDisplay

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
_handler_cells = itertools.count(1)


def parse_argstring(magic: Any, line: str) -> Any:
    """The magic's arguments, split as a shell would (``"my history.ipynb"`` is one
    argument, without its quotes; IPython's own splitter keeps the quotes)."""
    try:
        argv = shlex.split(line, posix=os.name != "nt")
    except ValueError as exc:          # an unclosed quote
        raise MagicError(f"cannot read the arguments ({exc}): {line.strip()}") from None
    return magic.parser.parse_args(argv)


def _id_module_rest(magic: Any, line: str) -> tuple[str, str, str]:
    """``ID MODULE EXPR...`` with the expression taken as typed (Python's quotes kept)."""
    parts = line.strip().split(None, 2)
    if len(parts) < 3:
        magic.parser.parse_args(parts)     # the usage error argparse gives
    return parts[0], parts[1], _unquote(parts[2].strip())


def _unquote(text: str) -> str:
    """An argument as typed, without the quotes that kept it one argument."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _cluster_view(profile: str, targets: str | None) -> Any:
    """The DirectView of a running ipyparallel cluster (all engines, or ``targets``)."""
    try:
        import ipyparallel as ipp
    except ImportError:
        raise MagicError("--cluster needs ipyparallel: pip install 'sandbox-magic[cluster]'") \
            from None
    try:
        client = ipp.Client(profile=profile)
    except Exception as exc:
        raise MagicError(f"no running ipyparallel cluster for profile {profile!r} ({exc}); "
                         f"start one with: ipcluster start -n 4 --profile={profile}") from None
    if targets is None:
        return client[:]
    try:
        ids = [int(t) for t in targets.split(",") if t.strip()]
    except ValueError:
        raise MagicError(f"--targets takes engine numbers like 0,1,2, not {targets!r}") \
            from None
    return client[ids]


class MagicError(SandboxError):
    """An error reported by a magic: shown as a short message, not a traceback."""


def usage_errors(fn: F) -> F:
    """Report every engine error a magic meets as its message, never a traceback.

    Unknown sandboxes, modules and versions, nothing to undo, refused reloads
    and bad paths all end here as a :class:`MagicError`, which
    ``_show_magic_error`` prints on one line (compile and reload errors add
    the lines of the cell they point at).  Errors that are not the engine's
    (a bug) keep their traceback.
    """
    @functools.wraps(fn)
    def wrapper(self: Any, *args: Any) -> Any:
        try:
            return fn(self, *args)
        except MagicError:
            raise
        except CompileError as exc:
            raise MagicError(_compile_message(exc)) from None
        except ReloadError as exc:
            raise MagicError(_reload_message(exc)) from None
        except SandboxError as exc:
            raise MagicError(str(exc)) from None
    return wrapper  # type: ignore[return-value]


@magics_class
class SandboxMagics(Magics):
    """The sandbox magics; one instance per shell."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.cell_modules: dict[tuple[str, str], str] = {}   # (sandbox, cell id) -> module
        self.pending_handlers: dict[tuple[str, str | None], Any] = {}
        self.current_cell_id: str | None = None

    @property
    def _user_ns(self) -> dict[str, Any]:
        assert self.shell is not None, "the magics are registered with a shell"
        return self.shell.user_ns

    # ------------------------------------------------------------- helpers
    def remember_cell(self, info: Any) -> None:
        self.current_cell_id = getattr(info, "cell_id", None)

    def _bind_handle(self, sandbox_id: str) -> None:
        if not sandbox_id.isidentifier():
            return
        ns = self._user_ns
        existing = ns.get(sandbox_id)
        if (existing is None and sandbox_id not in ns) or (isinstance(existing, Sandbox | RemoteSandbox) and existing.id == sandbox_id):
            ns[sandbox_id] = api.get_sandbox(sandbox_id)

    def _ensure(self, sandbox_id: str) -> None:
        if sandbox_id not in {s.id for s in api.list_sandboxes()}:
            info = api.create_sandbox(sandbox_id)
            if info.stored_modules:
                mods = ", ".join(f"{m} v{v}" for m, v in info.stored_modules.items())
                print(f"{sandbox_id}: {api.stored_history_origin(sandbox_id)} ({mods}); "
                      f"numbering continues. %sandbox_restore {sandbox_id} loads them all.")

    @staticmethod
    def _not_loaded(sandbox_id: str) -> MagicError:
        """The error for a command that needs the sandbox loaded in this kernel."""
        api.validate_sandbox_id(sandbox_id)
        try:
            stored = api.history_modules(sandbox_id)
        except SandboxNotFoundError:
            return MagicError(f"no sandbox {sandbox_id!r} and no recorded history for it; "
                              f"run a %%sandbox_reload {sandbox_id} cell first")
        mods = ", ".join(f"{m} v{v}" for m, v in stored.items())
        return MagicError(f"sandbox {sandbox_id!r} is not loaded in this kernel (its history "
                          f"is stored: {mods}); %sandbox_restore {sandbox_id} loads it")

    def _change(self, sandbox_id: str, module: str, action: str, fn: Callable[[], Any],
                version: int | None = None, step: int = 0) -> None:
        """Rollback, undo or redo; a sandbox that is only in the store is restored first."""
        try:
            restored = api.load_before_change(sandbox_id, module, version=version, step=step)
        except ReloadError as exc:
            raise MagicError(f"{sandbox_id} is not loaded in this kernel and restoring it "
                             f"before the {action} failed: {_reload_message(exc)}") from None
        if restored:
            self._bind_handle(sandbox_id)
            mods = ", ".join(f"{m} v{v}" for m, v in restored.items())
            print(f"{sandbox_id} was not loaded in this kernel: restored it from its history "
                  f"first ({mods})")
        print(summary_line(sandbox_id, fn(), action))

    def _handler(self, sandbox_id: str, module: str, name: str | None) -> tuple[Any, Any]:
        """The state handler to use, and the pending key it consumes (if any)."""
        if name:
            fn = self._user_ns.get(name)
            if fn is None:
                for (sid, mod), h in self.pending_handlers.items():
                    if sid == sandbox_id and getattr(h, "__name__", None) == name:
                        return h, (sid, mod)
                raise MagicError(f"--state-handler {name!r}: no such function in the notebook "
                                 "or defined by %%sandbox_state_handler")
            if not callable(fn):
                raise MagicError(f"--state-handler {name!r} is not callable")
            return fn, None
        for key in ((sandbox_id, module), (sandbox_id, None)):
            if key in self.pending_handlers:
                return self.pending_handlers[key], key
        return None, None

    def _failure(self, sandbox_id: str, module: str | None, exc: CompileError | ReloadError,
                 handler: Any, pending_key: Any) -> MagicError:
        """A reload failed: say why, note it for the panels, and drop a pending state
        handler that failed (the next plain reload must not run it again unasked)."""
        handler_failed = (isinstance(exc, ReloadError) and handler is not None
                          and exc.step in ("migrate", "validate"))
        if handler_failed:
            assert isinstance(exc, ReloadError)
            dropped = pending_key is not None and self.pending_handlers.pop(pending_key,
                                                                            None) is not None
            msg = _handler_message(exc, handler, pending=pending_key is not None,
                                   dropped=dropped)
        elif isinstance(exc, CompileError):
            msg = _compile_message(exc)
        else:
            msg = _reload_message(exc)
        name = getattr(exc, "module", None) or module
        if name and name in api.sandbox_histories(sandbox_id):
            activity.record_failure(sandbox_id, name, msg.splitlines()[0],
                                    getattr(handler, "__name__", None) if handler_failed
                                    else None)
        return MagicError(msg)

    # --------------------------------------------------------- cell magics
    @magic_arguments()
    @argument("sandbox_id", help="sandbox to load the cell into (created on first use)")
    @argument("module", nargs="?", default=None,
              help="module name (default: the module this cell made before, else the "
                   "first class or function name, lower-cased, with '_module' appended "
                   "when that name is a keyword or would shadow an importable module)")
    @argument("--state-handler", dest="state_handler", default=None,
              help="name of a function(old_state, old_version, new_version) that migrates "
                   "the state of live objects")
    @argument("--no-state", dest="no_state", action="store_true",
              help="do not suspend servers or migrate state; objects keep their state as is")
    @argument("--suspend-timeout", dest="suspend_timeout", type=float, default=5.0,
              help="seconds to wait for busy servers to reach a safe point (default 5)")
    @argument("--no-cascade", dest="no_cascade", action="store_true",
              help="do not re-run the sandbox modules that import this one")
    @argument("--quiet", action="store_true", help="print nothing on success")
    @argument("--check", default=None, metavar="EXPR",
              help="an expression over the sandbox's names that must not be False on the "
                   "new code, e.g. --check \"add_tax(100) == 110\"; otherwise the reload is "
                   "refused and nothing changes")
    @argument("--dry-run", dest="dry_run", action="store_true",
              help="do everything up to the switch, print what the reload would change, "
                   "migrate, suspend and re-run (or why it would be refused), and change "
                   "nothing")
    @cell_magic
    @usage_errors
    def sandbox_reload(self, line: str, cell: str) -> None:
        """Hot-reload this cell as a new version of a sandbox module."""
        args = parse_argstring(self.sandbox_reload, line)
        sid = args.sandbox_id
        api.validate_sandbox_id(sid)
        cell_key = (sid, self.current_cell_id) if self.current_cell_id else None
        module = (args.module or (self.cell_modules.get(cell_key) if cell_key else None)
                  or infer_module_name(cell))
        if args.dry_run:
            self._dry_run(sid, module, cell, args)
            return
        self._ensure(sid)
        self._bind_handle(sid)
        handler, pending_key = (None, None) if args.no_state else self._handler(
            sid, module or "", args.state_handler)
        known = {m: set(h.records) for m, h in api.sandbox_histories(sid).items()}
        try:
            with activity.from_cell(sid):
                result = api.hot_reload_source(
                    sid, cell, module, state_handler=handler,
                    use_state_preservation=not args.no_state,
                    coordinate_dependencies=not args.no_cascade,
                    suspend_timeout=args.suspend_timeout,
                    check=args.check or None)
        except (CompileError, ReloadError) as exc:
            raise self._failure(sid, module, exc, handler, pending_key) from None
        if pending_key is not None and result.status != "no_change":
            self.pending_handlers.pop(pending_key, None)
        if cell_key:
            self.cell_modules[cell_key] = result.module
        if not args.quiet:
            print(summary_line(sid, result, "reload", known))

    def _dry_run(self, sid: str, module: str | None, cell: str, args: Any) -> None:
        """``--dry-run``: the summary of what the reload would do; nothing changes (a
        sandbox that does not exist yet is made for the dry run and removed after it)."""
        made = sid not in {s.id for s in api.list_sandboxes()}
        if made:
            api.create_sandbox(sid, store=VersionStore(), max_versions=None)
        try:
            handler, _ = (None, None) if args.no_state else self._handler(
                sid, module or "", args.state_handler)
            d = api.hot_reload_source(sid, cell, module, state_handler=handler,
                                      use_state_preservation=not args.no_state,
                                      coordinate_dependencies=not args.no_cascade,
                                      suspend_timeout=args.suspend_timeout,
                                      check=args.check or None, dry_run=True)
        except CompileError as exc:
            raise MagicError(_compile_message(exc)) from None
        finally:
            if made:
                api.destroy_sandbox(sid)
        print(d.summary())     # a pending handler stays pending for the real reload

    @magic_arguments()
    @argument("sandbox_id")
    @argument("module", nargs="?", default=None,
              help="module the handler is for (default: the next reload of any module)")
    @cell_magic
    @usage_errors
    def sandbox_state_handler(self, line: str, cell: str) -> None:
        """Define the state migration used by the next reload of a sandbox (or module)."""
        args = parse_argstring(self.sandbox_state_handler, line)
        api.validate_sandbox_id(args.sandbox_id)
        ns: dict[str, Any] = {"__name__": "__sandbox_state_handler__"}
        # a name of its own in linecache, so that a failure can quote the handler's line
        filename = f"<state handler cell {next(_handler_cells)}>"
        linecache.cache[filename] = (len(cell), None, cell.splitlines(True), filename)
        try:
            exec(compile(cell, filename, "exec"), ns)
        except SyntaxError as exc:
            raise MagicError(f"the state handler cell does not compile: line {exc.lineno}: "
                             f"{exc.msg}") from None
        funcs = [(k, v) for k, v in ns.items() if callable(v) and not isinstance(v, type)
                 and getattr(v, "__module__", None) == "__sandbox_state_handler__"
                 and not k.startswith("_")]
        if not funcs:
            raise MagicError("the cell defines no function; define "
                             "def migrate(old_state, old_version, new_version): ...")
        name, fn = funcs[-1]
        try:       # the whole cell and the name it binds, for a published sandbox's
            fn.__sandbox_source__ = cell        # followers to run it too
            fn.__sandbox_name__ = name
        except (AttributeError, TypeError):
            pass
        self.pending_handlers[(args.sandbox_id, args.module)] = fn
        target = f"{args.sandbox_id}.{args.module}" if args.module else args.sandbox_id
        print(f"state handler {name!r} will migrate state at the next reload of "
              f"{target}")

    @cell_magic
    def sandbox_run(self, line: str, cell: str) -> Any:
        """%%sandbox_run ID: run the cell inside the sandbox (no version is recorded)."""
        sid = line.strip()
        if not sid:
            raise MagicError("usage: %%sandbox_run SANDBOX_ID")
        try:
            if not api.is_loaded(sid):
                raise self._not_loaded(sid)
        except SandboxError as exc:
            raise MagicError(str(exc)) from None
        return api.run(sid, cell)   # the cell's own errors keep their traceback

    # --------------------------------------------------------- line magics
    @magic_arguments()
    @argument("sandbox_id")
    @argument("path", nargs="?", default=None,
              help="a folder students can read (or a .sqlite3 file there)")
    @argument("--stop", action="store_true", help="stop publishing")
    @line_magic
    @usage_errors
    def sandbox_publish(self, line: str) -> None:
        """Share a sandbox's versions at PATH, now and after every change (a class)."""
        args = parse_argstring(self.sandbox_publish, line)
        if args.stop:
            classroom.unpublish(args.sandbox_id)
            print(f"{args.sandbox_id}: no longer published")
            return
        if not args.path:
            raise MagicError("usage: %sandbox_publish ID PATH (or --stop)")
        if not api.is_loaded(args.sandbox_id):
            raise self._not_loaded(args.sandbox_id)
        where = classroom.publish(args.sandbox_id, args.path)
        print(f"{args.sandbox_id}: published to {where}; students run "
              f"%sandbox_follow {args.sandbox_id} {args.path}")

    @magic_arguments()
    @argument("sandbox_id")
    @argument("path", nargs="?", default=None, help="where the teacher published")
    @argument("--auto", action="store_true",
              help="apply each new teacher version at once (it runs the teacher's code here)")
    @argument("--apply", action="store_true", help="apply the teacher versions waiting")
    @argument("--skip", action="store_true", help="leave the teacher versions waiting")
    @argument("--diff", action="store_true",
              help="show what each waiting teacher version changes against your current code")
    @argument("--teacher", default=None, metavar="ID",
              help="the published sandbox's id, when it is not the same as yours")
    @argument("--resync", action="store_true",
              help="take the teacher's current versions again (after edits of your own)")
    @argument("--stop", action="store_true", help="stop following")
    @line_magic
    @usage_errors
    def sandbox_follow(self, line: str) -> None:
        """Follow the versions a teacher publishes: one line per teacher version."""
        args = parse_argstring(self.sandbox_follow, line)
        sid = args.sandbox_id
        api.validate_sandbox_id(sid)
        f = classroom.follower(sid)
        if args.stop or args.apply or args.skip or args.resync or args.diff:
            if f is None:
                raise MagicError(f"{sid} follows nothing: %sandbox_follow {sid} PATH first")
            if args.stop:
                classroom.unfollow(sid)
                print(f"{sid}: no longer following")
            elif args.diff:
                if not f.pending():
                    print("nothing waits")
                for t in f.pending():
                    d = f.diff(t.module)
                    print(f"{sid}.{t.module}: v{t.version} from the teacher against your "
                          f"v{d.old_version}" + (f" (its state handler: {t.state_handler})"
                                                 if t.state_handler else ""))
                    print("".join(f"{m}{line}\n" for m, line in d.lines()), end="")
            elif args.skip:
                waiting = f.pending()
                f.skip()
                for t in waiting:
                    print(f"{sid}.{t.module}: v{t.version} from the teacher skipped")
                if not waiting:
                    print("nothing waits")
            else:
                for out in (f.apply() if args.apply else f.resync()) or ["nothing waits"]:
                    print(out)
            return
        if not args.path:
            raise MagicError("usage: %sandbox_follow ID PATH [--auto]")
        classroom.follow(sid, args.path, auto=args.auto, on_version=print,
                         teacher=args.teacher)
        self._bind_handle(sid)
        print(f"{sid}: following {args.path}" + (" (applying each new version at once)"
                                                  if args.auto else
                                                  " (new versions wait: --apply or --skip)"))

    @magic_arguments()
    @argument("count", nargs="?", type=int, default=5,
              help="how many of the last cells that ran sandbox code (default 5)")
    @line_magic
    @usage_errors
    def sandbox_ran(self, line: str) -> None:
        """Which sandbox modules, at which versions, the last cells ran (newest last)."""
        args = parse_argstring(self.sandbox_ran, line)
        off = provenance.recording_unavailable()
        if off:
            print(off)
            return
        runs = api.cell_provenance(last=max(1, args.count))
        if not runs:
            print("no cell has run sandbox code since %load_ext sandbox_magic"
                  + ("" if sys.version_info >= (3, 12) else
                     " (on Python 3.11 only cells whose text names a sandbox object are "
                     "watched)"))
            return
        for r in runs:
            parts = []
            for m in r.modules:
                now = None
                if api.find_host(m.sandbox) is not None:
                    h = api.sandbox_histories(m.sandbox).get(m.module)
                    now = h.current if h is not None else None
                parts.append(m.label() + (f" (now v{now})" if now is not None and
                                          now != m.version else ""))
            print(f"[{r.execution_count}] " + ", ".join(parts))

    @magic_arguments()
    @argument("sandbox_id")
    @argument("module", nargs="?", default=None)
    @line_magic
    @usage_errors
    def sandbox_history(self, line: str) -> Any:
        """Show the version history panel (module picker, versions, diff, rollback).

        Works at once after a kernel restart: the history is read from the store.
        """
        args = parse_argstring(self.sandbox_history, line)
        from .widgets import HistoryPanel
        return HistoryPanel(args.sandbox_id, args.module)

    @magic_arguments()
    @argument("sandbox_id")
    @argument("module")
    @argument("version", type=int)
    @argument("--dry-run", dest="dry_run", action="store_true",
              help="print what the rollback would do, and change nothing")
    @line_magic
    @usage_errors
    def sandbox_rollback(self, line: str) -> None:
        """Make an earlier version current again (restoring the sandbox first after a restart)."""
        args = parse_argstring(self.sandbox_rollback, line)
        sid, mod = args.sandbox_id, args.module
        if args.dry_run:
            if not api.is_loaded(sid):
                raise self._not_loaded(sid)
            print(api.rollback_module(sid, mod, args.version, dry_run=True).summary())
            return
        self._change(sid, mod, "rollback",
                     lambda: api.rollback_module(sid, mod, args.version), version=args.version)

    @magic_arguments()
    @argument("sandbox_id")
    @argument("module")
    @line_magic
    @usage_errors
    def sandbox_undo(self, line: str) -> None:
        """Step back to the version that was current before the last change."""
        args = parse_argstring(self.sandbox_undo, line)
        sid, mod = args.sandbox_id, args.module
        self._change(sid, mod, "undo", lambda: api.undo(sid, mod), step=-1)

    @magic_arguments()
    @argument("sandbox_id")
    @argument("module")
    @line_magic
    @usage_errors
    def sandbox_redo(self, line: str) -> None:
        """Step forward again after %sandbox_undo."""
        args = parse_argstring(self.sandbox_redo, line)
        sid, mod = args.sandbox_id, args.module
        self._change(sid, mod, "redo", lambda: api.redo(sid, mod), step=+1)

    @magic_arguments()
    @argument("sandbox_id")
    @argument("module")
    @argument("v1", nargs="?", type=int, default=None,
              help="older version (default: the one before v2)")
    @argument("v2", nargs="?", type=int, default=None,
              help="newer version (default: the current one)")
    @line_magic
    @usage_errors
    def sandbox_diff(self, line: str) -> None:
        """Show the diff between two versions (coloured in the notebook)."""
        args = parse_argstring(self.sandbox_diff, line)
        sid, mod = args.sandbox_id, args.module
        h = api.get_version_history(sid, mod)
        retained = sorted(i.version for i in h["versions"])
        v2 = args.v2 if args.v2 is not None else h["current_version"]
        for v in (args.v1, v2):
            if v is not None and v not in retained:
                raise MagicError(f"module {mod!r} has no version {v} (retained: "
                                 f"{', '.join(map(str, retained))})")
        v1 = args.v1
        if v1 is None:
            older = [v for v in retained if v < v2]
            if not older:
                raise MagicError(f"{sid}.{mod} has no version before v{v2} to compare with")
            v1 = max(older)
        display(DiffDisplay(api.diff_versions(sid, mod, v1, v2)))

    @line_magic
    @usage_errors
    def sandbox_restore(self, line: str) -> None:
        """Rebuild a sandbox from its recorded history (after a kernel restart).

        Every module comes back at its current version; the state of objects
        from before the restart does not come back (it lived in the old kernel).
        """
        sid = line.strip()
        if not sid:
            raise MagicError("usage: %sandbox_restore SANDBOX_ID")
        if not api.is_loaded(sid):
            api.validate_sandbox_id(sid)
            if not any(h.current is not None for h in api.stored_histories(sid).values()):
                raise MagicError(f"no sandbox {sid!r} and no recorded history for it; "
                                 f"run a %%sandbox_reload {sid} cell first")
        info = api.restore_sandbox(sid)
        self._bind_handle(sid)
        mods = ", ".join(f"{m} v{v}" for m, v in info.modules.items())
        print(f"{sid} restored: {mods} (objects from before the restart are not restored)")

    @line_magic
    @usage_errors
    def sandbox_list(self, line: str) -> None:
        """List the sandboxes with their modules and current versions, and those whose
        history is stored but not loaded in this kernel (after a restart)."""
        infos = api.list_sandboxes()
        live = {i.id for i in infos}
        stored = [s for s in api.stored_sandbox_ids() if s not in live]
        if not infos and not stored:
            print("no sandboxes yet: run a %%sandbox_reload cell")
            return
        for i in infos:
            mods = ", ".join(f"{m} v{v}" for m, v in i.modules.items()) or "no modules"
            rest = ", ".join(f"{m} v{v}" for m, v in i.stored_modules.items())
            rest = f"; stored, not loaded: {rest}" if rest else ""
            print(f"{i.id}: {mods}{rest} (restarts: {i.restart_count})")
        for sid in stored:
            mods = ", ".join(f"{m} v{v}" for m, v in api.history_modules(sid).items())
            print(f"{sid}: stored, not loaded ({mods}); %sandbox_restore {sid} loads it")

    @line_magic
    @usage_errors
    def sandbox_info(self, line: str) -> Any:
        """Show what is known about one sandbox."""
        sid = line.strip()
        if not sid:
            raise MagicError("usage: %sandbox_info SANDBOX_ID")
        if not api.is_loaded(sid):
            raise self._not_loaded(sid)
        print(info_text(api.get_sandbox_info(sid)))
        return None

    @magic_arguments()
    @argument("sandbox_id")
    @argument("--max-versions", type=int, default=10,
              help="versions kept per module (default 10; 0 keeps all)")
    @argument("--scope", default=None,
              help="share the history under this name instead of this notebook's own")
    @argument("--process", action="store_true",
              help="run the sandbox in its own child kernel: a crash or a runaway loop "
                   "there leaves this kernel alone")
    @argument("--memory", default=None, help="with --process: memory limit, e.g. 512M")
    @argument("--cpu", type=float, default=None, help="with --process: CPU seconds limit")
    @argument("--timeout", type=float, default=None,
              help="with --process: seconds a reload or a call may take; with --cluster: "
                   "seconds each engine may take")
    @argument("--cluster", nargs="?", const="default", default=None, metavar="PROFILE",
              help="run the sandbox on every engine of the ipyparallel cluster of PROFILE "
                   "(default profile if none is given)")
    @argument("--targets", default=None,
              help="with --cluster: the engines to use, e.g. 0,1,2 (default: all)")
    @line_magic
    @usage_errors
    def sandbox_create(self, line: str) -> None:
        """Create a sandbox (a %%sandbox_reload cell creates one on first use too)."""
        args = parse_argstring(self.sandbox_create, line)
        limits = {"memory_limit": args.memory, "cpu_limit": args.cpu,
                  "call_timeout": args.timeout}
        if args.cluster is not None:
            if args.process or args.memory or args.cpu:
                raise MagicError("--cluster takes --targets and --timeout only")
            host: Any = _cluster_view(args.cluster, args.targets)
            info = api.create_sandbox(args.sandbox_id, max_versions=args.max_versions or None,
                                      history_scope=args.scope, host=host,
                                      call_timeout=args.timeout)
        else:
            if not args.process and any(v is not None for v in limits.values()):
                raise MagicError("--memory, --cpu and --timeout need --process")
            info = api.create_sandbox(args.sandbox_id,
                                      max_versions=args.max_versions or None,
                                      history_scope=args.scope,
                                      **({"host": "process", **limits} if args.process else {}))
        self._bind_handle(args.sandbox_id)
        where = describe(info.history_scope)
        stored = ", ".join(f"{m} v{v}" for m, v in info.stored_modules.items())
        pid = getattr(api.get_host(args.sandbox_id), "pid", None)
        runs = f" in process {pid}" if pid is not None else ""
        if info.engines:
            runs = f" on engines {', '.join(map(str, info.engines))}"
        print(f"sandbox {args.sandbox_id!r} created{runs}; history of {where}"
              + (f": {api.stored_history_origin(args.sandbox_id)} ({stored})" if stored else ""))

    @magic_arguments()
    @argument("sandbox_id")
    @argument("path", nargs="?", default=None,
              help="a .py file, or a folder of them (one module per file)")
    @argument("--stop", action="store_true", help="stop watching")
    @argument("--check", default=None, metavar="EXPR",
              help="an expression each save's new code must not make False")
    @argument("--debounce", type=float, default=0.2,
              help="seconds of quiet that end a save (default 0.2)")
    @line_magic
    @usage_errors
    def sandbox_watch(self, line: str) -> None:
        """Reload the sandbox from files on every save, each save a new version."""
        args = parse_argstring(self.sandbox_watch, line)
        sid = args.sandbox_id
        if args.stop:
            print(f"stopped watching for {sid}" if api.unwatch(sid)
                  else f"{sid} was not being watched")
            return
        if args.path is None:
            raise MagicError("usage: %sandbox_watch ID PATH [--check EXPR] | ID --stop")
        path = Path(args.path)
        if not path.exists():
            raise MagicError(f"cannot watch {args.path}: no such file or folder "
                             f"(the working directory is {Path.cwd()})")
        created = not api.is_loaded(sid)
        if created:
            api.create_sandbox(sid)
        status: Any = None

        def show(event: Any) -> None:
            mark = {"reloaded": "✓", "unchanged": "·", "failed": "✗", "deleted": "!"}
            text = f"{sid}: watching {args.path} — {mark.get(event.kind, '')} {event.message}"
            if status is not None:
                status.update({"text/plain": text}, raw=True)

        try:
            api.watch(sid, args.path, debounce=args.debounce,
                      check=args.check or None, on_event=show)
        except BaseException:
            if created:       # nothing of a failed watch stays behind
                api.destroy_sandbox(sid)
            raise
        self._bind_handle(sid)
        status = display({"text/plain": f"{sid}: watching {args.path}"}, raw=True,
                         display_id=True)

    @magic_arguments()
    @argument("sandbox_id")
    @argument("module")
    @argument("expr", nargs="+", help="an expression over the sandbox's names")
    @line_magic
    @usage_errors
    def sandbox_probe(self, line: str) -> None:
        """Evaluate an expression under every retained version (in a scratch sandbox)."""
        sid, module, expr = _id_module_rest(self.sandbox_probe, line)
        for v, value in api.probe(sid, module, expr).items():
            shown = (f"{type(value).__name__}: {value}" if isinstance(value, BaseException)
                     else repr(value))
            print(f"v{v}: {shown}")

    @magic_arguments()
    @argument("sandbox_id")
    @argument("module")
    @argument("expr", nargs="+", help="true on good versions, false on bad ones")
    @line_magic
    @usage_errors
    def sandbox_bisect(self, line: str) -> None:
        """The first version for which an expression is false (binary search, scratch loads)."""
        sid, module, expr = _id_module_rest(self.sandbox_bisect, line)
        bad = api.bisect(sid, module, expr)
        if bad is None:
            print(f"{expr} holds for every retained version of {module}")
            return
        versions = sorted(api.module_history(sid, module).records)
        before = [v for v in versions if v < bad]
        print(f"{expr} is first false in {module} v{bad}"
              + (f" (v{before[-1]} was the last good one); %sandbox_diff "
                 f"{sid} {module} {before[-1]} {bad} shows the change"
                 if before else " (the oldest retained version)"))

    @magic_arguments()
    @argument("sandbox_id")
    @argument("--forget", action="store_true",
              help="also delete the sandbox's recorded history from the store")
    @line_magic
    @usage_errors
    def sandbox_destroy(self, line: str) -> None:
        """Stop a sandbox's servers and drop its modules (the history is kept)."""
        args = parse_argstring(self.sandbox_destroy, line)
        sid = args.sandbox_id
        if not api.is_loaded(sid):
            if not args.forget:
                raise self._not_loaded(sid)
            api.history_modules(sid)     # no such sandbox, nor history: says so
            api.create_sandbox(sid)      # only in the store: forget it as it is stored
        api.destroy_sandbox(sid, forget_history=args.forget)
        ns = self._user_ns
        if isinstance(ns.get(sid), Sandbox | RemoteSandbox):
            del ns[sid]
        self.cell_modules = {k: v for k, v in self.cell_modules.items() if k[0] != sid}
        print(f"sandbox {sid!r} destroyed" + (" and its history forgotten" if args.forget
                                               else "; its history is kept"))

    @magic_arguments()
    @argument("sandbox_id")
    @argument("path", help="the .ipynb file to write")
    @argument("--force", action="store_true", help="overwrite the file if it exists")
    @line_magic
    @usage_errors
    def sandbox_export(self, line: str) -> None:
        """Write the sandbox's history as a notebook, one cell per version."""
        args = parse_argstring(self.sandbox_export, line)
        from .export import export_history
        path = Path(args.path)
        exists = f"{args.path} already exists; add --force to overwrite it"
        if path.exists() and not args.force:
            raise MagicError(exists)
        if path.parent.exists() and not path.parent.is_dir():
            raise MagicError(f"cannot write {args.path}: {path.parent} is a file, not a folder")
        try:
            p = export_history(args.sandbox_id, path, overwrite=args.force)
        except FileExistsError as exc:
            if exc.filename is not None and Path(exc.filename) == path:
                raise MagicError(exists) from None
            raise MagicError(f"cannot write {args.path}: {exc.strerror or exc}") from None
        except OSError as exc:
            raise MagicError(f"cannot write {args.path}: {exc.strerror or exc}") from None
        print(f"history of {args.sandbox_id!r} written to {p}")


def info_text(i: Any) -> str:
    """A sandbox's :class:`SandboxInfo` in plain words, one fact per line."""
    mods = ", ".join(f"{m} v{v}" for m, v in i.modules.items()) or "none yet"
    lines = [f"sandbox {i.id} ({i.status}): modules {mods}",
             f"  created {i.created_at:%Y-%m-%d %H:%M:%S} UTC; restarts: {i.restart_count}",
             f"  keeps {i.max_versions if i.max_versions is not None else 'every'} "
             f"version{'s' if i.max_versions != 1 else ''} per module; "
             f"history scope {i.history_scope!r}",
             f"  runs in {i.host}" + (f" ({len(i.engines)} engines)" if i.engines else ""),
             f"  namespace {i.namespace}"]
    if i.stored_modules:
        lines.append("  stored, not loaded: "
                     + ", ".join(f"{m} v{v}" for m, v in i.stored_modules.items()))
    if i.sandbox_path:
        lines.append(f"  loaded from {i.sandbox_path}")
    if i.supervisor:
        lines.append(f"  supervisor {i.supervisor}")
    return "\n".join(lines)


def summary_line(sandbox_id: str, r: Any, action: str = "reload",
                 known: dict[str, set[int]] | None = None) -> str:
    """What a reload, rollback, undo or redo did, in plain words, on one line.

    ``action`` is ``"reload"``, ``"rollback"``, ``"undo"`` or ``"redo"``;
    ``known`` holds each module's retained versions from before a reload, so
    that code identical to a stored version reads as that version becoming
    current again rather than as a new one.
    """
    results = r.modules or (r,)
    if all(x.status == "no_change" for x in results):
        return "; ".join(f"{sandbox_id}.{x.module}: no change (v{x.new_version} is current)"
                         for x in results)
    parts = [f"{sandbox_id}.{x.module}: {_what_happened(x, action, known)}" for x in results]
    ms = f"{r.duration * 1e3:.1f} ms"
    line = "; ".join(parts)
    line += f"; {r.migrated} object{'s' if r.migrated != 1 else ''} migrated; {ms}"
    if r.dependents:
        line += f"; also re-ran {', '.join(r.dependents)}"
    for note in r.notes:
        line += f"\n  note: {note}"
    return line


def _what_happened(r: Any, action: str, known: dict[str, set[int]] | None) -> str:
    new, old = r.new_version, r.old_version
    was = f" (was v{old})" if old is not None and old != new else ""
    if r.status == "no_change":
        return f"no change (v{new} is current)"
    if action == "rollback":
        return f"rolled back to v{new}{was}"
    if action in ("undo", "redo"):
        return f"{action}: v{new} is current again{was}"
    if r.status == "reactivated" or (known is not None and new in known.get(r.module, ())):
        if old == new:
            return f"same code as stored v{new}, the current version; loaded it"
        return f"same code as stored v{new}; v{new} is current again{was}"
    return f"new version v{new}{was}"


def _compile_message(exc: CompileError) -> str:
    if exc.line is None:   # not a syntax error: e.g. no module name could be inferred
        hint = ("\nname the module after the sandbox id: %%sandbox_reload ID MODULE"
                if exc.reason.startswith("cannot infer") else "")
        return f"{exc}{hint}\nnothing was changed"
    line = f"cell line {exc.line + 1}"
    col = f", column {exc.column}" if exc.column is not None else ""
    text = f"\n    {exc.text.rstrip()}" if exc.text else ""
    return f"syntax error at {line}{col}: {exc.reason}{text}\nnothing was changed"


def _reload_message(exc: ReloadError) -> str:
    """The error with line numbers counted in the cell (the magic line is line 1)."""
    msg = str(exc)
    if exc.step == "execute" and exc.line is not None:
        msg = msg.replace(f" at line {exc.line} ", f" at cell line {exc.line + 1} ", 1)
    cause = exc.__cause__
    if cause is not None and cause.__traceback__ is not None:
        frames = [f for f in traceback.extract_tb(cause.__traceback__)
                  if f.filename.startswith("<sandbox ")]
        if len(frames) > 1:
            msg += "\n" + "\n".join(
                f"  in {f.filename[len('<sandbox '):].split(' ')[0]}, line {(f.lineno or 0) + 1}: "
                f"{f.line}" for f in frames)
    return msg


def _handler_message(exc: ReloadError, handler: Any, *, pending: bool, dropped: bool) -> str:
    """A failed state handler: which one, where it raised, on what object, and what to do."""
    name = getattr(handler, "__name__", None) or repr(handler)
    cause = exc.__cause__
    code = getattr(handler, "__code__", None)
    where = ""
    if code is not None and cause is not None and cause.__traceback__ is not None:
        frames = [f for f in traceback.extract_tb(cause.__traceback__)
                  if f.filename == code.co_filename and f.name == code.co_name]
        if frames:
            f = frames[-1]
            line = (f"cell line {(f.lineno or 0) + 1}"
                    if f.filename.startswith("<state handler cell") else f"line {f.lineno}")
            where = f" at {line}" + (f": {f.line.strip()}" if f.line else "")
    obj = exc.obj
    label = obj if isinstance(obj, str) else (
        f"{type(obj).__qualname__} instance at {id(obj):#x}" if obj is not None else "an object")
    if exc.step == "validate" and cause is not None:
        what = f"returned a state for {label} that does not fit: {cause}"
    elif cause is not None and where:
        what = f"raised {type(cause).__name__}: {cause}{where} while migrating {label}"
    else:
        what = f"failed on {label}: {exc}"
    fix = ("fix the %%sandbox_state_handler cell and run it again" if pending
           else f"fix {name} (or name another function with --state-handler)")
    text = (f"state handler {name!r} {what}; nothing was changed.\n"
            f"To go on: {fix}, or run the reload with --no-state to keep every object's "
            "state as it is.")
    if dropped:
        text += (f"\n{name!r} was dropped: the next reload does not run it unless its "
                 "%%sandbox_state_handler cell runs again.")
    return text


def _show_magic_error(shell: Any, etype: type, value: BaseException, tb: Any,
                      tb_offset: Any = None) -> None:
    print(f"SandboxError: {value}", file=sys.stderr)


def _naming_versions(show: Callable[..., Any]) -> Callable[..., Any]:
    """The shell's showtraceback, adding first a note that names the module and version
    of each sandbox frame of the error's traceback (and of the errors it chains)."""
    @functools.wraps(show)
    def showtraceback(exc_tuple: Any = None, *args: Any, **kwargs: Any) -> Any:
        try:
            value = exc_tuple[1] if exc_tuple else sys.exc_info()[1]
            if isinstance(value, BaseException):
                provenance.name_versions(value)
        except Exception:      # naming versions must never hide the user's error
            log.debug("could not name the versions in a traceback", exc_info=True)
        return show(exc_tuple, *args, **kwargs)

    showtraceback.naming_versions = True  # type: ignore[attr-defined]
    return showtraceback


class _CellHooks:
    """Record which sandbox code each cell runs (see sandbox_magic.engine.provenance)."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell

    def pre(self, info: Any) -> None:
        try:
            provenance.begin_cell(self.shell.execution_count, getattr(info, "cell_id", None),
                                  getattr(info, "raw_cell", "") or "", self.shell.user_ns)
        except Exception:
            log.debug("could not start recording a cell", exc_info=True)

    def post(self, result: Any) -> None:
        from . import comm as _comm
        try:
            run = provenance.end_cell(getattr(result, "execution_count", None))
        except Exception:
            log.debug("could not finish recording a cell", exc_info=True)
            return
        if run is not None:
            _comm.hub.push_ran(run)


_hooks: list[_CellHooks] = []


def load_ipython_extension(ipython: Any) -> None:
    magics = SandboxMagics(ipython)
    ipython.register_magics(magics)
    ipython.events.register("pre_run_cell", magics.remember_cell)
    ipython.set_custom_exc((MagicError,), _show_magic_error)
    if not getattr(ipython.showtraceback, "naming_versions", False):
        ipython.showtraceback = _naming_versions(ipython.showtraceback)
    for old in _hooks:
        for event, cb in (("pre_run_cell", old.pre), ("post_run_cell", old.post)):
            try:
                ipython.events.unregister(event, cb)
            except ValueError:
                pass
    _hooks[:] = [_CellHooks(ipython)]
    provenance.start_recording()
    ipython.events.register("pre_run_cell", _hooks[0].pre)
    ipython.events.register("post_run_cell", _hooks[0].post)
    from . import comm as _comm
    _comm.register(ipython)
