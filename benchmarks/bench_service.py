"""A sandboxed HTTP service under load: throughput and latency without and with reloads.

Runs tests/service_stress.py (a stdlib ThreadingHTTPServer whose handler, helper and
hit counter live in a sandbox module; four keep-alive clients on 127.0.0.1), each
configuration in its own process, in one run:

* serving only;
* a reload every 20 ms (two versions alternating, a state handler renaming the
  counter's attribute; every fifth reload one that must fail);
* the same with threads switching every 10 µs (``sys.setswitchinterval(1e-5)``).

Target: 0 failed requests, 0 hits lost, and p99 latency during reloads no more than
the p99 without reloads plus one reload's median time.

Run:  .venv/bin/python benchmarks/bench_service.py [--seconds S]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_reload import update_readme  # noqa: E402

RUNNER = HERE.parent / "tests" / "service_stress.py"
CONFIGS = [
    ("serving only", ["--no-reloads"]),
    ("a reload every 20 ms", ["--pause", "0.02"]),
    ("a reload every 20 ms, threads switching every 10 µs", ["--pause", "0.02", "--switch", "1e-5"]),
]


def run(seconds: float, extra: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    out = subprocess.run([sys.executable, str(RUNNER), "--seconds", str(seconds), *extra],
                         capture_output=True, text=True, timeout=seconds + 120, env=env,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    rows = [(label, run(args.seconds, extra)) for label, extra in CONFIGS]
    base_p99 = rows[0][1]["p99_ms"]
    lines = [
        f"Sandboxed `ThreadingHTTPServer`, 4 keep-alive clients on 127.0.0.1, {args.seconds:g} s "
        "per row, each row its own process, one run.",
        "",
        "| load | requests/s | p50 | p99 | reloads applied (bad ones refused) | median reload | "
        "failed requests | hits lost or doubled | p99 within target |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, r in rows:
        lost = r["duplicates"] + r["missing"] + abs(r["final_count"] - r["ok"])
        target = "" if not r["reloads"] else (
            "yes" if r["p99_ms"] <= base_p99 + r["reload_ms"] else
            f"no ({r['p99_ms']:.2f} > {base_p99:.2f} + {r['reload_ms']:.2f} ms)")
        lines.append(
            f"| {label} | {r['requests_per_s']:,.0f} | {r['p50_ms']:.2f} ms | {r['p99_ms']:.2f} ms | "
            f"{r['reloads']:,} ({r['refused']:,}) | "
            f"{r['reload_ms']:.2f} ms | {r['failed']} | {lost} | {target} |")
    table = "\n".join(lines)
    print(table)
    update_readme("service", table)


if __name__ == "__main__":
    main()
