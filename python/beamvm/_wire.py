"""Erlang values that Python has no type for, as they travel between nodes.

A Python process sees them when another node sends them (docs/distribution.md,
"Strings and types on the wire"); each can be sent back unchanged. Inside the VM they
are tagged tuples (``('$charlist', [...])``, ...), as ``str`` is ``('$str', b'...')``;
the atoms ``'$charlist'``, ``'$improper'``, ``'$fun'``, ``'$port'`` and ``'$bits'`` in
that position are reserved.
"""

from __future__ import annotations

from typing import Any

from beamvm._native import Atom

_CHARLIST = Atom("$charlist")
_IMPROPER = Atom("$improper")
_FUN = Atom("$fun")
_PORT = Atom("$port")
_BITS = Atom("$bits")


class Charlist(list):  # type: ignore[type-arg]
    """A list of small integers that Erlang sent as a string (STRING_EXT).

    Kept apart from ``str``: ``Charlist("abc")`` is ``[97, 98, 99]`` and goes back to
    Erlang as the string ``"abc"``; ``.text()`` decodes it as Latin-1.
    """

    def __init__(self, items: Any = ()) -> None:
        if isinstance(items, str):
            items = [ord(c) for c in items]
        super().__init__(items)

    def text(self) -> str:
        """Return the characters, as Erlang's ``io_lib`` prints the string."""
        return "".join(map(chr, self))

    def __repr__(self) -> str:
        return f"Charlist({list.__repr__(self)})"

    def __beamvm_term__(self) -> tuple[Any, ...]:
        return (_CHARLIST, list(self))


class ImproperList:
    """An Erlang list whose tail is not ``[]``: ``[1, 2 | tail]``."""

    __slots__ = ("elems", "tail")

    def __init__(self, elems: list[Any], tail: Any) -> None:
        if not elems:
            raise ValueError("an improper list needs at least one element")
        if isinstance(tail, list):
            raise ValueError("the tail of an ImproperList must not be a list")
        self.elems = list(elems)
        self.tail = tail

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ImproperList)
            and self.elems == other.elems
            and self.tail == other.tail
        )

    def __hash__(self) -> int:
        return hash(("improper", tuple(map(repr, self.elems)), repr(self.tail)))

    def __repr__(self) -> str:
        return f"ImproperList({self.elems!r}, {self.tail!r})"

    def __beamvm_term__(self) -> tuple[Any, ...]:
        return (_IMPROPER, self.elems, self.tail)


class _Opaque:
    """A value kept as the exact bytes (external term format) it arrived as."""

    __slots__ = ("etf",)
    _tag: Atom

    def __init__(self, etf: bytes) -> None:
        self.etf = bytes(etf)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.etf == other.etf  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.etf))

    def __beamvm_term__(self) -> tuple[Any, ...]:
        return (self._tag, self.etf)


class Fun(_Opaque):
    """A fun of another node: opaque, never callable here, sent back as it came."""

    __slots__ = ()
    _tag = _FUN

    def __repr__(self) -> str:
        return f"Fun(<{len(self.etf)} bytes>)"


class Port(_Opaque):
    """A port of another node: opaque, sent back as it came."""

    __slots__ = ()
    _tag = _PORT

    def __repr__(self) -> str:
        return f"Port(<{len(self.etf)} bytes>)"


class BitString:
    """A binary whose last byte holds only ``bits`` bits (1..8)."""

    __slots__ = ("bits", "data")

    def __init__(self, data: bytes, bits: int) -> None:
        if not 1 <= bits <= 8 or not data:
            raise ValueError("a BitString needs data and 1..8 bits in its last byte")
        self.data = bytes(data)
        self.bits = bits

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BitString) and (self.data, self.bits) == (other.data, other.bits)

    def __hash__(self) -> int:
        return hash((self.data, self.bits))

    def __repr__(self) -> str:
        return f"BitString({self.data!r}, {self.bits})"

    def __beamvm_term__(self) -> tuple[Any, ...]:
        return (_BITS, self.data, self.bits)


def _from_term(tag: Any, a: Any, b: Any = None) -> Any:
    """Return the Python value of a tagged tuple (called by the native converter)."""
    if tag == _CHARLIST:
        return Charlist(a)
    if tag == _IMPROPER:
        return ImproperList(a, b)
    if tag == _FUN:
        return Fun(a)
    if tag == _PORT:
        return Port(a)
    return BitString(a, b)
