r"""TCP sockets owned by processes: Erlang's ``gen_tcp`` for beamvm.

::

    from beamvm import receive, tcp

    def echo(sock):
        tcp.setopts(sock, active="once")
        while True:
            match receive():
                case ("tcp", s, data):
                    tcp.send(s, data)
                    tcp.setopts(s, active="once")
                case ("tcp_closed", s):
                    return

    ls = tcp.listen(0)                  # port 0: the kernel picks; tcp.sockname(ls)
    s = tcp.accept(ls)                  # suspends only this process
    tcp.controlling_process(s, spawn(echo, s))

Every function must be called inside a beamvm process. A call that must wait (``accept``,
``connect``, ``recv``, a ``send`` into a full kernel buffer) suspends only the calling
process; the VM's schedulers watch the socket (epoll, no thread per socket, no GIL)
and wake the process with the result.

**Ownership.** A socket belongs to the process that listened, connected or accepted it
(its *controlling process*). Active messages go to it alone; when it exits the socket is
closed and the peer sees EOF. :func:`controlling_process` hands the socket to another
process (only the owner may), moving the messages already queued for it.

**Active modes** (``active=`` of ``listen``/``connect``/``setopts``): ``False`` (passive:
read with :func:`recv`), ``True`` (every frame arrives as a message), ``"once"`` (one
message, then passive again), ``n`` (n more messages, then ``("tcp_passive", s)``; counts
add up as in ``inet:setopts``). Messages: ``("tcp", s, data)``, ``("tcp_closed", s)``,
``("tcp_error", s, reason)``, ``("tcp_passive", s)``. What the owner has not asked for
stays in the kernel: the peer's writes block instead of the mailbox growing.

**Framing** (``packet=``): ``"raw"`` (whatever arrived), ``1``/``2``/``4`` (a big-endian
length header; each message is one frame, the header is added on send), ``"line"``
(frames end with ``b"\n"``, kept). ``packet_size`` limits a frame (0: 64 MiB, the
ceiling); a longer one is an error (``emsgsize``), never a huge allocation.

**Errors** raise :class:`TcpError` (an ``OSError``) whose ``reason`` is Erlang's
(``"closed"``, ``"econnrefused"``, ``"eaddrinuse"``, ``"emfile"``...); ``closed`` raises
:class:`TcpClosed`, a timeout :class:`TcpTimeout` (also a ``beamvm.Timeout``). Bad
options raise ``TypeError``/``ValueError`` naming the option.

Addresses: ``host`` an IPv4 or IPv6 address or a name (resolved on the dirty IO pool);
``path=`` a Unix domain socket instead.
"""

from __future__ import annotations

import ipaddress
import socket as _socket
from typing import Any

from beamvm import _compiler, _native

from beamvm import ANY, receive, self_pid  # isort: skip -- the package's receive (compiled fast path)
from beamvm._native import Atom, Pid, Socket, Timeout

__all__ = [
    "Socket",
    "TcpClosed",
    "TcpError",
    "TcpTimeout",
    "accept",
    "close",
    "connect",
    "controlling_process",
    "getopts",
    "listen",
    "peername",
    "recv",
    "send",
    "setopts",
    "shutdown",
    "sockname",
]

_TAG = Atom("$tcp")
_ACCEPT = Atom("accept")
_CONNECT = Atom("connect")
_RECV = Atom("recv")
_SEND = Atom("send")
_OK = Atom("ok")
#: Seconds ``close`` waits for queued output while the peer takes none of it
#: (inet's INET_CLOSE_TIMEOUT): a peer that never reads cannot hold a closer forever.
_CLOSE_STALL = 10.0
#: The largest packet_size (64 MiB, inet's ceiling).
MAX_PACKET_SIZE = 64 << 20


class TcpError(OSError):
    """A socket operation failed; ``reason`` is Erlang's reason (``"econnrefused"``...)."""

    def __init__(self, reason: str, errno: int | None = None) -> None:
        super().__init__(f"tcp: {reason}" if errno is None else f"tcp: {reason} (errno {errno})")
        self.reason = reason
        if errno is not None:
            self.errno = errno


class TcpClosed(TcpError):
    """The socket is closed (by us, by the peer, or it never existed)."""


class TcpTimeout(TcpError, Timeout):
    """A ``timeout=`` ran out (the operation was withdrawn: nothing happened)."""


def _error(reason: str, errno: int | None = None) -> TcpError:
    # Called by the native half (crates/vm-python/src/tcp.rs) to build its exceptions.
    if reason == "closed":
        return TcpClosed(reason)
    if reason == "timeout":
        return TcpTimeout(reason)
    return TcpError(reason, errno)


class _Missing:
    __slots__ = ()


_MISSING: Any = _Missing()


# --------------------------------------------------------------------------- options


def _check_packet(packet: Any) -> Any:
    if isinstance(packet, str):
        if packet in ("raw", "line"):
            return packet
        raise ValueError(f"packet must be 'raw', 1, 2, 4 or 'line', not {packet!r}")
    if isinstance(packet, int) and not isinstance(packet, bool):
        if packet in (1, 2, 4):
            return packet
        raise ValueError(f"packet must be 'raw', 1, 2, 4 or 'line', not {packet!r}")
    raise TypeError(f"packet must be 'raw', 1, 2, 4 or 'line', not {type(packet).__name__}")


def _check_active(active: Any) -> Any:
    if isinstance(active, bool):
        return active
    if isinstance(active, str):
        if active == "once":
            return active
        raise ValueError(f"active must be False, True, 'once' or an int, not {active!r}")
    if isinstance(active, int):
        if -32768 <= active <= 32767:
            return active
        raise ValueError(f"active must be an int in -32768..32767, not {active}")
    raise TypeError(f"active must be False, True, 'once' or an int, not {type(active).__name__}")


def _check_int(name: str, v: Any, lo: int, hi: int) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise TypeError(f"{name} must be an int, not {type(v).__name__}")
    if not lo <= v <= hi:
        raise ValueError(f"{name} must be in {lo}..{hi}, not {v}")
    return v


def _check_bool(name: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise TypeError(f"{name} must be True or False, not {type(v).__name__}")
    return v


def _check_timeout(timeout: Any) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be None or seconds (a number), not {type(timeout).__name__}")
    if not timeout >= 0:
        raise ValueError(f"timeout must be None or >= 0 seconds, not {timeout!r}")
    return float(timeout)


def _check_sock(s: Any, what: str) -> Socket:
    if type(s) is not Socket:
        raise TypeError(
            f"{what} must be a socket from listen, accept or connect, not {type(s).__name__}"
        )
    return s


def _resolve(host: Any) -> str:
    if not isinstance(host, str):
        raise TypeError(f"host must be a str, not {type(host).__name__}")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if host == "localhost":
        return "127.0.0.1"
    from beamvm import dirty_io

    try:
        infos = dirty_io(_socket.getaddrinfo, host, None, 0, _socket.SOCK_STREAM)
    except _socket.gaierror as e:
        raise TcpError("nxdomain") from e
    return str(infos[0][4][0])


def _address(host: Any, port: Any, path: Any) -> tuple[str | None, int, str | None]:
    if path is not None:
        if not isinstance(path, str):
            raise TypeError(f"path must be a str, not {type(path).__name__}")
        if "\0" in path:
            raise ValueError(f"path must not contain a NUL byte, not {path!r}")
        if port not in (None, 0):
            # listen's default port is 0, connect's None: either means "not given".
            raise ValueError(f"port and path are exclusive (port={port!r}, path={path!r})")
        return None, 0, path
    if port is None:
        raise TypeError("port is required (or path= for a Unix socket)")
    return _resolve(host), _check_int("port", port, 0, 65535), None


# --------------------------------------------------------------------------- waiting


def _outcome(result: Any) -> Any:
    if result[0] == _OK:
        return result[1]
    raise _error(str(result[1]))


def _wait(sock: Socket, op: Atom, timeout: float | None) -> Any:
    """Receives the completion of ``op`` on ``sock``; withdraws the wait on timeout."""
    done = False
    try:
        got = receive((_TAG, sock, op, ANY), timeout=timeout, default=_MISSING)
        if got is _MISSING:
            if _native._tcp_cancel(sock):
                done = True
                raise TcpTimeout("timeout")
            # The completion was already on its way: take it.
            got = receive((_TAG, sock, op, ANY))
        done = True
    finally:
        # Killed while waiting: stop waiting (a generator closed after the VM stopped
        # runs this outside any process, with nothing left to cancel).
        if not done and _native.in_process_():
            _native._tcp_cancel(sock)
    return _outcome(got[3])


# --------------------------------------------------------------------------- API


def listen(
    port: int = 0,
    host: str = "127.0.0.1",
    *,
    path: str | None = None,
    backlog: int = 1024,
    packet: Any = "raw",
    packet_size: int = 0,
    active: Any = False,
    reuseaddr: bool = True,
    nodelay: bool = True,
) -> Socket:
    """Listen on ``host:port`` (port 0: any free port, see :func:`sockname`) or ``path=``.

    The options are what accepted sockets start with. Raises :class:`TcpError`
    (``eaddrinuse``, ``eacces``, ``emfile``...).
    """
    ip, port, path = _address(host, port, path)
    return _native._tcp_listen(
        ip,
        port,
        path,
        _check_int("backlog", backlog, 1, 1 << 20),
        _check_bool("reuseaddr", reuseaddr),
        _check_packet(packet),
        _check_int("packet_size", packet_size, 0, MAX_PACKET_SIZE),
        _check_active(active),
        _check_bool("nodelay", nodelay),
    )


def accept(ls: Socket, timeout: float | None = None) -> Socket:
    """Wait for a connection on ``ls``; the new socket is owned by the caller.

    Several processes may wait on one listener (served in arrival order). Raises
    :class:`TcpTimeout` after ``timeout`` seconds, :class:`TcpClosed` if ``ls`` closes,
    :class:`TcpError` ``emfile`` when out of file descriptors.
    """
    _check_sock(ls, "accept's listener")
    t = _check_timeout(timeout)
    s = _native._tcp_accept(ls)
    if s is not None:
        return s
    return _wait(ls, _ACCEPT, t)  # type: ignore[no-any-return]


def connect(
    host: str | None = "127.0.0.1",
    port: int | None = None,
    timeout: float | None = 5.0,
    *,
    path: str | None = None,
    packet: Any = "raw",
    packet_size: int = 0,
    active: Any = False,
    nodelay: bool = True,
) -> Socket:
    """Connect to ``host:port`` (or ``path=``); the socket is owned by the caller.

    Raises :class:`TcpError` (``econnrefused``, ``ehostunreach``...) or
    :class:`TcpTimeout` after ``timeout`` seconds (the attempt is abandoned).
    """
    t = _check_timeout(timeout)
    ip, port, path = _address(host, port, path)
    s = _native._tcp_connect(
        ip,
        port,
        path,
        _check_packet(packet),
        _check_int("packet_size", packet_size, 0, MAX_PACKET_SIZE),
        _check_active(active),
        _check_bool("nodelay", nodelay),
    )
    ok = False
    try:
        got = receive((_TAG, s, _CONNECT, ANY), timeout=t, default=_MISSING)
        if got is _MISSING:
            # Closing a connecting socket completes it with `closed`: exactly one
            # completion is always sent, so this receive cannot hang.
            _native._tcp_close(s)
            got = receive((_TAG, s, _CONNECT, ANY))
            if got[3][0] != _OK:
                raise TcpTimeout("timeout")
        _outcome(got[3])
        ok = True
    finally:
        if not ok and _native.in_process_():
            _native._tcp_close(s)
    return s


def send(s: Socket, data: Any) -> None:
    """Send ``data`` (bytes-like; a frame under ``packet`` 1/2/4/line framing).

    Returns once the data is queued; suspends the calling process while more than the
    high watermark (8 KiB) is queued and the kernel takes nothing (the peer does not
    read). Raises :class:`TcpClosed` on a closed socket.
    """
    # The native half checks the socket and the data (naming them): no Python-level
    # checks on this hot path. Process code calls _send_fast instead (below).
    if not _native._tcp_send(s, data):
        _wait(s, _SEND, None)


def _finished() -> Any:
    return
    yield  # a generator function


#: An exhausted generator: ``yield from _DONE`` is ``None`` at once (shared: a finished
#: generator has no state left to change).
_DONE = _finished()
for _ in _DONE:
    pass


def _send_fast(s: Socket, data: Any) -> Any:
    """Queue for :func:`send` called from process code, or return the wait to run.

    Called plainly in place of ``send`` by compiled code (``send.__beamvm_fast__``), which
    runs the result with ``yield from``: ``_DONE`` once the data is queued (the common
    case: no generator made, no frame entered), else ``_wait``'s compiled generator.
    """
    if _native._tcp_send(s, data):
        return _DONE
    return _compiler._call_gen(_wait, (s, _SEND, None), {})


send.__beamvm_fast__ = _send_fast  # type: ignore[attr-defined]


def recv(s: Socket, length: int = 0, timeout: float | None = None) -> Any:
    """Read from a passive socket: a frame, or with ``packet="raw"`` what arrived.

    ``length`` > 0 (raw only): exactly that many bytes. Raises :class:`TcpClosed` at
    EOF, :class:`TcpTimeout` after ``timeout`` seconds, :class:`TcpError` ``einval`` on
    an active socket.
    """
    _check_sock(s, "recv's socket")
    _check_int("length", length, 0, MAX_PACKET_SIZE)
    t = _check_timeout(timeout)
    d = _native._tcp_recv(s, length)
    if d is not None:
        return d
    return _wait(s, _RECV, t)


def setopts(
    s: Socket,
    *,
    active: Any = _MISSING,
    packet: Any = _MISSING,
    packet_size: Any = _MISSING,
    nodelay: Any = _MISSING,
) -> None:
    """Change the options given: ``active``, ``packet``, ``packet_size``, ``nodelay``.

    On a listener: what sockets accepted later start with.
    """
    if packet is _MISSING and packet_size is _MISSING and nodelay is _MISSING:
        # The hot path (re-arming active once): the native half checks the socket and
        # the value, naming the option. None would read there as "not given".
        if active is None:
            _check_active(active)
        _native._tcp_setopts(s, None, None, None if active is _MISSING else active, None)
        return
    _check_sock(s, "setopts's socket")
    _native._tcp_setopts(
        s,
        packet=None if packet is _MISSING else _check_packet(packet),
        packet_size=None
        if packet_size is _MISSING
        else _check_int("packet_size", packet_size, 0, MAX_PACKET_SIZE),
        active=None if active is _MISSING else _check_active(active),
        nodelay=None if nodelay is _MISSING else _check_bool("nodelay", nodelay),
    )


def getopts(s: Socket) -> dict[str, Any]:
    """Return the options now: ``{'active', 'packet', 'packet_size', 'nodelay'}``.

    ``active`` an int is the count left.
    """
    _check_sock(s, "getopts's socket")
    return _native._tcp_getopts(s)


def controlling_process(s: Socket, pid: Pid) -> None:
    """Make ``pid`` the owner of ``s`` (only the owner may: :class:`TcpError` ``not_owner``).

    Messages for ``s`` already in the caller's mailbox move to ``pid``, in order, as
    gen_tcp does. A ``pid`` that is not alive is :class:`TcpError` ``badarg`` (gen_tcp's
    ``{error, badarg}``): ``s`` stays the caller's, to use or close. If ``pid`` dies
    during the hand-over, ``s`` is closed, as its exit would have closed it.
    """
    _check_sock(s, "controlling_process's socket")
    if type(pid) is not Pid:
        raise TypeError(f"controlling_process's pid must be a beamvm.Pid, not {type(pid).__name__}")
    owner = _native._tcp_owner(s)
    if owner is None:
        raise TcpClosed("closed")
    if owner != self_pid():
        raise TcpError("not_owner")
    if pid == owner:
        return
    active = _native._tcp_getopts(s)["active"]
    if active is not False:
        _native._tcp_setopts(s, active=False)
    try:
        _native._tcp_controlling_process(s, pid)
    except TcpError:
        # Still the caller's socket, as it was.
        if active is not False:
            _native._tcp_setopts(s, active=active)
        raise
    while True:
        m = receive(
            ("tcp", s, ANY),
            ("tcp_closed", s),
            ("tcp_error", s, ANY),
            ("tcp_passive", s),
            timeout=0,
            default=_MISSING,
        )
        if m is _MISSING:
            break
        _native.send(pid, m)
    if active is not False:
        try:
            _native._tcp_setopts(s, active=active)
        except TcpClosed:
            pass


def close(s: Socket) -> None:
    """Close ``s`` (idempotent); the peer sees EOF, waiters get ``closed``.

    Like gen_tcp's close, it first waits for what :func:`send` queued to be written
    (nothing a ``send`` accepted is dropped), giving up when the peer takes nothing for
    10 seconds.
    """
    _check_sock(s, "close's socket")
    try:
        last = None
        while _native.in_process_():
            pending = _native._tcp_drain(s)
            if pending == 0 or (last is not None and pending >= last):
                break
            last = pending
            try:
                _wait(s, _SEND, _CLOSE_STALL)
                break
            except TcpTimeout:
                continue
            except TcpError:
                break  # the socket failed: nothing more can go out
    finally:
        _native._tcp_close(s)


def shutdown(s: Socket, how: str = "read_write") -> None:
    """Shut down ``"read"``, ``"write"`` (after queued data: the peer sees EOF) or both.

    ``how``: ``"read"``, ``"write"`` or ``"read_write"``.
    """
    _check_sock(s, "shutdown's socket")
    if how not in ("read", "write", "read_write"):
        raise ValueError(f"shutdown's how must be 'read', 'write' or 'read_write', not {how!r}")
    _native._tcp_shutdown(s, how)


def peername(s: Socket) -> Any:
    """Return the peer's ``(ip, port)`` (or a Unix socket's path)."""
    _check_sock(s, "peername's socket")
    return _native._tcp_peername(s)


def sockname(s: Socket) -> Any:
    """Return the local ``(ip, port)`` (or a Unix socket's path)."""
    _check_sock(s, "sockname's socket")
    return _native._tcp_sockname(s)


def socket_count() -> int:
    """Open sockets in the running VM (listeners included)."""
    return _native._tcp_socket_count()


# Calls that never wait: process code calls them plainly, as it calls a native function
# (no generator and ``yield from`` per call: ~0.6 us of the hot path's ``setopts``
# re-arm). They make no loop and reach no receive, so no budget check could yield in
# them anyway (see _compiler._dispatch_miss).
for _f in (setopts, getopts, shutdown, peername, sockname, socket_count):
    _f.__beamvm_plain__ = True  # type: ignore[attr-defined]
del _f
