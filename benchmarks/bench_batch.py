"""Batch reloads and dependency ordering.

* ``batch_hot_reload`` of one source into 200 sandboxes against a plain loop
  calling ``hot_reload_source`` for each (same code, same sandboxes);
* ``calculate_reload_order`` over a sandbox of 500 modules (each importing up
  to three earlier ones) against the standard library's ``graphlib`` ordering
  the same graph.  Each repeat loads sources it has not seen before (same
  graph, new text): the import analysis is cached per source text, and a
  repeat on the same sources would time the cache, not the work.

Every timed row gives the median and, in brackets, the min-max of its repeats.

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
from bench_reload import fresh_store, publish, spread  # noqa: E402

fresh_store()


def batch_vs_loop(n: int, repeats: int) -> tuple[list[float], list[float]]:
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
    return ours, loop


def graph_500(tag: str) -> tuple[dict[str, str], dict[str, set[str]]]:
    """Sources of 500 modules, each importing up to three earlier ones, and their graph.

    The graph is the same for every ``tag``; the text is not (``tag`` is in a comment).
    """
    rng = random.Random(7)
    sources: dict[str, str] = {}
    graph: dict[str, set[str]] = {}
    for k in range(500):
        deps = sorted({f"m{rng.randrange(k)}" for _ in range(3)}) if k else []
        graph[f"m{k}"] = set(deps)
        sources[f"m{k}"] = "".join(f"import {d}\n" for d in deps) + f"VALUE = {k}  # {tag}\n"
    return sources, graph


def order_500(repeats: int) -> tuple[list[float], list[float]]:
    """Each repeat: a new sandbox of 500 modules whose sources were never analysed."""
    ours, stdlib = [], []
    for r in range(repeats):
        sources, graph = graph_500(f"repeat {r}")
        sid = f"graph500_{r}"
        sm.create_sandbox(sid)
        sm.hot_reload_source(sid, sources)
        names = list(sources)
        t0 = time.perf_counter()
        order = sm.ModuleVersionManager.calculate_reload_order(names, sandbox_id=sid)
        ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ref = list(graphlib.TopologicalSorter(graph).static_order())
        stdlib.append(time.perf_counter() - t0)
        pos = {m: i for i, m in enumerate(order)}
        assert len(ref) == 500 and all(pos[d] < pos[m] for m in graph for d in graph[m])
        sm.destroy_sandbox(sid)
    return ours, stdlib


def main() -> None:
    ours, loop = batch_vs_loop(200, 5)
    o500, g500 = order_500(9)
    speedup = statistics.median(loop) / statistics.median(ours)
    slowdown = statistics.median(o500) / statistics.median(g500)
    table = "\n".join([
        "| batch and dependencies (median, min-max in brackets) | sandbox_magic | baseline "
        "| ratio |",
        "|---|---|---|---|",
        f"| one source into 200 sandboxes: `batch_hot_reload` vs a loop of "
        f"`hot_reload_source` | {spread(ours, 'ms', 1)} | {spread(loop, 'ms', 1)} "
        f"| {speedup:.1f}x faster |",
        f"| reload order of a 500-module sandbox (`calculate_reload_order` on sources it has "
        f"not analysed yet) vs `graphlib` on the ready-made graph | {spread(o500, 'ms')} "
        f"| {spread(g500, 'ms')} | {slowdown:.1f}x |",
    ])
    publish("batch", table)


if __name__ == "__main__":
    main()
