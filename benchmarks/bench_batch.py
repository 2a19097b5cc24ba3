"""Batch reloads and dependency ordering.

* ``batch_hot_reload`` of one source into 200 sandboxes against a plain loop
  calling ``hot_reload_source`` for each (same code, same sandboxes);
* ``calculate_reload_order`` over a sandbox of 500 modules (each importing up
  to three earlier ones) against the standard library's ``graphlib`` ordering
  the same graph.

Run:  .venv/bin/python benchmarks/bench_batch.py
"""

from __future__ import annotations

import graphlib
import random
import statistics
import sys
import time
from pathlib import Path

import sandbox_magic as sm

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _module import source  # noqa: E402
from bench_reload import fresh_store, publish  # noqa: E402

fresh_store()


def batch_vs_loop(n: int, repeats: int) -> tuple[float, float]:
    ids = [f"batch{i}" for i in range(n)]
    for i in ids:
        sm.create_sandbox(i, max_versions=None)
        sm.hot_reload_source(i, source(0), "benchmod")
    ours, loop = [], []
    edit = 1
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = sm.batch_hot_reload(ids, source(edit), module="benchmod")
        ours.append(time.perf_counter() - t0)
        assert all(r.status == "hot_reloaded" for _, r in res)
        edit += 1
        t0 = time.perf_counter()
        for i in ids:
            assert sm.hot_reload_source(i, source(edit), "benchmod").status == "hot_reloaded"
        loop.append(time.perf_counter() - t0)
        edit += 1
    for i in ids:
        sm.destroy_sandbox(i)
    return statistics.median(ours), statistics.median(loop)


def order_500(repeats: int) -> tuple[float, float]:
    rng = random.Random(7)
    sources = {}
    graph: dict[str, set[str]] = {}
    for k in range(500):
        deps = sorted({f"m{rng.randrange(k)}" for _ in range(3)}) if k else []
        graph[f"m{k}"] = set(deps)
        sources[f"m{k}"] = "".join(f"import {d}\n" for d in deps) + f"VALUE = {k}\n"
    sm.create_sandbox("graph500")
    sm.hot_reload_source("graph500", sources)
    names = list(sources)
    ours, stdlib = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        order = sm.ModuleVersionManager.calculate_reload_order(names, sandbox_id="graph500")
        ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ref = list(graphlib.TopologicalSorter(graph).static_order())
        stdlib.append(time.perf_counter() - t0)
        pos = {m: i for i, m in enumerate(order)}
        assert len(ref) == 500 and all(pos[d] < pos[m] for m in graph for d in graph[m])
    sm.destroy_sandbox("graph500")
    return statistics.median(ours), statistics.median(stdlib)


def main() -> None:
    ours, loop = batch_vs_loop(200, 5)
    o500, g500 = order_500(9)
    table = "\n".join([
        "| batch and dependencies | sandbox_magic | baseline | ratio |",
        "|---|---|---|---|",
        f"| one source into 200 sandboxes: `batch_hot_reload` vs a loop of "
        f"`hot_reload_source` | {ours * 1e3:.1f} ms | {loop * 1e3:.1f} ms "
        f"| {loop / ours:.1f}x faster |",
        f"| reload order of a 500-module sandbox (`calculate_reload_order`, from the "
        f"sources) vs `graphlib` on the ready-made graph | {o500 * 1e3:.2f} ms "
        f"| {g500 * 1e3:.2f} ms | {o500 / g500:.1f}x |",
    ])
    publish("batch", table)


if __name__ == "__main__":
    main()
