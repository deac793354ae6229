"""Step 2 of the collection pipeline: compile one checked collection file into a frozen plan.

Before it: :mod:`.load` read the file and validated it against the schema.  :func:`compile_collection`
compiles every ``let``, the filter and every formula once (:mod:`engine.formula`), checks the
names each formula and field row reads against the source record's fields
(:mod:`engine.entities`), each destination against what the target accepts, and the
cross-references inside the file (``duplicate_check``, ``requires_one_of``, ``each``); it collects
every problem, and the warnings to review before go-live (placeholders, an unmapped
``SubscribeProfile``).  After it: :mod:`.graph` links the compiled collections.
"""

from __future__ import annotations

import ast
import difflib
import textwrap
from typing import Any

from engine import catalog
from engine._yaml import Mark, Path as YPath
from engine.collection.load import CheckedFile, formula_location, location_of
from engine.collection.model import Collection, Let, Row
from engine.entities import HUB_FIELDS, KLAVIYO_FIELDS, SCOPE_NAMES
from engine.errors import (
    DuplicateDestinationError,
    EachWithoutParentError,
    FormulaError,
    KlaviyoSyncError,
    LetHidesNameError,
    NotADestinationError,
    PlaceholderWarning,
    StaticTooLongError,
    SubscribeProfileUnmappedWarning,
    UnknownDestinationError,
    UnknownNameError,
    UnsupportedSourceError,
)
from engine.formula import CompiledFormula, FormulaEngine

ROW_TYPES = ("field", "static", "formula")

#: Default "required value missing" texts, by collection title (the seeds' catalog).
DEFAULT_REQUIRED_MESSAGES: dict[str, str] = {
    "Add Klaviyo Profile FROM Hub": catalog.PROFILE_NOT_CREATED,
    "Update Klaviyo Profile FROM Hub": catalog.PROFILE_NOT_UPDATED,
    "Add Klaviyo Placed Order Event FROM Hub": catalog.ORDER_EVENT_NOT_CREATED,
    "Add Klaviyo Ordered Product Event FROM Hub": catalog.PRODUCT_EVENT_NOT_CREATED,
}

#: Klaviyo destinations an outbound profile collection may write.
PROFILE_ATTRIBUTES = frozenset(
    {"email", "phone_number", "external_id", "anonymous_id", "first_name", "last_name", "organization",
     "title", "image", "locale"}
)
PROFILE_LOCATION = frozenset(
    {"address1", "address2", "city", "country", "region", "zip", "timezone", "ip", "latitude", "longitude"}
)
PROFILE_FLAGS = ("LIST_", "UCLIST_")
#: Event destinations with a meaning; any other destination becomes an event property.
EVENT_DESTINATIONS = frozenset(
    {"ProfileId", "EventProperties", "MetricName", "UniqueId", "NumericValue", "Time", "ValueCurrency"}
)


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


def source_names(coll_direction: str, hub_entity: str, klaviyo_resource: str) -> frozenset[str]:
    if coll_direction == "to_hub":
        return KLAVIYO_FIELDS[klaviyo_resource]
    return HUB_FIELDS[hub_entity]


def _check_destination(direction: str, hub_entity: str, resource: str, dest: str) -> str | None:
    """None when ``dest`` is a destination the target accepts, else the reason."""
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
        if len(parts) == 1 and (head in PROFILE_ATTRIBUTES or head == "SubscribeProfile"
                                or any(head.startswith(f) and len(head) > len(f) for f in PROFILE_FLAGS)):
            return None
        if head == "location" and len(parts) == 2 and parts[1] in PROFILE_LOCATION:
            return None
        if head == "properties" and len(parts) == 2:
            return None
        return ("valid destinations for a Klaviyo profile: " + ", ".join(sorted(PROFILE_ATTRIBUTES))
                + ", location.<" + "|".join(sorted(PROFILE_LOCATION)) + ">, properties.<name>, "
                "LIST_<list name>, UCLIST_<list name>, SubscribeProfile")
    # events: named destinations, or any other single name, which becomes an event property
    if len(parts) == 1:
        return None
    return "event destinations are single names: " + ", ".join(sorted(EVENT_DESTINATIONS)) + " or a property name"


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
        title = d["title"]
        if direction == "to_hub" and resource != "profile":
            self.error(UnsupportedSourceError(
                f"direction to_hub reads Klaviyo profiles; klaviyo_resource {resource!r} cannot be a source",
                location=location_of(self.filename, self.marks, ("klaviyo_resource",))))
            return None
        fields = source_names(direction, hub_entity, resource)
        if direction == "to_klaviyo" and d.get("each"):
            pass  # the item's fields: the hub entity named (e.g. TransactionLine)
        lets_known: set[str] = set()
        lets: list[Let] = []
        for name, src in (d.get("let") or {}).items():
            known = fields | SCOPE_NAMES | lets_known
            compiled, origin = self.compile_formula(src, ("let", name), f"let {name}", frozenset(known), "formula")
            if name in fields or name in SCOPE_NAMES:
                self.error(LetHidesNameError(f"let name '{name}' hides a source field or scope name",
                                             location=location_of(self.filename, self.marks, ("let", name))))
            lets_known.add(name)
            if compiled is not None:
                lets.append(Let(name, compiled, location_of(self.filename, self.marks, ("let", name)), origin))
        known_all = frozenset(fields | SCOPE_NAMES | lets_known)

        filt = filt_origin = None
        if d.get("filter") is not None:
            filt, filt_origin = self.compile_formula(d["filter"], ("filter",), "filter", known_all, "filter")

        default_required = d.get("required_message") or DEFAULT_REQUIRED_MESSAGES.get(title)
        on_missing_default = d.get("on_missing", "omit")
        rows: list[Row] = []
        seen_dest: dict[str, int] = {}
        for i, r in enumerate(d["rows"]):
            path = ("rows", i)
            label = f"rows[{i}] {r['destination']}"
            loc = location_of(self.filename, self.marks, path, row=label)
            dest = r["destination"]
            if dest in seen_dest:
                self.error(DuplicateDestinationError(
                    f"destination '{dest}' is already written by rows[{seen_dest[dest]}]",
                    location=location_of(self.filename, self.marks, path + ("destination",), row=label)))
            seen_dest.setdefault(dest, i)
            reason = _check_destination(direction, hub_entity, resource, dest)
            if reason:
                self.error(UnknownDestinationError(
                    f"unknown destination '{dest}'; {reason}",
                    location=location_of(self.filename, self.marks, path + ("destination",), row=label)))
            importance = r.get("importance", "optional")
            required = r.get("required", importance == "required")
            formula = origin = None
            source_path: tuple[str | int, ...] = ()
            if r["type"] == "formula":
                formula, origin = self.compile_formula(r["formula"], path + ("formula",), label, known_all, "formula")
                if formula is None:
                    continue
            elif r["type"] == "field":
                source_path = parse_path(r["source"])
                head = source_path[0] if source_path else ""
                if head not in fields and head not in lets_known and head not in SCOPE_NAMES:
                    hint = difflib.get_close_matches(str(head), sorted(fields | lets_known), n=1)
                    msg = f"unknown source field '{head}'"
                    msg += f"; did you mean '{hint[0]}'?" if hint else f"; fields: {', '.join(sorted(fields))}"
                    self.error(UnknownNameError(msg, location=location_of(
                        self.filename, self.marks, path + ("source",), row=label)))
            rows.append(Row(
                index=i, type=r["type"], destination=dest, dest_path=tuple(dest.split(".")), location=loc,
                source=r.get("source"), source_path=source_path, value=r.get("value"), formula=formula,
                formula_origin=origin, description=r.get("description", ""), importance=importance,
                required=required, required_message=r.get("required_message") or default_required,
                on_missing=r.get("on_missing", on_missing_default), expect=r.get("expect"),
                max_length=r.get("max_length"),
            ))
            if r["type"] == "static" and r.get("max_length") and isinstance(r.get("value"), str) \
                    and len(r["value"]) > r["max_length"]:
                self.error(StaticTooLongError(
                    f"static value is {len(r['value'])} characters; at most {r['max_length']} allowed",
                    location=location_of(self.filename, self.marks, path + ("value",), row=label)))

        dup = d.get("duplicate_check")
        if dup:
            for j, f in enumerate(dup["fields"]):
                if f not in seen_dest:
                    self.error(NotADestinationError(
                        f"duplicate_check field '{f}' is not a destination of this collection",
                        location=location_of(self.filename, self.marks, ("duplicate_check", "fields", j))))
        roo = d.get("requires_one_of") or {}
        for j, f in enumerate(roo.get("destinations", [])):
            if f not in seen_dest:
                self.error(NotADestinationError(
                    f"requires_one_of destination '{f}' is not a destination of this collection",
                    location=location_of(self.filename, self.marks, ("requires_one_of", "destinations", j))))
        if d.get("each") and not d.get("parent"):
            self.error(EachWithoutParentError("'each' is only meaningful in a child collection (one with 'parent')",
                                              location=location_of(self.filename, self.marks, ("each",))))
        self._warn(d, rows)
        if self.errors:
            return None
        return Collection(
            title=title, file=self.filename, direction=direction, hub_entity=hub_entity,
            klaviyo_resource=resource, action=d["action"], status=d["status"], rows=tuple(rows),
            description=d.get("description", ""), parent=d.get("parent"), each=d.get("each"),
            filter=filt, filter_origin=filt_origin, lets=tuple(lets), duplicate_check=dup,
            required_message=default_required, unreadable_message=d.get("unreadable_message"),
            requires_one_of=tuple(roo.get("destinations", ())), requires_one_of_message=roo.get("message"),
            on_missing=on_missing_default,
            parent_location=location_of(self.filename, self.marks, ("parent",)) if d.get("parent") else None,
            requires_one_of_location=location_of(self.filename, self.marks, ("requires_one_of",)) if roo else None,
        )

    def _warn(self, d: dict[str, Any], rows: list[Row]) -> None:
        if d["direction"] != "to_klaviyo":
            for r in rows:
                self._placeholder(r)
            return
        if d["klaviyo_resource"] == "profile" and d["status"] == "enabled" \
                and not any(r.destination == "SubscribeProfile" for r in rows):
            self.warnings.append(SubscribeProfileUnmappedWarning(
                "SubscribeProfile is not mapped: every profile this collection sends is unsubscribed. "
                "Map it to each Customer's real opt-in value.",
                location=location_of(self.filename, self.marks, ("rows",))))
        for r in rows:
            self._placeholder(r)

    def _placeholder(self, r: Row) -> None:
        if r.type != "static":
            return
        reason = None
        if r.value == "Example values":
            reason = (f"placeholder value 'Example values' in {r.destination}: "
                      "replace it with real data or remove the row")
        elif r.destination.startswith(PROFILE_FLAGS) and r.value is True:
            reason = f"template list flag {r.destination} = true: set it to a list you actually use"
        elif r.destination == "SubscribeProfile" and r.value is True:
            reason = "SubscribeProfile is a fixed true: map it to each Customer's real opt-in / opt-out value"
        if reason:
            self.warnings.append(PlaceholderWarning(
                reason + " before go-live", location=r.location))




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


__all__ = ["compile_collection", "parse_path"]
