"""beamvm.code and beamvm.sys: hot code loading with Erlang's two versions (old and new
code running side by side, fully qualified calls switching, purge and soft_purge,
a third load purging), failed loads keeping the current version, GenServers moving to
new code, and suspend/change_code/resume without a lost call."""

from __future__ import annotations

import linecache
import logging
import sys
import textwrap

import beamvm
import pytest
from beamvm import ANY, Atom, CallError, _compiler, code, gen_server, receive, self_pid, send, spawn
from beamvm import sys as bsys
from proc_helpers import wait_until
from trace_helpers import make_module, rewrite

DOWN, KILLED = Atom("DOWN"), Atom("killed")

V1 = """
    VSN = 1

    def version():
        return VSN

    def hold():
        # a long-running call of this version: waits in its own frame
        got = __import__("beamvm").receive()
        return ("held v1", version_here(), got)

    def version_here():
        return "v1"

    def step(state):
        return state + 1
"""
V2 = V1.replace("VSN = 1", "VSN = 2").replace("v1", "v2").replace("state + 1", "state + 10")
V3 = V1.replace("VSN = 1", "VSN = 3").replace("v1", "v3")


def run(fn, *args):
    return beamvm.run(fn, *args, schedulers=2)


def down_of(pid):
    return receive((DOWN, ANY, ANY, pid, ANY), timeout=10)[4]


def _in_function(pid, name):
    # None while the process runs on another scheduler (its frames are not readable then)
    frames = beamvm.process_info(pid, "current_stacktrace") or []
    return any(f["function"] == name for f in frames)


def looper(mod):
    """Erlang's server loop: each iteration calls through the module (mod.step)."""
    state = 0
    while True:
        msg = receive()
        if msg == "stop":
            return state
        state = mod.step(state)
        send(msg, (state, mod.version()))


def test_old_and_new_code_run_side_by_side_and_qualified_calls_switch(tmp_path):
    mod = make_module(tmp_path, V1)

    def main():
        holder = spawn(mod.hold)  # in old code when the load happens
        loop = spawn(looper, mod)
        beamvm.monitor(holder)
        me = self_pid()
        send(loop, me)
        first = receive()
        assert wait_until(lambda: beamvm.process_info(holder, "current_stacktrace"), 5)
        rewrite(mod, V2)
        code.load(mod)
        send(loop, me)
        second = receive()  # the loop's next call through the module runs new code
        new_here = mod.version_here()
        old = code.which_old(mod)
        send(holder, "go")  # the held frame finishes in old code
        held = receive((Atom("DOWN"), ANY, ANY, holder, ANY), timeout=5)
        send(loop, "stop")
        return first, second, new_here, old, holder, held[4]

    first, second, new_here, old, holder, reason = run(main)
    assert first == (1, 1)
    assert second == (11, 2)
    assert new_here == "v2"
    assert old == [holder]
    assert reason == Atom("normal")


def test_the_old_version_finishes_its_frame_in_old_code(tmp_path):
    mod = make_module(tmp_path, V1)

    def holder_then_report(me):
        r = mod.hold()
        send(me, r)

    def main():
        me = self_pid()
        h = spawn(holder_then_report, me)
        # Until it runs, a process's stacktrace names its entry function; wait for the
        # frame of mod.hold itself (a reload before the call would make it call v2).
        assert wait_until(lambda: _in_function(h, "hold"), 5)
        rewrite(mod, V2)
        code.load(mod)
        send(h, "go")
        return receive(timeout=5)

    # hold's own frame is old code; the version_here it calls by name is looked up in the
    # reloaded namespace when called: new code (Python globals are all "external" calls).
    assert run(main) == ("held v1", "v2", "go")


def test_soft_purge_refuses_while_old_code_runs_and_purge_kills_it(tmp_path):
    mod = make_module(tmp_path, V1)

    def main():
        h = spawn(mod.hold)
        idle = spawn(looper, mod)  # waits in receive in looper (not in mod): not old code
        beamvm.monitor(h)
        assert wait_until(lambda: beamvm.process_info(h, "current_stacktrace"), 5)
        rewrite(mod, V2)
        code.load(mod)
        refused = code.soft_purge(mod)
        killed = code.purge(mod)
        reason = down_of(h)
        after = (code.which_old(mod), code.soft_purge(mod), beamvm.is_alive(idle))
        beamvm.exit(idle, Atom("kill"))
        return refused, killed, reason, after

    refused, killed, reason, after = run(main)
    assert refused is False
    assert killed is True
    assert reason == KILLED
    assert after == ([], True, True)


def test_a_third_load_purges_the_old_version_as_erlang_does(tmp_path):
    mod = make_module(tmp_path, V1)

    def main():
        h1 = spawn(mod.hold)  # will be running the old version (v1) after load 2
        beamvm.monitor(h1)
        assert wait_until(lambda: beamvm.process_info(h1, "current_stacktrace"), 5)
        rewrite(mod, V2)
        code.load(mod)
        h2 = spawn(mod.hold)  # runs v2
        beamvm.monitor(h2)
        assert wait_until(lambda: beamvm.process_info(h2, "current_stacktrace"), 5)
        rewrite(mod, V3)
        code.load(mod)  # v1 is purged: h1 killed; v2 becomes old, h2 keeps running
        r1 = down_of(h1)
        old = code.which_old(mod)
        alive2 = beamvm.is_alive(h2)
        send(h2, "go")
        return r1, old, h2, alive2, down_of(h2), mod.version()

    r1, old, h2, alive2, r2, vsn = run(main)
    assert r1 == KILLED
    assert old == [h2] and alive2
    assert r2 == Atom("normal")
    assert vsn == 3


def test_a_syntax_error_keeps_the_current_version_and_says_why(tmp_path):
    mod = make_module(tmp_path, V1)
    rewrite(mod, textwrap.dedent(V2) + "\ndef broken(:\n")
    with pytest.raises(code.LoadError, match=r"SyntaxError") as e:
        code.load(mod)
    assert isinstance(e.value.__cause__, SyntaxError)
    assert mod.version() == 1 and mod.step(0) == 1
    assert code.which_old(mod) == []


def test_an_import_error_keeps_the_current_namespace(tmp_path):
    mod = make_module(tmp_path, V1)
    rewrite(mod, textwrap.dedent(V2) + "\nADDED = 1\nimport no_such_module_anywhere\n")
    with pytest.raises(code.LoadError, match="no_such_module_anywhere") as e:
        code.load(mod.__name__)
    assert isinstance(e.value.__cause__, ImportError)
    assert mod.version() == 1 and mod.VSN == 1 and not hasattr(mod, "ADDED")
    # a process still runs version 1 (never the rejected text: see the tests below)
    assert run(lambda: mod.version()) == 1


HOT = """
    def g(i):
        return i

    def f():
        x = 0
        for i in range(3):
            x += g(i)
        return x

    def h():
        y = 0
        for i in range(3):
            y += g(i)
        return y
"""
#: the same functions on the same lines, their bodies changed
HOT_EDITED = HOT.replace("+= g(i)", "+= 100 * g(i)")


def _compiled(fn):
    return _compiler.cached_template(fn.__code__) is not None


def test_a_failed_load_keeps_process_code_on_the_loaded_version(tmp_path):
    mod = make_module(tmp_path, HOT)
    assert run(mod.f) == 3 and _compiled(mod.f)
    rewrite(mod, HOT_EDITED + "\nimport no_such_module_anywhere\n")
    with pytest.raises(code.LoadError):
        code.load(mod)
    # h was never compiled: it compiles now, from the text that was loaded (not the
    # rejected one on disk), and runs preemptibly as the plain call does
    assert mod.h() == 3
    assert run(mod.h) == 3 and _compiled(mod.h)


def test_an_edit_not_loaded_does_not_run_in_processes(tmp_path):
    mod = make_module(tmp_path, HOT)
    assert run(mod.f) == 3
    rewrite(mod, HOT_EDITED)
    linecache.checkcache()  # a traceback printed meanwhile reads the edited file
    assert mod.h() == 3 and run(mod.h) == 3 and _compiled(mod.h)
    # loaded, the edit is the running version: new calls run it compiled in processes
    code.load(mod)
    assert run(mod.h) == 300 and _compiled(mod.h)
    assert run(mod.f) == 300 and _compiled(mod.f)


def test_a_function_whose_file_changed_before_it_was_compiled_runs_plainly_and_says_so(
    tmp_path, caplog
):
    mod = make_module(tmp_path, HOT)
    rewrite(mod, HOT_EDITED + "\nimport no_such_module_anywhere\n")
    with pytest.raises(code.LoadError):
        code.load(mod)
    # no text of the loaded version is known: f runs as loaded, not compiled
    with caplog.at_level(logging.WARNING, logger="beamvm"):
        assert run(mod.f) == 3
        assert run(mod.f) == 3
    assert not _compiled(mod.f) and not _compiler.is_compilable(mod.f)
    said = [r.getMessage() for r in caplog.records if "without preemption" in r.getMessage()]
    assert len(said) == 1, said  # once per function
    assert "f (" in said[0] and mod.__file__ in said[0]
    assert f"beamvm.code.load({mod.__name__!r})" in said[0]
    rewrite(mod, HOT_EDITED)
    code.load(mod)  # the fix loaded: the new f compiles
    assert run(mod.f) == 300 and _compiled(mod.f)


def test_a_loaded_version_compiles_from_the_text_loaded_not_a_later_edit(tmp_path):
    mod = make_module(tmp_path, HOT)
    rewrite(mod, HOT_EDITED)
    code.load(mod)
    rewrite(mod, HOT.replace("+= g(i)", "+= 7 * g(i)"))  # edited again, not loaded
    linecache.checkcache()
    assert run(mod.h) == 300 and _compiled(mod.h)


def test_load_errors_name_what_is_wrong():
    with pytest.raises(code.LoadError, match="not loaded"):
        code.load("no.such.module")
    with pytest.raises(TypeError, match="module"):
        code.load(42)
    with pytest.raises(code.LoadError, match="no source"):
        code.load(sys)


COUNTER_V1 = """
    from beamvm.gen_server import GenServer

    class Counter(GenServer):
        def init(self, start=0):
            self.n = start

        def handle_call(self, req, from_):
            self.n += 1
            return ("v1", self.n)

        def handle_cast(self, msg):
            self.n = msg
"""
COUNTER_V2 = (
    COUNTER_V1.replace('"v1"', '"v2"')
    + """
        def code_change(self, old_vsn, extra):
            self.n = self.n * 100 + extra
"""
)


def test_a_gen_server_runs_new_callbacks_from_the_next_message_after_a_load(tmp_path):
    mod = make_module(tmp_path, COUNTER_V1)

    def main():
        srv = mod.Counter.start_link()
        a = gen_server.call(srv, "x")
        rewrite(mod, COUNTER_V2)
        code.load(mod)
        b = gen_server.call(srv, "x")  # new code, same state (no code_change asked)
        return a, b

    assert run(main) == (("v1", 1), ("v2", 2))


def test_suspend_change_code_resume_loses_no_call_and_new_code_answers(tmp_path):
    mod = make_module(tmp_path, COUNTER_V1)

    def caller(srv, me, i):
        send(me, (i, gen_server.call(srv, ("req", i), timeout=10)))

    def main():
        me = self_pid()
        srv = mod.Counter.start_link(5)
        before = gen_server.call(srv, "x")
        off = bsys.statistics(srv)
        bsys.statistics(srv, True)
        bsys.suspend(srv)
        for i in range(5):
            spawn(caller, srv, me, i)
        beamvm.sleep(0.1)
        waiting = beamvm.process_info(srv)["message_queue_len"]
        early = receive(timeout=0, default=None)  # nobody answered while suspended
        rewrite(mod, COUNTER_V2)
        code.load(mod)
        bsys.change_code(srv, mod.__name__, "1", 7)
        state = bsys.get_state(srv)
        bsys.resume(srv)
        replies = sorted(receive(timeout=10) for _ in range(5))
        stats = bsys.statistics(srv)
        return before, waiting, early, state.n, type(state).__name__, replies, stats, off

    before, waiting, early, n, cls, replies, stats, off = run(main)
    assert off is None
    assert before == ("v1", 6)
    assert waiting == 5 and early is None
    assert n == 6 * 100 + 7 and cls == "Counter"
    assert [r[1][0] for r in replies] == ["v2"] * 5
    assert sorted(r[1][1] for r in replies) == list(range(608, 613))
    # since it began: suspend, the 5 calls, this statistics request (the system messages
    # taken while suspended are not the loop's)
    assert stats["messages_in"] == 1 + 5 + 1
    assert stats["start_time"] <= stats["current_time"] and stats["reductions"] > 0


def test_replace_state_and_a_failing_code_change(tmp_path):
    mod = make_module(tmp_path, COUNTER_V1)
    bad = COUNTER_V1 + """
        def code_change(self, old_vsn, extra):
            raise ValueError("cannot upgrade")
"""

    def main():
        srv = mod.Counter.start_link(1)

        def bump(st):
            st.n += 40

        new = bsys.replace_state(srv, bump)
        rewrite(mod, bad)
        code.load(mod)
        bsys.suspend(srv)
        with pytest.raises(CallError) as e:
            bsys.change_code(srv, mod.__name__, "1", None)
        bsys.resume(srv)
        after = gen_server.call(srv, "x")
        return new.n, e.value.reason[1], after

    n, why, after = run(main)
    assert n == 41
    assert why == "ValueError"
    assert after == ("v1", 42)  # the same text: v1's body, the new class, state kept


def test_sys_calls_to_a_dead_server_raise_noproc_and_outside_a_process_say_so(tmp_path):
    mod = make_module(tmp_path, COUNTER_V1)

    def main():
        srv = mod.Counter.start()
        gen_server.stop(srv)
        with pytest.raises(CallError) as e:
            bsys.get_state(srv)
        return e.value.reason

    assert run(main) == Atom("noproc")
    with pytest.raises(RuntimeError, match="inside a beamvm process"):
        bsys.suspend(beamvm.Pid if False else None)  # type: ignore[arg-type]


def test_a_suspended_server_still_stops_on_terminate(tmp_path):
    mod = make_module(tmp_path, COUNTER_V1)

    def main():
        srv = mod.Counter.start()
        bsys.suspend(srv)
        gen_server.stop(srv, Atom("normal"), timeout=5)
        return beamvm.is_alive(srv)

    assert run(main) is False


def test_a_server_started_from_a_class_captured_before_the_load_runs_new_code(tmp_path):
    # a supervisor's child spec keeps the class object it was given: a restart after a
    # load starts that (old) class, which moves to the reloaded one on its first message
    mod = make_module(tmp_path, COUNTER_V1)
    captured = mod.Counter

    def main():
        rewrite(mod, COUNTER_V2)
        code.load(mod)
        srv = captured.start_link()
        return gen_server.call(srv, "x"), captured is mod.Counter

    assert run(main) == (("v2", 1), False)
