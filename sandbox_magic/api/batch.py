"""Loading one piece of code into many sandboxes: compile once, isolate failures."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any

from ..engine.artifact import Artifact, CompileInfo
from ..engine.reload import ReloadResult
from ..errors import ReloadError, SandboxError, SandboxTimeout
from .registry import get_state
from .reloading import hot_reload, reload_modules

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str, Any], None]


def _compile_once(code: Any, module: str | None) -> Artifact | dict[str, Artifact]:
    if isinstance(code, CompileInfo) and len(code.artifacts) > 1:
        return {a.module: a for a in code.artifacts}
    if isinstance(code, str):
        return Artifact.of(code, module)
    if isinstance(code, Mapping):
        return {name: Artifact.of(src, name) for name, src in code.items()}
    return Artifact.coerce(code)


def batch_hot_reload(sandbox_ids: Sequence[str], artifact_or_source: Any, *,
                     module: str | None = None, max_concurrency: int | None = None,
                     batch_timeout: float | None = None, state_handler: Any = None,
                     progress: Progress | None = None
                     ) -> list[tuple[str, ReloadResult | SandboxError]]:
    """Hot-reload the same code into every sandbox of ``sandbox_ids``.

    ``artifact_or_source``: source text (``str``), compiled code (``bytes``,
    :class:`Artifact`, or a :class:`CompileInfo`, whose artifacts load as one
    transaction), or a ``{module: source}`` dict; it is compiled once.
    Returns ``[(sandbox_id, ReloadResult or SandboxError), ...]`` in input
    order; one sandbox's failure never affects another.  Once ``batch_timeout``
    seconds have passed no new reload starts, and the sandboxes not started are
    reported with :class:`SandboxTimeout`.  ``progress(done, total, sandbox_id,
    result)`` is called after each sandbox.  ``max_concurrency`` (default 1)
    reloads that many sandboxes at once; worth raising when reloads wait for
    busy servers to reach a safe point.
    """
    ids = list(sandbox_ids)
    if max_concurrency is not None and (not isinstance(max_concurrency, int)
                                        or max_concurrency < 1):
        raise SandboxError(f"max_concurrency must be a positive int, got {max_concurrency!r}")
    code = _compile_once(artifact_or_source, module)   # a compile error stops everything now
    deadline = None if batch_timeout is None else time.monotonic() + batch_timeout
    results: list[Any] = [None] * len(ids)
    done = [0]
    lock = threading.Lock()

    def one(i: int) -> None:
        sid = ids[i]
        if deadline is not None and time.monotonic() > deadline:
            res: Any = SandboxTimeout(f"not started: batch_timeout of {batch_timeout} s "
                                      f"passed before sandbox {sid!r} was reached")
        else:
            try:
                if isinstance(code, dict):
                    res = reload_modules(sid, code, state_handler=state_handler)
                else:
                    res = hot_reload(sid, code, state_handler=state_handler)
            except SandboxError as exc:
                res = exc
            except Exception as exc:  # never let one sandbox break the batch
                res = ReloadError(f"reload of sandbox {sid!r} failed: "
                                  f"{type(exc).__name__}: {exc}", step="batch", sandbox_id=sid)
                res.__cause__ = exc
        results[i] = res
        if progress is not None:
            with lock:
                done[0] += 1
                n = done[0]
            try:
                progress(n, len(ids), sid, res)
            except Exception:   # a broken progress callback must not stop the batch
                log.exception("progress callback failed for sandbox %s", sid)

    # Reloads are CPU-bound Python, so threads only pay off when sandboxes wait on
    # busy servers to suspend: by default one sandbox at a time, in this thread.
    workers = min(max_concurrency or 1, max(1, len(ids)))
    stores = {id(s): s for s in (_store_of(sid) for sid in ids) if s is not None}
    with ExitStack() as stack:   # one durable write per store, before results are returned
        for store in stores.values():
            stack.enter_context(store.batch())
        if workers == 1:
            for i in range(len(ids)):
                one(i)
        else:
            with ThreadPoolExecutor(max_workers=workers,
                                    thread_name_prefix="sandbox-batch") as pool:
                list(pool.map(one, range(len(ids))))
    return list(zip(ids, results))


def _store_of(sandbox_id: str) -> Any:
    try:
        return get_state(sandbox_id).store
    except SandboxError:
        return None
