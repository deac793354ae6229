"""The formula evaluator: a checked formula tree run on an asteval ``Interpreter`` subclass.

asteval is the interpreter; it is not the sandbox by itself.  The tree was already checked
against the allow-list (:mod:`engine.formula.check`), and this subclass replaces every
handler the allow-list admits with one that goes through the sized guards
(:mod:`engine.formula.guards`): operators, comparisons, hashing, f-strings, calls, loops with
the step/time budget.  asteval's error list is bypassed: any exception is raised at once as
:class:`Fault` holding the innermost node, so errors point at the failing part.

Speed: one interpreter per compiled formula, built once; handlers are looked up by node type
(not by name); each evaluation gets a fresh symbol table (the namespace dict).  A second
evaluation that arrives while the interpreter is busy (another thread) gets its own
interpreter, so evaluations never share state.
"""

from __future__ import annotations

import ast
import threading
from collections.abc import Callable, Mapping
from typing import Any

from asteval import Interpreter

from engine.formula.guards import Budget, Guards

_CONVERSIONS: dict[int, Callable[[Any], str]] = {115: str, 114: repr, 97: ascii}


class Fault(BaseException):
    """An exception raised inside a formula, with the node it happened at.

    A ``BaseException`` so that enclosing nodes let it through and the innermost node wins.
    """

    def __init__(self, exc: BaseException, node: ast.AST | None) -> None:
        super().__init__(exc)
        self.exc = exc
        self.node = node


class PathRead(ast.expr):
    """``get(name, "a.b[0]", <constant default>)`` with the path split at compile time.

    Evaluated by :meth:`_Interp.on_pathread` without a call when the table's ``get`` is the
    standard helper (same result, a fraction of the cost); otherwise as the call it was.
    """

    _fields = ("call",)

    def __init__(self, call: ast.Call, name: str, steps: tuple[Any, ...], default: Any) -> None:
        super().__init__(lineno=call.lineno, col_offset=call.col_offset,
                         end_lineno=call.end_lineno, end_col_offset=call.end_col_offset)
        self.call = call
        self.name = name
        self.steps = steps
        self.default = default


class _Precompute(ast.NodeTransformer):
    """Rewrites constant-path ``get()`` calls into :class:`PathRead` nodes."""

    def visit_Call(self, node: ast.Call) -> Any:
        self.generic_visit(node)
        from engine.formula.helpers import MISSING, _parse_path

        f, args = node.func, node.args
        if not (type(f) is ast.Name and f.id == "get" and not node.keywords and len(args) in (2, 3)
                and type(args[0]) is ast.Name and type(args[1]) is ast.Constant
                and type(args[1].value) is str and (len(args) == 2 or type(args[2]) is ast.Constant)):
            return node
        try:
            steps = _parse_path(args[1].value)
        except (ValueError, TypeError):
            return node
        default = args[2].value if len(args) == 3 else MISSING  # type: ignore[attr-defined]
        return PathRead(node, args[0].id, steps, default)


class _Interp(Interpreter):  # type: ignore[misc]
    """asteval with guarded handlers, dispatched by node type."""

    def __init__(self, guards: Guards) -> None:
        super().__init__(symtable={}, use_numpy=False, minimal=True, builtins_readonly=True)
        self.g = guards
        self.fn: Mapping[str, Callable[..., Any]] = {}
        self.budget: Budget | None = None
        self.retval: Any = None
        self._interrupt: Any = None
        self._binops = guards.binops
        self._compares = guards.compares
        self._by_type: dict[type, Callable[[Any], Any]] = {
            ast.Constant: self.on_constant, ast.Name: self.on_name, ast.Expr: self.on_expr,
            ast.Module: self.on_module, ast.BinOp: self.on_binop, ast.BoolOp: self.on_boolop,
            ast.UnaryOp: self.on_unaryop, ast.Compare: self.on_compare, ast.IfExp: self.on_ifexp,
            ast.Call: self.on_call, ast.Subscript: self.on_subscript, ast.Slice: self.on_slice,
            ast.Dict: self.on_dict, ast.List: self.on_list, ast.Tuple: self.on_tuple,
            ast.Set: self.on_set, ast.JoinedStr: self.on_joinedstr,
            ast.FormattedValue: self.on_formattedvalue, ast.ListComp: self.on_listcomp,
            ast.SetComp: self.on_setcomp, ast.DictComp: self.on_dictcomp,
            ast.Assign: self.on_assign, ast.AugAssign: self.on_augassign, ast.If: self.on_if,
            ast.For: self.on_for, ast.While: self.on_while, ast.Return: self.on_return,
            ast.Pass: self.on_pass, ast.Break: self.on_break, ast.Continue: self.on_continue,
            PathRead: self.on_pathread,
        }
        from engine.formula import helpers

        self._get = helpers.get
        self._missing = helpers.MISSING

    # -- dispatch ----------------------------------------------------------------------
    def raise_exception(self, node: Any, exc: Any = None, msg: str = "", expr: Any = None,
                        lineno: Any = None) -> None:
        raise (exc or RuntimeError)(msg)

    def run(self, node: Any, expr: Any = None, lineno: Any = None, with_raise: bool = True) -> Any:
        try:
            return self._by_type[type(node)](node)
        except Exception as exc:
            raise Fault(exc, node) from exc

    def _block(self, body: list[ast.stmt]) -> None:
        run = self.run
        for stmt in body:
            run(stmt)
            if self._interrupt is not None:
                return

    # -- expressions -------------------------------------------------------------------
    def on_constant(self, node: ast.Constant) -> Any:
        return node.value

    def on_name(self, node: ast.Name) -> Any:
        return self.symtable.get(node.id)

    def on_expr(self, node: ast.Expr) -> Any:
        return self.run(node.value)

    def on_binop(self, node: ast.BinOp) -> Any:
        return self._binops[type(node.op)](self.run(node.left), self.run(node.right))

    def on_boolop(self, node: ast.BoolOp) -> Any:
        run = self.run
        if type(node.op) is ast.And:
            for value in node.values:
                out = run(value)
                if not out:
                    return out
            return out
        for value in node.values:
            out = run(value)
            if out:
                return out
        return out

    def on_unaryop(self, node: ast.UnaryOp) -> Any:
        value = self.run(node.operand)
        op = type(node.op)
        if op is ast.Not:
            return not value
        if op is ast.USub:
            return -value
        if op is ast.UAdd:
            return +value
        return ~value

    def on_compare(self, node: ast.Compare) -> Any:
        left = self.run(node.left)
        compares = self._compares
        if len(node.ops) == 1:
            return compares[type(node.ops[0])](left, self.run(node.comparators[0]))
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = self.run(comparator)
            if not compares[type(op)](left, right):
                return False
            left = right
        return True

    def on_ifexp(self, node: ast.IfExp) -> Any:
        return self.run(node.body) if self.run(node.test) else self.run(node.orelse)

    def on_call(self, node: ast.Call) -> Any:
        run = self.run
        args = [run(a) for a in node.args]
        # check.py refuses ``**`` (F009), so every keyword has a name
        kwargs = {k.arg: run(k.value) for k in node.keywords if k.arg is not None} if node.keywords else {}
        func = node.func
        if type(func) is ast.Attribute:
            out = self.g.call_method(run(func.value), func.attr, tuple(args), kwargs)
        else:
            out = self.fn[func.id](*args, **kwargs)  # type: ignore[attr-defined]
        self.budget.check_time()  # type: ignore[union-attr]
        return out

    def on_pathread(self, node: PathRead) -> Any:
        if self.fn.get("get") is not self._get:
            return self.on_call(node.call)
        current = self.symtable.get(node.name)
        for step in node.steps:
            if type(step) is int:
                if isinstance(current, (list, tuple)) and -len(current) <= step < len(current):
                    current = current[step]
                    continue
            elif isinstance(current, dict) and step in current:
                current = current[step]
                continue
            if node.default is self._missing:
                return self.on_call(node.call)  # the helper raises PathNotFoundError
            return node.default
        return current

    def on_subscript(self, node: ast.Subscript) -> Any:
        container = self.run(node.value)
        key = self.run(node.slice)
        if type(key) is tuple and type(container) is dict:
            self.g.key_check(key)
        return container[key]

    def on_slice(self, node: ast.Slice) -> slice:
        run = self.run
        return slice(None if node.lower is None else run(node.lower),
                     None if node.upper is None else run(node.upper),
                     None if node.step is None else run(node.step))

    def on_dict(self, node: ast.Dict) -> dict[Any, Any]:
        run = self.run
        out: dict[Any, Any] = {}
        for k, v in zip(node.keys, node.values, strict=True):
            key = run(k)
            if type(key) is tuple:
                self.g.key_check(key)
            out[key] = run(v)
        return out

    def on_list(self, node: ast.List) -> list[Any]:
        run = self.run
        return [run(e) for e in node.elts]

    def on_tuple(self, node: ast.Tuple) -> tuple[Any, ...]:
        run = self.run
        return tuple([run(e) for e in node.elts])

    def on_set(self, node: ast.Set) -> set[Any]:
        items = [self.run(e) for e in node.elts]
        for item in items:
            self.g.key_check(item)
        return set(items)

    def on_joinedstr(self, node: ast.JoinedStr) -> str:
        out = "".join([self.run(v) for v in node.values])
        self.g.size_check(str, len(out))
        return out

    def on_formattedvalue(self, node: ast.FormattedValue) -> str:
        value = self.run(node.value)
        conv = _CONVERSIONS.get(node.conversion)
        if conv is not None:
            self.g.text_check(value)
            value = conv(value)
        spec = ""
        if node.format_spec is not None:
            spec = "".join(str(v.value) for v in node.format_spec.values)  # type: ignore[attr-defined]
        return self.g.format_value(value, spec)

    # -- comprehensions ----------------------------------------------------------------
    def _comprehension(self, node: Any, emit: Callable[[], None]) -> None:
        tick = self.budget.tick  # type: ignore[union-attr]
        gens = node.generators
        bound = {n.id for g in gens for n in ast.walk(g.target) if isinstance(n, ast.Name)}
        saved = {n: self.symtable[n] for n in bound if n in self.symtable}

        def loop(level: int) -> None:
            gen = gens[level]
            for item in self.run(gen.iter):
                tick()
                self.node_assign(gen.target, item)
                if all(self.run(cond) for cond in gen.ifs):
                    if level + 1 == len(gens):
                        emit()
                    else:
                        loop(level + 1)

        try:
            loop(0)
        finally:
            for n in bound:
                self.symtable.pop(n, None)
            self.symtable.update(saved)

    def on_listcomp(self, node: ast.ListComp) -> list[Any]:
        out: list[Any] = []
        self._comprehension(node, lambda: out.append(self.run(node.elt)))
        return out

    def on_setcomp(self, node: ast.SetComp) -> set[Any]:
        out: set[Any] = set()

        def put() -> None:
            item = self.run(node.elt)
            self.g.key_check(item)
            out.add(item)

        self._comprehension(node, put)
        return out

    def on_dictcomp(self, node: ast.DictComp) -> dict[Any, Any]:
        out: dict[Any, Any] = {}

        def put() -> None:
            key = self.run(node.key)
            self.g.key_check(key)
            out[key] = self.run(node.value)

        self._comprehension(node, put)
        return out

    # -- statements --------------------------------------------------------------------
    def on_module(self, node: ast.Module) -> None:
        self._block(node.body)

    def on_assign(self, node: ast.Assign) -> None:
        value = self.run(node.value)
        for target in node.targets:
            self.node_assign(target, value)

    def on_augassign(self, node: ast.AugAssign) -> None:
        op = self._binops[type(node.op)]
        target = node.target
        if type(target) is ast.Name:
            self.symtable[target.id] = op(self.symtable.get(target.id), self.run(node.value))
            return
        if type(target) is ast.Subscript:
            container, key = self.run(target.value), self.run(target.slice)
            if type(container) is dict:
                self.g.key_check(key)
            container[key] = op(container[key], self.run(node.value))
            return
        raise SyntaxError("augmented assignment to this target is not allowed")

    def node_assign(self, node: Any, val: Any) -> None:
        if type(node) is ast.Name:
            self.symtable[node.id] = val
        elif type(node) is ast.Subscript:
            container, key = self.run(node.value), self.run(node.slice)
            if type(container) is dict:
                self.g.key_check(key)
                if key not in container:
                    self.g.size_check(dict, len(container) + 1)
            container[key] = val
        elif type(node) in (ast.Tuple, ast.List):
            items = list(self.g.materialise(val))
            if len(items) != len(node.elts):
                raise ValueError(f"expected {len(node.elts)} values to unpack, got {len(items)}")
            for target, item in zip(node.elts, items, strict=True):
                self.node_assign(target, item)
        else:
            raise SyntaxError("assignment to this target is not allowed")

    def on_if(self, node: ast.If) -> None:
        self._block(node.body if self.run(node.test) else node.orelse)

    def _after_body(self) -> bool:
        """After one loop body: True to leave the loop (break or return)."""
        intr = self._interrupt
        if intr is None:
            return False
        if type(intr) is ast.Continue:
            self._interrupt = None
            return False
        if type(intr) is ast.Break:
            self._interrupt = None
        return True

    def on_for(self, node: ast.For) -> None:
        tick = self.budget.tick  # type: ignore[union-attr]
        for item in self.run(node.iter):
            tick()
            self.node_assign(node.target, item)
            self._block(node.body)
            if self._after_body():
                return
        self._block(node.orelse)

    def on_while(self, node: ast.While) -> None:
        tick = self.budget.tick  # type: ignore[union-attr]
        while self.run(node.test):
            tick()
            self._block(node.body)
            if self._after_body():
                return
        self._block(node.orelse)

    def on_return(self, node: ast.Return) -> None:
        self.retval = None if node.value is None else self.run(node.value)
        self._interrupt = node

    def on_pass(self, node: ast.Pass) -> None:
        return None

    def on_break(self, node: ast.Break) -> None:
        self._interrupt = node

    def on_continue(self, node: ast.Continue) -> None:
        self._interrupt = node


def compile_tree(tree: ast.Module, is_expression: bool,
                 guards: Guards) -> Callable[[dict[str, Any], Mapping[str, Callable[..., Any]], Budget], Any]:
    """Return ``run(ns, functions, budget) -> result`` evaluating ``tree`` on an interpreter.

    The result of a statement block is the value of its ``return``; the returning node is
    kept in ``run.last_return`` (thread-local) for error positions.
    """
    import copy

    tree = _Precompute().visit(copy.deepcopy(tree))
    body: ast.AST = tree.body[0].value if is_expression else tree  # type: ignore[attr-defined]
    shared = _Interp(guards)
    lock = threading.Lock()

    def evaluate(interp: _Interp, ns: dict[str, Any], functions: Mapping[str, Callable[..., Any]],
                 budget: Budget) -> Any:
        interp.symtable = ns
        interp.fn = functions
        interp.budget = budget
        interp.retval = None
        interp._interrupt = None
        try:
            out = interp.run(body)
            return out if is_expression else interp.retval
        finally:
            interp.symtable = {}
            interp.fn = {}
            interp.retval = None
            interp._interrupt = None
            interp.budget = None

    def run(ns: dict[str, Any], functions: Mapping[str, Callable[..., Any]], budget: Budget) -> Any:
        if lock.acquire(blocking=False):
            try:
                return evaluate(shared, ns, functions, budget)
            finally:
                lock.release()
        return evaluate(_Interp(guards), ns, functions, budget)

    return run
