"""Compilation into artifacts, and every way bytes can be bad."""

from __future__ import annotations

import importlib.util

import pytest
from conftest import src

import sandbox_magic as sm
from sandbox_magic._artifact import PYTHON_MAGIC

COUNTER = src("""
    class Counter:
        def value(self):
            return 1
""")


def test_module_name_defaults_to_first_definition_lowercased():
    assert sm.compile_source(COUNTER).module == "counter"
    assert sm.compile_source("X = 1\ndef Helper():\n    pass\n").module == "helper"
    assert sm.compile_source(COUNTER, "other").module == "other"


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
    art = sm.compile_source(COUNTER)
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
    data = sm.compile_source(COUNTER).to_bytes()
    with pytest.raises(sm.ArtifactError):
        sm.hot_reload(sid, mangle(data))
    assert sm.get_sandbox_info(sid).modules == {}


def test_bytes_from_another_python_version_are_refused(sid):
    art = sm.compile_source(COUNTER)
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
