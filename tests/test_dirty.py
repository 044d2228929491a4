"""Dirty calls (``beamvm.dirty_cpu`` / ``beamvm.dirty_io``) and the long_schedule watchdog.

Timing tests run on a shared, noisy machine: as in tests/test_preemption.py, a run
disturbed by other load gets up to two more tries, and the assertion is on the best run.
"""

from __future__ import annotations

import hashlib
import select
import time
import traceback

import beamvm
import pytest
from beamvm import ANY, Atom, receive, self_pid, send, spawn
from proc_helpers import p99, ticker


def sleeper(parent, seconds):
    beamvm.dirty_io(time.sleep, seconds)
    send(parent, ("slept", self_pid()))


def test_dirty_io_sleeps_run_in_parallel_and_ticker_stays_on_time():
    def main():
        me = self_pid()
        spawn(ticker, me, 0.010, 0.6)
        t0 = time.monotonic()
        for _ in range(10):
            spawn(sleeper, me, 0.2)
        for _ in range(10):
            receive(("slept", ANY), timeout=5)
        elapsed = time.monotonic() - t0
        _, late = receive(("ticks", ANY), timeout=5)
        return elapsed, late

    runs = []
    for _ in range(3):
        elapsed, late = beamvm.run(main, schedulers=1, dirty_io=10)
        assert len(late) >= 55
        runs.append((elapsed, p99(late)))
        if elapsed < 1.0 and runs[-1][1] <= 0.050:
            break
    # Behaviour, not speed: ten 0.2 s sleeps one after another would take 2 s, and a
    # sleep holding the only scheduler would make the ticker ~0.2 s late.
    assert min(e for e, _ in runs) < 1.0, runs
    assert min(p for _, p in runs) <= 0.050, f"(elapsed s, ticker p99 s) per run: {runs}"


def test_result_and_keyword_arguments():
    def main():
        a = beamvm.dirty_cpu(pow, 3, 4)
        b = beamvm.dirty_io(sorted, [3, 1, 2], reverse=True)
        c = beamvm.dirty_cpu(lambda: {"x": [1, (2, None)]})
        return a, b, c

    assert beamvm.run(main, schedulers=1) == (81, [3, 2, 1], {"x": [1, (2, None)]})


def test_result_is_the_object_itself():
    # The result comes back by reference (the call ran in this interpreter), not copied.
    marker = object()

    def main():
        return beamvm.dirty_io(lambda: marker) is marker

    assert beamvm.run(main, schedulers=1)


def _fails(x):
    raise ValueError(f"bad {x}")


def test_exception_is_reraised_in_the_process_with_traceback():
    def main():
        try:
            beamvm.dirty_cpu(_fails, 7)
        except ValueError as e:
            return str(e), "".join(traceback.format_exception(e))
        return None

    msg, tb = beamvm.run(main, schedulers=1)
    assert msg == "bad 7"
    assert "_fails" in tb and 'raise ValueError(f"bad {x}")' in tb


def test_uncaught_dirty_exception_ends_the_process():
    def child():
        beamvm.dirty_io(_fails, 1)

    def main():
        _, ref = beamvm.spawn_monitor(child)
        return receive((Atom("DOWN"), ref, ANY, ANY, ANY), timeout=5)[4]

    assert beamvm.run(main, schedulers=1) == (Atom("error"), "ValueError", "bad 1")


def test_kill_during_dirty_call_then_pool_is_reused():
    def victim(parent):
        send(parent, "started")
        beamvm.dirty_io(time.sleep, 0.5)
        send(parent, "finished")  # never: killed first

    def main():
        pid, ref = beamvm.spawn_monitor(victim, self_pid())
        receive("started", timeout=5)
        beamvm.sleep(0.05)  # the call is running on the pool now
        t0 = time.monotonic()
        beamvm.exit(pid, Atom("kill"))
        down = receive((Atom("DOWN"), ref, ANY, ANY, ANY), timeout=5)
        ended_in = time.monotonic() - t0
        # The only pool thread is busy until the sleep ends, then takes this call.
        t1 = time.monotonic()
        again = beamvm.dirty_io(lambda: "again")
        waited = time.monotonic() - t1
        stray = receive("finished", timeout=0.1, default=None)
        return down[4], ended_in, again, waited, stray

    reason, ended_in, again, waited, stray = beamvm.run(main, schedulers=1, dirty_io=1)
    assert reason == Atom("killed")
    assert ended_in < 0.2, ended_in
    assert again == "again" and waited < 2.0
    assert stray is None


def _counter(parent):
    """Count as fast as possible, stamping the time every 64 iterations, until stopped."""
    stamps = []
    n = 0
    while True:
        match receive(timeout=0, default=None):
            case "stop":
                send(parent, ("stamps", stamps))
                return
        n += 1
        if n % 64 == 0:
            stamps.append(time.monotonic())


def _coverage(job):
    """Run ``job`` on dirty_cpu beside a counting process; return the share of the job's
    time window during which the counter ran (1 - largest gap / window)."""

    def main():
        me = self_pid()
        c = spawn(_counter, me)
        beamvm.sleep(0.05)
        out = beamvm.dirty_cpu(job)
        send(c, "stop")
        _, stamps = receive(("stamps", ANY), timeout=30)
        return out, stamps

    (result, t0, t1), stamps = beamvm.run(main, schedulers=1, dirty_cpu=1)
    inside = [t0, *(t for t in stamps if t0 < t < t1), t1]
    gap = max(b - a for a, b in zip(inside, inside[1:], strict=False))
    return result, 1 - gap / (t1 - t0)


def test_dirty_cpu_releases_the_gil_while_c_code_runs():
    # hashlib releases the GIL for large inputs: while a dirty_cpu hash runs, Python
    # processes on the scheduler keep running through the whole hash. Measured as
    # coverage of the hash's own time window, not as a speed-up (which would depend on
    # how busy the machine is); a control that keeps the GIL (sorting) shows the test
    # tells the two apart: there the counter only runs for a switch interval or so.
    data = b"x" * (256 << 20)
    expected = hashlib.sha256(data).hexdigest()

    def timed_hash():
        t0 = time.monotonic()
        d = hashlib.sha256(data).hexdigest()
        return d, t0, time.monotonic()

    items = [(i * 7919) % 1_000_003 for i in range(1_000_000)]

    def timed_sort():
        t0 = time.monotonic()
        r = sorted(items)[0]  # C comparisons only: the GIL stays held
        return r, t0, time.monotonic()

    for _ in range(3):  # a busy machine can stall the counter's thread
        d, hashed = _coverage(timed_hash)
        _, sorting = _coverage(timed_sort)
        if hashed > 0.5 and sorting < 0.5:
            break
    assert d == expected
    assert hashed > 0.5, f"processes ran for only {hashed:.0%} of the hash"
    assert sorting < 0.5, f"control: processes ran for {sorting:.0%} of a GIL-holding call"


def test_dirty_cpu_sleeps_overlap():
    def napper(parent):
        send(parent, beamvm.dirty_cpu(time.sleep, 0.3))

    def main():
        me = self_pid()
        t0 = time.monotonic()
        for _ in range(2):
            spawn(napper, me)
        receive(timeout=5)
        receive(timeout=5)
        return time.monotonic() - t0

    assert beamvm.run(main, schedulers=1, dirty_cpu=2) < 0.55


def test_pool_sizes_reach_the_vm():
    def main():
        return beamvm.system_info()

    info = beamvm.run(main, schedulers=1, dirty_cpu=3, dirty_io=4)
    assert info["dirty_cpu_schedulers"] == 3
    assert info["dirty_io_schedulers"] == 4


def test_outside_a_process_is_a_clear_error():
    with pytest.raises(RuntimeError, match=r"dirty_io\(\) must be called inside a beamvm process"):
        beamvm.dirty_io(time.sleep, 0)
    with pytest.raises(RuntimeError, match=r"dirty_cpu\(\) must be called inside a beamvm process"):
        beamvm.dirty_cpu(pow, 2, 2)


# --------------------------------------------------------------------------- watchdog


def test_long_call_on_a_scheduler_is_reported_and_others_keep_time():
    def blocker(parent):
        receive("go")
        # Not via dirty_io: holds its scheduler thread (not the GIL). time.sleep would not
        # do: compiled process code turns it into a process sleep.
        select.select([], [], [], 0.5)
        send(parent, "blocked done")

    def main():
        me = self_pid()
        old = beamvm.set_system_monitor(me)
        b = spawn(blocker, me)
        spawn(ticker, me, 0.010, 0.8)
        beamvm.sleep(0.05)
        send(b, "go")
        receive("blocked done", timeout=5)
        _, late = receive(("ticks", ANY), timeout=5)
        event = receive((Atom("monitor"), b, Atom("long_schedule"), ANY), timeout=2, default=None)
        beamvm.set_system_monitor(old)
        return late, event, b

    runs = []
    for _ in range(3):
        late, event, b = beamvm.run(main, schedulers=2)
        assert event is not None, "no long_schedule event reached the monitor"
        assert event[1] == b
        runs.append(max(late))
        if runs[-1] <= 0.2:
            break
    # The blocker holds its scheduler 0.5 s: a ticker left behind it would be that late.
    assert min(runs) <= 0.2, f"ticker max lateness per run (s): {runs}"
