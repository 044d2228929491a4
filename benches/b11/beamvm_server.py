#!/usr/bin/env python3
"""B11's beamvm-py server: one Python process per connection, ``active="once"``.

    python benches/b11/beamvm_server.py [--hog] [--port 0] [--acceptors 4]

The connections are served by a :mod:`beamvm.listener` pool (the server a user writes);
prints ``READY <port> <pid>`` and serves until SIGTERM (benches/b11/README.md).
``--hog`` adds one Python process spinning forever in pure Python: the schedulers
preempt it, so the other connections keep being served.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys

import beamvm
from beamvm import listener, receive, tcp


def echo_conn(sock, opts):
    """One connection: echo each read back, re-arming active once."""
    tcp.setopts(sock, active="once")
    while True:
        match receive():
            case ("tcp", s, data):
                tcp.send(s, data)
                tcp.setopts(s, active="once")
            case ("tcp_closed", _) | ("tcp_error", _, _):
                return


def hog():
    """CPU-bound forever, never waiting."""
    x = 0
    while True:
        x = (x * 6364136223846793005 + 1) & 0xFFFFFFFF


def main(port: int, acceptors: int, with_hog: bool) -> None:
    listener.start(
        "b11", port=port, handler=echo_conn, num_acceptors=acceptors,
        max_connections=None, backlog=1024,
    )  # fmt: skip
    if with_hog:
        beamvm.spawn(hog)
    print(f"READY {listener.info('b11')['port']} {os.getpid()}", flush=True)
    receive()  # until the VM is stopped


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--hog", action="store_true")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--acceptors", type=int, default=4)
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sys.exit(beamvm.run(main, a.port, a.acceptors, a.hog) and 0)
