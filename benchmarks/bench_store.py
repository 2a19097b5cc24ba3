"""Durable history: reload latency with the SQLite store against the in-memory store,
the space 1,000 one-line edits of a 500-line module take on disk, and what one long
changed line costs (a 10,000-character line: diffing it for the user, storing it).

Every timed row gives the median and, in brackets, the min-max of its repeats.

Run:  .venv/bin/python benchmarks/bench_store.py
"""

from __future__ import annotations

import difflib
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import sandbox_magic as sm
from sandbox_magic import VersionStore
from sandbox_magic.engine.store import TAIL_MAX, SQLiteVersionStore
from sandbox_magic.engine.versions import ModuleHistory, VersionRecord, utcnow

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _module import source  # noqa: E402
from bench_reload import publish, spread  # noqa: E402


def latency(stores: dict[str, VersionStore], rounds: int) -> dict[str, list[float]]:
    """Seconds per reload for each store, the stores' reloads taking turns.

    Each store has its own sandbox with 1,000 live instances; alternating
    reload by reload means the machine's drift and the caches treat both alike.
    """
    live = {}
    # One module name per store: compiled statements are kept per module name,
    # and a shared name would let the second reload of each turn re-use them.
    for name, store in stores.items():
        sm.create_sandbox(name, store=store)   # default retention: 10 versions
        sm.hot_reload_source(name, source(0), f"mod_{name}")
        live[name] = sm.get_sandbox(name).make(1000)
    times: dict[str, list[float]] = {name: [] for name in stores}
    for i in range(1, rounds + 1):
        for name in stores:
            t0 = time.perf_counter()
            sm.hot_reload_source(name, source(i), f"mod_{name}")
            times[name].append(time.perf_counter() - t0)
    for name in stores:
        assert live[name][0].step(0) == rounds
        sm.destroy_sandbox(name)
    return times


def module_500(edit: int) -> str:
    body = [f"def f{i}(x):\n    return x + {i}  # line {i}\n" for i in range(250)]
    k = edit % 250
    body[k] = body[k].replace(f"x + {k}", f"x + {k} + {edit}")
    return "".join(body)


def storage(tmp: Path) -> tuple[int, int]:
    path = tmp / "size.sqlite3"
    store = SQLiteVersionStore(path)
    h = ModuleHistory("big")
    h.add(sm.compile_source(module_500(0), "big").artifacts[0], None)
    store.save("size", h)
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    empty = path.stat().st_size
    for e in range(1, 1001):
        h.records[e + 1] = VersionRecord(e + 1, None, utcnow(), None, module="big",
                                         source=module_500(e))
        h.next_version = e + 2
        h.activate(e + 1)
        store.save("size", h)
    store.close()            # what the kernel leaves on disk when it exits
    return path.stat().st_size - empty, len(module_500(0).encode())


def long_line_source(edit: int) -> str:
    """The benchmark module plus one line of 10,000 characters, different at every edit."""
    rng = random.Random(edit)
    data = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(10_000))
    return f"{source(0)}\nDATA = {data!r}\n"


def long_line(store: VersionStore, name: str,
              rounds: int) -> tuple[list[float], list[float], list[float]]:
    """Seconds, per round, to reload (and store) a version whose one long line changed, to
    diff it against the previous version (``diff_versions``), and to diff the same two
    sources with ``difflib.unified_diff``."""
    sm.create_sandbox(name, store=store)
    sm.hot_reload_source(name, long_line_source(0), "benchmod")
    reloads, diffs, peers = [], [], []
    for i in range(1, rounds + 1):
        t0 = time.perf_counter()
        r = sm.hot_reload_source(name, long_line_source(i), "benchmod")
        reloads.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        d = sm.diff_versions(name, "benchmod", r.new_version - 1, r.new_version)
        diffs.append(time.perf_counter() - t0)
        assert (d.lines_added, d.lines_removed) == (1, 1)
        old, new = long_line_source(i - 1), long_line_source(i)
        t0 = time.perf_counter()
        list(difflib.unified_diff(old.splitlines(True), new.splitlines(True)))
        peers.append(time.perf_counter() - t0)
    sm.destroy_sandbox(name)
    return reloads, diffs, peers


def timing(t: list[float]) -> str:
    return spread(t, "ms") if statistics.median(t) < 1 else spread(t, "s", 1)


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="sandbox_magic_bench_"))
    mem: list[float] = []
    disk: list[float] = []
    for k in range(3):   # each time a new file
        times = latency({f"mem{k}": VersionStore(),
                         f"disk{k}": SQLiteVersionStore(tmp / f"lat{k}.sqlite3")}, 80)
        mem += times[f"mem{k}"]
        disk += times[f"disk{k}"]
    grown, copy = storage(tmp)
    long_mem, diff, peer = long_line(VersionStore(), "longmem", 5)
    long_disk, _, _ = long_line(SQLiteVersionStore(tmp / "long.sqlite3"), "longdisk", 3)
    med = statistics.median
    table = "\n".join([
        "| durable history (times: median, min-max in brackets) | SQLite store | baseline "
        "| ratio |",
        "|---|---|---|---|",
        f"| reload of the 60-line module (1,000 live instances) vs the in-memory store "
        f"(their reloads taking turns) "
        f"| {timing(disk)} | {timing(mem)} | {med(disk) / med(mem):.2f}x |",
        f"| the same, mean of {len(disk)} reloads (one in {TAIL_MAX} also folds the tail "
        f"into deltas) | {statistics.mean(disk) * 1e3:.2f} ms | "
        f"{statistics.mean(mem) * 1e3:.2f} ms | {statistics.mean(disk) / statistics.mean(mem):.2f}x |",
        f"| disk growth for 1,000 one-line edits of a 500-line module (file after the "
        f"kernel exits) vs one copy of it "
        f"| {grown / 1024:.1f} KiB | {copy / 1024:.1f} KiB | {grown / copy:.2f}x |",
        f"| diff of two versions whose one 10,000-character line changed (`diff_versions`) "
        f"vs `difflib.unified_diff` of the same sources "
        f"| {timing(diff)} | {timing(peer)} | {med(diff) / med(peer):.2f}x |",
        f"| reload storing a version whose one 10,000-character line changed vs the "
        f"in-memory store | {timing(long_disk)} | {timing(long_mem)} "
        f"| {med(long_disk) / med(long_mem):.0f}x |",
    ])
    publish("store", table)


if __name__ == "__main__":
    main()
