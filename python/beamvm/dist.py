"""Erlang distribution: this VM as a node of an Erlang (or beamvm) cluster.

Start a node with ``beamvm.run(main, node="py@localhost", cookie="secret")`` (or
``beamvm.start(node=...)``, or the ``BEAMVM_NODE`` / ``BEAMVM_COOKIE`` environment
variables). Then pids of other nodes work like local ones (send, link, monitor, exit),
``(name, node)`` is a destination, and Erlang nodes can ``rpc:call`` the Python modules
exposed here. docs/distribution.md has the setup, the string mapping and the security
notes (the cookie is the only authentication; traffic is not encrypted).
"""

from __future__ import annotations

import os
import socket
import types
from typing import Any

from beamvm import _native
from beamvm._native import Atom, binary_to_term, term_to_binary
from beamvm._wire import BitString, Charlist, Fun, ImproperList, ListKey, MapKey, Port

__all__ = [
    "BitString",
    "Charlist",
    "binary_to_term",
    "term_to_binary",
    "Fun",
    "ImproperList",
    "ListKey",
    "MapKey",
    "Port",
    "expose",
    "monitor_node",
    "node",
    "nodes",
    "ping",
]

_ALIAS = Atom("alias")
_GEN_CALL = Atom("$gen_call")
_DOWN = Atom("DOWN")

#: The keyword arguments of beamvm.run / beamvm.start that configure distribution.
OPTIONS = (
    "node",
    "cookie",
    "longnames",
    "hidden",
    "dist_listen",
    "net_ticktime",
    "decode_binaries",
)


def node() -> Atom:
    """Return this node's name (``Atom('nonode@nohost')`` when not distributed)."""
    return _native.node()


def nodes(kind: str = "visible") -> list[Atom]:
    """Return the nodes this node is connected to, sorted, as ``erlang:nodes/1`` does.

    ``kind``: ``"visible"`` (the default, ``nodes()``), ``"hidden"`` (``nodes(hidden)``:
    connections to or from a hidden node; on a hidden node every connection is one) or
    ``"connected"`` (both).
    """
    return _native.nodes(kind)


def ping(name: str | Atom, timeout: float = 5.0) -> Atom:
    """``net_adm:ping``: ``Atom('pong')`` if ``name`` answers, else ``Atom('pang')``.

    From a process, the process waits as in a ``receive`` (its scheduler runs other
    processes meanwhile, even while the connection is being set up); from plain
    Python code, the calling thread blocks up to ``timeout`` seconds.
    """
    if not _native.in_process_():
        return Atom("pong") if _native.dist_ping(name, timeout) else Atom("pang")
    import beamvm

    n = name if isinstance(name, Atom) else Atom(str(name))
    if n == beamvm.node():
        return Atom("pong")
    msg = _call_registered(Atom("net_kernel"), n, (Atom("is_auth"), beamvm.node()), timeout)
    ok = msg is not None and len(msg) == 2 and msg[1] == Atom("yes")
    return Atom("pong") if ok else Atom("pang")


def _call_registered(name: Atom, node: Atom, request: Any, timeout: float) -> Any:
    """Make a ``gen_server`` call of ``{name, node}`` from a process.

    The tag is gen.erl's ``[alias | Alias]`` (OTP 24+): the server (erl's, or a beamvm
    node's, its built-in net_kernel and rex included) answers through the alias, which
    is deactivated when the call ends, so a reply that comes after the timeout is
    dropped rather than left in the mailbox (Erlang's ``rpc:call`` never leaks one
    either). Returns the reply message ``(tag, reply)``, the monitor's ``DOWN`` message
    (5 items) if the server or its node is gone, or None after ``timeout`` seconds.
    """
    import beamvm

    dest = (name, node)
    alias = beamvm.alias()
    tag = ImproperList([_ALIAS], alias)
    mref = beamvm.monitor(dest)
    beamvm.send(dest, (_GEN_CALL, (_native.self_pid(), tag), request))
    down = (_DOWN, mref, beamvm.ANY, beamvm.ANY, beamvm.ANY)
    msg = beamvm.receive((tag, beamvm.ANY), down, timeout=timeout, default=None)
    beamvm.unalias(alias)
    beamvm.demonitor(mref, flush=True)
    if msg is None:
        # After the unalias no reply arrives; one that came just before is still ours.
        msg = beamvm.receive((tag, beamvm.ANY), timeout=0, default=None)
    return msg


def monitor_node(name: str | Atom, flag: bool = True) -> bool:
    """Monitor the connection to ``name`` (``erlang:monitor_node``).

    The calling process gets ``(Atom('nodedown'), node)`` when the connection is lost
    (at once if it cannot be made).
    """
    return _native.dist_monitor_node(name, flag)


def expose(name: str, module: types.ModuleType | Any) -> list[str]:
    """Make the public functions of ``module`` callable from other nodes.

    Erlang calls them as ``rpc:call(Node, name, Function, Args)`` (or ``erpc:call``).
    Returns the names.

    Arguments arrive converted as messages are (binaries as ``bytes``, strings sent by
    Erlang as :class:`Charlist`); the result goes back the same way. An exception becomes
    ``{badrpc, {'EXIT', {{error, 'Type', <<"message">>}, []}}}`` on the caller's side.
    Each call runs in a process of its own, as erpc runs it on an Erlang node: it may
    ``receive``, call servers or take its time without holding up the connection or
    other calls.
    """
    names = []
    for fname in dir(module):
        if fname.startswith("_"):
            continue
        f = getattr(module, fname)
        if callable(f):
            _native.dist_expose(name, fname, f, _run_exposed)
            names.append(fname)
    return names


def _run_exposed(f: Any, call: _native.RpcCall) -> None:
    """Body of the process that runs one call of an exposed function."""
    try:
        result = f(*call.args())
    except Exception as e:  # noqa: BLE001 - every error is the caller's to see
        call.fail(e)
        return
    call.done(result)


def _full_name(name: str, longnames: bool) -> str:
    if "@" in name:
        return name
    host = socket.getfqdn() if longnames else socket.gethostname().split(".")[0]
    return f"{name}@{host}"


def _options(config: dict[str, Any]) -> dict[str, Any] | None:
    """Take the distribution settings out of ``config``.

    The environment's ``BEAMVM_NODE`` / ``BEAMVM_COOKIE`` fill in; None when this VM is
    not to be a node.
    """
    opts = {k: config.pop(k) for k in OPTIONS if k in config}
    name = opts.get("node") or os.environ.get("BEAMVM_NODE")
    if not name:
        # Settings left at their defaults (None, or False for the flags: what a caller
        # passing its own optional values through writes) do not ask for a node.
        given = sorted(k for k, v in opts.items() if v is not None and v is not False)
        if given:
            raise TypeError(f"distribution settings {given} need node='name@host' (or BEAMVM_NODE)")
        return None
    cookie = opts.get("cookie") or os.environ.get("BEAMVM_COOKIE")
    return {
        "name": _full_name(str(name), bool(opts.get("longnames", False))),
        "cookie": cookie,
        "hidden": bool(opts.get("hidden", False)),
        "listen": opts.get("dist_listen"),
        "net_ticktime": opts.get("net_ticktime"),
        "decode_binaries": opts.get("decode_binaries"),
    }


def _start(opts: dict[str, Any]) -> Atom:
    return _native._dist_start(**opts)
