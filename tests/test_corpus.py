"""Real code: pure-Python libraries, as shipped on PyPI, run their own tests in sandboxes.

For each library of ``corpus/libraries.py`` (pinned sdists, fetched once into a
git-ignored cache, see ``corpus/fetch.py``) two subprocesses run the library's own test
suite and docstring examples (``corpus/runner.py``):

* plain: the unpacked source imported from disk (``plain``), and a copy with the
  library's behavioural edit (``plain_edited``);
* sandboxed: every package folder loaded with ``sm.create_sandbox(id, sandbox_path=...)``
  and the library's import names bound to the sandbox's modules, then

  1. ``v1``: as loaded;
  2. ``shifted``: every module hot reloaded with two comment lines prepended;
  3. ``edited``: the edit hot reloaded into its module;
  4. ``rolled_back``: every module rolled back to version 1.

Every test's outcome in steps 1, 2 and 4 must equal its outcome under the plain import,
and in step 3 its outcome under the plain import of the edited copy; the edit must make
at least one test fail, and only tests the library names for it.  A difference the
library lists as ``known`` (an engine defect, with its reason) must show up exactly
where listed, so that a fix is noticed.  The per-library table goes to stdout and to
``benchmarks/results/corpus.txt``.  Without network access to PyPI (first run) the
fetch fails and so does this test: it never skips.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from corpus.fetch import fetch
from corpus.libraries import LIBRARIES, Library

import sandbox_magic as sm

HERE = Path(__file__).resolve().parent
RUNNER = HERE / "corpus" / "runner.py"
RESULTS = HERE.parent / "benchmarks" / "results" / "corpus.txt"
SANDBOX_STEPS = ("v1", "shifted", "edited", "rolled_back")
FAILING = ("failed", "error")
JOB_TIMEOUT = 300
# SANDBOX_MAGIC_CORPUS=attrs,toolz runs only those (while working on one); default: all.
_ONLY = [d for d in os.environ.get("SANDBOX_MAGIC_CORPUS", "").split(",") if d]
SELECTED = [d for d in LIBRARIES if not _ONLY or d in _ONLY]
assert all(d in LIBRARIES for d in _ONLY), f"SANDBOX_MAGIC_CORPUS: not in the corpus: {_ONLY}"


def _run_job(dist: str, mode: str, source: Path, out: Path) -> dict:
    """One runner subprocess; its JSON result, or a crash record."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTHONSTARTUP")}
    # The child imports the same sandbox_magic as this process (installed or a work tree).
    pkg_root = str(Path(sm.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [pkg_root, env.get("PYTHONPATH")]))
    env["CORPUS_SOURCE"] = str(source)
    env["SANDBOX_MAGIC_STORE"] = ":memory:"
    started = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, str(RUNNER), dist, mode, str(out)], env=env,
                              capture_output=True, text=True, timeout=JOB_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        return {"crash": f"{dist} {mode}: no result within {JOB_TIMEOUT} s\n"
                         f"{(exc.stderr or b'')[-3000:]!r}"}
    seconds = time.perf_counter() - started
    if proc.returncode != 0 or not out.exists():
        return {"crash": f"{dist} {mode}: runner exit {proc.returncode}\n"
                         f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"}
    result = json.loads(out.read_text())
    result["seconds"] = round(seconds, 1)
    return result


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, pytestconfig):
    started = time.perf_counter()
    sources = fetch([(LIBRARIES[d].dist, LIBRARIES[d].version, LIBRARIES[d].sha256)
                     for d in SELECTED])
    fetched = time.perf_counter() - started
    out = tmp_path_factory.mktemp("corpus")
    # The sandboxed runs take about twice as long as the plain ones: they go first.
    jobs = [(d, m) for m in ("sandbox", "plain") for d in SELECTED]
    with ThreadPoolExecutor(max_workers=max(1, min(2, os.cpu_count() or 1))) as pool:
        futures = {(d, m): pool.submit(_run_job, d, m, sources[d], out / f"{d}-{m}.json")
                   for d, m in jobs}
        results = {d: {m: futures[d, m].result() for m in ("plain", "sandbox")}
                   for d in SELECTED}
    total = time.perf_counter() - started
    table = format_table(results, fetched, total)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(table)
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print("\n" + table)
    return results


# ---------------------------------------------------------------- checking
def _steps(results: dict) -> tuple[dict, dict]:
    return results["plain"].get("steps", {}), results["sandbox"].get("steps", {})


def differences(base: dict, step: dict) -> dict[str, tuple[str | None, str | None]]:
    """Tests whose outcome differs (a test missing on one side counts as None)."""
    a, b = base["outcomes"], step["outcomes"]
    return {t: (a.get(t), b.get(t)) for t in sorted(a.keys() | b.keys()) if a.get(t) != b.get(t)}


def broken_by_edit(plain: dict) -> set[str]:
    before, after = plain["plain"]["outcomes"], plain["plain_edited"]["outcomes"]
    return {t for t, o in after.items() if o in FAILING and before.get(t) not in FAILING}


def check(lib: Library, results: dict) -> list[str]:
    """Everything wrong with one library's runs, in words (empty: all is well)."""
    problems = [f"{mode} run crashed:\n{r['crash']}" for mode, r in results.items()
                if "crash" in r]
    plain, sandbox = _steps(results)
    for step in ("plain", "plain_edited"):
        if step not in plain:
            problems.append(f"no {step} result")
        elif plain[step]["collect_errors"]:
            problems.append(f"{step}: the library's tests do not collect: "
                            f"{plain[step]['collect_errors']}")
        elif Counter(plain[step]["outcomes"].values())["passed"] == 0:
            problems.append(f"{step}: no test passed")
    if problems:
        return problems

    broken = broken_by_edit(plain)
    if not broken:
        problems.append(f"the edit ({lib.edit.what}) makes no test fail")
    unexpected = sorted(t for t in broken if not any(e in t for e in lib.edit.expect))
    if unexpected:
        problems.append(f"the edit ({lib.edit.what}) also breaks tests outside "
                        f"{lib.edit.expect}: {unexpected}")

    for step in SANDBOX_STEPS:
        if step not in sandbox:
            problems.append(f"sandbox step {step} did not run")
            continue
        base = plain["plain_edited" if step == "edited" else "plain"]
        diff = differences(base, sandbox[step])
        for test, (want, got) in diff.items():
            if not any(k.covers(test, step) for k in lib.known):
                message = sandbox[step]["messages"].get(test, "")[-1200:]
                problems.append(f"{step}: {test}: {got} in the sandbox, {want} plainly\n"
                                f"{message}")
        for k in lib.known:
            if step in k.steps and not any(k.covers(test, step) for test in diff):
                problems.append(f"{step}: none of {k.tests} differs any more; they are "
                                f"listed as known ({k.reason}): drop that from libraries.py")
    problems.extend(_version_problems(lib, sandbox))
    problems.extend(_engine_problems(sandbox))
    return problems


def _engine_problems(sandbox: dict) -> list[str]:
    """Line numbers of the v1 functions follow every step; a package's submodules stay
    its attributes (when the engine makes the folder a package)."""
    problems = []
    native = any(v["native"] for v in sandbox.get("layout", {}).values())
    for step in SANDBOX_STEPS:
        lines = sandbox.get(step, {}).get("lines")
        if lines is not None and (lines["wrong"] or not lines["checked"]):
            problems.append(f"{step}: {lines['wrong']} of {lines['checked']} functions have "
                            f"code from another file or line: {lines['examples']}")
        missing = sandbox.get(step, {}).get("missing_attributes")
        if native and missing:
            problems.append(f"{step}: submodules are no longer attributes of their package: "
                            f"{missing}")
    return problems


def _version_problems(lib: Library, sandbox: dict) -> list[str]:
    """After each step every module is at the version the step implies."""
    if "edit_module" not in sandbox:
        return []
    edited = tuple(sandbox["edit_module"])
    want = {"v1": lambda key: 1, "shifted": lambda key: 2,
            "edited": lambda key: 3 if key == edited else 2, "rolled_back": lambda key: 1}
    problems = []
    for step, expected in want.items():
        for sid, versions in sandbox.get(step, {}).get("versions", {}).items():
            wrong = {m: v for m, v in versions.items() if v != expected((sid, m))}
            if wrong:
                problems.append(f"{step}: {sid} modules at unexpected versions: {wrong}")
    return problems


@pytest.mark.parametrize("dist", SELECTED)
def test_library_runs_its_own_tests_in_a_sandbox(corpus, dist):
    problems = check(LIBRARIES[dist], corpus[dist])
    assert not problems, f"{dist}:\n" + "\n".join(problems)


# ---------------------------------------------------------------- the table
def _pf(step: dict | None) -> str:
    if not step or "outcomes" not in step:
        return "-"
    c = Counter(step["outcomes"].values())
    return f"{c['passed'] + c['xfailed']}/{c['failed'] + c['error']}"


def _known_count(lib: Library, results: dict) -> str:
    """How many tests differ from the plain import as listed known (in any step)."""
    plain, sandbox = _steps(results)
    if "plain" not in plain:
        return "-"
    found = set()
    for step in SANDBOX_STEPS:
        if step in sandbox:
            base = plain["plain_edited" if step == "edited" else "plain"]
            found |= {t for t in differences(base, sandbox[step])
                      if any(k.covers(t, step) for k in lib.known)}
    return str(len(found))


def _summary(tests: set[str]) -> str:
    """Test ids, parametrized ones counted under their test."""
    counts = Counter(t.split("[", 1)[0] for t in tests)
    return ", ".join(f"{t} (x{n})" if n > 1 else t for t, n in sorted(counts.items())) or "-"


def format_table(results: dict, fetched: float, total: float) -> str:
    head = ("library", "version", "tests", "plain", "v1", "shifted", "edited",
            "plain edited", "rolled back", "known", "job s")
    rows = []
    for dist, res in results.items():
        lib = LIBRARIES[dist]
        plain, sandbox = _steps(res)
        base = plain.get("plain", {}).get("outcomes", {})
        seconds = sum(r.get("seconds", 0) for r in res.values())
        rows.append((dist, lib.version, str(len(base)), _pf(plain.get("plain")),
                     *(_pf(sandbox.get(s)) for s in ("v1", "shifted", "edited")),
                     _pf(plain.get("plain_edited")), _pf(sandbox.get("rolled_back")),
                     _known_count(lib, res), f"{seconds:.0f}"))
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    line = "  ".join
    out = [line(h.ljust(w) for h, w in zip(head, widths)),
           line("-" * w for w in widths)]
    out += [line(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    out += [
        "",
        "passed/failed per step (failed includes errors; skipped tests not counted); "
        "'plain edited' is what 'edited' is compared with; known = tests that differ from "
        "the plain import as listed in libraries.py (engine defects and limits).",
        f"Fetch {fetched:.1f} s; whole corpus {total:.0f} s wall time on {os.cpu_count()} "
        "cores; job s = the library's two runner processes (two run at a time).",
        f"Python {sys.version.split()[0]}; sandbox_magic from "
        f"{Path(sm.__file__).resolve().parent}.",
        "",
    ]
    for dist, res in results.items():
        lib = LIBRARIES[dist]
        plain, sandbox = _steps(res)
        layout = sandbox.get("layout", {})
        kind = ", ".join(f"{sid}: {'package' if v['native'] else 'flat'} "
                         f"({len(v['modules'])} modules)" for sid, v in layout.items())
        out.append(f"{dist} {lib.version}: {lib.subset}.")
        broken = _summary(broken_by_edit(plain)) if "plain_edited" in plain else "-"
        out.append(f"  sandboxes: {kind or '-'}; edit: {lib.edit.what} ({lib.edit.package}/"
                   f"{lib.edit.file}); it breaks {broken}")
        skipped = Counter(plain.get("plain", {}).get("outcomes", {}).values())["skipped"]
        if skipped:
            out.append(f"  {skipped} tests skip themselves in every run (optional "
                       "dependencies not installed)")
        for k in lib.known:
            out.append(f"  known ({', '.join(k.steps)}): {', '.join(k.tests)}: {k.reason}")
        for mode, r in res.items():
            if "crash" in r:
                out.append(f"  {mode} run crashed: {r['crash'].strip().splitlines()[-1]}")
    return "\n".join(out) + "\n"
