#!/usr/bin/env python3
"""Benchmark orchestrator: runs workloads B1-B10 for every system, writes the report.

    python benches/run.py [--quick] [--reps N] [--systems a,b,...] [--workloads B1,B2,...]
                          [--set B1.n=200000] [--timeout S] [--merge] [--no-report]

For each (system, workload) it runs N repetitions, each in a fresh interpreter
with a timeout, and prints one JSON object per metric on stdout (value = median of
the repetitions).  It writes docs/benchmarks.md, docs/benchmarks.png and the raw
results to benches/results/latest.jsonl (``--merge`` keeps results of systems or
workloads not measured in this run).  See benches/README.md for the contracts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCHES = Path(__file__).resolve().parent
ROOT = BENCHES.parent
DOCS = ROOT / "docs"
RESULTS = BENCHES / "results" / "latest.jsonl"

ALL_WORKLOADS = [
    "B1", "B1b", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B10",
    "B13a", "B13b", "B13c", "B13d",
]
LIBRARIES = {  # system -> (module path, third-party import it needs)
    "asyncio": (BENCHES / "pylibs" / "asyncio_lib.py", None),
    "uvloop": (BENCHES / "pylibs" / "uvloop_lib.py", "uvloop"),
    "gevent": (BENCHES / "pylibs" / "gevent_lib.py", "gevent"),
    "pykka": (BENCHES / "pylibs" / "pykka_lib.py", "pykka"),
}
BEAMVM_PY = BENCHES / "beamvm_py.py"
ALL_SYSTEMS = [*LIBRARIES, "beamvm-py", "beamvm-native"]
NATIVE_CMD = ["cargo", "run", "--release", "-p", "vm-core", "--example", "workloads", "--"]

WORKLOAD_TITLES = {
    "B1": "spawn N processes that each block in receive; then kill them",
    "B1b": "spawn past the process limit",
    "B2": "ring of 10,000 processes, token passed 100 laps (1,000,000 messages)",
    "B3": "ping-pong between two processes, 1,000,000 round trips",
    "B4": "fan-in: 1,000 producers x 1,000 messages to one consumer",
    "B5": "selective receive with 50,000 unmatched messages queued",
    "B6": "a 100 MB binary sent to 10 processes",
    "B7": "fairness: 1 scheduler, 4 processes spinning, 1 ticker every 10 ms for 2 s",
    "B8": "GC isolation: 1 process allocating (cyclic) garbage, 1 ticker as in B7",
    "B9": "B2 with 1 scheduler vs all schedulers (and 4 independent rings)",
    "B10": "B3 while 100,000 idle processes exist",
    "B13a": "gen_server call round trip (pykka: ask; asyncio: Queue + Future server) and "
    "cast throughput, one scheduler",
    "B13b": "supervisor restart: a one_for_one child's crash to its replacement answering "
    "a call, reports on the default logger level",
    "B13c": "asyncio bridge: await aio.call round trip; 1 ms asyncio ticker while 10,000 "
    "aio.calls are in flight and 4 processes spin",
    "B13d": "1,000 processes each await asyncio.sleep(1): time until all are done",
}

# Erlang/OTP 25.2.3 (JIT) on the project machine: the brief's reference figures (the
# project's benchmark brief, not in this repository; the workloads are defined in
# docs/benchmarks.md's 'Workloads' section, from benches/NOTES.md):
# (workload, metric) -> (text shown, number used for the plot or None).
BEAM_REF: dict[tuple[str, str], tuple[str, float | None]] = {
    ("B1", "spawn_us"): ("2.0 (1.5 warm)", 2.0),
    ("B1", "bytes_per_process"): ("2,647", 2647.0),
    ("B1", "teardown_us"): ("1.5", 1.5),
    ("B2", "msgs_per_s"): ("4.1", 4.1e6),
    ("B3", "round_trip_p50"): ("490-530", 510.0),
    ("B3", "round_trip_p99"): ("560-750", 650.0),
    ("B3", "round_trip_mean"): ("~480", 480.0),
    ("B4", "msgs_per_s"): ("5.1 (11.9 off_heap)", 5.1e6),
    ("B5", "ref_receive_us"): ("0.14-0.6 (receive marker)", 0.37),
    ("B5", "tag_receive_us"): ("121 (linear scan)", 121.0),
    ("B7", "lateness_p50"): ("1.00", 1.0),
    ("B7", "lateness_p99"): ("1.01", 1.01),
    ("B8", "lateness_p99"): ("1.05-1.2; 2.2 with 200 MB live", 2.2),
    ("B8", "lateness_max"): ("6.8 with 200 MB live", 6.8),
    ("B10", "round_trip_p50"): ("470-480", 475.0),
    # Issue 10's measurements on the project machine (one scheduler).
    ("B13a", "call_p50"): ("970", 970.0),
    ("B13a", "casts_per_s"): ("6.1", 6.1e6),
    ("B13b", "restart_p50"): ("197 (reports to a file); 14 logging off", 197.0),
}
BEAM_NOTES = {
    "B1b": "BEAM: default limit 262,144; `{error, system_limit}`, the VM keeps running.",
    "B6": "BEAM: 0 extra for a 100 MiB binary sent 10 times (0.065 MiB); a 100 MiB list "
    "sent 10 times adds ~1.9 GiB until the receivers collect.",
    "B9": "BEAM: 4 independent rings 4.4 M msg/s on 1 scheduler, 3.3 M on 2; pure CPU "
    "work scales 1.95x.",
}
# The brief's reference figures for the Python libraries (same machine, CPython 3.11.7).
LIB_REF: dict[tuple[str, str, str], float] = {}
for _sys, _vals in {
    "asyncio": [33.7, 4582, 0.33e6, 5200, 7100, 2.8e6, 1803, 990, 1970, 125, 152],
    "uvloop": [33.7, 4583, 0.47e6, 3500, 5100, 2.8e6, 1825, None, None, 170, 202],
    "gevent": [39.4, 10750, 0.37e6, 3600, 5400, 7.8e6, 1802, None, None, 146, 179],
    "pykka": [200, 22600, 0.05e6, 48600, 72200, 0.13e6, 1823, 26.5, 129, 144, 155],
}.items():
    for _key, _v in zip(
        [
            ("B1", "spawn_us"),
            ("B1", "bytes_per_process"),
            ("B2", "msgs_per_s"),
            ("B3", "round_trip_p50"),
            ("B3", "round_trip_p99"),
            ("B4", "msgs_per_s"),
            ("B5", "ref_receive_us"),
            ("B7", "lateness_p50"),
            ("B7", "lateness_p99"),
            ("B8", "lateness_p99"),
            ("B8", "lateness_max"),
        ],
        _vals,
        strict=True,
    ):
        if _v is not None:
            LIB_REF[(_sys, *_key)] = float(_v)

# Figures on the plot: (workload, metric, label).
PLOT_METRICS = [
    ("B1", "spawn_us", "B1 spawn"),
    ("B1", "bytes_per_process", "B1 bytes/proc"),
    ("B2", "msgs_per_s", "B2 ring"),
    ("B3", "round_trip_p50", "B3 RTT p50"),
    ("B4", "msgs_per_s", "B4 fan-in"),
    ("B5", "ref_receive_us", "B5 ref recv"),
    ("B7", "lateness_p99", "B7 p99"),
    ("B8", "lateness_p99", "B8 p99"),
    ("B10", "round_trip_p50", "B10 RTT p50"),
]
HIGHER_IS_BETTER = {"msgs/s"}


def log(msg: str) -> None:
    print(f"[run.py {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------- requirements
def ensure_requirements(systems: list[str], want_plot: bool) -> dict[str, str]:
    """Install benches/requirements.txt if a needed package is missing.

    Returns {system: reason} for systems whose package still cannot be imported.
    """
    needed = {s: LIBRARIES[s][1] for s in systems if s in LIBRARIES and LIBRARIES[s][1]}
    mods = set(needed.values()) | ({"matplotlib"} if want_plot else set())
    missing = sorted(m for m in mods if importlib.util.find_spec(m) is None)
    if missing:
        log(
            f"missing packages {', '.join(missing)}: running `{sys.executable} -m pip "
            f"install -r benches/requirements.txt` (nothing installed by hand survives CI)"
        )
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-r", str(BENCHES / "requirements.txt")],
            stdout=sys.stderr,
        )
        if proc.returncode != 0:
            log(f"pip install failed (exit {proc.returncode}); those systems are skipped")
        importlib.invalidate_caches()
    return {
        s: f"not available: `import {m}` failed (pip install -r benches/requirements.txt)"
        for s, m in needed.items()
        if importlib.util.find_spec(m) is None
    }


# ---------------------------------------------------------------------- running
def _tail(text: str, n: int = 400) -> str:
    text = " ".join((text or "").strip().split())
    return text if len(text) <= n else "..." + text[-n:]


def list_module(path: Path) -> tuple[dict | None, str]:
    """Ask a workload module what it defines (``--list``)."""
    try:
        proc = subprocess.run(
            [sys.executable, str(path), "--list"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired:
        return None, "`--list` timed out"
    if proc.returncode != 0:
        return None, f"`--list` failed (exit {proc.returncode}): {_tail(proc.stderr)}"
    try:
        info = json.loads(proc.stdout.strip().splitlines()[-1])
        return {"workloads": list(info["workloads"]), "skipped": dict(info.get("skipped", {}))}, ""
    except (ValueError, KeyError, IndexError):
        return None, f"`--list` printed no JSON object: {_tail(proc.stdout)}"


def beamvm_py_available() -> tuple[dict | None, str]:
    if not BEAMVM_PY.exists():
        return None, "not available: benches/beamvm_py.py does not exist yet"
    proc = subprocess.run(
        [sys.executable, "-c", "import beamvm"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    if proc.returncode != 0:
        return None, f"not available: `import beamvm` failed: {_tail(proc.stderr, 200)}"
    info, err = list_module(BEAMVM_PY)
    return info, (f"not available: {err}" if info is None else "")


def run_rep(
    path: Path, workload: str, quick: bool, sets: list[str], timeout: float
) -> tuple[list[dict], str]:
    """One repetition in a fresh interpreter: (JSON lines, error or '')."""
    cmd = [sys.executable, str(path), workload, *(["--quick"] if quick else [])]
    for s in sets:
        cmd += ["--set", s]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return [], f"timed out after {timeout:.0f} s"
    lines = _json_lines(proc.stdout)
    log(f"  {path.name} {workload}: exit {proc.returncode} in {time.monotonic() - t0:.1f} s")
    if proc.returncode != 0:
        return lines, f"exit {proc.returncode}: {_tail(proc.stderr)}"
    if not lines:
        return [], f"printed no JSON lines; stderr: {_tail(proc.stderr)}"
    return lines, ""


def _json_lines(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                d = json.loads(line)
            except ValueError:
                continue
            if "metric" in d and "value" in d:
                out.append(d)
    return out


def aggregate(system: str, workload: str, reps_lines: list[list[dict]]) -> list[dict]:
    """Median/min/max per metric across repetitions."""
    values: dict[str, list[float]] = {}
    meta: dict[str, dict] = {}
    for lines in reps_lines:
        for d in lines:
            values.setdefault(d["metric"], []).append(float(d["value"]))
            meta.setdefault(d["metric"], d)
    out = []
    for metric, vals in values.items():
        out.append(
            {
                "system": system,
                "workload": workload,
                "metric": metric,
                "value": statistics.median(vals),
                "unit": meta[metric].get("unit", ""),
                "median": statistics.median(vals),
                "min": min(vals),
                "max": max(vals),
                "reps": len(vals),
                "params": meta[metric].get("params", {}),
            }
        )
    return out


def run_native(workloads: list[str], quick: bool, timeout: float) -> dict:
    """beamvm-native: one cargo run for all workloads; it takes its own medians."""
    if shutil.which("cargo") is None:
        return {"error": "not available: cargo is not on PATH"}
    env = dict(os.environ, BEAMVM_BENCH_QUICK="1" if quick else "0")
    log(f"beamvm-native: {' '.join(NATIVE_CMD + workloads)}")
    try:
        proc = subprocess.run(
            NATIVE_CMD + workloads,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s (includes the cargo build)"}
    lines = _json_lines(proc.stdout)
    err = (
        ""
        if proc.returncode == 0
        else (
            f"not available: `cargo run ... --example workloads` exit {proc.returncode}: "
            f"{_tail(proc.stderr)}"
        )
    )
    by_workload: dict[str, list[dict]] = {}
    for d in lines:
        med = float(d.get("median", d["value"]))
        by_workload.setdefault(d.get("workload", "?"), []).append(
            {
                "system": "beamvm-native",
                "workload": d.get("workload", "?"),
                "metric": d["metric"],
                "value": float(d["value"]),
                "unit": d.get("unit", ""),
                "median": med,
                "min": float(d.get("min", med)),
                "max": float(d.get("max", med)),
                "reps": d.get("reps", "native"),
                "params": d.get("params", {}),
            }
        )
    return {"error": err, "by_workload": by_workload}


# ---------------------------------------------------------------------- reporting
def fmt(v: float, unit: str = "") -> str:
    if v is None or v != v:
        return "-"
    if unit == "msgs/s":
        return f"{v / 1e6:.3g}"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


UNIT_LABEL = {"us": "µs", "msgs/s": "M msg/s"}


def fmt_params(p: dict) -> str:
    parts = [f"{k}={v:,}" for k, v in p.items() if k != "capped" and isinstance(v, int)]
    if p.get("capped"):
        parts.append(f"capped: {', '.join(p['capped'])}")
    return ", ".join(parts)


def machine_info() -> str:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu or platform.processor()}, {os.cpu_count()} cores, "
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


def lib_versions() -> str:
    from importlib import metadata

    out = []
    for name in ("uvloop", "gevent", "greenlet", "pykka"):
        try:
            out.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    return ", ".join(out)


def write_report(results: list[dict], statuses: dict, meta: dict) -> None:
    DOCS.mkdir(exist_ok=True)
    systems = [s for s in ALL_SYSTEMS if any(k[0] == s for k in statuses)]
    by_key: dict[tuple[str, str], list[dict]] = {}
    for r in results:
        by_key.setdefault((r["system"], r["workload"]), []).append(r)
    workloads = [w for w in ALL_WORKLOADS if any(k[1] == w for k in statuses)]
    md = [
        "# beamvm benchmarks",
        "",
        "Generated by `benches/run.py`; do not edit by hand (notes come from "
        "`benches/NOTES.md`). Workloads are defined under 'Workloads' below; the BEAM "
        "and library reference figures are the brief's reference figures (the project's "
        "benchmark brief, not in this repository); every cell is the "
        "median of the repetitions, with min-max in brackets. Ratios are only meaningful "
        "within one run on one machine.",
        "",
        f"- command: `{meta['command']}`",
        f"- run at: {meta['run_at']}; machine: {meta['machine']}",
        f"- libraries: {meta['versions'] or 'n/a'}",
        f"- 1-minute load average of the (shared, 2-core) machine: {meta['load']}",
        f"- mode: {'quick (development sizes)' if meta['quick'] else 'full sizes'}; "
        f"repetitions: {meta['reps']} (beamvm-native takes its own medians)",
        "",
    ]
    if meta.get("merged"):
        md += [f"- merged with earlier results for: {', '.join(meta['merged'])}", ""]
    md += ["![Figures relative to asyncio](benchmarks.png)", ""]
    notes_file = BENCHES / "NOTES.md"
    if notes_file.exists():
        md += [notes_file.read_text().strip(), ""]
    for w in workloads:
        md += [f"## {w}: {WORKLOAD_TITLES.get(w, '')}", ""]
        metrics: list[tuple[str, str]] = []
        for s in systems:
            for r in by_key.get((s, w), []):
                if (r["metric"], r["unit"]) not in metrics:
                    metrics.append((r["metric"], r["unit"]))
        for key in BEAM_REF:
            if key[0] == w and not any(m == key[1] for m, _ in metrics):
                metrics.append((key[1], ""))
        if metrics:
            md.append("| metric | " + " | ".join(systems) + " | BEAM (OTP 25, reference) |")
            md.append("|---" * (len(systems) + 2) + "|")
            for metric, unit in metrics:
                row = [f"{metric} ({UNIT_LABEL.get(unit, unit)})" if unit else metric]
                for s in systems:
                    r = next((x for x in by_key.get((s, w), []) if x["metric"] == metric), None)
                    if r is None:
                        row.append("-")
                    elif r["min"] == r["max"]:
                        row.append(fmt(r["median"], unit))
                    else:
                        row.append(
                            f"{fmt(r['median'], unit)} ({fmt(r['min'], unit)}-"
                            f"{fmt(r['max'], unit)})"
                        )
                row.append(BEAM_REF.get((w, metric), ("",))[0] or "-")
                md.append("| " + " | ".join(row) + " |")
            md.append("")
        if w in BEAM_NOTES:
            md += [BEAM_NOTES[w], ""]
        notes = []
        for s in systems:
            st = statuses.get((s, w))
            if st is None:
                continue
            params = next(
                (fmt_params(r["params"]) for r in by_key.get((s, w), []) if r.get("params")), ""
            )
            if st["status"] == "ok":
                rows = by_key.get((s, w), [])
                reps = rows[0]["reps"] if rows else None
                if isinstance(reps, int) and reps != meta["reps"]:
                    params += f"; {reps} repetition{'s' if reps > 1 else ''}"
                if rows and rows[0].get("run_at", meta["run_at"]) != meta["run_at"]:
                    params += f"; measured {rows[0]['run_at']}"
                if params:
                    notes.append(f"- {s}: {params}")
            else:
                extra = f" (sizes: {params})" if params else ""
                note = st["note"].removeprefix(st["status"] + ": ")
                notes.append(f"- {s}: **{st['status']}**: {note}{extra}")
        md += notes + ([""] if notes else [])
    cmp_rows = []
    for (s, w, m), ref in LIB_REF.items():
        r = next((x for x in by_key.get((s, w), []) if x["metric"] == m), None)
        if r is not None and ref:
            unit = UNIT_LABEL.get(r["unit"], r["unit"])
            cmp_rows.append(
                f"| {s} | {w} | {m} ({unit}) | {fmt(r['median'], r['unit'])} | "
                f"{fmt(ref, r['unit'])} | {r['median'] / ref:.2f} |"
            )
    if cmp_rows:
        md += [
            "## Measured here vs the brief's reference figures (Python libraries, same "
            "machine class)",
            "",
            "| system | workload | metric | measured | the brief's reference figures | ratio |",
            "|---|---|---|---|---|---|",
            *cmp_rows,
            "",
        ]
    # Keep the sections other tools write between markers (`<!-- B11 begin ...` and
    # `<!-- B11 end -->`: benches/b11.py; B12: the vm-dist example, written up by hand).
    old_text = (DOCS / "benchmarks.md").read_text() if (DOCS / "benchmarks.md").exists() else ""
    md += kept_sections(old_text)
    (DOCS / "benchmarks.md").write_text("\n".join(md))
    log(f"wrote {DOCS / 'benchmarks.md'}")
    try:
        write_plot(by_key, systems)
    except Exception as e:  # noqa: BLE001 - the report must not die on a plot
        log(f"plot skipped: {e!r}")


def kept_sections(text: str) -> list[str]:
    """The `<!-- NAME begin ... --> ... <!-- NAME end -->` sections of `text`, each kept
    whole (markers included), in their order."""
    kept = []
    for m in re.finditer(r"<!-- (\S+) begin.*?<!-- \1 end -->", text, re.DOTALL):
        kept += [m.group(0), ""]
    return kept


def write_plot(by_key: dict, systems: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def val(s: str, w: str, m: str) -> float | None:
        if s == "BEAM":
            return BEAM_REF.get((w, m), ("", None))[1]
        r = next((x for x in by_key.get((s, w), []) if x["metric"] == m), None)
        return r["median"] if r else None

    cols = [(w, m, label) for w, m, label in PLOT_METRICS if val("asyncio", w, m)]
    series = [s for s in [*systems, "BEAM"] if any(val(s, w, m) for w, m, _ in cols)]
    if not cols or not series:
        log("plot skipped: no asyncio baseline in these results")
        return
    fig, ax = plt.subplots(figsize=(max(8, 1.4 * len(cols)), 5), dpi=110)
    width = 0.8 / len(series)
    for i, s in enumerate(series):
        xs, ys = [], []
        for j, (w, m, _) in enumerate(cols):
            v, base = val(s, w, m), val("asyncio", w, m)
            if v and base and v > 0:
                unit = next(
                    (x["unit"] for x in by_key.get(("asyncio", w), []) if x["metric"] == m), ""
                )
                ys.append(v / base if unit in HIGHER_IS_BETTER else base / v)
                xs.append(j + (i - (len(series) - 1) / 2) * width)
        ax.bar(xs, ys, width, label=s + (" (reference)" if s == "BEAM" else ""))
    ax.set_yscale("log")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(cols)), [c[2] for c in cols], rotation=30, ha="right")
    ax.set_ylabel("better than asyncio by (x), log scale")
    ax.set_title("beamvm benchmarks: each figure relative to asyncio (higher is better)")
    ax.legend(fontsize=8, ncol=2)
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(DOCS / "benchmarks.png")
    plt.close(fig)
    log(f"wrote {DOCS / 'benchmarks.png'}")


def load_results() -> tuple[dict, list[dict], dict]:
    """Read benches/results/latest.jsonl: (run metadata, metric rows, statuses)."""
    meta: dict = {
        "command": "(unknown)",
        "run_at": "",
        "machine": "",
        "versions": "",
        "quick": False,
        "load": "(not recorded)",
        "reps": 3,
        "merged": [],
    }
    results: list[dict] = []
    statuses: dict[tuple[str, str], dict] = {}
    for line in RESULTS.read_text().splitlines():
        d = json.loads(line)
        if "meta" in d:
            meta.update(d["meta"])
        elif "metric" in d:
            results.append(d)
            statuses.setdefault((d["system"], d["workload"]), {"status": "ok", "note": ""})
        else:
            statuses[(d["system"], d["workload"])] = {"status": d["status"], "note": d["note"]}
    return meta, results, statuses


# ---------------------------------------------------------------------- main
def _csv(text: str, allowed: list[str], what: str) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in items if x not in allowed]
    if bad:
        raise SystemExit(f"unknown {what}: {', '.join(bad)} (known: {', '.join(allowed)})")
    return items


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, for development")
    ap.add_argument("--reps", type=int, default=3, help="repetitions per workload (3)")
    ap.add_argument("--systems", default=",".join(ALL_SYSTEMS))
    ap.add_argument("--workloads", default=",".join(ALL_WORKLOADS))
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="W.KEY=INT",
        help="override a size for the Python modules, e.g. --set B1.n=200000",
    )
    ap.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds per repetition (default 600, quick 120)",
    )
    ap.add_argument(
        "--native-timeout",
        type=float,
        default=1800,
        help="seconds for the whole beamvm-native cargo run, build included",
    )
    ap.add_argument(
        "--merge",
        action="store_true",
        help="keep earlier results (benches/results/latest.jsonl) for the "
        "(system, workload) pairs not run now",
    )
    ap.add_argument("--no-report", action="store_true", help="do not write docs/")
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="only rewrite docs/ from benches/results/latest.jsonl",
    )
    args = ap.parse_args(argv)
    if args.report_only:
        meta, results, statuses = load_results()
        write_report(results, statuses, meta)
        return 0
    systems = _csv(args.systems, ALL_SYSTEMS, "systems")
    workloads = _csv(args.workloads, ALL_WORKLOADS, "workloads")
    timeout = args.timeout or (120 if args.quick else 600)
    sets: dict[str, list[str]] = {}
    for s in args.set:
        w, _, kv = s.partition(".")
        sets.setdefault(w, []).append(kv)

    load_start = os.getloadavg()
    unavailable = ensure_requirements(systems, not args.no_report)
    modules: dict[str, tuple[Path, dict]] = {}
    statuses: dict[tuple[str, str], dict] = {}
    results: list[dict] = []

    def mark(system: str, status: str, note: str, ws: list[str]) -> None:
        for w in ws:
            statuses[(system, w)] = {"status": status, "note": note}
            print(
                json.dumps({"system": system, "workload": w, "status": status, "error": note}),
                flush=True,
            )

    for s in systems:
        if s == "beamvm-native":
            continue
        if s in unavailable:
            mark(s, "not available", unavailable[s], workloads)
            continue
        if s == "beamvm-py":
            info, err = beamvm_py_available()
            path = BEAMVM_PY
        else:
            path = LIBRARIES[s][0]
            info, err = list_module(path)
        if info is None:
            mark(s, "not available", err, workloads)
            continue
        modules[s] = (path, info)
        for w in workloads:
            if w in info["skipped"]:
                mark(s, "n/a", info["skipped"][w], [w])
            elif w not in info["workloads"]:
                mark(s, "n/a", "not defined by the module", [w])

    if "beamvm-native" in systems:
        nat = run_native(workloads, args.quick, args.native_timeout)
        got = nat.get("by_workload", {})
        for w in workloads:
            if got.get(w):
                results += got[w]
                statuses[("beamvm-native", w)] = {"status": "ok", "note": nat["error"]}
                for r in got[w]:
                    print(json.dumps(r), flush=True)
            else:
                mark(
                    "beamvm-native",
                    "not available" if nat["error"] else "n/a",
                    nat["error"] or "not reported by the workloads example",
                    [w],
                )

    for w in workloads:
        todo = [s for s in modules if (s, w) not in statuses]
        if not todo:
            continue
        log(f"{w}: {', '.join(todo)} x {args.reps} reps")
        reps_lines: dict[str, list[list[dict]]] = {s: [] for s in todo}
        errors: dict[str, str] = {}
        for rep in range(args.reps):
            for s in todo:
                if s in errors:
                    continue
                lines, err = run_rep(modules[s][0], w, args.quick, sets.get(w, []), timeout)
                if err:
                    errors[s] = f"rep {rep + 1}: {err}"
                else:
                    reps_lines[s].append(lines)
        for s in todo:
            if errors.get(s):
                mark(s, "failed", errors[s], [w])
                continue
            agg = aggregate(s, w, reps_lines[s])
            results += agg
            statuses[(s, w)] = {"status": "ok", "note": ""}
            for r in agg:
                print(json.dumps(r), flush=True)

    run_at = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    for r in results:
        r.setdefault("run_at", run_at)
    merged: list[str] = []
    if args.merge and RESULTS.exists():
        done = set(statuses)
        _, old_results, old_statuses = load_results()
        for key in [*old_statuses, *((d["system"], d["workload"]) for d in old_results)]:
            if key not in done and f"{key[0]} {key[1]}" not in merged:
                merged.append(f"{key[0]} {key[1]}")
        results += [d for d in old_results if (d["system"], d["workload"]) not in done]
        for key, st in old_statuses.items():
            if key not in done:
                statuses[key] = st
    if not args.no_report:
        meta = {
            "command": "python benches/run.py " + " ".join(argv or sys.argv[1:]),
            "run_at": run_at,
            "machine": machine_info(),
            "versions": lib_versions(),
            "quick": args.quick,
            "load": f"{load_start[0]:.2f} at start, {os.getloadavg()[0]:.2f} at end",
            "reps": args.reps,
            "merged": merged,
        }
        RESULTS.parent.mkdir(exist_ok=True)
        with RESULTS.open("w") as f:
            f.write(json.dumps({"meta": meta}) + "\n")
            for r in results:
                f.write(json.dumps(r) + "\n")
            for (s, w), st in statuses.items():
                if st["status"] != "ok":
                    f.write(json.dumps({"system": s, "workload": w, **st}) + "\n")
        write_report(results, statuses, meta)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
