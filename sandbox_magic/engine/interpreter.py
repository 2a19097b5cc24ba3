"""What the engine assumes of the running interpreter, checked before it is relied on.

The engine reaches below Python's public surface in four places, each behind one
small module that tests its assumption when it is imported:

* re-pointing a function's globals (:mod:`.repoint`): refused at import if a
  probe function does not read the dict it was pointed at;
* the compiled instance tracker (:mod:`.tracking`, ``_live.c``): a probe class is
  tracked, its instances counted and freed; if that fails the pure-Python tracker
  is used instead (with a warning);
* swapping an instance's ``__dict__`` during a migration (:func:`dict_swap_ok`):
  probed on 3.11/3.12; from 3.13 on (attributes inline in the object) and where
  the probe fails, a migration mutates each dict in place instead;
* raising an exception in another thread (:func:`raise_in_thread`), for
  ``run(timeout=)`` and the process host's interrupt.

Free-threaded builds (``python3.13t``/``3.14t``, ``Py_GIL_DISABLED``) are refused
at import: the commit relies on the GIL to make its C-level loop atomic with
respect to other threads (no other thread runs between two of its steps), and
the tracker's registries and the globals write are unsynchronised there.
"""

from __future__ import annotations

import ctypes
import sys
import sysconfig
import threading
import time
from typing import Any

#: The interpreters the test suite runs on (README, "Supported Pythons").
TESTED = ((3, 11), (3, 12), (3, 13), (3, 14))


class UnsupportedInterpreter(ImportError):
    """Raised when importing the engine on an interpreter it cannot run on safely."""


def free_threaded() -> bool:
    """True on a build without the GIL (even if the GIL was re-enabled at run time)."""
    return bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


def check_supported() -> None:
    """Refuse interpreters where the engine would corrupt memory instead of failing."""
    if sys.implementation.name != "cpython":
        raise UnsupportedInterpreter(
            f"sandbox-magic needs CPython; this is {sys.implementation.name} "
            f"{sys.version.split()[0]}")
    if free_threaded():
        raise UnsupportedInterpreter(
            f"sandbox-magic does not support free-threaded Python yet (this is "
            f"{sys.version.split()[0]} built with --disable-gil): a reload commits "
            "by running its steps with no other thread in between, which only the GIL "
            "guarantees, and its instance tracker and globals re-pointing are not "
            "synchronised for threads running in parallel. Use the regular build "
            "(python3.13, python3.14) of the same version.")


# ----------------------------------------------------------- __dict__ swapping
def _probe_dict_swap() -> bool:
    class Probe:
        def __init__(self) -> None:
            self.a = 1          # inline values on 3.13+ until the dict is asked for
            self.b = 2

    obj: Any = Probe()
    old = obj.__dict__
    new = {"a": 10, "c": 3}
    object.__setattr__(obj, "__dict__", new)
    ok = obj.__dict__ is new and obj.a == 10 and obj.c == 3 and not hasattr(obj, "b")
    obj.d = 4
    ok = ok and new.get("d") == 4 and "d" not in old and old == {"a": 1, "b": 2}
    fresh: Any = Probe()                         # a dict never materialised before the swap
    object.__setattr__(fresh, "__dict__", {"z": 1})
    ok = ok and fresh.z == 1 and not hasattr(fresh, "a")
    del fresh.z
    return ok and fresh.__dict__ == {}


# 3.13 keeps attributes inline in the object until its dict is asked for, and
# assigning __dict__ around inline values is where it changed behaviour; mutating
# the dict in place is the route CPython supports there, and it measures no worse
# (one C call per group), so from 3.13 on migrations take it.
_DICT_SWAP_OK = sys.version_info < (3, 13) and _probe_dict_swap()


def dict_swap_ok() -> bool:
    """Whether assigning ``obj.__dict__`` replaces the attributes, as migrations assume."""
    return _DICT_SWAP_OK


def replace_dict(obj: Any, new: dict[str, Any]) -> dict[str, Any]:
    """Give ``obj`` the attributes in ``new``; returns the dict it had (for undo).

    The swap when :func:`dict_swap_ok`; otherwise the object's own dict is mutated
    in place and a copy of its old contents is returned.
    """
    old: dict[str, Any] = object.__getattribute__(obj, "__dict__")
    if _DICT_SWAP_OK:
        object.__setattr__(obj, "__dict__", new)
        return old
    saved = dict(old)
    old.clear()
    old.update(new)
    return saved


# --------------------------------------------------- exceptions into threads
_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = [ctypes.c_ulong, ctypes.py_object]
_set_async_exc.restype = ctypes.c_int


def raise_in_thread(ident: int, exc_type: type[BaseException]) -> bool:
    """Raise ``exc_type`` in the thread ``ident`` at its next bytecode.

    True when exactly that thread was asked; False when no such thread runs.
    """
    n = _set_async_exc(ident, exc_type)
    if n > 1:           # never expected: undo rather than interrupt several threads
        _set_async_exc(ident, ctypes.py_object())
        raise RuntimeError(f"raising in thread {ident} reached {n} threads")
    return bool(n == 1)


_interrupts_ok: bool | None = None


def thread_interrupts_ok() -> bool:
    """Whether an exception raised into a thread reaches the handlers of its callers.

    Probed once, on first use (a thread spinning in a function called in a
    ``try``).  (On 3.12 and 3.13 a ``try`` around the spinning loop itself may miss
    it: the loop's back-edge, where the exception is raised, lies outside the
    handler's range; the caller's handler always sees it.)
    """
    global _interrupts_ok
    if _interrupts_ok is None:
        _interrupts_ok = _probe_raise_in_thread()
    return _interrupts_ok


def _probe_raise_in_thread() -> bool:
    class _Probe(Exception):
        pass

    started, seen = threading.Event(), []

    def loop() -> None:
        end = time.monotonic() + 5
        started.set()
        while time.monotonic() < end:
            pass

    def spin() -> None:
        try:
            loop()
        except _Probe:
            seen.append(True)

    t = threading.Thread(target=spin, name="sandbox-magic-probe", daemon=True)
    t.start()
    started.wait()
    asked = raise_in_thread(t.ident or 0, _Probe)
    t.join()
    return asked and bool(seen)
