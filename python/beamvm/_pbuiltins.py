"""Preemptible versions of builtins that call back into Python (``key=`` functions).

``sorted(data, key=f)`` runs ``f`` from C: nothing in it can be preempted. Compiled process
code calls these instead (docs/preemption.md, "What the compiler does"). They are ordinary
Python functions that beamvm's compiler compiles like user code, so their loops have budget
checks and their calls of ``key`` run ``key``'s compiled form. Each keeps the builtin's
results, order of calls and stability:

* ``sorted``/``list.sort``: ``key`` is called once per item, in order (as the builtin
  does), then the items are sorted by an index permutation whose comparisons are the
  builtin's (``sorted(range(n), key=keys.__getitem__)``: stable, same ``reverse``).
* ``min``/``max``: the first extreme item wins, as in the builtin.

When ``key`` is ``None`` or itself a builtin they call the builtin at once (one C call).
The builtins are reached through aliases (``_sorted``...) so that these calls are never
rewritten again.
"""

from __future__ import annotations

import types
from typing import Any

_sorted = sorted
_min = min
_max = max
_list = list
_range = range
_len = len
_NATIVE = (
    types.BuiltinFunctionType,
    types.MethodWrapperType,
    types.WrapperDescriptorType,
    types.MethodDescriptorType,
    type,
)
_MISSING: Any = object()


def _is_native(key: Any) -> bool:
    return key is None or isinstance(key, _NATIVE)


def sorted_(iterable, /, *, key=None, reverse=False):  # noqa: ANN001, ANN201
    """``sorted(iterable, key=key, reverse=reverse)``, calling a Python ``key`` preemptibly."""
    if _is_native(key):
        return _sorted(iterable, key=key, reverse=reverse)
    items = _list(iterable)
    keys = []
    for item in items:
        keys.append(key(item))
    order = _sorted(_range(_len(items)), key=keys.__getitem__, reverse=reverse)
    out = []
    for i in order:
        out.append(items[i])
    return out


def list_sort(lst, /, *, key=None, reverse=False):  # noqa: ANN001, ANN201
    """``lst.sort(key=key, reverse=reverse)`` for a list, calling a Python ``key`` preemptibly."""
    if _is_native(key):
        return _list.sort(lst, key=key, reverse=reverse)
    lst[:] = sorted_(lst, key=key, reverse=reverse)
    return None


def _extreme(name, greater, iterable, key, default):  # noqa: ANN001, ANN202
    first = True
    best = best_key = None
    for item in iterable:
        k = key(item)
        if first:
            best, best_key, first = item, k, False
        elif (k > best_key) if greater else (k < best_key):
            best, best_key = item, k
    if first:
        if default is _MISSING:
            return (_max if greater else _min)(())  # the builtin's own "empty" error
        return default
    return best


def min_(iterable, /, *, key=None, default=_MISSING):  # noqa: ANN001, ANN201
    """``min(iterable, key=key[, default=...])``, calling a Python ``key`` preemptibly."""
    if _is_native(key):
        if default is _MISSING:
            return _min(iterable, key=key)
        return _min(iterable, key=key, default=default)
    return _extreme("min", False, iterable, key, default)


def max_(iterable, /, *, key=None, default=_MISSING):  # noqa: ANN001, ANN201
    """``max(iterable, key=key[, default=...])``, calling a Python ``key`` preemptibly."""
    if _is_native(key):
        if default is _MISSING:
            return _max(iterable, key=key)
        return _max(iterable, key=key, default=default)
    return _extreme("max", True, iterable, key, default)
