"""Compile ordinary Python functions into resumable, preemptible process bodies.

A process body is a generator (see ``_runtime`` for the protocol the driver speaks).
``compile_function(fn)`` reads ``fn``'s source, rewrites its AST and compiles it -- with the
original file name and line/column numbers, so tracebacks point at the user's code -- into a
generator function with the same signature, globals, defaults and closure cells:

* Reductions: on entry and at the head of every ``for``/``while`` body (so every back-edge,
  ``continue`` included) a frame-local counter ``_bvm_n`` is decremented; at zero the frame
  publishes it to the thread's budget cell and yields ``PREEMPT``.
* Calls: every call expression in the function's own body becomes a dispatch. The callee is
  looked up once per object in ``_DISPATCH`` (builtin functions skip even that): a Python
  function with source and without ``yield``/``await`` is compiled (lazily, cached) and run
  with ``yield from``; a bound method of one runs as its compiled function bound to the same
  ``self``; a registered primitive runs its generator implementation with ``yield from`` (a
  suspension point); anything else (builtins, C code, classes, lambdas, generator functions,
  functions without source) is called plainly and runs to completion, like a NIF.
* Not rewritten (``yield`` cannot go there, or it is not this frame's code): lambdas,
  comprehensions and generator expressions, nested ``def``/``class`` statements (including
  their decorators, defaults and bases), annotations. Nested functions and methods are
  compiled when they are called.
* ``with`` on a ``threading.Lock``/``RLock`` warns once per site (``RuntimeWarning``): a
  preemption inside the block holds a thread lock across a yield.

The generated code keeps helper state in locals named ``_bvm_*`` (visible to ``locals()``);
the last callee/result per nesting depth stay referenced until overwritten or the frame ends.
"""

from __future__ import annotations
import __future__

import ast
import builtins
import functools
import inspect
import operator
import textwrap
import threading
import types
import warnings
import weakref
from collections.abc import Callable, Generator
from typing import Any

from . import _runtime

__all__ = ["CompileError", "compile_function", "compile_process", "is_compilable"]

_NON_PLAIN_FLAGS = (
    inspect.CO_GENERATOR
    | inspect.CO_COROUTINE
    | inspect.CO_ITERABLE_COROUTINE
    | inspect.CO_ASYNC_GENERATOR
)
_FUTURE_MASK = 0
for _name in __future__.all_feature_names:
    _FUTURE_MASK |= getattr(__future__, _name).compiler_flag

# Names of the helpers compiled code reaches through closure cells (never mangled: one
# leading underscore). The cells are shared by every compiled function.
_P = "_bvm_P"  # PREEMPT
_TL = "_bvm_TL"  # thread-local holder of the budget cell (attribute .b)
_D = "_bvm_D"  # dispatch table
_BFT = "_bvm_BFT"  # types.BuiltinFunctionType (fast plain path)
_RF = "_bvm_refill"  # slow path after a preemption yield
_WL = "_bvm_wl"  # with-item wrapper that warns about thread locks
_SET = "_bvm_SET"  # operator.setitem (publishing the count inside an expression)
_RCV = "_bvm_RCV"  # the fast receive function (see set_fast_receive)
_RW = "_bvm_RW"  # types the fast receive returns when the frame must yield instead
_B = "_bvm_B"  # local: this thread's budget cell
_N = "_bvm_n"  # local: remaining reductions
_RV = "_bvm_rv"  # local: return value

_LOCK_TYPES: tuple[type, ...] = (type(threading.Lock()), type(threading.RLock()))
try:
    _LOCK_TYPES += (threading._PyRLock,)  # type: ignore[attr-defined]
except AttributeError:  # pragma: no cover
    pass

_LOCK_ADVICE = (
    "a threading lock is held in beamvm process code: the process can be preempted inside "
    "the 'with' block and other processes on other scheduler threads then block or lose "
    "updates; use message passing (a process that owns the state) or a process-aware "
    "primitive instead"
)


def _warn_lock(cm: Any) -> Any:
    if type(cm) in _LOCK_TYPES:
        warnings.warn(_LOCK_ADVICE, RuntimeWarning, stacklevel=2)
    return cm


class CompileError(TypeError):
    """Raised by ``compile_function`` for a callable that cannot be compiled."""


# --------------------------------------------------------------------------- AST rewrite


def _name(id_: str, store: bool = False) -> ast.Name:
    return ast.Name(id=id_, ctx=ast.Store() if store else ast.Load())


def _const(v: Any) -> ast.Constant:
    return ast.Constant(value=v)


def _sub(value: ast.expr, idx: int, store: bool = False) -> ast.Subscript:
    return ast.Subscript(value=value, slice=_const(idx), ctx=ast.Store() if store else ast.Load())


def _tl_b() -> ast.Attribute:
    return ast.Attribute(value=_name(_TL), attr="b", ctx=ast.Load())


def _publish() -> ast.stmt:
    # _bvm_B[0] = _bvm_n
    return ast.Assign(targets=[_sub(_name(_B), 0, store=True)], value=_name(_N))


def _slow_path() -> ast.stmt:
    # if _bvm_n <= 0:
    #     _bvm_B[0] = _bvm_n
    #     if not _bvm_B[1]:
    #         yield _bvm_P
    #     _bvm_n = _bvm_refill(_bvm_B)
    return ast.If(
        test=ast.Compare(left=_name(_N), ops=[ast.LtE()], comparators=[_const(0)]),
        body=[
            _publish(),
            ast.If(
                test=ast.UnaryOp(op=ast.Not(), operand=_sub(_name(_B), 1)),
                body=[ast.Expr(value=ast.Yield(value=_name(_P)))],
                orelse=[],
            ),
            ast.Assign(
                targets=[_name(_N, True)],
                value=ast.Call(func=_name(_RF), args=[_name(_B)], keywords=[]),
            ),
        ],
        orelse=[],
    )


def _tick() -> list[ast.stmt]:
    # _bvm_n -= 1; <slow path>
    return [ast.AugAssign(target=_name(_N, True), op=ast.Sub(), value=_const(1)), _slow_path()]


def _resync() -> list[ast.stmt]:
    # After an exception or a with-exit: a callee may have consumed reductions and published
    # them without this frame seeing its return. Take the smaller count (conservative).
    # if _bvm_B[0] < _bvm_n: _bvm_n = _bvm_B[0]
    return [
        ast.If(
            test=ast.Compare(left=_sub(_name(_B), 0), ops=[ast.Lt()], comparators=[_name(_N)]),
            body=[ast.Assign(targets=[_name(_N, True)], value=_sub(_name(_B), 0))],
            orelse=[],
        ),
    ]


_K = "_bvm_k"  # prefix: per-function cells holding a global callee's value at compile time


class _Rewriter(ast.NodeTransformer):
    """Rewrites the body of one function (not nested scopes).

    ``local_names`` are the function's locals, cells and free variables; ``env`` maps a
    global name to the value it had when the template was built (used only to choose
    the shape of a call site: the generated guard re-checks it at run time).
    """

    def __init__(
        self, local_names: frozenset[str] = frozenset(), env: dict[str, Any] | None = None
    ) -> None:
        self.depth = 0
        self.local_names = local_names
        self.env = env or {}
        #: global name -> name of the cell that holds its value (see ``_guarded``)
        self.guards: dict[str, str] = {}

    # Scopes whose code is not this frame's (or where yield is not allowed): leave alone.
    def _leave(self, node: ast.AST) -> ast.AST:
        return node

    visit_FunctionDef = _leave
    visit_AsyncFunctionDef = _leave
    visit_ClassDef = _leave
    visit_Lambda = _leave
    visit_ListComp = _leave
    visit_SetComp = _leave
    visit_DictComp = _leave
    visit_GeneratorExp = _leave

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
        return [
            ast.Assign(targets=[_name(_RV, True)], value=value),
            _publish(),
            ast.Return(value=_name(_RV)),
        ]

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
            item.context_expr = ast.Call(func=_name(_WL), args=[item.context_expr], keywords=[])
        return [node, *_resync()]

    def visit_Call(self, node: ast.Call) -> ast.AST:
        d = self.depth
        self.depth += 1
        try:
            self.generic_visit(node)
        finally:
            self.depth -= 1
        f, h, r = f"_bvm_f{d}", f"_bvm_h{d}", f"_bvm_r{d}"
        # _bvm_h := (_bvm_f if type(_bvm_f := <func>) is _bvm_BFT else _bvm_D[_bvm_f])
        lookup = ast.NamedExpr(
            target=_name(h, True),
            value=ast.IfExp(
                test=ast.Compare(
                    left=ast.Call(
                        func=_name("type"),
                        args=[ast.NamedExpr(target=_name(f, True), value=node.func)],
                        keywords=[],
                    ),
                    ops=[ast.Is()],
                    comparators=[_name(_BFT)],
                ),
                body=_name(f),
                orelse=ast.Subscript(value=_name(_D), slice=_name(f), ctx=ast.Load()),
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
                ast.Compare(left=_name(h), ops=[ast.Is()], comparators=[_name(_RCV)]),
                ast.Compare(
                    left=ast.Call(func=_name("type"), args=[_name(r)], keywords=[]),
                    ops=[ast.NotIn()],
                    comparators=[_name(_RW)],
                ),
            ],
        )
        test = ast.BoolOp(
            op=ast.Or(),
            values=[
                ast.Compare(
                    left=ast.NamedExpr(target=_name(r, True), value=call),
                    ops=[ast.Is()],
                    comparators=[_name(h)],
                ),
                ast.Compare(left=_name(h), ops=[ast.Is()], comparators=[_name(f)]),
                fast_done,
            ],
        )
        # suspend: (_bvm_SET(_bvm_B, 0, _bvm_n),
        #           ((yield _bvm_r) if _bvm_h is _bvm_RCV else (yield from _bvm_r)),
        #           (_bvm_n := _bvm_B[0]))[1]
        # A waiting fast receive is yielded straight to the driver, which sends the message.
        wait = ast.IfExp(
            test=ast.Compare(left=_name(h), ops=[ast.Is()], comparators=[_name(_RCV)]),
            body=ast.Yield(value=_name(r)),
            orelse=ast.YieldFrom(value=_name(r)),
        )
        run = _suspend(wait)
        out = ast.IfExp(test=test, body=_name(r), orelse=run)
        out = self._guarded(node, out, r)
        return ast.copy_location(out, node)

    def _guarded(self, node: ast.Call, generic: ast.expr, r: str) -> ast.expr:
        """Specialise a call of a global plain callable or of the fast receive.

        Plain callables are builtins, classes and native functions. ``NAME(args)``
        becomes ``K(args) if NAME is K else <generic dispatch>``, where the cell ``K``
        holds NAME's value when the function was compiled: a handful of bytecodes
        instead of the dispatch expression (the guard keeps it correct if NAME is
        rebound later). The fast receive gets the same guard around its own shape.
        """
        f = node.func
        if not isinstance(f, ast.Name) or f.id in self.local_names or f.id not in self.env:
            return generic
        value = self.env[f.id]
        fast = _FAST.get(value) if _hashable(value) else None
        if fast is None and not _is_plain(value):
            return generic
        k = self.guards.setdefault(f.id, f"{_K}{len(self.guards)}")
        args = [_copy(a) for a in node.args]
        kws = [_copy(kw) for kw in node.keywords]
        if fast is None:
            body: ast.expr = ast.Call(func=_name(k), args=args, keywords=kws)
        else:
            # (r if type(r := RCV(args)) not in RW else <yield r to the driver>)
            got = ast.NamedExpr(
                target=_name(r, True), value=ast.Call(func=_name(_RCV), args=args, keywords=kws)
            )
            body = ast.IfExp(
                test=ast.Compare(
                    left=ast.Call(func=_name("type"), args=[got], keywords=[]),
                    ops=[ast.NotIn()],
                    comparators=[_name(_RW)],
                ),
                body=_name(r),
                orelse=_suspend(ast.Yield(value=_name(r))),
            )
        test = ast.Compare(left=_name(f.id), ops=[ast.Is()], comparators=[_name(k)])
        return ast.IfExp(test=test, body=body, orelse=generic)


def _suspend(wait: ast.expr) -> ast.expr:
    """``(SET(B, 0, n), <wait>, (n := B[0]))[1]``: publish the count, wait, re-read it."""
    return _sub(
        ast.Tuple(
            elts=[
                ast.Call(func=_name(_SET), args=[_name(_B), _const(0), _name(_N)], keywords=[]),
                wait,
                ast.NamedExpr(target=_name(_N, True), value=_sub(_name(_B), 0)),
            ],
            ctx=ast.Load(),
        ),
        1,
    )


def _copy(node: ast.AST) -> Any:
    import copy

    return copy.deepcopy(node)


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
    if v in _FAST or v in _runtime._PRIMITIVES:
        return False
    return isinstance(v, type) or type(v) is types.BuiltinFunctionType


def _class_for_mangling(qualname: str) -> str | None:
    """Name of the innermost class enclosing a function, from its ``__qualname__``."""
    parts = qualname.split(".")
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] != "<locals>" and parts[i + 1] != "<locals>":
            return parts[i]
    return None


def _shift_columns(tree: ast.AST, indent: int) -> None:
    if not indent:
        return
    for node in ast.walk(tree):
        if hasattr(node, "col_offset") and getattr(node, "lineno", None) is not None:
            node.col_offset += indent
            if getattr(node, "end_col_offset", None) is not None:
                node.end_col_offset += indent


_RUNTIME_NAMES = (_P, _TL, _D, _BFT, _RF, _WL, _SET, _RCV, _RW)


def _build_template(fn: types.FunctionType) -> types.CodeType | None:
    """Compile the rewritten code object for ``fn.__code__``, or None if not compilable."""
    code = fn.__code__
    if code.co_flags & _NON_PLAIN_FLAGS or code.co_name == "<lambda>":
        return None
    try:
        lines, lnum = inspect.getsourcelines(fn)
    except (OSError, TypeError):
        return None
    src = "".join(lines)
    dedented = textwrap.dedent(src)
    first = next((ln for ln in lines if ln.strip()), "")
    indent = len(first) - len(first.lstrip()) if dedented != src else 0
    try:
        mod = ast.parse(dedented)
    except SyntaxError:
        return None
    if not mod.body or not isinstance(mod.body[0], ast.FunctionDef):
        return None
    fdef = mod.body[0]
    if fdef.name != code.co_name:
        return None
    ast.increment_lineno(mod, max(lnum, 1) - 1)
    _shift_columns(mod, indent)
    fdef.decorator_list = []
    # Renamed so that the factory scope does not bind the function's own name (a recursive
    # call must still look the name up in the globals); co_name is restored below.
    fdef.name = "_bvm_def"

    local_names = frozenset((*code.co_varnames, *code.co_cellvars, *code.co_freevars))
    env = {n: _global_value(fn, n) for n in code.co_names}
    env = {n: v for n, v in env.items() if v is not _UNBOUND}
    rewriter = _Rewriter(local_names, env)
    body = rewriter.visit(ast.Module(body=fdef.body, type_ignores=[])).body
    entry: list[ast.stmt] = [
        ast.Assign(targets=[_name(_B, True)], value=_tl_b()),
        ast.Assign(
            targets=[_name(_N, True)],
            value=ast.BinOp(left=_sub(_name(_B), 0), op=ast.Sub(), right=_const(1)),
        ),
        _slow_path(),
    ]
    on_raise = ast.ExceptHandler(
        type=_name("BaseException"),
        name=None,
        body=[
            ast.If(
                test=ast.Compare(left=_name(_N), ops=[ast.Lt()], comparators=[_sub(_name(_B), 0)]),
                body=[_publish()],
                orelse=[],
            ),
            ast.Raise(exc=None, cause=None),
        ],
    )
    wrapped = ast.Try(body=[*body, _publish()], handlers=[on_raise], orelse=[], finalbody=[])
    loc = fdef.body[0]
    for n in entry:
        ast.copy_location(n, loc)
    ast.copy_location(wrapped, loc)
    fdef.body = [*entry, wrapped]

    freevars = [v for v in code.co_freevars if v != "__class__"]
    inner: ast.stmt = fdef
    cls = _class_for_mangling(fn.__qualname__)
    if cls is not None:
        inner = ast.ClassDef(
            name=cls, bases=[], keywords=[], body=[fdef], decorator_list=[], type_params=[]
        )
        ast.copy_location(inner, fdef)
    factory = ast.FunctionDef(
        name="_bvm_factory",
        args=ast.arguments(
            posonlyargs=[],
            args=[
                ast.arg(arg=v) for v in (*freevars, *_RUNTIME_NAMES, *rewriter.guards.values())
            ],
            vararg=None,
            kwonlyargs=[],
            kw_defaults=[],
            kwarg=None,
            defaults=[],
        ),
        body=[inner],
        decorator_list=[],
        returns=None,
        type_params=[],
    )
    ast.copy_location(factory, fdef)
    module = ast.Module(body=[factory], type_ignores=[])
    ast.fix_missing_locations(module)
    try:
        top = compile(
            module, code.co_filename, "exec", flags=code.co_flags & _FUTURE_MASK, dont_inherit=True
        )
    except SyntaxError:
        return None
    tmpl = _find_code(top, fdef.name, fdef.lineno)
    if tmpl is None or not _same_signature(tmpl, code):
        return None
    out = tmpl.replace(co_name=code.co_name, co_qualname=code.co_qualname)
    _GUARDS[out] = {k: name for name, k in rewriter.guards.items()}
    return out


def _find_code(co: types.CodeType, name: str, lineno: int) -> types.CodeType | None:
    for c in co.co_consts:
        if isinstance(c, types.CodeType):
            if c.co_name == name and c.co_firstlineno == lineno and c.co_flags & 0x20:
                return c
            found = _find_code(c, name, lineno)
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
        and {v for v in a.co_freevars if not v.startswith(_K)} - set(_RUNTIME_NAMES)
        <= set(b.co_freevars)
    )


# --------------------------------------------------------------------------- caches


_NOT_COMPILABLE = object()
_UNBOUND = object()
_NEVER = object()
_TEMPLATES: dict[types.CodeType, Any] = {}
#: template -> {guard cell name: global name} (see _Rewriter._guarded)
_GUARDS: dict[types.CodeType, dict[str, str]] = {}


def _global_value(fn: types.FunctionType, name: str) -> Any:
    """Return the value of ``name`` for ``fn`` as a global or builtin, else ``_UNBOUND``."""
    g = fn.__globals__
    if name in g:
        return g[name]
    b = g.get("__builtins__", builtins)
    if isinstance(b, types.ModuleType):
        b = b.__dict__
    return b.get(name, _UNBOUND)
_COMPILED_FNS: weakref.WeakKeyDictionary[types.FunctionType, types.FunctionType] = (
    weakref.WeakKeyDictionary()
)
_DISPATCH_LIMIT = 100_000

_RUNTIME_CELLS: dict[str, types.CellType] = {}


def _template(code: types.CodeType, fn: types.FunctionType) -> types.CodeType | None:
    t = _TEMPLATES.get(code)
    if t is None:
        t = _build_template(fn)
        _TEMPLATES[code] = _NOT_COMPILABLE if t is None else t
        return t
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
            value = _global_value(fn, guards[v])
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


class _Dispatch(dict):  # type: ignore[type-arg]
    """callee -> what compiled code calls: the callee itself (plain) or a generator function."""

    def __missing__(self, f: Any) -> Any:
        tf = type(f)
        if tf is types.MethodType:
            func = f.__func__
            try:
                g = self[func]
            except TypeError:  # unhashable __func__
                return f
            return f if g is func else types.MethodType(g, f.__self__)
        try:
            impl = _FAST.get(f) or _runtime._PRIMITIVES.get(f)
        except TypeError:  # unhashable callable: plain, not cached
            return f
        if impl is not None:
            self._store(f, impl)
            return impl
        if tf is types.FunctionType:
            if f.__closure__:
                g = _compiled_for(f)
                return f if g is None else g  # per-function cache lives in _COMPILED_FNS
            g = _compiled_for(f)
            out = f if g is None else g
            self._store(f, out)
            return out
        if isinstance(f, type) or tf is types.BuiltinFunctionType:
            # classes and module-level builtins are long-lived; bound builtin methods
            # (``lst.append``) are never stored (they would keep their object alive).
            if (
                tf is type
                or getattr(f, "__self__", None) is None
                or isinstance(f.__self__, types.ModuleType)
            ):
                self._store(f, f)
        return f

    def _store(self, k: Any, v: Any) -> None:
        if len(self) >= _DISPATCH_LIMIT:
            self.clear()
        self[k] = v


_DISPATCH = _Dispatch()
_RUNTIME_CELLS.update(
    {
        _P: types.CellType(_runtime.PREEMPT),
        _TL: types.CellType(_runtime._TL),
        _D: types.CellType(_DISPATCH),
        _BFT: types.CellType(types.BuiltinFunctionType),
        _RF: types.CellType(_runtime._refill),
        _WL: types.CellType(_warn_lock),
        _SET: types.CellType(operator.setitem),
        # Placeholders until set_fast_receive: nothing is the fast receive.
        _RCV: types.CellType(object()),
        _RW: types.CellType(()),
    }
)

#: Public primitive -> its fast implementation (see set_fast_receive).
_FAST: dict[Callable[..., Any], Callable[..., Any]] = {}


def set_fast_receive(
    plain: Callable[..., Any], fast: Callable[..., Any], wait_types: tuple[type, ...]
) -> None:
    """Make compiled calls to the primitive ``plain`` call ``fast`` plainly.

    ``fast`` takes ``plain``'s arguments and returns either the result (the call is done,
    nothing is yielded) or an instance of one of ``wait_types``, which the compiled frame
    yields as it is (a single yield to the driver, no ``yield from`` level); the driver
    resumes the frame with ``send(result)`` or ``throw(exc)``. ``plain`` keeps its
    registered generator implementation for ``compile_process`` and other primitives.
    """
    _FAST[plain] = fast
    _RUNTIME_CELLS[_RCV].cell_contents = fast
    _RUNTIME_CELLS[_RW].cell_contents = tuple(wait_types)
    _DISPATCH.pop(plain, None)


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
    ``fn`` returns. Cached per code object (and per function object for closures). Raises
    ``CompileError`` when ``fn`` is not a compilable Python function (builtins, lambdas,
    generator/async functions, functions whose source cannot be found).
    """
    if isinstance(fn, types.MethodType):
        return types.MethodType(compile_function(fn.__func__), fn.__self__)
    if not isinstance(fn, types.FunctionType):
        raise CompileError(f"{fn!r} is not a Python function")
    g = _compiled_for(fn)
    if g is None:
        raise CompileError(
            f"{fn.__qualname__} cannot be compiled (no source, a lambda, or a generator/"
            "coroutine function)"
        )
    return g


def _run_plain(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return fn(*args, **kwargs)
    yield  # pragma: no cover -- makes this a generator function


def compile_process(
    fn: Callable[..., Any],
    args: tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
) -> Generator[Any, Any, Any]:
    """Return the generator the driver runs as a process executing ``fn(*args, **kwargs)``.

    Handles ``functools.partial`` and bound methods; a registered primitive runs its
    generator implementation; a callable that cannot be compiled runs once, to completion,
    on the first ``send(None)``.
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
    if isinstance(fn, types.MethodType | types.FunctionType):
        h = _DISPATCH[fn]
        if h is not fn:
            return h(*args, **kwargs)
    return _run_plain(fn, args, kwargs)
