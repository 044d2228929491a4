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
    import os
    import signal
    import sys
    import beamvm

    # A shell may start background jobs with SIGINT ignored; restore Python's default
    # handler so the test does not depend on how it was launched.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    SPIN

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


def _interrupt(args: list[str]) -> tuple[int, str, str]:
    env = dict(os.environ)
    env.setdefault("PYTHONPATH", os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.Popen(
        [sys.executable, *args],
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
    return proc.returncode, out, err


SPIN = "def spin():\n        x = 0\n        while True:\n            x += 1\n"
# Code made with exec() has no source file, so it cannot be compiled for preemption.
SPIN_NO_SOURCE = 'exec("def spin():\\n    x = 0\\n    while True:\\n        x += 1\\n")'


def test_ctrl_c_stops_the_vm_and_raises_keyboard_interrupt(tmp_path) -> None:
    prog = tmp_path / "prog.py"
    prog.write_text(PROGRAM.replace("SPIN", SPIN))
    rc, out, err = _interrupt([str(prog)])
    assert rc == 3, (rc, out, err)
    assert "interrupted; running: False" in out, (out, err)


def test_ctrl_c_with_unpreemptible_code_interrupts_it_and_exits_normally(tmp_path) -> None:
    # A busy loop that cannot be preempted holds its scheduler. Stopping interrupts it
    # (ProcessKilled raised in its thread), so the VM stops at once and the interpreter
    # finalises normally (it used to wait 5 s, warn, and need os._exit to avoid an
    # abort at finalisation).
    prog = tmp_path / "prog.py"
    prog.write_text(PROGRAM.replace("SPIN", SPIN_NO_SOURCE))
    t0 = time.monotonic()
    rc, out, err = _interrupt([str(prog)])
    assert rc == 3, (rc, out, err)
    assert "interrupted; running: False" in out, (out, err)
    assert "did not stop" not in err, err
    assert time.monotonic() - t0 < 10
