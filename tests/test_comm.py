"""The kernel side of the JupyterLab panel protocol, including a fuzzer."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sandbox_magic as sm
from sandbox_magic.jupyter.comm import MAX_MESSAGE, METHODS, CommHub, handle_message


def req(method, rid=1, **params):
    return {"protocol": 1, "id": rid, "method": method, "params": params}


def ok(reply):
    assert reply["ok"], reply
    return reply["result"]


def entries(listed):
    """The sandbox entries of a list reply, without the host fields (kernel, process...)."""
    return [{k: v for k, v in e.items() if k not in ("host", "engines")} for e in listed]


def test_hello_list_history_diff(sid):
    sm.hot_reload_source(sid, "def f():\n    return 1\n")
    sm.hot_reload_source(sid, "def f():\n    return '<img src=x onerror=alert(1)>'\n")
    hello = ok(handle_message(req("hello")))
    assert hello["protocol"] == 1
    assert {"id": sid, "modules": {"f": 2}, "stored_modules": {},
            "loaded": True} in entries(hello["sandboxes"])
    hist = ok(handle_message(req("history", sandbox=sid, module="f")))
    assert [v["version"] for v in hist["versions"]] == [2, 1]
    assert hist["versions"][0]["current"] and len(hist["versions"][0]["checksum"]) == 8
    assert hist["versions"][0]["loaded_at"].endswith("+00:00")
    d = ok(handle_message(req("diff", sandbox=sid, module="f", v1=1, v2=2)))
    assert d["added"] == 1 and ["+", "    return '<img src=x onerror=alert(1)>'"] in d["lines"]


def test_rollback_undo_redo(sid):
    for n in (1, 2, 3):
        sm.hot_reload_source(sid, f"def f():\n    return {n}\n")
    r = ok(handle_message(req("rollback", sandbox=sid, module="f", version=1)))
    assert (r["status"], r["old_version"], r["new_version"]) == ("rolled_back", 3, 1)
    assert sm.get_sandbox(sid).f() == 1
    assert ok(handle_message(req("undo", sandbox=sid, module="f")))["new_version"] == 3
    assert ok(handle_message(req("redo", sandbox=sid, module="f")))["new_version"] == 1
    err = handle_message(req("redo", sandbox=sid, module="f"))
    assert err["error"]["code"] == "nothing_to_do"


def test_errors_have_codes_and_echo_the_id(sid):
    cases = {
        "bad_message": ["nope", [1, 2], {"protocol": 1, "id": [1], "method": "list"}],
        "unsupported_protocol": [{"protocol": 2, "id": 1, "method": "list"},
                                 {"protocol": True, "id": 1, "method": "list"}],
        "unknown_method": [req("drop_tables"), req(None)],
        "bad_params": [req("history", sandbox=sid), req("history", sandbox=sid, module="f",
                                                         extra=1),
                       req("rollback", sandbox=sid, module="f", version=True),
                       req("rollback", sandbox=sid, module="f", version="1"),
                       req("history", sandbox="../etc", module="f"),
                       {"protocol": 1, "id": 3, "method": "list", "params": []}],
        "not_found": [req("history", sandbox="nosuch", module="f"),
                      req("history", sandbox=sid, module="nomodule")],
        "too_large": [req("list", pad="x" * (MAX_MESSAGE + 1))],
    }
    for code, messages in cases.items():
        for m in messages:
            reply = handle_message(m)
            assert reply["ok"] is False and reply["protocol"] == 1
            assert reply["error"]["code"] == code, (m if len(str(m)) < 200 else code, reply)
    assert handle_message(req("history", rid="abc", sandbox="nosuch", module="f"))["id"] == "abc"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12)
params = st.dictionaries(st.sampled_from(["sandbox", "module", "version", "v1", "v2", "x"]),
                         json_values | st.sampled_from(["fz", "f", 1, 2, 0, -1]), max_size=5)
messages = st.one_of(
    json_values,
    st.fixed_dictionaries({"protocol": st.sampled_from([1, 2, "1", None, True]),
                           "id": json_values,
                           "method": st.sampled_from(sorted(METHODS) + ["", "eval", None]),
                           "params": params | json_values}),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages)
def test_fuzzed_messages_never_raise_and_change_nothing_unless_valid(msg):
    if "fz" not in {s.id for s in sm.list_sandboxes()}:
        sm.create_sandbox("fz")
        for n in (1, 2, 3):
            sm.hot_reload_source("fz", f"def f():\n    return {n}\n")
    before = sm.get_module_version("fz", "f")
    reply = handle_message(msg)
    assert reply["protocol"] == 1 and isinstance(reply["ok"], bool)
    if not reply["ok"]:
        assert set(reply["error"]) == {"code", "message"}
        assert sm.get_module_version("fz", "f") == before
    else:
        assert msg["method"] in METHODS


def test_hub_replies_and_pushes_events(sid):
    sent = []

    class FakeComm:
        def __init__(self):
            self.handlers = {}

        def on_msg(self, fn):
            self.handlers["msg"] = fn

        def on_close(self, fn):
            self.handlers["close"] = fn

        def send(self, data):
            sent.append(data)

    hub = CommHub()
    comm = FakeComm()
    hub.opened(comm, {})
    sm.api.listeners.append(hub.push)
    try:
        comm.handlers["msg"]({"content": {"data": req("list", rid=7)}})
        assert sent[-1]["id"] == 7 and sent[-1]["ok"]
        comm.handlers["msg"]({"content": {}})
        assert sent[-1]["ok"] is False
        sm.hot_reload_source(sid, "def g():\n    return 1\n")
        assert sent[-1] == {"protocol": 1, "event": "changed", "kind": "reloaded",
                            "sandbox": sid, "module": "g", "version": 1}
        comm.handlers["close"]({})
        n = len(sent)
        sm.hot_reload_source(sid, "def g():\n    return 2\n")
        assert len(sent) == n
    finally:
        sm.api.listeners.remove(hub.push)


def test_sandboxes_only_the_store_has_are_listed_read_and_restored_on_change(listing_store):
    sm.create_sandbox("cold")
    for n in (1, 2, 3):
        sm.hot_reload_source("cold", f"def f():\n    return {n}\n")
    sm.destroy_sandbox("cold")            # a kernel restart: the history stays in the store
    try:
        listed = ok(handle_message(req("list")))["sandboxes"]
        assert {"id": "cold", "modules": {}, "stored_modules": {"f": 3},
                "loaded": False} in entries(listed)
        hist = ok(handle_message(req("history", sandbox="cold", module="f")))
        assert [(v["version"], v["current"]) for v in hist["versions"]] == \
            [(3, True), (2, False), (1, False)]
        d = ok(handle_message(req("diff", sandbox="cold", module="f", v1=2, v2=3)))
        assert d["lines"] == [[" ", "def f():"], ["-", "    return 2"], ["+", "    return 3"]]
        assert "cold" not in {s.id for s in sm.list_sandboxes()}    # reading loaded nothing
        err = handle_message(req("rollback", sandbox="cold", module="f", version=9))
        assert err["error"]["code"] == "not_found" and "cold" not in {
            s.id for s in sm.list_sandboxes()}                      # refused before restoring
        r = ok(handle_message(req("undo", sandbox="cold", module="f")))
        assert (r["restored"], r["old_version"], r["new_version"]) == ({"f": 3}, 3, 2)
        assert sm.get_sandbox("cold").f() == 2
        listed = ok(handle_message(req("list")))["sandboxes"]
        assert {"id": "cold", "modules": {"f": 2}, "stored_modules": {},
                "loaded": True} in entries(listed)
        assert ok(handle_message(req("redo", sandbox="cold", module="f")))["restored"] == {}
    finally:
        if "cold" in {s.id for s in sm.list_sandboxes()}:
            sm.destroy_sandbox("cold")


def test_history_says_where_versions_came_from_and_what_undo_and_redo_reach(sid):
    from sandbox_magic.jupyter import activity
    activity.listen()
    for n in range(1, 5):
        sm.hot_reload_source(sid, f"def f():\n    return {n}\n")
    sm.rollback_module(sid, "f", 2)
    sm.undo(sid, "f")
    hist = ok(handle_message(req("history", sandbox=sid, module="f")))
    origins = {v["version"]: v["origin"] for v in hist["versions"]}
    assert origins == {4: "undo", 3: "api", 2: "rollback", 1: "api"}
    assert all(v["origin_at"].endswith("+00:00") for v in hist["versions"])
    assert (hist["undo_to"], hist["redo_to"]) == (3, 2)
    assert (hist["dropped"], hist["max_versions"], hist["failed"]) == (0, 10, [])


def test_history_counts_versions_dropped_by_retention(new_id):
    sm.create_sandbox(new_id, max_versions=3)
    for n in range(1, 9):
        sm.hot_reload_source(new_id, f"def f():\n    return {n}\n")
    hist = ok(handle_message(req("history", sandbox=new_id, module="f")))
    assert [v["version"] for v in hist["versions"]] == [8, 7, 6]
    assert (hist["dropped"], hist["max_versions"]) == (5, 3)
    assert hist["undo_to"] == 7 and hist["redo_to"] is None


def test_history_lists_failed_attempts_newest_first(sid):
    from sandbox_magic.jupyter import activity
    sm.hot_reload_source(sid, "def f():\n    return 1\n")
    activity.record_failure(sid, "f", "first failure")
    activity.record_failure(sid, "f", "x" * 2000, state_handler="mig")
    hist = ok(handle_message(req("history", sandbox=sid, module="f")))
    assert [f["message"][:5] for f in hist["failed"]] == ["xxxxx", "first"]
    assert len(hist["failed"][0]["message"]) <= activity.MAX_MESSAGE
    assert hist["failed"][0]["state_handler"] == "mig"
    assert hist["failed"][0]["at"].endswith("+00:00")
    sm.destroy_sandbox(sid)
    assert activity.failures(sid, "f") == []


def test_probe_gives_each_version_a_value_and_touches_nothing(sid):
    for n in (1, 2, 3):
        sm.hot_reload_source(sid, f"def f(x):\n    return x * {n} if {n} != 2 else 1 / 0\n")
    r = ok(handle_message(req("probe", sandbox=sid, module="f", expr="f(10)")))
    assert r["expr"] == "f(10)"
    assert [(v["version"], v["value"], v["error"]) for v in r["values"]] == [
        (3, "30", False), (2, "ZeroDivisionError: division by zero", True), (1, "10", False)]
    assert sm.get_module_version(sid, "f") == 3 and sm.get_sandbox(sid).f(1) == 3
    long = ok(handle_message(req("probe", sandbox=sid, module="f", expr="'x' * 5000")))
    assert all(len(v["value"]) <= 200 for v in long["values"])


def test_probe_refuses_what_is_not_an_expression(sid):
    sm.hot_reload_source(sid, "def f():\n    return 1\n")
    for expr in ["", "   ", "import os", "x = 1", "f(" * 3, 7, "1" * 3000]:
        err = handle_message(req("probe", sandbox=sid, module="f", expr=expr))
        assert not err["ok"] and err["error"]["code"] == "bad_params", expr
    err = handle_message(req("probe", sandbox="nope", module="f", expr="1"))
    assert err["error"]["code"] == "not_found"


def test_cells_that_ran_sandbox_code_are_pushed_and_listed(sid):
    from sandbox_magic.engine.provenance import RUNS, CellRun, RanModule

    sent = []

    class FakeComm:
        def on_msg(self, fn):
            self.msg = fn

        def on_close(self, fn):
            pass

        def send(self, data):
            sent.append(data)

    hub = CommHub()
    comm = FakeComm()
    hub.opened(comm, {})
    run = CellRun(4, "cell-abc", (RanModule(sid, "m", 2),), 0.0, 1.0)
    RUNS.append(run)
    try:
        hub.push_ran(run)
        assert sent[-1] == {"protocol": 1, "event": "ran", "execution_count": 4,
                            "cell_id": "cell-abc",
                            "modules": [{"sandbox": sid, "module": "m", "version": 2}]}
        comm.msg({"content": {"data": req("ran", rid=3)}})
        assert sent[-1]["result"]["runs"][-1] == run.to_dict()
        assert handle_message(req("ran", extra=1))["error"]["code"] == "bad_params"
        reload_cell = CellRun(5, "cell-def", (RanModule(sid, "m", 3),), 0.0, 1.0, True)
        RUNS.append(reload_cell)
        n = len(sent)
        hub.push_ran(reload_cell)                 # loading versions makes no output: no badge
        assert len(sent) == n
        assert all(r["cell_id"] != "cell-def" for r in ok(handle_message(req("ran")))["runs"])
        RUNS.remove(reload_cell)
    finally:
        RUNS.remove(run)
