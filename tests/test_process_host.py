"""Sandboxes in a child kernel: proxies, reloads and state there, faults kept there."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import src

import sandbox_magic as sm

COUNTER = src("""
    import os
    class Counter:
        def __init__(self, start=0):
            self.n = start
        def inc(self):
            self.n += STEP
            return self.n
    STEP = 1
    def pid():
        return os.getpid()
    def fail():
        raise KeyError("missing")
    """)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:    # a zombie is gone too
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def proc():
    """One process sandbox for the tests that do not break it (starting one takes ~1 s)."""
    sm.create_sandbox("px", host="process", call_timeout=10)
    sm.hot_reload_source("px", COUNTER, module="counter")
    yield "px"
    sm.destroy_sandbox("px")


def test_code_runs_in_the_child_and_objects_keep_living_there(proc):
    sb = sm.get_sandbox(proc)
    assert sm.get_sandbox_info(proc).host == "process"
    assert sb.pid() != os.getpid()
    c = sb.Counter(5)
    assert isinstance(c, sm.RemoteObject)
    assert c.inc() == 6 and c.n == 6
    c.n = 40
    assert c.inc() == 41
    assert "Counter object" in repr(c)
    assert sm.run(proc, "1 + 1") == 2
    assert sm.run(proc, lambda sandbox: sandbox.STEP * 3) == 3


def test_a_reload_switches_live_objects_in_the_child_and_migrates_their_state(proc):
    sb = sm.get_sandbox(proc)
    c = sb.Counter()
    c.inc()
    v = sm.get_module_version(proc, "counter")
    r = sm.hot_reload_source(proc, COUNTER.replace("STEP = 1", "STEP = 10"), module="counter",
                             state_handler=lambda old, ov, nv: {**old, "migrated_to": nv})
    assert r.new_version == v + 1 and r.migrated >= 1
    assert c.inc() == 11 and c.migrated_to == v + 1
    assert [x.version for x in sm.list_module_versions(proc, "counter")][:2] == [v + 1, v]
    sm.rollback_module(proc, "counter", v)
    assert c.inc() == 12                    # the old code again, same object, same state
    sm.undo(proc, "counter")
    assert c.inc() == 22
    assert "STEP = 10" in str(sm.diff_versions(proc, "counter", v, v + 1))
    sm.rollback_module(proc, "counter", v)


def test_exceptions_come_back_with_their_type_and_the_childs_traceback(proc):
    sb = sm.get_sandbox(proc)
    with pytest.raises(KeyError, match="missing") as info:
        sb.fail()
    assert "in fail" in info.value.remote_traceback
    custom = "class Oops(Exception):\n    pass\ndef boom():\n    raise Oops('no way')\n"
    sm.hot_reload_source(proc, custom, module="oops")
    with pytest.raises(sm.RemoteError, match="Oops: no way") as info:
        sb.boom()
    assert "boom" in info.value.remote_traceback


def test_a_failing_reload_in_the_child_changes_nothing(proc):
    sb = sm.get_sandbox(proc)
    c = sb.Counter()
    v = sm.get_module_version(proc, "counter")
    with pytest.raises(sm.ReloadError, match="ZeroDivisionError"):
        sm.hot_reload_source(proc, COUNTER + "1 / 0\n", module="counter")
    with pytest.raises(sm.ReloadError, match="migrat"):
        sm.hot_reload_source(proc, COUNTER.replace("STEP = 1", "STEP = 3"), module="counter",
                             state_handler=lambda old, ov, nv: old["nope"])
    assert sm.get_module_version(proc, "counter") == v
    assert c.inc() == 1


def test_a_dry_run_runs_in_the_child_and_changes_nothing(proc):
    sb = sm.get_sandbox(proc)
    c = sb.Counter()
    c.inc()
    v = sm.get_module_version(proc, "counter")
    d = sm.hot_reload_source(proc, COUNTER.replace("STEP = 1", "STEP = 10"), module="counter",
                             state_handler=lambda old, ov, nv: {**old, "seen": nv},
                             dry_run=True)
    assert not d.refused and d.from_versions == {"counter": v}
    assert d.to_versions == {"counter": v + 1}
    assert any(m.cls == "counter.Counter" and m.added == ("seen",) for m in d.migrations)
    refused = sm.hot_reload_source(proc, COUNTER + "1 / 0\n", module="counter", dry_run=True)
    assert refused.refused and "ZeroDivisionError" in refused.reason
    assert sm.get_module_version(proc, "counter") == v and c.inc() == 2
    assert not hasattr(c, "seen")


def test_a_runaway_loop_is_stopped_by_the_timeout_and_the_sandbox_goes_on(new_id):
    sm.create_sandbox(new_id, host="process", call_timeout=1.0)
    sm.hot_reload_source(new_id, COUNTER + "def spin():\n    while True:\n        pass\n",
                         module="counter")
    sb = sm.get_sandbox(new_id)
    c = sb.Counter()
    c.inc()
    started = time.monotonic()
    with pytest.raises(sm.SandboxTimeout):
        sb.spin()
    assert time.monotonic() - started < 1.0 + sm.hosts.process.ProcessHost.grace + 1
    assert c.inc() == 2                      # interrupted, not killed: the object lives on


def test_a_crash_restarts_the_child_at_the_current_version(new_id):
    sm.create_sandbox(new_id, host="process", call_timeout=10)
    sm.hot_reload_source(new_id, COUNTER, module="counter")
    sm.hot_reload_source(new_id, COUNTER.replace("STEP = 1", "STEP = 7"), module="counter")
    sb = sm.get_sandbox(new_id)
    c = sb.Counter()
    first = sb.pid()
    with pytest.raises(sm.SandboxCrashedError, match="died"):
        sm.run(new_id, "import os; os.abort()")
    assert not _alive(first)
    with pytest.raises(sm.StaleObjectError):
        c.inc()
    assert sb.pid() != first
    assert sb.Counter().inc() == 7           # v2 came back, not v1
    assert sm.get_module_version(new_id, "counter") == 2


def test_the_readme_memory_limit_starts_and_a_too_small_one_says_what_is_needed(new_id):
    """memory_limit bounds data memory (RLIMIT_DATA), which a started kernel uses
    ~140 MB of; the address space it maps (~800 MB) would not let it start under 512M."""
    before = set(_children())
    with pytest.raises(sm.SandboxError) as info:
        sm.create_sandbox(new_id, host="process", memory_limit="64M")
    message = str(info.value)
    assert "\n" not in message and "memory_limit 64 MB is too small" in message
    assert "give at least" in message and new_id not in {s.id for s in sm.list_sandboxes()}
    assert set(_children()) <= before              # the child that could not start is gone
    sm.create_sandbox(new_id, host="process", memory_limit="512M", cpu_limit=60,
                      call_timeout=5)
    sm.hot_reload_source(new_id, COUNTER, module="counter")
    c = sm.get_sandbox(new_id).Counter()
    assert c.inc() == 1
    with pytest.raises(MemoryError):
        sm.run(new_id, "b = bytearray(600 << 20)")
    assert c.inc() == 2                           # the child went on


def _children():
    """Live child processes of this one."""
    me = str(os.getpid())
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[1] == me and fields[0] != "Z":
                out.append(int(pid))
    return out


def test_a_memory_limit_breach_stays_in_the_child(new_id):
    sm.create_sandbox(new_id, host="process", memory_limit="1G", call_timeout=20)
    sm.hot_reload_source(new_id, "def hog():\n    return len(bytearray(4 << 30))\n",
                         module="hog")
    with pytest.raises((MemoryError, sm.SandboxCrashedError)):
        sm.get_sandbox(new_id).hog()
    assert sm.run(new_id, "2 * 21") == 42


def test_destroying_the_sandbox_leaves_no_child_process(new_id):
    sm.create_sandbox(new_id, host="process")
    pid = sm.api.get_host(new_id).pid
    assert pid and _alive(pid)
    sm.destroy_sandbox(new_id)
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)


def test_no_child_process_outlives_the_parent(tmp_path):
    code = textwrap.dedent("""
        import sandbox_magic as sm
        sm.create_sandbox("orphan", host="process")
        print(sm.api.get_host("orphan").pid, flush=True)
        import os
        os._exit(0)          # no clean shutdown: the child must still go away
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "SANDBOX_MAGIC_STORE": ":memory:"})
    assert out.returncode == 0, out.stderr
    pid = int(out.stdout.split()[0])
    deadline = time.monotonic() + 20
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid)


def test_the_magic_creates_a_process_sandbox(new_id, capsys):
    from IPython import get_ipython
    from IPython.testing.globalipapp import start_ipython
    ip = start_ipython() or get_ipython()
    ip.run_line_magic("load_ext", "sandbox_magic")
    ip.run_line_magic("sandbox_create", f"{new_id} --process --timeout 5 --memory 2G")
    assert f"created in process {sm.api.get_host(new_id).pid}" in capsys.readouterr().out
    ip.run_cell_magic("sandbox_reload", f"{new_id} m", "def where():\n    import os\n"
                                                      "    return os.getpid()\n")
    assert sm.get_sandbox(new_id).where() == sm.api.get_host(new_id).pid
    with pytest.raises(sm.SandboxError, match="need --process"):
        ip.run_line_magic("sandbox_create", "other --timeout 5")


def test_servers_run_in_the_child(proc):
    sm.hot_reload_source(proc, src("""
        import os
        from sandbox_magic import Server
        class Ticker(Server):
            def init(self, start):
                return {"n": start}
            def handle_call(self, request, state):
                if request == "pid":
                    return os.getpid(), state
                state = {**state, "n": state["n"] + 1}
                return state["n"], state
        """), module="ticker")
    ref = sm.start_server(proc, "Ticker", 41, name="ticker")
    assert ref.call("tick") == 42
    assert sm.get_server(proc, "ticker").call("pid") == sm.api.get_host(proc).pid
    assert len(sm.list_servers(proc)) == 1
    ref.stop()


def test_the_notebooks_interrupt_stops_the_childs_work(new_id):
    import signal
    import threading
    sm.create_sandbox(new_id, host="process", call_timeout=60)
    sm.hot_reload_source(new_id, COUNTER + "def spin():\n    while True:\n        pass\n",
                         module="counter")
    sb = sm.get_sandbox(new_id)
    c = sb.Counter()
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        timer.start()
        sb.spin()
    timer.join()
    assert time.monotonic() - started < 10
    assert c.inc() == 1                      # the child was interrupted, not restarted


def test_a_cpu_limit_breach_kills_only_the_child(new_id):
    sm.create_sandbox(new_id, host="process", cpu_limit=1, call_timeout=30)
    sm.hot_reload_source(new_id, "def spin():\n    while True:\n        pass\n", module="m")
    with pytest.raises(sm.SandboxCrashedError):
        sm.get_sandbox(new_id).spin()
    assert sm.run(new_id, "6 * 7") == 42


def test_too_many_crashes_give_up_with_a_clear_error(new_id):
    sm.create_sandbox(new_id, host="process", call_timeout=30)
    host = sm.api.get_host(new_id)
    host.max_restarts = 1
    for _ in range(2):
        with pytest.raises(sm.SandboxCrashedError):
            sm.run(new_id, "import os; os._exit(3)")
    with pytest.raises(sm.SandboxCrashedError, match="not restarted again"):
        sm.run(new_id, "1")
    sm.destroy_sandbox(new_id)


def test_the_panels_show_a_process_sandbox(proc):
    from sandbox_magic.jupyter.comm import handle_message
    reply = handle_message({"protocol": 1, "id": 1, "method": "list", "params": {}})
    entry = next(s for s in reply["result"]["sandboxes"] if s["id"] == proc)
    assert "counter" in entry["modules"]
    hist = handle_message({"protocol": 1, "id": 2, "method": "history",
                           "params": {"sandbox": proc, "module": "counter"}})
    assert hist["ok"] and hist["result"]["versions"]
