"""Code imported by the preemption forms (benches/pylibs/forms.py): a separate module, as a
user's library would be."""

from __future__ import annotations


def count_to(n: int) -> int:
    """A plain loop in another module."""
    i = 0
    while i < n:
        i += 1
    return i


class Accumulator:
    """A class from another module whose method loops."""

    def __init__(self) -> None:
        self.total = 0

    def add_range(self, n: int) -> int:
        for i in range(n):
            self.total += i
        return self.total
