"""A sandboxed HTTP service under real clients while its code is reloaded.

Run by tests/test_services.py, in its own process (a crash must not take the test
run down) and on its own, to measure:

    python tests/service_stress.py --seconds 10 --switch 1e-5

A stdlib ``ThreadingHTTPServer`` serves with a handler class, a helper function
and a hit counter that all live in a sandbox module; keep-alive ``http.client``
clients send requests back to back; meanwhile the main thread reloads the module
as fast as it can, alternating two versions whose counters keep their state under
different attribute names (a state handler renames it each time), and every fifth
reload is one that must fail (a syntax error, a raising body, a raising handler).
Prints one JSON line: reloads done and refused, requests, failed requests, count
values served twice or not at all, and the counter's final value next to the
number of requests served.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import tempfile
import threading
import time

V1 = '''\
import threading
import time
from http.server import BaseHTTPRequestHandler

TAG = "v1"


class Counter:
    def __init__(self):
        self.count = 0
        self.lock = threading.Lock()

    def hit(self):
        with self.lock:
            n = self.count + 1
            time.sleep(0)      # I/O between reading the state and writing it back
            self.count = n
            return n


def render(n):
    return f"{TAG}:{n}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self):
        body = render(self.server.counter.hit()).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass
'''
V2 = (V1.replace('TAG = "v1"', 'TAG = "v2"')
        .replace("self.count = 0", "self.hits = 0")
        .replace("n = self.count + 1", "n = self.hits + 1")
        .replace("self.count = n", "self.hits = n"))
BROKEN = [
    V2 + "\ndef oops(:\n",                                  # syntax error
    V2 + "\nraise RuntimeError('body fails')\n",            # raising body
]


def rename(state, old_version, new_version):
    """The counter's value moves to the name the new code reads (version 1 is V1)."""
    if "lock" not in state:          # a request handler: nothing to migrate
        return state
    if old_version == 1:
        return {**state, "hits": state["count"]}
    return {**state, "count": state["hits"]}


def refuse(state, old_version, new_version):
    raise ValueError("this migration always fails")


def reload_loop(sm, deadline: float, max_reloads: int, pause: float,
                suspend_timeout: float, waited_out: list[str],
                durations: list[float]) -> tuple[int, int, int]:
    """Reload until the deadline: (reloads applied, refused as expected, unexpected)."""
    reloads = refused = unexpected = 0
    versions = [V2, V1]
    i = 0
    while time.monotonic() < deadline and reloads < max_reloads:
        time.sleep(pause)
        i += 1
        if i % 5 == 0:
            if i % 15 == 0:     # the next version, with a migration that fails
                text, handler = versions[reloads % 2], refuse
            else:
                text, handler = BROKEN[(i // 5) % 2], rename
            before = sm.get_module_version("svc", "svc")
            try:
                sm.hot_reload_source("svc", text, module="svc", state_handler=handler)
                unexpected += 1
            except sm.SandboxError:
                refused += 1
            if sm.get_module_version("svc", "svc") != before:
                unexpected += 1
            continue
        t0 = time.perf_counter()
        try:
            sm.hot_reload_source("svc", versions[reloads % 2], module="svc",
                                 state_handler=rename, suspend_timeout=suspend_timeout)
            durations.append(time.perf_counter() - t0)
        except sm.ReloadError as exc:
            if exc.step != "suspend":
                raise
            waited_out.append(str(exc))    # refused: a call did not return in time
            continue
        reloads += 1
    return reloads, refused, unexpected


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--switch", type=float, default=None,
                    help="sys.setswitchinterval (default: Python's, 5 ms)")
    ap.add_argument("--max-reloads", type=int, default=100_000)
    ap.add_argument("--suspend-timeout", type=float, default=1.0)
    ap.add_argument("--no-reloads", action="store_true",
                    help="serve only (the baseline of the benchmark)")
    ap.add_argument("--pause", type=float, default=0.002,
                    help="seconds between two reloads (the clients' share of the GIL)")
    args = ap.parse_args()
    os.chdir(tempfile.mkdtemp(prefix="sandbox-magic-stress-"))
    from http.server import ThreadingHTTPServer

    import sandbox_magic as sm

    if args.switch:
        sys.setswitchinterval(args.switch)
    sm.create_sandbox("svc")
    sm.hot_reload_source("svc", V1, module="svc")
    sb = sm.get_sandbox("svc")
    server = ThreadingHTTPServer(("127.0.0.1", 0), sb.Handler)
    server.daemon_threads = True
    server.counter = sb.Counter()
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()

    stop = threading.Event()
    lock = threading.Lock()
    seen: list[int] = []
    latencies: list[float] = []
    stats = {"requests": 0, "ok": 0, "failed": 0, "errors": []}

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: list[int] = []
        lat: list[float] = []
        ok = failed = 0
        errors: list[str] = []
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                conn.request("GET", "/")
                resp = conn.getresponse()
                body = resp.read().decode()
                if resp.status == 200 and body[:3] in ("v1:", "v2:"):
                    lat.append(time.perf_counter() - t0)
                    mine.append(int(body[3:]))
                    ok += 1
                else:
                    failed += 1
                    errors.append(f"{resp.status} {body[:80]}")
            except Exception as exc:   # a dropped connection counts as a failed request
                failed += 1
                errors.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.close()
        with lock:
            seen.extend(mine)
            latencies.extend(lat)
            stats["ok"] += ok
            stats["failed"] += failed
            stats["requests"] += ok + failed
            stats["errors"].extend(errors[:5])

    clients = [threading.Thread(target=client) for _ in range(args.clients)]
    for t in clients:
        t.start()
    deadline = time.monotonic() + args.seconds
    waited_out: list[str] = []
    durations: list[float] = []
    started = time.perf_counter()
    try:
        if args.no_reloads:
            time.sleep(args.seconds)
            reloads = refused = unexpected = 0
        else:
            reloads, refused, unexpected = reload_loop(sm, deadline, args.max_reloads, args.pause,
                                                      args.suspend_timeout, waited_out,
                                                      durations)
    finally:
        stop.set()
    for t in clients:
        t.join(60)
    elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else 0.0
    server.shutdown()
    counter = server.counter
    final = counter.count if sm.get_module_version("svc", "svc") == 1 else counter.hits
    distinct = set(seen)
    print(json.dumps({
        "switch_interval": sys.getswitchinterval(),
        "seconds": args.seconds,
        "reloads": reloads,
        "refused": refused,
        "unexpected": unexpected,
        "suspend_refused": len(waited_out),
        "suspend_errors": waited_out[:3],
        "requests": stats["requests"],
        "ok": stats["ok"],
        "failed": stats["failed"],
        "duplicates": len(seen) - len(distinct),
        "missing": (max(distinct) - len(distinct)) if distinct else 0,
        "final_count": final,
        "errors": stats["errors"][:10],
        "requests_per_s": stats["ok"] / elapsed,
        "p50_ms": pct(0.50) * 1000,
        "p99_ms": pct(0.99) * 1000,
        "reload_ms": sorted(durations)[len(durations) // 2] * 1000 if durations else 0.0,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
