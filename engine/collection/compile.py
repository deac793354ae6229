"""Step 2 of the collection pipeline: compile one checked collection file into a frozen plan.

Before it: :mod:`.load` read the file and validated it against the schema.  :func:`compile_collection`
compiles every ``let``, the filter and every formula once (:mod:`engine.formula`), checks the
names each formula and field row reads against the source record's fields
(:mod:`engine.entities`), each destination against what the target accepts, and the
cross-references inside the file (``duplicate_check``, ``requires_one_of``, ``each``); it collects
every problem, and the warnings to review before go-live (placeholders, an unmapped
``SubscribeProfile``).  After it: :mod:`.graph` links the compiled collections.

Each row is compiled by its kind: :data:`ROW_KINDS` maps the row types, named as the YAML
names them (``field``, ``static``, ``formula``), to their compile step and to the plan the
mapper runs.  A new row type is one entry there, beside its rule in the schema.
"""

from __future__ import annotations

import ast
import difflib
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, TypedDict

from engine import catalog
from engine._yaml import Mark, Path as YPath
from engine.collection.load import CheckedFile, formula_location, location_of
from engine.collection.model import Collection, Let, Row, RowPlan
from engine.entities import HUB_FIELDS, KLAVIYO_FIELDS, SCOPE_NAMES
from engine.errors import (
    DuplicateDestinationError,
    EachWithoutParentError,
    FormulaError,
    KlaviyoSyncError,
    LetHidesNameError,
    Location,
    NotADestinationError,
    PlaceholderWarning,
    StaticTooLongError,
    SubscribeProfileUnmappedWarning,
    UnknownDestinationError,
    UnknownNameError,
    UnsupportedSourceError,
)
from engine.formula import CompiledFormula, FormulaEngine
from engine.vocab import (
    EVENT_KEYS,
    LIST_PREFIX,
    LOCATION_FIELDS,
    PROFILE_ATTRIBUTES,
    PROFILE_LOCATION,
    PROFILE_PROPERTIES,
    SUBSCRIBE_FLAG,
    UCLIST_PREFIX,
    Direction,
    HubEntity,
    KlaviyoResource,
    RowType,
    list_flag,
)

#: Default "required value missing" texts, by collection title (the seeds' catalog).
DEFAULT_REQUIRED_MESSAGES: dict[str, str] = {
    "Add Klaviyo Profile FROM Hub": catalog.PROFILE_NOT_CREATED,
    "Update Klaviyo Profile FROM Hub": catalog.PROFILE_NOT_UPDATED,
    "Add Klaviyo Placed Order Event FROM Hub": catalog.ORDER_EVENT_NOT_CREATED,
    "Add Klaviyo Ordered Product Event FROM Hub": catalog.PRODUCT_EVENT_NOT_CREATED,
}

def _name_position(source: str, name: str) -> tuple[int | None, int | None]:
    """1-based line and column of the first read of ``name`` in a formula's source."""
    try:
        tree = ast.parse(textwrap.dedent(source))
    except SyntaxError:
        return None, None
    hits = [(n.lineno, n.col_offset + 1) for n in ast.walk(tree)
            if isinstance(n, ast.Name) and n.id == name and isinstance(n.ctx, ast.Load)]
    return min(hits) if hits else (None, None)


def parse_path(text: str) -> tuple[str | int, ...]:
    """``location.address1`` -> ('location', 'address1'); ``Lines[0].Sku`` -> ('Lines', 0, 'Sku')."""
    out: list[str | int] = []
    for part in text.split("."):
        while "[" in part and part.endswith("]"):
            head, _, rest = part.partition("[")
            if head:
                out.append(head)
            idx, _, tail = rest.partition("]")
            out.append(int(idx))
            part = tail
            if not part:
                break
        else:
            if part:
                out.append(part)
    return tuple(out)


def source_names(direction: Direction, hub_entity: HubEntity, klaviyo_resource: KlaviyoResource) -> frozenset[str]:
    """The fields a collection's source record has: the Klaviyo resource's inbound, the hub entity's outbound."""
    if direction == "to_hub":
        return KLAVIYO_FIELDS[klaviyo_resource]
    return HUB_FIELDS[hub_entity]


def _check_destination(direction: Direction, hub_entity: HubEntity, resource: KlaviyoResource, dest: str
                       ) -> str | None:
    """None when ``dest`` is a destination the target accepts, else the reason (engine/vocab.py's table)."""
    parts = dest.split(".")
    head = parts[0]
    if direction == "to_hub":
        fields = HUB_FIELDS[hub_entity] - {"Id", "CreatedAt", "UpdatedAt", "Addresses", "Lines", "CustomFields"}
        if head == "CustomFields" and len(parts) == 2:
            return None
        if len(parts) == 1 and head in fields:
            return None
        return f"valid destinations for hub {hub_entity}: {', '.join(sorted(fields))}, CustomFields.<name>"
    if resource == "profile":
        flag = list_flag(head)
        if len(parts) == 1 and (head in PROFILE_ATTRIBUTES or head == SUBSCRIBE_FLAG or (flag is not None and flag[1])):
            return None
        if head == PROFILE_LOCATION and len(parts) == 2 and parts[1] in LOCATION_FIELDS:
            return None
        if head == PROFILE_PROPERTIES and len(parts) == 2:
            return None
        return (f"valid destinations for a Klaviyo profile: {', '.join(sorted(PROFILE_ATTRIBUTES))}, "
                f"{PROFILE_LOCATION}.<{'|'.join(sorted(LOCATION_FIELDS))}>, {PROFILE_PROPERTIES}.<name>, "
                f"{LIST_PREFIX}<list name>, {UCLIST_PREFIX}<list name>, {SUBSCRIBE_FLAG}")
    # events: named destinations, or any other single name, which becomes an event property
    if len(parts) == 1:
        return None
    return "event destinations are single names: " + ", ".join(sorted(EVENT_KEYS)) + " or a property name"


class _FileCompiler:
    """Compiles one parsed collection file, collecting every problem."""

    def __init__(self, filename: str, data: dict[str, Any], marks: dict[YPath, Mark], engine: FormulaEngine):
        self.filename = filename
        self.data = data
        self.marks = marks
        self.engine = engine
        self.errors: list[KlaviyoSyncError] = []
        self.warnings: list[KlaviyoSyncError] = []

    def error(self, exc: KlaviyoSyncError) -> None:
        self.errors.append(exc)

    def at(self, path: YPath, row: str | None = None) -> Location:
        """The location of the value at ``path`` in this file."""
        return location_of(self.filename, self.marks, path, row=row)

    def compile_formula(self, source: str, path: YPath, row: str | None, known: frozenset[str],
                        kind: str) -> tuple[CompiledFormula | None, Mark | None]:
        origin = self.marks.get(path)
        try:
            compiled = self.engine.compile(source, kind="filter" if kind == "filter" else "formula")
        except FormulaError as exc:
            exc.location = formula_location(self.filename, origin, exc, row)
            self.error(exc)
            return None, origin
        unknown = sorted(n for n in compiled.names if n not in known)
        for name in unknown:
            pos = _name_position(source, name)
            hint = difflib.get_close_matches(name, sorted(known), n=1)
            msg = f"unknown name '{name}' in {kind}"
            msg += f"; did you mean '{hint[0]}'?" if hint else f"; names in scope: {', '.join(sorted(known))}"
            where = FormulaError(msg)
            where.formula_line, where.formula_column = pos
            self.error(UnknownNameError(msg, location=formula_location(
                self.filename, origin, where, row)))
        return compiled, origin

    def compile(self) -> Collection | None:
        d = self.data
        direction, hub_entity, resource = d["direction"], d["hub_entity"], d["klaviyo_resource"]
        if direction == "to_hub" and resource != "profile":
            self.error(UnsupportedSourceError(
                f"direction to_hub reads Klaviyo profiles; klaviyo_resource {resource!r} cannot be a source",
                location=self.at(("klaviyo_resource",))))
            return None
        fields = source_names(direction, hub_entity, resource)
        lets = self._lets(fields)
        let_names = frozenset(d.get("let") or {})  # a let that failed to compile is reported once, at the let
        scope = _Scope(fields, let_names, fields | SCOPE_NAMES | let_names)
        filt = filt_origin = None
        if d.get("filter") is not None:
            filt, filt_origin = self.compile_formula(d["filter"], ("filter",), "filter", scope.known, "filter")
        default_required = d.get("required_message") or DEFAULT_REQUIRED_MESSAGES.get(d["title"])
        on_missing_default = d.get("on_missing", "omit")
        rows = self._rows(scope, default_required, on_missing_default)
        destinations = {r["destination"] for r in d["rows"]}
        dup = d.get("duplicate_check")
        roo = d.get("requires_one_of") or {}
        self._destinations_exist(destinations, ("duplicate_check", "fields"), (dup or {}).get("fields", []),
                                 "duplicate_check field '{}'")
        self._destinations_exist(destinations, ("requires_one_of", "destinations"), roo.get("destinations", []),
                                 "requires_one_of destination '{}'")
        if d.get("each") and not d.get("parent"):
            self.error(EachWithoutParentError("'each' is only meaningful in a child collection (one with 'parent')",
                                              location=self.at(("each",))))
        self._warn_subscribe_unmapped(rows)
        if self.errors:
            return None
        return Collection(
            title=d["title"], file=self.filename, direction=direction, hub_entity=hub_entity,
            klaviyo_resource=resource, action=d["action"], status=d["status"], rows=tuple(rows),
            description=d.get("description", ""), parent=d.get("parent"), each=d.get("each"),
            filter=filt, filter_origin=filt_origin, lets=tuple(lets), duplicate_check=dup,
            required_message=default_required, unreadable_message=d.get("unreadable_message"),
            requires_one_of=tuple(roo.get("destinations", ())), requires_one_of_message=roo.get("message"),
            on_missing=on_missing_default,
            parent_location=self.at(("parent",)) if d.get("parent") else None,
            requires_one_of_location=self.at(("requires_one_of",)) if roo else None,
        )

    def _lets(self, fields: frozenset[str]) -> list[Let]:
        """The ``let`` formulas in order, each seeing the source fields, the scope names and the lets before it."""
        lets: list[Let] = []
        known = set(fields | SCOPE_NAMES)
        for name, src in (self.data.get("let") or {}).items():
            compiled, origin = self.compile_formula(src, ("let", name), f"let {name}", frozenset(known), "formula")
            if name in fields or name in SCOPE_NAMES:
                self.error(LetHidesNameError(f"let name '{name}' hides a source field or scope name",
                                             location=self.at(("let", name))))
            known.add(name)
            if compiled is not None:
                lets.append(Let(name, compiled, self.at(("let", name)), origin))
        return lets

    def _rows(self, scope: _Scope, required_message: str | None, on_missing: str) -> list[Row]:
        """Every row that compiled, through its kind in :data:`ROW_KINDS`."""
        d = self.data
        rows: list[Row] = []
        seen_dest: dict[str, int] = {}
        for i, r in enumerate(d["rows"]):
            path: YPath = ("rows", i)
            dest = r["destination"]
            spec = _RowSpec(r, path, f"rows[{i}] {dest}", self.at(path, row=f"rows[{i}] {dest}"), scope)
            if dest in seen_dest:
                self.error(DuplicateDestinationError(
                    f"destination '{dest}' is already written by rows[{seen_dest[dest]}]",
                    location=self.at(path + ("destination",), row=spec.label)))
            seen_dest.setdefault(dest, i)
            reason = _check_destination(d["direction"], d["hub_entity"], d["klaviyo_resource"], dest)
            if reason:
                self.error(UnknownDestinationError(f"unknown destination '{dest}'; {reason}",
                                                   location=self.at(path + ("destination",), row=spec.label)))
            parts = ROW_KINDS[r["type"]].compile(self, spec)
            if parts is None:
                continue
            importance = r.get("importance", "optional")
            rows.append(Row(
                index=i, type=r["type"], destination=dest, dest_path=tuple(dest.split(".")), location=spec.location,
                source=r.get("source"), description=r.get("description", ""), importance=importance,
                required=r.get("required", importance == "required"),
                required_message=r.get("required_message") or required_message,
                on_missing=r.get("on_missing", on_missing), expect=r.get("expect"), max_length=r.get("max_length"),
                **parts,
            ))
        return rows

    def _destinations_exist(self, destinations: set[str], path: YPath, names: list[str], what: str) -> None:
        """C014 for each of ``names`` (at ``path``) that no row writes."""
        for j, name in enumerate(names):
            if name not in destinations:
                self.error(NotADestinationError(f"{what.format(name)} is not a destination of this collection",
                                                location=self.at(path + (j,))))

    def _warn_subscribe_unmapped(self, rows: list[Row]) -> None:
        d = self.data
        if d["direction"] == "to_klaviyo" and d["klaviyo_resource"] == "profile" and d["status"] == "enabled" \
                and not any(r.destination == SUBSCRIBE_FLAG for r in rows):
            self.warnings.append(SubscribeProfileUnmappedWarning(
                "SubscribeProfile is not mapped: every profile this collection sends is unsubscribed. "
                "Map it to each Customer's real opt-in value.", location=self.at(("rows",))))


@dataclass(frozen=True)
class _Scope:
    """The names a collection's rows may read."""

    fields: frozenset[str]  # the source record's
    lets: frozenset[str]  # the ``let`` names
    known: frozenset[str]  # everything a formula may read: fields, scope names, lets


@dataclass(frozen=True)
class _RowSpec:
    """One row as written, with where it is and what it may read: what a row kind compiles."""

    data: dict[str, Any]
    path: YPath
    label: str
    location: Location
    scope: _Scope


class _RowParts(TypedDict, total=False):
    """What a row kind's compile step adds to the :class:`~.model.Row` (the rest is common to every kind)."""

    source_path: tuple[str | int, ...]
    value: Any
    formula: CompiledFormula
    formula_origin: Mark | None


def _compile_field(c: _FileCompiler, row: _RowSpec) -> _RowParts:
    """A ``field`` row: its source path must start at a field of the source record, a let or a scope name."""
    source_path = parse_path(row.data["source"])
    head = source_path[0] if source_path else ""
    fields, lets = row.scope.fields, row.scope.lets
    if head not in fields and head not in lets and head not in SCOPE_NAMES:
        hint = difflib.get_close_matches(str(head), sorted(fields | lets), n=1)
        msg = f"unknown source field '{head}'"
        msg += f"; did you mean '{hint[0]}'?" if hint else f"; fields: {', '.join(sorted(fields))}"
        c.error(UnknownNameError(msg, location=c.at(row.path + ("source",), row=row.label)))
    return {"source_path": source_path}


def _compile_static(c: _FileCompiler, row: _RowSpec) -> _RowParts:
    """A ``static`` row: the value is known now, so its length is checked now, and a placeholder warned about."""
    value, max_length, dest = row.data.get("value"), row.data.get("max_length"), row.data["destination"]
    if max_length and isinstance(value, str) and len(value) > max_length:
        c.error(StaticTooLongError(f"static value is {len(value)} characters; at most {max_length} allowed",
                                   location=c.at(row.path + ("value",), row=row.label)))
    reason = None
    if value == "Example values":
        reason = f"placeholder value 'Example values' in {dest}: replace it with real data or remove the row"
    elif list_flag(dest) is not None and value is True:
        reason = f"template list flag {dest} = true: set it to a list you actually use"
    elif dest == SUBSCRIBE_FLAG and value is True:
        reason = "SubscribeProfile is a fixed true: map it to each Customer's real opt-in / opt-out value"
    if reason:
        c.warnings.append(PlaceholderWarning(reason + " before go-live", location=row.location))
    return {"value": value}


def _compile_formula(c: _FileCompiler, row: _RowSpec) -> _RowParts | None:
    """A ``formula`` row: compiled once, reading only names in scope; None when it does not compile."""
    formula, origin = c.compile_formula(row.data["formula"], row.path + ("formula",), row.label, row.scope.known,
                                        "formula")
    if formula is None:
        return None
    return {"formula": formula, "formula_origin": origin}


@dataclass(frozen=True)
class RowKind:
    """One row type, registered in :data:`ROW_KINDS` under its name in the YAML.

    Attributes:
        name: the type as a collection writes it (``type: field``).
        title: the specification's name for it, as its mapping tables show it.
        compile: checks the row's own key (``source``, ``value``, ``formula``) and returns what the
            :class:`~.model.Row` holds for it, or None when the row cannot run (the problem is reported).
        plan: what the mapper does with a compiled row (see :class:`~.model.RowPlan`).
    """

    name: RowType
    title: str
    compile: Callable[[_FileCompiler, _RowSpec], _RowParts | None]
    plan: Callable[[Row], RowPlan]


#: The row types by their YAML names (the schema's ``type`` enum): the one place that knows each kind.
ROW_KINDS: Final[Mapping[RowType, RowKind]] = MappingProxyType({
    "field": RowKind("field", "Field", _compile_field, lambda row: RowPlan("read", row.source_path)),
    "static": RowKind("static", "Static", _compile_static, lambda row: RowPlan("constant", row.value)),
    "formula": RowKind("formula", "Dynamic Formula", _compile_formula, lambda row: RowPlan("formula", row.formula)),
})


def compile_collection(checked: CheckedFile, engine: FormulaEngine
                       ) -> tuple[Collection | None, list[KlaviyoSyncError], list[KlaviyoSyncError]]:
    """Compile one checked collection file.

    Args:
        checked: the file as :func:`.load.read_collection` returned it.
        engine: the formula engine that compiles every formula, filter and ``let``.

    Returns:
        The frozen :class:`~.model.Collection` (None when any error was found), every error
        and every warning, each at its file, line and column.
    """
    comp = _FileCompiler(checked.filename, checked.data, checked.marks, engine)
    coll = comp.compile()
    return coll, comp.errors, comp.warnings


__all__ = ["ROW_KINDS", "RowKind", "compile_collection", "parse_path"]
