"""Generic servers: OTP's ``gen_server`` with Python classes.

A server is a process that owns some state and answers requests one at a time::

    from beamvm import gen_server
    from beamvm.gen_server import GenServer, NoReply, Stop

    class Counter(GenServer):
        def init(self, start=0):          # runs in the new process
            self.n = start
        def handle_call(self, request, from_):
            match request:
                case "get":
                    return self.n         # the return value is the reply
                case ("add", k):
                    self.n += k
                    return self.n
        def handle_cast(self, msg):
            self.n = 0

    pid = Counter.start_link(5, name="counter")
    gen_server.call("counter", ("add", 2))   # -> 7

The instance (``self``) is the state; it lives in the server's process only. Callbacks:

``init(self, *args, **kwargs)``
    Runs in the new process before ``start``/``start_link`` returns. Return None (or
    ``Continue(arg)`` to run ``handle_continue(arg)`` before any message), return
    :data:`IGNORE` (the start returns ``IGNORE`` and the process ends ``normal``), or
    ``raise Stop(reason)`` (the start raises :class:`StartError` with ``reason``). A
    crash in ``init`` is a failed start too.
``handle_call(self, request, from_)``
    The return value is the reply. Return :data:`NoReply` to answer later with
    ``gen_server.reply(from_, value)`` (from this or any process), or
    ``Continue(arg, reply=value)``. ``raise Stop(reason, reply=value)`` replies, then
    stops the server; without ``reply`` the caller sees the server exit instead.
``handle_cast(self, msg)``, ``handle_info(self, msg)``, ``handle_continue(self, arg)``
    Return None (or :data:`NoReply`), or ``Continue(arg)``; ``raise Stop(reason)`` to
    stop. Any other return value stops the server with ``('bad_return_value', value)``.
    ``handle_info`` gets every message that is not a call, a cast or a system message
    (including ``('EXIT', pid, reason)`` from non-parent processes when the server traps
    exits); the default logs it as unexpected.
``terminate(self, reason)``
    Called when the server stops itself (``Stop``, a crash in a callback, a bad return
    value, ``gen_server.stop``), and when its parent (the process that called
    ``start_link``, e.g. its supervisor) sends an exit signal **only if the server traps
    exits** (``process_flag('trap_exit', True)`` in ``init``). A server that does not
    trap exits is killed by its supervisor's ``shutdown`` signal without running
    ``terminate`` -- OTP's rule. Trap exits in ``init`` when ``terminate`` must run on
    shutdown (to flush, close, deregister).
``code_change(self, old_vsn, extra)``
    Called by ``beamvm.sys.change_code`` (usually while the server is suspended, after
    ``beamvm.code.load``) on the new version of the class: upgrade the state in place
    (return None) or return a new state object. A crash keeps the old class and state
    and is the change's error.

Hot code loading: after ``beamvm.code.load(module)``, the server's next message moves
its state to the class of that name in the reloaded module (``self.__class__`` is
reassigned when the layouts allow) and runs the new callbacks -- Erlang's fully
qualified ``?MODULE:loop`` call. ``beamvm.sys`` suspends, inspects and upgrades a
running server.

A crash in a callback ends the server with ``(Atom('error'), 'ExceptionType', 'message')``
after ``terminate``; unless the reason is ``normal``, ``shutdown`` or ``('shutdown',
term)``, an error report on the ``beamvm`` logger names the server, the last message it
took, its state's ``repr`` (cut to :data:`beamvm._otp.STATE_REPR_LIMIT` characters) and the
reason, with the traceback -- OTP's "Generic server terminating" report.

Errors follow the layer's one style (see ``beamvm._otp``): a failed call raises
:class:`CallError` whose ``.reason`` is exactly what OTP's ``gen_server:call`` exits with;
a failed start raises :class:`StartError`; bad arguments raise ``TypeError``/``ValueError``.

A call is built as OTP's gen.erl builds it: the caller monitors the server with the
monitor's reference as an alias (``monitor(pid, alias='demonitor')``), sends
``('$gen_call', (caller, ref), request)`` (``from_`` is ``(caller, ref)``), and waits
in one receive for ``(ref, reply)`` or the server's DOWN; on timeout it demonitors,
which deactivates the alias, so a reply that comes later is dropped by the VM and never
reaches the caller's mailbox. The caller's half is native (crates/vm-python/src/
gen_call.rs): compiled process code runs it as a primitive, with no Python frame.
"""

from __future__ import annotations

import logging
from types import FunctionType
from typing import Any

from beamvm import _compiler, _native, _otp, _runtime
from beamvm._native import (
    Atom,
    Pid,
    Ref,
    demonitor,
    monitor,
    self_pid,
    send,
    spawn_opt,
)
from beamvm._otp import (
    ALREADY_STARTED,
    BAD_RETURN,
    DOWN,
    ERROR,
    EXIT,
    IGNORE,
    KILL,
    NOPROC,
    NORMAL,
    OK,
    PROCESS,
    TIMEOUT,
    CallError,
    StartError,
)

from beamvm import ANY, receive  # isort: skip -- the package's receive (compiled fast path)
from beamvm._wire import ImproperList  # isort: skip

__all__ = [
    "DEFAULT_TIMEOUT",
    "IGNORE",
    "CallError",
    "Continue",
    "GenServer",
    "NoReply",
    "RequestId",
    "StartError",
    "Stop",
    "call",
    "cast",
    "receive_response",
    "reply",
    "send_request",
    "start",
    "start_link",
    "stop",
]

log = logging.getLogger("beamvm")

#: Seconds ``call`` waits for a reply by default (OTP's 5000 ms).
DEFAULT_TIMEOUT = 5.0

GEN_CALL = Atom("$gen_call")
_ALIAS = Atom("alias")
GEN_CAST = Atom("$gen_cast")
SYSTEM = Atom("system")
#: The server loop's tags by atom: what an equal atom object that is not the shared one
#: (see ``_server_main``) stands for.
_SAME_TAG = {GEN_CALL: GEN_CALL, GEN_CAST: GEN_CAST, EXIT: EXIT, SYSTEM: SYSTEM}
TERMINATE = Atom("terminate")
GEN_SERVER = Atom("gen_server")
CALL = Atom("call")
CALLING_SELF = Atom("calling_self")


class _NoReply:
    """Type of :data:`NoReply`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NoReply"


#: Returned by ``handle_call``: no reply now (answer later with :func:`reply`). Returned
#: by the other handlers it means "nothing to do", like None.
NoReply = _NoReply()

_MISSING: Any = object()
_TIMED_OUT: Any = object()


class Continue:
    """Returned by a callback: run ``handle_continue(arg)`` before the next message.

    From ``handle_call``, ``reply=`` is the reply to send first (without it, no reply
    is sent now, as with :data:`NoReply`).
    """

    __slots__ = ("arg", "reply")

    def __init__(self, arg: Any, reply: Any = _MISSING) -> None:
        self.arg = arg
        self.reply = reply

    def __repr__(self) -> str:
        r = "" if self.reply is _MISSING else f", reply={self.reply!r}"
        return f"Continue({self.arg!r}{r})"


class Stop(Exception):  # noqa: N818 -- OTP's name for the stop return
    """Raised by a callback to stop the server with ``reason`` (default ``normal``).

    In ``handle_call``, ``reply=`` is sent to the caller first. In ``init`` it fails the
    start: ``start``/``start_link`` raise :class:`StartError` with ``reason``.
    """

    def __init__(self, reason: Any = NORMAL, reply: Any = _MISSING) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reply = reply


class RequestId:
    """What :func:`send_request` returns; pass it to :func:`receive_response`."""

    __slots__ = ("mref", "server")

    def __init__(self, mref: Ref, server: Any) -> None:
        self.mref = mref
        self.server = server

    def __repr__(self) -> str:
        return f"RequestId({self.mref!r}, server={self.server!r})"


def _outside(name: str) -> RuntimeError:
    return RuntimeError(
        f"gen_server.{name}() must be called inside a beamvm process (spawned with "
        "beamvm.spawn or run by beamvm.run); from asyncio use beamvm.aio"
    )


def _mfa(server: Any, request: Any, timeout: float | None) -> tuple[Any, Any, list[Any]]:
    return (GEN_SERVER, CALL, [server, request, _otp.timeout_term(timeout)])


# --------------------------------------------------------------------------- client API


def call(server: Any, request: Any, timeout: float | None = DEFAULT_TIMEOUT) -> Any:
    """Send ``request`` to ``server`` and return its reply (``gen_server:call``).

    ``server``: a Pid, a registered name (str or Atom) or ``('via', module, key)``.
    ``timeout``: seconds (default 5), or None to wait forever. Raises
    :class:`CallError` whose ``.reason`` is OTP's exit reason
    ``(why, ('gen_server', 'call', [server, request, timeout]))`` (timeout as given, or
    ``Atom('infinity')`` for None): ``why`` is ``Atom('noproc')`` at once for a dead pid or
    an unknown name, ``Atom('timeout')`` when no reply came in time (a late reply is
    dropped, never queued), the server's exit reason when it dies before replying, or
    ``Atom('calling_self')``.
    """
    _otp.check_timeout(timeout)
    _otp.check_server(server)
    if not _native.in_process_():
        raise _outside("call")
    raise _runtime._outside_process("gen_server.call")


# Compiled process code runs the native half of a call (crates/vm-python/src/gen_call.rs)
# with ``yield from``: no Python frame per call. The function above is what plain code
# outside a process reaches.
_runtime.register_primitive(call, _native._gen_call)
# ... and compiled call sites yield its receive op themselves (see set_op_primitive).
_compiler.set_op_primitive(_native._gen_call)
_gen_reply = _native._gen_reply


#: ``cast(server, msg)``: send ``msg`` to ``server``'s ``handle_cast`` and return at once
#: (never fails: a cast to a dead server or an unregistered name is dropped, as in OTP).
#: Native (crates/vm-python/src/gen_call.rs): process code calls it with no Python frame.
cast = _native._gen_cast


def reply(from_: Any, value: Any) -> None:
    """Answer the call ``from_`` (the second argument of ``handle_call``) with ``value``.

    Works from any process, once; a reply to a caller that gave up is dropped.
    """
    if type(from_) is not tuple or len(from_) != 2:
        raise TypeError(f"reply's from_ must be the from_ handle_call received, not {from_!r}")
    tag = from_[1]
    if _gen_reply(from_, value):  # through the alias of a caller on this VM
        pass
    elif type(tag) is Ref:  # through the alias of a caller on another node
        send(tag, (tag, value))
    elif isinstance(tag, ImproperList) and tag.elems == [_ALIAS] and type(tag.tail) is Ref:
        # An Erlang caller (OTP 24+): From = {Pid, [alias | Ref]}, answered through the
        # alias, so a reply after the caller gave up is dropped.
        send(tag.tail, (tag, value))
    elif type(from_[0]) is Pid:
        send(from_[0], (tag, value))  # an older caller's {Pid, Ref} with any tag
    else:
        raise TypeError(f"reply's from_ must be the from_ handle_call received, not {from_!r}")


def send_request(server: Any, request: Any) -> RequestId:
    """Send a call request without waiting (``gen_server:send_request``).

    Collect the reply with :func:`receive_response`. Never fails: a dead server shows in
    the response.
    """
    if not _native.in_process_():
        raise _outside("send_request")
    pid = server if type(server) is Pid else _otp.whereis(server)
    me = self_pid()
    if pid is None:  # as a monitor of a missing name: a noproc DOWN, at once
        mref = _native.make_ref()
        send(me, (DOWN, mref, PROCESS, server, NOPROC))
        return RequestId(mref, server)
    mref = monitor(pid, alias="demonitor")
    send(pid, (GEN_CALL, (me, mref), request))
    return RequestId(mref, server)


def receive_response(req: RequestId, timeout: float | None = DEFAULT_TIMEOUT) -> Any:
    """Wait up to ``timeout`` for the reply to ``req`` (``gen_server:receive_response``).

    Raises :class:`CallError` with ``.reason`` ``(reason, server)`` if the server died
    first (OTP's ``{error, {Reason, ServerRef}}``), or ``Atom('timeout')``; either way
    the request is abandoned: a later reply is dropped.
    """
    if not isinstance(req, RequestId):
        raise TypeError(f"receive_response needs what send_request returned, not {req!r}")
    t = _otp.check_timeout(timeout)
    mref = req.mref
    got = receive((mref, ANY), (DOWN, mref, ANY, ANY, ANY), timeout=t, default=_TIMED_OUT)
    if got is _TIMED_OUT:
        demonitor(mref, flush=True)
        got = receive((mref, ANY), timeout=0, default=_TIMED_OUT)
        if got is _TIMED_OUT:
            raise CallError(TIMEOUT)
        return got[1]
    if len(got) == 2:
        demonitor(mref, flush=True)
        return got[1]
    raise CallError((got[4], req.server))


def stop(server: Any, reason: Any = NORMAL, timeout: float | None = None) -> None:
    """Stop ``server`` (``gen_server:stop``): it runs ``terminate(reason)`` and exits.

    Waits up to ``timeout`` seconds (None: forever) for it to exit with ``reason``.

    Raises :class:`CallError` with ``.reason`` ``Atom('noproc')`` if there is no such
    server, ``Atom('timeout')`` if it did not stop in time, or the reason it exited with
    if that is not ``reason`` (e.g. ``terminate`` crashed).
    """
    t = _otp.check_timeout(timeout)
    if not _native.in_process_():
        raise _outside("stop")
    pid = server if type(server) is Pid else _otp.whereis(server)
    if pid is None:
        raise CallError(NOPROC)
    me = self_pid()
    if pid == me:
        raise CallError(CALLING_SELF)
    mref = monitor(pid)
    send(pid, (SYSTEM, (me, mref), (TERMINATE, reason)))
    got = receive((DOWN, mref, ANY, ANY, ANY), timeout=t, default=_TIMED_OUT)
    if got is _TIMED_OUT:
        demonitor(mref, flush=True)
        raise CallError(TIMEOUT)
    if got[4] != reason:
        raise CallError(got[4])


# --------------------------------------------------------------------------- starting


def start(
    cls: type[GenServer], *args: Any, name: Any = None, timeout: float | None = None, **kw: Any
) -> Any:
    """Start a server of class ``cls`` (not linked); see :meth:`GenServer.start`."""
    return _start(cls, args, kw, name, timeout, False)


def start_link(
    cls: type[GenServer], *args: Any, name: Any = None, timeout: float | None = None, **kw: Any
) -> Any:
    """Start a server of class ``cls`` linked to the caller; see :meth:`GenServer.start_link`."""
    return _start(cls, args, kw, name, timeout, True)


def _check_class(cls: Any) -> None:
    if not (isinstance(cls, type) and issubclass(cls, GenServer)):
        raise TypeError(f"a gen_server must be a GenServer subclass, not {cls!r}")
    if not callable(getattr(cls, "init", None)):
        raise TypeError(
            f"{cls.__qualname__} must define init(self, ...): it runs in the new process "
            "and sets up the server's state"
        )


def _start(
    cls: Any, args: tuple[Any, ...], kw: dict[str, Any], name: Any, timeout: Any, link: bool
) -> Any:
    _check_class(cls)
    name = _otp.check_name(name)
    t = _otp.check_timeout(timeout)
    if not _native.in_process_():
        raise _outside("start_link" if link else "start")
    me = self_pid()
    tag = _native.make_ref()
    parent = me if link else None
    pid, mref = spawn_opt(
        _server_main, (cls, args, kw, me, parent, name, tag), link=link, monitor=True
    )
    return _await_ack(pid, mref, tag, t, link)


def _await_ack(pid: Pid, mref: Ref, tag: Ref, t: float | None, link: bool) -> Any:
    """Wait for a started process's ack (the starter's half of proc_lib's protocol)."""
    got = receive((tag, ANY), (DOWN, mref, ANY, ANY, ANY), timeout=t, default=_TIMED_OUT)
    if got is _TIMED_OUT:
        _native.exit(pid, KILL)
        _wait_down(mref, pid, link)
        raise StartError(TIMEOUT)
    if len(got) == 5:  # died before acknowledging
        _flush_exit(pid, link)
        raise StartError(got[4])
    res = got[1]
    if res == OK:
        demonitor(mref, flush=True)
        return pid
    if res == IGNORE:
        _wait_down(mref, pid, link)
        return IGNORE
    _wait_down(mref, pid, link)  # it exits with the reason right after the ack
    raise StartError(res[1])


def _wait_down(mref: Ref, pid: Pid, link: bool) -> None:
    receive((DOWN, mref, ANY, ANY, ANY))
    _flush_exit(pid, link)


def _flush_exit(pid: Pid, link: bool) -> None:
    # The link's exit signal precedes the DOWN (same sender): when trapping exits, its
    # ('EXIT', pid, reason) is queued by now; a failed start consumes it (OTP 26).
    if link:
        receive((EXIT, pid, ANY), timeout=0, default=None)


def _as_term(x: Any) -> Any:
    """``x`` if it can travel as a term, else its repr (for reasons built from values)."""
    try:
        _native.roundtrip(x)
        return x
    except (TypeError, ValueError):
        return _otp.truncated_repr(x)


def _init_server(
    cls: Any,
    args: tuple[Any, ...],
    kw: dict[str, Any],
    starter: Pid,
    name: Any,
    tag: Ref,
) -> tuple[GenServer, Any] | None:
    """Run ``init`` and acknowledge the start (proc_lib's protocol).

    Returns the instance and the first ``Continue`` arg to run, or None when the
    server does not go on.
    """
    if name is not None:
        other = _otp.register_name(name, self_pid())
        if other is not None:
            send(starter, (tag, (ERROR, (ALREADY_STARTED, other))))
            return None
    try:
        inst = cls()
        out = inst.init(*args, **kw)
    except Stop as s:
        send(starter, (tag, (ERROR, s.reason)))
        _native.exit(s.reason)
        return None
    except Exception as e:  # noqa: BLE001 -- a crashed init is a failed start
        reason = _otp.exception_reason(e)
        _report_init_crash(cls, name, reason, e)
        send(starter, (tag, (ERROR, reason)))
        _native.exit(reason)
        return None
    if out is IGNORE:
        if name is not None:
            _otp.unregister_name(name)
        send(starter, (tag, IGNORE))
        return None
    if out is not None and out is not NoReply and type(out) is not Continue:
        reason = (BAD_RETURN, _as_term(out))
        send(starter, (tag, (ERROR, reason)))
        _native.exit(reason)
        return None
    send(starter, (tag, OK))
    return inst, (out.arg if type(out) is Continue else _MISSING)


def _handler(inst: GenServer, name: str) -> Any:
    """Return the function behind ``inst.<name>``, to call as ``f(inst, ...)``.

    Compiled code runs a plain function through a cached dispatch entry; a bound method
    is looked up afresh on each call, which costs more than the rest of a short handler.
    """
    f = getattr(type(inst), name, None)
    if type(f) is FunctionType:
        return f
    return getattr(_Bound, name)


class _Bound:
    """Handlers that are not plain functions (static/class methods, instance attributes)."""

    @staticmethod
    def handle_call(inst: Any, request: Any, from_: Any) -> Any:
        return inst.handle_call(request, from_)

    @staticmethod
    def handle_cast(inst: Any, msg: Any) -> Any:
        return inst.handle_cast(msg)

    @staticmethod
    def handle_info(inst: Any, msg: Any) -> Any:
        return inst.handle_info(msg)


def _current_class(cls: type) -> type:
    """Return the class named as ``cls`` in its module now (a new one after a load)."""
    import sys

    obj: Any = sys.modules.get(cls.__module__)
    for part in cls.__qualname__.split("."):
        obj = getattr(obj, part, None)
    if isinstance(obj, type) and issubclass(obj, GenServer):
        return obj
    return cls


def _upgrade(inst: GenServer) -> None:
    """Move ``inst`` to the current version of its class (after a code load)."""
    cls = type(inst)
    new = _current_class(cls)
    if new is not cls:
        try:
            inst.__class__ = new
        except TypeError:  # incompatible layouts (__slots__): keeps its class
            pass


def _server_main(
    cls: Any,
    args: tuple[Any, ...],
    kw: dict[str, Any],
    starter: Pid,
    parent: Pid | None,
    name: Any,
    tag: Ref,
) -> None:
    """Run the server process: ``init``, then the message loop.

    The loop is in this same frame: a loop function called from here would be one more
    generator level that every message's resumption passes through.
    """
    started = _init_server(cls, args, kw, starter, name, tag)
    if started is None:
        return
    inst, cont = started
    msg: Any = None
    code_gen = _otp.CODE_GENERATION
    # ``seen`` is what the code generation is compared with on each message (the one
    # check a message pays for hot code loading). After any load, the class is checked on
    # the first message: a server started from a class object captured earlier (a
    # supervisor's child spec) moves to the current one. While sys.statistics is on,
    # ``seen`` is -1 so that every message takes the slow branch, which counts it.
    loaded = code_gen[0] - 1 if code_gen[0] else 0
    seen = loaded
    handle_call = _handler(inst, "handle_call")
    handle_cast = _handler(inst, "handle_cast")
    handle_info = _handler(inst, "handle_info")
    stats: Any = None  # [messages in, start time] while beamvm.sys.statistics is on
    while True:
        try:
            if cont is not _MISSING:
                arg, cont = cont, _MISSING
                out = inst.handle_continue(arg)
                if out is not None and out is not NoReply:
                    cont = _noreply(out)
                continue
            msg = receive()
            if code_gen[0] != seen:  # a module was loaded (or statistics are on)
                if stats is not None:
                    stats[0] += 1
                if code_gen[0] != loaded:  # callbacks of the new version from now on
                    loaded = code_gen[0]
                    _upgrade(inst)
                    handle_call = _handler(inst, "handle_call")
                    handle_cast = _handler(inst, "handle_cast")
                    handle_info = _handler(inst, "handle_info")
                seen = loaded if stats is None else -1
            if type(msg) is tuple and msg:
                tag = msg[0]
                # Tags are compared by identity: a received atom is the one shared object
                # of its name (crates/vm-python/src/types.rs), and ``==`` costs a native
                # call (four of them made every cast and info message ~0.1-0.3 us
                # slower). An atom past the shared ones (a program that made thousands
                # of atoms before importing this module) is mapped to ours here.
                if (
                    tag is not GEN_CALL
                    and tag is not GEN_CAST
                    and tag is not EXIT
                    and tag is not SYSTEM
                    and type(tag) is Atom
                ):
                    tag = _SAME_TAG.get(tag, tag)
                if tag is GEN_CALL and len(msg) == 3:
                    from_ = msg[1]
                    out = handle_call(inst, msg[2], from_)
                    if out is NoReply:
                        continue
                    if type(out) is Continue:
                        cont = out.arg
                        if out.reply is _MISSING:
                            continue
                        out = out.reply
                    # A caller here is answered through its alias, natively; one on
                    # another node by reply(), which knows its tag forms.
                    if not _gen_reply(from_, out):
                        reply(from_, out)
                    continue
                if tag is GEN_CAST and len(msg) == 2:
                    out = handle_cast(inst, msg[1])
                    if out is not None and out is not NoReply:
                        cont = _noreply(out)
                    continue
                if tag is EXIT and len(msg) == 3 and parent is not None and msg[1] == parent:
                    reason = msg[2]
                    break
                if tag is SYSTEM and len(msg) == 3:
                    req = msg[2]
                    if type(req) is tuple and len(req) == 2 and req[0] == TERMINATE:
                        reason = req[1]
                        break
                    from beamvm import sys as _sys

                    inst, stats = _sys._handle(inst, msg[1], req, parent, stats)
                    seen = loaded = -1  # resolve the callbacks again (change_code may have run)
                    continue
            out = handle_info(inst, msg)
            if out is not None and out is not NoReply:
                cont = _noreply(out)
        except Stop as s:
            if s.reply is not _MISSING and type(msg) is tuple and msg and msg[0] == GEN_CALL:
                reply(msg[1], s.reply)
            _stop(inst, name, msg, s.reason, None)
            return
        except _native.ProcessExit as e:  # exit(reason) in a callback
            _stop(inst, name, msg, e.args[0] if e.args else NORMAL, None)
            return
        except Exception as e:  # noqa: BLE001 -- a crash in a callback stops the server
            _stop(inst, name, msg, _otp.exception_reason(e), e)
            return
    _stop(inst, name, msg, reason, None)


def _noreply(out: Any) -> Any:
    """Return the Continue arg a non-call handler returned (else: a bad return)."""
    if type(out) is Continue:
        return out.arg
    raise _BadReturn(out)


class _BadReturn(Exception):
    def __init__(self, value: Any) -> None:
        super().__init__(
            f"a handler returned {value!r}; handle_cast, handle_info and handle_continue "
            "may return None, NoReply or Continue(arg) (and raise Stop(reason))"
        )
        self.value = value

    @property
    def __exit_reason__(self) -> Any:
        return (BAD_RETURN, _as_term(self.value))


def _stop(inst: GenServer, name: Any, msg: Any, reason: Any, exc: BaseException | None) -> None:
    """Run terminate, report an abnormal end, exit with the reason (gen_server:terminate)."""
    try:
        inst.terminate(reason)
    except Exception as e:  # noqa: BLE001 -- a crash in terminate becomes the reason
        reason, exc = _otp.exception_reason(e), e
    except _native.ProcessExit as e:
        reason, exc = (e.args[0] if e.args else NORMAL), None
    if not _otp.is_shutdown(reason):
        _report_crash(inst, name, msg, reason, exc)
    _native.exit(reason)


def _server_label(name: Any) -> str:
    me = self_pid()
    return f"{me!r}" if name is None else f"{name!r} ({me!r})"


@_otp.plain  # logging takes its handlers' locks: never preempted inside
def _report_crash(
    inst: GenServer, name: Any, msg: Any, reason: Any, exc: BaseException | None
) -> None:
    state = _otp.truncated_repr(inst)
    last = _otp.truncated_repr(msg)
    _otp.report(
        logging.ERROR,
        "** Generic server %s terminating\n** Last message in was %s\n"
        "** When Server state == %s\n** Reason for termination ==\n** %r",
        _server_label(name),
        last,
        state,
        reason,
        exc_info=(type(exc), exc, exc.__traceback__) if exc is not None else None,
        extra={
            "beamvm_report": {
                "label": ("gen_server", "terminate"),
                "name": name if name is not None else self_pid(),
                "last_message": last,
                "state": state,
                "reason": reason,
            }
        },
    )


@_otp.plain
def _report_init_crash(cls: Any, name: Any, reason: Any, exc: BaseException) -> None:
    _otp.report(
        logging.ERROR,
        "** Generic server %s (%s) crashed in init\n** Reason == %r",
        _server_label(name),
        cls.__qualname__,
        reason,
        exc_info=(type(exc), exc, exc.__traceback__),
        extra={
            "beamvm_report": {
                "label": ("proc_lib", "crash"),
                "name": name if name is not None else self_pid(),
                "reason": reason,
            }
        },
    )


@_otp.plain
def _warn_unexpected(inst: Any, msg: Any) -> None:
    _otp.report(
        logging.WARNING,
        "%s %r received an unexpected message: %s",
        type(inst).__qualname__,
        self_pid(),
        _otp.truncated_repr(msg),
    )


# --------------------------------------------------------------------------- the class


class GenServer:
    """Base class of a generic server; see the module docs for the callbacks."""

    @classmethod
    def start_link(
        cls, *args: Any, name: Any = None, timeout: float | None = None, **kwargs: Any
    ) -> Any:
        """Start a server linked to the calling process; return its pid (or ``IGNORE``).

        ``init(*args, **kwargs)`` runs in the new process before this returns.
        ``name``: register it as a str/Atom or ``('via', module, key)``; ``timeout``:
        seconds to wait for ``init`` (None: forever), after which the server is killed
        and ``StartError('timeout')`` raised. A failed ``init`` raises
        :class:`StartError` with its reason -- and, as in OTP, the server's exit signal
        then reaches the caller through the link (a caller that does not trap exits
        dies with a reason other than ``normal``); a name already taken raises
        ``StartError(('already_started', pid))``.
        """
        return _start(cls, args, kwargs, name, timeout, True)

    @classmethod
    def start(
        cls, *args: Any, name: Any = None, timeout: float | None = None, **kwargs: Any
    ) -> Any:
        """Start a server that is not linked to the caller; as :meth:`start_link`."""
        return _start(cls, args, kwargs, name, timeout, False)

    @classmethod
    def child_spec(cls, *args: Any, **opts: Any) -> Any:
        """Return a child spec that starts this server with ``start_link(*args, ...)``.

        ``opts``: the spec's fields (``id`` -- default the class's name --, ``restart``,
        ``shutdown``, ``type``, ``modules``; see ``beamvm.supervisor.child_spec``); the
        rest (``name``, ``timeout``, init's keyword arguments) go to ``start_link``.
        """
        from beamvm.supervisor import _class_child_spec

        return _class_child_spec(cls, args, opts, "worker")

    def handle_call(self, request: Any, from_: Any) -> Any:
        """Answer a call (the return value is the reply). Default: crash the server."""
        raise RuntimeError(
            f"{type(self).__qualname__} got a call {request!r} but defines no handle_call"
        )

    def handle_cast(self, msg: Any) -> Any:
        """Handle a cast. Default: crash the server."""
        raise RuntimeError(
            f"{type(self).__qualname__} got a cast {msg!r} but defines no handle_cast"
        )

    def handle_info(self, msg: Any) -> Any:
        """Handle any other message. Default: log it as unexpected and go on."""
        _warn_unexpected(self, msg)
        return None

    def handle_continue(self, arg: Any) -> Any:
        """Run after a callback returned ``Continue(arg)``. Default: crash the server."""
        raise RuntimeError(
            f"{type(self).__qualname__} returned Continue({arg!r}) but defines no "
            "handle_continue"
        )

    def terminate(self, reason: Any) -> None:
        """Clean up when the server stops (see the module docs for when). Default: nothing."""

    def code_change(self, old_vsn: Any, extra: Any) -> None:
        """Upgrade the state for new code (hot code loading). Default: nothing."""

