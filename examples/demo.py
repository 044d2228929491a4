"""beamvm demo: processes, messages, preemption, links and monitors in one small program.

Run with ``./scripts/demo.sh`` (installs beamvm first) or ``python examples/demo.py``.
"""

from __future__ import annotations

import time

import beamvm
from beamvm import (
    ANY,
    Atom,
    monitor,
    process_flag,
    receive,
    self_pid,
    send,
    spawn,
    spawn_link,
)


def echo() -> None:
    """Reply to every ``(sender, msg)`` with ``msg``."""
    while True:
        sender, msg = receive()
        send(sender, msg)


def hog() -> None:
    """Loop forever without yielding: the scheduler preempts it anyway."""
    x = 0
    while True:
        x += 1


def ticker(parent: beamvm.Pid, n: int) -> None:
    """Wake every 10 ms and report how late each wake-up was."""
    late = []
    for _ in range(n):
        due = time.perf_counter() + 0.01
        receive(timeout=0.01, default=None)
        late.append(max(0.0, time.perf_counter() - due) * 1000)
    send(parent, (Atom("lateness"), sorted(late)))


def crasher() -> None:
    """Crash: linked processes see the exception as an exit reason."""
    raise ValueError("something went wrong")


def main() -> str:
    """Run the demo; return a summary line."""
    me = self_pid()

    # 1. Messages between isolated processes.
    pid = spawn(echo)
    send(pid, (me, "hello from " + repr(me)))
    print("echo replied:", receive(timeout=1.0))

    # 2. Preemption: four busy loops cannot freeze a 10 ms ticker.
    hogs = [spawn(hog) for _ in range(4)]
    spawn(ticker, me, 50)
    _, late = receive((Atom("lateness"), ANY), timeout=10.0)
    print(f"ticker lateness with 4 busy loops: p50 {late[len(late) // 2]:.2f} ms, "
          f"max {late[-1]:.2f} ms")
    for h in hogs:
        beamvm.exit(h, Atom("kill"))

    # 3. Fault isolation: a crash arrives as a message to a process trapping exits.
    process_flag(Atom("trap_exit"), True)
    child = spawn_link(crasher)
    print("linked crash seen as:", receive((Atom("EXIT"), child, ANY), timeout=1.0))

    # 4. Monitors: exactly one DOWN.
    worker = spawn(echo)
    ref = monitor(worker)
    beamvm.exit(worker, Atom("shutdown"))
    print("monitor saw:", receive((Atom("DOWN"), ref, ANY, ANY, ANY), timeout=1.0))

    info = beamvm.system_info()
    return f"done on {info['schedulers']} schedulers"


if __name__ == "__main__":
    print(beamvm.run(main, schedulers=1))
