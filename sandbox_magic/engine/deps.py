"""Which sandbox modules import which: static analysis of module sources.

Imports are found anywhere in the module (also inside functions), in every
form a sandbox module may use for a sibling: ``import counter``,
``import counter as c``, ``from counter import Counter`` and ``from . import
counter``.  Names that are not sandbox modules are ignored.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping

from ..errors import CircularDependencyError


def _cached_per_source(fn: Callable[[str], frozenset[str]]) -> Callable[[str], frozenset[str]]:
    """Cache ``fn(source)`` under the source's sha256, so no source is kept alive here."""
    cache: OrderedDict[bytes, frozenset[str]] = OrderedDict()
    lock = threading.Lock()

    @functools.wraps(fn)
    def cached(source: str) -> frozenset[str]:
        key = hashlib.sha256(source.encode("utf-8", "surrogatepass")).digest()
        with lock:
            found = cache.get(key)
            if found is not None:
                cache.move_to_end(key)
                return found
        value = fn(source)
        with lock:
            cache[key] = value
            while len(cache) > 4096:
                cache.popitem(last=False)
        return value

    return cached


@_cached_per_source
def imported_names(source: str) -> frozenset[str]:
    """Top-level module names a source imports (absolute and ``from .``); cached per source."""
    try:
        return imports_of_tree(ast.parse(source))
    except SyntaxError:
        return frozenset()


#: Marks a module imported only inside functions (run at call time, not at import).
DEFERRED = "~"
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


def imports_of_tree(tree: ast.Module) -> frozenset[str]:
    """Top-level names of the modules ``tree`` imports.

    A module imported only inside functions is listed as ``~name``
    (:data:`DEFERRED`): Python runs that import when the function is called, so
    it neither orders module bodies nor closes an import cycle.
    """
    eager: set[str] = set()
    deferred: set[str] = set()
    todo: list[tuple[ast.stmt, bool]] = [(st, False) for st in reversed(tree.body)]
    while todo:
        node, inside = todo.pop()
        found = deferred if inside else eager
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 1 and node.module is None:
                found.update(a.name for a in node.names)
            elif node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
        nested = inside or isinstance(node, _FUNCTIONS)
        for field in ("body", "orelse", "finalbody"):
            sub = getattr(node, field, None)
            if sub:
                todo.extend((st, nested) for st in reversed(sub))
        for h in getattr(node, "handlers", ()) or ():
            todo.extend((st, nested) for st in reversed(h.body))
        for case in getattr(node, "cases", ()) or ():
            todo.extend((st, nested) for st in reversed(case.body))
    return frozenset(eager | {DEFERRED + n for n in deferred - eager})


def module_names(imports: frozenset[str]) -> frozenset[str]:
    """The imported module names, deferred or not."""
    return frozenset(n.lstrip(DEFERRED) for n in imports)


def dependency_graph(sources: Mapping[str, str], *,
                     deferred: bool = False) -> dict[str, set[str]]:
    """``{module: {sibling modules it imports}}`` for the given sources (see graph_of)."""
    return graph_of({m: imported_names(src) for m, src in sources.items()}, deferred=deferred)


def graph_of(imports: Mapping[str, frozenset[str]], *,
             deferred: bool = False) -> dict[str, set[str]]:
    """``{module: {sibling modules it imports}}`` from each module's imported names.

    Only imports that run with the module body count, unless ``deferred``
    (then imports inside functions count too).
    """
    names = set(imports)
    if deferred:
        return {m: set(module_names(imp) & names) - {m} for m, imp in imports.items()}
    return {m: set(imp & names) - {m} for m, imp in imports.items()}


def find_cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Every elementary cycle found by DFS, each closed (``["a", "b", "a"]``)."""
    cycles: list[list[str]] = []
    seen_keys: set[frozenset[str]] = set()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cyc = stack[stack.index(dep):] + [dep]
                key = frozenset(cyc)
                if key not in seen_keys:
                    seen_keys.add(key)
                    cycles.append(cyc)
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)
    return cycles


def topological_order(graph: Mapping[str, Iterable[str]]) -> list[str]:
    """Dependencies first; ties broken by name so the order is stable."""
    cycles = find_cycles(graph)
    if cycles:
        raise CircularDependencyError(cycles[0])
    order: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> None:
        if node in done:
            return
        done.add(node)
        for dep in sorted(graph.get(node, ())):
            visit(dep)
        order.append(node)

    for n in sorted(graph):
        visit(n)
    return order


def dependents_of(graph: Mapping[str, Iterable[str]], roots: Iterable[str]) -> set[str]:
    """Modules that import any of ``roots``, directly or transitively (roots excluded)."""
    reverse: dict[str, set[str]] = {}
    for mod, deps in graph.items():
        for d in deps:
            reverse.setdefault(d, set()).add(mod)
    roots = set(roots)
    out: set[str] = set()
    todo = list(roots)
    while todo:
        for user in reverse.get(todo.pop(), ()):
            if user not in out and user not in roots:
                out.add(user)
                todo.append(user)
    return out


@_cached_per_source
def defined_names(source: str) -> frozenset[str]:
    """Names a module binds at top level other than by importing them; cached per source."""
    try:
        return definitions_of_tree(ast.parse(source))
    except SyntaxError:
        return frozenset()


def definitions_of_tree(tree: ast.Module) -> frozenset[str]:
    names: set[str] = set()

    def targets(node: ast.AST) -> None:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
                names.add(sub.id)

    def block(stmts: list[ast.stmt]) -> None:
        for st in stmts:
            if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(st.name)
            elif isinstance(st, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                for t in (st.targets if isinstance(st, ast.Assign) else [st.target]):
                    targets(t)
            elif isinstance(st, (ast.For, ast.AsyncFor)):
                targets(st.target)
                block(st.body + st.orelse)
            elif isinstance(st, (ast.With, ast.AsyncWith)):
                for item in st.items:
                    if item.optional_vars is not None:
                        targets(item.optional_vars)
                block(st.body)
            elif isinstance(st, (ast.If, ast.While)):
                block(st.body + st.orelse)
            elif isinstance(st, ast.Try):
                block(st.body + st.orelse + st.finalbody)
                for h in st.handlers:
                    block(h.body)

    block(tree.body)
    return frozenset(n for n in names if not (n.startswith("__") and n.endswith("__")))
