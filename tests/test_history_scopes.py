"""Whose history is it: scopes, many kernels on one store, forget, read-only, upgrade."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

import sandbox_magic as sm
from sandbox_magic.engine import store as _store
from sandbox_magic.engine.store import SQLiteVersionStore, StoreWarning
from sandbox_magic.engine.versions import ModuleHistory

ROOT = Path(__file__).resolve().parent.parent


def _spawn(code: str, store: Path, cwd: Path, **env: str) -> subprocess.Popen[str]:
    full = {**os.environ, "SANDBOX_MAGIC_STORE": str(store), **env}
    if "JPY_SESSION_NAME" not in env:
        full.pop("JPY_SESSION_NAME", None)
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=full, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(*procs: subprocess.Popen[str]) -> list[tuple[str, str]]:
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    return outs


def test_two_notebooks_in_one_folder_keep_separate_histories(tmp_path):
    path = tmp_path / ".sandbox_magic" / "history.sqlite3"
    code = """
        import os, sandbox_magic as sm
        me = os.environ["JPY_SESSION_NAME"]
        sm.create_sandbox("demo")
        print(sm.get_sandbox_info("demo").history_scope)
        sm.hot_reload_source("demo", "WHO = %r\\n" % me, module="m")
        sm.hot_reload_source("demo", "WHO = %r\\nX = 2\\n" % me, module="m")
    """
    outs = _finish(_spawn(code, path, tmp_path, JPY_SESSION_NAME="left.ipynb"),
                   _spawn(code, path, tmp_path, JPY_SESSION_NAME="right.ipynb"))
    assert [o.strip() for o, _ in outs] == ["notebook:left.ipynb", "notebook:right.ipynb"]
    store = SQLiteVersionStore(path)
    for name in ("left.ipynb", "right.ipynb"):
        h = store.load("demo", scope=f"notebook:{name}")["m"]
        assert sorted(h.records) == [1, 2]
        assert all(repr(name) in r.source for r in h.records.values())
    assert store.load("demo") == {}          # nothing in the folder scope


def test_an_explicit_scope_shares_one_history_on_purpose(tmp_path):
    store = SQLiteVersionStore(tmp_path / "h.sqlite3")
    sm.create_sandbox("sh1", store=store, history_scope="team")
    try:
        sm.hot_reload_source("sh1", "X = 1\n", module="m")
        assert sm.get_sandbox_info("sh1").history_scope == "team"
    finally:
        sm.destroy_sandbox("sh1")
    assert sorted(store.load("sh1", scope="team")["m"].records) == [1]
    with pytest.raises(sm.SandboxError):
        sm.create_sandbox("sh2", history_scope="not a name")
    pinned = sm.engine.scope._explicit
    try:
        sm.set_history_scope("team")
        assert sm.current_scope() == "team"
        sm.set_history_scope(None)
        assert sm.current_scope() != "team"
    finally:
        sm.engine.scope._explicit = pinned


def test_two_kernels_writing_one_history_at_once_lose_nothing(tmp_path):
    path = tmp_path / "shared.sqlite3"
    code = """
        import sys, time, sandbox_magic as sm
        who = sys.argv[1]
        sm.create_sandbox("demo", max_versions=None, history_scope="shared")
        start = float(sys.argv[2])
        while time.time() < start:
            time.sleep(0.001)
        for n in range(100):
            r = sm.hot_reload_source("demo", "WHO = %r\\nN = %d\\n" % (who, n), module="m")
            print(r.new_version)
    """
    import time
    start = str(time.time() + 1.5)
    procs = []
    for who in ("a", "b"):
        full = {**os.environ, "SANDBOX_MAGIC_STORE": str(path)}
        procs.append(subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), who, start],
                                      env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    outs = _finish(*procs)
    assert not any("memory only" in err for _, err in outs), [e for _, e in outs]
    reported = [int(x) for o, _ in outs for x in o.split()]
    assert len(reported) == 200 and len(set(reported)) == 200     # never numbered twice
    h = SQLiteVersionStore(path).load("demo", scope="shared")["m"]
    assert sorted(h.records) == list(range(1, 201))
    sources = sorted(r.source for r in h.records.values())
    assert sources == sorted("WHO = %r\nN = %d\n" % (w, n) for w in "ab" for n in range(100))
    # each version's number is the one its kernel reported
    for (out, _), who in zip(outs, "ab"):
        for n, v in enumerate(int(x) for x in out.split()):
            assert h.records[v].source == "WHO = %r\nN = %d\n" % (who, n)
    # the second live writer was reported (once per kernel at most)
    warned = [err.count("also writes the history") for _, err in outs]
    assert sum(warned) >= 1 and max(warned) == 1, [e for _, e in outs]


def test_kernels_taking_turns_keep_every_version(tmp_path):
    path = tmp_path / "turns.sqlite3"
    a, b = SQLiteVersionStore(path), SQLiteVersionStore(path)
    ha, hb = ModuleHistory("m"), ModuleHistory("m")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StoreWarning)
        for turn in range(3):
            for store, h, who in ((a, ha, "a"), (b, hb, "b")):
                h.add(sm.compile_source(f"X = {who!r}, {turn}\n", "m").artifact, None)
                store.save("t", h, scope="s")
    back = SQLiteVersionStore(path).load("t", scope="s")["m"]
    assert sorted(back.records) == [1, 2, 3, 4, 5, 6]
    assert sorted(r.source for r in back.records.values()) == sorted(
        f"X = {w!r}, {t}\n" for t in range(3) for w in "ab")
    assert ha.current != hb.current and {ha.current, hb.current} == {5, 6}


def test_forget_removes_exactly_one_history(tmp_path):
    path = tmp_path / "f.sqlite3"
    store = SQLiteVersionStore(path)
    for sid in ("keep", "drop"):
        sm.create_sandbox(sid, store=store, max_versions=None)
        for n in range(5):
            sm.hot_reload_source(sid, f"X = {n}\n", module="m")
    sm.destroy_sandbox("drop", forget_history=True)
    sm.destroy_sandbox("keep")
    conn = sqlite3.connect(path)
    mids = [r[0] for r in conn.execute("SELECT id FROM modules")]
    assert len(mids) == 1
    for table in ("tail", "segments"):
        assert {r[0] for r in conn.execute(f"SELECT module_id FROM {table}")} <= set(mids)
    conn.close()
    # the next module stored does not inherit rows of the forgotten one
    sm.create_sandbox("third", store=store)
    try:
        sm.hot_reload_source("third", "Y = 1\n", module="n")
    finally:
        sm.destroy_sandbox("third")
    fresh = SQLiteVersionStore(path)
    assert sorted(fresh.load("keep", scope=sm.current_scope())["m"].records) == [1, 2, 3, 4, 5]
    assert fresh.load("drop", scope=sm.current_scope()) == {}
    assert [r.source for r in fresh.load("third", scope=sm.current_scope())["n"].records.values()] == ["Y = 1\n"]
    assert fresh.failure is None


def test_a_read_only_store_still_shows_its_history(tmp_path, monkeypatch):
    path = tmp_path / "ro.sqlite3"
    writer = SQLiteVersionStore(path)
    sm.create_sandbox("ro", store=writer)
    sm.hot_reload_source("ro", "X = 1\n", module="m")
    sm.destroy_sandbox("ro")
    writer.close()
    real_access = os.access
    monkeypatch.setattr(_store.os, "access",
                        lambda p, mode: False if mode == os.W_OK else real_access(p, mode))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store = SQLiteVersionStore(path)
        assert store.readonly and store.failure is None
        assert store.load("ro", scope=sm.current_scope())["m"].current_record().source == "X = 1\n"
        sm.create_sandbox("ro", store=store)
        try:
            assert sm.get_sandbox_info("ro").stored_modules == {"m": 1}
            sm.hot_reload_source("ro", "X = 2\n", module="m")
            sm.hot_reload_source("ro", "X = 3\n", module="m")
            assert sm.get_module_version("ro", "m") == 3
        finally:
            sm.destroy_sandbox("ro")
    said = [str(w.message) for w in caught if issubclass(w.category, StoreWarning)]
    assert len(said) == 1 and "read-only" in said[0], said


def test_a_first_release_store_opens_with_its_history_in_the_folder_scope(tmp_path):
    path = tmp_path / "v1.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
        INSERT INTO meta VALUES ('format', '1');
        CREATE TABLE modules (id INTEGER PRIMARY KEY, sandbox TEXT NOT NULL,
            module TEXT NOT NULL, current INTEGER, next_version INTEGER NOT NULL,
            timeline TEXT NOT NULL, cursor INTEGER NOT NULL, retained TEXT NOT NULL,
            rev INTEGER NOT NULL DEFAULT 0, UNIQUE (sandbox, module));
        CREATE TABLE tail (module_id INTEGER NOT NULL, version INTEGER NOT NULL,
            entry TEXT NOT NULL, PRIMARY KEY (module_id, version)) WITHOUT ROWID;
        CREATE TABLE segments (module_id INTEGER NOT NULL, first INTEGER NOT NULL,
            data BLOB NOT NULL, PRIMARY KEY (module_id, first)) WITHOUT ROWID;
    """)
    conn.execute("INSERT INTO modules VALUES (1, 'old', 'm', 1, 2, '[1]', 0, '[1]', 1)")
    conn.execute("INSERT INTO tail VALUES (1, 1, ?)",
                 (json.dumps([1, 1700000000000, None, "full", "X = 'kept'\n"]),))
    conn.commit()
    conn.close()
    store = SQLiteVersionStore(path)
    assert store.failure is None
    h = store.load("old", scope="folder")["m"]
    assert h.current_record().source == "X = 'kept'\n"
    assert store.list_sandboxes("folder") == {"old": {"m": 1}}
    # the first notebook that opens sandbox 'old' finds that history as its own
    assert store.load("old", scope="notebook:a.ipynb")["m"].current == 1
    assert store.load("old", scope="notebook:b.ipynb") == {}
    assert store.list_sandboxes("folder") == {}


def _reload_in_magic(sid: str, path: Path) -> str:
    import io
    from contextlib import redirect_stdout

    from IPython import get_ipython
    from IPython.testing.globalipapp import start_ipython
    ip = start_ipython() or get_ipython()
    ip.run_line_magic("load_ext", "sandbox_magic")
    old = sm.api.stores._default_store
    sm.set_default_store(path)
    buf = io.StringIO()
    try:
        with redirect_stdout(buf), warnings.catch_warnings():
            warnings.simplefilter("ignore", StoreWarning)
            ip.run_cell_magic("sandbox_reload", f"{sid} m", "X = 2\n")
    finally:
        if sid in {s.id for s in sm.list_sandboxes()}:
            sm.destroy_sandbox(sid)
        sm.api.stores._default_store = old
    return buf.getvalue()


WRITE_AND_WAIT = """
    import sys, sandbox_magic as sm
    sm.set_history_scope("tests")
    sm.create_sandbox(sys.argv[1])
    sm.hot_reload_source(sys.argv[1], "X = 1\\n", module="m")
    print("ready", flush=True)
    sys.stdin.read()
"""


def test_earlier_session_is_said_only_when_true(tmp_path):
    path = tmp_path / "e.sqlite3"
    env = {**os.environ, "SANDBOX_MAGIC_STORE": str(path)}
    env.pop("JPY_SESSION_NAME", None)
    live = subprocess.Popen([sys.executable, "-c", textwrap.dedent(WRITE_AND_WAIT), "es"],
                            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert live.stdout.readline().strip() == "ready"
        said = _reload_in_magic("es", path)
        assert "earlier session" not in said and "running kernel" in said, said
    finally:
        live.communicate("", timeout=30)
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(WRITE_AND_WAIT), "es2"],
                          env=env, input="", capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    said = _reload_in_magic("es2", path)
    assert "earlier session" in said, said


def test_the_store_is_compact_on_disk_after_the_process_ends(tmp_path):
    """1,000 one-line edits of a 500-line module: every file left is at most 3 copies."""
    folder = tmp_path / ".sandbox_magic"
    code = """
        import gc, sandbox_magic as sm
        # as in a kernel at shutdown: the store stays referenced to the very end
        gc.disable()
        keep = [sm.api.default_store()]
        keep.append(keep)
        lines = ["def f%d(x):\\n    return x + %d\\n" % (i, i) for i in range(250)]
        sm.create_sandbox("big")
        for e in range(1000):
            body = list(lines)
            body[e % 250] = "def f%d(x):\\n    return x - %d\\n" % (e % 250, e)
            sm.hot_reload_source("big", "".join(body), module="big")
    """
    _finish(_spawn(code, folder / "history.sqlite3", tmp_path))
    one_copy = len("".join("def f%d(x):\n    return x + %d\n" % (i, i)
                           for i in range(250)).encode())
    total = sum(p.stat().st_size for p in folder.iterdir())
    assert total <= 3 * one_copy, (sorted((p.name, p.stat().st_size) for p in folder.iterdir()),
                                   one_copy)


def test_a_killed_kernel_leaves_a_small_write_ahead_log(tmp_path):
    folder = tmp_path / ".sandbox_magic"
    code = """
        import os, sandbox_magic as sm
        sm.create_sandbox("k")
        for e in range(300):
            sm.hot_reload_source("k", "X = %d\\n" % e + "Y = 1\\n" * 400, module="k")
        os._exit(0)          # no clean shutdown: nothing is closed
    """
    _finish(_spawn(code, folder / "history.sqlite3", tmp_path))
    wal = folder / "history.sqlite3-wal"
    size = wal.stat().st_size if wal.exists() else 0
    assert size <= 1.25 * _store.WAL_PAGES * 1024 + _store.WAL_LIMIT, size
    back = SQLiteVersionStore(folder / "history.sqlite3").load("k")
    assert back["k"].current == 300


def test_sandbox_create_magic_takes_a_scope_and_a_retention(tmp_path):
    import io
    from contextlib import redirect_stdout

    from IPython import get_ipython
    from IPython.testing.globalipapp import start_ipython
    ip = start_ipython() or get_ipython()
    ip.run_line_magic("load_ext", "sandbox_magic")
    buf = io.StringIO()
    try:
        with redirect_stdout(buf):
            ip.run_line_magic("sandbox_create", "scoped --scope class-2026 --max-versions 3")
        info = sm.get_sandbox_info("scoped")
        assert info.history_scope == "class-2026" and info.max_versions == 3
        assert "scope 'class-2026'" in buf.getvalue()
        with pytest.raises(sm.SandboxError, match="invalid history scope"):
            ip.run_line_magic("sandbox_create", "bad --scope 'no spaces'")   # one-line error
    finally:
        for sid in ("scoped", "bad"):
            if sid in {s.id for s in sm.list_sandboxes()}:
                sm.destroy_sandbox(sid)
