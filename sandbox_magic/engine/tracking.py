"""Live instances of sandbox classes, tracked as they are created (no heap scan).

Every class statement executed by sandbox code goes through the sandbox's
``__build_class__`` (:func:`build_class`), so a reload finds exactly the
live objects of the reloaded classes at a cost that grows with their number,
not with the size of the heap.

Two trackers do this job:

* the compiled one (``_live.c``, built when the package is installed): the
  class's C-level allocator records each new instance by address and serial
  number in a registry in the class's ``__dict__`` (whatever made the
  instance: a call, ``object.__new__``, pickle, ``copy``), and its C-level
  free removes the address from a process-wide table of tracked objects; a
  registry entry is an instance while the table still holds its serial, it is
  not being deallocated and its type is the class (an object whose
  ``__class__`` was assigned moves to its new class's registry).  No Python
  frame and no weak reference per instance.  The class itself is left as it
  was written: same bases, same metaclass, same ``__slots__``.  Any class
  qualifies whose bases are Python classes or built-ins that free their
  instances through the class (``object``, ``dict``, ``list``, ``tuple``,
  ``int``, ``str``, exceptions...), whatever its metaclass (``ABCMeta``,
  ``Generic``, an enum's, pydantic's).  Subclasses are tracked wherever they
  are defined (a notebook subclass of a sandbox class): root classes get an
  ``__init_subclass__`` that tracks them, unless they define their own.  A
  class rebuilt from a copy of a tracked class's namespace
  (``dataclass(slots=True)``, attrs) is tracked by the registry's
  ``__set_name__``.
* the pure-Python one, used only when the compiled tracker is missing or
  disabled with the environment variable ``SANDBOX_MAGIC_NATIVE=0``: root
  classes get the :class:`Tracked` mixin, whose ``__new__`` appends a weak
  reference to a list in the class.  It cannot track classes with a
  metaclass, classes whose ``__slots__`` leave out ``__weakref__``, or
  classes with a built-in base of variable size (``tuple``, ``int``).

Either way :func:`trackable` tells whether a class's instances are tracked;
a reload that would need to migrate a class that is not says so in its notes.
Dead entries are dropped whenever a registry has doubled since it was last
compacted.

"""

from __future__ import annotations

import builtins
import os
import threading
import typing
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
    """Mixin of sandbox root classes under the pure-Python tracker: records
    instances at creation with a weak reference.  (The compiled tracker leaves
    classes as written and needs no mixin; see :func:`adopt`.)"""

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


def hook_class(cls: type) -> bool:
    """Let the compiled tracker track ``cls`` if it qualifies (see ``_live.c``)."""
    if _native is None:
        return False
    return bool(_native.hook(cls, Tracked.__new__))   # it gets its registry there


def trackable(cls: type) -> bool:
    """Whether the instances of ``cls`` are found by :func:`instances_of`."""
    if _native is not None:
        return bool(_native.hooked(cls))
    return issubclass(cls, Tracked) and cls.__weakrefoffset__ != 0


def _init_subclass(cls: type, /, **kwargs: Any) -> None:
    """``__init_subclass__`` given to tracked root classes: track the subclass too."""
    adopt(cls)
    for base in cls.__mro__[1:]:
        if base.__dict__.get("__init_subclass__") is _SUBCLASS_HOOK:
            super(base, cls).__init_subclass__(**kwargs)  # type: ignore[arg-type]
            return


_SUBCLASS_HOOK: classmethod[Any, Any, None] = classmethod(_init_subclass)


def adopt(cls: type) -> bool:
    """Track the instances of ``cls`` (compiled tracker), and of its future subclasses.

    Protocol classes are left alone (every name in their namespace would
    become a member of the protocol).
    """
    if _native is None or cls.__dict__.get("_is_protocol"):
        return False
    if not _native.hook(cls, None):
        return False
    if "__init_subclass__" not in cls.__dict__ and not any(
            b.__dict__.get("__init_subclass__") is _SUBCLASS_HOOK for b in cls.__mro__[1:]):
        type.__setattr__(cls, "__init_subclass__", _SUBCLASS_HOOK)
    return True


def adopt_namespace(ns: dict[str, Any]) -> None:
    """After a module body: track the classes it made without a class statement
    (``namedtuple``, ``type(...)``, ``enum.Enum("E", ...)``) from now on."""
    if _native is None:
        return
    name = ns.get("__name__")
    for v in list(ns.values()):
        if isinstance(v, type) and v.__module__ == name and not _native.hooked(v):
            adopt(v)


if _native is not None:
    Tracked.__new__ = staticmethod(_native.new)  # type: ignore[method-assign]
    # typing.Generic is written in C from 3.12 on: it holds no state and frees its
    # instances through their class's tp_free
    _native.configure(track, _Registry, adopt, (typing.Generic,))


def _self_test() -> str | None:
    """What goes wrong when the compiled tracker tracks a probe class, or None.

    A plain class, a ``__slots__`` class and a subclass get instances; each is
    found by :func:`instances_of`, their attributes read back, and none is found
    once freed.
    """
    class Plain:
        def __init__(self, n: int) -> None:
            self.n = n

    class Slotted:
        __slots__ = ("n",)

        def __init__(self, n: int) -> None:
            self.n = n

    for root in (Plain, Slotted):
        if not adopt(root):
            return f"a {root.__name__} class could not be hooked"
    sub: type = type("Sub", (Plain,), {})
    cls: type
    for cls in (Plain, Slotted, sub):
        objs = [cls(i) for i in range(3)]
        found = instances_of(cls)
        if sorted(o.n for o in found) != [0, 1, 2] or not all(type(o) is cls for o in found):
            return f"{cls.__name__}: {len(found)} of 3 instances found"
        del objs, found
        if instances_of(cls):
            return f"{cls.__name__}: freed instances still listed"
    return None


if _native is not None:
    _problem = _self_test()
    if _problem is not None:   # pragma: no cover - an interpreter the tracker does not fit
        import warnings
        warnings.warn(f"sandbox-magic: the compiled instance tracker failed its self-test "
                      f"on this interpreter ({_problem}); the pure-Python tracker is used",
                      RuntimeWarning, stacklevel=1)
        _native = None


def build_class(func: Any, name: str, *bases: Any, **kwargs: Any) -> Any:
    """``__build_class__`` of sandbox code: the class as written, then tracked."""
    if _native is None:
        return _build_with_mixin(func, name, *bases, **kwargs)
    cls = builtins.__build_class__(func, name, *bases, **kwargs)
    if isinstance(cls, type):
        adopt(cls)
    return cls


def _build_with_mixin(func: Any, name: str, *bases: Any, **kwargs: Any) -> Any:
    """The pure-Python tracker: root classes get :class:`Tracked` as their last base."""
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
    return builtins.__build_class__(func, name, *new_bases, **kwargs)
