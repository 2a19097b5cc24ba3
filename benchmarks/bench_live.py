"""Live-state costs: migrating instances, server calls, and creating tracked instances.

* a reload that migrates 100,000 live instances with a trivial ``state_handler``
  against a bare loop applying the same handler to 100,000 dicts; and the same with
  states that hold a list and a dict each (what a refused reload puts back, nested
  containers included, is recorded before the handler runs);
* a server ``call`` round trip against a plain thread-and-queue echo;
* creating an instance of a sandbox class (tracked) against a plain class.

Every timed row gives the median and, in brackets, the min-max of its repeats.

Run:  .venv/bin/python benchmarks/bench_live.py  [--instances N] [--repeats N]
"""

from __future__ import annotations

import argparse
import queue
import statistics
import sys
import threading
import time
import timeit
from concurrent.futures import Future
from pathlib import Path

import sandbox_magic as sm

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_reload import fresh_store, publish, spread  # noqa: E402

fresh_store()

PARTICLE = '''
class Particle:
    def __init__(self, i):
        self.i = i
        self.x = 0.0
        self.y = 0.0
    def move(self):
        self.x += {edit}
'''

NESTED = '''
class Particle:
    def __init__(self, i):
        self.i = i
        self.trail = [i, i + 1]
        self.meta = {{"seen": i}}
    def move(self):
        self.trail.append({edit})
'''


def handler(state, old_version, new_version):
    return {**state, "mass": 1.0}


def migrate(n: int, repeats: int, source: str = PARTICLE) -> tuple[list[float], list[float]]:
    sm.create_sandbox("bench_live")
    sm.hot_reload_source("bench_live", source.format(edit=0), "particle")
    P = sm.get_sandbox("bench_live").Particle
    live = [P(i) for i in range(n)]
    ours, bare = [], []
    for k in range(1, repeats + 1):
        src = source.format(edit=k)
        t0 = time.perf_counter()
        r = sm.hot_reload_source("bench_live", src, "particle", state_handler=handler)
        ours.append(time.perf_counter() - t0)
        assert r.migrated == n and live[-1].mass == 1.0
        dicts = [p.__dict__ for p in live]      # the instances' own attribute dicts
        t0 = time.perf_counter()
        out = [handler(d, k, k + 1) for d in dicts]
        bare.append(time.perf_counter() - t0)
        assert len(out) == n
    sm.destroy_sandbox("bench_live")
    return ours, bare


ECHO = '''
from sandbox_magic import Server
class Echo(Server):
    def handle_call(self, request, state):
        return request, state
'''


def server_calls(calls: int) -> tuple[list[float], list[float]]:
    """Seconds per call, averaged over ``calls`` calls, in each of 5 rounds."""
    sm.create_sandbox("bench_srv")
    sm.hot_reload_source("bench_srv", ECHO, "echo")
    ref = sm.start_server("bench_srv", "Echo")
    inbox: queue.Queue = queue.Queue()

    def loop() -> None:
        while True:
            item = inbox.get()
            if item is None:
                return
            req, fut = item
            fut.set_result(req)

    t = threading.Thread(target=loop, daemon=True)
    t.start()

    def plain_call(x: int) -> int:
        fut: Future = Future()
        inbox.put((x, fut))
        return fut.result(5.0)

    ours, plain = [], []
    for _ in range(5):
        t0 = time.perf_counter()
        for i in range(calls):
            ref.call(i)
        ours.append((time.perf_counter() - t0) / calls)
        t0 = time.perf_counter()
        for i in range(calls):
            plain_call(i)
        plain.append((time.perf_counter() - t0) / calls)
    inbox.put(None)
    sm.destroy_sandbox("bench_srv")
    return ours, plain


def creation() -> tuple[list[float], list[float]]:
    """Seconds per instance, averaged over 100,000 creations, in each of 5 rounds."""
    sm.create_sandbox("bench_new")
    sm.hot_reload_source("bench_new", PARTICLE.format(edit=0), "particle")
    S = sm.get_sandbox("bench_new").Particle
    ns: dict = {}
    exec(PARTICLE.format(edit=0), ns)
    P = ns["Particle"]
    s = [t / 100_000 for t in timeit.repeat(lambda: S(1), number=100_000, repeat=5)]
    p = [t / 100_000 for t in timeit.repeat(lambda: P(1), number=100_000, repeat=5)]
    sm.destroy_sandbox("bench_new")
    return s, p


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instances", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--calls", type=int, default=5_000)
    args = ap.parse_args()
    ours, bare = migrate(args.instances, args.repeats)
    nested_ours, nested_bare = migrate(args.instances, args.repeats, NESTED)
    call_ours, call_plain = server_calls(args.calls)
    new_ours, new_plain = creation()
    n = f"{args.instances:,}"
    med = statistics.median
    table = "\n".join([
        "| live state (median, min-max in brackets) | sandbox_magic | baseline | ratio |",
        "|---|---|---|---|",
        f"| reload migrating {n} instances vs bare loop of the handler over their {n} dicts "
        f"| {spread(ours, 'ms', 1)} | {spread(bare, 'ms', 1)} | {med(ours) / med(bare):.2f}x |",
        f"| the same, each state holding a list and a dict "
        f"| {spread(nested_ours, 'ms', 1)} | {spread(nested_bare, 'ms', 1)} "
        f"| {med(nested_ours) / med(nested_bare):.2f}x |",
        f"| server `call` round trip vs thread + queue + future echo "
        f"| {spread(call_ours, 'µs', 1)} | {spread(call_plain, 'µs', 1)} "
        f"| {med(call_ours) / med(call_plain):.2f}x |",
        f"| creating an instance (tracked) vs plain class "
        f"| {spread(new_ours, 'ns', 0)} | {spread(new_plain, 'ns', 0)} "
        f"| {med(new_ours) / med(new_plain):.2f}x |",
    ])
    publish("live", table)


if __name__ == "__main__":
    main()
