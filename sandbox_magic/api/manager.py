"""ModuleVersionManager: version registration, export and dependency queries."""

from __future__ import annotations

from typing import Any

from ..engine.artifact import Artifact, compile_artifact
from ..engine.deps import dependency_graph, find_cycles, topological_order
from ..engine.reload import ReloadResult
from ..engine.versions import utcnow
from .registry import get_state
from .reloading import hot_reload, reload_modules


class ModuleVersionManager:
    """Version bookkeeping across sandboxes, mirroring the guide's manager."""

    @staticmethod
    def register_module_version(sandbox_id: str, module: str,
                                code: Artifact | bytes | str) -> int:
        """Record ``code`` as a version of ``module`` and return its number.

        Code identical to a retained version returns that version's number and
        loads nothing; new code is hot-reloaded and becomes the next version.
        """
        art = Artifact.of(code, module)
        st = get_state(sandbox_id)
        with st.lock:
            h = st.histories.get(module)
            if h is not None:
                same = h.find_checksum(art.checksum)
                if same is not None:
                    return same
            if art.module != module:
                art = compile_artifact(art.source, module)
            result = hot_reload(sandbox_id, art)
        assert result.new_version is not None
        return result.new_version

    @staticmethod
    def export_sandbox_modules(sandbox_id: str) -> dict[str, Any]:
        """Every module with its retained versions (newest first) and artifacts.

        Each version carries ``artifact`` bytes that :func:`hot_reload` accepts
        in any other sandbox.
        """
        st = get_state(sandbox_id)
        with st.lock:
            modules = {}
            for name, h in sorted(st.histories.items()):
                modules[name] = [
                    {"version": r.version, "checksum": r.checksum, "source": r.source,
                     "loaded_at": r.loaded_at, "is_current": r.version == h.current,
                     "state_handler": r.state_handler, "artifact": r.artifact.to_bytes()}
                    for r in sorted(h.records.values(), key=lambda r: -r.version)]
        return {"sandbox_id": sandbox_id, "exported_at": utcnow(), "modules": modules}

    @staticmethod
    def get_module_dependencies(modules: list[str] | None = None, *, sandbox_id: str,
                                deferred: bool = True) -> dict[str, set[str]]:
        """``{module: sibling modules it imports}`` for the given (default: all) modules.

        ``deferred=False`` leaves out imports made only inside functions (those
        run when the function is called, so they do not order module bodies).
        """
        st = get_state(sandbox_id)
        with st.lock:
            sources = {m: st.histories[m].current_record().source
                       for m in st.modules}
        graph = dependency_graph(sources, deferred=deferred)
        if modules is None:
            return graph
        for m in modules:
            st.get_module(m)
        return {m: graph[m] for m in modules}

    @staticmethod
    def calculate_reload_order(modules: list[str], *, sandbox_id: str) -> list[str]:
        """``modules`` ordered so that each comes after the sandbox modules it imports."""
        graph = ModuleVersionManager.get_module_dependencies(sandbox_id=sandbox_id,
                                                             deferred=False)
        wanted = set(modules)
        for m in modules:
            get_state(sandbox_id).get_module(m)
        return [m for m in topological_order(graph) if m in wanted]

    @staticmethod
    def detect_circular_dependencies(graph: dict[str, Any]) -> list[list[str]]:
        """Cycles of a ``{module: deps}`` graph, each closed: ``[["a", "b", "a"]]``."""
        return find_cycles(graph)

    @staticmethod
    def cascading_reload(sandbox_id: str, modules: Any, *, state_handler: Any = None,
                         force_reload: bool = False) -> ReloadResult:
        """Reload ``modules`` and every sandbox module importing them, in dependency order.

        One transaction: if any module fails, all of them stay as they were.
        ``modules``: names (re-run at their current version) or ``{name: source}``;
        with ``force_reload`` unchanged sources are re-run too.
        """
        return reload_modules(sandbox_id, modules, state_handler=state_handler,
                              force_reload=force_reload)

    @staticmethod
    def parallel_reload(sandbox_id: str, modules: Any, *, timeout: float | None = None,
                        state_handler: Any = None, force_reload: bool = False) -> ReloadResult:
        """Like :meth:`cascading_reload`, running independent modules of a level together.

        ``timeout`` bounds each level; a level that does not finish in time
        fails the reload and nothing changes.
        """
        return reload_modules(sandbox_id, modules, state_handler=state_handler,
                              force_reload=force_reload, parallel=True, timeout=timeout)
