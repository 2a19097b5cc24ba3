"""Every function of a sandbox module reads and writes the one live namespace.

A table of ways code is wrapped or held (decorators, functools, contextlib,
method aliases, registries) crossed with three moments: the first load, a
wrapper held from the old version after a reload, and after a rollback.
"""

from __future__ import annotations

import functools

import pytest
from conftest import src

import sandbox_magic as sm
from sandbox_magic.engine.artifact import compile_artifact

_HEAD = """
import contextlib
import functools
LIMIT = 1
def set_limit(v):
    global LIMIT
    LIMIT = v
"""

# name -> (module body using TAG, how to get the held object, how to call it)
CASES = {
    "lru_cache": ("""
@functools.lru_cache
def target(n):
    return ("TAG", LIMIT, n)
""", lambda m: m.target, lambda h, n: h(n)),
    "cache": ("""
@functools.cache
def target(n):
    return ("TAG", LIMIT, n)
""", lambda m: m.target, lambda h, n: h(n)),
    "partial": ("""
def _impl(scale, n):
    return ("TAG", LIMIT * scale, n)
target = functools.partial(_impl, 1)
""", lambda m: m.target, lambda h, n: h(n)),
    "singledispatch": ("""
@functools.singledispatch
def target(n):
    return ("TAG", LIMIT, n)
@target.register
def _(n: str):
    return ("TAG", LIMIT, n)
""", lambda m: m.target, lambda h, n: h(n) if n % 2 else h(str(n))[:2] + (n,)),
    "singledispatch_overload": ("""
@functools.singledispatch
def target(n):
    return ("base", 0, n)
@target.register(int)
def _int(n):
    return ("TAG", LIMIT, n)
""", lambda m: m.target.registry[int], lambda h, n: h(n)),
    "contextmanager": ("""
@contextlib.contextmanager
def target(n):
    yield ("TAG", LIMIT, n)
""", lambda m: m.target, lambda h, n: h(n).__enter__()),
    "wraps_from_sibling": ("""
from deco import logged
@logged
def target(n):
    return ("TAG", LIMIT, n)
""", lambda m: m.target, lambda h, n: h(n)),
    "classmethod_alias": ("""
class K:
    @classmethod
    def method(cls, n):
        return ("TAG", LIMIT, n)
target = K.method
""", lambda m: m.target, lambda h, n: h(n)),
    "staticmethod_alias": ("""
class K:
    @staticmethod
    def method(n):
        return ("TAG", LIMIT, n)
target = K.method
""", lambda m: m.target, lambda h, n: h(n)),
    "bound_alias": ("""
class K:
    def method(self, n):
        return ("TAG", LIMIT, n)
target = K().method
""", lambda m: m.target, lambda h, n: h(n)),
    "function_in_dict": ("""
HANDLERS = {"a": lambda n: ("TAG", LIMIT, n)}
""", lambda m: m.HANDLERS["a"], lambda h, n: h(n)),
    "registry_decorator": ("""
REGISTRY = {}
def register(fn):
    REGISTRY[fn.__name__] = fn
    return fn
@register
def target(n):
    return ("TAG", LIMIT, n)
""", lambda m: m.REGISTRY["target"], lambda h, n: h(n)),
    "method_in_list": ("""
class K:
    def method(self, n):
        return ("TAG", LIMIT, n)
HOOKS = [K().method]
""", lambda m: m.HOOKS[0], lambda h, n: h(n)),
}

_DECO = """
import functools
def logged(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)
    return wrapper
"""


# A long module is compiled piece by piece (engine/chunks.py); every case runs
# as a cell and as a long module whose lines shift between versions.
_PADDING = "".join(f"def pad{i}(x, y=1):\n    return x + y + {i}\n\n" for i in range(80))
SIZES = ["cell", "long"]


def _source(case: str, tag: str, size: str = "cell") -> str:
    body = src(_HEAD) + src(CASES[case][0]).replace("TAG", tag)
    if size == "long":      # each version starts one line lower
        body = f"# {tag}\n" + "\n" * int(tag[1:]) + _PADDING + body
    return body


def _load(sid: str, case: str, tag: str, size: str = "cell"):
    if case == "wraps_from_sibling" and "deco" not in sm.get_sandbox(sid).modules:
        sm.hot_reload_source(sid, src(_DECO), module="deco")
    source = _source(case, tag, size)
    if size == "long":
        assert len(compile_artifact(source, "m").codes) > 80    # compiled piece by piece
    return sm.hot_reload_source(sid, source, module="m")


_n = iter(range(1, 10**9))


def _call(case: str, held):
    return CASES[case][2](held, next(_n) * 2 + 1)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_first_load_reads_live_globals(sid, case, size):
    _load(sid, case, "v1", size)
    m = sm.get_sandbox(sid).modules["m"]
    held = CASES[case][1](m)
    assert _call(case, held)[:2] == ("v1", 1)
    m.set_limit(10)
    assert m.LIMIT == 10
    assert _call(case, held)[:2] == ("v1", 10)
    assert _call(case, CASES[case][1](m))[:2] == ("v1", 10)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_held_wrapper_runs_new_code_after_reload(sid, case, size):
    _load(sid, case, "v1", size)
    m = sm.get_sandbox(sid).modules["m"]
    held = CASES[case][1](m)
    _call(case, held)
    r = _load(sid, case, "v2", size)
    assert r.new_version == 2
    assert _call(case, held)[:2] == ("v2", 1)
    m.set_limit(5)
    assert _call(case, held)[:2] == ("v2", 5)
    assert _call(case, CASES[case][1](m))[:2] == ("v2", 5)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_held_wrapper_follows_rollback(sid, case, size):
    _load(sid, case, "v1", size)
    m = sm.get_sandbox(sid).modules["m"]
    held = CASES[case][1](m)
    _load(sid, case, "v2", size)
    held2 = CASES[case][1](m)
    sm.rollback_module(sid, "m", 1)
    m.set_limit(3)
    assert _call(case, held)[:2] == ("v1", 3)
    assert _call(case, held2)[:2] == ("v1", 3)
    sm.undo(sid, "m")          # the body ran again: LIMIT is back to 1
    m.set_limit(4)
    assert _call(case, held)[:2] == ("v2", 4)


def test_memoizing_wrapper_forgets_its_cache_when_its_code_changes(sid):
    body = src(_HEAD) + src("""
        @functools.lru_cache(maxsize=None)
        def cap(n):
            return min(n, LIMIT) + OFFSET
        """)
    sm.hot_reload_source(sid, body + "OFFSET = 0\n", module="m")
    m = sm.get_sandbox(sid).modules["m"]
    held = m.cap
    m.set_limit(10)
    assert held(5) == 5
    sm.hot_reload_source(sid, body.replace("min(n, LIMIT)", "max(n, LIMIT)") + "OFFSET = 0\n",
                         module="m")
    assert m.cap is held        # same wrapper object, same configuration
    m.set_limit(10)
    assert held(5) == 10        # the stale cached 5 was dropped
    # a change elsewhere in the module (here OFFSET, which cap reads) drops the cache of
    # an unchanged function too: the module ran again, so its cached results are stale
    held.cache_clear()
    held(2)
    sm.hot_reload_source(sid, body.replace("min(n, LIMIT)", "max(n, LIMIT)") + "OFFSET = 1\n",
                         module="m")
    assert held.cache_info().currsize == 0
    m.set_limit(10)
    assert held(2) == 11


def test_issue_example_lru_cache_sees_set_limit(sid):
    sm.hot_reload_source(sid, "import functools\nLIMIT = 1\ndef set_limit(v):\n    global LIMIT\n"
                              "    LIMIT = v\n@functools.lru_cache\ndef cap(n):\n"
                              "    return min(n, LIMIT)\n", module="m")
    m = sm.get_sandbox(sid).modules["m"]
    m.set_limit(10)
    m.cap.cache_clear()
    assert m.cap(5) == 5


def test_decorator_removed_and_added(sid):
    sm.hot_reload_source(sid, src(_DECO), module="deco")
    v1 = src(_HEAD) + "from deco import logged\n@logged\ndef f():\n    return ('v1', LIMIT)\n"
    v2 = src(_HEAD) + "def f():\n    return ('v2', LIMIT)\n"
    sm.hot_reload_source(sid, v1, module="m")
    m = sm.get_sandbox(sid).modules["m"]
    held = m.f
    sm.hot_reload_source(sid, v2, module="m")
    m.set_limit(4)
    assert held() == ("v2", 4)
    assert m.f() == ("v2", 4)
    held_plain = m.f
    sm.hot_reload_source(sid, v1.replace("v1", "v3"), module="m")
    m.set_limit(6)
    assert held() == ("v3", 6)
    assert held_plain() == ("v3", 6)
    assert m.f() == ("v3", 6)


def test_decorator_reloaded_in_its_own_module_reaches_held_functions(sid):
    sm.hot_reload_source(sid, src(_DECO), module="deco")
    sm.hot_reload_source(sid, src(_HEAD) + "from deco import logged\n@logged\n"
                              "def f():\n    return ('f', LIMIT)\n", module="m")
    m = sm.get_sandbox(sid).modules["m"]
    held = m.f
    sm.hot_reload_source(sid, src(_DECO).replace("return fn(*args, **kwargs)",
                                                 "return ('logged',) + fn(*args, **kwargs)"),
                         module="deco")
    m.set_limit(2)
    assert held() == ("logged", "f", 2)
    assert m.f() == ("logged", "f", 2)


def test_globals_captured_with_globals_are_the_live_namespace(sid):
    sm.hot_reload_source(sid, "G = globals()\nX = 1\ndef get():\n    return G['X']\n",
                         module="m")
    m = sm.get_sandbox(sid).modules["m"]
    assert m.G is vars(m)
    m.X = 7
    assert m.get() == 7


def test_generator_made_by_the_body_is_reported(sid):
    r = sm.hot_reload_source(sid, "X = 1\ndef gen():\n    while True:\n        yield X\n"
                                  "G = gen()\n", module="m")
    m = sm.get_sandbox(sid).modules["m"]
    assert next(m.G) == 1
    assert any("generator" in n for n in r.notes), r.notes


def test_function_held_by_an_outside_object_reads_live_globals(sid):
    """Functions the body gives to objects of other libraries are reached too."""
    sm.hot_reload_source(sid, src(_HEAD) + src("""
        import types
        NS = types.SimpleNamespace(get=lambda: ("v1", LIMIT))
        """), module="m")
    m = sm.get_sandbox(sid).modules["m"]
    m.set_limit(8)
    assert m.NS.get() == ("v1", 8)


def test_reload_does_not_touch_functions_of_other_modules(sid):
    """A name that was bound to a foreign function and becomes a def: the foreign one stays."""
    import posixpath
    code = posixpath.join.__code__
    sm.hot_reload_source(sid, "from posixpath import join as j\n", module="m")
    sm.hot_reload_source(sid, "def j(*a):\n    return 'mine'\n", module="m")
    assert posixpath.join.__code__ is code
    assert posixpath.join("a", "b") == "a/b"
    assert sm.get_sandbox(sid).modules["m"].j() == "mine"


def test_wrapper_outside_the_module_is_not_merged_with_a_new_one(sid):
    """Two closures of one outside factory: rebinding a name must not patch the first."""
    sm.hot_reload_source(sid, "import functools\nA = functools.partial(int, base=2)\n"
                              "def keep():\n    return A\n", module="lib")
    lib = sm.get_sandbox(sid).modules["lib"]
    a = lib.A
    sm.hot_reload_source(sid, "from lib import A as P\n", module="m")
    sm.hot_reload_source(sid, "import functools\nP = functools.partial(int, base=8)\n", module="m")
    assert a("11") == 3
    assert lib.A is a


@functools.lru_cache
def _outside(n):
    return n


def test_outside_memoized_function_is_left_alone(sid):
    _outside(1)
    sm.hot_reload_source(sid, "from test_live_globals import _outside as o\n", module="m")
    sm.hot_reload_source(sid, "import functools\n@functools.lru_cache\ndef o(n):\n"
                              "    return -n\n", module="m")
    assert _outside.cache_info().currsize == 1
    assert _outside(2) == 2


def test_generator_made_by_the_body_survives_later_reloads(sid):
    import gc
    body = "X = 1\ndef gen():\n    while True:\n        yield X\nG = gen()\n"
    sm.hot_reload_source(sid, body, module="m")
    m = sm.get_sandbox(sid).modules["m"]
    g = m.G
    assert next(g) == 1
    for i in range(3):
        sm.hot_reload_source(sid, body + f"# edit {i}\n", module="m")
        gc.collect()
    assert next(g) == 1          # still reads the namespace it started with, no crash
    assert next(m.G) == 1


def test_thread_started_by_the_body_keeps_running(sid):
    body = src("""
        import threading
        X = 1
        SEEN = []
        EV = threading.Event()
        def loop():
            while not EV.is_set():
                SEEN.append(X)
                EV.wait(0.005)
        T = threading.Thread(target=loop, daemon=True)
        T.start()
        """)
    sm.hot_reload_source(sid, body, module="m")
    m = sm.get_sandbox(sid).modules["m"]
    first_ev, first_seen, first_t = m.EV, m.SEEN, m.T
    r = sm.hot_reload_source(sid, body.replace("X = 1", "X = 2"), module="m")
    assert any("still running" in n for n in r.notes), r.notes
    n = len(first_seen)
    deadline = __import__("time").monotonic() + 2
    while len(first_seen) < n + 3 and __import__("time").monotonic() < deadline:
        first_ev.wait(0.01)
    assert len(first_seen) >= n + 3 and set(first_seen) == {1}
    first_ev.set()
    m.EV.set()
    first_t.join(2)
    m.T.join(2)
    assert not first_t.is_alive()


def test_functions_of_a_class_a_library_made_at_import_join_the_live_namespace(sid, monkeypatch):
    # attrs builds classes with type() while a module body runs and gives them functions
    # of that body: reached through the module's objects, no search of the heap is needed
    from sandbox_magic.engine import patch

    searched: list = []
    monkeypatch.setattr(patch.Patcher, "_search_escaped",
                        lambda self, staging, real: searched.append(staging.get("__name__")))
    body = ("def make():\n    def getter(self):\n        return SCALE\n"
            "    return type('T', (), {'v': property(getter)})\nOBJ = make()()\n")
    sm.hot_reload_source(sid, "SCALE = 1\n" + body, "lib")
    sm.hot_reload_source(sid, "SCALE = 2\n" + body, "lib")
    assert sm.get_sandbox(sid).OBJ.v == 2 and searched == []
