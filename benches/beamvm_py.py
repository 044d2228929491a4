"""Workloads for beamvm's Python processes (see benches/README.md for the contract).

Idiom: a process is a plain function spawned with ``beamvm.spawn``; it receives with
``beamvm.receive`` (selective receive by pattern, keyed by a Ref or an atom tag where the
pattern allows) and sends copies with ``beamvm.send``. Every workload runs inside
``beamvm.run`` (one VM per repetition). Scheduler threads: ``SCHEDULERS`` below (Python
slices hold the GIL, so on a GIL build one scheduler avoids lock hand-overs); the
``BEAMVM_SCHEDULERS`` environment variable overrides it.
"""

from __future__ import annotations

import collections
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "pylibs"))
import beamvm  # noqa: E402
import harness as h  # noqa: E402
from beamvm import ANY, Atom, exit, receive, self_pid, send, spawn  # noqa: E402

ns = h.ns
KILL = Atom("kill")
PONG = Atom("pong")
SCHEDULERS = int(os.environ.get("BEAMVM_SCHEDULERS", "1").split(":")[0])

SKIPPED = {
    "B1b": "not yet wired for Python processes (system_limit is covered by tests/test_api.py)",
    "B6": "not yet measured for Python processes (large binaries: tests/test_terms.py)",
    "B9": "Python slices hold the GIL: scheduler scaling is measured natively (beamvm-native)",
}


def _run(fn, p: dict, **cfg) -> h.Metrics:
    cfg.setdefault("schedulers", SCHEDULERS)
    cfg.setdefault("process_limit", 4_000_000)
    out = beamvm.run(fn, p, **cfg)
    out["schedulers"] = (float(cfg["schedulers"]), "count")
    return out


def _idle(started) -> None:
    started.append(None)
    receive()


def _spawn_idle(n: int) -> tuple[list, int]:
    started = collections.deque()
    pids = []
    t0 = ns()
    for _ in range(n):
        pids.append(spawn(_idle, started))
    while len(started) < n:  # every new process has run until it blocks in receive
        beamvm.sleep(0.0005)
    t1 = ns()
    return pids, t1 - t0


def _kill(pids: list) -> int:
    target = beamvm.system_info()["process_count"] - len(pids)
    t0 = ns()
    for p in pids:
        exit(p, KILL)
    while beamvm.system_info()["process_count"] > target:
        beamvm.sleep(0.0005)
    pids.clear()
    return ns() - t0


def _b1(p: dict) -> h.Metrics:
    base = h.settle()
    pids, t_spawn = _spawn_idle(p["n"])
    delta = h.rss_bytes() - base
    return h.spawn_metrics(p["n"], t_spawn, delta, _kill(pids))


def b1(p: dict) -> h.Metrics:
    return _run(_b1, p)


def _ring_node(done) -> None:
    nxt = receive()
    while True:
        n = receive()
        if n == 0:
            send(done, "done")
        else:
            send(nxt, n - 1)


def _b2(p: dict) -> h.Metrics:
    size, total = p["ring"], p["ring"] * p["laps"]
    me = self_pid()
    pids = []
    for _ in range(size):
        pids.append(spawn(_ring_node, me))
    for i in range(size):
        send(pids[i], pids[(i + 1) % size])
    t0 = ns()
    send(pids[0], total - 1)  # the token counts the hops still to make
    receive("done")
    dt = ns() - t0
    _kill(pids)
    return {"msgs_per_s": (total / (dt / 1e9), "msgs/s")}


def b2(p: dict) -> h.Metrics:
    return _run(_b2, p)


def _pong() -> None:
    while True:
        reply_to, x = receive()
        send(reply_to, x)


def _ping_pong(p: dict) -> h.Metrics:
    server = spawn(_pong)
    me = self_pid()
    for i in range(p["warmup"]):
        send(server, (me, i))
        receive()
    n = p["round_trips"]
    samples = [0] * n
    for i in range(n):
        t = ns()
        send(server, (me, i))
        receive()
        samples[i] = ns() - t
    _kill([server])
    return h.latency_metrics(samples, "round_trip", "ns", with_mean=True)


def b3(p: dict) -> h.Metrics:
    return _run(_ping_pong, p)


def _loop_round_trip(server, me, n: int) -> float:
    """Mean ns per round trip over a whole loop of ``n``: unlike B3's per-round-trip
    samples, this includes what happens between round trips (the loop's back-edge,
    where a process is preempted)."""
    t0 = ns()
    for i in range(n):
        send(server, (me, i))
        receive()
    return (ns() - t0) / n


def _b3_after_wait(p: dict) -> h.Metrics:
    """B3, then a 0.2 s ``beamvm.sleep`` in the pinger, then B3 again, in one VM and
    with one server: a wait must leave nothing behind that slows messaging (issue 8,
    fault 10: Python ping-pong ran ~20-40% slower for the rest of the run)."""
    server = spawn(_pong)
    me = self_pid()
    _loop_round_trip(server, me, p["warmup"])
    before = _loop_round_trip(server, me, p["round_trips"])
    beamvm.sleep(0.2)
    after = _loop_round_trip(server, me, p["round_trips"])
    _kill([server])
    return {
        "round_trip_mean_before_wait": (before, "ns"),
        "round_trip_mean_after_wait": (after, "ns"),
        "after_over_before": (after / before, "x"),
    }


def b3_after_wait(p: dict) -> h.Metrics:
    return _run(_b3_after_wait, p)


def _producer(consumer, m: int) -> None:
    receive("go")
    for i in range(m):
        send(consumer, i)


def _consumer(parent, total: int) -> None:
    for _ in range(total):
        receive()
    send(parent, "done")


def _b4(p: dict) -> h.Metrics:
    n, m = p["producers"], p["per_producer"]
    consumer = spawn(_consumer, self_pid(), n * m)
    producers = []
    for _ in range(n):
        producers.append(spawn(_producer, consumer, m))
    beamvm.sleep(0.01)
    t0 = ns()
    for pid in producers:
        send(pid, "go")
    receive("done")
    dt = ns() - t0
    return {"msgs_per_s": (n * m / (dt / 1e9), "msgs/s")}


def b4(p: dict) -> h.Metrics:
    return _run(_b4, p)


def _reply_server() -> None:
    while True:
        reply_to, tag, key = receive()
        send(reply_to, (tag, key, None))


def _b5(p: dict) -> h.Metrics:
    server = spawn(_reply_server)
    me = self_pid()
    for i in range(p["unmatched"]):
        send(me, ("noise", i, None))
    n = p["receives"]
    t0 = ns()
    for _ in range(n):  # reply keyed by a fresh reference
        ref = beamvm.make_ref()
        send(server, (me, "reply", ref))
        receive((ANY, ref, ANY))
    t1 = ns()
    for i in range(n):  # reply keyed by a tag no queued message has
        send(server, (me, PONG, i))
        receive((PONG, ANY, ANY))
    t2 = ns()
    left = beamvm.process_info()["message_queue_len"]
    assert left == p["unmatched"], left
    _kill([server])
    return {
        "ref_receive_us": ((t1 - t0) / n / 1e3, "us"),
        "tag_receive_us": ((t2 - t1) / n / 1e3, "us"),
    }


def b5(p: dict) -> h.Metrics:
    return _run(_b5, p)


def _spinner(deadline: int) -> None:
    h.spin_until(deadline)  # never yields by itself: the VM preempts it


def _ticker(parent, start: int, p: dict) -> None:
    t = h.Ticker(start, p["period_ms"], p["duration_ms"])
    while not t.done():
        d = t.wait_s()
        if d > 0:  # a late ticker catches up without sleeping
            beamvm.sleep(d)
        t.tick()
    send(parent, ("ticker", t.lateness))


def _collect_ticker(t: h.Ticker) -> h.Metrics:
    m = receive(("ticker", ANY))
    t.lateness = m[1]
    return t.metrics()


def _b7(p: dict) -> h.Metrics:
    start = ns()
    me = self_pid()
    spawn(_ticker, me, start, p)
    deadline = start + p["duration_ms"] * 1_000_000
    for _ in range(p["spinners"]):
        spawn(_spinner, deadline)
    return _collect_ticker(h.Ticker(start, p["period_ms"], p["duration_ms"]))


def b7(p: dict) -> h.Metrics:
    return _run(_b7, p, schedulers=1)


def _garbage(parent, live: list, deadline: int, batch: int) -> None:
    i = 0
    while ns() < deadline:
        i = h.churn(live, i, batch)  # preempted by the VM; no explicit yields
    send(parent, "garbage done")


def _b8(p: dict) -> h.Metrics:
    # Built before the measurement, as the library modules do. Its cycles give it no term
    # form, so spawn shares it by reference instead of copying it.
    live = h.build_live(p["live_nodes"])
    g0 = h.gen2_collections()
    start = ns()
    me = self_pid()
    spawn(_ticker, me, start, p)
    spawn(_garbage, me, live, start + p["duration_ms"] * 1_000_000, p["batch"])
    out = _collect_ticker(h.Ticker(start, p["period_ms"], p["duration_ms"]))
    receive("garbage done")
    return {**out, **h.gc_metrics(g0)}


def b8(p: dict) -> h.Metrics:
    return _run(_b8, p, schedulers=1)


def _b10(p: dict) -> h.Metrics:
    pids, _ = _spawn_idle(p["idle"])
    out = _ping_pong(p)
    _kill(pids)
    return out


def b10(p: dict) -> h.Metrics:
    return _run(_b10, p)


WORKLOADS = {
    "B1": b1,
    "B2": b2,
    "B3": b3,
    "B3W": b3_after_wait,
    "B4": b4,
    "B5": b5,
    "B7": b7,
    "B8": b8,
    "B10": b10,
}

if __name__ == "__main__":
    raise SystemExit(h.main(WORKLOADS, SKIPPED))
