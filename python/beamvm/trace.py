r"""Live call and message tracing that cannot flood the node: recon_trace for beamvm.

```python
from beamvm import trace
trace.calls(("myapp.orders", "place", "_"), 10)            # at most 10 lines, then stop
trace.calls([("myapp.orders", "place", 2), ("myapp.db", "_", "_")], (100, 1.0),
            pid="all", args="args", return_trace=True, match=lambda args: args[0] > 100)
trace.messages(pid, 20)                                     # sends and receives of pid
trace.clear()
```

**Specs.** ``(module, function, arity)``: ``module`` is a module's ``__name__`` (never a
wildcard: recon refuses ``'_'`` there too); ``function`` a function's ``__qualname__``
(``"Orders.place"``) or plain name (``"place"``: every function or method of that name
in the module), or ``"_"``; ``arity`` the number of positional parameters the function
declares (``self`` included for a method), or ``"_"``. Functions are found by walking
the module (its functions, its classes' methods, nested classes); nested functions and
lambdas are matched by their code's module and qualified name when they are compiled.

**Lines.** One per call: ``HH:MM:SS.ffffff <0.42.0> myapp.orders:place(1, 2)`` (with
``args="arity"``: ``myapp.orders:place/2``) and, with ``return_trace``, one per return,
``... myapp.orders:place/2 --> 3`` or ``... myapp.orders:place/2 raised ValueError('x')``.
Only calls made by processes are traced; ``pid`` narrows them: ``"all"``, a pid, a list
of pids, ``"new"`` (processes spawned after the trace started) or ``"existing"``. ``match``
(a predicate on the argument tuple) filters calls further. ``io``: where lines go (None:
standard output; a Pid: sent to it as str messages; a callable: called with each line).

**Circuit breaker.** ``limit`` is ``n`` (at most ``n`` lines) or ``(n, seconds)`` (at most
``n`` lines in any window of ``seconds``). The first line over the limit is not written:
every trace is removed instead (calls and messages), and a line saying the rate limit
tripped is written. ``calls`` and ``messages`` each replace their previous trace.

**Lifetime.** A trace started from inside a process stops when that process exits (an
operator's shell that goes away does not leave tracing on); one started from outside a
process lasts until :func:`clear` or its breaker.

**Cost.** With no trace set: nothing (no hook is installed anywhere; the compiler's two
hook slots are None/empty). With a trace set, only the traced functions pay:

* Python 3.12+: ``sys.monitoring`` (PEP 669) ``PY_START``/``PY_RETURN`` events are
  enabled *locally*, on the code objects of the traced functions only -- the original
  functions and their compiled process versions (``_compiler.TEMPLATE_HOOKS`` reports
  templates compiled later); exceptions need the global ``PY_UNWIND`` event, enabled
  only with ``return_trace`` (it costs only when an exception leaves a function).
* Python 3.11: the compiler's call dispatch (``_compiler._DISPATCH``) maps each traced
  function to a tracing generator that wraps its compiled version; functions missing
  from the cache go through ``_compiler.CALL_HOOK``. Untraced calls do not change.

**Messages.** :func:`messages` traces the ``send``\\s and ``receive``\\s of given processes
(lines ``<pid> send <msg> to <dest>``, ``<pid> receive <msg>``), through a native hook
that costs one relaxed load per send/receive while off (crates/vm-python/src/msgtrace.rs).
A receive is reported when process code takes the message.

**Debuggers and coverage.** :func:`settrace`/:func:`setprofile` install a trace/profile
function on every thread including the VM's scheduler threads, which run process code
(``threading.settrace`` does not reach them: ``threading`` never started them). A trace
function already set with ``threading.settrace`` when beamvm is imported -- what
``coverage run`` does -- is picked up the same way. Compiled process code keeps the
original file names and line numbers, so line events and coverage land on the source.
"""

from __future__ import annotations

import sys
import threading
import time
import types
from collections.abc import Callable, Iterable
from typing import Any

from beamvm import _compiler, _native, _otp
from beamvm._native import Pid

__all__ = ["calls", "clear", "messages", "setprofile", "settrace"]

_MONITORING = sys.version_info >= (3, 12)
#: The sys.monitoring tool ids tried, in order (debugger 0, coverage 1 and profiler 2
#: are left to those tools).
_TOOL_IDS = (4, 3, 5)
WILDCARD = "_"

_lock = threading.Lock()


# --------------------------------------------------------------------------- the breaker


class _Breaker:
    """Counts lines; says when the limit is exceeded (recon_trace's rate limit)."""

    def __init__(self, limit: Any) -> None:
        if isinstance(limit, bool) or not (
            isinstance(limit, int)
            or (
                isinstance(limit, tuple)
                and len(limit) == 2
                and isinstance(limit[0], int)
                and not isinstance(limit[0], bool)
                and isinstance(limit[1], (int, float))
            )
        ):
            raise TypeError(
                f"a trace limit is n (at most n lines) or (n, seconds) (at most n lines "
                f"per period), not {limit!r}"
            )
        n, period = (limit, None) if isinstance(limit, int) else limit
        if n < 1 or (period is not None and period <= 0):
            raise ValueError(f"a trace limit needs n >= 1 and a period > 0, not {limit!r}")
        self.n = n
        self.period = None if period is None else float(period)
        self.count = 0
        self.window = time.monotonic()
        self.limit = limit

    def take(self) -> bool:
        """Count one line; False when it exceeds the limit."""
        with _lock:
            if self.period is not None:
                now = time.monotonic()
                if now - self.window >= self.period:
                    self.window, self.count = now, 0
            self.count += 1
            return self.count <= self.n


# --------------------------------------------------------------------------- output


def _now() -> str:
    t = time.time()
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t % 1 * 1e6):06d}"


def _writer(io: Any) -> Callable[[str], None]:
    if io is None:

        def write(line: str) -> None:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

        return write
    if type(io) is Pid:
        return lambda line: _native.send(io, line)
    if callable(io):
        return io  # type: ignore[no-any-return]
    raise TypeError(f"a trace's io is None (stdout), a Pid or a callable, not {io!r}")


def _fmt_args(args: Iterable[Any]) -> str:
    return ", ".join(_short(a) for a in args)


#: Longest repr of one argument or result in a line.
REPR_LIMIT = 200


def _short(v: Any) -> str:
    try:
        r = repr(v)
    except Exception as e:  # noqa: BLE001 -- a broken __repr__ must not break tracing
        r = f"<unrepresentable {type(v).__name__}: {e!r}>"
    return r if len(r) <= REPR_LIMIT else r[: REPR_LIMIT - 3] + "..."


# --------------------------------------------------------------------------- pid scope


class _Scope:
    def __init__(self, pid: Any) -> None:
        self.kind = "all"
        self.pids: frozenset[Pid] = frozenset()
        if isinstance(pid, str):
            if pid not in ("all", "new", "existing"):
                raise ValueError(
                    f"a trace's pid is 'all', 'new', 'existing', a Pid or a list of Pids, "
                    f"not {pid!r}"
                )
            self.kind = pid
            if pid != "all":
                self.pids = frozenset(_native.processes())
        elif type(pid) is Pid:
            self.kind, self.pids = "in", frozenset([pid])
        elif isinstance(pid, (list, tuple, set, frozenset)) and all(type(p) is Pid for p in pid):
            self.kind, self.pids = "in", frozenset(pid)
        else:
            raise TypeError(
                f"a trace's pid is 'all', 'new', 'existing', a Pid or a list of Pids, "
                f"not {pid!r}"
            )

    def wants(self, me: Pid) -> bool:
        k = self.kind
        if k == "all":
            return True
        if k == "new":
            return me not in self.pids
        return me in self.pids  # "in", "existing"


def _me() -> Pid | None:
    return _native.self_pid() if _native.in_process_() else None


# --------------------------------------------------------------------------- specs


def _norm_specs(spec: Any) -> list[tuple[str, str, Any]]:
    specs = [spec] if isinstance(spec, tuple) else spec
    if not isinstance(specs, list) or not specs:
        raise TypeError(
            f"trace.calls takes a spec (module, function, arity) or a list of them, "
            f"not {spec!r}"
        )
    out = []
    for s in specs:
        if not (isinstance(s, tuple) and len(s) == 3):
            raise TypeError(f"a trace spec is (module, function, arity), not {s!r}")
        mod, fn, ar = s
        if not isinstance(mod, str) or mod == WILDCARD:
            raise ValueError(
                f"a trace spec names its module (a module's __name__, no wildcard): {s!r}"
            )
        if mod not in sys.modules:
            raise ValueError(
                f"module {mod!r} of trace spec {s!r} is not loaded (import it first: "
                "tracing matches functions of loaded modules)"
            )
        if not isinstance(fn, str):
            raise TypeError(f"a trace spec's function is a name or '_', not {fn!r}: {s!r}")
        if ar != WILDCARD and (not isinstance(ar, int) or isinstance(ar, bool) or ar < 0):
            raise TypeError(f"a trace spec's arity is an int >= 0 or '_', not {ar!r}: {s!r}")
        out.append((mod, fn, ar))
    return out


def _arity(code: types.CodeType) -> int:
    return code.co_argcount


def _matches(specs: list[tuple[str, str, Any]], module: str, qualname: str, arity: int) -> bool:
    name = qualname.rsplit(".", 1)[-1]
    for mod, fn, ar in specs:
        if mod != module:
            continue
        if fn != WILDCARD and fn != qualname and fn != name:
            continue
        if ar != WILDCARD and ar != arity:
            continue
        return True
    return False


def _nested_codes(code: types.CodeType) -> Iterable[types.CodeType]:
    """Yield the code objects nested in ``code`` (its inner functions and lambdas)."""
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            yield c
            yield from _nested_codes(c)


def _module_functions(mod: types.ModuleType) -> Iterable[types.FunctionType]:
    """Yield the functions defined in ``mod``: top level, class methods, nested classes."""
    seen: set[int] = set()
    name = mod.__name__

    def walk(ns: dict[str, Any], depth: int) -> Iterable[types.FunctionType]:
        for v in list(ns.values()):
            if isinstance(v, (staticmethod, classmethod)):
                v = v.__func__
            elif isinstance(v, property):
                for acc in (v.fget, v.fset, v.fdel):
                    if isinstance(acc, types.FunctionType) and id(acc) not in seen:
                        seen.add(id(acc))
                        yield acc
                continue
            if id(v) in seen:
                continue
            if isinstance(v, types.FunctionType) and v.__module__ == name:
                seen.add(id(v))
                yield v
            elif isinstance(v, type) and v.__module__ == name and depth < 8:
                seen.add(id(v))
                yield from walk(dict(vars(v)), depth + 1)

    return walk(dict(vars(mod)), 0)


# --------------------------------------------------------------------------- call traces


class _CallTrace:
    def __init__(
        self,
        specs: list[tuple[str, str, Any]],
        breaker: _Breaker,
        scope: _Scope,
        args: str,
        return_trace: bool,
        match: Callable[[tuple[Any, ...]], Any] | None,
        write: Callable[[str], None],
    ) -> None:
        self.specs = specs
        self.breaker = breaker
        self.scope = scope
        self.arity_only = args == "arity"
        self.return_trace = return_trace
        self.match = match
        self.write = write
        #: original code object -> (module, qualname, arity) of the traced functions
        self.codes: dict[types.CodeType, tuple[str, str, int]] = {}
        #: code objects with monitoring events set (originals and templates), on 3.12+
        #: (keyed by id: a code object's hash is recomputed from its contents each time,
        #: too slow for a per-call event; ``watched`` keeps the objects alive)
        self.monitored: dict[int, tuple[str, str, int]] = {}
        self.watched: list[types.CodeType] = []
        #: 3.11: function -> its tracing generator function in the dispatch cache
        self.wrapped: dict[types.FunctionType, Any] = {}
        self.active = True

    def describe(self, code: types.CodeType, fn: types.FunctionType | None = None) -> Any:
        module = (fn.__module__ if fn is not None else None) or "?"
        return (module, code.co_qualname, _arity(code))

    def wants(self, key: tuple[str, str, int]) -> bool:
        return _matches(self.specs, *key)

    # -- events (both back ends) ---------------------------------------------------
    def on_call(self, key: tuple[str, str, int], args: Any) -> bool:
        """Report a call; True if it was reported (its return is then reported too).

        ``args``: the argument tuple, or a function making it (called only for a call
        of a process in scope).
        """
        if not self.active:
            return False
        me = _me()
        if me is None or not self.scope.wants(me):
            return False
        if callable(args):
            args = args()
        if self.match is not None:
            try:
                if not self.match(args):
                    return False
            except Exception:  # noqa: BLE001 -- a failing match is a non-match
                return False
        mod, qual, arity = key
        shown = f"/{arity}" if self.arity_only else f"({_fmt_args(args)})"
        _emit(self, f"{_now()} {me!r} {mod}:{qual}{shown}")
        return True

    def on_return(self, key: tuple[str, str, int], value: Any) -> None:
        if self.active:
            if type(value) is _compiler._StopCarrier:
                self.on_raise(key, value.exc)
                return
            mod, qual, arity = key
            _emit(self, f"{_now()} {_me()!r} {mod}:{qual}/{arity} --> {_short(value)}")

    def on_raise(self, key: tuple[str, str, int], exc: BaseException) -> None:
        if self.active:
            mod, qual, arity = key
            _emit(self, f"{_now()} {_me()!r} {mod}:{qual}/{arity} raised {_short(exc)}")


def _emit(owner: Any, line: str) -> None:
    if not owner.breaker.take():
        if owner.active:
            limit = owner.breaker.limit
            clear()
            try:
                owner.write(
                    f"{_now()} trace rate limit tripped ({limit!r} exceeded): every trace "
                    "removed"
                )
            except Exception:  # noqa: BLE001, S110 -- the output is best effort
                pass
        return
    try:
        owner.write(line)
    except Exception as e:  # noqa: BLE001 -- a broken io must not crash traced code
        sys.stderr.write(f"beamvm.trace: the trace's io failed ({e!r}); trace removed\n")
        clear()


# ---- 3.12+: sys.monitoring


class _Monitor:
    """The sys.monitoring tool beamvm.trace registers while a call trace is set."""

    tool: int | None = None

    @classmethod
    def start(cls, t: _CallTrace) -> None:
        mon = sys.monitoring  # type: ignore[attr-defined]
        for tid in _TOOL_IDS:
            if mon.get_tool(tid) == "beamvm.trace":  # left by an interpreter-level abort
                mon.set_events(tid, 0)
                mon.free_tool_id(tid)
            if mon.get_tool(tid) is None:
                mon.use_tool_id(tid, "beamvm.trace")
                cls.tool = tid
                break
        else:
            raise RuntimeError(
                "sys.monitoring has no free tool id for beamvm.trace (ids 3-5 are taken)"
            )
        ev = mon.events
        tid = cls.tool
        mon.register_callback(tid, ev.PY_START, lambda code, off: _mon_start(t, code))
        mon.register_callback(
            tid, ev.PY_RETURN, lambda code, off, value: _mon_return(t, code, value)
        )
        if t.return_trace:
            mon.register_callback(
                tid, ev.PY_UNWIND, lambda code, off, exc: _mon_unwind(t, code, exc)
            )
            mon.set_events(tid, ev.PY_UNWIND)

    @classmethod
    def watch(cls, t: _CallTrace, code: types.CodeType, key: tuple[str, str, int]) -> None:
        if cls.tool is None or id(code) in t.monitored:
            return
        mon = sys.monitoring  # type: ignore[attr-defined]
        ev = mon.events
        t.monitored[id(code)] = key
        t.watched.append(code)
        events = ev.PY_START | (ev.PY_RETURN if t.return_trace else 0)
        mon.set_local_events(cls.tool, code, events)

    @classmethod
    def stop(cls, t: _CallTrace) -> None:
        if cls.tool is None:
            return
        mon = sys.monitoring  # type: ignore[attr-defined]
        for code in t.watched:
            mon.set_local_events(cls.tool, code, 0)
        mon.set_events(cls.tool, 0)
        for e in (mon.events.PY_START, mon.events.PY_RETURN, mon.events.PY_UNWIND):
            mon.register_callback(cls.tool, e, None)
        mon.free_tool_id(cls.tool)
        cls.tool = None


#: Frames whose call was reported (so that their return is): id(frame) -> True.
_reported: dict[int, bool] = {}


def _frame_args(frame: types.FrameType, code: types.CodeType) -> tuple[Any, ...]:
    n = code.co_argcount + code.co_kwonlyargcount
    names = code.co_varnames
    loc = frame.f_locals
    out = [loc.get(names[i]) for i in range(code.co_argcount)]
    out += [f"{names[i]}={loc.get(names[i])!r}" for i in range(code.co_argcount, n)]
    i = n
    if code.co_flags & 4:  # *args
        out += list(loc.get(names[i], ()))
        i += 1
    if code.co_flags & 8:  # **kwargs
        out += [f"{k}={v!r}" for k, v in loc.get(names[i], {}).items()]
    return tuple(out)


def _mon_start(t: _CallTrace, code: types.CodeType) -> Any:
    key = t.monitored.get(id(code))
    if key is None:
        return None
    frame = sys._getframe(2)  # the callback's lambda is frame 1
    if t.on_call(key, lambda: _frame_args(frame, code)) and t.return_trace:
        _reported[id(frame)] = True
    return None


def _mon_return(t: _CallTrace, code: types.CodeType, value: Any) -> Any:
    if not t.return_trace:
        return None
    key = t.monitored.get(id(code))
    if key is not None and _reported.pop(id(sys._getframe(2)), False):
        t.on_return(key, value)
    return None


def _mon_unwind(t: _CallTrace, code: types.CodeType, exc: BaseException) -> Any:
    key = t.monitored.get(id(code))
    if key is not None and _reported.pop(id(sys._getframe(2)), False):
        t.on_raise(key, exc)
    return None


# ---- 3.11: the compiler's dispatch


def _wrapper(t: _CallTrace, fn: types.FunctionType, key: tuple[str, str, int]) -> Any:
    """Return the generator function compiled code runs instead of ``fn`` (3.11)."""
    compiled = _compiler._compiled_for(fn)
    stop_carrier = _compiler._StopCarrier

    def traced(*args: Any, **kwargs: Any) -> Any:
        shown = args + tuple(f"{k}={v!r}" for k, v in kwargs.items())
        on = t.on_call(key, shown) and t.return_trace
        try:
            if compiled is None:
                try:
                    r = fn(*args, **kwargs)
                except StopIteration as e:
                    r = stop_carrier(e)
            else:
                r = yield from compiled(*args, **kwargs)
        except BaseException as e:
            if on and not isinstance(e, GeneratorExit):
                t.on_raise(key, e)
            raise
        if on:
            t.on_return(key, r)
        return r

    traced.__qualname__ = fn.__qualname__
    traced.__bvm_traced__ = fn  # type: ignore[attr-defined]
    return traced


def _call_hook(t: _CallTrace) -> Callable[[types.FunctionType], Any]:
    def hook(fn: types.FunctionType) -> Any:
        w = t.wrapped.get(fn)
        if w is not None:
            return w
        key = t.describe(fn.__code__, fn)
        if not t.wants(key):
            return None
        w = t.wrapped[fn] = _wrapper(t, fn, key)
        return w

    return hook


# --------------------------------------------------------------------------- state


_calls: _CallTrace | None = None
_msgs: _MessageTrace | None = None
#: The watcher process of the current traces' owner (see "Lifetime").
_watcher: Pid | None = None


def _template_hook(code: types.CodeType, tmpl: types.CodeType) -> None:
    """Watch a newly compiled template if its function is traced (3.12+)."""
    t = _calls
    if t is None or not _MONITORING:
        return
    key = t.codes.get(code)
    if key is None:
        # a nested function or a lambda (not found by walking its module): by its code
        mod = next(
            (
                m
                for m, _, _ in t.specs
                if code.co_filename == getattr(sys.modules.get(m), "__file__", None)
            ),
            None,
        )
        if mod is None:
            return
        key = (mod, code.co_qualname, _arity(code))
        if not t.wants(key):
            return
        t.codes[code] = key
        _Monitor.watch(t, code, key)
    _Monitor.watch(t, tmpl, key)


@_otp.plain  # never preempted (or killed) half-way: hooks are global state
def calls(
    spec: Any,
    limit: Any,
    *,
    pid: Any = "all",
    args: str = "args",
    return_trace: bool = False,
    match: Callable[[tuple[Any, ...]], Any] | None = None,
    io: Any = None,
) -> int:
    """Trace calls of the functions ``spec`` names (see the module docs).

    Replaces the previous call trace. Returns how many functions matched (0 is not an error: nested
    functions are matched when they are first compiled).
    """
    global _calls
    specs = _norm_specs(spec)
    breaker = _Breaker(limit)
    if args not in ("args", "arity"):
        raise ValueError(f"trace.calls' args is 'args' or 'arity', not {args!r}")
    if match is not None and not callable(match):
        raise TypeError(f"trace.calls' match is a predicate on the argument tuple, not {match!r}")
    write = _writer(io)
    scope = _Scope(pid)
    _clear_calls()
    t = _CallTrace(specs, breaker, scope, args, bool(return_trace), match, write)
    found: list[types.FunctionType] = []
    for mod in dict.fromkeys(m for m, _, _ in specs):
        for fn in _module_functions(sys.modules[mod]):
            key = t.describe(fn.__code__, fn)
            if t.wants(key):
                found.append(fn)
                t.codes[fn.__code__] = key
            if _MONITORING:  # nested functions and lambdas: their code is a constant
                for c in _nested_codes(fn.__code__):
                    nkey = (mod, c.co_qualname, _arity(c))
                    if t.wants(nkey):
                        t.codes[c] = nkey
    if _MONITORING:
        _Monitor.start(t)
        for code, key in list(t.codes.items()):
            _Monitor.watch(t, code, key)
            tmpl = _compiler.cached_template(code)
            if tmpl is not None:
                _Monitor.watch(t, tmpl, key)
        if _template_hook not in _compiler.TEMPLATE_HOOKS:
            _compiler.TEMPLATE_HOOKS.append(_template_hook)
        for fn in found:
            if hasattr(fn, "__beamvm_fast__"):  # e.g. tcp.send: run its own code again
                _compiler._DISPATCH.pop(fn, None)
    else:
        for fn in found:
            w = t.wrapped[fn] = _wrapper(t, fn, t.codes[fn.__code__])
            _compiler._DISPATCH[fn] = w
        _compiler.CALL_HOOK = _call_hook(t)
    _calls = t
    _watch_owner()
    return len(found)


def _clear_calls() -> None:
    global _calls
    t, _calls = _calls, None
    if t is None:
        return
    t.active = False
    if _MONITORING:
        _Monitor.stop(t)
        if _template_hook in _compiler.TEMPLATE_HOOKS:
            _compiler.TEMPLATE_HOOKS.remove(_template_hook)
        _reported.clear()
    else:
        _compiler.CALL_HOOK = None
        for fn, w in t.wrapped.items():
            if _compiler._DISPATCH.get(fn) is w:
                del _compiler._DISPATCH[fn]


# --------------------------------------------------------------------------- messages


class _MessageTrace:
    def __init__(self, pids: frozenset[Pid], breaker: _Breaker, write: Callable[[str], None]):
        self.pids = pids
        self.breaker = breaker
        self.write = write
        self.active = True

    def hook(self, event: str, msg: Any, dest: Any) -> None:
        if not self.active:
            return
        me = _me()
        if me is None or me not in self.pids:
            return
        if event == "send":
            _emit(self, f"{_now()} {me!r} send {_short(msg)} to {_short(dest)}")
        else:
            _emit(self, f"{_now()} {me!r} receive {_short(msg)}")


@_otp.plain  # never preempted (or killed) half-way: hooks are global state
def messages(pid: Any, limit: Any, *, io: Any = None) -> None:
    """Trace the messages ``pid`` (a Pid or a list of Pids) sends and receives.

    Lines ``<pid> send <msg> to <dest>`` and ``<pid> receive <msg>``, under the same
    circuit breaker as :func:`calls` (``limit``: ``n`` or ``(n, seconds)``). Replaces the
    previous message trace.
    """
    global _msgs
    if type(pid) is Pid:
        pids = frozenset([pid])
    elif isinstance(pid, (list, tuple, set, frozenset)) and pid and all(
        type(p) is Pid for p in pid
    ):
        pids = frozenset(pid)
    else:
        raise TypeError(f"trace.messages traces a Pid or a list of Pids, not {pid!r}")
    breaker = _Breaker(limit)
    write = _writer(io)
    _clear_messages()
    m = _MessageTrace(pids, breaker, write)
    _msgs = m
    _native._set_message_hook(m.hook)
    _watch_owner()


def _clear_messages() -> None:
    global _msgs
    m, _msgs = _msgs, None
    if m is not None:
        m.active = False
        _native._set_message_hook(None)


# --------------------------------------------------------------------------- lifetime


@_otp.plain  # never preempted (or killed) half-way: hooks are global state
def clear() -> None:
    """Remove every trace (calls and messages); tracing then costs nothing again."""
    global _watcher
    _clear_calls()
    _clear_messages()
    w, _watcher = _watcher, None
    if w is not None:
        try:
            _native.exit(w, _native.Atom("kill"))
        except Exception:  # noqa: BLE001, S110 -- the VM may be gone already
            pass


def _watch(owner: Pid) -> None:
    from beamvm import ANY, receive

    ref = _native.monitor(owner)
    receive((_native.Atom("DOWN"), ref, ANY, ANY, ANY))
    if _watcher == _native.self_pid():
        clear()


def _watch_owner() -> None:
    """Tie the traces to the calling process: they go when it exits."""
    global _watcher
    owner = _me()
    if owner is None:
        return
    old, _watcher = _watcher, None
    if old is not None:
        _native.exit(old, _native.Atom("kill"))
    _watcher = _native.spawn(_watch, owner)


# --------------------------------------------------------------------------- debuggers


@_otp.plain  # never preempted (or killed) half-way: hooks are global state
def settrace(fn: Any) -> None:
    """``sys.settrace(fn)`` on every thread, the VM's scheduler threads included.

    Process code runs on scheduler threads that ``threading.settrace`` does not reach;
    this sets ``fn`` for them too (installed at the start of each batch of slices), for
    the calling thread and for threads started later. ``settrace(None)`` removes it.
    """
    threading.settrace(fn)  # type: ignore[arg-type]
    sys.settrace(fn)
    _native._set_thread_hooks(fn, threading.getprofile())


@_otp.plain  # never preempted (or killed) half-way: hooks are global state
def setprofile(fn: Any) -> None:
    """``sys.setprofile(fn)`` on every thread, the VM's scheduler threads included."""
    threading.setprofile(fn)  # type: ignore[arg-type]
    sys.setprofile(fn)
    _native._set_thread_hooks(threading.gettrace(), fn)


def _adopt_thread_hooks() -> None:
    """Give scheduler threads what ``threading.settrace``/``setprofile`` set (coverage)."""
    t, p = threading.gettrace(), threading.getprofile()
    if t is not None or p is not None:
        _native._set_thread_hooks(t, p)
