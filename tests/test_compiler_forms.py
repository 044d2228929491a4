"""The compiler on the code forms it rewrites beyond plain loops and calls: comprehensions,
generator expressions consumed by builtins, map/filter, key= callbacks, lambdas, partials,
decorators, callable objects, StopIteration, time.sleep, thread locks. Driven by the toy
driver of tests/test_compiler.py (no VM): results must equal plain Python's at any
budget, long forms must be preempted, tracebacks must point at the user's lines."""

from __future__ import annotations

import functools
import inspect
import sys
import threading
import time
import traceback
from pathlib import Path

import pytest
from test_compiler import C, Proc, R, fake_receive, result, run, step

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benches" / "pylibs"))
from forms import CountCalls, count, plain_deco, traced  # noqa: E402

# --------------------------------------------------------------------------- helpers


def neg(x):
    count(20)
    return -x


def is_even(x):
    count(20)
    return x % 2 == 0


def twice(x):
    count(20)
    return 2 * x


# --------------------------------------------------------------------------- corpus


def comprehensions(n):
    a = [x * x for x in range(n) if x % 3]
    b = {x % 7 for x in range(n)}
    c = {x: twice(x) for x in range(n) if x > 2}
    d = [[y for y in range(x)] for x in range(5)]
    e = [(x, y) for x in range(4) for y in range(x) if (x + y) % 2]
    return a, b, c, d, e


def consumers(n):
    return (
        sum(x for x in range(n)),
        sum((x * 0.5 for x in range(n)), 10.0),
        any(x > n - 2 for x in range(n)),
        all(x >= 0 for x in range(n)),
        min(x % 5 for x in range(1, n)),
        max((x for x in range(n)), key=neg),
        max((x for x in []), default="empty"),
        tuple(x for x in "abc"),
        sorted((x for x in [3, 1, 2]), reverse=True),
        sorted((x for x in [3, 1, 2]), key=neg),
        dict((k, k * 2) for k in "ab"),
        frozenset(x % 3 for x in range(n)),
        set(x % 4 for x in range(n)),
        list(x * 2 for x in range(n)),
        "-".join(str(x) for x in range(4)),
        b"".join(bytes([x]) for x in range(3)),
    )


def maps_and_filters(n):
    return (
        list(map(twice, range(n))),
        list(map(lambda v: v + 1, range(5))),
        list(map(pow, [2, 3], [3, 2])),
        list(filter(None, [0, 1, 2, 0, 3])),
        list(filter(is_even, range(n))),
        sum(map(twice, range(n))),
        sorted(filter(is_even, range(n)), key=neg),
    )


def key_callbacks(n):
    data = [(i * 7) % 11 for i in range(n)]
    s = sorted(data, key=neg)
    r = sorted(data, key=lambda v: v % 3, reverse=True)  # stability with reverse
    lst = list(data)
    lst.sort(key=lambda v: v % 4)
    return s, r, lst, min(data, key=neg), max(data, key=neg), max([], key=neg, default=None)


def lambdas():
    k = 10
    add = lambda x, y=1: x + y + k  # noqa: E731
    a, b = (lambda v: v * 2), (lambda v: v * 3)
    nested = lambda: lambda q: q + 1  # noqa: E731
    return add(1), add(1, y=5), a(2), b(2), nested()(4), (lambda: [i for i in range(3)])()


@traced
def wrapped_count(n):
    return count(n)


@plain_deco
def plain_wrapped_count(n):
    return count(n)


@traced
def wrapped_receive():
    return fake_receive(1)


def callables(n):
    p = functools.partial(count, n)
    q = functools.partial(functools.partial(pow, 2), 10)
    return p(), q(), CountCalls(lambda k: count(k) + 1)(n), wrapped_count(n), plain_wrapped_count(n)


class WithPrivate:
    def __init__(self):
        self.__items = [1, 2, 3]

    def doubled(self):
        return [x * 2 for x in self.__items], sum(x for x in self.__items)


def in_method():
    return WithPrivate().doubled()


def scoping():
    x = "outer"
    r = [x for x in range(3)]
    walrus = [y := v for v in range(3)]  # left plain: binds y here
    funcs = [lambda: i for i in range(3)]  # noqa: B023 -- late binding, on purpose
    return x, r, walrus, y, [f() for f in funcs]


CORPUS = [
    (comprehensions, (300,)),
    (consumers, (300,)),
    (maps_and_filters, (50,)),
    (key_callbacks, (60,)),
    (lambdas, ()),
    (callables, (500,)),
    (in_method, ()),
    (scoping, ()),
]


@pytest.mark.parametrize(("fn", "args"), CORPUS, ids=[c[0].__name__ for c in CORPUS])
@pytest.mark.parametrize("budget", [1, 7, 1000])
def test_same_results_as_plain(fn, args, budget):
    assert result(fn, *args, budget=budget) == fn(*args)


# --------------------------------------------------------------------------- preemption


def long_listcomp():
    return len([x for x in range(20_000)])


def long_genexp_sum():
    return sum(x for x in range(20_000) if x % 2)


def long_dictcomp():
    return len({x: x for x in range(20_000)})


def long_any():
    return any(x < 0 for x in range(20_000))


def long_map():
    return len(list(map(twice, range(500))))


def long_sorted_key():
    return sorted(range(500), key=neg)[0]


def long_min_key():
    return min(range(500), key=neg)


def long_list_sort():
    data = list(range(500))
    data.sort(key=neg)
    return data[0]


def long_lambda():
    f = lambda n: count(n)  # noqa: E731
    return f(20_000)


def long_partial():
    return functools.partial(count, 20_000)()


def long_callable():
    return CountCalls(count)(20_000)


def long_wrapped():
    return wrapped_count(20_000) + plain_wrapped_count(20_000)


def long_comp_with_calls():
    return len([twice(x) for x in range(1000)])


LONG = [
    long_listcomp,
    long_genexp_sum,
    long_dictcomp,
    long_any,
    long_map,
    long_sorted_key,
    long_min_key,
    long_list_sort,
    long_lambda,
    long_partial,
    long_callable,
    long_wrapped,
    long_comp_with_calls,
]


@pytest.mark.parametrize("fn", LONG, ids=[f.__name__ for f in LONG])
def test_long_forms_are_preempted(fn):
    p = run(fn, budget=1000)
    assert p.result == fn()
    # each form spends at least ~10,000 reductions in loops of its own or of its callees
    assert p.preempts >= 9, f"{fn.__name__}: {p.preempts} preemptions"


# --------------------------------------------------------------------------- semantics


def test_any_all_short_circuit_and_evaluation_order():
    seen = []

    def probe(v):
        seen.append(v)
        return v

    def body():
        a = any(probe(x) > 2 for x in range(10))
        b = all(probe(x) < 1 for x in range(10))
        c = sum((probe(x) for x in [probe(1), probe(2)]), probe(0) + 100)
        return a, b, c

    with pytest.raises(TypeError):  # sum() rejects a str start before iterating
        result(lambda: sum((x for x in "ab"), ""))
    seen.clear()
    plain = body()
    plain_seen = list(seen)
    seen.clear()
    assert result(body, budget=3) == plain
    assert seen == plain_seen


def test_empty_min_max_raise_the_builtin_error():
    def body():
        out = []
        for f in (min, max):
            try:
                f(x for x in [])
            except ValueError as e:
                out.append(str(e))
            try:
                f([], key=neg)
            except ValueError as e:
                out.append(str(e))
        return out

    assert result(body) == body()


def test_rebound_builtin_falls_back_to_the_plain_call():
    def body():
        return sum(x for x in range(4)), list(map(twice, [1]))

    g = body.__globals__
    try:
        g["sum"] = lambda it: ("mine", list(it))
        g["map"] = lambda f, it: ["mapped"]
        assert result(body) == (("mine", [0, 1, 2, 3]), ["mapped"])
    finally:
        g.pop("sum")
        g.pop("map")
    assert result(body) == (6, [2])


def test_receive_inside_decorated_function_and_comprehension():
    def body():
        a = wrapped_receive()
        b = [fake_receive(i) for i in range(2)]
        return a, b

    p = run(body, answer=lambda req: ("msg", req.args[0]))
    assert p.result == (("msg", 1), [("msg", 0), ("msg", 1)])
    assert [r.args for r in p.requests] == [(1,), (0,), (1,)]


def test_wrapped_functions_compile_as_themselves():
    # functools.wraps makes inspect follow __wrapped__ from a function; the compiler reads
    # the code object's own source.
    assert C.is_compilable(wrapped_count)
    assert C.compile_function(wrapped_count).__name__ == "wrapped_count"
    assert C.is_compilable(wrapped_count.__wrapped__)


def test_comprehension_scope_does_not_leak_and_class_bodies_stay_plain():
    def body():
        k = 5

        class Table:
            rows = [k * i for i in range(3)]  # class body: runs plainly

        squares = [k * k for k in range(3)]
        return k, squares, Table.rows

    assert result(body, budget=1) == body()


def test_comprehension_with_super_and_locals_stays_plain():
    class Base:
        def vals(self):
            return [1, 2]

    class Child(Base):
        def vals(self):
            return [v * 10 for v in super().vals()]

    def body():
        return Child().vals(), sorted(len(locals()) for _ in range(1))

    assert result(body, budget=1) == body()


# --------------------------------------------------------------------------- StopIteration


def next_of(it):
    return next(it)


def catches_stop():
    try:
        next_of(iter(()))
    except StopIteration:
        return "StopIteration"
    except RuntimeError as e:  # what PEP 479 would make of it in a generator
        return f"RuntimeError: {e}"


def raises_stop():
    count(10)
    raise StopIteration("done")


def test_stop_iteration_reaches_the_caller_as_stop_iteration():
    assert result(catches_stop, budget=1) == "StopIteration"
    p = Proc(raises_stop)
    step(p, 1000)
    assert p.done and isinstance(p.result, C.stop_carrier_type())
    assert isinstance(p.result.exc, StopIteration) and p.result.exc.args == ("done",)


def test_stop_iteration_through_comprehension_and_partial():
    def body():
        out = []
        for f in (
            lambda: [next_of(iter(())) for _ in range(1)],
            functools.partial(next_of, iter(())),
            lambda: sum(next_of(iter(())) for _ in range(1)),
        ):
            try:
                f()
            except StopIteration:
                out.append("stop")
        return out

    assert result(body) == ["stop", "stop", "stop"]


# --------------------------------------------------------------------------- tracebacks


def bad_key(v):
    return 1 / (v - 3)


def traceback_forms():
    out = []
    for f in (
        lambda: [1 / (x - 2) for x in range(5)],
        lambda: sum(1 / (x - 2) for x in range(5)),
        lambda: sorted(range(5), key=bad_key),
        lambda: list(map(bad_key, range(5))),
        lambda: min(range(5), key=bad_key),
    ):
        try:
            f()
        except ZeroDivisionError as e:
            out.append(traceback.extract_tb(e.__traceback__))
    return out


def test_tracebacks_point_at_user_lines():
    for tb in result(traceback_forms, budget=2):
        mine = [f for f in tb if f.filename == __file__]
        assert mine, tb
        assert mine[-1].line in (
            "lambda: [1 / (x - 2) for x in range(5)],",
            "lambda: sum(1 / (x - 2) for x in range(5)),",
            "return 1 / (v - 3)",
        )
        assert not any("_bvm" in (f.name or "") for f in tb)


# --------------------------------------------------------------------------- blocking calls


def sleeps():
    time.sleep(0.25)
    from time import sleep

    sleep(0)
    return "slept"


def test_time_sleep_suspends_the_process():
    t0 = time.monotonic()
    p = run(sleeps)
    assert time.monotonic() - t0 < 0.2  # the toy driver answers at once: nothing blocked
    assert p.result == "slept"
    assert p.requests == [R.Request("sleep", (0.25,)), R.Request("sleep", (0,))]


def test_time_sleep_bad_arguments_raise_as_usual():
    with pytest.raises(ValueError):
        result(lambda: time.sleep(-1))
    with pytest.raises(TypeError):
        result(lambda: time.sleep("x"))


LOCK = threading.Lock()


def takes_lock(timeout):
    got = LOCK.acquire(timeout=timeout)
    if got:
        LOCK.release()
    return got


def with_lock():
    with LOCK as entered:
        return entered


def test_contended_thread_lock_is_polled_not_blocked(caplog):
    LOCK.acquire()
    try:
        p = Proc(takes_lock, -1)
        for _ in range(3):
            step(p, 1000)
        assert not p.done and all(r.kind == "sleep" for r in p.requests)
    finally:
        LOCK.release()
    while not p.done:
        step(p, 1000)
    assert p.result is True
    assert "waits on a threading lock" in caplog.text and "beamvm.sync" in caplog.text


@pytest.mark.filterwarnings("ignore:a threading lock is held:RuntimeWarning")
def test_lock_timeout_and_with_block():
    assert result(takes_lock, 0.5) is True  # uncontended: no request at all
    assert run(takes_lock, 0.5).requests == []
    LOCK.acquire()
    try:
        t0 = time.monotonic()
        p = Proc(takes_lock, 0.05)
        while not p.done:
            step(p, 1000)
            time.sleep(0.005)
        assert p.result is False and time.monotonic() - t0 >= 0.05
        p = Proc(with_lock)
        step(p, 1000)
        assert not p.done
    finally:
        LOCK.release()
    while not p.done:
        step(p, 1000)
    assert p.result is True and not LOCK.locked()


# --------------------------------------------------------------------------- refused forms


async def coro_fn():
    return 1


def gen_fn():
    yield 1


async def agen_fn():
    yield 1


def test_generator_functions_are_refused_with_advice_and_async_functions_compile():
    with pytest.raises(TypeError, match="generator function.*consumes it"):
        C.compile_process(gen_fn)
    with pytest.raises(TypeError, match="async generator"):
        C.compile_process(agen_fn)
    # An async function is a process body since beamvm.aio: it runs as a coroutine.
    for f in (coro_fn, functools.partial(coro_fn)):
        body = C.compile_process(f)
        assert inspect.isgenerator(body), body
        body.close()


def test_asyncio_run_in_process_code_says_what_to_do():
    import asyncio

    def body():
        return asyncio.run(coro_fn())

    with pytest.raises(RuntimeError, match="asyncio.run.*beamvm process.*beamvm.await_"):
        result(body)


def make_lambda():
    one = abs(-1)  # a call: make_lambda is compiled, not a leaf called plainly
    return lambda n: count(n) + one


def test_the_same_lambda_compiled_from_two_code_objects():
    # The original function's lambda and the compiled function's lambda are two code
    # objects with one source: each is compiled from a fresh copy of the parsed lambda.
    plain = make_lambda()
    assert result(plain, 10) == 11
    from_compiled = result(make_lambda)
    assert from_compiled.__code__ is not plain.__code__
    assert result(from_compiled, 10) == 11
    # a lambda made by compiled code has the template's code object: it compiles too
    assert C.is_compilable(from_compiled)


def test_a_plain_function_runs_uncompiled_so_its_thread_lock_does_not_warn():
    import threading
    import warnings

    from beamvm._otp import plain

    lock = threading.Lock()

    @plain
    def locked():
        with lock:
            return sum(1 for _ in range(1000))

    def body():
        return locked()

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert result(body) == 1000


def lambdas_on_one_line():
    a, b = (lambda: fake_receive(1)), (lambda: fake_receive(2))  # noqa: E731
    nested = lambda: lambda q: fake_receive(q)  # noqa: E731
    picky = lambda: fake_receive(timeout=(lambda: 4)())  # noqa: E731
    return a, b, nested, nested(), picky, (a(), b(), nested()(3), picky())


def test_lambdas_sharing_a_line_are_each_compiled():
    # Several lambdas on one line used to leave every one of them plain (the code's
    # first position, its RESUME at column 0, is in no lambda's body): a primitive
    # called in one then returned a generator instead of suspending the process.
    p = run(lambdas_on_one_line, answer=lambda req: ("got", req.args[0]))
    *fns, got = p.result
    assert got == (("got", 1), ("got", 2), ("got", 3), ("got", 4))
    assert [r.args[0] for r in p.requests] == [1, 2, 3, 4]
    assert all(C.is_compilable(f) for f in fns)
    # each compiled from its own text: the body of b asks for 2, not a's 1
    b = fns[1]
    assert run(b, answer=lambda req: req.args[0]).result == 2
