"""Sandboxed formulas: compile once when a collection loads, evaluate per record.

The formula concept lives in this package:

- :mod:`engine.formula.check`: the load-time allow-list checker (syntax nodes, private names,
  safe methods, callable names);
- :mod:`engine.formula.guards`: the run-time guards (:class:`Limits`, the step/time budget,
  sized operators, costed comparisons/hashing/text, bounded messages);
- :mod:`engine.formula.evaluator`: the one interpreter, an asteval ``Interpreter`` subclass
  whose handlers go through the guards;
- :mod:`engine.formula.helpers`: the helper table (``get``, ``e164``, ``to_int``, ...).

Glossary:
    formula: a Python-syntax expression (``phone_number or "N/A"``) or a block of statements
        ending in ``return``; the language is documented in ``docs/formulas.md``.
    scope: the names a formula sees at evaluation: the source record's fields, ``record``,
        ``parent``, ``existing``, ``settings``; absent names read as ``None``.
    function table: the callables a formula may call: the safe built-ins (``len``, ``str``,
        ...) plus the helpers (:data:`engine.formula.helpers.HELPERS` by default).
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping
from typing import Any

from engine.errors import FormulaError, FormulaRuntimeError, KlaviyoSyncError
from engine.formula.check import MUTATING_METHODS, check
from engine.formula.evaluator import Fault, compile_tree
from engine.formula.guards import (
    CONTAINERS,
    Budget,
    Guards,
    Limits,
    make_builtins,
    plain_copy,
    shorten,
    shorten_text,
)
from engine.formula.helpers import _parse_path

__all__ = ["FormulaEngine", "CompiledFormula", "Limits", "path_of", "shorten"]

_KINDS = ("formula", "filter")
_DISPLAYS = (ast.Dict, ast.List, ast.Set, ast.ListComp, ast.DictComp, ast.SetComp)
_CONTAINER_TYPES = frozenset(CONTAINERS)
#: Helpers that turn any argument into text: their arguments are costed first.
_TEXT_HELPERS = ("to_str", "join_ids", "iso_date", "to_decimal", "to_int", "to_float")


def _mutates_only_fresh_locals(tree: ast.AST) -> bool:
    """True when every mutation in the formula (``x[k] = v``, ``x.append(...)``) targets a
    local name that is only ever bound to a new display (``{}``, ``[...]``, a comprehension).
    Such a formula cannot change the data it reads, so it needs no copy of it."""
    fresh: dict[str, bool] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            ok = isinstance(node.value, _DISPLAYS) and len(node.targets) == 1
            for target in node.targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name) and isinstance(name.ctx, ast.Store):
                        fresh[name.id] = fresh.get(name.id, True) and ok and target is name
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign, ast.For, ast.comprehension, ast.NamedExpr)):
            for name in ast.walk(node.target):
                if isinstance(name, ast.Name) and isinstance(name.ctx, ast.Store):
                    fresh[name.id] = False
    for node in ast.walk(tree):
        root = None
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, (ast.Store, ast.Del)):
            root = node.value
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in MUTATING_METHODS:
            root = node.func.value
        else:
            continue
        if not (isinstance(root, ast.Name) and fresh.get(root.id) is True):
            return False
    return True


def _snippet(source: str, node: ast.AST) -> str:
    text = ast.get_source_segment(source, node) or ""
    text = " ".join(text.split())
    return text if len(text) <= 80 else text[:77] + "..."


def path_of(node: ast.AST) -> tuple[str | int, ...] | None:
    """The path an expression reads when it is nothing but a path read, else None.

    ``email`` reads ('email',); ``get(existing, "FirstName", None)`` reads ('existing',
    'FirstName'). Such a formula means exactly "the value at this path, or missing", which the
    mapper evaluates as a field read without the interpreter (same result, a fraction of the
    cost): compilation, not a second interpreter.
    """
    if isinstance(node, ast.Name) and not node.id.startswith("_"):
        return (node.id,)
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "get"):
        return None
    args = list(node.args)
    default = args[2] if len(args) == 3 else None
    for kw in node.keywords:
        if kw.arg != "default" or default is not None:
            return None
        default = kw.value
    if len(args) not in (2, 3) or not (isinstance(default, ast.Constant) and default.value is None):
        return None
    base, path = args[0], args[1]
    if not (isinstance(base, ast.Name) and not base.id.startswith("_")
            and isinstance(path, ast.Constant) and isinstance(path.value, str)):
        return None
    try:
        steps = _parse_path(path.value)
    except ValueError:
        return None
    return (base.id, *steps)


class CompiledFormula:
    """A checked formula, ready to evaluate many times.

    Attributes:
        source: the formula text as given.
        kind: ``"formula"`` or ``"filter"`` (only used in messages).
        names: free names the formula reads (not assigned locally, not functions).
        functions: names of the functions it calls.
        tree: the checked syntax tree (never re-parsed).
        read_path: the path the formula reads when it is nothing but a path read
            (:func:`path_of`), else None.

    Thread-safe: each evaluation gets its own namespace and budget.
    """

    __slots__ = ("source", "kind", "names", "functions", "tree", "_run", "_engine", "_mutates",
                 "_read", "_merged", "_pure", "_body", "read_path")

    # Plain attribute assignments (slots): alike klaviyo/_transport.py Requester.__init__ in shape only.
    def __init__(self, source: str, kind: str, tree: ast.Module, names: frozenset[str],
                 functions: frozenset[str], engine: FormulaEngine, is_expression: bool,
                 mutates: bool, loops: bool) -> None:
        self.source = source
        self.kind = kind
        self.tree = tree
        self.names = names
        self.functions = functions
        self._engine = engine
        self._mutates = mutates
        self._run = compile_tree(tree, is_expression, engine._guards)
        self._body: ast.AST = tree.body[0] if is_expression else tree
        self.read_path = path_of(tree.body[0].value) if is_expression else None  # type: ignore[attr-defined]
        self._pure = is_expression and not loops and not mutates
        # Every name read anywhere, locals included: a name can be local in one place (a
        # comprehension variable) and free in another; an extra name is harmless.
        self._read = tuple(sorted({n.id for n in ast.walk(tree) if isinstance(n, ast.Name)
                                   and isinstance(n.ctx, ast.Load)} - functions))
        # (caller's table, merged table): merging per call would cost more than most formulas
        self._merged: tuple[Any, Mapping[str, Callable[..., Any]]] = (None, engine._table)

    def __repr__(self) -> str:
        return f"CompiledFormula({shorten_text(self.source, 60)!r})"

    def evaluate(self, scope: Mapping[str, Any],
                 functions: Mapping[str, Callable[..., Any]] | None = None, *, private: bool = False) -> Any:
        """Evaluate the formula with ``scope`` as the only visible names.

        ``private=True`` says ``scope`` is a plain dict the caller made for this evaluation
        (the mapper's per-record scope): a pure expression (no assignment, loop or mutation)
        then reads it directly instead of a namespace built for it.  The scope is never
        modified either way.

        Args:
            scope: name -> value.  Names the formula reads but ``scope`` lacks are ``None``.
            functions: an optional per-call function table (e.g. helpers bound to this run's
                resolver, from :func:`engine.formula.helpers.bind_helpers`).  Default: the
                engine's table.  The engine's guards apply to it as well.

        Returns:
            The formula's value, a native Python value (never stringified).

        Raises:
            FormulaLimitError: a time, step, size, number or depth limit (F201-F205, a subclass each).
            FormulaRuntimeError: the formula raised (F100; DisallowedMethodError, F101, for a refused call);
                the message names the exception and the failing part of the formula, and
                ``formula_line``/``formula_column`` point at it.
            KlaviyoSyncError: a helper's own error (e.g. ``PathNotFoundError`` from ``get``)
                passes through, with ``formula_line``/``formula_column`` added.
        """
        engine = self._engine
        if private and self._pure and type(scope) is dict:
            ns = scope
        else:
            get = scope.get
            ns = {name: get(name) for name in self._read}
        if self._mutates:
            depth = engine.limits.max_data_depth
            for name in self._read:
                value = ns[name]
                if isinstance(value, CONTAINERS):
                    try:
                        ns[name] = plain_copy(value, depth)
                    except KlaviyoSyncError as exc:
                        raise self._error(exc, self._body) from None
        if functions is None:
            table = engine._table
        else:
            cached_for, table = self._merged
            if cached_for is not functions:
                table = engine._guarded({**engine._table, **functions})
                self._merged = (functions, table)
        try:
            result = self._run(ns, table, Budget(engine.limits))
        except Fault as fault:
            raise self._error(fault.exc, fault.node) from None
        except (KlaviyoSyncError, RecursionError, MemoryError) as exc:
            raise self._error(exc, self._body) from None
        return result

    def _error(self, exc: BaseException, node: ast.AST | None) -> KlaviyoSyncError:
        line = getattr(node, "lineno", None)
        column = getattr(node, "col_offset", -1) + 1 if line is not None else None
        where = f" in `{_snippet(self.source, node)}`" if node is not None and line is not None else ""
        if isinstance(exc, KlaviyoSyncError):
            err = exc
            if isinstance(exc, FormulaError) and where and where not in exc.message:
                err.message = f"{exc.message}{where}"
                err.args = (err.message,)
        else:
            if isinstance(exc, KeyError):
                what = f"KeyError: key {shorten(exc.args[0])} not found" if exc.args else "KeyError"
            elif exc.args and all(type(a) is str for a in exc.args):
                what = f"{type(exc).__name__}: {shorten_text(str(exc), 600)}"
            elif exc.args:
                what = f"{type(exc).__name__}: " + ", ".join(shorten(a) for a in exc.args)
            else:
                what = type(exc).__name__
            err = FormulaRuntimeError(f"{what}{where}")
        if getattr(err, "formula_line", None) is None:
            err.formula_line = line  # type: ignore[attr-defined]
            err.formula_column = column  # type: ignore[attr-defined]
        return err


class FormulaEngine:
    """Compiles formulas against one function table and one set of :class:`Limits`.

    Build one engine per process (or per collection set) and compile every formula once;
    evaluation is cheap.  Engines are immutable after construction.
    """

    def __init__(self, functions: Mapping[str, Callable[..., Any]] | None = None,
                 limits: Limits = Limits()) -> None:
        """Args:
            functions: the helper table formulas may call (default
                :data:`engine.formula.helpers.HELPERS`).  The safe built-ins (``len``,
                ``str``, ``int``, ``float``, ``bool``, ``round``, ``abs``, ``min``, ``max``,
                ``sum``, ``any``, ``all``, ``sorted``, ``range``, ``list``, ``dict``,
                ``tuple``, ``set``, ``enumerate``, ``zip``, ``reversed``, ``Decimal``) are
                always there; a helper with the same name replaces the built-in.
            limits: per-evaluation limits.
        """
        if functions is None:
            from engine.formula.helpers import HELPERS

            functions = HELPERS
        bad = [name for name in functions if name.startswith("_") or not name.isidentifier()]
        if bad:
            raise ValueError(f"function names must be identifiers not starting with '_': {bad}")
        self.limits = limits
        self._guards = Guards(limits)
        self._table: Mapping[str, Callable[..., Any]] = self._guarded(
            {**make_builtins(self._guards), **functions})

    def _guarded(self, table: dict[str, Callable[..., Any]]) -> dict[str, Callable[..., Any]]:
        """``table`` with the helpers that turn arguments into text costed first."""
        text_check = self._guards.text_check
        for name in _TEXT_HELPERS:
            fn = table.get(name)
            if fn is None or getattr(fn, "_costed", False):
                continue
            helper: Callable[..., Any] = fn

            def costed(*args: Any, _fn: Callable[..., Any] = helper, **kwargs: Any) -> Any:
                for a in args:
                    text_check(a)
                return _fn(*args, **kwargs)

            costed._costed = True  # type: ignore[attr-defined]
            costed.__name__ = getattr(fn, "__name__", name)
            costed.__doc__ = fn.__doc__
            table[name] = costed
        return table

    def compile(self, source: str, *, kind: str = "formula") -> CompiledFormula:
        """Parse and check ``source`` once.

        Args:
            source: an expression, or statements ending in ``return``.
            kind: ``"formula"`` or ``"filter"`` (filters are formulas whose truthiness decides
                whether a record is processed).

        Raises:
            FormulaSyntaxError: code F0xx, ``formula_line``/``formula_column`` (1-based, within
                ``source``) at the offending node; see ``docs/formulas.md`` for the codes.
        """
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, not {kind!r}")
        L = self.limits
        result = check(source, self._table, max_source=L.max_source, max_depth=L.max_depth,
                       max_width=L.max_format_width)
        mutates = result.mutates and not _mutates_only_fresh_locals(result.tree)
        return CompiledFormula(source, kind, result.tree, result.names, result.functions, self,
                               result.is_expression, mutates, result.has_loops)
