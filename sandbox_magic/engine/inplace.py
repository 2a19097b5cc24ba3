"""Edits inside function bodies, applied without running the module body again.

Most edits change what a function does when called and nothing a module body
computes while it runs.  For those, running the body again (and the bodies of
every module that imported values from it) only re-creates objects that the
patch then throws away.  Here the new version's code objects are compared with
the running version's, tree by tree:

* the module's own code and every class body must be the same, except for the
  code objects of the functions they define (so decorators, defaults,
  annotations, class attributes and the module's statements are unchanged);
* a function whose code differs (ignoring line numbers and the file name) is
  *changed*; if a module body called it when it last ran (the record kept by
  :mod:`.importtime`), the edit could change what that body computed, and the
  reload runs bodies as usual.  Where that record is incomplete, or the edit
  changes what code can read without calling the function (its signature or
  docstring), a static reading decides: whether the module's own import-time
  code, or an importer's, could call or read it (directly, or through functions
  and classes that reach it).

When both hold, every live function of the module gets its code object from the
new version (so line numbers and the version's file name follow the edit) in
one C-level loop, as a full reload's commit does; nothing else changes, and the
version is recorded as usual.  Anything not covered (a closure whose cells
changed, a function this walk cannot find, a server whose module changes, a
state handler) takes the full path.
"""

from __future__ import annotations

import functools
import inspect
import logging
import marshal
import operator
import re
import types
from collections import deque
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from .artifact import Artifact
from .impact import cascade, reach_at_import

log = logging.getLogger(__name__)

_OPTIMIZED = inspect.CO_OPTIMIZED
_SHAPE = ("co_code", "co_names", "co_varnames", "co_freevars", "co_cellvars", "co_flags",
          "co_argcount", "co_posonlyargcount", "co_kwonlyargcount", "co_exceptiontable",
          "co_qualname", "co_name", "co_nlocals")


#: Methods that run when a class is subclassed or created.
_CLASS_HOOKS = frozenset({"__init_subclass__", "__set_name__", "__mro_entries__",
                          "__class_getitem__"})


#: Decorators that only hold the function they are given (or wrap it to call it later):
#: a body edit of a function they decorate changes nothing they computed at import.
_HOLDING = frozenset({
    "property", "staticmethod", "classmethod", "abstractmethod", "cached_property",
    "lru_cache", "cache", "contextmanager", "asynccontextmanager", "overload", "final",
    "override", "wraps", "singledispatch", "singledispatchmethod", "total_ordering"})
#: ... and, as attributes of another object only: ``@x.setter``, ``@f.register``.
_HOLDING_ATTRS = frozenset({"setter", "getter", "deleter", "register"})
_DECORATOR = re.compile(r"[ \t]*@[ \t]*([\w.]+)")


def _decorated(lines: list[str], first: int) -> str | None:
    """The first decorator of the function starting at line ``first`` that may have used
    it at import (not one of :data:`_HOLDING`), or None."""
    i = first - 1
    while 0 <= i < len(lines):
        m = _DECORATOR.match(lines[i])
        if m is None:
            return None         # the ``def`` line: every decorator was one that holds
        owner, _, name = m.group(1).rpartition(".")
        if name not in _HOLDING and not (owner and name in _HOLDING_ATTRS):
            return f"@{m.group(1)}"
        i += 1
        while i < len(lines) and lines[i - 1].rstrip().endswith((",", "(", "\\")):
            i += 1              # a decorator call spread over lines
    return None


def _lines_at(art: Artifact, first: int) -> tuple[list[str], int]:
    """Lines of the artifact's source holding line ``first``, and ``first`` counted in
    them: the lines of the statement it is in when the source was compiled piece by
    piece (a decorated function's decorators are in the same piece as its ``def``)."""
    line = 1
    for text in art.piece_texts or ():
        n = text.count("\n")
        if first < line + n:
            return text.split("\n"), first - line + 1
        line += n
    return art.source.split("\n"), first


def _nested(code: types.CodeType) -> list[types.CodeType]:
    """Every code object inside ``code``, depth first, in the order they appear."""
    out: list[types.CodeType] = []
    for c in code.co_consts:
        if type(c) is types.CodeType:
            out.append(c)
            out.extend(_nested(c))
    return out


def _of_metaclass(ns: Mapping[str, Any], qualname: str) -> bool:
    """Whether the function ``qualname`` of a module is a method of a metaclass."""
    *path, _ = qualname.split(".")
    obj: Any = ns.get(path[0]) if path else None
    for part in path[1:]:
        obj = getattr(obj, part, None)
    return isinstance(obj, type) and issubclass(obj, type)


def _is_def(code: types.CodeType) -> bool:
    """A function made by ``def`` (not a lambda, comprehension or class body)."""
    return bool(code.co_flags & _OPTIMIZED) and not code.co_name.startswith("<")


_shape = operator.attrgetter(*_SHAPE)


def _same_shape(a: types.CodeType, b: types.CodeType) -> bool:
    return a.co_code == b.co_code and len(a.co_consts) == len(b.co_consts) \
        and _shape(a) == _shape(b)


def _same_const(a: object, b: object) -> bool:
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    try:
        return marshal.dumps(a) == marshal.dumps(b)  # type: ignore[arg-type]
    except ValueError:
        return False


def _same_function(a: types.CodeType, b: types.CodeType) -> bool:
    """Same behaviour: equal but for line numbers and the file name (nested code too)."""
    if not _same_shape(a, b):
        return False
    for x, y in zip(a.co_consts, b.co_consts):
        if type(x) is types.CodeType:
            if type(y) is not types.CodeType or not _same_function(x, y):
                return False
        elif not _same_const(x, y):
            return False
    return True


class _Plan:
    """What an in-place reload changes: code per old code object, class first lines."""

    def __init__(self) -> None:
        self.codes: dict[int, types.CodeType] = {}     # id(old code) -> new code
        self.keep: list[types.CodeType] = []           # the old codes (ids stay valid)
        self.changed: list[types.CodeType] = []        # new code of changed functions
        self.changed_old: list[types.CodeType] = []    # ... and their old code
        self.first_lines: dict[str, int] = {}          # class qualname -> new first line

    def pair(self, old: types.CodeType, new: types.CodeType) -> None:
        self.codes[id(old)] = new
        self.keep.append(old)

    def same(self, old: types.CodeType, new: types.CodeType) -> bool:
        """Codes compiled from the same text (maybe moved): nested codes pair by position."""
        for x, y in zip(old.co_consts, new.co_consts):
            if type(x) is types.CodeType:
                if "__firstlineno__" in y.co_names and not _is_def(y):
                    if not self.body(x, y):    # a 3.13+ class body: its first line moved
                        return False
                    continue
                self.pair(x, y)
                if not self.same(x, y):
                    return False
        return True

    def nested(self, old: types.CodeType, new: types.CodeType) -> None:
        """Codes inside an unchanged function (closures it made at import, say)."""
        for x, y in zip(old.co_consts, new.co_consts):
            if type(x) is types.CodeType and type(y) is types.CodeType:
                self.pair(x, y)
                self.nested(x, y)

    def body(self, old: types.CodeType, new: types.CodeType) -> bool:
        """Module or class body code (or a lambda or comprehension run there): the
        same but for the functions it defines; pairs those."""
        if not _same_shape(old, new):
            return False
        delta = new.co_firstlineno - old.co_firstlineno
        first_line = "__firstlineno__" in old.co_names      # 3.13+ class bodies
        for x, y in zip(old.co_consts, new.co_consts):
            if type(x) is types.CodeType:
                if type(y) is not types.CodeType or x.co_qualname != y.co_qualname:
                    return False
                if _is_def(x) and _is_def(y):
                    self.pair(x, y)
                    if _same_function(x, y):
                        self.nested(x, y)
                    else:
                        self.changed.append(y)
                        self.changed_old.append(x)
                elif not self.body(x, y):
                    return False
            elif not _same_const(x, y):
                if first_line and type(x) is int and type(y) is int and x + delta == y:
                    self.first_lines[new.co_qualname] = y
                    continue
                return False
        return True


def _live_objects(ns: Mapping[str, Any], modname: str
                  ) -> tuple[list[types.FunctionType], list[type], list[Any]]:
    """The functions, classes and memoizing wrappers a module's namespace reaches."""
    funcs: list[types.FunctionType] = []
    classes: list[type] = []
    caches: list[Any] = []
    seen: set[int] = set()
    todo = [v for k, v in ns.items() if k != "__builtins__"]
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if type(obj) is types.FunctionType:
            funcs.append(obj)
            wrapped = obj.__dict__.get("__wrapped__") if obj.__dict__ else None
            if wrapped is not None:
                todo.append(wrapped)
        elif isinstance(obj, type):
            if obj.__module__ == modname:
                classes.append(obj)
                todo.extend(vars(obj).values())
        elif isinstance(obj, (staticmethod, classmethod, types.MethodType)):
            todo.append(obj.__func__)
        elif isinstance(obj, property):
            todo.extend(f for f in (obj.fget, obj.fset, obj.fdel) if f is not None)
        elif isinstance(obj, (functools.cached_property, functools.partial)):
            todo.append(obj.func)
        elif callable(getattr(obj, "cache_clear", None)) and hasattr(obj, "__wrapped__"):
            caches.append(obj)
            todo.append(obj.__wrapped__)
    return funcs, classes, caches


class InPlace:
    """The commit of an in-place reload, with the interface the transaction uses."""

    def __init__(self, artifact: Artifact, ops: list[Callable[[], Any]],
                 undo: list[Callable[[], Any]]) -> None:
        self.artifact = artifact      # the new version as installed (see plan)
        self.ops = ops
        self.undo = undo
        self.notes: list[str] = []
        self.committed = False

    def commit(self, modules: object, extra_ops: Callable[[], list[Callable[[], Any]]]
               | None = None, guards: list[Callable[[], Any]] | None = None) -> None:
        ops = list(guards or ())
        ops.extend(self.ops)
        if extra_ops is not None:
            ops.extend(extra_ops())
        self.committed = True
        try:
            deque(map(operator.call, ops), maxlen=0)
        except BaseException:
            self.revert()
            raise

    def revert(self) -> None:
        if self.committed:
            self.committed = False
            deque(map(operator.call, self.undo), maxlen=0)

    def finish(self) -> None:
        self.ops.clear()
        self.undo.clear()


def _set_function(fn: types.FunctionType, code: types.CodeType,
                  ops: list[Callable[[], Any]], undo: list[Callable[[], Any]]) -> None:
    old_code = fn.__code__
    ops.append(partial(setattr, fn, "__code__", code))
    undo.append(partial(setattr, fn, "__code__", old_code))
    old_doc = old_code.co_consts[0] if old_code.co_consts else None
    new_doc = code.co_consts[0] if code.co_consts else None
    if isinstance(old_doc, str) and fn.__doc__ == old_doc and new_doc != old_doc:
        # the docstring is the code's first constant (3.11-3.13) and was not set by hand
        ops.append(partial(setattr, fn, "__doc__", new_doc if isinstance(new_doc, str)
                           else None))
        undo.append(partial(setattr, fn, "__doc__", old_doc))


_SIGNATURE_FLAGS = (inspect.CO_VARARGS | inspect.CO_VARKEYWORDS | inspect.CO_GENERATOR
                    | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR)


def _doc(code: types.CodeType) -> object:
    first = code.co_consts[0] if code.co_consts else None
    return first if isinstance(first, str) else None


def _same_interface(a: types.CodeType, b: types.CodeType) -> bool:
    """What code can read of a function without calling it is the same: its signature
    (parameter names, kinds, flags) and its docstring."""
    n = a.co_argcount + a.co_kwonlyargcount + bool(a.co_flags & inspect.CO_VARARGS) \
        + bool(a.co_flags & inspect.CO_VARKEYWORDS)
    return (a.co_argcount, a.co_posonlyargcount, a.co_kwonlyargcount,
            a.co_flags & _SIGNATURE_FLAGS, a.co_varnames[:n], _doc(a)) == \
        (b.co_argcount, b.co_posonlyargcount, b.co_kwonlyargcount,
         b.co_flags & _SIGNATURE_FLAGS, b.co_varnames[:n], _doc(b))


def _reached_at_import(module: str, live_ns: Mapping[str, Any], new: Artifact,
                       changed: list[types.CodeType], graph: Mapping[str, set[str]],
                       sources: Mapping[str, str], packages: frozenset[str],
                       importers_matter: bool) -> bool:
    """The static reading: whether the module's import-time code, or an importer's, could
    call or read a changed function (directly, or through functions and classes that
    reach it)."""
    touched = frozenset(c.co_qualname.partition(".")[0] for c in changed)
    # subclassing a class runs none of its methods but these
    # (any method of a metaclass may run then)
    bases_safe = not any(c.co_name in _CLASS_HOOKS or _of_metaclass(live_ns, c.co_qualname)
                         for c in changed)
    reach = reach_at_import(new.source, touched, bases_safe)
    if reach is None:
        log.debug("%s: the module's import-time code reaches the change", module)
        return True
    if importers_matter and cascade(graph, sources, {}, (), packages,
                                    in_place={module: reach}, bases_safe=bases_safe):
        log.debug("%s: an importer's import-time code reaches the change", module)
        return True
    return False


def _refuse(module: str, why: str) -> InPlace | None:
    log.debug("%s: a full reload (%s)", module, why)
    return None


def plan(module: str, fullname: str, live_ns: Mapping[str, Any], old: Artifact, new: Artifact,
         sources: Mapping[str, str], graph: Mapping[str, set[str]],
         packages: frozenset[str], importers_matter: bool,
         called: Callable[[list[types.CodeType]], bool | None] | None = None
         ) -> InPlace | None:
    """The in-place commit of ``old`` -> ``new`` for ``module``, or None (full reload).
    ``called(old codes)``: whether a module body called one of them when it last ran
    (see :mod:`.importtime`; None: not known, the static reading decides)."""
    if old.checksum == new.checksum:
        return _refuse(module, "same text")
    old_codes, new_codes = old.codes, new.codes
    to_pieces: dict[int, types.CodeType] | None = None
    if len(old_codes) == 1 and len(new_codes) > 1:
        # the running version was compiled whole (a short module's first version, see
        # engine.chunks): compare with the new one compiled whole, then install the
        # new version's own (piecewise) code, which compiles from the same text
        try:
            whole = compile(new.source, new.filename, "exec", dont_inherit=True)
        except (SyntaxError, ValueError):
            return _refuse(module, "the new text does not compile whole")
        a, b = _nested(whole), [c for n in new_codes for c in _nested(n)]
        if len(a) != len(b) or any(x.co_qualname != y.co_qualname for x, y in zip(a, b)):
            return _refuse(module, "the versions were compiled in different pieces")
        to_pieces = {id(x): y for x, y in zip(a, b)}
        new_codes = (whole,)
    if len(old_codes) != len(new_codes):
        return _refuse(module, "the versions were compiled in different pieces")
    p = _Plan()
    texts = new.piece_texts or ()
    was = old.piece_texts if old.piece_texts and len(old.piece_texts) == len(texts) else ()
    for i, (o, n) in enumerate(zip(old_codes, new_codes)):
        if was and was[i] == texts[i] and _same_shape(o, n):
            if not p.same(o, n):
                return _refuse(module, "a class body changed")
            continue
        if not p.body(o, n):
            return _refuse(module, "a module or class body changed")
    if to_pieces is not None:
        p.codes = {k: to_pieces[id(v)] for k, v in p.codes.items()}
        p.changed = [to_pieces[id(c)] for c in p.changed]
    if p.changed:
        for c in p.changed:
            why = _decorated(*_lines_at(new, c.co_firstlineno))
            if why:
                return _refuse(module, f"{c.co_qualname} is decorated with {why}, which "
                                       "received it at import")
        ran = None
        if called is not None and all(map(_same_interface, p.changed_old, p.changed)):
            ran = called(p.changed_old)
        if ran:
            return _refuse(module, "a module body called a changed function while it ran")
        if ran is None and _reached_at_import(module, live_ns, new, p.changed, graph,
                                              sources, packages, importers_matter):
            return _refuse(module, "import-time code may reach the change")
    funcs, classes, caches = _live_objects(live_ns, fullname)
    ops: list[Callable[[], Any]] = []
    undo: list[Callable[[], Any]] = []
    found: set[int] = set()
    for fn in funcs:
        code = p.codes.get(id(fn.__code__))
        if code is None:
            continue
        if code.co_freevars != fn.__code__.co_freevars:
            return _refuse(module, "a closure changed shape")
        found.add(id(code))
        if code is not fn.__code__:
            _set_function(fn, code, ops, undo)
    if any(id(c) not in found for c in p.changed):
        return _refuse(module, "a changed function is out of reach")
    for cls in classes:
        line = p.first_lines.get(cls.__qualname__)
        if line is not None and "__firstlineno__" in cls.__dict__:
            ops.append(partial(type.__setattr__, cls, "__firstlineno__", line))
            undo.append(partial(type.__setattr__, cls, "__firstlineno__",
                                cls.__dict__["__firstlineno__"]))
    if p.changed:
        # what a cache holds was computed by the old code (a full reload starts
        # every cache of the module afresh too)
        ops.extend(c.cache_clear for c in caches)
    undo.reverse()
    return InPlace(new, ops, undo)
