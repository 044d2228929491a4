"""Live introspection of a running VM: top processes, statistics, system monitor, observers.

The functions here answer the questions an operator asks a live BEAM node
(``recon:proc_count/2``, ``recon:proc_window/3``, ``erlang:statistics/1``,
``erlang:system_monitor/2``) without stopping it: the core walks the process table
lock-free with the GIL released, so a query over a million processes costs tens of
milliseconds of one thread and no process waits for it. They work from inside processes
and from plain Python threads while the VM runs; with the VM stopped they raise
``RuntimeError``.

The *observer* is an opt-in Unix-socket server on a plain daemon thread (not a beamvm
process, so it answers even when every scheduler is busy): each request gets one JSON
snapshot of the VM. ``python -m beamvm top --socket PATH`` attaches to it. Turn it on
with ``serve(PATH)``, or start the program with ``BEAMVM_OBSERVER=PATH`` in the
environment: then the socket opens whenever the VM runs and closes (the file removed)
when it stops.

Protocol: the client sends one line per request (empty, or a JSON object such as
``{"n": 20}``); the server answers each with one line of JSON (see :func:`snapshot_json`)
and keeps the connection open for the next request. A request ``{"get": "/api/..."}``
asks for one of the web observer's data routes instead and is answered with
``{"status": 200, "content_type": "...", "body": "..."}``: that is how
``python -m beamvm observer --attach PATH --http PORT`` serves the page for a running
program.

The *web observer* (:func:`serve_http`) serves live charts, top tables, process pages,
JSON and Prometheus ``/metrics`` over HTTP from native threads that never take the
GIL (docs/observer.md).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import socket
import tempfile
import threading
import time
from typing import Any, Literal

from beamvm import _native
from beamvm._native import HttpObserver, Pid

__all__ = [
    "ENV_VAR",
    "HttpObserver",
    "Observer",
    "proc_window",
    "serve",
    "serve_http",
    "set_system_monitor",
    "snapshot",
    "snapshot_json",
    "statistics_full",
    "top",
]

#: Environment variable naming the observer socket to open whenever the VM runs.
ENV_VAR = "BEAMVM_OBSERVER"

#: What :func:`top` and :func:`proc_window` can rank processes by.
By = Literal["message_queue_len", "memory", "reductions"]

log = logging.getLogger("beamvm.observer")

#: How often the server thread wakes to notice ``close()`` (seconds).
_ACCEPT_TICK = 0.2
#: A connected client that sends nothing for this long is dropped (seconds).
_CLIENT_IDLE = 60.0
#: Longest request line accepted (bytes).
_MAX_REQUEST = 4096
#: Most processes per category a client may ask for.
_MAX_N = 1000


def top(n: int = 10, by: By = "message_queue_len") -> list[tuple[Pid, int]]:
    """Return the ``n`` processes with the largest ``by``, largest first, as ``(pid, value)``.

    ``by``: ``"message_queue_len"`` (messages queued), ``"memory"`` (bytes: control
    block, heap, queued messages) or ``"reductions"`` (since the process started).
    Like ``recon:proc_count(By, N)``: one lock-free walk of the process table with the
    GIL released. Raises ``ValueError`` for a bad ``by`` or a negative ``n``,
    ``RuntimeError`` when the VM is not running.
    """
    return _native.top(n, by)


def proc_window(n: int = 10, by: By = "reductions", interval: float = 1.0) -> list[tuple[Pid, int]]:
    """Return the ``n`` processes whose ``by`` grew most over ``interval`` seconds.

    Like ``recon:proc_window(By, N, Ms)``: two walks ``interval`` apart; a process born
    in between counts from zero. Blocks the caller for ``interval`` with the GIL
    released; called from a process it holds that process's scheduler thread (the
    watchdog hands the rest of its queue to the other schedulers), so prefer calling it
    from a plain thread or with a short interval.
    """
    return _native.proc_window(n, by, interval)


def statistics_full() -> dict[str, Any]:
    """Return every scheduler, reduction, GC and dirty-pool counter, durations in seconds.

    See docs/introspection.md for what each key means. Utilisations are since VM start;
    for a rate over an interval take two calls and divide the deltas of
    ``scheduler_wall_time``'s ``(busy, total)`` pairs.
    """
    return _native.statistics_full()


def set_system_monitor(pid: Pid | None) -> Pid | None:
    """Send system monitor events to ``pid`` (None: to no one); return the previous monitor.

    Like ``erlang:system_monitor(Pid, [long_schedule])``: every slice that runs past the
    long_schedule threshold (10 ms) sends ``pid`` the message ``(Atom('monitor'),
    offender, Atom('long_schedule'), [(Atom('timeout'), ms), (Atom('in'), label)])``.
    """
    return _native.set_system_monitor(pid)


def snapshot(n: int = 10) -> dict[str, Any]:
    """Return one observer snapshot with ``Pid`` objects (see :func:`snapshot_json`)."""
    return _native.snapshot(n)


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, Pid):
        return repr(v)
    return v


def snapshot_json(n: int = 10) -> dict[str, Any]:
    """Return a snapshot made of JSON types: what the observer socket sends.

    Keys: ``running`` (False, with ``time`` and ``os_pid`` only, when the VM is
    stopped), ``time`` (Unix seconds), ``os_pid``, ``system_info``, ``memory``,
    ``statistics`` (as :func:`statistics_full`), ``process_count``, ``top``
    (``{"message_queue_len" | "memory" | "reductions": [{"pid": "<0.5.0>", "value":
    n, "name", "current", "status", "message_queue_len", "memory", "reductions"},
    ...]}``) and ``took`` (seconds the VM-side gathering took).
    """
    now = time.time()
    try:
        snap = _native.snapshot(n)
    except RuntimeError:
        if _native.is_running():
            raise
        return {"running": False, "time": now, "os_pid": os.getpid()}
    out: dict[str, Any] = _jsonable(snap)
    out.update(running=True, time=now, os_pid=os.getpid())
    return out


def _default_path() -> str:
    return os.path.join(tempfile.gettempdir(), f"beamvm-{os.getpid()}.sock")


def _claim(path: str) -> None:
    """Remove a stale socket file at ``path``; refuse if something listens there."""
    if not os.path.exists(path):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(0.5)
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    except OSError as e:
        raise OSError(f"cannot serve the beamvm observer at {path}: {e}") from e
    finally:
        probe.close()
    raise OSError(f"cannot serve the beamvm observer at {path}: something already listens there")


class Observer:
    """A running observer server; :meth:`close` stops it and removes the socket file."""

    def __init__(self, path: str) -> None:
        """Bind ``path`` and start serving on a daemon thread (use :func:`serve`)."""
        self.path = path
        _claim(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            sock.listen(16)
            sock.settimeout(_ACCEPT_TICK)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._closed = threading.Event()
        self._clients: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._serve, name=f"beamvm-observer {path}", daemon=True
        )
        self._thread.start()
        _LIVE.add(self)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._closed.is_set()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "serving"
        return f"<beamvm.observer.Observer {self.path!r} {state}>"

    def __enter__(self) -> Observer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving: close the listening socket and clients, remove the socket file."""
        if self._closed.is_set():
            return
        self._closed.set()
        _LIVE.discard(self)
        with self._lock:
            clients = list(self._clients)
        for c in clients:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=2.0)
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._closed.is_set():
                    return
                log.exception("beamvm observer at %s: accept failed", self.path)
                return
            with self._lock:
                self._clients.add(conn)
            threading.Thread(
                target=self._client, args=(conn,), name="beamvm-observer client", daemon=True
            ).start()

    def _client(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(_CLIENT_IDLE)
            f = conn.makefile("rwb")
            while not self._closed.is_set():
                line = f.readline(_MAX_REQUEST)
                if not line:
                    return
                f.write(self._answer(line) + b"\n")
                f.flush()
        except (OSError, ValueError):
            return
        finally:
            with self._lock:
                self._clients.discard(conn)
            conn.close()

    def _answer(self, line: bytes) -> bytes:
        try:
            req = json.loads(line) if line.strip() else {}
            if not isinstance(req, dict):
                raise ValueError('a request is a JSON object, e.g. {"n": 10}')
            if "get" in req:
                return json.dumps(_relayed(req["get"]), separators=(",", ":")).encode()
            n = req.get("n", 10)
            if not isinstance(n, int) or not 0 <= n <= _MAX_N:
                raise ValueError(f"n must be an int between 0 and {_MAX_N}")
            out: Any = snapshot_json(n)
        except Exception as e:  # the client gets the error; the server lives on
            out = {"error": f"{type(e).__name__}: {e}"}
        return json.dumps(out, separators=(",", ":")).encode()


def _relayed(target: Any) -> dict[str, Any]:
    """Answer a relayed web observer request (``{"get": "/api/snapshot?n=10"}``)."""
    if not isinstance(target, str) or not target.startswith("/"):
        raise ValueError('"get" takes a path such as "/api/snapshot?n=10"')
    status, content_type, body = _native._observer_get(target)
    return {"status": status, "content_type": content_type, "body": body}


_LIVE: set[Observer] = set()


def serve(path: str | None = None) -> Observer:
    """Start the observer on the Unix socket ``path`` and return it.

    ``path`` defaults to ``$BEAMVM_OBSERVER``, else ``<tmpdir>/beamvm-<os pid>.sock``.
    The server runs on a daemon thread until :meth:`Observer.close` (or interpreter
    exit), whether or not the VM runs (a snapshot of a stopped VM says
    ``"running": false``). Raises ``OSError`` if another observer listens at ``path``.
    Attach with ``python -m beamvm top --socket PATH``.
    """
    return Observer(path or os.environ.get(ENV_VAR) or _default_path())


def serve_http(port: int = 8080, host: str = "127.0.0.1") -> HttpObserver:
    """Serve the web observer on ``host:port`` and return it (``.port``, ``.url``, ``.close()``).

    The page (``/``) shows live charts (scheduler utilisation, run queues, memory by
    category, processes, reductions/s, messages/s, refreshed every second), the top
    processes by mailbox, memory and reductions, dirty pools and long_schedule events;
    ``/process?pid=<0.5.0>`` shows one process; ``/api/snapshot`` and
    ``/api/process?pid=...`` are the JSON behind them, ``/metrics`` the Prometheus
    text. ``port=0`` picks a free port (read it from ``.port``).

    It runs on native threads that never take the GIL, so it answers while every
    scheduler runs busy Python processes, and it serves whether or not the VM runs (a
    stopped VM reads as not running) until ``close()`` or interpreter exit. It binds
    ``127.0.0.1`` by default: anyone who can reach the port sees every process, so
    bind another address only on a trusted network. Raises ``OSError`` when the port
    cannot be bound (e.g. already in use). See docs/observer.md.
    """
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port must be an int, not {type(port).__name__}")
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be between 0 and 65535, got {port}")
    if not isinstance(host, str) or not host:
        raise TypeError(f"host must be a non-empty str such as '127.0.0.1', not {host!r}")
    server = _native._serve_http(host, port)
    _LIVE_HTTP.difference_update([h for h in _LIVE_HTTP if h.closed])
    _LIVE_HTTP.add(server)
    return server


#: Servers run until ``close()`` or exit, whether or not the caller keeps the handle.
_LIVE_HTTP: set[HttpObserver] = set()


class _FollowVm:
    """Opens the observer at ``path`` while the VM runs (``BEAMVM_OBSERVER``)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.observer: Observer | None = None
        t = threading.Thread(target=self._run, name="beamvm-observer watch", daemon=True)
        t.start()

    def _run(self) -> None:
        while True:
            running = _native.is_running()
            if running and self.observer is None:
                try:
                    self.observer = Observer(self.path)
                except OSError as e:
                    log.warning("%s: %s; the observer stays off", ENV_VAR, e)
                    return
            elif not running and self.observer is not None:
                self.observer.close()
                self.observer = None
            time.sleep(0.05)


def _from_env() -> _FollowVm | None:
    """Honour ``BEAMVM_OBSERVER=PATH`` (called once, on ``import beamvm``)."""
    path = os.environ.get(ENV_VAR)
    return _FollowVm(path) if path else None


@atexit.register
def _close_all() -> None:
    for o in list(_LIVE):
        o.close()
    for h in list(_LIVE_HTTP):
        h.close()


_FOLLOW = _from_env()
