#!/usr/bin/env python3
"""What call tracing costs: a call-heavy process workload with no trace, with a trace on
an unrelated function, and with a trace on the hot function itself.

    python benches/trace_overhead.py [--reps 7] [--calls 300000] [--ring 2000 --laps 20]

Workloads (one VM per repetition, medians printed as JSON lines):

* ``calls``: 4 processes each calling ``hot(i)`` ``--calls`` times (a compiled call per
  iteration: the worst case for a per-call hook);
* ``ring``: B2's shape (a ring of processes passing a token; each hop is a receive, a
  call of ``hot`` and a send).

Times are CPU seconds of the whole interpreter (``time.process_time``): on a shared,
loaded machine they vary far less than wall time. One scheduler.

Modes: ``off`` (no trace ever set), ``unrelated`` (``trace.calls`` on a function of the
same module that is never called), ``hot_match_none`` (a trace on ``hot`` whose
``match`` rejects every call: the cost of the hook itself), ``hot_lines`` (a trace on
``hot`` that writes a line per call to a list, limit above the number of calls).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import beamvm  # noqa: E402
from beamvm import receive, self_pid, send, spawn, trace  # noqa: E402


def hot(x):
    return x + 1


def never_called(x):
    return x - 1


def caller(parent, n):
    acc = 0
    for _ in range(n):
        acc = hot(acc)
    send(parent, acc)


def ring_node(nxt):
    while True:
        tok = receive()
        if tok < 0:
            send(nxt, tok)
            return
        send(nxt, hot(tok))


def _calls_main(n):
    me = self_pid()
    t0 = time.process_time()
    for _ in range(4):
        spawn(caller, me, n)
    for _ in range(4):
        receive()
    return time.process_time() - t0


def _ring_main(size, laps):
    me = self_pid()
    first = me
    nxt = me
    for _ in range(size - 1):
        nxt = spawn(ring_node, nxt)
    first = nxt
    t0 = time.process_time()
    send(first, 0)
    for _ in range(laps):
        tok = receive()
        send(first, tok)
    receive()
    dt = time.process_time() - t0
    send(first, -1)
    receive()
    return dt


def _setup(mode, sink):
    mod = __name__
    if mode == "unrelated":
        trace.calls((mod, "never_called", 1), 10**9, io=sink.append)
    elif mode == "hot_match_none":
        trace.calls((mod, "hot", 1), 10**9, io=sink.append, match=lambda a: False)
    elif mode == "hot_lines":
        trace.calls((mod, "hot", 1), 10**9, io=sink.append)


def once(workload, mode, args):
    sink: list[str] = []

    def main():
        _setup(mode, sink)
        try:
            if workload == "calls":
                return _calls_main(args.calls)
            return _ring_main(args.ring, args.laps)
        finally:
            trace.clear()

    return beamvm.run(main, schedulers=1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--calls", type=int, default=300_000)
    ap.add_argument("--ring", type=int, default=2000)
    ap.add_argument("--laps", type=int, default=20)
    ap.add_argument("--modes", default="off,unrelated,hot_match_none,hot_lines")
    ap.add_argument("--workloads", default="calls,ring")
    args = ap.parse_args()
    modes = args.modes.split(",")
    for workload in args.workloads.split(","):
        once(workload, "off", args)  # warm the compiler's caches
        times: dict[str, list[float]] = {m: [] for m in modes}
        for _ in range(args.reps):
            for m in modes:  # interleaved: drift hits every mode alike
                times[m].append(once(workload, m, args))
        base = statistics.median(times["off"])
        for m in modes:
            med = statistics.median(times[m])
            print(
                json.dumps(
                    {
                        "workload": workload,
                        "mode": m,
                        "median_cpu_s": round(med, 4),
                        "over_off": round(med / base, 3),
                        "python": sys.version.split()[0],
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
