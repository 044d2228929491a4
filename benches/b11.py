#!/usr/bin/env python3
"""B11 runner: TCP echo servers under the Rust load generator (crates/loadgen).

    python benches/b11.py [--servers a,b,...] [--connections 100,1000,10000]
                          [--hog-connections 100] [--reps 3] [--warmup 2] [--duration 10]
                          [--threads 1] [--quick] [--no-report] [--debug-build]

For each repetition and server (in turn, so slow drifts of the shared machine hit every
server alike) it starts the server on 127.0.0.1, runs the generator at each connection
count, stops the server, then does the same for the variant with one CPU-bound handler
spinning inside the server ("hog"). It prints one JSON object per metric (value = the
median of the repetitions, with min and max), writes benches/results/b11.jsonl and the
B11 section of docs/benchmarks.md. The server contract is in benches/b11/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCHES = Path(__file__).resolve().parent
ROOT = BENCHES.parent
B11 = BENCHES / "b11"
RESULTS = BENCHES / "results" / "b11.jsonl"
REPORT = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- B11 begin: written by benches/b11.py -->", "<!-- B11 end -->"

PY_SERVERS = B11 / "py_servers.py"
ERL_SERVER = B11 / "echo_server.escript"
BEAMVM_PY_SERVER = B11 / "beamvm_server.py"  # phase 2 of issue 11
BEAMVM_NATIVE_EXAMPLE = ROOT / "crates" / "vm-core" / "examples" / "echo_server.rs"

SERVERS = [
    "beamvm-py",
    "beamvm-native",
    "reactor-alone",
    "asyncio-streams",
    "asyncio-protocol",
    "uvloop-protocol",
    "gevent",
    "erlang",
]
# The brief's reference figures (the project's benchmark brief, not in this repository),
# same machine class: round trips/s at 100 / 1,000 / 10,000 connections.
REFERENCE = {
    "asyncio-streams": "102k / 81k / 42k",
    "asyncio-protocol": "185k / 159k / 93k",
    "uvloop-protocol": "224k / 195k / 107k",
    "gevent": "87k / 75k / 38k",
    "erlang": "115-130k / 88-105k / 56-58k",
    "reactor-alone": "(no reference: vm_core::io with no processes, a ceiling for native)",
}
METRICS = [  # (loadgen key, unit)
    ("round_trips_per_s", "1/s"),
    ("p50_us", "us"),
    ("p99_us", "us"),
    ("server_cpu_ms_per_1k", "ms"),
    ("loadgen_cpu_ms_per_1k", "ms"),
    ("errors", "count"),
    ("oldest_outstanding_ms", "ms"),
]
READY_TIMEOUT = 60.0  # s for a server to print READY (the first escript run compiles)


def log(msg: str) -> None:
    print(f"[b11 {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def raise_nofile(need: int) -> None:
    """Children inherit this: 10,000 connections need >10,000 descriptors each side."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, min(hard, need)) if hard != resource.RLIM_INFINITY else max(soft, need)
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < need:
        log(f"RLIMIT_NOFILE hard limit {hard} < {need}: the largest runs will fail clearly")


# ------------------------------------------------------------------- prerequisites
def ensure_erl() -> str:
    """'' if escript is usable, else the reason; installs Debian's erlang-base as root."""
    if shutil.which("escript"):
        return ""
    if shutil.which("apt-get") and os.geteuid() == 0:
        log("erl missing: apt-get install erlang-base (nothing installed by hand survives CI)")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], stdout=sys.stderr, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "erlang-base"], stdout=sys.stderr, env=env
        )
    return "" if shutil.which("escript") else "not available: escript (erlang-base) missing"


def ensure_pkgs(servers: list[str]) -> None:
    """Install benches/requirements.txt if a selected server's package is missing."""
    wanted = {"uvloop-protocol": "uvloop", "gevent": "gevent"}
    needed = {wanted[s] for s in servers if s in wanted}
    missing = sorted(m for m in needed if importlib.util.find_spec(m) is None)
    if missing:
        log(f"missing {', '.join(missing)}: pip install -r benches/requirements.txt")
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "-r", str(BENCHES / "requirements.txt")],
            stdout=sys.stderr,
        )
        importlib.invalidate_caches()


# The directory of the built generator (and of reactor_echo, built with it).
LOADGEN_DIR: list[Path] = [ROOT / "target" / "release"]


def build_loadgen(debug: bool) -> Path:
    cmd = ["cargo", "build", "-q", "-p", "loadgen", "--bins", *([] if debug else ["--release"])]
    log(" ".join(cmd))
    subprocess.run(cmd, cwd=ROOT, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    LOADGEN_DIR[0] = target / ("debug" if debug else "release")
    return LOADGEN_DIR[0] / "loadgen"


def server_command(name: str, hog: bool) -> tuple[list[str] | None, str]:
    """(argv, '') or (None, 'not available: why')."""
    h = ["--hog"] if hog else []
    if name == "reactor-alone":
        # vm_core::io's reactor with no processes (crates/loadgen/src/bin/reactor_echo.rs):
        # a ceiling for beamvm-native, built with the generator.
        if hog:
            return None, "n/a: no processes beside the reactor for a hog to compete with"
        return [str(LOADGEN_DIR[0] / "reactor_echo")], ""
    if name in ("asyncio-streams", "asyncio-protocol", "uvloop-protocol", "gevent"):
        mod = {"uvloop-protocol": "uvloop", "gevent": "gevent"}.get(name)
        if mod and importlib.util.find_spec(mod) is None:
            return None, f"not available: `import {mod}` failed"
        return [sys.executable, str(PY_SERVERS), name, *h], ""
    if name == "erlang":
        why = ensure_erl()
        return (None, why) if why else (["escript", str(ERL_SERVER), *h], "")
    if name == "beamvm-py":
        if not BEAMVM_PY_SERVER.exists():
            return None, "not available: benches/b11/beamvm_server.py does not exist yet"
        return [sys.executable, str(BEAMVM_PY_SERVER), *h], ""
    if name == "beamvm-native":
        if not BEAMVM_NATIVE_EXAMPLE.exists():
            return None, "not available: the vm-core echo_server example does not exist yet"
        # Built once, then run directly: the pid that prints READY is the server's,
        # and SIGTERM reaches it (cargo run would stand in between).
        # The profile of the generator (--debug-build: the dev profile, for tests).
        profile = LOADGEN_DIR[0].name
        release = [] if profile == "debug" else ["--release"]
        cmd = ["cargo", "build", "-q", *release, "-p", "vm-core", "--example", "echo_server"]
        if subprocess.run(cmd, cwd=ROOT).returncode != 0:
            return None, "not available: `cargo build --example echo_server` failed"
        target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
        return [str(target / profile / "examples" / "echo_server"), *h], ""
    return None, f"unknown server {name}"


# ------------------------------------------------------------------------ running
class Server:
    """A server process started per the contract: prints READY <port> <pid>."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + READY_TIMEOUT
        line = ""
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line or line.startswith("READY"):
                break
        parts = line.split()
        if len(parts) != 3 or parts[0] != "READY":
            if self.proc.poll() is None:
                self.proc.kill()
            err = self.proc.stderr.read() if self.proc.stderr else ""
            self.stop()
            raise RuntimeError(f"server did not print READY: {line!r} {err[-300:]!r}")
        self.port, self.pid = int(parts[1]), int(parts[2])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdout, self.proc.stderr):
            if f:
                f.close()


def run_loadgen(loadgen: Path, srv: Server, c: int, args: argparse.Namespace) -> dict:
    cmd = [
        str(loadgen),
        "--port", str(srv.port),
        "-c", str(c),
        "--warmup", str(args.warmup),
        "--duration", str(args.duration),
        "--threads", str(args.threads),
        "--server-pid", str(srv.pid),
    ]  # fmt: skip
    timeout = args.warmup + args.duration + 120
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(" ".join(proc.stderr.split())[-400:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def aggregate(system: str, variant: str, c: int, reps: list[dict], params: dict) -> list[dict]:
    out = []
    for key, unit in METRICS:
        vals = [float(r[key]) for r in reps if r.get(key) is not None]
        if not vals:
            continue
        out.append(
            {
                "system": system,
                "workload": "B11",
                "variant": variant,
                "connections": c,
                "metric": key,
                "value": statistics.median(vals),
                "unit": unit,
                "median": statistics.median(vals),
                "min": min(vals),
                "max": max(vals),
                "reps": len(vals),
                "params": params,
            }
        )
    return out


# ---------------------------------------------------------------------- reporting
def k(v: float) -> str:
    return f"{v / 1000:.0f}k" if v >= 10_000 else f"{v / 1000:.1f}k"


def cell(rows: dict, key: str, fmt) -> str:  # noqa: ANN001 - a formatter
    r = rows.get(key)
    if r is None:
        return "-"
    if r["min"] == r["max"]:
        return fmt(r["median"])
    return f"{fmt(r['median'])} ({fmt(r['min'])}-{fmt(r['max'])})"


def report(results: list[dict], statuses: dict, meta: dict) -> str:
    by: dict[tuple, dict] = {}
    for r in results:
        by.setdefault((r["system"], r["variant"], r["connections"]), {})[r["metric"]] = r
    conns = sorted({r["connections"] for r in results if r["variant"] == "plain"})
    hog_conns = sorted({r["connections"] for r in results if r["variant"] == "hog"})
    ms = lambda v: f"{v / 1000:.2f}"  # noqa: E731 - us -> ms
    f1 = lambda v: f"{v:.1f}"  # noqa: E731
    md = [
        BEGIN,
        "## B11: TCP echo, C connections x 64-byte round trips (Rust load generator)",
        "",
        f"Generated by `{meta['command']}` at {meta['run_at']} (1-minute load average "
        f"{meta['load']}); median of {meta['reps']} repetitions (min-max), "
        f"{meta['warmup']} s warm-up, {meta['duration']} s measured, generator "
        f"`crates/loadgen` with {meta['threads']} thread(s)"
        + (f", all at nice {meta['nice']}" if meta.get("nice") else "")
        + ". Server CPU is read from "
        "/proc/<pid>/stat over the measured window: the fairest figure when the server "
        "and the generator share the two cores. Servers: benches/b11/.",
        "",
    ]
    systems = [s for s in SERVERS if any(key[0] == s for key in statuses)]
    if conns:
        md.append(
            "| server | "
            + " | ".join(f"C={c:,}: round trips/s | p50 / p99 (ms) | CPU ms/1k" for c in conns)
            + " | the brief's reference figures (100 / 1k / 10k) |"
        )
        md.append("|---" * (1 + 3 * len(conns) + 1) + "|")
        for s in systems:
            earlier = next(
                (
                    r["run_at"]
                    for r in results
                    if (r["system"], r["variant"]) == (s, "plain") and r.get("run_at")
                ),
                None,
            )
            row = [f"{s} (measured {earlier})" if earlier else s]
            for c in conns:
                rows = by.get((s, "plain", c), {})
                if not rows:
                    row += ["-", "-", "-"]
                    continue
                row.append(cell(rows, "round_trips_per_s", k))
                row.append(f"{cell(rows, 'p50_us', ms)} / {cell(rows, 'p99_us', ms)}")
                row.append(cell(rows, "server_cpu_ms_per_1k", f1))
            row.append(REFERENCE.get(s, "-"))
            md.append("| " + " | ".join(row) + " |")
        md.append("")
    if hog_conns:
        md += [
            "With one CPU-bound handler spinning in pure Python inside the server (Erlang: "
            "one spinning process; the Python libraries' hog yields every 10 ms, the "
            "friendliest hog a cooperative loop can get):",
            "",
            "| server | C | round trips/s | % of plain | p50 / p99 (ms) | errors |",
            "|---|---|---|---|---|---|",
        ]
        for s in systems:
            for c in hog_conns:
                rows = by.get((s, "hog", c), {})
                if not rows:
                    continue
                plain = by.get((s, "plain", c), {}).get("round_trips_per_s")
                same_run = plain and plain.get("run_at") == rows["round_trips_per_s"].get("run_at")
                pct = (
                    f"{100 * rows['round_trips_per_s']['median'] / plain['median']:.1f}%"
                    if plain and plain["median"] and same_run
                    else "- (other run)"
                    if plain
                    else "-"
                )
                earlier = rows["round_trips_per_s"].get("run_at")
                name = f"{s} (measured {earlier})" if earlier else s
                md.append(
                    f"| {name} | {c:,} | {cell(rows, 'round_trips_per_s', k)} | {pct} | "
                    f"{cell(rows, 'p50_us', ms)} / {cell(rows, 'p99_us', ms)} | "
                    f"{cell(rows, 'errors', lambda v: f'{v:.0f}')} |"
                )
        md.append("")
    notes = [f"- {s}: **{st}**" for (s, _v), st in sorted(statuses.items()) if st != "ok"]
    seen = set()
    notes = [n for n in notes if not (n in seen or seen.add(n))]
    md += notes + ([""] if notes else [])
    md += [
        "Targets (issue 11): Python processes >= 1.5x asyncio streams and >= asyncio "
        "Protocol at 100 and 1,000 connections, server CPU per round trip <= asyncio "
        "Protocol's; native processes >= uvloop and >= gen_tcp; with the hog >= 80% of the "
        "plain throughput and p99 <= 10 ms.",
        END,
    ]
    return "\n".join(md)


def write_report(section: str) -> None:
    text = REPORT.read_text() if REPORT.exists() else "# beamvm benchmarks\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    REPORT.write_text(text)
    log(f"wrote the B11 section of {REPORT}")


# -------------------------------------------------------------------------- main
def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--servers", default=",".join(SERVERS))
    ap.add_argument("--connections", default="100,1000,10000")
    ap.add_argument("--hog-connections", default="100", help="'' to skip the hog variant")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=1, help="load generator threads (1)")
    ap.add_argument("--quick", action="store_true", help="1 s runs, 100 and 1,000 connections")
    ap.add_argument("--no-report", action="store_true", help="do not write docs/ or results/")
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="only rewrite the B11 section of docs/benchmarks.md from benches/results/b11.jsonl",
    )
    ap.add_argument(
        "--merge",
        action="store_true",
        help="keep the (server, variant) results of benches/results/b11.jsonl that this run "
        "does not measure (their rows say when they were measured)",
    )
    ap.add_argument("--debug-build", action="store_true", help="dev-profile loadgen (tests)")
    ap.add_argument(
        "--nice",
        type=int,
        default=0,
        help="scheduling priority for the runner, its servers and the generator (e.g. -10 "
        "on a shared machine busy with builds; negative values need root)",
    )
    args = ap.parse_args(argv)
    if args.report_only:
        meta, results, statuses = {}, [], {}
        for line in RESULTS.read_text().splitlines():
            d = json.loads(line)
            if "meta" in d:
                meta = d["meta"]
            elif "metric" in d:
                results.append(d)
                statuses.setdefault((d["system"], d["variant"]), "ok")
            else:
                statuses[(d["system"], d["variant"])] = d["status"]
        # Rows of the run the metadata describes are not marked "measured ...".
        for r in results:
            if r.get("run_at") == meta.get("run_at"):
                r.pop("run_at")
        write_report(report(results, statuses, meta))
        return 0
    if args.quick:
        args.warmup, args.duration = min(args.warmup, 0.5), min(args.duration, 1.0)
        if args.connections == "100,1000,10000":
            args.connections = "100,1000"
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    bad = [s for s in servers if s not in SERVERS]
    if bad:
        raise SystemExit(f"unknown servers: {', '.join(bad)} (known: {', '.join(SERVERS)})")
    conns, hog_conns = _ints(args.connections), _ints(args.hog_connections)
    if args.nice:
        # Inherited by every server and generator: all systems get the same priority.
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)
    raise_nofile(max([*conns, *hog_conns, 0]) + 1024)
    ensure_pkgs(servers)
    loadgen = build_loadgen(args.debug_build)
    load = os.getloadavg()[0]
    variants = [("plain", conns), *([("hog", hog_conns)] if hog_conns else [])]

    statuses: dict[tuple[str, str], str] = {}
    samples: dict[tuple[str, str, int], list[dict]] = {}
    for s in servers:
        for variant, _ in variants:
            argv_, why = server_command(s, variant == "hog")
            statuses[(s, variant)] = why or "ok"
            if why:
                line = {"system": s, "workload": "B11", "variant": variant}
                line |= {"status": why.split(":")[0], "error": why}
                print(json.dumps(line), flush=True)
    for rep in range(args.reps):
        for s in servers:
            for variant, cs in variants:
                if statuses[(s, variant)] != "ok":
                    continue
                argv_, _ = server_command(s, variant == "hog")
                assert argv_ is not None
                try:
                    srv = Server(argv_)
                except (RuntimeError, OSError) as e:
                    statuses[(s, variant)] = f"failed: rep {rep + 1}: {e}"
                    continue
                try:
                    for c in cs:
                        try:
                            r = run_loadgen(loadgen, srv, c, args)
                        except (RuntimeError, subprocess.TimeoutExpired, ValueError) as e:
                            statuses[(s, variant)] = f"failed at C={c}, rep {rep + 1}: {e}"
                            break
                        log(
                            f"rep {rep + 1} {s} {variant} C={c}: {r['round_trips_per_s']:.0f}/s "
                            f"p99 {r['p99_us']:.0f} us, CPU {r['server_cpu_ms_per_1k']} ms/1k, "
                            f"errors {r['errors']}"
                        )
                        samples.setdefault((s, variant, c), []).append(r)
                finally:
                    srv.stop()
    params = {"warmup_s": args.warmup, "duration_s": args.duration, "threads": args.threads}
    results: list[dict] = []
    for (s, variant, c), reps in samples.items():
        agg = aggregate(s, variant, c, reps, params)
        results += agg
        for r in agg:
            print(json.dumps(r), flush=True)
    for (s, variant), st in statuses.items():
        if st.startswith("failed"):
            line = {"system": s, "workload": "B11", "variant": variant}
            print(json.dumps(line | {"status": "failed", "error": st}), flush=True)
    if args.merge and RESULTS.exists():
        measured_now = set(statuses)
        for line in RESULTS.read_text().splitlines():
            d = json.loads(line)
            if "meta" in d or (d.get("system"), d.get("variant")) in measured_now:
                continue  # measured (or tried) in this run
            if "metric" in d:
                d.setdefault("run_at", "an earlier run")
                results.append(d)
                statuses.setdefault((d["system"], d["variant"]), "ok")
            else:
                statuses[(d["system"], d["variant"])] = d["status"]
    if not args.no_report:
        meta = {
            "command": "python benches/b11.py " + " ".join(argv or sys.argv[1:]),
            "run_at": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "load": f"{load:.2f} at start, {os.getloadavg()[0]:.2f} at end",
            "reps": args.reps,
            "warmup": args.warmup,
            "duration": args.duration,
            "threads": args.threads,
            "nice": args.nice,
        }
        RESULTS.parent.mkdir(exist_ok=True)
        with RESULTS.open("w") as f:
            f.write(json.dumps({"meta": meta}) + "\n")
            for r in results:
                f.write(json.dumps(r | {"run_at": r.get("run_at", meta["run_at"])}) + "\n")
            for (s, variant), st in statuses.items():
                if st != "ok":
                    f.write(json.dumps({"system": s, "variant": variant, "status": st}) + "\n")
        write_report(report(results, statuses, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
