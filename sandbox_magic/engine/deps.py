"""Which sandbox modules import which: static analysis of module sources.

Imports are found anywhere in the module (also inside functions, marked as
such), in every form a sandbox module may use for a sibling or a package's
submodule: ``import counter``, ``import counter as c``, ``from counter import
Counter``, ``from . import counter``, ``from ..pkg.sub import x``.  Names that
are not sandbox modules are ignored.  Which importers a change reaches is
``engine.impact``'s job.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping

from ..errors import CircularDependencyError
from .layout import packages_of


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
    """What ``tree`` imports, as module names to resolve against the sandbox.

    ``import a.b`` gives ``a.b``; ``from a import x`` gives ``a`` and ``a.x``
    (``x`` may be a submodule); relative imports keep their dots (``from . import
    x`` gives ``.x``, ``from ..m import y`` gives ``..m`` and ``..m.y``).  A name
    imported only inside functions is marked ``~name`` (:data:`DEFERRED`):
    Python runs that import when the function is called, so it neither orders
    module bodies nor closes an import cycle.  :func:`graph_of` resolves them.
    """
    eager: set[str] = set()
    deferred: set[str] = set()
    todo: list[tuple[ast.stmt, bool]] = [(st, False) for st in reversed(tree.body)]
    while todo:
        node, inside = todo.pop()
        found = deferred if inside else eager
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            if node.module:
                found.add(base)
            sep = "." if node.module else ""
            found.update(base + sep + a.name for a in node.names if a.name != "*")
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
    """First components of the imported names (relative ones without their dots),
    deferred or not: names this code may expect to import."""
    return frozenset(n.lstrip(DEFERRED).lstrip(".").split(".")[0] for n in imports) - {""}


def resolve_import(spec: str, module: str, packages: frozenset[str]) -> str | None:
    """The absolute name an import spec of ``module`` refers to (None: above the root)."""
    spec = spec.lstrip(DEFERRED)
    if not spec.startswith("."):
        return spec
    rest = spec.lstrip(".")
    level = len(spec) - len(rest)
    base = module if module in packages else module.rpartition(".")[0]
    for _ in range(level - 1):
        if not base:
            return None
        base = base.rpartition(".")[0]
    return f"{base}.{rest}" if base and rest else (base or rest)


def _prefixes(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def dependency_graph(sources: Mapping[str, str], *,
                     deferred: bool = False) -> dict[str, set[str]]:
    """``{module: {sibling modules it imports}}`` for the given sources (see graph_of)."""
    return graph_of({m: imported_names(src) for m, src in sources.items()}, deferred=deferred)


def graph_of(imports: Mapping[str, frozenset[str]], *,
             deferred: bool = False) -> dict[str, set[str]]:
    """``{module: {sandbox modules it imports}}`` from each module's imports.

    Only imports that run with the module body count, unless ``deferred``
    (then imports inside functions count too).  Importing ``a.b`` imports the
    package ``a`` too, except for a module's own packages (Python has started
    them before the module runs).
    """
    names = frozenset(imports)
    return {m: set(_deps(m, specs, names, deferred)) for m, specs in imports.items()}


@functools.lru_cache(maxsize=4096)
def _deps(m: str, specs: frozenset[str], names: frozenset[str],
          deferred: bool) -> frozenset[str]:
    """The modules among ``names`` that ``m`` imports (cached: a reload asks again for
    every module whose imports did not change)."""
    packages = _packages(names)
    deps: set[str] = set()
    for spec in specs:
        if spec.startswith(DEFERRED) and not deferred:
            continue
        target = resolve_import(spec, m, packages)
        if target is None:
            continue
        for name in _prefixes(target):
            if name in names and name != m and not m.startswith(name + "."):
                deps.add(name)
    return frozenset(deps)


@functools.lru_cache(maxsize=64)
def _packages(names: frozenset[str]) -> frozenset[str]:
    return frozenset(packages_of(names))


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
    return load_order(graph)


def load_order(graph: Mapping[str, Iterable[str]]) -> list[str]:
    """Dependencies first, like :func:`topological_order`, but a cycle is no error:
    its modules are ordered as Python would meet them from the first one by name
    (the body that imports a module still running sees it partly initialised)."""
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
