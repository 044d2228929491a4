"""Aliases across nodes (issue 12): ALIAS_SEND reaches a Python alias while it is
active, so `gen_server.call` between two beamvm nodes gets its reply and erl can send
to an alias; calls to other nodes (`gen_server.call`, `rpc.call`, `dist.ping`) are
answered through an alias that ends with the call, so a reply after a timeout is
dropped, never left in the caller's mailbox. Needs `erl` for the erl tests (skipped
without it, as tests/test_dist.py); the two-beamvm-node test runs the other node in a
subprocess with the built-in EPMD on a free port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import beamvm
import pytest
from beamvm import ANY, Atom, alias, gen_server, receive, rpc, self_pid, send, unalias
from dist_helpers import COOKIE, ERL, ErlNode, erl_eval, unique

OK = Atom("ok")
TIMEOUT = Atom("timeout")

needs_erl = pytest.mark.skipif(ERL is None, reason="erl is not installed (apt install erlang-base)")


@pytest.fixture
def erl():
    n = ErlNode()
    yield n
    n.stop()


def run_node(main, cookie: str = COOKIE, **kw):
    return beamvm.run(
        main, node=f"{unique('py')}@localhost", cookie=cookie, dist_listen="127.0.0.1", **kw
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nothing_left(wait: float) -> list:
    """What reaches the mailbox within ``wait`` seconds (a leak: should be [])."""
    got = []
    m = receive(ANY, timeout=wait, default=None)
    while m is not None:
        got.append(m)
        m = receive(ANY, timeout=0, default=None)
    return got


SERVER_NODE = textwrap.dedent(
    """
    import sys, beamvm
    from beamvm import Atom, dist, gen_server, receive

    me, cookie = sys.argv[1], sys.argv[2]

    class Counter(gen_server.GenServer):
        def init(self, start=0):
            self.n = start

        def handle_call(self, request, from_):
            if request == Atom("get"):
                return self.n
            if request[0] == Atom("add"):
                self.n += request[1]
                return self.n
            if request[0] == Atom("slow"):  # answers after request[1] seconds
                receive(Atom("never"), timeout=request[1], default=None)
                return Atom("late")
            raise ValueError(request)

    class api:
        @staticmethod
        def slow(seconds):
            receive(Atom("never"), timeout=seconds, default=None)
            return Atom("late")

    def main():
        dist.expose("api", api)
        Counter.start_link(5, name="counter")
        beamvm.register("main", beamvm.self_pid())
        print("ready", flush=True)
        receive(Atom("quit"), timeout=120)

    beamvm.run(main, node=me, cookie=cookie, dist_listen="127.0.0.1")
    """
)


def test_gen_server_call_between_two_beamvm_nodes_and_late_replies_dropped(tmp_path, monkeypatch):
    """A Python GenServer on one beamvm node answers a caller on another through the
    caller's alias (ALIAS_SEND), which used to be dropped on arrival: every such call
    timed out. A reply after the call's timeout, from the GenServer or from the built-in
    rex, is dropped."""
    script = tmp_path / "server_node.py"
    script.write_text(SERVER_NODE)
    monkeypatch.setenv("ERL_EPMD_PORT", str(free_port()))
    other = f"{unique('srv')}@localhost"
    server = subprocess.Popen(
        [sys.executable, str(script), other, COOKIE],
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"

        def main():
            counter = (Atom("counter"), Atom(other))
            assert gen_server.call(counter, Atom("get"), timeout=30) == 5
            assert gen_server.call(counter, (Atom("add"), 2), timeout=30) == 7
            with pytest.raises(beamvm.CallError) as e:
                gen_server.call(counter, (Atom("slow"), 0.5), timeout=0.1)
            assert e.value.reason[0] == TIMEOUT
            assert rpc.call(other, "api", "slow", [0.5], timeout=0.1) == (
                Atom("badrpc"),
                TIMEOUT,
            )
            leaked = nothing_left(1.5)
            # The server is alive and answers the next call; no alias is left behind.
            assert gen_server.call(counter, Atom("get"), timeout=30) == 7
            aliases = beamvm.process_info(self_pid())["aliases"]
            send((Atom("main"), Atom(other)), Atom("quit"))
            return leaked, aliases

        assert run_node(main) == ([], 0)
        assert server.wait(60) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


@needs_erl
def test_erl_sends_to_a_python_alias_until_it_is_unaliased(erl):
    def main():
        node = erl.atom
        assert (
            erl_eval(
                erl,
                "Fwd = spawn(fun F() -> receive {fwd, To, M} -> To ! M, F() end end), "
                "register(fwd, Fwd), ok.",
            )
            == OK
        )
        fwd = (Atom("fwd"), node)
        a = alias()
        send(fwd, (Atom("fwd"), a, Atom("via_alias")))
        assert receive(Atom("via_alias"), timeout=10, default=None) == Atom("via_alias")
        assert unalias(a)
        # One connection, in order: by the time the marker comes, the send to the
        # inactive alias has been dropped.
        send(fwd, (Atom("fwd"), a, Atom("after_unalias")))
        send(fwd, (Atom("fwd"), self_pid(), Atom("marker")))
        assert receive(timeout=10) == Atom("marker")
        return nothing_left(0.2)

    assert run_node(main) == []


ERL_SLOW_SERVER = (
    "Slow = spawn(fun F() -> receive {'$gen_call', From, {sleep, Ms}} -> "
    "timer:sleep(Ms), gen_server:reply(From, late), F() end end), "
    "register(slow_server, Slow), ok."
)


@needs_erl
def test_late_replies_from_erl_are_dropped_after_a_timeout(erl):
    """rpc.call and gen_server.call to erl that time out: the reply that comes later
    (through the caller's alias, OTP's rex and gen:reply) is dropped; answered calls and
    ping still work."""

    def main():
        node = erl.atom
        assert rpc.call(node, "timer", "sleep", [1000], timeout=0.3) == (
            Atom("badrpc"),
            TIMEOUT,
        )
        assert erl_eval(erl, ERL_SLOW_SERVER) == OK
        with pytest.raises(beamvm.CallError) as e:
            gen_server.call((Atom("slow_server"), node), (Atom("sleep"), 500), timeout=0.1)
        assert e.value.reason[0] == TIMEOUT
        leaked = nothing_left(1.5)
        assert rpc.call(node, "erlang", "node", []) == node
        assert gen_server.call((Atom("slow_server"), node), (Atom("sleep"), 0)) == Atom("late")
        assert beamvm.dist.ping(node) == Atom("pong")
        return leaked, beamvm.process_info(self_pid())["aliases"]

    assert run_node(main) == ([], 0)
