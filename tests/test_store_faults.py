"""The history store's folder pulled away, replaced by a file, or not writable mid-session:
one warning, versions kept in memory and said to be, written when the store is back."""

from __future__ import annotations

import shutil
import warnings

import pytest

import sandbox_magic as sm
from sandbox_magic.engine.store import SQLiteVersionStore, StoreWarning

SRC = "def f():\n    return {}\n"


@pytest.fixture
def store_sid(tmp_path, new_id):
    folder = tmp_path / "hist"
    store = SQLiteVersionStore(folder / "store.sqlite3")
    sm.create_sandbox(new_id, store=store)
    yield new_id, store, folder
    store.close()


def reopen(folder, new_id, module="m"):
    """The versions a new kernel would find in the file."""
    from sandbox_magic.api.registry import get_state
    fresh = SQLiteVersionStore(folder / "store.sqlite3")
    try:
        h = fresh.load(new_id, scope=get_state(new_id).scope).get(module)
        return sorted(h.records) if h is not None else []
    finally:
        fresh.close()


def two_versions_one_lost(sid, folder):
    """v1 saved; the folder removed; v2 kept in memory only (its warning silenced)."""
    sm.hot_reload_source(sid, SRC.format(1), module="m")
    shutil.rmtree(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StoreWarning)
        sm.hot_reload_source(sid, SRC.format(2), module="m")


@pytest.mark.parametrize("fault", ["folder removed", "folder replaced by a file"])
def test_versions_made_while_the_store_is_gone_are_kept_said_and_written_later(
        store_sid, fault):
    sid, store, folder = store_sid
    sm.hot_reload_source(sid, SRC.format(1), module="m")
    shutil.rmtree(folder)
    if fault == "folder replaced by a file":
        folder.write_text("not a folder")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        r2 = sm.hot_reload_source(sid, SRC.format(2), module="m")
        r3 = sm.hot_reload_source(sid, SRC.format(3), module="m")
    warned = [w for w in seen if issubclass(w.category, StoreWarning)]
    assert len(warned) == 1 and str(folder / "store.sqlite3") in str(warned[0].message)
    assert any(n.startswith("not saved to disk") for n in r2.notes)
    assert any(n.startswith("not saved to disk") for n in r3.notes)
    assert not store.saved_to_disk
    assert sm.get_sandbox(sid).f() == 3                   # the reloads themselves went on
    # the store comes back: everything kept in memory is written
    if fault == "folder replaced by a file":
        folder.unlink()
    folder.mkdir()
    r4 = sm.hot_reload_source(sid, SRC.format(4), module="m")
    assert not any(n.startswith("not saved to disk") for n in r4.notes)
    assert store.saved_to_disk
    assert reopen(folder, sid) == [1, 2, 3, 4]


def test_flush_pending_writes_what_waits_without_a_new_reload(store_sid):
    sid, store, folder = store_sid
    two_versions_one_lost(sid, folder)
    assert store.flush_pending() is False                 # still no folder
    folder.mkdir()
    assert store.flush_pending() is True
    assert reopen(folder, sid) == [1, 2]


def test_set_default_store_takes_over_what_a_lost_store_kept(store_sid, tmp_path):
    """The warning says "or call set_default_store": the sandboxes of the store that cannot
    be written move to the new store, with every version kept in memory."""
    sid, store, folder = store_sid
    two_versions_one_lost(sid, folder)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    from sandbox_magic.api import stores
    previous = stores._default_store
    try:
        new = sm.set_default_store(elsewhere / "store.sqlite3")
        from sandbox_magic.api.registry import get_state
        assert get_state(sid).store is new and store.pending == {}
        assert reopen(elsewhere, sid) == [1, 2]
        r3 = sm.hot_reload_source(sid, SRC.format(3), module="m")
        assert not any(n.startswith("not saved to disk") for n in r3.notes)
        assert reopen(elsewhere, sid) == [1, 2, 3]
        new.close()
    finally:
        stores._default_store = previous


def test_the_panels_say_not_saved_to_disk_and_why(store_sid):
    from sandbox_magic.jupyter.comm import handle_message as handle
    from sandbox_magic.jupyter.widgets import HistoryPanel
    sid, store, folder = store_sid
    sm.hot_reload_source(sid, SRC.format(1), module="m")
    reply = handle({"protocol": 1, "id": 1, "method": "history",
                    "params": {"sandbox": sid, "module": "m"}})
    assert reply["ok"] and reply["result"]["unsaved"] is None
    panel = HistoryPanel(sid)
    assert "not saved to disk" not in panel.notes.value
    shutil.rmtree(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StoreWarning)
        sm.hot_reload_source(sid, SRC.format(2), module="m")
    reply = handle({"protocol": 1, "id": 2, "method": "history",
                    "params": {"sandbox": sid, "module": "m"}})
    assert str(folder) in reply["result"]["unsaved"]
    panel.refresh()
    assert "not saved to disk" in panel.notes.value and str(folder) in panel.notes.value
    folder.mkdir()
    store.flush_pending()
    panel.refresh()
    assert "not saved to disk" not in panel.notes.value
