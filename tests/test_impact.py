"""A reload re-runs exactly the importers whose import-time code could see the change.

A module that runs again gets new objects for every value it holds; its functions
and classes are patched in place.  So an importer that only binds its functions and
classes and uses them inside its own functions keeps working without running again;
an importer that bound a value, star-imported it, or used any of its names while
importing (directly, or through its own functions) runs again in the same
transaction.  What the analysis cannot read re-runs everything.
"""

from __future__ import annotations

import pytest

import sandbox_magic as sm

LIB = "def f():\n    return 1\n\nSTEP = 1\n\nclass Base:\n    def who(self):\n        return 'base'\n"


def reload_lib(sid, new):
    return sm.hot_reload_source(sid, new, "lib")


@pytest.fixture
def loaded(sid):
    sm.hot_reload_source(sid, {
        "lib": LIB,
        "idle": "from lib import f, Base\ndef twice():\n    return 2 * f()\n"
                "def make():\n    return Base()\n",
        "holds": "from lib import Base\nclass Child(Base):\n    pass\n",
        "calls": "from lib import f\nAT_IMPORT = f()\n",
        "value": "from lib import STEP\n",
        "star": "from lib import *\n",
        "attr": "import lib\nLABEL = 'step %d' % lib.STEP\n",
        "later": "def get():\n    import lib\n    return lib.f()\n",
    })
    return sm.get_sandbox(sid)


def test_importers_that_only_hold_functions_and_classes_do_not_run_again(sid, loaded):
    child = loaded.Child()
    r = reload_lib(sid, LIB.replace("return 1", "return 5"))
    assert set(r.dependents) == {"holds", "calls", "value", "star", "attr"}
    assert loaded.twice() == 10 and loaded.get() == 5 and loaded.AT_IMPORT == 5
    assert isinstance(child, loaded.Base) and child.who() == "base"
    assert isinstance(loaded.make(), loaded.Base)


def test_a_changed_value_reruns_the_importers_that_bound_or_read_it(sid, loaded):
    r = reload_lib(sid, LIB.replace("STEP = 1", "STEP = 7"))
    assert "idle" not in r.dependents and {"value", "star", "attr"} <= set(r.dependents)
    assert loaded.modules["value"].STEP == 7 and loaded.LABEL == "step 7"


def test_state_an_importer_put_into_a_module_at_import_survives_its_rerun(sid):
    sm.hot_reload_source(sid, {
        "reg": "REG = []\ndef register(fn):\n    REG.append(fn.__name__)\n    return fn\n",
        "user": "import reg\n@reg.register\ndef a():\n    pass\n",
    })
    sm.hot_reload_source(sid, "REG = []\ndef register(fn):\n    REG.append(fn.__name__)\n"
                              "    return fn\nOTHER = 1\n", "reg")
    assert sm.get_sandbox(sid).REG == ["a"]


def test_a_value_computed_from_a_changed_function_counts_as_changed(sid):
    sm.hot_reload_source(sid, {"lib": "def f():\n    return 1\nX = f()\n",
                               "user": "from lib import X\n"})
    r = sm.hot_reload_source(sid, "def f():\n    return 2\nX = f()\n", "lib")
    assert r.dependents == ("user",) and sm.get_sandbox(sid).modules["user"].X == 2


def test_code_the_analysis_cannot_read_reruns_every_importer(sid):
    sm.hot_reload_source(sid, {"lib": "exec('X = 1')\ndef f():\n    return 1\n",
                               "user": "from lib import f\n"})
    r = sm.hot_reload_source(sid, "exec('X = 2')\ndef f():\n    return 2\n", "lib")
    assert r.dependents == ("user",)


def test_an_importer_that_fails_when_rerun_refuses_the_whole_reload(sid, loaded):
    with pytest.raises(sm.ReloadError):
        reload_lib(sid, LIB.replace("STEP = 1", "STEP = 'x'"))   # attr's '%d' fails
    assert sm.get_module_version(sid, "lib") == 1 and loaded.LABEL == "step 1"


def test_a_module_reached_through_an_unchanged_helper_module_runs_again(sid):
    sm.hot_reload_source(sid, {"m": "X = 1\n", "d": "import m\ndef g():\n    return m.X\n",
                               "e": "from d import g\nV = g()\n"})
    r = sm.hot_reload_source(sid, "X = 2\n", "m")
    assert set(r.dependents) == {"d", "e"} and sm.get_sandbox(sid).V == 2


def test_an_importer_of_a_submodule_through_its_package_sees_the_new_submodule(sid):
    sm.hot_reload_source(sid, {"pkg": "", "pkg.sub": "x = 1\n",
                               "d": "import pkg.sub\nV = pkg.sub.x\n",
                               "e": "from pkg import sub\nW = sub.x\n"})
    sm.hot_reload_source(sid, "x = 7\n", "pkg.sub")
    sb = sm.get_sandbox(sid)
    assert (sb.V, sb.W) == (7, 7)


def test_a_rerun_importer_calling_an_unchanged_module_sees_the_new_state(sid):
    sm.hot_reload_source(sid, {"m": "X = 1\n", "h": "import m\ndef get():\n    return m.X\n",
                               "d": "import m, h\nY = m.X\nZ = h.get()\n"})
    r = sm.hot_reload_source(sid, "X = 2\n", "m")
    assert set(r.dependents) == {"h", "d"}
    assert (sm.get_sandbox(sid).Y, sm.get_sandbox(sid).Z) == (2, 2)


def test_star_importers_rerun_only_for_values_and_reexports(sid):
    sm.hot_reload_source(sid, {
        "lib": "__all__ = ['f']\nX = 1\ndef f():\n    return X\n",
        "funcs": "from lib import *\ndef twice():\n    return 2 * f()\n",
        "vals": "from m2 import *\n",
        "m2": "Y = 1\n",
        "pkg": "from .sub import *\n", "pkg.sub": "Z = 1\n",
        "outer": "from pkg import *\nW = Z\n",
    })
    r = sm.hot_reload_source(sid, "__all__ = ['f']\nX = 2\ndef f():\n    return X\n", "lib")
    assert "funcs" not in r.dependents and sm.get_sandbox(sid).twice() == 4
    r = sm.hot_reload_source(sid, "Y = 2\n", "m2")
    assert r.dependents == ("vals",) and sm.get_sandbox(sid).modules["vals"].Y == 2
    r = sm.hot_reload_source(sid, "Z = 2\n", "pkg.sub")
    assert set(r.dependents) == {"pkg", "outer"} and sm.get_sandbox(sid).W == 2
