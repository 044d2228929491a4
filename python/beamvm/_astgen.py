"""Names and AST builders for the code beamvm's compiler generates.

Shared by ``_compiler`` (the rewriter of a function's own statements and calls) and
``_comprehensions`` (comprehensions and the builtins that consume generators). Generated
code reaches the runtime through closure cells whose names are listed here
(``RUNTIME_NAMES``); its own helper locals are named ``_bvm_*`` too, so they never clash
with user names. A node built here has no source position; ``_fix_locations`` and
``_locate`` give it the position of the user code it stands for.
"""

from __future__ import annotations

import ast
import copy
from typing import Any

from ._runtime import REMAINING

# Names of the helpers compiled code reaches through closure cells (never mangled: one
# leading underscore). The cells are shared by every compiled function.
_P = "_bvm_P"  # PREEMPT
_TL = "_bvm_TL"  # thread-local holder of the budget cell (attribute .b)
_D = "_bvm_D"  # dispatch table (an exact dict: its subscript is specialised)
_DM = "_bvm_DM"  # computes (and caches) what a callee not yet in _D maps to
_BFT = "_bvm_BFT"  # types.BuiltinFunctionType (fast plain path)
_RF = "_bvm_refill"  # slow path of a budget check
_WL = "_bvm_wl"  # with-item wrapper (thread locks: warning, process-aware wait)
_SET = "_bvm_SET"  # operator.setitem (publishing the count inside an expression)
_RCV = "_bvm_RCV"  # the fast receive function (see set_fast_receive)
_RCV0 = "_bvm_RCV0"  # the fast receive without arguments (`receive()`)
_RW = "_bvm_RW"  # types the fast receive returns when the frame must yield instead
_Y = "_bvm_Y"  # the yield-now flag: 0, or huge when the slice ran past its time
_SX = "_bvm_SX"  # the StopIteration carrier type
_RR = "_bvm_RR"  # re-raises a carried StopIteration at the call site
_IT = "_bvm_IT"  # builtins.iter (a comprehension's first iterable, in the caller's scope)
_GEN = "_bvm_GEN"  # _blocking.Wait (a with item that must be waited for)
_BI = "_bvm_BI"  # the builtins module (set, sum, max... in generated code)
_PB = "_bvm_PB"  # the _pbuiltins module
_TS = "_bvm_TS"  # time.sleep
_SG = "_bvm_SG"  # _blocking.sleep_gen
_AQ = "_bvm_AQ"  # _blocking.acquire_for
_MS = "_bvm_MS"  # "argument not given" (min/max default)
_RS = "_bvm_resumed"  # restarts the slice's clock after a budget-check yield
# Builtins the generated code uses, reached through cells: user code may bind the names
# (a parameter called ``type``, a global ``StopIteration``...), generated code never sees it.
_T = "_bvm_T"  # builtins.type
_SI = "_bvm_SI"  # StopIteration
_BE = "_bvm_BE"  # BaseException
_MT = "_bvm_MT"  # types.MethodType (bound-method calls, see _compiler._Rewriter._dispatch)
_WR = "_bvm_WR"  # type -> its callables are called plainly, unlooked-up (_PLAIN_TYPES)
_WM = "_bvm_WM"  # decides (and caches) that for a type not yet in _WR
_FT = "_bvm_FT"  # types.FunctionType (the dict lookup first, before the rarer shapes)
_OP = "_bvm_OP"  # a native primitive whose op the frame yields itself (set_op_primitive)
_B = "_bvm_B"  # local: this thread's budget cell
_N = "_bvm_n"  # local: remaining reductions
_RV = "_bvm_rv"  # local: return value
_X = "_bvm_x"  # local: a compiled callee's result, checked for a carried StopIteration
_W = "_bvm_w"  # local: a with item
_K = "_bvm_k"  # prefix: per-function cells holding a global callee's value at compile time

RUNTIME_NAMES = (
    _P, _TL, _D, _BFT, _RF, _WL, _SET, _RCV, _RW, _Y,
    _SX, _RR, _IT, _GEN, _BI, _PB, _TS, _SG, _AQ, _MS, _RS, _T, _SI, _BE, _MT, _WR,
    _FT, _OP, _RCV0, _DM, _WM,
)  # fmt: skip


def _name(id_: str, store: bool = False) -> ast.Name:
    return ast.Name(id=id_, ctx=ast.Store() if store else ast.Load())


def _const(v: Any) -> ast.Constant:
    return ast.Constant(value=v)


def _sub(value: ast.expr, idx: int, store: bool = False) -> ast.Subscript:
    return ast.Subscript(value=value, slice=_const(idx), ctx=ast.Store() if store else ast.Load())


def _attr(value: ast.expr, attr: str) -> ast.Attribute:
    return ast.Attribute(value=value, attr=attr, ctx=ast.Load())


def _raw(func: ast.expr, *args: ast.expr) -> ast.Call:
    """Make a call the rewriter leaves as it is (generated code calling builtins)."""
    c = ast.Call(func=func, args=list(args), keywords=[])
    c._bvm_raw = True  # type: ignore[attr-defined]
    return c


def _is(a: ast.expr, b: ast.expr) -> ast.Compare:
    return ast.Compare(left=a, ops=[ast.Is()], comparators=[b])


def _assign(target: str, value: ast.expr) -> ast.Assign:
    return ast.Assign(targets=[_name(target, True)], value=value)


def _tl_b() -> ast.Attribute:
    return _attr(_name(_TL), "b")


# In the sketches below, B[0] stands for B[REMAINING] (the budget cell's layout is
# _runtime's).


def _publish() -> ast.stmt:
    # _bvm_B[0] = _bvm_n
    return ast.Assign(targets=[_sub(_name(_B), REMAINING, store=True)], value=_name(_N))


def _slow_path() -> ast.stmt:
    # if _bvm_n <= _bvm_Y:          (Y: 0, or huge while the yield-now flag is raised)
    #     _bvm_B[0] = _bvm_n
    #     _bvm_n = _bvm_refill(_bvm_B)
    #     if _bvm_n <= 0:
    #         yield _bvm_P
    #         _bvm_resumed()        (the slice's time starts now, not at the resume)
    #         _bvm_n = _bvm_B[0]
    return ast.If(
        test=ast.Compare(left=_name(_N), ops=[ast.LtE()], comparators=[_name(_Y)]),
        body=[
            _publish(),
            _assign(_N, _raw(_name(_RF), _name(_B))),
            ast.If(
                test=ast.Compare(left=_name(_N), ops=[ast.LtE()], comparators=[_const(0)]),
                body=[
                    ast.Expr(value=ast.Yield(value=_name(_P))),
                    ast.Expr(value=_raw(_name(_RS))),
                    _assign(_N, _sub(_name(_B), REMAINING)),
                ],
                orelse=[],
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
            test=ast.Compare(
                left=_sub(_name(_B), REMAINING), ops=[ast.Lt()], comparators=[_name(_N)]
            ),
            body=[_assign(_N, _sub(_name(_B), REMAINING))],
            orelse=[],
        ),
    ]


def _suspend(wait: ast.expr) -> ast.expr:
    """``(SET(B, 0, n), <wait>, (n := B[0]))[1]``: publish the count, wait, re-read it."""
    return _sub(
        ast.Tuple(
            elts=[
                _raw(_name(_SET), _name(_B), _const(REMAINING), _name(_N)),
                wait,
                ast.NamedExpr(target=_name(_N, True), value=_sub(_name(_B), REMAINING)),
            ],
            ctx=ast.Load(),
        ),
        1,
    )


def _unstop(value: ast.expr) -> ast.expr:
    """``(x if type(x := <value>) is not SX else RR(x))``: re-raise a carried StopIteration."""
    return ast.IfExp(
        test=ast.Compare(
            left=_raw(_name(_T), ast.NamedExpr(target=_name(_X, True), value=value)),
            ops=[ast.IsNot()],
            comparators=[_name(_SX)],
        ),
        body=_name(_X),
        orelse=_raw(_name(_RR), _name(_X)),
    )


def _run_gen(call: ast.expr) -> ast.expr:
    """``yield from`` a compiled generator call, publishing the count around it."""
    return _unstop(_suspend(ast.YieldFrom(value=call)))


def _wrap_body(body: list[ast.stmt], loc: ast.AST) -> list[ast.stmt]:
    """Entry check, the body, and the handlers that publish the count on the way out."""
    entry: list[ast.stmt] = [
        _assign(_B, _tl_b()),
        _assign(_N, ast.BinOp(left=_sub(_name(_B), REMAINING), op=ast.Sub(), right=_const(1))),
        _slow_path(),
    ]
    publish_if_lower = ast.If(
        test=ast.Compare(left=_name(_N), ops=[ast.Lt()], comparators=[_sub(_name(_B), REMAINING)]),
        body=[_publish()],
        orelse=[],
    )
    on_stop = ast.ExceptHandler(
        type=_name(_SI),
        name=_X,
        body=[publish_if_lower, ast.Return(value=_raw(_name(_SX), _name(_X)))],
    )
    on_raise = ast.ExceptHandler(
        type=_name(_BE),
        name=None,
        body=[copy.deepcopy(publish_if_lower), ast.Raise(exc=None, cause=None)],
    )
    wrapped = ast.Try(
        body=[*body, _publish()], handlers=[on_stop, on_raise], orelse=[], finalbody=[]
    )
    out = [*entry, wrapped]
    for n in out:
        ast.copy_location(n, loc)
    return out


def _args(names: list[str]) -> ast.arguments:
    return ast.arguments(
        posonlyargs=[],
        args=[ast.arg(arg=v) for v in names],
        vararg=None,
        kwonlyargs=[],
        kw_defaults=[],
        kwarg=None,
        defaults=[],
    )


def _def(name: str, params: list[str], body: list[ast.stmt]) -> ast.FunctionDef:
    return ast.FunctionDef(
        name=name,
        args=_args(params),
        body=body,
        decorator_list=[],
        returns=None,
        type_params=[],
    )


def _fix_locations(tree: ast.AST) -> None:
    """``ast.fix_missing_locations`` without recursion (1.6x faster on large functions).

    Each node missing a position takes its parent's, attribute by attribute, as the
    standard function does.
    """
    isast = ast.AST
    stack = [(tree, 1, 0, 1, 0)]
    pop, push = stack.pop, stack.append
    while stack:
        n, line, col, end_line, end_col = pop()
        if "lineno" in n._attributes:
            v = getattr(n, "lineno", None)
            if v is None:
                n.lineno = line
            else:
                line = v
            v = getattr(n, "end_lineno", None)
            if v is None:
                n.end_lineno = end_line
            else:
                end_line = v
            v = getattr(n, "col_offset", None)
            if v is None:
                n.col_offset = col
            else:
                col = v
            v = getattr(n, "end_col_offset", None)
            if v is None:
                n.end_col_offset = end_col
            else:
                end_col = v
        for f in n._fields:
            v = getattr(n, f, None)
            if v.__class__ is list:
                for x in v:
                    if isinstance(x, isast):
                        push((x, line, col, end_line, end_col))
            elif isinstance(v, isast):
                push((v, line, col, end_line, end_col))


def _locate(tree: ast.AST, loc: ast.AST) -> None:
    """Give every generated node without a position ``loc``'s position."""
    for n in ast.walk(tree):
        if "lineno" in n._attributes and getattr(n, "lineno", None) is None:
            ast.copy_location(n, loc)
