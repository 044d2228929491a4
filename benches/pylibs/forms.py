"""The preemption coverage catalogue: code forms a Python process may spin in.

Each form is a process body that runs until it is killed (``hog_*``), together with whether
beamvm claims to preempt it (docs/preemption.md). ``benches/preemption_forms.py`` measures
a 10 ms ticker's lateness beside each form on one scheduler; tests/test_forms.py asserts
that a ticker keeps running beside every form claimed preemptible.

A form that cannot be preempted does its unpreemptible step in bounded pieces (about
0.1-0.3 s) so that the measurement ends: the kill lands between two pieces.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import beamvm
import forms_lib
from forms_lib import Accumulator, count_to

# --------------------------------------------------------------------------- helpers


def count(n):
    i = 0
    while i < n:
        i += 1
    return i


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def depth(n):
    return 0 if n == 0 else 1 + depth(n - 1)


def square(x):
    return x * x


def slow_square(x):
    count(2000)
    return x * x


def slow_key(x):
    count(200)
    return -x


def slow_pred(x):
    count(200)
    return x % 2 == 0


def fine_gen(n):
    for i in range(n):  # noqa: UP028 -- a loop with a yield, the form under test
        yield i


def coarse_gen():
    while True:
        total = 0
        for i in range(3_000_000):  # ~0.1 s between yields
            total += i
        yield total


def traced(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)

    return wrapper


def plain_deco(fn):
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)

    return wrapper


class CountCalls:
    """A class-based decorator (an instance with ``__call__``)."""

    def __init__(self, fn):
        self.fn = fn
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


@traced
def wrapped_work(n):
    return count(n)


@plain_deco
def plain_wrapped_work(n):
    return count(n)


@CountCalls
def class_wrapped_work(n):
    return count(n)


class Worker:
    def __init__(self):
        self.n = 0

    def step(self, n):
        for _ in range(n):
            self.n += 1
        return self.n

    def own_class_step(self, n):
        for _ in range(n):
            self.n += 1
        return Worker.__name__  # names its own class (a module global)

    @classmethod
    def cls_step(cls, n):
        return count(n)

    @staticmethod
    def static_step(n):
        return count(n)

    @property
    def slow_prop(self):
        return count(2_000_000)  # ~0.1 s inside a getter: C calls it

    def __add__(self, other):
        count(2_000_000)  # ~0.1 s inside a dunder: C calls it
        return self


WORDS = "the quick brown fox jumps over the lazy dog " * 250
DATA = [(i * 7919) % 10007 for i in range(10_000)]
BLOB = b"x" * 1_000_000
HUGE_BLOB = b"x" * 50_000_000
DOC = {"items": [{"id": i, "name": f"n{i}", "tags": ["a", "b"]} for i in range(300)]}

_NO_SOURCE: dict = {}
exec(  # noqa: S102 -- code without source, on purpose
    "def no_source_loop():\n    i = 0\n    while i < 3_000_000:\n        i += 1\n    return i\n",
    _NO_SOURCE,
)

# --------------------------------------------------------------------------- forms


def hog_idle():
    beamvm.receive()  # nothing runs beside the ticker: the machine's own noise floor


def hog_while_loop():
    x = 0
    while True:
        x += 1


def hog_for_range():
    while True:
        for _ in range(10**6):
            pass


def hog_nested_loops():
    while True:
        for i in range(1000):
            for j in range(1000):
                i ^= j


def hog_recursion():
    while True:
        fib(20)


def hog_deep_recursion():
    while True:
        depth(800)


def hog_closure():
    total = 0

    def add(n):
        nonlocal total
        for i in range(n):
            total += i

    while True:
        add(10**5)


def hog_method():
    w = Worker()
    while True:
        w.step(10**5)


def hog_method_own_class():
    w = Worker()
    while True:
        w.own_class_step(10**7)


def hog_classmethod():
    while True:
        Worker.cls_step(10**5)
        Worker.static_step(10**5)


def hog_generator_fine():
    while True:
        for _ in fine_gen(10**5):
            pass


def hog_generator_coarse():
    for _ in coarse_gen():
        pass


def hog_list_comp():
    while True:
        [x * x for x in range(10**6)]


def hog_set_comp():
    while True:
        {x % 1000 for x in range(10**6)}


def hog_dict_comp():
    while True:
        {x: x for x in range(10**5)}


def hog_nested_comp():
    while True:
        [[y for y in range(1000)] for _ in range(1000)]


def hog_comp_with_calls():
    while True:
        [slow_square(x) for x in range(100)]


def hog_genexp_sum():
    while True:
        sum(x * x for x in range(10**6))


def hog_genexp_any():
    while True:
        any(x < 0 for x in range(10**6))


def hog_genexp_list():
    while True:
        list(x for x in range(10**6))


def hog_genexp_for():
    while True:
        for _ in (x * x for x in range(10**6)):
            pass


def hog_genexp_join():
    while True:
        "".join(str(x) for x in range(10**5))


def counted(n):
    count(n)
    return [1, 2, 3]


def hog_genexp_first_iter():
    while True:
        for _ in (x for x in counted(10**7)):  # the call runs in this frame
            pass


def hog_lambda():
    f = lambda n: count(n)  # noqa: E731 -- the form under test
    while True:
        f(10**6)


def hog_lambda_comp():
    f = lambda n: [x for x in range(n)]  # noqa: E731
    while True:
        f(10**6)


def hog_partial():
    p = functools.partial(count, 10**6)
    while True:
        p()


def hog_decorator_wraps():
    while True:
        wrapped_work(10**6)


def hog_decorator_plain():
    while True:
        plain_wrapped_work(10**6)


def hog_decorator_class():
    while True:
        class_wrapped_work(10**6)


def hog_map_lambda():
    while True:
        list(map(lambda x: x * x, range(10**6)))


def hog_map_function():
    while True:
        list(map(slow_square, range(200)))


def hog_filter():
    while True:
        list(filter(slow_pred, range(2000)))


def hog_sorted_key():
    data = list(range(2000))
    while True:
        sorted(data, key=slow_key)


def hog_list_sort_key():
    while True:
        data = list(range(2000))
        data.sort(key=slow_key)


def hog_min_max_key():
    data = list(range(2000))
    while True:
        min(data, key=slow_key)
        max(data, key=slow_key)


def hog_imported_function():
    while True:
        count_to(10**6)
        forms_lib.count_to(10**6)


def hog_imported_method():
    acc = Accumulator()
    while True:
        acc.add_range(10**5)


def hog_stdlib_python():
    data = list(range(10_000))
    while True:
        statistics.mean(data)


def hog_c_call_loop():
    while True:
        sum(range(10**5))


def hog_sorted_loop():
    while True:
        sorted(DATA)


def hog_regex_loop():
    pat = re.compile(r"\w+")
    while True:
        pat.findall(WORDS)
        re.search(r"lazy\s+dog$", WORDS)


def hog_sleep_loop():
    while True:
        time.sleep(0.01)


def hog_hashlib_loop():
    while True:
        hashlib.sha256(BLOB).digest()


def hog_str_ops():
    while True:
        ("x" * 10**6).upper()


def hog_json_loop():
    while True:
        json.loads(json.dumps(DOC))


def hog_try_except():
    while True:
        try:
            {}["missing"]
        except KeyError:
            pass


def hog_with_block():
    class CM:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    while True:
        with CM():
            count(1000)


def hog_dirty_cpu():
    while True:  # hashlib releases the GIL: the schedulers keep running Python meanwhile
        beamvm.dirty_cpu(hashlib.sha256, HUGE_BLOB)


def hog_large_heap():
    live = list(range(3_000_000))  # a 3M-element live heap (one list: 3M items to traverse)
    nodes = [[i] for i in range(300_000)]  # and 300,000 small live containers
    keep = []
    i = 0
    while True:  # allocations that survive a while: young collections promote them
        keep.append({"i": i})
        if len(keep) > 2000:
            keep = []
        i += 1
    return live, nodes  # never reached: keeps the heap alive


def hog_int_heap():
    live = list(range(3_000_000))  # one object whose 3M items a full collection traverses
    keep = []
    i = 0
    while True:  # records that live a while: young collections promote some of them
        keep.append({"i": i, "tags": [i]})  # tracked (a dict of ints alone is not)
        if len(keep) > 2000:
            keep = []
        i += 1
    return live  # never reached: keeps the heap alive


def hog_long_c_call():
    while True:
        sum(range(5 * 10**6))  # one C call of ~0.1 s


def hog_big_int():
    while True:
        3**1_000_000  # noqa: B018 -- one arithmetic operation of ~0.1 s


def hog_property():
    w = Worker()
    while True:
        w.slow_prop  # noqa: B018 -- the getter is the form under test


def hog_dunder():
    w = Worker()
    while True:
        w + w  # noqa: B018


def hog_reduce_callback():
    while True:
        functools.reduce(lambda a, b: a + b, range(10**6))


def hog_no_source():
    f = _NO_SOURCE["no_source_loop"]
    while True:
        f()


# --------------------------------------------------------------------------- catalogue


@dataclass(frozen=True)
class Form:
    name: str
    hog: Callable[[], None]
    #: Whether beamvm preempts this form (a ticker keeps its 10 ms period beside it).
    preemptible: bool
    what: str


def _f(name: str, preemptible: bool, what: str) -> Form:
    return Form(name, globals()[f"hog_{name}"], preemptible, what)


FORMS: list[Form] = [
    _f("idle", True, "nothing (the ticker alone: the machine's noise floor)"),
    _f("while_loop", True, "`while True: x += 1`"),
    _f("for_range", True, "`for _ in range(10**6): pass`"),
    _f("nested_loops", True, "two nested `for` loops"),
    _f("recursion", True, "`fib(20)` (call-heavy recursion)"),
    _f("deep_recursion", True, "recursion 800 deep"),
    _f("closure", True, "a closure with `nonlocal` and a loop"),
    _f("method", True, "a method whose body loops"),
    _f("method_own_class", True, "a looping method that names its own class"),
    _f("classmethod", True, "a classmethod and a staticmethod that loop"),
    _f("generator_fine", True, "a generator consumed by `for`, short steps"),
    _f("generator_coarse", False, "a generator that loops ~0.1 s between yields"),
    _f("list_comp", True, "`[x * x for x in range(10**6)]`"),
    _f("set_comp", True, "a set comprehension"),
    _f("dict_comp", True, "a dict comprehension"),
    _f("nested_comp", True, "a comprehension of comprehensions"),
    _f("comp_with_calls", True, "`[slow_square(x) for x in ...]` (a looping callee)"),
    _f("genexp_sum", True, "`sum(x * x for x in range(10**6))`"),
    _f("genexp_any", True, "`any(x < 0 for x in range(10**6))`"),
    _f("genexp_list", True, "`list(x for x in range(10**6))`"),
    _f("genexp_for", True, "`for _ in (x * x for x in ...)`"),
    _f("genexp_join", True, '`"".join(str(x) for x in range(10**5))`'),
    _f("genexp_first_iter", True, "`for _ in (x for x in f())`, f loops"),
    _f("lambda", True, "a lambda that calls a looping function"),
    _f("lambda_comp", True, "a lambda whose body is a comprehension"),
    _f("partial", True, "`functools.partial(count, 10**6)()`"),
    _f("decorator_wraps", True, "a function wrapped with `functools.wraps`"),
    _f("decorator_plain", True, "a decorator without `functools.wraps`"),
    _f("decorator_class", True, "a class-based decorator (`__call__`)"),
    _f("map_lambda", True, "`list(map(lambda x: x * x, range(10**6)))`"),
    _f("map_function", True, "`list(map(f, ...))`, f loops"),
    _f("filter", True, "`list(filter(pred, ...))`, pred loops"),
    _f("sorted_key", True, "`sorted(data, key=f)`, f loops"),
    _f("list_sort_key", True, "`data.sort(key=f)`, f loops"),
    _f("min_max_key", True, "`min/max(data, key=f)`, f loops"),
    _f("imported_function", True, "a function imported from another module"),
    _f("imported_method", True, "a method of a class from another module"),
    _f("stdlib_python", True, "`statistics.mean` (pure-Python stdlib)"),
    _f("c_call_loop", True, "`while True: sum(range(10**5))` (~2 ms C calls)"),
    _f("sorted_loop", True, "`sorted(list of 10,000)` in a loop"),
    _f("regex_loop", True, "`re` findall/search in a loop"),
    _f("sleep_loop", True, "`time.sleep(0.01)` in a loop"),
    _f("hashlib_loop", True, "`hashlib.sha256(1 MB)` in a loop"),
    _f("str_ops", True, "`('x' * 10**6).upper()` in a loop"),
    _f("json_loop", True, "`json.loads(json.dumps(doc))` in a loop"),
    _f("try_except", True, "raise and catch in a loop"),
    _f("with_block", True, "a `with` block in a loop"),
    _f("dirty_cpu", True, "`beamvm.dirty_cpu(hashlib.sha256, 50 MB)` in a loop"),
    _f("large_heap", True, "holds a 3M-element list and 300k lists, allocates (cyclic GC)"),
    _f("int_heap", True, "holds a 3M-int list, allocates records that live a while (cyclic GC)"),
    _f("long_c_call", False, "one C call of ~0.1 s (`sum(range(5 * 10**6))`)"),
    _f("big_int", False, "one arithmetic operation of ~0.1 s (`3 ** 10**6`)"),
    _f("property", False, "a property getter that loops ~0.1 s"),
    _f("dunder", False, "an `__add__` that loops ~0.1 s"),
    _f("reduce_callback", False, "`functools.reduce(lambda ...)`: C calls the lambda"),
    _f("no_source", False, "a function made by `exec` (no source to compile)"),
]

BY_NAME = {f.name: f for f in FORMS}
