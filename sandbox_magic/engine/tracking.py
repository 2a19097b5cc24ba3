"""Live instances of sandbox classes, tracked as they are created (no heap scan).

Every class statement executed by sandbox code goes through the sandbox's
``__build_class__``, which gives root classes the :class:`Tracked` mixin, so
a reload finds exactly the live objects of the reloaded classes at a cost
that grows with their number, not with the size of the heap.  Instances made
by pickle or ``copy`` go through ``__new__`` too.

Two trackers do this job:

* the compiled one (``_live.c``, built when the package is installed): the
  class's C-level allocator records each new instance by address and serial
  number in a registry in the class's ``__dict__`` (whatever made the
  instance: a call, ``object.__new__``, pickle, ``copy``), and its C-level
  free removes the address from a process-wide table of tracked objects; a
  registry entry is an instance while the table still holds its serial, it is
  not being deallocated and its type is the class (an object whose
  ``__class__`` was assigned moves to its new class's registry).  No Python
  frame and no weak reference per instance.  It is used for classes whose
  every base is a Python class (or object).
* the pure-Python one: ``__new__`` appends a weak reference to a list in the
  class.  It serves every other class (a base from C, such as ``dict``) and
  every class when the compiled tracker is missing or disabled with the
  environment variable ``SANDBOX_MAGIC_NATIVE=0``.

Either way, dead entries are dropped whenever a registry has doubled since it
was last compacted.  ``__slots__`` classes get a ``__weakref__`` slot so that
the pure-Python tracker can track them.

"""

from __future__ import annotations

import builtins
import os
import threading
import weakref
from typing import Any

try:
    from . import _live as _native_module  # type: ignore[attr-defined]
except ImportError:   # not built (no C compiler at install time)
    _native_module = None

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

    def owns(self, cls: type) -> bool:
        return self.owner() is cls

    def compact(self, cls: type) -> int:
        return len(self.refs)

    def live(self, cls: type) -> list[Any]:
        return self.prune()

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
            try:
                alive = [r() for r in refs]
                fresh[:0] = [r for r, o in zip(refs, alive) if o is not None]
            except BaseException:   # MemoryError, say: keep every reference
                fresh[:0] = refs
                raise
            objs = [o for o in alive if o is not None]
            self.limit = max(64, 2 * len(objs))
        return objs


class Tracked:
    """Mixin of sandbox root classes: records instances at creation.

    With the compiled tracker its ``__new__`` is the compiled one, and every
    subclass (also one made outside the sandbox) is offered to that tracker,
    so that objects can switch between these classes (``__class__``).
    """

    __slots__ = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        hook_class(cls)

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


_native: Any = None
if _native_module is not None and os.environ.get("SANDBOX_MAGIC_NATIVE", "1") != "0":
    _native = _native_module


def native() -> bool:
    """Whether the compiled tracker is in use in this process."""
    return _native is not None


def track(cls: type, obj: Any) -> None:
    """Record ``obj`` as a live instance of ``cls`` (after its class was reassigned)."""
    reg = _registry(cls)
    if reg is None:
        with _create_lock:   # two threads making the first instances share one registry
            reg = _registry(cls)
            if reg is None:
                # (a registry found in the dict but owned by another class was
                # copied with the class's namespace: this class gets its own)
                hooked = _native is not None and _native.hooked(cls)
                reg = _native.Registry(cls) if hooked else _Registry(cls)
                type.__setattr__(cls, LIVE_ATTR, reg)
    if type(obj) is not cls and not isinstance(reg, _Registry):
        return      # a compiled registry only holds objects whose class is its own
    try:
        reg.add(obj)
    except TypeError:
        pass


def _registry(cls: type) -> Any:
    reg = cls.__dict__.get(LIVE_ATTR)
    return reg if reg is not None and reg.owns(cls) else None


def instances_of(cls: type) -> list[Any]:
    """Live instances whose exact class is ``cls``."""
    reg = _registry(cls)
    return reg.live(cls) if reg is not None else []


def settle(classes: list[type]) -> None:
    """Before asking for the instances of several classes: objects whose
    ``__class__`` was assigned from one to another move to their class's registry."""
    for cls in classes:
        reg = _registry(cls)
        if reg is not None:
            reg.compact(cls)


def hook_class(cls: type) -> type:
    """Let the compiled tracker track ``cls`` if it qualifies (see ``_live.c``)."""
    if _native is not None:
        _native.hook(cls, Tracked.__new__)   # it gets its registry there
    return cls


if _native is not None:
    Tracked.__new__ = staticmethod(_native.new)  # type: ignore[method-assign]
    _native.configure(track, _Registry)


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
        cls = builtins.__build_class__(func, name, *bases, **kwargs)
        if isinstance(cls, type) and issubclass(cls, Tracked):
            hook_class(cls)   # a subclass of a sandbox class
        return cls
    new_bases = tuple(b for b in bases if b is not object) + (Tracked,)
    weak = _has_weakref(real_bases)

    def make(cls_name: str, cls_bases: tuple[type, ...], ns: dict[str, Any],
             **kw: Any) -> type:
        slots = ns.get("__slots__")
        if slots is not None and not weak:
            slots = (slots,) if isinstance(slots, str) else tuple(slots)
            if "__weakref__" not in slots:
                ns["__slots__"] = slots + ("__weakref__",)
        return hook_class(type(cls_name, cls_bases, ns, **kw))

    return builtins.__build_class__(func, name, *new_bases, metaclass=make, **kwargs)
