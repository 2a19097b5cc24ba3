"""Durable history: restarts, compact storage, crash safety, bad store files."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest
from conftest import SCOPE
from hypothesis import given, settings
from hypothesis import strategies as st

import sandbox_magic as sm
from sandbox_magic.engine.store import TAIL_BYTES, TAIL_MAX, SQLiteVersionStore, StoreWarning
from sandbox_magic.engine.versions import VersionRecord, utcnow

ROOT = Path(__file__).resolve().parent.parent


def run_py(code: str, store: Path, timeout: float = 60) -> str:
    """Run ``code`` in a new Python process (a new kernel) on the tests' history scope."""
    env = {**os.environ, "SANDBOX_MAGIC_STORE": str(store)}
    code = f"import sandbox_magic\nsandbox_magic.set_history_scope({SCOPE!r})\n" + \
        textwrap.dedent(code)
    out = subprocess.run([sys.executable, "-c", code], env=env,
                         capture_output=True, text=True, timeout=timeout, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture
def store_path(tmp_path):
    return tmp_path / "h" / "history.sqlite3"


def test_history_survives_a_restart_and_numbering_continues(store_path):
    run_py("""
        import sandbox_magic as sm
        sm.create_sandbox("demo")
        for n in (1, 2, 3):
            sm.hot_reload_source("demo", f"def f():\\n    return {n}\\n")
        sm.hot_reload_source("demo", "def f():\\n    return 4\\n",
                             state_handler=lambda s, o, n: s)
        sm.rollback_module("demo", "f", 2)
    """, store_path)
    out = run_py("""
        import sandbox_magic as sm
        info = sm.create_sandbox("demo")
        print(info.modules, info.stored_modules)
        vs = sm.list_module_versions("demo", "f")
        print([(v.version, v.is_current, v.state_handler) for v in vs])
        print(vs[0].source.strip().splitlines()[-1], vs[0].checksum == sm.compile_source(vs[0].source).artifacts[0].checksum)
        print(sm.restore_sandbox("demo").modules, sm.get_sandbox("demo").f())
        print(sm.undo("demo", "f").new_version, sm.get_sandbox("demo").f())
        print(sm.hot_reload_source("demo", "def f():\\n    return 5\\n").new_version)
    """, store_path).splitlines()
    assert out[0] == "{} {'f': 2}"
    assert out[1] == "[(4, False, '<lambda>'), (3, False, None), (2, True, None), (1, False, None)]"
    assert out[2].strip() == "return 4 True"
    assert out[3] == "{'f': 2} 2"
    assert out[4] == "4 4"
    assert out[5] == "5"


def test_rerunning_a_cell_after_restart_loads_the_stored_version(store_path):
    code = "def g():\n    return 'same'\n"
    run_py(f"import sandbox_magic as sm\nsm.create_sandbox('d')\n"
           f"sm.hot_reload_source('d', {code!r})\nsm.hot_reload_source('d', {code!r}.replace('same', 'x'))",
           store_path)
    out = run_py(f"import sandbox_magic as sm\nsm.create_sandbox('d')\n"
                 f"r = sm.hot_reload_source('d', {code!r})\nprint(r.status, r.new_version, "
                 f"len(sm.list_module_versions('d', 'g')))", store_path)
    assert out.strip() == "reactivated 1 2"      # stored v1 is current again, said so


def test_forget_history_and_destroy_keeps_it_by_default(store_path):
    store = SQLiteVersionStore(store_path)
    sm.create_sandbox("keep", store=store)
    sm.hot_reload_source("keep", "def k():\n    return 1\n")
    sm.destroy_sandbox("keep")
    sm.create_sandbox("keep", store=store)
    assert sm.get_sandbox_info("keep").stored_modules == {"k": 1}
    sm.destroy_sandbox("keep", forget_history=True)
    sm.create_sandbox("keep", store=store)
    assert sm.get_sandbox_info("keep").stored_modules == {}
    sm.destroy_sandbox("keep")


def test_retention_is_persisted(store_path):
    store = SQLiteVersionStore(store_path)
    sm.create_sandbox("ret", store=store, max_versions=3)
    for n in range(8):
        sm.hot_reload_source("ret", f"def r():\n    return {n}\n")
    sm.destroy_sandbox("ret")
    reopened = SQLiteVersionStore(store_path)
    h = reopened.load("ret", scope=SCOPE)["r"]
    assert sorted(h.records) == [6, 7, 8] and h.current == 8 and h.next_version == 9
    assert h.records[6].source == "def r():\n    return 5\n"


def _module(lines: int, edit: int) -> str:
    body = [f"def f{i}(x):\n    return x + {i}  # line {i}\n" for i in range(lines // 2)]
    k = edit % len(body)
    body[k] = body[k].replace(f"x + {k}", f"x + {k} + {edit}")
    return "".join(body)


def test_a_thousand_one_line_edits_cost_at_most_three_copies(tmp_path):
    from sandbox_magic.engine.versions import ModuleHistory
    path = tmp_path / "compact.sqlite3"
    store = SQLiteVersionStore(path)
    h = ModuleHistory("big")
    h.add(sm.compile_source(_module(500, 0), "big").artifacts[0], None)
    store.save("compact", h)
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    empty = path.stat().st_size
    one_copy = len(_module(500, 0).encode())
    for e in range(1, 1001):   # what 1,000 reloads record, without running the code
        h.records[e + 1] = VersionRecord(e + 1, None, utcnow(), None, module="big",
                                         source=_module(500, e))
        h.next_version = e + 2
        h.activate(e + 1)
        store.save("compact", h)
        # while running, the newest versions wait whole in the tail, boundedly
        tail = store.conn.execute("SELECT count(*), coalesce(sum(length(entry)), 0) "
                                  "FROM tail").fetchone()
        assert tail[0] <= TAIL_MAX and tail[1] <= TAIL_BYTES + 2 * one_copy, tail
    store.close()        # what the kernel leaves when it exits: the tail folded into deltas
    grown = path.stat().st_size - empty
    assert grown <= 3 * one_copy, (grown, one_copy)
    back = SQLiteVersionStore(path).load("compact")["big"]
    assert len(back.records) == 1001 and back.current == 1001
    assert back.records[777].source == _module(500, 776)
    assert back.records[1001].source == _module(500, 1000)


def test_a_new_version_is_stored_as_a_delta_from_the_one_before(tmp_path):
    from sandbox_magic.engine.versions import ModuleHistory
    store = SQLiteVersionStore(tmp_path / "delta.sqlite3")
    h = ModuleHistory("big")
    h.add(sm.compile_source(_module(500, 0), "big").artifacts[0], None)
    store.save("d", h)
    for e in (1, 2):
        h.records[e + 1] = VersionRecord(e + 1, None, utcnow(), None, module="big",
                                         source=_module(500, e) + f"# edit {e}\n")
        h.next_version = e + 2
        h.activate(e + 1)
        store.save("d", h)
    rows = store.conn.execute("SELECT version, entry FROM tail ORDER BY version").fetchall()
    sizes = {v: len(entry) for v, entry in rows}
    assert sizes[1] > len(_module(500, 0)) and sizes[2] < 200 and sizes[3] < 200, sizes
    store.close()
    back = SQLiteVersionStore(tmp_path / "delta.sqlite3").load("d")["big"]
    assert back.records[3].source == _module(500, 2) + "# edit 2\n"
    assert back.records[2].source == _module(500, 1) + "# edit 1\n"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["def f():\n", "    x = 1\n", "class A:\n", "\n", "y = 'é'\n",
                                 "# c\n", "import os\n", "    '''\n", "@d\n", "\t\n"]),
                max_size=30),
       st.lists(st.sampled_from(["def g():\n", "    x = 2\n", "\n", "z = '%'\n", "# d\n"]),
                max_size=8),
       st.integers(0, 30), st.integers(0, 8))
def test_quick_deltas_rebuild_the_new_source_exactly(old, inserted, at, removed):
    from sandbox_magic.engine.store import apply_delta, quick_delta
    a = "".join(old)
    b = "".join(old[:at] + inserted + old[at + removed:])
    assert apply_delta(a, quick_delta(a, b)) == b


def test_killing_the_process_mid_reload_never_loses_a_reported_version(tmp_path):
    path = tmp_path / "crash.sqlite3"
    loop = textwrap.dedent("""
        import sys, sandbox_magic as sm
        sm.create_sandbox("crash", max_versions=None)
        n = 0
        while True:
            n += 1
            r = sm.hot_reload_source("crash", "def c():\\n    return %r\\n" % (sys.argv[1] + str(n)))
            print(r.new_version, flush=True)
    """)
    rng = random.Random(1)
    reported: list[int] = []
    env = {**os.environ, "SANDBOX_MAGIC_STORE": str(path)}
    for run in range(20):
        p = subprocess.Popen([sys.executable, "-c", loop, f"run{run}-"], env=env,
                             stdout=subprocess.PIPE, text=True)
        time.sleep(0.4 + rng.random() * 0.4)
        p.send_signal(signal.SIGKILL)
        out, _ = p.communicate()
        reported += [int(x) for x in out.split()]
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    h = SQLiteVersionStore(path).load("crash")["c"]      # a script: the folder scope
    assert reported and set(reported) <= set(h.records)
    assert h.current == max(h.records)


@pytest.mark.parametrize("make_bad", ["directory", "garbage", "newer"])
def test_bad_store_files_warn_and_fall_back_to_memory(tmp_path, make_bad):
    path = tmp_path / "bad.sqlite3"
    if make_bad == "directory":
        path.mkdir()
    elif make_bad == "garbage":
        path.write_bytes(b"this is not a database" * 100)
    else:
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        conn.execute("INSERT INTO meta VALUES ('format', '99')")
        conn.commit()
        conn.close()
    with pytest.warns(StoreWarning) as rec:
        store = SQLiteVersionStore(path)
    if make_bad == "newer":
        assert "newer sandbox_magic" in str(rec[0].message)
    sm.create_sandbox("badstore", store=store)
    try:
        assert sm.hot_reload_source("badstore", "def b():\n    return 1\n").new_version == 1
        assert sm.hot_reload_source("badstore", "def b():\n    return 2\n").new_version == 2
    finally:
        sm.destroy_sandbox("badstore")


def test_a_locked_store_falls_back_without_failing_the_reload(tmp_path):
    path = tmp_path / "locked.sqlite3"
    store = SQLiteVersionStore(path, timeout=0.2)
    sm.create_sandbox("locked", store=store)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.warns(StoreWarning, match="cannot write"):
            r = sm.hot_reload_source("locked", "def l():\n    return 1\n")
        assert r.new_version == 1 and sm.get_sandbox("locked").l() == 1
        assert sm.hot_reload_source("locked", "def l():\n    return 2\n").new_version == 2
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        sm.destroy_sandbox("locked")


def test_a_corrupted_segment_is_a_warning_not_a_crash(tmp_path):
    path = tmp_path / "seg.sqlite3"
    store = SQLiteVersionStore(path)
    sm.create_sandbox("seg", store=store)
    sm.hot_reload_source("seg", "def s():\n    return 1\n")
    sm.destroy_sandbox("seg")
    conn = sqlite3.connect(path)
    conn.execute("UPDATE segments SET data = x'00ff00ff'")
    conn.execute("UPDATE tail SET entry = 'not json'")
    conn.commit()
    conn.close()
    with pytest.warns(StoreWarning, match="cannot read"):
        sm.create_sandbox("seg", store=SQLiteVersionStore(path))
    assert sm.hot_reload_source("seg", "def s():\n    return 2\n").new_version == 1
    sm.destroy_sandbox("seg")


def test_two_processes_sharing_a_store_keep_both_histories(tmp_path):
    path = tmp_path / "shared.sqlite3"
    code = """
        import sys, sandbox_magic as sm
        name = sys.argv[1]
        sm.create_sandbox(name, max_versions=None)
        for n in range(60):
            sm.hot_reload_source(name, "def v():\\n    return %d\\n" % n)
    """
    env = {**os.environ, "SANDBOX_MAGIC_STORE": str(path)}
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), name], env=env,
                              stderr=subprocess.PIPE, text=True)
             for name in ("left", "right")]
    errors = [p.communicate(timeout=60)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert not any("StoreWarning" in e for e in errors), errors
    store = SQLiteVersionStore(path)
    assert store.integrity_check() == "ok"
    for name in ("left", "right"):
        assert len(store.load(name)["v"].records) == 60


def test_default_store_location_and_environment(tmp_path, monkeypatch):
    from sandbox_magic.engine.store import store_from_environment
    monkeypatch.delenv("SANDBOX_MAGIC_STORE", raising=False)
    s = store_from_environment(tmp_path)
    assert s.path == tmp_path / ".sandbox_magic" / "history.sqlite3" and s.path.exists()
    monkeypatch.setenv("SANDBOX_MAGIC_STORE", ":memory:")
    assert not store_from_environment(tmp_path).durable
    monkeypatch.setenv("SANDBOX_MAGIC_STORE", str(tmp_path / "elsewhere.db"))
    assert store_from_environment(tmp_path).path == tmp_path / "elsewhere.db"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        previous = sm.set_default_store(":memory:")
    assert not previous.durable
    monkeypatch.undo()            # else the default store below would be elsewhere.db, for
    sm.set_default_store(None)    # every test after this one


def test_a_batch_reload_writes_every_sandbox_durably(tmp_path):
    path = tmp_path / "batch.sqlite3"
    store = SQLiteVersionStore(path)
    ids = [f"bt{i}" for i in range(6)]
    for i in ids:
        sm.create_sandbox(i, store=store)
    try:
        res = sm.batch_hot_reload(ids, "def b():\n    return 1\n")
        assert all(isinstance(r, sm.ReloadResult) for _, r in res)
        res = sm.batch_hot_reload(ids + ["missing"], "def b():\n    return 2\n",
                                  max_concurrency=3)
        assert isinstance(res[-1][1], sm.SandboxNotFoundError)
        back = SQLiteVersionStore(path)        # another connection sees the committed writes
        for i in ids:
            assert back.load(i, scope=SCOPE)["b"].current == 2
    finally:
        for i in ids:
            sm.destroy_sandbox(i)


C1 = "class Counter:\n    def inc(self):\n        return 1\n"
C2 = C1.replace("return 1", "return 2")


def _restart_fixture(tmp_path):
    previous = sm.api.stores._default_store
    sm.set_default_store(tmp_path / "restart.sqlite3")
    sm.create_sandbox("rs")
    sm.hot_reload_source("rs", C1)
    sm.hot_reload_source("rs", C2)
    sm.destroy_sandbox("rs")            # the history stays in the store, nothing is loaded
    yield "rs"
    if "rs" in {s.id for s in sm.list_sandboxes()}:
        sm.destroy_sandbox("rs")
    sm.api.stores._default_store = previous


@pytest.fixture
def restarted(tmp_path):
    """Sandbox 'rs' whose history (counter v1, v2; v2 current) is only in the store,
    as a kernel restart leaves it; the store is the default store.  The history
    scope is the tests' fixed one (a restarted notebook keeps its scope)."""
    yield from _restart_fixture(tmp_path)


def test_history_reads_work_at_once_after_a_restart(restarted, tmp_path):
    import nbformat

    from sandbox_magic.api import stored_histories
    from sandbox_magic.jupyter.export import export_history
    assert stored_histories("rs")["counter"].current == 2
    assert [(v.version, v.is_current) for v in sm.list_module_versions("rs", "counter")] == \
        [(2, True), (1, False)]
    h = sm.get_version_history("rs", "counter")
    assert (h["current_version"], h["total_versions"]) == (2, 2)
    d = sm.diff_versions("rs", "counter", 1, 2)
    assert ("-", "        return 1") in d.lines() and ("+", "        return 2") in d.lines()
    nb = nbformat.read(str(export_history("rs", tmp_path / "rs.ipynb")), as_version=4)
    assert [c.metadata["sandbox_magic"]["version"] for c in nb.cells
            if "sandbox_magic" in c.metadata] == [1, 2]
    assert "rs" not in {s.id for s in sm.list_sandboxes()}     # reading loaded nothing
    with pytest.raises(sm.ModuleNotFoundInSandboxError, match="modules: counter"):
        sm.list_module_versions("rs", "nomodule")
    with pytest.raises(sm.SandboxNotFoundError, match="no recorded history"):
        sm.diff_versions("never_seen", "counter", 1, 2)


def test_changing_code_after_a_restart_restores_the_sandbox_first(restarted):
    from sandbox_magic.api import load_before_change
    with pytest.raises(sm.VersionNotFoundError, match="no version 99"):
        load_before_change("rs", "counter", version=99)
    with pytest.raises(sm.HistoryError, match="nothing to redo"):
        load_before_change("rs", "counter", step=+1)
    assert "rs" not in {s.id for s in sm.list_sandboxes()}     # a bad request loads nothing
    assert load_before_change("rs", "counter", version=1) == {"counter": 2}
    assert sm.get_sandbox("rs").Counter().inc() == 2
    assert sm.rollback_module("rs", "counter", 1).new_version == 1
    assert sm.get_sandbox("rs").Counter().inc() == 1
    assert load_before_change("rs", "counter", step=-1) == {}  # loaded now: nothing to do
    assert sm.undo("rs", "counter").new_version == 2


def test_a_restarted_notebook_reads_its_own_history(tmp_path, monkeypatch):
    monkeypatch.setattr(sm.engine.scope, "_explicit", None)     # detect the scope as a kernel does
    monkeypatch.setenv("JPY_SESSION_NAME", "work/analysis.ipynb")
    assert sm.current_scope() == "notebook:work/analysis.ipynb"
    fixture = _restart_fixture(tmp_path)
    next(fixture)
    try:
        assert [v.version for v in sm.list_module_versions("rs", "counter")] == [2, 1]
    finally:
        next(fixture, None)


def test_deltas_reproduce_every_edit_exactly():
    """Short changes are diffed by characters, long ones by lines: both exact."""
    import random

    from sandbox_magic.engine.store import CHAR_DIFF_MAX, apply_delta, encode_delta
    rng = random.Random(7)
    alphabet = "ab \t\n\nxyz\u00e9\U0001f600"
    for _ in range(400):
        old = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        old *= rng.choice([1, 1, 50, 200])
        new = list(old)
        for _ in range(rng.randint(0, 6)):
            at = rng.randint(0, len(new))
            if rng.random() < 0.5 or not new:
                new.insert(at, rng.choice(alphabet))
            else:
                del new[min(at, len(new) - 1)]
        text = "".join(new)
        if rng.random() < 0.2:          # a long line rewritten
            text += "".join(rng.choice("abc") for _ in range(CHAR_DIFF_MAX)) + "\n"
        assert apply_delta(old, encode_delta(old, text, remember=False)) == text


def test_deltas_of_long_modules_go_statement_by_statement_and_stay_exact():
    """A long module whose statements line up is diffed statement by statement: edits
    far apart (a body and the last line), a statement added, one removed."""
    from sandbox_magic.engine import store
    body = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(300))
    edits = [body.replace("x + 7\n", "x * 7\n") + "# tail\n",
             body.replace("return x + 150", "y = x\n    return y + 150"),
             body.replace("def f3(x):\n    return x + 3\n\n", ""),
             body + "def extra():\n    pass\n", "", "x = 1\n"]
    for new in edits:
        for old in (body, new):
            delta = store.encode_delta(old, new, remember=False)
            assert store.apply_delta(old, delta) == new
    calls = []
    real = store._diff_region
    store._diff_region = lambda a, b: calls.append(len(a)) or real(a, b)
    try:
        store.encode_delta(body, edits[0], remember=False)
    finally:
        store._diff_region = real
    assert calls and max(calls) < 100       # only the two statements that differ


def test_closing_folds_the_tail_unless_another_kernel_wrote_since(tmp_path):
    from sandbox_magic.engine.versions import ModuleHistory
    path = tmp_path / "fold.sqlite3"
    mine, other = SQLiteVersionStore(path), SQLiteVersionStore(path)
    h = ModuleHistory("m")
    for e in range(5):
        h.add(sm.compile_source(f"X = {e}\n", "m").artifacts[0], None)
        mine.save("s", h)
    rows = "SELECT count(*) FROM tail"
    assert mine.conn.execute(rows).fetchone()[0] == 5
    theirs = other.load("s")["m"]
    theirs.add(sm.compile_source("X = 'theirs'\n", "m").artifacts[0], None)
    other.save("s", theirs)
    mine.close()                       # another kernel wrote last: its tail is left alone
    assert other.conn.execute(rows).fetchone()[0] == 6
    other.close()                      # the last writer folds
    back = SQLiteVersionStore(path)
    assert back.conn.execute(rows).fetchone()[0] == 0
    got = back.load("s")["m"]
    assert [got.records[v].source for v in sorted(got.records)] == \
        [f"X = {e}\n" for e in range(5)] + ["X = 'theirs'\n"]
