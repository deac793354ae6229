"""Mapping collections: load, check and compile YAML files into frozen plans.

Glossary
--------
collection
    One YAML file describing how records of one kind become records of
    another (e.g. a Klaviyo profile becomes a hub Customer).
row
    One line of a collection: a ``field`` (copy a source path), a ``static``
    (a fixed value) or a ``formula`` (the specification's "Dynamic Formula").
source record
    The record a collection reads: a Klaviyo resource for ``to_hub``
    collections, a hub entity for ``to_klaviyo`` ones.
destination
    The dotted path a row writes in the mapped payload.
hub
    Our embedded store of Customers, Addresses and Transactions.
flow
    A collection at work; the error log names flows by collection title.

Loading is *compile, then run*: :func:`load_collections` parses every file,
checks it against ``schemas/collection.schema.json``, compiles every formula,
filter and ``let`` once, checks names, destinations and parent references,
and returns a :class:`CollectionSet` of frozen :class:`Collection` plans.
Every problem is reported (``iter_problems``), each with file, line and
column and a stable code; warnings (placeholders to replace before go-live,
an unmapped ``SubscribeProfile``) are reported beside them.
"""

from __future__ import annotations

import ast
import difflib
import json
import textwrap
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from typing import Any

import jsonschema

from engine import catalog
from engine._shipped import shipped
from engine._yaml import Mark, Path as YPath, load_with_marks, nearest_mark, read_yaml_file
from engine.entities import HUB_FIELDS, KLAVIYO_FIELDS, SCOPE_NAMES
from engine.errors import (
    CollectionError,
    CollectionReadError,
    CollectionSchemaError,
    DuplicateDestinationError,
    DuplicateTitleError,
    EachWithoutParentError,
    FormulaError,
    KlaviyoSyncError,
    LetHidesNameError,
    Location,
    NoCollectionFilesError,
    NotADestinationError,
    ParentCycleError,
    ParentDirectionError,
    PlaceholderWarning,
    StaticTooLongError,
    SubscribeProfileUnmappedWarning,
    UnknownCollectionError,
    UnknownDestinationError,
    UnknownNameError,
    UnknownParentError,
    UnsupportedSourceError,
)
from engine.formula import CompiledFormula, FormulaEngine

SCHEMA_PATH = shipped("schemas", "collection.schema.json")
DEFAULT_COLLECTIONS_DIR = shipped("collections")

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


@dataclass(frozen=True)
class Row:
    """One compiled mapping row."""

    index: int
    type: str
    destination: str
    dest_path: tuple[str, ...]
    location: Location
    source: str | None = None
    source_path: tuple[str | int, ...] = ()
    value: Any = None
    formula: CompiledFormula | None = None
    formula_origin: Mark | None = None
    description: str = ""
    importance: str = "optional"
    required: bool = False
    required_message: str | None = None
    on_missing: str = "omit"
    expect: str | None = None
    max_length: int | None = None

    @property
    def label(self) -> str:
        """How errors name the row: ``rows[3] EmailAddress``."""
        return f"rows[{self.index}] {self.destination}"


@dataclass(frozen=True)
class Let:
    name: str
    formula: CompiledFormula
    location: Location
    origin: Mark | None


@dataclass(frozen=True)
class Collection:
    """A compiled, frozen mapping collection (the plan the mapper runs)."""

    title: str
    file: str
    direction: str
    hub_entity: str
    klaviyo_resource: str
    action: str
    status: str
    rows: tuple[Row, ...]
    description: str = ""
    parent: str | None = None
    each: str | None = None
    filter: CompiledFormula | None = None
    filter_origin: Mark | None = None
    lets: tuple[Let, ...] = ()
    duplicate_check: Mapping[str, Any] | None = None
    required_message: str | None = None
    unreadable_message: str | None = None
    requires_one_of: tuple[str, ...] = ()
    requires_one_of_message: str | None = None
    on_missing: str = "omit"
    parent_location: Location | None = None
    requires_one_of_location: Location | None = None

    @property
    def enabled(self) -> bool:
        return self.status == "enabled"

    @property
    def source_kind(self) -> tuple[str, str]:
        """("klaviyo", resource) or ("hub", entity): what a source record is."""
        return ("klaviyo", self.klaviyo_resource) if self.direction == "to_hub" else ("hub", self.hub_entity)

    @property
    def target_kind(self) -> tuple[str, str]:
        return ("hub", self.hub_entity) if self.direction == "to_hub" else ("klaviyo", self.klaviyo_resource)


@dataclass
class CollectionSet:
    """Collections by title, with children resolved and an order where parents come first."""

    collections: dict[str, Collection] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)

    def __getitem__(self, title: str) -> Collection:
        return self.collections[title]

    def __iter__(self) -> Iterator[Collection]:
        return (self.collections[t] for t in self.order)

    def __len__(self) -> int:
        return len(self.collections)

    def children_of(self, title: str) -> list[Collection]:
        return [c for c in self if c.parent == title]

    def find(self, name: str) -> Collection:
        """A collection by title, or by file name / stem (``add-profile-to-hub``)."""
        if name in self.collections:
            return self.collections[name]
        for c in self.collections.values():
            p = Path(c.file)
            if name in (p.name, p.stem, str(p)):
                return c
        valid = ", ".join(sorted(self.collections))
        raise UnknownCollectionError(f"no collection named {name!r}; known: {valid}")


@dataclass
class LoadReport:
    """What loading found: the usable collections, every error and every warning."""

    collections: CollectionSet
    errors: list[KlaviyoSyncError]
    warnings: list[KlaviyoSyncError]

    @property
    def ok(self) -> bool:
        return not self.errors


@lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)


def _humanise(err: jsonschema.ValidationError, data: Any) -> tuple[str, tuple[Any, ...]]:
    """A schema error as a one-line diagnosis, and the path to report it at."""
    path = tuple(err.absolute_path)
    where = "/".join(str(p) for p in path) or "(top level)"
    v = err.validator
    # types-jsonschema types these as possibly unset; a validator's error always carries them
    instance: Any = err.instance
    schema: Any = err.schema
    expected: Any = err.validator_value
    if v == "required":
        missing = err.message.split("'")[1] if "'" in err.message else err.message
        return f"{where}: missing required key '{missing}'", path
    if v == "additionalProperties":
        extras = sorted(set(instance) - set(schema.get("properties", {})))
        valid = ", ".join(sorted(schema.get("properties", {})))
        return (f"{where}: unknown key(s) {', '.join(map(repr, extras))}; valid keys: {valid}",
                path + (extras[0],) if extras else path)
    if v == "enum":
        return f"{where}: {instance!r} is not one of {', '.join(map(repr, expected))}", path
    if v == "type":
        return f"{where}: {_short(instance)} is not of type {expected!r}", path
    if v is None and "False schema" in err.message:
        # jsonschema reports a forbidden key at the row, not at the key: find the key by its value
        row = data
        for step in path:
            row = row[step]
        key = next((k for k in ("source", "value", "formula") if isinstance(row, dict) and k in row
                    and row[k] == instance), "?")
        kind = row.get("type") if isinstance(row, dict) else "?"
        needs = {"field": "source", "static": "value", "formula": "formula"}.get(kind, "?")
        return (f"{where}: key '{key}' is not allowed in a {kind} row (a {kind} row takes '{needs}')",
                path + (key,))
    return f"{where}: {err.message}", path


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _loc(filename: str, marks: dict[YPath, Mark], path: YPath, **extra: Any) -> Location:
    mark = nearest_mark(marks, path)
    return Location(file=filename, line=mark.line if mark else None, column=mark.column if mark else None, **extra)


def _formula_location(filename: str, origin: Mark | None, err: FormulaError, row: str | None) -> Location:
    """Map a position inside a formula to the YAML file's line and column."""
    fl = getattr(err, "formula_line", None)
    fc = getattr(err, "formula_column", None)
    if origin is None:
        return Location(file=filename, row=row)
    line, col = origin.content_line or origin.line, origin.content_column or origin.column
    if fl is not None:
        if origin.style in ("|", ">"):
            line = line + fl - 1
            col = col + (fc - 1 if fc else 0)
        elif fl == 1:
            col = col + (fc - 1 if fc else 0)
        else:
            line = line + fl - 1
            col = fc or 1
    return Location(file=filename, line=line, column=col, row=row)


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
            exc.location = _formula_location(self.filename, origin, exc, row)
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
            self.error(UnknownNameError(msg, location=_formula_location(
                self.filename, origin, where, row)))
        return compiled, origin

    def compile(self) -> Collection | None:
        d = self.data
        direction, hub_entity, resource = d["direction"], d["hub_entity"], d["klaviyo_resource"]
        title = d["title"]
        if direction == "to_hub" and resource != "profile":
            self.error(UnsupportedSourceError(
                f"direction to_hub reads Klaviyo profiles; klaviyo_resource {resource!r} cannot be a source",
                location=_loc(self.filename, self.marks, ("klaviyo_resource",))))
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
                                             location=_loc(self.filename, self.marks, ("let", name))))
            lets_known.add(name)
            if compiled is not None:
                lets.append(Let(name, compiled, _loc(self.filename, self.marks, ("let", name)), origin))
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
            loc = _loc(self.filename, self.marks, path, row=label)
            dest = r["destination"]
            if dest in seen_dest:
                self.error(DuplicateDestinationError(
                    f"destination '{dest}' is already written by rows[{seen_dest[dest]}]",
                    location=_loc(self.filename, self.marks, path + ("destination",), row=label)))
            seen_dest.setdefault(dest, i)
            reason = _check_destination(direction, hub_entity, resource, dest)
            if reason:
                self.error(UnknownDestinationError(f"unknown destination '{dest}'; {reason}",
                                                   location=_loc(self.filename, self.marks, path + ("destination",),
                                                                 row=label)))
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
                    self.error(UnknownNameError(msg, location=_loc(
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
                    location=_loc(self.filename, self.marks, path + ("value",), row=label)))

        dup = d.get("duplicate_check")
        if dup:
            for j, f in enumerate(dup["fields"]):
                if f not in seen_dest:
                    self.error(NotADestinationError(
                        f"duplicate_check field '{f}' is not a destination of this collection",
                        location=_loc(self.filename, self.marks, ("duplicate_check", "fields", j))))
        roo = d.get("requires_one_of") or {}
        for j, f in enumerate(roo.get("destinations", [])):
            if f not in seen_dest:
                self.error(NotADestinationError(
                    f"requires_one_of destination '{f}' is not a destination of this collection",
                    location=_loc(self.filename, self.marks, ("requires_one_of", "destinations", j))))
        if d.get("each") and not d.get("parent"):
            self.error(EachWithoutParentError("'each' is only meaningful in a child collection (one with 'parent')",
                                              location=_loc(self.filename, self.marks, ("each",))))
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
            parent_location=_loc(self.filename, self.marks, ("parent",)) if d.get("parent") else None,
            requires_one_of_location=_loc(self.filename, self.marks, ("requires_one_of",)) if roo else None,
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
                location=_loc(self.filename, self.marks, ("rows",))))
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


def display_path(path: Path) -> str:
    """``path`` relative to the working directory when it is below it (shorter error lines)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _load_file(path: Path, engine: FormulaEngine
               ) -> tuple[Collection | None, list[KlaviyoSyncError], list[KlaviyoSyncError]]:
    filename = display_path(path)
    try:
        text = read_yaml_file(path, filename)
    except OSError as exc:
        return None, [CollectionReadError(f"cannot read collection: {exc}", location=Location(file=filename))], []
    except CollectionError as exc:  # too large or not UTF-8, located
        return None, [exc], []
    try:
        data, marks = load_with_marks(text, filename)
    except CollectionError as exc:
        return None, [exc], []
    errors: list[KlaviyoSyncError] = []
    if not isinstance(data, dict):
        return None, [CollectionSchemaError("a collection must be a YAML mapping (title, direction, rows, ...)",
                                            location=Location(file=filename, line=1, column=1))], []
    schema_errors = sorted(_validator().iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    for err in schema_errors:
        message, at = _humanise(err, data)
        errors.append(CollectionSchemaError(message, location=_loc(filename, marks, at)))
    if errors:
        return None, errors, []
    comp = _FileCompiler(filename, data, marks, engine)
    coll = comp.compile()
    return coll, comp.errors, comp.warnings


def collection_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand directories into their ``*.yaml`` / ``*.yml`` files, sorted."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(x for x in p.iterdir() if x.suffix in (".yaml", ".yml")))
        else:
            out.append(p)
    return out


def load_collections(paths: Iterable[str | Path] | None = None, engine: FormulaEngine | None = None) -> LoadReport:
    """Load, check and compile collections; report every problem.

    Args:
        paths: files or directories (default: the shipped ``collections/``).
        engine: the formula engine (default: one with the standard helper table).

    Returns:
        A :class:`LoadReport`; ``report.collections`` holds the collections that compiled
        (and whose parents resolved), ``report.errors`` every problem, file:line:col each.
    """
    engine = engine or FormulaEngine()
    files = collection_files([DEFAULT_COLLECTIONS_DIR] if paths is None else paths)
    errors: list[KlaviyoSyncError] = []
    warnings: list[KlaviyoSyncError] = []
    loaded: list[Collection] = []
    if not files:
        errors.append(NoCollectionFilesError("no collection files found"))
    for f in files:
        if not f.exists():
            errors.append(CollectionReadError("no such file", location=Location(file=str(f))))
            continue
        coll, errs, warns = _load_file(f, engine)
        errors.extend(errs)
        warnings.extend(warns)
        if coll is not None:
            loaded.append(coll)
    cs = CollectionSet()
    for c in loaded:
        if c.title in cs.collections:
            errors.append(DuplicateTitleError(
                f"title {c.title!r} is already used by {cs.collections[c.title].file}",
                location=Location(file=c.file, line=1, column=1)))
            continue
        cs.collections[c.title] = c
    graph: dict[str, set[str]] = {}
    for c in list(cs.collections.values()):
        if c.parent is None:
            graph.setdefault(c.title, set())
            continue
        if c.parent not in cs.collections:
            hint = difflib.get_close_matches(c.parent, sorted(cs.collections), n=1)
            msg = f"parent {c.parent!r} is not a loaded collection"
            msg += f"; did you mean {hint[0]!r}?" if hint else ""
            errors.append(UnknownParentError(msg, location=c.parent_location))
            del cs.collections[c.title]
            continue
        parent = cs.collections[c.parent]
        if parent.direction != c.direction:
            errors.append(ParentDirectionError(
                f"parent {c.parent!r} runs {parent.direction}, this child runs {c.direction}",
                location=c.parent_location))
        graph.setdefault(c.title, set()).add(c.parent)
    try:
        cs.order = list(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        cycle = exc.args[1]
        errors.append(ParentCycleError(
            "parent references form a cycle: " + " -> ".join(cycle),
            location=cs.collections[cycle[0]].parent_location))
        for t in set(cycle):
            cs.collections.pop(t, None)
            graph.pop(t, None)
        for deps in graph.values():
            deps.difference_update(cycle)
        cs.order = list(TopologicalSorter(graph).static_order())
    cs.order = [t for t in cs.order if t in cs.collections]

    def where(e: KlaviyoSyncError) -> tuple[str, int, int]:
        return (e.location.file or "", e.location.line or 0, e.location.column or 0)

    return LoadReport(cs, sorted(errors, key=where), sorted(warnings, key=where))


__all__ = [
    "Collection",
    "CollectionSet",
    "LoadReport",
    "Let",
    "Row",
    "load_collections",
    "collection_files",
    "parse_path",
]
