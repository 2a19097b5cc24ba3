"""Reload latency of sandbox_magic against IPython autoreload and jurigged, side by side.

Every reloader applies the same edit to the same ~60-line module (one class,
five functions) while 1,000 instances of its class are alive, once with no
unrelated heap and once with 5 million unrelated objects.  Each configuration
runs in its own process; every timed reload is checked to have taken effect
on the live instances.  Also measured: calling a method of a sandbox class
against the same class defined plainly.

Run:  .venv/bin/python benchmarks/bench_reload.py  [--repeats N] [--heap N]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _module import source  # noqa: E402

PEERS = ["sandbox_magic", "autoreload", "autoreload_full", "jurigged"]
LABELS = {
    "sandbox_magic": "sandbox_magic `hot_reload_source`",
    "autoreload": "IPython `%autoreload 2`",
    "autoreload_full": "IPython `%autoreload 2 --full`",
    "jurigged": "jurigged",
}


def make_heap(n: int) -> list:
    # gc-tracked objects, the kind a heap scan has to walk
    return [[] for _ in range(n)]


def _file_module(tmp: Path, name: str, make=source) -> Path:
    path = tmp / f"{name}.py"
    path.write_text(make(0))
    sys.path.insert(0, str(tmp))
    return path


def _write(path: Path, edit: int, make=source) -> None:
    path.write_text(make(edit))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + edit * 1_000_000_000))


def run_sandbox_magic(repeats: int) -> tuple[list[float], bool]:
    import sandbox_magic as sm

    sm.create_sandbox("bench")
    sm.hot_reload_source("bench", source(0), "benchmod")
    live = sm.get_sandbox("bench").make(1000)
    times, ok = [], True
    for i in range(1, repeats + 1):
        text = source(i)
        t0 = time.perf_counter()
        sm.hot_reload_source("bench", text, "benchmod")
        times.append(time.perf_counter() - t0)
        ok &= live[0].step(0) == i
    return times, ok


def _autoreload(repeats: int, full: bool) -> tuple[list[float], bool]:
    path, live, check = autoreload_module(full)
    return _timed_edits(path, live, check, repeats)


def autoreload_module(full: bool, make=source) -> tuple[Path, list, Callable[[], None]]:
    """A file module under ``%autoreload 2`` with 1,000 live instances of its class.

    Returns the file, the instances and the reloader's check (what IPython runs
    before each cell).
    """
    from IPython.core.interactiveshell import InteractiveShell

    tmp = Path(tempfile.mkdtemp())
    path = _file_module(tmp, "benchmod_ar", make)
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "autoreload")
    shell.run_line_magic("autoreload", "2 --full" if full else "2")
    shell.run_cell("import benchmod_ar\nlive = benchmod_ar.make(1000)")
    reloader = shell.magics_manager.registry["AutoreloadMagics"]._reloader
    live = shell.user_ns["live"]
    reloader.check()
    return path, live, reloader.check


def run_jurigged(repeats: int) -> tuple[list[float], bool]:
    from jurigged import registry

    tmp = Path(tempfile.mkdtemp())
    path = _file_module(tmp, "benchmod_jr")
    registry.prepare("benchmod_jr", str(path))
    mod = importlib.import_module("benchmod_jr")
    live = mod.make(1000)
    cf = registry.get(str(path))
    return _timed_edits(path, live, cf.refresh, repeats)


def _timed_edits(path: Path, live: list, apply, repeats: int) -> tuple[list[float], bool]:
    """Write edit i to the file, time ``apply()``, check the live objects run edit i."""
    times, ok = [], True
    for i in range(1, repeats + 1):
        _write(path, i)
        t0 = time.perf_counter()
        apply()
        times.append(time.perf_counter() - t0)
        ok &= live[0].step(0) == i
    return times, ok


def method_call_ratio() -> dict:
    """Seconds per ``p.energy()`` call in each of 15 rounds, sandbox and plain, and the
    ratio of their medians."""
    import sandbox_magic as sm

    sm.create_sandbox("bench_calls")
    sm.hot_reload_source("bench_calls", source(1), "benchmod")
    sandboxed = sm.get_sandbox("bench_calls").Particle(1.0, 2.0)
    plain_ns: dict = {"__name__": "plain"}
    exec(compile(source(1), "plain.py", "exec"), plain_ns)
    plain = plain_ns["Particle"](1.0, 2.0)
    rounds: dict[str, list[float]] = {"sandbox": [], "plain": []}
    for _ in range(15):
        for name, obj in (("sandbox", sandboxed), ("plain", plain)):
            best = min(timeit.repeat(obj.energy, number=200_000, repeat=3))
            rounds[name].append(best / 200_000)
    s, p = statistics.median(rounds["sandbox"]), statistics.median(rounds["plain"])
    return {"sandbox": rounds["sandbox"], "plain": rounds["plain"], "ratio": s / p}


def worker(peer: str, heap_size: int, repeats: int) -> dict:
    heap = make_heap(heap_size)
    if peer == "sandbox_magic":
        times, ok = run_sandbox_magic(repeats)
    elif peer == "autoreload":
        times, ok = _autoreload(repeats, full=False)
    elif peer == "autoreload_full":
        times, ok = _autoreload(repeats, full=True)
    elif peer == "jurigged":
        times, ok = run_jurigged(repeats)
    elif peer == "calls":
        return method_call_ratio()
    else:
        raise SystemExit(f"unknown peer {peer}")
    del heap
    return {"times": times, "median": statistics.median(times), "applied": ok, "n": len(times)}


def run_worker(script: str, *args: object) -> dict:
    """Run ``script --worker ...`` in a fresh interpreter; its last stdout line is JSON."""
    out = subprocess.run([sys.executable, script, "--worker", *map(str, args)],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def spawn(peer: str, heap: int, repeats: int) -> dict:
    return run_worker(__file__, peer, "--heap", heap, "--repeats", repeats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker")
    ap.add_argument("--heap", type=int, default=5_000_000)
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    fresh_store()
    if args.worker:
        print(json.dumps(worker(args.worker, args.heap, args.repeats)))
        return
    heaps = [0, args.heap]
    res = {(p, h): spawn(p, h, args.repeats) for p in PEERS for h in heaps}
    calls = spawn("calls", 0, 0)
    base = {h: res[("autoreload", h)].get("median") for h in heaps}
    lines = [
        f"Reload of a 60-line module with 1,000 live instances, median (min-max) of "
        f"{args.repeats} edits; ratio = median / the median of IPython `%autoreload 2` "
        "at the same heap.",
        "",
        f"| reloader | heap 0 | ratio | heap {args.heap:,} | ratio | heap growth "
        "(big / 0) | edit applied |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in PEERS:
        r0, r1 = res[(p, heaps[0])], res[(p, heaps[1])]
        if "error" in r0 or "error" in r1:
            lines.append(f"| {LABELS[p]} | error: {r0.get('error') or r1.get('error')} "
                         "| | | | | |")
            continue
        lines.append(
            f"| {LABELS[p]} | {spread(r0['times'], 'ms')} | {r0['median'] / base[0]:.2f}x "
            f"| {spread(r1['times'], 'ms')} | {r1['median'] / base[heaps[1]]:.2f}x "
            f"| {r1['median'] / r0['median']:.2f}x "
            f"| {'yes' if r0['applied'] and r1['applied'] else 'NO'} |")
    lines += [
        "",
        "| method call `p.energy()`, 15 rounds | time per call | ratio |",
        "|---|---|---|",
        f"| plain class | {spread(calls['plain'], 'ns', 1)} | 1.00x |",
        f"| sandbox class | {spread(calls['sandbox'], 'ns', 1)} | {calls['ratio']:.2f}x |",
    ]
    table = "\n".join(lines)
    publish("reload", table)


def fresh_store() -> None:
    """Benchmarks run with the default, durable store, in a new file each run."""
    if "SANDBOX_MAGIC_STORE" not in os.environ:
        os.environ["SANDBOX_MAGIC_STORE"] = os.path.join(
            tempfile.mkdtemp(prefix="sandbox_magic_bench_"), "history.sqlite3")


UNITS = {"s": 1.0, "ms": 1e3, "µs": 1e6, "ns": 1e9}


def spread(seconds: list[float], unit: str, digits: int = 2) -> str:
    """Repeated timings as ``median unit (min-max)``, e.g. ``1.07 ms (1.01-1.20)``.

    Every timed row of the benchmark tables reports its repeats this way, so a
    reader sees how much the number moved within the run.
    """
    k = UNITS[unit]
    med, lo, hi = statistics.median(seconds) * k, min(seconds) * k, max(seconds) * k
    return f"{med:.{digits}f} {unit} ({lo:.{digits}f}-{hi:.{digits}f})"


def publish(key: str, table: str) -> None:
    """Print a result table, keep it in benchmarks/results/, and put it in the README."""
    print(table)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"{key}.md").write_text(table + "\n")
    update_readme(key, table)


def update_readme(key: str, table: str) -> None:
    """Replace the README block between ``<!-- bench:KEY -->`` markers with ``table``."""
    readme = HERE.parent / "README.md"
    text = readme.read_text()
    start, end = f"<!-- bench:{key} -->", f"<!-- /bench:{key} -->"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        readme.write_text(f"{head}{start}\n{table}\n{end}{tail}")


if __name__ == "__main__":
    main()
