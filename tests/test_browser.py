"""The JupyterLab panel in a real JupyterLab, driven in Chromium (Playwright).

One JupyterLab server (on 127.0.0.1, with this package installed, its own
settings, workspaces and history store in a temporary folder) and one
Chromium serve the whole module; every test gets its own notebook in its own
folder, with its own kernel and browser context, so the tests run alone or
in any order. The server's output goes to a log file (no pipe to fill up).

Every wait is for a condition, with a timeout that fails with what was
awaited and what the panel showed instead. The tests write what they measure
and photograph to ``benchmarks/results/``: ``browser.json`` (reload cell ->
new version in the panel) and ``panel-light.png`` / ``panel-dark.png`` (the
panel in both JupyterLab themes). The README's picture,
``labextension/screenshot.png``, is never written here: copy
``panel-light.png`` over it on purpose, after looking at it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TOKEN = "sandbox-magic-browser-test"
PANEL = "#sandbox-magic-panel"
SERVER_START_S = 90.0
PAGE_LOAD_S = 90.0
CELL_S = 60.0
PANEL_S = 20.0


@dataclass
class Lab:
    url: str
    root: Path
    log: Path

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def api(self, method: str, path: str) -> object:
        req = urllib.request.Request(f"{self.url}{path}", method=method,
                                     headers={"Authorization": f"token {TOKEN}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read()
        return json.loads(body) if body else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server with its own settings, workspaces and history store."""
    base = tmp_path_factory.mktemp("lab")
    root, settings, workspaces = base / "notebooks", base / "settings", base / "workspaces"
    for d in (root, settings, workspaces):
        d.mkdir()
    # No news prompt (it would cover the panel) and no update check (no network here).
    notif = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notif.parent.mkdir(parents=True)
    notif.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    port = _free_port()
    env = {**os.environ, "SANDBOX_MAGIC_STORE": str(base / "history.sqlite3")}
    log = base / "jupyterlab.log"
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
             f"--ServerApp.port={port}", "--ServerApp.ip=127.0.0.1",
             f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}",
             f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={workspaces}",
             "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=",
             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
            env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    server = Lab(url, root, log)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {proc.returncode} while starting; "
                                   f"its log ({log}) ends:\n{server.log_tail()}")
            try:
                server.api("GET", "/api/status")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not answer within {SERVER_START_S:g} s;"
                                       f" its log ({log}) ends:\n{server.log_tail()}") from None
                time.sleep(0.2)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    executable = os.environ.get("SANDBOX_MAGIC_CHROMIUM") or shutil.which("chromium")
    assert executable, "Chromium is not installed (the test command installs it)"
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=executable, args=FLAGS, headless=True)
        yield chromium
        chromium.close()


# --- waiting for conditions in the page ---------------------------------------------

def panel_text(page) -> str:
    return page.evaluate(f"document.querySelector('{PANEL}')?.innerText ?? '(no panel)'")


def wait_for(page, expression: str, what: str, timeout: float = PANEL_S, arg=None) -> float:
    """Wait until ``expression`` (a JS function of ``arg``) is truthy; seconds it took."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    t0 = time.perf_counter()
    try:
        page.wait_for_function(expression, arg=arg, timeout=timeout * 1000)
    except PlaywrightTimeout:
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; the panel "
                             f"shows: {panel_text(page)!r}") from None
    return time.perf_counter() - t0


VERSIONS = f"""() => [...document.querySelectorAll('{PANEL} .jp-SandboxPanel-version')]
  .map(e => e.dataset.version + (e.classList.contains('jp-mod-current') ? '*' : ''))"""


def versions(page) -> list[str]:
    return page.evaluate(VERSIONS)


def wait_versions(page, expected: list[str], timeout: float = PANEL_S) -> float:
    """Wait until the panel lists ``expected`` ("3*": v3, current); seconds it took."""
    try:
        return wait_for(page, f"e => JSON.stringify(({VERSIONS})()) === JSON.stringify(e)",
                        f"the panel to list versions {expected}", timeout, arg=expected)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nversions listed: {versions(page)}") from None


def wait_panel_text(page, text: str, timeout: float = PANEL_S) -> None:
    wait_for(page, f"t => (document.querySelector('{PANEL}')?.innerText ?? '').includes(t)",
             f"the panel to say {text!r}", timeout, arg=text)


# --- running cells --------------------------------------------------------------------

START_CELL = """(source) => {
  const app = window.jupyterapp;
  const panel = app.shell.currentWidget;
  const nb = panel.content;
  const model = nb.model.sharedModel;
  if (source !== null) {
    model.insertCell(model.cells.length, {cell_type: 'code', source});
  }
  nb.activeCellIndex = source === null ? 0 : model.cells.length - 1;
  window.__smCell = nb.widgets[nb.activeCellIndex];
  window.__smRun = app.commands.execute('notebook:run-cell');
}"""

FINISH_CELL = """async (timeoutMs) => {
  const panel = window.jupyterapp.shell.currentWidget;
  const cell = window.__smCell;
  await window.__smRun;
  const deadline = Date.now() + timeoutMs;
  while (cell.model.executionCount === null || cell.model.executionCount === undefined
         || panel.sessionContext.session.kernel.status !== 'idle') {
    if (Date.now() > deadline) {
      throw new Error(`the cell did not finish within ${timeoutMs} ms: `
                      + cell.model.sharedModel.getSource().split('\\n')[0]);
    }
    await new Promise(r => setTimeout(r, 20));
  }
  return cell.model.outputs.toJSON().map(o =>
    o.text || (o.data && o.data['text/plain']) || (o.ename ? o.ename + ': ' + o.evalue : '')
  ).join('');
}"""


def start_cell(page, source: str | None) -> None:
    """Append a cell with ``source`` (None: the notebook's first cell) and start running it."""
    page.evaluate(START_CELL, source)


def finish_cell(page, timeout: float = CELL_S) -> str:
    """Wait for the cell started last to finish; its output as text."""
    return page.evaluate(FINISH_CELL, timeout * 1000)


def run(page, source: str | None) -> str:
    start_cell(page, source)
    return finish_cell(page)


# --- a notebook of one's own ----------------------------------------------------------

@pytest.fixture
def page(lab, browser, request):
    """A new notebook (in a folder named after the test) open in a new browser context,
    with its own kernel, ``%load_ext sandbox_magic`` run and the sidebar panel attached."""
    folder = lab.root / re.sub(r"\W+", "_", request.node.name)
    folder.mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("%load_ext sandbox_magic")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    path = f"{folder.name}/panel.ipynb"
    nbformat.write(nb, str(lab.root / path))
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        pg = context.new_page()
        pg.goto(f"{lab.url}/lab/tree/{path}?reset&token={TOKEN}")
        wait_for(pg, """() => {
            const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
            const kernel = w && w.sessionContext && w.sessionContext.session
              && w.sessionContext.session.kernel;
            return kernel && kernel.status === 'idle'
              && document.querySelector('#sandbox-magic-panel') !== null;
        }""", "JupyterLab to open the notebook with an idle kernel", PAGE_LOAD_S)
        pg.evaluate("window.jupyterapp.shell.activateById('sandbox-magic-panel')")
        wait_panel_text(pg, "Run %load_ext sandbox_magic in this notebook")
        run(pg, None)
        wait_panel_text(pg, "No sandboxes yet")
        yield pg
    finally:
        context.close()
        for s in lab.api("GET", "/api/sessions"):
            if s["path"] == path:
                lab.api("DELETE", f"/api/sessions/{s['id']}")


GREET = "%%sandbox_reload demo greet\ndef greet():\n    return {!r}"


@pytest.fixture
def demo(page):
    """``page`` with the sandbox ``demo``: three versions of module ``greet``, v3 current."""
    assert "demo.greet: new version v1" in run(page, GREET.format("hello from v1"))
    assert "demo.greet: new version v2 (was v1)" in run(page, GREET.format("hello from v2"))
    assert "demo.greet: new version v3 (was v2)" in run(page, GREET.format("hello from v3"))
    wait_versions(page, ["3*", "2", "1"])
    return page


# --- the tests ------------------------------------------------------------------------

def test_panel_follows_reloads_and_rolls_back(demo):
    page = demo
    # (the pair shown by default after several reloads depends on timing; pick one)
    page.select_option(f"{PANEL} .jp-SandboxPanel-from", "1")
    page.select_option(f"{PANEL} .jp-SandboxPanel-to", "3")
    wait_for(page, f"""() => {{
        const text = sel => [...document.querySelectorAll(`{PANEL} .jp-SandboxPanel-diff ${{sel}}`)]
          .map(e => e.textContent).join('|');
        return text('.jp-mod-removed').includes("'hello from v1'")
          && text('.jp-mod-added').includes("'hello from v3'");
    }}""", "the panel to show the diff v1 -> v3")

    latencies = []
    for v in (4, 5, 6):
        started = time.perf_counter()
        start_cell(page, GREET.format(f"hello from v{v}"))
        wait_versions(page, [f"{v}*"] + [str(k) for k in range(v - 1, 0, -1)])
        latencies.append(time.perf_counter() - started)
        assert f"demo.greet: new version v{v} (was v{v - 1})" in finish_cell(page)
    record("reload cell run → new version shown in the panel", latencies)

    page.click(f"{PANEL} li[data-version='1'] .jp-SandboxPanel-rollback")
    wait_versions(page, ["6", "5", "4", "3", "2", "1*"])
    assert "now v1" in page.inner_text(f"{PANEL} .jp-SandboxPanel-status")
    assert "hello from v1" in run(page, "demo.greet()")
    page.click(f"{PANEL} .jp-SandboxPanel-undo")
    wait_versions(page, ["6*", "5", "4", "3", "2", "1"])
    assert "hello from v6" in run(page, "demo.greet()")


def test_kernel_text_is_never_rendered_as_html(page):
    # Count every <img> that ever enters the panel, however briefly.
    page.evaluate(f"""() => {{
      window.__smImages = 0;
      new MutationObserver(records => {{
        for (const r of records) {{
          for (const n of r.addedNodes) {{
            if (n.nodeType === 1 && (n.tagName === 'IMG' || n.querySelector('img'))) {{
              window.__smImages++;
            }}
          }}
        }}
      }}).observe(document.querySelector('{PANEL}'), {{childList: true, subtree: true}});
    }}""")
    evil = "<img src=x onerror=\"window.__sandbox_xss = 1\">"
    assert "new version v1" in run(
        page, f"%%sandbox_reload xss\ndef evil():\n    return {evil!r}\n")
    assert "new version v2" in run(
        page, f"%%sandbox_reload xss evil\ndef evil():\n    return {evil + ' again'!r}\n")
    wait_for(page, f"""() => (document.querySelector('{PANEL} .jp-SandboxPanel-diff')
                              ?.textContent ?? '').includes('again')""",
             "the panel to show the diff of xss.evil v1 -> v2")
    diff = page.inner_text(f"{PANEL} .jp-SandboxPanel-diff")
    assert "<img src=x" in diff
    assert page.evaluate("window.__smImages") == 0
    assert page.evaluate("window.__sandbox_xss") is None


def test_panel_reattaches_after_a_kernel_restart(demo):
    page = demo
    page.evaluate("window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.restart()")
    wait_panel_text(page, "Run %load_ext sandbox_magic in this notebook", timeout=60)
    run(page, None)
    # the history is read from the store at once, before anything is loaded
    wait_versions(page, ["3*", "2", "1"])
    wait_for(page, f"""() => document.querySelector('{PANEL} .jp-SandboxPanel-sandbox')
                       ?.selectedOptions[0]?.textContent === 'demo (stored, not loaded)'""",
             "the panel to list demo as stored, not loaded")
    assert "demo restored" in run(page, "%sandbox_restore demo")
    wait_for(page, f"""() => document.querySelector('{PANEL} .jp-SandboxPanel-sandbox')
                       ?.selectedOptions[0]?.textContent === 'demo'""",
             "the panel to list demo as loaded after %sandbox_restore")
    wait_versions(page, ["3*", "2", "1"])
    assert "hello from v3" in run(page, "demo.greet()")


THEMES = {"light": "JupyterLab Light", "dark": "JupyterLab Dark"}


def test_screenshots_in_light_and_dark_theme(demo):
    page = demo
    page.click(f"{PANEL} li[data-version='2'] .jp-SandboxPanel-rollback")
    wait_versions(page, ["3", "2*", "1"])
    assert "hello from v2" in run(page, "demo.greet()")
    page.evaluate("window.jupyterapp.shell.collapseLeft()")   # the picture is about the panel
    RESULTS.mkdir(parents=True, exist_ok=True)
    try:
        for key, theme in THEMES.items():
            page.evaluate("t => window.jupyterapp.commands.execute('apputils:change-theme',"
                          " {theme: t})", theme)
            # the theme is loaded, and the splash JupyterLab shows meanwhile is gone
            wait_for(page, "t => document.body.dataset.jpThemeName === t"
                           " && document.getElementById('jupyterlab-splash') === null",
                     f"JupyterLab to load the theme {theme!r}", arg=theme)
            wait_versions(page, ["3", "2*", "1"])
            wait_for(page, "() => window.jupyterapp.shell.currentWidget.sessionContext"
                           ".session.kernel.status === 'idle'", "the kernel to be idle")
            page.screenshot(path=str(RESULTS / f"panel-{key}.png"))
    finally:
        page.evaluate("t => window.jupyterapp.commands.execute('apputils:change-theme',"
                      " {theme: t})", THEMES["light"])


def record(what: str, seconds: list[float]) -> None:
    """Keep a browser timing (median, min, max over the runs) in benchmarks/results."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "browser.json").write_text(json.dumps({
        "what": what, "seconds": statistics.median(seconds), "min": min(seconds),
        "max": max(seconds), "runs": len(seconds)}) + "\n")
