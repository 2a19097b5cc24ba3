"""Events of sandboxes (created, reloaded, rolled back...) for the panels to follow."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

#: Called as ``listener(event, sandbox_id, payload)`` after each change.
listeners: list[Callable[[str, str, dict[str, Any]], None]] = []


def emit(event: str, sandbox_id: str, **payload: Any) -> None:
    for cb in listeners.copy():     # (a listener may remove itself)
        try:
            cb(event, sandbox_id, payload)
        except Exception:  # a broken listener must never break a reload
            log.exception("event listener %r failed on %s of %s", cb, event, sandbox_id)
