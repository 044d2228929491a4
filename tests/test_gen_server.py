"""beamvm.gen_server: OTP's gen_server semantics (cases ported from OTP's
lib/stdlib/test/gen_server_SUITE.erl where they apply, plus the call failure cases)."""

from __future__ import annotations

import logging

import beamvm
import pytest
from beamvm import (
    ANY,
    Atom,
    CallError,
    StartError,
    exit,
    monitor,
    process_flag,
    process_info,
    receive,
    self_pid,
    send,
    spawn,
    spawn_monitor,
)
from beamvm import gen_server as gs
from beamvm.gen_server import IGNORE, Continue, GenServer, NoReply, Stop

NORMAL, SHUTDOWN, KILL = Atom("normal"), Atom("shutdown"), Atom("kill")
NOPROC, TIMEOUT, EXIT, DOWN = Atom("noproc"), Atom("timeout"), Atom("EXIT"), Atom("DOWN")
CALL_MFA = (Atom("gen_server"), Atom("call"))


def run(fn, *args, **cfg):
    cfg.setdefault("schedulers", 2)
    return beamvm.run(fn, *args, **cfg)


class Suite(GenServer):
    """The callback module of gen_server_SUITE, in Python."""

    def init(self, arg=None, notify=None):
        self.notify = notify
        self.state = arg
        match arg:
            case "ignore":
                return IGNORE
            case "stop":
                raise Stop(Atom("stopped"))
            case "sleep":
                beamvm.sleep(1.0)
            case "crash":
                raise KeyError("in init")
            case "trap":
                process_flag("trap_exit", True)
            case "continue":
                return Continue("from_init")
            case "bad":
                return 42
        return None

    def handle_call(self, request, from_):
        match request:
            case "started_p":
                return Atom("ok")
            case "stop":
                raise Stop(Atom("stopped"), reply=Atom("ok"))
            case ("delayed_answer", t):
                beamvm.sleep(t)
                return Atom("delayed")
            case "crash":
                raise RuntimeError("crashed")
            case "shutdown_reason":
                exit((SHUTDOWN, Atom("reason")))
            case "stop_shutdown_reason":
                raise Stop((SHUTDOWN, Atom("stop_reason")))
            case "exit_shutdown":
                exit(SHUTDOWN)
            case "stop_shutdown":
                raise Stop(SHUTDOWN)
            case "later":
                send(self.notify, ("from", from_))
                return NoReply
            case "continue":
                return Continue("from_call", reply="replied first")
            case "state":
                return self.state
            case ("echo", x):
                return x
        return ("unknown", request)

    def handle_cast(self, msg):
        match msg:
            case ("set", x):
                self.state = x
            case "bad_return":
                return 42
            case "crash":
                raise ValueError("cast crash")
        return None

    def handle_info(self, msg):
        if self.notify is not None:
            send(self.notify, ("info", msg))

    def handle_continue(self, arg):
        self.state = ("continued", arg)

    def terminate(self, reason):
        if self.notify is not None:
            send(self.notify, ("terminate", reason))

    def __repr__(self):
        return f"Suite(state={self.state!r})"


def flush(timeout=0.05):
    out = []
    while True:
        m = receive(timeout=timeout, default=None)
        if m is None:
            return out
        out.append(m)


# --------------------------------------------------------------------------- start


def test_start_anonymous_call_and_stop_then_noproc():
    def main():
        pid = Suite.start()
        a = gs.call(pid, "started_p")
        b = gs.call(pid, "stop")
        ref = monitor(pid)
        receive((DOWN, ref, ANY, ANY, ANY), timeout=5)
        try:
            gs.call(pid, "started_p", timeout=1)
        except CallError as e:
            return a, b, e.reason

    a, b, reason = run(main)
    assert (a, b) == (Atom("ok"), Atom("ok"))
    assert reason[0] == NOPROC and reason[1][:2] == CALL_MFA
    assert reason[1][2][1:] == ["started_p", 1]


def test_start_with_timeout_ignore_stop_and_crash():
    def main():
        pid = Suite.start(timeout=1.0)
        ok = gs.call(pid, "started_p")
        gs.call(pid, "stop")
        out = [ok]
        before = set(beamvm.processes())
        try:
            Suite.start("sleep", timeout=0.1)
        except StartError as e:
            out.append(e.reason)
        beamvm.sleep(0.05)
        out.append(set(beamvm.processes()) - before)  # the sleeping server was killed
        out.append(Suite.start("ignore"))
        try:
            Suite.start("stop")
        except StartError as e:
            out.append(e.reason)
        try:
            Suite.start("crash")
        except StartError as e:
            out.append(e.reason)
        try:
            Suite.start("bad")
        except StartError as e:
            out.append(e.reason)
        out.append(flush())
        return out

    out = run(main)
    assert out == [
        Atom("ok"),
        TIMEOUT,
        set(),
        IGNORE,
        Atom("stopped"),
        (Atom("error"), "KeyError", "'in init'"),
        (Atom("bad_return_value"), 42),
        [],
    ]


def test_start_link_stop_reaches_a_trapping_parent():
    def main():
        process_flag("trap_exit", True)
        pid = Suite.start_link()
        gs.call(pid, "stop")
        return pid, receive((EXIT, pid, ANY), timeout=5)

    pid, msg = run(main)
    assert msg == (EXIT, pid, Atom("stopped"))


def test_start_link_failure_is_raised_and_its_exit_consumed_when_trapping():
    def main():
        process_flag("trap_exit", True)
        try:
            Suite.start_link("stop")
        except StartError as e:
            return e.reason, flush()

    assert run(main) == (Atom("stopped"), [])


def test_start_link_failure_kills_a_caller_that_does_not_trap_exits():
    # OTP: the failed server's exit signal reaches the linked caller.
    def starter():
        try:
            Suite.start_link("stop")
        except StartError:
            beamvm.sleep(5)

    def main():
        _, ref = spawn_monitor(starter)
        return receive((DOWN, ref, ANY, ANY, ANY), timeout=5)[4]

    assert run(main) == Atom("stopped")


def test_local_name_and_already_started():
    def main():
        pid = Suite.start(name="my_test_name")
        a = gs.call("my_test_name", "started_p")
        b = gs.call(Atom("my_test_name"), "started_p")
        try:
            Suite.start(name="my_test_name")
        except StartError as e:
            c = e.reason
        gs.call("my_test_name", "stop")
        ref = monitor(pid)
        receive((DOWN, ref, ANY, ANY, ANY), timeout=5)
        return pid, a, b, c, beamvm.whereis("my_test_name")

    pid, a, b, c, after = run(main)
    assert a == b == Atom("ok")
    assert c == (Atom("already_started"), pid)
    assert after is None


class DummyVia:
    """OTP's dummy_via: a via module backed by a dict (no process)."""

    def __init__(self):
        self.names = {}

    def register_name(self, key, pid):
        if key in self.names and beamvm.is_alive(self.names[key]):
            return False
        self.names[key] = pid
        return True

    def unregister_name(self, key):
        self.names.pop(key, None)

    def whereis_name(self, key):
        pid = self.names.get(key)
        return pid if pid is not None and beamvm.is_alive(pid) else None

    def send(self, key, msg):
        pid = self.whereis_name(key)
        if pid is None:
            raise beamvm.BadArg(f"no process for {key!r}")
        send(pid, msg)


def test_via_name_start_call_already_started_and_stop():
    via = ("via", DummyVia(), "my_test_name")

    def main():
        pid = Suite.start(name=via)
        a = gs.call(via, "started_p")
        try:
            Suite.start(name=via)
        except StartError as e:
            b = e.reason
        gs.stop(via)
        try:
            gs.stop(via)
        except CallError as e:
            c = e.reason
        return pid, a, b, c

    pid, a, b, c = run(main)
    assert a == Atom("ok") and b == (Atom("already_started"), pid) and c == NOPROC


# --------------------------------------------------------------------------- stop


def test_stop_normal_other_reason_invalid_timeout_and_name():
    def main():
        out = []
        pid = Suite.start()
        out.append(gs.stop(pid))
        out.append(beamvm.is_alive(pid))
        try:
            gs.stop(pid)
        except CallError as e:
            out.append(e.reason)
        pid = Suite.start()
        gs.stop(pid, Atom("other_reason"), None)
        out.append(beamvm.is_alive(pid))
        pid = Suite.start()
        try:
            gs.stop(pid, Atom("other_reason"), "invalid_timeout")
        except TypeError:
            out.append("TypeError")
        try:
            gs.stop(pid, timeout=-1)
        except ValueError:
            out.append("ValueError")
        out.append(beamvm.is_alive(pid))
        gs.stop(pid)
        pid = Suite.start(name="to_stop")
        gs.stop("to_stop")
        out.append(beamvm.is_alive(pid))
        try:
            gs.stop("to_stop")
        except CallError as e:
            out.append(e.reason)
        return out

    assert run(main) == [None, False, NOPROC, False, "TypeError", "ValueError", True, False, NOPROC]


def test_stop_timeout_and_terminate_runs_with_the_reason():
    def main():
        me = self_pid()
        pid = Suite.start(None, me)
        gs.cast(pid, ("set", "x"))
        gs.stop(pid, Atom("other"))
        t = receive(("terminate", ANY), timeout=5)
        slow = Suite.start()
        send(slow, "no-op")  # handle_info with notify None
        # A server busy in a long call does not stop within 0.05 s.
        gs.send_request(slow, ("delayed_answer", 0.5))
        try:
            gs.stop(slow, timeout=0.05)
        except CallError as e:
            r = e.reason
        return t, r, flush()

    assert run(main) == (("terminate", Atom("other")), TIMEOUT, [])


# --------------------------------------------------------------------------- crash


def test_crash_reports_and_reasons(caplog):
    def main():
        process_flag("trap_exit", True)
        out = []
        for req in ("shutdown_reason", "stop_shutdown_reason", "exit_shutdown", "stop_shutdown"):
            pid = Suite.start_link()
            try:
                gs.call(pid, req)
            except CallError as e:
                out.append(e.reason[0])
            out.append(receive((EXIT, pid, ANY), timeout=5)[2])
        process_flag("trap_exit", False)
        pid = Suite.start(("state4",), name="crasher")
        try:
            gs.call("crasher", "crash")
        except CallError as e:
            out.append(e.reason)
        return pid, out

    with caplog.at_level(logging.ERROR, logger="beamvm"):
        pid, out = run(main)
    sr, ssr = (SHUTDOWN, Atom("reason")), (SHUTDOWN, Atom("stop_reason"))
    assert out[:8] == [sr, sr, ssr, ssr, SHUTDOWN, SHUTDOWN, SHUTDOWN, SHUTDOWN]
    crash = (Atom("error"), "RuntimeError", "crashed")
    assert out[8] == (crash, (*CALL_MFA, ["crasher", "crash", 5.0]))
    reports = [r for r in caplog.records if "Generic server" in r.getMessage()]
    assert len(reports) == 1, [r.getMessage() for r in caplog.records]
    text = reports[0].getMessage()
    assert "'crasher'" in text and repr(pid) in text
    assert "Last message in was" in text and "'crash'" in text
    assert "When Server state == Suite(state=('state4',))" in text
    assert "RuntimeError" in text
    assert reports[0].exc_info is not None  # the traceback
    rep = reports[0].beamvm_report
    assert rep["name"] == "crasher" and rep["reason"] == crash


def test_crash_report_truncates_a_huge_state(caplog):
    def main():
        pid = Suite.start("x" * 100_000)
        _, ref = pid, monitor(pid)
        gs.cast(pid, "crash")
        return receive((DOWN, ref, ANY, ANY, ANY), timeout=5)[4]

    with caplog.at_level(logging.ERROR, logger="beamvm"):
        reason = run(main)
    assert reason == (Atom("error"), "ValueError", "cast crash")
    (rec,) = [r for r in caplog.records if "Generic server" in r.getMessage()]
    assert len(rec.getMessage()) < 5000 and "more characters" in rec.getMessage()


def test_bad_return_from_handle_cast_stops_the_server():
    def main():
        pid = Suite.start()
        ref = monitor(pid)
        gs.cast(pid, "bad_return")
        return receive((DOWN, ref, ANY, ANY, ANY), timeout=5)[4]

    assert run(main) == (Atom("bad_return_value"), 42)


# --------------------------------------------------------------------------- call


def test_call_delayed_answer_and_timeout_drops_the_late_reply():
    def main():
        pid = Suite.start(name="my_test_name")
        a = gs.call("my_test_name", ("delayed_answer", 0.01), timeout=2)
        try:
            gs.call("my_test_name", ("delayed_answer", 0.3), timeout=0.01)
        except CallError as e:
            r = e.reason
        beamvm.sleep(0.5)  # the server has replied by now
        info = process_info()
        late = flush()
        return (
            a,
            r,
            late,
            info["message_queue_len"],
            info["aliases"],
            process_info(pid)["monitored_by"],
        )

    a, r, late, qlen, aliases, monitored_by = run(main)
    assert a == Atom("delayed")
    assert r == (TIMEOUT, (*CALL_MFA, ["my_test_name", ("delayed_answer", 0.3), 0.01]))
    assert (late, qlen, aliases, monitored_by) == ([], 0, 0, [])


def test_call_to_a_dead_pid_an_unknown_name_and_self():
    def main():
        pid = Suite.start()
        gs.stop(pid)
        out = []
        for server in (pid, "nobody", Atom("nobody")):
            try:
                gs.call(server, "started_p")
            except CallError as e:
                out.append(e.reason)
        try:
            gs.call(self_pid(), "x", timeout=None)
        except CallError as e:
            out.append(e.reason)
        return pid, out

    pid, out = run(main)
    assert out[0] == (NOPROC, (*CALL_MFA, [pid, "started_p", 5.0]))  # default 5 s
    assert out[1] == (NOPROC, (*CALL_MFA, ["nobody", "started_p", 5.0]))
    assert out[2] == (NOPROC, (*CALL_MFA, [Atom("nobody"), "started_p", 5.0]))
    assert out[3][0] == Atom("calling_self") and out[3][1][2][2] == Atom("infinity")


def test_call_when_the_server_dies_during_the_call():
    def main():
        pid = Suite.start()
        killer = spawn(_kill_after, pid, 0.05)
        assert killer
        try:
            gs.call(pid, ("delayed_answer", 2), timeout=None)
        except CallError as e:
            return e.reason, process_info()["aliases"], flush()

    reason, aliases, rest = run(main)
    assert reason[0] == Atom("killed") and reason[1][2][2] == Atom("infinity")
    assert (aliases, rest) == (0, [])


REPLIES = [None, 7, "text", ("a", (Atom("b"), [1, 2])), (), (1,), {"k": (2,)}, b"\x00" * 10]


def test_replies_arrive_intact_on_both_call_paths():
    # A compiled call site yields the native call's receive op itself and the driver
    # resumes the frame with the reply; other callers (a partial, spawn(gs.call, ...))
    # run it with yield from and get the reply through StopIteration: a tuple must not
    # be taken apart as the exception's arguments on either path.
    import functools

    def main():
        pid = Suite.start()
        direct = [gs.call(pid, ("echo", r)) for r in REPLIES]
        partial = [functools.partial(gs.call, pid)(("echo", r)) for r in REPLIES]
        me = self_pid()
        spawned = []
        for r in REPLIES:
            spawn(lambda r=r: send(me, ("got", gs.call(pid, ("echo", r)))))
            spawned.append(receive(("got", ANY), timeout=5)[1])
        try:
            functools.partial(gs.call, pid)(("delayed_answer", 1), timeout=0.01)
        except CallError as e:
            late = e.reason[0]
        return direct, partial, spawned, late, flush(0.02)

    direct, partial, spawned, late, rest = run(main)
    for got in (direct, partial, spawned):
        assert [type(x) for x in got] == [type(x) for x in REPLIES]
        assert [repr(x) for x in got] == [repr(x) for x in REPLIES]
    assert (late, rest) == (TIMEOUT, [])


def _kill_after(pid, t):
    beamvm.sleep(t)
    exit(pid, KILL)


def test_uncaught_call_error_exits_the_caller_with_its_reason():
    def caller(server):
        gs.call(server, "x", timeout=1)

    def main():
        _, ref = spawn_monitor(caller, "nobody")
        return receive((DOWN, ref, ANY, ANY, ANY), timeout=5)[4]

    assert run(main) == (NOPROC, (*CALL_MFA, ["nobody", "x", 1]))


def test_noreply_and_reply_from_another_process():
    def main():
        me = self_pid()
        pid = Suite.start(None, me)
        helper = spawn(_reply_when_told, me)
        req = gs.send_request(pid, "later")
        _, from_ = receive(("from", ANY), timeout=5)
        send(helper, from_)
        return gs.receive_response(req, timeout=5)

    assert run(main) == "late answer"


def _reply_when_told(parent):
    from_ = receive()
    gs.reply(from_, "late answer")


def test_send_request_to_dead_and_missing_servers():
    def main():
        pid = Suite.start()
        gs.stop(pid)
        out = []
        for server in (pid, "missing"):
            req = gs.send_request(server, "x")
            try:
                gs.receive_response(req, timeout=1)
            except CallError as e:
                out.append(e.reason)
        slow = Suite.start()
        req = gs.send_request(slow, ("delayed_answer", 0.2))
        try:
            gs.receive_response(req, timeout=0.01)
        except CallError as e:
            out.append(e.reason)
        beamvm.sleep(0.3)
        out.append(flush())
        out.append(process_info()["aliases"])
        return pid, out

    pid, out = run(main)
    assert out == [(NOPROC, pid), (NOPROC, "missing"), TIMEOUT, [], 0]


def test_cast_info_and_continue():
    def main():
        me = self_pid()
        pid = Suite.start("continue", me)
        a = gs.call(pid, "state")  # handle_continue ran before the first message
        b = gs.call(pid, "continue")
        c = gs.call(pid, "state")
        gs.cast(pid, ("set", 5))
        d = gs.call(pid, "state")
        send(pid, "hello")
        e = receive(("info", ANY), timeout=5)
        gs.cast("nobody", "dropped")  # never fails
        gs.cast(pid, ("set", [1, 2]))
        return a, b, c, d, e, gs.call(pid, "state")

    assert run(main) == (
        ("continued", "from_init"),
        "replied first",
        ("continued", "from_call"),
        5,
        ("info", "hello"),
        [1, 2],
    )


# --------------------------------------------------------------------------- terminate rules


def _linked_parent(notify, trap):
    pid = Suite.start_link("trap" if trap else None, notify)
    send(notify, ("server", pid))
    receive()  # wait until killed


def test_terminate_on_parent_shutdown_only_when_trapping_exits():
    def main():
        me = self_pid()
        out = []
        for trap in (True, False):
            parent = spawn(_linked_parent, me, trap)
            _, server = receive(("server", ANY), timeout=5)
            ref = monitor(server)
            exit(parent, SHUTDOWN)
            out.append(receive((DOWN, ref, ANY, ANY, ANY), timeout=5)[4])
            out.append(receive(("terminate", ANY), timeout=0.2, default=None))
        return out

    assert run(main) == [SHUTDOWN, ("terminate", SHUTDOWN), SHUTDOWN, None]


def test_terminate_runs_on_stop_and_on_crash_but_not_on_kill():
    def main():
        me = self_pid()
        out = []
        pid = Suite.start(None, me)
        gs.call(pid, "stop")
        out.append(receive(("terminate", ANY), timeout=5))
        pid = Suite.start(None, me)
        gs.cast(pid, "crash")
        out.append(receive(("terminate", ANY), timeout=5))
        pid = Suite.start("trap", me)
        exit(pid, KILL)
        out.append(receive(("terminate", ANY), timeout=0.2, default=None))
        return out

    out = run(main)
    assert out[0] == ("terminate", Atom("stopped"))
    assert out[1] == ("terminate", (Atom("error"), "ValueError", "cast crash"))
    assert out[2] is None


# --------------------------------------------------------------------------- bad input


def test_bad_input_is_rejected_before_any_process_starts():
    class NoInit(GenServer):
        pass

    def main():
        before = len(beamvm.processes())
        errors = []
        for f in (
            lambda: NoInit.start(),
            lambda: gs.start(int),
            lambda: Suite.start(name=42),
            lambda: Suite.start(timeout=-1),
            lambda: Suite.start(timeout="soon"),
            lambda: gs.call(self_pid(), "x", timeout=-0.5),
            lambda: gs.call(self_pid(), "x", timeout=True),
            lambda: gs.call(12, "x"),
            lambda: gs.reply("nonsense", 1),
            lambda: gs.receive_response("nonsense"),
        ):
            try:
                f()
            except (TypeError, ValueError) as e:
                errors.append((type(e).__name__, str(e)))
        return errors, len(beamvm.processes()) - before

    errors, new = run(main)
    assert new == 0
    kinds = [k for k, _ in errors]
    assert kinds == ["TypeError", "TypeError", "TypeError", "ValueError", "TypeError",
                     "ValueError", "TypeError", "TypeError", "TypeError", "TypeError"]
    assert "NoInit must define init" in errors[0][1]
    assert "timeout must be >= 0" in errors[3][1]


def test_client_functions_outside_a_process_say_so():
    with pytest.raises(RuntimeError, match=r"gen_server.call\(\) must be called inside"):
        gs.call("x", "y")


# --------------------------------------------------------------------------- queues, leaks


def _caller_with_stash(parent, server, n, calls):
    while process_info()["message_queue_len"] < n:
        beamvm.sleep(0.01)
    send(parent, "stashed")
    receive(("go",))
    for i in range(calls):
        gs.call(server, ("echo", i))
    send(parent, ("done", process_info()["message_queue_len"]))
    receive(("stop",))


def test_call_with_huge_message_queue_does_not_scan_it():
    """OTP's call_with_huge_message_queue, counting work (reductions) instead of time."""
    n, calls = 50_000, 200

    def main():
        me = self_pid()
        server = Suite.start()
        c = spawn(_caller_with_stash, me, server, n, calls)
        for i in range(n):
            send(c, ("noise", i))
        receive("stashed", timeout=60)
        before = process_info(c)["reductions"]
        send(c, ("go",))
        done = receive(("done", ANY), timeout=60)
        work = process_info(c)["reductions"] - before
        send(c, ("stop",))
        return done, work

    done, work = run(main, schedulers=1)
    assert done == ("done", n)
    assert work < calls * 500, f"{calls} calls took {work} reductions"


def test_no_leaked_monitors_or_aliases_after_many_calls_and_timeouts():
    def main():
        pid = Suite.start()
        for i in range(500):
            gs.call(pid, ("echo", i))
        for _ in range(20):
            try:
                gs.call(pid, ("delayed_answer", 0.02), timeout=0.001)
            except CallError:
                pass
        beamvm.sleep(0.6)
        me = process_info()
        srv = process_info(pid)
        return flush(), me["aliases"], srv["monitored_by"], beamvm._native._alias_count()

    assert run(main) == ([], 0, [], 0)


def _hammer(parent, server, n):
    total = 0
    for i in range(n):
        total += gs.call(server, ("echo", i))
    send(parent, ("sum", total))


def test_many_concurrent_callers_then_the_server_dies_under_them():
    """2,000 processes x 20 calls each, all answered in full; then 500 callers blocked on a
    server that is killed all get its exit reason. Nothing is left behind."""

    def main():
        me = self_pid()
        srv = Suite.start()
        for _ in range(2000):
            spawn(_hammer, me, srv, 20)
        sums = 0
        for _ in range(2000):
            sums += receive(("sum", ANY), timeout=60)[1]
        slow = Suite.start()
        for _ in range(500):
            spawn(_blocked_caller, me, slow)
        beamvm.sleep(0.2)
        exit(slow, KILL)
        reasons = set()
        for _ in range(500):
            reasons.add(receive(("failed", ANY), timeout=60)[1])
        beamvm.sleep(0.1)
        return sums, reasons, beamvm._native._alias_count(), process_info(srv)["monitored_by"]

    sums, reasons, aliases, monitored_by = run(main)
    assert sums == 2000 * sum(range(20))
    assert reasons == {Atom("killed")}
    assert aliases == 0 and monitored_by == []


def _blocked_caller(parent, server):
    try:
        gs.call(server, ("delayed_answer", 30), timeout=None)
    except CallError as e:
        send(parent, ("failed", e.reason[0]))


_MANY_ATOMS_FIRST = r"""
import beamvm
# Thousands of atoms before the OTP modules are imported: their tag atoms ('system'
# here) are past the ones that share one Python object, so the server loop's identity
# checks must fall back on equality.
for i in range(5000):
    beamvm.Atom(f"early_{i}")
from beamvm import gen_server, sys as bsys
from beamvm.gen_server import GenServer

class Counter(GenServer):
    def init(self):
        self.n = 0
    def handle_call(self, request, from_):
        return self.n
    def handle_cast(self, msg):
        self.n += msg
    def handle_info(self, msg):
        self.n += 100

def main():
    pid = Counter.start()
    gen_server.cast(pid, 2)
    beamvm.send(pid, ("tick",))
    assert gen_server.call(pid, "get") == 102
    assert bsys.get_state(pid).n == 102
    gen_server.stop(pid)
    print("ok")

beamvm.run(main)
"""


def test_tags_made_after_thousands_of_atoms_still_reach_their_handlers(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "many_atoms_first.py"  # a file: process code needs its source
    script.write_text(_MANY_ATOMS_FIRST)
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
