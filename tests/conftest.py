from __future__ import annotations

import itertools
import os
import textwrap

# The suite keeps history in memory unless a test asks for a durable store.
os.environ.setdefault("SANDBOX_MAGIC_STORE", ":memory:")

import pytest

import sandbox_magic as sm

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
