"""Workloads for pykka (one thread per actor).

Idiom: a process is a ``pykka.ThreadingActor``; it receives in ``on_receive``;
sends are ``ref.tell(msg)``, request/reply is ``ref.ask(msg)`` (a blocking future);
kill is ``ref.stop()``.  Actors are callback-driven, so a selective receive (B5) is
a stash that ``on_receive`` fills and the actor scans by hand.

pykka starts one OS thread per actor and fails at ~22,000 actors on this machine
(the kernel's map count / thread limits), so sizes that need more actors or that
would take minutes at pykka's speed are capped (see CAPS; caps show up in params).
"""

from __future__ import annotations

import threading
import time

import harness as h
import pykka

ns = h.ns

SKIPPED = {
    "B1b": "the limit is the OS thread limit (~22,000 actors), not a VM process limit",
    "B6": "not meaningful: objects are shared by reference, nothing is copied",
    "B9": "actors are threads under one GIL; there is no scheduler count to vary",
    "B13b": "pykka has no supervisors",
    "B13c": "the asyncio bridge is beamvm's (B13c measures beamvm.aio)",
}

CAPS = {
    "B1": {"n": 10_000},
    "B2": {"laps": 10},
    "B3": {"round_trips": 100_000},
    "B4": {"per_producer": 100},
    "B10": {"idle": 10_000, "round_trips": 100_000},
    "B13a": {"calls": 20_000, "casts": 100_000},
}


class Actor(pykka.ThreadingActor):
    use_daemon_thread = True  # a failed run must not hang the interpreter at exit


class Idle(Actor):
    pass


def _spawn_idle(n: int) -> tuple[list, int]:
    t0 = ns()
    refs = [Idle.start() for _ in range(n)]  # returns once the actor's thread runs
    return refs, ns() - t0


def _kill(refs: list) -> int:
    t0 = ns()
    pykka.get_all([r.stop(block=False) for r in refs])
    refs.clear()
    return ns() - t0


def b1(p: dict) -> h.Metrics:
    base = h.settle()
    refs, t_spawn = _spawn_idle(p["n"])
    time.sleep(0.2)  # untimed: let every thread reach its blocking inbox.get()
    delta = h.rss_bytes() - base
    return h.spawn_metrics(p["n"], t_spawn, delta, _kill(refs))


class RingNode(Actor):
    def __init__(self, done: threading.Event):
        super().__init__()
        self.done = done
        self.next = None

    def on_receive(self, message):
        if type(message) is int:
            if message == 0:
                self.done.set()
            else:
                self.next.tell(message - 1)
        else:
            self.next = message[1]  # ("next", ref)


def b2(p: dict) -> h.Metrics:
    size, total = p["ring"], p["ring"] * p["laps"]
    done = threading.Event()
    refs = [RingNode.start(done) for _ in range(size)]
    pykka.get_all([refs[i].ask(("next", refs[(i + 1) % size]), block=False) for i in range(size)])
    t0 = ns()
    refs[0].tell(total - 1)  # the token counts the hops still to make
    done.wait()
    dt = ns() - t0
    _kill(refs)
    return {"msgs_per_s": (total / (dt / 1e9), "msgs/s")}


class Pong(Actor):
    def on_receive(self, message):
        return message


def _ping_pong(p: dict) -> h.Metrics:
    pong = Pong.start()
    for i in range(p["warmup"]):
        pong.ask(i)
    n = p["round_trips"]
    samples = [0] * n
    for i in range(n):
        t = ns()
        pong.ask(i)
        samples[i] = ns() - t
    _kill([pong])
    return h.latency_metrics(samples, "round_trip", "ns", with_mean=True)


def b3(p: dict) -> h.Metrics:
    return _ping_pong(p)


class Producer(Actor):
    def __init__(self, consumer, m: int):
        super().__init__()
        self.consumer, self.m = consumer, m

    def on_receive(self, message):  # "go"
        for i in range(self.m):
            self.consumer.tell(i)


class Consumer(Actor):
    def __init__(self, total: int, done: threading.Event):
        super().__init__()
        self.left, self.done = total, done

    def on_receive(self, message):
        self.left -= 1
        if self.left == 0:
            self.done.set()


def b4(p: dict) -> h.Metrics:
    n, m = p["producers"], p["per_producer"]
    done = threading.Event()
    consumer = Consumer.start(n * m, done)
    producers = [Producer.start(consumer, m) for _ in range(n)]
    t0 = ns()
    for prod in producers:
        prod.tell("go")
    done.wait()
    dt = ns() - t0
    _kill([consumer, *producers])
    return {"msgs_per_s": (n * m / (dt / 1e9), "msgs/s")}


class ReplyServer(Actor):
    def on_receive(self, message):
        reply_to, tag, key = message
        reply_to.tell((tag, key, None))


START = ("start", None, None)


class StashClient(Actor):
    """Makes 2n requests; waits for each reply by stashing and scanning by hand."""

    def __init__(self, server, n: int, done: threading.Event):
        super().__init__()
        self.server, self.n, self.done = server, n, done
        self.stash: list = []
        self.pred = None
        self.k = -1
        self.times: list[int] = []

    def on_receive(self, message):
        if message is START:
            self.times.append(ns())
            self._next()
        elif self.pred is not None and self.pred(message):
            self.pred = None
            self._next()
        else:
            self.stash.append(message)

    def _next(self) -> None:
        while True:
            self.k += 1
            if self.k % self.n == 0 and self.k > 0:
                self.times.append(ns())
            if self.k == 2 * self.n:
                self.done.set()
                return
            if self.k < self.n:  # reply keyed by a fresh unique token
                ref = object()
                self.server.tell((self.actor_ref, "reply", ref))
                pred = lambda m, ref=ref: m[1] is ref  # noqa: E731
            else:  # reply keyed by a tag no queued message has
                self.server.tell((self.actor_ref, "pong", self.k))
                pred = lambda m: m[0] == "pong"  # noqa: E731
            for i, m in enumerate(self.stash):
                if pred(m):
                    del self.stash[i]
                    break
            else:
                self.pred = pred  # not stashed: wait for on_receive
                return

    def result(self):
        return self.times, len(self.stash)


def b5(p: dict) -> h.Metrics:
    done = threading.Event()
    server = ReplyServer.start()
    n = p["receives"]
    client = StashClient.start(server, n, done)
    for i in range(p["unmatched"]):
        client.tell(("noise", i, None))
    client.tell(START)
    done.wait()
    (t0, t1, t2), stashed = client.proxy().result().get()
    assert stashed == p["unmatched"], stashed
    _kill([client, server])
    return {
        "ref_receive_us": ((t1 - t0) / n / 1e3, "us"),
        "tag_receive_us": ((t2 - t1) / n / 1e3, "us"),
    }


class Spinner(Actor):
    def on_receive(self, message):  # the deadline
        h.spin_until(message)


class TickerActor(Actor):
    def on_receive(self, message):  # an h.Ticker
        while not message.done():
            if (d := message.wait_s()) > 0:  # a late ticker catches up at once
                time.sleep(d)
            message.tick()


def b7(p: dict) -> h.Metrics:
    actors = [TickerActor.start()] + [Spinner.start() for _ in range(p["spinners"])]
    start = ns()
    t = h.Ticker(start, p["period_ms"], p["duration_ms"])
    futures = [actors[0].ask(t, block=False)]
    deadline = start + p["duration_ms"] * 1_000_000
    futures += [a.ask(deadline, block=False) for a in actors[1:]]
    pykka.get_all(futures)
    _kill(actors)
    return t.metrics()


class Garbage(Actor):
    def on_receive(self, message):
        live, deadline, batch = message
        i = 0
        while ns() < deadline:  # threads are preempted: no need to yield
            i = h.churn(live, i, batch)


def b8(p: dict) -> h.Metrics:
    live = h.build_live(p["live_nodes"])
    actors = [TickerActor.start(), Garbage.start()]
    g0 = h.gen2_collections()
    start = ns()
    t = h.Ticker(start, p["period_ms"], p["duration_ms"])
    futures = [
        actors[0].ask(t, block=False),
        actors[1].ask((live, start + p["duration_ms"] * 1_000_000, p["batch"]), block=False),
    ]
    pykka.get_all(futures)
    _kill(actors)
    return {**t.metrics(), **h.gc_metrics(g0)}


def b10(p: dict) -> h.Metrics:
    refs, _ = _spawn_idle(p["idle"])
    out = _ping_pong(p)
    _kill(refs)
    return out


class Server(Actor):
    """B13a's server: ask is a call (the reply is the return value), tell a cast."""

    def on_receive(self, message):
        return message


def b13a(p: dict) -> h.Metrics:
    srv = Server.start()
    for i in range(p["warmup"]):
        srv.ask(i)
    n = p["calls"]
    samples = [0] * n
    for i in range(n):
        t = ns()
        srv.ask(i)
        samples[i] = ns() - t
    out = h.latency_metrics(samples, "call", "ns", with_mean=True)
    m = p["casts"]
    t0 = ns()
    for i in range(m):
        srv.tell(i)
    srv.ask("sync")
    out["casts_per_s"] = (m / ((ns() - t0) / 1e9), "msgs/s")
    _kill([srv])
    return out


WORKLOADS = {
    "B1": b1, "B2": b2, "B3": b3, "B4": b4, "B5": b5, "B7": b7, "B8": b8, "B10": b10,
    "B13a": b13a,
}

if __name__ == "__main__":
    try:
        rc = h.main(WORKLOADS, SKIPPED, CAPS)
    finally:
        pykka.ActorRegistry.stop_all(block=False)
    raise SystemExit(rc)
