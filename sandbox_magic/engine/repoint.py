"""Re-pointing a function's globals at another namespace dict.

A reload runs the new module body in a staging namespace, so every function
the body creates (however it is wrapped afterwards: ``lru_cache``, ``partial``,
``functools.wraps`` closures, registries) starts with the staging dict as its
``__globals__``.  CPython does not let Python code assign ``__globals__``, so
the commit re-points the function object's pointer with :mod:`ctypes`, inside
the same C-level loop that swaps in the new code.  The offset of the pointer in
the function object is found once by probing a function whose globals are
known, so it adapts to the interpreter's layout instead of hard-coding it.

The interpreter's frames borrow their globals from the function they run.  A
frame created before the re-point (a generator made by the module body, a
thread the body started) therefore still reads the staging dict, so a staging
dict is kept alive for as long as any function that was re-pointed away from it
lives (:class:`Pins`).
"""

from __future__ import annotations

import ctypes
import types
import weakref
from functools import partial
from typing import Any

_incref = ctypes.pythonapi.Py_IncRef
_incref.argtypes = [ctypes.py_object]
_incref.restype = None
_decref = ctypes.pythonapi.Py_DecRef
_decref.argtypes = [ctypes.py_object]
_decref.restype = None


def _probe_offset() -> int:
    """Byte offset of ``func_globals`` inside a function object."""
    found = []
    for _ in range(2):
        g: dict[str, Any] = {}
        fn = types.FunctionType(compile("0", "<probe>", "eval"), g)
        for off in range(0, 32 * ctypes.sizeof(ctypes.c_void_p), ctypes.sizeof(ctypes.c_void_p)):
            if ctypes.c_void_p.from_address(id(fn) + off).value == id(g):
                found.append(off)
                break
    if len(found) != 2 or found[0] != found[1]:   # pragma: no cover - unknown interpreter
        raise ImportError("cannot locate a function's globals pointer on this interpreter")
    return found[0]


_OFFSET = _probe_offset()



def slot(fn: types.FunctionType) -> ctypes.c_void_p:
    """A view of ``fn``'s globals pointer (writing ``.value`` re-points it)."""
    return ctypes.c_void_p.from_address(id(fn) + _OFFSET)


def _self_test() -> None:
    """Re-point a probe function and back: it must read the dict it points at, and
    the dicts' reference counts must come out as they went in."""
    import sys

    from .interpreter import UnsupportedInterpreter

    old: dict[str, Any] = {"X": 1}
    new: dict[str, Any] = {"X": 2}
    fn = types.FunctionType(compile("X", "<probe>", "eval"), old)
    counts = sys.getrefcount(old), sys.getrefcount(new)
    _incref(new)
    slot(fn).value = id(new)
    fn.__code__ = fn.__code__
    seen = fn(), fn.__globals__ is new
    slot(fn).value = id(old)
    fn.__code__ = fn.__code__
    _decref(new)
    if seen != (2, True) or fn() != 1 or (sys.getrefcount(old), sys.getrefcount(new)) != counts:
        raise UnsupportedInterpreter("re-pointing a function's globals does not work on "
                                     f"this interpreter ({sys.version.split()[0]})")


_self_test()


class Repoint:
    """Re-point many functions at once, with refcounts kept right and a way back.

    :meth:`ops` gives C-level callables (no Python bytecode runs between them)
    for the commit loop; :meth:`undo` puts every pointer back; :meth:`release`
    drops the old references once the transaction is final.
    """

    def __init__(self) -> None:
        self.items: list[tuple[types.FunctionType, dict[str, Any], dict[str, Any]]] = []
        self._seen: set[int] = set()
        self._prepared = 0
        self._done = False

    def add(self, fn: types.FunctionType, new_globals: dict[str, Any]) -> None:
        if id(fn) in self._seen or fn.__globals__ is new_globals:
            return
        self._seen.add(id(fn))
        self.items.append((fn, fn.__globals__, new_globals))

    def __len__(self) -> int:
        return len(self.items)

    def ops(self) -> list[Any]:
        out = []
        for fn, _, new in self.items[self._prepared:]:
            _incref(new)          # the function's reference, from the commit on
            out.append(partial(setattr, slot(fn), "value", id(new)))
            # assigning __code__ resets the function's version, so no specialised
            # call site keeps assumptions about the old globals
            out.append(partial(setattr, fn, "__code__", fn.__code__))
        self._prepared = len(self.items)
        return out

    def undo(self) -> None:
        if self._done:
            return
        for fn, old, new in reversed(self.items[:self._prepared]):
            if fn.__globals__ is new:
                slot(fn).value = id(old)
            _decref(new)
        self._prepared = 0

    def release(self, pins: Pins) -> None:
        """The transaction is final: drop the references to the staging dicts."""
        if self._done:
            return
        self._done = True
        for fn, old, _ in self.items:
            pins.pin(fn, old)
            _decref(old)
        self.items.clear()


class Pins:
    """Keep each staging dict alive while a function re-pointed away from it lives."""

    def __init__(self) -> None:
        self._by_dict: dict[int, list[Any]] = {}   # id(dict) -> [dict, live functions]
        self._refs: dict[weakref.ref[Any], int] = {}

    def pin(self, fn: types.FunctionType, d: dict[str, Any]) -> None:
        entry = self._by_dict.get(id(d))
        if entry is None:
            entry = self._by_dict[id(d)] = [d, 0]
        entry[1] += 1
        self._refs[weakref.ref(fn, self._gone)] = id(d)

    def _gone(self, ref: weakref.ref[Any]) -> None:
        key = self._refs.pop(ref, None)
        entry = self._by_dict.get(key) if key is not None else None
        if entry is not None and key is not None:
            entry[1] -= 1
            if entry[1] <= 0:
                del self._by_dict[key]

    def __len__(self) -> int:
        return len(self._by_dict)

    def holds(self, d: dict[str, Any]) -> int:
        return 1 if id(d) in self._by_dict else 0


PINS = Pins()
