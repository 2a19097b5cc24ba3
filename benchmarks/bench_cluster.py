"""Two-phase reload over ipyparallel engines against a plain broadcast, in one run.

For 1, 2 and 4 engines: the time of a ``hot_reload_source`` of the benchmark
module on a cluster sandbox (prepare on every engine, then commit, then record
and close), against one ``DirectView.execute`` of the same source on the same
engines (what a plain broadcast costs, with no versions, no state and no
all-or-nothing).

Run:  .venv/bin/python benchmarks/bench_cluster.py  [--repeats N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from time import perf_counter

import ipyparallel as ipp

import sandbox_magic as sm

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _module import source  # noqa: E402
from bench_reload import publish, spread  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    sm.set_default_store(":memory:")
    cluster = ipp.Cluster(n=4, log_level=40)
    rc = cluster.start_and_connect_sync()
    rc.wait_for_engines(4, timeout=120)
    rows = []
    try:
        for n in (1, 2, 4):
            view = rc[list(range(n))]
            sid = f"bench{n}"
            sm.create_sandbox(sid, host=view, call_timeout=60)
            sm.hot_reload_source(sid, source(0), module="particles")
            ours, plain = [], []
            for i in range(1, args.repeats + 1):
                t = perf_counter()
                sm.hot_reload_source(sid, source(i), module="particles")
                ours.append(perf_counter() - t)
                t = perf_counter()
                view.execute(source(1000 + i), block=True)
                plain.append(perf_counter() - t)
            sm.destroy_sandbox(sid)
            ratio = statistics.median(ours) / statistics.median(plain)
            rows.append(f"| {n} engine{'s' if n > 1 else ''} | {spread(ours, 'ms')} | "
                        f"{spread(plain, 'ms')} | {ratio:.2f}x |")
    finally:
        cluster.stop_cluster_sync()
    table = "\n".join([
        "| cluster reload (median, min-max in brackets) | two-phase `hot_reload_source` "
        "| one `DirectView.execute` of the source | ratio |",
        "|---|---|---|---|", *rows])
    publish("cluster", table)


if __name__ == "__main__":
    main()
