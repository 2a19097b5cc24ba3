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

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any


_local = threading.local()


@contextmanager
def user_code() -> Iterator[None]:
    """Let an interrupt stop the user code run inside (inside a reload, or anywhere)."""
    guard = getattr(_local, "guard", None)
    if guard is None:
        yield
    else:
        with guard.allowed():
            yield


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
                self._saved = signal.signal(signal.SIGINT, self._record)
            except ValueError:          # not the main interpreter
                self.active = False
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        _local.guard = self._outer
        if not self.active:
            return
        signal.signal(signal.SIGINT, self._saved)
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

    @contextmanager
    def allowed(self) -> Iterator[None]:
        """Run user code interruptibly (a pending interrupt is raised first)."""
        if not self.active:
            yield
            return
        signal.signal(signal.SIGINT, self._saved)
        try:
            self.deliver()
            yield
        finally:
            signal.signal(signal.SIGINT, self._record)
