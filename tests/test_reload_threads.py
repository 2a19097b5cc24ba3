"""A reload and every other thread: objects made meanwhile, checks, handlers' input.

Each test fails when the protection it names is removed (README, "How a reload
works": what other threads see while a reload runs).
"""

from __future__ import annotations

import threading
import time

import sandbox_magic as sm

ITEM_V1 = '''\
class Item:
    def __init__(self, n):
        self.count = n
'''
ITEM_V2 = ITEM_V1.replace("self.count = n", "self.hits = n")


def test_objects_made_while_a_reload_migrates_all_end_up_under_the_new_code(sid):
    # A thread keeps making instances while a reload with a slow state handler runs:
    # each is made either before the gate (and migrated with the others) or after the
    # switch (under the new code); none is made under the old code and left
    # unmigrated (the gate on __new__).
    sm.hot_reload_source(sid, ITEM_V1, module="item")
    Item = sm.get_sandbox(sid).Item
    made: list = [Item(0)]
    stop = threading.Event()

    def maker():
        k = 1
        while not stop.is_set():
            made.append(Item(k))
            k += 1

    calls = []

    def slow(state, ov, nv):
        calls.append(1)
        if len(calls) == 1:
            time.sleep(0.05)     # the maker meets the gate meanwhile
        return {**state, "hits": state["count"]}

    t = threading.Thread(target=maker)
    t.start()
    while len(made) < 200:
        time.sleep(0.001)
    r = sm.hot_reload_source(sid, ITEM_V2, module="item", state_handler=slow)
    time.sleep(0.05)
    stop.set()
    t.join(10)
    old_layout = [o for o in made if "hits" not in vars(o)]
    assert not old_layout, f"{len(old_layout)} of {len(made)} objects kept the old layout"
    assert r.migrated >= 200
    assert sorted(o.hits for o in made) == list(range(len(made)))   # each one made once


BAG_V1 = '''\
class Bag:
    def __init__(self, n):
        self.n = n
        self.items = [n]
        self.meta = {"tags": ["a"]}
'''


def test_a_refused_reload_leaves_nested_values_as_they_were(sid):
    # the handler changes what it is given in place (a common way to write one),
    # then fails on a later object: every object is exactly as before, nested too
    sm.hot_reload_source(sid, BAG_V1, module="bag")
    Bag = sm.get_sandbox(sid).Bag
    bags = [Bag(i) for i in range(5)]
    items = [b.items for b in bags]

    def handler(state, ov, nv):
        state["items"].append("migrated")
        state["meta"]["tags"].append("v2")
        if state["n"] == 3:
            raise ValueError("no")
        return state

    try:
        sm.hot_reload_source(sid, BAG_V1 + "# v2\n", module="bag", state_handler=handler)
    except sm.ReloadError:
        pass
    else:
        raise AssertionError("the reload should have been refused")
    assert [b.items for b in bags] == [[i] for i in range(5)]
    assert [b.meta for b in bags] == [{"tags": ["a"]}] * 5
    assert all(b.items is it for b, it in zip(bags, items))     # the same lists, put back


STATEFUL_V1 = '''\
class Stateful:
    def __init__(self):
        self.x = 1

    def __getstate__(self):
        return dict(self.__dict__)

    def __setstate__(self, state):
        self.__dict__.update(state)
'''


def test_a_refused_reload_restores_setstate_objects_byte_for_byte(sid):
    sm.hot_reload_source(sid, STATEFUL_V1, module="st")
    objs = [sm.get_sandbox(sid).Stateful() for _ in range(3)]
    with __import__("pytest").raises(sm.ReloadError):
        sm.hot_reload_source(sid, STATEFUL_V1 + "# v2\n", module="st",
                             state_handler=lambda s, ov, nv: {**s, "added": True},
                             check=lambda sb: False)
    assert [vars(o) for o in objs] == [{"x": 1}] * 3      # the added key did not stay
