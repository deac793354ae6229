"""Sandboxed formulas: compile once when a collection loads, evaluate per record.

Glossary:
    formula: a Python-syntax expression (``phone_number or "N/A"``) or a block of statements
        ending in ``return``; the language is documented in ``docs/formulas.md``.
    scope: the names a formula sees at evaluation: the source record's fields, ``record``,
        ``parent``, ``existing``, ``settings``; absent names read as ``None``.
    function table: the callables a formula may call: the safe built-ins (``len``, ``str``,
        ...) plus the helpers (:data:`engine.helpers.HELPERS` by default).

Safety is layered: (1) :mod:`engine._formula_check` refuses, at compile time, anything outside
an allow-list of syntax nodes, private (``_``) names and attributes, attribute access other
than a list of safe ``str``/``dict``/``list`` methods, and calls to anything not in the table;
(2) evaluation uses a fresh namespace per call, holding plain copies of the data whenever the
formula can mutate; (3) every operation that can blow up checks its result size first, and
loops spend a step and time budget (:class:`Limits`).

Two back ends run the same checked tree: ``"fast"`` (default) compiles it to Python closures
(:mod:`engine._formula_fast`); ``"asteval"`` runs it on an asteval interpreter subclass with
the same guards (:mod:`engine._formula_asteval`).  Tests hold them to the same results.
"""

from __future__ import annotations

import ast
from typing import Any, Callable, Mapping

from engine._formula_check import check
from engine._formula_fast import Fault, compile_tree
from engine._formula_runtime import Budget, Guards, Limits, make_builtins, plain_copy
from engine.errors import FormulaError, FormulaRuntimeError, KlaviyoSyncError


_DISPLAYS = (ast.Dict, ast.List, ast.Set, ast.ListComp, ast.DictComp, ast.SetComp)


def _mutates_only_fresh_locals(tree: ast.AST) -> bool:
    """True when every mutation in the formula (``x[k] = v``, ``del x[k]``, ``x.append(...)``)
    targets a local name that is only ever bound to a new display (``{}``, ``[...]``, a
    comprehension). Such a formula cannot change the data it reads, so it needs no copy of it;
    a mutation through anything else (``a["b"]["c"] = 1``, a loop variable, an alias of a field)
    keeps the copy."""
    from engine._formula_check import MUTATING_METHODS

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

__all__ = ["FormulaEngine", "CompiledFormula", "Limits"]

_KINDS = ("formula", "filter")
_CONTAINERS = (dict, list, set, tuple)


def _snippet(source: str, node: ast.AST) -> str:
    text = ast.get_source_segment(source, node) or ""
    text = " ".join(text.split())
    return text if len(text) <= 80 else text[:77] + "..."


def _shorten(value: str, limit: int = 200) -> str:
    return value if len(value) <= limit else value[: limit - 3] + "..."


class CompiledFormula:
    """A checked formula, ready to evaluate many times.

    Attributes:
        source: the formula text as given.
        kind: ``"formula"`` or ``"filter"`` (only used in messages).
        names: free names the formula reads (not assigned locally, not functions).
        functions: names of the functions it calls.

    Thread-safe: each evaluation gets its own namespace; nothing is shared between
    evaluations except the immutable compiled closures.
    """

    __slots__ = ("source", "kind", "names", "functions", "_run", "_functions", "_limits",
                 "_loops", "_mutates", "_backend", "_read", "_merged", "_pure")

    def __init__(self, source: str, kind: str, names: frozenset[str], functions: frozenset[str],
                 run: Callable[[dict[str, Any]], Any], table: Mapping[str, Callable[..., Any]],
                 limits: Limits, loops: bool, mutates: bool, backend: str) -> None:
        self.source = source
        self.kind = kind
        self.names = names
        self.functions = functions
        self._run = run
        self._functions = table
        self._limits = limits
        self._loops = loops
        self._mutates = mutates
        self._backend = backend
        self._read = tuple(sorted(names))
        self._pure = False  # set by FormulaEngine.compile
        # (caller's table, merged table): merging per call would cost more than most formulas
        self._merged: tuple[Any, dict[str, Callable[..., Any]]] = (None, dict(table))

    def __repr__(self) -> str:
        return f"CompiledFormula({_shorten(self.source, 60)!r}, backend={self._backend!r})"

    def evaluate(self, scope: Mapping[str, Any],
                 functions: Mapping[str, Callable[..., Any]] | None = None, *, private: bool = False) -> Any:
        """Evaluate the formula with ``scope`` as the only visible names.

        ``private=True`` says ``scope`` is a plain dict the caller made for this evaluation and
        will throw away (the mapper's per-record scope): a pure expression (no assignment, loop or
        mutation) then reads it directly instead of a namespace built for it. The engine may add
        keys starting with ``_`` to such a scope.

        Args:
            scope: name -> value.  Names the formula reads but ``scope`` lacks are ``None``.
                Keys starting with ``_`` are ignored.  ``scope`` is never modified.
            functions: an optional per-call function table (e.g. helpers bound to this run's
                resolver, from :func:`engine.helpers.bind_helpers`); it must provide every
                name in :attr:`functions`.  Default: the engine's table.

        Returns:
            The formula's value, a native Python value (never stringified).

        Raises:
            FormulaLimitError: the time, step or size limit was exceeded (codes F201-F204).
            FormulaRuntimeError: the formula raised (code F100, or F101 for a refused call);
                the message names the exception and the failing part of the formula, and
                ``formula_line``/``formula_column`` point at it.
            KlaviyoSyncError: a helper's own error (e.g. ``PathNotFoundError`` from ``get``)
                passes through unchanged, with ``formula_line``/``formula_column`` added.
        """
        # The namespace holds only the names the formula reads (absent ones are None): cheaper
        # than copying the whole scope, and nothing else is reachable from the formula anyway.
        if private and self._pure and type(scope) is dict:
            ns = scope
        else:
            get = scope.get
            ns = {name: get(name) for name in self._read}
        if self._mutates:
            # Only names the formula reads can be mutated by it: copy those that hold containers.
            for name in self._read:
                value = ns[name]
                if isinstance(value, _CONTAINERS):
                    ns[name] = plain_copy(value)
        if functions is None:
            ns["_fn"] = self._functions
        else:
            cached_for, merged = self._merged
            if cached_for is not functions:
                merged = {**self._functions, **functions}
                self._merged = (functions, merged)
            ns["_fn"] = merged
        if self._loops:
            ns["_budget"] = Budget(self._limits)
        try:
            return self._run(ns)
        except Fault as fault:
            raise self._error(fault.exc, fault.node) from fault.exc
        except RecursionError as exc:  # pragma: no cover - the depth limit prevents this
            raise self._error(exc, None) from exc

    def _error(self, exc: BaseException, node: ast.AST | None) -> KlaviyoSyncError:
        line = getattr(node, "lineno", None)
        column = getattr(node, "col_offset", -1) + 1 if node is not None else None
        where = f" in `{_snippet(self.source, node)}`" if node is not None else ""
        if isinstance(exc, KlaviyoSyncError):
            err = exc
            if isinstance(exc, FormulaError) and where and where not in exc.message:
                err.message = f"{exc.message}{where}"
                err.args = (err.message,)
        else:
            if isinstance(exc, KeyError):
                what = f"KeyError: key {exc.args[0]!r} not found" if exc.args else "KeyError"
            else:
                what = f"{type(exc).__name__}: {_shorten(str(exc))}"
            err = FormulaRuntimeError(f"{what}{where}", code="F100")
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
                 limits: Limits = Limits(), *, backend: str = "fast") -> None:
        """Args:
            functions: the helper table formulas may call (default
                :data:`engine.helpers.HELPERS`).  The safe built-ins (``len``, ``str``,
                ``int``, ``float``, ``bool``, ``round``, ``abs``, ``min``, ``max``, ``sum``,
                ``any``, ``all``, ``sorted``, ``range``, ``list``, ``dict``, ``tuple``, ``set``,
                ``enumerate``, ``zip``, ``reversed``, ``Decimal``) are always there; a helper
                with the same name replaces the built-in.
            limits: per-evaluation limits.
            backend: ``"fast"`` (closures) or ``"asteval"``.
        """
        if functions is None:
            from engine.helpers import HELPERS

            functions = HELPERS
        bad = [name for name in functions if name.startswith("_") or not name.isidentifier()]
        if bad:
            raise ValueError(f"function names must be identifiers not starting with '_': {bad}")
        if backend not in ("fast", "asteval"):
            raise ValueError(f"backend must be 'fast' or 'asteval', not {backend!r}")
        self.limits = limits
        self.backend = backend
        self._guards = Guards(limits)
        self._table: dict[str, Callable[..., Any]] = {**make_builtins(limits), **functions}

    @property
    def function_names(self) -> frozenset[str]:
        """Every name a formula may call."""
        return frozenset(self._table)

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
        if self.backend == "asteval":
            from engine._formula_asteval import compile_asteval

            run = compile_asteval(result.tree, result.is_expression, self._guards, source)
        else:
            run = compile_tree(result.tree, result.is_expression, self._guards)
        mutates = result.mutates and not _mutates_only_fresh_locals(result.tree)
        compiled = CompiledFormula(source, kind, result.names, result.functions, run, self._table,
                                   L, result.has_loops, mutates, self.backend)
        # Every name read anywhere, locals included: a name can be local in one place (a
        # comprehension variable) and free in another, and an extra name in the namespace is harmless.
        compiled._pure = result.is_expression and not result.has_loops and not mutates
        compiled._read = tuple(sorted({n.id for n in ast.walk(result.tree) if isinstance(n, ast.Name)
                                       and isinstance(n.ctx, ast.Load)} - result.functions))
        return compiled
