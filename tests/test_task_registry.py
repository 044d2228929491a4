"""beamvm.task (Elixir's Task) and beamvm.registry (Elixir's Registry)."""

from __future__ import annotations

import beamvm
from beamvm import (
    ANY,
    Atom,
    CallError,
    exit,
    monitor,
    process_flag,
    process_info,
    receive,
    registry,
    self_pid,
    send,
    spawn,
    spawn_monitor,
    task,
)
from beamvm import gen_server as gs
from beamvm.gen_server import GenServer
from beamvm.registry import RegistryError
from beamvm.supervisor import DynamicSupervisor

OK, EXIT_, DOWN, SHUTDOWN = Atom("ok"), Atom("exit"), Atom("DOWN"), Atom("shutdown")


def run(fn, *args, **cfg):
    cfg.setdefault("schedulers", 2)
    return beamvm.run(fn, *args, **cfg)


def double(x):
    return 2 * x


def slow(x, t):
    beamvm.sleep(t)
    return x


def crash(msg):
    raise KeyError(msg)


def make_set(n):
    return set(range(n))  # no term form: handed over by reference


# --------------------------------------------------------------------------- task


def test_async_await_and_results_without_a_term_form():
    def main():
        a = task.async_(double, 21)
        b = task.async_(make_set, 3)
        results = task.await_(a), task.await_(b), process_info()["aliases"]
        # The tasks' links go when their exit signals arrive, which may be just after
        # their results (Erlang's order too): wait for that, boundedly.
        for _ in range(500):
            if not process_info()["links"]:
                break
            beamvm.sleep(0.01)
        return (*results, process_info()["links"])

    assert run(main) == (42, {0, 1, 2}, 0, [])


def test_await_timeout_and_the_late_result_is_dropped():
    def main():
        t = task.async_(slow, "late", 0.2)
        try:
            task.await_(t, timeout=0.01)
        except CallError as e:
            r = e.reason
        beamvm.sleep(0.3)
        return r[0], r[1][:2], receive(timeout=0, default="empty"), process_info()["aliases"]

    assert run(main) == (Atom("timeout"), (Atom("task"), Atom("await")), "empty", 0)


def test_a_crashing_task_kills_its_linked_owner():
    def owner():
        t = task.async_(crash, "boom")
        task.await_(t)

    def main():
        _, ref = spawn_monitor(owner)
        return receive((DOWN, ref, ANY, ANY, ANY), timeout=5)[4]

    assert run(main) == (Atom("error"), "KeyError", "'boom'")


def test_await_raises_the_crash_in_a_trapping_owner_with_the_exception_as_cause():
    def main():
        process_flag("trap_exit", True)
        t = task.async_(crash, "boom")
        try:
            task.await_(t)
        except CallError as e:
            return e.reason[0], type(e.__cause__).__name__, str(e.__cause__)

    assert run(main) == ((Atom("error"), "KeyError", "'boom'"), "KeyError", "'boom'")


def test_yield_and_shutdown():
    def main():
        t = task.async_(slow, "v", 0.3)
        a = task.yield_(t, 0.01)
        b = task.yield_(t, 2)
        t2 = task.async_(slow, "never", 5)
        c = task.shutdown(t2, 0.5)
        d = beamvm.is_alive(t2.pid)
        t3 = task.async_(double, 4)
        beamvm.sleep(0.1)
        e = task.shutdown(t3, "brutal_kill")  # finished first: its result
        return a, b, c, d, e, receive(timeout=0.05, default="empty")

    assert run(main) == (None, (OK, "v"), None, False, (OK, 8), "empty")


def test_async_stream_keeps_order_and_bounds_concurrency():
    peak = [0, 0]

    def job(x):
        peak[0] += 1
        peak[1] = max(peak[1], peak[0])
        beamvm.sleep(0.02 * (5 - x % 5))
        peak[0] -= 1
        return x * x

    def main():
        return task.async_stream(job, range(10), max_concurrency=3)

    out = run(main)
    assert out == [(OK, x * x) for x in range(10)]
    assert peak[1] <= 3


def test_async_stream_timeouts():
    def main():
        a = task.async_stream(double, [1, 2], timeout=1)  # fine
        b = task.async_stream(_slow_second, [1, 2], timeout=0.05, on_timeout="kill_task")
        try:
            task.async_stream(_slow_second, [1, 2], timeout=0.05)
        except CallError as e:
            c = e.reason[0]
        return a, b, c

    a, b, c = run(main)
    assert a == [(OK, 2), (OK, 4)] and c == Atom("timeout")
    assert b == [(OK, 1), (EXIT_, Atom("timeout"))]


def _slow_second(x):
    if x == 2:
        beamvm.sleep(5)
    return x


def test_task_supervisor_async_nolink_crash_does_not_kill_the_caller():
    def main():
        sup = task.Supervisor.start_link(name="tasks")
        good = task.Supervisor.async_nolink("tasks", double, 5)
        bad = task.Supervisor.async_nolink("tasks", crash, "x")
        out = [task.await_(good)]
        try:
            task.await_(bad)
        except CallError as e:
            out.append(e.reason[0])
        out.append(task.yield_(task.Supervisor.async_nolink(sup, crash, "y"), 5))
        fire = task.Supervisor.start_child(sup, double, 1)
        out.append(type(fire).__name__)
        beamvm.sleep(0.05)
        out.append(DynamicSupervisor.count_children(sup)["active"])
        return out

    assert run(main) == [
        10,
        (Atom("error"), "KeyError", "'x'"),
        (EXIT_, (Atom("error"), "KeyError", "'y'")),
        "Pid",
        0,
    ]


def test_task_bad_input():
    def main():
        errs = []
        cases = ((task.async_, (42,)), (task.await_, ("t",)), (task.async_stream, (double, [1], 0)))
        for f, a in cases:
            try:
                f(*a)
            except (TypeError, ValueError) as e:
                errs.append(type(e).__name__)
        return errs

    assert run(main) == ["TypeError", "TypeError", "ValueError"]


# --------------------------------------------------------------------------- registry


def _registered(reg, key, value, parent):
    registry.register(reg, key, value)
    send(parent, ("registered", self_pid()))
    receive("stop")


def test_unique_registry_register_lookup_conflict_and_death():
    def main():
        me = self_pid()
        registry.start_link(keys="unique", name="reg")
        p = spawn(_registered, "reg", ("user", 1), {"a": 1}, me)
        receive(("registered", p), timeout=5)
        out = [registry.lookup("reg", ("user", 1)) == [(p, {"a": 1})]]
        try:
            registry.register("reg", ("user", 1))
        except RegistryError as e:
            out.append(e.reason == (Atom("already_registered"), p))
        registry.register("reg", "mine", 7)
        out.append(registry.keys("reg", me))
        out.append(registry.count("reg"))
        ref = monitor(p)
        send(p, "stop")
        receive((DOWN, ref, ANY, ANY, ANY), timeout=5)
        out.append(registry.lookup("reg", ("user", 1)))  # vanished with the process
        registry.register("reg", ("user", 1), "now mine")
        out.append(registry.lookup("reg", ("user", 1)) == [(me, "now mine")])
        registry.unregister("reg", ("user", 1))
        out.append(registry.lookup("reg", ("user", 1)))
        return out

    assert run(main) == [True, True, ["mine"], 2, [], True, []]


def test_duplicate_registry_and_dispatch():
    def main():
        me = self_pid()
        registry.start_link(keys="duplicate", name="topics")
        subs = []
        for i in range(3):
            p = spawn(_registered, "topics", "news", i, me)
            receive(("registered", p), timeout=5)
            subs.append(p)
        entries = registry.lookup("topics", "news")
        got = []
        registry.dispatch("topics", "news", got.extend)
        exit(subs[0], Atom("kill"))
        beamvm.sleep(0.05)
        return len(entries), sorted(v for _, v in got), sorted(v for _, v in registry.lookup(
            "topics", "news"))

    assert run(main) == (3, [0, 1, 2], [1, 2])


class Named(GenServer):
    def init(self, tag):
        self.tag = tag

    def handle_call(self, request, from_):
        return (self.tag, request)

    def handle_cast(self, msg):
        self.tag = msg


def test_via_names_in_start_call_cast_send_and_they_vanish():
    def main():
        registry.start_link(keys="unique", name="svc")
        name = registry.via("svc", ("kv", 1))
        pid = Named.start(1, name=name)
        out = [gs.call(name, "hi")]
        gs.cast(name, 2)
        out.append(gs.call(name, "again"))
        try:
            Named.start(3, name=name)
        except beamvm.StartError as e:
            out.append(e.reason == (Atom("already_started"), pid))
        send(name, "info message")  # handle_info: logged as unexpected
        gs.stop(name)
        out.append(registry.whereis_name(("svc", ("kv", 1))))
        try:
            gs.call(name, "gone")
        except CallError as e:
            out.append(e.reason[0])
        try:
            send(name, "nobody")
        except beamvm.BadArg:
            out.append("BadArg")
        return out

    assert run(main) == [(1, "hi"), (2, "again"), True, None, Atom("noproc"), "BadArg"]


def test_registry_bad_input():
    def main():
        errs = []
        for f in (
            lambda: registry.start_link(keys="sometimes", name="x"),
            lambda: registry.start_link(keys="unique", name=42),
            lambda: registry.lookup("no_such_registry", "k"),
        ):
            try:
                f()
            except (TypeError, ValueError) as e:
                errs.append(type(e).__name__)
        return errs

    assert run(main) == ["ValueError", "TypeError", "ValueError"]
