"""Memory stays flat: what reloads leave behind is bounded by what is retained.

Sources live in ``linecache`` (tracebacks, ``inspect``) and the durable store
caches deltas; both must hold the retained versions only, whatever the number
of reloads.  These tests count entries and look for sources; they never time.
"""

from __future__ import annotations

import linecache
import traceback

import pytest

import sandbox_magic as sm
from sandbox_magic.engine import store as _store
from sandbox_magic.engine.artifact import artifact_filename, source_checksum
from sandbox_magic.engine.sandbox import _UNHELD_MAX
from sandbox_magic.engine.store import SQLiteVersionStore


def version(i: int) -> str:
    """Module ``memmod``, version ``i``: a marker line unique to it, and a generator
    that fails on a line naming ``i`` (a frame can keep running this version).

    Every test uses its own sandbox id, and the sandbox id is part of the
    source, so no two tests share a pseudo file name."""
    return (f"MARKER = 'only-in-version-{i}-of-memmod-in-{SANDBOX[0]}'\n"
            "\n"
            "class Thing:\n"
            "    def value(self):\n"
            f"        return {i}\n"
            "\n"
            "def steps():\n"
            "    yield 1\n"
            f"    raise ValueError('failing in version {i}')\n")


def entries() -> list[str]:
    names = {artifact_filename("memmod", source_checksum(version(i))) for i in range(100)}
    return [k for k in linecache.cache if k in names]


def filename(i: int) -> str:
    return artifact_filename("memmod", source_checksum(version(i)))


SANDBOX = [""]


@pytest.fixture(autouse=True)
def _name_sources_after(new_id):
    SANDBOX[0] = new_id


def test_linecache_holds_only_retained_versions(new_id):
    sm.create_sandbox(new_id, max_versions=5)
    live = [None]
    for i in range(60):
        sm.hot_reload_source(new_id, version(i), "memmod")
        live.append(sm.get_sandbox(new_id).Thing())
    retained = {filename(v.version - 1) for v in sm.list_module_versions(new_id, "memmod")}
    assert len(retained) == 5
    assert set(entries()) == retained
    assert live[1].value() == 59                     # the instances all run the newest code


def test_traceback_of_an_older_retained_version_still_shows_its_source(new_id):
    sm.create_sandbox(new_id)                        # default retention: 10 versions
    for i in range(30):
        sm.hot_reload_source(new_id, version(i), "memmod")
    running = sm.get_sandbox(new_id).steps()         # a frame of version 30 (source 29)
    next(running)
    for i in range(30, 35):                          # 5 more: version 30 is still retained
        sm.hot_reload_source(new_id, version(i), "memmod")
    assert 30 in [v.version for v in sm.list_module_versions(new_id, "memmod")]
    with pytest.raises(ValueError) as info:
        next(running)
    shown = "".join(traceback.format_exception(info.value))
    assert "raise ValueError('failing in version 29')" in shown
    assert f"MARKER = 'only-in-version-29-of-memmod-in-{new_id}'" in "".join(
        linecache.getlines(filename(29)))


def test_a_version_current_in_another_sandbox_keeps_its_entry(new_id):
    other = new_id + "_other"
    sm.create_sandbox(new_id, max_versions=3)
    sm.create_sandbox(other)
    try:
        sm.hot_reload_source(new_id, version(0), "memmod")
        sm.hot_reload_source(other, version(0), "memmod")   # the same pseudo file name
        for i in range(1, 20):
            sm.hot_reload_source(new_id, version(i), "memmod")
        assert filename(0) in linecache.cache        # dropped by one, current in the other
        assert len(entries()) == 3 + 1
        sm.destroy_sandbox(other)
        assert filename(0) not in linecache.cache
    finally:
        if other in {s.id for s in sm.list_sandboxes()}:
            sm.destroy_sandbox(other)


def test_destroying_a_sandbox_drops_its_entries(new_id):
    sm.create_sandbox(new_id)
    for i in range(4):
        sm.hot_reload_source(new_id, version(i), "memmod")
    assert len(entries()) == 4
    sm.destroy_sandbox(new_id)
    assert entries() == []


def test_failed_reloads_leave_only_a_few_entries_and_show_their_source(new_id):
    sm.create_sandbox(new_id, max_versions=3)
    sm.hot_reload_source(new_id, version(0), "memmod")
    failing = [version(i) + f"raise RuntimeError('body {i}')\n" for i in range(1, 40)]
    for source in failing:
        with pytest.raises(sm.ReloadError) as info:
            sm.hot_reload_source(new_id, source, "memmod")
    shown = "".join(traceback.format_exception(info.value.__cause__))
    assert "raise RuntimeError('body 39')" in shown   # the newest failure is readable
    names = {artifact_filename("memmod", source_checksum(s)) for s in failing}
    assert len(names & set(linecache.cache)) <= _UNHELD_MAX
    assert entries() == [filename(0)]
    assert filename(0) in linecache.cache             # the current version stays
    assert sm.get_sandbox(new_id).Thing().value() == 0


def test_entries_survive_linecache_checkcache(new_id):
    sm.create_sandbox(new_id)
    sm.hot_reload_source(new_id, version(0), "memmod")
    linecache.checkcache()
    assert filename(0) in linecache.cache


def test_restored_modules_keep_their_entries(new_id, tmp_path):
    store = SQLiteVersionStore(tmp_path / "restore.sqlite3")
    sm.create_sandbox(new_id, store=store)
    sm.hot_reload_source(new_id, version(0), "memmod")
    sm.destroy_sandbox(new_id)
    assert entries() == []
    sm.create_sandbox(new_id, store=store)
    sm.restore_sandbox(new_id)
    assert filename(0) in linecache.cache
    for i in range(1, 2 * _UNHELD_MAX):               # failures do not push it out
        with pytest.raises(sm.ReloadError):
            sm.hot_reload_source(new_id, version(i) + "1 / 0\n", "memmod")
    assert filename(0) in linecache.cache


def test_delta_cache_holds_no_source_of_a_dropped_version(new_id, tmp_path):
    sm.create_sandbox(new_id, max_versions=3,
                      store=SQLiteVersionStore(tmp_path / "deltas.sqlite3"))
    for i in range(50):
        sm.hot_reload_source(new_id, version(i), "memmod")
    kept = {v.version - 1 for v in sm.list_module_versions(new_id, "memmod")}
    dropped = set(range(50)) - kept
    dropped_sums = {source_checksum(version(i)) for i in dropped}
    assert 0 < len(_store._deltas) <= _store.DELTA_CACHE
    for (old, new), delta in _store._deltas.items():
        assert old not in dropped_sums and new not in dropped_sums
        for i in dropped:
            assert f"only-in-version-{i}-of-memmod-" not in delta
    assert all(isinstance(k, str) and len(k) == 64 for key in _store._deltas for k in key)
