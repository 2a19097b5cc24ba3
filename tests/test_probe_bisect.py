"""probe and bisect: every retained version looked at in a scratch sandbox."""

from __future__ import annotations

import pytest

import sandbox_magic as sm

LIB = "def unit():\n    return 1\n"


def _history(sid, bad_from=5, n=8):
    sm.hot_reload_source(sid, LIB, module="lib")
    for k in range(1, n + 1):
        factor = k if k < bad_from else -k
        sm.hot_reload_source(sid, "from lib import unit\n"
                                  f"def score(x):\n    return x * {factor} * unit()\n",
                             module="m")


def test_probe_gives_each_versions_value_and_leaves_the_sandbox_alone(sid):
    _history(sid)
    sb = sm.get_sandbox(sid)
    before = sb.score
    values = sm.probe(sid, "m", "score(1)")
    assert values == {1: 1, 2: 2, 3: 3, 4: 4, 5: -5, 6: -6, 7: -7, 8: -8}
    assert sm.get_module_version(sid, "m") == 8 and sb.score is before and sb.score(1) == -8
    assert not [s for s in sm.list_sandboxes() if s.id.startswith("_probe_")]


def test_probe_reports_an_exception_as_that_versions_value(sid):
    sm.hot_reload_source(sid, "def f():\n    return 1\n", module="m")
    sm.hot_reload_source(sid, "def f():\n    return 1 / 0\n", module="m")
    values = sm.probe(sid, "m", lambda sb: sb.f())
    assert values[1] == 1 and isinstance(values[2], ZeroDivisionError)


@pytest.mark.parametrize("bad_from", [1, 2, 5, 8, 99])
def test_bisect_finds_the_first_bad_version(sid, bad_from):
    _history(sid, bad_from=bad_from)
    expected = bad_from if bad_from <= 8 else None
    assert sm.bisect(sid, "m", "score(1) > 0") == expected
    assert sm.bisect(sid, "m", lambda sb: sb.score(2) > 0) == expected


def test_bisect_treats_a_version_that_raises_as_bad(sid):
    sm.hot_reload_source(sid, "def f():\n    return 1\n", module="m")
    sm.hot_reload_source(sid, "def f():\n    return 2\n", module="m")
    sm.hot_reload_source(sid, "def f():\n    raise KeyError('gone')\n", module="m")
    assert sm.bisect(sid, "m", "f() > 0") == 3


def test_the_magics_print_one_line_per_version_and_the_culprit(new_id, capsys):
    from IPython import get_ipython
    from IPython.testing.globalipapp import start_ipython
    ip = start_ipython() or get_ipython()
    ip.run_line_magic("load_ext", "sandbox_magic")
    sm.create_sandbox(new_id)
    _history(new_id, bad_from=4, n=5)
    capsys.readouterr()
    ip.run_line_magic("sandbox_probe", f"{new_id} m score(1)")
    assert capsys.readouterr().out.splitlines() == ["v1: 1", "v2: 2", "v3: 3", "v4: -4",
                                                    "v5: -5"]
    ip.run_line_magic("sandbox_bisect", f"{new_id} m 'score(1) > 0'")
    out = capsys.readouterr().out
    assert "first false in m v4 (v3 was the last good one)" in out
