"""Workloads for asyncio (and, through ``run_main(loop_factory=...)``, uvloop).

Idiom: a process is a Task; its mailbox is an unbounded ``asyncio.Queue``; a
receive is ``await inbox.get()``; a send is ``inbox.put_nowait(msg)``.
"""

from __future__ import annotations

import asyncio

import harness as h

ns = h.ns
LOOP_FACTORY = None  # None: asyncio's default loop; uvloop_lib sets uvloop.new_event_loop

SKIPPED = {
    "B1b": "no process limit to hit (tasks are plain heap objects)",
    "B6": "not meaningful: objects are shared by reference, nothing is copied",
    "B9": "one event loop runs on one core; there is no scheduler count to vary",
    "B13b": "no supervisors in asyncio",
    "B13c": "the asyncio bridge is beamvm's (B13c measures beamvm.aio)",
}


async def _idle(inbox: asyncio.Queue, started: list) -> None:
    started[0] += 1
    await inbox.get()


async def _spawn_idle(n: int) -> tuple[list, int]:
    started = [0]
    t0 = ns()
    tasks = [asyncio.create_task(_idle(asyncio.Queue(), started)) for _ in range(n)]
    await asyncio.sleep(0)  # every new task runs until it blocks in its receive
    t1 = ns()
    assert started[0] == n, (started[0], n)
    return tasks, t1 - t0


async def _kill(tasks: list) -> int:
    t0 = ns()
    for t in tasks:
        t.cancel()
    await asyncio.sleep(0)  # each cancelled task runs once and finishes
    t1 = ns()
    assert all(t.done() for t in tasks)
    t2 = ns()
    tasks.clear()
    return (t1 - t0) + (ns() - t2)


async def b1(p: dict) -> h.Metrics:
    base = h.settle()
    tasks, t_spawn = await _spawn_idle(p["n"])
    delta = h.rss_bytes() - base
    return h.spawn_metrics(p["n"], t_spawn, delta, await _kill(tasks))


async def _ring_node(inbox: asyncio.Queue, nxt: asyncio.Queue, done: asyncio.Future) -> None:
    while True:
        n = await inbox.get()
        if n == 0:
            done.set_result(None)
        else:
            nxt.put_nowait(n - 1)


async def b2(p: dict) -> h.Metrics:
    size, total = p["ring"], p["ring"] * p["laps"]
    done = asyncio.get_running_loop().create_future()
    qs = [asyncio.Queue() for _ in range(size)]
    tasks = [asyncio.create_task(_ring_node(qs[i], qs[(i + 1) % size], done)) for i in range(size)]
    await asyncio.sleep(0)
    t0 = ns()
    qs[0].put_nowait(total - 1)  # the token counts the hops still to make
    await done
    dt = ns() - t0
    await _kill(tasks)
    return {"msgs_per_s": (total / (dt / 1e9), "msgs/s")}


async def _pong(inbox: asyncio.Queue) -> None:
    while True:
        reply_to, x = await inbox.get()
        reply_to.put_nowait(x)


async def _ping_pong(p: dict) -> h.Metrics:
    server = asyncio.Queue()
    task = asyncio.create_task(_pong(server))
    me = asyncio.Queue()
    for i in range(p["warmup"]):
        server.put_nowait((me, i))
        await me.get()
    n = p["round_trips"]
    samples = [0] * n
    for i in range(n):
        t = ns()
        server.put_nowait((me, i))
        await me.get()
        samples[i] = ns() - t
    await _kill([task])
    return h.latency_metrics(samples, "round_trip", "ns", with_mean=True)


async def b3(p: dict) -> h.Metrics:
    return await _ping_pong(p)


async def _producer(go: asyncio.Event, consumer: asyncio.Queue, m: int) -> None:
    await go.wait()
    for i in range(m):
        consumer.put_nowait(i)


async def _consumer(inbox: asyncio.Queue, total: int, done: asyncio.Future) -> None:
    for _ in range(total):
        await inbox.get()
    done.set_result(None)


async def b4(p: dict) -> h.Metrics:
    n, m = p["producers"], p["per_producer"]
    inbox = asyncio.Queue()
    go = asyncio.Event()
    done = asyncio.get_running_loop().create_future()
    consumer = asyncio.create_task(_consumer(inbox, n * m, done))
    producers = [asyncio.create_task(_producer(go, inbox, m)) for _ in range(n)]
    await asyncio.sleep(0)
    t0 = ns()
    go.set()
    await done
    dt = ns() - t0
    await asyncio.gather(consumer, *producers)
    return {"msgs_per_s": (n * m / (dt / 1e9), "msgs/s")}


async def _receive(inbox: asyncio.Queue, stash: list, pred) -> tuple:
    """Selective receive by hand: scan the stash, then stash what does not match."""
    for i, m in enumerate(stash):
        if pred(m):
            del stash[i]
            return m
    while True:
        m = await inbox.get()
        if pred(m):
            return m
        stash.append(m)


async def _reply_server(inbox: asyncio.Queue) -> None:
    while True:
        reply_to, tag, key = await inbox.get()
        reply_to.put_nowait((tag, key, None))


async def b5(p: dict) -> h.Metrics:
    server = asyncio.Queue()
    task = asyncio.create_task(_reply_server(server))
    me, stash = asyncio.Queue(), []
    for i in range(p["unmatched"]):
        me.put_nowait(("noise", i, None))
    n = p["receives"]
    t0 = ns()
    for _ in range(n):  # reply keyed by a fresh unique token
        ref = object()
        server.put_nowait((me, "reply", ref))
        await _receive(me, stash, lambda m, ref=ref: m[1] is ref)
    t1 = ns()
    for i in range(n):  # reply keyed by a tag no queued message has
        server.put_nowait((me, "pong", i))
        await _receive(me, stash, lambda m: m[0] == "pong")
    t2 = ns()
    assert len(stash) == p["unmatched"]
    await _kill([task])
    return {
        "ref_receive_us": ((t1 - t0) / n / 1e3, "us"),
        "tag_receive_us": ((t2 - t1) / n / 1e3, "us"),
    }


async def _spinner(deadline: int) -> None:
    h.spin_until(deadline)  # never yields: that is the point of B7


async def _ticker(t: h.Ticker) -> None:
    while not t.done():
        if (d := t.wait_s()) > 0:  # a late ticker catches up without sleeping
            await asyncio.sleep(d)
        t.tick()


async def b7(p: dict) -> h.Metrics:
    start = ns()
    t = h.Ticker(start, p["period_ms"], p["duration_ms"])
    ticker = asyncio.create_task(_ticker(t))
    deadline = start + p["duration_ms"] * 1_000_000
    spinners = [asyncio.create_task(_spinner(deadline)) for _ in range(p["spinners"])]
    await asyncio.gather(ticker, *spinners)
    return t.metrics()


async def _garbage(live: list, deadline: int, batch: int) -> None:
    i = 0
    while ns() < deadline:
        i = h.churn(live, i, batch)
        await asyncio.sleep(0)  # cooperative: yield between batches


async def b8(p: dict) -> h.Metrics:
    live = h.build_live(p["live_nodes"])
    g0 = h.gen2_collections()
    start = ns()
    t = h.Ticker(start, p["period_ms"], p["duration_ms"])
    ticker = asyncio.create_task(_ticker(t))
    gtask = asyncio.create_task(_garbage(live, start + p["duration_ms"] * 1_000_000, p["batch"]))
    await asyncio.gather(ticker, gtask)
    return {**t.metrics(), **h.gc_metrics(g0)}


async def b10(p: dict) -> h.Metrics:
    tasks, _ = await _spawn_idle(p["idle"])
    out = await _ping_pong(p)
    await _kill(tasks)
    return out


async def _server(inbox: asyncio.Queue) -> None:
    """A request/reply server: a call is (request, Future), a cast a bare message."""
    while True:
        msg = await inbox.get()
        if type(msg) is tuple and len(msg) == 2 and isinstance(msg[1], asyncio.Future):
            request, fut = msg
            if not fut.done():
                fut.set_result(request)


async def _call(inbox: asyncio.Queue, request):
    fut = asyncio.get_running_loop().create_future()
    inbox.put_nowait((request, fut))
    return await fut


async def b13a(p: dict) -> h.Metrics:
    inbox = asyncio.Queue()
    task = asyncio.create_task(_server(inbox))
    for i in range(p["warmup"]):
        await _call(inbox, i)
    n = p["calls"]
    samples = [0] * n
    for i in range(n):
        t = ns()
        await _call(inbox, i)
        samples[i] = ns() - t
    out = h.latency_metrics(samples, "call", "ns", with_mean=True)
    m = p["casts"]
    t0 = ns()
    for i in range(m):
        inbox.put_nowait(i)
    await _call(inbox, "sync")
    out["casts_per_s"] = (m / ((ns() - t0) / 1e9), "msgs/s")
    await _kill([task])
    return out


async def b13d(p: dict) -> h.Metrics:
    t0 = ns()
    await asyncio.gather(*(asyncio.sleep(p["sleep_ms"] / 1e3) for _ in range(p["n"])))
    return {"all_done_s": ((ns() - t0) / 1e9, "s")}


WORKLOADS = {
    "B1": b1, "B2": b2, "B3": b3, "B4": b4, "B5": b5, "B7": b7, "B8": b8, "B10": b10,
    "B13a": b13a, "B13d": b13d,
}


def run_main(loop_factory=None, skipped: dict | None = None) -> int:
    def wrap(fn):
        def run(p: dict) -> h.Metrics:
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                return runner.run(fn(p))

        return run

    return h.main({k: wrap(v) for k, v in WORKLOADS.items()}, skipped or SKIPPED)


if __name__ == "__main__":
    raise SystemExit(run_main(LOOP_FACTORY))
