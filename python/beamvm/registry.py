"""Process registries with unique or duplicate keys (Elixir's Registry).

::

    from beamvm import registry

    registry.start_link(keys="unique", name="workers")      # usually under a supervisor
    registry.register("workers", ("user", 42), value={"since": now})   # the caller's entry
    registry.lookup("workers", ("user", 42))                 # -> [(pid, value)]

    # as a name for gen_server / supervisor starts, calls, casts and sends:
    name = registry.via("workers", ("user", 42))             # ('via', 'beamvm.registry', ...)
    Worker.start_link(name=name)
    gen_server.call(name, "ping")

A registry is a process that owns its table. Registering and unregistering are calls to
it (it monitors every registered process); lookups read the table directly, without a
message. Entries of a process vanish when it dies (and lookups never return a dead
process, even in the moment before the registry has seen the death). ``keys="unique"``:
one process per key -- :func:`register` raises :class:`RegistryError` with
``('already_registered', pid)`` for a key held by another live process.
``keys="duplicate"``: any number of processes per key (a pub/sub topic: see
:func:`dispatch`). Keys and values may be any hashable / any Python object.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from beamvm import _native, _otp
from beamvm import gen_server as _gs
from beamvm._native import Atom, Pid, demonitor, monitor, self_pid
from beamvm._otp import DOWN, ERROR, OK, _ReasonError
from beamvm.gen_server import GenServer

__all__ = [
    "RegistryError",
    "count",
    "dispatch",
    "keys",
    "lookup",
    "register",
    "register_name",
    "send",
    "start_link",
    "unregister",
    "unregister_name",
    "via",
    "whereis_name",
]

#: The via module name: ``('via', VIA_NAME, (registry, key))``.
VIA_NAME = "beamvm.registry"
ALREADY_REGISTERED = Atom("already_registered")


class RegistryError(_ReasonError):
    """A registry refused an operation (``.reason``: ``('already_registered', pid)``)."""


class _Table:
    """A registry's entries: written by its process only, read by anyone."""

    __slots__ = ("owner", "unique", "by_key", "by_pid")

    def __init__(self, owner: Pid, unique: bool) -> None:
        self.owner = owner
        self.unique = unique
        self.by_key: dict[Any, dict[Pid, Any]] = {}  # key -> {pid: value}
        self.by_pid: dict[Pid, dict[Any, Any]] = {}  # pid -> {key: monitor ref}


#: Registry name -> its table (the registry process publishes it in init).
_TABLES: dict[Any, _Table] = {}


def _table(reg: Any) -> _Table:
    t = _TABLES.get(reg)
    if t is None or not _native.is_alive(t.owner):
        raise ValueError(f"no registry named {reg!r} is running (start it with start_link)")
    return t


class _Registry(GenServer):
    def init(self, name: Any, unique: bool) -> None:
        self.name = name
        self.t = _Table(self_pid(), unique)
        _TABLES[name] = self.t

    def handle_call(self, request: Any, from_: Any) -> Any:
        op, ref = request
        payload = _otp.take_handoff(ref)
        if payload is None:
            return (ERROR, Atom("no_request"))
        if op == "register":
            return self._register(*payload)
        if op == "unregister":
            self._unregister(*payload)
            return (OK, None)
        return (ERROR, (Atom("unknown_request"), op))

    def _register(self, pid: Pid, key: Any, value: Any) -> Any:
        t = self.t
        holders = t.by_key.get(key)
        if t.unique and holders:
            for other in holders:
                if other != pid:
                    return (ERROR, (ALREADY_REGISTERED, other))
        if not _native.is_alive(pid):
            return (OK, None)  # dead already: nothing to register (it would vanish)
        mine = t.by_pid.get(pid)
        if mine is None:
            mine = t.by_pid[pid] = {}
            mine[_MONITOR] = monitor(pid)
        if holders is None:
            holders = t.by_key[key] = {}
        if t.unique and pid in holders:
            return (ERROR, (ALREADY_REGISTERED, pid))
        holders[pid] = value
        mine[key] = True
        return (OK, None)

    def _unregister(self, pid: Pid, key: Any) -> None:
        t = self.t
        holders = t.by_key.get(key)
        if holders is not None:
            holders.pop(pid, None)
            if not holders:
                del t.by_key[key]
        mine = t.by_pid.get(pid)
        if mine is not None:
            mine.pop(key, None)
            if len(mine) == 1:  # only the monitor is left
                demonitor(mine[_MONITOR], True)
                del t.by_pid[pid]

    def handle_info(self, msg: Any) -> Any:
        if type(msg) is tuple and len(msg) == 5 and msg[0] == DOWN:
            t = self.t
            pid = msg[3]
            mine = t.by_pid.pop(pid, None)
            if mine is not None:
                for key in mine:
                    if key is _MONITOR:
                        continue
                    holders = t.by_key.get(key)
                    if holders is not None:
                        holders.pop(pid, None)
                        if not holders:
                            del t.by_key[key]
        return None

    def terminate(self, reason: Any) -> None:
        if _TABLES.get(self.name) is self.t:
            del _TABLES[self.name]

    def __repr__(self) -> str:
        return f"<registry {self.name!r}: {len(self.t.by_key)} keys>"


class _MonitorKey:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<monitor>"


_MONITOR = _MonitorKey()


def start_link(*, keys: str, name: Any) -> Pid:
    """Start a registry linked to the caller.

    ``name``: a str or Atom (also registered as its process name); ``keys``:
    ``'unique'`` or ``'duplicate'``.
    """
    if keys not in ("unique", "duplicate"):
        raise ValueError(f"keys must be 'unique' or 'duplicate', not {keys!r}")
    if not isinstance(name, str | Atom):
        raise TypeError(f"a registry's name must be a str or Atom, not {name!r}")
    return _gs.start_link(_Registry, name, keys == "unique", name=name)


def child_spec(*, keys: str, name: Any, id: Any = None) -> Any:
    """Return a spec that runs a registry under a supervisor."""
    from beamvm.supervisor import child_spec as spec

    return spec(id if id is not None else name, _start_kw, args=(keys, name))


def _start_kw(keys: str, name: Any) -> Pid:
    return start_link(keys=keys, name=name)


def _request(reg: Any, op: str, payload: tuple[Any, ...]) -> Any:
    t = _table(reg)
    ref = _otp.handoff(payload)
    try:
        res = _gs.call(t.owner, (op, ref), None)
    finally:
        _otp.take_handoff(ref)
    if res[0] != OK:
        raise RegistryError(res[1])
    return res[1]


def register(reg: Any, key: Any, value: Any = None) -> None:
    """Register the calling process under ``key`` with ``value``.

    Raises :class:`RegistryError` ``('already_registered', pid)`` when a unique key is
    held by a live process (the caller itself included).
    """
    hash(key)
    _request(reg, "register", (self_pid(), key, value))


def unregister(reg: Any, key: Any) -> None:
    """Remove the calling process's entries under ``key`` (nothing if none)."""
    _request(reg, "unregister", (self_pid(), key))


def lookup(reg: Any, key: Any) -> list[tuple[Pid, Any]]:
    """``[(pid, value)]`` of the live processes registered under ``key``."""
    holders = _table(reg).by_key.get(key)
    if not holders:
        return []
    out = []
    for pid, value in list(holders.items()):
        if _native.is_alive(pid):
            out.append((pid, value))
    return out


def keys(reg: Any, pid: Pid) -> list[Any]:
    """Return the keys ``pid`` is registered under."""
    mine = _table(reg).by_pid.get(pid)
    if not mine:
        return []
    out = []
    for k in list(mine):
        if k is not _MONITOR:
            out.append(k)
    return out


def count(reg: Any) -> int:
    """Return the number of entries (key, pid) in the registry."""
    n = 0
    for holders in list(_table(reg).by_key.values()):
        n += len(holders)
    return n


def dispatch(reg: Any, key: Any, fn: Callable[[list[tuple[Pid, Any]]], Any]) -> None:
    """Call ``fn(entries)`` with the live entries under ``key`` (if any), in the caller."""
    entries = lookup(reg, key)
    if entries:
        fn(entries)


def via(reg: Any, key: Any) -> tuple[str, str, tuple[Any, Any]]:
    """Return a via name for starts, calls, casts and sends.

    ``('via', 'beamvm.registry', (reg, key))``; needs a ``unique`` registry.
    """
    return ("via", VIA_NAME, (reg, key))


# --------------------------------------------------------------------------- via protocol


def register_name(name: tuple[Any, Any], pid: Pid) -> bool:
    """Via protocol: register ``pid`` under ``(reg, key)``; False if the key is taken."""
    reg, key = name
    try:
        _request(reg, "register", (pid, key, None))
    except RegistryError:
        return False
    return True


def unregister_name(name: tuple[Any, Any]) -> None:
    """Via protocol: remove every entry under ``(reg, key)``."""
    reg, key = name
    for pid, _ in lookup(reg, key):
        _request(reg, "unregister", (pid, key))


def whereis_name(name: tuple[Any, Any]) -> Pid | None:
    """Via protocol: the live process under ``(reg, key)`` (unique registries)."""
    reg, key = name
    t = _TABLES.get(reg)
    if t is None:
        return None
    holders = t.by_key.get(key)
    if not holders:
        return None
    for pid in list(holders):
        if _native.is_alive(pid):
            return pid
    return None


def send(name: tuple[Any, Any], msg: Any) -> None:
    """Via protocol: send ``msg`` to the process under ``(reg, key)``.

    Raises ``BadArg`` if there is none (as sending to an unregistered name).
    """
    pid = whereis_name(name)
    if pid is None:
        raise _native.BadArg(f"no process is registered under {name!r}")
    _native.send(pid, msg)


import sys as _sys  # noqa: E402 -- the module registers itself as a via module

_otp.register_via(VIA_NAME, _sys.modules[__name__])
