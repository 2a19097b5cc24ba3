"""Download the corpus's sdists from PyPI and unpack them, once, into a cache.

The cache (``.venv/corpus-cache/`` of the repository, or ``$SANDBOX_MAGIC_CORPUS_CACHE``)
lies in a git-ignored folder: nothing of the libraries is ever committed.  Each sdist
is checked against its pinned sha256 before it is unpacked.  Any failure (no network,
a changed file on PyPI) raises: the corpus never skips.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class FetchError(RuntimeError):
    pass


def cache_dir() -> Path:
    return Path(os.environ.get("SANDBOX_MAGIC_CORPUS_CACHE") or REPO / ".venv" / "corpus-cache")


def _sdist_name(dist: str, version: str) -> str:
    return f"{dist.lower().replace('-', '_')}-{version}.tar.gz"


def source_dir(dist: str, version: str, cache: Path | None = None) -> Path:
    """Where the unpacked sdist of ``dist==version`` lives (it may not be there yet)."""
    return (cache or cache_dir()) / "src" / f"{dist.lower().replace('-', '_')}-{version}"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _download(pins: list[tuple[str, str]], dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    # --no-binary names the libraries only: with :all: pip would also build the backends
    # that prepare their metadata (setuptools, flit_core, hatchling...) from source (minutes).
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps",
           "--no-binary", ",".join(dist for dist, _ in pins),
           "--disable-pip-version-check", "-q", "-d", str(dest),
           *[f"{dist}=={version}" for dist, version in pins]]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise FetchError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}); the corpus needs "
                         f"PyPI:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def _unpack(archive: Path, target: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="unpack-", dir=target.parent))
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        (top,) = [p for p in tmp.iterdir() if p.is_dir()]
        (top / ".corpus-complete").write_text(archive.name + "\n")
        try:
            top.rename(target)
        except OSError:           # unpacked meanwhile by another run
            if not (target / ".corpus-complete").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fetch(pins: Iterable[tuple[str, str, str]], cache: Path | None = None) -> dict[str, Path]:
    """Make sure every ``(dist, version, sha256)`` is unpacked; return ``{dist: folder}``."""
    cache = cache or cache_dir()
    sdists = cache / "sdists"
    pins = list(pins)
    missing = [(d, v) for d, v, _ in pins
               if not (source_dir(d, v, cache) / ".corpus-complete").exists()
               and not (sdists / _sdist_name(d, v)).exists()]
    if missing:
        _download(missing, sdists)
    out: dict[str, Path] = {}
    for dist, version, sha in pins:
        target = source_dir(dist, version, cache)
        if not (target / ".corpus-complete").exists():
            archive = sdists / _sdist_name(dist, version)
            if not archive.exists():
                raise FetchError(f"pip did not leave {archive.name} in {sdists}")
            got = _sha256(archive)
            if got != sha:
                archive.unlink()
                raise FetchError(f"{archive.name}: sha256 {got}, pinned {sha}")
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():          # an unpacking that did not finish
                shutil.rmtree(target)
            _unpack(archive, target)
        out[dist] = target
    return out
