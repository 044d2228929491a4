"""Ctrl-C (SIGINT) in beamvm.run stops the VM cleanly and raises KeyboardInterrupt."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

PROGRAM = textwrap.dedent(
    """
    import signal
    import sys
    import beamvm

    # A shell may start background jobs with SIGINT ignored; restore Python's default
    # handler so the test does not depend on how it was launched.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def spin():
        x = 0
        while True:
            x += 1

    def main():
        for _ in range(3):
            beamvm.spawn(spin)
        print("ready", flush=True)
        beamvm.receive()          # waits forever

    try:
        beamvm.run(main, schedulers=2)
    except KeyboardInterrupt:
        print("interrupted; running:", beamvm.is_running(), flush=True)
        sys.exit(3)
    """
)


def test_ctrl_c_stops_the_vm_and_raises_keyboard_interrupt() -> None:
    env = dict(os.environ)
    env.setdefault("PYTHONPATH", os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.Popen(
        [sys.executable, "-c", PROGRAM],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "ready", line
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 3, (proc.returncode, out, err)
    assert "interrupted; running: False" in out, (out, err)
