"""Live services keep answering through reloads: real clients, many reloads, no loss.

tests/service_stress.py runs a sandboxed stdlib HTTP server under keep-alive
clients while the main thread reloads its module back to back (a state handler
renaming the hit counter's attribute each time, and every fifth reload one that
must fail).  Each run is its own process: a crash there fails the test instead of
taking the test run down.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def stress(*args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    out = subprocess.run([sys.executable, str(HERE / "service_stress.py"), *args],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, f"the service process died ({out.returncode}):\n{out.stderr[-3000:]}"
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_sandboxed_http_server_loses_nothing_while_it_is_reloaded():
    # The counter's hit() does I/O between reading its state and writing it back,
    # so many reloads land while a call is in flight: without the wait for calls
    # in flight (live/migration.py, _Gate.quiesce) thousands of hits are lost here.
    r = stress("--seconds", "6")
    assert r["reloads"] >= 100 and r["ok"] >= 1000, r           # it really ran under load
    assert r["failed"] == 0, r["errors"]                        # no request failed
    assert r["refused"] > 0 and r["unexpected"] == 0, r        # bad versions refused, nothing applied
    assert r["suspend_refused"] == 0, r["suspend_errors"]
    assert r["duplicates"] == 0 and r["missing"] == 0, r       # no hit lost or counted twice
    assert r["final_count"] == r["ok"], r                       # hits == requests served


def test_at_a_high_thread_switch_rate_the_service_stays_up_and_every_request_answers():
    # 1e-5 s between thread switches is what heavy I/O, many threads or a
    # free-threaded build give: a reload is interleaved with request handling
    # almost everywhere (following other threads' frames from Python crashed the
    # process here; it is done in one C call now).
    r = stress("--seconds", "6", "--switch", "1e-5")
    assert r["reloads"] >= 100 and r["ok"] >= 1000, r
    assert r["failed"] == 0, r["errors"]
    assert r["refused"] > 0 and r["unexpected"] == 0, r
    # (at this rate a hit is still lost now and then: see the README, "Services under load")
    assert r["final_count"] >= r["ok"] - 5, r
