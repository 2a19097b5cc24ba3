"""Every notebook in notebooks/ runs top to bottom in a real kernel, with the right results."""

from __future__ import annotations

import copy
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def execute(name: str, tmp_path: Path):
    nb = nbformat.read(str(NOTEBOOKS / name), as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    return nb


def text(nb, tag: str) -> str:
    # the last cell with the tag: a notebook run twice over holds it twice
    cell = [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])][-1]
    parts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            parts.append(out.text)
        elif out.output_type in ("execute_result", "display_data"):
            parts.append(out.data.get("text/plain", ""))
        elif out.output_type == "error":
            parts.append(f"{out.ename}: {out.evalue}")
    return "".join(parts)


def test_every_notebook_is_covered():
    assert {p.name for p in NOTEBOOKS.glob("*.ipynb")} == {
        "quickstart.ipynb", "tour.ipynb", "break_things.ipynb", "cluster.ipynb",
        "classroom-teacher.ipynb", "classroom-student.ipynb"}


def test_quickstart(tmp_path):
    nb = execute("quickstart.ipynb", tmp_path)
    assert text(nb, "count-before").strip() == "2"
    assert text(nb, "count-after").strip() == "12"          # state kept, new code
    diff = text(nb, "diff")
    assert "-        self.count += 1" in diff and "+        self.count += 10" in diff
    assert "demo.counter: rolled back to v1 (was v2)" in text(nb, "rollback")
    assert text(nb, "count-rolled-back").strip() == "13"
    widget_outputs = [o for c in nb.cells for o in c.get("outputs", [])
                      if o.output_type in ("display_data", "execute_result")
                      and "application/vnd.jupyter.widget-view+json" in o.data]
    assert widget_outputs, "the history panel was displayed"


def check_tour(nb) -> None:
    assert text(nb, "server-42").strip() == "42"
    assert text(nb, "server-after").strip() == "(43, 44, [42, 43])"
    cascade = text(nb, "cascade")
    assert "('pricing',)" in cascade and "(105.0, 10.5)" in cascade
    assert text(nb, "versions").strip() == "[(2, True), (1, False)]"
    assert text(nb, "rollback").strip() == "(1, 120.0)"
    assert "rolled back to v1" in text(nb, "safe-bad")
    assert "deployed v4" in text(nb, "safe-good")
    assert "RuntimeError" in text(nb, "raises-exception")
    assert "nothing was changed" in text(nb, "raises-exception")
    assert text(nb, "after-failure").strip() == "110.0"
    assert text(nb, "plugin").strip() == "'Welcome back, class!'"
    assert text(nb, "editor-undo").strip() == "(1, 12)"
    batch = text(nb, "batch")
    assert "19 updated; failed: ['tenant13']" in batch and "45.0" in batch
    cascade = text(nb, "cascade-manager")
    assert "['tax', 'pricing']" in cascade and "(('pricing',), 12.5)" in cascade
    dry = text(nb, "dry-run")
    assert "dry run: tax v5 -> v6: would be applied" in dry and "check: passed" in dry
    assert "dependents re-run: pricing" in dry and "nothing was changed" in dry
    assert text(nb, "price-then").strip() == "125.0"        # the dry run changed nothing
    assert text(nb, "price-now").strip() == "108.0"
    ran = text(nb, "ran").splitlines()
    assert ran[0].endswith("store.pricing v1, store.tax v5 (now v6)"), ran
    assert ran[1].endswith("store.pricing v1, store.tax v6"), ran


def test_tour(tmp_path):
    nb = execute("tour.ipynb", tmp_path)
    check_tour(nb)
    (panel,) = [c for c in nb.cells if c.source.startswith("%sandbox_history")]
    assert panel.source == "%sandbox_history store tax"     # the module with many versions
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {})
               for o in panel.outputs)


def test_quickstart_introduces_the_sidebar():
    nb = nbformat.read(str(NOTEBOOKS / "quickstart.ipynb"), as_version=4)
    words = " ".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "**Sandbox history** tab" in words and "Open Sandbox History" in words


def test_tour_runs_again_from_the_top_any_number_of_times(tmp_path):
    """Run All twice in one kernel, then once more in a new kernel (the history store
    of the earlier runs is still beside the notebook): the same results every time."""
    nb = nbformat.read(str(NOTEBOOKS / "tour.ipynb"), as_version=4)
    again = copy.deepcopy(nb.cells)
    nb.cells += again
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    check_tour(nb)
    check_tour(execute("tour.ipynb", tmp_path))


@pytest.mark.parametrize("name", ["quickstart.ipynb", "tour.ipynb", "classroom-teacher.ipynb",
                                  "classroom-student.ipynb"])
def test_notebooks_are_committed_without_outputs(name):
    nb = nbformat.read(str(NOTEBOOKS / name), as_version=4)
    nbformat.validate(nb)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")


def test_break_things_in_a_process_sandbox(tmp_path):
    nb = execute("break_things.ipynb", tmp_path)
    assert text(nb, "count").strip() == "(1, 2)"
    after_loop = text(nb, "after-loop")
    assert "stopped:" in after_loop and after_loop.strip().endswith("3")
    after_crash = text(nb, "after-crash")
    assert "crashed:" in after_crash and "c lived in the old child" in after_crash
    assert after_crash.strip().endswith("1")
    assert text(nb, "still-here").strip() == "('yes', 1)"


def test_cluster(tmp_path):
    nb = execute("cluster.ipynb", tmp_path)
    assert text(nb, "before").strip() == "{0: 2, 1: 2}"
    assert text(nb, "after").strip() == "{0: 12, 1: 12}"
    refused = text(nb, "refused")
    assert "refused:" in refused and "engine 1" in refused
    assert refused.strip().endswith("{0: 22, 1: 22}")
    assert text(nb, "versions").strip() == "(2, [2, 1])"


def test_tour_check_section(tmp_path):
    nb = execute("tour.ipynb", tmp_path)
    out = text(nb, "check")
    assert "refused at step check" in out and out.strip().endswith("True")


def test_the_class_notebooks_in_two_kernels(tmp_path):
    """The teacher's notebook and a student's, each in its own kernel: the student follows
    the published sandbox, and the teacher's next version reaches the student's object."""
    import os

    os.environ["SANDBOX_CLASS_DIR"] = str(tmp_path / "class")
    try:
        teacher = nbformat.read(str(NOTEBOOKS / "classroom-teacher.ipynb"), as_version=4)
        student = nbformat.read(str(NOTEBOOKS / "classroom-student.ipynb"), as_version=4)
        tc = NotebookClient(teacher, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
        sc = NotebookClient(student, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
        with tc.setup_kernel(), sc.setup_kernel():
            t_cells = [(i, c) for i, c in enumerate(teacher.cells) if c.cell_type == "code"]
            s_cells = [(i, c) for i, c in enumerate(student.cells) if c.cell_type == "code"]
            last = t_cells[-1]
            for i, c in t_cells[:-1]:            # up to publishing v1
                tc.execute_cell(c, i)
            waiting = s_cells[3]                 # the cell that waits for the new version
            for i, c in s_cells[:3]:
                sc.execute_cell(c, i)
            tc.execute_cell(last[1], last[0])    # the teacher's v2
            for i, c in s_cells[3:]:
                sc.execute_cell(c, i)
            assert waiting[1] is s_cells[3][1]
    finally:
        os.environ.pop("SANDBOX_CLASS_DIR", None)
    assert "lesson: published to" in text(teacher, "publish")
    assert "lesson.counter: new version v2 (was v1)" in text(teacher, "v2")
    follow = text(student, "follow")
    assert "lesson.counter: v1 from the teacher applied" in follow and "following" in follow
    assert text(student, "before").strip() == "(1, 2)"
    # the same object, the teacher's v2 (the follower's own line, printed from its
    # thread, lands in whichever cell runs then)
    # (its best count, 2, came from the teacher's state handler run here)
    assert text(student, "after").strip().splitlines()[-1] == "(2, 12)"
    assert "will migrate state at the next reload of lesson.counter" in text(teacher,
                                                                              "handler")
    assert "no longer following" in text(student, "stop")
