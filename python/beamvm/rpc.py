"""Remote procedure calls to other nodes (Erlang's ``rpc:call``).

``beamvm.rpc.call(node, "erlang", "node", [])`` runs ``erlang:node()`` on ``node``
through its ``rex`` server, which both erl and beamvm nodes answer, and returns what
``rpc:call`` would: the result, or ``(Atom('badrpc'), reason)`` (``Atom('timeout')``
when no answer came within ``timeout`` seconds, ``Atom('nodedown')`` when the node
cannot be reached). Call it from a process.
"""

from __future__ import annotations

from typing import Any

from beamvm import _native
from beamvm._native import Atom
from beamvm.dist import _call_registered

__all__ = ["call"]

_CALL = Atom("call")
_BADRPC = Atom("badrpc")


def _atom(x: str | Atom, what: str) -> Atom:
    if isinstance(x, Atom):
        return x
    if isinstance(x, str):
        return Atom(x)
    raise TypeError(f"rpc.call's {what} must be a str or an Atom, not {type(x).__name__}")


def call(
    node: str | Atom,
    module: str | Atom,
    function: str | Atom,
    args: list[Any],
    timeout: float = 5.0,
) -> Any:
    """``rpc:call(Node, Module, Function, Args, Timeout)`` from a process."""
    n = _atom(node, "node")
    m = _atom(module, "module")
    f = _atom(function, "function")
    if not isinstance(args, list):
        raise TypeError(f"rpc.call's args must be a list, not {type(args).__name__}")
    request = (_CALL, m, f, args, _native.self_pid())
    msg = _call_registered(Atom("rex"), n, request, timeout)
    if msg is None:
        return (_BADRPC, Atom("timeout"))
    if len(msg) == 5:
        reason = msg[4]
        return (_BADRPC, Atom("nodedown") if reason == Atom("noconnection") else reason)
    return msg[1]
