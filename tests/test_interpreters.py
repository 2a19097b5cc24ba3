"""What the engine assumes of the interpreter: each assumption checked, each fallback works.

The engine's uses of CPython internals sit behind small modules that test their
assumption at import (``engine/interpreter.py``, ``engine/repoint.py``,
``engine/tracking.py``).  These tests run on every interpreter the suite runs on
(``.ci/test``): the checks must pass there, and the slower paths they fall back to
must give the same results.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from conftest import src

import sandbox_magic as sm
from sandbox_magic.engine import interpreter, repoint, tracking

PARTICLE = src("""
    class Particle:
        def __init__(self, i):
            self.i = i
        def describe(self):
            return "v1"
""")


def test_the_interpreter_checks_pass_here():
    interpreter.check_supported()
    repoint._self_test()
    if tracking._native_module is not None:
        assert tracking._self_test() is None
        assert tracking.native(), "the compiled tracker was built but not used"
    assert interpreter.dict_swap_ok() is (sys.version_info < (3, 13))
    assert interpreter.thread_interrupts_ok()


def test_a_free_threaded_build_is_refused_with_the_reason(monkeypatch):
    monkeypatch.setattr(interpreter, "free_threaded", lambda: True)
    with pytest.raises(ImportError, match="does not support free-threaded Python") as info:
        interpreter.check_supported()
    assert "GIL" in str(info.value)


def test_importing_on_a_free_threaded_build_fails_cleanly():
    # The real build, where CI has one (.ci/test builds python3.13t); skipped
    # elsewhere, since only that build can show it.
    ft = subprocess.run(["bash", ".ci/python-for", "3.13", "t", "--cached"],
                        capture_output=True, text=True).stdout.strip()
    if not ft:
        pytest.skip("no free-threaded build cached on this machine")
    out = subprocess.run([ft, "-c", "import sandbox_magic"], capture_output=True, text=True,
                         env={"PYTHONPATH": ".", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 1
    assert "UnsupportedInterpreter: sandbox-magic does not support free-threaded" in out.stderr
    assert "Segmentation" not in out.stderr


@pytest.mark.parametrize("swap", [True, False], ids=["dict swap", "in place"])
def test_migrations_give_the_same_result_whether_dicts_are_swapped_or_refilled(
        sid, monkeypatch, swap):
    monkeypatch.setattr(interpreter, "_DICT_SWAP_OK", swap)
    sm.hot_reload_source(sid, PARTICLE, module="particle")
    P = sm.get_sandbox(sid).Particle
    ps = [P(i) for i in range(300)]
    dicts = [p.__dict__ for p in ps]
    v2 = PARTICLE.replace('"v1"', '"v2 " + str(self.mass)')
    r = sm.hot_reload_source(sid, v2, module="particle",
                             state_handler=lambda s, ov, nv: {**s, "mass": s["i"] * 2})
    assert r.migrated == 300
    assert ps[7].describe() == "v2 14"
    # in place: each object keeps its dict object; swapped: each got a new one
    assert all((p.__dict__ is d) is (not swap) for p, d in zip(ps, dicts))
    # a check that fails after the switch: every state comes back as it was
    v3 = v2.replace('"v2 "', '"v3 "')
    with pytest.raises(sm.ReloadError):
        sm.hot_reload_source(sid, v3, module="particle", check=lambda sb: False,
                             state_handler=lambda s, ov, nv: {"i": -1, "mass": 0})
    assert [p.__dict__ for p in ps[:3]] == [{"i": i, "mass": 2 * i} for i in range(3)]
    assert ps[7].describe() == "v2 14"


def test_raise_in_thread_reaches_only_that_thread():
    class Stop(Exception):
        pass

    seen: list[str] = []
    ready = threading.Event()

    def loop():
        deadline = time.monotonic() + 10
        ready.set()
        while time.monotonic() < deadline:
            pass

    def spin(name):
        try:
            loop()
            seen.append(name + " ran out")
        except Stop:
            seen.append(name + " stopped")

    a = threading.Thread(target=spin, args=("a",))
    a.start()
    ready.wait()
    assert interpreter.raise_in_thread(a.ident, Stop) is True
    a.join(5)
    assert seen == ["a stopped"]
    assert interpreter.raise_in_thread(a.ident, Stop) is False   # gone: nobody is hit


def test_class_source_lines_on_this_interpreter(sid):
    import inspect
    code = "# pad\n" * 3 + textwrap.dedent("""\
        class Box:
            def get(self):
                return 1
    """)
    pad = "".join(f"def f{i}():\n    return {i}\n\n" for i in range(40))
    sm.hot_reload_source(sid, pad + code, module="box")
    sm.hot_reload_source(sid, "# moved\n" * 5 + pad + code, module="box")
    box = sm.get_sandbox(sid).modules["box"].Box
    assert inspect.getsource(box).startswith("class Box:\n    def get(self):")
    assert sys.version_info < (3, 13) or box.__firstlineno__ == 5 + pad.count("\n") + 4


PEP695 = '''\
type Pair[T] = tuple[T, T]


def first[T](xs: list[T]) -> T:
    return xs[0]


class Box[T]:
    def __init__(self, item: T) -> None:
        self.item = item

    def get(self) -> T:
        return self.item

    def kind[K](self, k: K) -> tuple[T, K]:
        return (self.item, k)
'''


@pytest.mark.skipif(sys.version_info < (3, 12), reason="PEP 695 syntax is 3.12+")
def test_pep_695_generics_and_type_aliases_reload_and_roll_back(sid):
    sm.hot_reload_source(sid, PEP695, module="gen")
    m = sm.get_sandbox(sid).modules["gen"]
    Box, first = m.Box, m.first
    box = Box(3)
    (T,) = Box.__type_params__
    v2 = (PEP695.replace("return xs[0]", "return xs[-1]")
                .replace("return self.item\n", "return self.item * 2\n")
                .replace("tuple[T, T]", "list[T]"))
    r = sm.hot_reload_source(sid, v2, module="gen", state_handler=lambda s, ov, nv: s)
    assert r.migrated == 1
    assert first([1, 2]) == 2 and m.first is first            # patched in place
    assert box.get() == 6 and isinstance(box, m.Box) and m.Box is Box
    assert box.kind("k") == (3, "k")
    (T2,) = Box.__type_params__
    assert T2.__name__ == "T" and first.__type_params__[0].__name__ == "T"
    assert m.Pair.__value__ == list[m.Pair.__type_params__[0]]
    sm.rollback_module(sid, "gen", 1)
    assert first([1, 2]) == 1 and box.get() == 3
    assert m.Pair.__value__ == tuple[m.Pair.__type_params__[0], m.Pair.__type_params__[0]]
    assert Box.__type_params__[0].__name__ == "T" and T.__name__ == "T"


LAZY = '''\
def build(node: Node) -> Node:
    return node


class Node:
    child: Node | None = None

    def link(self, other: Node) -> Node:
        return other
'''


def test_annotations_naming_later_definitions_are_never_forced(sid):
    # 3.14 evaluates annotations only when asked (PEP 649); before it, this module
    # needs `from __future__ import annotations`. Either way a reload must not ask.
    code = LAZY if sys.version_info >= (3, 14) else "from __future__ import annotations\n" + LAZY
    sm.hot_reload_source(sid, code, module="lazy")
    m = sm.get_sandbox(sid).modules["lazy"]
    build = m.build
    sm.hot_reload_source(sid, code.replace("return node", "return [node]"), module="lazy")
    assert build(1) == [1]
    assert "node" in build.__annotations__


def test_without_the_posix_only_modules_the_package_works_and_limits_say_why():
    """What Windows lacks (resource, fcntl, termios, pty): the package imports and
    reloads; only the process host's limits need them, and say so in one line."""
    code = textwrap.dedent("""
        import sys
        for name in ("resource", "fcntl", "termios", "pty", "grp", "pwd"):
            sys.modules[name] = None          # import name -> ImportError
        import sandbox_magic as sm
        sm.create_sandbox("w", store=sm.VersionStore())
        sm.hot_reload_source("w", "def f():\\n    return 1\\n", "m")
        sm.hot_reload_source("w", "def f():\\n    return 2\\n", "m")
        assert sm.get_sandbox("w").f() == 2
        from sandbox_magic.hosts.child import apply_limits
        apply_limits(None, None)                  # no limits: nothing needed
        try:
            apply_limits(512 << 20, None)
        except sm.SandboxError as exc:
            print("refused:", exc)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "SANDBOX_MAGIC_STORE": ":memory:"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ("refused: memory_limit and cpu_limit need a POSIX system "
                                  "(the resource module); on this one, use call_timeout only")
