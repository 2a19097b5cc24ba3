"""In-place patching: make the objects of a module's old version run the new code.

A reload executes the new module body into a *staging* namespace, so the old
version keeps running untouched while the body runs.  :mod:`engine.pairing`
pairs each new object with the old object of the same name and checks that
every pair can be patched; this module commits: old functions get the new
code, old classes get the new attributes, the old module dict gets the new
bindings.  Every reference
anywhere in the program (``from m import f``, bound methods, instances,
pickles) therefore sees the new code without a heap scan.

Every mutation of an old object is recorded first, so :meth:`Patcher.revert`
puts all of them back exactly; a reload is either applied whole or not at all.

Functions the new body creates keep their identity: the commit re-points their
globals from the staging namespace at the live module dict (see ``engine.repoint``),
so a function reached only through a wrapper (``lru_cache``, ``partial``,
``singledispatch``, a ``functools.wraps`` closure, a registry) reads and writes
the live namespace too.  Wrappers are paired like functions, one rule per kind
of object (``pairing.RULES``): the wrapped old function gets the new code, an old
memoizing wrapper forgets its cache, an old ``partial`` takes the new
arguments, so a wrapper held from an older version runs the current code.

Where an in-place update is impossible the patcher falls back to something
correct and says so in :attr:`Patcher.notes`:

* a function whose closure changed shape (for example a decorator was added
  or removed) keeps its identity and forwards to the new function (a
  trampoline); ``__wrapped__`` points at the target;
* a class whose memory layout, metaclass or bases cannot change in place is
  replaced by the new class; existing instances keep the old class.
"""

from __future__ import annotations

import functools
import gc
import logging
import operator
import sys
import types
import weakref
from collections import Counter, deque
from collections.abc import Callable
from functools import partial
from typing import Any

from .frames import frames_reading
from .pairing import (
    _CLASS_KEEP,
    _FUNC_ATTRS,
    _MODULE_KEEP,
    _TARGET,
    Pairing,
    _cell_get,
    _cells,
    _Empty,
    annotations_of,
    set_annotations,
)
from .repoint import PINS, Repoint
from .tracking import _native as native_module

log = logging.getLogger(__name__)



@functools.cache
def _trampoline_code(nfree: int) -> types.CodeType:
    """Code of ``f(*a, **kw): return target(*a, **kw)`` with ``nfree`` free variables.

    ``__code__`` may only be replaced by code with as many free variables as
    the function's closure has cells; the extra names are referenced and unused.
    """
    names = [f"_sbx_free{i}" for i in range(nfree)]
    lines = ["def _outer():"]
    lines += [f"    {n} = None" for n in names]
    lines.append(f"    def _trampoline(*args, {_TARGET}, **kwargs):")
    if names:
        lines.append("        " + ", ".join(names))
    lines.append(f"        return {_TARGET}(*args, **kwargs)")
    lines.append("    return _trampoline")
    ns: dict[str, Any] = {}
    exec(compile("\n".join(lines), "<sandbox trampoline>", "exec"), ns)
    code: types.CodeType = ns["_outer"]().__code__
    assert len(code.co_freevars) == nfree
    return code



def _cell_set(cell: types.CellType, value: Any) -> None:
    if value is _Empty:
        try:
            del cell.cell_contents
        except ValueError:
            pass
    else:
        cell.cell_contents = value


# The metaclass owns these as data descriptors: a class's own attribute of that
# name (a property) is reached only through its namespace.
_TYPE_NAMES = frozenset({"__name__", "__qualname__"})


def _class_set(cls: type, name: str, value: Any) -> None:
    _class_set_op(cls, name, value)()


def _class_del(cls: type, name: str) -> None:
    _class_del_op(cls, name)()


def _class_set_op(cls: type, name: str, value: Any) -> Callable[[], Any]:
    """The C-level call that sets ``name`` in a class (for the commit's loop: no
    bytecode may run between its steps, or another thread could run meanwhile)."""
    if name in _TYPE_NAMES and not isinstance(value, str):
        if native_module is not None:
            return partial(native_module.class_dict_set, cls, name, value)
        return partial(_class_dict_set, cls, name, value)
    return partial(type.__setattr__, cls, name, value)


def _class_del_op(cls: type, name: str) -> Callable[[], Any]:
    if name in _TYPE_NAMES:
        if native_module is not None:
            return partial(native_module.class_dict_set, cls, name)
        return partial(_class_dict_set, cls, name)
    return partial(type.__delattr__, cls, name)


_MISSING = object()


def _class_dict_set(cls: type, name: str, value: Any = _MISSING) -> None:
    """What ``class_dict_set`` of the compiled part does, without it: the class's own
    dict (behind its read-only proxy) changed, then any attribute set and deleted
    on the class, which drops the lookups the interpreter cached for it."""
    own = gc.get_referents(cls.__dict__)[0]
    if value is _MISSING:
        del own[name]
    else:
        own[name] = value
    type.__setattr__(cls, "__sandbox_modified__", None)
    type.__delattr__(cls, "__sandbox_modified__")


class Patcher(Pairing):
    """Pairs new objects with old ones (see :class:`Pairing`), then commits or reverts."""

    # ------------------------------------------------------------------- commit
    def commit(self, modules: list[tuple[dict[str, Any], dict[str, Any]]],
               extra_ops: Callable[[], list[Callable[[], Any]]] | None = None,
               guards: list[Callable[[], Any]] | None = None) -> None:
        """Apply every pair and rewrite each ``(real_dict, staging_dict)``; all or nothing.

        Every change to an old object is first prepared as a call of a C function
        (``setattr``, ``type.__setattr__``, ``dict.update``...), then all of them
        run inside one C-level loop.  No Python bytecode runs in between, so no
        other thread can observe a module that is half old and half new.
        ``extra_ops`` adds the operations of other participants (live state)
        to the same loop; ``guards`` run first in it (C-level checks: one that
        raises stops the loop before anything changed).
        """
        ops: list[Callable[[], Any]] = list(guards or ())
        try:
            self.adopt_instances()
            plain = [(old, new) for old, new, mode in self._func_pairs if mode == "plain"]
            if plain:
                self._patch_plain(ops, plain)
            for old, new, mode in self._func_pairs:
                if mode != "plain":
                    self._patch_function(ops, old, new, mode)
            for old_cls, new_cls, _ in self._class_pairs:
                self._patch_class(ops, old_cls, new_cls)
            for old, new in self._instance_pairs:
                self._patch_instance(ops, old, new)
            for old, new in self._wrapper_pairs:
                self._patch_wrapper(ops, old, new)
            for real, staging in modules:
                self._patch_module(ops, real, staging)
            self._undo.append(self._repoint.undo)
            ops.extend(self._repoint.ops())
            if extra_ops is not None:
                ops.extend(extra_ops())
            deque(map(operator.call, ops), maxlen=0)
        except BaseException:
            self.revert()
            raise

    def revert(self) -> None:
        """Undo every mutation of an old object, newest first."""
        while self._undo:
            self._undo.pop()()

    def finish(self) -> None:
        """The transaction is final: release the staging namespaces.

        A function the walk over the new objects could not reach (held by an
        object of another library, say) still has a staging dict as globals;
        the dict's reference count shows it, and only then are its referrers
        searched and re-pointed.  A staging dict that a frame made by the body
        still reads (a generator, a thread the body started) is kept as it is;
        every other one is emptied.
        """
        self._repoint.release(PINS)
        self._live_frames.update(frames_reading(self._globals_map))
        unadopted = self._settle_unadopted()
        for staging in self._staging:
            real = self._globals_map[id(staging)]
            # Known holders: this list, the loop variable, the argument, the staging
            # module, the pin, the plain functions it still binds; and the dict
            # itself where the body kept globals().
            known = 4 + PINS.holds(staging) + unadopted.get(id(staging), 0)
            for v in staging.values():
                if v is staging:
                    known += 1
            if sys.getrefcount(staging) > known:
                self._search_escaped(staging, real)
            if id(staging) in self._live_frames:
                self.notes.append(f"{staging.get('__name__', 'a module')}: code started by the "
                                  "module body is still running with the namespace of this "
                                  "version's body")
            else:
                staging.clear()
        self._staging.clear()
        self._keep.clear()
        self.memo.clear()

    def _settle_unadopted(self) -> dict[int, int]:
        """Plain new functions: count those only their staging dict holds, re-point the rest.

        A plain pair hands its code to the old object at the commit; the new
        function object is left behind, bound in the staging dict that is about
        to be emptied.  If anything else took it while the body ran (an alias,
        a registry of another library), its reference count shows it, and it is
        re-pointed at the live module dict like every adopted function.
        """
        self._func_pairs.clear()
        self._keep.clear()
        if not self._unadopted:
            return {}
        bound: dict[int, Counter[int]] = {}
        counts: dict[int, int] = {}
        late = Repoint()
        for ref in self._unadopted:
            fn = ref()
            if fn is None:
                continue
            g = fn.__globals__
            names = bound.get(id(g))
            if names is None:
                names = bound[id(g)] = Counter(
                    id(v) for v in g.values() if type(v) is types.FunctionType)
            # holders: each name binding it, this local, getrefcount's argument
            if sys.getrefcount(fn) > names[id(fn)] + 2:
                real = self._globals_map.get(id(g))
                if real is not None:
                    late.add(fn, real)
            else:
                counts[id(g)] = counts.get(id(g), 0) + 1
        del fn
        self._unadopted.clear()
        if len(late):
            deque(map(operator.call, late.ops()), maxlen=0)
            late.release(PINS)
        return counts

    def _search_escaped(self, staging: dict[str, Any], real: dict[str, Any]) -> None:
        late = Repoint()
        for ref in gc.get_referrers(staging):
            if isinstance(ref, types.FunctionType) and ref.__globals__ is staging:
                late.add(ref, real)
        if len(late):
            deque(map(operator.call, late.ops()), maxlen=0)
            late.release(PINS)
            log.debug("re-pointed %d functions found by searching referrers of %s",
                      len(late), staging.get("__name__"))

    def _patch_plain(self, ops: list[Callable[[], Any]],
                     pairs: list[tuple[types.FunctionType, types.FunctionType]]) -> None:
        """Patch plain functions (see :func:`_plain`): code, defaults and names only."""
        saved = [(old, old.__code__, old.__defaults__, old.__doc__, old.__name__,
                  old.__qualname__, old.__module__) for old, _ in pairs]

        def undo() -> None:
            for old, code, defaults, doc, name, qualname, module in saved:
                old.__code__, old.__defaults__, old.__doc__ = code, defaults, doc
                old.__name__, old.__qualname__, old.__module__ = name, qualname, module
        self._undo.append(undo)
        add = ops.append
        for old, new in pairs:
            add(partial(setattr, old, "__code__", new.__code__))
            if old.__defaults__ is not None or new.__defaults__ is not None:
                add(partial(setattr, old, "__defaults__", new.__defaults__))
            if old.__doc__ != new.__doc__:
                add(partial(setattr, old, "__doc__", new.__doc__))
            if old.__name__ != new.__name__:
                add(partial(setattr, old, "__name__", new.__name__))
            if old.__qualname__ != new.__qualname__:
                add(partial(setattr, old, "__qualname__", new.__qualname__))
            if old.__module__ != new.__module__:
                add(partial(setattr, old, "__module__", new.__module__))
            self._unadopted.append(weakref.ref(new))

    def _patch_function(self, ops: list[Callable[[], Any]], old: types.FunctionType, new: Any,
                        mode: str) -> None:
        saved = {a: getattr(old, a, ()) for a in _FUNC_ATTRS}
        saved_annotations = annotations_of(old)
        saved_dict = dict(old.__dict__)
        saved_cells = [_cell_get(c) for c in _cells(old)]

        def undo() -> None:
            for a, v in saved.items():
                if hasattr(old, a):
                    setattr(old, a, v)
            set_annotations(old, *saved_annotations)
            old.__dict__ = dict(saved_dict)
            for c, v in zip(_cells(old), saved_cells):
                _cell_set(c, v)
        self._undo.append(undo)
        if mode == "code":
            self._adopt_function(new)     # wrappers made by the body may still call it
            attrs = {"__code__": new.__code__}
            for name in ("__defaults__", "__kwdefaults__"):
                value = getattr(new, name)
                if value is not None or saved[name] is not None:
                    attrs[name] = self.tr(value)
            for oc, nc in zip(_cells(old), _cells(new)):
                v = _cell_get(nc)
                if v is _Empty:
                    ops.append(partial(delattr, oc, "cell_contents"))
                else:
                    ops.append(partial(setattr, oc, "cell_contents", self.tr(v)))
            new_dict = self.tr(dict(new.__dict__))
            real = self._globals_map.get(id(new.__globals__))
            if real is not None and old.__globals__ is not real:
                self._repoint.add(old, real)   # moved between modules of one transaction
        else:
            if mode == "trampoline":
                self._adopt_function(new)
                target = new
            else:
                target = self.tr(new)
            attrs = {"__code__": _trampoline_code(len(_cells(old))), "__defaults__": None,
                     "__kwdefaults__": {_TARGET: target}}
            new_dict = self.tr(dict(new.__dict__)) if isinstance(new, types.FunctionType) else {}
            new_dict["__wrapped__"] = target
        for name, value in (("__doc__", getattr(new, "__doc__", None)),
                            ("__name__", new.__name__), ("__qualname__", new.__qualname__),
                            ("__module__", new.__module__)):
            if saved[name] != value:
                attrs[name] = value
        type_params = getattr(new, "__type_params__", ())
        if type_params != saved["__type_params__"] and hasattr(old, "__type_params__"):
            attrs["__type_params__"] = type_params         # PEP 695 (3.12+)
        if isinstance(new, types.FunctionType):
            annotate, values = annotations_of(new)
            if annotate is not None:                      # lazy (3.14+): stays lazy
                if isinstance(annotate, types.FunctionType):
                    self._adopt_function(annotate)        # reads the live globals
                attrs["__annotate__"] = annotate
            elif values or saved_annotations != (None, {}):
                attrs["__annotations__"] = dict(values or {})
        elif saved_annotations != (None, {}):
            attrs["__annotations__"] = {}
        if new_dict or saved_dict:
            attrs["__dict__"] = new_dict
        ops.extend(partial(setattr, old, k, v) for k, v in attrs.items())

    def _patch_wrapper(self, ops: list[Callable[[], Any]], old: Any, new: Any) -> None:
        if isinstance(old, partial):
            saved = old.__reduce__()[2]
            self._undo.append(partial(old.__setstate__, saved))  # type: ignore[attr-defined]
            ops.append(partial(old.__setstate__,  # type: ignore[attr-defined]
                              self._partial_state(new)))
        else:
            # its module ran again: what it cached was computed from the old state
            ops.append(old.cache_clear)
        self.tr(new)

    def _patch_class(self, ops: list[Callable[[], Any]], old: type, new: type) -> None:
        keep = _CLASS_KEEP | self._protected.get(id(old), frozenset())
        saved = {k: v for k, v in old.__dict__.items() if k not in keep}
        saved_bases = old.__bases__

        def undo() -> None:
            if old.__bases__ != saved_bases:
                old.__bases__ = saved_bases
            for name in list(old.__dict__):
                if name not in saved and name not in keep:
                    _class_del(old, name)
            for name, v in saved.items():
                if old.__dict__.get(name, _Empty) is not v:
                    _class_set(old, name, v)
        self._undo.append(undo)
        bases = tuple(self.tr(b) for b in new.__bases__)
        if bases != old.__bases__:
            ops.append(partial(type.__setattr__, old, "__bases__", bases))
        new_dict = new.__dict__
        for name, ov in saved.items():
            if name in new_dict or name == "__abstractmethods__":
                continue
            if isinstance(ov, (types.MemberDescriptorType, types.GetSetDescriptorType)):
                continue
            ops.append(_class_del_op(old, name))
            if name == "__new__" and native_module is not None:
                ops.append(partial(native_module.reset_new, old))
        for name, nv in list(new_dict.items()):
            if name in keep:
                continue
            if isinstance(nv, (types.MemberDescriptorType, types.GetSetDescriptorType)) \
                    and name in saved:
                continue  # slot descriptors belong to the class that made them
            t = self.tr(nv)
            was = saved.get(name, _Empty)
            if was is not t and not (name == "__module__" and was == t):
                ops.append(_class_set_op(old, name, t))
                if name == "__module__" and "__firstlineno__" in new_dict:
                    # 3.13+: assigning __module__ drops the class's __firstlineno__
                    ops.append(_class_set_op(old, "__firstlineno__",
                                             new_dict["__firstlineno__"]))
        ops.append(partial(type.__setattr__, old, "__qualname__", new.__qualname__))
        ops.append(partial(type.__setattr__, old, "__name__", new.__name__))

    def _patch_instance(self, ops: list[Callable[[], Any]], old: Any, new: Any) -> None:
        saved = dict(old.__dict__)

        def undo() -> None:
            old.__dict__.clear()
            old.__dict__.update(saved)
        self._undo.append(undo)
        ops.append(partial(old.__dict__.update, self.tr(dict(new.__dict__))))

    def _patch_module(self, ops: list[Callable[[], Any]], real: dict[str, Any],
                      staging: dict[str, Any]) -> None:
        saved = dict(real)

        def undo() -> None:
            real.clear()
            real.update(saved)
        self._undo.append(undo)
        values = {k: self.tr(v) for k, v in staging.items() if k not in _MODULE_KEEP}
        prefix = f"{real.get('__name__')}."
        ops.extend(partial(real.__delitem__, name) for name in saved
                   if name not in values and name not in _MODULE_KEEP
                   # a package keeps its submodules bound (they are not in its body)
                   and not (isinstance(saved[name], types.ModuleType)
                            and saved[name].__name__ == prefix + name))
        ops.append(partial(real.update, values))

