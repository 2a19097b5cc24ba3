"""Whose history is it: the scope a sandbox's history belongs to.

A history is stored under a scope plus a sandbox id.  The default scope is
the notebook (Jupyter Server tells the kernel which notebook it serves in
``JPY_SESSION_NAME``); a plain Python script gets its own; an interactive
session without a notebook uses the folder scope.  Two notebooks in one
folder that both use a sandbox ``demo`` therefore keep separate histories.
A name given with ``set_history_scope(name)`` or ``create_sandbox(...,
history_scope=name)`` shares one history on purpose.
"""

from __future__ import annotations

import os
import re
import sys

from ..errors import SandboxError

#: Histories written before scopes existed live here, as does any session
#: that is neither a notebook nor a script.
FOLDER = "folder"
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,127}")
_explicit: str | None = None


def validate_scope(name: object) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise SandboxError(f"invalid history scope {name!r}: use 1-128 letters, digits, '_', "
                           "'-' or '.', starting with a letter or '_'")
    return name


def set_history_scope(name: str | None) -> str:
    """Share one history under ``name`` for sandboxes created from now on (``None``: default)."""
    global _explicit
    _explicit = None if name is None else validate_scope(name)
    return current_scope()


def _interactive() -> bool:
    return "ipykernel" in sys.modules or hasattr(sys, "ps1") or "IPython" in sys.modules


def current_scope() -> str:
    """The scope of sandboxes created now (see the module docstring)."""
    if _explicit is not None:
        return _explicit
    notebook = os.environ.get("JPY_SESSION_NAME")
    if notebook:
        return f"notebook:{notebook}"
    main = sys.modules.get("__main__")
    script = getattr(main, "__file__", None)
    if script and not _interactive():
        return f"script:{os.path.abspath(script)}"
    return FOLDER


def describe(scope: str) -> str:
    """A short human name: the notebook's or script's file name, or the scope's name."""
    kind, sep, rest = scope.partition(":")
    if sep and kind in ("notebook", "script"):
        return f"{kind} {os.path.basename(rest) or rest}"
    return f"scope {scope!r}" if scope != FOLDER else "this folder"
