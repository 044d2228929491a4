"""Helpers for the distribution tests: real `erl` nodes started and stopped by the
tests, and an agent in each that evaluates Erlang expressions sent from Python."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from typing import Any

import beamvm
from beamvm import ANY, Atom

ERL = shutil.which("erl")
COOKIE = "beamvm_dist_test"
_seq = itertools.count()

# The agent: evaluates {eval, From, Ref, Src} (Src a binary of Erlang expressions, with
# `Py` bound to From) and answers {Ref, Value} (or {Ref, {Class, Reason}} on a crash).
AGENT = r"""
register(agent, self()),
io:format("agent ready~n"),
Loop = fun Loop() ->
  receive
    {eval, From, Ref, Src} ->
      R = try
            {ok, Toks, _} = erl_scan:string(unicode:characters_to_list(Src)),
            {ok, Exprs} = erl_parse:parse_exprs(Toks),
            {value, V, _} = erl_eval:exprs(Exprs, [{'Py', From}]),
            V
          catch C:E -> {C, E} end,
      From ! {Ref, R},
      Loop();
    stop -> init:stop()
  end
end,
Loop().
"""


def unique(prefix: str) -> str:
    """A node name unique to this test run."""
    return f"{prefix}{os.getpid()}_{next(_seq)}"


def epmd_names() -> str:
    """What `epmd -names` says."""
    return subprocess.run(["epmd", "-names"], capture_output=True, text=True, timeout=10).stdout


class ErlNode:
    """An `erl -sname NAME@localhost -setcookie COOKIE` running the agent."""

    def __init__(self, cookie: str = COOKIE, ticktime: int | None = None) -> None:
        self.short = unique("erl")
        self.name = f"{self.short}@localhost"
        args = [ERL or "erl", "-sname", self.name, "-setcookie", cookie, "-noshell", "-noinput"]
        if ticktime is not None:
            args += ["-kernel", "net_ticktime", str(ticktime)]
        self.proc = subprocess.Popen(
            args + ["-eval", AGENT],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        # EPMD lists the node as soon as net_kernel runs, before -eval has registered
        # the agent (a message to it then would be dropped): wait for the agent's line.
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "agent ready" not in line:
            self.stop()
            raise RuntimeError(f"erl node {self.name} did not start: {line!r}")

    @property
    def atom(self) -> Atom:
        return Atom(self.name)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)


def erl_eval(node: ErlNode | str, src: str, timeout: float = 30.0) -> Any:
    """Evaluates Erlang expressions `src` on `node`'s agent (from a process)."""
    name = node.name if isinstance(node, ErlNode) else node
    ref = beamvm.make_ref()
    beamvm.send((Atom("agent"), Atom(name)), (Atom("eval"), beamvm.self_pid(), ref, src))
    got = beamvm.receive((ref, ANY), timeout=timeout, default=None)
    if got is None:
        raise TimeoutError(f"no answer from {name} to {src!r}")
    return got[1]
