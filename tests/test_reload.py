"""Hot reload semantics: in place, transactional, deduplicated, versioned."""

from __future__ import annotations

from datetime import UTC

import pytest
from conftest import src

import sandbox_magic as sm

V1 = src("""
    class Counter:
        def __init__(self):
            self.count = 0

        def increment(self):
            self.count += 1
            return self.count

    def helper():
        return "v1"
""")
V2 = V1.replace("self.count += 1", "self.count += 10").replace('"v1"', '"v2"')
V3 = V1.replace("self.count += 1", "self.count += 100").replace('"v1"', '"v3"')


def test_first_load_is_version_one(sid):
    r = sm.hot_reload_source(sid, V1)
    assert (r.status, r.module, r.old_version, r.new_version) == ("hot_reloaded", "counter",
                                                                   None, 1)
    assert sm.get_module_version(sid, "counter") == 1
    assert r.duration >= 0


def test_reload_patches_classes_and_functions_in_place(sid):
    sm.hot_reload_source(sid, V1)
    sb = sm.get_sandbox(sid)
    cls, fn, mod = sb.Counter, sb.helper, sb.counter
    c = cls()
    c.increment()
    bound = c.increment
    r = sm.hot_reload_source(sid, V2)
    assert r.new_version == 2
    assert sb.Counter is cls and sb.helper is fn and sb.counter is mod
    assert isinstance(c, sb.Counter)
    assert c.increment() == 11          # state kept, new code
    assert bound() == 21                # a bound method taken before the reload
    assert fn() == "v2"                 # a function reference taken before the reload


def test_from_import_bindings_elsewhere_see_new_code(sid):
    sm.hot_reload_source(sid, {"counter": V1, "api": src("""
        from counter import helper, Counter
        def call():
            return helper(), Counter().increment()
    """)})
    from importlib import import_module
    notebook_helper = import_module(f"sandbox_magic.sandboxes.{sid}.counter").helper
    sm.hot_reload_source(sid, V2)
    assert sm.get_sandbox(sid).call() == ("v2", 10)
    assert notebook_helper() == "v2"


def test_removed_names_disappear_and_new_ones_appear(sid):
    sm.hot_reload_source(sid, V1)
    mod = sm.get_sandbox(sid).counter
    sm.hot_reload_source(sid, V1.replace("def helper():", "def other():"))
    assert not hasattr(mod, "helper")
    assert mod.other() == "v1"
    assert mod.other.__globals__ is mod.__dict__


def test_removed_method_disappears_from_the_class(sid):
    sm.hot_reload_source(sid, V1)
    c = sm.get_sandbox(sid).Counter()
    sm.hot_reload_source(sid, src("""
        class Counter:
            def __init__(self):
                self.count = 0
    """))
    assert not hasattr(c, "increment")


def test_new_functions_see_later_reloads_of_module_globals(sid):
    sm.hot_reload_source(sid, "LIMIT = 1\ndef limit():\n    return LIMIT\n", "cfg")
    fn = sm.get_sandbox(sid).limit
    sm.hot_reload_source(sid, "LIMIT = 2\ndef limit():\n    return LIMIT\n", "cfg")
    assert fn() == 2


def test_compile_error_changes_nothing(sid):
    sm.hot_reload_source(sid, V1)
    with pytest.raises(sm.CompileError):
        sm.hot_reload_source(sid, "class Counter:\n    def x(:\n", "counter")
    assert sm.get_module_version(sid, "counter") == 1
    assert sm.get_sandbox(sid).helper() == "v1"


def test_exception_in_module_body_changes_nothing(sid):
    sm.hot_reload_source(sid, V1)
    sb = sm.get_sandbox(sid)
    c = sb.Counter()
    bad = V2 + "\nraise RuntimeError('body failed')\n"
    with pytest.raises(sm.ReloadError) as info:
        sm.hot_reload_source(sid, bad)
    err = info.value
    assert err.step == "execute" and err.module == "counter"
    assert "line" in str(err) and "RuntimeError" in str(err)
    assert isinstance(err.__cause__, RuntimeError)
    assert c.increment() == 1 and sb.helper() == "v1"
    assert [v.version for v in sm.list_module_versions(sid, "counter")] == [1]


def test_failed_first_load_leaves_no_module(sid):
    with pytest.raises(sm.ReloadError):
        sm.hot_reload_source(sid, "def f():\n    pass\n1 / 0\n")
    assert sm.get_sandbox_info(sid).modules == {}
    with pytest.raises(sm.ModuleNotFoundInSandboxError):
        sm.get_module_version(sid, "f")


def test_failure_in_a_multi_module_transaction_rolls_back_all(sid):
    sm.hot_reload_source(sid, {"a": "def fa():\n    return 1\n",
                               "b": "import a\ndef fb():\n    return a.fa() + 1\n"})
    with pytest.raises(sm.ReloadError) as info:
        sm.hot_reload_source(sid, {"a": "def fa():\n    return 10\n",
                                   "b": "import a\ndef fb():\n    return a.fa() + 1\nx = 1 / 0\n"})
    assert info.value.module == "b"
    sb = sm.get_sandbox(sid)
    assert sb.fa() == 1 and sb.fb() == 2
    assert sm.get_sandbox_info(sid).modules == {"a": 1, "b": 1}


def test_identical_code_is_no_change(sid):
    sm.hot_reload_source(sid, V1)
    r = sm.hot_reload_source(sid, V1)
    assert (r.status, r.old_version, r.new_version) == ("no_change", 1, 1)
    assert len(sm.list_module_versions(sid, "counter")) == 1


def test_code_identical_to_an_older_version_reactivates_it(sid):
    sm.hot_reload_source(sid, V1)
    sm.hot_reload_source(sid, V2)
    r = sm.hot_reload_source(sid, V1)
    assert r.new_version == 1 and r.old_version == 2
    assert sm.get_module_version(sid, "counter") == 1
    assert [v.version for v in sm.list_module_versions(sid, "counter")] == [2, 1]


def test_version_listing_newest_first_with_details(sid):
    for s in (V1, V2, V3):
        sm.hot_reload_source(sid, s)
    infos = sm.list_module_versions(sid, "counter")
    assert [i.version for i in infos] == [3, 2, 1]
    assert [i.is_current for i in infos] == [True, False, False]
    assert infos[0].source == V3
    assert all(i.loaded_at.tzinfo is UTC for i in infos)
    assert len({i.checksum for i in infos}) == 3
    hist = sm.get_version_history(sid, "counter")
    assert hist["current_version"] == 3 and hist["total_versions"] == 3


def test_rollback_runs_old_code_reports_its_version_and_numbering_continues(sid):
    for s in (V1, V2, V3):
        sm.hot_reload_source(sid, s)
    c = sm.get_sandbox(sid).Counter()
    r = sm.rollback_module(sid, "counter", 2)
    assert (r.status, r.old_version, r.new_version) == ("rolled_back", 3, 2)
    assert sm.get_module_version(sid, "counter") == 2
    assert c.increment() == 10
    r = sm.hot_reload_source(sid, V1.replace('"v1"', '"v4"'))
    assert r.new_version == 4


def test_rollback_to_unknown_version_is_a_clear_error(sid):
    sm.hot_reload_source(sid, V1)
    with pytest.raises(sm.VersionNotFoundError, match="retained: 1"):
        sm.rollback_module(sid, "counter", 9)
    with pytest.raises(sm.ModuleNotFoundInSandboxError):
        sm.rollback_module(sid, "nomodule", 1)


def test_undo_and_redo_walk_the_versions_that_were_current(sid):
    for s in (V1, V2, V3):
        sm.hot_reload_source(sid, s)
    sm.rollback_module(sid, "counter", 1)          # timeline 1, 2, 3, 1
    helper = sm.get_sandbox(sid).helper
    assert sm.undo(sid, "counter").new_version == 3
    assert helper() == "v3"
    assert sm.undo(sid, "counter").new_version == 2
    assert sm.redo(sid, "counter").new_version == 3
    assert sm.redo(sid, "counter").new_version == 1
    with pytest.raises(sm.HistoryError, match="redo"):
        sm.redo(sid, "counter")
    sm.undo(sid, "counter")
    sm.hot_reload_source(sid, V1.replace('"v1"', '"v4"'))   # a new change drops redo steps
    with pytest.raises(sm.HistoryError):
        sm.redo(sid, "counter")
    assert sm.undo(sid, "counter").new_version == 3


def test_undo_with_nothing_to_undo(sid):
    sm.hot_reload_source(sid, V1)
    with pytest.raises(sm.HistoryError, match="undo"):
        sm.undo(sid, "counter")


def test_diff_versions_uses_diff_match_patch(sid):
    sm.hot_reload_source(sid, V1)
    sm.hot_reload_source(sid, V2)
    d = sm.diff_versions(sid, "counter", 1, 2)
    assert d.lines_added == 2 and d.lines_removed == 2
    assert ("+", "        self.count += 10") in d.lines()
    assert "@@" in d.patch_text
    from diff_match_patch import diff_match_patch
    dmp = diff_match_patch()
    patched, ok = dmp.patch_apply(dmp.patch_fromText(d.patch_text), V1)
    assert patched == V2 and all(ok)
    assert "-        self.count += 1" in str(d)


def test_a_changed_line_of_10000_characters_diffs_at_once(sid):
    """Diffs shown to users are line diffs: a long changed line is one '-' and one '+'."""
    import random
    import time

    from diff_match_patch import diff_match_patch

    from sandbox_magic.jupyter.panel_rows import history_rows
    rng = random.Random(7)

    def version() -> str:
        data = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(10_000))
        return f"def f():\n    return 1\n\nDATA = '{data}'\n\ndef g():\n    return 2\n"

    sources = [version() for _ in range(10)]
    for source in sources:
        sm.hot_reload_source(sid, source, "data")
    started = time.perf_counter()
    rows = history_rows(sid, "data")          # what both panels show: a diff per version
    d = sm.diff_versions(sid, "data", 1, 10)
    elapsed = time.perf_counter() - started
    assert [(r["added"], r["removed"]) for r in rows] == [(1, 1)] * 9 + [(7, 0)]
    old_line, new_line = sources[0].splitlines()[3], sources[9].splitlines()[3]
    assert [x for x in d.lines() if x[0] != " "] == [("-", old_line), ("+", new_line)]
    assert (d.lines_added, d.lines_removed) == (1, 1)
    dmp = diff_match_patch()
    patched, ok = dmp.patch_apply(dmp.patch_fromText(d.patch_text), sources[0])
    assert patched == sources[9] and all(ok)
    assert elapsed < 5.0, f"diffing took {elapsed:.1f} s"   # a hang guard, not a benchmark


def test_retention_keeps_max_versions_and_never_the_current(new_id):
    sm.create_sandbox(new_id, max_versions=3)
    for i in range(6):
        sm.hot_reload_source(new_id, f"def f():\n    return {i}\n")
    assert [v.version for v in sm.list_module_versions(new_id, "f")] == [6, 5, 4]
    sm.rollback_module(new_id, "f", 4)
    sm.hot_reload_source(new_id, "def f():\n    return 'x'\n")
    assert [v.version for v in sm.list_module_versions(new_id, "f")] == [7, 6, 5]
    # the dropped version 4 leaves the undo timeline too
    assert sm.undo(new_id, "f").new_version == 6


def test_retention_never_drops_the_current_version():
    from sandbox_magic.engine.versions import ModuleHistory
    h = ModuleHistory("f")
    for i in range(3):
        h.add(sm.compile_source(f"def f():\n    return {i}\n").artifacts[0], None)
    h.activate(1)                                 # current is the oldest
    assert h.retain(1) == [2, 3]
    assert list(h.records) == [1] and h.current == 1


def test_retention_none_keeps_everything(new_id):
    sm.create_sandbox(new_id, max_versions=None)
    for i in range(15):
        sm.hot_reload_source(new_id, f"def f():\n    return {i}\n")
    assert len(sm.list_module_versions(new_id, "f")) == 15


def test_register_module_version_returns_existing_for_same_code(sid):
    mvm = sm.ModuleVersionManager
    assert mvm.register_module_version(sid, "counter", V1) == 1
    data = sm.compile_source(V1).artifacts[0].to_bytes()
    assert mvm.register_module_version(sid, "counter", data) == 1
    assert mvm.register_module_version(sid, "counter", V2) == 2
    assert sm.get_module_version(sid, "counter") == 2


def test_export_loads_into_other_sandboxes(sid, new_id):
    sm.hot_reload_source(sid, V1)
    sm.hot_reload_source(sid, V2)
    exported = sm.ModuleVersionManager.export_sandbox_modules(sid)
    versions = exported["modules"]["counter"]
    assert [v["version"] for v in versions] == [2, 1]
    assert versions[0]["is_current"]
    sm.create_sandbox(new_id)
    sm.hot_reload(new_id, versions[0]["artifact"])
    assert sm.get_sandbox(new_id).helper() == "v2"


def test_hot_reload_accepts_artifacts_and_adds_new_modules(sid):
    art = sm.compile_source(V1).artifacts[0]
    r = sm.hot_reload(sid, art)
    assert r.new_version == 1
    r = sm.hot_reload(sid, sm.compile_source(V2).artifacts[0].to_bytes())
    assert r.new_version == 2


def test_bad_options_are_errors(sid):
    with pytest.raises(sm.SandboxError, match="state_handler"):
        sm.hot_reload_source(sid, V1, state_handler=42)
    with pytest.raises(sm.SandboxError, match="suspend_timeout"):
        sm.hot_reload_source(sid, V1, suspend_timeout=-1)
