"""Python semantics inside a process (issue 9, section 2): exit reasons and flags as
Erlang has them, monitors of names, process_info of oneself, timers to names, errors
that name things as the user wrote them, pickling pids and refs."""

from __future__ import annotations

import copy
import pickle

import beamvm
import pytest
from beamvm import (
    ANY,
    KILL,
    NORMAL,
    SHUTDOWN,
    Atom,
    BadArg,
    Pid,
    ProcessExit,
    Ref,
    receive,
    self_pid,
    send,
    spawn,
    spawn_monitor,
)

DOWN = Atom("DOWN")
EXIT = Atom("EXIT")


def run(fn, *args, **cfg):
    cfg.setdefault("schedulers", 2)
    return beamvm.run(fn, *args, **cfg)


def down_of(ref, timeout=2):
    return receive((DOWN, ref, ANY, ANY, ANY), timeout=timeout)


# --------------------------------------------------------------------------- exit reasons


def test_exit_constants_are_the_atoms():
    assert (NORMAL, KILL, SHUTDOWN) == (Atom("normal"), Atom("kill"), Atom("shutdown"))
    assert all(name in beamvm.__all__ for name in ("NORMAL", "KILL", "SHUTDOWN"))


@pytest.mark.parametrize("spelling,const", [("normal", "NORMAL"), ("kill", "KILL"),
                                            ("shutdown", "SHUTDOWN")])
def test_exit_rejects_the_str_spellings_of_the_special_atoms(spelling, const):
    def victim():
        receive()

    def main():
        pid = spawn(victim)
        errors = []
        for call in (lambda: beamvm.exit(pid, spelling), lambda: beamvm.exit(spelling)):
            try:
                call()
                errors.append("no error")
            except TypeError as e:
                errors.append(str(e))
        alive = beamvm.is_alive(pid)
        beamvm.exit(pid, KILL)
        return errors, alive

    errors, alive = run(main)
    assert alive  # before: exit(pid, 'kill') sent an ordinary, non-killing reason
    assert len(errors) == 2
    for e in errors:
        assert f"beamvm.{const}" in e and repr(spelling) in e


def test_other_str_reasons_are_still_allowed():
    def quitter():
        beamvm.exit("gave up")

    def main():
        _, ref = spawn_monitor(quitter)
        return down_of(ref)[4]

    assert run(main) == "gave up"


def test_exit_self_normal_ends_the_caller_at_once():
    # Erlang (OTP 25): exit(self(), normal) makes the caller exit with reason normal.
    def child(parent):
        try:
            beamvm.exit(self_pid(), NORMAL)
        finally:
            send(parent, "finally ran")
        send(parent, "after exit")  # never reached
        receive()

    def main():
        pid, ref = spawn_monitor(child, self_pid())
        reason = down_of(ref)[4]
        got = []
        got.append(receive(timeout=0.1, default="nothing"))
        got.append(receive(timeout=0.1, default="nothing"))
        return reason, got, beamvm.is_alive(pid)

    reason, got, alive = run(main)
    assert reason == NORMAL and not alive
    assert got == ["finally ran", "nothing"]


def test_exit_self_normal_when_trapping_is_a_message():
    def child(parent):
        beamvm.process_flag("trap_exit", True)
        beamvm.exit(self_pid(), NORMAL)
        send(parent, receive(timeout=1))

    def main():
        pid = spawn(child, self_pid())
        return pid, receive(timeout=2)

    pid, msg = run(main)
    assert msg == (EXIT, pid, NORMAL)


def test_exit_self_kill_is_killed_even_if_caught():
    def child():
        try:
            beamvm.exit(self_pid(), KILL)
        except BaseException:  # noqa: BLE001 -- the point: it cannot be swallowed
            pass
        while True:
            pass

    def main():
        _, ref = spawn_monitor(child)
        return down_of(ref)[4]

    assert run(main) == Atom("killed")


def test_process_exit_with_no_term_form_is_abnormal():
    # Before: raise ProcessExit(object()) exited normal, so links were never told.
    def child():
        raise ProcessExit(object())

    def linked_parent():
        beamvm.spawn_link(child)
        receive()

    def main():
        _, ref = spawn_monitor(child)
        reason = down_of(ref)[4]
        _, ref2 = spawn_monitor(linked_parent)
        return reason, down_of(ref2)[4]

    reason, parent_reason = run(main)
    assert isinstance(reason, str) and reason.startswith("<object object at")
    # The link killed the parent with such a reason too.
    assert isinstance(parent_reason, str) and parent_reason.startswith("<object object at")


# --------------------------------------------------------------------------- flags


@pytest.mark.parametrize("value", ["false", 0, 1, None, [], "true"])
def test_trap_exit_accepts_only_bool(value):
    def main():
        try:
            beamvm.process_flag("trap_exit", value)
        except TypeError as e:
            return str(e), beamvm.process_flag("trap_exit", False)
        return "accepted", None

    msg, was = run(main)
    assert repr(value) in msg and "True or False" in msg
    assert was is False  # the bad call changed nothing


# --------------------------------------------------------------------------- monitors


def test_monitor_of_an_unregistered_name_is_down_with_name_and_node():
    def main():
        ref = beamvm.monitor("nobody_has_this_name")
        down = receive(timeout=1)
        ref2 = beamvm.monitor(Atom("nor_this"))
        flushed = beamvm.demonitor(ref2, flush=True)
        return ref, down, flushed, receive(timeout=0.05, default="empty")

    ref, down, flushed, rest = run(main)
    assert isinstance(ref, Ref)
    assert down == (DOWN, ref, Atom("process"),
                    (Atom("nobody_has_this_name"), Atom("nonode@nohost")), Atom("noproc"))
    assert flushed is False and rest == "empty"


def test_monitor_of_a_registered_name_follows_the_process():
    def main():
        pid = spawn(receive)
        beamvm.register("named_target", pid)
        ref = beamvm.monitor("named_target")
        beamvm.exit(pid, KILL)
        return pid, down_of(ref)

    pid, down = run(main)
    assert down[3] == pid and down[4] == Atom("killed")


def test_spawn_monitor_returns_a_real_ref():
    def main():
        return spawn_monitor(receive)

    pid, ref = run(main)
    assert isinstance(pid, Pid) and isinstance(ref, Ref)


# --------------------------------------------------------------------------- process_info


def test_process_info_of_self_has_every_key_and_real_values():
    def idle():
        receive()

    def main():
        other = spawn(idle)
        beamvm.register("me_myself", self_pid())
        beamvm.link(other)
        send(self_pid(), "queued")
        ref = beamvm.monitor(other)
        beamvm.sleep(0.01)
        mine = beamvm.process_info(self_pid())
        default = beamvm.process_info()
        theirs = beamvm.process_info(other)
        beamvm.demonitor(ref)
        beamvm.unlink(other)
        beamvm.exit(other, KILL)
        return other, mine, default, theirs

    other, mine, default, theirs = run(main)
    assert set(mine) == set(theirs) == set(default)
    assert mine["status"] == "running" and mine["registered_name"] == "me_myself"
    assert mine["links"] == [other] and mine["monitors"] == [other]
    assert mine["message_queue_len"] == 1 and mine["memory"] > 0
    assert mine["reductions"] > 0 and mine["priority"] == "normal"
    assert mine["current_function"].endswith("main")
    assert theirs["monitored_by"] == [mine["pid"]]


# --------------------------------------------------------------------------- timers


def test_send_after_to_a_name_resolves_it_when_the_timer_fires():
    def late(parent):
        beamvm.register("late_comer")
        send(parent, "registered")
        send(parent, ("got", receive(timeout=2)))

    def main():
        me = self_pid()
        beamvm.send_after(0.1, "late_comer", "hello")  # nobody has the name yet
        beamvm.send_after(0.01, "never_registered", "lost")  # no error, dropped
        spawn(late, me)
        first = receive(timeout=2)
        return first, receive(timeout=2)

    assert run(main) == ("registered", ("got", "hello"))


def test_send_after_to_a_name_outside_a_process():
    beamvm.start(schedulers=1)
    try:
        beamvm.send_after(0.01, "no_one", "x")  # before: BadArg at the call
    finally:
        beamvm.stop()


def test_a_timeout_too_large_for_a_float_is_forever_and_a_negative_one_says_so():
    def waiter(parent):
        send(parent, ("got", receive(timeout=10**400)))

    def main():
        me = self_pid()
        w, ref = spawn_monitor(waiter, me)
        # Still waiting after a while (no Timeout, no crash), then served.
        early = receive(("got", ANY), (DOWN, ref, ANY, ANY, ANY), timeout=0.2, default=None)
        send(w, "late")
        late = receive(("got", ANY), timeout=5)
        errors = []
        for bad in (-(10**400), -1, float("nan")):
            try:
                receive(timeout=bad)
            except ValueError as e:
                errors.append(str(e))
        return early, late, errors

    early, late, errors = run(main)
    assert early is None and late == ("got", "late")
    assert errors[0].startswith("timeout must be >= 0 seconds, got -1000")
    assert errors[1:] == [
        "timeout must be >= 0 seconds, got -1",
        "timeout must be >= 0 seconds, got NaN",
    ]


# --------------------------------------------------------------------------- messages


def test_name_errors_show_the_name_as_written():
    def main():
        msgs = []
        beamvm.register("taken_name")
        for call in (
            lambda: beamvm.register("taken_name", spawn(receive)),
            lambda: beamvm.unregister("not_registered_anywhere"),
            lambda: send("no_such_process_name", 1),
            lambda: beamvm.unregister(Atom("atom_name_nobody_has")),
        ):
            try:
                call()
            except BadArg as e:
                msgs.append(str(e))
        return msgs

    msgs = run(main)
    assert len(msgs) == 4
    assert "'taken_name'" in msgs[0]
    assert "'not_registered_anywhere'" in msgs[1]
    assert "'no_such_process_name'" in msgs[2]
    assert "Atom('atom_name_nobody_has')" in msgs[3]
    assert not any("Atom(" in m and "Atom('" not in m for m in msgs), msgs


def test_whereis_and_lookups_create_no_atoms():
    def main():
        before = beamvm.system_info()["atom_count"]
        for i in range(5000):
            assert beamvm.whereis(f"unknown-name-{i}") is None
        for i in range(100):
            try:
                send(f"unknown-dest-{i}", 1)
            except BadArg:
                pass
        return before, beamvm.system_info()["atom_count"]

    before, after = run(main)
    assert after - before < 10  # before the fix: +5,100


def test_a_callable_pattern_says_what_patterns_are():
    def main():
        try:
            receive(lambda m: m > 1, timeout=0)
        except TypeError as e:
            return str(e)

    msg = run(main)
    assert "patterns are values" in msg and "ANY" in msg and "predicate" in msg


def test_an_unconvertible_pattern_part_says_what_patterns_are():
    def main():
        try:
            receive((1, object()), timeout=0)
        except TypeError as e:
            return str(e)

    assert "cannot be part of a receive pattern" in run(main)


# --------------------------------------------------------------------------- pickling


def test_pid_and_ref_pickle_and_copy():
    def main():
        return self_pid(), beamvm.make_ref()

    pid, ref = run(main)
    for v in (pid, ref):
        assert pickle.loads(pickle.dumps(v)) == v
        assert copy.copy(v) is v and copy.deepcopy(v) is v
        assert copy.deepcopy({"k": [v]}) == {"k": [v]}
    node, ident, serial, creation = pid.__reduce__()[1]
    assert (node, ident, serial, creation) == (
        "nonode@nohost",
        pid.id,
        pid.serial,
        pid.creation,
    )
    rnode, rcreation, words = ref.__reduce__()[1]
    assert (rnode, rcreation) == ("nonode@nohost", pid.creation)
    assert len(words) == 2


def test_a_pickled_pid_outlives_its_vm_as_a_stale_pid():
    """A pid pickled in one VM and unpickled in the next keeps its creation: it is the
    stopped VM's pid (dead-process behaviour), never the new VM's process in that slot."""
    blob = pickle.dumps(run(self_pid))

    def main():
        old = pickle.loads(blob)
        me = self_pid()
        send(old, "for the old process")
        return old, me, beamvm.is_alive(old), receive(timeout=0.2, default="nothing")

    old, me, alive, got = run(main)
    assert (old.id, old.serial) == (me.id, me.serial), "the same slot of a fresh table"
    assert old != me and old.creation < me.creation
    assert not alive and got == "nothing"


def test_a_pickled_pid_of_another_node_is_a_pid_of_that_node():
    def main():
        p = beamvm._native._pid("other@host", 1, 0, 7)
        send(p, "dropped")
        return p, beamvm.is_alive(p), receive(timeout=0.1, default="nothing")

    p, alive, got = run(main)
    assert p.node == Atom("other@host") and (p.id, p.serial, p.creation) == (1, 0, 7)
    assert repr(p) == "<other@host.1.0.7>"
    assert pickle.loads(pickle.dumps(p)) == p
    assert not alive and got == "nothing"
    with pytest.raises(ValueError, match="words"):
        beamvm._native._ref("other@host", 1, [])


def test_list_subclass_travels_as_list():
    class L(list):
        pass

    assert beamvm._native.roundtrip(L([1, 2])) == [1, 2]
    assert type(beamvm._native.roundtrip(L([1, 2]))) is list
