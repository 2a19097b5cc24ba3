"""Migrating instances whose class could not be patched in place (layout changed).

When a reload changes a class's memory layout (``__slots__``), the class is
replaced and an old instance cannot take the new class.  Each live instance
then gets a new object of the new class carrying its (migrated) state, and the
old object becomes a forwarder to it: its class is switched to a subclass of
the old class with the same layout (so the switch is allowed) whose attribute
access, special methods and ``__class__`` go to the new object.  References
held anywhere keep working, ``isinstance(old, NewClass)`` is true, and the
state lives in one place.
"""

from __future__ import annotations

from typing import Any

from ..engine.tracking import hook_class as hook
from ..engine.tracking import native, trackable

_targets: dict[int, Any] = {}
_forwarders: dict[type, type] = {}

_SPECIAL = ("__repr__", "__str__", "__format__", "__bool__", "__len__", "__iter__",
            "__next__", "__contains__", "__getitem__", "__setitem__", "__delitem__",
            "__call__", "__enter__", "__exit__", "__lt__", "__le__", "__gt__", "__ge__",
            "__add__", "__sub__", "__mul__", "__truediv__", "__floordiv__", "__mod__",
            "__neg__", "__abs__", "__int__", "__float__", "__index__", "__reduce_ex__")


def _special(name: str) -> Any:
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        return getattr(_targets[id(self)], name)(*args, **kwargs)
    method.__name__ = name
    return method


def forwarder_class(old_cls: type) -> type:
    """A subclass of ``old_cls`` with its layout whose instances forward to a target."""
    cls = _forwarders.get(old_cls)
    if cls is not None:
        return cls

    def __getattribute__(self: Any, name: str) -> Any:
        target = _targets[id(self)]
        if name == "__class__":
            return type(target)
        return getattr(target, name)

    def __setattr__(self: Any, name: str, value: Any) -> None:
        setattr(_targets[id(self)], name, value)

    def __delattr__(self: Any, name: str) -> None:
        delattr(_targets[id(self)], name)

    def __eq__(self: Any, other: Any) -> Any:
        return _targets[id(self)] == (_targets.get(id(other), other))

    def __hash__(self: Any) -> int:
        return hash(_targets[id(self)])

    def __del__(self: Any, _pop: Any = _targets.pop) -> None:
        # The state lives in the target: the old class's own __del__ must not run
        # on this shell.  (A finalizer needs no weak reference: __slots__ classes
        # without __weakref__ forward too.)
        _pop(id(self), None)     # (bound early: module globals are gone at exit)

    ns: dict[str, Any] = {"__slots__": (), "__getattribute__": __getattribute__,
                          "__setattr__": __setattr__, "__delattr__": __delattr__,
                          "__eq__": __eq__, "__hash__": __hash__, "__del__": __del__,
                          "__module__": old_cls.__module__, "__qualname__": old_cls.__qualname__}
    for name in _SPECIAL:
        ns[name] = _special(name)
    cls = type(old_cls.__name__, (old_cls,), ns)
    if native() and trackable(old_cls):
        hook(cls)   # the same deallocator as old_cls, so that the switch is allowed
    _forwarders[old_cls] = cls
    return cls


def is_forwarder(cls: type) -> bool:
    """Whether ``cls`` was made by :func:`forwarder_class`."""
    return _forwarders.get(cls.__base__) is cls if cls.__base__ is not None else False


def forward(old: Any, new: Any) -> None:
    """Make ``old`` a forwarder to ``new`` (reversible with :func:`unforward`)."""
    _targets[id(old)] = new
    object.__setattr__(old, "__class__", forwarder_class(type(old)))


def unforward(old: Any, old_cls: type) -> None:
    object.__setattr__(old, "__class__", old_cls)
    _targets.pop(id(old), None)
