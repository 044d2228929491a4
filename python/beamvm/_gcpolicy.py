"""CPython's cyclic GC while a VM runs: full collections over recent objects only.

The problem. CPython has one heap for every process. Its full (generation 2) collection
traverses every tracked object -- a 3M-element list of lists costs hundreds of ms, a
3M-int list (one object, 3M items traversed) about 15-20 ms -- and runs whenever the
objects that survived young collections since the last one exceed 25% of the old
generation. It runs inside whichever slice allocates at that moment, so a process holding
a large heap makes every other process late, again and again (B8's figures; a ticker
beside a 3M-int list and a process allocating records that live a while: a full
collection every ~30 ms, each traversing the list, p99 15-30 ms).

The policy (installed while a VM runs):

* After a full collection that found the heap (nearly) all alive, its survivors are
  frozen (``gc.freeze()``: moved to the permanent generation, which collections skip),
  and so are the survivors of each later full collection. Those traverse only what
  survived since, so their cost follows the allocation rate, not the heap size. A heap
  whose old objects keep dying in cycles (``FREEZE_BELOW_GARBAGE``) is left to CPython's
  own schedule: freezing it would only pile garbage up for longer whole-heap passes (the
  policy looks again after ``MAJOR_EVERY`` times that pass's duration, at least
  ``MAJOR_MIN_INTERVAL``, and leaves every collection alone until then).
* A full collection that would traverse what young collections took more than
  ``SKIP_ABOVE`` to traverse since the last one -- a large container they just moved
  into generation 2, a burst of survivors -- freezes it first, unexamined, instead of
  traversing it a third time (see ``_skip``). So does the first full collection after
  the heap was handed back (a VM started), which would otherwise be a whole-heap pass.
* Frozen objects that later become cyclic garbage are not collected while frozen. So the
  policy unfreezes everything and lets the next full collection traverse the whole heap
  (a "major") once the frozen heap has outgrown three times what the last major left
  (``MAJOR_GROWTH``): objects frozen since are counted, and when they outnumber twice
  the live set, the policy looks at what is still there -- it counts the permanent
  generation's objects (one walk) up to a live set of ``WALK_BELOW`` objects, and above
  that compares the small-object memory blocks in use with what the last major left
  (freed objects give theirs back, frozen garbage keeps them) -- so that records which
  lived through a full collection and were then freed by their reference count do not
  start majors. The frozen heap stays within about three times what the last major left
  (in objects, or in blocks). And now and then: no sooner than ``MAJOR_EVERY`` times
  the expected major duration (the last one's, plus the largest container frozen
  unexamined since) after it (whole-heap collections then take at most ~0.2% of the
  time), and at least ``MAJOR_MIN_INTERVAL`` apart. A large heap that holds still
  therefore pauses the VM for one whole traversal every ``MAJOR_EVERY`` x that
  traversal's time (a 15 ms traversal: once every 7.5 s; 400 ms: once every 200 s)
  instead of at every 25% growth or promotion burst, and cyclic garbage that survived a
  young collection is reclaimed within that interval or at the next tripling, whichever
  comes first.
* When no VM runs, the permanent generation is handed back (``gc.unfreeze()``) at the
  next full collection, so plain Python code sees CPython's usual behaviour.

Collections still run where CPython triggers them (an allocation, inside some slice): a
young collection costs microseconds (but traverses a new large container: ~10-35 ms for
3M items, twice, in the slice of the process that made it), a full one now costs in
proportion to recent survivors. The alternatives measured (docs/preemption.md, "The
cyclic GC"): raising the young threshold only spaces the same pauses out; disabling the
GC and collecting between slices moves the pause without shortening it; freezing at VM
start, and freezing at every full collection's start, are discussed there.
"""

from __future__ import annotations

import gc
import sys
import time
from typing import Any

__all__ = [
    "FREEZE_BELOW_GARBAGE",
    "MAJOR_EVERY",
    "MAJOR_GROWTH",
    "MAJOR_MIN_INTERVAL",
    "SKIP_ABOVE",
    "WALK_BELOW",
    "install",
    "stats",
    "uninstall",
]

#: A major (whole-heap) collection happens no sooner than this many times its expected
#: duration (the previous one's, plus the largest container frozen unexamined since) after
#: the previous one: whole-heap traversals take at most ~0.2% of the time. Memory is
#: bounded by MAJOR_GROWTH; this only bounds how long frozen cyclic garbage waits.
MAJOR_EVERY = 500
#: Seconds between two majors at the least (a small heap's majors are cheap anyway).
MAJOR_MIN_INTERVAL = 1.0
#: A major also happens once the frozen heap has grown by this times what the last one
#: left: the objects frozen since outnumber this times those it left alive, and the
#: small-object memory in use has grown by as much (the count alone also takes in objects
#: freed since by their reference count). A heap that starts promoting objects which then
#: die in cycles is swept before it holds more than about three times its live set (and
#: that major, finding the garbage, stops the freezing). Lower values sweep a growing heap
#: more often.
MAJOR_GROWTH = 2.0
#: A full collection that would traverse, besides the frozen heap, what young collections
#: took longer than this (seconds) to traverse freezes it first instead: a 3M-item list
#: the young collections moved into generation 2 is not traversed a third time inside
#: some process's slice. Cheaper ones still run, reclaiming recent cyclic garbage.
SKIP_ABOVE = 0.005
#: Up to this many objects left alive by the last major, the growth rule counts the
#: permanent generation's objects (exact, ~8 ns an object); above, it compares the
#: small-object memory blocks in use (a pass over the allocator's pools, ~0.4 ms for
#: 300 MB, but blocks also hold numbers and strings: a heap of 3M ints would let 2x3M
#: blocks of frozen garbage pile up before a major).
WALK_BELOW = 200_000
#: Freeze only after a major that found less cyclic garbage than this fraction of what it
#: kept: a heap that is (nearly) all alive. Where old objects keep dying in cycles (B8's
#: allocator replaces its live set continuously), freezing would only delay them into
#: longer majors, so CPython's own schedule is kept.
FREEZE_BELOW_GARBAGE = 0.05

_clock = time.perf_counter


class _State:
    __slots__ = (
        "frozen",
        "fresh",
        "major_pending",
        "last_major",
        "major_s",
        "heap",
        "since",
        "started",
        "majors",
        "freezes",
        "idle_until",
        "young_started",
        "cost1",
        "cost2",
        "skipped",
        "skips",
        "blocks",
        "checks",
    )

    def __init__(self) -> None:
        self.frozen = False
        self.fresh = True  # no major (nor skip) since the heap was last handed back
        self.major_pending = False
        self.last_major = _clock()
        self.major_s = 0.0
        self.heap = 0  # objects the last major left alive
        self.since = 0  # objects frozen since the last major (an upper bound)
        self.started = 0.0
        self.majors = 0
        self.freezes = 0
        self.idle_until = 0.0  # leave collections alone until then (garbage-heavy heap)
        self.young_started = 0.0
        # What a full collection would traverse besides the frozen heap, in seconds of
        # the young collections that moved it there: generation 1's contents (the
        # generation-0 collections since the last generation-1 one) and generation 2's
        # (the generation-1 collections since the last full one).
        self.cost1 = 0.0
        self.cost2 = 0.0
        # The longest of those predictions among the skips since the last major: a major
        # traverses that container again. (Not their sum: young collections that spend
        # their time freeing cyclic garbage also predict long ones, again and again, and
        # a sum would put the time rule off for good.)
        self.skipped = 0.0
        self.skips = 0
        self.blocks = 0  # small-object memory blocks the last major left in use
        self.checks = 0


_state = _State()
_running: Any = None  # set by install(): whether a VM is running


def _callback(phase: str, info: dict[str, Any]) -> None:
    s = _state
    gen = info["generation"]
    if gen != 2:
        # Young collections: their duration predicts what the next full collection would
        # traverse again (a young collection of a 3M-item list takes ~10-35 ms).
        if phase == "start":
            s.young_started = _clock()
        elif gen == 0:
            s.cost1 += _clock() - s.young_started
        else:
            s.cost2 += _clock() - s.young_started
            s.cost1 = 0.0
        return
    if phase == "start":
        s.started = _clock()
        predicted = s.cost1 + s.cost2
        s.cost1 = s.cost2 = 0.0
        if predicted > SKIP_ABOVE and (s.frozen or s.fresh) and not s.major_pending and _running():
            _skip(s, predicted)
        return
    now = _clock()
    if not _running():
        if s.frozen:
            gc.unfreeze()
        s.frozen = s.major_pending = False
        s.fresh = True
        s.since = s.heap = 0
        s.idle_until = 0.0
        return
    if now < s.idle_until:
        return  # a garbage-heavy heap: CPython's schedule, not even counted
    # After a full collection, generation 2 holds what it traversed and kept: the whole
    # heap after a major, only the recent survivors otherwise (counting them costs about
    # what collecting them did), nothing after a skip.
    survivors = len(gc.get_objects(2))
    if s.major_pending or not s.frozen:
        s.major_s = now - s.started
        s.last_major = now
        s.heap = survivors
        s.blocks = sys.getallocatedblocks()
        s.since = 0
        s.skipped = 0.0
        s.major_pending = s.fresh = False
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
        # A major now costs what the last one did plus the largest container frozen
        # unexamined since.
        due = now - s.last_major >= max(MAJOR_MIN_INTERVAL, MAJOR_EVERY * (s.major_s + s.skipped))
        if not due and s.since > s.heap * MAJOR_GROWTH:
            # `since` counts every object frozen since the last major, also those their
            # reference count has freed since (records that live a while): before paying
            # for a major, look at what is still there.
            if s.heap <= WALK_BELOW:
                # Count the permanent generation's objects (one walk of it, ~8 ns an
                # object: under ~2 ms here).
                s.since = max(gc.get_freeze_count() + survivors - s.heap, 0)
            else:
                # Too long a walk (25 ms for 3M objects): compare the small-object blocks
                # in use with what the last major left instead (a pass over the
                # allocator's pools, ~0.4 ms for 300 MB). Freed objects give their blocks
                # back, frozen garbage keeps them.
                grown = sys.getallocatedblocks() / max(s.blocks, 1) - 1.0
                s.since = int(s.heap * max(grown, 0.0))
            s.checks += 1
            due = s.since > s.heap * MAJOR_GROWTH
        if due:
            gc.unfreeze()  # the next full collection traverses everything
            s.frozen = False
            s.major_pending = True
            return
    gc.freeze()
    s.frozen = True
    s.freezes += 1


def _skip(s: _State, predicted: float) -> None:
    """Freeze, at a full collection's start, what it would traverse (see SKIP_ABOVE).

    What survived young collections since the last full collection took them longer than
    SKIP_ABOVE to traverse: a large container, or a burst of survivors. It has survived
    two young collections; rather than traverse it again inside whichever slice allocates
    now, it is frozen unexamined (``gc.freeze()`` in a ``gc.callbacks`` start phase:
    CPython merges the young generations into the collected one after the callbacks, so
    the collection then traverses nothing; checked on 3.11, 3.12 and 3.13). A major
    examines it later: it counts towards the growth that triggers one, its cost towards
    the next one's interval.
    """
    if s.frozen:
        s.since += sum(len(gc.get_objects(g)) for g in range(3))
        gc.freeze()
    else:
        # The first full collection since the heap was handed back (a VM started) would
        # be a major over the whole heap, that container included: freeze everything
        # unexamined instead, and count it (one walk, no traversal) as the live set.
        gc.freeze()
        s.heap = gc.get_freeze_count()
        s.blocks = sys.getallocatedblocks()
        s.since = 0
        s.last_major = s.started  # the time rule counts from here
        s.major_s = 0.0
        s.skipped = 0.0
        s.frozen = True
        s.fresh = False
    s.skipped = max(s.skipped, predicted)
    s.skips += 1


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
    """Majors run, freezes, skipped full collections, growth checks, last major's duration."""
    return {
        "majors": _state.majors,
        "freezes": _state.freezes,
        "last_major_s": _state.major_s,
        "frozen": float(_state.frozen),
        "skips": _state.skips,
        "checks": _state.checks,
    }
