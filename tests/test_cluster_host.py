"""One sandbox on every engine of a local ipyparallel cluster: two-phase, all or nothing."""

from __future__ import annotations

import ipyparallel as ipp
import pytest
from conftest import src

import sandbox_magic as sm
from sandbox_magic.hosts import engine_side

V1 = src("""
    import os
    class Counter:
        def __init__(self):
            self.n = 0
        def inc(self):
            self.n += STEP
            return self.n
    STEP = 1
    if os.environ.get("SANDBOX_TEST_REFUSE"):
        raise RuntimeError("this engine refuses")
    """)


@pytest.fixture(scope="module")
def client():
    cluster = ipp.Cluster(n=2, log_level=40)
    rc = cluster.start_and_connect_sync()
    rc.wait_for_engines(2, timeout=60)
    yield rc
    cluster.stop_cluster_sync()


@pytest.fixture
def csb(client, new_id):
    sm.create_sandbox(new_id, host=client, call_timeout=30, max_versions=None)
    sm.hot_reload_source(new_id, V1, module="counter")
    sm.run(new_id, "HELD = Counter()\nHELD.inc()")
    yield new_id


def _on_engines(client, sid, code):
    return sm.api.get_host(sid).run(code, None)


def test_a_reload_reaches_every_engine_and_their_live_objects(client, csb):
    info = sm.get_sandbox_info(csb)
    assert info.host == "cluster" and info.engines == tuple(client.ids)
    r = sm.hot_reload_source(csb, V1.replace("STEP = 1", "STEP = 10"), module="counter",
                             state_handler=lambda old, ov, nv: {**old, "seen": nv})
    assert r.new_version == 2 and r.migrated == 1
    assert [e["engine"] for e in r.engines] == list(client.ids)
    assert all(e["outcome"] == "committed" for e in r.engines)
    assert _on_engines(client, csb, "HELD.inc(), HELD.seen") == {e: (11, 2) for e in client.ids}
    assert [v.version for v in sm.list_module_versions(csb, "counter")] == [2, 1]
    sm.rollback_module(csb, "counter", 1)
    assert _on_engines(client, csb, "HELD.inc()") == {e: 12 for e in client.ids}


def test_one_engine_refusing_changes_no_engine(client, csb):
    refuser = client.ids[-1]
    client[refuser].execute("import os; os.environ['SANDBOX_TEST_REFUSE'] = '1'", block=True)
    try:
        with pytest.raises(sm.ReloadError, match=f"engine {refuser}.*refuses") as info:
            sm.hot_reload_source(csb, V1.replace("STEP = 1", "STEP = 5"), module="counter")
        assert info.value.step == "prepare"
    finally:
        client[refuser].execute("import os; os.environ.pop('SANDBOX_TEST_REFUSE', None)",
                                block=True)
    assert sm.get_module_version(csb, "counter") == 1
    assert _on_engines(client, csb, "HELD.inc()") == {e: 2 for e in client.ids}


def test_a_dry_run_asks_every_engine_and_changes_none(client, csb):
    edit = V1.replace("STEP = 1", "STEP = 5")
    d = sm.hot_reload_source(csb, edit, module="counter", dry_run=True)
    assert not d.refused and d.to_versions == {"counter": 2}
    refuser = client.ids[-1]
    client[refuser].execute("import os; os.environ['SANDBOX_TEST_REFUSE'] = '1'", block=True)
    try:
        d = sm.hot_reload_source(csb, edit, module="counter", dry_run=True)
    finally:
        client[refuser].execute("import os; os.environ.pop('SANDBOX_TEST_REFUSE', None)",
                                block=True)
    assert d.refused and f"engine {refuser}" in d.reason and "refuses" in d.reason
    assert sm.get_module_version(csb, "counter") == 1
    assert _on_engines(client, csb, "HELD.inc()") == {e: 2 for e in client.ids}


def test_a_commit_failing_on_one_engine_rolls_back_the_others(client, csb):
    failer = client.ids[0]

    def switch(on):
        client[failer].execute("from sandbox_magic.hosts import engine_side\n"
                               f"engine_side.FAIL_COMMIT = {on}", block=True)

    switch(True)
    try:
        with pytest.raises(sm.ReloadError, match="rolled back") as info:
            sm.hot_reload_source(csb, V1.replace("STEP = 1", "STEP = 7"), module="counter")
        assert info.value.step == "commit"
    finally:
        switch(False)
    assert sm.get_module_version(csb, "counter") == 1
    assert _on_engines(client, csb, "HELD.inc(), STEP") == {e: (2, 1) for e in client.ids}


def test_an_engine_that_lost_the_sandbox_catches_up(client, csb):
    sm.hot_reload_source(csb, V1.replace("STEP = 1", "STEP = 3"), module="counter")
    late = client.ids[-1]
    client[late].apply_sync(engine_side.destroy, csb)       # as a restarted engine would be
    outcomes = sm.sync_sandbox(csb)
    assert {o["engine"]: o["outcome"] for o in outcomes}[late] == "committed"
    assert _on_engines(client, csb, "Counter().inc()") == {e: 3 for e in client.ids}
    assert sm.get_module_version(csb, "counter") == 2       # no version recorded by a sync


def test_bad_hosts_are_clear_errors(new_id):
    with pytest.raises(sm.SandboxError, match="unknown host"):
        sm.create_sandbox(new_id, host="nowhere")
    with pytest.raises(sm.SandboxError, match="Client or DirectView"):
        sm.create_sandbox(new_id, host=42)


def test_the_magic_says_what_to_do_without_a_cluster(new_id):
    from IPython import get_ipython
    from IPython.testing.globalipapp import start_ipython
    ip = start_ipython() or get_ipython()
    ip.run_line_magic("load_ext", "sandbox_magic")
    with pytest.raises(sm.SandboxError, match="ipcluster start"):
        ip.run_line_magic("sandbox_create", f"{new_id} --cluster nosuchprofile")
    with pytest.raises(sm.SandboxError, match="--targets and --timeout only"):
        ip.run_line_magic("sandbox_create", f"{new_id} --cluster --process")


def test_the_panels_list_a_cluster_sandbox_with_its_engines(client, csb):
    from sandbox_magic.jupyter.comm import handle_message
    reply = handle_message({"protocol": 1, "id": 1, "method": "list", "params": {}})
    entry = next(s for s in reply["result"]["sandboxes"] if s["id"] == csb)
    assert entry["host"] == "cluster" and entry["engines"] == len(client.ids)


def test_without_ipyparallel_the_error_says_how_to_install(monkeypatch):
    import sys

    from sandbox_magic.hosts import cluster
    monkeypatch.setitem(sys.modules, "ipyparallel", None)
    with pytest.raises(sm.SandboxError, match=r"pip install 'sandbox-magic\[cluster\]'"):
        cluster.resolve_view("ipyparallel")


def test_a_silent_engine_is_reported_not_waited_for(client, csb):
    host = sm.api.get_host(csb)
    host.timeout = 1.0
    busy = client.ids[-1]
    client[busy].execute("import time; time.sleep(4)", block=False)
    started = __import__("time").monotonic()
    with pytest.raises(sm.ReloadError, match=f"engine {busy}"):
        sm.hot_reload_source(csb, V1.replace("STEP = 1", "STEP = 9"), module="counter")
    assert __import__("time").monotonic() - started < 3.5
    client[busy].wait(timeout=30)                   # the engine catches up with its queue
    host.timeout = 30
    assert sm.get_module_version(csb, "counter") == 1
    assert _on_engines(client, csb, "HELD.inc(), STEP") == {e: (2, 1) for e in client.ids}


def test_a_failing_check_on_the_engines_changes_no_engine(client, csb):
    with pytest.raises(sm.ReloadError, match="check"):
        sm.hot_reload_source(csb, V1.replace("STEP = 1", "STEP = 4"), module="counter",
                             check="STEP == 1")
    assert sm.get_module_version(csb, "counter") == 1
    assert _on_engines(client, csb, "HELD.inc(), STEP") == {e: (2, 1) for e in client.ids}
