"""A sandbox holds packages as Python would import them.

``__init__.py``, subpackages at any depth, relative imports of every level,
absolute self-imports that must reach the sandbox's copy (never an installed
copy of the same name), from a folder, from a dict of paths or dotted names,
and from a watched folder; reloads, cascades and rollback of one submodule.
"""

from __future__ import annotations

import pickle
import sys
import textwrap

import pytest
from test_watch import Events

import sandbox_magic as sm

FILES = {
    "toolkit/__init__.py": '''
        """A package: the public names come from its submodules."""
        from .core import Shape, area
        from . import utils
        VERSION = "sandboxed"
    ''',
    "toolkit/utils.py": '''
        SCALE = 1
        def scaled(x):
            return x * SCALE
    ''',
    "toolkit/core.py": '''
        from toolkit.utils import scaled        # an absolute self-import
        from .utils import SCALE
        class Shape:
            def __init__(self, side):
                self.side = side
            def area(self):
                return scaled(self.side * self.side)
        def area(side):
            return Shape(side).area()
    ''',
    "toolkit/geo/__init__.py": '''
        from ..core import area as _area
        def double_area(side):
            return 2 * _area(side)
    ''',
    "toolkit/geo/deep/__init__.py": "",
    "toolkit/geo/deep/far.py": '''
        from ... import utils
        from ...core import Shape
        from toolkit.geo import double_area
        def describe(side):
            return (utils.scaled(side), Shape(side).area(), double_area(side))
    ''',
}


def write(root, files):
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text).lstrip())


@pytest.fixture
def decoy(tmp_path, monkeypatch):
    """An installed package of the same name, which sandbox code must never reach."""
    site = tmp_path / "site"
    write(site, {"toolkit/__init__.py": "VERSION = 'installed'\n",
                 "toolkit/utils.py": "SCALE = 1000\ndef scaled(x):\n    return -1\n"})
    monkeypatch.syspath_prepend(str(site))
    yield
    for name in [n for n in sys.modules if n == "toolkit" or n.startswith("toolkit.")]:
        del sys.modules[name]


@pytest.fixture
def package(tmp_path):
    write(tmp_path / "src", FILES)
    return tmp_path / "src" / "toolkit"


MODULES = ["toolkit", "toolkit.core", "toolkit.geo", "toolkit.geo.deep",
           "toolkit.geo.deep.far", "toolkit.utils"]


def test_a_package_folder_loads_whole_with_every_import_form(decoy, package):
    sm.create_sandbox("pk1", sandbox_path=package)
    try:
        sb = sm.get_sandbox("pk1")
        assert sorted(sm.get_sandbox_info("pk1").modules) == MODULES
        assert sb.toolkit.VERSION == "sandboxed"
        assert sb.toolkit.area(3) == 9 and sb.toolkit.utils.SCALE == 1
        assert sb.toolkit.geo.deep.far.describe(2) == (2, 4, 8)
        assert sb.modules["toolkit.geo"].double_area(1) == 2
        assert sys.modules["sandbox_magic.sandboxes.pk1.toolkit.core"] is sb.toolkit.core
        shape = sb.toolkit.Shape(2)
        assert pickle.loads(pickle.dumps(shape)).area() == 4
        assert "toolkit" not in sys.modules or sys.modules["toolkit"].VERSION == "installed"
    finally:
        sm.destroy_sandbox("pk1")


def test_a_submodule_reload_reaches_every_importer_and_rolls_back(decoy, package):
    sm.create_sandbox("pk2", sandbox_path=package)
    try:
        sb = sm.get_sandbox("pk2")
        shape = sb.toolkit.Shape(3)
        far = sb.toolkit.geo.deep.far
        r = sm.hot_reload_source("pk2", "SCALE = 10\ndef scaled(x):\n    return x * SCALE\n",
                                 "toolkit.utils")
        assert r.new_version == 2
        # core binds the value SCALE: it runs again; the package and far bind functions,
        # classes and modules, which the reload patches in place: they need not
        assert r.dependents == ("toolkit.core",)
        assert shape.area() == 90                 # the held object runs the new code
        assert far.describe(1) == (10, 10, 20)
        assert sb.toolkit.utils.SCALE == 10 and sb.toolkit.core.SCALE == 10
        sm.rollback_module("pk2", "toolkit.utils", 1)
        assert shape.area() == 9 and far.describe(1) == (1, 1, 2)
        assert sb.toolkit.utils is sb.modules["toolkit.utils"]   # submodules stay bound
    finally:
        sm.destroy_sandbox("pk2")


def test_dict_sources_take_paths_or_dotted_names(sid):
    files = {k: textwrap.dedent(v).lstrip() for k, v in FILES.items()}
    sm.hot_reload_source(sid, files)
    sb = sm.get_sandbox(sid)
    assert sorted(sm.get_sandbox_info(sid).modules) == MODULES
    assert sb.toolkit.geo.deep.far.describe(2) == (2, 4, 8)
    sm.hot_reload_source(sid, {"toolkit.geo": "def double_area(side):\n    return 0\n"})
    assert sb.toolkit.geo.deep.far.describe(2) == (2, 4, 0)
    with pytest.raises(sm.SandboxError, match="not a module's path"):
        sm.hot_reload_source(sid, {"toolkit/not-a-name.py": "X = 1\n"})


def test_a_src_folder_of_packages_and_a_folder_with_only_an_init(tmp_path):
    write(tmp_path / "src", FILES)
    write(tmp_path / "src", {"helper.py": "from toolkit import area\nAREA = area(2)\n"})
    sm.create_sandbox("pk3", sandbox_path=tmp_path / "src")
    try:
        assert sorted(sm.get_sandbox_info("pk3").modules) == sorted(MODULES + ["helper"])
        assert sm.get_sandbox("pk3").AREA == 4
    finally:
        sm.destroy_sandbox("pk3")
    write(tmp_path, {"solo/__init__.py": "def hello():\n    return 'hi'\n"})
    sm.create_sandbox("pk4", sandbox_path=tmp_path / "solo")
    try:
        assert sm.get_sandbox_info("pk4").modules == {"solo": 1}
        assert sm.get_sandbox("pk4").solo.hello() == "hi"
    finally:
        sm.destroy_sandbox("pk4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(sm.SandboxError, match="holds no Python module"):
        sm.create_sandbox("pk5", sandbox_path=tmp_path / "empty")


def test_a_missing_submodule_is_a_clear_error_and_changes_nothing(sid):
    sm.hot_reload_source(sid, {"pkg/__init__.py": "X = 1\n", "pkg/a.py": "Y = 2\n"})
    with pytest.raises(sm.ReloadError, match=r"no module 'pkg\.nothere'"):
        sm.hot_reload_source(sid, "from pkg.nothere import z\n", "pkg.a")
    assert sm.get_sandbox(sid).pkg.a.Y == 2 and sm.get_module_version(sid, "pkg.a") == 1


def test_watching_a_package_reloads_the_saved_submodule(sid, package):
    events = Events()
    w = sm.watch(sid, package, debounce=0.05, on_event=events)
    try:
        sb = sm.get_sandbox(sid)
        assert sorted(sm.get_sandbox_info(sid).modules) == MODULES
        far = sb.toolkit.geo.deep.far
        (package / "utils.py").write_text("SCALE = 3\ndef scaled(x):\n    return x * SCALE\n")
        e = events.next(1)
        assert e.kind == "reloaded" and e.versions == {"toolkit.utils": 2}
        assert far.describe(1) == (3, 3, 6)
        (package / "geo" / "deep" / "far.py").write_text("def describe(side):\n    return 0\n")
        e = events.next(2)
        assert e.versions == {"toolkit.geo.deep.far": 2} and far.describe(1) == 0
    finally:
        w.stop()


def test_a_module_loaded_from_a_file_finds_the_files_beside_it(sid, tmp_path):
    write(tmp_path / "app", {"app/__init__.py": "",
                             "app/data.py": "import os\nHERE = os.path.dirname(__file__)\n"
                                            "def template():\n"
                                            "    with open(os.path.join(HERE, 'page.txt')) as f:\n"
                                            "        return f.read()\n"})
    (tmp_path / "app" / "app" / "page.txt").write_text("hello")
    sm.create_sandbox("pk6", sandbox_path=tmp_path / "app" / "app")
    try:
        sb = sm.get_sandbox("pk6")
        assert sb.app.data.template() == "hello"
        assert sb.app.data.__file__ == str((tmp_path / "app" / "app" / "data.py").resolve())
        sm.hot_reload_source("pk6", "import os\nHERE = os.path.dirname(__file__)\n", "app.data")
        assert sb.app.data.HERE == str((tmp_path / "app" / "app").resolve())
    finally:
        sm.destroy_sandbox("pk6")
