"""Other threads' frames, looked at while none of them runs.

Following another thread's ``f_back`` chain is only safe while that thread is
stopped: a thread that returns meanwhile frees or reuses the frames being walked
(seen as crashes and as "frames" of other types at a high thread-switch rate).
The compiled walks (``_live.c``) run in one C call with the GIL held and the
collector paused.  Without them, the walk runs with the collector paused and the
thread switch interval raised to 50 ms (longer than any walk, short enough that a
thread which gets the GIL meanwhile gives it back soon), so no other thread is
scheduled before it ends.
"""

from __future__ import annotations

import gc
import sys
import threading
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .tracking import _native as native_module


@contextmanager
def _others_held() -> Iterator[None]:
    enabled = gc.isenabled()
    interval = sys.getswitchinterval()
    gc.disable()
    sys.setswitchinterval(0.05)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)
        if enabled:
            gc.enable()


def _chains() -> Iterator[tuple[int, types.FrameType]]:
    current = threading.get_ident()
    for ident, frame in sys._current_frames().items():
        walk: types.FrameType | None = None if ident == current else frame
        while walk is not None:
            yield ident, walk
            walk = walk.f_back


def frames_reading(by_id: dict[int, Any]) -> list[int]:
    """The keys of ``by_id`` (ids of namespaces) that other threads' frames read as globals."""
    if native_module is not None:
        found: list[int] = native_module.frames_reading(by_id)
        return found
    with _others_held():
        return [id(f.f_globals) for _, f in _chains() if id(f.f_globals) in by_id]


def threads_running(by_code_id: dict[int, Any]) -> dict[int, types.CodeType]:
    """Other threads with a frame running one of these code objects (keys: their id()s):
    thread id -> the innermost such code."""
    if native_module is not None:
        return dict(native_module.threads_running(by_code_id))
    out: dict[int, types.CodeType] = {}
    with _others_held():
        for ident, f in _chains():
            if ident not in out and id(f.f_code) in by_code_id:
                out[ident] = f.f_code
    return out


def narrow(by_code_id: dict[int, Any], passing: set[int]) -> dict[int, types.CodeType]:
    """:func:`threads_running`, and ``passing`` keeps only those threads, in one step
    (a thread cannot leave such code and enter it again between the two)."""
    if native_module is not None:
        return dict(native_module.narrow(by_code_id, passing))
    with _others_held():
        running = threads_running(by_code_id)
        passing.intersection_update(running)
    return running


def codes_of(cls: type) -> dict[int, types.CodeType]:
    """The code objects of the functions a class defines (methods, static and class
    methods, properties) and of the functions nested in them, by id()."""
    out: dict[int, types.CodeType] = {}

    def add(code: types.CodeType) -> None:
        if id(code) not in out:
            out[id(code)] = code
            for c in code.co_consts:
                if isinstance(c, types.CodeType):
                    add(c)

    for v in cls.__dict__.values():
        for fn in (getattr(v, "__func__", v), getattr(v, "fget", None),
                   getattr(v, "fset", None), getattr(v, "fdel", None)):
            if isinstance(fn, types.FunctionType):
                add(fn.__code__)
    return out


def assert_quiet(by_code_id: dict[int, Any], exc_type: type[BaseException]) -> None:
    """Raise ``exc_type([(thread id, code), ...])`` if another thread runs one of these
    code objects.  Compiled: one C call, usable as a step of a commit's C-level loop
    (nothing runs between the test and the next step)."""
    if native_module is not None:
        native_module.quiet(by_code_id, exc_type)
        return
    found = threads_running(by_code_id)
    if found:
        raise exc_type(list(found.items()))
