"""What the OTP layer's modules share: its exceptions, atoms, name resolution, timeouts.

Error style (one for the whole layer, see docs/otp.md): a failed operation **raises**; the
exception carries OTP's reason term in ``.reason``, exactly as the Erlang function would
have returned or exited with it:

* :class:`CallError` -- ``gen_server.call``/``stop``/``receive_response`` and the
  supervisor queries that are calls: ``.reason`` is what OTP's caller would exit with,
  e.g. ``('noproc', ('gen_server', 'call', [server, request, timeout]))``. Uncaught in a
  process, it exits that process with ``.reason``.
* :class:`StartError` -- a start that did not start: ``.reason`` is OTP's ``Reason`` of
  ``{error, Reason}``, e.g. ``('already_started', pid)``, ``'already_present'``, init's
  stop reason.
* :class:`SupervisorError` -- a supervisor refused an operation on a child:
  ``.reason`` is ``'not_found'``, ``'running'``, ``'restarting'``, ...
* Bad arguments (a malformed child spec, a negative timeout, a class without ``init``)
  raise ``TypeError``/``ValueError`` at the call, before any process starts.
"""

from __future__ import annotations

import atexit
import functools
import logging
import math
import queue
import threading
from collections.abc import Callable
from typing import Any

from beamvm import _native
from beamvm._native import Atom, Pid

__all__ = ["CallError", "StartError", "SupervisorError", "plain"]

log = logging.getLogger("beamvm")

#: Characters of a server's state (its repr) kept in a crash report: enough to see what
#: it held, bounded so that a huge state cannot flood the log.
STATE_REPR_LIMIT = 2000

#: Bumped by ``beamvm.code.load``: a GenServer compares it with the value it last saw on
#: each message and, when it changed, resolves its class and callbacks from the module
#: again (Erlang's fully qualified ``?MODULE:loop`` call after a code load).
CODE_GENERATION = [0]

NORMAL = Atom("normal")
SHUTDOWN = Atom("shutdown")
KILL = Atom("kill")
KILLED = Atom("killed")
NOPROC = Atom("noproc")
TIMEOUT = Atom("timeout")
INFINITY = Atom("infinity")
#: The first element of a monitor's message: ``(DOWN, ref, Atom('process'), pid, reason)``
#: (exported as ``beamvm.DOWN``).
DOWN = Atom("DOWN")
#: The first element of a trapped exit signal: ``(EXIT, pid, reason)`` (``beamvm.EXIT``).
EXIT = Atom("EXIT")
ERROR = Atom("error")
VIA = Atom("via")
IGNORE = Atom("ignore")
OK = Atom("ok")
PROCESS = Atom("process")
ALREADY_STARTED = Atom("already_started")
BAD_RETURN = Atom("bad_return_value")


class plain:  # noqa: N801 -- used as a decorator
    """Make process code call a function plainly, to completion, like a NIF.

    Compiled process code compiles every Python function it calls, and can be preempted
    inside it. Functions that take thread locks (logging's handlers, threading,
    concurrent.futures) or talk to an event loop must not be interrupted half-way, and
    gain nothing from being compiled. An instance is not a function, so compiled code
    calls it as it is.
    """

    #: Read by the compiler's call dispatch: instances are called as they are.
    __beamvm_plain__ = True

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)


# --------------------------------------------------------------------------- reports


class _Reporter:
    """Writes the layer's reports from a thread of its own, in the order they were made.

    OTP's logger hands events to its handler process, so a supervisor restarting a
    child does not wait for a report to be formatted and written; here a daemon thread
    plays that process. ``emit`` costs a queue put; :func:`flush_reports` waits until
    everything emitted so far is written (``beamvm.run`` and ``aio.running`` flush when
    they end, and so does the interpreter's exit).
    """

    def __init__(self) -> None:
        self.q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()

    def emit(self, level: int, msg: str, args: tuple[Any, ...], exc: Any, extra: Any) -> None:
        self.q.put((level, msg, args, exc, extra))
        t = self.thread
        if t is None or not t.is_alive():
            with self.lock:
                if self.thread is None or not self.thread.is_alive():
                    self.thread = threading.Thread(
                        target=self.serve, name="beamvm-reports", daemon=True
                    )
                    self.thread.start()

    def serve(self) -> None:
        while True:
            item = self.q.get()
            if isinstance(item, threading.Event):
                item.set()
                continue
            level, msg, args, exc, extra = item
            try:
                log.log(level, msg, *args, exc_info=exc, extra=extra)
            except Exception:  # noqa: BLE001 -- a broken handler must not stop reports
                pass

    def flush(self, timeout: float) -> bool:
        t = self.thread
        if t is None or not t.is_alive():
            return True
        done = threading.Event()
        self.q.put(done)
        return done.wait(timeout)


_REPORTER = _Reporter()


@plain
def report(level: int, msg: str, *args: Any, exc_info: Any = None, extra: Any = None) -> None:
    """Log a report on the ``beamvm`` logger from the reporter thread (see _Reporter)."""
    if log.isEnabledFor(level):
        _REPORTER.emit(level, msg, args, exc_info, extra)


def flush_reports(timeout: float = 5.0) -> bool:
    """Wait until every report emitted so far has been written; False on timeout."""
    return _REPORTER.flush(timeout)


atexit.register(flush_reports, 2.0)


class _ReasonError(Exception):
    """An error that carries an OTP reason term in ``.reason``."""

    def __init__(self, reason: Any, message: str | None = None) -> None:
        super().__init__(message if message is not None else repr(reason))
        self.reason = reason


class CallError(_ReasonError):
    """A call failed; ``.reason`` is what OTP's caller would exit with.

    For ``gen_server.call`` it is ``(why, ('gen_server', 'call', [server, request,
    timeout]))`` where ``why`` is ``'noproc'`` (no such process or name, at once),
    ``'timeout'`` (no reply in time; a late reply is dropped, never queued), the server's
    exit reason (it died during the call) or ``'calling_self'``. Raised in a process and
    not caught, it ends the process with ``.reason`` as its exit reason (linked
    processes and monitors see that), like an Erlang caller that does not catch.
    """

    @property
    def __exit_reason__(self) -> Any:  # read by the native driver when it ends a process
        return self.reason


class StartError(_ReasonError):
    """A start failed: ``.reason`` is OTP's ``Reason`` of ``{error, Reason}``."""


class SupervisorError(_ReasonError):
    """A supervisor refused an operation on a child (``.reason``: ``'not_found'``, ...)."""


def check_timeout(timeout: Any, what: str = "timeout") -> float | None:
    """Validate a timeout in seconds (None: forever); return it as a float or None."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(
            f"{what} must be a number of seconds (int or float) or None, "
            f"not {type(timeout).__name__}"
        )
    if math.isnan(timeout) or timeout < 0:
        raise ValueError(f"{what} must be >= 0 seconds or None (forever), got {timeout!r}")
    if math.isinf(timeout):
        return None
    return float(timeout)


def timeout_term(timeout: float | None) -> Any:
    """Return a timeout as it appears in an OTP reason (``infinity`` for None)."""
    return INFINITY if timeout is None else timeout


# --------------------------------------------------------------------------- hand-off

#: Objects handed to another process by reference (a child spec holds functions, which
#: have no term form, so it cannot travel in a message): the message carries a Ref, the
#: receiver takes the object. The sender removes what was not taken (the receiver died).
_HANDOFF: dict[Any, Any] = {}


def handoff(obj: Any) -> Any:
    """Park ``obj`` for another process; return the Ref to put in the message."""
    r = _native.make_ref()
    _HANDOFF[r] = obj
    return r


def take_handoff(ref: Any) -> Any:
    """Take a parked object (None if it was taken already or never parked)."""
    return _HANDOFF.pop(ref, None)


# --------------------------------------------------------------------------- names

#: Via modules known by name: ``('via', 'beamvm.registry', key)`` looks up
#: ``_VIA['beamvm.registry']``. A via tuple may also hold the module object itself.
_VIA: dict[str, Any] = {}


def register_via(name: str, module: Any) -> None:
    """Make ``('via', name, key)`` resolve through ``module`` (OTP's via protocol).

    ``module`` provides ``register_name(key, pid) -> bool``, ``unregister_name(key)``,
    ``whereis_name(key) -> Pid | None`` and ``send(key, msg)``.
    """
    _VIA[name] = module


def _via_module(mod: Any) -> Any:
    if isinstance(mod, str | Atom):
        m = _VIA.get(str(mod))
        if m is None:
            raise ValueError(
                f"unknown via module {str(mod)!r} (known: {sorted(_VIA)}); "
                "register one with beamvm._otp.register_via"
            )
        return m
    for attr in ("register_name", "unregister_name", "whereis_name", "send"):
        if not callable(getattr(mod, attr, None)):
            raise TypeError(f"a via module must provide {attr}(), {mod!r} does not")
    return mod


def check_name(name: Any, what: str = "name") -> Any:
    """Validate a server name: None, a str/Atom (local), or ``('via', module, key)``."""
    if name is None or isinstance(name, str | Atom):
        return name
    if isinstance(name, tuple) and len(name) == 3 and name[0] in ("via", VIA):
        _via_module(name[1])
        return name
    raise TypeError(
        f"{what} must be None, a str or Atom (a locally registered name) or "
        f"('via', module, key), not {name!r}"
    )


def check_server(server: Any) -> None:
    """Raise TypeError unless ``server`` is a Pid, a str/Atom name or a via tuple."""
    if type(server) is Pid or isinstance(server, str | Atom):
        return
    if isinstance(server, tuple) and len(server) == 3 and server[0] in ("via", VIA):
        _via_module(server[1])
        return
    raise TypeError(
        "a server must be a Pid, a registered name (str or Atom) or ('via', module, key), "
        f"not {server!r}"
    )


def whereis(server: Any) -> Pid | None:
    """Return the pid ``server`` names now (a Pid itself, a str/Atom, a via tuple)."""
    if type(server) is Pid:
        return server
    if isinstance(server, str | Atom):
        return _native.whereis(server)
    if isinstance(server, tuple) and len(server) == 3 and server[0] in ("via", VIA):
        return _via_module(server[1]).whereis_name(server[2])
    raise TypeError(
        "a server must be a Pid, a registered name (str or Atom) or ('via', module, key), "
        f"not {server!r}"
    )


def send_via(name: Any, msg: Any) -> None:
    """Send ``msg`` to ``('via', module, key)`` through the via module (``send(name, msg)``)."""
    if not (isinstance(name, tuple) and len(name) == 3 and name[0] in ("via", VIA)):
        raise TypeError(
            "send's destination must be a Pid, an alias Ref, a registered name or "
            f"('via', module, key), not {name!r}"
        )
    _via_module(name[1]).send(name[2], msg)


def register_name(name: Any, pid: Pid) -> Pid | None:
    """Register ``pid`` under ``name``; None on success, else the pid holding the name."""
    if isinstance(name, str | Atom):
        try:
            _native.register(name, pid)
            return None
        except _native.BadArg:
            other = _native.whereis(name)
            if other is None:  # the caller had a name already, or the name was freed
                raise
            return other
    mod = _via_module(name[1])
    if mod.register_name(name[2], pid):
        return None
    return mod.whereis_name(name[2]) or pid


def unregister_name(name: Any) -> None:
    """Remove a registration made by :func:`register_name` (if still there)."""
    try:
        if isinstance(name, str | Atom):
            _native.unregister(name)
        else:
            _via_module(name[1]).unregister_name(name[2])
    except _native.BadArg:
        pass


def is_shutdown(reason: Any) -> bool:
    """Tell whether ``reason`` is an orderly stop: no error report is due for it.

    Those are ``normal``, ``shutdown`` and ``('shutdown', term)``.
    """
    if reason == NORMAL or reason == SHUTDOWN:
        return True
    return isinstance(reason, tuple) and len(reason) == 2 and reason[0] == SHUTDOWN


def exception_reason(e: BaseException) -> Any:
    """Return the exit reason of a process ended by ``e`` (as the native driver makes it)."""
    if isinstance(e, _native.ProcessExit):
        return e.args[0] if e.args else NORMAL
    r = getattr(e, "__exit_reason__", None)
    if r is not None:
        return r
    return (ERROR, type(e).__qualname__, str(e))


def truncated_repr(obj: Any, limit: int = STATE_REPR_LIMIT) -> str:
    """``repr(obj)``, cut to ``limit`` characters (and never raising)."""
    try:
        r = repr(obj)
    except Exception as e:  # noqa: BLE001 -- a broken __repr__ must not hide the report
        r = f"<repr failed: {type(e).__name__}: {e}>"
    if len(r) > limit:
        r = r[:limit] + f"... ({len(r) - limit} more characters)"
    return r
