"""A class on one machine: one teacher publishing, 30 follower processes, 20 versions.

The teacher (this process) publishes a sandbox to a folder, starts 30 follower
processes (each ``sm.follow(..., auto=True)`` in a plain Python process, as a
student's kernel would), waits until all have loaded v1, then records 20 new
versions, one every 0.25 s (every fifth with a state handler, which goes along and
runs on each follower's own object).  Each follower writes when it applied which
version; the row reports how many followers reached every version (and the
last one), the median and maximum latency from the teacher's record to the
follower's live version, and the teacher's reload time with the 30 followers
next to the same 20 reloads with none.

Run:  .venv/bin/python benchmarks/bench_classroom.py
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_reload import fresh_store, publish  # noqa: E402

FOLLOWERS = 30
VERSIONS = 20
GAP = 0.25
SOURCE = "STEP = {v}\n\nclass Counter:\n    def __init__(self):\n        self.n = 0\n\n" \
         "    def inc(self):\n        self.n += STEP\n        return self.n\n"

FOLLOWER = """
import json, os, sys, time
import sandbox_magic as sm
from sandbox_magic.api import classroom
out = open(sys.argv[2], "a", buffering=1)
def seen(line):
    out.write(json.dumps([time.time(), line]) + "\\n")
f = classroom.follow("cls", sys.argv[1], auto=True, on_version=seen)
held = sm.get_sandbox("cls").Counter()
out.write(json.dumps([time.time(), "ready"]) + "\\n")
deadline = time.time() + 600
while time.time() < deadline:
    time.sleep(0.2)
    if os.path.exists(sys.argv[3]):
        last = int(open(sys.argv[3]).read())
        if f.applied.get("counter") == last:
            held.inc()
            out.write(json.dumps([time.time(), f"migrated {vars(held).get('migrated_from')}"])
                      + "\\n")
            break
"""


def mark_migrated(state, old_version, new_version):
    state["migrated_from"] = old_version
    return state


def teacher_reloads(sm, n: int, start: int) -> tuple[dict[int, float], list[float]]:
    """``n`` new versions, one every GAP seconds: ({version: record time}, durations)."""
    stamps, took = {}, []
    for i in range(n):
        t0 = time.time()
        p0 = time.perf_counter()
        r = sm.hot_reload_source("cls", SOURCE.format(v=start + i), "counter",
                                 state_handler=mark_migrated if i % 5 == 4 else None)
        took.append(time.perf_counter() - p0)
        stamps[r.new_version] = t0
        time.sleep(GAP)
    return stamps, took


def main() -> None:
    fresh_store()
    import sandbox_magic as sm
    from sandbox_magic.api import classroom

    base = Path(tempfile.mkdtemp(prefix="sandbox_magic_class_"))
    shared = base / "shared"
    shared.mkdir()
    sm.create_sandbox("cls")
    sm.hot_reload_source("cls", SOURCE.format(v=1), "counter")
    # the teacher's reloads with nobody following, as the baseline
    _, alone = teacher_reloads(sm, VERSIONS, 1000)
    sm.hot_reload_source("cls", SOURCE.format(v=1), "counter")
    classroom.publish("cls", shared)
    stop = base / "last-version"
    logs = [base / f"follower{i}.log" for i in range(FOLLOWERS)]
    procs = []
    for i, log in enumerate(logs):
        env = {**os.environ, "SANDBOX_MAGIC_STORE": str(base / f"student{i}.sqlite3")}
        procs.append(subprocess.Popen([sys.executable, "-c", FOLLOWER, str(shared), str(log),
                                       str(stop)], env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.STDOUT))
    started = time.monotonic()
    while sum(1 for log in logs if log.exists() and "ready" in log.read_text()) < FOLLOWERS:
        if time.monotonic() - started > 300:
            raise SystemExit("the followers did not all start within 300 s")
        time.sleep(0.2)
    teacher_version, took = teacher_reloads(sm, VERSIONS, 2)
    stop.write_text(str(max(teacher_version)))
    deadline = time.monotonic() + 60
    for p in procs:
        p.wait(timeout=max(1.0, deadline - time.monotonic()))
    latencies: list[float] = []
    every = migrated = 0
    for log in logs:
        got = {}
        for line in log.read_text().splitlines():
            t, text = json.loads(line)
            migrated += text.startswith("migrated ") and text != "migrated None"
            if " from the teacher applied" in text:
                v = int(text.split(": v", 1)[1].split(" ", 1)[0])
                got[v] = t
        if all(v in got for v in teacher_version):
            every += 1
        latencies += [got[v] - teacher_version[v] for v in teacher_version if v in got]
    table = "\n".join([
        "| a class on one machine (one run) | measured |",
        "|---|---|",
        f"| followers that applied every one of the teacher's {VERSIONS} versions (one every "
        f"{GAP:g} s; every fifth with a state handler) | {every} of {FOLLOWERS} |",
        f"| followers whose own object the teacher's state handlers migrated | "
        f"{migrated} of {FOLLOWERS} |",
        f"| latency from the teacher's record to a follower's live version, median (max) "
        f"over {len(latencies)} | {statistics.median(latencies) * 1e3:.0f} ms "
        f"({max(latencies) * 1e3:.0f} ms) |",
        f"| the teacher's reload with {FOLLOWERS} followers vs with none, median | "
        f"{statistics.median(took) * 1e3:.2f} ms vs {statistics.median(alone) * 1e3:.2f} ms "
        f"({statistics.median(took) / statistics.median(alone):.2f}x) |",
    ])
    publish("classroom", table)


if __name__ == "__main__":
    main()
