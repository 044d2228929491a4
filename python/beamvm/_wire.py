"""Erlang values that Python has no type for, as they travel between nodes.

A Python process sees them when another node sends them (docs/distribution.md,
"Strings and types on the wire"); each can be sent back unchanged. Inside the VM they
are tagged tuples (``('$charlist', [...])``, ...), as ``str`` is ``('$str', b'...')``;
the atoms ``'$charlist'``, ``'$improper'``, ``'$fun'``, ``'$port'`` and ``'$bits'`` in
that position are reserved.

``ListKey`` and ``MapKey`` are the hashable forms of an Erlang list and map where
Python needs a hashable value: a map key, and anything inside one. They are plain
lists and maps in the VM and on the wire.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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
        # Through the key forms, so that equal lists hash equal whatever their reprs
        # (dicts in another order, 1 and 1.0), and lists and dicts inside are hashable.
        return hash(("improper", tuple(map(_freeze, self.elems)), _freeze(self.tail)))

    def __repr__(self) -> str:
        return f"ImproperList({self.elems!r}, {self.tail!r})"

    def __beamvm_term__(self) -> tuple[Any, ...]:
        return (_IMPROPER, self.elems, self.tail)


# Salts the hashes of the key forms, so that ListKey((1, 2)) and the tuple (1, 2) (in
# Erlang [1, 2] and {1, 2}, two keys) do not even share a hash.
_LIST_KEY_SALT = "beamvm.ListKey"
_MAP_KEY_SALT = "beamvm.MapKey"


def _sealed(k: Any) -> Any:
    """Return ``k`` (a new ListKey or MapKey) with its hash computed now and kept.

    Key forms are made inside out (a received key, or ``_freeze``), so each hash is
    computed from the kept hashes of the keys inside: hashing a key nested thousands
    deep recurses once, not once per level (which would reach Python's recursion
    limit). An element with no hash leaves it to ``hash()`` to raise later.
    """
    try:
        k.__dict__["_hash"] = k._compute_hash()
    except TypeError:
        pass
    return k


def _freeze(v: Any) -> Any:
    """``v`` with every list inside made a ListKey and every dict a MapKey (hashable)."""
    if isinstance(v, (ListKey, MapKey)):
        return v
    if isinstance(v, list):  # list, Charlist
        return ListKey(v)
    if isinstance(v, dict):
        return MapKey(v)
    if type(v) is tuple:
        return tuple(map(_freeze, v))
    return v


class _KeyForm(tuple):  # type: ignore[type-arg]
    """What :class:`ListKey` and :class:`MapKey` share.

    A hash kept from their making (see ``_sealed``), pickling by their items, and ``!=``
    as the negation of ``==``.
    """

    # No __slots__: a tuple subclass cannot have any, and the hash is kept in __dict__.

    def __reduce__(self) -> tuple[Any, ...]:
        # Not the kept hash: str hashes differ from one interpreter to the next.
        return (type(self), (tuple(self),))

    def _compute_hash(self) -> int:
        raise NotImplementedError

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        h = self.__dict__.get("_hash")
        return self._compute_hash() if h is None else h


class ListKey(_KeyForm):
    """An Erlang list used as a map key (or inside one): a hashable, immutable list.

    A Python ``dict`` cannot have a ``list`` key, so where Erlang sends a map whose key
    is a list (``#{[1, 2] => x}``) the Python process receives ``{ListKey([1, 2]): x}``.
    It is a ``tuple`` of the elements, each itself in key form (a list inside is a
    ``ListKey``, a map a :class:`MapKey`), and it goes back to Erlang as the proper list
    it came as, wherever it is put. ``[]`` and strings (``"abc"``) as keys arrive as
    ``ListKey`` too (``ListKey([])``, ``ListKey([97, 98, 99])``): Erlang has one term for
    each.

    It equals another ``ListKey`` or a ``list`` with equal elements, never a ``tuple``
    (Erlang's ``[1, 2]`` and ``{1, 2}`` are different keys); ``ListKey([1, [2]])``
    makes the inner list a ``ListKey`` too.
    """

    # Defining __eq__ would otherwise set __hash__ to None in this class.
    __hash__ = _KeyForm.__hash__

    def __new__(cls, items: Iterable[Any] = ()) -> ListKey:
        return _sealed(tuple.__new__(cls, map(_freeze, items)))  # type: ignore[no-any-return]

    def _compute_hash(self) -> int:
        return hash((_LIST_KEY_SALT, tuple(self)))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ListKey):
            return tuple.__eq__(self, other)
        if isinstance(other, list):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return False

    def __repr__(self) -> str:
        return f"ListKey({list(self)!r})"


class MapKey(_KeyForm):
    """An Erlang map used as a map key (or inside one): a hashable, immutable mapping.

    Where Erlang sends ``#{#{a => 1} => x}`` the Python process receives
    ``{MapKey({Atom('a'): 1}): x}``. It is a ``tuple`` of ``(key, value)`` pairs, keys
    unique, each key and value in key form (lists inside are :class:`ListKey`, maps
    ``MapKey``); one received keeps the map's order (Erlang's term order of its keys).
    ``.to_dict()`` gives a ``dict``. It goes back to Erlang as the map it came as,
    wherever it is put.

    Equality and hash do not depend on the order of the pairs: it equals another
    ``MapKey`` or a ``dict`` with the same items.
    """

    __hash__ = _KeyForm.__hash__  # as in ListKey

    def __new__(cls, items: Mapping[Any, Any] | Iterable[tuple[Any, Any]] = ()) -> MapKey:
        pairs = items.items() if isinstance(items, Mapping) else items
        d: dict[Any, Any] = {}
        for k, v in pairs:  # a repeated key: the last value wins, as in maps:from_list/1
            d[_freeze(k)] = _freeze(v)
        return _sealed(tuple.__new__(cls, d.items()))  # type: ignore[no-any-return]

    def _compute_hash(self) -> int:
        return hash((_MAP_KEY_SALT, frozenset(self)))

    def to_dict(self) -> dict[Any, Any]:
        """Return the pairs as a ``dict`` (keys and values stay in key form)."""
        return dict(self)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, MapKey):
            return len(self) == len(other) and dict(self) == dict(other)
        if isinstance(other, dict):
            return dict(self) == other
        return False

    def __repr__(self) -> str:
        return f"MapKey({dict(self)!r})"


def _list_key(items: tuple[Any, ...]) -> ListKey:
    """Return a ListKey of elements already in key form (for the native converter)."""
    return _sealed(tuple.__new__(ListKey, items))  # type: ignore[no-any-return]


def _map_key(pairs: tuple[tuple[Any, Any], ...]) -> MapKey:
    """Return a MapKey of pairs already in key form, keys unique (for the native converter)."""
    return _sealed(tuple.__new__(MapKey, pairs))  # type: ignore[no-any-return]


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
