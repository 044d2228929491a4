"""Ticker lateness and full-collection pauses beside a process with a large live heap.

The table of docs/preemption.md, "The cyclic GC". For each heap and policy, on one
scheduler: a process builds the heap -- before the ticker starts (then it allocates alone
for ``WARMUP`` s) or while the ticker runs -- and keeps allocating records (a dict holding
a list) that live a while: young collections promote some of them, so full collections
keep coming, and most of what they keep dies soon after by its reference count. A ticker
process wakes every 10 ms for ``--duration`` s. Each run is a fresh interpreter; the
configurations are interleaved run by run, so that a slow period of a shared machine
does not fall on one of them only. Reported per run: the ticker's p99 lateness, the full
(generation 2) collections inside the ticker's window that took over 5 ms, the longest
one and their total (timed by ``gc.callbacks`` hooks that run before and after the
policy's), young collections over 5 ms, and the policy's counters.

    python benches/gc_policy.py [--heaps ints,lists,lists_during] [--policies on,off]
                                [--reps 5] [--duration 3] [--markdown] [--json]

Heaps (``--items`` sets their size, 3M by default): ``none`` (the allocating process
alone: the machine's and the harness's floor), ``ints`` a 3M-int list (one object whose
3M items a collection traverses), ``ints_during`` the same built while the ticker runs,
``ints_cycles`` the 3M-int list beside records that die in cycles (memory stays bounded:
the RSS column), ``lists`` 3M small lists, ``lists_during`` the same built while the
ticker runs. Policies: ``on`` (the policy as ``import beamvm`` installs it), ``off``
(CPython's own schedule). Build the extension with ``maturin develop --release`` first and
run under ``chrt -f 10`` on a shared machine (see the coverage table's notes).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "pylibs"))
import beamvm  # noqa: E402
import harness as h  # noqa: E402
from beamvm import ANY, Atom, _gcpolicy, receive, self_pid, send, spawn  # noqa: E402

PERIOD_MS = 10
#: Seconds the heap's owner allocates alone before the ticker starts (heaps built before).
WARMUP = 0.5
N = 3_000_000
HEAPS = ("none", "ints", "ints_cycles", "lists", "lists_during", "ints_during")
#: A collection longer than this counts as a pause in the table.
PAUSE_MS = 5.0


def build(kind, n=N):
    if kind == "none":
        return None  # the allocator alone: the machine's and the harness's floor
    if kind.startswith("ints"):
        return list(range(n))  # one object: a collection traverses its n items
    return [[i] for i in range(n)]  # n small containers


def _owner(parent, kind, n):
    live = build(kind, n)
    send(parent, "built")
    cycles = kind.endswith("_cycles")
    keep = []
    i = 0
    while True:  # records that live a while: young collections promote some of them
        rec = {"i": i, "tags": [i]}  # two tracked containers (a dict of ints is not)
        if cycles:
            rec["me"] = rec  # dies in a cycle: only a collection that examines it frees it
        keep.append(rec)
        if len(keep) > 2000:
            keep = []
        i += 1
    return live  # never reached: keeps the heap alive


def _ticker(parent, start, p):
    t = h.Ticker(start, p["period_ms"], p["duration_ms"])
    while not t.done():
        d = t.wait_s()
        if d > 0:
            beamvm.sleep(d)
        t.tick()
    send(parent, ("ticks", [x / 1e9 for x in t.lateness]))


class _Pauses:
    """Every collection's start time, generation and duration (seconds)."""

    def __init__(self):
        self.log = []
        self._t = 0.0

    def first(self, phase, info):  # runs before any other callback
        if phase == "start":
            self._t = time.perf_counter()

    def last(self, phase, info):  # runs after every other callback
        if phase == "stop":
            now = time.perf_counter()
            self.log.append((self._t, info["generation"], now - self._t))


def _measure(kind, duration, n):
    me = self_pid()
    p = {"period_ms": PERIOD_MS, "duration_ms": int(duration * 1000)}
    # The ticker's own code is compiled before its lateness counts.
    spawn(_ticker, me, h.ns(), {"period_ms": PERIOD_MS, "duration_ms": 3 * PERIOD_MS})
    receive(("ticks", ANY), timeout=60)
    during = kind.endswith("_during")
    if during:
        t0 = time.perf_counter()
        spawn(_ticker, me, h.ns(), p)
        pid, ref = beamvm.spawn_monitor(_owner, me, kind, n)
    else:
        pid, ref = beamvm.spawn_monitor(_owner, me, kind, n)
        receive("built", timeout=120)
        beamvm.sleep(WARMUP)
        t0 = time.perf_counter()
        spawn(_ticker, me, h.ns(), p)
    late = receive(("ticks", ANY), timeout=duration + 120)[1]
    t1 = time.perf_counter()
    stats = dict(_gcpolicy.stats())
    stats["rss_mb"] = round(h.rss_bytes() / 2**20)  # the heap still alive
    beamvm.exit(pid, Atom("kill"))
    receive((Atom("DOWN"), ref, ANY, ANY, ANY), timeout=120)
    return late, (t0, t1), stats


def _pct(late, q):
    s = sorted(late)
    return s[max(int(len(s) * q) - 1, 0)] * 1e3


def child(kind, policy, duration, n=N):
    pauses = _Pauses()
    if policy == "off":
        _gcpolicy.uninstall()
    gc.callbacks.insert(0, pauses.first)
    gc.callbacks.append(pauses.last)
    gc.collect()
    late, (t0, t1), stats = beamvm.run(_measure, kind, duration, n, schedulers=1)
    inside = [(g, d * 1e3) for t, g, d in pauses.log if t0 <= t <= t1]
    full = [d for g, d in inside if g == 2]
    young = [d for g, d in inside if g < 2]
    return {
        "p50": _pct(late, 0.50),
        "p99": _pct(late, 0.99),
        "max": max(late) * 1e3,
        "top": [round(x * 1e3, 1) for x in sorted(late)[-6:]],  # the six latest ticks
        "over10": sum(x > 0.010 for x in late),  # ticks over 10 ms late
        "full": len(full),
        "full_over": sum(d > PAUSE_MS for d in full),
        "full_longest": max(full, default=0.0),
        "full_total": sum(full),
        "young_over": sum(d > PAUSE_MS for d in young),
        "young_longest": max(young, default=0.0),
        "rss_mb": stats.pop("rss_mb"),
        "policy": stats,
    }


def run_child(kind, policy, duration, timeout, n=N):
    cmd = [sys.executable, __file__, "--child", f"{kind}:{policy}"]
    cmd += ["--duration", str(duration), "--items", str(n)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode:
        sys.stderr.write(out.stderr[-2000:])
        raise SystemExit(f"{kind}/{policy}: exit {out.returncode}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _span(vals, fmt="{:.1f}"):
    lo, hi = min(vals), max(vals)
    return fmt.format(lo) if lo == hi else f"{fmt.format(lo)}-{fmt.format(hi)}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--heaps", default="ints,lists,lists_during")
    ap.add_argument("--policies", default="off,on")
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--items", type=int, default=N, help="the heap's size (default 3M)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per run")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        kind, policy = a.child.split(":")
        print(json.dumps(child(kind, policy, a.duration, a.items)))
        return 0
    configs = [(k, p) for k in a.heaps.split(",") if k for p in a.policies.split(",") if p]
    runs = {c: [] for c in configs}
    for rep in range(a.reps):
        for kind, policy in configs:  # interleaved: each rep runs every configuration once
            r = run_child(kind, policy, a.duration, a.timeout, a.items)
            runs[(kind, policy)].append(r)
            if a.json:
                print(json.dumps({"heap": kind, "policy": policy, "rep": rep, **r}), flush=True)
            else:
                print(
                    f"{kind:14s} {policy:4s} p99 {r['p99']:6.1f} ms  max {r['max']:6.1f}  "
                    f"full {r['full']:3d} (>{PAUSE_MS:g} ms: {r['full_over']}, longest "
                    f"{r['full_longest']:.1f}, total {r['full_total']:.1f})  young>5ms "
                    f"{r['young_over']}  rss {r['rss_mb']:.0f} MB  {r['policy']}",
                    file=sys.stderr if a.markdown else sys.stdout,
                    flush=True,
                )
    if a.markdown:
        print(
            "| heap | policy | ticker p99 per run, ms | full GC pauses over 5 ms per run "
            "| longest | total GC pause per run | young ones over 5 ms | RSS, MB |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for (kind, policy), rs in runs.items():
            p99 = ", ".join(f"{v:.1f}" for v in sorted(r["p99"] for r in rs))
            over = _span([r["full_over"] for r in rs], "{:d}")
            longest = _span([r["full_longest"] for r in rs]) + " ms"
            total = _span([r["full_total"] for r in rs], "{:.0f}") + " ms"
            young = _span([r["young_over"] for r in rs], "{:d}")
            rss = _span([r["rss_mb"] for r in rs], "{:d}")
            print(f"| {kind} | {policy} | {p99} | {over} | {longest} | {total} | {young} | {rss} |")
        med = {c: statistics.median(r["p99"] for r in rs) for c, rs in runs.items()}
        print("\nmedian p99: " + ", ".join(f"{k}/{p} {v:.1f} ms" for (k, p), v in med.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
