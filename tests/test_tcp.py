"""beamvm.tcp: gen_tcp's semantics on sockets owned by processes (issue 11).

Each test asserts behaviour (ordering, framing, ownership, backpressure, errors), with
generous timeouts: the machine may be a loaded 2-core box.
"""

from __future__ import annotations

import os
import resource
import struct
import subprocess
import sys
import time

import beamvm
import pytest
from beamvm import (
    ANY,
    Atom,
    exit,
    receive,
    self_pid,
    send,
    sleep,
    spawn,
    tcp,
)

DOWN = Atom("DOWN")


def run(fn, *args, **cfg):
    cfg.setdefault("schedulers", 2)
    return beamvm.run(fn, *args, **cfg)


def raise_fd_limit(want: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return
    if hard != resource.RLIM_INFINITY and hard < want:
        pytest.skip(f"needs {want} file descriptors, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def echo(sock):
    """One connection's process: echo, active once (the issue's handler)."""
    tcp.setopts(sock, active="once")
    while True:
        match receive():
            case ("tcp", s, data):
                tcp.send(s, data)
                tcp.setopts(s, active="once")
            case ("tcp_closed", _):
                return


def acceptor(ls, handler=echo):
    while True:
        s = tcp.accept(ls)
        tcp.controlling_process(s, spawn(handler, s))


def echo_server(**opts):
    ls = tcp.listen(0, **opts)
    spawn(acceptor, ls)
    return ls, tcp.sockname(ls)[1]


# --------------------------------------------------------------------------- basics


def test_echo_round_trips_in_order_and_sockets_travel_in_messages():
    def main():
        ls, port = echo_server()
        c = tcp.connect("127.0.0.1", port)
        got = []
        for i in range(20):
            tcp.send(c, b"msg %d;" % i)
            want = len(b"msg %d;" % i)
            buf = b""
            while len(buf) < want:
                buf += bytes(tcp.recv(c, 0, timeout=10))
            got.append(buf)
        # A socket is a value: it survives a trip through a message.
        send(self_pid(), ("sock", c))
        assert receive(("sock", ANY), timeout=5)[1] == c
        peer = tcp.peername(c)
        tcp.close(c)
        return got, peer[1] == port

    got, peer_ok = run(main)
    assert peer_ok
    assert got == [b"msg %d;" % i for i in range(20)]


def test_large_data_arrives_whole_and_shared():
    def main():
        ls, port = echo_server()
        c = tcp.connect("127.0.0.1", port)
        blob = bytes(range(256)) * 4096  # 1 MiB
        tcp.send(c, blob)
        got = b""
        while len(got) < len(blob):
            got += bytes(tcp.recv(c, 0, timeout=10))
        return got == blob

    assert run(main)


def test_ipv6_and_unix_sockets(tmp_path):
    path = str(tmp_path / "echo.sock")

    def main():
        out = []
        ls = tcp.listen(path=path)
        spawn(acceptor, ls)
        c = tcp.connect(path=path)
        tcp.send(c, b"over unix")
        out.append(tcp.recv(c, 9, timeout=10))
        assert tcp.sockname(ls) == path
        try:
            ls6 = tcp.listen(0, "::1")
        except tcp.TcpError as e:  # no IPv6 on this host
            out.append(("no ipv6", e.reason))
            return out
        spawn(acceptor, ls6)
        port = tcp.sockname(ls6)[1]
        c6 = tcp.connect("::1", port)
        tcp.send(c6, b"over v6")
        out.append(tcp.recv(c6, 7, timeout=10))
        out.append(tcp.peername(c6)[0])
        return out

    out = run(main)
    assert out[0] == b"over unix"
    if out[1][0] != "no ipv6":
        assert out[1:] == [b"over v6", "::1"]


def test_recv_with_length_and_line_packets():
    def main():
        ls = tcp.listen(0, packet="line")
        port = tcp.sockname(ls)[1]
        c = tcp.connect("127.0.0.1", port)
        s = tcp.accept(ls, timeout=10)
        tcp.send(c, b"one\ntwo\nthr")
        tcp.send(c, b"ee\n")
        lines = [tcp.recv(s, timeout=10) for _ in range(3)]
        tcp.setopts(s, packet="raw")
        tcp.send(c, b"abcdef")
        exact = tcp.recv(s, 4, timeout=10)
        return lines, exact, tcp.getopts(s)["packet"]

    assert run(main) == ([b"one\n", b"two\n", b"three\n"], b"abcd", "raw")


# --------------------------------------------------------------------------- active modes


def test_active_n_delivers_exactly_n_then_tcp_passive():
    def main():
        ls = tcp.listen(0, packet=4)
        port = tcp.sockname(ls)[1]
        c = tcp.connect("127.0.0.1", port, packet=4)
        s = tcp.accept(ls, timeout=10)
        for i in range(10):
            tcp.send(c, b"frame %d" % i)
        tcp.setopts(s, active=5)
        got = []
        for _ in range(6):
            got.append(receive(timeout=10))
        # Nothing more arrives while passive: the rest waits in the kernel.
        extra = receive(timeout=0.5, default=None)
        sixth = tcp.recv(s, timeout=10)
        # Counts add up (inet:setopts): 2 + 2 = 4 more (a tcp_passive in between when
        # the first 2 were delivered before the second setopts).
        tcp.setopts(s, active=2)
        tcp.setopts(s, active=2)
        more = []
        while sum(1 for m in more if m[0] == "tcp") < 4 or more[-1][0] != "tcp_passive":
            more.append(receive(timeout=10))
        extra2 = receive(timeout=0.3, default=None)
        return got, extra or extra2, sixth, more, s

    got, extra, sixth, more, s = run(main)
    assert got[:5] == [("tcp", s, b"frame %d" % i) for i in range(5)]
    assert got[5] == ("tcp_passive", s)
    assert extra is None
    assert sixth == b"frame 5"
    assert [m for m in more if m[0] == "tcp"] == [("tcp", s, b"frame %d" % i) for i in range(6, 10)]
    assert more[-1] == ("tcp_passive", s) and len(more) in (5, 6)


def test_active_true_and_tcp_closed():
    def main():
        ls = tcp.listen(0, active=True)
        port = tcp.sockname(ls)[1]
        c = tcp.connect("127.0.0.1", port)
        s = tcp.accept(ls, timeout=10)
        tcp.send(c, b"x" * 10)
        tcp.close(c)
        data = b""
        while True:
            m = receive(timeout=10)
            if m[0] == "tcp_closed":
                break
            data += bytes(m[2])
        return data, m == ("tcp_closed", s)

    assert run(main) == (b"x" * 10, True)


def _drain_reader(parent):
    """Accepts one connection, waits for ``go``, then reads to EOF and reports."""
    ls = tcp.listen(0)
    send(parent, ("port", tcp.sockname(ls)[1]))
    s = tcp.accept(ls, timeout=10)
    receive(("go",))
    total = 0
    while True:
        try:
            total += len(tcp.recv(s, 0, timeout=30))
        except tcp.TcpClosed:
            break
    send(parent, ("received", total))


def test_close_writes_what_send_queued_before_the_peer_sees_eof():
    # A send bigger than the kernel's buffers suspends with most of it queued in user
    # space; a close by another process meanwhile must not drop what send accepted.
    size = 32 << 20

    def big_sender(parent, c):
        try:
            tcp.send(c, b"q" * size)
            send(parent, ("sent", "ok"))
        except tcp.TcpError as e:
            send(parent, ("sent", e.reason))

    def main():
        me = self_pid()
        r = spawn(_drain_reader, me)
        port = receive(("port", ANY), timeout=10)[1]
        c = tcp.connect("127.0.0.1", port)
        spawn(big_sender, me, c)
        sleep(0.3)  # the kernel's buffers fill; the sender suspends
        send(r, ("go",))
        tcp.close(c)
        sent = receive(("sent", ANY), timeout=60)[1]
        received = receive(("received", ANY), timeout=60)[1]
        return sent, received

    assert run(main) == ("ok", size)


def test_close_gives_up_on_a_peer_that_never_reads(monkeypatch):
    # inet's close waits for queued output only while the peer takes some of it.
    monkeypatch.setattr(tcp, "_CLOSE_STALL", 0.3)

    def big_sender(c):
        try:
            tcp.send(c, b"q" * (32 << 20))
        except tcp.TcpError:
            pass

    def main():
        me = self_pid()
        spawn(_drain_reader, me)  # never told "go": it never reads
        port = receive(("port", ANY), timeout=10)[1]
        c = tcp.connect("127.0.0.1", port)
        spawn(big_sender, c)
        sleep(0.3)
        before = tcp.socket_count()
        t0 = time.monotonic()
        tcp.close(c)
        took = time.monotonic() - t0
        return took, before - tcp.socket_count()

    took, closed = run(main)
    assert closed == 1, "the socket is closed once close returns"
    assert 0.25 < took < 30, took


def test_several_senders_suspended_on_one_socket_all_resume():
    chunk, rounds, senders = 256 << 10, 8, 3

    def sender(parent, c, i):
        for _ in range(rounds):
            tcp.send(c, b"s" * chunk)
        send(parent, ("done", i))

    def main():
        me = self_pid()
        r = spawn(_drain_reader, me)
        port = receive(("port", ANY), timeout=10)[1]
        c = tcp.connect("127.0.0.1", port)
        for i in range(senders):
            spawn(sender, me, c, i)
        sleep(0.3)  # every sender ends up suspended on the full socket
        send(r, ("go",))
        done = sorted(receive(("done", ANY), timeout=60)[1] for _ in range(senders))
        tcp.close(c)
        return done, receive(("received", ANY), timeout=60)[1]

    assert run(main) == ([0, 1, 2], chunk * rounds * senders)


def test_a_receiver_that_never_rearms_blocks_the_sender_and_its_mailbox_stays_small():
    def receiver(parent):
        ls = tcp.listen(0, active="once")
        send(parent, ("port", tcp.sockname(ls)[1]))
        s = tcp.accept(ls)
        # Never re-armed: one message, then the kernel holds the rest.
        receive(("go",))
        tcp.setopts(s, active=False)
        # The mailbox holds exactly what it asked for: one message.
        queued = []
        while (m := receive(timeout=0, default=None)) is not None:
            queued.append(m)
        send(parent, ("queued", len(queued)))
        total = sum(len(m[2]) for m in queued if m[0] == "tcp")
        while True:
            try:
                total += len(tcp.recv(s, 0, timeout=30))
            except tcp.TcpClosed:
                break
        send(parent, ("received", total))
        receive(("never",), timeout=60, default=None)

    def sender(parent, port, chunk, count):
        c = tcp.connect("127.0.0.1", port)
        for i in range(count):
            tcp.send(c, chunk)
            send(parent, ("sent", i + 1))
        tcp.close(c)
        send(parent, ("done",))

    def main():
        me = self_pid()
        r = spawn(receiver, me)
        port = receive(("port", ANY), timeout=10)[1]
        chunk = b"z" * 65536
        count = 800  # 50 MiB: far beyond what socket buffers hold
        spawn(sender, me, port, chunk, count)
        sent = 0
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            m = receive(("sent", ANY), timeout=0.2, default=None)
            if m is not None:
                sent = m[1]
        blocked_at = sent
        send(r, ("go",))
        max_queue = receive(("queued", ANY), timeout=30)[1]
        while True:
            m = receive(("sent", ANY), ("done",), ("received", ANY), timeout=60)
            if m[0] == "received":
                return blocked_at, count, max_queue, m[1], len(chunk) * count

    blocked_at, count, max_queue, received, total = run(main)
    assert blocked_at < count, "the sender was never blocked"
    assert max_queue <= 1, f"the receiver's mailbox grew to {max_queue}"
    assert received == total


# --------------------------------------------------------------------------- framing


def test_packet_4_survives_one_byte_writes_and_rejects_oversize():
    def main():
        ls = tcp.listen(0, packet=4, packet_size=100)
        port = tcp.sockname(ls)[1]
        c = tcp.connect("127.0.0.1", port)  # raw: we write the headers ourselves
        s = tcp.accept(ls, timeout=10)
        frame = struct.pack(">I", 11) + b"hello world"
        for b in frame:
            tcp.send(c, bytes([b]))
            sleep(0.002)
        got = tcp.recv(s, timeout=10)
        # A header announcing more than packet_size: an error, nothing buffered.
        tcp.send(c, struct.pack(">I", 1_000_000) + b"x")
        try:
            tcp.recv(s, timeout=10)
            err = None
        except tcp.TcpError as e:
            err = e.reason
        return got, err

    assert run(main) == (b"hello world", "emsgsize")


def test_an_active_errors_reason_is_a_str_that_matches_as_written():
    def main():
        ls = tcp.listen(0, packet=4, packet_size=100, active=True)
        c = tcp.connect("127.0.0.1", tcp.sockname(ls)[1])
        s = tcp.accept(ls, timeout=10)
        tcp.send(c, struct.pack(">I", 1_000_000) + b"x")
        msg = receive(("tcp_error", s, ANY), timeout=10)
        match msg:
            case ("tcp_error", got, "emsgsize") if got == s:
                matched = True
            case _:
                matched = False
        closed = receive(("tcp_closed", s), timeout=10)
        return msg[2], type(msg[2]), matched, closed == ("tcp_closed", s)

    assert run(main) == ("emsgsize", str, True, True)


def test_packet_2_adds_the_header_on_send():
    def main():
        ls = tcp.listen(0)
        port = tcp.sockname(ls)[1]
        c = tcp.connect("127.0.0.1", port, packet=2)
        s = tcp.accept(ls, timeout=10)
        tcp.send(c, b"abc")
        return tcp.recv(s, 5, timeout=10)

    assert run(main) == b"\x00\x03abc"


# --------------------------------------------------------------------------- ownership


def test_owner_death_closes_the_socket_and_the_peer_sees_eof():
    def owner(parent, port, how):
        c = tcp.connect("127.0.0.1", port)
        send(parent, ("connected", c))
        if how == "crash":
            raise RuntimeError("owner crashes")
        if how == "kill":
            receive()  # killed here
        # "return": a normal exit

    def main():
        ls = tcp.listen(0)
        port = tcp.sockname(ls)[1]
        out = []
        for how in ("crash", "kill", "return"):
            pid = spawn(owner, self_pid(), port, how)
            s = tcp.accept(ls, timeout=10)
            receive(("connected", ANY), timeout=10)
            if how == "kill":
                exit(pid, Atom("kill"))
            try:
                tcp.recv(s, 0, timeout=10)
                out.append("data?")
            except tcp.TcpClosed:
                out.append("eof")
        return out, tcp.socket_count()

    import logging

    logging.getLogger("beamvm").disabled = True
    try:
        out, count = run(main)
    finally:
        logging.getLogger("beamvm").disabled = False
    assert out == ["eof", "eof", "eof"]
    assert count == 4  # the listener and the three accepted ends (closed, not yet released)


def test_sends_written_after_the_slice_arrive_whatever_the_sender_does_next():
    # A Python process's sends are written when its scheduler's batch ends, outside the
    # GIL (vm-core io::defer). Whatever the sender does right after (exit, crash,
    # close, wait forever, send on many sockets at once), every byte it sent arrives,
    # in order, before EOF.
    def sender(parent, port, how):
        socks = [tcp.connect("127.0.0.1", port) for _ in range(40 if how == "many" else 1)]
        send(parent, ("connected", len(socks)))
        receive(("go",))
        for i in range(20):
            for s in socks:
                tcp.send(s, b"%d," % i)
        if how == "crash":
            raise RuntimeError("sender crashes")
        if how == "close":
            tcp.close(socks[0])
        if how in ("wait", "many"):
            receive()  # waits until killed; the sockets stay open
        # "exit": a normal exit

    want = b"".join(b"%d," % i for i in range(20))

    def main():
        ls = tcp.listen(0)
        port = tcp.sockname(ls)[1]
        out = {}
        for how in ("exit", "crash", "close", "wait", "many"):
            pid = spawn(sender, self_pid(), port, how)
            n = receive(("connected", ANY), timeout=10)[1]
            accepted = [tcp.accept(ls, timeout=10) for _ in range(n)]
            send(pid, ("go",))
            got = []
            for s in accepted:
                data = b""
                while len(data) < len(want):
                    data += tcp.recv(s, 0, timeout=10)
                if how in ("exit", "crash", "close"):
                    try:
                        data += tcp.recv(s, 0, timeout=10)
                    except tcp.TcpClosed:
                        data += b"<eof>"
                got.append(data)
                tcp.close(s)
            exit(pid, Atom("kill"))
            out[how] = got
        return out

    import logging

    logging.getLogger("beamvm").disabled = True
    try:
        out = run(main)
    finally:
        logging.getLogger("beamvm").disabled = False
    for how in ("exit", "crash", "close"):
        assert out[how] == [want + b"<eof>"], how
    assert out["wait"] == [want]
    assert out["many"] == [want] * 40


def test_controlling_process_moves_delivery_and_queued_messages():
    def new_owner(parent):
        got = []
        while True:
            m = receive(timeout=10)
            if m[0] == "tcp_closed":
                break
            got.append(bytes(m[2]))
        send(parent, ("new_owner", b"".join(got)))

    def not_owner(parent, s):
        try:
            tcp.controlling_process(s, self_pid())
            send(parent, ("not_owner", None))
        except tcp.TcpError as e:
            send(parent, ("not_owner", e.reason))

    def main():
        me = self_pid()
        ls = tcp.listen(0, active=True)
        port = tcp.sockname(ls)[1]
        c = tcp.connect("127.0.0.1", port)
        s = tcp.accept(ls, timeout=10)
        tcp.send(c, b"before;")
        # Wait until it is in our mailbox: it must move with the socket.
        first = receive(("tcp", s, ANY), timeout=10)
        send(me, first)
        spawn(not_owner, me, s)
        refused = receive(("not_owner", ANY), timeout=10)[1]
        pid = spawn(new_owner, me)
        tcp.controlling_process(s, pid)
        tcp.send(c, b"after")
        tcp.close(c)
        got = receive(("new_owner", ANY), timeout=10)[1]
        left = receive(("tcp", ANY, ANY), ("tcp_closed", ANY), timeout=0.3, default=None)
        return refused, got, left

    refused, got, left = run(main)
    assert refused == "not_owner"
    assert got == b"before;after"
    assert left is None


# --------------------------------------------------------------------------- errors


def test_errors_carry_erlang_reasons():
    def main():
        out = {}
        ls = tcp.listen(0)
        port = tcp.sockname(ls)[1]
        try:
            tcp.listen(port, reuseaddr=False)
        except tcp.TcpError as e:
            out["listen"] = e.reason
        probe = tcp.listen(0)
        free = tcp.sockname(probe)[1]
        tcp.close(probe)
        try:
            tcp.connect("127.0.0.1", free)
        except tcp.TcpError as e:
            out["connect"] = e.reason
        try:
            tcp.accept(ls, timeout=0.2)
        except tcp.TcpTimeout as e:
            out["accept"] = (e.reason, isinstance(e, beamvm.Timeout))
        c = tcp.connect("127.0.0.1", port)
        s = tcp.accept(ls, timeout=10)
        try:
            tcp.recv(s, timeout=0.2)
        except beamvm.Timeout:
            out["recv"] = "timeout"
        # The withdrawn recv left nothing behind: data sent now is read normally.
        tcp.send(c, b"late")
        out["after"] = tcp.recv(s, 4, timeout=10)
        tcp.setopts(s, active=True)
        try:
            tcp.recv(s, timeout=1)
        except tcp.TcpError as e:
            out["active_recv"] = e.reason
        tcp.close(s)
        try:
            tcp.send(s, b"x")
        except tcp.TcpClosed as e:
            out["closed"] = e.reason
        return out

    out = run(main)
    assert out == {
        "listen": "eaddrinuse",
        "connect": "econnrefused",
        "accept": ("timeout", True),
        "recv": "timeout",
        "after": b"late",
        "closed": "closed",
        "active_recv": "einval",
    }


def test_bad_options_name_the_option():
    def main():
        errs = []
        for kwargs in (
            {"packet": 3},
            {"packet": "lines"},
            {"packet": 4.0},
            {"active": "twice"},
            {"active": 40000},
            {"active": 1.5},
            {"backlog": 0},
            {"packet_size": -1},
            {"nodelay": 1},
        ):
            try:
                tcp.listen(0, **kwargs)
                errs.append(None)
            except (TypeError, ValueError) as e:
                errs.append((type(e).__name__, str(e).split(" ")[0]))
        try:
            tcp.send("not a socket", b"x")
        except TypeError as e:
            errs.append(("TypeError", "socket" in str(e)))
        ls = tcp.listen(0)
        try:
            tcp.setopts(ls, active="sometimes")
        except ValueError as e:
            errs.append(("ValueError", str(e).split(" ")[0]))
        c = tcp.connect("127.0.0.1", tcp.sockname(ls)[1])
        try:
            tcp.send(c, "text")
        except TypeError as e:
            errs.append(("TypeError", "str" in str(e)))
        return errs

    assert run(main) == [
        ("ValueError", "packet"),
        ("ValueError", "packet"),
        ("TypeError", "packet"),
        ("ValueError", "active"),
        ("ValueError", "active"),
        ("TypeError", "active"),
        ("ValueError", "backlog"),
        ("ValueError", "packet_size"),
        ("TypeError", "nodelay"),
        ("TypeError", True),
        ("ValueError", "active"),
        ("TypeError", True),
    ]


def test_bad_addresses_and_huge_or_none_options_name_the_option():
    def main():
        errs = []
        ls = tcp.listen(0)
        for call in (
            lambda: tcp.setopts(ls, active=2**70),  # the native fast path
            lambda: tcp.setopts(ls, active=-(2**70)),
            lambda: tcp.setopts(ls, active=None),
            lambda: tcp.setopts(ls, active=None, nodelay=True),
            lambda: tcp.listen(0, active=2**70),
            lambda: tcp.listen(path="/tmp/beamvm-a\0b"),
            lambda: tcp.connect(path="/tmp/beamvm-a\0b"),
            lambda: tcp.listen(1234, path="/tmp/beamvm-never-bound"),
            lambda: tcp.connect("127.0.0.1", 1234, path="/tmp/beamvm-never-bound"),
        ):
            try:
                call()
                errs.append(None)
            except (TypeError, ValueError) as e:
                errs.append((type(e).__name__, str(e).split(" ")[0]))
        return errs, tcp.getopts(ls)["active"], tcp.socket_count()

    errs, active, count = run(main)
    assert errs == [
        ("ValueError", "active"),
        ("ValueError", "active"),
        ("TypeError", "active"),
        ("TypeError", "active"),
        ("ValueError", "active"),
        ("ValueError", "path"),
        ("ValueError", "path"),
        ("ValueError", "port"),
        ("ValueError", "port"),
    ]
    assert active is False and count == 1, "nothing changed, nothing opened"


def test_controlling_process_to_a_dead_process_is_badarg_and_the_socket_stays():
    def main():
        ls = tcp.listen(0)
        c = tcp.connect("127.0.0.1", tcp.sockname(ls)[1])
        s = tcp.accept(ls, timeout=10)
        tcp.setopts(s, active="once")
        pid, ref = beamvm.spawn_monitor(lambda: None)
        receive((DOWN, ref, ANY, ANY, ANY), timeout=10)
        try:
            tcp.controlling_process(s, pid)
            reason = None
        except tcp.TcpError as e:
            reason = e.reason
        still = (tcp.getopts(s)["active"], tcp.socket_count())
        tcp.send(c, b"to the caller")
        got = receive(("tcp", s, ANY), timeout=10)[2]
        tcp.close(s)
        try:
            tcp.recv(c, 0, timeout=10)
            eof = None
        except tcp.TcpClosed as e:
            eof = e.reason
        return reason, still, bytes(got), eof

    reason, still, got, eof = run(main)
    assert reason == "badarg"
    assert still == ("once", 3), "still the caller's, active as it was"
    assert got == b"to the caller"
    assert eof == "closed", "the caller closed it: the peer sees EOF"


def test_a_socket_kept_from_a_stopped_vm_names_nothing_in_the_next_one():
    """Socket ids start afresh in each VM: one kept from a stopped VM is closed there
    and never reaches the new VM's socket of the same number."""
    old = run(lambda: tcp.listen(0))

    def main():
        ls = tcp.listen(0)
        same_number = ls.id == old.id
        tcp.close(old)  # closing a closed socket: nothing happens
        with pytest.raises(tcp.TcpError) as e:
            tcp.sockname(old)
        send(self_pid(), ("kept", old))
        travelled = receive(("kept", ANY), timeout=5)[1]
        with pytest.raises(tcp.TcpError):
            tcp.sockname(travelled)
        return same_number, e.value.reason, ls != old, tcp.sockname(ls)[1] > 0

    same_number, reason, differ, alive = run(main)
    assert same_number, "the new VM's first socket has the old one's number"
    assert reason == "closed"
    assert differ and alive, "the new socket is distinct, and the old one's close missed it"


def test_outside_a_process_is_a_clear_error():
    beamvm.start(schedulers=1)
    try:
        with pytest.raises(RuntimeError, match="inside a beamvm process"):
            tcp.listen(0)
    finally:
        beamvm.stop()


def _plain_helper():
    """Marked plain below: process code calls it without compiling it."""
    return receive(timeout=0, default=None)


_plain_helper.__beamvm_plain__ = True


def test_calls_that_never_wait_run_plainly_from_process_code():
    # setopts/getopts/peername/sockname/shutdown never suspend: a process calls them as
    # it calls a native function (the re-arm of every active-once message). The marker
    # they carry makes the call plain: a marked function that does try to suspend
    # (receive) is refused as in any uncompiled code, and the tcp calls keep working.
    from beamvm import _compiler

    def main():
        ls = tcp.listen(0, active=False)
        c = tcp.connect("127.0.0.1", tcp.sockname(ls)[1], active=False)
        s = tcp.accept(ls)
        for _ in range(3):
            tcp.setopts(s, active="once")
            tcp.send(c, b"ping")
            match receive(timeout=5):
                case ("tcp", got, data):
                    assert got == s and data == b"ping"
        assert tcp.getopts(s)["active"] is False
        assert tcp.peername(s) == tcp.sockname(c)
        try:
            _plain_helper()
        except RuntimeError as e:
            refused = str(e)
        else:
            refused = ""
        tcp.close(c)
        tcp.close(s)
        tcp.close(ls)
        return refused

    refused = run(main)
    assert "does not compile" in refused
    for f in (tcp.setopts, tcp.getopts, tcp.shutdown, tcp.peername, tcp.sockname):
        assert _compiler._dispatch_get(f) is f, f.__name__
    assert _compiler._dispatch_get(tcp.send) is not tcp.send  # send may suspend: compiled


def test_send_runs_without_a_generator_and_still_suspends_and_traces():
    # Process code calls tcp.send's fast form (send.__beamvm_fast__): queued data costs
    # no generator, a full kernel buffer still suspends the sender (the receiver that
    # never re-arms test checks the blocking itself), and a call trace of tcp.send still
    # sees every call (the trace makes process code run send's own code again).
    from beamvm import trace

    lines: list[str] = []
    big = b"x" * (1 << 20)

    def main():
        ls = tcp.listen(0, active=False)
        c = tcp.connect("127.0.0.1", tcp.sockname(ls)[1], active=False)
        s = tcp.accept(ls)
        me = self_pid()

        def reader():
            got = 0
            while got < 8 * len(big):
                got += len(tcp.recv(s))
            send(me, ("read", got))
            receive()  # keeps s open until told

        r = spawn(reader)
        tcp.controlling_process(s, r)
        for _ in range(8):  # 8 MiB: far past the kernel's buffers, so send suspends
            tcp.send(c, big)
        match receive(timeout=30):
            case ("read", n):
                read = n
        trace.calls(("beamvm.tcp", "send", 2), 10, io=lines.append)
        try:
            tcp.send(c, b"a")
            tcp.send(c, b"b")
        finally:
            trace.clear()
        tcp.send(c, b"c")
        tcp.close(c)
        tcp.close(ls)
        send(r, "stop")
        return read

    assert run(main) == 8 * len(big)
    sends = [ln for ln in lines if "beamvm.tcp:send(" in ln]
    assert len(sends) == 2, lines


# --------------------------------------------------------------------------- scale


def test_a_thousand_concurrent_echo_clients():
    raise_fd_limit(4096)
    n = 1000

    def client(parent, port, i):
        c = tcp.connect("127.0.0.1", port, timeout=60, packet=4)
        ok = True
        for k in range(5):
            msg = b"client %d message %d" % (i, k)
            tcp.send(c, msg)
            if tcp.recv(c, timeout=60) != msg:
                ok = False
        tcp.close(c)
        send(parent, ("done", i, ok))

    def main():
        ls, port = echo_server(packet=4, backlog=2048)
        me = self_pid()
        for i in range(n):
            spawn(client, me, port, i)
        results = {}
        for _ in range(n):
            _, i, ok = receive(("done", ANY, ANY), timeout=120)
            results[i] = ok
        return results

    results = run(main)
    assert len(results) == n and all(results.values())


_IDLE_CLIENT = r"""
import socket, sys
n = int(sys.argv[1])
port = int(sys.stdin.readline())
socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
print("connected", flush=True)
sys.stdin.readline()
"""


def _rss() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_ten_thousand_idle_connections_hold_bounded_memory(capsys):
    n = 10_000
    raise_fd_limit(n + 500)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    def holder(sock):
        # A connection's process, idle: waits for the peer to go.
        tcp.setopts(sock, active="once")
        receive()

    # The client is another OS process (its own descriptors), started before the VM.
    client = subprocess.Popen(
        [sys.executable, "-c", _IDLE_CLIENT, str(n)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (n + 100, hard)),
    )

    def main():
        ls = tcp.listen(0, backlog=4096)
        port = tcp.sockname(ls)[1]
        spawn(acceptor, ls, holder)
        sleep(0.2)
        before = _rss()
        client.stdin.write(f"{port}\n")
        client.stdin.flush()
        line = beamvm.dirty_io(client.stdout.readline)
        assert line.strip() == "connected"
        deadline = time.monotonic() + 120
        while tcp.socket_count() < n + 1 and time.monotonic() < deadline:
            sleep(0.1)
        held = tcp.socket_count() - 1
        sleep(0.5)
        after = _rss()
        client.stdin.write("\n")
        client.stdin.flush()
        beamvm.dirty_io(client.wait, 60)
        deadline = time.monotonic() + 120
        while tcp.socket_count() > 1 and time.monotonic() < deadline:
            sleep(0.1)
        return held, after - before, tcp.socket_count()

    try:
        held, grew, left = run(main)
    finally:
        client.kill()
        client.wait()
    per_conn = grew / held
    with capsys.disabled():
        print(f"\n10,000 idle connections: {per_conn:.0f} bytes each (socket + its process)")
    assert held == n
    # A socket entry is < 256 bytes and a parked Python process a few KiB: anything
    # near a read buffer per connection (64 KiB) would fail this.
    assert per_conn < 24 * 1024
    assert left == 1, "closed connections were released (only the listener is left)"
