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
    "KILL",
    "NORMAL",
    "NoProc",
    "Pid",
    "ProcessExit",
    "RpcCall",
    "Ref",
    "SHUTDOWN",
    "Socket",
    "SystemLimit",
    "Timeout",
    "_ReceiveOp",
    "__version__",
    "_after_fork",
    "_alias_count",
    "_allocator_stats",
    "_dist_start",
    "_dist_stop",
    "_gen_call",
    "_gen_cast",
    "_gen_reply",
    "_observer_get",
    "_overdue",
    "_resume_grace",
    "_pid",
    "_process_generator",
    "_quiesce",
    "_raise_yield_flag",
    "_receive",
    "_recv",
    "_recv_any",
    "_ref",
    "_resumed",
    "_serve_http",
    "_serve_http_relay",
    "_set_message_hook",
    "_set_stop_carrier",
    "_set_thread_hooks",
    "_setup",
    "_tcp_accept",
    "_tcp_cancel",
    "_tcp_close",
    "_tcp_connect",
    "_tcp_drain",
    "_tcp_controlling_process",
    "_tcp_getopts",
    "_tcp_listen",
    "_tcp_owner",
    "_tcp_peername",
    "_tcp_recv",
    "_tcp_send",
    "_tcp_setopts",
    "_tcp_shutdown",
    "_tcp_socket_count",
    "_tcp_sockname",

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
    "release_memory",
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
    def __reduce__(self) -> tuple[Callable[..., Pid], tuple[str, int, int, int]]: ...
    def __copy__(self) -> Pid: ...
    def __deepcopy__(self, memo: Any, /) -> Pid: ...

@final
class Ref:
    """A unique reference, shown as ``#Ref<0.N>``."""

    def __hash__(self) -> int: ...
    def __eq__(self, other: object, /) -> bool: ...
    def __lt__(self, other: Ref, /) -> bool: ...
    def __le__(self, other: Ref, /) -> bool: ...
    def __gt__(self, other: Ref, /) -> bool: ...
    def __ge__(self, other: Ref, /) -> bool: ...
    def __reduce__(self) -> tuple[Callable[..., Ref], tuple[str, int, list[int]]]: ...
    def __copy__(self) -> Ref: ...
    def __deepcopy__(self, memo: Any, /) -> Ref: ...

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

#: The atom ``normal``: the exit reason of a process that ended normally.
NORMAL: Atom
#: The atom ``kill``: an exit signal that cannot be trapped.
KILL: Atom
#: The atom ``shutdown``: the reason a supervisor stops a child with.
SHUTDOWN: Atom

def _pid(node: str, id: int, serial: int, creation: int) -> Pid:
    """Rebuild a pickled Pid."""

def _ref(node: str, creation: int, words: list[int]) -> Ref:
    """Rebuild a pickled Ref."""

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
    cell_remaining: int,
    cell_slice_start: int,
) -> None: ...
def _receive(*patterns: Any, timeout: float | None = None, default: Any = ...) -> _ReceiveOp:
    """Start a receive: the iterator process code runs with ``yield from`` (``receive``)."""

def _recv(*patterns: Any, timeout: float | None = None, default: Any = ...) -> Any:
    """Fast receive for compiled code: a queued match, or an op for the frame to yield."""

def _recv_any(timeout: float | None = None) -> Any:
    """``_recv(timeout=timeout)``: the next message, or an op for the frame to yield."""

@final
class _ReceiveOp:
    """A receive waiting in a process (driven by the native scheduler)."""

    def __iter__(self) -> _ReceiveOp: ...
    def __next__(self) -> Any: ...
    def send(self, value: Any) -> BaseException: ...

def _gen_call(server: Any, request: Any, timeout: float | None = ...) -> _ReceiveOp:
    """Start a ``gen_server.call``: the op its primitive runs with ``yield from``."""

def _gen_reply(from_: Any, value: Any) -> bool:
    """Answer a call of a caller on this VM through its alias; False for any other from_."""

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

def _resume_grace() -> bool:
    """Whether the caller's slice is still within the time its resume took."""

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
def send(
    dest: Pid | Ref | Atom | str | tuple[Atom | str, Atom | str] | tuple[Any, Any, Any],
    msg: Any,
) -> Any:
    """Send ``msg`` to a pid, an alias, a name, ``(name, node)`` or a via name; returns it."""
def self_pid() -> Pid: ...
def link(pid: Pid) -> bool: ...
def unlink(pid: Pid) -> bool: ...
def monitor(
    target: Pid | Atom | str | tuple[Atom | str, Atom | str],
    *,
    alias: str | Atom | None = None,
) -> Ref:
    """Monitor a pid, a name or ``(name, node)``; ``alias='demonitor'``: the ref aliases."""

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
def release_memory() -> int: ...
def _allocator_stats() -> str: ...
def system_info() -> dict[str, Any]: ...
def statistics() -> dict[str, Any]: ...
def roundtrip(obj: Any) -> Any: ...

# --- tracing (crates/vm-python/src/{stacktrace,msgtrace,threadtrace}.rs; beamvm.trace) ---
def _process_generator(pid: Pid) -> Any: ...
def _set_message_hook(hook: Callable[[str, Any, Any], Any] | None) -> None: ...
def _set_thread_hooks(trace: Any, profile: Any) -> None: ...
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
def nodes(kind: str = "visible") -> list[Atom]: ...
def dist_ping(node: str | Atom, timeout: float = 5.0) -> bool: ...
def dist_expose(module: str, function: str, f: Any, runner: Any) -> None: ...

@final
class RpcCall:
    """One call of an exposed function, handed to the process that runs it."""

    def args(self) -> tuple[Any, ...]: ...
    def done(self, value: Any) -> bool: ...
    def fail(self, exc: BaseException) -> bool: ...
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

# tcp.rs: beamvm.tcp's native half (sockets owned by processes)
@final
class Socket:
    """A socket owned by a process (``beamvm.tcp``); travels as ``('$socket', id)``."""

    @property
    def id(self) -> int: ...
    def __eq__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...

def _tcp_listen(
    ip: str | None,
    port: int,
    path: str | None,
    backlog: int,
    reuseaddr: bool,
    packet: Any,
    packet_size: int,
    active: Any,
    nodelay: bool,
) -> Socket:
    """Listen; the caller owns the listener."""

def _tcp_accept(ls: Any) -> Socket | None:
    """Take a waiting connection, or return None (the completion comes as a message)."""

def _tcp_connect(
    ip: str | None,
    port: int,
    path: str | None,
    packet: Any,
    packet_size: int,
    active: Any,
    nodelay: bool,
) -> Socket:
    """Start a connect; the outcome comes as a message."""

def _tcp_send(s: Any, data: Any) -> bool:
    """Queue data; False: wait for the send completion."""

def _tcp_recv(s: Any, length: int) -> Any:
    """Passive read: data, or None (the completion comes as a message)."""

def _tcp_setopts(
    s: Any,
    packet: Any = None,
    packet_size: int | None = None,
    active: Any = None,
    nodelay: bool | None = None,
) -> None:
    """Change the options given."""

def _tcp_getopts(s: Any) -> dict[str, Any]:
    """Return the options now."""

def _tcp_owner(s: Any) -> Pid | None:
    """Return the socket's owner, None once closed."""

def _tcp_controlling_process(s: Any, pid: Any) -> None:
    """Hand the socket to pid (owner only)."""

def _tcp_close(s: Any) -> None:
    """Close (idempotent)."""

def _tcp_drain(s: Any) -> int:
    """Bytes still queued to send (0: close now); else wait for the send completion."""

def _tcp_shutdown(s: Any, how: str) -> None:
    """Shut down read, write or read_write."""

def _tcp_cancel(s: Any) -> bool:
    """Withdraw the caller's wait on s: True if it was waiting."""

def _tcp_peername(s: Any) -> Any:
    """Return the peer's address."""

def _tcp_sockname(s: Any) -> Any:
    """Return the local address."""

def _tcp_socket_count() -> int:
    """Open sockets in the running VM."""
