"""Type stub for the native extension module ``beamvm._native``."""

import sys
from collections.abc import Callable
from typing import Any, final

# Everything the module defines (pyo3 lists each added name); stubtest checks it.
__all__ = [
    "Atom",
    "BadArg",
    "Binary",
    "HttpObserver",
    "NoProc",
    "Pid",
    "ProcessExit",
    "Ref",
    "SystemLimit",
    "Timeout",
    "_ReceiveOp",
    "__version__",
    "_after_fork",
    "_alias_count",
    "_dist_start",
    "_dist_stop",
    "_gen_call",
    "_gen_cast",
    "_observer_get",
    "_overdue",
    "_quiesce",
    "_raise_yield_flag",
    "_receive",
    "_recv",
    "_resumed",
    "_serve_http",
    "_serve_http_relay",
    "_set_stop_carrier",
    "_setup",
    "_timeslice_setup",
    "alias",
    "binary_to_term",
    "cancel_timer",
    "demonitor",
    "dist_expose",
    "dist_monitor_node",
    "dist_ping",
    "exit",
    "in_process_",
    "is_alive",
    "is_running",
    "link",
    "make_ref",
    "memory",
    "monitor",
    "node",
    "nodes",
    "proc_window",
    "process_flag",
    "process_info",
    "processes",
    "read_timer",
    "register",
    "roundtrip",
    "run",
    "self_pid",
    "send",
    "send_after",
    "set_system_monitor",
    "snapshot",
    "spawn",
    "spawn_link",
    "spawn_monitor",
    "spawn_opt",
    "start",
    "statistics",
    "statistics_full",
    "stop",
    "system_info",
    "term_to_binary",
    "top",
    "unalias",
    "unlink",
    "unregister",
    "whereis",
]

__version__: str

@final
class Atom:
    """An Erlang atom: an interned name."""

    def __new__(cls, name: str) -> Atom: ...
    @property
    def name(self) -> str: ...
    def __hash__(self) -> int: ...
    def __eq__(self, other: object, /) -> bool: ...
    def __lt__(self, other: Atom, /) -> bool: ...
    def __le__(self, other: Atom, /) -> bool: ...
    def __gt__(self, other: Atom, /) -> bool: ...
    def __ge__(self, other: Atom, /) -> bool: ...

@final
class Pid:
    """A process identifier: node, id, serial and the creation of the VM that made it.

    Shown as ``<0.ID.SERIAL>`` for a process of the current VM; a pid of another VM (one
    that has stopped) shows as ``<node.ID.SERIAL.CREATION>`` and is treated as a dead
    process's everywhere.
    """

    @property
    def node(self) -> Atom:
        """The node of the process (``nonode@nohost`` for a VM that is not a node)."""

    @property
    def id(self) -> int:
        """The process's id on its node."""

    @property
    def index(self) -> int:
        """The process's slot in its VM's process table (the same as ``id``)."""

    @property
    def serial(self) -> int:
        """The slot's reuse count when the process was made."""

    @property
    def creation(self) -> int:
        """The creation of the VM that made the pid (a new number per start)."""

    def __hash__(self) -> int: ...
    def __eq__(self, other: object, /) -> bool: ...
    def __lt__(self, other: Pid, /) -> bool: ...
    def __le__(self, other: Pid, /) -> bool: ...
    def __gt__(self, other: Pid, /) -> bool: ...
    def __ge__(self, other: Pid, /) -> bool: ...

@final
class Ref:
    """A unique reference, shown as ``#Ref<0.N>``."""

    def __hash__(self) -> int: ...
    def __eq__(self, other: object, /) -> bool: ...
    def __lt__(self, other: Ref, /) -> bool: ...
    def __le__(self, other: Ref, /) -> bool: ...
    def __gt__(self, other: Ref, /) -> bool: ...
    def __ge__(self, other: Ref, /) -> bool: ...

@final
class Binary:
    """Bytes on the VM's shared binary heap, exposed through the buffer protocol."""

    def __new__(cls, data: bytes) -> Binary: ...
    def __len__(self) -> int: ...
    def __bytes__(self) -> bytes: ...
    if sys.version_info >= (3, 12):
        def __buffer__(self, flags: int, /) -> memoryview: ...
    def __hash__(self) -> int: ...
    def __eq__(self, other: object, /) -> bool: ...
    @property
    def refcount(self) -> int: ...
    @property
    def address(self) -> int: ...

class Timeout(Exception):
    """A receive timed out with no default."""

class SystemLimit(Exception):
    """A VM limit was hit (e.g. the process table is full)."""

class NoProc(Exception):
    """The target process does not exist."""

class BadArg(Exception):
    """The VM rejected an argument."""

class ProcessExit(BaseException):
    """exit(reason) in a process; raised by run() when main was killed."""

def _setup(
    *,
    kill: Callable[..., Any],
    new_cell: Callable[..., Any],
    compile_process: Callable[..., Any],
    preempt: object,
    request: type,
    any: object,
    missing: object,
    report: Callable[..., Any],
    tl: Any,
) -> None: ...
def _receive(*patterns: Any, timeout: float | None = None, default: Any = ...) -> _ReceiveOp:
    """Start a receive: the iterator process code runs with ``yield from`` (``receive``)."""

def _recv(*patterns: Any, timeout: float | None = None, default: Any = ...) -> Any:
    """Fast receive for compiled code: a queued match, or an op for the frame to yield."""

@final
class _ReceiveOp:
    """A receive waiting in a process (driven by the native scheduler)."""

    def __iter__(self) -> _ReceiveOp: ...
    def __next__(self) -> Any: ...
    def send(self, value: Any) -> BaseException: ...

def _gen_call(server: Any, request: Any, timeout: float | None = ...) -> _ReceiveOp:
    """Start a ``gen_server.call``: the op its primitive runs with ``yield from``."""

def _gen_cast(server: Any, msg: Any) -> None:
    """Send ``('$gen_cast', msg)`` to a server (``gen_server.cast``); never fails."""

def _quiesce(timeout: float) -> int:
    """At exit: keep VM threads out of Python; wait for dirty calls still running."""
def _after_fork() -> None:
    """In the child of os.fork(): forget the parent's VM."""

# timeslice.rs: slices end by time as well as by reductions
def _timeslice_setup(cell: Any) -> None:
    """Install the shared yield-now cell compiled code reads."""

def _overdue(first_check: bool = False) -> bool:
    """Whether the caller's own slice is the overdue one (clears the flag)."""

def _resumed() -> None:
    """Restart the calling thread's slice clock (compiled code, after a budget yield)."""

def _raise_yield_flag(overdue: bool = False) -> None:
    """Raise the yield-now flag (tests)."""


# compiled.rs: a process body that raised StopIteration
def _set_stop_carrier(t: type) -> None:
    """Register the type compiled code returns StopIteration in."""
def start(**config: Any) -> None: ...
def stop() -> bool: ...
def is_running() -> bool: ...
def run(
    main: Callable[..., Any], args: tuple[Any, ...], config: dict[str, Any] | None = None
) -> Any: ...
def spawn(f: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Pid:
    """Spawn ``f(*args, **kwargs)``; arguments with a term form are copied, others shared."""

def spawn_link(f: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Pid: ...
def spawn_monitor(f: Callable[..., Any], /, *args: Any, **kwargs: Any) -> tuple[Pid, Ref]: ...
def spawn_opt(
    f: Callable[..., Any],
    args: tuple[Any, ...] | None = None,
    kwargs: dict[str, Any] | None = None,
    *,
    link: bool = False,
    monitor: bool = False,
    priority: str | Atom | None = None,
    trap_exit: bool = False,
) -> Pid | tuple[Pid, Ref]: ...
def send(dest: Pid | Ref | Atom | str | tuple[Any, Any, Any], msg: Any) -> Any:
    """Send ``msg`` to a pid, an alias, a registered name or a via name; returns ``msg``."""
def self_pid() -> Pid: ...
def link(pid: Pid) -> bool: ...
def unlink(pid: Pid) -> bool: ...
def monitor(target: Pid | Atom | str, *, alias: str | Atom | None = None) -> Ref:
    """Monitor ``target``; with ``alias='demonitor'`` the ref is also an alias."""

def demonitor(ref_: Ref, flush: bool = False) -> bool: ...
def alias(*, reply: bool = False) -> Ref:
    """Create an alias of the calling process (OTP 24 ``alias/0,1``)."""

def unalias(ref_: Ref) -> bool:
    """Deactivate an alias of the calling process; whether it was active."""

def _alias_count() -> int: ...
def exit(*args: Any) -> bool: ...
def process_flag(flag: str | Atom, value: Any) -> Any: ...
def register(name: str | Atom, pid: Pid | None = None) -> bool: ...
def unregister(name: str | Atom) -> bool: ...
def whereis(name: str | Atom) -> Pid | None: ...
def make_ref() -> Ref: ...
def send_after(seconds: float, dest: Pid | Atom | str, msg: Any) -> Ref: ...
def cancel_timer(ref_: Ref) -> float | None: ...
def read_timer(ref_: Ref) -> float | None: ...
def is_alive(pid: Pid) -> bool: ...
def process_info(pid: Pid | None = None) -> dict[str, Any] | None: ...
def processes() -> list[Pid]: ...
def memory() -> dict[str, int]: ...
def system_info() -> dict[str, Any]: ...
def statistics() -> dict[str, Any]: ...
def roundtrip(obj: Any) -> Any: ...
def in_process_() -> bool: ...
def _dist_start(
    name: str,
    cookie: str | None = None,
    hidden: bool = False,
    listen: str | None = None,
    net_ticktime: float | None = None,
    decode_binaries: str | None = None,
) -> Atom: ...
def _dist_stop() -> None: ...
def node() -> Atom: ...
def nodes() -> list[Atom]: ...
def dist_ping(node: str | Atom, timeout: float = 5.0) -> bool: ...
def dist_expose(module: str, function: str, f: Any) -> None: ...
def dist_monitor_node(node: str | Atom, flag: bool) -> bool: ...
def term_to_binary(value: Any) -> bytes: ...
def binary_to_term(data: bytes) -> Any: ...

# --- introspection (crates/vm-python/src/introspect.rs; wrapped by beamvm.observer) ---
def top(n: int = 10, by: str = "message_queue_len") -> list[tuple[Pid, int]]: ...
def proc_window(
    n: int = 10, by: str = "reductions", interval: float = 1.0
) -> list[tuple[Pid, int]]: ...
def statistics_full() -> dict[str, Any]: ...
def set_system_monitor(pid: Pid | None) -> Pid | None: ...
def snapshot(n: int = 10) -> dict[str, Any]: ...

# --- end introspection ---

# --- web observer (crates/vm-python/src/observer_http.rs; wrapped by beamvm.observer) ---
@final
class HttpObserver:
    """A running web observer; ``close()`` stops it and frees the port."""

    @property
    def port(self) -> int: ...
    @property
    def host(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def closed(self) -> bool: ...
    def close(self) -> None: ...
    def __enter__(self) -> HttpObserver: ...
    def __exit__(self, *exc: object) -> None: ...

def _serve_http(host: str, port: int) -> HttpObserver: ...
def _serve_http_relay(socket: str, host: str, port: int) -> HttpObserver: ...
def _observer_get(target: str) -> tuple[int, str, str]: ...

# --- end web observer ---
