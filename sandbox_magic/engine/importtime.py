"""Which sandbox functions each module body called while it ran.

An edit inside a function body can be applied in place (see :mod:`.inplace`)
only if no module body computed anything with the function's old code: a value
built at import from a call keeps what the old code returned.  A static reading
of the source cannot tell ``curry(f)`` (which keeps ``f`` to call later) from
``table = f()`` (which calls it now), so it has to assume the worst.  This
module records instead what did run: while a module body runs, a profile hook
(in ``_live.c``: a set add per call, no Python frame) collects the code object
of every function that starts in the running thread.  The record of each live
module is kept until its body runs again; an edited function whose old code is
in no record was called by no body, so no import-time value came from it.

A record is *incomplete* (and the static reading decides) when the body
started a thread or waited for one (what another thread computed for the body
is not seen), when it installed a profile function of its own, or when the
compiled tracker is not built.
"""

from __future__ import annotations

import _thread
import contextlib
import os
import threading
import types
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

try:
    from . import _live as _native_module  # type: ignore[attr-defined]
except ImportError:   # not built (no C compiler at install time)
    _native_module = None

#: Per live module: the sandbox functions (module, qualified name) its body called
#: when it last ran, or None when that record is incomplete.  No entry: never recorded.
CALLED: weakref.WeakKeyDictionary[types.ModuleType, frozenset[tuple[str, str]] | None] = \
    weakref.WeakKeyDictionary()
#: The same for staging modules, until their transaction commits (see :func:`adopt`).
_STAGED: weakref.WeakKeyDictionary[types.ModuleType, frozenset[tuple[str, str]] | None] = \
    weakref.WeakKeyDictionary()

_STARTS = tuple(f for f in (getattr(_thread, "start_new_thread", None),
                            getattr(_thread, "start_joinable_thread", None),
                            getattr(_thread, "start_new", None)) if f is not None)
#: Waiting for another thread (a future's result, a queue, a join, an event).
_WAITS = frozenset({threading.Condition.wait.__code__, threading.Thread.join.__code__,
                    threading.Event.wait.__code__})
_PREFIX = "<sandbox "

#: The compiled part (None when not built).
NATIVE: Any = _native_module
ENABLED = (_native_module is not None and hasattr(_native_module, "calls_start")
           and os.environ.get("SANDBOX_MAGIC_NATIVE", "1") != "0")


def _recording(frame: Any, event: str, arg: Any, _state: Any = None) -> None:
    """What ``sys.getprofile()`` returns while a recording runs: code that saves "the
    profiler" and installs it again later gets this, which does nothing."""


def holder() -> types.FunctionType:
    """A fresh function of :func:`_recording`'s code, to hold one recording's state."""
    return types.FunctionType(_recording.__code__, {}, "sandbox_magic_recording", (None,))


@contextlib.contextmanager
def recording(module: types.ModuleType) -> Iterator[None]:
    """Record the calls made while the body of (staging) ``module`` runs."""
    if not ENABLED:
        yield
        return
    seen: set[object] = set()
    token = _native_module.calls_start(seen, _STARTS, 0, holder())
    try:
        yield
    finally:
        kept = _native_module.calls_stop(token)
        if not kept or None in seen or not _WAITS.isdisjoint(seen):
            _STAGED[module] = None
        else:
            _STAGED[module] = frozenset(
                _key(c) for c in seen
                if type(c) is types.CodeType and c.co_filename.startswith(_PREFIX))


def adopt(staged: types.ModuleType | None, real: types.ModuleType | None) -> None:
    """The committed body of ``staged`` is now ``real``'s: so is its record."""
    if staged is None or real is None:
        return
    if staged in _STAGED:
        CALLED[real] = _STAGED.pop(staged)
    else:
        CALLED.pop(real, None)


def called(codes: Iterable[types.CodeType], modules: Iterable[types.ModuleType]) -> bool | None:
    """Whether the body of one of ``modules`` (the modules of the sandbox that defines
    ``codes``) called one of those functions (or code nested in them) when it last ran;
    None when one of them has no complete record."""
    if not ENABLED:
        return None
    records = []
    for m in modules:
        rec = CALLED.get(m)
        if rec is None:
            return None
        records.append(rec)
    wanted: set[tuple[str, str]] = set()
    todo = list(codes)
    while todo:
        c = todo.pop()
        wanted.add(_key(c))
        todo.extend(k for k in c.co_consts if type(k) is types.CodeType)
    return any(not wanted.isdisjoint(rec) for rec in records)


def _key(code: types.CodeType) -> tuple[str, str]:
    """A function as records name it: its module (from the version's file name) and
    qualified name, so that a record still names it after a reload gave the function
    other code (its importer's body did not run again then: what it computed came
    from the function whatever its code is now)."""
    module = code.co_filename[len(_PREFIX):-1].rpartition(" ")[0]
    return module, code.co_qualname
