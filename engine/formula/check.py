"""Compile-time checks for formulas: parse once, walk an allow-list of AST nodes.

A formula is refused here, before any record is seen, when it uses anything outside the
language documented in ``docs/formulas.md``.  Each refusal is a
:class:`~engine.errors.FormulaSyntaxError`, the subclass of its stable code (F001 is the class
itself), with the 1-based line/column of the offending node inside the formula source.

Codes::

    F001 syntax error                F007 attribute access outside the safe method list
    F002 formula source too long     F008 format()/format_map() or a too-wide format spec
    F003 construct not allowed       F009 *args / **kwargs / starred expressions
    F004 import                      F010 statement block does not end with return
    F005 private name ('_...')       F011 nesting too deep
    F006 unknown function            F012 function used as a value or assigned to
    F013 empty formula
"""

from __future__ import annotations

import ast
import re
from collections.abc import Collection
from dataclasses import dataclass

from engine.errors import (
    EmptyFormulaError,
    ForbiddenAttributeError,
    ForbiddenConstructError,
    ForbiddenFormatError,
    FormulaImportError,
    FormulaNestingError,
    FormulaSyntaxError,
    FormulaTooLongError,
    FunctionAsValueError,
    MissingReturnError,
    PrivateNameError,
    UnknownFunctionError,
    UnpackingError,
)

#: Methods a formula may call, by receiver type.  Checked again at run time against the
#: receiver's actual type (see ``_formula_runtime.call_method``).
STR_METHODS = frozenset(
    "lower upper strip lstrip rstrip startswith endswith split rsplit join replace title "
    "capitalize casefold isdigit isalpha isalnum isspace isnumeric isdecimal islower isupper "
    "find rfind index rindex count splitlines removeprefix removesuffix partition rpartition "
    "zfill ljust rjust center swapcase".split()
)
DICT_METHODS = frozenset("get items keys values copy update setdefault pop".split())
LIST_METHODS = frozenset("append extend insert pop index count copy sort reverse remove".split())
TUPLE_METHODS = frozenset("index count".split())
SET_METHODS = frozenset("add union intersection difference issubset issuperset copy".split())
#: Methods that change their receiver: a formula using any of them evaluates over plain copies.
MUTATING_METHODS = frozenset(
    "update setdefault pop append extend insert sort reverse remove add".split()
)
SAFE_METHODS = STR_METHODS | DICT_METHODS | LIST_METHODS | TUPLE_METHODS | SET_METHODS

_EXPR_NODES: tuple[type[ast.AST], ...] = (
    ast.Expression, ast.Constant, ast.Name, ast.Load, ast.Store, ast.Subscript, ast.Slice,
    ast.BoolOp, ast.And, ast.Or, ast.BinOp, ast.UnaryOp, ast.Compare, ast.IfExp,
    ast.Dict, ast.List, ast.Tuple, ast.Set, ast.Call, ast.keyword, ast.Attribute,
    ast.JoinedStr, ast.FormattedValue, ast.ListComp, ast.SetComp, ast.DictComp,
    ast.comprehension,
    ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.LShift,
    ast.RShift, ast.BitOr, ast.BitXor, ast.BitAnd,
    ast.Not, ast.USub, ast.UAdd, ast.Invert,
    ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Is, ast.IsNot, ast.In, ast.NotIn,
)
_STMT_NODES: tuple[type[ast.AST], ...] = (
    ast.Module, ast.Expr, ast.Assign, ast.AugAssign, ast.If, ast.For, ast.While, ast.Return,
    ast.Pass, ast.Break, ast.Continue,
)
ALLOWED_NODES = frozenset(_EXPR_NODES + _STMT_NODES)

_REFUSED_WHY: dict[type[ast.AST], str] = {
    ast.Import: "import is not allowed",
    ast.ImportFrom: "import is not allowed",
    ast.Lambda: "lambda is not allowed",
    ast.FunctionDef: "def is not allowed",
    ast.AsyncFunctionDef: "def is not allowed",
    ast.ClassDef: "class is not allowed",
    ast.Global: "global is not allowed",
    ast.Nonlocal: "nonlocal is not allowed",
    ast.With: "with is not allowed",
    ast.AsyncWith: "with is not allowed",
    ast.Try: "try is not allowed",
    ast.Raise: "raise is not allowed",
    ast.Assert: "assert is not allowed",
    ast.Yield: "yield is not allowed",
    ast.YieldFrom: "yield is not allowed",
    ast.Await: "await is not allowed",
    ast.Delete: "del is not allowed",
    ast.GeneratorExp: "generator expressions are not allowed (use a list comprehension)",
    ast.NamedExpr: "the walrus operator ':=' is not allowed",
    ast.Starred: "star-args and starred expressions are not allowed",
    ast.AnnAssign: "annotated assignment is not allowed",
    ast.MatMult: "the '@' operator is not allowed",
}

# A format spec: [[fill]align][sign][z][#][0][width][grouping][.precision][type]
_SPEC = re.compile(r"^(?:.?[<>=^])?[+\- ]?z?#?0?(\d*)[,_]?(?:\.(\d+))?[a-zA-Z%]?$", re.S)


@dataclass(frozen=True)
class CheckResult:
    """What the checker learned about a valid formula."""

    tree: ast.Module
    names: frozenset[str]
    functions: frozenset[str]
    is_expression: bool
    has_loops: bool
    mutates: bool


def refuse(error: type[FormulaSyntaxError], message: str, node: ast.AST | None) -> FormulaSyntaxError:
    """Build ``error``, the class of one F0xx code, pointing at ``node`` (1-based line and column).

    For an attribute the position is that of the attribute's name (``x.__class__`` points at
    ``__class__``), which is what the user has to change.
    """
    err = error(message)
    if node is not None and hasattr(node, "lineno") and hasattr(node, "col_offset"):
        err.formula_line = node.lineno
        err.formula_column = node.col_offset + 1
        if isinstance(node, ast.Attribute) and node.end_lineno == node.lineno:
            err.formula_column = node.end_col_offset - len(node.attr) + 1  # type: ignore[operator]
    return err


def check_format_spec(spec: str, max_width: int) -> str | None:
    """Return why ``spec`` is refused (width/precision above ``max_width``), or None."""
    m = _SPEC.match(spec)
    if m is None:
        return f"format spec {spec!r} is not understood"
    for part in m.groups():
        if part and int(part) > max_width:
            return f"format width/precision {int(part)} is above the limit {max_width}"
    return None


class _Checker(ast.NodeVisitor):
    def __init__(self, functions: Collection[str], max_depth: int, max_width: int) -> None:
        self.functions = functions
        self.max_depth = max_depth
        self.max_width = max_width
        self.depth = 0
        self.loads: set[str] = set()
        self.stores: set[str] = set()
        self.called: set[str] = set()
        self.has_loops = False
        self.mutates = False
        self._call_funcs: set[int] = set()

    def generic_visit(self, node: ast.AST) -> None:
        kind = type(node)
        if kind not in ALLOWED_NODES:
            why = _REFUSED_WHY.get(kind, f"{kind.__name__} is not allowed")
            error = FormulaImportError if kind in (ast.Import, ast.ImportFrom) else (
                UnpackingError if kind is ast.Starred else ForbiddenConstructError)
            raise refuse(error, why, node)
        self.depth += 1
        if self.depth > self.max_depth:
            raise refuse(FormulaNestingError, f"formula is nested too deeply (limit {self.max_depth})", node)
        super().generic_visit(node)
        self.depth -= 1

    def visit_Name(self, node: ast.Name) -> None:
        if node.id.startswith("_"):
            raise refuse(PrivateNameError, f"name {node.id!r} is not allowed: names starting with '_' "
                                           "are private", node)
        if node.id in self.functions:
            if isinstance(node.ctx, ast.Store):
                raise refuse(FunctionAsValueError, f"cannot assign to function {node.id!r}", node)
            if id(node) not in self._call_funcs:
                raise refuse(FunctionAsValueError, f"function {node.id!r} can only be called", node)
        if isinstance(node.ctx, ast.Store):
            self.stores.add(node.id)
        elif id(node) not in self._call_funcs:
            self.loads.add(node.id)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr.startswith("_"):
            raise refuse(PrivateNameError, f"attribute {node.attr!r} is not allowed: names starting "
                                           "with '_' are private", node)
        if node.attr in ("format", "format_map"):
            raise refuse(ForbiddenFormatError, f"the {node.attr}() method is not allowed (use an f-string)", node)
        if id(node) not in self._call_funcs or not isinstance(node.ctx, ast.Load):
            raise refuse(ForbiddenAttributeError, f"attribute access '.{node.attr}' is not allowed: read fields "
                                                  "with x['key'] or get(x, 'a.b')", node)
        if node.attr not in SAFE_METHODS:
            raise refuse(ForbiddenAttributeError, f"method '.{node.attr}()' is not allowed; allowed methods: "
                                                  + ", ".join(sorted(SAFE_METHODS)), node)
        if node.attr in MUTATING_METHODS:
            self.mutates = True
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Name):
            if func.id.startswith("_"):
                raise refuse(PrivateNameError, f"name {func.id!r} is not allowed: names starting with '_' "
                                               "are private", func)
            if func.id not in self.functions:
                raise refuse(UnknownFunctionError, f"unknown function {func.id!r}; valid functions: "
                                                   + ", ".join(sorted(self.functions)), func)
            self.called.add(func.id)
        elif not isinstance(func, ast.Attribute):
            raise refuse(UnknownFunctionError, "only named functions and safe methods can be called", func)
        for kw in node.keywords:
            if kw.arg is None:
                raise refuse(UnpackingError, "**kwargs is not allowed", kw.value)
            if kw.arg.startswith("_"):
                raise refuse(PrivateNameError, f"keyword {kw.arg!r} is not allowed: names starting with "
                                               "'_' are private", kw.value)
        self._call_funcs.add(id(func))
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if not isinstance(node.value, (str, int, float, complex, type(None))):
            raise refuse(ForbiddenConstructError, f"{type(node.value).__name__} literals are not allowed", node)

    def visit_FormattedValue(self, node: ast.FormattedValue) -> None:
        spec = node.format_spec
        if spec is not None:
            parts = spec.values if isinstance(spec, ast.JoinedStr) else [spec]
            if not all(isinstance(p, ast.Constant) for p in parts):
                raise refuse(ForbiddenFormatError, "nested replacement fields in a format spec are not allowed", node)
            why = check_format_spec("".join(str(p.value) for p in parts), self.max_width)  # type: ignore[attr-defined]
            if why:
                raise refuse(ForbiddenFormatError, why, node)
        self.visit(node.value)

    def visit_Dict(self, node: ast.Dict) -> None:
        for key, value in zip(node.keys, node.values, strict=True):
            if key is None:
                raise refuse(UnpackingError, "'**' unpacking in a dict display is not allowed", value)
        self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if isinstance(node.ctx, ast.Store):
            self.mutates = True
        self.generic_visit(node)

    def _loop(self, node: ast.AST) -> None:
        self.has_loops = True
        self.generic_visit(node)

    visit_For = visit_While = visit_ListComp = visit_SetComp = visit_DictComp = _loop


def _ends_in_return(body: list[ast.stmt]) -> bool:
    last = body[-1]
    if isinstance(last, ast.Return):
        return True
    if isinstance(last, ast.If) and last.orelse:
        return _ends_in_return(last.body) and _ends_in_return(last.orelse)
    return False


def check(source: str, functions: Collection[str], *, max_source: int, max_depth: int,
          max_width: int) -> CheckResult:
    """Parse ``source`` and check it against the allow-list.

    Args:
        source: the formula text (an expression, or statements ending in ``return``).
        functions: names that may be called.
        max_source: longest source accepted, in characters.
        max_depth: deepest AST nesting accepted.
        max_width: largest f-string width/precision accepted.

    Returns:
        The parsed tree and what it reads, calls, and whether it loops or mutates.

    Raises:
        FormulaSyntaxError: the subclass of its code F0xx, with ``formula_line``/``formula_column``.
    """
    if len(source) > max_source:
        raise refuse(FormulaTooLongError, f"formula is {len(source)} characters long; the limit is "
                                          f"{max_source}", None)
    if not source.strip():
        raise refuse(EmptyFormulaError, "formula is empty", None)
    try:
        tree = ast.parse(source, mode="exec")
    except SyntaxError as exc:
        err = FormulaSyntaxError(f"syntax error: {exc.msg}")
        err.formula_line = exc.lineno
        err.formula_column = exc.offset
        raise err from None
    except (RecursionError, MemoryError) as exc:
        raise refuse(FormulaNestingError, f"formula is nested too deeply to parse ({type(exc).__name__})",
                     None) from None
    except ValueError as exc:  # e.g. a NUL byte in the source
        raise refuse(FormulaSyntaxError, f"syntax error: {exc}", None) from None
    checker = _Checker(functions, max_depth, max_width)
    try:
        checker.visit(tree)
    except RecursionError:
        raise refuse(FormulaNestingError, f"formula is nested too deeply (limit {max_depth})", None) from None
    is_expression = len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr)
    if not is_expression and not _ends_in_return(tree.body):
        raise refuse(MissingReturnError, "a statement block must end with 'return <value>' (on every "
                                         "branch of a final if/else)", tree.body[-1])
    return CheckResult(
        tree=tree,
        names=frozenset(checker.loads - checker.stores),
        functions=frozenset(checker.called),
        is_expression=is_expression,
        has_loops=checker.has_loops,
        mutates=checker.mutates,
    )
