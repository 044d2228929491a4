#!/usr/bin/env python3
"""What one web observer refresh costs at a million Python processes, idle and busy.

    python benches/observer_refresh.py [--processes 1000000] [--rounds 11]

Starts a VM with PROCESSES idle Python processes and ``beamvm.observer.serve_http``,
then, ROUNDS times each with the snapshot cache expired, times: the VM work of one
snapshot (``took`` and ``took_cpu`` in the JSON: wall and CPU time of the serving
thread), ``GET /api/snapshot`` end to end from a client thread,
and ``GET /metrics``; then the same while spinning Python processes keep every
scheduler busy (and hold the GIL in batches). Prints medians, min and max. Needs a
release build of the extension (``pip install .`` or ``maturin develop --release``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import beamvm  # noqa: E402
from beamvm import observer, spawn  # noqa: E402
from proc_helpers import sink, spinner  # noqa: E402

SNAPSHOT_TTL = 0.25  # vm_observer::SNAPSHOT_TTL


def fmt(xs: list[float]) -> str:
    ms = sorted(x * 1e3 for x in xs)
    return f"median {statistics.median(ms):7.1f} ms   min {ms[0]:7.1f}   max {ms[-1]:7.1f}"


def measure(url: str, rounds: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"took": [], "took_cpu": [], "snapshot": [], "metrics": []}
    for _ in range(rounds):
        time.sleep(SNAPSHOT_TTL + 0.05)
        t = time.perf_counter()
        with urllib.request.urlopen(url + "api/snapshot", timeout=60) as r:
            body = r.read()
        out["snapshot"].append(time.perf_counter() - t)
        snap = json.loads(body)
        out["took"].append(snap["took"])
        out["took_cpu"].append(snap["took_cpu"])
        t = time.perf_counter()
        with urllib.request.urlopen(url + "metrics", timeout=60) as r:
            r.read()
        out["metrics"].append(time.perf_counter() - t)
    return out


def report(title: str, m: dict[str, list[float]]) -> None:
    print(title)
    print(f"  VM work per snapshot, wall     {fmt(m['took'])}")
    print(f"  VM work per snapshot, CPU      {fmt(m['took_cpu'])}")
    print(f"  GET /api/snapshot end to end   {fmt(m['snapshot'])}")
    print(f"  GET /metrics end to end        {fmt(m['metrics'])}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--processes", type=int, default=1_000_000)
    p.add_argument("--rounds", type=int, default=11)
    args = p.parse_args()
    beamvm.start(process_limit=args.processes + 1000)
    try:
        t = time.monotonic()
        for _ in range(args.processes):
            spawn(sink)
        while beamvm.statistics_full()["run_queue_lengths"] != [0] * len(
            beamvm.statistics_full()["run_queue_lengths"]
        ):
            time.sleep(0.1)
        si = beamvm.system_info()
        print(
            f"{args.processes:,} idle Python processes in {time.monotonic() - t:.1f} s; "
            f"{si['schedulers']} schedulers"
        )
        with observer.serve_http(0) as web:
            report("idle VM:", measure(web.url, args.rounds))
            for _ in range(2 * si["schedulers"]):
                spawn(spinner)
            time.sleep(1.0)
            report(
                f"every scheduler busy ({2 * si['schedulers']} spinning Python processes):",
                measure(web.url, args.rounds),
            )
    finally:
        beamvm.stop()


if __name__ == "__main__":
    main()
