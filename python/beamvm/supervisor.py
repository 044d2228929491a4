"""Supervisors: OTP's ``supervisor`` and Elixir's ``DynamicSupervisor``.

A supervisor starts its children in order, watches them (it traps exits) and restarts
them by its strategy when they end::

    from beamvm import supervisor
    from beamvm.supervisor import child_spec

    sup = supervisor.start_link([
            child_spec("db", Db.start_link, args=(url,), restart="permanent", shutdown=5.0),
            child_spec("cache", Cache.start_link, restart="transient"),
            child_spec("workers", WorkerSup.start_link, type="supervisor"),
          ], strategy="one_for_one", intensity=1, period=5.0, name="app_sup")

Class form: subclass :class:`Supervisor` and return ``(children, flags)`` from ``init``.
Any GenServer (and Supervisor) class provides ``child_spec(*args, **opts)``.

**Strategies.** ``one_for_one``: restart the child that ended. ``one_for_all``: stop all
the others (in reverse start order), then start all again in start order.
``rest_for_one``: stop the children started after the one that ended, then restart it
and them, in start order. :class:`DynamicSupervisor` (OTP's ``simple_one_for_one``)
starts children on demand, each restarted on its own.

**Restart types.** ``permanent``: always restarted. ``transient``: restarted only after
an abnormal exit (not ``normal``, ``shutdown`` or ``('shutdown', term)``).
``temporary``: never restarted, and its spec is forgotten once it ends (also when a
``one_for_all``/``rest_for_one`` restart stops it).

**Intensity.** More than ``intensity`` restarts within ``period`` seconds makes the
supervisor stop all its children and exit with ``shutdown``; its own supervisor then
sees that exit (escalation). Defaults: OTP's 1 restart in 5 s for :func:`start_link`,
Elixir's 3 in 5 s for :class:`DynamicSupervisor`. A child whose restart fails is retried
(each try counts as a restart), so a child that can never start ends the supervisor
instead of looping forever.

**Shutdown.** Children stop in reverse start order. ``shutdown=seconds`` (default 5.0 for
workers) sends exit ``shutdown`` and kills after that many seconds; ``"brutal_kill"``
kills at once; ``"infinity"`` (the default for ``type="supervisor"``) waits as long as
it takes. A GenServer child runs ``terminate`` on shutdown only if it traps exits.

**Starting.** A child's ``start`` is called in the supervisor's process and must start
a process linked to it and return its pid (``GenServer.start_link`` does), or return
``IGNORE`` (the child stays known but not running). If a child fails to start while the
supervisor starts, the children already started are stopped and the supervisor's start
raises :class:`StartError` with ``('shutdown', ('failed_to_start_child', id, reason))``.

**Errors** (the layer's one style, see ``beamvm._otp``): operations that OTP answers with
``{error, Reason}`` raise; :func:`start_child` raises :class:`StartError` with
``('already_started', pid)``, ``'already_present'`` or the child's start failure reason;
:func:`terminate_child`, :func:`restart_child` and :func:`delete_child` raise
:class:`SupervisorError` with ``'not_found'``, ``'running'`` or ``'restarting'``. A
malformed child spec raises ``TypeError``/``ValueError`` naming the field and the values
it accepts, before anything starts.

**Reports** on the ``beamvm`` logger, in OTP's shapes: a progress report (``INFO``) for
each child started; supervisor reports (``ERROR``) with ``errorContext``
``child_terminated``, ``start_error``, ``shutdown_error`` or ``shutdown`` (intensity
reached, reason ``reached_max_restart_intensity``), each naming the supervisor, the
reason and the offender (the child's pid, id, start, restart type, shutdown, type). The
structured report is in the record's ``beamvm_report`` attribute.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Generator
from typing import Any

from beamvm import _native, _otp, _runtime
from beamvm import gen_server as _gs
from beamvm._native import Atom, Pid, monitor, self_pid, send, unlink
from beamvm._otp import (
    ALREADY_STARTED,
    BAD_RETURN,
    DOWN,
    ERROR,
    EXIT,
    IGNORE,
    KILL,
    KILLED,
    NORMAL,
    OK,
    SHUTDOWN,
    StartError,
    SupervisorError,
)
from beamvm.gen_server import GenServer, Stop

from beamvm import ANY, receive  # isort: skip -- the package's receive (compiled fast path)

__all__ = [
    "ChildSpec",
    "DynamicSupervisor",
    "IGNORE",
    "StartError",
    "Supervisor",
    "SupervisorError",
    "child_spec",
    "count_children",
    "delete_child",
    "restart_child",
    "start_child",
    "start_link",
    "terminate_child",
    "which_children",
]

log = logging.getLogger("beamvm")

RESTART_TYPES = ("permanent", "transient", "temporary")
CHILD_TYPES = ("worker", "supervisor")
STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one")
#: Seconds a worker gets to stop after exit ``shutdown`` by default (OTP's 5000 ms).
DEFAULT_WORKER_SHUTDOWN = 5.0

UNDEFINED = Atom("undefined")
RESTARTING = Atom("restarting")
TRY_AGAIN = Atom("$sup_try_again")
ALREADY_PRESENT = Atom("already_present")
NOT_FOUND = Atom("not_found")
RUNNING = Atom("running")
MAX_CHILDREN = Atom("max_children")
FAILED_TO_START = Atom("failed_to_start_child")
_TIMED_OUT: Any = object()


# --------------------------------------------------------------------------- child specs


class ChildSpec:
    """A child specification (immutable); build one with :func:`child_spec`."""

    __slots__ = ("id", "start", "args", "kwargs", "restart", "shutdown", "type", "modules")

    id: Any
    start: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    restart: str
    shutdown: float | str
    type: str
    modules: list[str]

    def __init__(self, **fields: Any) -> None:
        for k, v in fields.items():
            object.__setattr__(self, k, v)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a ChildSpec is immutable; build a new one with child_spec()")

    def __repr__(self) -> str:
        return (
            f"ChildSpec(id={self.id!r}, start={_qualname(self.start)}, args={self.args!r}, "
            f"restart={self.restart!r}, shutdown={self.shutdown!r}, type={self.type!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ChildSpec):
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    def __hash__(self) -> int:
        return hash((self.id, self.restart, self.type))


def _qualname(f: Any) -> str:
    owner = getattr(f, "__self__", None)
    if isinstance(owner, type):  # a classmethod: name it after the class it is bound to
        return f"{owner.__qualname__}.{getattr(f, '__name__', '?')}"
    return getattr(f, "__qualname__", None) or type(f).__qualname__


def child_spec(
    id: Any,
    start: Callable[..., Any],
    args: tuple[Any, ...] | list[Any] = (),
    kwargs: dict[str, Any] | None = None,
    *,
    restart: str = "permanent",
    shutdown: float | str | None = None,
    type: str = "worker",
    modules: list[str] | None = None,
) -> ChildSpec:
    """Build a child spec (OTP's ``#{id, start, restart, shutdown, type, modules}``).

    ``id``: a name unique in its supervisor (any value that can travel as a message:
    str, int, Atom, tuple...). ``start``: called as ``start(*args, **kwargs)`` in the
    supervisor's process; it must start a process linked to the caller and return its
    pid, or return ``IGNORE`` (e.g. ``MyServer.start_link``). ``restart``:
    ``"permanent"`` (default), ``"transient"`` or ``"temporary"``. ``shutdown``:
    seconds (default 5.0 for a worker), ``"brutal_kill"``, or ``"infinity"`` (the
    default for ``type="supervisor"``). ``type``: ``"worker"`` or ``"supervisor"``.
    Raises ``TypeError``/``ValueError`` naming the field for anything else.
    """
    try:
        hash(id)
        _native.roundtrip(id)
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"child_spec id must be a hashable value that can travel as a message (str, "
            f"int, Atom, tuple of those...), not {id!r}: {e}"
        ) from None
    if not callable(start):
        raise TypeError(
            f"child_spec {id!r}: start must be callable (e.g. MyServer.start_link), "
            f"not {start!r}"
        )
    if not isinstance(args, tuple | list):
        raise TypeError(f"child_spec {id!r}: args must be a tuple or list, not {args!r}")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise TypeError(f"child_spec {id!r}: kwargs must be a dict or None, not {kwargs!r}")
    if restart not in RESTART_TYPES:
        raise ValueError(
            f"child_spec {id!r}: restart must be one of {', '.join(map(repr, RESTART_TYPES))}, "
            f"not {restart!r}"
        )
    if type not in CHILD_TYPES:
        raise ValueError(
            f"child_spec {id!r}: type must be 'worker' or 'supervisor', not {type!r}"
        )
    if shutdown is None:
        shutdown = "infinity" if type == "supervisor" else DEFAULT_WORKER_SHUTDOWN
    shutdown = _check_shutdown(id, shutdown)
    if modules is None:
        modules = [_qualname(start).rsplit(".", 1)[0]]
    elif not (isinstance(modules, list) and all(isinstance(m, str) for m in modules)):
        raise TypeError(f"child_spec {id!r}: modules must be a list of str, not {modules!r}")
    return ChildSpec(
        id=id,
        start=start,
        args=tuple(args),
        kwargs=dict(kwargs or {}),
        restart=restart,
        shutdown=shutdown,
        type=type,
        modules=list(modules),
    )


def _child_spec_primitive(*args: Any, **kwargs: Any) -> Generator[Any, Any, ChildSpec]:
    # Compiled process code runs this with ``yield from`` instead of compiling
    # child_spec, whose parameter named ``type`` would shadow the builtin the compiled
    # call sites use. Its body is plain Python: it just calls child_spec.
    return child_spec(*args, **kwargs)
    yield  # pragma: no cover -- makes this a generator function


_runtime.register_primitive(child_spec, _child_spec_primitive)


def _check_shutdown(id: Any, shutdown: Any) -> float | str:
    if shutdown in ("brutal_kill", "infinity"):
        return str(shutdown)
    if isinstance(shutdown, bool) or not isinstance(shutdown, int | float):
        raise TypeError(
            f"child_spec {id!r}: shutdown must be seconds (a number >= 0), 'brutal_kill' "
            f"or 'infinity', not {shutdown!r}"
        )
    if math.isnan(shutdown) or shutdown < 0:
        raise ValueError(
            f"child_spec {id!r}: shutdown must be seconds (a number >= 0), 'brutal_kill' "
            f"or 'infinity', not {shutdown!r}"
        )
    return "infinity" if math.isinf(shutdown) else float(shutdown)


def as_child_spec(x: Any) -> ChildSpec:
    """Normalise an entry of a children list into a ChildSpec.

    Accepted: a ChildSpec, a dict of child_spec's arguments, a GenServer/Supervisor
    class (``Cls.child_spec()``), or ``(Cls, arg)``.
    """
    if isinstance(x, ChildSpec):
        return x
    if isinstance(x, dict):
        try:
            return child_spec(**x)
        except TypeError as e:
            raise TypeError(f"child spec dict {x!r}: {e}") from None
    if isinstance(x, type) and callable(getattr(x, "child_spec", None)):
        return x.child_spec()
    if (
        isinstance(x, tuple)
        and len(x) == 2
        and isinstance(x[0], type)
        and callable(getattr(x[0], "child_spec", None))
    ):
        return x[0].child_spec(x[1])
    raise TypeError(
        "a child spec must be a ChildSpec (from child_spec()), a dict of its fields, a "
        f"GenServer/Supervisor class, or (Class, arg); not {x!r}"
    )


def _check_children(children: Any) -> list[ChildSpec]:
    if not isinstance(children, list | tuple):
        raise TypeError(f"children must be a list of child specs, not {children!r}")
    specs = [as_child_spec(c) for c in children]
    seen: set[Any] = set()
    for s in specs:
        if s.id in seen:
            raise ValueError(f"duplicate child id {s.id!r}: ids must be unique in a supervisor")
        seen.add(s.id)
    return specs


def _check_flags(strategy: Any, intensity: Any, period: Any) -> tuple[str, int, float]:
    if strategy not in STRATEGIES:
        raise ValueError(
            f"strategy must be one of {', '.join(map(repr, STRATEGIES))}, not {strategy!r}"
        )
    if isinstance(intensity, bool) or not isinstance(intensity, int) or intensity < 0:
        raise ValueError(f"intensity must be an int >= 0 (restarts), not {intensity!r}")
    if isinstance(period, bool) or not isinstance(period, int | float) or not period > 0:
        raise ValueError(f"period must be a number of seconds > 0, not {period!r}")
    return str(strategy), int(intensity), float(period)


# --------------------------------------------------------------------------- children


class _Child:
    """A child as its supervisor knows it: the spec and the pid.

    The pid is None when not running, ``('restarting', old)`` while a retried restart
    is pending.
    """

    __slots__ = ("spec", "pid")

    def __init__(self, spec: ChildSpec, pid: Any = None) -> None:
        self.spec = spec
        self.pid = pid


def _start_spec(spec: ChildSpec) -> tuple[Any, Any]:
    """Call a spec's start: (OK, pid), (IGNORE, None) or (ERROR, reason)."""
    try:
        res = spec.start(*spec.args, **spec.kwargs)
    except StartError as e:
        return ERROR, e.reason
    except Exception as e:  # noqa: BLE001 -- a crashed start is a failed start
        return ERROR, _otp.exception_reason(e)
    if type(res) is Pid:
        return OK, res
    if res == IGNORE:
        return IGNORE, None
    return ERROR, (BAD_RETURN, _gs._as_term(res))


def _offender(child: _Child) -> dict[str, Any]:
    s = child.spec
    pid = child.pid
    return {
        "pid": pid if type(pid) is Pid else (RESTARTING if pid is not None else UNDEFINED),
        "id": s.id,
        "mfargs": (_qualname(s.start), s.args),
        "restart_type": s.restart,
        "shutdown": s.shutdown,
        "child_type": s.type,
    }


@_otp.plain  # logging takes its handlers' locks: never preempted inside
def _report(sup_name: Any, context: str, reason: Any, child: _Child) -> None:
    if not log.isEnabledFor(logging.ERROR):
        return
    offender = _offender(child)
    _otp.report(
        logging.ERROR,
        "Supervisor: %r\n    errorContext: %s\n    reason: %r\n    offender: %r",
        sup_name,
        context,
        reason,
        offender,
        extra={
            "beamvm_report": {
                "label": ("supervisor", context),
                "supervisor": sup_name,
                "errorContext": context,
                "reason": reason,
                "offender": offender,
            }
        },
    )


@_otp.plain
def _progress(sup_name: Any, child: _Child) -> None:
    if not log.isEnabledFor(logging.INFO):
        return
    started = _offender(child)
    _otp.report(
        logging.INFO,
        "Supervisor %r started child %r: %r",
        sup_name,
        child.spec.id,
        started,
        extra={"beamvm_report": {"label": ("supervisor", "progress"), "supervisor": sup_name,
                                 "started": started}},
    )


@_otp.plain
def _unexpected(kind: str, name: Any, msg: Any) -> None:
    _otp.report(
        logging.ERROR, "%s %r received unexpected message: %s", kind, name,
        _otp.truncated_repr(msg),
    )


def _shutdown(pid: Pid, shutdown: float | str) -> Any:
    """Stop a child as OTP's supervisor does.

    Returns None when it ended as asked, else the reason it ended with.
    """
    ref = monitor(pid)
    unlink(pid)
    got = receive((EXIT, pid, ANY), timeout=0, default=None)
    if got is not None:  # it had ended already
        receive((DOWN, ref, ANY, ANY, ANY))
        return got[2]
    if shutdown == "brutal_kill":
        _native.exit(pid, KILL)
        r = receive((DOWN, ref, ANY, ANY, ANY))[4]
        return None if r == KILLED else r
    _native.exit(pid, SHUTDOWN)
    t = None if shutdown == "infinity" else shutdown
    got = receive((DOWN, ref, ANY, ANY, ANY), timeout=t, default=_TIMED_OUT)
    if got is _TIMED_OUT:
        _native.exit(pid, KILL)
        return receive((DOWN, ref, ANY, ANY, ANY))[4]
    return None if got[4] == SHUTDOWN else got[4]


def _terminate(child: _Child, sup_name: Any) -> None:
    """do_terminate: stop a running child, reporting an unexpected end."""
    if type(child.pid) is not Pid:
        return
    r = _shutdown(child.pid, child.spec.shutdown)
    if r is None or (r == NORMAL and child.spec.restart != "permanent"):
        return
    _report(sup_name, "shutdown_error", r, child)


class _Intensity:
    """Restarts within the period (OTP's add_restart)."""

    __slots__ = ("intensity", "period", "times")

    def __init__(self, intensity: int, period: float) -> None:
        self.intensity = intensity
        self.period = period
        self.times: deque[float] = deque()

    def add(self) -> bool:
        """Count a restart; False when it is one too many (the supervisor must stop)."""
        now = time.monotonic()
        t = self.times
        t.append(now)
        while t and t[0] < now - self.period:
            t.popleft()
        return len(t) <= self.intensity


# --------------------------------------------------------------------------- the server


class _Sup(GenServer):
    """The supervisor process (a gen_server, as OTP's)."""

    def init(self, kind: str, arg: Any, args: tuple[Any, ...], name: Any) -> Any:
        _native.process_flag("trap_exit", True)
        self.name = name if name is not None else self_pid()
        if kind == "class":
            out = arg().init(*args)
            if out == IGNORE:
                return IGNORE
            try:
                children, flags = out
            except (TypeError, ValueError):
                raise Stop(
                    (Atom("bad_return"), _otp.truncated_repr(out))
                ) from None
            flags = dict(flags or {})
            unknown = set(flags) - {"strategy", "intensity", "period"}
            if unknown:
                raise Stop((Atom("bad_flags"), sorted(unknown)))
            specs = _check_children(children)
            strategy, intensity, period = _check_flags(
                flags.get("strategy", "one_for_one"),
                flags.get("intensity", 1),
                flags.get("period", 5.0),
            )
        else:
            specs, (strategy, intensity, period) = arg
        self.strategy = strategy
        self.restarts = _Intensity(intensity, period)
        self.children: list[_Child] = []
        self.by_pid: dict[Pid, _Child] = {}
        for spec in specs:
            child = _Child(spec)
            status, val = _start_spec(spec)
            if status == ERROR:
                _report(self.name, "start_error", val, child)
                self._terminate_all()
                raise Stop((SHUTDOWN, (FAILED_TO_START, spec.id, val)))
            if val is None and spec.restart == "temporary":
                continue  # an ignored temporary child is not kept (OTP)
            self._set_pid(child, val)
            self.children.append(child)
            if val is not None:
                _progress(self.name, child)
        return None

    # ---------------------------------------------------------------- bookkeeping

    def _set_pid(self, child: _Child, pid: Any) -> None:
        old = child.pid
        if type(old) is Pid:
            self.by_pid.pop(old, None)
        child.pid = pid
        if type(pid) is Pid:
            self.by_pid[pid] = child

    def _find(self, id: Any) -> _Child | None:
        for c in self.children:
            if c.spec.id == id:
                return c
        return None

    def _del_child(self, child: _Child) -> None:
        """Temporary children are forgotten; others stay known, not running."""
        self._set_pid(child, None)
        if child.spec.restart == "temporary":
            self.children.remove(child)

    def _terminate_all(self) -> None:
        for c in reversed(self.children[:]):
            _terminate(c, self.name)
            self._del_child(c)

    def _terminate_group(self, group: list[_Child]) -> None:
        """terminate_children for a restart: reverse order; temporary ones forgotten."""
        for c in reversed(group):
            _terminate(c, self.name)
            self._del_child(c)

    def _start_group(self, group: list[_Child]) -> Any:
        """Start the children of ``group`` (start order) that are still known.

        Returns the first child that fails to start (after a start_error report), or None.
        """
        for c in group:
            if c not in self.children:
                continue
            status, val = _start_spec(c.spec)
            if status == ERROR:
                _report(self.name, "start_error", val, c)
                return c
            self._set_pid(c, val)
            if val is not None:
                _progress(self.name, c)
        return None

    # ---------------------------------------------------------------- restarts

    def _child_exited(self, child: _Child, reason: Any) -> None:
        restart = child.spec.restart
        if restart == "permanent":
            _report(self.name, "child_terminated", reason, child)
            self._restart(child)
        elif _otp.is_shutdown(reason):
            self._del_child(child)
        elif restart == "transient":
            _report(self.name, "child_terminated", reason, child)
            self._restart(child)
        else:
            _report(self.name, "child_terminated", reason, child)
            self._del_child(child)

    def _restart(self, child: _Child) -> None:
        if not self.restarts.add():
            _report(self.name, "shutdown", Atom("reached_max_restart_intensity"), child)
            self._del_child(child)
            raise Stop(SHUTDOWN)
        failed: _Child | None
        if self.strategy == "one_for_one":
            status, val = _start_spec(child.spec)
            if status == ERROR:
                _report(self.name, "start_error", val, child)
                failed = child
            else:
                self._set_pid(child, val)
                if val is not None:
                    _progress(self.name, child)
                failed = None
        else:
            self._set_pid(child, None)
            i = self.children.index(child)
            if self.strategy == "rest_for_one":
                group = self.children[i:]
            else:
                group = self.children[:]
            self._terminate_group([c for c in group if c is not child])
            failed = self._start_group(group)
        if failed is not None:
            self._set_pid(failed, (RESTARTING, failed.pid))
            send(self_pid(), (TRY_AGAIN, failed.spec.id))

    # ---------------------------------------------------------------- callbacks

    def handle_info(self, msg: Any) -> Any:
        if type(msg) is tuple and len(msg) == 3 and msg[0] == EXIT:
            child = self.by_pid.get(msg[1])
            if child is not None:
                self.by_pid.pop(msg[1], None)
                self._child_exited(child, msg[2])
            return None
        if type(msg) is tuple and len(msg) == 2 and msg[0] == TRY_AGAIN:
            child = self._find(msg[1])
            if child is not None and type(child.pid) is tuple:
                self._restart(child)
            return None
        _unexpected("Supervisor", self.name, msg)
        return None

    def handle_call(self, request: Any, from_: Any) -> Any:
        op = request[0]
        if op == "which_children":
            return [
                (
                    c.spec.id,
                    c.pid
                    if type(c.pid) is Pid
                    else (RESTARTING if c.pid is not None else UNDEFINED),
                    Atom(c.spec.type),
                    c.spec.modules,
                )
                for c in self.children
            ]
        if op == "count_children":
            return _count(self.children)
        if op == "start_child":
            spec = _otp.take_handoff(request[1])
            if spec is None:
                return (ERROR, Atom("no_spec"))
            old = self._find(spec.id)
            if old is not None:
                if type(old.pid) is Pid:
                    return (ERROR, (ALREADY_STARTED, old.pid))
                return (ERROR, ALREADY_PRESENT)
            child = _Child(spec)
            status, val = _start_spec(spec)
            if status == ERROR:
                _report(self.name, "start_error", val, child)
                return (ERROR, val)
            if val is None and spec.restart == "temporary":
                return (OK, IGNORE)
            self._set_pid(child, val)
            self.children.append(child)
            if val is not None:
                _progress(self.name, child)
            return (OK, val if val is not None else IGNORE)
        child = self._find(request[1])
        if op == "terminate_child":
            if child is None:
                return (ERROR, NOT_FOUND)
            _terminate(child, self.name)
            self._del_child(child)
            return (OK, None)
        if op == "restart_child" or op == "delete_child":
            if child is None:
                return (ERROR, NOT_FOUND)
            if type(child.pid) is tuple:
                return (ERROR, RESTARTING)
            if child.pid is not None:
                return (ERROR, RUNNING)
            if op == "delete_child":
                self.children.remove(child)
                return (OK, None)
            status, val = _start_spec(child.spec)
            if status == ERROR:
                _report(self.name, "start_error", val, child)
                return (ERROR, val)
            self._set_pid(child, val)
            if val is not None:
                _progress(self.name, child)
            return (OK, val if val is not None else IGNORE)
        return (ERROR, (Atom("unknown_request"), op))

    def terminate(self, reason: Any) -> None:
        self._terminate_all()

    def __repr__(self) -> str:
        kids = ", ".join(f"{c.spec.id!r}: {c.pid!r}" for c in self.children)
        return f"<supervisor {self.name!r} {self.strategy} children={{{kids}}}>"


def _count(children: Any) -> dict[str, int]:
    specs = active = sups = workers = 0
    for c in children:
        specs += 1
        if type(c.pid) is Pid and _native.is_alive(c.pid):
            active += 1
        if c.spec.type == "supervisor":
            sups += 1
        else:
            workers += 1
    return {"specs": specs, "active": active, "supervisors": sups, "workers": workers}


# --------------------------------------------------------------------------- public API


def start_link(
    children: list[Any],
    *,
    strategy: str = "one_for_one",
    intensity: int = 1,
    period: float = 5.0,
    name: Any = None,
    timeout: float | None = None,
) -> Pid:
    """Start a supervisor of ``children`` linked to the caller; return its pid.

    ``strategy``: ``"one_for_one"`` (default), ``"one_for_all"``, ``"rest_for_one"``.
    ``intensity``/``period``: more than ``intensity`` restarts (default 1) within
    ``period`` seconds (default 5.0) stop the supervisor with ``shutdown`` (OTP's
    defaults). ``name``: a str/Atom or ``('via', module, key)``. Every child is started,
    in order, before this returns; see the module docs for failures.
    """
    return _start(_gs.start_link, children, strategy, intensity, period, name, timeout)


def start(
    children: list[Any],
    *,
    strategy: str = "one_for_one",
    intensity: int = 1,
    period: float = 5.0,
    name: Any = None,
    timeout: float | None = None,
) -> Pid:
    """Start a supervisor that is not linked to the caller; as :func:`start_link`."""
    return _start(_gs.start, children, strategy, intensity, period, name, timeout)


def _start(
    starter: Any,
    children: list[Any],
    strategy: str,
    intensity: int,
    period: float,
    name: Any,
    timeout: float | None,
) -> Pid:
    # Every argument is checked here, in the caller, before any process starts.
    specs = _check_children(children)
    flags = _check_flags(strategy, intensity, period)
    name = _otp.check_name(name)
    pid: Pid = starter(_Sup, "static", (specs, flags), (), name, name=name, timeout=timeout)
    return pid


def _call(sup: Any, request: tuple[Any, ...]) -> Any:
    return _gs.call(sup, request, timeout=None)


def which_children(sup: Any) -> list[tuple[Any, Any, Atom, list[str]]]:
    """List the children as ``[(id, child, type, modules)]``, in start order.

    ``child`` is the pid, ``Atom('restarting')`` or None (OTP's ``undefined``: not
    running); ``type`` is ``Atom('worker')`` or ``Atom('supervisor')``.
    """
    return _call(sup, ("which_children",))


def count_children(sup: Any) -> dict[str, int]:
    """``{'specs', 'active', 'supervisors', 'workers'}`` counts (OTP's proplist)."""
    return _call(sup, ("count_children",))


def start_child(sup: Any, spec: Any) -> Any:
    """Add a child (started at once, last in start order); return its pid or ``IGNORE``.

    Raises :class:`StartError` with ``('already_started', pid)`` or ``'already_present'``
    when the id is known, or with the start's failure reason (the spec is then not kept).
    """
    spec = as_child_spec(spec)
    ref = _otp.handoff(spec)
    try:
        res = _call(sup, ("start_child", ref))
    finally:
        _otp.take_handoff(ref)
    if res[0] == OK:
        return res[1]
    raise StartError(res[1])


def _op(sup: Any, op: str, id: Any) -> Any:
    res = _call(sup, (op, id))
    if res[0] == OK:
        return res[1]
    if op == "restart_child" and res[1] not in (NOT_FOUND, RUNNING, RESTARTING):
        raise StartError(res[1])
    raise SupervisorError(res[1])


def terminate_child(sup: Any, id: Any) -> None:
    """Stop the child ``id`` (by its shutdown); a temporary child is also forgotten.

    Raises :class:`SupervisorError` ``('not_found')`` for an unknown id.
    """
    _op(sup, "terminate_child", id)


def restart_child(sup: Any, id: Any) -> Any:
    """Start the stopped child ``id`` again; return its pid (or ``IGNORE``).

    Raises :class:`SupervisorError` with ``'running'``, ``'restarting'`` or
    ``'not_found'``, or :class:`StartError` if its start fails.
    """
    return _op(sup, "restart_child", id)


def delete_child(sup: Any, id: Any) -> None:
    """Forget the stopped child ``id``.

    Raises :class:`SupervisorError` with ``'running'``, ``'restarting'`` or
    ``'not_found'``.
    """
    _op(sup, "delete_child", id)


class Supervisor:
    """Base class of a supervisor in class form.

    Example::

        class AppSup(Supervisor):
            def init(self, url):
                return [child_spec("db", Db.start_link, args=(url,))], {
                    "strategy": "one_for_all", "intensity": 3, "period": 10.0}

        sup = AppSup.start_link("postgres://...", name="app_sup")

    ``init(*args)`` runs in the supervisor's process and returns ``(children, flags)``
    (flags: ``strategy``, ``intensity``, ``period``; OTP's defaults when left out) or
    ``IGNORE``; ``raise Stop(reason)`` fails the start.
    """

    def init(self, *args: Any) -> Any:
        """Return ``(children, flags)`` for this supervisor (override it)."""
        raise NotImplementedError(f"{type(self).__qualname__} must define init(self, ...)")

    @classmethod
    def start_link(cls, *args: Any, name: Any = None, timeout: float | None = None) -> Any:
        """Start this supervisor linked to the caller; return its pid (or ``IGNORE``)."""
        _check_sup_class(cls)
        name = _otp.check_name(name)
        return _gs.start_link(_Sup, "class", cls, args, name, name=name, timeout=timeout)

    @classmethod
    def start(cls, *args: Any, name: Any = None, timeout: float | None = None) -> Any:
        """Start this supervisor, not linked to the caller."""
        _check_sup_class(cls)
        name = _otp.check_name(name)
        return _gs.start(_Sup, "class", cls, args, name, name=name, timeout=timeout)

    @classmethod
    def child_spec(cls, *args: Any, **opts: Any) -> ChildSpec:
        """Return a spec that starts this supervisor under another.

        ``type='supervisor'``, ``shutdown='infinity'``; ``opts``: child_spec's fields and
        ``name``.
        """
        return _class_child_spec(cls, args, opts, "supervisor")


def _check_sup_class(cls: Any) -> None:
    # A module function: a method that names its own class is not compiled (see the
    # compiler's class wrapper for name mangling), so the check lives out here.
    if cls.init is Supervisor.init:
        raise TypeError(f"{cls.__qualname__} must define init(self, ...)")


_SPEC_FIELDS = ("id", "restart", "shutdown", "type", "modules")


def _class_child_spec(
    cls: Any, args: tuple[Any, ...], opts: dict[str, Any], kind: str
) -> ChildSpec:
    fields = {k: opts.pop(k) for k in _SPEC_FIELDS if k in opts}
    fields.setdefault("id", cls.__qualname__)
    fields.setdefault("type", kind)
    return child_spec(start=cls.start_link, args=args, kwargs=opts, **fields)


# --------------------------------------------------------------------------- dynamic


class _DynSup(GenServer):
    """The dynamic supervisor process (Elixir's DynamicSupervisor)."""

    def init(self, max_restarts: int, max_seconds: float, max_children: Any, name: Any) -> None:
        _native.process_flag("trap_exit", True)
        self.name = name if name is not None else self_pid()
        self.restarts = _Intensity(max_restarts, max_seconds)
        self.max_children = max_children
        self.by_pid: dict[Pid, _Child] = {}
        self.waiting: list[_Child] = []  # restarts to retry

    def _size(self) -> int:
        return len(self.by_pid) + len(self.waiting)

    def _start(self, child: _Child) -> tuple[Any, Any]:
        status, val = _start_spec(child.spec)
        if status == ERROR:
            _report(self.name, "start_error", val, child)
        elif val is not None:
            child.pid = val
            self.by_pid[val] = child
            _progress(self.name, child)
        return status, val

    def handle_call(self, request: Any, from_: Any) -> Any:
        op = request[0]
        if op == "start_child":
            spec = _otp.take_handoff(request[1])
            if spec is None:
                return (ERROR, Atom("no_spec"))
            if self.max_children is not None and self._size() >= self.max_children:
                return (ERROR, MAX_CHILDREN)
            status, val = self._start(_Child(spec))
            if status == ERROR:
                return (ERROR, val)
            return (OK, val if val is not None else IGNORE)
        if op == "terminate_child":
            child = self.by_pid.pop(request[1], None)
            if child is None:
                return (ERROR, NOT_FOUND)
            _terminate(child, self.name)
            return (OK, None)
        if op == "which_children":
            return [
                (UNDEFINED, c.pid, Atom(c.spec.type), c.spec.modules) for c in self.by_pid.values()
            ] + [(UNDEFINED, RESTARTING, Atom(c.spec.type), c.spec.modules) for c in self.waiting]
        if op == "count_children":
            return _count(list(self.by_pid.values()) + self.waiting)
        return (ERROR, (Atom("unknown_request"), op))

    def handle_info(self, msg: Any) -> Any:
        if type(msg) is tuple and len(msg) == 3 and msg[0] == EXIT:
            child = self.by_pid.pop(msg[1], None)
            if child is None:
                return None
            reason = msg[2]
            restart = child.spec.restart
            if restart == "permanent" or (
                restart == "transient" and not _otp.is_shutdown(reason)
            ):
                _report(self.name, "child_terminated", reason, child)
                self._restart(child)
            elif not _otp.is_shutdown(reason):
                _report(self.name, "child_terminated", reason, child)
            return None
        if type(msg) is tuple and len(msg) == 2 and msg[0] == TRY_AGAIN:
            if self.waiting:
                self._restart(self.waiting.pop(0))
            return None
        _unexpected("DynamicSupervisor", self.name, msg)
        return None

    def _restart(self, child: _Child) -> None:
        if not self.restarts.add():
            _report(self.name, "shutdown", Atom("reached_max_restart_intensity"), child)
            raise Stop(SHUTDOWN)
        child.pid = None
        status, _ = self._start(child)
        if status == ERROR:
            self.waiting.append(child)
            send(self_pid(), (TRY_AGAIN, None))

    def terminate(self, reason: Any) -> None:
        # All children at once (OTP's terminate_dynamic_children): shutdown signals to
        # all, then wait for each within its own shutdown time.
        kids = list(self.by_pid.values())
        self.by_pid.clear()
        refs = []
        for c in kids:
            pid = c.pid
            ref = monitor(pid)
            unlink(pid)
            got = receive((EXIT, pid, ANY), timeout=0, default=None)
            if got is not None:
                receive((DOWN, ref, ANY, ANY, ANY))
                if not _otp.is_shutdown(got[2]):
                    _report(self.name, "shutdown_error", got[2], c)
                continue
            _native.exit(pid, KILL if c.spec.shutdown == "brutal_kill" else SHUTDOWN)
            refs.append((c, ref))
        deadline = time.monotonic()
        for c, ref in refs:
            s = c.spec.shutdown
            t = None
            if type(s) is float:
                t = max(0.0, deadline + s - time.monotonic())
            got = receive((DOWN, ref, ANY, ANY, ANY), timeout=t, default=_TIMED_OUT)
            if got is _TIMED_OUT:
                _native.exit(c.pid, KILL)
                got = receive((DOWN, ref, ANY, ANY, ANY))
                _report(self.name, "shutdown_error", got[4], c)
                continue
            r = got[4]
            if s == "brutal_kill":
                ok = r == KILLED
            else:
                ok = _otp.is_shutdown(r)
            if not ok and not (r == NORMAL and c.spec.restart != "permanent"):
                _report(self.name, "shutdown_error", r, c)

    def __repr__(self) -> str:
        return f"<dynamic supervisor {self.name!r} children={len(self.by_pid)}>"


class DynamicSupervisor:
    """Start children on demand, each supervised on its own.

    Elixir's DynamicSupervisor, OTP's ``simple_one_for_one``::

        dyn = DynamicSupervisor.start_link(max_restarts=3, max_seconds=5.0, name="pool")
        pid = DynamicSupervisor.start_child("pool", Worker.child_spec(restart="temporary"))

    Defaults: 3 restarts in 5 seconds (Elixir's), no limit on children. Children may
    share an id. On shutdown all children are stopped at once, each within its own
    shutdown time.
    """

    @staticmethod
    def start_link(
        *,
        max_restarts: int = 3,
        max_seconds: float = 5.0,
        max_children: int | None = None,
        name: Any = None,
        timeout: float | None = None,
    ) -> Pid:
        """Start a dynamic supervisor linked to the caller; return its pid."""
        _check_flags("one_for_one", max_restarts, max_seconds)
        if max_children is not None and (
            isinstance(max_children, bool) or not isinstance(max_children, int) or max_children < 0
        ):
            raise ValueError(f"max_children must be None or an int >= 0, not {max_children!r}")
        name = _otp.check_name(name)
        return _gs.start_link(
            _DynSup, max_restarts, float(max_seconds), max_children, name,
            name=name, timeout=timeout,
        )

    @staticmethod
    def start_child(sup: Any, spec: Any) -> Any:
        """Start a child under ``sup``; return its pid (or ``IGNORE``).

        Raises :class:`StartError` with ``'max_children'`` or the start's reason.
        """
        spec = as_child_spec(spec)
        ref = _otp.handoff(spec)
        try:
            res = _call(sup, ("start_child", ref))
        finally:
            _otp.take_handoff(ref)
        if res[0] == OK:
            return res[1]
        raise StartError(res[1])

    @staticmethod
    def terminate_child(sup: Any, pid: Pid) -> None:
        """Stop the child ``pid``; :class:`SupervisorError` ``'not_found'`` if unknown."""
        res = _call(sup, ("terminate_child", pid))
        if res[0] != OK:
            raise SupervisorError(res[1])

    @staticmethod
    def which_children(sup: Any) -> list[tuple[Any, Any, Atom, list[str]]]:
        """List the children: ``[(None, pid | Atom('restarting'), type, modules)]``."""
        return _call(sup, ("which_children",))

    @staticmethod
    def count_children(sup: Any) -> dict[str, int]:
        """``{'specs', 'active', 'supervisors', 'workers'}`` counts."""
        return _call(sup, ("count_children",))
