"""Signal semantics seen from Python: links, trap_exit, kill, monitors/DOWN, noproc, exit
reasons of crashes, crash reports, kill through throw (finally blocks run)."""

from __future__ import annotations

import logging

import beamvm
from beamvm import ANY, Atom, exit, link, monitor, receive, self_pid, send, spawn, spawn_link

NORMAL, KILL, KILLED, NOPROC = Atom("normal"), Atom("kill"), Atom("killed"), Atom("noproc")
EXIT, DOWN = Atom("EXIT"), Atom("DOWN")


def run(fn, *args, **cfg):
    cfg.setdefault("schedulers", 2)
    return beamvm.run(fn, *args, **cfg)


def crasher():
    raise ZeroDivisionError("division by zero")


def waiter():
    receive()


def test_crash_reason_seen_by_monitor():
    def main():
        pid, ref = beamvm.spawn_monitor(crasher)
        return receive((DOWN, ref, ANY, ANY, ANY), timeout=2), pid

    (tag, _ref, kind, pid2, reason), pid = run(main)
    assert tag == DOWN and kind == Atom("process") and pid2 == pid
    assert reason == (Atom("error"), "ZeroDivisionError", "division by zero")


def test_monitor_normal_exit_and_noproc():
    def main():
        pid = spawn(waiter)
        ref = monitor(pid)
        send(pid, "go")
        a = receive((DOWN, ref, ANY, pid, ANY), timeout=2)[4]
        ref2 = monitor(pid)  # dead now
        b = receive((DOWN, ref2, ANY, pid, ANY), timeout=2)[4]
        return a, b

    assert run(main) == (NORMAL, NOPROC)


def test_demonitor_and_flush():
    def main():
        pid = spawn(waiter)
        ref = monitor(pid)
        active = beamvm.demonitor(ref)
        send(pid, "go")
        got = receive((DOWN, ANY, ANY, ANY, ANY), timeout=0.1, default="nothing")
        pid2 = spawn(crasher)
        ref2 = monitor(pid2)
        beamvm.sleep(0.05)
        was = beamvm.demonitor(ref2, flush=True)
        got2 = receive((DOWN, ANY, ANY, ANY, ANY), timeout=0.05, default="flushed")
        return active, got, was, got2

    active, got, was, got2 = run(main)
    assert active is True and got == "nothing" and was is False and got2 == "flushed"


def test_link_propagates_crash():
    def middle(parent):
        spawn_link(crasher)
        receive()  # killed by the linked crash

    def main():
        pid, ref = beamvm.spawn_monitor(middle, self_pid())
        return receive((DOWN, ref, ANY, pid, ANY), timeout=2)[4]

    assert run(main) == (Atom("error"), "ZeroDivisionError", "division by zero")


def test_trap_exit_turns_signals_into_messages():
    def main():
        assert beamvm.process_flag("trap_exit", True) is False
        pid = spawn_link(crasher)
        m1 = receive((EXIT, pid, ANY), timeout=2)
        pid2 = spawn_link(waiter)
        send(pid2, "go")
        m2 = receive((EXIT, pid2, ANY), timeout=2)
        pid3 = spawn(waiter)
        exit(pid3, Atom("kill"))
        beamvm.sleep(0.02)
        link(pid3)  # dead: with trap_exit, an EXIT noproc message
        m3 = receive((EXIT, pid3, ANY), timeout=2)
        return m1[2], m2[2], m3[2]

    assert run(main) == (
        (Atom("error"), "ZeroDivisionError", "division by zero"), NORMAL, NOPROC)


def test_link_to_dead_pid_without_trap_exit_is_noproc():
    def main():
        pid = spawn(waiter)
        exit(pid, KILL)
        beamvm.sleep(0.02)
        try:
            link(pid)
        except beamvm.NoProc:
            return "noproc"

    assert run(main) == "noproc"


def test_unlink_stops_propagation():
    def victim():
        receive()

    def main():
        pid = spawn(victim)
        link(pid)
        beamvm.unlink(pid)
        exit(pid, Atom("boom"))  # kills pid; we are no longer linked
        beamvm.sleep(0.05)
        return "alive", beamvm.is_alive(pid)

    assert run(main) == ("alive", False)


def test_exit_signals_normal_and_kill_and_trapped_kill():
    def trapper(parent):
        beamvm.process_flag("trap_exit", True)
        send(parent, "ready")
        while True:
            m = receive()
            send(parent, m)

    def main():
        me = self_pid()
        t = spawn(trapper, me)
        receive("ready", timeout=2)
        exit(t, NORMAL)  # trapped: becomes a message
        exit(t, Atom("custom"))
        a = receive(timeout=2)
        b = receive(timeout=2)
        ref = monitor(t)
        exit(t, KILL)  # cannot be trapped
        down = receive((DOWN, ref, ANY, ANY, ANY), timeout=2)
        return a, b, down[4]

    a, b, reason = run(main)
    assert a[0] == EXIT and a[2] == NORMAL and b[2] == Atom("custom") and reason == KILLED


def test_exit_self_with_reason():
    def quitter():
        try:
            exit(("shutdown", 3))
        finally:
            pass

    def main():
        pid, ref = beamvm.spawn_monitor(quitter)
        return receive((DOWN, ref, ANY, ANY, ANY), timeout=2)[4]

    assert run(main) == ("shutdown", 3)


def test_kill_runs_finally_and_with_blocks():
    class CM:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            send(self.to, "exited")
            return False

    def victim(to):
        cm = CM()
        cm.to = to
        try:
            with cm:
                send(to, "ready")
                while True:
                    receive()
        finally:
            send(to, "finally ran")

    def main():
        me = self_pid()
        pid, ref = beamvm.spawn_monitor(victim, me)
        receive("ready", timeout=2)
        exit(pid, Atom("stop_it"))
        out = []
        for _ in range(2):
            out.append(receive(str, timeout=2))
        down = receive((DOWN, ref, ANY, ANY, ANY), timeout=2)
        return out, down[4]

    out, reason = run(main)
    assert out == ["exited", "finally ran"] and reason == Atom("stop_it")


def test_kill_spinning_process():
    def spinner():
        x = 0
        while True:
            x += 1

    def main():
        pid, ref = beamvm.spawn_monitor(spinner)
        beamvm.sleep(0.02)
        exit(pid, KILL)
        return receive((DOWN, ref, ANY, ANY, ANY), timeout=2)[4]

    assert run(main, schedulers=1) == KILLED


def test_main_killed_raises_process_exit():
    def main():
        exit(self_pid(), Atom("goodbye"))
        receive()

    try:
        run(main)
    except beamvm.ProcessExit as e:
        assert e.args[0] == Atom("goodbye")
    else:
        raise AssertionError("expected ProcessExit")


def test_unlinked_crash_is_reported(caplog):
    def main():
        pid, ref = beamvm.spawn_monitor(crasher)
        receive((DOWN, ref, ANY, ANY, ANY), timeout=2)

    with caplog.at_level(logging.ERROR, logger="beamvm"):
        run(main)
    text = caplog.text
    assert "ZeroDivisionError" in text and "crashed" in text
    assert "test_signals.py" in text and "in crasher" in text


def test_linked_crash_not_reported(caplog):
    def main():
        beamvm.process_flag("trap_exit", True)
        spawn_link(crasher)
        receive((EXIT, ANY, ANY), timeout=2)

    with caplog.at_level(logging.ERROR, logger="beamvm"):
        run(main)
    assert "crashed" not in caplog.text


def test_messages_to_dead_pid_are_dropped():
    def main():
        pid = spawn(waiter)
        exit(pid, KILL)
        beamvm.sleep(0.02)
        send(pid, "into the void")
        return beamvm.is_alive(pid)

    assert run(main) is False
