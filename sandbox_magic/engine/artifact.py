"""Compiled modules as self-describing bytes: the Python analog of BEAM files.

An :class:`Artifact` carries the module name, the interpreter's bytecode magic,
the marshalled code object, the source it came from and a sha256 checksum of
that source.  ``to_bytes``/``from_bytes`` round-trip it through a binary format
whose trailing digest catches corruption and truncation before anything runs.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import keyword
import marshal
import os
import struct
import sys
import tempfile
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ArtifactError, CompileError
from .chunks import compile_pieces
from .deps import (
    defined_names,
    definitions_of_tree,
    imported_names,
    imports_of_tree,
    module_names,
)
from .layout import folder_modules

_PREFIX = b"SBXMAGIC"
_FORMAT = 1
_DIGEST = 32
PYTHON_MAGIC = importlib.util.MAGIC_NUMBER
ARTIFACT_SUFFIX = ".sbxc"


def source_checksum(source: str) -> str:
    """The identity of a version: sha256 of its source text."""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def artifact_filename(module: str, checksum: str) -> str:
    """Pseudo file name for code objects; registered in linecache when loaded."""
    return f"<sandbox {module} {checksum[:12]}>"


@dataclass(frozen=True, eq=False)
class Artifact:
    """A compiled module: name, code, source and checksum."""

    module: str
    #: The module's code; a long module compiled piece by piece (see
    #: :mod:`.chunks`) holds a tuple of code objects run in order.
    code: types.CodeType | tuple[types.CodeType, ...] = field(repr=False)
    source: str = field(repr=False)
    checksum: str
    python_magic: bytes = PYTHON_MAGIC
    # Found while compiling (one parse serves compile and analysis); None: derive lazily.
    imports_found: frozenset[str] | None = field(default=None, repr=False, compare=False)
    defines_found: frozenset[str] | None = field(default=None, repr=False, compare=False)
    #: The text of each code object of :attr:`codes`, when compiled piece by piece here.
    piece_texts: tuple[str, ...] | None = field(default=None, repr=False, compare=False)

    @property
    def codes(self) -> tuple[types.CodeType, ...]:
        """The code objects that make up the module body, in order."""
        return self.code if isinstance(self.code, tuple) else (self.code,)

    @property
    def filename(self) -> str:
        return self.codes[0].co_filename

    def run(self, namespace: dict[str, Any]) -> None:
        """Execute the module body in ``namespace``."""
        for code in self.codes:
            exec(code, namespace)

    @property
    def imports(self) -> frozenset[str]:
        """Top-level names of the modules this code imports."""
        if self.imports_found is not None:
            return self.imports_found
        return imported_names(self.source)

    @property
    def defines(self) -> frozenset[str]:
        """Names the module binds at top level other than by importing."""
        if self.defines_found is not None:
            return self.defines_found
        return defined_names(self.source)

    def to_bytes(self) -> bytes:
        """Serialise: prefix, JSON header, source, marshalled code, sha256 digest."""
        src = self.source.encode("utf-8")
        code = marshal.dumps(self.code)
        header = json.dumps({
            "format": _FORMAT,
            "module": self.module,
            "python_magic": self.python_magic.hex(),
            "python_version": "%d.%d.%d" % sys.version_info[:3],
            "checksum": self.checksum,
            "source_len": len(src),
            "code_len": len(code),
        }, sort_keys=True).encode("utf-8")
        body = _PREFIX + struct.pack(">I", len(header)) + header + src + code
        return body + hashlib.sha256(body).digest()

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Artifact:
        """Parse bytes made by :meth:`to_bytes`; raise ArtifactError on anything else."""
        data = bytes(data)
        if not data.startswith(_PREFIX):
            raise ArtifactError("not a sandbox_magic artifact (missing header); "
                                "pass bytes produced by Artifact.to_bytes() or compile_file()")
        if len(data) < len(_PREFIX) + 4 + _DIGEST:
            raise ArtifactError("artifact is truncated; recompile it from source")
        body, digest = data[:-_DIGEST], data[-_DIGEST:]
        if hashlib.sha256(body).digest() != digest:
            raise ArtifactError("artifact is corrupted or truncated (digest mismatch); "
                                "recompile it from source")
        (hlen,) = struct.unpack(">I", body[len(_PREFIX):len(_PREFIX) + 4])
        start = len(_PREFIX) + 4
        try:
            header = json.loads(body[start:start + hlen].decode("utf-8"))
            module = header["module"]
            fmt = header["format"]
            magic = bytes.fromhex(header["python_magic"])
            checksum = header["checksum"]
            slen, clen = int(header["source_len"]), int(header["code_len"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(f"artifact header is unreadable ({exc}); recompile it") from exc
        if not is_module_name(module):
            raise ArtifactError(f"artifact names module {module!r}, which is not a valid "
                                "module name (an identifier that is not a keyword); "
                                "recompile it with compile_source(source, 'name')")
        if fmt != _FORMAT:
            raise ArtifactError(f"artifact format {fmt} is not supported by this "
                                f"sandbox_magic (format {_FORMAT}); upgrade sandbox_magic "
                                "or recompile the module")
        pos = start + hlen
        if pos + slen + clen != len(body):
            raise ArtifactError("artifact lengths do not add up; recompile it")
        source = body[pos:pos + slen].decode("utf-8")
        if source_checksum(source) != checksum:
            raise ArtifactError("artifact source does not match its checksum; recompile it")
        if magic != PYTHON_MAGIC:
            raise ArtifactError(
                f"artifact for module {module!r} was compiled by Python "
                f"{header.get('python_version', '?')} (bytecode magic {magic.hex()}); this "
                f"interpreter is {sys.version.split()[0]} (magic {PYTHON_MAGIC.hex()}). "
                "Recompile it here: compile_source(artifact_source) or hot_reload_source()")
        try:
            code = marshal.loads(body[pos + slen:])
        except (ValueError, EOFError, TypeError) as exc:
            raise ArtifactError(f"artifact code for {module!r} cannot be read ({exc})") from exc
        if isinstance(code, tuple) and code and all(isinstance(c, types.CodeType) for c in code):
            pass
        elif not isinstance(code, types.CodeType):
            raise ArtifactError(f"artifact for {module!r} does not hold a code object")
        return cls(module=module, code=code, source=source, checksum=checksum)

    @classmethod
    def of(cls, code: str | Artifact | bytes | CompileInfo, module: str | None = None) -> Artifact:
        """Source text compiled (as ``module``), or what :meth:`coerce` accepts."""
        if isinstance(code, str):
            return compile_artifact(code, module)
        return cls.coerce(code)

    @classmethod
    def coerce(cls, value: Artifact | bytes | bytearray | memoryview | CompileInfo) -> Artifact:
        """The artifact itself, parsed bytes, or the only artifact of a CompileInfo."""
        if isinstance(value, Artifact):
            return value
        if isinstance(value, (bytes, bytearray, memoryview)):
            return cls.from_bytes(value)
        if isinstance(value, CompileInfo):
            if len(value.artifacts) == 1:
                return value.artifacts[0]
            raise ArtifactError(f"the CompileInfo holds {len(value.artifacts)} artifacts "
                                f"({', '.join(value.modules) or 'none'}); pass one of "
                                "info.artifacts, or the CompileInfo to hot_reload()")
        raise ArtifactError(f"expected an Artifact or bytes, got {type(value).__name__}; "
                            "use hot_reload_source() for source text")


@dataclass(frozen=True)
class CompileInfo:
    """What a compile produced: artifacts and the files they were written to.

    ``artifact_files`` is empty when nothing was written (``compile_source``
    without ``output_dir``).
    """

    artifacts: list[Artifact]
    artifact_files: list[Path]
    output_dir: Path | None
    compile_time: float

    @property
    def modules(self) -> list[str]:
        return [a.module for a in self.artifacts]

    @property
    def artifact(self) -> Artifact:
        """The only artifact (``compile_source``, ``compile_file``); ValueError if several."""
        if len(self.artifacts) != 1:
            raise ValueError(f"this compile produced {len(self.artifacts)} artifacts "
                             f"({', '.join(self.modules) or 'none'}); use .artifacts")
        return self.artifacts[0]


#: Appended to an inferred module name that would shadow a module or be a keyword.
INFERRED_SUFFIX = "_module"


def is_module_name(name: object) -> bool:
    """A name a module may have: identifiers joined by dots (a package's submodule,
    ``pkg.util``), none a keyword, the first not a ``__dunder``."""
    if not isinstance(name, str) or name.startswith("__"):
        return False
    return all(p.isidentifier() and not keyword.iskeyword(p) for p in name.split("."))


def _module_name_error(module: object) -> CompileError:
    if isinstance(module, str) and keyword.iskeyword(module):
        why = (f"{module!r} is a Python keyword, so no code could import a module of that "
               "name; choose another module name")
    elif isinstance(module, str) and module.startswith("__") and module.isidentifier():
        why = f"{module!r} is not a valid module name (names starting with '__' are reserved)"
    else:
        why = (f"{module!r} is not a valid module name; use a Python identifier such as "
               "'counter'")
    return CompileError(why, module=None, line=None, column=None)


def _importable(name: str) -> bool:
    """Whether ``import name`` would find a module outside the sandbox."""
    if name in sys.modules or name in sys.builtin_module_names or name in sys.stdlib_module_names:
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except Exception:  # a finder that fails or a module without spec: stay on the safe side
        return True


def _name_conflict(name: str, imports: frozenset[str]) -> str | None:
    imports = module_names(imports)
    """Why ``name`` cannot be an inferred module name, or None when it can."""
    if keyword.iskeyword(name):
        return "is a Python keyword"
    if name in imports:
        return "is a module this code imports"
    if _importable(name):
        return "would shadow the importable module of that name"
    return None


def _infer(tree: ast.Module) -> tuple[str | None, str]:
    """The inferred module name, or None and the reason there is none."""
    first = next((node.name for node in tree.body
                  if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and not node.name.startswith("__")), None)
    if first is None:
        return None, ("cannot infer a module name: the source defines no top-level class "
                      "or function; pass module='name'")
    imports = imports_of_tree(tree)
    base = first.lower()
    why = _name_conflict(base, imports)
    if why is None:
        return base, ""
    other = base + INFERRED_SUFFIX
    why_other = _name_conflict(other, imports)
    if why_other is None:
        return other, ""
    return None, (f"cannot infer a module name: {base!r} (from {first!r}) {why} and "
                  f"{other!r} {why_other}; pass module='name'")


def infer_module_name(source: str, tree: ast.Module | None = None) -> str | None:
    """The module name for source compiled without one, or None when there is none.

    The first top-level class or function (names starting with ``__``
    skipped), lower-cased: ``class Counter`` -> ``counter``.  A name that is a
    keyword, that the code itself imports, or that would shadow a module the
    code could import (the standard library, built-in modules, anything
    ``importlib.util.find_spec`` finds) gets the suffix ``_module``:
    ``class Random`` -> ``random_module``, ``class If`` -> ``if_module``.
    None when the source does not parse, defines nothing, or the suffixed name
    is taken too (compiling it raises a CompileError that asks for a name).
    """
    if tree is None:
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError):
            return None
    return _infer(tree)[0]


def compile_artifact(source: str, module: str | None = None) -> Artifact:
    """Compile module source text into one :class:`Artifact` (see :func:`compile_source`)."""
    if not isinstance(source, str):
        raise CompileError(f"source must be str, not {type(source).__name__}",
                           module=module if isinstance(module, str) else None,
                           line=None, column=None)
    if module is not None and not is_module_name(module):
        raise _module_name_error(module)
    if module is not None:
        checksum = source_checksum(source)
        filename = artifact_filename(module, checksum)
        pieces = compile_pieces(source, filename, module)
        if pieces is not None:
            return Artifact(module=module, code=pieces.codes, source=source, checksum=checksum,
                            imports_found=pieces.imports, defines_found=pieces.defines,
                            piece_texts=pieces.texts)
    try:
        tree = ast.parse(source, filename=f"<sandbox {module}>" if module else UNNAMED)
    except SyntaxError as exc:
        raise _compile_error(exc, module, source) from None
    except ValueError as exc:  # e.g. null bytes
        raise CompileError(str(exc), module=module, line=None, column=None) from None
    if module is None:
        module, why = _infer(tree)
        if module is None:
            raise CompileError(why, module=None, line=None, column=None)
    checksum = source_checksum(source)
    filename = artifact_filename(module, checksum)
    try:
        code = compile(tree, filename, "exec", dont_inherit=True)
    except SyntaxError as exc:  # errors only the compiler finds (e.g. 'return' outside function)
        raise _compile_error(exc, module, source) from None
    return Artifact(module=module, code=code, source=source, checksum=checksum,
                    imports_found=imports_of_tree(tree), defines_found=definitions_of_tree(tree))


def compile_source(source: str, module: str | None = None, *,
                   output_dir: str | os.PathLike[str] | None = None) -> CompileInfo:
    """Compile module source text; the :class:`CompileInfo` holds one artifact.

    ``info.artifacts[0]`` (or ``info.artifact``) is what :func:`hot_reload`
    loads; ``hot_reload`` also takes the CompileInfo itself.  With
    ``output_dir`` the artifact is also written there as ``MODULE.sbxc``
    (``info.artifact_files``); without it nothing is written.

    When ``module`` is omitted the name is inferred (see
    :func:`infer_module_name`: ``class Counter`` -> ``counter``,
    ``class Random`` -> ``random_module``).  Raises CompileError with line and
    column on a syntax error, and for a module name that is not an identifier
    or is a keyword.
    """
    started = time.perf_counter()
    art = compile_artifact(source, module)
    files, out = _write_artifacts([art], output_dir) if output_dir is not None else ([], None)
    return CompileInfo([art], files, out, time.perf_counter() - started)


#: Pseudo file name of source compiled without a module name (in syntax errors).
UNNAMED = "<sandbox source, no module name given>"


def _compile_error(exc: SyntaxError, module: str | None, source: str) -> CompileError:
    text = exc.text
    if text is None and exc.lineno:   # the compiler has no file to read the line from
        lines = source.splitlines()
        if 0 < exc.lineno <= len(lines):
            text = lines[exc.lineno - 1] + "\n"
    return CompileError(exc.msg, module=module, line=exc.lineno, column=exc.offset,
                        text=text, filename=exc.filename)


def _write_artifacts(artifacts: list[Artifact], output_dir: str | os.PathLike[str] | None
                     ) -> tuple[list[Path], Path]:
    out = Path(output_dir) if output_dir is not None else Path(
        tempfile.mkdtemp(prefix="sandbox_magic_build_"))
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for art in artifacts:
        path = out / f"{art.module}{ARTIFACT_SUFFIX}"
        path.write_bytes(art.to_bytes())
        files.append(path)
    return files, out


def compile_file(path: str | os.PathLike[str], *, module: str | None = None,
                 output_dir: str | os.PathLike[str] | None = None) -> CompileInfo:
    """Compile one ``.py`` file; the module is named after the file's stem."""
    started = time.perf_counter()
    p = Path(path)
    try:
        source = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise CompileError(f"cannot read {p}: {exc.strerror}", module=module, line=None,
                           column=None) from None
    art = compile_artifact(source, module or p.stem)
    files, out = _write_artifacts([art], output_dir)
    return CompileInfo([art], files, out, time.perf_counter() - started)


def compile_sandbox(directory: str | os.PathLike[str], *,
                    output_dir: str | os.PathLike[str] | None = None) -> CompileInfo:
    """Compile every module of a directory, packages included (see ``engine.layout``);
    all or nothing."""
    started = time.perf_counter()
    d = Path(directory)
    if not d.is_dir():
        raise CompileError(f"{d} is not a directory", module=None, line=None, column=None)
    arts = [compile_artifact(p.read_text(encoding="utf-8"), name)
            for name, p in folder_modules(d).items()]
    files, out = _write_artifacts(arts, output_dir)
    return CompileInfo(arts, files, out, time.perf_counter() - started)

