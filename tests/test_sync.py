"""beamvm.sync: a lock and a queue built on messages, for processes on any scheduler."""

from __future__ import annotations

import gc
import queue
import threading

import beamvm
import pytest
from beamvm import ANY, Atom, receive, self_pid, send, spawn, sync


def incrementer(lock, box, parent, n):
    for _ in range(n):
        with lock:
            v = box.get()
            beamvm.sleep(0)  # suspended inside the critical section
            box.put(v + 1)
    send(parent, "done")


def test_lock_and_queue_keep_a_counter_exact_across_schedulers():
    def main():
        lock, box = sync.Lock(), sync.Queue()
        box.put(0)
        me = self_pid()
        for _ in range(4):
            spawn(incrementer, lock, box, me, 50)
        for _ in range(4):
            receive("done", timeout=30)
        return box.get(), lock.locked()

    assert beamvm.run(main, schedulers=2) == (200, False)


def test_lock_timeouts_and_release_rules():
    def main():
        lock = sync.Lock()
        assert lock.acquire()
        out = [lock.acquire(timeout=0.05), lock.acquire(blocking=False), lock.locked()]
        lock.release()
        try:
            lock.release()
        except RuntimeError as e:
            out.append(str(e))
        out.append(lock.locked())
        return out

    got = beamvm.run(main)
    assert got[:3] == [False, False, True]
    assert "does not hold" in got[3] and got[4] is False


def dies_holding(lock, parent):
    lock.acquire()
    send(parent, "holding")
    raise ValueError("crash while holding the lock")


def test_a_holder_that_exits_releases_the_lock():
    def main():
        lock = sync.Lock()
        _, ref = beamvm.spawn_monitor(dies_holding, lock, self_pid())
        receive("holding", timeout=5)
        receive((Atom("DOWN"), ref, ANY, ANY, ANY), timeout=5)
        return lock.acquire(timeout=2)

    assert beamvm.run(main) is True


def putter(q, items):
    for x in items:
        q.put(x)


def test_queue_order_bounds_and_exceptions():
    def main():
        q = sync.Queue(maxsize=2)
        q.put("a")
        q.put("b")
        out = [q.full(), q.qsize()]
        try:
            q.put("c", timeout=0.05)
        except queue.Full:
            out.append("full")
        spawn(putter, q, ["c", "d"])  # waits for room
        out += [q.get(), q.get(), q.get(), q.get()]
        try:
            q.get_nowait()
        except queue.Empty:
            out.append("empty")
        return out, q.empty()

    out, empty = beamvm.run(main)
    assert out == [True, 2, "full", "a", "b", "c", "d", "empty"] and empty


def test_queue_items_are_copied_messages():
    def main():
        q = sync.Queue()
        item = [1, 2]
        q.put(item)
        item.append(3)
        got = q.get()
        try:
            q.put(object())
        except TypeError as e:
            return got, str(e)

    got, err = beamvm.run(main)
    assert got == [1, 2] and "term" in err


def test_servers_stop_when_their_object_is_collected():
    def main():
        before = len(beamvm.processes())
        objs = [sync.Lock(), sync.Queue()]
        during = len(beamvm.processes())
        del objs
        gc.collect()
        beamvm.sleep(0.05)
        return before, during, len(beamvm.processes())

    before, during, after = beamvm.run(main)
    assert during == before + 2 and after == before


def test_a_thread_fed_queue_is_read_with_dirty_io():
    # The documented way to wait on a blocking call that has no message equivalent.
    q: queue.Queue = queue.Queue()

    def main():
        threading.Timer(0.05, q.put, ("from a thread",)).start()
        return beamvm.dirty_io(q.get, timeout=5)

    assert beamvm.run(main) == "from a thread"


def test_lock_outside_a_vm_is_a_clear_error():
    with pytest.raises(RuntimeError, match="not running"):
        sync.Lock()
