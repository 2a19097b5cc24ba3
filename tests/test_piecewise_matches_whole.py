"""Compiling a module piece by piece gives the module compiling it whole gives.

A property test over generated modules (comment headers before the
docstring, strings at column 0, decorators, classes, top-level control
flow, ``global`` statements in every position) and over real modules of the
standard library: the same ``__doc__``, the same names and values, the same
line number for every code object, and the same verdict on code Python
refuses.
"""

from __future__ import annotations

import inspect
import types
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox_magic.engine import chunks

STATEMENTS = [
    "# a comment\n",
    "\n",
    '"""a string statement"""\n',
    "X = 1\n",
    "Y = [\n1,\n2,\n]\n",
    "def f(a):\n    return a + X\n",
    "@staticmethod\ndef g():\n    return 2\n",
    "class K:\n    '''doc of K'''\n    z = 3\n    def m(self):\n        return self.z\n",
    "global X\n",
    "def h():\n    global X\n    X = 5\n",
    "if X:\n    W = 1\nelse:\n    W = 2\n",
    "try:\n    V = 1\nexcept Exception:\n    V = 2\n",
    'T = """\ntext at column 0\n"""\n',
    "S = '''\n# not a comment: inside a string\n'''\n",
    "Q = '''\n#q'''\n",
    "for _i in range(2):\n    U = _i\n",
    "def annotated(a: Later) -> Later:\n    return a\nANN = annotated.__annotations__\n",
    "from __future__ import annotations\n",
]
HEADERS = ["", "# licence\n# header\n", "\n\n", "#!/usr/bin/env python\n# -*- coding: utf-8 -*-\n"]
DOCS = ["", '"""The module\'s doc."""\n', "'single-quoted doc'\n"]
FUTURES = ["", "from __future__ import annotations\n",
           "from __future__ import annotations\nfrom __future__ import generator_stop\n"]


def _whole(source: str, filename: str) -> tuple[types.CodeType, ...] | None:
    try:
        return (compile(source, filename, "exec", dont_inherit=True),)
    except SyntaxError:
        return None


def _lines(codes: tuple[types.CodeType, ...]) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    todo = list(codes)
    while todo:
        code = todo.pop(0)
        if code.co_name != "<module>":
            out.append((code.co_qualname, code.co_firstlineno))
        todo.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    return sorted(out)


def _run(codes: tuple[types.CodeType, ...]) -> object:
    """The plain values the module defines, or the error its body raised."""
    ns: dict[str, object] = {"__name__": "m"}
    try:
        for code in codes:
            exec(code, ns)
    except Exception as exc:
        return (type(exc).__name__, str(exc), exc.__traceback__.tb_next.tb_lineno
                if exc.__traceback__ and exc.__traceback__.tb_next else None)
    return {k: v for k, v in ns.items() if k != "__builtins__"
            and not callable(v) and not isinstance(v, type)}


def _check(source: str, name: str, cache: chunks.PieceCache | None = None) -> None:
    filename = f"<{name}>"
    if cache is None:
        cache = chunks.PieceCache()
        cache.keep(name, {})        # seen: compiled piece by piece whatever its length
    pieces = chunks.compile_pieces(source, filename, name, cache)
    whole = _whole(source, filename)
    if pieces is None:
        return                      # compiled whole: nothing to compare
    assert whole is not None, "a module Python refuses was compiled piece by piece"
    assert _run(pieces.codes) == _run(whole)
    assert _lines(pieces.codes) == _lines(whole)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(HEADERS), st.sampled_from(DOCS), st.sampled_from(FUTURES),
       st.lists(st.sampled_from(STATEMENTS), min_size=0, max_size=14))
def test_generated_modules_compile_the_same_piece_by_piece(header, doc, future, body):
    pad = "".join(f"def pad{i}():\n    return {i}\n" for i in range(12))
    _check(header + doc + future + "".join(body) + pad, "gen")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(STATEMENTS), min_size=0, max_size=14),
       st.sampled_from(["# edited\n", "\n# two\n# lines\n", "", "#\n\n"]))
def test_a_second_version_with_other_comments_compiles_the_same(body, comment):
    # pieces are found again by their text without the comment lines that end it
    # (chunks.stem): every comment edited, added or removed must still give the code
    # compiling the whole new text gives
    pad = "".join(f"def pad{i}():\n    return {i}\n" for i in range(12))
    v1 = "".join(body) + pad
    v2 = "".join(s.replace("# a comment\n", comment) + comment for s in body) + pad + comment
    cache = chunks.PieceCache()
    cache.keep("gen", {})
    chunks.compile_pieces(v1, "<v1>", "gen", cache)
    _check(v2, "gen", cache)


def test_a_trailing_comment_edit_compiles_nothing():
    pad = "".join(f"class K{i}:\n    def m(self):\n        return {i}\n\n" for i in range(30))
    cache = chunks.PieceCache()
    chunks.compile_pieces(pad, "<v0>", "m", cache)
    v1 = chunks.compile_pieces(pad + "# one\n", "<v1>", "m", cache)
    assert v1 is not None
    v2 = chunks.compile_pieces(pad + "# two\n# three\n", "<v2>", "m", cache)
    assert v2 is not None and v2.reused == len(v2.codes) == 30


def test_a_docstring_after_a_licence_header_is_the_module_doc():
    source = "# licence\n# header\n'''The doc.'''\n" + "".join(
        f"def f{i}():\n    return {i}\n" for i in range(15))
    cache = chunks.PieceCache()
    cache.keep("m", {})
    pieces = chunks.compile_pieces(source, "<m>", "m", cache)
    assert pieces is not None
    ns: dict[str, object] = {}
    for code in pieces.codes:
        exec(code, ns)
    assert ns["__doc__"] == "The doc."


def test_real_standard_library_modules_compile_the_same_piece_by_piece():
    import argparse
    import dataclasses
    import json.decoder
    import textwrap

    import pydantic.main  # opens with from __future__ import annotations

    for mod in (argparse, dataclasses, json.decoder, textwrap, pydantic.main):
        source = Path(inspect.getfile(mod)).read_text()
        filename = f"<{mod.__name__}>"
        cache = chunks.PieceCache()
        cache.keep(mod.__name__, {})
        pieces = chunks.compile_pieces(source, filename, mod.__name__, cache)
        assert pieces is not None, mod.__name__
        whole = _whole(source, filename)
        assert whole is not None
        assert _lines(pieces.codes) == _lines(whole), mod.__name__


BIG = "class Big:\n    '''A class long enough to be compiled without a syntax tree.'''\n" + "".join(
    f"    def m{i}(self, x={i}):\n        y = x + {i}\n        return y\n\n" for i in range(120))


def test_an_edit_inside_a_method_of_a_large_class_compiles_the_same(monkeypatch):
    cache = chunks.PieceCache()
    cache.keep("big", {})
    tail = "".join(f"def pad{i}():\n    return {i}\n" for i in range(12))
    assert chunks.compile_pieces(BIG + tail, "<v1>", "big", cache) is not None
    parsed: list[int] = []
    full = chunks._compile_piece
    monkeypatch.setattr(chunks, "_compile_piece",
                        lambda text, *a: parsed.append(len(text)) or full(text, *a))
    big = BIG
    for i, (old, new) in enumerate([("x + 7\n", "x * 70\n"), ("x + 8\n", "x + 8\n        y += 1\n"),
                                    ("return y\n\n    def m9", "return -y\n\n    def m9")]):
        big = big.replace(old, new, 1)          # one edit after another, as a user makes them
        source = big + tail
        pieces = chunks.compile_pieces(source, f"<v{i + 2}>", "big", cache)
        whole = _whole(source, f"<v{i + 2}>")
        assert pieces is not None and whole is not None
        assert _lines(pieces.codes) == _lines(whole)
        ns_p: dict = {}
        ns_w: dict = {}
        for code in pieces.codes:
            exec(code, ns_p)
        exec(whole[0], ns_w)
        assert [getattr(ns_p["Big"](), f"m{k}")() for k in range(12)] == \
            [getattr(ns_w["Big"](), f"m{k}")() for k in range(12)]
    assert not [n for n in parsed if n > 4096]    # the class was never parsed to a tree


def test_only_edits_inside_a_function_body_carry_a_statements_analysis():
    base = ("class K:\n    X = 1\n    def f(self):\n        a = 1\n        return a\n\n"
            "    def g(self): return 2\n    Y = [\n        1,\n    ]\n")
    inside = base.replace("a = 1", "a = 2")
    assert chunks.body_edit(base, inside)
    assert not chunks.body_edit(base, base.replace("X = 1", "X = 2"))        # class level
    assert not chunks.body_edit(base, base.replace("a = 1", "import os"))     # an import
    assert not chunks.body_edit(base, base.replace("        1,", "        call(),"))   # after
    assert not chunks.body_edit(base, base.replace("def f(self)", "def f(self, z)"))  # header
    assert not chunks.body_edit(base, base.replace("a = 1", "a = '''x'''"))   # a string


def _edits_inside_function_bodies(text: str, count: int) -> list[str]:
    """Texts differing from ``text`` in one line of one function body (a number or a
    name changed, the line count kept)."""
    import re
    out = []
    lines = text.split("\n")
    for i, ln in enumerate(lines):
        if len(out) >= count:
            break
        body = ln.strip()
        if (ln.startswith("        ") and body.startswith("return ") and '"""' not in ln
                and "'''" not in ln and "import" not in ln):
            new = re.sub(r"\breturn\b", "return 7 if 0 else", ln, count=1)
            out.append("\n".join([*lines[:i], new, *lines[i + 1:]]))
    return out


def test_a_method_compiled_alone_is_what_compiling_its_class_gives():
    """engine.chunks compiles only the edited function of a long statement (a class of
    1,000 lines) and puts it in the statement's code: the result equals compiling the
    edited statement whole, line numbers and nested code included."""
    import ast
    import collections
    import inspect as insp
    import typing
    checked = 0
    for mod in (collections, typing, insp):
        source = Path(mod.__file__).read_text(encoding="utf-8")
        for node in ast.parse(source).body:
            if not isinstance(node, ast.ClassDef):
                continue
            seg = "\n".join(source.split("\n")[node.lineno - 1 - len(node.decorator_list):
                                                node.end_lineno]) + "\n"
            if "[" in seg.split("\n")[len(node.decorator_list)].split("(")[0]:
                continue
            old_code = compile(seg, chunks._BASE_NAME, "exec", dont_inherit=True)
            for new in _edits_inside_function_bodies(seg, 3):
                if not chunks.body_edit(seg, new):
                    continue
                spliced = chunks._spliced(old_code, seg, new, 0)
                whole = compile(new, chunks._BASE_NAME, "exec", dont_inherit=True)
                if spliced is None:
                    continue
                assert spliced == whole, (mod.__name__, node.name)
                checked += 1
    assert checked >= 20
