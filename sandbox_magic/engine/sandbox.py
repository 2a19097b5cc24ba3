"""A sandbox: its modules, their namespaced keys, sibling imports, the user handle.

Module ``m`` of sandbox ``s`` is registered in ``sys.modules`` as
``sandbox_magic.sandboxes.s.m`` (the parent ``sandbox_magic.sandboxes.s`` is a
synthetic package), so pickle, inspect and tracebacks find it.  Code inside
the sandbox imports siblings by their plain names: every sandbox module runs
with a private ``__builtins__`` whose ``__import__`` resolves sibling names
first and defers to the normal import system for everything else.
"""

from __future__ import annotations

import builtins
import importlib.machinery
import linecache
import re
import sys
import threading
import types
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import (
    AmbiguousNameError,
    CircularDependencyError,
    InvalidSandboxIdError,
    ModuleNotFoundInSandboxError,
    SandboxError,
)
from .artifact import Artifact, artifact_filename
from .layout import package_of, packages_of
from .provenance import RECORDER
from .tracking import build_class
from .versions import ModuleHistory, VersionRecord, VersionStore, utcnow

PACKAGE_ROOT = "sandbox_magic.sandboxes"
_ID_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")


class _ReloadRefuser:
    """A meta-path finder that answers ``importlib.reload`` of a sandbox module.

    Reloading goes through the sandbox, so that it is a recorded, transactional
    version; ``importlib.reload`` would re-run nothing (the module has no file to
    load from), so it gets a :class:`SandboxError` saying what to call, before
    anything about the module changes.
    """

    @staticmethod
    def find_spec(fullname: str, path: Any = None, target: Any = None) -> None:
        if target is None or not fullname.startswith(PACKAGE_ROOT + "."):
            return None
        sandbox_id, _, module = fullname[len(PACKAGE_ROOT) + 1:].partition(".")
        if module:
            how = (f"sm.hot_reload_source({sandbox_id!r}, source, module={module!r}) or a "
                   f"'%%sandbox_reload {sandbox_id} {module}' cell; sm.restart_sandbox"
                   f"({sandbox_id!r}) re-runs every module at its current version")
        else:
            how = f"sm.restart_sandbox({sandbox_id!r})"
        raise SandboxError(f"importlib.reload cannot reload sandbox code ({fullname}): use "
                           f"{how}, which records a version")


if not any(isinstance(f, type) and f.__name__ == "_ReloadRefuser" for f in sys.meta_path):
    sys.meta_path.insert(0, _ReloadRefuser)


def is_sandbox_id(value: object) -> bool:
    """Whether ``value`` is a valid sandbox id (1-64 letters, digits, '_', '-')."""
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None


def validate_sandbox_id(sandbox_id: object) -> str:
    if not isinstance(sandbox_id, str) or not is_sandbox_id(sandbox_id):
        raise InvalidSandboxIdError(
            f"invalid sandbox id {sandbox_id!r}: use 1-64 letters, digits, '_' or '-', "
            "starting with a letter or '_'")
    return sandbox_id


# Sources in linecache are bounded by what is retained.  Each (sandbox, module)
# holds the pseudo file names of its retained versions (the current one among
# them); an entry leaves linecache when no sandbox holds it any more.  Sandboxes
# loading the same code share one entry (the name is module + checksum).  Code
# registered but held by nobody (a reload that failed, so that its traceback
# still shows source) stays only among the newest _UNHELD_MAX such entries.
_UNHELD_MAX = 8
_sources_lock = threading.Lock()
_refs: dict[str, int] = {}                          # file name -> holders
_held: dict[tuple[str, str], dict[str, str]] = {}   # (sandbox, module) -> {file name: checksum}
_unheld: OrderedDict[str, None] = OrderedDict()


def _lines_entry(name: str, source: str) -> tuple[int, None, list[str], str]:
    lines = source.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    # mtime None: linecache.checkcache() leaves the entry alone.
    return (len(source), None, lines, name)


def register_source(artifact: Artifact, owner: str | None = None) -> None:
    """Make the artifact's source visible to linecache (tracebacks, inspect); ``owner``:
    the sandbox loading it (its code is then watched for provenance as that sandbox's)."""
    src = artifact.source
    name = artifact.filename
    with _sources_lock:
        entry = linecache.cache.get(name)
        held = name in _refs
        if not (held and entry is not None and entry[0] == len(src)):
            linecache.cache[name] = _lines_entry(name, src)
        if not held:
            _unheld[name] = None
            _unheld.move_to_end(name)
            while len(_unheld) > _UNHELD_MAX:
                linecache.cache.pop(_unheld.popitem(last=False)[0], None)
    RECORDER.watch(artifact, owner)   # which cells run this version's code (provenance)


def forget_source(name: str) -> None:
    """Drop a version's source from linecache unless a retained version holds it."""
    with _sources_lock:
        if name not in _refs:
            linecache.cache.pop(name, None)
            _unheld.pop(name, None)


def hold_sources(sandbox_id: str, module: str, records: Iterable[VersionRecord]) -> None:
    """Record that ``module`` of ``sandbox_id`` now retains exactly ``records``.

    Entries nobody holds any more leave linecache, and cached store deltas of
    their versions are forgotten.  A held version that was loaded in this
    process but has lost its entry (a history put back after a failed
    transaction, ``linecache.clearcache()``) gets it again.
    """
    key = (sandbox_id, module)
    files = {artifact_filename(module, rec.checksum): rec for rec in records}
    released: list[str] = []
    with _sources_lock:
        old = _held.pop(key, {})
        if files:
            _held[key] = {name: rec.checksum for name, rec in files.items()}
        for name in files.keys() - old.keys():
            _refs[name] = _refs.get(name, 0) + 1
            _unheld.pop(name, None)
        for name in old.keys() - files.keys():
            left = _refs.get(name, 1) - 1
            if left > 0:
                _refs[name] = left
                continue
            _refs.pop(name, None)
            linecache.cache.pop(name, None)
            released.append(old[name])
        for name, rec in files.items():   # compiled here: it has run in this process
            if name not in linecache.cache and rec._artifact is not None:
                linecache.cache[name] = _lines_entry(name, rec.source)
    if released:
        from .store import forget_deltas
        forget_deltas(released)


def release_sources(sandbox_id: str) -> None:
    """Give up every linecache entry the sandbox holds (it is being destroyed)."""
    with _sources_lock:
        modules = [m for (sid, m) in _held if sid == sandbox_id]
    for module in modules:
        hold_sources(sandbox_id, module, ())


@dataclass(frozen=True)
class SandboxInfo:
    """A snapshot of a sandbox's state."""

    id: str
    status: str
    created_at: datetime
    restart_count: int
    modules: dict[str, int]          # module -> current version
    max_versions: int | None
    namespace: str                   # the sys.modules prefix of its modules
    sandbox_path: str | None = None
    supervisor: str | None = None
    stored_modules: dict[str, int] = field(default_factory=dict)  # in the history, not loaded
    history_scope: str = "folder"    # whose history this is (see set_history_scope)
    host: str = "kernel"             # where its code runs (see sandbox_magic.hosts)
    engines: tuple[int, ...] = ()    # a cluster sandbox's engines


class SandboxState:
    """Everything the engine keeps about one sandbox (internal)."""

    def __init__(self, sandbox_id: str, *, max_versions: int | None,
                 sandbox_path: Path | None, store: VersionStore, scope: str = "folder") -> None:
        self.id = sandbox_id
        self.created_at = utcnow()
        self.restart_count = 0
        self.max_versions = max_versions
        self.sandbox_path = sandbox_path
        self.store = store
        self.scope = scope
        self.host: Any = None            # the host that runs this sandbox (sandbox_magic.hosts)
        self.status = "running"
        self.lock = threading.RLock()
        self.package_name = f"{PACKAGE_ROOT}.{sandbox_id}"
        self.package = types.ModuleType(self.package_name, f"modules of sandbox {sandbox_id!r}")
        self.package.__path__ = []
        self.package.__package__ = self.package_name
        self.modules: dict[str, types.ModuleType] = {}
        self.defined: dict[str, frozenset[str]] = {}
        #: The artifact whose code each live module runs (its functions hold its code
        #: objects; ``engine.inplace`` maps them to a new version's).
        self.live: dict[str, Artifact] = {}
        self.origins: dict[str, str] = {}     # module -> the file it is loaded from
        self.histories: dict[str, ModuleHistory] = store.load(sandbox_id, scope=scope)
        self.builtins = dict(builtins.__dict__)
        self.builtins["__import__"] = self._import
        self.builtins["__build_class__"] = build_class
        self.scratch: dict[str, Any] = {"__builtins__": self.builtins,
                                        "__name__": f"{self.package_name}.__run__",
                                        "__package__": self.package_name}
        self._scratch_names: set[str] = set()
        self._overlay: dict[str, types.ModuleType] = {}
        self._overlay_threads: set[int] = set()
        self._pending: Any = set()
        self._pull: Any = None
        self._running: dict[str, types.ModuleType] = {}
        #: While a check runs: (thread, modules, defined names) that thread sees instead.
        self._view: tuple[int, dict[str, types.ModuleType], dict[str, frozenset[str]]] | None \
            = None
        self.supervisor: Any = None
        self.supervisor_spec: Any = None
        self.servers: list[Any] = []
        self.named: dict[str, Any] = {}
        self.server_lock = threading.Lock()   # guards servers/named only
        self.handle = Sandbox(self)

    # ------------------------------------------------------------------ names
    def fullname(self, module: str) -> str:
        return f"{self.package_name}.{module}"

    def lookup(self, name: str) -> types.ModuleType | None:
        if self._overlay_threads and threading.get_ident() in self._overlay_threads:
            mod = self._overlay.get(name)
            if mod is not None:
                return mod
            if name in self._pending:
                pulled: types.ModuleType = self._pull(name)   # not run yet: run it now
                return pulled
        return self.modules.get(name)

    def is_module(self, name: str) -> bool:
        """Whether ``name`` is (or is about to be) a module of this sandbox."""
        return name in self.modules or name in self._overlay or name in self._pending

    def _absolute(self, name: str, globals: dict[str, Any] | None, level: int) -> str | None:
        """The sandbox module name an import means ('' for the sandbox root), or None."""
        if level == 0:
            return name if self.is_module(name.partition(".")[0]) else None
        pkg = (globals or {}).get("__package__") or ""
        if pkg != self.package_name and not pkg.startswith(self.package_name + "."):
            return None
        base = pkg[len(self.package_name) + 1:]
        for _ in range(level - 1):
            if not base:
                return None
            base = base.rpartition(".")[0]
        return f"{base}.{name}" if base and name else (base or name)

    def _import(self, name: str, globals: dict[str, Any] | None = None,
                locals: Any = None, fromlist: Any = (), level: int = 0) -> Any:
        target = self._absolute(name, globals, level)
        if target is None:
            return builtins.__import__(name, globals, locals, fromlist, level)
        if target == "":        # from . import x, at the sandbox's top level
            found = {n: self.lookup(n) for n in (fromlist or ())}
            if found and all(m is not None for m in found.values()):
                return types.SimpleNamespace(**found)
            return builtins.__import__(name, globals, locals, fromlist, level)
        parts = target.split(".")
        chain: list[types.ModuleType] = []
        for i in range(len(parts)):
            mod = self.lookup(".".join(parts[:i + 1]))
            if mod is None:
                if level == 0 and i == 0:
                    return builtins.__import__(name, globals, locals, fromlist, level)
                raise ModuleNotFoundError(
                    f"sandbox {self.id!r} has no module {'.'.join(parts[:i + 1])!r}",
                    name=".".join(parts[:i + 1]))
            if chain and getattr(chain[-1], parts[i], None) is not mod \
                    and self._binds_here(chain[-1]):
                setattr(chain[-1], parts[i], mod)   # as the import system binds submodules
            chain.append(mod)
        leaf = chain[-1]
        if not fromlist:
            return chain[0] if level == 0 else leaf
        shim: dict[str, types.ModuleType] = {}
        for item in fromlist:
            if item == "*":
                continue
            if self.is_module(f"{target}.{item}"):
                sub = self.lookup(f"{target}.{item}")
                if sub is not None and getattr(leaf, item, None) is not sub:
                    if self._binds_here(leaf):
                        setattr(leaf, item, sub)
                    else:
                        shim[item] = sub   # a staged submodule of a live package
                continue
            if hasattr(leaf, item):
                continue
            if target in self._running:
                raise _CircularImport(self._running_chain(target),
                                      f"cannot import name {item!r} from {target!r}: "
                                      "circular import between sandbox modules: "
                                      + " -> ".join(self._running_chain(target))
                                      + f" (while {target} was still running); move the "
                                      "shared code into a module that both import")
        if shim and "*" not in fromlist:
            # from pkg import sub while sub's new body is staged: the staged sub, without
            # touching the live package before the commit
            found = {i: shim[i] if i in shim else getattr(leaf, i) for i in fromlist
                     if i in shim or hasattr(leaf, i)}
            return types.SimpleNamespace(**found)
        return leaf

    def _binds_here(self, mod: types.ModuleType) -> bool:
        """Submodules are bound on a module only while it is being staged (live
        modules change only in a reload's commit)."""
        return any(mod is m for m in self._overlay.values())

    def _running_chain(self, target: str) -> list[str]:
        run = list(self._running)
        return run[run.index(target):] + [target] if target in run else [target]

    def spec(self, module: str, artifact: Artifact,
             package: bool = False) -> importlib.machinery.ModuleSpec:
        spec = importlib.machinery.ModuleSpec(self.fullname(module), None,
                                              origin=artifact.filename, is_package=package)
        if package:
            spec.submodule_search_locations = []
        return spec

    def file_of(self, module: str, artifact: Artifact) -> str:
        """A module's ``__file__``: the file it was loaded from (so that code finds the
        files beside it), else the pseudo file name its code and tracebacks use."""
        return self.origins.get(module) or artifact.filename

    def packages(self) -> frozenset[str]:
        return packages_of(list(self.modules) + list(self._overlay) + list(self._pending))

    def new_module(self, module: str, artifact: Artifact,
                   packages: frozenset[str] | None = None) -> types.ModuleType:
        if packages is None:
            packages = self.packages() | packages_of([module])
        mod = types.ModuleType(self.fullname(module))
        pkg = package_of(module, packages)
        if module in packages:
            mod.__path__ = []
        mod.__dict__.update({
            "__builtins__": self.builtins,
            "__package__": f"{self.package_name}.{pkg}" if pkg else self.package_name,
            "__file__": self.file_of(module, artifact),
            "__spec__": self.spec(module, artifact, module in packages),
            "__loader__": None,
        })
        return mod

    # ------------------------------------------------------------ activation
    def install_overlay(self, staged: dict[str, types.ModuleType],
                        pending: Any = None, pull: Any = None,
                        running: dict[str, types.ModuleType] | None = None) -> None:
        """Let the reloading thread import staged modules by their plain names.

        ``pending`` names modules of the reload whose bodies have not run yet;
        importing one runs it then (``pull``), as Python's import would.
        ``running`` lists the bodies running, outermost first.
        """
        self._overlay = staged
        self._overlay_threads = {threading.get_ident()}
        self._pending = pending if pending is not None else set()
        self._pull = pull
        self._running = running if running is not None else {}

    def join_overlay(self) -> None:
        """Let the current (worker) thread see the staged modules too."""
        self._overlay_threads.add(threading.get_ident())

    def show_staged(self, staged: dict[str, types.ModuleType],
                    defined: dict[str, frozenset[str]]) -> None:
        """Let the current thread's names (:meth:`resolve`, :meth:`visible_names`, the
        handle's ``modules``) be the staged modules' until :meth:`clear_overlay`: a
        check sees the new version where no other thread does."""
        self._view = (threading.get_ident(), {**self.modules, **staged},
                      {**self.defined, **defined})

    def hide_staged(self) -> None:
        self._view = None

    def _names(self) -> tuple[dict[str, types.ModuleType], dict[str, frozenset[str]]]:
        view = self._view
        if view is not None and view[0] == threading.get_ident():
            return view[1], view[2]
        return self.modules, self.defined

    def visible_modules(self) -> dict[str, types.ModuleType]:
        return self._names()[0]

    def clear_overlay(self) -> None:
        self._view = None
        self._overlay = {}
        self._overlay_threads = set()
        self._pending = set()
        self._pull = None
        self._running = {}

    def _parent(self, name: str) -> types.ModuleType | None:
        parent = name.rpartition(".")[0]
        return self.modules.get(parent) if parent else self.package

    def register_module(self, name: str, mod: types.ModuleType, artifact: Artifact) -> None:
        self.modules[name] = mod
        self.defined[name] = artifact.defines
        self.live[name] = artifact
        sys.modules[mod.__name__] = mod
        parent = self._parent(name)
        if parent is not None:
            setattr(parent, name.rpartition(".")[2], mod)
        for child, cmod in self.modules.items():     # children registered before it
            if child.rpartition(".")[0] == name:
                setattr(mod, child.rpartition(".")[2], cmod)

    def unregister_module(self, name: str, previous: types.ModuleType | None,
                          defined: frozenset[str] | None,
                          artifact: Artifact | None = None) -> None:
        """Undo :meth:`register_module`: put back what was registered before."""
        current = self.modules.get(name)
        if previous is None:
            self.modules.pop(name, None)
            self.defined.pop(name, None)
            self.live.pop(name, None)
            if current is not None and sys.modules.get(current.__name__) is current:
                del sys.modules[current.__name__]
            parent = self._parent(name)
            leaf = name.rpartition(".")[2]
            if parent is not None and getattr(parent, leaf, None) is current:
                delattr(parent, leaf)
            return
        self.modules[name] = previous
        if defined is not None:
            self.defined[name] = defined
        if artifact is not None:
            self.live[name] = artifact
        else:
            self.live.pop(name, None)
        sys.modules[previous.__name__] = previous
        parent = self._parent(name)
        if parent is not None:
            setattr(parent, name.rpartition(".")[2], previous)

    def unregister_all(self) -> None:
        for mod in self.modules.values():
            if sys.modules.get(mod.__name__) is mod:
                del sys.modules[mod.__name__]
        if sys.modules.get(self.package_name) is self.package:
            del sys.modules[self.package_name]

    def hold_sources(self, history: ModuleHistory) -> None:
        """Keep linecache entries for the versions ``history`` retains, drop the rest.

        Called after every change of a module's retained versions (a reload,
        a rollback, retention); entries another sandbox still holds stay.
        """
        hold_sources(self.id, history.module, history.records.values())

    def release_sources(self) -> None:
        """Give up every linecache entry this sandbox holds (it is being destroyed)."""
        release_sources(self.id)

    def current_versions(self) -> dict[str, int]:
        return {m: h.current for m, h in sorted(self.histories.items())
                if h.current is not None and m in self.modules}

    def info(self) -> SandboxInfo:
        sup = self.supervisor_spec
        return SandboxInfo(
            id=self.id, status=self.status, created_at=self.created_at,
            restart_count=self.restart_count, modules=self.current_versions(),
            max_versions=self.max_versions, namespace=self.package_name,
            sandbox_path=str(self.sandbox_path) if self.sandbox_path else None,
            supervisor=getattr(sup, "__qualname__", None) or (str(sup) if sup else None),
            history_scope=self.scope,
            host=getattr(self.host, "kind", "kernel"),
            engines=tuple(self.host.targets()) if hasattr(self.host, "targets") else (),
            stored_modules={m: h.current for m, h in sorted(self.histories.items())
                            if h.current is not None and m not in self.modules})

    def resolve(self, name: str) -> Any:
        """Top-level definition named ``name`` (definitions beat module names)."""
        modules, defined = self._names()
        owners = [m for m, names in defined.items() if name in names and "." not in m
                  and m in modules and name in modules[m].__dict__]
        if len(owners) > 1:
            a, b = sorted(owners)[:2]
            raise AmbiguousNameError(
                f"{name!r} is defined by modules {a!r} and {b!r} of sandbox {self.id!r}; "
                f"use sb.modules[{a!r}].{name} or sb.modules[{b!r}].{name}")
        if owners:
            return modules[owners[0]].__dict__[name]
        if name in modules:
            return modules[name]
        raise AttributeError(
            f"sandbox {self.id!r} has no module or top-level name {name!r} "
            f"(modules: {', '.join(sorted(modules)) or 'none'})")

    def visible_names(self) -> dict[str, Any]:
        """Top-level modules and what they define (a package's submodules are
        reached through the package, as in Python)."""
        modules, defined = self._names()
        out: dict[str, Any] = {m: mod for m, mod in modules.items() if "." not in m}
        top = {m: names for m, names in defined.items() if "." not in m}
        counts: dict[str, int] = {}
        for names in top.values():
            for n in names:
                counts[n] = counts.get(n, 0) + 1
        for m, names in top.items():
            mod = modules.get(m)
            for n in names:
                if counts[n] == 1 and mod is not None and n in mod.__dict__:
                    out[n] = mod.__dict__[n]
        return out

    def refresh_scratch(self) -> dict[str, Any]:
        names = self.visible_names()
        for stale in self._scratch_names - set(names):
            self.scratch.pop(stale, None)
        self.scratch.update(names)
        self._scratch_names = set(names)
        return self.scratch

    def get_module(self, module: str) -> types.ModuleType:
        try:
            return self._names()[0][module]
        except KeyError:
            raise ModuleNotFoundInSandboxError(
                f"sandbox {self.id!r} has no module {module!r} "
                f"(modules: {', '.join(sorted(self.modules)) or 'none'})") from None

    def history(self, module: str) -> ModuleHistory:
        h = self.histories.get(module)
        if h is None or h.current is None:
            raise ModuleNotFoundInSandboxError(
                f"sandbox {self.id!r} has no module {module!r} "
                f"(modules: {', '.join(sorted(self.histories)) or 'none'})")
        return h


class RetiredModule(types.ModuleType):
    """A staging module after its reload committed: its names are the live module's.

    Code that kept the module object a body imported (a namespace handed to
    ``exec`` by a library that generates methods, a module stored in an object)
    reaches the live module through it, instead of an emptied namespace.
    """

    def __getattr__(self, name: str) -> Any:
        live = self.__dict__.get("__sandbox_live_module__")
        if live is None or name == "__sandbox_live_module__":
            raise AttributeError(name)
        return getattr(live, name)


def retire(staging: types.ModuleType | None, live: types.ModuleType | None) -> None:
    """Make an emptied staging module forward to the live one (see RetiredModule)."""
    if staging is None or live is None or staging is live or staging.__dict__:
        return
    staging.__dict__["__sandbox_live_module__"] = live
    staging.__class__ = RetiredModule


class _CircularImport(CircularDependencyError, ImportError):
    """An import of a sandbox module whose body is still running, for a name it
    has not defined yet: Python itself cannot run this cycle (``except
    ImportError`` in the importing body catches it, as it would Python's)."""

    def __init__(self, cycle: list[str], message: str) -> None:
        CircularDependencyError.__init__(self, cycle, message)


class Sandbox:
    """Handle on a sandbox: ``sb.counter`` is a module, ``sb.Counter`` a definition.

    A top-level name defined by one module is reachable directly; a name defined
    by two modules raises :class:`AmbiguousNameError`; every module stays
    reachable through :attr:`modules`.
    """

    __slots__ = ("_state",)

    def __init__(self, state: SandboxState) -> None:
        object.__setattr__(self, "_state", state)

    @property
    def id(self) -> str:
        state: SandboxState = self._state
        return state.id

    @property
    def modules(self) -> types.MappingProxyType[str, types.ModuleType]:
        return types.MappingProxyType(self._state.visible_modules())

    @property
    def info(self) -> SandboxInfo:
        state: SandboxState = self._state
        return state.info()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self._state.resolve(name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a sandbox handle is read-only; change code with hot_reload_source()")

    def __dir__(self) -> list[str]:
        return sorted(set(object.__dir__(self)) | set(self._state.visible_names()))

    def __repr__(self) -> str:
        mods = ", ".join(f"{m} v{v}" for m, v in self._state.current_versions().items())
        return f"<Sandbox {self._state.id!r}: {mods or 'no modules'}>"
