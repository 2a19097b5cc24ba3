"""What knowing which version made an output costs, and what a dry run costs.

Rows (one run):

* a cell calling a sandbox function 1,000,000 times, in an IPython shell with
  ``%load_ext sandbox_magic``, its provenance recorded vs not (the recorder
  switched off for that cell), the two in turn in one process, median of 9
  cells each after 2 untimed pairs, on every interpreter the test command set
  up (the benchmark's own, and ``.venvs/3.X`` when present);
* a dry run of the 60-line benchmark module with 1,000 live instances next to
  the real reload of the same edit (both with a state handler, so that states
  are captured and migrated);
* the time from a cell's end to its badge in the browser, as the browser test
  measured it last (``benchmarks/results/browser.json``, key ``badge``).

Run:  .venv/bin/python benchmarks/bench_provenance.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _module import TEMPLATE  # noqa: E402
from bench_reload import fresh_store, publish, spread  # noqa: E402

CALLS = 1_000_000
CELL = f"for _ in range({CALLS}):\n    step()\n"


def cell_worker(repeats: int) -> dict[str, list[float]]:
    """One shell with the extension loaded; the same cell timed with the recording on
    and off in turn (off: the recorder skips the cell; events the last recorded cell
    turned off stay off), so both share the process, its memory and its caches."""
    from IPython.testing.globalipapp import start_ipython

    import sandbox_magic as sm
    from sandbox_magic.engine.provenance import RECORDER

    ip = start_ipython()
    ip.run_line_magic("load_ext", "sandbox_magic")
    sm.create_sandbox("bp")
    sm.hot_reload_source("bp", "def step():\n    return 1\n", "m")
    ip.user_ns["step"] = sm.get_sandbox("bp").modules["m"].step
    times: dict[str, list[float]] = {"on": [], "off": []}
    for i in range(repeats + 2):
        for mode in ("on", "off"):
            RECORDER.active = mode == "on"
            t0 = time.perf_counter()
            r = ip.run_cell(CELL)
            dt = time.perf_counter() - t0
            assert r.success
            if i >= 2:
                times[mode].append(dt)
    RECORDER.active = True
    runs = sm.cell_provenance()
    assert runs and runs[-1].modules[0].module == "m", runs[-1:]
    return times


def dry_run_rows(repeats: int = 30) -> list[str]:
    import sandbox_magic as sm

    def handler(state, old, new):
        return {**state, "seen": new}

    sm.create_sandbox("bd")
    sm.hot_reload_source("bd", TEMPLATE.format(edit=0), "particles")
    held = sm.get_sandbox("bd").modules["particles"].make(1000)   # noqa: F841 (live)
    dry, real = [], []
    for i in range(repeats + 4):
        # each with a text of its own: both compile a new version
        t0 = time.perf_counter()
        d = sm.hot_reload_source("bd", TEMPLATE.format(edit=2 * i + 1), "particles",
                                 state_handler=handler, dry_run=True)
        t1 = time.perf_counter()
        r = sm.hot_reload_source("bd", TEMPLATE.format(edit=2 * i + 2), "particles",
                                 state_handler=handler)
        t2 = time.perf_counter()
        assert not d.refused and d.migrations[0].instances == 1000, d
        assert r.migrated == 1000
        if i >= 4:
            dry.append(t1 - t0)
            real.append(t2 - t1)
    ratio = statistics.median(dry) / statistics.median(real)
    return [f"| dry run of a one-line edit of the 60-line module (1,000 live instances, state "
            f"handler) vs the reload itself | {spread(dry, 'ms')} | {spread(real, 'ms')} | "
            f"{ratio:.2f}x |"]


def interpreters() -> list[str]:
    found = [sys.executable]
    for venv in sorted((HERE.parent / ".venvs").glob("3.*")):
        exe = venv / "bin" / "python"
        if exe.exists():
            found.append(str(exe))
    return found


def version_of(exe: str) -> str:
    return subprocess.run([exe, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
                          capture_output=True, text=True, check=True).stdout.strip()


def cell_rows(repeats: int) -> list[str]:
    rows = []
    for exe in interpreters():
        out = subprocess.run([exe, __file__, "--worker", "--repeats", str(repeats)],
                             capture_output=True, text=True, check=False)
        if out.returncode != 0:
            print(out.stdout, out.stderr, file=sys.stderr)
            raise SystemExit(f"the worker under {exe} failed")
        got = json.loads(out.stdout.strip().splitlines()[-1])
        on, off = got["on"], got["off"]
        ratio = statistics.median(on) / statistics.median(off)
        how = "sys.monitoring" if version_of(exe) >= "3.12" else "profile hook (3.11)"
        rows.append(f"| a cell calling a sandbox function {CALLS:,} times, provenance recorded "
                    f"({how}) vs the same cell unrecorded, in turn in one shell, Python "
                    f"{version_of(exe)} | {spread(on, 'ms', 1)} | {spread(off, 'ms', 1)} | "
                    f"{ratio:.3f}x |")
    return rows


def badge_row() -> list[str]:
    try:
        b = json.loads((HERE / "results" / "browser.json").read_text())["badge"]
    except (OSError, ValueError, KeyError):
        return ["| a cell's end -> its badge shown in the browser | not measured yet (run the "
                "browser test) | | |"]
    return [f"| a cell's end -> its provenance badge shown in JupyterLab (the browser test, "
            f"{b['runs']} cells) | {b['seconds'] * 1e3:.0f} ms ({b['min'] * 1e3:.0f}-"
            f"{b['max'] * 1e3:.0f}) | | |"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args()
    fresh_store()
    if args.worker:
        print(json.dumps(cell_worker(args.repeats)))
        return
    rows = cell_rows(args.repeats) + dry_run_rows() + badge_row()
    table = "\n".join([
        "| provenance and dry runs (times: median, min-max) | measured | baseline | ratio |",
        "|---|---|---|---|", *rows])
    publish("provenance", table)


if __name__ == "__main__":
    main()
