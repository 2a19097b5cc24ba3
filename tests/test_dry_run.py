"""A dry run does everything a reload does up to the switch, says what it found, and
leaves everything exactly as a refused reload leaves it."""

from __future__ import annotations

import pytest
from test_atomicity import V2, _assert_v1, _assert_v2, _handler, _setup

import sandbox_magic as sm
from sandbox_magic.engine.dryrun import DryRun


def test_a_dry_run_reports_the_reload_and_changes_nothing(sid):
    sb, boxes, server = _setup(sid)
    d = sm.hot_reload_source(sid, V2, "m", state_handler=_handler, dry_run=True)
    assert isinstance(d, DryRun) and not d.refused and not d.in_place
    assert d.from_versions == {"m": 1} and d.to_versions == {"m": 2}
    assert set(d.functions_changed) == {"m.Box.get", "m.Ctr.handle_call"}   # f reads VERSION
    assert d.functions_added == () and d.functions_removed == ()
    (box,) = [g for g in d.migrations if g.cls == "m.Box"]
    assert box.instances == 3 and box.added == ("extra",) and box.dropped == ()
    assert len(d.servers) == 1 and d.servers[0].startswith("ctr#")
    assert "would be applied" in d.summary() and "migrate 3 m.Box instances" in d.summary()
    _assert_v1(sid, sb, boxes, server)
    # and the reload it described goes through as described
    sm.hot_reload_source(sid, V2, "m", state_handler=_handler)
    _assert_v2(sid, sb, boxes, server)


def test_a_dry_run_puts_back_what_a_handler_changed_in_place(sid):
    sm.hot_reload_source(sid, "class Bag:\n    def __init__(self):\n        self.items = [1]\n",
                         "bag")
    bag = sm.get_sandbox(sid).Bag()

    def grab(state, old, new):
        state["items"].append(99)          # the list itself, not a copy
        state["count"] = len(state["items"])
        return state

    d = sm.hot_reload_source(sid, "class Bag:\n    def __init__(self):\n        self.count = 1\n",
                             "bag", state_handler=grab, dry_run=True)
    assert d.migrations[0].added == ("count",) and d.migrations[0].dropped == ()
    assert vars(bag) == {"items": [1]}
    assert sm.get_module_version(sid, "bag") == 1


def test_a_refused_dry_run_says_why_and_changes_nothing(sid):
    sb, boxes, server = _setup(sid)
    d = sm.hot_reload_source(sid, V2 + "raise RuntimeError('no')\n", "m", dry_run=True)
    assert d.refused and d.step == "execute" and "RuntimeError" in d.reason
    assert "REFUSED" in d.summary()
    _assert_v1(sid, sb, boxes, server)


def test_a_dry_run_runs_the_check_and_reports_it(sid):
    sb, boxes, server = _setup(sid)
    d = sm.hot_reload_source(sid, V2, "m", check="f() == 2", dry_run=True)
    assert d.check == "passed" and not d.refused
    d = sm.hot_reload_source(sid, V2, "m", check="f() == 3", dry_run=True)
    assert d.refused and d.check.startswith("refused:")
    _assert_v1(sid, sb, boxes, server)


def test_a_body_edit_dry_run_says_in_place(sid):
    text = "def f():\n    return 1\n\ndef g():\n    return f()\n"
    sm.hot_reload_source(sid, text, "m")
    d = sm.hot_reload_source(sid, text.replace("return 1", "return 2"), "m", dry_run=True)
    assert d.in_place and d.functions_changed == ("m.f",) and "in place" in d.summary()
    assert sm.get_sandbox(sid).modules["m"].g() == 1


def test_a_dry_run_lists_dependents_added_and_removed_functions(sid):
    sm.hot_reload_source(sid, {"a": "STEP = 1\ndef old():\n    pass\n",
                               "b": "from a import STEP\nLABEL = STEP * 2\n"})
    d = sm.hot_reload_source(sid, "STEP = 2\ndef new():\n    pass\n", "a", dry_run=True)
    assert d.dependents == ("b",)
    assert d.functions_added == ("a.new",) and d.functions_removed == ("a.old",)
    assert sm.get_sandbox(sid).modules["b"].LABEL == 2


def test_rollback_and_unchanged_dry_runs(sid):
    sm.hot_reload_source(sid, "X = 1\n", "m")
    sm.hot_reload_source(sid, "X = 2\n", "m")
    d = sm.rollback_module(sid, "m", 1, dry_run=True)
    assert (d.from_versions, d.to_versions) == ({"m": 2}, {"m": 1})
    assert sm.get_sandbox(sid).modules["m"].X == 2 and sm.get_module_version(sid, "m") == 2
    same = sm.hot_reload_source(sid, "X = 2\n", "m", dry_run=True)
    assert same.no_change and "no change" in same.summary()


def test_a_dry_run_round_trips_as_a_dict():
    d = DryRun(("m",), {"m": 1}, {"m": 2}, functions_changed=("m.f",), servers=("s",))
    assert DryRun.from_dict(d.to_dict()) == d


@pytest.mark.parametrize("bad", ["x = (", "import no_such_module_here\n"])
def test_bad_code_is_a_refusal_or_a_compile_error(sid, bad):
    sm.hot_reload_source(sid, "X = 1\n", "m")
    if bad.endswith("("):
        with pytest.raises(sm.CompileError):
            sm.hot_reload_source(sid, bad, "m", dry_run=True)
    else:
        assert sm.hot_reload_source(sid, bad, "m", dry_run=True).refused
    assert sm.get_sandbox(sid).modules["m"].X == 1

