"""Live instances of sandbox classes, tracked as they are created (no heap scan).

Every class statement executed by sandbox code goes through the sandbox's
``__build_class__``, which gives root classes the :class:`Tracked` mixin.  Its
``__new__`` appends a weak reference to each new instance to a list kept in
the instance's own class, so a reload finds exactly the live objects of the
reloaded classes at a cost that grows with their number, not with the size of
the heap.  Instances made by pickle or ``copy`` go through ``__new__`` too.
Dead references are pruned whenever a list has doubled since its last prune.
``__slots__`` classes get a ``__weakref__`` slot so that they can be tracked.
"""

from __future__ import annotations

import builtins
import threading
import weakref
from typing import Any

LIVE_ATTR = "__sandbox_live__"
_create_lock = threading.Lock()
_ref = weakref.ref


class _Registry:
    __slots__ = ("limit", "lock", "owner", "refs")

    def __init__(self, owner: type) -> None:
        self.lock = threading.Lock()
        self.refs: list[weakref.ref[Any]] = []
        self.limit = 64
        self.owner = _ref(owner)

    def add(self, obj: Any) -> None:
        ref = _ref(obj)
        self.refs.append(ref)
        if len(self.refs) > self.limit:
            self.prune()

    def prune(self) -> list[Any]:
        """The live instances; dead references are dropped (the live ones are kept).

        The list is swapped out first, so instances created by other threads
        meanwhile land in the fresh list; the kept references are put in front
        of them in one C-level step.  No reference is ever lost.
        """
        with self.lock:
            refs = self.refs
            fresh: list[weakref.ref[Any]] = []
            self.refs = fresh
            alive = [r() for r in refs]
            fresh[:0] = [r for r, o in zip(refs, alive) if o is not None]
            objs = [o for o in alive if o is not None]
            self.limit = max(64, 2 * len(objs))
        return objs


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
        # Attribute lookup hits the type cache; a registry inherited from a base
        # class belongs to that base, so the owner is checked.
        reg = getattr(cls, LIVE_ATTR, None)
        if reg is None or reg.owner() is not cls:
            track(cls, obj)
        else:
            try:
                ref = _ref(obj)
            except TypeError:  # not weakly referenceable (a base without __weakref__)
                return obj
            reg.refs.append(ref)   # no thread switch between the lookup and the append
            if len(reg.refs) > reg.limit:
                reg.prune()
        return obj


def track(cls: type, obj: Any) -> None:
    """Record ``obj`` as a live instance of ``cls`` (after its class was reassigned)."""
    reg = cls.__dict__.get(LIVE_ATTR)
    if reg is None:
        with _create_lock:   # two threads making the first instances share one registry
            reg = cls.__dict__.get(LIVE_ATTR)
            if reg is None:
                reg = _Registry(cls)
                type.__setattr__(cls, LIVE_ATTR, reg)
    try:
        reg.add(obj)
    except TypeError:
        pass


def instances_of(cls: type) -> list[Any]:
    """Live instances whose exact class is ``cls``."""
    reg = cls.__dict__.get(LIVE_ATTR)
    return reg.prune() if reg is not None else []


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
