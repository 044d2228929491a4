"""The Python half of the scheduler protocol: budget cell, PREEMPT, requests, primitives, kill.

The native scheduler drives a Python process as a generator (see ``_compiler.compile_process``)
and interprets what it yields:

* ``PREEMPT`` -- the reduction budget of this slice is spent: requeue the process and later
  resume it with ``gen.send(None)``.
* a ``Request`` -- a blocking VM operation made by a primitive (``receive``, ``sleep``, ...):
  resume with ``gen.send(result)`` or fail it with ``gen.throw(exc)``.
* ``StopIteration`` -- the process returned; its value is ``exc.value``. Any other exception
  ends the process with that exception as exit reason.

Reductions. A budget cell is a list ``[remaining, kill_state, slice_start]``, at the
indices ``REMAINING``, ``KILL_STATE`` and ``SLICE_START`` defined here once: the code
generator (``_astgen``) and the native driver (crates/vm-python/src/driver/budget.rs, handed
them by ``_native._setup``) index the cell by these names, never by numbers. Each process
should own one (``new_cell()``); before every resume the driver calls ``enter(cell, n)`` on the
thread that resumes, which points this thread's ``_TL.b`` at the cell and grants ``n``
reductions; after the generator yields or finishes, ``used(cell)`` is what the slice
consumed. Compiled code fetches the cell from ``_TL.b`` once per call (at entry) and keeps
it for the life of the frame, together with a frame-local copy of ``remaining`` that it
decrements at entry and at every loop back-edge (1.5-2x cheaper than writing a shared
cell); it publishes the count to the cell before calling compiled code and yielding, and
when it returns or raises, and re-reads it after each resume. Because the cell belongs to
the process, frames resumed on another scheduler thread keep counting into the right cell,
and processes interleaved on different threads (GIL switch interval, C code releasing the
GIL, free-threaded builds) never count into each other's budget. A single-threaded driver
may skip ``new_cell``/``enter`` and use ``set_budget(n)``/``used()``, which act on the current
thread's default cell (shared by every process resumed on that thread, which is fine there).

Kill. ``kill(gen)`` throws ``ProcessKilled`` (a ``BaseException``, so ``except Exception``
does not swallow it) into the generator with the cell in kill mode: budget checks never yield
while a kill unwinds, so ``finally`` blocks and ``__exit__`` methods run to completion. A
cleanup that keeps running past ``KILL_GRACE_SLICES`` slices gets ``ProcessKilled`` raised again
at each later budget check. Never use ``gen.close()``: it raises ``GeneratorExit`` and rejects
the yield that a budget check in cleanup code would make.

This module imports nothing from the native extension and must stay cheap to import.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Generator
from typing import Any

__all__ = [
    "DEFAULT_BUDGET",
    "KILL_GRACE_SLICES",
    "KILL_SLICE",
    "PREEMPT",
    "ProcessKilled",
    "Request",
    "budget_cell",
    "enter",
    "is_primitive",
    "kill",
    "new_cell",
    "primitive",
    "primitive_impl",
    "register_primitive",
    "remaining",
    "set_budget",
    "used",
]

#: Reductions a thread's cell holds before any ``set_budget`` (Erlang gives a process 4000).
DEFAULT_BUDGET = 4000
#: Reductions granted per budget check while a kill unwinds (cleanup code is not preempted),
#: so that ``finally`` blocks and ``__exit__`` methods with loops have room to run.
KILL_SLICE = 100_000
#: How many KILL_SLICE refills -- or time slices, whichever ends first: the native timer
#: flags a cleanup that runs past its time like any slice -- cleanup code may use before
#: ProcessKilled is raised again at every check. So a kill lands within a slice or two
#: (a few ms) even in code that catches ``BaseException`` in a loop (the BEAM's kill gives
#: no grace at all).
KILL_GRACE_SLICES = 2


class _Preempt:
    """Type of the ``PREEMPT`` singleton."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "beamvm.PREEMPT"

    def __reduce__(self) -> str:
        return "PREEMPT"


#: Yielded by compiled code when the slice's reduction budget is spent.
PREEMPT = _Preempt()


class Request:
    """A blocking operation a primitive asks the scheduler to perform.

    ``kind`` is a short string (``"receive"``, ``"sleep"``, ...); ``args`` is a tuple whose
    meaning depends on the kind. The driver answers with ``gen.send(result)`` or
    ``gen.throw(exc)``.
    """

    __slots__ = ("kind", "args")

    def __init__(self, kind: str, args: tuple[Any, ...] = ()) -> None:
        self.kind = kind
        self.args = args

    def __repr__(self) -> str:
        return f"Request({self.kind!r}, {self.args!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Request):
            return NotImplemented
        return self.kind == other.kind and self.args == other.args

    def __hash__(self) -> int:
        return hash((self.kind, self.args))


class ProcessKilled(BaseException):
    """Thrown into a process's generator to kill it; ``finally`` and ``with`` exits run."""


# --------------------------------------------------------------------------- budget cell


#: The budget cell's layout (the module docs): the only place its indices are written.
#: Reductions left in the slice, as last published by compiled code.
REMAINING = 0
#: 0 normal, > 0 kill grace slices left, -1 grace exhausted.
KILL_STATE = 1
#: The reductions granted to the slice (plus resume grants): ``used`` subtracts from it.
SLICE_START = 2
#: The cell's length.
CELL_LEN = 3


class _ThreadCells(threading.local):
    def __init__(self) -> None:
        self.b = new_cell()


def new_cell(budget: int = DEFAULT_BUDGET) -> list[int]:
    """Return a fresh budget cell ``[remaining, kill_state, slice_start]`` for one process."""
    cell = [0] * CELL_LEN
    cell[REMAINING] = cell[SLICE_START] = budget
    return cell


#: Per-thread pointer to the running process's cell; compiled code reads ``_TL.b``.
_TL = _ThreadCells()


def enter(cell: list[int], n: int) -> None:
    """Make ``cell`` this thread's current cell and grant it ``n`` (>= 1) reductions.

    Call on the scheduler thread right before resuming the process that owns ``cell``.
    """
    cell[REMAINING] = cell[SLICE_START] = n if n > 0 else 1
    _TL.b = cell


def budget_cell() -> list[int]:
    """Return this thread's current budget cell."""
    return _TL.b


def set_budget(n: int) -> None:
    """Grant ``n`` (>= 1) reductions to this thread's current cell (single-threaded drivers)."""
    b = _TL.b
    b[REMAINING] = b[SLICE_START] = n if n > 0 else 1


def remaining(cell: list[int] | None = None) -> int:
    """Reductions left in the slice (as last published by compiled code)."""
    return (cell if cell is not None else _TL.b)[REMAINING]


def used(cell: list[int] | None = None) -> int:
    """Reductions consumed since the last ``enter``/``set_budget`` (default: this thread's)."""
    b = cell if cell is not None else _TL.b
    r = b[REMAINING]
    return b[SLICE_START] - (r if r > 0 else 0)


def _never(first_check: bool = False) -> bool:
    return False


def resumed_noop() -> None:
    """Stand-in for the native ``_resumed`` until the binding installs it."""


#: Set by the native binding: clears the yield-now flag and says whether the calling
#: thread's slice has run past its time (crates/vm-python/src/timeslice.rs).
overdue: Callable[..., bool] = _never
#: Set by the native binding: whether the calling thread's slice is still within the
#: time its resume cost (timeslice.rs's ``_resume_grace``).
resume_grace: Callable[[], bool] = _never
#: Reductions granted at a time to a slice in its resume grace.
RESUME_GRANT = 1000


def _refill(b: list[int]) -> int:
    """Slow path of a budget check; returns the frame's new count, or 0 to yield now.

    Compiled code calls it with its count published in ``b[REMAINING]`` when the count ran out
    or the yield-now flag was raised (then the count may still be positive). Outside a
    kill: 0 when the reductions are spent or the slice has run past its time, else the
    count unchanged. During a kill nothing yields: the cleanup gets ``KILL_SLICE``
    reductions at a time, ``KILL_GRACE_SLICES`` times in all (a slice past its time
    counts as one), and after that ``ProcessKilled`` is raised at every check.
    """
    n = b[REMAINING]
    state = b[KILL_STATE]
    if not state:
        if n > 0:
            # b[SLICE_START] - n == 1: this is the slice's first budget check (see _overdue).
            return 0 if overdue(b[SLICE_START] - n <= 1) else n
        if resume_grace():
            # Resuming this slice took longer than a look (a deep chain of frames): it
            # runs until its time is up, not until its reductions are (see
            # timeslice.rs's _resumed), or deep recursion would cost O(depth^2). The
            # grant is added to the slice's budget so the reductions used stay exact.
            b[SLICE_START] += RESUME_GRANT
            b[REMAINING] = n + RESUME_GRANT
            return b[REMAINING]
        return 0
    if state > 0:
        if n > 0 and not overdue():
            return n
        state -= 1
        if state:
            b[KILL_STATE] = state
            b[REMAINING] = KILL_SLICE
            return KILL_SLICE
        b[KILL_STATE] = -1
    # Grace exhausted: the count stays at 0, so every later check raises again (frames
    # that catch the exception take the cell's count when their handler starts).
    b[REMAINING] = 0
    raise ProcessKilled("cleanup ran past the kill grace budget")


def kill(
    gen: Generator[Any, Any, Any],
    exc: BaseException | None = None,
    handle: Callable[[Request], Any] | None = None,
    cell: list[int] | None = None,
) -> BaseException | None:
    """Kill a process generator: throw ``exc`` (default ``ProcessKilled()``) and unwind it.

    Budget checks do not yield while the kill unwinds. A ``Request`` yielded by cleanup code
    is answered with ``handle(request)`` when a handler is given, otherwise it fails with
    ``ProcessKilled``. Returns the exception the generator finished with, or ``None`` if the
    cleanup code swallowed the kill and returned normally. ``cell`` is the process's budget
    cell (default: this thread's current cell); it becomes this thread's current cell.
    """
    if exc is None:
        exc = ProcessKilled()
    prev = _TL.b
    b = cell if cell is not None else prev
    _TL.b = b
    saved = b[:]
    b[REMAINING] = KILL_SLICE
    b[KILL_STATE] = KILL_GRACE_SLICES
    try:
        out = gen.throw(exc)
        while True:
            if handle is not None and isinstance(out, Request):
                try:
                    reply = handle(out)
                except BaseException as e:  # noqa: BLE001 -- forwarded into the process
                    out = gen.throw(e)
                    continue
                out = gen.send(reply)
            else:
                out = gen.throw(ProcessKilled())
    except StopIteration:
        return None
    except BaseException as e:  # noqa: BLE001 -- the process's final exception
        return e
    finally:
        b[:] = saved
        _TL.b = prev


# --------------------------------------------------------------------------- primitives

_PRIMITIVES: dict[Callable[..., Any], Callable[..., Generator[Any, Any, Any]]] = {}
_REGISTER_HOOKS: list[Callable[[Callable[..., Any]], None]] = []


def in_process() -> bool:
    """Whether the calling thread runs a beamvm process right now.

    Asks the native binding, imported here rather than at module level so that this
    module stays importable (and cheap to import) without it; without it, no thread ever
    runs a process.
    """
    try:
        from beamvm import _native
    except ImportError:
        return False
    return _native.in_process_()

#: Set by ``beamvm.aio``: the process body for a coroutine function, ``(fn, args, kwargs)
#: -> generator`` (``spawn(async_fn)`` runs the coroutine on the event loop, see aio.py).
async_process: Callable[..., Generator[Any, Any, Any]] | None = None


def _outside_process(name: str) -> RuntimeError:
    if in_process():
        return RuntimeError(
            f"{name}() was called from code beamvm does not compile (a lambda, a list/set/"
            "dict comprehension, a generator expression, or a plain call from C code), so it "
            "cannot suspend the process there: call it from a def's own body, e.g. replace "
            "the comprehension with a for loop"
        )
    return RuntimeError(
        f"{name}() must be called inside a beamvm process "
        "(spawned with beamvm.spawn or run by beamvm.run)"
    )


def register_primitive(
    plain: Callable[..., Any], impl: Callable[..., Generator[Any, Any, Any]]
) -> None:
    """Make calls to ``plain`` from compiled process code run ``yield from impl(...)``.

    ``plain`` must be a Python function (the object user code calls, e.g. ``beamvm.receive``);
    ``impl`` is a generator function taking the same arguments that yields ``Request`` objects
    and returns the primitive's result.
    """
    import types

    if not isinstance(plain, types.FunctionType):
        raise TypeError("a primitive's public function must be a Python function (def)")
    _PRIMITIVES[plain] = impl
    for hook in _REGISTER_HOOKS:
        hook(plain)


def primitive(
    impl: Callable[..., Generator[Any, Any, Any]],
) -> Callable[..., Any]:
    """Turn a generator implementation into a public primitive (use as a decorator).

    Returns a plain function with ``impl``'s name, signature and docstring. Called from a
    process (compiled code) it runs ``impl`` as a suspension point; called anywhere else it
    raises ``RuntimeError`` saying it must run inside a beamvm process.
    """
    name = getattr(impl, "__name__", "primitive")

    @functools.wraps(impl)
    def plain(*args: Any, **kwargs: Any) -> Any:
        raise _outside_process(name)

    register_primitive(plain, impl)
    return plain


def is_primitive(fn: object) -> bool:
    """Whether ``fn`` is a registered primitive's public function."""
    try:
        return fn in _PRIMITIVES
    except TypeError:
        return False


def primitive_impl(fn: Callable[..., Any]) -> Callable[..., Generator[Any, Any, Any]] | None:
    """Return the generator implementation registered for ``fn``, or ``None``."""
    try:
        return _PRIMITIVES.get(fn)
    except TypeError:
        return None
