"""``python -m beamvm top`` as a user runs it: a beamvm program started with
BEAMVM_OBSERVER=PATH in the background, the live view in a real terminal (tmux), ``q`` to quit;
``--once``; the error when nothing listens."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time

import pytest
from proc_helpers import env_with, observed_program


@pytest.fixture
def program(tmp_path):
    """A running beamvm program with its observer on a temp socket; yields the socket path."""
    with observed_program(tmp_path, "known_hog", queued=123, others=50) as (sock, _, _):
        yield sock


def top_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "beamvm", "top", *args]


def test_top_in_a_terminal(program):
    tmux = shutil.which("tmux")
    if tmux is None:
        why = "tmux is not installed (apt-get install -y tmux) to drive a real terminal"
        # scripts/test.sh sets VM_REQUIRE_TMUX under CI=true: a failed install fails here.
        if os.environ.get("VM_REQUIRE_TMUX"):
            pytest.fail(f"{why} (VM_REQUIRE_TMUX is set: tmux is required here)")
        pytest.skip(why)
    server = f"bvm-top-{os.getpid()}"
    cmd = shlex.join(
        ["env", f"PYTHONPATH={env_with()['PYTHONPATH']}", *top_cmd("--socket", program)]
    )
    shell = f"{cmd}; echo top-exited-$?; sleep 30"

    def tm(*args: str) -> str:
        return subprocess.run(
            [tmux, "-L", server, *args], check=True, capture_output=True, text=True, timeout=10
        ).stdout

    def screen() -> str:
        return tm("capture-pane", "-p", "-t", "top")

    tm("-f", "/dev/null", "new-session", "-d", "-s", "top", "-x", "120", "-y", "50", shell)
    try:
        deadline = time.monotonic() + 8
        text = ""
        while time.monotonic() < deadline:
            time.sleep(0.3)
            text = screen()
            # the second frame has rates over the last interval
            if "over the last" in text and "known_hog" in text:
                break
        assert "beamvm top" in text, text
        assert "scheduler 1" in text and "scheduler 2" in text, text
        assert "over the last" in text, text
        assert "dirty cpu" in text and "dirty io" in text, text
        assert "MEMORY  total" in text and "processes" in text, text
        assert "TOP BY MAILBOX" in text, text
        hog_lines = [ln for ln in text.splitlines() if "known_hog" in ln]
        assert hog_lines and "123" in hog_lines[0], text
        assert "processes 52 /" in text, text
        tm("send-keys", "-t", "top", "q")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and "top-exited-" not in text:
            time.sleep(0.1)
            text = screen()
        assert "top-exited-0" in text, text
        # the alternate screen is gone: the frame is no longer shown
        assert "TOP BY MAILBOX" not in text, text
    finally:
        subprocess.run([tmux, "-L", server, "kill-server"], capture_output=True, timeout=10)


def test_top_once(program):
    out = subprocess.run(
        top_cmd("--socket", program, "--once", "--interval", "0.3"),
        env=env_with(),
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert out.returncode == 0, out.stderr
    assert "\x1b" not in out.stdout
    assert "scheduler 2" in out.stdout and "MEMORY" in out.stdout
    # Two snapshots --interval apart: at least 0.3 s, more on a loaded machine.
    m = re.search(r"utilisation over the last (\d+\.\d)s", out.stdout)
    assert m and float(m.group(1)) >= 0.3, out.stdout
    hog_line = next(ln for ln in out.stdout.splitlines() if "known_hog" in ln)
    assert "123" in hog_line


def test_top_without_an_observer(tmp_path):
    sock = str(tmp_path / "nobody.sock")
    out = subprocess.run(
        top_cmd("--socket", sock), env=env_with(), capture_output=True, text=True, timeout=10
    )
    assert out.returncode == 1
    assert (
        f"no beamvm observer at {sock}: start your program with BEAMVM_OBSERVER={sock} "
        f"or call beamvm.observer.serve('{sock}')"
    ) in out.stderr
    out = subprocess.run(top_cmd(), env=env_with(), capture_output=True, text=True, timeout=10)
    assert out.returncode == 2 and "--socket" in out.stderr


def test_socket_closes_when_the_vm_stops(tmp_path):
    sock = str(tmp_path / "o.sock")
    script = tmp_path / "short.py"
    script.write_text(
        "import time, os, beamvm\n"
        "def main():\n"
        "    beamvm.sleep(0.3)\n"
        "    return os.path.exists(os.environ['BEAMVM_OBSERVER'])\n"
        "print(beamvm.run(main, schedulers=1), flush=True)\n"
        "time.sleep(0.3)\n"
        "print(os.path.exists(os.environ['BEAMVM_OBSERVER']), flush=True)\n"
    )
    out = subprocess.run(
        [sys.executable, str(script)],
        env=env_with(BEAMVM_OBSERVER=sock),
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert out.stdout.split() == ["True", "False"], out.stderr
