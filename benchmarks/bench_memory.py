"""Memory over many reloads: does it stay flat once retention is full?

A 200-line module (the benchmark module of ``_module.py`` grown with helper
functions) is reloaded 5,000 times, every time with a new edit number, so
each reload is a real new version, while 1,000 instances of its class are
alive.  sandbox_magic runs with its defaults: ``max_versions=10`` and the
durable SQLite store (in a fresh temporary file).  IPython's ``%autoreload 2``
gets the same edits written to a file.  Each reloader runs in its own
process; the resident set size (VmRSS) is read after a warm-up of 50 reloads
(retention full, caches warm) and again after the 5,000 reloads.

Run:  .venv/bin/python benchmarks/bench_memory.py  [--reloads N]
"""

from __future__ import annotations

import argparse
import gc
import json
import linecache
import resource
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _module import padded_source  # noqa: E402
from bench_reload import _write, autoreload_module, fresh_store, publish, run_worker  # noqa: E402

WARMUP = 50
LINES = 200
PEERS = {"sandbox_magic": "sandbox_magic `hot_reload_source`",
         "autoreload": "IPython `%autoreload 2`"}


def rss_mb() -> float:
    """Current resident set size in MB (peak size where /proc is missing)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make(edit: int) -> str:
    return padded_source(edit, LINES)


def sandbox_magic_reloads(reloads: int) -> dict:
    import sandbox_magic as sm

    sm.create_sandbox("bench_mem")    # default retention: 10 versions
    sm.hot_reload_source("bench_mem", make(0), "benchmod")
    live = sm.get_sandbox("bench_mem").make(1000)

    def reload(i: int) -> None:
        sm.hot_reload_source("bench_mem", make(i), "benchmod")

    out = _measure(reload, live, reloads)
    out["linecache_entries"] = sum(1 for k in linecache.cache
                                   if str(k).startswith("<sandbox benchmod "))
    return out


def autoreload_reloads(reloads: int) -> dict:
    path, live, check = autoreload_module(False, make)

    def reload(i: int) -> None:
        _write(path, i, make)
        check()

    return _measure(reload, live, reloads)


def _measure(reload, live: list, reloads: int) -> dict:
    for i in range(1, WARMUP + 1):
        reload(i)
    gc.collect()
    before = rss_mb()
    for i in range(WARMUP + 1, WARMUP + reloads + 1):
        reload(i)
    gc.collect()
    after = rss_mb()
    return {"before": before, "after": after, "growth": after - before,
            "applied": live[0].step(0) == WARMUP + reloads}


def spawn(peer: str, reloads: int) -> dict:
    return run_worker(__file__, peer, "--reloads", reloads)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker")
    ap.add_argument("--reloads", type=int, default=5000)
    args = ap.parse_args()
    fresh_store()
    if args.worker:
        run = sandbox_magic_reloads if args.worker == "sandbox_magic" else autoreload_reloads
        print(json.dumps(run(args.reloads)))
        return
    lines = [
        f"RSS growth over {args.reloads:,} reloads of a {LINES}-line module (a new edit each "
        f"time) with 1,000 live instances, after a warm-up of {WARMUP} reloads; "
        "sandbox_magic with its defaults (10 versions retained, SQLite store).",
        "",
        "| reloader | RSS after warm-up | RSS after | growth | edit applied |",
        "|---|---|---|---|---|",
    ]
    for peer, label in PEERS.items():
        r = spawn(peer, args.reloads)
        if "error" in r:
            lines.append(f"| {label} | error: {r['error']} | | | |")
            continue
        lines.append(f"| {label} | {r['before']:.1f} MB | {r['after']:.1f} MB "
                     f"| {r['growth']:+.1f} MB | {'yes' if r['applied'] else 'NO'} |")
    publish("memory", "\n".join(lines))


if __name__ == "__main__":
    main()
