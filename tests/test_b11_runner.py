"""B11's plumbing: the load generator, the peer servers and the runner work together.

Not a benchmark (no speed is asserted): it checks that every round trip the Rust
generator counts was echoed byte for byte (a wrong byte counts as an error), that the
server's CPU time was read, and that servers which do not exist yet are reported as
"not available" instead of being filled in.
beamvm's own servers (one Python / native process per connection) go through the same
checks, plain and beside a spinning process.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUNNER = ROOT / "benches" / "b11.py"


def run_b11(servers: str, connections: str, hog: str = "") -> list[dict]:
    cmd = [
        sys.executable, str(RUNNER),
        "--servers", servers,
        "--connections", connections,
        "--hog-connections", hog,
        "--reps", "1", "--warmup", "0.2", "--duration", "0.5",
        "--no-report", "--debug-build",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def metrics(lines: list[dict], system: str, c: int, variant: str = "plain") -> dict[str, float]:
    return {
        d["metric"]: d["value"]
        for d in lines
        if (d.get("system"), d.get("connections"), d.get("variant")) == (system, c, variant)
        and "metric" in d
    }


@pytest.mark.skipif(shutil.which("cargo") is None, reason="cargo builds the load generator")
def test_echo_through_the_generator_for_asyncio_the_reactor_and_beamvm():
    """asyncio's Protocol, vm_core's reactor alone and beamvm's two servers echo every
    byte back, and beamvm's keep doing so beside a spinning process."""
    lines = run_b11("asyncio-protocol,reactor-alone,beamvm-py,beamvm-native", "1,50", hog="20")
    for system in ("asyncio-protocol", "reactor-alone", "beamvm-py", "beamvm-native"):
        for c in (1, 50):
            m = metrics(lines, system, c)
            assert m["errors"] == 0, (system, m)
            assert m["round_trips_per_s"] > 0, (system, m)
            assert m["p50_us"] <= m["p99_us"], (system, m)
            assert m["server_cpu_ms_per_1k"] > 0, (system, m)
    for system in ("beamvm-py", "beamvm-native"):
        m = metrics(lines, system, 20, "hog")
        assert m["errors"] == 0 and m["round_trips_per_s"] > 0, (system, m)
    # The reactor alone has no processes for a hog to compete with: said, not faked.
    hog = [d for d in lines if (d.get("system"), d.get("variant")) == ("reactor-alone", "hog")]
    assert hog and all("metric" not in d and d.get("status") == "n/a" for d in hog), hog


@pytest.mark.skipif(shutil.which("escript") is None, reason="needs erl (Debian's erlang-base)")
@pytest.mark.skipif(shutil.which("cargo") is None, reason="cargo builds the load generator")
def test_gen_tcp_echo_plain_and_beside_a_spinning_process():
    lines = run_b11("erlang", "20", hog="20")
    for variant in ("plain", "hog"):
        m = metrics(lines, "erlang", 20, variant)
        assert m["errors"] == 0 and m["round_trips_per_s"] > 0, (variant, m)
