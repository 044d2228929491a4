"""Each process runs in its own contextvars.Context, copied from its spawner's at spawn:
context variables (and decimal's current context, which is one) are per process, as
they are per thread for threads started with ``copy_context().run``."""

from __future__ import annotations

import contextvars
import decimal
import threading

import beamvm
from beamvm import receive, self_pid, send, spawn

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


def run(fn, *args, **cfg):
    cfg.setdefault("schedulers", 1)  # one thread: every process shares it
    return beamvm.run(fn, *args, **cfg)


def test_decimal_context_is_per_process():
    # Before: prec = 5 set in one process changed the other's results.
    def low_precision(parent):
        decimal.getcontext().prec = 5
        send(parent, "set")
        receive("go")
        send(parent, ("low", str(decimal.Decimal(1) / decimal.Decimal(7))))

    def default_precision(parent):
        receive("go")
        send(parent, ("default", str(decimal.Decimal(1) / decimal.Decimal(7))))

    def main():
        me = self_pid()
        a = spawn(low_precision, me)
        b = spawn(default_precision, me)
        receive("set", timeout=2)
        send(b, "go")
        send(a, "go")
        got = dict([receive(timeout=2), receive(timeout=2)])
        return got, decimal.getcontext().prec

    got, main_prec = run(main)
    assert got == {"low": "0.14286", "default": "0.1428571428571428571428571429"}
    assert main_prec == 28


def test_context_var_set_in_one_process_is_not_seen_by_another():
    def setter(parent):
        VAR.set("setter's")
        send(parent, "set")
        receive("go")
        send(parent, ("setter", VAR.get()))

    def reader(parent):
        receive("go")
        send(parent, ("reader", VAR.get()))

    def main():
        me = self_pid()
        a = spawn(setter, me)
        b = spawn(reader, me)
        receive("set", timeout=2)
        send(b, "go")
        send(a, "go")
        return dict([receive(timeout=2), receive(timeout=2)]), VAR.get()

    got, in_main = run(main)
    assert got == {"setter": "setter's", "reader": "unset"} and in_main == "unset"


def test_a_child_starts_with_a_copy_of_its_spawners_context():
    def child(parent):
        inherited = VAR.get()
        VAR.set("child's")
        send(parent, inherited)

    def main():
        VAR.set("parent's")
        spawn(child, self_pid())
        return receive(timeout=2), VAR.get()

    assert run(main) == ("parent's", "parent's")


def test_the_main_process_copies_the_callers_context_and_leaves_it_alone():
    token = VAR.set("caller's")
    try:
        def main():
            seen = VAR.get()
            VAR.set("main's")
            return seen

        assert run(main) == "caller's"
        assert VAR.get() == "caller's"
    finally:
        VAR.reset(token)


def test_threading_local_stays_per_os_thread():
    # Documented: a threading.local is per scheduler thread, shared by the processes
    # that run on it (so it is no place for per-process state).
    local = threading.local()

    def writer(parent):
        local.x = "writer's"
        send(parent, "written")

    def reader(parent):
        send(parent, getattr(local, "x", "unset"))

    def main():
        me = self_pid()
        spawn(writer, me)
        receive("written", timeout=2)
        spawn(reader, me)
        return receive(timeout=2)

    assert run(main) == "writer's"
