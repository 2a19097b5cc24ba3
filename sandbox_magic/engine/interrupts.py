"""Keeping a reload atomic when the user presses the kernel's interrupt button.

The kernel turns an interrupt into SIGINT, whose default handler raises
``KeyboardInterrupt`` in the main thread between any two bytecodes.  Landing
inside the reload machinery, it could leave new code running with the old
version recorded, or a server suspended.  While a reload runs, an
:class:`InterruptGuard` holds SIGINT back: user code (a module body, a state
handler, a check) still runs interruptibly, and an interrupt arriving there
aborts the reload, which is then rolled back; an interrupt arriving during the
bookkeeping is delivered at the next point where that is safe: before the
commit (the reload is refused) or once the reload has been applied and
recorded.
"""

from __future__ import annotations

import _signal  # the C functions: signal.signal's enum conversion costs more than the call
import signal
import threading
from types import FrameType
from typing import Any

_local = threading.local()


class _Allowed:
    """Context of user code: SIGINT goes to the user's handler meanwhile."""

    __slots__ = ("guard",)

    def __init__(self, guard: InterruptGuard | None) -> None:
        self.guard = guard if guard is not None and guard.active else None

    def __enter__(self) -> None:
        g = self.guard
        if g is not None:
            _signal.signal(signal.SIGINT, g._saved)
            g.deliver()

    def __exit__(self, *exc: object) -> None:
        g = self.guard
        if g is not None:
            _signal.signal(signal.SIGINT, g._record)


def user_code() -> _Allowed:
    """Let an interrupt stop the user code run inside (inside a reload, or anywhere)."""
    return _Allowed(getattr(_local, "guard", None))


class InterruptGuard:
    """Defers SIGINT in the main thread; elsewhere (no signals arrive there) a no-op."""

    def __init__(self) -> None:
        self.active = threading.current_thread() is threading.main_thread()
        self.pending = False
        self._saved: Any = None

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self.pending = True

    def __enter__(self) -> InterruptGuard:
        self._outer = getattr(_local, "guard", None)
        _local.guard = self
        if self.active:
            try:
                if _signal.getsignal(signal.SIGINT) is None:
                    self.active = False     # a handler set outside Python: leave it alone
                else:
                    self._saved = _signal.signal(signal.SIGINT, self._record)
            except ValueError:          # not the main interpreter
                self.active = False
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        _local.guard = self._outer
        if not self.active:
            return
        _signal.signal(signal.SIGINT, self._saved)
        if exc_type is None:
            self.deliver()

    def deliver(self) -> None:
        """Raise (through the user's own handler) an interrupt that arrived meanwhile."""
        if self.pending:
            self.pending = False
            handler = self._saved
            if callable(handler):
                handler(signal.SIGINT, None)
            elif handler == signal.SIG_DFL:
                raise KeyboardInterrupt

    checkpoint = deliver

    def allowed(self) -> _Allowed:
        """Run user code interruptibly (a pending interrupt is raised first)."""
        return _Allowed(self)
