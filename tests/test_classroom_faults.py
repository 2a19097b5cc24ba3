"""A class, where it is easy to get wrong: what a teacher's change carries along, a
history published again, a folder that cannot be watched or that others may write."""

from __future__ import annotations

import os
import time

import pytest
from test_classroom import COUNTER, wait

import sandbox_magic as sm
from sandbox_magic import api
from sandbox_magic.api import classroom
from sandbox_magic.engine.store import SQLiteVersionStore

A = "class A:\n    def __init__(self):\n        self.seen = []\n    def v(self):\n        return {v}\n"
B = "class B:\n    def __init__(self):\n        self.seen = []\n    def v(self):\n        return {v}\n"


def record(state, old_version, new_version):
    state = dict(state)
    state["seen"] = state["seen"] + [(old_version, new_version)]
    return state


def count(state, old_version, new_version):
    state = dict(state)
    state["migrations"] = state.get("migrations", 0) + 1
    return state


def only_in_the_teachers(box):
    return ".tch." in box.modules["counter"].__name__


@pytest.fixture
def clean():
    yield
    for sid in ("tch", "stu", "ta"):
        classroom.unfollow(sid)
        classroom.unpublish(sid)
        if sid in {s.id for s in sm.list_sandboxes()}:
            sm.destroy_sandbox(sid)


def test_a_change_of_several_modules_goes_as_one_with_its_own_numbers(tmp_path, clean):
    sm.create_sandbox("tch")
    sm.hot_reload_source("tch", {"a": A.format(v=1), "b": B.format(v=1)})
    for v in (2, 3):
        sm.hot_reload_source("tch", A.format(v=v), "a")          # the teacher: a v3, b v1
    classroom.publish("tch", tmp_path)
    f = classroom.follow("stu", tmp_path, auto=True, teacher="tch")  # here: a v1, b v1
    held = {sid: (sm.get_sandbox(sid).A(), sm.get_sandbox(sid).B()) for sid in ("tch", "stu")}
    # the published store holds the whole change when its first module's event is seen
    seen_at_first_event = []

    def look(event, sid, payload):
        if sid == "tch" and event == "reloaded" and not seen_at_first_event:
            store = SQLiteVersionStore(f.path, read_only=True)
            try:
                seen_at_first_event.append({m: h.current for m, h in
                                            store.load("tch", classroom.SCOPE).items()})
            finally:
                store.close()

    api.listeners.append(look)
    try:
        sm.hot_reload_source("tch", {"a": A.format(v=4), "b": B.format(v=2)},
                             state_handler=record)
    finally:
        api.listeners.remove(look)
    assert seen_at_first_event == [{"a": 4, "b": 2}]
    wait(lambda: f.applied == {"a": 4, "b": 2}, "the change of both modules")
    # each module's objects told that module's teacher numbers, as in the teacher's kernel
    assert [o.seen for o in held["stu"]] == [o.seen for o in held["tch"]] == [[(3, 4)],
                                                                              [(1, 2)]]
    # a later change of one module runs its handler on that module's objects only
    sm.hot_reload_source("tch", A.format(v=5), "a", state_handler=record)
    wait(lambda: f.applied["a"] == 5, "a v5")
    assert [o.seen for o in held["stu"]] == [[(3, 4), (4, 5)], [(1, 2)]]


def test_the_teachers_check_goes_along_and_a_rollback_runs_no_handler_again(tmp_path, clean):
    sm.create_sandbox("tch")
    sm.hot_reload_source("tch", COUNTER.format(step=1), "counter")
    classroom.publish("tch", tmp_path)
    f = classroom.follow("stu", tmp_path, auto=True, teacher="tch")
    held = sm.get_sandbox("stu").Counter()
    held.n = 500
    sm.hot_reload_source("tch", COUNTER.format(step=2), "counter", check=only_in_the_teachers)
    wait(lambda: ("counter", 2) in f.failed, "the teacher's check to refuse v2 here")
    assert "check" in f.failed[("counter", 2)] and held.inc() == 501
    held.n = 0
    sm.hot_reload_source("tch", COUNTER.format(step=3), "counter", check="Counter().inc() == 3",
                         state_handler=count)
    wait(lambda: f.applied.get("counter") == 3, "v3, its check passing here")
    assert held.migrations == 1
    sm.hot_reload_source("tch", COUNTER.format(step=4), "counter")
    wait(lambda: f.applied.get("counter") == 4, "v4")
    sm.rollback_module("tch", "counter", 3)         # v3 was made with a handler: not again
    wait(lambda: f.applied.get("counter") == 3, "the rollback")
    assert held.migrations == 1 and held.inc() == 3      # v3 code, migrated once


def test_a_waiting_version_the_teacher_rolled_back_waits_no_more(tmp_path, clean):
    sm.create_sandbox("tch")
    sm.hot_reload_source("tch", COUNTER.format(step=1), "counter")
    classroom.publish("tch", tmp_path)
    f = classroom.follow("stu", tmp_path, teacher="tch")
    sm.hot_reload_source("tch", COUNTER.format(step=2), "counter")
    wait(lambda: f.pending(), "v2 to wait")
    sm.rollback_module("tch", "counter", 1)
    wait(lambda: not f.pending(), "the abandoned v2 to go")
    assert f.applied == {"counter": 1}


def test_a_student_back_after_a_while_gets_the_teachers_handler(tmp_path, clean):
    sm.create_sandbox("tch")
    sm.hot_reload_source("tch", COUNTER.format(step=1), "counter")
    classroom.publish("tch", tmp_path)
    classroom.follow("stu", tmp_path, auto=True, teacher="tch")
    held = sm.get_sandbox("stu").Counter()
    held.inc()
    classroom.unfollow("stu")
    sm.hot_reload_source("tch", COUNTER.format(step=2), "counter", state_handler=count)
    sm.hot_reload_source("tch", COUNTER.format(step=3), "counter", state_handler=count)
    lines = []
    classroom.follow("stu", tmp_path, teacher="tch", on_version=lines.append)
    assert lines == ["stu.counter: v3 from the teacher applied (migrated by count)"]
    assert held.migrations == 1 and held.inc() == 4       # the last change's handler, once
    # after an edit of the student's own, the teacher's handler is not run on it
    sm.hot_reload_source("stu", COUNTER.format(step=50), "counter")
    f = classroom.follower("stu")
    assert f.resync() == ["stu.counter: v3 from the teacher applied (reactivated, without "
                          "the teacher's state handler count: your own edits came before it)"]
    assert held.migrations == 1


def test_publishing_again_replaces_what_an_earlier_session_published(tmp_path, clean):
    sm.create_sandbox("tch")
    for step in (1, 2, 3):
        sm.hot_reload_source("tch", COUNTER.format(step=step), "counter")
    classroom.publish("tch", tmp_path)
    f = classroom.follow("stu", tmp_path, auto=True, teacher="tch")
    assert f.applied == {"counter": 3}
    # the next lesson: a new kernel, numbered from v1 again, publishes to the same folder
    classroom.unpublish("tch")
    sm.destroy_sandbox("tch")
    sm.create_sandbox("tch")
    sm.hot_reload_source("tch", COUNTER.format(step=10), "counter")
    classroom.publish("tch", tmp_path)
    for step in (20, 30):
        sm.hot_reload_source("tch", COUNTER.format(step=step), "counter")
    wait(lambda: sm.get_sandbox("stu").Counter().inc() == 30, "the new lesson's v3 here")
    store = SQLiteVersionStore(f.path, read_only=True)
    try:
        h = store.load("tch", classroom.SCOPE)["counter"]
        assert sorted(h.records) == [1, 2, 3] and "+= 30" in h.current_record().source
    finally:
        store.close()


def test_a_folder_that_cannot_be_watched_is_read_once_a_second(tmp_path, clean, monkeypatch):
    import watchfiles

    def no_watch(*a, **k):
        raise OSError(24, "inotify instance limit reached")

    monkeypatch.setattr(watchfiles, "watch", no_watch)
    sm.create_sandbox("tch")
    sm.hot_reload_source("tch", COUNTER.format(step=1), "counter")
    classroom.publish("tch", tmp_path)
    f = classroom.follow("stu", tmp_path, auto=True, teacher="tch")
    wait(lambda: f.watching != "events", "the follower to say it polls")
    assert "cannot be watched" in f.watching and f.alive
    sm.hot_reload_source("tch", COUNTER.format(step=2), "counter")
    wait(lambda: f.applied.get("counter") == 2, "v2, read by the once-a-second stat")
    classroom.unfollow("stu")
    assert not f.alive


def test_a_reader_leaves_nothing_in_a_folder_it_may_write(tmp_path, clean):
    """A writable class folder, the teacher's kernel gone: a follower reading it makes no
    files there (they would be the student's, and stop the teacher publishing again)."""
    sm.create_sandbox("tch")
    sm.hot_reload_source("tch", COUNTER.format(step=1), "counter")
    classroom.publish("tch", tmp_path)
    classroom.unpublish("tch")
    before = sorted(os.listdir(tmp_path))
    f = classroom.follow("stu", tmp_path, teacher="tch")
    assert f.applied == {"counter": 1}
    classroom.unfollow("stu")
    assert sorted(os.listdir(tmp_path)) == before == ["classroom.sqlite3"]
    classroom.publish("tch", tmp_path)               # the teacher, back: publishes again


def test_relative_paths_a_raising_callback_and_a_failed_switch(tmp_path, clean, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sm.create_sandbox("tch")
    sm.hot_reload_source("tch", COUNTER.format(step=1), "counter")
    where = classroom.publish("tch", "class")
    assert where.is_absolute()

    def broken(line):
        raise RuntimeError("a broken callback")

    f = classroom.follow("stu", "class", auto=True, teacher="tch", on_version=broken)
    monkeypatch.chdir(tmp_path.parent)              # %cd in either notebook
    sm.hot_reload_source("tch", COUNTER.format(step=2), "counter")
    wait(lambda: f.applied.get("counter") == 2, "v2 despite the chdir and the callback")
    # a mistyped path fails, and what worked goes on
    with pytest.raises(sm.SandboxError, match="nothing is published"):
        classroom.follow("stu", tmp_path / "clas", teacher="tch")
    with pytest.raises(sm.SandboxError):
        classroom.publish("tch", "/proc/no-such-place/x.sqlite3")
    assert classroom.follower("stu") is f and f.alive
    sm.hot_reload_source("tch", COUNTER.format(step=3), "counter")
    wait(lambda: f.applied.get("counter") == 3, "v3, still published and followed")


SLOW = COUNTER + "import time\ntime.sleep(0.6)\n"


def test_unfollow_waits_for_a_version_being_applied_and_nothing_comes_after(tmp_path, clean):
    sm.create_sandbox("tch")
    sm.hot_reload_source("tch", COUNTER.format(step=1), "counter")
    classroom.publish("tch", tmp_path)
    f = classroom.follow("stu", tmp_path, auto=True, teacher="tch")
    sm.hot_reload_source("tch", SLOW.format(step=2), "counter")     # its body: 0.6 s
    wait(lambda: "stu" in classroom._applying, "the student's apply to start")
    classroom.unfollow("stu")
    # once unfollow returned, the version being applied is applied, and nothing more
    assert f.applied.get("counter") == 2 and not f.alive
    sm.hot_reload_source("tch", COUNTER.format(step=3), "counter")
    f.check()                                                       # a late event
    assert f.applied.get("counter") == 2
    assert sm.get_sandbox("stu").Counter().inc() == 2


RENAMED = ("class Counter:\n    def __init__(self):\n        self.n = 0\n        self.count = 0\n"
           "    def inc(self):\n        self.count += 5\n        return self.count\n")


def copy_n(state, old_version, new_version):
    return {**state, "count": state["n"]}


def test_catching_up_past_the_teachers_retention_still_migrates(tmp_path, clean):
    sm.create_sandbox("tch")                              # keeps the last 10 versions
    sm.hot_reload_source("tch", COUNTER.format(step=1), "counter")
    classroom.publish("tch", tmp_path)
    classroom.follow("stu", tmp_path, auto=True, teacher="tch")
    held = sm.get_sandbox("stu").Counter()
    held.inc()
    classroom.unfollow("stu")                             # away for 11 versions
    for edit in range(10):
        sm.hot_reload_source("tch", COUNTER.format(step=1) + f"# edit {edit}\n", "counter")
    sm.hot_reload_source("tch", RENAMED, "counter", state_handler=copy_n)
    assert 1 not in {v.version for v in sm.list_module_versions("tch", "counter")}
    classroom.follow("stu", tmp_path, auto=True, teacher="tch")
    assert vars(held) == {"n": 1, "count": 1} and held.inc() == 6


def test_a_catch_up_loads_modules_that_belong_together_as_one(tmp_path, clean):
    sm.create_sandbox("tch")
    c1 = "def helper():\n    return 1\n"
    sm.hot_reload_source("tch", {"c": c1, "a": "from .c import helper\nf = helper\n"})
    classroom.publish("tch", tmp_path)
    f = classroom.follow("stu", tmp_path, teacher="tch")      # waits: catches up on apply
    # one change renames c's helper and a's use of it; a later one changes c again
    c2 = "def helper2():\n    return 2\n"
    sm.hot_reload_source("tch", {"c": c2, "a": "from .c import helper2\nf = helper2\n"})
    sm.hot_reload_source("tch", c2.replace("2\n", "3\n").replace("helper3", "helper2"), "c")
    wait(lambda: {t.module for t in f.pending()} == {"a", "c"}, "both to wait")
    # Apply on one module takes the modules its change made with it
    lines = f.apply("a", f.pending()[0].version)
    assert [line.split(":")[0] for line in lines] == ["stu.a", "stu.c"], lines
    assert f.failed == {} and sm.get_sandbox("stu").modules["a"].f() == 3


def teacher_in_ipython(tmp_path):
    """A teacher's sandbox made and published by the magics; a student following it,
    holding a counter at 1."""
    from IPython import get_ipython
    from IPython.testing.globalipapp import start_ipython

    ip = start_ipython() or get_ipython()
    ip.run_line_magic("load_ext", "sandbox_magic")
    ip.run_cell_magic("sandbox_reload", "tch counter", COUNTER.format(step=1))
    ip.run_line_magic("sandbox_publish", f"tch {tmp_path}")
    f = classroom.follow("stu", tmp_path, auto=True, teacher="tch")
    held = sm.get_sandbox("stu").Counter()
    held.inc()
    return ip, f, held


def test_a_handler_cell_binding_another_name_goes_along(tmp_path, clean, capsys):
    ip, f, held = teacher_in_ipython(tmp_path)
    ip.run_cell_magic("sandbox_state_handler", "tch counter",
                      "def make(field):\n"
                      "    def inner(state, old_version, new_version):\n"
                      "        return {**state, field: state['n']}\n"
                      "    return inner\n\n"
                      "migrate = make('count')\n")
    ip.run_cell_magic("sandbox_reload", "tch counter", RENAMED)
    wait(lambda: f.applied.get("counter") == 2 or f.failed, "the version and its handler")
    assert f.failed == {} and held.count == 1
    capsys.readouterr()


def test_a_module_that_fails_here_does_not_hold_back_the_others(tmp_path, clean):
    sm.create_sandbox("tch")
    sm.hot_reload_source("tch", {"exercise": "def answer():\n    return 1\n",
                                 "plots": "X = 1\n"})
    classroom.publish("tch", tmp_path)
    only_teacher = "if '.stu.' in __name__:\n    raise ImportError('no plotting library')\n"
    sm.hot_reload_source("tch", "X = 2\n" + only_teacher, "plots")
    sm.hot_reload_source("tch", "def answer():\n    return 2\n", "exercise")
    f = classroom.follow("stu", tmp_path, teacher="tch")       # catches up with both
    assert f.applied.get("exercise") == 2 and sm.get_sandbox("stu").answer() == 2
    assert list(f.failed) == [("plots", 2)] and "no plotting library" in f.failed[("plots", 2)]


def test_a_changes_check_runs_while_its_modules_are_as_it_left_them(tmp_path, clean):
    sm.create_sandbox("tch")
    sm.hot_reload_source("tch", {"a": "A = 1\n", "b": "B = 2\n"})
    classroom.publish("tch", tmp_path)
    f = classroom.follow("stu", tmp_path, teacher="tch")
    sm.hot_reload_source("tch", {"a": "A = 10\n", "b": "B = 20\n"}, check="A + B == 30")
    sm.hot_reload_source("tch", "B = 5\n", "b")          # the first change's check no more
    wait(lambda: len(f.pending()) == 2, "both to wait")
    assert f.apply() == ["stu.a: v2 from the teacher applied",
                         "stu.b: v3 from the teacher applied"]
    sm.hot_reload_source("tch", {"a": "A = 7 if '.tch.' in __name__ else 0\n",
                                 "b": "B = 6\n"}, check="A + B == 13")
    wait(lambda: len(f.pending()) == 2, "the next change to wait")
    failed = f.apply()
    assert all("the check A + B == 13 returned False" in line for line in failed), failed


def test_a_handler_by_module_from_a_cell_and_skip_of_one_module(tmp_path, clean, capsys):
    ip, f, held = teacher_in_ipython(tmp_path)
    ip.run_cell_magic("sandbox_state_handler", "tch counter",
                      "def copy(state, old_version, new_version):\n"
                      "    return {**state, 'count': state['n']}\n\n"
                      "class ByModule:\n"
                      "    def for_module(self, name):\n"
                      "        return copy if name == 'counter' else None\n"
                      "    def __call__(self, state, old_version, new_version):\n"
                      "        return state\n\n"
                      "by_module = ByModule()\n")
    assert "state handler 'by_module' will migrate" in capsys.readouterr().out
    ip.run_cell_magic("sandbox_reload", "tch counter", RENAMED)
    wait(lambda: f.applied.get("counter") == 2 or f.failed, "v2 and its handler by module")
    assert f.failed == {} and held.count == 1
    # Skip acts on the one module named (Apply takes what belongs with it)
    classroom.unfollow("stu")
    f = classroom.follow("stu", tmp_path, teacher="tch")
    sm.hot_reload_source("tch", {"counter": COUNTER.format(step=3), "util": "U = 1\n"})
    wait(lambda: len(f.pending()) == 2, "both to wait")
    with pytest.raises(sm.SandboxError, match="give module= too"):
        f.skip(version=3)
    f.skip("util", 1)
    assert [(t.module, t.version) for t in f.pending()] == [("counter", 3)]


def test_a_withdrawn_module_waits_no_more_and_a_locked_store_is_written_later(tmp_path,
                                                                              clean):
    import sqlite3
    import threading

    sm.create_sandbox("tch")
    sm.hot_reload_source("tch", {"a": "A = 1\n", "b": "B = 1\n"})
    path = classroom.publish("tch", tmp_path)
    f = classroom.follow("stu", tmp_path, teacher="tch")
    sm.hot_reload_source("tch", "B = 2\n", "b")
    wait(lambda: f.pending(), "b v2 to wait")
    sm.destroy_sandbox("tch")                    # the next lesson, without module b
    sm.create_sandbox("tch")
    sm.hot_reload_source("tch", "A = 1\n", "a")
    classroom.publish("tch", tmp_path)
    wait(lambda: not f.pending(), "the withdrawn b to wait no more")
    # another writer holds the file for a while: the teacher's reload does not wait long,
    # and what it missed is published once the file is free
    other = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    threading.Timer(1.5, lambda: other.execute("COMMIT")).start()
    started = time.perf_counter()
    with pytest.warns(sm.StoreWarning):
        sm.hot_reload_source("tch", "A = 2\n", "a")
    assert time.perf_counter() - started < 3.0
    wait(lambda: f.pending() and f.pending()[0].version == 2, "v2, published later")
    other.close()
