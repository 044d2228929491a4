"""A Python process's stack: ``process_info(pid, "current_stacktrace")``.

A process is a compiled generator (see ``_compiler``); between slices its stack is the
chain of generators it is suspended in, linked by ``gi_yieldfrom`` (each compiled call
runs its callee with ``yield from``). ``frames(gen)`` walks that chain from the process's
outermost generator (which the native half hands over: crates/vm-python/src/
stacktrace.rs, read under a ``try_lock``, never waiting for a running process).

The compiled code objects keep the original file name and line numbers (the rewriter
copies every node's location from the source it replaces), so ``f_lineno`` of a compiled
frame *is* the line of the user's source; ``co_qualname`` is restored to the original's.
Frames of the runtime's own plumbing (``_compiler``'s call helpers, ``_runtime``) are
left out: they are not code the user wrote or can act on.
"""

from __future__ import annotations

import sys
from types import CodeType, FrameType
from typing import Any

from beamvm import _native

__all__ = ["current_stacktrace", "frames"]

#: Files whose frames are plumbing, not part of the process's own stack.
_HIDDEN = frozenset(
    sys.modules[m].__file__ or ""
    for m in ("beamvm._compiler", "beamvm._runtime", "beamvm._stacktrace")
    if m in sys.modules
)
#: The deepest chain walked (a generator chain can be as deep as the recursion).
MAX_FRAMES = 1000


def _hidden(code: CodeType) -> bool:
    return code.co_filename in _HIDDEN


def _entry(f: FrameType) -> tuple[str, str, str, int]:
    code = f.f_code
    return (
        str(f.f_globals.get("__name__", "?")),
        code.co_qualname,
        code.co_filename,
        f.f_lineno or code.co_firstlineno,
    )


def frames(gen: Any) -> list[tuple[str, str, str, int]]:
    """Return ``(module, function, file, line)`` of each frame of a suspended process.

    ``gen`` is the process's outermost generator; the list is outermost first.
    """
    out: list[tuple[str, str, str, int]] = []
    g = gen
    while g is not None and len(out) < MAX_FRAMES:
        f = getattr(g, "gi_frame", None)
        if f is None:
            f = getattr(g, "cr_frame", None)
        if f is None:
            break
        if not _hidden(f.f_code):
            out.append(_entry(f))
        g = getattr(g, "gi_yieldfrom", None)
    return out


def _own_frames() -> list[tuple[str, str, str, int]]:
    """Return the calling process's stack (outermost first), from its running frames."""
    out: list[tuple[str, str, str, int]] = []
    f: FrameType | None = sys._getframe(1)
    while f is not None and len(out) < MAX_FRAMES:
        code = f.f_code
        wrapper = code.co_name == "process_info" and f.f_globals.get("__name__") == "beamvm"
        if not (wrapper or _hidden(code)):
            out.append(_entry(f))
        f = f.f_back
    out.reverse()
    return out


def current_stacktrace(pid: Any = None) -> list[dict[str, Any]] | None:
    """Return the stack of ``pid`` (default: the caller), innermost frame first.

    Each frame is ``{"module", "function", "file", "line"}``. None when ``pid`` is not a
    live Python process or is running a slice right now (the stack is read only between
    slices, never waiting for a process): ask again, as ``top`` does every refresh.
    """
    me = _native.self_pid() if _native.in_process_() else None
    if pid is None or pid == me:
        if me is None:
            raise RuntimeError(
                "process_info(None, 'current_stacktrace') must be called inside a beamvm "
                "process; pass a pid from outside"
            )
        got = _own_frames()
    else:
        gen = _native._process_generator(pid)
        if gen is None:
            return None
        got = frames(gen)
    return [
        {"module": m, "function": fn, "file": file, "line": line}
        for m, fn, file, line in reversed(got)
    ]
