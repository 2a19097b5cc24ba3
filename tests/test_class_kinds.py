"""Every kind of class a user brings: tracked, migrated, and kept whole across reloads.

Each test reloads real-world class shapes (metaclasses, ABCs, ``Generic``,
built-in bases, exceptions, ``__slots__``, subclasses made in the notebook,
named tuples, dataclasses, attrs, pydantic, enums) and checks what a user
relies on: the state handler reaches every live instance, module-level
objects still belong to the module's class (``isinstance``, pickle, copy,
equality), layouts stay as written, and added fields get their defaults.
"""

from __future__ import annotations

import copy
import pickle

import pytest

import sandbox_magic as sm
from sandbox_magic.engine import patch, tracking

KINDS = '''
import abc, typing, collections, dataclasses, enum
T = typing.TypeVar("T")

class Meta(type):
    pass

class Plain:
    def __init__(self):
        self.n = 1

class WithMeta(metaclass=Meta):
    def __init__(self):
        self.n = 1

class Abstract(abc.ABC):
    def __init__(self):
        self.n = 1
    @abc.abstractmethod
    def f(self): ...

class Concrete(Abstract):
    def f(self):
        return 1

class Gen(typing.Generic[T]):
    def __init__(self):
        self.n = 1

class D(dict):
    def __init__(self):
        super().__init__(k=1)
        self.n = 1

class L(list):
    def __init__(self):
        super().__init__([1])
        self.n = 1

class E(Exception):
    def __init__(self):
        super().__init__("boom")
        self.n = 1

class Slotted:
    __slots__ = ("n",)
    def __init__(self):
        self.n = 1

@dataclasses.dataclass(slots=True)
class SlotData:
    n: int = 1

class Proto(typing.Protocol):
    def f(self) -> int: ...

NT = collections.namedtuple("NT", "a b")

@dataclasses.dataclass(frozen=True)
class Frozen:
    a: int = 1

class Color(enum.Enum):
    RED = 1

nt, frozen, slotted, color = NT(1, 2), Frozen(), Slotted(), Color.RED
queue = collections.deque([Frozen(2)])     # reached by no namespace walk
'''

KIND_NAMES = ["Plain", "WithMeta", "Concrete", "Gen", "D", "L", "E", "Slotted", "SlotData"]


def bump(state, old_version, new_version):
    return {**state, "n": state["n"] + 100} if "n" in state else state


@pytest.fixture
def kinds(sid):
    sm.hot_reload_source(sid, KINDS, "kinds")
    return sm.get_sandbox(sid)


@pytest.mark.needs_native
def test_the_state_handler_reaches_instances_of_every_class_kind(sid, kinds):
    objs = [getattr(kinds, name)() for name in KIND_NAMES]

    class NotebookSub(kinds.Plain):      # a subclass defined outside the sandbox
        pass

    objs.append(NotebookSub())
    assert all(tracking.trackable(type(o)) for o in objs)
    r = sm.hot_reload_source(sid, KINDS + "# v2\n", "kinds", state_handler=bump)
    assert [o.n for o in objs] == [101] * len(objs)
    assert r.migrated == len(objs) + 3       # + the module-level Slotted and Frozen objects
    assert r.notes == ()
    assert objs[4]["k"] == 1 and objs[5] == [1] and str(objs[6]) == "boom"


@pytest.mark.needs_native
def test_classes_keep_their_bases_metaclass_and_slots_as_written(kinds):
    assert kinds.Slotted.__slots__ == ("n",)
    assert not hasattr(kinds.Slotted(), "__weakref__")
    assert kinds.Plain.__bases__ == (object,)
    assert type(kinds.WithMeta) is kinds.Meta
    assert isinstance(kinds.Concrete(), kinds.Abstract)
    assert "__sandbox_live__" not in vars(kinds.Proto)   # protocols are left alone


def _check_module_objects(sid, kinds):
    mod = kinds.modules["kinds"]
    for name in ("nt", "frozen", "slotted"):
        obj = getattr(mod, name)
        cls = getattr(mod, type(obj).__name__)
        assert type(obj) is cls, name
        assert isinstance(obj, cls)
        back = pickle.loads(pickle.dumps(obj))
        assert type(back) is cls
        assert type(copy.copy(obj)) is cls
    assert mod.nt == mod.NT(1, 2) and mod.frozen == mod.Frozen()
    assert mod.color is mod.Color.RED
    assert type(mod.queue[0]) is mod.Frozen


def test_module_level_objects_belong_to_the_current_class_after_reload_and_rollback(sid, kinds):
    held = kinds.nt
    sm.hot_reload_source(sid, KINDS.replace("a b", "a b") + "# v2\n", "kinds")
    _check_module_objects(sid, kinds)
    assert isinstance(held, kinds.NT)
    sm.rollback_module(sid, "kinds", 1)
    _check_module_objects(sid, kinds)
    sm.undo(sid, "kinds")
    _check_module_objects(sid, kinds)


LIBS = '''
import attrs, pydantic, dataclasses

@attrs.define
class A:
    x: int = 1

@attrs.frozen
class AF:
    x: int = 1

class P(pydantic.BaseModel):
    x: int = 1

@dataclasses.dataclass
class DC:
    x: int = 1

made = (A(), AF(), P(), DC())
'''


@pytest.mark.needs_native
def test_attrs_pydantic_and_dataclass_objects_stay_whole(sid):
    sm.hot_reload_source(sid, LIBS, "libs")
    sb = sm.get_sandbox(sid)
    held = [sb.A(), sb.AF(), sb.P(), sb.DC()]
    r = sm.hot_reload_source(sid, LIBS + "# v2\n", "libs", state_handler=lambda s, o, n: s)
    assert r.migrated >= len(held)
    mod = sb.modules["libs"]
    for obj in list(mod.made) + held:
        cls = getattr(mod, type(obj).__name__)
        assert type(obj) is cls
        assert pickle.loads(pickle.dumps(obj)) == obj
        assert copy.copy(obj) == obj


@pytest.mark.needs_native
def test_a_field_added_with_a_default_reaches_held_instances(sid):
    sm.hot_reload_source(sid, LIBS, "libs")
    sb = sm.get_sandbox(sid)
    held = [sb.A(), sb.AF(), sb.P(), sb.DC()]
    v2 = LIBS.replace("    x: int = 1\n", "    x: int = 1\n    tags: list = []\n") \
        .replace("dataclasses\n", "dataclasses\nfrom dataclasses import field\n") \
        .replace("class DC:\n    x: int = 1\n    tags: list = []",
                 "class DC:\n    x: int = 1\n    tags: list = field(default_factory=list)") \
        .replace("class A:\n    x: int = 1\n    tags: list = []",
                 "class A:\n    x: int = 1\n    tags: list = attrs.Factory(list)") \
        .replace("class AF:\n    x: int = 1\n    tags: list = []",
                 "class AF:\n    x: int = 1\n    tags: tuple = ()")
    sm.hot_reload_source(sid, v2, "libs")
    assert [o.tags for o in held] == [[], (), [], []]
    assert held[0].tags is not held[2].tags                 # each from the factory
    assert held[2].model_dump() == {"x": 1, "tags": []}
    sm.rollback_module(sid, "libs", 1)
    assert [o.x for o in held] == [1, 1, 1, 1]


@pytest.mark.needs_native
def test_a_field_added_without_a_default_refuses_the_reload_naming_it(sid):
    src = "import dataclasses, pydantic\n\n@dataclasses.dataclass\nclass DC:\n    x: int\n\n" \
          "class P(pydantic.BaseModel):\n    x: int\n"
    sm.hot_reload_source(sid, src, "m")
    sb = sm.get_sandbox(sid)
    d, p = sb.DC(1), sb.P(x=1)
    for cls in ("DC", "P"):
        new = src.replace(f"class {cls}", f"class {cls}", 1)
        head, _, tail = new.partition(f"class {cls}")
        new = head + f"class {cls}" + tail.replace("    x: int\n", "    x: int\n    z: int\n", 1)
        with pytest.raises(sm.ReloadError) as info:
            sm.hot_reload_source(sid, new, "m")
        msg = str(info.value)
        assert info.value.step == "migrate" and f"{cls} gained field 'z'" in msg
        assert "%%sandbox_state_handler" in msg
        assert sm.get_module_version(sid, "m") == 1
    assert not hasattr(d, "z") and not hasattr(p, "z")
    # with a handler that supplies the value, it goes through
    handler = lambda s, o, n: (  # noqa: E731
        {**s, "__dict__": {**s["__dict__"], "z": 5}} if "__pydantic_fields_set__" in s
        else {**s, "z": 5})
    sm.hot_reload_source(sid, src.replace("    x: int\n", "    x: int\n    z: int\n"), "m",
                         state_handler=handler)
    assert (d.z, p.z) == (5, 5)


def test_untracked_classes_are_named_in_the_notes_never_silently_skipped(sid, monkeypatch):
    sm.hot_reload_source(sid, "class Plain:\n    def __init__(self):\n        self.n = 1\n", "m")
    sb = sm.get_sandbox(sid)
    obj = sb.Plain()
    monkeypatch.setattr("sandbox_magic.live.migration.trackable", lambda cls: False)
    r = sm.hot_reload_source(sid, "class Plain:\n    def __init__(self):\n        self.n = 2\n",
                             "m", state_handler=bump)
    assert any("Plain" in n and "not tracked" in n for n in r.notes)
    assert r.migrated == 0 and obj.n == 1


@pytest.mark.needs_native
def test_removing_a_new_method_keeps_the_constructor_working(sid):
    base = "class K:\n    def __init__(self, v):\n        self.v = v\n"
    sm.hot_reload_source(sid, base, "k")
    sm.hot_reload_source(sid, base + "    def __new__(cls, *a):\n        return super().__new__(cls)\n",
                         "k")
    sm.hot_reload_source(sid, base + "# again without __new__\n", "k")
    assert sm.get_sandbox(sid).K(3).v == 3


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "pure"])
def test_a_class_with_a_name_property_reloads_and_rolls_back(sid, compiled, monkeypatch):
    if compiled and patch.native_module is None:
        pytest.skip("the compiled part is not built")
    if not compiled:
        monkeypatch.setattr(patch, "native_module", None)
    src = ("class Compose:\n    def __init__(self, f):\n        self.f = f\n"
           "    @property\n    def __name__(self):\n        return 'compose'\n")
    sm.hot_reload_source(sid, src, "comp")
    c = sm.get_sandbox(sid).Compose(len)
    sm.hot_reload_source(sid, src.replace("'compose'", "'composed'"), "comp")
    assert c.__name__ == "composed" and type(c).__name__ == "Compose"
    sm.rollback_module(sid, "comp", 1)
    assert c.__name__ == "compose"


def test_importlib_reload_of_a_sandbox_module_says_what_to_call(sid):
    import importlib

    sm.hot_reload_source(sid, "def f():\n    return 1\n", "m")
    mod = sm.get_sandbox(sid).modules["m"]
    before = dict(vars(mod))
    with pytest.raises(sm.SandboxError, match="hot_reload_source"):
        importlib.reload(mod)
    assert vars(mod) == before and sm.get_module_version(sid, "m") == 1


def test_functions_held_in_a_named_tuple_keep_their_live_identity(sid):
    src = ("from collections import namedtuple\nFmt = namedtuple('Fmt', 'begin end')\n"
           "def _begin(x):\n    return '<' + x\nFORMATS = {'html': Fmt(_begin, None)}\n"
           "def render(x):\n    fmt = FORMATS['html']\n    return fmt.begin(x), fmt.begin is _begin\n")
    sm.hot_reload_source(sid, src, "tab")
    sb = sm.get_sandbox(sid)
    sm.hot_reload_source(sid, "\n\n" + src.replace("'<'", "'['"), "tab")
    assert sb.render("a") == ("[a", True)
    assert type(sb.FORMATS["html"]) is sb.Fmt


def test_a_module_object_kept_by_generated_code_is_the_live_module(sid):
    # A library that generates methods with exec() keeps the sibling modules its body
    # imported in the namespace it hands to exec; after the load they are the live ones.
    sm.hot_reload_source(sid, {
        "config": "FLAG = 'on'\n",
        "maker": "from . import config\nimport config as cfg\n"
                 "NS = {'config': config}\n"
                 "exec('def flag():\\n    return config.FLAG', NS)\nflag = NS['flag']\n"
                 "HELD = [cfg]\n",
    })
    sb = sm.get_sandbox(sid)
    assert sb.flag() == "on" and sb.maker.HELD[0].FLAG == "on"
    sm.hot_reload_source(sid, "FLAG = 'off'\n", "config")
    assert sb.flag() == "off"


def test_a_module_getattr_held_from_before_runs_the_new_code(sid):
    sm.hot_reload_source(sid, "def __getattr__(name):\n    return 1\n", "lazy")
    mod = sm.get_sandbox(sid).modules["lazy"]
    held = mod.__getattr__
    sm.hot_reload_source(sid, "def __getattr__(name):\n    return 2\n", "lazy")
    assert mod.answer == 2 and held("answer") == 2 and mod.__getattr__ is held
