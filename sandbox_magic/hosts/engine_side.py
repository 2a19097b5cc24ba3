"""The engine side of the cluster host: functions the notebook applies on every engine.

Each ipyparallel engine is an IPython kernel with its own copy of the sandbox
(history in memory: the notebook's store keeps the real one).  A reload is
two-phase: :func:`prepare` runs everything up to the commit and keeps the
transaction open; :func:`commit` applies it; :func:`end` closes it, rolling
back unless the notebook says every engine committed.  Engines run applied
functions one at a time, so a transaction stays open between the calls.
"""

from __future__ import annotations

import time
from typing import Any

from .. import api
from ..engine.artifact import Artifact
from ..engine.reload import Change, TwoPhase, plan_change
from ..engine.versions import VersionStore
from .base import options_from_payload

_open: dict[str, TwoPhase] = {}
#: For tests of the coordinator: commits on this engine fail after applying.
FAIL_COMMIT = False


def ensure(sandbox_id: str) -> dict[str, str]:
    """Create this engine's sandbox if needed; return its modules' current checksums."""
    if api.find_host(sandbox_id) is None:
        api.create_sandbox(sandbox_id, store=VersionStore(), max_versions=None)
    st = api.get_state(sandbox_id)
    return {m: st.histories[m].current_record().checksum for m in st.modules}


def prepare(sandbox_id: str, txid: str, artifacts: list[tuple[str, bytes]],
            options: dict[str, Any]) -> dict[str, Any]:
    """Phase one: everything up to the commit (catching up on missing versions too)."""
    started = time.perf_counter()
    ensure(sandbox_id)
    st = api.get_state(sandbox_id)
    opts = options_from_payload(options)
    changes = []
    for module, blob in artifacts:
        art = Artifact.from_bytes(blob)
        if plan_change(st, art) is not None:
            changes.append(Change(module, art, "new"))
    if not changes:
        return {"changes": 0, "seconds": time.perf_counter() - started}
    tx = TwoPhase(st, changes, opts)
    tx.prepare()
    _open[txid] = tx
    return {"changes": len(changes), "seconds": time.perf_counter() - started}


def dry_run(sandbox_id: str, artifacts: list[tuple[str, bytes]],
            options: dict[str, Any]) -> dict[str, Any]:
    """What this engine would do for the reload, everything undone (a dict, see DryRun)."""
    ensure(sandbox_id)
    st = api.get_state(sandbox_id)
    host = api.get_host(sandbox_id)
    changes = [Change(m, Artifact.from_bytes(blob), "new") for m, blob in artifacts]
    changes = [c for c in changes if plan_change(st, c.artifact) is not None]
    if not changes:
        return {"no_change": True}
    return dict(host.dry_run(changes, options_from_payload(options)).to_dict())


def commit(txid: str) -> dict[str, Any]:
    """Phase two: apply (the transaction stays open until :func:`end`)."""
    started = time.perf_counter()
    tx = _open.get(txid)
    if tx is None:
        return {"migrated": 0, "notes": [], "seconds": 0.0}
    try:
        results = tx.commit()
    except BaseException:
        _open.pop(txid, None)       # commit() ended it, rolled back
        raise
    if FAIL_COMMIT:
        raise RuntimeError("commit failed on this engine (test switch FAIL_COMMIT)")
    return {"migrated": max((r.migrated for r in results), default=0),
            "notes": list(dict.fromkeys(n for r in results for n in r.notes)),
            "seconds": time.perf_counter() - started}


def end(txid: str, ok: bool) -> bool:
    """Close the transaction: keep it (``ok``) or roll back whatever it did."""
    tx = _open.pop(txid, None)
    if tx is not None:
        tx.end(ok)
    return tx is not None


def versions(sandbox_id: str) -> dict[str, str]:
    return ensure(sandbox_id)


def destroy(sandbox_id: str) -> None:
    if api.find_host(sandbox_id) is not None:
        api.destroy_sandbox(sandbox_id)
