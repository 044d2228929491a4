"""beamvm: a BEAM-class process virtual machine for Python.

Ordinary Python functions run as isolated processes that the native scheduler preempts by
reduction budget; they talk by copying messages (``send`` / ``receive``), and fail as
Erlang processes do (links, monitors, exit signals, ``trap_exit``).

```python
import beamvm
from beamvm import ANY, Atom, receive, self_pid, send, spawn

def echo():
    while True:
        match receive():
            case (sender, msg):
                send(sender, msg)

def main():
    pid = spawn(echo)
    send(pid, (self_pid(), "hi"))
    return receive(timeout=1.0)

assert beamvm.run(main) == "hi"
```

Messages: see ``beamvm._native`` / crates/vm-python/src/convert.rs for the mapping. In short:
int, float, str, bytes, bool, None, tuple, list, dict, Atom, Pid, Ref (and Binary) travel;
``True``/``False``/``None`` are the atoms ``true``/``false``/``undefined``; bytes over 64
bytes arrive as a zero-copy :class:`Binary` (equal to the bytes). Anything else raises
``TypeError``. Spawn arguments are copied the same way (the child never sees the parent
mutate them); an argument with no term form (a function, a set, an arbitrary object, or a
container holding one) is passed by reference and shared. ``beamvm.run(main, *args)``
passes main's arguments by reference.

Exit reasons: a process that returns exits ``NORMAL`` (``Atom('normal')``); ``exit(reason)``
exits with ``reason``; ``exit(pid, KILL)`` kills (``NORMAL``, ``KILL`` and ``SHUTDOWN`` are
the atoms exit signals give a meaning to; their str spellings are refused by ``exit``); an
uncaught exception exits with ``(Atom('error'), 'ExceptionType', 'message')``, which is
what linked processes (``(EXIT, pid, reason)`` when trapping exits) and monitors
(``(DOWN, ref, Atom('process'), pid, reason)``) see: ``DOWN`` and ``EXIT`` are the atoms
``Atom('DOWN')`` and ``Atom('EXIT')`` (a str never equals an atom, so a pattern spelled
``("DOWN", ref, ANY, ANY, ANY)`` matches nothing). A crash with no linked process is
reported on the ``beamvm`` logger (to stderr by default) with its traceback.
"""

from __future__ import annotations

import atexit
import logging
import os as _os
import threading as _threading
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from beamvm import _compiler, _gcpolicy, _native, _otp, _runtime
from beamvm._native import (
    KILL,
    NORMAL,
    SHUTDOWN,
    Atom,
    BadArg,
    Binary,
    NoProc,
    Pid,
    ProcessExit,
    Ref,
    SystemLimit,
    Timeout,
    __version__,
    alias,
    cancel_timer,
    demonitor,
    exit,
    is_alive,
    is_running,
    link,
    make_ref,
    memory,
    monitor,
    process_flag,
    processes,
    read_timer,
    register,
    release_memory,
    self_pid,
    send,
    send_after,
    spawn,
    spawn_link,
    spawn_monitor,
    spawn_opt,
    statistics,
    stop,
    system_info,
    unalias,
    unlink,
    unregister,
    whereis,
)
from beamvm._otp import DOWN, EXIT, CallError, StartError, SupervisorError  # OTP layer
from beamvm._wire import Charlist, Fun, ImproperList, ListKey, MapKey  # distribution
from beamvm.observer import proc_window, set_system_monitor, statistics_full, top  # observer

__all__ = [
    "ANY",
    "DOWN",
    "EXIT",
    "KILL",
    "NORMAL",
    "SHUTDOWN",
    "Atom",
    "Charlist",
    "Fun",
    "ImproperList",
    "ListKey",
    "MapKey",
    "BadArg",
    "Binary",
    "CallError",
    "NoProc",
    "Pid",
    "ProcessExit",
    "ProcessKilled",
    "Ref",
    "StartError",
    "SupervisorError",
    "SystemLimit",
    "Timeout",
    "__version__",
    "alias",
    "await_",
    "cancel_timer",
    "demonitor",
    "dirty_cpu",
    "dirty_io",
    "exit",
    "is_alive",
    "is_running",
    "link",
    "make_ref",
    "memory",
    "monitor",
    "node",
    "nodes",
    "monitor_node",
    "process_flag",
    "proc_window",  # observer
    "process_info",
    "processes",
    "read_timer",
    "receive",
    "register",
    "release_memory",
    "run",
    "self_pid",
    "send",
    "send_after",
    "set_system_monitor",  # observer
    "sleep",
    "spawn",
    "spawn_link",
    "spawn_monitor",
    "spawn_opt",
    "start",
    "statistics",
    "statistics_full",  # observer
    "stop",
    "system_info",
    "top",  # observer
    "unalias",
    "unlink",
    "unregister",
    "whereis",
]

ProcessKilled = _runtime.ProcessKilled

log = logging.getLogger("beamvm")


class _Any:
    """Type of :data:`ANY`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "beamvm.ANY"

    def __reduce__(self) -> str:
        return "ANY"


#: Wildcard for receive patterns: matches any value.
ANY = _Any()


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<no default>"


_MISSING: Any = _Missing()


def receive(*patterns: Any, timeout: float | None = None, default: Any = _MISSING) -> Any:
    """Take the first message matching one of ``patterns`` from the mailbox, waiting for one.

    A pattern is ``ANY``, a literal, a type (``int``, ``str``, ``Pid``, ...), or a
    tuple/list/dict of those, e.g. ``(Atom('reply'), ref, ANY)``; no pattern means the
    next message. With several patterns, the first queued message (in mailbox order)
    that matches any of them is taken -- Erlang's receive with several clauses -- e.g.
    the reply or the server's DOWN: ``receive((ref, ANY), (Atom('DOWN'), ref, ANY, ANY,
    ANY))``; match the result to see which it was. Messages that match none stay queued,
    in order. ``timeout`` (keyword only) in seconds (None: wait forever; 0: only look);
    when it expires, ``default`` is returned if given, else :class:`Timeout` is raised.

    Cost: a pattern whose tuple holds a literal ``Ref`` among its first three elements,
    or a literal atom/int first, is found by index; when every pattern is such a keyed
    pattern the receive does not look at unrelated queued messages at all, however many
    there are. Otherwise each queued message examined costs a reduction.

    A primitive: compiled process code calls the native ``_native._recv`` instead, which
    returns a message already queued without suspending the process, or an op that the
    process's frame yields to the driver while it waits.
    """
    raise _runtime._outside_process("receive")


_runtime.register_primitive(receive, _native._receive)
_compiler.set_fast_receive(
    receive, _native._recv, (_native._ReceiveOp, _runtime.Request), _native._recv_any
)


def process_info(pid: Pid | None = None, item: str | None = None) -> Any:
    """Facts about a process (``erlang:process_info``); None if it is not alive.

    Without ``item``: a dict (pid, status, priority, reductions, message_queue_len,
    memory, heap sizes, GC counts, links, monitors, monitored_by, aliases, trap_exit,
    registered_name, current_function). ``item`` picks one of those keys, or
    ``"current_stacktrace"``: the process's Python stack, innermost frame first, as
    dicts ``{"module", "function", "file", "line"}`` (lines of the original source; None
    while the process is in a slice on another scheduler: it is read between slices
    only, never waiting, so it is cheap enough to ask of every process ``top`` lists).
    ``pid`` defaults to the caller.
    """
    if item is None:
        return _native.process_info(pid)
    if item == "current_stacktrace":
        from beamvm import _stacktrace

        return _stacktrace.current_stacktrace(pid)
    info = _native.process_info(pid)
    if info is None:
        return None
    if item not in info:
        raise ValueError(
            f"process_info has no item {item!r}; ask for one of "
            f"{sorted([*info, 'current_stacktrace'])}"
        )
    return info[item]


@_runtime.primitive
def sleep(seconds: float) -> None:
    """Suspend the calling process for ``seconds`` (messages stay queued)."""
    yield _runtime.Request("sleep", (seconds,))


@_runtime.primitive
def dirty_cpu(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Call ``fn(*args, **kwargs)`` on the dirty CPU pool and return its result.

    For long computations in C code (hashlib, zlib, numpy, ...): the calling process is
    suspended and its scheduler keeps running other processes; the pool thread takes the
    GIL to call ``fn``, so C code that releases the GIL runs in parallel with them. An
    exception raised by ``fn`` is re-raised here (with its traceback). Python code in
    ``fn`` holds the GIL like any thread. A process killed meanwhile ends at once; the
    call runs to completion on the pool and its result is dropped. Pool size: the
    ``dirty_cpu`` setting (default: one thread per scheduler).
    """
    return (yield _runtime.Request("dirty", ("cpu", fn, args, kwargs or None)))


@_runtime.primitive
def dirty_io(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Call ``fn(*args, **kwargs)`` on the dirty IO pool and return its result.

    For blocking calls (``time.sleep``, file and socket I/O, ``subprocess``): as
    :func:`dirty_cpu`, on the pool sized by the ``dirty_io`` setting (default 10).
    """
    return (yield _runtime.Request("dirty", ("io", fn, args, kwargs or None)))


def await_(awaitable: Any, timeout: float | None = None) -> Any:
    """Run a coroutine (or wait for a future) on the event loop, suspending only this process.

    See :func:`beamvm.aio.await_`: the loop is the one ``beamvm.aio.running`` started
    the VM from, else a loop thread the VM starts on first use; the result is returned,
    an exception is raised with its own type, ``timeout`` cancels the coroutine and
    raises :class:`Timeout`, killing the process cancels the coroutine.
    """
    from beamvm import aio

    return aio.await_(awaitable, timeout)


def run(main: Callable[..., Any], /, *args: Any, **config: Any) -> Any:
    """Start the VM, run ``main(*args)`` as a process, stop the VM, return main's result.

    Settings (keyword arguments; defaults from the ``BEAMVM_*`` environment variables, else
    erl's): ``schedulers`` (threads, default: cores), ``schedulers_online``,
    ``process_limit`` (default 262,144), ``reductions`` (per slice, default 4000),
    ``dirty_cpu``, ``dirty_io`` (pool sizes), ``batch_time`` (seconds a scheduler keeps
    the GIL across Python slices), ``release_idle_memory`` (default True: a scheduler
    idle for half a second, or parking 5 s after it last did, returns free memory to
    the OS, as :func:`release_memory` does). An exception raised by main is re-raised here; if
    main is killed by an exit signal, :class:`ProcessExit` is raised with the reason.
    Ctrl-C stops the VM and raises ``KeyboardInterrupt``. The OTP layer's reports
    emitted meanwhile have been written when this returns.

    Distribution (:mod:`beamvm.dist`): ``node="py@localhost"`` (or ``BEAMVM_NODE``) makes
    the VM a node before main runs; ``cookie`` (or ``BEAMVM_COOKIE``; default
    ``~/.erlang.cookie``), ``longnames``, ``hidden``, ``dist_listen`` (e.g.
    ``"127.0.0.1"``), ``net_ticktime`` (seconds, default 60), ``decode_binaries``
    (``"utf8"``: binaries that decode arrive as ``str``).
    """
    from beamvm import dist

    opts = dist._options(config)
    if opts is not None:
        user_main = main

        def main(*a: Any) -> Any:  # noqa: F811 - the node starts before main runs
            dist._start(opts)
            return user_main(*a)

    try:
        return _native.run(main, args, config)
    finally:
        _otp.flush_reports()


def start(**config: Any) -> None:
    """Start the VM for embedding.

    Settings as for :func:`run`, distribution included: ``node="py@localhost"``,
    ``cookie``, ``longnames``, ``hidden``, ``dist_listen``, ``net_ticktime``,
    ``decode_binaries``.
    """
    from beamvm import dist

    opts = dist._options(config)
    _native.start(**config)
    if opts is not None:
        try:
            dist._start(opts)
        except BaseException:
            _native.stop()
            raise


def node(pid: Pid | None = None) -> Atom:
    """Return this node's name, or with ``pid`` the node that process lives on."""
    if pid is not None:
        return pid.node
    return _native.node()


def nodes(kind: str = "visible") -> list[Atom]:
    """Return the nodes this node is connected to, sorted, as ``erlang:nodes/1`` does.

    ``kind``: ``"visible"`` (the default, ``nodes()``), ``"hidden"`` (``nodes(hidden)``:
    connections to or from a hidden node; on a hidden node every connection is one) or
    ``"connected"`` (both).
    """
    return _native.nodes(kind)


def monitor_node(node: str | Atom, flag: bool = True) -> bool:
    """Monitor the connection to ``node`` (``erlang:monitor_node(Node, Flag)``).

    The calling process gets ``(Atom('nodedown'), node)`` when the connection is lost
    (at once if it cannot be made); ``flag=False`` removes one such monitor. The same
    as :func:`beamvm.dist.monitor_node`.
    """
    return _native.dist_monitor_node(node, flag)


def _report_crash(pid: Pid, exc: BaseException) -> None:
    """Error report for a process that crashed with no linked process to notice."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    log.error("process %r crashed: %s: %s\n%s", pid, type(exc).__name__, exc, tb.rstrip())


_runtime.overdue = _native._overdue  # time slices (crates/vm-python/src/timeslice.rs)
_runtime.resume_grace = _native._resume_grace
_native._timeslice_setup(_compiler.yield_flag_cell())
_compiler.set_resumed_hook(_native._resumed)

if _threading.gettrace() is not None or _threading.getprofile() is not None:
    # `coverage run` (or a debugger) set a trace for every thread before beamvm was
    # imported: the VM's scheduler threads run process code, so they get it too.
    from beamvm import trace as _trace

    _trace._adopt_thread_hooks()
_native._set_stop_carrier(_compiler.stop_carrier_type())
_gcpolicy.install(_native.is_running)  # full collections over recent objects only
_native._setup(
    kill=_runtime.kill,
    new_cell=_runtime.new_cell,
    compile_process=_compiler.compile_process,
    preempt=_runtime.PREEMPT,
    request=_runtime.Request,
    any=ANY,
    missing=_MISSING,
    report=_report_crash,
    tl=_runtime._TL,
    cell_remaining=_runtime.REMAINING,
    cell_slice_start=_runtime.SLICE_START,
)


#: The submodules ``beamvm.<name>`` reaches without an import of its own
#: (``beamvm.aio.running(...)``, ``beamvm.gen_server.call(...)``): imported on first use,
#: so ``import beamvm`` stays cheap (asyncio is loaded only for ``aio``).
_SUBMODULES = frozenset(
    {
        "aio",
        "code",
        "dist",
        "gen_server",
        "listener",
        "observer",
        "registry",
        "rpc",
        "supervisor",
        "sync",
        "sys",
        "task",
        "tcp",
        "trace",
    }
)

if TYPE_CHECKING:
    from beamvm import (  # noqa: F401 -- what __getattr__ provides, for type checkers
        aio,
        code,
        dist,
        gen_server,
        listener,
        registry,
        rpc,
        supervisor,
        sync,
        sys,
        task,
        tcp,
        trace,
    )
else:

    def __getattr__(name: str) -> Any:
        if name in _SUBMODULES:
            import importlib

            return importlib.import_module(f"beamvm.{name}")
        raise AttributeError(f"module 'beamvm' has no attribute {name!r}")


# The VM does not survive os.fork(): in the child, every call says so (and how to start
# a new VM there) instead of acting on a copy of the parent's VM whose threads are gone.
_os.register_at_fork(after_in_child=_native._after_fork)

#: Seconds the interpreter's exit waits for dirty calls still running. Past it they are
#: abandoned: a pool thread that comes back to Python while the interpreter finalises is
#: parked for good (crates/vm-python/src/finalize.rs), so the exit need not wait longer.
_DIRTY_EXIT_WAIT = 1.0


@atexit.register
def _stop_at_exit() -> None:
    # Scheduler threads must not touch the interpreter while it finalises: stop the VM
    # (a process stuck in a long C call is reported and left behind), then close the
    # interpreter to VM threads and give the dirty calls still running a moment to
    # finish (a longer one is abandoned; its thread never runs Python again).
    if _native.is_running():
        _native.stop()
    _native._quiesce(_DIRTY_EXIT_WAIT)
