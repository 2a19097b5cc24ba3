"""Watching files: every save a versioned, transactional reload; a bad save changes nothing."""

from __future__ import annotations

import threading
import time

import pytest

import sandbox_magic as sm

BASE = "BASE = 1\ndef base():\n    return BASE\n"
USER = "from base import base\ndef twice():\n    return 2 * base()\n"


class Events:
    """Collects a watch's events; waits for the next one with a bound."""

    def __init__(self):
        self.items = []
        self.cond = threading.Condition()

    def __call__(self, event):
        with self.cond:
            self.items.append(event)
            self.cond.notify_all()

    def next(self, count, timeout=10.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.items) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"no watch event #{count} within {timeout} s: {self.items}"
                self.cond.wait(left)
            return self.items[count - 1]


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "base.py").write_text(BASE)
    (tmp_path / "user.py").write_text(USER)
    return tmp_path


def test_a_save_is_a_new_version_and_live_objects_follow(sid, folder):
    events = Events()
    w = sm.watch(sid, folder, debounce=0.05, on_event=events)
    try:
        sb = sm.get_sandbox(sid)
        twice = sb.twice
        assert twice() == 2 and sm.get_module_version(sid, "base") == 1
        (folder / "base.py").write_text(BASE.replace("BASE = 1", "BASE = 5"))
        e = events.next(1)
        assert e.kind == "reloaded" and e.versions == {"base": 2}
        assert twice() == 10                    # the dependent sees the new base
        assert [v.version for v in sm.list_module_versions(sid, "base")] == [2, 1]
    finally:
        w.stop()
    assert not w.alive


def test_a_bad_save_changes_nothing_and_the_next_good_one_goes_through(sid, folder):
    events = Events()
    sm.watch(sid, folder, debounce=0.05, on_event=events)
    try:
        (folder / "base.py").write_text("BASE = (\n")
        e = events.next(1)
        assert e.kind == "failed" and "base" in e.modules
        assert sm.get_sandbox(sid).twice() == 2 and sm.get_module_version(sid, "base") == 1
        (folder / "base.py").write_text(BASE.replace("1", "3"))
        assert events.next(2).kind == "reloaded"
        assert sm.get_sandbox(sid).twice() == 6
    finally:
        sm.unwatch(sid)


def test_a_check_gates_each_save(sid, folder):
    events = Events()
    sm.watch(sid, folder, debounce=0.05, check="twice() % 2 == 0", on_event=events)
    try:
        (folder / "user.py").write_text(USER.replace("2 * base()", "2 * base() + 1"))
        e = events.next(1)
        assert e.kind == "failed" and "check" in e.message
        assert sm.get_module_version(sid, "user") == 1
    finally:
        sm.unwatch(sid)


def test_new_files_add_modules_and_deleted_ones_are_reported(sid, folder):
    events = Events()
    sm.watch(sid, folder, debounce=0.05, on_event=events)
    try:
        (folder / "extra.py").write_text("def more():\n    return 'more'\n")
        assert events.next(1).versions == {"extra": 1}
        assert sm.get_sandbox(sid).more() == "more"
        (folder / "extra.py").unlink()
        e = events.next(2)
        assert e.kind == "deleted" and e.modules == ("extra",)
        assert sm.get_sandbox(sid).more() == "more"      # kept, and said so
    finally:
        sm.unwatch(sid)


def test_stopping_and_destroying_leave_no_thread(sid, folder):
    sm.watch(sid, folder, debounce=0.05)
    names = {t.name for t in threading.enumerate()}
    assert f"sandbox-watch-{sid}" in names
    sm.destroy_sandbox(sid)
    assert f"sandbox-watch-{sid}" not in {t.name for t in threading.enumerate()}


def test_bad_paths_are_clear_errors(sid, tmp_path):
    with pytest.raises(sm.SandboxError, match="no such file"):
        sm.watch(sid, tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(sm.SandboxError, match=r"\.py file"):
        sm.watch(sid, tmp_path / "notes.txt")


def test_the_magic_watches_and_stops(new_id, folder, capsys):
    from IPython import get_ipython
    from IPython.testing.globalipapp import start_ipython
    ip = start_ipython() or get_ipython()
    ip.run_line_magic("load_ext", "sandbox_magic")
    ip.run_line_magic("sandbox_watch", f"{new_id} {folder}")
    assert sm.get_sandbox(new_id).twice() == 2
    ip.run_line_magic("sandbox_watch", f"{new_id} --stop")
    assert "stopped watching" in capsys.readouterr().out


def test_a_save_touching_several_files_is_one_transaction(sid, folder):
    events = Events()
    sm.watch(sid, folder, debounce=0.3, on_event=events)
    try:
        (folder / "base.py").write_text(BASE.replace("BASE = 1", "BASE = 2"))
        (folder / "user.py").write_text(USER.replace("2 * base()", "3 * base()"))
        e = events.next(1)
        assert e.kind == "reloaded" and set(e.modules) == {"base", "user"}
        assert e.versions == {"base": 2, "user": 2}
        assert sm.get_sandbox(sid).twice() == 6
    finally:
        sm.unwatch(sid)


def test_a_save_written_in_two_parts_is_loaded_whole(sid, folder):
    # an editor (or a slow disk) writes half the file, pauses for less than the
    # debounce, writes the rest: one version, with both halves
    events = Events()
    w = sm.watch(sid, folder, debounce=0.3, on_event=events)
    try:
        first = "BASE = 7\n"
        second = "def base():\n    return BASE\n\ndef extra():\n    return 'whole'\n"
        with open(folder / "base.py", "w") as f:
            f.write(first)
            f.flush()
            time.sleep(0.15)                 # half the debounce: the save is not over
            f.write(second)
        e = events.next(1)
        assert e.kind == "reloaded" and e.versions == {"base": 2}, e
        assert sm.get_sandbox(sid).modules["base"].extra() == "whole"
        time.sleep(0.5)
        assert len(events.items) == 1        # no half-written version before it
    finally:
        w.stop()


def test_an_atomic_save_is_one_version(sid, folder):
    events = Events()
    w = sm.watch(sid, folder, debounce=0.1, on_event=events)
    try:
        tmp = folder / ".base.py.tmp"
        tmp.write_text(BASE.replace("BASE = 1", "BASE = 3"))
        tmp.replace(folder / "base.py")      # what editors do: write aside, rename over
        e = events.next(1)
        assert e.kind == "reloaded" and e.versions == {"base": 2}
        time.sleep(0.3)
        assert len(events.items) == 1
        assert sm.get_sandbox(sid).base() == 3
    finally:
        w.stop()


def test_a_watched_file_deleted_is_reported_and_followed_again_when_back(sid, tmp_path):
    f = tmp_path / "single.py"
    f.write_text("def v():\n    return 1\n")
    events = Events()
    w = sm.watch(sid, f, debounce=0.05, on_event=events)
    try:
        f.write_text("def v():\n    return 2\n")
        assert events.next(1).versions == {"single": 2}
        assert sm.get_sandbox(sid).v() == 2
        f.unlink()
        e = events.next(2)
        assert e.kind == "deleted" and e.modules == ("single",)
        assert sm.get_sandbox(sid).v() == 2          # still loaded
        f.write_text("def v():\n    return 3\n")
        assert events.next(3).versions == {"single": 3}
        assert sm.get_sandbox(sid).v() == 3
    finally:
        w.stop()


def test_a_watched_folder_removed_is_reported_and_followed_again_when_back(sid, folder):
    import shutil
    events = Events()
    w = sm.watch(sid, folder, debounce=0.05, on_event=events)
    try:
        saved = {p.name: p.read_text() for p in folder.glob("*.py")}
        shutil.rmtree(folder)
        k = 1
        e = events.next(k)
        while e.kind != "deleted" or e.modules != ():   # the files' deletions come first
            k += 1
            e = events.next(k)
        assert "removed" in e.message
        assert sm.get_sandbox(sid).twice() == 2      # the modules stay loaded
        folder.mkdir()
        for name, text in saved.items():
            (folder / name).write_text(text.replace("BASE = 1", "BASE = 4"))
        deadline = time.monotonic() + 10
        while sm.get_sandbox(sid).twice() != 8:
            assert time.monotonic() < deadline, events.items
            time.sleep(0.05)
        assert w.alive
    finally:
        w.stop()


def test_the_magic_leaves_nothing_behind_when_it_cannot_watch(new_id, tmp_path):
    from IPython import get_ipython
    from IPython.testing.globalipapp import start_ipython
    ip = start_ipython() or get_ipython()
    ip.run_line_magic("load_ext", "sandbox_magic")
    with pytest.raises(sm.SandboxError, match="no such file or folder"):
        ip.run_line_magic("sandbox_watch", f"{new_id} {tmp_path / 'nothere'}")
    broken = tmp_path / "broken.py"
    broken.write_text("def f(:\n")
    with pytest.raises(sm.SandboxError):
        ip.run_line_magic("sandbox_watch", f"{new_id} {broken}")
    assert new_id not in {s.id for s in sm.list_sandboxes()}


def test_plain_python_hears_of_failed_saves_in_its_log_and_the_summary(sid, folder, caplog):
    events = Events()
    w = sm.watch(sid, folder, debounce=0.05, on_event=events)
    try:
        with caplog.at_level("WARNING", logger="sandbox_magic.api.watching"):
            (folder / "base.py").write_text("def base(:\n")
            assert events.next(1).kind == "failed"
        assert any("syntax" in r.getMessage().lower() or "compile" in r.getMessage().lower()
                   for r in caplog.records), [r.getMessage() for r in caplog.records]
        assert "1 failed" in w.summary() and "last:" in str(w)
        (folder / "base.py").write_text(BASE.replace("BASE = 1", "BASE = 3"))
        assert events.next(2).kind == "reloaded"
        assert w.summary().startswith(f"watching {folder} for sandbox {sid}: 1 reloaded, "
                                      "1 failed") and "last:" not in w.summary()
    finally:
        w.stop()
