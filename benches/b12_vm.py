"""B12 through the VM: distribution with Python processes on the beamvm side.

Runs, in one go and interleaved, fresh node pairs of each kind (3 by default) and prints
medians over the pairs:

* ``erl<->erl``       -- an erl client against an erl server (the reference);
* ``py->erl``         -- a beamvm node's Python process against an erl server;
* ``erl->py``         -- an erl client against a beamvm node's Python processes;
* ``py<->py``         -- a beamvm client against a beamvm server (two OS processes).

Measured from the client: small-message round trip (p50, p99) to ``echo``, one-way
small-message throughput to ``sink``, 1 MiB binaries one way (MB/s), ``rpc:call`` of
``erlang:node/0`` (p50) and the first ``net_adm:ping`` of a fresh pair (connection setup).
The erl side is crates/vm-dist/benches/b12.erl. Needs erl/erlc; build the extension with
``maturin develop --release`` first.

    python benches/b12_vm.py [--pairs 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ERL_SRC = os.path.join(HERE, "..", "crates", "vm-dist", "benches", "b12.erl")
COOKIE = "b12bench"


def sizes(quick: bool) -> dict[str, int]:
    """Iteration counts (``--quick``: a smoke run).

    1,000 binaries of 1 MiB: at 2-3 GB/s, 200 of them took ~0.1 s, short enough for
    one descheduling to halve a figure (runs read 1,300 to 3,400 MB/s for one build).
    """
    if quick:
        return {"rtt": 300, "small": 5000, "big": 10, "rpc": 50}
    return {"rtt": 3000, "small": 100_000, "big": 1000, "rpc": 1000}


# ---------------------------------------------------------------------------- erl side


def erl_node(name: str, ebin: str, eval_src: str) -> subprocess.Popen[str]:
    """Starts ``erl -sname name`` with b12 on its path, evaluating ``eval_src``."""
    return subprocess.Popen(
        ["erl", "-sname", name, "-setcookie", COOKIE, "-noshell", "-noinput", "-pa", ebin,
         "-eval", eval_src],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def wait_epmd(short: str, proc: subprocess.Popen[str] | None = None) -> None:
    """Waits until ``short`` is registered with EPMD."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        out = subprocess.run(["epmd", "-names"], capture_output=True, text=True).stdout
        if f"name {short} at port" in out:
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{short} exited")
        time.sleep(0.05)
    raise RuntimeError(f"{short} did not register")


def erl_server(name: str, ebin: str) -> subprocess.Popen[str]:
    """An erl node running b12's echo and sink."""
    p = erl_node(name, ebin, "b12:start_services(), receive stop -> ok end.")
    wait_epmd(name.split("@")[0], p)
    return p


def erl_client(name: str, ebin: str, server: str, s: dict[str, int]) -> dict[str, float]:
    """Runs the measurements from an erl client; returns the figures."""
    src = f"""
    S = '{server}',
    T0 = erlang:monotonic_time(nanosecond), pong = net_adm:ping(S),
    Ping = erlang:monotonic_time(nanosecond) - T0,
    {{R50, R99}} = b12:stats(b12:rtt(S, {s['rtt']})),
    Small = b12:oneway(S, {s['small']}, {{a, 1}}),
    Big = b12:oneway(S, {s['big']}, binary:copy(<<7>>, 1048576)),
    {{P50, _}} = b12:stats(b12:rpc(S, {s['rpc']})),
    io:format("RESULT ~p ~p ~p ~p ~p ~p~n", [R50, R99, Small, Big, P50, Ping]),
    init:stop().
    """
    p = erl_node(name, ebin, src)
    out, _ = p.communicate(timeout=600)
    for line in out.splitlines():
        if line.startswith("RESULT"):
            r50, r99, small, big, p50, ping = map(float, line.split()[1:])
            return figures(r50, r99, small, big, p50, ping, s)
    raise RuntimeError(f"erl client failed: {out}")


def figures(r50: float, r99: float, small: float, big: float, p50: float, ping: float,
            s: dict[str, int]) -> dict[str, float]:
    """The reported figures from nanosecond measurements."""
    return {
        "rtt_p50_us": r50 / 1e3,
        "rtt_p99_us": r99 / 1e3,
        "small_msgs_per_s": s["small"] / (small / 1e9),
        "mib_mb_per_s": s["big"] * 1.048576 / (big / 1e9),
        "rpc_p50_us": p50 / 1e3,
        "ping_ms": ping / 1e6,
    }


# ----------------------------------------------------------------------- beamvm side


def py_server(name: str, ready_file: str) -> None:
    """A beamvm node with Python echo and sink processes, exposing erlang:node/0."""
    import beamvm
    from beamvm import ANY, Atom, dist, receive, send

    class erlang:  # noqa: N801 - the Erlang module name rpc:call uses
        @staticmethod
        def node() -> Atom:
            return beamvm.node()

    def echo() -> None:
        while True:
            m = receive(ANY)
            send(m[0], m[1])

    def sink() -> None:
        done = Atom("done")
        k = 0
        while True:
            m = receive(ANY)
            if type(m) is tuple and len(m) == 2 and m[0] == done:
                send(m[1], (Atom("counted"), k))
                k = 0
            else:
                k += 1

    def main() -> None:
        dist.expose("erlang", erlang)
        beamvm.register("echo", beamvm.spawn(echo))
        beamvm.register("sink", beamvm.spawn(sink))
        beamvm.register("b12main", beamvm.self_pid())
        with open(ready_file, "w") as f:
            f.write("ready")
        receive(Atom("stop"))

    beamvm.run(main, node=name, cookie=COOKIE, dist_listen="127.0.0.1")


def py_client(name: str, server: str, s: dict[str, int]) -> None:
    """Measures from a beamvm node's Python process; prints a JSON line."""
    import beamvm
    from beamvm import ANY, Atom, dist, receive, rpc, self_pid, send

    def main() -> dict[str, float]:
        srv = Atom(server)
        t0 = time.perf_counter_ns()
        assert dist.ping(server, timeout=30) == Atom("pong")
        ping = time.perf_counter_ns() - t0
        echo = (Atom("echo"), srv)
        me = self_pid()
        tok = Atom("ping")
        for _ in range(200):
            send(echo, (me, tok))
            receive(tok)
        rtts = []
        for _ in range(s["rtt"]):
            t = time.perf_counter_ns()
            send(echo, (me, tok))
            receive(tok)
            rtts.append(time.perf_counter_ns() - t)
        rtts.sort()
        sink = (Atom("sink"), srv)
        done = Atom("done")

        def oneway(n: int, msg: object) -> int:
            t = time.perf_counter_ns()
            for _ in range(n):
                send(sink, msg)
            send(sink, (done, me))
            got = receive((Atom("counted"), ANY), timeout=600)
            assert got[1] == n, got
            return time.perf_counter_ns() - t

        small = oneway(s["small"], (Atom("a"), 1))
        big = oneway(s["big"], bytes([7]) * 1048576)
        rpc.call(server, "erlang", "node", [])
        rpcs = []
        for _ in range(s["rpc"]):
            t = time.perf_counter_ns()
            assert rpc.call(server, "erlang", "node", []) == srv
            rpcs.append(time.perf_counter_ns() - t)
        rpcs.sort()
        n = len(rtts)
        return figures(rtts[n // 2], rtts[n * 99 // 100], small, big, rpcs[len(rpcs) // 2],
                       ping, s)

    r = beamvm.run(main, node=name, cookie=COOKIE, dist_listen="127.0.0.1")
    print("RESULT " + json.dumps(r), flush=True)


def run_py(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, os.path.abspath(__file__)] + args,
                            stdout=subprocess.PIPE, text=True)


def py_client_proc(name: str, server: str, quick: bool) -> dict[str, float]:
    p = run_py(["--role", "client", "--name", name, "--server", server]
               + (["--quick"] if quick else []))
    out, _ = p.communicate(timeout=900)
    for line in out.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"python client failed: {out}")


def py_server_proc(name: str, tmp: str) -> subprocess.Popen[str]:
    ready = os.path.join(tmp, f"{name}.ready")
    p = run_py(["--role", "server", "--name", name, "--ready", ready])
    deadline = time.monotonic() + 60
    while not os.path.exists(ready):
        if p.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("python server did not start")
        time.sleep(0.05)
    return p


def stop_py_server(p: subprocess.Popen[str], name: str) -> None:
    p.kill()
    p.wait()


# ----------------------------------------------------------------------- orchestrator


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--role", choices=["client", "server"])
    ap.add_argument("--name")
    ap.add_argument("--server")
    ap.add_argument("--ready")
    a = ap.parse_args()
    s = sizes(a.quick)
    if a.role == "server":
        py_server(a.name, a.ready)
        return
    if a.role == "client":
        py_client(a.name, a.server, s)
        return
    subprocess.run(["epmd", "-daemon"], check=False)
    results: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["erlc", "-o", tmp, ERL_SRC], check=True)
        for i in range(a.pairs):
            tag = f"{os.getpid()}_{i}"
            # erl <-> erl
            srv = erl_server(f"b12es{tag}@localhost", tmp)
            results.setdefault("erl<->erl", []).append(
                erl_client(f"b12ec{tag}@localhost", tmp, f"b12es{tag}@localhost", s))
            # python client -> erl server
            results.setdefault("py->erl", []).append(
                py_client_proc(f"b12pc{tag}@localhost", f"b12es{tag}@localhost", a.quick))
            srv.kill()
            srv.wait()
            # erl client -> python server; python client -> python server
            ps = py_server_proc(f"b12ps{tag}@localhost", tmp)
            results.setdefault("erl->py", []).append(
                erl_client(f"b12ec2{tag}@localhost", tmp, f"b12ps{tag}@localhost", s))
            results.setdefault("py<->py", []).append(
                py_client_proc(f"b12pc2{tag}@localhost", f"b12ps{tag}@localhost", a.quick))
            stop_py_server(ps, f"b12ps{tag}@localhost")
    keys = ["rtt_p50_us", "rtt_p99_us", "small_msgs_per_s", "mib_mb_per_s", "rpc_p50_us",
            "ping_ms"]
    print(f"B12 through the VM, medians of {a.pairs} fresh pair(s) each, sizes {s}")
    print(f"{'pair':<12}" + "".join(f"{k:>18}" for k in keys))
    for kind, rs in results.items():
        row = [statistics.median(r[k] for r in rs) for k in keys]
        print(f"{kind:<12}" + "".join(f"{v:>18,.1f}" for v in row))


if __name__ == "__main__":
    main()
