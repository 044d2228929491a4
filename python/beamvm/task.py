"""Tasks: run a function in its own process and collect its result (Elixir's Task).

::

    from beamvm import task

    t = task.async_(fetch, url)          # linked to the caller, and monitored
    body = task.await_(t, timeout=5.0)    # its return value

    for ok, page in task.async_stream(fetch, urls, max_concurrency=8):
        ...

Semantics, as Elixir's:

* :func:`async_` links the task to the caller: if the task crashes, the caller gets the
  exit signal (and dies with the same reason unless it traps exits). Its result is sent
  to the caller through an alias, so a result that arrives after the caller gave up is
  dropped by the VM.
* :func:`await_` returns the result, or raises :class:`beamvm.CallError` with
  ``.reason`` ``(reason, ('task', 'await', [pid, timeout]))`` -- ``reason`` the task's
  exit reason (when the caller traps exits and so survives the crash), or ``'timeout'``
  (the task keeps running; its late result is dropped). When the task raised a Python
  exception, that exception is the CallError's ``__cause__``.
* :func:`yield_` waits without failing: ``('ok', result)``, ``('exit', reason)`` or
  None on timeout (the task keeps running; yield again later).
* :func:`shutdown` stops a task (exit ``shutdown``, then kill after its timeout) and
  returns what :func:`yield_` would have if it finished first.
* :class:`Supervisor` (Elixir's Task.Supervisor) runs tasks under a supervisor;
  ``async_nolink`` tasks are monitored, not linked: a crash shows in ``await_``/``yield_``
  instead of killing the caller.

A result may be any Python object: one with no term form is handed over by reference.
All functions must be called from a process (the owner of the task).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from beamvm import _native, _otp
from beamvm._native import Atom, Pid, Ref, demonitor, monitor, self_pid, send, unlink
from beamvm._otp import DOWN, KILL, OK, SHUTDOWN, TIMEOUT, CallError
from beamvm.supervisor import DynamicSupervisor, child_spec

from beamvm import ANY, receive  # isort: skip -- the package's receive (compiled fast path)

__all__ = [
    "Supervisor",
    "Task",
    "async_",
    "async_stream",
    "await_",
    "shutdown",
    "yield_",
]

#: Seconds ``await_`` and ``async_stream`` wait by default (Elixir's 5000 ms).
DEFAULT_TIMEOUT = 5.0

EXIT_ = Atom("exit")
OBJ = Atom("$obj")
TASK = Atom("task")
AWAIT = Atom("await")
_TIMED_OUT: Any = object()

#: The Python exception a task died of, by task ref (taken by the owner, or dropped
#: when the owner never looks: bounded by the tasks in flight).
_RAISED: dict[Any, BaseException] = {}


class Task:
    """A running task: its ``pid``, the monitor ``ref`` and its ``owner``."""

    __slots__ = ("pid", "ref", "owner")

    def __init__(self, pid: Pid, ref: Ref, owner: Pid) -> None:
        self.pid = pid
        self.ref = ref
        self.owner = owner

    def __repr__(self) -> str:
        return f"Task(pid={self.pid!r}, ref={self.ref!r})"


def _run(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Run a task: learn the reply ref, run ``fn``, send the result to it."""
    ref = receive((Atom("$task_ref"), Ref))[1]
    try:
        result = fn(*args, **kwargs)
    except Exception as e:
        _RAISED[ref] = e
        raise
    try:
        _native.roundtrip(result)
        msg = (ref, (OK, result))
    except (TypeError, ValueError):  # no term form: hand it over by reference
        msg = (ref, (OBJ, _otp.handoff(result)))
    send(ref, msg)


def _check_owner(t: Any, what: str) -> Task:
    if not isinstance(t, Task):
        raise TypeError(f"task.{what} needs a Task (from task.async_), not {t!r}")
    if t.owner != self_pid():
        raise ValueError(f"task.{what}: {t!r} is owned by {t.owner!r}, not by this process")
    return t


def _start(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], link: bool) -> Task:
    if not callable(fn):
        raise TypeError(f"a task runs a callable, not {fn!r}")
    me = self_pid()
    pid = _native.spawn_opt(_run, (fn, args, kwargs), link=link)
    ref = monitor(pid, alias="demonitor")
    send(pid, (Atom("$task_ref"), ref))
    return Task(pid, ref, me)


def async_(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Task:
    """Run ``fn(*args, **kwargs)`` in a new process linked to and monitored by the caller.

    Collect the result with :func:`await_` or :func:`yield_`.
    """
    return _start(fn, args, kwargs, True)


def _result(t: Task, got: Any) -> tuple[Any, Any]:
    """('ok', value) for a reply, ('exit', reason) for a DOWN."""
    if len(got) == 2:
        demonitor(t.ref, True)
        _RAISED.pop(t.ref, None)
        kind, value = got[1]
        if kind == OBJ:
            value = _otp.take_handoff(value)
        return OK, value
    return EXIT_, got[4]


def await_(t: Task, timeout: float | None = DEFAULT_TIMEOUT) -> Any:
    """Wait for the task's result (see the module docs for failures)."""
    _check_owner(t, "await_")
    tt = _otp.check_timeout(timeout)
    got = receive((t.ref, ANY), (DOWN, t.ref, ANY, ANY, ANY), timeout=tt, default=_TIMED_OUT)
    if got is _TIMED_OUT:
        demonitor(t.ref, True)
        got = receive((t.ref, ANY), timeout=0, default=_TIMED_OUT)
        if got is _TIMED_OUT:
            raise CallError((TIMEOUT, (TASK, AWAIT, [t.pid, _otp.timeout_term(tt)])))
    kind, value = _result(t, got)
    if kind == OK:
        return value
    cause = _RAISED.pop(t.ref, None)
    raise CallError((value, (TASK, AWAIT, [t.pid, _otp.timeout_term(tt)]))) from cause


def yield_(t: Task, timeout: float | None = DEFAULT_TIMEOUT) -> tuple[Any, Any] | None:
    """Wait up to ``timeout`` for the task without failing.

    Returns ``('ok', result)``, ``('exit', reason)``, or None if the task is still
    running (it keeps running; ask again).
    """
    _check_owner(t, "yield_")
    tt = _otp.check_timeout(timeout)
    got = receive((t.ref, ANY), (DOWN, t.ref, ANY, ANY, ANY), timeout=tt, default=_TIMED_OUT)
    if got is _TIMED_OUT:
        return None
    kind, value = _result(t, got)
    if kind == EXIT_:
        _RAISED.pop(t.ref, None)
    return kind, value


def shutdown(t: Task, timeout: float | str = DEFAULT_TIMEOUT) -> tuple[Any, Any] | None:
    """Stop the task: exit ``shutdown``, then kill after ``timeout`` seconds.

    ``'brutal_kill'`` kills at once. Returns ``('ok', result)`` if it finished first,
    ``('exit', reason)`` if it died of something else, or None.
    """
    _check_owner(t, "shutdown")
    if timeout != "brutal_kill":
        timeout = _otp.check_timeout(timeout)  # type: ignore[assignment]
    unlink(t.pid)
    _native.exit(t.pid, KILL if timeout == "brutal_kill" else SHUTDOWN)
    t_wait = None if timeout == "brutal_kill" else timeout
    got = receive((t.ref, ANY), (DOWN, t.ref, ANY, ANY, ANY), timeout=t_wait, default=_TIMED_OUT)
    if got is _TIMED_OUT:
        _native.exit(t.pid, KILL)
        got = receive((t.ref, ANY), (DOWN, t.ref, ANY, ANY, ANY))
    if len(got) == 2:  # the result came first; its DOWN follows
        out = _result(t, got)
        return out
    _RAISED.pop(t.ref, None)
    reason = got[4]
    if reason in (SHUTDOWN, Atom("killed")):
        # It may have replied just before dying: the reply precedes the DOWN.
        late = receive((t.ref, ANY), timeout=0, default=_TIMED_OUT)
        if late is not _TIMED_OUT:
            return _result(t, late)
        return None
    return EXIT_, reason


def async_stream(
    fn: Callable[[Any], Any],
    items: Iterable[Any],
    max_concurrency: int | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    on_timeout: str = "exit",
) -> list[tuple[Any, Any]]:
    """Run ``fn(item)`` for each item in its own task; return the results in item order.

    At most ``max_concurrency`` (default: the CPU count) tasks run at once; the result
    is ``[('ok', result), ...]``.

    Each task gets ``timeout`` seconds from when it starts; past it ``on_timeout='exit'``
    (default) raises :class:`CallError` (as :func:`await_` would) after stopping the
    tasks still running, ``'kill_task'`` kills that task and puts ``('exit',
    'timeout')`` in its place. Tasks are linked to the caller. The result is a list
    (built as the tasks finish): beamvm cannot suspend a process inside a generator.
    """
    if max_concurrency is None:
        max_concurrency = os.cpu_count() or 1
    if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int):
        raise TypeError(f"max_concurrency must be an int >= 1, not {max_concurrency!r}")
    if max_concurrency < 1:
        raise ValueError(f"max_concurrency must be >= 1, not {max_concurrency!r}")
    if on_timeout not in ("exit", "kill_task"):
        raise ValueError(f"on_timeout must be 'exit' or 'kill_task', not {on_timeout!r}")
    tt = _otp.check_timeout(timeout)
    pending = list(items)
    results: list[Any] = [None] * len(pending)
    running: list[tuple[int, Task]] = []
    nxt = 0
    while nxt < len(pending) or running:
        while nxt < len(pending) and len(running) < max_concurrency:
            running.append((nxt, async_(fn, pending[nxt])))
            nxt += 1
        i, t = running.pop(0)
        out = yield_(t, tt)
        if out is None:
            if on_timeout == "exit":
                for _, other in running:
                    shutdown(other, "brutal_kill")
                shutdown(t, "brutal_kill")
                raise CallError((TIMEOUT, (TASK, AWAIT, [t.pid, _otp.timeout_term(tt)])))
            shutdown(t, "brutal_kill")
            out = (EXIT_, TIMEOUT)
        results[i] = out
    return results


class Supervisor:
    """Elixir's Task.Supervisor: tasks as temporary children of a supervisor."""

    @staticmethod
    def start_link(*, name: Any = None, max_children: int | None = None) -> Pid:
        """Start a task supervisor linked to the caller (a DynamicSupervisor)."""
        return DynamicSupervisor.start_link(
            name=name, max_children=max_children, max_restarts=3, max_seconds=5.0
        )

    @staticmethod
    def child_spec(*, id: Any = "task_supervisor", name: Any = None) -> Any:
        """Return a spec that runs a task supervisor under another supervisor."""
        return child_spec(
            id, DynamicSupervisor.start_link, kwargs={"name": name}, type="supervisor"
        )

    @staticmethod
    def async_nolink(sup: Any, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Task:
        """Run ``fn(*args, **kwargs)`` as a child of ``sup``, monitored by the caller.

        Not linked: its crash shows in :func:`await_`/:func:`yield_` only.
        """
        if not callable(fn):
            raise TypeError(f"a task runs a callable, not {fn!r}")
        spec = child_spec(
            "task", _spawn_task_child, args=(fn, args, kwargs), restart="temporary",
            shutdown="brutal_kill",
        )
        pid = DynamicSupervisor.start_child(sup, spec)
        ref = monitor(pid, alias="demonitor")
        send(pid, (Atom("$task_ref"), ref))
        return Task(pid, ref, self_pid())

    @staticmethod
    def start_child(sup: Any, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Pid:
        """Run ``fn(*args, **kwargs)`` under ``sup``, fire and forget."""
        if not callable(fn):
            raise TypeError(f"a task runs a callable, not {fn!r}")
        spec = child_spec(
            "task", _native.spawn_link, args=(fn, *args), kwargs=kwargs,
            restart="temporary", shutdown="brutal_kill",
        )
        return DynamicSupervisor.start_child(sup, spec)


def _spawn_task_child(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Pid:
    """Start a task supervisor's child: the task process, linked to the supervisor."""
    return _native.spawn_link(_run, fn, args, kwargs)
