"""Run every benchmark in one go; each updates its table in README.md.

Run:  .venv/bin/python benchmarks/run_all.py  [NAME ...]   (default: all of them)
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ALL = ["reload", "size", "live", "batch", "store", "memory", "files", "hosts", "cluster",
       "corpus", "service", "provenance", "classroom"]


def main() -> None:
    names = sys.argv[1:] or ALL
    for name in names:
        started = time.perf_counter()
        print(f"== bench_{name}", flush=True)
        done = subprocess.run([sys.executable, str(HERE / f"bench_{name}.py")], check=False)
        print(f"== bench_{name}: exit {done.returncode} in "
              f"{time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
