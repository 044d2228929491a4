"""Comprehensions and the builtins that consume generators, compiled like a function's body.

A list/set/dict comprehension, or a generator expression (or ``map``/``filter``) that a
builtin consumes whole (``list``, ``tuple``, ``set``, ``frozenset``, ``sorted``, ``dict``,
``sum``, ``min``, ``max``, ``any``, ``all``, ``str.join``), becomes a nested generator
function placed before the statement that contains it: the comprehension's own scope, its
loops with budget checks, its calls dispatched like the enclosing function's. ``sorted``,
``min``, ``max`` and ``list.sort`` with a ``key`` run ``_pbuiltins``' versions. Each
rewritten call of a builtin is guarded: if the name no longer denotes the builtin when the
line runs, the original call runs plainly. docs/preemption.md ("What the compiler does")
states the rules and where results may differ from the builtin (float ``sum`` on 3.12+).

``CompiledForms`` is a mixin of ``_compiler._Rewriter``: it uses the rewriter's
``visit``/``visit_Call``/``visit_Call_plain``, its guards and its pending statements.
"""

from __future__ import annotations

import ast
import builtins
import copy
from typing import Any

from ._astgen import (
    _BI,
    _IT,
    _MS,
    _PB,
    _SET,
    _T,
    _assign,
    _attr,
    _const,
    _def,
    _is,
    _locate,
    _name,
    _raw,
    _run_gen,
    _wrap_body,
)

#: Names whose meaning a comprehension's own scope would change (left plain if used).
_SCOPE_NAMES = frozenset({"super", "locals", "vars", "dir", "eval", "exec", "__class__"})
#: Builtins consuming a whole iterable: a generator expression, map() or filter() passed
#: to them is compiled (materialised by compiled loops, then handed to the builtin).
_MATERIALISE = frozenset({"list", "tuple", "set", "frozenset", "sorted", "dict"})
_STREAM = frozenset({"sum", "min", "max", "any", "all"})
#: Elements per chunk when ``sum`` consumes a compiled generator expression.
SUM_CHUNK = 4096
#: Names of the hoisted functions' code objects, as tracebacks show them.
_KIND_NAMES = {
    "list": "<listcomp>",
    "set": "<setcomp>",
    "dict": "<dictcomp>",
}


def _hoistable(node: ast.AST) -> bool:
    for n in ast.walk(node):
        if isinstance(n, (ast.NamedExpr, ast.Await, ast.Yield, ast.YieldFrom)):
            return False
        if isinstance(n, ast.Name) and n.id in _SCOPE_NAMES:
            return False
        if isinstance(n, ast.comprehension) and n.is_async:
            return False
    return True


def _bound_names(node: ast.AST) -> set[str]:
    return {
        n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
    }


class CompiledForms:
    """The comprehension and builtin-call rewrites of ``_compiler._Rewriter``."""

    # provided by the rewriter
    ctx: Any
    depth: int
    local_names: frozenset[str]
    pending: list[list[ast.stmt]]
    _first_iterable: Any

    def visit_ListComp(self, node: ast.ListComp) -> ast.AST:
        if not _hoistable(node):
            return self._first_iterable(node)
        return self._hoist(node.generators, [node.elt], "list", [], node)

    def visit_SetComp(self, node: ast.SetComp) -> ast.AST:
        if not _hoistable(node):
            return self._first_iterable(node)
        return self._hoist(node.generators, [node.elt], "set", [], node)

    def visit_DictComp(self, node: ast.DictComp) -> ast.AST:
        if not _hoistable(node):
            return self._first_iterable(node)
        return self._hoist(node.generators, [node.key, node.value], "dict", [], node)

    def _builtin_guard(self, func: ast.expr, names: frozenset[str]) -> tuple[str, str] | None:
        """(name, guard cell) when ``func`` names one of the builtins ``names`` unshadowed."""
        if not isinstance(func, ast.Name) or func.id not in names:
            return None
        k = self._guard(func.id, getattr(builtins, func.id), check=True)
        return None if k is None else (func.id, k)

    def _source(
        self, arg: ast.expr
    ) -> (
        tuple[list[ast.comprehension], ast.expr, list[tuple[str, ast.expr]], list[ast.expr]] | None
    ):
        """Take apart a generator expression, ``map(f, ...)`` or ``filter(f, it)``.

        Returns (generators, element, leading (parameter, value) pairs, extra guards), or
        None for anything else.
        """
        if isinstance(arg, ast.GeneratorExp):
            if not _hoistable(arg):
                return None
            return arg.generators, arg.elt, [], []
        if not isinstance(arg, ast.Call) or arg.keywords or len(arg.args) < 2:
            return None
        if any(isinstance(a, ast.Starred) for a in arg.args):
            return None
        g = self._builtin_guard(arg.func, frozenset({"map", "filter"}))
        if g is None:
            return None
        name, k = g
        guard = _is(_name(name), _name(k))
        fn, iters = arg.args[0], arg.args[1:]
        if name == "map":
            v = "_bvm_mv"
            if len(iters) == 1:
                it, elt = iters[0], ast.Call(func=_name("_bvm_mf"), args=[_name(v)], keywords=[])
            else:
                it = _raw(_attr(_name(_BI), "zip"), *iters)
                elt = ast.Call(
                    func=_name("_bvm_mf"),
                    args=[ast.Starred(value=_name(v), ctx=ast.Load())],
                    keywords=[],
                )
            gen = ast.comprehension(target=_name(v, True), iter=it, ifs=[], is_async=0)
            return [gen], elt, [("_bvm_mf", fn)], [guard]
        if len(iters) != 1:
            return None
        v = "_bvm_fv"
        keep = ast.IfExp(
            test=_is(_name("_bvm_ff"), _const(None)),
            body=_name(v),
            orelse=ast.Call(func=_name("_bvm_ff"), args=[_name(v)], keywords=[]),
        )
        gen = ast.comprehension(target=_name(v, True), iter=iters[0], ifs=[keep], is_async=0)
        return [gen], _name(v), [("_bvm_ff", fn)], [guard]

    def _consumer(self, node: ast.Call) -> ast.expr | None:
        """Compile ``F(<genexp | map | filter>, ...)`` for a builtin F that consumes it all.

        Also ``str.join``. The generator runs as compiled loops.
        """
        if not node.args or any(isinstance(a, ast.Starred) for a in node.args):
            return None
        kws = {kw.arg: kw.value for kw in node.keywords}
        if None in kws:
            return None
        f = node.func
        rest = node.args[1:]
        join = isinstance(f, ast.Attribute) and f.attr == "join" and not rest and not kws
        g = None if join else self._builtin_guard(f, _MATERIALISE | _STREAM)
        if not join:
            if g is None:
                return None
            name = g[0]
            if name in _MATERIALISE:
                allowed = {"key", "reverse"} if name == "sorted" else set()
                if rest or set(kws) - allowed:
                    return None
            elif name in ("any", "all"):
                if rest or kws:
                    return None
            elif name == "sum":
                if kws or len(rest) > 1:
                    return None
            elif rest or set(kws) - {"key", "default"}:  # min, max
                return None
        pristine = copy.deepcopy(node)  # the original call, for when the guard fails
        src = self._source(node.args[0])
        if src is None:
            return None
        gens, elt, lead, guards = src
        if join:
            # (<join of the list> if type(j := obj) in (str, bytes) else j.join(<original>))
            obj = "_bvm_j"
            test = ast.Compare(
                left=_raw(
                    _name(_T), ast.NamedExpr(target=_name(obj, True), value=self.visit(f.value))
                ),
                ops=[ast.In()],
                comparators=[
                    ast.Tuple(
                        elts=[_attr(_name(_BI), "str"), _attr(_name(_BI), "bytes")], ctx=ast.Load()
                    )
                ],
            )
            hoisted = self._hoist(gens, [elt], "list", lead, node)
            compiled: ast.expr = _raw(_attr(_name(obj), "join"), hoisted)
            pristine.func = _attr(_name(obj), "join")
            return self._either(test, guards, compiled, self.visit_Call_plain(pristine), node)
        assert g is not None
        name, k = g
        guard = _is(_name(name), _name(k))
        if name == "set":
            compiled = self._hoist(gens, [elt], "set", lead, node)
        elif name in _MATERIALISE:
            hoisted = self._hoist(gens, [elt], "list", lead, node)
            if name == "list":
                compiled = hoisted
            elif "key" in kws:  # sorted(genexp, key=f): the key is called preemptibly too
                repl = ast.Call(
                    func=_attr(_name(_PB), "sorted_"), args=[hoisted], keywords=node.keywords
                )
                _locate(repl, node)
                compiled = self.visit_Call(repl)
            else:
                compiled = _raw(_name(k), hoisted)
                compiled.keywords = [
                    ast.keyword(arg=a, value=self.visit(v)) for a, v in kws.items()
                ]
        elif name in ("any", "all"):
            compiled = self._hoist(gens, [elt], name, lead, node)
        elif name == "sum":
            start = rest[0] if rest else _const(0)
            compiled = self._hoist(gens, [elt], "sum", [*lead, ("_bvm_acc", start)], node)
        else:  # min, max
            key = kws.get("key", _const(None))
            dflt = kws.get("default", _name(_MS))
            compiled = self._hoist(
                gens, [elt], name, [*lead, ("_bvm_key", key), ("_bvm_dflt", dflt)], node
            )
        return self._either(guard, guards, compiled, self.visit_Call_plain(pristine), node)

    def _keyed(self, node: ast.Call) -> ast.expr | None:
        """``sorted/min/max(iterable, key=f, ...)``: ``_pbuiltins``' preemptible versions."""
        g = self._builtin_guard(node.func, frozenset({"sorted", "min", "max"}))
        if g is None or len(node.args) != 1 or isinstance(node.args[0], ast.Starred):
            return None
        kws = {kw.arg for kw in node.keywords}
        if "key" not in kws or None in kws:
            return None
        allowed = {"key", "reverse"} if g[0] == "sorted" else {"key", "default"}
        if kws - allowed:
            return None
        name, k = g
        pristine = copy.deepcopy(node)
        repl = ast.Call(func=_attr(_name(_PB), f"{name}_"), args=node.args, keywords=node.keywords)
        ast.copy_location(repl, node)
        _locate(repl, node)
        compiled = self.visit_Call(repl)
        return ast.IfExp(
            test=_is(_name(name), _name(k)), body=compiled, orelse=self.visit_Call_plain(pristine)
        )

    def _list_sort(self, node: ast.Call) -> ast.expr | None:
        """``obj.sort(key=f, ...)`` on a list: ``_pbuiltins.list_sort`` (key called preemptibly)."""
        f = node.func
        if not isinstance(f, ast.Attribute) or f.attr != "sort" or node.args:
            return None
        kws = {kw.arg for kw in node.keywords}
        if "key" not in kws or kws - {"key", "reverse"}:
            return None
        obj = "_bvm_so"
        pristine_kws = copy.deepcopy(node.keywords)
        target = ast.NamedExpr(target=_name(obj, True), value=self.visit(f.value))
        repl = ast.Call(
            func=_attr(_name(_PB), "list_sort"), args=[_name(obj)], keywords=node.keywords
        )
        ast.copy_location(repl, node)
        _locate(repl, node)
        compiled = self.visit_Call(repl)
        orig = ast.Call(func=_attr(_name(obj), "sort"), args=[], keywords=pristine_kws)
        ast.copy_location(orig, node)
        orig_v = self.visit_Call_plain(orig)
        test = _is(_raw(_name(_T), target), _attr(_name(_BI), "list"))
        return ast.IfExp(test=test, body=compiled, orelse=orig_v)

    def _either(
        self,
        test: ast.expr,
        guards: list[ast.expr],
        compiled: ast.expr,
        orig: ast.expr,
        loc: ast.AST,
    ) -> ast.expr:
        if guards:
            test = ast.BoolOp(op=ast.And(), values=[test, *guards])
        out = ast.IfExp(test=test, body=compiled, orelse=orig)
        _locate(out, loc)
        return out

    # ------------------------------------------------------------------ hoisting

    def _hoist(
        self,
        gens: list[ast.comprehension],
        elts: list[ast.expr],
        kind: str,
        extra: list[tuple[str, ast.expr]],
        loc: ast.AST,
    ) -> ast.expr:
        """Compile a comprehension into a nested generator function; return its call.

        The function is placed before the current statement.

        ``extra`` are (parameter, value) pairs evaluated at the call, in the caller's
        scope, in order: ``map``'s and ``filter``'s function (``_bvm_mf``/``_bvm_ff``)
        before the first iterable, the others (``sum``'s start, ``min``'s key...) after.
        """
        name = self.ctx.fresh(_KIND_NAMES.get(kind, "<genexpr>"))
        lead = [(p, v) for p, v in extra if p in ("_bvm_mf", "_bvm_ff")]
        tail = [(p, v) for p, v in extra if p not in ("_bvm_mf", "_bvm_ff")]
        first_iter = _raw(_name(_IT), self.visit(gens[0].iter))
        # evaluation order in the caller: lead values, the first iterable, the tail values
        order: list[tuple[str, ast.expr]] = [
            *[(p, self.visit(v)) for p, v in lead],
            ("_bvm_it", first_iter),
            *[(p, self.visit(v)) for p, v in tail],
        ]
        params = [p for p, _ in order]
        body = self._emit(kind, elts)
        for i in range(len(gens) - 1, -1, -1):
            g = gens[i]
            for cond in reversed(g.ifs):
                body = [ast.If(test=cond, body=body, orelse=[])]
            it = _name("_bvm_it") if i == 0 else g.iter
            body = [ast.For(target=g.target, iter=it, body=body, orelse=[])]
        fbody = [*self._prologue(kind), *body, *self._epilogue(kind)]
        for n in fbody:
            _locate(n, loc)
        bound = set(params) | {n for g in gens for n in _bound_names(g.target)}
        sub = type(self)(self.local_names | frozenset(bound), self.ctx)
        new_body = sub.visit(ast.Module(body=fbody, type_ignores=[])).body
        fdef = _def(name, params, _wrap_body(new_body, loc))
        ast.copy_location(fdef, loc)
        _locate(fdef, loc)
        self.pending[-1].append(fdef)
        call = _raw(_name(name), *[v for _, v in order])
        ast.copy_location(call, loc)
        out = _run_gen(call)
        _locate(out, loc)
        return out

    def _prologue(self, kind: str) -> list[ast.stmt]:
        if kind == "list":
            return [_assign("_bvm_o", ast.List(elts=[], ctx=ast.Load()))]
        if kind == "set":
            return [_assign("_bvm_o", _raw(_attr(_name(_BI), "set")))]
        if kind == "dict":
            return [_assign("_bvm_o", ast.Dict(keys=[], values=[]))]
        if kind == "sum":
            # sum((), start) rejects a str start before anything is evaluated, as sum does
            return [
                _assign(
                    "_bvm_acc",
                    _raw(
                        _attr(_name(_BI), "sum"),
                        ast.Tuple(elts=[], ctx=ast.Load()),
                        _name("_bvm_acc"),
                    ),
                ),
                _assign("_bvm_o", ast.List(elts=[], ctx=ast.Load())),
            ]
        if kind in ("min", "max"):
            return [_assign("_bvm_first", _const(True))]
        return []

    def _emit(self, kind: str, elts: list[ast.expr]) -> list[ast.stmt]:
        o = _name("_bvm_o")
        if kind == "list":
            return [ast.Expr(_raw(_attr(o, "append"), elts[0]))]
        if kind == "set":
            return [ast.Expr(_raw(_attr(o, "add"), elts[0]))]
        if kind == "dict":
            return [ast.Expr(_raw(_name(_SET), o, elts[0], elts[1]))]
        if kind == "any":
            return [ast.If(test=elts[0], body=[ast.Return(value=_const(True))], orelse=[])]
        if kind == "all":
            return [
                ast.If(
                    test=ast.UnaryOp(op=ast.Not(), operand=elts[0]),
                    body=[ast.Return(value=_const(False))],
                    orelse=[],
                )
            ]
        if kind == "sum":
            return [
                ast.Expr(_raw(_attr(o, "append"), elts[0])),
                ast.If(
                    test=ast.Compare(
                        left=_raw(_attr(_name(_BI), "len"), o),
                        ops=[ast.GtE()],
                        comparators=[_const(SUM_CHUNK)],
                    ),
                    body=[
                        _assign("_bvm_acc", _raw(_attr(_name(_BI), "sum"), o, _name("_bvm_acc"))),
                        ast.Expr(_raw(_attr(o, "clear"))),
                    ],
                    orelse=[],
                ),
            ]
        # min / max: the first extreme element wins, as in the builtins
        cmp = ast.Gt() if kind == "max" else ast.Lt()
        key_of_v = ast.IfExp(
            test=_is(_name("_bvm_key"), _const(None)),
            body=_name("_bvm_v"),
            orelse=ast.Call(func=_name("_bvm_key"), args=[_name("_bvm_v")], keywords=[]),
        )
        take = [_assign("_bvm_best", _name("_bvm_v")), _assign("_bvm_bk", _name("_bvm_kv"))]
        return [
            _assign("_bvm_v", elts[0]),
            _assign("_bvm_kv", key_of_v),
            ast.If(
                test=_name("_bvm_first"),
                body=[*take, _assign("_bvm_first", _const(False))],
                orelse=[
                    ast.If(
                        test=ast.Compare(
                            left=_name("_bvm_kv"), ops=[cmp], comparators=[_name("_bvm_bk")]
                        ),
                        body=copy.deepcopy(take),
                        orelse=[],
                    )
                ],
            ),
        ]

    def _epilogue(self, kind: str) -> list[ast.stmt]:
        if kind in ("list", "set", "dict"):
            return [ast.Return(value=_name("_bvm_o"))]
        if kind == "any":
            return [ast.Return(value=_const(False))]
        if kind == "all":
            return [ast.Return(value=_const(True))]
        if kind == "sum":
            return [
                ast.Return(value=_raw(_attr(_name(_BI), "sum"), _name("_bvm_o"), _name("_bvm_acc")))
            ]
        empty = ast.If(
            test=_is(_name("_bvm_dflt"), _name(_MS)),
            body=[
                ast.Return(value=_raw(_attr(_name(_BI), kind), ast.Tuple(elts=[], ctx=ast.Load())))
            ],
            orelse=[ast.Return(value=_name("_bvm_dflt"))],
        )
        return [
            ast.If(test=_name("_bvm_first"), body=[empty], orelse=[]),
            ast.Return(value=_name("_bvm_best")),
        ]
