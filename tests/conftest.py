from __future__ import annotations

import itertools
import os
import signal
import textwrap

# Started from a job that ignores SIGINT (a background shell job, some CI runners), Python
# leaves it ignored and the interrupt tests would interrupt nothing: Python's own handler
# is what a kernel and a terminal have.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# The suite keeps history in memory unless a test asks for a durable store.
os.environ.setdefault("SANDBOX_MAGIC_STORE", ":memory:")

import pytest

import sandbox_magic as sm

# One history scope for every in-process test, whatever the suite imported first
# (tests of scope detection unpin it; subprocesses detect their own).
SCOPE = "tests"
sm.set_history_scope(SCOPE)

_ids = itertools.count()


@pytest.fixture
def sid():
    """A fresh sandbox id, destroyed after the test."""
    name = f"t{next(_ids)}"
    sm.create_sandbox(name)
    yield name
    if name in {s.id for s in sm.list_sandboxes()}:
        sm.destroy_sandbox(name)


@pytest.fixture
def new_id():
    """An unused id; whatever the test creates under it is destroyed after."""
    name = f"n{next(_ids)}"
    yield name
    if name in {s.id for s in sm.list_sandboxes()}:
        sm.destroy_sandbox(name)


def src(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


class ListingStore(sm.VersionStore):
    """A history store in memory that outlives its sandboxes, as a file outlives a kernel,
    and lists what it holds (``list_sandboxes``)."""

    durable = True

    def __init__(self):
        self.saved = {}

    @staticmethod
    def _copy(h):
        from sandbox_magic.engine.versions import ModuleHistory
        c = ModuleHistory(h.module)
        c.restore(h.snapshot())
        return c

    def load(self, sandbox_id, *args, **kwargs):
        return {m: self._copy(h) for m, h in self.saved.get(sandbox_id, {}).items()}

    def save(self, sandbox_id, history, *args, **kwargs):
        self.saved.setdefault(sandbox_id, {})[history.module] = self._copy(history)

    def forget(self, sandbox_id, *args, **kwargs):
        self.saved.pop(sandbox_id, None)

    def list_sandboxes(self, *args, **kwargs):
        return {sid: {m: h.current for m, h in mods.items()} for sid, mods in self.saved.items()}


@pytest.fixture
def listing_store():
    """The default store for the test: a ListingStore (history survives destroy_sandbox)."""
    previous = sm.api.stores._default_store
    store = sm.set_default_store(ListingStore())
    yield store
    sm.api.stores._default_store = previous
