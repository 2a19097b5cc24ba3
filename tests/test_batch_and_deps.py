"""Dependency graphs, cascading and parallel reloads, batch reloads across sandboxes."""

from __future__ import annotations

import time

import pytest
from conftest import src

import sandbox_magic as sm

MVM = sm.ModuleVersionManager


def test_dependency_graph_sees_every_import_form(sid):
    sm.hot_reload_source(sid, {
        "a": "def fa():\n    return 1\n",
        "b": "import a\ndef fb():\n    return a.fa()\n",
        "c": "from . import b\nfrom .a import fa\n",
        "d": "def later():\n    import c\n    return c\n",
        "e": "import json\nimport os.path\n",
    })
    g = MVM.get_module_dependencies(sandbox_id=sid)
    assert g == {"a": set(), "b": {"a"}, "c": {"a", "b"}, "d": {"c"}, "e": set()}
    assert MVM.get_module_dependencies(["b"], sandbox_id=sid) == {"b": {"a"}}
    assert MVM.calculate_reload_order(["d", "a", "c", "b"], sandbox_id=sid) == ["a", "b", "c", "d"]
    with pytest.raises(sm.ModuleNotFoundInSandboxError):
        MVM.calculate_reload_order(["zzz"], sandbox_id=sid)


def test_detect_circular_dependencies():
    assert MVM.detect_circular_dependencies({"a": {"b"}, "b": {"a"}}) == [["a", "b", "a"]]
    assert MVM.detect_circular_dependencies({"a": {"b"}, "b": set()}) == []
    cycles = MVM.detect_circular_dependencies({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}})
    assert ["a", "b", "c", "a"] in cycles and ["d", "d"] in cycles


def test_a_cycle_python_can_run_loads_and_one_it_cannot_is_refused(sid):
    sm.hot_reload_source(sid, {"a": "def fa():\n    return 1\n",
                               "b": "import a\ndef fb():\n    return a.fa()\n"})
    # a imports b and b imports a, each using the other only when called: Python runs it
    r = sm.hot_reload_source(sid, "import b\ndef fa():\n    return 2\n", "a")
    assert r.status == "hot_reloaded" and sm.get_sandbox(sid).fb() == 2
    # each body uses a name of the other while it runs: Python cannot run that, from
    # either end
    with pytest.raises(sm.CircularDependencyError) as info:
        sm.hot_reload_source(sid, {"a": "import b\nX = b.Y\n", "b": "import a\nY = a.X\n"})
    assert info.value.cycle in (["a", "b", "a"], ["b", "a", "b"])
    assert "still running" in str(info.value)
    assert sm.get_sandbox(sid).fb() == 2 and sm.get_module_version(sid, "b") == 1
    assert sm.get_module_version(sid, "a") == 2


def test_reload_cascades_to_importers_in_order(sid):
    sm.hot_reload_source(sid, {
        "counter": "STEP = 1\n",
        "api": "import counter\nLABEL = 'step %d' % counter.STEP\n",
        "ui": "from api import LABEL\nTITLE = LABEL.upper()\n",
        "other": "X = 1\n",
    })
    r = sm.hot_reload_source(sid, "STEP = 5\n", "counter")
    assert r.dependents == ("api", "ui")
    assert sm.get_sandbox(sid).TITLE == "STEP 5"
    assert sm.get_sandbox_info(sid).modules == {"api": 1, "counter": 2, "other": 1, "ui": 1}
    r = sm.hot_reload_source(sid, "STEP = 6\n", "counter", coordinate_dependencies=False)
    assert r.dependents == () and sm.get_sandbox(sid).TITLE == "STEP 5"


def test_a_failing_dependent_rolls_back_the_whole_cascade(sid):
    sm.hot_reload_source(sid, {
        "counter": "STEP = 1\n",
        "api": "import counter\nRATIO = 10 // counter.STEP\n",
    })
    with pytest.raises(sm.ReloadError) as info:
        sm.hot_reload_source(sid, "STEP = 0\n", "counter")
    assert info.value.module == "api" and info.value.step == "execute"
    sb = sm.get_sandbox(sid)
    assert sb.STEP == 1 and sb.RATIO == 10
    assert sm.get_module_version(sid, "counter") == 1


def test_multi_module_source_loads_in_dependency_order(sid):
    r = sm.hot_reload_source(sid, {"api": "from counter import make\nC = make()\n",
                                   "counter": "def make():\n    return 41\n"})
    assert r.status == "hot_reloaded" and sm.get_sandbox(sid).C == 41
    assert {m.module for m in r.modules} == {"api", "counter"}


def test_cascading_reload_by_name_and_by_source(sid):
    sm.hot_reload_source(sid, {"cfg": "import random\nSEED = random.random()\n",
                               "user": "import cfg\nSEEN = cfg.SEED\n"})
    sb = sm.get_sandbox(sid)
    first = sb.SEEN
    r = MVM.cascading_reload(sid, ["cfg"])
    assert sb.SEEN == sb.SEED != first and "user" in r.dependents
    assert sm.get_module_version(sid, "cfg") == 1          # re-run, not a new version
    r = MVM.cascading_reload(sid, {"cfg": "import random\nSEED = random.random()\n"})
    assert r.status == "no_change"
    MVM.cascading_reload(sid, {"cfg": "import random\nSEED = random.random()\n"},
                         force_reload=True)
    assert sb.SEEN == sb.SEED
    r = MVM.cascading_reload(sid, {"cfg": "SEED = 7\n"},
                             state_handler=lambda s, o, n: s)
    assert sb.SEEN == 7 and sm.get_module_version(sid, "cfg") == 2


def test_parallel_reload_runs_a_level_together_and_stays_all_or_nothing(sid):
    sm.hot_reload_source(sid, {
        "base": "X = 1\n",
        "left": "import base\nimport time\ntime.sleep(0.3)\nL = base.X\n",
        "right": "import base\nimport time\ntime.sleep(0.3)\nR = base.X\n",
    })
    t0 = time.perf_counter()
    r = MVM.parallel_reload(sid, {"base": "X = 2\n"}, timeout=5)
    elapsed = time.perf_counter() - t0
    assert sm.get_sandbox(sid).L == 2 and sm.get_sandbox(sid).R == 2
    assert set(r.dependents) == {"left", "right"}
    assert elapsed < 0.55                      # the two 0.3 s bodies ran side by side
    with pytest.raises(sm.ReloadError) as info:
        MVM.parallel_reload(sid, {"base": "X = 3\n",
                                  "right": "import base\nR = base.X\nraise ValueError('r')\n"})
    assert info.value.module == "right"
    assert sm.get_sandbox(sid).X == 2 and sm.get_sandbox(sid).L == 2
    with pytest.raises(sm.ReloadError, match="did not finish"):
        MVM.parallel_reload(sid, ["base"], timeout=0.05)
    assert sm.get_sandbox(sid).L == 2


def _fleet(n, prefix):
    ids = [f"{prefix}{i}" for i in range(n)]
    for i in ids:
        sm.create_sandbox(i)
    return ids


@pytest.fixture
def fleet():
    made: list[str] = []

    def make(n, prefix):
        ids = _fleet(n, prefix)
        made.extend(ids)
        return ids

    yield make
    for i in made:
        if i in {s.id for s in sm.list_sandboxes()}:
            sm.destroy_sandbox(i)


def test_batch_over_50_sandboxes_with_5_broken(fleet):
    ids = fleet(50, "fleet")
    broken = set(ids[::10])
    for i in ids:
        if i not in broken:
            sm.hot_reload_source(i, "LIMIT = 3\n", "config")
    seen = []
    results = sm.batch_hot_reload(
        ids, "from config import LIMIT\ndef limit():\n    return LIMIT\n",
        progress=lambda done, total, sid, res: seen.append((done, total, sid)))
    assert [r[0] for r in results] == ids
    for sid, res in results:
        if sid in broken:
            assert isinstance(res, sm.ReloadError) and "config" in str(res)
            assert "limit" not in sm.get_sandbox_info(sid).modules
        else:
            assert isinstance(res, sm.ReloadResult) and res.new_version == 1
            assert sm.get_sandbox(sid).limit() == 3
    assert [d for d, _, _ in seen] == list(range(1, 51)) and seen[-1][1] == 50


def test_batch_accepts_artifacts_bytes_and_dicts_and_isolates_unknown_ids(fleet):
    ids = fleet(3, "kinds")
    art = sm.compile_source("def f():\n    return 1\n")
    assert all(r.new_version == 1 for _, r in sm.batch_hot_reload(ids, art))
    data = sm.compile_source("def f():\n    return 2\n").artifacts[0].to_bytes()
    assert all(r.new_version == 2 for _, r in sm.batch_hot_reload(ids, data))
    res = sm.batch_hot_reload(ids + ["missing"], {"f": "def f():\n    return 3\n",
                                                  "g": "import f\nG = f.f()\n"})
    assert isinstance(res[-1][1], sm.SandboxNotFoundError)
    assert all(sm.get_sandbox(i).G == 3 for i in ids)
    with pytest.raises(sm.CompileError):
        sm.batch_hot_reload(ids, "def broken(:\n")


def test_batch_timeout_stops_starting_new_work(fleet):
    ids = fleet(6, "slow")
    results = sm.batch_hot_reload(ids, "import time\ntime.sleep(0.1)\ndef f():\n    pass\n",
                                  batch_timeout=0.15)
    started = [r for _, r in results if isinstance(r, sm.ReloadResult)]
    timed_out = [r for _, r in results if isinstance(r, sm.SandboxTimeout)]
    assert 1 <= len(started) <= 3 and len(started) + len(timed_out) == 6
    assert all("batch_timeout" in str(e) for e in timed_out)


def test_batch_with_state_handler_and_concurrency(fleet):
    ids = fleet(4, "conc")
    code = src("""
        from sandbox_magic import Server
        class S(Server):
            def init(self):
                return {"n": 1}
            def handle_call(self, request, state):
                return state, state
    """)
    sm.batch_hot_reload(ids, code, module="srv")
    refs = [sm.start_server(i, "S") for i in ids]
    res = sm.batch_hot_reload(ids, code + "\n# v2\n", module="srv", max_concurrency=4,
                              state_handler=lambda s, o, n: {**s, "v": n})
    assert all(r.migrated == 1 for _, r in res)
    assert all(r.call(None) == {"n": 1, "v": 2} for r in refs)


def test_gradual_rollout_halts_on_the_first_failing_batch(fleet):
    ids = fleet(12, "roll")
    for i in ids:
        sm.hot_reload_source(i, "def version():\n    return 1\n", "app")
    # sandbox 7 has a module that refuses version 2: its cascade fails there only
    sm.hot_reload_source(ids[7], "import app\nassert app.version() != 2, 'needs v1'\n", "guard")

    def gradual_rollout(sandbox_ids, code, batch_size=4):
        for k in range(0, len(sandbox_ids), batch_size):
            batch = sandbox_ids[k:k + batch_size]
            results = sm.batch_hot_reload(batch, code, module="app")
            if not all(isinstance(r, sm.ReloadResult) for _, r in results):
                return ("halted", k // batch_size, results)
        return ("done", None, None)

    new = "def version():\n    return 2\n"
    status, batch_no, _ = gradual_rollout(ids, new)
    assert (status, batch_no) == ("halted", 1)
    assert [sm.get_sandbox(i).version() for i in ids[:4]] == [2, 2, 2, 2]
    assert sm.get_sandbox(ids[8]).version() == 1          # never reached


def test_ab_promote_the_winner_with_exported_modules(fleet):
    a, b, *targets = fleet(5, "ab")
    sm.hot_reload_source(a, "def score(x):\n    return x + 1\n", "model")
    sm.hot_reload_source(b, "def score(x):\n    return x * 10\n", "model")
    winner = max((a, b), key=lambda s: sm.run(s, lambda sb: sb.score(3)))
    exported = MVM.export_sandbox_modules(winner)
    for sid in targets:
        for name, versions in exported["modules"].items():
            sm.hot_reload(sid, versions[0]["artifact"])
    assert [sm.get_sandbox(t).score(3) for t in targets] == [30, 30, 30]


def test_an_import_inside_a_function_closes_no_cycle(sid):
    r = sm.hot_reload_source(sid, {
        "ca": "def fa():\n    import cb\n    return cb.fb() + 1\n",
        "cb": "import ca\ndef fb():\n    return 1\n",
    })
    assert r.status == "hot_reloaded" and sm.get_sandbox(sid).fa() == 2
    # editing cb re-runs ca (it imports cb, inside a function), in the same transaction
    r = sm.hot_reload_source(sid, "import ca\ndef fb():\n    return 10\n", "cb")
    assert sm.get_sandbox(sid).fa() == 11
    assert MVM.get_module_dependencies(sandbox_id=sid) == {"ca": {"cb"}, "cb": {"ca"}}
    assert MVM.calculate_reload_order(["cb", "ca"], sandbox_id=sid) == ["ca", "cb"]
    with pytest.raises(sm.CircularDependencyError):   # a cycle Python cannot run either
        sm.hot_reload_source(sid, {"xa": "import xb\nA = xb.B\n", "xb": "import xa\nB = xa.A\n"})
