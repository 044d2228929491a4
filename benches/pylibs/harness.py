"""Shared harness for the per-system workload modules (see benches/README.md).

A workload module defines ``WORKLOADS`` (id -> function taking a params dict and
returning ``{metric: (value, unit)}``) and ``SKIPPED`` (id -> reason), then calls
``main(WORKLOADS, SKIPPED)``.  ``main`` implements the CLI contract::

    python MODULE.py WORKLOAD [--quick] [--set key=value ...]   # one repetition
    python MODULE.py --list                                      # what it defines

and prints one JSON object per metric on stdout::

    {"workload": "B3", "metric": "round_trip_p50", "value": 3412.0, "unit": "ns",
     "params": {"round_trips": 1000000}}

Sizes come from ``SIZES`` (full, quick); a module may cap them per system with
``CAPS`` (e.g. pykka cannot start 1,000,000 threads); every cap is reported in
``params`` so the tables say what was really measured.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable

ns = time.perf_counter_ns

Metrics = dict[str, tuple[float, str]]
Workload = Callable[[dict], Metrics]

# workload -> param -> (full size, quick size).  Full sizes follow the workload
# definitions (docs/benchmarks.md, 'Workloads').
SIZES: dict[str, dict[str, tuple[int, int]]] = {
    "B1": {"n": (1_000_000, 20_000)},
    "B2": {"ring": (10_000, 1_000), "laps": (100, 10)},
    "B3": {"round_trips": (1_000_000, 20_000), "warmup": (10_000, 1_000)},
    # B3 twice in one run, with a 0.2 s wait between (beamvm's "B3 after a wait").
    "B3W": {"round_trips": (1_000_000, 20_000), "warmup": (10_000, 1_000)},
    "B4": {"producers": (1_000, 100), "per_producer": (1_000, 100)},
    "B5": {"unmatched": (50_000, 50_000), "receives": (1_000, 100)},
    "B7": {"spinners": (4, 4), "period_ms": (10, 10), "duration_ms": (2_000, 500)},
    # B8: the allocator holds live_nodes small cyclic structures (~400 B each, ~100 MB)
    # and replaces them in turn while it makes cyclic garbage, so CPython runs full
    # (generation 2) collections over a realistic heap, as the project's benchmark brief
    # observed.
    "B8": {
        "period_ms": (10, 10),
        "duration_ms": (2_000, 500),
        "live_nodes": (250_000, 50_000),
        "batch": (200, 200),
    },
    "B10": {
        "idle": (100_000, 10_000),
        "round_trips": (1_000_000, 20_000),
        "warmup": (10_000, 1_000),
    },
    # B13 (the OTP layer): a) gen_server call round trips and cast throughput; b) one
    # supervisor restart per crash; c) asyncio bridge: aio.call round trips, then a 1 ms
    # asyncio ticker while `in_flight` calls wait and `spinners` processes spin; d) `n`
    # processes each awaiting asyncio.sleep(sleep_ms).
    "B13a": {"calls": (200_000, 10_000), "warmup": (5_000, 500), "casts": (1_000_000, 50_000)},
    "B13b": {"crashes": (1_000, 100)},
    "B13c": {
        "round_trips": (20_000, 2_000),
        "in_flight": (10_000, 2_000),
        "spinners": (4, 4),
        "period_ms": (1, 1),
        "duration_ms": (2_000, 500),
    },
    "B13d": {"n": (1_000, 1_000), "sleep_ms": (1_000, 1_000)},
}


def params_for(
    workload: str, quick: bool, caps: dict | None = None, overrides: dict | None = None
) -> dict:
    """Sizes for one run: full or quick, then per-system caps, then CLI overrides."""
    p = {k: (v[1] if quick else v[0]) for k, v in SIZES.get(workload, {}).items()}
    for key, cap in (caps or {}).get(workload, {}).items():
        if p.get(key, 0) > cap:
            p[key] = cap
            p.setdefault("capped", []).append(key)
    for key, val in (overrides or {}).items():
        if key in p:
            p[key] = val
    return p


def percentile(sorted_samples, q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (q in 0..100)."""
    n = len(sorted_samples)
    if n == 0:
        return float("nan")
    idx = min(n - 1, max(0, math.ceil(q / 100.0 * n) - 1))
    return float(sorted_samples[idx])


def latency_metrics(
    samples: Iterable[float],
    prefix: str,
    unit: str,
    scale: float = 1.0,
    with_max: bool = False,
    with_mean: bool = False,
) -> Metrics:
    """p50/p99 (and optionally max/mean) of raw samples, each divided by ``scale``."""
    s = sorted(samples)
    out: Metrics = {
        f"{prefix}_p50": (percentile(s, 50) / scale, unit),
        f"{prefix}_p99": (percentile(s, 99) / scale, unit),
    }
    if with_max:
        out[f"{prefix}_max"] = (s[-1] / scale, unit)
    if with_mean:
        out[f"{prefix}_mean"] = (sum(s) / len(s) / scale, unit)
    return out


_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """Resident set size of this process now (not the peak)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def settle() -> int:
    """Collect garbage and return the RSS afterwards (baseline for memory deltas)."""
    gc.collect()
    return rss_bytes()


def spawn_metrics(n: int, t_spawn: int, rss_delta: int, t_teardown: int) -> Metrics:
    """The three B1 figures from raw nanosecond timings and the RSS delta."""
    return {
        "spawn_us": (t_spawn / n / 1e3, "us"),
        "bytes_per_process": (rss_delta / n, "B"),
        "teardown_us": (t_teardown / n / 1e3, "us"),
    }


class Ticker:
    """Absolute-schedule ticker bookkeeping for B7/B8.

    The ticker wants to wake at start + k*period for k = 1..count.  ``wait_ns()``
    says how long to sleep for the next tick (0 when late: a starved ticker then
    catches up without sleeping, and every missed tick records its full lateness);
    ``tick()`` records the lateness of the tick just woken for.
    """

    def __init__(self, start_ns: int, period_ms: int, duration_ms: int):
        self.start = start_ns
        self.period = period_ms * 1_000_000
        self.count = duration_ms // period_ms
        self.k = 1
        self.lateness: list[int] = []

    def done(self) -> bool:
        return self.k > self.count

    def wait_s(self) -> float:
        return max(0, self.start + self.k * self.period - ns()) / 1e9

    def tick(self) -> None:
        self.lateness.append(ns() - (self.start + self.k * self.period))
        self.k += 1

    def metrics(self) -> Metrics:
        out = latency_metrics(self.lateness, "lateness", "ms", scale=1e6, with_max=True)
        out["ticks"] = (float(len(self.lateness)), "count")
        return out


def spin_until(deadline_ns: int) -> int:
    """Burn CPU without yielding until the deadline; returns loop iterations."""
    i = 0
    while ns() < deadline_ns:
        i += 1
    return i


def make_live_node(i: int) -> dict:
    """A small live structure containing a reference cycle (dict <-> list)."""
    d = {"id": i, "payload": (i, i + 1)}
    d["self"] = [d, i]
    return d


def make_cyclic_garbage(i: int) -> None:
    """Allocate and drop a small reference cycle that only the cyclic GC can free."""
    a = [i]
    b = {"a": a}
    a.append(b)


def gen2_collections() -> int:
    return gc.get_stats()[2]["collections"]


def churn(live: list, i: int, batch: int) -> int:
    """One allocator batch for B8: cyclic garbage plus replacing live entries."""
    n = len(live)
    for j in range(i, i + batch):
        make_cyclic_garbage(j)
        live[j % n] = make_live_node(j)
    return i + batch


def build_live(n: int) -> list:
    return [make_live_node(i) for i in range(n)]


def gc_metrics(gen2_before: int) -> Metrics:
    return {"gen2_collections": (float(gen2_collections() - gen2_before), "count")}


def _parse_set(values: list[str]) -> dict:
    out = {}
    for item in values:
        key, _, val = item.partition("=")
        out[key] = int(val)
    return out


def main(
    workloads: dict[str, Workload],
    skipped: dict[str, str] | None = None,
    caps: dict | None = None,
    argv: list[str] | None = None,
) -> int:
    """CLI entry point shared by every workload module (the JSON-line contract)."""
    skipped = skipped or {}
    ap = argparse.ArgumentParser(description="Run one repetition of one workload.")
    ap.add_argument("workload", nargs="?")
    ap.add_argument("--quick", action="store_true", help="small sizes for development")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=INT",
        help="override a size parameter, e.g. --set n=200000",
    )
    ap.add_argument(
        "--list",
        action="store_true",
        help="print the workloads this module defines and skips, as JSON",
    )
    args = ap.parse_args(argv)
    if args.list:
        print(json.dumps({"workloads": sorted(workloads), "skipped": skipped}))
        return 0
    if args.workload in skipped:
        print(f"{args.workload} skipped: {skipped[args.workload]}", file=sys.stderr)
        return 3
    if args.workload not in workloads:
        ap.error(f"unknown workload {args.workload!r}; defined: {sorted(workloads)}")
    p = params_for(args.workload, args.quick, caps, _parse_set(args.set))
    metrics = workloads[args.workload](dict(p))
    for metric, (value, unit) in metrics.items():
        print(
            json.dumps(
                {
                    "workload": args.workload,
                    "metric": metric,
                    "value": value,
                    "unit": unit,
                    "params": p,
                }
            ),
            flush=True,
        )
    return 0
