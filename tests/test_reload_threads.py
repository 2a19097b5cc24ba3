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
