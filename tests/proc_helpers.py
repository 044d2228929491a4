"""Process bodies shared by several test files (they need source to be compiled)."""

from __future__ import annotations

import time

import beamvm
from beamvm import send


def ticker(parent, period, duration):
    """Wake every ``period`` seconds for ``duration``; send back each wake-up's lateness."""
    start = time.monotonic()
    late = []
    k = 1
    while k * period <= duration:
        target = start + k * period
        now = time.monotonic()
        if now < target:
            beamvm.sleep(target - now)
            now = time.monotonic()
        late.append(now - target)
        k += 1
    send(parent, ("ticks", late))


def p99(late):
    """Nearest-rank 99th percentile."""
    late = sorted(late)
    return late[max(int(len(late) * 0.99) - 1, 0)]
