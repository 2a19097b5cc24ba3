"""Pairing: which object of a module's new version is which object of the old one.

A reload executes the new module body into a *staging* namespace, so the old
version keeps running untouched while the body runs.  :class:`Pairing` pairs
each new object with the old object of the same name (functions, classes,
methods, descriptors, nested classes, enum members, wrappers), one rule per
kind of object (:data:`RULES`), and checks that every class pair can be
patched in place.  It also translates values from the new world into the old
one (:data:`TRANSLATE`): an object of a new class joins the old class, a
function made by the body is adopted by the live namespace.  Nothing here
changes a live object; :mod:`engine.patch` commits (or reverts) the pairs.
"""

from __future__ import annotations

import enum
import functools
import logging
import types
import weakref
from collections.abc import Callable
from functools import partial
from typing import Any

from .repoint import Repoint
from .tracking import adopt, instances_of, track, trackable

log = logging.getLogger(__name__)

_TARGET = "__sandbox_magic_target__"
_FUNC_ATTRS = ("__code__", "__defaults__", "__kwdefaults__", "__doc__", "__name__",
               "__qualname__", "__module__", "__type_params__")
#: 3.14+: annotations are computed on demand by ``__annotate__`` (PEP 649/749); reading
#: ``__annotations__`` would run it, and it may name what is not defined yet.
LAZY_ANNOTATIONS = hasattr(types.FunctionType, "__annotate__")


def annotations_of(fn: types.FunctionType) -> tuple[Any, dict[str, Any] | None]:
    """A function's annotations as they are, never evaluated: ``(annotate, None)``
    while they are lazy, else ``(None, the dict)``."""
    if LAZY_ANNOTATIONS:
        annotate = getattr(fn, "__annotate__", None)
        if annotate is not None:
            return annotate, None
    return None, fn.__annotations__


def set_annotations(fn: types.FunctionType, annotate: Any, values: dict[str, Any] | None) -> None:
    """Put back what :func:`annotations_of` gave (a lazy ``__annotate__`` stays lazy)."""
    if annotate is not None:
        setattr(fn, "__annotate__", annotate)   # noqa: B010  (3.14+ only)
    else:
        fn.__annotations__ = values if values is not None else {}
# Attributes bound to the class object that created them; the old ones stay.
_CLASS_KEEP = frozenset({"__dict__", "__weakref__", "_abc_impl", "__sandbox_live__"})
_MODULE_KEEP = frozenset({"__name__", "__builtins__", "__spec__", "__loader__",
                          "__package__", "__path__"})
_Empty = object()
# Dunder names a module defines as functions (PEP 562): paired like any function.
_MODULE_HOOKS = frozenset({"__getattr__", "__dir__"})
_LRU = type(functools.lru_cache(maxsize=None)(lambda: None))
_GENERATORS = (types.GeneratorType, types.CoroutineType, types.AsyncGeneratorType)


def _links(obj: Any, tables: bool = False) -> list[Any]:
    """What a wrapper wraps: closure cells, ``__wrapped__``, ``func``, ``__func__``.

    With ``tables``, also the values of dicts held in closure cells (the
    registry of a ``singledispatch`` function, say).
    """
    if isinstance(obj, types.FunctionType):
        out = [v for v in map(_cell_get, _cells(obj)) if v is not _Empty]
        if tables:
            out += [x for v in out if type(v) is dict for x in v.values()]
        w = obj.__dict__.get("__wrapped__", _Empty)
        if w is not _Empty:
            out.append(w)
        return out
    if isinstance(obj, partial):
        return [obj.func]
    if isinstance(obj, (types.MethodType, classmethod, staticmethod)):
        return [obj.__func__]
    if isinstance(obj, _LRU):
        return [obj.__wrapped__]
    return []


def _reaches(obj: Any, pred: Callable[[Any], bool], depth: int = 4,
             tables: bool = False) -> bool:
    """Whether ``obj`` is, or wraps (through at most ``depth`` wrappers), a match."""
    if pred(obj):
        return True
    if depth <= 0:
        return False
    return any(_reaches(x, pred, depth - 1, tables) for x in _links(obj, tables))


# Containers are searched for functions to pair up to this size, and only these items.
_PAIR_ITEMS_MAX = 10_000
_PAIRABLE = (types.FunctionType, type, partial, _LRU, types.MethodType, classmethod,
             staticmethod, dict, list, tuple)


def _same_code(a: Any, b: Any) -> bool:
    return (isinstance(a, types.FunctionType) and isinstance(b, types.FunctionType)
            and a.__code__ == b.__code__ and a.__defaults__ == b.__defaults__)


def _cells(fn: types.FunctionType) -> tuple[types.CellType, ...]:
    return fn.__closure__ or ()


def _cell_get(cell: types.CellType) -> Any:
    try:
        return cell.cell_contents
    except ValueError:
        return _Empty


_ATOMS = frozenset({int, float, complex, str, bytes, bool, type(None)})


def _plain(fn: types.FunctionType) -> bool:
    """No closure, attributes, keyword defaults or annotations; defaults are atoms."""
    if fn.__closure__ is not None or fn.__dict__ or fn.__kwdefaults__ is not None:
        return False
    annotate, values = annotations_of(fn)
    if annotate is not None or values:
        return False
    defaults = fn.__defaults__
    return defaults is None or all(type(d) in _ATOMS for d in defaults)


def _clone_as(value: Any, target: type) -> Any:
    """A new ``target`` object with ``value``'s attributes and slots, or None."""
    if not _plain_new(target):
        return None
    try:
        clone: Any = object.__new__(target)
        d = getattr(value, "__dict__", None)
        if isinstance(d, dict):
            object.__setattr__(clone, "__dict__", d)
        for k in type(value).__mro__:
            for name in _slots_of(k) or ():
                if name in ("__dict__", "__weakref__"):
                    continue
                try:
                    object.__setattr__(clone, name, object.__getattribute__(value, name))
                except AttributeError:
                    pass
    except (TypeError, AttributeError):
        return None
    return clone


#: Marks a ``__new__`` that only waits and then makes a plain object (live state's
#: gate, while a reload migrates the class's instances).
WAITING_NEW = "__sandbox_waiting_new__"


def _plain_new(cls: type) -> bool:
    return all(b is object or "__new__" not in b.__dict__
               or getattr(b.__dict__["__new__"], WAITING_NEW, False) for b in cls.__mro__)


def _slots_of(cls: type) -> tuple[str, ...] | None:
    slots = cls.__dict__.get("__slots__")
    if slots is None:
        return None
    return (slots,) if isinstance(slots, str) else tuple(slots)


class Pairing:
    """Pairs new objects with old ones, then commits or reverts the update.

    Parameters
    ----------
    staged:
        ``{id(staging dict): real module dict}`` for every module of the
        transaction; functions whose globals are a staging dict are "new".
    staged_modules:
        ``{id(staging module): real module}``.
    old_namespaces:
        the real module dicts before the reload (their classes are "old").
    staging:
        the staging dicts themselves (kept alive until :meth:`finish`).
    """

    def __init__(self, staged: dict[int, dict[str, Any]],
                 staged_modules: dict[int, types.ModuleType],
                 old_namespaces: list[dict[str, Any]],
                 staging: list[dict[str, Any]] | None = None) -> None:
        self._globals_map = staged
        self._real_ids = {id(d) for d in staged.values()}
        self._modnames = {m.__name__ for m in staged_modules.values()}
        self._staging = list(staging or ())
        self._old_classes: set[int] = set()
        for ns in old_namespaces:
            for v in ns.values():
                self._note_old_class(v)
        self.memo: dict[int, Any] = dict(staged_modules)
        self.memo.update(staged)          # globals() captured by the body -> the live dict
        self._keep: list[Any] = []        # keeps new objects alive while ids are in use
        self._func_pairs: list[tuple[types.FunctionType, Any, str]] = []
        self._class_pairs: list[tuple[type, type, str]] = []
        self._instance_pairs: list[tuple[Any, Any]] = []
        self._wrapper_pairs: list[tuple[Any, Any]] = []
        self._paired: set[tuple[int, int]] = set()
        self._walked: set[int] = set()
        self._undo: list[Callable[[], None]] = []
        self._repoint = Repoint()
        self._live_frames: set[int] = set()   # staging dicts a body-made frame still reads
        # New plain functions whose old object took their code; still on a staging dict.
        self._unadopted: list[weakref.ref[types.FunctionType]] = []
        self._protected: dict[int, frozenset[str]] = {}   # class attributes others manage
        self.notes: list[str] = []
        self.replaced: list[tuple[type, type]] = []   # (old, new) classes not patchable

    # ------------------------------------------------------------------ pairing
    def _is_new_function(self, obj: Any) -> bool:
        return isinstance(obj, types.FunctionType) and id(obj.__globals__) in self._globals_map

    def _is_new(self, obj: Any) -> bool:
        """Made by this transaction's bodies: a function of theirs, or a wrapper of one."""
        if isinstance(obj, types.FunctionType) and id(obj.__globals__) in self._globals_map:
            return True     # the common case, without building the search
        return _reaches(obj, lambda o: self._is_new_function(o) or self._is_new_class(o),
                        tables=True)

    def _is_owned(self, obj: Any) -> bool:
        """Belongs to a module of this transaction (safe to patch in place)."""
        if isinstance(obj, types.FunctionType) and id(obj.__globals__) in self._real_ids:
            return True
        return _reaches(obj, lambda o: (isinstance(o, types.FunctionType)
                                        and id(o.__globals__) in self._real_ids)
                        or (isinstance(o, type) and id(o) in self._old_classes))

    def _note_old_class(self, v: Any) -> None:
        if isinstance(v, type) and id(v) not in self._old_classes \
                and v.__module__ in self._modnames:
            self._old_classes.add(id(v))
            for a in v.__dict__.values():
                self._note_old_class(a)

    def _is_new_class(self, obj: Any) -> bool:
        return isinstance(obj, type) and id(obj) not in self._old_classes \
            and obj.__module__ in self._modnames

    def pair_module(self, old_ns: dict[str, Any], new_ns: dict[str, Any], modname: str) -> None:
        for name, new in new_ns.items():
            if name.startswith("__") and name.endswith("__") and name not in _MODULE_HOOKS:
                continue
            old = old_ns.get(name, _Empty)
            if old is _Empty or old is new:
                continue
            self._pair(old, new, f"{modname}.{name}")

    def _pair(self, old: Any, new: Any, path: str) -> None:
        """Pair one old object with the new one of the same name: the first rule that applies."""
        if id(new) in self.memo or old is new:
            return
        key = (id(old), id(new))
        if key in self._paired:
            return
        self._paired.add(key)
        self._keep.append(new)
        for applies, pair in RULES:
            if applies(self, old, new):
                pair(self, old, new, path)
                return

    # One method per kind of object; RULES below lists them in order.
    def _pair_functions(self, old: types.FunctionType, new: types.FunctionType,
                        path: str) -> None:
        if "." not in new.__qualname__ and _plain(old) and _plain(new):
            # The common case (a module-level def without decorators or closures):
            # only the code and defaults move; the new object is never adopted.
            self._remember(new, old)
            self._func_pairs.append((old, new, "plain"))
        elif len(_cells(old)) == len(_cells(new)):
            self._remember(new, old)
            self._func_pairs.append((old, new, "code"))
            for oc, nc in zip(_cells(old), _cells(new)):
                ov, nv = _cell_get(oc), _cell_get(nc)
                if ov is not _Empty and nv is not _Empty:
                    self._pair(ov, nv, f"{path}.<closure>")
            ow, nw = old.__dict__.get("__wrapped__", _Empty), new.__dict__.get("__wrapped__", _Empty)
            if ow is not _Empty and nw is not _Empty:
                self._pair(ow, nw, f"{path}.__wrapped__")
        else:
            # A decorator added or removed: the old object keeps its identity and forwards.
            self._remember(new, old)
            self._func_pairs.append((old, new, "trampoline"))
            self.notes.append(f"{path}: closure changed shape; the old function object "
                              "now forwards to the new one")

    def _pair_kind_switch(self, old: types.FunctionType, new: Any, path: str) -> None:
        self._func_pairs.append((old, new, "forward"))
        self.notes.append(f"{path}: changed from a function to {type(new).__name__} "
                          f"{getattr(new, '__name__', '')}; the old function forwards to it")

    def _pair_classes(self, old: type, new: type, path: str) -> None:
        self._remember(new, old)
        self._class_pairs.append((old, new, path))
        for name, nv in new.__dict__.items():
            if name in _CLASS_KEEP:
                continue
            ov = old.__dict__.get(name, _Empty)
            if ov is not _Empty:
                self._pair_attr(ov, nv, f"{path}.{name}", old, new)

    def _pair_class_to_function(self, old: type, new: Any, path: str) -> None:
        self.notes.append(f"{path}: changed from a class to a function; references to "
                          "the old class taken before this reload still see the class")

    def _pair_memoized(self, old: Any, new: Any, path: str) -> None:
        self._pair(old.__wrapped__, new.__wrapped__, f"{path}.__wrapped__")
        if old.cache_parameters() == new.cache_parameters():
            self._remember(new, old)      # the old wrapper stays, with the new function
        else:
            self.notes.append(f"{path}: the cache settings changed; the module binds the new "
                              "cache, the old one runs the new code")
        self._wrapper_pairs.append((old, new))

    def _pair_partials(self, old: partial[Any], new: partial[Any], path: str) -> None:
        self._pair(old.func, new.func, f"{path}.func")
        self._remember(new, old)
        self._wrapper_pairs.append((old, new))

    def _pair_methods(self, old: Any, new: Any, path: str) -> None:
        self._pair(old.__func__, new.__func__, path)

    def _pair_containers(self, old: Any, new: Any, path: str) -> None:
        if len(new) > _PAIR_ITEMS_MAX:
            return
        if isinstance(old, dict):
            for k, nv in new.items():
                ov = old.get(k, _Empty)
                if ov is not _Empty and isinstance(nv, _PAIRABLE):
                    self._pair(ov, nv, f"{path}[{k!r}]")
        else:
            for i, (ov, nv) in enumerate(zip(old, new)):
                if isinstance(nv, _PAIRABLE):
                    self._pair(ov, nv, f"{path}[{i}]")

    def _pair_attr(self, ov: Any, nv: Any, path: str, old_cls: type, new_cls: type) -> None:
        if isinstance(ov, property) and isinstance(nv, property):
            for part in ("fget", "fset", "fdel"):
                o, n = getattr(ov, part), getattr(nv, part)
                if o is not None and n is not None:
                    self._pair(o, n, f"{path}.{part}")
        elif isinstance(ov, functools.cached_property) and isinstance(nv, functools.cached_property):
            self._pair(ov.func, nv.func, path)
        elif type(ov) is old_cls and type(nv) is new_cls and isinstance(ov, enum.Enum):
            self._remember(nv, ov)
            self._instance_pairs.append((ov, nv))
        else:
            self._pair(ov, nv, path)

    def _remember(self, new: Any, old: Any) -> None:
        self.memo[id(new)] = old
        self._keep.append(new)

    def check_classes(self) -> None:
        """Drop class pairs that cannot be patched in place (layout, metaclass, bases)."""
        changed = True
        while changed:
            changed = False
            for pair in list(self._class_pairs):
                old, new, path = pair
                why = self._unpatchable(old, new)
                if why:
                    self._class_pairs.remove(pair)
                    self.replaced.append((old, new))
                    del self.memo[id(new)]
                    self._instance_pairs = [(o, n) for o, n in self._instance_pairs
                                            if type(n) is not new]
                    self.notes.append(f"{path}: {why}; replaced by the new class (live "
                                      "instances move their state into new objects and "
                                      "forward to them)")
                    changed = True

    def _unpatchable(self, old: type, new: type) -> str | None:
        if self.tr_ref(type(new)) is not type(old):
            return "metaclass changed"
        if _slots_of(old) != _slots_of(new) or old.__basicsize__ != new.__basicsize__ \
                or old.__itemsize__ != new.__itemsize__ \
                or old.__dictoffset__ != new.__dictoffset__ \
                or old.__weakrefoffset__ != new.__weakrefoffset__:
            return "instance layout changed (__slots__ or base layout)"
        bases = tuple(self.tr_ref(b) for b in new.__bases__)
        if bases != old.__bases__:
            saved = old.__bases__
            try:
                old.__bases__ = bases
            except TypeError as exc:
                return f"bases cannot change in place ({exc})"
            finally:
                try:
                    old.__bases__ = saved
                except TypeError:  # pragma: no cover - restoring the original always works
                    pass
        return None

    def tr_ref(self, obj: Any) -> Any:
        return self.memo.get(id(obj), obj)

    def new_class_of(self, old: type) -> type | None:
        for o, n, _ in self._class_pairs:
            if o is old:
                return n
        return None

    def protect(self, cls: type, names: frozenset[str]) -> None:
        """Leave these attributes of ``cls`` to another participant (see live state)."""
        self._protected[id(cls)] = names

    # -------------------------------------------------------------- translation
    def tr(self, value: Any) -> Any:
        """Map a value from the new world onto the old one (in place for new objects).

        Each kind of object has one row in :data:`TRANSLATE`; the first whose
        type matches handles it.  Instances of new classes switch to the old
        class; anything else is returned as it is.
        """
        hit = self.memo.get(id(value), _Empty)
        if hit is not _Empty:
            return hit
        handler = _TRANSLATE_EXACT.get(type(value))
        if handler is None and self._is_new_class(type(value)):
            return self._tr_instance(value)   # also a dict, list or tuple subclass
        if handler is None:
            for kind, h in TRANSLATE:
                if isinstance(value, kind):
                    handler = h
                    break
            else:
                return self._tr_instance(value)
        return handler(self, value)

    # One method per kind of object; TRANSLATE below lists them.
    def _tr_function(self, value: types.FunctionType) -> Any:
        if self._is_new_function(value):
            self._adopt_function(value)
        elif id(value) not in self._walked and self._is_new(value):
            self._adopt_function(value)   # a wrapper made by the body around new code
        return value

    def _tr_class(self, value: type) -> Any:
        if self._is_new_class(value):
            self._adopt_class(value)
        return value

    def _tr_list(self, value: list[Any]) -> Any:
        if id(value) not in self._walked:
            self._walked.add(id(value))
            for i, v in enumerate(value):
                t = self.tr(v)
                if t is not v:
                    value[i] = t
        return value

    def _tr_dict(self, value: dict[Any, Any]) -> Any:
        if id(value) not in self._walked:
            self._walked.add(id(value))
            for k, v in list(value.items()):
                t = self.tr(v)
                if t is not v:
                    value[k] = t
        return value

    def _tr_tuple(self, value: tuple[Any, ...]) -> Any:
        if type(value) is not tuple:      # a tuple subclass of another library
            return value
        items = [self.tr(v) for v in value]
        if any(a is not b for a, b in zip(items, value)):
            return tuple(items)
        return value

    def _tr_set(self, value: set[Any] | frozenset[Any]) -> Any:
        items = [self.tr(v) for v in value]
        if any(a is not b for a, b in zip(items, value)):
            if isinstance(value, set):
                value.clear()
                value.update(items)
                return value
            return type(value)(items)
        return value

    def _tr_static_or_class_method(self, value: classmethod[Any, Any, Any] | staticmethod[Any, Any]
                                   ) -> Any:
        f = self.tr(value.__func__)
        return value if f is value.__func__ else type(value)(f)

    def _tr_bound_method(self, value: types.MethodType) -> Any:
        f, obj = self.tr(value.__func__), self.tr(value.__self__)
        if f is value.__func__ and obj is value.__self__:
            return value
        return types.MethodType(f, obj)

    def _tr_property(self, value: property) -> Any:
        if type(value) is not property:
            return self._tr_instance(value)
        parts = [self.tr(p) for p in (value.fget, value.fset, value.fdel)]
        if any(a is not b for a, b in zip(parts, (value.fget, value.fset, value.fdel))):
            return property(parts[0], parts[1], parts[2], value.__doc__)
        return value

    def _tr_cached_property(self, value: functools.cached_property[Any]) -> Any:
        value.func = self.tr(value.func)
        return value

    def _tr_partial(self, value: partial[Any]) -> Any:
        if type(value) is partial and id(value) not in self._walked and self._is_new(value):
            self._walked.add(id(value))
            state = self._partial_state(value)
            if any(a is not b for a, b in zip(state, value.__reduce__()[2])):
                value.__setstate__(state)  # type: ignore[attr-defined]
        return value

    def _tr_memoized(self, value: Any) -> Any:
        if id(value) not in self._walked:
            self._walked.add(id(value))
            self.tr(value.__wrapped__)     # the function it calls keeps its identity
            d = getattr(value, "__dict__", None)
            if d:
                self.tr(d)
        return value

    def _tr_mappingproxy(self, value: types.MappingProxyType[Any, Any]) -> Any:
        for v in value.values():           # e.g. a singledispatch registry
            self.tr(v)
        return value

    def _tr_generator(self, value: Any) -> Any:
        frame = getattr(value, "gi_frame", None) or getattr(value, "cr_frame", None) \
            or getattr(value, "ag_frame", None)
        if frame is not None and id(frame.f_globals) in self._globals_map:
            self._live_frames.add(id(frame.f_globals))
            self.notes.append(f"{getattr(value, '__qualname__', 'a generator')}: a "
                              "generator made by the module body keeps the globals it "
                              "started with; create it again to use the live module")
        return value

    def _tr_as_is(self, value: Any) -> Any:
        return value

    def _tr_instance(self, value: Any) -> Any:
        """An object of a new class joins the old class it is paired with.

        ``object.__setattr__`` goes around the class's own ``__setattr__`` (a
        frozen dataclass or attrs class refuses every assignment).
        """
        cls = type(value)
        if self._is_new_class(cls) and id(value) not in self._walked:
            self._walked.add(id(value))
            target = self.memo.get(id(cls))
            if target is None:
                self._adopt_class(cls)   # a class only this version has (made by a library)
            if target is not None and target is not cls:
                try:
                    object.__setattr__(value, "__class__", target)
                    track(target, value)
                except TypeError as exc:
                    # CPython refuses some identical layouts (__slots__ naming
                    # __weakref__ after other slots): the body's object is
                    # replaced by a copy made as the old class.
                    clone = _clone_as(value, target)
                    if clone is None:
                        self.notes.append(f"a {cls.__qualname__} object made by the module "
                                          f"body keeps the new class ({exc})")
                    else:
                        self._remember(value, clone)
                        value = clone
            d = getattr(value, "__dict__", None)
            if isinstance(d, dict):
                self.tr(d)
            if isinstance(value, list):
                self._tr_list(value)
            elif isinstance(value, dict):
                self._tr_dict(value)
            elif isinstance(value, tuple):
                value = self._tr_tuple_items(value)
        return value

    def _tr_tuple_items(self, value: tuple[Any, ...]) -> Any:
        """A named tuple (or other tuple subclass) the body made, holding new objects
        (functions, say): a copy holding their old, live identities instead."""
        items = [self.tr(v) for v in value]
        if all(a is b for a, b in zip(items, value)):
            return value
        try:
            copy: Any = tuple.__new__(type(value), items)
            d = getattr(value, "__dict__", None)
            if d:
                copy.__dict__.update(d)
        except (TypeError, AttributeError):
            return value
        self._remember(value, copy)
        return copy

    def adopt_instances(self) -> None:
        """Every tracked object of a new class made by the bodies (module-level
        objects, and those the body handed to registries anywhere) joins the old
        class, so that ``isinstance``, pickle and ``copy`` keep working."""
        for old, new, _ in self._class_pairs:
            if trackable(new) != trackable(old):   # so that objects can move between them
                adopt(old)
                adopt(new)
            for obj in instances_of(new):
                self.tr(obj)

    def _partial_state(self, p: partial[Any]) -> tuple[Any, ...]:
        state: Any = p.__reduce__()[2]
        func, args, kwds, d = state
        return (self.tr(func), self.tr(args), self.tr(kwds) if kwds is not None else None,
                self.tr(d) if d is not None else None)

    def _adopt_function(self, fn: types.FunctionType) -> None:
        """Point a function made by a body at the live globals; translate its parts in place."""
        if id(fn) in self._walked:
            return
        self._walked.add(id(fn))
        self._keep.append(fn)
        real = self._globals_map.get(id(fn.__globals__))
        if real is not None:
            self._repoint.add(fn, real)
        fn.__defaults__ = self.tr(fn.__defaults__)
        if fn.__kwdefaults__:
            self.tr(fn.__kwdefaults__)
        if fn.__dict__:
            self.tr(fn.__dict__)
        for cell in _cells(fn):
            v = _cell_get(cell)
            if v is not _Empty:
                t = self.tr(v)
                if t is not v:
                    cell.cell_contents = t

    def _adopt_class(self, cls: type) -> None:
        """Point a class that only exists in the new version at the real globals."""
        if id(cls) in self._walked:
            return
        self._walked.add(id(cls))
        bases = tuple(self.tr_ref(b) for b in cls.__bases__)
        if bases != cls.__bases__:
            try:
                cls.__bases__ = bases
            except TypeError as exc:
                self.notes.append(f"{cls.__qualname__}: bases kept from the new version ({exc})")
        for name, v in list(cls.__dict__.items()):
            if name in _CLASS_KEEP:
                continue
            t = self.tr(v)
            if t is not v:
                type.__setattr__(cls, name, t)

def _both(kind: Any) -> Callable[[Pairing, Any, Any], bool]:
    return lambda p, o, n: type(o) is type(n) and isinstance(o, kind) \
        and p._is_new(n) and p._is_owned(o)


#: How each kind of object pairs with its new version: (applies, pair), first match wins.
RULES: list[tuple[Callable[[Pairing, Any, Any], bool], Callable[..., None]]] = [
    (lambda p, o, n: isinstance(o, types.FunctionType) and isinstance(n, types.FunctionType)
     and p._is_new(n) and p._is_owned(o), Pairing._pair_functions),
    (lambda p, o, n: isinstance(o, types.FunctionType) and callable(n)
     and (p._is_new_class(n) or p._is_new_function(n)) and p._is_owned(o),
     Pairing._pair_kind_switch),
    (lambda p, o, n: isinstance(o, type) and id(o) in p._old_classes and p._is_new_class(n),
     Pairing._pair_classes),
    (lambda p, o, n: isinstance(o, type) and not isinstance(n, type)
     and p._is_new_function(n), Pairing._pair_class_to_function),
    (_both(_LRU), Pairing._pair_memoized),
    (lambda p, o, n: type(o) is partial and type(n) is partial and p._is_new(n)
     and p._is_owned(o), Pairing._pair_partials),
    (lambda p, o, n: type(o) is type(n) and isinstance(o, (types.MethodType, classmethod,
                                                           staticmethod)),
     Pairing._pair_methods),
    (lambda p, o, n: type(o) is type(n) and type(o) in (dict, list, tuple),
     Pairing._pair_containers),
]


#: How each kind of value is translated into the old world: (type, method), first match wins.
TRANSLATE: list[tuple[type | tuple[type, ...], Callable[[Pairing, Any], Any]]] = [
    (types.FunctionType, Pairing._tr_function),
    (type, Pairing._tr_class),
    (list, Pairing._tr_list),
    (dict, Pairing._tr_dict),
    (tuple, Pairing._tr_tuple),
    ((set, frozenset), Pairing._tr_set),
    ((classmethod, staticmethod), Pairing._tr_static_or_class_method),
    (types.MethodType, Pairing._tr_bound_method),
    (property, Pairing._tr_property),
    (functools.cached_property, Pairing._tr_cached_property),
    (partial, Pairing._tr_partial),
    (_LRU, Pairing._tr_memoized),
    (types.MappingProxyType, Pairing._tr_mappingproxy),
    (_GENERATORS, Pairing._tr_generator),
    (types.ModuleType, Pairing._tr_as_is),
]
# The common exact types skip the scan of TRANSLATE.
_TRANSLATE_EXACT: dict[type, Callable[[Pairing, Any], Any]] = {
    kind: h for kind, h in TRANSLATE if isinstance(kind, type)}
_TRANSLATE_EXACT.update({int: Pairing._tr_as_is, str: Pairing._tr_as_is, float: Pairing._tr_as_is,
                         bool: Pairing._tr_as_is, bytes: Pairing._tr_as_is,
                         type(None): Pairing._tr_as_is})
