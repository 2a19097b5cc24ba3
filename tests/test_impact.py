"""A reload re-runs exactly the importers whose import-time code can see the change.

Functions and classes are patched in place, so an importer that only holds them
keeps working without running again; an importer whose body used a changed name
while importing (a call, a constant, ``import *``), or bound a changed value, runs
again in the same transaction.  What the analysis cannot read re-runs everything.
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
        "holds": "from lib import f, Base\ndef twice():\n    return 2 * f()\n"
                 "class Child(Base):\n    pass\n",
        "calls": "from lib import f\nAT_IMPORT = f()\n",
        "value": "from lib import STEP\n",
        "star": "from lib import *\n",
        "attr": "import lib\nLABEL = 'step %d' % lib.STEP\n",
        "later": "def get():\n    import lib\n    return lib.f()\n",
    })
    return sm.get_sandbox(sid)


def test_an_edit_inside_a_function_reruns_only_the_importers_that_call_it(sid, loaded):
    child = loaded.Child()
    r = reload_lib(sid, LIB.replace("return 1", "return 5"))
    assert set(r.dependents) == {"calls"}       # "star" bound f, which is patched in place
    assert loaded.twice() == 10 and loaded.get() == 5 and loaded.AT_IMPORT == 5
    assert isinstance(child, loaded.Base) and child.who() == "base"


def test_a_changed_value_reruns_the_importers_that_bound_or_read_it(sid, loaded):
    r = reload_lib(sid, LIB.replace("STEP = 1", "STEP = 7"))
    assert set(r.dependents) == {"value", "star", "attr"}
    assert loaded.modules["value"].STEP == 7 and loaded.LABEL == "step 7"


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


def test_a_name_added_or_an_alias_of_a_value_reaches_star_importers(sid, loaded):
    r = reload_lib(sid, LIB + "def g():\n    return 2\n")
    assert "star" in r.dependents and loaded.modules["star"].g() == 2
    r = reload_lib(sid, LIB + "def g():\n    return 2\nAlias = Base\n")
    assert "star" in r.dependents
    # an alias of a class is that class: patched in place, nothing to re-run for it
    r = reload_lib(sid, LIB.replace("'base'", "'changed'") + "def g():\n    return 2\n"
                   "Alias = Base\n")
    assert "star" not in r.dependents and loaded.modules["star"].Alias().who() == "changed"


def test_a_changed_value_read_by_a_function_reaches_importers_that_call_it(sid):
    sm.hot_reload_source(sid, {
        "tax": "RATE = 0.20\ndef add_tax(x):\n    return round(x * (1 + RATE), 2)\n",
        "pricing": "from tax import add_tax\nFEATURED = add_tax(10.0)\n"
                   "def price(x):\n    return add_tax(x)\n",
        "label": "from tax import add_tax\ndef show(x):\n    return str(add_tax(x))\n",
    })
    r = sm.hot_reload_source(
        sid, "RATE = 0.05\ndef add_tax(x):\n    return round(x * (1 + RATE), 2)\n", "tax")
    assert r.dependents == ("pricing",)          # label only calls add_tax when called
    sb = sm.get_sandbox(sid)
    assert (sb.FEATURED, sb.price(100.0), sb.show(100.0)) == (10.5, 105.0, "105.0")


def test_an_importer_reaching_a_changed_function_through_its_own_helper_runs_again(sid):
    sm.hot_reload_source(sid, {
        "tax": "def add_tax(x):\n    return x + 1\n",
        "shop": "from tax import add_tax\ndef helper():\n    return add_tax(1)\nX = helper()\n",
        "idle": "import tax\ndef later():\n    return tax.add_tax(1)\n",
    })
    r = sm.hot_reload_source(sid, "def add_tax(x):\n    return x + 10\n", "tax")
    assert r.dependents == ("shop",)
    assert sm.get_sandbox(sid).X == 11 and sm.get_sandbox(sid).later() == 11
