"""Fields a dataclass, attrs class or pydantic model declares: defaults for live instances.

When a reload adds a field with a default to such a class, every live
instance gets the default, made by the library's own rules (``default``,
``default_factory``, ``attrs.Factory``, pydantic's ``get_default``); a field
added without a default refuses the reload before anything changes, since
no value could be made for the objects that already exist.  Each library is
asked only if it is already imported: nothing here imports attrs or pydantic.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

from ..errors import ReloadError

#: A field's name and what makes its default (None: the field has no default).
Field = tuple[str, Callable[[], Any] | None]


def _constant(value: Any) -> Callable[[], Any]:
    return lambda: value


def _dataclass_fields(cls: type) -> list[Field]:
    out: list[Field] = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out.append((f.name, _constant(f.default)))
        elif f.default_factory is not dataclasses.MISSING:
            out.append((f.name, f.default_factory))
        else:
            out.append((f.name, None))
    return out


def _attrs_fields(cls: type) -> list[Field] | None:
    attr = sys.modules.get("attr")
    if attr is None or not attr.has(cls):
        return None
    out: list[Field] = []
    for a in attr.fields(cls):
        d = a.default
        if d is attr.NOTHING or (isinstance(d, attr.Factory) and d.takes_self):
            out.append((a.name, None))
        elif isinstance(d, attr.Factory):
            out.append((a.name, d.factory))
        else:
            out.append((a.name, _constant(d)))
    return out


def _pydantic_fields(cls: type) -> list[Field] | None:
    pydantic = sys.modules.get("pydantic")
    base = getattr(pydantic, "BaseModel", None)
    if base is None or not issubclass(cls, base):
        return None
    out: list[Field] = []
    for name, info in cls.model_fields.items():   # type: ignore[attr-defined]
        if info.is_required():
            out.append((name, None))
        else:
            out.append((name, partial(info.get_default, call_default_factory=True)))
    return out


def declared_fields(cls: type) -> list[Field] | None:
    """The fields ``cls`` declares through one of these libraries, or None."""
    found = _attrs_fields(cls) or _pydantic_fields(cls)
    if found is not None:
        return found
    if dataclasses.is_dataclass(cls):
        return _dataclass_fields(cls)
    return None


def _values(state: Any) -> dict[str, Any] | None:
    """Where a state keeps field values: the dict itself, or pydantic's ``__dict__``."""
    if not isinstance(state, dict):
        return None
    inner = state.get("__dict__")
    return inner if isinstance(inner, dict) and "__pydantic_fields_set__" in state else state


def missing_required(fields: list[Field], state: Any) -> list[str]:
    values = _values(state)
    if values is None:
        return []
    return [name for name, make in fields if make is None and name not in values]


def refuse_missing(cls: type, names: list[str], count: int) -> ReloadError:
    label = f"{cls.__qualname__}"
    listed = ", ".join(repr(n) for n in names)
    return ReloadError(
        f"{label} gained field{'s' if len(names) > 1 else ''} {listed} with no default; "
        f"{count} live instance{'s' if count != 1 else ''} would have no value for it: give "
        "the field a default, or migrate them with a %%sandbox_state_handler cell "
        "(state_handler=...); nothing was changed", step="migrate", obj=label)


def added_fields(old_cls: type, new_cls: type) -> list[Field]:
    """The fields ``new_cls`` declares that ``old_cls`` did not."""
    new = declared_fields(new_cls)
    if not new:
        return []
    old = {name for name, _ in declared_fields(old_cls) or ()}
    return [f for f in new if f[0] not in old]


def with_defaults(handler: Any, fields: list[Field], cls: type) -> Any:
    """``handler`` followed by filling in the added ``fields`` a state lacks."""
    if not fields:
        return handler

    def fill(state: Any, ov: Any, nv: Any) -> Any:
        if handler is not None:
            state = handler(state, ov, nv)
        values = _values(state)
        if values is None:
            return state
        missing = [n for n, make in fields if make is None and n not in values]
        if missing:
            raise refuse_missing(cls, missing, 1)
        for name, make in fields:
            if name not in values and make is not None:
                values[name] = make()
        return state

    fill.__qualname__ = getattr(handler, "__qualname__", None) or f"defaults of {cls.__qualname__}"
    return fill
