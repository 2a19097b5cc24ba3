"""The failure modes of other reloaders, each pinned down (DESIGN: what peers get wrong)."""

from __future__ import annotations

import pickle
import threading

import pytest
from conftest import src

import sandbox_magic as sm


def load(sid, code, module="m"):
    return sm.hot_reload_source(sid, src(code), module)


def test_enum_members_keep_identity_and_gain_new_ones(sid):
    load(sid, """
        import enum
        class Color(enum.Enum):
            RED = 1
            GREEN = 2
            def label(self):
                return "v1 " + self.name
    """)
    sb = sm.get_sandbox(sid)
    Color = sb.Color
    red = Color.RED
    load(sid, """
        import enum
        class Color(enum.Enum):
            RED = 1
            GREEN = 2
            BLUE = 3
            def label(self):
                return "v2 " + self.name.lower()
    """)
    assert sb.Color is Color and Color.RED is red
    assert red.label() == "v2 red"
    assert Color(3) is Color.BLUE and isinstance(Color.BLUE, Color)
    assert [c.name for c in Color] == ["RED", "GREEN", "BLUE"]
    assert pickle.loads(pickle.dumps(red)) is red


def test_enum_member_removed(sid):
    load(sid, "import enum\nclass E(enum.Enum):\n    A = 1\n    B = 2\n")
    E = sm.get_sandbox(sid).E
    load(sid, "import enum\nclass E(enum.Enum):\n    A = 1\n")
    assert [e.name for e in E] == ["A"]
    with pytest.raises(ValueError):
        E(2)


def test_dataclass_gains_a_field(sid):
    load(sid, """
        from dataclasses import dataclass
        @dataclass
        class Point:
            x: int
            y: int
            def norm1(self):
                return abs(self.x) + abs(self.y)
    """)
    P = sm.get_sandbox(sid).Point
    p = P(1, -2)
    load(sid, """
        from dataclasses import dataclass
        @dataclass
        class Point:
            x: int
            y: int
            z: int = 0
            def norm1(self):
                return abs(self.x) + abs(self.y) + abs(self.z)
    """)
    assert sm.get_sandbox(sid).Point is P
    assert P(1, 2, 3).norm1() == 6
    assert p.norm1() == 3 and p.z == 0
    assert repr(p) == "Point(x=1, y=-2, z=0)"
    assert P(1, 2) == P(1, 2, 0)


def test_frozen_dataclass_stays_frozen_and_reloads(sid):
    load(sid, """
        from dataclasses import dataclass
        @dataclass(frozen=True)
        class Money:
            amount: int
            def double(self):
                return Money(self.amount * 2)
    """)
    M = sm.get_sandbox(sid).Money
    m = M(5)
    load(sid, """
        from dataclasses import dataclass
        @dataclass(frozen=True)
        class Money:
            amount: int
            currency: str = "EUR"
            def double(self):
                return Money(self.amount * 2, self.currency)
    """)
    d = m.double()
    assert type(d) is M and d.amount == 10 and d.currency == "EUR"
    import dataclasses
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.amount = 3
    assert hash(M(1)) == hash(M(1))


def test_property_classmethod_staticmethod_changes(sid):
    load(sid, """
        class Shape:
            def __init__(self, w):
                self.w = w
            @property
            def area(self):
                return self.w * self.w
            @classmethod
            def unit(cls):
                return cls(1)
            @staticmethod
            def kind():
                return "square"
            def describe(self):
                return "plain method"
    """)
    S = sm.get_sandbox(sid).Shape
    s = S(3)
    load(sid, """
        class Shape:
            def __init__(self, w):
                self.w = w
            @property
            def area(self):
                return self.w * self.w * 10
            @area.setter
            def area(self, value):
                self.w = value
            @classmethod
            def unit(cls):
                return cls(2)
            @staticmethod
            def kind():
                return "scaled"
            @property
            def describe(self):
                return "now a property"
    """)
    assert s.area == 90
    s.area = 4
    assert s.w == 4
    assert S.unit().w == 2 and S.kind() == "scaled"
    assert s.describe == "now a property"


def test_method_switching_to_classmethod_and_back(sid):
    load(sid, "class A:\n    def make(self):\n        return 'inst'\n")
    A = sm.get_sandbox(sid).A
    load(sid, "class A:\n    @staticmethod\n    def make():\n        return 'static'\n")
    assert A.make() == "static" and A().make() == "static"
    load(sid, "class A:\n    def make(self):\n        return 'inst2'\n")
    assert A().make() == "inst2"


def test_closure_free_variables_change(sid):
    load(sid, """
        def make():
            base = 1
            def inner(x):
                return x + base
            return inner
        add = make()
        def top(x):
            return x
    """)
    sb = sm.get_sandbox(sid)
    add, top = sb.add, sb.top
    load(sid, """
        def make():
            base = 10
            scale = 2
            def inner(x):
                return (x + base) * scale
            return inner
        add = make()
        FACTOR = 3
        def top(x):
            return x * FACTOR
    """)
    assert add(1) == 22       # the old closure object now runs the new code
    assert top(2) == 6
    assert sb.add is add


def test_function_gaining_a_closure_keeps_identity_via_forwarding(sid):
    load(sid, "def deco(f):\n    return f\n@deco\ndef work():\n    return 1\n")
    work = sm.get_sandbox(sid).work
    r = load(sid, """
        import functools
        def deco(f):
            @functools.wraps(f)
            def wrapper():
                return f() + 100
            return wrapper
        @deco
        def work():
            return 1
    """)
    assert work() == 101
    assert any("forwards" in n for n in r.notes)


def test_decorated_functions_reload(sid):
    load(sid, """
        import functools
        def logged(f):
            @functools.wraps(f)
            def wrapper(*a):
                return ("log", f(*a))
            return wrapper
        @logged
        def compute(x):
            return x + 1
    """)
    compute = sm.get_sandbox(sid).compute
    load(sid, """
        import functools
        def logged(f):
            @functools.wraps(f)
            def wrapper(*a):
                return ("log2", f(*a))
            return wrapper
        @logged
        def compute(x):
            return x * 100
    """)
    assert compute(2) == ("log2", 200)
    assert compute.__wrapped__(3) == 300


def test_super_in_reloaded_methods(sid):
    load(sid, """
        class Base:
            def hello(self):
                return "base"
        class Child(Base):
            def hello(self):
                return "child+" + super().hello()
    """)
    sb = sm.get_sandbox(sid)
    c = sb.Child()
    load(sid, """
        class Base:
            def hello(self):
                return "BASE"
        class Child(Base):
            def hello(self):
                return "CHILD+" + super().hello()
    """)
    assert c.hello() == "CHILD+BASE"
    assert sb.Child.hello.__closure__[0].cell_contents is sb.Child


def test_method_starts_using_super(sid):
    load(sid, """
        class Base:
            def hello(self):
                return "base"
        class Child(Base):
            def hello(self):
                return "child"
    """)
    c = sm.get_sandbox(sid).Child()
    load(sid, """
        class Base:
            def hello(self):
                return "base"
        class Child(Base):
            def hello(self):
                return "child+" + super().hello()
    """)
    assert c.hello() == "child+base"


def test_slots_change_replaces_the_class_and_says_so(sid):
    load(sid, "class P:\n    __slots__ = ('x',)\n    def __init__(self):\n        self.x = 1\n")
    P = sm.get_sandbox(sid).P
    old = P()
    r = load(sid, "class P:\n    __slots__ = ('x', 'y')\n    def __init__(self):\n"
                  "        self.x = 1\n        self.y = 2\n")
    assert any("layout" in n for n in r.notes)
    NewP = sm.get_sandbox(sid).P
    assert NewP().y == 2
    assert old.x == 1                   # old instances keep working
    assert r.new_version == 2


def test_slots_unchanged_patches_in_place(sid):
    load(sid, "class P:\n    __slots__ = ('x',)\n    def get(self):\n        return self.x\n")
    P = sm.get_sandbox(sid).P
    p = P()
    p.x = 4
    load(sid, "class P:\n    __slots__ = ('x',)\n    def get(self):\n        return self.x * 2\n")
    assert sm.get_sandbox(sid).P is P and p.get() == 8


def test_metaclass_methods_reload_and_metaclass_change_falls_back(sid):
    load(sid, """
        class Meta(type):
            def describe(cls):
                return "meta1 " + cls.__name__
        class Model(metaclass=Meta):
            pass
    """)
    Model = sm.get_sandbox(sid).Model
    load(sid, """
        class Meta(type):
            def describe(cls):
                return "meta2 " + cls.__name__
        class Model(metaclass=Meta):
            pass
    """)
    assert Model.describe() == "meta2 Model" and sm.get_sandbox(sid).Model is Model
    r = load(sid, """
        class Meta(type):
            def describe(cls):
                return "meta2 " + cls.__name__
        class Other(type):
            pass
        class Model(metaclass=Other):
            pass
    """)
    assert any("metaclass changed" in n for n in r.notes)
    assert type(sm.get_sandbox(sid).Model).__name__ == "Other"


def test_base_class_changes(sid):
    load(sid, """
        class A:
            def who(self):
                return "A"
        class B:
            def who(self):
                return "B"
        class C(A):
            pass
    """)
    sb = sm.get_sandbox(sid)
    c = sb.C()
    load(sid, """
        class A:
            def who(self):
                return "A"
        class B:
            def who(self):
                return "B"
        class C(B):
            pass
    """)
    assert c.who() == "B" and isinstance(c, sb.B) and not isinstance(c, sb.A)


def test_incompatible_base_change_falls_back(sid):
    load(sid, "class C:\n    pass\n")
    r = load(sid, "class C(int):\n    pass\n")
    assert any("C" in n for n in r.notes)
    assert sm.get_sandbox(sid).C(5) == 5


def test_function_switching_to_class(sid):
    load(sid, "def make(x):\n    return ('fn', x)\n")
    make = sm.get_sandbox(sid).make
    r = load(sid, "class make:\n    def __init__(self, x):\n        self.x = x\n")
    obj = make(3)            # the old reference forwards to the new class
    assert type(obj) is sm.get_sandbox(sid).make and obj.x == 3
    assert r.notes


def test_class_switching_to_function(sid):
    load(sid, "class thing:\n    pass\n")
    r = load(sid, "def thing():\n    return 'fn'\n")
    assert sm.get_sandbox(sid).thing() == "fn"
    assert any("class to a function" in n for n in r.notes)


def test_module_level_instances_keep_class_identity(sid):
    load(sid, """
        class Config:
            def __init__(self, level):
                self.level = level
        DEFAULT = Config(1)
    """)
    sb = sm.get_sandbox(sid)
    Config = sb.Config
    load(sid, """
        class Config:
            def __init__(self, level):
                self.level = level
            def doubled(self):
                return self.level * 2
        DEFAULT = Config(5)
        REGISTRY = {"default": DEFAULT, "list": [Config(7)]}
    """)
    assert type(sb.DEFAULT) is Config and sb.DEFAULT.doubled() == 10
    assert type(sb.REGISTRY["list"][0]) is Config
    assert isinstance(sb.REGISTRY["default"], Config)


def test_functions_in_containers_use_the_real_module_globals(sid):
    load(sid, """
        SCALE = 1
        def a():
            return SCALE
        HANDLERS = {"a": a}
    """)
    load(sid, """
        SCALE = 2
        def a():
            return SCALE * 10
        def b():
            return SCALE
        HANDLERS = {"a": a, "b": b}
    """)
    sb = sm.get_sandbox(sid)
    mod = sb.modules["m"]
    assert sb.HANDLERS["a"] is sb.a
    assert sb.HANDLERS["b"].__globals__ is mod.__dict__
    load(sid, """
        SCALE = 3
        def a():
            return SCALE * 10
        def b():
            return SCALE
        HANDLERS = {"a": a, "b": b}
    """)
    assert sb.HANDLERS["b"]() == 3


def test_threads_calling_code_while_it_is_patched_see_whole_versions(sid):
    load(sid, """
        def pair():
            return (first(), second())
        def first():
            return 0
        def second():
            return 0
    """)
    sb = sm.get_sandbox(sid)
    pair = sb.pair
    bad: list = []
    stop = threading.Event()
    calls = [0]

    def caller():
        while not stop.is_set():
            try:
                a, b = pair()
            except Exception as exc:  # a half-applied module would raise here
                bad.append(exc)
                continue
            calls[0] += 1
            if a > b:   # a call may straddle reloads, but never sees them out of order
                bad.append((a, b))

    threads = [threading.Thread(target=caller) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for i in range(1, 60):
            load(sid, f"""
                def pair():
                    return (first(), second())
                def first():
                    return {i}
                def second():
                    return {i}
            """)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not bad
    assert calls[0] > 0
    assert pair() == (59, 59)


def test_no_half_applied_reload_when_patching_fails(sid, monkeypatch):
    # X changes too: the module body runs again (a body-only edit is applied in place,
    # see tests/test_inplace.py for its failures)
    load(sid, "X = 1\nclass A:\n    def f(self):\n        return 1\ndef g():\n    return 1\n")
    sb = sm.get_sandbox(sid)
    A, g = sb.A, sb.g
    from sandbox_magic.engine import patch as _patch

    original = _patch.Patcher._patch_module

    def explode(self, real, staging):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(_patch.Patcher, "_patch_module", explode)
    with pytest.raises(sm.ReloadError) as info:
        load(sid, "X = 2\nclass A:\n    def f(self):\n        return 2\ndef g():\n    return 2\n")
    assert info.value.step == "patch"
    monkeypatch.setattr(_patch.Patcher, "_patch_module", original)
    assert A().f() == 1 and g() == 1
    assert sm.get_module_version(sid, "m") == 1
