"""Compilation into artifacts, and every way bytes can be bad."""

from __future__ import annotations

import importlib.util
import sys
import types

import pytest
from conftest import src

import sandbox_magic as sm
from sandbox_magic.engine.artifact import PYTHON_MAGIC, infer_module_name

COUNTER = src("""
    class Counter:
        def value(self):
            return 1
""")


def test_module_name_defaults_to_first_definition_lowercased():
    assert sm.compile_source(COUNTER).modules == ["counter"]
    assert sm.compile_source("X = 1\ndef Helper():\n    pass\n").modules == ["helper"]
    assert sm.compile_source(COUNTER, "other").modules == ["other"]


def test_source_without_definitions_needs_a_name():
    with pytest.raises(sm.CompileError, match="module="):
        sm.compile_source("x = 1\n")


def test_syntax_error_reports_module_line_and_column():
    with pytest.raises(sm.CompileError) as info:
        sm.compile_source("def f():\n    return (1,\n\nx = $\n", "broken")
    err = info.value
    assert err.module == "broken"
    assert err.line is not None and err.line >= 2
    assert err.column is not None
    assert "broken" in str(err) and "line" in str(err)
    assert isinstance(err, sm.SandboxError)


def test_compiler_only_errors_are_compile_errors_too():
    with pytest.raises(sm.CompileError) as info:
        sm.compile_source("def f():\n    pass\nreturn 5\n", "m")
    assert info.value.line == 3


def test_artifact_round_trips_through_bytes():
    art = sm.compile_source(COUNTER).artifacts[0]
    data = art.to_bytes()
    back = sm.Artifact.from_bytes(data)
    assert (back.module, back.source, back.checksum) == (art.module, art.source, art.checksum)
    assert back.python_magic == PYTHON_MAGIC == importlib.util.MAGIC_NUMBER
    ns: dict = {}
    exec(back.code, ns)
    assert ns["Counter"]().value() == 1


@pytest.mark.parametrize("mangle", [
    lambda b: b[:-1],                    # truncated
    lambda b: b[: len(b) // 2],          # cut in half
    lambda b: b[:40] + bytes([b[40] ^ 0xFF]) + b[41:],   # flipped byte in the header
    lambda b: b[:-40] + bytes([b[-40] ^ 0x01]) + b[-39:],  # flipped byte in the code
    lambda b: b"garbage" + b,
    lambda b: b"",
])
def test_corrupted_bytes_raise_a_clear_error_and_load_nothing(sid, mangle):
    data = sm.compile_source(COUNTER).artifacts[0].to_bytes()
    with pytest.raises(sm.ArtifactError):
        sm.hot_reload(sid, mangle(data))
    assert sm.get_sandbox_info(sid).modules == {}


def test_bytes_from_another_python_version_are_refused(sid):
    art = sm.compile_source(COUNTER).artifacts[0]
    foreign = sm.Artifact(module=art.module, code=art.code, source=art.source,
                          checksum=art.checksum, python_magic=b"\x00\x0d\r\n")
    with pytest.raises(sm.ArtifactError, match="compiled by Python"):
        sm.hot_reload(sid, foreign.to_bytes())
    assert sm.get_sandbox_info(sid).modules == {}


def test_non_bytes_artifact_is_refused(sid):
    with pytest.raises(sm.ArtifactError, match="hot_reload_source"):
        sm.hot_reload(sid, "class A: pass")  # type: ignore[arg-type]


def test_compile_file_writes_an_artifact_file(tmp_path):
    (tmp_path / "greeter.py").write_text("def greet():\n    return 'hi'\n")
    info = sm.compile_file(tmp_path / "greeter.py", output_dir=tmp_path / "out")
    assert info.modules == ["greeter"]
    (path,) = info.artifact_files
    assert sm.Artifact.from_bytes(path.read_bytes()).module == "greeter"


def test_compile_sandbox_compiles_every_file_or_nothing(tmp_path):
    (tmp_path / "a.py").write_text("def f():\n    return 1\n")
    (tmp_path / "b.py").write_text("import a\ndef g():\n    return a.f() + 1\n")
    info = sm.compile_sandbox(tmp_path, output_dir=tmp_path / "out")
    assert info.modules == ["a", "b"]
    assert len(info.artifact_files) == 2
    (tmp_path / "c.py").write_text("def broken(:\n")
    with pytest.raises(sm.CompileError) as err:
        sm.compile_sandbox(tmp_path)
    assert err.value.module == "c"


def test_compile_file_missing_file_is_a_compile_error(tmp_path):
    with pytest.raises(sm.CompileError, match="cannot read"):
        sm.compile_file(tmp_path / "nope.py")


# ------------------------------------------------------------ inferred names
@pytest.mark.parametrize("source, expected", [
    ("class Random:\n    pass\n", "random_module"),            # the standard library
    ("def Sys():\n    pass\n", "sys_module"),                   # a built-in module
    ("class Pytest:\n    pass\n", "pytest_module"),             # anything importable
    ("class If:\n    pass\n", "if_module"),                     # a keyword
    ("class Class:\n    pass\n", "class_module"),
    ("import zorblax\nclass Zorblax:\n    pass\n", "zorblax_module"),   # imported by the code
    ("class Widgetry:\n    def f(self):\n        from . import widgetry\n", "widgetry_module"),
    ("class Match:\n    pass\n", "match"),                      # soft keywords are fine
    ("def __getattr__(name):\n    pass\nclass Counter:\n    pass\n", "counter"),
])
def test_inferred_name_never_shadows_an_importable_module_nor_is_a_keyword(source, expected):
    assert infer_module_name(source) == expected
    assert sm.compile_source(source).modules == [expected]


def test_a_class_named_like_a_stdlib_module_can_still_import_it(sid):
    r = sm.hot_reload_source(sid, src("""
        import random

        class Random:
            def roll(self):
                return random.Random(4).randint(1, 6) in range(1, 7)
    """))
    assert r.module == "random_module"
    assert sm.get_sandbox(sid).Random().roll() is True
    assert f"sandbox_magic.sandboxes.{sid}.random" not in sys.modules


def test_no_inferable_name_asks_for_one(monkeypatch):
    monkeypatch.setitem(sys.modules, "zork", types.ModuleType("zork"))
    monkeypatch.setitem(sys.modules, "zork_module", types.ModuleType("zork_module"))
    assert infer_module_name("class Zork:\n    pass\n") is None
    with pytest.raises(sm.CompileError, match="module='name'") as info:
        sm.compile_source("class Zork:\n    pass\n")
    assert "'zork'" in str(info.value) and "'zork_module'" in str(info.value)
    assert sm.compile_source("class Zork:\n    pass\n", "zork").modules == ["zork"]


@pytest.mark.parametrize("name", ["class", "None", "if", "for"])
def test_explicit_keyword_module_names_are_refused(sid, name):
    with pytest.raises(sm.CompileError, match="keyword") as info:
        sm.compile_source(COUNTER, name)
    assert repr(name) in str(info.value)
    with pytest.raises(sm.CompileError, match="keyword"):
        sm.hot_reload_source(sid, COUNTER, name)
    assert sm.get_sandbox_info(sid).modules == {}


@pytest.mark.parametrize("name", ["my-module", "2fast", "", "__init__", "a..b", ".a", "a."])
def test_explicit_non_identifier_module_names_are_refused(name):
    with pytest.raises(sm.CompileError, match="not a valid module name"):
        sm.compile_source(COUNTER, name)


def test_artifact_bytes_naming_a_keyword_module_are_refused(sid):
    art = sm.compile_source(COUNTER).artifacts[0]
    bad = sm.Artifact(module="class", code=art.code, source=art.source, checksum=art.checksum)
    with pytest.raises(sm.ArtifactError, match="not a valid module name"):
        sm.hot_reload(sid, bad.to_bytes())
    assert sm.get_sandbox_info(sid).modules == {}


def test_syntax_errors_in_unnamed_source_read_sensibly():
    with pytest.raises(sm.CompileError) as info:
        sm.compile_source("x = 1\ny = (1,\n")
    msg = str(info.value)
    assert msg.startswith("cannot compile source (no module name given), line 2, column ")
    assert "::" not in msg and "source:" not in msg
    assert info.value.module is None and info.value.line == 2


def test_compiler_only_errors_carry_the_offending_line():
    with pytest.raises(sm.CompileError) as info:
        sm.compile_source("def f():\n    pass\nreturn 5\n")
    assert str(info.value).startswith("cannot compile module 'f', line 3, column 1: ")
    assert info.value.text == "return 5\n"


# ----------------------------------------------------- compile_source contract
def test_compile_source_returns_compile_info(tmp_path):
    info = sm.compile_source(COUNTER)
    assert isinstance(info, sm.CompileInfo)
    assert info.modules == ["counter"] and info.artifact_files == [] and info.output_dir is None
    (art,) = info.artifacts
    assert isinstance(art, sm.Artifact) and info.artifact is art
    written = sm.compile_source(COUNTER, output_dir=tmp_path / "out")
    (path,) = written.artifact_files
    assert path == tmp_path / "out" / "counter.sbxc" and written.output_dir == tmp_path / "out"
    assert sm.Artifact.from_bytes(path.read_bytes()).checksum == art.checksum


def test_hot_reload_takes_a_compile_info(sid):
    assert sm.hot_reload(sid, sm.compile_source(COUNTER)).new_version == 1
    assert sm.get_sandbox(sid).Counter().value() == 1
    r = sm.hot_reload(sid, sm.compile_source(COUNTER.replace("return 1", "return 2")))
    assert r.new_version == 2 and sm.get_sandbox(sid).Counter().value() == 2


def test_hot_reload_loads_every_artifact_of_a_compile_info_as_one_transaction(sid, tmp_path):
    (tmp_path / "a.py").write_text("def f():\n    return 1\n")
    (tmp_path / "b.py").write_text("import a\ndef g():\n    return a.f() + 1\n")
    r = sm.hot_reload(sid, sm.compile_sandbox(tmp_path, output_dir=tmp_path / "out"))
    assert [m.module for m in r.modules] == ["a", "b"]
    assert sm.get_sandbox(sid).g() == 2
    (tmp_path / "a.py").write_text("def f():\n    return 10\n")
    (tmp_path / "b.py").write_text("import a\ndef g():\n    return a.f() + 1\n1 / 0\n")
    with pytest.raises(sm.ReloadError):
        sm.hot_reload(sid, sm.compile_sandbox(tmp_path, output_dir=tmp_path / "out"))
    assert sm.get_sandbox(sid).g() == 2                  # neither module changed
    assert sm.get_sandbox_info(sid).modules == {"a": 1, "b": 1}


def test_batch_takes_a_compile_info(sid, new_id, tmp_path):
    sm.create_sandbox(new_id)
    (tmp_path / "a.py").write_text("def f():\n    return 1\n")
    (tmp_path / "b.py").write_text("import a\ndef g():\n    return a.f() + 1\n")
    res = sm.batch_hot_reload([sid, new_id], sm.compile_sandbox(tmp_path, output_dir=tmp_path))
    assert all(r.ok for _, r in res)
    assert sm.get_sandbox(new_id).g() == 2
    res = sm.batch_hot_reload([sid], sm.compile_source("def f():\n    return 5\n", "a"))
    assert res[0][1].new_version == 2 and sm.get_sandbox(sid).g() == 6
