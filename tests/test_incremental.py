"""A long module is compiled piece by piece and re-uses the code of unchanged statements.

What a user relies on: the module behaves exactly as if compiled whole
(docstring, strings and brackets with text at column 0, decorators,
if/else and try/except at top level), tracebacks and ``inspect.getsource``
point at the right lines after lines shift, syntax errors are reported as
before, and a one-line edit compiles one piece.
"""

from __future__ import annotations

import inspect
import linecache
import traceback

import pytest

import sandbox_magic as sm
from sandbox_magic.engine import chunks
from sandbox_magic.engine.artifact import compile_artifact
from sandbox_magic.errors import CompileError

PAD = "".join(f"def pad{i}(x):\n    return x + {i}\n\n" for i in range(70))

TRICKY = '''"""Module docstring.

Text at column 0
inside the docstring.
"""
import functools
TEXT = """
x = 1
def not_a_function():
"""
ITEMS = [
1,
2,
]
TOTAL = 1 + \\
2
"not a docstring"
def deco(fn):
    fn.tagged = True
    return fn

@deco

def decorated():
    return "decorated"
if TOTAL == 3:
    BRANCH = "if"
else:
    BRANCH = "else"
try:
    raise KeyError("k")
except KeyError:
    CAUGHT = True
finally:
    CLEANED = True
for i in range(2):
    pass
else:
    LOOPED = i
class Box:
    """Box doc."""
    size: int = 3
    def area(self):
        return self.size ** 2
x: int = 5
@functools.lru_cache
def cached(n):
    return n * TOTAL
'''


def _run(art):
    ns = {"__name__": art.module}
    art.run(ns)
    return ns


def _whole(source, module):
    code = compile(source, "<whole>", "exec", dont_inherit=True)
    ns = {"__name__": module}
    exec(code, ns)
    return ns


def test_long_module_runs_as_if_compiled_whole():
    source = TRICKY + PAD
    art = compile_artifact(source, "tricky")
    assert isinstance(art.code, tuple) and len(art.codes) > 70
    got, want = _run(art), _whole(source, "tricky")
    for name in ("__doc__", "TEXT", "ITEMS", "TOTAL", "BRANCH", "CAUGHT", "CLEANED",
                 "LOOPED", "x", "__annotations__"):
        assert got[name] == want[name], name
    assert got["decorated"].tagged and got["decorated"]() == "decorated"
    assert got["Box"]().area() == 9 and got["Box"].__doc__ == "Box doc."
    assert got["cached"](2) == 6 and got["pad69"](1) == 70
    assert art.imports == {"functools"}
    assert {"deco", "decorated", "Box", "cached", "pad0", "TEXT"} <= art.defines


def test_a_string_statement_after_the_first_does_not_become_the_docstring():
    source = "X = 1\n" + PAD + '"""not the docstring"""\n'
    art = compile_artifact(source, "m")
    assert isinstance(art.code, tuple)
    assert _run(art).get("__doc__") is None


def test_short_sources_compile_whole_and_future_imports_reach_every_piece():
    assert not isinstance(compile_artifact("X = 1\n", "m").code, tuple)
    source = ('"""doc"""\nfrom __future__ import annotations\n' + PAD
              + "def late(x: Undefined) -> int:\n    return x\n")
    art = compile_artifact(source, "m")
    assert isinstance(art.code, tuple)
    ns = _run(art)
    assert ns["late"].__annotations__ == {"x": "Undefined", "return": "int"}
    assert ns["__doc__"] == "doc"
    with pytest.raises(CompileError, match="beginning of the file"):
        compile_artifact("X = 1\n" + PAD + "from __future__ import annotations\n", "m2")


def test_a_cell_sized_module_goes_piece_by_piece_from_its_second_version():
    cache = chunks.PieceCache()
    cell = "".join(f"def f{i}(x):\n    return x + {i}\n" for i in range(15))   # 30 lines
    assert chunks.compile_pieces(cell, "<v1>", "cell", cache) is None      # first: whole
    v2 = cell.replace("x + 7", "x + 70")
    pieces = chunks.compile_pieces(v2, "<v2>", "cell", cache)
    assert pieces is not None and pieces.reused == 0
    v3 = v2.replace("x + 3", "x + 30")
    pieces = chunks.compile_pieces(v3, "<v3>", "cell", cache)
    assert pieces is not None and pieces.reused == 14                     # one recompiled
    short = "".join(f"def g{i}(x):\n    return x\n" for i in range(9))  # 18 lines
    for _ in range(3):
        assert chunks.compile_pieces(short, "<s>", "short", cache) is None   # always whole


def test_unchanged_statements_reuse_their_code():
    cache = chunks.PieceCache()
    v1 = "A = 1\n" + PAD
    pieces = chunks.compile_pieces(v1, "<v1>", "m", cache)
    assert pieces is not None and pieces.reused == 0
    v2 = "A = 2\n\n\n" + PAD          # edited, and every function moved down two lines
    pieces = chunks.compile_pieces(v2, "<v2>", "m", cache)
    assert pieces is not None
    assert pieces.reused == len(pieces.codes) - 1
    ns: dict = {}
    for code in pieces.codes:
        exec(code, ns)
    assert ns["A"] == 2
    assert ns["pad3"].__code__.co_firstlineno == v2.splitlines().index("def pad3(x):") + 1
    assert ns["pad3"].__code__.co_filename == "<v2>"


def test_the_cache_keeps_one_version_per_module():
    cache = chunks.PieceCache(max_modules=2)
    for edit in range(50):                 # 50 edits: still one version's pieces
        chunks.compile_pieces(f"A = {edit}\n" + PAD, "<v>", "m", cache)
    assert len(cache) == 71
    for name in ("a", "b", "c"):
        chunks.compile_pieces("A = 1\n" + PAD, "<v>", name, cache)
    assert len(cache) == 2 * 71            # the least recently compiled module went


def test_traceback_and_getsource_follow_shifted_lines(sid):
    body = "def boom():\n    raise ValueError('boom')\n"
    sm.hot_reload_source(sid, PAD + body, module="m")
    m = sm.get_sandbox(sid).modules["m"]
    boom = m.boom
    # five lines inserted above: the unchanged function moves down
    source = "# a\n# b\n# c\n# d\nEXTRA = 1\n" + PAD + body
    sm.hot_reload_source(sid, source, module="m")
    with pytest.raises(ValueError) as info:
        boom()
    frame = traceback.extract_tb(info.value.__traceback__)[-1]
    assert frame.lineno == source.splitlines().index("def boom():") + 2
    assert frame.line == "raise ValueError('boom')"
    assert inspect.getsource(boom) == body
    assert linecache.getline(boom.__code__.co_filename, frame.lineno).strip() == frame.line


def test_error_in_the_body_names_the_right_line(sid):
    source = PAD + "X = 1\nY = 1 / 0\n"
    with pytest.raises(sm.ReloadError) as info:
        sm.hot_reload_source(sid, source, module="m")
    assert f"at line {source.splitlines().index('Y = 1 / 0') + 1}" in str(info.value)


@pytest.mark.parametrize("broken, line", [
    ("def f(:\n    pass\n", 1),
    ("X = (1,\n", 1),
    ('S = """never closed\n', 1),
    ("if True:\nreturn_outside = 1\n", 2),
])
def test_syntax_errors_in_long_modules_are_reported_as_whole(broken, line):
    source = PAD + broken + PAD
    with pytest.raises(CompileError) as info:
        compile_artifact(source, "m")
    assert info.value.line == PAD.count("\n") + line


def test_return_outside_function_is_a_compile_error():
    with pytest.raises(CompileError):
        compile_artifact(PAD + "return 1\n", "m")


def test_one_line_edit_of_a_long_module_keeps_state_and_history(sid):
    sm.hot_reload_source(sid, "COUNT = 0\n" + PAD + "def f():\n    return 'v1'\n", module="m")
    m = sm.get_sandbox(sid).modules["m"]
    f, pad5 = m.f, m.pad5
    r = sm.hot_reload_source(sid, "COUNT = 0\n" + PAD + "def f():\n    return 'v2'\n",
                             module="m")
    assert r.new_version == 2 and f() == "v2" and m.f is f and m.pad5 is pad5
    sm.rollback_module(sid, "m", 1)
    assert f() == "v1"


def test_function_taken_by_another_library_reads_the_live_namespace(sid):
    """A plain function the body gave to an outside registry is re-pointed, not emptied."""
    import types
    registry = types.ModuleType("outside_registry")
    registry.held = []
    import sys
    sys.modules["outside_registry"] = registry
    try:
        body = ("import outside_registry\nLIMIT = {v}\n" + PAD
                + "def g():\n    return LIMIT\noutside_registry.held.append(g)\n")
        sm.hot_reload_source(sid, body.format(v=1), module="m")
        sm.hot_reload_source(sid, body.format(v=2), module="m")
        m = sm.get_sandbox(sid).modules["m"]
        m.LIMIT = 7
        assert [h() for h in registry.held] == [7, 7]
        alias = "def h():\n    return LIMIT\nH2 = h\n"
        sm.hot_reload_source(sid, body.format(v=3) + alias, module="m")
        sm.hot_reload_source(sid, body.format(v=4) + alias, module="m")
        assert m.H2() == 4 and m.h is m.H2
    finally:
        del sys.modules["outside_registry"]


def test_a_refused_edit_of_a_long_module_puts_every_function_back(sid):
    sm.hot_reload_source(sid, PAD + "def f():\n    return 'v1'\n", module="m")
    m = sm.get_sandbox(sid).modules["m"]
    f, pad5 = m.f, m.pad5
    edited = PAD.replace("x + 5", "x - 5") + "def f():\n    return 'v2'\n"
    with pytest.raises(sm.ReloadError):
        sm.hot_reload_source(sid, edited, module="m", check="f() == 'never'")
    assert f() == "v1" and pad5(0) == 5 and m.f is f
    assert f.__code__.co_filename == pad5.__code__.co_filename


CLASSES = '''\
import dataclasses


class Outer:
    """Docs."""
    LINE = 4

    class Inner:
        def go(self):
            return 1

    def meth(self):
        return 2


@dataclasses.dataclass
class Point:
    x: int = 4
'''


@pytest.mark.parametrize("edit", ["insert above", "delete above", "edit between"])
def test_class_source_lines_follow_every_edit(sid, edit):
    # Python 3.13 records a class's first line in the class (__firstlineno__), which
    # inspect.getsource reads: moving an unchanged class must move that number too.
    sm.hot_reload_source(sid, PAD + CLASSES, module="m")
    if edit == "insert above":
        source = "# a\n# b\nEXTRA = 1\n" + PAD + CLASSES
    elif edit == "delete above":
        source = PAD[PAD.index("def pad3("):] + CLASSES
    else:
        source = PAD + CLASSES.replace("    def meth(self):", "    # one\n    # two\n"
                                       "    def meth(self):")
    sm.hot_reload_source(sid, source, module="m")
    m = sm.get_sandbox(sid).modules["m"]
    lines = source.splitlines()
    for cls, header in [(m.Outer, "class Outer:"), (m.Outer.Inner, "    class Inner:"),
                        (m.Point, "@dataclasses.dataclass")]:
        text = inspect.getsource(cls)
        assert text.splitlines()[0] == header, cls
        start = lines.index(header)
        assert text == "\n".join(lines[start:start + text.count("\n")]) + "\n"
        if hasattr(cls, "__firstlineno__"):       # 3.13+
            assert cls.__firstlineno__ == start + 1
    assert m.Outer.LINE == 4 and m.Point().x == 4   # constants equal to old line numbers kept
