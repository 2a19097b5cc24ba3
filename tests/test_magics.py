"""The magics, driven through a real InteractiveShell."""

from __future__ import annotations

import itertools

import nbformat
import pytest
from IPython import get_ipython
from IPython.testing.globalipapp import start_ipython

import sandbox_magic as sm
from sandbox_magic.jupyter.magics import SandboxMagics

_ids = itertools.count()

V1 = "class Counter:\n    def __init__(self):\n        self.n = 0\n    def inc(self):\n" \
     "        self.n += 1\n        return self.n\n"
V2 = V1.replace("+= 1", "+= 10")


@pytest.fixture(scope="module")
def ip():
    shell = start_ipython() or get_ipython()   # started once per process
    shell.run_line_magic("load_ext", "sandbox_magic")
    return shell


@pytest.fixture
def sb_id(ip):
    name = f"mg{next(_ids)}"
    yield name
    if name in {s.id for s in sm.list_sandboxes()}:
        sm.destroy_sandbox(name)
    ip.user_ns.pop(name, None)


def cell(ip, text, cell_id=None):
    return ip.run_cell(text, cell_id=cell_id)


def test_reload_cell_creates_sandbox_binds_handle_and_keeps_state(ip, sb_id, capsys):
    r = cell(ip, f"%%sandbox_reload {sb_id}\n{V1}")
    assert r.success
    assert f"{sb_id}.counter: new version v1;" in capsys.readouterr().out
    assert isinstance(ip.user_ns[sb_id], sm.Sandbox)
    cell(ip, f"c = {sb_id}.Counter(); c.inc(); c.inc()")
    cell(ip, f"%%sandbox_reload {sb_id}\n{V2}")
    out = capsys.readouterr().out
    assert f"{sb_id}.counter: new version v2 (was v1)" in out and "ms" in out
    assert ip.user_ns["c"].inc() == 12
    assert "Counter" not in ip.user_ns      # the cell did not leak into the notebook


def test_reload_with_state_handler_magic_records_its_name(ip, sb_id, capsys):
    cell(ip, f"%%sandbox_reload {sb_id}\n{V1}")
    cell(ip, f"c = {sb_id}.Counter(); c.inc()")
    r = cell(ip, f"%%sandbox_state_handler {sb_id} counter\n"
                 "def add_log(state, old, new):\n    return {**state, 'log': [old, new]}\n")
    assert r.success
    assert "'add_log' will migrate" in capsys.readouterr().out
    cell(ip, f"%%sandbox_reload {sb_id}\n{V2}")
    assert "1 object migrated" in capsys.readouterr().out
    assert ip.user_ns["c"].log == [1, 2]
    assert sm.list_module_versions(sb_id, "counter")[0].state_handler == "add_log"
    cell(ip, f"%%sandbox_reload {sb_id}\n{V1.replace('+= 1', '+= 3')}")   # consumed: not reused
    assert "0 objects migrated" in capsys.readouterr().out


def test_state_handler_option_names_a_notebook_function(ip, sb_id, capsys):
    cell(ip, f"%%sandbox_reload {sb_id}\n{V1}")
    cell(ip, f"c = {sb_id}.Counter()\ndef mig(s, o, n):\n    return {{**s, 'tag': n}}")
    cell(ip, f"%%sandbox_reload {sb_id} --state-handler mig\n{V2}")
    assert ip.user_ns["c"].tag == 2
    r = cell(ip, f"%%sandbox_reload {sb_id} --state-handler nothere\n{V1}")
    assert not r.success
    assert "nothere" in capsys.readouterr().err


def test_a_failing_state_handler_is_named_with_its_line_and_not_run_again(ip, sb_id, capsys):
    cell(ip, f"%%sandbox_reload {sb_id}\n{V1}")
    cell(ip, f"c = {sb_id}.Counter(); c.inc()")
    cell(ip, f"%%sandbox_state_handler {sb_id} counter\n"
             "def add_log(state, old, new):\n"
             "    log = state['missing']\n"
             "    return {**state, 'log': log}\n")
    capsys.readouterr()
    r = cell(ip, f"%%sandbox_reload {sb_id}\n{V2}")
    assert not r.success
    err = capsys.readouterr().err
    assert "state handler 'add_log' raised KeyError: 'missing' at cell line 3: " \
           "log = state['missing'] while migrating Counter instance at 0x" in err
    assert "nothing was changed" in err and "Traceback" not in err
    assert "fix the %%sandbox_state_handler cell" in err and "--no-state" in err
    assert "'add_log' was dropped" in err
    assert sm.get_module_version(sb_id, "counter") == 1 and ip.user_ns["c"].n == 1
    from sandbox_magic.jupyter import activity
    (failure,) = activity.failures(sb_id, "counter")
    assert failure["state_handler"] == "add_log" and "add_log" in failure["message"]
    # the next plain reload does not run the failed handler again
    r = cell(ip, f"%%sandbox_reload {sb_id}\n{V2}")
    assert r.success and "new version v2" in capsys.readouterr().out
    assert sm.list_module_versions(sb_id, "counter")[0].state_handler is None


def test_a_failing_named_handler_says_how_to_fix_it(ip, sb_id, capsys):
    cell(ip, f"%%sandbox_reload {sb_id}\n{V1}")
    cell(ip, f"c = {sb_id}.Counter()\ndef bad(s, o, n):\n    return 1 / 0")
    capsys.readouterr()
    r = cell(ip, f"%%sandbox_reload {sb_id} --state-handler bad\n{V2}")
    assert not r.success
    err = capsys.readouterr().err
    assert "state handler 'bad' raised ZeroDivisionError: division by zero at line 3" in err
    assert "fix bad (or name another function with --state-handler)" in err
    assert "--no-state" in err and "dropped" not in err


def test_a_failed_reload_is_listed_for_the_panels(ip, sb_id, capsys):
    from sandbox_magic.jupyter import activity
    cell(ip, f"%%sandbox_reload {sb_id} counter\n{V1}")
    cell(ip, f"%%sandbox_reload {sb_id} counter\n{V1}\nraise RuntimeError('broken')\n")
    cell(ip, f"%%sandbox_reload {sb_id} counter\nclass Counter(:\n    pass\n")
    msgs = [f["message"] for f in activity.failures(sb_id, "counter")]
    assert len(msgs) == 2 and "syntax error" in msgs[0] and "broken" in msgs[1]
    assert sm.list_module_versions(sb_id, "counter")[0].version == 1
    origins = [activity.origin(sb_id, "counter", 1)]
    assert origins[0] is not None and origins[0]["kind"] == "cell"


def test_state_handler_cell_without_function_is_an_error(ip, sb_id, capsys):
    r = cell(ip, f"%%sandbox_state_handler {sb_id}\nx = 1\n")
    assert not r.success
    assert "defines no function" in capsys.readouterr().err


def test_syntax_error_shows_cell_line_and_keeps_previous_version(ip, sb_id, capsys):
    cell(ip, f"%%sandbox_reload {sb_id}\n{V1}")
    capsys.readouterr()
    r = cell(ip, f"%%sandbox_reload {sb_id} counter\nclass Counter:\n    def inc(self:\n"
                 "        pass\n")
    assert not r.success
    err = capsys.readouterr().err
    assert "cell line 3" in err and "nothing was changed" in err
    assert "Traceback" not in err
    assert sm.get_module_version(sb_id, "counter") == 1


def test_cell_named_like_a_stdlib_module_gets_its_own_module_name(ip, sb_id, capsys):
    r = cell(ip, f"%%sandbox_reload {sb_id}\nimport random\n\nclass Random:\n"
                 "    def pick(self):\n        return random.choice([7])\n")
    assert r.success
    assert f"{sb_id}.random_module: new version v1" in capsys.readouterr().out
    assert cell(ip, f"picked = {sb_id}.Random().pick()").success
    assert ip.user_ns["picked"] == 7


def test_cell_without_an_inferable_name_asks_for_one(ip, sb_id, capsys):
    r = cell(ip, f"%%sandbox_reload {sb_id}\nx = 1\n")
    assert not r.success
    err = capsys.readouterr().err
    assert "module name" in err and "syntax error" not in err and "nothing was changed" in err


def test_body_exception_shows_cell_line(ip, sb_id, capsys):
    cell(ip, f"%%sandbox_reload {sb_id}\n{V1}")
    capsys.readouterr()
    r = cell(ip, f"%%sandbox_reload {sb_id} counter\n{V2}\nraise ValueError('nope')\n")
    assert not r.success
    err = capsys.readouterr().err
    assert "cell line 9" in err and "ValueError" in err
    assert sm.get_module_version(sb_id, "counter") == 1


def test_editing_a_cell_keeps_updating_its_module(ip, sb_id, capsys):
    cell(ip, f"%%sandbox_reload {sb_id}\ndef alpha():\n    return 1\n", cell_id="cell-a")
    cell(ip, f"%%sandbox_reload {sb_id}\ndef beta():\n    return 2\n", cell_id="cell-a")
    assert sm.get_sandbox_info(sb_id).modules == {"alpha": 2}
    assert sm.get_sandbox(sb_id).beta() == 2


def test_handle_name_is_not_bound_when_taken(ip, sb_id):
    ip.user_ns[sb_id] = "mine"
    cell(ip, f"%%sandbox_reload {sb_id}\n{V1}")
    assert ip.user_ns[sb_id] == "mine"


def test_no_state_quiet_and_no_cascade(ip, sb_id, capsys):
    cell(ip, f"%%sandbox_reload {sb_id} base\ndef f():\n    return 1\n")
    cell(ip, f"%%sandbox_reload {sb_id} user\nimport base\nVAL = base.f()\n")
    capsys.readouterr()
    cell(ip, f"%%sandbox_reload {sb_id} base --quiet --no-cascade\ndef f():\n    return 2\n")
    assert capsys.readouterr().out == ""
    assert sm.get_sandbox(sb_id).VAL == 1
    cell(ip, f"%%sandbox_reload {sb_id} base --no-state\ndef f():\n    return 3\n")
    assert "also re-ran user" in capsys.readouterr().out
    assert sm.get_sandbox(sb_id).VAL == 3


def test_help_comes_from_magic_arguments(ip):
    doc = SandboxMagics.sandbox_reload.__doc__
    for opt in ("--state-handler", "--no-state", "--suspend-timeout", "--no-cascade", "--quiet"):
        assert opt in doc


def test_line_magics(ip, sb_id, capsys, tmp_path):
    cell(ip, f"%%sandbox_reload {sb_id}\n{V1}")
    cell(ip, f"%%sandbox_reload {sb_id}\n{V2}")
    capsys.readouterr()
    cell(ip, f"%sandbox_rollback {sb_id} counter 1")
    assert f"{sb_id}.counter: rolled back to v1 (was v2)" in capsys.readouterr().out
    assert sm.get_module_version(sb_id, "counter") == 1
    cell(ip, f"%sandbox_undo {sb_id} counter")
    assert sm.get_module_version(sb_id, "counter") == 2
    cell(ip, f"%sandbox_redo {sb_id} counter")
    assert sm.get_module_version(sb_id, "counter") == 1
    r = cell(ip, f"%sandbox_redo {sb_id} counter")
    assert not r.success
    cell(ip, f"%sandbox_diff {sb_id} counter 1 2")
    out = capsys.readouterr().out
    assert "-        self.n += 1" in out and "+        self.n += 10" in out
    cell(ip, "%sandbox_list")
    assert f"{sb_id}: counter v1" in capsys.readouterr().out
    assert ip.run_line_magic("sandbox_info", sb_id) is None
    out = capsys.readouterr().out          # plain words, not a repr
    assert out.startswith(f"sandbox {sb_id} (running): modules counter v1\n")
    assert "SandboxInfo(" not in out and "runs in kernel" in out
    assert ip.run_cell(f"%%sandbox_run {sb_id}\nCounter().inc()").result == 1
    path = tmp_path / "my history.ipynb"   # quoted as in a shell: one argument
    cell(ip, f'%sandbox_export {sb_id} "{path}"')
    nb = nbformat.read(str(path), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code" and "sandbox_magic" in c.metadata]
    assert [c.metadata["sandbox_magic"]["version"] for c in code] == [1, 2]
    assert code[0].source.startswith(f"%%sandbox_reload {sb_id} counter\nclass Counter")
    assert code[0].metadata["sandbox_magic"]["is_current"]
    cell(ip, f"%sandbox_destroy {sb_id}")
    assert sb_id not in ip.user_ns
    assert sb_id not in {s.id for s in sm.list_sandboxes()}


def test_diff_html_escapes_source(ip, sb_id):
    from sandbox_magic.jupyter.display import DiffDisplay
    cell(ip, f"%%sandbox_reload {sb_id} x\nA = '<b>'\n")
    cell(ip, f"%%sandbox_reload {sb_id} x\nA = '<img src=x onerror=alert(1)>'\n")
    html = DiffDisplay(sm.diff_versions(sb_id, "x", 1, 2))._repr_html_()
    assert "<img" not in html and "&lt;img src=x" in html


def test_bad_arguments_are_reported(ip, capsys):
    assert not cell(ip, "%%sandbox_reload 1bad\nx = 1\n").success
    assert not cell(ip, "%sandbox_rollback nosuch counter 1").success
    assert not cell(ip, "%sandbox_rollback x counter notanumber").success


def test_history_and_restore_after_a_restart(ip, sb_id, tmp_path, capsys):
    previous = sm.api.stores._default_store
    sm.set_default_store(tmp_path / "h.sqlite3")
    try:
        cell(ip, f"%%sandbox_reload {sb_id}\n{V1}")
        cell(ip, f"%%sandbox_reload {sb_id}\n{V2}")
        sm.destroy_sandbox(sb_id)               # what a kernel restart leaves behind
        ip.user_ns.pop(sb_id, None)
        capsys.readouterr()
        panel = ip.run_line_magic("sandbox_history", sb_id)
        assert [v for _, v in panel.versions.options] == [2, 1]
        assert sb_id not in {s.id for s in sm.list_sandboxes()}   # reading loads nothing
        cell(ip, f"%sandbox_restore {sb_id}")
        out = capsys.readouterr().out
        assert "counter v2" in out and "not restored" in out
        assert ip.user_ns[sb_id].Counter().inc() == 10
        cell(ip, f"%%sandbox_reload {sb_id}\n{V1.replace('+= 1', '+= 5')}")
        assert "counter: new version v3 (was v2)" in capsys.readouterr().out
        assert not cell(ip, "%sandbox_history never_seen_before").success
        assert "no recorded history" in capsys.readouterr().err
        cell(ip, f"%sandbox_destroy {sb_id} --forget")
        assert "history forgotten" in capsys.readouterr().out
        assert not cell(ip, f"%sandbox_history {sb_id}").success
    finally:
        sm.api.stores._default_store = previous


@pytest.fixture
def restart_store(tmp_path):
    """A fresh SQLite file as the default store (history survives destroy_sandbox, as it
    survives a kernel restart), in the tests' fixed history scope."""
    previous = sm.api.stores._default_store
    sm.set_default_store(tmp_path / "restart.sqlite3")
    yield
    sm.api.stores._default_store = previous


def restart(ip, sb_id):
    """What a kernel restart leaves: the stored history, no sandbox, no handle."""
    sm.destroy_sandbox(sb_id)
    ip.user_ns.pop(sb_id, None)


def test_every_history_command_works_at_once_after_a_restart(ip, sb_id, restart_store,
                                                              capsys, tmp_path):
    cell(ip, f"%%sandbox_reload {sb_id}\n{V1}")
    cell(ip, f"%%sandbox_reload {sb_id}\n{V2}")
    restart(ip, sb_id)
    capsys.readouterr()
    assert cell(ip, f"%sandbox_diff {sb_id} counter").success
    out = capsys.readouterr().out
    assert "-        self.n += 1" in out and "+        self.n += 10" in out
    path = tmp_path / "after_restart.ipynb"
    assert cell(ip, f"%sandbox_export {sb_id} {path}").success
    nb = nbformat.read(str(path), as_version=4)
    assert [c.metadata["sandbox_magic"]["version"] for c in nb.cells
            if "sandbox_magic" in c.metadata] == [1, 2]
    panel = ip.run_line_magic("sandbox_history", sb_id)
    assert [v for _, v in panel.versions.options] == [2, 1]
    assert sb_id not in {s.id for s in sm.list_sandboxes()}     # reading loaded nothing
    capsys.readouterr()

    restored = f"{sb_id} was not loaded in this kernel: restored it from its history first"
    assert cell(ip, f"%sandbox_rollback {sb_id} counter 1").success
    out = capsys.readouterr().out
    assert f"{restored} (counter v2)" in out
    assert f"{sb_id}.counter: rolled back to v1 (was v2)" in out
    assert ip.user_ns[sb_id].Counter().inc() == 1
    restart(ip, sb_id)
    assert cell(ip, f"%sandbox_undo {sb_id} counter").success
    out = capsys.readouterr().out
    assert f"{restored} (counter v1)" in out
    assert f"{sb_id}.counter: undo: v2 is current again (was v1)" in out
    restart(ip, sb_id)
    assert cell(ip, f"%sandbox_redo {sb_id} counter").success
    out = capsys.readouterr().out
    assert f"{restored} (counter v2)" in out
    assert f"{sb_id}.counter: redo: v1 is current again (was v2)" in out
    assert ip.user_ns[sb_id].Counter().inc() == 1


def test_list_and_info_name_sandboxes_whose_history_is_only_stored(ip, sb_id, listing_store,
                                                                   capsys):
    cell(ip, f"%%sandbox_reload {sb_id}\n{V1}")
    restart(ip, sb_id)
    capsys.readouterr()
    cell(ip, "%sandbox_list")
    out = capsys.readouterr().out
    assert f"{sb_id}: stored, not loaded (counter v1); %sandbox_restore {sb_id} loads it" in out
    assert not cell(ip, f"%sandbox_info {sb_id}").success
    err = capsys.readouterr().err
    assert f"not loaded in this kernel (its history is stored: counter v1); " \
           f"%sandbox_restore {sb_id} loads it" in err and len(err.splitlines()) == 1


def test_usage_errors_print_one_line(ip, sb_id, capsys, tmp_path):
    cell(ip, f"%%sandbox_reload {sb_id}\n{V1}")
    existing = tmp_path / "exists.ipynb"
    existing.write_text("{}")
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    cases = {
        f"%sandbox_rollback {sb_id} counter 99": "module 'counter' has no version 99",
        f"%sandbox_undo {sb_id} counter": "nothing to undo for module 'counter'",
        f"%sandbox_redo {sb_id} counter": "nothing to redo for module 'counter'",
        f"%sandbox_undo {sb_id} nomodule": f"sandbox '{sb_id}' has no module 'nomodule'",
        "%sandbox_rollback nosuch counter 1": "no sandbox 'nosuch' and no recorded history",
        "%sandbox_rollback bad/id counter 1": "invalid sandbox id 'bad/id'",
        f"%sandbox_diff {sb_id} counter 1 99": "module 'counter' has no version 99",
        f"%sandbox_diff {sb_id} counter": "has no version before v1",
        f"%sandbox_diff {sb_id} nomodule": "has no module 'nomodule'",
        f"%sandbox_history {sb_id} nomodule": "has no module 'nomodule'",
        "%sandbox_history nosuch": "no sandbox 'nosuch' and no recorded history",
        "%sandbox_info nosuch": "no sandbox 'nosuch' and no recorded history",
        "%sandbox_destroy nosuch": "no sandbox 'nosuch' and no recorded history",
        "%sandbox_restore nosuch": "no sandbox 'nosuch' and no recorded history",
        "%%sandbox_run nosuch\n1 + 1": "no sandbox 'nosuch' and no recorded history",
        f"%sandbox_export {sb_id} {tmp_path / 'h.txt'}": "export path must end in .ipynb",
        f"%sandbox_export {sb_id} {existing}": "already exists; add --force to overwrite it",
        f"%sandbox_export {sb_id} {a_file / 'h.ipynb'}": "is a file, not a folder",
        f"%sandbox_export nosuch {tmp_path / 'n.ipynb'}": "no sandbox 'nosuch'",
    }
    for line, expected in cases.items():
        r = cell(ip, line)
        captured = capsys.readouterr()
        assert not r.success, line
        assert expected in captured.err, (line, captured.err)
        assert len(captured.err.strip().splitlines()) == 1, (line, captured.err)
        assert "Traceback" not in captured.err + captured.out, line
    assert existing.read_text() == "{}"
    assert cell(ip, f"%sandbox_export {sb_id} {existing} --force").success
    assert nbformat.read(str(existing), as_version=4).cells


def test_rerunning_a_notebook_from_the_top_says_what_happened(ip, sb_id, restart_store,
                                                               capsys):
    V3 = V1.replace("+= 1", "+= 100")
    cell(ip, f"%%sandbox_reload {sb_id}\n{V1}", cell_id="one")
    cell(ip, f"%%sandbox_reload {sb_id}\n{V2}", cell_id="two")
    restart(ip, sb_id)
    capsys.readouterr()
    outs = []

    def run(text, cell_id=None):
        cell(ip, text, cell_id=cell_id)
        outs.append(capsys.readouterr().out)
        return outs[-1]

    assert f"{sb_id}.counter: same code as stored v1; v1 is current again (was v2)" in run(
        f"%%sandbox_reload {sb_id}\n{V1}", "one")
    assert f"{sb_id}.counter: same code as stored v2; v2 is current again (was v1)" in run(
        f"%%sandbox_reload {sb_id}\n{V2}", "two")
    assert f"{sb_id}.counter: no change (v2 is current)" in run(
        f"%%sandbox_reload {sb_id}\n{V2}", "two")
    assert f"{sb_id}.counter: new version v3 (was v2)" in run(
        f"%%sandbox_reload {sb_id}\n{V3}", "two")
    assert f"{sb_id}.counter: undo: v2 is current again (was v3)" in run(
        f"%sandbox_undo {sb_id} counter")
    assert f"{sb_id}.counter: redo: v3 is current again (was v2)" in run(
        f"%sandbox_redo {sb_id} counter")
    restart(ip, sb_id)
    assert f"{sb_id}.counter: same code as stored v3, the current version; loaded it" in run(
        f"%%sandbox_reload {sb_id}\n{V3}", "two")
    assert ip.user_ns[sb_id].Counter().inc() == 100
    for out in outs:
        assert "hot reloaded" not in out and "rolled back" not in out, out


def test_a_sandbox_the_sidebar_restores_gets_its_handle(ip, sb_id, restart_store):
    from sandbox_magic.jupyter.comm import handle_message
    cell(ip, f"%%sandbox_reload {sb_id}\n{V1}")
    cell(ip, f"%%sandbox_reload {sb_id}\n{V2}")
    restart(ip, sb_id)
    reply = handle_message({"protocol": 1, "id": 1, "method": "undo",
                            "params": {"sandbox": sb_id, "module": "counter"}})
    assert reply["ok"] and reply["result"]["restored"] == {"counter": 2}
    assert isinstance(ip.user_ns[sb_id], sm.Sandbox)
    assert cell(ip, f"{sb_id}.Counter().inc()").result == 1


def test_a_package_submodule_reloads_from_a_cell_and_shows_in_history(ip, sb_id, capsys):
    cell(ip, f"%%sandbox_reload {sb_id} shop.prices\ndef price():\n    return 2\n")
    cell(ip, f"%%sandbox_reload {sb_id} shop\nfrom .prices import price\n"
             "def total(n):\n    return n * price()\n")
    capsys.readouterr()
    assert ip.user_ns[sb_id].shop.total(3) == 6
    cell(ip, f"%%sandbox_reload {sb_id} shop.prices\ndef price():\n    return 5\n")
    out = capsys.readouterr().out
    assert f"{sb_id}.shop.prices: new version v2 (was v1)" in out
    assert ip.user_ns[sb_id].shop.total(3) == 15
    cell(ip, f"%sandbox_rollback {sb_id} shop.prices 1")
    assert ip.user_ns[sb_id].shop.total(3) == 6


def test_magics_work_in_a_cell_that_also_awaits(ip, sb_id):
    # top-level await: IPython runs the cell as a coroutine on its event loop; the
    # reload inside it (a magic, then the API) blocks that loop only while it runs
    assert cell(ip, f"%%sandbox_reload {sb_id}\n{V1}").success
    r = cell(ip, "import asyncio\nimport sandbox_magic\n"
                 "await asyncio.sleep(0)\n"
                 f"_ = sandbox_magic.hot_reload_source({sb_id!r}, {V2!r}, 'counter')\n"
                 "await asyncio.sleep(0)\n"
                 f"%sandbox_rollback {sb_id} counter 1\n"
                 f"await asyncio.sleep(0)\n"
                 f"{sb_id}.Counter().inc()")
    assert r.success, r.error_in_exec
    assert r.result == 1
    assert sm.get_module_version(sb_id, "counter") == 1


def test_dry_run_prints_what_the_reload_would_do_and_changes_nothing(ip, sb_id, capsys):
    cell(ip, f"%%sandbox_reload {sb_id}\n{V1}")
    cell(ip, f"c = {sb_id}.Counter(); c.inc()")
    cell(ip, f"%%sandbox_state_handler {sb_id} counter\n"
             "def add_log(state, old, new):\n    return {**state, 'log': [old, new]}\n")
    capsys.readouterr()
    r = cell(ip, f"%%sandbox_reload {sb_id} --dry-run --check \"Counter().inc() == 10\"\n{V2}")
    assert r.success
    out = capsys.readouterr().out
    assert "dry run: counter v1 -> v2: would be applied" in out
    assert "functions changed: counter.Counter.inc" in out
    assert "migrate 1 counter.Counter instance (adds log)" in out
    assert "check: passed" in out and "nothing was changed" in out
    assert sm.get_module_version(sb_id, "counter") == 1 and ip.user_ns["c"].inc() == 2
    # the handler waits for the real reload
    cell(ip, f"%%sandbox_reload {sb_id}\n{V2}")
    assert ip.user_ns["c"].inc() == 12 and vars(ip.user_ns["c"])["log"] == [1, 2]
    cell(ip, f"%sandbox_rollback {sb_id} counter 1 --dry-run")
    out = capsys.readouterr().out
    assert "dry run: counter v2 -> v1: would be applied" in out
    assert sm.get_module_version(sb_id, "counter") == 2
    cell(ip, f"%%sandbox_reload {sb_id} --dry-run\n{V2}raise ValueError('late')\n")
    out = capsys.readouterr().out
    assert "would be REFUSED (execute)" in out and "ValueError" in out
