"""Introspection: top, proc_window, statistics_full, system monitor, observer snapshots and
the observer socket, from processes and from plain threads; errors for bad input."""

from __future__ import annotations

import json
import os
import select
import socket
import tempfile
import threading
import time

import beamvm
import pytest
from beamvm import ANY, Atom, Pid, observer, receive, self_pid, send, spawn
from proc_helpers import running_vm, sink, wait_until

vm = pytest.fixture(running_vm)


@pytest.fixture
def sock_path():
    d = tempfile.mkdtemp(prefix="bvm-obs-")
    yield os.path.join(d, "o.sock")


def test_top_by_mailbox_finds_the_loaded_process(vm):
    quiet = [spawn(sink) for _ in range(20)]
    hog = spawn(sink)
    for i in range(37):
        send(hog, i)
    send(quiet[3], "one")
    assert wait_until(lambda: beamvm.top(1)[0] == (hog, 37))
    ranked = beamvm.top(3, "message_queue_len")
    assert ranked[:2] == [(hog, 37), (quiet[3], 1)]
    assert ranked[2][1] == 0
    assert all(isinstance(p, Pid) and isinstance(n, int) for p, n in ranked)
    assert beamvm.top(0) == []
    assert len(beamvm.top(1000)) == 21
    values = [n for _, n in beamvm.top(21, "reductions")]
    assert values == sorted(values, reverse=True)


def test_snapshot_contents(vm):
    hog = spawn(sink)
    beamvm.register("hog", hog)
    for i in range(12):
        send(hog, i)

    def settled():
        row = observer.snapshot(1)["top"]["message_queue_len"][0]
        return row["value"] == 12 and row["status"] == "waiting" and row["current"]

    assert wait_until(settled)
    snap = observer.snapshot(5)
    assert snap["process_count"] == 1 == snap["system_info"]["process_count"]
    first = snap["top"]["message_queue_len"][0]
    assert first["pid"] == hog and first["value"] == 12
    assert first["name"] == "hog" and first["current"] == "sink"
    assert first["message_queue_len"] == 12
    assert first["status"] == "waiting" and first["priority"] == "normal"
    assert first["memory"] > 0
    mem = snap["memory"]
    parts = ("processes", "binary", "atom", "system", "allocator")
    assert mem["total"] == sum(mem[k] for k in parts)
    assert mem["processes"] > 0 and mem["atom"] > 0
    assert snap["system_info"]["schedulers"] == 2
    assert set(snap["top"]) == {"message_queue_len", "memory", "reductions"}
    assert 0 <= snap["took"] < 1.0
    # the JSON form is JSON, pids as Erlang text
    js = observer.snapshot_json(5)
    assert json.loads(json.dumps(js)) == js
    assert js["running"] is True and js["top"]["message_queue_len"][0]["pid"] == repr(hog)


def busy_then_statistics():
    t_end = time.perf_counter() + 0.3
    while time.perf_counter() < t_end:
        pass
    return beamvm.statistics_full()


def test_statistics_full():
    # measured from inside the busy process: a plain thread would compete for the GIL
    s = beamvm.run(busy_then_statistics, schedulers=2)
    assert len(s["scheduler_utilisation"]) == 2 == len(s["scheduler_wall_time"])
    assert all(0.0 <= u <= 1.0 for u in s["scheduler_utilisation"])
    assert 0.0 <= s["dirty_cpu_utilisation"] <= 1.0 and 0.0 <= s["dirty_io_utilisation"] <= 1.0
    # a scheduler that never parks counts as busy (its current busy period is included)
    assert max(s["scheduler_utilisation"]) > 0.5
    for busy, total in s["scheduler_wall_time"]:
        assert 0.0 <= busy <= total == pytest.approx(s["uptime"])
    assert s["total_reductions"] > 0 and s["context_switches"] == sum(s["slices"])
    assert s["spawned"] == 1 and s["exited"] == 0
    assert len(s["longest_slice"]) == 2 and len(s["run_queue_lengths"]) == 2
    for key in (
        "global_run_queue",
        "long_schedules",
        "watchdog_takeovers",
        "gcs",
        "gc_reclaimed_bytes",
        "dirty_cpu_queued",
        "dirty_io_queued",
        "dirty_cpu_completed",
        "dirty_io_completed",
    ):
        assert isinstance(s[key], int), key
    assert s["dirty_io_wall_time"][1] == pytest.approx(10 * s["uptime"], rel=0.01)


def ticker():
    while True:
        beamvm.sleep(0.002)


def test_proc_window_from_a_plain_thread(vm):
    busy = spawn(ticker)
    idle = [spawn(sink) for _ in range(5)]
    time.sleep(0.2)  # each sink has run its first slice and waits
    out = {}
    t = threading.Thread(target=lambda: out.update(w=beamvm.proc_window(3, interval=0.3)))
    t.start()
    t.join(10)
    assert out["w"][0][0] == busy and out["w"][0][1] > 0
    assert all(p in idle and n == 0 for p, n in out["w"][1:])


def monitor_target():
    select.select([], [], [], 0.05)  # an uninstrumented blocking call: one long slice


def watch_long_schedules():
    me = self_pid()
    assert beamvm.set_system_monitor(me) is None
    pid = spawn(monitor_target)
    event = receive((Atom("monitor"), pid, Atom("long_schedule"), ANY), timeout=3.0)
    assert beamvm.set_system_monitor(None) == me
    return event, beamvm.statistics_full()["long_schedules"]


def test_system_monitor_gets_long_schedule():
    (_, _, _, info), count = beamvm.run(watch_long_schedules, schedulers=2)
    info = dict(info)
    assert 45 <= info[Atom("timeout")] < 1000  # ms
    assert bytes(info[Atom("in")]) == b"monitor_target"
    assert count >= 1


def introspect_from_inside():
    hog = spawn(sink)
    send(hog, 1)
    receive(timeout=0.05, default=None)
    snap = observer.snapshot(50)
    mine = [r for r in snap["top"]["reductions"] if r["pid"] == self_pid()]
    return snap["process_count"], beamvm.top(1)[0], mine, hog


def test_callable_from_inside_a_process():
    count, first, mine, hog = beamvm.run(introspect_from_inside, schedulers=2)
    assert count == 2 and first == (hog, 1)
    # the caller is listed; its label is unknown while it runs (its lock is held)
    assert len(mine) == 1 and mine[0]["status"] == "running" and mine[0]["current"] is None


def test_bad_input(vm):
    with pytest.raises(ValueError, match="message_queue_len"):
        beamvm.top(5, "mailbox")
    with pytest.raises(ValueError, match="n must be >= 0"):
        beamvm.top(-1)
    with pytest.raises(ValueError, match="interval"):
        beamvm.proc_window(interval=-1.0)
    with pytest.raises(ValueError, match="expected"):
        beamvm.proc_window(by="heap")
    with pytest.raises(TypeError, match="Pid or None"):
        beamvm.set_system_monitor("me")  # type: ignore[arg-type]


def test_stopped_vm_says_how_to_start():
    assert not beamvm.is_running()
    msg = r"beamvm is not running: use beamvm.run\(main\) or beamvm.start\(\) first"
    for call in (
        beamvm.top,
        beamvm.proc_window,
        beamvm.statistics_full,
        observer.snapshot,
        lambda: beamvm.set_system_monitor(None),
    ):
        with pytest.raises(RuntimeError, match=msg):
            call()
    assert observer.snapshot_json()["running"] is False


def ask(path, line=b"\n"):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(path)
        f = s.makefile("rwb")
        f.write(line)
        f.flush()
        return json.loads(f.readline())


def test_observer_socket(vm, sock_path):
    hog = spawn(sink)
    spawn(sink)
    spawn(sink)
    for i in range(9):
        send(hog, i)
    with observer.serve(sock_path) as obs:
        assert os.path.exists(sock_path) and not obs.closed
        assert wait_until(lambda: ask(sock_path)["top"]["message_queue_len"][0]["value"] == 9)
        snap = ask(sock_path, b'{"n": 2}\n')
        assert snap["running"] and snap["os_pid"] == os.getpid()
        assert len(snap["top"]["memory"]) == 2
        assert snap["top"]["message_queue_len"][0]["pid"] == repr(hog)
        assert "statistics" in snap and "system_info" in snap and "memory" in snap
        assert "error" in ask(sock_path, b'{"n": -3}\n')
        assert "error" in ask(sock_path, b"not json\n")
        with pytest.raises(OSError, match="already listens"):
            observer.serve(sock_path)
    assert obs.closed and not os.path.exists(sock_path)


def test_observer_outlives_the_vm_and_reports_it(sock_path):
    obs = observer.serve(sock_path)
    try:
        assert ask(sock_path)["running"] is False
        beamvm.start(schedulers=1)
        try:
            assert ask(sock_path)["running"] is True
        finally:
            beamvm.stop()
        assert ask(sock_path)["running"] is False
    finally:
        obs.close()
    assert not os.path.exists(sock_path)
