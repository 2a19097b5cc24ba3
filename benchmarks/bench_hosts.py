"""Sandboxes in a child process: call and reload latency, side by side in one run.

Rows:
* a call of a sandbox function through the process host's proxy, against the
  same call in the in-kernel host and against a bare ``jupyter_client``
  execute round trip to a kernel (the path a proxy would take without its
  direct connection);
* a reload of the benchmark module (1,000 live instances in the sandbox)
  in the child, against the same reload in the in-kernel host.

Run:  .venv/bin/python benchmarks/bench_hosts.py  [--calls N] [--repeats N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import sandbox_magic as sm

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _module import source  # noqa: E402
from bench_reload import publish, spread  # noqa: E402

CALLEE = "def echo(x):\n    return x\n"


def per_call(fn, calls: int, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        for i in range(calls):
            fn(i)
        out.append((time.perf_counter() - t) / calls)
    return out


def kernel_round_trips(calls: int, repeats: int) -> list[float]:
    from jupyter_client.manager import start_new_kernel
    km, kc = start_new_kernel(kernel_name="python3")
    try:
        kc.execute_interactive("0", timeout=30, output_hook=lambda msg: None)   # warm
        out = []
        for _ in range(repeats):
            t = time.perf_counter()
            for i in range(calls):
                kc.execute_interactive(str(i), timeout=30, store_history=False,
                                       output_hook=lambda msg: None)
            out.append((time.perf_counter() - t) / calls)
        return out
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def reloads(sid: str, repeats: int) -> list[float]:
    sm.hot_reload_source(sid, source(0), module="particles")
    sm.run(sid, "import particles\nKEEP = particles.make(1000)")
    out = []
    for i in range(1, repeats + 1):
        t = time.perf_counter()
        sm.hot_reload_source(sid, source(i), module="particles")
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    sm.set_default_store(":memory:")
    sm.create_sandbox("local")
    sm.create_sandbox("child", host="process", call_timeout=60)
    try:
        for sid in ("local", "child"):
            sm.hot_reload_source(sid, CALLEE, module="callee")
        local_echo = sm.get_sandbox("local").echo
        child_echo = sm.get_sandbox("child").echo
        child_echo(0)
        proxied = per_call(child_echo, args.calls, args.repeats)
        local = per_call(local_echo, args.calls * 50, args.repeats)
        bare = kernel_round_trips(max(50, args.calls // 20), args.repeats)
        reload_child = reloads("child", args.repeats * 3)
        reload_local = reloads("local", args.repeats * 3)
    finally:
        for sid in ("local", "child"):
            sm.destroy_sandbox(sid)

    def ratio(a: list[float], b: list[float]) -> str:
        return f"{statistics.median(a) / statistics.median(b):.2f}x"

    table = "\n".join([
        "| process host (median, min-max in brackets) | process host | baseline | ratio |",
        "|---|---|---|---|",
        f"| call of a sandbox function through the proxy vs the same call in the in-kernel "
        f"host | {spread(proxied, 'µs', 1)} | {spread(local, 'µs', 3)} "
        f"| {ratio(proxied, local)} |",
        f"| call through the proxy vs a bare `jupyter_client` execute round trip "
        f"| {spread(proxied, 'µs', 1)} | {spread(bare, 'µs', 0)} | {ratio(proxied, bare)} |",
        f"| reload of the 60-line module (1,000 live instances) in the child vs in the "
        f"kernel | {spread(reload_child, 'ms')} | {spread(reload_local, 'ms')} "
        f"| {ratio(reload_child, reload_local)} |",
    ])
    publish("hosts", table)


if __name__ == "__main__":
    main()
