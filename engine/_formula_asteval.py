"""The asteval back end: run a checked formula tree on an asteval ``Interpreter`` subclass.

asteval is one layer here, not the sandbox: the tree was already checked against the
allow-list (:mod:`engine._formula_check`), and this subclass replaces the handlers that matter
for safety with the same sized guards as the fast back end (operators, f-strings, calls,
loops with the step/time budget).  asteval's error list is bypassed: any exception is raised
at once as :class:`~engine._formula_fast.Fault` with the innermost node.

One interpreter per compiled formula, built once; evaluations are serialised on a lock (the
interpreter keeps per-run state), and each gets a fresh symbol table (the namespace dict).
"""

from __future__ import annotations

import ast
import threading
from typing import Any, Callable

from asteval import Interpreter
from asteval.astutils import ReturnedNone

from engine._formula_fast import Fault
from engine._formula_runtime import Guards

_CONVERSIONS: dict[int, Callable[[Any], str]] = {115: str, 114: repr, 97: ascii}


class _Interp(Interpreter):  # type: ignore[misc]
    def __init__(self, guards: Guards) -> None:
        super().__init__(symtable={}, use_numpy=False, minimal=True,
                         config={n: True for n in ("if", "ifexp", "for", "while", "listcomp",
                                                   "dictcomp", "setcomp", "augassign",
                                                   "assert", "formattedvalue", "print")})
        self.g = guards

    def raise_exception(self, node: Any, exc: Any = None, msg: str = "", expr: Any = None,
                        lineno: Any = None) -> None:
        raise (exc or RuntimeError)(msg)

    def run(self, node: Any, expr: Any = None, lineno: Any = None, with_raise: bool = True) -> Any:
        if self.retval is not None:
            return self.retval
        if isinstance(self._interrupt, (ast.Break, ast.Continue)):
            return self._interrupt
        if node is None:
            return None
        handler = self.node_handlers[node.__class__.__name__.lower()]
        try:
            return handler(node)
        except Exception as exc:
            raise Fault(exc, node) from exc

    def on_name(self, node: ast.Name) -> Any:
        return self.symtable.get(node.id)

    def on_binop(self, node: ast.BinOp) -> Any:
        op = self.g.binops[type(node.op).__name__]
        return op(self.run(node.left), self.run(node.right))

    def on_joinedstr(self, node: ast.JoinedStr) -> str:
        out = "".join([self.run(v) for v in node.values])
        self.g.size_check(str, len(out))
        return out

    def on_formattedvalue(self, node: ast.FormattedValue) -> str:
        value = self.run(node.value)
        conv = _CONVERSIONS.get(node.conversion)
        if conv is not None:
            value = conv(value)
        spec = ""
        if node.format_spec is not None:
            spec = "".join(str(v.value) for v in node.format_spec.values)  # type: ignore[attr-defined]
        return self.g.format_value(value, spec)

    def on_call(self, node: ast.Call) -> Any:
        args = [self.run(a) for a in node.args]
        kwargs = {k.arg: self.run(k.value) for k in node.keywords}
        func = node.func
        if isinstance(func, ast.Attribute):
            return self.g.call_method(self.run(func.value), func.attr, tuple(args), kwargs)
        return self.symtable["_fn"][func.id](*args, **kwargs)  # type: ignore[attr-defined]

    def _loop_body(self, body: list[ast.stmt]) -> None:
        self._interrupt = None
        for stmt in body:
            self.run(stmt)
            if self._interrupt is not None:
                break

    def on_for(self, node: ast.For) -> None:
        tick = self.symtable["_budget"].tick
        for item in self.run(node.iter):
            tick()
            self.node_assign(node.target, item)
            self._loop_body(node.body)
            if isinstance(self._interrupt, (ast.Break, ast.Return)):
                break
        else:
            for stmt in node.orelse:
                self.run(stmt)
        self._interrupt = None

    def on_while(self, node: ast.While) -> None:
        tick = self.symtable["_budget"].tick
        while self.run(node.test):
            tick()
            self._loop_body(node.body)
            if isinstance(self._interrupt, (ast.Break, ast.Return)):
                break
        else:
            for stmt in node.orelse:
                self.run(stmt)
        self._interrupt = None

    def _comprehension(self, node: Any, emit: Callable[[], None]) -> None:
        tick = self.symtable["_budget"].tick
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
        self._comprehension(node, lambda: out.add(self.run(node.elt)))
        return out

    def on_dictcomp(self, node: ast.DictComp) -> dict[Any, Any]:
        out: dict[Any, Any] = {}

        def put() -> None:
            out[self.run(node.key)] = self.run(node.value)

        self._comprehension(node, put)
        return out

    def node_assign(self, node: Any, val: Any) -> None:
        if isinstance(node, ast.Name):
            self.symtable[node.id] = val
        elif isinstance(node, ast.Subscript):
            container, key = self.run(node.value), self.run(node.slice)
            if isinstance(container, dict) and key not in container:
                self.g.size_check(dict, len(container) + 1)
            container[key] = val
        else:
            if len(val) != len(node.elts):
                raise ValueError(f"expected {len(node.elts)} values to unpack, got {len(val)}")
            for target, item in zip(node.elts, list(val)):
                self.node_assign(target, item)


def compile_asteval(tree: ast.Module, is_expression: bool, guards: Guards,
                    source: str) -> Callable[[dict[str, Any]], Any]:
    """Return ``f(ns) -> result`` running ``tree`` on one private interpreter."""
    interp = _Interp(guards)
    lock = threading.Lock()
    body: ast.AST = tree.body[0].value if is_expression else tree  # type: ignore[attr-defined]

    def run(ns: dict[str, Any]) -> Any:
        with lock:
            interp.symtable = ns
            interp.retval = None
            interp._interrupt = None
            interp._calldepth = 1  # let a top-level 'return' through
            interp.error = []
            try:
                out = interp.run(body)
                if is_expression:
                    return out
                retval = interp.retval
                return None if retval is ReturnedNone else retval
            finally:
                interp.symtable = {}
                interp.retval = None

    return run
