"""Distribution against real Erlang: a beamvm node from Python with erl nodes the tests
start (`erl -sname ... -setcookie ...`) and stop. Skipped only when `erl` is absent
(scripts/test.sh installs erlang-base, so CI runs them)."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import textwrap
import time

import beamvm
import pytest
from beamvm import (
    ANY,
    Atom,
    Charlist,
    ImproperList,
    ListKey,
    MapKey,
    dist,
    gen_server,
    receive,
    rpc,
    self_pid,
    send,
)
from dist_helpers import COOKIE, ERL, ErlNode, epmd_names, erl_eval, unique

pytestmark = pytest.mark.skipif(
    ERL is None, reason="erl is not installed (apt install erlang-base)"
)

OK = Atom("ok")


@pytest.fixture
def erl():
    n = ErlNode()
    yield n
    n.stop()


def pynode() -> str:
    return f"{unique('py')}@localhost"


def run_node(main, cookie: str = COOKIE, **kw):
    return beamvm.run(main, node=pynode(), cookie=cookie, dist_listen="127.0.0.1", **kw)


def test_ping_pong_nodes_epmd_and_wrong_cookie_pang(erl):
    def main():
        me = beamvm.node()
        assert str(me).startswith("py") and self_pid().node == me
        assert f"name {str(me).split('@')[0]} at port" in epmd_names()
        assert dist.ping(erl.name) == Atom("pong")
        assert erl.atom in beamvm.nodes()
        assert me in erl_eval(erl, "nodes().")
        assert erl_eval(erl, f"net_adm:ping('{me}').") == Atom("pong")
        assert beamvm.node(erl_eval(erl, "self().")) == erl.atom
        return True

    assert run_node(main)

    def wrong():
        assert dist.ping(erl.name, timeout=10) == Atom("pang")
        assert beamvm.nodes() == []
        return True

    assert run_node(wrong, cookie="not_the_cookie")

    def refusing():
        # An erl with another cookie calling us is refused, and the refusal logged.
        me = str(beamvm.node())
        out = subprocess.run(
            [ERL or "erl", "-sname", unique("bad") + "@localhost", "-setcookie", "wrong_one",
             "-noshell", "-noinput", "-eval",
             f"io:format(\"~p~n\", [net_adm:ping('{me}')]), halt()."],
            capture_output=True, text=True, timeout=60,
        ).stdout
        assert out.strip().endswith("pang"), out
        return me

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    dist_log = logging.getLogger("beamvm.dist")
    dist_log.addHandler(handler)
    try:
        me = run_node(refusing)
        deadline = time.monotonic() + 10
        refused: list[logging.LogRecord] = []
        while not refused and time.monotonic() < deadline:
            refused = [r for r in records if "wrong cookie" in r.getMessage()]
            time.sleep(0.02)
    finally:
        dist_log.removeHandler(handler)
    assert refused, [r.getMessage() for r in records]
    assert refused[0].levelno == logging.ERROR
    assert me in refused[0].getMessage()
    assert beamvm.node() == Atom("nonode@nohost")


def echo():
    while True:
        m = receive(ANY)
        if m == Atom("stop"):
            return
        send(m[0], (Atom("echo"), m[1]))


def test_send_and_registered_send_both_ways(erl):
    def main():
        me = beamvm.node()
        beamvm.register("echo", beamvm.spawn(echo))
        # erl -> Python: registered send and send to a pid; replies to erl's pid.
        r = erl_eval(
            erl,
            f"{{echo, '{me}'}} ! {{self(), hello}}, "
            "A = receive {echo, X} -> X after 10000 -> timeout end, "
            "Py ! {from_erl, self()}, A.",
        )
        assert r == Atom("hello")
        got = receive((Atom("from_erl"), ANY), timeout=10)
        erl_pid = got[1]
        assert erl_pid.node == erl.atom
        # Python -> erl: a pid of erl's and a registered name on erl; ordering kept.
        erl_eval(
            erl,
            "register(sink, spawn(fun S() -> receive {get, F} -> "
            "F ! {sunk, lists:reverse(get())}; M -> put(M, 1), "
            "put(log, [M | case get(log) of undefined -> []; L -> L end]), S() end end)).",
        )
        for i in range(100):
            send((Atom("sink"), erl.atom), i)
        sink = erl_eval(erl, "whereis(sink).")
        send(sink, (Atom("get"), self_pid()))
        # The log is reversed newest-first then reversed back: arrival order.
        got = receive((Atom("sunk"), ANY), timeout=10)
        # get() is every key; the log key holds the order.
        logs = [v for k, v in got[1] if k == Atom("log")]
        assert list(reversed(logs[0])) == list(range(100))
        return True

    assert run_node(main)


RANDOM_TERMS = r"""
rand:seed(exsss, {1, 2, 3}),
Atom = fun() -> element(rand:uniform(5), {a, 'hello world', 'ünïcødé', '日本', true}) end,
%% Map keys of every kind: lists and maps arrive in Python as ListKey / MapKey.
Key = fun() ->
        element(rand:uniform(12), {rand:uniform(1 bsl 70), Atom(), <<"k">>, {1, 2.5}, self(),
                                   [1, Atom()], [], "key", #{k => [3]}, {[4], #{}},
                                   [[5] | 6], #{[7] => #{8 => "x"}}})
      end,
Gen = fun G(0) -> rand:uniform(100);
          G(D) ->
            case rand:uniform(16) of
              1 -> rand:uniform(1 bsl 200) - (1 bsl 199);
              2 -> -0.0;
              3 -> rand:uniform() * 1.0e300;
              4 -> Atom();
              5 -> list_to_binary([rand:uniform(255) || _ <- lists:seq(1, rand:uniform(100))]);
              6 -> <<5:3>>;
              7 -> list_to_tuple([G(D - 1) || _ <- lists:seq(1, rand:uniform(4) - 1)]);
              8 -> [G(D - 1) || _ <- lists:seq(1, rand:uniform(4))];
              9 -> [G(D - 1) | G(D - 1)];
              10 -> maps:from_list([{Key(), G(D - 1)} || _ <- lists:seq(1, rand:uniform(3))]);
              11 -> "a string";
              12 -> self();
              13 -> make_ref();
              14 -> fun lists:map/2;
              15 -> fun(X) -> {X, D} end;
              16 -> [1000, 2000 | rand:uniform(5)]
            end
      end,
Terms = [Gen(4) || _ <- lists:seq(1, 300)],
Bad = lists:filter(fun(T) ->
        {echo, 'PYNODE'} ! {self(), T},
        receive {echo, Back} -> Back =/= T after 10000 -> true end
      end, Terms),
{length(Terms), Bad}.
"""


def test_random_erlang_terms_echo_through_a_python_process_exactly(erl):
    def main():
        beamvm.register("echo", beamvm.spawn(echo))
        src = RANDOM_TERMS.replace("PYNODE", str(beamvm.node()))
        n, bad = erl_eval(erl, src, timeout=120)
        assert n == 300
        assert bad == [], bad[:3]
        return True

    assert run_node(main)


def test_maps_with_list_and_map_keys_echo_through_a_python_process(erl):
    """A map whose keys are lists or maps reaches a Python process (as ListKey /
    MapKey keys) and goes back `=:=`; no message is lost to an unhashable key."""

    def main():
        beamvm.register("echo", beamvm.spawn(echo))
        me = beamvm.node()
        back = erl_eval(
            erl,
            f"M = #{{[1,2] => a, #{{k => [3]}} => b, [[4]] => c}}, "
            f"{{echo, '{me}'}} ! {{self(), M}}, "
            "receive {echo, Back} -> Back =:= M after 10000 -> timeout end.",
        )
        assert back is True
        # Sent from Python, built with the key forms: erl sees the same map.
        agent = erl_eval(erl, "self().")
        send(agent, {ListKey([1, 2]): Atom("a"), MapKey({Atom("k"): [3]}): Atom("b"),
                     ListKey([[4]]): Atom("c")})
        assert erl_eval(
            erl,
            "receive M -> M =:= #{[1,2] => a, #{k => [3]} => b, [[4]] => c} "
            "after 5000 -> timeout end.",
        ) is True
        # And what a Python process receives from erl.
        erl_eval(erl, "Py ! #{[1,2] => a, #{k => [3]} => b, [[4]] => c, \"s\" => d}, ok.")
        got = receive(ANY, timeout=10)
        assert got == {ListKey([1, 2]): Atom("a"), MapKey({Atom("k"): ListKey([3])}): Atom("b"),
                       ListKey([ListKey([4])]): Atom("c"), ListKey([115]): Atom("d")}
        assert all(type(k) in (ListKey, MapKey) for k in got)
        return True

    assert run_node(main)


def test_python_values_on_the_wire(erl):
    def main():
        v = erl_eval(
            erl,
            'Py ! {"abc", <<"bin">>, [1 | 2], true, undefined, fun erlang:node/0}, ok.',
        )
        assert v == OK
        s, b, imp, t, u, f = receive(ANY, timeout=10)
        assert type(s) is Charlist and s == [97, 98, 99] and s.text() == "abc"
        assert b == b"bin" and imp == ImproperList([1], 2) and t is True and u is None
        assert isinstance(f, beamvm.Fun)
        # str goes out as a UTF-8 binary; a Fun goes back as the same fun.
        check = erl_eval(
            erl, 'receive {S, F} -> {S =:= <<"héllo"/utf8>>, F()} after 5000 -> timeout end.'
        )
        assert check == Atom("timeout")  # nothing sent yet
        me = self_pid()
        agent = erl_eval(erl, "self().")
        assert agent.node == erl.atom
        send(agent, ("héllo", f))
        assert erl_eval(
            erl, 'receive {S, F} -> {S =:= <<"héllo"/utf8>>, F()} after 5000 -> timeout end.'
        ) == (
            True,
            erl.atom,
        )
        assert me.node == beamvm.node()
        return True

    assert run_node(main)


class pymath:
    @staticmethod
    def add(a, b):
        return a + b

    @staticmethod
    def fail():
        raise ValueError("no good")


def test_rpc_both_ways(erl):
    def main():
        me = beamvm.node()
        assert dist.expose("pymath", pymath) == ["add", "fail"]
        assert erl_eval(erl, f"rpc:call('{me}', pymath, add, [1, 2]).") == 3
        assert erl_eval(erl, f"erpc:call('{me}', pymath, add, [40, 2]).") == 42
        bad = erl_eval(erl, f"rpc:call('{me}', pymath, fail, []).")
        assert bad[0] == Atom("badrpc") and bad[1][0] == Atom("EXIT")
        assert bad[1][1][0] == (Atom("error"), Atom("ValueError"), b"no good")
        assert erl_eval(erl, f"rpc:call('{me}', pymath, nope, []).")[0] == Atom("badrpc")
        assert rpc.call(erl.name, "erlang", "node", []) == erl.atom
        assert rpc.call(erl.name, "lists", "seq", [1, 3]) == [1, 2, 3]
        assert rpc.call(erl.name, "erlang", "error", [Atom("x")])[0] == Atom("badrpc")
        return True

    assert run_node(main)


class pyslow:
    @staticmethod
    def nap(ms):
        receive(Atom("never"), timeout=ms / 1000, default=None)
        return Atom("rested")


def test_rpc_spawn_reply_comes_before_a_slow_answer(erl):
    """The spawn reply of an rpc goes out when the call starts running, not with its
    answer (the driver holds it only for the call's first slice)."""

    def main():
        me = beamvm.node()
        assert dist.expose("pyslow", pyslow) == ["nap"]
        got = erl_eval(
            erl,
            f"Ref = make_ref(), "
            f"Req = spawn_request('{me}', erpc, execute_call, [Ref, pyslow, nap, [1500]], "
            f"[monitor]), "
            f"T0 = erlang:monotonic_time(millisecond), "
            f"receive {{spawn_reply, Req, ok, Pid}} -> ok end, "
            f"T1 = erlang:monotonic_time(millisecond), "
            f"receive {{'DOWN', Req, process, Pid, {{Ref, return, R}}}} -> "
            f"{{T1 - T0 < 1000, node(Pid), R, erlang:monotonic_time(millisecond) - T0 >= 1000}} "
            f"after 10000 -> timeout end.",
        )
        assert got == (True, me, Atom("rested"), True), got
        return True

    assert run_node(main)


def test_erl_spawns_exposed_functions_directly_with_monitor_and_link(erl):
    """spawn/4 and spawn_request/5 of an exposed function (not through erpc): the
    spawned process ends `normal` when the function returns, with the failure's reason
    when it raises, with `undef` when nothing is exposed under that name; `monitor`
    gives a DOWN and `link` an EXIT."""

    def main():
        me = beamvm.node()
        dist.expose("pymath", pymath)
        dist.expose("pyslow", pyslow)
        assert beamvm.node(erl_eval(erl, f"spawn('{me}', pymath, add, [1, 2]).")) == me
        got = erl_eval(
            erl,
            f"process_flag(trap_exit, true), "
            f"Req = spawn_request('{me}', pyslow, nap, [50], [monitor, link]), "
            f"receive {{spawn_reply, Req, ok, Pid}} -> ok end, "
            f"D = receive {{'DOWN', Req, process, Pid, R}} -> R after 10000 -> timeout end, "
            f"E = receive {{'EXIT', Pid, X}} -> X after 10000 -> timeout end, "
            f"process_flag(trap_exit, false), {{D, E}}.",
        )
        assert got == (Atom("normal"), Atom("normal")), got
        reasons = []
        for fn in ("fail", "nope"):
            reasons.append(erl_eval(
                erl,
                f"Req = spawn_request('{me}', pymath, {fn}, [], [monitor]), "
                f"receive {{spawn_reply, Req, ok, Pid}} -> ok end, "
                f"receive {{'DOWN', Req, process, Pid, R}} -> R after 10000 -> timeout end.",
            ))
        failed, undef = reasons
        assert failed != Atom("timeout") and failed != Atom("normal"), failed
        assert undef == Atom("undef"), undef
        return True

    assert run_node(main)


def test_links_and_monitors_in_all_four_directions(erl):
    def main():
        me = beamvm.node()
        beamvm.process_flag("trap_exit", True)
        # Python links to an erl process; it dies: ('EXIT', its pid, reason).
        p = erl_eval(erl, "spawn(fun() -> receive die -> exit(erl_reason) end end).")
        beamvm.link(p)
        send(p, Atom("die"))
        assert receive((Atom("EXIT"), p, ANY), timeout=10)[2] == Atom("erl_reason")
        # Python monitors an erl process and a name on erl.
        p = erl_eval(erl, "spawn(fun() -> receive die -> exit(bye) end end).")
        erl_eval(erl, "register(named, spawn(fun() -> receive die -> exit(named_bye) end end)).")
        r1 = beamvm.monitor(p)
        r2 = beamvm.monitor((Atom("named"), erl.atom))
        # A monitor alias of a remote process is refused, not made a plain monitor.
        with pytest.raises(NotImplementedError, match="another node"):
            beamvm.monitor(p, alias="demonitor")
        send(p, Atom("die"))
        send((Atom("named"), erl.atom), Atom("die"))
        assert receive((Atom("DOWN"), r1, ANY, ANY, ANY), timeout=10)[3:] == (p, Atom("bye"))
        assert receive((Atom("DOWN"), r2, ANY, ANY, ANY), timeout=10)[3:] == (
            (Atom("named"), erl.atom),
            Atom("named_bye"),
        )
        # demonitor: no DOWN afterwards.
        p = erl_eval(erl, "spawn(fun() -> receive die -> exit(bye) end end).")
        r3 = beamvm.monitor(p)
        assert beamvm.demonitor(r3) is True
        send(p, Atom("die"))
        assert receive((Atom("DOWN"), r3, ANY, ANY, ANY), timeout=0.5, default=None) is None
        # erl links to / monitors Python processes; they end with reasons.
        victim = beamvm.spawn(die_with, Atom("py_reason"))
        watched = beamvm.spawn(die_with, Atom("py_down"))
        ref = beamvm.make_ref()
        agent = (Atom("agent"), erl.atom)
        send(
            agent,
            (
                Atom("eval"),
                self_pid(),
                ref,
                "process_flag(trap_exit, true), "
                "{V, W} = receive {pids, V0, W0} -> {V0, W0} end, "
                "link(V), R = monitor(process, W), "
                "Py ! {ready, self()}, "
                "E = receive {'EXIT', V, Why} -> Why after 10000 -> timeout end, "
                "D = receive {'DOWN', R, process, W, Why2} -> Why2 after 10000 -> timeout end, "
                "process_flag(trap_exit, false), {E, D}.",
            ),
        )
        send(agent, (Atom("pids"), victim, watched))
        receive((Atom("ready"), ANY), timeout=10)
        send(victim, Atom("die"))
        send(watched, Atom("die"))
        assert receive((ref, ANY), timeout=20)[1] == (Atom("py_reason"), Atom("py_down"))
        # erl monitors a Python process by its registered name: the DOWN names it
        # {Name, Node}, as between erl nodes.
        beamvm.register("py_named", beamvm.spawn(die_with, Atom("named_reason")))
        ref = beamvm.make_ref()
        src = (
            f"R = monitor(process, {{py_named, '{me}'}}), Py ! {{ready, self()}}, "
            "receive {'DOWN', R, process, Who, Why} -> {Who, Why} after 10000 -> timeout end."
        )
        send(agent, (Atom("eval"), self_pid(), ref, src))
        receive((Atom("ready"), ANY), timeout=10)
        send(Atom("py_named"), Atom("die"))
        assert receive((ref, ANY), timeout=20)[1] == (
            (Atom("py_named"), me),
            Atom("named_reason"),
        )
        # exit(remote, reason) from Python: a trapping erl process sees it.
        ref = beamvm.make_ref()
        send(
            agent,
            (
                Atom("eval"),
                self_pid(),
                ref,
                "process_flag(trap_exit, true), Py ! {agent, self()}, "
                "X = receive {'EXIT', Py, Why} -> Why after 10000 -> timeout end, "
                "process_flag(trap_exit, false), X.",
            ),
        )
        agent_pid = receive((Atom("agent"), ANY), timeout=10)[1]
        beamvm.exit(agent_pid, Atom("py_exit2"))
        assert receive((ref, ANY), timeout=20)[1] == Atom("py_exit2")
        # unlink: the erl process's later death sends nothing.
        p = erl_eval(erl, "spawn(fun() -> receive die -> exit(late) end end).")
        beamvm.link(p)
        beamvm.unlink(p)
        send(p, Atom("die"))
        assert receive((Atom("EXIT"), p, ANY), timeout=0.5, default=None) is None
        assert me == beamvm.node()
        return True

    assert run_node(main)


def die_with(reason):
    receive(Atom("die"))
    beamvm.exit(reason)


def test_killing_erl_gives_noconnection_to_links_monitors_and_nodedown():
    erl = ErlNode(ticktime=4)

    def main():
        beamvm.process_flag("trap_exit", True)
        p = erl_eval(erl, "spawn(fun() -> receive _ -> ok end end).")
        q = erl_eval(erl, "spawn(fun() -> receive _ -> ok end end).")
        beamvm.link(p)
        r = beamvm.monitor(q)
        beamvm.monitor_node(erl.name)  # the top-level name, as dist.monitor_node
        killed = time.monotonic()
        erl.proc.kill()
        assert receive((Atom("EXIT"), p, ANY), timeout=30)[2] == Atom("noconnection")
        assert receive((Atom("DOWN"), r, ANY, q, ANY), timeout=30)[4] == Atom("noconnection")
        assert receive((Atom("nodedown"), ANY), timeout=30)[1] == erl.atom
        # The kernel closes a killed node's socket: well within net_ticktime (4 s).
        assert time.monotonic() - killed < 4.0
        assert erl.atom not in beamvm.nodes()
        return True

    try:
        assert run_node(main, net_ticktime=4)
    finally:
        erl.stop()


def test_a_100_mb_binary_round_trips(erl):
    def main():
        beamvm.register("echo", beamvm.spawn(echo))
        data = os.urandom(1 << 20) * 100
        got = erl_eval(erl, "self().")
        send(got, (self_pid(), data))
        back = erl_eval(
            erl,
            "receive {From, Bin} -> From ! {big, Bin}, {byte_size(Bin), erlang:md5(Bin)} "
            "after 60000 -> timeout end.",
            timeout=120,
        )
        import hashlib

        assert back == (len(data), hashlib.md5(data).digest())
        big = receive((Atom("big"), ANY), timeout=120)[1]
        assert bytes(big) == data
        return True

    assert run_node(main)


def test_large_binaries_echo_through_erl_intact(erl):
    """Binaries around the 64 KiB size above which they are written from their own
    buffers and received as ranges of their frames, and a stream of 1 MiB ones, go to
    erl and back intact; ones received earlier stay intact while later frames arrive,
    and one object sent twice arrives twice."""

    def main():
        echo = erl_eval(
            erl,
            "spawn(fun L() -> receive {F, B} -> F ! {echo, B}, L(); stop -> ok end end).",
        )
        sizes = [65535, 65536, 65537, 200_000] + [1 << 20] * 16 + [3 << 20]
        sent = [os.urandom(n) for n in sizes]
        sent += [sent[-1], sent[-1]]
        for d in sent:
            send(echo, (self_pid(), d))
        got = [receive((Atom("echo"), ANY), timeout=60)[1] for _ in sent]
        for i, (a, b) in enumerate(zip(sent, got, strict=True)):
            assert len(b) == len(a) and bytes(b) == a, f"binary {i} ({len(a)} bytes)"
        # Received binaries passed on as they are (shared ranges of their frames).
        for b in got[:6]:
            send(echo, (self_pid(), b))
        again = [receive((Atom("echo"), ANY), timeout=60)[1] for _ in range(6)]
        assert [bytes(b) for b in again] == sent[:6]
        send(echo, Atom("stop"))
        return True

    assert run_node(main)


def test_large_utf8_binaries_decode_to_str(erl):
    """decode_binaries='utf8': a 1 MiB UTF-8 binary from erl is a str, a 1 MiB one that
    is not UTF-8 stays bytes."""

    def main():
        echo = erl_eval(
            erl,
            "spawn(fun L() -> receive {F, B} -> F ! {echo, B}, L(); stop -> ok end end).",
        )
        text = "h\u00e9llo " * (1 << 17)
        raw = b"\xff" + os.urandom(1 << 20)
        send(echo, (self_pid(), text))
        send(echo, (self_pid(), raw))
        assert receive((Atom("echo"), ANY), timeout=60)[1] == text
        assert bytes(receive((Atom("echo"), ANY), timeout=60)[1]) == raw
        send(echo, Atom("stop"))
        return True

    assert run_node(main, decode_binaries="utf8")


TWO_NODES = textwrap.dedent(
    """
    import sys, beamvm
    from beamvm import ANY, Atom, receive, send, self_pid
    from beamvm import dist, rpc

    role, me, other = sys.argv[1], sys.argv[2], sys.argv[3]

    class api:
        @staticmethod
        def double(x):
            return 2 * x

    def serve():
        while True:
            m = receive(ANY)
            if m == Atom("stop"):
                return
            send(m[0], (Atom("pong"), m[1]))

    def main():
        if role == "server":
            dist.expose("api", api)
            beamvm.register("srv", beamvm.spawn(serve))
            print("ready", flush=True)
            beamvm.register("main", self_pid())
            receive(Atom("quit"), timeout=120)
            return
        assert dist.ping(other, timeout=30) == Atom("pong")
        send(("srv", other), (self_pid(), 7))
        assert receive((Atom("pong"), ANY), timeout=30)[1] == 7
        assert rpc.call(other, "api", "double", [21]) == 42
        assert Atom(other) in beamvm.nodes()
        send(("main", other), Atom("quit"))
        print("client ok", flush=True)

    beamvm.run(main, node=me, cookie="two_nodes", dist_listen="127.0.0.1")
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_beamvm_nodes_cluster_through_the_builtin_epmd(tmp_path):
    script = tmp_path / "node.py"
    script.write_text(TWO_NODES)
    env = dict(os.environ, ERL_EPMD_PORT=str(free_port()))
    a, b = f"{unique('a')}@localhost", f"{unique('b')}@localhost"
    server = subprocess.Popen(
        [sys.executable, str(script), "server", a, b], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"
        client = subprocess.run(
            [sys.executable, str(script), "client", b, a],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert client.returncode == 0, client.stderr
        assert "client ok" in client.stdout
        assert server.wait(60) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


class Counter(gen_server.GenServer):
    def init(self, start=0):
        self.n = start

    def handle_call(self, request, from_):
        if request == Atom("get"):
            return self.n
        if isinstance(request, tuple) and request[0] == Atom("add"):
            self.n += request[1]
            return self.n
        raise ValueError(f"unknown request {request!r}")


def test_gen_server_calls_across_nodes(erl):
    def main():
        me = beamvm.node()
        Counter.start_link(5, name="counter")
        # erl -> Python GenServer: the [alias | Ref] tag of OTP 24+'s gen:call.
        assert erl_eval(erl, f"gen_server:call({{counter, '{me}'}}, get).") == 5
        assert erl_eval(erl, f"gen_server:call({{counter, '{me}'}}, {{add, 2}}).") == 7
        # A reply through the alias after the caller gave up is dropped (alias inactive).
        late = erl_eval(
            erl,
            f"catch gen_server:call({{counter, '{me}'}}, {{add, 1}}, 0), "
            "receive M -> {late, M} after 500 -> none end.",
        )
        assert late == Atom("none")
        # Python -> erl gen_servers: by (name, node) and by pid; a missing name is noproc.
        assert gen_server.call((Atom("net_kernel"), erl.atom), (Atom("is_auth"), me)) == Atom(
            "yes"
        )
        nk = erl_eval(erl, "whereis(net_kernel).")
        assert gen_server.call(nk, (Atom("is_auth"), me)) == Atom("yes")
        with pytest.raises(beamvm.CallError) as e:
            gen_server.call((Atom("no_such_server"), erl.atom), Atom("x"), timeout=10)
        assert e.value.reason[0] == Atom("noproc")
        return True

    assert run_node(main)


def test_example_dist_node_talks_to_an_erl_shell(tmp_path):
    """examples/dist_node.py: erl pings it, rpc:calls pymath and calls its counter."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    name = f"{unique('ex')}@localhost"
    node = subprocess.Popen(
        [sys.executable, os.path.join(root, "examples", "dist_node.py"), "--node", name,
         "--cookie", COOKIE, "--seconds", "120"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert node.stdout is not None
        assert "up" in node.stdout.readline()
        src = (
            # Retry: the first connection can take a while on a loaded machine.
            f"pong = lists:foldl(fun(_, pong) -> pong; (_, _) -> timer:sleep(500), "
            f"net_adm:ping('{name}') end, pang, lists:seq(1, 20)), "
            f"3 = rpc:call('{name}', pymath, add, [1, 2]), "
            f"<<\"ABC\">> = rpc:call('{name}', pymath, upper, [<<\"abc\">>]), "
            f"5 = gen_server:call({{counter, '{name}'}}, {{add, 5}}), "
            f"{{echo, '{name}'}} ! {{self(), hi}}, "
            "receive {echo, hi} -> ok after 10000 -> exit(no_echo) end, "
            f"{{echo, '{name}'}} ! stop, io:format(\"all ok~n\"), init:stop()."
        )
        out = subprocess.run(
            [ERL or "erl", "-sname", unique("sh") + "@localhost", "-setcookie", COOKIE,
             "-noshell", "-eval", src],
            capture_output=True, text=True, timeout=120,
        )
        assert "all ok" in out.stdout, out.stdout + out.stderr
        assert node.wait(60) == 0
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()


def test_an_idle_connection_survives_ticks_and_a_silent_peer_is_dropped():
    """Ticks keep an idle connection (three net_ticktimes of silence from the programs);
    a peer that stops answering (SIGSTOP) is declared down within net_ticktime, with
    noconnection to links and monitors."""
    import signal

    erl = ErlNode(ticktime=2)

    def main():
        beamvm.process_flag("trap_exit", True)
        p = erl_eval(erl, "spawn(fun() -> receive _ -> ok end end).")
        beamvm.link(p)
        r = beamvm.monitor(p)
        beamvm.sleep(6.5)  # idle: only ticks cross
        assert erl.atom in beamvm.nodes()
        assert receive(ANY, timeout=0, default=None) is None
        assert erl_eval(erl, "ok.") == OK
        stopped = time.monotonic()
        os.kill(erl.proc.pid, signal.SIGSTOP)
        try:
            assert receive((Atom("EXIT"), p, ANY), timeout=30)[2] == Atom("noconnection")
            assert receive((Atom("DOWN"), r, ANY, ANY, ANY), timeout=30)[4] == Atom(
                "noconnection"
            )
            # Declared down within net_ticktime of the last thing heard (a tick came at
            # most net_ticktime/4 before the stop); twice that allows a slow machine.
            assert time.monotonic() - stopped < 2 * 2.0
        finally:
            os.kill(erl.proc.pid, signal.SIGCONT)
        return True

    try:
        assert run_node(main, net_ticktime=2)
    finally:
        erl.stop()


def test_unreachable_nodes_and_bad_values_fail_cleanly():
    """Sends to a node that is not up are dropped; a link gives noconnection, a monitor
    a DOWN with noconnection, monitor_node a nodedown; a value with no term form raises
    TypeError before anything is sent; bad settings raise with what to do."""

    def main():
        ghost = beamvm.Atom("ghost_nowhere@localhost")
        beamvm.process_flag("trap_exit", True)
        rpid = erl_pid_on(ghost)
        send(rpid, "dropped")
        send((Atom("x"), ghost), "dropped")
        beamvm.link(rpid)
        assert receive((Atom("EXIT"), rpid, ANY), timeout=30)[2] == Atom("noconnection")
        r = beamvm.monitor(rpid)
        assert receive((Atom("DOWN"), r, ANY, ANY, ANY), timeout=30)[4] == Atom("noconnection")
        dist.monitor_node(ghost)
        assert receive((Atom("nodedown"), ANY), timeout=30)[1] == ghost
        assert dist.ping(ghost) == Atom("pang")
        with pytest.raises(TypeError):
            send(rpid, object())
        assert rpc.call(ghost, "erlang", "node", [])[0] == Atom("badrpc")
        return True

    assert run_node(main)
    with pytest.raises(TypeError, match="node="):
        beamvm.run(lambda: None, cookie="x")
    # The defaults written out (node=None, cookie=None, the flags False) ask for no node.
    defaults = dict(node=None, cookie=None, longnames=False, hidden=False)
    assert beamvm.run(lambda: beamvm.node(), **defaults) == Atom("nonode@nohost")
    with pytest.raises(ValueError, match="decode_binaries"):
        beamvm.run(lambda: None, node=pynode(), decode_binaries="latin9")
    with pytest.raises(ValueError, match="dist_listen"):
        beamvm.run(lambda: None, node=pynode(), dist_listen="not an address")


def erl_pid_on(node: Atom) -> beamvm.Pid:
    """A pid of `node` (which need not be up), decoded from its external form."""
    name = str(node).encode()
    etf = bytes([131, 88, 119, len(name)]) + name + (77).to_bytes(4, "big") + bytes(4)
    return dist.binary_to_term(etf + (5).to_bytes(4, "big"))


def test_term_to_binary_round_trips_and_bad_bytes_raise():
    """term_to_binary / binary_to_term: the wire mapping, usable without a node."""
    v = (Atom("a"), 1, -0.0, 2**100, b"bin", "str", [1, 2], {1: 2}, Charlist("ab"),
         ImproperList([1], 2), True, None)
    etf = dist.term_to_binary(v)
    assert etf[0] == 131
    back = dist.binary_to_term(etf)
    assert back[:5] == v[:5] and back[5] == b"str" and back[6:] == v[6:]
    for bad in (b"", b"\x83", b"\x83\x6b\xff\xff", b"\x84abc", b"\x83\x52\x00"):
        with pytest.raises(ValueError):
            dist.binary_to_term(bad)


def test_decode_binaries_utf8_hidden_and_the_environment(erl, monkeypatch):
    """decode_binaries='utf8' gives str for UTF-8 binaries (bytes otherwise); a hidden
    node is not in erl's nodes() but in nodes(hidden); BEAMVM_NODE/BEAMVM_COOKIE start a
    node."""
    monkeypatch.setenv("BEAMVM_NODE", pynode())
    monkeypatch.setenv("BEAMVM_COOKIE", COOKIE)

    def main():
        me = beamvm.node()
        assert str(me).startswith("py")
        v = erl_eval(erl, "Py ! {<<\"héllo\"/utf8>>, <<255, 0>>}, ok.")
        assert v == OK
        assert receive(ANY, timeout=10) == ("héllo", b"\xff\x00")
        assert me not in erl_eval(erl, "nodes().")
        assert me in erl_eval(erl, "nodes(hidden).")
        # And on this side, as on a hidden erl node: every connection is hidden.
        assert beamvm.nodes() == []
        assert beamvm.nodes("hidden") == [erl.atom] == beamvm.nodes("connected")
        with pytest.raises(ValueError, match="kind"):
            beamvm.nodes("all")
        return True

    assert beamvm.run(main, decode_binaries="utf8", hidden=True, dist_listen="127.0.0.1")


class SilentNode:
    """A node the system EPMD knows whose port accepts connections (the kernel's
    backlog does) but never answers: a handshake with it lasts until the setup timeout
    (7 s)."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        port = self.listener.getsockname()[1]
        self.short = unique("silent")
        self.name = f"{self.short}@localhost"
        name = self.short.encode()
        # ALIVE2_REQ: port, normal node, TCP, versions 6..6, name, no extra.
        body = (bytes([120]) + port.to_bytes(2, "big") + bytes([77, 0]) + (6).to_bytes(2, "big")
                + (6).to_bytes(2, "big") + len(name).to_bytes(2, "big") + name + bytes(2))
        self.epmd = socket.create_connection(("127.0.0.1", 4369), timeout=10)
        self.epmd.sendall(len(body).to_bytes(2, "big") + body)
        resp = self.epmd.recv(16)
        assert resp[:1] in (b"y", b"v") and resp[1] == 0, resp

    def close(self) -> None:
        self.epmd.close()
        self.listener.close()


@pytest.fixture
def silent():
    subprocess.run(["epmd", "-daemon"], check=False)
    s = SilentNode()
    yield s
    s.close()


def test_a_connection_being_set_up_holds_no_scheduler(silent):
    """With one scheduler, a send, a link and a monitor to a node whose handshake hangs
    return at once and other processes keep running; when the setup times out the link
    and the monitor get noconnection. dist.ping from a process waits as a receive."""

    def ticker(parent):
        for i in range(3):
            send(parent, (Atom("tick"), i))
            beamvm.sleep(0.05)

    def main():
        beamvm.process_flag("trap_exit", True)
        target = erl_pid_on(Atom(silent.name))
        t = time.monotonic()
        send(target, "queued")
        beamvm.link(target)
        mref = beamvm.monitor(target)
        assert time.monotonic() - t < 3.5, "a send/link/monitor waited for the handshake"
        beamvm.spawn(ticker, self_pid())
        for i in range(3):
            assert receive((Atom("tick"), ANY), timeout=3.5)[1] == i
        assert time.monotonic() - t < 5, "other processes did not run while connecting"
        got = receive((Atom("EXIT"), target, ANY), timeout=30)
        assert got[2] == Atom("noconnection")
        got = receive((Atom("DOWN"), mref, ANY, ANY, ANY), timeout=30)
        assert got[4] == Atom("noconnection")
        assert dist.ping(silent.name, timeout=0.5) == Atom("pang")
        return True

    assert run_node(main, schedulers=1)


class slowmath:  # noqa: N801 - an Erlang module name
    """Exposed: `slow` waits for a `go` message, `double` answers at once."""

    @staticmethod
    def slow(x):
        beamvm.register("slowcall", self_pid())
        receive(Atom("go"), timeout=60)
        return x + 1

    @staticmethod
    def double(x):
        return 2 * x


def test_a_slow_rpc_blocks_neither_the_connection_nor_other_rpcs(erl):
    """Each rpc:call into Python runs in a process: while one waits (in receive), other
    calls on the same connection are answered, and pings go through."""

    def main():
        me = beamvm.node()
        dist.expose("slowmath", slowmath)
        erl_eval(
            erl,
            f"Agent = self(), spawn(fun() -> Agent ! {{slow_result, "
            f"rpc:call('{me}', slowmath, slow, [41])}} end), ok.",
        )
        deadline = time.monotonic() + 30
        while beamvm.whereis("slowcall") is None:
            assert time.monotonic() < deadline, "the slow call never started"
            beamvm.sleep(0.02)
        assert erl_eval(erl, f"rpc:call('{me}', slowmath, double, [21]).") == 42
        assert erl_eval(erl, f"net_adm:ping('{me}').") == Atom("pong")
        assert beamvm.whereis("slowcall") is not None, "the slow call ended early"
        r = erl_eval(
            erl,
            f"{{slowcall, '{me}'}} ! go, receive {{slow_result, R}} -> R after 30000 -> "
            "timeout end.",
        )
        assert r == 42
        return True

    assert run_node(main)


def test_watchers_of_remote_relations_are_not_in_processes(erl):
    """A process linked to a remote one gets a watcher (distribution's own process):
    beamvm.processes() lists the user's processes only, before and after."""

    def main():
        before = set(beamvm.processes())
        remote = erl_eval(erl, "P = spawn(fun() -> receive stop -> ok end end), "
                               "register(lnk, P), P.")
        beamvm.link(remote)
        deadline = time.monotonic() + 10
        while erl_eval(erl, "{links, L} = process_info(whereis(lnk), links), length(L).") != 1:
            assert time.monotonic() < deadline, "the link did not reach erl"
            beamvm.sleep(0.02)
        # The link is up, so the watcher runs; it is not the user's process.
        assert set(beamvm.processes()) == before
        beamvm.unlink(remote)
        send(remote, Atom("stop"))
        return True

    assert run_node(main)
