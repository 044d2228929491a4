"""CPython's cyclic GC while a VM runs: full collections over recent objects only.

The problem. CPython has one heap for every process. Its full (generation 2) collection
traverses every tracked object -- a 3M-element list of lists costs hundreds of ms, a
3M-int list (one object, 3M items traversed) about 20 ms -- and runs whenever the objects
that survived young collections since the last one exceed 25% of the old generation. It
runs inside whichever slice allocates at that moment, so a process holding a large heap
makes every other process late, again and again (B8's figures; a ticker beside a 3M-item
heap: p99 20-30 ms, 0.1 ms with the GC off).

The policy (installed while a VM runs):

* After a full collection that found the heap (nearly) all alive, its survivors are
  frozen (``gc.freeze()``: moved to the permanent generation, which collections skip),
  and so are the survivors of each later full collection. Those traverse only what
  survived since, so their cost follows the allocation rate, not the heap size. A heap
  whose old objects keep dying in cycles (``FREEZE_BELOW_GARBAGE``) is left to CPython's
  own schedule: freezing it would only pile garbage up for longer whole-heap passes (the
  policy looks again after ``MAJOR_EVERY`` times that pass's duration, at least
  ``MAJOR_MIN_INTERVAL``, and leaves every collection alone until then).
* Frozen objects that later become cyclic garbage are not collected while frozen. So the
  policy unfreezes everything and lets the next full collection traverse the whole heap
  (a "major") once the objects frozen since the last major outnumber twice those it left
  alive (``MAJOR_GROWTH``: memory stays within about three times the live set), and now
  and then: no sooner than ``MAJOR_EVERY`` times the last major's duration after it
  (whole-heap collections then take at most ~0.5% of the time), and at least
  ``MAJOR_MIN_INTERVAL`` apart. A large heap that holds still therefore pauses the VM for
  one whole traversal every ``MAJOR_EVERY`` x that traversal's time (a 20 ms traversal:
  once every 4 s; 400 ms: once every 80 s) instead of at every 25% growth or promotion
  burst, and cyclic garbage that survived a full collection is reclaimed within that
  interval or at the next doubling, whichever comes first.
* When no VM runs, the permanent generation is handed back (``gc.unfreeze()``) at the
  next full collection, so plain Python code sees CPython's usual behaviour.

Collections still run where CPython triggers them (an allocation, inside some slice): a
young collection costs microseconds, a full one now costs in proportion to recent
survivors. The alternatives measured (docs/preemption.md, "The cyclic GC"): raising the
young threshold only spaces the same pauses out; disabling the GC and collecting between
slices moves the pause without shortening it.
"""

from __future__ import annotations

import gc
import time
from typing import Any

__all__ = [
    "FREEZE_BELOW_GARBAGE",
    "MAJOR_EVERY",
    "MAJOR_GROWTH",
    "MAJOR_MIN_INTERVAL",
    "install",
    "stats",
    "uninstall",
]

#: A major (whole-heap) collection happens no sooner than this many times the duration
#: of the previous one after it: whole-heap traversals take at most ~0.5% of the time.
MAJOR_EVERY = 200
#: Seconds between two majors at the least (a small heap's majors are cheap anyway).
MAJOR_MIN_INTERVAL = 1.0
#: A major also happens once the objects frozen since the last one outnumber this times
#: those it left alive: a heap that starts promoting objects which then die in cycles is
#: swept before it holds more than about three times its live set (and that major, finding
#: the garbage, stops the freezing). Lower values sweep a growing heap more often.
MAJOR_GROWTH = 2.0
#: Freeze only after a major that found less cyclic garbage than this fraction of what it
#: kept: a heap that is (nearly) all alive. Where old objects keep dying in cycles (B8's
#: allocator replaces its live set continuously), freezing would only delay them into
#: longer majors, so CPython's own schedule is kept.
FREEZE_BELOW_GARBAGE = 0.05

_clock = time.perf_counter


class _State:
    __slots__ = (
        "frozen",
        "major_pending",
        "last_major",
        "major_s",
        "heap",
        "since",
        "started",
        "majors",
        "freezes",
        "idle_until",
    )

    def __init__(self) -> None:
        self.frozen = False
        self.major_pending = False
        self.last_major = _clock()
        self.major_s = 0.0
        self.heap = 0  # objects the last major left alive
        self.since = 0  # objects frozen since the last major
        self.started = 0.0
        self.majors = 0
        self.freezes = 0
        self.idle_until = 0.0  # leave collections alone until then (garbage-heavy heap)


_state = _State()
_running: Any = None  # set by install(): whether a VM is running


def _callback(phase: str, info: dict[str, Any]) -> None:
    if info["generation"] != 2:
        return
    s = _state
    if phase == "start":
        s.started = _clock()
        return
    now = _clock()
    if not _running():
        if s.frozen:
            gc.unfreeze()
        s.frozen = s.major_pending = False
        s.since = s.heap = 0
        s.idle_until = 0.0
        return
    if now < s.idle_until:
        return  # a garbage-heavy heap: CPython's schedule, not even counted
    # After a full collection, generation 2 holds what it traversed and kept: the whole
    # heap after a major, only the recent survivors otherwise (counting them costs about
    # what collecting them did).
    survivors = len(gc.get_objects(2))
    if s.major_pending or not s.frozen:
        s.major_s = now - s.started
        s.last_major = now
        s.heap = survivors
        s.since = 0
        s.major_pending = False
        s.majors += 1
        if info["collected"] > survivors * FREEZE_BELOW_GARBAGE:
            # Old objects die in cycles here: freezing would only pile them up for a
            # longer major. Stay with CPython's schedule for a while (without counting
            # the heap after each collection), then look again.
            s.frozen = False
            s.idle_until = now + max(MAJOR_MIN_INTERVAL, MAJOR_EVERY * s.major_s)
            return
    else:
        s.since += survivors
        if s.since > s.heap * MAJOR_GROWTH or now - s.last_major >= max(
            MAJOR_MIN_INTERVAL, MAJOR_EVERY * s.major_s
        ):
            gc.unfreeze()  # the next full collection traverses everything
            s.frozen = False
            s.major_pending = True
            return
    gc.freeze()
    s.frozen = True
    s.freezes += 1


def install(running: Any) -> None:
    """Install the policy; ``running()`` says whether a VM runs (beamvm/__init__.py)."""
    global _running
    _running = running
    if _callback not in gc.callbacks:
        gc.callbacks.append(_callback)


def uninstall() -> None:
    """Remove the policy (CPython's own schedule; benches/gc_policy.py's "off")."""
    if _callback in gc.callbacks:
        gc.callbacks.remove(_callback)


def stats() -> dict[str, float]:
    """Majors run, freezes made, and the last major's duration (seconds)."""
    return {
        "majors": _state.majors,
        "freezes": _state.freezes,
        "last_major_s": _state.major_s,
        "frozen": float(_state.frozen),
    }
