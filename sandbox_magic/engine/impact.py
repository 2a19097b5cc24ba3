"""Which modules a change reaches: dependents re-run only when their import-time code
could see the change.

A reload patches functions and classes in place, so a module that imported them
keeps working with the new code without running again.  It must run again only
when what its body computed while importing could differ: it uses a changed name
while its body runs (calls a changed function, subclasses a changed class, reads a
changed constant), or it bound a changed name that is a value (``from config import
STEP``: the new ``STEP`` is a new object), or it imports everything (``import *``).
Imports inside functions run at call time and reach the live module: they never
need a re-run.

The analysis is static and per top-level statement (the pieces that
``engine.chunks`` compiles), cached by statement text, so an edit costs the
analysis of the statements it changed.  The names a change touches are closed
over the module's own import-time code (``X = f()`` after a change of ``f``
changes ``X``).  Whatever the analysis cannot read (a statement that does not
parse alone, ``exec`` of strings at import) makes every importer run again, as
before: the fallback is the safe answer.
"""

from __future__ import annotations

import ast
import threading
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from . import chunks
from .chunks import MAX_JOIN, _fragments
from .deps import resolve_import

_CACHE_MAX = 8192
_cache: OrderedDict[str, Stmt | None] = OrderedDict()
_lock = threading.Lock()


@dataclass(frozen=True)
class Stmt:
    """What one top-level statement binds and reads while the module body runs."""

    defines: frozenset[str]       # names it binds in the module
    in_place: frozenset[str]      # of those, bound by def or class (patched in place)
    uses: frozenset[str]          # names read at import time, and "alias.attr" reads
    later: frozenset[str]         # names its functions read when called
    # (absolute or relative module spec, imported name or None, the name it binds)
    imports: tuple[tuple[str, str | None, str], ...]
    alias: tuple[str, str] | None = None    # ``A = B``: A is the object B is


class _Reads(ast.NodeVisitor):
    """Names read while a statement runs at module level (function bodies excluded)."""

    def __init__(self) -> None:
        self.uses: set[str] = set()
        self.opaque = False

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self.uses.add(node.id)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.value, ast.Name) and isinstance(node.ctx, ast.Load):
            self.uses.add(f"{node.value.id}.{node.attr}")
        else:
            self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        if isinstance(node.func, ast.Name) and node.func.id in ("exec", "eval", "globals",
                                                                  "vars", "__import__"):
            self.opaque = True
        self.generic_visit(node)

    def _signature(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        args = node.args
        for d in [*args.defaults, *[k for k in args.kw_defaults if k is not None]]:
            self.visit(d)
        if not isinstance(node, ast.Lambda):
            for a in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
                if a is not None and a.annotation is not None:
                    self.visit(a.annotation)
            if node.returns is not None:
                self.visit(node.returns)
            for d in node.decorator_list:
                self.visit(d)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._signature(node)          # the body runs when called, not at import

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._signature(node)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._signature(node)


def _body_reads(node: ast.AST) -> set[str]:
    """Every name read anywhere inside ``node`` (the bodies of its functions too)."""
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)
            and isinstance(n.ctx, ast.Load)}


def _bound(target: ast.AST, out: set[str]) -> None:
    if isinstance(target, ast.Name):
        out.add(target.id)
    elif isinstance(target, (ast.Tuple, ast.List)):
        for t in target.elts:
            _bound(t, out)
    elif isinstance(target, ast.Starred):
        _bound(target.value, out)


def _analyze_tree(tree: ast.Module) -> Stmt | None:
    defines: set[str] = set()
    in_place: set[str] = set()
    imports: list[tuple[str, str | None, str]] = []
    reads = _Reads()
    later: set[str] = set()
    todo = list(tree.body)
    while todo:
        node = todo.pop(0)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defines.add(node.name)
            in_place.add(node.name)
            later |= _body_reads(node)
            if isinstance(node, ast.ClassDef):
                for part in [*node.decorator_list, *node.bases, *node.keywords]:
                    reads.visit(part)
                for st in node.body:      # a class body runs at import
                    reads.visit(st)
            else:
                reads.visit(node)
            continue
        if isinstance(node, ast.Import):
            for a in node.names:
                bound = a.asname or a.name.split(".")[0]
                spec = a.name if a.asname else a.name.split(".")[0]
                imports.append((a.name if a.asname else spec, None, bound))
                defines.add(bound)
            continue
        if isinstance(node, ast.ImportFrom):
            spec = "." * node.level + (node.module or "")
            for a in node.names:
                if a.name == "*":
                    imports.append((spec, "*", "*"))
                    continue
                imports.append((spec, a.name, a.asname or a.name))
                defines.add(a.asname or a.name)
            continue
        if isinstance(node, (ast.Global, ast.Nonlocal)):
            return None
        if isinstance(node, ast.Assign) and len(tree.body) == 1 and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name) and isinstance(node.value, ast.Name):
            return Stmt(frozenset({node.targets[0].id}), frozenset(),
                        frozenset({node.value.id}), frozenset(), (),
                        (node.targets[0].id, node.value.id))
        for field in ("targets", "target"):
            value = getattr(node, field, None)
            for t in value if isinstance(value, list) else [value] if value else []:
                _bound(t, defines)
        if isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                if item.optional_vars is not None:
                    _bound(item.optional_vars, defines)
        if isinstance(node, (ast.If, ast.For, ast.AsyncFor, ast.While, ast.Try, ast.With,
                             ast.AsyncWith)) or type(node).__name__ in ("TryStar", "Match"):
            # a compound statement at module level: its test is read, its blocks run here
            for field in ("test", "iter", "subject"):
                value = getattr(node, field, None)
                if value is not None:
                    reads.visit(value)
            for item in getattr(node, "items", ()) or ():
                reads.visit(item.context_expr)
            blocks = [*getattr(node, "body", ()), *getattr(node, "orelse", ()),
                      *getattr(node, "finalbody", ())]
            for h in getattr(node, "handlers", ()) or ():
                if h.type is not None:
                    reads.visit(h.type)
                if h.name:
                    defines.add(h.name)
                blocks.extend(h.body)
            for case in getattr(node, "cases", ()) or ():
                blocks.extend(case.body)
            todo[:0] = blocks
            continue
        reads.visit(node)
    if reads.opaque:
        return None
    if later or any(isinstance(n, ast.Lambda) for n in ast.walk(tree)):
        later |= _body_reads(tree)     # (lambdas and nested functions read when called)
    return Stmt(frozenset(defines), frozenset(in_place - (defines - in_place)),
                frozenset(reads.uses), frozenset(later), tuple(imports))


_UNPARSED = object()


def analyze(text: str) -> Stmt | object | None:
    """The statement's analysis; ``_UNPARSED`` if the text does not parse alone, None if
    it parses but cannot be analysed.  Cached by text."""
    with _lock:
        if text in _cache:
            _cache.move_to_end(text)
            return _cache[text]
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        result: Stmt | object | None = _UNPARSED
    else:
        result = _analyze_tree(tree)
    with _lock:
        _cache[text] = result        # type: ignore[assignment]
        while len(_cache) > _CACHE_MAX:
            _cache.popitem(last=False)
    return result


def remember(text: str, tree: ast.Module) -> None:
    """Cache the analysis of a statement that was just parsed to compile it."""
    result = _analyze_tree(tree)
    with _lock:
        _cache[text] = result
        _cache.move_to_end(text)
        while len(_cache) > _CACHE_MAX:
            _cache.popitem(last=False)


def statements(source: str) -> list[tuple[str, Stmt]] | None:
    """The module's top-level statements (text, analysis), or None if one cannot be read."""
    out: list[tuple[str, Stmt]] = []
    pending = ""
    joined = 0
    for frag in _fragments(source):
        text = pending + frag if pending else frag
        result = analyze(text)
        if result is _UNPARSED:
            pending, joined = text, joined + 1
            if joined > MAX_JOIN:
                return None
            continue
        if result is None:
            return None
        assert isinstance(result, Stmt)
        pending, joined = "", 0
        out.append((text, result))
    return None if pending else out


def changed_names(old: str, new: str) -> frozenset[str] | None:
    """Names whose binding may differ after ``old`` becomes ``new`` (None: unknown)."""
    a, b = statements(old), statements(new)
    if a is None or b is None:
        return None
    before, after = Counter(t for t, _ in a), Counter(t for t, _ in b)
    changed: set[str] = set()
    for text, st in [*a, *b]:
        if before[text] != after[text]:
            changed |= st.defines
    # what reads them: import-time code computes other values from them, and a function
    # that reads a changed value when called behaves differently (one pass in order,
    # then until nothing more changes, for functions defined before what they read)
    while True:
        before_count = len(changed)
        for _, st in b:
            if _reads(st.uses, changed) or st.later & changed:
                changed |= st.defines
        if len(changed) == before_count:
            return frozenset(changed)


def _reads(uses: frozenset[str], names: Iterable[str]) -> bool:
    names = set(names)
    return any(u.partition(".")[0] in names for u in uses)


def in_place_names(source: str) -> frozenset[str]:
    """Names the source binds only by def or class (patched in place by a reload), or
    by ``A = B`` of such a name (the same object)."""
    st = statements(source) or []
    in_place = set().union(*(s.in_place for _, s in st)) if st else set()
    other = set().union(*(s.defines - s.in_place for _, s in st if s.alias is None)) \
        if st else set()
    in_place -= other
    for _, s in st:
        if s.alias is not None:
            if s.alias[1] in in_place:
                in_place.add(s.alias[0])
            else:
                in_place.discard(s.alias[0])
                other.add(s.alias[0])
    return frozenset(in_place - other)


def needs_rerun(dependent: str, source: str, changed_module: str,
                changed: frozenset[str] | None, in_place: frozenset[str],
                packages: frozenset[str]) -> bool:
    """Whether ``dependent`` (its current ``source``) must run again after
    ``changed_module`` changed the names ``changed``.

    It must when it bound a changed value, or when its import-time code reads a
    changed name, directly or through its own functions that read one when called.
    """
    if changed is None:
        return True
    if not changed:
        return False
    st = statements(source)
    if st is None:
        return True
    affected: set[str] = set()     # names of the dependent that now mean something else
    for _, s in st:
        for spec, name, alias in s.imports:
            target = resolve_import(spec, dependent, packages)
            if target is None:
                continue
            if name is None:
                # import mod [as alias]; import pkg.mod (reached through pkg)
                if target == changed_module or changed_module.startswith(target + "."):
                    affected.add(alias)
            elif name == "*":
                if target == changed_module:
                    if any(n not in in_place for n in changed):
                        return True     # a value, or a name added or removed
                    affected |= changed
            elif target == changed_module:
                if name in changed:
                    if name not in in_place:
                        return True     # it bound a value that is now another one
                    affected.add(alias)
            elif f"{target}.{name}" == changed_module:    # from pkg import module
                affected.add(alias)
    if not affected:
        return False
    modules = {alias for _, s in st for spec, name, alias in s.imports
               if name is None or (name != "*" and f"{resolve_import(spec, dependent, packages)}"
                                   f".{name}" == changed_module)}
    while True:         # its functions that read an affected name when called
        count = len(affected)
        for _, s in st:
            if s.later & affected:
                affected |= s.in_place
        if len(affected) == count:
            break
    for _, s in st:
        for u in s.uses:
            head, _, attr = u.partition(".")
            if head in affected and (head not in modules or not attr
                                     or attr.partition(".")[0] in changed):
                return True
    return False


def _values(source: str) -> frozenset[str] | None:
    """Names a module binds other than by def or class: what running it again rebinds
    (its functions and classes keep their identity)."""
    st = statements(source)
    if st is None:
        return None
    return frozenset().union(*(s.defines for _, s in st)) - in_place_names(source)


def cascade(graph: Mapping[str, set[str]], sources: Mapping[str, str],
            old_sources: Mapping[str, str], changed_modules: Iterable[str],
            packages: frozenset[str]) -> set[str]:
    """The importers (direct or through re-run modules) that must run again.

    ``graph`` holds the import-time edges; ``sources`` the new source of every module
    (the current one where unchanged), ``old_sources`` the current source of the
    changed modules (missing: new module).
    """
    importers: dict[str, set[str]] = {}
    for mod, deps in graph.items():
        for d in deps:
            importers.setdefault(d, set()).add(mod)
    todo: list[tuple[str, frozenset[str] | None, frozenset[str]]] = []
    for m in changed_modules:
        if not importers.get(m):
            continue            # nothing imports it: nothing to decide
        old = old_sources.get(m)
        if old is None:
            names = None
        elif old == sources[m]:     # run again as it is: its values are made anew
            names = _values(sources[m])
        else:
            names = changed_names(old, sources[m])
        todo.append((m, names, in_place_names(sources[m]) & in_place_names(old or "")))
    done = set(changed_modules)
    out: set[str] = set()
    while todo:
        m, names, in_place = todo.pop()
        for d in sorted(importers.get(m, ())):
            if d in done or d not in sources:
                continue
            if needs_rerun(d, sources[d], m, names, in_place, packages):
                done.add(d)
                out.add(d)
                todo.append((d, _values(sources[d]), in_place_names(sources[d])))
    return out


def carry(old_text: str, new_text: str) -> None:
    """``new_text`` edits ``old_text`` inside a function body: same analysis."""
    with _lock:
        if old_text in _cache:
            _cache[new_text] = _cache[old_text]
            while len(_cache) > _CACHE_MAX:
                _cache.popitem(last=False)


chunks.ANALYSED = remember
chunks.CARRIED = carry
