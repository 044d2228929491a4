"""Workloads for gevent.

Idiom: a process is a greenlet (``gevent.spawn``); its mailbox is a
``gevent.queue.Queue``; a receive is ``inbox.get()``; a send is ``inbox.put(msg)``
(the queues are unbounded, so a send never blocks); kill is ``gevent.killall``.
"""

from __future__ import annotations

import gevent
import harness as h
from gevent.event import AsyncResult, Event
from gevent.queue import Queue

ns = h.ns

SKIPPED = {
    "B1b": "no process limit to hit (greenlets are plain heap objects)",
    "B6": "not meaningful: objects are shared by reference, nothing is copied",
    "B9": "one hub runs on one core; there is no scheduler count to vary",
}


def _idle(inbox: Queue, started: list) -> None:
    started[0] += 1
    inbox.get()


def _spawn_idle(n: int) -> tuple[list, int]:
    started = [0]
    t0 = ns()
    gs = [gevent.spawn(_idle, Queue(), started) for _ in range(n)]
    gevent.sleep(0)  # every new greenlet runs until it blocks in its receive
    t1 = ns()
    assert started[0] == n, (started[0], n)
    return gs, t1 - t0


def _kill(gs: list) -> int:
    t0 = ns()
    gevent.killall(gs)  # blocks until all are dead
    gs.clear()
    return ns() - t0


def b1(p: dict) -> h.Metrics:
    base = h.settle()
    gs, t_spawn = _spawn_idle(p["n"])
    delta = h.rss_bytes() - base
    return h.spawn_metrics(p["n"], t_spawn, delta, _kill(gs))


def _ring_node(inbox: Queue, nxt: Queue, done: AsyncResult) -> None:
    while True:
        n = inbox.get()
        if n == 0:
            done.set(None)
        else:
            nxt.put(n - 1)


def b2(p: dict) -> h.Metrics:
    size, total = p["ring"], p["ring"] * p["laps"]
    done = AsyncResult()
    qs = [Queue() for _ in range(size)]
    gs = [gevent.spawn(_ring_node, qs[i], qs[(i + 1) % size], done) for i in range(size)]
    gevent.sleep(0)
    t0 = ns()
    qs[0].put(total - 1)  # the token counts the hops still to make
    done.get()
    dt = ns() - t0
    _kill(gs)
    return {"msgs_per_s": (total / (dt / 1e9), "msgs/s")}


def _pong(inbox: Queue) -> None:
    while True:
        reply_to, x = inbox.get()
        reply_to.put(x)


def _ping_pong(p: dict) -> h.Metrics:
    server = Queue()
    g = gevent.spawn(_pong, server)
    me = Queue()
    for i in range(p["warmup"]):
        server.put((me, i))
        me.get()
    n = p["round_trips"]
    samples = [0] * n
    for i in range(n):
        t = ns()
        server.put((me, i))
        me.get()
        samples[i] = ns() - t
    _kill([g])
    return h.latency_metrics(samples, "round_trip", "ns", with_mean=True)


def b3(p: dict) -> h.Metrics:
    return _ping_pong(p)


def _producer(go: Event, consumer: Queue, m: int) -> None:
    go.wait()
    for i in range(m):
        consumer.put(i)


def _consumer(inbox: Queue, total: int) -> None:
    for _ in range(total):
        inbox.get()


def b4(p: dict) -> h.Metrics:
    n, m = p["producers"], p["per_producer"]
    inbox, go = Queue(), Event()
    consumer = gevent.spawn(_consumer, inbox, n * m)
    producers = [gevent.spawn(_producer, go, inbox, m) for _ in range(n)]
    gevent.sleep(0)
    t0 = ns()
    go.set()
    consumer.join()
    dt = ns() - t0
    gevent.joinall(producers)
    return {"msgs_per_s": (n * m / (dt / 1e9), "msgs/s")}


def _receive(inbox: Queue, stash: list, pred) -> tuple:
    """Selective receive by hand: scan the stash, then stash what does not match."""
    for i, m in enumerate(stash):
        if pred(m):
            del stash[i]
            return m
    while True:
        m = inbox.get()
        if pred(m):
            return m
        stash.append(m)


def _reply_server(inbox: Queue) -> None:
    while True:
        reply_to, tag, key = inbox.get()
        reply_to.put((tag, key, None))


def b5(p: dict) -> h.Metrics:
    server = Queue()
    g = gevent.spawn(_reply_server, server)
    me, stash = Queue(), []
    for i in range(p["unmatched"]):
        me.put(("noise", i, None))
    n = p["receives"]
    t0 = ns()
    for _ in range(n):  # reply keyed by a fresh unique token
        ref = object()
        server.put((me, "reply", ref))
        _receive(me, stash, lambda m, ref=ref: m[1] is ref)
    t1 = ns()
    for i in range(n):  # reply keyed by a tag no queued message has
        server.put((me, "pong", i))
        _receive(me, stash, lambda m: m[0] == "pong")
    t2 = ns()
    assert len(stash) == p["unmatched"]
    _kill([g])
    return {
        "ref_receive_us": ((t1 - t0) / n / 1e3, "us"),
        "tag_receive_us": ((t2 - t1) / n / 1e3, "us"),
    }


def _ticker(t: h.Ticker) -> None:
    while not t.done():
        if (d := t.wait_s()) > 0:  # a late ticker catches up without sleeping
            gevent.sleep(d)
        t.tick()


def b7(p: dict) -> h.Metrics:
    start = ns()
    t = h.Ticker(start, p["period_ms"], p["duration_ms"])
    ticker = gevent.spawn(_ticker, t)
    deadline = start + p["duration_ms"] * 1_000_000
    # spinners never yield: that is the point of B7
    spinners = [gevent.spawn(h.spin_until, deadline) for _ in range(p["spinners"])]
    gevent.joinall([ticker, *spinners], raise_error=True)
    return t.metrics()


def _garbage(live: list, deadline: int, batch: int) -> None:
    i = 0
    while ns() < deadline:
        i = h.churn(live, i, batch)
        gevent.sleep(0)  # cooperative: yield between batches


def b8(p: dict) -> h.Metrics:
    live = h.build_live(p["live_nodes"])
    g0 = h.gen2_collections()
    start = ns()
    t = h.Ticker(start, p["period_ms"], p["duration_ms"])
    ticker = gevent.spawn(_ticker, t)
    g = gevent.spawn(_garbage, live, start + p["duration_ms"] * 1_000_000, p["batch"])
    gevent.joinall([ticker, g], raise_error=True)
    return {**t.metrics(), **h.gc_metrics(g0)}


def b10(p: dict) -> h.Metrics:
    gs, _ = _spawn_idle(p["idle"])
    out = _ping_pong(p)
    _kill(gs)
    return out


WORKLOADS = {"B1": b1, "B2": b2, "B3": b3, "B4": b4, "B5": b5, "B7": b7, "B8": b8, "B10": b10}

if __name__ == "__main__":
    raise SystemExit(h.main(WORKLOADS, SKIPPED))
