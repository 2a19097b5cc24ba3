"""Creating, inspecting, restarting and destroying sandboxes; the handle; run()."""

from __future__ import annotations

import sys
import time

import pytest

import sandbox_magic as sm


@pytest.mark.parametrize("bad", ["", "1abc", "a b", "a.b", "x" * 65, "bad/id", None, 5])
def test_invalid_ids_are_rejected(bad):
    with pytest.raises(sm.InvalidSandboxIdError):
        sm.create_sandbox(bad)


def test_valid_id_forms(new_id):
    info = sm.create_sandbox(new_id + "-x_y")
    try:
        assert info.id == new_id + "-x_y"
        assert info.status == "running"
        assert info.restart_count == 0
    finally:
        sm.destroy_sandbox(new_id + "-x_y")


def test_duplicate_id_is_an_error(sid):
    with pytest.raises(sm.SandboxExistsError, match="already exists"):
        sm.create_sandbox(sid)


def test_unknown_id_is_an_error():
    for fn in (sm.get_sandbox, sm.get_sandbox_info, sm.destroy_sandbox, sm.restart_sandbox):
        with pytest.raises(sm.SandboxNotFoundError, match="create_sandbox"):
            fn("never_made")
    with pytest.raises(sm.SandboxNotFoundError):
        sm.hot_reload_source("never_made", "def f():\n    pass\n")


def test_list_and_info(sid):
    sm.hot_reload_source(sid, "def f():\n    return 1\n")
    ids = [s.id for s in sm.list_sandboxes()]
    assert sid in ids
    info = sm.get_sandbox_info(sid)
    assert info.modules == {"f": 1}
    assert info.namespace == f"sandbox_magic.sandboxes.{sid}"
    assert info.created_at.tzinfo is not None


def test_destroy_removes_modules_from_sys_modules(new_id):
    sm.create_sandbox(new_id)
    sm.hot_reload_source(new_id, "def f():\n    return 1\n")
    key = f"sandbox_magic.sandboxes.{new_id}.f"
    assert key in sys.modules
    sm.destroy_sandbox(new_id)
    assert key not in sys.modules
    assert new_id not in [s.id for s in sm.list_sandboxes()]
    sm.create_sandbox(new_id)  # the id is free again


def test_restart_reloads_current_versions_fresh(sid):
    sm.hot_reload_source(sid, "STATE = []\ndef add(x):\n    STATE.append(x)\n    return STATE\n",
                         "store")
    sm.hot_reload_source(sid, "STATE = []\ndef add(x):\n    STATE.append(x * 2)\n"
                         "    return STATE\n", "store")
    sb = sm.get_sandbox(sid)
    sb.add(1)
    old_module = sb.modules["store"]
    info = sm.restart_sandbox(sid)
    assert info.restart_count == 1
    assert info.modules == {"store": 2}
    assert sb.modules["store"] is not old_module
    assert sb.add(5) == [10]


def test_sandbox_path_loads_initial_modules(new_id, tmp_path):
    (tmp_path / "util.py").write_text("def double(x):\n    return 2 * x\n")
    (tmp_path / "api.py").write_text("from util import double\ndef quad(x):\n"
                                     "    return double(double(x))\n")
    info = sm.create_sandbox(new_id, sandbox_path=tmp_path)
    assert info.modules == {"api": 1, "util": 1}
    assert sm.get_sandbox(new_id).quad(3) == 12


def test_failed_sandbox_path_creates_nothing(new_id, tmp_path):
    (tmp_path / "bad.py").write_text("def f(:\n")
    with pytest.raises(sm.CompileError):
        sm.create_sandbox(new_id, sandbox_path=tmp_path)
    assert new_id not in [s.id for s in sm.list_sandboxes()]


def test_handle_reaches_modules_and_definitions(sid):
    sm.hot_reload_source(sid, {"greet": "def greet(name):\n    return 'hi ' + name\n",
                               "counter": "class Counter:\n    pass\n"})
    sb = sm.get_sandbox(sid)
    assert sb.greet("x") == "hi x"          # the definition wins over the module
    assert sb.modules["greet"].greet is sb.greet
    assert sb.counter is sb.modules["counter"]
    assert isinstance(sb.Counter(), sb.counter.Counter)
    assert "Counter" in dir(sb)
    with pytest.raises(AttributeError, match="no module or top-level name"):
        sb.missing


def test_name_defined_by_two_modules_is_an_error_naming_both(sid):
    sm.hot_reload_source(sid, {"a": "LIMIT = 1\ndef fa():\n    pass\n",
                               "b": "LIMIT = 2\ndef fb():\n    pass\n"})
    with pytest.raises(sm.AmbiguousNameError, match="'a' and 'b'"):
        sm.get_sandbox(sid).LIMIT


def test_imported_names_do_not_count_as_definitions(sid):
    sm.hot_reload_source(sid, {"base": "class Base:\n    pass\n",
                               "child": "from base import Base\nclass Child(Base):\n    pass\n"})
    sb = sm.get_sandbox(sid)
    assert sb.Base is sb.modules["base"].Base
    assert issubclass(sb.Child, sb.Base)


def test_run_source_returns_trailing_expression(sid):
    sm.hot_reload_source(sid, "def double(x):\n    return 2 * x\n")
    assert sm.run(sid, "y = double(4)\ny + 1") == 9
    assert sm.run(sid, "import double as d\nd.double(5)") == 10
    assert sm.run(sid, "z = 3") is None
    assert sm.run(sid, "y") == 8   # the scratch namespace persists


def test_run_callable_gets_the_handle(sid):
    sm.hot_reload_source(sid, "def double(x):\n    return 2 * x\n")
    assert sm.run(sid, lambda sb: sb.double(21)) == 42


def test_run_keeps_exception_types(sid):
    with pytest.raises(ZeroDivisionError):
        sm.run(sid, "1 / 0")
    with pytest.raises(KeyError):
        sm.run(sid, lambda sb: {}["x"])
    with pytest.raises(sm.CompileError):
        sm.run(sid, "def (")


def test_run_timeout_raises_and_interrupts(sid):
    t0 = time.perf_counter()
    with pytest.raises(sm.SandboxTimeout):
        sm.run(sid, "while True:\n    pass\n", timeout=0.2)
    assert time.perf_counter() - t0 < 2
    assert sm.run(sid, "1 + 1", timeout=1) == 2


def test_run_does_not_touch_caller_globals(sid):
    before = dict(globals())
    sm.run(sid, "leak = 1")
    assert "leak" not in globals()
    assert set(globals()) == set(before)


def test_max_versions_must_be_positive(new_id):
    with pytest.raises(sm.SandboxError, match="max_versions"):
        sm.create_sandbox(new_id, max_versions=0)

