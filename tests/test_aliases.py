"""Process aliases (OTP 24) and receive with several patterns, seen from Python."""

from __future__ import annotations

import beamvm
import pytest
from beamvm import (
    ANY,
    Atom,
    alias,
    demonitor,
    monitor,
    process_info,
    receive,
    self_pid,
    send,
    spawn,
    unalias,
)

DOWN = Atom("DOWN")


def run(fn, *args, **cfg):
    cfg.setdefault("schedulers", 2)
    return beamvm.run(fn, *args, **cfg)


def forwarder(parent):
    """Make an alias, hand it to ``parent``, then relay what arrives; 'unalias' unaliases."""
    a = alias()
    send(parent, ("alias", a))
    while True:
        m = receive()
        if m == "unalias":
            send(parent, ("unaliased", unalias(a)))
        elif m == "stop":
            return
        else:
            send(parent, ("got", m))


def test_alias_routes_to_its_creator_until_unalias():
    def main():
        me = self_pid()
        p = spawn(forwarder, me)
        _, a = receive(("alias", ANY), timeout=5)
        send(a, "via alias")
        first = receive(("got", ANY), timeout=5)
        send(p, "unalias")
        un = receive(("unaliased", ANY), timeout=5)
        send(a, "after unalias")  # stale: not an error
        send(p, "plain")
        second = receive(("got", ANY), timeout=5)
        nothing = receive(("got", ANY), timeout=0.1, default=None)
        send(p, "stop")
        return first, un, second, nothing, beamvm._native._alias_count()

    assert run(main) == (("got", "via alias"), ("unaliased", True), ("got", "plain"), None, 0)


def test_send_to_an_alias_from_plain_code_reaches_the_owner():
    beamvm.start(schedulers=1)
    try:
        box = []

        def owner():
            a = alias()
            box.append(a)
            box.append(receive(timeout=5))

        beamvm.spawn(owner)
        import time

        deadline = time.monotonic() + 5
        while not box and time.monotonic() < deadline:
            time.sleep(0.01)
        send(box[0], "from outside")
        while len(box) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert box[1] == "from outside"
        # The owner is gone: its alias is stale, sending is still fine.
        send(box[0], "late")
        assert beamvm._native._alias_count() == 0
    finally:
        beamvm.stop()


def replier(n):
    """Answer ('call', from_alias) n times through the alias, then wait for anything."""
    while True:
        m = receive()
        if m == "die":
            raise RuntimeError("boom")
        _, a = m
        for i in range(n):
            send(a, (a, i))


def test_monitor_alias_demonitor_drops_late_replies():
    def main():
        server = spawn(replier, 2)
        ref = monitor(server, alias="demonitor")
        demonitor(ref, flush=True)  # the caller gave up before the server answered
        send(server, ("call", ref))
        late = receive((ref, ANY), timeout=0.2, default="none")
        info = process_info(server)
        return late, info["monitored_by"], process_info()["aliases"]

    assert run(main) == ("none", [], 0)


def test_monitor_alias_reply_demonitor_takes_one_reply_and_no_down():
    def main():
        server = spawn(replier, 2)
        ref = monitor(server, alias="reply_demonitor")
        send(server, ("call", ref))
        first = receive((ref, ANY), timeout=5)
        send(server, "die")
        beamvm.sleep(0.1)
        rest = receive((ref, ANY), (DOWN, ref, ANY, ANY, ANY), timeout=0.1, default="none")
        return first[1], rest

    assert run(main) == (0, "none")


def test_alias_reply_mode_and_bad_options():
    def main():
        a = alias(reply=True)
        send(a, 1)
        send(a, 2)
        got = [receive(timeout=1), receive(timeout=0.1, default="none")]
        errors = []
        for bad in ("sometimes", "reply", 3):
            try:
                monitor(self_pid(), alias=bad)
            except (ValueError, TypeError) as e:
                errors.append(type(e).__name__)
        try:
            unalias("not a ref")
        except TypeError as e:
            errors.append(str(e))
        return got, errors

    got, errors = run(main)
    assert got == [1, "none"]
    assert errors[:3] == ["ValueError", "ValueError", "TypeError"]
    assert "unalias's argument must be a beamvm.Ref, not str" in errors[3]


def test_alias_outside_a_process_is_a_clear_error():
    with pytest.raises(RuntimeError, match=r"alias\(\) must be called inside a beamvm process"):
        alias()


# --------------------------------------------------------------------------- several patterns


def test_receive_with_several_patterns_takes_the_first_in_mailbox_order():
    def main():
        me = self_pid()
        r1, r2 = beamvm.make_ref(), beamvm.make_ref()
        for m in ["x", (r2, "second"), 7, (r1, "first"), ("tag", 1)]:
            send(me, m)
        a = receive((r1, ANY), (r2, ANY))  # keyed, both: mailbox order decides
        b = receive((r1, ANY), (r2, ANY))
        c = receive(("tag", ANY), int)  # an unkeyed alternative: scanned, same order
        d = receive(("tag", ANY), (r2, ANY), timeout=0, default="none")
        try:
            receive((r1, ANY), (r2, ANY), timeout=0.01)
            e = "no timeout"
        except beamvm.Timeout:
            e = "timeout"
        rest = [receive(timeout=0), receive(timeout=0, default="empty")]
        return [a[1], b[1], c, d, e, *rest]

    assert run(main) == ["second", "first", 7, ("tag", 1), "timeout", "x", "empty"]


def test_receive_with_several_patterns_waits_for_either():
    def sender(to, msg):
        beamvm.sleep(0.05)
        send(to, msg)

    def main():
        me = self_pid()
        r = beamvm.make_ref()
        pid = spawn(sender, me, ("other", 1))
        ref = monitor(pid)
        got = receive((r, ANY), (DOWN, ref, ANY, ANY, ANY), timeout=5)
        return got[0], got[4], receive(timeout=0)

    assert run(main) == (DOWN, Atom("normal"), ("other", 1))


def stash_then_receive(parent, n, keyed):
    """Wait until n unrelated messages are queued, then do one receive with two patterns."""
    while process_info()["message_queue_len"] < n + 1:
        beamvm.sleep(0.01)
    r1, r2 = receive((Atom("refs"), ANY, ANY))[1:]
    if keyed:
        patterns = ((r1, ANY), (DOWN, r2, ANY, ANY, ANY))
    else:  # the same, plus an alternative with no key: a scan of the whole queue
        patterns = ((r1, ANY), (DOWN, r2, ANY, ANY, ANY), (float, ANY))
    send(parent, ("ready", self_pid()))
    got = receive(*patterns)
    send(parent, ("done", got[1]))
    receive("stop")


@pytest.mark.parametrize("keyed", [True, False])
def test_keyed_receive_with_several_patterns_does_not_scan_50k_messages(keyed):
    """Counts the work (reductions) of one receive with 50,000 unrelated queued messages:
    keyed by refs in every pattern it examines none of them; with an unkeyed alternative
    it must examine them all (the control that shows the count can fail)."""
    n = 50_000

    def main():
        me = self_pid()
        p = spawn(stash_then_receive, me, n, keyed)
        for i in range(n):
            send(p, ("noise", i))
        r1, r2 = beamvm.make_ref(), beamvm.make_ref()
        before = process_info(p)["reductions"]
        send(p, (Atom("refs"), r1, r2))
        receive(("ready", p), timeout=60)
        beamvm.sleep(0.05)  # let it wait: the first look at the queue is counted too
        send(p, (r1, "reply"))
        done = receive(("done", ANY), timeout=60)
        after = process_info(p)["reductions"]
        send(p, "stop")
        return done, after - before

    done, work = run(main, schedulers=1)
    assert done == ("done", "reply")
    if keyed:
        assert work < 1_000, f"a keyed receive did {work} reductions of work"
    else:
        assert work >= n, f"a scan of {n} messages counted only {work} reductions"
