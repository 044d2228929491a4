"""Pids carry the VM's creation: a pid of a past VM never reaches a process of a new one.

Before, a pid from one `beamvm.run()` was equal to the same slot's pid of the next run
(the table restarts at `<0.0.0>`), and messages sent to it were delivered there. Now a
pid keeps `(node, id, serial, creation)`; any pid that is not of the current VM gets the
dead-process behaviour everywhere (docs/semantics.md, "Pids of another VM").
"""

from __future__ import annotations

import beamvm
import pytest
from beamvm import Atom, BadArg, NoProc


def _self():
    return beamvm.self_pid()


def test_a_past_vms_pid_is_not_the_same_slots_pid_of_the_next_vm():
    old = beamvm.run(_self, schedulers=1)
    # Right after its VM stopped, the pid still reads as that VM's.
    assert repr(old) == f"<0.{old.index}.{old.serial}>"
    new = beamvm.run(_self, schedulers=1)
    assert (old.id, old.serial) == (new.id, new.serial), "the same slot of a fresh table"
    assert old.node == new.node == Atom("nonode@nohost")
    assert new.creation > old.creation
    assert old != new and hash(old) != hash(new)
    assert len({old, new}) == 2
    assert old < new, "by creation"
    assert repr(new) == f"<0.{new.index}.{new.serial}>"
    assert repr(old) == f"<nonode@nohost.{old.index}.{old.serial}.{old.creation}>"


def test_a_stale_pid_gets_the_dead_process_behaviour_everywhere():
    old = beamvm.run(_self, schedulers=1)

    def main():
        me = beamvm.self_pid()
        assert (me.id, me.serial) == (old.id, old.serial)
        out = {}
        beamvm.send(old, "for the old process")
        out["delivered"] = beamvm.receive(timeout=0.2, default="nothing")
        out["alive"] = beamvm.is_alive(old)
        out["info"] = beamvm.process_info(old)
        try:
            beamvm.link(old)
            out["link"] = "linked"
        except NoProc:
            out["link"] = "noproc"
        beamvm.process_flag("trap_exit", True)
        beamvm.link(old)
        out["trapped"] = beamvm.receive(timeout=1)
        beamvm.process_flag("trap_exit", False)
        ref = beamvm.monitor(old)
        out["down"] = beamvm.receive(timeout=1)
        out["down_ref"] = out["down"][1] == ref
        ref2 = beamvm.monitor(old)
        out["demonitor"] = beamvm.demonitor(ref2, flush=True)
        out["flushed"] = beamvm.receive(timeout=0.1, default="nothing")
        out["exit"] = beamvm.exit(old, Atom("kill"))  # ignored: nobody to kill
        out["unlink"] = beamvm.unlink(old)
        try:
            beamvm.register("stale", old)
            out["register"] = "registered"
        except BadArg as e:
            out["register"] = str(e)
        t = beamvm.send_after(0.01, old, "late")
        out["timer_msg"] = beamvm.receive(timeout=0.3, default="nothing")
        out["timer_cancel"] = beamvm.cancel_timer(t)
        out["still_alive"] = beamvm.is_alive(me)
        return out

    out = beamvm.run(main, schedulers=1)
    assert out["delivered"] == "nothing"
    assert out["alive"] is False
    assert out["info"] is None
    assert out["link"] == "noproc"
    assert out["trapped"] == (Atom("EXIT"), old, Atom("noproc"))
    assert out["down"][0] == Atom("DOWN") and out["down"][2] == Atom("process")
    assert out["down"][3] == old and out["down"][4] == Atom("noproc")
    assert out["down_ref"]
    assert out["demonitor"] is False, "the monitor had fired already"
    assert out["flushed"] == "nothing", "flush removed its DOWN"
    assert out["exit"] is True
    assert out["unlink"] is True
    assert "another VM" in out["register"]
    assert out["timer_msg"] == "nothing"
    assert out["timer_cancel"] is None
    assert out["still_alive"] is True


def test_stale_pids_travel_in_messages_unchanged():
    old = beamvm.run(_self, schedulers=1)

    def echo():
        sender, msg = beamvm.receive()
        beamvm.send(sender, msg)

    def main():
        p = beamvm.spawn(echo)
        beamvm.send(p, (beamvm.self_pid(), [old, {"pid": old}]))
        return beamvm.receive(timeout=5)

    got = beamvm.run(main, schedulers=1)
    assert got == [old, {"pid": old}]
    assert got[0].creation == old.creation
    assert beamvm._native.roundtrip(old) == old

    # In a receive pattern a stale pid is a literal like any other.
    def matcher():
        beamvm.send(beamvm.self_pid(), ("from", old))
        return beamvm.receive(("from", old), timeout=1)

    assert beamvm.run(matcher, schedulers=1) == ("from", old)


def test_stale_pid_outside_any_process():
    old = beamvm.run(_self, schedulers=1)
    beamvm.start(schedulers=1)
    try:
        assert beamvm.send(old, "dropped") == "dropped"
        assert beamvm.is_alive(old) is False
        assert beamvm.exit(old, Atom("kill")) is True
        assert beamvm.process_info(old) is None
        with pytest.raises(BadArg, match="another VM"):
            beamvm.register("x", old)
        with pytest.raises(BadArg, match="another VM"):
            beamvm.set_system_monitor(old)
    finally:
        beamvm.stop()


def _received_pids():
    """Pids as messages carry them: two children, each sending its own pid three times,
    interleaved (a received pid is converted from the message, not made by self_pid)."""
    me = beamvm.self_pid()

    def child():
        for _ in range(3):
            beamvm.send(me, ("pid", beamvm.self_pid()))
            beamvm.receive("go")

    kids = [beamvm.spawn(child) for _ in range(2)]
    got = []
    for _ in range(3):
        for k in kids:
            got.append(beamvm.receive(("pid", beamvm.ANY))[1])
            beamvm.send(k, "go")
    return kids, got


def test_received_pids_are_the_senders_and_a_past_vms_stay_distinct():
    # A received pid's object may be shared with the previous conversion of the same
    # pid (convert.rs, LAST_PID): sharing must never hand out another pid's object,
    # nor one of a past VM for the same slot of the next.
    kids, got = beamvm.run(_received_pids, schedulers=1)
    a, b = kids
    assert a != b
    assert sorted(got, key=lambda p: p.id) == sorted([a, b] * 3, key=lambda p: p.id)
    assert got.count(a) == got.count(b) == 3
    kids2, got2 = beamvm.run(_received_pids, schedulers=1)
    assert [(p.id, p.serial) for p in kids2] == [(p.id, p.serial) for p in kids]
    assert all(p.creation > a.creation for p in got2)
    assert not set(got) & set(got2)
