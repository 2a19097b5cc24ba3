"""Edits inside function bodies are applied without running any module body again
(engine/inplace.py); everything else, and every edit whose effect import-time code
could see, runs bodies as before."""

from __future__ import annotations

import inspect
import sys
import traceback
import types

import pytest
from conftest import src

import sandbox_magic as sm
from sandbox_magic.engine import importtime, inplace


@pytest.fixture
def runs():
    """A plain module that sandbox bodies count their runs in."""
    probe = types.ModuleType("inplace_probe")
    probe.runs = {}
    sys.modules["inplace_probe"] = probe
    yield probe.runs
    del sys.modules["inplace_probe"]


BASE = src('''
    import functools
    import inplace_probe
    inplace_probe.runs["m"] = inplace_probe.runs.get("m", 0) + 1
    LIMIT = 3

    def f(a):
        return a + 1

    def g():
        return f(1)

    class Base:
        def who(self):
            return "base"

    class A(Base):
        """An A."""

        def m(self):
            return 10

        def who(self):
            return "a:" + super().who()

        @property
        def p(self):
            return 5

        @staticmethod
        def s():
            return "s"

        @classmethod
        def c(cls):
            return "c"

    @functools.lru_cache
    def cached(x):
        return f(x)

    def last():
        raise ValueError("from last")
''')


def edit(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new)


def test_body_edits_apply_without_running_the_body(sid, runs):
    sm.hot_reload_source(sid, BASE, "m")
    mod = sm.get_sandbox(sid).modules["m"]
    a = mod.A()
    f, A, cached = mod.f, mod.A, mod.cached
    assert cached(1) == 2 and runs["m"] == 1
    v2 = edit(BASE, "return a + 1", "return a + 100")
    v2 = edit(v2, "return 10", "return 11")
    v2 = edit(v2, 'return "a:" + super().who()', 'return "A:" + super().who()')
    v2 = edit(v2, "return 5", "return 6")
    v2 = edit(v2, 'return "s"', 'return "S"')
    v2 = edit(v2, 'return "c"', 'return "C"')
    r = sm.hot_reload_source(sid, v2, "m")
    assert r.status == "hot_reloaded" and r.new_version == 2
    assert runs["m"] == 1                      # no body ran
    assert mod.f is f and mod.A is A and mod.cached is cached
    assert f(1) == 101 and mod.g() == 101
    assert (a.m(), a.who(), a.p, A.s(), A.c()) == (11, "A:base", 6, "S", "C")
    assert cached(1) == 101                    # the cache was started afresh
    assert sm.list_module_versions(sid, "m")[0].source == v2


def test_line_numbers_and_sources_follow_an_edit_that_moves_lines(sid, runs):
    sm.hot_reload_source(sid, BASE, "m")
    mod = sm.get_sandbox(sid).modules["m"]
    v2 = edit(BASE, "return a + 1", "b = a\n\n\n    return b + 1")
    sm.hot_reload_source(sid, v2, "m")
    assert runs["m"] == 1
    lines = v2.splitlines()
    assert inspect.getsource(mod.A.m).strip() == "def m(self):\n        return 10".strip()
    assert mod.last.__code__.co_firstlineno == lines.index("def last():") + 1
    assert inspect.getsource(mod.A).startswith("class A(Base):")
    with pytest.raises(ValueError) as info:
        mod.last()
    frame = traceback.extract_tb(info.value.__traceback__)[-1]
    assert frame.line == 'raise ValueError("from last")'
    assert frame.lineno == lines.index('    raise ValueError("from last")') + 1


def test_a_docstring_edit_reaches_the_function(sid, runs):
    text = src('''
        def f():
            "one"
            return 1
    ''')
    sm.hot_reload_source(sid, text, "m")
    mod = sm.get_sandbox(sid).modules["m"]
    sm.hot_reload_source(sid, text.replace('"one"', '"two"'), "m")
    assert mod.f.__doc__ == "two"


def test_import_time_use_of_the_changed_function_runs_the_body(sid, runs):
    text = BASE + "VALUE = g()\n"
    sm.hot_reload_source(sid, text, "m")
    mod = sm.get_sandbox(sid).modules["m"]
    assert mod.VALUE == 2
    sm.hot_reload_source(sid, edit(text, "return a + 1", "return a + 5"), "m")
    assert runs["m"] == 2 and mod.VALUE == 6   # f reaches VALUE through g: the body ran


def test_an_importer_that_calls_it_at_import_runs_again(sid, runs):
    sm.hot_reload_source(sid, {"m": BASE, "user": "from m import g\nFROM_G = g()\n"})
    sb = sm.get_sandbox(sid)
    assert sb.modules["user"].FROM_G == 2
    r = sm.hot_reload_source(sid, edit(BASE, "return a + 1", "return a + 7"), "m")
    assert sb.modules["user"].FROM_G == 8 and "user" in r.dependents


def test_an_importer_that_only_binds_the_function_stays(sid, runs):
    sm.hot_reload_source(sid, {"m": BASE, "user": "from m import g\ndef h():\n    return g()\n"})
    sb = sm.get_sandbox(sid)
    r = sm.hot_reload_source(sid, edit(BASE, "return a + 1", "return a + 7"), "m")
    assert r.dependents == () and runs["m"] == 1
    assert sb.modules["user"].h() == 8


def test_module_level_changes_run_the_body(sid, runs):
    sm.hot_reload_source(sid, BASE, "m")
    mod = sm.get_sandbox(sid).modules["m"]
    for old, new in [("LIMIT = 3", "LIMIT = 4"),                 # a value
                     ("    def p(self):", "    def p(self, x=1):"),   # a signature
                     ('    """An A."""\n', '    """An A."""\n    K = 1\n'),   # class body
                     ("@functools.lru_cache\n", "@functools.lru_cache(maxsize=4)\n")]:
        before = runs["m"]
        sm.hot_reload_source(sid, edit(BASE, old, new), "m")
        assert runs["m"] == before + 1, (old, new)
    assert mod.LIMIT == 3


def test_a_check_runs_the_body_in_staging_and_a_refusal_changes_nothing(sid, runs):
    """A check runs on the staged new version before the switch (see test_checks.py),
    so a body edit with a check is not applied in place."""
    sm.hot_reload_source(sid, BASE, "m")
    mod = sm.get_sandbox(sid).modules["m"]
    seen = []

    def check(sb):
        seen.append(sb.modules["m"].f(1))
        return False

    with pytest.raises(sm.ReloadError) as info:
        sm.hot_reload_source(sid, edit(BASE, "return a + 1", "return a + 9"), "m", check=check)
    assert info.value.step == "check" and seen == [10]
    assert mod.f(1) == 2 and sm.get_module_version(sid, "m") == 1 and runs["m"] == 2
    # and the next edit starts from the code that really runs
    sm.hot_reload_source(sid, edit(BASE, "return a + 1", "return a + 3"), "m")
    assert mod.f(1) == 4 and runs["m"] == 2


def test_a_failure_inside_the_commit_undoes_every_function(sid, runs, monkeypatch):
    sm.hot_reload_source(sid, BASE, "m")
    mod = sm.get_sandbox(sid).modules["m"]
    real_plan = inplace.plan

    def failing_plan(*args, **kwargs):
        p = real_plan(*args, **kwargs)
        assert p is not None

        def explode():
            raise RuntimeError("disk on fire")
        p.ops.append(explode)      # after every code switch
        return p

    monkeypatch.setattr("sandbox_magic.engine.reload.plan_in_place", failing_plan)
    v2 = edit(edit(BASE, "return a + 1", "return a + 9"), "return 10", "return 19")
    with pytest.raises(sm.ReloadError) as info:
        sm.hot_reload_source(sid, v2, "m")
    assert info.value.step == "patch"
    assert mod.f(1) == 2 and mod.A().m() == 10
    assert sm.get_module_version(sid, "m") == 1


def test_rollback_undo_and_redo_go_in_place_too(sid, runs):
    sm.hot_reload_source(sid, BASE, "m")
    mod = sm.get_sandbox(sid).modules["m"]
    sm.hot_reload_source(sid, edit(BASE, "return a + 1", "return a + 2"), "m")
    sm.hot_reload_source(sid, edit(BASE, "return a + 1", "return a + 3"), "m")
    assert mod.f(1) == 4
    sm.rollback_module(sid, "m", 1)
    assert mod.f(1) == 2
    sm.undo(sid, "m")
    assert mod.f(1) == 4
    sm.redo(sid, "m")
    assert mod.f(1) == 2 and runs["m"] == 1


def test_a_closure_that_changes_shape_runs_the_body(sid, runs):
    text = src('''
        import inplace_probe
        inplace_probe.runs["m"] = inplace_probe.runs.get("m", 0) + 1
        class B:
            def who(self):
                return "b"
        class C(B):
            def who(self):
                return "c"
    ''')
    sm.hot_reload_source(sid, text, "m")
    mod = sm.get_sandbox(sid).modules["m"]
    obj = mod.C()
    sm.hot_reload_source(sid, text.replace('return "c"', 'return "c" + super().who()'), "m")
    assert obj.who() == "cb" and runs["m"] == 2


def test_a_module_whose_import_ran_again_runs_its_body(sid, new_id, runs):
    """m (in one sandbox) bound a value of cfg (in another); cfg ran again since, which
    no cascade follows across sandboxes: applying a body edit of m in place would keep
    the stale value, so m's body runs, as a fresh import would bind the new one."""
    sm.create_sandbox(new_id)
    sm.hot_reload_source(new_id, "TOKEN = object()\n", "cfg")
    cfg = sm.get_sandbox(new_id).modules["cfg"]
    text = BASE + f"from {cfg.__name__} import TOKEN\n"
    sm.hot_reload_source(sid, text, "m")
    m = sm.get_sandbox(sid).modules["m"]
    assert m.TOKEN is cfg.TOKEN
    sm.hot_reload_source(new_id, "TOKEN = object()\nOTHER = 1\n", "cfg")
    assert m.TOKEN is not cfg.TOKEN
    sm.hot_reload_source(sid, edit(text, "return a + 1", "return a + 2"), "m")
    assert m.TOKEN is cfg.TOKEN and runs["m"] == 2 and m.f(1) == 3
    # from then on m is up to date: the next body edit is applied in place
    sm.hot_reload_source(sid, edit(text, "return a + 1", "return a + 4"), "m")
    assert runs["m"] == 2 and m.f(1) == 5


def test_a_server_module_takes_the_full_path(sid, runs):
    """A server's code_change runs on every reload of its module, even when only a
    body changed (a server could not tell a body edit from any other)."""
    text = src('''
        from sandbox_magic import Server

        class Counter(Server):
            def init(self, start=0):
                return {"count": start}

            def handle_call(self, request, state):
                return state["count"], state

            def code_change(self, old_state, old_version, new_version):
                return {"count": old_state["count"] + 1}
    ''')
    sm.hot_reload_source(sid, text, "counter")
    ref = sm.start_server(sid, "counter:Counter", 5)
    sm.hot_reload_source(sid, text.replace("+ 1}", "+ 10}"), "counter")
    assert ref.call("get") == 15


SUBCLASSES = src('''
    import inplace_probe
    inplace_probe.runs["m"] = inplace_probe.runs.get("m", 0) + 1

    class Base:
        def __init_subclass__(cls, **kw):
            super().__init_subclass__(**kw)
            cls.tag = "plain"

        def value(self):
            return 1

    class Child(Base):
        pass

    Alias = Child
''')


def test_subclassing_and_aliases_at_import_run_no_method(sid, runs):
    sm.hot_reload_source(sid, SUBCLASSES, "m")
    mod = sm.get_sandbox(sid).modules["m"]
    sm.hot_reload_source(sid, SUBCLASSES.replace("return 1", "return 2"), "m")
    assert runs["m"] == 1 and mod.Alias().value() == 2


def test_a_class_creation_hook_edit_runs_the_body(sid, runs):
    sm.hot_reload_source(sid, SUBCLASSES, "m")
    mod = sm.get_sandbox(sid).modules["m"]
    sm.hot_reload_source(sid, SUBCLASSES.replace('"plain"', '"hooked"'), "m")
    assert runs["m"] == 2 and mod.Child.tag == "hooked"


METACLASS = src('''
    import inplace_probe
    inplace_probe.runs["m"] = inplace_probe.runs.get("m", 0) + 1

    class Meta(type):
        def __init__(cls, name, bases, ns):
            super().__init__(name, bases, ns)
            cls.tag = "made one"

        def describe(cls):
            return "one"

    class Base(metaclass=Meta):
        pass

    class Child(Base):
        pass
''')


def test_a_metaclass_method_that_ran_at_import_runs_the_body(sid, runs):
    sm.hot_reload_source(sid, METACLASS, "m")
    mod = sm.get_sandbox(sid).modules["m"]
    sm.hot_reload_source(sid, METACLASS.replace('"made one"', '"made two"'), "m")
    assert runs["m"] == 2 and mod.Child.tag == "made two"


def test_a_metaclass_method_no_body_called_is_edited_in_place(sid, runs):
    sm.hot_reload_source(sid, METACLASS, "m")
    mod = sm.get_sandbox(sid).modules["m"]
    sm.hot_reload_source(sid, METACLASS.replace('"one"', '"two"'), "m")
    expected = 1 if importtime.ENABLED else 2     # the static reading assumes the worst
    assert runs["m"] == expected and mod.Child.describe() == "two"


HELD = {
    "lib": src('''
        import inplace_probe
        inplace_probe.runs["lib"] = inplace_probe.runs.get("lib", 0) + 1

        def helper():
            return "one"

        def compute():
            return helper() + "!"
    '''),
    "keeper": src('''
        import functools
        import inplace_probe
        from lib import helper
        inplace_probe.runs["keeper"] = inplace_probe.runs.get("keeper", 0) + 1

        LATER = functools.partial(helper)     # kept to call later: no body calls it
    '''),
    "waiter": src('''
        import threading
        import inplace_probe
        from lib import compute
        inplace_probe.runs["waiter"] = inplace_probe.runs.get("waiter", 0) + 1

        # called while the body runs, in a thread the body waits for
        RESULTS = []
        t = threading.Thread(target=lambda: RESULTS.append(compute()))
        t.start()
        t.join()
    '''),
}


@pytest.mark.skipif(not importtime.ENABLED, reason="needs the compiled tracker's profile hook")
def test_a_function_an_importer_keeps_but_never_calls_is_edited_in_place(sid, runs):
    # A static reading cannot tell partial(helper) from helper(): it would run both
    # bodies again.  No body called helper, so the edit goes in place.
    sm.hot_reload_source(sid, {m: HELD[m] for m in ("lib", "keeper")}, None)
    keeper = sm.get_sandbox(sid).modules["keeper"]
    edited = HELD["lib"].replace('return "one"', 'return "two"')
    r = sm.hot_reload_source(sid, edited, "lib")
    assert r.dependents == () and runs == {"lib": 1, "keeper": 1}
    assert keeper.LATER() == "two"


def test_a_value_computed_in_a_thread_the_body_waited_for_is_computed_again(sid, runs):
    # compute() ran in another thread, unseen by the record of what the body called:
    # the record says "incomplete" and the static reading re-runs the importer
    sm.hot_reload_source(sid, {m: HELD[m] for m in ("lib", "waiter")}, None)
    waiter = sm.get_sandbox(sid).modules["waiter"]
    assert waiter.RESULTS == ["one!"]
    sm.hot_reload_source(sid, HELD["lib"].replace('+ "!"', '+ "?"'), "lib")
    assert runs == {"lib": 2, "waiter": 2} and waiter.RESULTS == ["one?"]


def test_a_name_re_exported_by_a_package_reaches_its_importers(sid, runs):
    """pkg re-exports mod.f with ``import *``; user calls pkg.f() at import: an edit of
    f must run user again, as a fresh import would compute the new value."""
    sm.hot_reload_source(sid, {
        "pkg/__init__.py": "from .mod import *\n",
        "pkg/mod.py": "def f():\n    return 1\n",
        "user": "import pkg\nVALUE = pkg.f()\n",
    })
    sb = sm.get_sandbox(sid)
    assert sb.modules["user"].VALUE == 1
    r = sm.hot_reload_source(sid, "def f():\n    return 2\n", "pkg.mod")
    assert sb.modules["user"].VALUE == 2 and "user" in r.dependents


def test_a_module_that_binds_names_through_globals_imports_only_what_it_says(sid, runs):
    """An importer's statement that cannot be analysed (``globals()[name] = ...``) does
    not make it an importer of every module: its import statements still say which."""
    sm.hot_reload_source(sid, {
        "m": BASE,
        "other": "import inplace_probe\n"
                 "inplace_probe.runs['other'] = inplace_probe.runs.get('other', 0) + 1\n"
                 "for _n in ('a', 'b'):\n    globals()[_n] = _n\n",
    })
    r = sm.hot_reload_source(sid, edit(BASE, "LIMIT = 3", "LIMIT = 4"), "m")
    assert r.dependents == () and runs["other"] == 1


def test_a_short_module_compiled_whole_at_first_goes_on_piece_by_piece(sid, runs):
    """A short module's first version is compiled whole; the in-place edit compares it
    with the new text compiled whole once, then installs the new version's own code (so
    the next edit compares piece with piece and compiles nothing twice)."""
    from sandbox_magic.api.registry import get_state
    from sandbox_magic.engine import chunks
    chunks.CACHE.clear()                       # "m" is new to the compiler: whole first
    sm.hot_reload_source(sid, BASE, "m")
    st = get_state(sid)
    assert len(st.live["m"].codes) == 1
    sm.hot_reload_source(sid, edit(BASE, "return a + 1", "return a + 2"), "m")
    live = st.live["m"]
    assert len(live.codes) > 1 and runs["m"] == 1
    mod = st.modules["m"]
    assert any(mod.f.__code__ is c for n in live.codes for c in inplace._nested(n))
    sm.hot_reload_source(sid, edit(BASE, "return a + 1", "return a + 3"), "m")
    assert mod.f(1) == 4 and runs["m"] == 1


def test_a_decorator_that_used_the_function_at_import_makes_the_body_run(sid, runs):
    """``@register`` called the function while the module imported: the value it computed
    comes from the old body, so an edit of that body runs the module again; a decorator
    that only holds the function (``@property``, ``@functools.lru_cache``) does not."""
    text = src('''
        import inplace_probe
        inplace_probe.runs["m"] = inplace_probe.runs.get("m", 0) + 1
        REGISTRY = {}

        def register(fn):
            REGISTRY[fn.__name__] = fn(0)
            return fn

        @register
        def f(x):
            return x + 1
    ''')
    sm.hot_reload_source(sid, text, "m")
    mod = sm.get_sandbox(sid).modules["m"]
    assert mod.REGISTRY == {"f": 1}
    sm.hot_reload_source(sid, text.replace("return x + 1", "return x + 5"), "m")
    assert runs["m"] == 2 and mod.REGISTRY == {"f": 5}
