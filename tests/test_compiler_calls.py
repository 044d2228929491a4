"""Call sites of compiled code: what the dispatch compiles, calls plainly or binds.

Driven by the toy driver of tests/test_compiler.py (no VM). Each test is a case where
the compiled code once differed from plain Python or from the promise of compiling
what the code visibly contains: a method naming its own class, user bindings of the
builtins the generated code uses, the first iterable of a comprehension left plain,
bound methods, weak references, leaf functions.
"""

from __future__ import annotations

import binascii
import gc
import sys
import time
import traceback
import weakref

import pytest
from test_compiler import C, Proc, fake_receive, result, run, step

# --------------------------------------------------------------------------- own class


def spin(n):
    i = 0
    while i < n:
        i += 1
    return i


class Counter:
    def __init__(self):
        self.n = 0

    def helper(self, k):
        spin(k)
        self.n += k
        return self.n

    def via_class(self, k):
        # names its own class: a global of the module, not of the compiler's wrapper
        return Counter.helper(self, k)

    def receives(self):
        return Counter.helper(self, fake_receive(1))

    def __private(self):
        return "mangled"

    def mangles(self):
        spin(1)
        return self.__private(), Counter.__name__


def make_local_class():
    class Local:
        def me(self):
            spin(1)
            return Local  # a closure variable here, as in plain Python

    return Local


def test_a_method_that_names_its_own_class_is_compiled():
    assert C.is_compilable(Counter.via_class)
    assert result(Counter.via_class, Counter(), 5000, budget=100) == 5000
    p = run(Counter.via_class, Counter(), 5000, budget=100)
    assert p.preempts > 10  # the callee's loop runs compiled, not as one C-like call
    p = run(Counter.receives, Counter(), answer=lambda req: 7)
    assert p.result == 7 and [r.args for r in p.requests] == [(1,)]
    assert result(Counter.mangles, Counter()) == ("mangled", "Counter")
    local = make_local_class()
    assert result(local.me, local()) is local


# --------------------------------------------------------------------------- shadowed names


class Box:
    def __init__(self):
        self.items = []

    def add(self, x):
        self.items.append(x)
        return x


class Ctx:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def shadows(box, type="worker", iter=None, StopIteration=1, BaseException=2, len=None):  # noqa: A002
    box.add(type)  # a generic call site: its dispatch used the name ``type``
    with Ctx():
        box.add([str(v) for v in range(3)])
    box.add(sorted([3, 1, 2], key=lambda v: -v))
    box.add("-".join(str(v) for v in range(3)))
    try:
        box.add(1 / 0)
    except ZeroDivisionError:  # the generated handlers name StopIteration/BaseException
        box.add("caught")
    return box.items


def test_generated_code_ignores_user_bindings_of_the_builtins_it_uses():
    want = shadows(Box())
    assert want == ["worker", ["0", "1", "2"], [3, 2, 1], "0-1-2", "caught"]
    assert result(shadows, Box(), budget=3) == want


def test_a_module_global_named_type_does_not_break_call_sites():
    g = shadows.__globals__
    g["type"] = "not the builtin"
    try:
        C.forget_template(shadows.__code__)
        C._COMPILED_FNS.pop(shadows, None)
        assert result(shadows, Box(), budget=3)[0] == "worker"
    finally:
        del g["type"]


# --------------------------------------------------------------------------- first iterable


class Sup:
    def which_children(self, n):
        return [("c", fake_receive(n))]


def walrus_comp(sup):
    return [last := c for c in sup.which_children(1)], last


def genexp_loop(sup):
    out = []
    for c in (c[0] for c in sup.which_children(2)):
        out.append(c)
    return out


def genexp_passed(sup):
    return next(c for c in sup.which_children(3))


def nested_first(sup):
    return list(x for x in (c for c in sup.which_children(4)))


def order():
    log = []

    def it(tag):
        log.append(tag)
        return [tag]

    before = it("before")
    got = (it("a"), [v := x for x in it("first")], it("b"))
    return before, got, v, log


@pytest.mark.parametrize(
    ("fn", "want", "asked"),
    [
        (walrus_comp, ([("c", "m")], ("c", "m")), [(1,)]),
        (genexp_loop, ["c"], [(2,)]),
        (genexp_passed, ("c", "m"), [(3,)]),
        (nested_first, [("c", "m")], [(4,)]),
    ],
)
def test_calls_in_the_first_iterable_of_a_plain_comprehension_are_dispatched(fn, want, asked):
    # walrus comprehensions and generator expressions stay plain, but their first
    # iterable runs in the enclosing frame: a call there may wait (a gen_server call)
    p = run(fn, Sup(), answer=lambda req: "m")
    assert p.result == want
    assert [r.args for r in p.requests] == asked


def test_first_iterable_keeps_its_evaluation_order():
    assert result(order, budget=1) == order()


# --------------------------------------------------------------------------- bound methods


def call_methods(box, n):
    for i in range(n):
        box.add(i)
    return len(box.items)


def test_bound_methods_run_compiled_without_a_dispatch_miss(monkeypatch):
    misses = []
    orig = C._dispatch_miss

    def counting(f):
        misses.append(f)
        return orig(f)

    # compiled code reaches the miss function through its runtime cell
    monkeypatch.setattr(C._RUNTIME_CELLS[C._DM], "cell_contents", counting)
    assert result(call_methods, Box(), 3) == 3
    misses.clear()
    assert result(call_methods, Box(), 50) == 50
    # each ``box.add`` is a new bound method: found by its function, bound at the site
    assert not [m for m in misses if getattr(m, "__func__", None) is Box.add]


def test_a_bound_method_of_a_looping_function_is_preempted_inside():
    box = Counter()
    p = Proc(lambda: box.helper(20_000))
    while not p.done:
        step(p, 200)
    assert p.error is None and p.result == 20_000 and p.preempts > 50


def test_a_bound_method_of_an_uncompilable_function_is_called_plainly():
    ns: dict = {}
    exec("class NoSource:\n    def get(self, k):\n        return [k] * 2\n", ns)  # noqa: S102
    obj = ns["NoSource"]()

    def body():
        return obj.get(3), [].copy(), "x".upper()

    assert result(body) == ([3, 3], [], "X")


# --------------------------------------------------------------------------- weak references


class Target:
    def ping(self):
        return "pong"


def test_calling_a_dead_weakref_returns_none_and_a_live_one_its_object():
    alive = Target()
    live = weakref.ref(alive)
    dead_obj = Target()
    dead = weakref.ref(dead_obj)
    del dead_obj
    gc.collect()

    holder = Target()
    dead_method = weakref.WeakMethod(holder.ping)
    del holder
    gc.collect()

    def body():
        got = dead()
        return got, live() is alive, live().ping(), dead_method()

    assert body() == (None, True, "pong", None)
    assert result(body) == (None, True, "pong", None)


class Unhashable:
    __hash__ = None  # type: ignore[assignment]

    def __call__(self, x):
        total = 0
        for i in range(x):  # a loop: compiled, were it looked up
            total += i
        return total


def test_unhashable_callables_are_called_plainly():
    # Before: any call of an unhashable callable inside a process raised
    # "TypeError: unhashable type" (the dispatch lookup hashed it), ctypes' foreign
    # functions included.
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    obj = Unhashable()

    def body():
        return obj(5), libc.abs(-7), spawn_result(obj)

    def spawn_result(f):
        return f(4)

    assert body() == (10, 7, 6)
    assert result(body) == (10, 7, 6)


# --------------------------------------------------------------------------- leaf functions


def leaf(request, state):
    if request == "get":
        return state["n"]
    state["n"] = state["n"] + request
    return state["n"]


def leaf_raises(exc):
    raise exc


def leaf_fails(x):
    return x / 0


def looping(n):
    total = 0
    for i in range(n):
        total += i
    return total


def test_leaf_functions_are_called_plainly_and_others_compiled():
    assert C._is_leaf(leaf.__code__) and C._is_leaf(leaf_raises.__code__)
    for not_leaf in (looping, spin, call_methods, Counter.via_class, shadows, order):
        assert not C._is_leaf(not_leaf.__code__), not_leaf
    assert C._dispatch_get(leaf) is leaf
    assert C._dispatch_get(looping) is not looping
    # compile_function still compiles a leaf (public API: a generator function)
    assert C.compile_function(leaf) is not leaf


def test_leaf_calls_keep_plain_semantics():
    def body():
        state = {"n": 1}
        out = [leaf(2, state), leaf("get", state)]
        try:
            leaf_raises(StopIteration(5))
        except StopIteration as e:
            out.append(("stop", e.value))
        try:
            leaf_fails(1)
        except ZeroDivisionError as e:
            out.append(traceback.extract_tb(e.__traceback__)[-1].name)
        return out

    assert result(body, budget=1) == [3, 3, ("stop", 5), "leaf_fails"]


def test_a_leaf_body_of_a_process_runs_once():
    p = Proc(leaf, 4, {"n": 1})
    step(p, 10)
    assert p.done and p.result == 5


@pytest.mark.skipif(sys.version_info < (3, 12), reason="3.12+ inlines comprehensions")
def test_an_inlined_comprehension_is_a_loop_not_a_leaf():
    def comp(xs):
        return [x for x in xs]

    assert not C._is_leaf(comp.__code__)


# --------------------------------------------------------------------------- identity


_TWIN = """\
def twin(n):
    i = 0
    while i < n:
        i += 1
    return label()
"""


def _load_twin(path, label):
    path.write_text(_TWIN)
    g = {"__name__": path.stem, "label": lambda: label}
    exec(compile(path.read_text(), str(path), "exec"), g)
    return g["twin"]


def test_equal_functions_in_two_files_compile_each_from_its_own_file(tmp_path):
    # Equal code objects (code equality ignores co_filename): each gets its own template,
    # so a traceback names the file the function is in.
    a = _load_twin(tmp_path / "twin_a.py", "a")
    b = _load_twin(tmp_path / "twin_b.py", "b")
    assert a.__code__ == b.__code__ and a.__code__ is not b.__code__
    assert result(a, 50, budget=3) == "a"
    assert result(b, 50, budget=3) == "b"
    ta, tb = C.cached_template(a.__code__), C.cached_template(b.__code__)
    assert ta is not None and tb is not None
    assert (ta.co_filename, tb.co_filename) == (
        str(tmp_path / "twin_a.py"),
        str(tmp_path / "twin_b.py"),
    )


def test_templates_build_once_when_threads_compile_at_once(tmp_path):
    import threading

    fns = []
    for i in range(40):
        path = tmp_path / f"many_{i}.py"
        path.write_text(f"def f{i}(n):\n    while n:\n        n -= 1\n    return {i}\n")
        g: dict = {"__name__": path.stem}
        exec(compile(path.read_text(), str(path), "exec"), g)
        fns.append(g[f"f{i}"])
    errors, built = [], []

    def work():
        try:
            built.append([C._template(f.__code__, f) for f in fns])
        except Exception as e:  # noqa: BLE001 - any error fails the test below
            errors.append(e)

    ts = [threading.Thread(target=work) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert errors == []
    assert all(t is not None for t in built[0]), "every function compiled"
    assert all(all(x is y for x, y in zip(b, built[0], strict=True)) for b in built)


# --------------------------------------------------------------------------- names


def make_nested():
    class Db:
        def m(self):
            return 1

    def inner():
        return 2

    return Db, inner


def test_classes_and_functions_defined_in_compiled_code_keep_their_qualnames():
    # Compiled code runs inside a generated factory: a nested class must not be named
    # after it (``_bvm_factory.<locals>._bvm_def.<locals>.Db``) in reprs and reports.
    db, inner = result(make_nested)
    assert db.__qualname__ == "make_nested.<locals>.Db"
    assert db.m.__qualname__ == "make_nested.<locals>.Db.m"
    assert inner.__qualname__ == "make_nested.<locals>.inner"
    assert repr(db()).startswith(f"<{__name__}.make_nested.<locals>.Db object")


# --------------------------------------------------------------------------- module.name


def hexes(n):
    out = []
    for i in range(n):
        out.append(binascii.hexlify(bytes([i])))  # a guarded MODULE.NAME call
    return out


def test_a_module_attribute_call_is_guarded_and_follows_a_rebinding(monkeypatch):
    # ``MODULE.NAME(...)`` of a plain callable is specialised like ``NAME(...)``: the
    # guard compares the attribute with its compile-time value, so a module attribute
    # rebound later (a monkeypatch, a reload) is called, not the old function.
    assert result(hexes, 3) == [b"00", b"01", b"02"]
    tmpl = C._compiled_for(hexes)
    assert tmpl is not None
    guards = C._GUARDS[tmpl.__code__]
    assert "binascii.hexlify" in guards.values()
    monkeypatch.setattr(binascii, "hexlify", lambda b: b"patched")
    assert result(hexes, 2) == [b"patched", b"patched"]


def sleeps_by_attribute():
    time.sleep(0)  # time.sleep is never guarded as plain: it suspends the process
    return "slept"


def test_time_sleep_called_as_an_attribute_is_not_guarded_as_plain():
    tmpl = C._compiled_for(sleeps_by_attribute)
    assert tmpl is not None
    assert "time.sleep" not in C._GUARDS.get(tmpl.__code__, {}).values()
