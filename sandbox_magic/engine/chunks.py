"""Compile a long module statement by statement, re-using code of unchanged statements.

A one-line edit of a 5,000-line module should not cost a parse and compile of
5,000 lines.  The source is cut before every line that starts a top-level
statement (a line at column 0 that is not a comment, a closing bracket or an
``else``/``elif``/``except``/``finally``).  Each piece is compiled on its own
at line 1 and kept by its text with the other pieces of the module's newest
compiled version (so the cache holds about one copy of each module's code,
however many edits it sees); a version's code is the code of each piece moved
to the piece's line and to the version's file name, so tracebacks,
``inspect.getsource`` and line numbers are exactly those of compiling the
whole text.

Why cutting cannot change the meaning: a cut inside a string, inside brackets,
after a backslash, between a decorator and its ``def``, or between a compound
statement's header and its indented body leaves a piece that does not parse
on its own; such a piece is joined to the next one until it parses.  A piece
that parses on its own ends a logical line at column 0, where the tokenizer's
state is the same as at the start of a file, so running the pieces one after
another in one namespace is running the module.  Two differences are handled:
a piece that is not first and starts with a string would set ``__doc__``
(compiled with a leading ``pass`` instead), and ``from __future__`` imports
apply to the whole file: the features they name are read from the module's
leading pieces (a docstring and the future imports) and every piece is
compiled with them; a future import anywhere else makes the source compile
whole, so that Python reports it.
"""

from __future__ import annotations
import __future__

import ast
import collections
import functools
import re
import sys
import threading
import types
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from .deps import definitions_of_tree, imports_of_tree

#: Sources shorter than this are compiled whole: one compile call is cheapest.
MIN_LINES = 20
#: Sources of MIN_LINES up to this many lines are compiled whole the first time
#: their module is compiled (compiling every piece anew costs up to ~1.8x one
#: whole compile for short pieces) and piece by piece from then on, when most
#: pieces are usually unchanged; longer sources always go piece by piece.
ALWAYS_LINES = 200
#: Pieces joined while looking for one that parses; past this the source is
#: compiled whole (a syntax error, or a long run of column-0 text in a string).
MAX_JOIN = 64
#: Modules whose pieces are kept (least recently compiled out first).
CACHE_MODULES = 256
_CUT = re.compile(r"^(?![\s#)\]}]|(?:else|elif|except|finally)\b)", re.M)
#: The same cut found from the newline before it (a literal the search can skip to).
_CUT_AFTER_NEWLINE = re.compile(r"\n(?![\s#)\]}]|(?:else|elif|except|finally)\b)")
_BASE_NAME = "<sandbox piece>"
#: Called with (text, tree) of each piece parsed here (set by ``engine.impact``).
ANALYSED: Callable[[str, ast.Module, types.CodeType], None] | None = None
#: Called with (old text, new text) when a piece's analysis is carried over.
CARRIED: Callable[[str, str], None] | None = None
#: Called with (module, piece texts) when a module's newest pieces are kept.
KEPT: Callable[[str, list[str]], None] | None = None
_DEF_LINE = re.compile(r"^([ \t]*)(?:async[ \t]+)?def[ \t]", re.M)
_HEADER = re.compile(r"(?:@|class[ \t]|def[ \t]|async[ \t])")


@dataclass(frozen=True)
class Piece:
    code: types.CodeType          # compiled at line 1 under a placeholder file name
    lines: int                    # newlines in the text
    imports: frozenset[str]
    defines: frozenset[str]
    futures: bool = False         # holds a from __future__ import
    opening: bool = False         # holds nothing but a docstring and future imports


class _Incomplete:
    """Cache value of a text that does not parse on its own (joined to the next)."""


INCOMPLETE = _Incomplete()


class PieceCache:
    """Per module name, the pieces of the version compiled last (text -> Piece or INCOMPLETE).

    Only the newest version's pieces are kept, so the cache holds about one
    copy of each module's code however many edits it sees; compiling an
    older version again (a rollback) misses and compiles its changed pieces.
    """

    def __init__(self, max_modules: int = CACHE_MODULES) -> None:
        self.max_modules = max_modules
        self._modules: OrderedDict[str, dict[tuple[bool, str], Piece | _Incomplete]] = \
            OrderedDict()
        self._lock = threading.Lock()

    def pieces_of(self, module: str) -> dict[tuple[bool, str], Piece | _Incomplete]:
        with self._lock:
            found = self._modules.get(module)
            if found is not None:
                self._modules.move_to_end(module)
            return found or {}

    def seen(self, module: str) -> bool:
        """Whether ``module`` was compiled before (its entry may hold no pieces yet)."""
        with self._lock:
            return module in self._modules

    def keep(self, module: str, pieces: dict[tuple[bool, str], Piece | _Incomplete]) -> None:
        with self._lock:
            self._modules[module] = pieces
            self._modules.move_to_end(module)
            while len(self._modules) > self.max_modules:
                self._modules.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._modules.clear()

    def __len__(self) -> int:
        """Pieces held, over all modules."""
        with self._lock:
            return sum(len(p) for p in self._modules.values())


CACHE = PieceCache()


@functools.lru_cache(maxsize=64)
def _fragments(source: str) -> tuple[str, ...]:
    """The source cut before each line that may start a top-level statement (cached:
    a reload cuts the same source for compiling and for ``engine.impact``)."""
    starts = [m.start() + 1 for m in _CUT_AFTER_NEWLINE.finditer(source)]
    if not starts or _CUT.match(source):
        starts.insert(0, 0)
    else:
        starts[0] = 0     # leading comments and blank lines go with the first statement
    ends = starts[1:] + [len(source)]
    return tuple(source[a:b] for a, b in zip(starts, ends) if b > a)


def stem(text: str) -> str:
    """``text`` without the comment and blank lines that end it (``text`` itself, the
    same object, when no comment ends it).  When the stem parses, those lines are
    comments after complete statements: the text compiles to the stem's code, so an
    edit of a trailing comment compiles nothing."""
    end = len(text)
    comment = False
    while end:
        start = text.rfind("\n", 0, end - 1) + 1
        line = text[start:end].lstrip()
        if line and not line.startswith("#"):
            break
        comment = comment or bool(line)
        end = start
    return text[:end] if comment and end else text


def _is_future(node: ast.stmt) -> bool:
    return isinstance(node, ast.ImportFrom) and node.module == "__future__"


def _is_docstring(node: ast.stmt) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) \
        and isinstance(node.value.value, str)


def future_flags(fragments: list[str]) -> int:
    """Compiler flags of the ``from __future__`` imports that open a module."""
    flags = 0
    for i, frag in enumerate(fragments):
        try:
            body = ast.parse(frag).body
        except (SyntaxError, ValueError):
            return flags
        for j, node in enumerate(body):
            if i == 0 and j == 0 and _is_docstring(node):
                continue        # the docstring may come first
            if not isinstance(node, ast.ImportFrom) or node.module != "__future__":
                return flags
            for alias in node.names:
                feature = getattr(__future__, alias.name, None)
                flags |= getattr(feature, "compiler_flag", 0)
    return flags


def _compile_piece(text: str, first: bool, flags: int = 0) -> Piece | None:
    try:
        tree = ast.parse(text, _BASE_NAME)
    except (SyntaxError, ValueError):
        return None
    body = tree.body
    if "global" in text and any(isinstance(n, ast.Global) for n in _module_level(body)):
        return None   # Python checks a module-level global against the whole module
    futures = "__future__" in text and any(_is_future(n) for n in body)
    opening = all(_is_future(n) or (first and i == 0 and _is_docstring(n))
                  for i, n in enumerate(body))
    if not first and body and isinstance(body[0], ast.Expr) \
            and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
        # Only a module's first statement is its docstring.
        stub = ast.Pass()
        ast.copy_location(stub, body[0])
        body.insert(0, stub)
    try:
        code = compile(tree, _BASE_NAME, "exec", flags=flags, dont_inherit=True)
    except (SyntaxError, ValueError):
        return None
    if ANALYSED is not None:
        ANALYSED(text, tree, code)   # what it binds and reads (engine.impact keeps it)
    return Piece(code, text.count("\n"), imports_of_tree(tree), definitions_of_tree(tree),
                 futures, opening)


def _module_level(body: list[ast.stmt]) -> list[ast.stmt]:
    """Statements that run in the module's scope (not inside defs or classes)."""
    out: list[ast.stmt] = []
    todo = list(body)
    while todo:
        node = todo.pop()
        out.append(node)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        for field in ("body", "orelse", "finalbody"):
            todo.extend(getattr(node, field, None) or ())
        for h in getattr(node, "handlers", ()) or ():
            todo.extend(h.body)
        for case in getattr(node, "cases", ()) or ():
            todo.extend(case.body)
    return out


_BLOCK = 2048


def _last_def(text: str, end: int) -> re.Match[str] | None:
    """The last line before ``end`` that opens a ``def`` (found from the end: no scan of
    every line above)."""
    pos = end
    while True:
        i = text.rfind("def", 0, pos)
        if i < 0:
            return None
        m = _DEF_LINE.match(text, text.rfind("\n", 0, i) + 1, end)
        if m is not None:
            return m
        pos = i


def _common(a: str, b: str, suffix: bool) -> int:
    """Length of the common prefix (or suffix) of two strings: block by block, then a
    binary search inside the first block that differs (each slice copied once)."""
    n = min(len(a), len(b))
    la, lb = len(a), len(b)
    k = 0
    if suffix:
        while k < n and a[la - min(n, k + _BLOCK):la - k] == b[lb - min(n, k + _BLOCK):lb - k]:
            k = min(n, k + _BLOCK)
    else:
        while k < n and a[k:k + _BLOCK] == b[k:k + _BLOCK]:
            k = min(n, k + _BLOCK)
    lo, hi = k, min(n, k + _BLOCK)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        same = a[la - mid:la - k] == b[lb - mid:lb - k] if suffix else a[k:mid] == b[k:mid]
        lo, hi = (mid, hi) if same else (lo, mid - 1)
    return lo


def body_edit(old: str, new: str) -> bool:
    """Whether ``new`` differs from ``old`` only inside one function's body, in lines
    that neither import, define, decorate nor open or close a string: what the
    statement binds, imports and reads at import time is then that of ``old``."""
    p = _common(old, new, False)
    q = _common(old[p:], new[p:], True)
    start = new.rfind("\n", 0, p) + 1
    above = _last_def(new, start)
    if above is None:
        return False
    depth = len(above.group(1).expandtabs())
    # still inside that function: no line between its header and the edit is back at
    # its own depth (a one-line def followed by a class-level statement is not)
    for ln in new[new.find("\n", above.end()) + 1:start].split("\n"):
        body = ln.lstrip()
        if body and not body.startswith("#") and len(ln) - len(body) <= depth:
            return False
    for text, end in ((old, len(old) - q), (new, len(new) - q)):
        stop = text.find("\n", end)
        region = text[start:len(text) if stop < 0 else stop]
        if '"""' in region or "'''" in region or "import" in region:
            return False
        for ln in region.split("\n"):
            body = ln.lstrip()
            if not body or body.startswith("#"):
                continue
            if len(ln) - len(body) <= depth or _HEADER.match(body):
                return False
    return True


def _carried(text: str, first: bool, flags: int, known: dict[tuple[bool, str],
             Piece | _Incomplete]) -> Piece | None:
    """A piece for ``text`` from the cached piece it edits inside a function body: its
    analysis carried over, its text compiled without building a syntax tree."""
    if len(text) < 4096 or not _HEADER.match(text):
        return None
    head = text[:text.find("\n") + 1]
    for (was_first, key), old in known.items():
        if was_first != first or not isinstance(old, Piece):
            continue
        old_text = key.partition("\0")[2] if flags else key
        if old_text.startswith(head) and old_text != text and body_edit(old_text, text):
            code = _spliced(old.code, old_text, text, flags)
            if code is None:
                try:
                    code = compile(text, _BASE_NAME, "exec", flags=flags, dont_inherit=True)
                except (SyntaxError, ValueError):
                    return None
            if CARRIED is not None:
                CARRIED(old_text, text)
            return Piece(code, text.count("\n"), old.imports, old.defines, old.futures,
                         old.opening)
    return None


_CLASS_LINE = re.compile(r"^([ \t]*)class[ \t]+(\w+)[ \t]*[(:]")
_SELF_SET = re.compile(r"\bself\.(\w+)[ \t]*(?:[-+*/%&|^@]|//|\*\*|<<|>>)?=(?!=)")


@functools.lru_cache(maxsize=16)
def _less_indented(depth: int) -> re.Pattern[str]:
    """Lines indented by fewer than ``depth`` characters, up to their first character
    (blank and comment lines left out)."""
    return re.compile(r"^[ \t]{0,%d}(?=[^ \t\r\n#])" % (depth - 1), re.M)


def _spliced(code: types.CodeType, old: str, new: str, flags: int) -> types.CodeType | None:
    """``code`` (compiled from ``old``) with the one function whose body ``new`` edits
    compiled alone and put in its place: what compiling ``new`` whole gives, for the
    cost of that function (a one-method edit of a 1,600-line class compiles the
    method).  None when that does not hold for sure: the line count changed, the
    function is nested in another function, a class has type parameters, the edit
    touches the function's last line, or (3.13+) the edit changes which ``self.``
    attributes the method assigns."""
    if old.count("\n") != new.count("\n"):
        return None
    p = _common(old, new, False)
    start = new.rfind("\n", 0, p) + 1
    lines = new.split("\n")
    edit_line = new.count("\n", 0, start)               # 0-based
    above = _last_def(new, start)
    if above is None:
        return None
    def_at = new.count("\n", 0, above.start())
    depth = len(above.group(1).expandtabs())
    first = def_at
    while first > 0 and lines[first - 1].strip().startswith("@") and \
            len(lines[first - 1]) - len(lines[first - 1].lstrip()) == len(above.group(1)):
        first -= 1
    last = def_at + 1                                    # the function's lines: [first, last)
    while last < len(lines):
        body = lines[last].lstrip()
        if body and not body.startswith("#") and len(lines[last]) - len(body) <= depth:
            break
        last += 1
    q = _common(old[p:], new[p:], True)
    edit_end = new.count("\n", 0, max(start, len(new) - q))
    code_end = max(i for i in range(first, last)
                   if lines[i].strip() and not lines[i].lstrip().startswith("#"))
    # the statements around it record where it ends (to the column): an edit of its
    # last line would change them too
    if not first <= edit_line <= edit_end < code_end:
        return None
    # the scopes around it: classes only (a function around it would give it free
    # variables that compiling it alone cannot)
    chain: list[str] = []
    want = depth
    end = above.start() - sum(len(lines[i]) + 1 for i in range(first, def_at))
    while want:
        # the nearest line above that is less indented (not blank, not a comment)
        found = collections.deque(_less_indented(want).finditer(new, 0, end), maxlen=1)
        if not found:
            return None
        at = found[0].start()
        ln = new[at:new.find("\n", at)]
        indent = found[0].end() - at
        m = _CLASS_LINE.match(ln)
        if m is None or "[" in ln.split("(")[0]:
            return None
        chain.append(ln[:indent] + f"class {m.group(2)}:")
        want, end = indent, at
    chain.reverse()
    if len(chain) > first:
        return None
    func = lines[first:last]
    if sys.version_info >= (3, 13) and chain:
        old_func = old.split("\n")[first:last]
        if set(_SELF_SET.findall("\n".join(func))) != set(_SELF_SET.findall("\n".join(old_func))):
            return None
    text = "\n" * (first - len(chain)) + "\n".join(chain + func) + "\n"
    try:
        alone = compile(text, _BASE_NAME, "exec", flags=flags, dont_inherit=True)
    except (SyntaxError, ValueError):
        return None
    fresh = _find(alone, lambda c: c.co_firstlineno == first + 1 and _is_function(c))
    if fresh is None:
        return None
    target = fresh.co_qualname
    return _replace(code, lambda c: c.co_qualname == target and c.co_firstlineno == first + 1
                    and _is_function(c), fresh)


def _is_function(code: types.CodeType) -> bool:
    return bool(code.co_flags & 0x1) and not code.co_name.startswith("<")


def _find(code: types.CodeType, pred: Callable[[types.CodeType], bool]
          ) -> types.CodeType | None:
    for c in code.co_consts:
        if type(c) is types.CodeType:
            if pred(c):
                return c
            hit = _find(c, pred)
            if hit is not None:
                return hit
    return None


def _replace(code: types.CodeType, pred: Callable[[types.CodeType], bool],
             new: types.CodeType) -> types.CodeType | None:
    """``code`` with the one nested code ``pred`` selects replaced by ``new``."""
    consts = list(code.co_consts)
    for i, c in enumerate(consts):
        if type(c) is not types.CodeType:
            continue
        if pred(c):
            if c.co_freevars != new.co_freevars or c.co_name != new.co_name:
                return None
            consts[i] = new
            return code.replace(co_consts=tuple(consts))
        inner = _replace(c, pred, new)
        if inner is not None:
            consts[i] = inner
            return code.replace(co_consts=tuple(consts))
    return None


def _moved(code: types.CodeType, filename: str, delta: int) -> types.CodeType:
    consts = code.co_consts
    for c in consts:
        if type(c) is types.CodeType:
            consts = tuple(_moved(k, filename, delta) if type(k) is types.CodeType else k
                           for k in consts)
            break
    if delta and "__firstlineno__" in code.co_names:
        moved = _class_first_line(code, consts, delta)
        if moved is not None:
            return moved.replace(co_filename=filename,
                                 co_firstlineno=code.co_firstlineno + delta)
    return code.replace(co_filename=filename, co_firstlineno=code.co_firstlineno + delta,
                        co_consts=consts)


_OPS = __import__("dis").opmap
_LOAD_CONST = _OPS["LOAD_CONST"]
_LOAD_SMALL_INT = _OPS.get("LOAD_SMALL_INT", -1)      # 3.14+: the int is the argument
_STORE_NAME = _OPS["STORE_NAME"]
_EXTENDED_ARG = _OPS["EXTENDED_ARG"]


def _class_first_line(code: types.CodeType, consts: tuple[object, ...],
                      delta: int) -> types.CodeType | None:
    """A class body whose ``__firstlineno__`` (3.13+) moved by ``delta`` lines.

    The compiler stores the class's first line as a constant at the top of its
    body (``LOAD_CONST n; STORE_NAME __firstlineno__``), which ``inspect.getsource``
    reads; moving the code must move that number too.  The new number is added as a
    constant of its own (a constant equal to the old line may serve other
    statements too).  None when the body does not have that shape.
    """
    raw = bytearray(code.co_code)
    names = code.co_names
    for i in range(2, len(raw), 2):
        if raw[i] != _STORE_NAME or names[raw[i + 1]] != "__firstlineno__":
            continue
        op, arg = raw[i - 2], raw[i - 1]
        if i >= 4 and raw[i - 4] == _EXTENDED_ARG:
            return None
        first = consts[arg] if op == _LOAD_CONST else None
        if isinstance(first, int):
            line = first + delta
        elif op == _LOAD_SMALL_INT:
            line = arg + delta
        else:
            return None
        if op == _LOAD_SMALL_INT and 0 <= line < 256:
            raw[i - 1] = line
        else:
            if len(consts) > 255:
                return None
            raw[i - 2], raw[i - 1] = _LOAD_CONST, len(consts)
            consts = (*consts, line)
        return code.replace(co_code=bytes(raw), co_consts=consts)
    return None


@dataclass
class Pieces:
    codes: tuple[types.CodeType, ...]
    imports: frozenset[str]
    defines: frozenset[str]
    reused: int                   # pieces whose code came from the cache
    texts: tuple[str, ...] = ()   # each code's text


def compile_pieces(source: str, filename: str, module: str,
                   cache: PieceCache = CACHE) -> Pieces | None:
    """The source as code objects to run in order, or None to compile it whole.

    None when the source is short, is compiled for the first time under this
    module name and is not long, uses ``from __future__``, or a piece does not
    parse even after joining (the whole compile then reports the error).
    """
    lines = source.count("\n")
    if lines < MIN_LINES or "\r" in source:
        return None
    if lines < ALWAYS_LINES and not cache.seen(module):
        cache.keep(module, {})      # seen: its next version goes piece by piece
        return None
    known = cache.pieces_of(module)
    fragments = _fragments(source)
    flags = future_flags(list(fragments[:8])) if "__future__" in source else 0
    used: dict[tuple[bool, str], Piece | _Incomplete] = {}
    codes: list[types.CodeType] = []
    texts: list[str] = []
    imports: set[str] = set()
    defines: set[str] = set()
    line = 0
    pending = ""
    joined = 0
    reused = 0
    opening = True      # every piece so far held only a docstring and future imports
    for frag in fragments:
        text = pending + frag if pending else frag
        key = (not codes, f"{flags:x}\0{text}" if flags else text)
        piece = known.get(key)
        core, fresh = text, False
        if piece is None:
            core = stem(text)
            if core is not text:
                # trailing comment lines: the stem's code, if the stem parses
                ckey = (key[0], f"{flags:x}\0{core}" if flags else core)
                found = known.get(ckey)
                if found is None:
                    found = _carried(core, key[0], flags, known) or _compile_piece(
                        core, key[0], flags)
                    fresh = True
                if isinstance(found, Piece):
                    piece, key = found, ckey
                else:
                    core, fresh = text, False
        if piece is None:
            piece = (_carried(text, key[0], flags, known)
                     or _compile_piece(text, key[0], flags) or INCOMPLETE)
        elif not fresh:
            reused += isinstance(piece, Piece)
        used[key] = piece
        if isinstance(piece, _Incomplete):
            pending = text
            joined += 1
            if joined > MAX_JOIN:
                return None
            continue
        pending, joined = "", 0
        if piece.futures and not opening:
            return None     # a future import after other code: the whole compile refuses it
        opening = opening and piece.opening
        codes.append(_moved(piece.code, filename, line))
        texts.append(text)
        line += piece.lines if core is text else text.count("\n")
        imports |= piece.imports
        defines |= piece.defines
    if pending:
        return None
    cache.keep(module, used)
    if KEPT is not None:
        KEPT(module, [k[1].partition("\0")[2] if flags else k[1] for k in used])
    return Pieces(tuple(codes), frozenset(imports), frozenset(defines), reused, tuple(texts))
