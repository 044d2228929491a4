"""Process bodies and helpers shared by several test files (bodies need source to be
compiled, so they live in a file)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import beamvm
from beamvm import receive, send

#: The directory that holds the beamvm package (for subprocesses' PYTHONPATH).
PKG_ROOT = str(Path(beamvm.__file__).resolve().parent.parent)


def sink():
    """Wait forever for a message no one sends: what is sent to it stays queued."""
    while True:
        receive(("never-sent",))


def spinner():
    """Spin forever (preempted by reductions)."""
    x = 0
    while True:
        x += 1


def wait_until(cond, timeout=10.0):
    """Poll ``cond`` until it is true or ``timeout`` seconds pass; return whether it was."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return False


def env_with(**extra: str) -> dict[str, str]:
    """This environment with beamvm importable, no observer socket, and ``extra``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [PKG_ROOT, env.get("PYTHONPATH")]))
    env.pop("BEAMVM_OBSERVER", None)
    env.update(extra)
    return env


def ticker(parent, period, duration):
    """Wake every ``period`` seconds for ``duration``; send back each wake-up's lateness."""
    start = time.monotonic()
    late = []
    k = 1
    while k * period <= duration:
        target = start + k * period
        now = time.monotonic()
        if now < target:
            beamvm.sleep(target - now)
            now = time.monotonic()
        late.append(now - target)
        k += 1
    send(parent, ("ticks", late))


def p99(late):
    """Nearest-rank 99th percentile."""
    late = sorted(late)
    return late[max(int(len(late) * 0.99) - 1, 0)]


def running_vm():
    """A VM with two schedulers for one test: ``vm = pytest.fixture(running_vm)``."""
    beamvm.start(schedulers=2)
    try:
        yield
    finally:
        beamvm.stop()


OBSERVED_PROGRAM = textwrap.dedent(
    """
    import beamvm
    from beamvm import receive, register, send, spawn

    def sink():
        while True:
            receive(("never-sent",))

    def main():
        hog = spawn(sink)
        register({name!r}, hog)
        for i in range({queued}):
            send(hog, i)
        for _ in range({others}):
            spawn(sink)
        print("ready", repr(hog), flush=True)
        receive(("stop",), timeout=60.0, default=None)

    beamvm.run(main, schedulers=2)
    """
)


@contextlib.contextmanager
def observed_program(
    directory: Path, name: str, queued: int, others: int
) -> Iterator[tuple[str, str, subprocess.Popen[str]]]:
    """Run a beamvm program with its observer socket on (BEAMVM_OBSERVER): a process
    registered as ``name`` with ``queued`` messages and ``others`` idle processes. Yields
    (socket path, the registered process's pid as text, the program's Popen)."""
    sock = os.path.join(tempfile.mkdtemp(prefix="bvm-prog-"), "o.sock")
    script = directory / "prog.py"
    script.write_text(OBSERVED_PROGRAM.format(name=name, queued=queued, others=others))
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        env=env_with(BEAMVM_OBSERVER=sock),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        assert line[:1] == ["ready"], proc.stderr.read() if proc.stderr else ""
        assert wait_until(lambda: os.path.exists(sock), 5), "the observer socket did not appear"
        yield sock, line[1], proc
    finally:
        proc.kill()
        proc.wait(5)
