"""beamvm.trace: recon_trace's semantics (limits and the breaker, pid scopes, return
traces, match, messages, clean removal, lifetime tied to the starting process) on both
back ends (sys.monitoring on 3.12+, the compiler's dispatch on 3.11), and debuggers
(sys.settrace) seeing process code."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import beamvm
import pytest
from beamvm import _compiler, gen_server, receive, self_pid, send, spawn, trace
from beamvm.gen_server import GenServer
from proc_helpers import env_with, wait_until
from trace_helpers import make_module

SRC = """
    def add(a, b):
        if a == 13:
            raise ValueError("unlucky")
        return a + b

    def other(x):
        return x * 2

    def worker(n, start=0):
        out = []
        for i in range(start, start + n):
            try:
                out.append(add(i, 100))
            except ValueError:
                out.append(None)
            other(i)
        return out

    def wait_then_work(n):
        receive_ = __import__("beamvm").receive
        receive_()
        return worker(n)

    class Shop:
        def place(self, item, qty):
            return (item, qty)

    def closure_maker(k):
        def scaled(x):
            return x * k
        return scaled

    def use_closure(n):
        f = closure_maker(3)
        return [f(i) for i in range(n)]
"""

CALL = re.compile(r"^\d\d:\d\d:\d\d\.\d{6} (<\d+\.\d+\.\d+>) (\S+?):(\S+?)\((.*)\)$")


@pytest.fixture
def mod(tmp_path):
    m = make_module(tmp_path, SRC)
    yield m
    trace.clear()


def calls_of(lines):
    return [CALL.match(line).groups() for line in lines if CALL.match(line)]


def no_trace_left() -> bool:
    """Nothing of the trace is installed any more (either back end)."""
    if trace._calls is not None or trace._msgs is not None or _compiler.CALL_HOOK is not None:
        return False
    if any(getattr(v, "__bvm_traced__", None) for v in list(_compiler._DISPATCH.values())):
        return False
    if sys.version_info >= (3, 12):
        mon = sys.monitoring
        if any(mon.get_tool(t) == "beamvm.trace" for t in trace._TOOL_IDS):
            return False
    return trace._template_hook not in _compiler.TEMPLATE_HOOKS


def run(fn, *args):
    return beamvm.run(fn, *args, schedulers=2)


def test_a_trace_prints_one_line_per_call_with_pid_module_function_and_args(mod):
    lines: list[str] = []

    def main():
        assert trace.calls((mod.__name__, "add", 2), 100, io=lines.append) == 1
        p = spawn(mod.worker, 3)
        beamvm.monitor(p)
        receive()
        return p

    p = run(main)
    got = calls_of(lines)
    assert got == [(repr(p), mod.__name__, "add", f"{i}, 100") for i in range(3)]


def test_the_limit_trips_the_breaker_which_removes_every_trace_and_says_so(mod):
    lines: list[str] = []

    def main():
        trace.calls([(mod.__name__, "add", "_"), (mod.__name__, "other", 1)], 5, io=lines.append)
        p = spawn(mod.worker, 10)
        beamvm.monitor(p)
        receive()
        tripped = no_trace_left()
        # once tripped, nothing is traced any more
        mod.worker  # noqa: B018
        q = spawn(mod.worker, 10)
        beamvm.monitor(q)
        receive()
        return tripped

    assert run(main) is True
    assert len(calls_of(lines)) == 5
    assert "rate limit tripped" in lines[5] and len(lines) == 6
    assert no_trace_left()


def test_a_rate_limit_allows_n_lines_per_period_and_trips_above_it(mod):
    lines: list[str] = []

    def main():
        trace.calls((mod.__name__, "add", 2), (3, 0.2), io=lines.append)
        for burst in range(3):  # 2 calls per period: under the rate
            p = spawn(mod.worker, 2, burst * 10)
            beamvm.monitor(p)
            receive()
            beamvm.sleep(0.3)
        under = trace._calls is not None
        p = spawn(mod.worker, 10)  # 10 at once: over it
        beamvm.monitor(p)
        receive()
        return under

    assert run(main) is True
    assert len(calls_of(lines)) == 6 + 3
    assert "rate limit tripped" in lines[-1]
    assert no_trace_left()


def test_return_trace_reports_values_and_exceptions(mod):
    lines: list[str] = []

    def main():
        trace.calls((mod.__name__, "add", 2), 100, return_trace=True, io=lines.append)
        p = spawn(mod.worker, 2, 12)  # add(12, 100) returns, add(13, 100) raises
        beamvm.monitor(p)
        receive()
        return p

    p = run(main)
    tails = [line.split(" ", 2)[2] for line in lines]
    n = mod.__name__
    assert tails == [
        f"{n}:add(12, 100)",
        f"{n}:add/2 --> 112",
        f"{n}:add(13, 100)",
        f"{n}:add/2 raised ValueError('unlucky')",
    ]
    assert all(line.split(" ")[1] == repr(p) for line in lines)


def test_arity_mode_match_predicate_and_wildcards(mod):
    lines: list[str] = []

    def main():
        trace.calls(
            (mod.__name__, "_", 2),  # add/2 only (other/1 and worker/2... worker has 2)
            100,
            args="arity",
            match=lambda args: args[0] % 2 == 0,
            io=lines.append,
        )
        p = spawn(mod.worker, 4)
        beamvm.monitor(p)
        receive()

    run(main)
    tails = [line.split(" ", 2)[2] for line in lines]
    # worker(4) itself: match sees (4,) -> even, traced; add(0), add(2) traced; odd ones not
    assert tails == [f"{mod.__name__}:{f}/2" for f in ("worker", "add", "add")]


def test_methods_by_qualname_and_closures_are_traced(mod):
    lines: list[str] = []

    def main():
        trace.calls(
            [(mod.__name__, "Shop.place", 3), (mod.__name__, "scaled", 1)], 100, io=lines.append
        )
        shop = mod.Shop()
        p = spawn(lambda: (shop.place("pen", 2), mod.use_closure(2)))
        beamvm.monitor(p)
        receive()

    run(main)
    tails = [line.split(" ", 2)[2].split("(")[0] for line in lines]
    n = mod.__name__
    assert tails == [
        f"{n}:Shop.place",
        f"{n}:closure_maker.<locals>.scaled",
        f"{n}:closure_maker.<locals>.scaled",
    ]


@pytest.mark.parametrize("scope", ["all", "pid", "list", "new", "existing"])
def test_pid_scopes(mod, scope):
    lines: list[str] = []

    def main():
        old1 = spawn(mod.wait_then_work, 1)
        old2 = spawn(mod.wait_then_work, 1)
        pid = {
            "all": "all",
            "pid": old1,
            "list": [old1, old2],
            "new": "new",
            "existing": "existing",
        }[scope]
        trace.calls((mod.__name__, "add", 2), 100, pid=pid, io=lines.append)
        new = spawn(mod.wait_then_work, 1)
        for p in (old1, old2, new):
            beamvm.monitor(p)
            send(p, "go")
            receive()
        return old1, old2, new

    old1, old2, new = run(main)
    seen = {p for p, *_ in calls_of(lines)}
    want = {
        "all": {old1, old2, new},
        "pid": {old1},
        "list": {old1, old2},
        "new": {new},
        "existing": {old1, old2},
    }[scope]
    assert seen == {repr(p) for p in want}


def test_clear_removes_everything_and_later_calls_are_not_traced(mod):
    lines: list[str] = []

    def main():
        trace.calls((mod.__name__, "add", 2), 100, io=lines.append, return_trace=True)
        trace.messages(self_pid(), 100, io=lines.append)
        trace.clear()
        p = spawn(mod.worker, 3)
        beamvm.monitor(p)
        receive()
        return no_trace_left()

    assert run(main) is True
    assert lines == []


def test_traces_stop_when_the_process_that_started_them_exits(mod):
    lines: list[str] = []

    def operator():
        trace.calls((mod.__name__, "add", 2), 100, io=lines.append)
        trace.messages(self_pid(), 100, io=lines.append)

    def main():
        op = spawn(operator)
        beamvm.monitor(op)
        receive()
        assert wait_until(no_trace_left, 10.0)
        p = spawn(mod.worker, 3)
        beamvm.monitor(p)
        receive()
        return True

    assert run(main)
    assert lines == []


def test_message_traces_show_sends_and_receives_of_the_traced_process_only(mod):
    lines: list[str] = []

    def echo():
        while True:
            m = receive()
            if m == "stop":
                return
            send(m[0], ("echo", m[1]))

    def main():
        e = spawn(echo)
        other = spawn(echo)
        trace.messages(e, 100, io=lines.append)
        me = self_pid()
        send(e, (me, 1))
        receive()
        send(other, (me, 2))  # between two other processes: not traced
        receive()
        beamvm.monitor(e)
        send(e, "stop")
        send(other, "stop")
        receive((beamvm.Atom("DOWN"), beamvm.ANY, beamvm.ANY, e, beamvm.ANY))
        trace.clear()
        return e, me

    e, me = run(main)
    tails = [line.split(" ", 2)[1:] for line in lines]
    assert tails == [
        [repr(e), f"receive ({me!r}, 1)"],
        [repr(e), f"send ('echo', 1) to {me!r}"],
        [repr(e), "receive 'stop'"],
    ]


class _TracedEcho(GenServer):
    def init(self):
        pass

    def handle_call(self, request, from_):
        return ("echo", request)


def test_message_traces_show_a_gen_servers_call_and_its_reply(mod):
    # A call from this VM is answered natively through the caller's alias (no Python
    # tuple built): the trace must still show the reply as sent.
    lines: list[str] = []

    def main():
        srv = _TracedEcho.start()
        trace.messages(srv, 100, io=lines.append)
        got = gen_server.call(srv, 7)
        trace.clear()
        return got, srv

    got, srv = run(main)
    assert got == ("echo", 7)
    tails = [line.split(" ", 2)[1:] for line in lines]
    assert [who for who, _ in tails] == [repr(srv), repr(srv)]
    assert tails[0][1].startswith("receive (Atom('$gen_call'), (")
    assert tails[1][1].startswith("send (") and "('echo', 7))" in tails[1][1]


def test_message_traces_have_the_same_breaker(mod):
    lines: list[str] = []

    def main():
        me = self_pid()
        trace.messages(me, 3, io=lines.append)
        for i in range(5):
            send(me, i)
            receive()
        return no_trace_left()

    assert run(main) is True
    assert len(lines) == 4 and "rate limit tripped" in lines[3]


def test_io_to_a_pid_sends_the_lines(mod):
    def main():
        trace.calls((mod.__name__, "other", 1), 100, io=self_pid())
        p = spawn(mod.worker, 1)
        beamvm.monitor(p)
        got = receive(str)
        receive(tuple)
        return got

    assert run(main).endswith(f"{mod.__name__}:other(0)")


def test_bad_arguments_say_what_to_do(mod):
    with pytest.raises(ValueError, match="names its module"):
        trace.calls(("_", "add", 2), 10)
    with pytest.raises(ValueError, match="not loaded"):
        trace.calls(("no.such.module", "add", 2), 10)
    with pytest.raises(TypeError, match=r"\(n, seconds\)"):
        trace.calls((mod.__name__, "add", 2), "many")
    with pytest.raises(ValueError, match="n >= 1"):
        trace.calls((mod.__name__, "add", 2), 0)
    with pytest.raises(TypeError, match="arity"):
        trace.calls((mod.__name__, "add", "two"), 5)
    with pytest.raises(ValueError, match="args"):
        trace.calls((mod.__name__, "add", 2), 5, args="all")
    with pytest.raises(TypeError, match="io"):
        trace.calls((mod.__name__, "add", 2), 5, io=3)
    with pytest.raises(TypeError, match="Pid"):
        trace.messages("me", 5)
    assert no_trace_left()


def test_a_broken_io_removes_the_trace_instead_of_crashing_the_traced_process(mod):
    def bad(line):
        raise OSError("disk full")

    def main():
        trace.calls((mod.__name__, "add", 2), 100, io=bad)
        p = spawn(mod.worker, 3)
        beamvm.monitor(p)
        return receive()[4]

    assert run(main) == beamvm.Atom("normal")
    assert no_trace_left()


def test_settrace_sees_process_code(tmp_path):
    # Its own function: the compiler caches templates by code object equality, which
    # ignores the file name, so a copy of SRC's functions could run another file's.
    mod = make_module(
        tmp_path,
        """
        def add(a, b):
            c = a + b
            d = c * 7
            return d - 3

        def worker(n):
            return [add(i, 1) for i in range(n)]
        """,
    )
    seen: set[int] = set()
    fname = mod.__file__

    def tracer(frame, event, arg):
        if frame.f_code.co_filename == fname:
            seen.add(frame.f_lineno)
            return tracer
        return None

    def main():
        p = spawn(mod.worker, 3)
        beamvm.monitor(p)
        receive()

    trace.settrace(tracer)
    try:
        run(main)
    finally:
        trace.settrace(None)
    first = mod.add.__code__.co_firstlineno
    # each line of add, run inside a process on a scheduler thread
    assert {first + 1, first + 2, first + 3} <= seen


def test_threading_settrace_before_import_reaches_process_code(tmp_path):
    # what `coverage run` does: threading.settrace before the program imports beamvm
    prog = tmp_path / "prog.py"
    prog.write_text(
        textwrap.dedent(
            """
            import sys, threading
            seen = set()
            def tracer(frame, event, arg):
                if frame.f_code.co_name == "body":
                    seen.add(event)
                    return tracer
                return None
            threading.settrace(tracer)
            import beamvm

            def body():
                x = 1
                return x + 1

            def main():
                p = beamvm.spawn(body)
                beamvm.monitor(p)
                beamvm.receive()

            beamvm.run(main, schedulers=2)
            print(sorted(seen))
            """
        )
    )
    out = subprocess.run(
        [sys.executable, str(prog)], capture_output=True, text=True, timeout=120, env=env_with()
    )
    assert out.returncode == 0, out.stderr
    assert "'line'" in out.stdout and "'call'" in out.stdout, out.stdout


def test_coverage_run_measures_process_code(tmp_path):
    pytest.importorskip("coverage")
    prog = tmp_path / "covprog.py"
    prog.write_text(
        textwrap.dedent(
            """
            import beamvm

            def body(n):
                total = 0
                for i in range(n):
                    total += i
                return total

            def main():
                p = beamvm.spawn(body, 10)
                beamvm.monitor(p)
                beamvm.receive()

            beamvm.run(main, schedulers=2)
            """
        )
    )
    env = env_with()
    cov = [sys.executable, "-m", "coverage"]
    r = subprocess.run(
        [*cov, "run", str(prog)], cwd=tmp_path, capture_output=True, text=True, env=env,
        timeout=180,
    )
    assert r.returncode == 0, r.stderr
    rep = subprocess.run(
        [*cov, "report", "-m", "--include", str(prog)], cwd=tmp_path, capture_output=True,
        text=True, env=env, timeout=60,
    )
    # every line of body ran in a process: none of them is reported missing
    line = next(ln for ln in rep.stdout.splitlines() if "covprog" in ln)
    assert line.split()[-1] == "100%", rep.stdout
