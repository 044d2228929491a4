"""The GIL is shared fairly with plain Python threads while processes spin."""

from __future__ import annotations

import sys
import threading
import time

import beamvm


def spin() -> None:
    x = 0
    while True:
        x += 1


def test_a_plain_thread_gets_the_gil_beside_spinning_processes() -> None:
    # Schedulers hold the GIL across batches of Python slices; CPython's switch
    # interval must still hand it to other threads. Before the fix a thread doing
    # time.sleep(0) beside one spinning process waited up to 1.8 s.
    beamvm.start(schedulers=2)
    try:
        for _ in range(2):
            beamvm.spawn(spin)
        time.sleep(0.1)
        waits = []
        end = time.perf_counter() + 1.0
        while time.perf_counter() < end:
            t = time.perf_counter()
            time.sleep(0)
            waits.append(time.perf_counter() - t)
        waits.sort()
        interval = sys.getswitchinterval()
        # Typically one switch interval (5 ms); allow generous slack for a noisy machine
        # while still catching starvation (hundreds of ms to seconds).
        assert len(waits) >= 20, f"only {len(waits)} GIL hand-overs in 1 s"
        assert waits[len(waits) // 2] < 10 * interval, waits[len(waits) // 2]
        assert waits[-1] < 0.25, f"a plain thread waited {waits[-1] * 1000:.0f} ms for the GIL"
    finally:
        beamvm.stop()


def test_a_plain_thread_keeps_running_while_processes_spin() -> None:
    beamvm.start(schedulers=1)
    try:
        beamvm.spawn(spin)
        counter = [0]
        stop = threading.Event()

        def count() -> None:
            while not stop.is_set():
                counter[0] += 1

        t = threading.Thread(target=count)
        t.start()
        time.sleep(0.5)
        stop.set()
        t.join(timeout=5)
        assert not t.is_alive()
        assert counter[0] > 1000, "the plain thread was starved"
    finally:
        beamvm.stop()


def _thread_states() -> int:
    """The interpreter's thread states, counted through the C API."""
    import ctypes

    api = ctypes.pythonapi
    api.PyInterpreterState_Get.restype = ctypes.c_void_p
    api.PyInterpreterState_ThreadHead.restype = ctypes.c_void_p
    api.PyInterpreterState_ThreadHead.argtypes = [ctypes.c_void_p]
    api.PyThreadState_Next.restype = ctypes.c_void_p
    api.PyThreadState_Next.argtypes = [ctypes.c_void_p]
    n, ts = 0, api.PyInterpreterState_ThreadHead(api.PyInterpreterState_Get())
    while ts:
        n, ts = n + 1, api.PyThreadState_Next(ts)
    return n


_LOCAL = threading.local()


def test_a_scheduler_thread_keeps_one_thread_state_until_the_vm_stops() -> None:
    # Before: every batch of slices made and deleted a Python thread state (and
    # mmap/munmap'ed its frame stack), so a thread-local set in one batch was gone in
    # the next. Now a scheduler thread keeps one until it exits with the VM.
    def main():
        _LOCAL.mark = "set in an earlier batch"
        seen = []
        for _ in range(5):
            beamvm.sleep(0.01)  # the batch ends: nothing else to run on this scheduler
            seen.append(getattr(_LOCAL, "mark", None))
        return seen, _thread_states()

    before = _thread_states()
    for _ in range(3):  # and no thread state is left behind by a stopped VM
        seen, during = beamvm.run(main, schedulers=1)
        assert seen == ["set in an earlier batch"] * 5
        assert during == before + 1
        assert _thread_states() == before
