"""Where a sandbox's modules come from on disk, and what their dotted names are.

A sandbox holds modules as Python would import them.  A folder given as a
``sandbox_path`` (or watched) is read the way ``sys.path`` entries are:

* a folder with an ``__init__.py`` is a package named after the folder: its
  ``__init__.py`` is module ``pkg``, ``pkg/util.py`` is ``pkg.util``,
  ``pkg/sub/__init__.py`` is ``pkg.sub``, at any depth;
* a folder without one holds top-level modules (``a.py`` is ``a``) and
  packages (each sub-folder with an ``__init__.py``), like a ``src/`` folder.

Sub-folders without ``__init__.py`` inside a package, and files whose names
are not identifiers, are not modules, as for Python's own importer (except
that namespace packages are not followed).  Dict sources may name modules
by dotted names (``"pkg.util"``) or by relative paths (``"pkg/util.py"``,
``"pkg/__init__.py"``).
"""

from __future__ import annotations

from pathlib import Path

INIT = "__init__.py"


def path_to_module(rel: str | Path) -> str | None:
    """``pkg/sub/mod.py`` -> ``pkg.sub.mod``; ``pkg/__init__.py`` -> ``pkg``; else None."""
    parts = list(Path(rel).parts)
    if not parts or not parts[-1].endswith(".py"):
        return None
    if parts[-1] == INIT:
        parts.pop()
    else:
        parts[-1] = parts[-1][:-3]
    if not parts or not all(p.isidentifier() for p in parts):
        return None
    return ".".join(parts)


def _package_files(folder: Path, prefix: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix == ".py":
            stem = p.stem
            if stem == "__init__":
                out[prefix] = p
            elif stem.isidentifier():
                out[f"{prefix}.{stem}"] = p
        elif p.is_dir() and (p / INIT).is_file() and p.name.isidentifier():
            out.update(_package_files(p, f"{prefix}.{p.name}"))
    return out


def folder_modules(folder: str | Path) -> dict[str, Path]:
    """``{dotted module name: file}`` for every module of ``folder`` (see module doc)."""
    root = Path(folder)
    if (root / INIT).is_file() and root.resolve().name.isidentifier():
        return _package_files(root, root.resolve().name)
    out: dict[str, Path] = {}
    for p in sorted(root.iterdir()):
        if p.is_file() and p.suffix == ".py" and p.stem.isidentifier() and p.stem != "__init__":
            out[p.stem] = p
        elif p.is_dir() and (p / INIT).is_file() and p.name.isidentifier():
            out.update(_package_files(p, p.name))
    return out


def module_of_file(root: str | Path, file: str | Path) -> str | None:
    """The module that ``file`` is when ``root`` is loaded with :func:`folder_modules`."""
    root_p, file_p = Path(root).resolve(), Path(file).resolve()
    if root_p.is_file():
        return file_p.stem if file_p == root_p and file_p.stem.isidentifier() else None
    try:
        rel = file_p.relative_to(root_p)
    except ValueError:
        return None
    if (root_p / INIT).is_file():
        rel = Path(root_p.name) / rel
    name = path_to_module(rel)
    if name is None:
        return None
    # every package folder on the way needs its __init__.py (else not a module)
    parts = rel.parts[:-1]
    base = root_p.parent if (root_p / INIT).is_file() else root_p
    for i in range(1, len(parts) + 1):
        if not (base.joinpath(*parts[:i]) / INIT).is_file():
            return None
    return name


def packages_of(modules: object) -> frozenset[str]:
    """Module names that are packages: every proper prefix of a dotted name."""
    out: set[str] = set()
    for name in modules:  # type: ignore[attr-defined]
        parts = str(name).split(".")
        for i in range(1, len(parts)):
            out.add(".".join(parts[:i]))
    return frozenset(out)


def package_of(module: str, packages: frozenset[str]) -> str:
    """The package relative imports in ``module`` start from ('' for the sandbox root)."""
    return module if module in packages else module.rpartition(".")[0]
