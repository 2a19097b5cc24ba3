"""Run one corpus library's own tests, plainly imported or in sandboxes, step by step.

    python runner.py LIBRARY plain RESULT.json
    python runner.py LIBRARY sandbox RESULT.json

``plain``: the unpacked sdist's packages are imported from disk (steps ``plain``, the
shipped code, and ``plain_edited``, a copy with the library's edit applied).

``sandbox``: every package folder is loaded into a sandbox of its own with
``sm.create_sandbox(id, sandbox_path=folder)``, and the library's import names are made
to resolve to the sandbox's modules (``sys.modules["pkg"]``, ``sys.modules["pkg.sub"]``,
each submodule an attribute of its package), as the import system would bind them.  An
engine that reads the folder as a package names its modules ``pkg``, ``pkg.sub``; one
that loads each file as a top-level module gets the ``__init__.py`` loaded here as module
``pkg_init`` (see ``load_package``).  Steps: ``v1`` (as loaded), ``shifted`` (every module
hot reloaded with two comment lines prepended, in one call per sandbox), ``edited`` (the
library's behavioural edit hot reloaded into its module), ``rolled_back`` (every module
rolled back to version 1 with ``sm.rollback_module``).  After each step the functions
every module defined at v1 are checked: their code must come from the module's current
source, at the line where the step put them.

Each step is one ``pytest.main`` over the library's tests (and its docstring examples,
``corpus_doctests.py``) with a plugin that records every test's outcome; the test
modules are dropped from ``sys.modules`` between steps, so each step imports them anew
(the library's modules are not: they are the live sandbox modules).  ``sys.modules`` and
``sys.path`` are put back after each mode.  The result is JSON:
``{"steps": {step: {"outcomes": {nodeid: outcome}, "exit": code, "seconds": s, ...}}}``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
import types
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOCTESTS = HERE / "corpus_doctests.py"
SHIFT = "# sandbox_magic corpus: this comment moves every line down by two\n#\n"
WORK = Path(tempfile.gettempdir())     # the run's scratch folder (set by main)

sys.path.insert(0, str(HERE))
from libraries import LIBRARIES, Library, Package  # noqa: E402


# ---------------------------------------------------------------- outcomes
class Recorder:
    """A pytest plugin: one outcome per test node id.

    ``passed``, ``failed`` (the call, or any subtest of it, failed), ``error`` (setup
    or teardown failed, or a file could not be collected), ``skipped``, ``xfailed``,
    ``xpassed``.
    """

    def __init__(self) -> None:
        self.reports: dict[str, list[tuple[str, str, bool]]] = {}
        self.collect_errors: dict[str, str] = {}
        self.messages: dict[str, str] = {}     # the end of the first failure of each test

    def pytest_runtest_logreport(self, report) -> None:
        nodeid = _nodeid(report.nodeid)
        self.reports.setdefault(nodeid, []).append(
            (report.when, report.outcome, hasattr(report, "wasxfail")))
        if report.failed and nodeid not in self.messages:
            self.messages[nodeid] = report.longreprtext[-1500:]

    def pytest_collectreport(self, report) -> None:
        if report.failed:
            self.collect_errors[_nodeid(report.nodeid) or "<collection>"] = \
                str(report.longrepr)[-2000:]

    def outcomes(self) -> dict[str, str]:
        out = {}
        for nodeid, reps in self.reports.items():
            calls = [(o, x) for w, o, x in reps if w == "call"]
            if any(o == "failed" for w, o, _ in reps if w != "call"):
                out[nodeid] = "error"
            elif any(o == "failed" for o, _ in calls):
                out[nodeid] = "failed"
            elif any(o == "skipped" and x for o, x in calls):
                out[nodeid] = "xfailed"
            elif any(o == "passed" and x for o, x in calls):
                out[nodeid] = "xpassed"
            elif any(o == "passed" for o, _ in calls):
                out[nodeid] = "passed"
            else:
                out[nodeid] = "skipped"
        for nodeid in self.collect_errors:
            out[nodeid] = "error"
        return out


# Sandbox module names -> the names the library's users import (set by sandbox_steps):
# a test id made from a module's __name__ then reads the same in both modes.
RENAMES: list[tuple[str, str]] = []


def _nodeid(nodeid: str) -> str:
    """The doctest file lies outside the library's rootdir; name its tests plainly."""
    for sandboxed, plain in RENAMES:
        nodeid = nodeid.replace(sandboxed, plain)
    if "::test_docstring[" in nodeid:
        return "doctest::" + nodeid.split("::test_docstring[", 1)[1][:-1]
    return nodeid


def library_config(root: Path) -> Path:
    """The library's own pytest configuration file, found as pytest finds it from its
    rootdir; an empty ``pytest.ini`` when it has none.  Given with ``-c``: without it pytest
    would look above the common folder of the library's tests and ``corpus_doctests.py``,
    and take this repository's configuration."""
    sections = {"pytest.toml": "", ".pytest.toml": "", "pytest.ini": "", ".pytest.ini": "",
                "pyproject.toml": "[tool.pytest", "tox.ini": "[pytest]",
                "setup.cfg": "[tool:pytest]"}
    for name, marker in sections.items():
        path = root / name
        if path.is_file() and marker in path.read_text(encoding="utf-8", errors="replace"):
            return path
    empty = WORK / "pytest.ini"
    empty.write_text("[pytest]\n")
    return empty


def run_tests(lib: Library, root: Path) -> dict:
    import pytest
    recorder = Recorder()
    args = ["-q", "-p", "no:cacheprovider", "-p", "no:randomly", "--rootdir", str(root),
            "-c", str(library_config(root)),
            "--hypothesis-seed=0", "-o", "console_output_style=classic",
            # hypothesis is imported before pytest starts (see main): with a library's
            # filterwarnings=error this warning would stop the run.
            "-W", "ignore::pytest.PytestAssertRewriteWarning",
            *lib.pytest_args, str(DOCTESTS)]
    os.environ["CORPUS_DOCTEST_MODULES"] = ",".join(lib.doctest_modules)
    started = time.perf_counter()
    devnull = open(os.devnull, "w")   # the library's own report: not needed, the plugin has it
    try:
        with contextlib.redirect_stdout(devnull):
            code = pytest.main(args, plugins=[recorder])
    finally:
        devnull.close()
    seconds = time.perf_counter() - started
    files = {p.name: getattr(sys.modules.get(p.name), "__file__", None) for p in lib.packages}
    _forget_test_modules(root)
    return {"outcomes": recorder.outcomes(), "exit": int(code), "seconds": round(seconds, 2),
            "collect_errors": recorder.collect_errors, "messages": recorder.messages,
            "files": files}


def _forget_test_modules(root: Path) -> None:
    """Drop the test modules (the library's tests, conftest, the doctest file) imported
    from ``root`` or from this folder, so the next step imports them anew."""
    places = (str(root), str(HERE))
    for name, mod in list(sys.modules.items()):
        f = getattr(mod, "__file__", None) or ""
        live = getattr(mod, "__name__", "").startswith("sandbox_magic.sandboxes.")
        if f.startswith(places) and not live and name not in ("libraries", "runner", "__main__"):
            del sys.modules[name]   # (a sandbox module's __file__ is its file too: kept)


# ---------------------------------------------------------------- sys.modules
@contextlib.contextmanager
def isolated_names(names: list[str]):
    """Set aside ``sys.modules`` entries of the packages (``name`` and ``name.*``) and
    ``sys.path``; put them back afterwards, whatever was imported meanwhile."""
    def ours(key: str) -> bool:
        return any(key == n or key.startswith(n + ".") for n in names)
    saved = {k: m for k, m in sys.modules.items() if ours(k)}
    path = list(sys.path)
    for k in saved:
        del sys.modules[k]
    try:
        yield
    finally:
        for k in [k for k in sys.modules if ours(k)]:
            del sys.modules[k]
        sys.modules.update(saved)
        sys.path[:] = path


def edited_copy(lib: Library, root: Path, dest: Path) -> Path:
    """A copy of the whole sdist (tests too: pytest puts the test root first on
    ``sys.path``) with the library's edit applied."""
    shutil.copytree(root, dest, symlinks=True)
    pkg = next(p for p in lib.packages if p.name == lib.edit.package)
    path = dest / pkg.folder / lib.edit.file
    path.write_text(lib.edit.apply(path.read_text(encoding="utf-8")), encoding="utf-8")
    return dest


def _plain_run(lib: Library, root: Path, steps: dict, step: str) -> None:
    names = [p.name for p in lib.packages]
    with isolated_names(names):
        sys.path.insert(0, str(root / lib.import_root))
        os.chdir(root)
        steps[step] = run_tests(lib, root)


def plain_steps(lib: Library, root: Path, steps: dict) -> None:
    _plain_run(lib, root, steps, "plain")
    _plain_run(lib, edited_copy(lib, root, WORK / "edited" / root.name), steps, "plain_edited")
    os.chdir(root)


# ---------------------------------------------------------------- sandboxes
@dataclass
class Loaded:
    """One package folder loaded into its own sandbox."""

    package: Package
    sid: str
    native: bool                 # the engine made the folder a package (dotted names)
    files: dict[str, Path]       # sandbox module name -> its file
    namespace: str               # sys.modules prefix of the sandbox's modules
    unbound: tuple[str, ...] = ()

    def module_of(self, relpath: str) -> str:
        target = self.folder / relpath
        for name, f in self.files.items():
            if f == target:
                return name
        raise KeyError(f"no module of {self.sid} is loaded from {relpath}")

    @property
    def init(self) -> str:
        """The sandbox module of the package's ``__init__.py``."""
        return self.package.name if self.native else f"{self.package.name}_init"

    @property
    def folder(self) -> Path:
        return self.files[self.init].parent

    def import_name(self, module: str) -> str:
        """The name the library's users import ``module`` by."""
        if self.native:
            return module
        return self.package.name if module == self.init else f"{self.package.name}.{module}"


def _native_file(folder: Path, package: str, module: str) -> Path:
    parts = module.split(".")[1:]
    f = folder.joinpath(*parts).with_suffix(".py") if parts else folder / "__init__.py"
    return f if f.is_file() else folder.joinpath(*parts, "__init__.py")


class SandboxFinder:
    """A ``sys.meta_path`` finder: the library's import names, imported through importlib
    (``importlib.import_module("toolz")``) while the sandbox loads them, find the module
    the sandbox is running (registered as ``sandbox_magic.sandboxes.<id>.<name>``).

    Only for libraries that ask for it (``Library.import_hook``): the engine resolves
    plain names for ``import`` statements in sandbox code, not for importlib (a limit of
    the engine: a sandbox module is not importable by its plain name), and after loading
    the ``sys.modules`` bindings do this job."""

    def __init__(self, names: dict[str, list[str]], unbound: tuple[str, ...]) -> None:
        self.names = names          # package import name -> sandbox namespaces to look in
        self.unbound = unbound
        self.found: dict[str, object] = {}

    def find_spec(self, name, path=None, target=None):
        import importlib.machinery
        if _unbound(name, self.unbound):
            return None
        top = name.partition(".")[0]
        for ns in self.names.get(top, ()):
            for candidate in (name, f"{top}_init" if name == top else name[len(top) + 1:]):
                mod = sys.modules.get(f"{ns}.{candidate}")
                if mod is not None:
                    self.found[name] = mod
                    return importlib.machinery.ModuleSpec(name, self)
        return None

    def create_module(self, spec):
        return self.found.pop(spec.name)

    def exec_module(self, module) -> None:
        pass


def load_package(root: Path, package: Package, unbound: tuple[str, ...]) -> Loaded:
    """Load one package folder into a sandbox of its own with ``sandbox_path``.

    An engine that reads a folder with ``__init__.py`` as a package names the modules
    ``pkg``, ``pkg.sub`` (native); one that loads each file as a top-level module (flat:
    ``sub``, and the ``__init__.py`` left out) gets the ``__init__.py`` loaded here as a
    module ``pkg_init`` (not ``pkg``: a sandbox module ``pkg`` would claim the dotted
    names ``pkg.sub`` inside the sandbox).  Then the library's import names are bound."""
    import sandbox_magic as sm
    folder = root / package.folder
    sid = f"corpus-{package.name}"
    sm.create_sandbox(sid, sandbox_path=folder, max_versions=None)
    modules = sm.get_sandbox(sid).modules
    namespace = sm.get_sandbox_info(sid).namespace
    if namespace != f"sandbox_magic.sandboxes.{sid}":
        raise RuntimeError(f"{sid}: modules registered under {namespace!r}")
    if package.name in modules:
        files = {m: _native_file(folder, package.name, m) for m in modules}
        loaded = Loaded(package, sid, True, files, namespace, unbound)
        RENAMES.append((f"{namespace}.", ""))
    else:
        files = {p.stem: p for p in sorted(folder.glob("*.py")) if p.stem != "__init__"}
        loaded = Loaded(package, sid, False, files, namespace, unbound)
        if loaded.init in files:
            raise RuntimeError(f"{folder} has both __init__.py and {loaded.init}.py")
        files[loaded.init] = folder / "__init__.py"
        sm.hot_reload_source(sid, files[loaded.init].read_text(encoding="utf-8"),
                             module=loaded.init)
        RENAMES.extend([(f"{namespace}.{loaded.init}", package.name),
                        (f"{namespace}.", f"{package.name}.")])
    bind_names(loaded)      # missing submodule attributes are reported by each step
    return loaded


def bind_names(loaded: Loaded) -> list[str]:
    """Bind the library's import names to the sandbox's modules, as the import system
    would: ``sys.modules`` entries, and each submodule an attribute of its package.

    Called after every step too.  Returns the submodule attributes that were missing:
    with a flat engine the harness sets them (a reload of the ``__init__`` module drops
    attributes its own code does not define); with a native one that is the engine's
    job, so they are only reported."""
    import sandbox_magic as sm
    modules = {m: mod for m, mod in sm.get_sandbox(loaded.sid).modules.items()
               if not _unbound(loaded.import_name(m), loaded.unbound)}
    missing = []
    for name, mod in modules.items():
        sys.modules[loaded.import_name(name)] = mod
    pkg = modules[loaded.init]
    if not loaded.native and not hasattr(pkg, "__path__"):
        pkg.__path__ = []          # a package: `import name.sub` finds sub in sys.modules
    if loaded.unbound and str(loaded.folder) not in pkg.__path__:
        pkg.__path__.append(str(loaded.folder))   # the unbound ones import from disk
    for name, mod in modules.items():
        parent_name, _, attr = loaded.import_name(name).rpartition(".")
        parent = sys.modules.get(parent_name) if parent_name else None
        if parent is not None and parent.__dict__.get(attr) is not mod:
            missing.append(loaded.import_name(name))
            if not loaded.native:
                setattr(parent, attr, mod)
    return missing


def _unbound(name: str, unbound: tuple[str, ...]) -> bool:
    return any(name == u or name.startswith(u + ".") for u in unbound)


class LineProbe:
    """The functions each module defines at v1 (their code from that module's code file),
    held across the steps: after each step their code must come from the module's current
    code file (``__spec__.origin``: the version's source, as tracebacks and inspect read
    it; ``__file__`` is the file on disk), starting ``shift`` lines below where it started
    at v1."""

    def __init__(self, loaded: list[Loaded]) -> None:
        import sandbox_magic as sm
        self.funcs = []
        for ld in loaded:
            for m, mod in sm.get_sandbox(ld.sid).modules.items():
                for name, obj in vars(mod).items():
                    if isinstance(obj, types.FunctionType) and \
                            obj.__code__.co_filename == mod.__spec__.origin:
                        self.funcs.append((ld.sid, m, name, obj, obj.__code__.co_firstlineno))

    def check(self, shift: int) -> dict:
        import sandbox_magic as sm
        wrong = []
        for sid, m, name, func, line in self.funcs:
            mod = sm.get_sandbox(sid).modules[m]
            code = func.__code__
            origin = mod.__spec__.origin
            if code.co_filename != origin or code.co_firstlineno != line + shift:
                wrong.append(f"{m}.{name}: {code.co_filename}:{code.co_firstlineno}, expected "
                             f"{origin}:{line + shift}")
        return {"checked": len(self.funcs), "wrong": len(wrong), "examples": wrong[:8]}


def _step(steps: dict, name: str, lib: Library, root: Path, loaded: list[Loaded],
          reload: list, started: float, probe: LineProbe, shift: int) -> None:
    import sandbox_magic as sm
    reload_s = time.perf_counter() - started
    missing = {ld.sid: m for ld in loaded if (m := bind_names(ld))}
    lines = probe.check(shift)
    steps[name] = run_tests(lib, root)
    steps[name].update(
        reload=reload, reload_seconds=round(reload_s, 3), missing_attributes=missing,
        lines=lines,
        versions={ld.sid: {m: sm.get_module_version(ld.sid, m) for m in sorted(ld.files)}
                  for ld in loaded})


def sandbox_steps(lib: Library, root: Path, steps: dict) -> None:
    import sandbox_magic as sm
    loaded: list[Loaded] = []
    finder = SandboxFinder({p.name: [f"sandbox_magic.sandboxes.corpus-{p.name}"]
                            for p in lib.packages}, lib.unbound)
    with isolated_names([p.name for p in lib.packages]):
        try:
            if lib.import_hook:
                sys.meta_path.insert(0, finder)
            started = time.perf_counter()
            for p in lib.packages:
                loaded.append(load_package(root, p, lib.unbound))
            probe = LineProbe(loaded)
            _step(steps, "v1", lib, root, loaded, [], started, probe, 0)
            steps["layout"] = {ld.sid: {"native": ld.native, "modules": sorted(ld.files)}
                               for ld in loaded}

            started = time.perf_counter()
            reload = []
            for ld in loaded:
                sources = {m: SHIFT + f.read_text(encoding="utf-8") for m, f in ld.files.items()}
                r = sm.hot_reload_source(ld.sid, sources)
                reload.append([ld.sid, r.status, list(r.notes)])
            _step(steps, "shifted", lib, root, loaded, reload, started, probe, 2)

            edit = lib.edit
            ld = next(ld for ld in loaded if ld.package.name == edit.package)
            module = ld.module_of(edit.file)
            steps["edit_module"] = [ld.sid, module]
            text = ld.files[module].read_text(encoding="utf-8")
            started = time.perf_counter()
            r = sm.hot_reload_source(ld.sid, SHIFT + edit.apply(text), module=module)
            _step(steps, "edited", lib, root, loaded, [[ld.sid, r.status, list(r.notes)]],
                  started, probe, 2)

            started = time.perf_counter()
            reload = []
            for ld in loaded:
                for m in sorted(ld.files):
                    if sm.get_module_version(ld.sid, m) != 1:
                        r = sm.rollback_module(ld.sid, m, 1)
                        reload.append([ld.sid, m, r.status, list(r.notes)])
            _step(steps, "rolled_back", lib, root, loaded, reload, started, probe, 0)
        finally:
            if finder in sys.meta_path:
                sys.meta_path.remove(finder)
            for ld in loaded:
                with contextlib.suppress(Exception):
                    sm.destroy_sandbox(ld.sid, forget_history=True)


def main(argv: list[str]) -> int:
    name, mode, out = argv
    lib = LIBRARIES[name]
    root = Path(os.environ["CORPUS_SOURCE"]).resolve()
    os.environ.setdefault("SANDBOX_MAGIC_STORE", ":memory:")
    # What the test tools import from the libraries under test (hypothesis uses attrs
    # and sortedcontainers) is bound now, to the installed copies, in both modes.
    import hypothesis.strategies  # noqa: F401
    import pytest  # noqa: F401
    os.chdir(root)
    result: dict = {"library": name, "mode": mode, "python": sys.version.split()[0],
                    "steps": {}}
    global WORK
    work = tempfile.TemporaryDirectory(prefix="corpus-")
    WORK = Path(work.name)
    try:
        if mode == "plain":
            plain_steps(lib, root, result["steps"])
        else:
            import sandbox_magic as sm
            result["sandbox_magic"] = str(Path(sm.__file__).parent)
            sandbox_steps(lib, root, result["steps"])
    except BaseException:
        result["crash"] = traceback.format_exc()
    os.chdir(HERE)
    work.cleanup()
    Path(out).write_text(json.dumps(result, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
