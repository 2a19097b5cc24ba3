"""The live-state part of every reload: suspending servers, migrating states.

:class:`LiveState` joins each reload transaction (see ``engine.reload.PARTICIPANTS``):
before the code changes it suspends the servers running the affected modules,
captures the state of those servers and of the live instances of the affected
classes, and computes every migrated state with the ``state_handler``; after
the code changed it runs the new ``code_change`` of servers without a handler,
validates, and applies all states.  Any failure restores every captured state
(the code is reverted by the patcher) and the servers resume on the old code.
"""

from __future__ import annotations

import copy
import gc
import logging
import threading
import time
import types
from collections import deque
from collections.abc import Iterator
from functools import partial
from itertools import chain, repeat
from typing import Any

from ..engine import interpreter
from ..engine.frames import assert_quiet, codes_of, narrow, threads_running
from ..engine.interrupts import user_code
from ..engine.pairing import WAITING_NEW
from ..engine.sandbox import PACKAGE_ROOT
from ..engine.tracking import _native, adopt, instances_of, settle, trackable
from ..errors import CallsInFlight, IncompatibleStateError, ReloadError, SandboxTimeout
from .fields import added_fields, missing_required, refuse_missing, with_defaults
from .forward import forward, is_forwarder, unforward
from .server import Server, ServerProcess

log = logging.getLogger(__name__)

# Attribute access on instances, and making new ones (a new instance is made once the
# reload is over, under whatever code is current then, instead of half under each).
_GATED = frozenset({"__getattribute__", "__setattr__", "__delattr__", "__new__"})
_Missing = object()


class _Gate:
    """Holds other threads off the instances of classes whose state is being migrated.

    While a ``state_handler`` computes new states, every attribute read, write or
    delete on an instance of a migrating class from another thread waits until
    the reload is over (applied or refused), then goes ahead on whatever is
    current.  So no write lands in a state that is about to be replaced, and
    no new code runs on a state that is not migrated yet.  The reloading
    thread passes through.
    """

    def __init__(self) -> None:
        self.owner = threading.get_ident()
        self.open = threading.Event()
        self.installed: list[tuple[type, str, Any]] = []   # (class, name, original entry)
        self.passing: set[int] = set()     # threads finishing a call already running

    @staticmethod
    def methods_of(classes: list[type]) -> dict[int, tuple[Any, type]]:
        """The code of every method ``classes`` define or inherit from sandbox
        classes, by id(): (code, the migrating class)."""
        out: dict[int, tuple[Any, type]] = {}
        for cls in classes:
            for k in cls.__mro__:
                if k.__module__.startswith(PACKAGE_ROOT + "."):
                    for key, code in codes_of(k).items():
                        out.setdefault(key, (code, cls))
        return out

    def quiesce(self, methods: dict[int, tuple[Any, type]], deadline: float) -> None:
        """Wait until no other thread is inside one of ``methods`` (see :meth:`methods_of`).

        Calls already running when the gate closed go through it until they
        return (they may hold locks the next step needs); calls starting now wait
        at the gate.  Past ``deadline`` the reload is refused, naming the class,
        the method and the thread.
        """
        if not methods:
            return
        # a thread let through inside the gated __new__ is about to run __init__
        watch = {**methods, **_NEW_GATE_CODES}
        self.passing.update(threads_running(watch))   # in flight now: may go through
        while True:
            # the look and the update in one step: a thread let through cannot
            # leave and begin another call between them
            running = narrow(watch, self.passing)
            if not self.passing:
                return
            if time.monotonic() >= deadline:
                ident = next(iter(self.passing))
                code = running[ident]
                names = {t.ident: t.name for t in threading.enumerate()}
                cls = methods.get(id(code), (code, object))[1]
                raise SandboxTimeout(
                    f"a call of {code.co_qualname} on a {cls.__qualname__} instance in "
                    f"thread {names.get(ident, ident)!r} did not return within the "
                    "suspend_timeout; its state cannot be migrated while it runs")
            time.sleep(0.0002)    # let those calls finish (the GIL goes to them)

    def install(self, cls: type) -> None:
        for name in _GATED:
            resolved = getattr(cls, name)
            self.installed.append((cls, name, cls.__dict__.get(name, _Missing)))
            if name == "__new__":
                type.__setattr__(cls, name, self._gate_new(resolved))
            else:
                type.__setattr__(cls, name, self._gate(name, resolved))

    def _gate_new(self, resolved: Any) -> Any:
        owner, opened, passing = self.owner, self.open, self.passing
        plain = resolved is object.__new__

        def make(klass: type, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            # object.__new__ refuses arguments once a class defines __new__ (the gate)
            return object.__new__(klass) if plain else resolved(klass, *args, **kwargs)

        def __new__(klass: type, *args: Any, **kwargs: Any) -> Any:
            ident = threading.get_ident()
            if ident == owner or opened.is_set() or ident in passing:
                return make(klass, args, kwargs)
            while not opened.wait(0.0005):
                if ident in passing:
                    return make(klass, args, kwargs)
            new = klass.__new__      # whatever is current now
            return (object.__new__(klass) if new is object.__new__  # type: ignore[comparison-overlap]
                    else new(klass, *args, **kwargs))
        gate = staticmethod(__new__)
        if plain:    # a plain object either way: copies made meanwhile stay possible
            setattr(gate, WAITING_NEW, True)
        return gate

    def _gate(self, name: str, resolved: Any) -> Any:
        owner, opened = self.owner, self.open

        passing = self.passing

        def gate(obj: Any, *args: Any) -> Any:
            ident = threading.get_ident()
            if ident == owner or opened.is_set() or ident in passing:
                return resolved(obj, *args)
            # a call that was already running when the gate closed is let through
            # as soon as the reload sees it (quiesce); any other waits for the end
            while not opened.wait(0.0005):
                if ident in passing:
                    return resolved(obj, *args)
            return getattr(type(obj), name)(obj, *args)   # whatever is current now
        gate.__name__ = name
        return gate

    def removal_ops(self, final: Any) -> list[Any]:
        """C-level calls that put each gated attribute to ``final(cls, name, original)``."""
        ops = []
        for cls, name, original in self.installed:
            value = final(cls, name, original)
            if value is _Missing:
                ops.append(partial(type.__delattr__, cls, name))
                if name == "__new__" and _native is not None:
                    ops.append(partial(_native.reset_new, cls))
            else:
                ops.append(partial(type.__setattr__, cls, name, value))
        return ops

    def remove(self) -> None:
        for cls, name, original in reversed(self.installed):
            if original is _Missing:
                if name in cls.__dict__:
                    type.__delattr__(cls, name)
                    if name == "__new__" and _native is not None:
                        _native.reset_new(cls)
            else:
                type.__setattr__(cls, name, original)
        self.installed.clear()

    def release(self) -> None:
        self.open.set()



# ----------------------------------------------------------------- live state
def get_state(obj: Any) -> Any:
    """An instance's state: its ``__getstate__`` if it defines one, else its attributes."""
    cls = type(obj)
    if "__setstate__" in _mro_names(cls):
        return obj.__getstate__()
    state: dict[str, Any] = dict(getattr(obj, "__dict__", {}))
    for name in _slot_names(cls):
        try:
            state[name] = object.__getattribute__(obj, name)
        except AttributeError:
            pass
    return state


def set_state(obj: Any, state: Any) -> None:
    cls = type(obj)
    if "__setstate__" in _mro_names(cls):
        obj.__setstate__(state)
        return
    if not isinstance(state, dict):
        raise IncompatibleStateError(
            f"state of a {cls.__name__} instance must be a dict of attributes, got "
            f"{type(state).__name__}", reason="type_mismatch")
    slots = _slot_names(cls)
    rest = {k: v for k, v in state.items() if k not in slots}
    if hasattr(obj, "__dict__"):
        interpreter.replace_dict(obj, rest)   # one assignment: never half-set
    elif rest:
        raise IncompatibleStateError(f"{cls.__name__} has no attributes {sorted(rest)}",
                                     reason="missing_keys", keys=sorted(rest))
    for name in slots:
        if name in state:
            object.__setattr__(obj, name, state[name])
        else:
            try:
                object.__delattr__(obj, name)
            except AttributeError:
                pass


def copy_state(state: Any) -> Any:
    """A shallow copy handed to migrations, so one that mutates cannot touch the original."""
    if isinstance(state, (dict, list, set)):
        return type(state)(state) if type(state) in (dict, list, set) else state.copy()
    return state


def _mro_names(cls: type) -> set[str]:
    return {n for k in cls.__mro__ if k is not object for n in k.__dict__}


def _slot_names(cls: type) -> list[str]:
    out = []
    for k in cls.__mro__:
        slots = k.__dict__.get("__slots__", ())
        for s in (slots,) if isinstance(slots, str) else slots:
            if s not in ("__dict__", "__weakref__") and s not in out:
                out.append(s)
    return out


_BY_CODE_CHANGE = object()      # a server whose module the state handler leaves alone


def handler_for_module(handler: Any, module: str) -> Any:
    """The state handler of one reloaded module's objects and servers.  A handler may
    differ by module: one with a ``for_module(name)`` method gives each module's (None:
    that module's objects migrate as without a handler)."""
    pick = getattr(handler, "for_module", None)
    return pick(module) if callable(pick) else handler


def migrate_state(fn: Any, label: str, old: Any, ov: Any, nv: Any, *, validate: bool = True,
                  module: str | None = None) -> Any:
    """``fn(copy of old, ov, nv)``, validated against ``old``; any failure is a ReloadError.

    ``label`` names the object in the message (``"server counter#3"``).
    """
    try:
        new = fn(copy_state(old), ov, nv)
    except (Exception, SystemExit) as exc:
        # the handler as messages name it: 'add_history', 'Counter.code_change'
        by = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
        raise ReloadError(f"state migration of {label} by {by} raised "
                          f"{type(exc).__name__}: {exc}; nothing was changed", step="migrate",
                          module=module, obj=label) from exc
    if validate:
        try:
            validate_state_compatibility(old, new)
        except IncompatibleStateError as exc:
            by = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
            # (a result the migration loop re-checks comes through a lambda of this module)
            by = "" if getattr(fn, "__module__", None) == __name__ else f" (from {by})"
            raise ReloadError(f"migrated state of {label}{by} is "
                              f"incompatible ({exc.reason}: {exc}); nothing was changed",
                              step="validate", module=module, obj=label) from exc
    return new


def validate_state_compatibility(old: Any, new: Any) -> None:
    """None when ``new`` can replace ``old``; else raise IncompatibleStateError.

    Dicts must keep every key, tuples their size, other values their type.
    """
    if isinstance(old, dict):
        if not isinstance(new, dict):
            raise IncompatibleStateError(
                f"state was a dict, the migration returned {type(new).__name__}",
                reason="type_mismatch")
        missing = [k for k in old if k not in new]
        if missing:
            raise IncompatibleStateError(f"migrated state lost keys {missing!r}",
                                         reason="missing_keys", keys=missing)
        return
    if isinstance(old, tuple):
        if not isinstance(new, tuple):
            raise IncompatibleStateError(
                f"state was a tuple, the migration returned {type(new).__name__}",
                reason="type_mismatch")
        if len(old) != len(new):
            raise IncompatibleStateError(
                f"tuple state had {len(old)} elements, the migration returned {len(new)}",
                reason="size_mismatch")
        return
    if type(old) is not type(new):
        raise IncompatibleStateError(
            f"state was {type(old).__name__}, the migration returned {type(new).__name__}",
            reason="type_mismatch")
    return


def _versions(state: Any, changes: list[Any]) -> dict[str, tuple[int | None, int | None]]:
    out: dict[str, tuple[int | None, int | None]] = {}
    for c in changes:
        h = state.histories.get(c.module)
        old = h.current if h is not None else None
        if c.action == "rerun":
            new = old
        elif c.action == "new":
            new = h.next_version if h is not None else 1
        elif c.action == "activate":
            new = c.version
        else:
            new = h.undo_target() if c.delta < 0 else h.redo_target()
        out[c.module] = (old, new)
    return out


def _module_classes(mod: Any) -> Iterator[type]:
    seen: set[int] = set()
    todo = [v for v in vars(mod).values() if isinstance(v, type)]
    while todo:
        cls = todo.pop()
        if id(cls) in seen or cls.__module__ != mod.__name__:
            continue
        seen.add(id(cls))
        yield cls
        todo.extend(v for v in vars(cls).values() if isinstance(v, type))


def _with_subclasses(owned: dict[type, str]) -> dict[type, str]:
    """The classes of the reloaded modules and their subclasses defined elsewhere
    (a notebook subclass of a sandbox class), each with its reloaded module.

    Only the subclass links of these classes are walked, never the heap.
    """
    out = dict(owned)
    todo = list(owned.items())
    while todo:
        cls, m = todo.pop()
        sub: type
        for sub in type.__subclasses__(cls):
            if sub in out or is_forwarder(sub) or issubclass(sub, Server):
                continue
            adopt(sub)     # tracked from now on, if its base could not see it made
            out[sub] = m
            todo.append((sub, m))
    return out


def _stateless(cls: type) -> bool:
    """Instances hold nothing a handler could migrate (a named tuple, say)."""
    return (cls.__dictoffset__ == 0 and not _slot_names(cls)
            and "__setstate__" not in _mro_names(cls))


def _untracked_note(cls: type) -> str:
    return (f"{cls.__module__}.{cls.__qualname__}: its instances are not tracked "
            f"({_why_untracked(cls)}), so the state handler did not migrate them")


def _why_untracked(cls: type) -> str:
    solid = [b for b in cls.__mro__ if not b.__flags__ & (1 << 9) and b is not object]
    if solid:
        return f"built-in base {solid[0].__qualname__}"
    return "a base or metaclass the tracker cannot follow"


def _handler_failed(g: _ClassGroup, obj: Any, exc: BaseException) -> ReloadError:
    return ReloadError(f"state migration of {g.cls.__qualname__} instance at {id(obj):#x} "
                       f"raised {type(exc).__name__}: {exc}; nothing was changed",
                       step="migrate", obj=obj)


_CONTAINERS = (list, dict, set, bytearray)


def _snapshot(values: Any, into: list[tuple[Any, Any]], seen: set[int]) -> None:
    """Record the contents of every list, dict, set and bytearray reachable from
    ``values`` through such containers (a state handler may change them in place)."""
    for v in values:
        if isinstance(v, _CONTAINERS) and id(v) not in seen:
            seen.add(id(v))
            if isinstance(v, dict):
                into.append((v, dict(v)))
                _snapshot(v.values(), into, seen)
            else:
                into.append((v, v.copy()))
                if not isinstance(v, bytearray):
                    _snapshot(v, into, seen)


def _restore_snapshot(saved: list[tuple[Any, Any]]) -> None:
    """Put every recorded container's contents back, in place (identities kept)."""
    for container, contents in saved:
        if isinstance(container, dict):
            if container != contents or list(container) != list(contents):
                container.clear()
                container.update(contents)
        elif isinstance(container, set):
            if container != contents:
                container.clear()
                container.update(contents)
        elif container != contents:
            container[:] = contents


def _raw_state(obj: Any) -> tuple[dict[str, Any] | None, list[tuple[str, Any]]]:
    """An object's attributes exactly as they are (its dict's contents and its slots),
    read without its own code, so a refused reload can put them back the same way."""
    d = object.__getattribute__(obj, "__dict__") if hasattr(obj, "__dict__") else None
    slots = []
    for name in _slot_names(type(obj)):
        try:
            slots.append((name, object.__getattribute__(obj, name)))
        except AttributeError:
            slots.append((name, _Missing))
    return (dict(d) if d is not None else None), slots


def _restore_raw(obj: Any, raw: tuple[dict[str, Any] | None, list[tuple[str, Any]]]) -> None:
    d, slots = raw
    if d is not None:
        live = object.__getattribute__(obj, "__dict__")
        live.clear()
        live.update(d)
    for name, value in slots:
        if value is _Missing:
            try:
                object.__delattr__(obj, name)
            except AttributeError:
                pass
        else:
            object.__setattr__(obj, name, value)


class _ClassGroup:
    """Live instances of one class, with how to read and write their state."""

    __slots__ = ("cls", "handler", "module", "new", "objs", "old", "plain", "raw")

    def __init__(self, cls: type, objs: list[Any], module: str) -> None:
        self.cls = cls
        self.module = module      # the reloaded module (of the class, or of its base)
        self.objs = objs
        # plain: state is the attribute dict, replaced by one assignment
        self.plain = ("__setstate__" not in _mro_names(cls) and not _slot_names(cls)
                      and hasattr(cls, "__dict__"))
        self.old: list[Any] = []
        self.new: list[Any] = []
        self.raw: list[Any] = []      # __setstate__ classes: attributes as they were
        self.handler: Any = None     # the migration of this class's instances, if any


_ATOMS = frozenset({int, float, complex, str, bytes, bool, type(None)})


def _only_atoms(states: list[Any]) -> bool:
    """Whether every state is a dict of immutable plain values (found in C): the
    shallow copy each state gets before its handler runs is then copy enough."""
    if not all(type(st) is dict for st in states):
        return False
    return set(map(type, chain.from_iterable(map(dict.values, states)))) <= _ATOMS


def _copied(value: Any) -> Any:
    """A deep copy of a state for a dry run's handler (the state itself if it cannot be
    copied: a lock, a socket)."""
    try:
        return copy.deepcopy(value)
    except Exception:
        return value


class LiveState:
    """The live-state participant of one reload transaction."""

    def __init__(self, state: Any, patcher: Any, run_order: list[str], changes: list[Any],
                 options: Any) -> None:
        self.opts = options
        self.versions = _versions(state, changes)
        changed = {state.fullname(m): m for m in self.versions}
        running = {state.fullname(m) for m in run_order}
        self.module_of = changed
        self.suspend_set = [p for p in state.servers if p.alive and p.cls.__module__ in running]
        self.servers = [p for p in self.suspend_set if p.cls.__module__ in changed]
        # instances of classes replaced because their layout changed
        self.moved: list[tuple[Any, type, Any]] = []   # (old object, old class, new object)
        self.replaced = [(o, n) for o, n in patcher.replaced if o.__module__ in changed] \
            if options.use_state_preservation else []
        skip = {id(o) for o, _ in self.replaced}
        self.groups: list[_ClassGroup] = []
        if options.use_state_preservation:
            owned = {cls: m for m in changed.values() if state.modules.get(m) is not None
                     for cls in _module_classes(state.modules[m])
                     if not issubclass(cls, Server) and id(cls) not in skip}
            classes = _with_subclasses(owned)
            settle(list(classes) + [o for o, _ in self.replaced])
            for cls, m in classes.items():
                if issubclass(cls, type) or _stateless(cls) or vars(cls).get("_is_protocol"):
                    continue      # a metaclass; instances without state; a protocol
                if not trackable(cls):
                    if options.state_handler is not None or cls.__module__ not in changed:
                        patcher.notes.append(_untracked_note(cls))
                    continue
                objs = instances_of(cls)
                if objs:
                    self.groups.append(_ClassGroup(cls, objs, m))
        self.forwarded = 0
        self.suspended: list[ServerProcess] = []
        self.server_old: list[Any] = []
        self.server_new: list[Any] = []
        self.applied_servers = 0
        self.applied_groups: list[tuple[_ClassGroup, int]] = []
        self.patcher = patcher
        self.nested: list[tuple[Any, Any]] = []   # containers a handler may change
        self.gate: _Gate | None = None
        self.methods: dict[int, tuple[Any, type]] = {}   # (before the gates)
        self.gate_committed = False

    def before_commit(self) -> None:
        if not self.opts.use_state_preservation:
            return
        deadline = time.monotonic() + self.opts.suspend_timeout
        for p in self.suspend_set:
            self.suspended.append(p)      # resumed by finish() however suspend() ends
            try:
                p.suspend(max(0.0, deadline - time.monotonic()))
            except SandboxTimeout as exc:
                raise ReloadError(f"{exc}; the reload was refused and nothing changed",
                                  step="suspend", obj=p.label) from exc
        isolate = getattr(self.opts, "isolate_states", False)
        self.server_old = [_copied(p.state) if isolate else p.state for p in self.servers]
        handler = self.opts.state_handler
        for g in self.groups:
            g.handler = self._handler_for(handler_for_module(handler, g.module), g.cls,
                                          g.objs)
        active = [g for g in self.groups if g.handler is not None]
        if active:
            self.gate = _Gate()
            methods = self.methods = _Gate.methods_of([g.cls for g in active])
            for g in active:
                self.gate.install(g.cls)
                self.patcher.protect(g.cls, _GATED)
            try:
                self.gate.quiesce(methods, deadline)
            except SandboxTimeout as exc:
                raise ReloadError(f"{exc}; the reload was refused and nothing changed",
                                  step="suspend") from exc
            # the instances made since the plan, before the gate closed, too: from
            # here on no other thread makes one until the reload is over (with no
            # other thread, none can have been made)
            if threading.active_count() > 1:
                settle([g.cls for g in active])
                for g in active:
                    g.objs = instances_of(g.cls)
        for g in active:
            try:
                if g.plain:
                    g.old = list(map(object.__getattribute__, g.objs, repeat("__dict__")))
                    if not interpreter.dict_swap_ok():   # mutated in place: keep copies
                        g.old = [dict(d) for d in g.old]
                else:
                    g.raw = [_raw_state(o) for o in g.objs]
                    g.old = [get_state(o) for o in g.objs]
            except Exception as exc:
                raise ReloadError(f"capturing the state of {g.cls.__qualname__} instances "
                                  f"failed: {exc}", step="capture") from exc
            copied = False
            if isolate and g.handler is not None:
                try:       # a dry run: the handler never reaches a live container
                    if not _only_atoms(g.old):
                        g.old = copy.deepcopy(g.old)
                    copied = True
                except Exception:
                    log.debug("states of %s cannot be copied; recording their containers",
                              g.cls.__qualname__, exc_info=True)
            if g.handler is not None and not copied:
                self._record_nested(g)
            own = handler_for_module(handler, g.module)
            if g.handler is not own:
                fields: list[Any] = getattr(g.handler, "fields", [])
                missing = sorted({n for st in g.old for n in missing_required(fields, st)})
                if missing and own is None:
                    raise refuse_missing(g.cls, missing, len(g.objs))
        for old_cls, new_cls in self.replaced:
            module = self.module_of[old_cls.__module__]
            ov, nv = self.versions[module]
            objs = instances_of(old_cls)
            moving = self._handler_for(handler_for_module(handler, module), old_cls, objs,
                                       new_cls)
            for obj in objs:
                self.moved.append((obj, old_cls, self._move(obj, new_cls, moving, ov, nv)))
        if handler is not None:
            self.server_new = []
            for p, old in zip(self.servers, self.server_old):
                module = self.module_of[p.cls.__module__]
                own = handler_for_module(handler, module)
                # a module the handler leaves alone: its servers' own code_change (later)
                self.server_new.append(_BY_CODE_CHANGE if own is None else self._migrate(
                    own, f"server {p.label}", old, *self.versions[module]))
        if not active:
            return
        # Migrations allocate two dicts per object and no cycles: pausing the cyclic
        # collector keeps it from rescanning the whole heap many times meanwhile.
        paused = gc.isenabled()
        gc.disable()
        try:
            with user_code():
                for g in active:
                    ov, nv = self.versions[g.module]
                    g.new = self._migrate_many(g.handler, g, ov, nv)
        finally:
            if paused:
                gc.enable()

    def _record_nested(self, g: _ClassGroup) -> None:
        """What the handler may change in place (the lists, dicts, sets and bytearrays
        inside the states), to put back if the reload is refused."""
        seen: set[int] = set()
        paused = gc.isenabled()
        gc.disable()      # copies of acyclic containers: nothing for the collector to find
        try:
            if _native is not None:
                _native.snapshot(g.old, self.nested, seen)   # one C walk; most find nothing
                return
            values = chain.from_iterable(map(dict.values, g.old)) if g.plain else \
                chain.from_iterable(st.values() if isinstance(st, dict) else (st,)
                                    for st in g.old)
            if any(issubclass(t, _CONTAINERS) for t in set(map(type, values))):
                for st in g.old:
                    _snapshot(st.values() if isinstance(st, dict) else (st,), self.nested, seen)
        finally:
            if paused:
                gc.enable()

    def _handler_for(self, handler: Any, cls: type, objs: list[Any],
                     new_cls: type | None = None) -> Any:
        """The user's handler, followed by the defaults of fields the class gained."""
        if not objs:
            return handler
        new_cls = new_cls or self.patcher.new_class_of(cls)
        fields = added_fields(cls, new_cls) if new_cls is not None else []
        fn = with_defaults(handler, fields, cls)
        if fn is not handler:
            fn.fields = fields
        return fn

    def guard_ops(self) -> list[Any]:
        """No call of a migrating class's methods may have begun since the wait for
        calls in flight (a method looked up just before the gate closed and called
        after): checked in the commit's own loop, so nothing runs in between."""
        if self.gate is None or not self.methods:
            return []
        if _native is not None:       # the C call itself: no bytecode after the test
            return [partial(_native.quiet, self.methods, CallsInFlight)]
        return [partial(assert_quiet, self.methods, CallsInFlight)]

    def commit_ops(self) -> list[Any]:
        """New states of plain instances and the gates' removal, in the code switch's loop."""
        ops: list[Any] = []
        for g in self.groups:
            if g.new and g.plain:
                self.applied_groups.append((g, len(g.objs)))   # rollback puts back all
                if not interpreter.dict_swap_ok():
                    if _native is not None:      # one C call: no bytecode in between
                        ops.append(partial(_native.refill_dicts, g.objs, g.new))
                    else:
                        ops.append(partial(deque, map(interpreter.replace_dict, g.objs,
                                                      g.new), 0))
                elif _native is not None:
                    ops.append(partial(_native.set_dicts, g.objs, g.new))
                else:
                    ops.append(partial(deque, map(object.__setattr__, g.objs,
                                                  repeat("__dict__"), g.new), 0))
        if self.gate is not None:
            patcher = self.patcher

            def final(cls: type, name: str, original: Any) -> Any:
                new_cls = patcher.new_class_of(cls)
                if new_cls is None:
                    return original
                value = new_cls.__dict__.get(name, _Missing)
                return value if value is _Missing else patcher.tr(value)
            ops.extend(self.gate.removal_ops(final))
        return ops

    def _move(self, obj: Any, new_cls: type, handler: Any, ov: Any, nv: Any) -> Any:
        """A new object of ``new_cls`` holding ``obj``'s (migrated) state; nothing changes yet."""
        label = f"{type(obj).__qualname__} instance at {id(obj):#x}"
        try:
            state = get_state(obj)
        except Exception as exc:
            raise ReloadError(f"capturing the state of {label} failed: {exc}",
                              step="capture", obj=obj) from exc
        if handler is not None:
            if getattr(self.opts, "isolate_states", False):
                state = _copied(state)
            with user_code():
                state = self._migrate(handler, label, state, ov, nv)
        try:
            new: Any = new_cls.__new__(new_cls)  # type: ignore[call-overload]
            set_state(new, state)
        except Exception as exc:
            raise ReloadError(f"the state of {label} does not fit the new layout of "
                              f"{new_cls.__qualname__} ({exc}); pass a state_handler that "
                              "maps it", step="migrate", obj=obj) from exc
        return new

    def _migrate(self, fn: Any, label: str, old: Any, ov: Any, nv: Any) -> Any:
        return migrate_state(fn, label, old, ov, nv)

    def _migrate_many(self, fn: Any, g: _ClassGroup, ov: Any, nv: Any) -> list[Any]:
        if not g.plain:
            return [self._migrate(fn, f"{g.cls.__qualname__} instance at {id(o):#x}", s, ov, nv)
                    for o, s in zip(g.objs, g.old)]
        out: list[Any] = []
        if _native is not None:     # the same loop in C (engine/_live.c)
            start = 0
            while True:
                try:
                    bad = _native.migrate_dicts(fn, g.old, start, ov, nv, out)
                except (Exception, SystemExit) as exc:
                    raise _handler_failed(g, g.objs[len(out)], exc) from exc
                if bad < 0:
                    return out
                self._migrate(lambda *_, result=out[bad]: result,
                              f"{g.cls.__qualname__} instance at {id(g.objs[bad]):#x}",
                              g.old[bad], ov, nv)
                start = bad + 1
        append = out.append
        for obj, old in zip(g.objs, g.old):   # the hot loop of big migrations
            try:
                new = fn(dict(old), ov, nv)
            except (Exception, SystemExit) as exc:
                raise _handler_failed(g, obj, exc) from exc
            if type(new) is not dict or not new.keys() >= old.keys():
                self._migrate(lambda *_, result=new: result,
                              f"{g.cls.__qualname__} instance at {id(obj):#x}", old, ov, nv)
            append(new)
        return out

    def after_commit(self) -> int:
        self.gate_committed = True          # the commit loop removed the gates
        if not self.opts.use_state_preservation:
            return 0
        if self.opts.state_handler is None or any(s is _BY_CODE_CHANGE
                                                  for s in self.server_new):
            by_handler = self.server_new or [_BY_CODE_CHANGE] * len(self.servers)
            self.server_new = []
            for p, old, done in zip(self.servers, self.server_old, by_handler):
                if done is not _BY_CODE_CHANGE:
                    self.server_new.append(done)
                    continue
                impl = p.impl
                if type(impl).code_change is Server.code_change:
                    self.server_new.append(None)
                    continue
                ov, nv = self.versions[self.module_of[p.cls.__module__]]
                with user_code():
                    self.server_new.append(self._migrate(impl.code_change,
                                                         f"server {p.label}", old, ov, nv))
        migrated = 0
        for obj, _, new in self.moved:
            forward(obj, new)
            self.forwarded += 1
            migrated += 1
        for p, new in zip(self.servers, self.server_new):
            if new is not None:
                p.state = new
                migrated += 1
            self.applied_servers += 1
        for g in self.groups:
            if not g.new:
                continue
            if g.plain:            # applied in the commit loop
                migrated += len(g.objs)
                continue
            done = 0
            try:
                for obj, new in zip(g.objs, g.new):
                    set_state(obj, new)
                    done += 1
            except Exception as exc:
                raise ReloadError(f"restoring the migrated state of a {g.cls.__qualname__} "
                                  f"instance failed: {exc}", step="restore") from exc
            finally:
                self.applied_groups.append((g, done))
            migrated += done
        return migrated

    def rollback(self) -> None:
        # States go back while the gate still holds other threads off (the patcher's
        # undo has put the gate back if the commit had removed it): a write landing
        # between the gate's removal and a restore would be dropped with the state.
        for obj, old_cls, _ in self.moved[:self.forwarded]:
            unforward(obj, old_cls)
        self.forwarded = 0
        for p, old in zip(self.servers[:self.applied_servers], self.server_old):
            p.state = old
        for g, done in self.applied_groups:
            for i, (obj, old) in enumerate(zip(g.objs[:done], g.old)):
                if g.plain:
                    # a commit stopped before its first step left this dict in place
                    if interpreter.dict_swap_ok() and \
                            object.__getattribute__(obj, "__dict__") is old:
                        continue
                    interpreter.replace_dict(obj, old)
                else:       # byte for byte, whatever the class's __setstate__ does
                    _restore_raw(obj, g.raw[i])
        self.applied_groups.clear()
        _restore_snapshot(self.nested)      # what a handler changed in place
        self.nested.clear()
        self.applied_servers = 0
        if self.gate is not None:
            self.gate.remove()
            self.gate_committed = False

    def finish(self) -> None:
        self.nested.clear()
        if self.gate is not None:
            if not self.gate_committed:
                self.gate.remove()  # a refused reload: the classes as they were
            self.gate.release()
        for p in self.suspended:
            p.resume()
        self.suspended.clear()


#: The code of the gated ``__new__`` (and its helper), by id().
_NEW_GATE_CODES: dict[int, tuple[Any, type]] = {
    id(c): (c, object) for c in _Gate._gate_new.__code__.co_consts if isinstance(c, types.CodeType)}
