"""The fast back end: turn a checked formula tree into nested Python closures.

No ``exec``/``eval``/``compile`` of source: each AST node becomes a small closure
``f(ns) -> value`` over its children, built once when the formula is compiled.  ``ns`` is the
per-evaluation namespace dict; two reserved keys (names starting with ``_`` cannot appear in
formulas) carry the call table ``_fn`` and the step budget ``_budget``.

Statements compile to ``f(ns) -> signal``: ``None`` to go on, ``BREAK``/``CONTINUE``, or a
``_Return`` holding the value.  Any exception inside a node is re-raised as :class:`Fault`,
which remembers the innermost node so the error can say where.
"""

from __future__ import annotations

import ast
import operator
from typing import Any, Callable

from engine._formula_runtime import Guards

Expr = Callable[[dict[str, Any]], Any]
Stmt = Callable[[dict[str, Any]], Any]


class Fault(BaseException):
    """An exception raised inside a formula, with the node it happened at.

    A ``BaseException`` so that the ``except Exception`` of enclosing nodes lets it through
    and the innermost node wins.
    """

    def __init__(self, exc: BaseException, node: ast.AST) -> None:
        super().__init__(exc)
        self.exc = exc
        self.node = node


class _Return:
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


BREAK = object()
CONTINUE = object()

_CMP: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Is: operator.is_, ast.IsNot: operator.is_not,
    ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
}
_UNARY: dict[type, Callable[[Any], Any]] = {
    ast.Not: operator.not_, ast.USub: operator.neg, ast.UAdd: operator.pos,
    ast.Invert: operator.invert,
}
_CONVERSIONS: dict[int, Callable[[Any], str]] = {115: str, 114: repr, 97: ascii}


class Compiler:
    """Builds closures for one engine's :class:`Guards` (limits are baked in)."""

    def __init__(self, guards: Guards) -> None:
        self.g = guards

    # -- expressions -------------------------------------------------------------------
    def expr(self, node: ast.AST) -> Expr:
        method = getattr(self, "x_" + type(node).__name__)
        return method(node)  # type: ignore[no-any-return]

    def x_Constant(self, node: ast.Constant) -> Expr:
        value = node.value
        return lambda ns: value

    def x_Name(self, node: ast.Name) -> Expr:
        name = node.id
        return lambda ns: ns.get(name)

    def x_BoolOp(self, node: ast.BoolOp) -> Expr:
        parts = [self.expr(v) for v in node.values]
        if isinstance(node.op, ast.Or):
            if len(parts) == 2:
                a, b = parts
                return lambda ns: a(ns) or b(ns)

            def or_(ns: dict[str, Any]) -> Any:
                for p in parts:
                    v = p(ns)
                    if v:
                        return v
                return v

            return or_
        if len(parts) == 2:
            a, b = parts
            return lambda ns: a(ns) and b(ns)

        def and_(ns: dict[str, Any]) -> Any:
            for p in parts:
                v = p(ns)
                if not v:
                    return v
            return v

        return and_

    def x_BinOp(self, node: ast.BinOp) -> Expr:
        op = self.g.binops[type(node.op).__name__]
        left, right = self.expr(node.left), self.expr(node.right)

        def binop(ns: dict[str, Any]) -> Any:
            try:
                return op(left(ns), right(ns))
            except Exception as exc:
                raise Fault(exc, node) from exc

        return binop

    def x_UnaryOp(self, node: ast.UnaryOp) -> Expr:
        op, operand = _UNARY[type(node.op)], self.expr(node.operand)
        if isinstance(node.op, ast.Not):
            return lambda ns: not operand(ns)

        def unary(ns: dict[str, Any]) -> Any:
            try:
                return op(operand(ns))
            except Exception as exc:
                raise Fault(exc, node) from exc

        return unary

    def x_Compare(self, node: ast.Compare) -> Expr:
        left = self.expr(node.left)
        ops = [_CMP[type(o)] for o in node.ops]
        rights = [self.expr(c) for c in node.comparators]
        if len(ops) == 1:
            op, right = ops[0], rights[0]

            def compare1(ns: dict[str, Any]) -> Any:
                try:
                    return op(left(ns), right(ns))
                except Exception as exc:
                    raise Fault(exc, node) from exc

            return compare1
        pairs = list(zip(ops, rights))

        def compare(ns: dict[str, Any]) -> Any:
            try:
                a = left(ns)
                for op, right in pairs:
                    b = right(ns)
                    if not op(a, b):
                        return False
                    a = b
                return True
            except Exception as exc:
                raise Fault(exc, node) from exc

        return compare

    def x_IfExp(self, node: ast.IfExp) -> Expr:
        test, body, orelse = self.expr(node.test), self.expr(node.body), self.expr(node.orelse)
        return lambda ns: body(ns) if test(ns) else orelse(ns)

    def x_Dict(self, node: ast.Dict) -> Expr:
        if all(isinstance(k, ast.Constant) for k in node.keys):
            # constant keys (the usual {"Email": ..., "Order": ...}): no closure call per key
            keys = [k.value for k in node.keys]  # type: ignore[union-attr]
            values = [self.expr(v) for v in node.values]

            def const_dict(ns: dict[str, Any]) -> Any:
                try:
                    return dict(zip(keys, [v(ns) for v in values]))
                except Exception as exc:
                    raise Fault(exc, node) from exc

            return const_dict
        items = [(self.expr(k), self.expr(v)) for k, v in zip(node.keys, node.values)]  # type: ignore[arg-type]

        def dict_(ns: dict[str, Any]) -> Any:
            try:
                return {k(ns): v(ns) for k, v in items}
            except Exception as exc:
                raise Fault(exc, node) from exc

        return dict_

    def x_List(self, node: ast.List) -> Expr:
        elts = [self.expr(e) for e in node.elts]
        return lambda ns: [e(ns) for e in elts]

    def x_Tuple(self, node: ast.Tuple) -> Expr:
        elts = [self.expr(e) for e in node.elts]
        return lambda ns: tuple([e(ns) for e in elts])

    def x_Set(self, node: ast.Set) -> Expr:
        elts = [self.expr(e) for e in node.elts]

        def set_(ns: dict[str, Any]) -> Any:
            try:
                return {e(ns) for e in elts}
            except Exception as exc:
                raise Fault(exc, node) from exc

        return set_

    def x_Subscript(self, node: ast.Subscript) -> Expr:
        value, index = self.expr(node.value), self.expr(node.slice)

        def subscript(ns: dict[str, Any]) -> Any:
            try:
                return value(ns)[index(ns)]
            except Exception as exc:
                raise Fault(exc, node) from exc

        return subscript

    def x_Slice(self, node: ast.Slice) -> Expr:
        none: Expr = lambda ns: None  # noqa: E731
        lo = self.expr(node.lower) if node.lower else none
        hi = self.expr(node.upper) if node.upper else none
        st = self.expr(node.step) if node.step else none
        return lambda ns: slice(lo(ns), hi(ns), st(ns))

    def x_Call(self, node: ast.Call) -> Expr:
        args = [self.expr(a) for a in node.args]
        kwargs = [(k.arg, self.expr(k.value)) for k in node.keywords]
        func = node.func
        if isinstance(func, ast.Attribute):
            obj, name, call_method = self.expr(func.value), func.attr, self.g.call_method

            def method(ns: dict[str, Any]) -> Any:
                try:
                    return call_method(obj(ns), name, tuple([a(ns) for a in args]),
                                       {k: v(ns) for k, v in kwargs})
                except Exception as exc:
                    raise Fault(exc, node) from exc

            return method
        fname = func.id  # type: ignore[attr-defined]
        if not kwargs and len(args) == 1:
            (a0,) = args

            def call1(ns: dict[str, Any]) -> Any:
                try:
                    return ns["_fn"][fname](a0(ns))
                except Exception as exc:
                    raise Fault(exc, node) from exc

            return call1

        if not kwargs and len(args) == 3 and all(isinstance(a, ast.Constant) for a in node.args[1:]):
            # get(x, "path", None) and friends: one variable argument, constants after it
            a0 = args[0]
            c1, c2 = node.args[1].value, node.args[2].value  # type: ignore[attr-defined]

            def call_1_2(ns: dict[str, Any]) -> Any:
                try:
                    return ns["_fn"][fname](a0(ns), c1, c2)
                except Exception as exc:
                    raise Fault(exc, node) from exc

            return call_1_2

        def call(ns: dict[str, Any]) -> Any:
            try:
                return ns["_fn"][fname](*[a(ns) for a in args], **{k: v(ns) for k, v in kwargs})
            except Exception as exc:
                raise Fault(exc, node) from exc

        return call

    def x_JoinedStr(self, node: ast.JoinedStr) -> Expr:
        parts = [self.expr(v) for v in node.values]
        size_check = self.g.size_check

        def joined(ns: dict[str, Any]) -> str:
            out = "".join([p(ns) for p in parts])
            try:
                size_check(str, len(out))
            except Exception as exc:
                raise Fault(exc, node) from exc
            return out

        return joined

    def x_FormattedValue(self, node: ast.FormattedValue) -> Expr:
        value = self.expr(node.value)
        conv = _CONVERSIONS.get(node.conversion)
        spec = ""
        if node.format_spec is not None:
            spec = "".join(str(v.value) for v in node.format_spec.values)  # type: ignore[attr-defined]
        format_value = self.g.format_value

        def formatted(ns: dict[str, Any]) -> str:
            try:
                v = value(ns)
                if conv is not None:
                    v = conv(v)
                return format_value(v, spec)
            except Exception as exc:
                raise Fault(exc, node) from exc

        return formatted

    def _comprehension(self, node: ast.ListComp | ast.SetComp | ast.DictComp,
                       emit: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
        """Run the generators of a comprehension, calling ``emit`` for each item."""
        gens = [(self.target(g.target), self.expr(g.iter), [self.expr(i) for i in g.ifs])
                for g in node.generators]
        bound = sorted({n.id for g in node.generators for n in ast.walk(g.target)
                        if isinstance(n, ast.Name)})

        def loop(ns: dict[str, Any], level: int) -> None:
            assign, iterable, ifs = gens[level]
            tick = ns["_budget"].tick
            for item in iterable(ns):
                tick()
                assign(ns, item)
                if all(cond(ns) for cond in ifs):
                    if level + 1 == len(gens):
                        emit(ns)
                    else:
                        loop(ns, level + 1)

        def run(ns: dict[str, Any]) -> None:
            saved = {n: ns[n] for n in bound if n in ns}
            try:
                loop(ns, 0)
            except Exception as exc:
                raise Fault(exc, node) from exc
            finally:
                for n in bound:
                    ns.pop(n, None)
                ns.update(saved)

        return run

    def x_ListComp(self, node: ast.ListComp) -> Expr:
        elt = self.expr(node.elt)
        return self._collect(node, lambda out, n: out.append(elt(n)), list)

    def x_SetComp(self, node: ast.SetComp) -> Expr:
        elt = self.expr(node.elt)
        return self._collect(node, lambda out, n: out.add(elt(n)), set)

    def x_DictComp(self, node: ast.DictComp) -> Expr:
        key, value = self.expr(node.key), self.expr(node.value)

        def put(out: dict[Any, Any], n: dict[str, Any]) -> None:
            out[key(n)] = value(n)

        return self._collect(node, put, dict)

    def _collect(self, node: Any, add: Callable[[Any, dict[str, Any]], None],
                 make: Callable[[], Any]) -> Expr:
        # The collection under construction lives in the namespace (key unreachable from
        # formulas), so concurrent evaluations of one formula never share it.
        self._comp_count = getattr(self, "_comp_count", 0) + 1
        slot = f"_comp{self._comp_count}"
        runner = self._comprehension(node, lambda n: add(n[slot], n))

        def comp(ns: dict[str, Any]) -> Any:
            ns[slot] = out = make()
            runner(ns)
            return out

        return comp

    # -- assignment targets ------------------------------------------------------------
    def target(self, node: ast.AST) -> Callable[[dict[str, Any], Any], None]:
        if isinstance(node, ast.Name):
            name = node.id

            def set_name(ns: dict[str, Any], v: Any) -> None:
                ns[name] = v

            return set_name
        if isinstance(node, (ast.Tuple, ast.List)):
            parts = [self.target(e) for e in node.elts]

            def unpack(ns: dict[str, Any], v: Any) -> None:
                values = list(v) if len(v) == len(parts) else None  # len() before iterating
                if values is None:
                    raise ValueError(f"expected {len(parts)} values to unpack, got {len(v)}")
                for p, item in zip(parts, values):
                    p(ns, item)

            return unpack
        if isinstance(node, ast.Subscript):
            obj, index, size_check = self.expr(node.value), self.expr(node.slice), self.g.size_check

            def set_item(ns: dict[str, Any], v: Any) -> None:
                container, key = obj(ns), index(ns)
                if isinstance(container, dict) and key not in container:
                    size_check(dict, len(container) + 1)
                container[key] = v

            return set_item
        raise AssertionError(f"checker let through target {type(node).__name__}")

    # -- statements --------------------------------------------------------------------
    def block(self, body: list[ast.stmt]) -> Stmt:
        stmts = [self.stmt(s) for s in body]
        if len(stmts) == 1:
            return stmts[0]

        def run(ns: dict[str, Any]) -> Any:
            for s in stmts:
                r = s(ns)
                if r is not None:
                    return r
            return None

        return run

    def stmt(self, node: ast.stmt) -> Stmt:
        method = getattr(self, "s_" + type(node).__name__)
        return method(node)  # type: ignore[no-any-return]

    def s_Expr(self, node: ast.Expr) -> Stmt:
        value = self.expr(node.value)

        def expr_stmt(ns: dict[str, Any]) -> None:
            value(ns)

        return expr_stmt

    def s_Pass(self, node: ast.Pass) -> Stmt:
        return lambda ns: None

    def s_Break(self, node: ast.Break) -> Stmt:
        return lambda ns: BREAK

    def s_Continue(self, node: ast.Continue) -> Stmt:
        return lambda ns: CONTINUE

    def s_Return(self, node: ast.Return) -> Stmt:
        value = self.expr(node.value) if node.value is not None else (lambda ns: None)
        return lambda ns: _Return(value(ns))

    def s_Assign(self, node: ast.Assign) -> Stmt:
        value = self.expr(node.value)
        targets = [self.target(t) for t in node.targets]

        def assign(ns: dict[str, Any]) -> None:
            v = value(ns)
            try:
                for t in targets:
                    t(ns, v)
            except Exception as exc:
                raise Fault(exc, node) from exc

        return assign

    def s_AugAssign(self, node: ast.AugAssign) -> Stmt:
        op = self.g.binops[type(node.op).__name__]
        value = self.expr(node.value)
        t = node.target
        if isinstance(t, ast.Name):
            name = t.id

            def aug_name(ns: dict[str, Any]) -> None:
                v = value(ns)
                try:
                    ns[name] = op(ns.get(name), v)
                except Exception as exc:
                    raise Fault(exc, node) from exc

            return aug_name
        assert isinstance(t, ast.Subscript)
        obj, index = self.expr(t.value), self.expr(t.slice)

        def aug_item(ns: dict[str, Any]) -> None:
            container, key = obj(ns), index(ns)
            v = value(ns)
            try:
                container[key] = op(container[key], v)
            except Exception as exc:
                raise Fault(exc, node) from exc

        return aug_item

    def s_If(self, node: ast.If) -> Stmt:
        test, body = self.expr(node.test), self.block(node.body)
        orelse = self.block(node.orelse) if node.orelse else (lambda ns: None)
        return lambda ns: body(ns) if test(ns) else orelse(ns)

    def s_For(self, node: ast.For) -> Stmt:
        assign, iterable, body = self.target(node.target), self.expr(node.iter), self.block(node.body)
        orelse = self.block(node.orelse) if node.orelse else None

        def for_(ns: dict[str, Any]) -> Any:
            tick = ns["_budget"].tick
            try:
                items = iterable(ns)
                for item in items:
                    tick()
                    assign(ns, item)
                    r = body(ns)
                    if r is not None:
                        if r is BREAK:
                            return None
                        if r is not CONTINUE:
                            return r
            except Exception as exc:
                raise Fault(exc, node) from exc
            return orelse(ns) if orelse else None

        return for_

    def s_While(self, node: ast.While) -> Stmt:
        test, body = self.expr(node.test), self.block(node.body)
        orelse = self.block(node.orelse) if node.orelse else None

        def while_(ns: dict[str, Any]) -> Any:
            tick = ns["_budget"].tick
            try:
                while test(ns):
                    tick()
                    r = body(ns)
                    if r is not None:
                        if r is BREAK:
                            return None
                        if r is not CONTINUE:
                            return r
            except Exception as exc:
                raise Fault(exc, node) from exc
            return orelse(ns) if orelse else None

        return while_


def compile_tree(tree: ast.Module, is_expression: bool, guards: Guards) -> Expr:
    """Compile a checked module into ``f(ns) -> result``."""
    c = Compiler(guards)
    if is_expression:
        return c.expr(tree.body[0].value)  # type: ignore[attr-defined]
    block = c.block(tree.body)

    def run(ns: dict[str, Any]) -> Any:
        r = block(ns)
        return r.value if isinstance(r, _Return) else None

    return run
