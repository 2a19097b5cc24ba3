"""A reload is all or nothing under interrupts, exits and other threads.

Each step of the reload machinery gets a KeyboardInterrupt or SystemExit
injected, one after another; afterwards the sandbox must run the old version
exactly as before (code, recorded version, migrated state, server not left
suspended, ``sys.modules``, sibling-import overlay) and the next reload must
go through.  Interrupts also arrive at random moments, as the kernel's
interrupt button sends them.
"""

from __future__ import annotations

import _thread
import pickle
import random
import sys
import threading
import time

import pytest
from conftest import src

import sandbox_magic as sm
from sandbox_magic.engine import patch as _patch
from sandbox_magic.engine import reload as _reload
from sandbox_magic.engine import sandbox as _sandbox
from sandbox_magic.engine import versions as _versions
from sandbox_magic.live import migration as _live
from sandbox_magic.live import server as _server

V1 = src("""
    from sandbox_magic import Server
    VERSION = 1
    def f():
        return VERSION
    class Box:
        def __init__(self):
            self.n = 0
        def get(self):
            return ("v1", self.n)
    class Ctr(Server):
        def init(self):
            return {"n": 0}
        def handle_call(self, request, state):
            return ("v1", state["n"]), state
    """)
V2 = V1.replace("v1", "v2").replace("VERSION = 1", "VERSION = 2")


def _handler(old, old_v, new_v):
    return {**old, "extra": new_v}


STEPS = [
    (_reload.Transaction, "plan"), (_reload.Transaction, "stage"),
    (_reload.Transaction, "pair"), (_reload.Transaction, "prepare"),
    (_reload.Transaction, "commit"), (_reload.Transaction, "record"),
    (_patch.Patcher, "pair_module"), (_patch.Patcher, "check_classes"),
    (_patch.Patcher, "commit"), (_patch.Patcher, "tr"),
    (_live.LiveState, "before_commit"), (_live.LiveState, "commit_ops"),
    (_live.LiveState, "after_commit"),
    (_sandbox.SandboxState, "register_module"), (_sandbox.SandboxState, "new_module"),
    (_sandbox.SandboxState, "install_overlay"),
    (_versions.ModuleHistory, "add"), (_versions.ModuleHistory, "retain"),
    (_versions.VersionStore, "save"),
    (_server.ServerProcess, "suspend"),
]


def _setup(sid):
    sm.hot_reload_source(sid, V1, module="m")
    sb = sm.get_sandbox(sid)
    boxes = [sb.Box() for _ in range(3)]
    for i, b in enumerate(boxes):
        b.n = i
    server = sm.start_server(sid, "Ctr", name="ctr")
    return sb, boxes, server


def _assert_v1(sid, sb, boxes, server):
    state = sm.api.get_state(sid)
    m = sb.modules["m"]
    assert m.f() == 1 and m.VERSION == 1
    assert sm.get_module_version(sid, "m") == 1
    assert [v.version for v in sm.list_module_versions(sid, "m")] == [1]
    assert [b.get() for b in boxes] == [("v1", 0), ("v1", 1), ("v1", 2)]
    assert all("extra" not in vars(b) for b in boxes)
    assert server.call("x", timeout=2) == ("v1", 0)       # not left suspended
    assert sys.modules[m.__name__] is m
    assert state._overlay == {} and state._overlay_threads == set()
    assert "__getattribute__" not in vars(type(boxes[0]))


def _assert_v2(sid, sb, boxes, server):
    assert sb.modules["m"].f() == 2
    assert sm.get_module_version(sid, "m") == 2
    assert [b.get() for b in boxes] == [("v2", 0), ("v2", 1), ("v2", 2)]
    assert all(vars(b)["extra"] == 2 for b in boxes)
    assert server.call("x", timeout=2) == ("v2", 0)


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("owner,name", STEPS, ids=[f"{o.__name__}.{n}" for o, n in STEPS])
def test_exception_injected_at_each_step_changes_nothing(sid, monkeypatch, owner, name, when,
                                                        exc):
    sb, boxes, server = _setup(sid)
    real = getattr(owner, name)
    hits = []

    def injected(*args, **kwargs):
        if hits:
            return real(*args, **kwargs)
        hits.append(1)
        if when == "before":
            raise exc()
        real(*args, **kwargs)
        raise exc()

    monkeypatch.setattr(owner, name, injected)
    with pytest.raises((exc, sm.ReloadError)):
        sm.hot_reload_source(sid, V2, module="m", state_handler=_handler)
    assert hits, f"{owner.__name__}.{name} was not reached"
    monkeypatch.undo()
    _assert_v1(sid, sb, boxes, server)
    sm.hot_reload_source(sid, V2, module="m", state_handler=_handler)
    _assert_v2(sid, sb, boxes, server)


def test_sys_exit_in_a_module_body_is_a_reload_error(sid):
    sb, boxes, server = _setup(sid)
    with pytest.raises(sm.ReloadError) as info:
        sm.hot_reload_source(sid, V2 + "import sys\nsys.exit(3)\n", module="m")
    assert info.value.step == "execute" and "SystemExit" in str(info.value)
    _assert_v1(sid, sb, boxes, server)


def test_sys_exit_in_a_state_handler_is_a_reload_error(sid):
    sb, boxes, server = _setup(sid)

    def leaving(old, ov, nv):
        sys.exit(1)
    with pytest.raises(sm.ReloadError) as info:
        sm.hot_reload_source(sid, V2, module="m", state_handler=leaving)
    assert info.value.step == "migrate"
    _assert_v1(sid, sb, boxes, server)


def test_interrupt_during_a_long_module_body_refuses_the_reload(sid):
    sb, boxes, server = _setup(sid)
    timer = threading.Timer(0.2, _thread.interrupt_main)
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        sm.hot_reload_source(sid, V2 + "import time\nfor _ in range(100):\n"
                                       "    time.sleep(0.05)\n", module="m",
                             state_handler=_handler)
    timer.join()
    _assert_v1(sid, sb, boxes, server)


def test_interrupts_at_random_moments_leave_a_consistent_sandbox(sid):
    """The interrupt button pressed at random while reloads run back to back."""
    sb, boxes, server = _setup(sid)
    rng = random.Random(7)
    sources = {1: V1, 2: V2}
    interrupted = 0
    deadline = time.monotonic() + 8
    i = 0
    while time.monotonic() < deadline and i < 400:
        i += 1
        target = 2 if sm.get_module_version(sid, "m") == 1 else 1
        delay = rng.uniform(0, 0.004)
        timer = threading.Timer(delay, _thread.interrupt_main)
        try:
            try:
                timer.start()     # inside the try: the interrupt may come at once
                sm.hot_reload_source(sid, sources[target], module="m",
                                     state_handler=_handler)
            finally:
                timer.join()
        except KeyboardInterrupt:
            interrupted += 1
        except sm.ReloadError:
            pass
        # whatever happened: the running code is the recorded version
        v = sm.get_module_version(sid, "m")
        assert sb.modules["m"].f() == v
        assert {b.get()[0] for b in boxes} == {f"v{v}"}
        assert server.call("x", timeout=2)[0] == f"v{v}"
        state = sm.api.get_state(sid)
        assert state._overlay == {}
        assert "__getattribute__" not in vars(type(boxes[0]))
    assert interrupted > 0


def test_other_threads_can_pickle_instances_while_a_body_runs(sid):
    sb, boxes, server = _setup(sid)
    errors, done = [], threading.Event()

    def pickler():
        while not done.is_set():
            try:
                pickle.loads(pickle.dumps(boxes[1]))
            except Exception as exc:
                errors.append(exc)
                return

    t = threading.Thread(target=pickler)
    t.start()
    try:
        sm.hot_reload_source(sid, V2 + "import time\ntime.sleep(0.3)\n", module="m")
    finally:
        done.set()
        t.join()
    assert errors == []


COUNTER_V1 = src("""
    class Acc:
        def __init__(self):
            self.count = 0
        def bump(self):
            self.count += 1
        def check(self):
            return self.count
    """)


def test_writes_during_a_migration_are_never_lost(sid):
    """Threads keep writing while instances migrate; no increment may vanish."""
    sm.hot_reload_source(sid, COUNTER_V1, module="acc")
    sb = sm.get_sandbox(sid)
    objs = [sb.Acc() for _ in range(2000)]
    stop = threading.Event()
    done = [0, 0, 0]
    errors = []

    def writer(k):
        # each writer its own objects: `self.count += 1` from two threads on one
        # object can lose an update by itself (a thread switch between the read
        # and the write), reload or not
        mine = objs[k::3]
        i = 0
        while not stop.is_set():
            mine[i % len(mine)].bump()
            done[k] += 1
            i += 1

    def reader():
        while not stop.is_set():
            try:
                for o in objs[:50]:
                    o.check()
            except Exception as exc:
                errors.append(exc)
                return

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(3)]
    threads.append(threading.Thread(target=reader))
    for t in threads:
        t.start()
    try:
        for v in range(2, 12):
            # v(n) needs the migrated attribute: new code on an old state would fail
            body = COUNTER_V1.replace("return self.count", f"return self.count + self.m{v} * 0")
            sm.hot_reload_source(sid, body, module="acc",
                                 state_handler=lambda old, ov, nv: {**old, f"m{nv}": 0})
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    assert sum(o.count for o in objs) == sum(done)


CLEANUP = [(_reload.Transaction, "rollback"), (_patch.Patcher, "revert"),
           (_live.LiveState, "rollback"), (_live.LiveState, "finish")]


@pytest.mark.parametrize("owner,name", CLEANUP, ids=[f"{o.__name__}.{n}" for o, n in CLEANUP])
def test_interrupt_while_a_refused_reload_cleans_up_is_held_back(sid, monkeypatch, owner, name):
    """The interrupt button pressed while a failed reload puts everything back."""
    sb, boxes, server = _setup(sid)
    real_cleanup = getattr(owner, name)
    real_record = _reload.Transaction.record

    def failing_record(self):
        real_record(self)
        raise sm.ReloadError("refused for the test", step="record")

    def cleanup(*args, **kwargs):
        _thread.interrupt_main()          # SIGINT as the kernel sends it
        return real_cleanup(*args, **kwargs)

    monkeypatch.setattr(_reload.Transaction, "record", failing_record)
    monkeypatch.setattr(owner, name, cleanup)
    with pytest.raises((KeyboardInterrupt, sm.ReloadError)):
        sm.hot_reload_source(sid, V2, module="m", state_handler=_handler)
    monkeypatch.undo()
    _assert_v1(sid, sb, boxes, server)


def test_interrupt_during_bookkeeping_after_the_commit_is_delivered_once_recorded(sid,
                                                                                  monkeypatch):
    sb, boxes, server = _setup(sid)
    real = _reload.Transaction.record

    def record(self):
        _thread.interrupt_main()
        return real(self)

    monkeypatch.setattr(_reload.Transaction, "record", record)
    with pytest.raises(KeyboardInterrupt):
        sm.hot_reload_source(sid, V2, module="m", state_handler=_handler)
    monkeypatch.undo()
    _assert_v2(sid, sb, boxes, server)       # applied and recorded, then interrupted
