"""The interpreter's exit never aborts and never hangs because of beamvm.

Every scenario runs in a fresh interpreter with a timeout and checks the exit status: a
process stuck in code that cannot be preempted used to make CPython abort at exit
(SIGABRT, "FATAL: exception not rethrown") when its scheduler thread asked for the GIL
during finalisation, after a 5 s wait.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

TIMEOUT = 60


def _run(tmp_path: Path, program: str) -> tuple[subprocess.CompletedProcess[str], float]:
    # From a file, not `-c`: process code needs source to be compiled.
    path = tmp_path / "prog.py"
    path.write_text(textwrap.dedent(program))
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, str(path)], capture_output=True, text=True, timeout=TIMEOUT
    )
    return out, time.monotonic() - t0


def _script_ending_after(spawned: str, schedulers: int = 1) -> str:
    """The end of a program that starts the VM, spawns ``spawned`` and lets the script end."""
    return f"""
        beamvm.start(schedulers={schedulers})
        beamvm.spawn({spawned})
        time.sleep(0.3)
        print("end of script", flush=True)
        """


def _no_crash(out: subprocess.CompletedProcess[str]) -> None:
    assert out.returncode >= 0, f"killed by signal {-out.returncode}: {out.stderr}"
    assert "FATAL" not in out.stderr and "panicked" not in out.stderr, out.stderr


# Ways the program leaves while a process loops over C calls (each call counts as one
# reduction, so its slice lasts seconds): the script ends after beamvm.start(), or
# beamvm.run's main returns.
ENDINGS = {
    "script_ends": """
        beamvm.start(schedulers=1)
        beamvm.spawn(child)
        time.sleep(0.3)
        print("done", beamvm.is_running(), flush=True)
        """,
    "run_returns": """
        def main():
            beamvm.spawn(child)
            beamvm.sleep(0.2)
            return "done"

        print(beamvm.run(main, schedulers=2), beamvm.is_running(), flush=True)
        """,
}


@pytest.mark.parametrize("ending", sorted(ENDINGS))
def test_leaving_while_a_process_loops_over_c_calls_exits_cleanly(tmp_path, ending):
    # Stopping interrupts the loop instead of waiting 5 s and then aborting at exit.
    out, took = _run(
        tmp_path,
        """
        import time
        import beamvm

        def child():
            while True:
                sum(range(10**5))
        """
        + ENDINGS[ending],
    )
    _no_crash(out)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["done", "True" if ending == "script_ends" else "False"]
    assert "did not stop" not in out.stderr, out.stderr
    assert took < 30


# A loop that catches everything, ProcessKilled included.
SWALLOWER = (
    "def child():\n"
    "    import time\n"
    "    while True:\n"
    "        try:\n"
    "            time.sleep(0.01)\n"
    "        except BaseException:\n"
    "            pass\n"
)


def test_code_that_swallows_the_kill_is_reported_and_the_exit_status_is_kept(tmp_path):
    # Code without source (exec) cannot be compiled for preemption, and this one also
    # catches the ProcessKilled that stopping raises in it: its thread keeps asking for
    # the GIL while the interpreter finalises. The exit must keep sys.exit's status.
    out, took = _run(
        tmp_path,
        """
        import sys
        import time
        import beamvm

        exec(SWALLOWER)
        """.replace("SWALLOWER", repr(SWALLOWER))
        + _script_ending_after("child")
        + "sys.exit(7)\n",
    )
    _no_crash(out)
    assert out.returncode == 7, out.stderr
    assert "did not stop" in out.stderr, out.stderr
    assert "in child() at <string>" in out.stderr, out.stderr
    assert took < 30


def test_exit_while_a_process_is_in_one_long_c_call_reports_where(tmp_path):
    out, took = _run(
        tmp_path,
        """
        import select, time
        import beamvm

        def child():
            select.select([], [], [], 4)  # one C call (time.sleep would suspend)
        """
        + _script_ending_after("child", schedulers=2),
    )
    _no_crash(out)
    assert out.returncode == 0, out.stderr
    assert "did not stop" in out.stderr, out.stderr
    assert "in child() at" in out.stderr and "prog.py:6" in out.stderr, out.stderr
    # The exit waits for neither the C call nor the 5 s it used to.
    assert took < 4


def test_exit_while_a_dirty_call_keeps_running_python(tmp_path):
    # A dirty call still running Python when the exit's wait for it ends: its pool
    # thread must not take the finalising interpreter down.
    out, _ = _run(
        tmp_path,
        """
        import time
        import beamvm

        beamvm._DIRTY_EXIT_WAIT = 0.3

        def spin():
            while True:
                time.sleep(0.005)

        def main():
            beamvm.dirty_io(spin)
        """
        + _script_ending_after("main"),
    )
    _no_crash(out)
    assert out.returncode == 0, out.stderr
    assert "end of script" in out.stdout


def test_ctrl_c_with_a_process_in_a_c_call_loop_returns_promptly(tmp_path):
    prog = tmp_path / "prog.py"
    prog.write_text(
        textwrap.dedent(
            """
            import signal
            import sys
            import beamvm

            signal.signal(signal.SIGINT, signal.default_int_handler)

            def spin():
                while True:
                    sum(range(10**5))

            def main():
                beamvm.spawn(spin)
                print("ready", flush=True)
                beamvm.receive()

            try:
                beamvm.run(main, schedulers=2)
            except KeyboardInterrupt:
                print("interrupted; running:", beamvm.is_running(), flush=True)
                sys.exit(3)
            """
        )
    )
    proc = subprocess.Popen(
        [sys.executable, str(prog)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=TIMEOUT)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 3, (proc.returncode, out, err)
    assert "interrupted; running: False" in out
    assert "did not stop" not in err, err
    # It used to wait 5 s for the loop; the loop is interrupted at once now.
    assert took < 4, took


def test_exit_while_a_dirty_call_blocks_does_not_wait_for_it(tmp_path):
    out, took = _run(
        tmp_path,
        """
        import time
        import beamvm

        def main():
            beamvm.dirty_io(time.sleep, 30)
        """
        + _script_ending_after("main"),
    )
    _no_crash(out)
    assert out.returncode == 0, out.stderr
    assert "end of script" in out.stdout
    assert took < 10, "the exit waited for the blocking call"
