"""Reload cost against module size: a one-line edit of modules of 25, 250 and 1,000 functions.

Every reloader applies the same one-line edit (one function's body, in the
middle of the module) to the same module; the baseline is compiling and
executing the whole module once (``compile`` + ``exec`` into a fresh dict).
sandbox_magic re-uses the compiled code of unchanged top-level statements
(see ``sandbox_magic/engine/chunks.py``); IPython's autoreload and jurigged
re-read the file.  Each reloader and size runs in its own process; every timed
reload is checked to have taken effect through a function object held from
the first version.  The default, durable history store is used.

Run:  .venv/bin/python benchmarks/bench_size.py  [--repeats N]
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_reload import _write, fresh_store, publish, run_worker, spread  # noqa: E402

SIZES = [25, 250, 1000]
PEERS = ["compile_exec", "sandbox_magic", "autoreload", "autoreload_full", "jurigged"]
LABELS = {
    "compile_exec": "baseline: `compile` + `exec` of the whole module",
    "sandbox_magic": "sandbox_magic `hot_reload_source`",
    "autoreload": "IPython `%autoreload 2`",
    "autoreload_full": "IPython `%autoreload 2 --full`",
    "jurigged": "jurigged",
}


def module(n: int):
    """Source maker of a module with ``n`` functions; ``f{n//2}`` returns the edit."""
    mid = n // 2

    def make(edit: int) -> str:
        parts = ['"""A module of many small functions."""\nimport math\nSCALE = 3\n']
        for i in range(n):
            ret = f"{edit}" if i == mid else f"math.floor(z) + SCALE + {i}"
            parts.append(f"\n\ndef f{i}(x, y=2):\n    \"\"\"Function number {i}.\"\"\"\n"
                         f"    z = x * y + {i}\n    return {ret}\n")
        return "".join(parts)
    return make, f"f{mid}"


def run(peer: str, n: int, repeats: int) -> dict:
    make, name = module(n)
    times: list[float] = []
    ok = True
    if peer == "compile_exec":
        for i in range(1, repeats + 1):
            text = make(i)
            t0 = time.perf_counter()
            ns: dict = {"__name__": "m"}
            exec(compile(text, "m.py", "exec", dont_inherit=True), ns)
            times.append(time.perf_counter() - t0)
            ok &= ns[name](0) == i
    elif peer == "sandbox_magic":
        import sandbox_magic as sm

        sm.create_sandbox("size")
        sm.hot_reload_source("size", make(0), "sized")
        held = getattr(sm.get_sandbox("size"), name)
        for i in range(1, repeats + 1):
            text = make(i)
            t0 = time.perf_counter()
            sm.hot_reload_source("size", text, "sized")
            times.append(time.perf_counter() - t0)
            ok &= held(0) == i
    else:
        tmp = Path(tempfile.mkdtemp())
        path = tmp / f"sized_{peer}.py"
        path.write_text(make(0))
        sys.path.insert(0, str(tmp))
        if peer == "jurigged":
            from jurigged import registry

            registry.prepare(path.stem, str(path))
            mod = importlib.import_module(path.stem)
            apply = registry.get(str(path)).refresh
        else:
            from IPython.core.interactiveshell import InteractiveShell

            shell = InteractiveShell.instance()
            shell.run_line_magic("load_ext", "autoreload")
            shell.run_line_magic("autoreload", "2 --full" if peer == "autoreload_full" else "2")
            shell.run_cell(f"import {path.stem}")
            mod = shell.user_ns[path.stem]
            apply = shell.magics_manager.registry["AutoreloadMagics"]._reloader.check
            apply()
        held = getattr(mod, name)
        for i in range(1, repeats + 1):
            _write(path, i, make)
            t0 = time.perf_counter()
            apply()
            times.append(time.perf_counter() - t0)
            ok &= held(0) == i
    return {"times": times, "median": statistics.median(times), "applied": ok}


def spawn(peer: str, n: int, repeats: int) -> dict:
    return run_worker(__file__, peer, "--size", n, "--repeats", repeats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker")
    ap.add_argument("--size", type=int)
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    fresh_store()
    if args.worker:
        print(json.dumps(run(args.worker, args.size, args.repeats)))
        return
    res = {(p, n): spawn(p, n, args.repeats) for n in SIZES for p in PEERS}
    lines = [
        f"One-line edit of a module of N functions (5 lines each), median (min-max) of "
        f"{args.repeats} edits; first ratio = median / whole `compile` + `exec`, second "
        "= median / `%autoreload 2`, both at the same size.",
        "",
        "| reloader | " + " | ".join(f"{n:,} functions | / compile | / autoreload"
                                      for n in SIZES) + " | edit applied |",
        "|---|" + "---|---|---|" * len(SIZES) + "---|",
    ]
    for p in PEERS:
        cells, applied = [], True
        for n in SIZES:
            r = res[(p, n)]
            if "error" in r:
                cells.append(f"error: {r['error']} | | ")
                applied = False
                continue
            base, ar = res[("compile_exec", n)], res[("autoreload", n)]
            cells.append(f"{spread(r['times'], 'ms')} | {r['median'] / base['median']:.2f}x "
                         f"| {r['median'] / ar['median']:.2f}x")
            applied &= r["applied"]
        lines.append(f"| {LABELS[p]} | " + " | ".join(cells)
                     + f" | {'yes' if applied else 'NO'} |")
    publish("size", "\n".join(lines))


if __name__ == "__main__":
    main()
