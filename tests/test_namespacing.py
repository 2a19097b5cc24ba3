"""Module transformation: namespaced keys, sibling imports, pickle, inspect, tracebacks."""

from __future__ import annotations

import inspect
import pickle
import sys
import traceback

import pytest
from conftest import src

import sandbox_magic as sm


def test_modules_live_under_a_namespaced_key(sid):
    sm.hot_reload_source(sid, "class Counter:\n    pass\n")
    key = f"sandbox_magic.sandboxes.{sid}.counter"
    assert sys.modules[key] is sm.get_sandbox(sid).counter
    assert sm.get_sandbox(sid).Counter.__module__ == key
    assert "counter" not in sys.modules or sys.modules["counter"] is not sys.modules[key]


def test_two_sandboxes_can_both_define_counter(sid, new_id):
    sm.create_sandbox(new_id)
    sm.hot_reload_source(sid, "def value():\n    return 'a'\n", "counter")
    sm.hot_reload_source(new_id, "def value():\n    return 'b'\n", "counter")
    assert sm.get_sandbox(sid).value() == "a"
    assert sm.get_sandbox(new_id).value() == "b"


@pytest.mark.parametrize("consumer", [
    "import counter\ndef total():\n    return counter.Counter().n\n",
    "import counter as c\ndef total():\n    return c.Counter().n\n",
    "from counter import Counter\ndef total():\n    return Counter().n\n",
    "from . import counter\ndef total():\n    return counter.Counter().n\n",
    "from .counter import Counter\ndef total():\n    return Counter().n\n",
    "def total():\n    import counter\n    return counter.Counter().n\n",
])
def test_sibling_imports_by_plain_name(sid, consumer):
    sm.hot_reload_source(sid, {"counter": "class Counter:\n    n = 7\n", "api": consumer})
    assert sm.get_sandbox(sid).total() == 7


def test_other_imports_resolve_normally(sid):
    sm.hot_reload_source(sid, "import json\nfrom collections import OrderedDict\n"
                         "def dump():\n    return json.dumps(OrderedDict(a=1))\n")
    assert sm.get_sandbox(sid).dump() == '{"a": 1}'


def test_notebook_globals_are_never_written(sid):
    before = set(globals())
    sm.hot_reload_source(sid, "class Counter:\n    pass\nHELPER = 1\n")
    sm.run(sid, "x = 5")
    assert set(globals()) == before
    assert "Counter" not in globals() and "HELPER" not in globals()


def test_instances_pickle_and_unpickle(sid):
    sm.hot_reload_source(sid, "class Point:\n    def __init__(self, x):\n        self.x = x\n")
    p = sm.get_sandbox(sid).Point(3)
    sm.hot_reload_source(sid, "class Point:\n    def __init__(self, x):\n        self.x = x\n"
                         "    def twice(self):\n        return 2 * self.x\n")
    q = pickle.loads(pickle.dumps(p))
    assert type(q) is type(p) and q.twice() == 6
    f = pickle.loads(pickle.dumps(sm.get_sandbox(sid).Point))
    assert f is type(p)


def test_getsource_shows_the_current_versions_source(sid):
    v1 = "def greet():\n    return 'v1'\n"
    v2 = "def greet():\n    # second\n    return 'v2'\n"
    sm.hot_reload_source(sid, v1)
    fn = sm.get_sandbox(sid).greet
    assert inspect.getsource(fn) == v1
    sm.hot_reload_source(sid, v2)
    assert inspect.getsource(fn) == v2
    sm.rollback_module(sid, "greet", 1)
    assert inspect.getsource(fn) == v1


def test_getsource_of_a_class(sid):
    code = src("""
        X = 1


        class Thing:
            def go(self):
                return X
    """)
    sm.hot_reload_source(sid, code, "thing")
    assert inspect.getsource(sm.get_sandbox(sid).Thing).startswith("class Thing:")


def test_tracebacks_point_at_the_right_version_and_line(sid):
    sm.hot_reload_source(sid, "def boom():\n    raise ValueError('v1')\n")
    sm.hot_reload_source(sid, "def boom():\n    x = 1\n\n    raise ValueError('v2')\n")
    with pytest.raises(ValueError) as info:
        sm.get_sandbox(sid).boom()
    last = traceback.extract_tb(info.value.__traceback__)[-1]
    assert last.lineno == 4
    assert last.line == "raise ValueError('v2')"
