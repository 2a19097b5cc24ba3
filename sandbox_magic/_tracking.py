"""Live instances of sandbox classes, tracked as they are created (no heap scan).

Every class statement executed by sandbox code goes through the sandbox's
``__build_class__``, which gives root classes the :class:`Tracked` mixin.  Its
``__new__`` records each new instance in a weak set kept per class, so a
reload finds exactly the live objects of the reloaded classes at a cost that
grows with their number, not with the size of the heap.  Instances made by
pickle or ``copy`` go through ``__new__`` too.  ``__slots__`` classes get a
``__weakref__`` slot so that their instances can be tracked weakly.
"""

from __future__ import annotations

import builtins
import weakref
from typing import Any

# keyed by id(): instances need not be hashable (dataclasses with eq=True are not)
_live: weakref.WeakKeyDictionary[type, weakref.WeakValueDictionary[int, Any]] = \
    weakref.WeakKeyDictionary()


class Tracked:
    """Mixin of sandbox root classes: records instances at creation."""

    __slots__ = ()

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        nxt = super().__new__
        if nxt is object.__new__:
            if (args or kwargs) and cls.__init__ is object.__init__:
                raise TypeError(f"{cls.__name__}() takes no arguments")
            obj = nxt(cls)
        else:
            obj = nxt(cls, *args, **kwargs)
        try:
            registry = _live[cls]
        except KeyError:
            registry = _live[cls] = weakref.WeakValueDictionary()
        try:
            registry[id(obj)] = obj
        except TypeError:  # not weakly referenceable (a base without __weakref__)
            pass
        return obj


def instances_of(cls: type) -> list[Any]:
    """Live instances whose exact class is ``cls``."""
    ws = _live.get(cls)
    return list(ws.values()) if ws is not None else []


def _has_weakref(bases: tuple[type, ...]) -> bool:
    return any(b.__weakrefoffset__ for b in bases)


def build_class(func: Any, name: str, *bases: Any, **kwargs: Any) -> Any:
    """``__build_class__`` of sandbox code: adds tracking to root classes."""
    real_bases = tuple(b for b in bases if isinstance(b, type))
    trackable = (
        len(real_bases) == len(bases)
        and "metaclass" not in kwargs
        and all(type(b) is type for b in real_bases)
        and not any(issubclass(b, Tracked) for b in real_bases)
        and not any(issubclass(b, BaseException) for b in real_bases)
        and all(b.__itemsize__ == 0 for b in real_bases)
    )
    if not trackable:
        return builtins.__build_class__(func, name, *bases, **kwargs)
    new_bases = tuple(b for b in bases if b is not object) + (Tracked,)
    weak = _has_weakref(real_bases)

    def make(cls_name: str, cls_bases: tuple[type, ...], ns: dict[str, Any],
             **kw: Any) -> type:
        slots = ns.get("__slots__")
        if slots is not None and not weak:
            slots = (slots,) if isinstance(slots, str) else tuple(slots)
            if "__weakref__" not in slots:
                ns["__slots__"] = slots + ("__weakref__",)
        return type(cls_name, cls_bases, ns, **kw)

    return builtins.__build_class__(func, name, *new_bases, metaclass=make, **kwargs)
