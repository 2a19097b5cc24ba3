"""Compile a long module statement by statement, re-using code of unchanged statements.

A one-line edit of a 5,000-line module should not cost a parse and compile of
5,000 lines.  The source is cut before every line that starts a top-level
statement (a line at column 0 that is not a comment, a closing bracket or an
``else``/``elif``/``except``/``finally``).  Each piece is compiled on its own
at line 1 and kept in a bounded cache keyed by its text; a version's code is
the cached code of each piece moved to the piece's line and to the version's
file name, so tracebacks, ``inspect.getsource`` and line numbers are exactly
those of compiling the whole text.

Why cutting cannot change the meaning: a cut inside a string, inside brackets,
after a backslash, between a decorator and its ``def``, or between a compound
statement's header and its indented body leaves a piece that does not parse
on its own; such a piece is joined to the next one until it parses.  A piece
that parses on its own ends a logical line at column 0, where the tokenizer's
state is the same as at the start of a file, so running the pieces one after
another in one namespace is running the module.  Two differences are handled:
a piece that is not first and starts with a string would set ``__doc__``
(compiled with a leading ``pass`` instead), and ``from __future__`` imports
apply to the whole file (such sources are compiled whole).
"""

from __future__ import annotations

import ast
import re
import threading
import types
from collections import OrderedDict
from dataclasses import dataclass

from .deps import definitions_of_tree, imports_of_tree

#: Sources with at least this many lines are compiled piece by piece; shorter
#: ones are compiled whole (one compile call is cheapest for a cell).
MIN_LINES = 200
#: Pieces joined while looking for one that parses; past this the source is
#: compiled whole (a syntax error, or a long run of column-0 text in a string).
MAX_JOIN = 64
#: Bound of the cache, in characters of source text held.
CACHE_CHARS = 4_000_000

_CUT = re.compile(r"^(?![\s#)\]}]|(?:else|elif|except|finally)\b)", re.M)
_BASE_NAME = "<sandbox piece>"


@dataclass(frozen=True)
class Piece:
    code: types.CodeType          # compiled at line 1 under a placeholder file name
    lines: int                    # newlines in the text
    imports: frozenset[str]
    defines: frozenset[str]


class _Incomplete:
    """Cache value of a text that does not parse on its own (joined to the next)."""


INCOMPLETE = _Incomplete()


class PieceCache:
    """Text -> :class:`Piece` (or INCOMPLETE), least recently used out first."""

    def __init__(self, max_chars: int = CACHE_CHARS) -> None:
        self.max_chars = max_chars
        self._items: OrderedDict[tuple[bool, str], Piece | _Incomplete] = OrderedDict()
        self._chars = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[bool, str]) -> Piece | _Incomplete | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
                self.hits += 1
            else:
                self.misses += 1
            return value

    def put(self, key: tuple[bool, str], value: Piece | _Incomplete) -> None:
        with self._lock:
            if key in self._items:
                return
            self._items[key] = value
            self._chars += len(key[1])
            while self._chars > self.max_chars and self._items:
                (_, text), _ = self._items.popitem(last=False)
                self._chars -= len(text)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._chars = 0

    def __len__(self) -> int:
        return len(self._items)


CACHE = PieceCache()


def _fragments(source: str) -> list[str]:
    starts = [m.start() for m in _CUT.finditer(source)]
    if not starts or starts[0] != 0:
        starts.insert(0, 0)
    ends = starts[1:] + [len(source)]
    return [source[a:b] for a, b in zip(starts, ends) if b > a]


def _compile_piece(text: str, first: bool) -> Piece | None:
    try:
        tree = ast.parse(text, _BASE_NAME)
    except (SyntaxError, ValueError):
        return None
    body = tree.body
    if not first and body and isinstance(body[0], ast.Expr) \
            and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
        # Only a module's first statement is its docstring.
        stub = ast.Pass()
        ast.copy_location(stub, body[0])
        body.insert(0, stub)
    try:
        code = compile(tree, _BASE_NAME, "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return None
    return Piece(code, text.count("\n"), imports_of_tree(tree), definitions_of_tree(tree))


def _moved(code: types.CodeType, filename: str, delta: int) -> types.CodeType:
    consts = code.co_consts
    for c in consts:
        if type(c) is types.CodeType:
            consts = tuple(_moved(k, filename, delta) if type(k) is types.CodeType else k
                           for k in consts)
            return code.replace(co_filename=filename, co_firstlineno=code.co_firstlineno + delta,
                                co_consts=consts)
    return code.replace(co_filename=filename, co_firstlineno=code.co_firstlineno + delta)


@dataclass
class Pieces:
    codes: tuple[types.CodeType, ...]
    imports: frozenset[str]
    defines: frozenset[str]
    reused: int                   # pieces whose code came from the cache


def compile_pieces(source: str, filename: str,
                   cache: PieceCache = CACHE) -> Pieces | None:
    """The source as code objects to run in order, or None to compile it whole.

    None when the source is short, uses ``from __future__``, or a piece does
    not parse even after joining (the whole compile then reports the error).
    """
    if source.count("\n") < MIN_LINES or "__future__" in source:
        return None
    codes: list[types.CodeType] = []
    imports: set[str] = set()
    defines: set[str] = set()
    line = 0
    pending = ""
    joined = 0
    reused = 0
    for frag in _fragments(source):
        text = pending + frag if pending else frag
        key = (not codes, text)
        piece = cache.get(key)
        if piece is None:
            piece = _compile_piece(text, key[0]) or INCOMPLETE
            cache.put(key, piece)
        else:
            reused += isinstance(piece, Piece)
        if isinstance(piece, _Incomplete):
            pending = text
            joined += 1
            if joined > MAX_JOIN:
                return None
            continue
        pending, joined = "", 0
        codes.append(_moved(piece.code, filename, line))
        line += piece.lines
        imports |= piece.imports
        defines |= piece.defines
    if pending:
        return None
    return Pieces(tuple(codes), frozenset(imports), frozenset(defines), reused)
