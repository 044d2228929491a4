"""Ticker lateness beside each code form of the preemption catalogue (benches/pylibs/forms.py).

For every form, on one scheduler: a process spins in the form while a ticker process wakes
every 10 ms (``beamvm.sleep`` to an absolute schedule, as in B7) for ``--duration``
seconds; the ticker's lateness p50/p99/max is reported, then the spinner is killed.

    python benches/preemption_forms.py [--forms a,b,...] [--duration S] [--reps N]
                                       [--markdown] [--json]

``--markdown`` prints the table docs/preemption.md publishes (median over ``--reps``
runs of each figure, and each run's p99). Each run is a fresh interpreter with a time
limit (``--timeout``): a form the VM cannot preempt may starve the ticker for much longer
than the run, and is then reported as starved. Build the extension with
``maturin develop --release`` first. On a shared machine, run it under ``chrt -f 10``
(real-time priority) so that other load does not dominate the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "pylibs"))
import beamvm  # noqa: E402
import forms as catalogue  # noqa: E402
import harness as h  # noqa: E402
from beamvm import ANY, Atom, receive, self_pid, send, spawn  # noqa: E402

KILL = Atom("kill")
PERIOD_MS = 10


def _ticker(parent, start, p):
    t = h.Ticker(start, p["period_ms"], p["duration_ms"])
    while not t.done():
        d = t.wait_s()
        if d > 0:  # a late ticker catches up without sleeping (every miss is recorded)
            beamvm.sleep(d)
        t.tick()
    send(parent, ("ticks", [x / 1e9 for x in t.lateness]))


#: Seconds a form runs alone before the ticker starts: the functions it calls are compiled
#: on their first call, in the caller's slice (a one-time cost, reported separately).
WARMUP = 0.5


def _measure(hog, duration):
    me = self_pid()
    # A short ticker run first, alone, so that the ticker's own code is compiled before
    # its lateness counts.
    spawn(_ticker, me, h.ns(), {"period_ms": PERIOD_MS, "duration_ms": 3 * PERIOD_MS})
    receive(("ticks", ANY), timeout=60)
    pid, ref = beamvm.spawn_monitor(hog)
    beamvm.sleep(WARMUP)
    p = {"period_ms": PERIOD_MS, "duration_ms": int(duration * 1000)}
    spawn(_ticker, me, h.ns(), p)
    late = receive(("ticks", ANY), timeout=duration + 120)[1]
    beamvm.exit(pid, KILL)
    receive((Atom("DOWN"), ref, ANY, ANY, ANY), timeout=120)
    return late


def _pct(late, q):
    s = sorted(late)
    return s[max(int(len(s) * q) - 1, 0)] * 1e3


def _fmt(v):
    return "starved" if v == STARVED else f"{v:.1f}"


def measure(form, duration):
    late = beamvm.run(_measure, form.hog, duration, schedulers=1)
    return {"p50": _pct(late, 0.50), "p99": _pct(late, 0.99), "max": max(late) * 1e3}


STARVED = float("inf")


def run_child(name, duration, timeout):
    """One measurement in a fresh interpreter; figures are inf when it ran out of time."""
    cmd = [sys.executable, __file__, "--child", name, "--duration", str(duration)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        return {"p50": STARVED, "p99": STARVED, "max": STARVED}
    except subprocess.CalledProcessError as e:
        sys.stderr.write(e.stderr[-2000:])
        raise
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--forms", default="", help="comma-separated names (default: all)")
    ap.add_argument("--duration", type=float, default=1.5)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per run")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(measure(catalogue.BY_NAME[a.child], a.duration)))
        return 0
    names = [n for n in a.forms.split(",") if n] or [f.name for f in catalogue.FORMS]
    rows = []
    for name in names:
        form = catalogue.BY_NAME[name]
        runs = [run_child(name, a.duration, a.timeout) for _ in range(a.reps)]
        row = {k: statistics.median(r[k] for r in runs) for k in ("p50", "p99", "max")}
        row["p99_runs"] = sorted(r["p99"] for r in runs)
        row.update(form=name, preemptible=form.preemptible, what=form.what)
        rows.append(row)
        if a.json:
            print(json.dumps(row), flush=True)
        else:
            print(
                f"{name:20s} p50 {row['p50']:8.2f}  p99 {row['p99']:8.2f}  "
                f"max {row['max']:8.2f} ms  {'' if form.preemptible else '(not claimed)'}",
                file=sys.stderr if a.markdown else sys.stdout,
                flush=True,
            )
    if a.markdown:
        print("| form | code | claimed | p50 ms | p99 ms | max ms | p99 of each run, ms |")
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            claim = "yes" if r["preemptible"] else "no"
            figs = " | ".join(_fmt(r[k]) for k in ("p50", "p99", "max"))
            each = ", ".join(_fmt(v) for v in r["p99_runs"])
            print(f"| {r['form']} | {r['what']} | {claim} | {figs} | {each} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
