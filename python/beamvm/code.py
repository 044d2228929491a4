"""Hot code loading of Python modules: Erlang's ``code`` module for beamvm.

```python
from beamvm import code
import myapp.orders
code.load(myapp.orders)          # the edited source becomes the current version
code.which_old(myapp.orders)     # pids still running the previous version
code.soft_purge("myapp.orders")  # False while any process runs old code
code.purge("myapp.orders")       # kills them (reason killed), drops the old version
```

**Two versions.** As in Erlang, a module has a current version and at most one old one.
:func:`load` re-executes the module's source *in the module's own namespace*, so every
name the module defines is rebound to the new code; a process already executing a
function of the previous version finishes that call in it (its frames hold the old
code objects), and its next call through the module -- ``orders.place(...)``, a global
name looked up when called, the callbacks of a ``GenServer``, which the server resolves
from the class's module on the next message after a load (Erlang's ``?MODULE:loop``) --
runs the new code. Code objects are what the compiler keys its caches by, so new
functions are compiled anew; the old version's compiled forms are dropped at purge.

**Purging.** :func:`which_old` finds the processes with a frame of the old version on
their stack (read between slices, as ``current_stacktrace``); :func:`soft_purge` drops
the old version only if there are none; :func:`purge` kills them with reason
``killed`` first. A :func:`load` while an old version still runs purges it first, as
Erlang does (those processes are killed).

**Failed loads.** A syntax error, or an exception while the new source runs (an import
error), leaves the current version in place (the namespace is restored as it was) and
raises :class:`LoadError` with the error as its cause.

**Which text runs.** Process code is compiled from a file's text only if that text
compiles to the function's code object (``_compiler._source_def``): the rejected text of
a failed load, or an edit not loaded yet, never runs in a process. A successful load
registers the text it executed (``_compiler.register_source``), so the new version's
functions compile from it whatever the file holds later; the compiler keeps the text of
the versions it compiled from. A function whose text is not known (its file changed
before anything of its version was compiled) runs plainly, not preemptible, and is
named once in a warning of the ``beamvm`` logger.

Limits: a function object held directly (a closure, a callback stored in a data
structure, a bound method kept by a process) keeps running the version it came from
until it is looked up again; a class's existing instances keep their class unless
``beamvm.sys.change_code`` (or a GenServer's next message) moves them to the new one.
The namespace is replaced while other scheduler threads may run: a process may see the
module half re-executed for the instant the load takes (suspend it first with
``beamvm.sys.suspend`` when that matters).
"""

from __future__ import annotations

import linecache
import sys
import time
import types
from collections.abc import Iterable
from typing import Any

from beamvm import _compiler, _native, _otp, _stacktrace

__all__ = ["LoadError", "load", "purge", "soft_purge", "which_old"]

#: How long :func:`which_old` keeps retrying a process that is in a slice (its stack can
#: be read only between slices), and :func:`purge` waits for killed processes to end.
SETTLE_SECONDS = 2.0


class LoadError(ImportError):
    """A module could not be loaded; the current version is unchanged (see ``__cause__``)."""


class _Old:
    """The old version of a module: the code objects it ran (and their compiled forms)."""

    def __init__(self, codes: set[types.CodeType], functions: list[types.FunctionType]):
        self.codes = codes
        self.functions = functions


#: module name -> its old version
_OLD: dict[str, _Old] = {}


def _module(module: Any) -> types.ModuleType:
    if isinstance(module, types.ModuleType):
        return module
    if isinstance(module, str):
        m = sys.modules.get(module)
        if m is None:
            raise LoadError(
                f"module {module!r} is not loaded: import it first (code.load reloads a "
                "running module)"
            )
        return m
    raise TypeError(f"code functions take a module or a module name, not {module!r}")


def _name(module: Any) -> str:
    if isinstance(module, types.ModuleType):
        return module.__name__
    if isinstance(module, str):
        return module
    raise TypeError(f"code functions take a module or a module name, not {module!r}")


def _functions(mod: types.ModuleType) -> list[types.FunctionType]:
    from beamvm.trace import _module_functions

    return list(_module_functions(mod))


def _nested(code: types.CodeType, out: set[types.CodeType]) -> None:
    out.add(code)
    for c in code.co_consts:
        if isinstance(c, types.CodeType) and c not in out:
            _nested(c, out)


def _codes(fns: Iterable[types.FunctionType]) -> set[types.CodeType]:
    out: set[types.CodeType] = set()
    for fn in fns:
        _nested(fn.__code__, out)
    for c in list(out):
        t = _compiler.cached_template(c)
        if t is not None:
            _nested(t, out)
    return out


def _template_hook(code: types.CodeType, tmpl: types.CodeType) -> None:
    """Count the compiled form of an old function compiled after the load as old code."""
    for old in _OLD.values():
        if code in old.codes:
            _nested(tmpl, old.codes)


@_otp.plain  # the namespace is replaced in one go, never preempted half-way
def load(module: Any) -> types.ModuleType:
    """Load the module's source again as its current version; return the module.

    ``module``: a module object or the name of a loaded module. If an old version is
    still running, it is purged first (its processes are killed, reason ``killed``).
    Raises :class:`LoadError` (the current version stays) when the source cannot be
    read or compiled, or raises while it runs.
    """
    mod = _module(module)
    name = mod.__name__
    spec = getattr(mod, "__spec__", None)
    loader = getattr(spec, "loader", None) or getattr(mod, "__loader__", None)
    filename = getattr(mod, "__file__", None)
    get_source = getattr(loader, "get_source", None)
    if get_source is None or filename is None:
        raise LoadError(f"module {name!r} has no source file to load again", name=name)
    try:
        source = get_source(name)
    except (OSError, ImportError) as e:
        raise LoadError(f"cannot read the source of {name!r}: {e}", name=name) from e
    if source is None:
        raise LoadError(f"module {name!r} has no source to load again", name=name)
    try:
        new_code = compile(source, filename, "exec", dont_inherit=True)
    except SyntaxError as e:
        raise LoadError(
            f"module {name!r} not loaded (the current version stays): {type(e).__name__}: {e}",
            name=name,
        ) from e
    if name in _OLD:
        purge(name)  # Erlang: loading a third version purges the old one
    old_fns = _functions(mod)
    snapshot = dict(mod.__dict__)
    # Tracebacks read sources through linecache (so does the compiler, after the texts it
    # verified: register_source below): the file has changed.
    linecache.cache.pop(filename, None)
    try:
        exec(new_code, mod.__dict__)  # noqa: S102 -- loading the module's own source
    except BaseException as e:
        mod.__dict__.clear()
        mod.__dict__.update(snapshot)
        linecache.cache.pop(filename, None)
        raise LoadError(
            f"module {name!r} not loaded (the current version stays): running it raised "
            f"{type(e).__name__}: {e}",
            name=name,
        ) from e
    # What runs is what was loaded: process code compiles the new version's functions
    # from this text, whatever the file holds when they are first called.
    _compiler.register_source(filename, source)
    new_codes = _codes(_functions(mod))
    old_codes = _codes(old_fns) - new_codes
    _OLD[name] = _Old(old_codes, old_fns)
    if _template_hook not in _compiler.TEMPLATE_HOOKS:
        _compiler.TEMPLATE_HOOKS.append(_template_hook)
    _otp.CODE_GENERATION[0] += 1  # GenServers resolve their callbacks again
    return mod


def _stack_codes(gen: Any) -> Iterable[types.CodeType]:
    g = gen
    depth = 0
    while g is not None and depth < _stacktrace.MAX_FRAMES:
        f = getattr(g, "gi_frame", None) or getattr(g, "cr_frame", None)
        if f is None:
            return
        yield f.f_code
        g = getattr(g, "gi_yieldfrom", None)
        depth += 1


def _own_codes() -> Iterable[types.CodeType]:
    f = sys._getframe(1)
    while f is not None:
        yield f.f_code
        f = f.f_back  # type: ignore[assignment]


def which_old(module: Any) -> list[_native.Pid]:
    """Return the pids of processes with a frame of ``module``'s old version on their stack."""
    old = _OLD.get(_name(module))
    if old is None:
        return []
    codes = old.codes
    me = _native.self_pid() if _native.in_process_() else None
    out = []
    pending = []
    for pid in _native.processes():
        if pid == me:
            if any(c in codes for c in _own_codes()):
                out.append(pid)
            continue
        gen = _native._process_generator(pid)
        if gen is None:
            pending.append(pid)  # in a slice (or native): read it again below
        elif any(c in codes for c in _stack_codes(gen)):
            out.append(pid)
    deadline = time.monotonic() + SETTLE_SECONDS
    while pending and time.monotonic() < deadline:
        time.sleep(0.001)  # lets the slice holding the process end (releases the GIL)
        still = []
        for pid in pending:
            gen = _native._process_generator(pid)
            if gen is None:
                info = _native.process_info(pid)
                if info is not None and info.get("current_function") != "native":
                    still.append(pid)
            elif any(c in codes for c in _stack_codes(gen)):
                out.append(pid)
        pending = still
    return out


def _drop(name: str) -> None:
    old = _OLD.pop(name, None)
    if old is None:
        return
    for c in old.codes:
        _compiler.forget_template(c)
    for fn in old.functions:
        _compiler._DISPATCH.pop(fn, None)
        _compiler._COMPILED_FNS.pop(fn, None)
    if not _OLD and _template_hook in _compiler.TEMPLATE_HOOKS:
        _compiler.TEMPLATE_HOOKS.remove(_template_hook)


def soft_purge(module: Any) -> bool:
    """Drop ``module``'s old version unless a process runs it: False (kept) if one does."""
    name = _name(module)
    if which_old(name):
        return False
    _drop(name)
    return True


def purge(module: Any) -> bool:
    """Kill the processes running ``module``'s old version, then drop it.

    Returns True if processes were killed (Erlang's ``code:purge``). Waits (up to
    :data:`SETTLE_SECONDS`) until they have exited. The caller is never killed by its own
    purge: a process purging code it runs itself gets ``RuntimeError``.
    """
    name = _name(module)
    pids = which_old(name)
    me = _native.self_pid() if _native.in_process_() else None
    if me is not None and me in pids:
        raise RuntimeError(
            f"the calling process {me!r} runs old code of {name!r}: it cannot purge it "
            "(call purge from another process)"
        )
    for pid in pids:
        _native.exit(pid, _native.Atom("kill"))
    deadline = time.monotonic() + SETTLE_SECONDS
    while any(_native.is_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.001)
    _drop(name)
    return bool(pids)
