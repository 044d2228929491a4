"""OTP's ``sys`` for GenServers: suspend, resume, code change, state and statistics.

```python
from beamvm import code, sys as bsys
bsys.suspend(pid)                            # calls made meanwhile wait in its queue
code.load(myapp.counter)                     # the new version of the module
bsys.change_code(pid, "myapp.counter", "1", None)   # new_class.code_change(state, ...)
bsys.resume(pid)                             # the waiting calls are answered by new code
bsys.get_state(pid); bsys.replace_state(pid, fn)
bsys.statistics(pid, True); bsys.statistics(pid)  # collecting costs every message: opt in
```

Each function is a system message to the server (``('system', (caller, ref), request)``,
as OTP's ``{system, From, Request}``) answered like a call: it runs in a process, waits
up to ``timeout`` seconds, and raises :class:`beamvm.CallError` with the reason when the
server is gone (``noproc`` or its exit reason) or does not answer in time
(``timeout``). A suspended server takes only system messages (and its parent's exit
signal, when it traps exits) until it is resumed; everything else stays queued, in
order, and is handled after :func:`resume` -- by the new code if the module was loaded
meanwhile.

State objects travel by reference inside the interpreter (processes share it):
:func:`get_state` returns a deep copy of the server's state (the instance), and
:func:`replace_state` runs ``fn(state)`` *in the server* and makes its return value (or
the state itself when it returns None) the new state.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from beamvm import _native, _otp
from beamvm._native import Atom, Pid, Ref

__all__ = ["change_code", "get_state", "replace_state", "resume", "statistics", "suspend"]

SUSPEND = Atom("suspend")
RESUME = Atom("resume")
GET_STATE = Atom("get_state")
REPLACE_STATE = Atom("replace_state")
CHANGE_CODE = Atom("change_code")
STATISTICS = Atom("statistics")
NO_STATISTICS = Atom("no_statistics")

#: Objects handed between a caller and a server (they share the interpreter): ref -> obj.
_PASS: dict[Ref, Any] = {}


def _call(server: Any, req: Any, timeout: float | None) -> Any:
    from beamvm import gen_server

    if not _native.in_process_():
        raise RuntimeError(
            "beamvm.sys functions must be called inside a beamvm process (spawned with "
            "beamvm.spawn or run by beamvm.run)"
        )
    _otp.check_server(server)
    pid = server if type(server) is Pid else _otp.whereis(server)
    if pid is None:
        raise _otp.CallError(_otp.NOPROC)
    if pid == _native.self_pid():
        raise _otp.CallError(Atom("calling_self"))
    me = _native.self_pid()
    mref = _native.monitor(pid, alias="demonitor")
    _native.send(pid, (gen_server.SYSTEM, (me, mref), req))
    try:
        got = gen_server.receive_response(gen_server.RequestId(mref, server), timeout)
    except _otp.CallError as e:
        r = e.reason  # (why, server) from receive_response: the why, as the other calls
        raise _otp.CallError(r[0] if type(r) is tuple and len(r) == 2 else r) from None
    if type(got) is tuple and len(got) == 2 and got[0] == _otp.ERROR:
        raise _otp.CallError(got[1])
    return got


def _take(ref: Ref) -> Any:
    return _PASS.pop(ref, None)


def suspend(server: Any, timeout: float | None = 5.0) -> None:
    """Suspend ``server``: until :func:`resume` it handles only system messages."""
    _call(server, SUSPEND, timeout)


def resume(server: Any, timeout: float | None = 5.0) -> None:
    """Resume a suspended ``server``: it handles its queued messages in order."""
    _call(server, RESUME, timeout)


def get_state(server: Any, timeout: float | None = 5.0) -> Any:
    """Return a deep copy of ``server``'s state (the GenServer instance)."""
    got = _call(server, GET_STATE, timeout)
    return _take(got[1])


def replace_state(server: Any, fn: Any, timeout: float | None = 5.0) -> Any:
    """Run ``fn(state)`` in ``server``: its result (None: the state itself) is the new state.

    Returns a deep copy of the new state; a crash in ``fn`` leaves the state as
    it was and raises :class:`beamvm.CallError`.
    """
    if not callable(fn):
        raise TypeError(f"replace_state takes a function of the state, not {fn!r}")
    ref = _native.make_ref()
    _PASS[ref] = fn
    try:
        got = _call(server, (REPLACE_STATE, ref), timeout)
    finally:
        _PASS.pop(ref, None)
    return _take(got[1])


def change_code(
    server: Any, module: Any, old_vsn: Any, extra: Any, timeout: float | None = 5.0
) -> None:
    """Move ``server``'s state to its class's current version, then run ``code_change``.

    OTP's ``sys:change_code``: the new class's ``code_change(old_vsn, extra)`` runs on
    the state.

    Only for a server whose class is defined in ``module`` (a module or its name);
    others are left as they are. Suspend the server first so that no message is handled
    half-way through the change. A crash in ``code_change`` keeps the old class and
    raises :class:`beamvm.CallError` with its reason.
    """
    name = module if isinstance(module, str) else getattr(module, "__name__", None)
    if not isinstance(name, str):
        raise TypeError(f"change_code takes a module or a module name, not {module!r}")
    ref = _native.make_ref()
    _PASS[ref] = (old_vsn, extra)
    try:
        _call(server, (CHANGE_CODE, name, ref), timeout)
    finally:
        _PASS.pop(ref, None)


def statistics(server: Any, flag: bool | None = None, timeout: float | None = 5.0) -> Any:
    """Collect or read ``server``'s statistics (OTP's ``sys:statistics``).

    ``statistics(server, True)`` starts collecting (off by default: counting costs every
    message), ``statistics(server, False)`` stops, and ``statistics(server)`` returns
    ``start_time`` (when collecting started), ``current_time`` (seconds since the
    epoch), ``reductions`` (of the process so far) and ``messages_in`` (messages its
    loop took since), or None when collection is off.
    """
    if flag is not None and not isinstance(flag, bool):
        raise TypeError(f"statistics' flag is True, False or None, not {flag!r}")
    if flag is not None:
        _call(server, (STATISTICS, flag), timeout)
        return None
    got = _call(server, STATISTICS, timeout)
    if got == NO_STATISTICS:
        return None
    pid = server if type(server) is Pid else _otp.whereis(server)
    info = _native.process_info(pid) if pid is not None else None
    got["reductions"] = info["reductions"] if info else 0
    return got


# --------------------------------------------------------------------------- server side


def _reply(from_: Any, value: Any) -> None:
    if type(from_) is tuple and len(from_) == 2 and type(from_[1]) is Ref:
        _native.send(from_[1], (from_[1], value))


def _stash(obj: Any) -> Ref:
    try:
        obj = copy.deepcopy(obj)
    except Exception:  # noqa: BLE001, S110 -- uncopyable state: the object itself
        pass
    ref = _native.make_ref()
    _PASS[ref] = obj
    return ref


def _one(inst: Any, req: Any, stats: Any) -> tuple[Any, Any, Any]:
    """Handle one system request (not suspend/resume): ``(reply, state, stats)``."""
    from beamvm import gen_server

    if req == GET_STATE:
        return (_otp.OK, _stash(inst)), inst, stats
    if req == STATISTICS:
        if stats is None:
            return NO_STATISTICS, inst, stats
        return (
            {"start_time": stats[1], "current_time": time.time(), "messages_in": stats[0]},
            inst,
            stats,
        )
    if type(req) is tuple and len(req) == 2 and req[0] == STATISTICS:
        return _otp.OK, inst, ([0, time.time()] if req[1] else None)
    if type(req) is tuple and len(req) == 2 and req[0] == REPLACE_STATE:
        fn = _PASS.pop(req[1], None)
        if fn is None:
            return (_otp.ERROR, Atom("badarg")), inst, stats
        try:
            new = fn(inst)
        except Exception as e:  # noqa: BLE001 -- reported to the caller; state unchanged
            return (_otp.ERROR, _otp.exception_reason(e)), inst, stats
        new = inst if new is None else new
        return (_otp.OK, _stash(new)), new, stats
    if type(req) is tuple and len(req) == 3 and req[0] == CHANGE_CODE:
        args = _PASS.pop(req[2], None)
        if args is None:
            return (_otp.ERROR, Atom("badarg")), inst, stats
        old_vsn, extra = args
        cls = type(inst)
        if cls.__module__ != req[1]:
            return _otp.OK, inst, stats
        new_cls = gen_server._current_class(cls)
        try:
            if new_cls is not cls:
                inst.__class__ = new_cls
            out = new_cls.code_change(inst, old_vsn, extra)
        except Exception as e:  # noqa: BLE001 -- the change's error; old class kept
            try:
                inst.__class__ = cls
            except TypeError:
                pass
            return (_otp.ERROR, _otp.exception_reason(e)), inst, stats
        return _otp.OK, (inst if out is None else out), stats
    return (_otp.ERROR, (Atom("unknown_system_msg"), _otp.truncated_repr(req))), inst, stats


def _handle(inst: Any, from_: Any, req: Any, parent: Pid | None, stats: Any) -> tuple[Any, Any]:
    """Answer a system message in a GenServer; return its (possibly new) state and stats.

    ``suspend`` answers, then takes only system messages (and the parent's exit signal)
    until ``resume``. Raises ``gen_server.Stop`` to stop the server (a ``terminate``
    request or the parent's exit while suspended).
    """
    from beamvm import ANY, gen_server, receive

    if req != SUSPEND:
        if req == RESUME:  # not suspended: nothing to do
            _reply(from_, _otp.OK)
            return inst, stats
        out, inst, stats = _one(inst, req, stats)
        _reply(from_, out)
        return inst, stats
    _reply(from_, _otp.OK)
    sys_pat = (gen_server.SYSTEM, ANY, ANY)
    while True:
        if parent is not None:
            m = receive(sys_pat, (_otp.EXIT, parent, ANY))
        else:
            m = receive(sys_pat)
        if m[0] == _otp.EXIT:
            raise gen_server.Stop(m[2])
        frm, r = m[1], m[2]
        if r == RESUME:
            _reply(frm, _otp.OK)
            return inst, stats
        if type(r) is tuple and len(r) == 2 and r[0] == gen_server.TERMINATE:
            raise gen_server.Stop(r[1])
        if r == SUSPEND:
            _reply(frm, _otp.OK)
            continue
        out, inst, stats = _one(inst, r, stats)
        _reply(frm, out)
