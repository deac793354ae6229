"""The row mapper: one source record through one compiled collection, no I/O.

``map_record`` evaluates the collection's ``let`` formulas, then its filter,
then every row in order, and returns a :class:`MapResult`: the mapped payload
(native-typed values, never strings coerced afterwards) or the list of
problems, each a :class:`~engine.errors.KlaviyoSyncError` (the one diagnostic type) whose
:class:`~engine.errors.Location` names the collection file, line and column, the row, its
destination and its source.

Field and static rows never touch the formula interpreter: a field row is a
path lookup, a static row a constant.  Formula rows run in the sandbox
(:mod:`engine.formula`) with a scope holding the source record's fields by
name, ``record``, ``parent``, ``parent_mapped``, ``existing``, ``settings``
and the ``let`` names.

Missing values: a field row whose path is absent, or a formula that returns
``None``, is *missing*.  A required row that is missing makes the record
invalid with the collection's required message (the seeds' catalog text).
Otherwise the row's ``on_missing`` policy applies: ``omit`` (leave the
destination out — the default, so a missing source is never sent as null),
``null`` or ``error`` (the collection's ``unreadable_message``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.collection import ROW_KINDS, Collection, Row, formula_location
from engine.errors import (
    FormulaDepthError,
    KlaviyoSyncError,
    Location,
    MappingError,
    MappingWarning,
    MissingValueError,
    NotAnObjectError,
    PathNotFoundError,
    RequiresOneOfError,
    TooDeepError,
    TooLongError,
    UnreadableSourceError,
    WrongTypeError,
)
from engine.formula import helpers
from engine.formula.guards import shorten


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
_STATIC, _READ, _READ2, _FORMULA = object(), object(), object(), object()
_STEPS = {"constant": _STATIC, "read": _READ, "formula": _FORMULA}  # a RowPlan's step

_TYPE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) or type(v).__name__ == "Decimal",
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
}


@dataclass
class MapResult:
    """The outcome of mapping one record: ``status`` is ok, filtered or invalid.

    ``problems`` say why an invalid record could not be mapped, ``warnings`` what a helper
    refused in a record that still maps; each is located at its row (see :func:`row_location`).
    """

    status: str
    payload: dict[str, Any] | None = None
    problems: list[KlaviyoSyncError] = field(default_factory=list)
    warnings: list[KlaviyoSyncError] = field(default_factory=list)


def row_location(row: Row, file: str | None, *, line: int | None = None, column: int | None = None,
                 with_source: bool = True) -> Location:
    """Where a row's problem is: ``file`` at the row's own line and column (or the ones given,
    inside its formula), the row's label, destination and (unless ``with_source`` is false) source."""
    return Location(file=file, line=row.location.line if line is None else line,
                    column=row.location.column if column is None else column, row=row.label,
                    destination=row.destination, source=row.source if with_source else None)


#: Deepest value a row may place in a payload (deeper data is refused with M007).
MAX_VALUE_DEPTH = 100

_LEAVES = frozenset({str, int, float, bool, type(None)})


class _TooDeep(Exception):
    pass


def _copy_data(value: Any, depth: int = 0) -> Any:
    """A plain copy of JSON-like data (dicts, lists, scalars), so a payload never shares an object
    with the caller's record. Scalars are not recursed into (most payload values are scalars).
    Raises :class:`_TooDeep` past :data:`MAX_VALUE_DEPTH` levels."""
    if depth >= MAX_VALUE_DEPTH:
        raise _TooDeep
    if isinstance(value, dict):
        return {k: v if type(v) in _LEAVES else _copy_data(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [v if type(v) in _LEAVES else _copy_data(v, depth + 1) for v in value]
    return value


def read_path(data: Any, path: tuple[str | int, ...]) -> Any:
    """Follow ``path`` through dicts and lists; :data:`MISSING` when any step is absent."""
    cur = data
    for step in path:
        if isinstance(step, int):
            if isinstance(cur, list) and -len(cur) <= step < len(cur):
                cur = cur[step]
            else:
                return MISSING
        elif isinstance(cur, dict) and step in cur:
            cur = cur[step]
        else:
            return MISSING
    return cur


def _put(payload: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    cur = payload
    for step in path[:-1]:
        nxt = cur.get(step)
        if not isinstance(nxt, dict):
            nxt = cur[step] = {}
        cur = nxt
    cur[path[-1]] = value


def _short(value: Any, limit: int = 80) -> str:
    return shorten(value, limit)


class Mapper:
    """Maps records through one collection. Build once per collection and reuse.

    Args:
        collection: the compiled plan.
        functions: helper functions for formulas, bound to the run's resolver (see
            :func:`engine.formula.helpers.bind_helpers`); ``None`` uses the engine's defaults.
        settings: a plain, secret-free dict exposed to formulas as ``settings``.
    """

    def __init__(self, collection: Collection, *, functions: Mapping[str, Callable[..., Any]] | None = None,
                 settings: Mapping[str, Any] | None = None) -> None:
        self.collection = collection
        self.settings = dict(settings or {})
        region = self.settings.get("default_phone_region")
        if isinstance(region, str) and region:
            # numbers without "+" and without a record country are read in the settings' region
            table = dict(functions) if functions is not None else dict(helpers.HELPERS)
            plain_e164 = table.get("e164")
            if plain_e164 is helpers.e164:
                def e164(phone: Any, country: Any = None, default: Any = region) -> str | None:
                    return helpers.e164(phone, country, default)

                e164.__doc__ = helpers.e164.__doc__
                table["e164"] = e164
                functions = table
        self.functions = functions
        overridden = functions is not None and "get" in functions and functions["get"] is not helpers.get
        # The row plan: (row, kind, argument, single destination key, has checks). Field rows and
        # formula rows that only read a path (``email``, ``get(existing, "FirstName", None)``)
        # are path reads; static rows are constants; only real formulas reach the interpreter.
        self._plan: list[tuple[Row, object, Any, str | None, bool]] = []
        for row in collection.rows:
            step, arg = ROW_KINDS[row.type].plan(row)
            if step == "formula" and not overridden and (path := arg.read_path) is not None:
                step, arg = "read", path
            kind = _STEPS[step]
            if kind is _READ and len(arg) == 2 and all(type(a) is str for a in arg):
                kind = _READ2  # the common "location.city" / existing.FirstName read, inlined
            key = row.dest_path[0] if len(row.dest_path) == 1 else None
            self._plan.append((row, kind, arg, key, bool(row.expect or row.max_length is not None)))

    @staticmethod
    def _check(row: Row, value: Any) -> KlaviyoSyncError | None:
        """The row's type and length checks on a present value."""
        where = row_location(row, row.location.file)
        if row.expect and not _TYPE_CHECKS[row.expect](value):
            return WrongTypeError(f"{row.destination} must be {row.expect}, got {type(value).__name__} "
                                  f"{_short(value)}", location=where)
        if row.max_length is not None and isinstance(value, str) and len(value) > row.max_length:
            return TooLongError(f"{row.destination} is {len(value)} characters; at most {row.max_length} allowed",
                                location=where)
        return None

    def _eval(self, formula: Any, scope: dict[str, Any]) -> Any:
        # the scope is this record's own dict, made in map() and dropped after it
        return formula.evaluate(scope, functions=self.functions, private=True)

    def _problem_from(self, exc: KlaviyoSyncError, row: Row | None, where: str,
                      origin: Any = None) -> KlaviyoSyncError:
        """The record's problem for an error a formula (of ``row``, or the filter or a let) raised:
        the error itself, placed at the formula's failing node in the collection file."""
        c = self.collection
        problem: KlaviyoSyncError = exc
        if isinstance(exc, PathNotFoundError) and c.unreadable_message:
            # the collection's own words for an unreadable source; get()'s message becomes the detail
            problem = PathNotFoundError(c.unreadable_message, path=exc.path, step=exc.step, detail=exc.message)
        if origin is None:
            origin = row.formula_origin if row else (c.filter_origin if where == "filter" else None)
        line = col = None
        if origin is not None:
            # the failing node's position inside the formula, as a position in the YAML file
            loc = formula_location(c.file, origin, exc, None)  # type: ignore[arg-type]
            line, col = loc.line, loc.column
        # The mapper knows where the formula is: its position replaces any the raiser gave.
        if row is None:
            problem.location = Location(file=c.file, line=line or None, column=col or None, row=where)
        else:
            problem.location = row_location(row, c.file, line=line or row.location.line,
                                            column=col or row.location.column)
        return problem

    def map(self, record: Mapping[str, Any], *, parent: Mapping[str, Any] | None = None,
            parent_mapped: Mapping[str, Any] | None = None,
            existing: Mapping[str, Any] | None = None) -> MapResult:
        """Map one source record. Never raises for bad data: problems are in the result.

        Warnings from helpers (e.g. W010, a phone number too long to parse) are in
        ``result.warnings``, each at its row."""
        sink: list[tuple[str, str]] = []
        token = helpers.WARNINGS.set(sink)
        try:
            result = self._map(record, parent=parent, parent_mapped=parent_mapped, existing=existing, sink=sink)
        finally:
            helpers.WARNINGS.reset(token)
        return result

    def _map(self, record: Mapping[str, Any], *, parent: Mapping[str, Any] | None,
             parent_mapped: Mapping[str, Any] | None, existing: Mapping[str, Any] | None,
             sink: list[tuple[str, str]]) -> MapResult:
        c = self.collection
        warnings: list[KlaviyoSyncError] = []
        if type(record) is not dict and not isinstance(record, Mapping):
            return MapResult("invalid", problems=[NotAnObjectError(
                f"a source record must be a JSON object, not {type(record).__name__}", location=Location(file=c.file))])
        # No copy here: the formula engine hands a formula that could mutate a value a private
        # copy of it, and values placed in the payload are copied below, so the caller's data is
        # never shared with the payload nor changed.
        data = record if isinstance(record, dict) else dict(record)
        scope: dict[str, Any] = dict(data)
        scope["record"] = data
        scope["parent"] = parent
        scope["parent_mapped"] = parent_mapped
        scope["existing"] = existing
        scope["settings"] = self.settings
        for let in c.lets:
            try:
                scope[let.name] = self._eval(let.formula, scope)
            except KlaviyoSyncError as exc:
                p = self._problem_from(exc, None, f"let {let.name}", let.origin)
                return MapResult("invalid", problems=[p])
        if c.filter is not None:
            try:
                keep = self._eval(c.filter, scope)
            except KlaviyoSyncError as exc:
                return MapResult("invalid", problems=[self._problem_from(exc, None, "filter")])
            if not keep:
                return MapResult("filtered")

        payload: dict[str, Any] = {}
        problems: list[KlaviyoSyncError] = []
        for row, kind, arg, key, checked in self._plan:
            if kind is _STATIC:
                value = arg
            elif kind is _READ2:
                value = scope.get(arg[0], MISSING)
                value = value.get(arg[1], MISSING) if isinstance(value, dict) else MISSING
            elif kind is _READ:
                value = read_path(scope, arg)
            else:
                try:
                    value = self._eval(arg, scope)
                except KlaviyoSyncError as exc:
                    problems.append(self._problem_from(exc, row, "formula"))
                    continue
                if sink:
                    at_row = row_location(row, c.file, with_source=False)
                    warnings.extend(MappingWarning(message, code=code, location=at_row) for code, message in sink)
                    sink.clear()
            if value is MISSING or value is None:
                if row.required:
                    problems.append(MissingValueError(
                        row.required_message or f"a value for required destination {row.destination} is missing",
                        detail=f"{row.destination} has no value"
                        + (f" (source {row.source} is absent)" if row.source else ""),
                        location=row_location(row, c.file)))
                    continue
                policy = row.on_missing
                if policy == "omit":
                    continue
                if policy == "error":
                    problems.append(UnreadableSourceError(
                        c.unreadable_message or f"source {row.source} could not be read",
                        detail=f"{row.source or row.destination} is not on the source record",
                        location=row_location(row, c.file)))
                    continue
                value = None
            elif checked:
                problem = self._check(row, value)
                if problem is not None:
                    problems.append(problem)
                    continue
            if isinstance(value, (dict, list)):
                try:
                    value = _copy_data(value)
                except _TooDeep:
                    # a formula's value is a formula limit (F205, at the formula); a field's value
                    # a mapping error (M007, at the row)
                    line, column = row.location.line, row.location.column
                    if kind is _FORMULA and row.formula_origin is not None:
                        at = formula_location(c.file, row.formula_origin, MappingError(""), None)  # type: ignore[arg-type]
                        line, column = at.line or line, at.column or column
                    too_deep = FormulaDepthError if kind is _FORMULA else TooDeepError
                    problems.append(too_deep(
                        f"value nested too deeply: the value for {row.destination} has more than "
                        f"{MAX_VALUE_DEPTH} levels", location=row_location(row, c.file, line=line, column=column)))
                    continue
            if key is not None:
                payload[key] = value
            else:
                _put(payload, row.dest_path, value)
        if not problems and c.requires_one_of:
            if all(read_path(payload, tuple(d.split("."))) in (MISSING, None, "") for d in c.requires_one_of):
                one_of = c.requires_one_of_location
                problems.append(RequiresOneOfError(
                    c.requires_one_of_message or c.required_message
                    or f"one of {', '.join(c.requires_one_of)} is required",
                    detail="none of " + ", ".join(c.requires_one_of) + " has a value",
                    location=Location(file=c.file, line=one_of.line if one_of else None,
                                      column=one_of.column if one_of else None)))
        if problems:
            return MapResult("invalid", payload=None, problems=problems, warnings=warnings)
        return MapResult("ok", payload=payload, warnings=warnings)


__all__ = ["MISSING", "MapResult", "Mapper", "read_path", "row_location"]
