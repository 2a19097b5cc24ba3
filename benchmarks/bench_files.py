"""The file workflow, side by side in one run: a save until the new code is live, and bisect.

Rows:
* time from writing a file (the 60-line benchmark module, 1,000 live
  instances) until the new version is live in a watched sandbox (the watch
  thread sees the save, reloads and reports), against IPython's
  ``%autoreload 2`` applying the same save when the next cell runs (its
  check before the cell), median over 50 saves; the watch's debounce is
  counted in, as a user waits for it;
* bisect over 1,000 retained versions (the 1,000th bad), against probing every
  version one by one.

Run:  .venv/bin/python benchmarks/bench_files.py  [--saves N] [--versions N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import sandbox_magic as sm

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _module import source  # noqa: E402
from bench_reload import _timed_edits, _write, autoreload_module, publish, spread  # noqa: E402


def watched_saves(saves: int, debounce: float) -> list[float]:
    folder = Path(tempfile.mkdtemp())
    path = folder / "benchmod_w.py"
    path.write_text(source(0))
    done = threading.Event()
    sm.create_sandbox("files")
    sm.watch("files", folder, debounce=debounce, on_event=lambda e: done.set())
    live = sm.get_sandbox("files").make(1000)
    times = []
    try:
        for i in range(1, saves + 1):
            done.clear()
            t0 = time.perf_counter()
            _write(path, i)
            if not done.wait(10):
                raise RuntimeError(f"save {i} was not picked up within 10 s")
            times.append(time.perf_counter() - t0)
            assert live[0].step(0) == i
    finally:
        sm.destroy_sandbox("files")
    return times


def bisect_times(n: int, repeats: int) -> tuple[list[float], list[float]]:
    sm.create_sandbox("many", max_versions=None)
    for k in range(1, n + 1):
        sm.hot_reload_source("many", f"def ok():\n    return {'True' if k < n else 'False'}\n"
                                     f"# {k}\n", module="m")
    bis, lin = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        assert sm.bisect("many", "m", "ok()") == n
        bis.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    values = sm.probe("many", "m", "ok()")
    lin.append(time.perf_counter() - t0)
    assert values[n] is False
    sm.destroy_sandbox("many")
    return bis, lin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saves", type=int, default=50)
    parser.add_argument("--versions", type=int, default=1000)
    parser.add_argument("--debounce", type=float, default=0.05)
    args = parser.parse_args()
    sm.set_default_store(":memory:")
    ours = watched_saves(args.saves, args.debounce)
    path, live, check = autoreload_module(False)
    theirs, ok = _timed_edits(path, live, check, args.saves)
    assert ok
    bis, lin = bisect_times(args.versions, 3)
    ratio = sorted(ours)[len(ours) // 2] / sorted(theirs)[len(theirs) // 2]
    table = "\n".join([
        "| file workflow (median, min-max in brackets) | sandbox_magic | baseline | ratio |",
        "|---|---|---|---|",
        f"| a save until the new version is live: `watch` (debounce {args.debounce} s "
        f"included) vs `%autoreload 2` applying it before the next cell "
        f"| {spread(ours, 'ms')} | {spread(theirs, 'ms')} | {ratio:.1f}x |",
        f"| finding the bad version among {args.versions}: `bisect` vs `probe` of every "
        f"version | {spread(bis, 'ms', 1)} | {spread(lin, 'ms', 0)} "
        f"| {sorted(bis)[1] / lin[0]:.3f}x |",
    ])
    publish("files", table)


if __name__ == "__main__":
    main()
