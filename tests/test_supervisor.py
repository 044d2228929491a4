"""beamvm.supervisor: OTP's supervisor semantics (cases ported from OTP's
lib/stdlib/test/supervisor_SUITE.erl where they apply) and the DynamicSupervisor."""

from __future__ import annotations

import logging

import beamvm
import pytest
from beamvm import (
    ANY,
    Atom,
    StartError,
    SupervisorError,
    exit,
    link,
    monitor,
    process_flag,
    receive,
    self_pid,
    send,
)
from beamvm import gen_server as gs
from beamvm import supervisor as sup
from beamvm.gen_server import IGNORE, GenServer, Stop
from beamvm.supervisor import DynamicSupervisor, Supervisor, child_spec

NORMAL, SHUTDOWN, KILLED = Atom("normal"), Atom("shutdown"), Atom("killed")
EXIT, DOWN = Atom("EXIT"), Atom("DOWN")
UNDEFINED = None  # OTP's undefined: the atom is None in Python
RESTARTING, WORKER = Atom("restarting"), Atom("worker")

#: Shared by the test's processes (one interpreter): how the next start of a Worker
#: behaves, per id.
FLAGS: dict = {}


def run(fn, *args, **cfg):
    cfg.setdefault("schedulers", 2)
    return beamvm.run(fn, *args, **cfg)


class Worker(GenServer):
    """supervisor_SUITE's supervisor_1 child, in Python."""

    def init(self, id=None, notify=None, trap=False):
        self.id, self.notify = id, notify
        mode = FLAGS.get(id)
        if mode == "ignore":
            return IGNORE
        if mode == "error":  # start fails from the second start on
            FLAGS[id] = "fail"
        elif mode == "fail":
            raise Stop(Atom("error"))
        elif mode == "slow_fail":
            beamvm.sleep(0.2)
            raise Stop(Atom("error"))
        if trap:
            process_flag("trap_exit", True)
        if notify is not None:
            send(notify, ("started", id, self_pid()))
        return None

    def handle_call(self, request, from_):
        if request == "ping":
            return "pong"
        return None

    def handle_cast(self, msg):
        match msg:
            case ("stop", reason):
                raise Stop(reason)
            case ("sleep", t):
                beamvm.sleep(t)

    def terminate(self, reason):
        if self.notify is not None:
            send(self.notify, ("terminated", self.id, reason))


def spec(id, restart="permanent", shutdown=1.0, notify=None, trap=False, **kw):
    return child_spec(
        id, Worker.start_link, kwargs={"id": id, "notify": notify, "trap": trap},
        restart=restart, shutdown=shutdown, **kw,
    )


def pid_of(s, id):
    for cid, child, _, _ in sup.which_children(s):
        if cid == id:
            return child
    return None


def wait_exit(pid, timeout=5):
    """The reason ``pid`` exits with (the caller traps exits and is linked)."""
    return receive((EXIT, pid, ANY), timeout=timeout)[2]


def wait_down(pid, timeout=5):
    ref = monitor(pid)
    return receive((DOWN, ref, ANY, ANY, ANY), timeout=timeout)[4]


def children(s, field=1):
    """One field of each which_children entry (a loop: a call cannot run in a
    comprehension, which beamvm does not compile)."""
    out = []
    for c in sup.which_children(s):
        out.append(c[field])
    return out


def receive_n(pattern, n, field=1):
    out = []
    for _ in range(n):
        out.append(receive(pattern, timeout=5)[field])
    return out


def counts(s):
    c = sup.count_children(s)
    return [c["specs"], c["active"], c["supervisors"], c["workers"]]


def new_pid(s, id, old, timeout=5):
    """Wait until child ``id`` runs with a pid other than ``old``."""
    for _ in range(int(timeout / 0.01)):
        p = pid_of(s, id)
        if type(p) is beamvm.Pid and p != old:
            return p
        beamvm.sleep(0.01)
    raise AssertionError(f"{id} was not restarted")


# --------------------------------------------------------------------------- start


def test_sup_start_normal_and_shutdown():
    def main():
        process_flag("trap_exit", True)
        s = sup.start_link([], strategy="one_for_one", intensity=2, period=3600, name="sup_test")
        exit(s, SHUTDOWN)
        return wait_exit(s), beamvm.whereis("sup_test")

    assert run(main) == (SHUTDOWN, None)


class IgnoreSup(Supervisor):
    def init(self, mode):
        if mode == "ignore":
            return IGNORE
        if mode == "fail":
            raise KeyError("badmatch")
        if mode == "invalid":
            return "invalid"
        return [], {"strategy": "one_for_one"}


def test_sup_start_ignore_init_error_return_and_fail():
    def main():
        process_flag("trap_exit", True)
        out = [IgnoreSup.start_link("ignore")]
        for mode in ("invalid", "fail"):
            try:
                IgnoreSup.start_link(mode)
            except StartError as e:
                out.append(e.reason[0])
        out.append(receive(timeout=0.1, default="no exit message left"))
        return out

    assert run(main) == [IGNORE, Atom("bad_return"), Atom("error"), "no exit message left"]


def test_sup_start_ignore_child_and_temporary_ignore_not_saved():
    def main():
        process_flag("trap_exit", True)
        FLAGS.update({"c1": "ignore", "t1": "ignore"})
        s = sup.start_link([spec("t1", restart="temporary"), spec("t2", restart="temporary")])
        ids, kids = children(s, 0), children(s)
        a = list(zip(ids, [type(p).__name__ for p in kids], strict=True))
        b = counts(s)
        s2 = sup.start_link([])
        r1 = sup.start_child(s2, spec("c1"))
        c2 = sup.start_child(s2, spec("c2"))
        c = sup.which_children(s2)
        return a, b, r1, c, c2, counts(s2)

    a, b, r1, c, c2, cnt = run(main)
    assert a == [("t2", "Pid")] and b == [1, 1, 0, 1]
    assert r1 == IGNORE
    assert c == [("c1", UNDEFINED, WORKER, ["Worker"]), ("c2", c2, WORKER, ["Worker"])]
    assert cnt == [2, 1, 0, 2]


def test_failing_child_start_fails_the_supervisor_and_stops_started_children():
    def main():
        process_flag("trap_exit", True)
        me = self_pid()
        FLAGS["bad"] = "fail"
        try:
            sup.start_link([spec("ok1", notify=me, trap=True), spec("bad"), spec("never")])
        except StartError as e:
            reason = e.reason
        started = receive(("started", ANY, ANY), timeout=5)
        stopped = receive(("terminated", ANY, ANY), timeout=5)
        return reason, started[1], stopped, receive(("started", ANY, ANY), timeout=0.1,
                                                    default=None)

    reason, started, stopped, never = run(main)
    assert reason == (SHUTDOWN, (Atom("failed_to_start_child"), "bad", Atom("error")))
    assert (started, stopped, never) == ("ok1", ("terminated", "ok1", SHUTDOWN), None)


# --------------------------------------------------------------------------- stop


def _stop_case(shutdown, busy):
    def main():
        process_flag("trap_exit", True)
        s = sup.start_link([], strategy="one_for_one", intensity=2, period=3600)
        c1 = sup.start_child(s, spec("child1", shutdown=1.0, trap=True))
        c2 = sup.start_child(s, spec("child2", shutdown=shutdown, trap=True))
        link(c1)
        link(c2)
        if busy:
            gs.cast(c2, ("sleep", 200))
        exit(s, SHUTDOWN)
        return wait_exit(s), wait_exit(c1), wait_exit(c2)

    return run(main)


def test_sup_stop_infinity():
    assert _stop_case("infinity", False) == (SHUTDOWN, SHUTDOWN, SHUTDOWN)


def test_sup_stop_timeout_kills_a_child_that_does_not_stop_in_time(caplog):
    with caplog.at_level(logging.ERROR, logger="beamvm"):
        assert _stop_case(0.2, True) == (SHUTDOWN, SHUTDOWN, KILLED)
    errors = [r.beamvm_report for r in caplog.records if hasattr(r, "beamvm_report")]
    assert any(e.get("errorContext") == "shutdown_error" and e["reason"] == KILLED
               for e in errors)


def test_sup_stop_brutal_kill():
    assert _stop_case("brutal_kill", False) == (SHUTDOWN, SHUTDOWN, KILLED)


def test_children_stop_in_reverse_start_order():
    def main():
        process_flag("trap_exit", True)
        me = self_pid()
        s = sup.start_link([spec(i, notify=me, trap=True) for i in ("a", "b", "c")])
        exit(s, SHUTDOWN)
        wait_exit(s)
        return receive_n(("terminated", ANY, ANY), 3)

    assert run(main) == ["c", "b", "a"]


# --------------------------------------------------------------------------- admin


def test_child_adm():
    def main():
        process_flag("trap_exit", True)
        s = sup.start_link([], name="sup_test")
        out = []
        c1 = sup.start_child("sup_test", spec("child1"))
        for bad in (spec("child1"),):
            try:
                sup.start_child("sup_test", bad)
            except StartError as e:
                out.append(e.reason)
        out.append(sup.which_children("sup_test") == [("child1", c1, WORKER, ["Worker"])])
        out.append(counts(s))
        for op in (sup.delete_child, sup.restart_child):
            try:
                op(s, "child1")
            except SupervisorError as e:
                out.append(e.reason)
        sup.terminate_child(s, "child1")
        out.append(beamvm.is_alive(c1))
        out.append(sup.which_children(s)[0][1])
        try:
            sup.start_child(s, spec("child1"))
        except StartError as e:
            out.append(e.reason)
        c1b = sup.restart_child(s, "child1")
        out.append(c1b != c1 and beamvm.is_alive(c1b))
        sup.terminate_child(s, "child1")
        sup.delete_child(s, "child1")
        out.append(sup.which_children(s))
        for op in (sup.delete_child, sup.restart_child, sup.terminate_child):
            try:
                op(s, "child1")
            except SupervisorError as e:
                out.append(e.reason)
        return c1, out

    c1, out = run(main)
    assert out == [
        (Atom("already_started"), c1), True, [1, 1, 0, 1],
        Atom("running"), Atom("running"),
        False, UNDEFINED, Atom("already_present"), True, [],
        Atom("not_found"), Atom("not_found"), Atom("not_found"),
    ]


def test_count_children_with_supervisors_and_workers():
    class Inner(Supervisor):
        def init(self):
            return [], {}

    def main():
        s = sup.start_link([spec("w1"), Inner.child_spec(id="inner"), spec("w2")])
        a = counts(s)
        sup.terminate_child(s, "w2")
        return a, counts(s), children(s, 2)

    a, b, types = run(main)
    assert a == [3, 3, 1, 2] and b == [3, 2, 1, 2]
    assert types == [WORKER, Atom("supervisor"), WORKER]


def test_temporary_child_specs_are_not_kept():
    def main():
        s = sup.start_link([spec("t", restart="temporary")])
        t = pid_of(s, "t")
        gs.cast(t, ("stop", Atom("abnormal")))
        wait_down(t)
        beamvm.sleep(0.05)
        a = sup.which_children(s)
        t2 = sup.start_child(s, spec("t2", restart="temporary"))
        sup.terminate_child(s, "t2")
        return a, sup.which_children(s), beamvm.is_alive(t2)

    assert run(main) == ([], [], False)


# --------------------------------------------------------------------------- restart types


@pytest.mark.parametrize(
    "restart,reason,restarted,kept",
    [
        ("permanent", NORMAL, True, True),
        ("transient", NORMAL, False, True),
        ("temporary", NORMAL, False, False),
        ("permanent", SHUTDOWN, True, True),
        ("transient", SHUTDOWN, False, True),
        ("temporary", SHUTDOWN, False, False),
        ("permanent", (SHUTDOWN, "term"), True, True),
        ("transient", (SHUTDOWN, "term"), False, True),
        ("permanent", Atom("abnormal"), True, True),
        ("transient", Atom("abnormal"), True, True),
        ("temporary", Atom("abnormal"), False, False),
    ],
)
def test_restart_type_by_exit_reason(restart, reason, restarted, kept, caplog):
    def main():
        process_flag("trap_exit", True)
        s = sup.start_link([spec("child1", restart=restart)], intensity=2, period=3600)
        c = pid_of(s, "child1")
        gs.cast(c, ("stop", reason))
        wait_down(c)
        beamvm.sleep(0.1)
        children = sup.which_children(s)
        return c, children

    with caplog.at_level(logging.ERROR, logger="beamvm"):
        c, children = run(main)
    assert bool(children) == kept
    if kept:
        now = children[0][1]
        assert (type(now) is beamvm.Pid and now != c) == restarted
        assert restarted or now == UNDEFINED
    terminated = [r for r in caplog.records
                  if getattr(r, "beamvm_report", {}).get("errorContext") == "child_terminated"]
    abnormal = reason == Atom("abnormal") or restart == "permanent"
    assert bool(terminated) == abnormal


# --------------------------------------------------------------------------- strategies


def _three(strategy, notify=None):
    return sup.start_link(
        [spec(i, notify=notify) for i in ("child1", "child2", "child3")],
        strategy=strategy, intensity=4, period=3600,
    )


def test_one_for_one_restarts_only_the_child():
    def main():
        s = _three("one_for_one")
        before = children(s)
        exit(before[0], Atom("abnormal"))
        n1 = new_pid(s, "child1", before[0])
        after = children(s)
        return before, after, n1

    before, after, n1 = run(main)
    assert after == [n1, before[1], before[2]]


def _crash_second(strategy, restarts):
    """Start child1..3 under ``strategy``, crash child2; return (pids before, pids after,
    the order of the ``restarts`` restarts)."""

    def main():
        s = _three(strategy, self_pid())
        receive_n(("started", ANY, ANY), 3)
        before = children(s)
        exit(before[1], Atom("abnormal"))
        order = receive_n(("started", ANY, ANY), restarts)
        return before, children(s), order

    return run(main)


def test_one_for_all_restarts_every_child_in_start_order():
    before, after, order = _crash_second("one_for_all", 3)
    assert order == ["child1", "child2", "child3"]
    assert all(a != b for a, b in zip(after, before, strict=True))


def test_rest_for_one_restarts_the_child_and_those_after_it():
    before, after, order = _crash_second("rest_for_one", 2)
    assert order == ["child2", "child3"]
    assert after[0] == before[0] and after[1] != before[1] and after[2] != before[2]


@pytest.mark.parametrize("strategy", ["one_for_one", "one_for_all", "rest_for_one"])
def test_escalation_when_restarts_fail(strategy, caplog):
    """supervisor_SUITE's *_escalation: child1 cannot start again; the retries exceed
    the intensity and the supervisor ends with shutdown, taking child2 with it."""

    def main():
        process_flag("trap_exit", True)
        FLAGS["child1"] = "error"
        s = sup.start_link([], strategy=strategy, intensity=4, period=3600)
        c1 = sup.start_child(s, spec("child1"))
        c2 = sup.start_child(s, spec("child2"))
        link(c2)
        exit(c1, Atom("abnormal"))
        return wait_exit(s), wait_exit(c2)

    with caplog.at_level(logging.ERROR, logger="beamvm"):
        assert run(main) == (SHUTDOWN, SHUTDOWN)
    contexts = [getattr(r, "beamvm_report", {}).get("errorContext") for r in caplog.records]
    assert contexts.count("start_error") == 4 and "shutdown" in contexts
    FLAGS.pop("child1", None)


def test_intensity_escalates_through_a_supervisor_tree():
    class Inner(Supervisor):
        def init(self):
            return [spec("w")], {"intensity": 0}

    def main():
        me = self_pid()
        outer = sup.start_link([Inner.child_spec(id="inner"), spec("other", notify=me)],
                               intensity=1, period=3600)
        receive(("started", "other", ANY), timeout=5)
        inner = pid_of(outer, "inner")
        w = pid_of(inner, "w")
        reason = wait_down_after(w, inner)
        new_inner = new_pid(outer, "inner", inner)
        return reason, new_inner != inner, pid_of(outer, "other") is not None

    assert run(main) == (SHUTDOWN, True, True)


def wait_down_after(w, inner):
    ref = monitor(inner)
    exit(w, Atom("boom"))
    return receive((DOWN, ref, ANY, ANY, ANY), timeout=5)[4]


def test_intensity_defaults_one_restart_in_five_seconds():
    def main():
        process_flag("trap_exit", True)
        s = sup.start_link([spec("c")])
        c = pid_of(s, "c")
        exit(c, Atom("boom"))
        c = new_pid(s, "c", c)
        exit(c, Atom("boom"))
        return wait_exit(s)

    assert run(main) == SHUTDOWN


def test_hanging_restart_loop_does_not_block_the_supervisor():
    """supervisor_SUITE's hanging_restart_loop: while a child's restart keeps failing
    (slowly), the supervisor still answers requests and can be stopped."""

    def main():
        process_flag("trap_exit", True)
        s = sup.start_link([], intensity=8, period=10)
        c1 = sup.start_child(s, spec("child1", shutdown="brutal_kill"))
        FLAGS["child1"] = "slow_fail"
        exit(c1, Atom("error"))
        beamvm.sleep(0.5)
        out = []
        try:
            sup.start_child(s, spec("child1"))
        except StartError as e:
            out.append(e.reason)
        try:
            sup.restart_child(s, "child1")
        except SupervisorError as e:
            out.append(e.reason)
        try:
            sup.delete_child(s, "child1")
        except SupervisorError as e:
            out.append(e.reason)
        out.append(sup.which_children(s))
        out.append(counts(s))
        sup.terminate_child(s, "child1")
        out.append(sup.which_children(s)[0][1])
        FLAGS.pop("child1")
        c2 = sup.restart_child(s, "child1")
        out.append(counts(s))
        exit(s, SHUTDOWN)
        out.append(wait_exit(s))
        out.append(beamvm.is_alive(c2))
        return out

    assert run(main) == [
        Atom("already_present"), RESTARTING, RESTARTING,
        [("child1", RESTARTING, WORKER, ["Worker"])], [1, 0, 0, 1],
        UNDEFINED, [1, 1, 0, 1], SHUTDOWN, False,
    ]


# --------------------------------------------------------------------------- class form, specs


class AppSup(Supervisor):
    def init(self, notify):
        return [spec("db", notify=notify), Worker.child_spec("cache", notify, id="cache")], {
            "strategy": "one_for_all", "intensity": 3, "period": 10.0}


def test_class_form_and_genserver_child_spec():
    def main():
        me = self_pid()
        s = AppSup.start_link(me, name="app_sup")
        started = sorted(receive_n(("started", ANY, ANY), 2))
        return started, children("app_sup", 0), s

    started, ids, _ = run(main)
    assert started == ["cache", "db"] and ids == ["db", "cache"]


def test_reports_shapes(caplog):
    def main():
        s = sup.start_link([spec("c")], name="rep_sup", intensity=5)
        c = pid_of(s, "c")
        exit(c, Atom("boom"))
        new_pid(s, "c", c)
        return c

    with caplog.at_level(logging.INFO, logger="beamvm"):
        c = run(main)
    reps = [r.beamvm_report for r in caplog.records if hasattr(r, "beamvm_report")]
    progress = [r for r in reps if r["label"] == ("supervisor", "progress")]
    assert len(progress) == 2 and progress[0]["supervisor"] == "rep_sup"
    assert progress[0]["started"]["id"] == "c"
    (term,) = [r for r in reps if r["label"] == ("supervisor", "child_terminated")]
    assert term["reason"] == Atom("boom") and term["offender"]["pid"] == c
    assert term["offender"]["restart_type"] == "permanent"
    assert term["offender"]["shutdown"] == 1.0 and term["offender"]["child_type"] == "worker"


def test_malformed_specs_raise_before_anything_starts():
    def main():
        before = len(beamvm.processes())
        errs = []
        for f in (
            lambda: child_spec("x", Worker.start_link, restart="sometimes"),
            lambda: child_spec("x", Worker.start_link, shutdown="soon"),
            lambda: child_spec("x", Worker.start_link, shutdown=-1),
            lambda: child_spec("x", "not callable"),
            lambda: child_spec("x", Worker.start_link, type="daemon"),
            lambda: child_spec({"unhashable": 1}, Worker.start_link),
            lambda: child_spec(object(), Worker.start_link),
            lambda: sup.start_link([spec("a"), spec("a")]),
            lambda: sup.start_link([spec("a")], strategy="one_for_some"),
            lambda: sup.start_link([spec("a")], intensity=-1),
            lambda: sup.start_link([spec("a")], period=0),
            lambda: sup.start_link(["not a spec"]),
            lambda: DynamicSupervisor.start_link(max_children=-1),
        ):
            try:
                f()
                errs.append("no error")
            except (TypeError, ValueError) as e:
                errs.append((type(e).__name__, str(e)))
        return errs, len(beamvm.processes()) - before

    errs, new = run(main)
    assert new == 0
    assert [k for k, _ in errs] == ["ValueError", "TypeError", "ValueError", "TypeError",
                                    "ValueError", "TypeError", "TypeError", "ValueError",
                                    "ValueError", "ValueError", "ValueError", "TypeError",
                                    "ValueError"]
    assert "restart must be one of 'permanent', 'transient', 'temporary'" in errs[0][1]
    assert "duplicate child id 'a'" in errs[7][1]


# --------------------------------------------------------------------------- dynamic


def test_dynamic_supervisor_start_restart_terminate_and_max_children():
    def main():
        process_flag("trap_exit", True)
        d = DynamicSupervisor.start_link(max_children=2, name="pool")
        a = DynamicSupervisor.start_child("pool", spec("w", restart="permanent"))
        b = DynamicSupervisor.start_child("pool", spec("w", restart="temporary"))
        out = []
        try:
            DynamicSupervisor.start_child("pool", spec("w"))
        except StartError as e:
            out.append(e.reason)
        out.append(DynamicSupervisor.count_children(d))
        exit(a, Atom("boom"))
        exit(b, Atom("boom"))
        beamvm.sleep(0.1)
        kids = DynamicSupervisor.which_children(d)
        out.append(len(kids))
        out.append(kids[0][1] not in (a, b) and kids[0][0] == UNDEFINED)
        DynamicSupervisor.terminate_child(d, kids[0][1])
        try:
            DynamicSupervisor.terminate_child(d, kids[0][1])
        except SupervisorError as e:
            out.append(e.reason)
        out.append(DynamicSupervisor.which_children(d))
        return out

    assert run(main) == [
        Atom("max_children"),
        {"specs": 2, "active": 2, "supervisors": 0, "workers": 2},
        1, True, Atom("not_found"), [],
    ]


def test_dynamic_supervisor_escalation_and_shutdown_of_all_children():
    def main():
        process_flag("trap_exit", True)
        d = DynamicSupervisor.start_link(max_restarts=3, max_seconds=5.0)
        for i in range(5):
            DynamicSupervisor.start_child(d, spec(i))
        seen = set()
        for _ in range(4):  # 4 crashes in a row: one more than max_restarts
            kids = DynamicSupervisor.which_children(d)
            seen.update(k[1] for k in kids)
            exit(kids[0][1], Atom("boom"))
            beamvm.sleep(0.05)
        return wait_exit(d), [p for p in seen if beamvm.is_alive(p)]

    assert run(main) == (SHUTDOWN, [])
