"""The process API end to end: run/start/stop, spawn, send/receive, patterns, names, timers,
introspection, and errors for bad input."""

from __future__ import annotations

import time
import traceback

import beamvm
import pytest
from beamvm import (
    ANY,
    Atom,
    Pid,
    Ref,
    Timeout,
    make_ref,
    receive,
    self_pid,
    send,
    spawn,
)


def run(fn, *args, **cfg):
    cfg.setdefault("schedulers", 2)
    return beamvm.run(fn, *args, **cfg)


def test_run_returns_main_result_and_stops():
    assert run(lambda: 42) == 42  # lambdas run to completion (not compiled)

    def main(a, b=0):
        return a + b

    assert run(main, 40, 2) == 42
    assert not beamvm.is_running()


def test_run_reraises_main_exception():
    def main():
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        run(main)
    assert not beamvm.is_running()


def test_run_config_is_applied():
    def main():
        return beamvm.system_info()

    info = run(main, schedulers=3, schedulers_online=2, process_limit=1000, reductions=2000)
    assert info["schedulers"] == 3
    assert info["schedulers_online"] == 2
    assert info["process_limit"] == 1000
    assert info["reductions_per_slice"] == 2000


def test_run_rejects_unknown_setting():
    with pytest.raises(TypeError, match="unknown beamvm setting"):
        beamvm.run(lambda: None, bogus=1)
    with pytest.raises(TypeError, match="release_idle_memory must be True or False"):
        beamvm.run(lambda: None, release_idle_memory="no")
    assert not beamvm.is_running()


def test_run_rejects_a_negative_time_setting_with_its_name():
    with pytest.raises(ValueError, match=r"^batch_time must be >= 0 seconds, got -1$"):
        beamvm.run(lambda: None, batch_time=-1)
    with pytest.raises(TypeError, match=r"^batch_time must be a number of seconds or None, not"):
        beamvm.run(lambda: None, batch_time="1ms")
    assert not beamvm.is_running()


def test_start_stop_embedding():
    beamvm.start(schedulers=1)
    try:
        assert beamvm.is_running()
        with pytest.raises(RuntimeError, match="already running"):
            beamvm.start()

        def worker(reply_to):
            send(reply_to, ("pong", self_pid()))

        def collector(n):
            got = []
            for _ in range(n):
                got.append(receive(timeout=2.0))
            beamvm.register("collector_done", self_pid())
            receive()
            return got

        c = spawn(collector, 2)
        spawn(worker, c)
        spawn(worker, c)
        deadline = time.time() + 5
        while beamvm.whereis("collector_done") is None and time.time() < deadline:
            time.sleep(0.01)
        assert beamvm.whereis("collector_done") == c
        assert c in beamvm.processes()
        send(c, "go")  # send from outside any process
    finally:
        assert beamvm.stop() is True
    assert beamvm.stop() is False


def test_process_only_functions_outside_a_process():
    for fn, args in [
        (beamvm.receive, ()),
        (beamvm.sleep, (0.1,)),
        (beamvm.self_pid, ()),
        (beamvm.spawn_link, (print,)),
        (beamvm.spawn_monitor, (print,)),
        (beamvm.process_flag, ("trap_exit", True)),
    ]:
        with pytest.raises(RuntimeError, match="inside a beamvm process"):
            fn(*args)
    beamvm.start(schedulers=1)
    try:
        pid = spawn(print, end="")
        for fn in (beamvm.link, beamvm.unlink, beamvm.monitor):
            with pytest.raises(RuntimeError, match="inside a beamvm process"):
                fn(pid)
        with pytest.raises(RuntimeError, match="inside a beamvm process"):
            beamvm.demonitor(make_ref())
    finally:
        beamvm.stop()


def test_receive_in_comprehension_works_and_elsewhere_says_why():
    def main():
        me = beamvm.self_pid()
        for i in range(3):
            beamvm.send(me, i)
        got = [receive(timeout=1) for _ in range(3)]  # compiled: a suspension point
        try:  # a generator expression handed to other code is not compiled
            next(iter(receive(timeout=0) for _ in range(1)))
        except RuntimeError as e:
            return got, str(e)

    got, err = run(main)
    assert got == [0, 1, 2]
    assert "generator expression" in err


def test_vm_functions_when_not_running():
    with pytest.raises(RuntimeError, match="not running"):
        spawn(print)
    with pytest.raises(RuntimeError, match="not running"):
        beamvm.processes()


def test_echo_and_ordering():
    def echo():
        while True:
            m = receive()
            if m == "stop":
                return
            sender, payload = m
            send(sender, payload)

    def main():
        pid = spawn(echo)
        for i in range(100):
            send(pid, (self_pid(), i))
        got = []
        for _ in range(100):
            got.append(receive(timeout=2))
        send(pid, "stop")
        return got

    assert run(main) == list(range(100))


def test_send_returns_message():
    def main():
        return send(self_pid(), "x"), receive()

    assert run(main) == ("x", "x")


def test_selective_receive_patterns():
    def main():
        me = self_pid()
        r = make_ref()
        for m in [1, "two", (Atom("a"), 1), (Atom("b"), 2), [1, 2], {"k": 1, "z": 2},
                  (r, "reply"), 3.5, b"bytes", None, True]:
            send(me, m)
        out = []
        out.append(receive((Atom("b"), ANY)))
        out.append(receive((r, ANY)))
        out.append(receive(str))
        out.append(receive(float))
        out.append(receive({"k": ANY}))
        out.append(receive([ANY, 2]))
        out.append(receive(bytes))
        out.append(receive(bool))
        out.append(receive(type(None), timeout=0, default="none-missing"))
        out.append(receive(int))
        out.append(receive(tuple))
        out.append(receive(timeout=0, default="empty"))
        return out

    out = run(main)
    assert out[0] == (Atom("b"), 2) and out[1][1] == "reply"
    assert out[2:] == ["two", 3.5, {"k": 1, "z": 2}, [1, 2], b"bytes", True, None, 1,
                       (Atom("a"), 1), "empty"]


def test_selective_receive_exact():
    def main():
        me = self_pid()
        r = make_ref()
        send(me, ("noise", 1))
        send(me, (Atom("reply"), r, 42))
        send(me, 7)
        a = receive((Atom("reply"), r, ANY))
        b = receive(7)
        c = receive()
        return a[2], b, c

    assert run(main) == (42, 7, ("noise", 1))


def test_receive_literal_types_are_exact():
    def main():
        me = self_pid()
        send(me, 1.0)
        send(me, 1)
        a = receive(1)
        b = receive()
        return a, b, type(a).__name__, type(b).__name__

    assert run(main) == (1, 1.0, "int", "float")


def test_receive_timeout_raises_and_default():
    def main():
        t0 = time.monotonic()
        try:
            receive(timeout=0.05)
        except Timeout:
            raised = True
        dt = time.monotonic() - t0
        d = receive(("never",), timeout=0.01, default="dflt")
        p = receive(timeout=0, default=None)
        return raised, dt, d, p

    raised, dt, d, p = run(main)
    assert raised and dt >= 0.04 and d == "dflt" and p is None


def test_timeout_not_extended_by_unmatched_messages():
    def noisy(to):
        for _ in range(20):
            send(to, "noise")
            beamvm.sleep(0.01)

    def main():
        spawn(noisy, self_pid())
        t0 = time.monotonic()
        r = receive("wanted", timeout=0.1, default="timeout")
        return r, time.monotonic() - t0

    r, dt = run(main)
    assert r == "timeout" and 0.09 <= dt < 1.0


def test_receive_bad_arguments():
    def main():
        out = []
        for kw in [{"timeout": -1}, {"timeout": "soon"}]:
            try:
                receive(**kw)
            except (ValueError, TypeError) as e:
                out.append(type(e).__name__)
        try:
            receive((object,))
        except TypeError as e:
            out.append("pattern:" + type(e).__name__)
        return out

    assert run(main) == ["ValueError", "TypeError", "pattern:TypeError"]


def test_sleep():
    def main():
        send(self_pid(), "kept")
        t0 = time.monotonic()
        beamvm.sleep(0.05)
        return time.monotonic() - t0, receive(timeout=0)

    dt, kept = run(main)
    assert dt >= 0.045 and kept == "kept"


def test_spawn_kwargs_and_partial_and_methods():
    import functools

    class K:
        def __init__(self, base):
            self.base = base

        def add(self, to, x):
            send(to, self.base + x)

    def f(to, a, *, b):
        send(to, a * b)

    def main():
        me = self_pid()
        spawn(f, me, 3, b=4)
        spawn(functools.partial(f, me, 5), b=2)
        spawn(K(100).add, me, 1)
        out = []
        for _ in range(3):
            out.append(receive(timeout=2))
        return sorted(out)

    assert run(main) == [10, 12, 101]


def test_spawn_non_callable_is_type_error():
    def main():
        try:
            spawn(42)
        except TypeError as e:
            return str(e)

    assert "callable" in run(main)


def test_registry():
    def server():
        while True:
            m = receive()
            if m == "stop":
                return
            send(m, "hello")

    def main():
        pid = spawn(server)
        assert beamvm.register("srv", pid)
        assert beamvm.whereis("srv") == pid
        assert beamvm.whereis(Atom("srv")) == pid
        send("srv", self_pid())
        r = receive(timeout=2)
        try:
            beamvm.register("srv", self_pid())
            dup = "no error"
        except beamvm.BadArg:
            dup = "badarg"
        assert beamvm.unregister("srv")
        assert beamvm.whereis("srv") is None
        try:
            send("srv", "x")
            unreg = "no error"
        except beamvm.BadArg:
            unreg = "badarg"
        send(pid, "stop")
        beamvm.register(Atom("me"))
        me_ok = beamvm.whereis("me") == self_pid()
        return r, dup, unreg, me_ok

    assert run(main) == ("hello", "badarg", "badarg", True)


def test_name_released_at_exit():
    def main():
        pid = spawn(beamvm.sleep, 0.01)
        beamvm.register("short", pid)
        ref = beamvm.monitor(pid)
        receive((Atom("DOWN"), ref, ANY, ANY, ANY), timeout=2)
        return beamvm.whereis("short")

    assert run(main) is None


def test_make_ref_unique_and_types():
    def main():
        a, b = make_ref(), make_ref()
        return a, b, self_pid()

    a, b, p = run(main)
    assert isinstance(a, Ref) and isinstance(p, Pid) and a != b
    assert repr(p).startswith("<0.") and repr(a).startswith("#Ref<")
    assert {a: 1}[a] == 1


def test_send_after_and_cancel_timer():
    def main():
        me = self_pid()
        t0 = time.monotonic()
        beamvm.send_after(0.03, me, "tick")
        r = beamvm.send_after(10, me, "never")
        left = beamvm.read_timer(r)
        got = receive(timeout=2)
        dt = time.monotonic() - t0
        cancelled = beamvm.cancel_timer(r)
        again = beamvm.cancel_timer(r)
        return got, dt, left, cancelled, again, receive(timeout=0.05, default="quiet")

    got, dt, left, cancelled, again, quiet = run(main)
    assert got == "tick" and dt >= 0.025
    assert 9 < left <= 10 and 9 < cancelled <= 10 and again is None and quiet == "quiet"


def test_introspection():
    def idle():
        receive()

    def main():
        pid = spawn(idle)
        beamvm.register("idle", pid)
        beamvm.sleep(0.01)
        info = beamvm.process_info(pid)
        mine = beamvm.process_info()
        procs = beamvm.processes()
        mem = beamvm.memory()
        stats = beamvm.statistics()
        alive = beamvm.is_alive(pid)
        beamvm.exit(pid, Atom("kill"))
        beamvm.sleep(0.02)
        return info, mine, procs, mem, stats, alive, beamvm.is_alive(pid), beamvm.process_info(pid)

    info, mine, procs, mem, stats, alive, alive2, dead = run(main)
    assert info["status"] == "waiting" and info["registered_name"] == "idle"
    assert info["current_function"] == "test_introspection.<locals>.idle"
    assert info["priority"] == "normal" and info["memory"] > 0
    assert mine["status"] == "running"
    assert info["pid"] in procs and mine["pid"] in procs
    assert mem["total"] >= mem["processes"] > 0
    assert stats["spawned"] >= 2
    assert alive and not alive2 and dead is None


def test_process_flag_priority_and_bad_flag():
    def main():
        old = beamvm.process_flag("priority", "high")
        now = beamvm.process_flag(Atom("priority"), "normal")
        try:
            beamvm.process_flag("priority", "urgent")
        except ValueError:
            bad_value = True
        try:
            beamvm.process_flag("colour", 1)
        except ValueError:
            bad_flag = True
        return old, now, bad_value, bad_flag

    assert run(main) == ("normal", "high", True, True)


def test_spawn_opt():
    def main():
        pid, ref = beamvm.spawn_opt(beamvm.sleep, (0.01,), monitor=True, priority="low")
        down = receive((Atom("DOWN"), ref, ANY, pid, ANY), timeout=2)
        return down[4]

    assert run(main) == Atom("normal")


def test_wrong_argument_types():
    def main():
        errs = []
        for call in [
            lambda: send(42, "x"),
            lambda: beamvm.link("notapid"),
            lambda: beamvm.monitor(3.5),
            lambda: beamvm.demonitor("ref"),
            lambda: beamvm.cancel_timer(1),
            lambda: beamvm.register(1, self_pid()),
            lambda: beamvm.send_after("soon", self_pid(), 1),
        ]:
            try:
                call()
                errs.append("no error")
            except TypeError:
                errs.append("TypeError")
        return errs

    assert run(main) == ["TypeError"] * 7


def test_process_limit_raises_system_limit():
    def main():
        pids = []
        try:
            for _ in range(100):
                pids.append(spawn(receive))
        except beamvm.SystemLimit as e:
            for p in pids:
                beamvm.exit(p, Atom("kill"))
            return len(pids), str(e)

    n, msg = run(main, process_limit=10)
    assert n == 9 and "system_limit" in msg


def test_many_processes():
    def child(parent, i):
        send(parent, i)

    def main():
        me = self_pid()
        for i in range(2000):
            spawn(child, me, i)
        out = []
        for _ in range(2000):
            out.append(receive(timeout=5))
        return sorted(out)

    assert run(main) == list(range(2000))


def test_spawn_arguments_with_a_term_form_are_copied():
    def child(parent, data, *, opts):
        receive("go")
        send(parent, (data, opts))

    def main():
        data = [1, {"k": [2, 3]}, "s"]
        opts = {"n": [4]}
        pid = spawn(child, self_pid(), data, opts=opts)
        data[1]["k"].append(99)  # the parent mutates after spawning
        opts["n"].clear()
        send(pid, "go")
        return receive(timeout=5)

    assert beamvm.run(main, schedulers=2) == ([1, {"k": [2, 3]}, "s"], {"n": [4]})


def test_spawn_arguments_without_a_term_form_are_shared():
    class Box:
        def __init__(self):
            self.items = []

    def child(parent, box, seen, fn):
        receive("go")
        send(parent, (box.items[:], sorted(seen), fn()))

    def main():
        box, seen = Box(), {1}
        pid = spawn(child, self_pid(), box, seen, lambda: box.items[-1])
        box.items.append("late")  # visible: passed by reference
        seen.add(2)  # a set has no term form: shared too
        send(pid, "go")
        return receive(timeout=5)

    assert beamvm.run(main, schedulers=2) == (["late"], [1, 2], "late")


def test_waiting_receive_gets_tuples_and_exceptions_as_values():
    """A receive that waits is resumed with the message itself (tuples and exception
    instances are values, not StopIteration arguments); receive() can be a process body."""

    def sender(to):
        beamvm.sleep(0.01)
        send(to, (1, 2))
        send(to, ())
        send(to, "last")

    def main():
        spawn(sender, self_pid())
        a = receive()  # waits: the shared op for receive()
        b = receive(tuple)  # waits or finds it: a compiled pattern
        c = receive(str, timeout=1.0)
        echo = spawn(receive)  # the primitive itself as a process body
        send(echo, "x")
        return a, b, c, isinstance(echo, Pid)

    assert run(main) == ((1, 2), (), "last", True)


def test_receive_timeout_traceback_points_at_user_code():
    def main():
        try:
            receive(timeout=0.01)
        except Timeout as e:
            return [f.name for f in traceback.extract_tb(e.__traceback__)]
        return None

    assert run(main) == ["main"]


def test_spawn_with_a_self_containing_argument_shares_it():
    # A container that contains itself has no term form: it is passed by reference
    # (like any argument with no term form), not rejected.
    cyclic = [1, 2]
    cyclic.append(cyclic)

    def child(parent, arg):
        send(parent, arg is cyclic)

    def main():
        spawn(child, self_pid(), cyclic)
        return receive(timeout=5)

    assert run(main) is True


def test_submodules_are_attributes_of_beamvm_without_their_own_import():
    # As the docs write them: `async with beamvm.aio.running(...)`,
    # `beamvm.gen_server.call(...)` after a bare `import beamvm` (a fresh interpreter:
    # here other tests have imported them already). Unknown names still raise.
    import subprocess
    import sys

    code = (
        "import sys, beamvm\n"
        "assert 'beamvm.aio' not in sys.modules and 'asyncio' not in sys.modules\n"
        "names = ['aio', 'code', 'dist', 'gen_server', 'registry', 'rpc', 'supervisor',\n"
        "         'sync', 'sys', 'task', 'tcp', 'trace', 'listener', 'observer']\n"
        "print(all(getattr(beamvm, n).__name__ == 'beamvm.' + n for n in names))\n"
        "print(callable(beamvm.aio.running), callable(beamvm.gen_server.call))\n"
        "try:\n"
        "    beamvm.spwan\n"
        "except AttributeError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "True",
        "True True",
        "module 'beamvm' has no attribute 'spwan'",
    ]


def test_down_and_exit_are_exported_as_the_atoms_monitors_and_trapped_exits_use():
    assert beamvm.DOWN == beamvm.Atom("DOWN") and beamvm.EXIT == beamvm.Atom("EXIT")
    assert beamvm.DOWN != "DOWN", "a str is not an atom"

    def main():
        beamvm.process_flag("trap_exit", True)
        child = beamvm.spawn_link(lambda: beamvm.receive("go") and beamvm.exit("bye"))
        ref = beamvm.monitor(child)
        beamvm.send(child, "go")
        down = beamvm.receive((beamvm.DOWN, ref, beamvm.ANY, beamvm.ANY, beamvm.ANY), timeout=5)
        trapped = beamvm.receive((beamvm.EXIT, child, beamvm.ANY), timeout=5)
        return down[4], trapped[2]

    assert beamvm.run(main) == ("bye", "bye")


class _SendsWhenReleased:
    def __init__(self, to, n):
        self.to, self.n = to, n

    def __del__(self):
        send(self.to, ("released", self.n))


def _holder(obj):
    receive(Atom("stop"))


def _spawn_past_the_limit():
    me = self_pid()
    pids = []
    try:
        for i in range(20):
            pids.append(spawn(_holder, _SendsWhenReleased(me, i)))
    except beamvm.SystemLimit:
        pass
    refused = len(pids)
    got = receive(("released", refused), timeout=5)
    for p in pids:
        beamvm.exit(p, Atom("kill"))
    return refused, got


def test_a_spawn_refused_at_the_limit_releases_its_arguments_after_the_call():
    # Issue 8, fault 5: a spawn refused inside the native call drops the new process's
    # function and arguments while the caller's context is in use. An argument whose
    # __del__ calls the API (here: send) must not run then (it would make a second,
    # aliasing use of the context): it runs once the spawn has returned, and its send
    # is delivered. (Helpers at module level: the spawn is then the guarded direct call
    # of the native function, whose refusal drops the arguments natively.)
    assert run(_spawn_past_the_limit, process_limit=10) == (9, ("released", 9))
