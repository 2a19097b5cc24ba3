"""check=: a reload goes through only if the new code passes the user's check."""

from __future__ import annotations

import pytest
from conftest import src

import sandbox_magic as sm

TAX = src("""
    RATE = 0.1
    class Till:
        def __init__(self):
            self.total = 0
        def ring(self, x):
            self.total += add_tax(x)
            return self.total
    def add_tax(x):
        return round(x * (1 + RATE), 2)
    """)


def test_a_passing_check_lets_the_reload_through(sid):
    sm.hot_reload_source(sid, TAX, module="tax")
    r = sm.hot_reload_source(sid, TAX.replace("0.1", "0.2"), module="tax",
                             check=lambda sb: sb.add_tax(100) == 120)
    assert r.new_version == 2 and sm.get_sandbox(sid).add_tax(10) == 12
    r = sm.hot_reload_source(sid, TAX.replace("0.1", "0.3"), module="tax",
                             check="add_tax(100) == 130")
    assert r.new_version == 3


@pytest.mark.parametrize("check", [lambda sb: sb.add_tax(100) == 110, "add_tax(100) == 110",
                                   lambda sb: 1 / 0])
def test_a_failing_check_changes_nothing(sid, check):
    sm.hot_reload_source(sid, TAX, module="tax")
    sb = sm.get_sandbox(sid)
    till = sb.Till()
    till.ring(10)
    with pytest.raises(sm.ReloadError) as info:
        # both a constant and a function's code change: both must be put back
        sm.hot_reload_source(sid, TAX.replace("0.1", "0.5").replace("1 + RATE", "2 + RATE"),
                             module="tax", check=check,
                             state_handler=lambda old, ov, nv: {**old, "migrated": True})
    assert info.value.step == "check"
    assert sm.get_module_version(sid, "tax") == 1
    assert [v.version for v in sm.list_module_versions(sid, "tax")] == [1]
    assert sb.add_tax(10) == 11.0 and till.ring(10) == 22.0
    assert not hasattr(till, "migrated")            # the migrated state was put back too


def test_the_check_sees_the_new_code_before_it_is_recorded(sid):
    seen = []

    def check(sb):
        seen.append((sb.add_tax(100), sm.get_module_version(sid, "tax")))
        return True
    sm.hot_reload_source(sid, TAX, module="tax")
    sm.hot_reload_source(sid, TAX.replace("0.1", "0.2"), module="tax", check=check)
    assert seen == [(120.0, 1)]       # new code running, version not yet recorded


def test_a_rollback_with_a_failing_check_stays_where_it_was(sid):
    sm.hot_reload_source(sid, TAX, module="tax")
    sm.hot_reload_source(sid, TAX.replace("0.1", "0.2"), module="tax")
    with pytest.raises(sm.ReloadError, match="check"):
        sm.rollback_module(sid, "tax", 1, check="add_tax(100) == 120")
    assert sm.get_module_version(sid, "tax") == 2
    sm.rollback_module(sid, "tax", 1, check="add_tax(100) == 110")
    assert sm.get_module_version(sid, "tax") == 1


def test_a_bad_check_argument_is_a_clear_error(sid):
    with pytest.raises(sm.SandboxError, match="check must be"):
        sm.hot_reload_source(sid, TAX, module="tax", check=42)


def test_the_magic_takes_a_check(new_id, capsys):
    from IPython import get_ipython
    from IPython.testing.globalipapp import start_ipython
    ip = start_ipython() or get_ipython()
    ip.run_line_magic("load_ext", "sandbox_magic")
    ip.run_cell_magic("sandbox_reload", f"{new_id} tax --check 'add_tax(100) == 110'", TAX)
    assert sm.get_module_version(new_id, "tax") == 1
    with pytest.raises(sm.SandboxError, match="check"):
        ip.run_cell_magic("sandbox_reload", f"{new_id} tax --check 'add_tax(100) == 110'",
                          TAX.replace("0.1", "0.7"))
    assert sm.get_module_version(new_id, "tax") == 1


def test_a_check_runs_in_a_process_sandbox(new_id):
    sm.create_sandbox(new_id, host="process", call_timeout=30)
    sm.hot_reload_source(new_id, TAX, module="tax")
    with pytest.raises(sm.ReloadError, match="check"):
        sm.hot_reload_source(new_id, TAX.replace("0.1", "0.5"), module="tax",
                             check=lambda sb: sb.add_tax(100) == 110)
    assert sm.get_module_version(new_id, "tax") == 1
    assert sm.get_sandbox(new_id).add_tax(100) == 110.0


def test_a_refused_api_reload_is_listed_in_the_panels_once(sid):
    from sandbox_magic.jupyter import activity
    from sandbox_magic.jupyter.comm import handle_message
    activity.listen()
    sm.hot_reload_source(sid, TAX, module="tax")

    def failed():
        reply = handle_message({"protocol": 1, "id": 1, "method": "history",
                                "params": {"sandbox": sid, "module": "tax"}})
        return [f["message"] for f in reply["result"]["failed"]]
    with pytest.raises(sm.ReloadError):
        sm.hot_reload_source(sid, TAX.replace("0.1", "0.5"), module="tax",
                             check="add_tax(100) == 110")
    with pytest.raises(sm.CompileError):
        sm.hot_reload_source(sid, TAX + "def broken(:\n", module="tax")
    with pytest.raises(sm.ReloadError):
        sm.hot_reload_source(sid, {"tax": TAX + "1 / 0\n"})
    msgs = failed()
    assert len(msgs) == 3, msgs                     # one entry per attempt, newest first
    assert "division by zero" in msgs[0] and "check" in msgs[2]


def test_other_threads_never_run_code_that_a_check_refuses(sid):
    """The check runs on the staged version before the switch: a thread calling the
    module all along sees only the old code when the check refuses, and the new code
    only once a check passed (and the check itself sees the new code)."""
    import threading
    import time

    sm.hot_reload_source(sid, TAX, module="tax")
    sb = sm.get_sandbox(sid)
    add_tax = sb.add_tax
    seen: set[float] = set()
    stop = threading.Event()

    def caller():
        while not stop.is_set():
            seen.add(add_tax(100))

    t = threading.Thread(target=caller)
    t.start()
    in_check: list[float] = []

    def slow_refusal(handle):
        in_check.append(handle.add_tax(100))
        time.sleep(0.3)           # other threads run meanwhile
        return False

    try:
        with pytest.raises(sm.ReloadError):
            sm.hot_reload_source(sid, TAX.replace("0.1", "0.5"), module="tax",
                                 check=slow_refusal)
        assert in_check == [150.0] and seen == {110.0}
        sm.hot_reload_source(sid, TAX.replace("0.1", "0.2"), module="tax",
                             check=lambda handle: handle.add_tax(100) == 120)
        deadline = time.monotonic() + 5
        while 120.0 not in seen and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        t.join()
    assert seen == {110.0, 120.0}


def test_a_check_names_the_new_modules_and_a_first_load_is_checked_too(new_id):
    sm.create_sandbox(new_id)
    with pytest.raises(sm.ReloadError) as info:
        sm.hot_reload_source(new_id, TAX, module="tax", check="add_tax(100) == 1")
    assert info.value.step == "check" and "tax" not in sm.get_sandbox(new_id).modules
    sm.hot_reload_source(new_id, TAX, module="tax",
                         check=lambda sb: sb.modules["tax"].RATE == 0.1 and sb.tax.RATE == 0.1)
    assert sm.get_module_version(new_id, "tax") == 1
