"""One-function edits of real libraries: sandbox_magic against whole `compile` + `exec`
and IPython `%autoreload 2`, side by side.

For each library of the test corpus (``tests/corpus/libraries.py``; its sdists are
fetched and unpacked once by ``tests/corpus/fetch.py``) one module is edited inside one
function's body: the corpus's own behavioural edit, except for attrs, where the module
is ``attr/_make.py`` (it starts with ``from __future__ import annotations``).  Each
timed application alternates between the shipped file and the edited one, so every
application is a real change, and is checked to have taken effect (a probe calls the
edited function and compares with what that version returns).  Two tables: the two
texts as they are (a sandbox re-activates the version it holds for a text it has seen),
and each text with a last comment line numbering the application, so no text repeats
(a sandbox records a new version every time, as for a real edit).

Every (library, reloader) pair runs in its own process, on a copy of the package
folder (less the library's ``tests`` subpackage):

* ``sandbox``: ``sm.create_sandbox(id, sandbox_path=<package folder>)``, then
  ``sm.hot_reload_source(id, text, "<dotted module>")`` per edit;
* ``compile_exec``: the package imported plainly from the copy, then per edit
  ``compile(text, path, "exec")`` and ``exec`` into a fresh module object whose
  ``__name__``/``__package__`` (and ``__path__`` for an ``__init__``) are the real
  module's, so its relative imports resolve to the plainly imported package;
* ``autoreload``: an IPython ``InteractiveShell`` with ``%autoreload 2``, the package
  imported plainly from the copy; per edit the file is written (mtime moved forward,
  untimed), then the reloader's ``check()`` (what the pre-run-cell hook calls) is timed.

Run:  .venv/bin/python benchmarks/bench_corpus.py  [--repeats N] [--warmup N]
      .venv/bin/python benchmarks/bench_corpus.py --profile DIST [--fresh]   (cProfile of
      the sandbox reloads of one library, top cumulative entries; no table)
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import types
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests" / "corpus"))
from bench_reload import fresh_store, run_worker, spread, update_readme  # noqa: E402
from fetch import fetch  # noqa: E402
from libraries import LIBRARIES, Edit  # noqa: E402

PEERS = ["sandbox", "compile_exec", "autoreload"]
LABELS = {
    "sandbox": "sandbox_magic `hot_reload_source`",
    "compile_exec": "`compile` + `exec`",
    "autoreload": "IPython `%autoreload 2`",
}


@dataclass(frozen=True)
class Case:
    """One library's edited module, its edit and a probe of the edited function."""

    dist: str
    package: str                # import name of the package loaded into the sandbox
    folder: str                 # the package's folder in the sdist
    edit: Edit
    probe: Callable[[types.ModuleType], object]
    expect: tuple[object, object]   # the probe's value with the shipped file, the edited one

    @property
    def module(self) -> str:
        stem = self.edit.file[:-3]
        return self.package if stem == "__init__" else f"{self.package}.{stem.replace('/', '.')}"


def _type_error(call: Callable[[], object]) -> str:
    try:
        call()
    except TypeError as exc:
        return str(exc)
    return "no error"


_UUID4 = uuid.UUID("e682ccca-5a4c-4ef2-9711-73f9ad1e15ea")


def _case(dist: str, probe, expect, edit: Edit | None = None) -> Case:
    lib = LIBRARIES[dist]
    edit = edit or lib.edit
    (pkg,) = [p for p in lib.packages if p.name == edit.package]
    return Case(dist, pkg.name, pkg.folder, edit, probe, expect)


CASES = {c.dist: c for c in [
    _case("more-itertools", lambda m: m.first_true([], default="d"), ("d", None)),
    _case("sortedcontainers", lambda m: m.SortedList([1, 1, 2]).count(1), (2, 3)),
    _case("tabulate", lambda m: m.simple_separated_format("|").padding, (0, 1)),
    _case("boltons", lambda m: m.is_uuid(_UUID4), (True, False)),
    # attrs: the module that begins with ``from __future__ import annotations`` (and that
    # every other module of ``attr`` imports), a constant in one function's body
    _case("attrs", lambda m: _type_error(lambda: m.fields_dict(1)),
          ("Passed object must be a class.", "Passed object must be a class (fields_dict)."),
          Edit("attr", "_make.py",
               old='    .. versionadded:: 18.1.0\n    """\n    if not isinstance(cls, type):\n'
                   '        msg = "Passed object must be a class."\n',
               new='    .. versionadded:: 18.1.0\n    """\n    if not isinstance(cls, type):\n'
                   '        msg = "Passed object must be a class (fields_dict)."\n',
               expect=(), what="fields_dict's error message")),
    _case("toolz", lambda m: list(m.interpose("x", [1, 2])), ([1, "x", 2], ["x", 1, "x", 2])),
]}


# ---------------------------------------------------------------- set-up (untimed)
def prepare(case: Case) -> tuple[Path, Path]:
    """Copy the package folder (less ``tests``) into a fresh folder.

    Returns the copy's parent (the ``sys.path`` entry) and the package folder."""
    lib = LIBRARIES[case.dist]
    (src,) = fetch([(lib.dist, lib.version, lib.sha256)]).values()
    root = Path(tempfile.mkdtemp(prefix=f"bench_corpus_{case.package}_"))
    atexit.register(shutil.rmtree, root, True)
    folder = root / case.package
    shutil.copytree(src / case.folder, folder,
                    ignore=shutil.ignore_patterns("tests", "__pycache__", "*.pyc"))
    return root, folder


def versions(case: Case, folder: Path) -> tuple[Path, list[str]]:
    path = folder / case.edit.file
    shipped = path.read_text(encoding="utf-8")
    return path, [shipped, case.edit.apply(shipped)]


class SandboxFinder:
    """``importlib.import_module("toolz")`` while the sandbox runs toolz's modules
    (``toolz._signatures`` does it) finds the sandbox's module, as in the corpus runner
    (``tests/corpus/runner.py``): the engine binds plain names for ``import`` statements
    of sandbox code, not for importlib."""

    def __init__(self, package: str, namespace: str) -> None:
        self.package, self.namespace = package, namespace
        self.found: dict[str, types.ModuleType] = {}

    def find_spec(self, name, path=None, target=None):
        import importlib.machinery
        if name.partition(".")[0] != self.package:
            return None
        mod = sys.modules.get(f"{self.namespace}.{name}")
        if mod is None:
            return None
        self.found[name] = mod
        return importlib.machinery.ModuleSpec(name, self)

    def create_module(self, spec):
        return self.found.pop(spec.name)

    def exec_module(self, module) -> None:
        pass


class Peer:
    """``stage(text)`` prepares an application (untimed), ``apply()`` is what is timed,
    ``module()`` is the edited module as its users now see it."""

    dependents: tuple[str, ...] = ()

    def stage(self, text: str) -> None:
        self.text = text

    def apply(self) -> None:
        raise NotImplementedError

    def module(self) -> types.ModuleType:
        raise NotImplementedError


class SandboxPeer(Peer):
    def __init__(self, case: Case, root: Path, folder: Path, path: Path) -> None:
        import sandbox_magic as sm
        self.sm, self.case = sm, case
        self.sid = f"bench-corpus-{case.package}"
        sys.meta_path.insert(0, SandboxFinder(case.package, f"sandbox_magic.sandboxes.{self.sid}"))
        sm.create_sandbox(self.sid, sandbox_path=folder)
        self.count = len(sm.get_sandbox(self.sid).modules)
        self.statuses: set[str] = set()

    def apply(self) -> None:
        r = self.sm.hot_reload_source(self.sid, self.text, self.case.module)
        self.statuses.add(r.status)
        self.dependents = r.dependents

    def module(self) -> types.ModuleType:
        return self.sm.get_sandbox(self.sid).modules[self.case.module]


class CompileExecPeer(Peer):
    def __init__(self, case: Case, root: Path, folder: Path, path: Path) -> None:
        sys.path.insert(0, str(root))
        real = importlib.import_module(case.module)
        self.case, self.path = case, str(path)
        self.package = real.__package__
        self.init_path = getattr(real, "__path__", None)
        self.current = real
        self.count = sum(1 for m in sys.modules if m.partition(".")[0] == case.package)

    def apply(self) -> None:
        code = compile(self.text, self.path, "exec", dont_inherit=True)
        mod = types.ModuleType(self.case.module)
        mod.__package__ = self.package
        mod.__file__ = self.path
        if self.init_path is not None:
            mod.__path__ = self.init_path
        exec(code, mod.__dict__)
        self.current = mod

    def module(self) -> types.ModuleType:
        return self.current


class AutoreloadPeer(Peer):
    def __init__(self, case: Case, root: Path, folder: Path, path: Path) -> None:
        from IPython.core.interactiveshell import InteractiveShell
        sys.path.insert(0, str(root))
        self.case, self.path = case, path
        shell = InteractiveShell.instance()
        shell.run_line_magic("load_ext", "autoreload")
        shell.run_line_magic("autoreload", "2")
        res = shell.run_cell(f"import {case.module}")
        res.raise_error()
        self.reloader = shell.magics_manager.registry["AutoreloadMagics"]._reloader
        self.reloader.check()       # records every module's mtime
        self.count = sum(1 for m in sys.modules if m.partition(".")[0] == case.package)
        self.mtime = path.stat().st_mtime_ns

    def stage(self, text: str) -> None:
        self.path.write_text(text, encoding="utf-8")
        self.mtime += 1_000_000_000
        os.utime(self.path, ns=(self.mtime, self.mtime))

    def apply(self) -> None:
        self.reloader.check()

    def module(self) -> types.ModuleType:
        return sys.modules[self.case.module]


PEER_CLASSES = {"sandbox": SandboxPeer, "compile_exec": CompileExecPeer,
                "autoreload": AutoreloadPeer}


def setup(dist: str, peer_name: str) -> tuple[Case, Peer, list[str]]:
    case = CASES[dist]
    root, folder = prepare(case)
    path, texts = versions(case, folder)
    peer = PEER_CLASSES[peer_name](case, root, folder, path)
    return case, peer, texts


def application(texts: list[str], i: int, fresh: bool) -> tuple[int, str]:
    """The ``i``-th text to apply and which version it is (0 shipped, 1 edited).

    Edited, shipped, edited, ...; with ``fresh`` every text also gets a last line
    ``# application i``, so that no text repeats (a sandbox then records a new version
    each time instead of re-activating one it holds)."""
    k = (i + 1) % 2
    if not fresh:
        return k, texts[k]
    text = texts[k] if texts[k].endswith("\n") else texts[k] + "\n"
    return k, f"{text}# application {i}\n"


def run(dist: str, peer_name: str, repeats: int, warmup: int, fresh: bool) -> dict:
    case, peer, texts = setup(dist, peer_name)
    ok = case.probe(peer.module()) == case.expect[0]
    times: list[float] = []
    for i in range(warmup + repeats):
        k, text = application(texts, i, fresh)
        peer.stage(text)
        t0 = time.perf_counter()
        peer.apply()
        dt = time.perf_counter() - t0
        ok &= case.probe(peer.module()) == case.expect[k]
        if i >= warmup:
            times.append(dt)
    out = {"times": times, "median": statistics.median(times), "applied": bool(ok),
           "modules": peer.count, "lines": texts[0].count("\n"),
           "dependents": list(peer.dependents)}
    if isinstance(peer, SandboxPeer):
        out["statuses"] = sorted(peer.statuses)
    return out


def profile(dist: str, repeats: int, warmup: int, fresh: bool, top: int = 30) -> None:
    """cProfile of ``repeats`` sandbox reloads of ``dist``'s edit (after ``warmup``)."""
    import cProfile
    import pstats
    case, peer, texts = setup(dist, "sandbox")
    prof = cProfile.Profile()
    for i in range(warmup + repeats):
        peer.stage(application(texts, i, fresh)[1])
        if i >= warmup:
            prof.enable()
        peer.apply()
        prof.disable()
    print(f"{dist}: {repeats} reloads of {case.module} "
          f"({'a new text each time' if fresh else 'alternating two texts'}); dependents re-run: "
          f"{', '.join(peer.dependents) or 'none'}")
    pstats.Stats(prof).strip_dirs().sort_stats(os.environ.get("BENCH_SORT", "cumulative")).print_stats(top)


# ---------------------------------------------------------------- table
MODES = {
    False: "the shipped file and the edited one, alternating (from the third application on, "
           "the sandbox re-activates the version it already holds for that text)",
    True: "the same, each text with a last line `# application N` added, so that no text "
          "repeats (the sandbox records a new version every time, as for a real edit)",
}


def rows(res: dict, fresh: bool) -> list[str]:
    out = []
    for dist, case in CASES.items():
        rs = {p: res[(dist, p, fresh)] for p in PEERS}
        errors = [f"{p}: {r['error']}" for p, r in rs.items() if "error" in r]
        if errors:
            out.append(f"| {dist} | `{case.module}` | {case.edit.what} | error: "
                       + "; ".join(errors) + " | | | | | | |")
            continue
        s, c, a = (rs[p] for p in PEERS)
        out.append(
            f"| {dist} {LIBRARIES[dist].version} | `{case.module}` ({s['lines']:,}) "
            f"| {case.edit.what} | " + " | ".join(spread(rs[p]["times"], "ms") for p in PEERS)
            + f" | {s['median'] / c['median']:.2f}x | {s['median'] / a['median']:.2f}x "
            f"| {len(s['dependents'])} (of {s['modules']}) "
            f"| {'yes' if all(r['applied'] for r in rs.values()) else 'NO'} |")
    return out


def table(res: dict, repeats: int, warmup: int) -> str:
    head = ("| library | module edited (lines) | edit | "
            + " | ".join(LABELS[p] for p in PEERS)
            + " | sandbox / compile+exec | sandbox / autoreload | dependents re-run "
            "(of modules loaded) | edit applied |")
    lines = [
        f"One-function edit of one module of each corpus library, median (min-max) of "
        f"{repeats} applications after {warmup} untimed ones; each reloader and library in "
        "its own process, one run.",
    ]
    for fresh, what in MODES.items():
        lines += ["", f"Texts applied: {what}.", "", head, "|---" * 10 + "|", *rows(res, fresh)]
    lines += ["", "Columns: " + FOOTNOTE, ""]
    for dist, case in CASES.items():
        s = res[(dist, "sandbox", False)]
        if "error" not in s:
            deps = ", ".join(f"`{d}`" for d in s["dependents"]) or "none"
            lines.append(f"- {dist}: dependents re-run by the sandbox reload of "
                         f"`{case.module}`: {deps}.")
    return "\n".join(lines)


FOOTNOTE = (
    "*sandbox_magic*: `sm.hot_reload_source(id, text, module)` into a sandbox made with "
    "`create_sandbox(id, sandbox_path=<package folder>)` (the whole package loaded, its "
    "`tests` left out; default durable SQLite store); it compiles the changed statements, "
    "runs the module, re-runs the modules that import it (dependents), patches the old "
    "objects and records the version. "
    "*`compile` + `exec`*: `compile(text, path, \"exec\")` and `exec` of the edited module "
    "alone into a fresh module object (its relative imports resolve to the package imported "
    "plainly from disk); dependents are not re-run, nothing is patched. "
    "*`%autoreload 2`*: IPython's reloader `check()` (what its pre-run-cell hook runs), "
    "after the file was written with a newer mtime (the write untimed); it stats every "
    "loaded module, re-imports the changed one (`importlib.reload`, `.pyc` written) and "
    "patches its old functions and classes in place; dependents are not re-run. "
    "*edit applied*: after every application the edited function, taken from the module as "
    "its users see it, returns what that version should.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker")
    ap.add_argument("--dist")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--fresh", action="store_true",
                    help="a new text each application (worker and --profile)")
    ap.add_argument("--profile", metavar="DIST")
    args = ap.parse_args()
    fresh_store()
    if args.profile:
        profile(args.profile, args.repeats, args.warmup, args.fresh)
        return
    if args.worker:
        print(json.dumps(run(args.dist, args.worker, args.repeats, args.warmup, args.fresh)))
        return
    started = time.perf_counter()
    for lib in (LIBRARIES[d] for d in CASES):          # download once, before any timing
        fetch([(lib.dist, lib.version, lib.sha256)])
    res = {(d, p, fresh): run_worker(__file__, p, "--dist", d, "--repeats", args.repeats,
                                     "--warmup", args.warmup, *(["--fresh"] if fresh else []))
           for fresh in MODES for d in CASES for p in PEERS}
    publish(table(res, args.repeats, args.warmup))
    print(f"({time.perf_counter() - started:.0f} s)")


def publish(text: str) -> None:
    """Print the table, keep it in benchmarks/results/corpus_bench.md, and refresh the
    README block between ``<!-- bench:corpus -->`` markers (if the README has them)."""
    print(text)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "corpus_bench.md").write_text(text + "\n")
    update_readme("corpus", text)


if __name__ == "__main__":
    main()
