"""A TCP echo server: one beamvm process per connection, under a listener pool.

Run ``python examples/echo_server.py [port]`` (default 5555), then ``nc localhost 5555``:
every line you type comes back. ``--selftest`` starts it on a free port, talks to it
from a few client processes and exits (what tests/test_examples.py runs).
"""

from __future__ import annotations

import sys

import beamvm
from beamvm import listener, receive, tcp


def echo_conn(sock, opts):
    """Serve one connection: this process owns ``sock``; data arrives as messages."""
    tcp.setopts(sock, active="once")
    while True:
        match receive():
            case ("tcp", s, data):
                tcp.send(s, data)
                tcp.setopts(s, active="once")  # ask for the next message
            case ("tcp_closed", _) | ("tcp_error", _, _):
                return


def selftest(port: int) -> None:
    """Connect three clients and check their echoes."""
    for i in range(3):
        c = tcp.connect("127.0.0.1", port, packet="line")
        tcp.send(c, b"hello from client %d\n" % i)
        print("echo:", bytes(tcp.recv(c, timeout=10)).decode().strip())
        tcp.close(c)


def main(port: int, test: bool) -> None:
    """Start the listener; serve forever (or run the self-test)."""
    listener.start("echo", port=port, handler=echo_conn, num_acceptors=4)
    port = listener.info("echo")["port"]
    print(f"echo server on 127.0.0.1:{port} (try: nc localhost {port})", flush=True)
    if test:
        selftest(port)
        listener.stop("echo")
        return
    receive()


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    test = "--selftest" in sys.argv
    beamvm.run(main, 0 if test else int(args[0]) if args else 5555, test)
