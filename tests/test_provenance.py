"""Each cell records which sandbox modules' code it ran, at which versions; tracebacks
name the version of each sandbox frame."""

from __future__ import annotations

import itertools
import linecache
import sys
import threading
import time

import pytest
from IPython import get_ipython
from IPython.testing.globalipapp import start_ipython

import sandbox_magic as sm
from sandbox_magic.api import provenance

_ids = itertools.count()
MONITORING = sys.version_info >= (3, 12)


@pytest.fixture(scope="module")
def ip():
    shell = start_ipython() or get_ipython()
    shell.run_line_magic("load_ext", "sandbox_magic")
    return shell


@pytest.fixture
def sb(ip):
    name = f"pv{next(_ids)}"
    ip.run_cell(f"%%sandbox_reload {name} b\ndef g():\n    return 1\n")
    ip.run_cell(f"%%sandbox_reload {name} a\nfrom b import g\ndef f():\n    return g() + 1\n"
                f"def alone():\n    return 0\n")
    ip.run_cell(f"%%sandbox_reload {name} c\ndef h():\n    return 5\n")
    yield name
    sm.destroy_sandbox(name)
    ip.user_ns.pop(name, None)


def last(ip, text):
    before = len(sm.cell_provenance())
    ip.run_cell(text)
    runs = sm.cell_provenance()
    return runs[-1] if len(runs) > before else None


def labels(run):
    return sorted(f"{m.module} v{m.version}" for m in run.modules) if run else []


def test_only_the_modules_whose_code_ran_are_recorded(ip, sb):
    run = last(ip, f"{sb}.modules['a'].alone()")
    assert labels(run) == ["a v1"] and not run.versioning
    assert last(ip, "1 + 1") is None


def test_nested_calls_across_modules_are_recorded(ip, sb):
    assert labels(last(ip, f"{sb}.modules['a'].f()")) == ["a v1", "b v1"]


def test_a_reload_cell_records_the_version_its_body_ran(ip, sb):
    run = last(ip, f"%%sandbox_reload {sb} c\nX = 1\ndef h():\n    return 6\n")
    assert labels(run) == ["c v2"] and run.versioning     # no output's maker: no badge
    # an edit applied in place runs no module code: nothing to record
    assert last(ip, f"%%sandbox_reload {sb} c\nX = 1\ndef h():\n    return 8\n") is None


def test_a_hot_loop_is_recorded_once(ip, sb):
    run = last(ip, f"h = {sb}.modules['c'].h\nfor _ in range(100_000):\n    h()\n")
    assert labels(run) == ["c v1"]


@pytest.mark.skipif(not MONITORING, reason="3.11 watches the cell's own thread only")
def test_threads_the_cell_starts_count_and_older_threads_do_not(ip, sb):
    stop = threading.Event()
    h = sm.get_sandbox(sb).modules["c"].h

    def background():                    # running before the cell: not the cell's code
        while not stop.is_set():
            h()
            time.sleep(0.001)

    t = threading.Thread(target=background, daemon=True)
    t.start()
    try:
        time.sleep(0.01)
        ip.user_ns["_pv_g"] = sm.get_sandbox(sb).modules["b"].g
        run = last(ip, "import threading\nth = threading.Thread(target=_pv_g)\n"
                       "th.start(); th.join()\n")
        assert labels(run) == ["b v1"]
    finally:
        stop.set()
        t.join()


def test_3_11_watches_cells_that_name_sandbox_objects(ip, sb):
    # a notebook function reaching sandbox code: recorded on 3.12+, not on 3.11
    ip.user_ns["_pv_g2"] = sm.get_sandbox(sb).modules["b"].g
    ip.run_cell("def _pv_indirect():\n    return _pv_g2()\n")
    ip.user_ns["_pv_g2"] = sm.get_sandbox(sb).modules["b"].g
    run = last(ip, "_pv_indirect()")
    if MONITORING:
        assert labels(run) == ["b v1"]
    else:
        assert run is None
    assert labels(last(ip, "_pv_g2()")) == ["b v1"]     # names a sandbox function


def test_provenance_says_which_version_ran_after_a_reload(ip, sb, capsys):
    last(ip, f"{sb}.modules['c'].h()")
    ip.run_cell(f"%%sandbox_reload {sb} c\ndef h():\n    return 7\n")
    last(ip, f"{sb}.modules['c'].h()")
    capsys.readouterr()
    ip.run_line_magic("sandbox_ran", "3")
    out = capsys.readouterr().out
    assert f"{sb}.c v1 (now v2)" in out and f"{sb}.c v2" in out
    runs = sm.cell_provenance(last=2)
    assert [labels(r) for r in runs] == [["c v1"], ["c v2"]]
    assert runs[-1].to_dict()["modules"] == [{"sandbox": sb, "module": "c", "version": 2}]
    ip.run_line_magic("sandbox_undo", f"{sb} c")          # v1 current again: v2 is stale
    capsys.readouterr()
    ip.run_line_magic("sandbox_ran", "2")
    out = capsys.readouterr().out.splitlines()
    assert out[-2].endswith(f"{sb}.c v1") and out[-1].endswith(f"{sb}.c v2 (now v1)"), out


def test_a_traceback_names_the_version_that_raised_also_after_a_reload(ip, sb):
    ip.run_cell(f"%%sandbox_reload {sb} c\ndef h():\n    raise ValueError('v2 says no')\n")
    try:
        sm.get_sandbox(sb).modules["c"].h()
    except ValueError as exc:
        caught = exc
    ip.run_cell(f"%%sandbox_reload {sb} c\n\n\ndef h():\n    return 3\n")
    (line,) = provenance.sandbox_frames(caught.__traceback__)
    assert line == f"  {sb}.c v2, line 2, in h"
    frame = [f for f, _ in __import__("traceback").walk_tb(caught.__traceback__)][-1]
    # the source lines shown are that version's, not the current one's
    assert "v2 says no" in linecache.getline(frame.f_code.co_filename, 2)
    assert provenance.name_versions(caught)
    assert f"{sb}.c v2, line 2, in h" in caught.__notes__[-1]


def test_the_shell_shows_the_versions_under_the_error(ip, sb, capsys):
    ip.run_cell(f"%%sandbox_reload {sb} c\ndef h():\n    raise KeyError('gone')\n")
    capsys.readouterr()
    r = ip.run_cell(f"{sb}.modules['c'].h()")
    assert isinstance(r.error_in_exec, KeyError)
    out = capsys.readouterr()
    text = out.out + out.err
    assert "sandbox code in this traceback" in text and f"{sb}.c v2, line 2, in h" in text
    assert sys.last_value is r.error_in_exec           # %debug still finds it


def test_a_limited_recording_leaves_after_its_calls_and_puts_back_the_profiler():
    from sandbox_magic.engine import importtime

    def f():
        return 1

    def mine(frame, event, arg):
        return None

    sys.setprofile(mine)
    try:
        seen: set = set()
        token = importtime.NATIVE.calls_start(seen, (), 5)
        for _ in range(10):
            f()
        assert importtime.NATIVE.calls_stop(token) is False     # incomplete: it left
        assert ... in seen and f.__code__ in seen
        assert sys.getprofile() is mine
    finally:
        sys.setprofile(None)


def test_3_11_watches_a_cells_first_calls_only(ip, sb):
    ip.user_ns["_pv_h"] = sm.get_sandbox(sb).modules["c"].h
    run = last(ip, "def _pv_plain():\n    pass\nfor _ in range(30_000):\n    _pv_plain()\n_pv_h()\n")
    if MONITORING:
        assert labels(run) == ["c v1"]
    else:
        assert run is None          # _pv_h was called after the first 20,000 calls


def test_chained_errors_are_named_and_a_second_raise_replaces_the_note(ip, sb):
    ip.run_cell(f"%%sandbox_reload {sb} c\ndef h():\n    raise KeyError('inner')\n")
    h = sm.get_sandbox(sb).modules["c"].h
    try:
        try:
            h()
        except KeyError as inner:
            raise RuntimeError("outer") from inner
    except RuntimeError as exc:
        outer = exc
    assert provenance.name_versions(outer)
    assert f"{sb}.c v2, line 2, in h" in outer.__cause__.__notes__[-1]
    err = ValueError("again")
    for _ in range(2):
        try:
            raise err
        except ValueError:
            pass
    provenance.name_versions(err)
    provenance.name_versions(err)
    assert len(getattr(err, "__notes__", [])) <= 1


def test_syntax_errors_look_as_they_do_without_the_extension(ip, capsys):
    capsys.readouterr()
    ip.run_cell("def f(:\n  pass")
    out = capsys.readouterr()
    text = out.out + out.err
    assert "SyntaxError" in text and "run_cell_async" not in text and "ast_parse" not in text


def test_the_users_own_profiler_keeps_its_events_and_can_be_saved_and_restored(ip, sb):
    ip.user_ns["_pv_c"] = sm.get_sandbox(sb).modules["c"].h
    events = []

    def mine(frame, event, arg):
        if event == "call":
            events.append(frame.f_code.co_name)

    sys.setprofile(mine)
    try:
        r = ip.run_cell("def _pv_user():\n    return 1\nfor _ in range(30_000):\n    _pv_user()\n"
                        "_pv_c()\n")
        assert r.success and events.count("_pv_user") == 30_000
    finally:
        sys.setprofile(None)
    # code that saves "the profiler" while a cell is watched, and puts it back later
    r = ip.run_cell("import sys\nsaved = sys.getprofile()\n_pv_c()\nsys.setprofile(saved)\n"
                    "_pv_c()\nsys.setprofile(None)\n")
    assert r.success, r.error_in_exec


def test_equal_modules_of_two_sandboxes_are_told_apart(ip):
    ip.run_cell("%%sandbox_reload pvalpha m\ndef f():\n    return 1\n")
    ip.run_cell("%%sandbox_reload pvbeta m\ndef f():\n    return 5\n")
    ip.run_cell("%%sandbox_reload pvbeta m\ndef f():\n    return 1\n")   # v2: alpha's code
    try:
        run = last(ip, "pvalpha.modules['m'].f()")
        assert [m.label() for m in run.modules] == ["pvalpha.m v1"]
        run = last(ip, "pvbeta.modules['m'].f()")
        assert [m.label() for m in run.modules] == ["pvbeta.m v2"]
    finally:
        for name in ("pvalpha", "pvbeta"):
            sm.destroy_sandbox(name)
            ip.user_ns.pop(name, None)


def test_a_dry_run_records_nothing_and_a_cell_that_ran_two_versions_names_both(ip, sb):
    assert last(ip, f"%sandbox_rollback {sb} c 1 --dry-run") is None
    ip.run_cell(f"%%sandbox_reload {sb} c\ndef h():\n    return 2\n")
    ip.run_cell(f"%sandbox_rollback {sb} c 1")
    run = last(ip, f"import sandbox_magic as sm\n{sb}.modules['c'].h()\n"
                   f"sm.rollback_module({sb!r}, 'c', 2, dry_run=True)\n"
                   f"sm.hot_reload_source({sb!r}, 'X = 1\\ndef h():\\n    return 3\\n', 'c')\n"
                   f"{sb}.modules['c'].h()\n")
    assert labels(run) == ["c v1", "c v3"]
