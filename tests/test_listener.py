"""beamvm.listener: ranch's acceptor pool (issue 11): echo through the pool, the soft
connection limit, the stampede of killed connection processes, and acceptors backing off
when the process runs out of file descriptors (``ulimit -n 64`` in a subprocess)."""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import textwrap
import time

import beamvm
import pytest
from beamvm import ANY, Atom, exit, listener, receive, sleep, tcp
from beamvm.supervisor import DynamicSupervisor


def run(fn, *args, **cfg):
    cfg.setdefault("schedulers", 2)
    return beamvm.run(fn, *args, **cfg)


def echo_conn(sock, opts):
    tcp.setopts(sock, active="once")
    while True:
        match receive():
            case ("tcp", s, data):
                tcp.send(s, data)
                tcp.setopts(s, active="once")
            case ("tcp_closed", _):
                return


def roundtrip(port, msg=b"ping", timeout=10.0):
    c = tcp.connect("127.0.0.1", port, timeout=timeout)
    try:
        tcp.send(c, msg)
        got = b""
        while len(got) < len(msg):
            got += bytes(tcp.recv(c, 0, timeout=timeout))
        return got
    finally:
        tcp.close(c)


def test_the_pool_echoes_reports_and_stops():
    def main():
        sup = listener.start("t1", handler=echo_conn, num_acceptors=3)
        i = listener.info("t1")
        port = i["port"]
        got = [roundtrip(port, b"n%d" % k) for k in range(5)]
        try:
            listener.start("t1", handler=echo_conn)
            dup = None
        except ValueError as e:
            dup = str(e)
        listener.stop("t1")
        try:
            tcp.connect("127.0.0.1", port, timeout=5)
            after = "connected"
        except tcp.TcpError as e:
            after = e.reason
        return sup, i, got, dup, after

    sup, i, got, dup, after = run(main)
    assert i["acceptors"] == 3 and i["supervisor"] == sup and i["connections"] == 0
    assert got == [b"n%d" % k for k in range(5)]
    assert "running already" in dup
    assert after == "econnrefused"


def test_bad_arguments_are_refused_before_anything_starts():
    def main():
        errs = []
        for kwargs in (
            {"handler": None},
            {"handler": echo_conn, "num_acceptors": 0},
            {"handler": echo_conn, "max_connections": 0},
            {"handler": echo_conn, "packet": 3},
        ):
            try:
                listener.start("bad", **kwargs)
                errs.append(None)
            except (TypeError, ValueError) as e:
                errs.append(type(e).__name__)
        return errs

    assert run(main) == ["TypeError", "ValueError", "ValueError", "ValueError"]


def test_bad_addresses_name_the_option_before_anything_starts():
    def main():
        errs = []
        for kwargs in (
            {"port": "80"},
            {"port": -1},
            {"port": 70000},
            {"host": 5},
            {"host": "no.such.invalid"},
            {"path": "/tmp/beamvm-a\0b"},
            {"port": 1234, "path": "/tmp/beamvm-never-bound"},
        ):
            try:
                listener.start("bad", handler=echo_conn, **kwargs)
                errs.append(None)
            except tcp.TcpError as e:
                errs.append(("TcpError", e.reason))
            except (TypeError, ValueError) as e:
                errs.append((type(e).__name__, str(e).split(" ")[0]))
        return errs, beamvm.whereis("beamvm.listener.bad")

    errs, left = run(main)
    assert errs == [
        ("TypeError", "port"),
        ("ValueError", "port"),
        ("ValueError", "port"),
        ("TypeError", "host"),
        ("TcpError", "nxdomain"),
        ("ValueError", "path"),
        ("ValueError", "port"),
    ]
    assert left is None, "nothing started"


def test_info_reports_the_limit():
    def main():
        listener.start("lim", handler=echo_conn, num_acceptors=2, max_connections=7)
        i = listener.info("lim")
        listener.stop("lim")
        listener.start("nolim", handler=echo_conn, num_acceptors=1, max_connections=None)
        j = listener.info("nolim")
        listener.stop("nolim")
        return i, j

    i, j = run(main)
    assert i["limit"] == i["max_connections"] == 7
    assert i["connections"] == 0 and i["acceptors"] == 2
    assert j["limit"] is None


def test_max_connections_pauses_accepting_and_never_rejects():
    def main():
        listener.start("t2", handler=echo_conn, num_acceptors=1, max_connections=3)
        port = listener.info("t2")["port"]
        held = []
        for k in range(3):
            c = tcp.connect("127.0.0.1", port)
            tcp.send(c, b"h%d" % k)
            assert tcp.recv(c, 0, timeout=10) == b"h%d" % k
            held.append(c)
        # A fourth client connects (the kernel's backlog holds it) but is not served.
        extra = tcp.connect("127.0.0.1", port)
        tcp.send(extra, b"wait")
        try:
            tcp.recv(extra, 0, timeout=0.7)
            early = True
        except tcp.TcpTimeout:
            early = False
        at_limit = listener.info("t2")["connections"]
        tcp.close(held.pop())
        served = tcp.recv(extra, 0, timeout=10)
        return early, at_limit, served, listener.info("t2")["connections"]

    early, at_limit, served, after = run(main)
    assert not early, "a connection over the limit was served"
    assert at_limit == 3
    assert served == b"wait", "the paused client is served once a connection ends"
    assert after == 3


def test_killing_random_connection_processes_for_5_s_leaves_the_listener_accepting():
    """ranch's stampede test: connection crashes are temporary children's business."""

    def client(port, stop_at):
        while time.monotonic() < stop_at:
            try:
                c = tcp.connect("127.0.0.1", port, timeout=5)
                tcp.send(c, b"x")
                tcp.recv(c, 0, timeout=5)
                sleep(0.05)
                tcp.close(c)
            except (tcp.TcpError, beamvm.Timeout):
                sleep(0.01)

    def main():
        sup = listener.start("t3", handler=echo_conn, num_acceptors=4)
        port = listener.info("t3")["port"]
        own = tcp.socket_count()  # the listening socket
        stop_at = time.monotonic() + 5.0
        clients = [beamvm.spawn_monitor(client, port, stop_at)[1] for _ in range(20)]
        conns = beamvm.whereis("beamvm.listener.t3.conns")
        killed = 0
        while time.monotonic() < stop_at:
            kids = [c for (_, c, _, _) in DynamicSupervisor.which_children(conns)]
            kids = [c for c in kids if isinstance(c, beamvm.Pid)]
            if kids:
                exit(random.choice(kids), Atom("kill"))
                killed += 1
            sleep(0.005)
        for ref in clients:
            receive((Atom("DOWN"), ref, ANY, ANY, ANY), timeout=30)
        ok = [roundtrip(port, b"after %d" % k) for k in range(5)]
        i = listener.info("t3")
        # Every client closed: each server-side socket is closed by its connection
        # (tcp_closed) or by its owner's death, including one whose connection process
        # was killed while the acceptor handed the socket over. None may leak.
        deadline = time.monotonic() + 20.0
        while tcp.socket_count() != own and time.monotonic() < deadline:
            sleep(0.01)
        return sup, killed, ok, i, own, tcp.socket_count()

    sup, killed, ok, i, own, left = run(main)
    assert killed > 50, f"only {killed} kills: the stampede did not happen"
    assert ok == [b"after %d" % k for k in range(5)]
    assert i["supervisor"] == sup and i["acceptors"] == 4
    assert left == own, f"{left - own} server sockets leaked after every client closed"


_EMFILE_SERVER = textwrap.dedent(
    r"""
    import resource, sys
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    import beamvm
    from beamvm import listener, receive, tcp

    def echo_conn(sock, opts):
        tcp.setopts(sock, active="once")
        while True:
            match receive():
                case ("tcp", s, data):
                    tcp.send(s, data)
                    tcp.setopts(s, active="once")
                case ("tcp_closed", _):
                    return

    def main():
        sup = listener.start("fd", handler=echo_conn, num_acceptors=4, max_connections=None)
        print("READY", listener.info("fd")["port"], flush=True)
        while True:
            line = beamvm.dirty_io(sys.stdin.readline)
            if not line or line.strip() == "quit":
                return
            i = listener.info("fd")
            print("INFO", i["emfile_backoffs"], i["acceptors"], i["supervisor"] == sup,
                  i["connections"], flush=True)

    beamvm.run(main, schedulers=2)
    """
)


def test_out_of_descriptors_acceptors_back_off_and_recover(tmp_path):
    script = tmp_path / "emfile_server.py"  # a file: process code is compiled from source
    script.write_text(_EMFILE_SERVER)
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    clients: list[socket.socket] = []
    try:
        line = proc.stdout.readline()
        assert line.startswith("READY"), (line, proc.stderr.read() if proc.poll() else "")
        port = int(line.split()[1])
        # Far more connections than 64 descriptors: the server runs out.
        for _ in range(120):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.settimeout(10)
            clients.append(s)
        served = 0
        for s in clients:
            s.sendall(b"?")
        deadline = time.monotonic() + 5
        for s in clients:
            s.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                if s.recv(1) == b"?":
                    served += 1
            except OSError:
                pass
        assert 0 < served < 120, f"{served} served: the descriptor limit was not reached"
        proc.stdin.write("info\n")
        proc.stdin.flush()
        info = proc.stdout.readline().split()
        assert info[0] == "INFO" and int(info[1]) >= 1, info  # backed off at least once
        assert info[2] == "4" and info[3] == "True", info  # the tree survived
        # Free the descriptors; the listener accepts again.
        for s in clients:
            s.close()
        clients.clear()
        ok = 0
        deadline = time.monotonic() + 60
        while ok < 10 and time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                    s.settimeout(10)
                    s.sendall(b"back")
                    if s.recv(4) == b"back":
                        ok += 1
            except OSError:
                time.sleep(0.1)
        assert ok == 10, "the listener did not recover once descriptors were freed"
        proc.stdin.write("info\n")
        proc.stdin.flush()
        info = proc.stdout.readline().split()
        assert info[2] == "4" and info[3] == "True", info
        proc.stdin.write("quit\n")
        proc.stdin.flush()
        assert proc.wait(60) == 0
    finally:
        for s in clients:
            s.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_listener_outside_a_process_is_a_clear_error():
    beamvm.start(schedulers=1)
    try:
        with pytest.raises(RuntimeError, match="inside a beamvm process"):
            listener.start("nope", handler=echo_conn)
    finally:
        beamvm.stop()
