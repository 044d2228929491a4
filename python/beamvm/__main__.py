"""``python -m beamvm``: operator tools for a running beamvm program.

``python -m beamvm top [--socket PATH] [--interval 1.0] [--once]`` attaches to the
observer of a running program (started with ``BEAMVM_OBSERVER=PATH`` in its environment,
or after it called ``beamvm.observer.serve(PATH)``) and shows, refreshed every
``--interval`` seconds: scheduler utilisation over the last interval, dirty pools, run
queues, reductions/s, memory by category and the top processes by mailbox, memory and
reductions. ``q`` or Ctrl-C quits and restores the terminal. ``--once`` prints one frame
as plain text (two snapshots ``--interval`` apart, so rates are real) and exits.

``python -m beamvm observer --attach PATH [--http 8080] [--host 127.0.0.1]`` serves the
web observer (live charts, top tables, process pages, ``/metrics``) for the running
program whose observer socket is PATH; it prints the page's address and serves until
Ctrl-C. Port 0 picks a free one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import shutil
import socket
import sys
from collections.abc import Callable, Iterator
from typing import Any, TextIO

ENV_VAR = "BEAMVM_OBSERVER"  # same as beamvm.observer.ENV_VAR (kept import-free here)

_BAR = 20
_CATEGORIES = ("message_queue_len", "memory", "reductions")
_TITLES = {
    "message_queue_len": "TOP BY MAILBOX",
    "memory": "TOP BY MEMORY",
    "reductions": "TOP BY REDS",
}


class ObserverError(Exception):
    """The observer could not be reached or answered with an error."""


class Client:
    """A connection to a beamvm observer socket."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        """Connect to the observer at ``path``; raise :class:`ObserverError` if none."""
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(path)
        except OSError as e:
            self._sock.close()
            raise ObserverError(
                f"no beamvm observer at {path}: start your program with {ENV_VAR}={path} "
                f"or call beamvm.observer.serve({path!r}) ({e.strerror or e})"
            ) from None
        self._file = self._sock.makefile("rwb")

    def snapshot(self, n: int = 10) -> dict[str, Any]:
        """Request one snapshot with ``n`` processes per category."""
        try:
            self._file.write(json.dumps({"n": n}).encode() + b"\n")
            self._file.flush()
            line = self._file.readline()
        except OSError as e:
            raise ObserverError(f"the beamvm observer at {self.path} went away: {e}") from None
        if not line:
            raise ObserverError(f"the beamvm observer at {self.path} went away")
        snap: dict[str, Any] = json.loads(line)
        if "error" in snap:
            raise ObserverError(f"the beamvm observer at {self.path}: {snap['error']}")
        return snap

    def close(self) -> None:
        """Close the connection."""
        with contextlib.suppress(OSError):
            self._file.close()
        self._sock.close()


# ----------------------------------------------------------------------------- rendering


def human_bytes(n: float) -> str:
    """Format a byte count: ``1.5 MiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def human_count(n: float) -> str:
    """Format a count compactly: ``12.3k``, ``4.56M``."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.0f}" if float(n).is_integer() else f"{n:.1f}"


def bar(frac: float, width: int = _BAR) -> str:
    """Draw a utilisation bar ``[|||||     ]``."""
    frac = min(max(frac, 0.0), 1.0)
    full = round(frac * width)
    return "[" + "|" * full + " " * (width - full) + "]"


def _delta_util(cur: list[float], prev: list[float] | None) -> float:
    """busy/total over the interval between two ``(busy, total)`` pairs (else since start)."""
    if prev is not None:
        db, dt = cur[0] - prev[0], cur[1] - prev[1]
        if dt > 0:
            return min(max(db / dt, 0.0), 1.0)
    return cur[0] / cur[1] if cur[1] > 0 else 0.0


def _proc_reds(snap: dict[str, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for rows in snap.get("top", {}).values():
        for r in rows:
            if "reductions" in r:
                out[r["pid"]] = r["reductions"]
    return out


def render(
    cur: dict[str, Any],
    prev: dict[str, Any] | None,
    path: str,
    width: int = 100,
    height: int | None = None,
) -> list[str]:
    """Lay out one frame as lines of at most ``width`` characters."""
    head = f"beamvm top  {path}  (q quits)"
    if not cur.get("running", False):
        return [head[:width], "", f"the VM in OS process {cur.get('os_pid')} is not running"]
    si, st, mem = cur["system_info"], cur["statistics"], cur["memory"]
    pst = prev["statistics"] if prev and prev.get("running") else None
    dt = st["uptime"] - pst["uptime"] if pst else 0.0
    rate_note = f"over the last {dt:.1f}s" if pst and dt > 0 else "since start"

    def rate(key: str) -> str:
        if not pst or dt <= 0:
            return "-"
        return human_count((st[key] - pst[key]) / dt)

    lines = [
        f"{head}  pid {cur['os_pid']}  up {st['uptime']:.0f}s",
        f"processes {cur['process_count']:,} / {si['process_limit']:,}   "
        f"registered {si['registered']}   timers {si['timers']}   "
        f"atoms {si['atom_count']:,}/{si['atom_limit']:,}",
        f"reductions/s {rate('total_reductions')}   context switches/s "
        f"{rate('context_switches')}   spawned {st['spawned']:,}   exited {st['exited']:,}   "
        f"gcs {st['gcs']:,}",
        f"long_schedules {st['long_schedules']}   watchdog takeovers "
        f"{st['watchdog_takeovers']}   snapshot took {cur['took'] * 1e3:.1f} ms   "
        f"v{si['version']}",
        "",
        f"SCHEDULERS {si['schedulers_online']}/{si['schedulers']} online, utilisation {rate_note}",
    ]
    prev_wall = pst["scheduler_wall_time"] if pst else None
    for i, wall in enumerate(st["scheduler_wall_time"]):
        u = _delta_util(wall, prev_wall[i] if prev_wall and i < len(prev_wall) else None)
        rq = st["run_queue_lengths"][i] if i < len(st["run_queue_lengths"]) else 0
        lines.append(
            f"  scheduler {i + 1:<4}{bar(u)} {u * 100:5.1f}%  run queue {rq:<6} "
            f"max slice {st['longest_slice'][i] * 1e3:.1f} ms"
        )
    lines.append(f"  global run queue {st['global_run_queue']}")
    for kind, threads in (("cpu", "dirty_cpu_schedulers"), ("io", "dirty_io_schedulers")):
        key = f"dirty_{kind}_wall_time"
        u = _delta_util(st[key], pst[key] if pst else None)
        lines.append(
            f"  dirty {kind:<3} x{si[threads]:<4}{bar(u)} {u * 100:5.1f}%  queued "
            f"{st[f'dirty_{kind}_queued']:<9} done {st[f'dirty_{kind}_completed']:,}"
        )
    lines += [
        "",
        f"MEMORY  total {human_bytes(mem['total'])}",
        f"  processes {human_bytes(mem['processes'])}   binary {human_bytes(mem['binary'])}   "
        f"atom {human_bytes(mem['atom'])}   system {human_bytes(mem['system'])}",
    ]
    rows_each = 10
    if height is not None:
        rows_each = max(1, (height - len(lines) - 2 * 3) // 3)
    prev_reds = _proc_reds(prev) if prev else {}
    for by in _CATEGORIES:
        rows = cur["top"].get(by, [])
        if by == "message_queue_len":
            rows = [r for r in rows if r["value"] > 0]
        lines += [
            "",
            f"{_TITLES[by]:<18}{'VALUE':>9} {'MBOX':>7} {'MEMORY':>10} {'REDS/S':>7}  "
            "NAME / FUNCTION",
        ]
        if not rows:
            lines.append("  (no messages queued)" if by == "message_queue_len" else "  (none)")
        for r in rows[:rows_each]:
            value = human_bytes(r["value"]) if by == "memory" else human_count(r["value"])
            name = r.get("name") or r.get("current") or f"({r.get('status', 'exited')})"
            rps = "-"
            if pst and dt > 0 and r["pid"] in prev_reds and "reductions" in r:
                rps = human_count(max(r["reductions"] - prev_reds[r["pid"]], 0) / dt)
            mbox = human_count(r["message_queue_len"]) if "message_queue_len" in r else "-"
            pmem = human_bytes(r["memory"]) if "memory" in r else "-"
            lines.append(f"  {r['pid']:<16}{value:>9} {mbox:>7} {pmem:>10} {rps:>7}  {name}")
    return [ln[:width] for ln in lines]


# ----------------------------------------------------------------------------- terminal


@contextlib.contextmanager
def _terminal(out: TextIO) -> Iterator[bool]:
    """Alternate screen, hidden cursor, keys without Enter; yields whether keys can be read."""
    interactive = sys.stdin.isatty()
    saved = None
    if interactive:
        import termios
        import tty

        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)
    out.write("\x1b[?1049h\x1b[?25l")
    out.flush()
    try:
        yield interactive
    finally:
        out.write("\x1b[?25h\x1b[?1049l")
        out.flush()
        if saved is not None:
            import termios

            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)


def _size(out: TextIO) -> os.terminal_size:
    """Return the terminal's real size (COLUMNS/LINES in the environment go stale)."""
    try:
        return os.get_terminal_size(out.fileno())
    except (OSError, ValueError):
        return shutil.get_terminal_size()


def _wait_for_quit(seconds: float, interactive: bool) -> bool:
    """Wait up to ``seconds``; return True if ``q`` was pressed."""
    if not interactive:
        import time

        time.sleep(seconds)
        return False
    ready, _, _ = select.select([sys.stdin], [], [], seconds)
    if ready:
        ch = os.read(sys.stdin.fileno(), 32)
        return b"q" in ch or b"Q" in ch
    return False


def top(path: str, interval: float, once: bool, out: TextIO = sys.stdout) -> int:
    """Run the ``top`` view against the observer at ``path``; return the exit status."""
    client = Client(path)
    try:
        if once:
            import time

            prev = client.snapshot()
            time.sleep(interval)
            cur = client.snapshot()
            out.write("\n".join(render(cur, prev, path, width=200)) + "\n")
            return 0
        prev = None
        with _terminal(out) as interactive:
            while True:
                cur = client.snapshot()
                size = _size(out)
                frame = render(cur, prev, path, size.columns, size.lines - 1)
                out.write("\x1b[H\x1b[2J" + "\r\n".join(frame) + "\r\n")
                out.flush()
                prev = cur
                if _wait_for_quit(interval, interactive):
                    return 0
    finally:
        client.close()


def observer_http(path: str, host: str, port: int, out: TextIO = sys.stdout) -> int:
    """Serve the web observer for the program at ``path`` until Ctrl-C; return the status."""
    import time

    from beamvm import _native

    try:
        server = _native._serve_http_relay(path, host, port)
    except OSError as e:
        raise ObserverError(str(e)) from None
    try:
        out.write(f"beamvm web observer for {path} at {server.url} (Ctrl-C stops)\n")
        out.flush()
        while not server.closed:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m beamvm``."""
    p = argparse.ArgumentParser(prog="python -m beamvm", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("top", help="live view of a running beamvm program's observer")
    t.add_argument(
        "--socket",
        default=os.environ.get(ENV_VAR),
        help=f"observer socket path (default: ${ENV_VAR})",
    )
    t.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    t.add_argument("--once", action="store_true", help="print one frame as text and exit")
    o = sub.add_parser("observer", help="web observer (charts, /metrics) for a running program")
    o.add_argument(
        "--attach",
        metavar="SOCKET",
        default=os.environ.get(ENV_VAR),
        help=f"the program's observer socket path (default: ${ENV_VAR})",
    )
    o.add_argument("--http", metavar="PORT", type=int, default=8080, help="port (0: any free)")
    o.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    args = p.parse_args(argv)
    if args.command == "observer":
        if not args.attach:
            p.error(f"observer needs --attach SOCKET (or {ENV_VAR}=SOCKET in the environment)")
        if not 0 <= args.http <= 65535:
            p.error("--http must be a port between 0 and 65535")
        return _reporting("observer", lambda: observer_http(args.attach, args.host, args.http))
    if not args.socket:
        p.error(f"top needs --socket PATH (or {ENV_VAR}=PATH in the environment)")
    if not args.interval > 0:
        p.error("--interval must be > 0")
    return _reporting("top", lambda: top(args.socket, args.interval, args.once))


def _reporting(command: str, run: Callable[[], int]) -> int:
    """Run a command; an ObserverError becomes a one-line message and status 1."""
    try:
        return run()
    except ObserverError as e:
        print(f"python -m beamvm {command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
