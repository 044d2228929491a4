"""Preemption: CPU-bound Python processes share one scheduler fairly; compiled code keeps
Python's semantics (recursion, generators, closures, try/finally, with, exceptions,
tracebacks)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import traceback

import beamvm
from beamvm import ANY, Atom, receive, self_pid, send, spawn
from proc_helpers import env_with, ticker


def run(fn, *args, **cfg):
    cfg.setdefault("schedulers", 2)
    return beamvm.run(fn, *args, **cfg)


def spinner(parent, deadline):
    x = 0
    while True:
        x += 1
        if x & 0x3FFF == 0 and time.monotonic() > deadline:
            break
    send(parent, ("spun", x))




def test_fairness_one_scheduler_ticker_p99_and_spinners_advance():
    def main():
        me = self_pid()
        deadline = time.monotonic() + 2.3
        for _ in range(4):
            spawn(spinner, me, deadline)
        spawn(ticker, me, 0.010, 2.0)
        late = None
        counts = []
        for _ in range(5):
            m = receive(timeout=10)
            if m[0] == "ticks":
                late = m[1]
            else:
                counts.append(m[1])
        return late, counts

    # The machine running the suite may be shared: a run disturbed by other load gets
    # up to two more tries; every run must show the spinners advancing.
    p99s = []
    for _ in range(3):
        late, counts = run(main, schedulers=1)
        late = sorted(late)
        assert len(late) >= 190
        assert len(counts) == 4 and min(counts) > 0.2 * max(counts), counts
        p99s.append(late[int(len(late) * 0.99) - 1])
        if p99s[-1] <= TICKER_P99_BOUND:
            break
    per_run_ms = [x * 1e3 for x in p99s]
    assert min(p99s) <= TICKER_P99_BOUND, f"ticker p99 lateness per run (ms): {per_run_ms}"


def four_spinners():
    """Four spinners for 1.5 s; their iteration counts, sorted."""
    me = self_pid()
    deadline = time.monotonic() + 1.5
    for _ in range(4):
        spawn(spinner, me, deadline)
    return sorted(receive(timeout=10)[1] for _ in range(4))


def test_spinners_share_two_schedulers_evenly():
    # Four CPU-bound processes on two schedulers (sharing the GIL): each gets about a
    # quarter. Stealing alone could leave them split one and three (a scheduler with a
    # spinner is never idle, so it never steals), and the one then got as much as the
    # three together (ratio ~0.35); the schedulers now even their queues out through
    # the global queue. A ratio, not a speed: a slow machine slows all four alike.
    # Each try runs in a fresh interpreter: in a long test session (CI on 3.12, late in
    # the suite) both tries once came out split one and three (0.31, 0.30), never alone;
    # what an earlier test leaves in the process (threads that take the GIL) is not
    # what this checks.
    code = """
import sys
sys.path.insert(0, sys.argv[1])
import beamvm
from test_preemption import four_spinners
c = beamvm.run(four_spinners, schedulers=2)
print(c[0] / c[-1])
"""
    here = os.path.dirname(os.path.abspath(__file__))
    ratios = []  # more tries for a run disturbed by other load
    for _ in range(3):
        out = subprocess.run(
            [sys.executable, "-c", code, here],
            env=env_with(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        ratios.append(float(out.stdout.strip().splitlines()[-1]))
        if ratios[-1] >= 0.5:
            break
    assert max(ratios) >= 0.5, f"least/most iterations per run: {ratios}"


#: Behaviour, not speed: unpreempted spinners would hold the only scheduler for good
#: (the ticker starves); preempted, the ticker is a few ms late at worst (B7 measures
#: that figure; 50 ms leaves room for a loaded CI machine).
TICKER_P99_BOUND = 0.050


def test_busy_process_does_not_block_messages():
    def hog():
        x = 0
        while True:
            x += 1

    def pinger(n):
        me = self_pid()
        t0 = time.monotonic()
        for i in range(n):
            send(me, i)
            receive()
        return time.monotonic() - t0

    def main():
        h = spawn(hog)
        dt = pinger(200)
        beamvm.exit(h, Atom("kill"))
        return dt

    assert run(main, schedulers=1) < 5.0


def test_deep_recursion():
    def depth(n):
        if n == 0:
            return 0
        return 1 + depth(n - 1)

    def main():
        return depth(900)

    assert run(main) == 900


def test_recursion_error_is_catchable():
    def forever(n):
        return forever(n + 1)

    def main():
        try:
            forever(0)
        except RecursionError:
            return "recursion error"

    assert run(main) == "recursion error"


def test_generators_closures_and_nonlocal():
    def counter():
        n = 0

        def inc():
            nonlocal n
            n += 1
            return n

        return inc

    def gen(k):
        for i in range(k):
            yield i * i

    def main():
        inc = counter()
        for _ in range(5):
            inc()
        total = 0
        for v in gen(1000):
            total += v
        return inc(), total, list(gen(4)), sum(x for x in range(10))

    assert run(main) == (6, sum(i * i for i in range(1000)), [0, 1, 4, 9], 45)


def test_try_finally_with_and_exceptions():
    log = []

    class CM:
        def __enter__(self):
            log.append("enter")
            return self

        def __exit__(self, t, e, tb):
            log.append(("exit", t.__name__ if t else None))
            return t is KeyError

    def body():
        for _i in range(20000):  # long enough to be preempted inside the blocks
            pass
        raise KeyError("k")

    def main():
        out = []
        try:
            try:
                body()
            finally:
                out.append("finally")
        except KeyError as e:
            out.append(("caught", e.args[0]))
        with CM():
            body()
        out.append("after with")
        try:
            with CM():
                raise ValueError("v")
        except ValueError:
            out.append("value error propagated")
        return out

    out = run(main, reductions=100)
    assert out == ["finally", ("caught", "k"), "after with", "value error propagated"]
    assert log == ["enter", ("exit", "KeyError"), "enter", ("exit", "ValueError")]


def test_traceback_points_at_user_code():
    def inner():
        x = {}
        return x["missing"]

    def outer():
        return inner()

    def main():
        try:
            outer()
        except KeyError as e:
            return traceback.format_exception(type(e), e, e.__traceback__)

    tb = "".join(run(main))
    assert "test_preemption.py" in tb and "in inner" in tb and "in outer" in tb
    assert 'return x["missing"]' in tb


def test_many_cpu_bound_processes_all_finish():
    def work(parent, n):
        s = 0
        for i in range(n):
            s += i
        send(parent, s)

    def main():
        me = self_pid()
        for _ in range(20):
            spawn(work, me, 50_000)
        out = []
        for _ in range(20):
            out.append(receive(int, timeout=30))
        return out

    assert run(main) == [sum(range(50_000))] * 20


def test_process_priorities_run():
    def main():
        me = self_pid()
        for prio in ("low", "normal", "high", "max"):
            beamvm.spawn_opt(send, (me, prio), priority=prio)
        got = set()
        for _ in range(4):
            got.add(receive(str, timeout=5))
        return got

    assert run(main) == {"low", "normal", "high", "max"}


def test_receive_any_pattern_under_preemption():
    def producer(to, n):
        for i in range(n):
            send(to, (Atom("item"), i))
        send(to, (Atom("done"), n))

    def main():
        spawn(producer, self_pid(), 5000)
        n = receive((Atom("done"), ANY), timeout=10)[1]
        total = 0
        for _ in range(n):
            total += receive((Atom("item"), int), timeout=5)[1]
        return total

    assert run(main, reductions=500) == sum(range(5000))
