"""The ipywidgets history panel, driven through its widget objects."""

from __future__ import annotations

import pytest

import sandbox_magic as sm
from sandbox_magic.jupyter.widgets import HistoryPanel

V = "def value():\n    return {}\n"


def load(sid, n, module="val"):
    return sm.hot_reload_source(sid, V.format(n), module)


def test_panel_lists_versions_newest_first_with_details(sid):
    load(sid, 1)
    load(sid, 2)
    sm.hot_reload_source(sid, V.format(3), "val", state_handler=lambda s, o, n: s)
    panel = HistoryPanel(sid)
    rows = panel.version_rows()
    assert [r["version"] for r in rows] == [3, 2, 1]
    assert [r["current"] for r in rows] == [True, False, False]
    assert rows[0]["added"] == 1 and rows[0]["removed"] == 1
    assert rows[0]["state_handler"] == "<lambda>"
    assert len(rows[0]["checksum"]) == 8
    labels = [label for label, _ in panel.versions.options]
    assert labels[0].startswith("● v3") and "migrated by <lambda>" in labels[0]
    assert panel.versions.value == 3
    assert panel.diff_from.value == "v2" and panel.diff_to.value == "v3"
    assert "return 3" in panel.diff_view.value


def test_rollback_undo_redo_buttons_act_on_the_sandbox(sid):
    for n in (1, 2, 3):
        load(sid, n)
    panel = HistoryPanel(sid, "val")
    panel.versions.value = 1
    panel.rollback_button.click()
    assert sm.get_sandbox(sid).value() == 1
    assert panel.versions.value == 1 and "now v1" in panel.status.value
    panel.undo_button.click()
    assert sm.get_module_version(sid, "val") == 3
    panel.redo_button.click()
    assert sm.get_module_version(sid, "val") == 1
    assert panel.redo_button.disabled and panel.redo_button.description == "Redo"
    panel.redo_button.click()                    # nothing to redo: shown, not raised
    assert "nothing to redo" in panel.status.value


def test_buttons_name_their_target_and_are_disabled_when_there_is_nothing_to_do(sid):
    load(sid, 1)
    panel = HistoryPanel(sid, "val")
    assert panel.versions.value == 1
    for b in (panel.rollback_button, panel.undo_button, panel.redo_button):
        assert b.disabled
    load(sid, 2)
    load(sid, 3)
    assert panel.versions.value == 3                 # the current row...
    assert panel.rollback_button.disabled            # ...so Rollback has nothing to do
    assert (panel.undo_button.description, panel.undo_button.disabled) == ("Undo to v2", False)
    panel.versions.value = 1
    assert (panel.rollback_button.description, panel.rollback_button.disabled) == (
        "Roll back to v1", False)
    panel.undo_button.click()
    assert sm.get_module_version(sid, "val") == 2
    assert panel.redo_button.description == "Redo to v3"
    assert panel.versions.value == 1                 # the user's choice stays selected


def test_version_list_grows_with_the_history_and_says_what_was_dropped(new_id):
    sm.create_sandbox(new_id, max_versions=4)
    for n in range(1, 7):
        load(new_id, n)
    panel = HistoryPanel(new_id)
    assert len(panel.versions.options) == 4 and panel.versions.rows == 4
    assert "2 older versions were dropped (max_versions=4)" in panel.notes.value
    assert panel.versions.layout.width == "100%"


def test_diff_follows_current_until_pinned(sid):
    for n in (1, 2, 3):
        load(sid, n)
    panel = HistoryPanel(sid)
    load(sid, 4)
    assert (panel.diff_from.value, panel.diff_to.value) == ("v3", "v4")
    assert not panel.pinned and panel.follow_button.disabled
    panel.diff_from.value = "v1"
    assert panel.pinned and "(pinned)" in panel.diff_view.value
    load(sid, 5)
    assert (panel.diff_from.value, panel.diff_to.value) == ("v1", "v4")
    panel.follow_button.click()
    assert (panel.diff_from.value, panel.diff_to.value) == ("v4", "v5") and not panel.pinned


def test_colours_come_from_the_theme_with_fallbacks(sid):
    load(sid, 1)
    load(sid, 2)
    panel = HistoryPanel(sid)
    assert "var(--jp-content-font-color1" in panel.diff_view.value
    assert "#e6ffec" not in panel.diff_view.value


def test_panel_refreshes_when_a_reload_happens_anywhere(sid):
    load(sid, 1)
    panel = HistoryPanel(sid)
    load(sid, 2)
    assert [v for _, v in panel.versions.options] == [2, 1]
    load(sid, 5, module="other")
    assert set(panel.module_picker.options) == {"val", "other"}
    sm.rollback_module(sid, "val", 1)
    assert panel.versions.value == 1


def test_diff_between_any_two_versions(sid):
    for n in (1, 2, 3):
        load(sid, n)
    panel = HistoryPanel(sid)
    panel.diff_from.value = "v1"
    panel.diff_to.value = "v3"
    assert "return 1" in panel.diff_view.value and "return 3" in panel.diff_view.value


def test_source_text_is_escaped(sid):
    sm.hot_reload_source(sid, "X = '<script>alert(1)</script>'\n", "evil")
    sm.hot_reload_source(sid, "X = '<img src=x onerror=alert(2)>'\n", "evil")
    panel = HistoryPanel(sid)
    assert "<img" not in panel.diff_view.value and "<script" not in panel.diff_view.value
    assert "&lt;img" in panel.diff_view.value


def test_unknown_sandbox_is_a_clear_error():
    with pytest.raises(sm.SandboxNotFoundError):
        HistoryPanel("nope")


def test_destroyed_sandbox_is_shown(new_id):
    sm.create_sandbox(new_id)
    load(new_id, 1)
    panel = HistoryPanel(new_id)
    sm.destroy_sandbox(new_id)
    assert "no longer exists" in panel.status.value


def test_after_a_restart_the_panel_reads_the_store_and_its_buttons_restore_first(new_id,
                                                                                listing_store):
    sm.create_sandbox(new_id)
    for n in (1, 2, 3):
        load(new_id, n)
    sm.destroy_sandbox(new_id)                   # a kernel restart: the history stays stored
    panel = HistoryPanel(new_id)
    assert [v for _, v in panel.versions.options] == [3, 2, 1]
    assert "return 2" in panel.diff_view.value and "return 3" in panel.diff_view.value
    assert new_id not in {s.id for s in sm.list_sandboxes()}
    panel.undo_button.click()
    assert "restored from the stored history first (val v3)" in panel.status.value
    assert "now v2 (undo)" in panel.status.value
    assert sm.get_sandbox(new_id).value() == 2 and panel.versions.value == 2
