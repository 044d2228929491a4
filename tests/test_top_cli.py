"""``python -m beamvm top`` as a user runs it: a beamvm program started with
BEAMVM_OBSERVER=PATH in the background, the live view in a real terminal (tmux), ``q`` to quit;
``--once``; the error when nothing listens."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import beamvm
import pytest

PKG_ROOT = str(Path(beamvm.__file__).resolve().parent.parent)

PROGRAM = textwrap.dedent(
    """
    import beamvm
    from beamvm import receive, register, send, spawn

    def sink():
        while True:
            receive(("never-sent",))

    def main():
        hog = spawn(sink)
        register("known_hog", hog)
        for i in range(123):
            send(hog, i)
        for _ in range(50):
            spawn(sink)
        print("ready", flush=True)
        receive(("stop",), timeout=30.0, default=None)

    beamvm.run(main, schedulers=2)
    """
)


def env_with(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [PKG_ROOT, env.get("PYTHONPATH")]))
    env.pop("BEAMVM_OBSERVER", None)
    env.update(extra)
    return env


@pytest.fixture
def program(tmp_path):
    """A running beamvm program with its observer on a temp socket; yields the socket path."""
    sock = os.path.join(tempfile.mkdtemp(prefix="bvm-top-"), "o.sock")
    script = tmp_path / "prog.py"
    script.write_text(PROGRAM)
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        env=env_with(BEAMVM_OBSERVER=sock),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
        deadline = time.monotonic() + 5
        while not os.path.exists(sock) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert os.path.exists(sock), "the observer socket did not appear"
        yield sock
    finally:
        proc.kill()
        proc.wait(5)


def top_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "beamvm", "top", *args]


def test_top_in_a_terminal(program):
    tmux = shutil.which("tmux")
    if tmux is None:
        pytest.skip("tmux is not installed (apt-get install -y tmux) to drive a real terminal")
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
    assert "utilisation over the last 0.3s" in out.stdout
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
