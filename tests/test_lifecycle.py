"""Starting and stopping the VM from several threads: no deadlock, run() never hangs."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

# Each scenario runs in a fresh interpreter with a timeout: a deadlock must fail the test,
# not hang the suite.
TIMEOUT = 120


def _run(program: str) -> subprocess.CompletedProcess[str]:
    # From a file, not `-c`: process code needs source to be compiled.
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "prog.py"
        path.write_text(textwrap.dedent(program))
        return subprocess.run(
            [sys.executable, str(path)], capture_output=True, text=True, timeout=TIMEOUT
        )


def test_concurrent_start_stop_from_threads_never_deadlocks():
    # Several GIL-holding threads start and stop the VM at once. Holding the VM's lock
    # across the GIL release of a start (the old lifecycle) deadlocked here: the starter
    # waited for the GIL while a GIL holder waited for the lock.
    out = _run(
        """
        import threading
        import beamvm

        errors = []
        starts = [0]

        def churn():
            for _ in range(200):
                try:
                    beamvm.start(schedulers=1)
                    starts[0] += 1
                except RuntimeError as e:
                    if "already running" not in str(e):
                        errors.append(repr(e))
                beamvm.is_running()
                beamvm.stop()

        ts = [threading.Thread(target=churn) for _ in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        beamvm.stop()
        print("starts", starts[0], "errors", errors, "running", beamvm.is_running())
        """
    )
    assert out.returncode == 0, out.stderr
    assert "errors []" in out.stdout
    assert "running False" in out.stdout
    starts = int(out.stdout.split()[1])
    assert starts >= 1


def test_stop_from_a_thread_makes_run_return():
    out = _run(
        """
        import threading
        import time
        import beamvm

        def main():
            beamvm.receive()       # waits forever

        threading.Timer(0.3, beamvm.stop).start()
        t0 = time.monotonic()
        try:
            beamvm.run(main, schedulers=1)
        except RuntimeError as e:
            print("raised:", e)
        print("took %.1f" % (time.monotonic() - t0), "running", beamvm.is_running())
        """
    )
    assert out.returncode == 0, out.stderr
    assert "raised: beamvm was stopped (beamvm.stop() from another thread)" in out.stdout
    assert "running False" in out.stdout


def test_start_twice_says_already_running():
    out = _run(
        """
        import beamvm
        beamvm.start(schedulers=1)
        try:
            beamvm.start(schedulers=1)
        except RuntimeError as e:
            print("raised:", e)
        print(beamvm.stop(), beamvm.stop())
        """
    )
    assert out.returncode == 0, out.stderr
    assert "raised: beamvm is already running" in out.stdout
    assert "True False" in out.stdout
