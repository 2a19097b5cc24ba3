"""The corpus: which libraries, pinned, which of their tests run, and the edit of each.

Every library is a PyPI sdist (its test suite ships in it), pinned by version and
sha256.  ``pytest_args`` are given to pytest with the unpacked sdist as rootdir (so
the library's own pytest configuration applies); ``doctest_modules`` are the modules
whose docstring examples also run (``corpus_doctests.py``).  ``edit`` is the
behavioural edit of step 3: ``old`` must occur exactly once in the file; the tests
it makes fail must all match one of ``expect`` (substrings of node ids), and at least
one must fail.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Package:
    name: str            # import name
    folder: str          # its folder in the sdist


@dataclass(frozen=True)
class Edit:
    package: str
    file: str            # in the package's folder
    old: str
    new: str
    expect: tuple[str, ...]
    what: str            # the edit in words

    def apply(self, text: str) -> str:
        if text.count(self.old) != 1:
            raise ValueError(f"edit of {self.package}/{self.file}: {self.old!r} occurs "
                             f"{text.count(self.old)} times, not once")
        return text.replace(self.old, self.new)


@dataclass(frozen=True)
class Known:
    """Tests whose outcome in a sandbox differs from the plain import's, because of an
    engine defect or limitation (``reason``), in the sandbox steps named.

    ``tests`` are node ids, or their beginnings ending in ``::`` or ``[`` (a class, a
    parametrized test).  Every test that differs must be listed; an entry none of whose
    tests differs any more in its steps is reported, so that a fix is noticed."""

    tests: tuple[str, ...]
    steps: tuple[str, ...]
    reason: str

    def covers(self, test: str, step: str) -> bool:
        return step in self.steps and any(
            test == t or (t.endswith(("::", "[")) and test.startswith(t)) for t in self.tests)


ALL_STEPS = ("v1", "shifted", "edited", "rolled_back")


@dataclass(frozen=True)
class Library:
    dist: str
    version: str
    sha256: str
    packages: tuple[Package, ...]
    pytest_args: tuple[str, ...]
    doctest_modules: tuple[str, ...]
    edit: Edit
    import_root: str = "."      # the folder of the sdist that holds the packages
    subset: str = "the whole suite"
    known: tuple[Known, ...] = ()
    # Modules of the packages (import names, with their submodules) that stay on disk:
    # the library's own test package, which pytest imports from its files.
    unbound: tuple[str, ...] = ()
    # The library imports itself through importlib while it loads (see runner.SandboxFinder).
    import_hook: bool = False


def _deselect(*nodeids: str) -> tuple[str, ...]:
    return tuple(a for n in nodeids for a in ("--deselect", n))


LIBRARIES: dict[str, Library] = {}


def _add(lib: Library) -> None:
    LIBRARIES[lib.dist] = lib


_add(Library(
    dist="more-itertools", version="11.2.1",
    sha256="cbf08fd0af284dc69718b9b76a8e6203df624d70209ea511e4219d350c856f63",
    packages=(Package("more_itertools", "more_itertools"),),
    pytest_args=("tests", *_deselect(
        "tests/test_recipes.py::PrimeFunctionTests::test_primes",
        "tests/test_recipes.py::PrimeFunctionTests::test_nth_prime_approximate",
        "tests/test_recipes.py::PolynomialFromRootsTests::test_large",
        "tests/test_more.py::TestSerialize::test_concurrent_calls",
        "tests/test_more.py::DiscreteFourierTransformTests::test_roundtrip",
        "tests/test_more.py::TestConcurrentTee::test_concurrent_consumers",
        "tests/test_more.py::ExtractTests::test_all_orderings",
    )),
    doctest_modules=("more_itertools.more", "more_itertools.recipes"),
    edit=Edit("more_itertools", "recipes.py",
              old="    return next(filter(pred, iterable), default)",
              new="    return next(filter(pred, iterable), None)",
              expect=("FirstTrueTests", "doctest::more_itertools.recipes.first_true"),
              what="first_true ignores its default"),
    subset="tests/ less its 7 slowest tests (primes, concurrency, big transforms: 12 of "
           "17 s); the doctests of more.py and recipes.py (run by its load_tests)",
))

_add(Library(
    dist="sortedcontainers", version="2.4.0",
    sha256="25caa5a06cc30b6b83d11423433f65d1f9d76c4c6a0c90e3379eaa43b9bfdb88",
    packages=(Package("sortedcontainers", "sortedcontainers"),),
    pytest_args=(),
    doctest_modules=("sortedcontainers", "sortedcontainers.sortedlist",
                     "sortedcontainers.sortedset", "sortedcontainers.sorteddict"),
    edit=Edit("sortedcontainers", "sortedlist.py",
              old="            return idx_right - idx_left\n",
              new="            return idx_right - idx_left + 1\n",
              expect=("sortedlist.SortedList.count",),
              what="SortedList.count is one too high within one sublist"),
    subset="the docstring examples of its four modules (its sdist ships no test suite)",
))

_add(Library(
    dist="tabulate", version="0.10.0",
    sha256="e2cfde8f79420f6deeffdeda9aaec3b6bc5abce947655d17ac662b126e48a60d",
    packages=(Package("tabulate", "tabulate"),),
    pytest_args=("test", "--ignore=test/test_cli.py"),
    doctest_modules=("tabulate",),
    edit=Edit("tabulate", "__init__.py",
              old="        datarow=DataRow(\"\", separator, \"\"),\n        padding=0,\n",
              new="        datarow=DataRow(\"\", separator, \"\"),\n        padding=1,\n",
              expect=("simple_separated_format", "test_unaligned_separated"),
              what="simple_separated_format pads its cells"),
    subset="test/ less test_cli.py (it runs `python -m tabulate` in a subprocess, which "
           "imports the files, not the sandbox); the docstring examples of the package",
))

_add(Library(
    dist="boltons", version="26.2.0",
    sha256="d39cfd15c1a1c3bd4d705c82252fa9edb8e4f5e8cc039f8e39afac7b1b47e92c",
    packages=(Package("boltons", "boltons"),),
    pytest_args=("tests",),
    doctest_modules=tuple(f"boltons.{m}" for m in (
        "cacheutils", "debugutils", "deprutils", "dictutils", "easterutils", "ecoutils",
        "excutils", "fileutils", "formatutils", "funcutils", "gcutils", "ioutils",
        "iterutils", "jsonutils", "listutils", "mathutils", "mboxutils", "namedutils",
        "pathutils", "queueutils", "setutils", "socketutils", "statsutils", "strutils",
        "tableutils", "tbutils", "timeutils", "typeutils", "urlutils")),
    edit=Edit("boltons", "strutils.py",
              old="    if version and obj.version != int(version):\n",
              new="    if version and obj.version == int(version):\n",
              expect=("test_is_uuid", "strutils.is_uuid"),
              what="is_uuid inverts its version check"),
    subset="tests/ and the docstring examples of every module (its tox runs "
           "--doctest-modules on the package)",
))

_add(Library(
    dist="attrs", version="26.1.0",
    sha256="d03ceb89cb322a8fd706d4fb91940737b6642aa36998fe130a9bc96c985eff32",
    packages=(Package("attr", "src/attr"), Package("attrs", "src/attrs")),
    import_root="src",
    pytest_args=("tests",),
    doctest_modules=(),
    edit=Edit("attr", "filters.py",
              old="    def exclude_(attribute, value):\n        return not (\n",
              new="    def exclude_(attribute, value):\n        return (\n",
              expect=("tests/test_filters.py::TestExclude::",),
              what="filters.exclude includes instead"),
    subset="tests/ (attr and attrs, each package in its own sandbox)",
))

_add(Library(
    dist="toolz", version="1.2.0",
    sha256="9667a038e9d6ecba37995e26cb2f59ec6420b6ad8dd9677de59db9b956b08490",
    packages=(Package("toolz", "toolz"),),
    unbound=("toolz.tests",),
    import_hook=True,      # toolz/__init__.py: importlib.import_module("toolz")
    pytest_args=("toolz/tests",),
    doctest_modules=("toolz.itertoolz", "toolz.functoolz", "toolz.dicttoolz",
                     "toolz.recipes", "toolz.utils"),
    edit=Edit("toolz", "itertoolz.py", old="        next(inposed)\n", new="        pass\n",
              expect=("test_interpose", "doctest::toolz.itertoolz.interpose"),
              what="interpose also puts the element first"),
    subset="toolz/tests (the package with its subpackages curried and sandbox; tlz, "
           "which builds on toolz, imported from disk) and the docstring examples of the "
           "top-level modules",
    known=(Known(("toolz/tests/test_curried.py::test_module_name",
                  "toolz/tests/test_functoolz.py::test_curry_module",
                  "toolz/tests/test_tlz.py::test_tlz"), ALL_STEPS,
                 "a sandbox module's __name__ is sandbox_magic.sandboxes.<id>.toolz.curried, "
                 "not toolz.curried (tlz derives its module names from it)"),
           Known(("toolz/tests/test_compatibility.py::test_compat_warn",), ALL_STEPS,
                 "importlib.reload(toolz.compatibility) raises SandboxError in a sandbox "
                 "(by design: a reload must record a version)")),
))
