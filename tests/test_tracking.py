"""Finding the live instances of sandbox classes: the compiled tracker and its fallback."""

from __future__ import annotations

import copy
import gc
import os
import pickle
import subprocess
import sys
import weakref
from pathlib import Path

import pytest

import sandbox_magic as sm
from sandbox_magic.engine import tracking

ROOT = Path(__file__).resolve().parent.parent

PARTICLE = "class Particle:\n    def __init__(self, i):\n        self.i = i\n"
TWO = PARTICLE + "\nclass Other:\n    def __init__(self, i):\n        self.i = i\n"
V2 = "\n# v2\n"


def migrate(sid: str, source: str) -> int:
    r = sm.hot_reload_source(sid, source + V2, state_handler=lambda s, ov, nv: {**s, "m": nv})
    return r.migrated


def test_native_tracker_is_built_and_used():
    # The install compiles it (hatch_build.py); a silent fallback would cost 4x per instance.
    assert tracking.native(), "sandbox_magic/engine/_live.c was not compiled at install"


def test_native_tracking_of_sandbox_classes(sid):
    sm.hot_reload_source(sid, PARTICLE)
    P = sm.get_sandbox(sid).Particle
    p = P(1)
    assert tracking._native.hooked(P)
    assert tracking.instances_of(P) == [p]
    with pytest.raises(TypeError, match="takes no arguments"):
        sm.hot_reload_source(sid, "class Bare:\n    pass\n", "bare")
        sm.get_sandbox(sid).Bare(1)


def test_reused_addresses_never_count_twice_and_dead_objects_never_count(sid):
    sm.hot_reload_source(sid, PARTICLE)
    P = sm.get_sandbox(sid).Particle
    keep = []
    for round_ in range(50):
        batch = [P(i) for i in range(100)]    # freed below; their memory is reused next round
        keep.append(batch[round_])
        del batch
    found = tracking.instances_of(P)
    assert len(found) == 50 and {id(o) for o in found} == {id(o) for o in keep}
    assert migrate(sid, PARTICLE) == 50 and all(o.m == 2 for o in keep)


def test_native_registry_and_table_follow_the_live_count(sid):
    sm.hot_reload_source(sid, PARTICLE)
    P = sm.get_sandbox(sid).Particle
    gc.collect()           # garbage of earlier tests would leave the table meanwhile
    gc.disable()
    try:
        table_follows_live_count(P)
    finally:
        gc.enable()


def table_follows_live_count(P):
    base = tracking._native.table_size()
    live = [P(i) for i in range(1000)]
    assert tracking._native.table_size() == base + 1000
    for _ in range(100):
        [P(i) for i in range(1000)]
    reg = P.__dict__[tracking.LIVE_ATTR]
    assert len(reg) <= 2 * 1000 + 1000    # compacted when doubled: bounded by the live count
    del live
    assert tracking._native.table_size() == base
    assert tracking.instances_of(P) == [] and len(reg) == 0


def test_native_table_drops_objects_freed_by_the_cycle_collector(sid):
    sm.hot_reload_source(sid, PARTICLE)
    P = sm.get_sandbox(sid).Particle
    gc.collect()
    base = tracking._native.table_size()
    for i in range(100):
        a, b = P(i), P(-i)
        a.other, b.other = b, a
    del a, b
    gc.collect()
    assert tracking._native.table_size() == base
    assert tracking.instances_of(P) == []


def test_native_reassigned_class_moves_the_object_between_registries(sid):
    sm.hot_reload_source(sid, TWO)
    sb = sm.get_sandbox(sid)
    p = sb.Particle(1)
    p.__class__ = sb.Other         # by user code: nothing is told
    tracking.settle([sb.Particle, sb.Other])
    assert tracking.instances_of(sb.Particle) == []
    assert tracking.instances_of(sb.Other) == [p]
    r = sm.hot_reload_source(sid, TWO + V2, state_handler=lambda s, ov, nv: {**s, "m": nv})
    assert r.migrated == 1 and p.m == 2


def test_copies_pickles_and_explicit_new_are_tracked(sid):
    sm.hot_reload_source(sid, PARTICLE)
    P = sm.get_sandbox(sid).Particle
    p = P(1)
    made = [copy.copy(p), copy.deepcopy(p), P.__new__(P)]
    made += [pickle.loads(pickle.dumps(p, protocol)) for protocol in (2, 3, 4, 5)]
    assert len(tracking.instances_of(P)) == 1 + len(made)


def test_native_object_new_and_old_pickle_protocols_make_tracked_instances(sid):
    sm.hot_reload_source(sid, PARTICLE + "\nclass Own(Particle):\n    def __new__(cls, *a):\n"
                              "        return object.__new__(cls)\n")
    sb = sm.get_sandbox(sid)
    p = sb.Particle(1)
    made = [object.__new__(sb.Particle)]
    made += [pickle.loads(pickle.dumps(p, protocol)) for protocol in (0, 1)]
    assert len(tracking.instances_of(sb.Particle)) == 1 + len(made)
    o = sb.Own(2)                  # the common idiom in a subclass
    assert o.i == 2 and tracking.instances_of(sb.Own) == [o]


def test_native_instances_being_deallocated_are_never_listed(sid):
    # A weakref callback or a __del__ of an attribute runs while the object is
    # being freed; listing it then would bring it back and free it twice.
    sm.hot_reload_source(sid, "class P:\n    pass\n")
    P = sm.get_sandbox(sid).P
    seen = []

    class Child:
        def __del__(self):
            seen.append(len(tracking.instances_of(P)))

    p = P()
    ref = weakref.ref(p, lambda r: seen.append(len(tracking.instances_of(P))))
    p.child = Child()
    del p
    assert seen == [0, 0] and ref() is None
    head = None
    for _ in range(20_000):        # deep chain: the trashcan defers frees
        node = P()
        node.next = head
        node.child = Child()
        head = node
    del head, node
    gc.collect()
    # each __del__ saw only nodes still referenced (never the one being freed)
    assert len(seen) == 20_002 and all(n < 20_000 for n in seen)
    made = [P() for _ in range(1000)]
    assert len(tracking.instances_of(P)) == 1000
    del made
    assert tracking.instances_of(P) == []


def test_native_registry_is_per_class_even_when_a_namespace_is_copied(sid):
    sm.hot_reload_source(sid, PARTICLE)
    A = sm.get_sandbox(sid).Particle
    keep_a = [A(i) for i in range(3)]
    ns = {k: v for k, v in A.__dict__.items() if k not in ("__dict__", "__weakref__")}
    B = type(A)("B", A.__bases__, ns)     # what class-rebuilding decorators do
    keep_b = [B(i) for i in range(2)]
    assert tracking.instances_of(B) == keep_b
    assert tracking.instances_of(A) == keep_a


@pytest.mark.needs_native
def test_reloads_that_add_or_remove_new_then_change_slots_migrate(sid):
    new = "    def __new__(cls, *a, **k):\n        return super().__new__(cls)\n"
    body = "    def __init__(self):\n        self.a = 1\n"
    for first, second in ((body, new + body), (new + body, body)):
        sm.hot_reload_source(sid, "class Q:\n    __slots__ = ('a',)\n" + first, "q")
        q = sm.get_sandbox(sid).Q()
        sm.hot_reload_source(sid, "class Q:\n    __slots__ = ('a',)\n" + second, "q")
        r = sm.hot_reload_source(sid, "class Q:\n    __slots__ = ('a', 'b')\n" + body, "q",
                                 state_handler=lambda st, ov, nv: {**st, "b": 2})
        assert r.migrated == 1 and (q.a, q.b) == (1, 2)
        sm.destroy_sandbox(sid)
        sm.create_sandbox(sid)


def test_native_memory_is_given_back_after_a_peak(sid):
    sm.hot_reload_source(sid, PARTICLE)
    P = sm.get_sandbox(sid).Particle
    gc.collect()
    big = [P(i) for i in range(300_000)]
    peak = tracking._native.table_capacity()
    del big
    tracking.instances_of(P)
    reg = P.__dict__[tracking.LIVE_ATTR]
    assert tracking._native.table_capacity() < peak // 8
    assert reg.capacity() <= 1024


def test_native_subclasses_made_outside_the_sandbox_share_the_deallocator(sid):
    sm.hot_reload_source(sid, PARTICLE)
    P = sm.get_sandbox(sid).Particle

    class Local(P):
        pass

    assert tracking._native.hooked(Local)
    p = P(1)
    p.__class__ = Local          # allowed: the same C-level free
    tracking.track(Local, p)
    q = Local(2)
    assert tracking.instances_of(Local) == [p, q]
    assert q.i == 2


def test_native_tracks_classes_with_a_builtin_base_and_their_own_new(sid):
    sm.hot_reload_source(sid, "class Bag(dict):\n    pass\n\nclass Own:\n"
                              "    def __new__(cls, *a):\n        return super().__new__(cls)\n"
                              "    def __init__(self, i):\n        self.i = i\n")
    sb = sm.get_sandbox(sid)
    assert tracking._native.hooked(sb.Bag)
    bag = sb.Bag(a=1)
    assert tracking.instances_of(sb.Bag) == [bag]
    assert tracking._native.hooked(sb.Own)          # its own __new__ allocates through it
    o = sb.Own(1)
    assert tracking.instances_of(sb.Own) == [o]


def test_a_class_that_gains_and_loses_its_own_new_stays_tracked(sid):
    sm.hot_reload_source(sid, PARTICLE)
    P = sm.get_sandbox(sid).Particle
    a = P(1)
    with_new = PARTICLE + "    def __new__(cls, *args):\n        return super().__new__(cls)\n"
    sm.hot_reload_source(sid, with_new)
    b = P(2)
    sm.hot_reload_source(sid, PARTICLE + "# back\n")
    c = P(3)
    assert migrate(sid, PARTICLE) == 3 and (a.m, b.m, c.m) == (4, 4, 4)


def test_the_pure_python_tracker_passes_the_live_state_suite():
    env = {**os.environ, "SANDBOX_MAGIC_NATIVE": "0", "PYTHONPATH": str(ROOT)}
    code = ("from sandbox_magic.engine import tracking; assert not tracking.native(); "
            "import pytest, sys; sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', "
            "'tests/test_live_state.py', 'tests/test_tracking.py', '-k', "
            "'not native and not pure_python', '-m', 'not needs_native']))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert " passed" in out.stdout and " failed" not in out.stdout


class Marked(dict):
    pass


def test_results_that_need_a_closer_look_are_checked_one_by_one(sid):
    # Results other than plain dicts leave the fast loop for the full check and the loop goes
    # on after them; a bad one anywhere refuses the whole reload.
    sm.hot_reload_source(sid, PARTICLE)
    P = sm.get_sandbox(sid).Particle
    ps = [P(i) for i in range(300)]

    def some_marked(state, ov, nv):
        new = {**state, "m": nv}
        return Marked(new) if state["i"] % 7 == 0 else new

    r = sm.hot_reload_source(sid, PARTICLE + V2, state_handler=some_marked)
    assert r.migrated == 300 and all(p.m == 2 for p in ps)
    from sandbox_magic.engine import interpreter
    if interpreter.dict_swap_ok():     # the handler's dict becomes the object's own
        assert type(ps[7].__dict__) is Marked and type(ps[8].__dict__) is dict
    else:                              # 3.13+: the object's dict is refilled in place
        assert type(ps[7].__dict__) is dict and ps[7].__dict__ == {"i": 7, "m": 2}

    def loses_a_key_at_250(state, ov, nv):
        return {"m": nv} if state["i"] == 250 else {**state, "m": nv}

    with pytest.raises(sm.ReloadError) as info:
        sm.hot_reload_source(sid, PARTICLE + "\n# v3\n", state_handler=loses_a_key_at_250)
    assert info.value.step == "validate" and "i" in str(info.value)
    assert all(p.m == 2 and p.i == i for i, p in enumerate(ps))

    def raises_at_299(state, ov, nv):
        if state["i"] == 299:
            raise KeyError("boom")
        return {**state, "m": nv}

    with pytest.raises(sm.ReloadError, match="boom") as info:
        sm.hot_reload_source(sid, PARTICLE + "\n# v4\n", state_handler=raises_at_299)
    assert info.value.step == "migrate" and hex(id(ps[299])) in str(info.value)
    assert all(p.m == 2 for p in ps) and sm.get_module_version(sid, "particle") == 2
