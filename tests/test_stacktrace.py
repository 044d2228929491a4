"""process_info(pid, "current_stacktrace"): a Python process's stack (module, function,
file, line of each frame, innermost first), with the lines of the original source (not
of the compiled template), read between slices without waiting."""

from __future__ import annotations

import linecache

import beamvm
import pytest
from beamvm import Atom, process_info, receive, send, spawn
from proc_helpers import spinner, wait_until
from trace_helpers import make_module

SRC = """
    import beamvm

    def leaf(tag):
        msg = beamvm.receive()  # LEAF
        return (tag, msg)

    def middle(n):
        total = 0
        for i in range(n):
            total += i
        return leaf(total)  # MIDDLE

    class Shop:
        def serve(self):
            return [middle(3) for _ in range(1)]  # SERVE

    def top():
        return Shop().serve()
"""


def in_leaf(p) -> bool:
    """Whether ``p`` waits in ``leaf`` (its stack is read between slices: before it gets
    there, it shows the frames it has so far)."""
    st = process_info(p, "current_stacktrace")
    return bool(st) and st[0]["function"] == "leaf"


def run(fn, *args):
    # One scheduler: CPython 3.11.7's ast.parse is not thread-safe (gh-106905,
    # "AST constructor recursion depth mismatch"), and the compiler parses sources of
    # functions processes call first on two threads at once otherwise.
    return beamvm.run(fn, *args, schedulers=1)


def test_the_stack_names_each_frame_with_its_source_line(tmp_path):
    mod = make_module(tmp_path, SRC)

    def main():
        p = spawn(mod.top)
        assert wait_until(lambda: in_leaf(p), 10)
        st = process_info(p, "current_stacktrace")
        send(p, "go")
        return st

    st = run(main)
    names = [(f["module"], f["function"]) for f in st]
    n = mod.__name__
    # the compiled comprehension is a frame of its own, named as Python 3.11 names it
    assert names[:4] == [
        (n, "leaf"),
        (n, "middle"),
        (n, "Shop.serve.<locals>.<listcomp>"),
        (n, "Shop.serve"),
    ]
    assert names[-1] == (n, "top")
    for f in st:
        assert f["file"] == mod.__file__
    marks = {
        "leaf": "# LEAF",
        "middle": "# MIDDLE",
        "Shop.serve.<locals>.<listcomp>": "# SERVE",
        "Shop.serve": "# SERVE",
    }
    for f in st[:4]:
        # the original line, not one of the compiled template's generated statements
        assert marks[f["function"]] in linecache.getline(f["file"], f["line"])


def test_the_caller_gets_its_own_stack():
    def inner():
        return process_info(None, "current_stacktrace")

    def main():
        return inner()

    st = run(main)
    assert [f["function"] for f in st[:2]] == [
        "test_the_caller_gets_its_own_stack.<locals>.inner",
        "test_the_caller_gets_its_own_stack.<locals>.main",
    ]
    assert "process_info(None" in linecache.getline(st[0]["file"], st[0]["line"])


def test_no_stack_for_dead_pids_and_a_process_in_a_slice_is_skipped_not_waited_for():
    def main():
        p = spawn(lambda: None)
        beamvm.monitor(p)
        receive()
        dead = process_info(p, "current_stacktrace")
        hog = spawn(spinner)
        # a spinning process is read between its slices (or is in one: None); never hangs
        got = [process_info(hog, "current_stacktrace") for _ in range(50)]
        beamvm.exit(hog, Atom("kill"))
        return dead, got

    dead, got = run(main)
    assert dead is None
    assert all(g is None or g[0]["function"] == "spinner" for g in got)


def test_items_and_bad_items():
    def main():
        me = beamvm.self_pid()
        return process_info(me, "pid"), process_info(me, "links")

    me, links = run(main)
    assert isinstance(me, beamvm.Pid) and links == []
    beamvm.start(schedulers=1)
    try:
        p = spawn(lambda: receive())
        with pytest.raises(ValueError, match="current_stacktrace"):
            process_info(p, "colour")
        with pytest.raises(RuntimeError, match="inside a beamvm process"):
            process_info(None, "current_stacktrace")
        send(p, 1)
    finally:
        beamvm.stop()


def test_every_process_of_a_top_listing_can_be_asked(tmp_path):
    mod = make_module(tmp_path, SRC)

    def main():
        ps = [spawn(mod.top) for _ in range(2000)]
        assert wait_until(lambda: all(in_leaf(p) for p in ps[-10:]), 20)
        stacks = [process_info(p, "current_stacktrace") for p in ps]
        for p in ps:
            send(p, "go")
        return stacks

    stacks = run(main)
    assert sum(1 for s in stacks if s and s[0]["function"] == "leaf") >= 1900
