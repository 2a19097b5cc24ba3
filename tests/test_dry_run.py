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



SHARED = """LOG = []
def record(x):
    LOG.append(x)
class Job:
    def __init__(self):
        self.log = LOG
        self.opts = Opts()
class Opts:
    def __init__(self):
        self.level = 1
"""


def test_the_handler_gets_copies_so_a_dry_run_never_touches_live_data(sid):
    import threading

    sm.hot_reload_source(sid, SHARED, "m")
    mod = sm.get_sandbox(sid).modules["m"]
    jobs = [mod.Job() for _ in range(50)]
    stop, n = threading.Event(), [0]

    def worker():                       # writes all along to a list the states hold
        while not stop.is_set() and n[0] < 200_000:
            mod.record(n[0])
            n[0] += 1

    def handler(state, old, new):
        if "log" not in state:           # an Opts instance
            return state
        state["log"].append("from the handler")
        state["opts"].level = 99         # an object held in the state
        return {**state, "seen": new}

    t = threading.Thread(target=worker)
    t.start()
    try:
        for i in range(5):
            d = sm.hot_reload_source(sid, SHARED + f"X = {i}\n", "m", state_handler=handler,
                                     dry_run=True)
            assert not d.refused, d.reason
            assert [g.added for g in d.migrations if g.cls == "m.Job"] == [("seen",)]
    finally:
        stop.set()
        t.join()
    assert len(mod.LOG) == n[0] and "from the handler" not in mod.LOG   # nothing lost, nothing added
    assert all(j.opts.level == 1 and "seen" not in vars(j) for j in jobs)


def test_a_server_state_and_a_replaced_class_are_not_touched_by_a_dry_run(sid):
    src = ("from sandbox_magic import Server\n"
           "class S(Server):\n    def init(self):\n        return {'items': [1, 2]}\n"
           "    def handle_call(self, req, state):\n        return state['items'], state\n"
           "class Slotted:\n    __slots__ = ('items',)\n    def __init__(self):\n"
           "        self.items = [1, 2]\n")
    sm.hot_reload_source(sid, src, "m")
    server = sm.start_server(sid, "S", name="s")
    obj = sm.get_sandbox(sid).Slotted()

    def handler(state, old, new):
        state["items"].append(99)
        return state

    d = sm.hot_reload_source(sid, src.replace("('items',)", "('items', 'more')"), "m",
                             state_handler=handler, dry_run=True)
    assert not d.refused, d.reason
    assert server.call("x", timeout=2) == [1, 2] and obj.items == [1, 2]


def test_the_magic_dry_run_of_a_new_sandbox_leaves_no_sandbox(tmp_path):
    from IPython import get_ipython
    from IPython.testing.globalipapp import start_ipython

    ip = start_ipython() or get_ipython()
    ip.run_line_magic("load_ext", "sandbox_magic")
    r = ip.run_cell("%%sandbox_reload brandnew m --dry-run\ndef f():\n    return 1\n")
    assert r.success
    assert "brandnew" not in {s.id for s in sm.list_sandboxes()}
    assert "brandnew" not in ip.user_ns


def test_a_dry_run_announces_no_failed_reload(sid):
    seen = []
    listener = lambda event, sandbox, payload: seen.append(event)   # noqa: E731
    sm.api.listeners.append(listener)
    try:
        sm.hot_reload_source(sid, "X = 1\n", "m")
        with pytest.raises(sm.CompileError):
            sm.hot_reload_source(sid, "X = (", "m", dry_run=True)
        assert sm.hot_reload_source(sid, "raise ValueError\n", "m", dry_run=True).refused
    finally:
        sm.api.listeners.remove(listener)
    assert "reload_failed" not in seen


def test_without_state_preservation_no_server_is_said_to_pause(sid):
    sm.hot_reload_source(sid, "from sandbox_magic import Server\nclass S(Server):\n"
                              "    def init(self):\n        return 0\n", "m")
    sm.start_server(sid, "S", name="s")
    d = sm.hot_reload_source(sid, "from sandbox_magic import Server\nclass S(Server):\n"
                                  "    def init(self):\n        return 1\n", "m",
                             use_state_preservation=False, dry_run=True)
    assert d.servers == ()


def test_an_unchanged_function_is_not_listed_as_changed(sid):
    # a short module is compiled whole at first and statement by statement later: the
    # same text can give slightly different code (3.11: functools.wraps as an attribute
    # or a method load), which is no change of the function
    v1 = ("import functools\ndef helper(f):\n    return functools.wraps(f)\n"
          + "".join(f"X{i} = {i}\n" for i in range(20)))
    sm.hot_reload_source(sid, v1, "m")
    d = sm.hot_reload_source(sid, v1.replace("X5 = 5", "X5 = 55"), "m", dry_run=True)
    assert d.functions_changed == ()
    d = sm.hot_reload_source(sid, v1.replace("functools.wraps(f)", "functools.wraps(f)(f)"),
                             "m", dry_run=True)
    assert d.functions_changed == ("m.helper",)
