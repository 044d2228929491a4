"""Compile ordinary Python functions into resumable, preemptible process bodies.

A process body is a generator (see ``_runtime`` for the protocol the driver speaks).
``compile_function(fn)`` reads ``fn``'s source, rewrites its AST and compiles it -- with the
original file name and line/column numbers, so tracebacks point at the user's code -- into a
generator function with the same signature, globals, defaults and closure cells:

* Reductions: on entry and at the head of every ``for``/``while`` body (so every back-edge,
  ``continue`` included) a frame-local counter ``_bvm_n`` is decremented and compared with
  the yield-now flag ``_bvm_Y`` (0, or huge once the slice has run past its time: see
  crates/vm-python/src/timeslice.rs); the slow path publishes the count to the process's
  budget cell and yields ``PREEMPT`` when the budget is spent or the slice is overdue.
* Calls: every call expression in the function's own body becomes a dispatch. The callee is
  looked up once per object in ``_DISPATCH`` (builtin functions skip even that): a Python
  function or lambda with source (a text that compiles to its code object: what runs is
  what was loaded, see ``_source_def``) and without ``yield``/``await`` is compiled
  (lazily, cached) and run with ``yield from``; a bound method of one runs as its compiled function
  bound to the same ``self``; a ``functools.partial`` and an instance with a Python
  ``__call__`` run their compiled target; a registered primitive runs its generator
  implementation with ``yield from`` (a suspension point); anything else (builtins, C
  code, classes, generator functions, functions without source) is called plainly and runs
  to completion, like a NIF. ``time.sleep`` and the ``acquire`` of a ``threading`` lock
  become process-aware (``_blocking``). beamvm's own hot calls may say how they are
  called: a module function with ``__beamvm_plain__ = True`` never suspends and is
  called plainly (``tcp.setopts``); one with ``__beamvm_fast__ = g`` is replaced by a
  plain call of ``g``, whose result runs with ``yield from`` (an exhausted generator
  when it is done, else the generator that waits: ``tcp.send``).
* Comprehensions are compiled too: a list/set/dict comprehension, and a generator
  expression (or ``map``/``filter``) consumed by ``list``, ``tuple``, ``set``,
  ``frozenset``, ``sorted``, ``dict``, ``sum``, ``min``, ``max``, ``any``, ``all`` or
  ``str.join``, becomes a nested generator function (its own scope, as a comprehension
  has) whose loops have budget checks and whose calls are dispatched. ``sorted``,
  ``min``, ``max`` and ``list.sort`` with a Python ``key`` run ``_pbuiltins``' versions,
  which call the key preemptibly.
* Not rewritten (``yield`` cannot go there, or it is not this frame's code): comprehensions
  that use ``:=``, ``await``, ``super``, ``locals``/``vars``/``dir``/``eval``/``exec``;
  other generator expressions; nested ``def``/``class`` statements (including their
  decorators, defaults and bases), annotations. Nested functions, lambdas and methods are
  compiled when they are called.
* A ``StopIteration`` leaving a compiled function reaches its caller as ``StopIteration``
  (plain Python semantics), not as the ``RuntimeError`` PEP 479 makes of it in a
  generator: the function returns a carrier that the call site re-raises.
* ``with`` on a ``threading.Lock``/``RLock`` warns once per site (``RuntimeWarning``): a
  preemption inside the block holds a thread lock across a yield.

The generated code keeps helper state in locals named ``_bvm_*`` (visible to ``locals()``);
the last callee/result per nesting depth stay referenced until overwritten or the frame ends.

Modules: ``_astgen`` (names and node builders of generated code), ``_comprehensions``
(comprehensions and generator-consuming builtins, a mixin of the rewriter here),
``_pbuiltins`` (preemptible ``sorted``/``min``/``max``), ``_blocking`` (``time.sleep``
and thread locks in process code), ``_runtime`` (the driver protocol).
"""

from __future__ import annotations
import __future__

import ast
import builtins
import copy
import dis
import functools
import inspect
import io
import linecache
import logging
import operator
import os
import sys
import sysconfig
import threading
import time
import types
import warnings
import weakref
from collections.abc import Callable, Generator
from typing import Any

from . import _blocking, _pbuiltins, _runtime
from ._astgen import (
    _AQ,
    _BE,
    _BFT,
    _BI,
    _D,
    _DM,
    _FT,
    _GEN,
    _IT,
    _K,
    _MS,
    _MT,
    _OP,
    _P,
    _PB,
    _RCV,
    _RCV0,
    _RF,
    _RR,
    _RS,
    _RV,
    _RW,
    _SET,
    _SG,
    _SI,
    _SX,
    _T,
    _TL,
    _TS,
    _W,
    _WL,
    _WM,
    _WR,
    _Y,
    RUNTIME_NAMES,
    _assign,
    _attr,
    _def,
    _fix_locations,
    _is,
    _name,
    _publish,
    _raw,
    _resync,
    _run_gen,
    _sub,
    _suspend,
    _tick,
    _wrap_body,
)
from ._comprehensions import CompiledForms

__all__ = ["CompileError", "compile_function", "compile_process", "is_compilable"]

_NON_PLAIN_FLAGS = (
    inspect.CO_GENERATOR
    | inspect.CO_COROUTINE
    | inspect.CO_ITERABLE_COROUTINE
    | inspect.CO_ASYNC_GENERATOR
)
_FUTURE_MASK = 0
for _name_ in __future__.all_feature_names:
    _FUTURE_MASK |= getattr(__future__, _name_).compiler_flag

_LOCK_TYPES: tuple[type, ...] = _blocking.LOCK_TYPES

_LOCK_ADVICE = (
    "a threading lock is held in beamvm process code: the process can be preempted inside "
    "the 'with' block and other processes on other scheduler threads then block or lose "
    "updates; use message passing (a process that owns the state) or a process-aware "
    "primitive (beamvm.sync.Lock) instead"
)


_STDLIB = sysconfig.get_paths()["stdlib"]

log = logging.getLogger("beamvm")


def _warn_lock(cm: Any) -> Any:
    # Not for the standard library's own locks (threading, queue...): the user cannot
    # act on those, and waiting on them is made process-aware (_blocking).
    if type(cm) in _LOCK_TYPES and not sys._getframe(1).f_code.co_filename.startswith(_STDLIB):
        warnings.warn(_LOCK_ADVICE, RuntimeWarning, stacklevel=2)
    return _blocking.with_item(cm)


class CompileError(TypeError):
    """Raised by ``compile_function`` for a callable that cannot be compiled."""


class _StopCarrier:
    """What a compiled function returns instead of letting a ``StopIteration`` out.

    PEP 479 turns a ``StopIteration`` leaving a generator into ``RuntimeError``; compiled
    functions are generators, plain ones are not. The call site re-raises ``exc``.
    """

    __slots__ = ("exc",)

    def __init__(self, exc: StopIteration) -> None:
        self.exc = exc


def _reraise(c: _StopCarrier) -> Any:
    raise c.exc


# --------------------------------------------------------------------------- AST helpers


# --------------------------------------------------------------------------- the rewriter


class _Ctx:
    """State shared by the rewriters of one template (its function and hoisted functions)."""

    def __init__(self, env: dict[str, Any]) -> None:
        self.env = env
        #: global name -> name of the cell that holds its value (see ``_Rewriter._guard``)
        self.guards: dict[str, str] = {}
        self.hoisted = 0
        #: hoisted function name -> the name its code object gets (``<listcomp>``...)
        self.code_names: dict[str, str] = {}

    def fresh(self, shown: str) -> str:
        name = f"_bvm_c{self.hoisted}"
        self.hoisted += 1
        self.code_names[name] = shown
        return name


def _cached(table: str, miss: str, key: str, first: ast.expr | None = None) -> ast.expr:
    """``table[key]`` as generated code spells it: ``(T[key] if key in T else M(key))``.

    The tables (``_D``, ``_WR``) are exact dicts so that CPython specialises the
    subscript (a dict subclass with ``__missing__`` goes through a generic slot call:
    ~30 ns more per lookup, two lookups per ``gen_server.call``); a key seen for the
    first time goes to the table's miss function, which computes its value and caches
    it. ``first`` is the expression that binds ``key`` (evaluated once, by the
    membership test).
    """
    test_key = first if first is not None else _name(key)
    return ast.IfExp(
        test=ast.Compare(left=test_key, ops=[ast.In()], comparators=[_name(table)]),
        body=ast.Subscript(value=_name(table), slice=_name(key), ctx=ast.Load()),
        orelse=_raw(_name(miss), _name(key)),
    )


def _dispatched(key: str, first: ast.expr | None = None) -> ast.expr:
    """``_D[key]``, what compiled code calls for a callee (see ``_cached``)."""
    return _cached(_D, _DM, key, first)


class _Rewriter(CompiledForms, ast.NodeTransformer):
    """Rewrites the body of one function (and hoists its comprehensions into new ones).

    ``local_names`` are the function's locals, cells and free variables (and those of the
    functions it is nested in); ``ctx.env`` maps a global name to the value it had when the
    template was built (used only to choose the shape of a call site: the generated guard
    re-checks it at run time).
    """

    def __init__(self, local_names: frozenset[str], ctx: _Ctx) -> None:
        self.depth = 0
        self.local_names = local_names
        self.ctx = ctx
        self.env = ctx.env
        self.guards = ctx.guards
        #: hoisted function definitions waiting to be placed before the current statement
        self.pending: list[list[ast.stmt]] = []

    def visit(self, node: ast.AST) -> Any:
        if not isinstance(node, ast.stmt):
            return super().visit(node)
        self.pending.append([])
        out = super().visit(node)
        pre = self.pending.pop()
        if not pre:
            return out
        return [*pre, *(out if isinstance(out, list) else [out])]

    # Scopes whose code is not this frame's (or where yield is not allowed): leave alone.
    def _leave(self, node: ast.AST) -> ast.AST:
        return node

    visit_FunctionDef = _leave
    visit_AsyncFunctionDef = _leave
    visit_ClassDef = _leave
    visit_Lambda = _leave

    def visit_GeneratorExp(self, node: ast.GeneratorExp) -> ast.expr:
        return self._first_iterable(node)

    def _first_iterable(self, node: ast.expr) -> ast.expr:
        """Rewrite the calls of a comprehension left plain where they run in this frame.

        A comprehension's (or generator expression's) first iterable is evaluated in the
        enclosing scope, so its calls are this frame's (``for x in sup.which_children(s)``:
        a call that may wait). ``:=`` is not allowed there and the dispatch uses it, so
        the value goes through a local first: ``(_bvm_i := <iterable>, <comp>)[1]``
        (evaluated at the same point, in the same order).
        """
        g0 = node.generators[0]  # type: ignore[attr-defined]
        if not any(isinstance(n, ast.Call) for n in ast.walk(g0.iter)):
            return node
        first = ast.NamedExpr(target=_name("_bvm_i", True), value=self.visit(g0.iter))
        g0.iter = _name("_bvm_i")
        out = _sub(ast.Tuple(elts=[first, node], ctx=ast.Load()), 1)
        return ast.copy_location(out, node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST:
        if node.value is not None:
            node.value = self.visit(node.value)
        return node

    def _loop(self, node: ast.For | ast.While) -> ast.AST:
        self.generic_visit(node)
        node.body = _tick() + node.body
        return node

    visit_For = _loop
    visit_While = _loop

    def visit_Return(self, node: ast.Return) -> list[ast.stmt]:
        if node.value is None:
            return [_publish(), node]
        value = self.visit(node.value)
        return [_assign(_RV, value), _publish(), ast.Return(value=_name(_RV))]

    def _try(self, node: ast.AST) -> ast.AST:
        self.generic_visit(node)
        for h in node.handlers:  # type: ignore[attr-defined]
            h.body = _resync() + h.body
        if node.finalbody:  # type: ignore[attr-defined]
            node.finalbody = _resync() + node.finalbody  # type: ignore[attr-defined]
        return node

    visit_Try = _try
    visit_TryStar = _try

    def visit_With(self, node: ast.With) -> list[ast.stmt]:
        self.generic_visit(node)
        for item in node.items:
            # (w if type(w := WL(cm)) is not Wait else <yield from w>): a thread lock is
            # acquired by a generator the frame runs (it may wait); anything else is as is.
            got = ast.NamedExpr(target=_name(_W, True), value=_raw(_name(_WL), item.context_expr))
            item.context_expr = ast.IfExp(
                test=ast.Compare(
                    left=_raw(_name(_T), got), ops=[ast.IsNot()], comparators=[_name(_GEN)]
                ),
                body=_name(_W),
                orelse=_suspend(ast.YieldFrom(value=_name(_W))),
            )
        return [node, *_resync()]

    # ------------------------------------------------------------------ calls

    def visit_Call(self, node: ast.Call) -> ast.AST:
        if getattr(node, "_bvm_raw", False):
            self.generic_visit(node)
            return node
        special = self._consumer(node) or self._keyed(node) or self._list_sort(node)
        if special is None:
            special = self.visit_Call_plain(node)
        return ast.copy_location(special, node)

    def _dispatch(self, node: ast.Call, d: int) -> ast.expr:
        """Build the generic call site (``node``'s parts already rewritten)."""
        f, h, r = f"_bvm_f{d}", f"_bvm_h{d}", f"_bvm_r{d}"
        fn = node.func
        t, g, u = "_bvm_t", "_bvm_g", "_bvm_u"  # used at once: one name for every depth
        is_builtin = _is(
            ast.NamedExpr(
                target=_name(t, True),
                value=_raw(_name(_T), ast.NamedExpr(target=_name(f, True), value=fn)),
            ),
            _name(_BFT),
        )
        if isinstance(fn, ast.Attribute) and fn.attr == "acquire":
            # a threading lock's acquire waits as a process, not as its scheduler thread
            plain: ast.expr = _raw(_name(_AQ), _name(f))
        else:
            # time.sleep suspends the process instead of its scheduler thread
            plain = ast.IfExp(test=_is(_name(f), _name(_TS)), body=_name(_SG), orelse=_name(f))
        # A bound method is a new object at each ``obj.m`` and never in the dict: look its
        # function up and bind what it maps to (``_dispatch_miss`` does the same,
        # at the cost of a Python call per method call):
        #   (MT(g, f.__self__) if (g := <D[u := f.__func__]>) is not u else f)
        method = ast.IfExp(
            test=ast.Compare(
                left=ast.NamedExpr(
                    target=_name(g, True),
                    value=_dispatched(
                        u, ast.NamedExpr(target=_name(u, True), value=_attr(_name(f), "__func__"))
                    ),
                ),
                ops=[ast.IsNot()],
                comparators=[_name(u)],
            ),
            body=_raw(_name(_MT), _name(g), _attr(_name(f), "__self__")),
            orelse=_name(f),
        )
        # Callables that cannot be hashed (a dead weak reference, a ctypes function, any
        # type with __hash__ = None) are called plainly, without the dict lookup that
        # would raise: one lookup by type (_PLAIN_TYPES) decides.
        other = ast.IfExp(
            test=_cached(_WR, _WM, t),
            body=_name(f),
            orelse=_dispatched(f),
        )
        # _bvm_h := (<plain> if (_bvm_t := type(_bvm_f := <func>)) is _bvm_BFT
        #            else <_bvm_D[_bvm_f]> if _bvm_t is _bvm_FT
        #            else <method> if _bvm_t is _bvm_MT else <other>)
        lookup = ast.NamedExpr(
            target=_name(h, True),
            value=ast.IfExp(
                test=is_builtin,
                body=plain,
                orelse=ast.IfExp(
                    test=_is(_name(t), _name(_FT)),
                    body=_dispatched(f),
                    orelse=ast.IfExp(test=_is(_name(t), _name(_MT)), body=method, orelse=other),
                ),
            ),
        )
        call = ast.Call(func=lookup, args=node.args, keywords=node.keywords)
        ast.copy_location(call, node)
        # plain: (_bvm_r := call) is _bvm_h or _bvm_h is _bvm_f
        #        or (_bvm_h is _bvm_RCV and type(_bvm_r) not in _bvm_RW)
        # (the fast receive returned a message: no yield at all)
        fast_done = ast.BoolOp(
            op=ast.And(),
            values=[
                _is(_name(h), _name(_RCV)),
                ast.Compare(
                    left=_raw(_name(_T), _name(r)),
                    ops=[ast.NotIn()],
                    comparators=[_name(_RW)],
                ),
            ],
        )
        test = ast.BoolOp(
            op=ast.Or(),
            values=[
                _is(ast.NamedExpr(target=_name(r, True), value=call), _name(h)),
                _is(_name(h), _name(f)),
                fast_done,
            ],
        )
        # suspend: what the fast receive or the op primitive (gen_server.call's native
        # half) returned -- a waiting receive op, or a Request outside a VM -- is yielded
        # straight to the driver, which resumes the frame with the result (or throws
        # into it); anything else is a generator run with yield from (a compiled callee
        # may return a carried StopIteration).
        run = ast.IfExp(
            test=ast.BoolOp(
                op=ast.Or(), values=[_is(_name(h), _name(_RCV)), _is(_name(h), _name(_OP))]
            ),
            body=_suspend(ast.Yield(value=_name(r))),
            orelse=_run_gen(_name(r)),
        )
        out: ast.expr = ast.IfExp(test=test, body=_name(r), orelse=run)
        return self._guarded(node, out, r)

    def _guard(self, name: str, value: Any = None, check: bool = False) -> str | None:
        """Return the cell guarding the global ``name``, or None.

        None when ``name`` is a local, or (with ``check``) its compile-time value is not
        ``value``.
        """
        if name in self.local_names or name not in self.env:
            return None
        if check and self.env[name] is not value:
            return None
        return self.guards.setdefault(name, f"{_K}{len(self.guards)}")

    def _guarded(self, node: ast.Call, generic: ast.expr, r: str) -> ast.expr:
        """Specialise a call of a global plain callable or of the fast receive.

        Plain callables are builtins, classes and native functions. ``NAME(args)``
        becomes ``K(args) if NAME is K else <generic dispatch>``, where the cell ``K``
        holds NAME's value when the function was compiled: a handful of bytecodes
        instead of the dispatch expression (the guard keeps it correct if NAME is
        rebound later). ``MODULE.NAME(args)`` of a global module is guarded the same way
        (``MODULE.NAME is K``: ~90 ns less per ``beamvm.send(...)``). The fast receive
        gets the same guard around its own shape.
        """
        f = node.func
        callee = self._global_callee(f)
        if callee is None:
            return generic
        key, value = callee
        fast = _FAST.get(value) if _hashable(value) else None
        if fast is None and not _is_plain(value):
            return generic
        k = self.guards.setdefault(key, f"{_K}{len(self.guards)}")
        args = [copy.deepcopy(a) for a in node.args]
        kws = [copy.deepcopy(kw) for kw in node.keywords]
        if fast is None:
            body: ast.expr = ast.Call(func=_name(k), args=args, keywords=kws)
        else:
            # (r if type(r := RCV(args)) not in RW else <yield r to the driver>); a call
            # without arguments goes to RCV0, the same receive without a signature to
            # parse (the common `receive()` of a message loop).
            rcv = _RCV0 if not args and not kws else _RCV
            got = ast.NamedExpr(
                target=_name(r, True), value=ast.Call(func=_name(rcv), args=args, keywords=kws)
            )
            body = ast.IfExp(
                test=ast.Compare(
                    left=_raw(_name(_T), got),
                    ops=[ast.NotIn()],
                    comparators=[_name(_RW)],
                ),
                body=_name(r),
                orelse=_suspend(ast.Yield(value=_name(r))),
            )
        test = _is(copy.deepcopy(f), _name(k))
        return ast.IfExp(test=test, body=body, orelse=generic)

    def _global_callee(self, f: ast.expr) -> tuple[str, Any] | None:
        """Return the guard key and compile-time value of a guardable callee, or None.

        Guardable: ``NAME`` (a global) or ``MODULE.NAME`` (a global bound to a module,
        and a name in the module's dict: ``beamvm.send``, ``gen_server.cast``).
        """
        if isinstance(f, ast.Name):
            if f.id in self.local_names or f.id not in self.env:
                return None
            return f.id, self.env[f.id]
        if not (isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name)):
            return None
        m = f.value.id
        if m in self.local_names or not isinstance(self.env.get(m), types.ModuleType):
            return None
        # The module's own dict: a lazy attribute (module __getattr__) is not guarded.
        value = self.env[m].__dict__.get(f.attr, _UNBOUND)
        if value is _UNBOUND:
            return None
        return f"{m}.{f.attr}", value

    def visit_Call_plain(self, node: ast.Call) -> ast.expr:
        """Rewrite a call as a generic dispatch (no special forms)."""
        d = self.depth
        self.depth += 1
        try:
            self.generic_visit(node)
        finally:
            self.depth -= 1
        return self._dispatch(node, d)


# --------------------------------------------------------------------------- templates


def _hashable(v: Any) -> bool:
    try:
        hash(v)
    except TypeError:
        return False
    return True


def _is_plain(v: Any) -> bool:
    """Whether compiled code calls ``v`` plainly (never suspends through it)."""
    if not callable(v) or not _hashable(v):
        return False
    if isinstance(v, types.FunctionType) or isinstance(v, types.MethodType):
        return False  # may be compiled (then it is called with yield from)
    if v in _FAST or v in _runtime._PRIMITIVES or v is time.sleep:
        return False
    return isinstance(v, type) or type(v) is types.BuiltinFunctionType


def _class_for_mangling(qualname: str) -> str | None:
    """Name of the innermost class enclosing a function, from its ``__qualname__``."""
    parts = qualname.split(".")
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] != "<locals>" and parts[i + 1] != "<locals>":
            return parts[i]
    return None


# --------------------------------------------------------------------------- sources
#
# What runs is what was loaded (Erlang: the code of a module is the version loaded, not
# the file). A function is compiled from a text only once that text, compiled as Python
# compiled the function, reproduces the function's code object (``_reproduces``): a
# file edited since the function was loaded (an edit not loaded yet, a ``code.load``
# that failed) must not put its new text into processes while plain calls run the old
# code.

#: filename -> the texts (tuples of lines) that reproduced functions of that file, most
#: recently used first, at most ``VERSIONS_KEPT``: the text of the running version stays
#: here after the file changes on disk, so functions of that version still compile from
#: it. ``code.load`` puts the text it ran first (``register_source``).
_VERIFIED: dict[str, list[tuple[str, ...]]] = {}
VERSIONS_KEPT = 3
#: (filename, qualname, first line) of the functions warned about (``_warn_stale``)
_WARNED: set[tuple[str, str, int]] = set()
_CO_NESTED = inspect.CO_NESTED
_STALE_ADVICE = (
    "%s (%s, line %d) runs without preemption: no text of its source file compiles to the "
    "code it runs (the file changed since the module was loaded, or the code was not "
    "compiled from the file as it stands), and beamvm compiles process code only from the "
    "text that produced it. beamvm.code.load(%r) makes the file's text the running "
    "version; restarting the program does too"
)


def _pin(filename: str, lines: tuple[str, ...]) -> None:
    """Record ``lines`` as a text that reproduced code of ``filename`` (tried first)."""
    versions = _VERIFIED.setdefault(filename, [])
    if versions and versions[0] is lines:
        return
    for i, v in enumerate(versions):
        if v == lines:
            del versions[i]
            break
    versions.insert(0, lines)
    del versions[VERSIONS_KEPT:]


def register_source(filename: str, source: str) -> None:
    """Record ``source`` as the text the code of ``filename`` was just compiled from.

    ``code.load`` calls this after running the text it read: functions of the new version
    compile from exactly that text, whatever the file holds by the time they are first
    called.
    """
    lines = io.StringIO(source).readlines()
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"  # as linecache reads a file
    with _BUILD_LOCK:
        _pin(filename, tuple(lines))


def _texts(filename: str, module_globals: dict[str, Any]) -> Generator[tuple[str, ...]]:
    """Yield the texts to try for a function of ``filename``, the likeliest first.

    The texts that reproduced functions of the file before, then linecache's lines, then
    (only if those do not reproduce it either) the file as it is now on disk.
    """
    seen = list(_VERIFIED.get(filename, ()))
    yield from seen
    for fresh in (False, True):
        if fresh:
            linecache.checkcache(filename)
        lines = tuple(linecache.getlines(filename, module_globals))
        if lines and lines not in seen:
            seen.append(lines)
            yield lines


def _def_node(code: types.CodeType, lines: tuple[str, ...]) -> ast.FunctionDef | None:
    """Return the ``def`` of ``code`` in ``lines``, positioned as in the file.

    The block that starts at ``code.co_firstlineno`` (its first decorator) is parsed as
    it stands (an indented one inside ``if 1:``): columns stay the file's and string
    literals keep their text, which dedenting would change.
    """
    start = code.co_firstlineno
    if not 0 < start <= len(lines):
        return None
    try:
        block = inspect.getblock(lines[start - 1 :])
    except Exception:  # noqa: BLE001 -- tokenize errors of a text that is not Python
        return None
    if not block:
        return None
    indented = block[0][:1].isspace()
    try:
        mod = ast.parse("".join(["if 1:\n", *block] if indented else block))
    except (SyntaxError, ValueError):
        return None
    body = mod.body[0].body if indented and isinstance(mod.body[0], ast.If) else mod.body
    if not body or not isinstance(body[0], ast.FunctionDef) or body[0].name != code.co_name:
        return None
    ast.increment_lineno(mod, start - 2 if indented else start - 1)
    return body[0]


#: (filename, hash of its lines) -> (the lines, their lambdas by first line): the texts
#: lambdas were looked up in, most recent last. Templates are cached per code object, so
#: a text is parsed again only for lambdas not compiled yet; ``FILE_TREES_KEPT`` bounds
#: what is kept meanwhile.
_FILE_TREES: dict[tuple[str, int], tuple[tuple[str, ...], dict[int, list[ast.Lambda]]]] = {}
FILE_TREES_KEPT = 16


def _file_lambdas(filename: str, lines: tuple[str, ...]) -> dict[int, list[ast.Lambda]]:
    """Return the lambdas of the text ``lines`` of ``filename`` by their first line."""
    key = (filename, hash(lines))
    hit = _FILE_TREES.pop(key, None)
    if hit is not None and (hit[0] is lines or hit[0] == lines):
        _FILE_TREES[key] = hit
        return hit[1]
    index: dict[int, list[ast.Lambda]] = {}
    try:
        tree = ast.parse("".join(lines), filename)
    except (SyntaxError, ValueError):
        pass
    else:
        for n in ast.walk(tree):
            if isinstance(n, ast.Lambda):
                index.setdefault(n.lineno, []).append(n)
    _FILE_TREES[key] = (lines, index)
    while len(_FILE_TREES) > FILE_TREES_KEPT:
        del _FILE_TREES[next(iter(_FILE_TREES))]
    return index


def _lambda_nodes(code: types.CodeType, filename: str, lines: tuple[str, ...]) -> list[ast.Lambda]:
    """Return the lambdas of ``lines`` that may be ``code``: those on its first line.

    The likeliest first: the innermost one whose body holds the code's first position in
    the body. The first positions of a lambda's code are its ``RESUME`` (on 3.11-3.13 at
    column 0, in no lambda's body: skipped) and, for a closure, positionless ones. Which
    one it is (if any), ``_reproduces`` decides.
    """
    found = _file_lambdas(filename, lines).get(code.co_firstlineno, [])
    if len(found) > 1:
        pos = next(
            (
                (ln, col)
                for ln, _, col, end in code.co_positions()
                if ln is not None and col is not None and (col, end) != (0, 0)
            ),
            None,
        )

        def rank(n: ast.Lambda) -> tuple[bool, int, int]:
            b = n.body
            holds = pos is not None and (
                (b.lineno, b.col_offset) <= pos <= (b.end_lineno or 0, b.end_col_offset or 0)
            )
            # holding lambdas first, the innermost (the latest start) of them first
            return (not holds, -b.lineno, -b.col_offset)

        found = sorted(found, key=rank)
    return found


def _lambda_def(lam: ast.Lambda) -> ast.FunctionDef:
    """Return a ``def`` equivalent to ``lam`` (``return <body>``), named ``_bvm_def``."""
    lam = copy.deepcopy(lam)  # the rewriter changes nodes in place; the index is shared
    ret = ast.Return(value=lam.body)
    ast.copy_location(ret, lam.body)
    fdef = _def("_bvm_def", [], [ret])
    fdef.args = lam.args
    ast.copy_location(fdef, lam)
    return fdef


def _scaffold(
    code: types.CodeType,
    node: ast.FunctionDef | ast.Lambda,
    params: list[str],
    imports: list[str] | None = None,
) -> ast.Module:
    """Rebuild the scopes ``code`` was compiled in, around ``node`` (a def or a lambda).

    A factory function whose parameters are ``params`` (the free variables first, so
    they stay free in ``node``), and for a method (or a function nested in one) a class
    around ``node`` named as the innermost class of ``code.co_qualname``: names are
    mangled as there and ``super()``/``__class__`` get their cell. ``imports``: names
    the module imports at its top level (see ``_imported_names``).
    """
    fdef: ast.stmt = node if isinstance(node, ast.FunctionDef) else ast.Expr(value=node)
    ast.copy_location(fdef, node)
    inner: list[ast.stmt] = [fdef]
    cls = _class_for_mangling(code.co_qualname)
    if cls is not None:
        wrapper = ast.ClassDef(
            name=cls, bases=[], keywords=[], body=[fdef], decorator_list=[], type_params=[]
        )
        ast.copy_location(wrapper, fdef)
        inner = [wrapper]
        if cls not in params:
            # The wrapper class binds its name in the factory, which would make the
            # method's own ``Counter.helper(self)`` a closure variable; declared global
            # there, the name stays the module's. (The factory never runs: only the
            # function's code object is taken.)
            inner.insert(0, ast.copy_location(ast.Global(names=[cls]), fdef))
    factory = _def("_bvm_factory", params, inner)
    ast.copy_location(factory, fdef)
    for a in factory.args.args:
        ast.copy_location(a, fdef)
    top: list[ast.stmt] = [factory]
    if imports:
        top.insert(0, ast.copy_location(ast.Import(names=[ast.alias(n) for n in imports]), fdef))
        for a in top[0].names:  # type: ignore[attr-defined]
            ast.copy_location(a, fdef)
    return ast.Module(body=top, type_ignores=[])


def _free_params(code: types.CodeType) -> list[str]:
    return [v for v in code.co_freevars if v != "__class__"]


_OPS = dis.opmap
_LOAD_ATTR = _OPS["LOAD_ATTR"]
#: 3.11 loads a method with LOAD_METHOD, 3.12+ with LOAD_ATTR and bit 0 of its argument
_LOAD_METHOD = _OPS.get("LOAD_METHOD", -1) if sys.version_info < (3, 12) else -1
_ATTR_OPS = (_LOAD_ATTR,) if _LOAD_METHOD < 0 else (_LOAD_ATTR, _LOAD_METHOD)
_EXTENDED_ARG = _OPS["EXTENDED_ARG"]
_NAME_OPS = frozenset(
    _OPS[n] for n in ("LOAD_GLOBAL", "LOAD_NAME", "LOAD_FROM_DICT_OR_GLOBALS") if n in _OPS
)
_LOCAL_OPS = frozenset(
    _OPS[n]
    for n in (
        "LOAD_FAST",
        "LOAD_FAST_CHECK",
        "LOAD_FAST_AND_CLEAR",
        "LOAD_DEREF",
        "LOAD_CLASSDEREF",
        "LOAD_FROM_DICT_OR_DEREF",
    )
    if n in _OPS
)
_LOAD_FAST_LOAD_FAST = _OPS.get("LOAD_FAST_LOAD_FAST", -1)


def _loaded_name(code: types.CodeType, co: bytes, j: int) -> str | None:
    """Return the name the instruction before unit ``j + 1`` loads (None: not a name load)."""
    while j >= 0 and co[2 * j] == 0:  # CACHE units
        j -= 1
    if j < 0:
        return None
    op, arg = co[2 * j], co[2 * j + 1]
    k, shift = j - 1, 8
    while k >= 0 and co[2 * k] == _EXTENDED_ARG:
        arg |= co[2 * k + 1] << shift
        k, shift = k - 1, shift + 8
    try:
        if op in _NAME_OPS:
            return code.co_names[arg >> 1 if op == _OPS["LOAD_GLOBAL"] else arg]
        if op in _LOCAL_OPS:
            return code._varname_from_oparg(arg)  # type: ignore[attr-defined]
        if op == _LOAD_FAST_LOAD_FAST:
            return code._varname_from_oparg(arg & 15)  # type: ignore[attr-defined]
    except (IndexError, AttributeError):
        pass
    return None


def _attribute_receivers(code: types.CodeType, attr: set[str], method: set[str]) -> None:
    """Collect the names ``code`` (and its nested code) loads an attribute or method of."""
    co = code.co_code
    ops = co[::2]
    for op in _ATTR_OPS:
        i = ops.find(op)
        while i >= 0:
            name = _loaded_name(code, co, i - 1)
            if name is not None:
                is_method = op == _LOAD_METHOD or (_LOAD_METHOD < 0 and co[2 * i + 1] & 1)
                (method if is_method else attr).add(name)
            i = ops.find(op, i + 1)
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            _attribute_receivers(c, attr, method)


def _imported_names(code: types.CodeType) -> list[str]:
    """Names to import at the top of the scaffold so that method calls compile as in ``code``.

    CPython compiles ``NAME.attr(args)`` as a method call (no bound method made) unless
    the module imports ``NAME`` at its top level (``import json``, ``from x import C``:
    a module's function is no method), whatever ``NAME`` is in the function. That is the
    module's, not the function's: ``code`` tells which receivers were loaded as methods
    and which as attributes. Those never loaded as methods are imported (for one
    without a call that could be a method call, importing it changes nothing).
    """
    attr: set[str] = set()
    method: set[str] = set()
    _attribute_receivers(code, attr, method)
    return sorted(attr - method)


def _compiled_code(
    module: ast.Module, code: types.CodeType, name: str, lineno: int, gen: bool
) -> types.CodeType | None:
    """Compile ``module`` as ``code`` was compiled; return the code ``name`` at ``lineno``."""
    try:
        top = compile(
            module, code.co_filename, "exec", flags=code.co_flags & _FUTURE_MASK, dont_inherit=True
        )
    except (SyntaxError, ValueError, TypeError):
        return None
    return _find_code(top, name, lineno, gen)


def _reproduces(
    fn: types.FunctionType, node: ast.FunctionDef | ast.Lambda, lines: tuple[str, ...]
) -> bool:
    """Whether ``node``, compiled in ``fn``'s scopes, is ``fn``'s code.

    A def (named ``_bvm_def``) is compiled with its decorators (they give
    ``co_firstlineno``), a lambda as the lambda it is; the result is compared with
    ``fn.__code__`` field by field (``_same_code``). A module whose asserts pytest
    rewrote (its globals hold ``@pytest_ar``) is compared with the same rewriting done.
    """
    code = fn.__code__
    name = "<lambda>" if isinstance(node, ast.Lambda) else "_bvm_def"
    module = _scaffold(code, node, _free_params(code), _imported_names(code))
    got = _compiled_code(module, code, name, code.co_firstlineno, False)
    if got is not None and _same_code(got, code):
        return True
    rewrite = sys.modules.get("_pytest.assertion.rewrite")
    if (
        rewrite is None
        or "@pytest_ar" not in fn.__globals__
        or not any(isinstance(n, ast.Assert) for n in ast.walk(node))
    ):
        return False
    module = copy.deepcopy(module)
    try:
        with warnings.catch_warnings():  # pytest warned of its asserts at import already
            warnings.simplefilter("ignore")
            rewrite.rewrite_asserts(module, "".join(lines).encode(), code.co_filename, None)
    except Exception:  # noqa: BLE001 -- another pytest's rewriter: not comparable
        return False
    got = _compiled_code(module, code, name, code.co_firstlineno, False)
    return got is not None and _same_code(got, code)


_CODE_FIELDS = (
    "co_argcount",
    "co_posonlyargcount",
    "co_kwonlyargcount",
    "co_nlocals",
    "co_stacksize",
    "co_firstlineno",
    "co_code",
    "co_names",
    "co_varnames",
    "co_freevars",
    "co_cellvars",
    "co_linetable",
    "co_exceptiontable",
)


def _same_code(a: types.CodeType, b: types.CodeType) -> bool:
    """Whether ``a`` and ``b`` are the same code, names and file aside.

    Bytecode, constants (code objects compared the same way), names, positions, flags but
    ``CO_NESTED`` (the scaffold nests every function). ``co_code`` is the bytecode as
    compiled: specialised (3.11+) or instrumented (3.12+ monitoring) code reads back the
    same. A class body's ``__qualname__`` constant names its nesting: the scaffold's.
    """
    if (a.co_flags ^ b.co_flags) & ~_CO_NESTED:
        return False
    for f in _CODE_FIELDS:
        if getattr(a, f) != getattr(b, f):
            return False
    if len(a.co_consts) != len(b.co_consts):
        return False
    for x, y in zip(a.co_consts, b.co_consts, strict=True):
        if not _same_const(x, y) and not (
            x == a.co_qualname and y == b.co_qualname and "__qualname__" in a.co_names
        ):
            return False
    return True


def _same_const(x: Any, y: Any) -> bool:
    if x is y:
        return True
    t = type(x)
    if t is not type(y):
        return False
    if t is types.CodeType:
        return _same_code(x, y)
    if t is tuple:
        return len(x) == len(y) and all(map(_same_const, x, y))
    if t is float or t is complex:
        return repr(x) == repr(y)  # -0.0 is not 0.0; nan is nan
    return bool(x == y)


def _warn_stale(fn: types.FunctionType) -> None:
    code = fn.__code__
    key = (code.co_filename, code.co_qualname, code.co_firstlineno)
    if key in _WARNED:
        return
    _WARNED.add(key)
    log.warning(
        _STALE_ADVICE, code.co_qualname, code.co_filename, code.co_firstlineno, fn.__module__
    )


def _source_def(fn: types.FunctionType) -> ast.FunctionDef | None:
    """Return ``fn``'s ``def`` (a lambda's as a ``def``) from a text that reproduces it.

    Named ``_bvm_def``, decorators kept. None when ``fn`` has no source, or when no text
    of its file reproduces its code: then ``fn`` runs plainly, and is named in a warning
    (once) if its file has a text (it changed since the function was loaded).
    """
    code = fn.__code__
    filename = code.co_filename
    is_lambda = code.co_name == "<lambda>"
    had_text = False
    for lines in _texts(filename, fn.__globals__):
        had_text = True
        candidates: list[ast.FunctionDef] | list[ast.Lambda]
        if is_lambda:
            candidates = _lambda_nodes(code, filename, lines)
        else:
            fdef = _def_node(code, lines)
            candidates = [] if fdef is None else [fdef]
        for node in candidates:
            if isinstance(node, ast.FunctionDef):
                node.name = "_bvm_def"
            if _reproduces(fn, node, lines):
                _pin(filename, lines)
                return node if isinstance(node, ast.FunctionDef) else _lambda_def(node)
    if had_text:
        _warn_stale(fn)
    return None


# --------------------------------------------------------------------------- building


def _build_template(fn: types.FunctionType) -> types.CodeType | None:
    """Compile the rewritten code object for ``fn.__code__``, or None if not compilable."""
    code = fn.__code__
    if code.co_flags & _NON_PLAIN_FLAGS:
        return None
    # Named _bvm_def so that the factory scope does not bind the function's own name (a
    # recursive call must still look the name up in the globals); co_name is restored
    # below.
    fdef = _source_def(fn)
    if fdef is None:
        return None
    fdef.decorator_list = []

    local_names = frozenset((*code.co_varnames, *code.co_cellvars, *code.co_freevars))
    env = {n: _global_value(fn, n) for n in code.co_names}
    env = {n: v for n, v in env.items() if v is not _UNBOUND}
    ctx = _Ctx(env)
    rewriter = _Rewriter(local_names, ctx)
    body = rewriter.visit(ast.Module(body=fdef.body, type_ignores=[])).body
    fdef.body = _wrap_body(body, fdef.body[0])

    params = [*_free_params(code), *RUNTIME_NAMES, *ctx.guards.values()]
    module = _scaffold(code, fdef, params)
    _fix_locations(module)
    tmpl = _compiled_code(module, code, "_bvm_def", fdef.lineno, True)
    if tmpl is None or not _same_signature(tmpl, code):
        return None
    tmpl = _rename_hoisted(tmpl, ctx.code_names, code.co_qualname)
    tmpl = _fix_nested_qualnames(tmpl, code.co_qualname)
    out = tmpl.replace(co_name=code.co_name, co_qualname=code.co_qualname)
    _GUARDS[out] = {k: name for name, k in ctx.guards.items()}
    return out


def _rename_hoisted(co: types.CodeType, names: dict[str, str], qual: str) -> types.CodeType:
    """Give hoisted comprehension functions the names tracebacks show for comprehensions."""
    if not names:
        return co
    consts = []
    changed = False
    for c in co.co_consts:
        if isinstance(c, types.CodeType):
            shown = names.get(c.co_name)
            new = _rename_hoisted(c, names, f"{qual}.<locals>.{shown}" if shown else qual)
            if shown:
                new = new.replace(co_name=shown, co_qualname=f"{qual}.<locals>.{shown}")
            changed = changed or new is not c
            consts.append(new)
        else:
            consts.append(c)
    return co.replace(co_consts=tuple(consts)) if changed else co


def _fix_nested_qualnames(co: types.CodeType, qual: str) -> types.CodeType:
    """Name nested functions and classes after the function, not the factory.

    Without this, a ``def`` or ``class`` inside compiled code makes functions or classes
    whose ``__qualname__`` is ``_bvm_factory.<locals>._bvm_def.<locals>.g`` instead of
    ``f.<locals>.g`` (tracebacks, reprs, pickling errors, beamvm.trace specs).
    """
    consts = []
    changed = False
    for c in co.co_consts:
        if isinstance(c, types.CodeType):
            new = _fix_nested_qualnames(c, qual)
            q = new.co_qualname
            cut = q.find("_bvm_def.<locals>.")
            if cut >= 0 and q.startswith("_bvm_factory."):
                fixed = qual + q[cut + len("_bvm_def") :]
                new = new.replace(co_qualname=fixed)
                if "__qualname__" in new.co_names and q in new.co_consts:
                    # a class body stores its ``__qualname__`` from a constant
                    new = new.replace(
                        co_consts=tuple(fixed if k == q else k for k in new.co_consts)
                    )
            changed = changed or new is not c
            consts.append(new)
        else:
            consts.append(c)
    return co.replace(co_consts=tuple(consts)) if changed else co


def _find_code(co: types.CodeType, name: str, lineno: int, gen: bool) -> types.CodeType | None:
    """Return the code named ``name`` at ``lineno`` in ``co``: a generator's if ``gen``."""
    for c in co.co_consts:
        if isinstance(c, types.CodeType):
            if (
                c.co_name == name
                and c.co_firstlineno == lineno
                and bool(c.co_flags & inspect.CO_GENERATOR) is gen
            ):
                return c
            found = _find_code(c, name, lineno, gen)
            if found is not None:
                return found
    return None


def _same_signature(a: types.CodeType, b: types.CodeType) -> bool:
    n = a.co_argcount + a.co_kwonlyargcount + bool(a.co_flags & 4) + bool(a.co_flags & 8)
    return (
        a.co_argcount == b.co_argcount
        and a.co_posonlyargcount == b.co_posonlyargcount
        and a.co_kwonlyargcount == b.co_kwonlyargcount
        and a.co_flags & 12 == b.co_flags & 12
        and a.co_varnames[:n] == b.co_varnames[:n]
        and {v for v in a.co_freevars if not v.startswith(_K)} - set(RUNTIME_NAMES)
        <= set(b.co_freevars)
    )


# --------------------------------------------------------------------------- caches


_NOT_COMPILABLE = object()
_UNBOUND = object()
_NEVER = object()
#: id(code) -> (code, its template or _NOT_COMPILABLE). Keyed by identity, not by code
#: equality: equal code objects (the same function in two files: code equality ignores
#: co_filename) are compiled each from their own source and globals. The code object in
#: the value keeps its id from being reused.
_TEMPLATES: dict[int, tuple[types.CodeType, Any]] = {}
#: Serializes template builds: scheduler threads compile at once, and CPython 3.11's
#: parser (ast.parse) raised SystemError when two threads parsed concurrently.
_BUILD_LOCK = threading.RLock()


def _reset_build_lock() -> None:
    # A fork while another thread built a template leaves the child's copy held forever.
    global _BUILD_LOCK
    _BUILD_LOCK = threading.RLock()


os.register_at_fork(after_in_child=_reset_build_lock)
#: template -> {guard cell name: global name} (see _Rewriter._guarded)
_GUARDS: dict[types.CodeType, dict[str, str]] = {}


def _guarded_value(fn: types.FunctionType, key: str) -> Any:
    """Return the value of a guard's callee for ``fn``, else ``_UNBOUND``.

    The callee is a global (``NAME``) or a global module's attribute (``MODULE.NAME``,
    from the module's dict).
    """
    m, dot, attr = key.partition(".")
    value = _global_value(fn, m)
    if not dot:
        return value
    if not isinstance(value, types.ModuleType):
        return _UNBOUND
    return value.__dict__.get(attr, _UNBOUND)


def _global_value(fn: types.FunctionType, name: str) -> Any:
    """Return the value of ``name`` for ``fn`` as a global or builtin, else ``_UNBOUND``."""
    g = fn.__globals__
    if name in g:
        return g[name]
    b = g.get("__builtins__", builtins)
    if isinstance(b, types.ModuleType):
        b = b.__dict__
    return b.get(name, _UNBOUND)


#: Called as ``hook(code, template)`` when a template is built for ``code``: the hooks of
#: ``beamvm.trace`` (sys.monitoring events on new templates of traced functions).
TEMPLATE_HOOKS: list[Callable[[types.CodeType, types.CodeType], None]] = []
#: ``beamvm.trace``'s hook on 3.11 while a call trace is set: ``CALL_HOOK(fn)`` returns a
#: tracing generator function for a traced ``fn`` missing from the dispatch cache (a
#: closure, a function first called now), else None. None when no trace is set.
CALL_HOOK: Callable[[types.FunctionType], Any] | None = None

_COMPILED_FNS: weakref.WeakKeyDictionary[types.FunctionType, types.FunctionType] = (
    weakref.WeakKeyDictionary()
)
_DISPATCH_LIMIT = 100_000


def _store_bounded(cache: dict[Any, Any], k: Any, v: Any) -> None:
    """``cache[k] = v``, emptying the cache first once it holds ``_DISPATCH_LIMIT``."""
    if len(cache) >= _DISPATCH_LIMIT:
        cache.clear()
    cache[k] = v


_RUNTIME_CELLS: dict[str, types.CellType] = {}


def _entry(code: types.CodeType) -> Any:
    """Return what is cached for ``code``: a template, _NOT_COMPILABLE, or None."""
    hit = _TEMPLATES.get(id(code))
    return hit[1] if hit is not None and hit[0] is code else None


def cached_template(code: types.CodeType) -> types.CodeType | None:
    """Return the template built for ``code`` (None: not built, or not compilable)."""
    t = _entry(code)
    return None if t is _NOT_COMPILABLE else t


def forget_template(code: types.CodeType) -> None:
    """Drop ``code``'s template, so the next call builds it again."""
    if _entry(code) is not None:
        del _TEMPLATES[id(code)]


def _template(code: types.CodeType, fn: types.FunctionType) -> types.CodeType | None:
    t = _entry(code)
    if t is None:
        with _BUILD_LOCK:
            t = _entry(code)  # another thread may have built it meanwhile
            built = t is None
            if built:
                t = _build_template(fn) or _NOT_COMPILABLE
                _TEMPLATES[id(code)] = (code, t)
        if built and t is not _NOT_COMPILABLE and TEMPLATE_HOOKS:
            for hook in TEMPLATE_HOOKS:  # beamvm.trace / beamvm.code (see there)
                hook(code, t)
    return None if t is _NOT_COMPILABLE else t


def _make(fn: types.FunctionType, tmpl: types.CodeType) -> types.FunctionType:
    orig = fn.__code__.co_freevars
    cells = fn.__closure__ or ()
    by_name = dict(zip(orig, cells, strict=True))
    guards = _GUARDS.get(tmpl, {})

    def cell(v: str) -> types.CellType:
        if v in _RUNTIME_CELLS:
            return _RUNTIME_CELLS[v]
        if v in guards:
            # The callee's value now; if it is unbound, a value no callee can be.
            value = _guarded_value(fn, guards[v])
            return types.CellType(_NEVER if value is _UNBOUND else value)
        return by_name[v]

    closure = tuple(cell(v) for v in tmpl.co_freevars)
    g = types.FunctionType(tmpl, fn.__globals__, fn.__name__, fn.__defaults__, closure or None)
    g.__kwdefaults__ = fn.__kwdefaults__
    g.__qualname__ = fn.__qualname__
    g.__module__ = fn.__module__
    g.__doc__ = fn.__doc__
    g.__dict__.update(fn.__dict__)
    g.__bvm_source__ = fn  # type: ignore[attr-defined]
    return g


def _compiled_for(fn: types.FunctionType) -> types.FunctionType | None:
    """Return the compiled generator function for ``fn``, or None if it is not compilable."""
    tmpl = _template(fn.__code__, fn)
    if tmpl is None:
        return None
    g = _COMPILED_FNS.get(fn)
    if g is None:
        g = _COMPILED_FNS[fn] = _make(fn, tmpl)
    return g


#: Opcodes that make a function more than a leaf: calls, loops (backward jumps, FOR_ITER),
#: ``with`` (a thread lock's process-aware wait), imports and class bodies (they run
#: code), generators' own opcodes.
_NOT_LEAF_OPS = frozenset(
    {
        "CALL",
        "CALL_FUNCTION_EX",
        "CALL_KW",
        "PRECALL",
        "FOR_ITER",
        "BEFORE_WITH",
        "BEFORE_ASYNC_WITH",
        "SETUP_WITH",
        "IMPORT_NAME",
        "LOAD_BUILD_CLASS",
        "YIELD_VALUE",
        "SEND",
    }
)
_LEAVES: dict[types.CodeType, bool] = {}


def _is_leaf(code: types.CodeType) -> bool:
    """Whether compiled code calls a function with this code plainly: a leaf.

    A leaf makes no call, has no loop (no backward jump, no ``for``), no ``with``, no
    ``import``, no class statement: it runs a bounded number of bytecodes, so a budget
    check in it would never yield, and it cannot reach a primitive (``receive``). Run
    plainly it saves a generator, a ``yield from`` and its entry check (~0.25 us per call,
    e.g. a ``handle_call`` that returns a field). What C calls from it (operators,
    properties, ``__del__``) runs plainly whether it is compiled or not.
    """
    leaf = _LEAVES.get(code)
    if leaf is None:
        leaf = not code.co_flags & _NON_PLAIN_FLAGS and not any(
            i.opname in _NOT_LEAF_OPS or "BACKWARD" in i.opname for i in dis.get_instructions(code)
        )
        _store_bounded(_LEAVES, code, leaf)
    return leaf


def _call_gen(f: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Generator[Any, Any, Any]:
    """Run ``f(*args, **kwargs)`` from process code: its compiled form, or plainly."""
    h = f if _plain_type(type(f)) else _dispatch_get(f)
    if h is f:
        try:
            return f(*args, **kwargs)
        except StopIteration as e:
            return _StopCarrier(e)
    return (yield from h(*args, **kwargs))


def _partial_gen(p: functools.partial, *args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
    """Run a ``functools.partial`` called from process code: its function runs compiled."""
    return (yield from _call_gen(p.func, (*p.args, *args), {**p.keywords, **kwargs}))


def _asyncio_run_refused(main: Any, *args: Any, **kwargs: Any) -> Any:
    close = getattr(main, "close", None)
    if close is not None:
        close()  # no "coroutine was never awaited" warning on top of this error
    raise RuntimeError(
        "asyncio.run() cannot be called inside a beamvm process: a process is not a thread "
        "with an event loop of its own (it shares its scheduler thread with other "
        "processes). Await the coroutine with beamvm.await_(coro) instead: it runs on an "
        "event loop beside the VM and suspends only this process (see beamvm.aio); or "
        "spawn an async function, which runs as a process on that loop"
    )


#: Modules whose functions process code calls plainly, to completion, as it calls C:
#: ``logging`` holds a handler's ``RLock`` (owned by the OS thread) while it formats
#: and emits a record. Compiled, a call could be preempted with that lock held, and the
#: next process on the same scheduler thread would re-enter it (an ``RLock`` lets its
#: thread in again: two records emitted at once, interleaved), or the holder, resumed
#: on another scheduler thread, could not release it. A log call is short, so running
#: it whole costs a latency no longer than a ``print``. What logging calls (a user's
#: ``Handler.emit``, a filter) runs plainly with it.
PLAIN_MODULES = frozenset({"logging", "logging.handlers", "logging.config"})

#: callee -> what compiled code calls: the callee itself (plain) or a generator function.
#: An exact dict (see ``_dispatched``); ``_dispatch_get`` fills it.
_DISPATCH: dict[Any, Any] = {}


def _dispatch_get(f: Any) -> Any:
    """Return what compiled code calls for the callee ``f`` (TypeError if unhashable)."""
    return _DISPATCH[f] if f in _DISPATCH else _dispatch_miss(f)


def _dispatch_store(k: Any, v: Any) -> None:
    _store_bounded(_DISPATCH, k, v)


def _dispatch_miss(f: Any) -> Any:
    """Compute what compiled code calls for ``f``, which is not in ``_DISPATCH`` yet.

    The answer is cached there when ``f`` is long-lived (not a bound method, a partial or
    a closure).
    """
    tf = type(f)
    if tf is types.MethodType:
        func = f.__func__
        try:
            g = _dispatch_get(func)
        except TypeError:  # unhashable __func__
            return f
        return f if g is func else types.MethodType(g, f.__self__)
    try:
        impl = _FAST.get(f) or _runtime._PRIMITIVES.get(f)
    except TypeError:  # unhashable callable: plain, not cached
        return f
    if impl is not None:
        _dispatch_store(f, impl)
        return impl
    if tf is types.FunctionType:
        if CALL_HOOK is not None:  # beamvm.trace on 3.11 (see there)
            traced = CALL_HOOK(f)
            if traced is not None:
                return traced
        if f.__module__ == "asyncio.runners" and f.__name__ == "run":
            _dispatch_store(f, _asyncio_run_refused)
            return _asyncio_run_refused
        if f.__module__ in PLAIN_MODULES:
            _dispatch_store(f, f)
            return f
        # beamvm's own calls may say how process code calls them (module functions,
        # never a closure): ``__beamvm_plain__`` never suspends, so it is called
        # plainly (``tcp.setopts``); ``__beamvm_fast__`` is called plainly in its
        # place and returns what the call site runs with ``yield from``: an
        # exhausted generator when it finished without waiting (``tcp.send`` into
        # a socket with room), else the generator that waits. Either saves the
        # generator and the entry check of a compiled call. Not while a call trace
        # is set (TEMPLATE_HOOKS, 3.12+): the fast form runs other code than the
        # traced function's (beamvm.trace drops the entries cached before it).
        fast = getattr(f, "__beamvm_fast__", None)
        if fast is not None and not TEMPLATE_HOOKS:
            _dispatch_store(f, fast)
            return fast
        leaf = getattr(f, "__beamvm_plain__", False) is True or _is_leaf(f.__code__)
        if f.__closure__ or f.__name__ == "<lambda>":
            if leaf:
                return f
            g = _compiled_for(f)
            return f if g is None else g  # per-function cache lives in _COMPILED_FNS
        g = None if leaf else _compiled_for(f)
        out = f if g is None else g
        _dispatch_store(f, out)
        return out
    if tf is functools.partial:
        return types.MethodType(_partial_gen, f)  # not stored: partials come and go
    if isinstance(f, type) or tf is types.BuiltinFunctionType:
        # classes and module-level builtins are long-lived; bound builtin methods
        # (``lst.append``) are never stored (they would keep their object alive).
        if (
            tf is type
            or getattr(f, "__self__", None) is None
            or isinstance(f.__self__, types.ModuleType)
        ):
            _dispatch_store(f, f)
        return f
    # an instance with a Python __call__ (a class-based decorator, a callable object)
    call = _CALLERS.get(tf)
    if call is None:
        meth = getattr(tf, "__call__", None)  # noqa: B004 -- the type's own __call__
        # A type that says so (beamvm's ``plain`` decorator) is called plainly.
        plain = getattr(tf, "__beamvm_plain__", False)
        call = _dispatch_get(meth) if isinstance(meth, types.FunctionType) and not plain else None
        if call is meth:
            call = None
        _store_bounded(_CALLERS, tf, call if call is not None else False)
    if call:
        return types.MethodType(call, f)
    return f


#: type -> the compiled ``__call__`` of its instances (False: none; called plainly).
_CALLERS: dict[type, Any] = {}


#: type -> whether its instances are called plainly, without a ``_DISPATCH`` lookup:
#: those that cannot be hashed (``__hash__ = None``, ctypes' foreign functions, whose
#: hash raises) and weak references (a dead one raises when hashed). An exact dict, as
#: ``_DISPATCH`` (see ``_cached``); ``_plain_type_miss`` fills it.
_PLAIN_TYPES: dict[type, bool] = {}


def _plain_type_miss(t: type) -> bool:
    """Decide (and cache) whether instances of ``t`` are called plainly."""
    ctypes_ = sys.modules.get("_ctypes")
    plain = (
        getattr(t, "__hash__", None) is None
        or issubclass(t, weakref.ReferenceType)
        or (ctypes_ is not None and issubclass(t, ctypes_.CFuncPtr.__mro__[1]))
    )
    _store_bounded(_PLAIN_TYPES, t, plain)
    return plain


def _plain_type(t: type) -> bool:
    """Return whether instances of ``t`` are called plainly (see ``_PLAIN_TYPES``)."""
    return _PLAIN_TYPES[t] if t in _PLAIN_TYPES else _plain_type_miss(t)


_RUNTIME_CELLS.update(
    {
        _P: types.CellType(_runtime.PREEMPT),
        _TL: types.CellType(_runtime._TL),
        _D: types.CellType(_DISPATCH),
        _DM: types.CellType(_dispatch_miss),
        _BFT: types.CellType(types.BuiltinFunctionType),
        _RF: types.CellType(_runtime._refill),
        # The native timer swaps this cell's int (crates/vm-python/src/timeslice.rs).
        _Y: types.CellType(0),
        _WL: types.CellType(_warn_lock),
        _SET: types.CellType(operator.setitem),
        # Placeholders until set_fast_receive: nothing is the fast receive.
        _RCV: types.CellType(object()),
        _RCV0: types.CellType(object()),
        _RW: types.CellType(frozenset()),
        _SX: types.CellType(_StopCarrier),
        _RR: types.CellType(_reraise),
        _IT: types.CellType(iter),
        _GEN: types.CellType(_blocking.Wait),
        _BI: types.CellType(builtins),
        _PB: types.CellType(_pbuiltins),
        _TS: types.CellType(time.sleep),
        _SG: types.CellType(_blocking.sleep_gen),
        _AQ: types.CellType(_blocking.acquire_for),
        _MS: types.CellType(_pbuiltins._MISSING),
        # Set to timeslice.rs's _resumed by set_resumed_hook; a no-op until then.
        _RS: types.CellType(_runtime.resumed_noop),
        _T: types.CellType(type),
        _SI: types.CellType(StopIteration),
        _BE: types.CellType(BaseException),
        _MT: types.CellType(types.MethodType),
        _WR: types.CellType(_PLAIN_TYPES),
        _WM: types.CellType(_plain_type_miss),
        _FT: types.CellType(types.FunctionType),
        # Placeholder until set_op_primitive: nothing is the op primitive.
        _OP: types.CellType(object()),
    }
)

#: Public primitive -> its fast implementation (see set_fast_receive).
_FAST: dict[Callable[..., Any], Callable[..., Any]] = {}


def set_fast_receive(
    plain: Callable[..., Any],
    fast: Callable[..., Any],
    wait_types: tuple[type, ...],
    fast0: Callable[..., Any] | None = None,
) -> None:
    """Make compiled calls to the primitive ``plain`` call ``fast`` plainly.

    ``fast`` takes ``plain``'s arguments and returns either the result (the call is done,
    nothing is yielded) or an instance of one of ``wait_types``, which the compiled frame
    yields as it is (a single yield to the driver, no ``yield from`` level); the driver
    resumes the frame with ``send(result)`` or ``throw(exc)``. ``plain`` keeps its
    registered generator implementation for ``compile_process`` and other primitives.
    ``fast0`` (default ``fast``) is what a call of ``plain`` without arguments calls
    instead: ``fast()`` with a cheaper signature to parse.
    """
    _FAST[plain] = fast
    _RUNTIME_CELLS[_RCV].cell_contents = fast
    _RUNTIME_CELLS[_RCV0].cell_contents = fast if fast0 is None else fast0
    # A set: `type(r) not in RW` is a pointer hash, where a tuple made a rich comparison
    # per type that is not the one found (two per receive that returned a message).
    _RUNTIME_CELLS[_RW].cell_contents = frozenset(wait_types)
    _DISPATCH.pop(plain, None)


def set_op_primitive(impl: Callable[..., Any]) -> None:
    """Make compiled call sites yield what the native primitive ``impl`` returns.

    ``impl`` (registered for a public primitive, e.g. ``gen_server.call``'s native half)
    returns a waiting receive op that the frame yields itself, as the fast receive's:
    the driver resumes the frame with the result or throws into it (no ``yield from``
    level, no ``StopIteration``). Other callers still run it with ``yield from``.
    """
    _RUNTIME_CELLS[_OP].cell_contents = impl


def set_resumed_hook(fn: Callable[[], None]) -> None:
    """Install what compiled code calls when it resumes after a budget-check yield."""
    _RUNTIME_CELLS[_RS].cell_contents = fn


def yield_flag_cell() -> types.CellType:
    """Return the cell compiled code compares its count with (the yield-now flag)."""
    return _RUNTIME_CELLS[_Y]


def stop_carrier_type() -> type:
    """Return the type a compiled body returns in place of raising ``StopIteration``."""
    return _StopCarrier


def _on_register(plain: Callable[..., Any]) -> None:
    _DISPATCH.pop(plain, None)


_runtime._REGISTER_HOOKS.append(_on_register)


# --------------------------------------------------------------------------- public API


def is_compilable(fn: object) -> bool:
    """Whether ``fn`` (a Python function) can be compiled into a process body."""
    return isinstance(fn, types.FunctionType) and _compiled_for(fn) is not None


def compile_function(fn: Callable[..., Any]) -> Callable[..., Generator[Any, Any, Any]]:
    """Return the preemptible generator-function version of the Python function ``fn``.

    The result takes the same arguments and, driven by the scheduler protocol, returns what
    ``fn`` returns (or a carrier for a ``StopIteration`` it raised, see ``_StopCarrier``).
    Cached per code object (and per function object for closures). Raises
    ``CompileError`` when ``fn`` is not a compilable Python function (builtins,
    generator/async functions, functions whose source cannot be found).
    """
    if isinstance(fn, types.MethodType):
        return types.MethodType(compile_function(fn.__func__), fn.__self__)
    if not isinstance(fn, types.FunctionType):
        raise CompileError(f"{fn!r} is not a Python function")
    g = _compiled_for(fn)
    if g is None:
        raise CompileError(
            f"{fn.__qualname__} cannot be compiled (no source, a source file that no longer "
            "holds its text, or a generator/coroutine function)"
        )
    return g


def _run_plain(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    try:
        return fn(*args, **kwargs)
    except StopIteration as e:
        return _StopCarrier(e)
    yield  # pragma: no cover -- makes this a generator function


def _refuse_non_plain(fn: Any) -> None:
    target = getattr(fn, "__func__", fn)
    if not isinstance(target, types.FunctionType):
        return
    flags = target.__code__.co_flags
    name = getattr(target, "__qualname__", repr(target))
    if flags & inspect.CO_ITERABLE_COROUTINE:
        raise TypeError(
            f"cannot spawn {name}: it is a generator-based coroutine; spawn an async def "
            "function (it runs on the event loop as a process, see beamvm.aio) or a plain one"
        )
    if flags & inspect.CO_ASYNC_GENERATOR:
        raise TypeError(
            f"cannot spawn {name}: it is an async generator function; spawn a plain "
            "function that does the work"
        )
    if flags & inspect.CO_GENERATOR:
        raise TypeError(
            f"cannot spawn {name}: it is a generator function (calling it only makes a "
            f"generator). Spawn a plain function that consumes it, e.g. "
            f"spawn(lambda: list({target.__name__}(...)))"
        )


def compile_process(
    fn: Callable[..., Any],
    args: tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
) -> Generator[Any, Any, Any]:
    """Return the generator the driver runs as a process executing ``fn(*args, **kwargs)``.

    Handles ``functools.partial`` and bound methods; a registered primitive runs its
    generator implementation; a callable that cannot be compiled runs once, to completion,
    on the first ``send(None)``. An async function runs as a process on the event loop
    (``beamvm.aio``); generator functions are refused (``TypeError``: calling them would
    only make an object). The generator returns a ``_StopCarrier``
    when ``fn`` raised ``StopIteration``.
    """
    kwargs = dict(kwargs or {})
    while isinstance(fn, functools.partial):
        args = (*fn.args, *args)
        kwargs = {**fn.keywords, **kwargs}
        fn = fn.func
    impl = _runtime.primitive_impl(fn)
    if impl is not None:
        return impl(*args, **kwargs)
    if inspect.iscoroutinefunction(fn):  # spawn(async_fn): the one place this is decided
        if _runtime.async_process is None:
            import beamvm.aio  # noqa: F401 -- installs _runtime.async_process
        assert _runtime.async_process is not None
        return _runtime.async_process(fn, args, kwargs)
    _refuse_non_plain(fn)
    try:
        h = _dispatch_get(fn)
    except TypeError:  # unhashable callable
        h = fn
    if h is not fn:
        return h(*args, **kwargs)
    return _run_plain(fn, args, kwargs)
