"""The process compiler and the Python half of the scheduler protocol, driven by a toy driver."""

from __future__ import annotations

import functools
import importlib.util
import sys
import threading
import traceback
import types
import warnings
from pathlib import Path

import pytest

try:
    from beamvm import _compiler as C
    from beamvm import _runtime as R
except ImportError:  # native extension not built for this interpreter: load by file path
    _pkg_dir = Path(__file__).resolve().parent.parent / "python" / "beamvm"
    if "beamvm" not in sys.modules or not hasattr(sys.modules["beamvm"], "__path__"):
        _pkg = types.ModuleType("beamvm")
        _pkg.__path__ = [str(_pkg_dir)]
        sys.modules["beamvm"] = _pkg

    def _load(name: str) -> types.ModuleType:
        spec = importlib.util.spec_from_file_location(f"beamvm.{name}", _pkg_dir / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[f"beamvm.{name}"] = mod
        spec.loader.exec_module(mod)
        return mod

    R = _load("_runtime")
    C = _load("_compiler")


# --------------------------------------------------------------------------- toy driver


class Proc:
    """A process as the native scheduler sees it."""

    def __init__(self, fn, *args, **kwargs):
        self.gen = C.compile_process(fn, args, kwargs)
        self.preempts = 0
        self.slices = []  # reductions used per slice
        self.requests = []
        self.done = False
        self.result = None
        self.error = None
        self._send = None
        self._throw = None


def step(p: Proc, budget: int, answer=None) -> None:
    """Run one slice of ``p``; ``answer(request)`` replies to requests (raise to throw)."""
    R.set_budget(budget)
    try:
        if p._throw is not None:
            exc, p._throw = p._throw, None
            out = p.gen.throw(exc)
        else:
            val, p._send = p._send, None
            out = p.gen.send(val)
    except StopIteration as e:
        p.done, p.result = True, e.value
        p.slices.append(R.used())
        return
    except BaseException as e:  # noqa: BLE001
        p.done, p.error = True, e
        return
    p.slices.append(R.used())
    if out is R.PREEMPT:
        p.preempts += 1
    else:
        assert isinstance(out, R.Request), out
        p.requests.append(out)
        try:
            p._send = answer(out) if answer else None
        except Exception as e:  # noqa: BLE001
            p._throw = e


def run(fn, *args, budget=1000, answer=None, **kwargs) -> Proc:
    p = Proc(fn, *args, **kwargs)
    while not p.done:
        step(p, budget, answer)
    if p.error is not None:
        raise p.error
    return p


def result(fn, *args, **kwargs):
    return run(fn, *args, **kwargs).result


# --------------------------------------------------------------------------- corpus


def count_to(n):
    x = 0
    while x < n:
        x += 1
    return x


def count_for(n):
    total = 0
    for i in range(n):
        if i % 2:
            continue
        total += i
    return total


def fib(n):
    if n < 2:
        return n
    return fib(n - 1) + fib(n - 2)


def depth(n):
    if n == 0:
        return 0
    return 1 + depth(n - 1)


def busy_helper(n):
    i = 0
    while i < n:
        i += 1
    return i


def calls_busy_helper():
    return busy_helper(50_000) + 1


def counter_closure():
    count = 0

    def inc(by=1):
        nonlocal count
        count += by
        return count

    for _ in range(100):
        inc()
    inc(by=10)
    return count


def make_adder(k):
    def add(x):
        return x + k

    return add


def uses_closure():
    add5 = make_adder(5)
    return [add5(i) for i in range(3)], add5(10)


def gen_numbers(n):
    yield from range(n)


def consumes_generator():
    total = 0
    for v in gen_numbers(100):
        total += v
    return total, sum(gen_numbers(10)), list(x * 2 for x in gen_numbers(3))


def try_order():
    log = []
    try:
        log.append("try")
        raise KeyError("k")
    except KeyError as e:
        log.append(f"except {e.args[0]}")
    else:
        log.append("else")
    finally:
        log.append("finally")
    try:
        log.append("try2")
    except Exception:
        log.append("never")
    else:
        log.append("else2")
    finally:
        log.append("finally2")
    return log


def nested_finally_return():
    log = []

    def inner():
        try:
            return "inner"
        finally:
            log.append("inner-finally")

    try:
        v = inner()
    finally:
        log.append("outer-finally")
    return v, log


class Recorder:
    def __init__(self, log, name, suppress=False):
        self.log, self.name, self.suppress = log, name, suppress

    def __enter__(self):
        self.log.append(f"enter {self.name}")
        return self

    def __exit__(self, et, ev, tb):
        self.log.append(f"exit {self.name} {et.__name__ if et else None}")
        return self.suppress


def with_blocks():
    log = []
    with Recorder(log, "a") as a, Recorder(log, "b"):
        log.append(f"body {a.name}")
    with Recorder(log, "s", suppress=True):
        raise ValueError
    try:
        with Recorder(log, "c"):
            raise KeyError
    except KeyError:
        log.append("caught")
    return log


def signature(a, b=2, *args, c, d=4, **kw):
    return a, b, args, c, d, sorted(kw.items())


def call_signatures():
    return [
        signature(1, c=3),
        signature(1, 5, 6, 7, c=3, d=0, z=9),
        signature(*[1, 2], **{"c": 3, "q": 1}),
    ]


def posonly(a, /, b, *, c=3):
    return a + b + c


class Shape:
    sides = 0

    def __init__(self, name):
        self.name = name
        self.__secret = 42

    def describe(self, prefix="a"):
        return f"{prefix} {self.name} with {self.count()} sides, {self.__secret}"

    def count(self):
        return self.sides

    @classmethod
    def make(cls, name):
        return cls(name)

    @staticmethod
    def unit():
        return posonly(1, 2)


class Square(Shape):
    sides = 4

    def describe(self, prefix="a"):
        return super().describe(prefix).upper()


def methods():
    sq = Square.make("square")
    return sq.describe(), Shape("blob").describe("the"), Shape.unit(), Square.unit()


G = 0


def bump_global():
    global G
    for _ in range(10):
        G += 1
    return G


def local_class():
    class Point:
        def __init__(self, x):
            self.x = x

        def double(self):
            return Point(self.x * 2)

    p = Point(3).double().double()
    return p.x, type(p).__name__


def raises_deep(n):
    if n == 0:
        raise ValueError("bottom")
    return raises_deep(n - 1)


def catches():
    try:
        raises_deep(5)
    except ValueError as e:
        return str(e)


def fstrings_and_match(v):
    match v:
        case [x, y] if abs(x) > abs(y):
            return f"{len(str(x))}:{max(x, y)}"
        case {"k": value}:
            return f"k={value!r}"
        case _:
            return f"other {type(v).__name__}"


CORPUS = [
    (count_to, (10_000,), {}),
    (count_for, (1000,), {}),
    (fib, (15,), {}),
    (depth, (200,), {}),
    (counter_closure, (), {}),
    (uses_closure, (), {}),
    (consumes_generator, (), {}),
    (try_order, (), {}),
    (nested_finally_return, (), {}),
    (with_blocks, (), {}),
    (call_signatures, (), {}),
    (posonly, (1,), {"b": 2}),
    (methods, (), {}),
    (local_class, (), {}),
    (catches, (), {}),
    (fstrings_and_match, ([3, 1],), {}),
    (fstrings_and_match, ({"k": "v"},), {}),
    (fstrings_and_match, (None,), {}),
]


@pytest.mark.parametrize(("fn", "args", "kwargs"), CORPUS, ids=[c[0].__name__ for c in CORPUS])
@pytest.mark.parametrize("budget", [1, 7, 1000])
def test_same_results_as_plain(fn, args, kwargs, budget):
    assert C.is_compilable(fn)
    assert result(fn, *args, budget=budget, **kwargs) == fn(*args, **kwargs)


def test_globals_are_shared():
    global G
    G = 0
    assert result(bump_global) == 10
    assert G == 10


def test_nonlocal_writes_hit_original_cells():
    add = make_adder(1)
    counter = [0]

    def bump():
        counter[0] += add(0)

    total = 0

    def outer():
        nonlocal total
        for _ in range(5):
            bump()
            total += 1
        return total

    assert result(outer, budget=2) == 5
    assert total == 5 and counter[0] == 5


# --------------------------------------------------------------------------- preemption


def test_tight_loop_preempts_every_budget():
    budget = 1000
    p = run(count_to, 100_000, budget=budget)
    assert p.result == 100_000
    # one reduction per iteration (+1 for the entry): ~100 slices of `budget`
    assert 99 <= p.preempts <= 101
    assert all(s == budget for s in p.slices[:-1])


def test_for_loop_with_continue_preempts():
    p = run(count_for, 10_000, budget=100)
    assert 99 <= p.preempts <= 101


def test_busy_helper_is_preempted():
    p = run(calls_busy_helper, budget=500)
    assert p.result == 50_001
    assert 99 <= p.preempts <= 101


def test_calls_count_reductions():
    # fib(15) makes 1973 calls; each entry costs one reduction.
    p = run(fib, 15, budget=100)
    assert p.result == 610
    assert 18 <= p.preempts <= 20
    assert sum(p.slices) == 1973


def test_round_robin_fairness():
    procs = [Proc(count_to, 20_000), Proc(count_to, 20_000)]
    order = []
    queue = list(range(2))
    while queue:
        i = queue.pop(0)
        step(procs[i], 1000)
        order.append(i)
        if not procs[i].done:
            queue.append(i)
    assert order[:10] == [0, 1] * 5
    assert abs(procs[0].preempts - procs[1].preempts) <= 1
    assert all(p.result == 20_000 for p in procs)


def test_deep_recursion():
    p = run(depth, 500, budget=50)
    assert p.result == 500
    assert p.preempts >= 9


def test_builtins_and_plain_callables_run_plainly():
    seen = []

    def work():
        data = [3, 1, 2]
        data.append(len(data))
        seen.append(sorted(data))
        f = functools.partial(max, 0)
        g = lambda v: v * 2  # noqa: E731
        return f(*data), g(4), dict(a=1), str(5), isinstance(data, list)

    p = run(work, budget=1)
    assert p.result == (3, 8, {"a": 1}, "5", True)
    assert seen == [[1, 2, 3, 3]]
    assert p.requests == []


def test_non_compilable_callables():
    assert not C.is_compilable(gen_numbers)
    assert not C.is_compilable(len)
    ns: dict = {}
    exec("def nosrc():\n    return 7\n", ns)
    assert not C.is_compilable(ns["nosrc"])
    exec("nosrc_lambda = lambda: 8", ns)
    assert not C.is_compilable(ns["nosrc_lambda"])
    with pytest.raises(C.CompileError):
        C.compile_function(len)
    # compile_process runs them once, to completion
    assert result(len, [1, 2]) == 2
    assert result(ns["nosrc"]) == 7
    assert result(ns["nosrc_lambda"]) == 8
    with pytest.raises(TypeError, match="generator function"):
        C.compile_process(gen_numbers, (3,))


def test_compile_process_partial_and_bound_method():
    assert result(functools.partial(signature, 1, c=3), 9) == signature(1, 9, c=3)
    sq = Square("sq")
    assert result(sq.describe, "one") == sq.describe("one")
    assert C.compile_function(fib) is C.compile_function(fib)  # cached


# --------------------------------------------------------------------------- tracebacks


def test_traceback_points_at_user_source():
    with pytest.raises(ValueError) as info:
        run(catches_not, budget=3)
    frames = traceback.extract_tb(info.value.__traceback__)
    mine = [f for f in frames if f.filename == __file__]
    names = [f.name for f in mine]
    assert names[-5:] == ["catches_not"] + ["raises_deep"] * 4
    assert mine[-1].line == 'raise ValueError("bottom")'
    assert mine[-1].lineno == raises_deep.__code__.co_firstlineno + 2
    text = "".join(traceback.format_exception(info.value))
    assert "_bvm" not in text
    assert "return raises_deep(n - 1)" in text


def catches_not():
    return raises_deep(3)


# --------------------------------------------------------------------------- primitives


@R.primitive
def fake_receive(timeout=None):
    """Receive a message (test primitive)."""
    return (yield R.Request("receive", (timeout,)))


def uses_primitive():
    got = []
    for i in range(3):
        got.append(fake_receive(i))
    try:
        fake_receive("boom")
    except TimeoutError as e:
        got.append(f"timeout {e}")
    return got


def test_primitive_yields_request_and_gets_result_or_exception():
    def answer(req):
        assert req.kind == "receive"
        if req.args == ("boom",):
            raise TimeoutError("late")
        return ("msg", req.args[0])

    p = run(uses_primitive, budget=1000, answer=answer)
    assert p.result == [("msg", 0), ("msg", 1), ("msg", 2), "timeout late"]
    assert p.requests == [R.Request("receive", (t,)) for t in (0, 1, 2, "boom")]


def test_primitive_outside_process_raises_clear_error():
    with pytest.raises(RuntimeError, match=r"fake_receive\(\) must be called inside a beamvm"):
        fake_receive()
    assert fake_receive.__doc__ == "Receive a message (test primitive)."
    assert R.is_primitive(fake_receive)


def test_primitive_as_process_body():
    p = run(fake_receive, 5, answer=lambda r: "hi")
    assert p.result == "hi" and p.requests == [R.Request("receive", (5,))]


# --------------------------------------------------------------------------- kill


def killable(log):
    try:
        while True:
            fake_receive()
    finally:
        n = 0
        for i in range(10_000):  # cleanup with loops: budget checks must not yield
            n += i
        log.append(("finally", n))


def killable_busy(log):
    with Recorder(log, "cm"):
        try:
            count_to(10**9)
        finally:
            log.append("finally")


def test_kill_runs_finally_and_does_not_hang():
    log = []
    p = Proc(killable, log)
    step(p, 10)
    assert p.requests
    R.set_budget(1)  # even with an exhausted budget, cleanup runs to completion
    exc = R.kill(p.gen)
    assert isinstance(exc, R.ProcessKilled)
    assert log == [("finally", sum(range(10_000)))]


def test_kill_preempted_busy_process():
    log = []
    p = Proc(killable_busy, log)
    step(p, 100)
    step(p, 100)
    assert p.preempts == 2
    exc = R.kill(p.gen)
    assert isinstance(exc, R.ProcessKilled)
    assert log == ["enter cm", "finally", "exit cm ProcessKilled"]
    assert R.budget_cell()[R.KILL_STATE] == 0  # kill mode is over


def swallow_kill(log):
    while True:
        try:
            fake_receive()
        except R.ProcessKilled:
            log.append("swallowed")
            break
    x = 0
    while True:  # runs away after a kill: the kill grace limit stops it
        x += 1


def test_kill_grace_limit_stops_runaway_cleanup(monkeypatch):
    monkeypatch.setattr(R, "KILL_SLICE", 1000)
    monkeypatch.setattr(R, "KILL_GRACE_SLICES", 3)
    log = []
    p = Proc(swallow_kill, log)
    step(p, 10)
    exc = R.kill(p.gen)
    assert isinstance(exc, R.ProcessKilled) and "grace" in str(exc)
    assert log == ["swallowed"]


# --------------------------------------------------------------------------- thread locks

LOCK = threading.Lock()


def holds_lock():
    with LOCK:
        return count_to(10)


def test_thread_lock_in_process_code_warns():
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert result(holds_lock) == 10
    msgs = [x for x in w if issubclass(x.category, RuntimeWarning)]
    assert msgs and "message passing" in str(msgs[0].message)
    assert msgs[0].filename == __file__


# --------------------------------------------------------------------------- budget cell


def test_budget_accounting_and_threads():
    R.set_budget(50)
    assert R.remaining() == 50 and R.used() == 0
    other = []
    t = threading.Thread(target=lambda: other.append(R.remaining()))
    t.start()
    t.join()
    assert other == [R.DEFAULT_BUDGET]  # each scheduler thread has its own cell
    assert R.remaining() == 50


def test_process_cells_follow_processes_across_threads():
    # The multi-threaded protocol: each process owns a cell; enter(cell, n) before a resume.
    procs = [C.compile_process(calls_busy_helper) for _ in range(2)]
    cells = [R.new_cell() for _ in range(2)]
    preempts = [0, 0]
    results = [None, None]

    def resume(i):
        R.enter(cells[i], 500)
        try:
            out = procs[i].send(None)
        except StopIteration as e:
            results[i] = e.value
            return
        assert out is R.PREEMPT and R.used(cells[i]) == 500
        preempts[i] += 1

    while None in results:
        for i in (0, 1):
            if results[i] is None:
                t = threading.Thread(target=resume, args=(i,))  # a different thread each time
                t.start()
                t.join()
    assert results == [50_001, 50_001]
    assert 99 <= preempts[0] <= 101 and preempts[0] == preempts[1]


def test_fast_receive_outside_vm_yields_a_request():
    """Compiled calls to beamvm.receive run the native fast path; driven by a toy
    driver (no VM), it yields Request("receive", ...) and returns what is sent back."""
    beamvm = pytest.importorskip("beamvm")
    if not hasattr(beamvm, "receive"):
        pytest.skip("the native extension is not built for this interpreter")

    def body():
        got = beamvm.receive((beamvm.ANY, 1), timeout=2)
        return got, beamvm.receive()

    g = C.compile_function(body)()
    R.set_budget(1000)
    req = g.send(None)
    assert isinstance(req, R.Request) and req.kind == "receive"
    assert req.args[0] == (beamvm.ANY, 1) and req.args[1] == 2
    req2 = g.send(("m", 1))
    assert req2.kind == "receive" and req2.args[0] is beamvm.ANY
    with pytest.raises(StopIteration) as e:
        g.send((1, 2))
    assert e.value.value == (("m", 1), (1, 2))


#: Set to beamvm.receive by the test below (a global name, so its call sites are guarded).
RECV = None


def receives_twice():
    first = RECV()
    return first, RECV(timeout=3)


def test_receive_without_arguments_takes_the_argument_free_fast_receive():
    """`receive()` written without arguments calls `_native._recv_any` (no `*patterns`
    tuple to build: the B3 ping-pong path); with arguments, `_recv`. Both behave as the
    receive they stand for: outside a VM they yield the same Requests a toy driver
    answers."""
    import dis

    beamvm = pytest.importorskip("beamvm")
    if not hasattr(beamvm, "receive"):
        pytest.skip("the native extension is not built for this interpreter")
    global RECV
    RECV = beamvm.receive
    try:
        g = C.compile_function(receives_twice)
        loaded = {i.argval for i in dis.get_instructions(g) if i.opname == "LOAD_DEREF"}
        assert {"_bvm_RCV0", "_bvm_RCV"} <= loaded
        gen = g()
        R.set_budget(1000)
        req = gen.send(None)
        assert isinstance(req, R.Request) and req.kind == "receive"
        assert req.args[0] is beamvm.ANY and req.args[1] is None
        req2 = gen.send(("first",))
        assert req2.kind == "receive" and req2.args[1] == 3
        with pytest.raises(StopIteration) as e:
            gen.send("second")
        assert e.value.value == (("first",), "second")
    finally:
        RECV = None


def test_receive_without_arguments_in_a_vm_takes_messages_in_order():
    beamvm = pytest.importorskip("beamvm")
    if not hasattr(beamvm, "run"):
        pytest.skip("the native extension is not built for this interpreter")
    from beamvm import receive, self_pid, send, spawn

    def echo():
        while True:
            m = receive()
            if m is None:
                return
            send(m[0], ("echo", m[1]))

    def main():
        e = spawn(echo)
        me = self_pid()
        for i in range(3):
            send(e, (me, i))
        got = [receive() for _ in range(3)]
        send(e, None)
        return got

    assert beamvm.run(main, schedulers=1) == [("echo", 0), ("echo", 1), ("echo", 2)]


# --------------------------------------------------------------------------- guarded call sites
# A call of a global name whose value is a plain callable (builtin, class) is compiled to
# `K(args) if NAME is K else <dispatch>`; rebinding the name later must fall back.

GUARDED = len


def calls_guarded(x):
    return GUARDED(x)


def busy_rebound(x):
    n = 0
    while n < 5000:
        n += 1
    return ("helper", x, n)


def test_guarded_call_site_uses_the_value_at_compile_time():
    assert result(calls_guarded, [1, 2, 3]) == 3


def test_guarded_call_site_falls_back_when_the_name_is_rebound():
    global GUARDED
    assert result(calls_guarded, "abcd") == 4  # compiled with GUARDED = len
    old = GUARDED
    try:
        GUARDED = busy_rebound  # now a Python function: compiled and preempted
        p = run(calls_guarded, 7, budget=100)
        assert p.result == ("helper", 7, 5000)
        assert p.preempts > 10, "the rebound callee must be compiled and preempted"
        GUARDED = str.upper  # another plain callable (a method descriptor)
        assert result(calls_guarded, "ab") == "AB"
    finally:
        GUARDED = old


def calls_late_bound(x):
    return LATE(x)  # noqa: F821 - defined after this function is compiled


def test_call_of_a_name_unbound_at_compile_time_works_once_bound():
    g = globals()
    g.pop("LATE", None)
    with pytest.raises(NameError):
        result(calls_late_bound, 1)
    g["LATE"] = abs
    try:
        assert result(calls_late_bound, -5) == 5
    finally:
        g.pop("LATE", None)


def shadows(len):  # a parameter named like a builtin is never guarded as the builtin
    return len(3)


def test_locals_named_like_builtins_are_not_specialised():
    assert result(shadows, lambda x: x * 2) == 6


# --------------------------------------------------------------------------- source texts
# A function is compiled from its file's text only if that text compiles to its code
# object (what runs is what was loaded: tests/test_code.py for edited files).


def imported_receivers(n):
    # a method call on a name the module imports compiles differently (no method load)
    total = functools.reduce(lambda a, b: a + b, range(n))
    parts = {"k": n}  # a method call on a local: a method load
    return total, parts.get("k"), sys.getrecursionlimit() > 0


class Texts:
    def banner(self):
        for _ in range(2):
            pass
        return """a
        b
    c"""


def test_functions_compile_from_the_text_that_reproduces_them():
    assert C.is_compilable(imported_receivers)
    assert result(imported_receivers, 4) == (6, 4, True)


def test_a_method_keeps_the_text_of_its_string_literals():
    # The method's block is parsed as it stands (not dedented, which changed the lines
    # of a multi-line string literal inside it).
    t = Texts()
    assert C.is_compilable(Texts.banner)
    assert result(t.banner) == t.banner() == "a\n        b\n    c"


def test_process_code_with_asserts_in_a_pytest_module_is_compiled():
    # pytest rewrote this module's asserts: its functions are compared with the same
    # rewriting done (they still compile from the source text, with plain asserts).
    if "@pytest_ar" not in globals():
        pytest.skip("pytest's assertion rewriting is off")

    def checks(n):
        total = 0
        for i in range(n):
            assert i >= 0, i
            total += i
        return total

    assert C.is_compilable(checks)
    assert result(checks, 5) == 10
