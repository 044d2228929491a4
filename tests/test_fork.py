"""`os.fork()` while the VM runs: the child has no VM and says so; the parent's VM goes on.

Before, the child's `spawn()` returned a pid that never ran, and the child segfaulted at
exit after a Rust panic ("threads should not terminate unexpectedly") while stopping a
VM whose threads it did not have.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")

TIMEOUT = 60
FORK_ERROR = "does not survive os.fork()"


def _run(tmp_path: Path, program: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "prog.py"
    path.write_text(textwrap.dedent(program))
    return subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", str(path)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def _clean(out: subprocess.CompletedProcess[str]) -> None:
    assert out.returncode >= 0, f"killed by signal {-out.returncode}: {out.stderr}"
    assert "panicked" not in out.stderr and "FATAL" not in out.stderr, out.stderr


def test_fork_from_plain_code_child_has_no_vm_and_parent_keeps_its_own(tmp_path):
    out = _run(
        tmp_path,
        """
        import os
        import beamvm

        def echo():
            sender, msg = beamvm.receive()
            beamvm.send(sender, msg)

        beamvm.start(schedulers=2)
        pid = os.fork()
        if pid == 0:
            for call in (lambda: beamvm.spawn(echo), lambda: beamvm.memory(),
                         lambda: beamvm.whereis("x"), lambda: beamvm.register("x")):
                try:
                    call()
                    print("child: no error", flush=True)
                except RuntimeError as e:
                    print("child:", e, flush=True)
            print("child running:", beamvm.is_running(), flush=True)
            raise SystemExit(4)
        _, status = os.waitpid(pid, 0)
        print("child exit:", os.waitstatus_to_exitcode(status), flush=True)

        def main():
            p = beamvm.spawn(echo)
            beamvm.send(p, (beamvm.self_pid(), "still here"))
            return beamvm.receive(timeout=10)

        beamvm.stop()
        print("parent:", beamvm.run(main, schedulers=2), flush=True)
        """,
    )
    _clean(out)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    child = [line for line in lines if line.startswith("child:")]
    assert len(child) == 4 and all(FORK_ERROR in line for line in child), lines
    assert all("beamvm.start()" in line for line in child)
    assert "child running: False" in lines
    assert "child exit: 4" in lines
    assert "parent: still here" in lines


def test_parent_vm_keeps_running_processes_across_the_fork(tmp_path):
    out = _run(
        tmp_path,
        """
        import os
        import beamvm

        def counter(n):
            while True:
                msg = beamvm.receive()
                if msg == "get":
                    beamvm.send(beamvm.whereis("main"), n)
                else:
                    n += 1

        def main():
            beamvm.register("main")
            c = beamvm.spawn(counter, 0)
            beamvm.send(c, "inc")
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            os.waitpid(pid, 0)
            beamvm.send(c, "inc")
            beamvm.send(c, "get")
            return beamvm.receive(timeout=10)

        print("count", beamvm.run(main, schedulers=2), flush=True)
        """,
    )
    _clean(out)
    assert out.returncode == 0, out.stderr
    assert "count 2" in out.stdout


def test_fork_inside_a_process_child_runs_that_code_to_its_end(tmp_path):
    # The child goes on running the forking process's code as a plain program: loops
    # keep going (no preemption, no other process runs), VM calls raise, and its end is
    # the child's exit (here sys.exit's status).
    out = _run(
        tmp_path,
        """
        import os
        import sys
        import beamvm

        def main():
            pid = os.fork()
            if pid == 0:
                total = 0
                for i in range(200_000):   # many budget checks: preempted in the parent
                    total += i
                print("child total", total, flush=True)
                # Called from this (compiled) code itself, not from lambdas, which are
                # not compiled and could not suspend the process anyway.
                try:
                    beamvm.receive(timeout=0.1)
                except RuntimeError as e:
                    print("child error:", FORK_ERROR in str(e), flush=True)
                try:
                    beamvm.sleep(0.01)
                except RuntimeError as e:
                    print("child error:", FORK_ERROR in str(e), flush=True)
                for call in (beamvm.self_pid, lambda: beamvm.spawn(print)):
                    try:
                        call()
                    except RuntimeError as e:
                        print("child error:", FORK_ERROR in str(e), flush=True)
                sys.exit(5)
            _, status = os.waitpid(pid, 0)
            return os.waitstatus_to_exitcode(status)

        FORK_ERROR = "does not survive os.fork()"
        print("child exited", beamvm.run(main, schedulers=1), flush=True)
        """,
    )
    _clean(out)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert f"child total {sum(range(200_000))}" in lines
    assert lines.count("child error: True") == 4, lines
    assert "child exited 5" in lines


def test_child_can_start_its_own_vm(tmp_path):
    out = _run(
        tmp_path,
        """
        import os
        import beamvm

        def main():
            return "fresh VM"

        beamvm.start(schedulers=1)
        pid = os.fork()
        if pid == 0:
            print("child:", beamvm.run(main, schedulers=1), flush=True)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        print("child exit:", os.waitstatus_to_exitcode(status), flush=True)
        """,
    )
    _clean(out)
    assert out.returncode == 0, out.stderr
    assert "child: fresh VM" in out.stdout
    assert "child exit: 0" in out.stdout


def test_fork_inside_a_dirty_call_child_ends_when_the_call_returns(tmp_path):
    # Only the pool thread is copied into the child; it must not wait for pool jobs
    # there forever.
    out = _run(
        tmp_path,
        """
        import os
        import beamvm

        def forking():
            pid = os.fork()
            if pid == 0:
                print("child in the dirty call", flush=True)
                return "child's result"
            _, status = os.waitpid(pid, 0)
            return os.waitstatus_to_exitcode(status)

        def main():
            return beamvm.dirty_cpu(forking)

        print("child exited", beamvm.run(main, schedulers=1), flush=True)
        """,
    )
    _clean(out)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "child in the dirty call" in lines
    assert "child exited 0" in lines
