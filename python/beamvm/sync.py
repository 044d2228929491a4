"""Process-aware synchronisation: a lock and a queue built on messages.

``threading.Lock`` and ``queue.Queue`` belong to OS threads. A beamvm process is not a
thread: many run on one scheduler thread and a process may move between threads. Blocking
on a thread lock stops every process on the scheduler thread (beamvm polls it instead and
logs a warning, see ``beamvm._blocking``), and an ``RLock`` taken on one thread cannot be
released from another. The types here are what process code should use instead: each is
a small server process; waiting is a ``receive``, so a waiting process is suspended and
its scheduler runs others, whichever scheduler threads the processes are on.

```python
from beamvm import sync

def worker(lock, q):
    with lock:                # in process code: waits as a process
        total = q.get()
        q.put(total + 1)

def main():
    lock, q = sync.Lock(), sync.Queue()
    q.put(0)
    ...
```

Both must be created while a VM runs (they spawn their server) and used from processes
(``acquire``/``get``/bounded ``put`` wait with ``receive``). Items put on a queue are
messages: copied, and they must have a term form (what ``send`` accepts). A lock held by a
process that exits is released (its server monitors the holder), as Erlang-style locks
are. When the ``Lock``/``Queue`` object is garbage collected, its server stops.

For a blocking call that has no message-based equivalent (a ``queue.Queue`` fed by a
plain thread, a socket), run it on the dirty IO pool instead: ``beamvm.dirty_io(q.get)``
suspends the process while a pool thread waits.
"""

from __future__ import annotations

import queue as _queue
import weakref
from collections import deque
from typing import Any

from . import ANY, Timeout, _blocking, _native, receive
from ._native import Atom

__all__ = ["Lock", "Queue"]

_STOP = Atom("stop")
_DOWN = Atom("DOWN")


def _monitor(pid: Any) -> Any:
    return _native.monitor(pid)


def _lock_server() -> None:
    """Serve the lock: grant it to one process at a time, in request order."""
    holder = None  # (pid, monitor ref)
    waiters: deque[tuple[Any, Any]] = deque()  # (pid, tag)
    while True:
        msg = receive()
        if msg == _STOP:
            return
        kind = msg[0]
        if kind == "acquire":
            _, pid, tag = msg
            if holder is None:
                holder = (pid, _monitor(pid))
                _native.send(pid, (tag, True))
            else:
                waiters.append((pid, tag))
        elif kind == "release":  # tag None: no reply wanted (the end of a with block)
            _, pid, tag = msg
            if holder is None or holder[0] != pid:
                if tag is not None:
                    _native.send(pid, (tag, False))
                continue
            _native.demonitor(holder[1])
            if tag is not None:
                _native.send(pid, (tag, True))
            holder = _grant(waiters)
        elif kind == "cancel":  # an acquire that timed out
            _, pid, tag = msg
            if (pid, tag) in waiters:
                waiters.remove((pid, tag))
                _native.send(pid, (tag, "cancelled"))
            else:  # granted meanwhile: the grant arrives first, and the client releases
                _native.send(pid, (tag, "granted"))
        elif kind == "locked":
            _native.send(msg[1], (msg[2], holder is not None))
        elif kind == _DOWN and holder is not None and msg[1] == holder[1]:
            holder = _grant(waiters)  # the holder exited: the lock is free


def _grant(waiters: deque[tuple[Any, Any]]) -> tuple[Any, Any] | None:
    while waiters:
        pid, tag = waiters.popleft()
        if _native.is_alive(pid):
            _native.send(pid, (tag, True))
            return (pid, _monitor(pid))
    return None


def _call(server: Any, kind: str, *args: Any, timeout: float | None = None) -> Any:
    """Send ``(kind, self, tag, *args)`` to ``server`` and wait for ``(tag, answer)``."""
    tag = _native.make_ref()
    _native.send(server, (kind, _native.self_pid(), tag, *args))
    return receive((tag, ANY), timeout=timeout)[1]


def _stop(server: Any) -> None:
    try:
        if _native.is_running():
            _native.send(server, _STOP)
    except Exception:  # noqa: BLE001 -- the VM is gone: so is the server
        pass


class Lock:
    """A lock for processes: ``acquire`` waits as a process, the holder's exit releases it.

    Use it as ``threading.Lock`` is used -- ``with lock:`` in process code, or
    ``acquire()``/``release()`` -- but only from processes. Unlike ``threading.Lock``
    only the holder may release it (``RuntimeError`` otherwise), and it is not reentrant
    (a holder that acquires again waits forever, like ``threading.Lock``).
    """

    def __init__(self) -> None:
        self._server = _native.spawn(_lock_server)
        weakref.finalize(self, _stop, self._server)

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Take the lock; wait (at most ``timeout`` seconds if >= 0) unless not ``blocking``.

        Returns whether the lock was taken.
        """
        if not blocking:
            timeout = 0
        tag = _native.make_ref()
        me = _native.self_pid()
        _native.send(self._server, ("acquire", me, tag))
        try:
            return receive((tag, ANY), timeout=None if timeout < 0 else timeout)[1]
        except Timeout:
            _native.send(self._server, ("cancel", me, tag))
            # the grant, if it was sent before the cancel arrived, comes first
            if receive((tag, ANY))[1] is True:
                receive((tag, ANY))  # "granted"
                self.release()
            return False

    def release(self) -> None:
        """Give the lock back; ``RuntimeError`` if the calling process does not hold it."""
        if not _call(self._server, "release"):
            raise RuntimeError("release of a beamvm.sync.Lock the calling process does not hold")

    def locked(self) -> bool:
        """Whether some process holds the lock."""
        return bool(_call(self._server, "locked"))

    def _release_async(self) -> None:
        # The end of a with block: the caller holds the lock, nothing can go wrong, so no
        # reply is awaited (``__exit__`` runs from C, where a process cannot wait).
        _native.send(self._server, ("release", _native.self_pid(), None))

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<beamvm.sync.Lock served by {self._server!r}>"


def _queue_server(maxsize: int) -> None:
    """Serve the queue: items in order, getters and (bounded) putters waiting in order."""
    items: deque[Any] = deque()
    getters: deque[tuple[Any, Any]] = deque()  # (pid, tag)
    putters: deque[tuple[Any, Any, Any]] = deque()  # (pid, tag, item)
    while True:
        msg = receive()
        if msg == _STOP:
            return
        kind = msg[0]
        if kind == "put":  # ("put", pid, tag, item); tag None: no reply wanted
            _, pid, tag, item = msg
            if maxsize > 0 and len(items) >= maxsize and not getters:
                putters.append((pid, tag, item))
                continue
            _deliver(items, getters, item)
            if tag is not None:
                _native.send(pid, (tag, True))
        elif kind == "get":
            _, pid, tag = msg
            if items:
                _native.send(pid, (tag, (True, items.popleft())))
                _admit(items, putters, maxsize)
            else:
                getters.append((pid, tag))
        elif kind == "cancel":  # a get or put that timed out
            _, pid, tag = msg
            for waiting in (getters, putters):
                for w in waiting:
                    if w[0] == pid and w[1] == tag:
                        waiting.remove(w)
                        _native.send(pid, (tag, "cancelled"))
                        break
                else:
                    continue
                break
            else:  # answered meanwhile: the answer arrives first
                _native.send(pid, (tag, "answered"))
        elif kind == "qsize":
            _native.send(msg[1], (msg[2], len(items)))


def _deliver(items: deque[Any], getters: deque[tuple[Any, Any]], item: Any) -> None:
    while getters:
        pid, tag = getters.popleft()
        if _native.is_alive(pid):
            _native.send(pid, (tag, (True, item)))
            return
    items.append(item)


def _admit(items: deque[Any], putters: deque[tuple[Any, Any, Any]], maxsize: int) -> None:
    while putters and len(items) < maxsize:
        pid, tag, item = putters.popleft()
        items.append(item)
        _native.send(pid, (tag, True))


class Queue:
    """A FIFO queue for processes, with ``queue.Queue``'s methods and exceptions.

    ``get`` waits as a process; with ``maxsize > 0`` a ``put`` on a full queue waits too.
    Items are messages (copied; they need a term form). ``queue.Empty`` and
    ``queue.Full`` are raised as ``queue.Queue`` raises them.
    """

    def __init__(self, maxsize: int = 0) -> None:
        self.maxsize = maxsize
        self._server = _native.spawn(_queue_server, maxsize)
        weakref.finalize(self, _stop, self._server)

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Put ``item`` at the end; on a full bounded queue wait (``queue.Full`` on timeout)."""
        if self.maxsize <= 0:
            # unbounded: never waits, so no reply (ordering per sender is kept)
            _native.send(self._server, ("put", _native.self_pid(), None, item))
            return
        if not self._wait("put", item, block, timeout):
            raise _queue.Full

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Take the first item; wait for one (``queue.Empty`` on timeout or not ``block``)."""
        got = self._wait("get", None, block, timeout)
        if not got:
            raise _queue.Empty
        return got[1]

    def put_nowait(self, item: Any) -> None:
        """``put(item, block=False)``."""
        self.put(item, block=False)

    def get_nowait(self) -> Any:
        """``get(block=False)``."""
        return self.get(block=False)

    def qsize(self) -> int:
        """Items queued now."""
        return int(_call(self._server, "qsize"))

    def empty(self) -> bool:
        """Whether no item is queued now."""
        return self.qsize() == 0

    def full(self) -> bool:
        """Whether a bounded queue is at its ``maxsize`` now."""
        return 0 < self.maxsize <= self.qsize()

    def _wait(self, kind: str, item: Any, block: bool, timeout: float | None) -> Any:
        tag = _native.make_ref()
        me = _native.self_pid()
        msg = ("put", me, tag, item) if kind == "put" else ("get", me, tag)
        _native.send(self._server, msg)
        wait = 0 if not block else timeout
        try:
            return receive((tag, ANY), timeout=wait)[1]
        except Timeout:
            _native.send(self._server, ("cancel", me, tag))
            # an answer sent before the cancel arrived comes first: keep it
            answer = receive((tag, ANY))[1]
            if answer == "cancelled":
                return False
            receive((tag, ANY))  # "answered"
            return answer

    def __repr__(self) -> str:
        return f"<beamvm.sync.Queue maxsize={self.maxsize} served by {self._server!r}>"


# ``with lock:`` in compiled process code: the with statement enters the lock with a
# compiled acquire (a suspension point) instead of calling __enter__ from C.
_blocking.register_process_cm(Lock, "acquire", "_release_async")
