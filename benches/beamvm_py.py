"""Workloads for beamvm's Python processes (see benches/README.md for the contract).

Idiom: a process is a plain function spawned with ``beamvm.spawn``; it receives with
``beamvm.receive`` (selective receive by pattern, keyed by a Ref or an atom tag where the
pattern allows) and sends copies with ``beamvm.send``. Every workload runs inside
``beamvm.run`` (one VM per repetition). Scheduler threads: ``SCHEDULERS`` below (Python
slices hold the GIL, so on a GIL build one scheduler avoids lock hand-overs); the
``BEAMVM_SCHEDULERS`` environment variable overrides it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "pylibs"))
import beamvm  # noqa: E402
import harness as h  # noqa: E402
from beamvm import (  # noqa: E402
    ANY,
    Atom,
    aio,
    exit,
    gen_server,
    receive,
    self_pid,
    send,
    spawn,
    supervisor,  # noqa: E402
)
from beamvm.gen_server import GenServer, NoReply  # noqa: E402

ns = h.ns
KILL = Atom("kill")
PONG = Atom("pong")
CRASH = Atom("crash")
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


# --------------------------------------------------------------------------- B13: OTP layer


class _Echo(GenServer):
    def init(self, parent=None) -> None:
        if parent is not None:
            send(parent, ("started", self_pid()))

    def handle_call(self, request, from_):
        return request

    def handle_cast(self, msg) -> None:
        pass


def _b13a(p: dict) -> h.Metrics:
    srv = _Echo.start()
    for i in range(p["warmup"]):
        gen_server.call(srv, i)
    n = p["calls"]
    samples = [0] * n
    for i in range(n):
        t = ns()
        gen_server.call(srv, i)
        samples[i] = ns() - t
    out = h.latency_metrics(samples, "call", "ns", with_mean=True)
    m = p["casts"]
    t0 = ns()
    for i in range(m):
        gen_server.cast(srv, i)
    gen_server.call(srv, "sync", None)  # every cast before it has been handled
    out["casts_per_s"] = (m / ((ns() - t0) / 1e9), "msgs/s")
    return out


def b13a(p: dict) -> h.Metrics:
    return _run(_b13a, p, schedulers=1)


def _restarts(p: dict) -> list:
    me = self_pid()
    sup = supervisor.start_link(
        [_Echo.child_spec(me, id="echo")], intensity=10 * p["crashes"], period=1.0
    )
    pid = receive(("started", ANY))[1]
    samples = []
    for _ in range(p["crashes"]):
        t = ns()
        exit(pid, CRASH)
        pid = receive(("started", ANY))[1]
        gen_server.call(pid, "ping")
        samples.append(ns() - t)
    beamvm.unlink(sup)
    exit(sup, Atom("shutdown"))
    return samples


def _b13b(p: dict) -> h.Metrics:
    out = h.latency_metrics(_restarts(p), "restart", "us", scale=1e3)
    logging.disable(logging.CRITICAL)
    quiet = h.latency_metrics(_restarts(p), "restart_quiet", "us", scale=1e3)
    logging.disable(logging.NOTSET)
    out["restart_quiet_p50"] = quiet["restart_quiet_p50"]
    return out


def b13b(p: dict) -> h.Metrics:
    return _run(_b13b, p, schedulers=1)


class _Delayed(GenServer):
    """Answers call number i after i/n of `span` seconds: n calls in flight, answered
    at an even pace over the span (a sustained load, not one burst at the end)."""

    def init(self, span: float, n: int) -> None:
        self.span, self.n = span, n

    def handle_call(self, request, from_):
        beamvm.send_after(self.span * request / self.n, self_pid(), ("answer", from_, request))
        return NoReply

    def handle_info(self, msg) -> None:
        gen_server.reply(msg[1], msg[2])


async def _aio_ticker(t: h.Ticker) -> None:
    while not t.done():
        d = t.wait_s()
        if d > 0:
            await asyncio.sleep(d)
        t.tick()


async def _b13c(p: dict) -> h.Metrics:
    # The same ticker on the bare loop first: what this machine gives right now.
    bare = h.Ticker(ns(), p["period_ms"], p["duration_ms"])
    await _aio_ticker(bare)
    bare_p99 = bare.metrics()["lateness_p99"]
    async with aio.running(schedulers=SCHEDULERS):
        srv = await aio.start(_Echo)
        for i in range(1000):
            await aio.call(srv, i)
        n = p["round_trips"]
        samples = [0] * n
        for i in range(n):
            t = ns()
            await aio.call(srv, i)
            samples[i] = ns() - t
        out = h.latency_metrics(samples, "aio_call", "us", scale=1e3)
        duration = p["duration_ms"]
        slow = await aio.start(_Delayed, 0.3 + duration / 1e3, p["in_flight"])
        calls = [asyncio.create_task(aio.call(slow, i, timeout=None))
                 for i in range(p["in_flight"])]
        await asyncio.sleep(0.3)  # every call made (in flight) before the measurement
        start = ns()
        deadline = start + duration * 1_000_000
        for _ in range(p["spinners"]):
            beamvm.spawn(_spinner, deadline)
        t = h.Ticker(start, p["period_ms"], duration)
        await _aio_ticker(t)
        answered = await asyncio.gather(*calls)
        assert sorted(answered) == list(range(p["in_flight"]))
        out.update(t.metrics())
        out["bare_loop_lateness_p99"] = bare_p99
        return out


def b13c(p: dict) -> h.Metrics:
    return asyncio.run(_b13c(p))


def _sleeper(parent, s: float) -> None:
    beamvm.await_(asyncio.sleep(s))
    send(parent, "done")


def _b13d(p: dict) -> h.Metrics:
    me = self_pid()
    t0 = ns()
    for _ in range(p["n"]):
        spawn(_sleeper, me, p["sleep_ms"] / 1e3)
    for _ in range(p["n"]):
        receive("done")
    return {"all_done_s": ((ns() - t0) / 1e9, "s")}


def b13d(p: dict) -> h.Metrics:
    out = {}
    for n in (1, 2):
        m = beamvm.run(_b13d, p, schedulers=n)
        out[f"all_done_s_{n}"] = m["all_done_s"]
    return out


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
    "B13a": b13a,
    "B13b": b13b,
    "B13c": b13c,
    "B13d": b13d,
}

if __name__ == "__main__":
    raise SystemExit(h.main(WORKLOADS, SKIPPED))
