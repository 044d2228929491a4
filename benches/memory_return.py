#!/usr/bin/env python3
"""Memory after load (issue 9, section 4), measured: prints one JSON object per figure.

    python benches/memory_return.py [--rounds 10] [--flood 1000000] [--timer-cycles 12]

* ``flood``: rounds of N messages flooded into one process, drained, receiver exited;
  RSS (MB) after each round (``memory()['total']`` beside it).
* ``timers``: cycles of 100,000 ``send_after`` created then cancelled;
  ``memory()['system']`` (KB) after each cycle.
* ``bytes``: a plain ``bytes`` of 100 MB sent to 10 processes: RSS growth (MB) while
  they hold it, and RSS after the holders died and the sender dropped it.

Each part runs in a fresh VM of one scheduler. A benchmark, not a test: the figures
depend on the machine and its load; tests/test_memory.py asserts the behaviour.
"""

from __future__ import annotations

import argparse
import gc
import json
import os

import beamvm
from beamvm import ANY, Atom, receive, self_pid, send, spawn, spawn_monitor

DOWN = Atom("DOWN")
KILL = Atom("kill")
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    """Resident set size of this process, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def _drain_and_exit(parent, n):
    receive("go")
    for _ in range(n):
        receive()
    send(parent, "drained")


def flood(rounds: int, n: int) -> dict:
    """RSS and memory() total after each drained flood round."""

    def main():
        out = []
        for _ in range(rounds):
            pid, ref = spawn_monitor(_drain_and_exit, self_pid(), n)
            for i in range(n):
                send(pid, (i, "payload"))
            send(pid, "go")
            receive("drained", timeout=600)
            receive((DOWN, ref, ANY, ANY, ANY), timeout=60)
            beamvm.sleep(0.1)
            out.append((rss(), beamvm.memory()["total"]))
        return out

    after = beamvm.run(main, schedulers=1)
    return {
        "rss_mb": [round(r / 1e6) for r, _ in after],
        "memory_total_mb": [round(m / 1e6, 1) for _, m in after],
    }


def timers(cycles: int) -> dict:
    """memory()['system'] after each cycle of 100,000 timers created and cancelled."""

    def main():
        me = self_pid()
        out = [beamvm.memory()["system"]]
        for _ in range(cycles):
            refs = [beamvm.send_after(3600, me, "x") for _ in range(100_000)]
            for r in refs:
                beamvm.cancel_timer(r)
            out.append(beamvm.memory()["system"])
        return out

    return {"system_kb": [round(b / 1e3, 1) for b in beamvm.run(main, schedulers=1)]}


def _hold(parent):
    m = receive()
    send(parent, ("got", len(m)))
    receive()


def shared_bytes() -> dict:
    """RSS growth for a 100 MB bytes sent to 10 processes, and after they died."""

    def main():
        big = os.urandom(100_000_000)
        r0 = rss()
        pids = [spawn(_hold, self_pid()) for _ in range(10)]
        for p in pids:
            send(p, big)
        for _ in pids:
            receive(("got", ANY), timeout=60)
        r1 = rss()
        for p in pids:
            beamvm.exit(p, KILL)
        beamvm.sleep(0.05)
        del big
        beamvm.sleep(0.05)
        return r0, r1, rss()

    gc.disable()
    try:
        r0, r1, r2 = beamvm.run(main, schedulers=1)
    finally:
        gc.enable()
    return {
        "rss_before_mb": round(r0 / 1e6),
        "growth_while_held_mb": round((r1 - r0) / 1e6),
        "rss_after_all_gone_mb": round(r2 / 1e6),
    }


def main() -> None:
    """Runs the parts asked for and prints their figures as JSON lines."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=10, help="flood rounds (10)")
    ap.add_argument("--flood", type=int, default=1_000_000, help="messages per round")
    ap.add_argument("--timer-cycles", type=int, default=12, help="timer cycles (12)")
    ap.add_argument("--parts", default="flood,timers,bytes")
    a = ap.parse_args()
    parts = a.parts.split(",")
    if "bytes" in parts:  # first: the flood's allocator pages would blur its RSS
        print(json.dumps({"part": "bytes", **shared_bytes()}), flush=True)
    if "timers" in parts:
        print(json.dumps({"part": "timers", **timers(a.timer_cycles)}), flush=True)
    if "flood" in parts:
        print(json.dumps({"part": "flood", "n": a.flood, **flood(a.rounds, a.flood)}), flush=True)


if __name__ == "__main__":
    main()
