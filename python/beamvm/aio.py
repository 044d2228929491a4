"""asyncio and beamvm, both ways.

From asyncio::

    import asyncio, beamvm
    from beamvm import aio

    async def main():
        async with aio.running(schedulers=2):            # start/stop without blocking the loop
            pid = await aio.start(Counter)               # or any process started elsewhere
            print(await aio.call(pid, ("add", 2)))       # a gen_server call
            await aio.cast(pid, "reset")
            async with aio.mailbox() as mb:              # a pid for this coroutine
                await aio.send(pid, ("hello", mb.pid))
                reply = await mb.receive(("hi", beamvm.ANY), timeout=1.0)

From a process::

    def worker(url):
        body = beamvm.await_(fetch(url), timeout=5.0)   # only this process waits

    async def echo():                                    # a coroutine function as a process
        while True:
            sender, msg = await aio.receive()
            await aio.send(sender, msg)

    pid = beamvm.spawn(echo)

How it works, and what it guarantees:

* **The loop never blocks on the VM.** Starting and stopping run in the loop's default
  executor. Everything that crosses from the VM to the loop is a callback scheduled with
  ``loop.call_soon_threadsafe``; what crosses the other way is a message (sending takes
  no lock). Python processes and the loop still share the GIL: schedulers hand it over
  between batches of slices, so a spinning process delays the loop by at most a batch
  (``batch_time``, 2 ms) plus the interpreter's switch interval; :func:`running` sets the
  switch interval to :data:`SWITCH_INTERVAL` while the VM runs so that the loop gets
  the GIL back within about a millisecond.
* **A coroutine gets a pid through a proxy process.** :func:`mailbox` (and every
  coroutine spawned as a process) is backed by a process that holds the mailbox, the
  links and the monitors; ``receive`` asks it to do a native selective receive and the
  result comes back to the loop. When that process ends (it was killed, or a linked
  process died and it does not trap exits), the coroutine's task is cancelled (a
  ``CancelledError`` in it) and later receives raise :class:`MailboxClosed`. A receive
  whose coroutine is cancelled at the instant its message is taken loses that message,
  as a killed Erlang process does.
* **A process awaiting a coroutine** (:func:`beamvm.await_`) suspends only itself: the
  coroutine runs on the loop of :func:`running` (or on a loop thread the VM starts on
  first use), the result comes back as a message to an alias, so after a timeout, a
  kill or a cancel nothing reaches the process's mailbox. Killing the process cancels
  the coroutine; an exception raised by the coroutine is raised in the process with its
  own type.
* **Calls from asyncio** (:func:`call`) go through one bridge process per loop, which
  makes the calls as ``gen_server.call`` does (alias, monitor, timeout) and resolves the
  asyncio futures; a cancelled ``await aio.call`` abandons its request (the server's
  late reply is dropped by the VM) and no monitor or alias outlives it.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import contextvars
import functools
import inspect
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import beamvm
from beamvm import _native, _otp
from beamvm._native import (
    Atom,
    Pid,
    demonitor,
    link,
    make_ref,
    monitor,
    send_after,
    unlink,
)
from beamvm._native import self_pid as _self_pid
from beamvm._native import send as _send
from beamvm._otp import DOWN, TIMEOUT, CallError, plain

# beamvm's receive under another name (this module's ``receive`` is the coroutine one);
# compiled code finds its fast path by the function, not by the name.
from beamvm import ANY  # isort: skip
from beamvm import receive as _receive  # isort: skip

__all__ = [
    "Mailbox",
    "MailboxClosed",
    "SWITCH_INTERVAL",
    "await_",
    "call",
    "cast",
    "mailbox",
    "receive",
    "running",
    "self_pid",
    "send",
    "start",
]

#: The interpreter's switch interval (seconds) while :func:`running` runs the VM beside
#: the loop: a thread waiting for the GIL asks for it after this long. CPython's default
#: (5 ms) would add that much to the loop's latency whenever a process runs Python.
SWITCH_INTERVAL = 0.001

_now = time.monotonic

WAKE = Atom("$aio_wake")
CALL_TIMEOUT = Atom("$aio_call_timeout")
_TIMED_OUT: Any = object()
_MISSING: Any = object()

_lock = threading.Lock()
#: The loop the VM was started from (by :func:`running`), if any.
_vm_loop: asyncio.AbstractEventLoop | None = None
#: The loop thread the VM owns, for processes that await coroutines without one.
_bridge: tuple[asyncio.AbstractEventLoop, threading.Thread] | None = None


class MailboxClosed(Exception):  # noqa: N818 -- named for what it reports
    """The process behind a coroutine's mailbox has ended."""


# --------------------------------------------------------------------------- loops


@plain
def _loop_for_processes() -> asyncio.AbstractEventLoop:
    """Return the loop processes' coroutines run on: the VM's, else the bridge thread's."""
    loop = _vm_loop
    if loop is not None and loop.is_running():
        return loop
    global _bridge
    with _lock:
        if _bridge is None or not _bridge[1].is_alive():
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def serve() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            t = threading.Thread(target=serve, name="beamvm-aio-bridge", daemon=True)
            t.start()
            ready.wait()
            _bridge = (loop, t)
        return _bridge[0]


@atexit.register
def _stop_bridge() -> None:
    b = _bridge
    if b is not None and b[1].is_alive():
        b[0].call_soon_threadsafe(b[0].stop)
        b[1].join(timeout=2)


@contextlib.asynccontextmanager
async def running(**config: Any) -> AsyncIterator[None]:
    """Run the VM while the block runs, without blocking the event loop.

    ``config``: :func:`beamvm.run`'s settings (``schedulers=2``, ...). Starting and
    stopping happen in the loop's default executor. The loop becomes the one processes'
    coroutines run on (:func:`beamvm.await_`, coroutine processes). If the VM is already
    running it is left running afterwards. The interpreter's switch interval is
    :data:`SWITCH_INTERVAL` meanwhile (see the module docs).
    """
    global _vm_loop
    loop = asyncio.get_running_loop()
    owned = not _native.is_running()
    if owned:
        await loop.run_in_executor(None, functools.partial(_native.start, **config))
    prev_loop, _vm_loop = _vm_loop, loop
    prev_switch = sys.getswitchinterval()
    sys.setswitchinterval(min(prev_switch, SWITCH_INTERVAL))
    try:
        yield
    finally:
        _vm_loop = prev_loop
        sys.setswitchinterval(prev_switch)
        _BRIDGES.pop(loop, None)
        _OUTBOXES.pop(loop, None)
        if owned:
            await loop.run_in_executor(None, _native.stop)
        await loop.run_in_executor(None, _otp.flush_reports)


def _settle(fut: asyncio.Future[Any], value: Any = None, exc: BaseException | None = None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(value)


class _Outbox:
    """Callbacks for one loop, posted from VM threads and run in batches on the loop.

    ``call_soon_threadsafe`` wakes the loop (a write to its self-pipe) per call; when
    thousands of replies come back at once, one wake-up and one loop callback per batch
    keep the loop responsive. Invariant: while ``scheduled`` is set, a ``flush`` is
    queued on the loop; ``flush`` clears it *before* draining, so an item appended
    concurrently is either drained by this flush or schedules the next one.
    """

    __slots__ = ("loop", "items", "scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.items: collections.deque[tuple[Callable[..., Any], tuple[Any, ...]]] = (
            collections.deque()
        )
        self.scheduled = False

    def post(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.items.append((fn, args))
        if not self.scheduled:
            self.scheduled = True
            try:
                self.loop.call_soon_threadsafe(self.flush)
            except RuntimeError:  # the loop is closed: nothing will run
                self.scheduled = False
                self.items.clear()

    def flush(self) -> None:
        self.scheduled = False
        items = self.items
        while items:
            fn, args = items.popleft()
            fn(*args)


_OUTBOXES: dict[asyncio.AbstractEventLoop, _Outbox] = {}


@plain
def _post(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> None:
    """Schedule ``fn(*args)`` on ``loop`` from any thread (batched; see _Outbox)."""
    box = _OUTBOXES.get(loop)
    if box is None:
        box = _OUTBOXES[loop] = _Outbox(loop)
    box.post(fn, args)


# --------------------------------------------------------------------------- calls


class _Bridge:
    """The process that makes gen_server calls for one loop (see the module docs)."""

    __slots__ = ("loop", "pid", "token", "requests")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.token = make_ref()
        self.requests: collections.deque[Any] = collections.deque()
        self.pid: Pid | None = None

    def submit(self, req: Any) -> None:
        self.requests.append(req)
        if self.pid is not None:
            _send(self.pid, (WAKE, self.token))


#: One bridge per loop. Entries of closed loops are swept (their bridge processes
#: stopped, their outboxes dropped) whenever a bridge is made for a new loop.
_BRIDGES: dict[asyncio.AbstractEventLoop, _Bridge] = {}


def _bridge_for(loop: asyncio.AbstractEventLoop) -> _Bridge:
    b = _BRIDGES.get(loop)
    if b is None or b.pid is None or not _native.is_alive(b.pid):
        _sweep_closed_loops()
        b = _Bridge(loop)
        b.pid = _native.spawn(_bridge_main, b)
        _BRIDGES[loop] = b
    return b


def _sweep_closed_loops() -> None:
    for loop in [lp for lp in _BRIDGES if lp.is_closed()]:
        old = _BRIDGES.pop(loop)
        if old.pid is not None and _native.is_alive(old.pid):
            old.submit(("stop",))
    for loop in [lp for lp in _OUTBOXES if lp.is_closed()]:
        del _OUTBOXES[loop]


def _bridge_main(b: _Bridge) -> None:
    # by_mref: mref -> [fut, timer, mfa]; by_fut: id(fut) -> mref (for cancels).
    by_mref: dict[Any, list[Any]] = {}
    me = _self_pid()
    while True:
        m = _receive()
        if type(m) is not tuple or not m:
            continue
        tag = m[0]
        if tag == WAKE:
            while b.requests:
                req = b.requests.popleft()
                if req[0] == "call":
                    _bridge_call(req, by_mref, me, b.loop)
                elif req[0] == "stop":  # its loop is closed: nobody awaits the rest
                    return
                else:  # ("cancel", mref)
                    entry = by_mref.pop(req[1], None)
                    if entry is not None:
                        demonitor(req[1], True)
                        if entry[1] is not None:
                            _native.cancel_timer(entry[1])
            continue
        if tag == CALL_TIMEOUT:
            entry = by_mref.pop(m[1], None)
            if entry is not None:
                demonitor(m[1], True)
                late = _receive((m[1], ANY), timeout=0, default=_TIMED_OUT)
                if late is _TIMED_OUT:
                    _post(b.loop, _settle, entry[0], None, CallError((TIMEOUT, entry[2])))
                else:
                    _post(b.loop, _settle, entry[0], late[1])
            continue
        if tag == DOWN and len(m) == 5:
            entry = by_mref.pop(m[1], None)
            if entry is not None:
                if entry[1] is not None:
                    _native.cancel_timer(entry[1])
                _post(b.loop, _settle, entry[0], None, CallError((m[4], entry[2])))
            continue
        if len(m) == 2:
            entry = by_mref.pop(tag, None)
            if entry is not None:
                demonitor(tag, True)
                if entry[1] is not None:
                    _native.cancel_timer(entry[1])
                _post(b.loop, _settle, entry[0], m[1])


def _bridge_call(req: Any, by_mref: dict[Any, list[Any]], me: Pid, loop: Any) -> None:
    _, server, request, timeout, fut, cancel_box = req
    mfa = (Atom("gen_server"), Atom("call"), [server, request, _otp.timeout_term(timeout)])
    try:
        pid = server if type(server) is Pid else _otp.whereis(server)
    except Exception as e:  # noqa: BLE001 -- a bad via module: the caller's error
        _post(loop, _settle, fut, None, e)
        return
    if pid is None:
        _post(loop, _settle, fut, None, CallError((Atom("noproc"), mfa)))
        return
    mref = monitor(pid, alias="demonitor")
    cancel_box.append(mref)  # first: a cancel from now on finds the request...
    if fut.cancelled():  # ...and one that came before is seen here
        demonitor(mref, True)
        return
    _send(pid, (Atom("$gen_call"), (me, mref), request))
    timer = None if timeout is None else send_after(timeout, me, (CALL_TIMEOUT, mref))
    by_mref[mref] = [fut, timer, mfa]


async def call(server: Any, request: Any, timeout: float | None = 5.0) -> Any:
    """Make a ``gen_server.call`` from a coroutine; return the server's reply.

    Raises :class:`CallError` with OTP's reason (``noproc``, ``timeout``, the server's
    exit reason).

    Cancelling the awaiting coroutine abandons the call: a late reply is dropped by the
    VM and the monitor and alias are removed.
    """
    t = _otp.check_timeout(timeout)
    _otp.check_server(server)
    loop = asyncio.get_running_loop()
    b = _bridge_for(loop)
    fut = loop.create_future()
    cancel_box: list[Any] = []
    b.submit(("call", server, request, t, fut, cancel_box))
    try:
        return await fut
    except asyncio.CancelledError:
        if cancel_box:
            b.submit(("cancel", cancel_box[0]))
        else:  # not made yet: the bridge settles a cancelled future harmlessly
            fut.cancel()
        raise


async def cast(server: Any, msg: Any) -> None:
    """``gen_server.cast`` from a coroutine (never fails; a dead server drops it)."""
    beamvm.gen_server.cast(server, msg)


async def start(cls: Any, *args: Any, name: Any = None, timeout: float | None = None,
                **kwargs: Any) -> Any:
    """Start a GenServer (unlinked) from a coroutine; return its pid (or ``IGNORE``).

    The start runs in a short-lived process; failures raise :class:`StartError`.
    """
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    _native.spawn(_start_body, loop, fut, cls, args, kwargs, name, timeout)
    return await fut


def _start_body(loop: Any, fut: Any, cls: Any, args: Any, kwargs: Any, name: Any,
                timeout: Any) -> None:
    try:
        pid = cls.start(*args, name=name, timeout=timeout, **kwargs)
    except Exception as e:  # noqa: BLE001 -- handed to the awaiting coroutine
        _post(loop, _settle, fut, None, e)
        return
    _post(loop, _settle, fut, pid)


# --------------------------------------------------------------------------- mailboxes


class Mailbox:
    """A coroutine's pid and mailbox, backed by a proxy process (see the module docs)."""

    __slots__ = ("loop", "pid", "token", "requests", "closed", "owner", "coro_future")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.token = make_ref()
        self.requests: collections.deque[Any] = collections.deque()
        self.pid: Pid | None = None
        self.closed: Any = None  # the reason, once the proxy has ended
        self.owner: asyncio.Task[Any] | None = None
        self.coro_future: Any = None

    def __repr__(self) -> str:
        return f"<aio.Mailbox {self.pid!r}{' closed' if self.closed is not None else ''}>"

    def _submit(self, req: Any) -> None:
        if self.closed is not None:
            raise MailboxClosed(f"the process behind this mailbox ended: {self.closed!r}")
        self.requests.append(req)
        _send(self.pid, (WAKE, self.token))

    async def _ask(self, kind: str, *args: Any) -> Any:
        fut = self.loop.create_future()
        self._submit((kind, args, fut))
        return await fut

    async def receive(self, *patterns: Any, timeout: float | None = None,
                      default: Any = _MISSING) -> Any:
        """Take the first message matching one of ``patterns`` (as ``beamvm.receive``).

        Raises :class:`beamvm.Timeout` after ``timeout`` unless ``default`` is given.
        """
        t = _otp.check_timeout(timeout)
        got = await self._ask("receive", patterns, t)
        if got is _TIMED_OUT:
            if default is _MISSING:
                raise _native.Timeout("receive timed out")
            return default
        return got

    async def link(self, pid: Pid) -> None:
        """Link this mailbox's process to ``pid``."""
        await self._ask("link", pid)

    async def unlink(self, pid: Pid) -> None:
        """Remove the link to ``pid``."""
        await self._ask("unlink", pid)

    async def monitor(self, target: Any) -> Any:
        """Monitor ``target``; its DOWN message arrives in this mailbox."""
        return await self._ask("monitor", target)

    async def demonitor(self, ref: Any, flush: bool = False) -> bool:
        """Remove a monitor (and its DOWN message with ``flush``)."""
        return await self._ask("demonitor", ref, flush)

    async def trap_exit(self, on: bool) -> bool:
        """Set trap_exit for this mailbox's process; return the old value."""
        return await self._ask("trap_exit", on)


def _deliver(mb: Mailbox, fut: Any, value: Any = None, exc: BaseException | None = None) -> None:
    _post(mb.loop, _settle, fut, value, exc)


def _proxy_main(mb: Mailbox) -> Any:
    """Serve a Mailbox's requests and run its receives (the process behind it)."""
    wake = (WAKE, mb.token)
    receives: collections.deque[Any] = collections.deque()
    current = None
    try:
        while True:
            while mb.requests:
                kind, args, fut = mb.requests.popleft()
                if kind == "receive":  # (patterns, timeout) -> (patterns, deadline)
                    t = args[1]
                    receives.append(((args[0], None if t is None else _now() + t), fut))
                elif kind == "done":  # a coroutine process finished: (value, exc)
                    if args[1] is not None:
                        raise args[1]
                    return args[0]
                elif kind == "stop":
                    return None
                else:
                    _serve(mb, kind, args, fut)
            if current is not None and current[1].cancelled():
                current = None
            while current is None and receives:
                cand = receives.popleft()
                if not cand[1].cancelled():
                    current = cand
            if current is None:
                _receive(wake)
                continue
            (patterns, deadline), fut = current
            t = None if deadline is None else max(0.0, deadline - _now())
            got = _receive(*(patterns or (ANY,)), wake, timeout=t, default=_TIMED_OUT)
            if got == wake:
                continue  # new requests: serve them, then wait again until the deadline
            current = None
            _deliver(mb, fut, got)
    finally:
        _proxy_ended(mb, receives, current)


def _serve(mb: Mailbox, kind: str, args: Any, fut: Any) -> None:
    try:
        if kind == "link":
            out = link(args[0])
        elif kind == "unlink":
            out = unlink(args[0])
        elif kind == "monitor":
            out = monitor(args[0])
        elif kind == "demonitor":
            out = demonitor(args[0], args[1])
        elif kind == "trap_exit":
            out = _native.process_flag("trap_exit", args[0])
        else:
            raise ValueError(f"unknown mailbox request {kind!r}")
    except Exception as e:  # noqa: BLE001 -- handed to the awaiting coroutine
        _deliver(mb, fut, None, e)
        return
    _deliver(mb, fut, out)


def _proxy_ended(mb: Mailbox, receives: Any, current: Any) -> None:
    mb.closed = mb.closed or True
    err = MailboxClosed(f"the process behind {mb!r} ended")
    futs = [current[1]] if current is not None else []
    futs.extend(r[1] for r in receives)
    futs.extend(r[2] for r in mb.requests if r[2] is not None)
    for fut in futs:
        _deliver(mb, fut, None, err)
    if mb.owner is not None:
        _post(mb.loop, _cancel_owner, mb)
    if mb.coro_future is not None:
        _cancel(mb.coro_future)


def _cancel_owner(mb: Mailbox) -> None:
    owner = mb.owner
    if owner is not None and not owner.done():
        owner.cancel(msg=f"the process behind {mb!r} ended")


@contextlib.asynccontextmanager
async def mailbox(*, link_to: Pid | None = None) -> AsyncIterator[Mailbox]:
    """Give the current coroutine a pid and a mailbox for the block.

    ``mb.pid`` can be sent to, linked and monitored; ``await mb.receive(...)``,
    ``mb.link``, ``mb.monitor``... act for it. If its process ends (a linked process
    died, or it was killed) the current task is cancelled. ``link_to``: link it to
    that process at once (so it can be supervised).
    """
    loop = asyncio.get_running_loop()
    mb = Mailbox(loop)
    mb.owner = asyncio.current_task()
    mb.pid = _native.spawn(_proxy_main, mb)
    token = _CURRENT.set(mb)
    try:
        if link_to is not None:
            await mb.link(link_to)
        yield mb
    finally:
        _CURRENT.reset(token)
        mb.owner = None
        if mb.closed is None:
            with contextlib.suppress(MailboxClosed):
                mb._submit(("stop", (), None))


_CURRENT: contextvars.ContextVar[Mailbox | None] = contextvars.ContextVar(
    "beamvm_aio_mailbox", default=None
)


def _current(what: str) -> Mailbox:
    mb = _CURRENT.get()
    if mb is None:
        raise RuntimeError(
            f"aio.{what}() needs a mailbox: call it in a coroutine spawned as a process "
            "(beamvm.spawn(async_fn)) or inside 'async with beamvm.aio.mailbox()'"
        )
    return mb


async def receive(*patterns: Any, timeout: float | None = None, default: Any = _MISSING) -> Any:
    """Receive in the current coroutine's mailbox (``await aio.receive(...)``)."""
    return await _current("receive").receive(*patterns, timeout=timeout, default=default)


def self_pid() -> Pid:
    """Return the pid of the current coroutine's mailbox (or coroutine process)."""
    mb = _current("self_pid")
    assert mb.pid is not None
    return mb.pid


async def send(dest: Any, msg: Any) -> Any:
    """Send a message from a coroutine (as ``beamvm.send``; never blocks)."""
    return _send(dest, msg)


# --------------------------------------------------------------------------- processes


def await_(awaitable: Awaitable[Any], timeout: float | None = None) -> Any:
    """Run ``awaitable`` on the event loop and wait for it, suspending only this process.

    The loop is the one :func:`running` started the VM from, else a loop thread the VM
    starts on first use. Returns the result; an exception raised by the coroutine is
    raised here with its type. After ``timeout`` seconds the coroutine is cancelled and
    :class:`beamvm.Timeout` raised. Killing the process cancels the coroutine.
    """
    if not inspect.isawaitable(awaitable):
        raise TypeError(f"await_ needs a coroutine, future or awaitable, not {awaitable!r}")
    try:
        t = _otp.check_timeout(timeout)
    except (TypeError, ValueError):
        _close(awaitable)
        raise
    if not _native.in_process_():
        _close(awaitable)
        raise RuntimeError(
            "beamvm.await_() must be called inside a beamvm process; in a coroutine, "
            "use 'await' itself"
        )
    loop = _loop_for_processes()
    a = beamvm.alias(reply=True)  # the result's message deactivates it
    box: list[Any] = []
    cf = _submit(_await_and_signal(awaitable, box, a), loop)
    done = False
    try:
        got = _receive((a, ANY), timeout=t, default=_TIMED_OUT)
        done = got is not _TIMED_OUT
    finally:
        if not done:
            beamvm.unalias(a)
            _cancel(cf)
    if not done and not box:  # (a result that came just in time is still returned)
        raise _native.Timeout(f"await_ timed out after {timeout} s (the coroutine was cancelled)")
    kind, value = box[0]
    if kind == "raised":
        raise value
    return value


@plain
def _submit(coro: Coroutine[Any, Any, Any], loop: asyncio.AbstractEventLoop) -> Any:
    return asyncio.run_coroutine_threadsafe(coro, loop)


@plain
def _cancel(cf: Any) -> None:
    cf.cancel()


def _close(aw: Any) -> None:
    if inspect.iscoroutine(aw):
        aw.close()  # never awaited: no "was never awaited" warning


async def _await_and_signal(aw: Awaitable[Any], box: list[Any], alias: Any) -> None:
    try:
        box.append(("ok", await aw))
    except asyncio.CancelledError:
        raise
    except BaseException as e:  # noqa: BLE001 -- crosses to the process
        box.append(("raised", e))
    with contextlib.suppress(RuntimeError):  # the VM stopped meanwhile
        _send(alias, (alias, True))


def _coroutine_process(fn: Callable[..., Coroutine[Any, Any, Any]], args: tuple[Any, ...],
                       kwargs: dict[str, Any]) -> Any:
    """Run a process spawned with a coroutine function.

    The process is a mailbox proxy whose coroutine runs on the loop; it returns what the
    coroutine returns (or raises what it raises).
    """
    loop = _loop_for_processes()
    mb = Mailbox(loop)
    mb.pid = _self_pid()
    mb.coro_future = _submit(_run_coroutine(mb, fn, args, kwargs), loop)
    return _proxy_main(mb)


async def _run_coroutine(mb: Mailbox, fn: Any, args: Any, kwargs: Any) -> None:
    _CURRENT.set(mb)
    mb.owner = asyncio.current_task()
    try:
        value = await fn(*args, **kwargs)
    except asyncio.CancelledError:
        raise
    except BaseException as e:  # noqa: BLE001 -- the process ends with it
        _finish(mb, None, e)
        return
    _finish(mb, value, None)


def _finish(mb: Mailbox, value: Any, exc: BaseException | None) -> None:
    mb.owner = None
    if mb.closed is None:
        mb.requests.append(("done", (value, exc), None))
        _send(mb.pid, (WAKE, mb.token))


def _async_process(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Return the process body ``spawn`` uses for a coroutine function (see _runtime)."""
    from beamvm import _compiler

    return _compiler.compile_process(_coroutine_process, (fn, args, kwargs))


def _install() -> None:
    from beamvm import _runtime

    _runtime.async_process = _async_process


_install()
