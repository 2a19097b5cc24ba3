"""Every code block of the README runs as written, so that the README cannot drift.

* ``python`` blocks: each in a fresh process, in a fresh working directory (the
  default history store goes there), and must end without an error; the quick start
  runs twice in the same folder (the second run finds the first one's history);
* ``ipython`` blocks: in an IPython shell with the extension loaded; a cell starting
  with ``%%`` runs to the next blank line, a ``%`` line is one line magic, and the
  lines after it are what it must print;
* ``text`` blocks are diagrams, layouts and magic syntax; ``bash`` blocks are the
  commands that this suite is run by (``.ci/test``), the main job (``.ci/lab``),
  and the build and install commands that ``.ci/test-dist`` runs; none is run here.

A block without a language fails the test: every block says what it is.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)
RUNNERS = ("python", "ipython")
KNOWN = (*RUNNERS, "text", "bash")


def blocks() -> list[tuple[int, str, str]]:
    text = README.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 1, m.group(1), m.group(2))
            for m in _FENCE.finditer(text)]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SANDBOX_MAGIC_STORE"}
    # the same sandbox_magic as this process (installed, or a work tree on the path)
    import sandbox_magic
    root = str(Path(sandbox_magic.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


def test_every_block_says_what_it_is():
    found = blocks()
    assert len([b for b in found if b[1] in RUNNERS]) >= 7
    assert [(line, lang) for line, lang, _ in found if lang not in KNOWN] == []


@pytest.mark.parametrize("line,code", [(line, code) for line, lang, code in blocks()
                                       if lang == "python"],
                         ids=lambda v: f"line {v}" if isinstance(v, int) else "")
def test_python_block_runs_as_written(line, code, tmp_path):
    runs = 2 if "Counter" in code and "rollback_module" in code else 1   # the quick start
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(),
                             capture_output=True, text=True, timeout=240,
                             stdin=subprocess.DEVNULL)
        assert out.returncode == 0, f"README line {line}:\n{out.stderr[-3000:]}"


IPYTHON_RUNNER = textwrap.dedent('''
    import json, sys
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "sandbox_magic")
    out = []
    for cell in json.loads(sys.stdin.read()):
        with capture_output() as cap:
            r = shell.run_cell(cell)
        out.append({"ok": r.success, "stdout": cap.stdout,
                    "error": repr(r.error_in_exec or r.error_before_exec)})
    print(json.dumps(out))
''')


def _cells(code: str) -> list[tuple[str, list[str]]]:
    """(cell source, the lines it must print) for each cell of an ipython block."""
    cells: list[tuple[str, list[str]]] = []
    lines = code.splitlines()
    i = 0
    while i < len(lines):
        ln = lines[i]
        if not ln.strip():
            i += 1
        elif ln.startswith("%%"):
            j = i + 1
            while j < len(lines) and lines[j].strip():
                j += 1
            cells.append(("\n".join(lines[i:j]), []))
            i = j
        elif ln.startswith("%"):
            j = i + 1
            while j < len(lines) and lines[j].strip() and not lines[j].startswith("%"):
                j += 1
            cells.append((ln, lines[i + 1:j]))
            i = j
        else:
            raise AssertionError(f"an ipython block line that is neither a magic nor the "
                                 f"output of one: {ln!r}")
    return cells


@pytest.mark.parametrize("line,code", [(line, code) for line, lang, code in blocks()
                                       if lang == "ipython"],
                         ids=lambda v: f"line {v}" if isinstance(v, int) else "")
def test_ipython_block_runs_and_prints_what_it_shows(line, code, tmp_path):
    import json
    cells = _cells(code)
    out = subprocess.run([sys.executable, "-c", IPYTHON_RUNNER], cwd=tmp_path, env=_env(),
                         input=json.dumps([c for c, _ in cells]), capture_output=True,
                         text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])
    for (cell, expected), got in zip(cells, results):
        assert got["ok"], f"README line {line}: {cell!r} failed: {got['error']}"
        if expected:
            assert got["stdout"].strip().splitlines() == expected, (cell, got["stdout"])
