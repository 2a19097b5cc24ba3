"""The JupyterLab panel in a real JupyterLab, driven in Chromium (Playwright).

A JupyterLab server runs on 127.0.0.1 with this package installed; the test
opens a notebook, reloads a module twice, sees both versions appear in the
sidebar, rolls back from the panel and checks that the kernel runs the old code,
and checks that source text containing HTML is shown as text.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TOKEN = "sandbox-magic-browser-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("%load_ext sandbox_magic")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, str(root / "panel.ipynb"))
    port = _free_port()
    store = tmp_path_factory.mktemp("store") / "history.sqlite3"
    env = {**os.environ, "SANDBOX_MAGIC_STORE": str(store)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
         f"--ServerApp.port={port}", "--ServerApp.ip=127.0.0.1",
         f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}",
         "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={TOKEN}", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError("JupyterLab did not start: " + proc.stderr.read().decode()[-2000:])
    yield base
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def page(lab):
    from playwright.sync_api import sync_playwright

    executable = os.environ.get("SANDBOX_MAGIC_CHROMIUM") or shutil.which("chromium")
    assert executable, "Chromium is not installed (the test command installs it)"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=FLAGS, headless=True)
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        pg = context.new_page()
        pg.goto(f"{lab}/lab/tree/panel.ipynb?token={TOKEN}")
        pg.wait_for_function("window.jupyterapp && window.jupyterapp.shell.currentWidget"
                             " && window.jupyterapp.shell.currentWidget.sessionContext"
                             " && window.jupyterapp.shell.currentWidget.sessionContext.session"
                             " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel",
                             timeout=90_000)
        yield pg
        browser.close()


RUN_CELL = """async (source) => {
  const app = window.jupyterapp;
  const panel = app.shell.currentWidget;
  const nb = panel.content;
  const model = nb.model.sharedModel;
  model.insertCell(model.cells.length, {cell_type: 'code', source});
  nb.activeCellIndex = model.cells.length - 1;
  await panel.sessionContext.ready;
  await app.commands.execute('notebook:run-cell');
  const cell = nb.widgets[nb.widgets.length - 1];
  for (let i = 0; i < 600; i++) {
    if (cell.model.executionCount !== null && cell.model.executionCount !== undefined
        && panel.sessionContext.session.kernel.status === 'idle') { break; }
    await new Promise(r => setTimeout(r, 50));
  }
  return cell.model.outputs.toJSON().map(o =>
    o.text || (o.data && o.data['text/plain']) || (o.ename ? o.ename + ': ' + o.evalue : '')
  ).join('');
}"""


def run(page, source: str) -> str:
    return page.evaluate(RUN_CELL, source)


def versions(page) -> list[str]:
    return page.eval_on_selector_all(
        "#sandbox-magic-panel .jp-SandboxPanel-version",
        "els => els.map(e => e.dataset.version + (e.classList.contains('jp-mod-current') ? '*' : ''))")


def wait_versions(page, expected: list[str], timeout: float = 20.0) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if versions(page) == expected:
            return time.perf_counter() - t0
        page.wait_for_timeout(20)
    raise AssertionError(f"panel shows {versions(page)}, expected {expected}")


GREET = "%%sandbox_reload demo greet\ndef greet():\n    return {!r}\n"


def test_panel_follows_reloads_and_rolls_back(page):
    page.click("[data-id='sandbox-magic-panel']")
    page.wait_for_selector("#sandbox-magic-panel .jp-SandboxPanel-empty")
    run(page, "%load_ext sandbox_magic")
    assert "demo.greet: new version v1" in run(page, GREET.format("hello from v1"))
    assert "demo.greet: new version v2 (was v1)" in run(page, GREET.format("hello from v2"))
    wait_versions(page, ["2*", "1"])
    diff = page.inner_text("#sandbox-magic-panel .jp-SandboxPanel-diff")
    assert "- " in diff and "hello from v1" in diff and "hello from v2" in diff

    started = time.perf_counter()
    page.evaluate(RUN_CELL.replace("await app.commands.execute('notebook:run-cell');",
                                   "app.commands.execute('notebook:run-cell');"),
                  GREET.format("hello from v3"))
    wait_versions(page, ["3*", "2", "1"])
    latency = time.perf_counter() - started
    record("reload cell run → new version shown in the panel", latency)

    page.click("#sandbox-magic-panel li[data-version='1'] .jp-SandboxPanel-rollback")
    wait_versions(page, ["3", "2", "1*"])
    status = page.inner_text("#sandbox-magic-panel .jp-SandboxPanel-status")
    assert "now v1" in status
    assert "hello from v1" in run(page, "demo.greet()")
    page.click("#sandbox-magic-panel .jp-SandboxPanel-undo")
    wait_versions(page, ["3*", "2", "1"])
    assert "hello from v3" in run(page, "demo.greet()")
    no_news = page.get_by_role("button", name="No", exact=True)
    if no_news.count():
        no_news.first.click()      # the news prompt is not part of the picture
        page.wait_for_timeout(800)
    page.screenshot(path=str(ROOT / "labextension" / "screenshot.png"))


def test_kernel_text_is_never_rendered_as_html(page):
    evil = "<img src=x onerror=\"window.__sandbox_xss = 1\">"
    run(page, f"%%sandbox_reload xss\ndef evil():\n    return {evil!r}\n")
    run(page, f"%%sandbox_reload xss evil\ndef evil():\n    return {evil + ' again'!r}\n")
    page.select_option("#sandbox-magic-panel .jp-SandboxPanel-sandbox", "xss")
    page.wait_for_function("document.querySelector('#sandbox-magic-panel .jp-SandboxPanel-diff')"
                           " && document.querySelector('#sandbox-magic-panel .jp-SandboxPanel-diff')"
                           ".textContent.includes('again')")
    diff = page.inner_text("#sandbox-magic-panel .jp-SandboxPanel-diff")
    assert "<img src=x" in diff
    assert page.eval_on_selector_all("#sandbox-magic-panel img", "els => els.length") == 0
    page.wait_for_timeout(300)
    assert page.evaluate("window.__sandbox_xss") is None


def test_panel_reattaches_after_a_kernel_restart(page):
    page.evaluate("window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.restart()")
    page.wait_for_selector("#sandbox-magic-panel .jp-SandboxPanel-empty", timeout=30_000)
    run(page, "%load_ext sandbox_magic")
    out = run(page, "%sandbox_restore demo")
    assert "demo restored" in out
    page.select_option("#sandbox-magic-panel .jp-SandboxPanel-sandbox", "demo")
    wait_versions(page, ["3*", "2", "1"])


def record(what: str, seconds: float) -> None:
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "browser.json").write_text(json.dumps({"what": what, "seconds": seconds}))
