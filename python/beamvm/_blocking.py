"""Blocking calls in process code: made process-aware where beamvm can, reported where not.

A scheduler thread runs many processes. A call that blocks the thread -- ``time.sleep``,
waiting on a ``threading`` lock, ``queue.Queue.get`` -- stops every process queued on it,
and two processes sharing a ``threading.Lock`` on one scheduler deadlock the VM (the
holder never runs again to release it). Compiled process code therefore calls:

* ``sleep_gen(seconds)`` instead of ``time.sleep(seconds)``: the process sleeps
  (``Request("sleep")``), its scheduler runs others. Bad arguments reach ``time.sleep``
  itself, so the errors are the usual ones.
* ``acquire_gen(method, ...)`` instead of ``lock.acquire(...)`` on a ``threading`` lock
  (``Lock``, ``RLock``; ``Condition``, ``Semaphore``, ``Event`` and ``queue.Queue`` wait
  through these, and their Python code is compiled when process code calls them): the
  lock is tried without blocking; if it is taken, the call is reported once per call
  site on the ``beamvm`` logger (naming the process and the user's call) and the process
  polls the lock, sleeping between tries, instead of blocking its scheduler thread.
  ``blocking`` and ``timeout`` keep their meaning.
* ``with_item(cm)`` for every ``with`` item: the same for a lock used as a context
  manager (returns a holder whose ``__exit__`` releases it); anything else is returned
  as it is.

Polling is a fallback that keeps the VM alive, not a good lock: ``RLock`` ownership is
per OS thread, so a process that holds one and is resumed on another scheduler thread
cannot release it. Use ``beamvm.sync`` (a lock and a queue built on messages) or run the
blocking call on a dirty pool (``beamvm.dirty_io(q.get)``).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Generator
from typing import Any

from . import _runtime

__all__ = [
    "LOCK_TYPES",
    "Wait",
    "acquire_for",
    "acquire_gen",
    "register_process_cm",
    "sleep_gen",
    "with_item",
]

log = logging.getLogger("beamvm")

#: ``threading`` lock types whose blocking acquire is made process-aware.
LOCK_TYPES: tuple[type, ...] = (type(threading.Lock()), type(threading.RLock()))
#: Python-level lock-like types used as context managers (their ``acquire`` waits on a
#: lock of ``LOCK_TYPES`` through compiled code, but ``with`` calls ``__enter__`` from C).
_CM_TYPES: tuple[type, ...] = (threading.Condition, threading.Semaphore)
try:
    LOCK_TYPES += (threading._PyRLock,)  # type: ignore[attr-defined]
except AttributeError:  # pragma: no cover
    pass

#: First and longest pause between two tries of a taken lock (seconds).
POLL_FIRST = 0.0001
POLL_MAX = 0.002

_time_sleep = time.sleep
_monotonic = time.monotonic
_reported: set[tuple[str, int]] = set()
_REPORT_LIMIT = 10_000

# Library files whose frames are skipped when naming the user's call.
_LIB_FILES = {os.path.normcase(os.path.abspath(p)) for p in (threading.__file__, __file__) if p}
try:
    import queue as _queue

    _LIB_FILES.add(os.path.normcase(os.path.abspath(_queue.__file__ or "")))
except ImportError:  # pragma: no cover
    pass


def sleep_gen(seconds: Any) -> Generator[Any, Any, None]:
    """``time.sleep`` in process code: suspend the process, not its scheduler thread."""
    if type(seconds) not in (int, float) or seconds < 0 or seconds != seconds:
        _time_sleep(seconds)  # the usual TypeError/ValueError
        return
    yield _runtime.Request("sleep", (seconds,))


def _user_site() -> tuple[str, str]:
    """(``file:line``, what the user called) for the innermost frame outside the libraries."""
    f = sys._getframe(2)
    lib_call = ""
    while f is not None:
        fn = os.path.normcase(os.path.abspath(f.f_code.co_filename))
        if fn not in _LIB_FILES and "beamvm" not in os.path.basename(os.path.dirname(fn)):
            return f"{f.f_code.co_filename}:{f.f_lineno}", lib_call
        if fn not in (os.path.normcase(os.path.abspath(__file__)),):
            mod = os.path.splitext(os.path.basename(fn))[0]
            lib_call = f"{mod}.{f.f_code.co_qualname}"
        f = f.f_back
    return "?", lib_call


def _report(lock: Any) -> None:
    site, via = _user_site()
    key = (site, id(type(lock)))
    if key in _reported:
        return
    if len(_reported) >= _REPORT_LIMIT:
        _reported.clear()
    _reported.add(key)
    try:
        from . import _native

        who = repr(_native.self_pid())
    except Exception:  # noqa: BLE001 -- outside a VM (a test driver)
        who = "a process"
    what = via or f"{type(lock).__module__}.{type(lock).__qualname__}.acquire"
    log.warning(
        "process %s waits on a threading lock (%s at %s): a blocked lock would stop its "
        "whole scheduler thread, so beamvm polls it instead; use beamvm.sync.Lock / "
        "beamvm.sync.Queue (built on messages) or beamvm.dirty_io(...) for blocking calls",
        who,
        what,
        site,
    )


def _poll(lock: Any, timeout: float) -> Generator[Any, Any, bool]:
    """Wait for ``lock`` by polling it, the process sleeping between tries."""
    _report(lock)
    deadline = None if timeout < 0 else _monotonic() + timeout
    pause = POLL_FIRST
    while True:
        if deadline is not None:
            left = deadline - _monotonic()
            if left <= 0:
                return lock.acquire(False)
            step = pause if pause < left else left
        else:
            step = pause
        yield _runtime.Request("sleep", (step,))
        if lock.acquire(False):
            return True
        pause = pause * 2 if pause < POLL_MAX else POLL_MAX


def acquire_gen(
    method: Any, blocking: bool = True, timeout: float = -1
) -> Generator[Any, Any, bool]:
    """``lock.acquire(blocking, timeout)`` in process code (``method`` is the bound acquire)."""
    lock = method.__self__
    if lock.acquire(False):
        return True
    if not blocking:
        return False
    if timeout is not None and timeout != -1 and timeout < 0:
        return method(blocking, timeout)  # the usual ValueError
    return (yield from _poll(lock, -1 if timeout is None else timeout))


class _Held:
    """A lock acquired for a ``with`` block: the block's ``__exit__`` releases it."""

    __slots__ = ("lock",)

    def __init__(self, lock: Any) -> None:
        self.lock = lock

    def __enter__(self) -> bool:
        return True

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


def _with_lock(cm: Any) -> Generator[Any, Any, _Held]:
    if not cm.acquire(False):
        yield from _poll(cm, -1)
    return _Held(cm)


class Wait:
    """A ``with`` item the compiled frame runs with ``yield from`` before entering the block.

    A distinct type, so that no user object is mistaken for one.
    """

    __slots__ = ("gen",)

    def __init__(self, gen: Generator[Any, Any, Any]) -> None:
        self.gen = gen

    def __iter__(self) -> Generator[Any, Any, Any]:
        return self.gen


#: type -> (name of its acquire method, name of its release-without-waiting method)
_PROCESS_CMS: dict[type, tuple[str, str]] = {}


def register_process_cm(t: type, acquire: str, release: str) -> None:
    """Make ``with x:`` in process code, for ``x`` of type ``t``, wait as a process.

    The with statement calls ``__enter__`` from C, where a process cannot suspend; for a
    registered type the compiled ``with`` runs ``x.<acquire>()`` compiled (a suspension
    point) and ends the block with ``x.<release>()``, which must not wait.
    """
    _PROCESS_CMS[t] = (acquire, release)


class _Entered:
    """A process-aware context manager entered by the compiled ``with``."""

    __slots__ = ("cm", "release", "value")

    def __init__(self, cm: Any, release: str, value: Any) -> None:
        self.cm, self.release, self.value = cm, release, value

    def __enter__(self) -> Any:
        return self.value

    def __exit__(self, *exc: object) -> None:
        getattr(self.cm, self.release)()


def _enter_process_cm(cm: Any, acquire: str, release: str) -> Generator[Any, Any, _Entered]:
    from ._compiler import compile_function

    value = yield from compile_function(getattr(type(cm), acquire))(cm)
    return _Entered(cm, release, value)


def with_item(cm: Any) -> Any:
    """Return the context manager a compiled ``with`` uses for ``cm``.

    That is ``cm`` itself, or for a lock a ``Wait`` that acquires it (waiting as
    ``acquire_gen`` does) and returns a holder whose ``__exit__`` releases it.
    """
    t = type(cm)
    if t in LOCK_TYPES or isinstance(cm, _CM_TYPES):
        return Wait(_with_lock(cm))
    if t in _PROCESS_CMS:
        return Wait(_enter_process_cm(cm, *_PROCESS_CMS[t]))
    return cm


def acquire_for(f: Any) -> Any:
    """Return what a compiled call site calls for the bound builtin ``f`` named ``acquire``."""
    if type(getattr(f, "__self__", None)) in LOCK_TYPES:
        return _bind(acquire_gen, f)
    return f


def _bind(fn: Any, first: Any) -> Any:
    import types

    return types.MethodType(fn, first)
