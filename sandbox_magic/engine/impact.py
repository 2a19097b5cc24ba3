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
import functools
import threading
import types
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from . import chunks
from .chunks import MAX_JOIN, _fragments, body_edit, stem
from .deps import resolve_import

# Analyses by statement text: those of each module's newest compiled version (kept
# like engine.chunks keeps its pieces, so memory follows the modules, not the edits),
# and a small pool of recent ones (sources compiled whole, older versions).
_RECENT_MAX = 512
_MODULES_MAX = 256
_cache: OrderedDict[str, Stmt | object | None] = OrderedDict()
_by_module: OrderedDict[str, dict[str, Stmt | None]] = OrderedDict()
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
    #: names read only as a class statement's bases (also in ``uses``): subclassing
    #: runs none of the base's methods, unless its class-creation hooks
    bases: frozenset[str] = frozenset()


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


def _nested_names(code: types.CodeType) -> set[str]:
    """Global and attribute names read by the functions, lambdas and class bodies that
    ``code`` creates (from the compiled code: no walk over the syntax tree)."""
    out: set[str] = set()
    todo = [c for c in code.co_consts if isinstance(c, types.CodeType)]
    while todo:
        c = todo.pop()
        out.update(c.co_names)
        todo.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
    return out


def _analyze_tree(tree: ast.Module, code: types.CodeType | None = None) -> Stmt | None:
    defines: set[str] = set()
    in_place: set[str] = set()
    imports: list[tuple[str, str | None, str]] = []
    reads = _Reads()
    later: set[str] = set()
    base_names: set[str] = set()
    todo = list(tree.body)
    while todo:
        node = todo.pop(0)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defines.add(node.name)
            in_place.add(node.name)
            if code is None:
                later |= _body_reads(node)
            if isinstance(node, ast.ClassDef):
                for part in [*node.decorator_list, *node.keywords]:
                    reads.visit(part)
                for base in node.bases:
                    if isinstance(base, ast.Name):
                        base_names.add(base.id)
                    else:
                        reads.visit(base)
                for st in node.body:      # a class body runs at import
                    reads.visit(st)
            else:
                reads.visit(node)
            continue
        if isinstance(node, ast.Import):
            for a in node.names:
                bound = a.asname or a.name.split(".")[0]
                imports.append((a.name, None, bound))
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
    if code is not None:
        later = _nested_names(code)    # every function, lambda or class body it makes
    elif later or any(isinstance(n, ast.Lambda) for n in ast.walk(tree)):
        later |= _body_reads(tree)     # (lambdas and nested functions read when called)
    return Stmt(frozenset(defines), frozenset(in_place - (defines - in_place)),
                frozenset(reads.uses | base_names), frozenset(later), tuple(imports),
                bases=frozenset(base_names - reads.uses))


_UNPARSED = object()


def analyze(text: str) -> Stmt | object | None:
    """The statement's analysis; ``_UNPARSED`` if the text does not parse alone, None if
    it parses but cannot be analysed.  Cached by text (comment lines that end a text
    that parses without them change nothing: see ``chunks.stem``)."""
    core = stem(text)
    if core is not text:
        result = _analyze(core)
        if result is not _UNPARSED:
            return result
    return _analyze(text)


def _analyze(text: str) -> Stmt | object | None:
    with _lock:
        if text in _cache:
            _cache.move_to_end(text)
            return _cache[text]
        for kept in _by_module.values():
            if text in kept:
                return kept[text]
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        result: Stmt | object | None = _UNPARSED
    else:
        result = _analyze_tree(tree)
    with _lock:
        _cache[text] = result
        while len(_cache) > _RECENT_MAX:
            _cache.popitem(last=False)
    return result


def remember(text: str, tree: ast.Module, code: types.CodeType) -> None:
    """Cache the analysis of a statement that was just parsed and compiled."""
    result = _analyze_tree(tree, code)
    with _lock:
        _cache[text] = result
        _cache.move_to_end(text)
        while len(_cache) > _RECENT_MAX:
            _cache.popitem(last=False)


@functools.lru_cache(maxsize=256)
def statements(source: str) -> tuple[tuple[str, Stmt], ...] | None:
    """The module's top-level statements (text, analysis), or None if one cannot be read
    (kept for the sources analysed last: a reload asks for each of them several times)."""
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
    return None if pending else tuple(out)


def _refs(uses: Iterable[str], names: set[str], modules: set[str],
          touched: frozenset[str] | None) -> bool:
    """Whether reads ``uses`` reach ``names`` (bound from the changed module) or, through
    a module alias in ``modules``, an attribute in ``touched`` (None: any attribute)."""
    for u in uses:
        head, _, attr = u.partition(".")
        if head in names:
            return True
        if head in modules and (touched is None or not attr or attr.startswith("__")
                                or attr.partition(".")[0] in touched):
            return True
    return False


@functools.lru_cache(maxsize=256)
def stable_names(old: str | None, new: str) -> frozenset[str]:
    """Names that keep their object when ``new`` runs in place of ``old``: functions and
    classes (patched in place; a class only if the edit stays inside its methods, since
    a new layout, base or metaclass replaces it), and ``A = B`` of such a name."""
    a = statements(old) if old is not None else None
    b = statements(new)
    if b is None or (old is not None and a is None):
        return frozenset()
    before = {n: t for t, st in (a or []) for n in st.in_place}
    kept: set[str] = set()
    for text, st in b:
        for n in st.in_place:
            was = before.get(n) if old is not None else text
            if was == text or (was is not None and (text.lstrip().startswith(("def", "async"))
                                                    or body_edit(was, text))):
                kept.add(n)
    for _, st in b:       # every other binding of a name makes it a value
        for n in st.defines - st.in_place:
            if st.alias is None or st.alias[1] not in kept:
                kept.discard(n)
    for text, st in b:
        if st.alias is not None and st.alias[1] in kept and (
                old is None or text in {t for t, _ in a or []}):
            kept.add(st.alias[0])
    return frozenset(kept)


@functools.lru_cache(maxsize=1024)
def needs_rerun(dependent: str, source: str, changed_module: str, rerun: bool,
                touched: frozenset[str] | None, stable: frozenset[str],
                packages: frozenset[str],
                public: frozenset[str] | None = None,
                bases_safe: bool = False) -> tuple[bool, frozenset[str]]:
    """Whether ``dependent`` must run again after ``changed_module`` ran again (``rerun``:
    every value it holds is a new object) or had the behaviour of the names ``touched``
    change (its functions reach changed code); and, when it need not, which of its own
    names now reach changed code (for its importers).

    It must when it bound a value of a module that ran again, star-imported it, or when
    its import-time code reads a name it bound from it (directly or through its own
    functions that read one when called): that code could see other state now.
    """
    st = statements(source)
    if st is None or (rerun and touched is None):
        return True, frozenset()
    names: set[str] = set()      # its names bound from the changed module
    modules: set[str] = set()    # its names for the changed module itself
    for _, s in st:
        for spec, name, alias in s.imports:
            target = resolve_import(spec, dependent, packages)
            if target is None:
                continue
            if name is None:
                if target == changed_module and "." not in spec.lstrip("."):
                    modules.add(alias)        # import mod [as alias]
                elif target == changed_module and alias != spec.split(".")[0]:
                    modules.add(alias)        # import pkg.mod as alias
                elif target == changed_module or changed_module.startswith(target + "."):
                    names.add(alias)          # import pkg.mod binds pkg: any use reaches it
            elif name == "*":
                if target == changed_module:
                    bound = public if public is not None else None
                    if rerun and (bound is None or not bound <= stable):
                        return True, frozenset()   # it holds values that are now others
                    names |= (bound or set()) if rerun else (touched or set())
            elif target == changed_module:
                if rerun and name not in stable:
                    return True, frozenset()  # it holds a value that is now another one
                if rerun or (touched is not None and name in touched):
                    names.add(alias)
            elif f"{target}.{name}" == changed_module:
                modules.add(alias)            # from pkg import module
    if not names and not modules:
        return False, frozenset()
    filt = None if rerun else touched
    reach = set(names)
    bases_safe = bases_safe and not rerun
    _grow(st, reach, modules, filt, bases_safe)   # its own functions that reach them
    for _, s in st:
        if _read_at_import(s, reach, modules, filt, bases_safe):
            return True, frozenset()
    # (the names it bound from the changed module too: an importer of it that calls
    # one at import sees the change, though this module runs nothing)
    return False, frozenset(reach)


@functools.lru_cache(maxsize=256)
def public_names(source: str) -> frozenset[str] | None:
    """What ``from module import *`` binds: a literal ``__all__``, else every name the
    module binds that does not start with an underscore (None: cannot tell)."""
    st = statements(source)
    if st is None:
        return None
    for text, s in st:
        if "__all__" in s.defines:
            try:
                node = ast.parse(text).body[0]
            except (SyntaxError, ValueError, IndexError):
                return None
            value = getattr(node, "value", None)
            if not isinstance(node, ast.Assign) or not isinstance(value, (ast.List, ast.Tuple)):
                return None
            items = [e.value for e in value.elts
                     if isinstance(e, ast.Constant) and isinstance(e.value, str)]
            if len(items) != len(value.elts):
                return None
            return frozenset(str(i) for i in items)
    if any(name == "*" for _, s in st for _spec, name, _alias in s.imports):
        return None      # it re-exports what another module binds
    return frozenset(n for _, s in st for n in s.defines if not n.startswith("_"))


def _import_targets(spec: str, name: str | None, module: str,
                    packages: frozenset[str]) -> list[str]:
    """The modules an import statement of ``module`` may run: the one it names, the
    submodule it may name, and their packages."""
    t = resolve_import(spec, module, packages)
    if t is None:
        return []
    parts = t.split(".")
    out = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    if name not in (None, "*"):
        out.append(f"{t}.{name}")
    return out


_HIDDEN = ("exec", "eval", "__import__", "import_module")


@functools.lru_cache(maxsize=64)
def _hidden_imports(source: str) -> tuple[tuple[str, str | None], ...] | None:
    """Every import statement of a module whose statements cannot all be analysed
    (one binds names through ``globals()``, say), wherever it stands; None when code
    could import without a statement (``exec``, ``__import__``...) or it does not parse."""
    if any(word in source for word in _HIDDEN):
        return None
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    out: list[tuple[str, str | None]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((a.name, None) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            spec = "." * node.level + (node.module or "")
            out.extend((spec, a.name) for a in node.names)
    return tuple(out)


@functools.lru_cache(maxsize=512)
def _targets(module: str, source: str, packages: frozenset[str]) -> frozenset[str] | None:
    """The modules ``module``'s body imports (see :func:`_import_targets`); None: any."""
    st = statements(source)
    if st is not None:
        return frozenset(t for _, s in st for spec, name, _alias in s.imports
                         for t in _import_targets(spec, name, module, packages))
    hidden = _hidden_imports(source)
    if hidden is None:
        return None
    return frozenset(t for spec, name in hidden
                     for t in _import_targets(spec, name, module, packages))


def _importers(sources: Mapping[str, str], packages: frozenset[str]) -> dict[str, set[str]]:
    """``{module: modules whose body imports it}`` (a package's own modules included)."""
    out: dict[str, set[str]] = {}
    for d, src in sources.items():
        found = _targets(d, src, packages)
        targets = set(sources) - {d} if found is None else found   # None: it may import anything
        for t in targets:
            if t in sources and t != d:
                out.setdefault(t, set()).add(d)
    return out


def _grow(st: tuple[tuple[str, Stmt], ...], reach: set[str], modules: set[str],
          filt: frozenset[str] | None, bases_safe: bool) -> None:
    """Close ``reach`` over the functions that read a name of it when called, and (with
    ``bases_safe``, when nothing changed runs at class creation) the classes that inherit
    from one and the names bound to one by ``A = B``."""
    while True:
        count = len(reach)
        for _, s in st:
            if not s.defines <= reach and (
                    _refs(s.later, reach, modules, filt)
                    or (bases_safe and s.bases and _refs(s.bases, reach, set(), None))
                    or (bases_safe and s.alias is not None and s.alias[1] in reach)):
                reach |= s.defines
        if len(reach) == count:
            break


def _read_at_import(s: Stmt, reach: set[str], modules: set[str],
                    filt: frozenset[str] | None, bases_safe: bool) -> bool:
    if bases_safe and s.alias is not None:
        return False        # ``A = B`` runs nothing
    uses = s.uses - s.bases if bases_safe and s.bases else s.uses
    return _refs(uses, reach, modules, filt)


@functools.lru_cache(maxsize=256)
def reach_at_import(source: str, touched: frozenset[str],
                    bases_safe: bool = False) -> frozenset[str] | None:
    """The module's names whose behaviour changes when the functions (or the methods
    of the classes) named ``touched`` change, closed over its own functions; None when
    its import-time code reads one of them (or cannot be read).  ``bases_safe``: the
    change is in no class-creation hook, so subclassing a touched class reads nothing
    that changed (the subclass is touched then)."""
    st = statements(source)
    if st is None:
        return None
    reach = set(touched)
    _grow(st, reach, set(), None, bases_safe)
    for _, s in st:
        if _read_at_import(s, reach, set(), None, bases_safe):
            return None
    return frozenset(reach)


def cascade(graph: Mapping[str, set[str]], sources: Mapping[str, str],
            old_sources: Mapping[str, str], changed_modules: Iterable[str],
            packages: frozenset[str],
            in_place: Mapping[str, frozenset[str]] | None = None,
            bases_safe: bool = False) -> set[str]:
    """The importers (direct, or through modules whose functions reach changed code) that
    must run again.  ``sources`` holds the new source of every module (the current one
    where unchanged), ``old_sources`` the current source of the changed modules.
    ``in_place`` names modules that do not run again, with their names whose behaviour
    changed (see :func:`reach_at_import`, also for ``bases_safe``)."""
    importers = _importers(sources, packages)
    todo: list[tuple[str, bool, frozenset[str] | None, frozenset[str]]] = []
    in_place = in_place or {}
    order = [m for m in changed_modules if m not in in_place]
    changed_modules = set(order) | set(in_place)
    for m, names in in_place.items():
        todo.append((m, False, names, frozenset()))
    for m in order:
        if importers.get(m):
            old = old_sources.get(m)
            stable = stable_names(old, sources[m]) if old is not None else frozenset()
            todo.append((m, True, frozenset(), stable))
    out: set[str] = set()
    seen: dict[str, frozenset[str]] = {}

    def reached_through_package(d: str) -> None:
        """``import pkg.sub`` in a module that runs again binds ``pkg`` and reaches ``sub``
        through it: when ``sub`` runs again, ``pkg`` runs too (so that the body meets
        the staged ``sub`` on it, not the live one)."""
        for _, s in statements(sources[d]) or ():
            for spec, name, _alias in s.imports:
                if name is not None or "." not in spec or spec.startswith("."):
                    continue
                parts = spec.split(".")
                chain = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
                running = [c in out or c in changed_modules for c in chain]
                for i, c in enumerate(chain[:-1]):
                    if c in sources and not running[i] and any(running[i + 1:]):
                        out.add(c)
                        running[i] = True
                        todo.append((c, True, frozenset(), stable_names(sources[c], sources[c])))

    while todo:
        m, rerun, touched, stable = todo.pop()
        for d in sorted(importers.get(m, ())):
            running = d in out or d in changed_modules
            if running and rerun:
                continue        # it runs again anyway: nothing more to learn here
            again, reach = needs_rerun(d, sources[d], m, rerun, touched, stable, packages,
                                       public_names(sources[m]), bases_safe)
            if again:
                if not running:
                    out.add(d)
                    todo.append((d, True, frozenset(), stable_names(sources[d], sources[d])))
                    reached_through_package(d)
                if not rerun and m not in out and m not in changed_modules:
                    # d's body calls m's functions, which reach changed code through
                    # m's own imports: m runs again too, so that they see the new state
                    out.add(m)
                    todo.append((m, True, frozenset(), stable_names(sources[m], sources[m])))
            elif reach and not reach <= seen.get(d, frozenset()):
                seen[d] = seen.get(d, frozenset()) | reach
                todo.append((d, False, seen[d], frozenset()))
    return out


def carry(old_text: str, new_text: str) -> None:
    """``new_text`` edits ``old_text`` inside a function body: same analysis."""
    with _lock:
        found = _cache.get(old_text, _UNPARSED)
        if found is _UNPARSED:
            found = next((k[old_text] for k in _by_module.values() if old_text in k),
                         _UNPARSED)
        if found is not _UNPARSED:
            _cache[new_text] = found
            while len(_cache) > _RECENT_MAX:
                _cache.popitem(last=False)


def keep(module: str, texts: Iterable[str]) -> None:
    """``texts`` are the statements of ``module``'s newest compiled version: keep their
    analyses (and drop those of its older versions)."""
    with _lock:
        old = _by_module.pop(module, {})
        new: dict[str, Stmt | None] = {}
        for t in texts:
            found = old.get(t, _cache.get(t, _UNPARSED))
            if found is not _UNPARSED:
                new[t] = found  # type: ignore[assignment]
        _by_module[module] = new
        while len(_by_module) > _MODULES_MAX:
            _by_module.popitem(last=False)


chunks.ANALYSED = remember
chunks.CARRIED = carry
chunks.KEPT = keep
