"""A Python node that an Erlang shell can talk to.

Run it, then in another terminal start erl with the same cookie::

    $ python examples/dist_node.py            # node py@localhost, cookie "demo"
    $ erl -sname erl@localhost -setcookie demo
    1> net_adm:ping('py@localhost').
    pong
    2> {echo, 'py@localhost'} ! {self(), hello}, flush().
    Shell got {echo,hello}
    3> rpc:call('py@localhost', pymath, add, [1, 2]).
    3
    4> gen_server:call({counter, 'py@localhost'}, {add, 5}).
    5
    5> {echo, 'py@localhost'} ! stop.

The node stops when the echo process gets ``stop`` (or after ``--seconds``).
"""

from __future__ import annotations

import argparse

import beamvm
from beamvm import ANY, Atom, dist, gen_server, receive, send


class pymath:
    """Functions erl can call with rpc:call('py@localhost', pymath, F, Args)."""

    @staticmethod
    def add(a: int, b: int) -> int:
        """Return a + b."""
        return a + b

    @staticmethod
    def upper(s: bytes) -> str:
        """Return the binary's text in capitals (a str: a UTF-8 binary for erl)."""
        return s.decode().upper()


class Counter(gen_server.GenServer):
    """gen_server:call({counter, 'py@localhost'}, get | {add, N}) from erl."""

    def init(self) -> None:
        """Start at 0."""
        self.n = 0

    def handle_call(self, request, from_):
        """Answer get and {add, N}."""
        if request == Atom("get"):
            return self.n
        if isinstance(request, tuple) and request[0] == Atom("add"):
            self.n += request[1]
            return self.n
        raise ValueError(f"unknown request {request!r}")


def echo() -> None:
    """Send {echo, Msg} back for every {Pid, Msg}; end on stop."""
    while True:
        msg = receive(ANY)
        if msg == Atom("stop"):
            return
        if isinstance(msg, tuple) and len(msg) == 2 and isinstance(msg[0], beamvm.Pid):
            send(msg[0], (Atom("echo"), msg[1]))


def main(seconds: float) -> None:
    """Expose pymath, start counter and echo, wait until echo stops."""
    print(f"node {beamvm.node()} up; try: erl -sname erl@localhost -setcookie demo")
    dist.expose("pymath", pymath)
    Counter.start_link(name="counter")
    pid, ref = beamvm.spawn_monitor(echo)
    beamvm.register("echo", pid)
    receive((Atom("DOWN"), ref, ANY, ANY, ANY), timeout=seconds, default=None)
    print("connected nodes at the end:", beamvm.nodes())


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--node", default="py@localhost")
    ap.add_argument("--cookie", default="demo")
    ap.add_argument("--seconds", type=float, default=600.0)
    a = ap.parse_args()
    beamvm.run(main, a.seconds, node=a.node, cookie=a.cookie, dist_listen="127.0.0.1")
