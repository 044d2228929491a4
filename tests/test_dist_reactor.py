"""Distribution connections run on the VM's I/O reactor: each is a native process, not
a reader and a writer thread (crates/vm-python/src/dist_conn.rs). Against real `erl`
nodes the tests start and stop; skipped only when `erl` is absent."""

from __future__ import annotations

import os
import time

import beamvm
import pytest
from beamvm import ANY, Atom, dist, receive, self_pid, send
from dist_helpers import COOKIE, ERL, ErlNode, erl_eval, unique

pytestmark = pytest.mark.skipif(
    ERL is None, reason="erl is not installed (apt install erlang-base)"
)


def run_node(main, **kw):
    return beamvm.run(
        main, node=f"{unique('py')}@localhost", cookie=COOKIE, dist_listen="127.0.0.1", **kw
    )


def thread_names() -> list[str]:
    """Names of this process's threads (as `ps -L` shows them)."""
    names = []
    for t in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{t}/comm") as f:
                names.append(f.read().strip())
        except OSError:
            pass  # the thread ended meanwhile
    return names


def settled_thread_count(limit: int) -> int:
    """The thread count once transient threads (connection setups) ended, waiting
    up to 10 s for it to reach `limit` or less."""
    deadline = time.monotonic() + 10
    n = len(thread_names())
    while n > limit and time.monotonic() < deadline:
        beamvm.sleep(0.05)
        n = len(thread_names())
    return n


def test_connections_are_native_processes_not_threads():
    nodes = [ErlNode() for _ in range(3)]

    def main():
        before = settled_thread_count(0)
        procs_before = set(beamvm.processes())
        for n in nodes:
            assert dist.ping(n.name) == Atom("pong")
            # Both directions work through the connection.
            assert erl_eval(n, "node().") == n.atom
        assert sorted(beamvm.nodes()) == sorted(n.atom for n in nodes)
        names = thread_names()
        assert "dist-reader" not in names and "dist-writer" not in names, names
        # Three connections cost no thread of their own (setup threads end).
        after = settled_thread_count(before)
        assert after <= before, (before, after, thread_names())
        # The connection processes are system processes: not listed.
        assert set(beamvm.processes()) - procs_before <= {self_pid()}
        return True

    try:
        assert run_node(main)
    finally:
        for n in nodes:
            n.stop()


def test_an_erl_peer_killed_mid_frame_drops_only_its_connection():
    """erl streams 8 MiB binaries at a Python process and is killed while doing so:
    the connection closes (noconnection to the link, nodedown), and the VM and the
    other connection go on."""
    sender = ErlNode(ticktime=4)
    other = ErlNode(ticktime=4)

    def sink():
        while True:
            m = receive(ANY)
            if m == Atom("stop"):
                return

    def main():
        beamvm.process_flag("trap_exit", True)
        beamvm.register("sink", beamvm.spawn(sink))
        me = beamvm.node()
        p = erl_eval(
            sender,
            "Bin = binary:copy(<<7>>, 8 bsl 20), "
            "spawn(fun() -> receive go -> ok end, "
            f"L = fun L() -> {{sink, '{me}'}} ! Bin, L() end, L() end).",
        )
        beamvm.link(p)
        dist.monitor_node(sender.name)
        assert dist.ping(other.name) == Atom("pong")
        send(p, Atom("go"))
        beamvm.sleep(0.3)  # frames of 8 MiB stream in
        sender.proc.kill()
        assert receive((Atom("EXIT"), p, ANY), timeout=30)[2] == Atom("noconnection")
        assert receive((Atom("nodedown"), ANY), timeout=30)[1] == sender.atom
        assert sender.atom not in beamvm.nodes()
        # The other connection and the VM never noticed.
        assert erl_eval(other, "node().") == other.atom
        assert dist.ping(other.name) == Atom("pong")
        send("sink", Atom("stop"))
        return True

    try:
        assert run_node(main, net_ticktime=4)
    finally:
        sender.stop()
        other.stop()
