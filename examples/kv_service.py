"""A supervised key-value service with a dynamic pool of workers (docs/otp.md).

The tree::

    app_sup (one_for_one)
    ├── "kv"      KVStore     a GenServer that owns the data
    └── "pool"    DynamicSupervisor of temporary Worker servers

Workers take jobs (count the words of a text) and store their results in the KV store.
The program crashes a worker and then the store itself, and shows what the supervisors
do about it; at the end an asyncio coroutine reads the store through ``beamvm.aio``.

Run with ``python examples/kv_service.py``.
"""

from __future__ import annotations

import asyncio
import logging

import beamvm
from beamvm import CallError, aio, gen_server, supervisor
from beamvm.gen_server import GenServer, NoReply
from beamvm.supervisor import DynamicSupervisor, child_spec


class KVStore(GenServer):
    """The data: a dict owned by one process; everyone else asks it."""

    def init(self) -> None:
        """Start empty."""
        self.data: dict = {}

    def handle_call(self, request, from_):
        """Get, put, list the keys; "crash" crashes on purpose."""
        match request:
            case ("get", key):
                return self.data.get(key)
            case ("put", key, value):
                self.data[key] = value
                return "ok"
            case "keys":
                return sorted(self.data)
            case "crash":
                raise RuntimeError("the store was asked to crash")

    def __repr__(self) -> str:  # what a crash report shows as the state
        return f"KVStore({len(self.data)} keys)"


class Worker(GenServer):
    """A pool worker: counts the words of a text, stores the count, replies when done."""

    def init(self, name: str) -> None:
        """Remember the worker's name (it shows in the results)."""
        self.name = name

    def handle_call(self, request, from_):
        """Count now, count later (NoReply, answered from handle_info), or crash."""
        match request:
            case ("count", doc, text):
                words = len(text.split())
                gen_server.call("kv", ("put", doc, words))
                return (self.name, words)
            case ("count_later", doc, text):
                # Answer later (NoReply), after a message to itself: a long job does not
                # block the caller's timeout bookkeeping.
                beamvm.send(beamvm.self_pid(), ("job", from_, doc, text))
                return NoReply
            case "crash":
                raise ValueError(f"{self.name} was asked to crash")

    def handle_info(self, msg) -> None:
        """Do a job queued by count_later and answer its caller."""
        _, from_, doc, text = msg
        gen_server.reply(from_, self.handle_call(("count", doc, text), from_))


DOCS = {
    "a": "the quick brown fox",
    "b": "jumps over the lazy dog",
    "c": "a process that owns its state is a small server",
    "d": "let it crash and let the supervisor restart it",
}


def start_app() -> beamvm.Pid:
    """Start the tree: the store and the (empty) worker pool under app_sup."""
    return supervisor.start_link(
        [
            KVStore.child_spec(id="kv", name="kv"),
            child_spec("pool", DynamicSupervisor.start_link, kwargs={"name": "pool"},
                       type="supervisor"),
        ],
        strategy="one_for_one",
        intensity=3,
        period=5.0,
        name="app_sup",
    )


def main() -> None:
    """Run the service: jobs, a worker crash, a store crash."""
    start_app()
    workers = []
    for i in range(3):
        spec = Worker.child_spec(f"w{i}", id=f"w{i}", restart="temporary")
        workers.append(DynamicSupervisor.start_child("pool", spec))
    # (Calls go in plain statements, not in comprehensions: beamvm does not compile
    # comprehensions, so a call that waits cannot suspend the process there.)
    children = supervisor.which_children("app_sup")
    print("children of app_sup:", [c[0] for c in children])
    print("pool:", DynamicSupervisor.count_children("pool"))

    # Hand the jobs out, round robin; each call returns when its worker is done.
    for n, (doc, text) in enumerate(DOCS.items()):
        who, words = gen_server.call(workers[n % 3], ("count_later", doc, text))
        print(f"{who} counted {words} words in {doc!r}")
    store = {}
    for k in DOCS:
        store[k] = gen_server.call("kv", ("get", k))
    print("store:", store)

    # A worker crashes: the caller gets the reason; temporary workers are not restarted.
    try:
        gen_server.call(workers[0], "crash")
    except CallError as e:
        print("worker crashed, the caller sees:", e.reason[0])
    beamvm.sleep(0.05)
    print("pool after the crash:", DynamicSupervisor.count_children("pool"))

    # The store crashes: app_sup restarts it (empty: the state died with the process).
    old = beamvm.whereis("kv")
    try:
        gen_server.call("kv", "crash")
    except CallError as e:
        print("the store crashed with", e.reason[0])
    while beamvm.whereis("kv") in (None, old):
        beamvm.sleep(0.01)
    print("restarted store:", beamvm.whereis("kv"), "keys:", gen_server.call("kv", "keys"))
    gen_server.call("kv", ("put", "after", "the crash"))


async def from_asyncio() -> None:
    """Use the service from asyncio."""
    # The same service from a coroutine: aio.running starts the VM without blocking the
    # loop; aio.call is gen_server.call for coroutines.
    async with aio.running(schedulers=2):
        await aio.start(KVStore, name="kv")
        await aio.call("kv", ("put", "from", "asyncio"))
        print("asyncio reads:", await aio.call("kv", ("get", "from")))


if __name__ == "__main__":
    logging.basicConfig(level=logging.CRITICAL)  # the crashes above are on purpose
    beamvm.run(main, schedulers=2)
    asyncio.run(from_asyncio())
