"""A supervised acceptor pool: ranch's listener for beamvm.

::

    from beamvm import listener, receive, tcp

    def echo_conn(sock, opts):
        tcp.setopts(sock, active="once")
        while True:
            match receive():
                case ("tcp", s, data):
                    tcp.send(s, data)
                    tcp.setopts(s, active="once")
                case ("tcp_closed", s):
                    return

    listener.start("echo", port=5555, handler=echo_conn, num_acceptors=10,
                   max_connections=10_000)
    listener.info("echo")   # {'port', 'connections', 'acceptors', 'limit', ...}
    listener.stop("echo")

**The tree.** ``start`` starts a supervisor (``rest_for_one``) with three children:

1. the *manager* (a GenServer), which owns the listening socket -- acceptors never do,
   so an acceptor's crash never closes it -- and counts the live connections
   (it monitors each);
2. the *connections supervisor* (a :class:`~beamvm.supervisor.DynamicSupervisor`):
   each connection's handler runs under it as its own ``temporary`` process, so a
   crashing or killed connection is never restarted and never spends the tree's
   restart intensity;
3. the *acceptors* (``num_acceptors`` permanent processes), each looping on
   :func:`beamvm.tcp.accept`; an accepted socket is handed to a new connection process
   with ``controlling_process`` before its handler starts (``handler(sock, opts)``).

**max_connections is a soft limit**: an acceptor that finds the count at the limit
stops accepting until a connection ends (the kernel's backlog holds newcomers); it never
accepts and closes. Acceptors that found room wait in ``accept`` meanwhile, so the count
may pass the limit by up to ``num_acceptors - 1``. **Out of descriptors**
(``emfile``/``enfile``) an acceptor logs once per burst and sleeps (10 ms doubling to
1 s, reset by the next success) instead of crashing: the supervisor's restart intensity
is never spent on descriptor exhaustion (the ranch / thousand_island failure where a
crash loop kills the listener).

Every function must be called inside a beamvm process (``beamvm.run``'s main will do);
the listener itself is not linked to its caller.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from beamvm import _native, tcp
from beamvm import gen_server as gs
from beamvm import supervisor as sup
from beamvm._native import Atom, Pid, monitor, send, spawn_link
from beamvm.gen_server import GenServer, NoReply
from beamvm.supervisor import DynamicSupervisor, child_spec

from beamvm import ANY, receive, sleep  # isort: skip -- the package's receive (compiled fast path)

__all__ = ["info", "start", "stop"]

log = logging.getLogger("beamvm.listener")

_GO = Atom("$listener_go")
_DOWN = Atom("DOWN")
#: First and longest emfile back-off (seconds): short enough that a freed descriptor
#: is used at once, long enough that a descriptor-starved node is not spun on.
BACKOFF_MIN = 0.01
BACKOFF_MAX = 1.0
#: Restarts the tree tolerates (acceptors crashing on unexpected errors) per period.
INTENSITY, PERIOD = 10, 10.0


def _names(name: str) -> tuple[str, str, str]:
    base = f"beamvm.listener.{name}"
    return base, base + ".manager", base + ".conns"


class _Manager(GenServer):
    """Owns the listening socket; counts connections; parks acceptors at the limit."""

    def init(
        self, name: str, port: int, host: str, path: Any, listen_opts: dict, limit: Any
    ) -> Any:
        self.name, self.limit = name, limit
        self.ls = tcp.listen(port, host, path=path, **listen_opts)
        self.conns: dict[Any, Pid] = {}  # monitor ref -> connection pid
        self.parked: list[Any] = []  # acceptors waiting for capacity (their from_)
        self.emfile_backoffs = 0
        self.backing_off: set[Pid] = set()
        self.accepted = 0
        return None

    def _room(self) -> bool:
        return self.limit is None or len(self.conns) < self.limit

    def handle_call(self, request: Any, from_: Any) -> Any:
        match request:
            case ("socket",):
                return self.ls
            case ("capacity",):
                if self._room():
                    return True
                self.parked.append(from_)
                return NoReply
            case ("started", pid):
                self.conns[monitor(pid)] = pid
                self.accepted += 1
                return True
            case ("emfile", pid, on):
                if on:
                    self.emfile_backoffs += 1
                    self.backing_off.add(pid)
                else:
                    self.backing_off.discard(pid)
                return True
            case ("info",):
                sockname = tcp.sockname(self.ls)
                return {
                    "port": sockname[1] if isinstance(sockname, tuple) else None,
                    "address": sockname,
                    "connections": len(self.conns),
                    "accepted": self.accepted,
                    "max_connections": self.limit,
                    "limit": self.limit,
                    "acceptors_waiting_for_capacity": len(self.parked),
                    "acceptors_backing_off": len(self.backing_off),
                    "emfile_backoffs": self.emfile_backoffs,
                }
        raise ValueError(f"unknown listener request {request!r}")

    def handle_info(self, msg: Any) -> Any:
        if type(msg) is tuple and len(msg) == 5 and msg[0] == _DOWN:
            self.conns.pop(msg[1], None)
            while self.parked and self._room():
                gs.reply(self.parked.pop(0), True)
        return None


def _start_manager(*args: Any, name: Any = None) -> Any:
    return gs.start_link(_Manager, *args, name=name)


def _conn_main(handler: Callable[..., Any], opts: Any) -> Any:
    # Wait until the acceptor made this process the socket's owner (ranch's
    # handshake): before that, active messages would still go to the acceptor.
    sock = receive((_GO, ANY))[1]
    return handler(sock, opts)


def _start_conn(handler: Callable[..., Any], opts: Any) -> Pid:
    return spawn_link(_conn_main, handler, opts)


def _acceptor(name: str, handler: Callable[..., Any], opts: Any) -> None:
    _, manager, conns = _names(name)
    ls = gs.call(manager, ("socket",), timeout=None)
    backoff = 0.0
    while True:
        gs.call(manager, ("capacity",), timeout=None)
        try:
            s = tcp.accept(ls)
        except tcp.TcpError as e:
            if e.reason in ("emfile", "enfile"):
                if backoff == 0.0:
                    log.warning(
                        "listener %r: out of file descriptors (%s); acceptors back off",
                        name, e.reason,
                    )  # fmt: skip
                    gs.call(manager, ("emfile", _native.self_pid(), True), timeout=None)
                backoff = min(max(backoff * 2, BACKOFF_MIN), BACKOFF_MAX)
                sleep(backoff)
                continue
            if e.reason == "closed":
                # The listening socket is gone (the manager is restarting or the
                # listener stopping): the supervisor restarts or stops us.
                receive()
            sleep(BACKOFF_MIN)
            continue
        if backoff:
            backoff = 0.0
            gs.call(manager, ("emfile", _native.self_pid(), False), timeout=None)
        try:
            pid = DynamicSupervisor.start_child(
                conns, child_spec("conn", _start_conn, (handler, opts), restart="temporary")
            )
            tcp.controlling_process(s, pid)
        except tcp.TcpError as exc:
            # badarg: the connection process died (was killed) before it got its
            # socket; an expected race under kills, not a fault of the listener.
            level = logging.INFO if exc.reason == "badarg" else logging.ERROR
            log.log(level, "listener %r: connection dropped before its hand-over: %r", name, exc)
            tcp.close(s)
            continue
        except Exception as exc:  # noqa: BLE001 - the connection is lost, not the acceptor
            log.error("listener %r: could not start a connection process: %r", name, exc)
            tcp.close(s)
            continue
        gs.call(manager, ("started", pid), timeout=None)
        send(pid, (_GO, s))


def _start_acceptor(name: str, handler: Callable[..., Any], opts: Any) -> Pid:
    return spawn_link(_acceptor, name, handler, opts)


def _start_conns(name: str) -> Pid:
    return DynamicSupervisor.start_link(max_restarts=INTENSITY, max_seconds=PERIOD, name=name)


def start(
    name: str,
    port: int = 0,
    handler: Callable[..., Any] | None = None,
    *,
    host: str = "127.0.0.1",
    path: str | None = None,
    num_acceptors: int = 10,
    max_connections: int | None = 1024,
    handler_opts: Any = None,
    backlog: int = 1024,
    packet: Any = "raw",
    packet_size: int = 0,
    nodelay: bool = True,
) -> Pid:
    """Start listener ``name`` on ``host:port`` (or ``path=``); return its supervisor's pid.

    ``handler(sock, handler_opts)`` runs in a new process per connection, which owns
    ``sock`` (passive at first, with the ``packet`` options given). ``num_acceptors``
    processes accept in parallel; ``max_connections`` (None: no limit) pauses accepting
    while that many connections are alive. It is a soft limit: acceptors that found room
    are already waiting in ``accept``, so the count may pass it by up to
    ``num_acceptors - 1``. ``host``, ``port`` and ``path`` are checked before anything
    starts, as :func:`beamvm.tcp.listen` checks them (``TypeError``/``ValueError``
    naming the option, :class:`beamvm.tcp.TcpError` ``nxdomain`` for a name that does
    not resolve). Raises :class:`beamvm.tcp.TcpError` if the port cannot be bound,
    ``ValueError``/``TypeError`` for bad options.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"listener name must be a non-empty str, not {name!r}")
    if not callable(handler):
        raise TypeError(f"handler must be a function handler(sock, opts), not {handler!r}")
    if isinstance(num_acceptors, bool) or not isinstance(num_acceptors, int) or num_acceptors < 1:
        raise ValueError(f"num_acceptors must be an int >= 1, not {num_acceptors!r}")
    if max_connections is not None and (
        isinstance(max_connections, bool)
        or not isinstance(max_connections, int)
        or max_connections < 1
    ):
        raise ValueError(f"max_connections must be None or an int >= 1, not {max_connections!r}")
    base, manager, conns = _names(name)
    if _native.whereis(base) is not None:
        raise ValueError(f"a listener named {name!r} is running already")
    # Checked here, naming the option, before anything starts (a name is resolved
    # once, here: the manager listens on the address it resolved to).
    ip, port, path = tcp._address(host, port, path)
    listen_opts = {
        "backlog": tcp._check_int("backlog", backlog, 1, 1 << 20),
        "packet": tcp._check_packet(packet),
        "packet_size": tcp._check_int("packet_size", packet_size, 0, tcp.MAX_PACKET_SIZE),
        "nodelay": tcp._check_bool("nodelay", nodelay),
        "active": False,
    }
    children = [
        child_spec(
            "manager",
            _start_manager,
            (name, port, ip or host, path, listen_opts, max_connections),
            {"name": manager},
        ),
        child_spec("connections", _start_conns, (conns,), type="supervisor"),
    ] + [
        child_spec(("acceptor", i), _start_acceptor, (name, handler, handler_opts), shutdown=1.0)
        for i in range(num_acceptors)
    ]
    try:
        return sup.start(
            children, strategy="rest_for_one", intensity=INTENSITY, period=PERIOD, name=base
        )
    except sup.StartError as e:
        # The manager's listen failed: raise what tcp.listen raised.
        reason = e.args[0] if e.args else None
        text = repr(reason)
        for why in ("eaddrinuse", "eacces", "emfile", "eaddrnotavail", "enoent", "nxdomain"):
            if why in text:
                raise tcp.TcpError(why) from e
        raise


def stop(name: str, timeout: float | None = 10.0) -> None:
    """Stop listener ``name``: its acceptors, its connections and its socket."""
    base, _, _ = _names(name)
    pid = _native.whereis(base)
    if pid is None:
        raise ValueError(f"no listener named {name!r}")
    gs.stop(pid, timeout=timeout)


def info(name: str) -> dict[str, Any]:
    """Return the listener's state.

    Keys: ``port``, ``address``, ``connections`` (alive now), ``accepted`` (in
    total), ``limit`` and ``max_connections`` (the same: the soft limit, None for none;
    ``connections`` may pass it by up to ``num_acceptors - 1``), ``acceptors``
    (running), ``acceptors_backing_off`` (on emfile now), ``emfile_backoffs`` (bursts
    so far), ``acceptors_waiting_for_capacity``, ``supervisor`` (its pid).
    """
    base, manager, _ = _names(name)
    pid = _native.whereis(base)
    if pid is None:
        raise ValueError(f"no listener named {name!r}")
    out: dict[str, Any] = gs.call(manager, ("info",))
    kids = sup.which_children(pid)
    out["acceptors"] = sum(
        1 for (cid, child, _, _) in kids if type(cid) is tuple and type(child) is Pid
    )
    out["supervisor"] = pid
    return out
